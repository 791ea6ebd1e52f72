// A minimal backend for the loader's tests.
#include "fwengine/plugin.hpp"

namespace {
class TextPlan : public fwe::Plan {
 public:
  std::string text(std::string_view) const override { return "nothing\n"; }
};
class TestBackend : public fwe::Backend {
 public:
  explicit TestBackend(const fwe::PluginContext&) {}
  fwe::Capabilities capabilities() const override {
    return {{fwe::ir::Stage::input}, {}, {fwe::ir::ActionKind::accept}};
  }
  std::unique_ptr<fwe::Plan> render(const fwe::ir::Ruleset&, fwe::Diagnostics&) override {
    return std::make_unique<TextPlan>();
  }
  fwe::ApplyReport apply(const fwe::Plan&, const fwe::ApplyOptions&) override {
    throw fwe::RuntimeError("test backend refuses");
  }
  fwe::KernelState read_back() override { return {}; }
  void flush() override {}
};
}  // namespace

FWE_REGISTER_BACKEND("testbe", "1.0", "loader test backend", TestBackend)
