// support.cpp - see support.hpp.
#include "support.hpp"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <random>
#include <sstream>
#include <utility>

#include "fwengine/passes.hpp"
#include "kernel.hpp"

namespace fwe::iptables::test {

using namespace fwe::ir;

namespace {

Origin at(std::uint32_t line) {
  return Origin{SourceLoc{1, line, 3}, "test policy", -1};
}

Cidr cidr(std::string_view text) {
  return *parse_cidr(text);
}

Rule rule(std::uint32_t line, ActionKind kind) {
  Rule r;
  r.origin = at(line);
  r.action.kind = kind;
  return r;
}

Rule tcp_port(std::uint32_t line, std::uint16_t port, ActionKind kind) {
  Rule r = rule(line, kind);
  r.match.protocols = std::vector<std::uint8_t>{6};
  r.match.dst_port.push_back({false, {{port, port}}});
  return r;
}

void finish(Ruleset& rs) {
  Diagnostics diag;
  passes::run_all(rs, diag);
  if (diag.has_errors()) {
    diag.print(std::cerr);
    std::abort();
  }
}

}  // namespace

Ruleset sample_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "policy.yaml"};
  rs.sets["small"] = {{cidr("192.0.2.0/28"), cidr("2001:db8:10::/64")}, at(2)};
  AddrSet big{{}, at(3)};
  for (int i = 0; i < 20; ++i) big.cidrs.push_back(cidr("198.51.100." + std::to_string(i * 8) + "/30"));
  rs.sets["big"] = big;
  rs.sets["v6only"] = {{cidr("2001:db8:99::/48")}, at(4)};
  rs.sets["lan"] = {{cidr("10.0.0.0/8")}, at(5)};

  Chain web{"web", {}, at(10)};
  web.rules.push_back(tcp_port(11, 22, ActionKind::accept));
  Rule http = rule(12, ActionKind::allow);
  http.match.protocols = std::vector<std::uint8_t>{6};
  http.match.dst_port.push_back({false, {{80, 80}, {443, 443}, {8000, 8100}}});
  web.rules.push_back(http);
  Rule scrape = tcp_port(13, 9100, ActionKind::accept);
  scrape.match.src_addr.push_back({false, "small"});
  web.rules.push_back(scrape);
  Rule blocked = rule(14, ActionKind::reject);
  blocked.match.src_addr.push_back({false, "big"});
  blocked.action.reject_with = "tcp-reset";
  web.rules.push_back(blocked);
  Rule ping = rule(15, ActionKind::accept);
  ping.match.icmp = IcmpMatch{false, false, 8, std::nullopt};
  ping.match.rate_limit = RateLimit{20, "second", 0};
  web.rules.push_back(ping);
  Rule ping6 = rule(16, ActionKind::accept);
  ping6.match.icmp = IcmpMatch{false, true, 128, std::nullopt};
  web.rules.push_back(ping6);
  Rule v6 = rule(17, ActionKind::drop);
  v6.match.src_addr.push_back({false, "v6only"});
  web.rules.push_back(v6);
  Rule to_pass = rule(18, ActionKind::jump);
  to_pass.action.target = "passing";
  to_pass.match.iif = std::vector<IfacePattern>{{"eth", true}, {"eth0", false}};
  web.rules.push_back(to_pass);
  rs.chains["web"] = web;

  Chain passing{"passing", {}, at(20)};
  Rule mark = rule(21, ActionKind::set_mark);
  mark.action.mark_value = 0x10;
  mark.action.mark_mask = 0xff;
  passing.rules.push_back(mark);
  Rule pass = rule(22, ActionKind::pass);
  pass.match.src_addr.push_back({true, "lan"});
  passing.rules.push_back(pass);
  rs.chains["passing"] = passing;

  Chain logging{"log-drops", {}, at(25)};
  Rule log = rule(26, ActionKind::log);
  log.action.log_prefix = "fwe drop: ";
  log.match.rate_limit = RateLimit{5, "minute", 0};
  logging.rules.push_back(log);
  Rule quiet = rule(27, ActionKind::log);
  quiet.match.rate_limit = RateLimit{60, "minute", 10};  // iptables-save prints 1/sec
  quiet.action.log_level = 6;
  logging.rules.push_back(quiet);
  rs.chains["log-drops"] = logging;

  Chain untracked{"untracked", {}, at(30)};
  Rule notrack = tcp_port(31, 5353, ActionKind::notrack);
  notrack.match.protocols = std::vector<std::uint8_t>{17};
  untracked.rules.push_back(notrack);
  rs.chains["untracked"] = untracked;

  Chain prednat{"prednat-allow", {}, at(35)};
  Rule lan_allow = rule(36, ActionKind::allow);
  lan_allow.match.src_addr.push_back({false, "lan"});
  prednat.rules.push_back(lan_allow);
  rs.chains["prednat-allow"] = prednat;

  Chain dnat{"port-forward", {}, at(40)};
  Rule fwd = tcp_port(41, 8080, ActionKind::dnat);
  fwd.action.nat_addr = parse_ip("10.1.2.3");
  fwd.action.nat_port = PortRange{80, 80};
  dnat.rules.push_back(fwd);
  rs.chains["port-forward"] = dnat;

  Chain snat{"masq", {}, at(45)};
  Rule masq = rule(46, ActionKind::masquerade);
  masq.match.oif = std::vector<IfacePattern>{{"uplink", false}};
  snat.rules.push_back(masq);
  Rule hairpin = rule(47, ActionKind::masquerade);  // what was DNATed back to the LAN comes from the host
  hairpin.match.ct_states = std::vector<CtState>{CtState::new_};
  hairpin.match.ct_status = std::vector<CtStatus>{CtStatus::dnat};
  hairpin.match.src_addr.push_back({false, "lan"});
  snat.rules.push_back(hairpin);
  rs.chains["masq"] = snat;

  rs.failsafe.inbound.push_back({6, 22, std::nullopt, at(50)});
  rs.failsafe.outbound.push_back({17, 53, std::nullopt, at(51)});

  auto endpoint = [](std::string name, std::uint32_t line) {
    Endpoint ep;
    ep.name = std::move(name);
    ep.origin = at(line);
    return ep;
  };
  // input: loopback accepted, uplink policed.
  Endpoint lo = endpoint("loopback", 60);
  lo.match.iif = IfacePattern{"lo", false};
  lo.default_verdict = Verdict::accept;
  Endpoint up = endpoint("uplink", 61);
  up.conntrack = Conntrack::accept_established_drop_invalid;
  up.failsafe = true;
  up.groups.push_back({"tier1", {"web"}, Verdict::drop, {}, at(62)});
  up.groups.push_back({"tier2", {"log-drops"}, Verdict::continue_, {}, at(63)});
  up.default_verdict = Verdict::reject;
  Section host{"host", true, {lo, up}};
  rs.stage(Stage::input).sections.push_back(host);

  Endpoint fwd_in = endpoint("from-lan", 70);
  fwd_in.match.src_set = "lan";
  fwd_in.conntrack = Conntrack::accept_established;
  fwd_in.default_verdict = Verdict::allow;
  rs.stage(Stage::forward).sections.push_back({"from", true, {fwd_in}});
  Endpoint fwd_out = endpoint("to-uplink", 71);
  fwd_out.match.oif = IfacePattern{"uplink", false};
  fwd_out.default_verdict = Verdict::continue_;
  rs.stage(Stage::forward).sections.push_back({"to", false, {fwd_out}});

  Endpoint out = endpoint("any", 75);
  out.conntrack = Conntrack::accept_established;
  out.failsafe = true;
  out.default_verdict = Verdict::accept;
  rs.stage(Stage::output).sections.push_back({"host", false, {out}});

  Endpoint raw = endpoint("uplink-raw", 80);
  raw.match.iif = IfacePattern{"uplink", false};
  raw.groups.push_back({"untracked", {"untracked"}, Verdict::continue_, {}, at(81)});
  rs.stage(Stage::untracked_in).sections.push_back({"untracked", false, {raw}});

  Endpoint pre = endpoint("uplink-prednat", 85);
  pre.match.iif = IfacePattern{"uplink", false};
  pre.conntrack = Conntrack::accept_established_drop_invalid;
  pre.groups.push_back({"prednat", {"prednat-allow"}, Verdict::continue_, {}, at(86)});
  rs.stage(Stage::prednat).sections.push_back({"prednat", false, {pre}});

  Endpoint dn = endpoint("dnat", 90);
  dn.groups.push_back({"dnat", {"port-forward"}, Verdict::continue_, {}, at(91)});
  rs.stage(Stage::dnat).sections.push_back({"dnat", false, {dn}});
  Endpoint sn = endpoint("snat", 95);
  sn.groups.push_back({"snat", {"masq"}, Verdict::continue_, {}, at(96)});
  rs.stage(Stage::snat).sections.push_back({"snat", false, {sn}});

  finish(rs);
  return rs;
}

