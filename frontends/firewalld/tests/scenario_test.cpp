// scenario_test.cpp - the scenarios of spec firewalld.md §6 (config + packet -> verdict, all checked on
// firewalld 1.3.3), as configurations built in C++, mapped to the IR and walked by core's reference
// evaluator in both compat modes. Verdict classes: "open", "drop", "reject:<type>" (firewalld's ICMP 3/13
// is icmp-admin-prohibited, 3/3 icmp-port-unreachable). Where 2.x differs, the row says both.
#include <catch2/catch.hpp>

#include "mapping_support.hpp"

namespace fwe::firewalld::test {
namespace {

constexpr const char* kAdmin = "reject:icmp-admin-prohibited";
constexpr const char* kPortUnreachable = "reject:icmp-port-unreachable";

Compat any_compat() {
  return GENERATE(Compat::v2, Compat::v1_3);
}

// The expectation that depends on the mode: 2.x first, then Debian 12's 1.3.3.
const char* by_mode(Compat compat, const char* v2, const char* v1_3) {
  return compat == Compat::v2 ? v2 : v1_3;
}

}  // namespace

TEST_CASE("S01-S04 stock: public by default, ssh open, the rest rejected, ICMP accepted", "[scenario]") {
  Setup setup(any_compat());
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == kAdmin);
  CHECK(outcome(rs, to_host("10.77.0.2", 5000, kUdp)) == kAdmin);
  CHECK(outcome(rs, to_host("fd77::2", 22)) == "open");
  CHECK(outcome(rs, to_host("fd77::2", 8080)) == kAdmin);
  CHECK(outcome(rs, icmp_to_host("10.77.0.2", 8)) == "open");
  CHECK(outcome(rs, icmp_to_host("fd77::2", 128)) == "open");
}

TEST_CASE("S05 an /etc zone replaces the stock one: port 8080 and icmp-block echo-request", "[scenario]") {
  Setup setup(any_compat());
  Zone& public_zone = setup.zone("public");
  public_zone.body = Body{};
  setup.port(public_zone.body, 8080, 8080, "tcp");
  public_zone.body.icmp_blocks.push_back("echo-request");
  public_zone.body.icmp_block_locs.push_back(setup.loc());
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == kAdmin);
  CHECK(outcome(rs, icmp_to_host("10.77.0.2", 8)) == kAdmin);
  CHECK(outcome(rs, icmp_to_host("fd77::2", 128)) == kAdmin);
  CHECK(outcome(rs, icmp_to_host("10.77.0.2", 0)) == "open");  // echo-reply is not blocked
}

TEST_CASE("S06-S07 icmp-block-inversion rejects ICMP, and turns icmp-blocks into accepts", "[scenario]") {
  Setup setup(any_compat());
  setup.zone("public").icmp_block_inversion = true;
  CHECK(outcome(setup.build(), icmp_to_host("10.77.0.2", 8)) == kAdmin);
  setup.zone("public").body.icmp_blocks.push_back("echo-request");
  setup.zone("public").body.icmp_block_locs.push_back(setup.loc());
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, icmp_to_host("10.77.0.2", 8)) == "open");
  CHECK(outcome(rs, icmp_to_host("10.77.0.2", 13)) == kAdmin);
}

TEST_CASE("S08-S10 default zones drop, block and trusted", "[scenario]") {
  Setup setup(any_compat());
  setup.config.settings.default_zone = "drop";
  ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "drop");
  CHECK(outcome(rs, icmp_to_host("10.77.0.2", 8)) == "drop");
  setup.config.settings.default_zone = "block";
  rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == kAdmin);
  CHECK(outcome(rs, icmp_to_host("10.77.0.2", 8)) == kAdmin);
  setup.config.settings.default_zone = "trusted";
  rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 9999)) == "open");
}

TEST_CASE("S11-S12 wildcard interface and source bindings", "[scenario]") {
  Setup setup(any_compat());
  setup.bind("trusted", "veth-+");
  CHECK(outcome(setup.build(), to_host("10.77.0.2", 8080)) == "open");
  setup.zone("trusted").interfaces.clear();
  setup.source("trusted", "10.77.0.3");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.3", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == kAdmin);
}

