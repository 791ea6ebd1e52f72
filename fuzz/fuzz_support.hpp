// fuzz_support.hpp - what the fuzz targets share: the input as text, the engine's passes over a
// ruleset a frontend read, a failed property as a crash, and a scratch directory per process.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "fwengine/canonical.hpp"
#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"
#include "fwengine/passes.hpp"

namespace fwe::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A property that must hold for every input; libFuzzer records the input as a crash.
[[noreturn]] inline void fail(std::string_view what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz property failed: %.*s\n%.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

// The rest of `fwengine check` after a frontend: the core passes and the hash, when the input read cleanly.
inline void compile(ir::Ruleset& ruleset, Diagnostics& diag) {
  if (diag.has_errors()) return;
  passes::run_all(ruleset, diag);
  if (!diag.has_errors()) canonical::hash(ruleset);
}

// A directory of this process under the temporary directory, removed at exit.
class ScratchDir {
 public:
  ScratchDir() : path_(std::filesystem::temp_directory_path() / ("fwe-fuzz-" + std::to_string(getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace fwe::fuzz
