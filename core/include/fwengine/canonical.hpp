// fwengine/canonical.hpp - the IR's canonical JSON/YAML form and its stable hash.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::canonical {

// The canonical JSON text: compact, keys in byte order; equal to nlohmann::json's dump() of to_json().
std::string to_text(const ir::Ruleset&, bool with_origins);
// The canonical JSON document. with_origins adds file:line:col and policy to every rule; the hash
// never includes origins, file names or the frontend's name: equal policy gives an equal hash.
nlohmann::json to_json(const ir::Ruleset&, bool with_origins);
std::string to_yaml(const ir::Ruleset&, bool with_origins);
// Hex SHA-256 of the canonical JSON without origins.
std::string hash(const ir::Ruleset&);

}  // namespace fwe::canonical
