// fwengine/diagnostics.hpp - located messages, collected and printed together.
#pragma once

#include <cstdint>
#include <exception>
#include <iosfwd>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fwe {

// A position in a source file; file is an index into Diagnostics::files(). Line and column are 1-based;
// line 0 means "the whole file".
struct SourceLoc {
  std::uint32_t file = 0;
  std::uint32_t line = 0;
  std::uint32_t col = 0;
  friend bool operator==(const SourceLoc&, const SourceLoc&) = default;
};

enum class Severity { note, warning, error };

struct Diagnostic {
  Severity severity = Severity::error;
  SourceLoc loc;
  std::string message;
  std::string hint;  // what to do about it; may be empty
};

// Collects diagnostics so that every error in an input is reported at once, not only the first.
class Diagnostics {
 public:
  // Registers a source name (a path, "<stdin>", "etcd:/key") and returns its index for SourceLoc::file.
  // Index 0 is reserved for "<command line>" so that a default SourceLoc always prints something sensible.
  Diagnostics();
  std::uint32_t add_file(std::string name);
  const std::vector<std::string>& files() const { return files_; }
  const std::string& file_name(std::uint32_t index) const;

  void report(Severity severity, SourceLoc loc, std::string message, std::string hint = {});
  void error(SourceLoc loc, std::string message, std::string hint = {}) {
    report(Severity::error, loc, std::move(message), std::move(hint));
  }
  void warning(SourceLoc loc, std::string message, std::string hint = {}) {
    report(Severity::warning, loc, std::move(message), std::move(hint));
  }
  void note(SourceLoc loc, std::string message, std::string hint = {}) {
    report(Severity::note, loc, std::move(message), std::move(hint));
  }

  bool has_errors() const { return errors_ > 0; }
  std::size_t error_count() const { return errors_; }
  const std::vector<Diagnostic>& all() const { return items_; }

  // "file:line:col: error: message (hint)" - one line each, in the order reported.
  std::string format(const Diagnostic& d) const;
  // Every report formatted, each on a line of its own.
  std::string text() const;
  void print(std::ostream& out) const;
  // Location prefix only: "file:line:col".
  std::string where(SourceLoc loc) const;

  // Where fwengine.conf set a frontend option (KEY: VALUE under frontend-options), so that what a
  // frontend says about the option points there. An option of the command line has no entry: its
  // key and value are at {}, which prints as "<command line>".
  void set_option_origin(std::string key, SourceLoc key_loc, SourceLoc value_loc);
  // No reports, but the same option origins (and the config file they point into): a daemon's reload.
  Diagnostics fresh() const;
  SourceLoc option_key_loc(std::string_view key) const;
  SourceLoc option_value_loc(std::string_view key) const;

 private:
  struct OptionOrigin {
    std::string key;
    SourceLoc key_loc, value_loc;
  };
  const OptionOrigin* option_origin(std::string_view key) const;

  std::vector<std::string> files_;
  std::vector<Diagnostic> items_;
  std::size_t errors_ = 0;
  std::vector<OptionOrigin> option_origins_;
};

// "did you mean 'x'?" for a misspelt word among the known ones; empty when nothing is close.
std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& known);

// Thrown for bad input that cannot be reported through a Diagnostics (e.g. a CLI flag); exit code 2.
struct UsageError : std::exception {
  explicit UsageError(std::string m) : msg(std::move(m)) {}
  const char* what() const noexcept override { return msg.c_str(); }
  std::string msg;
};

// Thrown for runtime failures (kernel refused, plugin failed); exit code 1.
struct RuntimeError : std::exception {
  explicit RuntimeError(std::string m) : msg(std::move(m)) {}
  const char* what() const noexcept override { return msg.c_str(); }
  std::string msg;
};

}  // namespace fwe
