// translate.cpp - IR -> nftables object model. Every helper appends the kernel expressions and the nft
// words of one statement together, so the rendered text and what apply sends cannot drift apart.
#include "translate.hpp"

#include <netinet/in.h>  // before linux/netfilter.h (redefinition of in_addr otherwise)

#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_conntrack_tuple_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "fwengine/set_index.hpp"
#include "merge.hpp"
#include "positions.hpp"

namespace fwe::nft {
namespace {

using ir::Family;

constexpr std::uint8_t kTcp = 6, kIcmp = 1, kIcmpV6 = 58;
const std::vector<std::uint8_t> kPortProtocols = {6, 17, 33, 132, 136};  // TCP, UDP, DCCP, SCTP, UDPLite
constexpr std::uint32_t kCtStateBits[] = {8, 2, 4, 1, 64};               // vocab.def order: new .. untracked
constexpr std::uint32_t kAllCtStates = 8 | 2 | 4 | 1 | 64;
constexpr std::uint32_t kCtStatusBits[] = {IPS_DST_NAT, IPS_SRC_NAT};  // vocab.def order: dnat, snat
constexpr std::size_t kIfNameSize = 16;
// Merging: shorter runs stay rules (a set costs more than a few rules); a run is at most this long: an
// interval set is then at most this big, so that a change in a long chain re-creates one set of this
// size. A run holds its members while it grows (some 700 bytes each), so this also bounds the memory;
// the next run of the same form joins a hash set keyed by address (OpenRun), so that a long list of
// addresses stays one lookup (the 50,000-rule benchmark: peak RSS 83 -> 77 MiB with runs of 1,024
// instead of 8,192, the same ruleset). Other hash runs do not join: one lookup rule per 1,024 rules.
// A rule with more elements (the product of its values) stays a rule with its own sets.
constexpr std::size_t kMinRun = 4;
constexpr std::size_t kMaxRun = 1024;
// At most this many elements per rule are reserved ahead for the rules after a joined run (emit_run).
constexpr std::size_t kReservedPerRule = 4;
constexpr std::size_t kMaxElementsPerRule = 64;
// From this many endpoints in a row told apart by one exact interface name each, a section dispatches
// them with one verdict-map lookup instead of one comparison per endpoint (cheaper from here on:
// backends/nft/README.md, "Dispatch").
constexpr std::size_t kMinMapDispatch = 4;
// Policy marks neither see nor change the bits the ruleset keeps for itself.
constexpr std::uint32_t kOwnMarks = kAllowMark | kPassMark;

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}
Bytes host32(std::uint32_t v) {
  Bytes b(4);
  std::copy_n(reinterpret_cast<const std::uint8_t*>(&v), 4, b.begin());
  return b;
}
Bytes be16(std::uint16_t v) {
  return {static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
}
Bytes addr_bytes(const ir::IpAddr& a) {
  return Bytes(a.bytes.begin(), a.bytes.begin() + a.width() / 8);
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// ---- expression builders ------------------------------------------------------------------------
Expr meta_load(std::uint32_t key) {
  return {.kind = Expr::Kind::meta_load, .key = key};
}
Expr cmp(std::uint32_t op, const Bytes& data) {
  return {.kind = Expr::Kind::cmp, .key = op, .data = data};
}
Expr payload(std::uint32_t base, std::uint32_t offset, std::uint32_t len) {
  return {.kind = Expr::Kind::payload, .key = base, .offset = offset, .len = len};
}
Expr bitwise(std::uint32_t mask, std::uint32_t xor_value) {
  return {.kind = Expr::Kind::bitwise, .len = 4, .data = host32(mask), .data_to = host32(xor_value)};
}
Expr verdict(std::int32_t code, std::string chain = {}) {
  return {.kind = Expr::Kind::verdict, .key = static_cast<std::uint32_t>(code), .text = std::move(chain)};
}
Expr immediate(std::uint32_t reg, const Bytes& data) {
  return {.kind = Expr::Kind::immediate, .dreg = reg, .data = data};
}

void add(Rule& r, std::string_view words, std::initializer_list<Expr> exprs) {
  r.words.push_back(words);
  r.exprs.insert(r.exprs.end(), exprs);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

// `iifname vmap { "eth0" : goto e-..., ... }`: a verdict map as nft writes it.
std::string vmap_words(const std::string& subject, const Set& map) {
  std::vector<std::string> entries;
  for (std::size_t i = 0; i < map.elements.size(); ++i)
    entries.push_back(element_key_text(map, map.elements[i]) + " : goto " + map.goto_chains[i]);
  return subject + " vmap { " + join(entries) + " }";
}

// Appends an anonymous set and the lookup of register 1 in it.
void lookup_anon(Rule& r, Set set, bool invert, const std::string& subject) {
  set.name = "__set%d";
  set.anonymous = true;
  r.words.push_back(subject + (invert ? " != { " : " { ") + join(element_texts(set)) + " }");
  r.exprs.push_back({.kind = Expr::Kind::lookup,
                     .invert = invert,
                     .set_id = static_cast<std::uint32_t>(r.anon_sets.size()),
                     .text = set.name});
  r.anon_sets.push_back(std::move(set));
}

Set port_set(const ir::PortSet& ports) {
  Set set{.key_type = KeyType::inet_service, .key_len = 2};
  set.interval = std::any_of(ports.begin(), ports.end(), [](const auto& p) { return p.lo != p.hi; });
  for (const auto& p : ports) {
    if (set.interval)
      add_interval(set, be16(p.lo), be16(p.hi));
    else
      set.elements.push_back({be16(p.lo)});
  }
  return set;
}

void match_nfproto(Rule& r, Family f) {
  bool v4 = f == Family::ipv4;
  add(r, v4 ? "meta nfproto ipv4" : "meta nfproto ipv6",
      {meta_load(NFT_META_NFPROTO),
       cmp(NFT_CMP_EQ, {static_cast<std::uint8_t>(v4 ? NFPROTO_IPV4 : NFPROTO_IPV6)})});
}

// The protocols a port match (or port mapping) of m can hold for: only those that have ports.
std::vector<std::uint8_t> port_protocols(const ir::Match& m) {
  std::vector<std::uint8_t> out;
  for (auto p : kPortProtocols) {
    bool listed = m.protocols && std::find(m.protocols->begin(), m.protocols->end(), p) != m.protocols->end();
    if (!m.protocols || listed != m.protocol_negate) out.push_back(p);
  }
  return out;
}

void match_l4proto(Rule& r, const std::vector<std::uint8_t>& protocols, bool negate) {
  if (protocols.size() == 1) {
    add(r, std::string("meta l4proto ") + (negate ? "!= " : "") + std::to_string(protocols[0]),
        {meta_load(NFT_META_L4PROTO), cmp(negate ? NFT_CMP_NEQ : NFT_CMP_EQ, {protocols[0]})});
    return;
  }
  Set set{.key_type = KeyType::inet_proto, .key_len = 1};
  for (auto p : protocols) set.elements.push_back({{p}});
  r.exprs.push_back(meta_load(NFT_META_L4PROTO));
  lookup_anon(r, std::move(set), negate, "meta l4proto");
}

Bytes ifname_bytes(const ir::IfacePattern& p) {
  Bytes b(p.name.begin(), p.name.end());
  if (!p.prefix) b.resize(kIfNameSize, 0);
  return b;
}
std::string ifname_text(const ir::IfacePattern& p) {
  return '"' + p.name + (p.prefix ? "*\"" : "\"");
}

// Returns false when nftables cannot express it in one rule (several patterns, one of them a prefix).
bool match_iface(Rule& r, bool input, const std::vector<ir::IfacePattern>& patterns, bool negate) {
  std::uint32_t key = input ? NFT_META_IIFNAME : NFT_META_OIFNAME;
  std::string word = input ? "iifname" : "oifname";
  bool any_prefix = std::any_of(patterns.begin(), patterns.end(), [](const auto& p) { return p.prefix; });
  if (patterns.size() > 1 && !any_prefix) {
    Set set{.key_type = KeyType::ifname, .key_len = kIfNameSize};
    for (const auto& p : patterns) set.elements.push_back({ifname_bytes(p)});
    r.exprs.push_back(meta_load(key));
    lookup_anon(r, std::move(set), negate, word);
    return true;
  }
  if (patterns.size() > 1 && !negate) return false;
  for (const auto& p : patterns)  // negated: not any of them = none of them
    add(r, word + (negate ? " != " : " ") + ifname_text(p),
        {meta_load(key), cmp(negate ? NFT_CMP_NEQ : NFT_CMP_EQ, ifname_bytes(p))});
  return true;
}

// The 2-byte port `load` puts in register 1, compared with the ports.
void match_port_values(Rule& r, const std::string& subject, Expr load, const ir::PortSet& ports,
                       bool negate) {
  r.exprs.push_back(std::move(load));
  if (ports.size() == 1 && ports[0].lo == ports[0].hi) {
    r.words.push_back(subject + (negate ? " != " : " ") + std::to_string(ports[0].lo));
    r.exprs.push_back(cmp(negate ? NFT_CMP_NEQ : NFT_CMP_EQ, be16(ports[0].lo)));
  } else if (ports.size() == 1) {  // nft turns a single range into compares (or one range expression)
    r.words.push_back(subject + (negate ? " != " : " ") + std::to_string(ports[0].lo) + "-" +
                      std::to_string(ports[0].hi));
    if (negate) {
      r.exprs.push_back({.kind = Expr::Kind::range,
                         .key = NFT_RANGE_NEQ,
                         .data = be16(ports[0].lo),
                         .data_to = be16(ports[0].hi)});
    } else {
      r.exprs.push_back(cmp(NFT_CMP_GTE, be16(ports[0].lo)));
      r.exprs.push_back(cmp(NFT_CMP_LTE, be16(ports[0].hi)));
    }
  } else {
    lookup_anon(r, port_set(ports), negate, subject);
  }
}

void match_ports(Rule& r, bool source, const ir::PortSet& ports, bool negate) {
  match_port_values(r, source ? "th sport" : "th dport",
                    payload(NFT_PAYLOAD_TRANSPORT_HEADER, source ? 0 : 2, 2), ports, negate);
}

// The destination port of the connection's original tuple: the one the client chose, before any DNAT.
void match_ct_orig_dport(Rule& r, const ir::PortSet& ports, bool negate) {
  match_port_values(r, "ct original proto-dst",
                    {.kind = Expr::Kind::ct_load, .ct_dir = IP_CT_DIR_ORIGINAL, .key = NFT_CT_PROTO_DST},
                    ports, negate);
}

// A lookup of the address in a named set; with a mask (a hash set of prefixes of one length), of the
// address masked to that prefix.
void match_addr(Rule& r, Family f, bool source, const std::string& set_name, bool negate,
                std::optional<std::size_t> mask) {
  bool v4 = f == Family::ipv4;
  std::uint32_t offset = v4 ? (source ? 12 : 16) : (source ? 8 : 24);
  std::uint32_t len = v4 ? 4 : 16;
  std::string subject = std::string(v4 ? "ip " : "ip6 ") + (source ? "saddr" : "daddr");
  r.exprs.push_back(payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len));
  if (mask) {
    ir::IpAddr bits{f, {}};
    for (std::size_t bit = 0; bit < *mask; ++bit)
      bits.bytes[bit / 8] |= static_cast<std::uint8_t>(0x80 >> (bit % 8));
    r.exprs.push_back({.kind = Expr::Kind::bitwise,
                       .len = len,
                       .data = Bytes(bits.bytes.begin(), bits.bytes.begin() + len),
                       .data_to = Bytes(len, 0)});
    // nft writes the comparison out after a mask.
    r.words.push_back(subject + " & " + ir::to_string(bits) + (negate ? " != @" : " == @") + set_name);
  } else {
    r.words.push_back(subject + (negate ? " != @" : " @") + set_name);
  }
  r.exprs.push_back({.kind = Expr::Kind::lookup, .invert = negate, .text = set_name});
}

// One prefix, as nft writes `ip saddr 10.0.0.0/8`: load, mask (unless a full address), compare.
void match_prefix(Rule& r, bool source, const ir::Cidr& cidr, bool negate) {
  bool v4 = cidr.addr.family == Family::ipv4;
  std::uint32_t offset = v4 ? (source ? 12 : 16) : (source ? 8 : 24);
  std::uint32_t len = v4 ? 4 : 16;
  std::string subject = std::string(v4 ? "ip " : "ip6 ") + (source ? "saddr" : "daddr");
  bool whole = cidr.prefix == cidr.addr.width();
  std::vector<Expr> exprs{payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len)};
  if (!whole) {
    Bytes mask(len, 0);
    for (std::size_t bit = 0; bit < cidr.prefix; ++bit)
      mask[bit / 8] |= static_cast<std::uint8_t>(0x80 >> (bit % 8));
    exprs.push_back(
        {.kind = Expr::Kind::bitwise, .len = len, .data = std::move(mask), .data_to = Bytes(len, 0)});
  }
  exprs.push_back(cmp(negate ? NFT_CMP_NEQ : NFT_CMP_EQ, addr_bytes(cidr.addr)));
  r.words.push_back(subject + (negate ? " != " : " ") +
                    (whole ? ir::to_string(cidr.addr) : ir::to_string(cidr)));
  r.exprs.insert(r.exprs.end(), exprs.begin(), exprs.end());
}

void match_icmp(Rule& r, const ir::IcmpMatch& m) {
  std::string proto = m.v6 ? "icmpv6" : "icmp";
  add(r, "meta l4proto " + std::to_string(m.v6 ? kIcmpV6 : kIcmp),
      {meta_load(NFT_META_L4PROTO), cmp(NFT_CMP_EQ, {m.v6 ? kIcmpV6 : kIcmp})});
  if (!m.type) return;
  std::uint32_t op = m.negate ? NFT_CMP_NEQ : NFT_CMP_EQ;
  if (m.code) {  // nft merges type and code into one two-byte compare; "differ" means either differs
    char raw[8];
    std::snprintf(raw, sizeof raw, "0x%02x%02x", *m.type, *m.code);
    add(r,
        m.negate
            ? std::string("@th,0,16 != ") + raw
            : proto + " type " + std::to_string(*m.type) + " " + proto + " code " + std::to_string(*m.code),
        {payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2), cmp(op, {*m.type, *m.code})});
  } else {
    add(r, proto + " type " + (m.negate ? "!= " : "") + std::to_string(*m.type),
        {payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1), cmp(op, {*m.type})});
  }
}

