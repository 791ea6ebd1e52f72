// test_kernel.cpp - [root] tests: each runs in a network namespace of its own (support.hpp), never in the
// host's. They load rulesets with the real tools and read them back.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>

#include "applied.hpp"
#include "fwengine/canonical.hpp"
#include "kernel.hpp"
#include "render.hpp"
#include "support.hpp"

using namespace fwe;
using namespace fwe::iptables;

namespace {

// For as long as one lives, shell scripts of the given tools' names come first in PATH, so that an apply
// runs them (the checks around it run the real tools by their full path or after). They lie beside the
// test binary, not in /tmp, which may forbid running what is in it: the real tool would then be found
// further on in PATH.
class ScriptedTools {
 public:
  explicit ScriptedTools(const std::vector<std::pair<std::string, std::string>>& scripts) {
    std::filesystem::create_directories(bin_);
    for (const auto& [tool, script] : scripts) {
      std::ofstream(bin_ / tool) << "#!/bin/sh\n" << script;
      std::filesystem::permissions(bin_ / tool, std::filesystem::perms::owner_all);
    }
    setenv("PATH", (bin_.string() + ":" + path_).c_str(), 1);
  }
  ~ScriptedTools() {
    setenv("PATH", path_.c_str(), 1);
    std::filesystem::remove_all(bin_);
  }
  ScriptedTools(const ScriptedTools&) = delete;
  ScriptedTools& operator=(const ScriptedTools&) = delete;

 private:
  std::string path_ = [] {
    const char* path = std::getenv("PATH");
    return std::string(path != nullptr ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  }();
  std::filesystem::path bin_ = std::filesystem::read_symlink("/proc/self/exe").parent_path() /
                               ("fwe-scripted-" + std::to_string(getpid()));
};

// Saves that fail: an apply that starts one fails too.
ScriptedTools failing_saves() {
  const std::string fail = "echo 'no save here' >&2\nexit 1\n";
  return ScriptedTools({{"iptables-legacy-save", fail}, {"ip6tables-legacy-save", fail}});
}

// A state directory of the test's own, removed with it.
struct StateDir {
  std::string path = std::filesystem::temp_directory_path() / ("fwe-ipt-state-" + std::to_string(getpid()));
  StateDir() { std::filesystem::remove_all(path); }
  ~StateDir() { std::filesystem::remove_all(path); }
};

Model render_ok(const ir::Ruleset& rs) {
  Diagnostics diag;
  Model m = render(rs, diag);
  REQUIRE(!diag.has_errors());
  return m;
}

// Rules and user chains of a save that are not ours. (Built-in chain headers are left out: the kernel
// lists a table only once something used it.)
// A chain or set of ours, fwe0- .. fwe2- (model.hpp's slots), outside quotes: an admin's fwe- names and
// comments are not ours.
bool mentions_ours(const std::string& line) {
  static const std::regex quoted("\"[^\"]*\""), ours("fwe[0-2]-");
  return std::regex_search(std::regex_replace(line, quoted, ""), ours);
}

std::string foreign_lines(const std::string& save) {
  std::istringstream in(save);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    bool rule_or_chain =
        line.rfind("-A ", 0) == 0 || (line.rfind(":", 0) == 0 && line.find(" - [") != std::string::npos);
    if (rule_or_chain && !mentions_ours(line)) out += line + '\n';
  }
  return out;
}

std::string our_lines(const std::string& save) {
  std::istringstream in(save);
  std::string out;
  for (std::string line; std::getline(in, line);)
    if (mentions_ours(line)) out += line + '\n';
  return out;
}

std::string hook_line(std::string_view builtin, int slot, std::string_view stage) {
  return "-A " + std::string(builtin) + " -m set --match-set fwe" + std::to_string(slot) +
         "-gate src -m comment --comment \"fwe:hook\" -j fwe" + std::to_string(slot) + "-" +
         std::string(stage);
}

void load_foreign_rules() {
  // kube-proxy-like nat chains with a DNAT, a Docker-like FORWARD chain, and rules of others in the raw
  // and mangle tables, which fwengine hooks too; an admin's chain and set named fwe-... (no slot) and a
  // rule whose comment names our hook's chain.
  const std::string v4 =
      "*raw\n:CILIUM-PRE-raw - [0:0]\n-A PREROUTING -j CILIUM-PRE-raw\n"
      "-A CILIUM-PRE-raw -s 198.51.100.7/32 -j ACCEPT\nCOMMIT\n"
      "*mangle\n:KUBE-MARK - [0:0]\n-A PREROUTING -j KUBE-MARK\n"
      "-A KUBE-MARK -p tcp -m tcp --dport 22 -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n"
      "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-ABC - [0:0]\n"
      "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
      "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j KUBE-SEP-ABC\n"
      "-A KUBE-SEP-ABC -p tcp -m tcp -j DNAT --to-destination 10.244.0.5:53\nCOMMIT\n"
      "*filter\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n:fwe-admin - [0:0]\n"
      "-A INPUT -s 192.0.2.1/32 -j ACCEPT\n"
      "-A INPUT -s 192.0.2.3/32 -m comment --comment \"see -j fwe1-input here\" -j ACCEPT\n"
      "-A INPUT -j fwe-admin\n-A fwe-admin -m set --match-set fwe-blocklist src -j DROP\n"
      "-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j DOCKER\n"
      "-A DOCKER-USER -j RETURN\n-A DOCKER -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n";
  REQUIRE(run_tool({"ipset", "create", "fwe-blocklist", "hash:net"}).status == 0);
  REQUIRE(run_tool({"iptables-legacy-restore", "--noflush"}, v4).status == 0);
  REQUIRE(run_tool({"ip6tables-legacy-restore", "--noflush"},
                   "*raw\n-A PREROUTING -s 2001:db8::7/128 -j ACCEPT\nCOMMIT\n"
                   "*filter\n-A INPUT -s 2001:db8::1/128 -j ACCEPT\nCOMMIT\n")
              .status == 0);
  REQUIRE(run_tool({"ipset", "create", "KUBE-NODE-IPS", "hash:ip"}).status == 0);
}

// Each IPv4 chain of ours but fwe-meta (a record), by its kernel name, with its rules' counters.
using ChainCounters = std::map<std::string, std::vector<std::string>>;
ChainCounters counters_by_chain() {
  ChainCounters chains;
  std::istringstream in(run_tool({"iptables-legacy-save", "-c"}).out);
  static const std::regex rule(R"(^\[(\d+:\d+)\] -A (fwe[12]-\S+) )");
  for (std::string line; std::getline(in, line);)
    if (std::smatch m; std::regex_search(line, m, rule) && !m[2].str().ends_with("-meta"))
      chains[m[2].str()].push_back(m[1].str());
  return chains;
}

// The runs ruleset with a rule from a new set of five networks appended to its chain list: a set added
// and a chain changed.
ir::Ruleset with_a_set_added(ir::Ruleset rs) {
  rs.sets["five"] = ir::AddrSet{{}, {}};
  for (int k = 1; k <= 5; ++k)
    rs.sets["five"].cidrs.push_back(*ir::parse_cidr("192.0.2." + std::to_string(k * 8) + "/29"));
  ir::Rule from_five = rs.chains.at("list").rules.front();
  from_five.match.src_addr = {{false, "five"}};
  from_five.origin.loc.line = 30;
  rs.chains.at("list").rules.push_back(from_five);
  return rs;
}

// After with_a_set_added: the chains of list count from zero, every other chain as before. Returns how
// many of the counters kept are not zero.
std::size_t kept_counters(const ChainCounters& before, const ChainCounters& after) {
  std::size_t kept = 0;
  for (const auto& [chain, counters] : after) {
    INFO(chain);
    if (chain.find("list") != std::string::npos) {
      for (const auto& c : counters) CHECK(c == "0:0");
      continue;
    }
    REQUIRE(before.count(chain) == 1);
    CHECK(counters == before.at(chain));
    for (const auto& c : counters) kept += c != "0:0" ? 1 : 0;
  }
  return kept;
}

}  // namespace

