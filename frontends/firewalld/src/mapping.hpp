// mapping.hpp - a loaded firewalld configuration (model.hpp) expressed in the IR, so that every backend
// enforces the verdicts firewalld would. How each piece maps, and every compat choice: docs/firewalld.md.
#pragma once

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"
#include "model.hpp"

namespace fwe::firewalld {

// Reports what the IR cannot carry (warnings, with the location) and what it refuses (errors).
ir::Ruleset to_ir(const Config& config, Diagnostics& diag);

}  // namespace fwe::firewalld
