// felix_parity_test.cpp - Felix v3.32.1 behaviours the frontend once got wrong: ipv6Support, Profile
// rules on host endpoints, rule serviceAccounts, nftablesMode's deny action, logPrefix placeholders.
#include <catch2/catch.hpp>

#include "etcd.hpp"
#include "test_support.hpp"

namespace fwe::calico::test {
namespace {

std::string doc(const std::string& kind, const std::string& name, const std::string& spec) {
  return "---\napiVersion: projectcalico.org/v3\nkind: " + kind + "\nmetadata: {name: " + name +
         "}\nspec:\n" + spec;
}
std::string gnp(const std::string& name, const std::string& spec) {
  return doc("GlobalNetworkPolicy", name, spec);
}
std::string felix(const std::string& name, const std::string& spec) {
  return doc("FelixConfiguration", name, spec);
}
std::string profile(const std::string& name, const std::string& spec) {
  return doc("Profile", name, spec);
}

// h0 on eth0 (10.0.0.10, node n1) with these labels and named ports, both in YAML's flow style.
std::string h0_with_ports(const std::string& labels, const std::string& ports) {
  return "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h0, labels: " + labels +
         "}\nspec:\n  node: n1\n  interfaceName: eth0\n  expectedIPs: [10.0.0.10]\n  ports: " + ports + "\n";
}

// h0 on eth0 (both families), h1 on eth1, both labelled role: node.
const std::string kHosts = R"(
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h0, labels: {role: node}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [10.0.0.10, "2001:db8::10"]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h1, labels: {role: node}}
spec: {node: n1, interfaceName: eth1, expectedIPs: [172.16.0.1]}
)";

// A default deny in every stage Calico produces: untracked (port 9999), preDNAT (9998), normal.
const std::string kDenyEverywhere =
    gnp("deny-all",
        "  selector: role == 'node'\n  types: [Ingress, Egress]\n  applyOnForward: true\n"
        "  ingress: [{action: Deny}]\n  egress: [{action: Deny}]\n") +
    gnp("dnt",
        "  selector: role == 'node'\n  doNotTrack: true\n  applyOnForward: true\n  types: [Ingress, Egress]\n"
        "  ingress: [{action: Deny, protocol: TCP, destination: {ports: [9999]}}]\n"
        "  egress: [{action: Deny, protocol: TCP, destination: {ports: [9999]}}]\n") +
    gnp("pre",
        "  selector: role == 'node'\n  preDNAT: true\n  applyOnForward: true\n"
        "  ingress: [{action: Deny, protocol: TCP, destination: {ports: [9998]}}]\n");

Model read_ok(const std::string& text, Diagnostics& diag) {
  Model model = read_yaml(text, diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  return model;
}

const ir::Chain& chain(const ir::Ruleset& rs, const std::string& name) {
  const ir::Chain* c = rs.find_chain(name);
  REQUIRE(c);
  return *c;
}

}  // namespace

// ---- 1. ipv6Support: false -------------------------------------------------------------------------

TEST_CASE("ipv6Support false leaves IPv6 to the host in every stage", "[felix-parity]") {
  const ir::Ruleset rs = build(kHosts + kDenyEverywhere + felix("default", "  ipv6Support: false\n"));
  // input, untracked-in (9999), prednat (9998), forward, output, untracked-out (9999)
  CHECK(verdict(rs, packet("eth0", "", "2001:db8::99", "2001:db8::10", 6, 8080)) == Verdict::no_verdict);
  CHECK(verdict(rs, packet("eth0", "", "2001:db8::99", "2001:db8::10", 6, 9999)) == Verdict::no_verdict);
  CHECK(verdict(rs, packet("eth0", "", "2001:db8::99", "2001:db8::10", 6, 9998)) == Verdict::no_verdict);
  CHECK(verdict(rs, packet("eth0", "eth1", "2001:db8::99", "2001:db8:1::5", 6, 8080)) == Verdict::no_verdict);
  CHECK(verdict(rs, packet("", "eth0", "2001:db8::10", "2001:db8::99", 6, 8080)) == Verdict::no_verdict);
  CHECK(verdict(rs, packet("", "eth0", "2001:db8::10", "2001:db8::99", 6, 9999)) == Verdict::no_verdict);
  // Neighbour solicitation, and an invalid IPv6 packet (no conntrack prelude either).
  trace::Packet ns = packet("eth0", "", "fe80::1", "ff02::1:ff00:10", 58, 0);
  ns.icmp_type = 135;
  CHECK(verdict(rs, ns) == Verdict::no_verdict);
  CHECK(verdict(rs, packet("eth0", "", "2001:db8::99", "2001:db8::10", 6, 8080, ir::CtState::invalid)) ==
        Verdict::no_verdict);
  // IPv4 is policed as before, in every stage.
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 8080)) == Verdict::deny);
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 9999)) == Verdict::deny);
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 9998)) == Verdict::deny);
  CHECK(verdict(rs, packet("eth0", "eth1", "10.0.0.99", "172.16.0.5", 6, 8080)) == Verdict::deny);
  CHECK(verdict(rs, packet("", "eth0", "10.0.0.10", "10.0.0.99", 6, 8080)) == Verdict::deny);
  CHECK(verdict(rs, packet("", "eth0", "10.0.0.10", "10.0.0.99", 6, 9999)) == Verdict::deny);
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 22)) == Verdict::allow);  // failsafe
}

