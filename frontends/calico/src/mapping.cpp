// mapping.cpp - Felix's host-endpoint model (spec calico.md §4) expressed in the IR (docs/ir.md).
//
// Stage by stage (HEP = HostEndpoint bound to an interface of this node, HEP* = interfaceName "*"):
//   untracked-in/out  named HEPs with doNotTrack policies; Allow = notrack + allow; tiers end in continue
//   prednat           named HEPs, then HEP*, with preDNAT policies; Allow = allow; no default drop
//   input/output      every named HEP, then HEP*; tiers end in drop; then profiles; default drop
//   forward           section "ingress" by iif (honours allow), section "egress" by oif (replaces the
//                     ingress verdict, as Felix's to-hep-forward chain clears the accept mark); default
//                     accept when the HEP has no applyOnForward policy at all
#include "mapping.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <regex>
#include <set>
#include <tuple>
#include <unordered_map>
#include <utility>

namespace fwe::calico {
namespace {

enum class PolicyClass { untracked, prednat, normal };

std::string_view to_string(PolicyClass c) {
  switch (c) {
    case PolicyClass::untracked:
      return "untracked";
    case PolicyClass::prednat:
      return "prednat";
    case PolicyClass::normal:
      return "normal";
  }
  return "";
}
std::string_view to_string(Direction d) {
  return d == Direction::ingress ? "ingress" : "egress";
}

constexpr std::string_view kDefaultAllowProfile = "projectcalico-default-allow";
constexpr double kDefaultTierOrder = 1000000;

struct Settings {
  std::vector<FailsafePort> failsafe_inbound, failsafe_outbound;
  std::string failsafe_inbound_source = "Felix built-in failsafeInboundHostPorts";
  std::string failsafe_outbound_source = "Felix built-in failsafeOutboundHostPorts";
  bool conntrack_invalid_check = true;
  bool deny_with_reject = false;  // Felix's FilterDenyAction(): the nftables field with nftablesMode Enabled
  NftablesMode nftables = NftablesMode::auto_;  // Felix's default
  bool ipv6_support = true;
  SourceLoc ipv6_support_loc;
  std::string ipv6_support_source = "FelixConfiguration";
  std::string log_prefix = "calico-packet";
  std::vector<std::string> workload_prefixes = {"cali"};
  std::vector<std::string> excluded_interfaces = {"kube-ipvs0"};
  // What happens to workloads' packets to the host, where a FelixConfiguration says (build_normal).
  std::optional<ir::Verdict> endpoint_to_host;
  std::string endpoint_to_host_source;
  SourceLoc endpoint_to_host_loc;
  // WireGuard's UDP port per family it is on for (build_wireguard), and the setting that turned it on.
  std::vector<std::pair<ir::Family, std::uint16_t>> wireguard;
  std::string wireguard_source;
  SourceLoc wireguard_loc;
};

std::vector<FailsafePort> builtin_failsafe(bool inbound) {
  // Felix's defaults (felix/config/config_params.go), spec §1.5.
  const std::vector<std::pair<std::uint8_t, std::uint16_t>> in = {
      {6, 22}, {17, 68}, {6, 179}, {6, 2379}, {6, 2380}, {6, 5473}, {6, 6443}, {6, 6666}, {6, 6667}};
  const std::vector<std::pair<std::uint8_t, std::uint16_t>> out = {
      {17, 53}, {17, 67}, {6, 179}, {6, 2379}, {6, 2380}, {6, 5473}, {6, 6443}, {6, 6666}, {6, 6667}};
  std::vector<FailsafePort> ports;
  for (const auto& [protocol, port] : inbound ? in : out) ports.push_back({protocol, port, std::nullopt, {}});
  return ports;
}

// A HostEndpoint in charge of one interface of this node; iface empty = HEP* (every interface).
struct Binding {
  const HostEndpoint* hep = nullptr;
  std::string iface;
};

constexpr std::string_view kNamespaceLabel = "projectcalico.org/namespace";
constexpr std::string_view kServiceAccountLabel = "projectcalico.org/serviceaccount";

// namespaceSelector and serviceAccountSelector select on prefixed labels (pcns./pcsa.: Calico's
// PrefixVisitor). `label`, which Calico puts in place of their all() after prefixing
// (Selector::with_all_as), is matched as it is.
bool prefixed_match(const Selector& selector, const Labels& labels, std::string_view prefix,
                    std::string_view label = {}) {
  Labels scoped;
  for (const auto& [key, value] : labels) {
    if (key.starts_with(prefix)) scoped[key.substr(prefix.size())] = value;
  }
  if (auto it = labels.find(label); !label.empty() && it != labels.end())
    scoped.insert_or_assign(it->first, it->second);
  return selector.matches(scoped);
}

// A selector written as "" is no selector to Calico (it checks for the empty string).
template <typename Field>  // std::optional or SideSelector
bool written(const Field& field) {
  return field && !field->text.empty();
}

ir::Cidr host_cidr(const ir::IpAddr& ip) {
  return {ip, static_cast<std::uint8_t>(ip.width())};
}

class Mapper {
 public:
  Mapper(const Model& model, const MappingOptions& options, Diagnostics& diag)
      : model_(model), options_(options), diag_(diag) {}

  ir::Ruleset run() {
    choose_selected_config();
    settings_ = merge_settings();
    warn_of_encapsulation();
    for (const FailsafePort& port : settings_.failsafe_inbound) {
      ruleset_.failsafe.inbound.push_back(failsafe_entry(port, settings_.failsafe_inbound_source));
    }
    for (const FailsafePort& port : settings_.failsafe_outbound) {
      ruleset_.failsafe.outbound.push_back(failsafe_entry(port, settings_.failsafe_outbound_source));
    }
    collect_tiers();
    check_policies();
    collect_profiles();
    sort_policies();
    join_selectors();
    bind_host_endpoints();
    build_untracked(ir::Stage::untracked_in, Direction::ingress);
    build_untracked(ir::Stage::untracked_out, Direction::egress);
    build_prednat();
    build_normal(ir::Stage::input, Direction::ingress);
    build_normal(ir::Stage::output, Direction::egress);
    build_forward();
    if (!settings_.ipv6_support) restrict_to_ipv4();
    say_unused_icmp_pairs();
    return std::move(ruleset_);
  }

 private:
  // ---- configuration ------------------------------------------------------------------------------
  Settings merge_settings() {
    Settings settings;
    settings.failsafe_inbound = builtin_failsafe(true);
    settings.failsafe_outbound = builtin_failsafe(false);
    // Each overrides the ones before it, field by field (D-FC precedence).
    bool iptables_reject = false, nftables_reject = false;
    NftablesMode nftables = NftablesMode::auto_;
    for (const FelixConfig* config : felix_configs()) {
      if (!config) continue;
      const std::string source = source_of(*config);
      if (config->failsafe_inbound) {
        settings.failsafe_inbound = *config->failsafe_inbound;
        settings.failsafe_inbound_source = source;
      }
      if (config->failsafe_outbound) {
        settings.failsafe_outbound = *config->failsafe_outbound;
        settings.failsafe_outbound_source = source;
      }
      if (config->disable_conntrack_invalid_check) {
        settings.conntrack_invalid_check = !*config->disable_conntrack_invalid_check;
      }
      if (config->deny_with_reject) iptables_reject = *config->deny_with_reject;
      if (config->nft_deny_with_reject) nftables_reject = *config->nft_deny_with_reject;
      if (config->nftables_mode) nftables = *config->nftables_mode;
      if (config->ipv6_support) {
        settings.ipv6_support = *config->ipv6_support;
        settings.ipv6_support_loc = config->loc;
        settings.ipv6_support_source = source;
      }
      // An empty logPrefix (an annotation's none) is the default: generateLogPrefix falls back to it.
      if (config->log_prefix)
        settings.log_prefix = config->log_prefix->empty() ? "calico-packet" : *config->log_prefix;
      if (config->interface_prefix) settings.workload_prefixes = split_list(*config->interface_prefix);
      if (config->interface_exclude) settings.excluded_interfaces = split_list(*config->interface_exclude);
      if (config->endpoint_to_host) {
        settings.endpoint_to_host = config->endpoint_to_host;
        settings.endpoint_to_host_source = source + " defaultEndpointToHostAction";
        settings.endpoint_to_host_loc = config->loc;
      }
    }
    // By family (IPv4, IPv6): whether WireGuard is on, its port, and the setting that decided it.
    bool wireguard[2] = {false, false};
    std::int64_t wireguard_port[2] = {kWireguardPort, kWireguardPortV6};
    std::string wireguard_source[2];
    SourceLoc wireguard_loc[2];
    for (const FelixConfig* config : felix_configs()) {
      if (!config) continue;
      for (int v6 : {0, 1}) {
        if (const auto& on = v6 ? config->wireguard_v6 : config->wireguard; on) {
          wireguard[v6] = *on;
          wireguard_source[v6] = source_of(*config) + (v6 ? " wireguardEnabledV6" : " wireguardEnabled");
          wireguard_loc[v6] = config->loc;
        }
        if (const auto& port = v6 ? config->wireguard_port_v6 : config->wireguard_port; port)
          wireguard_port[v6] = *port;
      }
    }
    // Felix's rules take the port as uint16(WireguardListeningPort), as VXLAN's.
    for (int v6 : {1, 0}) {
      if (!wireguard[v6]) continue;
      settings.wireguard.emplace(settings.wireguard.begin(), v6 ? ir::Family::ipv6 : ir::Family::ipv4,
                                 static_cast<std::uint16_t>(wireguard_port[v6]));
      settings.wireguard_source = wireguard_source[v6];  // IPv4's, where both are on
      settings.wireguard_loc = wireguard_loc[v6];
    }
    // config_params.go FilterDenyAction(): nftablesFilterDenyAction when nftablesMode is Enabled.
    settings.deny_with_reject = nftables == NftablesMode::enabled ? nftables_reject : iptables_reject;
    settings.nftables = nftables;
    return settings;
  }

