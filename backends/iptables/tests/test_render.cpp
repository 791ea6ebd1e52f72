// test_render.cpp - rendering and state transitions, without a kernel.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "applied.hpp"
#include "kernel.hpp"
#include "render.hpp"
#include "support.hpp"

using namespace fwe;
using namespace fwe::iptables;

namespace {

const TableDef& table(const Model& m, IpFamily f, std::string_view name) {
  for (const auto& t : m.family(f))
    if (t.name == name) return t;
  FAIL("no table " << name);
  throw;
}

const ChainDef& chain(const TableDef& t, std::string_view name) {
  const ChainDef* c = t.find(name);
  if (c == nullptr) FAIL("no chain " << name << " in " << t.name);
  return *c;
}

// The rule specs without their comments: what the golden expectations below are about.
std::vector<std::string> bare(const ChainDef& c) {
  std::vector<std::string> out;
  for (auto spec : c.rules) {
    auto at = spec.find("-m comment --comment \"");
    auto end = spec.find('"', at + 22);
    spec.erase(at, end + 1 - at);
    if (spec.size() && spec.front() == ' ') spec.erase(0, 1);
    if (auto dbl = spec.find("  "); dbl != std::string::npos) spec.erase(dbl, 1);
    if (spec.size() && spec.back() == ' ') spec.pop_back();
    out.push_back(spec);
  }
  return out;
}

Model render_ok(const ir::Ruleset& rs) {
  Diagnostics diag;
  Model m = render(rs, diag);
  if (diag.has_errors()) {
    std::ostringstream out;
    diag.print(out);
    FAIL(out.str());
  }
  return m;
}

}  // namespace

TEST_CASE("stage chains are hooked once at the top of their built-in chains") {
  Model m = render_ok(test::sample_ruleset());
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    std::vector<std::string> hooks;
    for (const auto& t : m.family(f))
      for (const auto& h : t.hooks) hooks.push_back(t.name + " " + h.builtin + " " + h.target);
    CHECK(hooks == std::vector<std::string>{"raw PREROUTING fwe-untracked-in", "raw OUTPUT fwe-untracked-out",
                                            "mangle PREROUTING fwe-prednat", "nat PREROUTING fwe-dnat",
                                            "nat POSTROUTING fwe-snat", "filter INPUT fwe-input",
                                            "filter FORWARD fwe-forward", "filter OUTPUT fwe-output"});
  }
}

TEST_CASE("the input stage dispatches to endpoints and honours the allow mark") {
  Model m = render_ok(test::sample_ruleset());
  const auto& filter = table(m, IpFamily::v4, "filter");
  CHECK(bare(chain(filter, "fwe-input")) ==
        std::vector<std::string>{
            "-j MARK --set-xmark 0x0/0xe0000000",
            "-m mark --mark 0x10000000/0x10000000 -j MARK --set-xmark 0x40000000/0x40000000",
            "-m mark ! --mark 0x10000000/0x10000000 -j fwe-d-in0-host",
            "-m mark --mark 0x40000000/0x40000000 -j fwe-accepted", "-j MARK --set-xmark 0x0/0xe0000000"});
  CHECK(bare(chain(filter, "fwe-d-in0-host")) ==
        std::vector<std::string>{"-i lo -g fwe-e-in0-loopback", "-g fwe-e-in0-uplink"});
  CHECK(bare(chain(filter, "fwe-e-in0-uplink")) ==
        std::vector<std::string>{
            "-m conntrack --ctstate RELATED,ESTABLISHED -g fwe-accepted",
            "-m conntrack --ctstate INVALID -j DROP", "-j fwe-c-failsafe-in",
            "-m mark --mark 0x80000000/0x80000000 -j RETURN", "-m mark --mark 0x0/0x20000000 -j fwe-c-web",
            "-m mark --mark 0x80000000/0x80000000 -j RETURN", "-m mark --mark 0x0/0x20000000 -j DROP",
            "-j MARK --set-xmark 0x0/0x20000000", "-m mark --mark 0x0/0x20000000 -j fwe-c-log-drops",
            "-m mark --mark 0x80000000/0x80000000 -j RETURN",
            "-j REJECT --reject-with icmp-port-unreachable"});
  CHECK(bare(chain(filter, "fwe-accept")) ==
        std::vector<std::string>{"-j MARK --set-xmark 0xc0000000/0xc0000000"});
  CHECK(bare(chain(filter, "fwe-allow")) ==
        std::vector<std::string>{"-j MARK --set-xmark 0xd0000000/0xd0000000"});
}

TEST_CASE("accept goes straight to fwe-accepted only where the stage has one section") {
  Model m = render_ok(test::sample_ruleset());
  const auto& filter = table(m, IpFamily::v4, "filter");
  // forward has two sections (from, to): a later one may still decide, so accept travels back as bits
  // and the second section's endpoint clears them first.
  CHECK(bare(chain(filter, "fwe-e-fw0-from-lan")) ==
        std::vector<std::string>{"-j MARK --set-xmark 0x0/0xe0000000",
                                 "-m conntrack --ctstate RELATED,ESTABLISHED -g fwe-accept", "-g fwe-allow"});
  CHECK(bare(chain(filter, "fwe-e-fw1-to-uplink")).front() == "-j MARK --set-xmark 0x0/0xe0000000");
  // output has one: its endpoint's accepts leave at once.
  CHECK(bare(chain(filter, "fwe-e-out0-any")).front() ==
        "-m conntrack --ctstate RELATED,ESTABLISHED -g fwe-accepted");
}

TEST_CASE("chains a family leaves empty go with their jumps and all but one of the checks behind them") {
  ir::Ruleset rs = test::sample_ruleset();
  for (auto [name, kind] :
       {std::pair{"v4-allow", ir::ActionKind::accept}, std::pair{"v4-deny", ir::ActionKind::drop}}) {
    const ir::Origin origin{SourceLoc{1, 80, 3}, "test policy", -1};
    ir::Rule r;
    r.action.kind = kind;
    r.origin = origin;
    r.match.src_addr.push_back({false, "lan"});  // IPv4 only
    rs.chains[name] = ir::Chain{name, {r}, origin};
  }
  auto& tier1 = rs.stage(ir::Stage::input).sections[0].endpoints[1].groups[0];
  tier1.chains = {"v4-allow", "v4-deny", "web"};
  Model m = render_ok(rs);
  const auto v4 = bare(chain(table(m, IpFamily::v4, "filter"), "fwe-e-in0-uplink"));
  CHECK(std::count(v4.begin(), v4.end(), "-m mark --mark 0x80000000/0x80000000 -j RETURN") == 5);
  // In ip6tables the two chains and their jumps are gone; their checks, and the failsafe's before
  // them, would follow one another.
  const auto v6 = bare(chain(table(m, IpFamily::v6, "filter"), "fwe-e-in0-uplink"));
  CHECK(std::adjacent_find(v6.begin(), v6.end()) == v6.end());
  CHECK(std::count(v6.begin(), v6.end(), "-m mark --mark 0x80000000/0x80000000 -j RETURN") == 3);
  CHECK(std::none_of(v6.begin(), v6.end(),
                     [](const std::string& r) { return r.find("v4-") != std::string::npos; }));
}

