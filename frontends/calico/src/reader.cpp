// reader.cpp - envelopes, v1 normalisation, field checks and the validation of spec calico.md §1.7.
#include "reader.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>
#include <regex>

namespace fwe::calico {

namespace {

constexpr std::string_view kApiV3 = "projectcalico.org/v3";
constexpr std::string_view kApiV1 = "crd.projectcalico.org/v1";
constexpr std::ptrdiff_t kMaxNodeSelector = 1024;  // FelixConfigurationSpec.NodeSelector's MaxLength
// The Felix settings fwengine models, by their Felix names, as annotations and environment variables
// name them.
constexpr std::array<std::string_view, 18> kFelixStringNames = {"FailsafeInboundHostPorts",
                                                                "FailsafeOutboundHostPorts",
                                                                "Ipv6Support",
                                                                "DisableConntrackInvalidCheck",
                                                                "IptablesFilterDenyAction",
                                                                "NftablesFilterDenyAction",
                                                                "DefaultEndpointToHostAction",
                                                                "NFTablesMode",
                                                                "LogPrefix",
                                                                "InterfacePrefix",
                                                                "InterfaceExclude",
                                                                "IpInIpEnabled",
                                                                "VXLANEnabled",
                                                                "VXLANPort",
                                                                "WireguardEnabled",
                                                                "WireguardEnabledV6",
                                                                "WireguardListeningPort",
                                                                "WireguardListeningPortV6"};
// The tiers whose order and default action Calico fixes (api tier.go: the orders, validateTier, the
// Tier's CEL rules); a missing order reads as 1 000 000 and a missing defaultAction as Deny.
struct StaticTier {
  std::string_view name;
  double order;
  std::string_view order_text;
  bool pass;  // defaultAction must be Pass (else Deny)
  std::string_view what;
};
constexpr StaticTier kStaticTiers[] = {
    {"default", 1000000, "1000000", false, "the default tier"},
    {"kube-admin", 1000, "1000", true,
     "kube-admin holds Kubernetes ClusterNetworkPolicies of the Admin tier"},
    {"kube-baseline", 10000000, "10000000", true,
     "kube-baseline holds Kubernetes ClusterNetworkPolicies of the Baseline tier"},
};

// Field names of each object, packed (clang-format would put one per line).
// clang-format off
const std::vector<std::string_view> kResourceFields = {"apiVersion", "kind", "metadata", "spec", "status"};
const std::vector<std::string_view> kMetadataFields = {"name", "namespace", "labels", "annotations",
    "resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "selfLink",
    "ownerReferences", "finalizers", "deletionTimestamp", "deletionGracePeriodSeconds", "generateName"};
const std::vector<std::string_view> kHostEndpointFields = {"node", "interfaceName", "expectedIPs", "profiles",
    "ports"};
const std::vector<std::string_view> kEndpointPortFields = {"name", "protocol", "port"};
const std::vector<std::string_view> kPolicyFields = {"tier", "order", "ingress", "egress", "selector",
    "types", "doNotTrack", "preDNAT", "applyOnForward", "serviceAccountSelector", "namespaceSelector",
    "performanceHints"};
const std::vector<std::string_view> kRuleFields = {"action", "ipVersion", "protocol", "icmp", "notProtocol",
    "notICMP", "source", "destination", "http", "metadata"};
const std::vector<std::string_view> kEntityFields = {"nets", "selector", "namespaceSelector", "services",
    "ports", "notNets", "notSelector", "notPorts", "serviceAccounts"};
const std::vector<std::string_view> kIcmpFields = {"type", "code"};
const std::vector<std::string_view> kHttpFields = {"methods", "paths"};
const std::vector<std::string_view> kRuleMetadataFields = {"annotations"};
const std::vector<std::string_view> kServiceAccountFields = {"names", "selector"};
const std::vector<std::string_view> kServiceFields = {"name", "namespace"};
const std::vector<std::string_view> kNetworkSetFields = {"nets"};
const std::vector<std::string_view> kTierFields = {"order", "defaultAction"};
const std::vector<std::string_view> kProfileFields = {"ingress", "egress", "labelsToApply"};
const std::vector<std::string_view> kProtoPortFields = {"protocol", "port", "net"};
// FelixConfigurationSpec's JSON names (calico api/pkg/apis/projectcalico/v3/felixconfig.go); only a few
// matter to host endpoints, the rest are accepted and have no effect here.
const std::vector<std::string_view> kFelixFields = {"nodeSelector", "useInternalDataplaneDriver",
    "dataplaneDriver", "dataplaneWatchdogTimeout", "ipv6Support", "routeRefreshInterval",
    "interfaceRefreshInterval", "iptablesRefreshInterval", "iptablesPostWriteCheckInterval",
    "iptablesLockFilePath", "iptablesLockTimeout", "iptablesLockProbeInterval", "featureDetectOverride",
    "featureGates", "ipsetsRefreshInterval", "maxIpsetSize", "iptablesBackend", "xdpRefreshInterval",
    "netlinkTimeout", "metadataAddr", "metadataPort", "openstackRegion", "interfacePrefix",
    "interfaceExclude", "chainInsertMode", "defaultEndpointToHostAction", "iptablesFilterAllowAction",
    "iptablesMangleAllowAction", "iptablesFilterDenyAction", "logPrefix", "logActionRateLimit",
    "logActionRateLimitBurst", "logFilePath", "logSeverityFile", "logSeverityScreen", "logSeveritySys",
    "logDebugFilenameRegex", "ipipEnabled", "ipipMTU", "vxlanEnabled", "vxlanMTU", "vxlanMTUV6", "vxlanPort",
    "vxlanVNI", "allowVXLANPacketsFromWorkloads", "allowIPIPPacketsFromWorkloads", "reportingInterval",
    "reportingTTL", "endpointReportingEnabled", "endpointReportingDelay", "endpointStatusPathPrefix",
    "iptablesMarkMask", "disableConntrackInvalidCheck", "healthEnabled", "healthHost", "healthPort",
    "healthTimeoutOverrides", "prometheusMetricsEnabled", "prometheusMetricsHost", "prometheusMetricsPort",
    "prometheusGoMetricsEnabled", "prometheusProcessMetricsEnabled", "prometheusWireGuardMetricsEnabled",
    "prometheusMetricsCAFile", "prometheusMetricsCertFile", "prometheusMetricsKeyFile",
    "prometheusMetricsClientAuth", "failsafeInboundHostPorts", "failsafeOutboundHostPorts",
    "kubeNodePortRanges", "policySyncPathPrefix", "usageReportingEnabled", "usageReportingInitialDelay",
    "usageReportingInterval", "natPortRange", "natOutgoingAddress", "natOutgoingExclusions",
    "deviceRouteSourceAddress", "deviceRouteSourceAddressIPv6", "deviceRouteProtocol", "removeExternalRoutes",
    "programClusterRoutes", "ipForwarding", "externalNodesList", "debugMemoryProfilePath",
    "debugDisableLogDropping", "debugSimulateCalcGraphHangAfter", "debugSimulateDataplaneHangAfter",
    "debugSimulateDataplaneApplyDelay", "debugHost", "debugPort", "iptablesNATOutgoingInterfaceFilter",
    "sidecarAccelerationEnabled", "xdpEnabled", "genericXDPEnabled", "nftablesMode",
    "nftablesFlowTableOffload", "nftablesFlowTableDataIfacePattern", "nftablesRefreshInterval",
    "nftablesFilterAllowAction", "nftablesMangleAllowAction", "nftablesFilterDenyAction", "nftablesMarkMask",
    "bpfEnabled", "bpfOverlayHostSourceIP", "bpfDisableUnprivileged", "bpfJITHardening", "bpfLogLevel",
    "bpfConntrackLogLevel", "bpfConntrackMode", "bpfConntrackTimeouts", "bpfIPFragTimeout", "bpfLogFilters",
    "bpfCTLBLogFilter", "bpfDataIfacePattern", "bpfL3IfacePattern", "bpfConnectTimeLoadBalancingEnabled",
    "bpfConnectTimeLoadBalancing", "bpfHostNetworkedNATWithoutCTLB", "bpfExternalServiceMode",
    "bpfDSROptoutCIDRs", "bpfExtToServiceConnmark", "bpfKubeProxyIptablesCleanupEnabled",
    "bpfKubeProxyMinSyncPeriod", "bpfKubeProxyHealthzPort", "bpfPSNATPorts", "bpfMapSizeNATFrontend",
    "bpfMapSizeNATBackend", "bpfMapSizeNATAffinity", "bpfMapSizeRoute", "bpfMapSizeConntrack",
    "bpfMapSizePerCpuConntrack", "bpfMapSizeConntrackScaling", "bpfMapSizeConntrackCleanupQueue",
    "bpfMapSizeIPSets", "bpfMapSizeIfState", "bpfHostConntrackBypass", "bpfIPFragmentReassemblyEnabled",
    "bpfEnforceRPF", "bpfPolicyDebugEnabled", "bpfForceTrackPacketsFromIfaces", "bpfDisableGROForIfaces",
    "bpfExcludeCIDRsFromNAT", "bpfExportBufferSizeMB", "istioAmbientMode", "istioDSCPMark", "cgroupV2Path",
    "flowLogsPolicyEvaluationMode", "bpfRedirectToPeer", "bpfAttachType", "flowLogsFlushInterval",
    "flowLogsCollectorDebugTrace", "flowLogsGoldmaneServer", "flowLogsLocalReporter", "bpfProfiling",
    "routeSource", "routeTableRanges", "routeTableRange", "routeSyncDisabled", "ipv4NormalRoutePriority",
    "ipv4ElevatedRoutePriority", "ipv6NormalRoutePriority", "ipv6ElevatedRoutePriority",
    "liveMigrationRouteConvergenceTime", "wireguardEnabled", "wireguardEnabledV6",
    "wireguardThreadingEnabled", "wireguardListeningPort", "wireguardListeningPortV6",
    "wireguardRoutingRulePriority", "wireguardInterfaceName", "wireguardInterfaceNameV6", "wireguardMTU",
    "wireguardMTUV6", "wireguardHostEncryptionEnabled", "wireguardKeepAlive", "awsSrcDstCheck",
    "serviceLoopPrevention", "workloadSourceSpoofing", "mtuIfacePattern", "floatingIPs",
    "localSubnetL2Reachability", "localSubnetL2ReachabilityRefreshInterval", "windowsManageFirewallRules",
    "goGCThreshold", "goMemoryLimitMB", "goMaxProcs", "requireMTUFile", "bpfMaglevMaxEndpointsPerService",
    "bpfMaglevMaxServices"};
const std::vector<std::string_view> kSupportedKinds = {"HostEndpoint", "GlobalNetworkPolicy",
    "GlobalNetworkSet", "FelixConfiguration", "Tier", "Profile"};
// Namespaced kinds apply to workloads only; a cluster dump contains them.
const std::vector<std::string_view> kNamespacedKinds = {"NetworkPolicy", "NetworkSet", "StagedNetworkPolicy",
    "StagedKubernetesNetworkPolicy", "WorkloadEndpoint"};
// Cluster-wide kinds with no effect on host-endpoint filtering.
const std::vector<std::string_view> kIgnoredKinds = {"BGPConfiguration", "BGPPeer", "BGPFilter",
    "ClusterInformation", "IPPool", "IPReservation", "IPAMConfiguration", "IPAMConfig", "IPAMBlock",
    "IPAMHandle", "BlockAffinity", "KubeControllersConfiguration", "CalicoNodeStatus",
    "StagedGlobalNetworkPolicy"};
// clang-format on

bool one_of(std::string_view word, const std::vector<std::string_view>& list) {
  return std::find(list.begin(), list.end(), word) != list.end();
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// One '.'-separated part of a Calico name: lower-case letters, digits and '-' inside.
bool is_name_part(std::string_view s) {
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (s.empty() || !alnum(s.front()) || !alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return alnum(c) || c == '-'; });
}

// A DNS label (Tier names): one part, <=63 characters.
bool is_dns_label(std::string_view s) {
  return s.size() <= 63 && is_name_part(s);
}

// A DNS subdomain as Calico's and Kubernetes' validators check it (resource names, label prefixes):
// <=253 characters; no part has a length limit of its own.
bool is_dns_subdomain(std::string_view s) {
  return s.size() <= 253 && is_calico_name(s);
}

// GlobalNetworkPolicy names: an optional "<tier>." prefix and one part, <=253 characters in all (VAL
// globalNetworkPolicyNameRegex).
bool is_policy_name(std::string_view s) {
  if (s.size() > 253) return false;
  const std::size_t dot = s.find('.');
  if (dot == std::string_view::npos) return is_name_part(s);
  return is_name_part(s.substr(0, dot)) && is_name_part(s.substr(dot + 1));
}

// Kubernetes label key: [prefix/]name; prefix a DNS subdomain, name <=63 alphanumerics with -_. inside.
bool is_label_name(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  if (!alnum(s.front()) || !alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return alnum(c) || c == '-' || c == '_' || c == '.'; });
}
bool is_label_key(std::string_view s) {
  const std::size_t slash = s.find('/');
  if (slash == std::string_view::npos) return is_label_name(s);
  return is_dns_subdomain(s.substr(0, slash)) && is_label_name(s.substr(slash + 1));
}
bool is_label_value(std::string_view s) {
  return s.empty() || is_label_name(s);
}

// Kubernetes IsValidPortName: <=15 chars of [a-z0-9-], at least one letter, no leading/trailing/double '-'.
bool is_port_name(std::string_view s) {
  if (s.empty() || s.size() > 15) return false;
  if (s.front() == '-' || s.back() == '-' || s.find("--") != std::string_view::npos) return false;
  bool letter = false;
  for (char c : s) {
    if (c >= 'a' && c <= 'z') {
      letter = true;
    } else if (!((c >= '0' && c <= '9') || c == '-')) {
      return false;
    }
  }
  return letter;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<long> to_number(std::string_view s) {
  if (!all_digits(s) || s.size() > 9) return std::nullopt;
  return std::stol(std::string(s));
}

bool supports_ports(std::uint8_t protocol) {
  return protocol == 6 || protocol == 17 || protocol == 132;
}

bool is_catch_all(const ir::Cidr& cidr) {
  return cidr.prefix == 0;
}

// Where byte `offset` of a scalar's text is in the file: re-scanned from the source when there is one
// (escapes, folded lines and block scalars move it), else counted from the scalar's start on its line.
SourceLoc offset_loc(std::string_view source, const yaml::Node& node, std::size_t offset) {
  if (!source.empty()) {
    if (auto loc = yaml::locate_in_scalar(source, node, offset)) return *loc;
  }
  SourceLoc loc = node.loc();
  loc.col += static_cast<std::uint32_t>(offset) + (node.quoted() ? 1 : 0);
  return loc;
}

// did_you_mean, plus the common case of a right word in the wrong case (Calico's enums are exact).
std::string spelling_hint(std::string_view word, const std::vector<std::string_view>& known) {
  for (std::string_view candidate : known) {
    if (lower(candidate) == lower(word)) {
      return "did you mean '" + std::string(candidate) + "'? names are case-sensitive";
    }
  }
  return did_you_mean(word, known);
}

std::string join(const std::vector<std::string_view>& words) {
  std::string out;
  for (std::string_view w : words) {
    if (!out.empty()) out += ", ";
    out += w;
  }
  return out;
}

}  // namespace

bool is_calico_name(std::string_view s) {
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = s.find('.', start);
    if (!is_name_part(s.substr(start, dot == std::string_view::npos ? dot : dot - start))) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool is_interface_name(std::string_view s) {
  if (s.empty() || s.size() > 15) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
  });
}

