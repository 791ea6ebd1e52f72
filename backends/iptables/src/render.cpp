// render.cpp - IR -> iptables model, per family, in a layout modelled on Felix's:
//
//   <built-in chain> -j fwe-<stage>        one hook per stage, first rule of the built-in chain
//   fwe-<stage>      clears our transient mark bits, then per section: -j fwe-d-<section> (a section that
//                    honours allow instead sets the accept bit when the allow bit is set); finally
//                    accept bit -> fwe-accepted (clear, ACCEPT), else return to the built-in chain
//   fwe-d-...        dispatch: one rule per endpoint classifier, -g fwe-e-<endpoint>; the first wins
//   fwe-e-...        endpoint: clear transients (after an earlier section); conntrack prelude;
//                    failsafe chain; groups (each IR chain jumped while the pass bit is clear,
//                    returning as soon as the done bit is set); the group's on_end; the default verdict
//   fwe-c-<chain>    one per IR chain and table; accept/allow/pass `-g fwe-accept|fwe-allow|fwe-pass`,
//                    helpers that set mark bits and return to the chain that jumped; after every jump a
//                    rule returns while the done or pass bit is set. In stages of one section, accept
//                    goes to fwe-accepted at once (accept_target).
//
// drop and reject are terminal, so only accept, allow and pass travel back as mark bits (model.hpp).
#include "render.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string_view>

#include "fwengine/set_index.hpp"

namespace fwe::iptables {

using namespace fwe::ir;

namespace {

constexpr std::size_t kInlineCidrs = 4;  // more addresses than this go into an ipset
// Merging runs of rules into hash:net,port lookups: shorter runs stay rules; a rule has at most this
// many members, and a run's set at most kMaxSetMembers (a change of one rule re-creates its run's set).
constexpr std::size_t kMinRun = 4;
constexpr std::size_t kMaxMembersPerRule = 64;
constexpr std::size_t kMaxSetMembers = 65536;
constexpr std::size_t kMultiportSlots = 15;  // multiport's limit; a range takes two

const std::set<std::uint8_t> kPortProtocols = {6, 17, 132, 136, 33};  // TCP, UDP, SCTP, UDPLite, DCCP
const std::set<std::uint8_t> kNatPortProtocols = {6, 17, 132, 33};    // what NAT port options accept
// What an ipset of hash:net,port tells apart (any other protocol is port 0 there).
const std::set<std::uint8_t> kIpsetPortProtocols = {6, 17, 132, 136};

struct Place {
  std::string_view table, builtin, abbrev;
};

Place place_of(Stage s) {
  switch (s) {
    case Stage::untracked_in:
      return {"raw", "PREROUTING", "ui"};
    case Stage::untracked_out:
      return {"raw", "OUTPUT", "uo"};
    case Stage::prednat:
      return {"mangle", "PREROUTING", "pre"};
    case Stage::dnat:
      return {"nat", "PREROUTING", "dn"};
    case Stage::input:
      return {"filter", "INPUT", "in"};
    case Stage::forward:
      return {"filter", "FORWARD", "fw"};
    case Stage::dnat_out:
      return {"nat", "OUTPUT", "dno"};
    case Stage::output:
      return {"filter", "OUTPUT", "out"};
    case Stage::snat:
      return {"nat", "POSTROUTING", "sn"};
  }
  return {"filter", "INPUT", "in"};
}

// The mac match only loads in hooks that have a source MAC.
bool has_source_mac(Stage s) {
  return s != Stage::untracked_out && s != Stage::dnat_out && s != Stage::output && s != Stage::snat;
}

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", v);
  return buf;
}

std::string mark_match(std::uint32_t value, std::uint32_t mask, bool negate = false) {
  return std::string("-m mark ") + (negate ? "! " : "") + "--mark " + hex(value) + "/" + hex(mask);
}
std::string set_mark(std::uint32_t value, std::uint32_t mask) {
  return "-j MARK --set-xmark " + hex(value) + "/" + hex(mask);
}

// As iptables-save prints it: /etc/protocols first, then iptables' own names, else the number.
std::string lookup_protocol(std::uint8_t p) {
  if (auto name = protocol_file_name(p); !name.empty()) return std::string(name);
  switch (p) {
    case 6:
      return "tcp";
    case 17:
      return "udp";
    case 1:
      return "icmp";
    case 58:
      return "ipv6-icmp";
    case 132:
      return "sctp";
    case 136:
      return "udplite";
    case 33:
      return "dccp";
    case 50:
      return "esp";
    case 51:
      return "ah";
    default:
      return std::to_string(p);
  }
}

// Each number's name made once.
const std::string& protocol_text(std::uint8_t p) {
  static const std::array<std::string, 256> kNames = [] {
    std::array<std::string, 256> names;
    for (unsigned n = 0; n < names.size(); ++n) names[n] = lookup_protocol(static_cast<std::uint8_t>(n));
    return names;
  }();
  return kNames[p];
}

std::string cidr_text(const Cidr& c) {
  return to_string(c.addr) + "/" + std::to_string(c.prefix);
}
// ipset save prints single hosts without their prefix.
std::string member_text(const Cidr& c) {
  return c.prefix == c.addr.width() ? to_string(c.addr) : cidr_text(c);
}

constexpr std::size_t kMaxIfaceName = 15;  // IFNAMSIZ less its NUL

// A prefix as long as the longest name Linux allows matches that name alone; iptables has no room for
// its '+' (the word is at most 15 characters), so it is written as the name.
std::string iface_text(const IfacePattern& p) {
  return p.name + (p.prefix && p.name.size() != kMaxIfaceName ? "+" : "");
}

std::string sanitise(std::string_view text, std::string_view keep) {
  std::string out(text);
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && keep.find(c) == std::string_view::npos) c = '_';
  return out;
}

// prefix + readable when it fits and needs no escaping, else a shortened form with a hash of it.
std::string short_name(std::string_view prefix, std::string_view readable, std::size_t max) {
  std::string clean = sanitise(readable, "_.-");
  std::string full = std::string(prefix) + clean;
  if (full.size() <= max && clean == readable) return full;
  std::size_t keep = max - prefix.size() - 9;
  return std::string(prefix) + clean.substr(0, keep) + "_" + hash16(readable).substr(0, 8);
}

// One rule's options before the target, in the order iptables-save prints them.
struct Spec {
  std::string src, dst, iif, oif, proto;
  std::vector<std::string> matches;

  std::string text() const {
    std::string out;
    for (const auto* part : {&src, &dst, &iif, &oif, &proto})
      if (!part->empty()) out += (out.empty() ? "" : " ") + *part;
    for (const auto& m : matches) out += (out.empty() ? "" : " ") + m;
    return out;
  }
};
using Specs = std::vector<Spec>;  // alternatives: the rule matches when any of them does

// What the rules of a run share (their other matches, target and directions) as text; the forms made
// from one rest share one.
using Shape = std::shared_ptr<const std::string>;
bool same_shape(const Shape& a, const Shape& b) {
  return a == b || (a && b && *a == *b);
}

void expand(Specs& specs, const std::vector<std::string>& alternatives, std::string Spec::*field) {
  Specs out;
  for (const auto& s : specs)
    for (const auto& alt : alternatives) {
      Spec copy = s;
      copy.*field = alt;
      out.push_back(std::move(copy));
    }
  specs = std::move(out);
}

void expand_match(Specs& specs, const std::vector<std::string>& alternatives) {
  Specs out;
  for (const auto& s : specs)
    for (const auto& alt : alternatives) {
      Spec copy = s;
      copy.matches.push_back(alt);
      out.push_back(std::move(copy));
    }
  specs = std::move(out);
}

void add_match(Specs& specs, const std::string& match) {
  for (auto& s : specs) s.matches.push_back(match);
}

// A port set as multiport lists of at most 15 slots.
std::vector<std::string> port_chunks(const PortSet& ports) {
  std::vector<std::string> chunks;
  std::string current;
  std::size_t used = 0;
  for (const auto& r : ports) {
    std::size_t need = r.lo == r.hi ? 1 : 2;
    if (used + need > kMultiportSlots) {
      chunks.push_back(current);
      current.clear();
      used = 0;
    }
    current += (current.empty() ? "" : ",") + std::to_string(r.lo) +
               (r.lo == r.hi ? "" : ":" + std::to_string(r.hi));
    used += need;
  }
  if (!current.empty()) chunks.push_back(current);
  return chunks;
}

constexpr std::uint32_t kLimitScale = 10000;     // XT_LIMIT_SCALE
constexpr std::uint32_t kMaxLimitBurst = 10000;  // what the limit match takes
constexpr std::uint32_t kDefaultLimitBurst = 5;

