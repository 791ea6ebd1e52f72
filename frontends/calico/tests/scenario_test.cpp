// scenario_test.cpp - the scenarios of spec calico.md §8, evaluated by core's reference evaluator on the
// IR this frontend produces. ALLOW = delivered and accepted, DENY = dropped, NO-VERDICT = delivered with
// no verdict from fwengine (the host's own rules decide).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "frontend.hpp"
#include "fwengine/passes.hpp"
#include "test_support.hpp"

namespace fwe::calico::test {
namespace {

constexpr std::uint8_t kTcp = 6, kUdp = 17;
constexpr const char* kRemote = "198.51.100.7";
constexpr const char* kHostIp = "10.0.0.10";

// A GlobalNetworkPolicy document.
std::string gnp(const std::string& name, const std::string& spec) {
  return "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: " + name +
         "}\nspec:\n" + spec;
}

// h0 with profiles [projectcalico-default-allow].
std::string h0_default_allow() {
  return kH0 + "  profiles: [projectcalico-default-allow]\n";
}

trace::Packet in_eth0(const std::string& src, std::uint16_t dport, std::uint8_t protocol = kTcp,
                      const std::string& dst = kHostIp) {
  return packet("eth0", "", src, dst, protocol, dport);
}
trace::Packet out_eth0(const std::string& dst, std::uint16_t dport, std::uint8_t protocol = kTcp) {
  return packet("", "eth0", kHostIp, dst, protocol, dport);
}
trace::Packet forward(const std::string& src, const std::string& dst, std::uint16_t dport) {
  return packet("eth0", "eth1", src, dst, kTcp, dport);
}

#define CHECK_VERDICT(ruleset, pkt, expected) \
  CHECK(to_string(verdict((ruleset), (pkt))) == to_string(expected))

constexpr Verdict ALLOW = Verdict::allow;
constexpr Verdict DENY = Verdict::deny;
constexpr Verdict NO_VERDICT = Verdict::no_verdict;

}  // namespace

TEST_CASE("§8 #1: no HostEndpoint polices nothing", "[scenario]") {
  const ir::Ruleset rs = build("");
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), NO_VERDICT);
  CHECK_VERDICT(rs, packet("lo", "", kHostIp, kHostIp, kTcp, 80), NO_VERDICT);
}

TEST_CASE("§8 #2: a HostEndpoint alone is default deny, minus failsafe and conntrack", "[scenario]") {
  const ir::Ruleset rs = build(kH0);
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(rs, in_eth0(kRemote, 22), ALLOW);
  CHECK_VERDICT(rs, out_eth0("8.8.8.8", 53, kUdp), ALLOW);
  CHECK_VERDICT(rs, out_eth0("1.1.1.1", 443), DENY);
  CHECK(to_string(reply_verdict(rs, out_eth0("8.8.8.8", 53, kUdp))) == to_string(ALLOW));
  CHECK_VERDICT(rs, packet("eth0", "", kRemote, kHostIp, kTcp, 80, ir::CtState::invalid), DENY);
  CHECK_VERDICT(rs, packet("eth0", "", kRemote, kHostIp, kTcp, 80, ir::CtState::established), ALLOW);
}

