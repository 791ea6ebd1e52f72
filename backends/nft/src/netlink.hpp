// netlink.hpp - talking to nf_tables through libmnl/libnftnl: one atomic batch per change, every
// message acknowledged, kernel errors (with extended ACK) mapped back to the rule's origin stamp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "applied.hpp"
#include "model.hpp"
#include "positions.hpp"

namespace fwe::nft {

class Socket;

// A netlink socket to nf_tables, kept across calls. The last release of one after a commit waits until
// the kernel has freed what the commit replaced (an RCU grace period, 5-10 ms on an idle host, over 100
// on a busy one): after its first commit a child process keeps a copy until the connection ends, so that
// the wait is the child's, not that of the command ending (netlink.cpp, Socket).
class Connection {
 public:
  Connection();
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  Socket& socket() { return *socket_; }

 private:
  std::unique_ptr<Socket> socket_;
};

// Replaces table inet fwengine with `table` in one transaction (add, delete, add, then sets, chains,
// rules) and returns how long the transaction took in the kernel's hands (ms: sent, all answers read).
// Retries when another writer changed the ruleset meanwhile (generation id). On refusal nothing is applied
// and fwe::RuntimeError names the origin of what the kernel refused. A non-empty marker names one more,
// empty, chain: the stamp of this apply (see NftBackend::apply).
struct Committed {
  double ms = 0;                 // the transaction in the kernel's hands
  std::uint32_t generation = 0;  // the ruleset generation it left (the kernel counts every commit)
  bool from_record = false;      // an incremental apply that trusted the ContentRecord it was given
};
// `generation` assumes that a batch the kernel takes changes something: every message of ours creates,
// deletes or changes an object. (One that changes nothing, a set element that is there already, would
// leave the kernel a generation behind, and a writer in between would go unseen.)
Committed apply_table(Connection& connection, const Table& table, const std::string& marker = {});

// The same end state in one transaction that only touches what differs from the kernel. Chain names
// end in a digest of their content (leaving out the digests of the chains it jumps to), set names in
// one of their declaration: it adds the new sets, sends element deltas into the changed ones (from
// `previous`, the record of the apply the kernel holds), deletes what is gone, and renames a chain
// whose content changed in place (callers jump to it by reference, so none of them changes) and
// refills it. Unchanged chains and elements keep their counters. Replaces the whole table when ours
// is absent or dormant, when no content was recorded in it (so an edit by hand could not be told), or
// when a set it would keep has no valid record. The chain names are trusted from `record` when the
// kernel is still at its generation; otherwise every rule is listed to check the recorded content.
Committed apply_table_incremental(Connection& connection, const Table& table, const std::string& marker,
                                  const AppliedSets* previous, const ContentRecord* record);

// Deletes table inet fwengine if it exists; nothing else.
void delete_table(Connection& connection);

// After an apply whose marker chain is `marker`: adds the empty chain `marker-<content>` beside it, so
// that read-back and the next incremental apply can tell an edit by hand. A content chain of that
// marker with other content (the same policy applied again after the kernel's listing of it changed,
// as an upgrade of fwengine may do, or a table an older fwengine stamped) is renamed instead. The
// content is Listing::content as the kernel lists it now (16 hex digits; from the kernel's own listing
// rather than from what was sent, which the kernel encodes differently: set ids, anonymous set names,
// counters), then `set_elements` (16 more): the named sets' elements, whose bytes the kernel lists as
// they were sent. Listing them here would cost as much as loading them (see list_table), so only
// read-back checks those. Records nothing unless the ruleset is still at the generation `applied` left:
// what another writer changed since would be recorded as ours. Returns the record to keep for the next
// apply. `before` is the record `applied` trusted, if it did: then only the chains that apply of
// `table` filled, or whose jumps it renamed, are listed, not every rule.
std::optional<ContentRecord> record_content(Connection& connection, const std::string& marker,
                                            std::uint64_t set_elements, const Committed& applied,
                                            const Table& table, const ContentRecord* before);
// The marker a marker chain's name stands for, and the content recorded in it ("" in the marker chain
// itself): "<marker>-<content>" or "<marker>".
std::pair<std::string_view, std::string_view> split_marker(std::string_view chain_name);
// The digest of the named sets' elements of `table` (Listing::set_elements once it is loaded).
std::uint64_t set_elements_digest(const Table& table);
// 16 hex digits.
std::string hex16(std::uint64_t value);

struct ListedRule {
  std::string chain;
  std::int32_t index = 0;         // position inside its chain
  std::uint64_t expressions = 0;  // digest of the expressions as listed, counters' values left out
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
  std::uint32_t policy = 0;  // base chains: NF_ACCEPT or NF_DROP
};
inline constexpr std::string_view kMarkerPrefix = "fwengine-ir-";

struct Listing {
  bool present = false;
  bool dormant = false;  // switched off: its chains hook nothing
  // What the kernel holds, expression by expression: every rule's chain, position and expressions
  // (counters' values left out) and every base chain's hook and policy, as 16 hex digits. Chain names
  // are content digests of what apply loaded, so this is how an edit by hand inside a chain shows.
  std::string content;
  std::vector<ListedChain> chains;  // in the kernel's order
  std::vector<std::string> sets;    // names; anonymous sets left out
  std::vector<std::string> counted_sets;
  std::map<std::string, std::string> set_comments;  // counted sets that have one (Set::comment)
  std::vector<ListedRule> rules;
  std::vector<ListedElement> elements;  // of counted_sets, interval end markers left out
  Positions positions;                  // the first lines of policies, from the `where` set's elements
  // With Elements::all: set_digest of each named set's elements.
  std::map<std::string, std::uint64_t> set_elements;
};
// Which sets' elements list_table lists: those with counters (what status counts) and `where`, or all named
// ones (what proves that no element was added or removed by hand). The kernel lists an interval set's
// elements by walking its tree from the start for every 32 KiB answer: 100,000 ranges take ~1 s.
enum class Elements { counted, all };
Listing list_table(Connection& connection, Elements elements);

// Each listed chain's share of Listing::content from its rules: what ContentRecord::rules keeps.
std::map<std::string, std::uint64_t, std::less<>> rules_by_chain(const Listing& listing);

// Pairs of a chain's (a set's) name and the origin stamp of one of its rules (elements).
using Stamps = std::vector<std::pair<std::string_view, std::string_view>>;

// The digest of every rule's chain and origin stamp (and every counted element's set and stamp),
// stamped into the marker chain's name at apply: what read-back compares to find drift.
std::string rules_digest(Stamps chain_and_comment, const Stamps& set_and_comment);

// libnftnl's text of one rule's expressions (the `nft --debug=netlink` form), for golden tests.
std::string bytecode(const Rule& rule, const std::string& chain);

}  // namespace fwe::nft
