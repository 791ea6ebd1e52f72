// writer.cpp - the IR in our plain-YAML policy format, written with yaml-cpp's emitter.
//
// The writer uses the short forms the reader accepts (a scalar for one value, "!x" for a negated one,
// an inline address list where the set belongs to one rule) and chooses exactly the shapes that read
// back to the same IR: inline sets keep the names the reader derives from their place.
#include "writer.hpp"

#include <map>
#include <regex>
#include <set>

#include <yaml-cpp/yaml.h>

#include "policy_format.hpp"

namespace fwe::yamlfe {

namespace {

// True when a plain scalar would not read back as this same string under YAML 1.2's core schema, or
// holds characters that are not safe unquoted in flow context.
bool needs_quotes(const std::string& text) {
  static const std::regex non_string(
      R"(~|null|Null|NULL|true|True|TRUE|false|False|FALSE|[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+|)"
      R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))");
  static const std::regex plain_safe(R"([A-Za-z0-9_/][A-Za-z0-9_./+-]*)");
  return !std::regex_match(text, plain_safe) || std::regex_match(text, non_string);
}

class Writer {
 public:
  Writer(const ir::Ruleset& ruleset, Diagnostics& diag) : ruleset_(ruleset), diag_(diag) {}
  std::optional<std::string> run();

 private:
  const ir::Ruleset& ruleset_;
  Diagnostics& diag_;
  YAML::Emitter out_;
  std::set<std::string> inline_sets_;
  bool ok_ = true;

  void fail(const ir::Origin& origin, std::string message) {
    diag_.error(origin.loc, "cannot write as yaml: " + std::move(message),
                "fix the source, or migrate to a format that can express it");
    ok_ = false;
  }
  std::string where(const ir::Origin& origin) const;

  void str(const std::string& text) {
    if (needs_quotes(text)) out_ << YAML::DoubleQuoted;
    out_ << text;
  }
  void key(const std::string& text) {
    out_ << YAML::Key;
    str(text);
    out_ << YAML::Value;
  }
  // One value, a list, "!value" or {not: [list]}.
  void negatable(const std::vector<std::string>& values, bool negate);
  void negatable_ints(const std::vector<std::string>& values, bool negate);

