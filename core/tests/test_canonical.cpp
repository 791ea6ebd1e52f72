// The canonical form and hash: stable, independent of origins and file names, sensitive to policy.
#include <catch2/catch.hpp>

#include "fwengine/canonical.hpp"

#include <nlohmann/json.hpp>

using namespace fwe;
using namespace fwe::ir;

namespace {
Ruleset sample(std::string file, std::uint32_t line) {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", std::move(file)};
  rs.sets["lan"] = {"lan", {*parse_cidr("10.0.0.0/8")}, {}};
  Rule r;
  r.match.src_addr.push_back({false, "lan"});
  r.action.kind = ActionKind::accept;
  r.origin = {{1, line, 3}, "policy x", 0};
  rs.chains["c"] = {"c", {r}, {}};
  Endpoint ep;
  ep.name = "e";
  ep.groups.push_back({"g", {"c"}, Verdict::drop, {}, {}});
  rs.stage(Stage::input).sections.push_back({"s", true, {ep}});
  return rs;
}
}  // namespace

TEST_CASE("the hash ignores origins and file names") {
  CHECK(canonical::hash(sample("a.yaml", 3)) == canonical::hash(sample("b/c.yaml", 99)));
  CHECK(canonical::hash(sample("a.yaml", 3)).size() == 64);
}

TEST_CASE("the hash changes with the policy") {
  auto a = sample("a.yaml", 3);
  auto b = a;
  b.chains["c"].rules[0].action.kind = ActionKind::drop;
  CHECK(canonical::hash(a) != canonical::hash(b));
  auto c = a;
  c.stage(Stage::input).sections[0].honour_allow = false;
  CHECK(canonical::hash(a) != canonical::hash(c));
}

TEST_CASE("the canonical form shows origins only when asked") {
  auto rs = sample("a.yaml", 3);
  auto with = canonical::to_json(rs, true);
  auto without = canonical::to_json(rs, false);
  CHECK(with["chains"]["c"][0]["origin"]["at"] == "a.yaml:3:3");
  CHECK_FALSE(without["chains"]["c"][0].contains("origin"));
  CHECK(canonical::to_yaml(rs, true).find("a.yaml:3:3") != std::string::npos);
}

TEST_CASE("ct-status is in the canonical form only when a rule has it") {
  auto a = sample("a.yaml", 3);
  CHECK_FALSE(canonical::to_json(a, false)["chains"]["c"][0]["match"].contains("ct-status"));
  auto b = a;
  b.chains["c"].rules[0].match.ct_status = std::vector<CtStatus>{CtStatus::dnat};
  CHECK(canonical::to_json(b, false)["chains"]["c"][0]["match"]["ct-status"]["any"] ==
        nlohmann::json::array({"dnat"}));
  CHECK(canonical::hash(a) != canonical::hash(b));
}
