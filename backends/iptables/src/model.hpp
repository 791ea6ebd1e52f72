// model.hpp - what the iptables backend loads: ipsets and, per address family, the fwe- chains of each
// table with the jumps that hook them into the built-in chains. Rendering fills it (render.cpp), the
// kernel code compares it with iptables-legacy-save output and loads the difference (kernel.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fwengine/stamps.hpp"

namespace fwe::iptables {

enum class IpFamily : std::uint8_t { v4, v6 };

// Packet-mark bits we own (Calico uses 0xffff0000 from the bottom up; kube-proxy 0x4000/0x8000).
// IR set-mark actions and mark matches never touch these bits.
inline constexpr std::uint32_t kAllowMark = 0x10000000;   // the IR's allow mark, kept across stages
inline constexpr std::uint32_t kPassMark = 0x20000000;    // a `pass` is leaving the current group
inline constexpr std::uint32_t kAcceptMark = 0x40000000;  // the stage result so far is accept
inline constexpr std::uint32_t kDoneMark = 0x80000000;    // the endpoint has its verdict: unwind
inline constexpr std::uint32_t kOurMarks = 0xf0000000;
inline constexpr std::uint32_t kTransientMarks = kPassMark | kAcceptMark | kDoneMark;

// The model names everything fwe-...; the kernel holds it in one of two slots, fwe1-... or fwe2-..., so
// that a new ruleset can be loaded beside the old one and switched on at once (kernel.cpp). Names of
// our own helpers that belong to no slot start with fwe0-. Slot 0 names only the model's chains and
// sets: a kernel name fwe-... is not ours (an admin's fwe-blocklist, say).
inline constexpr std::string_view kPrefix = "fwe-";
inline constexpr std::size_t kMaxChainName = 27;            // iptables' 28, less the slot digit
inline constexpr std::size_t kMaxSetName = 30;              // ipset's 31, less the slot digit
inline constexpr std::string_view kMetaChain = "fwe-meta";  // holds the IR hash in a comment
// A slot's hooks match only while its gate, a list:set, holds the two sets that match every address
// (one per family): swapping the gates' contents switches from one slot to the other in one step.
inline constexpr std::string_view kGateSet = "fwe-gate";
inline constexpr std::string_view kTempSetPrefix = "fwe0-t-";
inline constexpr int kNoSlot = -1;      // not ours
inline constexpr int kHelperSlot = -2;  // fwe0-: ours, in no slot

// The slot a kernel name belongs to: 0, 1, 2, kHelperSlot or kNoSlot.
int slot_of(std::string_view name);
// A name of slot 0, 1 or 2 as it is called in `slot` (0: the model's name); other names unchanged.
std::string in_slot(std::string_view name, int slot);
// A rule spec whose chain and set references (after -j, -g, --match-set; never inside quotes) are
// moved to `slot`.
std::string spec_in_slot(std::string_view spec, int slot);
// The target of a rule spec (after -j or -g, never inside quotes), and whether it is a goto.
struct Jump {
  std::string_view target;
  bool is_goto = false;
};
std::optional<Jump> jump_of(std::string_view spec);

struct ChainDef {
  std::string name;
  std::vector<std::string> rules;  // each what follows "-A <name> " in iptables-restore input
};

// One built-in chain's jump into ours, inserted as its first rule.
struct HookDef {
  std::string builtin;  // PREROUTING, INPUT, ...
  std::string target;   // fwe-input, ...
};

struct TableDef {
  std::string name;  // raw, mangle, nat, filter
  std::vector<ChainDef> chains;
  std::vector<HookDef> hooks;
  const ChainDef* find(std::string_view chain) const;
};

// Short strings one after another in blocks of at most 64 KiB: a set's 50,000 members as strings of
// their own took a block and a 32-byte string each, 6 MB at the peak of an apply, and one block grown by
// doubling would hold its old and new copies at once.
class PackedStrings {
 public:
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;  // it yields views, not references
    using iterator_concept = std::forward_iterator_tag;
    using value_type = std::string_view;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = std::string_view;
    Iterator() = default;
    Iterator(const PackedStrings* list, std::size_t at) : list_(list), at_(at) {}
    std::string_view operator*() const { return (*list_)[at_]; }
    Iterator& operator++() {
      ++at_;
      return *this;
    }
    Iterator operator++(int) { return std::exchange(*this, Iterator(list_, at_ + 1)); }
    friend bool operator==(const Iterator& a, const Iterator& b) { return a.at_ == b.at_; }

