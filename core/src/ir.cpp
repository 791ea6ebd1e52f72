// ir.cpp - vocabulary names and the value types of the IR (addresses, CIDRs, ports, interfaces).
#include "fwengine/ir.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <ostream>
#include <span>

namespace fwe::ir {

std::ostream& operator<<(std::ostream& out, const SharedString& s) {
  return out << s.str();
}

namespace {
template <typename Enum, std::size_t N>
std::optional<Enum> lookup(const std::array<std::string_view, N>& names, std::string_view word) {
  for (std::size_t i = 0; i < N; ++i)
    if (names[i] == word) return static_cast<Enum>(i);
  return std::nullopt;
}

constexpr std::array<std::string_view, kStageCount> kStageNames = {
#define FWE_STAGE(id, text) text,
#include "fwengine/vocab.def"
#undef FWE_STAGE
};
constexpr std::array kVerdictNames = {
#define FWE_VERDICT(id, text) std::string_view(text),
#include "fwengine/vocab.def"
#undef FWE_VERDICT
};
constexpr std::array<std::string_view, kMatchKindCount> kMatchNames = {
#define FWE_MATCH(id, text) text,
#include "fwengine/vocab.def"
#undef FWE_MATCH
};
constexpr std::array<std::string_view, kActionKindCount> kActionNames = {
#define FWE_ACTION(id, text) text,
#include "fwengine/vocab.def"
#undef FWE_ACTION
};
constexpr std::array<std::string_view, kCtStateCount> kCtStateNames = {
#define FWE_CTSTATE(id, text) text,
#include "fwengine/vocab.def"
#undef FWE_CTSTATE
};
constexpr std::array<std::string_view, kCtStatusCount> kCtStatusNames = {
#define FWE_CTSTATUS(id, text) text,
#include "fwengine/vocab.def"
#undef FWE_CTSTATUS
};
constexpr std::array<std::string_view, kRpfModeCount> kRpfModeNames = {
#define FWE_RPF(id, text) text,
#include "fwengine/vocab.def"
#undef FWE_RPF
};
constexpr std::array<std::string_view, 3> kConntrackNames = {"none", "accept-established",
                                                             "accept-established-drop-invalid"};
}  // namespace

std::string_view to_string(Stage s) {
  return kStageNames[index(s)];
}
std::string_view to_string(Verdict v) {
  return kVerdictNames[static_cast<std::size_t>(v)];
}
std::string_view to_string(MatchKind m) {
  return kMatchNames[static_cast<std::size_t>(m)];
}
std::string_view to_string(ActionKind a) {
  return kActionNames[static_cast<std::size_t>(a)];
}
std::string_view to_string(CtState c) {
  return kCtStateNames[static_cast<std::size_t>(c)];
}
std::string_view to_string(CtStatus c) {
  return kCtStatusNames[static_cast<std::size_t>(c)];
}
std::string_view to_string(RpfMode m) {
  return kRpfModeNames[static_cast<std::size_t>(m)];
}
std::string_view to_string(Conntrack c) {
  return kConntrackNames[static_cast<std::size_t>(c)];
}
std::optional<Stage> parse_stage(std::string_view w) {
  return lookup<Stage>(kStageNames, w);
}
std::optional<Verdict> parse_verdict(std::string_view w) {
  return lookup<Verdict>(kVerdictNames, w);
}
std::optional<ActionKind> parse_action(std::string_view w) {
  return lookup<ActionKind>(kActionNames, w);
}
std::optional<CtState> parse_ct_state(std::string_view w) {
  return lookup<CtState>(kCtStateNames, w);
}
std::optional<CtStatus> parse_ct_status(std::string_view w) {
  return lookup<CtStatus>(kCtStatusNames, w);
}
std::optional<RpfMode> parse_rpf_mode(std::string_view w) {
  return lookup<RpfMode>(kRpfModeNames, w);
}
std::optional<Conntrack> parse_conntrack(std::string_view w) {
  return lookup<Conntrack>(kConntrackNames, w);
}
std::vector<std::string_view> stage_names() {
  return {kStageNames.begin(), kStageNames.end()};
}
std::vector<std::string_view> action_names() {
  return {kActionNames.begin(), kActionNames.end()};
}
std::vector<std::string_view> ct_state_names() {
  return {kCtStateNames.begin(), kCtStateNames.end()};
}
std::vector<std::string_view> ct_status_names() {
  return {kCtStatusNames.begin(), kCtStatusNames.end()};
}
std::vector<std::string_view> rpf_mode_names() {
  return {kRpfModeNames.begin(), kRpfModeNames.end()};
}

std::string_view to_string(Family f) {
  switch (f) {
    case Family::ipv4:
      return "ipv4";
    case Family::ipv6:
      return "ipv6";
    case Family::any:
      break;
  }
  return "any";
}

// ---- addresses ----------------------------------------------------------------------------------
std::optional<IpAddr> parse_ip(std::string_view text) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
  std::string s(text);
  IpAddr a;
  if (s.find(':') == std::string::npos) {
    a.family = Family::ipv4;
    if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) != 1) return std::nullopt;
  } else {
    a.family = Family::ipv6;
    if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) != 1) return std::nullopt;
  }
  return a;
}

