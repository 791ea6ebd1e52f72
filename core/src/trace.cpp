// trace.cpp - the reference evaluator. Implements docs/ir.md literally; keep the two in step.
#include "fwengine/trace.hpp"

#include <algorithm>
#include <utility>

namespace fwe::trace {

using namespace fwe::ir;

std::string_view to_string(Path p) {
  switch (p) {
    case Path::input:
      return "input";
    case Path::forward:
      return "forward";
    case Path::output:
      return "output";
  }
  return "input";
}

Path path_of(const Packet& p) {
  if (!p.iif.empty() && !p.oif.empty()) return Path::forward;
  return p.iif.empty() ? Path::output : Path::input;
}

Verdict Result::final_verdict() const {
  for (const auto& s : stages)
    if (s.verdict == Verdict::drop || s.verdict == Verdict::reject) return s.verdict;
  for (const auto& s : stages)
    if (s.verdict == Verdict::accept || s.verdict == Verdict::allow) return Verdict::accept;
  return Verdict::continue_;
}

std::string where(const Ruleset& rs, const Origin& o) {
  std::string out = o.loc.file < rs.files.size() ? rs.files[o.loc.file] : "<unknown>";
  if (o.loc.line > 0) out += ':' + std::to_string(o.loc.line) + ':' + std::to_string(o.loc.col);
  return out;
}

namespace {

constexpr std::size_t kMaxJumpDepth = 64;

bool in_range(const ir::PortRange& range, std::uint16_t port) {
  return port >= range.lo && port <= range.hi;
}

// The port a NAT rule gives the packet. Of a range the kernel keeps the packet's own port when it is in
// it (and free); otherwise dnat takes the first free one and snat one at random: trace takes the first.
std::string nat_port_text(const ir::PortRange& range, std::uint16_t port, bool kept, const char* otherwise) {
  if (range.lo == range.hi) return " port " + std::to_string(port);
  const std::string span = std::to_string(range.lo) + "-" + std::to_string(range.hi);
  if (kept) return " port " + std::to_string(port) + " (the packet's own, in " + span + ")";
  return " port " + span + " (" + otherwise + "; traced with " + std::to_string(port) + ")";
}

bool any_iface(const std::vector<IfacePattern>& patterns, const std::string& ifname) {
  if (ifname.empty()) return false;
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const IfacePattern& p) { return p.matches(ifname); });
}

Family family_of(const Packet& p) {
  return p.src.family;
}

bool in_set(const Ruleset& rs, const std::string& set, const IpAddr& addr) {
  const AddrSet* s = rs.find_set(set);
  return s != nullptr && s->contains(addr);
}

bool in_addresses(const Ruleset& rs, const AddrMatch& m, const IpAddr& addr) {
  const auto cidrs = addresses(rs, m);
  return std::any_of(cidrs.begin(), cidrs.end(), [&](const Cidr& c) { return contains(c, addr); });
}

bool ports_match(const PortMatches& matches, const Packet& p, std::uint16_t port) {
  if (matches.empty()) return true;
  if (!protocol_has_ports(p.protocol)) return false;
  return std::all_of(matches.begin(), matches.end(),
                     [&](const PortMatch& m) { return contains(m.ports, port) != m.negate; });
}

bool addrs_match(const Ruleset& rs, const AddrMatches& matches, const IpAddr& addr) {
  return std::all_of(matches.begin(), matches.end(),
                     [&](const AddrMatch& m) { return in_addresses(rs, m, addr) != m.negate; });
}

bool icmp_matches(const IcmpMatch& m, const Packet& p) {
  if (p.protocol != (m.v6 ? 58 : 1)) return false;
  bool same = (!m.type || *m.type == p.icmp_type) && (!m.code || *m.code == p.icmp_code);
  return same != m.negate;
}

// The reverse-path check as the kernel's fib lookup does it: a packet that came in on lo always passes
// (the host sent it itself), as does an IPv4 packet from 0.0.0.0 to a broadcast or link-local multicast
// address (DHCP); every other source needs a route back, out of iif itself in strict mode.
bool reverse_path_ok(RpfMode mode, const Packet& p) {
  if (p.iif == "lo") return true;
  if (p.src.family == Family::ipv4 && p.src == IpAddr{Family::ipv4, {}}) {
    const auto& d = p.dst.bytes;
    bool broadcast = d[0] == 255 && d[1] == 255 && d[2] == 255 && d[3] == 255;
    bool local_multicast = d[0] == 224 && d[1] == 0 && d[2] == 0;
    if (broadcast || local_multicast) return true;
  }
  std::string route = p.src_route.value_or(p.iif);
  return mode == RpfMode::strict ? !route.empty() && route == p.iif : !route.empty();
}

