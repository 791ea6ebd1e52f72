// test_kernel.cpp - [root] tests: every body runs in a forked child inside a fresh network namespace.
#include <catch2/catch.hpp>

#include <linux/netfilter/nf_tables.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string_view>

#include "backend.hpp"
#include "netlink.hpp"
#include "test_support.hpp"
#include "translate.hpp"

using namespace fwe;
using nft_test::in_scratch_netns;
using nft_test::shell;

namespace {

// A directory of its own for the backend's state, removed with the object.
struct StateDir {
  std::string path;
  StateDir() {
    char name[] = "/tmp/fwe-nft-state-XXXXXX";
    REQUIRE(mkdtemp(name) != nullptr);
    path = name;
  }
  ~StateDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  StateDir(const StateDir&) = delete;
  StateDir& operator=(const StateDir&) = delete;
};

std::string list_ours() {
  return shell("nft list table inet fwengine 2>&1");
}

void load_with_nft(const std::string& text) {
  char path[] = "/tmp/fwe-nft-test-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << text;
  try {
    shell(std::string("nft -f ") + path + " 2>&1");
  } catch (...) {
    std::remove(path);
    throw;
  }
  std::remove(path);
}

// What `nft list` shows of our table once apply_table(table) sent it, in one scratch namespace; checked
// to be what `nft -f` of the table's text loads in another.
std::string applied_as_nft_loads(const nft::Table& table) {
  auto applied = in_scratch_netns([&] {
    nft::Connection connection;
    nft::apply_table(connection, table);
    return list_ours();
  });
  auto loaded = in_scratch_netns([&] {
    load_with_nft(table.text());
    return list_ours();
  });
  INFO(applied.output);
  REQUIRE(applied.exit_code == 0);
  REQUIRE(loaded.exit_code == 0);
  CHECK(applied.output == loaded.output);
  return applied.output;
}

nft::Table small_table() {
  Diagnostics diag;
  auto table = nft::translate(nft_test::small_ruleset(), diag);
  REQUIRE_FALSE(diag.has_errors());
  return table;
}

// Applies the small table, then a copy that spoil made the kernel refuse: "unchanged\n" (or "changed\n")
// as our table compares with the first, then the refusal's text.
std::string refused_after_small_table(const std::function<void(nft::Table&)>& spoil) {
  nft::Table good = small_table();
  nft::Connection connection;
  nft::apply_table(connection, good);
  const std::string before = list_ours();
  nft::Table bad = good;
  spoil(bad);
  std::string error;
  try {
    nft::apply_table(connection, bad);
  } catch (const RuntimeError& e) {
    error = e.what();
  }
  return (before == list_ours() ? std::string("unchanged\n") : std::string("changed\n")) + error;
}

// The small ruleset's ssh rule edited by hand in place (nft replace rule): its port changed, its comment,
// and so its stamp, kept.
void edit_ssh_rule_in_place() {
  shell(
      "c=$(nft list table inet fwengine | grep -o 'chain c-allow-ssh[^ ]*' | cut -d' ' -f2); "
      "line=$(nft -a list chain inet fwengine $c | grep 'dport 22 '); "
      "rule=$(echo \"${line%% # handle*}\" | sed 's/dport 22 /dport 2323 /; s/packets [0-9]* bytes "
      "[0-9]*//'); "
      "nft \"replace rule inet fwengine $c handle ${line##*# handle } $rule\"");
}

std::unique_ptr<nft::NftBackend> backend() {
  return std::make_unique<nft::NftBackend>(PluginContext{});
}

// What the kernel announces (nft monitor) about table inet fwengine from construction on. The monitor
// writes line by line (a signal ends it), and timeout ends it should a test's child end without its
// destructors.
class KernelEvents {
 public:
  KernelEvents() : pid_(shell("timeout 60 stdbuf -oL nft monitor > " + events_ + " 2>&1 & echo -n $!")) {
    probe("fwe-probe-before");
  }
  ~KernelEvents() { shell("kill " + pid_ + " 2>/dev/null; true"); }
  KernelEvents(const KernelEvents&) = delete;
  KernelEvents& operator=(const KernelEvents&) = delete;
  // The lines about our table so far that start with `verb` ("": all of them).
  std::string ours(std::string_view verb) {
    probe("fwe-probe-after");
    std::ifstream in(events_);
    std::string out, line;
    while (std::getline(in, line))
      if (line.starts_with(verb) && line.find(" inet fwengine") != std::string::npos) out += line + "\n";
    return out;
  }

 private:
  // Until a probe table's deletion shows: the monitor listens, and what came before it is written.
  void probe(const std::string& table) {
    shell("for i in $(seq 50); do nft add table inet " + table + "; nft delete table inet " + table +
          "; grep -q 'delete table inet " + table + "' " + events_ + " && exit 0; sleep 0.1; done; exit 1");
  }
  StateDir dir_;
  std::string events_ = dir_.path + "/events";
  std::string pid_;
};

// The small ruleset applied with a record of its sets, as apply does: where the drift tests start.
struct SmallApplied {
  std::unique_ptr<nft::NftBackend> nft = backend();
  Diagnostics diag;
  StateDir state;
  std::unique_ptr<Plan> plan = nft->render(nft_test::small_ruleset(), diag);
  SmallApplied() { apply(); }
  void apply() { nft->apply(*plan, {false, "aaaa", state.path}); }
};

constexpr const char* kForeignTable = R"(table ip kube-proxy-like {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.1 tcp dport 443 counter dnat to 192.168.0.10:6443
	}
}
)";

// Another program's table in our family, hooked where ours is.
constexpr const char* kForeignInetTable = R"(table inet docker-like {
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "docker0" oifname != "docker0" counter accept
	}
}
)";

}  // namespace

TEST_CASE("apply sends what nft -f of the rendered text loads", "[root]") {
  nft_test::require_root();
  bool sink = GENERATE(false, true);
  Diagnostics diag;
  nft::Table table =
      nft::translate(sink ? nft_test::kitchen_sink_ruleset() : nft_test::small_ruleset(), diag);
  REQUIRE_FALSE(diag.has_errors());
  std::string applied = applied_as_nft_loads(table);
  CHECK(applied.find("ip saddr @s-admins_v4.7d4f95b2c93b1f15 tcp dport 22 counter packets 0 bytes 0") !=
        std::string::npos);
  CHECK(applied.find("__set") == std::string::npos);
}