TEST_CASE("IR rules become iptables rules: ports, sets, ICMP, reject, jumps") {
  Model m = render_ok(test::sample_ruleset());
  const auto& v4 = chain(table(m, IpFamily::v4, "filter"), "fwe-c-web");
  auto rules = bare(v4);
  REQUIRE(rules.size() >= 8);
  CHECK(rules[0] == "-p tcp -m multiport --dports 22 -g fwe-accepted");
  CHECK(rules[1] == "-p tcp -m multiport --dports 80,443,8000:8100 -g fwe-allow");
  CHECK(rules[2] == "-s 192.0.2.0/28 -p tcp -m multiport --dports 9100 -g fwe-accepted");
  CHECK(rules[3] == "-p tcp -m set --match-set fwe-4-big src -j REJECT --reject-with tcp-reset");
  CHECK(rules[4] == "-m set --match-set fwe-4-big src -j REJECT --reject-with icmp-port-unreachable");
  CHECK(rules[5] == "-p icmp -m icmp --icmp-type 8 -m limit --limit 20/sec -g fwe-accepted");
  // ICMPv6 and the IPv6-only set have no IPv4 rule; the jump with two interfaces goes through fwe-o-/fwe-a-.
  CHECK(rules[6].find("-j fwe-o-") == 0);
  CHECK(rules[7] == "-m mark ! --mark 0x0/0xa0000000 -j RETURN");
  CHECK(rules.size() == 8);

  auto v6 = bare(chain(table(m, IpFamily::v6, "filter"), "fwe-c-web"));
  CHECK(std::find(v6.begin(), v6.end(),
                  "-s 2001:db8:10::/64 -p tcp -m multiport --dports 9100 -g fwe-accepted") != v6.end());
  CHECK(std::find(v6.begin(), v6.end(), "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -g fwe-accepted") !=
        v6.end());
  CHECK(std::find(v6.begin(), v6.end(), "-s 2001:db8:99::/48 -j DROP") != v6.end());
  CHECK(std::find(v6.begin(), v6.end(), "-p tcp -j REJECT --reject-with tcp-reset") ==
        v6.end());  // big is IPv4-only

  const auto& passing = bare(chain(table(m, IpFamily::v4, "filter"), "fwe-c-passing"));
  CHECK(passing == std::vector<std::string>{"-j MARK --set-xmark 0x10/0xff", "! -s 10.0.0.0/8 -g fwe-pass"});
  // The negated set has no IPv6 address: every IPv6 packet is outside it.
  CHECK(bare(chain(table(m, IpFamily::v6, "filter"), "fwe-c-passing"))[1] == "-g fwe-pass");
}

TEST_CASE("an IPv4-only reject type gives IPv6 packets adm-prohibited, as nft and ebpf do") {
  ir::Ruleset rs = test::sample_ruleset();
  ir::Rule& first = rs.chains["web"].rules.front();
  first.action.kind = ir::ActionKind::reject;
  first.action.reject_with = "icmp-proto-unreachable";
  Model m = render_ok(rs);
  CHECK(bare(chain(table(m, IpFamily::v4, "filter"), "fwe-c-web"))[0] ==
        "-p tcp -m multiport --dports 22 -j REJECT --reject-with icmp-proto-unreachable");
  CHECK(bare(chain(table(m, IpFamily::v6, "filter"), "fwe-c-web"))[0] ==
        "-p tcp -m multiport --dports 22 -j REJECT --reject-with icmp6-adm-prohibited");
}

TEST_CASE("big sets become ipsets per family, small ones stay inline") {
  Model m = render_ok(test::sample_ruleset());
  std::vector<std::string> names;
  for (const auto& s : m.sets) names.push_back(s.name);
  REQUIRE(names == std::vector<std::string>{"fwe-4-big"});
  CHECK(m.sets[0].members.size() == 20);
  CHECK(m.sets[0].members[0] == "198.51.100.0/30");
}

TEST_CASE("for a kernel without IPv6, IPv4 alone: no IPv6 table, set or fwe-meta record") {
  const ir::Ruleset rs = test::nested_ruleset(7, 2000);  // IPv6 networks too: IPv6 sets
  const Model both = render_ok(rs);
  Diagnostics diag;
  const Model v4_only = render(rs, diag, false);
  REQUIRE_FALSE(diag.has_errors());
  auto is_v6 = [](const SetDef& set) { return set.family == IpFamily::v6; };
  REQUIRE(std::any_of(both.sets.begin(), both.sets.end(), is_v6));
  CHECK(std::none_of(v4_only.sets.begin(), v4_only.sets.end(), is_v6));
  CHECK(v4_only.family(IpFamily::v6).empty());
  CHECK(with_meta(v4_only, IpFamily::v6, "h", set_digests(v4_only.sets)).empty());
  CHECK(restore_text(with_meta(v4_only, IpFamily::v4, "h", set_digests(v4_only.sets))) ==
        restore_text(with_meta(both, IpFamily::v4, "h", set_digests(both.sets))));
}

TEST_CASE("a CIDR written in place is -s/-d or an ipset of its own, and a /0 is its family alone") {
  ir::Ruleset rs = test::tiny_ruleset();
  auto& rules = rs.chains.at("web").rules;
  const ir::Rule like = rules.at(1);  // tcp 80, accept
  auto with = [&](std::vector<ir::AddrMatch> src, ir::ActionKind kind) {
    ir::Rule r = like;
    r.match.src_addr = ir::AddrMatches(src.begin(), src.end());
    r.action.kind = kind;
    return r;
  };
  const auto net = [](const char* text) { return *ir::parse_cidr(text); };
  rules = {with({{false, net("10.0.0.0/8")}}, ir::ActionKind::accept),
           with({{false, net("::/0")}}, ir::ActionKind::drop),
           with({{true, net("0.0.0.0/0")}}, ir::ActionKind::drop),
           with({{false, net("10.0.0.0/8")}, {false, net("10.1.0.0/16")}}, ir::ActionKind::drop)};
  Model m = render_ok(rs);
  const auto v4 = bare(chain(table(m, IpFamily::v4, "filter"), "fwe-c-web"));
  REQUIRE(v4.size() == 2);
  CHECK(v4[0] == "-s 10.0.0.0/8 -p tcp -m multiport --dports 80 -g fwe-accepted");
  // The second of two ANDed addresses is an ipset, named after the CIDR.
  CHECK(v4[1].starts_with("-s 10.0.0.0/8 -p tcp -m set --match-set fwe-4-10.1.0.0_16_"));
  CHECK(v4[1].ends_with(" src -m multiport --dports 80 -j DROP"));
  const auto v6 = bare(chain(table(m, IpFamily::v6, "filter"), "fwe-c-web"));
  CHECK(v6 == std::vector<std::string>{"-p tcp -m multiport --dports 80 -j DROP",
                                       "-p tcp -m multiport --dports 80 -j DROP"});
}

TEST_CASE("raw, mangle and nat get notrack, allow and NAT targets") {
  Model m = render_ok(test::sample_ruleset());
  CHECK(bare(chain(table(m, IpFamily::v4, "raw"), "fwe-c-untracked")) ==
        std::vector<std::string>{"-p udp -m multiport --dports 5353 -j CT --notrack"});
  CHECK(bare(chain(table(m, IpFamily::v4, "raw"), "fwe-untracked-in"))[0] ==
        "-j MARK --set-xmark 0x0/0xf0000000");
  CHECK(bare(chain(table(m, IpFamily::v4, "nat"), "fwe-c-port-forward")) ==
        std::vector<std::string>{"-p tcp -m multiport --dports 8080 -j DNAT --to-destination 10.1.2.3:80"});
  // An IPv4 target: in ip6tables the chain would be empty, so neither it nor a jump to it is there.
  CHECK(table(m, IpFamily::v6, "nat").find("fwe-c-port-forward") == nullptr);
  for (const auto& c : table(m, IpFamily::v6, "nat").chains)
    for (const auto& rule : c.rules) CHECK(rule.find("fwe-c-port-forward") == std::string::npos);
  CHECK(bare(chain(table(m, IpFamily::v4, "nat"), "fwe-c-masq")) ==
        std::vector<std::string>{
            "-o uplink -j MASQUERADE",
            "-s 10.0.0.0/8 -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j MASQUERADE"});
  // No conntrack prelude in nat: established packets never get there.
  const auto& dnat_ep = bare(chain(table(m, IpFamily::v4, "nat"), "fwe-e-dn0-dnat"));
  CHECK(std::none_of(dnat_ep.begin(), dnat_ep.end(),
                     [](const std::string& r) { return r.find("conntrack") != std::string::npos; }));
  CHECK(bare(chain(table(m, IpFamily::v4, "mangle"), "fwe-c-prednat-allow")) ==
        std::vector<std::string>{"-s 10.0.0.0/8 -g fwe-allow"});
}

