// fwengine/set_index.hpp - a ruleset's address sets by name, for the backends' translators.
#pragma once

#include <bit>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fwengine/ir.hpp"

namespace fwe::ir {

// The ruleset's set names to their places in its order: one array of hashes and places probed in
// turn, so that a lookup reads one cache line of it where a node-based map follows two or three
// pointers (a policy of 50,000 rules looks up its 50,000 inline sets several times each; in a hash map
// that was 5 % of its apply's time). A slot keeps half of the name's hash, and a place is one pointer to
// the set's entry in the map: at 50,000 sets the index takes 1.4 MB of a translator's peak, not 3.3.
// The sets are the ruleset's, which outlives the index.
class SetIndex {
 public:
  using Sets = std::map<std::string, AddrSet, std::less<>>;

  explicit SetIndex(const Sets& sets) : slots_(std::bit_ceil(2 * sets.size() + 2)) {
    sets_.reserve(sets.size());
    for (const auto& entry : sets) {
      const std::uint32_t hash = half_hash(entry.first);
      std::size_t i = hash & (slots_.size() - 1);
      while (slots_[i].place != kEmpty) i = (i + 1) & (slots_.size() - 1);
      slots_[i] = {hash, static_cast<std::uint32_t>(sets_.size())};
      sets_.push_back(&entry);
    }
  }
  // The set's place in the ruleset's order.
  std::optional<std::uint32_t> place(std::string_view name) const {
    const std::uint32_t hash = half_hash(name);
    for (std::size_t i = hash & (slots_.size() - 1);; i = (i + 1) & (slots_.size() - 1)) {
      const Slot& slot = slots_[i];
      if (slot.place == kEmpty) return std::nullopt;
      if (slot.hash == hash && sets_[slot.place]->first == name) return slot.place;
    }
  }
  const AddrSet* find(std::string_view name) const {
    const auto found = place(name);
    return found ? &sets_[*found]->second : nullptr;
  }
  const AddrSet& at(std::uint32_t place) const { return sets_[place]->second; }
  std::size_t size() const { return sets_.size(); }

 private:
  static constexpr std::uint32_t kEmpty = std::numeric_limits<std::uint32_t>::max();
  // The low half picks the slot; a name whose half equals another's is told apart by comparing names.
  static std::uint32_t half_hash(std::string_view name) {
    return static_cast<std::uint32_t>(std::hash<std::string_view>{}(name));
  }
  struct Slot {
    std::uint32_t hash = 0;
    std::uint32_t place = kEmpty;
  };
  std::vector<Slot> slots_;  // at most half full: every probe ends at an empty slot
  std::vector<const Sets::value_type*> sets_;
};

}  // namespace fwe::ir