bool rule_matches(const Ruleset& rs, const Match& m, const Packet& p) {
  if (m.iif && any_iface(*m.iif, p.iif) == m.iif_negate) return false;
  if (m.oif && any_iface(*m.oif, p.oif) == m.oif_negate) return false;
  if (m.family != Family::any && m.family != family_of(p)) return false;
  if (m.protocols) {
    bool in = std::find(m.protocols->begin(), m.protocols->end(), p.protocol) != m.protocols->end();
    if (in == m.protocol_negate) return false;
  }
  if (!addrs_match(rs, m.src_addr, p.src) || !addrs_match(rs, m.dst_addr, p.dst)) return false;
  if (!ports_match(m.src_port, p, p.sport) || !ports_match(m.dst_port, p, p.dport)) return false;
  if (m.icmp && !icmp_matches(*m.icmp, p)) return false;
  if (m.ct_states) {
    bool in = std::find(m.ct_states->begin(), m.ct_states->end(), p.ct) != m.ct_states->end();
    if (in == m.ct_negate) return false;
  }
  // Untracked and invalid packets have no conntrack entry, so no status.
  if (m.ct_status) {
    bool tracked = p.ct != CtState::untracked && p.ct != CtState::invalid;
    bool any = std::any_of(m.ct_status->begin(), m.ct_status->end(),
                           [&](CtStatus s) { return p.ct_status[static_cast<std::size_t>(s)]; });
    if (!tracked || !any) return false;
  }
  if (!m.ct_orig_dport.empty()) {
    bool tracked = p.ct != CtState::untracked && p.ct != CtState::invalid;
    if (!tracked || !ports_match(m.ct_orig_dport, p, p.ct_orig_dport.value_or(p.dport))) return false;
  }
  if (m.src_mac) {
    // Only a packet that came in on an Ethernet interface has a source MAC (lo has none): without one,
    // a MAC match fails, negated or not.
    if (p.iif.empty() || p.iif == "lo") return false;
    bool in = p.src_mac && std::find(m.src_mac->begin(), m.src_mac->end(), *p.src_mac) != m.src_mac->end();
    if (in == m.src_mac_negate) return false;
  }
  if (m.pkt_type && *m.pkt_type != p.pkt_type) return false;
  if (m.mark_value && ((p.mark & m.mark_mask) == *m.mark_value) == m.mark_negate) return false;
  if (m.rpf && reverse_path_ok(*m.rpf, p) == m.rpf_negate) return false;
  // A rate limit matches while under its rate; one packet always is.
  return true;
}

bool endpoint_matches(const Ruleset& rs, const EndpointMatch& m, const Packet& p) {
  if (m.iif && (p.iif.empty() || !m.iif->matches(p.iif))) return false;
  if (m.oif && (p.oif.empty() || !m.oif->matches(p.oif))) return false;
  if (m.src_set && !in_set(rs, *m.src_set, p.src)) return false;
  if (m.dst_set && !in_set(rs, *m.dst_set, p.dst)) return false;
  // As for a rule's MAC match: only a packet that came in on an interface other than lo has one.
  if (m.src_mac && (p.iif.empty() || p.iif == "lo" || !p.src_mac ||
                    std::find(m.src_mac->begin(), m.src_mac->end(), *p.src_mac) == m.src_mac->end()))
    return false;
  return true;
}

enum class Flow { fallthrough, verdict, pass };

struct Outcome {
  Flow flow = Flow::fallthrough;
  Verdict verdict = Verdict::continue_;
};

// Walks one packet through one stage; owns the packet's mutable state while it does.
class StageWalker {
 public:
  // has_entry: the packet already has its conntrack entry (a looped one), which notrack leaves alone.
  StageWalker(const Ruleset& rs, Stage stage, Packet& packet, Result& result, StageResult& out,
              bool has_entry)
      : rs_(rs), stage_(stage), packet_(packet), result_(result), out_(out), has_entry_(has_entry) {}

