// envelope_test.cpp - input envelopes (spec calico.md §1.1), v1 normalisation (§7) and source reading.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <unistd.h>

#include "frontend.hpp"
#include "test_support.hpp"

namespace fwe::calico::test {
namespace {

const char* const kHep = R"(apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: NAME}
spec: {node: n1, interfaceName: eth0}
)";

std::string hep(const std::string& name) {
  std::string text = kHep;
  text.replace(text.find("NAME"), 4, name);
  return text;
}

std::vector<std::string> hep_names(const Model& model) {
  std::vector<std::string> names;
  for (const HostEndpoint& h : model.host_endpoints) names.push_back(h.name);
  return names;
}

}  // namespace

TEST_CASE("multi-document YAML", "[envelope]") {
  Diagnostics diag;
  Model model = read_yaml(hep("a") + "---\n" + hep("b") + "---\n", diag);
  CHECK_FALSE(diag.has_errors());
  CHECK(hep_names(model) == std::vector<std::string>{"a", "b"});
}

TEST_CASE("top-level sequence", "[envelope]") {
  Diagnostics diag;
  Model model = read_yaml(
      "- apiVersion: projectcalico.org/v3\n  kind: HostEndpoint\n  metadata: {name: a}\n"
      "  spec: {node: n1, interfaceName: eth0}\n"
      "- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkSet\n  metadata: {name: s}\n"
      "  spec: {nets: [10.0.0.1/8]}\n",
      diag);
  CHECK_FALSE(diag.has_errors());
  CHECK(hep_names(model) == std::vector<std::string>{"a"});
  REQUIRE(model.network_sets.size() == 1);
  CHECK(ir::to_string(model.network_sets[0].nets.at(0)) == "10.0.0.0/8");  // non-strict, host bits cleared
}

TEST_CASE("kind: List and kind: <Kind>List", "[envelope]") {
  Diagnostics diag;
  Model model = read_yaml(
      "apiVersion: v1\nkind: List\nmetadata: {resourceVersion: \"\"}\nitems:\n"
      "- apiVersion: crd.projectcalico.org/v1\n  kind: HostEndpoint\n  metadata: {name: a, uid: x}\n"
      "  spec: {node: n1, interfaceName: eth0}\n"
      "---\n"
      "apiVersion: projectcalico.org/v3\nkind: HostEndpointList\nitems:\n"
      "- apiVersion: projectcalico.org/v3\n  kind: HostEndpoint\n  metadata: {name: b}\n"
      "  spec: {node: n1, interfaceName: eth1}\n",
      diag);
  CHECK_FALSE(diag.has_errors());
  CHECK(hep_names(model) == std::vector<std::string>{"a", "b"});
}

TEST_CASE("crd.projectcalico.org/v1 is normalised like Calico's backend does", "[envelope]") {
  Diagnostics diag;
  Model model = read_yaml(R"(apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata:
  name: default.allow-ssh
  labels:
    projectcalico.org/tier: default
  annotations:
    projectcalico.org/metadata: '{"creationTimestamp":null}'
spec:
  ingress:
  - action: allow
    protocol: tcp
    destination:
      ports: [22]
---
apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata:
  name: default.stored-name
  annotations:
    projectcalico.org/metadata: '{"name":"real-name","labels":{"team":"ops"}}'
spec:
  types: [ingress]
---
apiVersion: crd.projectcalico.org/v1
kind: HostEndpoint
metadata:
  name: h
  annotations:
    projectcalico.org/metadata: '{"labels":{"host":"1"}}'
spec: {node: n1, interfaceName: eth0}
---
apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata: {name: default.by-hand}
spec: {types: [Ingress]}
)",
                          diag);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  REQUIRE(model.policies.size() == 3);
  // Without Calico's annotation the name stays as written (resources.go returns before
  // determinePolicyName).
  CHECK(model.policies[2].name == "default.by-hand");
  const Policy& ssh = model.policies[0];
  CHECK(ssh.name == "allow-ssh");
  CHECK(ssh.applies_ingress);
  CHECK(ssh.applies_egress);  // raw v1 without types: Felix applies both
  REQUIRE(ssh.ingress.size() == 1);
  CHECK(ssh.ingress[0].action == RuleAction::allow);
  CHECK(ssh.ingress[0].protocol == 6);
  CHECK(model.policies[1].name == "real-name");
  CHECK(model.policies[1].applies_ingress);
  CHECK_FALSE(model.policies[1].applies_egress);
  REQUIRE(model.host_endpoints.size() == 1);
  CHECK(model.host_endpoints[0].labels.at("host") == "1");

  const auto notes = formatted(diag, Severity::note);
  REQUIRE(notes.size() == 1);
  CHECK_THAT(notes[0], Catch::Contains("test.yaml:1:13: note: crd.projectcalico.org/v1"));
  CHECK_THAT(notes[0], Catch::Contains("write projectcalico.org/v3"));
  const auto warnings = formatted(diag, Severity::warning);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("has no types: Felix applies a raw crd.projectcalico.org/v1 policy "
                                          "to Ingress and Egress"));
}