  // Felix's filter INPUT chain starts, for every host interface, with checks of IPIP and VXLAN packets
  // when they are on (rules/static.go filterInputChain): accepted from Calico hosts, dropped from any
  // other source; its filter OUTPUT accepts those the host sends to Calico hosts (filterOutputChain).
  // FelixConfiguration turns each on or off; left unset, an IP pool with it on turns it on
  // (EncapsulationCalculator), and IPv6 VXLAN only ever by the pools. fwengine reads no Node addresses,
  // so it leaves the checks out and says so where the setting that turns them on is.
  void warn_of_encapsulation() {
    const EncapsulationSetting* ipip = nullptr;
    const EncapsulationSetting* vxlan = nullptr;
    std::int64_t vxlan_port = kVxlanPort;
    for (const FelixConfig* config : felix_configs()) {
      if (!config) continue;
      if (config->ipip) ipip = &*config->ipip;
      if (config->vxlan) vxlan = &*config->vxlan;
      if (config->vxlan_port) vxlan_port = *config->vxlan_port;
    }
    // Felix's rules take the port as uint16(VXLANPort).
    const std::string vxlan_rule =
        "UDP " + std::to_string(static_cast<std::uint16_t>(vxlan_port)) + " (VXLAN)";
    auto warn = [&](SourceLoc loc, const std::string& setting, bool for_ipip) {
      diag_.warning(loc,
                    setting + " makes Felix accept " + (for_ipip ? "IPIP" : "VXLAN") +
                        " packets only from Calico hosts and drop those from other sources, and accept "
                        "those the host sends to Calico hosts, before any host endpoint policy; fwengine "
                        "does neither (it reads no Node addresses)",
                    std::string("write policy rules for ") + (for_ipip ? "protocol 4 (IPIP)" : vxlan_rule) +
                        " from and to your nodes' addresses if you rely on them");
    };
    for (const EncapsulationSetting* setting : {ipip, vxlan})
      if (setting && setting->value == Encapsulation::on)
        warn(setting->loc, setting->written, setting == ipip);
    for (const EncapsulatedPool& pool : model_.encapsulated_pools) {
      const EncapsulationSetting* setting = pool.ipip ? ipip : pool.ipv6 ? nullptr : vxlan;
      if (!setting || setting->value == Encapsulation::by_pools) warn(pool.loc, pool.written, pool.ipip);
    }
  }

  // Felix's settings for this node, in the order they apply (a later one wins, field by field): the
  // FelixConfigurations default, the selector-scoped one that selects this node and node.<name>, then
  // calico-node's environment; any may be missing (nullptr).
  std::array<const FelixConfig*, 4> felix_configs() const {
    std::array<const FelixConfig*, 4> configs{};
    configs[1] = selected_config_;
    for (const FelixConfig& config : model_.felix_configs) {
      if (config.name == "default") configs[0] = &config;
      if (config.name == "node." + options_.node) configs[2] = &config;
    }
    if (model_.felix_environment) configs[3] = &*model_.felix_environment;
    return configs;
  }

  std::string source_of(const FelixConfig& config) const {
    const bool environment = model_.felix_environment && &config == &*model_.felix_environment;
    return environment ? "calico-node's environment" : "FelixConfiguration " + config.name;
  }

  // Felix's choice of a selector-scoped FelixConfiguration (daemon.go loadSelectorScopedFelixConfig,
  // calc MergeSelectorConfigs): those whose nodeSelector selects this node's labels, the oldest by
  // creationTimestamp (then by name) of them. A node without a Node resource, or without labels (Go's nil
  // map), is selected by none.
  void choose_selected_config() {
    std::set<std::string_view> names;
    for (const FelixConfig& config : model_.felix_configs)
      if (!names.insert(config.name).second)
        diag_.error(config.loc, "FelixConfiguration '" + config.name + "' is defined twice",
                    "remove one of them");
    const NodeLabels* node = nullptr;
    for (const NodeLabels& n : model_.nodes) {
      if (n.name != options_.node) continue;
      if (!node)
        node = &n;
      else if (n.labels != node->labels)
        diag_.warning(n.loc, "Node '" + n.name + "' is given again with other labels: the first is used",
                      "the first is at " + diag_.where(node->loc) + "; give the node once");
    }
    std::vector<const FelixConfig*> scoped;
    for (const FelixConfig& config : model_.felix_configs)
      if (config.node_selector) scoped.push_back(&config);
    if (scoped.empty()) return;
    if (!node || node->labels.empty()) {
      diag_.note(scoped.front()->node_selector->loc,
                 "FelixConfiguration '" + scoped.front()->name +
                     "' is for the nodes its nodeSelector selects, " +
                     (node ? "and Node '" + options_.node + "' has no labels"
                           : "and no Node '" + options_.node + "' was read") +
                     ": it applies to none here, as in Felix",
                 "give this node's Node resource with its labels (kubectl get node " + options_.node +
                     " -o yaml, or calicoctl get node " + options_.node + " -o yaml)");
      return;
    }
    std::vector<const FelixConfig*> matching;
    for (const FelixConfig* config : scoped)
      if (config->node_selector->selector.matches(node->labels)) matching.push_back(config);
    if (matching.empty()) return;
    selected_config_ = *std::min_element(matching.begin(), matching.end(), [](auto* a, auto* b) {
      return std::tie(a->created, a->name) < std::tie(b->created, b->name);
    });
    if (matching.size() > 1) {
      std::string names;
      for (const FelixConfig* config : matching) names += (names.empty() ? "'" : ", '") + config->name + "'";
      diag_.warning(selected_config_->node_selector->loc,
                    "FelixConfigurations " + names + (matching.size() == 2 ? " both" : " all") +
                        " select node '" + options_.node + "': Felix takes the oldest, '" +
                        selected_config_->name + "', and so does fwengine",
                    "make the nodeSelectors exclusive: at most one selector-scoped FelixConfiguration "
                    "should select a node");
    }
  }

  // ipv6Support: false: Felix programs no IPv6 tables at all (int_dataplane.go), so IPv6 packets meet
  // none of Calico's rules. Every endpoint is classified by an IPv4-only source set: an IPv6 packet
  // matches no endpoint in any stage and gets no verdict, not even the conntrack prelude or failsafe.
  void restrict_to_ipv4() {
    const std::string name = "calico:ipv4";
    ir::AddrSet set;
    set.cidrs.push_back(*ir::parse_cidr("0.0.0.0/0"));
    set.origin = {settings_.ipv6_support_loc, settings_.ipv6_support_source + " ipv6Support: false", -1};
    bool used = false;
    for (ir::StageDef& stage : ruleset_.stages) {
      for (ir::Section& section : stage.sections) {
        for (ir::Endpoint& endpoint : section.endpoints) {
          endpoint.match.src_set = name;
          used = true;
        }
      }
    }
    if (used) ruleset_.sets.emplace(name, std::move(set));
  }

  ir::FailsafeEntry failsafe_entry(const FailsafePort& port, const std::string& source) {
    ir::FailsafeEntry entry;
    entry.protocol = port.protocol;
    entry.port = port.port;
    entry.net = port.net;
    entry.origin = {port.loc, source, -1};
    return entry;
  }