TEST_CASE("S13 a source beats an interface, and nothing drifts", "[scenario]") {
  Setup setup(any_compat());
  setup.source("drop", "10.77.0.3");
  setup.bind("public", "veth-a");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.3", 22)) == "drop");
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "open");
}

TEST_CASE("S14 sources are ordered by zone name, not by prefix length", "[scenario]") {
  Setup setup(any_compat());
  setup.source("block", "10.77.0.0/24");
  setup.source("trusted", "10.77.0.3");
  CHECK(outcome(setup.build(), to_host("10.77.0.3", 8080)) == kAdmin);
}

TEST_CASE("S15-S16 rich accept and reject types", "[scenario]") {
  Setup setup(any_compat());
  Body& body = setup.zone("public").body;
  setup.rich(body, R"(rule family="ipv4" source address="10.77.0.2" port port="8080" protocol="tcp" accept)");
  setup.rich(body, R"(rule family="ipv4" port port="9090" protocol="tcp" reject type="tcp-reset")");
  setup.rich(body,
             R"(rule family="ipv4" port port="5000" protocol="udp" reject type="icmp-port-unreachable")");
  setup.rich(body, R"(rule port port="2222" protocol="tcp" reject)");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.3", 8080)) == kAdmin);
  CHECK(outcome(rs, to_host("10.77.0.2", 9090)) == "reject:tcp-reset");
  CHECK(outcome(rs, to_host("10.77.0.2", 5000, kUdp)) == kPortUnreachable);
  CHECK(outcome(rs, to_host("10.77.0.2", 2222)) == kPortUnreachable);
  CHECK(outcome(rs, to_host("fd77::2", 2222)) == kPortUnreachable);
}

TEST_CASE("S17-S19 rich priorities: _pre, _deny, _allow, _post", "[scenario]") {
  Setup setup(any_compat());
  Setup deny(setup.config.compat), post(setup.config.compat);
  setup.rich(setup.zone("public").body,
             R"(rule family="ipv4" priority="-1" source address="10.77.0.2" drop)");
  ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "drop");
  CHECK(outcome(rs, to_host("10.77.0.3", 22)) == "open");
  deny.rich(deny.zone("public").body,
            R"(rule family="ipv4" source address="10.77.0.2" service name="ssh" reject)");
  CHECK(outcome(deny.build(), to_host("10.77.0.2", 22)) == kPortUnreachable);
  post.rich(post.zone("public").body, R"(rule family="ipv4" priority="1" source address="10.77.0.2" drop)");
  rs = post.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "drop");
}

TEST_CASE("2.3+ applies rich rules sorted, 1.3 in file order", "[scenario]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  Body& body = setup.zone("public").body;
  // Written exception first; firewalld 2.3+ sorts by the source as written: "10.77.0.0/24" < "10.77.0.5".
  setup.rich(body, R"(rule family="ipv4" priority="-10" source address="10.77.0.5" accept)");
  setup.rich(body, R"(rule family="ipv4" priority="-10" source address="10.77.0.0/24" drop)");
  // One sub-chain (deny), two reject types: "Rich_Drop" < "Rich_Reject", then by type.
  setup.rich(body, R"(rule family="ipv4" port port="9090" protocol="tcp" reject type="tcp-reset")");
  setup.rich(body, R"(rule family="ipv4" port port="9090" protocol="tcp" drop)");
  // A priority still comes first.
  setup.rich(body, R"(rule family="ipv4" priority="-20" source address="10.77.0.6" accept)");
  const ir::Ruleset rs = setup.build();
  const bool sorted = compat == Compat::v2;
  CHECK(outcome(rs, to_host("10.77.0.5", 8080)) == (sorted ? "drop" : "open"));
  CHECK(outcome(rs, to_host("10.77.0.6", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.78.0.2", 9090)) == (sorted ? "drop" : "reject:tcp-reset"));
}

TEST_CASE("S20-S21 inverted source and ipset source in rich rules", "[scenario]") {
  Setup setup(any_compat());
  setup.rich(setup.zone("public").body,
             R"(rule family="ipv4" source NOT address="10.77.0.2" port port="8080" protocol="tcp" accept)");
  ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.3", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == kAdmin);

  Setup sets(setup.config.compat);
  sets.ipset("allowed", "hash:net", {"10.77.0.8/29"});
  sets.rich(sets.zone("public").body,
            R"(rule source ipset="allowed" port port="8080" protocol="tcp" accept)");
  rs = sets.build();
  CHECK(outcome(rs, to_host("10.77.0.9", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == kAdmin);
}

TEST_CASE("a hash:ip+port ipset in a rich rule matches address and protocol and port together",
          "[scenario]") {
  Setup setup(any_compat());
  IpSet& web = setup.ipset("web", "hash:ip,port", {});
  web.other_entries = {"10.77.0.1,tcp:8080", "10.77.0.1,udp:5000"};
  setup.rich(setup.zone("public").body, R"(rule family="ipv4" destination ipset="web" accept)");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 5000, kUdp)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 9090)) == kAdmin);
  CHECK(outcome(rs, to_host("10.77.0.2", 5000)) == kAdmin);
}

TEST_CASE("S22 an ipset binds sources to a zone", "[scenario]") {
  Setup setup(any_compat());
  setup.ipset("blk", "hash:ip", {"10.77.0.9"});
  setup.source_ipset("drop", "blk");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.9", 22)) == "drop");
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "open");
}

