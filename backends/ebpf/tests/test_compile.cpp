// test_compile.cpp - flattening and refusals, no kernel needed.
#include <arpa/inet.h>

#include <algorithm>
#include <iterator>
#include <set>
#include <sstream>
#include <tuple>

#include <catch2/catch.hpp>

#include "backend.hpp"
#include "compile.hpp"
#include "kernel.hpp"
#include "support.hpp"

using namespace fwe;
using namespace fwe::ebpf;

namespace {

// Every goto lands ahead of its rule and inside (or just past) its stage: the BPF walk only moves forward.
void require_forward_only(const Program& program) {
  for (std::size_t s = 0; s < FWE_STAGE_COUNT; ++s) {
    const auto& span = program.stages[s];
    for (std::uint32_t pc = span.start; pc < span.start + span.count; ++pc) {
      const fwe_rule& r = program.rules[pc];
      if (r.op != FWE_OP_GOTO && r.op != FWE_OP_DONE) continue;
      INFO("rule " << pc << ": " << program.sources[pc].what);
      REQUIRE(r.target > pc);
      REQUIRE(r.target <= span.start + span.count);
    }
  }
}

}  // namespace

TEST_CASE("the sample ruleset compiles into forward-only stages", "[compile]") {
  Diagnostics diag;
  Program program = compile(test::sample_ruleset(), diag);
  INFO(program.text());
  REQUIRE_FALSE(diag.has_errors());
  REQUIRE(program.rules.size() == program.sources.size());
  require_forward_only(program);
  CHECK(program.stages[FWE_STAGE_DNAT].count == 0);
  CHECK(program.stages[FWE_STAGE_INPUT].count > 0);
  CHECK(program.port_bitmaps.size() == 2);  // web ports and "not 53/5353"
  CHECK(program.notes.size() == 1);         // log counts only
}

TEST_CASE("jumps are inlined behind an inverted goto that skips the whole target", "[compile]") {
  Diagnostics diag;
  Program program = compile(test::sample_ruleset(), diag);
  REQUIRE_FALSE(diag.has_errors());
  std::size_t jumps = 0;
  for (std::uint32_t pc = 0; pc < program.rules.size(); ++pc) {
    const fwe_rule& r = program.rules[pc];
    if (!(r.flags & FWE_F_INVERT)) continue;
    ++jumps;
    CHECK(r.target == pc + 1 + 3);  // chain "web" has three rules
  }
  CHECK(jumps == 1);
}

TEST_CASE("NAT stages, packet types and NAT status are refused with the rule's origin", "[compile]") {
  ir::Ruleset rs = test::sample_ruleset();
  rs.chains["in-admin"].rules[0].match.pkt_type = "broadcast";
  rs.chains["in-admin"].rules[0].match.ct_status = std::vector<ir::CtStatus>{ir::CtStatus::dnat};
  ir::Endpoint nat;
  nat.name = "nat";
  nat.origin.loc = {1, 77, 3};
  rs.stage(ir::Stage::snat).sections.push_back({"nat", false, {nat}});
  Diagnostics diag;
  compile(rs, diag);
  REQUIRE(diag.error_count() == 3);
  CHECK(diag.all()[0].message.find("pkt-type") != std::string::npos);
  CHECK(diag.all()[0].loc.line == 30);
  CHECK(diag.all()[1].message.find("ct-status") != std::string::npos);
  CHECK(diag.all()[1].loc.line == 30);
  CHECK(diag.all()[2].message.find("snat") != std::string::npos);
  CHECK(diag.all()[2].loc.line == 77);
}

TEST_CASE("reject types become the answer's codes, and an unknown one is refused with its origin",
          "[compile]") {
  Diagnostics diag;
  const Program program = compile(test::reject_ruleset(), diag);
  REQUIRE_FALSE(diag.has_errors());
  std::vector<std::tuple<int, int, int>> answers;
  for (const auto& r : program.rules)
    if (r.op == FWE_OP_DROP) answers.emplace_back(r.reject, r.reject_code4, r.reject_code6);
  const std::vector<std::tuple<int, int, int>> expected = {{FWE_REJECT_TCP_RESET, 3, 4},
                                                           {FWE_REJECT_ICMP, 13, 1},
                                                           {FWE_REJECT_ICMP, 9, 1},
                                                           {FWE_REJECT_ICMP, 3, 4},  // the endpoint's default
                                                           {FWE_REJECT_TCP_RESET, 3, 4}};
  CHECK(answers == expected);
  CHECK(program.text().find("reject tcp-reset, else icmp 3/3 icmp6 1/4") != std::string::npos);

  ir::Ruleset unknown = test::reject_ruleset();
  unknown.chains["in"].rules[1].action.reject_with = "icmp-bogus";
  Diagnostics refused;
  compile(unknown, refused);
  REQUIRE(refused.error_count() == 1);
  CHECK(refused.all()[0].message.find("unknown reject type 'icmp-bogus'") != std::string::npos);
  CHECK(refused.all()[0].loc.line == 2);
}

