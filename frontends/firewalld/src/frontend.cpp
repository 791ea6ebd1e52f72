// frontend.cpp - frontend options, then the reader, then the mapping; a configuration with errors is
// never mapped (firewalld would fall back to its stock tree; we refuse it instead).
#include "frontend.hpp"

#include "mapping.hpp"
#include "reader.hpp"

namespace fwe::firewalld {
namespace {

ReadRequest read_options(const LoadRequest& request, Diagnostics& diag) {
  ReadRequest read;
  read.config_dirs = request.sources;
  for (const auto& [key, value] : request.options) {
    if (key == "defaults") {
      if (value.empty())
        diag.error(diag.option_value_loc(key), "defaults= needs a directory",
                   "e.g. defaults=/usr/lib/firewalld");
      read.defaults_dir = value;
    } else if (key == "compat") {
      if (value == "1.3") {
        read.compat = Compat::v1_3;
      } else if (value != "2") {
        diag.error(diag.option_value_loc(key), "compat must be 1.3 or 2, not '" + value + "'",
                   "1.3 reproduces Debian 12's firewalld 1.3.3, 2 (the default) firewalld 2.x");
      }
    } else {
      std::string hint = did_you_mean(key, {"defaults", "compat"});
      if (hint.empty()) hint = "the firewalld frontend knows: defaults=DIR, compat=1.3|2";
      diag.error(diag.option_key_loc(key), "unknown firewalld option '" + key + "'", hint);
    }
  }
  return read;
}

}  // namespace

ir::Ruleset load(const LoadRequest& request, Diagnostics& diag) {
  const ReadRequest read = read_options(request, diag);
  ir::Ruleset ruleset;
  if (!diag.has_errors()) {
    const Config config = read_config(read, diag);
    if (!diag.has_errors()) ruleset = to_ir(config, diag);
  }
  ruleset.frontend = "firewalld";
  ruleset.files = diag.files();
  return ruleset;
}

}  // namespace fwe::firewalld
