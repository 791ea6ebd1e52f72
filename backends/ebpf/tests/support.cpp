// support.cpp - test ruleset, packets and frames.
#include "support.hpp"

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "kernel.hpp"

#include "fwengine/passes.hpp"

namespace fwe::ebpf::test {

using namespace fwe::ir;

namespace {

Origin at(std::uint32_t line, const std::string& policy = "test") {
  return {{1, line, 1}, policy, -1};
}

Rule rule(Match match, ActionKind kind, std::uint32_t line) {
  Rule r;
  r.match = std::move(match);
  r.action.kind = kind;
  r.origin = at(line);
  return r;
}

Match tcp_dport(std::vector<PortRange> ports) {
  Match m;
  m.protocols = std::vector<std::uint8_t>{6};
  m.dst_port.push_back({false, std::move(ports)});
  return m;
}

void add_set(Ruleset& rs, const std::string& name, std::vector<const char*> cidrs) {
  AddrSet set;
  for (auto* c : cidrs) set.cidrs.push_back(*parse_cidr(c));
  rs.sets[name] = set;
}

void add_chain(Ruleset& rs, const std::string& name, std::vector<Rule> rules) {
  Chain chain;
  chain.name = name;
  chain.rules = std::move(rules);
  rs.chains[name] = chain;
}

Endpoint endpoint(const std::string& name, std::optional<std::string> iif, std::optional<std::string> oif) {
  Endpoint ep;
  ep.name = name;
  if (iif) ep.match.iif = parse_iface(*iif);
  if (oif) ep.match.oif = parse_iface(*oif);
  ep.origin = at(100);
  return ep;
}

Group group(const std::string& name, std::vector<std::string> chains, Verdict on_end) {
  Group g;
  g.name = name;
  g.chains = std::move(chains);
  g.on_end = on_end;
  return g;
}

// Finishes a ruleset of input only: one endpoint on d0 whose group runs `chains`, then drop; normalised.
Ruleset on_d0_input(Ruleset rs, const std::string& group_name, std::vector<std::string> chains) {
  Endpoint ep = endpoint("d0", "d0", std::nullopt);
  ep.groups.push_back(group(group_name, std::move(chains), Verdict::continue_));
  ep.default_verdict = Verdict::drop;
  rs.stage(Stage::input).sections.push_back({"host", false, {ep}});
  passes::normalise(rs);
  return rs;
}

}  // namespace

IpAddr ip(const char* text) {
  auto parsed = parse_ip(text);
  if (!parsed) throw std::invalid_argument(text);
  return *parsed;
}

Ruleset sample_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "sample.yaml"};
  add_set(rs, "admins", {"10.0.0.8/29", "2001:db8::8/125"});
  add_set(rs, "blocked", {"10.0.0.66/32"});
  add_set(rs, "web", {"10.1.0.0/24"});
  add_set(rs, "v6only", {"2001:db8::/32"});

  // untracked-in: source MAC and address blocks, notrack for mDNS
  {
    Match mac;
    mac.src_mac = std::vector<MacAddr>{*parse_mac("02:00:00:00:00:99")};
    Match blocked;
    blocked.src_addr.push_back({false, "blocked"});
    Match mdns;
    mdns.protocols = std::vector<std::uint8_t>{17};
    mdns.dst_port.push_back({false, {{5353, 5353}}});
    add_chain(rs, "raw-in",
              {rule(mac, ActionKind::drop, 10), rule(blocked, ActionKind::drop, 11),
               rule(mdns, ActionKind::notrack, 12)});
    Endpoint ep = endpoint("raw-d0", "d0", std::nullopt);
    ep.groups.push_back(group("raw", {"raw-in"}, Verdict::continue_));
    rs.stage(Stage::untracked_in).sections.push_back({"raw", false, {ep}});
  }
  // prednat: a port closed before anything else
  {
    add_chain(rs, "pre", {rule(tcp_dport({{2222, 2222}}), ActionKind::drop, 20)});
    Endpoint ep = endpoint("pre-d", "d+", std::nullopt);
    ep.groups.push_back(group("pre", {"pre"}, Verdict::continue_));
    rs.stage(Stage::prednat).sections.push_back({"pre", false, {ep}});
  }
  // input: allow, jump/return, pass, mark, log, set-mark, on_end drop, reject, default drop
  {
    Match ssh = tcp_dport({{22, 22}});
    ssh.src_addr.push_back({false, "admins"});
    Match ping;
    ping.icmp = IcmpMatch{false, false, 8, std::nullopt};
    Match ping6;
    ping6.icmp = IcmpMatch{false, true, 128, 0};
    Match web = tcp_dport({{80, 80}, {443, 443}, {8000, 8080}});
    Match dns_not_admin;
    dns_not_admin.protocols = std::vector<std::uint8_t>{17};
    dns_not_admin.src_addr.push_back({true, "admins"});
    dns_not_admin.dst_port.push_back({false, {{53, 53}}});
    Match marked;
    marked.mark_value = 0x10;
    marked.mark_mask = 0xff;
    Rule set_mark = rule({}, ActionKind::set_mark, 38);
    set_mark.action.mark_value = 0x20;
    Rule jump = rule(web, ActionKind::jump, 33);
    jump.action.target = "web";
    add_chain(rs, "in-admin",
              {rule(ssh, ActionKind::allow, 30), rule(ping, ActionKind::accept, 31),
               rule(ping6, ActionKind::accept, 32), jump, rule(dns_not_admin, ActionKind::pass, 34),
               rule(marked, ActionKind::accept, 35), rule({}, ActionKind::log, 36), set_mark});
    Match from_blocked;
    from_blocked.src_addr.push_back({false, "blocked"});
    Match high_sport;
    high_sport.protocols = std::vector<std::uint8_t>{6};
    high_sport.src_port.push_back({false, {{1024, 65535}}});
    add_chain(rs, "web",
              {rule(from_blocked, ActionKind::return_, 40), rule(high_sport, ActionKind::accept, 41),
               rule({}, ActionKind::drop, 42)});
    Match dns;
    dns.protocols = std::vector<std::uint8_t>{17};
    dns.dst_port.push_back({false, {{53, 53}}});
    Match ssh6 = tcp_dport({{22, 22}});
    ssh6.family = Family::ipv6;
    Match not_v6only;
    not_v6only.dst_addr.push_back({true, "v6only"});
    not_v6only.protocols = std::vector<std::uint8_t>{17};
    not_v6only.dst_port.push_back({true, {{53, 53}, {5353, 5353}}});
    add_chain(rs, "in-tail",
              {rule(dns, ActionKind::accept, 50), rule(ssh6, ActionKind::reject, 51),
               rule(not_v6only, ActionKind::accept, 52)});
    Endpoint ep = endpoint("host-d0", "d0", std::nullopt);
    ep.conntrack = Conntrack::accept_established_drop_invalid;
    ep.failsafe = true;
    ep.groups.push_back(group("tier1", {"in-admin"}, Verdict::continue_));
    ep.groups.back().on_end = Verdict::drop;
    ep.groups.push_back(group("tier2", {"in-tail"}, Verdict::continue_));
    ep.default_verdict = Verdict::drop;
    Endpoint lo = endpoint("host-lo", "lo", std::nullopt);
    lo.default_verdict = Verdict::accept;
    rs.stage(Stage::input).sections.push_back({"host", false, {ep, lo}});
  }
  // forward: protocol negation, ct state, honour_allow in a later section, oif prefix
  {
    Match web = tcp_dport({{80, 80}});
    web.dst_addr.push_back({false, "web"});
    Match new_not_tcp;
    new_not_tcp.protocols = std::vector<std::uint8_t>{6};
    new_not_tcp.protocol_negate = true;
    new_not_tcp.ct_states = std::vector<CtState>{CtState::new_};
    Match icmp_not_echo;
    icmp_not_echo.icmp = IcmpMatch{true, false, 8, std::nullopt};
    Match out_d1;
    out_d1.oif = std::vector<IfacePattern>{parse_iface("d1")};
    Match ssh = tcp_dport({{22, 22}});
    add_chain(rs, "fwd",
              {rule(web, ActionKind::accept, 60), rule(icmp_not_echo, ActionKind::drop, 61),
               rule(ssh, ActionKind::allow, 62), rule(new_not_tcp, ActionKind::drop, 63)});
    add_chain(rs, "fwd-check", {rule(out_d1, ActionKind::drop, 64)});
    Endpoint ep = endpoint("fwd-d0", "d0", "d+");
    ep.conntrack = Conntrack::accept_established;
    ep.groups.push_back(group("fwd", {"fwd"}, Verdict::continue_));
    ep.default_verdict = Verdict::continue_;
    Endpoint back = endpoint("fwd-d1", "d1", std::nullopt);
    back.conntrack = Conntrack::accept_established;
    back.default_verdict = Verdict::drop;
    rs.stage(Stage::forward).sections.push_back({"fwd", false, {ep, back}});
    Endpoint check = endpoint("check", std::nullopt, "d1");
    check.groups.push_back(group("check", {"fwd-check"}, Verdict::continue_));
    rs.stage(Stage::forward).sections.push_back({"check", true, {check}});
  }
  // output: failsafe, reject, negated ICMP, default per interface
  {
    Match smtp = tcp_dport({{25, 25}});
    Match not_ping;
    not_ping.icmp = IcmpMatch{true, false, 8, std::nullopt};
    add_chain(rs, "out", {rule(smtp, ActionKind::reject, 70), rule(not_ping, ActionKind::drop, 71)});
    Endpoint d0 = endpoint("out-d0", std::nullopt, "d0");
    d0.conntrack = Conntrack::accept_established;
    d0.groups.push_back(group("out", {"out"}, Verdict::continue_));
    d0.default_verdict = Verdict::accept;
    Endpoint d1 = endpoint("out-d1", std::nullopt, "d1");
    d1.conntrack = Conntrack::accept_established;
    d1.failsafe = true;
    d1.default_verdict = Verdict::drop;
    rs.stage(Stage::output).sections.push_back({"out", false, {d0, d1}});
  }
  rs.failsafe.inbound.push_back({6, 2022, std::nullopt, at(90)});
  rs.failsafe.outbound.push_back({17, 53, *parse_cidr("10.1.0.0/24"), at(91)});
  passes::normalise(rs);
  passes::inject_failsafe(rs);
  return rs;
}

