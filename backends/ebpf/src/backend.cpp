// backend.cpp - the ebpf Backend.
#include "backend.hpp"

#include <optional>
#include <string_view>
#include <vector>

namespace fwe::ebpf {

namespace {

// The backend option xdp: off (none), or interface names and prefixes (eth+) separated by commas;
// nullopt for what is not a name the kernel could give an interface.
std::optional<std::vector<ir::IfacePattern>> xdp_interfaces(std::string_view value) {
  std::vector<ir::IfacePattern> names;
  if (value == "off") return names;
  if (value == "on" || value == "yes" || value == "true") return std::nullopt;  // which interfaces, then?
  while (true) {
    const auto comma = value.find(',');
    const std::string_view item = value.substr(0, comma);
    if (!ir::valid_iface_name(item.ends_with('+') ? item.substr(0, item.size() - 1) : item))
      return std::nullopt;
    names.push_back(ir::parse_iface(item));
    if (comma == std::string_view::npos) return names;
    value.remove_prefix(comma + 1);
  }
}

}  // namespace

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
  reject_unknown_backend_options(context_, "ebpf", {"xdp"}, diag);
  std::vector<ir::IfacePattern> xdp;
  if (auto it = context_.backend_options.find("xdp"); it != context_.backend_options.end()) {
    if (auto names = xdp_interfaces(it->second)) {
      xdp = std::move(*names);
    } else {
      diag.error(backend_option_value_loc(diag, "ebpf", "xdp"),
                 "the ebpf backend's xdp must be off or interface names, not '" + it->second + "'",
                 "name the interfaces whose untracked-in drops fwe_xdp makes at XDP, before the kernel makes "
                 "an skb: xdp=eth0 or xdp=eno1,eno2 (a name ending in '+' is a prefix: xdp=eno+); off (the "
                 "default): tc only");
    }
  }
  if (diag.error_count() > errors_before) return nullptr;
  Program program = compile(ruleset, diag);
  if (diag.error_count() > errors_before) return nullptr;
  program.xdp_interfaces = std::move(xdp);
  if (!program.xdp_interfaces.empty()) allow_xdp(program);
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
