// compile.cpp - IR -> flat rule tables (see compile.hpp for the shape).
#include "compile.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "fwengine/trace.hpp"

namespace fwe::ebpf {

using namespace fwe::ir;

namespace {

std::uint8_t ct_bit(CtState s) {
  return static_cast<std::uint8_t>(1u << static_cast<unsigned>(s));
}

// Names are written with their length: "eth+" the name and "eth" the prefix are two lists.
std::string iface_key(const std::vector<IfacePattern>& patterns) {
  std::string key;
  for (const auto& p : patterns) key += std::to_string(p.name.size()) + (p.prefix ? '+' : '=') + p.name;
  return key;
}

class Compiler {
 public:
  Compiler(const Ruleset& rs, Diagnostics& diag, Program& out) : rs_(rs), diag_(diag), out_(out) {}

  void run() {
    for (std::size_t s = 0; s < kStageCount; ++s) {
      const auto stage = static_cast<Stage>(s);
      if (rs_.stage(stage).empty()) continue;
      if (stage == Stage::dnat || stage == Stage::dnat_out || stage == Stage::snat) {
        refuse_stage(stage);
        continue;
      }
      stage_ = stage;
      const auto start = static_cast<std::uint32_t>(out_.rules.size());
      for (const auto& section : rs_.stage(stage).sections) emit_section(section);
      merge_address_runs(start);
      out_.stages[s] = {start, static_cast<std::uint32_t>(out_.rules.size()) - start};
      index_port_runs(start, here());
    }
    drop_unused_sets();
    if (out_.rules.size() > FWE_MAX_RULES)
      diag_.error(
          {},
          "the ruleset needs " + std::to_string(out_.rules.size()) + " eBPF rules, more than the " +
              std::to_string(FWE_MAX_RULES) + " the ebpf backend holds",
          "use fewer rules or jumps to shared chains (each jump is inlined), or choose --backend nft");
    if (const auto members = out_.run_members(); members > FWE_MAX_RUN_MEMBERS)
      diag_.error({},
                  "the ruleset's address runs have " + std::to_string(members) + " members, more than the " +
                      std::to_string(FWE_MAX_RUN_MEMBERS) + " the ebpf backend holds",
                  "choose --backend nft");
    if (out_.wheres.size() > FWE_MAX_WHERES)
      diag_.error({},
                  "the ruleset has " + std::to_string(out_.wheres.size()) + " rules, more than the " +
                      std::to_string(FWE_MAX_WHERES) + " the ebpf backend keeps origins of",
                  "choose --backend nft");
    if (out_.port_bitmaps.size() > FWE_MAX_PORTSETS)
      diag_.error({},
                  "the ruleset has " + std::to_string(out_.port_bitmaps.size()) +
                      " distinct multi-range port lists, more than the " + std::to_string(FWE_MAX_PORTSETS) +
                      " the ebpf backend holds",
                  "merge port lists or choose --backend nft");
    if (out_.chains.size() > FWE_MAX_CHAINS)
      diag_.error({}, "the ruleset has more than " + std::to_string(FWE_MAX_CHAINS) + " chains",
                  "choose --backend nft");
    if (address_runs_ >= (1u << kSetIndexBits))
      diag_.error({}, "the ruleset has too many address runs for the ebpf backend", "choose --backend nft");
    if (out_.sets.size() >= (1u << kSetIndexBits))
      diag_.error({}, "the ruleset has too many address sets for the ebpf backend", "choose --backend nft");
  }

 private:
  void refuse_stage(Stage stage) {
    SourceLoc loc;
    const auto& sections = rs_.stage(stage).sections;
    if (!sections.empty() && !sections.front().endpoints.empty())
      loc = sections.front().endpoints.front().origin.loc;
    diag_.error(loc,
                "the ebpf backend cannot realise stage " + std::string(to_string(stage)) + " (no NAT in tc)",
                "choose --backend nft or iptables for NAT");
  }

  // A rule that can only match packets to one destination port, and whose "no" moves on to the next rule.
  static bool single_port(const fwe_rule& r) {
    const fwe_port_match& m = r.dport[0];
    return !(r.flags & (FWE_F_INVERT | FWE_F_NEED_ALLOW)) && m.used && !m.negate &&
           m.bitmap == FWE_NO_BITMAP && m.lo == m.hi;
  }

  // Marks runs of single-port rules in [start, end) and builds their port index, so that the walk
  // goes from a run's head straight to the rules naming the packet's port.
  void index_port_runs(std::uint32_t start, std::uint32_t end) {
    std::uint32_t pc = start;
    while (pc < end) {
      std::uint32_t run_end = pc;
      while (run_end < end && single_port(out_.rules[run_end])) ++run_end;
      if (run_end - pc >= kMinPortRun) mark_run(pc, run_end);
      pc = run_end == pc ? pc + 1 : run_end;
    }
  }

  void mark_run(std::uint32_t head, std::uint32_t end) {
    const auto run_id = static_cast<std::uint32_t>(runs_++);
    fwe_rule& first = out_.rules[head];
    first.flags |= FWE_F_RUN_HEAD;
    first.run_id = run_id;
    first.run_end = end;
    std::map<std::uint16_t, std::uint32_t> last_with_port;
    for (std::uint32_t pc = head; pc < end; ++pc) {
      fwe_rule& r = out_.rules[pc];
      r.flags |= FWE_F_IN_RUN;
      r.next_same = end;
      auto [it, added] = last_with_port.try_emplace(r.dport[0].lo, pc);
      if (added) {
        out_.port_index.push_back({0, run_id, r.dport[0].lo});
        out_.port_index_first.push_back(pc);
      } else {
        out_.rules[it->second].next_same = pc;
        it->second = pc;
      }
    }
  }

  static std::vector<std::uint8_t> protocols_of(const fwe_rule& r) {
    std::vector<std::uint8_t> out;
    for (unsigned word = 0; word < 4; ++word)
      for (std::uint64_t bits = r.proto_bits[word]; bits != 0; bits &= bits - 1)
        out.push_back(static_cast<std::uint8_t>(word * 64 + static_cast<unsigned>(__builtin_ctzll(bits))));
    return out;
  }

