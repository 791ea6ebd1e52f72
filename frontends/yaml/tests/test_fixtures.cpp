// The worked examples in fixtures/yaml load cleanly and mean what their comments say.
#include <catch2/catch.hpp>

#include <filesystem>

#include "reader.hpp"

namespace {

std::vector<std::string> fixture_files() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(FWE_YAML_FIXTURES))
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("every fixture loads without diagnostics", "[fixtures]") {
  auto files = fixture_files();
  REQUIRE(files.size() >= 4);
  for (const auto& file : files) {
    INFO(file);
    fwe::Diagnostics diag;
    fwe::yamlfe::read_policy({file}, diag);
    CHECK(diag.text().empty());
  }
}

TEST_CASE("the example policy is a web server with failsafe SSH", "[fixtures]") {
  using namespace fwe::ir;
  fwe::Diagnostics diag;
  auto ruleset = fwe::yamlfe::read_policy({std::string(FWE_YAML_FIXTURES) + "/example/policy.yaml"}, diag);
  REQUIRE_FALSE(diag.has_errors());
  CHECK(ruleset.frontend == "yaml");
  CHECK(ruleset.files == diag.files());
  REQUIRE(ruleset.failsafe.inbound.size() == 1);
  CHECK(ruleset.failsafe.inbound[0].port == 22);

  const auto& input = ruleset.stage(Stage::input);
  REQUIRE(input.sections.size() == 1);
  REQUIRE(input.sections[0].endpoints.size() == 2);
  const Endpoint& uplink = input.sections[0].endpoints[1];
  CHECK(uplink.name == "uplink");
  CHECK_FALSE(uplink.match.iif);
  CHECK(uplink.conntrack == Conntrack::accept_established_drop_invalid);
  CHECK(uplink.failsafe);
  CHECK(uplink.default_verdict == Verdict::drop);
  REQUIRE(uplink.groups.size() == 1);
  CHECK(uplink.groups[0].chains == std::vector<std::string>{"web-server", "ping", "log-drops"});

  const Rule& https = ruleset.chains.at("web-server").rules.at(1);
  CHECK(https.match.protocols == std::vector<std::uint8_t>{6});
  REQUIRE(https.match.dst_port.size() == 1);
  CHECK(https.match.dst_port[0].ports == PortSet{{80, 80}, {443, 443}});
  CHECK(https.action.kind == ActionKind::accept);
  CHECK(https.origin.policy == "web-server");
  CHECK(https.origin.rule == 1);
  CHECK(https.origin.loc.line == 23);
  CHECK(https.origin.loc.col == 7);
  // The chain's rules share its policy's text, one block for all of them.
  CHECK(https.origin.policy.c_str() == ruleset.chains.at("web-server").origin.policy.c_str());

  const Rule& ping = ruleset.chains.at("ping").rules.at(0);
  REQUIRE(ping.match.icmp);
  CHECK(ping.match.icmp->type == 8);
  CHECK_FALSE(ping.match.icmp->v6);
  CHECK(ping.match.rate_limit == RateLimit{20, "second", 0});
}

TEST_CASE("the NAT example puts NAT in its stages", "[fixtures]") {
  using namespace fwe::ir;
  fwe::Diagnostics diag;
  auto ruleset = fwe::yamlfe::read_policy({std::string(FWE_YAML_FIXTURES) + "/nat/policy.yaml"}, diag);
  REQUIRE_FALSE(diag.has_errors());
  const Rule& forward = ruleset.chains.at("port-forwards").rules.at(0);
  CHECK(forward.action.kind == ActionKind::dnat);
  CHECK(to_string(*forward.action.nat_addr) == "192.168.10.20");
  CHECK(forward.action.nat_port == PortRange{80, 80});
  CHECK(ruleset.stage(Stage::snat).sections.at(0).endpoints.at(0).match.oif == parse_iface("wan0"));
  // One inline address stays in the rule's match: no set of its own.
  const Rule& snat = ruleset.chains.at("to-the-internet").rules.at(0);
  REQUIRE(snat.match.src_addr.size() == 1);
  CHECK(snat.match.src_addr.at(0).in_place());
  CHECK(snat.match.src_addr.at(0).cidr == *parse_cidr("192.168.10.5"));
  CHECK(!ruleset.sets.contains("to-the-internet.0.src"));
}