TEST_CASE("ipv6Support absent or true polices IPv6 and node config overrides default", "[felix-parity]") {
  for (const std::string& config :
       {std::string(), felix("default", "  ipv6Support: true\n"),
        felix("default", "  ipv6Support: false\n") + felix("node.n1", "  ipv6Support: true\n")}) {
    const ir::Ruleset rs = build(kHosts + kDenyEverywhere + config);
    CHECK(verdict(rs, packet("eth0", "", "2001:db8::99", "2001:db8::10", 6, 8080)) == Verdict::deny);
    CHECK(verdict(rs, packet("eth0", "", "2001:db8::99", "2001:db8::10", 6, 22)) == Verdict::allow);
    CHECK(rs.find_set("calico:ipv4") == nullptr);
  }
  const ir::Ruleset off = build(kHosts + kDenyEverywhere + felix("node.n1", "  ipv6Support: false\n"));
  CHECK(verdict(off, packet("eth0", "", "2001:db8::99", "2001:db8::10", 6, 8080)) == Verdict::no_verdict);
}

// ---- 2. Profiles on host endpoints -----------------------------------------------------------------

namespace {
const std::string kProfiledHost = R"(
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h0, labels: {role: node}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [10.0.0.10], profiles: [open-web]}
)";
const std::string kOpenWeb =
    profile("open-web",
            "  ingress:\n  - {action: Deny, protocol: TCP, source: {nets: [10.9.0.0/16]}}\n"
            "  - {action: Allow, protocol: TCP, destination: {ports: [80, 443]}}\n"
            "  egress: [{action: Allow}]\n");
}  // namespace

TEST_CASE("a defined Profile's rules decide for a host endpoint", "[felix-parity]") {
  Diagnostics diag;
  read_ok(kProfiledHost + kOpenWeb, diag);
  CHECK(diag.text().find("skipped") == std::string::npos);
  const ir::Ruleset rs = build(kProfiledHost + kOpenWeb);
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 80)) == Verdict::allow);
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 443)) == Verdict::allow);
  CHECK(verdict(rs, packet("eth0", "", "10.9.1.1", "10.0.0.10", 6, 80)) == Verdict::deny);
  // No rule of the profile matched: Felix's "drop if no profiles matched".
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 8080)) == Verdict::deny);
  CHECK(verdict(rs, packet("", "eth0", "10.0.0.10", "10.0.0.99", 6, 8080)) == Verdict::allow);
  CHECK(chain(rs, "profile/open-web/ingress").origin.policy == "Profile open-web");
}

TEST_CASE("profiles come after the tiers and only when no tier decided", "[felix-parity]") {
  // A policy that applies ends its tier with a deny: the profile is not reached.
  const ir::Ruleset denied =
      build(kProfiledHost + kOpenWeb +
            gnp("p", "  selector: all()\n  ingress: [{action: Allow, protocol: UDP}]\n"));
  CHECK(verdict(denied, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 80)) == Verdict::deny);
  CHECK(verdict(denied, packet("eth0", "", "10.0.0.99", "10.0.0.10", 17, 53)) == Verdict::allow);
  // A Pass leaves the tiers: the profile decides.
  const ir::Ruleset passed =
      build(kProfiledHost + kOpenWeb + gnp("p", "  selector: all()\n  ingress: [{action: Pass}]\n"));
  CHECK(verdict(passed, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 80)) == Verdict::allow);
  CHECK(verdict(passed, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 8080)) == Verdict::deny);
  // Egress has no policy: the profile's egress rules decide it.
  CHECK(verdict(passed, packet("", "eth0", "10.0.0.10", "10.0.0.99", 6, 8080)) == Verdict::allow);
}

TEST_CASE("profiles in order: Pass and no match go on to the next profile", "[felix-parity]") {
  const std::string host = R"(
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h0}
spec: {node: n1, interfaceName: eth0, expectedIPs: [10.0.0.10], profiles: [first, second, projectcalico-default-allow]}
)";
  const ir::Ruleset rs =
      build(host +
            profile("first",
                    "  ingress:\n  - {action: Pass, protocol: TCP, destination: {ports: [80]}}\n"
                    "  - {action: Deny, protocol: TCP, destination: {ports: [81]}}\n") +
            profile("second", "  ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]\n"));
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 80)) == Verdict::deny);   // second
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 81)) == Verdict::deny);   // first
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 82)) == Verdict::allow);  // default-allow
}

TEST_CASE("a host endpoint inherits its profiles' labelsToApply for names its own labels do not set",
          "[felix-parity]") {
  const std::string host = R"(
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h0, labels: {role: web}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [10.0.0.10], profiles: [first, second, projectcalico-default-allow]}
)";
  const std::string profiles = profile("first", "  labelsToApply: {role: db, env: prod}\n") +
                               profile("second", "  labelsToApply: {env: dev, zone: a}\n");
  // Own label first (role: web), then the first profile (env: prod), then the next (zone: a).
  auto denies_80 = [&](const std::string& selector) {
    const ir::Ruleset rs =
        build(host + profiles +
              gnp("p", "  selector: " + selector +
                           "\n  ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]\n"));
    return verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 80)) == Verdict::deny;
  };
  CHECK(denies_80("role == 'web' && env == 'prod' && zone == 'a'"));
  CHECK_FALSE(denies_80("role == 'db'"));
  CHECK_FALSE(denies_80("env == 'dev'"));
  // Rule selectors see them too: the endpoint's address is in the set of env == 'prod'.
  const ir::Ruleset rs =
      build(host + profiles +
            gnp("p",
                "  selector: all()\n  ingress: [{action: Deny, source: {selector: env == 'prod'}}, "
                "{action: Allow}]\n"));
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.10", "10.0.0.10", 6, 80)) == Verdict::deny);
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 80)) == Verdict::allow);
}