  // How a rule can be a member of an address run (its fwe_run_flags), if it can: a plain verdict on one
  // positive address match, and either nothing else of the packet's protocol and ports, or protocols,
  // or port protocols and one destination port range; nothing that counts or changes anything per rule
  // (rate limit, mark, notrack, inversion).
  std::optional<std::uint32_t> run_shape(const fwe_rule& r) const {
    if ((r.op != FWE_OP_DONE && r.op != FWE_OP_DROP) || (r.flags & ~FWE_F_GIVE_ALLOW) != 0)
      return std::nullopt;
    if (r.limit_cost_ns || r.rule_index < 0 || r.proto_mode == FWE_TRI_NOT || r.sport[0].used ||
        r.sport[1].used || r.dport[1].used)
      return std::nullopt;
    const bool src = r.src[0].used, dst = r.dst[0].used;
    if (src == dst || r.src[1].used || r.dst[1].used) return std::nullopt;
    const fwe_addr_match& addr = src ? r.src[0] : r.dst[0];
    if (addr.negate) return std::nullopt;
    std::uint32_t flags = dst ? FWE_RUN_DST : 0;
    const fwe_port_match& port = r.dport[0];
    if (r.proto_mode == FWE_TRI_NONE) {
      if (port.used) return std::nullopt;
      flags |= FWE_RUN_ANY_PROTO | FWE_RUN_ANY_PORT;
    } else if (!port.used) {
      flags |= FWE_RUN_ANY_PORT;
    } else {
      for (auto p : protocols_of(r))
        if (!ir::protocol_has_ports(p)) return std::nullopt;
      if (port.negate || port.bitmap != FWE_NO_BITMAP || port.lo > port.hi) return std::nullopt;
    }
    if (out_.sets[addr.set_id].cidrs.size() * member_slots(r, flags).size() > kMaxMembersPerRule)
      return std::nullopt;
    return flags;
  }

  // The (protocol, port) pairs a run member of this shape is keyed by; 0 where the run has none.
  static std::vector<std::pair<std::uint8_t, std::uint16_t>> member_slots(const fwe_rule& r,
                                                                          std::uint32_t flags) {
    std::vector<std::pair<std::uint8_t, std::uint16_t>> out;
    const auto protocols = (flags & FWE_RUN_ANY_PROTO) ? std::vector<std::uint8_t>{0} : protocols_of(r);
    const std::uint32_t lo = (flags & FWE_RUN_ANY_PORT) ? 0 : r.dport[0].lo;
    const std::uint32_t hi = (flags & FWE_RUN_ANY_PORT) ? 0 : r.dport[0].hi;
    for (auto protocol : protocols)
      for (std::uint32_t port = lo; port <= hi && out.size() <= kMaxMembersPerRule; ++port)
        out.emplace_back(protocol, static_cast<std::uint16_t>(port));
    return out;
  }

  // Whether two run members match alike outside their address, protocols and port.
  static bool same_outside(const fwe_rule& a, const fwe_rule& b) {
    auto common = [](const fwe_rule& r) {
      return std::tie(r.op, r.flags, r.family, r.target, r.iif_list, r.oif_list, r.iif_negate, r.oif_negate,
                      r.ct_mask, r.ct_negate, r.icmp_flags, r.icmp_type, r.icmp_code, r.mac_mode, r.mac_count,
                      r.mark_mode, r.mark_value, r.mark_mask, r.rpf_mode, r.rpf_negate, r.reject,
                      r.reject_code4, r.reject_code6);
    };
    return common(a) == common(b) && std::memcmp(a.macs, b.macs, sizeof a.macs) == 0;
  }

  // The members of one address run while it grows, kept apart by (family, protocol, port) and address,
  // so that a rule overlapping an earlier one's member (which first match would give the earlier rule)
  // ends the run: a packet meets at most one member, and its hit counts for the rule trace names.
  class RunMembers {
   public:
    // Adds the rule's members, or nothing and false when one of them overlaps another rule's.
    bool add(const fwe_rule& r, std::uint32_t flags, const std::vector<Cidr>& cidrs) {
      std::vector<Key> keys;
      for (const auto& [protocol, port] : member_slots(r, flags))
        for (const auto& cidr : cidrs) {
          Key key = key_of(cidr, protocol, port);
          if (overlaps(key, cidr.prefix, keys)) return false;
          keys.push_back(key);
        }
      for (const auto& key : keys) members_.emplace(key, Member{key.prefix, r.chain_id, r.rule_index});
      return true;
    }

    // Writes the members into `out` and tells `merged` (the run's rule) where to find them: a family's
    // members with one prefix length go into the exact maps; a family without members needs no lookup.
    void emit(std::uint32_t run_id, Program& out, fwe_rule& merged) const {
      std::set<std::uint8_t> prefixes4, prefixes6;
      for (const auto& [key, member] : members_)
        (key.bytes[3] == 4 ? prefixes4 : prefixes6).insert(member.prefix);
      if (prefixes4.empty()) merged.run_flags |= FWE_RUN_NONE4;
      if (prefixes6.empty()) merged.run_flags |= FWE_RUN_NONE6;
      const bool exact4 = prefixes4.size() == 1, exact6 = prefixes6.size() == 1;
      if (exact4) {
        merged.run_flags |= FWE_RUN_EXACT4;
        merged.run_prefix4 = *prefixes4.begin();
      }
      if (exact6) {
        merged.run_flags |= FWE_RUN_EXACT6;
        merged.run_prefix6 = *prefixes6.begin();
      }
      for (const auto& entry : members_) {
        // Named, not bound: clang before 16 does not let a lambda capture a structured binding.
        const auto& key = entry.first;
        const auto& member = entry.second;
        const auto counter = static_cast<std::uint32_t>(out.run_members());
        const fwe_run_member value{counter, member.chain_id, member.rule_index, 0};
        const bool v4 = key.bytes[3] == 4;
        auto fill = [&](auto k) {  // the address's host bits are zero (ir::Cidr), as the exact maps need
          k.prefixlen = 64u + member.prefix;
          k.run = htonl(run_id);
          k.proto = key.bytes[0];
          std::memcpy(&k.port, &key.bytes[1], 2);
          std::memcpy(k.addr, &key.bytes[4], sizeof k.addr);
          return k;
        };
        if (v4) {
          (exact4 ? out.exact4 : out.run4).push_back(fill(fwe_run4_key{}));
          (exact4 ? out.exact4_members : out.run4_members).push_back(value);
        } else {
          (exact6 ? out.exact6 : out.run6).push_back(fill(fwe_run6_key{}));
          (exact6 ? out.exact6_members : out.run6_members).push_back(value);
        }
      }
    }

   private:
    // protocol, port (network order), family, then the address: the map sorts each (family, protocol,
    // port) by address.
    struct Key {
      std::array<std::uint8_t, 20> bytes{};
      std::uint8_t prefix = 0;
      bool operator<(const Key& o) const { return bytes < o.bytes; }
    };
    struct Member {
      std::uint8_t prefix;
      std::uint32_t chain_id;
      std::int32_t rule_index;
    };

