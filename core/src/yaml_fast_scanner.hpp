// yaml_fast_scanner.hpp - a scanner for the YAML that policies are written in, without libyaml.
//
// Policies are block mappings and lists of one-line scalars and one-line '{...}' / '[...]'
// collections, in ASCII. libyaml reads that at about 25 MB/s; this scanner reads it an order of
// magnitude faster and reports the same events, at the same marks, as libyaml would. It knows only
// that subset: at the first thing outside it (a tag, an anchor, a block scalar, a scalar or a flow
// collection over several lines, a tab, a non-ASCII byte, anything libyaml would refuse) it stops,
// and the caller reads the whole text again with libyaml. So the subset needs no error messages of
// its own, and a test and a fuzz target check that both scanners agree wherever this one answers.
#pragma once

#include <cstdint>
#include <string_view>

#include "fwengine/yaml.hpp"

namespace fwe::yaml::fast {

// A position as libyaml marks it: 0-based line and column.
struct Mark {
  std::uint32_t line = 0;
  std::uint32_t column = 0;
};

// What the scanner reports, in libyaml's event order. Each returns false to stop the scan.
class Events {
 public:
  virtual bool document_start() = 0;
  virtual bool document_end() = 0;
  virtual bool scalar(Mark at, std::string_view text, bool plain) = 0;
  virtual bool open(Kind kind, Mark at) = 0;
  virtual bool close() = 0;

 protected:
  ~Events() = default;
};

// Reports the events of `text` and returns true when all of it lies in the subset; returns false as
// soon as it meets anything else (or an event handler returns false). The events reported until then
// must be discarded.
bool scan(std::string_view text, Events& events);

}  // namespace fwe::yaml::fast