TEST_CASE("a ruleset beyond the rule limit is refused", "[compile]") {
  ir::Ruleset rs = test::sample_ruleset();
  auto& rules = rs.chains["in-tail"].rules;
  rules.resize(FWE_MAX_RULES, rules.front());
  Diagnostics diag;
  compile(rs, diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all()[0].message.find(std::to_string(FWE_MAX_RULES)) != std::string::npos);
}

TEST_CASE("more policy rules than the origins kept are refused, however few eBPF rules they make",
          "[compile]") {
  ir::Ruleset rs = test::large_address_run_ruleset(FWE_MAX_WHERES + 1, 22);
  for (auto& [name, set] : rs.sets) set.cidrs.clear();  // members have a limit of their own
  Diagnostics diag;
  const Program program = compile(rs, diag);
  CHECK(program.rules.size() < 10);  // one run
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all()[0].message.find(std::to_string(FWE_MAX_WHERES)) != std::string::npos);
}

TEST_CASE("more address-run members than the run maps hold are refused", "[compile]") {
  Diagnostics diag;
  compile(test::large_address_run_ruleset(FWE_MAX_RUN_MEMBERS / 2 + 1, 22, 2), diag);  // two ports each
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all()[0].message.find(std::to_string(FWE_MAX_RUN_MEMBERS)) != std::string::npos);
}

TEST_CASE("more address matches than a rule holds are refused", "[compile]") {
  ir::Ruleset rs = test::sample_ruleset();
  auto& match = rs.chains["in-tail"].rules[0].match;
  match.src_addr = {{false, "admins"}, {true, "blocked"}, {false, "web"}};
  Diagnostics diag;
  compile(rs, diag);
  REQUIRE(diag.error_count() == 1);
  CHECK(diag.all()[0].loc.line == 50);
  CHECK_FALSE(diag.all()[0].hint.empty());
}