TEST_CASE("apply twice replaces the table, read_back finds hash and counters", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    auto nft = backend();
    Diagnostics diag;
    auto plan = nft->render(nft_test::small_ruleset(), diag);
    nft->apply(*plan, {false, "abc123"});
    nft->apply(*plan, {false, "abc123"});
    KernelState state = nft->read_back();
    std::string out = state.present ? "present" : "absent";
    out += " hash=" + state.ir_hash + " rules=" + std::to_string(state.counters.size()) +
           " drift=" + std::to_string(state.drift.size());
    for (const auto& c : state.counters)
      if (c.chain.rfind("c-allow-ssh.", 0) == 0) out += " where=" + c.where;
    return out;
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "present hash=abc123 rules=9 drift=0 where=policy.yaml:7:3");
}

TEST_CASE("read_back reports drift after someone edits our table", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    auto nft = backend();
    Diagnostics diag;
    nft->apply(*nft->render(nft_test::small_ruleset(), diag), {});
    for (const auto& c : nft->read_back().counters)
      if (c.chain.rfind("c-allow-ssh.", 0) == 0)
        shell("nft add rule inet fwengine " + c.chain + " counter accept");
    KernelState state = nft->read_back();
    return std::to_string(state.drift.size()) + (state.drift.empty() ? "" : ": " + state.drift[0]);
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output.rfind("1: applied 9 rules and counted elements, the kernel holds 10", 0) == 0);
}

TEST_CASE("a rule edited in place by hand is drift, and the next incremental apply puts it back", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    SmallApplied small;
    std::string out = "applied: " + std::to_string(small.nft->read_back().drift.size()) + " drift\n";
    // Its comment stays, so the rules' stamps and count are those of the apply: only the port differs.
    edit_ssh_rule_in_place();
    const KernelState edited = small.nft->read_back();
    out += "edited: " + shell("nft list table inet fwengine | grep -c 'dport 2323' || true");
    out += std::to_string(edited.drift.size()) +
           " drift: " + (edited.drift.empty() ? "" : edited.drift[0].substr(0, 39)) + "\n";
    small.apply();
    out += "applied again: " + std::to_string(small.nft->read_back().drift.size()) + " drift\n";
    return out + shell("nft list table inet fwengine | grep -c 'dport 2323' || true");
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output ==
        "applied: 0 drift\n"
        "edited: 1\n"
        "1 drift: rules were changed in place since apply\n"
        "applied again: 0 drift\n"
        "0\n");
}

TEST_CASE("a table switched off by hand (dormant) is drift, and the next incremental apply replaces it",
          "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    SmallApplied small;
    shell("nft add table inet fwengine '{ flags dormant; }'");
    std::string out = "flags: " + shell("nft list table inet fwengine | grep -c 'flags dormant' || true");
    const KernelState dormant = small.nft->read_back();
    out += std::to_string(dormant.drift.size()) +
           " drift: " + (dormant.drift.empty() ? "" : dormant.drift[0].substr(0, 35)) + "\n";
    small.apply();  // the same plan: only the table's flag differs
    out += "applied again: " + std::to_string(small.nft->read_back().drift.size()) + " drift\n";
    return out + "flags: " + shell("nft list table inet fwengine | grep -c 'flags dormant' || true");
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output ==
        "flags: 1\n"
        "1 drift: table inet fwengine is dormant: its\n"
        "applied again: 0 drift\n"
        "flags: 0\n");
}

TEST_CASE("an apply into a namespace without our table deletes nothing and keeps its stamp chain's name",
          "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    KernelEvents events;
    SmallApplied small;
    std::string out = events.ours("delete");
    // A rename shows as an added chain: the stamp chain still there under its own name, with the
    // content record beside it, tells that it was not renamed.
    out += "marker chains: " + shell("nft list table inet fwengine | grep -c 'chain fwengine-ir-'");
    return out + "drift: " + std::to_string(small.nft->read_back().drift.size()) + "\n";
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "marker chains: 2\ndrift: 0\n");
}

TEST_CASE("flush where our table is not there sends nothing", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    KernelEvents events;
    backend()->flush();
    return events.ours("") + "tables: " + shell("nft list tables | grep -c fwengine || true");
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "tables: 0\n");
}

TEST_CASE(
    "a table an older fwengine stamped (its stamp chain renamed with the content) reads back and is kept",
    "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    SmallApplied small;
    // The older form: only the chain named with the content, no stamp chain of the marker alone.
    shell(
        "for c in $(nft list table inet fwengine | grep -o 'chain fwengine-ir-[^ ]*' | cut -d' ' -f2); do "
        "echo $c | grep -qE -- '-[0-9a-f]{32}$' || nft delete chain inet fwengine $c; done");
    std::string out = "read: " + std::to_string(small.nft->read_back().drift.size()) + " drift\n";
    small.apply();  // the same policy again: nothing to change, the record stands
    out += "applied again: " + std::to_string(small.nft->read_back().drift.size()) + " drift\n";
    return out + "marker chains: " + shell("nft list table inet fwengine | grep -c 'chain fwengine-ir-'");
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "read: 0 drift\napplied again: 0 drift\nmarker chains: 1\n");
}

TEST_CASE("the same stamp over other set elements renames its content record, and reads back without drift",
          "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    auto nft = backend();
    StateDir state;
    Diagnostics diag;
    auto first = nft->render(nft_test::small_ruleset(), diag);
    ir::Ruleset more = nft_test::small_ruleset();
    more.sets.at("admins").cidrs.push_back(*ir::parse_cidr("172.16.0.0/12"));
    auto second = nft->render(more, diag);
    // One IR hash for both, as where a caller passes none: the stamp chain stays, its content does not.
    const std::string markers = "nft list table inet fwengine | grep -o 'chain fwengine-ir-[^ ]*' | sort";
    nft->apply(*first, {false, "same", state.path});
    const std::string before = shell(markers);
    nft->apply(*second, {false, "same", state.path});
    const std::string after = shell(markers);
    std::string out = before == after ? "record kept\n" : "record changed\n";
    out += "marker chains: " + shell(markers + " | wc -l");
    return out + "drift: " + std::to_string(nft->read_back().drift.size()) + "\n";
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "record changed\nmarker chains: 2\ndrift: 0\n");
}