// Each packet has exactly one conntrack state, so "not these" is "one of the others".
bool match_ct(Rule& r, const std::vector<ir::CtState>& states, bool negate) {
  std::uint32_t mask = 0;
  for (auto s : states) mask |= kCtStateBits[static_cast<std::size_t>(s)];
  if (negate) mask = kAllCtStates & ~mask;
  if (mask == 0) return false;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < ir::kCtStateCount; ++i)
    if (mask & kCtStateBits[i]) names.emplace_back(ir::to_string(static_cast<ir::CtState>(i)));
  std::string text = "ct state ";
  for (std::size_t i = 0; i < names.size(); ++i) text += (i ? "," : "") + names[i];
  add(r, text,
      {{.kind = Expr::Kind::ct_load, .key = NFT_CT_STATE}, bitwise(mask, 0), cmp(NFT_CMP_NEQ, host32(0))});
  return true;
}

// The reverse-path check: does the route back to the source exist (out of the input interface, if
// strict)? The lookup uses the packet's mark, as firewalld's rule does; "exists"/"missing" only test
// for a route, without the interface's index.
void match_rpf(Rule& r, ir::RpfMode mode, bool negate) {
  std::uint32_t flags = NFTA_FIB_F_SADDR | NFTA_FIB_F_MARK | NFTA_FIB_F_PRESENT;
  if (mode == ir::RpfMode::strict) flags |= NFTA_FIB_F_IIF;
  std::string text = mode == ir::RpfMode::strict ? "fib saddr . mark . iif oif " : "fib saddr . mark oif ";
  add(r, text + (negate ? "missing" : "exists"),
      {{.kind = Expr::Kind::fib, .key = NFT_FIB_RESULT_OIF, .code = flags},
       cmp(NFT_CMP_EQ, host32(negate ? 0 : 1))});
}

// The L4 protocol a conntrack helper object tracks: the rule's, if it names one of TCP and UDP, else
// the one the kernel's helper of that name tracks (sip tracks both; UDP is its usual transport).
std::optional<std::uint8_t> helper_protocol(const std::string& type, const ir::Match& m) {
  if (m.protocols && !m.protocol_negate && m.protocols->size() == 1 &&
      (m.protocols->front() == 6 || m.protocols->front() == 17))
    return m.protocols->front();
  static const std::map<std::string, std::uint8_t> kTracks = {
      {"ftp", 6},   {"irc", 6},     {"sane", 6}, {"pptp", 6},        {"Q.931", 6}, {"tftp", 17},
      {"snmp", 17}, {"amanda", 17}, {"RAS", 17}, {"netbios-ns", 17}, {"sip", 17}};
  if (auto it = kTracks.find(type); it != kTracks.end()) return it->second;
  return std::nullopt;
}

// Any of the statuses: one test of their bits, named in bit order as nft prints them.
void match_ct_status(Rule& r, const std::vector<ir::CtStatus>& statuses) {
  std::uint32_t mask = 0;
  for (auto s : statuses) mask |= kCtStatusBits[static_cast<std::size_t>(s)];
  std::vector<std::pair<std::uint32_t, std::string_view>> named;
  for (std::size_t i = 0; i < ir::kCtStatusCount; ++i)
    if (mask & kCtStatusBits[i])
      named.emplace_back(kCtStatusBits[i], ir::to_string(static_cast<ir::CtStatus>(i)));
  std::sort(named.begin(), named.end());
  std::string text = "ct status ";
  for (std::size_t i = 0; i < named.size(); ++i) text += (i ? "," : "") + std::string(named[i].second);
  add(r, text,
      {{.kind = Expr::Kind::ct_load, .key = NFT_CT_STATUS}, bitwise(mask, 0), cmp(NFT_CMP_NEQ, host32(0))});
}

void match_mac(Rule& r, const std::vector<ir::MacAddr>& macs, bool negate) {
  std::uint16_t ether = 1;  // ARPHRD_ETHER, host order: nft's implicit dependency of `ether saddr`
  Bytes ether_bytes(2);
  std::copy_n(reinterpret_cast<const std::uint8_t*>(&ether), 2, ether_bytes.begin());
  r.exprs.push_back(meta_load(NFT_META_IIFTYPE));
  r.exprs.push_back(cmp(NFT_CMP_EQ, ether_bytes));
  r.exprs.push_back(payload(NFT_PAYLOAD_LL_HEADER, 6, 6));
  if (macs.size() == 1) {
    r.words.push_back(std::string("ether saddr ") + (negate ? "!= " : "") + ir::to_string(macs[0]));
    r.exprs.push_back(cmp(negate ? NFT_CMP_NEQ : NFT_CMP_EQ, Bytes(macs[0].begin(), macs[0].end())));
    return;
  }
  Set set{.key_type = KeyType::ether_addr, .key_len = 6};
  for (const auto& mac : macs) set.elements.push_back({Bytes(mac.begin(), mac.end())});
  lookup_anon(r, std::move(set), negate, "ether saddr");
}

void match_mark(Rule& r, std::uint32_t value, std::uint32_t mask, bool negate) {
  std::uint32_t op = negate ? NFT_CMP_NEQ : NFT_CMP_EQ;
  if (mask == 0xffffffff) {
    add(r, std::string("meta mark ") + (negate ? "!= " : "") + hex32(value),
        {meta_load(NFT_META_MARK), cmp(op, host32(value))});
  } else {
    add(r, "meta mark & " + hex32(mask) + (negate ? " != " : " == ") + hex32(value & mask),
        {meta_load(NFT_META_MARK), bitwise(mask, 0), cmp(op, host32(value & mask))});
  }
}

// (mark & ~clear) ^ set, written as nft does.
void set_mark(Rule& r, std::uint32_t keep, std::uint32_t value) {
  if (keep == 0) {
    add(r, "meta mark set " + hex32(value),
        {immediate(1, host32(value)), {.kind = Expr::Kind::meta_set, .key = NFT_META_MARK}});
    return;
  }
  std::string text = "meta mark set meta mark";
  if (keep != 0xffffffff && value == 0)
    text += " & " + hex32(keep);
  else if ((keep | value) == 0xffffffff)
    text += " | " + hex32(value);
  else
    text += " & " + hex32(keep) + " | " + hex32(value);
  add(r, text,
      {meta_load(NFT_META_MARK), bitwise(keep, value), {.kind = Expr::Kind::meta_set, .key = NFT_META_MARK}});
}

void test_mark_bit(Rule& r, std::uint32_t bit) {
  add(r, "meta mark & " + hex32(bit) + " == " + hex32(bit),
      {meta_load(NFT_META_MARK), bitwise(bit, 0), cmp(NFT_CMP_EQ, host32(bit))});
}

void counter(Rule& r) {
  add(r, "counter", {{.kind = Expr::Kind::counter}});
}

constexpr const char* kLogLevels[] = {"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"};

// ---- reject: nft's `inet` reject types; v4-only codes get a v4 rule plus an icmpx fallback --------
struct RejectForm {
  std::optional<Family> only;      // guard for a family-specific form
  std::optional<std::uint8_t> l4;  // guard for tcp reset
  std::uint32_t type, code;
  std::string text;
};
std::optional<std::vector<RejectForm>> reject_forms(std::string_view with) {
  // Always spelt out: a bare `reject` means a family-specific ICMP type when nft knows the family.
  RejectForm port_unreachable{{},
                              {},
                              NFT_REJECT_ICMPX_UNREACH,
                              NFT_REJECT_ICMPX_PORT_UNREACH,
                              "reject with icmpx type port-unreachable"};
  RejectForm admin{{},
                   {},
                   NFT_REJECT_ICMPX_UNREACH,
                   NFT_REJECT_ICMPX_ADMIN_PROHIBITED,
                   "reject with icmpx type admin-prohibited"};
  auto v4_then_admin = [&](std::uint32_t code, const char* name) {
    return std::vector<RejectForm>{
        {Family::ipv4, {}, NFT_REJECT_ICMP_UNREACH, code, std::string("reject with icmp type ") + name},
        admin};
  };
  if (with.empty() || with == "icmp-port-unreachable" || with == "icmp6-port-unreachable" ||
      with == "port-unreachable")
    return std::vector<RejectForm>{port_unreachable};
  if (with == "tcp-reset")
    return std::vector<RejectForm>{{{}, kTcp, NFT_REJECT_TCP_RST, 0, "reject with tcp reset"},
                                   port_unreachable};
  if (with == "icmp-host-unreachable" || with == "icmp6-addr-unreachable")
    return std::vector<RejectForm>{{{},
                                    {},
                                    NFT_REJECT_ICMPX_UNREACH,
                                    NFT_REJECT_ICMPX_HOST_UNREACH,
                                    "reject with icmpx type host-unreachable"}};
  if (with == "icmp-net-unreachable" || with == "icmp6-no-route")
    return std::vector<RejectForm>{
        {{}, {}, NFT_REJECT_ICMPX_UNREACH, NFT_REJECT_ICMPX_NO_ROUTE, "reject with icmpx type no-route"}};
  if (with == "icmp-admin-prohibited" || with == "icmp6-adm-prohibited" || with == "admin-prohibited")
    return std::vector<RejectForm>{admin};
  if (with == "icmp-host-prohibited") return v4_then_admin(10, "host-prohibited");
  if (with == "icmp-net-prohibited") return v4_then_admin(9, "net-prohibited");
  if (with == "icmp-proto-unreachable") return v4_then_admin(2, "prot-unreachable");
  return std::nullopt;
}