  // ---- tiers and policy order ---------------------------------------------------------------------
  void collect_tiers() {
    tiers_.push_back({"default", {}, kDefaultTierOrder, false});  // exists without a resource
    std::set<std::string> defined;
    for (const Tier& tier : model_.tiers) {
      if (!defined.insert(tier.name).second) {
        diag_.error(tier.loc, "Tier '" + tier.name + "' is defined twice", "keep one definition");
        continue;
      }
      // libcalico-go's DefaultTierFields, applied on every read: a Tier without order has 1 000 000.
      Tier effective = tier;
      if (!effective.order) effective.order = kDefaultTierOrder;
      if (tier.name == "default") {
        tiers_.front() = effective;
      } else {
        tiers_.push_back(effective);
      }
    }
    // Felix's TierLess: by order, equal orders by name.
    std::stable_sort(tiers_.begin(), tiers_.end(), [](const Tier& a, const Tier& b) {
      return std::tie(*a.order, a.name) < std::tie(*b.order, b.name);
    });
  }

  void check_policies() {
    std::set<std::string> names;
    for (const Policy& policy : model_.policies) {
      if (!names.insert(policy.name).second) {
        diag_.error(policy.loc, "GlobalNetworkPolicy '" + policy.name + "' is defined twice",
                    "rename one of them or remove the duplicate");
      }
      if (std::none_of(tiers_.begin(), tiers_.end(), [&](const Tier& t) { return t.name == policy.tier; })) {
        diag_.error(policy.loc,
                    "GlobalNetworkPolicy '" + policy.name + "' is in tier '" + policy.tier +
                        "', which is not defined",
                    "add a Tier resource named '" + policy.tier + "' or remove spec.tier");
      }
    }
  }

  void collect_profiles() {
    for (const Profile& profile : model_.profiles) {
      if (!profiles_.emplace(profile.name, &profile).second) {
        diag_.error(profile.loc, "Profile '" + profile.name + "' is defined twice",
                    "rename one of them or remove the duplicate");
      }
    }
    // Felix's label inheritance (labelindex.InheritIndex): a HostEndpoint also carries the labelsToApply
    // of the profiles it lists, for every name its own labels do not set; the first profile listed wins.
    for (const HostEndpoint& hep : model_.host_endpoints) {
      Labels labels = hep.labels;
      for (const std::string& name : hep.profiles)
        if (auto profile = profiles_.find(name); profile != profiles_.end())
          labels.insert(profile->second->labels_to_apply.begin(), profile->second->labels_to_apply.end());
      if (labels.size() != hep.labels.size()) inherited_labels_.emplace(&hep, std::move(labels));
    }
  }

  // The labels every selector sees on a HostEndpoint: its own and those it inherits from its profiles.
  const Labels& labels_of(const HostEndpoint& hep) const {
    auto inherited = inherited_labels_.find(&hep);
    return inherited == inherited_labels_.end() ? hep.labels : inherited->second;
  }

  void sort_policies() {
    for (const Policy& policy : model_.policies) sorted_.push_back(&policy);
    // SORT PolKVLess: order ascending, no order = +inf; ties by "name/namespace/kind" (v3.32) or name.
    auto key = [&](const Policy* p) {
      return options_.tie_break == TieBreak::v3_32 ? p->name + "//GlobalNetworkPolicy" : p->name;
    };
    std::stable_sort(sorted_.begin(), sorted_.end(), [&](const Policy* a, const Policy* b) {
      const double oa = a->order.value_or(std::numeric_limits<double>::infinity());
      const double ob = b->order.value_or(std::numeric_limits<double>::infinity());
      if (oa != ob) return oa < ob;
      return key(a) < key(b);
    });
  }

  // ---- which HostEndpoints are ours, on which interface (EPM resolveHostEndpoints) -----------------
  void bind_host_endpoints() {
    std::set<std::string> names;
    for (const HostEndpoint& hep : model_.host_endpoints) {
      if (!names.insert(hep.name).second) {
        diag_.error(hep.loc, "HostEndpoint '" + hep.name + "' is defined twice",
                    "rename one of them or remove the duplicate");
      }
    }
    std::vector<const HostEndpoint*> ours;
    for (const HostEndpoint& hep : model_.host_endpoints) {
      if (hep.node == options_.node) ours.push_back(&hep);
    }
    std::sort(ours.begin(), ours.end(), [](auto* a, auto* b) { return a->name < b->name; });
    if (ours.empty() && !model_.host_endpoints.empty()) {
      std::set<std::string> nodes;
      for (const HostEndpoint& hep : model_.host_endpoints) nodes.insert(hep.node);
      std::string list;
      for (const std::string& n : nodes) list += (list.empty() ? "" : ", ") + n;
      diag_.warning(model_.host_endpoints.front().loc,
                    "no HostEndpoint has spec.node '" + options_.node + "': nothing on this host is policed",
                    "pass --node with this host's node name (HostEndpoints name: " + list + ")");
    }
    std::map<std::string, const HostEndpoint*> by_interface;
    for (const HostEndpoint* hep : ours) {
      if (hep->interface_name == "*") {
        if (!wildcard_) wildcard_ = hep;
        continue;
      }
      if (!hep->interface_name.empty()) {
        // Felix tracks no addresses of excluded interfaces and leaves workload ones to workload
        // endpoints, so resolveHostEndpoints never activates a HostEndpoint on them.
        if (auto reason = not_host_interface(hep->interface_name)) {
          diag_.warning(hep->interface_loc,
                        "HostEndpoint '" + hep->name + "' polices nothing: its interfaceName '" +
                            hep->interface_name + "' " + reason->first + ", so Felix never activates it",
                        reason->second);
          continue;
        }
        by_interface.try_emplace(hep->interface_name, hep);  // smallest name first: ours is sorted
        continue;
      }
      bool bound = false;
      for (const auto& [iface, bound_addresses] : options_.interface_addresses) {
        if (!host_interface(iface)) continue;
        const auto& addresses = bound_addresses;  // clang before 16 cannot capture a structured binding
        const bool has_ip =
            std::any_of(hep->expected_ips.begin(), hep->expected_ips.end(), [&](const ir::IpAddr& ip) {
              return std::find(addresses.begin(), addresses.end(), ip) != addresses.end();
            });
        if (!has_ip) continue;
        bound = true;
        auto [it, inserted] = by_interface.try_emplace(iface, hep);
        if (!inserted && hep->name < it->second->name) it->second = hep;
      }
      if (!bound) {
        diag_.note(hep->loc,
                   "HostEndpoint '" + hep->name +
                       "' is not bound: none of its expectedIPs is on an interface of this host",
                   "set spec.interfaceName, or check the addresses with 'ip addr'");
      }
    }
    for (const auto& [iface, hep] : by_interface) named_.push_back({hep, iface});
  }

  // Interfaces Felix considers for HostEndpoints: not a workload interface (endpoint_mgr.go's
  // "^(<prefix>|...).*"), not excluded (ifacemonitor's isExcludedInterface: a name matches exactly, a
  // /regex/ anywhere in the name).
  bool host_interface(const std::string& iface) const { return !not_host_interface(iface); }

  // Why Felix does not take iface for a host interface (what it matched; what to do), or nullopt.
  std::optional<std::pair<std::string, std::string>> not_host_interface(const std::string& iface) const {
    for (const std::string& prefix : settings_.workload_prefixes) {
      if (iface.starts_with(prefix)) {
        return std::pair{
            "starts with '" + prefix + "', a workload (pod) interface prefix (interfacePrefix)",
            std::string("Felix polices pod interfaces with workload endpoints, not HostEndpoints; "
                        "name a host interface, or change FelixConfiguration interfacePrefix if "
                        "this is not a pod interface")};
      }
    }
    for (const std::string& entry : settings_.excluded_interfaces) {
      const bool regex = entry.size() >= 2 && entry.front() == '/' && entry.back() == '/';
      if (regex ? std::regex_search(iface, std::regex(entry.substr(1, entry.size() - 2))) : iface == entry) {
        return std::pair{
            regex ? "matches the interfaceExclude entry " + entry
                  : std::string("is listed in interfaceExclude"),
            std::string("Felix ignores excluded interfaces (interfaceExclude, default kube-ipvs0); "
                        "remove the entry from FelixConfiguration interfaceExclude to police the "
                        "interface, or remove the HostEndpoint")};
      }
    }
    return std::nullopt;
  }

  // ---- which policies apply where -----------------------------------------------------------------
  // Calico joins the policy's selector with its prefixed namespaceSelector, then with its prefixed
  // serviceAccountSelector, and after each join replaces every all() in the text: so an all() in the
  // policy's own selector needs the label too (globalnetworkpolicyprocessor.go).
  struct JoinedSelectors {
    Selector own;
    std::optional<Selector> namespaces, service_accounts;
  };