TEST_CASE("an undefined profile still denies and projectcalico-default-allow is built in", "[felix-parity]") {
  const std::string host = R"(
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h0}
spec: {node: n1, interfaceName: eth0, expectedIPs: [10.0.0.10], profiles: [missing]}
)";
  Diagnostics diag;
  Model model = read_ok(host + kOpenWeb, diag);
  map_to_ir(model, n1_options(), diag);
  CHECK(diag.text().find("profile 'missing' of HostEndpoint 'h0' is not defined") != std::string::npos);
  const ir::Ruleset rs = build(host + kOpenWeb);
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 80)) == Verdict::deny);
  // A dump's own projectcalico-default-allow Profile does not change the built-in one.
  const std::string allow_host = R"(
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h0}
spec: {node: n1, interfaceName: eth0, expectedIPs: [10.0.0.10], profiles: [projectcalico-default-allow]}
)";
  const ir::Ruleset allowed =
      build(allow_host + profile("projectcalico-default-allow", "  ingress: [{action: Allow}]\n"));
  CHECK(verdict(allowed, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 8080)) == Verdict::allow);
  CHECK(verdict(allowed, packet("", "eth0", "10.0.0.10", "10.0.0.99", 6, 8080)) == Verdict::allow);
}

TEST_CASE("the etcd source reads profiles keys", "[felix-parity]") {
  const std::string p = "/calico/resources/v3/projectcalico.org/";
  CHECK(etcd::is_policy_key(p + "profiles/open-web", "node1"));
  CHECK_FALSE(etcd::is_policy_key(p + "profiles/ns/open-web", "node1"));
}

// ---- 3. serviceAccounts in rules -------------------------------------------------------------------

namespace {
// h0 is ours; h9 (another node) and the network set are what selectors can pick.
// (kH0 lives in another translation unit: read it at run time, not during static initialisation.)
const std::string kSaOthers = R"(
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h9, labels: {role: db}}
spec: {node: n9, interfaceName: eth0, expectedIPs: [10.0.0.9]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: office, labels: {role: office}}
spec: {nets: [192.168.5.0/24]}
)";

ir::Ruleset sa_policy(const std::string& source) {
  return build(kH0 + kSaOthers +
               gnp("p", "  selector: all()\n  ingress:\n  - action: Allow\n    source: " + source + "\n"));
}

Verdict from(const ir::Ruleset& rs, const std::string& src) {
  return verdict(rs, packet("eth0", "", src, "10.0.0.10", 6, 8080));
}
}  // namespace

TEST_CASE("serviceAccounts without names or selector is no constraint", "[felix-parity]") {
  const ir::Ruleset rs = sa_policy("{serviceAccounts: {}}");
  CHECK(from(rs, "10.0.0.9") == Verdict::allow);
  CHECK(from(rs, "203.0.113.7") == Verdict::allow);  // any source: Calico drops the empty match
  const ir::Ruleset with_selector = sa_policy("{selector: role == 'db', serviceAccounts: {selector: ''}}");
  CHECK(from(with_selector, "10.0.0.9") == Verdict::allow);
  CHECK(from(with_selector, "192.168.5.1") == Verdict::deny);
}

TEST_CASE("a serviceAccounts selector that is not a string is an error, not no constraint",
          "[felix-parity]") {
  for (const char* selector : {"[app == 'x']", "{a: b}"}) {
    INFO(selector);
    Diagnostics diag;
    read_yaml(kH0 + kSaOthers +
                  gnp("p",
                      "  selector: all()\n  ingress:\n  - action: Allow\n    source: {serviceAccounts: "
                      "{selector: " +
                          std::string(selector) + "}}\n"),
              diag);
    CHECK(diag.has_errors());
  }
}

TEST_CASE("serviceAccounts selector all() selects every endpoint", "[felix-parity]") {
  const ir::Ruleset rs = sa_policy("{serviceAccounts: {selector: all()}}");
  CHECK(from(rs, "10.0.0.9") == Verdict::allow);
  CHECK(from(rs, "192.168.5.1") == Verdict::allow);
  CHECK(from(rs, "203.0.113.7") == Verdict::deny);
}

TEST_CASE("serviceAccounts positive selector or names never match hosts or network sets", "[felix-parity]") {
  for (const char* sa :
       {"{serviceAccounts: {selector: role == 'db'}}", "{serviceAccounts: {selector: has(role)}}",
        "{serviceAccounts: {names: [default]}}", "{serviceAccounts: {names: [default], selector: all()}}"}) {
    INFO(sa);
    const ir::Ruleset rs = sa_policy(sa);
    CHECK(from(rs, "10.0.0.9") == Verdict::deny);
    CHECK(from(rs, "192.168.5.1") == Verdict::deny);
  }
}

TEST_CASE("serviceAccounts negative-only selector matches hosts and network sets", "[felix-parity]") {
  const ir::Ruleset rs = sa_policy("{serviceAccounts: {selector: '!has(app)'}}");
  CHECK(from(rs, "10.0.0.9") == Verdict::allow);
  CHECK(from(rs, "192.168.5.1") == Verdict::allow);
  CHECK(from(rs, "203.0.113.7") == Verdict::deny);
  // ANDed with the rule's selector, as Calico joins them.
  const ir::Ruleset both =
      sa_policy("{selector: role == 'office', serviceAccounts: {selector: '!has(app)'}}");
  CHECK(from(both, "10.0.0.9") == Verdict::deny);
  CHECK(from(both, "192.168.5.1") == Verdict::allow);
}

