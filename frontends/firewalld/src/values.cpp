// values.cpp - firewalld's checks, as facts: inet_pton for addresses, getservbyname/getprotobyname for
// names, Python's integer syntax.
#include "values.hpp"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <map>
#include <vector>

namespace fwe::firewalld {
namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// firewalld's getPortID: a number (too big -> -2) or a service name (unknown -> -1).
long port_id(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  if (all_digits(text)) {
    if (text.size() > 6) return -2;
    const long id = std::stol(std::string(text));
    return id > 65535 ? -2 : id;
  }
  if (text.empty()) return -1;
  const servent* entry = getservbyname(std::string(text).c_str(), nullptr);
  return entry ? ntohs(static_cast<std::uint16_t>(entry->s_port)) : -1;
}

ir::PortRange ordered(long a, long b) {
  return {static_cast<std::uint16_t>(std::min(a, b)), static_cast<std::uint16_t>(std::max(a, b))};
}

std::string join(const std::vector<std::string_view>& parts, std::size_t from, std::size_t to) {
  std::string out;
  for (std::size_t i = from; i < to; ++i) {
    if (i > from) out += '-';
    out += parts[i];
  }
  return out;
}

std::optional<std::uint8_t> prefix_of_mask(const ir::IpAddr& mask) {
  std::uint32_t bits = 0;
  for (int i = 0; i < 4; ++i) bits = (bits << 8) | mask.bytes[i];
  const int ones = std::countl_one(bits);
  if (ones < 32 && (bits << ones) != 0) return std::nullopt;  // not contiguous
  return static_cast<std::uint8_t>(ones);
}

}  // namespace

std::optional<ir::PortRange> parse_port_range(std::string_view text) {
  if (all_digits(text)) {
    const long id = port_id(text);
    if (id < 0) return std::nullopt;
    return ir::PortRange{static_cast<std::uint16_t>(id), static_cast<std::uint16_t>(id)};
  }
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t dash = text.find('-', start);
    parts.push_back(
        text.substr(start, dash == std::string_view::npos ? std::string_view::npos : dash - start));
    if (dash == std::string_view::npos) break;
    start = dash + 1;
  }
  if (parts.size() == 2 && all_digits(parts[0]) && all_digits(parts[1])) {
    const long a = port_id(parts[0]), b = port_id(parts[1]);
    if (a >= 0 && b >= 0) return ordered(a, b);
  }
  // Names may contain '-': try every split point, and accept only an unambiguous match.
  std::vector<ir::PortRange> matched;
  for (std::size_t i = parts.size(); i >= 1; --i) {
    const long a = port_id(join(parts, 0, i));
    const std::string second = join(parts, i, parts.size());
    if (!second.empty()) {
      const long b = port_id(second);
      if (a >= 0 && b >= 0) matched.push_back(ordered(a, b));
    } else if (a >= 0) {
      matched.push_back(ordered(a, a));
      break;  // the whole text is one name
    }
  }
  if (matched.size() != 1) return std::nullopt;
  return matched.front();
}

bool is_port_protocol(std::string_view name) {
  return name == "tcp" || name == "udp" || name == "sctp" || name == "dccp";
}

std::optional<std::uint8_t> parse_protocol_value(std::string_view text) {
  if (auto number = parse_signed(text)) {
    if (*number < 0 || *number > 255) return std::nullopt;
    return static_cast<std::uint8_t>(*number);
  }
  if (text.empty()) return std::nullopt;
  const protoent* entry = getprotobyname(std::string(text).c_str());
  if (!entry) return std::nullopt;
  return static_cast<std::uint8_t>(entry->p_proto);
}

