// mapping.cpp - firewalld's packet path (spec firewalld.md §2, §3, §5) expressed in the IR (docs/ir.md).
//
// One section per stage; its endpoints are the zones in firewalld's classification order (§2), the
// default zone's catch-all last:
//   input, forward  by ingress binding: prelude (ct status dnat, lo, invalid; RFC3964 in forward), then
//                   policies < 0, the zone's pre/log/deny/allow/post, policies >= 0, the ICMP rule (input);
//                   the zone target is the endpoint default
//   output          one endpoint: (2.x: ct status dnat,) lo, RFC3964, HOST->X policies; otherwise no verdict
//                   (OUTPUT policy accept)
//   prednat, dnat   by ingress binding: rich marks and forward-ports (zone Z->ANY), and policies
//   dnat-out        one endpoint: the forward-ports of HOST->X policies (nat OUTPUT)
//   snat            by egress binding: masquerade (zone ANY->Z), and policies
// Compat::v2 runs the policies of the zone a packet was classified into, the other side being the exclusive
// classification of the other direction; Compat::v1_3 matches every policy's raw bindings from every zone
// (quirk Q1) and ignores the default zone's catch-all for policies (Q2).
#include "mapping.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <numeric>
#include <set>
#include <tuple>
#include <utility>
#include <variant>

#include "direct.hpp"
#include "values.hpp"

namespace fwe::firewalld {
namespace {

using ir::Stage;

constexpr std::uint8_t kTcp = 6, kIcmp = 1, kIcmp6 = 58;
constexpr std::string_view kAdminProhibited = "icmp-admin-prohibited";

ir::Family to_ir(Family family) {
  switch (family) {
    case Family::ipv4:
      return ir::Family::ipv4;
    case Family::ipv6:
      return ir::Family::ipv6;
    case Family::any:
      break;
  }
  return ir::Family::any;
}

bool is_filter(Stage stage) {
  return stage == Stage::input || stage == Stage::forward || stage == Stage::output;
}
bool before_routing(Stage stage) {
  return stage == Stage::prednat || stage == Stage::dnat;
}
// firewalld's short chain names, for LogDenied prefixes.
std::string_view short_name(Stage stage) {
  return stage == Stage::input ? "IN" : stage == Stage::forward ? "FWD" : "OUT";
}

// firewalld's sub-chains of a zone or policy, in evaluation order (§3.3).
enum class Sub : std::uint8_t { pre, log, deny, allow, post };
constexpr std::array kSubs{Sub::pre, Sub::log, Sub::deny, Sub::allow, Sub::post};
std::string_view to_string(Sub sub) {
  switch (sub) {
    case Sub::pre:
      return "pre";
    case Sub::log:
      return "log";
    case Sub::deny:
      return "deny";
    case Sub::allow:
      return "allow";
    case Sub::post:
      return "post";
  }
  return "";
}

// Rules of one zone or policy in one stage, by sub-chain. pre and post are sorted by rich-rule priority
// (stable: ties keep load order), as firewalld inserts them.
struct Parts {
  std::vector<std::pair<std::int32_t, ir::Rule>> pre, post;
  std::vector<ir::Rule> log, deny, allow;

  void add(Sub sub, std::int32_t priority, ir::Rule rule) {
    switch (sub) {
      case Sub::pre:
        pre.emplace_back(priority, std::move(rule));
        break;
      case Sub::post:
        post.emplace_back(priority, std::move(rule));
        break;
      case Sub::log:
        log.push_back(std::move(rule));
        break;
      case Sub::deny:
        deny.push_back(std::move(rule));
        break;
      case Sub::allow:
        allow.push_back(std::move(rule));
        break;
    }
  }

  std::vector<ir::Rule> rules(Sub sub) const {
    auto sorted = [](std::vector<std::pair<std::int32_t, ir::Rule>> list) {
      std::stable_sort(list.begin(), list.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<ir::Rule> out;
      for (auto& [priority, rule] : list) out.push_back(std::move(rule));
      return out;
    };
    switch (sub) {
      case Sub::pre:
        return sorted(pre);
      case Sub::post:
        return sorted(post);
      case Sub::log:
        return log;
      case Sub::deny:
        return deny;
      case Sub::allow:
        return allow;
    }
    return {};
  }
};

// A zone or a policy as far as its primitives are concerned.
struct Owner {
  std::string key;    // "zone/public", "policy/allow-host-ipv6": chain and set names start with it
  std::string label;  // "zone public": Origin::policy
  ir::Origin origin;
  std::map<Stage, Parts> parts;
  std::map<Stage, std::vector<std::string>> chains;  // the non-empty sub-chains, in order
};

// One interface or source binding of a zone, as the classifier of each direction.
struct Binding {
  const Zone* zone = nullptr;
  bool interface = false;
  ir::EndpointMatch in, out;  // by iif/saddr (ingress), by oif/daddr (egress)
  bool egress = true;         // a MAC classifies only ingress
  ir::Family family = ir::Family::any;
  std::string text;  // the binding as firewalld writes it: sort key (2.x) and endpoint name
  SourceLoc loc;
};

ir::Match rule_match(const ir::EndpointMatch& m) {
  ir::Match match;
  if (m.iif) match.iif = std::vector<ir::IfacePattern>{*m.iif};
  if (m.oif) match.oif = std::vector<ir::IfacePattern>{*m.oif};
  if (m.src_set) match.src_addr.push_back({false, *m.src_set});
  if (m.dst_set) match.dst_addr.push_back({false, *m.dst_set});
  if (m.src_mac) match.src_mac = *m.src_mac;
  return match;
}

// ICMP type names as firewalld 1.3.3's nftables backend numbers them (spec §1.7); -1 = none.
struct IcmpCode {
  int type = -1, code = -1;
};
struct IcmpName {
  std::string_view name;
  IcmpCode v4, v6;
};
constexpr IcmpName kIcmpTypes[] = {
    {"echo-request", {8}, {128}},
    {"echo-reply", {0}, {129}},
    {"destination-unreachable", {3}, {1}},
    {"port-unreachable", {3, 3}, {1, 4}},
    {"communication-prohibited", {3, 13}, {1, 1}},
    {"host-prohibited", {3, 10}, {}},
    {"network-prohibited", {3, 8}, {}},
    {"host-unreachable", {3, 1}, {}},
    {"network-unreachable", {3, 0}, {}},
    {"protocol-unreachable", {3, 2}, {}},
    {"fragmentation-needed", {3, 4}, {}},
    {"source-route-failed", {3, 5}, {}},
    {"network-unknown", {3, 6}, {}},
    {"host-unknown", {3, 7}, {}},
    {"tos-network-unreachable", {3, 11}, {}},
    {"tos-host-unreachable", {3, 12}, {}},
    {"host-precedence-violation", {3, 14}, {}},
    {"precedence-cutoff", {3, 15}, {}},
    {"address-unreachable", {}, {1, 3}},
    {"beyond-scope", {}, {1, 2}},
    {"failed-policy", {}, {1, 5}},
    {"reject-route", {}, {1, 6}},
    {"no-route", {}, {1, 0}},
    {"packet-too-big", {}, {2}},
    {"time-exceeded", {11}, {3}},
    {"ttl-zero-during-transit", {11, 0}, {3, 0}},
    {"ttl-zero-during-reassembly", {11, 1}, {3, 1}},
    {"parameter-problem", {12}, {4}},
    {"ip-header-bad", {12, 1}, {}},
    {"required-option-missing", {12, 1}, {}},
    {"bad-header", {}, {4, 0}},
    {"unknown-header-type", {}, {4, 1}},
    {"unknown-option", {}, {4, 2}},
    {"redirect", {5}, {137}},
    {"network-redirect", {5, 0}, {}},
    {"host-redirect", {5, 1}, {}},
    {"tos-network-redirect", {5, 2}, {}},
    {"tos-host-redirect", {5, 3}, {}},
    {"router-advertisement", {9}, {134}},
    {"router-solicitation", {10}, {133}},
    {"neighbour-advertisement", {}, {136}},
    {"neighbour-solicitation", {}, {135}},
    {"source-quench", {4}, {}},
    {"timestamp-request", {13}, {}},
    {"timestamp-reply", {14}, {}},
};

// Where firewalld 2.4+ (firewall/core/icmp.py) numbers a type differently from 1.3.3's table above.
constexpr IcmpName kIcmpTypesV2[] = {
    {"network-prohibited", {3, 9}, {}},
    {"tos-network-unreachable", {3, 0}, {}},
    {"tos-host-unreachable", {3, 1}, {}},
    {"tos-host-redirect", {5, 1}, {}},
    {"ip-header-bad", {12, 0}, {}},
    {"router-solicitation", {10}, {133, 0}},
    {"router-advertisement", {9}, {134, 0}},
    {"neighbour-solicitation", {}, {135, 0}},
    {"neighbour-advertisement", {}, {136, 0}},
    {"redirect", {5}, {137, 0}},
    {"mld-listener-query", {}, {130}},
    {"mld-listener-report", {}, {131}},
    {"mld-listener-done", {}, {132}},
    {"mld2-listener-report", {}, {143}},
};

std::uint8_t log_level(std::string_view level) {
  constexpr std::array<std::string_view, 8> levels{"emerg",   "alert",  "crit", "error",
                                                   "warning", "notice", "info", "debug"};
  for (std::size_t i = 0; i < levels.size(); ++i)
    if (levels[i] == level) return static_cast<std::uint8_t>(i);
  return 4;  // firewalld's default: warning
}

// nft's limit without an explicit burst allows 5 packets at once (S45); say so for every backend.
// A burst of 0 is none (firewalld leaves it out of the rule).
ir::RateLimit rate_limit(const RichLimit& limit) {
  std::string unit = limit.unit;
  if (unit == "s") unit = "second";
  if (unit == "m") unit = "minute";
  if (unit == "h") unit = "hour";
  if (unit == "d") unit = "day";
  return {limit.rate, unit, limit.burst != 0 ? limit.burst : 5};
}

bool symbolic(const std::vector<std::string>& zones) {
  return zones.size() == 1 && (zones.front() == "ANY" || zones.front() == "HOST");
}
bool is(const std::vector<std::string>& zones, std::string_view name) {
  return zones.size() == 1 && zones.front() == name;
}

// The protocol number of a port spec; the reader only lets tcp, udp, sctp and dccp through.
std::uint8_t protocol_of(const std::string& name) {
  return ir::parse_protocol(name).value_or(kTcp);
}

class Mapper {
 public:
  Mapper(const Config& config, Diagnostics& diag)
      : config_(config), diag_(diag), v2_(config.compat == Compat::v2) {}