// The end of a rule after its matches: extra guard (reject forms), then statements and verdict.
struct Tail {
  Rule guard, action;
};

void content_address(Table& table);

class NameAllocator {
 public:
  // nft names: letters, digits, '_', '.', '-'; long or rewritten names keep a hash of the original.
  std::string make(const std::string& prefix, std::string_view wanted) {
    std::string name = prefix;
    for (char c : wanted)
      name += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-') ? c : '_';
    if (name.size() > 200) {
      char hash[24];
      std::snprintf(hash, sizeof hash, "-%016llx", static_cast<unsigned long long>(fnv1a(wanted)));
      name = name.substr(0, 180) + hash;
    }
    std::string unique = name;
    for (int n = 2; !used_.insert(unique).second; ++n) unique = name + "-" + std::to_string(n);
    return unique;
  }

 private:
  std::set<std::string> used_;
};

struct StagePlace {
  const char* type;
  std::uint32_t hook;
  std::int32_t priority;
};
// Before the first stage of the paths in (untracked-in, at -300).
constexpr std::int32_t kClearMarksPriority = -301;
constexpr StagePlace kStagePlaces[] = {
    {"filter", NF_INET_PRE_ROUTING, -300},  // untracked-in (raw)
    {"filter", NF_INET_LOCAL_OUT, -300},    // untracked-out (raw)
    {"filter", NF_INET_PRE_ROUTING, -150},  // prednat (mangle)
    {"nat", NF_INET_PRE_ROUTING, -100},     // dnat (dstnat)
    {"filter", NF_INET_LOCAL_IN, 0},        // input
    {"filter", NF_INET_FORWARD, 0},         // forward
    {"nat", NF_INET_LOCAL_OUT, -100},       // dnat-out (dstnat)
    {"filter", NF_INET_LOCAL_OUT, 0},       // output
    {"nat", NF_INET_POST_ROUTING, 100},     // snat (srcnat)
};
static_assert(std::size(kStagePlaces) == ir::kStageCount);

class Translator {
 public:
  Translator(const ir::Ruleset& rs, Diagnostics& diag, Counters counters)
      : rs_(rs), diag_(diag), counters_(counters), stamper_(rs), set_index_(rs.sets) {}

  Table run() {
    set_matches_.reserve(rs_.sets.size());  // add_address_set() keeps their places
    for (const auto& [name, set] : rs_.sets) add_address_set(name, set);
    const std::set<std::string> in_postrouting = chains_of(ir::Stage::snat);
    std::set<std::string> before_conntrack = chains_of(ir::Stage::untracked_in);
    before_conntrack.merge(chains_of(ir::Stage::untracked_out));
    plan_fusion(in_postrouting, before_conntrack);
    for (const auto& [name, chain] : rs_.chains)
      if (!fused_tail_.contains(name))
        chain_names_[name] =
            names_.make("c-", fusions_.contains(name) ? name + ".." + fusions_[name].back() : name);
    std::vector<Chain> ir_chains;
    for (const auto& [name, chain] : rs_.chains) {
      if (fused_tail_.contains(name)) continue;
      Chain out{chain_names_[name], {}, {}};
      in_postrouting_ = in_postrouting.contains(name);
      before_conntrack_ = before_conntrack.contains(name);
      std::vector<const ir::Rule*> rules;
      auto take = [&](const std::string& part) {
        for (const auto& rule : rs_.find_chain(part)->rules) rules.push_back(&rule);
      };
      take(name);
      if (auto fusion = fusions_.find(name); fusion != fusions_.end())
        for (const auto& part : fusion->second) take(part);
      emit_chain(out, name, rules);
      ir_chains.push_back(std::move(out));
    }
    emit_mark_clearing();
    for (std::size_t s = 0; s < ir::kStageCount; ++s) {
      in_postrouting_ = static_cast<ir::Stage>(s) == ir::Stage::snat;
      emit_stage(static_cast<ir::Stage>(s));
    }
    for (auto& chain : ir_chains) table_.chains.push_back(std::move(chain));
    if (auto where = stamper_.positions()) table_.sets.push_back(std::move(*where));
    content_address(table_);
    return std::move(table_);
  }

 private:
  // Consecutive chains of a group that nothing else refers to and whose rules all merge into runs of
  // one shape are one nft chain: evaluating them one after the other is evaluating their rules in a
  // row (they neither return nor pass). Their runs then merge across them - a long allow list split
  // into many small chains becomes a few large set lookups - and a packet makes one jump instead of
  // one per chain. Other chains stay apart, so that a change in one keeps the others' rule counters.
  void plan_fusion(const std::set<std::string>& in_postrouting,
                   const std::set<std::string>& before_conntrack) {
    std::map<std::string, std::size_t> references;
    for (const auto& stage : rs_.stages)
      for (const auto& section : stage.sections)
        for (const auto& endpoint : section.endpoints) {
          if (!endpoint.failsafe_chain.empty()) ++references[endpoint.failsafe_chain];
          for (const auto& group : endpoint.groups)
            for (const auto& name : group.chains) ++references[name];
        }
    for (const auto& [name, chain] : rs_.chains)
      for (const auto& rule : chain.rules)
        if (rule.action.kind == ir::ActionKind::jump) ++references[rule.action.target];
    // The shape all of a chain's rules merge into, if they do (their candidates are made again, one
    // run at a time, when the chain is emitted: keeping them all would double the peak memory).
    std::map<std::string, std::optional<Shape>> shapes;
    auto shape = [&](const std::string& name) -> std::optional<Shape> {
      if (auto it = shapes.find(name); it != shapes.end()) return it->second;
      std::optional<Shape>& out = shapes[name];
      const ir::Chain* chain = rs_.find_chain(name);
      if (!chain || chain->rules.empty() || references[name] != 1) return out;
      in_postrouting_ = in_postrouting.contains(name);
      before_conntrack_ = before_conntrack.contains(name);
      for (const auto& rule : chain->rules) {
        auto c = candidate(rule, true);
        if (!c || (out && c->shape != *out)) return out = std::nullopt;
        if (!out) out = std::move(c->shape);
      }
      return out;
    };
    for (const auto& stage : rs_.stages)
      for (const auto& section : stage.sections)
        for (const auto& endpoint : section.endpoints)
          for (const auto& group : endpoint.groups)
            for (std::size_t i = 0; i < group.chains.size();) {
              std::size_t end = i;
              auto first = shape(group.chains[i]);
              while (first && end < group.chains.size() && shape(group.chains[end]) == first) ++end;
              if (end - i >= 2) {
                fusions_[group.chains[i]].assign(group.chains.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                                                 group.chains.begin() + static_cast<std::ptrdiff_t>(end));
                fused_tail_.insert(group.chains.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                                   group.chains.begin() + static_cast<std::ptrdiff_t>(end));
              }
              i = std::max(end, i + 1);
            }
  }

  // The IR chains a stage's endpoints reach, directly or by jumps.
  std::set<std::string> chains_of(ir::Stage stage) const {
    std::set<std::string> seen;
    std::vector<std::string> todo;
    for (const auto& section : rs_.stage(stage).sections)
      for (const auto& endpoint : section.endpoints)
        for (const auto& group : endpoint.groups)
          todo.insert(todo.end(), group.chains.begin(), group.chains.end());
    while (!todo.empty()) {
      std::string name = std::move(todo.back());
      todo.pop_back();
      const ir::Chain* chain = rs_.find_chain(name);
      if (!chain || !seen.insert(name).second) continue;
      for (const auto& rule : chain->rules)
        if (rule.action.kind == ir::ActionKind::jump) todo.push_back(rule.action.target);
    }
    return seen;
  }

  // How one family of an IR address set is matched: a named set, or - for a single prefix - an inline
  // compare (thousands of one-address sets would make the kernel look sets up by name in a long list).
  // A set whose prefixes all have one length is a hash set, looked up with the address masked to it
  // (the kernel fills a hash far faster than an interval tree). 16 bytes: a policy of 50,000 inline
  // addresses holds 50,000 pairs of them.
  struct FamilyMatch {
    static constexpr std::uint32_t kNoSet = ~std::uint32_t{0};
    std::uint32_t set = kNoSet;        // its index in table_.sets
    std::uint8_t mask = 0;             // hash set of prefixes shorter than an address: their length (0: none)
    const ir::Cidr* single = nullptr;  // in the IR's set
    bool present() const { return set != kNoSet || single; }
  };
  struct FamilySets {
    FamilyMatch v4, v6;  // neither present: the set has no entries of that family
    const FamilyMatch& of(Family f) const { return f == Family::ipv4 ? v4 : v6; }
  };

  // The next of the ruleset's sets, in its order (set_index_'s places).
  void add_address_set(const std::string& name, const ir::AddrSet& set) {
    FamilySets& names = set_matches_.emplace_back();
    for (Family f : {Family::ipv4, Family::ipv6}) {
      if (!set.has(f)) continue;
      bool v4 = f == Family::ipv4;
      auto in_family = [f](const ir::Cidr& c) { return c.addr.family == f; };
      if (std::count_if(set.cidrs.begin(), set.cidrs.end(), in_family) == 1) {
        const ir::Cidr& only = *std::find_if(set.cidrs.begin(), set.cidrs.end(), in_family);
        if (only.prefix > 0) {
          (v4 ? names.v4 : names.v6).single = &only;
          continue;
        }
      }
      std::optional<std::uint8_t> one_length;
      bool mixed = false;
      for (const auto& cidr : set.cidrs)
        if (cidr.addr.family == f) {
          mixed = mixed || (one_length && *one_length != cidr.prefix);
          one_length = cidr.prefix;
        }
      bool hashed = !mixed && *one_length > 0;
      Set out{.name = names_.make("s-", name + (v4 ? "_v4" : "_v6")),
              .key_type = v4 ? KeyType::ipv4_addr : KeyType::ipv6_addr,
              .key_len = v4 ? 4u : 16u,
              .interval = !hashed};
      for (const auto& cidr : set.cidrs) {
        if (cidr.addr.family != f) continue;
        Bytes first = addr_bytes(cidr.addr), last = first;
        if (hashed) {
          out.elements.push_back({first});
          continue;
        }
        for (std::size_t bit = cidr.prefix; bit < cidr.addr.width(); ++bit)
          last[bit / 8] |= static_cast<std::uint8_t>(0x80 >> (bit % 8));
        add_interval(out, first, last);
      }
      (v4 ? names.v4 : names.v6).set = static_cast<std::uint32_t>(table_.sets.size());
      if (hashed && *one_length < (v4 ? 32 : 128)) (v4 ? names.v4 : names.v6).mask = *one_length;
      table_.sets.push_back(std::move(out));
    }
  }

