// kernel.hpp - the iptables-legacy and ipset tools: run them, read their output, move the kernel from
// what it holds to what a model wants, and back when a step fails.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fwengine/plugin.hpp"
#include "ipset.hpp"
#include "model.hpp"

namespace fwe::iptables {

struct ToolResult {
  int status = 0;  // exit status; -1 when the tool could not be started or was killed
  std::string out, err;
};
// Runs argv[0] (looked up in PATH) with input on its stdin; no shell is involved.
ToolResult run_tool(const std::vector<std::string>& argv, std::string_view input = {});

// ---- what iptables-legacy-save shows of ours ------------------------------------------------------
struct KernelRule {
  std::string spec;  // what follows "-A <chain> "
  std::uint64_t packets = 0, bytes = 0;
};
struct KernelChain {
  std::string name;
  std::vector<KernelRule> rules;
};
// A rule of a built-in chain that jumps into one of ours.
struct KernelHook {
  std::string builtin;
  std::size_t position = 0;  // 1-based, among the built-in chain's rules
  std::string spec;
  std::string target;
};
struct KernelTable {
  std::string name;
  std::vector<KernelChain> chains;  // fwe- chains only
  std::vector<KernelHook> hooks;
  const KernelChain* find(std::string_view chain) const;
};
// Tables holding something of ours; counters are read when the text has them (save -c).
std::vector<KernelTable> parse_save(std::string_view text);
// The same state as a model, to go back to it.
std::vector<TableDef> to_defs(const std::vector<KernelTable>& tables);
// iptables-restore --noflush input that turns `now` into `want` and touches nothing else: changed chains
// redeclared (which flushes them) and filled, hooks inserted at the top or removed, chains no longer
// wanted flushed and deleted. Unless full, chains whose rule stamps all match are left alone. Empty
// when nothing has to change. A chain of `carried` (by table, chain name and rule count) gives each of
// its rules its counters, written as `[packets:bytes]` for iptables-restore --counters.
std::string transition(const std::vector<KernelTable>& now, const std::vector<TableDef>& want, bool full,
                       const std::vector<KernelTable>& carried = {});

// A digest of every table the kernel holds in the calling thread's namespace (both families), without
// their counters: it changes with any rule, chain or policy anyone changes. Empty when a table could not
// be read or, given `ours` (by IpFamily, in their slot), the tables do not hold them as an apply loads
// them: our chains with their rules (by comment) and no others of ours, our hooks first in their chains.
std::string tables_fingerprint(const std::array<std::vector<TableDef>, 2>* ours = nullptr);

// ---- operations -------------------------------------------------------------------------------------
// What changes at one instant when an apply changes more than one table or set of a family.
enum class Atomicity : std::uint8_t {
  ruleset,  // the whole ruleset is loaded into the other slot and switched on at once
  table,    // each table's COMMIT (and each set's change) is all or nothing, in turn, where they are:
            // unchanged chains are not rewritten, as in Felix's per-table restores
};
// state_dir (empty: none) keeps the record of the sets' members (applied.hpp) between applies.
void apply_model(const Model& model, std::string_view ir_hash, bool full, const std::string& state_dir = {},
                 Atomicity atomicity = Atomicity::ruleset);
void flush_all();
KernelState read_kernel();

}  // namespace fwe::iptables
