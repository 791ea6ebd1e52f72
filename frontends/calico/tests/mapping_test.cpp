// mapping_test.cpp - the shape of the IR the frontend produces: actions per stage, tiers, origins,
// Felix settings, endpoint binding.
#include <catch2/catch.hpp>

#include "test_support.hpp"

namespace fwe::calico::test {
namespace {

std::string gnp(const std::string& name, const std::string& spec) {
  return "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: " + name +
         "}\nspec:\n" + spec;
}

std::string felix(const std::string& name, const std::string& spec) {
  return "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: " + name +
         "}\nspec:\n" + spec;
}

// Maps without core's passes, so the frontend's own output is what is inspected.
ir::Ruleset map_only(const std::string& text, MappingOptions options = n1_options()) {
  Diagnostics diag;
  Model model = read_yaml(text, diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  ir::Ruleset ruleset = map_to_ir(model, options, diag);
  REQUIRE_FALSE(diag.has_errors());
  return ruleset;
}

std::vector<ir::ActionKind> actions(const ir::Ruleset& rs, const std::string& chain) {
  const ir::Chain* c = rs.find_chain(chain);
  REQUIRE(c);
  std::vector<ir::ActionKind> out;
  for (const ir::Rule& rule : c->rules) out.push_back(rule.action.kind);
  return out;
}

using A = ir::ActionKind;

}  // namespace

TEST_CASE("actions per policy class", "[mapping]") {
  const std::string rules = "  ingress: [{action: Allow}, {action: Deny}, {action: Pass}, {action: Log}]\n";
  const ir::Ruleset rs =
      map_only(kH0 + gnp("dnt", "  doNotTrack: true\n  applyOnForward: true\n" + rules) +
               gnp("pre", "  preDNAT: true\n  applyOnForward: true\n" + rules) + gnp("normal", rules));
  CHECK(actions(rs, "gnp/dnt/ingress/untracked") ==
        std::vector{A::notrack, A::allow, A::drop, A::pass, A::log});
  CHECK(actions(rs, "gnp/pre/ingress/prednat") == std::vector{A::allow, A::drop, A::pass, A::log});
  CHECK(actions(rs, "gnp/normal/ingress/normal") == std::vector{A::accept, A::drop, A::pass, A::log});
  CHECK(rs.find_chain("gnp/normal/ingress/normal")->rules[3].action.log_prefix == "calico-packet");
}

TEST_CASE("iptablesFilterDenyAction Reject and logPrefix", "[mapping]") {
  const ir::Ruleset rs =
      map_only(kH0 + felix("default", "  iptablesFilterDenyAction: Reject\n  logPrefix: fw\n") +
               gnp("pre", "  preDNAT: true\n  applyOnForward: true\n  ingress: [{action: Deny}]\n") +
               gnp("normal", "  ingress: [{action: Log}, {action: Deny}]\n"));
  CHECK(actions(rs, "gnp/pre/ingress/prednat") == std::vector{A::drop});  // mangle has no REJECT
  CHECK(actions(rs, "gnp/normal/ingress/normal") == std::vector{A::log, A::reject});
  CHECK(rs.find_chain("gnp/normal/ingress/normal")->rules[0].action.log_prefix == "fw");
  const ir::Endpoint& h0 = rs.stage(ir::Stage::input).sections.at(0).endpoints.at(0);
  CHECK(h0.default_verdict == ir::Verdict::reject);
  CHECK(h0.groups.at(0).on_end == ir::Verdict::reject);
}

TEST_CASE("a reject deny action in doNotTrack and preDNAT policies drops, and says how Felix differs",
          "[mapping]") {
  auto warnings = [](const std::string& felix_spec) {
    Diagnostics diag;
    const Model model = read_yaml(
        kH0 + felix("default", felix_spec) +
            gnp("dnt",
                "  doNotTrack: true\n  applyOnForward: true\n  ingress: [{action: Deny}, {action: Deny}]\n") +
            gnp("pre", "  preDNAT: true\n  applyOnForward: true\n  ingress: [{action: Deny}]\n"),
        diag);
    const ir::Ruleset rs = map_to_ir(model, n1_options(), diag);
    CHECK(actions(rs, "gnp/dnt/ingress/untracked") == std::vector{A::drop, A::drop});  // one warning for both
    CHECK(actions(rs, "gnp/pre/ingress/prednat") == std::vector{A::drop});
    return formatted(diag, Severity::warning);
  };
  const auto iptables = warnings("  iptablesFilterDenyAction: Reject\n");
  REQUIRE(iptables.size() == 2);
  CHECK_THAT(iptables[0],
             Catch::Contains("warning: Deny in a doNotTrack policy with iptablesFilterDenyAction: "
                             "Reject: Felix writes REJECT into the raw table, which iptables refuses"));
  CHECK_THAT(iptables[1], Catch::Contains("warning: Deny in a preDNAT policy with iptablesFilterDenyAction: "
                                          "Reject: Felix writes REJECT into the mangle table"));
  const auto nftables = warnings("  nftablesMode: Enabled\n  nftablesFilterDenyAction: Reject\n");
  REQUIRE(nftables.size() == 2);
  CHECK_THAT(nftables[0], Catch::Contains("warning: Deny in a doNotTrack policy: Felix rejects here "
                                          "(nftablesFilterDenyAction: Reject), fwengine drops"));
  // Reject for the other dataplane's field only: Felix drops as fwengine does.
  CHECK(warnings("  nftablesFilterDenyAction: Reject\n").empty());
  CHECK(warnings("  nftablesMode: Enabled\n  iptablesFilterDenyAction: Reject\n").empty());
}

TEST_CASE("rules keep their origin", "[mapping]") {
  const ir::Ruleset rs = map_only(kH0 + gnp("p", "  ingress:\n  - action: Allow\n  - action: Deny\n"));
  const ir::Chain* chain = rs.find_chain("gnp/p/ingress/normal");
  REQUIRE(chain);
  REQUIRE(chain->rules.size() == 2);
  const ir::Origin& origin = chain->rules[1].origin;
  CHECK(origin.policy == "GlobalNetworkPolicy p");
  CHECK(origin.rule == 1);
  CHECK(origin.loc.line == 18);
  CHECK(origin.loc.col == 5);
  CHECK(rs.frontend == "calico");
  REQUIRE(rs.files.size() == 2);
  CHECK(rs.files[origin.loc.file] == "test.yaml");
  const ir::Endpoint& h0 = rs.stage(ir::Stage::input).sections.at(0).endpoints.at(0);
  CHECK(h0.origin.policy == "HostEndpoint h0");
}

TEST_CASE("tiers: order, end-of-tier drop, Pass default action", "[mapping]") {
  const std::string tier = R"(---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 10, defaultAction: ACTION}
)";
  auto with_action = [&](const std::string& action) {
    std::string text = tier;
    text.replace(text.find("ACTION"), 6, action);
    return kH0 + text + gnp("security.log", "  tier: security\n  ingress: [{action: Log}]\n") +
           gnp("allow", "  ingress: [{action: Allow}]\n");
  };
  const trace::Packet pkt = packet("eth0", "", "198.51.100.7", "10.0.0.10", 6, 80);
  const ir::Ruleset pass = build(with_action("Pass"));
  CHECK(to_string(verdict(pass, pkt)) == "ALLOW");
  const ir::Endpoint& h0 = pass.stage(ir::Stage::input).sections.at(0).endpoints.at(0);
  REQUIRE(h0.groups.size() == 2);
  CHECK(h0.groups[0].name == "tier/security");
  CHECK(h0.groups[0].on_end == ir::Verdict::continue_);
  CHECK(h0.groups[1].name == "tier/default");
  CHECK(to_string(verdict(build(with_action("Deny")), pkt)) == "DENY");
}

TEST_CASE("a Pass rule leaves the tier for the next one", "[mapping]") {
  const std::string text = kH0 + R"(---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: first}
spec: {order: 1}
)" + gnp("first.pass", "  tier: first\n  ingress: [{action: Pass, protocol: TCP}, {action: Deny}]\n") +
                           gnp("allow", "  ingress: [{action: Allow}]\n");
  const ir::Ruleset rs = build(text);
  CHECK(to_string(verdict(rs, packet("eth0", "", "198.51.100.7", "10.0.0.10", 6, 80))) == "ALLOW");
  CHECK(to_string(verdict(rs, packet("eth0", "", "198.51.100.7", "10.0.0.10", 17, 80))) == "DENY");
}

