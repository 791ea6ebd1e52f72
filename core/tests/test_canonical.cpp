// The canonical form and hash: stable, independent of origins and file names, sensitive to policy.
#include <catch2/catch.hpp>

#include "fwengine/canonical.hpp"

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

using namespace fwe;
using namespace fwe::ir;

namespace {
Ruleset sample(std::string file, std::uint32_t line) {
  Ruleset rs;
  rs.frontend = "test";
  rs.files = {"<command line>", std::move(file)};
  rs.sets["lan"] = {{*parse_cidr("10.0.0.0/8")}, {}};
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

TEST_CASE("the hash is the SHA-256 of the canonical text, which it digests in pieces") {
  auto rs = sample("a.yaml", 3);
  Rule rule = rs.chains["c"].rules[0];
  rs.chains["c"].rules.assign(5000, rule);  // some 400 KB of text: several pieces
  const std::string text = canonical::to_text(rs, false);
  REQUIRE(text.size() > 256 * 1024);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  REQUIRE(EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr) == 1);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    static constexpr char kHex[] = "0123456789abcdef";
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  CHECK(canonical::hash(rs) == hex);
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

TEST_CASE("a CIDR written in place hashes apart from a set holding it") {
  auto a = sample("a.yaml", 3);
  auto b = a;
  a.chains["c"].rules[0].match.src_addr = {AddrMatch(false, *parse_cidr("10.0.0.0/8"))};
  b.sets["ten"] = AddrSet{{*parse_cidr("10.0.0.0/8")}, {}};
  b.chains["c"].rules[0].match.src_addr = {AddrMatch(false, "ten")};
  CHECK(canonical::hash(a) != canonical::hash(b));
  auto c = a;
  c.chains["c"].rules[0].match.src_addr[0].negate = true;
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

TEST_CASE("the JSON form of a policy read from a file whose name is not UTF-8 has U+FFFD in its place") {
  auto rs = sample("p\xff\xc3.yaml", 3);
  rs.files.push_back("caf\xc3\xa9\xed\xa0\x80.yaml");  // a lone surrogate is not UTF-8 either
  const auto j = canonical::to_json(rs, true);
  CHECK(j["chains"]["c"][0]["origin"]["at"] == "p\xef\xbf\xbd\xef\xbf\xbd.yaml:3:3");
  CHECK(j["files"][2] == "caf\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd.yaml");
  CHECK(canonical::to_yaml(rs, true).find("p\xef\xbf\xbd\xef\xbf\xbd.yaml:3:3") != std::string::npos);
}

TEST_CASE("the YAML form writes short lists of scalars on one line and long ones one item a line") {
  auto rs = sample("a.yaml", 3);
  for (int i = 0; i < 20; ++i)
    rs.files.push_back("/usr/lib/firewalld/services/service" + std::to_string(i) + ".xml");
  const std::string yaml = canonical::to_yaml(rs, true);
  CHECK(yaml.find("\n  - /usr/lib/firewalld/services/service0.xml\n") != std::string::npos);
  CHECK(yaml.find("[/usr/lib/firewalld") == std::string::npos);
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

TEST_CASE("the canonical text is nlohmann's compact dump of the same document") {
  auto rs = sample("dir/\"quoted\"\t.yaml", 7);
  rs.sets["v6"] = {{*parse_cidr("2001:db8::/32")}, {}};
  Rule full;
  Match& m = full.match;
  m.iif = std::vector<IfacePattern>{parse_iface("eth+"), parse_iface("lo")};
  m.oif_negate = true;
  m.oif = std::vector<IfacePattern>{parse_iface("wg0")};
  m.family = Family::ipv6;
  m.protocols = std::vector<std::uint8_t>{6, 17};
  m.protocol_negate = true;
  m.src_addr = {{true, "v6"}, {false, "lan"}};
  m.dst_addr = {{false, "v6"}};
  m.src_port = {{true, {{1, 1023}}}};
  m.dst_port = {{false, {{22, 22}, {8000, 8080}}}};
  m.icmp = IcmpMatch{true, true, 128, 0};
  m.ct_states = std::vector<CtState>{CtState::established, CtState::related};
  m.ct_negate = true;
  m.ct_status = std::vector<CtStatus>{CtStatus::dnat};
  m.src_mac = std::vector<MacAddr>{{0, 1, 2, 3, 4, 5}};
  m.pkt_type = "broadcast";
  m.mark_value = 0x10;
  m.mark_mask = 0xff;
  m.rate_limit = RateLimit{5, "minute", 10};
  full.action.kind = ActionKind::dnat;
  full.action.nat_addr = parse_ip("10.0.0.1");
  full.action.nat_port = PortRange{8080, 8080};
  full.origin = {{1, 9, 1}, "policy \x01 y", 4};
  Rule logged;
  logged.action.kind = ActionKind::log;
  logged.action.log_prefix = "drop: ";
  Rule marked;
  marked.action.kind = ActionKind::set_mark;
  marked.action.mark_value = 7;
  Rule rejected;
  rejected.action.kind = ActionKind::reject;
  rejected.action.reject_with = "tcp-reset";
  Rule jumped;
  jumped.action.kind = ActionKind::jump;
  jumped.action.target = "c";
  rs.chains["all"] = {"all", {full, logged, marked, rejected, jumped}, {}};
  Endpoint ep;
  ep.name = "everything";
  ep.match = {parse_iface("eth0"), parse_iface("eth1"), "lan", "v6",
              std::vector<MacAddr>{{1, 2, 3, 4, 5, 6}}};
  ep.groups.push_back({"g", {"all", "c"}, Verdict::reject, "icmp-host-prohibited", {{1, 2, 2}, "", -1}});
  ep.default_verdict = Verdict::reject;
  ep.reject_with = "tcp-reset";
  ep.failsafe = true;
  ep.failsafe_chain = "fs";
  rs.stage(Stage::prednat).sections.push_back({"pre", false, {ep}});
  rs.stage(Stage::output).sections.push_back({"out", false, {ep}});
  rs.failsafe.inbound.push_back({6, 22, parse_cidr("10.0.0.0/8"), {{1, 3, 3}, "", -1}});
  rs.failsafe.outbound.push_back({17, 53, std::nullopt, {}});
  for (bool with_origins : {false, true}) {
    const std::string text = canonical::to_text(rs, with_origins);
    CHECK(nlohmann::json::parse(text).dump() == text);
  }
}