std::string to_string(const IpAddr& a) {
  if (a.family == Family::ipv4) {  // by hand: every rule's address is written on the apply path, some twice
    std::string text;
    text.reserve(15);
    for (std::size_t i = 0; i < 4; ++i) {
      if (i > 0) text += '.';
      char digits[3];
      text.append(digits, std::to_chars(digits, digits + sizeof digits, a.bytes[i]).ptr);
    }
    return text;
  }
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, a.bytes.data(), buf, sizeof buf);
  return buf;
}

namespace {
void clear_host_bits(IpAddr& a, std::size_t prefix) {
  for (std::size_t bit = prefix; bit < a.width(); ++bit)
    a.bytes[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
}
bool has_host_bits(const IpAddr& a, std::size_t prefix) {
  IpAddr masked = a;
  clear_host_bits(masked, prefix);
  return masked != a;
}
}  // namespace

std::optional<Cidr> parse_cidr(std::string_view text, bool strict) {
  auto slash = text.find('/');
  auto addr = parse_ip(text.substr(0, slash));
  if (!addr) return std::nullopt;
  Cidr c{*addr, static_cast<std::uint8_t>(addr->width())};
  if (slash != std::string_view::npos) {
    auto digits = text.substr(slash + 1);
    unsigned prefix = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (ec != std::errc{} || end != digits.data() + digits.size() || digits.empty() || prefix > addr->width())
      return std::nullopt;
    c.prefix = static_cast<std::uint8_t>(prefix);
  }
  if (has_host_bits(c.addr, c.prefix)) {
    if (strict) return std::nullopt;
    clear_host_bits(c.addr, c.prefix);
  }
  return c;
}

std::string to_string(const Cidr& c) {
  std::string text = to_string(c.addr);
  char prefix[4];
  text += '/';
  text.append(prefix, std::to_chars(prefix, prefix + sizeof prefix, c.prefix).ptr);
  return text;
}

bool contains(const Cidr& c, const IpAddr& a) {
  if (c.addr.family != a.family) return false;
  IpAddr masked = a;
  clear_host_bits(masked, c.prefix);
  return masked == c.addr;
}

bool AddrSet::has(Family f) const {
  return std::any_of(cidrs.begin(), cidrs.end(), [f](const Cidr& c) { return c.addr.family == f; });
}

bool AddrSet::contains(const IpAddr& a) const {
  return std::any_of(cidrs.begin(), cidrs.end(), [&a](const Cidr& c) { return ir::contains(c, a); });
}

bool contains(const PortSet& set, std::uint16_t port) {
  return std::any_of(set.begin(), set.end(),
                     [port](const PortRange& r) { return r.lo <= port && port <= r.hi; });
}

// ---- interfaces and MACs ------------------------------------------------------------------------
// The structured binding names every field of Match: a field added there stops the build here until it
// is named (and so seen).
Match without(const Match& m, MatchParts parts) {
  const auto& [iif, oif, protocols, src_addr, dst_addr, src_port, dst_port, ct_states, src_mac, pkt_type,
               rate_limit, ct_status, ct_orig_dport, mark_value, mark_mask, icmp, rpf, family, iif_negate,
               oif_negate, protocol_negate, ct_negate, src_mac_negate, mark_negate, rpf_negate] = m;
  Match rest;
  if (!parts.iif) {
    rest.iif = iif;
    rest.iif_negate = iif_negate;
  }
  if (!parts.oif) {
    rest.oif = oif;
    rest.oif_negate = oif_negate;
  }
  rest.family = family;
  if (!parts.protocols) {
    rest.protocols = protocols;
    rest.protocol_negate = protocol_negate;
  }
  if (!parts.addresses) {
    rest.src_addr = src_addr;
    rest.dst_addr = dst_addr;
  }
  if (!parts.ports) {
    rest.src_port = src_port;
    rest.dst_port = dst_port;
  }
  rest.icmp = icmp;
  rest.ct_states = ct_states;
  rest.ct_negate = ct_negate;
  rest.src_mac = src_mac;
  rest.src_mac_negate = src_mac_negate;
  rest.pkt_type = pkt_type;
  rest.mark_value = mark_value;
  rest.mark_mask = mark_mask;
  rest.mark_negate = mark_negate;
  rest.rate_limit = rate_limit;
  rest.ct_status = ct_status;
  rest.ct_orig_dport = ct_orig_dport;
  rest.rpf = rpf;
  rest.rpf_negate = rpf_negate;
  return rest;
}

bool IfacePattern::matches(std::string_view ifname) const {
  return prefix ? ifname.substr(0, name.size()) == name : ifname == name;
}

std::string to_string(const IfacePattern& p) {
  return p.prefix ? p.name + '+' : p.name;
}

IfacePattern parse_iface(std::string_view text) {
  if (!text.empty() && (text.back() == '+' || text.back() == '*'))
    return {std::string(text.substr(0, text.size() - 1)), true};
  return {std::string(text), false};
}

bool valid_iface_name(std::string_view name) {
  const bool bad_character = std::any_of(name.begin(), name.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= ' ' || u == 0x7f || std::string_view("/:+*\"'\\").find(c) != std::string_view::npos;
  });
  return !name.empty() && name.size() <= 15 && name != "." && name != ".." && !bad_character;
}