// The interval the limit match keeps for a rate, in 1/10000 s; none when it refuses the rate (a unit it
// does not know, zero, or so fast that the interval is 0).
std::optional<std::uint32_t> limit_interval(const RateLimit& limit) {
  static const std::map<std::string, std::uint32_t> kSeconds = {
      {"second", 1}, {"minute", 60}, {"hour", 3600}, {"day", 86400}};
  auto unit = kSeconds.find(limit.unit);
  if (unit == kSeconds.end() || limit.rate == 0) return std::nullopt;
  const std::uint32_t interval = kLimitScale * unit->second / limit.rate;
  if (interval == 0) return std::nullopt;
  return interval;
}

// The rate as iptables-save prints it back: the kernel keeps an interval, and the printer picks the
// unit, so 60/minute comes back as 1/sec.
std::string limit_rate(std::uint32_t interval) {
  static const std::pair<std::string_view, std::uint32_t> kUnits[] = {{"day", kLimitScale * 86400},
                                                                      {"hour", kLimitScale * 3600},
                                                                      {"min", kLimitScale * 60},
                                                                      {"sec", kLimitScale}};
  std::size_t i = 1;
  for (; i < std::size(kUnits); ++i)
    if (interval > kUnits[i].second || kUnits[i].second / interval < kUnits[i].second % interval) break;
  return std::to_string(kUnits[i - 1].second / interval) + "/" + std::string(kUnits[i - 1].first);
}

std::string nat_ports(const PortRange& r) {
  return std::to_string(r.lo) + (r.lo == r.hi ? "" : "-" + std::to_string(r.hi));
}

enum class Helper { accept, allow, pass, accepted };

class FamilyRenderer {
 public:
  FamilyRenderer(const Ruleset& rs, const ir::SetIndex& set_index, Diagnostics& diag,
                 std::set<std::string>& reported, IpFamily family, std::map<std::string, SetDef>& sets,
                 stamps::Stamper& stamper)
      : rs_(rs),
        set_index_(set_index),
        diag_(diag),
        reported_(reported),
        family_(family),
        sets_(sets),
        stamper_(stamper) {
    compute_reach();
    for (const auto& def : rs.stages)
      for (const auto& section : def.sections) honour_allow_ |= section.honour_allow;
  }

  std::vector<TableDef> run() {
    for (std::size_t s = 0; s < kStageCount; ++s) stage(static_cast<Stage>(s));
    std::vector<TableDef> out;
    for (auto name : kTableOrder)
      if (auto it = tables_.find(std::string(name)); it != tables_.end())
        out.push_back(std::move(it->second.def));
    return out;
  }

 private:
  struct Table {
    TableDef def;
    std::map<std::string, std::size_t> index;  // chain name -> def.chains
    std::set<std::string> ir_chains;           // IR chains already rendered here
    std::map<std::string, Shape> pure_shapes;  // IR chain -> pure_shape()
  };

  // ---- diagnostics ------------------------------------------------------------------------------
  void error(const Origin& o, const std::string& message, const std::string& hint) {
    ++reports_;
    std::string key = std::to_string(o.loc.file) + ":" + std::to_string(o.loc.line) + ":" +
                      std::to_string(o.loc.col) + message;
    if (reported_.insert(key).second) diag_.error(o.loc, message, hint);
  }
  void warning(const Origin& o, const std::string& message, const std::string& hint) {
    ++reports_;
    std::string key = "w" + std::to_string(o.loc.file) + ":" + std::to_string(o.loc.line) + message;
    if (reported_.insert(key).second) diag_.warning(o.loc, message, hint);
  }

  // A rule's origin stamp (fwengine/stamps.hpp): its line counts from its policy's first line.
  std::string where(const Origin& o) const { return stamper_.stamp(o); }

  // For every IR chain, the stages it can be reached from (groups, failsafe, jumps).
  void compute_reach() {
    std::function<void(const std::string&, Stage, std::size_t)> visit = [&](const std::string& name, Stage st,
                                                                            std::size_t depth) {
      if (depth > 64 || !reach_[name].insert(st).second) return;
      if (const Chain* c = rs_.find_chain(name))
        for (const auto& r : c->rules)
          if (r.action.kind == ActionKind::jump) visit(r.action.target, st, depth + 1);
    };
    for (std::size_t s = 0; s < kStageCount; ++s)
      for (const auto& section : rs_.stages[s].sections)
        for (const auto& ep : section.endpoints) {
          if (!ep.failsafe_chain.empty()) {
            visit(ep.failsafe_chain, static_cast<Stage>(s), 0);
            ++references_[ep.failsafe_chain];
          }
          for (const auto& g : ep.groups)
            for (const auto& c : g.chains) {
              visit(c, static_cast<Stage>(s), 0);
              ++references_[c];
            }
        }
    for (const auto& [name, chain] : rs_.chains)
      for (const auto& r : chain.rules)
        if (r.action.kind == ActionKind::jump) ++references_[r.action.target];
  }

  // ---- tables and chains ------------------------------------------------------------------------
  Table& table(std::string_view name) {
    auto [it, inserted] = tables_.try_emplace(std::string(name));
    if (inserted) it->second.def.name = std::string(name);
    return it->second;
  }

  bool has_chain(const Table& t, const std::string& name) const { return t.index.count(name) > 0; }

  void add_chain(Table& t, const std::string& name) {
    t.index[name] = t.def.chains.size();
    t.def.chains.push_back({name, {}});
  }

  // A name not yet used in the table, derived from readable.
  std::string unique_chain(Table& t, std::string_view prefix, const std::string& readable) {
    std::string name = short_name(prefix, readable, kMaxChainName);
    for (int n = 2; has_chain(t, name); ++n)
      name = short_name(prefix, readable + "#" + std::to_string(n), kMaxChainName);
    add_chain(t, name);
    return name;
  }

  void emit(Table& t, const std::string& chain, const Spec& spec, const std::string& target,
            const std::string& where) {
    std::string options = spec.text();
    std::string hash = content_hash(chain, options + " " + target);
    std::string comment = "-m comment --comment \"fwe:" + hash + (where.empty() ? "" : " " + where) + "\"";
    std::string rule =
        options + (options.empty() ? "" : " ") + comment + (target.empty() ? "" : " " + target);
    t.def.chains[t.index.at(chain)].rules.push_back(std::move(rule));
  }
  void emit(Table& t, const std::string& chain, const std::string& match, const std::string& target,
            const std::string& where = {}) {
    Spec spec;
    if (!match.empty()) spec.matches.push_back(match);
    emit(t, chain, spec, target, where);
  }

  std::string helper(Table& t, Helper h) {
    static const std::map<Helper, std::string> kNames = {{Helper::accept, "fwe-accept"},
                                                         {Helper::allow, "fwe-allow"},
                                                         {Helper::pass, "fwe-pass"},
                                                         {Helper::accepted, "fwe-accepted"}};
    const std::string& name = kNames.at(h);
    if (has_chain(t, name)) return name;
    add_chain(t, name);
    switch (h) {
      case Helper::accept:
        emit(t, name, "", set_mark(kAcceptMark | kDoneMark, kAcceptMark | kDoneMark));
        break;
      case Helper::allow:
        emit(t, name, "",
             set_mark(kAllowMark | kAcceptMark | kDoneMark, kAllowMark | kAcceptMark | kDoneMark));
        break;
      case Helper::pass:
        emit(t, name, "", set_mark(kPassMark, kPassMark));
        break;
      case Helper::accepted:
        emit(t, name, "", set_mark(0, kTransientMarks));
        emit(t, name, "", "-j ACCEPT");
        break;
    }
    return name;
  }

  // Where an accept in these stages goes. After an endpoint's verdict, a stage of one section only
  // jumps to fwe-accepted for the accept bit (stage()), so an accept there can go to fwe-accepted at
  // once: each accepted packet is spared fwe-accept, a RETURN per chain on its way back and the check.
  // With more sections, a later one may still decide.
  std::string accept_target(Table& t, const std::set<Stage>& stages) {
    const bool one_section = !stages.empty() && std::all_of(stages.begin(), stages.end(), [&](Stage s) {
      return rs_.stage(s).sections.size() == 1;
    });
    return "-g " + helper(t, one_section ? Helper::accepted : Helper::accept);
  }

  // ---- sets -------------------------------------------------------------------------------------
  // The match's CIDRs of this family: normalised, a set has its IPv4 ones first.
  std::span<const Cidr> cidrs_of(const AddrMatch& m, IpFamily family) const {
    if (m.in_place())
      return (m.cidr.addr.family == Family::ipv4) == (family == IpFamily::v4) ? std::span(&m.cidr, 1)
                                                                              : std::span<const Cidr>();
    const AddrSet* found = set_index_.find(m.set_name);
    if (!found) return {};
    const auto ipv6 = std::partition_point(found->cidrs.begin(), found->cidrs.end(),
                                           [](const Cidr& c) { return c.addr.family == Family::ipv4; });
    return family == IpFamily::v4 ? std::span(found->cidrs.begin(), ipv6)
                                  : std::span(ipv6, found->cidrs.end());
  }
  std::span<const Cidr> cidrs_of(const AddrMatch& m) const { return cidrs_of(m, family_); }

