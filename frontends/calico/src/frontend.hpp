// frontend.hpp - the Calico frontend's load: sources -> documents -> resources -> IR.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "etcd.hpp"
#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::calico {

struct LoadRequest {
  // files, directories (*.yaml, *.yml, *.json, sorted), "-" for stdin, or etcd://HOST:PORT[,...]
  std::vector<std::string> sources;
  std::string node;  // this host's node name (core gives the lower-cased host name when --node is not)
  std::map<std::string, std::string> options;
  // The interfaces' addresses; when absent they are read from the current network namespace.
  std::optional<std::map<std::string, std::vector<ir::IpAddr>>> interface_addresses;
  // What each etcd:// source holds, read by the caller (a live watch, or one list).
  std::map<std::string, etcd::Snapshot> store_snapshots;
};

// The calico frontend's own options (--frontend-option KEY=VALUE).
inline const std::vector<std::string_view> kOptionNames = {"policy-tiebreak", "etcd-ca", "etcd-cert",
                                                           "etcd-key", "etcd-cache"};

ir::Ruleset load(const LoadRequest& request, Diagnostics& diag);

// Whether a directory source's file of this name holds resources: *.yaml, *.yml or *.json.
bool is_resource_file_name(std::string_view name);

// Throws UsageError unless Felix would take `node` as its host name (FelixHostname's pattern,
// [a-zA-Z0-9_.-]+): the name also makes the path of the daemon's etcd cache, so never a '/'.
void check_node_name(const std::string& node);

// Every interface of the current network namespace with its IPv4/IPv6 addresses (getifaddrs).
std::map<std::string, std::vector<ir::IpAddr>> read_interface_addresses();

}  // namespace fwe::calico
