// canonical.cpp - the IR's canonical JSON (and YAML) form and its hash.
//
// The canonical text is written directly, without building a JSON tree first: hashing a large ruleset
// is on every apply's path, and a tree of small allocations cost more than reading the policy. The text
// is exactly what nlohmann::json's dump() prints for the same document (keys in byte order, no spaces),
// so to_json() is a parse of it and the hash does not depend on how the text was made.
#include "fwengine/canonical.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <charconv>

#include <nlohmann/json.hpp>

#include "sha256.hpp"

namespace fwe::canonical {

using nlohmann::json;
using namespace fwe::ir;

namespace {

// Compact JSON text. Callers write each object's keys in byte order: that is the canonical order.
// With a sink, the text goes to it in pieces as it is written (the hash needs no 17 MB string for
// 50,000 rules); take() then gives the last piece.
class JsonText {
 public:
  using Sink = void (*)(void* context, std::string_view piece);
  JsonText() = default;
  JsonText(Sink sink, void* context) : sink_(sink), context_(context) {}

  JsonText& open_object() { return open('{'); }
  JsonText& close_object() { return close('}'); }
  JsonText& open_array() { return open('['); }
  JsonText& close_array() { return close(']'); }

  JsonText& key(std::string_view k) {
    separate();
    quote(k);
    out_ += ':';
    after_value_ = false;
    return *this;
  }
  JsonText& string(std::string_view s) {
    separate();
    quote(s);
    return done();
  }
  JsonText& number(std::uint64_t n) {
    separate();
    std::array<char, 24> digits{};
    auto end = std::to_chars(digits.data(), digits.data() + digits.size(), n).ptr;
    out_.append(digits.data(), end);
    return done();
  }
  JsonText& boolean(bool b) {
    separate();
    out_ += b ? "true" : "false";
    return done();
  }
  JsonText& strings(const std::vector<std::string>& v) {
    open_array();
    for (const auto& s : v) string(s);
    return close_array();
  }

  std::string take() { return std::move(out_); }

 private:
  JsonText& open(char c) {
    separate();
    out_ += c;
    after_value_ = false;
    return *this;
  }
  JsonText& close(char c) {
    out_ += c;
    return done();
  }
  JsonText& done() {
    after_value_ = true;
    if (sink_ && out_.size() >= kPiece) {
      sink_(context_, out_);
      out_.clear();
    }
    return *this;
  }
  void separate() {
    if (after_value_) out_ += ',';
  }
  // nlohmann's escaping: the two-character forms it knows, \u00xx (lower-case hex) for other control
  // characters, everything else (UTF-8 included) as it is.
  void quote(std::string_view s) {
    out_ += '"';
    auto plain = [](char c) { return c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20; };
    for (std::size_t i = 0; i < s.size();) {
      std::size_t run = i;
      while (run < s.size() && plain(s[run])) ++run;
      out_.append(s.substr(i, run - i));  // names and addresses are plain: copy them whole
      if (run == s.size()) break;
      escape(s[run]);
      i = run + 1;
    }
    out_ += '"';
  }
  void escape(char c) {
    switch (c) {
      case '"':
        out_ += "\\\"";
        break;
      case '\\':
        out_ += "\\\\";
        break;
      case '\b':
        out_ += "\\b";
        break;
      case '\f':
        out_ += "\\f";
        break;
      case '\n':
        out_ += "\\n";
        break;
      case '\r':
        out_ += "\\r";
        break;
      case '\t':
        out_ += "\\t";
        break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        out_ += "\\u00";
        out_ += kHex[(c >> 4) & 0xf];
        out_ += kHex[c & 0xf];
      }
    }
  }

  static constexpr std::size_t kPiece = 64 * 1024;
  std::string out_;
  bool after_value_ = false;
  Sink sink_ = nullptr;
  void* context_ = nullptr;
};

struct Writer {
  const Ruleset& rs;
  bool with_origins;
  JsonText out;

  // "origin" sorts after every key of the objects that carry one except "with": callers place it.
  void origin(const Origin& o) {
    if (!with_origins) return;
    std::string where = o.loc.file < rs.files.size() ? rs.files[o.loc.file] : "";
    if (o.loc.line > 0) where += ':' + std::to_string(o.loc.line) + ':' + std::to_string(o.loc.col);
    out.key("origin").open_object().key("at").string(where);
    if (!o.policy.empty()) out.key("policy").string(o.policy);
    if (o.rule >= 0) out.key("rule").number(static_cast<std::uint64_t>(o.rule));
    out.close_object();
  }

