// canonical.cpp - the IR's canonical JSON (and YAML) form and its hash.
#include "fwengine/canonical.hpp"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

namespace fwe::canonical {

using nlohmann::json;
using namespace fwe::ir;

namespace {

struct Writer {
  const Ruleset& rs;
  bool with_origins;

  void origin(json& j, const Origin& o) const {
    if (!with_origins) return;
    std::string where = o.loc.file < rs.files.size() ? rs.files[o.loc.file] : "";
    if (o.loc.line > 0) where += ':' + std::to_string(o.loc.line) + ':' + std::to_string(o.loc.col);
    json origin = {{"at", where}};
    if (!o.policy.empty()) origin["policy"] = o.policy;
    if (o.rule >= 0) origin["rule"] = o.rule;
    j["origin"] = std::move(origin);
  }

  static json ifaces(const std::vector<IfacePattern>& v) {
    json out = json::array();
    for (const auto& p : v) out.push_back(to_string(p));
    return out;
  }
  static json ports(const PortSet& set) {
    json out = json::array();
    for (const auto& r : set)
      out.push_back(r.lo == r.hi ? std::to_string(r.lo) : std::to_string(r.lo) + "-" + std::to_string(r.hi));
    return out;
  }
  static json macs(const std::vector<MacAddr>& v) {
    json out = json::array();
    for (const auto& m : v) out.push_back(to_string(m));
    return out;
  }
  static std::string neg(bool negate, std::string s) { return negate ? "!" + s : s; }

  json match(const Match& m) const {
    json j = json::object();
    if (m.iif) j["iif"] = {{"negate", m.iif_negate}, {"names", ifaces(*m.iif)}};
    if (m.oif) j["oif"] = {{"negate", m.oif_negate}, {"names", ifaces(*m.oif)}};
    if (m.family != Family::any) j["family"] = to_string(m.family);
    if (m.protocols) {
      json p = json::array();
      for (auto n : *m.protocols) p.push_back(protocol_name(n));
      j["protocol"] = {{"negate", m.protocol_negate}, {"any", p}};
    }
    auto addrs = [&](const std::vector<AddrMatch>& v) {
      json out = json::array();
      for (const auto& a : v) out.push_back(neg(a.negate, a.set));
      return out;
    };
    if (!m.src_addr.empty()) j["src-addr"] = addrs(m.src_addr);
    if (!m.dst_addr.empty()) j["dst-addr"] = addrs(m.dst_addr);
    auto port_matches = [&](const std::vector<PortMatch>& v) {
      json out = json::array();
      for (const auto& p : v) out.push_back({{"negate", p.negate}, {"ports", ports(p.ports)}});
      return out;
    };
    if (!m.src_port.empty()) j["src-port"] = port_matches(m.src_port);
    if (!m.dst_port.empty()) j["dst-port"] = port_matches(m.dst_port);
    if (m.icmp) {
      json i = {{"negate", m.icmp->negate}, {"v6", m.icmp->v6}};
      if (m.icmp->type) i["type"] = *m.icmp->type;
      if (m.icmp->code) i["code"] = *m.icmp->code;
      j["icmp"] = std::move(i);
    }
    if (m.ct_states) {
      json s = json::array();
      for (auto c : *m.ct_states) s.push_back(to_string(c));
      j["ct-state"] = {{"negate", m.ct_negate}, {"any", s}};
    }
    if (m.src_mac) j["src-mac"] = {{"negate", m.src_mac_negate}, {"any", macs(*m.src_mac)}};
    if (m.pkt_type) j["pkt-type"] = *m.pkt_type;
    if (m.mark_value)
      j["mark"] = {{"negate", m.mark_negate}, {"value", *m.mark_value}, {"mask", m.mark_mask}};
    if (m.rate_limit)
      j["rate-limit"] = {
          {"rate", m.rate_limit->rate}, {"unit", m.rate_limit->unit}, {"burst", m.rate_limit->burst}};
    if (m.ct_status) {
      json s = json::array();
      for (auto c : *m.ct_status) s.push_back(to_string(c));
      j["ct-status"] = {{"any", s}};
    }
    return j;
  }

  static json action(const Action& a) {
    json j = {{"kind", to_string(a.kind)}};
    switch (a.kind) {
      case ActionKind::reject:
        j["with"] = a.reject_with;
        break;
      case ActionKind::log:
        j["prefix"] = a.log_prefix;
        j["level"] = a.log_level;
        break;
      case ActionKind::jump:
      case ActionKind::ct_helper:
        j["target"] = a.target;
        break;
      case ActionKind::set_mark:
        j["value"] = a.mark_value;
        j["mask"] = a.mark_mask;
        break;
      case ActionKind::dnat:
      case ActionKind::redirect:
      case ActionKind::snat:
      case ActionKind::masquerade:
        if (a.nat_addr) j["addr"] = to_string(*a.nat_addr);
        if (a.nat_port) j["port"] = ports({*a.nat_port});
        break;
      default:
        break;
    }
    return j;
  }

