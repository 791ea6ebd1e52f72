// Origin stamps (fwengine/stamps.hpp): lines relative to their policy's first line, and back.
#include <catch2/catch.hpp>

#include "fwengine/stamps.hpp"

using namespace fwe;

namespace {

constexpr stamps::Style kStyle{128, 56, 8};

ir::Origin origin(std::uint32_t line, std::uint32_t col, std::string policy, std::int32_t rule) {
  return {{0, line, col}, std::move(policy), rule};
}

// One policy "p" whose chain starts on first_line and whose rule is two lines below.
ir::Ruleset one_policy(std::uint32_t first_line) {
  ir::Ruleset rs;
  rs.files = {"policy.yaml"};
  ir::Chain chain{"p", {}, origin(first_line, 1, "GlobalNetworkPolicy p", -1)};
  ir::Rule rule;
  rule.origin = origin(first_line + 2, 5, "GlobalNetworkPolicy p", 0);
  chain.rules.push_back(rule);
  rs.chains.emplace("p", std::move(chain));
  return rs;
}

stamps::Positions positions_of(const stamps::Stamper& stamper) {
  stamps::Positions positions;
  for (const auto& first : stamper.first_lines()) positions.add(first.key, first.text);
  return positions;
}

}  // namespace

TEST_CASE("a stamp counts from its policy's first line, which moves alone when lines go in above") {
  const auto before = one_policy(10), after = one_policy(14);
  stamps::Stamper at_10(before, kStyle), at_14(after, kStyle);
  const std::string stamp = at_10.stamp(before.chains.at("p").rules[0].origin);
  CHECK(stamp == "policy.yaml:+2:5 GlobalNetworkPolicy p#0");
  CHECK(at_14.stamp(after.chains.at("p").rules[0].origin) == stamp);
  CHECK(at_10.first_lines().at(0).text == "policy.yaml:10 GlobalNetworkPolicy p");
  CHECK(positions_of(at_10).absolute(stamp) == "policy.yaml:12:5 GlobalNetworkPolicy p#0");
  CHECK(positions_of(at_14).absolute(stamp) == "policy.yaml:16:5 GlobalNetworkPolicy p#0");
  CHECK(stamps::Positions{}.absolute(stamp) == stamp);  // its policy's record unknown: as it is
}

TEST_CASE("where_of takes a position only, not a label's colons") {
  CHECK(stamps::where_of("policy.yaml:+2:5 p#0") == "policy.yaml:+2:5");
  CHECK(stamps::where_of("etcd:/calico/policy:12:3 p#1") == "etcd:/calico/policy:12:3");
  CHECK(stamps::where_of("zone:public:ssh").empty());
  CHECK(stamps::where_of("rule:+:1 p").empty());
  CHECK(stamps::where_of("a:1:x p").empty());
  CHECK(stamps::where_of("p#0").empty());
  stamps::Positions positions;
  positions.add("000000000000001", "f:3 zone:public");
  CHECK(positions.absolute("zone:+public:ssh") == "zone:+public:ssh");
}
