// Fuzz target: the Calico frontend from YAML text to a compiled ruleset - the YAML parser, the
// resource reader (every field's validation), the mapping to the IR and the core passes.
#include "fuzz_support.hpp"
#include "fwengine/yaml.hpp"
#include "mapping.hpp"
#include "reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fwe::Diagnostics diag;
  auto documents = fwe::yaml::parse(fwe::fuzz::as_text(data, size), diag.add_file("fuzz.yaml"), diag);
  if (!documents) return 0;
  fwe::calico::Model model;
  fwe::calico::Reader(model, diag).read_documents(*documents);
  if (diag.has_errors()) return 0;
  // The node and addresses of the HostEndpoints in fixtures/calico/home-cluster.
  fwe::calico::MappingOptions options;
  options.node = "control1.kryukov.local";
  options.interface_addresses = {{"ens160", {*fwe::ir::parse_ip("192.168.218.171")}},
                                 {"eth0", {*fwe::ir::parse_ip("10.0.0.1"), *fwe::ir::parse_ip("fd00::1")}}};
  fwe::ir::Ruleset ruleset = fwe::calico::map_to_ir(model, options, diag);
  fwe::fuzz::compile(ruleset, diag);
  return 0;
}