struct Reader::Context {
  bool v1 = false;  // crd.projectcalico.org/v1: enums compare case-insensitively, raw objects lack defaults
  std::string kind;
};

struct Reader::Meta {
  std::string name;
  SourceLoc loc;       // of the resource
  SourceLoc name_loc;  // of metadata.name, or of the resource when absent
  Labels labels;
  std::string created;                      // metadata.creationTimestamp, "" when absent
  bool calico_annotation = false;           // v1: Calico's projectcalico.org/metadata annotation was read
  bool name_from_annotation = false;        // and it named the resource
  const yaml::Node* annotations = nullptr;  // metadata.annotations, a mapping (while the document is read)
};

// ---- generic helpers ------------------------------------------------------------------------------

void Reader::check_fields(const yaml::Node& map, const std::vector<std::string_view>& known,
                          std::string_view where) {
  for (const yaml::Node& key : map.keys()) {
    if (one_of(key.text(), known)) continue;
    std::string hint = did_you_mean(key.text(), known);
    if (hint.empty()) hint = "known fields: " + join(known);
    diag_.error(key.loc(), "unknown field '" + key.text() + "' in " + std::string(where), hint);
  }
}

bool Reader::expect(const yaml::Node& node, yaml::Kind kind, std::string_view what) {
  if (node.kind() == kind) return true;
  std::string wanted = kind == yaml::Kind::mapping    ? "a mapping"
                       : kind == yaml::Kind::sequence ? "a list"
                                                      : "a scalar";
  diag_.error(node.loc(), std::string(what) + " must be " + wanted + ", not " + node.describe(),
              "write " + std::string(what) + " as " + wanted);
  return false;
}

std::optional<std::string> Reader::string_of(const yaml::Node& node, std::string_view what) {
  if (node.is_scalar()) return node.text();
  diag_.error(node.loc(), std::string(what) + " must be a string, not " + node.describe(),
              "write " + std::string(what) + " as a single value");
  return std::nullopt;
}

std::optional<bool> Reader::bool_of(const yaml::Node& node, std::string_view what) {
  if (auto b = node.as_bool()) return b;
  diag_.error(node.loc(), std::string(what) + " must be true or false, not " + node.describe(),
              "write " + std::string(what) + ": true (unquoted)");
  return std::nullopt;
}

// ---- envelopes -------------------------------------------------------------------------------------

void Reader::read_documents(std::span<yaml::Node> documents, std::string_view source) {
  source_ = source;
  for (yaml::Node& doc : documents) {
    if (doc.is_sequence()) {
      for (const yaml::Node& item : doc.items()) read_item(item, true);
    } else if (!doc.is_null()) {
      read_item(doc, false);
    }
    doc = yaml::Node();
  }
  source_ = {};
}

void Reader::read_item(const yaml::Node& node, bool in_list) {
  if (!expect(node, yaml::Kind::mapping, in_list ? "a list item" : "a document")) return;
  const yaml::Node* kind = node.find("kind");
  if (kind && kind->is_scalar() && kind->text().ends_with("List")) {
    check_fields(node, {"apiVersion", "kind", "metadata", "items"}, kind->text());
    const yaml::Node* items = node.find("items");
    if (!items) {
      diag_.error(node.loc(), kind->text() + " without items", "a list resource needs 'items:'");
      return;
    }
    if (items->is_null()) return;
    if (!expect(*items, yaml::Kind::sequence, "items")) return;
    for (const yaml::Node& item : items->items()) read_item(item, true);
    return;
  }
  read_resource(node);
}

void Reader::read_resource(const yaml::Node& node) {
  check_fields(node, kResourceFields, "a Calico resource");
  const yaml::Node* api = node.find("apiVersion");
  const yaml::Node* kind_node = node.find("kind");
  if (!kind_node || !kind_node->is_scalar()) {
    diag_.error(node.loc(), "resource without kind",
                "add 'kind: HostEndpoint' (or GlobalNetworkPolicy, ...)");
    return;
  }
  const std::string& kind = kind_node->text();
  const std::string api_version = api && api->is_scalar() ? api->text() : "";
  const bool calico_api = api_version == kApiV3 || api_version == kApiV1;
  if (kind == "Node") {
    read_node(node, api_version, kind_node->loc());
    return;
  }

  if (one_of(kind, kNamespacedKinds) || one_of(kind, kIgnoredKinds)) {
    const yaml::Node* meta = node.find("metadata");
    const yaml::Node* name = meta && meta->is_mapping() ? meta->find("name") : nullptr;
    const std::string what = kind + (name && name->is_scalar() ? " '" + name->text() + "'" : std::string());
    const yaml::Node* spec = node.find("spec");
    const bool pool = kind == "IPPool" && spec && spec->is_mapping();
    const yaml::Node* cidr = pool ? spec->find("cidr") : nullptr;
    for (const char* field : {"ipipMode", "vxlanMode"}) {
      const yaml::Node* mode = pool ? spec->find(field) : nullptr;
      if (mode && mode->is_scalar() && !mode->text().empty() && lower(mode->text()) != "never")
        model_.encapsulated_pools.push_back({mode->loc(), what + ": " + field + " " + mode->text(),
                                             field[0] == 'i',
                                             cidr && cidr->text().find(':') != std::string::npos});
    }
    diag_.warning(kind_node->loc(), what + " skipped: " +
                                        (one_of(kind, kNamespacedKinds)
                                             ? "namespaced resources apply to workloads, not to hosts"
                                             : "it has no effect on host endpoint filtering"));
    return;
  }
  if (kind == "DaemonSet" && api_version == "apps/v1" && read_calico_node(node)) return;
  if (!one_of(kind, kSupportedKinds)) {
    if (!calico_api) {
      diag_.warning(kind_node->loc(),
                    "kind " + kind + " (apiVersion '" + api_version + "') is not a Calico resource; skipped");
      return;
    }
    std::vector<std::string_view> known = kSupportedKinds;
    known.insert(known.end(), kNamespacedKinds.begin(), kNamespacedKinds.end());
    known.insert(known.end(), kIgnoredKinds.begin(), kIgnoredKinds.end());
    known.push_back("Node");
    std::string hint = did_you_mean(kind, known);
    if (hint.empty()) hint = "supported kinds: " + join(kSupportedKinds);
    diag_.error(kind_node->loc(), "unknown kind '" + kind + "'", hint);
    return;
  }
  if (!api) {
    diag_.error(node.loc(), kind + " without apiVersion", "add 'apiVersion: projectcalico.org/v3'");
    return;
  }
  if (!calico_api) {
    diag_.error(api->loc(), "unsupported apiVersion '" + api_version + "' for " + kind,
                "write 'apiVersion: projectcalico.org/v3' (or crd.projectcalico.org/v1)");
    return;
  }
  Context ctx;
  ctx.v1 = api_version == kApiV1;
  ctx.kind = kind;
  if (ctx.v1 && !noted_v1_) {
    noted_v1_ = true;
    diag_.note(api->loc(),
               "crd.projectcalico.org/v1 is Calico's internal storage format; reading it like Felix does",
               "write projectcalico.org/v3 resources: they are validated and defaulted by Calico's API");
  }
  auto meta = read_metadata(node, ctx);
  if (!meta) return;
  const yaml::Node* spec = node.find("spec");
  if (spec && !spec->is_null() && !expect(*spec, yaml::Kind::mapping, "spec")) return;
  if (spec && spec->is_null()) spec = nullptr;

  if (kind == "HostEndpoint") {
    if (!spec) {
      diag_.error(node.loc(), "HostEndpoint '" + meta->name + "' without spec",
                  "add spec with node and interfaceName or expectedIPs");
      return;
    }
    read_host_endpoint(*spec, *meta, ctx);
  } else if (kind == "GlobalNetworkPolicy") {
    read_policy(spec, std::move(*meta), ctx);
  } else if (kind == "GlobalNetworkSet") {
    read_network_set(spec, *meta);
  } else if (kind == "Tier") {
    read_tier(spec, *meta, ctx);
  } else if (kind == "Profile") {
    read_profile(spec, *meta, ctx);
  } else {
    read_felix_config(spec, *meta, ctx);
  }
}