  ir::Ruleset run() {
    resolve_default_zone();
    if (default_zone_ == nullptr) return std::move(ruleset_);
    bind_zones();
    select_policies();
    // A zone with no binding that is not the default zone classifies nothing.
    for (const auto& [name, zone] : config_.zones) {
      if (bound_zones_.contains(name) || &zone == default_zone_) add_zone(zone);
    }
    for (const Policy* policy : policies_) add_policy(*policy);
    for (auto& [key, owner] : owners_) materialise(owner);
    build_zone_stage(Stage::prednat);
    build_rpfilter();
    build_zone_stage(Stage::dnat);
    build_zone_stage(Stage::input);
    build_zone_stage(Stage::forward);
    build_host_nat();
    build_output();
    build_zone_stage(Stage::snat);
    build_direct();
    return std::move(ruleset_);
  }

 private:
  // ---- settings ----------------------------------------------------------------------------------
  // The reader has already applied firewalld's fallback (public, external, block: S44).
  void resolve_default_zone() {
    const std::string& name = config_.settings.default_zone;
    if (auto it = config_.zones.find(name); it != config_.zones.end()) {
      default_zone_ = &it->second;
      return;
    }
    diag_.error(config_.settings.default_zone_loc.value_or(config_.settings.loc),
                "DefaultZone '" + name + "' does not exist", "set DefaultZone to an existing zone");
  }

  // ---- direct.xml (§1.7) --------------------------------------------------------------------------
  // With firewalld's nftables backend, iptables runs the direct rules in the built-in chains themselves,
  // at priorities just before firewalld's own chains: they are a section of their own, first in the
  // chain's stage. DROP and REJECT there are final; ACCEPT ends only the direct rules, and firewalld's
  // chains still judge the packet (S41, S42) - as a later section replaces an earlier one's accept.
  static std::optional<Stage> direct_stage(const std::string& table, const std::string& chain) {
    static const std::map<std::pair<std::string_view, std::string_view>, Stage> kStages = {
        {{"raw", "PREROUTING"}, Stage::untracked_in}, {{"raw", "OUTPUT"}, Stage::untracked_out},
        {{"mangle", "PREROUTING"}, Stage::prednat},   {{"nat", "PREROUTING"}, Stage::dnat},
        {{"filter", "INPUT"}, Stage::input},          {{"filter", "FORWARD"}, Stage::forward},
        {{"nat", "OUTPUT"}, Stage::dnat_out},         {{"filter", "OUTPUT"}, Stage::output},
        {{"nat", "POSTROUTING"}, Stage::snat}};
    auto it = kStages.find({table, chain});
    if (it == kStages.end()) return std::nullopt;
    return it->second;
  }

  static bool builtin_chain(const std::string& chain) {
    return chain == "PREROUTING" || chain == "INPUT" || chain == "FORWARD" || chain == "OUTPUT" ||
           chain == "POSTROUTING";
  }

  // Why iptables would not take the rule's target or interfaces where it is, if it would not.
  static std::optional<std::string> misplaced(const ir::Rule& rule, const std::string& table,
                                              std::optional<Stage> stage) {
    const ir::ActionKind kind = rule.action.kind;
    const bool nat = kind == ir::ActionKind::dnat || kind == ir::ActionKind::redirect ||
                     kind == ir::ActionKind::snat || kind == ir::ActionKind::masquerade;
    if (nat && !stage) return "NAT targets are carried over only in the built-in chains of table nat";
    if ((kind == ir::ActionKind::dnat || kind == ir::ActionKind::redirect) && stage != Stage::dnat &&
        stage != Stage::dnat_out)
      return "iptables takes DNAT and REDIRECT only in nat PREROUTING and OUTPUT";
    if ((kind == ir::ActionKind::snat || kind == ir::ActionKind::masquerade) && stage != Stage::snat)
      return "iptables takes SNAT and MASQUERADE only in nat POSTROUTING";
    if (kind == ir::ActionKind::notrack && table != "raw") return "iptables takes NOTRACK only in table raw";
    if (kind == ir::ActionKind::reject && table != "filter")
      return "iptables takes REJECT only in table filter";
    if (stage && rule.match.ct_status &&
        (ir::is_untracked(*stage) || *stage == Stage::dnat || *stage == Stage::dnat_out ||
         *stage == Stage::snat))
      return "--ctstate SNAT/DNAT is carried over only after the NAT chains";
    if (stage && rule.match.oif &&
        (*stage == Stage::untracked_in || *stage == Stage::prednat || *stage == Stage::dnat))
      return "-o cannot be used before routing";
    if (stage && rule.match.iif &&
        (*stage == Stage::untracked_out || *stage == Stage::dnat_out || *stage == Stage::output ||
         *stage == Stage::snat))
      return "-i cannot be used on the output path";
    return std::nullopt;
  }

  void build_direct() {
    const Settings& settings = config_.settings;
    if (settings.firewall_backend == "iptables" && !config_.direct.empty())
      diag_.warning(
          settings.firewall_backend_loc.value_or(settings.loc),
          "FirewallBackend=iptables: the direct rules are carried over as with firewalld's nftables "
          "backend, where a direct ACCEPT ends only the direct rules; with iptables it is final",
          "switch firewalld to FirewallBackend=nftables (2.x's default) before migrating, or turn "
          "such ACCEPT rules into zone or policy rules");
    auto ignored = [&](const DirectRule& rule, const std::string& what, const std::string& why) {
      diag_.warning(rule.loc, "direct " + what + " is not carried over: " + why,
                    "express it as a rich rule or a policy");
    };
    // Custom chains: <ipv> <table> <name>, declared by <chain>.
    std::set<std::tuple<std::string, std::string, std::string>> custom;
    for (const DirectRule& rule : config_.direct) {
      if (rule.kind != DirectRule::Kind::chain) continue;
      const std::string what = "chain '" + rule.ipv + " " + rule.table + " " + rule.chain + "'";
      if (rule.ipv == "eb")
        ignored(rule, what, "ebtables rules have no place in the IR");
      else if (builtin_chain(rule.chain))
        ignored(rule, what, "a built-in chain cannot be declared");
      else
        custom.insert({rule.ipv, rule.table, rule.chain});
    }
    std::vector<const DirectRule*> rules;
    for (const DirectRule& rule : config_.direct) {
      if (rule.kind == DirectRule::Kind::passthrough)
        ignored(rule, "passthrough '" + rule.ipv + " " + rule.args + "'",
                "a passthrough is an iptables command, not a rule");
      if (rule.kind == DirectRule::Kind::rule) rules.push_back(&rule);
    }
    std::stable_sort(rules.begin(), rules.end(),
                     [](const DirectRule* a, const DirectRule* b) { return a->priority < b->priority; });
    std::map<Stage, std::string> stage_chains;
    for (const DirectRule* rule : rules) {
      const std::string what =
          "rule '" + rule->ipv + " " + rule->table + " " + rule->chain + " " + rule->args + "'";
      if (rule->ipv == "eb") {
        ignored(*rule, what, "ebtables rules have no place in the IR");
        continue;
      }
      const std::optional<Stage> stage = direct_stage(rule->table, rule->chain);
      const bool declared = custom.contains({rule->ipv, rule->table, rule->chain});
      if (!stage && !declared) {
        ignored(*rule, what,
                builtin_chain(rule->chain) ? rule->table + " " + rule->chain + " has no stage in the IR"
                                           : "chain " + rule->chain + " is not declared by a <chain>");
        continue;
      }
      const ir::Family family = rule->ipv == "ipv6" ? ir::Family::ipv6 : ir::Family::ipv4;
      auto parsed = parse_direct_args(rule->args, family);
      if (const auto* why = std::get_if<std::string>(&parsed)) {
        ignored(*rule, what, *why);
        continue;
      }
      DirectRuleIr& d = std::get<DirectRuleIr>(parsed);
      if (auto why = misplaced(d.rule, rule->table, stage)) {
        ignored(*rule, what, *why);
        continue;
      }
      if (d.rule.action.kind == ir::ActionKind::jump) {
        if (!custom.contains({rule->ipv, rule->table, d.rule.action.target})) {
          ignored(*rule, what, "chain " + d.rule.action.target + " is not declared by a <chain>");
          continue;
        }
        d.rule.action.target = direct_chain_name(rule->ipv, rule->table, d.rule.action.target);
      }
      const std::size_t index = static_cast<std::size_t>(rule - config_.direct.data());
      d.rule.origin = {rule->loc,
                       "direct rule " + rule->ipv + " " + rule->table + " " + rule->chain + ": " + rule->args,
                       -1};
      for (auto [addresses, side, source] :
           {std::tuple{&d.source, "source", true}, std::tuple{&d.destination, "destination", false}}) {
        if (!*addresses) continue;
        const std::string set = "direct/" + std::to_string(index) + "/" + side;
        add_set(set, (*addresses)->cidrs, d.rule.origin);
        (source ? d.rule.match.src_addr : d.rule.match.dst_addr).push_back({(*addresses)->negate, set});
      }
      const std::string chain = stage ? "direct/" + rule->table + "/" + rule->chain
                                      : direct_chain_name(rule->ipv, rule->table, rule->chain);
      if (stage) stage_chains[*stage] = chain;
      auto [it, fresh] = ruleset_.chains.try_emplace(chain, ir::Chain{chain, {}, d.rule.origin});
      it->second.rules.push_back(std::move(d.rule));
    }
    for (const auto& [stage, chain] : stage_chains) {
      ir::Endpoint endpoint;
      endpoint.name = "direct";
      endpoint.origin = ruleset_.chains.at(chain).origin;
      endpoint.groups.push_back(ir::Group{"direct", {chain}, ir::Verdict::continue_, {}, endpoint.origin});
      auto& sections = ruleset_.stage(stage).sections;
      sections.insert(sections.begin(), ir::Section{"direct", false, {std::move(endpoint)}});
    }
  }

  static std::string direct_chain_name(const std::string& ipv, const std::string& table,
                                       const std::string& name) {
    return "direct/" + ipv + "/" + table + "/" + name;
  }

