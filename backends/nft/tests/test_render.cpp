// test_render.cpp - golden tests of the translation (nft text and kernel expressions), no kernel needed.
#include <catch2/catch.hpp>

#include <linux/netfilter.h>

#include <algorithm>
#include <regex>

#include "backend.hpp"
#include "netlink.hpp"
#include "positions.hpp"
#include "test_support.hpp"
#include "translate.hpp"

using namespace fwe;
using nft_test::origin;

namespace {

// Names end in ".<16 hex digits>" (a digest of the content); most tests do not care which.
std::string without_digests(const std::string& text) {
  return std::regex_replace(text, std::regex("\\.[0-9a-f]{16}\\b"), "");
}

// The table in the lines people read, which most goldens check: every stamp with its absolute line
// (Positions), and no `where` set. The stamps' own form has tests of its own.
nft::Table readable(nft::Table table) {
  auto where = std::find_if(table.sets.begin(), table.sets.end(), [](const nft::Set& set) {
    return without_digests(set.name) == nft::kPositionsSet;
  });
  if (where == table.sets.end()) return table;
  const nft::Positions positions(*where);
  table.sets.erase(where);
  for (auto& chain : table.chains)
    for (auto& rule : chain.rules) rule.comment = positions.absolute(rule.comment);
  for (auto& set : table.sets)
    for (auto& element : set.elements)
      element.comment = element.comment.starts_with(':')
                            ? positions.absolute(set.comment + element.comment).substr(set.comment.size())
                            : positions.absolute(element.comment);
  return table;
}

nft::Table render(const ir::Ruleset& rs) {
  Diagnostics diag;
  nft::Table table = nft::translate(rs, diag);
  for (const auto& d : diag.all()) FAIL_CHECK(d.message);
  return readable(std::move(table));
}

const nft::Chain& chain(const nft::Table& table, const std::string& name) {
  for (const auto& c : table.chains)
    if (without_digests(c.name) == name) return c;
  FAIL("no chain " + name);
  throw;
}

std::vector<std::string> texts(const nft::Chain& c) {
  std::vector<std::string> out;
  for (const auto& rule : c.rules) out.push_back(without_digests(rule.text()));
  return out;
}

ir::Ruleset one_rule(ir::Rule rule) {
  ir::Ruleset rs;
  rs.files = {"<command line>", "policy.yaml"};
  rule.origin = origin(9, "p", 0);
  rs.chains["c"] = ir::Chain{"c", {rule}, origin(8, "p")};
  return rs;
}

}  // namespace

TEST_CASE("the small ruleset renders to the golden nft text") {
  Diagnostics diag;  // the stamps as they are sent: lines relative to their policy's, in set where
  CHECK(nft::translate(nft_test::small_ruleset(), diag).text() == R"(table inet fwengine
delete table inet fwengine
table inet fwengine {
	set s-admins_v4.7d4f95b2c93b1f15 {
		type ipv4_addr
		flags interval
		elements = { 10.0.0.0/8, 192.168.1.0/24 }
	}
	set where.09cfb13e783e7550 {
		type ifname
		size 12
		elements = { "536ab8fd6ef7e71" comment "policy.yaml:20 failsafe", "5824dd4f1435a8b" comment "policy.yaml:5 GlobalNetworkPolicy allow-ssh", "8b2b45044479e54" comment "policy.yaml:3 HostEndpoint eth0", "ff2da045717a6a1" comment "policy.yaml:4 tier default" }
	}
	chain input-0.02da73cf33714090 {
		type filter hook input priority 0; policy accept;
		iifname "eth0" counter goto e-input-0-eth0.da6c91bf2915061e comment "policy.yaml:+0:3 HostEndpoint eth0"
	}
	chain e-input-0-eth0.da6c91bf2915061e {
		ct state established,related counter accept comment "policy.yaml:+0:3 HostEndpoint eth0"
		ct state invalid counter drop comment "policy.yaml:+0:3 HostEndpoint eth0"
		counter jump c-failsafe-in.801286c39d02cf0d comment "policy.yaml:+0:3 HostEndpoint eth0"
		counter jump g-input-0-eth0-0-tier.8b4013cc8c5f7276 comment "policy.yaml:+0:3 tier default"
		counter drop comment "policy.yaml:+0:3 HostEndpoint eth0"
	}
	chain g-input-0-eth0-0-tier.8b4013cc8c5f7276 {
		counter jump c-allow-ssh.af148f65d725e018 comment "policy.yaml:+0:3 tier default"
	}
	chain c-allow-ssh.af148f65d725e018 {
		meta nfproto ipv4 meta l4proto 6 ip saddr @s-admins_v4.7d4f95b2c93b1f15 th dport 22 counter meta mark set meta mark | 0x40000000 accept comment "policy.yaml:+2:3 GlobalNetworkPolicy allow-ssh#0"
	}
	chain c-failsafe-in.801286c39d02cf0d {
		meta l4proto 6 th dport 2222 counter accept comment "policy.yaml:+0:3 failsafe#0"
	}
}
)");
}

TEST_CASE("a rule's statements read back one by one and join with spaces") {
  nft::Rule rule;
  rule.words = {"meta l4proto 6", "ip saddr @s", "accept"};
  rule.words.push_back("log prefix \"a b\"");
  rule.words.push_back(std::string_view("h\0x", 3));
  std::vector<std::string> seen;
  rule.words.each([&](std::string_view word) { seen.emplace_back(word); });
  CHECK(seen == std::vector<std::string>{"meta l4proto 6", "ip saddr @s", "accept", "log prefix \"a b\"",
                                         std::string("h\0x", 3)});
  nft::Rule plain;
  plain.words = {"meta l4proto 6", "ip saddr @s", "accept"};
  plain.comment = "x";
  CHECK(plain.text() == "meta l4proto 6 ip saddr @s accept comment \"x\"");
}

TEST_CASE("a register value holds up to a register's 16 bytes") {
  const nft::RegValue ipv6(nft::Bytes(16, 0xff));
  CHECK(ipv6.size() == 16);
  CHECK(ipv6.data()[15] == 0xff);
  CHECK_THROWS_AS(nft::RegValue(nft::Bytes(17, 0)), std::length_error);
}

TEST_CASE("stages get the hooks and priorities of docs/ir.md, one base chain per section") {
  ir::Ruleset rs;
  for (std::size_t s = 0; s < ir::kStageCount; ++s) {
    ir::Endpoint ep;
    ep.name = "all";
    rs.stages[s].sections.push_back(ir::Section{"a", false, {ep}});
  }
  rs.stage(ir::Stage::forward).sections.push_back(ir::Section{"b", true, {}});
  nft::Table table = render(rs);
  std::vector<std::string> hooks;
  for (const auto& c : table.chains)
    if (c.hook)
      hooks.push_back(without_digests(c.name) + " " + c.hook->type + " " + nft::hook_name(c.hook->hooknum) +
                      " " + std::to_string(c.hook->priority));
  CHECK(hooks == std::vector<std::string>{
                     "clear-marks-lo filter prerouting -301", "untracked-in-0 filter prerouting -300",
                     "untracked-out-0 filter output -300", "prednat-0 filter prerouting -150",
                     "dnat-0 nat prerouting -100", "input-0 filter input 0", "forward-0 filter forward 0",
                     "forward-1 filter forward 1", "dnat-out-0 nat output -100", "output-0 filter output 0",
                     "snat-0 nat postrouting 100"});
  CHECK(texts(chain(table, "forward-1")) ==
        std::vector<std::string>{
            "meta mark & 0x40000000 == 0x40000000 counter accept comment \"section b honours allow\""});
  // A section honours the allow mark: what comes in on lo starts by clearing it (a packet the host sends
  // itself keeps its mark across lo).
  CHECK(texts(chain(table, "clear-marks-lo")) ==
        std::vector<std::string>{
            "iifname \"lo\" meta mark set meta mark & 0x9fffffff comment \"a path in on lo "
            "starts without the allow mark\""});
}