std::optional<Reader::Meta> Reader::read_metadata(const yaml::Node& resource, const Context& ctx) {
  Meta meta;
  meta.loc = resource.loc();
  meta.name_loc = resource.loc();
  const yaml::Node* node = resource.find("metadata");
  if (!node || !expect(*node, yaml::Kind::mapping, "metadata")) {
    if (!node) diag_.error(resource.loc(), ctx.kind + " without metadata", "add metadata: {name: ...}");
    return std::nullopt;
  }
  check_fields(*node, kMetadataFields, "metadata");
  bool ok = true;
  if (const yaml::Node* name = node->find("name")) {
    meta.name_loc = name->loc();
    if (auto text = string_of(*name, "metadata.name")) meta.name = *text;
  }
  if (const yaml::Node* labels = node->find("labels"); labels && !labels->is_null())
    ok = read_labels(*labels, "metadata.labels", meta.labels) && ok;
  if (const yaml::Node* created = node->find("creationTimestamp"); created && created->is_scalar())
    meta.created = created->text();
  const yaml::Node* annotations = node->find("annotations");
  if (annotations && !annotations->is_null() &&
      expect(*annotations, yaml::Kind::mapping, "metadata.annotations")) {
    meta.annotations = annotations;
    const yaml::Node* calico_meta = annotations->find("projectcalico.org/metadata");
    if (ctx.v1 && calico_meta && calico_meta->is_scalar()) {
      // v1 objects written by Calico keep the user's labels (and for policies the name) in this annotation.
      auto json = nlohmann::json::parse(calico_meta->text(), nullptr, false);
      if (json.is_discarded() || !json.is_object()) {
        diag_.error(calico_meta->loc(), "annotation projectcalico.org/metadata is not a JSON object",
                    "remove the annotation or restore the JSON Calico wrote");
        ok = false;
      } else {
        meta.calico_annotation = true;
        if (auto it = json.find("labels"); it != json.end() && it->is_object()) {
          for (auto& [key, value] : it->items()) {
            if (value.is_string()) meta.labels[key] = value.get<std::string>();
          }
        }
        // Calico's own creation time, where its client set one; the object's when it is zero (null).
        if (auto it = json.find("creationTimestamp"); it != json.end() && it->is_string())
          meta.created = it->get<std::string>();
        if (auto it = json.find("name");
            it != json.end() && it->is_string() && !it->get<std::string>().empty()) {
          meta.name = it->get<std::string>();
          meta.name_from_annotation = true;
        }
      }
    }
  }
  if (meta.name.empty()) {
    diag_.error(meta.name_loc, ctx.kind + " without metadata.name", "add metadata: {name: ...}");
    return std::nullopt;
  }
  if (!ok) return std::nullopt;
  return meta;
}

// ---- Node ------------------------------------------------------------------------------------------

// Calico's Node (calicoctl, projectcalico.org/v3) or the Kubernetes Node Calico makes its own from
// (kubectl, v1): only the labels, which FelixConfiguration nodeSelectors select. Kubernetes' Node carries
// the labels set with calicoctl in an annotation; its own labels win over those (libcalico-go's
// K8sNodeToCalico).
void Reader::read_node(const yaml::Node& node, const std::string& api_version, SourceLoc kind_loc) {
  if (api_version != "v1" && api_version != kApiV3) {
    diag_.warning(kind_loc,
                  "Node with apiVersion '" + api_version +
                      "' skipped: fwengine reads the labels of Kubernetes' Node (v1) and Calico's "
                      "(projectcalico.org/v3)",
                  "give the Node as kubectl or calicoctl prints it");
    return;
  }
  Context ctx;
  ctx.kind = "Node";
  auto meta = read_metadata(node, ctx);
  if (!meta) return;
  Labels labels;
  const yaml::Node* calico_labels = api_version == "v1" && meta->annotations
                                        ? meta->annotations->find("projectcalico.org/labels")
                                        : nullptr;
  if (calico_labels && calico_labels->is_scalar()) {
    auto json = nlohmann::json::parse(calico_labels->text(), nullptr, false);
    if (json.is_object()) {
      for (auto& [key, value] : json.items())
        if (value.is_string()) labels[key] = value.get<std::string>();
    } else {
      diag_.warning(calico_labels->loc(),
                    "annotation projectcalico.org/labels is not a JSON object: ignored, as "
                    "Calico ignores it",
                    "restore the JSON calicoctl wrote, or remove the annotation");
    }
  }
  for (auto& [key, value] : meta->labels) labels[key] = value;
  model_.nodes.push_back({meta->name, meta->loc, std::move(labels)});
}

// ---- calico-node's environment ---------------------------------------------------------------------

// calico-node's DaemonSet, as a cluster dump holds it: the FELIX_* variables of its calico-node container
// are Felix's environment, over every FelixConfiguration (Calico's manifests set
// FELIX_DEFAULTENDPOINTTOHOSTACTION and FELIX_IPV6SUPPORT there). False for any other DaemonSet.
bool Reader::read_calico_node(const yaml::Node& daemon_set) {
  auto field = [](const yaml::Node* node, const char* name) {
    return node && node->is_mapping() ? node->find(name) : nullptr;
  };
  const yaml::Node* name = field(field(&daemon_set, "metadata"), "name");
  if (!name || !name->is_scalar() || name->text() != "calico-node") return false;
  if (model_.felix_environment) {
    diag_.warning(name->loc(), "another DaemonSet calico-node: its environment is not read",
                  "the first is at " + diag_.where(model_.felix_environment->loc) + "; give it once");
    return true;
  }
  const yaml::Node* env = nullptr;
  const yaml::Node* containers =
      field(field(field(field(&daemon_set, "spec"), "template"), "spec"), "containers");
  if (containers && containers->is_sequence())
    for (const yaml::Node& container : containers->items())
      if (const yaml::Node* container_name = field(&container, "name");
          container_name && container_name->is_scalar() && container_name->text() == "calico-node")
        env = field(&container, "env");
  // Of two variables of one name Kubernetes keeps the last; Felix takes the rest in any case, by their
  // lower-cased names, so two spellings of one setting are either's (read_felix_strings refuses them).
  std::vector<std::pair<FelixString, const yaml::Node*>> variables;  // each name once, and its entry
  std::map<std::string_view, std::size_t> by_name;
  if (env && env->is_sequence())
    for (const yaml::Node& variable : env->items()) {
      const yaml::Node* var = field(&variable, "name");
      if (!var || !var->is_scalar() || !lower(var->text()).starts_with("felix_")) continue;
      const yaml::Node* value = field(&variable, "value");
      const FelixString string{var, std::string_view(var->text()).substr(6),
                               value && value->is_scalar() && !value->is_null() ? value : nullptr};
      auto [at, inserted] = by_name.try_emplace(var->text(), variables.size());
      if (inserted)
        variables.emplace_back(string, &variable);
      else
        variables[at->second] = {string, &variable};
    }
  std::vector<FelixString> strings;
  for (const auto& entry : variables) {
    const FelixString& string = entry.first;  // named, not bound: the lambda below captures it
    const yaml::Node* variable = entry.second;
    if (string.value) {
      strings.push_back(string);
    } else if (field(variable, "valueFrom") && std::any_of(kFelixStringNames.begin(), kFelixStringNames.end(),
                                                           [&](std::string_view modelled) {
                                                             return lower(modelled) == lower(string.name);
                                                           })) {
      diag_.note(string.key->loc(),
                 string.key->text() +
                     " of calico-node takes its value from elsewhere (valueFrom), which Felix reads and "
                     "fwengine does not: fwengine leaves the setting to the FelixConfigurations",
                 "give the value in place (value:) for fwengine to read it");
    }
  }
  FelixConfig config;
  config.name = "calico-node";
  config.loc = daemon_set.loc();
  read_felix_strings(strings, true, config);
  model_.felix_environment = std::move(config);
  return true;
}

// ---- HostEndpoint ----------------------------------------------------------------------------------

void Reader::read_host_endpoint(const yaml::Node& spec, const Meta& meta, const Context& ctx) {
  check_fields(spec, kHostEndpointFields, "HostEndpoint spec");
  HostEndpoint hep;
  hep.name = meta.name;
  hep.loc = meta.loc;
  hep.labels = meta.labels;
  if (!is_dns_subdomain(hep.name)) {
    diag_.error(meta.name_loc, "invalid HostEndpoint name '" + hep.name + "'",
                "use lower-case letters, digits, '-' and '.' (a DNS subdomain, <=253 characters)");
  }
  if (const yaml::Node* node = spec.find("node")) {
    if (auto text = string_of(*node, "spec.node")) {
      hep.node = *text;
      if (!hep.node.empty() && !is_calico_name(hep.node)) {
        diag_.error(node->loc(), "invalid spec.node '" + hep.node + "'",
                    "write the node's name as Calico has it: lower-case letters, digits, '-' and '.', each "
                    "part starting and ending with a letter or digit");
      }
    }
  }
  if (hep.node.empty()) {
    diag_.error(spec.loc(), "HostEndpoint '" + hep.name + "' has no spec.node",
                "set spec.node to the node name of the host the interface belongs to");
  }
  hep.interface_loc = meta.loc;
  if (const yaml::Node* iface = spec.find("interfaceName")) {
    hep.interface_loc = iface->loc();
    if (auto text = string_of(*iface, "spec.interfaceName")) {
      hep.interface_name = *text;
      if (!hep.interface_name.empty() && hep.interface_name != "*" &&
          !is_interface_name(hep.interface_name)) {
        diag_.error(iface->loc(), "invalid interfaceName '" + hep.interface_name + "'",
                    "write a Linux interface name (1-15 of letters, digits, '_', '.', '-') or \"*\" for all");
      }
    }
  }
  if (const yaml::Node* ips = spec.find("expectedIPs"); ips && !ips->is_null()) {
    if (expect(*ips, yaml::Kind::sequence, "spec.expectedIPs")) {
      for (const yaml::Node& item : ips->items()) {
        auto text = string_of(item, "an expectedIPs entry");
        if (!text) continue;
        auto ip = ir::parse_ip(*text);
        if (!ip) {
          diag_.error(item.loc(), "expectedIPs entry '" + *text + "' is not an IP address",
                      "write a bare IPv4 or IPv6 address, without /prefix");
          continue;
        }
        hep.expected_ips.push_back(*ip);
      }
    }
  }
  if (hep.interface_name.empty() && hep.expected_ips.empty()) {
    diag_.error(spec.loc(), "HostEndpoint '" + hep.name + "' has neither interfaceName nor expectedIPs",
                "set spec.interfaceName (or \"*\") or list the interface's addresses in spec.expectedIPs");
  }
  if (const yaml::Node* profiles = spec.find("profiles"); profiles && !profiles->is_null()) {
    if (expect(*profiles, yaml::Kind::sequence, "spec.profiles")) {
      for (const yaml::Node& item : profiles->items()) {
        auto text = string_of(item, "a profile name");
        if (!text) continue;
        if (!is_calico_name(*text)) {
          diag_.error(item.loc(), "invalid profile name '" + *text + "'",
                      "a profile name is lower-case letters, digits, '-' and '.', each part starting and "
                      "ending with a letter or digit (Calico's name rule)");
          continue;
        }
        hep.profiles.push_back(*text);
      }
    }
  }
  if (const yaml::Node* ports = spec.find("ports"); ports && !ports->is_null()) {
    if (expect(*ports, yaml::Kind::sequence, "spec.ports")) {
      for (const yaml::Node& item : ports->items()) {
        if (!expect(item, yaml::Kind::mapping, "a spec.ports entry")) continue;
        check_fields(item, kEndpointPortFields, "a HostEndpoint port");
        NamedPort port;
        const yaml::Node* name = item.find("name");
        const yaml::Node* protocol = item.find("protocol");
        const yaml::Node* number = item.find("port");
        if (!name || !is_port_name(name->text())) {
          diag_.error(name ? name->loc() : item.loc(),
                      name ? "invalid port name '" + name->text() + "'" : "HostEndpoint port without name",
                      "a port name is 1-15 of a-z, 0-9 and '-', with at least one letter");
        } else {
          port.name = name->text();
        }
        if (!protocol) {
          diag_.error(item.loc(), "HostEndpoint port without protocol", "add protocol: TCP (or UDP, SCTP)");
        } else if (auto proto = read_protocol(*protocol, ctx)) {
          if (!supports_ports(*proto)) {
            diag_.error(protocol->loc(), "protocol " + protocol->text() + " has no ports",
                        "use TCP, UDP or SCTP for a named port");
          }
          port.protocol = *proto;
          // Calico reads a protocol of digits, quoted or not, as a number (Uint8OrString).
          const std::string& text = protocol->text();
          port.protocol_is_number = !text.empty() && std::all_of(text.begin(), text.end(),
                                                                 [](char c) { return c >= '0' && c <= '9'; });
        }
        auto value = number ? number->as_int() : std::nullopt;
        if (!value || *value < 1 || *value > 65535) {
          diag_.error(number ? number->loc() : item.loc(), "HostEndpoint port needs a port number 1-65535",
                      "write port: 8443");
        } else {
          port.port = static_cast<std::uint16_t>(*value);
        }
        hep.ports.push_back(port);
      }
    }
  }
  model_.host_endpoints.push_back(std::move(hep));
}

