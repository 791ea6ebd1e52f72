// Core passes: CIDR and port normalisation, verification errors, set dedupe, capability refusals.
#include <catch2/catch.hpp>

#include <algorithm>

#include "fwengine/passes.hpp"
#include "fwengine/plugin.hpp"

using namespace fwe;
using namespace fwe::ir;

namespace {
std::vector<std::string> cidrs_after_normalise(std::vector<std::string> in) {
  Ruleset rs;
  AddrSet set{{}, {}};
  for (const auto& c : in) set.cidrs.push_back(*parse_cidr(c));
  rs.sets["s"] = set;
  passes::normalise(rs);
  std::vector<std::string> out;
  for (const auto& c : rs.sets["s"].cidrs) out.push_back(to_string(c));
  return out;
}
}  // namespace

TEST_CASE("CIDRs are merged into the fewest non-overlapping blocks") {
  using V = std::vector<std::string>;
  CHECK(cidrs_after_normalise({"10.0.0.0/8", "10.1.0.0/16"}) == V{"10.0.0.0/8"});
  CHECK(cidrs_after_normalise({"10.0.0.0/25", "10.0.0.128/25"}) == V{"10.0.0.0/24"});
  CHECK(cidrs_after_normalise({"10.0.0.1/32", "10.0.0.2/32"}) == V{"10.0.0.1/32", "10.0.0.2/32"});
  CHECK(cidrs_after_normalise({"10.0.0.1", "10.0.0.2", "10.0.0.3"}) == V{"10.0.0.1/32", "10.0.0.2/31"});
  CHECK(cidrs_after_normalise({"0.0.0.0/1", "128.0.0.0/1"}) == V{"0.0.0.0/0"});
  CHECK(cidrs_after_normalise({"::/0", "2001:db8::/32", "1.2.3.4"}) == V{"1.2.3.4/32", "::/0"});
  CHECK(cidrs_after_normalise({"224.0.0.0/3", "255.255.255.255"}) == V{"224.0.0.0/3"});
  CHECK(cidrs_after_normalise({"2001:db8::/33", "2001:db8:8000::/33"}) == V{"2001:db8::/32"});
}

TEST_CASE("port sets are sorted and merged") {
  Ruleset rs;
  Rule r;
  r.match.protocols = std::vector<std::uint8_t>{6};
  r.match.dst_port.push_back({false, {{443, 443}, {80, 80}, {81, 90}, {8000, 8080}, {8081, 8081}}});
  rs.chains["c"] = {"c", {r}, {}};
  passes::normalise(rs);
  CHECK(rs.chains["c"].rules[0].match.dst_port[0].ports == PortSet{{80, 90}, {443, 443}, {8000, 8081}});
}

TEST_CASE("verify reports unknown references, loops and misplaced actions at their origin") {
  Diagnostics diag;
  auto f = diag.add_file("p.yaml");
  Ruleset rs;
  Rule bad_set;
  bad_set.match.src_addr.push_back({false, "nope"});
  bad_set.origin.loc = {f, 3, 5};
  Rule loop;
  loop.action.kind = ActionKind::jump;
  loop.action.target = "a";
  loop.origin.loc = {f, 7, 5};
  Rule nat;
  nat.action.kind = ActionKind::masquerade;
  nat.origin.loc = {f, 9, 5};
  Rule log;
  log.action.kind = ActionKind::log;
  log.action.log_prefix = "two\nlines";
  log.origin.loc = {f, 11, 5};
  rs.chains["a"] = {"a", {bad_set, loop, nat, log}, {}};
  Endpoint ep;
  ep.name = "e";
  ep.groups.push_back({"g", {"a", "missing"}, Verdict::continue_, {}, {}});
  rs.stage(Stage::input).sections.push_back({"s", false, {ep}});
  passes::verify(rs, diag);
  std::vector<std::string> lines;
  for (const auto& d : diag.all()) lines.push_back(diag.format(d));
  CHECK(std::count_if(lines.begin(), lines.end(), [](auto& l) {
          return l.rfind("p.yaml:3:5: error: rule refers to unknown address set 'nope'", 0) == 0;
        }) == 1);
  CHECK(std::count_if(lines.begin(), lines.end(), [](auto& l) {
          return l.rfind("p.yaml:7:5: error: jump to 'a' makes a loop", 0) == 0;
        }) == 1);
  CHECK(std::count_if(lines.begin(), lines.end(), [](auto& l) {
          return l.rfind("p.yaml:9:5: error: masquerade cannot be used in stage input", 0) == 0;
        }) == 1);
  CHECK(std::count_if(lines.begin(), lines.end(),
                      [](auto& l) { return l.find("unknown chain 'missing'") != std::string::npos; }) == 1);
  CHECK(std::count_if(lines.begin(), lines.end(), [](auto& l) {
          return l.starts_with(
              "p.yaml:11:5: error: the log prefix has a control or line separator character");
        }) == 1);
}