TEST_CASE("a long section name is cut in its honour rule's comment, to nft's limit") {
  ir::Ruleset rs;
  ir::Endpoint ep;
  ep.name = "all";
  rs.stage(ir::Stage::input).sections.push_back(ir::Section{"a", false, {ep}});
  rs.stage(ir::Stage::input).sections.push_back(ir::Section{"\"" + std::string(240, 'b'), true, {}});
  nft::Table table = render(rs);
  const std::vector<std::string> rules = texts(chain(table, "input-1"));
  REQUIRE(rules.size() == 1);
  const std::string comment = "section _" + std::string(nft::kMaxComment - 23, 'b') + " honours allow";
  CHECK(comment.size() == nft::kMaxComment);
  CHECK(rules[0] == "meta mark & 0x40000000 == 0x40000000 counter accept comment \"" + comment + "\"");
}

TEST_CASE("an address set with both families gives one rule per family - missing families are skipped") {
  nft::Table table = render(nft_test::kitchen_sink_ruleset());
  auto rules = texts(chain(table, "c-everything"));
  CHECK(rules[1] ==
        "meta nfproto ipv4 ip saddr @s-mixed_v4 ip daddr != @s-v4only_v4 counter drop comment "
        "\"policy.yaml:41:3 "
        "GlobalNetworkPolicy sink#41\"");
  // v4only has no IPv6 entries: a negated match on it holds for every IPv6 packet.
  CHECK(rules[2] ==
        "meta nfproto ipv6 ip6 saddr @s-mixed_v6 counter drop comment \"policy.yaml:41:3 GlobalNetworkPolicy "
        "sink#41\"");
  auto dispatch = texts(chain(table, "forward-0"));
  CHECK(dispatch[0].rfind(
            "meta nfproto ipv4 oifname \"cali*\" ip saddr @s-mixed_v4 counter goto e-forward-0-pods", 0) ==
        0);
  CHECK(dispatch[1].rfind(
            "meta nfproto ipv6 oifname \"cali*\" ip6 saddr @s-mixed_v6 counter goto e-forward-0-pods", 0) ==
        0);
}

TEST_CASE("pass sets the pass bit - callers return while it is set and the group clears it") {
  nft::Table table = render(nft_test::kitchen_sink_ruleset());
  CHECK(texts(chain(table, "c-passer")) ==
        std::vector<std::string>{
            "counter meta mark set meta mark | 0x20000000 return comment \"policy.yaml:60:3 "
            "GlobalNetworkPolicy sink#60\""});
  auto everything = texts(chain(table, "c-everything"));
  CHECK(
      everything.at(everything.size() - 2).rfind("meta mark & 0x20000000 == 0x20000000 counter return", 0) ==
      0);
  CHECK(
      texts(chain(table, "g-forward-0-pods-0-tier")) ==
      std::vector<std::string>{
          "counter jump c-everything comment \"policy.yaml:90:3 tier\"",
          "meta mark & 0x20000000 == 0x20000000 meta mark set meta mark & 0xdfffffff counter return comment "
          "\"policy.yaml:90:3 tier\"",
          "counter jump c-passer comment \"policy.yaml:90:3 tier\"",
          "meta mark & 0x20000000 == 0x20000000 meta mark set meta mark & 0xdfffffff counter return comment "
          "\"policy.yaml:90:3 tier\"",
          "counter drop comment \"policy.yaml:90:3 tier\""});
}

TEST_CASE("matches and actions render as nft writes them") {
  nft::Table table = render(nft_test::kitchen_sink_ruleset());
  auto rules = texts(chain(table, "c-everything"));
  auto starts = [&](std::size_t i, const std::string& prefix) {
    INFO(rules.at(i));
    CHECK(rules.at(i).rfind(prefix, 0) == 0);
  };
  starts(0, "meta nfproto ipv6 meta l4proto 17 th sport 1000-2000 th dport 53 counter accept");
  starts(3, "meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code 0 counter accept");
  starts(
      4,
      "meta nfproto ipv6 meta l4proto 58 icmpv6 type != 128 counter reject with icmpx type port-unreachable");
  starts(5, "ct state established,related,invalid,untracked counter log prefix \"ct \xc3\xa9 \" level info");
  starts(6,
         "iifname { \"eth0\", \"eth1\" } oifname != \"veth*\" oifname != \"lo\" counter meta mark set meta "
         "mark & "
         "0xffffff00 | 0x00000010");
  starts(7, "ether saddr { 02:00:00:00:00:01, 02:00:00:00:00:02 } counter return");
  starts(8, "meta pkttype broadcast meta mark & 0x000000ff != 0x00000005 counter drop");
  starts(9, "ct status snat,dnat limit rate 10/minute burst 20 packets counter accept");
  starts(10, "meta l4proto != { 6, 17 } meta l4proto 6 counter reject with tcp reset");
  starts(11, "meta l4proto != { 6, 17 } counter reject with icmpx type port-unreachable");
  starts(12,
         "meta l4proto { 6, 17, 33, 132, 136 } th dport != { 22, 80-90 } meta nfproto ipv4 counter reject "
         "with icmp "
         "type host-prohibited");
  starts(13,
         "meta l4proto { 6, 17, 33, 132, 136 } th dport != { 22, 80-90 } counter reject with icmpx type "
         "admin-prohibited");
  starts(14, "counter meta mark set meta mark & 0x60000000 | 0x00000007");
  CHECK(texts(chain(table, "c-nat-in")) ==
        std::vector<std::string>{"meta nfproto ipv4 meta l4proto 6 th dport 80 counter dnat ip to "
                                 "10.0.0.1:8080 comment \"policy.yaml:70:3 "
                                 "GlobalNetworkPolicy sink#70\"",
                                 "meta nfproto ipv6 meta l4proto { 6, 17, 33, 132, 136 } counter dnat ip6 to "
                                 "[2001:db8::1]:80-90 comment "
                                 "\"policy.yaml:71:3 GlobalNetworkPolicy sink#71\"",
                                 "meta l4proto 17 counter redirect to :5353 comment \"policy.yaml:72:3 "
                                 "GlobalNetworkPolicy sink#72\""});
}

TEST_CASE("rules carry the kernel expressions nft itself generates") {
  ir::Rule rule;
  rule.match.protocols = std::vector<std::uint8_t>{6};
  rule.match.dst_port.push_back({false, {{22, 22}}});
  rule.action.kind = ir::ActionKind::accept;
  nft::Table table = render(one_rule(rule));
  // `nft --debug=netlink` for "tcp dport 22 counter accept" (nftables 1.0.6)
  CHECK(nft::bytecode(chain(table, "c-c").rules.at(0), "c-c") == R"([ meta load l4proto => reg 1 ]
[ cmp eq reg 1 0x00000006 ]
[ payload load 2b @ transport header + 2 => reg 1 ]
[ cmp eq reg 1 0x00001600 ]
[ counter pkts 0 bytes 0 ]
[ immediate reg 0 accept ]
)");
}

TEST_CASE("ct-status is nft's ct status test of the NAT bits") {
  ir::Rule rule;
  rule.match.ct_status = std::vector<ir::CtStatus>{ir::CtStatus::dnat};
  rule.action.kind = ir::ActionKind::accept;
  nft::Table table = render(one_rule(rule));
  const auto& out = chain(table, "c-c").rules.at(0);
  CHECK(without_digests(out.text()).rfind("ct status dnat counter accept", 0) == 0);
  // `nft --debug=netlink` for "ct status dnat counter accept" (nftables 1.0.6)
  CHECK(nft::bytecode(out, "c-c") == R"([ ct load status => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0x00000020 ) ^ 0x00000000 ]
[ cmp neq reg 1 0x00000000 ]
[ counter pkts 0 bytes 0 ]
[ immediate reg 0 accept ]
)");
}