TEST_CASE("apply loads the ruleset and read_back finds it unchanged", "[root]") {
  test::enter_scratch_netns();
  auto rs = test::sample_ruleset();
  Model m = render_ok(rs);
  apply_model(m, "hash-1", false);

  // The first ruleset goes into slot 1 and its gate is switched on.
  std::string v4 = test::save_text();
  CHECK(v4.find(hook_line("INPUT", 1, "input")) != std::string::npos);
  CHECK(v4.find(hook_line("PREROUTING", 1, "untracked-in")) != std::string::npos);
  CHECK(v4.find(":fwe1-c-web - [0:0]") != std::string::npos);
  CHECK(test::ipset_text_now().find("create fwe1-4-big hash:net family inet") != std::string::npos);
  CHECK(test::ipset_text_now().find("add fwe1-gate fwe0-any4") != std::string::npos);

  KernelState state = read_kernel();
  CHECK(state.present);
  CHECK(state.ir_hash == "hash-1");
  CHECK(state.drift.empty());
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(!state.counters.empty());
  CHECK(std::any_of(state.counters.begin(), state.counters.end(),
                    [](const RuleCounter& c) { return c.where == "policy.yaml:11:3"; }));

  // Nothing changed: applying again has nothing to do.
  const std::string v6 = test::save_text(true), sets = test::ipset_text_now();
  apply_model(m, "hash-1", false);
  CHECK(test::save_text() == v4);
  CHECK(test::save_text(true) == v6);
  CHECK(test::ipset_text_now() == sets);
}