TEST_CASE("§8 #3: end of tier comes before profiles", "[scenario]") {
  const ir::Ruleset rs = build(h0_default_allow() + gnp("d80", R"(  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [80]}
)"));
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(rs, in_eth0(kRemote, 81), DENY);
  CHECK_VERDICT(rs, out_eth0("1.1.1.1", 443), ALLOW);
}

TEST_CASE("§8 #4: Pass goes on to the profiles", "[scenario]") {
  const std::string pass = gnp("p", "  ingress: [{action: Pass}]\n");
  CHECK_VERDICT(build(h0_default_allow() + pass), in_eth0(kRemote, 80), ALLOW);
  CHECK_VERDICT(build(kH0 + pass), in_eth0(kRemote, 80), DENY);
}

TEST_CASE("§8 #5: order, no order last, name tie-break", "[scenario]") {
  const std::string deny80 = "  ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]\n";
  const std::string allow80 = "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]\n";
  CHECK_VERDICT(
      build(kH0 + gnp("a-deny", "  order: 100\n" + deny80) + gnp("b-allow", "  order: 100\n" + allow80)),
      in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(
      build(kH0 + gnp("a-deny", "  order: 100\n" + deny80) + gnp("b-allow", "  order: 50\n" + allow80)),
      in_eth0(kRemote, 80), ALLOW);
  CHECK_VERDICT(build(kH0 + gnp("c", "  ingress: [{action: Allow}]\n") + gnp("d", "  order: 1e9\n" + deny80)),
                in_eth0(kRemote, 80), DENY);
}

TEST_CASE("§8 #6: the v3.32 tie-break, and the v3.31 one behind an option", "[scenario]") {
  const std::string text = kH0 + gnp("allow", "  order: 1\n  ingress: [{action: Allow}]\n") +
                           gnp("allow-x", "  order: 1\n  ingress: [{action: Deny}]\n");
  CHECK_VERDICT(build(text), in_eth0(kRemote, 80), DENY);
  MappingOptions old = n1_options();
  old.tie_break = TieBreak::v3_31;
  CHECK_VERDICT(build(text, old), in_eth0(kRemote, 80), ALLOW);
}

TEST_CASE("§8 #7: types defaulting in v3 against raw crd v1", "[scenario]") {
  const std::string rules = "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]\n";
  CHECK_VERDICT(build(h0_default_allow() + gnp("ssh", rules)), out_eth0("1.1.1.1", 443), ALLOW);
  const std::string v1 =
      "---\napiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\n"
      "metadata: {name: ssh}\nspec:\n" +
      rules;
  CHECK_VERDICT(build(h0_default_allow() + v1), out_eth0("1.1.1.1", 443), DENY);
}

namespace {
const std::string kPre = gnp("pre", R"(  order: 10
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Allow, source: {nets: [192.168.0.0/16]}}]
)");
const std::string kPreDeny = gnp("pre-deny", R"(  order: 100
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny}]
)");
}  // namespace

TEST_CASE("§8 #8: preDNAT allow skips normal policy - no preDNAT default drop", "[scenario]") {
  const ir::Ruleset rs = build(kH0 + kPre);
  CHECK_VERDICT(rs, in_eth0("192.168.1.5", 80), ALLOW);
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(rs, forward(kRemote, "172.16.0.9", 80), ALLOW);
}

TEST_CASE("§8 #9: an explicit preDNAT deny", "[scenario]") {
  const ir::Ruleset rs = build(kH0 + kPre + kPreDeny);
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(rs, forward(kRemote, "172.16.0.9", 80), DENY);
  CHECK_VERDICT(rs, in_eth0("192.168.1.5", 80), ALLOW);
}

namespace {
// The host's own DNAT (kube-proxy's NodePort), not fwengine's policy: node:port -> pod:port.
void add_native_dnat(ir::Ruleset& rs, const std::string& node, std::uint16_t nodeport, const std::string& pod,
                     std::uint16_t pod_port) {
  const std::string set = "test-nodeport-" + node;
  rs.sets[set] = ir::AddrSet{{*ir::parse_cidr(node + "/32")}, {}};
  ir::Rule dnat;
  dnat.match.protocols = std::vector<std::uint8_t>{kTcp};
  dnat.match.dst_addr.push_back({false, set});
  dnat.match.dst_port.push_back({false, {{nodeport, nodeport}}});
  dnat.action.kind = ir::ActionKind::dnat;
  dnat.action.nat_addr = ir::parse_ip(pod);
  dnat.action.nat_port = ir::PortRange{pod_port, pod_port};
  rs.chains["test-kube-proxy"] = ir::Chain{"test-kube-proxy", {dnat}, {}};
  ir::Endpoint endpoint;
  endpoint.name = "kube-proxy";
  endpoint.groups.push_back(ir::Group{"nat", {"test-kube-proxy"}, ir::Verdict::continue_, {}, {}});
  rs.stage(ir::Stage::dnat).sections.push_back(ir::Section{"nat", false, {endpoint}});
}

ir::Ruleset build_with_dnat(const std::string& text) {
  Diagnostics diag;
  Model model = read_yaml(text, diag);
  REQUIRE_FALSE(diag.has_errors());
  ir::Ruleset rs = map_to_ir(model, n1_options(), diag);
  add_native_dnat(rs, kHostIp, 30080, "172.16.0.9", 80);
  passes::run_all(rs, diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  return rs;
}
}  // namespace

TEST_CASE("§8 #10: preDNAT policy sees the header before DNAT", "[scenario]") {
  const std::string deny = gnp("deny",
                               "  order: 20\n  preDNAT: true\n  applyOnForward: true\n"
                               "  ingress: [{action: Deny}]\n");
  auto np = [](int port) {
    return gnp("np",
               "  order: 10\n  preDNAT: true\n  applyOnForward: true\n"
               "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [" +
                   std::to_string(port) + "]}}]\n");
  };
  const trace::Packet nodeport = forward(kRemote, kHostIp, 30080);
  CHECK_VERDICT(build_with_dnat(kH0 + np(30080) + deny), nodeport, ALLOW);
  CHECK_VERDICT(build_with_dnat(kH0 + np(80) + deny), nodeport, DENY);
}

TEST_CASE("§8 #11: applyOnForward policy in forward and normal lists", "[scenario]") {
  const ir::Ruleset rs = build(kH0 + gnp("fwd", R"(  applyOnForward: true
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [22]}}]
)"));
  CHECK_VERDICT(rs, forward(kRemote, "172.16.0.9", 22), ALLOW);
  CHECK_VERDICT(rs, forward(kRemote, "172.16.0.9", 80), DENY);
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(rs, in_eth0(kRemote, 22), ALLOW);
}

