// Fuzz target: the fast YAML scanner against libyaml (core/src/yaml_fast_scanner.hpp). Wherever the
// fast one answers, libyaml must read the same documents: the same kinds, texts, quoting and
// locations. Where the fast one gives up, libyaml's answer is the reader's, so nothing is compared.
#include "fuzz_support.hpp"
#include "fwengine/yaml.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fwe::fuzz::as_text(data, size);
  fwe::Diagnostics diag;
  const std::uint32_t file = diag.add_file("fuzz.yaml");
  auto by_fast = fwe::yaml::detail::parse_fast(text, file);
  if (!by_fast) return 0;
  auto by_libyaml = fwe::yaml::detail::parse_libyaml(text, file, diag);
  if (!by_libyaml) fwe::fuzz::fail("the fast scanner read a text that libyaml refuses", text);
  if (by_fast->size() != by_libyaml->size())
    fwe::fuzz::fail("the scanners read different numbers of documents", text);
  for (std::size_t i = 0; i < by_fast->size(); ++i)
    if (auto difference = fwe::yaml::detail::first_difference((*by_fast)[i], (*by_libyaml)[i]))
      fwe::fuzz::fail("the scanners read different trees", *difference);
  return 0;
}