TEST_CASE("ct-orig-dport is ct original proto-dst - dnat-out is nat output at dstnat") {
  nft::Table table = render(nft_test::kitchen_sink_ruleset());
  auto dnatted = texts(chain(table, "c-dnatted"));
  REQUIRE(dnatted.size() == 2);
  CHECK(dnatted[0].rfind("meta l4proto { 6, 17, 33, 132, 136 } ct status dnat ct original proto-dst "
                         "8000-8080 counter accept",
                         0) == 0);
  CHECK(dnatted[1].rfind("meta l4proto 6 ct original proto-dst != 22 counter reject", 0) == 0);
  // `nft --debug=netlink` for "ct original proto-dst != 22" (nftables 1.0.6)
  std::string code = nft::bytecode(chain(table, "c-dnatted").rules.at(1), "c-dnatted");
  CHECK(code.find("[ ct load proto_dst => reg 1 , dir original ]\n[ cmp neq reg 1 0x00001600 ]") !=
        std::string::npos);
  ir::Rule ports;
  ports.match.ct_orig_dport.push_back({false, {{2223, 2223}, {8000, 8080}}});
  ports.action.kind = ir::ActionKind::accept;
  CHECK(
      without_digests(chain(render(one_rule(ports)), "c-c").rules.at(0).text())
          .rfind(
              "meta l4proto { 6, 17, 33, 132, 136 } ct original proto-dst { 2223, 8000-8080 } counter accept",
              0) == 0);
  auto nat = texts(chain(table, "c-nat-host"));
  REQUIRE(nat.size() == 2);
  CHECK(nat[0].rfind("meta nfproto ipv4 meta l4proto 6 th dport 8081 counter dnat ip to 10.0.0.2:8080", 0) ==
        0);
  const nft::Chain& base = chain(table, "dnat-out-0");
  REQUIRE(base.hook);
  CHECK(base.hook->type == "nat");
  CHECK(nft::hook_name(base.hook->hooknum) == "output");
  CHECK(base.hook->priority == -100);
}

TEST_CASE("a one-prefix address set is an inline compare, not a named set") {
  ir::Rule rule;
  rule.match.src_addr.push_back({false, "net"});
  rule.match.dst_addr.push_back({true, "host"});
  rule.action.kind = ir::ActionKind::accept;
  ir::Ruleset rs = one_rule(rule);
  rs.sets["net"] = {{*ir::parse_cidr("10.0.0.0/8")}, {}};
  rs.sets["host"] = {{*ir::parse_cidr("192.0.2.7")}, {}};
  nft::Table table = render(rs);
  CHECK(table.sets.empty());
  const auto& out = chain(table, "c-c").rules.at(0);
  CHECK(without_digests(out.text())
            .rfind("meta nfproto ipv4 ip saddr 10.0.0.0/8 ip daddr != 192.0.2.7 counter accept", 0) == 0);
  // The prefix is masked before the compare; a whole address is compared as nft does it.
  CHECK(nft::bytecode(out, "c-c") == R"([ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x00000002 ]
[ payload load 4b @ network header + 12 => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0x000000ff ) ^ 0x00000000 ]
[ cmp eq reg 1 0x0000000a ]
[ payload load 4b @ network header + 16 => reg 1 ]
[ cmp neq reg 1 0x070200c0 ]
[ counter pkts 0 bytes 0 ]
[ immediate reg 0 accept ]
)");
}

TEST_CASE("a CIDR written in place is the same inline compare, and a /0 is its family alone") {
  ir::Rule rule;
  rule.match.src_addr.push_back({false, *ir::parse_cidr("10.0.0.0/8")});
  rule.match.dst_addr.push_back({true, *ir::parse_cidr("192.0.2.7")});
  rule.action.kind = ir::ActionKind::accept;
  ir::Rule any_v6 = rule;
  any_v6.match.src_addr = {ir::AddrMatch(false, *ir::parse_cidr("::/0"))};
  any_v6.match.dst_addr.clear();
  ir::Rule not_any_v4 = any_v6;
  not_any_v4.match.src_addr = {ir::AddrMatch(true, *ir::parse_cidr("0.0.0.0/0"))};
  ir::Ruleset rs = one_rule(rule);
  rs.chains["c"].rules.push_back(any_v6);
  rs.chains["c"].rules.push_back(not_any_v4);
  nft::Table table = render(rs);
  CHECK(table.sets.empty());
  const auto rules = texts(chain(table, "c-c"));
  REQUIRE(rules.size() == 3);
  CHECK(rules[0].rfind("meta nfproto ipv4 ip saddr 10.0.0.0/8 ip daddr != 192.0.2.7 counter accept", 0) == 0);
  CHECK(rules[1].rfind("meta nfproto ipv6 counter accept", 0) == 0);
  // Outside every IPv4 address: only IPv6 packets.
  CHECK(rules[2].rfind("meta nfproto ipv6 counter accept", 0) == 0);
}

TEST_CASE("interval sets: exclusive end elements, a zero marker, no end past the last address") {
  nft::Table table = render(nft_test::kitchen_sink_ruleset());
  const nft::Set* v4only = nullptr;
  for (const auto& s : table.sets)
    if (without_digests(s.name) == "s-v4only_v4") v4only = &s;
  REQUIRE(v4only);
  std::vector<std::pair<nft::Bytes, bool>> elements;
  for (const auto& e : v4only->elements) elements.emplace_back(e.key, e.interval_end);
  CHECK(elements == std::vector<std::pair<nft::Bytes, bool>>{{{0, 0, 0, 0}, true},
                                                             {{192, 168, 0, 0}, false},
                                                             {{192, 169, 0, 0}, true},
                                                             {{224, 0, 0, 0}, false}});
  // The text is written from the keys: the marker is no element, the last range runs to the end.
  CHECK(nft::element_texts(*v4only) == std::vector<std::string>{"192.168.0.0/16", "224.0.0.0/3"});
}

TEST_CASE("a changed rule renames its chain and nothing else") {
  ir::Ruleset before = nft_test::small_ruleset(), after = before;
  after.chains["allow-ssh"].rules[0].match.dst_port[0].ports = {{2022, 2022}};
  std::vector<std::string> changed;
  nft::Table old_table = render(before), new_table = render(after);
  REQUIRE(old_table.chains.size() == new_table.chains.size());
  for (std::size_t i = 0; i < old_table.chains.size(); ++i)
    if (old_table.chains[i].name != new_table.chains[i].name)
      changed.push_back(without_digests(new_table.chains[i].name));
  CHECK(changed == std::vector<std::string>{"c-allow-ssh"});
  CHECK(old_table.sets[0].name == new_table.sets[0].name);
}

TEST_CASE("names are sanitised, bounded and unique") {
  ir::Rule rule;
  rule.action.kind = ir::ActionKind::accept;
  ir::Ruleset rs = one_rule(rule);
  rs.chains["a b/c"] = ir::Chain{"a b/c", {}, {}};
  rs.chains["a_b_c"] = ir::Chain{"a_b_c", {}, {}};
  rs.chains[std::string(300, 'x')] = ir::Chain{std::string(300, 'x'), {}, {}};
  std::vector<std::string> names;
  for (const auto& c : render(rs).chains) names.push_back(without_digests(c.name));
  REQUIRE(names.size() == 4);
  CHECK(names[0] == "c-a_b_c");
  CHECK(names[1] == "c-a_b_c-2");
  CHECK(names[2] == "c-c");
  CHECK(names[3].size() == 197);
  CHECK(names[3].rfind("c-xxxx", 0) == 0);
}