// ---- selectors, protocols, ports -------------------------------------------------------------------

std::optional<SelectorField> Reader::read_selector(const yaml::Node& node, std::string_view field) {
  auto text = string_of(node, field);
  if (!text) return std::nullopt;
  SelectorError error;
  auto selector = Selector::parse(*text, error);
  if (!selector) {
    diag_.error(offset_loc(source_, node, error.offset),
                "invalid " + std::string(field) + ": " + error.message, error.hint);
    return std::nullopt;
  }
  return SelectorField{std::move(*selector), *text, node.loc()};
}

std::optional<std::uint8_t> Reader::read_protocol(const yaml::Node& node, const Context& ctx) {
  static const std::vector<std::pair<std::string_view, std::uint8_t>> names = {
      {"TCP", 6}, {"UDP", 17}, {"ICMP", 1}, {"ICMPv6", 58}, {"SCTP", 132}, {"UDPLite", 136}};
  if (!node.is_scalar()) {
    expect(node, yaml::Kind::scalar, "protocol");
    return std::nullopt;
  }
  // Calico's Uint8OrString reads a quoted decimal 0-255 ("6") as the number; larger ones stay names.
  std::optional<std::int64_t> numeric;
  if (!node.quoted()) {
    numeric = node.as_int();
  } else if (all_digits(node.text())) {
    std::int64_t value = 0;
    for (char c : node.text()) {
      value = value * 10 + (c - '0');
      if (value > 255) break;
    }
    if (value <= 255) numeric = value;
  }
  if (numeric) {
    if (*numeric < 1 || *numeric > 255) {
      diag_.error(node.loc(), "protocol number " + node.text() + " is out of range",
                  "use 1-255 or a name: TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite");
      return std::nullopt;
    }
    return static_cast<std::uint8_t>(*numeric);
  }
  for (const auto& [name, number] : names) {
    if (node.text() == name || (ctx.v1 && lower(node.text()) == lower(name))) return number;
  }
  std::vector<std::string_view> known;
  for (const auto& entry : names) known.push_back(entry.first);
  std::string hint = spelling_hint(node.text(), known);
  if (hint.empty()) hint = "use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite (exact case) or a number 1-255";
  diag_.error(node.loc(), "unknown protocol '" + node.text() + "'", hint);
  return std::nullopt;
}

void Reader::read_ports(const yaml::Node& node, std::vector<PortSpec>& ports) {
  if (node.is_null() || !expect(node, yaml::Kind::sequence, "ports")) return;
  for (const yaml::Node& item : node.items()) {
    if (!item.is_scalar()) {
      expect(item, yaml::Kind::scalar, "a port");
      continue;
    }
    PortSpec port;
    port.loc = item.loc();
    const std::string& text = item.text();
    auto bad = [&](const std::string& message, const std::string& hint) {
      diag_.error(item.loc(), message, hint);
    };
    const std::size_t colon = text.find(':');
    if (colon != std::string::npos) {
      auto lo = to_number(text.substr(0, colon));
      auto hi = to_number(text.substr(colon + 1));
      if (!lo || !hi || *lo > 65535 || *hi > 65535) {
        bad("invalid port range '" + text + "'", "write a range as \"min:max\" with numbers 1-65535");
        continue;
      }
      if (*lo > *hi) {
        bad("port range '" + text + "' has min > max", "write the smaller port first");
        continue;
      }
      if (*lo == 0) {
        bad("port 0 is not allowed", "ports start at 1");
        continue;
      }
      port.range = {static_cast<std::uint16_t>(*lo), static_cast<std::uint16_t>(*hi)};
    } else if (auto number = to_number(text)) {
      if (*number < 1 || *number > 65535) {
        bad("port " + text + " is out of range", "use a port 1-65535");
        continue;
      }
      port.range = {static_cast<std::uint16_t>(*number), static_cast<std::uint16_t>(*number)};
    } else {
      if (!is_port_name(text)) {
        bad("invalid named port '" + text + "'",
            "a named port is 1-15 of a-z, 0-9 and '-', with at least one letter; ranges are \"min:max\"");
        continue;
      }
      port.name = text;
    }
    ports.push_back(std::move(port));
  }
}

