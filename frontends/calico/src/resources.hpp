// resources.hpp - the Calico resources the frontend understands, validated and normalised (v1 -> v3).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"
#include "selector.hpp"

namespace fwe::calico {

// Felix's comma-separated list parameters ("kube-ipvs0,/^veth/"): entries trimmed, empty ones dropped.
inline std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> entries;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view entry = text.substr(start, comma - start);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (!entry.empty()) entries.emplace_back(entry);
    start = comma + 1;
  }
  return entries;
}

// A selector as written, parsed; text keeps the user's spelling for messages.
struct SelectorField {
  Selector selector;
  std::string text;
  SourceLoc loc;
};

struct PortSpec {
  std::optional<std::string> name;  // a named port; otherwise the range
  ir::PortRange range;
  SourceLoc loc;
};

// A rule side's selector, held out of line: a rule has two sides of four each and most are not written
// (8 bytes each instead of 72: the 10,000 rules of 1,000 policies read in 7 MB less).
using SideSelector = ir::Boxed<SelectorField>;

struct EntitySpec {
  std::vector<ir::Cidr> nets, not_nets;
  SideSelector selector, not_selector, namespace_selector;
  // serviceAccounts: Calico turns names and selector into a selector on the endpoint's labels
  // (updateprocessors/rules.go parseServiceAccounts); without either it is no constraint.
  SideSelector service_account_selector;  // absent or written ""
  std::vector<std::string> service_account_names;
  bool has_service_account_constraint() const {
    return service_account_selector.has_value() || !service_account_names.empty();
  }
  std::vector<PortSpec> ports, not_ports;
};

struct IcmpSpec {
  std::optional<std::uint8_t> type, code;
  SourceLoc loc;
};

enum class RuleAction { allow, deny, log, pass };

struct RuleSpec {
  RuleAction action = RuleAction::allow;
  std::optional<int> ip_version;
  std::optional<std::uint8_t> protocol, not_protocol;
  std::optional<IcmpSpec> icmp, not_icmp;
  EntitySpec source, destination;
  SourceLoc loc;
};

enum class Direction { ingress, egress };

struct Policy {
  std::string name;
  SourceLoc loc;
  std::string tier = "default";
  std::optional<double> order;  // absent = after every ordered policy
  SelectorField selector;
  std::optional<SelectorField> namespace_selector, service_account_selector;
  bool applies_ingress = false, applies_egress = false;
  std::vector<RuleSpec> ingress, egress;
  bool do_not_track = false, pre_dnat = false, apply_on_forward = false;
};

struct NamedPort {
  std::string name;
  std::uint8_t protocol = 6;
  bool protocol_is_number = false;  // 6 or "6": a rule without protocol never matches it (Felix)
  std::uint16_t port = 0;
};

struct HostEndpoint {
  std::string name;
  SourceLoc loc;
  Labels labels;
  std::string node;
  std::string interface_name;  // "*", a name, or empty (bound by expectedIPs)
  SourceLoc interface_loc;     // of spec.interfaceName, or of the resource
  std::vector<ir::IpAddr> expected_ips;
  std::vector<std::string> profiles;
  std::vector<NamedPort> ports;
};

// A Profile's rules (labelsToApply is not used).
struct Profile {
  std::string name;
  SourceLoc loc;
  std::vector<RuleSpec> ingress, egress;
  Labels labels_to_apply;  // what HostEndpoints listing the profile inherit (inherit_profile_labels)
};

struct NetworkSet {
  std::string name;
  SourceLoc loc;
  Labels labels;
  std::vector<ir::Cidr> nets;
};

struct Tier {
  std::string name;
  SourceLoc loc;
  std::optional<double> order;  // absent = 1 000 000, as Calico defaults it
  bool default_pass = false;    // defaultAction: Pass (else Deny)
};

struct FailsafePort {
  std::uint8_t protocol = 6;
  std::uint16_t port = 0;
  std::optional<ir::Cidr> net;
  SourceLoc loc;
};