TEST_CASE("tiers: a Tier without order is ordered as 1 000 000, ties broken by name", "[mapping]") {
  // libcalico-go DefaultTierFields gives every Tier read without spec.order the order 1 000 000; Felix's
  // TierLess then breaks the tie with the default tier by name: admin < default < zeta.
  auto tier = [](const std::string& name, const std::string& spec) {
    return "---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: " + name +
           "}\nspec: " + spec + "\n";
  };
  const std::string text =
      kH0 + tier("admin", "{}") + tier("zeta", "{defaultAction: Pass}") + tier("later", "{order: 2000000}") +
      gnp("admin.deny-8080",
          "  tier: admin\n  ingress: [{action: Deny, protocol: TCP, destination: {ports: [8080]}}]\n") +
      gnp("zeta.log", "  tier: zeta\n  ingress: [{action: Log}]\n") +
      gnp("later.log", "  tier: later\n  ingress: [{action: Log}]\n") +
      gnp("allow", "  ingress: [{action: Allow}]\n");
  const ir::Ruleset rs = build(text);
  CHECK(to_string(verdict(rs, packet("eth0", "", "198.51.100.7", "10.0.0.10", 6, 8080))) == "DENY");
  const ir::Endpoint& h0 = rs.stage(ir::Stage::input).sections.at(0).endpoints.at(0);
  std::vector<std::string> groups;
  for (const ir::Group& group : h0.groups) groups.push_back(group.name);
  CHECK(groups == std::vector<std::string>{"tier/admin", "tier/default", "tier/zeta", "tier/later"});
}

