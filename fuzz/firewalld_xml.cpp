// Fuzz target: the XML reader of the firewalld frontend (expat to an element tree), and the <rule>
// elements of zones and policies read as rich rules.
#include <vector>

#include "fuzz_support.hpp"
#include "rich.hpp"
#include "xml.hpp"

namespace {

// Without recursion: the tree can be as deep as the input allows.
void read_rules(const fwe::firewalld::xml::Element& root, fwe::Diagnostics& diag) {
  std::vector<const fwe::firewalld::xml::Element*> pending = {&root};
  while (!pending.empty()) {
    const auto* element = pending.back();
    pending.pop_back();
    if (element->name == "rule") fwe::firewalld::read_rich_rule(*element, fwe::Severity::error, diag);
    for (const auto& child : element->children) pending.push_back(&child);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fwe::Diagnostics diag;
  auto root = fwe::firewalld::xml::parse(fwe::fuzz::as_text(data, size), diag.add_file("fuzz.xml"), diag);
  if (root) read_rules(*root, diag);
  return 0;
}