Ruleset port_run_ruleset() {
  Ruleset rs;
  rs.files = {"<command line>", "runs.yaml"};
  add_set(rs, "admins", {"10.0.0.8/29"});
  const ActionKind kinds[] = {ActionKind::log, ActionKind::drop, ActionKind::set_mark, ActionKind::accept,
                              ActionKind::return_};
  for (const char* name : {"run-a", "run-b"}) {
    std::vector<Rule> rules;
    for (std::uint16_t i = 0; i < 12; ++i) {
      const auto port = static_cast<std::uint16_t>(1000 + (i * 7) % 5);
      Match m = tcp_dport({{port, port}});
      if (i % 3 == 1) m.src_addr.push_back({false, "admins"});
      if (i % 4 == 2) m.mark_value = 0x20;
      Rule r = rule(m, kinds[(i + (name[4] == 'b' ? 2 : 0)) % 5], 200u + i);
      r.action.mark_value = 0x20;
      rules.push_back(r);
    }
    add_chain(rs, name, rules);
  }
  return on_d0_input(std::move(rs), "runs", {"run-a", "run-b"});
}

std::vector<trace::Packet> port_run_packets() {
  std::vector<trace::Packet> out;
  for (const char* src : {"10.0.0.9", "10.0.0.20"})
    for (std::uint16_t port = 998; port <= 1006; ++port) {
      out.push_back(packet("d0", "", src, "10.0.0.1", 6, 40000, port));
      out.push_back(packet("d0", "", src, "10.0.0.1", 17, 40000, port));
    }
  out.push_back(packet("d0", "", "10.0.0.20", "10.0.0.1", 1, 0, 0));
  return out;
}