TEST_CASE("S23-S26 port range, bare protocol, source-port, service override and include", "[scenario]") {
  Setup setup(any_compat());
  Body& body = setup.zone("public").body;
  setup.port(body, 8000, 8100, "tcp");
  body.protocols.push_back({17, setup.loc()});
  body.source_ports.push_back({{4444, 4444}, "tcp", setup.loc()});
  setup.service("ssh", {{2222, "tcp"}});  // S25: /etc services/ssh.xml
  setup.service("web", {}).includes = {"http"};
  setup.services(body, {"web"});
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8050)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 8101)) == kAdmin);
  CHECK(outcome(rs, to_host("10.77.0.2", 5000, kUdp)) == "open");
  trace::Packet from_4444 = to_host("10.77.0.2", 9090);
  from_4444.sport = 4444;
  CHECK(outcome(rs, from_4444) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 9090)) == kAdmin);
  CHECK(outcome(rs, to_host("10.77.0.2", 2222)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == kAdmin);
  CHECK(outcome(rs, to_host("10.77.0.2", 80)) == "open");
}

TEST_CASE("S27-S28 a policy on the unbound default zone: inert in 1.3, active in 2.x", "[scenario]") {
  const Compat compat = any_compat();
  Setup setup(compat);
  setup.policy("p", {"public"}, {"HOST"}, PolicyTarget::drop, -10);
  CHECK(outcome(setup.build(), to_host("10.77.0.2", 22)) == by_mode(compat, "drop", "open"));
  setup.bind("public", "veth-a");
  CHECK(outcome(setup.build(), to_host("10.77.0.2", 22)) == "drop");
}

TEST_CASE("S29 a positive-priority policy runs after the zone's rules, before its target", "[scenario]") {
  Setup setup(any_compat());
  setup.bind("public", "veth-a");
  Policy& p = setup.policy("p", {"public"}, {"HOST"}, PolicyTarget::drop, 100);
  setup.port(p.body, 8080, 8080, "tcp");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 9090)) == "drop");
}

TEST_CASE("S30 an ANY->HOST policy opens a port in the drop zone", "[scenario]") {
  Setup setup(any_compat());
  setup.config.settings.default_zone = "drop";
  setup.port(setup.policy("p", {"ANY"}, {"HOST"}, PolicyTarget::continue_).body, 8080, 8080, "tcp");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "drop");
}