TEST_CASE("a log prefix is one line: C0 and C1 controls, DEL and U+2028 are refused, other UTF-8 is not") {
  for (std::string prefix : {std::string("a\tb"), std::string("a\x7f"), std::string("a\xc2\x85"),
                             std::string("a\xe2\x80\xa8"), std::string("caf\xc3\xa9 ")}) {
    Diagnostics diag;
    const auto f = diag.add_file("p.yaml");
    Ruleset rs;
    Rule log;
    log.action.kind = ActionKind::log;
    log.action.log_prefix = prefix;
    log.origin.loc = {f, 2, 5};
    rs.chains["a"] = {"a", {log}, {}};
    passes::verify(rs, diag);
    const bool refused = prefix.starts_with("a");
    CHECK(diag.error_count() == (refused ? 1u : 0u));
    if (refused)
      CHECK(diag.format(diag.all()[0])
                .starts_with("p.yaml:2:5: error: the log prefix has a control or line separator character"));
  }
}

TEST_CASE("optimise merges identical sets and drops what nothing uses") {
  Ruleset rs;
  rs.sets["a"] = {{*parse_cidr("10.0.0.0/8")}, {}};
  rs.sets["b"] = {{*parse_cidr("10.0.0.0/8")}, {}};
  rs.sets["unused"] = {{*parse_cidr("192.0.2.0/24")}, {}};
  rs.sets["z"] = {{*parse_cidr("10.0.0.0/8")}, {}};  // a third: it goes to the first too
  Rule r;
  r.match.src_addr.push_back({false, "b"});
  r.match.dst_addr.push_back({false, "z"});
  rs.chains["c"] = {"c", {r}, {}};
  rs.chains["orphan"] = {"orphan", {}, {}};
  Endpoint ep;
  ep.name = "e";
  ep.groups.push_back({"g", {"c"}, Verdict::continue_, {}, {}});
  rs.stage(Stage::input).sections.push_back({"s", false, {ep}});
  passes::optimise(rs);
  CHECK(rs.sets.size() == 1);
  CHECK(rs.chains.count("orphan") == 0);
  CHECK(rs.chains["c"].rules[0].match.src_addr[0].set_name == "a");
  CHECK(rs.chains["c"].rules[0].match.dst_addr[0].set_name == "a");
}

TEST_CASE("optimise keeps a chain jumped to from one reached deep first and shallow after") {
  // c0 -> c1 -> ... -> c63 -> x -> y, and top -> x: x is first reached 64 jumps deep, y is two jumps
  // from top. (A cut at depth 64 kept x as reached and never looked at its jumps again.)
  Ruleset rs;
  auto jump = [](const std::string& target) {
    Rule r;
    r.action.kind = ActionKind::jump;
    r.action.target = target;
    return r;
  };
  for (int i = 0; i < 63; ++i)
    rs.chains["c" + std::to_string(i)] = {"c" + std::to_string(i), {jump("c" + std::to_string(i + 1))}, {}};
  rs.chains["c63"] = {"c63", {jump("x")}, {}};
  rs.chains["x"] = {"x", {jump("y")}, {}};
  Rule drop;
  drop.action.kind = ActionKind::drop;
  rs.chains["y"] = {"y", {drop}, {}};
  rs.chains["top"] = {"top", {jump("x")}, {}};
  Endpoint ep;
  ep.name = "e";
  ep.groups.push_back({"g", {"c0", "top"}, Verdict::continue_, {}, {}});
  rs.stage(Stage::input).sections.push_back({"s", false, {ep}});
  passes::optimise(rs);
  CHECK(rs.chains.count("y") == 1);
}

