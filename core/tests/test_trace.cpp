// The reference evaluator against docs/ir.md: ordering, pass/return/jump, groups, defaults, sections,
// the allow mark, conntrack and failsafe precedence.
#include <catch2/catch.hpp>

#include "fwengine/passes.hpp"
#include "fwengine/trace.hpp"

using namespace fwe;
using namespace fwe::ir;

namespace {

Rule rule(ActionKind action, std::optional<std::uint16_t> dport = std::nullopt) {
  Rule r;
  r.action.kind = action;
  if (dport) {
    r.match.protocols = std::vector<std::uint8_t>{6};
    r.match.dst_port.push_back({false, {{*dport, *dport}}});
  }
  return r;
}

Rule jump(std::string target) {
  Rule r = rule(ActionKind::jump);
  r.action.target = std::move(target);
  return r;
}

trace::Packet tcp_in(std::uint16_t dport, std::string iif = "eth0") {
  trace::Packet p;
  p.iif = std::move(iif);
  p.src = *parse_ip("198.51.100.7");
  p.dst = *parse_ip("10.0.0.10");
  p.protocol = 6;
  p.sport = 40000;
  p.dport = dport;
  return p;
}

// A ruleset with one input endpoint on eth0 running the given groups.
Ruleset host(std::vector<Group> groups, Verdict dflt = Verdict::drop) {
  Ruleset rs;
  Endpoint ep;
  ep.name = "eth0";
  ep.match.iif = IfacePattern{"eth0", false};
  ep.conntrack = Conntrack::accept_established_drop_invalid;
  ep.groups = std::move(groups);
  ep.default_verdict = dflt;
  rs.stage(Stage::input).sections.push_back({"ingress", true, {ep}});
  return rs;
}

Group group(std::vector<std::string> chains, Verdict on_end = Verdict::continue_) {
  Group g;
  g.name = chains.empty() ? "g" : chains.front();
  g.chains = std::move(chains);
  g.on_end = on_end;
  return g;
}

Verdict verdict_of(const Ruleset& rs, const trace::Packet& p) {
  return trace::evaluate(rs, p).final_verdict();
}

}  // namespace

TEST_CASE("first matching rule decides, in chain and group order") {
  Ruleset rs = host({group({"a", "b"})});
  rs.chains["a"] = {"a", {rule(ActionKind::accept, 22), rule(ActionKind::drop, 80)}, {}};
  rs.chains["b"] = {"b", {rule(ActionKind::accept, 80), rule(ActionKind::accept, 443)}, {}};
  CHECK(verdict_of(rs, tcp_in(22)) == Verdict::accept);
  CHECK(verdict_of(rs, tcp_in(80)) == Verdict::drop);
  CHECK(verdict_of(rs, tcp_in(443)) == Verdict::accept);
  CHECK(verdict_of(rs, tcp_in(8080)) == Verdict::drop);  // endpoint default
}

TEST_CASE("pass leaves the group and skips its end-of-group verdict") {
  Ruleset rs = host({group({"tier1"}, Verdict::drop), group({"tier2"})}, Verdict::accept);
  rs.chains["tier1"] = {"tier1", {rule(ActionKind::pass, 80), rule(ActionKind::accept, 22)}, {}};
  rs.chains["tier2"] = {"tier2", {rule(ActionKind::drop, 81)}, {}};
  CHECK(verdict_of(rs, tcp_in(80)) == Verdict::accept);  // passed to tier2, no match, default accept
  CHECK(verdict_of(rs, tcp_in(22)) == Verdict::accept);
  CHECK(verdict_of(rs, tcp_in(443)) == Verdict::drop);  // end of tier1
}

TEST_CASE("return leaves a chain - jump comes back when the target ends without verdict") {
  Ruleset rs = host({group({"main", "next"})});
  rs.chains["main"] = {
      "main", {rule(ActionKind::return_, 80), jump("sub"), rule(ActionKind::accept, 443)}, {}};
  rs.chains["sub"] = {"sub", {rule(ActionKind::return_, 443), rule(ActionKind::accept, 22)}, {}};
  rs.chains["next"] = {"next", {rule(ActionKind::accept, 80)}, {}};
  CHECK(verdict_of(rs, tcp_in(80)) == Verdict::accept);   // returned from main, accepted by next
  CHECK(verdict_of(rs, tcp_in(22)) == Verdict::accept);   // via sub
  CHECK(verdict_of(rs, tcp_in(443)) == Verdict::accept);  // sub returned, main's next rule
  CHECK(verdict_of(rs, tcp_in(25)) == Verdict::drop);
}

TEST_CASE("log continues - no endpoint means no verdict") {
  Ruleset rs = host({group({"c"})});
  Rule log = rule(ActionKind::log);
  log.action.log_prefix = "x";
  rs.chains["c"] = {"c", {log, rule(ActionKind::accept, 22)}, {}};
  CHECK(verdict_of(rs, tcp_in(22)) == Verdict::accept);
  CHECK(verdict_of(rs, tcp_in(22, "eth1")) == Verdict::continue_);
}

TEST_CASE("conntrack prelude comes before policy") {
  Ruleset rs = host({});
  auto p = tcp_in(9999);
  p.ct = CtState::established;
  CHECK(verdict_of(rs, p) == Verdict::accept);
  p.ct = CtState::invalid;
  CHECK(verdict_of(rs, p) == Verdict::drop);
}

