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

TEST_CASE(
    "stamps of policies met in turn, and of a long policy's rules cut or not, lead back to their lines") {
  // The room for a label here: 128 - 11 ("policy.yaml") - 16 - 1 - 8 = 92 characters.
  const std::string long_name(89, 'x');
  ir::Ruleset rs;
  rs.files = {"policy.yaml"};
  ir::Chain a{"a", {}, origin(10, 1, "a", -1)}, b{"b", {}, origin(20, 1, "b", -1)};
  for (std::int32_t rule : {0, 9, 10, 100}) {
    ir::Rule r;
    r.origin = origin(12 + static_cast<std::uint32_t>(rule), 5, long_name, rule);
    a.rules.push_back(r);
  }
  ir::Rule other;
  other.origin = origin(22, 3, "b", 0);
  b.rules.push_back(other);
  rs.chains.emplace("a", std::move(a));
  rs.chains.emplace("b", std::move(b));
  stamps::Stamper stamper(rs, kStyle);
  const auto& rules = rs.chains.at("a").rules;
  // In turn: a's rule, b's, a's again.
  const std::string first = stamper.stamp(rules[0].origin);
  CHECK(first == "policy.yaml:+0:5 " + long_name + "#0");
  CHECK(stamper.stamp(rs.chains.at("b").rules[0].origin) ==
        "policy.yaml:+2:3 b#0");  // b starts on its chain's line
  CHECK(stamper.stamp(rules[1].origin) == "policy.yaml:+9:5 " + long_name + "#9");
  CHECK(stamper.stamp(rules[2].origin) == "policy.yaml:+10:5 " + long_name + "#10");
  const std::string cut = stamper.stamp(rules[3].origin);  // "#100" passes the room: cut to "#10"
  CHECK(cut == "policy.yaml:+100:5 " + long_name + "#10");
  const auto positions = positions_of(stamper);
  CHECK(positions.absolute(first) == "policy.yaml:12:5 " + long_name + "#0");
  CHECK(positions.absolute(cut) == "policy.yaml:112:5 " + long_name + "#10");
}