  // A match's set's, or for a CIDR written in place, its own single (a /0 too: its family's every
  // address, matched by the family alone).
  FamilySets family_sets(const ir::AddrMatch& m) const {
    FamilySets out;
    if (m.in_place()) {
      (m.cidr.addr.family == Family::ipv4 ? out.v4 : out.v6).single = &m.cidr;
      return out;
    }
    auto place = set_index_.place(m.set_name);
    return place ? set_matches_[*place] : out;
  }
  std::span<const ir::Cidr> cidrs_of(const ir::AddrMatch& m) const {
    if (m.in_place()) return {&m.cidr, 1};
    const ir::AddrSet* set = set_index_.find(m.set_name);
    return set ? std::span<const ir::Cidr>(set->cidrs.data(), set->cidrs.size())
               : std::span<const ir::Cidr>();
  }

  // The families a rule must be written for: nullopt = one rule for both, without a family guard.
  std::vector<std::optional<Family>> variants(Family only_family, const ir::AddrMatches& src,
                                              const ir::AddrMatches& dst) {
    bool specific = only_family != Family::any;
    std::vector<std::optional<Family>> out;
    for (Family f : {Family::ipv4, Family::ipv6}) {
      bool allowed = only_family == Family::any || only_family == f;
      for (const auto* side : {&src, &dst})
        for (const auto& m : *side) {
          const FamilyMatch fm = family_sets(m).of(f);
          specific = specific || fm.present();
          // Not in the family's every address: no packet of it.
          if ((!m.negate && !fm.present()) || (m.negate && fm.single && fm.single->prefix == 0))
            allowed = false;
        }
      if (allowed) out.emplace_back(f);
    }
    if (out.size() == 2 && !specific) return {std::nullopt};
    return out;
  }

  void emit_addresses(Rule& r, Family f, const ir::AddrMatches& src, const ir::AddrMatches& dst) {
    for (bool source : {true, false})
      for (const auto& m : source ? src : dst) {
        const FamilyMatch fm = family_sets(m).of(f);
        if (fm.single && fm.single->prefix > 0)
          match_prefix(r, source, *fm.single, m.negate);
        else if (fm.set != FamilyMatch::kNoSet)
          match_addr(r, f, source, table_.sets[fm.set].name, m.negate,
                     fm.mask ? std::optional<std::size_t>(fm.mask) : std::nullopt);
        // A /0 written in place: the family's guard is all of it (variants() leaves out a negated one).
      }
  }

  void refuse(const ir::Origin& origin, std::string message, std::string hint) {
    ++refusals_;
    if (!quiet_) diag_.error(origin.loc, std::move(message), std::move(hint));
  }

  // The parts of an IR rule's nft rules around its address matches: family guard, common, addresses,
  // after_addresses, tail. Nothing when it never matches or nftables cannot express it (refused).
  struct Prepared {
    Family only_family;
    Rule common, after_addresses;
    std::vector<Tail> tails;
  };
  std::optional<Prepared> prepare(const ir::Match& m, const ir::Action& action, const ir::Origin& origin) {
    Family only_family = m.family;
    auto narrow = [&](Family f) {
      if (only_family != Family::any && only_family != f) return false;
      only_family = f;
      return true;
    };
    if (m.icmp && !narrow(m.icmp->v6 ? Family::ipv6 : Family::ipv4)) return std::nullopt;
    bool nat = action.kind == ir::ActionKind::dnat || action.kind == ir::ActionKind::snat;
    if (nat && action.nat_addr && !narrow(action.nat_addr->family)) return std::nullopt;

    if ((m.iif && !valid_ifaces(*m.iif, origin)) || (m.oif && !valid_ifaces(*m.oif, origin)))
      return std::nullopt;
    Rule common;
    if ((m.iif && !match_iface(common, true, *m.iif, m.iif_negate)) ||
        (m.oif && !match_iface(common, false, *m.oif, m.oif_negate))) {
      refuse_iface(origin);
      return std::nullopt;
    }
    bool has_ports = !m.src_port.empty() || !m.dst_port.empty() || !m.ct_orig_dport.empty();
    bool needs_port_protocol = has_ports || (action.nat_port.has_value());
    if (needs_port_protocol) {
      std::vector<std::uint8_t> protocols = port_protocols(m);
      if (protocols.empty() || (m.icmp && has_ports)) return std::nullopt;  // never matches
      match_l4proto(common, protocols, false);
    } else if (m.protocols) {
      match_l4proto(common, *m.protocols, m.protocol_negate);
    }
    Rule after_addresses;
    for (bool source : {true, false})
      for (const auto& pm : source ? m.src_port : m.dst_port) {
        if (pm.ports.empty()) {
          if (!pm.negate) return std::nullopt;  // an empty positive port list never matches
          continue;
        }
        match_ports(after_addresses, source, pm.ports, pm.negate);
      }
    if (m.icmp) match_icmp(after_addresses, *m.icmp);
    if (m.ct_states && !match_ct(after_addresses, *m.ct_states, m.ct_negate)) return std::nullopt;
    if (m.src_mac && !m.src_mac->empty()) match_mac(after_addresses, *m.src_mac, m.src_mac_negate);
    if (m.pkt_type && !match_pkt_type(after_addresses, *m.pkt_type, origin)) return std::nullopt;
    if (m.mark_value) match_mark(after_addresses, *m.mark_value, m.mark_mask & ~kOwnMarks, m.mark_negate);
    if (m.ct_status) {
      if (m.ct_status->empty()) return std::nullopt;  // any of none never matches
      match_ct_status(after_addresses, *m.ct_status);
    }
    for (const auto& pm : m.ct_orig_dport) {
      if (pm.ports.empty()) {
        if (!pm.negate) return std::nullopt;
        continue;
      }
      match_ct_orig_dport(after_addresses, pm.ports, pm.negate);
    }
    if (m.rpf) match_rpf(after_addresses, *m.rpf, m.rpf_negate);
    // Last: only packets that match everything else may use up the rate.
    if (m.rate_limit && !match_limit(after_addresses, *m.rate_limit, origin)) return std::nullopt;

    auto tails = action_tails(action, m, origin);
    if (tails.empty()) return std::nullopt;
    return Prepared{only_family, std::move(common), std::move(after_addresses), std::move(tails)};
  }

  // Emits one IR rule as nft rules (one per family when it needs family-specific matches).
  void emit_rule(Chain& out, const ir::Rule& rule) {
    auto p = prepare(rule.match, rule.action, rule.origin);
    if (!p) return;
    const ir::Match& m = rule.match;
    std::string stamp = stamper_.stamp(rule.origin);
    for (const auto& variant : variants(p->only_family, m.src_addr, m.dst_addr)) {
      for (const auto& tail : p->tails) {
        Rule r;
        if (variant) match_nfproto(r, *variant);
        append(r, p->common);
        if (variant) emit_addresses(r, *variant, m.src_addr, m.dst_addr);
        append(r, p->after_addresses);
        append(r, tail.guard);
        counter(r);
        append(r, tail.action);
        r.comment = stamp;
        out.append(std::move(r));
      }
    }
    if (rule.action.kind == ir::ActionKind::jump && may_pass(rule.action.target)) {
      Rule r;
      test_mark_bit(r, kPassMark);
      counter(r);
      add(r, "return", {verdict(NFT_RETURN)});
      r.comment = stamp;
      out.append(std::move(r));
    }
  }

  // ---- merging runs of rules into set lookups (merge.hpp) ----------------------------------------

  // What a rule's merged form matches as usual, prepared, and its text.
  struct PreparedRest {
    Prepared prepared;
    std::string words;
  };
  // What the rules of one run share: the fields they look up and the rest.
  struct Shape {
    std::string fields;  // '1' per field looked up, '0' per other; without addresses, the family
    std::shared_ptr<const PreparedRest> rest;
    friend bool operator==(const Shape& a, const Shape& b) {
      return a.fields == b.fields && (a.rest == b.rest || a.rest->words == b.rest->words);
    }
  };
  // A rule a run may take, with the rest of it.
  struct Candidate {
    merge::Member member;
    Shape shape;
    std::vector<std::uint8_t> protocols;
    const ir::Rule* rule;
    const Prepared& rest() const { return shape.rest->prepared; }
  };

  // Plain verdicts without state (a rate limit) whose matched values are all positive and few. What
  // the rule's merged form would refuse is refused (and reported) when the rule is emitted by itself.
  // shape_only: for planning, without the stamp only counted elements need (and the head of a run, for
  // its comment: emit_chain stamps that one).
  std::optional<Candidate> candidate(const ir::Rule& rule, bool shape_only) {
    quiet_ = true;
    std::size_t refused = refusals_;
    auto c = merge_form(rule, shape_only);
    quiet_ = false;
    if (refusals_ != refused) return std::nullopt;
    return c;
  }

  // The rest prepared, or null when it never matches or is refused. The rules of a run have the same
  // rest, so the last one is kept: most rules of a long policy need no preparing of their own.
  std::shared_ptr<const PreparedRest> prepare_rest(ir::Match rest, const ir::Rule& rule) {
    if (rest_memo_ && rest_memo_->match == rest && rest_memo_->action == rule.action &&
        rest_memo_->in_postrouting == in_postrouting_ && rest_memo_->before_conntrack == before_conntrack_)
      return rest_memo_->rest;
    std::size_t refused = refusals_;
    auto prepared = prepare(rest, rule.action, rule.origin);
    std::shared_ptr<const PreparedRest> out;
    if (prepared && refusals_ == refused) {
      auto made = std::make_shared<PreparedRest>(PreparedRest{std::move(*prepared), {}});
      auto words = [&](const Rule& part) {
        part.words.each([&](std::string_view word) { (made->words += '|') += word; });
      };
      words(made->prepared.common);
      words(made->prepared.after_addresses);
      for (const auto& tail : made->prepared.tails) {
        made->words += "|tail";
        words(tail.guard);
        words(tail.action);
      }
      out = std::move(made);
    }
    rest_memo_ = RestMemo{std::move(rest), rule.action, in_postrouting_, before_conntrack_, out};
    return out;
  }