Ruleset tiny_ruleset(const std::string& port_chain_name) {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "tiny.yaml"};
  AddrSet admins{{}, at(1)};
  for (int i = 0; i < 8; ++i) admins.cidrs.push_back(cidr("203.0.113." + std::to_string(i * 2) + "/32"));
  rs.sets["admins"] = admins;
  Chain c{port_chain_name, {}, at(2)};
  Rule ssh = tcp_port(3, 22, ActionKind::accept);
  ssh.match.src_addr.push_back({false, "admins"});
  c.rules.push_back(ssh);
  c.rules.push_back(tcp_port(4, 80, ActionKind::accept));
  rs.chains[port_chain_name] = c;
  Endpoint ep;
  ep.name = "all";
  ep.origin = at(5);
  ep.conntrack = Conntrack::accept_established;
  ep.groups.push_back({"main", {port_chain_name}, Verdict::continue_, {}, at(6)});
  ep.default_verdict = Verdict::drop;
  rs.stage(Stage::input).sections.push_back({"host", false, {ep}});
  finish(rs);
  return rs;
}

Ruleset runs_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "runs.yaml"};
  Chain c{"list", {}, at(9)};
  auto add = [&](std::uint16_t port, const std::string& address, bool source, std::uint8_t protocol = 6) {
    std::uint32_t line = 10 + static_cast<std::uint32_t>(c.rules.size());
    std::string set = "a" + std::to_string(line);
    rs.sets[set] = AddrSet{{cidr(address)}, at(line)};
    Rule r = tcp_port(line, port, ActionKind::accept);
    r.match.protocols = std::vector<std::uint8_t>{protocol};
    (source ? r.match.src_addr : r.match.dst_addr).push_back({false, set});
    c.rules.push_back(r);
  };
  add(1000, "10.0.0.0/24", true);
  add(1001, "10.0.1.0/24", true);
  add(1002, "2001:db8::/64", true);
  add(1003, "10.0.3.0/24", true, 17);
  add(1004, "10.0.4.0/24", true);
  add(1000, "10.0.0.0/16", true);
  for (std::uint16_t k = 2; k <= 5; ++k)
    add(static_cast<std::uint16_t>(7000 + k), "127.0.0." + std::to_string(k), false);
  rs.chains["list"] = c;
  Endpoint ep;
  ep.name = "all";
  ep.origin = at(5);
  ep.conntrack = Conntrack::accept_established;
  ep.groups.push_back({"main", {"list"}, Verdict::continue_, {}, at(6)});
  ep.default_verdict = Verdict::drop;
  rs.stage(Stage::input).sections.push_back({"host", false, {ep}});
  finish(rs);
  return rs;
}