TEST_CASE("origin stamps fit nft's 128-character comments and stay quote-free") {
  ir::Ruleset rs;
  rs.files = {"<command line>", "/very/" + std::string(200, 'd') + "/policy.yaml"};
  const ir::Origin quoted{{1, 12, 5}, "GlobalNetworkPolicy \"quoted\"", 3};
  rs.chains["c"].rules.push_back({{}, {}, quoted});
  nft::Stamper stamper(rs);
  std::string stamp = stamper.stamp(quoted);
  CHECK(stamp.size() + std::string_view(" +99999").size() <= nft::kMaxComment);
  CHECK(stamp.find('"') == std::string::npos);
  // the file keeps its end, the label what is left
  CHECK(stamp.starts_with("...ddd"));
  CHECK(stamp.ends_with("/policy.yaml:+0:5 GlobalNetworkPolicy _quoted_#3"));
  // a long store key keeps its scheme, and the label its policy and rule
  rs.files[1] =
      "etcd:/calico/resources/v3/projectcalico.org/globalnetworkpolicies/default.allow-ssh-from-admins";
  nft::Stamper keyed(rs);
  stamp = keyed.stamp(quoted);
  CHECK(stamp.starts_with("etcd:..."));
  CHECK(stamp.find("/default.allow-ssh-from-admins:+0:5 ") ==
        56 - std::string_view("/default.allow-ssh-from-admins").size());
  CHECK(stamp.ends_with(" GlobalNetworkPolicy _quoted_#3"));
  CHECK(stamper.stamp(ir::Origin{{}, "zone public", -1}) == "zone public");
  // a leading ':' marks an element stamp without its file (Set::comment): no whole stamp starts so
  CHECK(stamper.stamp(ir::Origin{{}, ":odd", 0}) == "_odd#0");
}

namespace {
// A chain whose rules come from the lines given, in policy `policy` of policy.yaml.
ir::Ruleset stamped_rules(const std::vector<std::uint32_t>& lines, const std::string& policy) {
  ir::Ruleset rs;
  rs.files = {"policy.yaml"};
  for (std::size_t i = 0; i < lines.size(); ++i)
    rs.chains["c"].rules.push_back(
        {{}, {}, ir::Origin{{0, lines[i], 7}, policy, static_cast<std::int32_t>(i)}});
  return rs;
}
std::vector<std::string> stamps_of(const ir::Ruleset& rs, nft::Stamper& stamper) {
  std::vector<std::string> out;
  for (const auto& rule : rs.chains.at("c").rules) out.push_back(stamper.stamp(rule.origin));
  return out;
}
}  // namespace

TEST_CASE("stamps count lines from their policy's first line, which the where set holds") {
  const ir::Ruleset rs = stamped_rules({10, 12, 15}, "web");
  nft::Stamper stamper(rs);
  const auto stamps = stamps_of(rs, stamper);
  CHECK(stamps == std::vector<std::string>{"policy.yaml:+0:7 web#0", "policy.yaml:+2:7 web#1",
                                           "policy.yaml:+5:7 web#2"});
  auto where = stamper.positions();
  REQUIRE(where);
  CHECK(where->name == std::string(nft::kPositionsSet));
  REQUIRE(where->elements.size() == 1);
  CHECK(where->elements[0].comment == "policy.yaml:10 web");
  CHECK(where->elements[0].key.size() == 16);
  const nft::Positions positions(*where);
  CHECK(positions.absolute(stamps[1]) == "policy.yaml:12:7 web#1");
  CHECK(positions.absolute(stamps[2] + " +3") == "policy.yaml:15:7 web#2 +3");      // a merged run's rule
  CHECK(positions.absolute("policy.yaml:12:7 web#1") == "policy.yaml:12:7 web#1");  // absolute already
  CHECK(positions.absolute("other.yaml:+2:7 web#1") == "other.yaml:+2:7 web#1");    // no element: as is
  // a rule above its policy's first line (none is, today) keeps its absolute line
  CHECK(stamper.stamp(ir::Origin{{0, 8, 7}, "web", 0}) == "policy.yaml:8:7 web#0");

  // Lines inserted above: the same stamps, another first line.
  const ir::Ruleset moved = stamped_rules({40, 42, 45}, "web");
  nft::Stamper moved_stamper(moved);
  CHECK(stamps_of(moved, moved_stamper) == stamps);
  CHECK(moved_stamper.positions()->elements[0].comment == "policy.yaml:40 web");
  CHECK(moved_stamper.positions()->elements[0].key == where->elements[0].key);
}

TEST_CASE("a cut policy name still finds its first line") {
  const ir::Ruleset rs = stamped_rules({3, 9}, "GlobalNetworkPolicy " + std::string(150, 'n'));
  nft::Stamper stamper(rs);
  const auto stamps = stamps_of(rs, stamper);
  CHECK(stamps[0].find('#') == std::string::npos);  // the rule numbers did not fit
  const nft::Positions positions(*stamper.positions());
  CHECK(positions.absolute(stamps[1]).starts_with("policy.yaml:9:7 GlobalNetworkPolicy nnn"));
  // a policy whose name ends like a merged run's " +N" is told apart from one
  const ir::Ruleset plus = stamped_rules({5}, "odd +3");
  nft::Stamper plus_stamper(plus);
  CHECK(stamps_of(plus, plus_stamper)[0] == "policy.yaml:+0:7 odd +3#0");
  ir::Ruleset bare = stamped_rules({5}, "odd +3");
  bare.chains.at("c").rules[0].origin.rule = -1;
  nft::Stamper bare_stamper(bare);
  CHECK(bare_stamper.stamp(bare.chains.at("c").rules[0].origin) == "policy.yaml:+0:7 odd_+3");
  CHECK(nft::Positions(*bare_stamper.positions()).absolute("policy.yaml:+0:7 odd_+3") ==
        "policy.yaml:5:7 odd_+3");
  // a merged run's stamp with a line and no label
  ir::Ruleset unnamed = stamped_rules({5, 7}, "");
  for (auto& rule : unnamed.chains.at("c").rules) rule.origin.rule = -1;
  nft::Stamper unnamed_stamper(unnamed);
  CHECK(unnamed_stamper.stamp(unnamed.chains.at("c").rules[1].origin) == "policy.yaml:+2:7");
  CHECK(nft::Positions(*unnamed_stamper.positions()).absolute("policy.yaml:+2:7 +4") == "policy.yaml:7:7 +4");
}

TEST_CASE("what nft cannot do here is refused with the rule's origin") {
  ir::Rule helper;  // an unknown helper without a protocol: which one it tracks is unknown
  helper.action.kind = ir::ActionKind::ct_helper;
  helper.action.target = "bogus";
  ir::Rule bad_reject;
  bad_reject.action.kind = ir::ActionKind::reject;
  bad_reject.action.reject_with = "icmp-bogus";
  ir::Rule long_iface;
  long_iface.match.iif = std::vector<ir::IfacePattern>{{"an-interface-name-too-long", false}};
  ir::Rule control_iface;  // a frontend of someone else's may hand over any bytes
  control_iface.match.oif = std::vector<ir::IfacePattern>{{"eth\x01", false}};
  ir::Rule quoted_prefix;
  quoted_prefix.match.iif = std::vector<ir::IfacePattern>{{"eth\"", true}};
  for (const auto& rule : {helper, bad_reject, long_iface, control_iface, quoted_prefix}) {
    Diagnostics diag;
    nft::translate(one_rule(rule), diag);
    REQUIRE(diag.error_count() == 1);
    CHECK(diag.all()[0].loc.line == 9);
    CHECK_FALSE(diag.all()[0].hint.empty());
  }
}

TEST_CASE("an interface name no interface can have (firewalld takes eth0:1) is written, and never matches") {
  ir::Rule alias;
  alias.match.iif = std::vector<ir::IfacePattern>{{"eth0:1", false}};
  alias.action.kind = ir::ActionKind::accept;
  Diagnostics diag;
  nft::translate(one_rule(alias), diag);
  CHECK_FALSE(diag.has_errors());
}