  Verdict run(const StageDef& def) {
    Verdict stage_verdict = Verdict::continue_;
    for (const auto& section : def.sections) {
      section_ = &section;
      if (section.honour_allow && result_.allow_mark) {
        record({}, {}, -1, nullptr, "allowed by an earlier stage (allow mark)");
        stage_verdict = Verdict::accept;
        continue;
      }
      auto ep = std::find_if(section.endpoints.begin(), section.endpoints.end(),
                             [&](const Endpoint& e) { return endpoint_matches(rs_, e.match, packet_); });
      if (ep == section.endpoints.end()) continue;
      endpoint_ = &*ep;
      out_.endpoint = ep->name;
      Verdict v = run_endpoint(*ep);
      if (v == Verdict::drop || v == Verdict::reject) return v;
      stage_verdict = v;
      // The kernel NATs a connection once at a hook: the first rewrite ends the stage, whatever
      // sections follow.
      if (rewritten_) return stage_verdict;
    }
    return stage_verdict;
  }

 private:
  void record(const std::string& group, const std::string& chain, std::int32_t index, const Rule* rule,
              std::string what, const Origin* origin = nullptr) {
    out_.steps.push_back({stage_, section_ ? section_->name : std::string{},
                          endpoint_ ? endpoint_->name : std::string{}, group, chain, index, rule, origin,
                          std::move(what)});
  }

  Verdict run_endpoint(const Endpoint& ep) {
    if (!is_untracked(stage_) && ep.conntrack != Conntrack::none) {
      if (packet_.ct == CtState::established || packet_.ct == CtState::related) {
        record({}, {}, -1, nullptr, "conntrack: " + std::string(ir::to_string(packet_.ct)) + " -> accept");
        return Verdict::accept;
      }
      if (packet_.ct == CtState::invalid && ep.conntrack == Conntrack::accept_established_drop_invalid) {
        record({}, {}, -1, nullptr, "conntrack: invalid -> drop");
        return Verdict::drop;
      }
    }
    if (!ep.failsafe_chain.empty()) {
      if (const Chain* fs = rs_.find_chain(ep.failsafe_chain)) {
        Outcome o = run_chain(*fs, {}, 0);
        if (o.flow == Flow::verdict && o.verdict != Verdict::continue_) return o.verdict;
      }
    }
    for (const auto& group : ep.groups) {
      bool passed = false;
      for (const auto& name : group.chains) {
        const Chain* chain = rs_.find_chain(name);
        if (chain == nullptr) continue;
        Outcome o = run_chain(*chain, group.name, 0);
        if (o.flow == Flow::verdict) return o.verdict;
        if (o.flow == Flow::pass) {
          passed = true;
          break;
        }
      }
      if (!passed && group.on_end != Verdict::continue_) {
        record(group.name, {}, -1, nullptr,
               "end of group " + group.name + " -> " + verdict_text(group.on_end, group.reject_with),
               &group.origin);
        return settle(group.on_end);
      }
    }
    record({}, {}, -1, nullptr,
           "endpoint " + ep.name + " default -> " + verdict_text(ep.default_verdict, ep.reject_with),
           &ep.origin);
    return settle(ep.default_verdict);
  }

  // A verdict as a step names it: a reject with the reply this packet gets, tcp-reset for TCP alone and an
  // ICMP type as the packet's family's error, as every backend sends it.
  std::string verdict_text(Verdict v, std::string_view reject_with) const {
    std::string text(ir::to_string(v));
    if (v == Verdict::reject)
      text += " with " +
              std::string(
                  ir::reject_reply(reject_with, family_of(packet_), packet_.protocol).value_or(reject_with));
    return text;
  }

  // allow is accept plus the mark later stages honour.
  Verdict settle(Verdict v) {
    if (v == Verdict::allow) result_.allow_mark = true;
    return v;
  }