TEST_CASE("tables that hold only built-in chains are read without a save, and their policies stay",
          "[root]") {
  test::enter_scratch_netns();
  apply_model(render_ok(test::tiny_ruleset()), "a", false);
  flush_all();  // the tables stay, empty
  REQUIRE(run_tool({"iptables-legacy", "-P", "FORWARD", "DROP"}).status == 0);
  auto apply_without_saves = [](const ir::Ruleset& rs, std::string_view hash) {
    const auto failing = failing_saves();
    apply_model(render_ok(rs), hash, false);
  };

  apply_without_saves(test::sample_ruleset(), "b");
  KernelState state = read_kernel();
  CHECK(state.ir_hash == "b");
  CHECK(state.drift.empty());
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(test::save_text().find(":FORWARD DROP") != std::string::npos);

  // A chain of someone else's, in IPv6 only, is something a save must read.
  flush_all();
  REQUIRE(run_tool({"ip6tables-legacy", "-N", "ADMIN"}).status == 0);
  CHECK_THROWS_WITH(apply_without_saves(test::sample_ruleset(), "c"), Catch::Contains("no save here"));
  CHECK_FALSE(read_kernel().present);
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

TEST_CASE("read_back reports a rule deleted behind our back", "[root]") {
  test::enter_scratch_netns();
  apply_model(render_ok(test::tiny_ruleset()), "h", false);
  REQUIRE(read_kernel().drift.empty());
  std::string save = run_tool({"ip6tables-legacy-save"}).out;
  auto at = save.find("--dports 80 ");
  REQUIRE(at != std::string::npos);
  auto line_start = save.rfind('\n', at) + 1;
  std::string line = save.substr(line_start, save.find('\n', at) - line_start);
  REQUIRE(run_tool({"ip6tables-legacy-restore", "--noflush"}, "*filter\n-D " + line.substr(3) + "\nCOMMIT\n")
              .status == 0);
  auto state = read_kernel();
  REQUIRE(state.drift.size() == 1);
  CHECK(state.drift[0].find("ipv6: rules were deleted, added or moved since apply") != std::string::npos);
  apply_model(render_ok(test::tiny_ruleset()), "h", false);
  CHECK(read_kernel().drift.empty());
}

TEST_CASE("read_back reports a set member removed behind our back and a full apply puts it back", "[root]") {
  test::enter_scratch_netns();
  apply_model(render_ok(test::tiny_ruleset()), "h", false);
  REQUIRE(read_kernel().drift.empty());
  REQUIRE(run_tool({"ipset", "del", "fwe1-4-admins", "203.0.113.12"}).status == 0);
  auto state = read_kernel();
  REQUIRE(state.drift.size() == 1);
  CHECK(state.drift[0] == "ipset fwe-4-admins: members were added or removed since apply");
  // An apply trusts fwe-meta's record of the sets (it lists none); --full rewrites them.
  apply_model(render_ok(test::tiny_ruleset()), "h", true);
  CHECK(read_kernel().drift.empty());
  CHECK(test::ipset_text_now().find("203.0.113.12") != std::string::npos);
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
  CHECK(foreign_lines(test::save_text(true)) == v6);
  CHECK(test::ipset_text_now().find("create KUBE-NODE-IPS hash:ip") != std::string::npos);
  // The hook sits above the foreign INPUT rule.
  std::string now = test::save_text();
  CHECK(now.find(hook_line("INPUT", 2, "input") + "\n-A INPUT -s 192.0.2.1/32 -j ACCEPT") !=
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
  // In place, table by table (its new set made first goes again), or in the other slot.
  const Atomicity atomicity = GENERATE(Atomicity::ruleset, Atomicity::table);
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
    apply_model(bad, "bad", false, {}, atomicity);
    FAIL("apply should have failed");
  } catch (const RuntimeError& e) {
    std::string message = e.what();
    CHECK(message.find("ip6tables-legacy-restore failed") != std::string::npos);
    CHECK(message.find("bad.yaml:9:9") != std::string::npos);
    CHECK(message.find("the previous ruleset is in place") != std::string::npos);
  }
  CHECK(test::save_text() == v4);
  CHECK(test::save_text(true) == v6);
  CHECK(test::ipset_text_now() == sets);
  CHECK(read_kernel().ir_hash == "good");
}

TEST_CASE("one set's new members are swapped in where it is, a wider change comes with the new slot",
          "[root]") {
  test::enter_scratch_netns();
  auto rs = test::tiny_ruleset();
  apply_model(render_ok(rs), "1", false);
  const std::string v4 = test::save_text(), v6 = test::save_text(true);
  // Only the members of one set change (and fwe-meta, the record): one ipset swap, in slot 1.
  rs.sets["admins"].cidrs.pop_back();
  apply_model(render_ok(rs), "2", false);
  std::string sets = test::ipset_text_now();
  CHECK(sets.find("add fwe1-4-admins 203.0.113.12") != std::string::npos);
  CHECK(sets.find("add fwe1-4-admins 203.0.113.14") == std::string::npos);
  CHECK(sets.find("fwe2-4-") == std::string::npos);
  CHECK(sets.find("fwe0-t-") == std::string::npos);
  // The rules are those of before; only fwe-meta's record changed.
  auto without_meta = [](const std::string& save) {
    std::istringstream in(save);
    std::string out, line;
    while (std::getline(in, line))
      if (line.find("fwe1-meta") == std::string::npos) out += line + '\n';
    return out;
  };
  CHECK(without_meta(test::save_text()) == without_meta(v4));
  CHECK(without_meta(test::save_text(true)) == without_meta(v6));
  auto state = read_kernel();
  CHECK(state.ir_hash == "2");
  CHECK(state.drift.empty());
  for (const auto& d : state.drift) UNSCOPED_INFO(d);

  // A rule and the set go: more than one step, so the new slot.
  rs.chains.begin()->second.rules.erase(rs.chains.begin()->second.rules.begin());
  rs.sets.clear();
  apply_model(render_ok(rs), "3", false);
  sets = test::ipset_text_now();
  CHECK(sets.find("-4-") == std::string::npos);
  CHECK(our_lines(test::save_text()).find("fwe1-") == std::string::npos);
  CHECK(read_kernel().ir_hash == "3");
}

TEST_CASE("two sets of a family swapped, then a table refused: both sets get their old members back",
          "[root]") {
  const Atomicity atomicity = GENERATE(Atomicity::ruleset, Atomicity::table);
  test::enter_scratch_netns();
  Model good = render_ok(test::sample_ruleset());
  good.sets.push_back({"fwe-4-one", IpFamily::v4, {"192.0.2.0/26", "192.0.2.64/26"}});
  good.sets.push_back({"fwe-4-two", IpFamily::v4, {"198.18.0.0/24", "198.18.1.0/24"}});
  apply_model(good, "good", false);
  const std::string v4 = test::save_text(), v6 = test::save_text(true);
  auto members = [] {  // in the hash seed's order
    std::istringstream in(test::ipset_text_now());
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
      if (line.rfind("add ", 0) == 0) out.push_back(line);
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto before = members();
  // No record of the last apply (no state directory): each changed set is swapped with a temporary.
  Model bad = good;
  bad.sets[bad.sets.size() - 2].members = {"192.0.2.128/26"};
  bad.sets.back().members = {"198.18.2.0/24"};
  for (auto& t : bad.tables[1])
    if (t.name == "filter") t.chains[0].rules.push_back("-j NO-SUCH-CHAIN");
  CHECK_THROWS_AS(apply_model(bad, "bad", false, {}, atomicity), RuntimeError);
  CHECK(members() == before);
  CHECK(test::ipset_text_now().find("fwe0-t-") == std::string::npos);
  CHECK(test::save_text() == v4);
  CHECK(test::save_text(true) == v6);
  CHECK(read_kernel().drift.empty());
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
  CHECK(inside.find(hook_line("INPUT", 1, "input")) != std::string::npos);
  CHECK(our_lines(test::save_text()).empty());  // the namespace this test runs in saw nothing
  CHECK(engine({"-f", policy, "diff"}).find("no difference") != std::string::npos);
  CHECK(engine({"status"}).find("backend iptables: IR ") == 0);
  engine({"flush"});
  CHECK(our_lines(run_tool({"ip", "netns", "exec", ns, "iptables-legacy-save"}).out).empty());
}

TEST_CASE("a failing table in the middle of IPv4 leaves the tables before it as they were", "[root]") {
  const Atomicity atomicity = GENERATE(Atomicity::ruleset, Atomicity::table);
  test::enter_scratch_netns();
  apply_model(render_ok(test::sample_ruleset()), "good", false);
  const std::string v4 = test::save_text(), v6 = test::save_text(true);
  // The tables before filter (raw, mangle, nat) commit before filter fails.
  Model bad = render_ok(test::tiny_ruleset());
  for (auto& t : bad.tables[0])
    if (t.name == "filter") t.chains[0].rules.push_back("-j NO-SUCH-CHAIN");
  bad.tables[0].insert(bad.tables[0].begin(), TableDef{"raw", {{"fwe-untracked-in", {"-j ACCEPT"}}}, {}});
  CHECK_THROWS_AS(apply_model(bad, "bad", false, {}, atomicity), RuntimeError);
  CHECK(test::save_text() == v4);
  CHECK(test::save_text(true) == v6);
}

TEST_CASE("a change of one table stays in its slot, a wider one switches slots at once", "[root]") {
  test::enter_scratch_netns();
  Model sample = render_ok(test::sample_ruleset());
  apply_model(sample, "a", false);
  // A rule deleted behind our back: the repair is one restore of IPv4 filter, in slot 1.
  std::string save = test::save_text();
  auto rule_at = save.find("-A fwe1-c-web ");
  REQUIRE(rule_at != std::string::npos);
  std::string rule = save.substr(rule_at + 3, save.find('\n', rule_at) - rule_at - 3);
  REQUIRE(run_tool({"iptables-legacy-restore", "--noflush"}, "*filter\n-D " + rule + "\nCOMMIT\n").status ==
          0);
  REQUIRE(test::save_text() != save);
  apply_model(sample, "a", false);
  CHECK(test::save_text() == save);
  CHECK(read_kernel().drift.empty());
  // Another ruleset changes both families: it is loaded into slot 2, and slot 1 goes.
  apply_model(render_ok(test::tiny_ruleset()), "c", false);
  CHECK(our_lines(test::save_text()).find("fwe1-") == std::string::npos);
  CHECK(our_lines(test::save_text(true)).find("fwe1-") == std::string::npos);
  CHECK(test::save_text().find(hook_line("INPUT", 2, "input")) != std::string::npos);
  std::string sets = test::ipset_text_now();
  CHECK(sets.find("add fwe2-gate fwe0-any4") != std::string::npos);
  CHECK(sets.find("add fwe1-gate") == std::string::npos);
  auto state = read_kernel();
  CHECK(state.ir_hash == "c");
  CHECK(state.drift.empty());
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
}

TEST_CASE("a log prefix changed only by a space reaches the kernel", "[root]") {
  test::enter_scratch_netns();
  auto rs = test::sample_ruleset();
  apply_model(render_ok(rs), "a", false);
  REQUIRE(test::save_text().find("--log-prefix \"fwe drop: \"") != std::string::npos);
  rs.chains.at("log-drops").rules.at(0).action.log_prefix = "fwe drop:";  // its trailing space gone
  apply_model(render_ok(rs), "b", false);
  CHECK(test::save_text().find("--log-prefix \"fwe drop:\"") != std::string::npos);
  CHECK(read_kernel().drift.empty());
}

namespace {
// The rule `tcp dport 22 accept` of the sample's chain web (both families) with another port.
ir::Ruleset sample_with_ssh_port(std::uint16_t port) {
  auto rs = test::sample_ruleset();
  rs.chains.at("web").rules.at(0).match.dst_port.at(0).ports = {{port, port}};
  return rs;
}

TEST_CASE("a rule of both families changed is one restore in each, in its slot", "[root]") {
  test::enter_scratch_netns();
  apply_model(render_ok(test::sample_ruleset()), "a", false);
  const std::string v4 = test::save_text(), v6 = test::save_text(true), sets = test::ipset_text_now();
  apply_model(render_ok(sample_with_ssh_port(2222)), "b", false);
  for (bool family6 : {false, true}) {
    const std::string now = test::save_text(family6);
    CHECK(now.find("-A fwe1-c-web -p tcp -m multiport --dports 2222 ") != std::string::npos);
    CHECK(our_lines(now).find("fwe2-") == std::string::npos);
  }
  CHECK(test::save_text().find(hook_line("INPUT", 1, "input")) != std::string::npos);
  CHECK(test::ipset_text_now() == sets);  // slot 1's sets, no new slot's
  auto state = read_kernel();
  CHECK(state.ir_hash == "b");
  CHECK(state.drift.empty());
  for (const auto& d : state.drift) UNSCOPED_INFO(d);

  // The next change's IPv6 table is refused after IPv4's went in: IPv4's is taken back.
  const std::string b4 = test::save_text(), b6 = test::save_text(true);
  Model bad = render_ok(sample_with_ssh_port(2223));
  for (auto& t : bad.tables[1])
    if (t.name == "filter")
      for (auto& chain : t.chains)
        if (chain.name == "fwe-c-web")
          chain.rules.push_back(
              "-m comment --comment \"fwe:0000000000000000 bad.yaml:9:9\" -j NO-SUCH-CHAIN");
  try {
    apply_model(bad, "c", false);
    FAIL("apply should have failed");
  } catch (const RuntimeError& e) {
    const std::string message = e.what();
    CHECK(message.find("ip6tables-legacy-restore failed") != std::string::npos);
    CHECK(message.find("nothing was changed: the previous ruleset is in place") != std::string::npos);
  }
  CHECK(test::save_text() == b4);
  CHECK(test::save_text(true) == b6);
  CHECK(read_kernel().ir_hash == "b");
  CHECK(read_kernel().drift.empty());
}

TEST_CASE("families whose records name different IR hashes are drift, which the next apply mends", "[root]") {
  // As an apply stopped between the two families leaves them: IPv6's fwe-meta still names the old IR.
  test::enter_scratch_netns();
  apply_model(render_ok(test::sample_ruleset()), "a", false);
  const std::string v6 = test::save_text(true);
  const std::string head = "-A fwe1-meta -m comment --comment \"fwe:ir a ";
  const auto at = v6.find(head);
  REQUIRE(at != std::string::npos);
  std::string spec = v6.substr(at + 13, v6.find('\n', at) - at - 13);  // after "-A fwe1-meta "
  spec.replace(spec.find("fwe:ir a "), 9, "fwe:ir z ");
  REQUIRE(run_tool({"ip6tables-legacy-restore", "--noflush"},
                   "*filter\n-D fwe1-meta 1\n-I fwe1-meta 1 " + spec + "\nCOMMIT\n")
              .status == 0);
  auto drift = read_kernel().drift;
  REQUIRE(drift.size() == 1);
  CHECK(drift[0] ==
        "ipv4 holds IR a, ipv6 IR z: an apply stopped between the two families; the next apply "
        "finishes the change");
  apply_model(render_ok(test::sample_ruleset()), "a", false);
  CHECK(test::save_text(true) == v6);
  CHECK(read_kernel().drift.empty());
}

// What an apply that died before its switch leaves in a slot (2 unless said): a hooked chain and a set
// (the hook gated by the slot's gate, which must exist).
void load_half_of_slot(int slot = 2) {
  const std::string prefix = "fwe" + std::to_string(slot) + "-";
  REQUIRE(run_tool({"ipset", "create", prefix + "4-half", "hash:net"}).status == 0);
  REQUIRE(run_tool({"iptables-legacy-restore", "--noflush"},
                   "*filter\n:" + prefix + "input - [0:0]\n-A " + prefix +
                       "input -m comment --comment half-loaded -j DROP\n-I INPUT 1 " +
                       hook_spec(prefix + "input") + "\nCOMMIT\n")
              .status == 0);
}
}  // namespace

TEST_CASE("what an interrupted apply left is switched off, reported and removed by the next apply",
          "[root]") {
  test::enter_scratch_netns();
  apply_model(render_ok(test::sample_ruleset()), "a", false);
  const auto before = read_kernel();
  // As if an apply had loaded slot 2 and died before the switch: a hooked chain and a set, gate off.
  load_half_of_slot();
  auto state = read_kernel();
  CHECK(state.ir_hash == "a");
  CHECK(state.text == before.text);
  REQUIRE(state.drift.size() == 1);
  CHECK(state.drift[0].find("left 1 chains and 1 ipsets beside the ruleset in effect") != std::string::npos);

  apply_model(render_ok(test::tiny_ruleset()), "b", false);
  CHECK(test::ipset_text_now().find("fwe2-4-half") == std::string::npos);
  CHECK(test::save_text().find("half-loaded") == std::string::npos);
  CHECK(read_kernel().drift.empty());
}

TEST_CASE("a first apply clears both slots' leftovers and switches on with the other slot's gate", "[root]") {
  test::enter_scratch_netns();
  // Leftovers in slot 2 with no gate on (an apply died before its switch, then the slot in effect was
  // flushed by hand): nothing is in effect.
  REQUIRE(run_tool({"ipset", "create", "fwe2-gate", "list:set"}).status == 0);
  load_half_of_slot();

  apply_model(render_ok(test::tiny_ruleset()), "first", false);
  const std::string sets = test::ipset_text_now();
  CHECK(sets.find("fwe2-4-half") == std::string::npos);
  CHECK(test::save_text().find("half-loaded") == std::string::npos);
  CHECK(sets.find(std::string(kTempSetPrefix)) == std::string::npos);  // no temporary gate to destroy
  CHECK(sets.find("add fwe1-gate fwe0-any4") != std::string::npos);
  CHECK(sets.find("add fwe1-gate fwe0-any6") != std::string::npos);
  CHECK(sets.find("add fwe2-gate") == std::string::npos);  // the spare gate gave its members away
  const KernelState state = read_kernel();
  CHECK(state.ir_hash == "first");
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());

  // The next apply switches back to slot 2 as usual.
  apply_model(render_ok(test::sample_ruleset()), "second", false);
  CHECK(test::ipset_text_now().find("add fwe2-gate fwe0-any4") != std::string::npos);
  CHECK(read_kernel().ir_hash == "second");

  // A gate in effect that lacks a family's set (a kill while a first apply filled it, a hand edit) is
  // drift, and the next apply, even one that changes nothing, puts the set back.
  REQUIRE(run_tool({"ipset", "del", "fwe2-gate", "fwe0-any6"}).status == 0);
  const KernelState half = read_kernel();
  REQUIRE(half.drift.size() == 1);
  CHECK(half.drift[0] ==
        "ipset fwe2-gate lacks fwe0-any6: IPv6 bypasses the ruleset; the next apply puts it back");
  apply_model(render_ok(test::sample_ruleset()), "second", false);
  CHECK(test::ipset_text_now().find("add fwe2-gate fwe0-any6") != std::string::npos);
  CHECK(read_kernel().drift.empty());

  // So is a set of the gate that no longer covers its family: half of IPv4 would bypass every hook.
  REQUIRE(run_tool({"ipset", "del", "fwe0-any4", "128.0.0.0/1"}).status == 0);
  const KernelState narrowed = read_kernel();
  REQUIRE(narrowed.drift.size() == 1);
  CHECK(narrowed.drift[0] ==
        "ipset fwe0-any4 no longer holds every IPv4 address: what it lacks bypasses the ruleset; the next "
        "apply puts it back");
  apply_model(render_ok(test::sample_ruleset()), "second", false);
  CHECK(test::ipset_text_now().find("add fwe0-any4 128.0.0.0/1") != std::string::npos);
  CHECK(read_kernel().drift.empty());
}

TEST_CASE("a first apply killed while it filled the spare gate is finished by the next apply", "[root]") {
  test::enter_scratch_netns();
  // As a kill between the two sets leaves it: slot 1 loaded with its gate empty, and the spare gate
  // (slot 2's, which no hook uses) holding one family's set only.
  apply_model(render_ok(test::tiny_ruleset()), "first", false);
  REQUIRE(run_tool({"ipset", "flush", "fwe1-gate"}).status == 0);
  REQUIRE(run_tool({"ipset", "add", "fwe2-gate", "fwe0-any4"}).status == 0);
  const KernelState killed = read_kernel();
  REQUIRE_FALSE(killed.drift.empty());
  CHECK(killed.drift[0].find("interrupted before its switch: no ruleset of fwengine's is switched on") !=
        std::string::npos);
  apply_model(render_ok(test::tiny_ruleset()), "again", false);
  const std::string sets = test::ipset_text_now();
  const bool in_one = sets.find("add fwe1-gate fwe0-any4") != std::string::npos &&
                      sets.find("add fwe1-gate fwe0-any6") != std::string::npos;
  const bool in_two = sets.find("add fwe2-gate fwe0-any4") != std::string::npos &&
                      sets.find("add fwe2-gate fwe0-any6") != std::string::npos;
  CHECK(in_one != in_two);  // one whole gate on, the other empty
  const KernelState state = read_kernel();
  CHECK(state.ir_hash == "again");
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());
}