  std::optional<Candidate> merge_form(const ir::Rule& rule, bool shape_only) {
    using merge::Field;
    const ir::Match& m = rule.match;
    auto kind = rule.action.kind;
    if (kind != ir::ActionKind::accept && kind != ir::ActionKind::allow && kind != ir::ActionKind::drop &&
        kind != ir::ActionKind::reject)
      return std::nullopt;
    if (m.rate_limit || m.icmp || m.src_addr.size() > 1 || m.dst_addr.size() > 1 || m.src_port.size() > 1 ||
        m.dst_port.size() > 1 || !m.ct_orig_dport.empty())
      return std::nullopt;
    Candidate c{{}, {}, {}, &rule};
    if (!shape_only) c.member.stamp = stamper_.stamp(rule.origin);
    auto set = [&](Field f, merge::Values values) {
      c.member.values[static_cast<std::size_t>(f)] = std::move(values);
    };
    bool took_iif = false, took_oif = false;
    auto exact = [](const std::vector<ir::IfacePattern>& ps) {
      return std::none_of(ps.begin(), ps.end(), [](const auto& p) { return p.prefix || p.name.empty(); });
    };
    if (m.iif && !m.iif_negate && exact(*m.iif) && valid_ifaces(*m.iif, rule.origin)) {
      set(Field::iif, merge::iface_values(*m.iif));
      took_iif = true;
    }
    if (m.oif && !m.oif_negate && exact(*m.oif) && valid_ifaces(*m.oif, rule.origin)) {
      set(Field::oif, merge::iface_values(*m.oif));
      took_oif = true;
    }
    for (bool source : {true, false})
      for (const auto& pm : source ? m.src_port : m.dst_port) {
        if (pm.negate || pm.ports.empty()) return std::nullopt;
        set(source ? Field::sport : Field::dport, merge::port_values(pm.ports));
      }
    if (!m.src_port.empty() || !m.dst_port.empty()) {
      c.protocols = port_protocols(m);
      if (c.protocols.empty()) return std::nullopt;
    } else if (m.protocols && !m.protocol_negate) {
      c.protocols = *m.protocols;
    }
    if (!c.protocols.empty()) set(Field::l4proto, merge::protocol_values(c.protocols));
    for (bool source : {true, false})
      for (const auto& am : source ? m.src_addr : m.dst_addr) {
        const auto addresses = cidrs_of(am);
        // A large set is a lookup of its own already; its values would be made only to be refused.
        if (am.negate || addresses.empty() || addresses.size() > kMaxElementsPerRule) return std::nullopt;
        set(source ? Field::saddr : Field::daddr, merge::address_values(addresses, m.family));
      }
    std::size_t boxes = c.member.by_address() ? c.member.boxes(Family::ipv4) + c.member.boxes(Family::ipv6)
                                              : c.member.boxes(Family::any);
    const std::size_t key_bytes = c.member.key_bytes();
    if (boxes > kMaxElementsPerRule || key_bytes == 0 || key_bytes > merge::kMaxKeyBytes)
      return std::nullopt;  // nothing to look up, or more than a rule's share of a set or registers
    c.shape.rest = prepare_rest(without_lookups(m, took_iif, took_oif, !c.protocols.empty()), rule);
    if (!c.shape.rest) return std::nullopt;
    c.shape.fields.assign(merge::kFieldCount, '0');
    for (std::size_t f = 0; f < merge::kFieldCount; ++f)
      if (c.member.values[f]) c.shape.fields[f] = '1';
    if (!c.member.by_address()) c.shape.fields += ir::to_string(c.rest().only_family);
    return c;
  }

  // m without what its merged form looks up instead: ports and addresses (the family becomes which sets
  // the elements go to), and the interfaces and protocols it took.
  static ir::Match without_lookups(const ir::Match& m, bool took_iif, bool took_oif, bool took_protocols) {
    ir::Match rest = ir::without(
        m, {.iif = took_iif, .oif = took_oif, .protocols = took_protocols, .addresses = true, .ports = true});
    if (!m.src_addr.empty() || !m.dst_addr.empty()) rest.family = Family::any;
    return rest;
  }

  // The last run emitted into a chain, whose sets a next run of the same form may join: a run holds its
  // members while it grows, so kMaxRun bounds a run, not its sets. Joining keeps a long list of
  // rules one lookup per family, as if it had been one run.
  struct OpenRun {
    Shape shape;
    std::vector<merge::Field> keyed;
    struct Joined {
      Family family;
      std::size_t set;  // index in table_.sets
      std::vector<std::optional<std::size_t>> masks;
      bool reserved = false;  // room for the rest of the chain was reserved at the first join
    };
    std::vector<Joined> sets;
    std::vector<std::size_t> rules;  // its rules in the chain, whose comments count its members
    merge::Member head;              // its rules match its head's values outside the key
    std::size_t members = 0;
    bool joined = false;  // a later run's elements were added: their duplicates go when it closes
  };

  // Emits the rules of an IR chain (or of chains fused into one); runs of at least kMinRun candidates of
  // one shape as merged rules. Candidates are made as the runs grow, so only one run's are held.
  void emit_chain(Chain& out, const std::string& id, const std::vector<const ir::Rule*>& rules) {
    std::size_t runs = 0;
    std::optional<OpenRun> open;
    const bool shape_only = counters_ == Counters::rule;  // the members' elements carry no stamps
    std::optional<Candidate> head = rules.empty() ? std::nullopt : candidate(*rules[0], shape_only);
    for (std::size_t i = 0; i < rules.size();) {
      std::size_t end = i + 1;
      merge::Run run;
      std::optional<Candidate> next;  // the candidate of rules[end], once made
      bool made = false;
      if (head) {
        if (head->member.stamp.empty()) head->member.stamp = stamper_.stamp(head->rule->origin);
        merge::Member first = head->member;  // the head stays whole: emit_run reads it
        run.try_add(first);
        for (; end < rules.size() && end - i < kMaxRun; ++end) {
          next = candidate(*rules[end], shape_only);
          made = true;
          if (!next || next->shape != head->shape) break;
          if (!run.try_add(next->member)) break;
          made = false;
        }
      }
      if (end - i < kMinRun ||
          !emit_run(out, id + "-" + std::to_string(runs), *head, run, rules.size() - end, open)) {
        close_run(open);
        for (std::size_t k = i; k < end; ++k) emit_rule(out, *rules[k]);
      } else {
        ++runs;
      }
      i = end;
      if (i < rules.size()) head = made ? std::move(next) : candidate(*rules[i], shape_only);
    }
    close_run(open);
  }

  // A run that joined an earlier one may repeat a key of it (the same rule written twice): the earlier
  // element is the one first match meets, so the later one goes.
  void close_run(std::optional<OpenRun>& open) {
    if (open && open->joined)
      for (const auto& joined : open->sets) {
        auto& elements = table_.sets[joined.set].elements;
        // The first element of each key met so far, in a flat hash table of 2-4 times their number (nothing
        // moves until all are marked): one pass, where sorting 50,000 keys took 8 times as long, and no
        // node per key (an unordered_set of them was 1.6 MB at the peak of a 50,000-rule apply).
        constexpr std::uint32_t kFree = std::numeric_limits<std::uint32_t>::max();
        std::vector<std::uint32_t> firsts(std::bit_ceil(elements.size() * 2), kFree);
        const std::size_t mask = firsts.size() - 1;
        auto view = [&](std::size_t k) {
          const Bytes& key = elements[k].key;
          return std::string_view(reinterpret_cast<const char*>(key.data()), key.size());
        };
        std::vector<bool> repeated(elements.size());
        for (std::size_t k = 0; k < elements.size(); ++k) {
          std::size_t slot = std::hash<std::string_view>{}(view(k)) & mask;
          while (firsts[slot] != kFree && view(firsts[slot]) != view(k)) slot = (slot + 1) & mask;
          if (firsts[slot] == kFree)
            firsts[slot] = static_cast<std::uint32_t>(k);
          else
            repeated[k] = true;
        }
        std::size_t kept = 0;
        for (std::size_t k = 0; k < elements.size(); ++k)
          if (!repeated[k]) {
            if (kept != k) elements[kept] = std::move(elements[k]);
            ++kept;
          }
        elements.resize(kept);
        // What the room reserved at the first join was not used for (the rules after the run were of
        // another form): a quarter more than the elements is kept rather than copied.
        if (joined.reserved && elements.capacity() - elements.size() > elements.size() / 4)
          elements.shrink_to_fit();
      }
    open.reset();
  }

  // One rule per family (when addresses are matched) and reject form, looking up the run's set(s).
  // False when the rules of the run do not differ at all (then they are emitted one by one). A run keyed
  // by address whose every family has one exact-key set joins the open run when that has the same form.
  bool emit_run(Chain& out, const std::string& id, const Candidate& first, const merge::Run& run,
                std::size_t rules_after, std::optional<OpenRun>& open) {
    using merge::Field;
    const auto& members = run.members();
    std::vector<Field> keyed = merge::keyed_fields(members);
    if (keyed.empty()) return false;
    const merge::Member& head = members.front();
    bool keyed_address = std::any_of(keyed.begin(), keyed.end(),
                                     [](Field f) { return f == Field::saddr || f == Field::daddr; });
    std::vector<std::optional<Family>> families{std::nullopt};
    if (head.by_address())
      families = {Family::ipv4, Family::ipv6};
    else if (first.rest().only_family != Family::any)
      families = {first.rest().only_family};
    // A family an address all rules match alike has no entries of: no rule matches it.
    auto lacks = [&](Family fam) {
      for (Field field : {Field::saddr, Field::daddr})
        if (head.has(field) && std::find(keyed.begin(), keyed.end(), field) == keyed.end() &&
            std::none_of(head.of(field).begin(), head.of(field).end(), [&](const merge::Value& v) {
              return v.lo.size == (fam == Family::ipv4 ? 4u : 16u);
            }))
          return true;
      return false;
    };
    // The sets of each family the run has entries in (of both at once when no address is keyed).
    const std::string run_file = stamper_.file_text(first.rule->origin);
    std::vector<std::pair<std::optional<Family>, std::vector<merge::RunSet>>> built;
    for (const auto& family : families) {
      if (head.by_address() && lacks(*family)) continue;
      if (!keyed_address && !built.empty()) {
        built.push_back({family, {}});  // looks up the sets built for the first family
        continue;
      }
      auto sets = merge::build_sets(members, keyed, keyed_address ? *family : Family::any, run_file,
                                    counters_ == Counters::element);
      std::erase_if(sets, [](const merge::RunSet& s) { return s.set.elements.empty(); });
      if (!sets.empty()) built.push_back({family, std::move(sets)});
    }
    const bool joinable =
        keyed_address && !built.empty() && std::all_of(built.begin(), built.end(), [](const auto& b) {
          return b.second.size() == 1 && !b.second.front().set.interval;
        });
    if (joinable && joins(open, first.shape, head, keyed, built)) {
      const std::size_t joined_members = open->members + members.size();
      for (std::size_t k = 0; k < built.size(); ++k) {
        auto& into = table_.sets[open->sets[k].set].elements;
        auto& from = built[k].second.front().set.elements;
        // A first join is likely the start of a long list of rules of one form. Room for the rest of the
        // chain, at the elements per rule seen so far, keeps the set from growing by doubling, which holds
        // the old and the new buffer at once (at 50,000 rules, the peak of the whole apply); close_run
        // gives back what was not used. Rules of many elements each (products of ports and addresses)
        // grow as before, so that a guess never asks for far more than the chain could need.
        const std::size_t joined_size = into.size() + from.size();
        const std::size_t per_rule = (joined_size + joined_members - 1) / joined_members;
        if (!open->joined && per_rule <= kReservedPerRule) {
          into.reserve(joined_size + per_rule * rules_after);
          open->sets[k].reserved = true;
        }
        into.insert(into.end(), std::make_move_iterator(from.begin()), std::make_move_iterator(from.end()));
      }
      open->members = joined_members;
      open->joined = true;
      for (std::size_t r : open->rules) out.rules[r].comment = run_comment(open->head.stamp, open->members);
      return true;
    }
    close_run(open);
    if (joinable) open = OpenRun{first.shape, keyed, {}, {}, head, members.size(), false};
    const std::string comment = run_comment(head.stamp, members.size());
    // A set the run's rules look up: its name and how the key is masked.
    struct Lookup {
      std::string name;
      std::vector<std::optional<std::size_t>> masks;
    };
    std::vector<Lookup> shared;  // the sets of both families when no address is keyed
    for (auto& [family, sets] : built) {
      Family f = keyed_address ? *family : Family::any;
      std::vector<Lookup> lookups = keyed_address ? std::vector<Lookup>{} : shared;
      if (lookups.empty()) {
        std::string base = id + (keyed_address ? (f == Family::ipv4 ? "_v4" : "_v6") : "");
        for (auto& run_set : sets) {
          run_set.set.name =
              names_.make("m-", base + (lookups.empty() ? "" : "_" + std::to_string(lookups.size())));
          if (open) open->sets.push_back({f, table_.sets.size(), run_set.masks});
          lookups.push_back({run_set.set.name, std::move(run_set.masks)});
          table_.sets.push_back(std::move(run_set.set));
        }
        if (!keyed_address) shared = lookups;
      }
      for (const auto& set : lookups) {
        for (const auto& tail : first.rest().tails) {
          Rule r;
          if (family) match_nfproto(r, *family);
          append(r, first.rest().common);
          for (std::size_t k = 0; k < merge::kFieldCount; ++k) {
            Field field = static_cast<Field>(k);
            if (head.has(field) && std::find(keyed.begin(), keyed.end(), field) == keyed.end())
              match_constant(r, field, *first.rule, first.protocols, family);
          }
          append(r, first.rest().after_addresses);
          append(r, tail.guard);  // before the lookup: an element counts only the packets its rule takes
          merge::lookup(r, keyed, set.masks, f, set.name);
          if (counters_ == Counters::rule) counter(r);  // otherwise its elements count
          append(r, tail.action);
          r.comment = comment;
          if (open) open->rules.push_back(out.rules.size());
          out.append(std::move(r));
        }
      }
    }
    return true;
  }

