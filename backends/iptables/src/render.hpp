// render.hpp - IR -> iptables model (Felix-like layout; see render.cpp for the chain structure).
#pragma once

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"
#include "model.hpp"

namespace fwe::iptables {

// The LOG target keeps this many characters of a log prefix.
inline constexpr std::size_t kMaxLogPrefix = 29;

// Translates a final, verified ruleset for both families, or (without ipv6, for a kernel that has no
// IPv6) for IPv4 alone. What iptables cannot express is reported through diag at the rule's origin; the
// model is then incomplete and must not be loaded.
Model render(const ir::Ruleset& ruleset, Diagnostics& diag, bool ipv6 = true);

// The text `fwengine render` prints: the ipset input, then each family's iptables-restore input.
std::string plan_text(const Model& model, std::string_view ir_hash);

}  // namespace fwe::iptables