TEST_CASE("a table whose rules' content was not recorded is replaced by the next apply, not trusted",
          "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    SmallApplied small;
    // As an apply leaves it when another writer got in before its record: the marker without the chain
    // that records its content (the marker's name and 32 hex digits).
    shell(
        "c=$(nft list table inet fwengine | grep -o 'chain fwengine-ir-[^ ]*-[0-9a-f]\\{32\\} ' | cut -d' ' "
        "-f2); "
        "test -n \"$c\" && nft delete chain inet fwengine $c");
    // A rule edited by hand meanwhile, which no recorded content can show.
    edit_ssh_rule_in_place();
    std::string out = "edited: " + shell("nft list table inet fwengine | grep -c 'dport 2323' || true");
    small.apply();
    out += "applied again: " + std::to_string(small.nft->read_back().drift.size()) + " drift\n";
    return out + shell("nft list table inet fwengine | grep -c 'dport 2323' || true");
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output ==
        "edited: 1\n"
        "applied again: 0 drift\n"
        "0\n");
}

TEST_CASE("an element added to or taken out of one of our sets by hand is drift", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    auto nft = backend();
    Diagnostics diag;
    // The kitchen sink has interval, concatenated and counted sets: what the kernel lists of each must
    // give the digest taken of what was sent.
    const auto sink = nft->render(nft_test::kitchen_sink_ruleset(), diag);
    nft->apply(*sink, {false, "aaaa"});
    std::string out = "kitchen sink: " + std::to_string(nft->read_back().drift.size()) + " drift\n";
    const auto plan = nft->render(nft_test::small_ruleset(), diag);
    nft->apply(*plan, {false, "aaaa"});
    const std::string set =
        shell("nft list table inet fwengine | grep -o 'set s-admins_v4[^ ]*' | cut -d' ' -f2 | tr -d '\n'");
    shell("nft add element inet fwengine " + set + " '{ 6.6.6.6 }'");
    KernelState added = nft->read_back();
    out += "added: " + std::to_string(added.drift.size()) +
           " drift: " + (added.drift.empty() ? "" : added.drift[0].substr(0, 60)) + "\n";
    out += "counters alone: " + std::to_string(nft->counters().size()) + "\n";
    shell("nft delete element inet fwengine " + set + " '{ 6.6.6.6 }'");
    out += "taken out again: " + std::to_string(nft->read_back().drift.size()) + " drift\n";
    shell("nft flush set inet fwengine " + set);
    out += "emptied: " + std::to_string(nft->read_back().drift.size()) + " drift\n";
    nft->apply(*plan, {true, "aaaa"});
    out += "applied in full: " + std::to_string(nft->read_back().drift.size()) + " drift\n";
    // Made by hand in our table: named as such, not as elements of ours; the next apply removes them.
    shell("nft add set inet fwengine handmade '{ type ipv4_addr; elements = { 6.6.6.6 }; }'");
    shell("nft add chain inet fwengine handchain");
    for (const auto& d : nft->read_back().drift) out += "by hand: " + d.substr(0, d.find(" in table")) + "\n";
    nft->apply(*plan, {false, "aaaa"});
    return out + "applied again: " + std::to_string(nft->read_back().drift.size()) + " drift\n";
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output ==
        "kitchen sink: 0 drift\n"
        "added: 1 drift: elements were added to or removed from fwengine's sets since\n"
        "counters alone: 9\n"
        "taken out again: 0 drift\n"
        "emptied: 1 drift\n"
        "applied in full: 0 drift\n"
        "by hand: set handmade\n"
        "by hand: chain handchain\n"
        "applied again: 0 drift\n");
}

TEST_CASE("apply and flush leave other tables byte-for-byte alone", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    load_with_nft(kForeignTable);
    load_with_nft(kForeignInetTable);
    std::string before = shell("nft list ruleset");
    auto nft = backend();
    Diagnostics diag;
    StateDir state;
    nft->apply(*nft->render(nft_test::small_ruleset(), diag), {false, "aaaa", state.path});
    std::string during = shell("nft list table ip kube-proxy-like; nft list table inet docker-like");
    // An incremental apply beside them too.
    nft->apply(*nft->render(nft_test::kitchen_sink_ruleset(), diag), {false, "bbbb", state.path});
    if (during != shell("nft list table ip kube-proxy-like; nft list table inet docker-like"))
      return std::string("changed by the incremental apply");
    nft->flush();
    nft->flush();  // absent table: still fine
    std::string after = shell("nft list ruleset");
    return std::string(before == after ? "same" : "changed") + " " +
           (during == shell("nft list table ip kube-proxy-like; nft list table inet docker-like")
                ? "same"
                : "changed") +
           " " + (nft->read_back().present ? "present" : "absent");
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "same same absent");
}

TEST_CASE("applies land while another program keeps changing its own table (generation retry)", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    // Bounded by timeout in case this process dies before it kills it.
    const std::string churn = shell(
        "timeout 120 sh -c 'while :; do nft add table ip churn; nft delete table ip churn; done' "
        ">/dev/null 2>&1 & echo $!");
    auto nft = backend();
    Diagnostics diag;
    StateDir state;
    const auto small = nft->render(nft_test::small_ruleset(), diag);
    const auto sink = nft->render(nft_test::kitchen_sink_ruleset(), diag);
    int landed = 0;
    std::string error;
    try {
      for (int i = 0; i < 30; ++i) {
        const bool odd = i % 2 == 1;
        nft->apply(odd ? *sink : *small, {i % 5 == 0, odd ? "bbbb" : "aaaa", state.path});
        landed += nft->read_back().ir_hash == (odd ? "bbbb" : "aaaa");
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    shell("kill " + churn);
    return "landed " + std::to_string(landed) + error;
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "landed 30");
}

TEST_CASE("a refused transaction names the origin and leaves the previous ruleset", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    return refused_after_small_table([](nft::Table& bad) {
      nft::Rule broken;
      broken.words = {"jump", "nowhere"};
      broken.exprs.push_back(
          {.kind = nft::Expr::Kind::verdict, .key = static_cast<std::uint32_t>(-3), .text = "nowhere"});
      broken.comment = "policy.yaml:+37:7 GlobalNetworkPolicy allow-ssh#3";  // set where: its first line is 5
      bad.chains.back().rules.push_back(broken);
    });
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output.rfind("unchanged\n", 0) == 0);
  CHECK(result.output.find(
            "policy.yaml:42:7 GlobalNetworkPolicy allow-ssh#3: rule #1 in chain c-failsafe-in.") !=
        std::string::npos);
  CHECK(result.output.find(": No such file or directory (at expression #1 'immediate', in: jump nowhere") !=
        std::string::npos);
}

