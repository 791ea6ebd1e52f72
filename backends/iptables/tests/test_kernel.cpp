// test_kernel.cpp - [root] tests: each runs in a network namespace of its own (support.hpp), never in the
// host's. They load rulesets with the real tools and read them back.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <sstream>

#include "fwengine/canonical.hpp"
#include "kernel.hpp"
#include "render.hpp"
#include "support.hpp"

using namespace fwe;
using namespace fwe::iptables;

namespace {

Model render_ok(const ir::Ruleset& rs) {
  Diagnostics diag;
  Model m = render(rs, diag);
  REQUIRE(!diag.has_errors());
  return m;
}

// Rules and user chains of a save that are not ours. (Built-in chain headers are left out: the kernel
// lists a table only once something used it.)
std::string foreign_lines(const std::string& save) {
  std::istringstream in(save);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    bool rule_or_chain =
        line.rfind("-A ", 0) == 0 || (line.rfind(":", 0) == 0 && line.find(" - [") != std::string::npos);
    if (rule_or_chain && line.find("fwe-") == std::string::npos) out += line + '\n';
  }
  return out;
}

std::string our_lines(const std::string& save) {
  std::istringstream in(save);
  std::string out;
  for (std::string line; std::getline(in, line);)
    if (line.find("fwe-") != std::string::npos) out += line + '\n';
  return out;
}

void load_foreign_rules() {
  // kube-proxy-like nat chains with a DNAT, a Docker-like FORWARD chain.
  const std::string v4 =
      "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-ABC - [0:0]\n"
      "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
      "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j KUBE-SEP-ABC\n"
      "-A KUBE-SEP-ABC -p tcp -m tcp -j DNAT --to-destination 10.244.0.5:53\nCOMMIT\n"
      "*filter\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n"
      "-A INPUT -s 192.0.2.1/32 -j ACCEPT\n"
      "-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j DOCKER\n"
      "-A DOCKER-USER -j RETURN\n-A DOCKER -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n";
  REQUIRE(run_tool({"iptables-legacy-restore", "--noflush"}, v4).status == 0);
  REQUIRE(run_tool({"ip6tables-legacy-restore", "--noflush"},
                   "*filter\n-A INPUT -s 2001:db8::1/128 -j ACCEPT\nCOMMIT\n")
              .status == 0);
  REQUIRE(run_tool({"ipset", "create", "KUBE-NODE-IPS", "hash:ip"}).status == 0);
}

}  // namespace

TEST_CASE("apply loads the ruleset and read_back finds it unchanged", "[root]") {
  test::enter_scratch_netns();
  auto rs = test::sample_ruleset();
  Model m = render_ok(rs);
  apply_model(m, "hash-1", false);

  std::string v4 = test::save_text();
  CHECK(v4.find("-A INPUT -m comment --comment \"fwe:hook\" -j fwe-input") != std::string::npos);
  CHECK(v4.find("-A PREROUTING -m comment --comment \"fwe:hook\" -j fwe-untracked-in") != std::string::npos);
  CHECK(v4.find(":fwe-c-web - [0:0]") != std::string::npos);
  CHECK(test::ipset_text_now().find("create fwe-4-big hash:net family inet") != std::string::npos);

  KernelState state = read_kernel();
  CHECK(state.present);
  CHECK(state.ir_hash == "hash-1");
  CHECK(state.drift.empty());
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(!state.counters.empty());
  CHECK(std::any_of(state.counters.begin(), state.counters.end(),
                    [](const RuleCounter& c) { return c.where == "policy.yaml:11:3"; }));

  // Nothing changed: applying again has nothing to do.
  CHECK(transition(parse_save(run_tool({"iptables-legacy-save"}).out),
                   with_meta(m.family(IpFamily::v4), "hash-1"), false)
            .empty());
  CHECK(transition(parse_save(run_tool({"ip6tables-legacy-save"}).out),
                   with_meta(m.family(IpFamily::v6), "hash-1"), false)
            .empty());
}