TEST_CASE("reject is refused where the kernel cannot reject: snat (postrouting), also through a jump") {
  ir::Rule reject;
  reject.action.kind = ir::ActionKind::reject;
  ir::Ruleset rs = one_rule(reject);
  ir::Rule jump;
  jump.action.kind = ir::ActionKind::jump;
  jump.action.target = "c";
  jump.origin = origin(12, "p", 0);
  rs.chains["outer"] = ir::Chain{"outer", {jump}, origin(11, "p")};
  ir::Endpoint all;
  all.name = "all";
  all.groups.push_back(ir::Group{"g", {"outer"}, ir::Verdict::continue_, {}, origin(10, "p")});
  rs.stage(ir::Stage::snat).sections.push_back(ir::Section{"s", false, {all}});
  Diagnostics diag;
  nft::translate(rs, diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all()[0].loc.line == 9);
  CHECK(diag.all()[0].message.find("snat") != std::string::npos);

  rs.stage(ir::Stage::snat).sections.clear();
  rs.stage(ir::Stage::forward).sections.push_back(ir::Section{"s", false, {all}});
  Diagnostics forward;
  nft::translate(rs, forward);
  CHECK_FALSE(forward.has_errors());
}

TEST_CASE("capabilities: every stage, match and action") {
  nft::NftBackend backend{PluginContext{}};
  Capabilities caps = backend.capabilities();
  CHECK(caps.stages.size() == ir::kStageCount);
  CHECK(caps.matches.size() == ir::kMatchKindCount);
  CHECK(caps.actions.size() == ir::kActionKindCount);
  CHECK(caps.ipv6);
}

namespace {

// "tcp from SRC to port PORT -> kind" rules in chain "c", from line 10 on, and their sets.
struct RunBuilder {
  ir::Ruleset rs;
  RunBuilder() {
    rs.files = {"<command line>", "policy.yaml"};
    rs.chains["c"] = ir::Chain{"c", {}, nft_test::origin(8, "p")};
  }
  ir::Rule& add(std::vector<std::string> src, ir::PortRange port,
                ir::ActionKind kind = ir::ActionKind::accept, std::uint8_t protocol = 6) {
    auto& rules = rs.chains["c"].rules;
    std::string set = "src" + std::to_string(rules.size());
    auto& addresses = rs.sets[set];  // made even when src is empty
    for (const auto& cidr : src) addresses.cidrs.push_back(*ir::parse_cidr(cidr));
    ir::Rule rule;
    rule.match.protocols = std::vector<std::uint8_t>{protocol};
    rule.match.src_addr.push_back({false, set});
    rule.match.dst_port.push_back({false, {port}});
    rule.action.kind = kind;
    rule.origin = nft_test::origin(10 + static_cast<std::uint32_t>(rules.size()), "p",
                                   static_cast<std::int32_t>(rules.size()));
    rules.push_back(rule);
    return rules.back();
  }
};

const nft::Set& set_named(const nft::Table& table, const std::string& name) {
  for (const auto& s : table.sets)
    if (without_digests(s.name) == name) return s;
  FAIL("no set " + name);
  throw;
}

}  // namespace

TEST_CASE("a run of rules with one verdict becomes one rule with a concatenated set lookup") {
  RunBuilder b;
  for (std::uint16_t i = 0; i < 4; ++i)
    b.add({"10.0." + std::to_string(i) + ".0/24"}, {std::uint16_t(1000 + i), std::uint16_t(1000 + i)});
  b.add({"10.9.0.0/16"}, {2000, 2010});
  nft::Table table = render(b.rs);
  CHECK(texts(chain(table, "c-c")) ==
        std::vector<std::string>{
            "meta nfproto ipv4 meta l4proto 6 ip saddr . th dport @m-c-0_v4 accept comment "
            "\"policy.yaml:10:3 p#0 +4\""});
  const nft::Set& set = set_named(table, "m-c-0_v4");
  CHECK(set.counters);
  CHECK(set.interval);
  CHECK(set.concat == std::vector<nft::KeyType>{nft::KeyType::ipv4_addr, nft::KeyType::inet_service});
  REQUIRE(nft::element_texts(set).size() == 5);
  CHECK(nft::element_texts(set)[0] == "10.0.0.0/24 . 1000 comment \":10:3 p#0\"");
  CHECK(nft::element_texts(set)[4] == "10.9.0.0/16 . 2000-2010 comment \":14:3 p#4\"");
  // pipapo elements: the start and the inclusive end of each field, every field in whole registers
  CHECK(set.elements[4].key == nft::Bytes{10, 9, 0, 0, 0x07, 0xd0, 0, 0});
  CHECK(set.elements[4].key_end == nft::Bytes{10, 9, 255, 255, 0x07, 0xda, 0, 0});
  // element stamps leave out the run's file, which the set's comment holds (smaller kernel elements)
  CHECK(set.elements[4].comment == ":14:3 p#4");
  CHECK(set.comment == "policy.yaml");
  // the key's second field goes to the 32-bit register after the first (nft's reg 9)
  CHECK(nft::bytecode(chain(table, "c-c").rules[0], "c-c") == R"([ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x00000002 ]
[ meta load l4proto => reg 1 ]
[ cmp eq reg 1 0x00000006 ]
[ payload load 4b @ network header + 12 => reg 1 ]
[ payload load 2b @ transport header + 2 => reg 9 ]
[ lookup reg 1 set )" + chain(table, "c-c").rules[0].exprs[6].text +
                                                                  R"( ]
[ immediate reg 0 accept ]
)");
  CHECK(table.text().find("\t\ttype ipv4_addr . inet_service\n\t\tflags interval\n\t\tcounter\n") !=
        std::string::npos);
}

TEST_CASE("counters=rule: a run's sets count nothing and carry no stamps, the merged rule counts") {
  RunBuilder b;
  for (std::uint16_t i = 0; i < 4; ++i)
    b.add({"10.0." + std::to_string(i) + ".0/24"}, {std::uint16_t(1000 + i), std::uint16_t(1000 + i)});
  Diagnostics diag;
  nft::Table per_rule = readable(nft::translate(b.rs, diag, nft::Counters::rule));
  REQUIRE_FALSE(diag.has_errors());
  nft::Table per_element = render(b.rs);
  const nft::Set& set = set_named(per_rule, "m-c-0_v4");
  CHECK(set_named(per_element, "m-c-0_v4").counters);
  CHECK_FALSE(set.counters);
  CHECK(set.comment.empty());
  CHECK(nft::element_texts(set)[0] == "10.0.0.0 . 1000");  // one prefix length: a hash set
  // the merged rule counts instead, after its lookup
  CHECK(texts(chain(per_rule, "c-c")) ==
        std::vector<std::string>{"meta nfproto ipv4 meta l4proto 6 ip saddr & 255.255.255.0 . th dport "
                                 "@m-c-0_v4 counter accept comment \"policy.yaml:10:3 p#0 +3\""});
  // the set's declaration differs, so its name does: an apply that switches makes it anew
  CHECK(set.name != set_named(per_element, "m-c-0_v4").name);
  CHECK(per_rule.text().find("\t\tcounter\n") == std::string::npos);
}

