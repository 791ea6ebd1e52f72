// mapping.hpp - Calico resources to the IR: Felix's per-stage model (spec calico.md §4) as stages,
// sections, endpoints, tier groups and policy chains, so that backends never need to know Calico.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"
#include "resources.hpp"

namespace fwe::calico {

enum class TieBreak {
  v3_32,  // "name/namespace/kind" (Calico v3.32 and later)
  v3_31,  // bare name (Calico up to v3.31)
};

struct MappingOptions {
  std::string node;  // this host's node name: HostEndpoints with this spec.node are ours
  TieBreak tie_break = TieBreak::v3_32;
  // The addresses on this host's interfaces, for HostEndpoints bound by expectedIPs only.
  std::map<std::string, std::vector<ir::IpAddr>> interface_addresses;
};

ir::Ruleset map_to_ir(const Model& model, const MappingOptions& options, Diagnostics& diag);

}  // namespace fwe::calico