TEST_CASE("S31-S32 no forwarding between zones without a policy", "[scenario]") {
  Setup setup(any_compat());
  setup.bind("internal", "veth-a");
  setup.bind("dmz", "veth-b");
  CHECK(outcome(setup.build(), through("10.77.0.2", "10.88.0.2", 8080)) == kAdmin);
  setup.policy("int-dmz", {"internal"}, {"dmz"}, PolicyTarget::accept);
  const ir::Ruleset rs = setup.build();
  const trace::Result v4 = trace::evaluate(rs, through("10.77.0.2", "10.88.0.2", 8080));
  CHECK(outcome(rs, v4) == "open");
  CHECK(ir::to_string(v4.packet.src) == "10.77.0.2");
  CHECK(outcome(rs, through("fd77::2", "fd88::2", 8080)) == "open");
  // Not the other way round.
  CHECK(outcome(rs, packet("veth-b", "veth-a", "10.88.0.2", "10.77.0.2", kTcp, 22)) == kAdmin);
}

TEST_CASE("S33-S34 <forward/> allows forwarding inside a zone, absent means off", "[scenario]") {
  Setup setup(any_compat());
  setup.bind("lab", "veth-a");
  setup.bind("lab", "veth-b");
  setup.zone("lab").forward = true;
  CHECK(outcome(setup.build(), through("10.77.0.2", "10.88.0.2", 8080)) == "open");
  setup.zone("lab").forward = false;
  CHECK(outcome(setup.build(), through("10.77.0.2", "10.88.0.2", 8080)) == kAdmin);
}

TEST_CASE("S35-S36 masquerade is not a forward permission, and is IPv4 only", "[scenario]") {
  Setup setup(any_compat());
  setup.bind("internal", "veth-a");
  setup.bind("external", "veth-b");
  CHECK(outcome(setup.build(), through("10.77.0.2", "10.88.0.2", 8080)) == kAdmin);
  setup.policy("int-ext", {"internal"}, {"external"}, PolicyTarget::accept);
  const ir::Ruleset rs = setup.build();
  const trace::Result v4 = trace::evaluate(rs, through("10.77.0.2", "10.88.0.2", 8080));
  CHECK(outcome(rs, v4) == "open");
  CHECK(v4.packet.ct_status[static_cast<std::size_t>(ir::CtStatus::snat)]);
  const trace::Result v6 = trace::evaluate(rs, through("fd77::2", "fd88::2", 8080));
  CHECK(outcome(rs, v6) == "open");
  CHECK_FALSE(v6.packet.ct_status[static_cast<std::size_t>(ir::CtStatus::snat)]);
}

TEST_CASE("S37-S38 forward-ports: redirect and DNAT need no open port or policy", "[scenario]") {
  Setup setup(any_compat());
  Body& body = setup.zone("public").body;
  body.forward_ports.push_back({{2223, 2223}, "tcp", ir::PortRange{22, 22}, std::nullopt, setup.loc()});
  body.forward_ports.push_back(
      {{8081, 8081}, "tcp", ir::PortRange{8080, 8080}, ir::parse_ip("10.88.0.2"), setup.loc()});
  const ir::Ruleset rs = setup.build();
  const trace::Result redirected = trace::evaluate(rs, to_host("10.77.0.2", 2223));
  CHECK(outcome(rs, redirected) == "open");
  CHECK(redirected.packet.dport == 22);
  const trace::Result forwarded = trace::evaluate(rs, through("10.77.0.2", "10.77.0.1", 8081));
  CHECK(outcome(rs, forwarded) == "open");
  CHECK(ir::to_string(forwarded.packet.dst) == "10.88.0.2");
  CHECK(forwarded.packet.dport == 8080);
  CHECK(ir::to_string(forwarded.packet.src) == "10.77.0.2");
  CHECK_FALSE(forwarded.packet.ct_status[static_cast<std::size_t>(ir::CtStatus::snat)]);
  // Locally generated traffic is not forwarded by a zone's forward-port.
  CHECK(outcome(rs, from_host("veth-a", "10.77.0.2", 8081)) == "open");
}

TEST_CASE("S39-S40 output is not zone-filtered, replies and lo are accepted", "[scenario]") {
  Setup setup(any_compat());
  setup.config.settings.default_zone = "drop";
  const ir::Ruleset rs = setup.build();
  const trace::Packet out = from_host("veth-a", "10.77.0.2", 8080);
  const trace::Result result = trace::evaluate(rs, out);
  CHECK(outcome(rs, result) == "open");
  CHECK(outcome(rs, trace::reply_of(out, result)) == "open");
  CHECK(outcome(rs, from_host("lo", "127.0.0.1", 8080)) == "open");
  CHECK(outcome(rs, packet("lo", "", "127.0.0.1", "127.0.0.1", kTcp, 8080)) == "open");
}

