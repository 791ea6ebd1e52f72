// fwengine/passes.hpp - core passes between a frontend's ruleset and a backend.
#pragma once

#include <string>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe {
struct Capabilities;
}

namespace fwe::passes {

// Sorts and merges every set's CIDRs (no overlaps, adjacent ranges joined) and every port set.
void normalise(ir::Ruleset&);
// Checks references: every set, chain, jump target exists; no jump cycles; actions in stages where they
// make sense (NAT only in dnat/snat, notrack only untracked). Errors point at the rule's origin.
void verify(const ir::Ruleset&, Diagnostics&);
// Builds the failsafe chains from ruleset.failsafe and attaches them to every endpoint with failsafe.
void inject_failsafe(ir::Ruleset&);
// Merges identical sets, removes chains and sets nothing refers to.
void optimise(ir::Ruleset&);
// Refuses what the backend cannot do, naming the rule's origin.
void check_capabilities(const ir::Ruleset&, const Capabilities&, const std::string& backend, Diagnostics&);
// All of the above in order, as `fwengine` runs them (capabilities only when given).
void run_all(ir::Ruleset&, Diagnostics&);

}  // namespace fwe::passes