  // Once per policy: every HostEndpoint is matched against the same replaced selectors.
  void join_selectors() {
    for (const Policy& policy : model_.policies) {
      JoinedSelectors joined{policy.selector.selector, std::nullopt, std::nullopt};
      const bool own = !policy.selector.text.empty();
      if (written(policy.namespace_selector)) {
        if (own) joined.own = joined.own.with_all_as(kNamespaceLabel, false);
        joined.namespaces = policy.namespace_selector->selector.with_all_as(kNamespaceLabel, false);
      }
      if (written(policy.service_account_selector)) {
        if (own) joined.own = joined.own.with_all_as(kServiceAccountLabel, false);
        joined.service_accounts =
            policy.service_account_selector->selector.with_all_as(kServiceAccountLabel, false);
      }
      joined_.emplace(&policy, std::move(joined));
    }
  }

  bool selects(const Policy& policy, const HostEndpoint& hep) const {
    const Labels& labels = labels_of(hep);
    const JoinedSelectors& joined = joined_.at(&policy);
    if (joined.namespaces && !prefixed_match(*joined.namespaces, labels, "pcns.", kNamespaceLabel))
      return false;
    if (joined.service_accounts &&
        !prefixed_match(*joined.service_accounts, labels, "pcsa.", kServiceAccountLabel))
      return false;
    return joined.own.matches(labels);
  }

  static bool in_class(const Policy& policy, PolicyClass cls, bool forward) {
    switch (cls) {
      case PolicyClass::untracked:
        return policy.do_not_track;
      case PolicyClass::prednat:
        return !policy.do_not_track && policy.pre_dnat;
      case PolicyClass::normal:
        return !policy.do_not_track && !policy.pre_dnat && (!forward || policy.apply_on_forward);
    }
    return false;
  }

  static bool governs(const Policy& policy, Direction direction) {
    return direction == Direction::ingress ? policy.applies_ingress : policy.applies_egress;
  }

  bool has_policies(const HostEndpoint& hep, PolicyClass cls, bool forward) const {
    return std::any_of(sorted_.begin(), sorted_.end(), [&](const Policy* p) {
      return in_class(*p, cls, forward) && (p->applies_ingress || p->applies_egress) && selects(*p, hep);
    });
  }

  // ---- stages -------------------------------------------------------------------------------------
  void build_untracked(ir::Stage stage, Direction direction) {
    if (wildcard_ && has_policies(*wildcard_, PolicyClass::untracked, false) &&
        direction == Direction::ingress) {
      diag_.warning(wildcard_->loc,
                    "doNotTrack policies are ignored on HostEndpoint '" + wildcard_->name +
                        "' (interfaceName \"*\"), as Felix ignores them",
                    "give the HostEndpoint an interfaceName to use doNotTrack policy");
    }
    ir::Section section{"host-endpoints", false, {}};
    for (const Binding& binding : named_) {
      if (!has_policies(*binding.hep, PolicyClass::untracked, false)) continue;
      section.endpoints.push_back(make_endpoint(binding, direction, PolicyClass::untracked, false));
    }
    add_section(stage, std::move(section));
  }

  void build_prednat() {
    ir::Section section{"host-endpoints", true, {}};
    for (const Binding& binding : named_) {
      if (!has_policies(*binding.hep, PolicyClass::prednat, false)) continue;
      section.endpoints.push_back(make_endpoint(binding, Direction::ingress, PolicyClass::prednat, false));
    }
    if (wildcard_ && has_policies(*wildcard_, PolicyClass::prednat, false)) {
      section.endpoints.push_back(
          make_endpoint({wildcard_, ""}, Direction::ingress, PolicyClass::prednat, false));
    }
    add_section(ir::Stage::prednat, std::move(section));
  }

  void build_normal(ir::Stage stage, Direction direction) {
    // Felix's filter INPUT sends what workloads send to the host to cali-wl-to-host before it accepts
    // what preDNAT or doNotTrack policy allowed (static.go filterInputChain). With a
    // defaultEndpointToHostAction, the workload endpoints decide in a section of their own that does
    // not honour the allow mark, and accept with `allow`, which the host endpoints' section honours.
    const bool from_workloads = direction == Direction::ingress && (wildcard_ || settings_.endpoint_to_host);
    build_wireguard(stage, direction);
    if (from_workloads && settings_.endpoint_to_host) {
      ir::Section workloads{"workload-to-host", false, {}};
      for (const std::string& prefix : settings_.workload_prefixes)
        workloads.endpoints.push_back(workload_to_host(prefix));
      add_section(stage, std::move(workloads));
    }
    ir::Section section{"host-endpoints", true, {}};
    for (const Binding& binding : named_) {
      section.endpoints.push_back(make_endpoint(binding, direction, PolicyClass::normal, false));
    }
    // Here workload packets get no verdict: no HostEndpoint, HEP* included, polices them.
    if (from_workloads && wildcard_) {
      for (const std::string& prefix : settings_.workload_prefixes)
        section.endpoints.push_back(workload_interfaces(prefix, Direction::ingress));
    }
    if (wildcard_) {
      // Felix's filter OUTPUT returns traffic to local workloads before host-endpoint dispatch, so HEP*
      // never polices it (ST, D-HEP).
      if (direction == Direction::egress) {
        for (const std::string& prefix : settings_.workload_prefixes)
          section.endpoints.push_back(workload_interfaces(prefix, Direction::egress));
      }
      section.endpoints.push_back(make_endpoint({wildcard_, ""}, direction, PolicyClass::normal, false));
    }
    add_section(stage, std::move(section));
  }

  // With WireGuard on, Felix's filter INPUT accepts UDP to its port on a local address, on every
  // interface, and filter OUTPUT UDP to its port from a local address, but to workload interfaces, which it
  // returns first; both before any endpoint's policy (static.go FilterInputChainAllowWG,
  // filterOutputChain): so that no host policy cuts the tunnels. The section `allow`s them, which the host
  // endpoints' section after it honours; the workload-to-host section, which does not, allows them first
  // itself (Felix accepts them before cali-wl-to-host).
  void build_wireguard(ir::Stage stage, Direction direction) {
    if (settings_.wireguard.empty()) return;
    const ir::Origin origin{settings_.wireguard_loc, settings_.wireguard_source, -1};
    ir::Section section{"wireguard", false, {}};
    if (direction == Direction::egress) {
      for (const std::string& prefix : settings_.workload_prefixes) {
        ir::Endpoint workloads;  // classified, no verdict
        workloads.name = "workload-interfaces/" + prefix;
        workloads.match.oif = ir::IfacePattern{prefix, true};
        workloads.origin = origin;
        section.endpoints.push_back(std::move(workloads));
      }
    }
    ir::Endpoint endpoint;
    endpoint.name = "wireguard";
    endpoint.origin = origin;
    ir::Group group;
    group.name = "wireguard";
    group.origin = origin;
    group.chains.push_back(wireguard_chain(direction));
    endpoint.groups.push_back(std::move(group));
    section.endpoints.push_back(std::move(endpoint));
    add_section(stage, std::move(section));
  }

  std::string wireguard_chain(Direction direction) {
    const bool in = direction == Direction::ingress;
    return felix_chain(
        in ? "wireguard-in" : "wireguard-out",
        in ? "Felix: allow incoming WireGuard packets" : "Felix: allow outgoing WireGuard packets", [&] {
          std::vector<ir::Rule> rules;
          for (const auto& [family, port] : settings_.wireguard) {
            ir::Rule& rule = rules.emplace_back();
            rule.match.family = family;
            rule.match.protocols = std::vector<std::uint8_t>{17};
            rule.match.dst_port.push_back({false, {{port, port}}});
            rule.action.kind = ir::ActionKind::allow;
          }
          return rules;
        });
  }

  // What the workload interfaces (prefix+) send (ingress) or receive (egress), classified and given no
  // verdict.
  ir::Endpoint workload_interfaces(const std::string& prefix, Direction direction) const {
    ir::Endpoint endpoint;
    endpoint.name = "workload-interfaces/" + prefix;
    (direction == Direction::ingress ? endpoint.match.iif : endpoint.match.oif) =
        ir::IfacePattern{prefix, true};
    endpoint.origin = {wildcard_->loc, "FelixConfiguration interfacePrefix", -1};
    return endpoint;
  }

