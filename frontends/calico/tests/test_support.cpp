// test_support.cpp - helpers shared by the Calico frontend tests.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include "fwengine/passes.hpp"
#include "fwengine/yaml.hpp"
#include "reader.hpp"

namespace fwe::calico::test {

const std::string kH0 = R"(
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: h0
  labels: {host: "1"}
spec:
  node: n1
  interfaceName: eth0
  expectedIPs: [10.0.0.10]
)";

const std::string kHall = R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: hall}
spec: {node: n1, interfaceName: "*"}
)";

Model read_yaml(const std::string& text, Diagnostics& diag) {
  Model model;
  const std::uint32_t file = diag.add_file("test.yaml");
  auto documents = yaml::parse(text, file, diag);
  if (documents) Reader(model, diag).read_documents(*documents, text);
  return model;
}

std::vector<std::string> formatted(const Diagnostics& diag, Severity severity) {
  std::vector<std::string> out;
  for (const Diagnostic& d : diag.all()) {
    if (d.severity == severity) out.push_back(diag.format(d));
  }
  return out;
}

MappingOptions n1_options() {
  MappingOptions options;
  options.node = "n1";
  options.interface_addresses = {
      {"eth0", {*ir::parse_ip("10.0.0.10"), *ir::parse_ip("2001:db8::10")}},
      {"eth1", {*ir::parse_ip("172.16.0.1")}},
      {"lo", {*ir::parse_ip("127.0.0.1"), *ir::parse_ip("::1")}},
  };
  return options;
}

ir::Ruleset build(const std::string& text, const MappingOptions& options) {
  Diagnostics diag;
  Model model = read_yaml(text, diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  ir::Ruleset ruleset = map_to_ir(model, options, diag);
  passes::run_all(ruleset, diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  return ruleset;
}

std::string to_string(Verdict v) {
  switch (v) {
    case Verdict::allow:
      return "ALLOW";
    case Verdict::deny:
      return "DENY";
    case Verdict::no_verdict:
      return "NO-VERDICT";
  }
  return "?";
}

trace::Packet packet(const std::string& iif, const std::string& oif, const std::string& src,
                     const std::string& dst, std::uint8_t protocol, std::uint16_t dport, ir::CtState state) {
  trace::Packet p;
  p.iif = iif;
  p.oif = oif;
  p.src = *ir::parse_ip(src);
  p.dst = *ir::parse_ip(dst);
  p.protocol = protocol;
  p.sport = 40000;
  p.dport = dport;
  p.ct = state;
  return p;
}

namespace {
Verdict classify(const trace::Result& result) {
  if (!result.delivered) return Verdict::deny;
  return result.final_verdict() == ir::Verdict::continue_ ? Verdict::no_verdict : Verdict::allow;
}
}  // namespace

Verdict verdict(const ir::Ruleset& ruleset, const trace::Packet& packet) {
  return classify(trace::evaluate(ruleset, packet));
}

Verdict reply_verdict(const ir::Ruleset& ruleset, const trace::Packet& packet) {
  const trace::Result first = trace::evaluate(ruleset, packet);
  REQUIRE(first.delivered);
  return classify(trace::evaluate(ruleset, trace::reply_of(packet, first)));
}

}  // namespace fwe::calico::test