Ruleset address_run_ruleset(bool mixed_prefixes) {
  Ruleset rs;
  rs.files = {"<command line>", "runs.yaml"};
  std::uint32_t line = 300;
  auto from = [&](const std::string& set, std::vector<const char*> cidrs, std::vector<std::uint8_t> protocols,
                  PortRange ports, ActionKind kind, bool to = false) {
    add_set(rs, set, std::move(cidrs));
    Match m = tcp_dport({ports});
    m.protocols = std::move(protocols);
    (to ? m.dst_addr : m.src_addr).push_back({false, set});
    return rule(m, kind, line++);
  };
  std::vector<Rule> runs;
  for (int i = 0; i < 8; ++i) {
    const std::string v4 = "10.0." + std::to_string(10 + i) + (mixed_prefixes && i == 4 ? ".0/25" : ".0/24");
    std::vector<const char*> cidrs = {v4.c_str()};
    if (i == 2) cidrs.push_back("2001:db8:2::/48");
    if (i == 2 && mixed_prefixes) cidrs.push_back("2001:db8:4::/64");
    std::vector<std::uint8_t> protocols = {6};
    if (i == 5) protocols.push_back(17);
    const auto port = static_cast<std::uint16_t>(2000 + i);
    runs.push_back(from("r" + std::to_string(i), cidrs, protocols,
                        {port, static_cast<std::uint16_t>(i == 3 ? port + 2 : port)}, ActionKind::accept));
  }
  runs.push_back(from("r8", {"10.0.11.128/25"}, {6}, {2001, 2001}, ActionKind::accept));
  for (int i = 9; i < 13; ++i) {
    const std::string v4 = "10.0." + std::to_string(10 + i) + ".0/24";
    runs.push_back(from("r" + std::to_string(i), {v4.c_str()}, {6}, {2001, 2001}, ActionKind::drop));
  }
  for (int i = 13; i < 17; ++i) {
    const auto port = static_cast<std::uint16_t>(3000 + i);
    runs.push_back(
        from("r" + std::to_string(i), {"10.0.0.1/32"}, {6}, {port, port}, ActionKind::accept, true));
  }
  add_chain(rs, "runs", runs);
  std::vector<Rule> inner, outer;
  Match udp;
  udp.protocols = std::vector<std::uint8_t>{17};
  Rule jump = rule(udp, ActionKind::jump, line++);
  jump.action.target = "inner";
  outer.push_back(jump);
  for (int i = 0; i < 4; ++i) {
    const std::string v4 = "10.0." + std::to_string(70 + i) + ".0/24";
    const auto port = static_cast<std::uint16_t>(4000 + i);
    inner.push_back(from("i" + std::to_string(i), {v4.c_str()}, {17}, {port, port}, ActionKind::accept));
  }
  for (int i = 0; i < 4; ++i) {
    const std::string v4 = "10.0." + std::to_string(60 + i) + ".0/24";
    const auto port = static_cast<std::uint16_t>(4000 + i);
    outer.push_back(from("o" + std::to_string(i), {v4.c_str()}, {6}, {port, port}, ActionKind::accept));
  }
  add_chain(rs, "inner", inner);
  add_chain(rs, "outer", outer);
  return on_d0_input(std::move(rs), "runs", {"runs", "outer"});
}

Ruleset blocklist_ruleset() {
  Ruleset rs;
  rs.files = {"<command line>", "block.yaml"};
  std::uint32_t line = 400;
  std::vector<Rule> rules;
  auto from = [&](const std::string& cidr, std::optional<std::uint8_t> protocol, ActionKind kind) {
    const std::string set = "b" + std::to_string(line);
    add_set(rs, set, {cidr.c_str()});
    Match m;
    if (protocol) m.protocols = std::vector<std::uint8_t>{*protocol};
    m.src_addr.push_back({false, set});
    rules.push_back(rule(m, kind, line++));
  };
  for (int i = 0; i < 4; ++i) from("10.0.9" + std::to_string(i) + ".0/24", 1, ActionKind::accept);
  for (int i = 0; i < 4; ++i) from("10.0.10" + std::to_string(i) + ".0/24", 6, ActionKind::accept);
  for (int i = 0; i < 6; ++i) from("10.0.8" + std::to_string(i) + ".0/24", std::nullopt, ActionKind::drop);
  from("10.0.0.0/8", std::nullopt, ActionKind::accept);
  add_chain(rs, "block", rules);
  return on_d0_input(std::move(rs), "block", {"block"});
}

std::vector<trace::Packet> blocklist_packets() {
  std::vector<trace::Packet> out;
  for (const char* src : {"10.0.90.7", "10.0.93.7", "10.0.100.7", "10.0.103.7", "10.0.80.7", "10.0.85.7",
                          "10.0.200.7", "192.168.1.7"})
    for (std::uint8_t protocol : {1, 6, 17}) {
      const bool icmp = protocol == 1;
      out.push_back(packet("d0", "", src, "10.0.0.1", protocol, icmp ? 0 : 40000, icmp ? 0 : 80));
    }
  // The runs have no IPv6 member: such a packet passes them by, to the chain's end.
  for (std::uint8_t protocol : {6, 17})
    out.push_back(packet("d0", "", "2001:db8::7", "2001:db8::1", protocol, 40000, 80));
  return out;
}