  Outcome run_chain(const Chain& chain, const std::string& group, std::size_t depth) {
    if (depth > kMaxJumpDepth) return {};
    for (std::size_t i = 0; i < chain.rules.size(); ++i) {
      const Rule& rule = chain.rules[i];
      if (!rule_matches(rs_, rule.match, packet_)) continue;
      const auto index = static_cast<std::int32_t>(i);
      const Action& a = rule.action;
      std::string what = "rule " + std::to_string(i) + " (" +
                         (a.kind == ActionKind::reject ? verdict_text(Verdict::reject, a.reject_with)
                                                       : std::string(ir::to_string(a.kind))) +
                         ")";
      // trace has no clock: a rate-limited rule is taken as under its rate, and says so.
      if (const auto& limit = rule.match.rate_limit)
        what += " while under " + std::to_string(limit->rate) + "/" + limit->unit;
      switch (a.kind) {
        case ActionKind::accept:
        case ActionKind::allow:
        case ActionKind::drop:
        case ActionKind::reject: {
          record(group, chain.name, index, &rule, what);
          Verdict v = a.kind == ActionKind::accept  ? Verdict::accept
                      : a.kind == ActionKind::allow ? Verdict::allow
                      : a.kind == ActionKind::drop  ? Verdict::drop
                                                    : Verdict::reject;
          return {Flow::verdict, settle(v)};
        }
        case ActionKind::log:
        case ActionKind::tcp_mss_clamp:  // rewrites a TCP option, decides nothing
          record(group, chain.name, index, &rule, what);
          break;
        case ActionKind::ct_helper:
          // Before conntrack a helper comes as a conntrack template: the packet's state reads new from
          // here on in this stage, and notrack no longer has an effect. Not on a packet that has its
          // entry (looped) or went untracked.
          if (is_untracked(stage_) && !has_entry_ && !result_.untracked && !templated_) {
            templated_ = true;
            packet_.ct = CtState::new_;
          }
          record(group, chain.name, index, &rule, what);
          break;
        case ActionKind::notrack:
          if (has_entry_ || templated_) {
            record(group, chain.name, index, &rule,
                   what + ": no effect, the packet has its conntrack " + (has_entry_ ? "entry" : "template"));
            break;
          }
          record(group, chain.name, index, &rule, what);
          result_.untracked = true;
          packet_.ct = CtState::untracked;
          break;
        case ActionKind::set_mark:
          record(group, chain.name, index, &rule, what);
          packet_.mark = (packet_.mark & ~a.mark_mask) | (a.mark_value & a.mark_mask);
          break;
        case ActionKind::pass:
          record(group, chain.name, index, &rule, what);
          return {Flow::pass, Verdict::continue_};
        case ActionKind::return_:
          record(group, chain.name, index, &rule, what);
          return {};
        case ActionKind::jump: {
          const Chain* target = rs_.find_chain(a.target);
          if (target == nullptr) break;
          Outcome o = run_chain(*target, group, depth + 1);
          if (o.flow != Flow::fallthrough) return o;
          break;
        }
        case ActionKind::dnat:
        case ActionKind::redirect: {
          const auto before = std::pair{packet_.dst, packet_.dport};
          // Where trace does not know the new address, it takes it that the rewrite changed something.
          bool unknown = false;
          if (a.kind == ActionKind::redirect)
            unknown = !redirect_destination(what);
          else if (a.nat_addr)
            packet_.dst = *a.nat_addr;
          const bool port_kept = a.nat_port && in_range(*a.nat_port, packet_.dport);
          if (a.nat_port && !port_kept) packet_.dport = a.nat_port->lo;
          if (a.kind == ActionKind::dnat) {
            what += ": to " + ir::to_string(packet_.dst) +
                    (a.nat_port ? nat_port_text(*a.nat_port, packet_.dport, port_kept, "the first") : "");
            // Routing after DNAT is not trace's to know: it takes the path --oif says.
            if (result_.path == Path::input && packet_.dst != before.first)
              what += " (traced on as input to this host; --oif IF traces it forwarded)";
          }
          // The kernel marks the connection NATed only when the rewrite changed its tuple.
          if (unknown || before != std::pair{packet_.dst, packet_.dport})
            packet_.ct_status[static_cast<std::size_t>(CtStatus::dnat)] = true;
          record(group, chain.name, index, &rule, what);
          rewritten_ = true;
          return {Flow::verdict, Verdict::accept};
        }
        case ActionKind::snat:
        case ActionKind::masquerade: {
          const auto before = std::pair{packet_.src, packet_.sport};
          // masquerade takes the output interface's address, where trace was told it
          bool unknown = false;
          if (a.nat_addr)
            packet_.src = *a.nat_addr;
          else if (a.kind == ActionKind::masquerade && packet_.oif_addr)
            packet_.src = *packet_.oif_addr;
          else
            unknown = a.kind == ActionKind::masquerade;
          const bool port_kept = a.nat_port && in_range(*a.nat_port, packet_.sport);
          if (a.nat_port && !port_kept) packet_.sport = a.nat_port->lo;
          if (!unknown)
            what += ": from " + ir::to_string(packet_.src) +
                    (a.nat_port ? nat_port_text(*a.nat_port, packet_.sport, port_kept, "one the kernel picks")
                                : "");
          if (unknown || before != std::pair{packet_.src, packet_.sport})
            packet_.ct_status[static_cast<std::size_t>(CtStatus::snat)] = true;
          record(group, chain.name, index, &rule, what);
          rewritten_ = true;
          return {Flow::verdict, Verdict::accept};
        }
      }
    }
    return {};
  }