  void find_inline_sets();
  bool inline_set(const std::string& name, const std::string& expected) const {
    return name == expected && inline_sets_.count(name) > 0;
  }
  void write_failsafe();
  void write_sets();
  void write_chains();
  void write_rule(const ir::Rule& rule, const std::string& owner);
  void write_addresses(const ir::AddrMatches& matches, const std::string& owner, std::string_view side);
  void write_address_term(const ir::AddrMatch& match, bool inlined);
  void write_ports(const ir::PortMatches& matches);
  void write_icmp(const ir::IcmpMatch& icmp, const ir::Origin& origin);
  void write_action(const ir::Action& action, const ir::Origin& origin);
  void write_stages();
  void write_endpoint(const ir::Endpoint& endpoint, const std::string& owner);
  std::string verdict(ir::Verdict verdict, const std::string& reject_with, const ir::Origin& origin);
  void check_reject_with(const std::string& reply, const ir::Origin& origin);
};

// A host is written as a bare address, as people write it.
std::string cidr_text(const ir::Cidr& cidr) {
  return cidr.prefix == cidr.addr.width() ? ir::to_string(cidr.addr) : ir::to_string(cidr);
}

std::string port_text(const ir::PortRange& range) {
  return range.lo == range.hi ? std::to_string(range.lo)
                              : std::to_string(range.lo) + "-" + std::to_string(range.hi);
}

std::string Writer::where(const ir::Origin& origin) const {
  if (origin.loc.line == 0 && origin.policy.empty()) return {};
  std::string text = "from ";
  if (origin.loc.line > 0) {
    text += origin.loc.file < ruleset_.files.size() ? ruleset_.files[origin.loc.file] : "?";
    text += ":" + std::to_string(origin.loc.line);
  }
  if (!origin.policy.empty()) text += (origin.loc.line > 0 ? ", " : "") + origin.policy;
  if (origin.rule >= 0) text += " rule " + std::to_string(origin.rule);
  return ir::on_one_line(text);  // a comment ends at a line break
}

void Writer::negatable(const std::vector<std::string>& values, bool negate) {
  if (values.size() == 1) {
    str((negate ? "!" : "") + values.front());
    return;
  }
  if (negate) out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "not" << YAML::Value;
  out_ << YAML::Flow << YAML::BeginSeq;
  for (const auto& value : values) str(value);
  out_ << YAML::EndSeq;
  if (negate) out_ << YAML::EndMap;
}

// Like negatable(), but a lone number stays a number so that ports read as ports, not strings.
void Writer::negatable_ints(const std::vector<std::string>& values, bool negate) {
  auto item = [&](const std::string& value) {
    if (value.find('-') == std::string::npos)
      out_ << std::stoul(value);
    else
      out_ << value;
  };
  if (values.size() == 1 && !negate) return item(values.front());
  if (values.size() == 1) return str("!" + values.front());
  if (negate) out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "not" << YAML::Value;
  out_ << YAML::Flow << YAML::BeginSeq;
  for (const auto& value : values) item(value);
  out_ << YAML::EndSeq;
  if (negate) out_ << YAML::EndMap;
}

// A set is written inline where it stands when exactly one match uses it, it has addresses, and its name
// is the one the reader would give it there.
void Writer::find_inline_sets() {
  std::map<std::string, int> uses;
  for (const auto& [name, chain] : ruleset_.chains)
    for (const auto& rule : chain.rules) {
      for (const auto* side : {&rule.match.src_addr, &rule.match.dst_addr})
        for (const auto& match : *side)
          if (!match.in_place()) ++uses[match.set_name];
    }
  for (const auto& stage : ruleset_.stages)
    for (const auto& section : stage.sections)
      for (const auto& endpoint : section.endpoints) {
        if (endpoint.match.src_set) ++uses[*endpoint.match.src_set];
        if (endpoint.match.dst_set) ++uses[*endpoint.match.dst_set];
      }
  // A rule's one address reads back in place, not as a set: a set of one is written as a set there.
  auto consider = [&](const std::string& name, const std::string& expected, bool in_rule) {
    const ir::AddrSet* set = ruleset_.find_set(name);
    if (name == expected && set && !set->cidrs.empty() && !(in_rule && set->cidrs.size() == 1) &&
        uses[name] == 1)
      inline_sets_.insert(name);
  };
  for (const auto& [chain_name, chain] : ruleset_.chains)
    for (std::size_t r = 0; r < chain.rules.size(); ++r) {
      std::string owner = rule_owner(chain_name, r);
      const auto& match = chain.rules[r].match;
      for (std::size_t i = 0; i < match.src_addr.size(); ++i)
        if (!match.src_addr[i].in_place())
          consider(match.src_addr[i].set_name, inline_set_name(owner, "src", i), true);
      for (std::size_t i = 0; i < match.dst_addr.size(); ++i)
        if (!match.dst_addr[i].in_place())
          consider(match.dst_addr[i].set_name, inline_set_name(owner, "dst", i), true);
    }
  for (std::size_t s = 0; s < ruleset_.stages.size(); ++s)
    for (std::size_t c = 0; c < ruleset_.stages[s].sections.size(); ++c)
      for (std::size_t e = 0; e < ruleset_.stages[s].sections[c].endpoints.size(); ++e) {
        const auto& match = ruleset_.stages[s].sections[c].endpoints[e].match;
        std::string owner = endpoint_owner(static_cast<ir::Stage>(s), c, e);
        if (match.src_set) consider(*match.src_set, inline_set_name(owner, "src", 0), false);
        if (match.dst_set) consider(*match.dst_set, inline_set_name(owner, "dst", 0), false);
      }
}

void Writer::write_failsafe() {
  const auto& failsafe = ruleset_.failsafe;
  if (failsafe.inbound.empty() && failsafe.outbound.empty()) return;
  key("failsafe");
  out_ << YAML::BeginMap;
  for (auto [direction, entries] :
       {std::pair{"inbound", &failsafe.inbound}, std::pair{"outbound", &failsafe.outbound}}) {
    if (entries->empty()) continue;
    key(direction);
    out_ << YAML::BeginSeq;
    for (const auto& entry : *entries) {
      if (!ir::protocol_has_ports(entry.protocol))
        fail(entry.origin, "a failsafe entry needs a protocol with ports");
      out_ << YAML::Flow << YAML::BeginMap;
      key("protocol");
      str(ir::protocol_name(entry.protocol));
      key("port");
      out_ << entry.port;
      if (entry.net) {
        key("net");
        str(ir::to_string(*entry.net));
      }
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
  }
  out_ << YAML::EndMap;
}

void Writer::write_sets() {
  bool any = false;
  for (const auto& [name, set] : ruleset_.sets) {
    if (inline_sets_.count(name)) continue;
    if (!any) {
      key("sets");
      out_ << YAML::BeginMap;
      any = true;
    }
    if (!valid_set_name(name))
      fail(set.origin, "set name '" + name + "' looks like an address or a negation");
    key(name);
    out_ << YAML::Flow << YAML::BeginSeq;
    for (const auto& cidr : set.cidrs) str(cidr_text(cidr));
    out_ << YAML::EndSeq;
  }
  if (any) out_ << YAML::EndMap;
}

void Writer::write_chains() {
  if (ruleset_.chains.empty()) return;
  key("chains");
  out_ << YAML::BeginMap;
  for (const auto& [name, chain] : ruleset_.chains) {
    key(name);
    if (auto comment = where(chain.origin); !comment.empty()) out_ << YAML::Comment(comment);
    out_ << YAML::BeginSeq;
    for (std::size_t r = 0; r < chain.rules.size(); ++r) {
      write_rule(chain.rules[r], rule_owner(name, r));
      if (auto comment = where(chain.rules[r].origin); !comment.empty()) out_ << YAML::Comment(comment);
    }
    out_ << YAML::EndSeq;
  }
  out_ << YAML::EndMap;
}

void Writer::write_rule(const ir::Rule& rule, const std::string& owner) {
  const ir::Match& match = rule.match;
  out_ << YAML::Flow << YAML::BeginMap;
  for (auto [field, ifaces, negate] :
       {std::tuple{"iif", &match.iif, match.iif_negate}, std::tuple{"oif", &match.oif, match.oif_negate}}) {
    if (!*ifaces) continue;
    if ((*ifaces)->empty()) fail(rule.origin, std::string(field) + " with no interface");
    std::vector<std::string> names;
    for (const auto& iface : **ifaces) names.push_back(ir::to_string(iface));
    key(field);
    negatable(names, negate);
  }
  if (match.family != ir::Family::any) {
    key("family");
    str(std::string(ir::to_string(match.family)));
  }
  if (match.protocols) {
    if (match.protocols->empty()) fail(rule.origin, "protocol with no protocol");
    std::vector<std::string> names;
    for (auto number : *match.protocols) names.push_back(ir::protocol_name(number));
    key("protocol");
    negatable(names, match.protocol_negate);
  }
  if (!match.src_addr.empty()) {
    key("src");
    write_addresses(match.src_addr, owner, "src");
  }
  if (!match.dst_addr.empty()) {
    key("dst");
    write_addresses(match.dst_addr, owner, "dst");
  }
  for (auto [field, ports] : {std::pair{"sport", &match.src_port}, std::pair{"dport", &match.dst_port},
                              std::pair{"ct-orig-dport", &match.ct_orig_dport}}) {
    if (ports->empty()) continue;
    key(field);
    write_ports(*ports);
  }
  if (match.icmp) {
    if (excludes_protocol(match, match.icmp->v6 ? 58 : 1))
      fail(rule.origin, std::string(match.icmp->v6 ? "icmpv6" : "icmp") +
                            " in a rule whose protocol leaves it out (a rule that matches nothing)");
    write_icmp(*match.icmp, rule.origin);
  }
  if (match.ct_states) {
    if (match.ct_states->empty()) fail(rule.origin, "ct-state with no state");
    std::vector<std::string> names;
    for (auto state : *match.ct_states) names.emplace_back(ir::to_string(state));
    key("ct-state");
    negatable(names, match.ct_negate);
  }
  if (match.src_mac) {
    if (match.src_mac->empty()) fail(rule.origin, "src-mac with no address");
    std::vector<std::string> macs;
    for (const auto& mac : *match.src_mac) macs.push_back(ir::to_string(mac));
    key("src-mac");
    negatable(macs, match.src_mac_negate);
  }
  if (match.pkt_type) {
    const auto& names = pkt_type_names();
    if (std::find(names.begin(), names.end(), *match.pkt_type) == names.end())
      fail(rule.origin, "unknown packet type '" + *match.pkt_type + "'");
    key("pkt-type");
    str(*match.pkt_type);
  }
  if (match.mark_value) {
    key("mark");
    if (match.mark_negate) out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "not" << YAML::Value;
    if (match.mark_mask == 0xffffffff) {
      out_ << YAML::Hex << *match.mark_value;
    } else {
      out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "value" << YAML::Value << YAML::Hex
           << *match.mark_value << YAML::Key << "mask" << YAML::Value << YAML::Hex << match.mark_mask
           << YAML::EndMap;
    }
    if (match.mark_negate) out_ << YAML::EndMap;
  }
  if (match.rate_limit) {
    const auto& limit = *match.rate_limit;
    const auto& units = rate_unit_names();
    if (std::find(units.begin(), units.end(), limit.unit) == units.end() || limit.rate == 0)
      fail(rule.origin, "rate limit " + std::to_string(limit.rate) + "/" + limit.unit);
    key("rate-limit");
    if (limit.burst == 0) {
      str(std::to_string(limit.rate) + "/" + limit.unit);
    } else {
      out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "rate" << YAML::Value << limit.rate << YAML::Key
           << "per" << YAML::Value << limit.unit << YAML::Key << "burst" << YAML::Value << limit.burst
           << YAML::EndMap;
    }
  }
  if (match.ct_status) {
    if (match.ct_status->empty()) fail(rule.origin, "ct-status with no status");
    std::vector<std::string> names;
    for (auto status : *match.ct_status) names.emplace_back(ir::to_string(status));
    key("ct-status");
    negatable(names, false);
  }
  if (match.rpf) {
    key("rpf");
    negatable({std::string(ir::to_string(*match.rpf))}, match.rpf_negate);
  }
  if (rule.action.kind == ir::ActionKind::reject && rule.action.reject_with == "tcp-reset" &&
      excludes_protocol(match, 6))
    fail(rule.origin, "a tcp-reset reply in a rule whose protocol leaves tcp out");
  write_action(rule.action, rule.origin);
  out_ << YAML::EndMap;
}

void Writer::write_addresses(const ir::AddrMatches& matches, const std::string& owner,
                             std::string_view side) {
  auto inlined = [&](std::size_t i) {
    return matches[i].in_place() || inline_set(matches[i].set_name, inline_set_name(owner, side, i));
  };
  if (matches.size() == 1) return write_address_term(matches.front(), inlined(0));
  out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "all" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (std::size_t i = 0; i < matches.size(); ++i) write_address_term(matches[i], inlined(i));
  out_ << YAML::EndSeq << YAML::EndMap;
}

void Writer::write_address_term(const ir::AddrMatch& match, bool inlined) {
  if (!inlined) return str((match.negate ? "!" : "") + match.set_name);
  std::vector<std::string> cidrs;
  for (const auto& cidr : ir::addresses(ruleset_, match)) cidrs.push_back(cidr_text(cidr));
  negatable(cidrs, match.negate);
}

void Writer::write_ports(const ir::PortMatches& matches) {
  auto term = [&](const ir::PortMatch& match) {
    std::vector<std::string> ports;
    for (const auto& range : match.ports) ports.push_back(port_text(range));
    negatable_ints(ports, match.negate);
  };
  if (matches.size() == 1) return term(matches.front());
  out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "all" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& match : matches) term(match);
  out_ << YAML::EndSeq << YAML::EndMap;
}

void Writer::write_icmp(const ir::IcmpMatch& icmp, const ir::Origin& origin) {
  key(icmp.v6 ? "icmpv6" : "icmp");
  if (!icmp.type) {
    if (icmp.negate || icmp.code) fail(origin, "an ICMP match without a type but with a code or negation");
    out_ << "any";
    return;
  }
  auto name = icmp_type_name(*icmp.type, icmp.v6);
  std::string type = name ? std::string(*name) : std::to_string(*icmp.type);
  if (!icmp.code) return negatable({type}, icmp.negate);
  if (icmp.negate) out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "not" << YAML::Value;
  out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "type" << YAML::Value;
  if (name)
    out_ << type;
  else
    out_ << static_cast<unsigned>(*icmp.type);
  out_ << YAML::Key << "code" << YAML::Value << static_cast<unsigned>(*icmp.code) << YAML::EndMap;
  if (icmp.negate) out_ << YAML::EndMap;
}

void Writer::check_reject_with(const std::string& reply, const ir::Origin& origin) {
  const auto& names = reject_with_names();
  if (!reply.empty() && std::find(names.begin(), names.end(), reply) == names.end())
    fail(origin, "unknown reject reply '" + reply + "'");
}

void Writer::write_action(const ir::Action& action, const ir::Origin& origin) {
  key("action");
  out_ << std::string(ir::to_string(action.kind));
  switch (action.kind) {
    case ir::ActionKind::reject:
      check_reject_with(action.reject_with, origin);
      if (!action.reject_with.empty()) {
        key("reject-with");
        str(action.reject_with);
      }
      break;
    case ir::ActionKind::log:
      if (!action.log_prefix.empty()) {
        key("prefix");
        out_ << YAML::DoubleQuoted << action.log_prefix;
      }
      if (action.log_level > 7) fail(origin, "log level " + std::to_string(action.log_level));
      if (action.log_level != ir::Action{}.log_level) {
        key("level");
        out_ << std::string(log_level_name(action.log_level));
      }
      break;
    case ir::ActionKind::jump:
      key("target");
      str(action.target);
      break;
    case ir::ActionKind::ct_helper:
      key("helper");
      str(action.target);
      break;
    case ir::ActionKind::tcp_mss_clamp:
      if (action.mss) {
        key("mss");
        out_ << action.mss;
      }
      break;
    case ir::ActionKind::set_mark:
      key("set-mark");
      if (action.mark_mask == 0xffffffff)
        out_ << YAML::Hex << action.mark_value;
      else
        out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "value" << YAML::Value << YAML::Hex
             << action.mark_value << YAML::Key << "mask" << YAML::Value << YAML::Hex << action.mark_mask
             << YAML::EndMap;
      break;
    case ir::ActionKind::dnat:
    case ir::ActionKind::snat:
      if (!action.nat_addr) {
        fail(origin, std::string(ir::to_string(action.kind)) + " without an address");
        break;
      }
      key("to");
      str(ir::to_string(*action.nat_addr));
      break;
    default:
      break;
  }
  bool takes_port = action.kind == ir::ActionKind::dnat || action.kind == ir::ActionKind::snat ||
                    action.kind == ir::ActionKind::redirect || action.kind == ir::ActionKind::masquerade;
  if (action.nat_port && takes_port) {
    key("to-port");
    negatable_ints({port_text(*action.nat_port)}, false);
  }
}

std::string Writer::verdict(ir::Verdict verdict, const std::string& reject_with, const ir::Origin& origin) {
  if (reject_with.empty()) return std::string(ir::to_string(verdict));
  if (verdict != ir::Verdict::reject)
    fail(origin, "a reject reply on verdict " + std::string(ir::to_string(verdict)));
  check_reject_with(reject_with, origin);
  return std::string(ir::to_string(verdict)) + ":" + reject_with;
}

void Writer::write_stages() {
  bool any = false;
  for (std::size_t s = 0; s < ruleset_.stages.size(); ++s) {
    const auto& stage = ruleset_.stages[s];
    if (stage.empty()) continue;
    if (!any) {
      key("stages");
      out_ << YAML::BeginMap;
      any = true;
    }
    auto stage_id = static_cast<ir::Stage>(s);
    key(std::string(ir::to_string(stage_id)));
    out_ << YAML::BeginSeq;
    for (std::size_t c = 0; c < stage.sections.size(); ++c) {
      const auto& section = stage.sections[c];
      out_ << YAML::BeginMap;
      if (!section.name.empty()) {
        key("name");
        str(section.name);
      }
      if (section.honour_allow) {
        key("honour-allow");
        out_ << true;
      }
      key("endpoints");
      out_ << YAML::BeginSeq;
      for (std::size_t e = 0; e < section.endpoints.size(); ++e)
        write_endpoint(section.endpoints[e], endpoint_owner(stage_id, c, e));
      out_ << YAML::EndSeq << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
  }
  if (any) out_ << YAML::EndMap;
}

void Writer::write_endpoint(const ir::Endpoint& endpoint, const std::string& owner) {
  out_ << YAML::BeginMap;
  key("name");
  str(endpoint.name);
  if (auto comment = where(endpoint.origin); !comment.empty()) out_ << YAML::Comment(comment);
  const auto& match = endpoint.match;
  for (auto [field, iface] : {std::pair{"iif", &match.iif}, std::pair{"oif", &match.oif}}) {
    if (!*iface) continue;
    key(field);
    str(ir::to_string(**iface));
  }
  for (auto [field, set] : {std::pair{"src", &match.src_set}, std::pair{"dst", &match.dst_set}}) {
    if (!*set) continue;
    key(field);
    write_address_term({false, **set}, inline_set(**set, inline_set_name(owner, field, 0)));
  }
  if (match.src_mac) {
    if (match.src_mac->empty()) fail(endpoint.origin, "src-mac with no address");
    std::vector<std::string> macs;
    for (const auto& mac : *match.src_mac) macs.push_back(ir::to_string(mac));
    key("src-mac");
    negatable(macs, false);
  }
  if (endpoint.conntrack != ir::Conntrack::none) {
    key("conntrack");
    out_ << std::string(ir::to_string(endpoint.conntrack));
  }
  if (endpoint.failsafe) {
    key("failsafe");
    out_ << true;
  }
  const auto& groups = endpoint.groups;
  bool shorthand = groups.size() == 1 && groups.front().name.empty() &&
                   groups.front().on_end == ir::Verdict::continue_ && groups.front().reject_with.empty();
  if (shorthand) {
    key("chains");
    out_ << YAML::Flow << YAML::BeginSeq;
    for (const auto& chain : groups.front().chains) str(chain);
    out_ << YAML::EndSeq;
  } else if (!groups.empty()) {
    key("groups");
    out_ << YAML::BeginSeq;
    for (const auto& group : groups) {
      out_ << YAML::Flow << YAML::BeginMap;
      if (!group.name.empty()) {
        key("name");
        str(group.name);
      }
      key("chains");
      out_ << YAML::Flow << YAML::BeginSeq;
      for (const auto& chain : group.chains) str(chain);
      out_ << YAML::EndSeq;
      if (group.on_end != ir::Verdict::continue_ || !group.reject_with.empty()) {
        key("on-end");
        str(verdict(group.on_end, group.reject_with, group.origin));
      }
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
  }
  if (endpoint.default_verdict != ir::Verdict::continue_ || !endpoint.reject_with.empty()) {
    key("default");
    str(verdict(endpoint.default_verdict, endpoint.reject_with, endpoint.origin));
  }
  out_ << YAML::EndMap;
}

// The source files some piece of the ruleset came from, in load order: a frontend may read many files
// (firewalld reads every stock service) of which only a few contribute.
std::set<std::uint32_t> referenced_files(const ir::Ruleset& ruleset) {
  std::set<std::uint32_t> files;
  auto note = [&](const ir::Origin& origin) {
    // A name in angle brackets is no file ("<command line>", firewalld's built-in defaults).
    if (origin.loc.file < ruleset.files.size() && !ruleset.files[origin.loc.file].starts_with('<'))
      files.insert(origin.loc.file);
  };
  for (const auto& [name, set] : ruleset.sets) note(set.origin);
  ir::for_each_rule_origin(ruleset, note);
  for (const auto* entries : {&ruleset.failsafe.inbound, &ruleset.failsafe.outbound})
    for (const auto& entry : *entries) note(entry.origin);
  return files;
}

std::optional<std::string> Writer::run() {
  find_inline_sets();
  out_.SetIndent(2);
  std::string sources;
  for (std::uint32_t file : referenced_files(ruleset_))
    sources += (sources.empty() ? "" : ", ") + ruleset_.files[file];
  out_ << YAML::Comment(ir::on_one_line(
      "fwengine policy, written from the " +
      (ruleset_.frontend.empty() ? std::string("unknown") : ruleset_.frontend) + " frontend" +
      (sources.empty() ? std::string() : " (" + sources + ")") + "; see docs/yaml-format.md"));
  out_ << YAML::BeginMap;
  key("apiVersion");
  out_ << std::string(kApiVersion);
  write_failsafe();
  write_sets();
  write_chains();
  write_stages();
  out_ << YAML::EndMap;
  if (!out_.good()) {
    diag_.error({}, "internal error writing yaml: " + out_.GetLastError());
    return std::nullopt;
  }
  if (!ok_) return std::nullopt;
  return std::string(out_.c_str(), out_.size()) + "\n";
}

}  // namespace

std::optional<std::string> write_policy(const ir::Ruleset& ruleset, Diagnostics& diag) {
  return Writer(ruleset, diag).run();
}

}  // namespace fwe::yamlfe