TEST_CASE("a CIDR written in place is a set of its own, one for all the rules that write it", "[compile]") {
  ir::Ruleset rs = test::sample_ruleset();
  const ir::Cidr net = *ir::parse_cidr("198.18.0.0/15");
  auto& rules = rs.chains["in-tail"].rules;
  REQUIRE(rules.size() >= 2);
  for (std::size_t i = 0; i < 2; ++i) rules[i].match.src_addr = {ir::AddrMatch(true, net)};
  Diagnostics diag;
  const Program program = compile(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  const auto named = std::count_if(program.sets.begin(), program.sets.end(),
                                   [](const CompiledSet& set) { return set.name == "198.18.0.0/15"; });
  CHECK(named == 1);
  const auto it = std::find_if(program.sets.begin(), program.sets.end(),
                               [](const CompiledSet& set) { return set.name == "198.18.0.0/15"; });
  REQUIRE(it != program.sets.end());
  CHECK(it->cidrs == std::vector<ir::Cidr>{net});
}

TEST_CASE("an interface named with a '+' and the prefix before it are two lists", "[compile]") {
  ir::Ruleset rs = test::sample_ruleset();
  auto& rules = rs.chains["in-tail"].rules;
  REQUIRE(rules.size() >= 2);
  rules[0].match.iif = std::vector<ir::IfacePattern>{{"eth+", false}};
  rules[1].match.iif = std::vector<ir::IfacePattern>{{"eth", true}};
  Diagnostics diag;
  const Program program = compile(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  auto has = [&](const ir::IfacePattern& pattern) {
    return std::count(program.iface_lists.begin(), program.iface_lists.end(),
                      std::vector<ir::IfacePattern>{pattern});
  };
  CHECK(has({"eth+", false}) == 1);
  CHECK(has({"eth", true}) == 1);
}

TEST_CASE("rate limits become a token bucket in nanoseconds", "[compile]") {
  ir::Ruleset rs = test::sample_ruleset();
  rs.chains["in-tail"].rules[0].match.rate_limit = ir::RateLimit{20, "second", 0};
  rs.chains["in-tail"].rules[1].match.rate_limit = ir::RateLimit{0, "second", 0};
  Diagnostics diag;
  Program program = compile(rs, diag);
  REQUIRE(diag.error_count() == 1);  // a rate of 0
  CHECK(diag.all()[0].loc.line == 51);
  bool found = false;
  for (const auto& r : program.rules)
    if (r.limit_cost_ns) {
      found = true;
      CHECK(r.limit_cost_ns == 50'000'000);
      CHECK(r.limit_burst_ns == 5 * 50'000'000ull);
    }
  CHECK(found);
}

TEST_CASE("a rate limit whose bucket would hold more than 2^62 ns of credit is refused", "[compile]") {
  ir::Ruleset rs = test::sample_ruleset();
  rs.chains["in-tail"].rules[0].match.rate_limit = ir::RateLimit{1, "day", 213504};  // wraps 64 bits
  rs.chains["in-tail"].rules[1].match.rate_limit = ir::RateLimit{1, "day", 53376};   // just over 2^62
  rs.chains["in-tail"].rules[2].match.rate_limit = ir::RateLimit{1, "day", 53375};   // just under
  Diagnostics diag;
  compile(rs, diag);
  REQUIRE(diag.error_count() == 2);
  CHECK(diag.all()[0].loc.line == 50);
  CHECK(diag.all()[0].message.find("burst of 213504") != std::string::npos);
  CHECK(diag.all()[1].loc.line == 51);
}

TEST_CASE("consecutive single-port rules become one indexed run", "[compile]") {
  Diagnostics diag;
  Program program = compile(test::port_run_ruleset(), diag);
  REQUIRE_FALSE(diag.has_errors());
  INFO(program.text());
  std::size_t heads = 0;
  for (std::uint32_t pc = 0; pc < program.rules.size(); ++pc) {
    const fwe_rule& r = program.rules[pc];
    if (r.flags & FWE_F_RUN_HEAD) {
      ++heads;
      CHECK(r.run_end - pc == 24);  // both chains: the chain boundary is no jump
    }
    if (r.flags & FWE_F_IN_RUN) CHECK(r.next_same > pc);
  }
  CHECK(heads == 1);
  CHECK(program.port_index.size() == 5);
  CHECK(compile(test::sample_ruleset(), diag).port_index.empty());  // no run of 8 there
}

TEST_CASE("rules that differ only in address, protocol and port become one address-run lookup", "[compile]") {
  Diagnostics diag;
  Program program = compile(test::address_run_ruleset(), diag);
  REQUIRE_FALSE(diag.has_errors());
  INFO(program.text());
  std::vector<std::pair<std::uint32_t, std::uint32_t>> runs;  // (pc, run id)
  for (std::uint32_t pc = 0; pc < program.rules.size(); ++pc) {
    const fwe_rule& r = program.rules[pc];
    if (!(r.flags & FWE_F_ADDR_RUN)) continue;
    runs.emplace_back(pc, r.run_id);
    CHECK(r.rule_index == -1);  // its members count
    CHECK_FALSE(r.src[0].used);
    CHECK_FALSE(r.dport[0].used);
  }
  // runs#0..7, runs#9..12 (drop), runs#13..16 (destinations), inner#0..3; outer#0..3 is a run of its own:
  // the inlined jump goes to its first rule, so inner's run cannot take it.
  REQUIRE(runs.size() == 5);
  CHECK(program.rules[runs[1].first].op == FWE_OP_DROP);
  // Each run's members of a family have one prefix length, so they are exact (hash) members.
  CHECK(program.rules[runs[0].first].run_flags == (FWE_RUN_EXACT4 | FWE_RUN_EXACT6));
  CHECK(program.rules[runs[0].first].run_prefix4 == 24);
  CHECK(program.rules[runs[0].first].run_prefix6 == 48);
  CHECK(program.rules[runs[2].first].run_flags == (FWE_RUN_DST | FWE_RUN_EXACT4 | FWE_RUN_NONE6));
  CHECK(program.rules[runs[2].first].run_prefix4 == 32);
  for (std::uint32_t pc = 0; pc < program.rules.size(); ++pc)
    if (program.rules[pc].flags & FWE_F_INVERT) CHECK(program.rules[pc].target == runs[4].first);
  // runs#0..7: 8 rules, one with two protocols, one with three ports: 10 IPv4 members, one IPv6.
  std::size_t run0 = 0;
  for (std::size_t i = 0; i < program.exact4.size(); ++i)
    if (ntohl(program.exact4[i].run) == runs[0].second) {
      ++run0;
      CHECK(program.exact4[i].prefixlen == 64 + 24);
      CHECK(program.exact4_members[i].rule_index < 8);
    }
  CHECK(run0 == 11);
  CHECK(program.run4.empty());
  CHECK(program.run6.empty());
  REQUIRE(program.exact6.size() == 1);
  CHECK(program.exact6_members[0].rule_index == 2);
  CHECK(program.exact6[0].prefixlen == 64 + 48);
  // Sets only runs matched on are not written; runs#8 (it broke the run) keeps its own.
  REQUIRE(program.sets.size() == 1);
  CHECK(program.sets[0].name == "r8");
  CHECK(program.text().find("run 0 exact member tcp 2003 10.0.13.0/24 -> runs#3") != std::string::npos);
}

TEST_CASE("a run whose members of a family have several prefix lengths finds them in the trie", "[compile]") {
  Diagnostics diag;
  Program program = compile(test::address_run_ruleset(true), diag);
  REQUIRE_FALSE(diag.has_errors());
  INFO(program.text());
  const auto head = std::find_if(program.rules.begin(), program.rules.end(),
                                 [](const fwe_rule& r) { return (r.flags & FWE_F_ADDR_RUN) != 0; });
  REQUIRE(head != program.rules.end());
  CHECK(head->run_flags == 0);  // runs#0..7: IPv4 /24 and /25, IPv6 /48 and /64
  std::set<std::uint32_t> prefixes4, prefixes6;
  for (const auto& key : program.run4)
    if (ntohl(key.run) == head->run_id) prefixes4.insert(key.prefixlen - 64);
  for (const auto& key : program.run6)
    if (ntohl(key.run) == head->run_id) prefixes6.insert(key.prefixlen - 64);
  CHECK(prefixes4 == std::set<std::uint32_t>{24, 25});
  CHECK(prefixes6 == std::set<std::uint32_t>{48, 64});
  CHECK(program.text().find("run 0 member tcp 2004 10.0.14.0/25 -> runs#4") != std::string::npos);
}

TEST_CASE("rules without ports, or without protocols, form address runs keyed by what they have",
          "[compile]") {
  Diagnostics diag;
  Program program = compile(test::blocklist_ruleset(), diag);
  REQUIRE_FALSE(diag.has_errors());
  INFO(program.text());
  std::vector<std::uint32_t> flags;
  for (const auto& r : program.rules)
    if (r.flags & FWE_F_ADDR_RUN) flags.push_back(r.run_flags);
  // ICMP and TCP accepts: one run keyed by protocol; the drops of anything: one keyed by address alone.
  CHECK(flags ==
        std::vector<std::uint32_t>{FWE_RUN_ANY_PORT | FWE_RUN_EXACT4 | FWE_RUN_NONE6,
                                   FWE_RUN_ANY_PORT | FWE_RUN_ANY_PROTO | FWE_RUN_EXACT4 | FWE_RUN_NONE6});
  REQUIRE(program.exact4.size() == 14);
  CHECK(program.text().find("exact member icmp 0 10.0.90.0/24 -> block#0") != std::string::npos);
  CHECK(program.text().find("exact member any 0 10.0.80.0/24 -> block#8") != std::string::npos);
}

TEST_CASE("rpf rules carry mode and negation, and mark the program for the reverse lookup", "[compile]") {
  Diagnostics diag;
  CHECK_FALSE(compile(test::sample_ruleset(), diag).uses_rpf);
  ir::Ruleset rs = test::sample_ruleset();
  rs.chains["in-tail"].rules[0].match.rpf = ir::RpfMode::strict;
  rs.chains["in-tail"].rules[0].match.rpf_negate = true;
  rs.chains["in-tail"].rules[1].match.rpf = ir::RpfMode::loose;
  Program program = compile(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  CHECK(program.uses_rpf);
  std::size_t strict = 0, loose = 0;
  for (const auto& r : program.rules) {
    if (r.rpf_mode == FWE_RPF_STRICT) {
      ++strict;
      CHECK(r.rpf_negate == 1);
      CHECK(r.rule_index == 0);
    } else if (r.rpf_mode == FWE_RPF_LOOSE) {
      ++loose;
      CHECK(r.rpf_negate == 0);
      CHECK(r.rule_index == 1);
    }
  }
  CHECK(strict == 1);
  CHECK(loose == 1);
  CHECK(program.notes.back().text.find("forwarding") != std::string::npos);

  // The config's bit for the generation being written follows the program; the one in use stays.
  const std::uint32_t in_use = 1;  // generation 0, active, with rpf
  CHECK(generation_bits(in_use, 1, true) == 3);
  CHECK(generation_bits(in_use, 1, false) == 1);
  const std::uint32_t stale = 1;  // generation 1 active without rpf; 0's bit is left from before
  CHECK(generation_bits(stale, 0, false) == 0);
  CHECK(generation_bits(stale, 0, true) == 1);
}

TEST_CASE("set ids carry the generation", "[compile]") {
  fwe_rule r{};
  r.src[0] = {5, 1, 0, {}};
  r.dst[1] = {7, 1, 1, {}};
  fwe_rule g = for_generation(r, 1);
  CHECK(g.src[0].set_id == ((1u << kSetIndexBits) | 5));
  CHECK(g.dst[1].set_id == ((1u << kSetIndexBits) | 7));
  CHECK(g.src[1].set_id == 0);
}

TEST_CASE("a set keeps the origin of the first rule matching on it, for the kernel's refusal", "[compile]") {
  Diagnostics diag;
  Program program = compile(test::sample_ruleset(), diag);
  REQUIRE_FALSE(diag.has_errors());
  REQUIRE_FALSE(program.sets.empty());
  CHECK(program.sets[0].name == "blocked");  // raw-in#1, in the first stage
  CHECK(program.sets[0].used_at == "sample.yaml:11:1");
}

TEST_CASE("capabilities name what compile accepts", "[compile]") {
  EbpfBackend backend(PluginContext{"x"});
  auto caps = backend.capabilities();
  CHECK(caps.supports(ir::Stage::forward));
  CHECK_FALSE(caps.supports(ir::Stage::dnat));
  CHECK(caps.supports(ir::MatchKind::icmp));
  CHECK(caps.supports(ir::MatchKind::rate_limit));
  CHECK(caps.supports(ir::MatchKind::rpf));
  CHECK_FALSE(caps.supports(ir::MatchKind::pkt_type));
  CHECK_FALSE(caps.supports(ir::MatchKind::ct_status));
  CHECK_FALSE(caps.supports(ir::ActionKind::masquerade));
  Diagnostics diag;
  auto plan = backend.render(test::sample_ruleset(), diag);
  REQUIRE(plan);
  CHECK(plan->text({}).find("stage input") != std::string::npos);
}

TEST_CASE("a log rule's listing shows the prefix the map holds", "[compile]") {
  ir::Ruleset rs = test::sample_ruleset();
  ir::Rule log;
  log.action.kind = ir::ActionKind::log;
  log.action.log_prefix = "say \"no\" \\ " + std::string(60, 'x');
  rs.chains.begin()->second.rules.insert(rs.chains.begin()->second.rules.begin(), log);
  Diagnostics diag;
  const Program program = compile(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  CHECK(program.listing().find("\"say 'no' / " + std::string(FWE_LOG_PREFIX_LEN - 1 - 11, 'x') + "\"") !=
        std::string::npos);
}

TEST_CASE("a set used early does not change the listing's lines of the rules after it", "[compile]") {
  auto lines_of = [](const ir::Ruleset& rs) {
    Diagnostics diag;
    Program program = compile(rs, diag);
    REQUIRE_FALSE(diag.has_errors());
    std::multiset<std::string> lines;
    std::istringstream text(program.listing());
    for (std::string line; std::getline(text, line);) lines.insert(line.substr(0, line.find('\t')));
    return lines;
  };
  ir::Ruleset rs = test::sample_ruleset();
  const auto before = lines_of(rs);
  // A chain of one rule from a new set, first in the input stage's first group: its set comes first.
  ir::Group* first = nullptr;
  for (auto& section : rs.stage(ir::Stage::input).sections)
    for (auto& endpoint : section.endpoints)
      if (!first && !endpoint.groups.empty()) first = &endpoint.groups.front();
  REQUIRE(first);
  rs.sets["aaa-early"] = {{*ir::parse_cidr("198.51.100.0/24")}, {}};
  ir::Rule early;
  early.match.src_addr.push_back({false, "aaa-early"});
  early.action.kind = ir::ActionKind::accept;
  rs.chains["aaa-early"] = {"aaa-early", {early}, {}};
  first->chains.insert(first->chains.begin(), "aaa-early");
  const auto after = lines_of(rs);
  std::vector<std::string> gone, added;
  std::set_difference(before.begin(), before.end(), after.begin(), after.end(), std::back_inserter(gone));
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(added));
  INFO("gone:\n" << Catch::Detail::stringify(gone) << "\nadded:\n" << Catch::Detail::stringify(added));
  CHECK(gone.size() == 1);   // the input stage's order line
  CHECK(added.size() == 3);  // that line, the new set's line and the new rule's line
}

TEST_CASE("a bridge hands up on the port the link-local groups it does not forward", "[compile]") {
  netlink::BridgeOptions bridge;
  std::uint16_t port = 0;
  // STP off: the Bridge Group Address is forwarded, MAC Control dropped, every other group stays.
  CHECK(groups_up_on_port(bridge, port) == 0xfffc);
  bridge.stp = true;
  CHECK(groups_up_on_port(bridge, port) == 0xfffd);
  bridge.group_fwd_mask = 0x4000;  // LLDP forwarded by the bridge
  port = 0x0009;                   // 802.1X's group, and the Bridge Group Address, by the port
  CHECK(groups_up_on_port(bridge, port) == 0xbff4);
  // 802.1ad: forwarded only where the bridge filters VLANs, and never its own STP group.
  bridge.group_fwd_mask = port = 0;
  bridge.vlan_protocol = 0x88a8;
  CHECK(groups_up_on_port(bridge, port) == 0xfffd);
  bridge.vlan_filtering = true;
  CHECK(groups_up_on_port(bridge, port) == 0x47fd);
  bridge.group_address_last = 0x0d;
  CHECK(groups_up_on_port(bridge, port) == 0x67fc);
}

TEST_CASE("the backend option xdp names interfaces or is off, and anything else is an error at its value") {
  auto render = [](const std::string& value) {
    PluginContext context{"test"};
    context.backend_options["xdp"] = value;
    EbpfBackend backend{context};
    Diagnostics diag;
    auto plan = backend.render(test::sample_ruleset(), diag);
    return plan ? dynamic_cast<const EbpfPlan&>(*plan).program() : Program{};
  };
  CHECK(render("off").xdp_interfaces.empty());
  CHECK_FALSE(render("off").xdp);
  const Program named = render("eth0,eno+");
  REQUIRE(named.xdp_interfaces.size() == 2);
  CHECK(named.xdp_interfaces[1] == ir::IfacePattern{"eno", true});
  CHECK(named.xdp);
  for (const char* bad : {"on", "", "eth0,", "eth0,,eth1", "a/b", "+", "sixteen-chars-xx", "eth 0"}) {
    INFO(bad);
    PluginContext context{"test"};
    context.backend_options["xdp"] = bad;
    EbpfBackend backend{context};
    Diagnostics diag;
    CHECK_FALSE(backend.render(test::sample_ruleset(), diag));
    CHECK(diag.has_errors());
  }
}

TEST_CASE(
    "fwe_xdp judges an untracked-in stage that drops and judges at XDP as at tc, and a note says why not "
    "else") {
  Diagnostics diag;
  ir::Ruleset rs = test::sample_ruleset();
  Program program = compile(rs, diag);
  allow_xdp(program);
  CHECK(program.xdp);
  CHECK(program.listing().find(listing::kXdpLine) != std::string::npos);

  // XDP has no skb mark: a mark match anywhere in the stage keeps it off, named in a note.
  rs.chains.at("raw-in").rules[2].match.mark_value = 1;
  program = compile(rs, diag);
  allow_xdp(program);
  CHECK_FALSE(program.xdp);
  REQUIRE_FALSE(program.notes.empty());
  CHECK(program.notes.back().text.find("raw-in#2") != std::string::npos);
  CHECK(program.notes.back().text.find("uses the mark") != std::string::npos);
  CHECK(program.listing().find(listing::kXdpLine) == std::string::npos);

  // Nothing to drop: no program at XDP.
  rs = test::sample_ruleset();
  for (auto& rule : rs.chains.at("raw-in").rules)
    if (rule.action.kind == ir::ActionKind::drop) rule.action.kind = ir::ActionKind::notrack;
  program = compile(rs, diag);
  allow_xdp(program);
  CHECK_FALSE(program.xdp);
  CHECK(program.notes.back().text.find("drops nothing") != std::string::npos);
  CHECK(program.notes.back().text.find("passes every packet on to tc") != std::string::npos);
  CHECK_FALSE(diag.has_errors());
}