TEST_CASE("S41-S42 a direct DROP is final, a direct ACCEPT is not", "[scenario]") {
  Setup setup(any_compat());
  for (const char* args : {"-p tcp --dport 22 -j DROP", "-p tcp --dport 8080 -j ACCEPT"}) {
    DirectRule rule;
    rule.ipv = "ipv4";
    rule.table = "filter";
    rule.chain = "INPUT";
    rule.args = args;
    rule.loc = setup.loc();
    setup.config.direct.push_back(rule);
  }
  const ir::Ruleset rs = setup.build();
  CHECK(setup.diag.text().empty());
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "drop");    // S41
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == kAdmin);  // S42: firewalld's chains still reject
}

TEST_CASE("S43 trusted forwards", "[scenario]") {
  Setup setup(any_compat());
  setup.bind("trusted", "veth-a");
  CHECK(outcome(setup.build(), through("10.77.0.2", "10.88.0.2", 8080)) == "open");
}

TEST_CASE("S45 a rich limit keeps nft's burst of 5", "[scenario]") {
  Setup setup(any_compat());
  setup.rich(setup.zone("public").body, R"(rule port port="8080" protocol="tcp" accept limit value="2/m")");
  const ir::Ruleset rs = setup.build();
  const trace::Result result = trace::evaluate(rs, to_host("10.77.0.2", 8080));
  CHECK(outcome(rs, result) == "open");
  const ir::Rule* rule = result.stages.back().steps.back().rule;
  REQUIRE(rule != nullptr);
  REQUIRE(rule->match.rate_limit.has_value());
  CHECK(*rule->match.rate_limit == ir::RateLimit{2, "minute", 5});
}

TEST_CASE("S46 policy drifting (Q1): 1.3 dispatches by raw interface, 2.x by the classified zone",
          "[scenario]") {
  const Compat compat = any_compat();
  Setup setup(compat);
  setup.bind("lab", "veth-a");
  setup.config.settings.default_zone = "lab";
  setup.ipset("blk", "hash:ip", {"10.77.0.9"});
  setup.source_ipset("drop", "blk");
  setup.services(setup.policy("lab-host", {"lab"}, {"HOST"}, PolicyTarget::continue_, -5).body, {"http"});
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.9", 80)) == by_mode(compat, "drop", "open"));
  CHECK(outcome(rs, to_host("10.77.0.9", 22)) == "drop");
  CHECK(outcome(rs, to_host("10.77.0.2", 80)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == kAdmin);
}

TEST_CASE("S47-S48 rich destination and family", "[scenario]") {
  Setup setup(any_compat());
  Body& body = setup.zone("public").body;
  setup.rich(body,
             R"(rule family="ipv4" destination address="10.77.0.1" port port="8080" protocol="tcp" accept)");
  setup.rich(body, R"(rule family="ipv6" port port="9090" protocol="tcp" accept)");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "open");
  CHECK(outcome(rs, packet("veth-a", "", "10.77.0.2", "10.77.0.99", kTcp, 8080)) == kAdmin);
  CHECK(outcome(rs, to_host("fd77::2", 9090)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 9090)) == kAdmin);
}

TEST_CASE("S50 interfaces only in the default zone get no intra-zone forwarding", "[scenario]") {
  Setup setup(any_compat());
  CHECK(outcome(setup.build(), through("10.77.0.2", "10.88.0.2", 8080)) == kAdmin);
}

TEST_CASE("S51 HOST->ANY policies filter output", "[scenario]") {
  Setup setup(any_compat());
  setup.rich(setup.policy("out", {"HOST"}, {"ANY"}, PolicyTarget::continue_).body,
             R"(rule family="ipv4" destination address="10.77.0.2" port port="8080" protocol="tcp" drop)");
  const ir::Ruleset rs = setup.build();
  CHECK(outcome(rs, from_host("veth-a", "10.77.0.2", 8080)) == "drop");
  CHECK(outcome(rs, from_host("veth-b", "10.88.0.2", 8080)) == "open");
}

