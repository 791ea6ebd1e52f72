// test_support.cpp - see test_support.hpp.
#include "test_support.hpp"

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace nft_test {

using namespace fwe::ir;

Origin origin(std::uint32_t line, std::string policy, std::int32_t rule) {
  return Origin{{1, line, 3}, std::move(policy), rule};
}

Ruleset small_ruleset() {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", "policy.yaml"};
  rs.sets["admins"] =
      AddrSet{{*parse_cidr("10.0.0.0/8"), *parse_cidr("192.168.1.0/24")}, origin(2, "set admins")};

  Rule ssh;
  ssh.match.protocols = std::vector<std::uint8_t>{6};
  ssh.match.dst_port.push_back({false, {{22, 22}}});
  ssh.match.src_addr.push_back({false, "admins"});
  ssh.action.kind = ActionKind::allow;
  ssh.origin = origin(7, "GlobalNetworkPolicy allow-ssh", 0);
  rs.chains["allow-ssh"] = Chain{"allow-ssh", {ssh}, origin(5, "GlobalNetworkPolicy allow-ssh")};

  Rule failsafe;
  failsafe.match.protocols = std::vector<std::uint8_t>{6};
  failsafe.match.dst_port.push_back({false, {{2222, 2222}}});
  failsafe.action.kind = ActionKind::accept;
  failsafe.origin = origin(20, "failsafe", 0);
  rs.chains[std::string(kFailsafeIn)] = Chain{std::string(kFailsafeIn), {failsafe}, origin(20, "failsafe")};

  Endpoint ep;
  ep.name = "eth0";
  ep.match.iif = IfacePattern{"eth0", false};
  ep.conntrack = Conntrack::accept_established_drop_invalid;
  ep.failsafe = true;
  ep.failsafe_chain = std::string(kFailsafeIn);
  ep.groups.push_back(Group{"tier", {"allow-ssh"}, Verdict::continue_, {}, origin(4, "tier default")});
  ep.default_verdict = Verdict::drop;
  ep.origin = origin(3, "HostEndpoint eth0");
  rs.stage(Stage::input).sections.push_back(Section{"host", false, {ep}});
  return rs;
}

namespace {

Rule rule(std::uint32_t line, ActionKind kind, const std::function<void(Match&, Action&)>& fill = {}) {
  Rule r;
  r.action.kind = kind;
  if (fill) fill(r.match, r.action);
  r.origin = origin(line, "GlobalNetworkPolicy sink", static_cast<std::int32_t>(line));
  return r;
}

Endpoint endpoint(std::string name, std::vector<std::string> chains, Verdict on_end, Verdict fallback) {
  Endpoint ep;
  ep.name = std::move(name);
  ep.groups.push_back(Group{"tier", std::move(chains), on_end, {}, origin(90, "tier")});
  ep.default_verdict = fallback;
  ep.origin = origin(91, "endpoint " + ep.name);
  return ep;
}

}  // namespace

Ruleset kitchen_sink_ruleset() {
  Ruleset rs = small_ruleset();
  rs.sets["mixed"] = AddrSet{{*parse_cidr("10.0.0.0/8"), *parse_cidr("172.16.0.0/12"),
                              *parse_cidr("2001:db8::/32"), *parse_cidr("fd00::/8")},
                             origin(30, "set")};
  rs.sets["v4only"] = AddrSet{{*parse_cidr("192.168.0.0/16"), *parse_cidr("224.0.0.0/3")}, origin(31, "set")};
  // Prefixes of one length: hash sets looked up masked (whole addresses: unmasked).
  rs.sets["one-length"] = AddrSet{{*parse_cidr("10.1.0.0/16"), *parse_cidr("10.2.0.0/16"),
                                   *parse_cidr("2001:db8:1::/48"), *parse_cidr("2001:db8:2::/48")},
                                  origin(32, "set")};
  rs.sets["hosts"] = AddrSet{{*parse_cidr("192.0.2.7"), *parse_cidr("192.0.2.9")}, origin(33, "set")};
  auto mac1 = *parse_mac("02:00:00:00:00:01"), mac2 = *parse_mac("02:00:00:00:00:02");
  std::vector<Rule> rules = {
      rule(40, ActionKind::accept,
           [](Match& m, Action&) {
             m.family = Family::ipv6;
             m.protocols = std::vector<std::uint8_t>{17};
             m.src_port.push_back({false, {{1000, 2000}}});
             m.dst_port.push_back({false, {{53, 53}}});
           }),
      rule(41, ActionKind::drop,
           [](Match& m, Action&) {
             m.src_addr.push_back({false, "mixed"});
             m.dst_addr.push_back({true, "v4only"});
           }),
      rule(42, ActionKind::accept,
           [](Match& m, Action&) {
             m.icmp = IcmpMatch{false, false, 8, 0};
           }),
      rule(43, ActionKind::reject,
           [](Match& m, Action&) {
             m.icmp = IcmpMatch{true, true, 128, {}};
           }),
      rule(44, ActionKind::log,
           [](Match& m, Action& a) {
             m.ct_states = std::vector<CtState>{CtState::new_};
             m.ct_negate = true;
             a.log_prefix = "ct \xc3\xa9 ";  // UTF-8 reaches the kernel as it is
             a.log_level = 6;
           }),
      rule(45, ActionKind::set_mark,
           [](Match& m, Action& a) {
             m.iif = std::vector<IfacePattern>{{"eth0", false}, {"eth1", false}};
             m.oif = std::vector<IfacePattern>{{"veth", true}, {"lo", false}};
             m.oif_negate = true;
             a.mark_value = 0x10;
             a.mark_mask = 0xff;
           }),
      rule(46, ActionKind::return_,
           [&](Match& m, Action&) {
             m.src_mac = std::vector<MacAddr>{mac1, mac2};
           }),
      rule(47, ActionKind::drop,
           [](Match& m, Action&) {
             m.pkt_type = "broadcast";
             m.mark_value = 5;
             m.mark_mask = 0xff;
             m.mark_negate = true;
           }),
      rule(48, ActionKind::accept,
           [](Match& m, Action&) {
             m.rate_limit = RateLimit{10, "minute", 20};
             m.ct_status = std::vector<CtStatus>{CtStatus::dnat, CtStatus::snat};
           }),
      rule(49, ActionKind::reject,
           [](Match& m, Action& a) {
             m.protocols = std::vector<std::uint8_t>{6, 17};
             m.protocol_negate = true;
             a.reject_with = "tcp-reset";
           }),
      rule(50, ActionKind::reject,
           [](Match& m, Action& a) {
             m.dst_port.push_back({true, {{22, 22}, {80, 90}}});
             a.reject_with = "icmp-host-prohibited";
           }),
      rule(51, ActionKind::set_mark, [](Match&, Action& a) { a.mark_value = 7; }),
      rule(54, ActionKind::drop,
           [](Match& m, Action&) {
             m.src_addr.push_back({false, "one-length"});
             m.dst_addr.push_back({true, "hosts"});
           }),
      rule(52, ActionKind::jump, [](Match&, Action& a) { a.target = "passer"; }),
      rule(53, ActionKind::allow, [&](Match& m, Action&) { m.src_mac = std::vector<MacAddr>{mac1}; }),
  };
  rs.chains["everything"] = Chain{"everything", rules, origin(39, "GlobalNetworkPolicy sink")};
  rs.chains["passer"] = Chain{"passer", {rule(60, ActionKind::pass)}, origin(59, "pass")};
  rs.chains["clamp"] = Chain{"clamp",
                             {rule(62, ActionKind::tcp_mss_clamp),
                              rule(63, ActionKind::tcp_mss_clamp,
                                   [](Match& m, Action& a) {
                                     m.dst_port.push_back({false, {{443, 443}}});
                                     m.protocols = std::vector<std::uint8_t>{6};
                                     a.mss = 1400;
                                   }),
                              rule(64, ActionKind::ct_helper,
                                   [](Match& m, Action& a) {
                                     m.protocols = std::vector<std::uint8_t>{6};
                                     m.dst_port.push_back({false, {{21, 21}}});
                                     a.target = "ftp";
                                   }),
                              rule(65, ActionKind::ct_helper, [](Match&, Action& a) { a.target = "tftp"; })},
                             origin(61, "clamp")};
  rs.chains["nat-in"] = Chain{"nat-in",
                              {rule(70, ActionKind::dnat,
                                    [](Match& m, Action& a) {
                                      m.protocols = std::vector<std::uint8_t>{6};
                                      m.dst_port.push_back({false, {{80, 80}}});
                                      a.nat_addr = *parse_ip("10.0.0.1");
                                      a.nat_port = PortRange{8080, 8080};
                                    }),
                               rule(71, ActionKind::dnat,
                                    [](Match&, Action& a) {
                                      a.nat_addr = *parse_ip("2001:db8::1");
                                      a.nat_port = PortRange{80, 90};
                                    }),
                               rule(72, ActionKind::redirect,
                                    [](Match& m, Action& a) {
                                      m.protocols = std::vector<std::uint8_t>{17};
                                      a.nat_port = PortRange{5353, 5353};
                                    })},
                              origin(69, "nat")};
  rs.chains["nat-out"] = Chain{"nat-out",
                               {rule(75, ActionKind::snat,
                                     [](Match& m, Action& a) {
                                       m.protocols = std::vector<std::uint8_t>{6};
                                       a.nat_addr = *parse_ip("1.2.3.4");
                                       a.nat_port = PortRange{1000, 2000};
                                     }),
                                rule(76, ActionKind::masquerade,
                                     [](Match& m, Action&) {
                                       m.oif = std::vector<IfacePattern>{{"eth", true}};
                                     })},
                               origin(74, "nat")};
  rs.chains["nat-host"] = Chain{"nat-host",
                                {rule(90, ActionKind::dnat,
                                      [](Match& m, Action& a) {
                                        m.protocols = std::vector<std::uint8_t>{6};
                                        m.dst_port.push_back({false, {{8081, 8081}}});
                                        a.nat_addr = *parse_ip("10.0.0.2");
                                        a.nat_port = PortRange{8080, 8080};
                                      }),
                                 rule(91, ActionKind::redirect,
                                      [](Match& m, Action& a) {
                                        m.protocols = std::vector<std::uint8_t>{17};
                                        a.nat_port = PortRange{5353, 5353};
                                      })},
                                origin(89, "nat-host")};
  rs.chains["dnatted"] = Chain{"dnatted",
                               {rule(92, ActionKind::accept,
                                     [](Match& m, Action&) {
                                       m.ct_status = std::vector<CtStatus>{CtStatus::dnat};
                                       // One range: nft 1.0.6 types a set of proto-dst wrongly
                                       // (fixed in 1.0.7), so `nft -f` would list it otherwise.
                                       m.ct_orig_dport.push_back({false, {{8000, 8080}}});
                                     }),
                                rule(93, ActionKind::reject,
                                     [](Match& m, Action&) {
                                       m.protocols = std::vector<std::uint8_t>{6};
                                       m.ct_orig_dport.push_back({true, {{22, 22}}});
                                     })},
                               origin(91, "dnatted")};
  rs.chains["anti-spoofing"] =
      Chain{"anti-spoofing",
            {rule(85, ActionKind::drop,
                  [](Match& m, Action&) {
                    m.family = Family::ipv6;
                    m.rpf = RpfMode::strict;
                    m.rpf_negate = true;
                  }),
             rule(86, ActionKind::log, [](Match& m, Action&) { m.rpf = RpfMode::loose; })},
            origin(84, "rpf")};
  rs.chains["raw"] = Chain{"raw",
                           {rule(80, ActionKind::notrack,
                                 [](Match& m, Action&) {
                                   m.protocols = std::vector<std::uint8_t>{17};
                                   m.dst_port.push_back({false, {{53, 53}}});
                                 })},
                           origin(79, "raw")};

  Endpoint classified = endpoint("pods", {"everything", "passer"}, Verdict::drop, Verdict::reject);
  classified.match.src_set = "mixed";
  classified.match.oif = IfacePattern{"cali", true};
  classified.reject_with = "icmp-admin-prohibited";
  Endpoint by_mac = endpoint("mac", {"everything"}, Verdict::reject, Verdict::allow);
  by_mac.match.src_mac = std::vector<MacAddr>{mac1, mac2};
  by_mac.conntrack = Conntrack::accept_established;
  rs.stage(Stage::forward).sections.push_back(Section{"first", false, {classified, by_mac}});
  rs.stage(Stage::forward)
      .sections.push_back(Section{
          "second", true, {endpoint("any", {"clamp", "everything"}, Verdict::continue_, Verdict::accept)}});
  rs.stage(Stage::untracked_in)
      .sections.push_back(
          Section{"raw", false, {endpoint("raw", {"raw"}, Verdict::continue_, Verdict::continue_)}});
  rs.stage(Stage::untracked_out)
      .sections.push_back(
          Section{"raw", false, {endpoint("raw", {"raw"}, Verdict::continue_, Verdict::continue_)}});
  rs.stage(Stage::prednat)
      .sections.push_back(
          Section{"pre",
                  false,
                  {endpoint("pre", {"anti-spoofing", "passer"}, Verdict::continue_, Verdict::continue_)}});
  rs.stage(Stage::dnat)
      .sections.push_back(
          Section{"nat", false, {endpoint("nat", {"nat-in"}, Verdict::continue_, Verdict::continue_)}});
  rs.stage(Stage::dnat_out)
      .sections.push_back(Section{
          "nat-host", false, {endpoint("nat-host", {"nat-host"}, Verdict::continue_, Verdict::continue_)}});
  rs.stage(Stage::input)
      .sections.push_back(
          Section{"in", false, {endpoint("in", {"dnatted"}, Verdict::continue_, Verdict::continue_)}});
  rs.stage(Stage::snat)
      .sections.push_back(
          Section{"nat", false, {endpoint("nat", {"nat-out"}, Verdict::continue_, Verdict::continue_)}});
  rs.stage(Stage::output)
      .sections.push_back(
          Section{"out", false, {endpoint("out", {"everything"}, Verdict::continue_, Verdict::allow)}});
  return rs;
}

ChildResult in_scratch_netns(const std::function<std::string()>& body) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    int code = 0;
    if (unshare(CLONE_NEWNET) != 0) {
      out = "unshare(CLONE_NEWNET) failed";
      code = 2;
    } else {
      try {
        out = body();
      } catch (const std::exception& e) {
        out = std::string("exception: ") + e.what();
        code = 1;
      }
    }
    for (std::size_t done = 0; done < out.size();) {
      ssize_t n = write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    close(fds[1]);
    std::_Exit(code);
  }
  close(fds[1]);
  ChildResult result;
  std::array<char, 4096> buf;
  for (ssize_t n; (n = read(fds[0], buf.data(), buf.size())) > 0;)
    result.output.append(buf.data(), static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string shell(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed: " + command);
  std::string out;
  std::array<char, 4096> buf;
  for (std::size_t n; (n = fread(buf.data(), 1, buf.size(), pipe)) > 0;) out.append(buf.data(), n);
  int status = pclose(pipe);
  if (status != 0)
    throw std::runtime_error("command failed (" + std::to_string(status) + "): " + command + "\n" + out);
  return out;
}

void require_root() {
  if (geteuid() != 0) std::_Exit(77);
}

}  // namespace nft_test