   private:
    const PackedStrings* list_ = nullptr;
    std::size_t at_ = 0;
  };

  PackedStrings() = default;
  PackedStrings(std::initializer_list<std::string_view> items) {
    for (auto item : items) push_back(item);
  }
  std::size_t size() const noexcept { return ends_.size(); }
  bool empty() const noexcept { return ends_.empty(); }
  std::string_view operator[](std::size_t i) const;
  Iterator begin() const { return {this, 0}; }
  Iterator end() const { return {this, size()}; }
  // A block's size, and so the longest string: members and comments are short.
  static constexpr std::size_t kBlock = 64 * 1024;
  // Throws std::length_error for a string over a block.
  void push_back(std::string_view item);
  void reserve(std::size_t items) { ends_.reserve(items); }
  bool operator==(const PackedStrings&) const = default;

 private:
  std::vector<std::vector<char>> blocks_;  // a string never spans two
  // Where each string ends, counted as if every block took kBlock bytes: a string starts where the one
  // before it ended, or at the start of its block when that one did not have room for it.
  std::vector<std::uint32_t> ends_;
};

// An IR address set (hash:net, fwe-4-<name> / fwe-6-<name>), or the elements of a run of rules merged
// into one set lookup (hash:net,port, fwe-4r-... / fwe-6r-...: a counter and the origin of its rule on
// every member, so that hits still map to source rules).
inline constexpr std::string_view kNetSet = "hash:net";
inline constexpr std::string_view kRunSet = "hash:net,port";
struct SetDef {
  std::string name;
  IpFamily family = IpFamily::v4;
  PackedStrings members;  // "10.0.0.0/8", "10.0.0.0/8,tcp:22"; hosts without prefix (as ipset save
                          // prints them)
  std::string type{kNetSet};
  PackedStrings comments{};  // kRunSet: per member, where its rule comes from
};

// What the gates hold while on: the two sets that match every address, by IpFamily.
inline const SetDef kAnySets[2] = {{"fwe0-any4", IpFamily::v4, {"0.0.0.0/1", "128.0.0.0/1"}},
                                   {"fwe0-any6", IpFamily::v6, {"::/1", "8000::/1"}}};

// xt_comment keeps 255 characters: a first line's record in fwe-meta ("fwe:where <key> <file:line policy>")
// keeps 229, and so does a stamp (in a rule's comment, "fwe:<hash16> <stamp>", it would have room for 234).
inline constexpr stamps::Style kStampStyle{.max_comment = 229, .max_file = 120, .run_suffix = 0};

struct Model {
  std::vector<SetDef> sets;
  std::vector<TableDef> tables[2];  // by IpFamily, in the order raw, mangle, nat, filter
  // The first lines of the policies that the rules' and run members' stamps count their lines from:
  // recorded in IPv4's fwe-meta (with_meta), so that a line inserted above a policy changes a record,
  // not every rule below it.
  std::vector<stamps::FirstLine> first_lines{};
  // False for a kernel without IPv6 (ipv6.disable=1), where ip6tables cannot start: the model then
  // holds no IPv6 table or set, not even fwe-meta, and nothing is loaded or read for IPv6.
  bool ipv6 = true;
  const std::vector<TableDef>& family(IpFamily f) const { return tables[static_cast<int>(f)]; }
};

inline constexpr std::string_view kTableOrder[] = {"raw", "mangle", "nat", "filter"};

// The rule spec of a hook jump: only while the gate of the target's slot is on.
std::string hook_spec(std::string_view target);
// 16 hex digits of FNV-1a 64: rule stamps and shortened names.
std::string hash16(std::string_view text);
// The text of a rule spec's comment (between its quotes), or empty.
std::string_view comment_of(std::string_view spec);
// The stamp a rule spec carries ("fwe:<hash16>"), or empty.
std::string stamp_of(std::string_view spec);
// The hash a rule should carry: over its chain and its spec without the comment and without quoting, so
// that our text and iptables-save's text of the same rule give the same hash; names count as the model
// has them, so that a rule keeps its stamp in either slot.
std::string content_hash(std::string_view chain, std::string_view spec);
// The origin stamp in a rule's comment (what follows "fwe:<hash16> "), or empty.
std::string origin_stamp_of(std::string_view spec);