namespace {

// Finishes a ruleset of one chain, "list", that the one endpoint of input jumps to.
Ruleset with_list(Ruleset rs, Chain list) {
  rs.chains["list"] = std::move(list);
  Endpoint ep;
  ep.name = "all";
  ep.origin = at(5);
  ep.groups.push_back({"main", {"list"}, Verdict::continue_, {}, at(6)});
  ep.default_verdict = Verdict::drop;
  rs.stage(Stage::input).sections.push_back({"host", false, {ep}});
  finish(rs);
  return rs;
}

}  // namespace

Ruleset long_run_ruleset(std::size_t rules, std::uint16_t ports) {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "long.yaml"};
  Chain c{"list", {}, at(9)};
  for (std::size_t i = 0; i < rules; ++i) {
    const auto line = static_cast<std::uint32_t>(10 + i);
    const std::string set = "h" + std::to_string(i);
    rs.sets[set] = AddrSet{{cidr("10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) +
                                 "." + std::to_string(i & 255) + "/32")},
                           at(line)};
    Rule r = tcp_port(line, static_cast<std::uint16_t>(5000 + i % ports), ActionKind::accept);
    r.match.src_addr.push_back({false, set});
    c.rules.push_back(r);
  }
  return with_list(std::move(rs), std::move(c));
}