  // redirect sends the packet to the first address of the interface it came in on (for IPv6 the first of
  // the destination's scope), which trace knows only when told with --iif-addr. False if not told.
  bool redirect_destination(std::string& what) {
    if (stage_ == Stage::dnat_out) {  // the kernel sends the host's own packets to its loopback address
      packet_.dst = family_of(packet_) == Family::ipv6 ? *ir::parse_ip("::1") : *ir::parse_ip("127.0.0.1");
      what += ": to " + ir::to_string(packet_.dst);
      return true;
    }
    if (!packet_.iif_addr) {
      what += ": to an address of " + packet_.iif + " that trace was not told (--iif-addr)";
      return false;
    }
    packet_.dst = *packet_.iif_addr;
    what += ": to " + ir::to_string(packet_.dst);
    return true;
  }

  const Ruleset& rs_;
  Stage stage_;
  Packet& packet_;
  Result& result_;
  StageResult& out_;
  const Section* section_ = nullptr;
  const Endpoint* endpoint_ = nullptr;
  bool has_entry_ = false;
  bool templated_ = false;  // a ct-helper before conntrack attached a template
  bool rewritten_ = false;  // a NAT rule of this stage rewrote the packet
};

bool is_nat(Stage s) {
  return s == Stage::dnat || s == Stage::dnat_out || s == Stage::snat;
}

bool before_routing(Stage s) {
  return s == Stage::untracked_in || s == Stage::prednat || s == Stage::dnat;
}

// Stages before nat PREROUTING, where the kernel undoes a source NAT for replies.
bool before_unsnat(Stage s) {
  return s == Stage::untracked_in || s == Stage::prednat;
}

std::vector<Stage> stages_of(Path path) {
  switch (path) {
    case Path::input:
      return {Stage::untracked_in, Stage::prednat, Stage::dnat, Stage::input};
    case Path::forward:
      return {Stage::untracked_in, Stage::prednat, Stage::dnat, Stage::forward, Stage::snat};
    case Path::output:
      return {Stage::untracked_out, Stage::dnat_out, Stage::output, Stage::snat};
  }
  return {};
}

}  // namespace

namespace {

// Walks result.packet through the stages. A looped packet (host to itself, back in on lo) already has
// its conntrack entry, and its NAT was decided on the way out.
void walk(const Ruleset& rs, const std::vector<Stage>& stages, bool looped, Result& result) {
  for (Stage stage : stages) {
    const bool dnat_stage = stage == Stage::dnat || stage == Stage::dnat_out;
    if (dnat_stage && result.packet.dnat_dst && result.packet.ct != CtState::new_) {
      result.packet.dst = *result.packet.dnat_dst;
      result.packet.dport = result.packet.dnat_dport;
    }
    const StageDef& def = rs.stage(stage);
    if (def.empty()) continue;
    // The kernel's NAT chains see only the first packet of a connection.
    if (is_nat(stage) && (result.packet.ct != CtState::new_ || looped)) continue;
    StageResult& out = result.stages.emplace_back();
    out.stage = stage;
    // Before routing the kernel does not know the output interface yet.
    std::string oif = before_routing(stage) ? std::exchange(result.packet.oif, {}) : std::string{};
    const bool nat_dst = before_unsnat(stage) && result.packet.snat_dst;
    const IpAddr dst = result.packet.dst;
    const std::uint16_t dport = result.packet.dport;
    if (nat_dst) {
      result.packet.dst = *result.packet.snat_dst;
      result.packet.dport = result.packet.snat_dport;
    }
    // Before conntrack a packet has no entry: its state reads invalid (untracked once notrack ran; one
    // that conntrack will leave untracked, ICMPv6 neighbour discovery, is not yet).
    const CtState state = result.packet.ct;
    const bool before_conntrack = is_untracked(stage) && !(looped && stage == Stage::untracked_in);
    if (before_conntrack && !result.untracked) result.packet.ct = CtState::invalid;
    out.verdict = StageWalker(rs, stage, result.packet, result, out, looped && !before_conntrack).run(def);
    if (before_conntrack && !result.untracked) result.packet.ct = state;
    if (before_routing(stage)) result.packet.oif = std::move(oif);
    if (nat_dst) {
      result.packet.dst = dst;
      result.packet.dport = dport;
    }
    if (out.verdict == Verdict::drop || out.verdict == Verdict::reject) {
      result.delivered = false;
      return;
    }
  }
}

bool to_itself(const Packet& p) {
  return p.iif.empty() && p.oif == "lo";
}

// The reply to an ICMP request conntrack tracks (echo, timestamp, information and address mask; ICMPv6
// echo and node information), which only such a request can start; none for any other type.
std::optional<std::uint8_t> icmp_reply_type(std::uint8_t protocol, std::uint8_t type) {
  if (protocol == 1 && type == 8) return 0;
  if ((protocol == 1 && (type == 13 || type == 15 || type == 17)) ||
      (protocol == 58 && (type == 128 || type == 139)))
    return static_cast<std::uint8_t>(type + 1);
  return std::nullopt;
}

}  // namespace

