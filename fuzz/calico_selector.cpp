// Fuzz target: Calico's selector language. Besides not crashing, a selector that parses must print a
// canonical form that parses back to itself and selects the same labels.
#include "fuzz_support.hpp"
#include "selector.hpp"

using fwe::calico::Labels;
using fwe::calico::Selector;
using fwe::calico::SelectorError;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fwe::fuzz::as_text(data, size);
  SelectorError error;
  auto selector = Selector::parse(text, error);
  if (!selector) {
    if (error.offset > text.size()) fwe::fuzz::fail("error offset past the end of the selector");
    return 0;
  }
  const std::string canonical = selector->canonical();
  SelectorError again_error;
  auto again = Selector::parse(canonical, again_error);
  if (!again) fwe::fuzz::fail("the canonical form does not parse", canonical + "\n" + again_error.message);
  if (again->canonical() != canonical) fwe::fuzz::fail("the canonical form is not stable", canonical);
  static const Labels kLabelSets[] = {
      {},
      {{"app", "web"}, {"role", "db"}, {"env", "prod"}, {"a", "x"}, {"b", ""}},
      {{"projectcalico.org/name", "eth0"}, {"k8s-app", "kube-dns"}, {"tier", "frontend-1"}},
  };
  for (const Labels& labels : kLabelSets)
    if (selector->matches(labels) != again->matches(labels))
      fwe::fuzz::fail("the canonical form selects other labels", canonical);
  return 0;
}