  // Felix's cali-wl-to-host: after the workload's egress policy (not modelled: fwengine polices hosts,
  // not pods), conntrack, a few ICMPv6 types and then defaultEndpointToHostAction decide
  // (static.go filterWorkloadToHostChain). What it accepts is `allow`ed, so that the host endpoints'
  // section after it, which honours the allow mark, keeps the verdict. Unset, Felix's built-in Drop is
  // overridden by the manifests and the operator (FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT), which
  // fwengine sees only when calico-node's DaemonSet is read, and Felix runs beside any pod interface to
  // enforce its own value: then there is no such endpoint, and workload packets get no verdict.
  ir::Endpoint workload_to_host(const std::string& prefix) {
    ir::Endpoint endpoint;
    endpoint.name = "workload-interfaces/" + prefix;
    endpoint.match.iif = ir::IfacePattern{prefix, true};
    endpoint.origin = {settings_.endpoint_to_host_loc, settings_.endpoint_to_host_source, -1};
    ir::Group group;
    group.name = "workload-to-host";
    group.origin = endpoint.origin;
    if (!settings_.wireguard.empty()) group.chains.push_back(wireguard_chain(Direction::ingress));
    group.chains.push_back(workload_conntrack_chain());
    group.chains.push_back(workload_icmpv6_chain());
    endpoint.groups.push_back(std::move(group));
    const ir::Verdict action = settings_.endpoint_to_host.value_or(ir::Verdict::continue_);
    endpoint.default_verdict = action == ir::Verdict::accept ? ir::Verdict::allow : action;
    return endpoint;
  }

  // A chain of Felix's own rules, made once for every workload prefix that uses it; its rules get the
  // chain's origin.
  template <class Rules>
  std::string felix_chain(const std::string& name, const char* origin, Rules make_rules) {
    if (!ruleset_.chains.contains(name)) {
      ir::Chain chain{name, make_rules(), {{}, origin, -1}};
      for (ir::Rule& rule : chain.rules) rule.origin = chain.origin;
      ruleset_.chains.emplace(name, std::move(chain));
    }
    return name;
  }

  // Established and related packets allowed, and invalid ones dropped when Felix checks them.
  std::string workload_conntrack_chain() {
    return felix_chain("workload-to-host/conntrack", "Felix workload-to-host conntrack", [&] {
      std::vector<ir::Rule> rules(settings_.conntrack_invalid_check ? 2 : 1);
      rules[0].match.ct_states = std::vector<ir::CtState>{ir::CtState::established, ir::CtState::related};
      rules[0].action.kind = ir::ActionKind::allow;
      if (rules.size() == 2) {
        rules[1].match.ct_states = std::vector<ir::CtState>{ir::CtState::invalid};
        rules[1].action.kind = ir::ActionKind::drop;
      }
      return rules;
    });
  }

  // ICMPv6 a workload may always send to the host, its router: multicast listener query, report and
  // done, router solicitation, neighbour solicitation and advertisement (rules.ICMPv6Filter).
  std::string workload_icmpv6_chain() {
    return felix_chain("workload-to-host/icmpv6", "Felix workload-to-host ICMPv6", [] {
      std::vector<ir::Rule> rules;
      for (std::uint8_t type : {130, 131, 132, 133, 135, 136}) {
        ir::Rule& rule = rules.emplace_back();
        rule.match.family = ir::Family::ipv6;
        rule.match.protocols = std::vector<std::uint8_t>{58};
        rule.match.icmp = ir::IcmpMatch{false, true, type, std::nullopt};
        rule.action.kind = ir::ActionKind::allow;
      }
      return rules;
    });
  }

  void build_forward() {
    ir::Section ingress{"ingress", true, {}};
    ir::Section egress{"egress", false, {}};
    for (const Binding& binding : all_bindings()) {
      ingress.endpoints.push_back(make_endpoint(binding, Direction::ingress, PolicyClass::normal, true));
      egress.endpoints.push_back(make_endpoint(binding, Direction::egress, PolicyClass::normal, true));
    }
    add_section(ir::Stage::forward, std::move(ingress));
    add_section(ir::Stage::forward, std::move(egress));
  }

  std::vector<Binding> all_bindings() const {
    std::vector<Binding> bindings = named_;
    if (wildcard_) bindings.push_back({wildcard_, ""});
    return bindings;
  }

  void add_section(ir::Stage stage, ir::Section section) {
    if (section.endpoints.empty()) return;
    ruleset_.stage(stage).sections.push_back(std::move(section));
  }

  ir::Verdict deny_verdict() const {
    return settings_.deny_with_reject ? ir::Verdict::reject : ir::Verdict::drop;
  }

  ir::Endpoint make_endpoint(const Binding& binding, Direction direction, PolicyClass cls, bool forward) {
    const HostEndpoint& hep = *binding.hep;
    ir::Endpoint endpoint;
    endpoint.name = hep.name;
    if (!binding.iface.empty() && binding.iface != hep.interface_name) endpoint.name += "@" + binding.iface;
    endpoint.origin = {hep.loc, "HostEndpoint " + hep.name, -1};
    if (!binding.iface.empty()) {
      (direction == Direction::ingress ? endpoint.match.iif : endpoint.match.oif) =
          ir::IfacePattern{binding.iface, false};
    }
    if (cls != PolicyClass::untracked) {
      endpoint.conntrack = settings_.conntrack_invalid_check ? ir::Conntrack::accept_established_drop_invalid
                                                             : ir::Conntrack::accept_established;
    }
    endpoint.failsafe = !forward;
    const bool filter = cls == PolicyClass::normal;
    for (const Tier& tier : tiers_) {
      ir::Group group;
      group.name = "tier/" + tier.name;
      group.origin = {tier.loc, "Tier " + tier.name, -1};
      group.on_end = filter && !tier.default_pass ? deny_verdict() : ir::Verdict::continue_;
      for (const Policy* policy : sorted_) {
        if (policy->tier != tier.name || !in_class(*policy, cls, forward) || !governs(*policy, direction) ||
            !selects(*policy, hep)) {
          continue;
        }
        group.chains.push_back(policy_chain(*policy, direction, cls));
      }
      if (!group.chains.empty()) endpoint.groups.push_back(std::move(group));
    }
    if (cls == PolicyClass::normal && !forward) {
      ir::Group profiles;
      profiles.name = "profiles";
      profiles.origin = endpoint.origin;
      for (const std::string& profile : hep.profiles)
        profiles.chains.push_back(profile_chain(profile, hep, direction));
      if (!profiles.chains.empty()) endpoint.groups.push_back(std::move(profiles));
      endpoint.default_verdict = deny_verdict();
    } else if (forward) {
      endpoint.default_verdict =
          has_policies(hep, PolicyClass::normal, true) ? ir::Verdict::continue_ : ir::Verdict::accept;
    }
    return endpoint;
  }

  // ---- chains -------------------------------------------------------------------------------------
  std::string profile_chain(const std::string& profile, const HostEndpoint& hep, Direction direction) {
    const std::string name = "profile/" + profile + "/" + std::string(to_string(direction));
    if (ruleset_.chains.contains(name)) return name;
    ir::Chain chain;
    chain.name = name;
    chain.origin = {hep.loc, "Profile " + profile, -1};
    ir::Rule rule;
    rule.origin = chain.origin;
    const auto defined = profiles_.find(profile);
    if (profile == kDefaultAllowProfile) {
      rule.action.kind = ir::ActionKind::accept;
    } else if (defined != profiles_.end()) {
      // Felix's profile chain: its rules; Allow and Deny decide, Pass and no match go on to the next
      // profile (the endpoint chain checks only the accept mark after each profile, endpoints.go).
      const Profile& defn = *defined->second;
      chain.origin = {defn.loc, "Profile " + profile, -1};
      const RuleOwner owner{"pro", profile, "", "profile/" + profile, true};
      const auto& rules = direction == Direction::ingress ? defn.ingress : defn.egress;
      for (std::size_t i = 0; i < rules.size(); ++i) {
        append_rule(chain, owner, direction, PolicyClass::normal, static_cast<std::int32_t>(i), rules[i]);
      }
      ruleset_.chains.emplace(name, std::move(chain));
      return name;
    } else {
      // ARC DummyDropRules: a profile Felix does not know drops in both directions.
      if (direction == Direction::ingress) {
        diag_.warning(hep.loc,
                      "profile '" + profile + "' of HostEndpoint '" + hep.name +
                          "' is not defined: Felix treats it as Deny",
                      "use projectcalico-default-allow, or remove the profile");
      }
      rule.action.kind = settings_.deny_with_reject ? ir::ActionKind::reject : ir::ActionKind::drop;
    }
    chain.rules.push_back(std::move(rule));
    ruleset_.chains.emplace(name, std::move(chain));
    return name;
  }

  std::string policy_chain(const Policy& policy, Direction direction, PolicyClass cls) {
    const std::string name =
        "gnp/" + policy.name + "/" + std::string(to_string(direction)) + "/" + std::string(to_string(cls));
    if (ruleset_.chains.contains(name)) return name;
    ir::Chain chain;
    chain.name = name;
    chain.origin = {policy.loc, "GlobalNetworkPolicy " + policy.name, -1};
    const auto& rules = direction == Direction::ingress ? policy.ingress : policy.egress;
    const RuleOwner owner{"gnp", policy.name, policy.tier, "gnp/" + policy.name, false};
    for (std::size_t i = 0; i < rules.size(); ++i) {
      append_rule(chain, owner, direction, cls, static_cast<std::int32_t>(i), rules[i]);
    }
    ruleset_.chains.emplace(name, std::move(chain));
    return name;
  }