TEST_CASE("one address written in a rule stays in its match, and an endpoint's is a set", "[fixtures]") {
  fwe::Diagnostics diag;
  fwe::yamlfe::PolicyReader reader(diag);
  reader.read_text(
      "apiVersion: fwengine/v1\nsets:\n  admins: [192.0.2.0/24, 198.51.100.0/24]\nchains:\n  web:\n"
      "    - {src: 10.0.0.0/8, action: accept}\n"
      "    - {src: [2001:db8::/32], dst: \"!192.0.2.1\", action: accept}\n"
      "    - {src: admins, action: accept}\n"
      "    - {src: {all: [admins, 10.1.0.0/16]}, action: accept}\n"
      "stages:\n  input:\n    endpoints: [{src: 10.9.0.0/16, chains: web}]\n",
      "inline.yaml");
  const auto ruleset = reader.finish();
  REQUIRE(diag.text().empty());
  const auto& rules = ruleset.chains.at("web").rules;
  const auto in_place = [](const fwe::ir::AddrMatch& m, const char* cidr, bool negate) {
    return m.in_place() && m.cidr == *fwe::ir::parse_cidr(cidr) && m.negate == negate;
  };
  CHECK(in_place(rules.at(0).match.src_addr.at(0), "10.0.0.0/8", false));
  CHECK(in_place(rules.at(1).match.src_addr.at(0), "2001:db8::/32", false));
  CHECK(in_place(rules.at(1).match.dst_addr.at(0), "192.0.2.1", true));
  CHECK(rules.at(2).match.src_addr.at(0).set_name == "admins");
  REQUIRE(rules.at(3).match.src_addr.size() == 2);
  CHECK(rules.at(3).match.src_addr[0].set_name == "admins");
  CHECK(in_place(rules.at(3).match.src_addr[1], "10.1.0.0/16", false));
  // The rules naming a set share one block of its name.
  CHECK(rules.at(2).match.src_addr[0].set_name.c_str() == rules.at(3).match.src_addr[0].set_name.c_str());
  // Sets: the named one and the endpoint's.
  CHECK(ruleset.sets.size() == 2);
  const auto& endpoint = ruleset.stage(fwe::ir::Stage::input).sections.at(0).endpoints.at(0);
  REQUIRE(endpoint.match.src_set);
  CHECK(ruleset.sets.at(*endpoint.match.src_set).cidrs.size() == 1);
}

TEST_CASE("an address written in a rule is a set whose origin is the rule's", "[fixtures]") {
  fwe::Diagnostics diag;
  fwe::yamlfe::PolicyReader reader(diag);
  reader.read_text(
      "apiVersion: fwengine/v1\nchains:\n  web:\n    - {dport: 22, action: accept}\n"
      "    - {src: [10.0.0.0/8, 192.168.0.0/16], action: accept}\n",
      "inline.yaml");
  const auto ruleset = reader.finish();
  REQUIRE(diag.error_count() == 0);
  const fwe::ir::Rule& rule = ruleset.chains.at("web").rules.at(1);
  REQUIRE(rule.match.src_addr.size() == 1);
  const fwe::ir::AddrSet& set = ruleset.sets.at(rule.match.src_addr[0].set_name);
  CHECK(set.origin.policy == "web");
  CHECK(set.origin.rule == 1);
  CHECK(set.origin.loc.line == 5);
  CHECK(set.origin.loc.col == 13);
  CHECK(set.origin.policy.c_str() == rule.origin.policy.c_str());  // the chain's text, not a copy
}

TEST_CASE("number fields take every integer YAML 1.2 writes (+22, 0x16, 0o26), strings 0x and 0o too",
          "[fixtures]") {
  fwe::Diagnostics diag;
  fwe::yamlfe::PolicyReader reader(diag);
  reader.read_text(
      "apiVersion: fwengine/v1\nchains:\n  c:\n"
      "    - {protocol: +6, dport: +22, action: accept}\n"
      "    - {protocol: [0x11, 0o41], sport: 0x35, dport: [0o26, '+23'], action: accept}\n"
      "    - {protocol: ['0x6', udp], dport: '0x10-0x20', action: accept}\n"
      "    - {icmp: +8, action: accept}\n"
      "    - {icmp: {type: 0x3, code: +1}, action: accept}\n"
      "failsafe:\n  inbound: [{protocol: 0x6, port: 0x16}, '0x11:0o103']\n",
      "numbers.yaml");
  const auto ruleset = reader.finish();
  INFO(diag.text());
  const auto& rules = ruleset.chains.at("c").rules;
  CHECK(rules.at(0).match.protocols == std::vector<std::uint8_t>{6});
  CHECK(rules.at(0).match.dst_port.at(0).ports == fwe::ir::PortSet{{22, 22}});
  CHECK(rules.at(1).match.protocols == std::vector<std::uint8_t>{17, 33});
  CHECK(rules.at(1).match.src_port.at(0).ports == fwe::ir::PortSet{{53, 53}});
  CHECK(rules.at(2).match.protocols == std::vector<std::uint8_t>{6, 17});
  CHECK(rules.at(2).match.dst_port.at(0).ports == fwe::ir::PortSet{{16, 32}});
  CHECK(rules.at(3).match.icmp->type == 8);
  CHECK(rules.at(4).match.icmp->type == 3);
  CHECK(rules.at(4).match.icmp->code == 1);
  REQUIRE(ruleset.failsafe.inbound.size() == 2);
  CHECK(ruleset.failsafe.inbound[0].protocol == 6);
  CHECK(ruleset.failsafe.inbound[0].port == 22);
  CHECK(ruleset.failsafe.inbound[1].protocol == 17);
  CHECK(ruleset.failsafe.inbound[1].port == 67);
  // A quoted '+23' is a string, not YAML's integer: not a port.
  CHECK(diag.text() ==
        "numbers.yaml:5:59: error: dport: '+23' is not a port or port range (write a number such as 443 or a "
        "range "
        "such as 8000-8090; service names are not supported)\n");
}