TEST_CASE("Felix settings: node.<name> over default, conntrack invalid check", "[mapping]") {
  const ir::Ruleset rs = map_only(kH0 +
                                  felix("default",
                                        "  failsafeInboundHostPorts: [{protocol: TCP, port: 1}]\n"
                                        "  failsafeOutboundHostPorts: [{protocol: UDP, port: 2}]\n") +
                                  felix("node.n1",
                                        "  failsafeInboundHostPorts: [{protocol: TCP, port: 3}]\n"
                                        "  disableConntrackInvalidCheck: true\n") +
                                  felix("node.n2", "  failsafeInboundHostPorts: []\n"));
  REQUIRE(rs.failsafe.inbound.size() == 1);
  CHECK(rs.failsafe.inbound[0].port == 3);
  CHECK(rs.failsafe.inbound[0].origin.policy == "FelixConfiguration node.n1");
  REQUIRE(rs.failsafe.outbound.size() == 1);
  CHECK(rs.failsafe.outbound[0].port == 2);
  const ir::Endpoint& h0 = rs.stage(ir::Stage::input).sections.at(0).endpoints.at(0);
  CHECK(h0.conntrack == ir::Conntrack::accept_established);
}

// A selector-scoped FelixConfiguration (Calico 3.32): metadata with a creation time, spec with a
// nodeSelector.
std::string scoped_felix(const std::string& name, const std::string& created, const std::string& selector,
                         const std::string& spec) {
  return "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: " + name +
         (created.empty() ? "" : "\n  creationTimestamp: \"" + created + "\"") +
         "\nspec:\n  nodeSelector: \"" + selector + "\"\n" + spec;
}

// n1 as `kubectl get node n1 -o yaml` prints it (Calico's Node has the same metadata).
std::string node_n1(const std::string& labels) {
  return "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: " + labels +
         "\nspec: {podCIDR: 10.244.0.0/24}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.10}]}\n";
}

TEST_CASE("Felix settings: a selector-scoped config between default and node.<name>", "[mapping]") {
  const std::string configs = kH0 +
                              felix("default",
                                    "  failsafeInboundHostPorts: [{protocol: TCP, port: 1}]\n"
                                    "  failsafeOutboundHostPorts: [{protocol: UDP, port: 2}]\n") +
                              scoped_felix("edge", "2026-01-02T03:04:05Z", "role == 'edge'",
                                           "  failsafeInboundHostPorts: [{protocol: TCP, port: 5}]\n"
                                           "  failsafeOutboundHostPorts: [{protocol: UDP, port: 6}]\n"
                                           "  disableConntrackInvalidCheck: true\n") +
                              felix("node.n1", "  failsafeInboundHostPorts: [{protocol: TCP, port: 3}]\n");
  const ir::Ruleset rs = map_only(configs + node_n1("{role: edge, kubernetes.io/hostname: n1}"));
  REQUIRE(rs.failsafe.inbound.size() == 1);
  CHECK(rs.failsafe.inbound[0].port == 3);  // node.n1 over the selected config
  REQUIRE(rs.failsafe.outbound.size() == 1);
  CHECK(rs.failsafe.outbound[0].port == 6);  // the selected config over default
  CHECK(rs.failsafe.outbound[0].origin.policy == "FelixConfiguration edge");
  CHECK(rs.stage(ir::Stage::input).sections.at(0).endpoints.at(0).conntrack ==
        ir::Conntrack::accept_established);

  // Labels it does not select, no labels, or no Node: default alone under node.n1.
  for (const std::string& node : {node_n1("{role: core}"), node_n1("{}"), std::string()}) {
    Diagnostics diag;
    const Model model = read_yaml(configs + node, diag);
    const ir::Ruleset other = map_to_ir(model, n1_options(), diag);
    INFO(diag.text());
    REQUIRE_FALSE(diag.has_errors());
    REQUIRE(other.failsafe.outbound.size() == 1);
    CHECK(other.failsafe.outbound[0].port == 2);
    CHECK(other.stage(ir::Stage::input).sections.at(0).endpoints.at(0).conntrack ==
          ir::Conntrack::accept_established_drop_invalid);
    if (node.empty())
      CHECK_THAT(diag.text(),
                 Catch::Contains("test.yaml:25:17: note: FelixConfiguration 'edge' is for the nodes its "
                                 "nodeSelector selects, and no Node 'n1' was read"));
  }
}

