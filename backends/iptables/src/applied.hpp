// applied.hpp - what the last apply put into each ipset, kept in the backend's state directory, so that
// the next apply can add and delete only the members that differ instead of filling a new set and
// swapping it in: a one-rule change to a policy merged into a run set of 50,000 members then costs the
// kernel two members, and the other members keep their counters. Listing the members back from the
// kernel would cost about as much as filling the set again.
//
// A set's record counts only while fwe-meta records the same digest for it, that is while the kernel
// holds what the record says (a failed write, or another writer's apply, leaves a record that matches
// no digest, and the apply swaps the set as before). fwe-meta's digests count only while no apply is
// half-way through changing members (mark_changing below).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"

namespace fwe::iptables {

class AppliedSets {
 public:
  // The record in dir, if there is a readable one; sets whose members do not give their digest are
  // left out.
  static std::optional<AppliedSets> load(const std::string& dir);
  // Replaces the record in dir with the sets and their digests (members_digest; written aside, then
  // renamed). Best effort: a record that could not be written leaves the previous one, whose digests
  // no longer match fwe-meta's.
  static void save(const std::string& dir, const std::vector<SetDef>& sets,
                   const std::vector<std::string>& digests);

  // The set as recorded (by the model's name), if the record holds it with this digest.
  const SetDef* find(const std::string& name, std::string_view digest) const;

 private:
  struct Entry {
    std::string digest;
    SetDef set;
  };
  std::map<std::string, Entry> sets_;
};

// The mark of an apply that changes sets' members where they are, in dir: made before the first member
// changes and taken away once fwe-meta records the sets' new digests. An apply that finds it cannot
// trust those digests (the one that made it was killed, or failed and could not take its change
// back), so it loads the whole ruleset into the other slot. mark_changing is false when the mark could
// not be made: then no member may change in place.
bool mark_changing(const std::string& dir);
bool changing(const std::string& dir);
void unmark_changing(const std::string& dir);

// What the last apply left of ours in the kernel's tables, as iptables-legacy-save prints it (parse_save
// reads it), with the digest of every table the kernel held right after it (tables_fingerprint in
// kernel.hpp), written only when those tables were seen to hold it. While the tables still give that
// digest, nobody changed them, and the next apply takes our chains from here instead of running
// iptables-legacy-save, which costs ~90 ms for 10,000 rules that match sets (it looks up each rule's
// set name with a socket of its own). Counters are not recorded: an apply that needs them (a switch of
// slots carries them) reads the kernel.
struct HeldTables {
  std::string fingerprint;
  std::string text[2];  // by IpFamily

  // The record in dir, if there is a whole one.
  static std::optional<HeldTables> load(const std::string& dir);
  // Written aside, then renamed; best effort, as a record that could not be written only costs a save.
  void save(const std::string& dir) const;
  static void forget(const std::string& dir);
};

// What turns a set's members into another's, where that is no more members than the new set has: the
// members to add (new ones, and ones whose comment changed) and to delete, and what takes the change
// back. Adding first and deleting after changes each address's membership once: an address that both
// sets hold (under one member or under two that overlap) is a member throughout.
struct MemberDelta {
  SetDef add, remove;        // the change
  SetDef restore, withdraw;  // its undoing: the old members and comments back, the new ones out
};
std::optional<MemberDelta> member_delta(const SetDef& was, const SetDef& now);

}  // namespace fwe::iptables
