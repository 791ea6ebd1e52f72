// direct.hpp - the iptables arguments of a direct.xml <rule> as an IR rule (docs/firewalld.md, "Direct
// rules"): the matches and targets people write there; anything else is reported, never guessed.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "fwengine/ir.hpp"

namespace fwe::firewalld {

// -s / -d: a comma-separated list of networks, possibly negated (then none of them).
struct DirectAddresses {
  std::vector<ir::Cidr> cidrs;
  bool negate = false;
};

struct DirectRuleIr {
  ir::Rule rule;  // without address matches (they need named sets) and without origin
  std::optional<DirectAddresses> source, destination;
};

// The rule for `args` of family ipv4 or ipv6 (iptables or ip6tables); a target that is not a built-in
// one is a jump to that chain. Or a sentence saying what is not understood.
std::variant<DirectRuleIr, std::string> parse_direct_args(const std::string& args, ir::Family family);

}  // namespace fwe::firewalld