  // Whose rules are rendered: a GlobalNetworkPolicy or a Profile.
  struct RuleOwner {
    std::string short_kind;  // Felix's %k: "gnp", "pro"
    std::string name;
    std::string tier;    // Felix's %t: "" for profiles
    std::string prefix;  // names of the sets its rules create
    bool profile = false;
  };

  // Felix's generateLogPrefix (rules/policy.go): %t tier, %k kind, %n and %p name (GlobalNetworkPolicies
  // and profiles have no namespace); other '%' sequences stay as written.
  std::string log_prefix(const RuleOwner& owner) const {
    const std::string& text = settings_.log_prefix;
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '%' && i + 1 < text.size()) {
        const char spec = text[i + 1];
        if (spec == 't' || spec == 'k' || spec == 'n' || spec == 'p') {
          out += spec == 't' ? owner.tier : spec == 'k' ? owner.short_kind : owner.name;
          ++i;
          continue;
        }
      }
      out += text[i];
    }
    return out;
  }

  // Felix writes the configured deny action into raw and mangle too (rules/policy.go), where iptables
  // refuses REJECT; fwengine drops there (its iptables backend could not load a reject either) and says
  // how that differs from Felix.
  void warn_of_raw_reject(const std::string& chain, SourceLoc loc, PolicyClass cls) {
    if (!raw_reject_warned_.insert(chain).second) return;  // once a policy and direction
    const bool untracked = cls == PolicyClass::untracked;
    const std::string stage = untracked ? "a doNotTrack" : "a preDNAT";
    if (settings_.nftables == NftablesMode::enabled)
      diag_.warning(loc,
                    "Deny in " + stage +
                        " policy: Felix rejects here (nftablesFilterDenyAction: Reject), fwengine drops: "
                        "the packet is denied without the reply",
                    "deny in a normal policy if the sender must get the reply");
    else
      diag_.warning(
          loc,
          "Deny in " + stage +
              " policy with iptablesFilterDenyAction: Reject: Felix writes REJECT into the " +
              (untracked ? "raw" : "mangle") +
              " table, which iptables refuses, so Felix fails to program the host (unless nftablesMode Auto "
              "finds nftables, where nftablesFilterDenyAction counts); fwengine drops",
          "set iptablesFilterDenyAction to Drop, or deny in a normal policy");
  }

  std::vector<ir::ActionKind> actions_for(RuleAction action, PolicyClass cls) const {
    switch (action) {
      case RuleAction::allow:
        if (cls == PolicyClass::untracked) return {ir::ActionKind::notrack, ir::ActionKind::allow};
        return {cls == PolicyClass::prednat ? ir::ActionKind::allow : ir::ActionKind::accept};
      case RuleAction::deny:
        return {cls == PolicyClass::normal && settings_.deny_with_reject ? ir::ActionKind::reject
                                                                         : ir::ActionKind::drop};
      case RuleAction::pass:
        return {ir::ActionKind::pass};
      case RuleAction::log:
        return {ir::ActionKind::log};
    }
    return {};
  }

  // The IP set a selector (with its namespaceSelector scope) stands for: expectedIPs of every matching
  // HostEndpoint on any node, and the nets of every matching GlobalNetworkSet (NPI).
  // serviceAccounts as Calico's parseServiceAccounts turns them into a selector: the selector with every
  // label prefixed "pcsa." (all() stays all()), AND projectcalico.org/serviceaccount in {names}.
  static bool service_accounts_match(const EntitySpec* entity, const Labels& labels) {
    if (!entity) return true;
    if (entity->service_account_selector &&
        !prefixed_match(entity->service_account_selector->selector, labels, "pcsa.")) {
      return false;
    }
    if (!entity->service_account_names.empty()) {
      const auto it = labels.find(kServiceAccountLabel);
      if (it == labels.end()) return false;
      const auto& names = entity->service_account_names;
      if (std::find(names.begin(), names.end(), it->second) == names.end()) return false;
    }
    return true;
  }

  // What a side's positive selection picks: its selector (all() when only the others are written),
  // namespaceSelector (with Calico's all() replacement, rules.go) and serviceAccounts, less what its
  // notSelector picks. Felix folds the notSelector in whenever a side has a positive selection
  // (rule_scanner.go combineMatchesIfPossible), so it then drops objects, not their addresses.
  class Pick {
   public:
    // sa: the side whose serviceAccounts constrain the selection (only when it has names or a selector).
    Pick(const SelectorField& selector, const SideSelector& namespace_selector, const EntitySpec* sa,
         const SideSelector& excluded)
        : selector_(selector.selector),
          namespaces_(written(namespace_selector)
                          ? std::optional(namespace_selector->selector.with_all_as(kNamespaceLabel, true))
                          : std::nullopt),
          sa_(sa),
          excluded_(written(excluded) ? std::optional(excluded->selector) : std::nullopt) {
      key_ = "sel:" + selector.selector.canonical();
      if (namespaces_) key_ += " ns:" + namespace_selector->selector.canonical();
      if (sa) {
        key_ += " sa:";
        if (sa->service_account_selector) key_ += sa->service_account_selector->selector.canonical();
        std::vector<std::string> names = sa->service_account_names;
        std::sort(names.begin(), names.end());
        names.erase(std::unique(names.begin(), names.end()), names.end());
        for (const std::string& n : names) key_ += " name:" + n;
      }
      if (excluded_) key_ += " not:" + excluded_->canonical();
    }

    // The side's positive selection, or nothing when it has none.
    static std::optional<Pick> of_side(const EntitySpec& side) {
      static const SelectorField all_selector{};
      const bool sa = side.has_service_account_constraint();
      if (!written(side.selector) && !written(side.namespace_selector) && !sa) return std::nullopt;
      return Pick(written(side.selector) ? *side.selector : all_selector, side.namespace_selector,
                  sa ? &side : nullptr, side.not_selector);
    }

    bool operator()(const Labels& labels) const {
      if (!service_accounts_match(sa_, labels) || !selector_.matches(labels)) return false;
      if (namespaces_ && !prefixed_match(*namespaces_, labels, "pcns.", kNamespaceLabel)) return false;
      return !excluded_ || !excluded_->matches(labels);
    }

    const std::string& key() const { return key_; }

   private:
    // Copies, so that a Pick never outlives what it was made from.
    Selector selector_;
    std::optional<Selector> namespaces_;
    const EntitySpec* sa_;  // a side of the model, which outlives the mapping
    std::optional<Selector> excluded_;
    std::string key_;
  };

  // The IP set a selection stands for: expectedIPs of every HostEndpoint it picks on any node, and the
  // nets of every GlobalNetworkSet it picks (NPI). The rules of one selection share its name's block.
  ir::SharedString selector_set(const Pick& pick, const ir::Origin& origin) {
    auto known = selector_sets_.find(pick.key());
    if (known == selector_sets_.end()) {
      add_selector_set(pick, origin);
      known = selector_sets_.emplace(pick.key(), ir::SharedString(pick.key())).first;
    }
    return known->second;
  }
  void add_selector_set(const Pick& pick, const ir::Origin& origin) {
    if (ruleset_.sets.contains(pick.key())) return;
    ir::AddrSet set;
    set.origin = origin;
    for (const HostEndpoint& hep : model_.host_endpoints) {
      if (!pick(labels_of(hep))) continue;
      for (const ir::IpAddr& ip : hep.expected_ips) set.cidrs.push_back(host_cidr(ip));
    }
    for (const NetworkSet& gns : model_.network_sets) {
      if (pick(gns.labels)) set.cidrs.insert(set.cidrs.end(), gns.nets.begin(), gns.nets.end());
    }
    ruleset_.sets.emplace(pick.key(), std::move(set));
  }

  std::string net_set(const std::string& name, const std::vector<ir::Cidr>& nets, const ir::Origin& origin) {
    ir::AddrSet set;
    set.cidrs.assign(nets.begin(), nets.end());
    set.origin = origin;
    ruleset_.sets.emplace(name, std::move(set));
    return name;
  }

  // Each named-port target in notPorts multiplies a rule by up to three: at most 729 rules from one.
  static constexpr std::size_t kMaxExcludedNamedPorts = 6;

  // One way a side's ports can match: numbers (with the rule's protocol) or one named-port target.
  struct PortAlternative {
    std::optional<ir::PortMatch> numeric;
    std::optional<std::string> named_set;
    std::uint8_t protocol = 0;
    std::uint16_t port = 0;
  };

