// plugin.cpp - registers the nft backend with the engine.
#include "backend.hpp"

FWE_REGISTER_BACKEND("nft", "0.1.0", "nftables through libnftnl: one atomic netlink transaction per apply",
                     fwe::nft::NftBackend)