TEST_CASE("S52 a MAC address binds a source", "[scenario]") {
  Setup setup(any_compat());
  setup.source("trusted", "52:54:00:12:34:56");
  const ir::Ruleset rs = setup.build();
  trace::Packet from_mac = to_host("10.77.0.2", 8080);
  from_mac.src_mac = ir::parse_mac("52:54:00:12:34:56");
  CHECK(outcome(rs, from_mac) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == kAdmin);
}

TEST_CASE("S54-S55 neighbour discovery works in the drop zone thanks to allow-host-ipv6", "[scenario]") {
  Setup setup(any_compat());
  setup.config.settings.default_zone = "drop";
  CHECK(outcome(setup.build(), icmp_to_host("fd77::2", 136)) == "open");
  setup.policy("allow-host-ipv6", {"ANY"}, {"HOST"}, PolicyTarget::continue_, -15000);
  CHECK(outcome(setup.build(), icmp_to_host("fd77::2", 136)) == "drop");
}

TEST_CASE("S56 overlapping interfaces: 1.3 lets the zone applied last win, 2.x the first by name",
          "[scenario]") {
  const Compat compat = any_compat();
  Setup setup(compat);
  setup.zone("aaa").target = ZoneTarget::accept;
  setup.bind("aaa", "veth+");
  setup.zone("zzz").target = ZoneTarget::drop;
  setup.bind("zzz", "veth-a");
  CHECK(outcome(setup.build(), to_host("10.77.0.2", 8080)) == by_mode(compat, "open", "drop"));
}

TEST_CASE("2.x binds \"+\" as the default zone's catch-all: after every other binding, first by zone name",
          "[scenario]") {
  // fw.py binds "+" to the default zone, and nftables.py sorts every "+" binding after the others and by
  // zone name; fw_zone.py gives "+" no <forward/> rule.
  Setup setup(Compat::v2);
  setup.zone("trusted").forward = true;
  setup.bind("trusted", "+");  // sorts after public, the default zone: never reached
  setup.zone("work").target = ZoneTarget::drop;
  setup.bind("work", "veth-a");
  ir::Ruleset rs = setup.build();
  const trace::Packet on_b = packet("veth-b", "", "10.88.0.2", "10.88.0.1", kTcp, 8080);
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "drop");  // work
  CHECK(outcome(rs, on_b) == kAdmin);                        // public's catch-all
  // (trusted's <forward/> would accept it, were "+" a binding of its own.)
  CHECK(outcome(rs, packet("veth-b", "veth-a", "10.88.0.2", "10.77.0.2", kTcp, 8080)) == kAdmin);
  // "dmz" sorts before "public": its "+" takes every packet no other binding has.
  setup.zone("dmz").target = ZoneTarget::accept;
  setup.bind("dmz", "+");
  rs = setup.build();
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "drop");  // still work
  CHECK(outcome(rs, on_b) == "open");
}

TEST_CASE("IPv6_rpfilter drops IPv6 from a source routed elsewhere, neighbour discovery excepted",
          "[scenario]") {
  Setup setup(any_compat());
  const ir::Ruleset rs = setup.build();
  trace::Packet spoofed = to_host("fd88::77", 22);
  spoofed.src_route = "veth-b";  // the host routes fd88::/64 out of veth-b, not veth-a
  CHECK(outcome(rs, spoofed) == "drop");
  spoofed.src_route = "";  // no route at all
  CHECK(outcome(rs, spoofed) == "drop");
  trace::Packet solicitation = icmp_to_host("fd88::77", 135);
  solicitation.src_route = "veth-b";
  CHECK(outcome(rs, solicitation) == "open");
  trace::Packet v4 = to_host("10.88.0.77", 22);  // IPv6 only: IPv4 is the kernel's rp_filter's
  v4.src_route = "veth-b";
  CHECK(outcome(rs, v4) == "open");
  CHECK(outcome(rs, to_host("fd77::2", 22)) == "open");
}

}  // namespace fwe::firewalld::test