TEST_CASE("a notSelector beside a positive selection drops objects, not their addresses", "[felix-parity]") {
  // h9 is picked by role == 'db' and not labelled blocked; the blocked network set holds its address.
  const std::string others = kSaOthers + R"(---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked, labels: {blocked: "1"}}
spec: {nets: [10.0.0.0/28]}
)";
  auto rs = [&](const std::string& source) {
    return build(kH0 + others +
                 gnp("p", "  selector: all()\n  ingress:\n  - action: Allow\n    source: " + source + "\n"));
  };
  const ir::Ruleset folded = rs("{selector: role == 'db', notSelector: has(blocked)}");
  CHECK(from(folded, "10.0.0.9") == Verdict::allow);
  CHECK(from(folded, "10.0.0.3") == Verdict::deny);
  // The same for namespaceSelector and serviceAccounts, which are positive selections too.
  const ir::Ruleset by_sa = rs("{serviceAccounts: {selector: '!has(app)'}, notSelector: has(blocked)}");
  CHECK(from(by_sa, "10.0.0.9") == Verdict::allow);
  CHECK(from(by_sa, "192.168.5.1") == Verdict::allow);
  CHECK(from(by_sa, "10.0.0.3") == Verdict::deny);
  // Without a positive selection the notSelector stays a match on addresses (§8 #19).
  const ir::Ruleset alone = rs("{notSelector: has(blocked)}");
  CHECK(from(alone, "10.0.0.9") == Verdict::deny);
  CHECK(from(alone, "203.0.113.7") == Verdict::allow);
}

TEST_CASE("named ports are looked up in the objects the folded selection picks", "[felix-parity]") {
  // h0's own port: the set of its (address, port) pairs comes from HostEndpoints the selection picks.
  const std::string blocked_nets = R"(---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked, labels: {blocked: "1"}}
spec: {nets: [10.0.0.0/24]}
)";
  const std::string http = "[{name: http, protocol: TCP, port: 8080}]";
  const std::string rule =
      "  selector: all()\n  ingress:\n  - action: Allow\n    protocol: TCP\n"
      "    destination: {selector: role == 'web', notSelector: has(blocked), ports: [http]}\n";
  const ir::Ruleset rs = build(h0_with_ports("{role: web}", http) + blocked_nets + gnp("p", rule));
  CHECK(verdict(rs, packet("eth0", "", "203.0.113.7", "10.0.0.10", 6, 8080)) == Verdict::allow);
  CHECK(verdict(rs, packet("eth0", "", "203.0.113.7", "10.0.0.10", 6, 8081)) == Verdict::deny);
  const ir::Ruleset none =
      build(h0_with_ports("{role: web, blocked: x}", http) + blocked_nets + gnp("p", rule));
  CHECK(verdict(none, packet("eth0", "", "203.0.113.7", "10.0.0.10", 6, 8080)) == Verdict::deny);
}

// ---- 4. nftablesMode and the deny action -----------------------------------------------------------

TEST_CASE("nftablesMode Enabled takes the deny action from nftablesFilterDenyAction", "[felix-parity]") {
  const std::string policy = gnp("p", "  ingress: [{action: Deny}]\n");
  auto deny_kind = [&](const std::string& config) {
    const ir::Ruleset rs = build(kH0 + policy + felix("default", config));
    return chain(rs, "gnp/p/ingress/normal").rules.at(0).action.kind;
  };
  CHECK(deny_kind("  nftablesMode: Enabled\n  nftablesFilterDenyAction: Reject\n  iptablesFilterDenyAction: "
                  "Drop\n") == ir::ActionKind::reject);
  CHECK(deny_kind("  nftablesMode: Enabled\n  iptablesFilterDenyAction: Reject\n") == ir::ActionKind::drop);
  CHECK(deny_kind("  nftablesMode: Auto\n  nftablesFilterDenyAction: Reject\n") == ir::ActionKind::drop);
  CHECK(deny_kind("  nftablesMode: Disabled\n  iptablesFilterDenyAction: Reject\n") ==
        ir::ActionKind::reject);
  // node.<name> overrides the mode field by field.
  const ir::Ruleset rs = build(kH0 + policy + felix("default", "  nftablesFilterDenyAction: Reject\n") +
                               felix("node.n1", "  nftablesMode: Enabled\n"));
  CHECK(chain(rs, "gnp/p/ingress/normal").rules.at(0).action.kind == ir::ActionKind::reject);
  CHECK(verdict(rs, packet("eth0", "", "10.0.0.99", "10.0.0.10", 6, 8080)) == Verdict::deny);
}

TEST_CASE("nftablesFilterAllowAction and nftablesMangleAllowAction Return are warned", "[felix-parity]") {
  Diagnostics diag;
  read_ok(felix("default", "  nftablesFilterAllowAction: Return\n  nftablesMangleAllowAction: Return\n"),
          diag);
  const auto warnings = formatted(diag, Severity::warning);
  REQUIRE(warnings.size() == 2);
  CHECK(warnings[0].find("nftablesFilterAllowAction: Return is not modelled") != std::string::npos);
  CHECK(warnings[1].find("nftablesMangleAllowAction: Return is not modelled") != std::string::npos);
}

// ---- 5. logPrefix placeholders ---------------------------------------------------------------------