std::size_t utf8_length(std::string_view text) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char first = byte(0);
  if (first < 0x80) return 1;
  const std::size_t length = first >= 0xc2 && first <= 0xdf   ? 2
                             : first >= 0xe0 && first <= 0xef ? 3
                             : first >= 0xf0 && first <= 0xf4 ? 4
                                                              : 0;
  if (length == 0 || text.size() < length) return 0;
  // The second byte's range where the first allows fewer than 0x80-0xbf.
  const unsigned char low = first == 0xe0 ? 0xa0 : first == 0xf0 ? 0x90 : 0x80;
  const unsigned char high = first == 0xed ? 0x9f : first == 0xf4 ? 0x8f : 0xbf;
  if (byte(1) < low || byte(1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i)
    if ((byte(i) & 0xc0) != 0x80) return 0;
  return length;
}

std::string kernel_log_prefix(std::string_view prefix, std::size_t max_bytes) {
  std::string out;
  while (!prefix.empty()) {
    const std::size_t length = std::max<std::size_t>(utf8_length(prefix), 1);
    if (out.size() + length > max_bytes) break;
    const auto byte = static_cast<unsigned char>(prefix.front());
    if (length > 1)
      out += prefix.substr(0, length);
    else
      out += byte == '"' ? '\'' : byte == '\\' ? '/' : byte < 0x20 || byte == 0x7f ? '_' : prefix.front();
    prefix.remove_prefix(length);
  }
  return out;
}

std::string with_valid_utf8(std::string text) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
    return text;
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = utf8_length(std::string_view(text).substr(i));
    out.append(length ? std::string_view(text).substr(i, length) : std::string_view("\xef\xbf\xbd"));
    i += length ? length : 1;
  }
  return out;
}