TEST_CASE("a second gate switched on by hand is reported, and the next apply leaves one gate on", "[root]") {
  test::enter_scratch_netns();
  auto gates_on = [] {
    const std::string sets = test::ipset_text_now();
    std::string on;
    for (const char* slot : {"1", "2"})
      if (sets.find("add fwe" + std::string(slot) + "-gate fwe0-any4") != std::string::npos) on += slot;
    return on;
  };
  // Slot 1 in effect, slot 2 loaded too and its gate filled by hand: both rulesets filter.
  apply_model(render_ok(test::tiny_ruleset()), "first", false);
  load_half_of_slot();
  for (const char* any : {"fwe0-any4", "fwe0-any6"})
    REQUIRE(run_tool({"ipset", "add", "fwe2-gate", any}).status == 0);
  const KernelState both = read_kernel();
  CHECK(both.ir_hash == "first");  // slot 1's, which holds the whole ruleset
  REQUIRE_FALSE(both.drift.empty());
  CHECK(both.drift[0] ==
        "ipsets fwe1-gate and fwe2-gate both hold members: slot 2's ruleset is switched on beside the one in "
        "effect, and packets pass through both; the next apply loads slot 2 afresh and leaves one slot on");
  CHECK(both.drift.size() == 1);  // slot 2's chains are not leftovers
  // Slot 1 stays in effect until slot 2, emptied of what was there, holds the new ruleset.
  apply_model(render_ok(test::sample_ruleset()), "second", false);
  CHECK(gates_on() == "2");
  CHECK(test::save_text().find("half-loaded") == std::string::npos);
  KernelState state = read_kernel();
  CHECK(state.ir_hash == "second");
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());

  // A filled gate of a slot that holds nothing filters nothing, but it is not left for a later switch.
  REQUIRE(run_tool({"ipset", "add", "fwe1-gate", "fwe0-any4"}).status == 0);
  const KernelState stray = read_kernel();
  REQUIRE(stray.drift.size() == 1);
  CHECK(stray.drift[0] ==
        "ipset fwe1-gate holds members, but slot 1 holds no ruleset; the next apply loads slot 1 afresh and "
        "leaves one slot on");
  apply_model(render_ok(test::sample_ruleset()), "second", false);  // unchanged: would stay in place
  CHECK(gates_on() == "1");
  state = read_kernel();
  CHECK(state.ir_hash == "second");
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());

  // A half-loaded slot switched on beside a whole one (slot 1's gate comes first here) is not taken for
  // the one in effect: the whole one stays until the next apply's ruleset replaces the half one.
  apply_model(render_ok(test::tiny_ruleset()), "third", false);
  REQUIRE(gates_on() == "2");
  load_half_of_slot(1);
  for (const char* any : {"fwe0-any4", "fwe0-any6"})
    REQUIRE(run_tool({"ipset", "add", "fwe1-gate", any}).status == 0);
  const KernelState half = read_kernel();
  CHECK(half.ir_hash == "third");
  REQUIRE_FALSE(half.drift.empty());
  CHECK(half.drift[0].find("slot 1's ruleset is switched on beside the one in effect") != std::string::npos);
  apply_model(render_ok(test::sample_ruleset()), "fourth", false);
  CHECK(gates_on() == "1");
  CHECK(test::save_text().find("half-loaded") == std::string::npos);
  state = read_kernel();
  CHECK(state.ir_hash == "fourth");
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());
}

