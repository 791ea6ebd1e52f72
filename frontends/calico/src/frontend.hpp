// frontend.hpp - the Calico frontend's load: sources -> documents -> resources -> IR.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::calico {

struct LoadRequest {
  std::vector<std::string> sources;  // files, directories (*.yaml, *.yml, *.json, sorted) or "-" for stdin
  std::string node;                  // empty: this host's name
  std::map<std::string, std::string> options;
  // The interfaces' addresses; when absent they are read from the current network namespace.
  std::optional<std::map<std::string, std::vector<ir::IpAddr>>> interface_addresses;
};

ir::Ruleset load(const LoadRequest& request, Diagnostics& diag);

// Every interface of the current network namespace with its IPv4/IPv6 addresses (getifaddrs).
std::map<std::string, std::vector<ir::IpAddr>> read_interface_addresses();

}  // namespace fwe::calico