std::size_t line_breaking_character(std::string_view text) {
  if (text.empty()) return 0;
  const auto first = static_cast<unsigned char>(text[0]);
  if (first < ' ' || first == 0x7f) return 1;
  if (text.size() >= 2 && first == 0xc2 && (static_cast<unsigned char>(text[1]) & 0xe0) == 0x80)
    return 2;  // U+0080 to U+009F, NEL among them
  if (text.starts_with("\xe2\x80\xa8") || text.starts_with("\xe2\x80\xa9")) return 3;
  return 0;
}

bool has_line_breaking_character(std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i)
    if (line_breaking_character(text.substr(i))) return true;
  return false;
}

std::string on_one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t breaking = line_breaking_character(text.substr(i));
    out += breaking ? std::string_view("?") : text.substr(i, 1);
    i += breaking ? breaking : 1;
  }
  return out;
}

std::optional<MacAddr> parse_mac(std::string_view text) {
  MacAddr mac{};
  if (text.size() != 17) return std::nullopt;
  for (std::size_t i = 0; i < 6; ++i) {
    if (i > 0 && text[i * 3 - 1] != ':') return std::nullopt;
    auto part = text.substr(i * 3, 2);
    auto [end, ec] = std::from_chars(part.data(), part.data() + 2, mac[i], 16);
    if (ec != std::errc{} || end != part.data() + 2) return std::nullopt;
  }
  return mac;
}

std::string to_string(const MacAddr& mac) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
                mac[5]);
  return buf;
}

// ---- protocols ----------------------------------------------------------------------------------
namespace {
struct ProtocolName {
  std::string_view name;
  std::uint8_t number;
};
constexpr ProtocolName kProtocols[] = {{"icmp", 1},   {"igmp", 2},      {"tcp", 6},   {"udp", 17},
                                       {"gre", 47},   {"esp", 50},      {"ah", 51},   {"icmpv6", 58},
                                       {"sctp", 132}, {"udplite", 136}, {"dccp", 33}, {"ipip", 4}};
}  // namespace

