// plugin.cpp - key functions of the plugin interfaces live in libfwcore, so their vtables and
// typeinfo are unique across the engine and every plugin.
#include "fwengine/plugin.hpp"

#include <algorithm>
#include <filesystem>

namespace fwe {

Frontend::~Frontend() = default;
Backend::~Backend() = default;
Plan::~Plan() = default;

std::string Plan::listing(std::string_view ir_hash) const {
  return text(ir_hash);
}
SourceWatch::~SourceWatch() = default;
LogWatch::~LogWatch() = default;

std::unique_ptr<SourceWatch> Frontend::watch(const FrontendRequest&) {
  return nullptr;
}

void Frontend::check_sources(const FrontendRequest&) const {}

bool Frontend::write(const ir::Ruleset&, const std::string&, Diagnostics& diag) {
  diag.error({}, "this frontend cannot write its own format", "choose another --to");
  return false;
}

bool Frontend::reads_file_named(std::string_view name) const {
  const auto extension = std::filesystem::path(name).extension();
  return extension == ".yaml" || extension == ".yml";
}

std::string backend_option_origin(std::string_view backend, std::string_view key) {
  return "backend-options." + std::string(backend) + "." + std::string(key);
}

void reject_unknown_backend_options(const PluginContext& context, std::string_view backend,
                                    const std::vector<std::string_view>& known, Diagnostics& diag) {
  for (const auto& [key, value] : context.backend_options) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string hint = did_you_mean(key, known);
    if (known.empty()) {
      hint = "the " + std::string(backend) + " backend takes no options";
    } else if (hint.empty()) {
      hint = "it knows:";
      for (auto k : known) hint += " " + std::string(k);
    }
    diag.error(diag.option_key_loc(backend_option_origin(backend, key)),
               "unknown " + std::string(backend) + " backend option '" + key + "'", std::move(hint));
  }
}

SourceLoc backend_option_value_loc(const Diagnostics& diag, std::string_view backend, std::string_view key) {
  return diag.option_value_loc(backend_option_origin(backend, key));
}

std::size_t backend_option_choice(const PluginContext& context, std::string_view backend,
                                  std::string_view key, const std::vector<std::string_view>& values,
                                  std::string_view hint, Diagnostics& diag) {
  const auto given = context.backend_options.find(std::string(key));
  if (given == context.backend_options.end()) return 0;
  if (auto at = std::find(values.begin(), values.end(), given->second); at != values.end())
    return static_cast<std::size_t>(at - values.begin());
  std::string named;
  for (std::size_t i = 0; i < values.size(); ++i)
    named += (i == 0 ? "" : i + 1 == values.size() ? " or " : ", ") + std::string(values[i]);
  diag.error(backend_option_value_loc(diag, backend, key),
             "the " + std::string(backend) + " backend's " + std::string(key) + " must be " + named +
                 ", not '" + given->second + "'",
             std::string(hint));
  return 0;
}

bool Capabilities::supports(ir::Stage s) const {
  return std::find(stages.begin(), stages.end(), s) != stages.end();
}
bool Capabilities::supports(ir::MatchKind m) const {
  return std::find(matches.begin(), matches.end(), m) != matches.end();
}
bool Capabilities::supports(ir::ActionKind a) const {
  return std::find(actions.begin(), actions.end(), a) != actions.end();
}

}  // namespace fwe
