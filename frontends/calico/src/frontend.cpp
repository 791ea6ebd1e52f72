// frontend.cpp - reading the sources and running reader and mapping.
#include "frontend.hpp"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "fwengine/source_text.hpp"
#include "fwengine/yaml.hpp"
#include "mapping.hpp"
#include "reader.hpp"

namespace fwe::calico {

bool is_resource_file_name(std::string_view name) {
  const auto extension = std::filesystem::path(name).extension();
  return extension == ".yaml" || extension == ".yml" || extension == ".json";
}

namespace {

// Each resource of the store is read as a document of its own, named by its key in messages.
void read_store(const etcd::Snapshot& snapshot, Reader& reader, Diagnostics& diag) {
  for (const auto& [key, value] : snapshot.resources) {
    const std::uint32_t file = diag.add_file("etcd:" + key);
    if (auto documents = yaml::parse(value, file, diag)) reader.read_documents(*documents, value);
  }
}

// yaml::parse_file, keeping the text for the reader: a problem inside a scalar is located in it.
void read_file(const std::string& path, Reader& reader, Diagnostics& diag) {
  const std::uint32_t file = diag.add_file(path);
  if (auto text = read_source_file(path, file, diag))
    if (auto documents = yaml::parse(*text, file, diag)) reader.read_documents(*documents, *text);
}

void read_source(const LoadRequest& request, const std::string& source, Reader& reader, Diagnostics& diag) {
  if (etcd::is_source(source)) {
    read_store(request.store_snapshots.at(source), reader, diag);
    return;
  }
  if (source == "-") {
    const std::uint32_t file = diag.add_file("<stdin>");
    const auto text = read_source_stdin(file, diag);
    if (!text) return;
    if (auto documents = yaml::parse(*text, file, diag)) reader.read_documents(*documents, *text);
    return;
  }
  std::error_code error;
  if (std::filesystem::is_directory(source, error)) {
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(source, error)) {
      if (!is_resource_file_name(entry.path().filename().string())) continue;
      // A resource file that cannot be read is an error, not a file less: its resources would be missing.
      std::error_code status_error;
      const auto status = std::filesystem::status(entry.path(), status_error);
      if (std::filesystem::is_regular_file(status)) {
        files.push_back(entry.path());
      } else if (!std::filesystem::is_directory(status) &&
                 !entry.path().filename().string().starts_with('.')) {
        // (A hidden one is an editor's lock or backup, such as Emacs's dangling .#policy.yaml.)
        const std::string path = entry.path().string();
        diag.error(
            {diag.add_file(path), 0, 0},
            "cannot read '" + path + "': " + (status_error ? status_error.message() : "not a regular file"),
            "remove it from the directory, or make it a readable resource file");
      }
    }
    if (error) {
      diag.error({}, "cannot list directory " + source + ": " + error.message(),
                 "check the path and permissions");
      return;
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      diag.warning({}, "directory " + source + " has no *.yaml, *.yml or *.json files",
                   "put the resources there");
    }
    for (const auto& file : files) {
      read_file(file.string(), reader, diag);
    }
    return;
  }
  read_file(source, reader, diag);
}

TieBreak read_tie_break(const std::map<std::string, std::string>& options, Diagnostics& diag) {
  TieBreak tie_break = TieBreak::v3_32;
  for (const auto& [key, value] : options) {
    if (std::find(kOptionNames.begin(), kOptionNames.end(), key) == kOptionNames.end()) {
      std::string hint = did_you_mean(key, kOptionNames);
      if (hint.empty())
        hint =
            "the calico frontend knows: policy-tiebreak=3.32|3.31, etcd-ca=FILE, etcd-cert=FILE, "
            "etcd-key=FILE, etcd-cache=FILE|none";
      diag.error(diag.option_key_loc(key), "unknown calico option '" + key + "'", hint);
      continue;
    }
    if ((key == "etcd-cert" || key == "etcd-key") &&
        !options.count(key == "etcd-cert" ? "etcd-key" : "etcd-cert"))
      diag.error(diag.option_key_loc(key),
                 "--etcd-cert and --etcd-key go together: a client certificate needs its key",
                 "give both, or neither");
    if (key != "policy-tiebreak") continue;
    if (value == "3.31") {
      tie_break = TieBreak::v3_31;
    } else if (value != "3.32") {
      diag.error(diag.option_value_loc(key), "policy-tiebreak must be 3.32 or 3.31, not '" + value + "'",
                 "3.32 orders equal-order policies by name/namespace/kind, 3.31 by bare name");
    }
  }
  return tie_break;
}

}  // namespace

std::map<std::string, std::vector<ir::IpAddr>> read_interface_addresses() {
  std::map<std::string, std::vector<ir::IpAddr>> addresses;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return addresses;
  for (const ifaddrs* entry = list; entry; entry = entry->ifa_next) {
    addresses[entry->ifa_name];  // interfaces without addresses exist too
    if (!entry->ifa_addr) continue;
    ir::IpAddr ip;
    if (entry->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
      ip.family = ir::Family::ipv4;
      std::memcpy(ip.bytes.data(), &in->sin_addr, 4);
    } else if (entry->ifa_addr->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(entry->ifa_addr);
      ip.family = ir::Family::ipv6;
      std::memcpy(ip.bytes.data(), &in6->sin6_addr, 16);
    } else {
      continue;
    }
    addresses[entry->ifa_name].push_back(ip);
  }
  freeifaddrs(list);
  return addresses;
}

void check_node_name(const std::string& node) {
  const bool felix_accepts = !node.empty() && std::all_of(node.begin(), node.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
  if (!felix_accepts)
    throw UsageError("'" + node +
                     "' is not a node name (--node): Felix takes letters, digits, '_', '.' and '-' "
                     "only; give the node's name as HostEndpoints write it in spec.node");
}

ir::Ruleset load(const LoadRequest& request, Diagnostics& diag) {
  MappingOptions options;
  check_node_name(request.node);
  options.node = request.node;
  options.tie_break = read_tie_break(request.options, diag);
  Model model;
  Reader reader(model, diag);
  for (const std::string& source : request.sources) read_source(request, source, reader, diag);
  if (diag.has_errors()) {
    ir::Ruleset empty;
    empty.frontend = "calico";
    empty.files = diag.files();
    return empty;
  }
  options.interface_addresses =
      request.interface_addresses ? *request.interface_addresses : read_interface_addresses();
  ir::Ruleset ruleset = map_to_ir(model, options, diag);
  for (const auto& [source, snapshot] : request.store_snapshots)
    ruleset.source_revision +=
        (ruleset.source_revision.empty() ? "" : ",") + std::to_string(snapshot.revision);
  return ruleset;
}

}  // namespace fwe::calico
