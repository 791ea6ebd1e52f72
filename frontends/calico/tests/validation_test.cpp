// validation_test.cpp - every check of spec calico.md §1.7 (and the HEP/GNS/FelixConfiguration rules):
// bad input gives "file:line:col: error: message (hint)".
#include <algorithm>

#include <catch2/catch.hpp>

#include "test_support.hpp"

namespace fwe::calico::test {
namespace {

// A GlobalNetworkPolicy named p; body lines start at line 6 and are indented by two spaces.
std::string gnp(const std::string& body) {
  return "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\nspec:\n" + body;
}

// A policy with one ingress rule; the rule's first line is line 7, its keys at column 5.
std::string ingress_rule(const std::string& rule) {
  return gnp("  ingress:\n  - " + rule);
}
std::string egress_rule(const std::string& rule) {
  return gnp("  egress:\n  - " + rule);
}

// Reads (and, without read errors, maps) the text; returns every diagnostic as text.
std::string diagnose(const std::string& text) {
  Diagnostics diag;
  Model model = read_yaml(text, diag);
  if (!diag.has_errors()) map_to_ir(model, n1_options(), diag);
  return diag.text();
}

void check_error(const std::string& text, const std::string& expected) {
  const std::string out = diagnose(text);
  INFO("input:\n" << text << "\ndiagnostics:\n" << out);
  CHECK_THAT(out, Catch::Contains(expected));
  // Every error carries a hint saying what to do.
  Diagnostics diag;
  Model model = read_yaml(text, diag);
  for (const Diagnostic& d : diag.all()) {
    if (d.severity == Severity::error) CHECK_FALSE(d.hint.empty());
  }
}

}  // namespace

TEST_CASE("policy flags (§1.7 #1-#4)", "[validation]") {
  check_error(gnp("  doNotTrack: true\n  preDNAT: true\n  applyOnForward: true\n"),
              "test.yaml:7:12: error: PreDNAT and DoNotTrack cannot both be true");
  check_error(gnp("  preDNAT: true\n  applyOnForward: true\n  egress:\n  - action: Allow\n"),
              "test.yaml:9:3: error: preDNAT policy cannot have egress rules");
  check_error(gnp("  preDNAT: true\n  applyOnForward: true\n  types: [Ingress, Egress]\n"),
              "test.yaml:8:10: error: preDNAT policy cannot have Egress in types");
  check_error(gnp("  preDNAT: true\n"),
              "test.yaml:6:12: error: preDNAT policy needs applyOnForward: true (add applyOnForward: true");
  check_error(gnp("  doNotTrack: true\n"),
              "test.yaml:6:15: error: doNotTrack policy needs applyOnForward: true");
}

TEST_CASE("policy types (§1.7 #5)", "[validation]") {
  check_error(gnp("  types: [Ingress, Ingress]\n"), "test.yaml:6:20: error: duplicate policy type 'Ingress'");
  check_error(gnp("  types: [ingress]\n"),
              "test.yaml:6:11: error: unknown policy type 'ingress' (did you mean 'Ingress'? names are "
              "case-sensitive)");
}

TEST_CASE("policy selectors (§1.7 #6)", "[validation]") {
  check_error(gnp("  selector: a == x\n"),
              "test.yaml:6:18: error: invalid selector: expected a quoted string");
  check_error(gnp("  selector: \"a == x\"\n"),
              "test.yaml:6:19: error: invalid selector: expected a quoted string");
  check_error(gnp("  selector: global()\n"),
              "test.yaml:6:13: error: global() is not allowed in a policy selector");
  check_error(gnp("  namespaceSelector: has(\n"), "error: invalid namespaceSelector: expected a label name");
  check_error(gnp("  serviceAccountSelector: a b\n"), "error: invalid serviceAccountSelector");
}

TEST_CASE("selector errors point at the character in the file whatever the scalar style", "[validation]") {
  // Each selector has its error at the third '&' of '&&&' ("expected '&&'").
  const std::string error = ": error: invalid selector: expected '&&'";
  check_error(gnp("  selector: has(a) && b == 'x' &&& c\n"), "test.yaml:6:34" + error);
  check_error(gnp("  selector: 'has(a) && b == ''x'' &&& c'\n"), "test.yaml:6:37" + error);
  check_error(gnp("  selector: \"has(a) && b == \\\"x\\\" &&& c\"\n"), "test.yaml:6:37" + error);
  // \u0061 is one byte from six characters, \t and \\ and \n one from two.
  check_error(gnp("  selector: \"has(\\u0061)\\t&& b == 'x\\\\y\\ny' &&& c\"\n"), "test.yaml:6:47" + error);
  // A double-quoted selector over three lines: each break folds to a space.
  check_error(gnp("  selector: \"has(a) &&\n    b == 'x'\n    &&& c\"\n"), "test.yaml:8:7" + error);
  // Block scalars: the text starts on the next line, after the indentation.
  check_error(gnp("  selector: >-\n    has(a) &&\n    b == 'x' &&& c\n"), "test.yaml:8:16" + error);
  check_error(gnp("  selector: |-\n    has(a) && b == 'x' &&& c\n"), "test.yaml:7:26" + error);
}

TEST_CASE("names, labels and tiers (§1.7 #7)", "[validation]") {
  check_error("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: Bad_Name\n",
              "test.yaml:4:9: error: invalid GlobalNetworkPolicy name 'Bad_Name'");
  check_error(
      "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\n"
      "  labels:\n    bad key: x\n",
      "test.yaml:6:5: error: invalid label key 'bad key'");
  check_error(
      "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\n"
      "  labels:\n    key: -x\n",
      "test.yaml:6:10: error: invalid label value '-x'");
  check_error(gnp("  tier: security\n"),
              "test.yaml:1:1: error: GlobalNetworkPolicy 'p' is in tier 'security', which is not defined");
  check_error("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: Sec\n",
              "test.yaml:4:9: error: invalid Tier name 'Sec'");
  // Calico checks names (not Tier names) as a whole, <=253 characters: no part has 63 as its limit.
  const std::string long_part(70, 'a');
  for (const std::string kind : {"HostEndpoint", "GlobalNetworkPolicy", "GlobalNetworkSet"}) {
    Diagnostics diag;
    read_yaml("apiVersion: projectcalico.org/v3\nkind: " + kind + "\nmetadata:\n  name: " + long_part +
                  (kind == "GlobalNetworkPolicy" ? "" : ".node-" + long_part) + "\nspec: {}\n",
              diag);
    INFO(kind << ": " << diag.text());
    CHECK(diag.text().find("invalid " + kind + " name") == std::string::npos);
  }
  check_error("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: " + long_part + "\n",
              "test.yaml:4:9: error: invalid Tier name '" + long_part + "'");
  check_error("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: " +
                  std::string(254, 'a') + "\n",
              "test.yaml:4:9: error: invalid GlobalNetworkSet name '" + std::string(254, 'a') + "'");
}

TEST_CASE("the default Tier: order 1 000 000 and defaultAction Deny only", "[validation]") {
  const std::string head =
      "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: default\nspec:\n";
  check_error(head + "  order: 100\n", "test.yaml:6:10: error: the default Tier's order must be 1000000");
  check_error(head + "  defaultAction: Pass\n",
              "test.yaml:6:18: error: the default Tier's defaultAction must be Deny");
  check_error(
      "apiVersion: crd.projectcalico.org/v1\nkind: Tier\nmetadata:\n  name: default\nspec:\n"
      "  defaultAction: pass\n",
      "test.yaml:6:18: error: the default Tier's defaultAction must be Deny");
  for (const char* spec : {"  order: 1000000\n  defaultAction: Deny\n", "  order: 1e6\n", "  {}\n"}) {
    Diagnostics diag;
    read_yaml(head + spec, diag);
    INFO(spec << diag.text());
    CHECK_FALSE(diag.has_errors());
  }
}

TEST_CASE("the kube-admin and kube-baseline Tiers: fixed orders and defaultAction Pass", "[validation]") {
  auto tier = [](const std::string& name, const std::string& spec) {
    return "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: " + name + "\nspec:\n" + spec;
  };
  check_error(tier("kube-admin", "  order: 100\n  defaultAction: Pass\n"),
              "test.yaml:6:10: error: the kube-admin Tier's order must be 1000 (write order: 1000");
  check_error(tier("kube-admin", "  order: 1000\n  defaultAction: Deny\n"),
              "test.yaml:7:18: error: the kube-admin Tier's defaultAction must be Pass (write defaultAction: "
              "Pass");
  // Calico defaults a missing order to 1 000 000 and a missing defaultAction to Deny.
  check_error(tier("kube-admin", "  order: 1000\n"),
              "test.yaml:6:3: error: the kube-admin Tier needs defaultAction: Pass");
  check_error(tier("kube-admin", "  defaultAction: Pass\n"),
              "test.yaml:6:3: error: the kube-admin Tier needs order: 1000");
  check_error(tier("kube-baseline", "  order: 1000000\n  defaultAction: Pass\n"),
              "test.yaml:6:10: error: the kube-baseline Tier's order must be 10000000");
  check_error(tier("kube-baseline", "  order: 10000000\n  defaultAction: Deny\n"),
              "test.yaml:7:18: error: the kube-baseline Tier's defaultAction must be Pass");
  check_error(
      "apiVersion: crd.projectcalico.org/v1\nkind: Tier\nmetadata:\n  name: kube-baseline\nspec:\n"
      "  order: 10000000\n  defaultAction: deny\n",
      "test.yaml:7:18: error: the kube-baseline Tier's defaultAction must be Pass");
  for (const std::string& text : {tier("kube-admin", "  order: 1000\n  defaultAction: Pass\n"),
                                  tier("kube-baseline", "  order: 1e7\n  defaultAction: Pass\n"),
                                  tier("kube-admins", "  order: 5\n")}) {
    Diagnostics diag;
    read_yaml(text, diag);
    INFO(text << diag.text());
    CHECK_FALSE(diag.has_errors());
  }
}

TEST_CASE("services and http (§1.7 #8, #21, #23)", "[validation]") {
  check_error(egress_rule("action: Allow\n    http: {methods: [GET]}\n"),
              "test.yaml:8:11: error: http matches are not allowed in egress rules");
  check_error(ingress_rule("action: Deny\n    http: {methods: [GET]}\n"),
              "test.yaml:8:11: error: http matches are only allowed on Allow rules");
  check_error(ingress_rule("action: Allow\n    protocol: UDP\n    http: {methods: [GET]}\n"),
              "error: http matches need protocol TCP");
  check_error(ingress_rule("action: Allow\n    destination:\n      services: {name: web, namespace: x}\n"),
              "test.yaml:9:17: error: services matches select Kubernetes Service endpoints");
}

TEST_CASE("rule action, ipVersion, protocol (§1.7 #9-#11)", "[validation]") {
  check_error(
      ingress_rule("action: allow\n"),
      "test.yaml:7:13: error: unknown action 'allow' (did you mean 'Allow'? names are case-sensitive)");
  check_error(ingress_rule("protocol: TCP\n"), "test.yaml:7:5: error: rule without action");
  check_error(ingress_rule("action: Allow\n    ipVersion: 5\n"),
              "test.yaml:8:16: error: ipVersion must be 4 or 6");
  check_error(ingress_rule("action: Allow\n    protocol: 0\n"),
              "test.yaml:8:15: error: protocol number 0 is out of range");
  check_error(ingress_rule("action: Allow\n    protocol: tcp\n"),
              "test.yaml:8:15: error: unknown protocol 'tcp' (did you mean 'TCP'? names are case-sensitive)");
  check_error(ingress_rule("action: Allow\n    notProtocol: ICMPV6\n"), "error: unknown protocol 'ICMPV6'");
}

TEST_CASE("a quoted protocol number is the number, as Calico's Uint8OrString reads it", "[validation]") {
  SECTION("in a rule") {
    Diagnostics diag;
    Model model = read_yaml(gnp("  ingress:\n  - action: Allow\n    protocol: \"6\"\n    notProtocol: '17'\n"
                                "    destination: {ports: [8080]}\n"),
                            diag);
    INFO(diag.text());
    REQUIRE_FALSE(diag.has_errors());
    REQUIRE(model.policies.size() == 1);
    REQUIRE(model.policies[0].ingress.size() == 1);
    CHECK(model.policies[0].ingress[0].protocol == std::optional<std::uint8_t>(6));
    CHECK(model.policies[0].ingress[0].not_protocol == std::optional<std::uint8_t>(17));
    // The number is then validated as a number: 0 is refused; past 255 it is a (bad) name, as in Calico.
    check_error(ingress_rule("action: Allow\n    protocol: \"0\"\n"),
                "test.yaml:8:15: error: protocol number 0 is out of range");
    check_error(ingress_rule("action: Allow\n    protocol: \"256\"\n"),
                "test.yaml:8:15: error: unknown protocol '256'");
  }
  SECTION("in a HostEndpoint port") {
    Diagnostics diag;
    Model model = read_yaml(kH0 + "  ports: [{name: web, protocol: \"6\", port: 8443}]\n", diag);
    INFO(diag.text());
    REQUIRE_FALSE(diag.has_errors());
    REQUIRE(model.host_endpoints.size() == 1);
    REQUIRE(model.host_endpoints[0].ports.size() == 1);
    CHECK(model.host_endpoints[0].ports[0].protocol == 6);
    check_error(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h\nspec:\n"
        "  node: n1\n  interfaceName: eth0\n  ports:\n  - {name: web, protocol: \"1\", port: 80}\n",
        "test.yaml:9:27: error: protocol 1 has no ports");
  }
  SECTION("traced: the named port and the rule's ports match TCP") {
    const ir::Ruleset rs =
        build(kH0 + "  ports: [{name: web, protocol: \"6\", port: 8443}]\n---\n" +
              gnp("  ingress:\n  - {action: Allow, protocol: \"6\", destination: {ports: [8080, web]}}\n"));
    CHECK(to_string(verdict(rs, packet("eth0", "", "198.51.100.7", "10.0.0.10", 6, 8080))) == "ALLOW");
    CHECK(to_string(verdict(rs, packet("eth0", "", "198.51.100.7", "10.0.0.10", 6, 8443))) == "ALLOW");
    CHECK(to_string(verdict(rs, packet("eth0", "", "198.51.100.7", "10.0.0.10", 17, 8080))) == "DENY");
  }
}

TEST_CASE("ports need a port protocol (§1.7 #12, #13)", "[validation]") {
  check_error(
      ingress_rule("action: Allow\n    destination:\n      ports: [80]\n"),
      "test.yaml:7:5: error: rules with numeric port or port range must set protocol to TCP or UDP or SCTP");
  check_error(ingress_rule("action: Allow\n    source:\n      notPorts: [\"1000:2000\"]\n"),
              "error: rules with numeric port or port range must set protocol");
  check_error(ingress_rule("action: Allow\n    protocol: ICMP\n    destination:\n      ports: [80]\n"),
              "test.yaml:8:15: error: protocol icmp has no ports");
  check_error(ingress_rule("action: Allow\n    protocol: UDPLite\n    destination:\n      ports: [80]\n"),
              "error: protocol udplite has no ports");
  // Named ports alone need no protocol.
  CHECK_THAT(diagnose(ingress_rule("action: Allow\n    destination:\n      ports: [web]\n")),
             !Catch::Contains("error"));
}

TEST_CASE("icmp fields (§1.7 #14-#16)", "[validation]") {
  check_error(ingress_rule("action: Allow\n    protocol: TCP\n    icmp: {type: 8}\n"),
              "test.yaml:9:11: error: icmp is only allowed with protocol ICMP or ICMPv6");
  check_error(ingress_rule("action: Allow\n    protocol: ICMP\n    ipVersion: 6\n"),
              "test.yaml:8:15: error: protocol ICMP requires ipVersion 4");
  check_error(ingress_rule("action: Allow\n    notProtocol: ICMPv6\n    ipVersion: 4\n"),
              "test.yaml:8:18: error: protocol ICMPv6 requires ipVersion 6");
  check_error(ingress_rule("action: Allow\n    protocol: ICMP\n    icmp: {code: 1}\n"),
              "error: ICMP code without type");
  check_error(ingress_rule("action: Allow\n    protocol: ICMP\n    icmp: {type: 255}\n"),
              "test.yaml:9:18: error: ICMP type must be 0-254");
  check_error(ingress_rule("action: Allow\n    protocol: ICMP\n    icmp: {type: 3, code: 256}\n"),
              "error: ICMP code must be 0-255");
}

TEST_CASE("nets (§1.7 #17-#19)", "[validation]") {
  check_error(
      ingress_rule("action: Allow\n    source:\n      nets: [10.0.0.1/24]\n"),
      "test.yaml:9:14: error: CIDR '10.0.0.1/24' has host bits set (write the network address: 10.0.0.0/24)");
  check_error(
      ingress_rule("action: Allow\n    source:\n      nets: [10.0.0.1]\n"),
      "test.yaml:9:14: error: invalid CIDR '10.0.0.1': a bare address is not a network (write 10.0.0.1/32)");
  check_error(ingress_rule("action: Allow\n    source:\n      nets: [bogus]\n"),
              "error: invalid CIDR 'bogus'");
  check_error(ingress_rule("action: Allow\n    source:\n      nets: [10.0.0.0/8]\n    destination:\n"
                           "      notNets: [2001:db8::/32]\n"),
              "test.yaml:7:5: error: rule mixes IPv4 and IPv6 networks");
  check_error(ingress_rule("action: Allow\n    ipVersion: 6\n    source:\n      nets: [10.0.0.0/8]\n"),
              "test.yaml:8:16: error: rule networks are not of ipVersion 6");
  check_error(ingress_rule("action: Allow\n    source:\n      notNets: [0.0.0.0/0]\n"),
              "test.yaml:9:16: error: notNets contains 0.0.0.0/0, which excludes everything");
  check_error(ingress_rule("action: Allow\n    source:\n      notNets: [\"::/0\"]\n"),
              "error: notNets contains ::/0");
}

TEST_CASE("ports (§1.7 #20)", "[validation]") {
  check_error(ingress_rule("action: Allow\n    protocol: TCP\n    destination:\n      ports: [\"90:80\"]\n"),
              "test.yaml:10:15: error: port range '90:80' has min > max");
  check_error(ingress_rule("action: Allow\n    protocol: TCP\n    destination:\n      ports: [0]\n"),
              "test.yaml:10:15: error: port 0 is out of range");
  check_error(ingress_rule("action: Allow\n    protocol: TCP\n    destination:\n      ports: [70000]\n"),
              "error: port 70000 is out of range");
  check_error(ingress_rule("action: Allow\n    protocol: TCP\n    destination:\n      ports: [Web_Port]\n"),
              "test.yaml:10:15: error: invalid named port 'Web_Port'");
  check_error(
      ingress_rule(
          "action: Allow\n    protocol: TCP\n    destination:\n      ports: [a-very-long-port-name]\n"),
      "error: invalid named port 'a-very-long-port-name'");
}

TEST_CASE("global() in entity selectors (§1.7 #22)", "[validation]") {
  check_error(ingress_rule("action: Allow\n    source:\n      selector: global()\n"),
              "test.yaml:9:17: error: global() is only allowed in a rule's namespaceSelector");
  check_error(ingress_rule("action: Allow\n    source:\n      namespaceSelector: global() && has(x)\n"),
              "test.yaml:9:26: error: global() cannot be combined with other expressions");
  CHECK_THAT(diagnose(ingress_rule("action: Allow\n    source:\n      namespaceSelector: global()\n")),
             !Catch::Contains("error"));
  check_error(ingress_rule("action: Allow\n    source:\n      selector: \"a in {'x'\"\n"),
              "test.yaml:9:27: error: invalid selector: expected '}'");
}

TEST_CASE("unknown fields are errors with a did-you-mean hint", "[validation]") {
  check_error(gnp("  selecter: all()\n"),
              "test.yaml:6:3: error: unknown field 'selecter' in GlobalNetworkPolicy spec (did you mean "
              "'selector'?)");
  check_error(ingress_rule("action: Allow\n    destnation: {}\n"),
              "test.yaml:8:5: error: unknown field 'destnation' in a rule (did you mean 'destination'?)");
  check_error(ingress_rule("action: Allow\n    source: {net: [10.0.0.0/8]}\n"),
              "error: unknown field 'net' in a rule's source/destination (did you mean 'nets'?)");
  check_error(
      "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h\nspec:\n  node: n1\n"
      "  interface: eth0\n",
      "test.yaml:7:3: error: unknown field 'interface' in HostEndpoint spec (did you mean 'interfaceName'?)");
  check_error(
      "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n"
      "  failsafeInboundHostPort: []\n",
      "error: unknown field 'failsafeInboundHostPort' in FelixConfiguration spec (did you mean "
      "'failsafeInboundHostPorts'?)");
  check_error(
      "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadta:\n  name: p\n",
      "test.yaml:3:1: error: unknown field 'metadta' in a Calico resource (did you mean 'metadata'?)");
  check_error("apiVersion: projectcalico.org/v3\nkind: HostEndPoint\nmetadata:\n  name: h\n",
              "test.yaml:2:7: error: unknown kind 'HostEndPoint' (did you mean 'HostEndpoint'?)");
  check_error("apiVersion: projectcalico.org/v2\nkind: HostEndpoint\nmetadata:\n  name: h\n",
              "test.yaml:1:13: error: unsupported apiVersion 'projectcalico.org/v2' for HostEndpoint");
}

TEST_CASE("HostEndpoint checks (§1.2)", "[validation]") {
  const std::string head =
      "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h\nspec:\n";
  check_error(head + "  interfaceName: eth0\n", "test.yaml:6:3: error: HostEndpoint 'h' has no spec.node");
  check_error(head + "  node: n1\n",
              "test.yaml:6:3: error: HostEndpoint 'h' has neither interfaceName nor expectedIPs");
  check_error(head + "  node: n1\n  interfaceName: eth0:1\n",
              "test.yaml:7:18: error: invalid interfaceName 'eth0:1'");
  check_error(head + "  node: n1\n  expectedIPs: [10.0.0.0/24]\n",
              "test.yaml:7:17: error: expectedIPs entry '10.0.0.0/24' is not an IP address");
  check_error(
      head + "  node: n1\n  interfaceName: eth0\n  ports:\n  - {name: Web, protocol: TCP, port: 80}\n",
      "test.yaml:9:12: error: invalid port name 'Web'");
  check_error(
      head + "  node: n1\n  interfaceName: eth0\n  ports:\n  - {name: web, protocol: ICMP, port: 80}\n",
      "error: protocol ICMP has no ports");
  check_error(head + "  node: n1\n  interfaceName: eth0\n  ports:\n  - {name: web, protocol: TCP, port: 0}\n",
              "error: HostEndpoint port needs a port number 1-65535");
  check_error(
      "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: H\nspec:\n  node: n1\n"
      "  interfaceName: eth0\n",
      "test.yaml:4:9: error: invalid HostEndpoint name 'H'");
}

TEST_CASE("HostEndpoint spec.node and profiles follow Calico's name rule", "[validation]") {
  const std::string head =
      "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: h\nspec:\n";
  check_error(head + "  node: N1_x\n  interfaceName: eth0\n",
              "test.yaml:6:9: error: invalid spec.node 'N1_x'");
  check_error(head + "  node: n1\n  interfaceName: eth0\n  profiles: [ok.profile, Bad Profile]\n",
              "test.yaml:8:26: error: invalid profile name 'Bad Profile'");
  check_error(head + "  node: n1\n  interfaceName: eth0\n  profiles:\n  - kns.\n",
              "test.yaml:9:5: error: invalid profile name 'kns.'");
  Diagnostics diag;
  read_yaml(
      head +
          "  node: control1.kryukov.local\n  interfaceName: eth0\n"
          "  profiles: [projectcalico-default-allow, kns.default, ksa.default.a-very-long-service-account-"
          "name-that-is-longer-than-sixty-three-characters]\n",
      diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
}

TEST_CASE("GlobalNetworkSet checks (§1.4)", "[validation]") {
  check_error(
      "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels:\n"
      "    projectcalico.org/namespace: x\n",
      "error: GlobalNetworkSet must not have the label projectcalico.org/namespace");
  check_error(
      "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\nspec:\n"
      "  nets: [10.0.0.300/8]\n",
      "test.yaml:6:10: error: invalid network '10.0.0.300/8'");
}

TEST_CASE("FelixConfiguration failsafe entries (§1.5)", "[validation]") {
  const std::string head =
      "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n";
  check_error(head + "  failsafeInboundHostPorts:\n  - {protocol: tcp, port: 22}\n",
              "test.yaml:7:16: error: failsafe protocol must be written TCP");
  check_error(head + "  failsafeInboundHostPorts:\n  - {protocol: SCTP, port: 22}\n",
              "error: failsafe protocol SCTP is refused by Felix's parser");
  check_error(head + "  failsafeInboundHostPorts:\n  - {protocol: TCP}\n",
              "test.yaml:7:5: error: failsafe entry needs a port 0-65535");
  check_error(head + "  failsafeInboundHostPorts:\n  - {port: 22}\n",
              "error: failsafe entry without protocol");
  check_error(head + "  failsafeInboundHostPorts:\n  - {protocol: TCP, port: 22, net: 10.0.0/8}\n",
              "error: failsafe net '10.0.0/8' is not a CIDR");
  check_error(head + "  failsafeOutboundHostPorts:\n  - \"sctp:22\"\n",
              "test.yaml:7:5: error: failsafe entry 'sctp:22': protocol must be tcp or udp");
  check_error(head + "  failsafeOutboundHostPorts:\n  - \"tcp:[fd00::/8:22\"\n",
              "error: failsafe entry 'tcp:[fd00::/8:22'");
  check_error(head + "  iptablesFilterDenyAction: Block\n",
              "error: iptablesFilterDenyAction must be Drop or Reject");
}

TEST_CASE("string failsafe entries are accepted with a warning naming the object form", "[validation]") {
  Diagnostics diag;
  Model model = read_yaml(
      "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n"
      "  failsafeInboundHostPorts: [\"tcp:22\", \"udp:[fd00::/8]:53\", \"8080\"]\n",
      diag);
  REQUIRE_FALSE(diag.has_errors());
  const auto warnings = formatted(diag, Severity::warning);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("Calico's API server would refuse"));
  CHECK_THAT(warnings[0], Catch::Contains("{protocol: TCP, port: 22}"));
  CHECK_THAT(warnings[0], Catch::Contains("{protocol: UDP, port: 53, net: fd00::/8}"));
  REQUIRE(model.felix_configs.size() == 1);
  REQUIRE(model.felix_configs[0].failsafe_inbound);
  const auto& ports = *model.felix_configs[0].failsafe_inbound;
  REQUIRE(ports.size() == 3);
  CHECK(ports[2].protocol == 6);
  CHECK(ports[2].port == 8080);
}

TEST_CASE("a failsafe net with host bits is masked, as Felix's ParseCIDROrIP does", "[validation]") {
  // The API server does not validate net; Felix parses it with net.ParseCIDR, which keeps the network.
  Diagnostics diag;
  Model model = read_yaml(
      "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n"
      "  failsafeInboundHostPorts:\n  - {protocol: TCP, port: 22, net: 10.0.0.1/8}\n"
      "  failsafeOutboundHostPorts: [\"udp:[fd00::1/8]:53\"]\n",
      diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  REQUIRE(model.felix_configs.size() == 1);
  const auto& inbound = *model.felix_configs[0].failsafe_inbound;
  REQUIRE(inbound.size() == 1);
  REQUIRE(inbound[0].net);
  CHECK(ir::to_string(*inbound[0].net) == "10.0.0.0/8");
  const auto& outbound = *model.felix_configs[0].failsafe_outbound;
  REQUIRE(outbound.size() == 1);
  REQUIRE(outbound[0].net);
  CHECK(ir::to_string(*outbound[0].net) == "fd00::/8");
}

TEST_CASE("all errors are reported at once", "[validation]") {
  Diagnostics diag;
  read_yaml(
      ingress_rule("action: Alow\n    protocol: TPC\n    ipVersion: 7\n    source:\n      nets: [1.2.3.4]\n"),
      diag);
  CHECK(diag.error_count() == 4);
}

TEST_CASE("namespaced and unrelated kinds are skipped with one warning each", "[validation]") {
  Diagnostics diag;
  read_yaml(
      "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: np\n  namespace: x\n"
      "spec:\n  selector: all()\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n"
      "  name: pool\nspec:\n  cidr: 10.0.0.0/8\n",
      diag);
  CHECK_FALSE(diag.has_errors());
  const auto warnings = formatted(diag, Severity::warning);
  REQUIRE(warnings.size() == 2);
  CHECK_THAT(warnings[0], Catch::Contains("test.yaml:2:7: warning: NetworkPolicy 'np' skipped: namespaced"));
  CHECK_THAT(warnings[1], Catch::Contains("IPPool 'pool' skipped"));
}

// Every warning of reading and mapping the text for node n1.
std::vector<std::string> map_warnings(const std::string& text) {
  Diagnostics diag;
  Model model = read_yaml(text, diag);
  if (!diag.has_errors()) map_to_ir(model, n1_options(), diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  return formatted(diag, Severity::warning);
}

std::string ip_pool(const std::string& spec) {
  return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: " + spec + "\n---\n";
}
std::string felix_config(const std::string& name, const std::string& spec,
                         const std::string& annotations = "") {
  return "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: " + name +
         (annotations.empty() ? "" : ", annotations: {" + annotations + "}") + "}\nspec: " + spec + "\n---\n";
}
std::size_t count_containing(const std::vector<std::string>& lines, const std::string& part) {
  return static_cast<std::size_t>(std::count_if(
      lines.begin(), lines.end(), [&](const std::string& l) { return l.find(part) != std::string::npos; }));
}

TEST_CASE("FelixConfiguration nodeSelector: where Calico takes it, and a bad one", "[validation]") {
  // Calico 3.32: a config named neither default nor node.<name> is for the nodes its nodeSelector selects.
  check_error(felix_config("edge", "{nodeSelector: \"role == \"}"),
              "test.yaml:4:31: error: invalid nodeSelector: expected a quoted string");
  std::string long_selector = "has(a)";
  while (long_selector.size() <= 1024) long_selector += " || has(a)";
  check_error(felix_config("edge", "{nodeSelector: \"" + long_selector + "\"}"),
              "test.yaml:4:22: error: nodeSelector is longer than Calico's CRD takes (1,024 characters)");
  const std::string ignored =
      diagnose(felix_config("edge", "{nodeSelector: \"\"}") + felix_config("core", "{}"));
  CHECK_THAT(ignored,
             Catch::Contains("test.yaml:3:18: note: FelixConfiguration 'edge' has no nodeSelector and is "
                             "neither 'default' nor 'node.<name>': it applies to no node"));
  CHECK_THAT(ignored, Catch::Contains("test.yaml:8:18: note: FelixConfiguration 'core' has no nodeSelector"));
  const std::string refused = diagnose(felix_config("default", "{nodeSelector: all()}") +
                                       felix_config("node.n1", "{nodeSelector: all()}"));
  CHECK_THAT(refused,
             Catch::Contains("test.yaml:4:22: warning: nodeSelector on FelixConfiguration 'default': "
                             "Calico's API server refuses it here and Felix ignores it (remove it: "
                             "'default' applies to every node)"));
  CHECK_THAT(refused,
             Catch::Contains("test.yaml:9:22: warning: nodeSelector on FelixConfiguration 'node.n1'"));
  CHECK_THAT(refused, !Catch::Contains("error"));
}

TEST_CASE("IPIP and VXLAN turned on are warned: Felix checks their sources before any policy",
          "[validation]") {
  const auto warnings =
      map_warnings(ip_pool("{cidr: 10.244.0.0/16, ipipMode: Never, vxlanMode: CrossSubnet}") +
                   felix_config("default", "{ipipEnabled: true}"));
  REQUIRE(warnings.size() == 3);
  CHECK_THAT(warnings[0], Catch::Contains("IPPool 'pool' skipped"));
  CHECK_THAT(warnings[1],
             Catch::Contains("test.yaml:9:21: warning: FelixConfiguration 'default': ipipEnabled: "
                             "true makes Felix accept IPIP packets"));
  CHECK_THAT(warnings[1], Catch::Contains("and accept those the host sends to Calico hosts"));
  CHECK_THAT(warnings[1],
             Catch::Contains("write policy rules for protocol 4 (IPIP) from and to your nodes'"));
  CHECK_THAT(warnings[2],
             Catch::Contains("test.yaml:4:57: warning: IPPool 'pool': vxlanMode CrossSubnet makes "
                             "Felix accept VXLAN packets only from Calico hosts"));
}

// Felix's EncapsulationCalculator: FelixConfiguration's IpInIpEnabled and VXLANEnabled, when set, decide
// alone; unset (or set to none, nil), the IP pools do. VXLANEnabled says nothing about IPv6 VXLAN.
TEST_CASE("FelixConfiguration turns IPIP and VXLAN off whatever the pools say, but not IPv6 VXLAN",
          "[validation]") {
  const std::string pools = ip_pool("{cidr: 10.244.0.0/16, ipipMode: Always, vxlanMode: Never}") +
                            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool6}\n"
                            "spec: {cidr: 'fd00:244::/64', vxlanMode: Always}\n---\n";
  SECTION("off in the spec") {
    const auto warnings =
        map_warnings(pools + felix_config("default", "{ipipEnabled: false, vxlanEnabled: false}"));
    CHECK(count_containing(warnings, "ipipMode Always makes") == 0);
    CHECK(count_containing(warnings, "IPPool 'pool6': vxlanMode Always makes Felix accept VXLAN") == 1);
    CHECK(count_containing(warnings, "makes Felix accept") == 1);
  }
  SECTION("node.n1 turns on what default turns off") {
    const auto warnings = map_warnings(pools + felix_config("default", "{ipipEnabled: false}") +
                                       felix_config("node.n1", "{ipipEnabled: true}"));
    CHECK(count_containing(warnings,
                           "FelixConfiguration 'node.n1': ipipEnabled: true makes Felix accept IPIP") == 1);
    CHECK(count_containing(warnings, "ipipMode Always makes") == 0);
  }
  SECTION("a node's none leaves it to the pools again") {
    const auto warnings =
        map_warnings(pools + felix_config("default", "{ipipEnabled: false}") +
                     felix_config("node.n1", "{}", "config.projectcalico.org/IpInIpEnabled: none"));
    CHECK(count_containing(warnings, "IPPool 'pool': ipipMode Always makes Felix accept IPIP") == 1);
  }
  SECTION("another node's setting does not count") {
    const auto warnings = map_warnings(pools + felix_config("node.n2", "{ipipEnabled: false}"));
    CHECK(count_containing(warnings, "IPPool 'pool': ipipMode Always makes Felix accept IPIP") == 1);
  }
}

TEST_CASE("The annotations IpInIpEnabled and VXLANEnabled turn IPIP and VXLAN on and off", "[validation]") {
  SECTION("on, without a pool") {
    const auto warnings =
        map_warnings(felix_config("default", "{}", "config.projectcalico.org/VXLANEnabled: 'yes'"));
    REQUIRE(count_containing(warnings, "makes Felix accept") == 1);
    CHECK(count_containing(warnings,
                           "annotation config.projectcalico.org/VXLANEnabled: yes makes Felix accept "
                           "VXLAN packets") == 1);
  }
  SECTION("off, over the spec") {
    const auto warnings = map_warnings(
        felix_config("default", "{ipipEnabled: true}", "config.projectcalico.org/IpInIpEnabled: 'false'"));
    CHECK(count_containing(warnings, "makes Felix accept") == 0);
  }
  SECTION("an invalid value is Felix's default: the pools decide") {
    const auto warnings = map_warnings(
        ip_pool("{cidr: 10.244.0.0/16, ipipMode: CrossSubnet}") +
        felix_config("default", "{ipipEnabled: false}", "config.projectcalico.org/IpInIpEnabled: maybe"));
    CHECK(count_containing(warnings, "invalid value 'maybe', which Felix replaces with its default") == 1);
    CHECK(count_containing(warnings, "IPPool 'pool': ipipMode CrossSubnet makes Felix accept IPIP") == 1);
  }
}

// Felix's rules match VXLAN packets on uint16(VXLANPort): the warning's hint names that port.
TEST_CASE("The VXLAN warning names the port Felix checks: vxlanPort, the node's over the default",
          "[validation]") {
  const std::string vxlan_on = felix_config("default", "{vxlanEnabled: true}");
  auto hint_port = [](const std::vector<std::string>& warnings) {
    REQUIRE(count_containing(warnings, "makes Felix accept VXLAN") == 1);
    for (const auto& warning : warnings) {
      const std::string_view hint = "policy rules for UDP ";
      const auto at = warning.find(hint);
      if (at != std::string::npos) {
        const auto from = at + hint.size();
        return warning.substr(from, warning.find(' ', from) - from);
      }
    }
    return std::string("none");
  };
  CHECK(hint_port(map_warnings(vxlan_on)) == "4789");
  CHECK(hint_port(map_warnings(felix_config("default", "{vxlanEnabled: true, vxlanPort: 8472}"))) == "8472");
  CHECK(hint_port(map_warnings(felix_config("default", "{vxlanEnabled: true, vxlanPort: 70000}"))) == "4464");
  CHECK(hint_port(map_warnings(
            vxlan_on + felix_config("node.n1", "{}", "config.projectcalico.org/VXLANPort: '0x1234'"))) ==
        "4660");
  CHECK(hint_port(map_warnings(vxlan_on + felix_config("node.n2", "{vxlanPort: 8472}"))) == "4789");
  // Go's digit separators, where its ParseInt with base 0 takes them, and not elsewhere.
  for (const auto& [written, port] : std::vector<std::pair<std::string, std::string>>{{"8_472", "8472"},
                                                                                      {"0x_21_18", "8472"},
                                                                                      {"0_20430", "8472"},
                                                                                      {"0b_1", "1"},
                                                                                      {"-0_1", "65535"},
                                                                                      {"_8472", "4789"},
                                                                                      {"8472_", "4789"},
                                                                                      {"84__72", "4789"},
                                                                                      {"0x_", "4789"},
                                                                                      {"8_4_7_2", "8472"}}) {
    INFO(written);
    CHECK(hint_port(map_warnings(
              vxlan_on + felix_config("node.n1", "{}",
                                      "config.projectcalico.org/VXLANPort: '" + written + "'"))) == port);
  }
  const auto invalid = map_warnings(
      vxlan_on + felix_config("node.n1", "{vxlanPort: 8472}", "config.projectcalico.org/VXLANPort: abc"));
  CHECK(count_containing(invalid, "invalid value 'abc', which Felix replaces with its default") == 1);
  CHECK(hint_port(invalid) == "4789");
  check_error(felix_config("default", "{vxlanPort: '8472'}"),
              "test.yaml:4:19: error: vxlanPort must be an integer, not a string");
}

// Felix's iface-list: names separated by commas alone, or Felix refuses to start.
TEST_CASE("An interfacePrefix that is not a list of names, from the spec or an annotation, is an error",
          "[validation]") {
  check_error(felix_config("default", "{interfacePrefix: 'cali, tap'}"),
              "test.yaml:4:25: error: interfacePrefix 'cali, tap' is not a list of interface name prefixes");
  check_error(felix_config("default", "{interfacePrefix: 'cali,sixteen-chars-ab'}"),
              "interfacePrefix 'cali,sixteen-chars-ab' is not a list");
  check_error(felix_config("default", "{interfacePrefix: None}"),
              "test.yaml:4:25: error: interfacePrefix none: Felix refuses to start on it");
  // An annotation of the exact name replaces the spec's value before Felix sees it.
  CHECK(diagnose(felix_config("default", "{interfacePrefix: 'cali, tap'}",
                              "config.projectcalico.org/InterfacePrefix: cali"))
            .find("error") == std::string::npos);
  CHECK(diagnose(felix_config("default", "{interfacePrefix: 'fifteen-chars-a'}")).find("error") ==
        std::string::npos);
  check_error(felix_config("default", "{}", "config.projectcalico.org/InterfacePrefix: 'cali,,tap'"),
              "test.yaml:3:83: error: interfacePrefix 'cali,,tap' is not a list of interface name prefixes");
  CHECK(diagnose(felix_config("default", "{interfacePrefix: 'cali,tap_1,veth-x'}")).find("error") ==
        std::string::npos);
}

}  // namespace fwe::calico::test