Ruleset large_address_run_ruleset(std::size_t rules, std::uint16_t port, std::uint16_t ports,
                                  bool mixed_prefixes) {
  Ruleset rs;
  rs.files = {"<command line>", "large.yaml"};
  std::vector<Rule> chain;
  for (std::size_t i = 0; i < rules; ++i) {
    const std::string name = "h" + std::to_string(i);
    const std::string cidr = "172." + std::to_string(16 + i / 65536) + "." + std::to_string(i / 256 % 256) +
                             "." + std::to_string(i % 256) + "/32";
    add_set(rs, name, {i == 0 && mixed_prefixes ? "192.168.200.0/24" : cidr.c_str()});
    Match m = tcp_dport({{port, static_cast<std::uint16_t>(port + ports - 1)}});
    m.src_addr.push_back({false, name});
    chain.push_back(rule(m, ActionKind::accept, static_cast<std::uint32_t>(i + 1)));
  }
  add_chain(rs, "hosts", chain);
  return on_d0_input(std::move(rs), "hosts", {"hosts"});
}

std::vector<trace::Packet> address_run_packets() {
  std::vector<trace::Packet> out;
  auto in = [&](const char* src, std::uint8_t proto, std::uint16_t dport, const char* dst = "10.0.0.1") {
    out.push_back(packet("d0", "", src, dst, proto, 40000, dport));
  };
  for (int i = 0; i < 8; ++i) {
    const std::string src = "10.0." + std::to_string(10 + i) + ".7";
    const auto port = static_cast<std::uint16_t>(2000 + i);
    for (std::uint16_t p :
         {static_cast<std::uint16_t>(port - 1), port, static_cast<std::uint16_t>(port + 1)}) {
      in(src.c_str(), 6, p);
      in(src.c_str(), 17, p);
    }
    const std::string other = "10.0." + std::to_string(30 + i) + ".7";  // in no rule
    in(other.c_str(), 6, port);
  }
  in("2001:db8:2::7", 6, 2002, "2001:db8::1");
  in("2001:db8:3::7", 6, 2002, "2001:db8::1");
  in("2001:db8:4::7", 6, 2002, "2001:db8::1");
  in("2001:db8:4:1::7", 6, 2002, "2001:db8::1");  // outside the mixed variant's /64
  in("10.0.14.200", 6, 2004);                     // outside the mixed variant's /25
  in("10.0.11.200", 6, 2001);                     // runs#1 before the overlapping runs#8
  for (int i = 9; i < 13; ++i) {
    const std::string src = "10.0." + std::to_string(10 + i) + ".7";
    in(src.c_str(), 6, 2001);
    in(src.c_str(), 6, 2002);
  }
  for (std::uint16_t port = 3012; port <= 3017; ++port) {
    in("10.0.0.99", 6, port);
    in("10.0.0.99", 6, port, "10.1.0.1");
  }
  for (int i = 0; i < 4; ++i) {
    const auto port = static_cast<std::uint16_t>(4000 + i);
    const std::string outer = "10.0." + std::to_string(60 + i) + ".7",
                      inner = "10.0." + std::to_string(70 + i) + ".7";
    in(outer.c_str(), 6, port);
    in(outer.c_str(), 17, port);
    in(inner.c_str(), 17, port);
    in(inner.c_str(), 6, port);
  }
  in("10.0.10.7", 1, 0);
  return out;
}

trace::Packet packet(const char* iif, const char* oif, const char* src, const char* dst,
                     std::uint8_t protocol, std::uint16_t sport, std::uint16_t dport) {
  trace::Packet p;
  p.iif = iif;
  p.oif = oif;
  p.src = ip(src);
  p.dst = ip(dst);
  p.protocol = protocol;
  p.sport = sport;
  p.dport = dport;
  p.src_mac = parse_mac("02:00:00:00:00:01");
  return p;
}

std::vector<trace::Packet> sample_packets() {
  std::vector<trace::Packet> out;
  auto in = [&](const char* src, std::uint8_t proto, std::uint16_t sport, std::uint16_t dport) {
    const bool v6 = std::string(src).find(':') != std::string::npos;
    return packet("d0", "", src, v6 ? "2001:db8::1" : "10.0.0.1", proto, sport, dport);
  };
  out.push_back(in("10.0.0.9", 6, 40000, 22));      // admin ssh: allow
  out.push_back(in("10.0.0.20", 6, 40000, 22));     // not admin: on_end drop
  out.push_back(in("2001:db8::9", 6, 40000, 22));   // admin over IPv6: allow
  out.push_back(in("2001:db8::20", 6, 40000, 22));  // tier1 ends with drop
  out.push_back(in("10.0.0.20", 6, 40000, 80));     // jump web, high source port: accept
  out.push_back(in("10.0.0.20", 6, 80, 8080));      // jump web, low source port: drop
  out.push_back(in("10.0.0.20", 6, 40000, 8081));   // not web
  out.push_back(in("10.0.0.66", 6, 40000, 80));     // blocked: dropped in untracked-in
  out.push_back(in("10.0.0.20", 17, 40000, 53));    // pass to tier2: dns accept
  out.push_back(in("10.0.0.9", 17, 40000, 53));     // admin: no pass, on_end drop
  out.push_back(in("10.0.0.20", 17, 40000, 5353));  // notrack, then on_end drop
  out.push_back(in("10.0.0.20", 6, 40000, 2222));   // prednat drop
  out.push_back(in("10.0.0.20", 6, 40000, 2022));   // failsafe
  out.push_back(in("2001:db8::20", 6, 40000, 2022));
  auto ping = in("10.0.0.20", 1, 0, 0);
  out.push_back(ping);  // echo request: accept
  ping.icmp_type = 13;
  out.push_back(ping);  // timestamp: on_end drop
  auto ping6 = in("2001:db8::20", 58, 0, 0);
  ping6.icmp_type = 128;
  out.push_back(ping6);
  ping6.icmp_code = 1;
  out.push_back(ping6);
  auto marked = in("10.0.0.20", 6, 40000, 9000);
  marked.mark = 0x110;
  out.push_back(marked);  // mark match: accept
  auto spoofed = in("10.0.0.20", 6, 40000, 80);
  spoofed.src_mac = parse_mac("02:00:00:00:00:99");
  out.push_back(spoofed);  // MAC drop
  // forward
  out.push_back(packet("d0", "d1", "10.0.0.20", "10.1.0.5", 6, 40000, 80));   // web: accept
  out.push_back(packet("d0", "d1", "10.0.0.20", "10.1.0.5", 6, 40000, 81));   // continue, check drops (d1)
  out.push_back(packet("d0", "d1", "10.0.0.20", "10.1.0.5", 6, 40000, 22));   // allow, check honours it
  out.push_back(packet("d0", "d1", "10.0.0.20", "10.1.0.5", 17, 40000, 80));  // new not tcp: drop
  out.push_back(packet("d0", "d1", "10.0.0.20", "10.1.0.5", 1, 0, 0));        // echo: new not tcp drop
  out.push_back(packet("d1", "d0", "10.1.0.5", "10.0.0.20", 6, 40000, 80));   // from d1: default drop
  out.push_back(packet("d0", "d1", "2001:db8::20", "2001:db8:1::5", 6, 40000, 22));
  // output
  out.push_back(packet("", "d0", "10.0.0.1", "10.0.0.20", 6, 40000, 25));   // reject
  out.push_back(packet("", "d0", "10.0.0.1", "10.0.0.20", 6, 40000, 443));  // default accept
  auto out_ping = packet("", "d0", "10.0.0.1", "10.0.0.20", 1, 0, 0);
  out.push_back(out_ping);
  out_ping.icmp_type = 3;
  out.push_back(out_ping);                                                           // not echo: drop
  out.push_back(packet("", "d1", "10.1.0.1", "10.1.0.5", 17, 40000, 53));            // failsafe out
  out.push_back(packet("", "d1", "10.1.0.1", "10.1.0.5", 17, 40000, 54));            // default drop
  out.push_back(packet("", "d1", "2001:db8:1::1", "2001:db8:1::5", 17, 40000, 53));  // failsafe is IPv4 only
  for (auto& p : out)
    if (p.iif.empty()) p.src_mac.reset();
  return out;
}