  // ---- zone bindings and classification order (§2) ------------------------------------------------
  void bind_zones() {
    catch_all_ = default_zone_;
    std::vector<Binding> sources, interfaces;
    for (const auto& [name, zone] : config_.zones) {
      std::size_t index = 0;
      for (const ZoneSource& source : zone.sources) {
        Binding b;
        b.zone = &zone;
        b.loc = source.loc;
        if (source.kind == ZoneSource::Kind::ipset) {
          auto ref = ipset(source.ipset, source.loc, true);
          if (!ref) continue;
          if (ref->macs) {
            b.in.src_mac = *ref->macs;
            b.egress = false;
          } else {
            b.in.src_set = b.out.dst_set = ref->set;
            b.family = ref->family;
          }
          b.text = "ipset:" + source.ipset;
        } else if (source.mac) {
          b.in.src_mac = std::vector<ir::MacAddr>{*source.mac};
          b.egress = false;
          b.text = ir::to_string(*source.mac);
        } else if (source.cidr) {
          const std::string set = "zone/" + name + "/source" + std::to_string(index++);
          add_set(set, {*source.cidr}, {source.loc, "zone " + name, -1});
          b.in.src_set = b.out.dst_set = set;
          b.family = source.cidr->addr.family;
          b.text = ir::to_string(*source.cidr);
        } else {
          continue;
        }
        sources.push_back(std::move(b));
      }
      for (const ZoneInterface& iface : zone.interfaces) {
        if (v2_ && iface.pattern.prefix && iface.pattern.name.empty()) {
          // 2.x binds "+" as it binds the default zone's catch-all (fw.py adds "+" to the default zone):
          // dispatched after every other binding, by zone name among the catch-alls, and without a
          // <forward/> rule (fw_zone.py's _interface skips "+"). The first by name is the catch-all.
          bound_zones_.insert(name);
          if (zone.name < catch_all_->name) catch_all_ = &zone;
          continue;
        }
        Binding b;
        b.zone = &zone;
        b.interface = true;
        b.loc = iface.loc;
        b.in.iif = b.out.oif = iface.pattern;
        b.text = ir::to_string(iface.pattern);
        interfaces.push_back(std::move(b));
      }
    }
    bindings_ = std::move(sources);
    const std::size_t source_count = bindings_.size();
    bindings_.insert(bindings_.end(), interfaces.begin(), interfaces.end());
    for (const Binding& b : bindings_) bound_zones_.insert(b.zone->name);

    std::vector<const Binding*> order;
    for (const Binding& b : bindings_) order.push_back(&b);
    if (v2_) {
      // 2.x: ascending (priority, sources first, zone name, binding), for each direction.
      auto sorted = [&](bool ingress) {
        std::vector<const Binding*> out = order;
        std::stable_sort(out.begin(), out.end(), [&](const Binding* a, const Binding* b) {
          auto key = [&](const Binding* x) {
            return std::tuple<std::int32_t, bool, const std::string&, const std::string&>(
                ingress ? x->zone->ingress_priority : x->zone->egress_priority, x->interface, x->zone->name,
                x->text);
          };
          return key(a) < key(b);
        });
        return out;
      };
      ingress_order_ = sorted(true);
      egress_order_ = sorted(false);
    } else {
      // 1.3.3: sources by zone name in file order, then interfaces with the zone applied last (sorting
      // last) first and, inside a zone, the last-listed interface first (S56, S57).
      std::reverse(order.begin() + static_cast<std::ptrdiff_t>(source_count), order.end());
      ingress_order_ = egress_order_ = order;
    }
  }

  struct IpsetRef {
    std::string set;                               // hash:ip, hash:net
    std::optional<std::vector<ir::MacAddr>> macs;  // hash:mac
    ir::Family family = ir::Family::any;
  };

  std::optional<IpsetRef> ipset(const std::string& name, SourceLoc use, bool source) {
    auto it = config_.ipsets.find(name);
    if (it == config_.ipsets.end()) {
      diag_.error(use, "ipset '" + name + "' does not exist", "define it in ipsets/" + name + ".xml");
      return std::nullopt;
    }
    const IpSet& set = it->second;  // with a timeout, the reader has already dropped the entries
    if (set.type == "hash:mac") {
      if (!source) {
        diag_.error(use, "ipset '" + name + "' of type hash:mac cannot match a destination",
                    "use a hash:ip or hash:net ipset");
        return std::nullopt;
      }
      IpsetRef ref;
      ref.macs = set.macs;
      return ref;
    }
    if (set.type != "hash:ip" && set.type != "hash:net") {
      diag_.error(use, "ipset '" + name + "' of type " + set.type + " is not supported by the IR",
                  "use a hash:ip, hash:net or hash:mac ipset");
      return std::nullopt;
    }
    IpsetRef ref;
    ref.set = "ipset/" + name;
    ref.family = to_ir(set.family);
    if (!ruleset_.sets.contains(ref.set)) {
      add_set(ref.set, set.addresses, {set.loc, "ipset " + name, -1});
    }
    return ref;
  }

  void add_set(const std::string& name, std::vector<ir::Cidr> cidrs, const ir::Origin& origin) {
    ruleset_.sets[name] = ir::AddrSet{{cidrs.begin(), cidrs.end()}, origin};
  }

  // ---- policies: which are active, what they touch (§5.1, §5.2) -----------------------------------
  bool zone_active(const std::string& name) const {
    return bound_zones_.contains(name) || (v2_ && name == default_zone_->name);
  }
  bool side_active(const std::vector<std::string>& zones) const {
    return symbolic(zones) ||
           std::any_of(zones.begin(), zones.end(), [&](const std::string& z) { return zone_active(z); });
  }

  void select_policies() {
    for (const auto& [name, policy] : config_.policies) {
      if (policy.disabled) {
        diag_.note(policy.loc, "policy '" + name + "' is disabled (<disable/>)",
                   "remove <disable/> from its file to enable it");
      } else if (side_active(policy.ingress_zones) && side_active(policy.egress_zones)) {
        policies_.push_back(&policy);
      } else {
        diag_.note(policy.loc,
                   "policy '" + name + "' is inactive: none of its " +
                       (side_active(policy.ingress_zones) ? "egress" : "ingress") +
                       " zones has an interface or source" +
                       (v2_ ? "" : " (firewalld 1.3 does not count the default zone's catch-all)"),
                   "bind an interface or source to one of them");
      }
    }
    std::stable_sort(policies_.begin(), policies_.end(),
                     [](const Policy* a, const Policy* b) { return a->priority < b->priority; });
  }

  bool egress_zones_without_interfaces(const Policy& policy) const {
    return std::none_of(policy.egress_zones.begin(), policy.egress_zones.end(), [&](const std::string& z) {
      auto it = config_.zones.find(z);
      return it != config_.zones.end() && !it->second.interfaces.empty();
    });
  }

  // The hooks firewalld dispatches a policy from (§5.1 for 1.3.3 with nftables; 2.x dispatches
  // zone->HOST from the PREROUTING hooks too, and forwarding policies from all four).
  bool touches(const Policy& policy, Stage stage) const {
    const bool any_in = is(policy.ingress_zones, "ANY"), any_out = is(policy.egress_zones, "ANY");
    const bool prerouting = stage == Stage::dnat || stage == Stage::prednat;
    if (is(policy.egress_zones, "HOST")) return stage == Stage::input || ((any_in || v2_) && prerouting);
    if (is(policy.ingress_zones, "HOST")) return stage == Stage::output || stage == Stage::dnat_out;
    switch (stage) {
      case Stage::forward:
      case Stage::snat:
        return true;
      case Stage::dnat:
      case Stage::prednat:
        return v2_ || any_out || egress_zones_without_interfaces(policy);
      default:
        return false;
    }
  }

  // Where a forward-port of the zone (no policy) or policy DNATs: the host's own traffic in nat OUTPUT.
  static Stage nat_stage(const Policy* policy) {
    return policy && is(policy->ingress_zones, "HOST") ? Stage::dnat_out : Stage::dnat;
  }

  static Stage filter_stage(const Policy& policy) {
    if (is(policy.egress_zones, "HOST")) return Stage::input;
    if (is(policy.ingress_zones, "HOST")) return Stage::output;
    return Stage::forward;
  }

  // ---- zones and policies into parts ------------------------------------------------------------------
  Owner& owner(const std::string& key, const std::string& label, SourceLoc loc) {
    Owner& o = owners_[key];
    o.key = key;
    o.label = label;
    o.origin = {loc, label, -1};
    return o;
  }

  static ir::Origin origin(const Owner& o, SourceLoc loc, const std::string& what) {
    return {loc, o.label + ": " + what, -1};
  }

  static ir::Rule make_rule(ir::Match match, ir::ActionKind kind, ir::Origin origin) {
    ir::Rule rule;
    rule.match = std::move(match);
    rule.action.kind = kind;
    rule.origin = std::move(origin);
    return rule;
  }

  static ir::Rule reject_rule(ir::Match match, std::string_view with, ir::Origin origin) {
    ir::Rule rule = make_rule(std::move(match), ir::ActionKind::reject, std::move(origin));
    rule.action.reject_with = std::string(with);
    return rule;
  }

  // A LogDenied log rule (§1.2): every denied packet, or only those of one packet type.
  std::optional<ir::Rule> denied_log(ir::Match match, const std::string& prefix, ir::Origin origin,
                                     bool unicast_only_setting = false) const {
    const std::string& mode = config_.settings.log_denied;
    if (mode == "off") return std::nullopt;
    if (unicast_only_setting && mode != "all" && mode != "unicast") return std::nullopt;
    if (mode != "all") match.pkt_type = mode;
    ir::Rule rule = make_rule(std::move(match), ir::ActionKind::log, std::move(origin));
    rule.action.log_prefix = prefix;
    return rule;
  }

  void add_zone(const Zone& zone) {
    Owner& o = owner("zone/" + zone.name, "zone " + zone.name, zone.loc);
    const Body& body = zone.body;
    add_filter_primitives(o, body, Stage::input, zone.icmp_block_inversion, "zone_" + zone.name + "_HOST");
    for (const ForwardPort& fp : body.forward_ports)
      o.parts[Stage::dnat].add(Sub::allow, 0, forward_port_rule(o, nullptr, fp, std::nullopt));
    if (body.masquerade) o.parts[Stage::snat].add(Sub::allow, 0, masquerade_rule(o, *body.masquerade));
    for (std::size_t i : rich_order(body)) add_rich(o, body.rules[i], static_cast<std::int32_t>(i), nullptr);
    if (zone.forward) {
      // Intra-zone forwarding (§5.3): to the zone's own explicit bindings, never the catch-all (S50). After
      // the rich rules' tcp-mss-clamp in the same chain, as firewalld appends it when it binds the zone's
      // interfaces and sources, after applying the zone's policies (fw_zone.py apply_zone_settings).
      for (const Binding& b : bindings_) {
        if (b.zone != &zone || !b.egress) continue;
        o.parts[Stage::forward].add(
            Sub::allow, 0,
            make_rule(rule_match(b.out), ir::ActionKind::accept, origin(o, b.loc, "forward to " + b.text)));
      }
    }
  }