TEST_CASE("read_back reports rules changed behind our back", "[root]") {
  test::enter_scratch_netns();
  apply_model(render_ok(test::tiny_ruleset()), "h", false);
  REQUIRE(read_kernel().drift.empty());
  // Replace the port 80 rule by one for port 81 that keeps the stamp.
  std::string save = run_tool({"iptables-legacy-save"}).out;
  auto at = save.find("--dports 80 ");
  REQUIRE(at != std::string::npos);
  auto line_start = save.rfind('\n', at) + 1;
  std::string line = save.substr(line_start, save.find('\n', at) - line_start);
  std::string edited = line;
  edited.replace(edited.find("--dports 80 "), 12, "--dports 81 ");
  std::string chain = line.substr(3, line.find(' ', 3) - 3);
  std::string script = "*filter\n-D " + line.substr(3) + "\n-A " + edited.substr(3) + "\nCOMMIT\n";
  REQUIRE(run_tool({"iptables-legacy-restore", "--noflush"}, script).status == 0);
  auto state = read_kernel();
  REQUIRE(state.drift.size() == 1);
  CHECK(state.drift[0].find("was changed") != std::string::npos);
  // A new apply repairs it.
  apply_model(render_ok(test::tiny_ruleset()), "h", false);
  CHECK(read_kernel().drift.empty());
}

TEST_CASE("foreign rules stay byte for byte the same through apply, re-apply and flush", "[root]") {
  test::enter_scratch_netns();
  load_foreign_rules();
  const std::string v4 = foreign_lines(test::save_text()), v6 = foreign_lines(test::save_text(true));
  const std::string sets = test::ipset_text_now();

  apply_model(render_ok(test::sample_ruleset()), "a", false);
  CHECK(foreign_lines(test::save_text()) == v4);
  CHECK(foreign_lines(test::save_text(true)) == v6);
  apply_model(render_ok(test::tiny_ruleset()), "b", false);
  CHECK(foreign_lines(test::save_text()) == v4);
  // The hook sits above the foreign INPUT rule.
  std::string now = test::save_text();
  CHECK(now.find(
            "-A INPUT -m comment --comment \"fwe:hook\" -j fwe-input\n-A INPUT -s 192.0.2.1/32 -j ACCEPT") !=
        std::string::npos);

  flush_all();
  CHECK(foreign_lines(test::save_text()) == v4);
  CHECK(foreign_lines(test::save_text(true)) == v6);
  CHECK(our_lines(test::save_text()).empty());
  CHECK(our_lines(test::save_text(true)).empty());
  CHECK(test::ipset_text_now() == sets);
  CHECK_FALSE(read_kernel().present);
}

TEST_CASE("a failing apply leaves the previous ruleset in place", "[root]") {
  test::enter_scratch_netns();
  Model good = render_ok(test::sample_ruleset());
  apply_model(good, "good", false);
  const std::string v4 = test::save_text(), v6 = test::save_text(true), sets = test::ipset_text_now();

  // A ruleset whose IPv6 filter table the kernel refuses, after IPv4 and the sets went in fine.
  Model bad = render_ok(test::tiny_ruleset());
  bad.sets.push_back({"fwe-4-extra", IpFamily::v4, {"192.0.2.0/24"}});
  for (auto& t : bad.tables[1])
    if (t.name == "filter")
      t.chains[0].rules.push_back(
          "-m comment --comment \"fwe:0000000000000000 bad.yaml:9:9\" -j NO-SUCH-CHAIN");
  try {
    apply_model(bad, "bad", false);
    FAIL("apply should have failed");
  } catch (const RuntimeError& e) {
    std::string message = e.what();
    CHECK(message.find("ip6tables-legacy-restore failed") != std::string::npos);
    CHECK(message.find("bad.yaml:9:9") != std::string::npos);
    CHECK(message.find("previous ruleset is back") != std::string::npos);
  }
  CHECK(test::save_text() == v4);
  CHECK(test::save_text(true) == v6);
  CHECK(test::ipset_text_now() == sets);
  CHECK(read_kernel().ir_hash == "good");
}