TEST_CASE("§8 #12: forward ingress default allow, egress AoF on the other HEP", "[scenario]") {
  const ir::Ruleset rs = build(kH0 + R"(---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h1, labels: {net: b}}
spec: {node: n1, interfaceName: eth1}
)" + gnp("out", R"(  selector: net == 'b'
  applyOnForward: true
  types: [Egress]
  egress: [{action: Allow, protocol: TCP, destination: {ports: [443]}}]
)"));
  CHECK_VERDICT(rs, forward(kRemote, "172.16.0.9", 443), ALLOW);
  CHECK_VERDICT(rs, forward(kRemote, "172.16.0.9", 80), DENY);
}

TEST_CASE("§8 #13: untracked allow skips everything - a miss meets the normal default deny", "[scenario]") {
  const ir::Ruleset rs = build(kH0 + gnp("dnt", R"(  doNotTrack: true
  applyOnForward: true
  ingress: [{action: Allow, protocol: UDP, source: {nets: [10.0.0.0/8]}, destination: {ports: [53]}}]
  egress: [{action: Allow, protocol: UDP, destination: {nets: [10.0.0.0/8]}, source: {ports: [53]}}]
)"));
  const trace::Packet query = in_eth0("10.0.0.99", 53, kUdp);
  const trace::Result result = trace::evaluate(rs, query);
  CHECK(result.untracked);
  CHECK_VERDICT(rs, query, ALLOW);
  CHECK(to_string(reply_verdict(rs, query)) == to_string(ALLOW));
  CHECK_VERDICT(rs, in_eth0(kRemote, 53, kUdp), DENY);
}

TEST_CASE("§8 #14: the * HostEndpoint polices every interface, lo included", "[scenario]") {
  const ir::Ruleset rs = build(kHall);
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(rs, packet("eth1", "", kRemote, kHostIp, kTcp, 80), DENY);
  CHECK_VERDICT(rs, packet("lo", "", "127.0.0.1", "127.0.0.1", kTcp, 8080), DENY);
  CHECK_VERDICT(rs, in_eth0(kRemote, 22), ALLOW);
  CHECK_VERDICT(rs, forward(kRemote, "172.16.0.9", 80), ALLOW);
}

TEST_CASE("§8 #15: doNotTrack is ignored on the * HostEndpoint, with a warning", "[scenario]") {
  const std::string text = R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hall}
spec: {node: n1, interfaceName: "*", profiles: [projectcalico-default-allow]}
)" + gnp("dnt", "  doNotTrack: true\n  applyOnForward: true\n  ingress: [{action: Deny}]\n");
  const ir::Ruleset rs = build(text);
  CHECK(rs.stage(ir::Stage::untracked_in).empty());
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), ALLOW);
  Diagnostics diag;
  map_to_ir(read_yaml(text, diag), n1_options(), diag);
  CHECK_THAT(diag.text(), Catch::Contains("doNotTrack policies are ignored on HostEndpoint 'hall'"));
}