// The outbound failsafe port after default's 2, under a selector-scoped config's 6 when it applies.
std::uint16_t scoped_outbound_port(const std::string& text, std::string* diagnostics = nullptr) {
  Diagnostics diag;
  const Model model = read_yaml(
      kH0 + felix("default", "  failsafeOutboundHostPorts: [{protocol: UDP, port: 2}]\n") + text, diag);
  const ir::Ruleset rs = map_to_ir(model, n1_options(), diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  if (diagnostics) *diagnostics = diag.text();
  REQUIRE(rs.failsafe.outbound.size() == 1);
  return rs.failsafe.outbound[0].port;
}

TEST_CASE("Felix settings: a Node's labels as Calico reads them", "[mapping]") {
  const std::string port6 = "  failsafeOutboundHostPorts: [{protocol: UDP, port: 6}]\n";
  const std::string all = scoped_felix("any", "", "all()", port6);
  // No labels at all select nothing, not even all() (Felix's nil map); a note says why.
  std::string diagnostics;
  CHECK(scoped_outbound_port(all + node_n1("{}"), &diagnostics) == 2);
  CHECK_THAT(diagnostics, Catch::Contains("note: FelixConfiguration 'any' is for the nodes its nodeSelector "
                                          "selects, and Node 'n1' has no labels"));
  CHECK(scoped_outbound_port(all + node_n1("{a: b}")) == 6);
  // Calico's own Node, as calicoctl prints it.
  const std::string calico_node =
      "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n1\n  labels: {zone: a}\n"
      "spec: {bgp: {ipv4Address: 10.0.0.10/24}}\n";
  CHECK(scoped_outbound_port(scoped_felix("z", "", "zone == 'a'", port6) + calico_node) == 6);
  // Kubernetes' Node keeps the labels set with calicoctl in an annotation; its own labels win.
  const std::string kube_node =
      "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: {zone: b}\n"
      "  annotations: {projectcalico.org/labels: '{\"edge\": \"true\", \"zone\": \"a\"}'}\n";
  CHECK(scoped_outbound_port(scoped_felix("e", "", "edge == 'true' && zone == 'b'", port6) + kube_node) == 6);
  CHECK(scoped_outbound_port(scoped_felix("e", "", "zone == 'a'", port6) + kube_node) == 2);
  // A Node of another apiVersion is skipped; one given again with other labels: the first.
  CHECK(scoped_outbound_port(
            all + "---\napiVersion: example.com/v1\nkind: Node\nmetadata: {name: n1, labels: {a: "
                  "b}}\n",
            &diagnostics) == 2);
  CHECK_THAT(diagnostics, Catch::Contains("warning: Node with apiVersion 'example.com/v1' skipped"));
  CHECK(scoped_outbound_port(scoped_felix("z", "", "zone == 'a'", port6) + calico_node + node_n1("{zone: c}"),
                             &diagnostics) == 6);
  CHECK_THAT(diagnostics,
             Catch::Contains("warning: Node 'n1' is given again with other labels: the first is used"));
}

TEST_CASE("Felix settings: a selector-scoped config's annotations, and its v1 form's creation time",
          "[mapping]") {
  // An annotation sets a field of a selector-scoped config as of the others.
  const std::string annotated =
      "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: edge\n"
      "  annotations: {config.projectcalico.org/FailsafeOutboundHostPorts: 'udp:9'}\n"
      "spec: {nodeSelector: all()}\n";
  CHECK(scoped_outbound_port(annotated + node_n1("{a: b}")) == 9);
  // crd.projectcalico.org/v1: Calico's creation time is in its metadata annotation, the object's is a
  // restore's. "old" was made first, though its object is the newer.
  auto v1 = [](const std::string& name, const std::string& object_time, const std::string& calico_time,
               int port) {
    return "---\napiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata:\n  name: " + name +
           "\n  creationTimestamp: \"" + object_time +
           "\"\n  annotations:\n    projectcalico.org/metadata: "
           "'{\"creationTimestamp\": \"" +
           calico_time +
           "\"}'\nspec:\n  nodeSelector: all()\n"
           "  failsafeOutboundHostPorts: [{protocol: UDP, port: " +
           std::to_string(port) + "}]\n";
  };
  CHECK(scoped_outbound_port(v1("new", "2026-05-01T00:00:00Z", "2026-02-01T00:00:00Z", 7) +
                             v1("old", "2026-06-01T00:00:00Z", "2026-01-01T00:00:00Z", 8) +
                             node_n1("{a: b}")) == 8);
}

TEST_CASE("Felix settings: of two selector-scoped configs for a node, the oldest", "[mapping]") {
  auto outbound_port = [](const std::string& text, std::string& diagnostics) {
    Diagnostics diag;
    const Model model = read_yaml(kH0 + text + node_n1("{role: edge}"), diag);
    const ir::Ruleset rs = map_to_ir(model, n1_options(), diag);
    diagnostics = diag.text();
    REQUIRE(rs.failsafe.outbound.size() == 1);
    return rs.failsafe.outbound[0].port;
  };
  const std::string port7 = "  failsafeOutboundHostPorts: [{protocol: UDP, port: 7}]\n";
  const std::string port8 = "  failsafeOutboundHostPorts: [{protocol: UDP, port: 8}]\n";
  std::string diagnostics;
  CHECK(outbound_port(scoped_felix("b-new", "2026-03-01T00:00:00Z", "has(role)", port7) +
                          scoped_felix("a-old", "2026-02-01T00:00:00Z", "all()", port8),
                      diagnostics) == 8);
  CHECK_THAT(diagnostics,
             Catch::Contains("warning: FelixConfigurations 'b-new', 'a-old' both select node 'n1': "
                             "Felix takes the oldest, 'a-old', and so does fwengine"));
  // The same time: by name. No time at all is Go's zero time, older than any.
  CHECK(outbound_port(scoped_felix("b", "2026-03-01T00:00:00Z", "has(role)", port7) +
                          scoped_felix("a", "2026-03-01T00:00:00Z", "has(role)", port8),
                      diagnostics) == 8);
  CHECK(outbound_port(scoped_felix("a", "2026-03-01T00:00:00Z", "has(role)", port8) +
                          scoped_felix("b", "", "has(role)", port7),
                      diagnostics) == 7);
  // One that selects other nodes is no rival.
  CHECK(outbound_port(scoped_felix("b", "", "role == 'core'", port7) +
                          scoped_felix("a", "2026-03-01T00:00:00Z", "has(role)", port8),
                      diagnostics) == 8);
  CHECK_THAT(diagnostics, !Catch::Contains("warning"));
}

// calico-node's DaemonSet as Calico's manifest makes it, with the calico-node container's env.
std::string calico_node(const std::string& env, const std::string& name = "calico-node") {
  return "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: " + name +
         ", namespace: kube-system}\nspec:\n  template:\n    spec:\n      containers:\n"
         "      - name: install-cni\n        env:\n        - {name: FELIX_IPV6SUPPORT, value: \"true\"}\n"
         "      - name: calico-node\n        image: calico/node\n        env:\n" +
         env;
}

TEST_CASE("Felix settings: calico-node's environment over every FelixConfiguration", "[mapping]") {
  const std::string configs =
      kH0 + felix("default", "  logPrefix: from-default\n") +
      felix("node.n1", "  failsafeOutboundHostPorts: [{protocol: UDP, port: 3}]\n  ipv6Support: true\n") +
      gnp("log", "  ingress: [{action: Log}]\n");
  const std::string manifest =
      "        - {name: CALICO_IPV4POOL_CIDR, value: 10.244.0.0/16}\n"
      "        - {name: FELIX_IPINIPMTU, valueFrom: {configMapKeyRef: {name: calico-config, key: "
      "veth_mtu}}}\n"
      "        - {name: FELIX_DEFAULTENDPOINTTOHOSTACTION, value: ACCEPT}\n"
      "        - {name: FELIX_IPV6SUPPORT, value: \"true\"}\n"
      "        - {name: FELIX_IPV6SUPPORT, value: \"false\"}\n"  // of two of one name, Kubernetes's last
      "        - {name: FELIX_FAILSAFEOUTBOUNDHOSTPORTS, value: 'udp:9'}\n"
      "        - {name: FELIX_LOGPREFIX, value: ''}\n";  // empty: dropped, the FelixConfigurations decide
  Diagnostics diag;
  const Model model = read_yaml(configs + calico_node(manifest), diag);
  const ir::Ruleset rs = map_to_ir(model, n1_options(), diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  CHECK(formatted(diag, Severity::warning).empty());
  REQUIRE(rs.failsafe.outbound.size() == 1);
  CHECK(rs.failsafe.outbound[0].port == 9);
  CHECK(rs.failsafe.outbound[0].origin.policy == "calico-node's environment");
  CHECK(verdict(rs, packet("eth0", "", "2001:db8::99", "2001:db8::10", 6, 8080)) == Verdict::no_verdict);
  CHECK(rs.find_chain("gnp/log/ingress/normal")->rules.at(0).action.log_prefix == "from-default");

  // A bad value is Felix's: an error where it refuses to start, a warning where it takes its default.
  Diagnostics bad;
  read_yaml(calico_node("        - {name: FELIX_DEFAULTENDPOINTTOHOSTACTION, value: maybe}\n"
                        "        - {name: FELIX_IPV6SUPPORT, value: perhaps}\n"),
            bad);
  CHECK_THAT(bad.text(), Catch::Contains("test.yaml:15:60: error: environment variable "
                                         "FELIX_DEFAULTENDPOINTTOHOSTACTION: invalid value 'maybe'"));
  CHECK_THAT(bad.text(), Catch::Contains("warning: environment variable FELIX_IPV6SUPPORT: invalid value "
                                         "'perhaps', which Felix replaces with its default"));
  // A modelled setting from elsewhere is left to the FelixConfigurations, with a note; another DaemonSet is
  // no Calico resource.
  Diagnostics other;
  read_yaml(calico_node(
                "        - {name: FELIX_IPV6SUPPORT, value: \"false\"}\n"
                "        - {name: FELIX_IPV6SUPPORT, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}\n") +
                calico_node("        - {name: FELIX_IPV6SUPPORT, value: \"false\"}\n", "kube-proxy"),
            other);
  CHECK_THAT(other.text(),
             Catch::Contains("note: FELIX_IPV6SUPPORT of calico-node takes its value from elsewhere "
                             "(valueFrom)"));
  CHECK_THAT(other.text(), Catch::Contains("warning: kind DaemonSet (apiVersion 'apps/v1') is not a Calico "
                                           "resource; skipped"));
  CHECK(other.error_count() == 0);  // the later valueFrom replaced the value: nothing is read
  // Two spellings of one setting are two variables, whose order in the process Felix does not fix.
  Diagnostics spellings;
  read_yaml(calico_node("        - {name: FELIX_IPV6SUPPORT, value: \"true\"}\n"
                        "        - {name: felix_ipv6support, value: \"false\"}\n"),
            spellings);
  CHECK_THAT(spellings.text(),
             Catch::Contains("error: environment variable felix_ipv6support sets Ipv6Support, "
                             "which another environment variable sets too: Felix takes either "
                             "value (set Ipv6Support once)"));
}

TEST_CASE("built-in failsafe lists when no FelixConfiguration sets them", "[mapping]") {
  const ir::Ruleset rs = map_only(kH0);
  CHECK(rs.failsafe.inbound.size() == 9);
  CHECK(rs.failsafe.outbound.size() == 9);
  CHECK(rs.failsafe.outbound[0].protocol == 17);
  CHECK(rs.failsafe.outbound[0].port == 53);
}

TEST_CASE("stages and sections", "[mapping]") {
  const ir::Ruleset rs = map_only(kH0);
  CHECK(rs.stage(ir::Stage::untracked_in).empty());
  CHECK(rs.stage(ir::Stage::prednat).empty());
  REQUIRE(rs.stage(ir::Stage::input).sections.size() == 1);
  CHECK(rs.stage(ir::Stage::input).sections[0].honour_allow);
  const auto& forward = rs.stage(ir::Stage::forward).sections;
  REQUIRE(forward.size() == 2);
  CHECK(forward[0].name == "ingress");
  CHECK(forward[0].honour_allow);
  CHECK(forward[1].name == "egress");
  CHECK_FALSE(forward[1].honour_allow);
  CHECK_FALSE(forward[0].endpoints.at(0).failsafe);
  CHECK(forward[0].endpoints.at(0).default_verdict == ir::Verdict::accept);
  const ir::Endpoint& output = rs.stage(ir::Stage::output).sections.at(0).endpoints.at(0);
  REQUIRE(output.match.oif);
  CHECK(output.match.oif->name == "eth0");
}

TEST_CASE("forward with applyOnForward policies only for the other direction gives no verdict", "[mapping]") {
  const ir::Ruleset rs = build(kH0 + gnp("out",
                                         "  applyOnForward: true\n  types: [Egress]\n"
                                         "  egress: [{action: Allow}]\n"));
  CHECK(to_string(verdict(rs, packet("eth0", "eth1", "198.51.100.7", "172.16.0.9", 6, 80))) == "NO-VERDICT");
}

TEST_CASE("a HostEndpoint bound by address is named after its interface", "[mapping]") {
  const ir::Ruleset rs = map_only(R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: by-ip}
spec: {node: n1, expectedIPs: ["2001:db8::10"]}
)");
  const ir::Endpoint& endpoint = rs.stage(ir::Stage::input).sections.at(0).endpoints.at(0);
  CHECK(endpoint.name == "by-ip@eth0");
  REQUIRE(endpoint.match.iif);
  CHECK(endpoint.match.iif->name == "eth0");
}

TEST_CASE("unknown profiles deny, as Felix's dummy drop rules do", "[mapping]") {
  const ir::Ruleset rs = build(kH0 + "  profiles: [kns.default]\n");
  CHECK(to_string(verdict(rs, packet("eth0", "", "198.51.100.7", "10.0.0.10", 6, 80))) == "DENY");
}

TEST_CASE("named ports: protocol filter, selector filter, numbers alongside", "[mapping]") {
  const std::string heps =
      kH0 + "  ports: [{name: web, protocol: TCP, port: 8443}, {name: dns, protocol: UDP, port: 53}]\n" +
      R"(---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: other, labels: {role: other}}
spec:
  node: n2
  interfaceName: eth0
  expectedIPs: [10.0.0.20]
  ports: [{name: web, protocol: TCP, port: 9443}]
)";
  const ir::Ruleset rs = build(heps + gnp("web", R"(  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [web, 80, dns]}
)"));
  auto in = [](std::uint8_t protocol, std::uint16_t port) {
    return packet("eth0", "", "198.51.100.7", "10.0.0.10", protocol, port);
  };
  CHECK(to_string(verdict(rs, in(6, 8443))) == "ALLOW");
  CHECK(to_string(verdict(rs, in(6, 80))) == "ALLOW");
  CHECK(to_string(verdict(rs, in(6, 9443))) == "DENY");  // that port is named on another endpoint's address
  CHECK(to_string(verdict(rs, in(17, 53))) == "DENY");   // protocol TCP filters out the UDP named port
  const ir::Ruleset scoped = build(heps + gnp("web", R"(  ingress:
  - action: Allow
    destination: {selector: role == 'other', ports: [web]}
)"));
  CHECK(to_string(verdict(scoped, in(6, 8443))) == "DENY");
}

TEST_CASE("rule namespaceSelector scopes the selector", "[mapping]") {
  const std::string peer = R"(---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: peer, labels: {role: peer}}
spec: {node: n2, interfaceName: eth0, expectedIPs: [10.0.0.20]}
)";
  auto with_ns = [&](const std::string& ns) {
    return build(kH0 + peer +
                 gnp("p",
                     "  ingress: [{action: Allow, source: {selector: role == 'peer', "
                     "namespaceSelector: \"" +
                         ns + "\"}}]\n"));
  };
  const trace::Packet from_peer = packet("eth0", "", "10.0.0.20", "10.0.0.10", 6, 80);
  CHECK(to_string(verdict(with_ns("global()"), from_peer)) == "ALLOW");
  CHECK(to_string(verdict(with_ns("all()"), from_peer)) == "DENY");
  CHECK(to_string(verdict(with_ns("team == 'x'"), from_peer)) == "DENY");
}

TEST_CASE("icmp or notICMP without a type constrains nothing, as in Felix", "[mapping]") {
  const trace::Packet ping = [] {
    trace::Packet p = packet("eth0", "", "10.0.0.20", "10.0.0.10", 1, 0);
    p.icmp_type = 8;
    return p;
  }();
  for (const char* field : {"icmp", "notICMP"}) {
    const std::string rule = std::string("  ingress: [{action: Allow, protocol: ICMP, ") + field + ": {}}]\n";
    INFO(field);
    CHECK(to_string(verdict(map_only(kH0 + gnp("p", rule)), ping)) == "ALLOW");
  }
}

TEST_CASE("notICMP without protocol is rendered per family", "[mapping]") {
  const ir::Ruleset rs = map_only(kH0 + gnp("p", "  ingress: [{action: Deny, notICMP: {type: 8}}]\n"));
  const ir::Chain* chain = rs.find_chain("gnp/p/ingress/normal");
  REQUIRE(chain);
  REQUIRE(chain->rules.size() == 2);
  CHECK(chain->rules[0].match.family == ir::Family::ipv4);
  CHECK_FALSE(chain->rules[0].match.icmp->v6);
  CHECK(chain->rules[1].match.family == ir::Family::ipv6);
  CHECK(chain->rules[1].match.icmp->v6);
  CHECK(chain->rules[1].match.icmp->negate);
}

}  // namespace fwe::calico::test

