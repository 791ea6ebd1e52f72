#include <catch2/catch.hpp>
#include <sstream>

#include "fwengine/ir.hpp"
#include "fwengine/set_index.hpp"

using namespace fwe::ir;

TEST_CASE("CIDRs parse strictly and print canonically") {
  CHECK(to_string(*parse_cidr("10.0.0.0/8")) == "10.0.0.0/8");
  CHECK(to_string(*parse_cidr("2001:db8::/32")) == "2001:db8::/32");
  CHECK(to_string(*parse_cidr("192.168.1.7")) == "192.168.1.7/32");
  CHECK_FALSE(parse_cidr("10.0.0.1/8"));
  CHECK(to_string(*parse_cidr("10.0.0.1/8", false)) == "10.0.0.0/8");
  CHECK_FALSE(parse_cidr("10.0.0.0/33"));
  CHECK_FALSE(parse_cidr("10.0.0/8"));
  CHECK_FALSE(parse_cidr("10.0.0.0/"));
  CHECK(contains(*parse_cidr("10.0.0.0/8"), *parse_ip("10.9.8.7")));
  CHECK_FALSE(contains(*parse_cidr("10.0.0.0/8"), *parse_ip("11.0.0.1")));
  CHECK_FALSE(contains(*parse_cidr("::/0"), *parse_ip("10.0.0.1")));
}

TEST_CASE("vocabulary words round-trip") {
  for (auto name : stage_names()) CHECK(to_string(*parse_stage(name)) == name);
  for (auto name : action_names()) CHECK(to_string(*parse_action(name)) == name);
  for (auto name : ct_status_names()) CHECK(to_string(*parse_ct_status(name)) == name);
  CHECK(ct_status_names() == std::vector<std::string_view>{"dnat", "snat"});
  CHECK_FALSE(parse_stage("inptu"));
  CHECK(to_string(Verdict::continue_) == "continue");
}

TEST_CASE("protocols, interfaces and MACs") {
  CHECK(*parse_protocol("TCP") == 6);
  CHECK(*parse_protocol("ipv6-icmp") == 58);
  CHECK(*parse_protocol("47") == 47);
  CHECK_FALSE(parse_protocol("256"));
  CHECK(protocol_name(17) == "udp");
  CHECK(parse_iface("eth+").prefix);
  CHECK(parse_iface("eth+").matches("eth0"));
  CHECK_FALSE(parse_iface("eth0").matches("eth01"));
  CHECK(to_string(*parse_mac("00:1A:2b:3c:4d:5e")) == "00:1a:2b:3c:4d:5e");
  CHECK_FALSE(parse_mac("00:1a:2b:3c:4d"));
}

TEST_CASE("a log prefix for the kernel is cut before a character, never inside one, and writes no quote") {
  CHECK(kernel_log_prefix("drop: ", 127) == "drop: ");
  CHECK(kernel_log_prefix("\xc3\xa9t\xc3\xa9", 3) == "\xc3\xa9t");
  CHECK(kernel_log_prefix("\xc3\xa9t\xc3\xa9", 4) == "\xc3\xa9t");
  CHECK(kernel_log_prefix("\xe2\x82\xac", 2).empty());
  CHECK(kernel_log_prefix("say \"no\" \\ now\t", 127) == "say 'no' / now_");
  CHECK(kernel_log_prefix("\xff\xc3", 127) == "\xff\xc3");  // not UTF-8: bytes as they are
}

TEST_CASE("ICMP messages by nft's, iptables' and firewalld's names") {
  CHECK(parse_icmp_message("echo-request", false)->type == 8);
  CHECK_FALSE(parse_icmp_message("echo-request", false)->code);
  CHECK(parse_icmp_message("port-unreachable", false)->type == 3);
  CHECK(*parse_icmp_message("port-unreachable", false)->code == 3);
  CHECK(*parse_icmp_message("port-unreachable", true)->code == 4);
  CHECK(*parse_icmp_message("TOS-host-unreachable", false)->code == 12);
  CHECK(parse_icmp_message("neighbour-solicitation", true)->type == 135);
  CHECK(parse_icmp_message("nd-neighbor-solicit", true)->type == 135);
  CHECK_FALSE(parse_icmp_message("neighbour-solicitation", false));
}

TEST_CASE("a boxed match reads like std::optional and copies deeply") {
  Match m;
  CHECK_FALSE(m.pkt_type);
  CHECK(m.pkt_type == std::nullopt);
  m.pkt_type = "broadcast";
  CHECK(m.pkt_type == "broadcast");
  CHECK_FALSE(m.pkt_type == "unicast");
  m.ct_states = {CtState::established, CtState::related};
  REQUIRE(m.ct_states);
  CHECK(m.ct_states->size() == 2);

  std::optional<std::vector<IfacePattern>> parsed;
  m.iif = parsed;
  CHECK_FALSE(m.iif);
  parsed.emplace().push_back({"eth0", false});
  m.iif = parsed;
  REQUIRE(m.iif);
  CHECK((*m.iif)[0].name == "eth0");

  Match copy = m;
  CHECK(copy == m);
  copy.ct_states->pop_back();  // the copy has storage of its own
  CHECK(m.ct_states->size() == 2);
  CHECK_FALSE(copy == m);
  copy.ct_states.reset();
  m.ct_states = std::nullopt;
  CHECK(copy == m);
  m.rate_limit.emplace().rate = 10;
  CHECK(m.rate_limit->rate == 10);
  CHECK_FALSE(copy == m);
}

