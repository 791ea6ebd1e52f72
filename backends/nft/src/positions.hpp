// positions.hpp - nft's origin stamps (fwengine/stamps.hpp): lines relative to their policy's first line,
// the first lines kept as the elements of one small set, `where`, each keyed by its policy's key (an
// interface-name key) and commented "file:line policy". A line inserted above a policy changes that
// policy's element only.
#pragma once

#include <optional>
#include <string_view>

#include "fwengine/stamps.hpp"
#include "model.hpp"

namespace fwe::nft {

// The `where` set's name, before content_address adds its digest.
inline constexpr std::string_view kPositionsSet = "where";

// Of a comment's 128 characters, the file part keeps up to 56, so that the label keeps at least 47: the
// policy's name and the rule's number; 8 are kept for a merged run's " +N".
inline constexpr stamps::Style kStampStyle{.max_comment = kMaxComment, .max_file = 56, .run_suffix = 8};

// Writes the stamps of one ruleset's origins, and the `where` set they refer to.
class Stamper : public stamps::Stamper {
 public:
  explicit Stamper(const ir::Ruleset& ruleset) : stamps::Stamper(ruleset, kStampStyle) {}
  // One element for each policy whose first line a stamp refers to; nullopt when none does.
  std::optional<Set> positions() const;
};

// The first lines of the policies, as a `where` set holds them.
class Positions : public stamps::Positions {
 public:
  Positions() = default;
  explicit Positions(const Set& where);
};

}  // namespace fwe::nft
