// support.hpp - a ruleset that uses every match and action the ebpf backend supports, packets for it,
// and the Ethernet frames BPF_PROG_TEST_RUN needs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fwengine/ir.hpp"
#include "fwengine/trace.hpp"

namespace fwe::ebpf::test {

// Interfaces of the scratch namespace (veth, peers p0 and p1): d0 (10.0.0.1/24, 2001:db8::1/64), d1
// (10.1.0.1/24, 2001:db8:1::1/64).
ir::Ruleset sample_ruleset();
std::vector<trace::Packet> sample_packets();
// Two chains of single-port rules (one long port run across the chain boundary, with return, log,
// set-mark and extra criteria inside), and packets to every port around them.
ir::Ruleset port_run_ruleset();
std::vector<trace::Packet> port_run_packets();

ir::IpAddr ip(const char* text);
trace::Packet packet(const char* iif, const char* oif, const char* src, const char* dst,
                     std::uint8_t protocol, std::uint16_t sport, std::uint16_t dport);
std::string describe(const trace::Packet&);

// Ethernet + IPv4/IPv6 + TCP (SYN) / UDP / ICMP echo; ICMP type and code from the packet.
std::vector<std::uint8_t> frame_of(const trace::Packet&);

}  // namespace fwe::ebpf::test