TEST_CASE("a refused set element names the element and the rule it stands for", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    return refused_after_small_table([](nft::Table& bad) {
      REQUIRE_FALSE(bad.sets.empty());
      nft::Set& set = bad.sets.front();
      set.comment = "policy.yaml";
      nft::Element wrong = set.elements.front();
      wrong.key.resize(wrong.key.size() + 4);  // longer than the set's key: the kernel refuses it
      wrong.comment = ":+37:7 GlobalNetworkPolicy allow-ssh#0";
      set.elements.push_back(wrong);
    });
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output.rfind("unchanged\n", 0) == 0);
  CHECK(result.output.find("elements of set ") != std::string::npos);
  CHECK(result.output.find("at its element ") != std::string::npos);
  CHECK(result.output.find(", of policy.yaml:42:7 GlobalNetworkPolicy allow-ssh#0)") != std::string::npos);
}

TEST_CASE("a helper the kernel does not know is refused at its rule, nothing applied", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    return refused_after_small_table([](nft::Table& bad) {
      bad.helpers.push_back({"h-bogus-tcp", "bogushelper", 6});
      nft::Rule assign;
      assign.words = {"ct", "helper", "set", "\"h-bogus-tcp\""};
      assign.exprs.push_back(
          {.kind = nft::Expr::Kind::objref, .key = NFT_OBJECT_CT_HELPER, .text = "h-bogus-tcp"});
      assign.comment = "policy.yaml:8:7 c#0";
      bad.chains.back().rules.push_back(assign);
    });
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);  // before the fix: SIGSEGV naming the refused expression
  CHECK(result.output.rfind("unchanged\n", 0) == 0);
  CHECK(result.output.find("ct helper h-bogus-tcp: No such file or directory") != std::string::npos);
  CHECK(result.output.find("policy.yaml:8:7 c#0: rule #") != std::string::npos);
  CHECK(result.output.find("at expression #1 'objref'") != std::string::npos);
}

namespace {

// Section 0 accepts (or allows) TCP to port 7 on lo; section 1 honours the allow mark and drops the rest
// of what is new. Replies are let through by section 1's conntrack prelude.
ir::Ruleset two_sections(ir::ActionKind port7) {
  using namespace ir;
  Ruleset rs;
  rs.files = {"<command line>", "lo.yaml"};
  Rule rule;
  rule.match.protocols = std::vector<std::uint8_t>{6};
  rule.match.dst_port.push_back({false, {{7, 7}}});
  rule.action.kind = port7;
  rule.origin = nft_test::origin(5, "port7", 0);
  rs.chains["port7"] = Chain{"port7", {rule}, nft_test::origin(4, "port7")};
  Endpoint first;
  first.name = "lo";
  first.match.iif = IfacePattern{"lo", false};
  first.groups.push_back(Group{"tier", {"port7"}, Verdict::continue_, {}, nft_test::origin(3, "tier")});
  Endpoint second;
  second.name = "lo";
  second.match.iif = IfacePattern{"lo", false};
  second.conntrack = Conntrack::accept_established;
  second.default_verdict = Verdict::drop;
  rs.stage(Stage::input).sections.push_back(Section{"policy", false, {first}});
  rs.stage(Stage::input).sections.push_back(Section{"after", true, {second}});
  return rs;
}

// "refused" when the SYN reached the (closed) port and the RST came back, "timeout" when dropped.
std::string connect_port7() {
  try {
    shell("timeout 2 bash -c 'echo > /dev/tcp/127.0.0.1/7' 2>/dev/null");
    return "open";
  } catch (const std::exception& e) {
    return std::string(e.what()).find("(31744)") != std::string::npos ? "timeout" : "refused";
  }
}

}  // namespace