  // Whether a run's sets (one exact-key set per family it has entries in) can join the open run's: the
  // same shape, key and values outside the key (its rules match those as constants), the same families,
  // masks, key types and file in the sets' comment.
  bool joins(const std::optional<OpenRun>& open, const Shape& shape, const merge::Member& head,
             const std::vector<merge::Field>& keyed,
             const std::vector<std::pair<std::optional<Family>, std::vector<merge::RunSet>>>& built) const {
    if (!open || open->shape != shape || open->keyed != keyed ||
        !merge::same_outside(open->head, head, keyed) || open->sets.size() != built.size())
      return false;
    for (std::size_t k = 0; k < built.size(); ++k) {
      const merge::RunSet& run_set = built[k].second.front();
      const Set& into = table_.sets[open->sets[k].set];
      if (open->sets[k].family != *built[k].first || open->sets[k].masks != run_set.masks ||
          into.concat != run_set.set.concat || into.key_type != run_set.set.key_type ||
          into.key_len != run_set.set.key_len || into.comment != run_set.set.comment)
        return false;
    }
    return true;
  }

  // A field all rules of a run match alike, matched as the rules themselves would.
  void match_constant(Rule& r, merge::Field field, const ir::Rule& rule,
                      const std::vector<std::uint8_t>& protocols, const std::optional<Family>& family) {
    using merge::Field;
    const ir::Match& m = rule.match;
    switch (field) {
      case Field::iif:
      case Field::oif:
        match_iface(r, field == Field::iif, field == Field::iif ? *m.iif : *m.oif, false);
        break;
      case Field::l4proto:
        match_l4proto(r, protocols, false);
        break;
      case Field::saddr:
        emit_addresses(r, *family, m.src_addr, {});
        break;
      case Field::daddr:
        emit_addresses(r, *family, {}, m.dst_addr);
        break;
      case Field::sport:
        match_ports(r, true, m.src_port[0].ports, false);
        break;
      case Field::dport:
        match_ports(r, false, m.dst_port[0].ports, false);
        break;
    }
  }

  // At most `limit` bytes of text, cut before a character (not inside one's UTF-8 bytes).
  static std::string_view cut_to(std::string_view text, std::size_t limit) {
    std::size_t cut = std::min(text.size(), limit);
    while (cut > 0 && cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;
    return text.substr(0, cut);
  }

  // "<first rule's stamp> +<n - 1>", within nft's comment limit.
  static std::string run_comment(const std::string& first, std::size_t n) {
    std::string more = " +" + std::to_string(n - 1);
    return std::string(cut_to(first, kMaxComment - more.size())) + more;
  }

  // "section <name> honours allow": the name with its quotes, backslashes and control characters as _,
  // cut to nft's comment limit.
  static std::string honour_comment(std::string_view section) {
    constexpr std::string_view head = "section ", tail = " honours allow";
    std::string name;
    for (char c : section) name += (c == '"' || c == '\\' || static_cast<unsigned char>(c) < ' ') ? '_' : c;
    return std::string(head) + std::string(cut_to(name, kMaxComment - head.size() - tail.size())) +
           std::string(tail);
  }

  // A name the kernel takes (1 to 15 characters, or a prefix) that nft's text can quote: no quote,
  // backslash or control character, whatever frontend plugin made the IR. (A name no interface can have,
  // such as firewalld's "eth0:1", is written and never matches, as in firewalld.)
  static bool sendable_iface(const ir::IfacePattern& p) {
    return p.name.size() < kIfNameSize && (p.prefix || !p.name.empty()) &&
           std::none_of(p.name.begin(), p.name.end(), [](char c) {
             const auto u = static_cast<unsigned char>(c);
             return u < 0x20 || u == 0x7f || c == '"' || c == '\\';
           });
  }

  bool valid_ifaces(const std::vector<ir::IfacePattern>& patterns, const ir::Origin& origin) {
    for (const auto& p : patterns) {
      if (sendable_iface(p)) continue;
      refuse(origin, "nft backend: bad interface name '" + ir::to_string(p) + "'",
             "Linux interface names have 1 to 15 characters, none of them a quote, a backslash or a control "
             "character");
      return false;
    }
    return true;
  }

  void refuse_iface(const ir::Origin& origin) {
    refuse(origin, "nft backend: several interface patterns including a prefix (name+) in one match",
           "split the rule into one rule per interface pattern");
  }

  bool match_pkt_type(Rule& r, const std::string& type, const ir::Origin& origin) {
    static const std::map<std::string, std::pair<std::uint8_t, const char*>> kTypes = {
        {"unicast", {0, "host"}}, {"broadcast", {1, "broadcast"}}, {"multicast", {2, "multicast"}}};
    auto it = kTypes.find(type);
    if (it == kTypes.end()) {
      refuse(origin, "nft backend: unknown packet type '" + type + "'",
             "use unicast, broadcast or multicast");
      return false;
    }
    add(r, std::string("meta pkttype ") + it->second.second,
        {meta_load(NFT_META_PKTTYPE), cmp(NFT_CMP_EQ, {it->second.first})});
    return true;
  }

  bool match_limit(Rule& r, const ir::RateLimit& limit, const ir::Origin& origin) {
    static const std::map<std::string, std::uint64_t> kUnits = {
        {"second", 1}, {"minute", 60}, {"hour", 3600}, {"day", 86400}};
    auto it = kUnits.find(limit.unit);
    if (it == kUnits.end() || limit.rate == 0) {
      refuse(origin, "nft backend: bad rate limit " + std::to_string(limit.rate) + "/" + limit.unit,
             "use a positive rate per second, minute, hour or day");
      return false;
    }
    std::uint32_t burst = limit.burst ? limit.burst : 5;  // nft's default
    r.words.push_back("limit rate " + std::to_string(limit.rate) + "/" + limit.unit + " burst " +
                      std::to_string(burst) + " packets");
    r.exprs.push_back({.kind = Expr::Kind::limit, .burst = burst, .rate = limit.rate, .unit = it->second});
    return true;
  }

  static void append(Rule& to, const Rule& from) {
    std::size_t base = to.anon_sets.size();
    to.words.append(from.words);
    for (Expr e : from.exprs) {
      if (e.kind == Expr::Kind::lookup && e.text == "__set%d") e.set_id += static_cast<std::uint32_t>(base);
      to.exprs.push_back(std::move(e));
    }
    to.anon_sets.insert(to.anon_sets.end(), from.anon_sets.begin(), from.anon_sets.end());
  }

  std::vector<Tail> verdict_tails(ir::Verdict v, const std::string& reject_with, const ir::Origin& origin) {
    Tail tail;
    switch (v) {
      case ir::Verdict::accept:
        add(tail.action, "accept", {verdict(NF_ACCEPT)});
        break;
      case ir::Verdict::drop:
        add(tail.action, "drop", {verdict(NF_DROP)});
        break;
      case ir::Verdict::allow:
        set_mark(tail.action, ~kAllowMark, kAllowMark);
        add(tail.action, "accept", {verdict(NF_ACCEPT)});
        break;
      case ir::Verdict::reject:
        return reject_tails(reject_with, origin);
      case ir::Verdict::continue_:
        return {};
    }
    return {std::move(tail)};
  }

  std::vector<Tail> reject_tails(const std::string& with, const ir::Origin& origin) {
    if (in_postrouting_) {
      refuse(origin,
             "nft backend: reject in stage snat: the kernel rejects only before routing and in input, "
             "forward and output",
             "drop there, or reject in the forward or output stage");
      return {};
    }
    auto forms = reject_forms(with);
    if (!forms) {
      refuse(origin, "nft backend: unknown reject type '" + with + "'",
             "use icmp-port-unreachable, tcp-reset, icmp-host-prohibited, icmp-net-prohibited or "
             "icmp-admin-prohibited");
      return {};
    }
    std::vector<Tail> tails;
    for (const auto& form : *forms) {
      Tail tail;
      if (form.only) match_nfproto(tail.guard, *form.only);
      if (form.l4) match_l4proto(tail.guard, {*form.l4}, false);
      add(tail.action, form.text, {{.kind = Expr::Kind::reject, .key = form.type, .code = form.code}});
      tails.push_back(std::move(tail));
    }
    return tails;
  }

  void nat_port(Rule& r, const ir::PortRange& port, std::uint32_t first_reg, Expr& nat) {
    r.exprs.push_back(immediate(first_reg, be16(port.lo)));
    nat.reg_proto_min = static_cast<std::uint8_t>(first_reg);
    if (port.hi != port.lo) {
      r.exprs.push_back(immediate(first_reg + 1, be16(port.hi)));
      nat.reg_proto_max = static_cast<std::uint8_t>(first_reg + 1);
    }
    nat.code = NF_NAT_RANGE_PROTO_SPECIFIED;  // nat flags
  }
  static std::string port_text(const ir::PortRange& p) {
    return ":" + std::to_string(p.lo) + (p.hi != p.lo ? "-" + std::to_string(p.hi) : "");
  }

  std::vector<Tail> action_tails(const ir::Action& a, const ir::Match& m, const ir::Origin& origin) {
    Tail tail;
    Rule& r = tail.action;
    switch (a.kind) {
      case ir::ActionKind::accept:
        return verdict_tails(ir::Verdict::accept, {}, origin);
      case ir::ActionKind::allow:
        return verdict_tails(ir::Verdict::allow, {}, origin);
      case ir::ActionKind::drop:
        return verdict_tails(ir::Verdict::drop, {}, origin);
      case ir::ActionKind::reject:
        return reject_tails(a.reject_with, origin);
      case ir::ActionKind::log: {
        const std::string prefix = ir::kernel_log_prefix(a.log_prefix, kMaxLogPrefix);
        Expr log{.kind = Expr::Kind::log, .text = prefix};
        std::string text = "log";
        if (!prefix.empty()) text += " prefix \"" + prefix + "\"";
        if (a.log_level != 4 && a.log_level < 8) {  // warn is nft's default and is not sent
          log.has_level = true;
          log.level = a.log_level;
          text += std::string(" level ") + kLogLevels[a.log_level];
        }
        r.words.push_back(text);
        r.exprs.push_back(log);
        break;
      }
      case ir::ActionKind::pass:
        set_mark(r, ~kPassMark, kPassMark);
        add(r, "return", {verdict(NFT_RETURN)});
        break;
      case ir::ActionKind::jump: {
        auto it = chain_names_.find(a.target);
        if (it == chain_names_.end()) {
          refuse(origin, "nft backend: jump to unknown chain '" + a.target + "'",
                 "run core's verify pass first");
          return {};
        }
        add(r, "jump " + it->second, {verdict(NFT_JUMP, it->second)});
        break;
      }
      case ir::ActionKind::return_:
        add(r, "return", {verdict(NFT_RETURN)});
        break;
      case ir::ActionKind::set_mark: {
        std::uint32_t mask = a.mark_mask & ~kOwnMarks;
        set_mark(r, ~mask, a.mark_value & mask);
        break;
      }
      case ir::ActionKind::notrack:
        add(r, "notrack", {{.kind = Expr::Kind::notrack}});
        break;
      case ir::ActionKind::dnat:
      case ir::ActionKind::snat: {
        bool dnat = a.kind == ir::ActionKind::dnat;
        if (!a.nat_addr) {
          refuse(origin, std::string("nft backend: ") + (dnat ? "dnat" : "snat") + " without an address",
                 dnat ? "give an address, or use redirect for the host itself"
                      : "give an address, or use masquerade");
          return {};
        }
        bool v4 = a.nat_addr->family == Family::ipv4;
        Expr nat{.kind = Expr::Kind::nat,
                 .reg_addr = 1,
                 .key = static_cast<std::uint32_t>(dnat ? NFT_NAT_DNAT : NFT_NAT_SNAT),
                 .family = static_cast<std::uint32_t>(v4 ? NFPROTO_IPV4 : NFPROTO_IPV6)};
        r.exprs.push_back(immediate(1, addr_bytes(*a.nat_addr)));
        std::string addr = ir::to_string(*a.nat_addr);
        std::string text = std::string(dnat ? "dnat" : "snat") + (v4 ? " ip to " : " ip6 to ");
        if (a.nat_port) {
          nat_port(r, *a.nat_port, 2, nat);
          text += (v4 ? addr : "[" + addr + "]") + port_text(*a.nat_port);
        } else {
          text += addr;
        }
        r.words.push_back(text);
        r.exprs.push_back(nat);
        break;
      }
      case ir::ActionKind::redirect:
      case ir::ActionKind::masquerade: {
        bool redirect = a.kind == ir::ActionKind::redirect;
        Expr e{.kind = redirect ? Expr::Kind::redir : Expr::Kind::masq};
        std::string text = redirect ? "redirect" : "masquerade";
        if (a.nat_port) {
          nat_port(r, *a.nat_port, 1, e);
          text += " to " + port_text(*a.nat_port);
        }
        r.words.push_back(text);
        r.exprs.push_back(e);
        break;
      }
      case ir::ActionKind::ct_helper: {
        // The kernel assigns a helper only to a connection conntrack has seen and not confirmed yet.
        if (before_conntrack_) {
          refuse(origin, "nft backend: a conntrack helper can only be assigned after conntrack",
                 "assign it in prednat, dnat, input, forward, output or snat (iptables: only in "
                 "untracked-in/out)");
          return {};
        }
        auto protocol = helper_protocol(a.target, m);
        if (!protocol) {
          refuse(origin, "nft backend: conntrack helper '" + a.target + "' needs the protocol it tracks",
                 "match protocol tcp or udp in the rule");
          return {};
        }
        const CtHelper helper{"h-" + a.target + (*protocol == 17 ? "-udp" : "-tcp"), a.target, *protocol};
        if (std::find(table_.helpers.begin(), table_.helpers.end(), helper) == table_.helpers.end())
          table_.helpers.push_back(helper);
        add(r, "ct helper set \"" + helper.name + "\"",
            {{.kind = Expr::Kind::objref, .key = NFT_OBJECT_CT_HELPER, .text = helper.name}});
        break;
      }
      case ir::ActionKind::tcp_mss_clamp: {
        // SYNs (and SYN+ACKs) only; the kernel lowers the option, never raises it. The MSS option is
        // kind 2, its value 2 bytes at offset 2.
        add(r, "meta l4proto 6", {meta_load(NFT_META_L4PROTO), cmp(NFT_CMP_EQ, {6})});
        add(r, "tcp flags syn",
            {payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1),
             {.kind = Expr::Kind::bitwise, .len = 1, .data = {0x02}, .data_to = {0x00}},
             cmp(NFT_CMP_NEQ, {0x00})});
        const Expr write{.kind = Expr::Kind::exthdr_write, .key = 2, .offset = 2, .len = 2};
        if (a.mss)
          add(r, "tcp option maxseg size set " + std::to_string(a.mss), {immediate(1, be16(a.mss)), write});
        else
          add(r, "tcp option maxseg size set rt mtu",
              {{.kind = Expr::Kind::rt_load, .key = NFT_RT_TCPMSS},
               {.kind = Expr::Kind::byteorder, .offset = 2, .len = 2},
               write});
        break;
      }
    }
    return {std::move(tail)};
  }