  void add_policy(const Policy& policy) {
    Owner& o = owner("policy/" + policy.name, "policy " + policy.name, policy.loc);
    const Body& body = policy.body;
    add_filter_primitives(o, body, filter_stage(policy), false, policy.name);
    for (const ForwardPort& fp : body.forward_ports) {
      const Stage stage = nat_stage(&policy);
      if (reachable(o, policy, stage, fp.loc, "forward-port"))
        o.parts[stage].add(Sub::allow, 0, forward_port_rule(o, &policy, fp, std::nullopt));
    }
    if (body.masquerade && reachable(o, policy, Stage::snat, *body.masquerade, "masquerade"))
      o.parts[Stage::snat].add(Sub::allow, 0, masquerade_rule(o, *body.masquerade));
    for (std::size_t i : rich_order(body)) add_rich(o, body.rules[i], static_cast<std::int32_t>(i), &policy);
  }

  // The order firewalld applies a body's rich rules in (their chains keep it within a priority): 2.3 and
  // later sort them (fw_policy.py _policy_settings, Rich_Rule.__lt__); 1.3 keeps load order, as 2.0-2.2
  // did. Ties stay in load order.
  std::vector<std::size_t> rich_order(const Body& body) const {
    std::vector<std::size_t> order(body.rules.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (v2_) {
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return body.rules[a].order < body.rules[b].order;
      });
    }
    return order;
  }

  // Whether a policy's primitive lands in a stage firewalld dispatches the policy from.
  bool reachable(const Owner& o, const Policy& policy, Stage stage, SourceLoc loc, const std::string& what) {
    if (touches(policy, stage)) return true;
    diag_.warning(loc,
                  what + " in " + o.label + " has no effect: firewalld does not dispatch this policy in " +
                      std::string(ir::to_string(stage)),
                  "remove it, or change the policy's zones");
    return false;
  }

  // Services, ports, protocols, source ports and icmp-blocks of a zone (Z->HOST) or policy (§3.3).
  void add_filter_primitives(Owner& o, const Body& body, Stage stage, bool inversion,
                             const std::string& log_name) {
    Parts& parts = o.parts[stage];
    for (std::size_t i = 0; i < body.services.size(); ++i) {
      const SourceLoc loc = i < body.service_locs.size() ? body.service_locs[i] : o.origin.loc;
      const ir::Origin from = origin(o, loc, "service " + body.services[i]);
      add_service_helpers(parts, body.services[i], loc, from);
      for (ir::Match& match : expand_service(body.services[i], loc, {}))
        parts.add(Sub::allow, 0, make_rule(std::move(match), ir::ActionKind::accept, from));
    }
    for (const PortSpec& port : body.ports) {
      ir::Match match;
      match.protocols = std::vector<std::uint8_t>{protocol_of(port.protocol)};
      match.dst_port.push_back({false, {port.range}});
      parts.add(Sub::allow, 0,
                make_rule(std::move(match), ir::ActionKind::accept, origin(o, port.loc, "port")));
    }
    for (const PortSpec& port : body.source_ports) {
      ir::Match match;
      match.protocols = std::vector<std::uint8_t>{protocol_of(port.protocol)};
      match.src_port.push_back({false, {port.range}});
      parts.add(Sub::allow, 0,
                make_rule(std::move(match), ir::ActionKind::accept, origin(o, port.loc, "source-port")));
    }
    for (std::size_t i = 0; i < body.icmp_blocks.size(); ++i) {
      const SourceLoc loc = i < body.icmp_block_locs.size() ? body.icmp_block_locs[i] : o.origin.loc;
      const ir::Origin from = origin(o, loc, "icmp-block " + body.icmp_blocks[i]);
      for (ir::Match& match : icmp_matches(body.icmp_blocks[i], ir::Family::any, {}, loc)) {
        if (inversion) {
          parts.add(Sub::allow, 0, make_rule(std::move(match), ir::ActionKind::accept, from));
          continue;
        }
        if (auto log = denied_log(match, "filter_" + log_name + "_ICMP_BLOCK: ", from))
          parts.add(Sub::deny, 0, std::move(*log));
        parts.add(Sub::deny, 0, reject_rule(std::move(match), kAdminProhibited, from));
      }
    }
    for (const ProtocolSpec& protocol : body.protocols) {
      ir::Match match;
      match.protocols = std::vector<std::uint8_t>{protocol.number};
      parts.add(Sub::allow, 0,
                make_rule(std::move(match), ir::ActionKind::accept, origin(o, protocol.loc, "protocol")));
    }
  }

  // ---- services (§1.4) --------------------------------------------------------------------------------
  void collect_services(const std::string& name, SourceLoc loc, std::set<std::string>& seen,
                        std::vector<const Service*>& out) {
    if (!seen.insert(name).second) return;
    auto it = config_.services.find(name);
    if (it == config_.services.end()) {
      diag_.error(loc, "service '" + name + "' does not exist", "define it in services/" + name + ".xml");
      return;
    }
    out.push_back(&it->second);
    for (const std::string& include : it->second.includes)
      collect_services(include, it->second.loc, seen, out);
  }

  // The matches a service's rules start from: <destination> adds a daddr match and limits the service to
  // the families it names.
  std::vector<ir::Match> service_bases(const Service& service, const ir::Match& base) {
    if (!service.destination_v4 && !service.destination_v6) return {base};
    std::vector<ir::Match> bases;
    for (const auto* dest : {&service.destination_v4, &service.destination_v6}) {
      if (!*dest) continue;
      const ir::Family family = (*dest)->addr.family;
      if (base.family != ir::Family::any && base.family != family) continue;
      ir::Match match = base;
      match.family = family;
      match.dst_addr.push_back(ir::AddrMatch(false, **dest));
      bases.push_back(std::move(match));
    }
    return bases;
  }

  // One match per port, protocol and source port of the service and the services it includes.
  std::vector<ir::Match> expand_service(const std::string& name, SourceLoc loc, const ir::Match& base) {
    std::vector<ir::Match> matches;
    std::set<std::string> seen;
    std::vector<const Service*> services;
    collect_services(name, loc, seen, services);
    for (const Service* service : services) {
      for (const ir::Match& b : service_bases(*service, base)) {
        for (const PortSpec& port : service->ports) {
          ir::Match match = b;
          match.protocols = std::vector<std::uint8_t>{protocol_of(port.protocol)};
          match.dst_port.push_back({false, {port.range}});
          matches.push_back(std::move(match));
        }
        for (const ProtocolSpec& protocol : service->protocols) {
          ir::Match match = b;
          match.protocols = std::vector<std::uint8_t>{protocol.number};
          matches.push_back(std::move(match));
        }
        for (const PortSpec& port : service->source_ports) {
          ir::Match match = b;
          match.protocols = std::vector<std::uint8_t>{protocol_of(port.protocol)};
          match.src_port.push_back({false, {port.range}});
          matches.push_back(std::move(match));
        }
      }
    }
    return matches;
  }

  // firewalld assigns the conntrack helpers of a service (and of the services it includes) in the allow
  // sub-chain, before the accepts (§1.4): per helper port, `ct helper set` for new connections to it,
  // whatever their source - a rich rule's addresses and family do not reach its helper rules. A helper
  // without ports only loads a kernel module in firewalld: nothing to assign.
  void add_service_helpers(Parts& parts, const std::string& name, SourceLoc loc, const ir::Origin& from) {
    std::set<std::string> seen;
    std::vector<const Service*> services;
    collect_services(name, loc, seen, services);
    for (const Service* service : services) {
      for (const std::string& helper_name : service->helpers) {
        auto it = config_.helpers.find(helper_name);
        if (it == config_.helpers.end()) continue;  // the reader has reported it
        const Helper& helper = it->second;
        // The kernel's name: the module's without nf_conntrack_ (firewalld's short name), except for
        // H.323, whose module holds two helpers, RAS and Q.931.
        std::string type = helper.module.substr(std::string_view("nf_conntrack_").size());
        std::replace(type.begin(), type.end(), '_', '-');
        if (type == "h323") type = helper.name;
        ir::Match base;
        base.family = to_ir(helper.family);
        for (const ir::Match& b : service_bases(*service, base)) {
          for (const PortSpec& port : helper.ports) {
            ir::Match match = b;
            match.protocols = std::vector<std::uint8_t>{protocol_of(port.protocol)};
            match.dst_port.push_back({false, {port.range}});
            ir::Rule rule = make_rule(std::move(match), ir::ActionKind::ct_helper,
                                      {from.loc, from.policy + " (helper " + helper.name + ")", from.rule});
            rule.action.target = type;
            parts.add(Sub::allow, 0, std::move(rule));
          }
        }
      }
    }
  }

  // ---- ICMP (§1.7, §3.5) ------------------------------------------------------------------------------
  // One match per family the icmptype applies to: the rule's family if it has one, else the icmptype's
  // <destination>.
  std::vector<ir::Match> icmp_matches(const std::string& name, ir::Family only, const ir::Match& base,
                                      SourceLoc loc) {
    const IcmpName* known = nullptr;
    for (const IcmpName& entry : kIcmpTypes)
      if (entry.name == name) known = &entry;
    if (v2_) {
      for (const IcmpName& entry : kIcmpTypesV2)
        if (entry.name == name) known = &entry;
    }
    if (known == nullptr) {
      diag_.error(loc, "ICMP type '" + name + "' has no known type number",
                  "use one of firewalld's icmptypes (firewall-cmd --get-icmptypes)");
      return {};
    }
    bool v4 = true, v6 = true;
    if (auto it = config_.icmptypes.find(name); it != config_.icmptypes.end()) {
      v4 = it->second.ipv4;
      v6 = it->second.ipv6;
    }
    if (only != ir::Family::any) {
      v4 = only == ir::Family::ipv4;
      v6 = only == ir::Family::ipv6;
    }
    std::vector<ir::Match> out;
    for (const auto& [family, code, wanted] :
         {std::tuple{ir::Family::ipv4, known->v4, v4}, std::tuple{ir::Family::ipv6, known->v6, v6}}) {
      if (!wanted || code.type < 0) continue;
      ir::Match match = base;
      match.family = family;
      ir::IcmpMatch icmp;
      icmp.v6 = family == ir::Family::ipv6;
      icmp.type = static_cast<std::uint8_t>(code.type);
      if (code.code >= 0) icmp.code = static_cast<std::uint8_t>(code.code);
      match.icmp = icmp;
      out.push_back(std::move(match));
    }
    if (out.empty()) {
      diag_.warning(loc, "ICMP type '" + name + "' does not exist in the rule's family: no rule is generated",
                    "remove it, or change the family");
    }
    return out;
  }

