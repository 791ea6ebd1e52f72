// writer_test.cpp - `migrate --to calico`: rulesets written as Calico resources and read back by this
// frontend give every packet of a grid the same fate; what Calico cannot say is reported at its origin.
#include <algorithm>

#include <catch2/catch.hpp>

#include "fwengine/passes.hpp"
#include "test_support.hpp"
#include "writer.hpp"

namespace fwe::calico::test {
namespace {

ir::Rule rule(ir::ActionKind action, std::uint32_t line) {
  ir::Rule r;
  r.action.kind = action;
  r.origin = {{1, line, 1}, "rule at line " + std::to_string(line), -1};
  return r;
}

ir::PortMatch ports(std::uint16_t port, bool negate = false) {
  return {negate, {{port, port}}};
}

ir::Endpoint endpoint(const std::string& name, std::optional<std::string> iif,
                      std::vector<std::string> chains, ir::Verdict default_verdict) {
  ir::Endpoint e;
  e.name = name;
  if (iif) e.match.iif = ir::IfacePattern{*iif, false};
  e.conntrack = ir::Conntrack::accept_established_drop_invalid;
  if (!chains.empty()) e.groups.push_back({"", std::move(chains), ir::Verdict::continue_, "", {}});
  e.default_verdict = default_verdict;
  e.origin = {{1, 1, 1}, "endpoint " + name, -1};
  return e;
}

// Rules whose Calico form needs care: ports without a protocol, a negated protocol with ports, negated
// sets of one family, a set of both families, ICMP, an inlined jump, interface matches, families.
ir::Ruleset tricky_ruleset() {
  ir::Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "policy.yaml"};
  rs.sets["both"] = {{*ir::parse_cidr("10.0.0.0/8"), *ir::parse_cidr("2001:db8::/32")}, {}};
  rs.sets["v4-only"] = {{*ir::parse_cidr("192.168.0.0/16")}, {}};
  rs.sets["other"] = {{*ir::parse_cidr("172.16.0.0/12")}, {}};
  ir::Chain main{"main", {}, {{1, 2, 1}, "chain main", -1}};
  auto add = [&](ir::Rule r) { main.rules.push_back(std::move(r)); };
  ir::Rule r = rule(ir::ActionKind::accept, 3);  // iif lo: decided per HostEndpoint
  r.match.iif = std::vector{ir::IfacePattern{"lo", false}};
  add(r);
  r = rule(ir::ActionKind::accept, 4);  // a port without a protocol: TCP, UDP, SCTP and UDPLite
  r.match.dst_port = {ports(22)};
  add(r);
  r = rule(ir::ActionKind::accept, 5);  // every port protocol but UDP
  r.match.protocols = std::vector<std::uint8_t>{17};
  r.match.protocol_negate = true;
  r.match.dst_port = {ports(53)};
  add(r);
  r = rule(ir::ActionKind::accept, 6);  // not from two sets of IPv4 only: every IPv6 source matches
  r.match.protocols = std::vector<std::uint8_t>{6};
  r.match.src_addr = {{true, "v4-only"}, {true, "other"}};
  r.match.dst_port = {ports(8080)};
  add(r);
  r = rule(ir::ActionKind::drop, 7);  // a set of both families, and a port excluded
  r.match.protocols = std::vector<std::uint8_t>{6};
  r.match.src_addr = {{false, "both"}};
  r.match.dst_port = {{false, {{9000, 9010}}}, ports(9005, true)};
  add(r);
  r = rule(ir::ActionKind::accept, 8);
  r.match.protocols = std::vector<std::uint8_t>{6};
  r.match.dst_port = {{false, {{9000, 9010}}}};
  add(r);
  r = rule(ir::ActionKind::accept, 9);  // ICMP but echo requests
  r.match.icmp = ir::IcmpMatch{true, false, 8, std::nullopt};
  add(r);
  r = rule(ir::ActionKind::jump, 10);
  r.action.target = "sub";
  add(r);
  r = rule(ir::ActionKind::accept, 11);  // IPv6 only
  r.match.family = ir::Family::ipv6;
  r.match.protocols = std::vector<std::uint8_t>{17};
  r.match.dst_port = {ports(546)};
  add(r);
  ir::Chain sub{"sub", {}, {{1, 12, 1}, "chain sub", -1}};
  r = rule(ir::ActionKind::accept, 13);
  r.match.protocols = std::vector<std::uint8_t>{6};
  r.match.dst_port = {ports(7000)};
  sub.rules.push_back(r);
  sub.rules.push_back(rule(ir::ActionKind::return_, 14));
  rs.chains.emplace("main", std::move(main));
  rs.chains.emplace("sub", std::move(sub));
  auto& input = rs.stage(ir::Stage::input).sections.emplace_back();
  input.name = "zones";
  input.endpoints.push_back(endpoint("uplink", "eth0", {"main"}, ir::Verdict::reject));
  input.endpoints.push_back(endpoint("lan", "eth1", {}, ir::Verdict::accept));
  input.endpoints.push_back(endpoint("other", std::nullopt, {"main"}, ir::Verdict::drop));
  auto& forward = rs.stage(ir::Stage::forward).sections.emplace_back();
  forward.name = "zones";
  forward.endpoints.push_back(endpoint("uplink", "eth0", {"sub"}, ir::Verdict::drop));
  return rs;
}

// The errors writing rs as Calico resources reports, formatted.
std::vector<std::string> write_errors(const ir::Ruleset& rs) {
  Diagnostics diag;
  diag.add_file("policy.yaml");
  write_resources(rs, "n1", diag);
  return formatted(diag, Severity::error);
}

std::ptrdiff_t count_holding(const std::vector<std::string>& errors, const std::string& text) {
  return std::count_if(errors.begin(), errors.end(),
                       [&](const std::string& e) { return e.find(text) != std::string::npos; });
}

ir::Ruleset read_back(const std::map<std::string, std::string>& files) {
  std::string text;
  for (const auto& [name, content] : files) text += content;
  return build(text, n1_options());
}

TEST_CASE("writer: what maps reads back with the same fate for every packet of a grid") {
  ir::Ruleset original = tricky_ruleset();
  Diagnostics diag;
  diag.add_file("policy.yaml");
  auto files = write_resources(original, "n1", diag);
  INFO(diag.text());
  // Ports without a protocol, or with "not UDP", also match DCCP and UDPLite, which Calico's ports cannot
  // name.
  auto errors = formatted(diag, Severity::error);
  REQUIRE(errors.size() == 2);
  CHECK(errors[0].starts_with("policy.yaml:4:1: error: cannot write as calico: ports of DCCP and UDPLite"));
  CHECK(errors[1].starts_with("policy.yaml:5:1: error: cannot write as calico: ports of DCCP and UDPLite"));
  auto warnings = formatted(diag, Severity::warning);
  CHECK(std::count_if(warnings.begin(), warnings.end(), [](const std::string& w) {
          return w.find("the endpoint's default: reject becomes Deny") != std::string::npos;
        }) == 1);
  ir::Ruleset written = read_back(files);
  Diagnostics passes_diag;
  passes::run_all(original, passes_diag);
  REQUIRE_FALSE(passes_diag.has_errors());

  std::vector<std::pair<std::string, std::string>> sources = {{"10.1.1.1", "10.0.0.10"},
                                                              {"192.168.1.1", "10.0.0.10"},
                                                              {"172.16.1.1", "10.0.0.10"},
                                                              {"2001:db8::1", "2001:db8::10"},
                                                              {"2001:db9::1", "2001:db8::10"}};
  const std::vector<std::string> interfaces = {"eth0", "eth1", "eth2", "lo"};
  std::size_t packets = 0;
  for (const auto& [src, dst] : sources)
    for (std::uint8_t protocol : {6, 17, 132, 1})
      for (std::uint16_t dport : {22, 53, 546, 7000, 8080, 9000, 9005, 1})
        for (const auto& iif : interfaces)
          for (const std::string& oif : {std::string(), std::string("eth1")}) {
            std::uint8_t proto = protocol == 1 && src.find(':') != std::string::npos ? 58 : protocol;
            trace::Packet p = packet(iif, oif, src, dst, proto, dport);
            for (std::uint8_t icmp_type : {std::uint8_t{8}, std::uint8_t{0}}) {
              p.icmp_type = icmp_type;
              INFO(iif << " -> " << oif << " " << src << " proto " << int(proto) << " dport " << dport
                       << " icmp type " << int(icmp_type));
              CHECK(trace::evaluate(original, p).delivered == trace::evaluate(written, p).delivered);
              ++packets;
            }
          }
  CHECK(packets > 1000);
}

TEST_CASE("writer: what Calico cannot say is reported at its origin, once") {
  ir::Ruleset rs = tricky_ruleset();
  ir::Chain& main = rs.chains.at("main");
  ir::Rule r = rule(ir::ActionKind::accept, 20);
  r.match.src_addr = {{false, "both"}, {false, "other"}};
  main.rules.push_back(r);
  r = rule(ir::ActionKind::accept, 21);
  r.match.rate_limit = ir::RateLimit{5, "second", 0};
  main.rules.push_back(r);
  r = rule(ir::ActionKind::set_mark, 22);
  main.rules.push_back(r);
  rs.stage(ir::Stage::input).sections.front().endpoints.front().match.src_set = "other";
  const auto errors = write_errors(rs);
  auto has = [&](const std::string& text) { return count_holding(errors, text); };
  CHECK(has("policy.yaml:20:1: error: cannot write as calico: several address sets ANDed") == 1);
  CHECK(has("policy.yaml:21:1: error: cannot write as calico: rate limit") == 1);
  CHECK(has("policy.yaml:22:1: error: cannot write as calico: set-mark") == 1);
  CHECK(has("policy.yaml:1:1: error: cannot write as calico: endpoint 'uplink': classified by address") == 1);
}

TEST_CASE("writer: DCCP ports, and a group's verdict where Calico has no policy, are reported") {
  ir::Ruleset rs = tricky_ruleset();
  ir::Rule dccp = rule(ir::ActionKind::accept, 40);
  dccp.match.protocols = std::vector<std::uint8_t>{33};
  dccp.match.dst_port = {ports(5004)};
  rs.chains.at("main").rules.push_back(dccp);
  ir::Endpoint any;
  any.name = "early";
  any.groups.push_back({"closed", {}, ir::Verdict::drop, {}, {{1, 41, 1}, "group closed", -1}});
  rs.stage(ir::Stage::prednat).sections.push_back({"early", false, {any}});
  const auto errors = write_errors(rs);
  auto has = [&](const std::string& text) { return count_holding(errors, text); };
  CHECK(has("policy.yaml:40:1: error: cannot write as calico: ports of DCCP") == 1);
  CHECK(
      has("policy.yaml:41:1: error: cannot write as calico: the verdict drop at the end of group 'closed'") ==
      1);
}

TEST_CASE("writer: a chain of a stage Calico has no policy for is reported once") {
  ir::Ruleset rs = tricky_ruleset();
  ir::Rule nd = rule(ir::ActionKind::return_, 30);
  ir::Rule spoofed = rule(ir::ActionKind::drop, 31);
  spoofed.match.rpf = ir::RpfMode::strict;
  spoofed.match.rpf_negate = true;
  rs.chains["rpfilter"] = {"rpfilter", {nd, nd, spoofed}, {}};
  ir::Endpoint any;
  any.name = "rpfilter";
  any.groups.push_back({"rpfilter", {"rpfilter"}, ir::Verdict::continue_, {}, {}});
  rs.stage(ir::Stage::prednat).sections.push_back({"rpfilter", false, {any}});
  Diagnostics diag;
  diag.add_file("policy.yaml");
  write_resources(rs, "n1", diag);
  auto errors = formatted(diag, Severity::error);
  auto found = std::find_if(errors.begin(), errors.end(),
                            [](const std::string& e) { return e.find("rpfilter") != std::string::npos; });
  REQUIRE(found != errors.end());
  CHECK(std::find_if(found + 1, errors.end(), [](const std::string& e) {
          return e.find("rpfilter") != std::string::npos;
        }) == errors.end());
  CHECK(
      *found ==
      "policy.yaml:30:1: error: cannot write as calico: chain 'rpfilter' (drop, return) in stage prednat: "
      "only input, forward and output are written as Calico policy (rule at line 30) (it is left out of the "
      "Calico policy; review the written files)");
}

TEST_CASE("writer: what Calico's validation refuses is reported, and the files written still read back") {
  ir::Ruleset rs = tricky_ruleset();
  ir::Chain& main = rs.chains.at("main");
  ir::Rule r = rule(ir::ActionKind::accept, 50);  // written from port 1
  r.match.protocols = std::vector<std::uint8_t>{6};
  r.match.dst_port = {{false, {{0, 1023}}}};
  main.rules.push_back(r);
  r = rule(ir::ActionKind::accept, 51);  // written without port 0
  r.match.protocols = std::vector<std::uint8_t>{17};
  r.match.src_port = {{true, {{0, 0}, {7, 7}}}};
  main.rules.push_back(r);
  r = rule(ir::ActionKind::accept, 52);  // port 0 alone: left out
  r.match.protocols = std::vector<std::uint8_t>{6};
  r.match.dst_port = {ports(0)};
  main.rules.push_back(r);
  r = rule(ir::ActionKind::accept, 53);
  r.match.protocols = std::vector<std::uint8_t>{0};
  main.rules.push_back(r);
  r = rule(ir::ActionKind::accept, 54);
  r.match.icmp = ir::IcmpMatch{false, false, 255, std::nullopt};
  main.rules.push_back(r);
  auto& endpoints = rs.stage(ir::Stage::input).sections.front().endpoints;
  endpoints.insert(endpoints.begin(), {endpoint("odd", "vlan#1", {}, ir::Verdict::drop),
                                       endpoint("pod", "cali0", {}, ir::Verdict::drop),
                                       endpoint("ipvs", "kube-ipvs0", {}, ir::Verdict::drop),
                                       endpoint("underscore", "_", {}, ir::Verdict::drop)});
  for (auto& e : endpoints) e.origin.loc.line = 60 + static_cast<std::uint32_t>(&e - endpoints.data());

  Diagnostics diag;
  diag.add_file("policy.yaml");
  auto files = write_resources(rs, "n1", diag);
  const auto errors = formatted(diag, Severity::error);
  auto has = [&](const std::string& text) { return count_holding(errors, text); };
  CHECK(has("policy.yaml:50:1: error: cannot write as calico: port 0: Calico's ports start at 1") == 1);
  CHECK(has("policy.yaml:51:1: error: cannot write as calico: port 0: Calico's ports start at 1") == 1);
  CHECK(has("policy.yaml:52:1: error: cannot write as calico: port 0: Calico's ports start at 1") == 1);
  CHECK(has("policy.yaml:53:1: error: cannot write as calico: protocol 0") == 1);
  CHECK(has("policy.yaml:54:1: error: cannot write as calico: ICMP type 255") == 1);
  CHECK(has("policy.yaml:60:1: error: cannot write as calico: interface 'vlan#1'") == 1);
  CHECK(
      has("policy.yaml:61:1: error: cannot write as calico: interface 'cali0': Felix takes it for a pod's") ==
      1);
  CHECK(has("policy.yaml:62:1: error: cannot write as calico: interface 'kube-ipvs0'") == 1);
  CHECK(count_holding(formatted(diag, Severity::warning), "the '*' HostEndpoint does not cover") == 1);
  const ir::Ruleset written = read_back(files);  // no error reading it
  CHECK(files.at("10-hostendpoints.yaml").find("name: n1-if\n") != std::string::npos);
  // Port 1023 is open from the rule written from port 1; port 0 is not.
  auto fate = [&](const ir::Ruleset& ruleset, std::uint16_t dport) {
    return trace::evaluate(ruleset, packet("eth2", "", "192.0.2.1", "10.0.0.10", 6, dport)).delivered;
  };
  CHECK(fate(rs, 1023));
  CHECK(fate(written, 1023));
  CHECK(fate(rs, 0));
  CHECK_FALSE(fate(written, 0));

  Diagnostics named;
  named.add_file("policy.yaml");
  write_resources(tricky_ruleset(), "Web-1", named);
  CHECK(count_holding(formatted(named, Severity::error), "cannot write as calico: node name 'Web-1'") == 1);
}

}  // namespace
}  // namespace fwe::calico::test