  bool may_pass(const std::string& chain_name) {
    if (auto it = may_pass_.find(chain_name); it != may_pass_.end()) return it->second;
    may_pass_[chain_name] = false;  // cycles are refused by core; this only stops recursion
    const ir::Chain* chain = rs_.find_chain(chain_name);
    bool result = false;
    for (const auto& rule : chain ? chain->rules : std::vector<ir::Rule>{})
      result = result || rule.action.kind == ir::ActionKind::pass ||
               (rule.action.kind == ir::ActionKind::jump && may_pass(rule.action.target));
    return may_pass_[chain_name] = result;
  }

  // A verdict rule (endpoint default, group on_end) for internal chains.
  void emit_verdict(Chain& out, ir::Verdict v, const std::string& reject_with, const ir::Origin& origin) {
    for (auto& tail : verdict_tails(v, reject_with, origin)) {
      Rule r;
      append(r, tail.guard);
      counter(r);
      append(r, tail.action);
      r.comment = stamper_.stamp(origin);
      out.append(std::move(r));
    }
  }

  // A packet the host sends itself keeps its mark across lo, into the path it takes in again: where a
  // section honours the allow mark, what comes in on lo starts by clearing it, before any stage, as trace
  // starts each path without it. (Packets of other interfaces, and other programs' marks on them, are
  // left alone.)
  void emit_mark_clearing() {
    const bool honoured = std::any_of(rs_.stages.begin(), rs_.stages.end(), [](const ir::StageDef& def) {
      return std::any_of(def.sections.begin(), def.sections.end(),
                         [](const ir::Section& section) { return section.honour_allow; });
    });
    if (!honoured) return;
    Chain base{
        names_.make("", "clear-marks-lo"), Hook{"filter", NF_INET_PRE_ROUTING, kClearMarksPriority}, {}};
    Rule r;
    match_iface(r, true, {ir::IfacePattern{"lo", false}}, false);
    set_mark(r, ~kOwnMarks, 0);
    r.comment = "a path in on lo starts without the allow mark";
    base.append(std::move(r));
    table_.chains.push_back(std::move(base));
  }

  void emit_stage(ir::Stage stage) {
    const auto& sections = rs_.stage(stage).sections;
    const StagePlace& place = kStagePlaces[ir::index(stage)];
    std::string stage_name(ir::to_string(stage));
    for (std::size_t s = 0; s < sections.size(); ++s) {
      const ir::Section& section = sections[s];
      Chain base{names_.make("", stage_name + "-" + std::to_string(s)),
                 Hook{place.type, place.hook, place.priority + static_cast<std::int32_t>(s)},
                 {}};
      if (std::string_view(place.type) == "nat") {
        // A nat chain sees only packets conntrack tracks, and without a ct expression somewhere nothing
        // turns conntrack on in the namespace. Untracked packets never get here: this decides nothing.
        Rule r;
        match_ct(r, {ir::CtState::untracked}, false);
        add(r, "return", {verdict(NFT_RETURN)});
        r.comment = "turns conntrack on for this nat chain";
        base.append(std::move(r));
      }
      if (section.honour_allow) {
        Rule r;
        test_mark_bit(r, kAllowMark);
        counter(r);
        add(r, "accept", {verdict(NF_ACCEPT)});
        r.comment = honour_comment(section.name);
        base.append(std::move(r));
      }
      std::vector<Chain> endpoint_chains;
      std::vector<NamedEndpoint> by_name;  // a run of endpoints one map may dispatch
      for (const auto& ep : section.endpoints) {
        const std::size_t chain_index = endpoint_chains.size();
        std::string target =
            emit_endpoint(stage, stage_name + "-" + std::to_string(s) + "-" + ep.name, ep, endpoint_chains);
        const std::optional<bool> input = told_by_name_alone(ep);
        if (!by_name.empty() && input != by_name.front().input)
          dispatch_by_name(base, by_name, endpoint_chains);
        if (input)
          by_name.push_back({&ep, std::move(target), chain_index, *input});
        else
          emit_dispatch(base, ep, target);
      }
      dispatch_by_name(base, by_name, endpoint_chains);
      table_.chains.push_back(std::move(base));
      for (auto& chain : endpoint_chains) table_.chains.push_back(std::move(chain));
    }
  }

  struct NamedEndpoint {
    const ir::Endpoint* endpoint;
    std::string target;       // its chain
    std::size_t chain_index;  // of its chain in the section's endpoint chains
    bool input;               // told by iifname (else oifname)
  };

  // Whether the endpoint is told apart by one exact interface name and nothing else, and which: true
  // for iifname, false for oifname.
  static std::optional<bool> told_by_name_alone(const ir::Endpoint& ep) {
    const ir::EndpointMatch& m = ep.match;
    if (m.iif.has_value() == m.oif.has_value() || m.src_set || m.dst_set ||
        (m.src_mac && !m.src_mac->empty()))
      return std::nullopt;
    const ir::IfacePattern& name = m.iif ? *m.iif : *m.oif;
    if (name.prefix || !sendable_iface(name)) return std::nullopt;  // emit_dispatch refuses a bad name
    return m.iif.has_value();
  }