TEST_CASE("a shared string reads like a string, holds nothing when empty and is shared by its copies") {
  Action a;
  CHECK(a.target.empty());
  CHECK(a.target == "");
  CHECK(a.target.str().empty());
  a.target = std::string("gnp/allow-ssh");
  CHECK(a.target == "gnp/allow-ssh");
  CHECK(a.target == std::string_view("gnp/allow-ssh"));
  CHECK(a.target.size() == 13);
  CHECK(a.target.substr(0, 3) == "gnp");
  CHECK("jump " + a.target == "jump gnp/allow-ssh");
  CHECK(a.target + "!" == "gnp/allow-ssh!");
  const std::string& text = a.target;
  CHECK(text == "gnp/allow-ssh");

  Action copy = a;
  CHECK(copy == a);
  CHECK(copy.target.c_str() == a.target.c_str());  // one block for both
  copy.target = "other";  // assigning gives the copy a block of its own; the original keeps its text
  CHECK(a.target == "gnp/allow-ssh");
  CHECK_FALSE(copy == a);
  copy.target = "";  // an empty string is no string at all: equal to one never set
  CHECK(copy.target.empty());
  CHECK(copy == Action{});
  CHECK(SharedString(std::string("x")) == SharedString("x"));  // equal texts in two blocks are equal

  // The last holder frees the block (LeakSanitizer checks that it does), whoever it is.
  std::vector<SharedString> holders(100, SharedString("zone public"));
  SharedString last = holders.back();
  holders.clear();
  CHECK(last == "zone public");
  std::ostringstream printed;
  printed << last;
  CHECK(printed.str() == "zone public");

  // An origin packs its policy beside the location and the rule: 24 bytes, not 56.
  static_assert(sizeof(Origin) == 24);
  const Origin built{{1, 2, 3}, "chain", 4};
  CHECK(built.loc.line == 2);
  CHECK(built.policy == "chain");
  CHECK(built.rule == 4);
  CHECK(Origin{}.rule == -1);
}

TEST_CASE("a match without some parts keeps everything else") {
  Match m;
  m.iif = std::vector<IfacePattern>{{"eth0", false}};
  m.iif_negate = true;
  m.oif = std::vector<IfacePattern>{{"eth1", true}};
  m.family = Family::ipv4;
  m.protocols = std::vector<std::uint8_t>{6, 17};
  m.protocol_negate = true;
  m.src_addr = {{false, "lan"}};
  m.dst_addr = {{true, "dmz"}};
  m.src_port = {{false, {{1024, 65535}}}};
  m.dst_port = {{false, {{22, 22}}}};
  m.ct_states = {CtState::established};
  m.pkt_type = "unicast";
  m.mark_value = 1;
  m.rate_limit = RateLimit{10, "second", 5};
  m.ct_orig_dport = {{false, {{80, 80}}}};
  m.rpf = RpfMode::strict;

  CHECK(without(m, {}) == m);

  Match expected = m;
  expected.iif.reset();
  expected.iif_negate = false;
  expected.protocols.reset();
  expected.protocol_negate = false;
  expected.src_addr.clear();
  expected.dst_addr.clear();
  CHECK(without(m, {.iif = true, .protocols = true, .addresses = true}) == expected);

  expected = m;
  expected.oif.reset();
  expected.src_port.clear();
  expected.dst_port.clear();
  CHECK(without(m, {.oif = true, .ports = true}) == expected);  // ct_orig_dport is not among the ports
}

TEST_CASE("the set index finds every set by name, and only those") {
  Ruleset rs;
  // Names that share long prefixes, as a policy's inline sets do, in numbers that make probes collide.
  for (int i = 0; i < 3000; ++i) {
    const std::string name = "p" + std::to_string(i) + ".7.src";
    rs.sets[name] = AddrSet{{*parse_cidr("10.0.0." + std::to_string(i % 256) + "/32")}, {}};
  }
  const SetIndex index(rs.sets);
  REQUIRE(index.size() == rs.sets.size());
  std::uint32_t place = 0;
  for (const auto& [name, set] : rs.sets) {
    CHECK(index.place(name) == place);
    CHECK(index.find(name) == &set);
    CHECK(&index.at(place) == &set);
    ++place;
  }
  CHECK_FALSE(index.place("p3000.7.src"));
  CHECK(index.find("p1.7.sr") == nullptr);
  CHECK(SetIndex(std::map<std::string, AddrSet, std::less<>>{}).find("any") == nullptr);
}