namespace fwe::calico::test {

TEST_CASE("interfaceExclude and workload interfaces are never bound by address", "[mapping]") {
  const std::string hep = R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: lb}
spec: {node: n1, expectedIPs: [192.0.2.1]}
)";
  MappingOptions options = n1_options();
  options.interface_addresses["kube-ipvs0"] = {*ir::parse_ip("192.0.2.1")};
  options.interface_addresses["cali0123"] = {*ir::parse_ip("192.0.2.1")};
  options.interface_addresses["dummy7"] = {*ir::parse_ip("192.0.2.1")};
  const ir::Ruleset rs = map_only(hep, options);
  const auto& endpoints = rs.stage(ir::Stage::input).sections.at(0).endpoints;
  REQUIRE(endpoints.size() == 1);
  CHECK(endpoints[0].name == "lb@dummy7");
  const ir::Ruleset excluded =
      map_only(hep + felix("default", "  interfaceExclude: kube-ipvs0,/^dummy/\n"), options);
  CHECK(excluded.stage(ir::Stage::input).empty());
}

TEST_CASE("HEP* does not police host traffic to local workloads", "[mapping]") {
  const ir::Ruleset rs = build(kHall);
  CHECK(to_string(verdict(rs, packet("", "cali12345", "10.0.0.10", "10.244.0.5", 6, 80))) == "NO-VERDICT");
  CHECK(to_string(verdict(rs, packet("", "eth1", "10.0.0.10", "172.16.0.9", 6, 80))) == "DENY");
}