  void ifaces(std::string_view name, const std::vector<IfacePattern>& v, bool negate) {
    out.key(name).open_object().key("names").open_array();
    for (const auto& p : v) out.string(to_string(p));
    out.close_array().key("negate").boolean(negate).close_object();
  }
  void ports(const PortSet& set) {
    out.open_array();
    for (const auto& r : set)
      out.string(r.lo == r.hi ? std::to_string(r.lo) : std::to_string(r.lo) + "-" + std::to_string(r.hi));
    out.close_array();
  }
  void macs(const std::vector<MacAddr>& v) {
    out.open_array();
    for (const auto& m : v) out.string(to_string(m));
    out.close_array();
  }
  void addrs(std::string_view name, const AddrMatches& v) {
    if (v.empty()) return;
    out.key(name).open_array();
    for (const auto& a : v) out.string(a.negate ? "!" + to_string(a) : to_string(a));
    out.close_array();
  }
  void port_matches(std::string_view name, const PortMatches& v) {
    if (v.empty()) return;
    out.key(name).open_array();
    for (const auto& p : v) {
      out.open_object().key("negate").boolean(p.negate).key("ports");
      ports(p.ports);
      out.close_object();
    }
    out.close_array();
  }
  template <typename Values, typename Name>
  void any_of(std::string_view name, const Values& values, Name value_name, const bool* negate) {
    out.key(name).open_object().key("any").open_array();
    for (auto v : values) out.string(value_name(v));
    out.close_array();
    if (negate) out.key("negate").boolean(*negate);
    out.close_object();
  }

  void match(const Match& m) {
    auto state_name = [](CtState c) { return to_string(c); };
    auto status_name = [](CtStatus c) { return to_string(c); };
    out.open_object();
    port_matches("ct-orig-dport", m.ct_orig_dport);
    if (m.ct_states) any_of("ct-state", *m.ct_states, state_name, &m.ct_negate);
    if (m.ct_status) any_of("ct-status", *m.ct_status, status_name, nullptr);
    addrs("dst-addr", m.dst_addr);
    port_matches("dst-port", m.dst_port);
    if (m.family != Family::any) out.key("family").string(to_string(m.family));
    if (m.icmp) {
      out.key("icmp").open_object();
      if (m.icmp->code) out.key("code").number(*m.icmp->code);
      out.key("negate").boolean(m.icmp->negate);
      if (m.icmp->type) out.key("type").number(*m.icmp->type);
      out.key("v6").boolean(m.icmp->v6).close_object();
    }
    if (m.iif) ifaces("iif", *m.iif, m.iif_negate);
    if (m.mark_value) {
      out.key("mark").open_object().key("mask").number(m.mark_mask).key("negate").boolean(m.mark_negate);
      out.key("value").number(*m.mark_value).close_object();
    }
    if (m.oif) ifaces("oif", *m.oif, m.oif_negate);
    if (m.pkt_type) out.key("pkt-type").string(*m.pkt_type);
    if (m.protocols) any_of("protocol", *m.protocols, protocol_name, &m.protocol_negate);
    if (m.rate_limit)
      out.key("rate-limit")
          .open_object()
          .key("burst")
          .number(m.rate_limit->burst)
          .key("rate")
          .number(m.rate_limit->rate)
          .key("unit")
          .string(m.rate_limit->unit)
          .close_object();
    if (m.rpf) {
      out.key("rpf").open_object().key("mode").string(to_string(*m.rpf));
      out.key("negate").boolean(m.rpf_negate).close_object();
    }
    addrs("src-addr", m.src_addr);
    if (m.src_mac) {
      out.key("src-mac").open_object().key("any");
      macs(*m.src_mac);
      out.key("negate").boolean(m.src_mac_negate).close_object();
    }
    port_matches("src-port", m.src_port);
    out.close_object();
  }

  void action(const Action& a) {
    out.open_object();
    switch (a.kind) {
      case ActionKind::reject:
        out.key("kind").string(to_string(a.kind)).key("with").string(a.reject_with);
        break;
      case ActionKind::log:
        out.key("kind").string(to_string(a.kind)).key("level").number(a.log_level);
        out.key("prefix").string(a.log_prefix);
        break;
      case ActionKind::jump:
      case ActionKind::ct_helper:
        out.key("kind").string(to_string(a.kind)).key("target").string(a.target);
        break;
      case ActionKind::tcp_mss_clamp:
        out.key("kind").string(to_string(a.kind)).key("mss").number(a.mss);
        break;
      case ActionKind::set_mark:
        out.key("kind").string(to_string(a.kind)).key("mask").number(a.mark_mask);
        out.key("value").number(a.mark_value);
        break;
      case ActionKind::dnat:
      case ActionKind::redirect:
      case ActionKind::snat:
      case ActionKind::masquerade:
        if (a.nat_addr) out.key("addr").string(to_string(*a.nat_addr));
        out.key("kind").string(to_string(a.kind));
        if (a.nat_port) {
          out.key("port");
          ports({*a.nat_port});
        }
        break;
      default:
        out.key("kind").string(to_string(a.kind));
        break;
    }
    out.close_object();
  }

