// reader.hpp - reads our plain-YAML policy format into the IR.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::yamlfe {

// Reads any number of sources into one ruleset. Sets and chains of all sources share one namespace;
// stage sections and failsafe entries are appended in reading order. Every problem is reported through
// diag with its location; finish() returns what was read, which must not be used if diag has errors.
class PolicyReader {
 public:
  // split_chains: a large mapping of chains is read in two halves on two threads (read_policy).
  explicit PolicyReader(Diagnostics& diag, bool split_chains = false);
  ~PolicyReader();
  PolicyReader(const PolicyReader&) = delete;
  PolicyReader& operator=(const PolicyReader&) = delete;

  // A file, a directory (its *.yaml and *.yml files in name order) or "-" for standard input.
  void read_source(const std::string& source);
  // Text that is already in memory; `name` is how diagnostics call it.
  void read_text(std::string_view text, const std::string& name);
  // Resolves references between sources and checks what needs the whole policy.
  ir::Ruleset finish();
  // Whether a split reading met, in its second half, a name read before it: what the two threads
  // read then differs from what one reads, and must not be used.
  bool split_conflicted() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads the sources as one PolicyReader does; a large mapping of chains is read on two threads.
ir::Ruleset read_policy(const std::vector<std::string>& sources, Diagnostics& diag);

}  // namespace fwe::yamlfe