TEST_CASE("a conntrack helper rule carries its protocol in each of its alternatives") {
  ir::Ruleset rs = test::sample_ruleset();
  ir::Rule helper;
  helper.match.protocols = std::vector<std::uint8_t>{17};
  helper.match.src_addr.push_back({false, "small"});
  helper.match.family = ir::Family::ipv4;
  helper.action.kind = ir::ActionKind::ct_helper;
  helper.action.target = "tftp";
  rs.chains["untracked"].rules = {helper};
  auto& small = rs.sets["small"].cidrs;  // normalised, as backends get sets: IPv4 first
  small.insert(small.begin() + 1, *ir::parse_cidr("198.51.100.0/24"));
  Model m = render_ok(rs);
  CHECK(bare(chain(table(m, IpFamily::v4, "raw"), "fwe-c-untracked")) ==
        std::vector<std::string>{"-s 192.0.2.0/28 -p udp -j CT --helper tftp",
                                 "-s 198.51.100.0/24 -p udp -j CT --helper tftp"});
}

// The first lines fwe-meta records, as read_back reads them.
stamps::Positions recorded_positions(const Model& m) {
  stamps::Positions positions;
  for (const auto& t : with_meta(m, IpFamily::v4, "h1", set_digests(m.sets)))
    if (const ChainDef* meta = t.find(kMetaChain))
      for (const auto& rule : meta->rules)
        if (auto first = first_line_of(rule); !first.key.empty()) positions.add(first.key, first.text);
  return positions;
}

TEST_CASE("every rule carries a stamp of its content and its origin, its line counted from its policy's") {
  Model m = render_ok(test::sample_ruleset());
  const auto& web = chain(table(m, IpFamily::v4, "filter"), "fwe-c-web");
  CHECK(web.rules[0].find("-m comment --comment \"fwe:") != std::string::npos);
  const std::string stamp = origin_stamp_of(web.rules[0]);
  CHECK(stamp.starts_with("policy.yaml:+"));
  CHECK(stamp.ends_with(" test policy"));
  CHECK(recorded_positions(m).absolute(stamp) == "policy.yaml:11:3 test policy");
  for (const auto& t : m.family(IpFamily::v4))
    for (const auto& c : t.chains)
      for (const auto& r : c.rules) CHECK(stamp_of(r) == "fwe:" + content_hash(c.name, r));
}

TEST_CASE("lines inserted above a policy change fwe-meta's record of its first line, not its rules") {
  const ir::Ruleset rs = test::sample_ruleset();
  Model before = render_ok(rs), after = render_ok(test::moved_down(rs, 5));
  for (IpFamily f : {IpFamily::v4, IpFamily::v6})
    CHECK(restore_text(before.family(f)) == restore_text(after.family(f)));
  CHECK(restore_text(with_meta(before, IpFamily::v4, "h1", set_digests(before.sets))) !=
        restore_text(with_meta(after, IpFamily::v4, "h1", set_digests(after.sets))));
  // Only IPv4's fwe-meta records the first lines; the same stamp reads as the line it is on now.
  CHECK(restore_text(with_meta(before, IpFamily::v6, "h1", set_digests(before.sets))) ==
        restore_text(with_meta(after, IpFamily::v6, "h1", set_digests(after.sets))));
  const std::string stamp =
      origin_stamp_of(chain(table(after, IpFamily::v4, "filter"), "fwe-c-web").rules[0]);
  CHECK(recorded_positions(after).absolute(stamp) == "policy.yaml:16:3 test policy");
}

TEST_CASE("chain names longer than 27 characters are shortened with a hash") {
  auto rs = test::tiny_ruleset("a-very-long-policy-name-that-does-not-fit-anywhere");
  Model m = render_ok(rs);
  for (const auto& t : m.family(IpFamily::v4))
    for (const auto& c : t.chains) {
      CHECK(c.name.size() <= 27);
      CHECK(in_slot(c.name, 2).size() <= 28);  // iptables' limit, in either slot
    }
  const auto& filter = table(m, IpFamily::v4, "filter");
  CHECK(std::any_of(filter.chains.begin(), filter.chains.end(),
                    [](const ChainDef& c) { return c.name.rfind("fwe-c-a-very-long-_", 0) == 0; }));
}

TEST_CASE("what iptables cannot do is refused at the rule's origin") {
  auto rs = test::tiny_ruleset();
  ir::Rule bad;
  bad.origin = {SourceLoc{1, 42, 7}, "p", 0};
  bad.action.kind = ir::ActionKind::reject;
  rs.chains["port-forward"] = {"port-forward", {bad}, {}};
  ir::Endpoint ep;
  ep.name = "dn";
  ep.groups.push_back({"g", {"port-forward"}, ir::Verdict::continue_, {}, {}});
  rs.stage(ir::Stage::prednat).sections.push_back({"s", false, {ep}});
  Diagnostics diag;
  render(rs, diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all()[0].loc.line == 42);
  CHECK(diag.all()[0].message.find("reject in the mangle table") != std::string::npos);
  CHECK(!diag.all()[0].hint.empty());
}

TEST_CASE(
    "a rule of one family's addresses is no work in the other, but one that matches in neither is checked") {
  auto rs = test::tiny_ruleset();
  rs.sets["v4-only"] = ir::AddrSet{{*ir::parse_cidr("192.0.2.0/24")}, {}};
  rs.sets["empty"] = ir::AddrSet{};
  ir::Rule allow;
  allow.origin = {SourceLoc{1, 10, 3}, "p", 0};
  allow.action.kind = ir::ActionKind::allow;
  allow.match.src_addr.push_back({false, "v4-only"});
  rs.chains["v4"] = {"v4", {allow}, {}};
  ir::Endpoint ep;
  ep.name = "v4";
  ep.groups.push_back({"g", {"v4"}, ir::Verdict::continue_, {}, {}});
  rs.stage(ir::Stage::prednat).sections.push_back({"s", false, {ep}});
  const Model m = render_ok(rs);
  CHECK(table(m, IpFamily::v4, "mangle").find("fwe-allow") != nullptr);
  CHECK(table(m, IpFamily::v6, "mangle").find("fwe-allow") == nullptr);  // no helper nothing jumps to

  // A set with no address in either family (a selector that selects nothing yet): the rule makes no
  // iptables rule, and what iptables could not do is still said.
  ir::Rule bad = allow;
  bad.origin.loc.line = 11;
  bad.action.kind = ir::ActionKind::reject;
  bad.match.src_addr = {};
  bad.match.src_addr.push_back({false, "empty"});
  rs.chains["v4"].rules.push_back(bad);
  Diagnostics diag;
  render(rs, diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all()[0].loc.line == 11);
  CHECK(diag.all()[0].message.find("reject in the mangle table") != std::string::npos);
}

TEST_CASE("an interface name no interface can have (firewalld takes eth0:1) is written, and never matches") {
  auto rs = test::tiny_ruleset();
  ir::Rule rule;
  rule.match.iif = std::vector<ir::IfacePattern>{{"eth0:1", false}};
  rule.action.kind = ir::ActionKind::accept;
  rs.chains.begin()->second.rules.push_back(rule);
  Diagnostics diag;
  render(rs, diag);
  CHECK_FALSE(diag.has_errors());
}