std::optional<IcmpSpec> Reader::read_icmp(const yaml::Node& node) {
  if (!expect(node, yaml::Kind::mapping, "icmp")) return std::nullopt;
  check_fields(node, kIcmpFields, "icmp");
  IcmpSpec icmp;
  icmp.loc = node.loc();
  bool ok = true;
  if (const yaml::Node* type = node.find("type")) {
    auto value = type->as_int();
    if (!value || *value < 0 || *value > 254) {
      diag_.error(type->loc(), "ICMP type must be 0-254", "write e.g. type: 8 (echo request)");
      ok = false;
    } else {
      icmp.type = static_cast<std::uint8_t>(*value);
    }
  }
  if (const yaml::Node* code = node.find("code")) {
    auto value = code->as_int();
    if (!value || *value < 0 || *value > 255) {
      diag_.error(code->loc(), "ICMP code must be 0-255", "write e.g. code: 0");
      ok = false;
    } else {
      icmp.code = static_cast<std::uint8_t>(*value);
    }
    if (!node.find("type")) {
      diag_.error(code->loc(), "ICMP code without type", "add the ICMP type the code belongs to");
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return icmp;
}

// ---- GlobalNetworkPolicy ---------------------------------------------------------------------------

void Reader::read_entity(const yaml::Node& node, EntitySpec& entity) {
  if (!expect(node, yaml::Kind::mapping, "source/destination")) return;
  check_fields(node, kEntityFields, "a rule's source/destination");
  auto read_nets = [&](const char* field, std::vector<ir::Cidr>& out) {
    const yaml::Node* nets = node.find(field);
    if (!nets || nets->is_null() || !expect(*nets, yaml::Kind::sequence, field)) return;
    for (const yaml::Node& item : nets->items()) {
      auto text = string_of(item, std::string("a ") + field + " entry");
      if (!text) continue;
      if (text->find('/') == std::string::npos) {
        if (ir::parse_ip(*text)) {
          diag_.error(item.loc(), "invalid CIDR '" + *text + "': a bare address is not a network",
                      "write " + *text + (text->find(':') == std::string::npos ? "/32" : "/128"));
        } else {
          diag_.error(item.loc(), "invalid CIDR '" + *text + "'", "write a network as address/prefix");
        }
        continue;
      }
      auto cidr = ir::parse_cidr(*text, true);
      if (!cidr) {
        if (auto loose = ir::parse_cidr(*text, false)) {
          diag_.error(item.loc(), "CIDR '" + *text + "' has host bits set",
                      "write the network address: " + ir::to_string(*loose));
        } else {
          diag_.error(item.loc(), "invalid CIDR '" + *text + "'", "write a network as address/prefix");
        }
        continue;
      }
      out.push_back(*cidr);
    }
  };
  read_nets("nets", entity.nets);
  read_nets("notNets", entity.not_nets);
  for (const ir::Cidr& cidr : entity.not_nets) {
    if (is_catch_all(cidr)) {
      diag_.error(node.find("notNets")->loc(),
                  "notNets contains " + ir::to_string(cidr) + ", which excludes everything",
                  "remove the rule, or use nets for what it should match");
    }
  }
  auto read_sel = [&](const char* field, SideSelector& out) {
    const yaml::Node* sel = node.find(field);
    if (!sel || sel->is_null()) return;
    out = read_selector(*sel, field);
  };
  read_sel("selector", entity.selector);
  read_sel("notSelector", entity.not_selector);
  read_sel("namespaceSelector", entity.namespace_selector);
  for (const auto* field : {&entity.selector, &entity.not_selector}) {
    if (*field && (*field)->selector.uses_global()) {
      diag_.error((*field)->loc, "global() is only allowed in a rule's namespaceSelector",
                  "remove global() from the selector");
    }
  }
  if (entity.namespace_selector && entity.namespace_selector->selector.uses_global() &&
      entity.namespace_selector->selector.root().op != Selector::Op::global) {
    diag_.error(entity.namespace_selector->loc, "global() cannot be combined with other expressions",
                "write namespaceSelector: global() on its own");
  }
  if (const yaml::Node* ports = node.find("ports")) read_ports(*ports, entity.ports);
  if (const yaml::Node* ports = node.find("notPorts")) read_ports(*ports, entity.not_ports);
  if (const yaml::Node* sa = node.find("serviceAccounts"); sa && !sa->is_null()) {
    if (expect(*sa, yaml::Kind::mapping, "serviceAccounts")) {
      check_fields(*sa, kServiceAccountFields, "serviceAccounts");
      // An empty selector or names list is no constraint (Calico's parseServiceAccounts).
      if (const yaml::Node* sel = sa->find("selector");
          sel && !sel->is_null() && !(sel->is_scalar() && sel->text().empty())) {
        entity.service_account_selector = read_selector(*sel, "serviceAccounts.selector");
        if (entity.service_account_selector && entity.service_account_selector->selector.uses_global()) {
          diag_.error(entity.service_account_selector->loc, "global() is not allowed in serviceAccounts",
                      "remove global()");
        }
      }
      if (const yaml::Node* names = sa->find("names"); names && !names->is_null()) {
        if (expect(*names, yaml::Kind::sequence, "serviceAccounts.names")) {
          for (const yaml::Node& item : names->items()) {
            if (auto text = string_of(item, "a service account name")) {
              entity.service_account_names.push_back(*text);
            }
          }
        }
      }
      if (!entity.has_service_account_constraint()) {
        diag_.note(sa->loc(), "serviceAccounts without names or selector places no constraint, as in Calico",
                   "remove it, or list names or a selector");
      } else {
        diag_.warning(
            sa->loc(),
            "serviceAccounts match service-account labels (pcsa.*, projectcalico.org/serviceaccount), "
            "which only pods carry unless a HostEndpoint or GlobalNetworkSet is labelled so",
            "match host or network-set addresses with nets or a selector");
      }
    }
  }
  if (const yaml::Node* services = node.find("services"); services && !services->is_null()) {
    if (expect(*services, yaml::Kind::mapping, "services"))
      check_fields(*services, kServiceFields, "services");
    diag_.error(services->loc(),
                "services matches select Kubernetes Service endpoints, which a host does not have",
                "match the service's addresses with nets instead");
  }
}

std::optional<RuleSpec> Reader::read_rule(const yaml::Node& node, Direction direction, const Context& ctx) {
  if (!expect(node, yaml::Kind::mapping, "a rule")) return std::nullopt;
  check_fields(node, kRuleFields, "a rule");
  RuleSpec rule;
  rule.loc = node.loc();
  const std::size_t errors_before = diag_.error_count();
  const yaml::Node* action = node.find("action");
  static const std::vector<std::string_view> actions = {"Allow", "Deny", "Log", "Pass"};
  if (!action) {
    diag_.error(node.loc(), "rule without action", "add action: Allow (or Deny, Log, Pass)");
  } else {
    std::string text = action->text();
    if (ctx.v1 && !text.empty()) {
      text = lower(text);
      text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
    }
    if (text == "Allow") {
      rule.action = RuleAction::allow;
    } else if (text == "Deny") {
      rule.action = RuleAction::deny;
    } else if (text == "Log") {
      rule.action = RuleAction::log;
    } else if (text == "Pass") {
      rule.action = RuleAction::pass;
    } else {
      std::string hint = spelling_hint(action->text(), actions);
      if (hint.empty()) hint = "use Allow, Deny, Log or Pass (exact case)";
      diag_.error(action->loc(), "unknown action '" + action->text() + "'", hint);
    }
  }
  if (const yaml::Node* version = node.find("ipVersion")) {
    auto value = version->as_int();
    if (!value || (*value != 4 && *value != 6)) {
      diag_.error(version->loc(), "ipVersion must be 4 or 6",
                  "write ipVersion: 4 or ipVersion: 6, or leave it out");
    } else {
      rule.ip_version = static_cast<int>(*value);
    }
  }
  if (const yaml::Node* protocol = node.find("protocol")) rule.protocol = read_protocol(*protocol, ctx);
  if (const yaml::Node* protocol = node.find("notProtocol"))
    rule.not_protocol = read_protocol(*protocol, ctx);
  if (const yaml::Node* icmp = node.find("icmp")) rule.icmp = read_icmp(*icmp);
  if (const yaml::Node* icmp = node.find("notICMP")) rule.not_icmp = read_icmp(*icmp);
  if (const yaml::Node* source = node.find("source"); source && !source->is_null()) {
    read_entity(*source, rule.source);
  }
  if (const yaml::Node* destination = node.find("destination"); destination && !destination->is_null()) {
    read_entity(*destination, rule.destination);
  }
  if (const yaml::Node* http = node.find("http"); http && !http->is_null()) {
    if (expect(*http, yaml::Kind::mapping, "http")) check_fields(*http, kHttpFields, "http");
    if (direction == Direction::egress) {
      diag_.error(http->loc(), "http matches are not allowed in egress rules",
                  "remove http from the egress rule");
    } else if (rule.action != RuleAction::allow) {
      diag_.error(http->loc(), "http matches are only allowed on Allow rules",
                  "remove http or use action: Allow");
    } else if (rule.protocol && *rule.protocol != 6) {
      diag_.error(http->loc(), "http matches need protocol TCP", "set protocol: TCP or remove http");
    } else {
      diag_.warning(http->loc(),
                    "http match ignored: Felix's iptables dataplane matches this rule on L3/L4 only",
                    "remove http to say what is enforced");
    }
  }
  if (const yaml::Node* meta = node.find("metadata"); meta && !meta->is_null()) {
    if (expect(*meta, yaml::Kind::mapping, "rule metadata"))
      check_fields(*meta, kRuleMetadataFields, "rule metadata");
  }
  if (diag_.error_count() != errors_before) return std::nullopt;
  validate_rule(rule, node);
  if (diag_.error_count() != errors_before) return std::nullopt;
  return rule;
}

void Reader::validate_rule(const RuleSpec& rule, const yaml::Node& node) {
  auto loc_of = [&](const char* field) {
    const yaml::Node* n = node.find(field);
    return n ? n->loc() : node.loc();
  };
  // §1.7 #12, #13: ports need a port-capable protocol.
  auto numeric = [](const std::vector<PortSpec>& ports) {
    return std::any_of(ports.begin(), ports.end(), [](const PortSpec& p) { return !p.name; });
  };
  const bool has_numeric = numeric(rule.source.ports) || numeric(rule.source.not_ports) ||
                           numeric(rule.destination.ports) || numeric(rule.destination.not_ports);
  const bool has_any_port = has_numeric || !rule.source.ports.empty() || !rule.source.not_ports.empty() ||
                            !rule.destination.ports.empty() || !rule.destination.not_ports.empty();
  if (!rule.protocol && has_numeric) {
    diag_.error(node.loc(), "rules with numeric port or port range must set protocol to TCP or UDP or SCTP",
                "add protocol: TCP (or UDP, SCTP) to the rule");
  }
  if (rule.protocol && !supports_ports(*rule.protocol) && has_any_port) {
    diag_.error(loc_of("protocol"), "protocol " + ir::protocol_name(*rule.protocol) + " has no ports",
                "use TCP, UDP or SCTP, or remove ports/notPorts");
  }
  // #14: icmp needs protocol ICMP/ICMPv6; #15: ICMP families.
  if (rule.icmp && (!rule.protocol || (*rule.protocol != 1 && *rule.protocol != 58))) {
    diag_.error(loc_of("icmp"), "icmp is only allowed with protocol ICMP or ICMPv6",
                "add protocol: ICMP (or ICMPv6) to the rule");
  }
  for (const auto& [field, protocol] :
       {std::pair{"protocol", rule.protocol}, std::pair{"notProtocol", rule.not_protocol}}) {
    if (!protocol || !rule.ip_version) continue;
    if (*protocol == 1 && *rule.ip_version != 4) {
      diag_.error(loc_of(field), "protocol ICMP requires ipVersion 4", "set ipVersion: 4 or use ICMPv6");
    }
    if (*protocol == 58 && *rule.ip_version != 6) {
      diag_.error(loc_of(field), "protocol ICMPv6 requires ipVersion 6", "set ipVersion: 6 or use ICMP");
    }
  }
  // Beyond Calico's checks: what fwengine cannot express yet.
  // #18: one family across nets and notNets, and the same as ipVersion.
  std::optional<ir::Family> family;
  bool mixed = false;
  for (const auto* list :
       {&rule.source.nets, &rule.source.not_nets, &rule.destination.nets, &rule.destination.not_nets}) {
    for (const ir::Cidr& cidr : *list) {
      if (family && *family != cidr.addr.family) mixed = true;
      family = cidr.addr.family;
    }
  }
  if (mixed) {
    diag_.error(node.loc(), "rule mixes IPv4 and IPv6 networks",
                "split it into one rule for IPv4 and one for IPv6");
  } else if (family && rule.ip_version && (*rule.ip_version == 4) != (*family == ir::Family::ipv4)) {
    diag_.error(loc_of("ipVersion"), "rule networks are not of ipVersion " + std::to_string(*rule.ip_version),
                "remove ipVersion or use networks of that family");
  }
}

void Reader::read_policy(const yaml::Node* spec, Meta meta, const Context& ctx) {
  Policy policy;
  policy.loc = meta.loc;
  policy.selector.loc = meta.loc;
  if (spec) check_fields(*spec, kPolicyFields, "GlobalNetworkPolicy spec");
  const std::size_t errors_before = diag_.error_count();
  if (spec) {
    if (const yaml::Node* tier = spec->find("tier")) {
      if (auto text = string_of(*tier, "spec.tier"); text && !text->empty()) policy.tier = *text;
    }
  }
  // v1 objects stored by calicoctl <= 3.29 carry the tier prefix in the name; Calico strips it only when
  // its annotation is there without a name (RES determinePolicyName): a v1 object written by hand keeps it.
  if (ctx.v1 && meta.calico_annotation && !meta.name_from_annotation && policy.tier == "default" &&
      meta.name.starts_with("default.")) {
    meta.name = meta.name.substr(8);
  }
  policy.name = meta.name;
  if (!is_policy_name(policy.name)) {
    diag_.error(meta.name_loc, "invalid GlobalNetworkPolicy name '" + policy.name + "'",
                "use lower-case letters, digits and '-' (optionally '<tier>.' in front), <=253 characters");
  }
  if (!spec) {
    diag_.warning(
        meta.loc,
        "GlobalNetworkPolicy '" + policy.name + "' has no spec; it selects all endpoints with no rules",
        "add a spec");
  }
  std::vector<std::pair<Direction, bool>> types;  // as written
  bool types_written = false;
  const yaml::Node* types_node = spec ? spec->find("types") : nullptr;
  if (spec) {
    if (const yaml::Node* order = spec->find("order"); order && !order->is_null()) {
      auto value = order->quoted() ? std::nullopt : order->as_double();
      if (!value || !std::isfinite(*value)) {
        diag_.error(order->loc(), "order must be a number", "write order: 100 (unquoted)");
      } else {
        policy.order = value;
      }
    }
    if (const yaml::Node* selector = spec->find("selector"); selector && !selector->is_null()) {
      if (auto field = read_selector(*selector, "selector")) {
        if (field->selector.uses_global()) {
          diag_.error(field->loc, "global() is not allowed in a policy selector",
                      "remove global(); an empty selector selects all endpoints");
        }
        policy.selector = std::move(*field);
      }
    }
    for (const char* field : {"namespaceSelector", "serviceAccountSelector"}) {
      const yaml::Node* node = spec->find(field);
      if (!node || node->is_null()) continue;
      auto sel = read_selector(*node, field);
      if (!sel) continue;
      if (sel->selector.uses_global()) {
        diag_.error(sel->loc, std::string("global() is not allowed in ") + field, "remove global()");
      }
      (std::string_view(field) == "namespaceSelector" ? policy.namespace_selector
                                                      : policy.service_account_selector) = std::move(*sel);
    }
    for (const auto& [field, target] :
         {std::pair{"doNotTrack", &policy.do_not_track}, std::pair{"preDNAT", &policy.pre_dnat},
          std::pair{"applyOnForward", &policy.apply_on_forward}}) {
      if (const yaml::Node* node = spec->find(field); node && !node->is_null()) {
        if (auto value = bool_of(*node, field)) *target = *value;
      }
    }
    if (types_node && !types_node->is_null() && expect(*types_node, yaml::Kind::sequence, "spec.types")) {
      types_written = types_node->size() > 0;
      static const std::vector<std::string_view> names = {"Ingress", "Egress"};
      for (const yaml::Node& item : types_node->items()) {
        const std::string text = ctx.v1 ? lower(item.text()) : item.text();
        std::optional<Direction> direction;
        if (text == (ctx.v1 ? "ingress" : "Ingress")) direction = Direction::ingress;
        if (text == (ctx.v1 ? "egress" : "Egress")) direction = Direction::egress;
        if (!item.is_scalar() || !direction) {
          std::string hint = spelling_hint(item.text(), names);
          if (hint.empty()) hint = "use Ingress or Egress (exact case)";
          diag_.error(item.loc(), "unknown policy type '" + item.text() + "'", hint);
          continue;
        }
        bool& flag = *direction == Direction::ingress ? policy.applies_ingress : policy.applies_egress;
        if (flag) {
          diag_.error(item.loc(), "duplicate policy type '" + item.text() + "'", "list each type once");
        }
        flag = true;
      }
    }
    for (auto [field, direction, rules] : {std::tuple{"ingress", Direction::ingress, &policy.ingress},
                                           std::tuple{"egress", Direction::egress, &policy.egress}}) {
      const yaml::Node* list = spec->find(field);
      if (!list || list->is_null() || !expect(*list, yaml::Kind::sequence, field)) continue;
      for (const yaml::Node& item : list->items()) {
        if (auto rule = read_rule(item, direction, ctx)) rules->push_back(std::move(*rule));
      }
    }
  }
  // Types defaulting (spec §1.3): v3 as the API server does; raw v1 as Felix reads it.
  if (!types_written) {
    const bool has_egress_rules = spec && spec->find("egress") && spec->find("egress")->size() > 0;
    const bool has_ingress_rules = spec && spec->find("ingress") && spec->find("ingress")->size() > 0;
    if (ctx.v1 && !policy.pre_dnat) {
      policy.applies_ingress = policy.applies_egress = true;
      diag_.warning(
          types_node ? types_node->loc() : meta.loc,
          "GlobalNetworkPolicy '" + policy.name +
              "' has no types: Felix applies a raw crd.projectcalico.org/v1 policy to Ingress and Egress",
          "write types explicitly (Calico's API would have defaulted them from the rules)");
    } else {
      policy.applies_egress = has_egress_rules && !policy.pre_dnat;
      policy.applies_ingress = !has_egress_rules || has_ingress_rules || policy.pre_dnat;
    }
  }
  // §1.7 #1-#4.
  auto loc_of = [&](const char* field) {
    const yaml::Node* n = spec ? spec->find(field) : nullptr;
    return n ? n->loc() : meta.loc;
  };
  if (policy.do_not_track && policy.pre_dnat) {
    diag_.error(loc_of("preDNAT"), "PreDNAT and DoNotTrack cannot both be true",
                "choose one: preDNAT (before DNAT, tracked) or doNotTrack (untracked)");
  }
  if (policy.pre_dnat && !policy.egress.empty()) {
    diag_.error(loc_of("egress"), "preDNAT policy cannot have egress rules",
                "move the egress rules into a policy without preDNAT");
  }
  if (policy.pre_dnat && types_written && policy.applies_egress) {
    diag_.error(loc_of("types"), "preDNAT policy cannot have Egress in types", "write types: [Ingress]");
  }
  if ((policy.do_not_track || policy.pre_dnat) && !policy.apply_on_forward) {
    diag_.error(
        loc_of(policy.pre_dnat ? "preDNAT" : "doNotTrack"),
        std::string(policy.pre_dnat ? "preDNAT" : "doNotTrack") + " policy needs applyOnForward: true",
        "add applyOnForward: true to the policy");
  }
  if (diag_.error_count() != errors_before) return;
  model_.policies.push_back(std::move(policy));
}

// ---- GlobalNetworkSet, Tier ------------------------------------------------------------------------

void Reader::read_network_set(const yaml::Node* spec, const Meta& meta) {
  NetworkSet set;
  set.name = meta.name;
  set.loc = meta.loc;
  set.labels = meta.labels;
  if (!is_dns_subdomain(set.name)) {
    diag_.error(meta.name_loc, "invalid GlobalNetworkSet name '" + set.name + "'",
                "use lower-case letters, digits, '-' and '.'");
  }
  if (set.labels.contains("projectcalico.org/namespace")) {
    diag_.error(meta.loc, "GlobalNetworkSet must not have the label projectcalico.org/namespace",
                "remove that label: it is reserved for namespaced resources");
  }
  if (spec) {
    check_fields(*spec, kNetworkSetFields, "GlobalNetworkSet spec");
    if (const yaml::Node* nets = spec->find("nets"); nets && !nets->is_null()) {
      if (expect(*nets, yaml::Kind::sequence, "spec.nets")) {
        for (const yaml::Node& item : nets->items()) {
          auto text = string_of(item, "a nets entry");
          if (!text) continue;
          // Network sets are non-strict: host bits are cleared (spec §1.4).
          auto cidr = ir::parse_cidr(*text, false);
          if (!cidr) {
            diag_.error(item.loc(), "invalid network '" + *text + "'", "write an address or address/prefix");
            continue;
          }
          set.nets.push_back(*cidr);
        }
      }
    }
  }
  model_.network_sets.push_back(std::move(set));
}

void Reader::read_tier(const yaml::Node* spec, const Meta& meta, const Context& ctx) {
  Tier tier;
  tier.name = meta.name;
  tier.loc = meta.loc;
  if (!is_dns_label(tier.name)) {
    diag_.error(meta.name_loc, "invalid Tier name '" + tier.name + "'",
                "use lower-case letters, digits and '-' (<=63 characters)");
  }
  const StaticTier* fixed = nullptr;
  for (const StaticTier& candidate : kStaticTiers) {
    if (candidate.name == tier.name) fixed = &candidate;
  }
  const yaml::Node* order = spec ? spec->find("order") : nullptr;
  const yaml::Node* action = spec ? spec->find("defaultAction") : nullptr;
  if (order && order->is_null()) order = nullptr;
  if (action && action->is_null()) action = nullptr;
  bool action_known = true;
  if (spec) {
    check_fields(*spec, kTierFields, "Tier spec");
    if (order) {
      auto value = order->quoted() ? std::nullopt : order->as_double();
      if (!value) {
        diag_.error(order->loc(), "order must be a number", "write order: 100");
      } else {
        tier.order = value;
      }
    }
    if (action) {
      const std::string text = ctx.v1 ? lower(action->text()) : action->text();
      if (text == (ctx.v1 ? "pass" : "Pass")) {
        tier.default_pass = true;
      } else if (text != (ctx.v1 ? "deny" : "Deny")) {
        diag_.error(action->loc(), "unknown Tier defaultAction '" + action->text() + "'", "use Deny or Pass");
        action_known = false;
      }
    }
  }
  if (!fixed) {
    model_.tiers.push_back(std::move(tier));
    return;
  }
  // Calico's validateTier: the order of these tiers is fixed; a missing one is 1 000 000 (DefaultTierFields).
  const std::string name(fixed->name), order_text(fixed->order_text);
  const SourceLoc spec_loc = spec ? spec->loc() : meta.name_loc;
  if (tier.order.value_or(kStaticTiers[0].order) != fixed->order) {
    if (tier.name == "default") {
      diag_.error(order->loc(), "the default Tier's order must be 1000000",
                  "remove spec.order or write order: 1000000; give other tiers a lower order to run first");
    } else {
      diag_.error(order ? order->loc() : spec_loc,
                  order ? "the " + name + " Tier's order must be " + order_text
                        : "the " + name + " Tier needs order: " + order_text,
                  "write order: " + order_text + ": " + std::string(fixed->what) +
                      ", and Calico fixes its order; give a tier of your own another name");
    }
  }
  // The Tier's CEL rules: a missing defaultAction is Deny.
  if (action_known && tier.default_pass != fixed->pass && (action || fixed->pass)) {
    if (tier.name == "default") {
      diag_.error(action->loc(), "the default Tier's defaultAction must be Deny",
                  "remove spec.defaultAction or write defaultAction: Deny");
    } else {
      diag_.error(
          action ? action->loc() : spec_loc,
          action ? "the " + name + " Tier's defaultAction must be Pass"
                 : "the " + name + " Tier needs defaultAction: Pass",
          "write defaultAction: Pass: " + std::string(fixed->what) +
              ", and it passes what its policies leave undecided to the next tier; give a tier of your "
              "own another name");
    }
  }
  model_.tiers.push_back(std::move(tier));
}

// ---- Profile ---------------------------------------------------------------------------------------

// A label mapping (metadata.labels, a Profile's labelsToApply) as Calico validates it: false on an error.
bool Reader::read_labels(const yaml::Node& labels, std::string_view field, Labels& out) {
  if (!expect(labels, yaml::Kind::mapping, field)) return false;
  bool ok = true;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const yaml::Node& key = labels.keys()[i];
    const yaml::Node& value = labels.values()[i];
    if (!is_label_key(key.text())) {
      diag_.error(key.loc(), "invalid label key '" + key.text() + "'",
                  "a label key is [prefix/]name: name <=63 letters, digits, '-', '_', '.'");
      ok = false;
    }
    auto text = string_of(value, "a label value");
    if (!text) continue;
    if (!is_label_value(*text)) {
      diag_.error(value.loc(), "invalid label value '" + *text + "'",
                  "a label value is <=63 letters, digits, '-', '_', '.', starting and ending alphanumeric");
      ok = false;
    }
    out[key.text()] = *text;
  }
  return ok;
}

void Reader::read_profile(const yaml::Node* spec, const Meta& meta, const Context& ctx) {
  Profile profile;
  profile.name = meta.name;
  profile.loc = meta.loc;
  const std::size_t errors_before = diag_.error_count();
  if (spec) {
    check_fields(*spec, kProfileFields, "Profile spec");
    for (auto [field, direction, rules] : {std::tuple{"ingress", Direction::ingress, &profile.ingress},
                                           std::tuple{"egress", Direction::egress, &profile.egress}}) {
      const yaml::Node* list = spec->find(field);
      if (!list || list->is_null() || !expect(*list, yaml::Kind::sequence, field)) continue;
      for (const yaml::Node& item : list->items()) {
        if (auto rule = read_rule(item, direction, ctx)) rules->push_back(std::move(*rule));
      }
    }
    if (const yaml::Node* labels = spec->find("labelsToApply"); labels && !labels->is_null())
      read_labels(*labels, "labelsToApply", profile.labels_to_apply);
  }
  if (diag_.error_count() != errors_before) return;
  model_.profiles.push_back(std::move(profile));
}

// ---- FelixConfiguration ----------------------------------------------------------------------------

std::string failsafe_object_form(const FailsafePort& port) {
  std::string out = "{protocol: " + std::string(port.protocol == 17 ? "UDP" : "TCP") +
                    ", port: " + std::to_string(port.port);
  if (port.net) out += ", net: " + ir::to_string(*port.net);
  return out + "}";
}

std::optional<FailsafePort> Reader::read_failsafe_string(std::string_view text, SourceLoc loc) {
  // Felix's PortListParam syntax: <port> | <proto>:<port> | <proto>:<cidr>:<port> |
  // <proto>:[<v6cidr>]:<port>.
  FailsafePort port;
  port.loc = loc;
  auto trim = [](std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
  };
  text = trim(text);
  std::string_view rest = text;
  const std::size_t first = rest.find(':');
  if (first != std::string_view::npos) {
    const std::string protocol = lower(rest.substr(0, first));
    if (protocol == "tcp") {
      port.protocol = 6;
    } else if (protocol == "udp") {
      port.protocol = 17;
    } else {
      diag_.error(loc, "failsafe entry '" + std::string(text) + "': protocol must be tcp or udp",
                  "Felix accepts only tcp and udp failsafe ports");
      return std::nullopt;
    }
    rest = rest.substr(first + 1);
    const std::size_t last = rest.rfind(':');
    if (last != std::string_view::npos) {
      std::string_view net = rest.substr(0, last);
      if (net.size() >= 2 && net.front() == '[' && net.back() == ']') net = net.substr(1, net.size() - 2);
      port.net = ir::parse_cidr(net, false);
      if (!port.net) {
        diag_.error(loc,
                    "failsafe entry '" + std::string(text) + "': invalid network '" + std::string(net) + "'",
                    "write proto:cidr:port, with IPv6 networks in brackets: tcp:[fd00::/8]:22");
        return std::nullopt;
      }
      rest = rest.substr(last + 1);
    }
  }
  auto number = to_number(rest);
  if (!number || *number > 65535) {
    diag_.error(loc, "failsafe entry '" + std::string(text) + "': invalid port", "write a port 0-65535");
    return std::nullopt;
  }
  port.port = static_cast<std::uint16_t>(*number);
  return port;
}

std::optional<std::vector<FailsafePort>> Reader::read_failsafe(const yaml::Node& node, bool inbound,
                                                               const Context& ctx) {
  const char* field = inbound ? "failsafeInboundHostPorts" : "failsafeOutboundHostPorts";
  std::vector<FailsafePort> ports;
  bool ok = true;
  std::vector<FailsafePort> from_strings;
  SourceLoc first_string_loc;
  auto read_string = [&](std::string_view text, SourceLoc loc) {
    if (from_strings.empty()) first_string_loc = loc;
    if (auto port = read_failsafe_string(text, loc)) {
      from_strings.push_back(*port);
      ports.push_back(*port);
    } else {
      ok = false;
    }
  };
  if (node.is_scalar()) {
    // Felix's environment-variable form as one string: "tcp:22,udp:68" or "none".
    if (lower(node.text()) != "none") {
      for (const std::string& entry : split_list(node.text())) read_string(entry, node.loc());
    } else {
      first_string_loc = node.loc();
      diag_.warning(node.loc(), std::string(field) + ": \"none\" is Felix's environment-variable syntax",
                    "write " + std::string(field) + ": [] to disable failsafe ports");
    }
  } else if (node.is_sequence()) {
    const bool only_none =
        node.size() == 1 && node.items()[0].is_scalar() && lower(node.items()[0].text()) == "none";
    if (only_none) {
      diag_.warning(node.items()[0].loc(),
                    std::string(field) + ": \"none\" is Felix's environment-variable syntax",
                    "write " + std::string(field) + ": [] to disable failsafe ports");
      return ports;
    }
    for (const yaml::Node& item : node.items()) {
      if (item.is_scalar()) {
        read_string(item.text(), item.loc());
        continue;
      }
      if (!expect(item, yaml::Kind::mapping, "a failsafe entry")) {
        ok = false;
        continue;
      }
      check_fields(item, kProtoPortFields, "a failsafe entry");
      FailsafePort port;
      port.loc = item.loc();
      const yaml::Node* protocol = item.find("protocol");
      const std::string text = protocol ? protocol->text() : "";
      const std::string compare = ctx.v1 ? lower(text) : text;
      if (compare == (ctx.v1 ? "tcp" : "TCP")) {
        port.protocol = 6;
      } else if (compare == (ctx.v1 ? "udp" : "UDP")) {
        port.protocol = 17;
      } else {
        ok = false;
        if (!protocol) {
          diag_.error(item.loc(), "failsafe entry without protocol", "add protocol: TCP (or UDP)");
        } else if (lower(text) == "sctp") {
          diag_.error(protocol->loc(), "failsafe protocol SCTP is refused by Felix's parser",
                      "use TCP or UDP failsafe entries only");
        } else if (lower(text) == "tcp" || lower(text) == "udp") {
          diag_.error(
              protocol->loc(),
              "failsafe protocol must be written " + std::string(lower(text) == "tcp" ? "TCP" : "UDP"),
              "Calico's validator compares the protocol case-sensitively");
        } else {
          diag_.error(protocol->loc(), "unknown failsafe protocol '" + text + "'", "use TCP or UDP");
        }
      }
      const yaml::Node* number = item.find("port");
      auto value = number ? number->as_int() : std::nullopt;
      if (!value || *value < 0 || *value > 65535) {
        diag_.error(number ? number->loc() : item.loc(), "failsafe entry needs a port 0-65535",
                    "write port: 22");
        ok = false;
      } else {
        port.port = static_cast<std::uint16_t>(*value);
      }
      // net: "" is no net (Felix's felixconfigprocessor.go writes "tcp:22"): both families.
      if (const yaml::Node* net = item.find("net"); net && !net->is_null() && !net->text().empty()) {
        if (auto cidr = ir::parse_cidr(net->text(), false)) {
          port.net = cidr;
        } else {
          diag_.error(net->loc(), "failsafe net '" + net->text() + "' is not a CIDR",
                      "write net: 10.0.0.0/8");
          ok = false;
        }
      }
      ports.push_back(port);
    }
  } else {
    expect(node, yaml::Kind::sequence, field);
    return std::nullopt;
  }
  if (!from_strings.empty()) {
    std::string objects;
    for (const FailsafePort& port : from_strings) objects += "\n  - " + failsafe_object_form(port);
    diag_.warning(first_string_loc,
                  std::string(field) +
                      " written as strings (Felix's environment-variable syntax): accepted, "
                      "but Calico's API server would refuse this FelixConfiguration",
                  "write the objects instead:" + objects);
  }
  if (!ok) return std::nullopt;
  return ports;
}

namespace {

// Go's underscoreOK: with base 0, '_' may only stand between two digits, or between a base prefix
// (0x, 0o, 0b) and a digit. text is lower-case and without its sign.
bool go_underscores_ok(std::string_view text) {
  const bool prefixed =
      text.size() >= 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'o' || text[1] == 'b');
  const bool hex = prefixed && text[1] == 'x';
  char last = prefixed ? '0' : '^';  // '0' a digit or the prefix, '_' an underscore, '!' anything else
  for (char c : text.substr(prefixed ? 2 : 0)) {
    if ((c >= '0' && c <= '9') || (hex && c >= 'a' && c <= 'f')) {
      last = '0';
    } else if (c == '_') {
      if (last != '0') return false;
      last = '_';
    } else {
      if (last == '_') return false;
      last = '!';
    }
  }
  return last != '_';
}

// An int as Felix's IntParam reads it (Go's strconv.ParseInt with base 0, lower-cased): an optional
// sign, then decimal, 0x hex, 0o or 0 octal, or 0b binary, its digits maybe separated by '_'.
std::optional<std::int64_t> go_integer(std::string_view written) {
  std::string_view text = written;
  const bool negative = !text.empty() && text.front() == '-';
  if (!text.empty() && (text.front() == '-' || text.front() == '+')) text.remove_prefix(1);
  std::string digits;
  if (text.find('_') != std::string_view::npos) {
    if (!go_underscores_ok(text)) return std::nullopt;
    std::copy_if(text.begin(), text.end(), std::back_inserter(digits), [](char c) { return c != '_'; });
    text = digits;
  }
  int base = 10;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'o' || text[1] == 'b')) {
    base = text[1] == 'x' ? 16 : text[1] == 'o' ? 8 : 2;
    text.remove_prefix(2);
  } else if (text.size() > 1 && text[0] == '0') {
    base = 8;
    text.remove_prefix(1);
  }
  std::uint64_t magnitude = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), magnitude, base);
  const std::uint64_t limit = static_cast<std::uint64_t>(INT64_MAX) + (negative ? 1 : 0);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || magnitude > limit)
    return std::nullopt;
  return negative ? static_cast<std::int64_t>(0 - magnitude) : static_cast<std::int64_t>(magnitude);
}