TEST_CASE("real traffic: a run's set counts the hits of each source rule", "[root]") {
  test::enter_scratch_netns();
  REQUIRE(run_tool({"ip", "link", "set", "lo", "up"}).status == 0);
  apply_model(render_ok(test::runs_ruleset()), "hash-runs", false);
  CHECK(test::ipset_text_now().find("create fwe1-4r-filter-list-1 hash:net,port family inet") !=
        std::string::npos);
  auto connect = [](const std::string& address, int port) {
    std::string script = "echo > /dev/tcp/" + address + "/" + std::to_string(port);
    return run_tool({"timeout", "2", "bash", "-c", script}).status;
  };
  CHECK(connect("127.0.0.2", 7002) == 1);    // in the set: let in, refused by the closed port
  CHECK(connect("127.0.0.2", 7003) == 124);  // 7003 is 127.0.0.3's: dropped, timed out
  KernelState state = read_kernel();
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());
  std::map<std::string, std::uint64_t> hits;
  for (const auto& c : state.counters)
    if (c.chain.rfind("ipset/", 0) == 0) hits[c.where] += c.packets;
  CHECK(hits.size() == 8);  // the members of both runs
  CHECK(hits["runs.yaml:16:3"] > 0);
  CHECK(hits["runs.yaml:17:3"] == 0);
  // A member deleted behind our back is a rule gone: drift.
  REQUIRE(run_tool({"ipset", "del", "fwe1-4r-filter-list-1", "127.0.0.3,tcp:7003"}).status == 0);
  auto drift = read_kernel().drift;
  REQUIRE(drift.size() == 1);
  CHECK(drift[0].find("rules were deleted, added or moved since apply") != std::string::npos);
}

TEST_CASE("a switch of slots keeps the counters of the chains it does not change", "[root]") {
  test::enter_scratch_netns();
  REQUIRE(run_tool({"ip", "link", "set", "lo", "up"}).status == 0);
  // With a state directory, so that the switch starts from the record of the first apply, which has no
  // counters.
  const StateDir state;
  const ir::Ruleset rs = test::runs_ruleset();
  apply_model(render_ok(rs), "before", false, state.path);
  REQUIRE(HeldTables::load(state.path));
  REQUIRE(run_tool({"timeout", "2", "bash", "-c", "echo > /dev/tcp/127.0.0.2/7002"}).status == 1);  // counted
  // Under the model's names: the chains move from slot 1 to slot 2.
  auto counted = [] {
    ChainCounters chains;
    for (auto& [name, counters] : counters_by_chain()) chains[in_slot(name, 0)] = std::move(counters);
    return chains;
  };
  const auto before = counted();
  // A set added, so the ruleset comes in the other slot; list changed, the chains that jump to it did not.
  const ir::Ruleset wider = with_a_set_added(rs);
  apply_model(render_ok(wider), "after", false, state.path);
  CHECK(test::save_text().find("fwe2-") != std::string::npos);
  CHECK(test::save_text().find("fwe1-") == std::string::npos);
  CHECK(kept_counters(before, counted()) >
        0);  // the hook's chain and the endpoint's had counted the connection
  CHECK(read_kernel().drift.empty());
  // A full apply starts every counter from zero, as a full replace does in nft.
  apply_model(render_ok(wider), "full", true);
  for (const auto& [chain, counters] : counted())
    for (const auto& c : counters) CHECK(c == "0:0");
}

TEST_CASE(
    "atomic=table: a wider change is made table by table where the ruleset is, as a fresh apply makes it",
    "[root]") {
  // Both families, several tables and the sets change: in place, every table ends as a first apply of the
  // new ruleset leaves it, and slot 2 is never used.
  test::enter_scratch_netns();
  apply_model(render_ok(test::sample_ruleset()), "a", false, {}, Atomicity::table);
  apply_model(render_ok(test::tiny_ruleset()), "b", false, {}, Atomicity::table);
  const std::string v4 = test::save_text(), v6 = test::save_text(true), sets = test::ipset_text_now();
  // (The spare gate, fwe2-gate, is there from the first apply on.)
  const std::regex slot_2("fwe2-(?!gate)");
  CHECK(!std::regex_search(v4 + v6 + sets, slot_2));
  auto state = read_kernel();
  CHECK(state.ir_hash == "b");
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());
  // And back: the sample's sets are made again, the tiny ruleset's go.
  apply_model(render_ok(test::sample_ruleset()), "a", false, {}, Atomicity::table);
  CHECK(!std::regex_search(test::save_text() + test::ipset_text_now(), slot_2));
  CHECK(read_kernel().drift.empty());

  test::enter_scratch_netns();
  apply_model(render_ok(test::tiny_ruleset()), "b", false);
  // (Our lines only: the kernel lists a table, empty or not, once something used it.)
  CHECK(our_lines(test::save_text()) == our_lines(v4));
  CHECK(our_lines(test::save_text(true)) == our_lines(v6));
  // The sets and their members: a set changed in place keeps the size it was made with, and the order of
  // its members is its hash seed's.
  auto members = [](const std::string& save) {
    std::istringstream in(save);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
      out.push_back(line.rfind("create ", 0) == 0 ? line.substr(0, line.find(' ', line.find(' ', 7) + 1))
                                                  : line);
    std::sort(out.begin(), out.end());
    return out;
  };
  CHECK(members(test::ipset_text_now()) == members(sets));
}