  std::string ipset(const std::string& set, std::span<const Cidr> cidrs) {
    std::string name = short_name(family_ == IpFamily::v4 ? "fwe-4-" : "fwe-6-", set, kMaxSetName);
    auto [it, inserted] = sets_.try_emplace(name);
    if (inserted) {
      it->second.name = name;
      it->second.family = family_;
      for (const auto& c : cidrs) it->second.members.push_back(member_text(c));
    }
    return name;
  }

  // Address matches of one side, ANDed. One of them may use the rule's own -s/-d (a positive one with a
  // few addresses, expanded into alternatives, or a negated single address); the others are ipsets.
  // False when the side can never match in this family.
  bool addresses(Specs& specs, const AddrMatches& matches, bool source) {
    std::vector<std::pair<const AddrMatch*, std::span<const Cidr>>> present;
    for (const auto& m : matches) {
      auto cidrs = cidrs_of(m);
      if (cidrs.empty()) {
        if (!m.negate) return false;  // no address of this family is in the set
        continue;                     // every address of this family is outside it
      }
      if (cidrs.front().prefix == 0) {  // the whole family (ipset cannot hold a /0)
        if (m.negate) return false;
        continue;
      }
      present.emplace_back(&m, cidrs);
    }
    auto inline_it = std::find_if(present.begin(), present.end(), [](const auto& p) {
      return !p.first->negate && p.second.size() <= kInlineCidrs;
    });
    if (inline_it == present.end())
      inline_it = std::find_if(present.begin(), present.end(),
                               [](const auto& p) { return p.first->negate && p.second.size() == 1; });
    std::string Spec::*field = source ? &Spec::src : &Spec::dst;
    const std::string flag = source ? "-s " : "-d ";
    for (auto it = present.begin(); it != present.end(); ++it) {
      const auto& [m, cidrs] = *it;
      if (it == inline_it) {
        std::vector<std::string> alternatives;
        for (const auto& c : cidrs) alternatives.push_back((m->negate ? "! " : "") + flag + cidr_text(c));
        expand(specs, alternatives, field);
      } else {
        add_match(specs, std::string("-m set ") + (m->negate ? "! " : "") + "--match-set " +
                             ipset(ir::to_string(*m), cidrs) + (source ? " src" : " dst"));
      }
    }
    return true;
  }

  // ---- rules ------------------------------------------------------------------------------------
  // What iptables-restore can read as one interface word, whatever frontend plugin made the IR: a name
  // (or prefix) of at most 15 characters, no quote, backslash, white space or control character. (A name
  // no interface can have, such as firewalld's "eth0:1", is written and never matches.)
  bool valid_iface(const IfacePattern& p, const Origin& origin) {
    const bool fits = p.name.size() <= kMaxIfaceName && (p.prefix || !p.name.empty()) &&
                      std::none_of(p.name.begin(), p.name.end(), [](char c) {
                        const auto u = static_cast<unsigned char>(c);
                        return u <= 0x20 || u == 0x7f || c == '"' || c == '\\' || c == '\'';
                      });
    if (!fits)
      error(origin, "iptables backend: bad interface name '" + iface_text(p) + "'",
            "Linux interface names have 1 to 15 characters, none of them a quote, a backslash, white space "
            "or a control character");
    return fits;
  }

  bool interfaces(Specs& specs, const ir::Boxed<std::vector<IfacePattern>>& patterns, bool negate, bool input,
                  const Origin& origin) {
    if (!patterns) return true;
    for (const auto& p : *patterns)
      if (!valid_iface(p, origin)) return false;
    const std::string flag = input ? "-i " : "-o ";
    if (negate) {
      if (patterns->size() != 1) {
        error(origin, "iptables cannot match 'none of several interfaces' in one rule",
              "split the rule into one rule per interface, or use a chain that returns for them");
        return false;
      }
      for (auto& s : specs) (input ? s.iif : s.oif) = "! " + flag + iface_text(patterns->front());
      return true;
    }
    std::vector<std::string> alternatives;
    for (const auto& p : *patterns) alternatives.push_back(flag + iface_text(p));
    if (alternatives.empty()) return false;
    expand(specs, alternatives, input ? &Spec::iif : &Spec::oif);
    return true;
  }

  // Protocols the rule matches, restricted by what its other parts need (ports, ICMP, NAT ports).
  bool protocols(Specs& specs, const Match& m, const std::optional<std::set<std::uint8_t>>& required,
                 const Origin& origin) {
    std::vector<std::uint8_t> list;
    bool negate = false;
    if (m.protocols) {
      std::set<std::uint8_t> unique(m.protocols->begin(), m.protocols->end());
      list.assign(unique.begin(), unique.end());
      negate = m.protocol_negate;
    }
    if (required) {
      std::vector<std::uint8_t> kept;
      if (!m.protocols) {
        kept.assign(required->begin(), required->end());
      } else {
        for (auto p : *required)
          if ((std::find(list.begin(), list.end(), p) != list.end()) != negate) kept.push_back(p);
      }
      list = std::move(kept);
      negate = false;
      if (list.empty()) return false;
    } else if (!m.protocols) {
      return true;
    }
    if (std::find(list.begin(), list.end(), 0) != list.end()) {
      error(origin, "iptables cannot match protocol 0: to iptables, -p 0 is every protocol",
            "leave protocol 0 out of the rule, or use the nft backend");
      return false;
    }
    if (negate) {
      if (list.size() != 1) {
        error(origin, "iptables cannot match 'none of several protocols' in one rule",
              "list the protocols the rule should match instead");
        return false;
      }
      for (auto& s : specs) s.proto = "! -p " + protocol_text(list.front());
      return true;
    }
    if (list.empty()) return false;
    std::vector<std::string> alternatives;
    for (auto p : list) alternatives.push_back("-p " + protocol_text(p));
    expand(specs, alternatives, &Spec::proto);
    return true;
  }

  static std::optional<std::set<std::uint8_t>> intersect(const std::optional<std::set<std::uint8_t>>& a,
                                                         const std::set<std::uint8_t>& b) {
    if (!a) return b;
    std::set<std::uint8_t> out;
    std::set_intersection(a->begin(), a->end(), b.begin(), b.end(), std::inserter(out, out.begin()));
    return out;
  }