std::optional<ir::IpAddr> parse_single_address(std::string_view text, Family family) {
  const std::string s(text);
  ir::IpAddr ip;
  if (family != Family::ipv6 && inet_pton(AF_INET, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = ir::Family::ipv4;
    return ip;
  }
  std::string v6 = s;  // firewalld strips URL-style brackets
  while (!v6.empty() && (v6.front() == '[' || v6.front() == ']')) v6.erase(0, 1);
  while (!v6.empty() && (v6.back() == '[' || v6.back() == ']')) v6.pop_back();
  if (family != Family::ipv4 && inet_pton(AF_INET6, v6.c_str(), ip.bytes.data()) == 1) {
    ip.family = ir::Family::ipv6;
    return ip;
  }
  return std::nullopt;
}

std::optional<ir::Cidr> parse_address(std::string_view text, Family family) {
  const std::size_t slash = text.find('/');
  const std::string_view addr_text = text.substr(0, slash);
  if (addr_text.empty()) return std::nullopt;
  auto addr = parse_single_address(addr_text, family);
  if (!addr) return std::nullopt;
  std::uint8_t prefix = addr->family == ir::Family::ipv4 ? 32 : 128;
  if (slash != std::string_view::npos) {
    const std::string_view mask = text.substr(slash + 1);
    if (mask.empty()) return std::nullopt;
    if (addr->family == ir::Family::ipv4 && mask.find('.') != std::string_view::npos) {
      auto dotted = parse_single_address(mask, Family::ipv4);
      if (!dotted) return std::nullopt;
      auto bits = prefix_of_mask(*dotted);
      if (!bits) return std::nullopt;
      prefix = *bits;
    } else {
      auto bits = parse_signed(mask);
      if (!bits || *bits < 0 || *bits > prefix) return std::nullopt;
      prefix = static_cast<std::uint8_t>(*bits);
    }
  }
  return ir::parse_cidr(ir::to_string(*addr) + "/" + std::to_string(prefix), /*strict=*/false);
}

std::optional<std::vector<ir::Cidr>> parse_address_range(std::string_view text, Family family) {
  const std::size_t dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto first = parse_single_address(text.substr(0, dash), family);
  const auto last =
      first ? parse_single_address(text.substr(dash + 1),
                                   first->family == ir::Family::ipv4 ? Family::ipv4 : Family::ipv6)
            : std::nullopt;
  if (!last || *last < *first) return std::nullopt;
  __extension__ typedef unsigned __int128 u128;
  const unsigned width = static_cast<unsigned>(first->width());
  auto value = [&](const ir::IpAddr& a) {
    u128 v = 0;
    for (unsigned i = 0; i < width / 8; ++i) v = (v << 8) | a.bytes[i];
    return v;
  };
  auto ones = [](unsigned bits) { return bits >= 128 ? ~u128{0} : (u128{1} << bits) - 1; };
  u128 lo = value(*first);
  const u128 hi = value(*last);
  std::vector<ir::Cidr> out;
  for (;;) {
    // The largest block that starts at lo (aligned) and ends at or before hi.
    unsigned host_bits = 0;
    while (host_bits < width && ((lo >> host_bits) & 1) == 0 && hi - lo >= ones(host_bits + 1)) ++host_bits;
    ir::Cidr cidr;
    cidr.addr.family = first->family;
    for (unsigned i = 0; i < width / 8; ++i)
      cidr.addr.bytes[i] = static_cast<std::uint8_t>(lo >> (width - 8 * (i + 1)));
    cidr.prefix = static_cast<std::uint8_t>(width - host_bits);
    out.push_back(cidr);
    const u128 block_last = lo + ones(host_bits);
    if (block_last >= hi) break;
    lo = block_last + 1;
  }
  return out;
}

std::optional<ir::MacAddr> parse_mac_address(std::string_view text) {
  if (text.size() != 17) return std::nullopt;
  for (std::size_t i = 0; i < 17; ++i) {
    const bool colon = i % 3 == 2;
    if (colon ? text[i] != ':' : !std::isxdigit(static_cast<unsigned char>(text[i]))) return std::nullopt;
  }
  return ir::parse_mac(text);
}

bool is_valid_interface(std::string_view name) {
  return !name.empty() && name.size() <= 16 && name.find_first_of(" /!*") == std::string_view::npos;
}

std::optional<std::uint64_t> parse_unsigned(std::string_view text, std::uint64_t max) {
  int base = 10;
  if (text.size() > 2 && text[0] == '0') {
    const char kind = static_cast<char>(std::tolower(static_cast<unsigned char>(text[1])));
    base = kind == 'x' ? 16 : kind == 'o' ? 8 : kind == 'b' ? 2 : 10;
    if (base != 10) text.remove_prefix(2);
  }
  if (text.empty() || text.size() > 64) return std::nullopt;
  if (base == 10 && text.size() > 1 && text[0] == '0') return std::nullopt;  // Python refuses "010"
  std::uint64_t value = 0;
  for (const char c : text) {
    const int digit = std::isdigit(static_cast<unsigned char>(c))    ? c - '0'
                      : std::isxdigit(static_cast<unsigned char>(c)) ? std::tolower(c) - 'a' + 10
                                                                     : 99;
    if (digit >= base) return std::nullopt;
    value = value * static_cast<std::uint64_t>(base) + static_cast<std::uint64_t>(digit);
    if (value > max) return std::nullopt;
  }
  return value;
}

std::optional<std::int64_t> parse_signed(std::string_view text) {
  bool negative = false;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    negative = text[0] == '-';
    text.remove_prefix(1);
  }
  if (!all_digits(text) || text.size() > 12) return std::nullopt;
  const std::int64_t value = std::stoll(std::string(text));
  return negative ? -value : value;
}

bool is_valid_name(std::string_view name, std::string_view extra_chars, std::size_t max_length) {
  if (name.empty() || name.size() > max_length) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || extra_chars.find(c) != std::string_view::npos;
  });
}

std::optional<std::string> reject_type(std::string_view type, ir::Family family) {
  if (type.empty()) return "icmp-port-unreachable";
  if (type == "port-unreach")
    return family == ir::Family::ipv6 ? "icmp6-port-unreachable" : "icmp-port-unreachable";
  static const std::map<std::string_view, std::string_view> names = {
      {"icmp-host-prohibited", "icmp-host-prohibited"},
      {"host-prohib", "icmp-host-prohibited"},
      {"icmp-net-prohibited", "icmp-net-prohibited"},
      {"net-prohib", "icmp-net-prohibited"},
      {"icmp-admin-prohibited", "icmp-admin-prohibited"},
      {"admin-prohib", "icmp-admin-prohibited"},
      {"icmp-net-unreachable", "icmp-net-unreachable"},
      {"net-unreach", "icmp-net-unreachable"},
      {"icmp-host-unreachable", "icmp-host-unreachable"},
      {"host-unreach", "icmp-host-unreachable"},
      {"icmp-port-unreachable", "icmp-port-unreachable"},
      {"icmp-proto-unreachable", "icmp-proto-unreachable"},
      {"proto-unreach", "icmp-proto-unreachable"},
      {"icmp6-adm-prohibited", "icmp6-adm-prohibited"},
      {"adm-prohibited", "icmp6-adm-prohibited"},
      {"icmp6-no-route", "icmp6-no-route"},
      {"no-route", "icmp6-no-route"},
      {"icmp6-addr-unreachable", "icmp6-addr-unreachable"},
      {"addr-unreach", "icmp6-addr-unreachable"},
      {"icmp6-port-unreachable", "icmp6-port-unreachable"},
      {"tcp-reset", "tcp-reset"},
      {"tcp-rst", "tcp-reset"},
  };
  auto it = names.find(type);
  if (it == names.end()) return std::nullopt;
  return std::string(it->second);
}

}  // namespace fwe::firewalld