  json rule(const Rule& r) const {
    json j = {{"match", match(r.match)}, {"action", action(r.action)}};
    origin(j, r.origin);
    return j;
  }

  json endpoint(const Endpoint& ep) const {
    json m = json::object();
    if (ep.match.iif) m["iif"] = to_string(*ep.match.iif);
    if (ep.match.oif) m["oif"] = to_string(*ep.match.oif);
    if (ep.match.src_set) m["src-set"] = *ep.match.src_set;
    if (ep.match.dst_set) m["dst-set"] = *ep.match.dst_set;
    if (ep.match.src_mac) m["src-mac"] = macs(*ep.match.src_mac);
    json groups = json::array();
    for (const auto& g : ep.groups) {
      json jg = {{"name", g.name}, {"chains", g.chains}, {"on-end", to_string(g.on_end)}};
      if (g.on_end == Verdict::reject) jg["with"] = g.reject_with;
      origin(jg, g.origin);
      groups.push_back(std::move(jg));
    }
    json j = {{"name", ep.name},
              {"match", std::move(m)},
              {"conntrack", to_string(ep.conntrack)},
              {"failsafe", ep.failsafe},
              {"failsafe-chain", ep.failsafe_chain},
              {"groups", std::move(groups)},
              {"default", to_string(ep.default_verdict)}};
    if (ep.default_verdict == Verdict::reject) j["with"] = ep.reject_with;
    origin(j, ep.origin);
    return j;
  }

  json failsafe_entries(const std::vector<FailsafeEntry>& v) const {
    json out = json::array();
    for (const auto& e : v) {
      json j = {{"protocol", protocol_name(e.protocol)}, {"port", e.port}};
      if (e.net) j["net"] = to_string(*e.net);
      origin(j, e.origin);
      out.push_back(std::move(j));
    }
    return out;
  }

  json ruleset() const {
    json sets = json::object();
    for (const auto& [name, set] : rs.sets) {
      json cidrs = json::array();
      for (const auto& c : set.cidrs) cidrs.push_back(to_string(c));
      sets[name] = std::move(cidrs);
    }
    json chains = json::object();
    for (const auto& [name, chain] : rs.chains) {
      json rules = json::array();
      for (const auto& r : chain.rules) rules.push_back(rule(r));
      chains[name] = std::move(rules);
    }
    json stages = json::object();
    for (std::size_t s = 0; s < kStageCount; ++s) {
      if (rs.stages[s].empty()) continue;
      json sections = json::array();
      for (const auto& sec : rs.stages[s].sections) {
        json eps = json::array();
        for (const auto& ep : sec.endpoints) eps.push_back(endpoint(ep));
        sections.push_back(
            {{"name", sec.name}, {"honour-allow", sec.honour_allow}, {"endpoints", std::move(eps)}});
      }
      stages[std::string(to_string(static_cast<Stage>(s)))] = std::move(sections);
    }
    json j = {{"ir-version", 1},
              {"sets", std::move(sets)},
              {"chains", std::move(chains)},
              {"stages", std::move(stages)},
              {"failsafe",
               {{"inbound", failsafe_entries(rs.failsafe.inbound)},
                {"outbound", failsafe_entries(rs.failsafe.outbound)}}}};
    if (with_origins) {
      j["frontend"] = rs.frontend;
      j["files"] = rs.files;
    }
    return j;
  }
};

void emit(YAML::Emitter& out, const json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (const auto& [k, v] : j.items()) {
      out << YAML::Key << k << YAML::Value;
      emit(out, v);
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    bool scalars = std::all_of(j.begin(), j.end(), [](const json& e) { return e.is_primitive(); });
    out << (scalars && !j.empty() ? YAML::Flow : YAML::Block) << YAML::BeginSeq;
    for (const auto& v : j) emit(out, v);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    out << j.get<std::string>();
  } else if (j.is_boolean()) {
    out << j.get<bool>();
  } else if (j.is_number_unsigned()) {
    out << j.get<std::uint64_t>();
  } else if (j.is_number_integer()) {
    out << j.get<std::int64_t>();
  } else if (j.is_number()) {
    out << j.get<double>();
  } else {
    out << YAML::Null;
  }
}

}  // namespace

json to_json(const Ruleset& rs, bool with_origins) {
  return Writer{rs, with_origins}.ruleset();
}

std::string to_yaml(const Ruleset& rs, bool with_origins) {
  YAML::Emitter out;
  emit(out, to_json(rs, with_origins));
  return std::string(out.c_str()) + "\n";
}

std::string hash(const Ruleset& rs) {
  const std::string text = to_json(rs, false).dump();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

}  // namespace fwe::canonical