TEST_CASE("verify refuses a chain named as core's failsafe chains") {
  for (std::string_view name : {kFailsafeIn, kFailsafeOut, kFailsafeUntrackedIn, kFailsafeUntrackedOut}) {
    Diagnostics diag;
    const auto f = diag.add_file("p.yaml");
    Ruleset rs;
    rs.chains[std::string(name)] = {std::string(name), {}, Origin{{f, 3, 3}, "mine"}};
    passes::verify(rs, diag);
    REQUIRE(diag.all().size() == 1);
    CHECK(diag.format(diag.all()[0])
              .rfind("p.yaml:3:3: error: the chain name '" + std::string(name) +
                         "' is fwengine's own: its failsafe rules",
                     0) == 0);
  }
}

TEST_CASE("verify refuses names with a character that breaks a line") {
  // A NUL, a carriage return, NEL (U+0085) and the line separator U+2028 each end a line somewhere a
  // name is written (a YAML comment of migrate's, the kernel's listing); a tab too.
  for (std::string bad : {std::string("x\0y", 3), std::string("a\rb"), std::string("a\tb"),
                          std::string("a\xc2\x85"
                                      "b"),
                          std::string("a\xe2\x80\xa8"
                                      "b")}) {
    Diagnostics diag;
    const auto f = diag.add_file("p.yaml");
    Ruleset rs;
    rs.chains[bad] = {bad, {}, Origin{{f, 3, 3}, "mine"}};
    rs.sets[bad] = {{}, Origin{{f, 4, 3}, "mine"}};
    Endpoint ep;
    ep.name = bad;
    ep.origin = Origin{{f, 5, 3}, "mine"};
    ep.groups.push_back({bad, {}, Verdict::continue_, {}, Origin{{f, 6, 3}, "mine"}});
    rs.stage(Stage::input).sections.push_back({"s", false, {ep}});
    passes::verify(rs, diag);
    REQUIRE(diag.error_count() == 4);
    CHECK(diag.format(diag.all()[0]) ==
          "p.yaml:4:3: error: set name '" + on_one_line(bad) +
              "' has a control or line separator character (name it with printable characters)");
  }
  CHECK(on_one_line("caf\xc3\xa9 \xe2\x80\xa8!") == "caf\xc3\xa9 ?!");  // other UTF-8 stays
}

TEST_CASE("capabilities refuse what a backend cannot do, naming the rule") {
  Diagnostics diag;
  auto f = diag.add_file("p.yaml");
  Ruleset rs;
  Rule r;
  r.action.kind = ActionKind::dnat;
  r.origin = {{f, 4, 7}, "zone public", 2};
  rs.chains["c"] = {"c", {r}, {}};
  Endpoint ep;
  ep.groups.push_back({"g", {"c"}, Verdict::continue_, {}, {}});
  rs.stage(Stage::dnat).sections.push_back({"s", false, {ep}});
  Capabilities caps;
  caps.stages = {Stage::input};
  caps.actions = {ActionKind::accept};
  passes::check_capabilities(rs, caps, "ebpf", diag);
  REQUIRE(diag.error_count() == 2);
  CHECK(diag.format(diag.all()[0])
            .rfind("<command line>: error: backend 'ebpf' cannot realise stage dnat", 0) == 0);
  CHECK(diag.format(diag.all()[1]) ==
        "p.yaml:4:7: error: backend 'ebpf' cannot do action dnat (in zone public) (choose another --backend "
        "or change the rule)");
}

