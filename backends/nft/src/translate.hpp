// translate.hpp - IR ruleset -> nftables object model (docs/ir.md realised in one `inet` table).
//
// Layout: each section of a stage is its own base chain (stage priority + section index), so an
// nft `accept` ends only that section and the next section still sees the packet, exactly as the IR's
// "verdict replaces the stage result" (accept and continue both let the packet go on in nftables).
// A base chain `goto`s the chain of the first endpoint whose classifier matches; the endpoint chain
// runs the conntrack prelude, the failsafe chain, one chain per group and the default verdict. A group
// chain jumps its IR chains in order and ends with on_end. `allow` sets kAllowMark; `pass` sets
// kPassMark and returns, every caller returns while it is set and the group chain clears it.
#pragma once

#include <string>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"
#include "model.hpp"

namespace fwe::nft {

inline constexpr std::size_t kMaxLogPrefix = 127;  // NF_LOG_PREFIXLEN less its terminating zero

// How hits are counted in a merged run's set: per element, so per source rule (the default), or only by
// the merged rule (--backend-option counters=rule). A counted element costs the kernel 16 bytes per
// possible CPU more (its per-CPU counter, plus accounting) and moves it to a larger allocation: 168
// instead of 72 bytes on a 2-CPU host, over 1 KiB on a 64-CPU one.
enum class Counters { element, rule };

// Refusals (what nftables cannot express this way) go to diag with the rule's origin.
Table translate(const ir::Ruleset& ruleset, Diagnostics& diag, Counters counters = Counters::element);

}  // namespace fwe::nft