TEST_CASE("changed sets are swapped in and unused ones removed", "[root]") {
  test::enter_scratch_netns();
  auto rs = test::tiny_ruleset();
  apply_model(render_ok(rs), "1", false);
  rs.sets["admins"].cidrs.pop_back();
  apply_model(render_ok(rs), "2", false);
  std::string sets = test::ipset_text_now();
  CHECK(sets.find("add fwe-4-admins 203.0.113.12") != std::string::npos);
  CHECK(sets.find("add fwe-4-admins 203.0.113.14") == std::string::npos);
  CHECK(sets.find("fwe-t-") == std::string::npos);
  rs.chains.begin()->second.rules.erase(rs.chains.begin()->second.rules.begin());
  rs.sets.clear();
  apply_model(render_ok(rs), "3", false);
  CHECK(test::ipset_text_now().find("fwe-") == std::string::npos);
}

TEST_CASE("fwengine --backend iptables --netns NAME applies inside that namespace only", "[root]") {
  test::enter_scratch_netns();
  if (access(FWE_ENGINE, X_OK) != 0 || access(FWE_PLUGIN_DIR "/libfwe_yaml.so", R_OK) != 0) {
    std::cerr << "skipped: fwengine or the yaml frontend is not built\n";
    std::exit(77);
  }
  const std::string ns = "fwe-ipt-test-" + std::to_string(getpid());
  REQUIRE(run_tool({"ip", "netns", "add", ns}).status == 0);
  struct Remove {
    std::string ns;
    ~Remove() {
      run_tool({"ip", "netns", "del", ns});
      std::error_code ignored;
      std::filesystem::remove_all("/run/fwengine/" + ns, ignored);  // the engine's lock and state for it
    }
  } remove{ns};
  const std::string policy = FWE_SOURCE_DIR "/fixtures/yaml/example/policy.yaml";
  auto engine = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{FWE_ENGINE, "--backend", "iptables", "--frontend", "yaml", "--netns", ns};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run_tool(argv);
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    return r.out;
  };
  engine({"-f", policy, "apply"});
  auto inside = run_tool({"ip", "netns", "exec", ns, "iptables-legacy-save"}).out;
  CHECK(inside.find("-A INPUT -m comment --comment \"fwe:hook\" -j fwe-input") != std::string::npos);
  CHECK(our_lines(test::save_text()).empty());  // the namespace this test runs in saw nothing
  CHECK(engine({"-f", policy, "diff"}).find("no difference") != std::string::npos);
  CHECK(engine({"status"}).find("backend iptables: IR ") == 0);
  engine({"flush"});
  CHECK(our_lines(run_tool({"ip", "netns", "exec", ns, "iptables-legacy-save"}).out).empty());
}

TEST_CASE("a failing table in the middle of IPv4 leaves the tables before it as they were", "[root]") {
  test::enter_scratch_netns();
  apply_model(render_ok(test::sample_ruleset()), "good", false);
  const std::string v4 = test::save_text(), v6 = test::save_text(true);
  // raw and mangle commit before nat fails.
  Model bad = render_ok(test::tiny_ruleset());
  for (auto& t : bad.tables[0])
    if (t.name == "filter") t.chains[0].rules.push_back("-j NO-SUCH-CHAIN");
  bad.tables[0].insert(bad.tables[0].begin(), TableDef{"raw", {{"fwe-untracked-in", {"-j ACCEPT"}}}, {}});
  CHECK_THROWS_AS(apply_model(bad, "bad", false), RuntimeError);
  CHECK(test::save_text() == v4);
  CHECK(test::save_text(true) == v6);
}