TEST_CASE("capabilities: a rule the frontend adds itself is refused saying so, and long log prefixes warn") {
  Diagnostics diag;
  auto f = diag.add_file("p.yaml");
  Ruleset rs;
  rs.frontend = "firewalld";
  Rule built_in;
  built_in.action.kind = ActionKind::dnat;
  built_in.origin = {{}, "firewalld filter_INPUT", -1};
  Rule log;
  log.action.kind = ActionKind::log;
  log.action.log_prefix = std::string(28, 'x') + "\xc3\xa9" + std::string(10, 'x');  // é across byte 29
  log.origin.loc = {f, 6, 7};
  rs.chains["c"] = {"c", {built_in, log}, {}};
  Capabilities caps;
  caps.actions = {ActionKind::accept, ActionKind::log};
  caps.log_prefix_max = 29;
  passes::check_capabilities(rs, caps, "ebpf", diag);
  REQUIRE(diag.all().size() == 2);
  CHECK(diag.format(diag.all()[0])
            .find("(the firewalld frontend adds this rule to every policy: choose another "
                  "--backend)") != std::string::npos);
  CHECK(diag.format(diag.all()[1])
            .rfind("p.yaml:6:7: warning: the log prefix has 40 bytes; backend 'ebpf' writes at most 29 ('" +
                       std::string(28, 'x') + "')",
                   0) == 0);
}

TEST_CASE("verify: ct-status only where conntrack can know it") {
  Diagnostics diag;
  auto f = diag.add_file("p.yaml");
  auto status_rule = [&](std::uint32_t line, std::vector<CtStatus> statuses) {
    Rule r;
    r.match.ct_status = std::move(statuses);
    r.origin.loc = {f, line, 5};
    return r;
  };
  Ruleset rs;
  auto use = [&](Stage st, const std::string& chain, Rule r) {
    rs.chains[chain] = {chain, {std::move(r)}, {}};
    Endpoint ep;
    ep.name = chain;
    ep.groups.push_back({"g", {chain}, Verdict::continue_, {}, {}});
    rs.stage(st).sections.push_back({"s", false, {ep}});
  };
  use(Stage::untracked_in, "raw", status_rule(1, {CtStatus::dnat}));
  use(Stage::dnat, "nat", status_rule(2, {CtStatus::dnat}));
  use(Stage::snat, "src-only", status_rule(3, {CtStatus::snat}));
  use(Stage::snat, "dst-too", status_rule(4, {CtStatus::snat, CtStatus::dnat}));
  use(Stage::prednat, "early", status_rule(5, {CtStatus::dnat}));
  use(Stage::input, "filter", status_rule(6, {CtStatus::snat}));
  passes::verify(rs, diag);
  std::vector<std::string> lines;
  for (const auto& d : diag.all()) lines.push_back(diag.format(d));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].rfind("p.yaml:2:5: error: ct-status cannot be matched in stage dnat", 0) == 0);
  CHECK(lines[1].rfind("p.yaml:1:5: error: ct-status cannot be matched in stage untracked-in: conntrack",
                       0) == 0);
  CHECK(lines[2].rfind("p.yaml:3:5: error: ct-status cannot be matched in stage snat", 0) == 0);
}