// Felix's values of the settings fwengine models, lower-cased; nullopt for any other value.
std::optional<bool> rejects(const std::string& action) {  // oneof(DROP,REJECT)
  if (action == "reject" || action == "drop") return action == "reject";
  return std::nullopt;
}
std::optional<ir::Verdict> endpoint_to_host(const std::string& action) {  // oneof(DROP,RETURN,ACCEPT)
  if (action == "drop") return ir::Verdict::drop;
  if (action == "accept") return ir::Verdict::accept;
  if (action == "return") return ir::Verdict::continue_;
  return std::nullopt;
}
std::optional<NftablesMode> nftables_mode(const std::string& mode) {  // oneof(Enabled,Disabled,Auto)
  if (mode == "enabled") return NftablesMode::enabled;
  if (mode == "disabled") return NftablesMode::disabled;
  if (mode == "auto") return NftablesMode::auto_;
  return std::nullopt;
}

}  // namespace

// How Felix reads an interfaceExclude list (RegexpPatternListParam): split at commas, untrimmed; each
// entry an interface name (^[a-zA-Z0-9_-]{1,15}$) or a /regular expression/ without white space. Felix
// replaces a list it cannot read with its default, kube-ipvs0 (not die-on-fail). A pattern Felix
// takes but std::regex does not is an error: fwengine could not match it.
void Reader::check_interface_exclude(std::optional<std::string>& list, SourceLoc loc) {
  static const std::regex kName("^[a-zA-Z0-9_-]{1,15}$"), kPattern("^/[^\\s]+/$");
  std::size_t start = 0;
  while (start <= list->size()) {
    std::size_t comma = list->find(',', start);
    if (comma == std::string::npos) comma = list->size();
    const std::string entry = list->substr(start, comma - start);
    start = comma + 1;
    if (std::regex_match(entry, kName)) continue;
    if (!std::regex_match(entry, kPattern)) {
      diag_.warning(loc,
                    "interfaceExclude: '" + entry +
                        "' is neither an interface name nor a /regular expression/, so Felix takes its "
                        "default, kube-ipvs0, instead of the list",
                    "separate names and /patterns/ by commas alone");
      list = "kube-ipvs0";
      return;
    }
    try {
      std::regex check(entry.substr(1, entry.size() - 2));
    } catch (const std::regex_error&) {
      diag_.error(loc,
                  "interfaceExclude: the regular expression " + entry +
                      " does not compile (Felix takes its default, kube-ipvs0, where Go's regexp cannot "
                      "compile it either)",
                  "fix the expression between the slashes, in syntax both Go and ECMAScript read");
    }
  }
}

