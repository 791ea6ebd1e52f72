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
constexpr std::array<std::string_view, 8> kLogLevels{"emerg", "alert",  "crit", "err",
                                                     "warn",  "notice", "info", "debug"};
}  // namespace

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

bool excludes_protocol(const ir::Match& match, std::uint8_t number) {
  if (!match.protocols) return false;
  const bool listed =
      std::find(match.protocols->begin(), match.protocols->end(), number) != match.protocols->end();
  return listed == match.protocol_negate;
}

}  // namespace fwe::yamlfe