TEST_CASE("logPrefix placeholders expand as Felix's generateLogPrefix", "[felix-parity]") {
  const std::string text = kProfiledHost + felix("default", "  logPrefix: 'x %t|%k|%n|%p|%x|%%t|%'\n") +
                           doc("Tier", "sec", "  order: 10\n") +
                           gnp("audit", "  tier: sec\n  ingress: [{action: Log}, {action: Pass}]\n") +
                           gnp("plain", "  ingress: [{action: Log}, {action: Pass}]\n") +
                           profile("open-web", "  ingress: [{action: Log}]\n");
  const ir::Ruleset rs = build(text);
  CHECK(chain(rs, "gnp/audit/ingress/normal").rules.at(0).action.log_prefix ==
        "x sec|gnp|audit|audit|%x|%sec|%");
  CHECK(chain(rs, "gnp/plain/ingress/normal").rules.at(0).action.log_prefix ==
        "x default|gnp|plain|plain|%x|%default|%");
  CHECK(chain(rs, "profile/open-web/ingress").rules.at(0).action.log_prefix ==
        "x |pro|open-web|open-web|%x|%|%");
  // Without '%' the prefix is kept as written.
  const ir::Ruleset plain =
      build(kH0 + felix("default", "  logPrefix: fw\n") + gnp("p", "  ingress: [{action: Log}]\n"));
  CHECK(chain(plain, "gnp/p/ingress/normal").rules.at(0).action.log_prefix == "fw");
  // An empty one is the default (omitempty; generateLogPrefix falls back to it too).
  const ir::Ruleset empty =
      build(kH0 + felix("default", "  logPrefix: ''\n") + gnp("p", "  ingress: [{action: Log}]\n"));
  CHECK(chain(empty, "gnp/p/ingress/normal").rules.at(0).action.log_prefix == "calico-packet");
}

}  // namespace fwe::calico::test

// ---- 6. HostEndpoints on interfaces Felix never takes for host interfaces ---------------------------

namespace fwe::calico::test {

TEST_CASE("a HostEndpoint on a workload or excluded interface polices nothing", "[felix-parity]") {
  // Felix's endpoint manager skips interfaces matching interfacePrefix and its interface monitor tracks
  // no addresses of interfaceExclude ones: such a HostEndpoint is never activated.
  const std::string pod = R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: pod, labels: {role: node}}
spec:
  node: n1
  interfaceName: cali1234
)";
  auto named = [](const std::string& name, const std::string& iface) {
    return "---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: " + name +
           ", labels: {role: node}}\nspec: {node: n1, interfaceName: " + iface + "}\n";
  };
  const std::string deny = gnp("deny-all", "  selector: role == 'node'\n  ingress: [{action: Deny}]\n");
  MappingOptions options = n1_options();
  for (const char* iface : {"cali1234", "kube-ipvs0", "veth0", "dummy7"}) {
    options.interface_addresses[iface] = {*ir::parse_ip("10.0.0.10")};
  }
  auto in = [](const std::string& iif) { return packet(iif, "", "10.244.0.5", "10.0.0.10", 6, 8080); };

  // Felix's defaults: interfacePrefix cali, interfaceExclude kube-ipvs0.
  const std::string text = pod + named("ipvs", "kube-ipvs0") + named("h1", "eth1") + deny;
  Diagnostics diag;
  Model model = read_ok(text, diag);
  map_to_ir(model, options, diag);
  const std::string out = diag.text();
  INFO(out);
  CHECK_THAT(out, Catch::Contains("test.yaml:6:18: warning: HostEndpoint 'pod' polices nothing: its "
                                  "interfaceName 'cali1234' starts with 'cali', a workload (pod) interface "
                                  "prefix (interfacePrefix), so Felix never activates it (Felix polices pod "
                                  "interfaces with workload endpoints"));
  CHECK_THAT(out, Catch::Contains("warning: HostEndpoint 'ipvs' polices nothing: its interfaceName "
                                  "'kube-ipvs0' is listed in interfaceExclude, so Felix never activates it "
                                  "(Felix ignores excluded interfaces"));
  const ir::Ruleset rs = build(text, options);
  CHECK(to_string(verdict(rs, in("cali1234"))) == "NO-VERDICT");
  CHECK(to_string(verdict(rs, in("kube-ipvs0"))) == "NO-VERDICT");
  CHECK(to_string(verdict(rs, in("eth1"))) == "DENY");

  // Other prefixes and a /regex/ exclusion: cali is then a host interface like any other.
  const std::string custom =
      felix("default", "  interfacePrefix: tap,veth\n  interfaceExclude: /^dummy[0-9]$/\n");
  const std::string text2 =
      pod + custom + named("v", "veth0") + named("d", "dummy7") + named("ipvs", "kube-ipvs0") + deny;
  Diagnostics diag2;
  Model model2 = read_ok(text2, diag2);
  map_to_ir(model2, options, diag2);
  CHECK_THAT(diag2.text(), Catch::Contains("warning: HostEndpoint 'd' polices nothing: its interfaceName "
                                           "'dummy7' matches the interfaceExclude entry /^dummy[0-9]$/"));
  CHECK_THAT(diag2.text(), Catch::Contains("warning: HostEndpoint 'v' polices nothing: its interfaceName "
                                           "'veth0' starts with 'veth'"));
  const ir::Ruleset rs2 = build(text2, options);
  CHECK(to_string(verdict(rs2, in("veth0"))) == "NO-VERDICT");
  CHECK(to_string(verdict(rs2, in("dummy7"))) == "NO-VERDICT");
  CHECK(to_string(verdict(rs2, in("cali1234"))) == "DENY");
  CHECK(to_string(verdict(rs2, in("kube-ipvs0"))) == "DENY");
}

