// netlink.hpp - talking to nf_tables through libmnl/libnftnl: one atomic batch per change, every
// message acknowledged, kernel errors (with extended ACK) mapped back to the rule's origin stamp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model.hpp"

namespace fwe::nft {

// Replaces table inet fwengine with `table` in one transaction (add, delete, add, then sets, chains,
// rules). Retries when another writer changed the ruleset meanwhile (generation id). On refusal nothing
// is applied and fwe::RuntimeError names the origin of what the kernel refused. A non-empty marker
// names one more, empty, chain: the stamp of this apply (see NftBackend::apply).
void apply_table(const Table& table, const std::string& marker = {});

// The same end state in one transaction that only touches what differs from the kernel. Set and chain
// names end in a digest of their content (a chain's digest leaves out the digests of the chains it
// jumps to), so it adds the new sets, deletes what is gone, and a chain whose content changed is
// renamed in place (callers jump to it by reference, so none of them changes) and refilled. Unchanged
// chains keep their counters. Replaces the whole table when ours is absent.
void apply_table_incremental(const Table& table, const std::string& marker = {});

// Deletes table inet fwengine if it exists; nothing else.
void delete_table();

struct ListedRule {
  std::string chain;
  std::int32_t index = 0;  // position inside its chain
  std::string comment;
  bool counted = false;  // has a counter expression
  std::uint64_t packets = 0, bytes = 0;
  std::vector<std::string> lookups;  // named sets it looks up
};
struct ListedElement {  // an element of a set with counters (a merged run)
  std::string set;
  std::string comment;
  std::uint64_t packets = 0, bytes = 0;
};
struct ListedChain {
  std::string name;
  std::uint64_t handle = 0;
  std::optional<Hook> hook;
};
struct Listing {
  bool present = false;
  std::vector<ListedChain> chains;  // in the kernel's order
  std::vector<std::string> sets;    // names; anonymous sets left out
  std::vector<std::string> counted_sets;
  std::vector<ListedRule> rules;
  std::vector<ListedElement> elements;  // of counted_sets, interval end markers left out
};
Listing list_table();

// The digest of every rule's chain and origin stamp (and every counted element's set and stamp),
// stamped into the marker chain's name at apply: what read-back compares to find drift.
std::string rules_digest(std::vector<std::pair<std::string, std::string>> chain_and_comment,
                         const std::vector<std::pair<std::string, std::string>>& set_and_comment);

// libnftnl's text of one rule's expressions (the `nft --debug=netlink` form), for golden tests.
std::string bytecode(const Rule& rule, const std::string& chain);

}  // namespace fwe::nft