std::string describe(const trace::Packet& p) {
  std::string out = "iif=" + p.iif + " oif=" + p.oif + " " + to_string(p.src) + ":" +
                    std::to_string(p.sport) + " -> " + to_string(p.dst) + ":" + std::to_string(p.dport) +
                    " proto " + std::to_string(p.protocol) + " ct " + std::string(to_string(p.ct));
  if (p.protocol == 1 || p.protocol == 58)
    out += " icmp " + std::to_string(p.icmp_type) + "/" + std::to_string(p.icmp_code);
  if (p.mark) out += " mark " + std::to_string(p.mark);
  return out;
}

namespace {

void put16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v & 0xff));
}

}  // namespace

namespace {
// The interface's own MAC address, zeros for lo; asked of the namespace the test runs in (not /sys,
// which may show another's).
MacAddr mac_of(int ifindex) {
  MacAddr mac{};
  ifreq request{};
  if (ifindex <= 1 || !if_indextoname(static_cast<unsigned>(ifindex), request.ifr_name)) return mac;
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const bool asked = fd >= 0 && ioctl(fd, SIOCGIFHWADDR, &request) == 0;
  if (fd >= 0) close(fd);
  if (!asked) throw std::runtime_error(std::string("no MAC address for ") + request.ifr_name);
  std::copy_n(reinterpret_cast<const std::uint8_t*>(request.ifr_hwaddr.sa_data), mac.size(), mac.begin());
  return mac;
}
}  // namespace

std::vector<std::uint8_t> frame_of(const trace::Packet& p, std::uint8_t tcp_flags) {
  std::vector<std::uint8_t> l4;
  if (p.protocol == 6) {
    put16(l4, p.sport);
    put16(l4, p.dport);
    l4.insert(l4.end(), {0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0});
  } else if (p.protocol == 17) {
    put16(l4, p.sport);
    put16(l4, p.dport);
    put16(l4, 8);
    put16(l4, 0);
  } else {
    l4 = {p.icmp_type, p.icmp_code, 0, 0, 0x12, 0x34, 0, 1};
  }
  std::vector<std::uint8_t> out;
  out.reserve(128);
  out.insert(out.end(), kToInterface.begin(), kToInterface.end());
  const MacAddr mac = p.src_mac.value_or(MacAddr{0x02, 0, 0, 0, 0, 0x02});
  out.insert(out.end(), mac.begin(), mac.end());
  const bool v6 = p.src.family == Family::ipv6;
  put16(out, v6 ? 0x86dd : 0x0800);
  if (v6) {
    out.insert(out.end(), {0x60, 0, 0, 0});
    put16(out, static_cast<std::uint16_t>(l4.size()));
    out.push_back(p.protocol);
    out.push_back(64);
    out.insert(out.end(), p.src.bytes.begin(), p.src.bytes.end());
    out.insert(out.end(), p.dst.bytes.begin(), p.dst.bytes.end());
  } else {
    out.insert(out.end(), {0x45, 0});
    put16(out, static_cast<std::uint16_t>(20 + l4.size()));
    out.insert(out.end(), {0, 1, 0x40, 0, 64, p.protocol, 0, 0});
    out.insert(out.end(), p.src.bytes.begin(), p.src.bytes.begin() + 4);
    out.insert(out.end(), p.dst.bytes.begin(), p.dst.bytes.begin() + 4);
  }
  out.insert(out.end(), l4.begin(), l4.end());
  return out;
}

std::vector<std::uint8_t> with_ipv6_extension(std::vector<std::uint8_t> frame, std::uint8_t kind) {
  constexpr std::size_t kIpv6 = 14, kNextHeader = kIpv6 + 6, kPayloadLength = kIpv6 + 4, kAfter = kIpv6 + 40;
  const std::uint8_t next = frame.at(kNextHeader);
  // Hop-by-hop and destination options: a PadN option fills them; routing: type 0, no segment left.
  std::vector<std::uint8_t> extension = {next, 0, 1, 4, 0, 0, 0, 0};
  if (kind == 43 || kind == 44) extension = {next, 0, 0, 0, 0, 0, 0, 1};
  frame.insert(frame.begin() + static_cast<std::ptrdiff_t>(kAfter), extension.begin(), extension.end());
  frame[kNextHeader] = kind;
  const auto length =
      static_cast<std::uint16_t>((frame[kPayloadLength] << 8 | frame[kPayloadLength + 1]) + 8);
  frame[kPayloadLength] = static_cast<std::uint8_t>(length >> 8);
  frame[kPayloadLength + 1] = static_cast<std::uint8_t>(length & 0xff);
  return frame;
}