  // The alternatives a rule's match expands to, or nullopt when it can never match in this family.
  std::optional<Specs> match_specs(const Rule& rule, std::optional<std::set<std::uint8_t>> required,
                                   const std::set<Stage>& stages) {
    const Match& m = rule.match;
    if (m.family == Family::ipv4 && family_ != IpFamily::v4) return std::nullopt;
    if (m.family == Family::ipv6 && family_ != IpFamily::v6) return std::nullopt;
    if (m.icmp) {
      if (m.icmp->v6 != (family_ == IpFamily::v6)) return std::nullopt;
      if (!m.icmp->type && m.icmp->negate) return std::nullopt;
      required = intersect(required, {static_cast<std::uint8_t>(m.icmp->v6 ? 58 : 1)});
    }
    if (!m.src_port.empty() || !m.dst_port.empty() || !m.ct_orig_dport.empty())
      required = intersect(required, kPortProtocols);
    if (required && required->empty()) return std::nullopt;

    Specs specs{Spec{}};
    if (!addresses(specs, m.src_addr, true) || !addresses(specs, m.dst_addr, false)) return std::nullopt;
    if (!interfaces(specs, m.iif, m.iif_negate, true, rule.origin)) return std::nullopt;
    if (!interfaces(specs, m.oif, m.oif_negate, false, rule.origin)) return std::nullopt;
    if (!protocols(specs, m, required, rule.origin)) return std::nullopt;
    for (const auto& [ports, flag] :
         {std::pair{&m.src_port, "--sports "}, std::pair{&m.dst_port, "--dports "}}) {
      for (const auto& pm : *ports) {
        auto chunks = port_chunks(pm.ports);
        if (pm.negate) {
          for (const auto& c : chunks) add_match(specs, "-m multiport ! " + std::string(flag) + c);
        } else {
          if (chunks.empty()) return std::nullopt;
          std::vector<std::string> alternatives;
          for (const auto& c : chunks) alternatives.push_back("-m multiport " + std::string(flag) + c);
          expand_match(specs, alternatives);
        }
      }
    }
    if (m.icmp && m.icmp->type) {
      if (!m.icmp->v6 && *m.icmp->type == 255) {
        error(rule.origin, "iptables cannot match ICMP type 255: its icmp match reads 255 as any type",
              "use the nft backend for this rule");
        return std::nullopt;
      }
      std::string value =
          std::to_string(*m.icmp->type) + (m.icmp->code ? "/" + std::to_string(*m.icmp->code) : "");
      add_match(specs, std::string(m.icmp->v6 ? "-m icmp6 " : "-m icmp ") + (m.icmp->negate ? "! " : "") +
                           (m.icmp->v6 ? "--icmpv6-type " : "--icmp-type ") + value);
    }
    if (m.ct_states) {
      // iptables-save's order.
      static const std::pair<CtState, std::string_view> kOrder[] = {{CtState::invalid, "INVALID"},
                                                                    {CtState::new_, "NEW"},
                                                                    {CtState::related, "RELATED"},
                                                                    {CtState::established, "ESTABLISHED"},
                                                                    {CtState::untracked, "UNTRACKED"}};
      std::string states;
      for (const auto& [state, name] : kOrder)
        if (std::find(m.ct_states->begin(), m.ct_states->end(), state) != m.ct_states->end())
          states += (states.empty() ? "" : ",") + std::string(name);
      if (states.empty()) {
        if (!m.ct_negate) return std::nullopt;
      } else {
        add_match(specs, std::string("-m conntrack ") + (m.ct_negate ? "! " : "") + "--ctstate " + states);
      }
    }
    if (m.ct_status) {
      // The conntrack match's virtual states SNAT and DNAT test the NAT status bits; a match of its own,
      // since inside one --ctstate they would be ORed with the states above. iptables-save's order.
      static const std::pair<CtStatus, std::string_view> kOrder[] = {{CtStatus::snat, "SNAT"},
                                                                     {CtStatus::dnat, "DNAT"}};
      std::string statuses;
      for (const auto& [status, name] : kOrder)
        if (std::find(m.ct_status->begin(), m.ct_status->end(), status) != m.ct_status->end())
          statuses += (statuses.empty() ? "" : ",") + std::string(name);
      if (statuses.empty()) return std::nullopt;
      add_match(specs, "-m conntrack --ctstate " + statuses);
    }
    for (const auto& pm : m.ct_orig_dport) {
      // One range per conntrack match: the match takes no lists.
      std::vector<std::string> ranges;
      for (const auto& r : pm.ports)
        ranges.push_back(std::to_string(r.lo) + (r.lo == r.hi ? "" : ":" + std::to_string(r.hi)));
      if (pm.negate) {
        for (const auto& r : ranges) add_match(specs, "-m conntrack ! --ctorigdstport " + r);
      } else {
        if (ranges.empty()) return std::nullopt;
        std::vector<std::string> alternatives;
        for (const auto& r : ranges) alternatives.push_back("-m conntrack --ctorigdstport " + r);
        expand_match(specs, alternatives);
      }
    }
    if (m.src_mac) {
      if (std::any_of(stages.begin(), stages.end(), [](Stage s) { return !has_source_mac(s); })) {
        error(rule.origin,
              "iptables cannot match a source MAC in a chain used in untracked-out, dnat-out, output or snat",
              "use the rule only in stages that receive packets (untracked-in, prednat, input, forward)");
        return std::nullopt;
      }
      if (m.src_mac_negate) {
        for (const auto& mac : *m.src_mac) add_match(specs, "-m mac ! --mac-source " + to_string(mac));
      } else {
        std::vector<std::string> alternatives;
        for (const auto& mac : *m.src_mac) alternatives.push_back("-m mac --mac-source " + to_string(mac));
        if (alternatives.empty()) return std::nullopt;
        expand_match(specs, alternatives);
      }
    }
    if (m.pkt_type) add_match(specs, "-m pkttype --pkt-type " + *m.pkt_type);
    if (m.rpf) {
      // The kernel's rpfilter match loads only in raw and mangle PREROUTING.
      auto before_routing = [](Stage s) { return s == Stage::untracked_in || s == Stage::prednat; };
      if (!std::all_of(stages.begin(), stages.end(), before_routing)) {
        std::string where;
        for (Stage s : stages)
          if (!before_routing(s)) where += (where.empty() ? "" : ", ") + std::string(ir::to_string(s));
        error(rule.origin,
              (rule.origin.policy.empty() ? std::string("this rule") : rule.origin.policy.str()) +
                  " checks the reverse path (rpf) in " + where +
                  "; iptables can check it only before routing (stages untracked-in and prednat)",
              "check it in prednat instead, or choose --backend nft");
        return std::nullopt;
      }
      // --validmark: the route lookup uses the packet's mark, as nft's does.
      add_match(specs, std::string("-m rpfilter") + (*m.rpf == ir::RpfMode::loose ? " --loose" : "") +
                           " --validmark" + (m.rpf_negate ? " --invert" : ""));
    }
    if (m.mark_value) {
      std::uint32_t mask = m.mark_mask & ~kOurMarks;
      if (*m.mark_value & m.mark_mask & kOurMarks)
        warning(rule.origin,
                "mark bits " + hex(kOurMarks) + " belong to fwengine's iptables backend; ignored here",
                "use the lower 28 bits of the packet mark");
      if (mask == 0) {
        if (m.mark_negate) return std::nullopt;
      } else {
        add_match(specs, mark_match(*m.mark_value & mask, mask, m.mark_negate));
      }
    }
    if (m.rate_limit) {
      const RateLimit& limit = *m.rate_limit;
      const std::string rate = std::to_string(limit.rate) + "/" + limit.unit;
      const std::uint32_t burst = limit.burst == 0 ? kDefaultLimitBurst : limit.burst;
      const std::optional<std::uint32_t> interval = limit_interval(limit);
      if (!interval) {
        error(rule.origin, "iptables cannot limit to " + rate,
              "use at most 10000 per second (600000 per minute, 36000000 per hour, 864000000 per day)");
        return std::nullopt;
      }
      if (burst > kMaxLimitBurst) {
        error(rule.origin, "iptables cannot take a burst of " + std::to_string(burst), "use at most 10000");
        return std::nullopt;
      }
      // The kernel turns interval * burst into credits in 32 bits (xt_limit's user2credits, times
      // HZ * CREDITS_PER_JIFFY: 38400 at most, HZ 300), and refuses or misreads a bucket past that.
      constexpr std::uint64_t kMaxBucket = 0xffffffffu / 38400 * std::uint64_t{kLimitScale};
      if (std::uint64_t{*interval} * burst > kMaxBucket) {
        error(rule.origin,
              "iptables cannot limit to " + rate + " with a burst of " + std::to_string(burst) +
                  ": the kernel's bucket would overflow",
              "raise the rate or lower the burst");
        return std::nullopt;
      }
      std::string text = "-m limit --limit " + limit_rate(*interval);
      if (burst != kDefaultLimitBurst) text += " --limit-burst " + std::to_string(burst);
      add_match(specs, text);
    }
    return specs;
  }

  // Every type but tcp-reset, which the callers give TCP alone (an ICMP type for other protocols).
  std::string reject_target(const std::string& with, const Origin& origin) {
    const Family family = family_ == IpFamily::v4 ? Family::ipv4 : Family::ipv6;
    auto reply = ir::reject_reply(with, family, 0);
    if (!reply) {
      error(origin, "iptables cannot reject with '" + with + "'",
            "use icmp-port-unreachable, tcp-reset, icmp-host-prohibited, icmp-net-prohibited or "
            "icmp-admin-prohibited");
      reply = ir::reject_reply({}, family, 0);
    }
    return "-j REJECT --reject-with " + std::string(*reply);
  }

  bool check_table(const Table& t, std::string_view what, std::initializer_list<std::string_view> tables,
                   const Origin& origin, const std::string& hint) {
    if (std::find(tables.begin(), tables.end(), t.def.name) != tables.end()) return true;
    error(origin, "iptables cannot " + std::string(what) + " in the " + t.def.name + " table", hint);
    return false;
  }

  std::string nat_address(const std::optional<IpAddr>& addr) {
    if (!addr) return {};
    return addr->family == Family::ipv6 ? "[" + to_string(*addr) + "]" : to_string(*addr);
  }