TEST_CASE("an interface name iptables-restore cannot read as one word is refused at its origin") {
  for (const auto& [name, prefix] :
       {std::pair{"eth\"0", false}, std::pair{"eth 0", false}, std::pair{"a-very-long-name0", false},
        std::pair{"", false}, std::pair{"abcdefghijklmnop", true}, std::pair{"eth\x01", false},
        std::pair{"eth\x7f", true}, std::pair{"eth\t0", false}}) {
    INFO(name);
    auto rs = test::tiny_ruleset();
    ir::Rule rule;
    rule.origin = {SourceLoc{1, 8, 7}, "c", 0};
    rule.match.iif = std::vector<ir::IfacePattern>{{name, prefix}};
    rule.action.kind = ir::ActionKind::accept;
    rs.chains.begin()->second.rules.push_back(rule);
    Diagnostics diag;
    render(rs, diag);
    REQUIRE(diag.error_count() == 1);
    CHECK(diag.all()[0].loc.line == 8);
    CHECK(diag.all()[0].message.find("bad interface name") != std::string::npos);
  }
}

TEST_CASE(
    "a prefix of 15 characters, the longest name, is written as that name: iptables has no room for '+'") {
  auto rs = test::tiny_ruleset();
  ir::Rule rule;
  rule.match.iif = std::vector<ir::IfacePattern>{{"abcdefghijklmno", true}};
  rule.action.kind = ir::ActionKind::accept;
  rs.chains.begin()->second.rules.push_back(rule);
  Model m = render_ok(rs);
  const auto rules = bare(chain(table(m, IpFamily::v4, "filter"), "fwe-c-" + rs.chains.begin()->first));
  CHECK(std::find(rules.begin(), rules.end(), "-i abcdefghijklmno -g fwe-accepted") != rules.end());
}

TEST_CASE("render text is the ipset and iptables-restore input") {
  Model m = render_ok(test::tiny_ruleset());
  std::string text = plan_text(m, "abc123");
  CHECK(text.find(
            "# ipset restore -exist\ncreate fwe0-any4 hash:net family inet\nadd fwe0-any4 0.0.0.0/1\n") == 0);
  CHECK(text.find("create fwe-gate list:set\nadd fwe-gate fwe0-any4\nadd fwe-gate fwe0-any6\n"
                  "create fwe-4-admins hash:net family inet maxelem 65536\nadd fwe-4-admins 203.0.113.0\n") !=
        std::string::npos);
  CHECK(text.find("# iptables-legacy-restore --noflush\n*filter\n:fwe-input - [0:0]\n") != std::string::npos);
  CHECK(
      text.find("-I INPUT 1 -m set --match-set fwe-gate src -m comment --comment \"fwe:hook\" -j fwe-input\n"
                "COMMIT\n") != std::string::npos);
  CHECK(text.find("-A fwe-meta -m comment --comment \"fwe:ir abc123 rules ") != std::string::npos);
  CHECK(text.find("# ip6tables-legacy-restore --noflush\n*filter\n") != std::string::npos);
}

TEST_CASE("transition rewrites only what changed and removes what is gone") {
  Model m = render_ok(test::tiny_ruleset());
  // In slot 1, as the kernel holds it.
  auto want = with_meta(m, IpFamily::v4, "h1", set_digests(m.sets));
  for (auto& t : want)
    for (auto& c : t.chains) {
      c.name = in_slot(c.name, 1);
      for (auto& r : c.rules) r = spec_in_slot(r, 1);
    }
  for (auto& t : want)
    for (auto& h : t.hooks) h.target = in_slot(h.target, 1);
  // As if iptables-legacy-save showed exactly what we loaded, beside an admin's fwe-admin chain (not
  // ours: no slot) and a rule whose comment names our chain.
  std::string saved = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";
  for (const auto& c : want[0].chains) saved += ":" + c.name + " - [0:0]\n";
  saved += ":fwe-admin - [0:0]\n-A INPUT -m comment --comment \"see -j fwe1-input here\" -j DOCKER-USER\n";
  saved += "-A INPUT " + hook_spec("fwe1-input") + "\n-A INPUT -j fwe-admin\n";
  for (const auto& c : want[0].chains)
    for (const auto& r : c.rules) saved += "-A " + c.name + " " + r + "\n";
  saved += "-A fwe-admin -j DROP\n:fwe1-old - [0:0]\n-A fwe1-old -j ACCEPT\nCOMMIT\n";
  auto now = parse_save(saved);
  REQUIRE(now.size() == 1);
  CHECK(now[0].hooks.size() == 1);
  CHECK(now[0].hooks[0].position == 2);
  CHECK(now[0].chains.size() == want[0].chains.size() + 1);  // and fwe1-old
  // The hook is not first: it moves to the top; fwe1-old goes; nothing else is rewritten.
  // It is deleted by its spec: a rule inserted above it since the save was read moves its position.
  CHECK(transition(now, want, false) == "*filter\n-D INPUT " + hook_spec("fwe1-input") + "\n-I INPUT 1 " +
                                            hook_spec("fwe1-input") + "\n-F fwe1-old\n-X fwe1-old\nCOMMIT\n");
  // Everything away, but the admin's.
  std::string gone = transition(now, {}, false);
  CHECK(gone.find("-D INPUT " + hook_spec("fwe1-input") + "\n") != std::string::npos);
  CHECK(gone.find("-X fwe1-input\n") != std::string::npos);
  CHECK(gone.find("DOCKER") == std::string::npos);
  CHECK(gone.find("admin") == std::string::npos);
  // First but with a copy further down: a delete by the spec would take the first, so both go and the
  // hook comes anew at the top.
  std::string doubled = saved;
  const std::size_t first = doubled.find("-A INPUT -m comment");
  doubled.erase(first, doubled.find('\n', first) + 1 - first);
  doubled.replace(doubled.find(":fwe1-old"), 0, "-A INPUT " + hook_spec("fwe1-input") + "\n");
  auto twice = parse_save(doubled);
  REQUIRE(twice[0].hooks.size() == 2);
  CHECK(twice[0].hooks[0].position == 1);
  CHECK(transition(twice, want, false) ==
        "*filter\n-D INPUT " + hook_spec("fwe1-input") + "\n-D INPUT " + hook_spec("fwe1-input") +
            "\n-I INPUT 1 " + hook_spec("fwe1-input") + "\n-F fwe1-old\n-X fwe1-old\nCOMMIT\n");
}

TEST_CASE("ct-status is the conntrack match's SNAT/DNAT virtual states, apart from --ctstate states") {
  auto rs = test::tiny_ruleset();
  ir::Rule nated;
  nated.action.kind = ir::ActionKind::accept;
  nated.match.ct_status = std::vector<ir::CtStatus>{ir::CtStatus::dnat, ir::CtStatus::snat};
  ir::Rule new_dnatted;
  new_dnatted.action.kind = ir::ActionKind::drop;
  new_dnatted.match.ct_states = std::vector<ir::CtState>{ir::CtState::new_};
  new_dnatted.match.ct_negate = true;
  new_dnatted.match.ct_status = std::vector<ir::CtStatus>{ir::CtStatus::dnat};
  rs.chains.begin()->second.rules = {nated, new_dnatted};
  Model m = render_ok(rs);
  for (IpFamily f : {IpFamily::v4, IpFamily::v6})
    CHECK(bare(chain(table(m, f, "filter"), "fwe-c-web")) ==
          std::vector<std::string>{"-m conntrack --ctstate SNAT,DNAT -g fwe-accepted",
                                   "-m conntrack ! --ctstate NEW -m conntrack --ctstate DNAT -j DROP"});
}