TEST_CASE("v3 types are defaulted from the rules", "[envelope]") {
  Diagnostics diag;
  Model model = read_yaml(R"(apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: none}
spec: {}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: egress-only}
spec:
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: both}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
)",
                          diag);
  REQUIRE_FALSE(diag.has_errors());
  REQUIRE(model.policies.size() == 3);
  CHECK(model.policies[0].applies_ingress);
  CHECK_FALSE(model.policies[0].applies_egress);
  CHECK_FALSE(model.policies[1].applies_ingress);
  CHECK(model.policies[1].applies_egress);
  CHECK(model.policies[2].applies_ingress);
  CHECK(model.policies[2].applies_egress);
  CHECK(model.policies[0].order == std::nullopt);
}

TEST_CASE("sources: directories are read sorted, *.yaml/*.yml/*.json only", "[envelope]") {
  const auto dir = std::filesystem::temp_directory_path() / ("fwe-calico-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "b.yml") << hep("b");
  std::ofstream(dir / "a.yaml") << hep("a");
  std::ofstream(dir / "c.json")
      << R"({"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint", "metadata": {"name": "c"},)"
      << R"( "spec": {"node": "n1", "interfaceName": "eth2"}})";
  std::ofstream(dir / "README.md") << "not: [a resource\n";
  LoadRequest request;
  request.sources = {dir.string()};
  request.node = "n1";
  request.interface_addresses.emplace();
  Diagnostics diag;
  ir::Ruleset ruleset = load(request, diag);
  std::filesystem::remove_all(dir);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  CHECK(ruleset.frontend == "calico");
  REQUIRE(ruleset.files.size() == 4);
  CHECK(ruleset.files[1].ends_with("a.yaml"));
  CHECK(ruleset.files[2].ends_with("b.yml"));
  CHECK(ruleset.files[3].ends_with("c.json"));
  const auto& input = ruleset.stage(ir::Stage::input);
  REQUIRE(input.sections.size() == 1);
  // a and b both name eth0: the smaller name wins the interface.
  REQUIRE(input.sections[0].endpoints.size() == 2);
  CHECK(input.sections[0].endpoints[0].name == "a");
  CHECK(input.sections[0].endpoints[1].name == "c");
}

TEST_CASE("sources: a resource file in a directory that cannot be read is an error", "[envelope]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("fwe-calico-dangling-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "a.yaml") << hep("a");
  std::filesystem::create_symlink(dir / "nowhere", dir / "b.yaml");
  std::filesystem::create_symlink("user@host.1:1", dir / ".#a.yaml");  // an editor's lock: skipped
  LoadRequest request;
  request.sources = {dir.string()};
  request.node = "n1";
  request.interface_addresses.emplace();
  Diagnostics diag;
  load(request, diag);
  std::filesystem::remove_all(dir);
  REQUIRE(diag.error_count() == 1);
  CHECK_THAT(diag.text(), Catch::Contains("b.yaml: error: cannot read '"));
}

TEST_CASE("unknown frontend options are refused", "[envelope]") {
  LoadRequest request;
  request.node = "n1";
  request.options = {{"policy-tiebrake", "3.31"}};
  request.interface_addresses.emplace();
  Diagnostics diag;
  load(request, diag);
  CHECK_THAT(diag.text(),
             Catch::Contains("unknown calico option 'policy-tiebrake' (did you mean 'policy-tiebreak'?)"));
}

TEST_CASE("a client certificate without its key is refused whatever the source", "[envelope]") {
  LoadRequest request;
  request.node = "n1";
  request.options = {{"etcd-cert", "c.pem"}};
  request.interface_addresses.emplace();
  Diagnostics diag;
  load(request, diag);
  CHECK_THAT(diag.text(), Catch::Contains("--etcd-cert and --etcd-key go together"));
}

TEST_CASE("a node name Felix would not take is refused, whatever the case of one it takes", "[envelope]") {
  LoadRequest request;
  request.interface_addresses.emplace();
  Diagnostics diag;
  for (const char* bad : {"", "../../etc/x", "node 1", "n/1"}) {
    request.node = bad;
    CHECK_THROWS_AS(load(request, diag), UsageError);
  }
  request.node = "Node_1.example";
  CHECK_NOTHROW(load(request, diag));
}

}  // namespace fwe::calico::test

namespace fwe::calico::test {

TEST_CASE("sources: - reads standard input", "[envelope]") {
  std::istringstream input(hep("from-stdin"));
  std::streambuf* saved = std::cin.rdbuf(input.rdbuf());
  LoadRequest request;
  request.sources = {"-"};
  request.node = "n1";
  request.interface_addresses.emplace();
  Diagnostics diag;
  const ir::Ruleset ruleset = load(request, diag);
  std::cin.rdbuf(saved);
  INFO(diag.text());
  REQUIRE_FALSE(diag.has_errors());
  CHECK(ruleset.files.back() == "<stdin>");
  CHECK(ruleset.stage(ir::Stage::input).sections.at(0).endpoints.at(0).name == "from-stdin");
}

TEST_CASE("sources: a missing file is an error", "[envelope]") {
  LoadRequest request;
  request.sources = {"/nonexistent/fwe-calico.yaml"};
  request.node = "n1";
  request.interface_addresses.emplace();
  Diagnostics diag;
  load(request, diag);
  CHECK(diag.has_errors());
  CHECK_THAT(diag.text(), Catch::Contains("/nonexistent/fwe-calico.yaml"));
}

}  // namespace fwe::calico::test
