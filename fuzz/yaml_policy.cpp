// Fuzz target: fwengine's own YAML policy format (docs/yaml-format.md) read and compiled.
#include "fuzz_support.hpp"
#include "reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fwe::Diagnostics diag;
  fwe::yamlfe::PolicyReader reader(diag);
  reader.read_text(fwe::fuzz::as_text(data, size), "fuzz.yaml");
  fwe::ir::Ruleset ruleset = reader.finish();
  fwe::fuzz::compile(ruleset, diag);
  return 0;
}