    static Key key_of(const Cidr& cidr, std::uint8_t protocol, std::uint16_t port) {
      Key key;
      key.bytes[0] = protocol;
      key.bytes[1] = static_cast<std::uint8_t>(port >> 8);
      key.bytes[2] = static_cast<std::uint8_t>(port & 0xff);
      key.bytes[3] = cidr.addr.family == Family::ipv4 ? 4 : 6;
      std::copy(cidr.addr.bytes.begin(), cidr.addr.bytes.end(), key.bytes.begin() + 4);
      key.prefix = cidr.prefix;
      return key;
    }
    // Whether the first `bits` of the addresses of a and b are the same (both of one family and port).
    static bool same_prefix(const Key& a, const Key& b, unsigned bits) {
      for (unsigned i = 0; i < bits; ++i) {
        const unsigned byte = 4 + i / 8, bit = 7 - i % 8;
        if (((a.bytes[byte] >> bit) & 1) != ((b.bytes[byte] >> bit) & 1)) return false;
      }
      return true;
    }
    static bool same_slot(const Key& a, const Key& b) {
      return std::equal(a.bytes.begin(), a.bytes.begin() + 4, b.bytes.begin());
    }
    // Members never overlap one another, so only the closest below and the first at or above can.
    bool overlaps(const Key& key, std::uint8_t prefix, const std::vector<Key>& own) const {
      for (const auto& k : own)
        if (same_slot(k, key) && same_prefix(k, key, std::min(k.prefix, prefix))) return true;
      auto above = members_.lower_bound(key);
      if (above != members_.end() && same_slot(above->first, key) && same_prefix(above->first, key, prefix))
        return true;
      if (above == members_.begin()) return false;
      const auto& below = *std::prev(above);
      return same_slot(below.first, key) && same_prefix(below.first, key, below.second.prefix);
    }

    std::map<Key, Member> members_;
  };

  // Turns each stretch of kMinAddressRun or more rules of the stage from `start` that differ only in
  // their address (one side throughout), protocols and port into one FWE_F_ADDR_RUN rule, and moves the
  // jumps that pointed past them. Only a run's first rule may be a jump's target.
  void merge_address_runs(std::uint32_t start) {
    const std::uint32_t end = here();
    auto has_target = [](const fwe_rule& r) { return r.op == FWE_OP_GOTO || r.op == FWE_OP_DONE; };
    std::vector<bool> targeted(end - start + 1, false);
    for (std::uint32_t pc = start; pc < end; ++pc)
      if (const fwe_rule& r = out_.rules[pc]; has_target(r) && r.target >= start && r.target <= end)
        targeted[r.target - start] = true;
    std::vector<fwe_rule> rules;
    std::vector<RuleSource> sources;
    std::vector<std::uint32_t> moved(end - start + 1);
    for (std::uint32_t pc = start; pc < end;) {
      moved[pc - start] = start + static_cast<std::uint32_t>(rules.size());
      const fwe_rule& head = out_.rules[pc];
      const auto shape = run_shape(head);
      RunMembers members;
      std::uint32_t run_end = pc;
      while (shape && run_end < end && (run_end == pc || !targeted[run_end - start])) {
        const fwe_rule& r = out_.rules[run_end];
        if (run_shape(r) != shape || !same_outside(head, r)) break;
        const fwe_addr_match& addr = (*shape & FWE_RUN_DST) ? r.dst[0] : r.src[0];
        if (!members.add(r, *shape, out_.sets[addr.set_id].cidrs)) break;
        ++run_end;
      }
      if (run_end - pc < kMinAddressRun) {
        rules.push_back(head);
        sources.push_back(out_.sources[pc]);
        ++pc;
        continue;
      }
      const auto run_id = static_cast<std::uint32_t>(address_runs_++);
      fwe_rule merged = head;
      merged.flags |= FWE_F_ADDR_RUN;
      merged.run_id = run_id;
      merged.run_flags = static_cast<std::uint8_t>(*shape);
      members.emit(run_id, out_, merged);
      merged.rule_index = -1;  // its members count for their rules
      merged.proto_mode = FWE_TRI_NONE;
      std::fill(std::begin(merged.proto_bits), std::end(merged.proto_bits), 0);
      merged.src[0] = merged.dst[0] = fwe_addr_match{};
      merged.dport[0] = fwe_port_match{};
      rules.push_back(merged);
      sources.push_back({stage_, "address run " + std::to_string(run_id) + " of " +
                                     std::to_string(run_end - pc) + " rules: " + out_.sources[pc].what +
                                     " .. " + out_.sources[run_end - 1].what});
      for (std::uint32_t k = pc + 1; k < run_end; ++k) moved[k - start] = moved[pc - start];
      pc = run_end;
    }
    moved[end - start] = start + static_cast<std::uint32_t>(rules.size());
    for (auto& r : rules)
      if (has_target(r) && r.target >= start && r.target <= end) r.target = moved[r.target - start];
    out_.rules.resize(start);
    out_.sources.resize(start);
    out_.rules.insert(out_.rules.end(), rules.begin(), rules.end());
    out_.sources.insert(out_.sources.end(), sources.begin(), sources.end());
  }

  // A set that only address runs matched on is in the run maps: it goes, and the others are renumbered.
  void drop_unused_sets() {
    constexpr auto kUnused = static_cast<std::uint32_t>(-1);
    std::vector<std::uint32_t> renumbered(out_.sets.size(), kUnused);
    auto matches = [](fwe_rule& r) { return std::array{&r.src[0], &r.src[1], &r.dst[0], &r.dst[1]}; };
    for (auto& r : out_.rules)
      for (auto* m : matches(r))
        if (m->used) renumbered[m->set_id] = 0;
    std::vector<CompiledSet> kept;
    for (std::size_t i = 0; i < out_.sets.size(); ++i)
      if (renumbered[i] != kUnused) {
        renumbered[i] = static_cast<std::uint32_t>(kept.size());
        kept.push_back(std::move(out_.sets[i]));
      }
    out_.sets = std::move(kept);
    for (auto& r : out_.rules)
      for (auto* m : matches(r))
        if (m->used) m->set_id = renumbered[m->set_id];
  }

  std::size_t emit(fwe_rule rule, std::string what) {
    out_.rules.push_back(rule);
    out_.sources.push_back({stage_, std::move(what)});
    return out_.rules.size() - 1;
  }
  std::uint32_t here() const { return static_cast<std::uint32_t>(out_.rules.size()); }
  void patch(const std::vector<std::size_t>& at, std::uint32_t target) {
    for (auto i : at) out_.rules[i].target = target;
  }

  static fwe_rule blank() {
    fwe_rule r{};
    r.rule_index = -1;
    return r;
  }