TEST_CASE("failsafe beats policy, but does not give the allow mark") {
  Ruleset rs = host({group({"deny"})});
  rs.chains["deny"] = {"deny", {rule(ActionKind::drop)}, {}};
  rs.stage(Stage::input).sections[0].endpoints[0].failsafe = true;
  rs.failsafe.inbound.push_back({6, 22, std::nullopt, {}});
  FailsafeEntry only_lan{6, 2379, parse_cidr("10.0.0.0/8"), {}};
  rs.failsafe.inbound.push_back(only_lan);
  Diagnostics diag;
  passes::run_all(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  CHECK(rs.sets.empty());  // an entry's net is its rule's own address match
  auto r = trace::evaluate(rs, tcp_in(22));
  CHECK(r.final_verdict() == Verdict::accept);
  CHECK_FALSE(r.allow_mark);
  CHECK(verdict_of(rs, tcp_in(80)) == Verdict::drop);
  CHECK(verdict_of(rs, tcp_in(2379)) == Verdict::drop);  // not from 10/8
  auto lan = tcp_in(2379);
  lan.src = *parse_ip("10.1.2.3");
  CHECK(verdict_of(rs, lan) == Verdict::accept);
}

TEST_CASE("allow in an early stage is honoured by later sections that say so") {
  Ruleset rs = host({group({"deny"})});
  rs.chains["deny"] = {"deny", {rule(ActionKind::drop)}, {}};
  rs.chains["pre"] = {"pre", {rule(ActionKind::allow, 80)}, {}};
  Endpoint pre;
  pre.name = "eth0-pre";
  pre.match.iif = IfacePattern{"eth0", false};
  pre.groups = {group({"pre"})};
  rs.stage(Stage::prednat).sections.push_back({"pre", true, {pre}});
  CHECK(verdict_of(rs, tcp_in(80)) == Verdict::accept);  // input section honours the mark
  CHECK(verdict_of(rs, tcp_in(81)) == Verdict::drop);
  rs.stage(Stage::input).sections[0].honour_allow = false;
  CHECK(verdict_of(rs, tcp_in(80)) == Verdict::drop);
}

TEST_CASE("a later section's verdict replaces an earlier accept - drop ends the stage") {
  Ruleset rs;
  auto ep = [](std::string name, bool in, Verdict dflt) {
    Endpoint e;
    e.name = std::move(name);
    (in ? e.match.iif : e.match.oif) = IfacePattern{in ? "eth0" : "eth1", false};
    e.default_verdict = dflt;
    return e;
  };
  rs.stage(Stage::forward).sections.push_back({"ingress", true, {ep("in", true, Verdict::accept)}});
  rs.stage(Stage::forward).sections.push_back({"egress", false, {ep("out", false, Verdict::continue_)}});
  auto p = tcp_in(80);
  p.oif = "eth1";
  p.dst = *parse_ip("172.16.0.9");
  CHECK(verdict_of(rs, p) == Verdict::continue_);
  rs.stage(Stage::forward).sections[1].endpoints[0].default_verdict = Verdict::drop;
  CHECK(verdict_of(rs, p) == Verdict::drop);
  p.oif = "eth2";  // egress section has no endpoint: ingress accept stands
  CHECK(verdict_of(rs, p) == Verdict::accept);
}

TEST_CASE("address, port and ICMP matches, negations and families") {
  Ruleset rs = host({group({"c"})});
  rs.sets["lan"] = {{*parse_cidr("10.0.0.0/8")}, {}};
  Rule not_lan = rule(ActionKind::drop);
  not_lan.match.src_addr.push_back({true, "lan"});
  Rule ping = rule(ActionKind::accept);
  ping.match.icmp = IcmpMatch{false, false, 8, std::nullopt};
  Rule not_8080 = rule(ActionKind::accept);
  not_8080.match.protocols = std::vector<std::uint8_t>{6};
  not_8080.match.dst_port.push_back({true, {{8080, 8080}}});
  rs.chains["c"] = {"c", {ping, not_lan, not_8080}, {}};
  auto icmp = tcp_in(0);
  icmp.protocol = 1;
  icmp.icmp_type = 8;
  CHECK(verdict_of(rs, icmp) == Verdict::accept);
  CHECK(verdict_of(rs, tcp_in(80)) == Verdict::drop);  // not from lan
  auto lan = tcp_in(80);
  lan.src = *parse_ip("10.2.3.4");
  CHECK(verdict_of(rs, lan) == Verdict::accept);
  lan.dport = 8080;
  CHECK(verdict_of(rs, lan) == Verdict::drop);  // default
  auto v6 = tcp_in(80);
  v6.src = *parse_ip("2001:db8::5");
  v6.dst = *parse_ip("2001:db8::10");
  CHECK(verdict_of(rs, v6) == Verdict::drop);  // a v6 packet is never in a v4-only set: negation matches
}

TEST_CASE("notrack leaves no entry: the reply meets conntrack on its own") {
  Ruleset rs;
  Endpoint e;
  e.name = "raw";
  e.match.iif = IfacePattern{"eth0", false};
  e.groups = {group({"dnt"})};
  rs.chains["dnt"] = {"dnt", {rule(ActionKind::notrack, 53), rule(ActionKind::allow, 53)}, {}};
  rs.stage(Stage::untracked_in).sections.push_back({"raw", false, {e}});
  auto p = tcp_in(53);
  auto r = trace::evaluate(rs, p);
  CHECK(r.untracked);
  CHECK(r.allow_mark);
  auto reply = trace::reply_of(p, r);
  CHECK(reply.ct == CtState::invalid);  // a SYN+ACK cannot start a connection
  CHECK(reply.oif == "eth0");
  CHECK(reply.iif.empty());
  CHECK(reply.sport == 53);
  CHECK(trace::path_of(reply) == trace::Path::output);
  auto udp = p;
  udp.protocol = 17;
  rs.chains["dnt"].rules[0].match.protocols = std::vector<std::uint8_t>{17};
  CHECK(trace::reply_of(udp, trace::evaluate(rs, udp)).ct == CtState::new_);
}

TEST_CASE("a source-NATed reply carries the NAT address until nat PREROUTING") {
  Ruleset rs;
  Rule snat = rule(ActionKind::snat);
  snat.action.nat_addr = parse_ip("192.0.2.1");
  snat.action.nat_port = PortRange{5000, 5000};
  rs.chains["nat"] = {"nat", {snat}, {}};
  rs.chains["pre"] = {"pre", {rule(ActionKind::drop, 5000)}, {}};
  Endpoint out;
  out.name = "out";
  out.groups = {group({"nat"})};
  rs.stage(Stage::snat).sections.push_back({"snat", false, {out}});
  Endpoint in;
  in.name = "in";
  in.groups = {group({"pre"})};
  rs.stage(Stage::prednat).sections.push_back({"prednat", false, {in}});
  trace::Packet p = tcp_in(80, "eth1");
  p.oif = "eth0";
  p.dst = *parse_ip("203.0.113.5");
  auto r = trace::evaluate(rs, p);
  REQUIRE(r.delivered);
  auto reply = trace::reply_of(p, r);
  CHECK(reply.dst == p.src);  // from the dnat stage on: the original source and port
  CHECK(reply.dport == 40000);
  CHECK(reply.snat_dst == parse_ip("192.0.2.1"));
  CHECK_FALSE(trace::evaluate(rs, reply).delivered);  // prednat saw port 5000
}

TEST_CASE("a later packet of a TCP connection meets no NAT stage's allow but gets its DNAT") {
  Ruleset rs = host({group({"web"})});
  rs.chains["web"] = {"web", {rule(ActionKind::accept, 8080)}, {}};
  Rule dnat = rule(ActionKind::dnat, 80);
  dnat.action.nat_port = PortRange{8080, 8080};
  rs.chains["nat"] = {"nat", {dnat}, {}};
  Endpoint e;
  e.name = "nat";
  e.groups = {group({"nat"})};
  rs.stage(Stage::dnat).sections.push_back({"dnat", false, {e}});
  auto p = tcp_in(80);
  auto r = trace::evaluate(rs, p);
  REQUIRE(r.delivered);
  auto later = trace::later_of(p, r, trace::evaluate(rs, trace::reply_of(p, r)));
  CHECK(later.ct == CtState::established);
  auto lr = trace::evaluate(rs, later);
  CHECK(lr.delivered);
  CHECK(lr.packet.dport == 8080);
  // An allow in dnat marks only the first packet.
  rs.stage(Stage::dnat).sections[0].endpoints[0].groups.clear();
  rs.stage(Stage::dnat).sections[0].endpoints[0].default_verdict = Verdict::allow;
  rs.chains["web"].rules.clear();
  rs.stage(Stage::input).sections[0].endpoints[0].conntrack = Conntrack::none;
  auto first = trace::evaluate(rs, p);
  CHECK(first.delivered);
  CHECK_FALSE(trace::evaluate(rs, trace::later_of(p, first, trace::evaluate(rs, trace::reply_of(p, first))))
                  .delivered);
}

TEST_CASE("an endpoint bound to a source MAC takes no packet without one: host-sent, or in on lo") {
  Ruleset rs;
  rs.chains["c"] = {"c", {rule(ActionKind::drop)}, {}};
  Endpoint e;
  e.name = "by-mac";
  e.match.src_mac = std::vector<MacAddr>{*parse_mac("02:00:00:00:00:01")};
  e.groups = {group({"c"})};
  rs.stage(Stage::input).sections.push_back({"s", false, {e}});
  rs.stage(Stage::output).sections.push_back({"s", false, {e}});
  trace::Packet in = tcp_in(22);
  in.src_mac = parse_mac("02:00:00:00:00:01");
  CHECK_FALSE(trace::evaluate(rs, in).delivered);
  trace::Packet looped = in;  // what trace was told has no say: lo carries no MAC
  looped.iif = "lo";
  CHECK(trace::evaluate(rs, looped).delivered);
  trace::Packet sent = in;
  sent.iif.clear();
  sent.oif = "eth0";
  CHECK(trace::evaluate(rs, sent).delivered);
}

TEST_CASE("traffic to the host itself comes back in on lo with its mark and conntrack entry") {
  Ruleset rs;
  Rule mark = rule(ActionKind::set_mark);
  mark.action.mark_value = 0x4;
  mark.action.mark_mask = 0xff;
  rs.chains["out"] = {"out", {mark}, {}};
  Rule marked = rule(ActionKind::drop);
  marked.match.mark_value = 0x4;
  marked.match.mark_mask = 0xff;
  Rule invalid = rule(ActionKind::drop);
  invalid.match.ct_states = std::vector<CtState>{CtState::invalid};
  Rule mac = rule(ActionKind::drop);
  mac.match.src_mac = std::vector<MacAddr>{*parse_mac("02:00:00:00:00:01")};
  mac.match.src_mac_negate = true;
  rs.chains["raw"] = {"raw", {invalid, mac}, {}};
  rs.chains["in"] = {"in", {marked}, {}};
  auto stage_with = [&](Stage stage, const char* chain) {
    Endpoint e;
    e.name = chain;
    e.groups = {group({chain})};
    rs.stage(stage).sections.push_back({chain, false, {e}});
  };
  stage_with(Stage::output, "out");
  stage_with(Stage::untracked_in, "raw");
  trace::Packet p = tcp_in(22);
  p.iif.clear();
  p.oif = "lo";
  p.src = p.dst;
  auto r = trace::evaluate(rs, p);
  CHECK(r.delivered);  // in untracked-in it reads new, not invalid; lo has no MAC to differ
  CHECK(r.packet.iif == "lo");
  CHECK(r.packet.mark == 0x4);
  stage_with(Stage::input, "in");
  CHECK_FALSE(trace::evaluate(rs, p).delivered);  // the mark set on the way out is still there
  auto reply = trace::reply_of(p, r);
  CHECK(reply.oif == "lo");
  CHECK(reply.iif.empty());
}

TEST_CASE("dnat rewrites the header later stages see") {
  Ruleset rs = host({group({"c"})});
  Rule dnat = rule(ActionKind::dnat, 30080);
  dnat.action.nat_addr = parse_ip("172.16.0.9");
  dnat.action.nat_port = PortRange{80, 80};
  rs.chains["nat"] = {"nat", {dnat}, {}};
  Endpoint e;
  e.name = "nat";
  e.groups = {group({"nat"})};
  rs.stage(Stage::dnat).sections.push_back({"dnat", false, {e}});
  rs.chains["c"] = {"c", {rule(ActionKind::accept, 80)}, {}};
  auto r = trace::evaluate(rs, tcp_in(30080));
  CHECK(r.final_verdict() == Verdict::accept);
  CHECK(r.packet.dport == 80);
  CHECK(to_string(r.packet.dst) == "172.16.0.9");
}

TEST_CASE("the first rewrite ends a NAT stage: later sections do not rewrite again") {
  // The kernel sets up a connection's NAT once at a hook: nat chains after the first that rewrote are
  // not run (nf_nat_inet_fn), in nft and iptables alike.
  Ruleset rs = host({group({"c"})}, Verdict::accept);
  rs.chains["c"] = {"c", {}, {}};
  for (const char* to : {"172.16.0.9", "172.16.0.10"}) {
    Rule dnat = rule(ActionKind::dnat, 80);
    dnat.action.nat_addr = parse_ip(to);
    rs.chains[to] = {to, {dnat}, {}};
    Endpoint e;
    e.name = to;
    e.groups = {group({to})};
    rs.stage(Stage::dnat).sections.push_back({to, false, {e}});
  }
  auto r = trace::evaluate(rs, tcp_in(80));
  CHECK(to_string(r.packet.dst) == "172.16.0.9");
  // A section that rewrites nothing leaves the next one its turn.
  rs.chains["172.16.0.9"].rules[0].match.dst_port[0].ports = {{81, 81}};
  CHECK(to_string(trace::evaluate(rs, tcp_in(80)).packet.dst) == "172.16.0.10");
}

TEST_CASE("the reply to an ICMP request conntrack tracks is its reply type, and new only as a request") {
  Ruleset rs = host({group({"c"})}, Verdict::accept);
  rs.chains["c"] = {"c", {}, {}};
  for (const auto& [protocol, request, reply] :
       {std::tuple{1, 8, 0}, {1, 13, 14}, {1, 15, 16}, {1, 17, 18}, {58, 128, 129}, {58, 139, 140}}) {
    trace::Packet p = tcp_in(0);
    p.protocol = static_cast<std::uint8_t>(protocol);
    if (protocol == 58) {
      p.src = *parse_ip("2001:db8::7");
      p.dst = *parse_ip("2001:db8::10");
    }
    p.icmp_type = static_cast<std::uint8_t>(request);
    const trace::Packet back = trace::reply_of(p, trace::evaluate(rs, p));
    CHECK(back.icmp_type == reply);
  }
  trace::Packet unreachable = tcp_in(0);
  unreachable.protocol = 1;
  unreachable.icmp_type = 3;
  CHECK(trace::reply_of(unreachable, trace::evaluate(rs, unreachable)).icmp_type == 3);
}

TEST_CASE("a first packet's state is conntrack's: new, for ICMP only as a request, and ND untracked") {
  using trace::first_packet_state;
  CHECK(first_packet_state(Family::ipv4, 6, 8) == CtState::new_);  // TCP: the ICMP type means nothing
  CHECK(first_packet_state(Family::ipv4, 17, 0) == CtState::new_);
  for (std::uint8_t request : {8, 13, 15, 17})
    CHECK(first_packet_state(Family::ipv4, 1, request) == CtState::new_);
  for (std::uint8_t other : {0, 3, 5, 9, 10, 11, 14, 40})
    CHECK(first_packet_state(Family::ipv4, 1, other) == CtState::invalid);
  for (std::uint8_t request : {128, 139})
    CHECK(first_packet_state(Family::ipv6, 58, request) == CtState::new_);
  for (std::uint8_t nd : {130, 131, 132, 133, 134, 135, 136, 143})
    CHECK(first_packet_state(Family::ipv6, 58, nd) == CtState::untracked);
  for (std::uint8_t other : {1, 2, 3, 4, 129, 137, 140, 144})
    CHECK(first_packet_state(Family::ipv6, 58, other) == CtState::invalid);
  // Conntrack's ICMP trackers refuse another family's packet.
  CHECK(first_packet_state(Family::ipv4, 58, 135) == CtState::invalid);
  CHECK(first_packet_state(Family::ipv6, 1, 8) == CtState::invalid);

  // Neighbour discovery reads invalid before conntrack, as every packet, and untracked after it.
  Ruleset rs = host({group({"c"})}, Verdict::drop);
  Rule untracked = rule(ActionKind::accept);
  untracked.match.ct_states = std::vector<CtState>{CtState::untracked};
  rs.chains["c"] = {"c", {untracked}, {}};
  Rule invalid = rule(ActionKind::drop);
  invalid.match.ct_states = std::vector<CtState>{CtState::new_, CtState::untracked};
  rs.chains["raw"] = {"raw", {invalid}, {}};
  Endpoint raw;
  raw.name = "raw";
  raw.groups = {group({"raw"})};
  rs.stage(Stage::untracked_in).sections.push_back({"raw", false, {raw}});
  trace::Packet solicitation = tcp_in(0);
  solicitation.protocol = 58;
  solicitation.src = *parse_ip("fe80::7");
  solicitation.dst = *parse_ip("ff02::1:ff00:10");
  solicitation.icmp_type = 135;
  solicitation.ct = first_packet_state(Family::ipv6, 58, 135);
  const auto r = trace::evaluate(rs, solicitation);
  CHECK(r.delivered);
  CHECK_FALSE(r.untracked);  // no notrack rule ran
  solicitation.ct = CtState::new_;
  CHECK_FALSE(trace::evaluate(rs, solicitation).delivered);  // past raw, new is no untracked
}

TEST_CASE("a reject step names its reject type") {
  Ruleset rs = host({group({"c"})});
  Rule reject = rule(ActionKind::reject, 22);
  reject.action.reject_with = "tcp-reset";
  rs.chains["c"] = {"c", {reject}, {}};
  auto r = trace::evaluate(rs, tcp_in(22));
  REQUIRE_FALSE(r.stages.empty());
  REQUIRE_FALSE(r.stages.back().steps.empty());
  CHECK(r.stages.back().steps.back().what == "rule 0 (reject with tcp-reset)");
}

TEST_CASE("a reject step names the reply this packet gets, as every backend sends it") {
  Ruleset rs = host({group({"c"})});
  Rule reset = rule(ActionKind::reject);
  reset.action.reject_with = "tcp-reset";
  Rule prohibited = rule(ActionKind::reject);
  prohibited.action.reject_with = "icmp-host-prohibited";
  auto last_step = [&](const Rule& r, const trace::Packet& p) {
    rs.chains["c"] = {"c", {r}, {}};
    return trace::evaluate(rs, p).stages.back().steps.back().what;
  };
  trace::Packet udp = tcp_in(53);
  udp.protocol = 17;
  trace::Packet udp6 = udp;
  udp6.src = *parse_ip("2001:db8::7");
  udp6.dst = *parse_ip("2001:db8::10");
  CHECK(last_step(reset, tcp_in(22)) == "rule 0 (reject with tcp-reset)");
  CHECK(last_step(reset, udp) == "rule 0 (reject with icmp-port-unreachable)");
  CHECK(last_step(reset, udp6) == "rule 0 (reject with icmp6-port-unreachable)");
  CHECK(last_step(prohibited, udp) == "rule 0 (reject with icmp-host-prohibited)");
  CHECK(last_step(prohibited, udp6) == "rule 0 (reject with icmp6-adm-prohibited)");
  CHECK(last_step(rule(ActionKind::reject), udp6) == "rule 0 (reject with icmp6-port-unreachable)");

  // An endpoint's default and a group's end name theirs too.
  Ruleset ends = host({group({"none"}, Verdict::reject)}, Verdict::reject);
  ends.stage(Stage::input).sections[0].endpoints[0].reject_with = "icmp-host-prohibited";
  ends.stage(Stage::input).sections[0].endpoints[0].groups[0].reject_with = "icmp-admin-prohibited";
  CHECK(trace::evaluate(ends, udp6).stages.back().steps.back().what ==
        "end of group none -> reject with icmp6-adm-prohibited");
  ends.stage(Stage::input).sections[0].endpoints[0].groups.clear();
  CHECK(trace::evaluate(ends, udp6).stages.back().steps.back().what ==
        "endpoint eth0 default -> reject with icmp6-adm-prohibited");
  CHECK(trace::evaluate(ends, udp).stages.back().steps.back().what ==
        "endpoint eth0 default -> reject with icmp-host-prohibited");
}

TEST_CASE("dnat to a port range keeps a port in it and takes the first otherwise, as the kernel does") {
  Ruleset rs = host({group({"c"})});
  Rule dnat = rule(ActionKind::dnat);
  dnat.action.nat_addr = parse_ip("172.16.0.9");
  dnat.action.nat_port = PortRange{8080, 8090};
  rs.chains["nat"] = {"nat", {dnat}, {}};
  Endpoint e;
  e.name = "nat";
  e.groups = {group({"nat"})};
  rs.stage(Stage::dnat).sections.push_back({"dnat", false, {e}});
  rs.chains["c"] = {"c", {rule(ActionKind::accept)}, {}};
  auto what = [](const trace::Result& r) {
    for (const auto& stage : r.stages)
      for (const auto& step : stage.steps)
        if (step.what.find("to 172.16.0.9") != std::string::npos) return step.what;
    return std::string{};
  };
  auto kept = trace::evaluate(rs, tcp_in(8085));
  CHECK(kept.packet.dport == 8085);
  CHECK_THAT(what(kept), Catch::Contains("port 8085 (the packet's own, in 8080-8090)"));
  auto first = trace::evaluate(rs, tcp_in(30080));
  CHECK(first.packet.dport == 8080);
  CHECK_THAT(what(first), Catch::Contains("port 8080-8090 (the first; traced with 8080)"));
}

TEST_CASE("ct-status: NAT gives the connection its status, and the reply keeps it") {
  // firewalld's forward-port: the dnat stage redirects 2223 to 22, input accepts what was DNATed.
  Ruleset rs = host({group({"c"})}, Verdict::reject);
  Rule redirect = rule(ActionKind::redirect, 2223);
  redirect.action.nat_port = PortRange{22, 22};
  rs.chains["nat"] = {"nat", {redirect}, {}};
  Endpoint e;
  e.name = "nat";
  e.groups = {group({"nat"})};
  rs.stage(Stage::dnat).sections.push_back({"dnat", false, {e}});
  Rule dnatted = rule(ActionKind::accept);
  dnatted.match.ct_status = std::vector<CtStatus>{CtStatus::dnat};
  rs.chains["c"] = {"c", {dnatted}, {}};

  auto p = tcp_in(2223);
  auto r = trace::evaluate(rs, p);
  CHECK(r.final_verdict() == Verdict::accept);
  CHECK(r.packet.dport == 22);
  CHECK(r.packet.ct_status[static_cast<std::size_t>(CtStatus::dnat)]);
  CHECK_FALSE(r.packet.ct_status[static_cast<std::size_t>(CtStatus::snat)]);
  auto reply = trace::reply_of(p, r);
  CHECK(reply.ct_status[static_cast<std::size_t>(CtStatus::dnat)]);
  CHECK(verdict_of(rs, tcp_in(22)) == Verdict::reject);

  // Established packets carry what they are told; invalid ones have no connection.
  rs.stage(Stage::input).sections[0].endpoints[0].conntrack = Conntrack::none;
  auto established = tcp_in(22);
  established.ct = CtState::established;
  established.ct_status[static_cast<std::size_t>(CtStatus::dnat)] = true;
  CHECK(verdict_of(rs, established) == Verdict::accept);
  established.ct = CtState::invalid;
  CHECK(verdict_of(rs, established) == Verdict::reject);
  dnatted.match.ct_status = std::vector<CtStatus>{CtStatus::snat};
  rs.chains["c"] = {"c", {dnatted}, {}};
  CHECK(verdict_of(rs, tcp_in(2223)) == Verdict::reject);
}

TEST_CASE("ct-status: masquerade marks the connection source-NATed for its reply") {
  Ruleset rs;
  Endpoint e;
  e.name = "out";
  e.groups = {group({"nat"})};
  rs.chains["nat"] = {"nat", {rule(ActionKind::masquerade)}, {}};
  rs.stage(Stage::snat).sections.push_back({"snat", false, {e}});
  Endpoint fwd;
  fwd.name = "fwd";
  fwd.groups = {group({"f"})};
  fwd.default_verdict = Verdict::drop;
  Rule snatted = rule(ActionKind::accept);
  snatted.match.ct_status = std::vector<CtStatus>{CtStatus::dnat, CtStatus::snat};
  rs.chains["f"] = {"f", {rule(ActionKind::accept, 80), snatted}, {}};
  rs.stage(Stage::forward).sections.push_back({"forward", false, {fwd}});
  auto p = tcp_in(80);
  p.oif = "eth1";
  auto r = trace::evaluate(rs, p);
  REQUIRE(r.delivered);
  auto reply = trace::reply_of(p, r);
  CHECK(reply.ct_status[static_cast<std::size_t>(CtStatus::snat)]);
  CHECK(verdict_of(rs, reply) == Verdict::accept);  // by ct-status: its source port is 80, not its dport
  reply.ct_status = {};
  CHECK(verdict_of(rs, reply) == Verdict::drop);
}

TEST_CASE("redirect sends to the input interface's address") {
  Ruleset rs;
  Endpoint e;
  e.name = "nat";
  e.groups = {group({"nat"})};
  rs.chains["nat"] = {"nat", {rule(ActionKind::redirect)}, {}};
  rs.stage(Stage::dnat).sections.push_back({"dnat", false, {e}});
  auto arrived = tcp_in(80);
  CHECK(trace::evaluate(rs, arrived).packet.dst == arrived.dst);  // the address is not known
  arrived.iif_addr = parse_ip("10.0.1.1");
  auto r = trace::evaluate(rs, arrived);
  CHECK(to_string(r.packet.dst) == "10.0.1.1");
  CHECK(r.packet.ct_status[static_cast<std::size_t>(CtStatus::dnat)]);
  arrived.iif_addr = arrived.dst;  // already there: no status
  CHECK_FALSE(trace::evaluate(rs, arrived).packet.ct_status[static_cast<std::size_t>(CtStatus::dnat)]);
}

TEST_CASE("ct-status: a NAT rewrite that changes nothing leaves no status") {
  Ruleset rs;
  Endpoint e;
  e.name = "nat";
  e.groups = {group({"nat"})};
  Rule dnat = rule(ActionKind::dnat);
  dnat.action.nat_addr = parse_ip("10.0.0.10");  // the address the packet already goes to
  rs.chains["nat"] = {"nat", {dnat}, {}};
  rs.stage(Stage::dnat).sections.push_back({"dnat", false, {e}});
  auto r = trace::evaluate(rs, tcp_in(80));
  CHECK_FALSE(r.packet.ct_status[static_cast<std::size_t>(CtStatus::dnat)]);
  rs.chains["nat"].rules[0].action.nat_port = PortRange{81, 81};
  CHECK(trace::evaluate(rs, tcp_in(80)).packet.ct_status[static_cast<std::size_t>(CtStatus::dnat)]);
}

TEST_CASE("a ct-helper before conntrack makes the state read new and leaves a later notrack no effect") {
  Ruleset rs;
  Rule helper = rule(ActionKind::ct_helper);
  helper.action.target = "tftp";
  Rule not_new = rule(ActionKind::drop);
  not_new.match.ct_states = std::vector<CtState>{CtState::invalid};
  Endpoint e;
  e.name = "raw";
  e.groups = {group({"raw"})};
  rs.chains["raw"] = {"raw", {not_new}, {}};
  rs.stage(Stage::untracked_in).sections.push_back({"raw", false, {e}});
  CHECK_FALSE(trace::evaluate(rs, tcp_in(69)).delivered);  // before conntrack: invalid
  rs.chains["raw"].rules = {helper, not_new};
  CHECK(trace::evaluate(rs, tcp_in(69)).delivered);
  rs.chains["raw"].rules = {helper, rule(ActionKind::notrack)};
  CHECK_FALSE(trace::evaluate(rs, tcp_in(69)).untracked);
  rs.chains["raw"].rules = {rule(ActionKind::notrack), helper, not_new};
  CHECK(trace::evaluate(rs, tcp_in(69)).untracked);
}

TEST_CASE("a later TCP packet is invalid when only its reply went untracked") {
  Ruleset rs = host({}, Verdict::accept);  // drops invalid
  Endpoint e;
  e.name = "raw-out";
  e.groups = {group({"raw"})};
  rs.chains["raw"] = {"raw", {rule(ActionKind::notrack)}, {}};
  rs.stage(Stage::untracked_out).sections.push_back({"raw", false, {e}});
  auto p = tcp_in(22);
  auto r = trace::evaluate(rs, p);
  REQUIRE(r.delivered);
  auto reply = trace::evaluate(rs, trace::reply_of(p, r));
  CHECK(reply.untracked);
  auto later = trace::later_of(p, r, reply);
  CHECK(later.ct == CtState::invalid);
  CHECK_FALSE(trace::evaluate(rs, later).delivered);
}

TEST_CASE("rpf: strict needs the route back out of iif, loose any route, lo and DHCP always pass") {
  auto dropping = [](RpfMode mode) {
    Ruleset rs = host({group({"c"})}, Verdict::accept);
    Rule spoofed = rule(ActionKind::drop);
    spoofed.match.rpf = mode;
    spoofed.match.rpf_negate = true;
    rs.chains["c"] = {"c", {spoofed}, {}};
    return rs;
  };
  const Ruleset strict = dropping(RpfMode::strict), loose = dropping(RpfMode::loose);
  auto p = tcp_in(22);
  CHECK(verdict_of(strict, p) == Verdict::accept);  // no route given: the source is routed back via iif
  p.src_route = "eth1";
  CHECK(verdict_of(strict, p) == Verdict::drop);
  CHECK(verdict_of(loose, p) == Verdict::accept);
  p.src_route = "";
  CHECK(verdict_of(strict, p) == Verdict::drop);
  CHECK(verdict_of(loose, p) == Verdict::drop);
  auto dhcp = tcp_in(67);
  dhcp.src = *parse_ip("0.0.0.0");
  dhcp.dst = *parse_ip("255.255.255.255");
  dhcp.src_route = "";
  CHECK(verdict_of(strict, dhcp) == Verdict::accept);
  dhcp.dst = *parse_ip("10.0.0.10");
  CHECK(verdict_of(strict, dhcp) == Verdict::drop);

  Ruleset on_lo = dropping(RpfMode::strict);
  on_lo.stage(Stage::input).sections.front().endpoints.front().match.iif = IfacePattern{"lo", false};
  auto looped = tcp_in(22, "lo");
  looped.src_route = "";
  CHECK(verdict_of(on_lo, looped) == Verdict::accept);

  auto reply = trace::reply_of(p, trace::evaluate(loose, tcp_in(22)));
  CHECK_FALSE(reply.src_route);  // the reply's source is where the original went
}

TEST_CASE("dnat-out rewrites the host's own packets before output - later packets too") {
  // firewalld's HOST->ANY forward-port: the host's connections to 10.0.0.10:8081 go to 172.16.0.9:80.
  Ruleset rs;
  Rule dnat = rule(ActionKind::dnat, 8081);
  dnat.action.nat_addr = parse_ip("172.16.0.9");
  dnat.action.nat_port = PortRange{80, 80};
  rs.chains["nat"] = {"nat", {dnat}, {}};
  Endpoint nat;
  nat.name = "host";
  nat.groups = {group({"nat"})};
  rs.stage(Stage::dnat_out).sections.push_back({"host", false, {nat}});
  Endpoint out;
  out.name = "host";
  out.groups = {group({"c"})};
  out.default_verdict = Verdict::drop;
  rs.chains["c"] = {"c", {rule(ActionKind::accept, 80)}, {}};
  rs.stage(Stage::output).sections.push_back({"host", false, {out}});

  trace::Packet p = tcp_in(8081);
  p.iif.clear();
  p.oif = "eth1";
  std::swap(p.src, p.dst);
  auto r = trace::evaluate(rs, p);
  REQUIRE(r.stages.size() == 2);
  CHECK(r.stages[0].stage == Stage::dnat_out);
  CHECK(r.final_verdict() == Verdict::accept);
  CHECK(to_string(r.packet.dst) == "172.16.0.9");
  CHECK(r.packet.dport == 80);
  CHECK(r.packet.ct_status[static_cast<std::size_t>(CtStatus::dnat)]);
  auto later = trace::later_of(p, r, trace::evaluate(rs, trace::reply_of(p, r)));
  auto again = trace::evaluate(rs, later);
  CHECK(again.final_verdict() == Verdict::accept);
  CHECK(again.packet.dport == 80);  // the connection's DNAT, although the nat rules did not run
  CHECK(verdict_of(rs, [&] {
          auto other = p;
          other.dport = 8082;
          return other;
        }()) == Verdict::drop);
}

TEST_CASE("redirect in dnat-out sends to the loopback address") {
  Ruleset rs;
  Rule redirect = rule(ActionKind::redirect, 8081);
  redirect.action.nat_port = PortRange{22, 22};
  rs.chains["nat"] = {"nat", {redirect}, {}};
  Endpoint e;
  e.name = "host";
  e.groups = {group({"nat"})};
  rs.stage(Stage::dnat_out).sections.push_back({"host", false, {e}});
  trace::Packet p = tcp_in(8081);
  p.iif.clear();
  p.oif = "lo";
  auto r = trace::evaluate(rs, p);
  CHECK(to_string(r.packet.dst) == "127.0.0.1");
  CHECK(r.packet.dport == 22);
  p.src = *parse_ip("fd00::1");
  p.dst = *parse_ip("fd00::2");
  CHECK(to_string(trace::evaluate(rs, p).packet.dst) == "::1");
}

TEST_CASE("ct-orig-dport is the port before DNAT, for the connection's packets and its reply") {
  // firewalld's StrictForwardPorts: accept what DNAT sent from 2223, reject any other DNAT.
  Ruleset rs = host({group({"c"})}, Verdict::accept);
  Rule redirect = rule(ActionKind::redirect, 2223);
  redirect.action.nat_port = PortRange{22, 22};
  Rule other = rule(ActionKind::redirect, 3333);
  other.action.nat_port = PortRange{22, 22};
  rs.chains["nat"] = {"nat", {redirect, other}, {}};
  Endpoint e;
  e.name = "nat";
  e.groups = {group({"nat"})};
  rs.stage(Stage::dnat).sections.push_back({"dnat", false, {e}});
  Rule ours = rule(ActionKind::accept);
  ours.match.ct_status = std::vector<CtStatus>{CtStatus::dnat};
  ours.match.ct_orig_dport.push_back({false, {{2223, 2223}}});
  Rule theirs = rule(ActionKind::reject);
  theirs.match.ct_status = std::vector<CtStatus>{CtStatus::dnat};
  rs.chains["c"] = {"c", {ours, theirs}, {}};
  rs.stage(Stage::input).sections[0].endpoints[0].conntrack = Conntrack::none;

  auto p = tcp_in(2223);
  auto r = trace::evaluate(rs, p);
  CHECK(r.final_verdict() == Verdict::accept);
  CHECK(r.packet.dport == 22);
  CHECK(r.packet.ct_orig_dport == 2223);
  CHECK(trace::reply_of(p, r).ct_orig_dport == 2223);
  CHECK(verdict_of(rs, tcp_in(3333)) == Verdict::reject);
  CHECK(verdict_of(rs, tcp_in(22)) == Verdict::accept);  // not DNATed at all

  // Negated, and never for a packet without a connection or without ports.
  rs.chains["c"].rules = {rule(ActionKind::drop)};
  rs.chains["c"].rules[0].match.ct_orig_dport.push_back({true, {{2223, 2223}}});
  CHECK(verdict_of(rs, tcp_in(3333)) == Verdict::drop);
  CHECK(verdict_of(rs, tcp_in(2223)) == Verdict::accept);
  auto invalid = tcp_in(3333);
  invalid.ct = CtState::invalid;
  CHECK(verdict_of(rs, invalid) == Verdict::accept);
  auto ping = tcp_in(0);
  ping.protocol = 1;
  CHECK(verdict_of(rs, ping) == Verdict::accept);
}

TEST_CASE("an address match is its set's CIDRs or the one CIDR written in place, negated alike") {
  Ruleset rs = host({group({"c"})});
  rs.sets["docs"] = AddrSet{{*parse_cidr("198.51.100.0/24"), *parse_cidr("203.0.113.0/24")}, {}};
  Rule in_set = rule(ActionKind::accept);
  in_set.match.src_addr.push_back({false, "docs"});
  in_set.match.dst_port.push_back({false, {{22, 22}}});
  Rule not_here = rule(ActionKind::accept);
  not_here.match.src_addr.push_back({true, *parse_cidr("198.51.100.0/25")});
  not_here.match.dst_port.push_back({false, {{80, 80}}});
  rs.chains["c"] = Chain{"c", {in_set, not_here}, {}};
  CHECK(addresses(rs, in_set.match.src_addr[0]).size() == 2);
  CHECK(addresses(rs, not_here.match.src_addr[0]).size() == 1);
  CHECK(to_string(not_here.match.src_addr[0]) == "198.51.100.0/25");
  CHECK(addresses(rs, AddrMatch(false, "missing")).empty());
  CHECK(verdict_of(rs, tcp_in(22)) == Verdict::accept);
  CHECK(verdict_of(rs, tcp_in(80)) == Verdict::drop);  // 198.51.100.7 is in the /25
  trace::Packet outside = tcp_in(80);
  outside.src = *parse_ip("198.51.100.200");
  CHECK(verdict_of(rs, outside) == Verdict::accept);
}
