// writer.cpp - the IR as Calico host-protection resources, for `fwengine migrate --to calico`.
//
// The mapping is the frontend's (mapping.cpp) read backwards, for the filter stages only:
//   * every interface an endpoint is classified by (iif in input/forward, oif in output) becomes a
//     HostEndpoint; a catch-all endpoint becomes the `*` HostEndpoint, and every interface a rule names
//     gets a HostEndpoint of its own, so that each rule's interface match is known on each HostEndpoint;
//   * for each HostEndpoint and stage, the chains of the endpoint that classifies it are flattened
//     (jumps inlined, interface matches decided) into GlobalNetworkPolicies, one per chain, ordered as
//     the chains, selected by a label per stage; HostEndpoints whose policies come out the same share them;
//   * the endpoint's default verdict is a final policy with one unconditional rule. Input policies are
//     ordered before forward (applyOnForward) ones and always end in such a rule, so the forward policies,
//     which Calico also applies to traffic to the host, never decide it;
//   * every HostEndpoint has the profile projectcalico-default-allow: where no policy applies (a stage
//     with no endpoint for it) Felix allows, as the IR does when no endpoint matches.
#include "writer.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>
#include <set>
#include <span>
#include <tuple>
#include <vector>

#include "reader.hpp"

namespace fwe::calico {

namespace {

constexpr std::array kFilterStages = {ir::Stage::input, ir::Stage::forward, ir::Stage::output};
constexpr std::string_view kWildcard = "*";
constexpr std::string_view kLabelPrefix = "fwengine.io/";

// Lower-case letters, digits and single '-': valid in resource names and label values alike.
std::string slug(std::string_view text, std::size_t max) {
  std::string out;
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u))
      out += static_cast<char>(std::tolower(u));
    else if (!out.empty() && out.back() != '-')
      out += '-';
  }
  if (out.size() > max) out.resize(max);
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