  void emit_section(const Section& section) {
    section_ = &section;
    std::vector<std::size_t> to_end;
    if (section.honour_allow) {
      fwe_rule r = blank();
      r.op = FWE_OP_DONE;
      r.flags = FWE_F_NEED_ALLOW;
      to_end.push_back(emit(r, section.name + ": allowed by an earlier stage"));
    }
    std::vector<std::size_t> classifiers;
    for (const auto& ep : section.endpoints) {
      fwe_rule r = blank();
      r.op = FWE_OP_GOTO;
      classify(ep, r);
      classifiers.push_back(emit(r, section.name + ": endpoint " + ep.name + " matches"));
    }
    {
      fwe_rule r = blank();
      r.op = FWE_OP_GOTO;
      to_end.push_back(emit(r, section.name + ": no endpoint matches"));
    }
    for (std::size_t i = 0; i < section.endpoints.size(); ++i) {
      out_.rules[classifiers[i]].target = here();
      emit_endpoint(section.endpoints[i], to_end);
    }
    patch(to_end, here());
  }

  void classify(const Endpoint& ep, fwe_rule& r) {
    const EndpointMatch& m = ep.match;
    if (m.iif) r.iif_list = iface_list({*m.iif});
    if (m.oif) r.oif_list = iface_list({*m.oif});
    if (m.src_set) r.src[0] = {set_index(*m.src_set, ep.origin), 1, 0, {}};
    if (m.dst_set) r.dst[0] = {set_index(*m.dst_set, ep.origin), 1, 0, {}};
    if (m.src_mac) set_macs(*m.src_mac, false, r, ep.origin, "endpoint " + ep.name);
  }

  // A verdict of an endpoint, a group's end, a rule: DONE to the section's end, or DROP.
  void verdict(fwe_rule& r, Verdict v) {
    switch (v) {
      case Verdict::drop:
      case Verdict::reject:
        r.op = FWE_OP_DROP;
        break;
      case Verdict::allow:
        r.op = FWE_OP_DONE;
        r.flags |= FWE_F_GIVE_ALLOW;
        break;
      case Verdict::accept:
      case Verdict::continue_:
        r.op = FWE_OP_DONE;
        break;
    }
  }

  // The fwe_logs entry (+ 1) of a log rule's prefix and level, shared by the rules that have both alike.
  std::uint8_t log_entry(const Action& a, const Origin& origin) {
    const auto key = std::pair{ir::kernel_log_prefix(a.log_prefix, FWE_LOG_PREFIX_LEN - 1), a.log_level};
    if (const auto found = log_entries_.find(key); found != log_entries_.end()) return found->second;
    if (out_.logs.size() == FWE_MAX_LOGS) {
      diag_.error(origin.loc,
                  "more than " + std::to_string(FWE_MAX_LOGS) +
                      " log prefixes and levels, more than the ebpf backend keeps",
                  "give log rules fewer distinct prefixes, or choose --backend nft");
      return 0;
    }
    fwe_log_rule& entry = out_.logs.emplace_back();
    std::memcpy(entry.prefix, key.first.data(), key.first.size());
    entry.level = a.log_level;
    const auto id = static_cast<std::uint8_t>(out_.logs.size());
    log_entries_.emplace(key, id);
    return id;
  }

  // What a rejected packet gets back, by the IR's reject type (the codes nft's and iptables' reject
  // types send; an IPv4-only type gives IPv6 admin-prohibited, as nft's icmpx fallback does).
  bool set_reject(fwe_rule& r, const std::string& with, const Origin& origin) {
    struct Answer {
      std::uint8_t kind, code4, code6;
    };
    static const std::map<std::string, Answer, std::less<>> answers = {
        {"", {FWE_REJECT_ICMP, 3, 4}},
        {"icmp-port-unreachable", {FWE_REJECT_ICMP, 3, 4}},
        {"icmp6-port-unreachable", {FWE_REJECT_ICMP, 3, 4}},
        {"port-unreachable", {FWE_REJECT_ICMP, 3, 4}},
        {"tcp-reset", {FWE_REJECT_TCP_RESET, 3, 4}},
        {"icmp-host-unreachable", {FWE_REJECT_ICMP, 1, 3}},
        {"icmp6-addr-unreachable", {FWE_REJECT_ICMP, 1, 3}},
        {"icmp-net-unreachable", {FWE_REJECT_ICMP, 0, 0}},
        {"icmp6-no-route", {FWE_REJECT_ICMP, 0, 0}},
        {"icmp-admin-prohibited", {FWE_REJECT_ICMP, 13, 1}},
        {"icmp6-adm-prohibited", {FWE_REJECT_ICMP, 13, 1}},
        {"admin-prohibited", {FWE_REJECT_ICMP, 13, 1}},
        {"icmp-host-prohibited", {FWE_REJECT_ICMP, 10, 1}},
        {"icmp-net-prohibited", {FWE_REJECT_ICMP, 9, 1}},
        {"icmp-proto-unreachable", {FWE_REJECT_ICMP, 2, 1}},
    };
    const auto found = answers.find(with);
    if (found == answers.end()) {
      diag_.error(origin.loc, "ebpf backend: unknown reject type '" + with + "'",
                  "use icmp-port-unreachable, tcp-reset, icmp-host-prohibited, icmp-net-prohibited or "
                  "icmp-admin-prohibited");
      return false;
    }
    r.reject = found->second.kind;
    r.reject_code4 = found->second.code4;
    r.reject_code6 = found->second.code6;
    return true;
  }

  // emit_verdict for a verdict that may be a reject, with its type.
  void emit_ending(fwe_rule r, Verdict v, const std::string& reject_with, const Origin& origin,
                   std::string what, std::vector<std::size_t>& to_end) {
    if (v == Verdict::reject && !set_reject(r, reject_with, origin)) return;
    emit_verdict(r, v, std::move(what), to_end);
  }

  void emit_verdict(fwe_rule r, Verdict v, std::string what, std::vector<std::size_t>& to_end) {
    verdict(r, v);
    auto i = emit(r, std::move(what));
    if (r.op == FWE_OP_DONE) to_end.push_back(i);
  }

  void emit_endpoint(const Endpoint& ep, std::vector<std::size_t>& to_end) {
    const std::string prefix = section_->name + "/" + ep.name + ": ";
    if (!is_untracked(stage_) && ep.conntrack != Conntrack::none) {
      fwe_rule r = blank();
      r.ct_mask = ct_bit(CtState::established) | ct_bit(CtState::related);
      emit_verdict(r, Verdict::accept, prefix + "conntrack established/related accept", to_end);
      if (ep.conntrack == Conntrack::accept_established_drop_invalid) {
        r.ct_mask = ct_bit(CtState::invalid);
        emit_verdict(r, Verdict::drop, prefix + "conntrack invalid drop", to_end);
      }
    }
    if (!ep.failsafe_chain.empty()) {
      if (const Chain* chain = rs_.find_chain(ep.failsafe_chain)) {
        std::vector<std::size_t> after;  // pass and return both go on with the groups
        emit_chain(*chain, 0, after, to_end);
        patch(after, here());
      }
    }
    for (const auto& group : ep.groups) {
      std::vector<std::size_t> passes;
      for (const auto& name : group.chains)
        if (const Chain* chain = rs_.find_chain(name)) emit_chain(*chain, 0, passes, to_end);
      if (group.on_end != Verdict::continue_)
        emit_ending(blank(), group.on_end, group.reject_with, group.origin,
                    prefix + "end of group " + group.name + " " + std::string(to_string(group.on_end)),
                    to_end);
      patch(passes, here());
    }
    emit_ending(blank(), ep.default_verdict, ep.reject_with, ep.origin,
                prefix + "endpoint default " + std::string(to_string(ep.default_verdict)), to_end);
  }

