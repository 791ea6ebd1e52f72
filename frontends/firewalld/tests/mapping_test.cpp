// mapping_test.cpp - the shape of the IR for small hand-built firewalld configurations: stages,
// classification order, chains, origins, and what is reported as not carried over.
#include <catch2/catch.hpp>

#include <algorithm>
#include <stdexcept>

#include "mapping_support.hpp"

namespace fwe::firewalld::test {
namespace {

// The stage's one section besides IPv6_rpfilter's.
const ir::Section& only_section(const ir::Ruleset& rs, ir::Stage stage) {
  std::vector<const ir::Section*> found;
  for (const ir::Section& s : rs.stage(stage).sections)
    if (s.name != "rpfilter") found.push_back(&s);
  REQUIRE(found.size() == 1);
  return *found.front();
}

std::vector<std::string> endpoint_names(const ir::Ruleset& rs, ir::Stage stage) {
  std::vector<std::string> names;
  for (const ir::Endpoint& endpoint : only_section(rs, stage).endpoints) names.push_back(endpoint.name);
  return names;
}

const ir::Endpoint& endpoint(const ir::Ruleset& rs, ir::Stage stage, const std::string& name) {
  for (const ir::Endpoint& e : only_section(rs, stage).endpoints)
    if (e.name == name) return e;
  FAIL("no endpoint " << name);
  throw std::logic_error("unreachable");
}

const ir::Chain& chain(const ir::Ruleset& rs, const std::string& name) {
  const ir::Chain* found = rs.find_chain(name);
  INFO(name);
  REQUIRE(found != nullptr);
  return *found;
}

std::vector<ir::ActionKind> actions(const ir::Chain& chain) {
  std::vector<ir::ActionKind> kinds;
  for (const ir::Rule& rule : chain.rules) kinds.push_back(rule.action.kind);
  return kinds;
}

using A = ir::ActionKind;
using Chains = std::vector<std::string>;

}  // namespace

TEST_CASE("stock 2.x: input, forward and output only, public is the catch-all", "[mapping]") {
  Setup setup;
  const ir::Ruleset rs = setup.build();
  CHECK(rs.frontend == "firewalld");
  REQUIRE(rs.stage(ir::Stage::prednat).sections.size() == 1);  // IPv6_rpfilter only
  CHECK(rs.stage(ir::Stage::prednat).sections[0].name == "rpfilter");
  CHECK(rs.stage(ir::Stage::dnat).empty());
  CHECK(rs.stage(ir::Stage::snat).empty());  // external masquerades, but nothing is bound to it

  const ir::Endpoint& in = only_section(rs, ir::Stage::input).endpoints.at(0);
  CHECK(endpoint_names(rs, ir::Stage::input) == std::vector<std::string>{"public (default zone)"});
  CHECK_FALSE(in.match.iif.has_value());
  CHECK(in.conntrack == ir::Conntrack::accept_established);
  CHECK(in.default_verdict == ir::Verdict::reject);
  CHECK(in.reject_with == "icmp-admin-prohibited");
  REQUIRE(in.groups.size() == 2);
  CHECK(in.groups[0].chains == Chains{"input/prelude"});
  CHECK(in.groups[1].chains ==
        Chains{"input/policy/allow-host-ipv6", "input/zone/public/allow", "input/zone/public/icmp"});

  // filter_INPUT before the zones: ct status dnat, lo, invalid.
  const ir::Chain& prelude = chain(rs, "input/prelude");
  CHECK(actions(prelude) == std::vector{A::accept, A::accept, A::drop});
  CHECK(prelude.rules[0].match.ct_status == std::vector{ir::CtStatus::dnat});
  CHECK(prelude.rules[1].match.iif == std::vector<ir::IfacePattern>{{"lo", false}});
  CHECK(prelude.rules[2].match.ct_states == std::vector{ir::CtState::invalid});

  // The ICMP rule of the default target closes the zone's own chain; nothing after the policies (the
  // target is the endpoint default).
  const ir::Chain& icmp = chain(rs, "input/zone/public/icmp");
  REQUIRE(icmp.rules.size() == 1);
  CHECK(icmp.rules[0].match.protocols == std::vector<std::uint8_t>{1, 58});
  CHECK(rs.find_chain("input/zone/public/end") == nullptr);

  // Forward: the RFC3964 reject after the prelude; output (2.3+): ct status dnat, lo and RFC3964.
  CHECK(actions(chain(rs, "forward/prelude")) == std::vector{A::accept, A::accept, A::drop, A::reject});
  CHECK(chain(rs, "forward/prelude").rules[3].action.reject_with == "icmp6-addr-unreachable");
  CHECK(endpoint_names(rs, ir::Stage::output) == std::vector<std::string>{"host"});
  CHECK(actions(chain(rs, "output/prelude")) == std::vector{A::accept, A::accept, A::reject});
  CHECK(chain(rs, "output/prelude").rules[0].match.ct_status == std::vector{ir::CtStatus::dnat});
  CHECK(only_section(rs, ir::Stage::output).endpoints[0].default_verdict == ir::Verdict::continue_);
}

TEST_CASE("stock 1.3: one shared policy dispatch chain, jumped from every zone", "[mapping]") {
  Setup setup(Compat::v1_3);
  const ir::Ruleset rs = setup.build();
  const ir::Endpoint& in = only_section(rs, ir::Stage::input).endpoints.at(0);
  CHECK(in.groups.at(1).chains ==
        Chains{"input/policies-pre", "input/zone/public/allow", "input/zone/public/end"});
  const ir::Chain& dispatch = chain(rs, "input/policies-pre");
  REQUIRE(dispatch.rules.size() == 1);  // ANY contributes no match
  CHECK(dispatch.rules[0].action.kind == A::jump);
  CHECK(dispatch.rules[0].action.target == "input/policy/allow-host-ipv6");
  CHECK_FALSE(dispatch.rules[0].match.iif.has_value());
}

TEST_CASE("classification order: sources by zone name, then interfaces", "[mapping]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  setup.bind("aaa", "eth+");
  setup.bind("zzz", "eth0");
  setup.bind("zzz", "eth1");
  setup.source("work", "10.1.0.0/16");
  setup.source("block", "10.2.0.0/16");
  const std::vector<std::string> sources{"block 10.2.0.0/16", "work 10.1.0.0/16"};
  std::vector<std::string> expected = sources;
  if (compat == Compat::v1_3) {
    // The zone applied last (sorting last) first, its last-listed interface first.
    expected.insert(expected.end(), {"zzz eth1", "zzz eth0", "aaa eth+"});
  } else {
    expected.insert(expected.end(), {"aaa eth+", "zzz eth0", "zzz eth1"});
  }
  expected.push_back("public (default zone)");
  ir::Ruleset rs = setup.build();
  CHECK(endpoint_names(rs, ir::Stage::input) == expected);
  const ir::Endpoint& first = only_section(rs, ir::Stage::input).endpoints[0];
  REQUIRE(first.match.src_set.has_value());
  CHECK(rs.find_set(*first.match.src_set)->cidrs == SlimVector{*ir::parse_cidr("10.2.0.0/16")});

  if (compat == Compat::v2) {
    // 2.x: ingress-priority sorts before everything else.
    setup.zone("zzz").ingress_priority = -1;
    rs = setup.build();
    CHECK(endpoint_names(rs, ir::Stage::input).front() == "zzz eth0");
  }
}

TEST_CASE("origins name the file position and the zone, service or rich rule", "[mapping]") {
  Setup setup;
  setup.rich(setup.zone("public").body, R"(rule family="ipv4" source address="10.0.0.1" drop)");
  const ir::Ruleset rs = setup.build();
  const ir::Chain& allow = chain(rs, "input/zone/public/allow");
  const ir::Rule& ssh = allow.rules.at(0);
  CHECK(ssh.origin.policy == "zone public: service ssh");
  CHECK(ssh.origin.loc == setup.config.zones.at("public").body.service_locs.at(0));
  CHECK(rs.files.at(ssh.origin.loc.file) == "firewalld-test");
  // dhcpv6-client: IPv6 only, to fe80::/64.
  const ir::Rule& dhcp = allow.rules.at(1);
  CHECK(dhcp.match.family == ir::Family::ipv6);
  REQUIRE(dhcp.match.dst_addr.size() == 1);
  CHECK(dhcp.match.dst_addr[0].in_place());
  CHECK(dhcp.match.dst_addr[0].cidr == *ir::parse_cidr("fe80::/64"));
  const ir::Rule& drop = chain(rs, "input/zone/public/deny").rules.at(0);
  CHECK(drop.origin.policy.starts_with("zone public: rule "));
  CHECK(drop.origin.rule == 0);
  CHECK(drop.origin.loc == setup.config.zones.at("public").body.rules.at(0).loc);
}

TEST_CASE("rich rules: a limit's burst (2.2+) is the rule's burst, 5 without one", "[mapping]") {
  Setup setup;
  Body& body = setup.zone("public").body;
  setup.rich(body, R"(rule service name="ssh" accept limit value="2/s" burst="9")");
  setup.rich(body, R"(rule service name="http" accept limit value="2/s" burst="0")");
  const ir::Ruleset rs = setup.build();
  std::vector<ir::RateLimit> limits;
  for (const ir::Rule& rule : chain(rs, "input/zone/public/allow").rules)
    if (rule.match.rate_limit) limits.push_back(*rule.match.rate_limit);
  // Sorted as 2.3+ applies them: service http before ssh.
  CHECK(limits == std::vector<ir::RateLimit>{{2, "second", 5}, {2, "second", 9}});
}

TEST_CASE("rich rules: log, limit and action land in their sub-chains", "[mapping]") {
  Setup setup;
  Body& body = setup.zone("public").body;
  setup.rich(body, R"(rule service name="http" log prefix="web: " level="info" limit value="3/m" accept)");
  setup.rich(body,
             R"(rule priority="-5" family="ipv4" port port="9090" protocol="tcp" reject type="tcp-reset")");
  setup.rich(body, R"(rule family="ipv4" source address="10.0.0.0/8" icmp-block name="echo-request")");
  const ir::Ruleset rs = setup.build();

  const ir::Chain& log = chain(rs, "input/zone/public/log");
  REQUIRE(log.rules.size() == 1);
  CHECK(log.rules[0].action.kind == A::log);
  CHECK(log.rules[0].action.log_prefix == "web: ");
  CHECK(log.rules[0].action.log_level == 6);
  CHECK(log.rules[0].match.rate_limit == ir::RateLimit{3, "minute", 5});
  const ir::Rule& http = chain(rs, "input/zone/public/allow").rules.back();
  CHECK(http.action.kind == A::accept);
  CHECK(http.match.dst_port.at(0).ports == ir::PortSet{{80, 80}});
  CHECK_FALSE(http.match.rate_limit.has_value());

  const ir::Chain& pre = chain(rs, "input/zone/public/pre");
  REQUIRE(pre.rules.size() == 1);
  CHECK(pre.rules[0].action.reject_with == "tcp-reset");
  CHECK(pre.rules[0].match.protocols == std::vector<std::uint8_t>{6});

  const ir::Chain& deny = chain(rs, "input/zone/public/deny");
  REQUIRE(deny.rules.size() == 1);  // rule family ipv4: no ICMPv6 rule
  CHECK(deny.rules[0].action.reject_with == "icmp-admin-prohibited");
  CHECK(deny.rules[0].match.icmp->type == 8);
  CHECK_FALSE(deny.rules[0].match.icmp->v6);
  // A rich rule's address is its match's own, no set.
  REQUIRE(deny.rules[0].match.src_addr.size() == 1);
  CHECK(deny.rules[0].match.src_addr[0].in_place());
  CHECK(deny.rules[0].match.src_addr[0].cidr == *ir::parse_cidr("10.0.0.0/8"));
}

TEST_CASE("rich NAT and mark go to their stages, zones classified the right way", "[mapping]") {
  Setup setup;
  setup.bind("internal", "eth0");
  setup.bind("external", "eth1");
  Body& internal = setup.zone("internal").body;
  setup.rich(internal,
             R"(rule family="ipv4" forward-port port="80" protocol="tcp" to-port="8080" to-addr="10.0.0.5")");
  setup.rich(internal, R"(rule family="ipv4" source address="10.0.0.0/8" mark set="16/255")");
  setup.rich(setup.zone("external").body, R"(rule family="ipv6" source address="fd00::/8" masquerade)");
  // The top four mark bits are the backends' own: this one is left out, with a warning.
  setup.rich(internal, R"(rule family="ipv4" source address="10.9.0.0/16" mark set="0x80000000")");
  const ir::Ruleset rs = setup.build();
  CHECK(setup.count(Severity::warning, "mark with a mask") == 1);
  CHECK(setup.count(Severity::warning, "mark is not carried over: its value sets bits of 0xf0000000") == 1);
  CHECK(chain(rs, "prednat/zone/internal/allow").rules.size() == 1);

  const ir::Endpoint& mangle = endpoint(rs, ir::Stage::prednat, "internal eth0");
  CHECK(mangle.match.iif == ir::IfacePattern{"eth0", false});
  const ir::Rule& mark = chain(rs, "prednat/zone/internal/allow").rules.at(0);
  CHECK(mark.action.kind == A::set_mark);
  CHECK(mark.action.mark_value == 0x10);
  CHECK(mark.action.mark_mask == 0xff);

  const ir::Rule& dnat = chain(rs, "dnat/zone/internal/allow").rules.at(0);
  CHECK(dnat.action.kind == A::dnat);
  CHECK(ir::to_string(*dnat.action.nat_addr) == "10.0.0.5");
  CHECK(dnat.action.nat_port == ir::PortRange{8080, 8080});
  CHECK(dnat.match.dst_port.at(0).ports == ir::PortSet{{80, 80}});

  // snat is classified by egress; external's own masquerade (IPv4) and the rich one (IPv6).
  CHECK(endpoint_names(rs, ir::Stage::snat) == std::vector<std::string>{"external eth1"});
  CHECK(only_section(rs, ir::Stage::snat).endpoints[0].match.oif == ir::IfacePattern{"eth1", false});
  const ir::Chain& masquerade = chain(rs, "snat/zone/external/allow");
  REQUIRE(masquerade.rules.size() == 2);
  CHECK(masquerade.rules[0].match.family == ir::Family::ipv4);
  CHECK(masquerade.rules[1].match.family == ir::Family::ipv6);
  for (const ir::Rule& rule : masquerade.rules) {
    CHECK(rule.action.kind == A::masquerade);
    CHECK(rule.match.oif_negate);
  }
}

TEST_CASE("tcp-mss-clamp: a zone's clamps what it forwards, a policy's where its traffic goes", "[mapping]") {
  Setup setup;
  setup.bind("internal", "eth0");
  setup.rich(setup.zone("internal").body, R"(rule family="ipv4" source address="10.0.0.0/8" tcp-mss-clamp)");
  setup.rich(setup.zone("internal").body, R"(rule tcp-mss-clamp value="1400")");
  Policy& out = setup.policy("out", {"HOST"}, {"ANY"}, PolicyTarget::continue_);
  setup.rich(out.body, R"(rule tcp-mss-clamp value="1300")");
  Policy& in = setup.policy("in", {"ANY"}, {"HOST"}, PolicyTarget::continue_);
  setup.rich(in.body, R"(rule tcp-mss-clamp)");
  const ir::Ruleset rs = setup.build();
  const ir::Chain& zone = chain(rs, "forward/zone/internal/allow");
  // The clamps, which go on, then internal's forwarding within itself (an accept to eth0): a connection
  // forwarded within the zone is clamped too, as firewalld appends that accept after the clamps.
  CHECK(actions(zone) == std::vector{A::tcp_mss_clamp, A::tcp_mss_clamp, A::accept});
  // Sorted as 2.3+ applies them: no family before ipv4.
  CHECK(zone.rules[0].action.mss == 1400);
  CHECK(zone.rules[1].action.mss == 0);  // pmtu
  CHECK(zone.rules[1].match.family == ir::Family::ipv4);
  const ir::Chain& policy = chain(rs, "output/policy/out/allow");
  REQUIRE(policy.rules.size() == 1);
  CHECK(policy.rules[0].action.mss == 1300);
  CHECK(setup.count(Severity::warning, "tcp-mss-clamp is not carried over: policy in delivers to the host") ==
        1);
}

TEST_CASE("rich masquerade and tcp-mss-clamp log nothing, and the clamp keeps no family of its own",
          "[mapping]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  setup.bind("internal", "eth0");
  setup.bind("external", "eth1");
  setup.rich(setup.zone("external").body, R"(rule family="ipv4" masquerade log prefix="nat ")");
  setup.rich(setup.zone("internal").body,
             R"(rule family="ipv4" source mac="00:11:22:33:44:55" tcp-mss-clamp log prefix="mss ")");
  // A negated address keeps its family: nft adds the dependency to "ip saddr != ...".
  setup.rich(setup.zone("internal").body,
             R"(rule family="ipv4" source not address="10.0.0.0/8" tcp-mss-clamp)");
  // A forward-port's log: not in 1.3.
  setup.rich(setup.zone("external").body,
             R"(rule family="ipv4" forward-port port="8080" protocol="tcp" to-port="80" log prefix="fp ")");
  const ir::Ruleset rs = setup.build();
  CHECK(setup.count(Severity::warning, "rule logs nothing in firewalld") == (compat == Compat::v2 ? 2u : 3u));
  std::size_t logs = 0;
  for (const auto& [name, chain] : rs.chains) {
    for (const ir::Rule& rule : chain.rules) {
      INFO(name);
      if (rule.action.kind == A::log) {
        CHECK(rule.action.log_prefix == "fp ");
        ++logs;
      }
      if (rule.action.kind == A::tcp_mss_clamp)
        CHECK(rule.match.family == (rule.match.src_addr.empty() ? ir::Family::any : ir::Family::ipv4));
      if (rule.action.kind == A::masquerade) CHECK(rule.match.family == ir::Family::ipv4);
    }
  }
  CHECK(logs == (compat == Compat::v2 ? 1u : 0u));
}

TEST_CASE("a mark rule in a policy from HOST is an error: firewalld fails to load it", "[mapping]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  Policy& out = setup.policy("out", {"HOST"}, {"ANY"}, PolicyTarget::continue_);
  setup.rich(out.body, R"(rule family="ipv4" destination address="10.0.0.0/8" mark set="16")");
  to_ir(setup.config, setup.diag);
  CHECK(setup.count(Severity::error,
                    "a mark rule in policy out, whose ingress zone is HOST, makes firewalld fail") == 1);
}

TEST_CASE("2.x forward dispatch: the egress zone is the exclusive classification", "[mapping]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  setup.bind("internal", "veth-a");
  setup.bind("dmz", "veth-b");
  setup.source("drop", "10.88.0.0/24");
  setup.policy("int-dmz", {"internal"}, {"dmz"}, PolicyTarget::accept);
  const ir::Ruleset rs = setup.build();
  // Through veth-b to an address bound to the drop zone: 2.x classifies the egress into drop.
  CHECK(outcome(rs, through("10.77.0.2", "10.88.0.2", 8080)) ==
        (compat == Compat::v2 ? "reject:icmp-admin-prohibited" : "open"));
  CHECK(outcome(rs, through("10.77.0.2", "10.99.0.2", 8080)) == "open");
  if (compat == Compat::v2) {
    const ir::Chain& dispatch = chain(rs, "forward/policy/int-dmz/to-egress-zones");
    CHECK(actions(dispatch) == std::vector{A::return_, A::jump});
    CHECK(dispatch.rules[1].match.oif == std::vector<ir::IfacePattern>{{"veth-b", false}});
  } else {
    const ir::Chain& dispatch = chain(rs, "forward/policies-pre");
    REQUIRE(dispatch.rules.size() == 1);
    CHECK(dispatch.rules[0].match.iif == std::vector<ir::IfacePattern>{{"veth-a", false}});
    CHECK(dispatch.rules[0].match.oif == std::vector<ir::IfacePattern>{{"veth-b", false}});
  }
}

TEST_CASE("services: includes expanded, conntrack helpers assigned before the accepts", "[mapping]") {
  Setup setup;
  Service& ftp = setup.service("ftp", {{21, "tcp"}});
  ftp.helpers = {"ftp"};
  ftp.includes = {"http"};
  Helper& helper = setup.config.helpers["ftp"];
  helper.name = "ftp";
  helper.module = "nf_conntrack_ftp";
  helper.ports.push_back({{21, 21}, "tcp", setup.loc()});
  Helper& q931 = setup.config.helpers["Q.931"];
  q931.name = "Q.931";
  q931.module = "nf_conntrack_h323";
  q931.family = Family::ipv4;
  q931.ports.push_back({{1720, 1720}, "tcp", setup.loc()});
  setup.service("h323", {}).helpers = {"Q.931"};
  setup.services(setup.zone("public").body, {"ftp"});
  setup.rich(setup.zone("public").body,
             R"(rule family="ipv4" source address="10.0.0.0/8" service name="h323" accept)");
  setup.rich(setup.zone("public").body, R"(rule service name="ftp" drop)");  // no helper: not accepted
  const ir::Ruleset rs = setup.build();
  const ir::Chain& allow = chain(rs, "input/zone/public/allow");
  // ssh, dhcpv6-client; ftp's helper, 21, 80 (http, included); the rich rule's helper, for every source
  CHECK(actions(allow) ==
        std::vector{A::accept, A::accept, A::ct_helper, A::accept, A::accept, A::ct_helper});
  CHECK(allow.rules[2].action.target == "ftp");
  CHECK(allow.rules[2].match.dst_port.at(0).ports == ir::PortSet{{21, 21}});
  CHECK(allow.rules[2].match.protocols == std::vector<std::uint8_t>{6});
  CHECK(allow.rules[4].match.dst_port.at(0).ports == ir::PortSet{{80, 80}});
  CHECK(allow.rules[5].action.target == "Q.931");  // the kernel's name: the module holds RAS and Q.931
  CHECK(allow.rules[5].match.family == ir::Family::ipv4);
  CHECK(allow.rules[5].match.src_addr.empty());
  CHECK(setup.count(Severity::warning, "conntrack helper") == 0);
}

TEST_CASE("LogDenied adds log rules where firewalld logs", "[mapping]") {
  Setup setup;
  setup.config.settings.log_denied = "unicast";
  setup.config.settings.default_zone = "drop";
  const ir::Ruleset rs = setup.build();
  const ir::Chain& prelude = chain(rs, "input/prelude");
  CHECK(actions(prelude) == std::vector{A::accept, A::accept, A::log, A::drop});
  CHECK(prelude.rules[2].action.log_prefix == "STATE_INVALID_DROP: ");
  CHECK(prelude.rules[2].match.pkt_type == "unicast");
  const ir::Chain& end = chain(rs, "input/zone/drop/end");
  REQUIRE(end.rules.size() == 1);
  CHECK(end.rules[0].action.log_prefix == "filter_IN_drop_DROP: ");
  CHECK(actions(chain(rs, "output/prelude")) == std::vector{A::accept, A::accept, A::log, A::reject});
}

TEST_CASE("what the IR cannot carry is reported with its location", "[mapping]") {
  Setup setup;
  Body& body = setup.zone("public").body;
  setup.rich(body, R"(rule family="ipv4" source address="10.0.0.0/8" service name="ssh" audit accept)");
  setup.rich(body, R"(rule family="ipv4" service name="ssh" nflog group="5" accept)");
  const ir::Ruleset rs = setup.build();
  CHECK(setup.count(Severity::warning, "audit is not carried over") == 1);
  CHECK(setup.count(Severity::warning, "nflog is carried over as a kernel log") == 1);
  for (const Diagnostic& d : setup.diag.all()) {
    if (d.message.find("audit") != std::string::npos)
      CHECK(d.loc == setup.config.zones.at("public").body.rules.at(0).loc);
  }
}

TEST_CASE("IPv6_rpfilter: spoofed IPv6 sources are dropped before the zones see them", "[mapping]") {
  Setup setup;
  setup.config.settings.log_denied = "unicast";
  ir::Ruleset rs = setup.build();
  const auto& prednat = rs.stage(ir::Stage::prednat).sections;
  REQUIRE(!prednat.empty());
  CHECK(prednat.back().name == "rpfilter");
  const ir::Chain& strict = chain(rs, "prednat/ipv6-rpfilter");
  CHECK(actions(strict) == std::vector{A::return_, A::return_, A::log, A::drop});
  CHECK(strict.rules[0].match.icmp->type == 134);
  CHECK(strict.rules[1].match.icmp->type == 135);
  CHECK(strict.rules[2].action.log_prefix == "rpfilter_DROP: ");
  CHECK_FALSE(strict.rules[2].match.pkt_type);  // logged whatever LogDenied's packet type
  const ir::Match& spoofed = strict.rules[3].match;
  CHECK(spoofed.family == ir::Family::ipv6);
  CHECK(spoofed.rpf == ir::RpfMode::strict);
  CHECK(spoofed.rpf_negate);

  setup.config.settings.ipv6_rpfilter_mode = "loose-forward";
  setup.config.settings.log_denied = "off";
  rs = setup.build();
  CHECK(rs.find_chain("prednat/ipv6-rpfilter") == nullptr);
  CHECK(rs.stage(ir::Stage::forward).sections.front().name == "rpfilter");
  const ir::Chain& loose = chain(rs, "forward/ipv6-rpfilter");
  REQUIRE(actions(loose) == std::vector{A::drop});
  CHECK(loose.rules[0].match.rpf == ir::RpfMode::loose);

  setup.config.settings.ipv6_rpfilter = false;
  setup.config.settings.ipv6_rpfilter_mode = "no";
  rs = setup.build();
  CHECK(rs.find_chain("prednat/ipv6-rpfilter") == nullptr);
  CHECK(rs.find_chain("forward/ipv6-rpfilter") == nullptr);
}

TEST_CASE("ipsets the IR cannot express are errors at the binding", "[mapping]") {
  Setup setup;
  setup.ipset("ports", "hash:ip,port", {});
  setup.source_ipset("trusted", "ports");
  to_ir(setup.config, setup.diag);
  REQUIRE(setup.diag.has_errors());
  CHECK(setup.count(Severity::error, "ipset 'ports' of type hash:ip,port is not supported by the IR") == 1);
  for (const Diagnostic& d : setup.diag.all()) {
    if (d.severity == Severity::error) CHECK(d.loc == setup.config.zones.at("trusted").sources.at(0).loc);
  }
}

TEST_CASE("the zone's ICMP rule comes before policies of positive priority in 2.x, after them in 1.3",
          "[mapping]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  setup.bind("public", "eth0");  // 1.3 counts a policy of the default zone only with a binding
  setup.policy("late", {"public"}, {"HOST"}, PolicyTarget::drop, 100);
  const ir::Ruleset rs = setup.build();
  const ir::Endpoint& in = only_section(rs, ir::Stage::input).endpoints.at(0);
  if (compat == Compat::v2) {
    CHECK(in.groups.at(1).chains == Chains{"input/policy/allow-host-ipv6", "input/zone/public/allow",
                                           "input/zone/public/icmp", "input/policy/late"});
  } else {
    CHECK(in.groups.at(1).chains == Chains{"input/policies-pre", "input/zone/public/allow",
                                           "input/policies-post", "input/zone/public/end"});
    CHECK(chain(rs, "input/zone/public/end").rules.at(0).match.protocols == std::vector<std::uint8_t>{1, 58});
  }
}

TEST_CASE("a disabled policy is never active, and says so", "[mapping]") {
  Setup setup;
  setup.policy("p", {"public"}, {"HOST"}, PolicyTarget::drop, -10);
  setup.config.policies.at("p").disabled = true;
  const ir::Ruleset rs = setup.build();
  CHECK(rs.find_chain("input/policy/p") == nullptr);
  CHECK(setup.count(Severity::note, "policy 'p' is disabled") == 1);
}

TEST_CASE("1.3 reports a policy made inert by an unbound default zone", "[mapping]") {
  Setup setup(Compat::v1_3);
  setup.policy("p", {"public"}, {"HOST"}, PolicyTarget::drop, -10);
  setup.build();
  CHECK(setup.count(Severity::note, "policy 'p' is inactive") == 1);
}

TEST_CASE("ICMP type numbers follow the mode: 1.3.3's table, or 2.4+'s", "[mapping]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  setup.icmptype("network-prohibited").ipv6 = false;
  Body& body = setup.zone("public").body;
  body.icmp_blocks.push_back("network-prohibited");
  body.icmp_block_locs.push_back(setup.loc());
  const ir::Ruleset rs = setup.build();
  const ir::Chain& deny = chain(rs, "input/zone/public/deny");
  REQUIRE(deny.rules.size() == 1);
  CHECK(deny.rules[0].match.icmp->type == 3);
  CHECK(deny.rules[0].match.icmp->code == (compat == Compat::v2 ? 9 : 8));
}

TEST_CASE("zone->HOST policies reach nat PREROUTING in 2.x only", "[mapping]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  setup.bind("internal", "veth-a");
  Policy& p = setup.policy("redirect", {"internal"}, {"HOST"}, PolicyTarget::continue_);
  p.body.forward_ports.push_back({{2223, 2223}, "tcp", ir::PortRange{22, 22}, std::nullopt, setup.loc()});
  const ir::Ruleset rs = setup.build();
  if (compat == Compat::v2) {
    CHECK(outcome(rs, to_host("10.77.0.2", 2223)) == "open");
    CHECK(endpoint(rs, ir::Stage::dnat, "internal veth-a").groups.at(0).chains ==
          Chains{"dnat/policy/redirect"});
  } else {
    CHECK(setup.count(Severity::warning, "forward-port in policy redirect has no effect") == 1);
    CHECK(rs.stage(ir::Stage::dnat).empty());
  }
}

TEST_CASE("2.2+: a zone->HOST forward-port with to-addr DNATs the host's traffic elsewhere", "[mapping]") {
  Setup setup(Compat::v2);
  setup.bind("internal", "veth-a");
  Policy& p = setup.policy("away", {"internal"}, {"HOST"}, PolicyTarget::continue_);
  p.body.forward_ports.push_back(
      {{8081, 8081}, "tcp", ir::PortRange{8080, 8080}, ir::parse_ip("10.88.0.2"), setup.loc()});
  const ir::Ruleset rs = setup.build();
  const trace::Result moved = trace::evaluate(rs, to_host("10.77.0.2", 8081));
  CHECK(ir::to_string(moved.packet.dst) == "10.88.0.2");
  CHECK(moved.packet.dport == 8080);
  CHECK(outcome(rs, moved) == "open");  // forwarded now: filter_FORWARD's ct status dnat accept
  CHECK(outcome(rs, to_host("10.77.0.2", 8082)) == "reject:icmp-admin-prohibited");
}

TEST_CASE("2.x: before routing, a policy to the default zone applies to what no source-bound zone takes",
          "[mapping]") {
  Setup setup;
  setup.bind("internal", "veth-a");
  setup.bind("dmz", "veth-b");
  setup.source("work", "10.99.0.0/16");
  Policy& p = setup.policy("fwd", {"internal"}, {"public"}, PolicyTarget::continue_);
  p.body.forward_ports.push_back(
      {{8080, 8080}, "tcp", ir::PortRange{80, 80}, ir::parse_ip("192.0.2.10"), setup.loc()});
  const ir::Ruleset rs = setup.build();
  // nat PREROUTING cannot know the out interface: the interface-bound dmz is no egress there, the
  // source-bound work is, and the default zone (public, unbound) takes the rest.
  const ir::Chain& dispatch = chain(rs, "dnat/policy/fwd/to-egress-zones");
  REQUIRE(dispatch.rules.size() == 2);
  CHECK(dispatch.rules[0].action.kind == A::return_);  // to work's 10.99.0.0/16
  CHECK(dispatch.rules[0].match.dst_addr.size() == 1);
  CHECK(dispatch.rules[1].action.kind == A::jump);
  CHECK(dispatch.rules[1].action.target == "dnat/policy/fwd");
  CHECK(dispatch.rules[1].match.dst_addr.empty());
}

}  // namespace fwe::firewalld::test