TEST_CASE("atomic=table: a set added leaves every unchanged chain as it was, with its counters", "[root]") {
  test::enter_scratch_netns();
  REQUIRE(run_tool({"ip", "link", "set", "lo", "up"}).status == 0);
  const ir::Ruleset rs = test::runs_ruleset();
  apply_model(render_ok(rs), "before", false, {}, Atomicity::table);
  REQUIRE(run_tool({"timeout", "2", "bash", "-c", "echo > /dev/tcp/127.0.0.2/7002"}).status == 1);  // counted
  const auto before = counters_by_chain();
  apply_model(render_ok(with_a_set_added(rs)), "after", false, {}, Atomicity::table);
  CHECK(test::ipset_text_now().find("create fwe1-4-five hash:net") != std::string::npos);
  const auto after = counters_by_chain();
  for (const auto& [chain, counters] : after) CHECK(chain.rfind("fwe1-", 0) == 0);  // in its slot
  CHECK(kept_counters(before, after) > 0);  // the hook's chain and the endpoint's had counted the connection
  auto state = read_kernel();
  CHECK(state.ir_hash == "after");
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());
  // The set goes again, where it is.
  apply_model(render_ok(rs), "again", false, {}, Atomicity::table);
  CHECK(test::ipset_text_now().find("five") == std::string::npos);
  CHECK(counters_by_chain().at("fwe1-input") == before.at("fwe1-input"));
  CHECK(read_kernel().drift.empty());
}

TEST_CASE("lines inserted above a policy rewrite no rule: counters stay, and read_back names the new lines",
          "[root]") {
  test::enter_scratch_netns();
  REQUIRE(run_tool({"ip", "link", "set", "lo", "up"}).status == 0);
  const ir::Ruleset rs = test::runs_ruleset();
  apply_model(render_ok(rs), "before", false);
  auto connect = [](const std::string& address, int port) {
    return run_tool({"timeout", "2", "bash", "-c", "echo > /dev/tcp/" + address + "/" + std::to_string(port)})
        .status;
  };
  REQUIRE(connect("127.0.0.2", 7002) == 1);  // a member of a run: counted
  auto rules_but_meta = [](bool family6) {   // with their counters
    std::string out;
    const auto save = run_tool({family6 ? "ip6tables-legacy-save" : "iptables-legacy-save", "-c"});
    std::istringstream in(our_lines(save.out));
    for (std::string line; std::getline(in, line);)
      if (line.find("-meta") == std::string::npos) out += line + '\n';
    return out;
  };
  const std::string v4 = rules_but_meta(false), v6 = rules_but_meta(true), sets = test::ipset_text_now();

  apply_model(render_ok(test::moved_down(rs, 4)), "after", false);
  // Every rule and member as it was, with its counters; only fwe-meta's records changed.
  CHECK(rules_but_meta(false) == v4);
  CHECK(rules_but_meta(true) == v6);
  CHECK(test::ipset_text_now() == sets);
  KernelState state = read_kernel();
  for (const auto& d : state.drift) UNSCOPED_INFO(d);
  CHECK(state.drift.empty());
  CHECK(state.ir_hash == "after");
  std::map<std::string, std::uint64_t> hits;
  for (const auto& c : state.counters)
    if (c.chain.rfind("ipset/", 0) == 0) hits[c.where] += c.packets;
  CHECK(hits["runs.yaml:20:3"] > 0);  // line 16 before
  CHECK(hits.count("runs.yaml:16:3") == 0);
  for (const auto& c : state.counters)
    if (!c.where.empty()) CHECK(c.origin.policy == c.where + " test policy");
}

namespace {
// runs_ruleset with the rule to 127.0.0.5 (line 19, a member of run set fwe-4r-filter-list-1) on `port`.
ir::Ruleset runs_with_last_port(std::uint16_t port) {
  auto rs = test::runs_ruleset();
  rs.chains.at("list").rules.back().match.dst_port.at(0).ports = {{port, port}};
  return rs;
}
}  // namespace

TEST_CASE("a set's changed members are added and deleted where it is: the others keep their counters",
          "[root]") {
  test::enter_scratch_netns();
  REQUIRE(run_tool({"ip", "link", "set", "lo", "up"}).status == 0);
  const StateDir state;
  apply_model(render_ok(test::runs_ruleset()), "a", false, state.path);
  REQUIRE(std::filesystem::exists(state.path + "/sets"));
  REQUIRE(run_tool({"timeout", "2", "bash", "-c", "echo > /dev/tcp/127.0.0.2/7002"}).status == 1);
  auto hits = [] {
    std::map<std::string, std::uint64_t> out;
    for (const auto& c : read_kernel().counters)
      if (c.chain.rfind("ipset/", 0) == 0) out[c.where] += c.packets;
    return out;
  };
  const std::uint64_t counted = hits()["runs.yaml:16:3"];
  REQUIRE(counted > 0);
  const std::string v4 = test::save_text(), v6 = test::save_text(true);

  apply_model(render_ok(runs_with_last_port(7015)), "b", false, state.path);
  std::string sets = test::ipset_text_now();
  CHECK(sets.find("add fwe1-4r-filter-list-1 127.0.0.5,tcp:7015") != std::string::npos);
  CHECK(sets.find("127.0.0.5,tcp:7005") == std::string::npos);
  CHECK(sets.find("fwe2-4") == std::string::npos);
  CHECK(hits()["runs.yaml:16:3"] == counted);  // the member that stayed kept its hits
  auto state_now = read_kernel();
  for (const auto& d : state_now.drift) UNSCOPED_INFO(d);
  CHECK(state_now.drift.empty());
  CHECK(state_now.ir_hash == "b");

  // A rule moved within its policy (a line inserted above it): its member gets its new comment and
  // keeps its counter.
  REQUIRE(run_tool({"timeout", "2", "bash", "-c", "echo > /dev/tcp/127.0.0.5/7015"}).status == 1);
  const std::uint64_t last = hits()["runs.yaml:19:3"];
  REQUIRE(last > 0);
  auto moved = runs_with_last_port(7015);
  ++moved.chains.at("list").rules.back().origin.loc.line;
  apply_model(render_ok(moved), "c", false, state.path);
  CHECK(test::ipset_text_now().find("fwe2-4") == std::string::npos);
  CHECK(hits()["runs.yaml:20:3"] == last);
  CHECK(hits()["runs.yaml:16:3"] == counted);
  CHECK(read_kernel().drift.empty());

  // The next change's IPv6 table is refused after IPv4's members changed: they are put back.
  sets = test::ipset_text_now();
  const std::string c4 = test::save_text(), c6 = test::save_text(true);
  auto refused = moved;
  refused.chains.at("list").rules.back().match.dst_port.at(0).ports = {{7025, 7025}};
  Model bad = render_ok(refused);
  for (auto& t : bad.tables[1])
    if (t.name == "filter")
      for (auto& chain : t.chains)
        if (chain.name == "fwe-c-list")
          chain.rules.push_back(
              "-m comment --comment \"fwe:0000000000000000 bad.yaml:9:9\" -j NO-SUCH-CHAIN");
  try {
    apply_model(bad, "d", false, state.path);
    FAIL("apply should have failed");
  } catch (const RuntimeError& e) {
    const std::string message = e.what();
    CHECK(message.find("ip6tables-legacy-restore failed") != std::string::npos);
    CHECK(message.find("nothing was changed: the previous ruleset is in place") != std::string::npos);
  }
  // The members as they were, in ipset's order of the moment; the one put back counts from zero.
  auto members = [](const std::string& text) {
    static const std::regex counters(" packets [0-9]+ bytes [0-9]+");
    std::istringstream in(std::regex_replace(text, counters, ""));
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::sort(lines.begin(), lines.end());
    return lines;
  };
  CHECK(members(test::ipset_text_now()) == members(sets));
  CHECK(test::save_text() == c4);
  CHECK(test::save_text(true) == c6);
  CHECK(read_kernel().ir_hash == "c");
  CHECK(read_kernel().drift.empty());
  CHECK(hits()["runs.yaml:16:3"] == counted);
}