namespace {

// frame_of's frames are addressed to the interface, as the kernel tells by the MAC (eth_type_trans): a
// frame to another one is a copy the device took in promiscuous mode, which the programs let pass.
void address_to_interface(std::vector<std::uint8_t>& frame, int ifindex) {
  if (frame.size() >= kToInterface.size() &&
      std::equal(kToInterface.begin(), kToInterface.end(), frame.begin())) {
    const MacAddr own = mac_of(ifindex);
    std::copy(own.begin(), own.end(), frame.begin());
  }
}

}  // namespace

TestRun test_run(const trace::Packet& p, bool ingress, std::uint8_t tcp_flags, std::uint32_t repeat) {
  const std::string& ifname = ingress ? p.iif : p.oif;
  const int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex <= 0) throw std::runtime_error("no interface " + ifname);
  const int fd = Kernel::attached_program(ifindex, ingress);
  if (fd < 0)
    throw std::runtime_error("no fwengine program on " + ifname + (ingress ? " ingress" : " egress"));
  try {
    const TestRun run = test_run_program(fd, p, ifindex, tcp_flags, repeat);
    close(fd);
    return run;
  } catch (...) {
    close(fd);
    throw;
  }
}

TestRun test_run_program(int prog_fd, const trace::Packet& p, int ifindex, std::uint8_t tcp_flags,
                         std::uint32_t repeat) {
  return test_run_frame(prog_fd, frame_of(p, tcp_flags), ifindex, p.mark, repeat);
}

int xdp_test_run(int prog_fd, std::vector<std::uint8_t> frame, int ifindex) {
  address_to_interface(frame, ifindex);
  xdp_md ctx{};
  ctx.data_end = static_cast<__u32>(frame.size());
  ctx.ingress_ifindex = static_cast<__u32>(ifindex);
  bpf_test_run_opts opts{};
  opts.sz = sizeof opts;
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<__u32>(frame.size());
  opts.ctx_in = &ctx;
  opts.ctx_size_in = sizeof ctx;
  if (bpf_prog_test_run_opts(prog_fd, &opts) != 0)
    throw std::runtime_error("XDP BPF_PROG_TEST_RUN failed on interface " + std::to_string(ifindex) + ": " +
                             std::strerror(errno));
  return static_cast<int>(opts.retval);
}

TestRun test_run_frame(int prog_fd, std::vector<std::uint8_t> frame, int ifindex, std::uint32_t mark,
                       std::uint32_t repeat) {
  address_to_interface(frame, ifindex);
  __sk_buff ctx{};
  ctx.ifindex = static_cast<__u32>(ifindex);
  ctx.mark = mark;
  __sk_buff ctx_out{};
  std::vector<std::uint8_t> out(frame.size() + 256);  // an answer can be longer than its packet
  bpf_test_run_opts opts{};
  opts.sz = sizeof opts;
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<__u32>(frame.size());
  opts.data_out = out.data();
  opts.data_size_out = static_cast<__u32>(out.size());
  opts.ctx_in = &ctx;
  opts.ctx_size_in = sizeof ctx;
  opts.ctx_out = &ctx_out;
  opts.ctx_size_out = sizeof ctx_out;
  opts.repeat = repeat;
  if (bpf_prog_test_run_opts(prog_fd, &opts) != 0)
    throw std::runtime_error("BPF_PROG_TEST_RUN failed on interface " + std::to_string(ifindex));
  out.resize(std::min<std::size_t>(opts.data_size_out, out.size()));
  return {static_cast<int>(opts.retval), opts.duration, ctx_out.mark, std::move(out)};
}

namespace {

// The packet's mark becomes the one the program left.
Outcome run_program(trace::Packet& p, bool ingress, std::uint8_t tcp_flags) {
  const TestRun run = test_run(p, ingress, tcp_flags);
  p.mark = run.mark;
  switch (run.retval) {
    case TC_ACT_UNSPEC:  // passed on to the hook's next filter
      return Outcome::passed;
    case TC_ACT_SHOT:
      return Outcome::dropped;
    case TC_ACT_REDIRECT:
      return Outcome::answered;
    default:
      throw std::runtime_error("unexpected tc verdict " + std::to_string(run.retval) + " on " +
                               (ingress ? p.iif : p.oif));
  }
}

}  // namespace

Judged judge(trace::Packet p, std::uint8_t tcp_flags) {
  if (!p.iif.empty()) {
    const Outcome out = run_program(p, true, tcp_flags);
    return {out, p.mark};
  }
  const Outcome out = run_program(p, false, tcp_flags);
  if (out != Outcome::passed || p.oif != "lo") return {out, p.mark};
  // Back in on lo with the mark it was given on the way out.
  p.iif = "lo";
  p.oif.clear();
  const Outcome back = run_program(p, true, tcp_flags);
  return {back, p.mark};
}

Outcome outcome_of(trace::Packet p, std::uint8_t tcp_flags) {
  return judge(std::move(p), tcp_flags).outcome;
}

Outcome expected_outcome(const trace::Result& result, const trace::Packet& p, std::uint8_t tcp_flags) {
  switch (result.final_verdict()) {
    case Verdict::drop:
      return Outcome::dropped;
    case Verdict::reject: {
      const bool icmp_error = (p.protocol == 1 && (p.icmp_type == 3 || p.icmp_type == 4 || p.icmp_type == 5 ||
                                                   p.icmp_type == 11 || p.icmp_type == 12)) ||
                              (p.protocol == 58 && (p.icmp_type < 128 || p.icmp_type == 137));
      const bool reset = p.protocol == 6 && (tcp_flags & 0x04);
      const auto group = [](const IpAddr& a) {
        return a.family == Family::ipv4 ? a.bytes[0] >= 224 : a.bytes[0] == 0xff;
      };
      return icmp_error || reset || group(p.src) || group(p.dst) ? Outcome::dropped : Outcome::answered;
    }
    default:
      return Outcome::passed;
  }
}