  // The rules of one IR rule appended to chain (several when its match expands to alternatives).
  void rule(Table& t, const std::string& chain, const Rule& r, std::size_t index,
            const std::set<Stage>& stages) {
    const Action& a = r.action;
    const std::string where = this->where(r.origin);
    std::optional<std::set<std::uint8_t>> required;
    const bool nat_port = (a.kind == ActionKind::dnat || a.kind == ActionKind::redirect ||
                           a.kind == ActionKind::snat || a.kind == ActionKind::masquerade) &&
                          a.nat_port;
    if (nat_port) {
      required = kNatPortProtocols;
      // The NAT targets take ports for TCP, UDP, SCTP and DCCP only: UDPLite packets would pass un-NATed.
      const auto& listed = r.match.protocols;
      const bool listed_udplite = listed && std::find(listed->begin(), listed->end(), 136) != listed->end();
      if (!listed || listed_udplite != r.match.protocol_negate) {
        error(r.origin, "iptables cannot NAT UDPLite packets to a port",
              "limit the rule to tcp, udp, sctp or dccp, or use the nft backend");
        return;
      }
    }
    if (a.kind == ActionKind::tcp_mss_clamp) required = std::set<std::uint8_t>{6};
    const Family family = family_ == IpFamily::v4 ? Family::ipv4 : Family::ipv6;
    if (a.nat_addr && a.nat_addr->family != family) return;  // NAT to the other family: not for us

    std::string target;
    bool verdict_like = true;  // ends the chain, so a packet matching two alternatives is harmless
    switch (a.kind) {
      case ActionKind::accept:
        target = accept_target(t, stages);
        break;
      case ActionKind::allow:
        target = "-g " + helper(t, Helper::allow);
        break;
      case ActionKind::pass:
        target = "-g " + helper(t, Helper::pass);
        break;
      case ActionKind::return_:
        target = "-j RETURN";
        break;
      case ActionKind::drop:
        if (!check_table(t, "drop", {"raw", "mangle", "filter"}, r.origin, "drop in another stage")) return;
        target = "-j DROP";
        break;
      case ActionKind::reject:
        if (!check_table(t, "reject", {"filter"}, r.origin,
                         "reject in input, forward or output, or use drop"))
          return;
        if (a.reject_with == "tcp-reset") {
          // TCP gets a reset, everything else the default ICMP error.
          if (auto tcp = match_specs(r, intersect(required, {6}), stages))
            for (const auto& s : *tcp) emit(t, chain, s, "-j REJECT --reject-with tcp-reset", where);
          const auto& protocols = r.match.protocols;
          bool tcp_only =
              protocols && !r.match.protocol_negate &&
              std::all_of(protocols->begin(), protocols->end(), [](std::uint8_t p) { return p == 6; });
          if (auto rest = match_specs(r, required, stages); rest && !tcp_only)
            for (const auto& s : *rest) emit(t, chain, s, reject_target({}, r.origin), where);
          return;
        }
        target = reject_target(a.reject_with, r.origin);
        break;
      case ActionKind::log: {
        const std::string prefix = ir::kernel_log_prefix(a.log_prefix, kMaxLogPrefix);
        target = "-j LOG";
        if (!prefix.empty()) target += " --log-prefix \"" + prefix + "\"";
        if (a.log_level != 4) target += " --log-level " + std::to_string(a.log_level);
        verdict_like = false;
        break;
      }
      case ActionKind::set_mark: {
        std::uint32_t mask = a.mark_mask & ~kOurMarks;
        if (a.mark_value & kOurMarks & a.mark_mask)
          warning(r.origin, "mark bits " + hex(kOurMarks) + " belong to fwengine's iptables backend; not set",
                  "use the lower 28 bits of the packet mark");
        if (mask == 0) return;
        target = set_mark(a.mark_value & mask, mask);
        break;  // setting the same mark twice is harmless
      }
      case ActionKind::notrack:
        if (!check_table(t, "notrack", {"raw"}, r.origin, "use notrack only in untracked-in/out")) return;
        target = "-j CT --notrack";
        break;
      case ActionKind::ct_helper:
        // Left out rather than refused: without it the connections the helper would relate are not
        // accepted as related, which closes, never opens, something (firewalld's services assign
        // helpers in the filter chains, where the nft backend can).
        if (t.def.name != "raw") {
          warning(r.origin,
                  "iptables assigns conntrack helpers only before conntrack: helper '" + a.target +
                      "' in the " + t.def.name +
                      " table is left out, so what it would relate is not accepted",
                  "assign it in untracked-in/out, or choose --backend nft");
          return;
        }
        // CT needs the rule's own protocol, so no fwe-a- chain; a second CT leaves the first one's helper.
        target = "-j CT --helper " + a.target;
        break;
      case ActionKind::tcp_mss_clamp:
        // TCPMSS needs the rule's own SYN match, so no fwe-a- chain; clamping twice changes nothing.
        target = "-m tcp --tcp-flags SYN,RST SYN -j TCPMSS " +
                 (a.mss ? "--set-mss " + std::to_string(a.mss) : std::string("--clamp-mss-to-pmtu"));
        break;
      case ActionKind::jump:
        target = "-j " + ir_chain(t, a.target);
        verdict_like = false;
        break;
      case ActionKind::dnat:
        if (!a.nat_addr && !a.nat_port) {
          error(r.origin, "dnat needs an address or a port", "add to: ADDRESS[:PORT]");
          return;
        }
        target = "-j DNAT --to-destination " + nat_address(a.nat_addr) +
                 (a.nat_port ? ":" + nat_ports(*a.nat_port) : "");
        break;
      case ActionKind::redirect:
        target = "-j REDIRECT" + (a.nat_port ? " --to-ports " + nat_ports(*a.nat_port) : "");
        break;
      case ActionKind::snat:
        if (!a.nat_addr) {
          error(r.origin, "iptables needs an address for snat", "add to: ADDRESS, or use masquerade");
          return;
        }
        target = "-j SNAT --to-source " + nat_address(a.nat_addr) +
                 (a.nat_port ? ":" + nat_ports(*a.nat_port) : "");
        break;
      case ActionKind::masquerade:
        target = "-j MASQUERADE" + (a.nat_port ? " --to-ports " + nat_ports(*a.nat_port) : "");
        break;
    }
    auto specs = match_specs(r, required, stages);
    if (!specs) return;
    if (specs->size() > 1 && !verdict_like) {
      // The first matching alternative runs the action once: fwe-o- tries them, fwe-a- acts.
      std::string id = hash16(t.def.name + "/" + chain + "#" + std::to_string(index));
      std::string alternatives = "fwe-o-" + id, action = "fwe-a-" + id;
      add_chain(t, alternatives);
      add_chain(t, action);
      emit(t, chain, Spec{}, "-j " + alternatives, where);
      for (const auto& s : *specs) emit(t, alternatives, s, "-g " + action, where);
      emit(t, action, Spec{}, target, where);
    } else {
      for (const auto& s : *specs) emit(t, chain, s, target, where);
    }
    if (a.kind == ActionKind::jump)
      emit(t, chain, mark_match(0, kDoneMark | kPassMark, true), "-j RETURN", where);
  }

  std::string ir_chain(Table& t, const std::string& ir_name) {
    std::string name = short_name("fwe-c-", ir_name, kMaxChainName);
    if (!t.ir_chains.insert(ir_name).second) return name;
    add_chain(t, name);
    if (const Chain* c = rs_.find_chain(ir_name)) {
      std::vector<const Rule*> rules;
      for (const auto& r : c->rules) rules.push_back(&r);
      fill_chain(t, name, ir_name, rules, stages_here(t, ir_name));
    }
    return name;
  }

  // The stages of table t an IR chain is reached from.
  std::set<Stage> stages_here(const Table& t, const std::string& ir_name) {
    std::set<Stage> here;
    for (Stage s : reach_[ir_name])
      if (place_of(s).table == t.def.name) here.insert(s);
    return here;
  }

  // Consecutive chains of a group that nothing else refers to and whose rules all merge into runs of one
  // shape are one chain: evaluating them one after the other is evaluating their rules in a row (none
  // of them returns, passes or jumps). Their runs then merge across them - a long allow list split into
  // many small chains becomes a few set lookups - and a packet makes one jump instead of one per chain.
  // Returns the fused chain's name.
  std::string fused_chain(Table& t, const std::vector<std::string>& parts) {
    const std::string id = parts.front() + ".." + parts.back();
    std::string name = short_name("fwe-c-", id, kMaxChainName);
    if (!t.ir_chains.insert(id).second) return name;
    add_chain(t, name);
    std::vector<const Rule*> rules;
    for (const auto& part : parts)
      for (const auto& r : rs_.find_chain(part)->rules) rules.push_back(&r);
    fill_chain(t, name, id, rules, stages_here(t, parts.front()));
    return name;
  }