TEST_CASE("verify: rpf only where the packet came in on an interface") {
  Diagnostics diag;
  auto f = diag.add_file("p.yaml");
  Ruleset rs;
  std::uint32_t line = 0;
  for (Stage st : {Stage::untracked_in, Stage::untracked_out, Stage::prednat, Stage::dnat, Stage::input,
                   Stage::forward, Stage::output, Stage::snat}) {
    const std::string chain(to_string(st));
    Rule r;
    r.match.rpf = RpfMode::strict;
    r.origin.loc = {f, ++line, 5};
    rs.chains[chain] = {chain, {r}, {}};
    Endpoint ep;
    ep.name = chain;
    ep.groups.push_back({"g", {chain}, Verdict::continue_, {}, {}});
    rs.stage(st).sections.push_back({"s", false, {ep}});
  }
  passes::verify(rs, diag);
  std::vector<std::string> lines;
  for (const auto& d : diag.all()) lines.push_back(diag.format(d));
  std::sort(lines.begin(), lines.end());
  REQUIRE(lines.size() == 4);
  CHECK(lines[0].rfind("p.yaml:2:5: error: rpf cannot be matched in stage untracked-out", 0) == 0);
  CHECK(lines[1].rfind("p.yaml:4:5: error: rpf cannot be matched in stage dnat", 0) == 0);
  CHECK(lines[2].rfind("p.yaml:7:5: error: rpf cannot be matched in stage output", 0) == 0);
  CHECK(lines[3].rfind("p.yaml:8:5: error: rpf cannot be matched in stage snat", 0) == 0);
}

TEST_CASE("verify: an interface the stage's packets cannot have is a warning") {
  Diagnostics diag;
  auto f = diag.add_file("p.yaml");
  Ruleset rs;
  std::uint32_t line = 9;
  auto add = [&](const std::string& chain, std::vector<Stage> stages, bool iif, bool negate) {
    Rule r;
    (iif ? r.match.iif : r.match.oif) = std::vector<IfacePattern>{{"eth0", false}};
    (iif ? r.match.iif_negate : r.match.oif_negate) = negate;
    r.origin.loc = {f, ++line, 5};
    rs.chains[chain] = {chain, {r}, {}};
    for (Stage st : stages) {
      Endpoint ep;
      ep.name = chain;
      ep.groups.push_back({"g", {chain}, Verdict::continue_, {}, {}});
      rs.stage(st).sections.push_back({"s", false, {ep}});
    }
  };
  add("iif-out", {Stage::output}, true, false);                              // 10: never
  add("iif-untracked-out", {Stage::untracked_out}, true, false);             // 11: never
  add("iif-dnat-out", {Stage::dnat_out}, true, false);                       // 12: never
  add("iif-snat", {Stage::snat}, true, false);                               // forwarded packets have one
  add("iif-out-and-forward", {Stage::output, Stage::forward}, true, false);  // meant for forward
  add("iif-out-negated", {Stage::output}, true, true);                       // always holds: no warning
  add("oif-in", {Stage::input}, false, false);                               // 16: never
  add("oif-in-and-output", {Stage::input, Stage::output}, false, false);
  add("oif-forward", {Stage::forward}, false, false);
  Endpoint by_iif, by_oif;
  by_iif.name = "uplink";
  by_iif.match.iif = IfacePattern{"eth0", false};
  by_iif.origin.loc = {f, 30, 3};
  by_oif.name = "downlink";
  by_oif.match.oif = IfacePattern{"eth1", false};
  by_oif.origin.loc = {f, 31, 3};
  rs.stage(Stage::output).sections.push_back({"e", false, {by_iif}});
  rs.stage(Stage::input).sections.push_back({"e", false, {by_oif}});
  passes::verify(rs, diag);
  std::vector<std::string> lines;
  for (const auto& d : diag.all()) lines.push_back(diag.format(d));
  std::sort(lines.begin(), lines.end());
  REQUIRE(lines.size() == 6);
  CHECK(diag.error_count() == 0);
  CHECK(lines[0].rfind("p.yaml:10:5: warning: iif never matches in chain 'iif-out'", 0) == 0);
  CHECK(lines[1].rfind("p.yaml:11:5: warning: iif never matches in chain 'iif-untracked-out'", 0) == 0);
  CHECK(lines[2].rfind("p.yaml:12:5: warning: iif never matches in chain 'iif-dnat-out'", 0) == 0);
  CHECK(lines[3].rfind("p.yaml:16:5: warning: oif never matches in chain 'oif-in'", 0) == 0);
  CHECK(lines[4].rfind("p.yaml:30:3: warning: endpoint uplink classifies by iif in stage output", 0) == 0);
  CHECK(lines[5].rfind("p.yaml:31:3: warning: endpoint downlink classifies by oif in stage input", 0) == 0);
}