  // ---- NAT --------------------------------------------------------------------------------------------
  ir::Rule forward_port_rule(const Owner& o, const Policy* policy, const ForwardPort& fp,
                             std::optional<ir::Match> rich_base, const ir::Origin* rich_origin = nullptr) {
    ir::Match match;
    if (rich_base) {
      match = *rich_base;
    } else {
      // The zone's own forward-port: the family of to-addr, IPv4 without one (§5.5).
      match.family = fp.to_addr ? fp.to_addr->family : ir::Family::ipv4;
    }
    match.protocols = std::vector<std::uint8_t>{protocol_of(fp.protocol)};
    match.dst_port.push_back({false, {fp.port}});
    ir::Rule rule = make_rule(std::move(match), fp.to_addr ? ir::ActionKind::dnat : ir::ActionKind::redirect,
                              rich_origin ? *rich_origin : origin(o, fp.loc, "forward-port"));
    rule.action.nat_addr = fp.to_addr;
    rule.action.nat_port = fp.to_port;
    if (v2_ && config_.settings.strict_forward_ports) {
      // 2.3+ accepts what it DNATed by the original port alone, in the chain firewalld picks: OUTPUT for
      // the host's own traffic, else FORWARD with a to-addr (even a local one), else INPUT.
      const Stage filter = policy && is(policy->ingress_zones, "HOST") ? Stage::output
                           : fp.to_addr                                ? Stage::forward
                                                                       : Stage::input;
      strict_accepts_[filter].push_back({fp.port, rule.origin});
    }
    return rule;
  }

  // Masquerade, IPv4 only for the zone's own (§5.4), never out of lo.
  ir::Rule masquerade_rule(const Owner& o, SourceLoc loc, std::optional<ir::Match> rich_base = std::nullopt,
                           const ir::Origin* rich_origin = nullptr) {
    ir::Match match;
    if (rich_base) {
      match = *rich_base;
    } else {
      match.family = ir::Family::ipv4;
    }
    match.oif = std::vector<ir::IfacePattern>{{"lo", false}};
    match.oif_negate = true;
    return make_rule(std::move(match), ir::ActionKind::masquerade,
                     rich_origin ? *rich_origin : origin(o, loc, "masquerade"));
  }

  // ---- rich rules (§4.3) ------------------------------------------------------------------------------
  // A rich source or destination into the match; false if it cannot be expressed (already reported).
  bool add_address(ir::Match& match, const std::optional<RichAddress>& address, bool source, SourceLoc loc) {
    if (!address) return true;
    switch (address->kind) {
      case RichAddress::Kind::address: {
        if (!address->cidr) return false;
        (source ? match.src_addr : match.dst_addr).push_back(ir::AddrMatch(address->invert, *address->cidr));
        // `ip saddr != X` still matches only its own family.
        match.family = address->cidr->addr.family;
        return true;
      }
      case RichAddress::Kind::mac:
        if (!address->mac) return false;
        match.src_mac = std::vector<ir::MacAddr>{*address->mac};
        match.src_mac_negate = address->invert;
        return true;
      case RichAddress::Kind::ipset: {
        auto ref = ipset(address->ipset, loc, source);
        if (!ref) return false;
        if (ref->macs) {
          match.src_mac = *ref->macs;
          match.src_mac_negate = address->invert;
          return true;
        }
        if (match.family != ir::Family::any && match.family != ref->family) {
          diag_.error(loc, "ipset '" + address->ipset + "' is of the other address family than the rule",
                      "use an ipset of the rule's family");
          return false;
        }
        (source ? match.src_addr : match.dst_addr).push_back({address->invert, ref->set});
        match.family = ref->family;
        return true;
      }
    }
    return false;
  }

  // hash:ip,port and hash:net,port ipsets pair an address with a protocol and a port. The IR has no
  // concatenated sets, so a rule over such an ipset becomes one rule per (protocol, port) of its
  // entries, each over the addresses that share it.
  struct PortEntryGroup {
    std::uint8_t protocol = kTcp;
    ir::PortRange port;
    std::vector<ir::Cidr> cidrs;
  };

  const IpSet* port_ipset(const std::optional<RichAddress>& address) const {
    if (!address || address->kind != RichAddress::Kind::ipset) return nullptr;
    auto it = config_.ipsets.find(address->ipset);
    if (it == config_.ipsets.end()) return nullptr;
    const std::string& type = it->second.type;
    return type == "hash:ip,port" || type == "hash:net,port" ? &it->second : nullptr;
  }

  // Entries are "ADDRESS,[PROTOCOL:]PORT[-PORT]", the protocol tcp when absent.
  std::optional<std::vector<PortEntryGroup>> port_entry_groups(const IpSet& set) {
    std::vector<PortEntryGroup> groups;
    for (const std::string& entry : set.other_entries) {
      const auto comma = entry.find(',');
      std::optional<ir::Cidr> cidr;
      std::optional<ir::PortRange> port;
      std::string protocol = "tcp";
      if (comma != std::string::npos) {
        cidr = parse_address(entry.substr(0, comma), set.family);
        std::string rest = entry.substr(comma + 1);
        if (const auto colon = rest.find(':'); colon != std::string::npos) {
          protocol = rest.substr(0, colon);
          rest = rest.substr(colon + 1);
        }
        if (is_port_protocol(protocol) || protocol == "udplite") port = parse_port_range(rest);
      }
      if (!cidr || !port || (set.type == "hash:ip,port" && cidr->prefix != cidr->addr.width())) {
        diag_.error(set.loc, "ipset '" + set.name + "': entry '" + entry + "' is not ADDRESS,PROTOCOL:PORT",
                    "write entries like 10.0.0.1,tcp:8080 (protocol tcp, udp, sctp, dccp or udplite)");
        return std::nullopt;
      }
      const std::uint8_t number = protocol_of(protocol);
      auto same = [&](const PortEntryGroup& g) { return g.protocol == number && g.port == *port; };
      auto group = std::find_if(groups.begin(), groups.end(), same);
      if (group == groups.end()) group = groups.insert(groups.end(), PortEntryGroup{number, *port, {}});
      group->cidrs.push_back(*cidr);
    }
    return groups;
  }

  // Replaces each match by its expansions over a port ipset on one side; false if that cannot be done.
  bool expand_port_ipset(std::vector<ir::Match>& matches, const RichRule& rule, bool source,
                         const std::string& set_prefix, const ir::Origin& from) {
    const std::optional<RichAddress>& address = source ? rule.source : rule.destination;
    const IpSet* set = port_ipset(address);
    if (!set) return true;
    if (address->invert) {
      diag_.error(rule.loc,
                  "an inverted ipset of type " + set->type + " cannot be carried over (" + rule.text + ")",
                  "invert a hash:ip or hash:net ipset, or list the allowed entries instead");
      return false;
    }
    auto groups = port_entry_groups(*set);
    if (!groups) return false;
    std::vector<ir::Match> expanded;
    for (const ir::Match& match : matches) {
      for (std::size_t g = 0; g < groups->size(); ++g) {
        const PortEntryGroup& group = (*groups)[g];
        if (match.protocols && std::find(match.protocols->begin(), match.protocols->end(), group.protocol) ==
                                   match.protocols->end()) {
          continue;  // the element names another protocol: this entry can never match
        }
        ir::Match out = match;
        out.protocols = std::vector<std::uint8_t>{group.protocol};
        const std::string name = set_prefix + (source ? "/source/" : "/destination/") + std::to_string(g);
        add_set(name, group.cidrs, from);
        (source ? out.src_addr : out.dst_addr).push_back({false, name});
        (source ? out.src_port : out.dst_port).push_back({false, {group.port}});
        out.family = to_ir(set->family);
        expanded.push_back(std::move(out));
      }
    }
    matches = std::move(expanded);
    return true;
  }