TEST_CASE("what pods send to the host meets no HostEndpoint, only defaultEndpointToHostAction", "[mapping]") {
  // Felix's filter INPUT goes to cali-wl-to-host for -i cali+ before host-endpoint dispatch.
  auto from_pod = [](std::uint16_t port) {
    return packet("cali12345", "", "10.244.0.5", "10.0.0.10", 6, port);
  };
  const ir::Ruleset unset = build(kHall);
  CHECK(to_string(verdict(unset, from_pod(80))) == "NO-VERDICT");
  CHECK(to_string(verdict(unset, from_pod(22))) == "NO-VERDICT");  // no failsafe either: no HEP
  CHECK(to_string(verdict(unset, packet("eth1", "", "172.16.0.9", "10.0.0.10", 6, 80))) == "DENY");

  for (const auto& [action, expected] :
       {std::pair{"Drop", "DENY"}, {"accept", "ALLOW"}, {"Return", "NO-VERDICT"}}) {
    INFO(action);
    const std::string config =
        felix("default", std::string("  defaultEndpointToHostAction: ") + action + "\n");
    // With or without HEP*: Felix's jump to cali-wl-to-host does not depend on host endpoints.
    for (const std::string& text : {kHall + config, config}) {
      const ir::Ruleset rs = build(text);
      CHECK(to_string(verdict(rs, from_pod(80))) == expected);
      CHECK(to_string(verdict(rs, packet("cali12345", "", "10.244.0.5", "10.0.0.10", 6, 80,
                                         ir::CtState::established))) == "ALLOW");
      trace::Packet solicitation = packet("cali12345", "", "fe80::1", "2001:db8::10", 58, 0);
      solicitation.icmp_type = 135;
      CHECK(to_string(verdict(rs, solicitation)) == "ALLOW");
    }
  }
  // A preDNAT policy of HEP* that allows the pods does not skip it: Felix goes to cali-wl-to-host before
  // it accepts what preDNAT allowed. (Return then leaves the packet to INPUT's policy in Felix; here the
  // host endpoints' section honours the allow mark: ALLOW, where a host whose INPUT policy drops would
  // drop it.)
  const std::string pre_pods = kHall + gnp("pre-pods",
                                           "  preDNAT: true\n  applyOnForward: true\n"
                                           "  ingress: [{action: Allow, source: {nets: [10.244.0.0/16]}}]\n");
  for (const auto& [action, expected] :
       {std::pair{"Drop", "DENY"}, {"Accept", "ALLOW"}, {"Return", "ALLOW"}}) {
    INFO(action);
    const ir::Ruleset rs =
        build(pre_pods + felix("default", std::string("  defaultEndpointToHostAction: ") + action + "\n"));
    CHECK(to_string(verdict(rs, from_pod(8080))) == expected);
    CHECK(to_string(verdict(rs, packet("eth1", "", "10.244.1.5", "10.0.0.10", 6, 8080))) == "ALLOW");
  }
  // Unset, as before: no verdict of fwengine's for what it cannot know, the allow mark honoured.
  CHECK(to_string(verdict(build(pre_pods), from_pod(8080))) == "ALLOW");

  Diagnostics diag;
  read_yaml(felix("default", "  defaultEndpointToHostAction: Reject\n"), diag);
  CHECK_THAT(diag.text(), Catch::Contains("defaultEndpointToHostAction must be Drop, Accept or Return"));
}