// Felix reads InterfacePrefix as an `iface-list` (config_params.go IfaceListRegexp): names of 1 to 15
// of [a-zA-Z0-9_-], separated by commas alone. It refuses to start on anything else (die-on-fail).
void Reader::check_interface_prefix(const std::string& list, SourceLoc loc) {
  static const std::regex kList("^[a-zA-Z0-9_-]{1,15}(,[a-zA-Z0-9_-]{1,15})*$");
  if (lower(list) == "none") {  // the zero value, which this non-zero setting may not take
    diag_.error(loc, "interfacePrefix none: Felix refuses to start on it", "write the prefixes (cali,tap)");
    return;
  }
  if (std::regex_match(list, kList)) return;
  diag_.error(loc,
              "interfacePrefix '" + list + "' is not a list of interface name prefixes, which Felix refuses",
              "write prefixes of 1 to 15 letters, digits, '_' or '-', separated by commas alone (cali,tap)");
}

void Reader::read_felix_config(const yaml::Node* spec, const Meta& meta, const Context& ctx) {
  FelixConfig config;
  config.name = meta.name;
  config.loc = meta.loc;
  config.created = meta.created;
  // Felix takes a config that is neither global nor per-node for the nodes its nodeSelector selects
  // (Calico 3.32); without one (or with ""), for none. The API server refuses one on the other two.
  const bool node_scoped = config.name == "default" || config.name.starts_with("node.");
  const yaml::Node* selector = spec ? spec->find("nodeSelector") : nullptr;
  if (selector && (selector->is_null() || (selector->is_scalar() && selector->text().empty())))
    selector = nullptr;
  if (node_scoped && selector) {
    diag_.warning(selector->loc(),
                  "nodeSelector on FelixConfiguration '" + config.name +
                      "': Calico's API server refuses it here and Felix ignores it",
                  config.name == "default" ? "remove it: 'default' applies to every node"
                                           : "remove it: '" + config.name + "' applies to its node alone");
  } else if (!node_scoped && !selector) {
    diag_.note(meta.name_loc,
               "FelixConfiguration '" + config.name +
                   "' has no nodeSelector and is neither 'default' nor 'node.<name>': it applies to no node",
               "add spec.nodeSelector for the nodes it is for, or name it default (every node) or node.<node "
               "name> (one node)");
  } else if (selector) {
    config.node_selector = read_selector(*selector, "nodeSelector");
    const auto characters = [](std::string_view text) {  // UTF-8: every byte but continuation bytes
      return std::count_if(text.begin(), text.end(), [](char c) { return (c & 0xC0) != 0x80; });
    };
    if (config.node_selector && characters(config.node_selector->text) > kMaxNodeSelector)
      diag_.error(selector->loc(), "nodeSelector is longer than Calico's CRD takes (1,024 characters)",
                  "shorten the selector");
    static const std::regex kKubernetesTime(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)");
    if (!config.created.empty() && !std::regex_match(config.created, kKubernetesTime))
      diag_.warning(meta.loc,
                    "FelixConfiguration '" + config.name + "': creationTimestamp '" + config.created +
                        "' is not a time as Kubernetes writes it (2026-01-02T03:04:05Z): configs that select "
                        "one node are ranked by its text",
                    "write it in UTC, to the second, ending in Z");
  }
  if (spec) {
    check_fields(*spec, kFelixFields, "FelixConfiguration spec");
    if (const yaml::Node* node = spec->find("failsafeInboundHostPorts"); node && !node->is_null()) {
      config.failsafe_inbound = read_failsafe(*node, true, ctx);
    }
    if (const yaml::Node* node = spec->find("failsafeOutboundHostPorts"); node && !node->is_null()) {
      config.failsafe_outbound = read_failsafe(*node, false, ctx);
    }
    if (const yaml::Node* node = spec->find("disableConntrackInvalidCheck"); node && !node->is_null()) {
      config.disable_conntrack_invalid_check = bool_of(*node, "disableConntrackInvalidCheck");
    }
    // Calico's config processor sends an empty string field as unset: Felix keeps its default.
    auto written_text = [&](const char* field) -> const yaml::Node* {
      const yaml::Node* node = spec->find(field);
      return node && node->is_scalar() && !node->text().empty() ? node : nullptr;
    };
    for (const char* field : {"iptablesFilterDenyAction", "nftablesFilterDenyAction"}) {
      if (const yaml::Node* node = written_text(field)) {
        const std::optional<bool> reject = rejects(lower(node->text()));
        if (!reject)
          diag_.error(node->loc(), std::string(field) + " must be Drop or Reject", "write Drop or Reject");
        (field[0] == 'i' ? config.deny_with_reject : config.nft_deny_with_reject) = reject;
      }
    }
    if (const yaml::Node* node = written_text("defaultEndpointToHostAction")) {
      config.endpoint_to_host = endpoint_to_host(lower(node->text()));
      if (!config.endpoint_to_host)
        diag_.error(node->loc(), "defaultEndpointToHostAction must be Drop, Accept or Return",
                    "write Drop, Accept or Return");
    }
    if (const yaml::Node* node = spec->find("nftablesMode"); node && !node->is_null()) {
      // Felix parses it case-insensitively.
      config.nftables_mode = nftables_mode(lower(node->text()));
      if (!config.nftables_mode)
        diag_.error(node->loc(), "nftablesMode must be Enabled, Disabled or Auto",
                    "write Enabled, Disabled or Auto");
    }
    if (const yaml::Node* node = spec->find("ipv6Support"); node && !node->is_null()) {
      config.ipv6_support = bool_of(*node, "ipv6Support");
    }
    for (const char* field : {"ipipEnabled", "vxlanEnabled"}) {
      const yaml::Node* node = spec->find(field);
      if (!node || node->is_null()) continue;
      if (const std::optional<bool> on = bool_of(*node, field))
        (field[0] == 'i' ? config.ipip : config.vxlan) =
            EncapsulationSetting{*on ? Encapsulation::on : Encapsulation::off, node->loc(),
                                 "FelixConfiguration '" + config.name + "': " + field + ": " + node->text()};
    }
    if (const yaml::Node* node = spec->find("vxlanPort"); node && !node->is_null()) {
      config.vxlan_port = node->as_int();
      if (!config.vxlan_port)
        diag_.error(node->loc(), "vxlanPort must be an integer, not " + node->describe(),
                    "write the UDP port of VXLAN packets, such as 4789 (unquoted)");
    }
    for (const char* field : {"wireguardEnabled", "wireguardEnabledV6"}) {
      if (const yaml::Node* node = spec->find(field); node && !node->is_null())
        (std::string_view(field).ends_with("V6") ? config.wireguard_v6 : config.wireguard) =
            bool_of(*node, field);
    }
    for (const char* field : {"wireguardListeningPort", "wireguardListeningPortV6"}) {
      const yaml::Node* node = spec->find(field);
      if (!node || node->is_null()) continue;
      auto& port = std::string_view(field).ends_with("V6") ? config.wireguard_port_v6 : config.wireguard_port;
      port = node->as_int();
      if (!port)
        diag_.error(node->loc(), std::string(field) + " must be an integer, not " + node->describe(),
                    "write the UDP port WireGuard listens on, such as 51820 (unquoted)");
    }
    for (const char* field : {"iptablesFilterAllowAction", "iptablesMangleAllowAction",
                              "nftablesFilterAllowAction", "nftablesMangleAllowAction"}) {
      if (const yaml::Node* node = spec->find(field); node && lower(node->text()) == "return") {
        diag_.warning(node->loc(),
                      std::string(field) + ": Return is not modelled; allowed packets are accepted",
                      "remove the setting, or keep the host's own rules permissive for these packets");
      }
    }
    if (const yaml::Node* node = written_text("logPrefix")) config.log_prefix = node->text();
    if (const yaml::Node* node = written_text("interfacePrefix")) {
      config.interface_prefix = node->text();
      // Felix never sees a spec value that an annotation of the exact name replaces.
      const yaml::Node* replacing =
          meta.annotations ? meta.annotations->find("config.projectcalico.org/InterfacePrefix") : nullptr;
      if (!replacing || !replacing->is_scalar()) check_interface_prefix(node->text(), node->loc());
    }
    if (const yaml::Node* node = written_text("interfaceExclude")) {
      config.interface_exclude = node->text();
      check_interface_exclude(config.interface_exclude, node->loc());
    }
  }
  if (meta.annotations) read_felix_annotations(*meta.annotations, config);
  model_.felix_configs.push_back(std::move(config));
}