std::string to_string(Outcome outcome) {
  return outcome == Outcome::passed ? "passed" : outcome == Outcome::dropped ? "dropped" : "answered";
}

bool run_programs(trace::Packet p, std::uint8_t tcp_flags) {
  return outcome_of(std::move(p), tcp_flags) == Outcome::passed;
}

Ruleset log_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "log.yaml"};
  auto logging = [](Match match, const char* prefix, std::uint8_t level, std::uint32_t line) {
    Rule r = rule(std::move(match), ActionKind::log, line);
    r.action.log_prefix = prefix;
    r.action.log_level = level;
    return r;
  };
  add_chain(rs, "logged",
            {logging(tcp_dport({{23, 23}}), "fwe-telnet: ", 6, 1), logging({}, "fwe-in: ", 4, 2)});
  Endpoint in = endpoint("d0", "d0", std::nullopt);
  in.groups.push_back(group("logged", {"logged"}, Verdict::continue_));
  in.default_verdict = Verdict::accept;
  rs.stage(Stage::input).sections.push_back({"host", false, {in}});
  passes::normalise(rs);
  return rs;
}

Ruleset notrack_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "notrack.yaml"};
  Match mdns;
  mdns.protocols = std::vector<std::uint8_t>{17};
  mdns.dst_port.push_back({false, {{5353, 5353}}});
  add_chain(rs, "raw",
            {rule(mdns, ActionKind::notrack, 1), rule(tcp_dport({{8022, 8022}}), ActionKind::notrack, 2)});
  Endpoint raw = endpoint("raw-d0", "d0", std::nullopt);
  raw.groups.push_back(group("raw", {"raw"}, Verdict::continue_));
  rs.stage(Stage::untracked_in).sections.push_back({"raw", false, {raw}});
  Rule mark = rule(tcp_dport({{8022, 8023}}), ActionKind::set_mark, 3);
  mark.action.mark_value = 0x40;
  mark.action.mark_mask = 0xf0;
  add_chain(rs, "pre", {mark});
  Endpoint pre = endpoint("pre-d0", "d0", std::nullopt);
  pre.groups.push_back(group("pre", {"pre"}, Verdict::continue_));
  rs.stage(Stage::prednat).sections.push_back({"pre", false, {pre}});
  Rule mark_more = rule(tcp_dport({{8023, 8023}}), ActionKind::set_mark, 5);
  mark_more.action.mark_value = 0x5;
  mark_more.action.mark_mask = 0xf;
  add_chain(
      rs, "in",
      {rule(mdns, ActionKind::accept, 4), mark_more, rule(tcp_dport({{8022, 8023}}), ActionKind::accept, 6)});
  Endpoint in = endpoint("in-d0", "d0", std::nullopt);
  in.conntrack = Conntrack::accept_established;
  in.groups.push_back(group("in", {"in"}, Verdict::continue_));
  in.default_verdict = Verdict::drop;
  rs.stage(Stage::input).sections.push_back({"in", false, {in}});
  Endpoint out = endpoint("out-d0", std::nullopt, "d0");
  out.conntrack = Conntrack::accept_established;
  out.default_verdict = Verdict::drop;
  rs.stage(Stage::output).sections.push_back({"out", false, {out}});
  passes::normalise(rs);
  return rs;
}

std::vector<trace::Packet> notrack_packets() {
  std::vector<trace::Packet> out;
  for (std::uint8_t proto : {6, 17})
    for (std::uint16_t port : {5353, 8022, 8023, 8024}) {
      out.push_back(packet("d0", "", "10.0.0.20", "10.0.0.1", proto, 40000, port));
      out.push_back(packet("d0", "", "2001:db8::20", "2001:db8::1", proto, 40000, port));
    }
  return out;
}

Ruleset negation_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "negations.yaml"};
  add_set(rs, "lan", {"10.0.0.0/24", "2001:db8::/64"});
  Match discard;
  discard.protocols = std::vector<std::uint8_t>{17};
  discard.dst_port.push_back({false, {{9, 9}}});
  add_chain(rs, "raw-out", {rule(discard, ActionKind::drop, 1)});
  Endpoint raw = endpoint("raw-out-d0", std::nullopt, "d0");
  raw.groups.push_back(group("raw", {"raw-out"}, Verdict::continue_));
  rs.stage(Stage::untracked_out).sections.push_back({"raw", false, {raw}});

  Match not_d1 = tcp_dport({{7001, 7001}});
  not_d1.iif = std::vector<IfacePattern>{parse_iface("d1")};
  not_d1.iif_negate = true;
  Match from_d0 = tcp_dport({{7002, 7002}});
  from_d0.iif = std::vector<IfacePattern>{parse_iface("d0")};
  Match not_established = tcp_dport({{7004, 7004}});
  not_established.ct_states = std::vector<CtState>{CtState::established};
  not_established.ct_negate = true;
  Match unmarked = tcp_dport({{7005, 7005}});
  unmarked.mark_value = 0x10;
  unmarked.mark_mask = 0xff;
  unmarked.mark_negate = true;
  Match not_spoofer = tcp_dport({{7006, 7006}});
  not_spoofer.src_mac = std::vector<MacAddr>{*parse_mac("02:00:00:00:00:99")};
  not_spoofer.src_mac_negate = true;
  add_chain(rs, "lan-in",
            {rule(not_d1, ActionKind::accept, 2), rule(from_d0, ActionKind::accept, 3),
             rule(not_established, ActionKind::accept, 4), rule(unmarked, ActionKind::accept, 5),
             rule(not_spoofer, ActionKind::accept, 6)});
  add_chain(rs, "other-in", {rule(tcp_dport({{7007, 7007}}), ActionKind::accept, 7)});
  Endpoint lan = endpoint("lan", "d+", std::nullopt);
  lan.match.src_set = "lan";
  lan.match.src_mac = std::vector<MacAddr>{*parse_mac("02:00:00:00:00:01"), *parse_mac("02:00:00:00:00:99")};
  lan.groups.push_back(group("lan", {"lan-in"}, Verdict::continue_));
  lan.default_verdict = Verdict::drop;
  Endpoint other = endpoint("other", "d+", std::nullopt);
  other.groups.push_back(group("other", {"other-in"}, Verdict::continue_));
  other.default_verdict = Verdict::drop;
  rs.stage(Stage::input).sections.push_back({"in", false, {lan, other}});

  Match not_back = tcp_dport({{7003, 7003}});
  not_back.oif = std::vector<IfacePattern>{parse_iface("d0")};
  not_back.oif_negate = true;
  add_chain(rs, "fwd", {rule(not_back, ActionKind::accept, 8)});
  Endpoint fwd = endpoint("fwd", "d+", std::nullopt);
  fwd.groups.push_back(group("fwd", {"fwd"}, Verdict::continue_));
  fwd.default_verdict = Verdict::drop;
  rs.stage(Stage::forward).sections.push_back({"fwd", false, {fwd}});
  passes::normalise(rs);
  return rs;
}

