// writer.hpp - writes a ruleset in our plain-YAML policy format (`fwengine migrate --to yaml`).
#pragma once

#include <optional>
#include <string>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::yamlfe {

// The policy as one YAML document that reads back to a ruleset with the same canonical hash, with a
// comment on every chain, rule and endpoint naming where it came from. Reports what the format cannot
// say (e.g. a set name that looks like an address) and returns nullopt then.
std::optional<std::string> write_policy(const ir::Ruleset& ruleset, Diagnostics& diag);

}  // namespace fwe::yamlfe