TEST_CASE("ct-orig-dport is the conntrack match's --ctorigdstport, one range per rule") {
  auto rs = test::tiny_ruleset();
  ir::Rule forwarded;
  forwarded.action.kind = ir::ActionKind::accept;
  forwarded.match.ct_status = std::vector<ir::CtStatus>{ir::CtStatus::dnat};
  forwarded.match.ct_orig_dport.push_back({false, {{2223, 2223}, {8000, 8080}}});
  ir::Rule not_ssh;
  not_ssh.action.kind = ir::ActionKind::drop;
  not_ssh.match.protocols = std::vector<std::uint8_t>{6};
  not_ssh.match.ct_orig_dport.push_back({true, {{22, 22}}});
  rs.chains.begin()->second.rules = {forwarded, not_ssh};
  Model m = render_ok(rs);
  CHECK(bare(chain(table(m, IpFamily::v4, "filter"), "fwe-c-web")) ==
        std::vector<std::string>{
            "-p tcp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 2223 -g fwe-accepted",
            "-p tcp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 8000:8080 -g fwe-accepted",
            "-p udp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 2223 -g fwe-accepted",
            "-p udp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 8000:8080 -g fwe-accepted",
            "-p dccp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 2223 -g fwe-accepted",
            "-p dccp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 8000:8080 -g fwe-accepted",
            "-p sctp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 2223 -g fwe-accepted",
            "-p sctp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 8000:8080 -g fwe-accepted",
            "-p udplite -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 2223 -g fwe-accepted",
            "-p udplite -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 8000:8080 -g fwe-accepted",
            "-p tcp -m conntrack ! --ctorigdstport 22 -j DROP"});
}

TEST_CASE("dnat-out is the nat table's OUTPUT chain") {
  auto rs = test::tiny_ruleset();
  ir::Rule dnat;
  dnat.action.kind = ir::ActionKind::dnat;
  dnat.match.protocols = std::vector<std::uint8_t>{6};
  dnat.match.dst_port.push_back({false, {{8081, 8081}}});
  dnat.action.nat_addr = ir::parse_ip("10.88.0.2");
  dnat.action.nat_port = ir::PortRange{8080, 8080};
  rs.chains["host-nat"] = {"host-nat", {dnat}, {}};
  ir::Endpoint host;
  host.name = "host";
  host.groups.push_back({"policies", {"host-nat"}, ir::Verdict::continue_, {}, {}});
  rs.stage(ir::Stage::dnat_out).sections.push_back({"host", false, {host}});
  Model m = render_ok(rs);
  const auto& nat = table(m, IpFamily::v4, "nat");
  std::vector<std::string> hooks;
  for (const auto& h : nat.hooks) hooks.push_back(h.builtin + " " + h.target);
  CHECK(hooks == std::vector<std::string>{"OUTPUT fwe-dnat-out"});
  CHECK(
      bare(chain(nat, "fwe-c-host-nat")) ==
      std::vector<std::string>{"-p tcp -m multiport --dports 8081 -j DNAT --to-destination 10.88.0.2:8080"});
}

TEST_CASE("long port lists, rates, IPv6 reject types and NAT addresses as iptables prints them") {
  auto rs = test::tiny_ruleset();
  ir::Rule many;
  many.action.kind = ir::ActionKind::reject;
  many.action.reject_with = "icmp-admin-prohibited";
  many.match.protocols = std::vector<std::uint8_t>{17};
  ir::PortSet twenty, others;
  for (std::uint16_t p = 1; p <= 20; ++p)
    twenty.push_back({static_cast<std::uint16_t>(p * 2), static_cast<std::uint16_t>(p * 2)});
  many.match.dst_port.push_back({false, twenty});
  many.match.src_port.push_back({true, twenty});
  ir::Rule slow;
  slow.action.kind = ir::ActionKind::accept;
  slow.match.rate_limit = ir::RateLimit{120, "hour", 0};
  rs.chains.begin()->second.rules = {many, slow};
  Model m = render_ok(rs);
  auto v4 = bare(chain(table(m, IpFamily::v4, "filter"), "fwe-c-web"));
  const std::string first15 = "2,4,6,8,10,12,14,16,18,20,22,24,26,28,30", last5 = "32,34,36,38,40";
  const std::string not_sports = "-m multiport ! --sports " + first15 + " -m multiport ! --sports " + last5;
  CHECK(v4 == std::vector<std::string>{"-p udp " + not_sports + " -m multiport --dports " + first15 +
                                           " -j REJECT --reject-with icmp-admin-prohibited",
                                       "-p udp " + not_sports + " -m multiport --dports " + last5 +
                                           " -j REJECT --reject-with icmp-admin-prohibited",
                                       "-m limit --limit 2/min -g fwe-accepted"});
  auto v6 = bare(chain(table(m, IpFamily::v6, "filter"), "fwe-c-web"));
  CHECK(v6[0].find("--reject-with icmp6-adm-prohibited") != std::string::npos);

  ir::Rule dnat;
  dnat.action.kind = ir::ActionKind::dnat;
  dnat.action.nat_addr = ir::parse_ip("2001:db8::5");
  dnat.action.nat_port = ir::PortRange{8080, 8090};
  dnat.match.protocols = std::vector<std::uint8_t>{6, 17, 33, 132};
  rs.chains["nat"] = {"nat", {dnat}, {}};
  ir::Endpoint ep;
  ep.name = "all";
  ep.groups.push_back({"g", {"nat"}, ir::Verdict::continue_, {}, {}});
  rs.stage(ir::Stage::dnat).sections.push_back({"s", false, {ep}});
  Model nat = render_ok(rs);
  CHECK(bare(chain(table(nat, IpFamily::v6, "nat"), "fwe-c-nat")) ==
        std::vector<std::string>{"-p tcp -j DNAT --to-destination [2001:db8::5]:8080-8090",
                                 "-p udp -j DNAT --to-destination [2001:db8::5]:8080-8090",
                                 "-p dccp -j DNAT --to-destination [2001:db8::5]:8080-8090",
                                 "-p sctp -j DNAT --to-destination [2001:db8::5]:8080-8090"});
  CHECK(table(nat, IpFamily::v4, "nat").find("fwe-c-nat") == nullptr);  // empty in iptables
}