  // Inlines a chain. return goes to the chain's end; pass to the group's end (passes).
  void emit_chain(const Chain& chain, std::size_t depth, std::vector<std::size_t>& passes,
                  std::vector<std::size_t>& to_end) {
    if (depth > kMaxJumpDepth) {
      diag_.error(chain.origin.loc,
                  "chain " + chain.name + " is reached through more than " + std::to_string(kMaxJumpDepth) +
                      " nested jumps, more than the ebpf backend inlines",
                  "flatten the jumps or choose --backend nft");
      return;
    }
    const auto chain_id = chain_id_of(chain.name);
    std::vector<std::size_t> returns;
    for (std::size_t i = 0; i < chain.rules.size(); ++i) {
      const Rule& rule = chain.rules[i];
      fwe_rule r = blank();
      r.chain_id = chain_id;
      r.rule_index = static_cast<std::int32_t>(i);
      out_.wheres.try_emplace({chain_id, r.rule_index}, trace::where(rs_, rule.origin));
      if (!translate(rule, r)) continue;
      std::string what =
          chain.name + "#" + std::to_string(i) + " " + std::string(to_string(rule.action.kind));
      const Action& a = rule.action;
      switch (a.kind) {
        case ActionKind::accept:
          emit_verdict(r, Verdict::accept, what, to_end);
          break;
        case ActionKind::allow:
          emit_verdict(r, Verdict::allow, what, to_end);
          break;
        case ActionKind::drop:
          emit_verdict(r, Verdict::drop, what, to_end);
          break;
        case ActionKind::reject:
          emit_ending(r, Verdict::reject, a.reject_with, rule.origin, what, to_end);
          break;
        case ActionKind::log:
          r.op = FWE_OP_NEXT;
          r.log = log_entry(a, rule.origin);
          if (r.log)
            emit(r, what + " \"" + ir::kernel_log_prefix(a.log_prefix, FWE_LOG_PREFIX_LEN - 1) + "\"");
          break;
        case ActionKind::notrack:
          r.op = FWE_OP_NEXT;
          r.flags |= FWE_F_NOTRACK;
          emit(r, what);
          break;
        case ActionKind::set_mark:
          r.op = FWE_OP_NEXT;
          r.flags |= FWE_F_SET_MARK;
          r.set_mark_value = a.mark_value;
          r.set_mark_mask = a.mark_mask;
          emit(r, what + " " + std::to_string(a.mark_value) + "/" + std::to_string(a.mark_mask));
          break;
        case ActionKind::pass:
          r.op = FWE_OP_GOTO;
          passes.push_back(emit(r, what));
          break;
        case ActionKind::return_:
          r.op = FWE_OP_GOTO;
          returns.push_back(emit(r, what));
          break;
        case ActionKind::jump: {
          const Chain* target = rs_.find_chain(a.target);
          if (target == nullptr) break;  // verify reports it; trace ignores it
          r.op = FWE_OP_GOTO;
          r.flags |= FWE_F_INVERT;  // skip the inlined chain when the jump's match does not hold
          auto skip = emit(r, what + " " + a.target);
          emit_chain(*target, depth + 1, passes, to_end);
          out_.rules[skip].target = here();
          break;
        }
        case ActionKind::dnat:
        case ActionKind::redirect:
        case ActionKind::snat:
        case ActionKind::masquerade:
        case ActionKind::ct_helper:
        case ActionKind::tcp_mss_clamp:
          refuse(rule, "action " + std::string(to_string(a.kind)));
          break;
      }
    }
    patch(returns, here());
  }

  void refuse(const Rule& rule, const std::string& what) {
    diag_.error(rule.origin.loc,
                "the ebpf backend cannot do " + what +
                    (rule.origin.policy.empty() ? "" : " (in " + rule.origin.policy + ")"),
                "choose --backend nft or iptables, or change the rule");
  }

  bool translate(const Rule& rule, fwe_rule& r) {
    const Match& m = rule.match;
    bool ok = true;
    if (m.iif) {
      r.iif_list = iface_list(*m.iif);
      r.iif_negate = m.iif_negate;
    }
    if (m.oif) {
      r.oif_list = iface_list(*m.oif);
      r.oif_negate = m.oif_negate;
    }
    if (m.family == Family::ipv4) r.family = 4;
    if (m.family == Family::ipv6) r.family = 6;
    if (m.protocols) {
      r.proto_mode = m.protocol_negate ? FWE_TRI_NOT : FWE_TRI_IS;
      for (auto p : *m.protocols) r.proto_bits[p >> 6] |= 1ull << (p & 63);
    }
    ok &= addrs(m.src_addr, r.src, rule, "source");
    ok &= addrs(m.dst_addr, r.dst, rule, "destination");
    ok &= ports(m.src_port, r.sport, rule, "source");
    ok &= ports(m.dst_port, r.dport, rule, "destination");
    if (m.icmp) {
      r.icmp_flags =
          FWE_ICMP_PRESENT | (m.icmp->v6 ? FWE_ICMP_V6 : 0) | (m.icmp->negate ? FWE_ICMP_NEGATE : 0);
      if (m.icmp->type) {
        r.icmp_flags |= FWE_ICMP_TYPE;
        r.icmp_type = *m.icmp->type;
      }
      if (m.icmp->code) {
        r.icmp_flags |= FWE_ICMP_CODE;
        r.icmp_code = *m.icmp->code;
      }
    }
    if (m.ct_states) {
      for (auto s : *m.ct_states) r.ct_mask |= ct_bit(s);
      r.ct_negate = m.ct_negate;
      if (r.ct_mask == 0) {  // "in no state": never, or always when negated
        r.ct_mask = 0xff;
        r.ct_negate = !m.ct_negate;
      }
    }
    if (m.src_mac) ok &= set_macs(*m.src_mac, m.src_mac_negate, r, rule.origin, "rule");
    if (m.mark_value) {
      r.mark_mode = m.mark_negate ? FWE_TRI_NOT : FWE_TRI_IS;
      r.mark_value = *m.mark_value;
      r.mark_mask = m.mark_mask;
    }
    if (m.pkt_type) refuse(rule, "match pkt-type"), ok = false;
    if (m.ct_status) refuse(rule, "match ct-status"), ok = false;  // no NAT here, so no NAT status
    if (!m.ct_orig_dport.empty()) refuse(rule, "match ct-orig-dport"), ok = false;  // nor a pre-NAT port
    if (m.rpf) {
      r.rpf_mode = *m.rpf == RpfMode::strict ? FWE_RPF_STRICT : FWE_RPF_LOOSE;
      r.rpf_negate = m.rpf_negate;
      out_.uses_rpf = true;
    }
    if (m.rate_limit) ok &= rate_limit(*m.rate_limit, r, rule);
    return ok;
  }