std::string quoted(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A comment stays on its line whatever the origin holds.
std::string protocol_text(std::uint8_t protocol) {
  switch (protocol) {
    case 1:
      return "ICMP";
    case 6:
      return "TCP";
    case 17:
      return "UDP";
    case 58:
      return "ICMPv6";
    case 132:
      return "SCTP";
    case 136:
      return "UDPLite";
    default:
      return std::to_string(protocol);
  }
}

std::string ports_text(const ir::PortSet& ports) {
  std::string out = "[";
  for (const auto& range : ports) {
    if (out.size() > 1) out += ", ";
    out += range.lo == range.hi ? std::to_string(range.lo)
                                : "\"" + std::to_string(range.lo) + ":" + std::to_string(range.hi) + "\"";
  }
  return out + "]";
}

std::string nets_text(const std::vector<ir::Cidr>& nets) {
  std::string out = "[";
  for (const auto& cidr : nets) out += (out.size() > 1 ? ", " : "") + quoted(ir::to_string(cidr));
  return out + "]";
}

// Everything a rule can match besides the interfaces.
bool only_interfaces(const ir::Match& m) {
  return m.family == ir::Family::any && !m.protocols && m.src_addr.empty() && m.dst_addr.empty() &&
         m.src_port.empty() && m.dst_port.empty() && !m.icmp && !m.ct_states && !m.src_mac && !m.pkt_type &&
         !m.mark_value && !m.rate_limit && !m.ct_status && m.ct_orig_dport.empty() && !m.rpf;
}

// One Calico rule, before it is printed.
struct Side {
  std::vector<ir::Cidr> nets, not_nets;
  ir::PortSet ports, not_ports;
  bool empty() const { return nets.empty() && not_nets.empty() && ports.empty() && not_ports.empty(); }
};
struct CalicoRule {
  std::string action;  // Allow, Deny, Log
  std::optional<ir::Family> ip_version;
  std::optional<std::uint8_t> protocol, not_protocol;
  std::optional<ir::IcmpMatch> icmp;
  Side source, destination;
};

// A rule as calicoctl prints it, an item of ingress:/egress: in a policy's spec.
std::string rule_text(const CalicoRule& rule) {
  std::string out = "  - action: " + rule.action + "\n";
  if (rule.protocol) out += "    protocol: " + protocol_text(*rule.protocol) + "\n";
  if (rule.not_protocol) out += "    notProtocol: " + protocol_text(*rule.not_protocol) + "\n";
  if (rule.ip_version)
    out += std::string("    ipVersion: ") + (*rule.ip_version == ir::Family::ipv4 ? "4\n" : "6\n");
  if (rule.icmp && rule.icmp->type) {
    out += std::string("    ") + (rule.icmp->negate ? "notICMP" : "icmp") +
           ": {type: " + std::to_string(*rule.icmp->type);
    if (rule.icmp->code) out += ", code: " + std::to_string(*rule.icmp->code);
    out += "}\n";
  }
  for (auto [field, side] :
       {std::pair{"source", &rule.source}, std::pair{"destination", &rule.destination}}) {
    if (side->empty()) continue;
    out += std::string("    ") + field + ":\n";
    if (!side->nets.empty()) out += "      nets: " + nets_text(side->nets) + "\n";
    if (!side->not_nets.empty()) out += "      notNets: " + nets_text(side->not_nets) + "\n";
    if (!side->ports.empty()) out += "      ports: " + ports_text(side->ports) + "\n";
    if (!side->not_ports.empty()) out += "      notPorts: " + ports_text(side->not_ports) + "\n";
  }
  return out;
}

// The rules one chain becomes on one HostEndpoint (printed, with their comments).
struct PolicyText {
  std::string comment;  // what the policy came from
  std::string rules;
};

enum class Holds { never, always, unknown };

// A HostEndpoint's view of one stage while its endpoint's chains are flattened.
struct Context {
  ir::Stage stage = ir::Stage::input;
  std::string iface;  // the HostEndpoint's interface, or "*"
  const ir::Endpoint* endpoint = nullptr;
  bool ended = false;  // an unconditional verdict was written: nothing after it runs
  bool invalid_dropped = false;
};

struct HostEndpointOut {
  std::string iface;
  std::string name;
  std::map<std::string, std::string> labels;
  std::vector<std::string> comments;
};

// Policies one or more HostEndpoints share in one stage.
struct PolicyGroup {
  std::string label;
  std::vector<PolicyText> policies;
  std::vector<std::string> interfaces;
};

class Writer {
 public:
  Writer(const ir::Ruleset& ruleset, std::string node, Diagnostics& diag)
      : ruleset_(ruleset), node_(std::move(node)), diag_(diag) {}
  std::map<std::string, std::string> run();

 private:
  const ir::Ruleset& ruleset_;
  std::string node_;
  Diagnostics& diag_;
  std::set<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t, std::string>> reported_;
  bool dnat_possible_ = false, snat_possible_ = false;
  std::vector<std::string> interfaces_;  // named HostEndpoints, in order of appearance
  bool wildcard_ = false;
  std::vector<HostEndpointOut> host_endpoints_;
  std::map<ir::Stage, std::vector<PolicyGroup>> groups_;
  std::map<ir::Stage, std::map<std::string, std::size_t>> group_by_text_;

  // One diagnostic per piece, however many HostEndpoints meet it.
  void report(Severity severity, const ir::Origin& origin, const std::string& what, const std::string& hint) {
    std::string message =
        (severity == Severity::error ? "cannot write as calico: " : "written as calico with a difference: ") +
        what + (origin.policy.empty() ? std::string() : " (" + origin.policy + ")");
    if (!reported_.emplace(origin.loc.file, origin.loc.line, origin.loc.col, message).second) return;
    diag_.report(severity, origin.loc, message, hint);
  }
  void cannot(const ir::Origin& origin, const std::string& what,
              const std::string& hint = "it is left out of the Calico policy; review the written files") {
    report(Severity::error, origin, what, hint);
  }
  void lossy(const ir::Origin& origin, const std::string& what,
             const std::string& hint = "the packet's verdict is the same") {
    report(Severity::warning, origin, what, hint);
  }
  std::string where(const ir::Origin& origin) const;

  void scan();
  const ir::Endpoint* endpoint_for(ir::Stage stage, const std::string& iface);
  bool classifiable(const ir::Endpoint& endpoint, ir::Stage stage);
  std::string render(Context& ctx, std::vector<PolicyText>& policies);
  void flatten(const std::string& chain_name, Context& ctx, std::string& rules, int depth);
  Holds interface_holds(const ir::Rule& rule, const Context& ctx);
  std::optional<std::vector<CalicoRule>> convert(const ir::Rule& rule, Context& ctx, std::string& why_never);
  std::optional<std::string> action_of(const ir::Rule& rule);
  void verdict_rule(ir::Verdict verdict, const ir::Origin& origin, const std::string& what,
                    std::string& rules);
  void report_other_stages();
  std::string header(std::string_view what) const;
  std::string felix_configuration();
  std::string host_endpoints_text() const;
  std::string policies_text() const;
};

std::string Writer::where(const ir::Origin& origin) const {
  std::string text;
  if (origin.loc.line > 0 || origin.loc.file > 0) {
    text += origin.loc.file < ruleset_.files.size() ? ruleset_.files[origin.loc.file] : "?";
    if (origin.loc.line > 0) text += ":" + std::to_string(origin.loc.line);
  }
  if (!origin.policy.empty()) text += (text.empty() ? "" : ", ") + origin.policy;
  return ir::on_one_line(text.empty() ? "no origin" : "from " + text);
}

// The HostEndpoints to write and what can make a connection NATed.
void Writer::scan() {
  auto add = [&](const std::string& name) {
    if (std::find(interfaces_.begin(), interfaces_.end(), name) == interfaces_.end())
      interfaces_.push_back(name);
  };
  for (ir::Stage stage : kFilterStages)
    for (const auto& section : ruleset_.stage(stage).sections)
      for (const auto& endpoint : section.endpoints) {
        const auto& own = stage == ir::Stage::output ? endpoint.match.oif : endpoint.match.iif;
        if (own && !own->prefix) add(own->name);
        if (!endpoint.match.iif && !endpoint.match.oif && !endpoint.match.src_set &&
            !endpoint.match.dst_set && !endpoint.match.src_mac)
          wildcard_ = true;
      }
  for (const auto& [name, chain] : ruleset_.chains)
    for (const auto& rule : chain.rules) {
      for (const auto* patterns : {&rule.match.iif, &rule.match.oif})
        if (*patterns)
          for (const auto& pattern : **patterns)
            if (!pattern.prefix) add(pattern.name);
      auto kind = rule.action.kind;
      dnat_possible_ |= kind == ir::ActionKind::dnat || kind == ir::ActionKind::redirect;
      snat_possible_ |= kind == ir::ActionKind::snat || kind == ir::ActionKind::masquerade;
    }
}

// Whether a HostEndpoint can stand for the endpoint's classifier (reported once when not).
bool Writer::classifiable(const ir::Endpoint& endpoint, ir::Stage stage) {
  const auto& m = endpoint.match;
  const auto& own = stage == ir::Stage::output ? m.oif : m.iif;
  const auto& other = stage == ir::Stage::output ? m.iif : m.oif;
  std::string what = "endpoint '" + endpoint.name + "': ";
  if (m.src_set || m.dst_set)
    cannot(endpoint.origin, what + "classified by address: a HostEndpoint is an interface, not a source");
  else if (m.src_mac)
    cannot(endpoint.origin, what + "classified by MAC address");
  else if (other)
    cannot(endpoint.origin, what + "classified by the interface of the other direction");
  else if (own && own->prefix)
    cannot(endpoint.origin, what + "interface wildcard '" + ir::to_string(*own) +
                                "': a HostEndpoint names one interface or all ('*')");
  else
    return true;
  return false;
}

// The first endpoint of the stage that classifies this interface's packets, as the IR tries them.
const ir::Endpoint* Writer::endpoint_for(ir::Stage stage, const std::string& iface) {
  const auto& sections = ruleset_.stage(stage).sections;
  if (sections.empty()) return nullptr;
  if (sections.size() > 1)
    cannot(sections[1].endpoints.empty() ? ir::Origin{} : sections[1].endpoints.front().origin,
           "stage " + std::string(ir::to_string(stage)) + " has " + std::to_string(sections.size()) +
               " sections: only the first ('" + sections.front().name + "') is written");
  for (const auto& endpoint : sections.front().endpoints) {
    if (!classifiable(endpoint, stage)) continue;
    const auto& own = stage == ir::Stage::output ? endpoint.match.oif : endpoint.match.iif;
    if (!own || (iface != kWildcard && own->name == iface)) return &endpoint;
  }
  return nullptr;
}

// An interface match on this HostEndpoint: every interface a rule names has a HostEndpoint of its own,
// so on "*" an exact name never matches; a prefix there could.
Holds Writer::interface_holds(const ir::Rule& rule, const Context& ctx) {
  const bool output = ctx.stage == ir::Stage::output;
  const auto& other = output ? rule.match.iif : rule.match.oif;
  if (other) {
    cannot(rule.origin, std::string(output ? "incoming" : "outgoing") + " interface match in " +
                            std::string(ir::to_string(ctx.stage)) +
                            ": Calico rules cannot match interfaces, and HostEndpoints police one direction");
    return Holds::unknown;
  }
  const auto& patterns = output ? rule.match.oif : rule.match.iif;
  const bool negate = output ? rule.match.oif_negate : rule.match.iif_negate;
  if (!patterns) return Holds::always;
  bool any = false;
  for (const auto& pattern : *patterns) {
    if (ctx.iface == kWildcard && pattern.prefix) {
      cannot(rule.origin, "interface wildcard '" + ir::to_string(pattern) + "' on the '*' HostEndpoint");
      return Holds::unknown;
    }
    any |= ctx.iface != kWildcard && pattern.matches(ctx.iface);
  }
  return any != negate ? Holds::always : Holds::never;
}

std::optional<std::string> Writer::action_of(const ir::Rule& rule) {
  const ir::Action& action = rule.action;
  switch (action.kind) {
    case ir::ActionKind::accept:
    case ir::ActionKind::allow:
      return "Allow";
    case ir::ActionKind::drop:
      return "Deny";
    case ir::ActionKind::reject:
      lossy(rule.origin, "reject" +
                             (action.reject_with.empty() ? std::string() : " with " + action.reject_with) +
                             " becomes Deny: Calico drops without a reply");
      return "Deny";
    case ir::ActionKind::log:
      if (!action.log_prefix.empty())
        lossy(rule.origin, "log prefix '" + action.log_prefix + "': Felix logs with its own prefix");
      else if (action.log_level != ir::Action{}.log_level)
        lossy(rule.origin, "log level " + std::to_string(action.log_level) + ": Felix logs at its own level");
      return "Log";
    case ir::ActionKind::dnat:
    case ir::ActionKind::redirect:
    case ir::ActionKind::snat:
    case ir::ActionKind::masquerade:
      cannot(rule.origin, std::string(ir::to_string(action.kind)) + ": Calico host policy has no NAT");
      return std::nullopt;
    case ir::ActionKind::set_mark:
      cannot(rule.origin, "set-mark: Calico policy cannot set packet marks");
      return std::nullopt;
    case ir::ActionKind::ct_helper:
      cannot(rule.origin, "conntrack helper '" + action.target + "': Calico policy cannot assign helpers");
      return std::nullopt;
    case ir::ActionKind::tcp_mss_clamp:
      cannot(rule.origin, "tcp-mss-clamp: Calico policy cannot rewrite TCP options");
      return std::nullopt;
    default:
      cannot(rule.origin, std::string(ir::to_string(action.kind)) + " in a filter stage");
      return std::nullopt;
  }
}

// The Calico rules for one IR rule on this HostEndpoint: several when Calico needs one per protocol or
// family, none when it can never match here (why_never says why), nullopt when it cannot be written.
std::optional<std::vector<CalicoRule>> Writer::convert(const ir::Rule& rule, Context& ctx,
                                                       std::string& why_never) {
  const ir::Match& m = rule.match;
  switch (interface_holds(rule, ctx)) {
    case Holds::never:
      why_never = "its interface match never holds on " + ctx.iface;
      return std::vector<CalicoRule>{};
    case Holds::unknown:
      return std::nullopt;
    case Holds::always:
      break;
  }
  if (m.ct_status) {
    bool possible = std::any_of(m.ct_status->begin(), m.ct_status->end(), [&](ir::CtStatus s) {
      return s == ir::CtStatus::dnat ? dnat_possible_ : snat_possible_;
    });
    if (!possible) {
      why_never = "ct-status: nothing in this ruleset NATs a connection";
      return std::vector<CalicoRule>{};
    }
    cannot(rule.origin, "ct-status match: Calico rules cannot see how a connection was NATed");
    return std::nullopt;
  }
  if (!m.ct_orig_dport.empty()) {
    cannot(rule.origin, "ct-orig-dport match: Calico rules cannot see a connection's port before DNAT");
    return std::nullopt;
  }
  if (m.ct_states) {
    bool invalid_drop = !m.ct_negate && *m.ct_states == std::vector{ir::CtState::invalid} &&
                        rule.action.kind == ir::ActionKind::drop && only_interfaces([&] {
                          ir::Match rest = m;
                          rest.ct_states.reset();
                          return rest;
                        }());
    if (invalid_drop && ctx.endpoint->conntrack != ir::Conntrack::none) {
      ctx.invalid_dropped = true;
      why_never = "Felix's conntrack check drops invalid packets before any policy";
      return std::vector<CalicoRule>{};
    }
    cannot(rule.origin,
           "conntrack state match: Calico accepts established packets itself and has no state match");
    return std::nullopt;
  }
  // What Calico cannot match leaves the rule out; a log rule is kept without it, as it decides nothing.
  bool ok = true;
  auto missing = [&](bool present, const std::string& what) {
    if (!present) return;
    if (rule.action.kind == ir::ActionKind::log) return lossy(rule.origin, what + ": the log rule logs more");
    cannot(rule.origin, what);
    ok = false;
  };
  missing(m.src_mac.has_value(), "MAC address match");
  missing(m.pkt_type.has_value(), "packet type match");
  missing(m.mark_value.has_value(), "mark match");
  missing(m.rate_limit.has_value(), "rate limit");
  missing(m.rpf.has_value(), "reverse-path (rpf) match");
  missing(m.protocols && m.protocol_negate && m.protocols->size() > 1, "several negated protocols");
  missing(m.icmp && m.icmp->negate && !m.icmp->type, "a negated ICMP match without a type");
  missing(m.protocols && std::find(m.protocols->begin(), m.protocols->end(), 0) != m.protocols->end(),
          "protocol 0: Calico's protocols are 1-255");
  missing(m.icmp && m.icmp->type == 255, "ICMP type 255: Calico's ICMP types are 0-254");
  CalicoRule base;
  std::array<const ir::AddrMatches*, 2> addrs = {&m.src_addr, &m.dst_addr};
  std::array<Side*, 2> sides = {&base.source, &base.destination};
  std::array<std::optional<std::span<const ir::Cidr>>, 2> positive;
  std::array<std::string, 2> positive_name;
  std::array<std::vector<ir::Cidr>, 2> negated;
  for (std::size_t i = 0; i < 2; ++i) {
    for (const auto& match : *addrs[i]) {
      if (!match.in_place() && !ruleset_.find_set(match.set_name)) continue;
      const auto cidrs = ir::addresses(ruleset_, match);
      if (!match.negate && positive[i]) {
        missing(true, "several address sets ANDed on one side ('" + positive_name[i] + "', '" +
                          ir::to_string(match) + "')");
        continue;
      }
      if (!match.negate) {
        positive[i] = cidrs;
        positive_name[i] = ir::to_string(match);
      }
      if (match.negate) negated[i].insert(negated[i].end(), cidrs.begin(), cidrs.end());
    }
    const auto& ports = i == 0 ? m.src_port : m.dst_port;
    bool have_positive = false;
    for (const auto& match : ports) {
      auto& target = match.negate ? sides[i]->not_ports : sides[i]->ports;
      if (!match.negate && have_positive) {
        missing(true, "several port lists ANDed on one side");
        continue;
      }
      have_positive |= !match.negate;
      // Calico's ports start at 1: a range from 0 is written from 1, so that a rule of ports no longer
      // matches port 0, and one of notPorts matches it too.
      ir::PortSet written;
      for (const ir::PortRange& range : match.ports)
        if (range.hi > 0) written.push_back({std::max<std::uint16_t>(range.lo, 1), range.hi});
      if (std::any_of(match.ports.begin(), match.ports.end(),
                      [](const auto& range) { return range.lo == 0; })) {
        const std::string what = "port 0: Calico's ports start at 1";
        if (written.empty() && !match.negate) {
          missing(true, what);
          continue;
        }
        if (rule.action.kind == ir::ActionKind::log)
          lossy(rule.origin, what + ": the log rule logs less or more");
        else
          cannot(rule.origin, what,
                 match.negate ? "the rule is written to match port 0 too; review the written files"
                              : "the rule is written without port 0; review the written files");
      }
      target.insert(target.end(), written.begin(), written.end());
    }
    std::sort(sides[i]->not_ports.begin(), sides[i]->not_ports.end());
  }
  if (!ok) return std::nullopt;
  auto action = action_of(rule);
  if (!action) return std::nullopt;
  base.action = *action;

  // Protocols: Calico names one; ports need a protocol that has them, ICMP types need ICMP.
  const bool has_ports = !m.src_port.empty() || !m.dst_port.empty();
  std::vector<std::optional<std::uint8_t>> protocols = {std::nullopt};
  if (m.protocols && !m.protocol_negate) {
    protocols.assign(m.protocols->begin(), m.protocols->end());
  } else if (has_ports) {
    protocols = {6, 17, 33, 132, 136};  // the protocols ports match
    if (m.protocols)
      for (auto left_out : *m.protocols) std::erase(protocols, left_out);
  } else if (m.protocols) {
    base.not_protocol = m.protocols->front();
  }
  if (m.icmp) {
    const std::uint8_t icmp = m.icmp->v6 ? 58 : 1;
    if (!m.protocols || m.protocol_negate) protocols = {icmp};
    std::erase_if(protocols, [&](auto p) { return p != icmp; });
    if (base.not_protocol == icmp) protocols.clear();
    base.icmp = m.icmp;
  }
  std::erase_if(protocols, [&](auto p) { return has_ports && (!p || !ir::protocol_has_ports(*p)); });
  std::string unnamed;  // the port protocols Calico's ports cannot name
  for (const auto& [number, name] : {std::pair<std::uint8_t, const char*>{33, "DCCP"}, {136, "UDPLite"}})
    if (has_ports && std::erase(protocols, number) > 0)
      unnamed += (unnamed.empty() ? "" : " and ") + std::string(name);
  if (!unnamed.empty()) cannot(rule.origin, "ports of " + unnamed + ": Calico's ports need TCP, UDP or SCTP");

  // Families: Calico's nets are of one family, so a rule with addresses is written per family.
  std::vector<std::optional<ir::Family>> families = {std::nullopt};
  if (m.family != ir::Family::any) families = {m.family};
  const bool has_addresses = !m.src_addr.empty() || !m.dst_addr.empty();
  if (has_addresses && m.family == ir::Family::any) families = {ir::Family::ipv4, ir::Family::ipv6};

  std::vector<CalicoRule> out;
  for (const auto& family : families) {
    CalicoRule variant = base;
    variant.ip_version = family;
    bool possible = true;
    for (std::size_t i = 0; i < 2 && possible; ++i) {
      Side& side = i == 0 ? variant.source : variant.destination;
      auto of_family = [&](std::span<const ir::Cidr> cidrs) {
        std::vector<ir::Cidr> kept;
        for (const auto& cidr : cidrs)
          if (cidr.addr.family == *family) kept.push_back(cidr);
        return kept;
      };
      if (positive[i]) {
        side.nets = of_family(*positive[i]);
        possible = !side.nets.empty();  // a set without this family's addresses never matches
      }
      if (!negated[i].empty()) {
        side.not_nets = of_family(negated[i]);
        // "not in everything" never matches; Calico refuses to write it.
        possible &= std::none_of(side.not_nets.begin(), side.not_nets.end(),
                                 [](const ir::Cidr& c) { return c.prefix == 0; });
      }
    }
    if (!possible) continue;
    for (const auto& protocol : protocols) {
      if (protocol && family &&
          ((*protocol == 1 && *family != ir::Family::ipv4) ||
           (*protocol == 58 && *family != ir::Family::ipv6)))
        continue;
      if (base.icmp && family && (base.icmp->v6 != (*family == ir::Family::ipv6))) continue;
      CalicoRule written = variant;
      written.protocol = protocol;
      out.push_back(std::move(written));
    }
  }
  if (out.empty())
    why_never = "it matches no packet Calico can describe (no address or protocol of its family)";
  return out;
}

void Writer::verdict_rule(ir::Verdict verdict, const ir::Origin& origin, const std::string& what,
                          std::string& rules) {
  std::string action = "Allow";
  std::string note;
  switch (verdict) {
    case ir::Verdict::drop:
      action = "Deny";
      break;
    case ir::Verdict::reject:
      action = "Deny";
      lossy(origin, what + " reject becomes Deny: Calico drops without a reply");
      break;
    case ir::Verdict::continue_:
      note = " (continue: nothing else decides, so the packet goes on)";
      break;
    default:
      break;
  }
  rules += "  # " + what + " " + std::string(ir::to_string(verdict)) + note + ", " + where(origin) + "\n";
  rules += "  - action: " + action + "\n";
}

void Writer::flatten(const std::string& chain_name, Context& ctx, std::string& rules, int depth) {
  const ir::Chain* chain = ruleset_.find_chain(chain_name);
  if (!chain) return;
  for (std::size_t r = 0; r < chain->rules.size() && !ctx.ended; ++r) {
    const ir::Rule& rule = chain->rules[r];
    const std::string comment = "  # " + where(rule.origin) + "\n";
    if (rule.action.kind == ir::ActionKind::jump || rule.action.kind == ir::ActionKind::return_) {
      Holds holds = interface_holds(rule, ctx);
      if (holds == Holds::never) continue;
      if (holds == Holds::unknown) continue;
      if (rule.action.kind == ir::ActionKind::return_) {
        if (r + 1 == chain->rules.size()) continue;  // the chain ends here anyway
        cannot(rule.origin, "return before the end of chain '" + chain_name + "'");
        continue;
      }
      if (!only_interfaces(rule.match)) {
        cannot(rule.origin, "jump to '" + rule.action.target + "' with a match: Calico has no sub-chains");
        continue;
      }
      if (depth > 16) {
        cannot(rule.origin, "jumps nested deeper than 16");
        continue;
      }
      rules += "  # rules of chain " + rule.action.target + " (jumped to, " + where(rule.origin) + ")\n";
      flatten(rule.action.target, ctx, rules, depth + 1);
      continue;
    }
    if (rule.action.kind == ir::ActionKind::pass) {
      cannot(rule.origin,
             "pass: it would skip the rest of its group, which Calico's Pass (rest of tier) is not");
      continue;
    }
    std::string why_never;
    auto written = convert(rule, ctx, why_never);
    if (!written) continue;
    if (written->empty()) {
      rules += "  # left out, " + why_never + ": " + where(rule.origin) + "\n";
      continue;
    }
    rules += comment;
    for (const auto& calico_rule : *written) rules += rule_text(calico_rule);
    // An unconditional Allow/Deny ends the endpoint: what follows is unreachable.
    if (written->size() == 1 && (*written)[0].action != "Log") {
      const CalicoRule& only = (*written)[0];
      ctx.ended = !only.protocol && !only.not_protocol && !only.ip_version && !only.icmp &&
                  only.source.empty() && only.destination.empty();
    }
  }
}

// Flattens the endpoint's groups for one HostEndpoint; returns the text that identifies the result.
std::string Writer::render(Context& ctx, std::vector<PolicyText>& policies) {
  const ir::Endpoint* endpoint = ctx.endpoint;
  if (endpoint) {
    const std::string stage(ir::to_string(ctx.stage));
    // Felix's conntrack prelude and failsafe ports only matter where the endpoint can refuse a packet.
    const bool can_refuse = !endpoint->groups.empty() || endpoint->default_verdict == ir::Verdict::drop ||
                            endpoint->default_verdict == ir::Verdict::reject;
    const std::string hint = "Felix does so on every HostEndpoint; review the written files";
    if (can_refuse && endpoint->conntrack == ir::Conntrack::none)
      cannot(endpoint->origin,
             "endpoint '" + endpoint->name + "' in " + stage +
                 " has no conntrack prelude: Felix accepts established packets before policy",
             hint);
    if (can_refuse && endpoint->failsafe != (ctx.stage != ir::Stage::forward) &&
        (!ruleset_.failsafe.inbound.empty() || !ruleset_.failsafe.outbound.empty()))
      cannot(endpoint->origin,
             "endpoint '" + endpoint->name + "' in " + stage + (endpoint->failsafe ? " has" : " has no") +
                 " failsafe ports: Felix's apply in input and output, never in forward",
             hint);
    for (const auto& group : endpoint->groups) {
      for (const auto& chain_name : group.chains) {
        if (ctx.ended) break;
        const ir::Chain* chain = ruleset_.find_chain(chain_name);
        PolicyText policy;
        policy.comment = "chain " + chain_name + (group.name.empty() ? "" : " (group " + group.name + ")") +
                         (chain ? ", " + where(chain->origin) : std::string());
        flatten(chain_name, ctx, policy.rules, 0);
        policies.push_back(std::move(policy));
      }
      if (group.on_end != ir::Verdict::continue_ && !ctx.ended) {
        PolicyText end;
        end.comment = "end of group " + group.name + ", " + where(group.origin);
        verdict_rule(group.on_end, group.origin, "group " + group.name + " ends in", end.rules);
        ctx.ended = true;
        policies.push_back(std::move(end));
      }
    }
    if (endpoint->conntrack == ir::Conntrack::accept_established && !ctx.invalid_dropped)
      lossy(endpoint->origin,
            "endpoint '" + endpoint->name +
                "' lets invalid packets reach its rules; Felix drops them before any policy",
            "only packets conntrack finds invalid are decided differently");
  }
  if (!ctx.ended) {
    PolicyText fallback;
    ir::Verdict verdict = endpoint ? endpoint->default_verdict : ir::Verdict::continue_;
    ir::Origin origin = endpoint ? endpoint->origin : ir::Origin{};
    fallback.comment = endpoint
                           ? "default verdict of endpoint '" + endpoint->name + "', " + where(origin)
                           : "traffic to the host on " + ctx.iface +
                                 " has no endpoint: allowed, so that the forward policies never decide it";
    verdict_rule(verdict, origin, endpoint ? "the endpoint's default:" : "no endpoint:", fallback.rules);
    policies.push_back(std::move(fallback));
  }
  std::string identity;
  for (const auto& policy : policies) identity += policy.comment + "\n" + policy.rules;
  return identity;
}

void Writer::report_other_stages() {
  for (std::size_t s = 0; s < ruleset_.stages.size(); ++s) {
    auto stage = static_cast<ir::Stage>(s);
    if (std::find(kFilterStages.begin(), kFilterStages.end(), stage) != kFilterStages.end()) continue;
    for (const auto& section : ruleset_.stages[s].sections)
      for (const auto& endpoint : section.endpoints) {
        std::set<std::string> seen;
        std::vector<std::string> pending;
        for (const auto& group : endpoint.groups)
          pending.insert(pending.end(), group.chains.begin(), group.chains.end());
        while (!pending.empty()) {
          std::string name = pending.back();
          pending.pop_back();
          const ir::Chain* chain = ruleset_.find_chain(name);
          if (!chain || !seen.insert(name).second) continue;
          // The rules no Calico resource can carry: one report per chain, at its first such rule.
          const ir::Rule* first_left_out = nullptr;
          std::set<std::string> left_out;
          for (const auto& rule : chain->rules) {
            auto kind = rule.action.kind;
            if (kind == ir::ActionKind::jump) {
              pending.push_back(rule.action.target);
            } else if (kind == ir::ActionKind::dnat || kind == ir::ActionKind::redirect ||
                       kind == ir::ActionKind::snat || kind == ir::ActionKind::masquerade ||
                       kind == ir::ActionKind::set_mark || kind == ir::ActionKind::ct_helper ||
                       kind == ir::ActionKind::tcp_mss_clamp) {
              action_of(rule);
            } else {
              if (!first_left_out) first_left_out = &rule;
              left_out.insert(std::string(ir::to_string(kind)));
            }
          }
          if (first_left_out) {
            std::string actions;
            for (const auto& kind : left_out) actions += (actions.empty() ? "" : ", ") + kind;
            cannot(first_left_out->origin,
                   "chain '" + name + "' (" + actions + ") in stage " + std::string(ir::to_string(stage)) +
                       ": only input, forward and output are written as Calico policy");
          }
        }
        if (endpoint.default_verdict != ir::Verdict::continue_)
          cannot(endpoint.origin, "default verdict " + std::string(ir::to_string(endpoint.default_verdict)) +
                                      " of endpoint '" + endpoint.name + "' in stage " +
                                      std::string(ir::to_string(stage)));
        for (const auto& group : endpoint.groups)
          if (group.on_end != ir::Verdict::continue_)
            cannot(group.origin, "the verdict " + std::string(ir::to_string(group.on_end)) +
                                     " at the end of group '" + group.name + "' of endpoint '" +
                                     endpoint.name + "' in stage " + std::string(ir::to_string(stage)));
      }
  }
}

std::string Writer::header(std::string_view what) const {
  std::set<std::uint32_t> files;
  auto note = [&](const ir::Origin& origin) {
    // A name in angle brackets is no file ("<command line>", firewalld's built-in defaults).
    if (origin.loc.file < ruleset_.files.size() && !ruleset_.files[origin.loc.file].starts_with('<'))
      files.insert(origin.loc.file);
  };
  for (const auto& [name, chain] : ruleset_.chains) {
    note(chain.origin);
    for (const auto& rule : chain.rules) note(rule.origin);
  }
  for (const auto& stage : ruleset_.stages)
    for (const auto& section : stage.sections)
      for (const auto& endpoint : section.endpoints) note(endpoint.origin);
  std::string sources;
  for (std::uint32_t file : files) sources += "\n#   " + ir::on_one_line(ruleset_.files[file]);
  return "# " + std::string(what) + ", generated by `fwengine migrate --to calico` from the " +
         (ruleset_.frontend.empty() ? std::string("unknown") : ruleset_.frontend) + " frontend for node " +
         ir::on_one_line(node_) + ".\n# Read it back with: fwengine --frontend calico -f DIR --node " +
         ir::on_one_line(node_) + " check\n# Input:" + (sources.empty() ? std::string(" (none)") : sources) +
         "\n";
}

std::string Writer::felix_configuration() {
  std::string out = header("Failsafe ports") + "---\n";
  out += "# the failsafe part of the ruleset; an empty list turns Felix's built-in ports off\n";
  out += "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n";
  for (auto [field, entries] : {std::pair{"failsafeInboundHostPorts", &ruleset_.failsafe.inbound},
                                std::pair{"failsafeOutboundHostPorts", &ruleset_.failsafe.outbound}}) {
    std::string list;
    for (const auto& entry : *entries) {
      if (entry.protocol != 6 && entry.protocol != 17) {
        cannot(entry.origin, "failsafe port of protocol " + ir::protocol_name(entry.protocol) +
                                 ": Felix has TCP and UDP failsafe ports only");
        continue;
      }
      list += "  # " + where(entry.origin) + "\n  - protocol: " + protocol_text(entry.protocol) +
              "\n    port: " + std::to_string(entry.port) + "\n";
      if (entry.net) list += "    net: " + ir::to_string(*entry.net) + "\n";
    }
    out += std::string("  ") + field + ":" + (list.empty() ? " []\n" : "\n" + list);
  }
  return out;
}

std::string Writer::host_endpoints_text() const {
  std::string out = header("HostEndpoints");
  for (const auto& hep : host_endpoints_) {
    out += "---\n";
    for (const auto& comment : hep.comments) out += "# " + ir::on_one_line(comment) + "\n";
    out += "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata:\n  name: " + hep.name + "\n";
    if (!hep.labels.empty()) {
      out += "  labels:\n";
      for (const auto& [key, value] : hep.labels) out += "    " + key + ": " + quoted(value) + "\n";
    }
    out += "spec:\n  node: " + quoted(node_) + "\n  interfaceName: " + quoted(hep.iface) +
           "\n  profiles:\n  - projectcalico-default-allow\n";
  }
  return out;
}

std::string Writer::policies_text() const {
  std::string out = header("GlobalNetworkPolicies");
  for (ir::Stage stage : kFilterStages) {
    auto found = groups_.find(stage);
    if (found == groups_.end()) continue;
    const std::string stage_name(ir::to_string(stage));
    // Input policies come first: see the file's comment.
    const int base = stage == ir::Stage::forward ? 100000 : 100;
    for (const auto& group : found->second) {
      for (std::size_t k = 0; k < group.policies.size(); ++k) {
        const PolicyText& policy = group.policies[k];
        std::string index = std::to_string(k + 1);
        if (index.size() < 2) index = "0" + index;
        out += "---\n# " + stage_name + " of " + group.interfaces.front();
        for (std::size_t i = 1; i < group.interfaces.size(); ++i) out += ", " + group.interfaces[i];
        out += ": " + ir::on_one_line(policy.comment) + "\n";
        out +=
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: " + stage_name +
            "-" + group.label + "-" + index + "\nspec:\n";
        out += "  order: " + std::to_string(base + 10 * static_cast<int>(k)) + "\n";
        out += "  selector: " + quoted(std::string(kLabelPrefix) + stage_name + " == '" + group.label + "'") +
               "\n";
        const bool egress = stage == ir::Stage::output;
        out += std::string("  types:\n  - ") + (egress ? "Egress" : "Ingress") + "\n";
        if (stage == ir::Stage::forward) out += "  applyOnForward: true\n";
        out += std::string("  ") + (egress ? "egress:" : "ingress:");
        out += policy.rules.find("- action:") == std::string::npos ? " []\n" + policy.rules
                                                                   : "\n" + policy.rules;
      }
    }
  }
  return out;
}

std::map<std::string, std::string> Writer::run() {
  if (!is_calico_name(node_))
    cannot({},
           "node name '" + ir::on_one_line(node_) +
               "': Calico's are lower-case letters and digits, '-' "
               "inside, parts joined by '.'",
           "give --node with this host's node name in Calico");
  scan();
  std::vector<std::string> ifaces = interfaces_;
  if (wildcard_) ifaces.emplace_back(kWildcard);
  std::set<std::string> names;
  for (const std::string& iface : ifaces) {
    HostEndpointOut hep;
    hep.iface = iface;
    std::map<ir::Stage, const ir::Endpoint*> endpoints;
    for (ir::Stage stage : kFilterStages)
      if (const ir::Endpoint* endpoint = endpoint_for(stage, iface)) endpoints[stage] = endpoint;
    if (endpoints.empty()) continue;  // nothing classifies it: as open as without a HostEndpoint
    const ir::Origin& origin = endpoints.begin()->second->origin;
    if (iface == kWildcard) {
      // The FelixConfiguration written leaves interfacePrefix and interfaceExclude at their defaults.
      report(Severity::warning, origin,
             "the '*' HostEndpoint does not cover interfaces whose names start with 'cali' (Felix's "
             "interfacePrefix: pods' interfaces) nor kube-ipvs0 (interfaceExclude)",
             "on a Calico node Felix polices those otherwise; elsewhere there are none");
    } else if (!is_interface_name(iface)) {
      cannot(origin, "interface '" + ir::on_one_line(iface) +
                         "': Calico's interfaceName takes letters, digits, '_', '.' and '-'");
      continue;
    } else if (iface.starts_with("cali") || iface == "kube-ipvs0") {
      cannot(origin, "interface '" + iface + "': Felix takes it for " +
                         (iface == "kube-ipvs0" ? "an excluded interface (interfaceExclude)"
                                                : "a pod's (interfacePrefix 'cali')") +
                         " and applies no HostEndpoint to it");
      continue;
    }
    const std::string iface_part = iface == kWildcard ? std::string("all") : slug(iface, 20);
    const std::string base = slug(node_, 40) + "-" + (iface_part.empty() ? std::string("if") : iface_part);
    hep.name = base;
    for (int n = 2; !names.insert(hep.name).second; ++n) hep.name = base + "-" + std::to_string(n);
    for (ir::Stage stage : kFilterStages) {
      const ir::Endpoint* endpoint = endpoints.count(stage) ? endpoints[stage] : nullptr;
      // Without an input endpoint the forward policies would decide traffic to the host.
      if (!endpoint && !(stage == ir::Stage::input && endpoints.count(ir::Stage::forward))) continue;
      Context ctx;
      ctx.stage = stage;
      ctx.iface = iface;
      ctx.endpoint = endpoint;
      std::vector<PolicyText> policies;
      std::string identity = render(ctx, policies);
      auto& known = group_by_text_[stage];
      auto& groups = groups_[stage];
      auto found = known.find(identity);
      if (found == known.end()) {
        std::string label = slug(endpoint ? endpoint->name : "no-endpoint", 30);
        if (label.empty()) label = "endpoint";
        auto taken = [&](const std::string& candidate) {
          return std::any_of(groups.begin(), groups.end(),
                             [&](const PolicyGroup& g) { return g.label == candidate; });
        };
        if (taken(label)) label += "-" + (iface == kWildcard ? std::string("all") : slug(iface, 12));
        std::string unique = label;
        for (int n = 2; taken(unique); ++n) unique = label + "-" + std::to_string(n);
        groups.push_back({unique, std::move(policies), {}});
        found = known.emplace(identity, groups.size() - 1).first;
      }
      PolicyGroup& group = groups[found->second];
      group.interfaces.push_back(iface == kWildcard ? "every other interface (*)" : iface);
      hep.labels[std::string(kLabelPrefix) + std::string(ir::to_string(stage))] = group.label;
      if (endpoint) {
        hep.comments.push_back(std::string(ir::to_string(stage)) + ": endpoint '" + endpoint->name + "', " +
                               where(endpoint->origin));
        if (endpoint->origin.policy.starts_with("zone ") && !hep.labels.count("fwengine.io/zone")) {
          std::string zone = endpoint->origin.policy.substr(5);
          if (!zone.empty() && zone.size() <= 63 && slug(zone, 63) == zone)
            hep.labels["fwengine.io/zone"] = zone;
        }
      }
    }
    host_endpoints_.push_back(std::move(hep));
  }
  report_other_stages();
  return {{"00-felixconfiguration.yaml", felix_configuration()},
          {"10-hostendpoints.yaml", host_endpoints_text()},
          {"20-globalnetworkpolicies.yaml", policies_text()}};
}

}  // namespace

std::map<std::string, std::string> write_resources(const ir::Ruleset& ruleset, const std::string& node,
                                                   Diagnostics& diag) {
  return Writer(ruleset, node, diag).run();
}

}  // namespace fwe::calico