TEST_CASE("a rule with another verdict, an overlap or a negation ends a run") {
  RunBuilder b;
  for (std::uint16_t i = 0; i < 4; ++i) b.add({"10.0." + std::to_string(i) + ".0/24"}, {22, 22});
  b.add({"10.0.0.0/16"}, {22, 22}, ir::ActionKind::drop);
  // overlaps rules 5..8 (the same port from inside 10.1.0.0/16): it starts the next run
  for (std::uint16_t i = 0; i < 4; ++i) b.add({"10.1." + std::to_string(i) + ".0/24"}, {80, 80});
  b.add({"10.1.0.0/16"}, {80, 80});
  for (std::uint16_t i = 0; i < 4; ++i) b.add({"10.2." + std::to_string(i) + ".0/24"}, {443, 443});
  b.rs.chains["c"].rules.back().match.src_addr[0].negate = true;
  auto rules = texts(chain(render(b.rs), "c-c"));
  std::vector<std::string> heads;
  for (const auto& r : rules) heads.push_back(r.substr(0, r.find(" comment")));
  CHECK(heads ==
        std::vector<std::string>{
            "meta nfproto ipv4 meta l4proto 6 th dport 22 ip saddr & 255.255.255.0 == @m-c-0_v4 accept",
            "meta nfproto ipv4 meta l4proto 6 ip saddr 10.0.0.0/16 th dport 22 counter drop",
            "meta nfproto ipv4 meta l4proto 6 th dport 80 ip saddr & 255.255.255.0 == @m-c-1_v4 accept",
            "meta nfproto ipv4 meta l4proto 6 ip saddr & 255.255.0.0 . th dport @m-c-2_v4 accept",
            "meta nfproto ipv4 meta l4proto 6 ip saddr & 255.255.255.0 . th dport @m-c-2_v4_1 accept",
            "meta nfproto ipv4 meta l4proto 6 ip saddr != 10.2.3.0/24 th dport 443 counter accept",
            "meta nfproto ipv6 meta l4proto 6 th dport 443 counter accept"});
}

TEST_CASE("runs cut by the run limit join one set, where a repeated rule's later element goes") {
  RunBuilder b;
  const std::size_t rules = 9000;  // more than eight runs hold (1,024 each)
  for (std::size_t i = 0; i < rules; ++i) {
    const std::size_t n = i == 8500 ? 3 : i;  // rule 8500 repeats rule 3
    const std::string net = "10." + std::to_string(n / 256) + "." + std::to_string(n % 256) + ".0/24";
    b.add({net}, {std::uint16_t(1000 + n % 7), std::uint16_t(1000 + n % 7)});
  }
  b.add({"10.200.0.0/16"}, {22, 22}, ir::ActionKind::drop);  // ends the run
  for (std::uint16_t i = 0; i < 4; ++i) b.add({"10.201." + std::to_string(i) + ".0/24"}, {22, 22});
  nft::Table table = render(b.rs);
  auto texts_c = texts(chain(table, "c-c"));
  REQUIRE(texts_c.size() == 3);
  CHECK(texts_c[0] ==
        "meta nfproto ipv4 meta l4proto 6 ip saddr & 255.255.255.0 . th dport @m-c-0_v4 accept comment "
        "\"policy.yaml:10:3 p#0 +8999\"");
  CHECK(texts_c[1].find("counter drop") != std::string::npos);
  CHECK(texts_c[2].find("@m-c-9_v4 accept") != std::string::npos);  // another key: a set of its own
  const nft::Set& joined = set_named(table, "m-c-0_v4");
  // first match meets rule 3's element, never rule 8500's
  REQUIRE(joined.elements.size() == rules - 1);
  CHECK(joined.elements[3].comment == ":13:3 p#3");
  CHECK(std::none_of(joined.elements.begin(), joined.elements.end(),
                     [](const nft::Element& e) { return e.comment == ":8510:3 p#8500"; }));
  CHECK(joined.elements.back().comment == ":9009:3 p#8999");
}

TEST_CASE("runs cut by the run limit that match other values outside their key keep their own sets") {
  RunBuilder b;
  for (std::size_t i = 0; i < 1032; ++i) {  // the limit (1,024) cuts where the port changes
    const std::uint16_t port = i < 1024 ? 22 : 80;
    b.add({"10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24"}, {port, port});
  }
  auto heads = texts(chain(render(b.rs), "c-c"));
  for (auto& r : heads) r = r.substr(0, r.find(" comment"));
  CHECK(heads ==
        std::vector<std::string>{
            "meta nfproto ipv4 meta l4proto 6 th dport 22 ip saddr & 255.255.255.0 == @m-c-0_v4 accept",
            "meta nfproto ipv4 meta l4proto 6 th dport 80 ip saddr & 255.255.255.0 == @m-c-1_v4 accept"});
}

TEST_CASE("prefixes of one length are a hash set looked up with the address masked") {
  RunBuilder b;
  for (std::uint16_t i = 0; i < 3; ++i)
    b.add({"10.0." + std::to_string(i) + ".0/24"}, {std::uint16_t(1000 + i), std::uint16_t(1000 + i)});
  b.add({"10.9.0.0/16", "10.8.0.0/16", "2001:db8::/64"}, {2000, 2000});
  b.add({"10.7.0.1"}, {2001, 2001});
  b.add({"2001:db8:1::/64"}, {2002, 2002});
  nft::Table table = render(b.rs);
  auto rules = texts(chain(table, "c-c"));
  std::vector<std::string> heads;
  for (const auto& r : rules) heads.push_back(r.substr(0, r.find(" comment")));
  CHECK(
      heads ==
      std::vector<std::string>{
          "meta nfproto ipv4 meta l4proto 6 ip saddr & 255.255.0.0 . th dport @m-c-0_v4 accept",
          "meta nfproto ipv4 meta l4proto 6 ip saddr & 255.255.255.0 . th dport @m-c-0_v4_1 accept",
          "meta nfproto ipv4 meta l4proto 6 ip saddr . th dport @m-c-0_v4_2 accept",
          "meta nfproto ipv6 meta l4proto 6 ip6 saddr & ffff:ffff:ffff:ffff:: . th dport @m-c-0_v6 accept"});
  const nft::Set& slash16 = set_named(table, "m-c-0_v4");
  CHECK_FALSE(slash16.interval);
  CHECK(slash16.counters);
  CHECK(nft::element_texts(slash16) == std::vector<std::string>{"10.9.0.0 . 2000 comment \":13:3 p#3\"",
                                                                "10.8.0.0 . 2000 comment \":13:3 p#3\""});
  CHECK(slash16.elements[0].key == nft::Bytes{10, 9, 0, 0, 0x07, 0xd0, 0, 0});
  CHECK(slash16.elements[0].key_end.empty());
  CHECK(nft::element_texts(set_named(table, "m-c-0_v6")).size() == 2);
  // `nft --debug=netlink` for "ip6 saddr & ffff:ffff:ffff:ffff:: . th dport @s accept" (nftables 1.0.6)
  const nft::Rule& v6 = chain(table, "c-c").rules[3];
  CHECK(nft::bytecode(v6, "c-c") == R"([ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x0000000a ]
[ meta load l4proto => reg 1 ]
[ cmp eq reg 1 0x00000006 ]
[ payload load 16b @ network header + 8 => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0xffffffff 0xffffffff 0x00000000 0x00000000 ) ^ 0x00000000 0x00000000 0x00000000 0x00000000 ]
[ payload load 2b @ transport header + 2 => reg 2 ]
[ lookup reg 1 set )" + v6.exprs[7].text +
                                        R"( ]
[ immediate reg 0 accept ]
)");
}