namespace {

struct IcmpName {
  std::string_view name;
  std::uint8_t type;
};
// RFC 792/950 and RFC 4443/4861/3810 types, spelt as nft(8) spells them.
constexpr std::array<IcmpName, 15> kIcmpTypes{{{"echo-reply", 0},
                                               {"destination-unreachable", 3},
                                               {"source-quench", 4},
                                               {"redirect", 5},
                                               {"echo-request", 8},
                                               {"router-advertisement", 9},
                                               {"router-solicitation", 10},
                                               {"time-exceeded", 11},
                                               {"parameter-problem", 12},
                                               {"timestamp-request", 13},
                                               {"timestamp-reply", 14},
                                               {"info-request", 15},
                                               {"info-reply", 16},
                                               {"address-mask-request", 17},
                                               {"address-mask-reply", 18}}};
constexpr std::array<IcmpName, 18> kIcmpv6Types{{{"destination-unreachable", 1},
                                                 {"packet-too-big", 2},
                                                 {"time-exceeded", 3},
                                                 {"parameter-problem", 4},
                                                 {"echo-request", 128},
                                                 {"echo-reply", 129},
                                                 {"mld-listener-query", 130},
                                                 {"mld-listener-report", 131},
                                                 {"mld-listener-done", 132},
                                                 {"nd-router-solicit", 133},
                                                 {"nd-router-advert", 134},
                                                 {"nd-neighbor-solicit", 135},
                                                 {"nd-neighbor-advert", 136},
                                                 {"nd-redirect", 137},
                                                 {"router-renumbering", 138},
                                                 {"ind-neighbor-solicit", 141},
                                                 {"ind-neighbor-advert", 142},
                                                 {"mld2-listener-report", 143}}};

template <std::size_t N>
std::optional<std::uint8_t> find_type(const std::array<IcmpName, N>& table, std::string_view name) {
  for (const auto& entry : table)
    if (entry.name == name) return entry.type;
  return std::nullopt;
}
template <std::size_t N>
std::optional<std::string_view> find_name(const std::array<IcmpName, N>& table, std::uint8_t type) {
  for (const auto& entry : table)
    if (entry.type == type) return entry.name;
  return std::nullopt;
}
template <std::size_t N>
std::vector<std::string_view> all_names(const std::array<IcmpName, N>& table) {
  std::vector<std::string_view> names;
  for (const auto& entry : table) names.push_back(entry.name);
  return names;
}

// Messages as iptables (--icmp-type) and firewalld (icmptypes) name them: a type and often a code.
// The numbers are RFC 792/1812/4443's, as iptables has them; firewalld's nftables backend numbers a few
// differently (tos-*, network-prohibited; 1.3 and 2.x not alike), so a trace of such a name can miss
// the icmp-block it names there.
struct IcmpMessageName {
  std::string_view name;
  IcmpMessage message;
};
constexpr IcmpMessageName kIcmpMessages[] = {
    {"network-unreachable", {3, 0}},
    {"host-unreachable", {3, 1}},
    {"protocol-unreachable", {3, 2}},
    {"port-unreachable", {3, 3}},
    {"fragmentation-needed", {3, 4}},
    {"source-route-failed", {3, 5}},
    {"network-unknown", {3, 6}},
    {"host-unknown", {3, 7}},
    {"network-prohibited", {3, 9}},
    {"host-prohibited", {3, 10}},
    {"tos-network-unreachable", {3, 11}},
    {"tos-host-unreachable", {3, 12}},
    {"communication-prohibited", {3, 13}},
    {"host-precedence-violation", {3, 14}},
    {"precedence-cutoff", {3, 15}},
    {"network-redirect", {5, 0}},
    {"host-redirect", {5, 1}},
    {"tos-network-redirect", {5, 2}},
    {"tos-host-redirect", {5, 3}},
    {"ttl-zero-during-transit", {11, 0}},
    {"ttl-zero-during-reassembly", {11, 1}},
    {"ip-header-bad", {12, 0}},
    {"required-option-missing", {12, 1}},
    {"ping", {8, std::nullopt}},
    {"pong", {0, std::nullopt}},
    {"ttl-exceeded", {11, std::nullopt}},
};
constexpr IcmpMessageName kIcmpv6Messages[] = {
    {"no-route", {1, 0}},
    {"communication-prohibited", {1, 1}},
    {"beyond-scope", {1, 2}},
    {"address-unreachable", {1, 3}},
    {"port-unreachable", {1, 4}},
    {"failed-policy", {1, 5}},
    {"reject-route", {1, 6}},
    {"ttl-zero-during-transit", {3, 0}},
    {"ttl-zero-during-reassembly", {3, 1}},
    {"bad-header", {4, 0}},
    {"unknown-header-type", {4, 1}},
    {"unknown-option", {4, 2}},
    {"router-solicitation", {133, std::nullopt}},
    {"router-advertisement", {134, std::nullopt}},
    {"neighbour-solicitation", {135, std::nullopt}},
    {"neighbor-solicitation", {135, std::nullopt}},
    {"neighbour-advertisement", {136, std::nullopt}},
    {"neighbor-advertisement", {136, std::nullopt}},
    {"redirect", {137, std::nullopt}},
    {"ping", {128, std::nullopt}},
    {"pong", {129, std::nullopt}},
    {"ttl-exceeded", {3, std::nullopt}},
};

}  // namespace

std::optional<IcmpMessage> parse_icmp_message(std::string_view name, bool v6) {
  if (auto type = parse_icmp_type(name, v6)) return IcmpMessage{*type, std::nullopt};
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return std::tolower(ch); });
  for (const auto& entry : v6 ? std::span<const IcmpMessageName>(kIcmpv6Messages)
                              : std::span<const IcmpMessageName>(kIcmpMessages))
    if (entry.name == lower) return entry.message;
  return std::nullopt;
}

std::vector<std::string_view> icmp_message_names(bool v6) {
  std::vector<std::string_view> names = icmp_type_names(v6);
  for (const auto& entry : v6 ? std::span<const IcmpMessageName>(kIcmpv6Messages)
                              : std::span<const IcmpMessageName>(kIcmpMessages))
    names.push_back(entry.name);
  return names;
}

std::optional<std::uint8_t> parse_icmp_type(std::string_view name, bool v6) {
  return v6 ? find_type(kIcmpv6Types, name) : find_type(kIcmpTypes, name);
}

