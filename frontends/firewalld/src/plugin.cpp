// plugin.cpp - registers the firewalld frontend with the engine.
#include "fwengine/plugin.hpp"

#include "frontend.hpp"

namespace fwe::firewalld {
namespace {

class FirewalldFrontend final : public Frontend {
 public:
  explicit FirewalldFrontend(const PluginContext& /*context*/) {}

  std::vector<std::string> default_sources() const override { return {"/etc/firewalld"}; }

  ir::Ruleset load(const FrontendRequest& request, Diagnostics& diag) override {
    LoadRequest load_request;
    load_request.sources = request.sources;
    load_request.options = request.options;
    return firewalld::load(load_request, diag);
  }
};

}  // namespace
}  // namespace fwe::firewalld

FWE_REGISTER_FRONTEND(
    "firewalld", "0.1.0",
    "firewalld's configuration (/usr/lib/firewalld overlaid by /etc/firewalld) with its verdicts",
    fwe::firewalld::FirewalldFrontend)