  // The shape all rules of a chain merge into in table t, if they do and only one group refers to it.
  Shape pure_shape(Table& t, const std::string& ir_name) {
    auto [it, inserted] = t.pure_shapes.try_emplace(ir_name);
    if (!inserted) return it->second;
    const Chain* c = rs_.find_chain(ir_name);
    if (!c || references_[ir_name] != 1) return nullptr;
    const std::set<Stage> here = stages_here(t, ir_name);
    Shape shape;
    for (const auto& r : c->rules) {
      if (absent(r)) continue;
      auto form = run_form(t, r, here);
      if (!form || (shape && !same_shape(form->shape, shape))) return t.pure_shapes[ir_name] = nullptr;
      shape = std::move(form->shape);
    }
    return t.pure_shapes[ir_name] = shape;
  }

  // A group's chains as they are jumped to: runs of chains of one pure shape fused (at least two).
  std::vector<std::string> group_targets(Table& t, const Group& group) {
    std::vector<std::string> out;
    const auto& names = group.chains;
    for (std::size_t i = 0; i < names.size();) {
      if (!rs_.find_chain(names[i])) {
        ++i;
        continue;
      }
      std::size_t end = i + 1;
      if (Shape shape = pure_shape(t, names[i]))
        while (end < names.size() && same_shape(pure_shape(t, names[end]), shape)) ++end;
      if (end - i >= 2)
        out.push_back(fused_chain(t, {names.begin() + static_cast<std::ptrdiff_t>(i),
                                      names.begin() + static_cast<std::ptrdiff_t>(end)}));
      else
        out.push_back(ir_chain(t, names[i]));
      i = end;
    }
    return out;
  }

  // The rules of a chain (or of chains fused into one), runs of at least kMinRun as set lookups.
  // A run keeps its head's form and, of the rules after it, only their members and places: the whole
  // forms of a fused chain of 50,000 rules, made first, held 40 MB.
  void fill_chain(Table& t, const std::string& name, const std::string& id,
                  const std::vector<const Rule*>& rules, const std::set<Stage>& here) {
    auto form_of = [&](std::size_t k) { return run_form(t, *rules[k], here); };
    std::size_t runs = 0;
    std::optional<std::optional<RunForm>> following;  // rules[i]'s form, made when it ended a run
    for (std::size_t i = 0; i < rules.size();) {
      if (!following && elsewhere(*rules[i])) {
        ++i;
        continue;
      }
      std::optional<RunForm> head = following ? std::move(*following) : form_of(i);
      following.reset();
      std::size_t end = i + 1;
      RunMembers run;
      if (head) {
        run.add(*head, i);
        // Checked whenever the run doubled: a rule that overlaps an earlier one ends it, and the forms
        // made past that rule (no more than the run holds, and a few) are made again for the next run.
        RunOverlaps overlaps;
        auto cut_at_overlap = [&] {
          const std::optional<std::size_t> at = overlaps.first(run);
          if (!at) return false;
          end = run.places[*at];
          run.truncate(*at);
          following.reset();
          return true;
        };
        bool cut = false;
        for (std::size_t window = kMinRun; end < rules.size(); ++end) {
          if (absent(*rules[end])) continue;
          std::optional<RunForm> next = form_of(end);
          if (!next || !same_shape(next->shape, head->shape) ||
              run.members.size() + next->members.size() > kMaxSetMembers) {
            following = std::move(next);
            break;
          }
          run.add(*next, end);
          if (run.rules() == window) {
            window *= 2;
            if ((cut = cut_at_overlap())) break;
          }
        }
        if (!cut) cut_at_overlap();
      }
      if (run.rules() < kMinRun) {
        for (std::size_t k = i; k < end; ++k)
          if (!elsewhere(*rules[k])) rule(t, name, *rules[k], k, here);
      } else {
        emit_run(t, name, id + "-" + std::to_string(runs++), *head, run, rules);
      }
      i = end;
    }
  }

  // ---- runs of rules as one hash:net,port lookup --------------------------------------------------
  // A rule that differs from its neighbours only in one address match, one port match and the
  // protocols: its members (address, protocol, port) go into a set, and the run's one rule looks the
  // packet up in it. Every member has a counter and its rule's origin, so `status` still shows hits
  // per source rule; the merged rule's own counter is left without origin.
  struct RunMember {
    Cidr cidr;
    std::uint8_t protocol;
    std::uint16_t port;
  };
  struct RunForm {
    std::shared_ptr<const Spec> rest;  // the rule's other matches
    std::string target;                // its verdict
    Shape shape;                       // rest, target and directions: equal for all rules of a run
    std::string directions;
    std::vector<RunMember> members;
  };
  // What a run keeps of its rules: their members, one after another, and their places in the chain
  // (their stamps are made as the set takes them). Each rule's own members and stamp held 8 MB for a
  // fused chain of 50,000 rules.
  struct RunMembers {
    std::vector<RunMember> members;
    std::vector<std::uint32_t> member_ends;  // by rule, where its members end
    std::vector<std::uint32_t> places;       // by rule, its index in the chain's rules
    void add(const RunForm& form, std::size_t place) {
      members.insert(members.end(), form.members.begin(), form.members.end());
      member_ends.push_back(static_cast<std::uint32_t>(members.size()));
      places.push_back(static_cast<std::uint32_t>(place));
    }
    std::size_t rules() const { return member_ends.size(); }
    // Keeps the first `kept` rules, at least the head (which overlaps no earlier rule).
    void truncate(std::size_t kept) {
      members.resize(member_ends[kept - 1]);
      member_ends.resize(kept);
      places.resize(kept);
    }
  };

  // A packet meets at most one member of a run: no member overlaps one of an earlier rule (same protocol
  // and port, one address inside the other), so the order inside the run is free and each hit counts for
  // the rule trace would name. A run is extended first and checked after, a window of rules at a time:
  // its members sorted by protocol, port and address, a network and those inside it follow one another,
  // and one pass finds the first rule that overlaps an earlier one. (A tree of the members, checked as
  // each came, took 48 bytes a member.)
  class RunOverlaps {
   public:
    // The place in the run of the first rule with a member that overlaps a member of an earlier rule.
    std::optional<std::size_t> first(const RunMembers& run) {
      const std::vector<RunMember>& members = run.members;
      const std::size_t checked = sorted_.size();
      if (checked == members.size()) return std::nullopt;  // no rule since the last check, which found none
      for (std::size_t k = checked; k < members.size(); ++k) sorted_.push_back(static_cast<std::uint32_t>(k));
      auto by_key = [&](std::uint32_t a, std::uint32_t b) { return before(members[a], members[b]); };
      const auto new_ones = sorted_.begin() + static_cast<std::ptrdiff_t>(checked);
      std::sort(new_ones, sorted_.end(), by_key);
      std::inplace_merge(sorted_.begin(), new_ones, sorted_.end(), by_key);
      auto rule_of = [&](std::uint32_t member) {
        return static_cast<std::size_t>(
            std::upper_bound(run.member_ends.begin(), run.member_ends.end(), member) -
            run.member_ends.begin());
      };
      std::optional<std::size_t> earliest;
      // The members whose networks hold the member at hand, each inside (or equal to) the one before,
      // with the two lowest rules among them and those before it: the member overlaps the lower one
      // that is not its own rule.
      struct Enclosing {
        std::uint32_t member;
        std::size_t lowest, second = kNoRule;
      };
      std::vector<Enclosing> enclosing;
      for (std::uint32_t k : sorted_) {
        const RunMember& m = members[k];
        while (!enclosing.empty()) {
          const RunMember& outer = members[enclosing.back().member];
          if (outer.protocol == m.protocol && outer.port == m.port && contains(outer.cidr, m.cidr.addr))
            break;
          enclosing.pop_back();
        }
        const std::size_t rule = rule_of(k);
        Enclosing here{k, rule};
        if (!enclosing.empty()) {
          const Enclosing& outer = enclosing.back();
          const std::size_t other = outer.lowest != rule ? outer.lowest : outer.second;
          if (other != kNoRule && (!earliest || std::max(rule, other) < *earliest))
            earliest = std::max(rule, other);
          // The two lowest rules of outer's and this member's, told apart.
          std::size_t candidates[] = {outer.lowest, outer.second, rule};
          std::sort(std::begin(candidates), std::end(candidates));
          here.lowest = candidates[0];
          here.second = candidates[1] != candidates[0] ? candidates[1] : candidates[2];
        }
        enclosing.push_back(here);
      }
      return earliest;
    }

   private:
    static constexpr std::size_t kNoRule = std::numeric_limits<std::size_t>::max();
    // By protocol, port, address and prefix (a run is of one family).
    static bool before(const RunMember& x, const RunMember& y) {
      if (x.protocol != y.protocol) return x.protocol < y.protocol;
      if (x.port != y.port) return x.port < y.port;
      if (int order =
              std::memcmp(x.cidr.addr.bytes.data(), y.cidr.addr.bytes.data(), x.cidr.addr.bytes.size()))
        return order < 0;
      return x.cidr.prefix < y.cidr.prefix;
    }
    std::vector<std::uint32_t> sorted_;  // the members checked so far, by key
  };