TEST_CASE("what iptables would read otherwise is refused at its rule") {
  // Each rule alone in the tiny ruleset's chain: the message its render gives.
  auto refusal = [](const ir::Rule& rule, ir::Stage stage = ir::Stage::input) {
    auto rs = test::tiny_ruleset();
    rs.chains.begin()->second.rules = {rule};
    if (stage != ir::Stage::input) {  // a NAT stage, where nothing is dropped
      rs.stage(stage).sections = std::move(rs.stage(ir::Stage::input).sections);
      rs.stage(ir::Stage::input).sections.clear();
      for (auto& section : rs.stage(stage).sections)
        for (auto& ep : section.endpoints) ep.default_verdict = ir::Verdict::continue_;
    }
    Diagnostics diag;
    render(rs, diag);
    return diag.has_errors() ? diag.all()[0].message : std::string("rendered");
  };
  ir::Rule rule;
  rule.action.kind = ir::ActionKind::drop;
  rule.match.protocols = std::vector<std::uint8_t>{0};  // -p 0 is every protocol
  CHECK(refusal(rule) == "iptables cannot match protocol 0: to iptables, -p 0 is every protocol");
  rule.match.protocols = std::vector<std::uint8_t>{1};
  rule.match.icmp = ir::IcmpMatch{false, false, 255, std::nullopt};  // the icmp match's "any type"
  CHECK(refusal(rule) == "iptables cannot match ICMP type 255: its icmp match reads 255 as any type");
  rule.match.icmp->v6 = true;  // icmp6 has no such type
  rule.match.protocols = std::vector<std::uint8_t>{58};
  CHECK(refusal(rule) == "rendered");

  ir::Rule limited;
  limited.action.kind = ir::ActionKind::accept;
  limited.match.rate_limit = ir::RateLimit{600001, "minute", 0};  // an interval of 0
  CHECK(refusal(limited) == "iptables cannot limit to 600001/minute");
  limited.match.rate_limit = ir::RateLimit{600000, "minute", 0};
  CHECK(refusal(limited) == "rendered");
  limited.match.rate_limit = ir::RateLimit{10, "second", 10001};
  CHECK(refusal(limited) == "iptables cannot take a burst of 10001");
  limited.match.rate_limit = ir::RateLimit{1, "day", 0};  // 864000000 * 5 overflows the kernel's bucket
  CHECK(refusal(limited) ==
        "iptables cannot limit to 1/day with a burst of 5: the kernel's bucket would overflow");
  limited.match.rate_limit = ir::RateLimit{1, "day", 2};  // past the credits of HZ 300's 32 bits
  CHECK(refusal(limited) ==
        "iptables cannot limit to 1/day with a burst of 2: the kernel's bucket would overflow");
  limited.match.rate_limit = ir::RateLimit{1, "day", 1};
  CHECK(refusal(limited) == "rendered");
  limited.match.rate_limit = ir::RateLimit{1, "hour", 31};
  CHECK(refusal(limited) == "rendered");
  limited.match.rate_limit = ir::RateLimit{1, "hour", 32};
  CHECK(refusal(limited) ==
        "iptables cannot limit to 1/hour with a burst of 32: the kernel's bucket would overflow");

  ir::Rule dnat;
  dnat.action.kind = ir::ActionKind::dnat;
  dnat.action.nat_addr = ir::parse_ip("192.0.2.5");
  dnat.action.nat_port = ir::PortRange{8080, 8080};
  dnat.match.protocols = std::vector<std::uint8_t>{17, 136};
  CHECK(refusal(dnat, ir::Stage::dnat) == "iptables cannot NAT UDPLite packets to a port");
  dnat.match.protocols = std::vector<std::uint8_t>{17};
  CHECK(refusal(dnat, ir::Stage::dnat) == "rendered");
}

TEST_CASE("slots rename our chains and sets, and nothing in quotes") {
  CHECK(slot_of("fwe-input") == 0);
  CHECK(slot_of("fwe1-input") == 1);
  CHECK(slot_of("fwe2-4-admins") == 2);
  CHECK(slot_of("fwe0-any4") == kHelperSlot);
  CHECK(slot_of("fwe3-x") == kNoSlot);
  CHECK(slot_of("KUBE-SERVICES") == kNoSlot);
  CHECK(in_slot("fwe-c-web", 1) == "fwe1-c-web");
  CHECK(in_slot("fwe1-c-web", 2) == "fwe2-c-web");
  CHECK(in_slot("fwe2-c-web", 0) == "fwe-c-web");
  CHECK(in_slot("fwe0-any4", 1) == "fwe0-any4");
  CHECK(in_slot("DOCKER", 1) == "DOCKER");
  const std::string spec =
      "-m set ! --match-set fwe-4-admins src -m comment --comment \"fwe:0123456789abcdef fwe-p.yaml:1:2 -j "
      "fwe-x\" -j fwe-c-web";
  const std::string moved = spec_in_slot(spec, 2);
  CHECK(
      moved ==
      "-m set ! --match-set fwe2-4-admins src -m comment --comment \"fwe:0123456789abcdef fwe-p.yaml:1:2 -j "
      "fwe-x\" -j fwe2-c-web");
  CHECK(spec_in_slot(moved, 0) == spec);
  // A rule keeps its stamp in either slot.
  CHECK(content_hash("fwe1-c-web", spec_in_slot(spec, 1)) == content_hash("fwe-c-web", spec));
  // Quoting aside (a save may leave out quotes we wrote), but not the spaces inside them: a log prefix
  // changed by a trailing or doubled space is a changed rule, which an apply loads.
  const auto logs = [](const char* prefix) {
    return content_hash("fwe-c", std::string("-j LOG --log-prefix ") + prefix + " --log-level 6");
  };
  CHECK(logs("\"DROP\"") == logs("DROP"));
  CHECK(logs("\"DROP \"") != logs("\"DROP\""));
  CHECK(logs("\"a  b\"") != logs("\"a b\""));
  CHECK(hook_spec("fwe2-input") ==
        "-m set --match-set fwe2-gate src -m comment --comment \"fwe:hook\" -j fwe2-input");
}

TEST_CASE("rpf is the rpfilter match with the packet's mark, only before routing") {
  auto rs = test::tiny_ruleset();
  ir::Rule spoofed;
  spoofed.action.kind = ir::ActionKind::drop;
  spoofed.match.rpf = ir::RpfMode::strict;
  spoofed.match.rpf_negate = true;
  ir::Rule routed;
  routed.action.kind = ir::ActionKind::log;
  routed.match.rpf = ir::RpfMode::loose;
  rs.chains.begin()->second.rules = {spoofed, routed};
  Diagnostics diag;
  render(rs, diag);
  REQUIRE(diag.has_errors());
  CHECK(diag.all()[0].message.find(
            "checks the reverse path (rpf) in input; iptables can check it only before routing") !=
        std::string::npos);
  rs.stage(ir::Stage::prednat).sections = std::move(rs.stage(ir::Stage::input).sections);
  rs.stage(ir::Stage::input).sections.clear();
  Model m = render_ok(rs);
  for (IpFamily f : {IpFamily::v4, IpFamily::v6})
    CHECK(bare(chain(table(m, f, "mangle"), "fwe-c-web")) ==
          std::vector<std::string>{"-m rpfilter --validmark --invert -j DROP",
                                   "-m rpfilter --loose --validmark -j LOG"});
}

TEST_CASE("a conntrack helper after conntrack is left out with a warning, the rest renders") {
  auto rs = test::tiny_ruleset();
  ir::Rule helper;
  helper.match.protocols = std::vector<std::uint8_t>{6};
  helper.match.dst_port.push_back({false, {{21, 21}}});
  helper.action.kind = ir::ActionKind::ct_helper;
  helper.action.target = "ftp";
  auto& rules = rs.chains.begin()->second.rules;
  rules.insert(rules.begin(), helper);
  Diagnostics diag;
  Model m = render(rs, diag);
  CHECK_FALSE(diag.has_errors());
  REQUIRE(diag.all().size() == 1);
  CHECK(diag.all()[0].severity == Severity::warning);
  CHECK(diag.all()[0].message.find("helper 'ftp' in the filter table is left out") != std::string::npos);
  Model without = render_ok(test::tiny_ruleset());
  for (IpFamily f : {IpFamily::v4, IpFamily::v6})
    CHECK(bare(chain(table(m, f, "filter"), "fwe-c-web")) ==
          bare(chain(table(without, f, "filter"), "fwe-c-web")));
}