  // The named-port targets of a side's port names (SCAN/NPI): the (IP, protocol, port) of every
  // HostEndpoint the side's positive selection picks (any, when it has none; the same for notPorts) that
  // names the port, filtered by the rule's protocol; a HostEndpoint contributes its expectedIPs. One
  // address set per (name, protocol, port).
  std::vector<PortAlternative> named_port_targets(const RuleSpec& rule, const EntitySpec& entity,
                                                  const std::set<std::string>& names,
                                                  const std::string& prefix, const ir::Origin& origin) {
    std::vector<PortAlternative> out;
    const std::optional<Pick> pick = Pick::of_side(entity);
    for (const std::string& port_name : names) {
      std::map<std::pair<std::uint8_t, std::uint16_t>, std::vector<ir::Cidr>> targets;
      for (const HostEndpoint& hep : model_.host_endpoints) {
        if (pick && !(*pick)(labels_of(hep))) continue;
        for (const NamedPort& named : hep.ports) {
          if (named.name != port_name) continue;
          // A rule without protocol looks for any protocol, which Felix's MatchesModelProtocol finds only
          // in a port whose protocol is a name (ipset_port_protocol.go).
          if (rule.protocol ? *rule.protocol != named.protocol : named.protocol_is_number) continue;
          auto& ips = targets[{named.protocol, named.port}];
          for (const ir::IpAddr& ip : hep.expected_ips) ips.push_back(host_cidr(ip));
        }
      }
      for (const auto& [target, ips] : targets) {
        if (ips.empty()) continue;
        const std::string set_name = prefix + "-port-" + port_name + "-" + ir::protocol_name(target.first) +
                                     "-" + std::to_string(target.second);
        net_set(set_name, ips, origin);
        out.push_back({std::nullopt, set_name, target.first, target.second});
      }
    }
    return out;
  }

  static std::set<std::string> port_names(const std::vector<PortSpec>& ports) {
    std::set<std::string> names;
    for (const PortSpec& port : ports)
      if (port.name) names.insert(*port.name);
    return names;
  }

  std::vector<PortAlternative> port_alternatives(const RuleSpec& rule, const EntitySpec& entity,
                                                 const std::string& prefix, const ir::Origin& origin) {
    std::vector<PortAlternative> alternatives;
    if (entity.ports.empty()) {
      alternatives.emplace_back();
      return alternatives;
    }
    ir::PortMatch numeric;
    for (const PortSpec& port : entity.ports)
      if (!port.name) numeric.ports.push_back(port.range);
    if (!numeric.ports.empty()) alternatives.push_back({numeric, std::nullopt, 0, 0});
    for (PortAlternative& target : named_port_targets(rule, entity, port_names(entity.ports), prefix, origin))
      alternatives.push_back(std::move(target));
    return alternatives;
  }

  // Keeps a match to protocol `protocol` (equal) or to every other one; false when nothing is left.
  static bool restrict_protocol(ir::Match& match, std::uint8_t protocol, bool equal) {
    if (!match.protocols) {
      match.protocols = std::vector<std::uint8_t>{protocol};
      match.protocol_negate = !equal;
      return true;
    }
    std::vector<std::uint8_t>& listed = *match.protocols;
    const bool in_list = std::find(listed.begin(), listed.end(), protocol) != listed.end();
    if (equal) {
      if (in_list == match.protocol_negate) return false;
      listed = {protocol};
      match.protocol_negate = false;
    } else if (match.protocol_negate) {
      if (!in_list) listed.push_back(protocol);
    } else {
      std::erase(listed, protocol);
      if (listed.empty()) return false;
    }
    return true;
  }

  // A named port in notPorts: Felix's "! --match-set <named-port set> dst,dst" keeps the packets whose
  // (address, protocol, port) of that side is no target's. Per target, as disjoint matches (so that a Log
  // rule logs a packet once): another protocol; the protocol but another address; or both but another port.
  static std::vector<ir::Match> excluding(const std::vector<ir::Match>& matches,
                                          const PortAlternative& target, bool source) {
    std::vector<ir::Match> out;
    for (const ir::Match& match : matches) {
      ir::Match other_protocol = match;
      if (restrict_protocol(other_protocol, target.protocol, false)) out.push_back(std::move(other_protocol));
      ir::Match same_protocol = match;
      if (!restrict_protocol(same_protocol, target.protocol, true)) continue;
      ir::Match other_address = same_protocol;
      (source ? other_address.src_addr : other_address.dst_addr).push_back({true, *target.named_set});
      out.push_back(std::move(other_address));
      ir::Match other_port = std::move(same_protocol);
      (source ? other_port.src_addr : other_port.dst_addr).push_back({false, *target.named_set});
      (source ? other_port.src_port : other_port.dst_port).push_back({true, {{target.port, target.port}}});
      out.push_back(std::move(other_port));
    }
    return out;
  }

  // icmp and notICMP, both with a type, as Felix renders the pair: iptables "-m icmp --icmp-type T[/C]
  // -m icmp ! --icmp-type T'[/C']"; nftables (match_builder.go) "icmp type != T' [icmp code != C']",
  // both fields unequal. It comes down to the icmp match alone, or to no packet at all, except for a
  // whole type less some code, which needs a match on the code alone. With nftablesMode Auto, Felix
  // renders for the dataplane kube-proxy uses, which fwengine cannot see: the two must agree.
  enum class IcmpPair { icmp, never, inexpressible, depends };
  IcmpPair icmp_pair(const IcmpSpec& icmp, const IcmpSpec& not_icmp) const {
    auto rendered = [&](bool nftables) {
      const bool same_type = icmp.type == not_icmp.type;
      if (!not_icmp.code) return same_type ? IcmpPair::never : IcmpPair::icmp;
      if (same_type && nftables) return IcmpPair::never;  // type != T' fails already
      if (!same_type && !nftables) return IcmpPair::icmp;
      if (!icmp.code) return IcmpPair::inexpressible;
      return icmp.code == not_icmp.code ? IcmpPair::never : IcmpPair::icmp;
    };
    if (settings_.nftables != NftablesMode::auto_)
      return rendered(settings_.nftables == NftablesMode::enabled);
    const IcmpPair iptables = rendered(false);
    return iptables == rendered(true) ? iptables : IcmpPair::depends;
  }

  // What an icmp/notICMP pair that fwengine cannot map, or that never matches, means; said once a rule.
  // used: a HostEndpoint of this node has the rule's policy (or profile), whose rules Felix renders here.
  void say_icmp_pair(const RuleSpec& rule, IcmpPair pair, bool used) {
    if (pair == IcmpPair::icmp || !icmp_said_.insert(&rule).second) return;
    const IcmpSpec& not_icmp = *rule.not_icmp;
    if (pair == IcmpPair::never) {
      diag_.warning(not_icmp.loc,
                    "this notICMP excludes every packet the rule's icmp takes: the rule matches nothing",
                    "remove the rule, or the notICMP");
      return;
    }
    std::string message = pair == IcmpPair::inexpressible
                              ? "icmp type " + std::to_string(*rule.icmp->type) +
                                    " (any code) with this notICMP needs a match on the code alone, which "
                                    "fwengine cannot express"
                              : "Felix renders this icmp/notICMP pair differently for iptables and for "
                                "nftables, and nftablesMode Auto picks by kube-proxy's mode";
    std::string hint = pair == IcmpPair::inexpressible
                           ? "list the codes to allow in rules of their own, with icmp: {type, code}"
                           : "set nftablesMode to Enabled or Disabled in the FelixConfiguration, or give the "
                             "notICMP no code";
    if (used)
      diag_.error(not_icmp.loc, std::move(message), std::move(hint));
    else
      diag_.warning(not_icmp.loc,
                    message + " (no HostEndpoint of this node uses it; where one does, an error)",
                    std::move(hint));
  }

  // The pairs of the policies and profiles no HostEndpoint of this node uses, said after the others, so
  // that `check` of a policy alone finds them.
  void say_unused_icmp_pairs() {
    auto say = [&](const std::vector<RuleSpec>& rules) {
      for (const RuleSpec& rule : rules)
        if (rule.icmp && rule.icmp->type && rule.not_icmp && rule.not_icmp->type)
          say_icmp_pair(rule, icmp_pair(*rule.icmp, *rule.not_icmp), false);
    };
    for (const Policy& policy : model_.policies) {
      say(policy.ingress);
      say(policy.egress);
    }
    for (const Profile& profile : model_.profiles) {
      say(profile.ingress);
      say(profile.egress);
    }
  }