std::vector<trace::Packet> negation_packets() {
  std::vector<trace::Packet> out;
  const std::pair<const char*, const char*> sides[] = {{"10.0.0.20", "10.0.0.1"},          // from lan
                                                       {"2001:db8::20", "2001:db8::1"},    // from lan
                                                       {"192.0.2.7", "10.0.0.1"},          // not
                                                       {"2001:db8:9::7", "2001:db8::1"}};  // not
  for (const char* iif : {"d0", "d1"})
    for (const auto& [src, dst] : sides)
      for (std::uint16_t port = 7001; port <= 7008; ++port) {
        out.push_back(packet(iif, "", src, dst, 6, 40000, port));
        trace::Packet marked = out.back();
        marked.mark = 0x10;
        out.push_back(marked);
        for (const char* mac : {"02:00:00:00:00:99", "02:00:00:00:00:55"}) {  // the spoofer's, and no lan MAC
          trace::Packet other_mac = out.back();
          other_mac.mark = 0;
          other_mac.src_mac = parse_mac(mac);
          out.push_back(other_mac);
        }
      }
  // Forwarded: 7003 passes from d0 to d1, not from d1 to d0.
  out.push_back(packet("d0", "d1", "10.0.0.20", "10.1.0.5", 6, 40000, 7003));
  out.push_back(packet("d1", "d0", "10.1.0.5", "10.0.0.20", 6, 40000, 7003));
  out.push_back(packet("d0", "d1", "10.0.0.20", "10.1.0.5", 6, 40000, 7004));
  // Sent by the host out of d0 and d1: UDP 9 out of d0 is dropped before conntrack.
  for (const char* oif : {"d0", "d1"}) {
    out.push_back(packet("", oif, "10.0.0.1", "10.0.0.20", 17, 40000, 9));
    out.push_back(packet("", oif, "10.0.0.1", "10.0.0.20", 17, 40000, 10));
  }
  for (auto& p : out)
    if (p.iif.empty()) p.src_mac.reset();
  return out;
}

Ruleset reject_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "reject.yaml"};
  auto rejecting = [](Match match, const char* with, std::uint32_t line) {
    Rule r = rule(std::move(match), ActionKind::reject, line);
    r.action.reject_with = with;
    return r;
  };
  Match dns;
  dns.protocols = std::vector<std::uint8_t>{17};
  dns.dst_port.push_back({false, {{53, 53}}});
  add_chain(rs, "in",
            {rejecting(tcp_dport({{23, 23}}), "tcp-reset", 1), rejecting(dns, "icmp-admin-prohibited", 2),
             rejecting(tcp_dport({{24, 24}}), "icmp-net-prohibited", 3)});
  Endpoint in = endpoint("d0", "d0", std::nullopt);
  in.groups.push_back(group("in", {"in"}, Verdict::continue_));
  in.default_verdict = Verdict::reject;
  rs.stage(Stage::input).sections.push_back({"host", false, {in}});
  add_chain(rs, "out", {rejecting(tcp_dport({{80, 80}}), "tcp-reset", 4)});
  Endpoint out = endpoint("d0-out", std::nullopt, "d0");
  out.groups.push_back(group("out", {"out"}, Verdict::continue_));
  rs.stage(Stage::output).sections.push_back({"host", false, {out}});
  passes::normalise(rs);
  return rs;
}

std::size_t count_entries(const std::string& pin_dir, const char* name) {
  const std::string pin = pin_dir + "/" + name;
  const int fd = bpf_obj_get(pin.c_str());
  if (fd < 0) throw std::runtime_error("no map at " + pin);
  std::array<unsigned char, 64> key{}, next{};  // larger than any of our keys
  std::size_t count = 0;
  for (const void* prev = nullptr; bpf_map_get_next_key(fd, prev, next.data()) == 0; prev = key.data()) {
    key = next;
    ++count;
  }
  close(fd);
  return count;
}

void clear_conntrack(const std::string& pin_dir) {
  for (const char* name : {"fwe_ct4", "fwe_ct6"}) {
    const std::string pin = pin_dir + "/" + name;
    const int fd = bpf_obj_get(pin.c_str());
    if (fd < 0) throw std::runtime_error("no conntrack map at " + pin);
    fwe_ct6_key key{};  // the larger of the two keys
    while (bpf_map_get_next_key(fd, nullptr, &key) == 0) bpf_map_delete_elem(fd, &key);
    close(fd);
  }
}

}  // namespace fwe::ebpf::test