  bool rate_limit(const RateLimit& limit, fwe_rule& r, const Rule& rule) {
    static const std::map<std::string, std::uint64_t> seconds = {
        {"second", 1}, {"minute", 60}, {"hour", 3600}, {"day", 86400}};
    auto unit = seconds.find(limit.unit);
    if (unit == seconds.end() || limit.rate == 0) {
      diag_.error(rule.origin.loc,
                  "rate limit " + std::to_string(limit.rate) + "/" + limit.unit + " cannot be done",
                  "give a rate above 0 per second, minute, hour or day");
      return false;
    }
    r.limit_cost_ns = unit->second * 1'000'000'000ull / limit.rate;
    const std::uint32_t burst = limit.burst ? limit.burst : kDefaultBurst;
    // The program adds the time since the last packet to the credit: past 2^62 ns that could wrap.
    if (__builtin_mul_overflow(r.limit_cost_ns, std::uint64_t{burst}, &r.limit_burst_ns) ||
        r.limit_burst_ns > (std::uint64_t{1} << 62)) {
      diag_.error(rule.origin.loc,
                  "rate limit " + std::to_string(limit.rate) + "/" + limit.unit + " with a burst of " +
                      std::to_string(burst) +
                      " holds more than 146 years of credit, which the ebpf backend cannot count",
                  "give a smaller burst");
      return false;
    }
    return true;
  }

  bool addrs(const AddrMatches& matches, fwe_addr_match* out, const Rule& rule, const char* side) {
    if (matches.size() > FWE_MAX_ADDR_MATCHES) {
      diag_.error(rule.origin.loc,
                  std::string("the ebpf backend takes at most ") + std::to_string(FWE_MAX_ADDR_MATCHES) +
                      " " + side + " address matches in one rule, this one has " +
                      std::to_string(matches.size()),
                  "merge the sets or split the rule");
      return false;
    }
    for (std::size_t i = 0; i < matches.size(); ++i)
      out[i] = {set_index(matches[i], rule.origin), 1, static_cast<__u8>(matches[i].negate), {}};
    return true;
  }

  bool ports(const PortMatches& matches, fwe_port_match* out, const Rule& rule, const char* side) {
    if (matches.size() > FWE_MAX_PORT_MATCHES) {
      diag_.error(rule.origin.loc,
                  std::string("the ebpf backend takes at most ") + std::to_string(FWE_MAX_PORT_MATCHES) +
                      " " + side + " port matches in one rule, this one has " +
                      std::to_string(matches.size()),
                  "merge the port lists or split the rule");
      return false;
    }
    for (std::size_t i = 0; i < matches.size(); ++i) {
      const PortSet& set = matches[i].ports;
      fwe_port_match& m = out[i];
      m.used = 1;
      m.negate = matches[i].negate;
      m.bitmap = FWE_NO_BITMAP;
      if (set.empty()) {  // no port at all: an empty range
        m.lo = 1;
        m.hi = 0;
      } else if (set.size() == 1) {
        m.lo = set.front().lo;
        m.hi = set.front().hi;
      } else {
        m.bitmap = port_bitmap(set);
      }
    }
    return true;
  }

  bool set_macs(const std::vector<MacAddr>& macs, bool negate, fwe_rule& r, const Origin& origin,
                const std::string& who) {
    if (macs.size() > FWE_MAX_MACS) {
      diag_.error(origin.loc,
                  who + " lists " + std::to_string(macs.size()) +
                      " source MACs; the ebpf backend takes at most " + std::to_string(FWE_MAX_MACS),
                  "split it or choose --backend nft");
      return false;
    }
    r.mac_mode = negate ? FWE_TRI_NOT : FWE_TRI_IS;
    r.mac_count = static_cast<__u8>(macs.size());
    for (std::size_t i = 0; i < macs.size(); ++i) std::memcpy(r.macs[i], macs[i].data(), 6);
    return true;
  }

  std::uint32_t set_index(const std::string& name, const Origin& user) {
    auto [it, added] = set_ids_.try_emplace(name, static_cast<std::uint32_t>(out_.sets.size()));
    if (added) {
      const AddrSet* set = rs_.find_set(name);
      out_.sets.push_back(
          {name, set ? std::vector<Cidr>(set->cidrs.begin(), set->cidrs.end()) : std::vector<Cidr>{},
           trace::where(rs_, user)});
    }
    return it->second;
  }
  // A CIDR written in place is a set of its own, one for all the rules that write it.
  std::uint32_t set_index(const AddrMatch& m, const Origin& user) {
    if (!m.in_place()) return set_index(m.set_name, user);
    auto [it, added] = cidr_set_ids_.try_emplace(m.cidr, static_cast<std::uint32_t>(out_.sets.size()));
    if (added) out_.sets.push_back({to_string(m.cidr), {m.cidr}, trace::where(rs_, user)});
    return it->second;
  }

  std::uint32_t iface_list(const std::vector<IfacePattern>& patterns) {
    auto [it, added] =
        iface_ids_.try_emplace(iface_key(patterns), static_cast<std::uint32_t>(out_.iface_lists.size() + 1));
    if (added) out_.iface_lists.push_back(patterns);
    return it->second;
  }

  std::uint16_t port_bitmap(const PortSet& set) {
    PortBitmap bits{};
    for (const auto& range : set)
      for (std::uint32_t p = range.lo; p <= range.hi; ++p)
        bits[p >> 3] |= static_cast<std::uint8_t>(1u << (p & 7));
    auto found = std::find(out_.port_bitmaps.begin(), out_.port_bitmaps.end(), bits);
    if (found != out_.port_bitmaps.end())
      return static_cast<std::uint16_t>(found - out_.port_bitmaps.begin());
    out_.port_bitmaps.push_back(bits);
    return static_cast<std::uint16_t>(out_.port_bitmaps.size() - 1);
  }