Ruleset nested_ruleset(std::uint32_t seed, std::size_t rules) {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "nested.yaml"};
  Chain c{"list", {}, at(9)};
  std::mt19937 random(seed);
  for (std::size_t i = 0; i < rules; ++i) {
    const auto line = static_cast<std::uint32_t>(10 + i);
    const auto port = static_cast<std::uint16_t>(1000 + random() % 3);
    Rule r = tcp_port(line, port, ActionKind::accept);
    if (random() % 4 == 0)
      r.match.dst_port[0].ports.push_back(
          {static_cast<std::uint16_t>(port + 1), static_cast<std::uint16_t>(port + 1)});
    const std::uint32_t prefix = 16 + random() % 5 * 4;
    const std::uint32_t host = random() & 0xffffu & ~static_cast<std::uint32_t>(0xffffffffull >> prefix);
    const std::string address =
        i % 10 == 9 ? "2001:db8:" + std::to_string(host % 8) + "::/" + std::to_string(48 + prefix / 4 * 4)
                    : "10.0." + std::to_string(host >> 8) + "." + std::to_string(host & 255) + "/" +
                          std::to_string(prefix);
    r.match.src_addr.push_back(AddrMatch{false, cidr(address)});
    c.rules.push_back(r);
  }
  return with_list(std::move(rs), std::move(c));
}

Ruleset fusion_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "fusion.yaml"};
  std::uint32_t line = 10;
  for (const char* name : {"a", "b", "c"}) {
    Chain c{name, {}, at(line++)};
    for (int i = 0; i < 2; ++i, ++line) {
      std::string set = "s" + std::to_string(line);
      rs.sets[set] = AddrSet{{cidr("10.0." + std::to_string(line) + ".0/24")}, at(line)};
      Rule r = tcp_port(line, static_cast<std::uint16_t>(1000 + line), ActionKind::accept);
      r.match.src_addr.push_back({false, set});
      c.rules.push_back(r);
    }
    rs.chains[name] = c;
  }
  rs.chains["d"] = Chain{"d", {rule(30, ActionKind::log)}, at(29)};
  Endpoint ep;
  ep.name = "all";
  ep.origin = at(5);
  ep.groups.push_back({"main", {"a", "b", "d", "c"}, Verdict::continue_, {}, at(6)});
  ep.default_verdict = Verdict::drop;
  rs.stage(Stage::input).sections.push_back({"host", false, {ep}});
  finish(rs);
  return rs;
}

void enter_scratch_netns() {
  if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) {
    std::cerr << "skipped: needs root and unshare(CLONE_NEWNET)\n";
    std::exit(77);
  }
  // Only now, inside the new namespace, may the tools be tried.
  if (run_tool({"iptables-legacy-save"}).status != 0 || run_tool({"ipset", "list"}).status != 0) {
    std::cerr << "skipped: iptables-legacy-save or ipset do not work here\n";
    std::exit(77);
  }
}

std::string save_text(bool v6) {
  auto r = run_tool({v6 ? "ip6tables-legacy-save" : "iptables-legacy-save"});
  std::istringstream in(r.out);
  std::string out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#') out += line + '\n';
  return out;
}

Ruleset moved_down(Ruleset rs, std::uint32_t lines) {
  auto move = [lines](Origin& origin) {
    if (origin.loc.line > 0) origin.loc.line += lines;
  };
  ir::for_each_rule_origin(rs, move);
  return rs;
}

std::string ipset_text_now() {
  return run_tool({"ipset", "save"}).out;
}

std::vector<std::string> strings_of(const PackedStrings& list) {
  return {list.begin(), list.end()};
}

}  // namespace fwe::iptables::test
