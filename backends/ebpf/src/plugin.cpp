// plugin.cpp - registers the ebpf backend with the engine.
#include "backend.hpp"

FWE_REGISTER_BACKEND("ebpf", "0.1.0", "tc/eBPF programs driven by maps, with their own conntrack",
                     fwe::ebpf::EbpfBackend)