  std::optional<RunForm> run_form(Table& t, const Rule& r, const std::set<Stage>& stages) {
    const Match& m = r.match;
    const ActionKind kind = r.action.kind;
    if (kind != ActionKind::accept && kind != ActionKind::allow && kind != ActionKind::drop)
      return std::nullopt;
    if (kind == ActionKind::drop && t.def.name == "nat") return std::nullopt;
    // A rate limit is a bucket of the rule's own: merged rules would share one.
    if (m.src_addr.size() + m.dst_addr.size() != 1 || m.src_port.size() + m.dst_port.size() != 1 ||
        m.protocol_negate || m.icmp || m.rate_limit || !m.ct_orig_dport.empty())
      return std::nullopt;
    const bool source_addr = !m.src_addr.empty(), source_port = !m.src_port.empty();
    const AddrMatch& am = source_addr ? m.src_addr[0] : m.dst_addr[0];
    const PortMatch& pm = source_port ? m.src_port[0] : m.dst_port[0];
    if (am.negate || pm.negate || pm.ports.empty()) return std::nullopt;
    const std::span<const Cidr> cidrs = cidrs_of(am);
    if (cidrs.empty() || std::any_of(cidrs.begin(), cidrs.end(), [](const Cidr& c) { return c.prefix == 0; }))
      return std::nullopt;
    std::vector<std::uint8_t> protocols;
    for (auto p : kPortProtocols)
      if (!m.protocols || std::find(m.protocols->begin(), m.protocols->end(), p) != m.protocols->end())
        protocols.push_back(p);
    // hash:net,port has no DCCP ports: a rule that matches them stays a rule of its own.
    if (std::any_of(protocols.begin(), protocols.end(),
                    [](std::uint8_t p) { return !kIpsetPortProtocols.count(p); }))
      return std::nullopt;
    std::size_t ports = 0;
    for (const auto& range : pm.ports) ports += static_cast<std::size_t>(range.hi - range.lo) + 1;
    if (protocols.empty() || cidrs.size() * protocols.size() * ports > kMaxMembersPerRule)
      return std::nullopt;

    const Rule rest{ir::without(m, {.protocols = true, .addresses = true, .ports = true}), r.action,
                    r.origin};
    RestMemo& prepared = rest_spec(rest, stages);
    if (!prepared.spec) return std::nullopt;
    RunForm form;
    form.rest = prepared.spec;
    form.directions = std::string(source_addr ? "src" : "dst") + (source_port ? ",src" : ",dst");
    if (prepared.table != &t || prepared.directions != form.directions) {
      prepared.table = &t;
      prepared.directions = form.directions;
      if (kind == ActionKind::drop)
        prepared.target = "-j DROP";
      else
        prepared.target =
            kind == ActionKind::accept ? accept_target(t, stages) : "-g " + helper(t, Helper::allow);
      prepared.shape =
          std::make_shared<const std::string>(prepared.text + "|" + prepared.target + "|" + form.directions);
    }
    form.target = prepared.target;
    form.shape = prepared.shape;
    for (const auto& cidr : cidrs)
      for (auto p : protocols)
        for (const auto& range : pm.ports)
          for (std::uint32_t port = range.lo; port <= range.hi; ++port)
            form.members.push_back({cidr, p, static_cast<std::uint16_t>(port)});
    return form;
  }

  // A run form's rest: its one spec and the spec's text, or no spec when it has several or reports
  // something.
  struct RestMemo {
    Match match;
    Action action;
    std::set<Stage> stages;
    std::shared_ptr<const Spec> spec;
    std::string text;
    // The target and shape its last form had, in this table and directions: most forms after it share
    // them (the action is the rest's, so only the table and directions can differ).
    const Table* table = nullptr;
    std::string directions, target;
    Shape shape;
  };
  // The rules of a run share their rest: the last one is kept, so most rules need no matching of
  // their own.
  RestMemo& rest_spec(const Rule& rest, const std::set<Stage>& stages) {
    if (rest_memo_ && rest_memo_->match == rest.match && rest_memo_->action == rest.action &&
        rest_memo_->stages == stages)
      return *rest_memo_;
    const std::size_t reports = reports_;
    auto specs = match_specs(rest, std::nullopt, stages);
    rest_memo_ = RestMemo{rest.match, rest.action, stages, nullptr, {}, nullptr, {}, {}, nullptr};
    if (reports_ == reports && specs && specs->size() == 1) {
      rest_memo_->text = specs->front().text();
      rest_memo_->spec = std::make_shared<const Spec>(std::move(specs->front()));
    }
    return *rest_memo_;
  }

  // Whether a rule can never match in this family: a positive address match without an address of it.
  bool absent(const Rule& r, IpFamily family) const {
    if (r.match.family != Family::any && (r.match.family == Family::ipv4) != (family == IpFamily::v4))
      return true;
    for (const auto* side : {&r.match.src_addr, &r.match.dst_addr})
      for (const auto& am : *side)
        if (!am.negate && cidrs_of(am, family).empty()) return true;
    return false;
  }
  bool absent(const Rule& r) const { return absent(r, family_); }
  // A rule the other family renders, and this one need not look at: rendering it here would say
  // nothing the other does not, and make nothing.
  bool elsewhere(const Rule& r) const {
    return absent(r) && !absent(r, family_ == IpFamily::v4 ? IpFamily::v6 : IpFamily::v4);
  }

  // The run's members and stamps, into the run's set.
  void emit_run(Table& t, const std::string& chain, const std::string& id, const RunForm& head,
                const RunMembers& run, const std::vector<const Rule*>& rules) {
    std::string name =
        short_name(family_ == IpFamily::v4 ? "fwe-4r-" : "fwe-6r-", t.def.name + "-" + id, kMaxSetName);
    SetDef& set = sets_[name];
    set.name = name;
    set.family = family_;
    set.type = std::string(kRunSet);
    set.members.reserve(set.members.size() + run.members.size());
    set.comments.reserve(set.comments.size() + run.members.size());
    std::size_t member = 0;
    for (std::size_t r = 0; r < run.rules(); ++r) {
      const std::string where = this->where(rules[run.places[r]]->origin);
      for (; member < run.member_ends[r]; ++member) {
        const RunMember& m = run.members[member];
        set.members.push_back(member_text(m.cidr) + "," + protocol_name(m.protocol) + ":" +
                              std::to_string(m.port));
        set.comments.push_back(where);
      }
    }
    Spec spec = *head.rest;
    spec.matches.push_back("-m set --match-set " + name + " " + head.directions);
    emit(t, chain, spec, head.target, {});
  }

  // ---- endpoints, sections, stages --------------------------------------------------------------
  void verdict(Table& t, const std::string& chain, Stage stage, const std::string& match, Verdict v,
               const std::string& reject_with, const Origin& origin) {
    const std::string where = this->where(origin);
    switch (v) {
      case Verdict::continue_:
        return;
      case Verdict::accept:
        emit(t, chain, match, accept_target(t, {stage}), where);
        return;
      case Verdict::allow:
        emit(t, chain, match, "-g " + helper(t, Helper::allow), where);
        return;
      case Verdict::drop:
        if (check_table(t, "drop", {"raw", "mangle", "filter"}, origin, "drop in another stage"))
          emit(t, chain, match, "-j DROP", where);
        return;
      case Verdict::reject:
        if (!check_table(t, "reject", {"filter"}, origin, "reject in input, forward or output, or use drop"))
          return;
        if (reject_with == "tcp-reset") {
          Spec tcp;
          tcp.proto = "-p tcp";
          if (!match.empty()) tcp.matches.push_back(match);
          emit(t, chain, tcp, "-j REJECT --reject-with tcp-reset", where);
          emit(t, chain, match, reject_target({}, origin), where);
        } else {
          emit(t, chain, match, reject_target(reject_with, origin), where);
        }
        return;
    }
  }

  std::optional<Specs> classifier(const EndpointMatch& m, Stage stage, const Origin& origin) {
    Specs specs{Spec{}};
    if ((m.iif && !valid_iface(*m.iif, origin)) || (m.oif && !valid_iface(*m.oif, origin)))
      return std::nullopt;
    if (m.iif)
      for (auto& s : specs) s.iif = "-i " + iface_text(*m.iif);
    if (m.oif)
      for (auto& s : specs) s.oif = "-o " + iface_text(*m.oif);
    if (m.src_set && !addresses(specs, {AddrMatch{false, *m.src_set}}, true)) return std::nullopt;
    if (m.dst_set && !addresses(specs, {AddrMatch{false, *m.dst_set}}, false)) return std::nullopt;
    if (m.src_mac) {
      if (!has_source_mac(stage)) {
        error(origin, "iptables cannot classify by source MAC in stage " + std::string(to_string(stage)),
              "classify by interface or address instead");
        return std::nullopt;
      }
      std::vector<std::string> alternatives;
      for (const auto& mac : *m.src_mac) alternatives.push_back("-m mac --mac-source " + to_string(mac));
      if (alternatives.empty()) return std::nullopt;
      expand_match(specs, alternatives);
    }
    return specs;
  }