  void rule(const Rule& r) {
    out.open_object().key("action");
    action(r.action);
    out.key("match");
    match(r.match);
    origin(r.origin);
    out.close_object();
  }

  void endpoint(const Endpoint& ep) {
    out.open_object()
        .key("conntrack")
        .string(to_string(ep.conntrack))
        .key("default")
        .string(to_string(ep.default_verdict))
        .key("failsafe")
        .boolean(ep.failsafe)
        .key("failsafe-chain")
        .string(ep.failsafe_chain)
        .key("groups")
        .open_array();
    for (const auto& g : ep.groups) {
      out.open_object().key("chains").strings(g.chains).key("name").string(g.name);
      out.key("on-end").string(to_string(g.on_end));
      origin(g.origin);
      if (g.on_end == Verdict::reject) out.key("with").string(g.reject_with);
      out.close_object();
    }
    out.close_array().key("match").open_object();
    if (ep.match.dst_set) out.key("dst-set").string(*ep.match.dst_set);
    if (ep.match.iif) out.key("iif").string(to_string(*ep.match.iif));
    if (ep.match.oif) out.key("oif").string(to_string(*ep.match.oif));
    if (ep.match.src_mac) {
      out.key("src-mac");
      macs(*ep.match.src_mac);
    }
    if (ep.match.src_set) out.key("src-set").string(*ep.match.src_set);
    out.close_object().key("name").string(ep.name);
    origin(ep.origin);
    if (ep.default_verdict == Verdict::reject) out.key("with").string(ep.reject_with);
    out.close_object();
  }

  void failsafe_entries(std::string_view name, const std::vector<FailsafeEntry>& v) {
    out.key(name).open_array();
    for (const auto& e : v) {
      out.open_object();
      if (e.net) out.key("net").string(to_string(*e.net));
      origin(e.origin);
      out.key("port").number(e.port).key("protocol").string(protocol_name(e.protocol)).close_object();
    }
    out.close_array();
  }

  std::string ruleset() {
    out.open_object().key("chains").open_object();
    for (const auto& [name, chain] : rs.chains) {
      out.key(name).open_array();
      for (const auto& r : chain.rules) rule(r);
      out.close_array();
    }
    out.close_object().key("failsafe").open_object();
    failsafe_entries("inbound", rs.failsafe.inbound);
    failsafe_entries("outbound", rs.failsafe.outbound);
    out.close_object();
    if (with_origins) out.key("files").strings(rs.files).key("frontend").string(rs.frontend);
    out.key("ir-version").number(1).key("sets").open_object();
    for (const auto& [name, set] : rs.sets) {
      out.key(name).open_array();
      for (const auto& c : set.cidrs) out.string(to_string(c));
      out.close_array();
    }
    out.close_object().key("stages").open_object();
    std::array<std::size_t, kStageCount> order{};
    for (std::size_t s = 0; s < kStageCount; ++s) order[s] = s;
    std::sort(order.begin(), order.end(), [](std::size_t a, std::size_t b) {
      return to_string(static_cast<Stage>(a)) < to_string(static_cast<Stage>(b));
    });
    for (std::size_t s : order) {
      if (rs.stages[s].empty()) continue;
      out.key(to_string(static_cast<Stage>(s))).open_array();
      for (const auto& sec : rs.stages[s].sections) {
        out.open_object().key("endpoints").open_array();
        for (const auto& ep : sec.endpoints) endpoint(ep);
        out.close_array().key("honour-allow").boolean(sec.honour_allow).key("name").string(sec.name);
        out.close_object();
      }
      out.close_array();
    }
    out.close_object().close_object();
    return out.take();
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
    // Short lists of scalars on one line; long ones (a set's addresses, the files read) one per line.
    bool scalars = std::all_of(j.begin(), j.end(), [](const json& e) { return e.is_primitive(); });
    bool flow = scalars && !j.empty() && j.dump().size() <= 80;
    out << (flow ? YAML::Flow : YAML::Block) << YAML::BeginSeq;
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

std::string to_text(const Ruleset& rs, bool with_origins) {
  return Writer{rs, with_origins, {}}.ruleset();
}

json to_json(const Ruleset& rs, bool with_origins) {
  return json::parse(with_valid_utf8(to_text(rs, with_origins)));
}

std::string to_yaml(const Ruleset& rs, bool with_origins) {
  YAML::Emitter out;
  emit(out, to_json(rs, with_origins));
  return std::string(out.c_str()) + "\n";
}

std::string hash(const Ruleset& rs) {
  detail::Sha256 sha;
  auto update = [](void* c, std::string_view piece) { static_cast<detail::Sha256*>(c)->update(piece); };
  sha.update(Writer{rs, false, JsonText(update, &sha)}.ruleset());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (std::uint8_t byte : sha.finish()) {
    hex += kHex[byte >> 4];
    hex += kHex[byte & 0xf];
  }
  return hex;
}

}  // namespace fwe::canonical
