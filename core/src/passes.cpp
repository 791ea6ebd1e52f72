// passes.cpp - the core passes between frontends and backends (see passes.hpp).
#include "fwengine/passes.hpp"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <string_view>
#include <type_traits>
#include <unordered_set>

#include "fwengine/plugin.hpp"
#include "fwengine/trace.hpp"

namespace fwe::passes {

using namespace fwe::ir;

namespace {

__extension__ typedef unsigned __int128 u128;

// An address as a number in its family's width, so CIDRs become closed intervals.
u128 to_number(const IpAddr& a) {
  u128 n = 0;
  for (std::size_t i = 0; i < a.width() / 8; ++i) n = (n << 8) | a.bytes[i];
  return n;
}

IpAddr from_number(u128 n, Family family) {
  IpAddr a;
  a.family = family;
  for (std::size_t i = a.width() / 8; i-- > 0;) {
    a.bytes[i] = static_cast<std::uint8_t>(n & 0xff);
    n >>= 8;
  }
  return a;
}

// The last address of the block of 2^bits addresses starting at lo.
u128 block_last(u128 lo, std::size_t bits) {
  return bits == 128 ? ~u128{0} : lo + ((u128{1} << bits) - 1);
}
bool aligned(u128 lo, std::size_t bits) {
  return bits == 128 ? lo == 0 : (lo & ((u128{1} << bits) - 1)) == 0;
}

// The fewest CIDRs that cover exactly [lo, hi]: at each step the largest aligned block that fits.
void cover(u128 lo, u128 hi, Family family, std::vector<Cidr>& out) {
  const std::size_t width = family == Family::ipv4 ? 32 : 128;
  while (true) {
    std::size_t bits = 0;
    while (bits < width && aligned(lo, bits + 1) && block_last(lo, bits + 1) <= hi) ++bits;
    out.push_back({from_number(lo, family), static_cast<std::uint8_t>(width - bits)});
    u128 last = block_last(lo, bits);
    if (last >= hi) return;
    lo = last + 1;
  }
}

void normalise_cidrs(SlimVector<Cidr>& cidrs) {
  std::vector<Cidr> out;
  for (Family family : {Family::ipv4, Family::ipv6}) {
    std::vector<std::pair<u128, u128>> ranges;
    for (const auto& c : cidrs)
      if (c.addr.family == family)
        ranges.emplace_back(to_number(c.addr), block_last(to_number(c.addr), c.addr.width() - c.prefix));
    std::sort(ranges.begin(), ranges.end());
    std::vector<std::pair<u128, u128>> merged;
    for (const auto& r : ranges) {
      if (!merged.empty() && (merged.back().second == ~u128{0} || r.first <= merged.back().second + 1)) {
        merged.back().second = std::max(merged.back().second, r.second);
      } else {
        merged.push_back(r);
      }
    }
    for (const auto& [lo, hi] : merged) cover(lo, hi, family, out);
  }
  cidrs = SlimVector<Cidr>(out.begin(), out.end());
}

void normalise_ports(PortSet& ports) {
  std::sort(ports.begin(), ports.end());
  PortSet merged;
  for (const auto& r : ports) {
    if (!merged.empty() && static_cast<unsigned>(r.lo) <= static_cast<unsigned>(merged.back().hi) + 1)
      merged.back().hi = std::max(merged.back().hi, r.hi);
    else
      merged.push_back(r);
  }
  ports = std::move(merged);
}

std::string hex(std::uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%x", value);
  return text;
}

template <typename F>
void for_each_rule(Ruleset& rs, F&& f) {
  for (auto& [name, chain] : rs.chains)
    for (auto& rule : chain.rules) f(chain, rule);
}

template <typename F>
void for_each_endpoint(const Ruleset& rs, F&& f) {
  for (std::size_t s = 0; s < kStageCount; ++s)
    for (const auto& section : rs.stages[s].sections)
      for (const auto& ep : section.endpoints) f(static_cast<Stage>(s), ep);
}

// For every chain, the stages from which it can be reached (through groups, failsafe and jumps).
// Each (chain, stage) is visited once, whatever the depth it is first reached at (a cut at a depth lost
// the chains below one reached deep first and shallow later), from a list rather than by recursion.
std::map<std::string, std::set<Stage>> reachability(const Ruleset& rs) {
  std::map<std::string, std::set<Stage>> stages_of;
  std::vector<std::pair<const std::string*, Stage>> to_visit;
  auto reach = [&](const std::string& name, Stage st) {
    if (stages_of[name].insert(st).second) to_visit.emplace_back(&name, st);
  };
  for_each_endpoint(rs, [&](Stage st, const Endpoint& ep) {
    if (!ep.failsafe_chain.empty()) reach(ep.failsafe_chain, st);
    for (const auto& g : ep.groups)
      for (const auto& c : g.chains) reach(c, st);
  });
  while (!to_visit.empty()) {
    const auto [name, st] = to_visit.back();
    to_visit.pop_back();
    if (const Chain* c = rs.find_chain(*name))
      for (const auto& r : c->rules)
        if (r.action.kind == ActionKind::jump) reach(r.action.target, st);
  }
  return stages_of;
}

SourceLoc loc_of(const Origin& o) {
  return o.loc;
}

bool before_routing(Stage s) {
  return s == Stage::untracked_in || s == Stage::prednat || s == Stage::dnat;
}

// Stages of the host's own packets, before any routing back in: they have no input interface.
bool from_the_host(Stage s) {
  return s == Stage::untracked_out || s == Stage::dnat_out || s == Stage::output;
}

// Stages whose packets came in on an interface (and are not NATed there): where rpf can be checked.
bool has_input_interface(Stage s) {
  return s == Stage::untracked_in || s == Stage::prednat || s == Stage::input || s == Stage::forward;
}

// Why a ct-status match can never hold in a stage, if it cannot. NAT stages see only a connection's
// first packet, and before their own rewrite; its status holds only what earlier NAT stages did.
std::optional<std::string> ct_status_never_holds(const std::vector<CtStatus>& statuses, Stage st) {
  if (is_untracked(st)) return "conntrack has not seen the packet yet";
  if (st == Stage::dnat || st == Stage::dnat_out) return "nothing has NATed the connection before this stage";
  bool only_snat =
      std::all_of(statuses.begin(), statuses.end(), [](CtStatus s) { return s == CtStatus::snat; });
  if (st == Stage::snat && only_snat) return "the connection is source-NATed only by this stage";
  return std::nullopt;
}

// An interface match that no packet of the chain's stages can meet (a chain used in several stages may
// mean it for the others). Negated, it always holds: the kernel and trace compare an empty name.
void warn_unmatchable_interfaces(const Chain& chain, const std::set<Stage>& stages, Diagnostics& diag) {
  const bool no_iif = std::all_of(stages.begin(), stages.end(), from_the_host);
  const bool no_oif = stages == std::set<Stage>{Stage::input};
  if (!no_iif && !no_oif) return;
  for (const auto& r : chain.rules) {
    if (no_iif && r.match.iif && !r.match.iif_negate)
      diag.warning(loc_of(r.origin),
                   "iif never matches in chain '" + chain.name +
                       "': it is used only where the host sends packets, which have no input interface",
                   "match oif, or move the rule to a chain of input or forward");
    if (no_oif && r.match.oif && !r.match.oif_negate)
      diag.warning(loc_of(r.origin),
                   "oif never matches in chain '" + chain.name +
                       "': it is used only in input, whose packets have no output interface",
                   "match iif, or move the rule to a chain of forward or output");
  }
}

}  // namespace

void normalise(Ruleset& rs) {
  for (auto& [name, set] : rs.sets) normalise_cidrs(set.cidrs);
  for_each_rule(rs, [](Chain&, Rule& rule) {
    for (auto& m : rule.match.src_port) normalise_ports(m.ports);
    for (auto& m : rule.match.dst_port) normalise_ports(m.ports);
    for (auto& m : rule.match.ct_orig_dport) normalise_ports(m.ports);
    // NAT to an address rewrites packets of that address's family only.
    if (rule.action.nat_addr && rule.match.family == Family::any)
      rule.match.family = rule.action.nat_addr->family;
  });
}

void verify(const Ruleset& rs, Diagnostics& diag) {
  auto check_set = [&](const std::string& set, const Origin& o, std::string_view what) {
    if (!rs.find_set(set))
      diag.error(loc_of(o), std::string(what) + " refers to unknown address set '" + set + "'");
  };
  // A value bit outside the mask is tested or set differently by each backend, and a reserved bit is
  // a backend's own mark.
  auto check_mark = [&](std::uint32_t value, std::uint32_t mask, std::string_view what, const Origin& o) {
    if (value & ~mask)
      diag.error(loc_of(o),
                 std::string(what) + " value " + hex(value) + " has bits outside its mask " + hex(mask),
                 "clear them from the value, or widen the mask");
    else if (value & kReservedMarkBits)
      diag.error(loc_of(o),
                 std::string(what) + " value " + hex(value) + " uses the bits " + hex(kReservedMarkBits) +
                     ", which the backends keep for their own marks",
                 "use the lower 28 bits (" + hex(~kReservedMarkBits) + ")");
  };
  // A name is written in the kernel's listings, in the log and in what migrate writes, each on one line.
  auto check_name = [&](std::string_view what, const std::string& name, const Origin& o) {
    if (has_line_breaking_character(name))
      diag.error(
          loc_of(o),
          std::string(what) + " name '" + on_one_line(name) + "' has a control or line separator character",
          "name it with printable characters");
  };
  for (const auto& [name, set] : rs.sets) check_name("set", name, set.origin);
  for (const auto& [name, chain] : rs.chains) {
    check_name("chain", name, chain.origin);
    // inject_failsafe makes these chains; one of the policy's would be replaced, or run as the failsafe.
    if (name == kFailsafeIn || name == kFailsafeOut || name == kFailsafeUntrackedIn ||
        name == kFailsafeUntrackedOut)
      diag.error(loc_of(chain.origin), "the chain name '" + name + "' is fwengine's own: its failsafe rules",
                 "give the chain another name");
    for (const auto& rule : chain.rules) {
      for (const auto* side : {&rule.match.src_addr, &rule.match.dst_addr})
        for (const auto& m : *side)
          if (!m.in_place()) check_set(m.set_name, rule.origin, "rule");
      if (rule.action.kind == ActionKind::jump && !rs.find_chain(rule.action.target))
        diag.error(loc_of(rule.origin), "jump to unknown chain '" + rule.action.target + "'");
      // The kernel's log lines are one line each: iptables refuses a newline, nft would cut the text, and
      // the journal and syslog readers break a line at NEL or U+2028 too.
      if (has_line_breaking_character(rule.action.log_prefix))
        diag.error(loc_of(rule.origin),
                   "the log prefix has a control or line separator character (a newline, a tab, U+2028, ...)",
                   "write the prefix on one line, of printable characters");
      if (rule.match.mark_value)
        check_mark(*rule.match.mark_value, rule.match.mark_mask, "mark", rule.origin);
      if (rule.action.kind == ActionKind::set_mark)
        check_mark(rule.action.mark_value, rule.action.mark_mask, "set-mark", rule.origin);
      if (rule.action.nat_addr && rule.match.family != Family::any &&
          rule.match.family != rule.action.nat_addr->family)
        diag.error(loc_of(rule.origin),
                   "the rule's packets are " + std::string(to_string(rule.match.family)) +
                       " but it NATs to " + to_string(*rule.action.nat_addr),
                   "NAT to an address of the rule's family");
      for (const auto* ports : {&rule.match.src_port, &rule.match.dst_port, &rule.match.ct_orig_dport})
        for (const auto& pm : *ports)
          for (const auto& r : pm.ports)
            if (r.lo > r.hi)
              diag.error(loc_of(rule.origin),
                         "port range " + std::to_string(r.lo) + "-" + std::to_string(r.hi) + " is empty",
                         "write the lower port first");
    }
  }
  for_each_endpoint(rs, [&](Stage st, const Endpoint& ep) {
    check_name("endpoint", ep.name, ep.origin);
    for (const auto& g : ep.groups) check_name("group", g.name, g.origin);
    if (ep.match.oif && before_routing(st))
      diag.error(loc_of(ep.origin),
                 "endpoint " + ep.name + " classifies by oif in stage " + std::string(to_string(st)) +
                     ", before routing has chosen one",
                 "classify by iif in this stage");
    if (ep.match.iif && from_the_host(st))
      diag.warning(loc_of(ep.origin),
                   "endpoint " + ep.name + " classifies by iif in stage " + std::string(to_string(st)) +
                       ", whose packets the host sends: they have no input interface, so it never matches",
                   "classify by oif in this stage");
    if (ep.match.oif && st == Stage::input)
      diag.warning(loc_of(ep.origin),
                   "endpoint " + ep.name +
                       " classifies by oif in stage input, whose packets the host receives: they have no "
                       "output interface, so it never matches",
                   "classify by iif in this stage");
    if (ep.match.src_set) check_set(*ep.match.src_set, ep.origin, "endpoint " + ep.name);
    if (ep.match.dst_set) check_set(*ep.match.dst_set, ep.origin, "endpoint " + ep.name);
    for (const auto& g : ep.groups)
      for (const auto& c : g.chains)
        if (!rs.find_chain(c)) diag.error(loc_of(g.origin), "group refers to unknown chain '" + c + "'");
  });

  // Jump cycles: the kernel refuses loops, and the evaluator would have to cut them.
  std::map<std::string, int> state;  // 1 = on the stack, 2 = done
  std::function<void(const Chain&)> dfs = [&](const Chain& c) {
    state[c.name] = 1;
    for (const auto& r : c.rules) {
      if (r.action.kind != ActionKind::jump) continue;
      const Chain* t = rs.find_chain(r.action.target);
      if (!t) continue;
      if (state[t->name] == 1)
        diag.error(loc_of(r.origin), "jump to '" + t->name + "' makes a loop",
                   "chains may not jump back to a caller");
      else if (state[t->name] == 0)
        dfs(*t);
    }
    state[c.name] = 2;
  };
  for (const auto& [name, chain] : rs.chains)
    if (state[name] == 0) dfs(chain);

  // Actions only where the kernel can do them.
  for (const auto& [name, stages] : reachability(rs)) {
    const Chain* c = rs.find_chain(name);
    if (!c) continue;
    warn_unmatchable_interfaces(*c, stages, diag);
    for (const auto& r : c->rules) {
      for (Stage st : stages) {
        auto k = r.action.kind;
        bool ok = true;
        std::string need;
        if (k == ActionKind::dnat || k == ActionKind::redirect)
          ok = st == Stage::dnat || st == Stage::dnat_out, need = "dnat or dnat-out";
        if (k == ActionKind::snat || k == ActionKind::masquerade) ok = st == Stage::snat, need = "snat";
        if (k == ActionKind::notrack) ok = is_untracked(st), need = "untracked-in or untracked-out";
        // After routing, where the route's MTU is known and before the SYN leaves.
        if (k == ActionKind::tcp_mss_clamp)
          ok = st == Stage::forward || st == Stage::output, need = "forward or output";
        if (r.match.ct_status) {
          if (auto why = ct_status_never_holds(*r.match.ct_status, st)) {
            diag.error(loc_of(r.origin),
                       "ct-status cannot be matched in stage " + std::string(to_string(st)) + ": " + *why,
                       "match the conntrack status in prednat, input, forward, output or (dnat only) snat");
            break;
          }
        }
        if (r.match.rpf && !has_input_interface(st)) {
          diag.error(loc_of(r.origin),
                     "rpf cannot be matched in stage " + std::string(to_string(st)) +
                         ": the reverse-path check needs the interface the packet came in on",
                     "match rpf in untracked-in, prednat, input or forward");
          break;
        }
        if (r.match.oif && before_routing(st)) {
          diag.error(loc_of(r.origin),
                     "oif cannot be matched in stage " + std::string(to_string(st)) +
                         ": the output interface is not known before routing",
                     "match the output interface in forward, output or snat");
          break;
        }
        if (!ok) {
          diag.error(loc_of(r.origin),
                     std::string(to_string(k)) + " cannot be used in stage " + std::string(to_string(st)),
                     "move the rule to a chain used in stage " + need);
          break;
        }
      }
    }
  }
}

void inject_failsafe(Ruleset& rs) {
  const auto& fs = rs.failsafe;
  // A failsafe entry's net is its rule's address match; the family follows from it.
  auto net_match = [](const FailsafeEntry& e) -> AddrMatches {
    if (!e.net) return {};
    return {AddrMatch(false, *e.net)};
  };
  auto make_rule = [&](const FailsafeEntry& e, bool reverse, bool net_is_source) {
    Rule r;
    r.origin = e.origin;
    r.match.protocols = std::vector<std::uint8_t>{e.protocol};
    PortMatch pm{false, {{e.port, e.port}}};
    (reverse ? r.match.src_port : r.match.dst_port).push_back(pm);
    (net_is_source ? r.match.src_addr : r.match.dst_addr) = net_match(e);
    r.action.kind = ActionKind::accept;
    return r;
  };
  auto build = [&](std::string_view name, const std::vector<FailsafeEntry>& forward,
                   bool forward_net_is_source, const std::vector<FailsafeEntry>* reversed) {
    Chain c{std::string(name), {}, {}};
    for (const auto& e : forward) c.rules.push_back(make_rule(e, false, forward_net_is_source));
    if (reversed)
      for (const auto& e : *reversed) c.rules.push_back(make_rule(e, true, forward_net_is_source));
    if (!c.rules.empty()) rs.chains[c.name] = std::move(c);
  };

  bool wanted[kStageCount] = {};
  for_each_endpoint(rs, [&](Stage st, const Endpoint& ep) { wanted[index(st)] |= ep.failsafe; });
  if (wanted[index(Stage::prednat)] || wanted[index(Stage::input)])
    build(kFailsafeIn, fs.inbound, true, nullptr);
  if (wanted[index(Stage::output)]) build(kFailsafeOut, fs.outbound, false, nullptr);
  if (wanted[index(Stage::untracked_in)]) build(kFailsafeUntrackedIn, fs.inbound, true, &fs.outbound);
  if (wanted[index(Stage::untracked_out)]) build(kFailsafeUntrackedOut, fs.outbound, false, &fs.inbound);

  for (std::size_t s = 0; s < kStageCount; ++s) {
    std::string_view chain;
    switch (static_cast<Stage>(s)) {
      case Stage::untracked_in:
        chain = kFailsafeUntrackedIn;
        break;
      case Stage::untracked_out:
        chain = kFailsafeUntrackedOut;
        break;
      case Stage::prednat:
      case Stage::input:
        chain = kFailsafeIn;
        break;
      case Stage::output:
        chain = kFailsafeOut;
        break;
      default:
        break;
    }
    for (auto& section : rs.stages[s].sections)
      for (auto& ep : section.endpoints)
        ep.failsafe_chain =
            ep.failsafe && !chain.empty() && rs.find_chain(chain) ? std::string(chain) : std::string{};
  }
}

void optimise(Ruleset& rs) {
  // Identical sets become one, so backends load each list of addresses once: each is renamed to the
  // first (by name) with the same addresses. Sets are grouped by a hash of their addresses rather than
  // sorted by them: a policy of 50,000 rules has 50,000 inline sets, and sorting compared their CIDR
  // lists a million times.
  using Entry = std::pair<const std::string, AddrSet>;
  static_assert(std::has_unique_object_representations_v<Cidr>, "a CIDR's bytes are its value");
  std::vector<const Entry*> by_name;
  std::vector<std::pair<std::size_t, std::size_t>> by_hash;  // (hash of the addresses, index in by_name)
  by_name.reserve(rs.sets.size());
  by_hash.reserve(rs.sets.size());
  for (const auto& entry : rs.sets) {
    const auto& cidrs = entry.second.cidrs;
    std::string_view bytes(reinterpret_cast<const char*>(cidrs.data()), cidrs.size() * sizeof(Cidr));
    by_hash.emplace_back(std::hash<std::string_view>{}(bytes), by_name.size());
    by_name.push_back(&entry);
  }
  std::sort(by_hash.begin(), by_hash.end());
  std::map<std::string, SharedString> rename;  // the rules renamed to one set share its name's block
  std::vector<const Entry*> firsts;            // the distinct address lists among one hash's sets, by name
  for (std::size_t i = 0; i < by_hash.size(); ++i) {
    if (i == 0 || by_hash[i].first != by_hash[i - 1].first) firsts.clear();
    const Entry* entry = by_name[by_hash[i].second];
    auto same = std::find_if(firsts.begin(), firsts.end(),
                             [&](const Entry* first) { return first->second.cidrs == entry->second.cidrs; });
    if (same != firsts.end())
      rename[entry->first] = (*same)->first;
    else
      firsts.push_back(entry);
  }
  auto renamed = [&]<typename Name>(Name& n) {
    if (auto it = rename.find(n); it != rename.end()) n = it->second;
  };
  for_each_rule(rs, [&](Chain&, Rule& r) {
    for (auto* side : {&r.match.src_addr, &r.match.dst_addr})
      for (auto& m : *side)
        if (!m.in_place()) renamed(m.set_name);
  });
  for (auto& def : rs.stages)
    for (auto& section : def.sections)
      for (auto& ep : section.endpoints) {
        if (ep.match.src_set) renamed(*ep.match.src_set);
        if (ep.match.dst_set) renamed(*ep.match.dst_set);
      }
  for (const auto& [from, to] : rename) rs.sets.erase(from);

  // Chains nothing reaches, and sets nothing uses, are not loaded.
  auto reach = reachability(rs);
  for (auto it = rs.chains.begin(); it != rs.chains.end();)
    it = reach.count(it->first) ? std::next(it) : rs.chains.erase(it);
  // Views of the names the rules hold; they stay put while only sets are erased.
  std::unordered_set<std::string_view> used;
  for_each_rule(rs, [&](Chain&, Rule& r) {
    for (auto* side : {&r.match.src_addr, &r.match.dst_addr})
      for (auto& m : *side)
        if (!m.in_place()) used.insert(m.set_name);
  });
  for_each_endpoint(rs, [&](Stage, const Endpoint& ep) {
    if (ep.match.src_set) used.insert(*ep.match.src_set);
    if (ep.match.dst_set) used.insert(*ep.match.dst_set);
  });
  for (auto it = rs.sets.begin(); it != rs.sets.end();)
    it = used.contains(it->first) ? std::next(it) : rs.sets.erase(it);
}

void check_capabilities(const Ruleset& rs, const Capabilities& caps, const std::string& backend,
                        Diagnostics& diag) {
  for (std::size_t s = 0; s < kStageCount; ++s) {
    auto st = static_cast<Stage>(s);
    if (!rs.stages[s].empty() && !caps.supports(st)) {
      SourceLoc loc;
      const auto& sec = rs.stages[s].sections.front();
      if (!sec.endpoints.empty()) loc = sec.endpoints.front().origin.loc;
      diag.error(loc, "backend '" + backend + "' cannot realise stage " + std::string(to_string(st)),
                 "choose another --backend");
    }
  }
  auto refuse = [&](const Rule& r, std::string_view what) {
    // Without a line of the input, the frontend made the rule itself: no change of the input avoids it.
    const bool built_in = r.origin.loc.line == 0;
    diag.error(r.origin.loc,
               "backend '" + backend + "' cannot do " + std::string(what) +
                   (r.origin.policy.empty() ? "" : " (in " + r.origin.policy + ")"),
               built_in ? "the " + (rs.frontend.empty() ? std::string("input's") : rs.frontend) +
                              " frontend adds this rule to every policy: choose another --backend"
                        : "choose another --backend or change the rule");
  };
  for (const auto& [name, chain] : rs.chains) {
    for (const auto& r : chain.rules) {
      if (!caps.supports(r.action.kind)) refuse(r, "action " + std::string(to_string(r.action.kind)));
      if (const auto& prefix = r.action.log_prefix;
          caps.log_prefix_max && prefix.size() > caps.log_prefix_max)
        diag.warning(r.origin.loc,
                     "the log prefix has " + std::to_string(prefix.size()) + " bytes; backend '" + backend +
                         "' writes at most " + std::to_string(caps.log_prefix_max) + " ('" +
                         kernel_log_prefix(prefix, caps.log_prefix_max) + "')",
                     "shorten the prefix");
      const Match& m = r.match;
      const std::pair<bool, MatchKind> used[] = {
          {m.iif.has_value(), MatchKind::iif},
          {m.oif.has_value(), MatchKind::oif},
          {m.family != Family::any, MatchKind::family},
          {m.protocols.has_value(), MatchKind::protocol},
          {!m.src_addr.empty(), MatchKind::src_addr},
          {!m.dst_addr.empty(), MatchKind::dst_addr},
          {!m.src_port.empty(), MatchKind::src_port},
          {!m.dst_port.empty(), MatchKind::dst_port},
          {m.icmp.has_value(), MatchKind::icmp},
          {m.ct_states.has_value(), MatchKind::ct_state},
          {m.src_mac.has_value(), MatchKind::src_mac},
          {m.pkt_type.has_value(), MatchKind::pkt_type},
          {m.mark_value.has_value(), MatchKind::mark},
          {m.rate_limit.has_value(), MatchKind::rate_limit},
          {m.ct_status.has_value(), MatchKind::ct_status},
          {!m.ct_orig_dport.empty(), MatchKind::ct_orig_dport},
          {m.rpf.has_value(), MatchKind::rpf},
      };
      static_assert(std::size(used) == kMatchKindCount, "every match kind is checked against the backend");
      for (const auto& [present, kind] : used)
        if (present && !caps.supports(kind)) refuse(r, "match " + std::string(to_string(kind)));
    }
  }
}

void run_all(Ruleset& rs, Diagnostics& diag) {
  normalise(rs);
  verify(rs, diag);
  if (diag.has_errors()) return;
  inject_failsafe(rs);
  optimise(rs);
}

}  // namespace fwe::passes