  std::uint32_t chain_id_of(const std::string& name) {
    auto [it, added] = chain_ids_.try_emplace(name, static_cast<std::uint32_t>(out_.chains.size()));
    if (added) out_.chains.push_back(name);
    return it->second;
  }

  const Ruleset& rs_;
  Diagnostics& diag_;
  Program& out_;
  Stage stage_ = Stage::input;
  const Section* section_ = nullptr;
  std::map<std::string, std::uint32_t> set_ids_, iface_ids_, chain_ids_;
  std::map<Cidr, std::uint32_t> cidr_set_ids_;
  std::size_t runs_ = 0;
  std::size_t address_runs_ = 0;
  std::map<std::pair<std::string, std::uint8_t>, std::uint8_t> log_entries_;
};

std::string op_name(const fwe_rule& r) {
  switch (r.op) {
    case FWE_OP_NEXT:
      return "next";
    case FWE_OP_GOTO:
      return "goto";
    case FWE_OP_DONE:
      return "done";
    default:
      if (r.reject == FWE_REJECT_NONE) return "drop";
      return std::string("reject ") + (r.reject == FWE_REJECT_TCP_RESET ? "tcp-reset, else " : "") +
             "icmp 3/" + std::to_string(r.reject_code4) + " icmp6 1/" + std::to_string(r.reject_code6);
  }
}

}  // namespace

std::vector<Stage> supported_stages() {
  return {Stage::untracked_in, Stage::untracked_out, Stage::prednat,
          Stage::input,        Stage::forward,       Stage::output};
}

std::vector<MatchKind> supported_matches() {
  return {MatchKind::iif,        MatchKind::oif,      MatchKind::family,   MatchKind::protocol,
          MatchKind::src_addr,   MatchKind::dst_addr, MatchKind::src_port, MatchKind::dst_port,
          MatchKind::icmp,       MatchKind::ct_state, MatchKind::src_mac,  MatchKind::mark,
          MatchKind::rate_limit, MatchKind::rpf};
}

std::vector<ActionKind> supported_actions() {
  return {ActionKind::accept,   ActionKind::allow,  ActionKind::drop, ActionKind::reject,
          ActionKind::log,      ActionKind::pass,   ActionKind::jump, ActionKind::return_,
          ActionKind::set_mark, ActionKind::notrack};
}

Program compile(const Ruleset& rs, Diagnostics& diag) {
  Program program;
  Compiler(rs, diag, program).run();
  const Rule* log = nullptr;
  for (const auto& [name, chain] : rs.chains)
    for (const auto& rule : chain.rules)
      if (!log && rule.action.kind == ActionKind::log) log = &rule;
  if (log)
    program.notes.push_back(
        {log->origin.loc,
         "log rules (this one and every other) write their lines to the log of fwengine daemon (the "
         "service), not to the kernel log; without a daemon running they wait in a buffer (then "
         "packets go unlogged once it is full) and count (see status)"});
  if (program.uses_rpf)
    program.notes.push_back(
        {{},
         "rpf looks routes up without the packet's mark, and only while forwarding is on for lo "
         "(net.ipv4.conf.lo.forwarding, net.ipv6.conf.lo.forwarding; ip_forward sets it too): "
         "apply refuses the ruleset while it is off"});
  return program;
}

void allow_xdp(Program& program) {
  const fwe_stage_span span = program.stages[static_cast<std::size_t>(Stage::untracked_in)];
  bool drops = false;
  for (std::uint32_t pc = span.start; pc < span.start + span.count; ++pc) {
    const fwe_rule& r = program.rules[pc];
    const char* misfit = r.log                                                            ? "logs"
                         : r.limit_cost_ns                                                ? "has a rate limit"
                         : r.mark_mode != FWE_TRI_NONE || (r.flags & FWE_F_SET_MARK) != 0 ? "uses the mark"
                                                                                          : nullptr;
    if (misfit) {
      const auto where = program.wheres.find({r.chain_id, r.rule_index});
      program.notes.push_back({{},
                               "xdp: fwe_xdp passes every packet on to tc: the untracked-in stage's rule " +
                                   program.sources[pc].what +
                                   (where == program.wheres.end() ? "" : " (" + where->second + ")") + " " +
                                   misfit + ", which XDP cannot do as tc does"});
      return;
    }
    drops = drops || (r.op == FWE_OP_DROP && r.reject == FWE_REJECT_NONE);
  }
  if (!drops) {
    program.notes.push_back(
        {{},
         "xdp: fwe_xdp passes every packet on to tc: the untracked-in stage drops nothing "
         "(rejects are answered at tc)"});
    return;
  }
  program.xdp = true;
}

std::uint32_t generation_bits(std::uint32_t bits, std::uint32_t generation, bool on) {
  const std::uint32_t in_use = bits & (1u << (generation ^ 1));
  return in_use | (on ? 1u << generation : 0u);
}

fwe_rule for_generation(const fwe_rule& rule, std::uint32_t generation) {
  fwe_rule r = rule;
  for (auto* m : {&r.src[0], &r.src[1], &r.dst[0], &r.dst[1]})
    if (m->used) m->set_id = (generation << kSetIndexBits) | m->set_id;
  return r;
}

std::string Program::text() const {
  std::ostringstream out;
  out << "# ebpf: " << rules.size() << " rules, " << sets.size() << " address sets, " << iface_lists.size()
      << " interface lists, " << port_bitmaps.size() << " port bitmaps, " << run_members()
      << " address-run members\n";
  for (const auto& note : notes) out << "# note: " << note.text << '\n';
  if (xdp) {
    out << "# xdp: fwe_xdp drops what untracked-in drops on";
    for (const auto& name : xdp_interfaces) out << ' ' << to_string(name);
    out << '\n';
  }
  for (const auto& set : sets) {
    out << "set " << set.name << " {";
    for (std::size_t i = 0; i < set.cidrs.size(); ++i) out << (i ? ", " : " ") << to_string(set.cidrs[i]);
    out << " }\n";
  }
  // "exact member": in a hash, found by the address masked to the run's one prefix length of its family.
  auto members = [&](const auto& keys, const std::vector<fwe_run_member>& values, Family family,
                     const char* kind) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      Cidr cidr;
      cidr.addr.family = family;
      std::memcpy(cidr.addr.bytes.data(), keys[i].addr, sizeof keys[i].addr);
      cidr.prefix = static_cast<std::uint8_t>(keys[i].prefixlen - 64);
      out << "run " << ntohl(keys[i].run) << ' ' << kind << ' '
          << (keys[i].proto ? protocol_name(keys[i].proto) : std::string("any")) << ' ' << ntohs(keys[i].port)
          << ' ' << to_string(cidr) << " -> " << chains[values[i].chain_id] << '#' << values[i].rule_index
          << '\n';
    }
  };
  members(run4, run4_members, Family::ipv4, "member");
  members(exact4, exact4_members, Family::ipv4, "exact member");
  members(run6, run6_members, Family::ipv6, "member");
  members(exact6, exact6_members, Family::ipv6, "exact member");
  for (std::size_t i = 0; i < iface_lists.size(); ++i) {
    out << "iflist " << i + 1 << " {";
    for (const auto& p : iface_lists[i]) out << ' ' << to_string(p);
    out << " }\n";
  }
  for (std::size_t s = 0; s < FWE_STAGE_COUNT; ++s) {
    if (stages[s].count == 0) continue;
    out << "stage " << to_string(static_cast<Stage>(s)) << " [" << stages[s].start << ", "
        << stages[s].start + stages[s].count << ")\n";
    for (std::uint32_t pc = stages[s].start; pc < stages[s].start + stages[s].count; ++pc) {
      const fwe_rule& r = rules[pc];
      out << "  " << pc << ": " << ((r.flags & FWE_F_INVERT) ? "unless " : "") << op_name(r);
      if (r.op == FWE_OP_GOTO || r.op == FWE_OP_DONE) out << ' ' << r.target;
      out << "  # " << sources[pc].what << '\n';
    }
  }
  return out.str();
}

