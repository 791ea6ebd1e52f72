// policy_format.cpp - names and small tables of our YAML format.
#include "policy_format.hpp"

#include <algorithm>
#include <array>

namespace fwe::yamlfe {

std::string inline_set_name(std::string_view owner, std::string_view side, std::size_t position) {
  std::string name = std::string(owner) + "." + std::string(side);
  if (position > 0) name += "." + std::to_string(position);
  return name;
}

std::string rule_owner(std::string_view chain, std::size_t rule) {
  return std::string(chain) + "." + std::to_string(rule);
}

std::string endpoint_owner(ir::Stage stage, std::size_t section, std::size_t endpoint) {
  return std::string(ir::to_string(stage)) + "." + std::to_string(section) + "." + std::to_string(endpoint);
}

bool looks_like_address(std::string_view text) {
  auto address_char = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.' ||
           c == ':' || c == '/';
  };
  return !text.empty() && std::all_of(text.begin(), text.end(), address_char) &&
         std::any_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         text.find_first_of(".:/") != std::string_view::npos;
}

bool valid_set_name(std::string_view name) {
  return !name.empty() && name.front() != '!' && !looks_like_address(name) && !ir::parse_cidr(name, false);
}

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

constexpr std::array<std::string_view, 8> kLogLevels{"emerg", "alert",  "crit", "err",
                                                     "warn",  "notice", "info", "debug"};
}  // namespace

std::optional<std::uint8_t> parse_icmp_type(std::string_view name, bool v6) {
  return v6 ? find_type(kIcmpv6Types, name) : find_type(kIcmpTypes, name);
}

std::optional<std::string_view> icmp_type_name(std::uint8_t type, bool v6) {
  return v6 ? find_name(kIcmpv6Types, type) : find_name(kIcmpTypes, type);
}

std::vector<std::string_view> icmp_type_names(bool v6) {
  return v6 ? all_names(kIcmpv6Types) : all_names(kIcmpTypes);
}

std::optional<std::uint8_t> parse_log_level(std::string_view name) {
  auto it = std::find(kLogLevels.begin(), kLogLevels.end(), name);
  if (it == kLogLevels.end()) return std::nullopt;
  return static_cast<std::uint8_t>(it - kLogLevels.begin());
}

std::string_view log_level_name(std::uint8_t level) {
  return level < kLogLevels.size() ? kLogLevels[level] : "";
}

std::vector<std::string_view> log_level_names() {
  return {kLogLevels.begin(), kLogLevels.end()};
}

const std::vector<std::string_view>& pkt_type_names() {
  static const std::vector<std::string_view> names{"unicast", "broadcast", "multicast"};
  return names;
}

const std::vector<std::string_view>& rate_unit_names() {
  static const std::vector<std::string_view> names{"second", "minute", "hour", "day"};
  return names;
}

const std::vector<std::string_view>& reject_with_names() {
  static const std::vector<std::string_view> names{
      "icmp-port-unreachable", "icmp-net-unreachable",   "icmp-host-unreachable",  "icmp-proto-unreachable",
      "icmp-net-prohibited",   "icmp-host-prohibited",   "icmp-admin-prohibited",  "icmp6-no-route",
      "icmp6-adm-prohibited",  "icmp6-addr-unreachable", "icmp6-port-unreachable", "tcp-reset"};
  return names;
}

}  // namespace fwe::yamlfe