TEST_CASE("FelixConfiguration fields written as empty strings keep Felix's defaults", "[felix-parity]") {
  // Calico's config processor sends "" as unset (configurationprocessor.go).
  const std::string pod = R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: pod, labels: {role: node}}
spec: {node: n1, interfaceName: cali1234}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: ipvs, labels: {role: node}}
spec: {node: n1, interfaceName: kube-ipvs0}
)";
  const std::string text =
      pod +
      felix("default", "  interfacePrefix: ''\n  interfaceExclude: ''\n  iptablesFilterDenyAction: ''\n") +
      gnp("deny-all", "  selector: role == 'node'\n  ingress: [{action: Deny}]\n");
  MappingOptions options = n1_options();
  for (const char* iface : {"cali1234", "kube-ipvs0"}) {
    options.interface_addresses[iface] = {*ir::parse_ip("10.0.0.10")};
  }
  Diagnostics diag;
  Model model = read_ok(text, diag);
  CHECK_FALSE(diag.has_errors());
  const ir::Ruleset rs = build(text, options);
  for (const char* iface : {"cali1234", "kube-ipvs0"}) {
    INFO(iface);
    CHECK(to_string(verdict(rs, packet(iface, "", "10.244.0.5", "10.0.0.10", 6, 8080))) == "NO-VERDICT");
  }
}

TEST_CASE("FelixConfiguration annotations config.projectcalico.org/<Name> override the spec",
          "[felix-parity]") {
  // configurationprocessor.go: the annotation is the setting <Name>, in Felix's string syntax.
  auto config = [](const std::string& annotations, const std::string& spec) {
    return "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\n"
           "  annotations:\n" +
           annotations + "spec:\n" + spec;
  };
  auto ssh = [](const ir::Ruleset& rs, std::uint16_t port = 22) {
    return to_string(verdict(rs, packet("eth0", "", "198.51.100.7", "10.0.0.10", 6, port)));
  };
  CHECK(ssh(build(kH0)) == "ALLOW");  // Felix's built-in failsafe ports
  CHECK(ssh(build(kH0 + config("    config.projectcalico.org/FailsafeInboundHostPorts: none\n", "  {}\n"))) ==
        "DENY");
  const ir::Ruleset moved =
      build(kH0 + config("    config.projectcalico.org/FailsafeInboundHostPorts: 'tcp:2222, udp:68'\n",
                         "  failsafeInboundHostPorts: [{protocol: TCP, port: 22}]\n"));
  CHECK(ssh(moved) == "DENY");
  CHECK(ssh(moved, 2222) == "ALLOW");
  // Another spelling is a key of its own, which Felix matches in any case: alone it is the setting...
  const ir::Ruleset other_case =
      build(kH0 + config("    config.projectcalico.org/failsafeinboundhostports: 'tcp:2222'\n", "  {}\n"));
  CHECK(ssh(other_case) == "DENY");
  CHECK(ssh(other_case, 2222) == "ALLOW");
  // ... beside the spec's field it is either one in Felix: an error.
  Diagnostics twice;
  read_yaml(config("    config.projectcalico.org/failsafeInboundHostPorts: 'tcp:2222'\n",
                   "  failsafeInboundHostPorts: [{protocol: TCP, port: 22}]\n"),
            twice);
  CHECK_THAT(twice.text(),
             Catch::Contains("test.yaml:7:5: error: annotation config.projectcalico.org/"
                             "failsafeInboundHostPorts sets FailsafeInboundHostPorts, which the "
                             "spec sets too, under a name that differs in case"));
  // Two annotations for one field are either one too; an empty one is dropped, so it competes with none.
  Diagnostics two;
  read_yaml(config("    config.projectcalico.org/FailsafeInboundHostPorts: 'tcp:2222'\n"
                   "    config.projectcalico.org/failsafeinboundhostports: 'tcp:22'\n"
                   "    config.projectcalico.org/failsafeInboundHostPorts: ''\n",
                   "  {}\n"),
            two);
  CHECK_THAT(two.text(),
             Catch::Contains("test.yaml:8:5: error: annotation config.projectcalico.org/"
                             "failsafeinboundhostports sets FailsafeInboundHostPorts, which another "
                             "annotation sets too"));
  CHECK(two.error_count() == 1);
  // An empty value under the exact name leaves the field to Felix's default: the built-in ports.
  CHECK(ssh(build(kH0 + config("    config.projectcalico.org/FailsafeInboundHostPorts: ''\n",
                               "  failsafeInboundHostPorts: []\n"))) == "ALLOW");
  const ir::Ruleset reject = build(kH0 +
                                   config("    config.projectcalico.org/IptablesFilterDenyAction: REJECT\n",
                                          "  iptablesFilterDenyAction: Drop\n") +
                                   gnp("p", "  ingress: [{action: Deny}]\n"));
  CHECK(chain(reject, "gnp/p/ingress/normal").rules.at(0).action.kind == ir::ActionKind::reject);
  // Other annotations, and names Felix has but fwengine does not model, are left alone.
  Diagnostics quiet;
  read_ok(kH0 + config("    example.com/owner: ops\n    config.projectcalico.org/RouteRefreshInterval: 10s\n",
                       "  {}\n"),
          quiet);
  CHECK_FALSE(quiet.has_errors());
  Diagnostics diag;
  read_yaml(config("    config.projectcalico.org/Ipv6Support: maybe\n", "  {}\n"), diag);
  CHECK_THAT(diag.text(),
             Catch::Contains("test.yaml:7:43: warning: annotation config.projectcalico.org/Ipv6Support: "
                             "invalid value 'maybe', which Felix replaces with its default"));
  // InterfacePrefix none stops Felix; an exclusion list Felix cannot read is replaced with its default.
  Diagnostics dies;
  read_yaml(config("    config.projectcalico.org/InterfacePrefix: none\n"
                   "    config.projectcalico.org/InterfaceExclude: 'eth0, eth1'\n",
                   "  {}\n"),
            dies);
  CHECK_THAT(dies.text(), Catch::Contains("test.yaml:7:47: error: annotation config.projectcalico.org/"
                                          "InterfacePrefix: invalid value 'none'"));
  CHECK_THAT(dies.text(), Catch::Contains("test.yaml:8:48: warning: interfaceExclude: ' eth1' is neither an "
                                          "interface name nor a /regular expression/, so Felix takes its "
                                          "default, kube-ipvs0"));
  // A bad value on node.<name> is Felix's default there, not the global setting.
  const std::string node_config =
      "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n"
      "  name: node.n1\n  annotations:\n"
      "    config.projectcalico.org/Ipv6Support: maybe\nspec: {}\n";
  const ir::Ruleset v6 = build(kH0 + felix("default", "  ipv6Support: false\n") + node_config);
  CHECK(to_string(verdict(v6, packet("eth0", "", "2001:db8::7", "2001:db8::10", 6, 22))) != "NO-VERDICT");
  // An empty exact-name annotation takes the spec's place and is dropped: another spelling then decides.
  const ir::Ruleset mode = build(kH0 +
                                 config("    config.projectcalico.org/NFTablesMode: ''\n"
                                        "    config.projectcalico.org/nftablesmode: Enabled\n",
                                        "  nftablesMode: Disabled\n  nftablesFilterDenyAction: Reject\n") +
                                 gnp("p", "  ingress: [{action: Deny}]\n"));
  CHECK(chain(mode, "gnp/p/ingress/normal").rules.at(0).action.kind == ir::ActionKind::reject);
}