std::optional<std::string_view> icmp_type_name(std::uint8_t type, bool v6) {
  return v6 ? find_name(kIcmpv6Types, type) : find_name(kIcmpTypes, type);
}

std::vector<std::string_view> icmp_type_names(bool v6) {
  return v6 ? all_names(kIcmpv6Types) : all_names(kIcmpTypes);
}

std::optional<std::uint8_t> parse_protocol(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return std::tolower(ch); });
  if (lower == "ipv6-icmp") lower = "icmpv6";
  for (const auto& p : kProtocols)
    if (p.name == lower) return p.number;
  unsigned number = 0;
  auto [end, ec] = std::from_chars(lower.data(), lower.data() + lower.size(), number);
  if (ec == std::errc{} && end == lower.data() + lower.size() && !lower.empty() && number <= 255)
    return static_cast<std::uint8_t>(number);
  return std::nullopt;
}

std::string protocol_name(std::uint8_t number) {
  for (const auto& p : kProtocols)
    if (p.number == number) return std::string(p.name);
  return std::to_string(number);
}

bool protocol_has_ports(std::uint8_t number) {
  return number == 6 || number == 17 || number == 132 || number == 136 || number == 33;
}

namespace {
struct RejectReply {
  std::string_view with, v4, v6;
};
// The types nft, iptables and ebpf all take (nft's and ebpf's own tables give the same codes).
constexpr RejectReply kRejectReplies[] = {
    {"icmp-port-unreachable", "icmp-port-unreachable", "icmp6-port-unreachable"},
    {"port-unreachable", "icmp-port-unreachable", "icmp6-port-unreachable"},
    {"icmp6-port-unreachable", "icmp-port-unreachable", "icmp6-port-unreachable"},
    {"icmp-host-prohibited", "icmp-host-prohibited", "icmp6-adm-prohibited"},
    {"icmp-net-prohibited", "icmp-net-prohibited", "icmp6-adm-prohibited"},
    {"icmp-admin-prohibited", "icmp-admin-prohibited", "icmp6-adm-prohibited"},
    {"admin-prohibited", "icmp-admin-prohibited", "icmp6-adm-prohibited"},
    {"icmp6-adm-prohibited", "icmp-admin-prohibited", "icmp6-adm-prohibited"},
    {"icmp-net-unreachable", "icmp-net-unreachable", "icmp6-no-route"},
    {"icmp6-no-route", "icmp-net-unreachable", "icmp6-no-route"},
    {"icmp-host-unreachable", "icmp-host-unreachable", "icmp6-addr-unreachable"},
    {"icmp6-addr-unreachable", "icmp-host-unreachable", "icmp6-addr-unreachable"},
    {"icmp-proto-unreachable", "icmp-proto-unreachable", "icmp6-adm-prohibited"},
};
}  // namespace

std::optional<std::string_view> reject_reply(std::string_view with, Family family, std::uint8_t protocol) {
  if (with == "tcp-reset") {
    if (protocol == 6) return "tcp-reset";
    with = {};
  }
  if (with.empty()) with = "icmp-port-unreachable";
  for (const auto& reply : kRejectReplies)
    if (reply.with == with) return family == Family::ipv6 ? reply.v6 : reply.v4;
  return std::nullopt;
}

// ---- ruleset ------------------------------------------------------------------------------------
const AddrSet* Ruleset::find_set(std::string_view name) const {
  auto it = sets.find(name);
  return it == sets.end() ? nullptr : &it->second;
}

const Chain* Ruleset::find_chain(std::string_view name) const {
  auto it = chains.find(name);
  return it == chains.end() ? nullptr : &it->second;
}

std::span<const Cidr> addresses(const Ruleset& rs, const AddrMatch& match) {
  if (match.in_place()) return {&match.cidr, 1};
  const AddrSet* set = rs.find_set(match.set_name);
  return set ? std::span<const Cidr>(set->cidrs.data(), set->cidrs.size()) : std::span<const Cidr>();
}

std::string to_string(const AddrMatch& match) {
  return match.in_place() ? to_string(match.cidr) : match.set_name.str();
}

}  // namespace fwe::ir
