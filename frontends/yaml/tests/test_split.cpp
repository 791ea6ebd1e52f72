// A large mapping of chains is read in two halves on two threads (read_policy): what it reads and
// reports must be what one thread reads and reports, and a name the second half cannot check makes
// read_policy read again on one thread.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include "fwengine/canonical.hpp"
#include "reader.hpp"

namespace {

// CHAINS chains of RULES rules each (above the size that is split), each rule with an inline set of two
// addresses; `broken` rules (chain, rule) get a port no TCP packet has.
std::string policy(int chains, int rules, const std::vector<std::pair<int, int>>& broken,
                   const std::string& extra_chains = "", const std::string& sets = "",
                   const std::string& chain_prefix = "c") {
  std::string text = "apiVersion: fwengine/v1\n" + sets + "chains:\n";
  for (int c = 0; c < chains; ++c) {
    text += "  " + chain_prefix + std::to_string(c) + ":\n";
    for (int r = 0; r < rules; ++r) {
      bool bad = std::find(broken.begin(), broken.end(), std::pair{c, r}) != broken.end();
      const std::string host =
          std::to_string(c) + "." + std::to_string(r % 256) + "." + std::to_string(r / 256);
      text += "    - {protocol: tcp, src: [10." + host + ", 172." + host +
              "], dport: " + (bad ? "70000" : std::to_string(1000 + r)) + ", action: accept}\n";
    }
  }
  return text + extra_chains;
}

struct Read {
  fwe::Diagnostics diag;
  fwe::ir::Ruleset ruleset;
  bool conflicted = false;
};

// What read_policy of `source` (by default, a file holding `text`) reports, and what one thread's
// reading of that file reports; each with the source's name written POLICY.
struct Reports {
  std::string split, sequential;
};
Reports reports(const std::string& text, const std::string& source = "") {
  namespace fs = std::filesystem;
  const std::string file =
      fs::temp_directory_path() / ("fwe-yaml-split-" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(file) << text;
  fwe::Diagnostics diag, sequential;
  fwe::yamlfe::read_policy({source.empty() ? file : source}, diag);
  fwe::yamlfe::PolicyReader reader(sequential);
  reader.read_source(file);
  reader.finish();
  fs::remove(file);
  auto named = [](std::string out, const std::string& name) {
    for (std::size_t at = 0; (at = out.find(name, at)) != std::string::npos;)
      out.replace(at, name.size(), "POLICY");
    return out;
  };
  return {named(diag.text(), source.empty() ? file : source), named(sequential.text(), file)};
}

Read read_text(const std::string& text, bool split) {
  Read out;
  fwe::yamlfe::PolicyReader reader(out.diag, split);
  reader.read_text(text, "policy.yaml");
  out.conflicted = reader.split_conflicted();
  out.ruleset = reader.finish();
  return out;
}

}  // namespace

TEST_CASE("chains read on two threads are what one thread reads", "[split]") {
  SECTION("a valid policy") {
    const std::string text = policy(8, 400, {});
    Read one = read_text(text, false), two = read_text(text, true);
    REQUIRE_FALSE(two.conflicted);
    CHECK(two.diag.text().empty());
    CHECK(two.ruleset.chains.size() == 8);
    CHECK(two.ruleset.sets.size() == 3200);
    CHECK(fwe::canonical::hash(two.ruleset) == fwe::canonical::hash(one.ruleset));
  }
  SECTION("errors in both halves are reported in reading order") {
    const std::string text = policy(8, 400, {{1, 7}, {6, 3}, {7, 399}});
    Read one = read_text(text, false), two = read_text(text, true);
    REQUIRE_FALSE(two.conflicted);
    CHECK(one.diag.error_count() == 3);
    CHECK(two.diag.text() == one.diag.text());
  }
}

TEST_CASE("a name the second half cannot check is read again on one thread", "[split]") {
  // A chain of the second half with the name of an inline set of the first; a named set with the name
  // of an inline set of the second half; a second-half chain that an earlier document has.
  const std::string late_chain = "  c1.5.src:\n    - {action: drop}\n";
  const std::string named_set = "sets:\n  c7.2.src: [192.0.2.0/24]\n";
  const std::string earlier = "apiVersion: fwengine/v1\nchains:\n  c6:\n    - {action: drop}\n---\n";
  for (const std::string& text : {policy(8, 400, {}, late_chain), policy(8, 400, {}, "", named_set),
                                  earlier + policy(8, 400, {{6, 1}})}) {
    Read one = read_text(text, false), two = read_text(text, true);
    CHECK(two.conflicted);
    REQUIRE(one.diag.has_errors());

    const Reports read = reports(text);
    CHECK(read.split == read.sequential);
  }
}

TEST_CASE("a reader whose split met such a name stays conflicted through later documents", "[split]") {
  // The first document's split meets a chain named like a set of the first half; the second
  // document's would meet nothing. What was read of the first is not what one thread reads.
  const std::string text =
      policy(8, 400, {}, "  c1.5.src:\n    - {action: drop}\n") + "---\n" + policy(8, 400, {}, "", "", "d");
  Read one = read_text(text, false), two = read_text(text, true);
  CHECK(two.conflicted);
  REQUIRE(one.diag.error_count() == 1);
  const Reports read = reports(text);
  CHECK(read.split == read.sequential);
}

TEST_CASE("a source that cannot be read twice is read on one thread", "[split]") {
  // A pipe named by /proc/self/fd, as a shell's <(...) gives one: a second reading finds it empty.
  const std::string text = policy(8, 400, {}, "  c1.5.src:\n    - {action: drop}\n");
  int ends[2];
  REQUIRE(pipe(ends) == 0);
  std::thread writer([&] {
    for (std::size_t done = 0; done < text.size();) {
      const ssize_t n = write(ends[1], text.data() + done, text.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    close(ends[1]);
  });
  const Reports read = reports(text, "/proc/self/fd/" + std::to_string(ends[0]));
  writer.join();
  close(ends[0]);
  CHECK(read.split.find("has the name of a set") != std::string::npos);
  CHECK(read.split == read.sequential);
}

TEST_CASE("read_policy of a large file reports what one thread reports", "[split]") {
  namespace fs = std::filesystem;
  const fs::path file =
      fs::temp_directory_path() / ("fwe-yaml-split-ok-" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(file) << policy(6, 500, {{0, 0}, {5, 499}});
  fwe::Diagnostics diag, sequential;
  fwe::yamlfe::read_policy({file.string()}, diag);
  fwe::yamlfe::PolicyReader reader(sequential);
  reader.read_source(file.string());
  reader.finish();
  CHECK(diag.error_count() == 2);
  CHECK(diag.text() == sequential.text());
  CHECK(diag.files() == sequential.files());
  fs::remove(file);
}
