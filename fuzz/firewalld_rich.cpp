// Fuzz target: firewalld's rich-rule language, as given to firewall-cmd --add-rich-rule. A rule that
// parses must print a canonical text that parses back to the same text.
#include "fuzz_support.hpp"
#include "rich.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fwe::Diagnostics diag;
  const fwe::SourceLoc loc{diag.add_file("fuzz.rich"), 1, 1};
  auto rule =
      fwe::firewalld::parse_rich_rule(fwe::fuzz::as_text(data, size), loc, fwe::Severity::error, diag);
  if (!rule) return 0;
  fwe::Diagnostics again_diag;
  auto again = fwe::firewalld::parse_rich_rule(rule->text, loc, fwe::Severity::error, again_diag);
  if (!again) fwe::fuzz::fail("the canonical text does not parse", rule->text);
  if (again->text != rule->text)
    fwe::fuzz::fail("the canonical text is not stable", rule->text + "\n" + again->text);
  return 0;
}