  void add_rich(Owner& o, const RichRule& rule, std::int32_t index, const Policy* policy) {
    const ir::Origin from{rule.loc, o.label + ": " + rule.text, index};
    const RichElement& element = rule.element;
    Stage stage = policy ? filter_stage(*policy) : Stage::input;
    if (element.kind == RichElement::Kind::tcp_mss_clamp) {
      // A zone's clamp is for what it forwards (Z→ANY, §4.3); a policy's where its traffic leaves.
      if (!policy) stage = Stage::forward;
      if (stage == Stage::input) {
        diag_.warning(rule.loc,
                      "tcp-mss-clamp is not carried over: policy " + policy->name +
                          " delivers to the host, where no SYN is forwarded or sent (" + rule.text + ")",
                      "put the clamp in a policy that forwards or sends");
        return;
      }
    }
    if (element.kind == RichElement::Kind::forward_port) stage = nat_stage(policy);
    if (element.kind == RichElement::Kind::masquerade) stage = Stage::snat;
    if (rule.action.kind == RichAction::Kind::mark) {
      stage = Stage::prednat;
      // firewalld has no mangle chain for a policy from HOST (fw_policy.py policy_base_chain_name
      // raises), so it fails the whole configuration and falls back to its stock one.
      if (policy && is(policy->ingress_zones, "HOST")) {
        diag_.error(rule.loc,
                    "a mark rule in policy " + policy->name +
                        ", whose ingress zone is HOST, makes firewalld fail to load the configuration (" +
                        rule.text + ")",
                    "mark the host's own traffic in a policy from a zone, or remove the rule");
        return;
      }
    }
    if (policy && !reachable(o, *policy, stage, rule.loc, "rich rule '" + rule.text + "'")) return;

    ir::Match base;
    base.family = to_ir(rule.family);
    const std::string set_prefix = o.key + "/rule" + std::to_string(index);
    const auto plain = [&](const std::optional<RichAddress>& address) {
      return port_ipset(address) ? std::nullopt : address;  // expanded below, with the element
    };
    if (!add_address(base, plain(rule.destination), false, rule.loc) ||
        !add_address(base, plain(rule.source), true, rule.loc)) {
      return;
    }

    // The element: the matches it stands for, and the action it implies (icmp-block, NAT).
    std::vector<ir::Match> matches;
    std::optional<ir::Rule> implied;
    Sub implied_sub = Sub::allow;
    switch (element.kind) {
      case RichElement::Kind::none:
        matches.push_back(base);
        break;
      case RichElement::Kind::service: {
        matches = expand_service(element.name, rule.loc, base);
        // Only an accepting rule assigns the service's helpers (firewalld loads them only then).
        if (rule.action.kind == RichAction::Kind::accept)
          add_service_helpers(o.parts[stage], element.name, rule.loc, from);
        break;
      }
      case RichElement::Kind::port:
      case RichElement::Kind::source_port: {
        if (!element.port) return;
        ir::Match match = base;
        match.protocols = std::vector<std::uint8_t>{protocol_of(element.port->protocol)};
        (element.kind == RichElement::Kind::port ? match.dst_port : match.src_port)
            .push_back({false, {element.port->range}});
        matches.push_back(std::move(match));
        break;
      }
      case RichElement::Kind::protocol: {
        if (!element.protocol) return;
        ir::Match match = base;
        match.protocols = std::vector<std::uint8_t>{element.protocol->number};
        matches.push_back(std::move(match));
        break;
      }
      case RichElement::Kind::icmp_block:
        // Always a reject, in _deny at priority 0 (§4.3).
        matches = icmp_matches(element.name, base.family, base, rule.loc);
        implied = reject_rule({}, kAdminProhibited, from);
        implied_sub = Sub::deny;
        break;
      case RichElement::Kind::icmp_type:
        matches = icmp_matches(element.name, base.family, base, rule.loc);
        break;
      case RichElement::Kind::masquerade:
        matches.push_back(base);
        implied = masquerade_rule(o, rule.loc, ir::Match{}, &from);
        break;
      case RichElement::Kind::forward_port:
        if (!element.forward_port) return;
        matches.push_back(base);
        implied = forward_port_rule(o, policy, *element.forward_port, ir::Match{}, &from);
        break;
      case RichElement::Kind::tcp_mss_clamp:
        matches.push_back(base);
        // firewalld's clamp rule leaves out the rule's family (build_policy_tcp_mss_clamp_rules): only
        // an address limits it to one (a negated one too: nft adds its family's dependency).
        if (base.src_addr.empty() && base.dst_addr.empty()) matches.back().family = ir::Family::any;
        implied = make_rule(ir::Match{}, ir::ActionKind::tcp_mss_clamp, from);
        if (element.mss_value != "pmtu")
          implied->action.mss = static_cast<std::uint16_t>(std::stoul(element.mss_value));
        break;
    }

    if (!expand_port_ipset(matches, rule, false, set_prefix, from) ||
        !expand_port_ipset(matches, rule, true, set_prefix, from)) {
      return;
    }

    std::optional<ir::Rule> action = implied;
    Sub action_sub = implied_sub;
    if (!implied) action = rich_action(rule, base.family, from, action_sub);
    if (rule.priority < 0) action_sub = Sub::pre;
    if (rule.priority > 0) action_sub = Sub::post;
    const Sub log_sub = rule.priority < 0 ? Sub::pre : rule.priority > 0 ? Sub::post : Sub::log;

    if (rule.audit_present) {
      diag_.warning(rule.loc, "audit is not carried over: the IR has no audit log (" + rule.text + ")",
                    "use a log element instead");
    }
    if (rule.log && rule.log->kind == RichLog::Kind::nflog) {
      diag_.warning(
          rule.loc,
          "nflog is carried over as a kernel log with the same prefix: its group and queue-size are "
          "not (" +
              rule.text + ")",
          "read the kernel log instead of the nflog group");
    }

    // firewalld builds no log rule for a masquerade or a tcp-mss-clamp (build_policy_masquerade_rules,
    // build_policy_tcp_mss_clamp_rules), nor 1.3 (up to 2.0.2) for a forward-port, so nothing is logged.
    const bool logs = rule.log && element.kind != RichElement::Kind::masquerade &&
                      element.kind != RichElement::Kind::tcp_mss_clamp &&
                      (v2_ || element.kind != RichElement::Kind::forward_port);
    if (rule.log && !logs) {
      diag_.warning(rule.loc,
                    "the log of a masquerade, tcp-mss-clamp or (in 1.3) forward-port rule logs nothing in "
                    "firewalld (" +
                        rule.text + ")",
                    "remove the log element, or log in a rule of its own");
    }

    Parts& parts = o.parts[stage];
    for (const ir::Match& match : matches) {
      if (logs) {
        ir::Rule log = make_rule(match, ir::ActionKind::log, from);
        log.action.log_prefix = rule.log->prefix;
        log.action.log_level = log_level(rule.log->level);
        if (rule.log->limit) log.match.rate_limit = rate_limit(*rule.log->limit);
        parts.add(log_sub, rule.priority, std::move(log));
      }
      if (!action) continue;
      ir::Rule out = *action;
      // The element's match, plus what the action brings: tcp-reset's protocol, the NAT's port and
      // masquerade's oif, a limit.
      ir::Match extra = std::move(out.match);
      out.match = match;
      if (extra.oif) {
        out.match.oif = extra.oif;
        out.match.oif_negate = extra.oif_negate;
      }
      if (extra.protocols && !out.match.protocols) out.match.protocols = extra.protocols;
      out.match.dst_port.insert(out.match.dst_port.end(), extra.dst_port.begin(), extra.dst_port.end());
      out.match.rate_limit = extra.rate_limit;
      parts.add(action_sub, rule.priority, std::move(out));
    }
  }

  // The rule's own action (accept, reject, drop, mark), or none for a log-only rule.
  std::optional<ir::Rule> rich_action(const RichRule& rule, ir::Family family, const ir::Origin& from,
                                      Sub& sub) {
    const RichAction& action = rule.action;
    ir::Rule out;
    out.origin = from;
    switch (action.kind) {
      case RichAction::Kind::none:
        return std::nullopt;
      case RichAction::Kind::accept:
        out.action.kind = ir::ActionKind::accept;
        sub = Sub::allow;
        break;
      case RichAction::Kind::drop:
        out.action.kind = ir::ActionKind::drop;
        sub = Sub::deny;
        break;
      case RichAction::Kind::reject: {
        auto with = reject_type(action.reject_type, family);
        if (!with) {
          diag_.error(rule.loc, "unknown reject type '" + action.reject_type + "'",
                      "use one of the types of firewalld's rich language");
          return std::nullopt;
        }
        out.action.kind = ir::ActionKind::reject;
        out.action.reject_with = *with;
        // nft adds the TCP dependency of `reject with tcp reset` itself: other packets do not match.
        if (*with == "tcp-reset") out.match.protocols = std::vector<std::uint8_t>{kTcp};
        sub = Sub::deny;
        break;
      }
      case RichAction::Kind::mark: {
        out.action.kind = ir::ActionKind::set_mark;
        out.action.mark_mask = action.mark_has_mask ? action.mark_mask : 0xffffffff;
        out.action.mark_value = action.mark & out.action.mark_mask;
        if (out.action.mark_value & ir::kReservedMarkBits) {
          diag_.warning(
              rule.loc,
              "mark is not carried over: its value sets bits of 0xf0000000, which fwengine's backends "
              "keep for their own marks (" +
                  rule.text + ")",
              "mark with the lower 28 bits");
          return std::nullopt;
        }
        if (action.mark_has_mask) {
          diag_.warning(
              rule.loc,
              "mark with a mask is carried over as \"set the bits of the mask to the value\" (iptables' "
              "--set-xmark); firewalld's nftables backend computes (mark & mask) ^ value instead (" +
                  rule.text + ")",
              "see docs/firewalld.md");
        }
        sub = Sub::allow;
        break;
      }
    }
    if (action.limit) out.match.rate_limit = rate_limit(*action.limit);
    return out;
  }

  // ---- chains -----------------------------------------------------------------------------------------
  void materialise(Owner& o) {
    for (auto& [stage, parts] : o.parts) {
      for (Sub sub : kSubs) {
        std::vector<ir::Rule> rules = parts.rules(sub);
        if (rules.empty()) continue;
        const std::string name =
            std::string(ir::to_string(stage)) + "/" + o.key + "/" + std::string(to_string(sub));
        ruleset_.chains[name] = ir::Chain{name, std::move(rules), o.origin};
        o.chains[stage].push_back(name);
      }
    }
  }

  const std::vector<std::string>& owner_chains(const std::string& key, Stage stage) {
    static const std::vector<std::string> none;
    auto it = owners_.find(key);
    if (it == owners_.end()) return none;
    auto chains = it->second.chains.find(stage);
    return chains == it->second.chains.end() ? none : chains->second;
  }

  // A policy in one stage: its sub-chains, then its target in the filter stages (§5.1).
  std::optional<std::string> policy_chain(const Policy& policy, Stage stage) {
    const std::string name = std::string(ir::to_string(stage)) + "/policy/" + policy.name;
    if (auto it = policy_chains_.find(name); it != policy_chains_.end()) return it->second;
    const Owner& o = owners_.at("policy/" + policy.name);
    ir::Chain chain{name, {}, o.origin};
    for (const std::string& sub : owner_chains(o.key, stage)) {
      ir::Rule jump = make_rule({}, ir::ActionKind::jump, o.origin);
      jump.action.target = sub;
      chain.rules.push_back(std::move(jump));
    }
    if (is_filter(stage) && policy.target != PolicyTarget::continue_) {
      const ir::Origin target_origin{policy.loc, o.label + ": target", -1};
      const std::string prefix = "filter_" + std::string(short_name(stage)) + "_policy_" + policy.name;
      switch (policy.target) {
        case PolicyTarget::accept:
          chain.rules.push_back(make_rule({}, ir::ActionKind::accept, target_origin));
          break;
        case PolicyTarget::drop:
          if (auto log = denied_log({}, prefix + "_DROP: ", target_origin))
            chain.rules.push_back(std::move(*log));
          chain.rules.push_back(make_rule({}, ir::ActionKind::drop, target_origin));
          break;
        case PolicyTarget::reject:
          if (auto log = denied_log({}, prefix + "_REJECT: ", target_origin))
            chain.rules.push_back(std::move(*log));
          chain.rules.push_back(reject_rule({}, kAdminProhibited, target_origin));
          break;
        case PolicyTarget::continue_:
          break;
      }
    }
    std::optional<std::string> result;
    if (!chain.rules.empty()) {
      ruleset_.chains[name] = std::move(chain);
      result = name;
    }
    policy_chains_[name] = result;
    return result;
  }

  enum class Side { ingress, egress };