TEST_CASE("§8 #16: binding by expectedIPs - inactive HEP - smallest name wins", "[scenario]") {
  const std::string by_ip = R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hep-ip}
spec: {node: n1, expectedIPs: [IP]}
)";
  auto with_ip = [&](const std::string& ip) {
    std::string text = by_ip;
    text.replace(text.find("IP]"), 2, ip);
    return text;
  };
  CHECK_VERDICT(build(with_ip("10.0.0.10")), in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(build(with_ip("10.9.9.9")), in_eth0(kRemote, 80), NO_VERDICT);
  const ir::Ruleset rs = build(R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hep-b, labels: {role: b}}
spec: {node: n1, interfaceName: eth0}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hep-a, labels: {role: a}}
spec: {node: n1, expectedIPs: [10.0.0.10]}
)" + gnp("a", "  selector: role == 'a'\n  ingress: [{action: Allow}]\n"));
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), ALLOW);
}

TEST_CASE("§8 #17: rule selectors match expectedIPs only", "[scenario]") {
  const std::string policy =
      gnp("from-peer",
          "  selector: has(host)\n  ingress: [{action: Allow, source: {selector: role == 'peer'}}]\n");
  const std::string peer = R"(---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: peer, labels: {role: peer}}
spec: {node: n2, interfaceName: eth0, expectedIPs: [10.0.0.20]}
)";
  const ir::Ruleset rs = build(kH0 + peer + policy);
  CHECK_VERDICT(rs, in_eth0("10.0.0.20", 80), ALLOW);
  CHECK_VERDICT(rs, in_eth0("10.0.0.21", 80), DENY);
  std::string peer_without_ips = peer;
  peer_without_ips.replace(peer_without_ips.find(", expectedIPs: [10.0.0.20]"), 26, "");
  CHECK_VERDICT(build(kH0 + peer_without_ips + policy), in_eth0("10.0.0.20", 80), DENY);
}

TEST_CASE("§8 #18: GlobalNetworkSet nets in rule selectors, never as endpoints", "[scenario]") {
  const std::string text = kH0 + R"(---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: trusted, labels: {role: trusted}}
spec: {nets: [203.0.113.0/24]}
)" + gnp("from-trusted", "  ingress: [{action: Allow, source: {selector: role == 'trusted'}}]\n");
  const ir::Ruleset rs = build(text);
  CHECK_VERDICT(rs, in_eth0("203.0.113.7", 80), ALLOW);
  CHECK_VERDICT(rs, in_eth0(kRemote, 80), DENY);
  const ir::Ruleset second =
      build(text + gnp("deny-trusted", "  selector: role == 'trusted'\n  ingress: [{action: Deny}]\n"));
  CHECK_VERDICT(second, in_eth0("203.0.113.7", 80), ALLOW);
}

TEST_CASE("§8 #19: notSelector against a negated selector", "[scenario]") {
  const std::string base = kH0 + R"(---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: bl, labels: {blocked: "1"}}
spec: {nets: [198.51.100.0/24]}
)";
  const ir::Ruleset a =
      build(base + gnp("a", "  ingress: [{action: Allow, source: {notSelector: has(blocked)}}]\n"));
  CHECK_VERDICT(a, in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(a, in_eth0("8.8.8.8", 80), ALLOW);
  const ir::Ruleset b =
      build(base + gnp("b", "  ingress: [{action: Allow, source: {selector: '!has(blocked)'}}]\n"));
  CHECK_VERDICT(b, in_eth0(kRemote, 80), DENY);
  CHECK_VERDICT(b, in_eth0("8.8.8.8", 80), DENY);
}

