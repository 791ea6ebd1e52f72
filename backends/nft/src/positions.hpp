// positions.hpp - origin stamps whose lines survive an edit above them.
//
// Each rule (and each counted element of a merged run) carries a comment tying it to its origin, and
// the kernel cannot change a comment in place. With the absolute line in it, one line inserted at the
// top of a policy file would change every stamp below, and an incremental apply would rewrite every
// chain and element they are in, restarting their counters. So a stamp holds its line relative to the
// first line of its policy, "file:+D:col policy#rule", and the first lines are the elements of one
// small set, `where`, each keyed by a digest of a file and a policy and commented "file:line policy".
// A line inserted above a policy changes that policy's element only. read_back (status) and the
// kernel's error messages put the absolute lines back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "fwengine/ir.hpp"
#include "model.hpp"

namespace fwe::nft {

// The `where` set's name, before content_address adds its digest.
inline constexpr std::string_view kPositionsSet = "where";

// Writes the stamps of one ruleset's origins, and the `where` set they refer to.
class Stamper {
 public:
  // Finds the first line of every policy in the ruleset.
  explicit Stamper(const ir::Ruleset& ruleset);
  // "file:+D:col policy#rule" ("policy#rule" without a line), at most kMaxComment characters less
  // the room of a merged run's " +N", safe inside nft's double quotes.
  std::string stamp(const ir::Origin& origin);
  // The file part of origin's stamp: "" without a line.
  std::string file_text(const ir::Origin& origin) const;
  // One element for each policy whose first line a stamp refers to; nullopt when none does.
  std::optional<Set> positions() const;

 private:
  struct Parts {
    std::string file, label;
  };
  Parts parts(const ir::Origin& origin) const;
  struct First {
    std::uint32_t line = 0;
    std::string file, policy;
    bool used = false;
  };
  const ir::Ruleset& ruleset_;
  std::unordered_map<std::uint64_t, First> first_;  // by policy_key
};

// The first lines of the policies, as a `where` set holds them: what turns stamps back into lines.
class Positions {
 public:
  Positions() = default;
  explicit Positions(const Set& where);
  // An element of `where`: its key (the text before the terminating zero) and its comment.
  void add(std::string_view key, std::string_view comment);
  // stamp with its absolute line ("file:line:col policy#rule") where its policy's first line is known;
  // else unchanged (an absolute stamp, or one without its policy's element).
  std::string absolute(std::string_view stamp) const;

 private:
  std::unordered_map<std::string, std::uint32_t> first_line_;
};

}  // namespace fwe::nft