  // 2.x: "the other side of the packet is classified into one of these zones", as firewalld's zone
  // dispatch does it: the first binding in classification order decides, the default zone last.
  std::optional<std::string> classified_dispatch(const Policy& policy, Stage stage, Side side,
                                                 const std::string& target) {
    const std::string name = target + (side == Side::ingress ? "/from-ingress-zones" : "/to-egress-zones");
    if (auto it = policy_chains_.find(name); it != policy_chains_.end()) return it->second;
    const auto& zones = side == Side::ingress ? policy.ingress_zones : policy.egress_zones;
    auto listed = [&](const std::string& zone) {
      return std::find(zones.begin(), zones.end(), zone) != zones.end();
    };
    const ir::Origin from{policy.loc, "policy " + policy.name + ": dispatch", -1};
    ir::Chain chain{name, {}, from};
    std::size_t keep = 0;
    for (const Binding* b : side == Side::ingress ? ingress_order_ : egress_order_) {
      if (side == Side::egress && (!b->egress || (before_routing(stage) && b->interface))) continue;
      const ir::Match match = rule_match(side == Side::ingress ? b->in : b->out);
      if (listed(b->zone->name)) {
        ir::Rule jump = make_rule(match, ir::ActionKind::jump, from);
        jump.action.target = target;
        chain.rules.push_back(std::move(jump));
        keep = chain.rules.size();
      }
      chain.rules.push_back(make_rule(match, ir::ActionKind::return_, from));
    }
    // The catch-all ends the egress dispatch before routing too (fw_zone.py's "egress dispatch for
    // default zone" rule is in every stage-2 chain, nat PREROUTING's included): there, where no interface
    // binding can match yet, a packet not bound for a source-bound zone is the catch-all zone's.
    if (listed(catch_all_->name)) {
      ir::Rule jump = make_rule({}, ir::ActionKind::jump, from);
      jump.action.target = target;
      chain.rules.push_back(std::move(jump));
      keep = chain.rules.size();
    }
    chain.rules.resize(keep);  // returns after the last jump change nothing
    std::optional<std::string> result;
    if (!chain.rules.empty()) {
      ruleset_.chains[name] = std::move(chain);
      result = name;
    }
    policy_chains_[name] = result;
    return result;
  }

  // The match alternatives of one side of a policy from its zones' raw bindings (1.3.3); ANY and HOST
  // contribute no match.
  std::vector<Binding> raw_side(const std::vector<std::string>& zones, Side side, Stage stage) const {
    if (symbolic(zones)) return {Binding{}};
    std::vector<Binding> out;
    for (const std::string& zone : zones) {
      for (const Binding& b : bindings_) {
        if (b.zone->name != zone) continue;
        if (side == Side::egress && (!b.egress || (before_routing(stage) && b.interface))) continue;
        out.push_back(b);
      }
    }
    return out;
  }

  // 1.3.3's <stage>_POLICIES_pre/post: one rule per ingress x egress binding pair, from every zone (Q1).
  std::optional<std::string> raw_dispatch(Stage stage, bool pre) {
    const std::string name = std::string(ir::to_string(stage)) + (pre ? "/policies-pre" : "/policies-post");
    if (auto it = policy_chains_.find(name); it != policy_chains_.end()) return it->second;
    ir::Chain chain{name, {}, {config_.settings.loc, "firewalld policy dispatch", -1}};
    for (const Policy* policy : policies_) {
      if ((policy->priority < 0) != pre || !touches(*policy, stage)) continue;
      auto target = policy_chain(*policy, stage);
      if (!target) continue;
      const ir::Origin from{policy->loc, "policy " + policy->name + ": dispatch", -1};
      for (const Binding& in : raw_side(policy->ingress_zones, Side::ingress, stage)) {
        for (const Binding& out : raw_side(policy->egress_zones, Side::egress, stage)) {
          if (in.family != ir::Family::any && out.family != ir::Family::any && in.family != out.family)
            continue;
          ir::Match match = rule_match(in.in);
          const ir::Match egress = rule_match(out.out);
          match.oif = egress.oif;
          match.dst_addr = egress.dst_addr;
          ir::Rule jump = make_rule(std::move(match), ir::ActionKind::jump, from);
          jump.action.target = *target;
          chain.rules.push_back(std::move(jump));
        }
      }
    }
    std::optional<std::string> result;
    if (!chain.rules.empty()) {
      ruleset_.chains[name] = std::move(chain);
      result = name;
    }
    policy_chains_[name] = result;
    return result;
  }

  // The policy chains a packet classified into `zone` meets in `stage`, before (pre) or after the zone's.
  std::vector<std::string> policy_dispatch(Stage stage, const Zone* zone, bool pre) {
    if (!v2_) {
      auto chain = raw_dispatch(stage, pre);
      return chain ? std::vector<std::string>{*chain} : std::vector<std::string>{};
    }
    std::vector<std::string> out;
    // The zone is on the egress side in snat and output (HOST -> zone), on the ingress side otherwise.
    const bool by_egress = stage == Stage::snat;
    for (const Policy* policy : policies_) {
      if ((policy->priority < 0) != pre || !touches(*policy, stage)) continue;
      if (zone != nullptr) {
        const auto& own = by_egress ? policy->egress_zones : policy->ingress_zones;
        if (!is(own, "ANY") && std::find(own.begin(), own.end(), zone->name) == own.end()) continue;
      }
      auto target = policy_chain(*policy, stage);
      if (!target) continue;
      const auto& other = by_egress ? policy->ingress_zones : policy->egress_zones;
      if (symbolic(other)) {
        out.push_back(*target);
      } else if (auto chain =
                     classified_dispatch(*policy, stage, by_egress ? Side::ingress : Side::egress, *target)) {
        out.push_back(*chain);
      }
    }
    return out;
  }

  // ---- stages -----------------------------------------------------------------------------------------
  ir::Origin base_origin(Stage stage) const {
    const std::string chain = stage == Stage::input     ? "filter_INPUT"
                              : stage == Stage::forward ? "filter_FORWARD"
                                                        : "filter_OUTPUT";
    return {config_.settings.loc, "firewalld " + chain, -1};
  }

  // RFC3964_IPv4 (§1.2): IPv6 to IPv4-compatible, -mapped and 6to4 addresses of private IPv4 nets.
  void add_rfc3964(ir::Chain& chain, Stage stage) {
    if (!config_.settings.rfc3964_ipv4) return;
    const std::string set = "rfc3964";
    if (!ruleset_.sets.contains(set)) {
      std::vector<ir::Cidr> cidrs;
      for (const char* text : {"::/96", "::ffff:0:0/96", "2002::/24", "2002:a00::/24", "2002:7f00::/24",
                               "2002:ac10::/28", "2002:c0a8::/32", "2002:a9fe::/32", "2002:e000::/19"})
        cidrs.push_back(*ir::parse_cidr(text));
      add_set(set, std::move(cidrs), {config_.settings.loc, "RFC3964_IPv4", -1});
    }
    ir::Match match;
    match.family = ir::Family::ipv6;
    match.dst_addr.push_back({false, set});
    const ir::Origin from{config_.settings.loc, "RFC3964_IPv4 (" + base_origin(stage).policy + ")", -1};
    if (auto log = denied_log(match, "RFC3964_IPv4_REJECT: ", from, true))
      chain.rules.push_back(std::move(*log));
    chain.rules.push_back(reject_rule(std::move(match), "icmp6-addr-unreachable", from));
  }

  // `ct status dnat accept`: anything DNATed, by firewalld or anyone else. With StrictForwardPorts=yes
  // (2.3+) only what a forward-port DNATed, told by the connection's original port; the rest rejected.
  void add_dnat_accept(ir::Chain& chain, Stage stage, const ir::Origin& from) {
    ir::Match dnat;
    dnat.ct_status = std::vector<ir::CtStatus>{ir::CtStatus::dnat};
    if (!v2_ || !config_.settings.strict_forward_ports) {
      chain.rules.push_back(make_rule(std::move(dnat), ir::ActionKind::accept, from));
      return;
    }
    for (const auto& [port, origin] : strict_accepts_[stage]) {
      ir::Match ours = dnat;
      ours.ct_orig_dport.push_back({false, {port}});
      chain.rules.push_back(make_rule(std::move(ours), ir::ActionKind::accept, origin));
    }
    const ir::Origin strict{config_.settings.loc, from.policy + ": StrictForwardPorts", -1};
    chain.rules.push_back(reject_rule(std::move(dnat), kAdminProhibited, strict));
  }

  // What filter_INPUT/FORWARD/OUTPUT do before the zones (§3.1, §3.4), after the conntrack prelude.
  std::string prelude(Stage stage) {
    const std::string name = std::string(ir::to_string(stage)) + "/prelude";
    if (ruleset_.chains.contains(name)) return name;
    const ir::Origin from = base_origin(stage);
    ir::Chain chain{name, {}, from};
    // 2.3+ accepts DNATed connections in OUTPUT too (before lo), as HOST->X forward-ports make them.
    if (stage != Stage::output || v2_) add_dnat_accept(chain, stage, from);
    if (stage == Stage::output) {
      ir::Match lo;
      lo.oif = std::vector<ir::IfacePattern>{{"lo", false}};
      chain.rules.push_back(make_rule(std::move(lo), ir::ActionKind::accept, from));
      add_rfc3964(chain, stage);
    } else {
      ir::Match lo;
      lo.iif = std::vector<ir::IfacePattern>{{"lo", false}};
      chain.rules.push_back(make_rule(std::move(lo), ir::ActionKind::accept, from));
      ir::Match invalid;
      invalid.ct_states = std::vector<ir::CtState>{ir::CtState::invalid};
      if (auto log = denied_log(invalid, "STATE_INVALID_DROP: ", from))
        chain.rules.push_back(std::move(*log));
      chain.rules.push_back(make_rule(std::move(invalid), ir::ActionKind::drop, from));
      if (stage == Stage::forward) add_rfc3964(chain, stage);
    }
    ruleset_.chains[name] = std::move(chain);
    return name;
  }

  // The ICMP rule of a zone's input (§3.5): ICMP not blocked by then is accepted, or rejected with
  // icmp-block-inversion.
  void add_zone_icmp(ir::Chain& chain, const Zone& zone, const ir::Origin& from) {
    const bool rejects_or_drops = zone.target == ZoneTarget::drop || zone.target == ZoneTarget::reject;
    if (rejects_or_drops) return;
    ir::Match icmp;
    icmp.protocols = std::vector<std::uint8_t>{kIcmp, kIcmp6};
    if (zone.icmp_block_inversion) {
      if (auto log = denied_log(icmp, "filter_zone_" + zone.name + "_HOST_ICMP_BLOCK: ", from))
        chain.rules.push_back(std::move(*log));
      chain.rules.push_back(reject_rule(std::move(icmp), kAdminProhibited, from));
    } else if (zone.target != ZoneTarget::accept) {
      chain.rules.push_back(make_rule(std::move(icmp), ir::ActionKind::accept, from));
    }
  }

  // 2.x: the ICMP rule closes the zone's own policy chain (filter_IN_<zone>, priority 0), so it comes
  // before the policies with a positive priority (nftables.py build_policy_icmp_block_inversion_rules).
  std::optional<std::string> zone_icmp(const Zone& zone) {
    const std::string name = "input/zone/" + zone.name + "/icmp";
    ir::Chain chain{name, {}, {zone.loc, "zone " + zone.name + ": ICMP", -1}};
    add_zone_icmp(chain, zone, chain.origin);
    if (chain.rules.empty()) return std::nullopt;
    ruleset_.chains[name] = std::move(chain);
    return name;
  }

