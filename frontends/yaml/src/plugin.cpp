// plugin.cpp - the `yaml` frontend: our own plain-YAML policy format (docs/yaml-format.md).
#include <filesystem>

#include "fwengine/plugin.hpp"
#include "fwengine/state.hpp"
#include "reader.hpp"
#include "writer.hpp"

namespace fwe::yamlfe {
namespace {

class YamlFrontend final : public Frontend {
 public:
  explicit YamlFrontend(const PluginContext& /*context*/) {}

  std::vector<std::string> default_sources() const override { return {"/etc/fwengine/rules.d/"}; }

  ir::Ruleset load(const FrontendRequest& request, Diagnostics& diag) override {
    // An option meant for another frontend must not pass as if it had been applied.
    for (const auto& [key, value] : request.options)
      diag.error(diag.option_key_loc(key), "unknown yaml option '" + key + "'",
                 "the yaml frontend takes no options: drop it from --frontend-option or fwengine.conf's "
                 "frontend-options");
    if (diag.has_errors()) return {};
    return read_policy(request.sources, diag);
  }

  bool can_write() const override { return true; }

  bool write(const ir::Ruleset& ruleset, const std::string& out_dir, Diagnostics& diag) override {
    auto text = write_policy(ruleset, diag);
    if (!text) return false;
    try {
      std::filesystem::create_directories(out_dir);
      // A link in the directory is replaced, not written through: the file stays in out_dir.
      state::write_file_replacing((std::filesystem::path(out_dir) / "policy.yaml").string(), *text);
    } catch (const std::exception& e) {  // the directory's or the file's error
      diag.error({}, e.what(), "check that the output directory is writable");
      return false;
    }
    return true;
  }
};

}  // namespace
}  // namespace fwe::yamlfe

FWE_REGISTER_FRONTEND("yaml", "0.1.0", "fwengine's own plain-YAML policy format", fwe::yamlfe::YamlFrontend)