TEST_CASE(
    "a run of rules that differ in one address, one port and the protocol is one hash:net,port lookup") {
  Model m = render_ok(test::runs_ruleset());
  CHECK(bare(chain(table(m, IpFamily::v4, "filter"), "fwe-c-list")) ==
        std::vector<std::string>{"-m set --match-set fwe-4r-filter-list-0 src,dst -g fwe-accepted",
                                 "-s 10.0.0.0/16 -p tcp -m multiport --dports 1000 -g fwe-accepted",
                                 "-m set --match-set fwe-4r-filter-list-1 dst,dst -g fwe-accepted"});
  // IPv6 has one rule of the list: too short a run.
  CHECK(bare(chain(table(m, IpFamily::v6, "filter"), "fwe-c-list")) ==
        std::vector<std::string>{"-s 2001:db8::/64 -p tcp -m multiport --dports 1002 -g fwe-accepted"});
  REQUIRE(m.sets.size() == 2);
  const SetDef& sources = m.sets[0];
  CHECK(sources.name == "fwe-4r-filter-list-0");
  CHECK(sources.type == "hash:net,port");
  CHECK(test::strings_of(sources.members) ==
        std::vector<std::string>{"10.0.0.0/24,tcp:1000", "10.0.1.0/24,tcp:1001", "10.0.3.0/24,udp:1003",
                                 "10.0.4.0/24,tcp:1004"});
  // Lines counted from the policy's first line (5), as rules' stamps count them.
  CHECK(test::strings_of(sources.comments) ==
        std::vector<std::string>{"runs.yaml:+5:3 test policy", "runs.yaml:+6:3 test policy",
                                 "runs.yaml:+8:3 test policy", "runs.yaml:+9:3 test policy"});
  CHECK(recorded_positions(m).absolute(sources.comments[2]) == "runs.yaml:13:3 test policy");
  CHECK(m.sets[1].members[0] == "127.0.0.2,tcp:7002");
  std::string text = plan_text(m, "h");
  CHECK(text.find("create fwe-4r-filter-list-0 hash:net,port family inet maxelem 65536 counters comment\n") !=
        std::string::npos);
  // Restored with protocol numbers (ipset reads a name from /etc/protocols for every member), listed
  // and compared with names, as ipset lists them.
  CHECK(text.find("add fwe-4r-filter-list-0 10.0.3.0/24,17:1003 comment \"runs.yaml:+8:3 test policy\"\n") !=
        std::string::npos);
}

TEST_CASE("a run longer than 8,192 rules is one set, and a port all its rules share keeps it one") {
  for (std::uint16_t ports : {1000, 1}) {
    Model m = render_ok(test::long_run_ruleset(9000, ports));
    INFO(ports << " ports");
    CHECK(bare(chain(table(m, IpFamily::v4, "filter"), "fwe-c-list")) ==
          std::vector<std::string>{"-m set --match-set fwe-4r-filter-list-0 src,dst -g fwe-accepted"});
    REQUIRE(m.sets.size() == 1);
    CHECK(m.sets[0].members.size() == 9000);
    // Buckets for two members each from the start: no rehash of the whole set while it fills.
    CHECK(ipset_create_line(m.sets[0], "s") ==
          "create s hash:net,port family inet hashsize 8192 maxelem 65536 counters comment");
  }
}

TEST_CASE("packed strings give back what they took, across their blocks of 64 KiB") {
  PackedStrings list;
  std::vector<std::string> taken;
  for (std::size_t i = 0; i < 5000; ++i) {
    // Lengths 0..60: blocks end short of 64 KiB, with the next string in a block of its own.
    taken.push_back(std::string(i % 61, static_cast<char>('a' + i % 26)));
    list.push_back(taken.back());
  }
  taken.push_back(std::string(64 * 1024, 'z'));  // a whole block
  list.push_back(taken.back());
  taken.emplace_back();
  list.push_back(taken.back());
  CHECK(test::strings_of(list) == taken);
  CHECK(list.size() == taken.size());
  CHECK_THROWS_AS(list.push_back(std::string(64 * 1024 + 1, 'z')), std::length_error);
  CHECK(list.size() == taken.size());
}

TEST_CASE(
    "a run ends at the first rule with a network inside or around one of an earlier rule's, same port") {
  for (std::uint32_t seed = 1; seed <= 20; ++seed) {
    INFO("seed " << seed);
    const ir::Ruleset rs = test::nested_ruleset(seed, 300);
    const auto& rules = rs.find_chain("list")->rules;
    auto members_of = [&](std::size_t k) {
      std::vector<std::pair<ir::Cidr, std::uint16_t>> out;
      for (const auto& range : rules[k].match.dst_port[0].ports)
        for (std::uint32_t port = range.lo; port <= range.hi; ++port)
          out.emplace_back(rules[k].match.src_addr[0].cidr, static_cast<std::uint16_t>(port));
      return out;
    };
    auto overlap = [&](std::size_t a, std::size_t b) {
      for (const auto& [x, x_port] : members_of(a))
        for (const auto& [y, y_port] : members_of(b))
          if (x_port == y_port && (contains(x, y.addr) || contains(y, x.addr))) return true;
      return false;
    };
    for (const ir::Family family : {ir::Family::ipv4, ir::Family::ipv6}) {
      // The runs of the family's rules (the others are skipped): a rule that overlaps a member of the
      // run so far starts the next.
      std::vector<std::vector<std::size_t>> runs;
      for (std::size_t k = 0; k < rules.size(); ++k) {
        if (rules[k].match.src_addr[0].cidr.addr.family != family) continue;
        if (runs.empty() ||
            std::any_of(runs.back().begin(), runs.back().end(), [&](std::size_t j) { return overlap(j, k); }))
          runs.emplace_back();
        runs.back().push_back(k);
      }
      std::vector<std::vector<std::string>> expected;
      for (const auto& run : runs) {
        if (run.size() < 4) continue;  // too short: rules of their own
        auto& members = expected.emplace_back();
        for (std::size_t k : run)
          for (const auto& [c, port] : members_of(k))
            members.push_back((c.prefix == c.addr.width() ? to_string(c.addr) : to_string(c)) +
                              ",tcp:" + std::to_string(port));
      }
      const Model m = render_ok(rs);
      const std::string prefix = family == ir::Family::ipv4 ? "fwe-4r-" : "fwe-6r-";
      std::vector<std::vector<std::string>> sets;
      for (const auto& set : m.sets) {  // named ...-0, -1, ... in the order of their runs
        if (set.name.rfind(prefix, 0) != 0) continue;
        const std::size_t number = std::stoul(set.name.substr(set.name.rfind('-') + 1));
        if (sets.size() <= number) sets.resize(number + 1);
        sets[number] = test::strings_of(set.members);
      }
      CHECK(sets == expected);
    }
  }
}

TEST_CASE("consecutive chains of one shape are one chain whose runs merge across them") {
  Model m = render_ok(test::fusion_ruleset());
  const TableDef& filter = table(m, IpFamily::v4, "filter");
  std::vector<std::string> jumps;
  for (const auto& spec : bare(chain(filter, "fwe-e-in0-all")))
    if (spec.find(" -j fwe-c-") != std::string::npos) jumps.push_back(spec.substr(spec.find("-j ")));
  CHECK(jumps == std::vector<std::string>{"-j fwe-c-a..b", "-j fwe-c-d", "-j fwe-c-c"});
  CHECK(bare(chain(filter, "fwe-c-a..b")) ==
        std::vector<std::string>{"-m set --match-set fwe-4r-filter-a..b-0 src,dst -g fwe-accepted"});
  CHECK(filter.find("fwe-c-a") == nullptr);
  CHECK(filter.find("fwe-c-b") == nullptr);
  CHECK(bare(chain(filter, "fwe-c-c")).size() == 2);  // alone after d, and too short a run
}

namespace {
SetDef record_set(PackedStrings members, PackedStrings comments) {
  return {"fwe-4r-filter-list-1", IpFamily::v4, std::move(members), "hash:net,port", std::move(comments)};
}
}  // namespace

