// policy_format.hpp - the few facts about our YAML format that both the reader and the writer must agree on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fwengine/ir.hpp"

namespace fwe::yamlfe {

inline constexpr std::string_view kApiVersion = "fwengine/v1";

// An inline address list (`src: [10.0.0.0/8]`) becomes a set with a name derived from where it stands,
// so that writing a ruleset can put the same list back in the same place and reading it again gives the
// same IR. `position` counts the matches of one side of a rule (`all: [...]`).
std::string inline_set_name(std::string_view owner, std::string_view side, std::size_t position);
// `owner` for a rule's inline sets: "<chain>.<rule index>".
std::string rule_owner(std::string_view chain, std::size_t rule);
// `owner` for an endpoint's inline sets: "<stage>.<section index>.<endpoint index>".
std::string endpoint_owner(ir::Stage stage, std::size_t section, std::size_t endpoint);

// A word written where a set name or an address may stand is an address when it looks like one, so set
// names must not look like addresses (digits, dots, colons and slashes only).
bool looks_like_address(std::string_view text);
// Set names are any text that does not look like an address and does not start with '!'.
bool valid_set_name(std::string_view name);

// ICMP and ICMPv6 type names as nftables writes them (the engine's, also for trace --icmp-type).
using ir::icmp_type_name;
using ir::icmp_type_names;
using ir::parse_icmp_type;

// Syslog levels for `action: log`.
std::optional<std::uint8_t> parse_log_level(std::string_view name);
std::string_view log_level_name(std::uint8_t level);
std::vector<std::string_view> log_level_names();

// Whether the rule's protocol match leaves `number` out: a rule with icmp needs icmp in it, a tcp-reset
// reply tcp.
bool excludes_protocol(const ir::Match& match, std::uint8_t number);

// Values the IR keeps as open strings but we check: packet types, rate units and reject replies.
const std::vector<std::string_view>& pkt_type_names();
const std::vector<std::string_view>& rate_unit_names();
const std::vector<std::string_view>& reject_with_names();

}  // namespace fwe::yamlfe
