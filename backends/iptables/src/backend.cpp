// backend.cpp - the `iptables` backend plugin: iptables-legacy + ipset, Felix-like chains (render.cpp).
#include <array>

#include "fwengine/netlink.hpp"
#include "fwengine/plugin.hpp"
#include "kernel.hpp"
#include "render.hpp"

namespace fwe::iptables {

namespace {

class IptablesPlan : public Plan {
 public:
  IptablesPlan(Model model, Atomicity atomicity) : model_(std::move(model)), atomicity_(atomicity) {}
  std::string text(std::string_view ir_hash) const override { return plan_text(model_, ir_hash); }
  const Model& model() const { return model_; }
  Atomicity atomicity() const { return atomicity_; }

 private:
  Model model_;
  Atomicity atomicity_;
};

class IptablesBackend : public Backend {
 public:
  explicit IptablesBackend(const PluginContext& context) : context_(context) {}

  Capabilities capabilities() const override {
    Capabilities caps;
    for (std::size_t s = 0; s < ir::kStageCount; ++s) caps.stages.push_back(static_cast<ir::Stage>(s));
    for (std::size_t m = 0; m < ir::kMatchKindCount; ++m)
      caps.matches.push_back(static_cast<ir::MatchKind>(m));
    for (std::size_t a = 0; a < ir::kActionKindCount; ++a)
      caps.actions.push_back(static_cast<ir::ActionKind>(a));
    caps.ipv6 = true;
    caps.log_prefix_max = kMaxLogPrefix;
    return caps;
  }

  std::unique_ptr<Plan> render(const ir::Ruleset& ruleset, Diagnostics& diag) override {
    reject_unknown_backend_options(context_, "iptables", {"atomic"}, diag);
    constexpr std::array kAtomicity{Atomicity::ruleset, Atomicity::table};
    const Atomicity atomicity = kAtomicity[backend_option_choice(
        context_, "iptables", "atomic", {"ruleset", "table"},
        "ruleset: a change of more than one table or set loads the whole ruleset beside the old one and "
        "switches every table and set at one instant; table: each table and set changes at once, in turn, "
        "where it is, and unchanged chains are not rewritten",
        diag)];
    if (diag.has_errors()) return nullptr;
    const bool ipv6 = netlink::kernel_has_ipv6();
    if (!ipv6)
      diag.note({},
                "iptables: this kernel has no IPv6 (booted with ipv6.disable=1), so ip6tables cannot "
                "start: only the IPv4 rules are loaded, and no IPv6 packet can arrive");
    return std::make_unique<IptablesPlan>(iptables::render(ruleset, diag, ipv6), atomicity);
  }

  // Several restores and ipset calls, not one transaction: no transaction time to report.
  ApplyReport apply(const Plan& plan, const ApplyOptions& options) override {
    const auto* ours = dynamic_cast<const IptablesPlan*>(&plan);
    if (ours == nullptr) throw RuntimeError("the iptables backend was given another backend's plan");
    apply_model(ours->model(), options.ir_hash, options.full, options.state_dir, ours->atomicity());
    return {};
  }

  KernelState read_back() override { return read_kernel(); }

  void flush() override { flush_all(); }

 private:
  PluginContext context_;
};

}  // namespace

}  // namespace fwe::iptables

FWE_REGISTER_BACKEND("iptables", "0.1.0", "iptables-legacy and ipset, Felix-like fwe- chains",
                     fwe::iptables::IptablesBackend)