TEST_CASE("all() next to a namespaceSelector or serviceAccountSelector is replaced as Calico does",
          "[mapping]") {
  const std::string heps = kH0 + R"(---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: trusted, labels: {role: trusted}}
spec: {nets: [203.0.113.0/24]}
)";
  auto to_h0 = [](const std::string& src, std::uint16_t port) {
    return packet("eth0", "", src, "10.0.0.10", 6, port);
  };
  // Policy level: Calico joins selector and namespaceSelector, then replaces every all() in the text by
  // has(projectcalico.org/namespace), the policy's own selector's too.
  const ir::Ruleset rs = build(heps + gnp("a-all", R"y(  order: 1
  selector: all()
  namespaceSelector: "!has(team)"
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [1001]}}]
)y") + gnp("b-not-all", R"y(  order: 2
  selector: has(host)
  namespaceSelector: "!all()"
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [1002]}}]
)y") + gnp("c-sa", R"y(  order: 3
  selector: has(host)
  serviceAccountSelector: "!all()"
  namespaceSelector: ""
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: role == 'trusted', namespaceSelector: "!all()"}
      destination: {ports: [1003]}
    - action: Allow
      protocol: TCP
      source: {selector: role == 'trusted', namespaceSelector: global()}
      destination: {ports: [1004]}
)y") + gnp("d-base", "  order: 4\n  selector: has(host)\n  ingress: [{action: Deny}]\n"));
  CHECK(to_string(verdict(rs, to_h0("198.51.100.7", 1001))) == "DENY");   // has(namespace) selects no HEP
  CHECK(to_string(verdict(rs, to_h0("198.51.100.7", 1002))) == "ALLOW");  // !has(namespace) selects h0
  CHECK(to_string(verdict(rs, to_h0("203.0.113.7", 1003))) == "ALLOW");   // the set, not in a namespace
  CHECK(to_string(verdict(rs, to_h0("203.0.113.7", 1004))) == "ALLOW");
  CHECK(to_string(verdict(rs, to_h0("198.51.100.7", 1003))) == "DENY");
}