TEST_CASE("§8 #20: family filtering, ports and notPorts, named ports", "[scenario]") {
  const ir::Ruleset a = build(kH0 + gnp("a", "  ingress: [{action: Allow, source: {nets: [10.0.0.0/8]}}]\n"));
  CHECK_VERDICT(a, in_eth0("2001:db8::5", 80, kTcp, "2001:db8::10"), DENY);
  CHECK_VERDICT(a, in_eth0("10.1.2.3", 80), ALLOW);
  // Negated networks of one family restrict the rule too (Felix's filterNets): IPv6 meets no such rule.
  const ir::Ruleset not_lan =
      build(kH0 + gnp("a", "  ingress: [{action: Allow, source: {notNets: [192.168.0.0/16]}}]\n"));
  CHECK_VERDICT(not_lan, in_eth0("2001:db8::5", 80, kTcp, "2001:db8::10"), DENY);
  CHECK_VERDICT(not_lan, in_eth0("10.1.2.3", 80), ALLOW);
  CHECK_VERDICT(not_lan, in_eth0("192.168.1.3", 80), DENY);
  const ir::Ruleset deny_not_lan = build(kH0 + gnp("a", R"(  ingress:
  - {action: Deny, destination: {notNets: [192.168.0.0/16]}}
  - {action: Allow}
)"));
  CHECK_VERDICT(deny_not_lan, in_eth0("2001:db8::5", 80, kTcp, "2001:db8::10"), ALLOW);
  CHECK_VERDICT(deny_not_lan, in_eth0(kRemote, 80), DENY);

  const ir::Ruleset b = build(kH0 + gnp("b", R"(  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80, "8000:8090"], notPorts: [8081]}
)"));
  CHECK_VERDICT(b, in_eth0(kRemote, 8080), ALLOW);
  CHECK_VERDICT(b, in_eth0(kRemote, 8081), DENY);
  CHECK_VERDICT(b, in_eth0(kRemote, 80, kUdp), DENY);

  const ir::Ruleset c = build(kH0 + "  ports: [{name: web, protocol: TCP, port: 8443}]\n" +
                              gnp("c", "  ingress: [{action: Allow, destination: {ports: [web]}}]\n"));
  CHECK_VERDICT(c, in_eth0(kRemote, 8443), ALLOW);
  CHECK_VERDICT(c, in_eth0(kRemote, 8443, kUdp), DENY);
}

TEST_CASE("§8 #21: failsafe net is the source - [] disables", "[scenario]") {
  const std::string fc = R"(---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
)";
  const ir::Ruleset rs =
      build(kH0 + fc + "  failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 10.0.0.0/8}]\n");
  CHECK_VERDICT(rs, in_eth0(kRemote, 22), DENY);
  CHECK_VERDICT(rs, in_eth0("10.1.1.1", 22), ALLOW);
  const ir::Ruleset none = build(kH0 + fc + "  failsafeInboundHostPorts: []\n");
  CHECK_VERDICT(none, in_eth0(kRemote, 22), DENY);
  CHECK_VERDICT(none, in_eth0("10.1.1.1", 22), DENY);
}

TEST_CASE("failsafe entries with net \"\" apply to IPv4 and IPv6, like entries without net", "[scenario]") {
  // Felix's felixconfigprocessor.go writes an entry with an empty net as "tcp:22": no source network.
  const ir::Ruleset rs = build(kH0 + R"(---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: ""}]
  failsafeOutboundHostPorts: [{protocol: TCP, port: 2379, net: ""}]
)");
  CHECK_VERDICT(rs, in_eth0("2001:db8::7", 22, kTcp, "2001:db8::10"), ALLOW);
  CHECK_VERDICT(rs, in_eth0(kRemote, 22), ALLOW);
  CHECK_VERDICT(rs, in_eth0("2001:db8::7", 80, kTcp, "2001:db8::10"), DENY);
  CHECK_VERDICT(rs, packet("", "eth0", "2001:db8::10", "2001:db8::7", kTcp, 2379), ALLOW);
  CHECK_VERDICT(rs, out_eth0(kRemote, 2379), ALLOW);
  REQUIRE(rs.failsafe.inbound.size() == 1);
  CHECK_FALSE(rs.failsafe.inbound[0].net);
  REQUIRE(rs.failsafe.outbound.size() == 1);
  CHECK_FALSE(rs.failsafe.outbound[0].net);
}

TEST_CASE("wireguardEnabled: Felix accepts WireGuard's UDP port to and from the host before any policy",
          "[scenario]") {
  const std::string fc =
      "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: "
      "{name: default}\nspec:\n";
  const std::string v6_host = "2001:db8::10", v6_remote = "2001:db8::7";
  const ir::Ruleset off = build(kH0 + fc + "  wireguardEnabled: false\n");
  CHECK_VERDICT(off, in_eth0(kRemote, 51820, kUdp), DENY);
  CHECK_VERDICT(off, out_eth0(kRemote, 51820, kUdp), DENY);
  const ir::Ruleset on = build(kH0 + fc + "  wireguardEnabled: true\n");
  CHECK_VERDICT(on, in_eth0(kRemote, 51820, kUdp), ALLOW);
  CHECK_VERDICT(on, out_eth0(kRemote, 51820, kUdp), ALLOW);
  CHECK_VERDICT(on, in_eth0(kRemote, 51820, kTcp), DENY);
  CHECK_VERDICT(on, in_eth0(v6_remote, 51820, kUdp, v6_host), DENY);  // IPv6 is wireguardEnabledV6's
  // To a workload, Felix's filter OUTPUT returns first: no verdict, as without WireGuard.
  CHECK_VERDICT(on, packet("", "cali0a1b", kHostIp, "10.244.0.5", kUdp, 51820), NO_VERDICT);
  // From a pod too, before defaultEndpointToHostAction (Felix accepts them before cali-wl-to-host).
  const ir::Ruleset pods =
      build(kH0 + fc + "  wireguardEnabled: true\n  defaultEndpointToHostAction: Drop\n");
  CHECK_VERDICT(pods, packet("cali0a1b", "", "10.244.0.5", kHostIp, kUdp, 51820), ALLOW);
  CHECK_VERDICT(pods, packet("cali0a1b", "", "10.244.0.5", kHostIp, kUdp, 51821), DENY);
  // Before any HostEndpoint's policy, and with none at all.
  CHECK_VERDICT(build(fc + "  wireguardEnabled: true\n"), in_eth0(kRemote, 51820, kUdp), ALLOW);
  const ir::Ruleset v6 = build(kH0 + fc + "  wireguardEnabledV6: true\n  wireguardListeningPortV6: 51900\n");
  CHECK_VERDICT(v6, in_eth0(v6_remote, 51900, kUdp, v6_host), ALLOW);
  CHECK_VERDICT(v6, packet("", "eth0", v6_host, v6_remote, kUdp, 51900), ALLOW);
  CHECK_VERDICT(v6, in_eth0(kRemote, 51900, kUdp), DENY);
  CHECK_VERDICT(v6, in_eth0(kRemote, 51820, kUdp), DENY);
  // calico-node's environment, in Felix's string syntax; its port as Go writes an int.
  const std::string daemonset = R"(---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: calico-node, namespace: kube-system}
spec:
  template:
    spec:
      containers:
      - name: calico-node
        env:
        - {name: FELIX_WIREGUARDENABLED, value: "true"}
        - {name: FELIX_WIREGUARDLISTENINGPORT, value: "0xca6d"}
)";
  const ir::Ruleset env = build(kH0 + daemonset);
  CHECK_VERDICT(env, in_eth0(kRemote, 51821, kUdp), ALLOW);
  CHECK_VERDICT(env, in_eth0(kRemote, 51820, kUdp), DENY);
}

