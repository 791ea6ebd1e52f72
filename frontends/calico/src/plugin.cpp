// plugin.cpp - registers the Calico frontend with the engine.
#include "fwengine/plugin.hpp"

#include "frontend.hpp"

namespace fwe::calico {
namespace {

class CalicoFrontend final : public Frontend {
 public:
  explicit CalicoFrontend(const PluginContext& /*context*/) {}

  std::vector<std::string> default_sources() const override { return {"/etc/fwengine/calico/"}; }

  ir::Ruleset load(const FrontendRequest& request, Diagnostics& diag) override {
    LoadRequest load_request;
    load_request.sources = request.sources;
    load_request.node = request.node;
    load_request.options = request.options;
    return calico::load(load_request, diag);
  }
};

}  // namespace
}  // namespace fwe::calico

FWE_REGISTER_FRONTEND(
    "calico", "0.1.0",
    "Calico HostEndpoints, GlobalNetworkPolicy and FelixConfiguration with Felix's verdicts",
    fwe::calico::CalicoFrontend)
