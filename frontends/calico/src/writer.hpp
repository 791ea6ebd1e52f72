// writer.hpp - writes a ruleset as Calico resources (`fwengine migrate --to calico`).
#pragma once

#include <map>
#include <string>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::calico {

// The ruleset as projectcalico.org/v3 resources for the node `node`: HostEndpoints for the interfaces
// its endpoints are classified by, GlobalNetworkPolicies for their chains and a FelixConfiguration
// `default` for the failsafe ports; file name -> multi-document YAML that this frontend reads back.
// Every piece Calico cannot express is left out and reported at its origin: an error when the written
// policy decides some packet differently, a warning when only a detail is lost (a reject's reply, a
// log prefix). Everything else is written, with a comment naming where it came from.
std::map<std::string, std::string> write_resources(const ir::Ruleset& ruleset, const std::string& node,
                                                   Diagnostics& diag);

}  // namespace fwe::calico