TEST_CASE("a set's members change by their difference: added first, deleted after, and taken back") {
  const SetDef was = record_set({"10.0.0.1,tcp:1", "10.0.0.2,tcp:2", "10.0.0.3,tcp:3", "10.0.0.4,tcp:4"},
                                {"a:+0:1 p#0", "a:+1:1 p#1", "a:+2:1 p#2", "a:+3:1 p#3"});
  // One member replaced, one whose rule moved a line down (its comment changed).
  const SetDef now = record_set({"10.0.0.1,tcp:1", "10.0.0.2,tcp:2", "10.0.0.9,tcp:9", "10.0.0.4,tcp:4"},
                                {"a:+0:1 p#0", "a:+2:1 p#1", "a:+3:1 p#2", "a:+4:1 p#3"});
  const auto delta = member_delta(was, now);
  REQUIRE(delta);
  using Members = std::vector<std::string>;
  CHECK(test::strings_of(delta->add.members) ==
        Members{"10.0.0.2,tcp:2", "10.0.0.9,tcp:9", "10.0.0.4,tcp:4"});
  CHECK(test::strings_of(delta->add.comments) == Members{"a:+2:1 p#1", "a:+3:1 p#2", "a:+4:1 p#3"});
  CHECK(test::strings_of(delta->remove.members) == Members{"10.0.0.3,tcp:3"});
  CHECK(test::strings_of(delta->withdraw.members) == Members{"10.0.0.9,tcp:9"});
  CHECK(test::strings_of(delta->restore.members) ==
        Members{"10.0.0.2,tcp:2", "10.0.0.4,tcp:4", "10.0.0.3,tcp:3"});
  CHECK(test::strings_of(delta->restore.comments) == Members{"a:+1:1 p#1", "a:+3:1 p#3", "a:+2:1 p#2"});
  // More to add and delete than the new set has: filling a fresh set is the smaller change.
  CHECK(!member_delta(was, record_set({"10.0.0.8,tcp:8"}, {"a:+0:1 p#0"})));
}

TEST_CASE("the record of the last apply keeps only sets it can vouch for") {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("fwe-ipt-record-" + std::to_string(getpid()))).string();
  std::filesystem::remove_all(dir);
  const std::vector<SetDef> sets{record_set({"10.0.0.1,tcp:1"}, {"a:+0:1 p#0"})};
  const auto digests = set_digests(sets);
  AppliedSets::save(dir, sets, digests);
  auto record = AppliedSets::load(dir);
  REQUIRE(record);
  REQUIRE(record->find(sets[0].name, digests[0]));
  CHECK(record->find(sets[0].name, digests[0])->members == sets[0].members);
  CHECK(!record->find(sets[0].name, "another digest"));
  // A count no file can hold (here, -1 read as the largest count) is a cut record, not an allocation.
  for (const char* count : {"-1", "18446744073709551615", "99999999999"}) {
    std::ofstream(dir + "/sets") << "fwengine iptables sets 1\nfwe-4r-filter-list-1 4 hash:net,port "
                                 << digests[0] << ' ' << count << "\n10.0.0.1,tcp:1\ta:+0:1 p#0\n";
    record = AppliedSets::load(dir);
    REQUIRE(record);
    CHECK(!record->find(sets[0].name, digests[0]));
  }
  // Members changed by hand no longer give the digest.
  std::ofstream(dir + "/sets") << "fwengine iptables sets 1\nfwe-4r-filter-list-1 4 hash:net,port "
                               << digests[0] << " 1\n10.0.0.2,tcp:1\ta:+0:1 p#0\n";
  CHECK(!AppliedSets::load(dir)->find(sets[0].name, digests[0]));
  // A member or comment longer than any (64 KiB) is a broken record, not an error of the apply.
  for (const bool in_member : {true, false}) {
    const std::string longest(PackedStrings::kBlock + 1, '1');
    std::ofstream(dir + "/sets") << "fwengine iptables sets 1\nfwe-4r-filter-list-1 4 hash:net,port "
                                 << digests[0] << " 1\n"
                                 << (in_member ? longest : "10.0.0.1,tcp:1") << '\t'
                                 << (in_member ? "a:+0:1 p#0" : longest) << '\n';
    record = AppliedSets::load(dir);
    REQUIRE(record);
    CHECK(!record->find(sets[0].name, digests[0]));
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("the record of the tables reads back as written, and a cut, padded or missized one is no record") {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("fwe-ipt-tables-" + std::to_string(getpid()))).string();
  std::filesystem::remove_all(dir);
  CHECK(!HeldTables::load(dir));
  const HeldTables held{"0123456789abcdef",
                        {"*filter\n:fwe1-input - [0:0]\n-A fwe1-input -j ACCEPT\nCOMMIT\n", ""}};
  held.save(dir);
  auto read = HeldTables::load(dir);
  REQUIRE(read);
  CHECK(read->fingerprint == held.fingerprint);
  CHECK(read->text[0] == held.text[0]);
  CHECK(read->text[1].empty());
  std::string file;
  {
    std::ifstream in(dir + "/tables");
    file.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // Sizes that would add up to the texts' only by wrapping around.
  const std::string sizes = std::to_string(held.text[0].size()) + " 0\n";
  const std::size_t sizes_at = file.find(sizes);
  REQUIRE(sizes_at != std::string::npos);
  auto with_sizes = [&](const std::string& other) {
    return std::string(file).replace(sizes_at, sizes.size(), other);
  };
  const std::string wrapping = std::to_string(std::numeric_limits<std::size_t>::max()) + ' ' +
                               std::to_string(held.text[0].size() + 1) + '\n';
  const std::string negative = "-1 " + std::to_string(held.text[0].size() + 1) + '\n';
  for (const std::string& damaged :
       {file.substr(0, file.size() - 1), file + "\n", with_sizes(wrapping), with_sizes(negative)}) {
    std::ofstream(dir + "/tables") << damaged;
    CHECK(!HeldTables::load(dir));
  }
  held.save(dir);
  HeldTables::forget(dir);
  CHECK(!HeldTables::load(dir));
  std::filesystem::remove_all(dir);
}

TEST_CASE("the rules summary digests the chains' stamps as one text, whatever it is hashed in") {
  // What fwe-meta of rulesets applied before keeps: the digest of "chain:stamp,...;" written out whole,
  // a run set's members as "MEMBER COMMENT" in sorted order.
  const PackedStrings members{"10.0.1.0/24,6:81", "10.0.0.0/24,6:80", "10.0.0.0/24,6:8080",
                              "10.0.0.0/24,6:80"};
  const PackedStrings comments{":+2:7 p#1", ":+1:7 p#0", ":+3:7 p#2", ":+1:7 o#0"};
  RuleStamps stamps;
  stamps.chain("filter/fwe-input") = {"fwe:0011223344556677", "fwe:8899aabbccddeeff"};
  stamps.add_members("fwe-4r-filter-p-0", members, comments);
  stamps.chain("raw/fwe-pre");
  CHECK(stamps.summary() ==
        "rules 6 digest " + hash16("filter/fwe-input:fwe:0011223344556677,fwe:8899aabbccddeeff,;"
                                   "ipset/fwe-4r-filter-p-0:10.0.0.0/24,6:80 :+1:7 o#0,10.0.0.0/24,6:80 "
                                   ":+1:7 p#0,10.0.0.0/24,6:8080 :+3:7 p#2,10.0.1.0/24,6:81 :+2:7 p#1,;"
                                   "raw/fwe-pre:;"));

  // Equal: the same members with the same comments, in any order; a moved comment is a change.
  RuleStamps listed, moved;
  const PackedStrings listed_members{"10.0.0.0/24,6:80", "10.0.0.0/24,6:8080", "10.0.1.0/24,6:81",
                                     "10.0.0.0/24,6:80"};
  const PackedStrings listed_comments{":+1:7 o#0", ":+3:7 p#2", ":+2:7 p#1", ":+1:7 p#0"};
  const PackedStrings moved_comments{":+1:7 o#0", ":+3:7 p#2", ":+2:7 p#1", ":+2:7 p#0"};
  RuleStamps want;
  want.add_members("s", members, comments);
  listed.add_members("s", listed_members, listed_comments);
  moved.add_members("s", listed_members, moved_comments);
  CHECK(listed == want);
  CHECK_FALSE(moved == want);
}