TEST_CASE("an apply stopped half-way through changing members leaves its mark: the next switches slots",
          "[root]") {
  test::enter_scratch_netns();
  const StateDir state;
  const std::string mark = state.path + "/sets.changing";
  apply_model(render_ok(test::runs_ruleset()), "a", false, state.path);
  apply_model(render_ok(runs_with_last_port(7015)), "b", false, state.path);
  CHECK(!std::filesystem::exists(mark));
  // What a kill leaves between the members' change and fwe-meta's: members that fwe-meta's digest does
  // not describe, and the mark.
  REQUIRE(run_tool({"ipset", "del", "fwe1-4r-filter-list-1", "127.0.0.5,tcp:7015"}).status == 0);
  { std::ofstream{mark}; }
  // The same policy again: fwe-meta's digests equal the model's, yet the members are loaded afresh.
  apply_model(render_ok(runs_with_last_port(7015)), "b", false, state.path);
  const std::string sets = test::ipset_text_now();
  CHECK(sets.find("add fwe2-4r-filter-list-1 127.0.0.5,tcp:7015") != std::string::npos);
  CHECK(sets.find("fwe1-4") == std::string::npos);
  CHECK(!std::filesystem::exists(mark));
  auto now = read_kernel();
  for (const auto& d : now.drift) UNSCOPED_INFO(d);
  CHECK(now.drift.empty());
}

TEST_CASE("a set that outgrew its maxelem gets a fresh one when its new members would not fit", "[root]") {
  test::enter_scratch_netns();
  const StateDir state;
  // tiny_ruleset's set admins holding `count` hosts 10.x.y.z (z even), from the from-th on.
  auto admins = [](std::size_t from, std::size_t count) {
    auto rs = test::tiny_ruleset();
    auto& cidrs = rs.sets.at("admins").cidrs;
    cidrs.clear();
    for (std::size_t i = from; i < from + count; ++i)
      cidrs.push_back(*ir::parse_cidr("10." + std::to_string(i >> 15) + "." + std::to_string((i >> 7) & 255) +
                                      "." + std::to_string((i & 127) * 2) + "/32"));
    return rs;
  };
  auto entries = [] {
    const auto listed = run_tool({"ipset", "list", "-t", "fwe1-4-admins"}).out;
    static const std::regex number("Number of entries: ([0-9]+)");
    std::smatch m;
    return std::regex_search(listed, m, number) ? std::stoul(m[1]) : 0ul;
  };
  apply_model(render_ok(admins(0, 40000)), "a", false, state.path);  // maxelem 80,000
  apply_model(render_ok(admins(0, 79000)), "b", false, state.path);  // 39,000 added where it is
  CHECK(entries() == 79000);
  CHECK(run_tool({"ipset", "list", "-t", "fwe1-4-admins"}).out.find("maxelem 80000") != std::string::npos);
  // 2,000 more before 2,000 go would make 81,000: the set is made afresh (maxelem 158,000) and swapped in.
  apply_model(render_ok(admins(2000, 79000)), "c", false, state.path);
  CHECK(entries() == 79000);
  CHECK(run_tool({"ipset", "list", "-t", "fwe1-4-admins"}).out.find("maxelem 158000") != std::string::npos);
  CHECK(test::ipset_text_now().find("fwe2-4") == std::string::npos);
  CHECK(test::ipset_text_now().find("fwe0-t-") == std::string::npos);
  auto now = read_kernel();
  for (const auto& d : now.drift) UNSCOPED_INFO(d);
  CHECK(now.drift.empty());
  CHECK(now.ir_hash == "c");
}

TEST_CASE("sets made over netlink are those ipset restore makes of the rendered text, and list the same",
          "[root]") {
  test::enter_scratch_netns();
  std::vector<SetDef> sets = {
      {"fwe1-4r-x",
       IpFamily::v4,
       {"10.0.0.0/24,tcp:1000", "127.0.0.2,udp:53", "192.0.2.0/25,sctp:9"},
       std::string(kRunSet),
       {"runs.yaml:10:3", "runs.yaml:11:3", ""}},
      {"fwe1-6r-x",
       IpFamily::v6,
       {"fd00::/64,tcp:22", "2001:db8::1,udplite:7"},
       std::string(kRunSet),
       {"a.yaml:1:1 p#0", "a.yaml:2:1 p#1"}},
      {"fwe1-4-admins", IpFamily::v4, {"203.0.113.12", "198.51.100.0/24"}},
      {"fwe1-6-admins", IpFamily::v6, {"2001:db8:1::/48", "fe80::1"}},
  };
  // A set larger than one message holds.
  SetDef big{"fwe1-4-big", IpFamily::v4, {}};
  for (int i = 0; i < 5000; ++i)
    big.members.push_back("10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24");
  sets.push_back(big);
  // Without the hash seed (initval) and what it decides: the order of the members and the size the
  // table grew to.
  auto sorted_lines = [](const std::string& save) {
    std::istringstream in(std::regex_replace(save, std::regex(" initval 0x[0-9a-f]+| hashsize [0-9]+"), ""));
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::sort(lines.begin(), lines.end());
    return lines;
  };
  // A large set starts with buckets for its members (the default 1,024 would double once on the way).
  const std::string big_header = "create fwe1-4-big hash:net family inet hashsize 4096 maxelem 65536";
  Ipset ipset;
  for (const auto& set : sets) REQUIRE(ipset.create(set, set.name).ok());
  REQUIRE(ipset.create_list("fwe1-gate").ok());
  REQUIRE(ipset.add_to_list("fwe1-gate", "fwe1-4-admins").ok());
  CHECK(test::ipset_text_now().find(big_header) != std::string::npos);
  const auto ours = sorted_lines(test::ipset_text_now());

  auto listed = ipset.list(true);
  REQUIRE(listed.size() == sets.size() + 1);
  for (const auto& set : sets) {
    auto k =
        std::find_if(listed.begin(), listed.end(), [&](const KernelSet& s) { return s.name == set.name; });
    REQUIRE(k != listed.end());
    CHECK(k->family == family_name(set.family));
    CHECK(k->type == set.type);
    auto members = test::strings_of(k->members), want = test::strings_of(set.members);
    std::sort(members.begin(), members.end());
    std::sort(want.begin(), want.end());
    CHECK(members == want);
    if (set.type == kRunSet) {
      REQUIRE(k->extras.size() == set.members.size());
      const std::vector<std::string> ours = test::strings_of(set.members);
      for (std::size_t i = 0; i < k->members.size(); ++i) {
        auto at = std::find(ours.begin(), ours.end(), k->members[i]) - ours.begin();
        CHECK(k->extras[i].comment == set.comments[static_cast<std::size_t>(at)]);
      }
    }
  }
  auto gate = ipset.list(true, "fwe1-gate");
  REQUIRE(gate.size() == 1);
  CHECK(test::strings_of(gate[0].members) == std::vector<std::string>{"fwe1-4-admins"});
  CHECK(ipset.list(false, "fwe1-absent").empty());

  // Made again from the text `render` prints, by the ipset tool.
  REQUIRE(ipset.destroy("fwe1-gate").ok());
  for (const auto& set : sets) REQUIRE(ipset.destroy(set.name).ok());
  CHECK(ipset.list(false).empty());
  REQUIRE(run_tool({"ipset", "restore"},
                   ipset_text(sets) + "create fwe1-gate list:set\nadd fwe1-gate fwe1-4-admins\n")
              .status == 0);
  CHECK(test::ipset_text_now().find(big_header) != std::string::npos);
  CHECK(sorted_lines(test::ipset_text_now()) == ours);

  // Errors name the command and say what the kernel said.
  auto clash = ipset.create({"fwe1-4r-x", IpFamily::v4, {}}, "fwe1-4r-x");
  CHECK(!clash.ok());
  CHECK(clash.message == "ipset create fwe1-4r-x: a set of that name exists with other settings");
  auto referenced = ipset.destroy("fwe1-4-admins");
  CHECK(referenced.busy());
  CHECK(referenced.message == "ipset destroy fwe1-4-admins: the set is in use by a kernel component");
  CHECK(ipset.swap("fwe1-4-admins", "fwe1-absent").message ==
        "ipset swap fwe1-4-admins fwe1-absent: the second set does not exist");
}

