// Fuzz target: the IR's text form. fwengine has no reader of `fwengine ir`'s output; the IR is read
// back as the YAML policy format, which `migrate --to yaml` writes. So: a policy that reads and
// compiles is written, read again and compiled, and must give the same IR hash (as migrate promises).
#include "fuzz_support.hpp"
#include "reader.hpp"
#include "writer.hpp"

namespace {

// Reads and compiles text; the ruleset as written (before the passes) goes to as_written.
std::optional<std::string> compiled_hash(std::string_view text, fwe::ir::Ruleset* as_written,
                                         fwe::Diagnostics& diag) {
  fwe::yamlfe::PolicyReader reader(diag);
  reader.read_text(text, "fuzz.yaml");
  fwe::ir::Ruleset ruleset = reader.finish();
  if (as_written) *as_written = ruleset;
  fwe::fuzz::compile(ruleset, diag);
  if (diag.has_errors()) return std::nullopt;
  return fwe::canonical::hash(ruleset);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fwe::Diagnostics diag;
  fwe::ir::Ruleset as_written;
  auto hash = compiled_hash(fwe::fuzz::as_text(data, size), &as_written, diag);
  if (!hash) return 0;
  auto written = fwe::yamlfe::write_policy(as_written, diag);
  if (!written) return 0;  // something the format cannot say, reported
  fwe::Diagnostics again;
  auto hash_again = compiled_hash(*written, nullptr, again);
  if (!hash_again) fwe::fuzz::fail("the written policy does not read back", *written + again.text());
  if (*hash_again != *hash) fwe::fuzz::fail("the written policy has another IR hash", *written);
  return 0;
}