CtState first_packet_state(Family family, std::uint8_t protocol, std::uint8_t icmp_type) {
  if (protocol != 1 && protocol != 58) return CtState::new_;
  // Conntrack's ICMP trackers take only their own family's: ICMPv6 in IPv4 (or ICMP in IPv6) is invalid.
  if (protocol != (family == Family::ipv6 ? 58 : 1)) return CtState::invalid;
  if (icmp_reply_type(protocol, icmp_type).has_value()) return CtState::new_;  // a query conntrack tracks
  // Router solicitation and advertisement, neighbour solicitation and advertisement, MLD (130-132, 143).
  if (protocol == 58 && ((icmp_type >= 130 && icmp_type <= 136) || icmp_type == 143))
    return CtState::untracked;
  return CtState::invalid;
}

Result evaluate(const Ruleset& rs, const Packet& packet) {
  Result result;
  result.path = path_of(packet);
  result.packet = packet;
  if (!result.packet.ct_orig_dport) result.packet.ct_orig_dport = packet.dport;
  walk(rs, stages_of(result.path), false, result);
  if (!to_itself(packet) || !result.delivered) return result;
  // Out on lo, then in on lo: the same packet, with its mark and conntrack entry; the allow mark is
  // cleared as at the start of every path.
  result.packet.iif = "lo";
  result.packet.oif.clear();
  result.allow_mark = false;
  walk(rs, stages_of(Path::input), true, result);
  return result;
}

Packet reply_of(const Packet& original, const Result& result) {
  Packet reply = result.packet;
  std::swap(reply.src, reply.dst);
  std::swap(reply.sport, reply.dport);
  reply.iif = original.oif;
  reply.oif = original.iif;
  if (to_itself(original)) {  // its reply goes out on lo and comes back in on lo too
    reply.iif.clear();
    reply.oif = "lo";
  }
  reply.src = result.packet.dst;
  reply.dst = original.src;
  reply.dport = original.sport;
  // Its connection's original direction is the original packet's, unless that left no entry.
  reply.ct_orig_dport = result.untracked ? std::nullopt : result.packet.ct_orig_dport;
  if (result.packet.src != original.src || result.packet.sport != original.sport) {
    reply.snat_dst = result.packet.src;
    reply.snat_dport = result.packet.sport;
  }
  // An untracked original left no entry: its reply meets conntrack as a packet of its own, which a TCP
  // SYN+ACK or an echo reply cannot start.
  const std::optional<std::uint8_t> icmp_reply = icmp_reply_type(reply.protocol, original.icmp_type);
  const bool reply_only = reply.protocol == 6 || icmp_reply.has_value();
  reply.ct = !result.untracked ? CtState::established : reply_only ? CtState::invalid : CtState::new_;
  reply.mark = 0;
  reply.src_mac.reset();
  reply.src_route.reset();  // the route to the original's destination leads back where the reply comes from
  reply.pkt_type = "unicast";  // to the original's sender, as what the host sends always is
  if (icmp_reply) reply.icmp_type = *icmp_reply;
  return reply;
}

Packet later_of(const Packet& original, const Result& result, const Result& reply_result) {
  Packet later = original;
  // A tracked connection whose SYN+ACK went untracked: conntrack takes the ACK after a SYN for invalid.
  later.ct = result.untracked         ? CtState::new_
             : reply_result.untracked ? CtState::invalid
                                      : CtState::established;
  later.ct_status = result.packet.ct_status;
  if (result.packet.dst != original.dst || result.packet.dport != original.dport) {
    later.dnat_dst = result.packet.dst;
    later.dnat_dport = result.packet.dport;
  }
  return later;
}

}  // namespace fwe::trace