namespace {
// Our chains, their rules and our hooks in a save's text (or a record's), one line each, sorted; no
// counters.
std::vector<std::string> ours_listed(std::string_view save) {
  std::vector<std::string> out;
  for (const auto& table : parse_save(save)) {
    for (const auto& chain : table.chains) {
      out.push_back(table.name + " :" + chain.name);
      for (std::size_t i = 0; i < chain.rules.size(); ++i)
        out.push_back(table.name + ' ' + chain.name + ' ' + std::to_string(i) + ' ' + chain.rules[i].spec);
    }
    for (const auto& hook : table.hooks)
      out.push_back(table.name + ' ' + hook.builtin + ' ' + std::to_string(hook.position) + ' ' + hook.spec);
  }
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

TEST_CASE("an apply reads our chains from the last one's record while nobody changed the tables", "[root]") {
  test::enter_scratch_netns();
  REQUIRE(run_tool({"ip", "link", "set", "lo", "up"}).status == 0);
  const StateDir state;
  auto apply_trusting = [&](const ir::Ruleset& rs, std::string_view hash) {
    const auto failing = failing_saves();
    apply_model(render_ok(rs), hash, false, state.path);
  };
  // The record lists what a save lists, and was taken of the tables as they are.
  auto check_record = [&] {
    const auto held = HeldTables::load(state.path);
    REQUIRE(held);
    CHECK(held->fingerprint == tables_fingerprint());
    CHECK(ours_listed(held->text[0]) == ours_listed(run_tool({"iptables-legacy-save"}).out));
    CHECK(ours_listed(held->text[1]) == ours_listed(run_tool({"ip6tables-legacy-save"}).out));
    const auto now = read_kernel();
    for (const auto& d : now.drift) UNSCOPED_INFO(d);
    CHECK(now.drift.empty());
  };

  apply_model(render_ok(test::sample_ruleset()), "a", false, state.path);
  check_record();
  // Packets our rules count change no fingerprint.
  REQUIRE(run_tool({"timeout", "2", "bash", "-c", "echo > /dev/tcp/127.0.0.1/22"}).status == 1);
  const std::string counted = run_tool({"iptables-legacy-save", "-c"}).out;
  REQUIRE(counted.find(hook_line("INPUT", 1, "input")) != std::string::npos);
  CHECK(counted.find("[0:0] " + hook_line("INPUT", 1, "input")) == std::string::npos);

  apply_trusting(sample_with_ssh_port(2222), "b");  // a rule of both families changed in place
  CHECK(test::save_text().find("-A fwe1-c-web -p tcp -m multiport --dports 2222 ") != std::string::npos);
  CHECK(read_kernel().ir_hash == "b");
  check_record();
  const std::string v4 = test::save_text(), v6 = test::save_text(true);
  apply_trusting(sample_with_ssh_port(2222), "b");  // nothing to change
  CHECK(test::save_text() == v4);
  CHECK(test::save_text(true) == v6);

  // A switch of slots reads the counters it carries; its record holds the other slot.
  apply_model(render_ok(test::tiny_ruleset()), "c", false, state.path);
  CHECK(test::save_text().find(":fwe2-c-web - [0:0]") != std::string::npos);
  check_record();
  apply_trusting(test::tiny_ruleset(), "d");  // only fwe-meta's IR hash changes
  CHECK(read_kernel().ir_hash == "d");
  check_record();

  // Any change by anyone else makes the next apply read the kernel, which mends ours.
  REQUIRE(run_tool({"iptables-legacy", "-A", "fwe2-c-web", "-j", "ACCEPT"}).status == 0);
  CHECK_THROWS_WITH(apply_trusting(test::tiny_ruleset(), "d"), Catch::Contains("no save here"));
  apply_model(render_ok(test::tiny_ruleset()), "d", false, state.path);
  CHECK(test::save_text().find("-A fwe2-c-web -j ACCEPT") == std::string::npos);
  check_record();
  REQUIRE(run_tool({"ip6tables-legacy", "-N", "ADMIN"}).status == 0);
  CHECK_THROWS_WITH(apply_trusting(test::tiny_ruleset(), "e"), Catch::Contains("no save here"));
  // A full apply starts from the kernel, and leaves a record too.
  apply_model(render_ok(test::tiny_ruleset()), "e", true, state.path);
  check_record();
  apply_trusting(test::tiny_ruleset(), "f");
  CHECK(read_kernel().ir_hash == "f");
}

TEST_CASE("an apply leaves no record of tables that another writer changed while it ran", "[root]") {
  test::enter_scratch_netns();
  const StateDir state;
  const Model a = render_ok(test::sample_ruleset()), b = render_ok(sample_with_ssh_port(2222));
  // The other writer's change comes right after each IPv4 load of the apply (the script runs the real
  // tools found past its own directory in PATH, and answers as the load did; the change is checked by its
  // effect): each apply below changes a chain, so that it loads one.
  auto apply_while = [&](const Model& model, const std::string& other_writer) {
    const ScriptedTools tools(
        {{"iptables-legacy-restore",
          "PATH=\"${PATH#*:}\"\niptables-legacy-restore \"$@\" || exit\n" + other_writer + "\nexit 0\n"}});
    apply_model(model, "a", false, state.path);
  };
  auto hook_first = [](std::string_view builtin, std::string_view stage) {
    const std::string save = test::save_text();
    return save.find("-A " + std::string(builtin) + ' ') == save.find(hook_line(builtin, 1, stage));
  };
  auto record_true = [&] {
    const auto held = HeldTables::load(state.path);
    return held && held->fingerprint == tables_fingerprint();
  };

  // Docker-like: a rule inserted above our hook.
  apply_while(a, "iptables-legacy -w -I INPUT 1 -s 192.0.2.9 -j ACCEPT");
  CHECK_FALSE(HeldTables::load(state.path));
  CHECK_FALSE(hook_first("INPUT", "input"));
  apply_model(a, "a", false, state.path);  // reads the kernel, and puts the hook back on top
  CHECK(hook_first("INPUT", "input"));
  CHECK(record_true());

  // An admin's rule appended to a chain of ours.
  apply_while(b, "iptables-legacy -w -A fwe1-input -s 192.0.2.9 -j ACCEPT");
  CHECK_FALSE(HeldTables::load(state.path));
  apply_model(b, "a", false, state.path);
  CHECK(test::save_text().find("-A fwe1-input -s 192.0.2.9/32 -j ACCEPT") == std::string::npos);
  CHECK(record_true());

  // A chain named as ours that the model lacks, in the other family.
  apply_while(a, "ip6tables-legacy -w -N fwe2-left");
  CHECK_FALSE(HeldTables::load(state.path));
  REQUIRE(run_tool({"ip6tables-legacy", "-X", "fwe2-left"}).status == 0);
  apply_model(a, "a", false, state.path);
  CHECK(record_true());

  // A copy of a hook put above it, without the gate: the next apply removes both, and hooks anew.
  apply_while(b, "iptables-legacy -w -I INPUT 1 -m comment --comment fwe:hook -j fwe1-input");
  CHECK_FALSE(HeldTables::load(state.path));
  apply_model(b, "a", false, state.path);
  CHECK(hook_first("INPUT", "input"));
  const std::string save = test::save_text();
  CHECK(save.find("-j fwe1-input") == save.rfind("-j fwe1-input"));
  CHECK(record_true());
}