  // Dispatches the run with one `iifname vmap` (or `oifname vmap`) rule when it holds enough names,
  // else with a goto rule each. The map counts nothing: each endpoint chain starts by counting what the
  // map sent it, under the endpoint's origin, as its goto rule did.
  void dispatch_by_name(Chain& base, std::vector<NamedEndpoint>& run, std::vector<Chain>& endpoint_chains) {
    const bool input = !run.empty() && run.front().input;
    auto name_of = [&](const NamedEndpoint& named) -> const ir::IfacePattern& {
      return input ? *named.endpoint->match.iif : *named.endpoint->match.oif;
    };
    std::set<std::string> names;
    std::vector<const NamedEndpoint*> first_of_name;  // the first endpoint of a name takes all its packets
    for (const auto& named : run)
      if (names.insert(name_of(named).name).second) first_of_name.push_back(&named);
    if (first_of_name.size() < kMinMapDispatch) {
      for (const auto& named : run) emit_dispatch(base, *named.endpoint, named.target);
      run.clear();
      return;
    }
    Set map{.name = "__set%d", .key_type = KeyType::ifname, .key_len = kIfNameSize, .anonymous = true};
    for (const NamedEndpoint* named : first_of_name) {
      map.elements.push_back({ifname_bytes(name_of(*named))});
      map.goto_chains.push_back(named->target);
      Rule count;
      counter(count);
      count.comment = stamper_.stamp(named->endpoint->origin);
      auto& rules = endpoint_chains[named->chain_index].rules;
      rules.insert(rules.begin(), std::move(count));
    }
    Rule r;
    r.exprs.push_back(meta_load(input ? NFT_META_IIFNAME : NFT_META_OIFNAME));
    r.exprs.push_back({.kind = Expr::Kind::lookup, .dreg = NFT_REG_VERDICT, .text = map.name});
    r.words.push_back(vmap_words(input ? "iifname" : "oifname", map));
    r.comment = std::to_string(map.elements.size()) + " interface names to their endpoints";
    r.anon_sets.push_back(std::move(map));
    base.append(std::move(r));
    run.clear();
  }

  void emit_dispatch(Chain& base, const ir::Endpoint& ep, const std::string& target) {
    const ir::EndpointMatch& m = ep.match;
    if ((m.iif && !valid_ifaces({*m.iif}, ep.origin)) || (m.oif && !valid_ifaces({*m.oif}, ep.origin)))
      return;
    Rule common;
    if (m.iif) match_iface(common, true, {*m.iif}, false);
    if (m.oif) match_iface(common, false, {*m.oif}, false);
    Rule mac;
    if (m.src_mac && !m.src_mac->empty()) match_mac(mac, *m.src_mac, false);
    ir::AddrMatches src, dst;
    if (m.src_set) src.push_back({false, *m.src_set});
    if (m.dst_set) dst.push_back({false, *m.dst_set});
    for (const auto& variant : variants(Family::any, src, dst)) {
      Rule r;
      if (variant) match_nfproto(r, *variant);
      append(r, common);
      if (variant) emit_addresses(r, *variant, src, dst);
      append(r, mac);
      counter(r);
      add(r, "goto " + target, {verdict(NFT_GOTO, target)});
      r.comment = stamper_.stamp(ep.origin);
      base.append(std::move(r));
    }
  }

  // Appends the endpoint's chain and its group chains to out; returns the endpoint chain's name.
  std::string emit_endpoint(ir::Stage stage, const std::string& id, const ir::Endpoint& ep,
                            std::vector<Chain>& out) {
    Chain chain{names_.make("e-", id), {}, {}};
    std::string stamp = stamper_.stamp(ep.origin);
    if (!ir::is_untracked(stage) && ep.conntrack != ir::Conntrack::none) {
      Rule established;
      match_ct(established, {ir::CtState::established, ir::CtState::related}, false);
      counter(established);
      add(established, "accept", {verdict(NF_ACCEPT)});
      established.comment = stamp;
      chain.append(std::move(established));
      if (ep.conntrack == ir::Conntrack::accept_established_drop_invalid) {
        Rule invalid;
        match_ct(invalid, {ir::CtState::invalid}, false);
        counter(invalid);
        add(invalid, "drop", {verdict(NF_DROP)});
        invalid.comment = stamp;
        chain.append(std::move(invalid));
      }
    }
    if (!ep.failsafe_chain.empty() && jump_rule(chain, ep.failsafe_chain, ep.origin) &&
        may_pass(ep.failsafe_chain)) {
      Rule r;  // a pass outside any group means nothing: forget it before the groups run
      counter(r);
      set_mark(r, ~kPassMark, 0);
      r.comment = stamp;
      chain.append(std::move(r));
    }
    std::vector<Chain> groups;
    for (std::size_t g = 0; g < ep.groups.size(); ++g) {
      const ir::Group& group = ep.groups[g];
      Chain group_chain{names_.make("g-", id + "-" + std::to_string(g) + "-" + group.name), {}, {}};
      for (const auto& name : group.chains) {
        if (fused_tail_.contains(name)) continue;  // its rules are in the chain it was fused to
        if (!jump_rule(group_chain, name, group.origin)) continue;
        if (!may_pass(name)) continue;
        Rule r;  // pass: leave the group without its on_end
        test_mark_bit(r, kPassMark);
        set_mark(r, ~kPassMark, 0);
        counter(r);
        add(r, "return", {verdict(NFT_RETURN)});
        r.comment = stamper_.stamp(group.origin);
        group_chain.append(std::move(r));
      }
      emit_verdict(group_chain, group.on_end, group.reject_with, group.origin);
      Rule call;
      counter(call);
      add(call, "jump " + group_chain.name, {verdict(NFT_JUMP, group_chain.name)});
      call.comment = stamper_.stamp(group.origin);
      chain.append(std::move(call));
      groups.push_back(std::move(group_chain));
    }
    emit_verdict(chain, ep.default_verdict, ep.reject_with, ep.origin);
    std::string name = chain.name;
    out.push_back(std::move(chain));
    for (auto& group_chain : groups) out.push_back(std::move(group_chain));
    return name;
  }

  bool jump_rule(Chain& chain, const std::string& target, const ir::Origin& origin) {
    auto it = chain_names_.find(target);
    if (it == chain_names_.end()) {
      refuse(origin, "nft backend: unknown chain '" + target + "'", "run core's verify pass first");
      return false;
    }
    Rule r;
    counter(r);
    add(r, "jump " + it->second, {verdict(NFT_JUMP, it->second)});
    r.comment = stamper_.stamp(origin);
    chain.append(std::move(r));
    return true;
  }

  const ir::Ruleset& rs_;
  Diagnostics& diag_;
  const Counters counters_;
  Stamper stamper_;
  std::size_t refusals_ = 0;
  struct RestMemo {
    ir::Match match;
    ir::Action action;
    bool in_postrouting, before_conntrack;
    std::shared_ptr<const PreparedRest> rest;
  };
  std::optional<RestMemo> rest_memo_;  // prepare_rest's last rest
  bool quiet_ = false;  // trying a rule's merged form: its refusals are reported when it is emitted
  Table table_;
  NameAllocator names_;
  // How each of the ruleset's sets is matched, in its order, and where by name. A rule looks its sets
  // up several times: an index of small entries stays in cache where one of whole FamilySets would not
  // (50,000 sets: 8 % of a render, in cache misses, at 180 bytes each).
  std::vector<FamilySets> set_matches_;
  ir::SetIndex set_index_;
  std::map<std::string, std::string> chain_names_;
  bool in_postrouting_ = false;    // emitting for the snat stage (postrouting), where reject cannot run
  bool before_conntrack_ = false;  // emitting a chain the untracked stages use
  std::map<std::string, bool> may_pass_;
  std::map<std::string, std::vector<std::string>> fusions_;  // first chain -> the chains fused to it
  std::set<std::string> fused_tail_;                         // chains fused to an earlier one
};

// All 64 bits: an incremental apply takes a chain whose name is unchanged for unchanged, so a digest that
// collided would keep a changed chain's old rules (at 32 bits, once in about 4 billion changed chains,
// which a fleet reaches).
std::string hex16(std::uint64_t h) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// Old names to new ones; looked up by views of the words that hold the names.
using Renames = std::map<std::string, std::string, std::less<>>;

// Renames what the rule refers to, its expressions in place and its statements anew where a name in them
// changed: a name `renamed` does not hold stays as it is.
void rename_references(Rule& rule, const Renames& renamed) {
  auto rename = [&](std::string& text, std::size_t name_at) {
    if (auto it = renamed.find(std::string_view(text).substr(name_at)); it != renamed.end())
      text.replace(name_at, std::string::npos, it->second);
  };
  for (auto& e : rule.exprs)
    if (e.kind == Expr::Kind::verdict || (e.kind == Expr::Kind::lookup && e.text != "__set%d"))
      if (auto it = renamed.find(std::string_view(e.text)); it != renamed.end()) e.text = it->second;
  const Set* map = nullptr;  // a verdict map's rule has only it (dispatch_by_name)
  for (auto& set : rule.anon_sets)
    if (!set.goto_chains.empty()) {
      for (auto& chain : set.goto_chains) rename(chain, 0);
      map = &set;
    }
  // A statement is copied only where it names something renamed (every rule comes here twice).
  auto renamed_at = [&](std::string_view word, std::size_t name_at) -> std::optional<std::string> {
    auto it = renamed.find(word.substr(name_at));
    if (it == renamed.end()) return std::nullopt;
    return std::string(word.substr(0, name_at)) + it->second;
  };
  Words renamed_words;
  bool changed = false;
  rule.words.each([&](std::string_view word) {
    std::optional<std::string> now;
    if (word.starts_with("jump ") || word.starts_with("goto "))
      now = renamed_at(word, 5);
    else if (std::size_t vmap = map ? word.find(" vmap { ") : std::string::npos; vmap != std::string::npos)
      now = vmap_words(std::string(word.substr(0, vmap)), *map);
    else if (auto at = word.find(" @"); at != std::string::npos)
      now = renamed_at(word, at + 2);
    changed = changed || (now && *now != word);
    renamed_words.push_back(now ? std::string_view(*now) : word);
  });
  if (!changed) return;
  renamed_words.shrink_to_fit();
  rule.words = std::move(renamed_words);
}

// Every chain gets a name ending in a digest of its content, every set one ending in a digest of its
// declaration (with the size of a named hash set); a set's elements are summed up in Set::content. A chain's
// digest covers its own rules, with the sets they look up and the chains they jump to under their final and
// stable names: a changed chain changes its own name only. An incremental apply then adds the new sets,
// patches the elements of the changed ones, renames a changed chain in place and refills it (whoever jumps to
// it follows the rename), and deletes what is gone.
void content_address(Table& table) {
  Renames renamed;
  for (auto& set : table.sets) {
    if (!set.anonymous && !set.interval && set.goto_chains.empty())
      set.size = hash_set_size(set.elements.size());
    std::string declaration = std::to_string(static_cast<std::uint32_t>(set.key_type));
    for (auto type : set.concat) declaration += "." + std::to_string(static_cast<std::uint32_t>(type));
    if (set.size) declaration += " size " + std::to_string(set.size);
    if (set.interval) declaration += " interval";
    if (set.counters) declaration += " counter";
    if (!set.comment.empty()) declaration += " comment " + set.comment;
    renamed[set.name] = set.name + "." + hex16(fnv1a(declaration));
    set.name = renamed[set.name];
    set.content = 0;
    for (const auto& element : set.elements) set.content += element_digest(element);
  }
  Renames chains;
  for (auto& chain : table.chains) {
    std::string content;
    if (chain.hook)
      content = chain.hook->type + " " + std::to_string(chain.hook->hooknum) + " " +
                std::to_string(chain.hook->priority) + "\n";
    for (auto& rule : chain.rules) {
      rename_references(rule, renamed);
      rule.append_text(content);
      content += '\n';
    }
    chains[chain.name] = chain.name + "." + hex16(fnv1a(content));
  }
  for (auto& chain : table.chains) {
    chain.name = chains[chain.name];
    for (auto& rule : chain.rules) rename_references(rule, chains);
  }
}

}  // namespace

Table translate(const ir::Ruleset& ruleset, Diagnostics& diag, Counters counters) {
  return Translator(ruleset, diag, counters).run();
}

}  // namespace fwe::nft
