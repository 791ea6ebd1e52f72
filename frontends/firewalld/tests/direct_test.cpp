// direct_test.cpp - direct.xml's iptables arguments as IR rules, and where the rules land (spec §1.7).
#include <catch2/catch.hpp>

#include <variant>

#include "direct.hpp"
#include "mapping_support.hpp"

namespace fwe::firewalld::test {
namespace {

DirectRuleIr parsed(const std::string& args, ir::Family family = ir::Family::ipv4) {
  auto result = parse_direct_args(args, family);
  if (const auto* why = std::get_if<std::string>(&result)) FAIL(args << ": " << *why);
  return std::get<DirectRuleIr>(result);
}

std::string refused(const std::string& args, ir::Family family = ir::Family::ipv4) {
  auto result = parse_direct_args(args, family);
  if (std::holds_alternative<DirectRuleIr>(result)) FAIL(args << " was taken");
  return std::get<std::string>(result);
}

DirectRule direct(Setup& setup, std::string ipv, std::string table, std::string chain, std::int32_t priority,
                  std::string args, DirectRule::Kind kind = DirectRule::Kind::rule) {
  DirectRule rule{std::move(ipv), std::move(table), std::move(chain), priority, std::move(args), setup.loc()};
  rule.kind = kind;
  return rule;
}

}  // namespace

TEST_CASE("direct: matches and targets as iptables reads them", "[direct]") {
  auto drop = parsed("-p tcp --dport 22 -j DROP");
  CHECK(drop.rule.action.kind == ir::ActionKind::drop);
  CHECK(drop.rule.match.family == ir::Family::ipv4);
  CHECK(drop.rule.match.protocols == std::vector<std::uint8_t>{6});
  CHECK(drop.rule.match.dst_port.at(0).ports == ir::PortSet{{22, 22}});

  auto web = parsed(
      "-i eth+ ! -s 10.0.0.0/8 -d 192.0.2.1,192.0.2.9 -p udp -m multiport ! --sports 53,1000:2000 "
      "-m conntrack --ctstate NEW,ESTABLISHED -m comment --comment \"two words\" -j REJECT "
      "--reject-with icmp-host-prohibited");
  CHECK(web.rule.match.iif == std::vector<ir::IfacePattern>{{"eth", true}});
  REQUIRE(web.source);
  CHECK(web.source->negate);
  REQUIRE(web.destination);
  CHECK(web.destination->cidrs.size() == 2);
  CHECK(web.rule.match.src_port.at(0).negate);
  CHECK(web.rule.match.src_port.at(0).ports == ir::PortSet{{53, 53}, {1000, 2000}});
  CHECK(web.rule.match.ct_states == std::vector{ir::CtState::new_, ir::CtState::established});
  CHECK(web.rule.action.reject_with == "icmp-host-prohibited");

  CHECK(parsed("-j REJECT", ir::Family::ipv6).rule.action.reject_with == "icmp6-port-unreachable");
  auto ping = parsed("-p icmpv6 --icmpv6-type echo-request -j ACCEPT", ir::Family::ipv6);
  CHECK(ping.rule.match.icmp->type == 128);
  CHECK(ping.rule.match.icmp->v6);
  CHECK(parsed("-p icmp --icmp-type 3/13 -j ACCEPT").rule.match.icmp->code == 13);
  auto log = parsed("-m limit --limit 10/min -j LOG --log-prefix 'fw: ' --log-level info");
  CHECK(log.rule.action.kind == ir::ActionKind::log);
  CHECK(log.rule.action.log_prefix == "fw: ");
  CHECK(log.rule.action.log_level == 6);
  CHECK(log.rule.match.rate_limit == ir::RateLimit{10, "minute", 5});
  auto mark = parsed("-m mark ! --mark 0x1/0xf -j MARK --set-mark 0x20/0xf0");
  CHECK(mark.rule.match.mark_negate);
  CHECK(mark.rule.action.mark_value == 0x20);
  CHECK(parsed("-p tcp --dport 80 -j DNAT --to-destination 10.0.0.5:8080").rule.action.nat_port ==
        ir::PortRange{8080, 8080});
  CHECK(ir::to_string(
            *parsed("-p tcp -j DNAT --to-destination [fd00::5]:80", ir::Family::ipv6).rule.action.nat_addr) ==
        "fd00::5");
  CHECK(parsed("-j CT --notrack").rule.action.kind == ir::ActionKind::notrack);
  // To iptables, protocol 0 is every protocol, as "all" is.
  for (const char* any : {"-p all -j DROP", "-p 0 -j DROP"}) CHECK_FALSE(parsed(any).rule.match.protocols);
  CHECK(parsed("-m conntrack --ctstate DNAT -j ACCEPT").rule.match.ct_status ==
        std::vector{ir::CtStatus::dnat});
  auto custom = parsed("-s 10.1.0.0/16 -j my-chain");
  CHECK(custom.rule.action.kind == ir::ActionKind::jump);
  CHECK(custom.rule.action.target == "my-chain");
}

TEST_CASE("direct: what is not understood is refused with the reason", "[direct]") {
  CHECK(refused("-p tcp --dport 22") == "a rule without -j only counts packets");
  CHECK(refused("--dport 22 -j DROP") == "--dport needs -p tcp, udp, sctp or udplite first");
  CHECK(refused("-m set --match-set x src -j DROP") == "match 'set' is not carried over");
  CHECK(refused("-j NFQUEUE") == "target NFQUEUE is not carried over");
  CHECK(refused("-s fd00::1 -j DROP") == "'fd00::1' is not an address of the rule's family");
  CHECK(refused("-j CT --helper ftp") == "'--helper' is not understood");
  CHECK(refused("-g other") == "-g (goto) is not carried over; use -j");
  CHECK(refused("-m mark --mark 0x10/0xf -j ACCEPT") ==
        "mark '0x10/0xf' has value bits outside its mask or in 0xf0000000 (fwengine's own)");
  CHECK(refused("-j MARK --set-mark 0x10000000") ==
        "mark '0x10000000' has value bits outside its mask or in 0xf0000000 (fwengine's own)");
  CHECK(refused("-p tcp --dport 22 -j DROP -j ACCEPT") == "two targets");
  CHECK(refused("-j LOG --log-prefix 'open") == "a quote is not closed");
  CHECK(refused("-j DNAT") == "DNAT needs --to-destination or --to-source");
  CHECK(refused("! -p 0 -j DROP") == "'! -p 0' matches nothing");
  // ICMP matches as iptables and ip6tables take them (firewalld fails to load its direct rules otherwise),
  // and NAT ports of the protocols fwengine rewrites them of.
  CHECK(refused("--icmp-type 8 -j DROP") == "--icmp-type needs -p icmp");
  CHECK(refused("-p tcp --icmp-type 8 -j DROP") == "--icmp-type needs -p icmp");
  CHECK(parsed("-m icmp --icmp-type 8 -p icmp -j DROP").rule.match.icmp->type == 8);
  CHECK(refused("-p icmp --icmp-type 8 -j DROP", ir::Family::ipv6) ==
        "--icmp-type is not an option of ip6tables: use --icmpv6-type in a rule of ipv=\"ipv6\"");
  CHECK(refused("-p icmpv6 --icmpv6-type 128 -j DROP") ==
        "--icmpv6-type is not an option of iptables: use --icmp-type in a rule of ipv=\"ipv4\"");
  CHECK(refused("-j REDIRECT --to-ports 80") == "REDIRECT to a port needs -p tcp, udp, sctp or dccp");
  CHECK(refused("-p udplite -j MASQUERADE --to-ports 1000-2000") ==
        "MASQUERADE to a port needs -p tcp, udp, sctp or dccp");
  CHECK(refused("! -p tcp -j SNAT --to-source 192.0.2.1:1000-2000") ==
        "SNAT to a port needs -p tcp, udp, sctp or dccp");
}

TEST_CASE("direct: with FirewallBackend=iptables the ACCEPT semantics are named in a warning", "[direct]") {
  Setup setup;
  setup.config.settings.firewall_backend = "iptables";
  setup.config.direct.push_back(direct(setup, "ipv4", "filter", "INPUT", 0, "-p tcp --dport 8080 -j ACCEPT"));
  setup.build();
  CHECK(setup.count(Severity::warning, "FirewallBackend=iptables: the direct rules are carried over") == 1);
  Setup nftables;
  nftables.config.direct.push_back(
      direct(nftables, "ipv4", "filter", "INPUT", 0, "-p tcp --dport 8080 -j ACCEPT"));
  nftables.build();
  CHECK(nftables.count(Severity::warning, "FirewallBackend") == 0);
}

TEST_CASE("direct: rules become a section before firewalld's, sorted by priority", "[direct]") {
  Setup setup;
  setup.config.direct.push_back(direct(setup, "ipv4", "filter", "INPUT", 5, "-p tcp --dport 8080 -j ACCEPT"));
  setup.config.direct.push_back(direct(setup, "ipv4", "filter", "INPUT", 0, "-p tcp --dport 22 -j DROP"));
  setup.config.direct.push_back(direct(setup, "ipv6", "filter", "INPUT", 1, "-s fd00::/8 -j lab"));
  setup.config.direct.push_back(direct(setup, "ipv6", "filter", "lab", 0, "", DirectRule::Kind::chain));
  setup.config.direct.push_back(direct(setup, "ipv6", "filter", "lab", 0, "-p udp -j REJECT"));
  setup.config.direct.push_back(direct(setup, "ipv4", "mangle", "INPUT", 0, "-j ACCEPT"));
  setup.config.direct.push_back(
      direct(setup, "ipv4", "filter", "INPUT", 0, "-j DNAT --to-destination 10.0.0.1"));
  setup.config.direct.push_back(
      direct(setup, "ipv4", "", "", 0, "-A INPUT -j DROP", DirectRule::Kind::passthrough));
  setup.config.direct.push_back(
      direct(setup, "ipv4", "nat", "OUTPUT", 0,
             "-p tcp -d 10.88.0.9 --dport 8081 -j DNAT --to-destination 10.88.0.2:8080"));
  const ir::Ruleset rs = setup.build();
  CHECK(setup.count(Severity::warning, "mangle INPUT has no stage in the IR") == 1);
  CHECK(setup.count(Severity::warning,
                    "iptables takes DNAT and REDIRECT only in nat PREROUTING and OUTPUT") == 1);
  CHECK(setup.count(Severity::warning, "a passthrough is an iptables command") == 1);

  const auto& sections = rs.stage(ir::Stage::input).sections;
  REQUIRE(sections.size() == 2);
  CHECK(sections[0].name == "direct");
  const ir::Chain* chain = rs.find_chain("direct/filter/INPUT");
  REQUIRE(chain);
  REQUIRE(chain->rules.size() == 3);
  CHECK(chain->rules[0].action.kind == ir::ActionKind::drop);  // priority 0 first
  CHECK(chain->rules[1].action.target == "direct/ipv6/filter/lab");
  CHECK(chain->rules[2].action.kind == ir::ActionKind::accept);
  CHECK(chain->rules[0].origin.policy == "direct rule ipv4 filter INPUT: -p tcp --dport 22 -j DROP");

  // S41: the DROP is final; S42: the ACCEPT is not, public rejects 8080; ssh stays open.
  CHECK(outcome(rs, to_host("10.77.0.2", 22)) == "drop");
  CHECK(outcome(rs, to_host("fd77::2", 22)) == "open");
  CHECK(outcome(rs, to_host("10.77.0.2", 8080)) == "reject:icmp-admin-prohibited");
  CHECK(outcome(rs, to_host("fd77::2", 5000, kUdp)) == "reject:icmp6-port-unreachable");
  CHECK(trace::evaluate(rs, from_host("veth-b", "10.88.0.9", 8081)).packet.dport == 8080);
}

}  // namespace fwe::firewalld::test
