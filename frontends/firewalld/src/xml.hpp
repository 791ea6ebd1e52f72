// xml.hpp - a small XML element tree read with expat: names, attributes, text and where each element
// starts. firewalld's files are small, so the whole document is held in memory.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fwengine/diagnostics.hpp"

namespace fwe::firewalld::xml {

struct Element {
  std::string name;
  std::vector<std::pair<std::string, std::string>> attributes;  // document order
  std::string text;  // character data directly inside this element, concatenated
  SourceLoc loc;     // the element's '<'
  std::vector<Element> children;

  const std::string* attribute(std::string_view key) const;
  bool has(std::string_view key) const { return attribute(key) != nullptr; }
};

// Parses a document held in text; file is the Diagnostics index its locations use. Broken XML is an
// error at file:line:col and gives nullopt.
std::optional<Element> parse(std::string_view text, std::uint32_t file, Diagnostics& diag);

// Reads and parses a file, registering it with diag.
std::optional<Element> parse_file(const std::string& path, Diagnostics& diag);

}  // namespace fwe::firewalld::xml