namespace listing {

std::uint64_t digest(std::uint64_t h, const void* bytes, std::size_t size) {
  const auto* at = static_cast<const unsigned char*>(bytes);
  for (std::size_t i = 0; i < size; ++i) h = (h ^ at[i]) * 1099511628211ull;
  return h;
}

std::uint64_t cidr(const ir::Cidr& c) {
  const unsigned char head[2] = {static_cast<unsigned char>(c.addr.family), c.prefix};
  return digest(digest(kSeed, head, sizeof head), c.addr.bytes.data(),
                c.addr.family == Family::ipv4 ? 4 : 16);
}

std::uint64_t run_member(bool exact, std::uint32_t run, std::uint8_t proto, std::uint16_t port,
                         const ir::Cidr& c, const std::string& chain, std::int32_t rule) {
  std::uint64_t h = cidr(c);
  const unsigned char flag = exact;
  h = digest(h, &flag, 1);
  h = digest(h, &run, sizeof run);
  h = digest(h, &proto, 1);
  h = digest(h, &port, sizeof port);
  h = digest(h, chain.data(), chain.size());
  return digest(h, &rule, sizeof rule);
}

namespace {
std::string hex(std::uint64_t value) {
  char out[24];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(value));
  return out;
}
}  // namespace

std::string set_line(std::size_t members, std::uint64_t digest) {
  return "set: " + std::to_string(members) + " addresses " + hex(digest);
}
std::string runs_line(std::size_t members, std::uint64_t digest) {
  return "address runs: " + std::to_string(members) + " members " + hex(digest);
}
std::string rule_line(ir::Stage stage, const std::string& chain, std::int32_t rule, std::uint64_t digest) {
  return "  " + std::string(to_string(stage)) + " " +
         (rule < 0 ? std::string("-") : chain + "#" + std::to_string(rule)) + " " + hex(digest);
}

std::uint64_t order(std::uint64_t h, std::uint64_t rule_digest) {
  return digest(h, &rule_digest, sizeof rule_digest);
}
std::string order_line(ir::Stage stage, std::size_t rules, std::uint64_t digest) {
  return "stage " + std::string(to_string(stage)) + ": " + std::to_string(rules) + " rules in order " +
         hex(digest);
}
std::string kept_name(const std::string& chain) {
  return chain.substr(0, FWE_NAME_LEN - 1);
}

}  // namespace listing

std::string Program::listing() const {
  auto chain_name = [this](std::uint32_t id) {
    return id < chains.size() ? listing::kept_name(chains[id]) : std::string();
  };
  std::string out;
  std::vector<std::uint64_t> set_sums(sets.size());
  for (std::uint32_t i = 0; i < sets.size(); ++i) {
    for (const auto& c : sets[i].cidrs) set_sums[i] += listing::cidr(c);
    if (sets[i].cidrs.empty()) continue;  // nothing of it reaches the kernel
    out += listing::set_line(sets[i].cidrs.size(), set_sums[i]) + "\tset " + sets[i].name + '\n';
  }
  auto set_digest = [&](std::uint32_t i) { return i < set_sums.size() ? set_sums[i] : 0; };
  if (run_members() > 0) {
    std::uint64_t sum = 0;
    auto members = [&](const auto& keys, const std::vector<fwe_run_member>& values, Family family,
                       bool exact) {
      for (std::size_t i = 0; i < keys.size(); ++i) {
        Cidr c;
        c.addr.family = family;
        std::memcpy(c.addr.bytes.data(), keys[i].addr, sizeof keys[i].addr);
        c.prefix = static_cast<std::uint8_t>(keys[i].prefixlen - 64);
        sum += listing::run_member(exact, ntohl(keys[i].run) & ((1u << kSetIndexBits) - 1), keys[i].proto,
                                   keys[i].port, c, chain_name(values[i].chain_id), values[i].rule_index);
      }
    };
    members(run4, run4_members, Family::ipv4, false);
    members(exact4, exact4_members, Family::ipv4, true);
    members(run6, run6_members, Family::ipv6, false);
    members(exact6, exact6_members, Family::ipv6, true);
    out += listing::runs_line(run_members(), sum) + '\n';
  }
  auto bitmap_digest = [this](std::uint16_t i) {
    return listing::digest(listing::kSeed, port_bitmaps[i].data(), port_bitmaps[i].size());
  };
  auto log_entry = [this](unsigned i) { return i < logs.size() ? logs[i] : fwe_log_rule{}; };
  for (std::size_t s = 0; s < FWE_STAGE_COUNT; ++s) {
    if (stages[s].count == 0) continue;
    std::string lines;
    std::uint64_t in_order = listing::kSeed;
    for (std::uint32_t pc = stages[s].start; pc < stages[s].start + stages[s].count; ++pc) {
      const fwe_rule& r = rules[pc];
      const std::string line = listing::rule_line(static_cast<Stage>(s), chain_name(r.chain_id), r.rule_index,
                                                  listing::rule(r, bitmap_digest, set_digest, log_entry));
      in_order = listing::order(in_order, listing::digest(listing::kSeed, line.data(), line.size()));
      lines += line + "\t" + ((r.flags & FWE_F_INVERT) ? "unless " : "") + op_name(r) + "  # " +
               sources[pc].what + '\n';
    }
    out += listing::order_line(static_cast<Stage>(s), stages[s].count, in_order) + '\n' + lines;
  }
  if (xdp) out += listing::kXdpLine + '\n';
  return out;
}

}  // namespace fwe::ebpf