// iptables-restore input for a whole family as rendered (what `render` prints): every chain declared,
// filled, and hooked.
std::string restore_text(const std::vector<TableDef>& tables);
// ipset restore input creating every set under its own name.
std::string ipset_text(const std::vector<SetDef>& sets);
// ipset restore -exist input for the two sets that match every address and a slot's gate, on or off.
std::string gate_text(std::string_view gate, bool on);
std::string ipset_create_line(const SetDef& set, std::string_view name);
// The most members a set may hold: ipset refuses adds beyond it. Twice its members, so that an apply
// that adds the new members of a changed set before it deletes the old ones has room for them.
std::size_t ipset_maxelem(const SetDef& set);
// The buckets a hash set starts with: about two members a bucket, or 0 for ipset's default (1,024) when
// that is enough. A set that starts too small rehashes everything it holds each time it doubles: half of
// the kernel's time to fill a set of 100,000 members.
std::uint32_t ipset_hashsize(const SetDef& set);
std::string_view family_name(IpFamily f);  // inet / inet6
// A protocol's first name in /etc/protocols, or empty.
std::string_view protocol_file_name(std::uint8_t number);
// A protocol as ipset lists it in a member: its name in /etc/protocols, else its number.
const std::string& protocol_name(std::uint8_t number);
// The number of a protocol name (or of a number written out); none for anything else.
std::optional<std::uint8_t> protocol_number(std::string_view name);
// A family's tables plus fwe-meta in filter, whose first rule carries the IR hash and the rules summary
// of the tables for read_back, then one rule per set of the family with its members' digest, and in
// IPv4 one rule per first line the stamps count from (first_line_rule).
// digests: set_digests(model.sets).
std::vector<TableDef> with_meta(const Model& model, IpFamily family, std::string_view ir_hash,
                                const std::vector<std::string>& digests);
std::string meta_rule(std::string_view ir_hash, std::string_view summary);
// A digest of a set's members with their comments, whatever their order (ipset lists them in its own).
std::string members_digest(const PackedStrings& members, const PackedStrings& comments);
// members_digest of each set, in their order.
std::vector<std::string> set_digests(const std::vector<SetDef>& sets);
// fwe-meta's record of one set, "fwe:set NAME DIGEST" (the model's name): an apply tells which sets
// changed from these, without listing every set's members.
std::string set_record_rule(const SetDef& set, std::string_view digest);
// The set name and digest of such a rule; empty names for any other rule.
std::pair<std::string, std::string> set_record_of(std::string_view meta_spec);
// fwe-meta's record of a policy's first line, "fwe:where KEY FILE:LINE POLICY", and the key and text
// of such a rule (empty for any other rule).
std::string first_line_rule(const stamps::FirstLine& first);
stamps::FirstLine first_line_of(std::string_view meta_spec);
// The IR hash in a fwe-meta rule, or empty.
std::string ir_hash_of(std::string_view meta_spec);
// The stamps of a family's rules, chain by chain ("table/chain", model names), and the members of its run
// sets with their comments ("ipset/<name>": they stand for rules, so the summary covers them as it covers
// a chain's stamps). A member counts as the stamp "MEMBER COMMENT". Members are sorted, as ipset lists
// them in an order of its own, and not copied: the lists given to add_members must outlive this (a
// string each held 80 bytes a member at the peak of an apply).
class RuleStamps {
 public:
  std::vector<std::string>& chain(const std::string& key) { return entries_[key].stamps; }
  void add_members(std::string_view set_name, const PackedStrings& members, const PackedStrings& comments);
  // "rules N digest D": the number of rules and a digest of their stamps, chain by chain in the order of
  // the keys, so that read_back finds rules deleted, added or moved since apply, which per-rule stamps
  // alone cannot show. fwe-meta's own rule does not count.
  std::string summary() const;
  // The same stamps under the same keys.
  friend bool operator==(const RuleStamps& a, const RuleStamps& b);

 private:
  struct Entry {
    std::vector<std::string> stamps;
    std::vector<std::pair<std::string_view, std::string_view>> members;  // with their comments, sorted
  };
  std::map<std::string, Entry> entries_;
};
// The rules summary in a fwe-meta rule, or empty (one written before fwe-meta had it).
std::string summary_of(std::string_view meta_spec);

}  // namespace fwe::iptables