TEST_CASE("duplicate names are errors", "[mapping]") {
  Diagnostics diag;
  Model model = read_yaml(kH0 + "---" + kH0, diag);
  map_to_ir(model, n1_options(), diag);
  CHECK_THAT(diag.text(), Catch::Contains("error: HostEndpoint 'h0' is defined twice"));
}

TEST_CASE("one network of nets or notNets stays in the rule, several are a set, a selection's name is shared",
          "[mapping]") {
  const ir::Ruleset rs = map_only(
      kH0 + gnp("p",
                "  ingress:\n"
                "    - {action: Allow, source: {nets: [10.0.0.0/8], notNets: [10.1.0.0/16, 10.2.0.0/16]}}\n"
                "    - {action: Deny, source: {notNets: [192.0.2.0/24], selector: role == 'peer'}}\n"
                "    - {action: Allow, destination: {selector: role == 'peer'}}\n"));
  const ir::Chain* chain = rs.find_chain("gnp/p/ingress/normal");
  REQUIRE(chain);
  REQUIRE(chain->rules.size() == 3);
  const auto& first = chain->rules[0].match.src_addr;
  REQUIRE(first.size() == 2);
  CHECK(first[0].in_place());
  CHECK(first[0].cidr == *ir::parse_cidr("10.0.0.0/8"));
  CHECK_FALSE(first[0].negate);
  CHECK_FALSE(first[1].in_place());
  CHECK(first[1].negate);
  CHECK(rs.find_set(first[1].set_name)->cidrs.size() == 2);
  const auto& second = chain->rules[1].match.src_addr;
  REQUIRE(second.size() == 2);
  CHECK(second[0].in_place());
  CHECK(second[0].negate);
  CHECK_FALSE(second[1].in_place());
  const auto& third = chain->rules[2].match.dst_addr;
  REQUIRE(third.size() == 1);
  CHECK(third[0].set_name.c_str() == second[1].set_name.c_str());  // one block for the selection's name
}

}  // namespace fwe::calico::test