TEST_CASE("icmp with notICMP comes down to icmp alone, or to no packet, as Felix renders the pair",
          "[felix-parity]") {
  auto echo = [](const std::string& icmp, const std::string& not_icmp, std::uint8_t type, std::uint8_t code,
                 const std::string& felix_spec = "") {
    std::string text = kH0 + gnp("p", "  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp: " + icmp +
                                          "\n    notICMP: " + not_icmp + "\n");
    if (!felix_spec.empty()) text += felix("default", felix_spec);
    trace::Packet p = packet("eth0", "", "198.51.100.7", "10.0.0.10", 1, 0);
    p.icmp_type = type;
    p.icmp_code = code;
    return to_string(verdict(build(text), p));
  };
  CHECK(echo("{type: 8}", "{type: 0}", 8, 0) == "ALLOW");  // another type: the icmp match alone
  CHECK(echo("{type: 8}", "{type: 0}", 0, 0) == "DENY");
  CHECK(echo("{type: 8}", "{type: 8}", 8, 0) == "DENY");  // the same type: no packet
  CHECK(echo("{type: 3, code: 1}", "{type: 3, code: 1}", 3, 1) == "DENY");
  const std::string iptables = "  nftablesMode: Disabled\n";
  CHECK(echo("{type: 3, code: 1}", "{type: 3, code: 3}", 3, 1, iptables) == "ALLOW");
  CHECK(echo("{type: 8}", "{}", 8, 0) == "ALLOW");  // notICMP without type: no constraint
  CHECK(echo("{}", "{type: 8}", 8, 0) == "DENY");   // icmp without type: notICMP alone
  CHECK(echo("{}", "{type: 8}", 13, 0) == "ALLOW");
  // nftables renders notICMP as "type != T' code != C'": both must differ.
  const std::string nft = "  nftablesMode: Enabled\n";
  CHECK(echo("{type: 8, code: 0}", "{type: 0, code: 0}", 8, 0, iptables) == "ALLOW");
  CHECK(echo("{type: 8, code: 0}", "{type: 0, code: 0}", 8, 0, nft) == "DENY");
  CHECK(echo("{type: 8}", "{type: 8, code: 1}", 8, 0, nft) == "DENY");
  CHECK(echo("{type: 8, code: 0}", "{type: 8, code: 1}", 8, 0, iptables) == "ALLOW");
  CHECK(echo("{type: 3, code: 1}", "{type: 3, code: 3}", 3, 1, nft) == "DENY");
  // What reading and mapping an icmp: {type: 8} rule with this notICMP says.
  auto diagnose = [](const std::string& not_icmp, const std::string& felix_spec) {
    std::string text = kH0 + gnp("p",
                                 "  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp: {type: 8}\n"
                                 "    notICMP: " +
                                     not_icmp + "\n");
    if (!felix_spec.empty()) text += felix("default", felix_spec);
    Diagnostics diag;
    Model model = read_ok(text, diag);
    map_to_ir(model, n1_options(), diag);
    return diag.text();
  };
  // A whole type less one code would need a match on the code alone.
  CHECK_THAT(
      diagnose("{type: 8, code: 1}", iptables),
      Catch::Contains("test.yaml:20:14: error: icmp type 8 (any code) with this notICMP needs a match on "
                      "the code alone"));
  // With nftablesMode Auto (Felix's default) the two renderings must agree.
  CHECK_THAT(diagnose("{type: 8, code: 1}", ""),
             Catch::Contains("test.yaml:20:14: error: Felix renders this icmp/notICMP pair differently for "
                             "iptables and for nftables"));
  CHECK_THAT(diagnose("{type: 8}", ""),
             Catch::Contains("test.yaml:20:14: warning: this notICMP excludes every "
                             "packet the rule's icmp takes: the rule matches nothing"));
  // A policy or profile no HostEndpoint here uses is rendered by no Felix here: what a node that uses it
  // would refuse is a warning, said once a rule.
  const std::string pair =
      "  - action: Allow\n    protocol: ICMP\n    icmp: {type: 8}\n    notICMP: {type: 8, code: 1}\n";
  Diagnostics diag;
  Model model =
      read_ok(kH0 + gnp("unused", "  selector: role == 'nowhere'\n  ingress:\n" + pair + pair) +
                  "---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: listed-by-none}\n"
                  "spec:\n  egress:\n" +
                  pair + felix("default", iptables),
              diag);
  map_to_ir(model, n1_options(), diag);
  const auto warnings = formatted(diag, Severity::warning);
  CHECK_FALSE(diag.has_errors());
  REQUIRE(warnings.size() == 3);
  for (const std::string& warning : warnings)
    CHECK_THAT(warning, Catch::Contains("needs a match on the code alone, which fwengine cannot express (no "
                                        "HostEndpoint of this node uses it; where one does, an error)"));
}

