// applied.hpp - what the last apply put into each named set, kept in the backend's state directory so
// that the next apply sends only the elements that differ: a one-rule change to a policy merged into
// sets of thousands of elements then costs the kernel two elements, not a new set. Reading the
// elements back from the kernel instead would cost about as much as loading them again.
//
// A record describes one apply, named by that apply's stamp chain; it counts only while the kernel
// still holds that chain (a failed write, a crash between commit and save, or another writer's apply
// all leave a record that no longer matches, and the apply falls back to a full replace).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model.hpp"

namespace fwe::nft {

// The elements to take out of a set and to put into it, deletions first in the transaction.
struct SetDelta {
  std::vector<Element> removed;  // key, flags and end key only: what a deletion needs
  std::vector<const Element*> added;
};

class AppliedSets {
 public:
  // The record in dir, if there is a readable one.
  static std::optional<AppliedSets> load(const std::string& dir);
  // Replaces the record in dir (written aside, then renamed). Best effort: a record that could not be
  // written leaves the previous one, which no longer matches the kernel's stamp chain.
  static void save(const std::string& dir, const Table& table, const std::string& marker);

  const std::string& marker() const { return marker_; }
  bool has(const std::string& set) const { return sets_.count(set) > 0; }
  // Whether the named set still holds what `set` holds (its content digest is the same).
  bool same(const Set& set) const;
  // What turns the recorded elements of set.name into set's; nullopt when the record is damaged.
  std::optional<SetDelta> delta(const Set& set) const;

 private:
  struct Entry {
    std::uint64_t content = 0;
    std::size_t count = 0;
    std::size_t begin = 0, end = 0;  // the encoded elements: a range of bytes_
  };
  std::string marker_;
  std::string bytes_;
  std::map<std::string, Entry> sets_;
};

// What the kernel held when the last apply recorded its content (see record_content): the ruleset
// generation right after, the chain that records it, and each chain's share of Listing::content from
// its rules (the base chains' hooks, the rest of it, are not kept: listing the chain names gives them).
// The kernel counts every commit in its generation, so while it is still the recorded one nothing has
// changed since, and the next apply can trust the chain names without listing every rule; the record
// after it then lists only the chains whose rules that apply changed.
struct ContentRecord {
  std::uint32_t generation = 0;
  std::string chain;                                        // "<marker>-<content>"
  std::map<std::string, std::uint64_t, std::less<>> rules;  // chain name -> digest of its rules

  // The record in dir, if there is a readable one. Like AppliedSets, best effort and replaced whole.
  static std::optional<ContentRecord> load(const std::string& dir);
  void save(const std::string& dir) const;
};

}  // namespace fwe::nft