// Calico's config processor sends an annotation config.projectcalico.org/<Name> in place of the spec
// field whose Felix name is <Name> exactly ("to work around any validation", configurationprocessor.go);
// under another spelling it is a key of its own, which Felix matches in any case (config_params.go
// UpdateFrom). Values are Felix's strings: "none" is a field's zero value, "" is dropped.
void Reader::read_felix_annotations(const yaml::Node& annotations, FelixConfig& config) {
  constexpr std::string_view kPrefix = "config.projectcalico.org/";
  std::vector<FelixString> strings;
  for (std::size_t i = 0; i < annotations.size(); ++i) {
    const yaml::Node& key = annotations.keys()[i];
    const yaml::Node& value = annotations.values()[i];
    if (key.text().starts_with(kPrefix) && value.is_scalar())
      strings.push_back({&key, std::string_view(key.text()).substr(kPrefix.size()), &value});
  }
  read_felix_strings(strings, false, config);
}

// Felix's settings as strings: annotations (above), or the environment variables FELIX_<NAME> of
// calico-node (each name once: read_calico_node keeps the last, as Kubernetes does), each Felix name in
// any case, an empty value dropped (config_params.go LoadConfigFromEnvironment, UpdateFrom).
void Reader::read_felix_strings(const std::vector<FelixString>& strings, bool environment,
                                FelixConfig& config) {
  const std::string what = environment ? "environment variable " : "annotation ";
  // An environment variable stands for its setting whatever its case: there is no spec beside it.
  auto exact_name = [&](std::size_t i, std::string_view name) {
    return environment || strings[i].name == name;
  };
  // Each string of a modelled setting: its index and the setting's Felix name.
  std::vector<std::pair<std::size_t, std::string_view>> found;
  std::set<std::string_view> replaced;  // settings whose spec value an exact-name annotation replaces
  for (std::size_t i = 0; i < strings.size(); ++i) {
    const std::string written = lower(strings[i].name);
    for (std::string_view name : kFelixStringNames) {
      if (written != lower(name)) continue;
      found.emplace_back(i, name);
      if (exact_name(i, name)) replaced.insert(name);
    }
  }
  // Exact names first: they take the spec's place, and another spelling then competes with them only.
  std::stable_partition(found.begin(), found.end(),
                        [&](const auto& entry) { return exact_name(entry.first, entry.second); });
  const FelixConfig from_spec = config;
  std::set<std::string_view> decided;  // the settings a string's value decided
  for (const auto& entry : found) {
    const std::size_t i = entry.first;  // named, not bound: lambdas capture them below
    const std::string_view exact = entry.second;
    const bool exactly = exact_name(i, exact);
    const yaml::Node& key = *strings[i].key;
    const yaml::Node& written_value = *strings[i].value;
    const std::string value = lower(written_value.text());
    const SourceLoc loc = written_value.loc();
    // Whether this annotation decides the setting. An empty value is dropped by Felix: under the exact
    // name it leaves the setting to the default (for node.<name> or a selector-scoped config, to the
    // configs under it), under another it is nothing.
    auto decides = [&](bool in_spec) {
      if (value.empty()) return exactly;
      const bool spec_too = !exactly && in_spec && !replaced.contains(exact);
      if (spec_too || !decided.insert(exact).second) {
        diag_.error(
            key.loc(),
            what + key.text() + " sets " + std::string(exact) + ", which " +
                (spec_too ? "the spec sets too, under a name that differs in case"
                          : "another " + what + "sets too") +
                ": Felix takes either value",
            "set " + std::string(exact) + " once" +
                (environment ? std::string() : ", as config.projectcalico.org/" + std::string(exact)));
        return false;
      }
      return true;
    };
    // Felix refuses to start on a bad value of a die-on-fail setting (config_params.go metadata)...
    auto invalid = [&](const std::string& expected) {
      diag_.error(loc, what + key.text() + ": invalid value '" + written_value.text() + "'",
                  "write " + expected);
    };
    // ... and takes its default instead of a bad value of any other.
    auto fallback = [&](const std::string& expected) {
      diag_.warning(loc,
                    what + key.text() + ": invalid value '" + written_value.text() +
                        "', which Felix replaces with its default",
                    "write " + expected);
    };
    auto written_bool = [&]() -> std::optional<bool> {  // what Felix's BoolParam and BoolPtrParam take
      if (value == "true" || value == "1" || value == "yes" || value == "y" || value == "t") return true;
      if (value == "false" || value == "0" || value == "no" || value == "n" || value == "f") return false;
      return std::nullopt;
    };
    auto boolean = [&](bool default_value) -> std::optional<bool> {  // Felix's BoolParam
      if (value.empty()) return std::nullopt;
      if (value == "none") return false;
      if (auto written = written_bool()) return written;
      fallback("true or false");
      return default_value;
    };
    if (exact == "FailsafeInboundHostPorts" || exact == "FailsafeOutboundHostPorts") {
      const bool inbound = exact == "FailsafeInboundHostPorts";
      auto& field = inbound ? config.failsafe_inbound : config.failsafe_outbound;
      if (!decides((inbound ? from_spec.failsafe_inbound : from_spec.failsafe_outbound).has_value()))
        continue;
      std::vector<FailsafePort> ports;
      bool ok = true;
      if (value != "none") {
        for (const std::string& entry : split_list(written_value.text())) {
          if (auto port = read_failsafe_string(entry, loc)) {
            ports.push_back(*port);
          } else {
            ok = false;
          }
        }
      }
      field = value.empty() || !ok ? std::nullopt : std::optional(ports);
    } else if (exact == "Ipv6Support") {
      if (decides(from_spec.ipv6_support.has_value())) config.ipv6_support = boolean(true);
    } else if (exact == "DisableConntrackInvalidCheck") {
      if (decides(from_spec.disable_conntrack_invalid_check.has_value()))
        config.disable_conntrack_invalid_check = boolean(false);
    } else if (exact == "IptablesFilterDenyAction" || exact == "NftablesFilterDenyAction") {
      const bool iptables = exact == "IptablesFilterDenyAction";
      auto& field = iptables ? config.deny_with_reject : config.nft_deny_with_reject;
      if (!decides((iptables ? from_spec.deny_with_reject : from_spec.nft_deny_with_reject).has_value()))
        continue;
      field = rejects(value);
      if (!value.empty() && !field) invalid("DROP or REJECT");  // "none" too: Felix dies on it
    } else if (exact == "DefaultEndpointToHostAction") {
      if (!decides(from_spec.endpoint_to_host.has_value())) continue;
      config.endpoint_to_host = endpoint_to_host(value);
      if (!value.empty() && !config.endpoint_to_host) invalid("DROP, ACCEPT or RETURN");
    } else if (exact == "NFTablesMode") {
      if (!decides(from_spec.nftables_mode.has_value())) continue;
      // "none" is the zero value "", which Felix renders for iptables.
      config.nftables_mode = value == "none" ? NftablesMode::disabled : nftables_mode(value);
      if (!value.empty() && !config.nftables_mode) {
        fallback("Enabled, Disabled or Auto");
        config.nftables_mode = NftablesMode::auto_;
      }
    } else if (exact == "IpInIpEnabled" || exact == "VXLANEnabled") {
      const bool ipip = exact == "IpInIpEnabled";
      auto& field = ipip ? config.ipip : config.vxlan;
      if (!decides((ipip ? from_spec.ipip : from_spec.vxlan).has_value())) continue;
      if (value.empty()) {
        field.reset();
        continue;
      }
      // Felix's BoolPtrParam: its zero value ("none") and its default are nil, which leaves it to the
      // pools.
      Encapsulation setting = Encapsulation::by_pools;
      if (auto written = written_bool())
        setting = *written ? Encapsulation::on : Encapsulation::off;
      else if (value != "none")
        fallback("true or false");
      field = EncapsulationSetting{setting, loc, what + key.text() + ": " + written_value.text()};
    } else if (exact == "WireguardEnabled" || exact == "WireguardEnabledV6") {
      const bool v6 = exact.ends_with("V6");
      if (decides((v6 ? from_spec.wireguard_v6 : from_spec.wireguard).has_value()))
        (v6 ? config.wireguard_v6 : config.wireguard) = boolean(false);
    } else if (exact == "WireguardListeningPort" || exact == "WireguardListeningPortV6") {
      const bool v6 = exact.ends_with("V6");
      auto& port = v6 ? config.wireguard_port_v6 : config.wireguard_port;
      if (!decides((v6 ? from_spec.wireguard_port_v6 : from_spec.wireguard_port).has_value())) continue;
      if (value.empty()) {
        port.reset();
      } else if (value == "none") {
        port = 0;  // the int's zero value
      } else if (!(port = go_integer(value))) {
        fallback("the UDP port WireGuard listens on, such as " +
                 std::to_string(v6 ? kWireguardPortV6 : kWireguardPort));
        port = v6 ? kWireguardPortV6 : kWireguardPort;
      }
    } else if (exact == "VXLANPort") {
      if (!decides(from_spec.vxlan_port.has_value())) continue;
      if (value.empty()) {
        config.vxlan_port.reset();
      } else if (value == "none") {
        config.vxlan_port = 0;  // the int's zero value
      } else {
        config.vxlan_port = go_integer(value);
        if (!config.vxlan_port) {
          fallback("the UDP port of VXLAN packets, such as 4789");
          config.vxlan_port = kVxlanPort;
        }
      }
    } else {
      auto& field = exact == "LogPrefix"         ? config.log_prefix
                    : exact == "InterfacePrefix" ? config.interface_prefix
                                                 : config.interface_exclude;
      const auto& spec_field = exact == "LogPrefix"         ? from_spec.log_prefix
                               : exact == "InterfacePrefix" ? from_spec.interface_prefix
                                                            : from_spec.interface_exclude;
      if (!decides(spec_field.has_value())) continue;
      if (value.empty()) {
        field.reset();
      } else if (value == "none" && exact == "InterfacePrefix") {
        invalid("a comma-separated list of prefixes (Felix refuses none here)");  // non-zero, die-on-fail
      } else {
        field = value == "none" ? "" : written_value.text();
        if (exact == "InterfaceExclude") check_interface_exclude(field, loc);
        if (exact == "InterfacePrefix") check_interface_prefix(*field, loc);
      }
    }
  }
}

}  // namespace fwe::calico