namespace {
// The tutorial's cluster as control1 sees it (spec §8 #22-#25), read from fixtures/calico/home-cluster.
ir::Ruleset tutorial() {
  LoadRequest request;
  request.sources = {std::string(FWE_CALICO_FIXTURES) + "/home-cluster"};
  request.node = "control1.kryukov.local";
  request.interface_addresses = std::map<std::string, std::vector<ir::IpAddr>>{
      {"ens160", {*ir::parse_ip("192.168.218.171")}}, {"lo", {*ir::parse_ip("127.0.0.1")}}};
  Diagnostics diag;
  ir::Ruleset rs = load(request, diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  passes::run_all(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  return rs;
}
trace::Packet to_control1(const std::string& src, const std::string& dst, std::uint16_t dport) {
  return packet("ens160", "", src, dst, kTcp, dport);
}
}  // namespace

TEST_CASE("§8 #22-#25: the tutorial's cluster on control1", "[scenario][tutorial]") {
  const ir::Ruleset rs = tutorial();
  const std::string control1 = "192.168.218.171";
  // #22: a NodePort from outside the cluster is closed (default-rules, Deny in preDNAT).
  CHECK_VERDICT(rs, to_control1("192.168.218.50", control1, 31000), DENY);
  // #23: from a cluster host (selector -> expectedIPs) and from the pod network it is open.
  CHECK_VERDICT(rs, to_control1("192.168.218.174", control1, 31000), ALLOW);
  CHECK_VERDICT(rs, to_control1("10.233.70.5", control1, 31000), ALLOW);
  // #24: the VIP's 443 (allow-rules), not its 8080; failsafe 22 and 6443, not 5473.
  CHECK_VERDICT(rs, to_control1("192.168.218.50", "192.168.218.180", 443), ALLOW);
  CHECK_VERDICT(rs, to_control1("192.168.218.50", "192.168.218.180", 8080), DENY);
  CHECK_VERDICT(rs, to_control1("192.168.218.50", control1, 22), ALLOW);
  CHECK_VERDICT(rs, to_control1("192.168.218.50", control1, 5473), DENY);
  CHECK_VERDICT(rs, to_control1("192.168.218.50", control1, 6443), ALLOW);
  // #25: outbound with its reply; kubelet from a node vs from outside.
  const trace::Packet outbound = packet("", "ens160", control1, "1.1.1.1", kTcp, 443);
  CHECK_VERDICT(rs, outbound, ALLOW);
  CHECK(to_string(reply_verdict(rs, outbound)) == to_string(ALLOW));
  CHECK_VERDICT(rs, to_control1("192.168.218.175", control1, 10250), ALLOW);
  CHECK_VERDICT(rs, to_control1("192.168.218.60", control1, 10250), DENY);
}

TEST_CASE("the NodePort case: the tutorial plus Calico's allow-nodeport recipe", "[scenario][tutorial]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("fwe-calico-nodeport-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "40-allow-nodeport.yaml") << R"(apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-nodeport
spec:
  order: 10
  preDNAT: true
  applyOnForward: true
  selector: node-endpoint == 'home'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      selector: node-endpoint == 'home'
      ports: [31852]
)";
  LoadRequest request;
  request.sources = {std::string(FWE_CALICO_FIXTURES) + "/home-cluster",
                     (dir / "40-allow-nodeport.yaml").string()};
  request.node = "control1.kryukov.local";
  request.interface_addresses =
      std::map<std::string, std::vector<ir::IpAddr>>{{"ens160", {*ir::parse_ip("192.168.218.171")}}};
  Diagnostics diag;
  ir::Ruleset rs = load(request, diag);
  std::filesystem::remove_all(dir);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  add_native_dnat(rs, "192.168.218.171", 31852, "10.233.70.9", 8080);
  add_native_dnat(rs, "192.168.218.171", 31000, "10.233.70.10", 8080);
  passes::run_all(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  auto nodeport = [](const std::string& src, std::uint16_t port) {
    return packet("ens160", "cali0a1b2c3", src, "192.168.218.171", kTcp, port);
  };
  CHECK_VERDICT(rs, nodeport("203.0.113.9", 31852), ALLOW);      // the allowed NodePort is open
  CHECK_VERDICT(rs, nodeport("203.0.113.9", 31000), DENY);       // other NodePorts are closed from outside
  CHECK_VERDICT(rs, nodeport("192.168.218.176", 31000), ALLOW);  // open from cluster hosts
  CHECK_VERDICT(rs, nodeport("10.233.12.7", 31000), ALLOW);      // and from the pod network
  const trace::Result result = trace::evaluate(rs, nodeport("203.0.113.9", 31852));
  REQUIRE_FALSE(result.stages.empty());
  CHECK(result.stages.front().stage == ir::Stage::prednat);
  REQUIRE_FALSE(result.stages.front().steps.empty());
  const trace::Step& decided = result.stages.front().steps.back();
  REQUIRE(decided.rule);
  CHECK(decided.rule->origin.policy == "GlobalNetworkPolicy allow-nodeport");
}

TEST_CASE("the tutorial's HostEndpoints on another node name police nothing (#8109 (c))",
          "[scenario][tutorial]") {
  LoadRequest request;
  request.sources = {std::string(FWE_CALICO_FIXTURES) + "/home-cluster"};
  request.node = "control1";
  request.interface_addresses.emplace();
  Diagnostics diag;
  ir::Ruleset rs = load(request, diag);
  CHECK_THAT(diag.text(), Catch::Contains("no HostEndpoint has spec.node 'control1'"));
  passes::run_all(rs, diag);
  CHECK_VERDICT(rs, to_control1("192.168.218.50", "192.168.218.171", 31000), NO_VERDICT);
}

}  // namespace fwe::calico::test
