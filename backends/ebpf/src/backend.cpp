// backend.cpp - the ebpf Backend.
#include "backend.hpp"

namespace fwe::ebpf {

Capabilities EbpfBackend::capabilities() const {
  Capabilities caps;
  caps.stages = supported_stages();
  caps.matches = supported_matches();
  caps.actions = supported_actions();
  caps.ipv6 = true;
  caps.binds_interfaces = true;  // tc hooks per interface, and name patterns resolved to indexes
  caps.log_prefix_max = FWE_LOG_PREFIX_LEN - 1;
  return caps;
}

std::unique_ptr<Plan> EbpfBackend::render(const ir::Ruleset& ruleset, Diagnostics& diag) {
  const auto errors_before = diag.error_count();
  reject_unknown_backend_options(context_, "ebpf", {}, diag);
  if (diag.error_count() > errors_before) return nullptr;
  Program program = compile(ruleset, diag);
  if (diag.error_count() > errors_before) return nullptr;
  for (const auto& note : program.notes) diag.note(note.where, "ebpf: " + note.text);
  return std::make_unique<EbpfPlan>(std::move(program));
}

// Map updates and attaches, not one transaction: no transaction time to report.
ApplyReport EbpfBackend::apply(const Plan& plan, const ApplyOptions& options) {
  const auto* ours = dynamic_cast<const EbpfPlan*>(&plan);
  if (ours == nullptr) throw RuntimeError("ebpf: asked to apply a plan another backend rendered");
  kernel_.apply(ours->program(), options.ir_hash, options.rebind && !options.full);
  return {};
}

}  // namespace fwe::ebpf