namespace {

// Chains "a", "b", "c" of two allow rules each (one shape), and "log" of one log rule; endpoints name
// the groups' chain lists.
ir::Ruleset chain_lists(const std::vector<std::vector<std::string>>& endpoints) {
  ir::Ruleset rs;
  rs.files = {"<command line>", "policy.yaml"};
  std::uint32_t line = 10;
  for (const char* name : {"a", "b", "c"}) {
    ir::Chain& c = rs.chains[name];
    c = ir::Chain{name, {}, origin(line++, name)};
    for (int i = 0; i < 2; ++i) {
      ir::Rule rule;
      rule.match.protocols = std::vector<std::uint8_t>{6};
      std::uint16_t port = static_cast<std::uint16_t>(1000 + line);
      rule.match.dst_port.push_back({false, {{port, port}}});
      rule.action.kind = ir::ActionKind::accept;
      rule.origin = origin(line++, name, i);
      c.rules.push_back(rule);
    }
  }
  ir::Rule log;
  log.action.kind = ir::ActionKind::log;
  log.origin = origin(line, "log", 0);
  rs.chains["log"] = ir::Chain{"log", {log}, origin(line, "log")};
  ir::Section section{"s", false, {}};
  for (std::size_t e = 0; e < endpoints.size(); ++e) {
    ir::Endpoint ep;
    ep.name = "e" + std::to_string(e);
    ep.groups.push_back(ir::Group{"g", endpoints[e], ir::Verdict::continue_, {}, origin(5, "g")});
    section.endpoints.push_back(ep);
  }
  rs.stage(ir::Stage::input).sections.push_back(section);
  return rs;
}

std::vector<std::string> chain_names(const nft::Table& table) {
  std::vector<std::string> out;
  for (const auto& c : table.chains)
    if (c.name.rfind("c-", 0) == 0) out.push_back(without_digests(c.name));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("consecutive chains of one shape are one nft chain whose runs merge across them") {
  nft::Table table = render(chain_lists({{"a", "b", "log", "c"}}));
  CHECK(chain_names(table) == std::vector<std::string>{"c-a..b", "c-c", "c-log"});
  CHECK(texts(chain(table, "g-input-0-e0-0-g")) ==
        std::vector<std::string>{"counter jump c-a..b comment \"policy.yaml:5:3 g\"",
                                 "counter jump c-log comment \"policy.yaml:5:3 g\"",
                                 "counter jump c-c comment \"policy.yaml:5:3 g\""});
  // four rules from two chains: one run, one set with the stamps of both chains' rules
  CHECK(
      texts(chain(table, "c-a..b")) ==
      std::vector<std::string>{"meta l4proto 6 th dport @m-a-0 accept comment \"policy.yaml:11:3 a#0 +3\""});
  CHECK(nft::element_texts(set_named(table, "m-a-0")) ==
        std::vector<std::string>{"1011 comment \":11:3 a#0\"", "1012 comment \":12:3 a#1\"",
                                 "1014 comment \":14:3 b#0\"", "1015 comment \":15:3 b#1\""});
  CHECK(set_named(table, "m-a-0").comment == "policy.yaml");
}

TEST_CASE("elements from another file than their run's first rule keep the whole stamp") {
  ir::Ruleset rs = chain_lists({{"a", "b", "log", "c"}});
  rs.files.push_back("more/other.yaml");
  for (auto& rule : rs.chains["b"].rules)
    rule.origin.loc.file = static_cast<std::uint32_t>(rs.files.size() - 1);
  nft::Table table = render(rs);
  CHECK(nft::element_texts(set_named(table, "m-a-0")) ==
        std::vector<std::string>{"1011 comment \":11:3 a#0\"", "1012 comment \":12:3 a#1\"",
                                 "1014 comment \"more/other.yaml:14:3 b#0\"",
                                 "1015 comment \"more/other.yaml:15:3 b#1\""});
  CHECK(set_named(table, "m-a-0").comment == "policy.yaml");
}

TEST_CASE("a chain something else also refers to stays a chain of its own") {
  SECTION("two groups") {
    CHECK(chain_names(render(chain_lists({{"a", "b", "c"}, {"c"}}))) ==
          std::vector<std::string>{"c-a..b", "c-c", "c-log"});
  }
  SECTION("a jump") {
    ir::Ruleset rs = chain_lists({{"a", "b", "c"}});
    ir::Rule jump;
    jump.action.kind = ir::ActionKind::jump;
    jump.action.target = "b";
    jump.origin = origin(30, "log", 1);
    rs.chains["log"].rules.push_back(jump);
    CHECK(chain_names(render(rs)) == std::vector<std::string>{"c-a", "c-b", "c-c", "c-log"});
  }
}

TEST_CASE("an address set of prefixes of one length is a hash set looked up masked") {
  ir::Rule rule;
  rule.match.src_addr.push_back({false, "nets"});
  rule.match.dst_addr.push_back({true, "hosts"});
  rule.action.kind = ir::ActionKind::accept;
  ir::Ruleset rs = one_rule(rule);
  rs.sets["nets"] = {{*ir::parse_cidr("10.1.0.0/16"), *ir::parse_cidr("10.2.0.0/16"),
                      *ir::parse_cidr("2001:db8:1::/48"), *ir::parse_cidr("2001:db8:2::/48")},
                     {}};
  rs.sets["hosts"] = {{*ir::parse_cidr("192.0.2.7"), *ir::parse_cidr("192.0.2.9"),
                       *ir::parse_cidr("2001:db8::7"), *ir::parse_cidr("2001:db8::/64")},
                      {}};
  nft::Table table = render(rs);
  CHECK(texts(chain(table, "c-c")) ==
        std::vector<std::string>{
            "meta nfproto ipv4 ip saddr & 255.255.0.0 == @s-nets_v4 ip daddr != @s-hosts_v4 "
            "counter accept comment \"policy.yaml:9:3 p#0\"",
            "meta nfproto ipv6 ip6 saddr & ffff:ffff:ffff:: == @s-nets_v6 ip6 daddr != "
            "@s-hosts_v6 counter accept comment \"policy.yaml:9:3 p#0\""});
  const nft::Set& nets = set_named(table, "s-nets_v4");
  CHECK_FALSE(nets.interval);
  CHECK(nft::element_texts(nets) == std::vector<std::string>{"10.1.0.0", "10.2.0.0"});
  CHECK(nets.elements.at(1).key == nft::Bytes{10, 2, 0, 0});
  CHECK_FALSE(set_named(table, "s-hosts_v4").interval);  // whole addresses: a hash set, no mask
  CHECK(set_named(table, "s-hosts_v6").interval);        // two lengths: an interval set
  // `nft --debug=netlink` for "ip saddr & 255.255.0.0 == @s accept" (nftables 1.0.6)
  CHECK(nft::bytecode(chain(table, "c-c").rules.at(0), "c-c")
            .rfind(R"([ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x00000002 ]
[ payload load 4b @ network header + 12 => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0x0000ffff ) ^ 0x00000000 ]
[ lookup reg 1 set )",
                   0) == 0);
}

TEST_CASE("a run over both families gets one set per family, a rule with both is in both") {
  RunBuilder b;
  b.add({"10.0.0.1"}, {1, 1});
  b.add({"2001:db8::1"}, {2, 2});
  b.add({"10.0.0.3", "2001:db8::3"}, {3, 3});
  b.add({"10.0.0.4"}, {4, 4}, ir::ActionKind::accept, 17);
  nft::Table table = render(b.rs);
  auto rules = texts(chain(table, "c-c"));
  REQUIRE(rules.size() == 2);
  CHECK(rules[0].rfind("meta nfproto ipv4 meta l4proto . ip saddr . th dport @m-c-0_v4 accept", 0) == 0);
  CHECK(rules[1].rfind("meta nfproto ipv6 meta l4proto . ip6 saddr . th dport @m-c-0_v6 accept", 0) == 0);
  const nft::Set& v4 = set_named(table, "m-c-0_v4");
  CHECK_FALSE(v4.interval);  // single values only: a hash set
  CHECK(nft::element_texts(v4) == std::vector<std::string>{"6 . 10.0.0.1 . 1 comment \":10:3 p#0\"",
                                                           "6 . 10.0.0.3 . 3 comment \":12:3 p#2\"",
                                                           "17 . 10.0.0.4 . 4 comment \":13:3 p#3\""});
  CHECK(nft::element_texts(set_named(table, "m-c-0_v6")) ==
        std::vector<std::string>{"6 . 2001:db8::1 . 2 comment \":11:3 p#1\"",
                                 "6 . 2001:db8::3 . 3 comment \":12:3 p#2\""});
}

TEST_CASE("a merged reject checks its guard before the lookup, and both forms share the set") {
  RunBuilder b;
  for (std::uint16_t i = 0; i < 4; ++i)
    b.add({"10.0.0." + std::to_string(i)}, {22, 22}, ir::ActionKind::reject);
  for (auto& rule : b.rs.chains["c"].rules) rule.action.reject_with = "tcp-reset";
  nft::Table table = render(b.rs);
  CHECK(texts(chain(table, "c-c")) ==
        std::vector<std::string>{
            "meta nfproto ipv4 meta l4proto 6 th dport 22 meta l4proto 6 ip saddr @m-c-0_v4 "
            "reject with tcp reset comment \"policy.yaml:10:3 p#0 +3\"",
            "meta nfproto ipv4 meta l4proto 6 th dport 22 ip saddr @m-c-0_v4 reject with "
            "icmpx type port-unreachable comment \"policy.yaml:10:3 p#0 +3\""});
  // one field: a plain set of addresses, counted per element
  const nft::Set& set = set_named(table, "m-c-0_v4");
  CHECK(set.concat.empty());
  CHECK(set.key_type == nft::KeyType::ipv4_addr);
  CHECK(set.elements.size() == 4);
}

TEST_CASE("rpf is a fib lookup of the source with the mark, and of iif when strict") {
  ir::Ruleset rs = nft_test::small_ruleset();
  ir::Rule spoofed;
  spoofed.action.kind = ir::ActionKind::drop;
  spoofed.match.family = ir::Family::ipv6;
  spoofed.match.rpf = ir::RpfMode::strict;
  spoofed.match.rpf_negate = true;
  ir::Rule routed;
  routed.match.rpf = ir::RpfMode::loose;
  rs.chains["anti-spoofing"] = {"anti-spoofing", {spoofed, routed}, {}};
  ir::Endpoint all;
  all.name = "all";
  all.groups.push_back({"g", {"anti-spoofing"}, ir::Verdict::continue_, {}, {}});
  rs.stage(ir::Stage::prednat).sections.push_back({"rpf", false, {all}});
  nft::Table table = render(rs);
  CHECK(texts(chain(table, "c-anti-spoofing")) ==
        std::vector<std::string>{"meta nfproto ipv6 fib saddr . mark . iif oif missing counter drop",
                                 "fib saddr . mark oif exists counter accept"});
}

TEST_CASE("ct-helper: a helper object per helper and protocol, assigned only after conntrack") {
  nft::Table table = render(nft_test::kitchen_sink_ruleset());
  CHECK(table.helpers == std::vector<nft::CtHelper>{{"h-ftp-tcp", "ftp", 6}, {"h-tftp-udp", "tftp", 17}});
  auto clamp = texts(chain(table, "c-clamp"));
  REQUIRE(clamp.size() == 4);
  CHECK(clamp[2].rfind("meta l4proto 6 th dport 21 counter ct helper set \"h-ftp-tcp\"", 0) == 0);
  CHECK(clamp[3].rfind("counter ct helper set \"h-tftp-udp\"", 0) == 0);
  CHECK(
      table.text().find("\tct helper h-ftp-tcp {\n\t\ttype \"ftp\" protocol tcp\n\t\tl3proto inet\n\t}\n") !=
      std::string::npos);

  ir::Rule before_conntrack;
  before_conntrack.action.kind = ir::ActionKind::ct_helper;
  before_conntrack.action.target = "ftp";
  ir::Ruleset rs = nft_test::small_ruleset();
  rs.chains["raw"] = {"raw", {before_conntrack}, {}};
  ir::Endpoint raw;
  raw.name = "raw";
  raw.groups.push_back({"g", {"raw"}, ir::Verdict::continue_, {}, {}});
  rs.stage(ir::Stage::untracked_in).sections.push_back({"raw", false, {raw}});
  Diagnostics diag;
  nft::translate(rs, diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all()[0].message.find("only be assigned after conntrack") != std::string::npos);
}

namespace {

ir::Endpoint named_endpoint(std::string name, std::optional<ir::IfacePattern> iif,
                            std::optional<ir::IfacePattern> oif = std::nullopt) {
  ir::Endpoint ep;
  ep.name = std::move(name);
  ep.match.iif = std::move(iif);
  ep.match.oif = std::move(oif);
  ep.default_verdict = ir::Verdict::accept;
  ep.origin = origin(static_cast<int>(ep.name.size()), ep.name);
  return ep;
}

}  // namespace

TEST_CASE("four or more endpoints in a row told apart by one interface name dispatch through a verdict map") {
  ir::Ruleset rs;
  rs.files = {"<command line>", "policy.yaml"};
  auto& input = rs.stage(ir::Stage::input).sections.emplace_back(ir::Section{"s", false, {}}).endpoints;
  for (const char* name : {"eth0", "eth1", "eth1", "eth2", "lo"})
    input.push_back(named_endpoint(name, ir::IfacePattern{name, false}));
  input.push_back(named_endpoint("veth", ir::IfacePattern{"veth", true}));  // a prefix ends the run
  for (const char* name : {"a", "b", "c"})
    input.push_back(named_endpoint(name, ir::IfacePattern{name, false}));
  input.push_back(named_endpoint("any", std::nullopt));
  auto& output = rs.stage(ir::Stage::output).sections.emplace_back(ir::Section{"s", false, {}}).endpoints;
  for (const char* name : {"o1", "o2", "o3", "o4"})
    output.push_back(named_endpoint(name, std::nullopt, ir::IfacePattern{name, false}));
  rs.sets["admins"] = ir::AddrSet{{*ir::parse_cidr("10.0.0.0/8")}, origin(1, "set")};
  output[2].match.src_set =
      "admins";  // an address match too: dispatched by its own rule, between two short runs
  nft::Table table = render(rs);
  CHECK(texts(chain(table, "input-0")) ==
        std::vector<std::string>{
            "iifname vmap { \"eth0\" : goto e-input-0-eth0, \"eth1\" : goto e-input-0-eth1, \"eth2\" : goto "
            "e-input-0-eth2, \"lo\" : goto e-input-0-lo } comment \"4 interface names to their endpoints\"",
            "iifname \"veth*\" counter goto e-input-0-veth comment \"policy.yaml:4:3 veth\"",
            "iifname \"a\" counter goto e-input-0-a comment \"policy.yaml:1:3 a\"",
            "iifname \"b\" counter goto e-input-0-b comment \"policy.yaml:1:3 b\"",
            "iifname \"c\" counter goto e-input-0-c comment \"policy.yaml:1:3 c\"",
            "counter goto e-input-0-any comment \"policy.yaml:3:3 any\""});
  // What the map sent an endpoint is counted in its chain, under its origin; the endpoint the map never
  // sends anything to (the second eth1) keeps its chain without that counter.
  CHECK(texts(chain(table, "e-input-0-lo")) ==
        std::vector<std::string>{"counter comment \"policy.yaml:2:3 lo\"",
                                 "counter accept comment \"policy.yaml:2:3 lo\""});
  CHECK(texts(chain(table, "e-input-0-eth2")).size() == 2);
  std::size_t eth1_chains = 0;
  for (const auto& c : table.chains)
    if (c.name.starts_with("e-input-0-eth1")) eth1_chains += c.rules.size();
  CHECK(eth1_chains == 3);
  CHECK(texts(chain(table, "output-0")).size() == 4);  // runs of 2 and 1 around the address match
  // Endpoints that repeat a name count once: four endpoints of three names keep their goto rules.
  for (const char* name : {"a", "b", "a", "c"})
    input.push_back(named_endpoint(name, ir::IfacePattern{name, false}));
  CHECK(texts(chain(render(rs), "input-0")).size() == 10);
  const nft::Rule& map = chain(table, "input-0").rules.at(0);
  REQUIRE(map.anon_sets.size() == 1);
  CHECK(map.anon_sets[0].elements.size() == 4);
  CHECK(without_digests(map.anon_sets[0].goto_chains[3]) == "e-input-0-lo");
  // `nft --debug=netlink` for `iifname vmap { ... }` (nftables 1.0.6, which names the map __map%d)
  CHECK(nft::bytecode(map, "input-0") == R"([ meta load iifname => reg 1 ]
[ lookup reg 1 set __set%d dreg 0 ]
)");
}