TEST_CASE("real traffic: allow carries over to an honour_allow section, accept does not", "[root]") {
  nft_test::require_root();
  auto kind = GENERATE(ir::ActionKind::allow, ir::ActionKind::accept);
  auto result = in_scratch_netns([&] {
    shell("ip link set lo up");
    auto nft = backend();
    Diagnostics diag;
    nft->apply(*nft->render(two_sections(kind), diag), {});
    std::string outcome = connect_port7();
    std::uint64_t hits = 0;
    for (const auto& c : nft->read_back().counters)
      if (c.where == "lo.yaml:5:3") hits += c.packets;
    return outcome + (hits > 0 ? " counted" : " not counted");  // SYNs are retransmitted: at least one
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == (kind == ir::ActionKind::allow ? "refused counted" : "timeout counted"));
}

TEST_CASE("real traffic: an allow in output does not carry over lo into input", "[root]") {
  // The host's SYN to itself: allowed in output, then new in input, where only the honour_allow
  // section's conntrack prelude and default drop meet it, as in trace, which starts each path afresh.
  nft_test::require_root();
  auto result = in_scratch_netns([&] {
    shell("ip link set lo up");
    ir::Ruleset rs = two_sections(ir::ActionKind::allow);
    auto& input = rs.stage(ir::Stage::input).sections;
    ir::Section out = input.front();
    out.endpoints[0].match.iif.reset();
    out.endpoints[0].match.oif = ir::IfacePattern{"lo", false};
    rs.stage(ir::Stage::output).sections.push_back(std::move(out));
    input.erase(input.begin());
    auto nft = backend();
    Diagnostics diag;
    nft->apply(*nft->render(rs, diag), {});
    return connect_port7();
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "timeout");
}

namespace {

// A set's elements one per line, in order: nft lists a set patched by deltas in another order.
std::string sorted_elements(const std::string& block) {
  std::vector<std::string> lines;
  std::istringstream in(block);
  for (std::string line; std::getline(in, line);) {
    line.erase(0, line.find_first_not_of(" \t"));
    if (line.rfind("elements = { ", 0) == 0) line.erase(0, 13);
    if (line.size() >= 2 && line.compare(line.size() - 2, 2, " }") == 0 &&
        line.find('{') == std::string::npos)
      line.erase(line.size() - 2);
    if (!line.empty() && line.back() == ',') line.pop_back();
    lines.push_back(line);
  }
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& line : lines) out += line + "\n";
  return out;
}

// `nft list` prints sets and chains in creation order, which incremental applies change.
std::vector<std::string> sorted_blocks(std::string listing) {
  if (auto close = listing.rfind("\n}"); close != std::string::npos) listing.erase(close);  // the table's
  listing.erase(0, listing.find('\n') + 1);                                                 // braces
  std::vector<std::string> blocks;
  std::size_t start = 0;
  for (std::size_t end; (end = listing.find("\n\n", start)) != std::string::npos; start = end + 2)
    blocks.push_back(listing.substr(start, end - start));
  blocks.push_back(listing.substr(start));
  for (auto& block : blocks)
    if (block.rfind("\tset ", 0) == 0) block = sorted_elements(block);
  std::sort(blocks.begin(), blocks.end());
  return blocks;
}

}  // namespace

TEST_CASE("an incremental apply reaches what a full apply loads, keeping unchanged chains", "[root]") {
  nft_test::require_root();
  ir::Ruleset before = two_sections(ir::ActionKind::allow), after = before;
  after.stage(ir::Stage::input).sections[1].endpoints[0].default_verdict = ir::Verdict::reject;
  after.sets["new"] = ir::AddrSet{{*ir::parse_cidr("10.9.0.0/16")}, nft_test::origin(1, "set")};
  ir::Rule from_new = after.chains["port7"].rules[0];
  from_new.match.dst_port = {};
  from_new.match.src_addr.push_back({false, "new"});
  from_new.origin.loc.line = 6;
  after.chains["other"] = ir::Chain{"other", {from_new}, nft_test::origin(9, "other")};
  after.stage(ir::Stage::input).sections[0].endpoints[0].groups[0].chains.push_back("other");
  before.sets["shrinks"] = ir::AddrSet{
      {*ir::parse_cidr("10.0.0.0/8"), *ir::parse_cidr("192.168.1.0/24"), *ir::parse_cidr("2001:db8::/32")},
      nft_test::origin(1, "set")};
  after.sets["shrinks"] = ir::AddrSet{{*ir::parse_cidr("10.0.0.0/9"), *ir::parse_cidr("172.16.0.0/12"),
                                       *ir::parse_cidr("192.168.2.0/24"), *ir::parse_cidr("224.0.0.0/3")},
                                      nft_test::origin(1, "set")};
  for (auto* rs : {&before, &after}) {  // a rule that keeps the set in use while its elements change
    ir::Rule uses = rs->chains["port7"].rules[0];
    uses.match.src_addr = {{false, "shrinks"}};
    uses.action.kind = ir::ActionKind::log;
    uses.origin.loc.line = 8;
    (*rs).chains["uses"] = ir::Chain{"uses", {uses}, nft_test::origin(7, "uses")};
    rs->stage(ir::Stage::input).sections[0].endpoints[0].groups[0].chains.push_back("uses");
  }

  auto incremental = in_scratch_netns([&] {
    shell("ip link set lo up");
    auto nft = backend();
    Diagnostics diag;
    StateDir state_dir;
    nft->apply(*nft->render(before, diag), {false, "aaaa", state_dir.path});
    connect_port7();
    nft->apply(*nft->render(after, diag), {false, "bbbb", state_dir.path});
    KernelState state = nft->read_back();
    std::uint64_t hits = 0;
    for (const auto& c : state.counters)
      if (c.where == "lo.yaml:5:3") hits += c.packets;
    return std::string(hits > 0 ? "kept" : "lost") + " drift=" + std::to_string(state.drift.size()) + " " +
           state.ir_hash + "\n" +
           shell("nft list table inet fwengine | sed 's/packets [0-9]* bytes [0-9]*//'");
  });
  INFO(incremental.output);
  REQUIRE(incremental.exit_code == 0);
  auto full = in_scratch_netns([&] {
    auto nft = backend();
    Diagnostics diag;
    nft->apply(*nft->render(after, diag), {true, "bbbb"});
    return shell("nft list table inet fwengine | sed 's/packets [0-9]* bytes [0-9]*//'");
  });
  REQUIRE(full.exit_code == 0);
  std::string head = incremental.output.substr(0, incremental.output.find('\n'));
  CHECK(head == "kept drift=0 bbbb");
  CHECK(sorted_blocks(incremental.output.substr(head.size() + 1)) == sorted_blocks(full.output));
}

TEST_CASE(
    "an incremental apply trusts the content record until another writer commits, and records what listing "
    "every rule gives",
    "[root]") {
  nft_test::require_root();
  ir::Ruleset before = two_sections(ir::ActionKind::allow), after = before;
  after.chains["port7"].rules[0].match.dst_port[0].ports = {{8, 8}};  // renamed: its caller lists anew
  after.stage(ir::Stage::input).sections[1].endpoints[0].default_verdict = ir::Verdict::reject;
  auto result = in_scratch_netns([&] {
    Diagnostics diag;
    const nft::Table tables[] = {nft::translate(before, diag), nft::translate(after, diag),
                                 nft::translate(nft_test::kitchen_sink_ruleset(), diag)};
    nft::Connection connection;
    StateDir dir;
    std::optional<nft::ContentRecord> record;
    std::string out;
    // tables[i] applied as the backend applies it: whether the record was trusted, and whether the
    // record made after it is what listing the whole table gives.
    auto apply = [&](int i) {
      const std::uint32_t generation = record ? record->generation : 0;
      const std::string marker = "fwengine-ir-" + std::to_string(i) + "-1-0";
      auto sets = nft::AppliedSets::load(dir.path);
      const auto committed = nft::apply_table_incremental(
          connection, tables[i], marker, sets ? &*sets : nullptr, record ? &*record : nullptr);
      nft::AppliedSets::save(dir.path, tables[i], marker);
      record = nft::record_content(connection, marker, nft::set_elements_digest(tables[i]), committed,
                                   tables[i], record ? &*record : nullptr);
      const nft::Listing listing = nft::list_table(connection, nft::Elements::counted);
      const bool as_listed = record && record->rules == nft::rules_by_chain(listing) &&
                             record->chain.substr(marker.size() + 1, 16) == listing.content;
      out += std::string(committed.from_record ? "trusted" : "listed") +
             (as_listed ? ", recorded as listed" : ", recorded otherwise") +
             (record && record->generation == generation ? ", nothing committed\n" : "\n");
    };
    apply(0);
    apply(1);
    apply(0);
    // Ct helper objects, then the same again: nothing to send (a helper the kernel has is not sent).
    apply(2);
    apply(2);
    shell("nft add table ip someone-else");
    apply(1);
    return out;
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output ==
        "listed, recorded as listed\n"
        "trusted, recorded as listed\n"
        "trusted, recorded as listed\n"
        "trusted, recorded as listed\n"
        "trusted, recorded as listed, nothing committed\n"
        "listed, recorded as listed\n");
}

namespace {

// two_sections with port 7's rule followed by rules for ports 8..10 and 2001:db8::1: one merged run.
ir::Ruleset merged_ports() {
  ir::Ruleset rs = two_sections(ir::ActionKind::allow);
  rs.sets["lo4"] = ir::AddrSet{{*ir::parse_cidr("127.0.0.0/8")}, nft_test::origin(2, "set")};
  rs.sets["v6"] = ir::AddrSet{{*ir::parse_cidr("2001:db8::/64")}, nft_test::origin(2, "set")};
  auto& rules = rs.chains["port7"].rules;
  rules[0].match.src_addr.push_back({false, "lo4"});
  for (std::uint16_t port = 8; port <= 11; ++port) {
    ir::Rule next = rules[0];
    next.match.dst_port[0].ports = {{port, static_cast<std::uint16_t>(port == 11 ? 20 : port)}};
    if (port == 10) next.match.src_addr[0].set_name = "v6";
    next.origin.loc.line = port - 2;
    next.origin.rule = port - 7;
    rules.push_back(next);
  }
  return rs;
}

}  // namespace

TEST_CASE("a run keyed by the port alone loads: a set of 2-byte keys", "[root]") {
  nft_test::require_root();
  ir::Ruleset rs = two_sections(ir::ActionKind::accept);
  auto& rules = rs.chains["port7"].rules;
  for (std::uint16_t port = 8; port <= 10; ++port) {
    ir::Rule next = rules[0];
    next.match.dst_port[0].ports = {{port, port}};
    next.origin.loc.line = port - 2;
    rules.push_back(next);
  }
  Diagnostics diag;
  nft::Table table = nft::translate(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  CHECK(applied_as_nft_loads(table).find("tcp dport @m-port7-0.") != std::string::npos);
}

TEST_CASE("merged runs load as nft -f loads their text", "[root]") {
  nft_test::require_root();
  Diagnostics diag;
  nft::Table table = nft::translate(merged_ports(), diag);
  REQUIRE_FALSE(diag.has_errors());
  std::string applied = applied_as_nft_loads(table);
  CHECK(applied.find("ip saddr . tcp dport @m-port7-0_v4.") != std::string::npos);
  // the element's stamp without the file, which the set's comment holds, two lines below its policy's
  // first (line 4, the chain's), which set where holds
  CHECK(applied.find("127.0.0.0/8 . 8 counter packets 0 bytes 0 comment \":+2:3 port7#1\"") !=
        std::string::npos);
  CHECK(applied.find("comment \"lo.yaml\"") != std::string::npos);
  CHECK(applied.find("comment \"lo.yaml:4 port7\"") != std::string::npos);
}

TEST_CASE("a run of elements with long comments loads whole: each message stays within its 16-bit nest",
          "[root]") {
  // 600 IPv6 members with comments of ~120 characters: 512 of them to a message overran the nest that
  // holds a message's elements, and the kernel refused the batch.
  nft_test::require_root();
  ir::Ruleset rs = two_sections(ir::ActionKind::accept);
  const std::string name(110, 'c');
  ir::Chain chain = rs.chains.extract("port7").mapped();
  chain.name = name;
  ir::Rule rule = chain.rules[0];
  rule.origin.policy = name;
  rule.match.family = ir::Family::ipv6;
  chain.rules.clear();
  for (std::uint16_t i = 0; i < 600; ++i) {
    rule.match.src_addr = {
        ir::AddrMatch(false, *ir::parse_cidr("2001:db8:0:" + std::to_string(i) + "::/64"))};
    rule.match.dst_port[0].ports = {
        {static_cast<std::uint16_t>(10000 + i), static_cast<std::uint16_t>(10000 + i)}};
    rule.origin.rule = i;
    chain.rules.push_back(rule);
  }
  rs.chains.emplace(name, std::move(chain));
  rs.stage(ir::Stage::input).sections[0].endpoints[0].groups[0].chains = {name};
  Diagnostics diag;
  nft::Table table = nft::translate(rs, diag);
  REQUIRE_FALSE(diag.has_errors());
  const std::string applied = applied_as_nft_loads(table);
  CHECK(applied.find("2001:db8:0:599:: . 10599 counter") != std::string::npos);
}

TEST_CASE("real traffic: a merged run counts the hits of each source rule", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([&] {
    shell("ip link set lo up");
    auto nft = backend();
    Diagnostics diag;
    nft->apply(*nft->render(merged_ports(), diag), {false, "cafe"});
    std::string outcome = connect_port7();
    std::map<std::string, std::uint64_t> hits;
    KernelState state = nft->read_back();
    for (const auto& c : state.counters) hits[c.where] += c.packets;
    return outcome + " port7=" + (hits["lo.yaml:5:3"] > 0 ? "counted" : "not counted") +
           " port8=" + std::to_string(hits["lo.yaml:6:3"]) + " drift=" + std::to_string(state.drift.size());
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "refused port7=counted port8=0 drift=0");
}

namespace {

// merged_ports with port 8's rule moved to port 30: one element of the run's set differs.
ir::Ruleset merged_ports_moved() {
  ir::Ruleset rs = merged_ports();
  rs.chains["port7"].rules[1].match.dst_port[0].ports = {{30, 30}};
  return rs;
}

std::string counted_listing() {
  return shell("nft list table inet fwengine | sed 's/packets [0-9]* bytes [0-9]*//'");
}

// What a full apply of rs loads, in a namespace of its own.
std::vector<std::string> fully_applied(const ir::Ruleset& rs) {
  auto full = in_scratch_netns([&] {
    auto nft = backend();
    Diagnostics diag;
    nft->apply(*nft->render(rs, diag), {true, "bbbb"});
    return counted_listing();
  });
  REQUIRE(full.exit_code == 0);
  return sorted_blocks(full.output);
}

std::string port7_hits(Backend& nft) {
  std::uint64_t hits = 0;
  KernelState state = nft.read_back();
  for (const auto& c : state.counters)
    if (c.where == "lo.yaml:5:3") hits += c.packets;
  return std::string(hits > 0 ? "kept" : "lost") + " drift=" + std::to_string(state.drift.size());
}

}  // namespace

TEST_CASE("an element delta patches a set in place: its other elements keep their counters", "[root]") {
  nft_test::require_root();
  auto patched = in_scratch_netns([&] {
    shell("ip link set lo up");
    auto nft = backend();
    Diagnostics diag;
    StateDir state;
    nft->apply(*nft->render(merged_ports(), diag), {false, "aaaa", state.path});
    connect_port7();
    ApplyReport report = nft->apply(*nft->render(merged_ports_moved(), diag), {false, "bbbb", state.path});
    bool timed = report.transaction_ms && *report.transaction_ms > 0;
    return port7_hits(*nft) + (timed ? " timed" : " untimed") + "\n" + counted_listing();
  });
  INFO(patched.output);
  REQUIRE(patched.exit_code == 0);
  std::string head = patched.output.substr(0, patched.output.find('\n'));
  CHECK(head == "kept drift=0 timed");
  CHECK(sorted_blocks(patched.output.substr(head.size() + 1)) == fully_applied(merged_ports_moved()));
}

namespace {

// two_sections with port 7's rule followed by rules for ports 8, 9, ...: `rules` rules in all, one run
// keyed by the port alone, so one hash set of that many elements.
ir::Ruleset port_run(std::uint16_t rules) {
  ir::Ruleset rs = two_sections(ir::ActionKind::accept);
  auto& chain = rs.chains["port7"].rules;
  for (std::uint16_t port = 8; port < 7 + rules; ++port) {
    ir::Rule next = chain[0];
    next.match.dst_port[0].ports = {{port, port}};
    next.origin.loc.line = port - 2;
    next.origin.rule = port - 7;
    chain.push_back(next);
  }
  return rs;
}

// The run's set as the kernel lists it: its name (with the digest) and its size ("size N" of its own
// block: a newer nft adds "# count M" after it).
std::string run_set(const std::string& listing) {
  const auto at = listing.find("set m-port7-0.");
  if (at == std::string::npos) return "none";
  const auto end = listing.find('}', at);
  const auto size = listing.find("size ", at);
  if (size == std::string::npos || size > end) return "none";
  const auto digits = size + 5;
  return listing.substr(at + 4, listing.find(' ', at + 4) - at - 4) + " size " +
         listing.substr(digits, listing.find_first_not_of("0123456789", digits) - digits);
}

}  // namespace

TEST_CASE("a hash set is declared with a size: patched within it, made anew past it", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([&] {
    auto nft = backend();
    Diagnostics diag;
    StateDir state;
    nft->apply(*nft->render(port_run(16), diag), {false, "aaaa", state.path});
    const std::string full = run_set(counted_listing());
    nft->apply(*nft->render(port_run(15), diag), {false, "cccc", state.path});
    const std::string within = run_set(counted_listing());
    nft->apply(*nft->render(port_run(25), diag), {false, "bbbb", state.path});  // as fully_applied
    const std::string listing = counted_listing();
    return full + "\n" + within + "\n" + run_set(listing) + "\n" + listing;
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  std::istringstream lines(result.output);
  std::string full, within, past;
  std::getline(lines, full);
  std::getline(lines, within);
  std::getline(lines, past);
  CHECK(full.ends_with(" size 24"));  // 32 buckets
  CHECK(within == full);              // the same set, fewer elements
  CHECK(past.ends_with(" size 48"));
  CHECK(past.substr(0, past.find(' ')) != full.substr(0, full.find(' ')));  // another declaration
  const std::string rest = result.output.substr(full.size() + within.size() + past.size() + 3);
  CHECK(sorted_blocks(rest) == fully_applied(port_run(25)));
}

namespace {

// rs with every origin `lines` lines further down its file, as a policy file with lines inserted at its top.
ir::Ruleset moved_down(ir::Ruleset rs, std::uint32_t lines) {
  auto move = [lines](ir::Origin& origin) {
    if (origin.loc.line > 0) origin.loc.line += lines;
  };
  for (auto& [name, set] : rs.sets) move(set.origin);
  ir::for_each_rule_origin(rs, move);
  return rs;
}

}  // namespace

TEST_CASE("lines inserted above the policies change only set where: rules and counters stay", "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([&] {
    shell("ip link set lo up");
    auto nft = backend();
    Diagnostics diag;
    StateDir state;
    nft->apply(*nft->render(merged_ports(), diag), {false, "aaaa", state.path});
    connect_port7();
    // the rules with their handles and counters, without set where and the apply's marker chain
    const std::string rules =
        "nft -a list table inet fwengine | sed -e '/set where/,/^\\t}/d' -e '/chain fwengine-ir-/,/^\\t}/d'";
    const std::string before = shell(rules);
    nft->apply(*nft->render(moved_down(merged_ports(), 10), diag), {false, "bbbb", state.path});
    const std::string after = shell(rules);
    std::uint64_t moved_hits = 0;
    KernelState read = nft->read_back();
    for (const auto& c : read.counters)
      if (c.where == "lo.yaml:15:3") moved_hits += c.packets;
    return std::string(before == after ? "rules kept" : "rules rewritten:\n" + before + after) +
           (moved_hits > 0 ? " hits at line 15" : " no hits at line 15") +
           " drift=" + std::to_string(read.drift.size()) + "\n" + counted_listing();
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  std::string head = result.output.substr(0, result.output.find('\n'));
  CHECK(head == "rules kept hits at line 15 drift=0");
  CHECK(result.output.find("comment \"lo.yaml:14 port7\"") != std::string::npos);
  CHECK(sorted_blocks(result.output.substr(head.size() + 1)) ==
        fully_applied(moved_down(merged_ports(), 10)));
}

TEST_CASE("without a record of what the kernel holds, an incremental apply replaces the table", "[root]") {
  nft_test::require_root();
  auto how = GENERATE(as<std::string>{}, "record of another apply", "damaged record", "set emptied by hand");
  auto result = in_scratch_netns([&] {
    shell("ip link set lo up");
    auto nft = backend();
    Diagnostics diag;
    StateDir state;
    nft->apply(*nft->render(merged_ports(), diag), {false, "aaaa", state.path});
    if (how == "record of another apply") nft->apply(*nft->render(merged_ports(), diag), {false, "cccc"});
    if (how == "damaged record") std::filesystem::resize_file(state.path + "/sets", 40);
    if (how == "set emptied by hand")  // the delta's deletion then fails: the kernel refuses it
      shell(
          "for s in $(nft list sets inet | grep -o 'm-port7-0[^ ]*'); do nft flush set inet fwengine $s; "
          "done");
    connect_port7();
    nft->apply(*nft->render(merged_ports_moved(), diag), {false, "bbbb", state.path});
    return port7_hits(*nft) + "\n" + counted_listing();
  });
  INFO(how << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
  std::string head = result.output.substr(0, result.output.find('\n'));
  CHECK(head == "lost drift=0");  // a full replace starts every counter at zero
  CHECK(sorted_blocks(result.output.substr(head.size() + 1)) == fully_applied(merged_ports_moved()));
}

namespace {

// two_sections with section 0's lo endpoint (stamped lo.yaml:2:3) behind four endpoints of other
// names (stamped lo.yaml:10:3 and on): a run the section dispatches through one verdict map.
ir::Ruleset lo_among_named_endpoints() {
  ir::Ruleset rs = two_sections(ir::ActionKind::allow);
  auto& endpoints = rs.stage(ir::Stage::input).sections[0].endpoints;
  endpoints[0].origin = nft_test::origin(2, "lo");
  std::uint32_t line = 10;
  for (const char* name : {"fwe-d3", "fwe-d2", "fwe-d1", "fwe-d0"}) {
    ir::Endpoint other;
    other.name = name;
    other.match.iif = ir::IfacePattern{name, false};
    other.default_verdict = ir::Verdict::drop;
    other.origin = nft_test::origin(line++, name);
    endpoints.insert(endpoints.begin(), other);
  }
  return rs;
}

// The kernel's handle of our chain whose name starts with prefix: the same chain keeps it when renamed.
std::string chain_handle(const std::string& prefix) {
  return shell("nft -a list table inet fwengine | sed -n 's/^\\tchain " + prefix +
               "[^ ]* { # handle \\([0-9]*\\)$/\\1/p'");
}

}  // namespace

TEST_CASE("endpoints dispatched by a verdict map: loaded as nft -f loads it, counted, renamed in place",
          "[root]") {
  nft_test::require_root();
  const ir::Ruleset before = lo_among_named_endpoints();
  ir::Ruleset after = before;
  auto& lo = after.stage(ir::Stage::input).sections[0].endpoints.back();
  lo.groups.clear();  // its chain changes (renamed in place, the map follows): port 7 is dropped now
  lo.default_verdict = ir::Verdict::drop;
  Diagnostics diag;
  const std::string listed = applied_as_nft_loads(nft::translate(before, diag));
  CHECK(listed.find("iifname vmap { ") != std::string::npos);

  auto incremental = in_scratch_netns([&] {
    shell("ip link set lo up");
    auto nft = backend();
    StateDir state_dir;
    nft->apply(*nft->render(before, diag), {false, "aaaa", state_dir.path});
    std::string out = connect_port7();
    std::uint64_t dispatched = 0;  // by the counter the lo endpoint's chain starts with
    for (const auto& c : nft->read_back().counters)
      if (c.where == "lo.yaml:2:3" && c.rule == 0 && c.chain.starts_with("e-input-0-lo."))
        dispatched += c.packets;
    out += dispatched > 0 ? " counted" : " not counted";
    const std::string handle = chain_handle("e-input-0-lo");
    nft->apply(*nft->render(after, diag), {false, "bbbb", state_dir.path});
    KernelState state = nft->read_back();
    out += chain_handle("e-input-0-lo") == handle && !handle.empty() ? " renamed in place" : " made anew";
    return out + " " + connect_port7() + " drift=" + std::to_string(state.drift.size()) + "\n" +
           shell("nft list table inet fwengine | sed 's/packets [0-9]* bytes [0-9]*//'");
  });
  INFO(incremental.output);
  REQUIRE(incremental.exit_code == 0);
  auto full = in_scratch_netns([&] {
    auto nft = backend();
    nft->apply(*nft->render(after, diag), {true, "bbbb"});
    return shell("nft list table inet fwengine | sed 's/packets [0-9]* bytes [0-9]*//'");
  });
  REQUIRE(full.exit_code == 0);
  const std::string head = incremental.output.substr(0, incremental.output.find('\n'));
  CHECK(head == "refused counted renamed in place timeout drift=0");
  CHECK(sorted_blocks(incremental.output.substr(head.size() + 1)) == sorted_blocks(full.output));
}

namespace {
// What fd 3 of each keeper this process started points to (netlink.cpp, Socket::keep_until_exit).
std::vector<std::string> keepers_sockets() {
  std::vector<std::string> sockets;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream cmdline(entry.path() / "cmdline");
    std::string argv0;
    std::getline(cmdline, argv0, '\0');
    if (argv0 != "fwengine-netlink-keeper") continue;
    std::ifstream stat_file(entry.path() / "stat");
    const std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    std::istringstream after_name(stat.substr(stat.rfind(')') + 1));
    std::string state;
    pid_t parent = 0;
    if (!(after_name >> state >> parent) || parent != getpid()) continue;
    std::error_code ec;
    sockets.push_back(std::filesystem::read_symlink(entry.path() / "fd" / "3", ec).string());
  }
  return sockets;
}

// The keepers once one is there: posix_spawn returns as the keeper's exec replaces its memory, before
// its command line is set up, so a keeper can be unnamed for a while on a busy host.
std::vector<std::string> started_keepers_sockets() {
  auto sockets = keepers_sockets();
  for (int wait = 0; wait < 200 && sockets.empty(); ++wait) {
    usleep(10'000);
    sockets = keepers_sockets();
  }
  return sockets;
}

// Whether one of this process's own descriptors is that socket.
bool ours(const std::string& socket) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(entry.path(), ec).string() == socket) return true;
  }
  return false;
}
}  // namespace

TEST_CASE("a connection that committed leaves its socket's last release to a keeper that ends soon after it",
          "[root]") {
  nft_test::require_root();
  auto result = in_scratch_netns([] {
    std::string out;
    {
      nft::Connection connection;
      nft::delete_table(connection);  // nothing to delete: no batch is sent
      out += "no commit: " + std::to_string(keepers_sockets().size()) + " keepers\n";
      nft::apply_table(connection, small_table());
      nft::apply_table(connection, small_table());
      const auto sockets = started_keepers_sockets();
      out += "two commits: " + std::to_string(sockets.size()) + " keepers\n";
      for (const auto& socket : sockets)
        out += socket.starts_with("socket:[") && ours(socket) ? "it holds our socket\n" : socket + '\n';
    }
    // The keeper reads the end of its pipe, lets go half a second later and exits; a zombie has no
    // command line.
    for (int wait = 0; wait < 300 && !keepers_sockets().empty(); ++wait) usleep(10'000);
    out += "connection ended: " + std::to_string(keepers_sockets().size()) + " keepers\n";
    return out;
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output ==
        "no commit: 0 keepers\ntwo commits: 1 keepers\nit holds our socket\nconnection ended: 0 keepers\n");

  // Started with its standard fds closed, the process holds the socket and the pipe at 0-2.
  result = in_scratch_netns([] {
    for (int standard : {0, 1, 2}) close(standard);
    nft::Connection connection;
    nft::apply_table(connection, small_table());
    const auto sockets = started_keepers_sockets();
    return sockets.size() == 1 && sockets[0].starts_with("socket:[") && ours(sockets[0])
               ? std::string("it holds our socket\n")
               : std::to_string(sockets.size()) + " keepers" +
                     (sockets.empty() ? "" : ", fd 3: " + sockets[0]);
  });
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  CHECK(result.output == "it holds our socket\n");
}