// The fields of one FelixConfiguration that matter to host endpoints; absent = not set here.
// nftablesMode: whether Felix renders its rules for nftables; Auto follows kube-proxy's mode.
enum class NftablesMode { enabled, disabled, auto_ };

// IPIP or VXLAN as FelixConfiguration sets it (ipipEnabled/vxlanEnabled, or the annotations IpInIpEnabled
// and VXLANEnabled): on or off whatever the IP pools say, or, set to Felix's zero value, by the pools.
enum class Encapsulation : std::uint8_t { by_pools, on, off };
struct EncapsulationSetting {
  Encapsulation value = Encapsulation::by_pools;
  SourceLoc loc;
  std::string written;  // for messages: "FelixConfiguration 'default': ipipEnabled: true"
};

// An IPPool whose ipipMode or vxlanMode is other than Never: IPIP (or VXLAN) on unless FelixConfiguration
// says otherwise (Felix's EncapsulationCalculator). FelixConfiguration's VXLANEnabled is for IPv4 only.
struct EncapsulatedPool {
  SourceLoc loc;
  std::string written;  // "IPPool 'pool': vxlanMode CrossSubnet"
  bool ipip = false;    // or VXLAN
  bool ipv6 = false;
};

inline constexpr std::int64_t kVxlanPort = 4789;  // Felix's default vxlanPort
// Felix's default wireguardListeningPort and wireguardListeningPortV6.
inline constexpr std::int64_t kWireguardPort = 51820;
inline constexpr std::int64_t kWireguardPortV6 = 51821;

struct FelixConfig {
  std::string name;
  SourceLoc loc;
  // A selector-scoped FelixConfiguration (named neither default nor node.<name>) applies to the nodes its
  // nodeSelector selects; of several, the oldest. created is metadata.creationTimestamp as Kubernetes
  // writes it (RFC 3339 in UTC, so the text sorts by time); "" when absent: Go's zero time, the oldest.
  std::optional<SelectorField> node_selector;
  std::string created;
  std::optional<std::vector<FailsafePort>> failsafe_inbound, failsafe_outbound;
  std::optional<bool> disable_conntrack_invalid_check;
  std::optional<bool> deny_with_reject;      // iptablesFilterDenyAction: Reject
  std::optional<bool> nft_deny_with_reject;  // nftablesFilterDenyAction: Reject
  std::optional<NftablesMode> nftables_mode;
  std::optional<bool> ipv6_support;
  std::optional<std::string> log_prefix;
  std::optional<std::string> interface_prefix;   // workload interfaces, comma-separated prefixes
  std::optional<std::string> interface_exclude;  // names or /regex/, comma-separated
  // defaultEndpointToHostAction: Drop, Accept, or Return (continue); "" (Felix's default) is unset.
  std::optional<ir::Verdict> endpoint_to_host;
  std::optional<EncapsulationSetting> ipip, vxlan;
  // vxlanPort: the UDP port of VXLAN packets. Felix takes any int and uses its low 16 bits.
  std::optional<std::int64_t> vxlan_port;
  // wireguardEnabled / wireguardEnabledV6 and their listening ports (low 16 bits, as vxlanPort).
  std::optional<bool> wireguard, wireguard_v6;
  std::optional<std::int64_t> wireguard_port, wireguard_port_v6;
};

// A node's labels, which selector-scoped FelixConfigurations select it by: from Calico's Node or from the
// Kubernetes Node that Calico's is made from (Reader::read_node).
struct NodeLabels {
  std::string name;
  SourceLoc loc;
  Labels labels;
};

struct Model {
  std::vector<HostEndpoint> host_endpoints;
  std::vector<Policy> policies;
  std::vector<NetworkSet> network_sets;
  std::vector<Profile> profiles;
  std::vector<Tier> tiers;
  std::vector<FelixConfig> felix_configs;
  // Felix's environment (FELIX_* of calico-node's DaemonSet), over every FelixConfiguration.
  std::optional<FelixConfig> felix_environment;
  std::vector<NodeLabels> nodes;
  std::vector<EncapsulatedPool> encapsulated_pools;
};

}  // namespace fwe::calico