TEST_CASE("a named port in notPorts keeps the packets whose address, protocol and port are no target's",
          "[felix-parity]") {
  // Felix: "-m set ! --match-set <named-port set> dst,dst", the set built like a positive one's.
  const std::string h0 = h0_with_ports(
      "{role: web}", "[{name: http, protocol: TCP, port: 8080}, {name: dns, protocol: UDP, port: 53}]");
  auto to = [](const ir::Ruleset& rs, const std::string& dst, std::uint8_t protocol, std::uint16_t port) {
    return to_string(verdict(rs, packet("eth0", "", "203.0.113.7", dst, protocol, port)));
  };
  const ir::Ruleset any = build(h0 + gnp("p",
                                         "  ingress:\n  - action: Allow\n"
                                         "    destination: {notPorts: [http, dns]}\n"));
  CHECK(to(any, "10.0.0.10", 6, 8080) == "DENY");
  CHECK(to(any, "10.0.0.10", 17, 53) == "DENY");
  CHECK(to(any, "10.0.0.10", 6, 8081) == "ALLOW");   // another port
  CHECK(to(any, "10.0.0.10", 17, 8080) == "ALLOW");  // another protocol
  CHECK(to(any, "10.0.0.10", 6, 53) == "ALLOW");
  CHECK(to(any, "10.0.0.99", 6, 8080) == "ALLOW");  // another address
  CHECK(to(any, "10.0.0.10", 1, 0) == "ALLOW");
  // With numbers and a protocol; a Log rule logs each packet once (its matches are disjoint).
  const ir::Ruleset tcp = build(
      h0 + gnp("p",
               "  ingress:\n  - action: Log\n    protocol: TCP\n    destination: {notPorts: [http, 9000]}\n"
               "  - action: Allow\n    protocol: TCP\n    destination: {notPorts: [http, 9000]}\n"));
  CHECK(to(tcp, "10.0.0.10", 6, 8080) == "DENY");
  CHECK(to(tcp, "10.0.0.10", 6, 9000) == "DENY");
  CHECK(to(tcp, "10.0.0.10", 6, 8081) == "ALLOW");
  CHECK(to(tcp, "10.0.0.10", 17, 8081) == "DENY");
  for (const char* dst : {"10.0.0.10", "10.0.0.99"}) {  // missed by its port, by its address
    INFO(dst);
    std::size_t logs = 0;
    for (const trace::StageResult& stage :
         trace::evaluate(tcp, packet("eth0", "", "203.0.113.7", dst, 6, 8081)).stages)
      for (const trace::Step& step : stage.steps)
        logs += step.rule && step.rule->action.kind == ir::ActionKind::log;
    CHECK(logs == 1);
  }
}

TEST_CASE("a named port whose protocol is a number is found only by rules with a protocol",
          "[felix-parity]") {
  // Felix's MatchesModelProtocol: a rule without protocol looks for any protocol, which matches a port
  // whose protocol is a name; 6 (or "6", read as a number) matches only a rule's TCP.
  auto verdict_for = [](const std::string& port_protocol, const std::string& rule_protocol) {
    const std::string h0 = h0_with_ports("{}", "[{name: web, protocol: " + port_protocol + ", port: 8443}]");
    const ir::Ruleset rs = build(h0 + gnp("p", "  selector: all()\n  ingress:\n  - action: Allow\n" +
                                                   rule_protocol + "    destination: {ports: [web]}\n"));
    return to_string(verdict(rs, packet("eth0", "", "203.0.113.7", "10.0.0.10", 6, 8443)));
  };
  CHECK(verdict_for("TCP", "") == "ALLOW");
  CHECK(verdict_for("6", "") == "DENY");
  CHECK(verdict_for("'6'", "") == "DENY");
  CHECK(verdict_for("6", "    protocol: TCP\n") == "ALLOW");
  CHECK(verdict_for("TCP", "    protocol: 6\n") == "ALLOW");
}

}  // namespace fwe::calico::test
