// fwengine/stamps.hpp - origin stamps whose lines survive an edit above them, for backends that write
// each rule's origin into the kernel as text (nft and iptables comments, ipset member comments).
//
// The kernel cannot change a comment in place. With the absolute line in it, one line inserted at the
// top of a policy file would change every stamp below, and an incremental apply would rewrite every
// chain (or set member) they are in, restarting their counters. So a stamp holds its line relative to
// the first line of its policy, "file:+D:col policy#rule", and each policy's first line is recorded
// once, under a key made of its file and its name ("file:line policy"). A line inserted above a policy
// changes that policy's record only. read_back (status) and the kernel's error messages put the absolute
// lines back (Positions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fwengine/ir.hpp"

namespace fwe::stamps {

// What a backend's comments can hold.
struct Style {
  std::size_t max_comment;  // a first line's record, and a stamp with its run suffix
  std::size_t max_file;    // of a stamp, the file part (a longer name keeps its scheme, "etcd:", and its end)
  std::size_t run_suffix;  // room for " +N" that a merged run's rule adds to its first stamp (0: none)
};

// A policy's first line as recorded: key (15 hex digits, as long as an interface name) and
// "file:line policy".
struct FirstLine {
  std::string key, text;
};

// Writes the stamps of one ruleset's origins, and the first lines they refer to. Stamps hold no
// quote, apostrophe, backslash or control character, and no space in the file part.
class Stamper {
 public:
  // Finds the first line of every policy in the ruleset.
  Stamper(const ir::Ruleset& ruleset, Style style);
  // "file:+D:col policy#rule" ("policy#rule" without a line), at most max_comment - run_suffix
  // characters.
  std::string stamp(const ir::Origin& origin);
  // The file part of origin's stamp: "" without a line.
  std::string file_text(const ir::Origin& origin) const;
  // The first line of each policy some stamp refers to, by key (the same text for the same ruleset).
  std::vector<FirstLine> first_lines() const;

 private:
  struct Parts {
    std::string file, label;
  };
  Parts parts(const ir::Origin& origin) const;
  // What the stamps of one policy's rules share, kept for the last policy met: its rules come in a row,
  // and making these anew for each rule was most of a stamp's cost.
  // No default member initializers: clang 14 then takes it for not default-constructible inside
  // std::optional (an NSDMI of a nested class is parsed with its enclosing class). Made as Shared{}.
  struct Shared {
    std::uint32_t file;
    std::string policy;     // as the origins name it
    std::string file_text;  // the stamp's file part
    std::string label;      // the policy, sanitized: a rule's label is label + "#rule"
    std::size_t room;       // the longest label that is not cut
    std::uint64_t key;      // the policy's key
  };
  // The shared parts of origin's stamp, or null when it has no line or rule, or its label
  // "policy#rule" would be cut.
  const Shared* shared(const ir::Origin& origin);
  struct First {
    std::uint32_t line = 0;
    std::string file, policy;
    bool used = false;
  };
  const ir::Ruleset& ruleset_;
  Style style_;
  std::unordered_map<std::uint64_t, First> first_;  // by policy key
  std::optional<Shared> shared_;
};

// The first lines of the policies: what turns stamps back into lines.
class Positions {
 public:
  // A recorded first line: its key and its text ("file:line policy"); a text without a line is ignored.
  void add(std::string_view key, std::string_view text);
  // stamp with its absolute line ("file:line:col policy#rule") where its policy's first line is known;
  // else unchanged (an absolute stamp, or one without its policy's record).
  std::string absolute(std::string_view stamp) const;

 private:
  std::unordered_map<std::string, std::uint32_t> first_line_;
};

// "file:line:col" at the start of a stamp, or empty when it has none.
std::string_view where_of(std::string_view stamp);

}  // namespace fwe::stamps