  void endpoint(Table& t, const std::string& chain, Stage stage, const Endpoint& ep) {
    const std::string where = this->where(ep.origin);
    // An earlier section's endpoint may have left bits; with one section the stage chain has just
    // cleared them.
    if (rs_.stage(stage).sections.size() > 1) emit(t, chain, "", set_mark(0, kTransientMarks), where);
    // Established and invalid packets never reach the nat table, so its prelude would be dead code.
    if (!is_untracked(stage) && t.def.name != "nat" && ep.conntrack != Conntrack::none) {
      emit(t, chain, "-m conntrack --ctstate RELATED,ESTABLISHED", accept_target(t, {stage}), where);
      if (ep.conntrack == Conntrack::accept_established_drop_invalid)
        emit(t, chain, "-m conntrack --ctstate INVALID", "-j DROP", where);
    }
    if (!ep.failsafe_chain.empty() && rs_.find_chain(ep.failsafe_chain)) {
      emit(t, chain, "", "-j " + ir_chain(t, ep.failsafe_chain), where);
      emit(t, chain, mark_match(kDoneMark, kDoneMark), "-j RETURN", where);
    }
    for (std::size_t g = 0; g < ep.groups.size(); ++g) {
      const Group& group = ep.groups[g];
      const std::string group_where = this->where(group.origin);
      if (g > 0) emit(t, chain, "", set_mark(0, kPassMark), group_where);
      for (const auto& target : group_targets(t, group)) {
        emit(t, chain, mark_match(0, kPassMark), "-j " + target, group_where);
        emit(t, chain, mark_match(kDoneMark, kDoneMark), "-j RETURN", group_where);
      }
      verdict(t, chain, stage, mark_match(0, kPassMark), group.on_end, group.reject_with, group.origin);
    }
    verdict(t, chain, stage, "", ep.default_verdict, ep.reject_with, ep.origin);
  }

  // The section's dispatch chain, or empty when none of its endpoints can match in this family.
  std::string section(Table& t, Stage stage, std::size_t index, const Section& sec) {
    const Place place = place_of(stage);
    std::vector<std::pair<const Endpoint*, Specs>> matching;
    for (const auto& ep : sec.endpoints)
      if (auto specs = classifier(ep.match, stage, ep.origin)) matching.emplace_back(&ep, std::move(*specs));
    if (matching.empty()) return {};
    std::string tag = std::string(place.abbrev) + std::to_string(index);
    std::string dispatch = unique_chain(t, "fwe-d-", tag + "-" + sec.name);
    for (const auto& [ep, specs] : matching) {
      std::string chain = unique_chain(t, "fwe-e-", tag + "-" + ep->name);
      for (const auto& s : specs) emit(t, dispatch, s, "-g " + chain, where(ep->origin));
      endpoint(t, chain, stage, *ep);
    }
    return dispatch;
  }

  void stage(Stage st) {
    const StageDef& def = rs_.stage(st);
    // The first stage of every path clears the allow bit a packet may carry in from elsewhere.
    if (def.empty() && !(is_untracked(st) && honour_allow_)) return;
    const Place place = place_of(st);
    Table& t = table(place.table);
    std::string chain = std::string(kPrefix) + std::string(to_string(st));
    add_chain(t, chain);
    t.def.hooks.push_back({std::string(place.builtin), chain});
    // The nat table sees only packets conntrack tracks, and without a conntrack match somewhere nothing
    // turns conntrack on in the namespace. Untracked packets never get here: this decides nothing.
    if (place.table == "nat") emit(t, chain, "-m conntrack --ctstate UNTRACKED", "-j RETURN");
    emit(t, chain, "", set_mark(0, is_untracked(st) ? kOurMarks : kTransientMarks));
    for (std::size_t i = 0; i < def.sections.size(); ++i) {
      const Section& sec = def.sections[i];
      std::string dispatch = section(t, st, i, sec);
      if (sec.honour_allow) {
        emit(t, chain, mark_match(kAllowMark, kAllowMark), set_mark(kAcceptMark, kAcceptMark));
        if (!dispatch.empty()) emit(t, chain, mark_match(kAllowMark, kAllowMark, true), "-j " + dispatch);
      } else if (!dispatch.empty()) {
        emit(t, chain, "", "-j " + dispatch);
      }
    }
    emit(t, chain, mark_match(kAcceptMark, kAcceptMark), "-j " + helper(t, Helper::accepted));
    emit(t, chain, "", set_mark(0, kTransientMarks));
  }

  const Ruleset& rs_;
  const ir::SetIndex& set_index_;
  Diagnostics& diag_;
  std::set<std::string>& reported_;
  // Every report made, said before or not: whether matching a rule reported something, even when it
  // was said already (reported_ then stays as it was).
  std::size_t reports_ = 0;
  IpFamily family_;
  std::map<std::string, SetDef>& sets_;
  bool honour_allow_ = false;
  std::map<std::string, std::set<Stage>> reach_;
  std::map<std::string, std::size_t> references_;  // by groups, failsafe chains and jumps
  std::map<std::string, Table> tables_;
  std::optional<RestMemo> rest_memo_;  // rest_spec's last rest
  stamps::Stamper& stamper_;
};

// A chain without rules does nothing: a jump to it comes back at once. Where a family leaves a chain
// empty (an IPv4-only policy's chains in ip6tables), the chain and the jumps to it go (and the checks
// that followed them, but one), until no such chain is left, so that the family's packets do not walk
// through them. A hooked chain stays, and so
// does the target of a goto (which returns from the chain it was in).
void drop_empty_chains(std::vector<TableDef>& tables) {
  for (auto& table : tables)
    for (;;) {
      // Rules are only read when some chain is empty: most tables have none.
      std::set<std::string, std::less<>> empty;
      for (const auto& chain : table.chains)
        if (chain.rules.empty()) empty.insert(chain.name);
      for (const auto& hook : table.hooks) empty.erase(hook.target);
      if (empty.empty()) break;
      for (const auto& chain : table.chains)
        for (const auto& rule : chain.rules)
          if (auto jump = jump_of(rule); jump && jump->is_goto)
            if (auto it = empty.find(jump->target); it != empty.end()) empty.erase(it);
      if (empty.empty()) break;
      std::erase_if(table.chains, [&](const ChainDef& chain) { return empty.contains(chain.name); });
      for (auto& chain : table.chains) {
        std::erase_if(chain.rules, [&](const std::string& rule) {
          auto jump = jump_of(rule);
          return jump && !jump->is_goto && empty.contains(jump->target);
        });
        // Behind each jump of an endpoint chain, a check returns once the jumped-to chain reached a
        // verdict; where the jumps went, their checks follow one another (the same content, so the same
        // stamp, whatever their origins), and only the first can match.
        auto dead =
            std::unique(chain.rules.begin(), chain.rules.end(), [](const auto& kept, const auto& rule) {
              auto jump = jump_of(rule);
              return jump && jump->target == "RETURN" && stamp_of(rule) == stamp_of(kept);
            });
        chain.rules.erase(dead, chain.rules.end());
      }
    }
}

}  // namespace

Model render(const Ruleset& ruleset, Diagnostics& diag, bool ipv6) {
  Model model;
  model.ipv6 = ipv6;
  std::set<std::string> reported;
  std::map<std::string, SetDef> sets;
  const ir::SetIndex set_index(ruleset.sets);
  stamps::Stamper stamper(ruleset, kStampStyle);
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    if (f == IpFamily::v6 && !ipv6) continue;
    model.tables[static_cast<int>(f)] =
        FamilyRenderer(ruleset, set_index, diag, reported, f, sets, stamper).run();
    drop_empty_chains(model.tables[static_cast<int>(f)]);
  }
  for (auto& [name, set] : sets) model.sets.push_back(std::move(set));
  model.first_lines = stamper.first_lines();
  return model;
}

std::string plan_text(const Model& model, std::string_view ir_hash) {
  std::string out = "# ipset restore -exist\n" + gate_text(kGateSet, true) + ipset_text(model.sets);
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    out += f == IpFamily::v4 ? "# iptables-legacy-restore --noflush\n"
                             : "# ip6tables-legacy-restore --noflush\n";
    out += restore_text(with_meta(model, f, ir_hash, set_digests(model.sets)));
  }
  return out;
}

}  // namespace fwe::iptables