  // The end of filter_IN_<zone> / filter_FWD_<zone> after the policies: in 1.3 the ICMP rule (input
  // only), and the LogDenied log of the target; the target itself is the endpoint's default.
  std::optional<std::string> zone_end(Stage stage, const Zone& zone) {
    const std::string name = std::string(ir::to_string(stage)) + "/zone/" + zone.name + "/end";
    const ir::Origin from{zone.loc, "zone " + zone.name + ": target", -1};
    ir::Chain chain{name, {}, from};
    if (stage == Stage::input && !v2_) add_zone_icmp(chain, zone, from);
    if (zone.target != ZoneTarget::accept) {
      const std::string prefix = zone.target == ZoneTarget::explicit_default
                                     ? "FINAL_REJECT: "
                                     : "filter_" + std::string(short_name(stage)) + "_" + zone.name +
                                           (zone.target == ZoneTarget::drop ? "_DROP: " : "_REJECT: ");
      if (auto log = denied_log({}, prefix, from)) chain.rules.push_back(std::move(*log));
    }
    if (chain.rules.empty()) return std::nullopt;
    ruleset_.chains[name] = std::move(chain);
    return name;
  }

  // The groups of a zone's endpoint in one stage (the same for each of its bindings).
  std::vector<ir::Group> zone_groups(Stage stage, const Zone& zone) {
    const ir::Origin from{zone.loc, "zone " + zone.name, -1};
    std::vector<ir::Group> groups;
    if (stage == Stage::input || stage == Stage::forward)
      groups.push_back(
          ir::Group{"prelude", {prelude(stage)}, ir::Verdict::continue_, {}, base_origin(stage)});
    ir::Group group{"zone/" + zone.name, {}, ir::Verdict::continue_, {}, from};
    auto append = [&](const std::vector<std::string>& chains) {
      group.chains.insert(group.chains.end(), chains.begin(), chains.end());
    };
    append(policy_dispatch(stage, &zone, true));
    append(owner_chains("zone/" + zone.name, stage));
    if (stage == Stage::input && v2_)
      if (auto icmp = zone_icmp(zone)) group.chains.push_back(*icmp);
    append(policy_dispatch(stage, &zone, false));
    if (stage == Stage::input || stage == Stage::forward) {
      if (auto end = zone_end(stage, zone)) group.chains.push_back(*end);
    }
    if (!group.chains.empty()) groups.push_back(std::move(group));
    return groups;
  }

  ir::Endpoint zone_endpoint(Stage stage, const Zone& zone, const std::vector<ir::Group>& groups,
                             ir::EndpointMatch match, std::string name, SourceLoc loc) {
    ir::Endpoint endpoint;
    endpoint.name = std::move(name);
    endpoint.match = std::move(match);
    endpoint.origin = {loc, "zone " + zone.name, -1};
    endpoint.groups = groups;
    if (stage == Stage::input || stage == Stage::forward) {
      endpoint.conntrack = ir::Conntrack::accept_established;
      switch (zone.target) {
        case ZoneTarget::accept:
          endpoint.default_verdict = ir::Verdict::accept;
          break;
        case ZoneTarget::drop:
          endpoint.default_verdict = ir::Verdict::drop;
          break;
        case ZoneTarget::default_:
        case ZoneTarget::reject:
        case ZoneTarget::explicit_default:
          // explicit "default" falls through to the base chain's reject: the same verdict (§1.3).
          endpoint.default_verdict = ir::Verdict::reject;
          endpoint.reject_with = std::string(kAdminProhibited);
          break;
      }
    }
    return endpoint;
  }

  // One endpoint per binding in classification order (egress in snat), the default zone's catch-all last.
  void build_zone_stage(Stage stage) {
    const bool by_egress = stage == Stage::snat;
    std::map<std::string, std::vector<ir::Group>> groups;
    auto groups_of = [&](const Zone& zone) -> const std::vector<ir::Group>& {
      auto it = groups.find(zone.name);
      if (it == groups.end()) it = groups.emplace(zone.name, zone_groups(stage, zone)).first;
      return it->second;
    };
    ir::Section section{"zones", false, {}};
    for (const Binding* b : by_egress ? egress_order_ : ingress_order_) {
      if (by_egress && !b->egress) continue;
      section.endpoints.push_back(zone_endpoint(stage, *b->zone, groups_of(*b->zone),
                                                by_egress ? b->out : b->in, b->zone->name + " " + b->text,
                                                b->loc));
    }
    section.endpoints.push_back(zone_endpoint(
        stage, *catch_all_, groups_of(*catch_all_), {},
        catch_all_->name + (catch_all_ == default_zone_ ? " (default zone)" : " + (before the default zone)"),
        catch_all_->loc));
    if (!is_filter(stage)) {
      // A NAT or mangle endpoint without rules decides nothing; trailing ones need not classify.
      while (!section.endpoints.empty() && section.endpoints.back().groups.empty())
        section.endpoints.pop_back();
      if (section.endpoints.empty()) return;
    }
    ruleset_.stage(stage).sections.push_back(std::move(section));
  }

  // IPv6_rpfilter (§1.2): filter_PREROUTING drops IPv6 packets whose source the host would not route
  // back out of the input interface (out of any, if loose), after letting router advertisements and
  // neighbour solicitations through (a duplicate-address probe comes from ::). It runs after the zones'
  // marks, which the route lookup uses. The -forward modes (2.2+) check forwarded packets only, first
  // thing in filter_FORWARD, without the neighbour-discovery exception.
  void build_rpfilter() {
    const Settings& settings = config_.settings;
    const std::string& mode = settings.ipv6_rpfilter_mode;
    if (!settings.ipv6_rpfilter || mode == "no") return;
    const bool forward_only = mode.ends_with("-forward");
    const Stage stage = forward_only ? Stage::forward : Stage::prednat;
    const ir::Origin from{settings.ipv6_rpfilter_loc.value_or(settings.loc),
                          std::string("firewalld ") +
                              (forward_only ? "filter_FORWARD" : "filter_PREROUTING") +
                              ": IPv6_rpfilter=" + mode,
                          -1};
    ir::Chain chain{std::string(ir::to_string(stage)) + "/ipv6-rpfilter", {}, from};
    if (!forward_only) {
      for (std::uint8_t type : {134, 135}) {  // nd-router-advert, nd-neighbor-solicit
        ir::Match nd;
        nd.icmp = ir::IcmpMatch{false, true, type, std::nullopt};
        chain.rules.push_back(make_rule(std::move(nd), ir::ActionKind::return_, from));
      }
    }
    ir::Match spoofed;
    spoofed.family = ir::Family::ipv6;
    spoofed.rpf = mode.starts_with("loose") ? ir::RpfMode::loose : ir::RpfMode::strict;
    spoofed.rpf_negate = true;
    if (settings.log_denied != "off") {  // every packet type: firewalld logs this drop without pkttype
      ir::Rule log = make_rule(spoofed, ir::ActionKind::log, from);
      log.action.log_prefix = "rpfilter_DROP: ";
      chain.rules.push_back(std::move(log));
    }
    chain.rules.push_back(make_rule(std::move(spoofed), ir::ActionKind::drop, from));
    ir::Endpoint endpoint;
    endpoint.name = "ipv6-rpfilter";
    endpoint.origin = from;
    endpoint.groups.push_back(ir::Group{"rpfilter", {chain.name}, ir::Verdict::continue_, {}, from});
    ruleset_.chains[chain.name] = std::move(chain);
    auto& sections = ruleset_.stage(stage).sections;
    sections.insert(forward_only ? sections.begin() : sections.end(),
                    ir::Section{"rpfilter", false, {std::move(endpoint)}});
  }

  // nat_OUTPUT (§2): the forward-ports of HOST->X policies, dispatched by the egress zone.
  void build_host_nat() {
    ir::Endpoint endpoint;
    endpoint.name = "host";
    endpoint.origin = {config_.settings.loc, "firewalld nat_OUTPUT", -1};
    ir::Group policies{"policies", {}, ir::Verdict::continue_, {}, endpoint.origin};
    for (bool pre : {true, false}) {
      for (const std::string& chain : policy_dispatch(Stage::dnat_out, nullptr, pre))
        policies.chains.push_back(chain);
    }
    if (policies.chains.empty()) return;
    endpoint.groups.push_back(std::move(policies));
    ruleset_.stage(Stage::dnat_out).sections.push_back(ir::Section{"host", false, {std::move(endpoint)}});
  }

  // filter_OUTPUT (§2): not zone-filtered; lo, RFC3964, then HOST->X policies; otherwise no verdict.
  void build_output() {
    ir::Endpoint endpoint;
    endpoint.name = "host";
    endpoint.origin = base_origin(Stage::output);
    endpoint.conntrack = ir::Conntrack::accept_established;
    endpoint.groups.push_back(
        ir::Group{"prelude", {prelude(Stage::output)}, ir::Verdict::continue_, {}, endpoint.origin});
    ir::Group policies{"policies", {}, ir::Verdict::continue_, {}, endpoint.origin};
    for (bool pre : {true, false}) {
      for (const std::string& chain : policy_dispatch(Stage::output, nullptr, pre))
        policies.chains.push_back(chain);
    }
    if (!policies.chains.empty()) endpoint.groups.push_back(std::move(policies));
    ruleset_.stage(Stage::output).sections.push_back(ir::Section{"host", false, {std::move(endpoint)}});
  }

  const Config& config_;
  Diagnostics& diag_;
  const bool v2_;
  ir::Ruleset ruleset_;
  const Zone* default_zone_ = nullptr;
  // The zone of the binding that matches every packet last: the default zone's, or (2.x) that of a zone
  // bound to "+" whose name sorts before it.
  const Zone* catch_all_ = nullptr;
  std::vector<Binding> bindings_;
  std::vector<const Binding*> ingress_order_, egress_order_;
  std::set<std::string> bound_zones_;
  std::vector<const Policy*> policies_;  // active ones, by priority then name
  std::map<std::string, Owner> owners_;
  std::map<std::string, std::optional<std::string>> policy_chains_;
  // StrictForwardPorts=yes: per filter stage, the original ports of forward-ports and where they are.
  std::map<Stage, std::vector<std::pair<ir::PortRange, ir::Origin>>> strict_accepts_;
};

}  // namespace

ir::Ruleset to_ir(const Config& config, Diagnostics& diag) {
  ir::Ruleset ruleset = Mapper(config, diag).run();
  ruleset.frontend = "firewalld";
  ruleset.files = diag.files();
  return ruleset;
}

}  // namespace fwe::firewalld