  void append_rule(ir::Chain& chain, const RuleOwner& owner, Direction direction, PolicyClass cls,
                   std::int32_t index, const RuleSpec& rule) {
    const ir::Origin origin{rule.loc, chain.origin.policy, index};  // all of the chain's rules share its text
    const std::string prefix =
        owner.prefix + "/" + std::string(to_string(direction)) + "/" + std::to_string(index);
    if (rule.protocol && rule.not_protocol && *rule.protocol == *rule.not_protocol) return;  // never matches
    ir::Match base;
    if (rule.ip_version) base.family = *rule.ip_version == 4 ? ir::Family::ipv4 : ir::Family::ipv6;
    if (rule.protocol) {
      base.protocols = std::vector<std::uint8_t>{*rule.protocol};
    } else if (rule.not_protocol) {
      base.protocols = std::vector<std::uint8_t>{*rule.not_protocol};
      base.protocol_negate = true;
    }
    // §2.1: nets of one family restrict the rule to that family, negated ones too (Felix's filterNets
    // drops a rule for a family whose CIDRs leave any of its lists empty; the reader keeps a rule's
    // networks to one family): `notNets: [192.168.0.0/16]` does not match IPv6 packets.
    for (const auto* nets :
         {&rule.source.nets, &rule.source.not_nets, &rule.destination.nets, &rule.destination.not_nets}) {
      if (!nets->empty()) base.family = nets->front().addr.family;
    }
    auto add_side = [&](const EntitySpec& entity, ir::AddrMatches& out, const char* side) {
      // One network stays in the rule's match; several are a set named after the rule.
      for (const auto& [nets, negate, suffix] :
           {std::tuple{&entity.nets, false, "-nets"}, std::tuple{&entity.not_nets, true, "-not-nets"}}) {
        if (nets->size() == 1)
          out.push_back(ir::AddrMatch(negate, nets->front()));
        else if (!nets->empty())
          out.push_back({negate, net_set(prefix + "/" + side + suffix, *nets, origin)});
      }
      if (const std::optional<Pick> pick = Pick::of_side(entity)) {
        out.push_back({false, selector_set(*pick, origin)});
      } else if (written(entity.not_selector)) {
        const Pick excluded(*entity.not_selector, std::nullopt, nullptr, std::nullopt);
        out.push_back({true, selector_set(excluded, origin)});
      }
    };
    add_side(rule.source, base.src_addr, "src");
    add_side(rule.destination, base.dst_addr, "dst");
    // Numbers in notPorts; named ones are excluded below, per target.
    auto not_ports = [](const EntitySpec& entity, ir::PortMatches& out) {
      ir::PortMatch match{true, {}};
      for (const PortSpec& port : entity.not_ports)
        if (!port.name) match.ports.push_back(port.range);
      if (!match.ports.empty()) out.push_back(std::move(match));
    };
    not_ports(rule.source, base.src_port);
    not_ports(rule.destination, base.dst_port);

    std::vector<ir::Match> matches;
    // Felix matches ICMP fields only when a type is given (its rule conversion): icmp: {} and
    // notICMP: {} constrain nothing.
    const IcmpSpec* icmp = rule.icmp && rule.icmp->type ? &*rule.icmp : nullptr;
    const IcmpSpec* not_icmp = rule.not_icmp && rule.not_icmp->type ? &*rule.not_icmp : nullptr;
    if (icmp && not_icmp) {
      switch (icmp_pair(*icmp, *not_icmp)) {
        case IcmpPair::icmp:
          not_icmp = nullptr;
          break;
        case IcmpPair::never:
        case IcmpPair::inexpressible:
        case IcmpPair::depends:
          say_icmp_pair(rule, icmp_pair(*icmp, *not_icmp), true);
          return;
      }
    }
    if (not_icmp) icmp = not_icmp;
    if (icmp) {
      // ICMP for IPv4 packets, ICMPv6 for IPv6 (Felix renders the rule per family).
      std::vector<ir::Family> families;
      if (rule.protocol == 1 || base.family == ir::Family::ipv4) {
        families = {ir::Family::ipv4};
      } else if (rule.protocol == 58 || base.family == ir::Family::ipv6) {
        families = {ir::Family::ipv6};
      } else {
        families = {ir::Family::ipv4, ir::Family::ipv6};
      }
      for (ir::Family family : families) {
        ir::Match match = base;
        if (families.size() > 1) match.family = family;
        match.icmp = ir::IcmpMatch{icmp == not_icmp, family == ir::Family::ipv6, icmp->type, icmp->code};
        matches.push_back(std::move(match));
      }
    } else {
      matches.push_back(base);
    }

    const auto src_alternatives = port_alternatives(rule, rule.source, prefix + "/src", origin);
    const auto dst_alternatives = port_alternatives(rule, rule.destination, prefix + "/dst", origin);
    // Named ports in notPorts: each target excluded, as one match per way a packet can miss it.
    std::vector<std::pair<PortAlternative, bool>> excluded;  // the target, and whether it is the source's
    for (const bool source : {true, false}) {
      const EntitySpec& side = source ? rule.source : rule.destination;
      for (PortAlternative& target : named_port_targets(rule, side, port_names(side.not_ports),
                                                        prefix + (source ? "/src-not" : "/dst-not"), origin))
        excluded.emplace_back(std::move(target), source);
    }
    if (excluded.size() > kMaxExcludedNamedPorts) {
      diag_.error(rule.loc,
                  "the named ports in this rule's notPorts stand for " + std::to_string(excluded.size()) +
                      " targets (a name's protocol and port); fwengine expands at most " +
                      std::to_string(kMaxExcludedNamedPorts),
                  "list fewer named ports in notPorts, or their numbers");
      return;
    }
    auto actions = actions_for(rule.action, cls);
    if (rule.action == RuleAction::deny && cls != PolicyClass::normal && settings_.deny_with_reject)
      warn_of_raw_reject(chain.name, rule.loc, cls);
    // Pass in a profile ends that profile only: the next profile runs (Felix checks only the accept mark).
    if (owner.profile && rule.action == RuleAction::pass) actions = {ir::ActionKind::return_};
    for (const ir::Match& match : matches) {
      for (const PortAlternative& src : src_alternatives) {
        for (const PortAlternative& dst : dst_alternatives) {
          ir::Match combined = match;
          std::optional<std::uint8_t> named_protocol;
          bool possible = true;
          auto apply = [&](const PortAlternative& alt, ir::AddrMatches& addrs, ir::PortMatches& ports) {
            if (alt.numeric) ports.push_back(*alt.numeric);
            if (!alt.named_set) return;
            if (named_protocol && *named_protocol != alt.protocol) possible = false;
            if (rule.not_protocol && *rule.not_protocol == alt.protocol) possible = false;
            named_protocol = alt.protocol;
            addrs.push_back({false, *alt.named_set});
            ports.push_back({false, {{alt.port, alt.port}}});
          };
          apply(src, combined.src_addr, combined.src_port);
          apply(dst, combined.dst_addr, combined.dst_port);
          if (!possible) continue;
          if (named_protocol) {
            combined.protocols = std::vector<std::uint8_t>{*named_protocol};
            combined.protocol_negate = false;
          }
          std::vector<ir::Match> kept{std::move(combined)};
          for (const auto& [target, source] : excluded) kept = excluding(kept, target, source);
          for (const ir::Match& each : kept) {
            for (ir::ActionKind kind : actions) {
              ir::Rule out;
              out.match = each;
              out.action.kind = kind;
              if (kind == ir::ActionKind::log) out.action.log_prefix = log_prefix(owner);
              out.origin = origin;
              chain.rules.push_back(std::move(out));
            }
          }
        }
      }
    }
  }

  const Model& model_;
  const MappingOptions& options_;
  Diagnostics& diag_;
  const FelixConfig* selected_config_ = nullptr;  // the selector-scoped FelixConfiguration for this node
  std::set<const RuleSpec*> icmp_said_;           // rules whose icmp/notICMP pair was spoken of
  std::set<std::string> raw_reject_warned_;       // chains whose Deny warn_of_raw_reject spoke of
  std::map<std::string, ir::SharedString> selector_sets_;  // selector_set's names, by their Pick key
  Settings settings_;
  ir::Ruleset ruleset_;
  std::vector<Tier> tiers_;
  std::vector<const Policy*> sorted_;
  std::unordered_map<const Policy*, JoinedSelectors> joined_;
  std::map<std::string, const Profile*> profiles_;
  std::map<const HostEndpoint*, Labels> inherited_labels_;
  std::vector<Binding> named_;
  const HostEndpoint* wildcard_ = nullptr;
};

}  // namespace

ir::Ruleset map_to_ir(const Model& model, const MappingOptions& options, Diagnostics& diag) {
  ir::Ruleset ruleset = Mapper(model, options, diag).run();
  ruleset.frontend = "calico";
  ruleset.files = diag.files();
  return ruleset;
}

}  // namespace fwe::calico