TEST_CASE("capabilities: a backend without ct-status refuses it") {
  Diagnostics diag;
  Ruleset rs;
  Rule r;
  r.match.ct_status = std::vector<CtStatus>{CtStatus::dnat};
  rs.chains["c"] = {"c", {r}, {}};
  Endpoint ep;
  ep.groups.push_back({"g", {"c"}, Verdict::continue_, {}, {}});
  rs.stage(Stage::input).sections.push_back({"s", false, {ep}});
  Capabilities caps;
  caps.stages = {Stage::input};
  caps.actions = {ActionKind::accept};
  passes::check_capabilities(rs, caps, "ebpf", diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.format(diag.all()[0]).find("cannot do match ct-status") != std::string::npos);
}

TEST_CASE("verify: a mark value within its mask, and none of the backends' own bits") {
  Diagnostics diag;
  auto f = diag.add_file("p.yaml");
  Ruleset rs;
  Rule outside;  // can never match: trace and the backends would each see it their own way
  outside.match.mark_value = 3;
  outside.match.mark_mask = 1;
  outside.origin.loc = {f, 3, 5};
  Rule reserved;
  reserved.match.mark_value = 0x40000000;
  reserved.origin.loc = {f, 4, 5};
  Rule sets_reserved;
  sets_reserved.action.kind = ActionKind::set_mark;
  sets_reserved.action.mark_value = 0x10000001;
  sets_reserved.origin.loc = {f, 5, 5};
  Rule fine;
  fine.match.mark_value = 0x10;
  fine.match.mark_mask = 0xf0;
  fine.action.kind = ActionKind::set_mark;
  fine.action.mark_value = 0x0fffffff;
  rs.chains["a"] = {"a", {outside, reserved, sets_reserved, fine}, {}};
  passes::verify(rs, diag);
  std::vector<std::string> lines;
  for (const auto& d : diag.all()) lines.push_back(diag.format(d));
  REQUIRE(lines.size() == 3);
  CHECK(
      lines[0] ==
      "p.yaml:3:5: error: mark value 0x3 has bits outside its mask 0x1 (clear them from the value, or widen "
      "the mask)");
  CHECK(
      lines[1] ==
      "p.yaml:4:5: error: mark value 0x40000000 uses the bits 0xf0000000, which the backends keep for their "
      "own marks (use the lower 28 bits (0xfffffff))");
  CHECK(lines[2].rfind("p.yaml:5:5: error: set-mark value 0x10000001 uses the bits 0xf0000000", 0) == 0);
}

TEST_CASE("NAT to an address applies to packets of its family only") {
  Diagnostics diag;
  auto f = diag.add_file("p.yaml");
  Ruleset rs;
  Rule any_family;
  any_family.action.kind = ActionKind::dnat;
  any_family.action.nat_addr = parse_ip("2001:db8::1");
  Rule other_family;
  other_family.match.family = Family::ipv4;
  other_family.action.kind = ActionKind::dnat;
  other_family.action.nat_addr = parse_ip("2001:db8::1");
  other_family.origin.loc = {f, 4, 5};
  rs.chains["a"] = {"a", {any_family, other_family}, {}};
  passes::normalise(rs);
  CHECK(rs.chains["a"].rules[0].match.family == Family::ipv6);
  passes::verify(rs, diag);
  std::vector<std::string> lines;
  for (const auto& d : diag.all()) lines.push_back(diag.format(d));
  CHECK(std::count_if(lines.begin(), lines.end(), [](auto& l) {
          return l.rfind("p.yaml:4:5: error: the rule's packets are ipv4 but it NATs to 2001:db8::1", 0) == 0;
        }) == 1);
}
