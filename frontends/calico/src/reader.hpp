// reader.hpp - turns parsed YAML documents into validated Calico resources (spec calico.md §1, §7).
#pragma once

#include <span>
#include <string_view>

#include "fwengine/diagnostics.hpp"
#include "fwengine/yaml.hpp"
#include "resources.hpp"

namespace fwe::calico {

// Calico's "name" validator (nameRegex): parts of lower-case letters and digits, with '-' inside, joined
// by '.', of any length (HostEndpoint spec.node and spec.profiles[]).
bool is_calico_name(std::string_view s);
// What Calico takes as a HostEndpoint's interfaceName: 1-15 of letters, digits, '_', '.', '-'.
bool is_interface_name(std::string_view s);

// Reads resources from documents into a model. Every problem is reported (all at once) through diag;
// resources with errors may be partly filled in, so callers stop when diag has errors.
class Reader {
 public:
  Reader(Model& model, Diagnostics& diag) : model_(model), diag_(diag) {}

  // Frees each document's tree once it is read: a large stream is never held whole beside its model.
  // source, the text the documents were parsed from, places errors inside scalars (selectors) exactly.
  void read_documents(std::span<yaml::Node> documents, std::string_view source = {});

 private:
  struct Meta;
  struct Context;

  void read_item(const yaml::Node& node, bool in_list);
  void read_resource(const yaml::Node& node);
  std::optional<Meta> read_metadata(const yaml::Node& resource, const Context& ctx);
  void read_node(const yaml::Node& node, const std::string& api_version, SourceLoc kind_loc);
  void read_host_endpoint(const yaml::Node& spec, const Meta& meta, const Context& ctx);
  void read_policy(const yaml::Node* spec, Meta meta, const Context& ctx);
  void read_network_set(const yaml::Node* spec, const Meta& meta);
  void read_tier(const yaml::Node* spec, const Meta& meta, const Context& ctx);
  void read_profile(const yaml::Node* spec, const Meta& meta, const Context& ctx);
  bool read_labels(const yaml::Node& labels, std::string_view field, Labels& out);
  void read_felix_config(const yaml::Node* spec, const Meta& meta, const Context& ctx);
  void read_felix_annotations(const yaml::Node& annotations, FelixConfig& config);
  // A Felix setting written as a string: what names it (for messages and locations), the Felix name as
  // written after its prefix, and the value.
  struct FelixString {
    const yaml::Node* key;
    std::string_view name;
    const yaml::Node* value;
  };
  void read_felix_strings(const std::vector<FelixString>& strings, bool environment, FelixConfig& config);
  bool read_calico_node(const yaml::Node& daemon_set);
  void check_interface_exclude(std::optional<std::string>& list, SourceLoc loc);
  void check_interface_prefix(const std::string& list, SourceLoc loc);
  std::optional<RuleSpec> read_rule(const yaml::Node& node, Direction direction, const Context& ctx);
  void read_entity(const yaml::Node& node, EntitySpec& entity);
  void read_ports(const yaml::Node& node, std::vector<PortSpec>& ports);
  std::optional<std::uint8_t> read_protocol(const yaml::Node& node, const Context& ctx);
  std::optional<IcmpSpec> read_icmp(const yaml::Node& node);
  std::optional<SelectorField> read_selector(const yaml::Node& node, std::string_view field);
  std::optional<std::vector<FailsafePort>> read_failsafe(const yaml::Node& node, bool inbound,
                                                         const Context& ctx);
  std::optional<FailsafePort> read_failsafe_string(std::string_view text, SourceLoc loc);
  void validate_rule(const RuleSpec& rule, const yaml::Node& node);

  // Reports every key of a mapping that is not in known, with a did-you-mean hint.
  void check_fields(const yaml::Node& map, const std::vector<std::string_view>& known,
                    std::string_view where);
  bool expect(const yaml::Node& node, yaml::Kind kind, std::string_view what);
  std::optional<std::string> string_of(const yaml::Node& node, std::string_view what);
  std::optional<bool> bool_of(const yaml::Node& node, std::string_view what);

  Model& model_;
  Diagnostics& diag_;
  bool noted_v1_ = false;
  std::string_view source_;  // of the documents being read; may be empty
};

// Felix's own spelling of a failsafe list entry ("tcp:22", "udp:[fd00::/8]:53"); for tests and messages.
std::string failsafe_object_form(const FailsafePort& port);

}  // namespace fwe::calico
