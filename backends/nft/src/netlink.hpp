// netlink.hpp - talking to nf_tables through libmnl/libnftnl: one atomic batch per change, every
// message acknowledged, kernel errors (with extended ACK) mapped back to the rule's origin stamp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model.hpp"

namespace fwe::nft {

// Replaces table inet fwengine with `table` in one transaction (add, delete, add, then sets, chains,
// rules). Retries when another writer changed the ruleset meanwhile (generation id). On refusal nothing
// is applied and fwe::RuntimeError names the origin of what the kernel refused. A non-empty marker
// names one more, empty, chain: the stamp of this apply (see NftBackend::apply).
void apply_table(const Table& table, const std::string& marker = {});

// The same end state in one transaction that only touches what differs from the kernel: sets and
// regular chains are content-addressed (their names carry a digest of what they hold), so it adds the
// new ones, refills the base chains and deletes what is gone. Unchanged chains keep their counters.
// Replaces the whole table when ours is absent.
void apply_table_incremental(const Table& table, const std::string& marker = {});

// Deletes table inet fwengine if it exists; nothing else.
void delete_table();

struct ListedRule {
  std::string chain;
  std::int32_t index = 0;  // position inside its chain
  std::string comment;
  std::uint64_t packets = 0, bytes = 0;
};
struct Listing {
  bool present = false;
  std::vector<std::string> chains, sets;  // names, in the kernel's order; anonymous sets left out
  std::vector<ListedRule> rules;
};
Listing list_table();

// The digest of every rule's chain and origin stamp, stamped into the marker chain's name at apply:
// what read-back compares to find drift.
std::string rules_digest(std::vector<std::pair<std::string, std::string>> chain_and_comment);

// libnftnl's text of one rule's expressions (the `nft --debug=netlink` form), for golden tests.
std::string bytecode(const Rule& rule, const std::string& chain);

}  // namespace fwe::nft