namespace fwe::firewalld::test {

TEST_CASE("HOST->X forward-ports DNAT the host's own connections in nat OUTPUT", "[mapping]") {
  const Compat compat = GENERATE(Compat::v2, Compat::v1_3);
  Setup setup(compat);
  setup.bind("internal", "veth-a");
  setup.bind("dmz", "veth-b");
  Policy& out = setup.policy("out", {"HOST"}, {"dmz"}, PolicyTarget::continue_);
  out.body.forward_ports.push_back(
      {{8081, 8081}, "tcp", ir::PortRange{8080, 8080}, ir::parse_ip("10.88.0.2"), setup.loc()});
  setup.rich(out.body,
             R"(rule family="ipv4" destination address="10.88.0.7" forward-port port="8082" protocol="tcp" )"
             R"(to-port="8080" to-addr="10.88.0.2")");
  const ir::Ruleset rs = setup.build();
  CHECK(setup.count(Severity::warning, "not carried over") == 0);
  REQUIRE(rs.stage(ir::Stage::dnat_out).sections.size() == 1);
  CHECK(rs.stage(ir::Stage::dnat).empty());
  const ir::Rule& dnat = chain(rs, "dnat-out/policy/out/allow").rules.at(0);
  CHECK(dnat.action.kind == A::dnat);
  CHECK(ir::to_string(*dnat.action.nat_addr) == "10.88.0.2");

  auto r = trace::evaluate(rs, from_host("veth-b", "10.88.0.9", 8081));
  CHECK(outcome(rs, r) == "open");
  CHECK(ir::to_string(r.packet.dst) == "10.88.0.2");
  CHECK(r.packet.dport == 8080);
  CHECK(trace::evaluate(rs, from_host("veth-b", "10.88.0.7", 8082)).packet.dport == 8080);
  CHECK(trace::evaluate(rs, from_host("veth-b", "10.88.0.9", 8082)).packet.dport == 8082);  // rich: .7 only
  // Only towards dmz: the egress zone decides, and forwarded traffic is not the host's.
  CHECK(trace::evaluate(rs, from_host("veth-a", "10.77.0.2", 8081)).packet.dport == 8081);
  CHECK(trace::evaluate(rs, through("10.77.0.2", "10.88.0.9", 8081)).packet.dport == 8081);
  // 2.3+ accepts the DNATed connection in filter_OUTPUT before the HOST policies; 1.3.3 has no such rule.
  const ir::Chain& prelude = chain(rs, "output/prelude");
  CHECK(prelude.rules.at(0).match.ct_status.has_value() == (compat == Compat::v2));
}

TEST_CASE("StrictForwardPorts=yes accepts only what firewalld's own forward-ports DNATed", "[mapping]") {
  const bool strict = GENERATE(true, false);
  Setup setup;
  setup.config.settings.strict_forward_ports = strict;
  Body& pub = setup.zone("public").body;
  pub.forward_ports.push_back({{2223, 2223}, "tcp", ir::PortRange{22, 22}, std::nullopt, setup.loc()});
  pub.forward_ports.push_back(
      {{7081, 7081}, "tcp", ir::PortRange{8080, 8080}, ir::parse_ip("10.88.0.2"), setup.loc()});
  Policy& out = setup.policy("out", {"HOST"}, {"ANY"}, PolicyTarget::continue_);
  out.body.forward_ports.push_back(
      {{8081, 8081}, "tcp", ir::PortRange{8080, 8080}, ir::parse_ip("10.88.0.2"), setup.loc()});
  const ir::Ruleset rs = setup.build();

  auto dnatted_elsewhere = [](trace::Packet p) {
    p.ct_status[static_cast<std::size_t>(ir::CtStatus::dnat)] = true;  // by other software, e.g. Docker
    return p;
  };
  CHECK(outcome(rs, to_host("10.77.0.2", 2223)) == "open");
  CHECK(outcome(rs, through("10.77.0.2", "10.88.0.2", 7081)) == "open");
  CHECK(outcome(rs, from_host("veth-b", "10.88.0.9", 8081)) == "open");
  const std::string other = strict ? "reject:icmp-admin-prohibited" : "open";
  CHECK(outcome(rs, dnatted_elsewhere(to_host("10.77.0.2", 9999))) == other);
  CHECK(outcome(rs, dnatted_elsewhere(through("10.77.0.2", "10.88.0.2", 9999))) == other);
  CHECK(outcome(rs, dnatted_elsewhere(from_host("veth-b", "10.88.0.9", 9999))) == other);
  // Each port in the chain firewalld picks: a redirect's in INPUT, a to-addr's in FORWARD.
  CHECK(outcome(rs, dnatted_elsewhere(to_host("10.77.0.2", 7081))) == other);
  CHECK(outcome(rs, dnatted_elsewhere(through("10.77.0.2", "10.88.0.2", 2223))) == other);
  if (strict) {
    const ir::Chain& prelude = chain(rs, "input/prelude");
    REQUIRE(prelude.rules.size() >= 2);
    CHECK(prelude.rules[0].match.ct_orig_dport.at(0).ports == ir::PortSet{{2223, 2223}});
    CHECK(prelude.rules[0].origin.policy == "zone public: forward-port");
    CHECK(prelude.rules[1].action.kind == A::reject);
    CHECK(prelude.rules[1].origin.policy == "firewalld filter_INPUT: StrictForwardPorts");
  }
}

}  // namespace fwe::firewalld::test
