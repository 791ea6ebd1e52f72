// support.hpp - rulesets and a scratch network namespace for the iptables backend's tests.
#pragma once

#include <string>
#include <vector>

#include "fwengine/ir.hpp"
#include "model.hpp"

namespace fwe::iptables::test {

// A small host policy: input (loopback accept; uplink with conntrack, failsafe, two groups, sets large
// and small, ports, ICMP, log, pass, reject), forward with honour_allow, output, raw untracked-in with
// notrack, prednat allow, dnat and snat. Passes already run (normalised, failsafe injected).
ir::Ruleset sample_ruleset();
// One set, one chain, input only.
ir::Ruleset tiny_ruleset(const std::string& port_chain_name = "web");
// Input only, one chain "list" (runs.yaml lines 10..19): accepts from 10.0.K.0/24 to port 1000+K (K =
// 0, 1, 3, 4; the third rule is from 2001:db8::/64 to 1002, the fourth is UDP), then 10.0.0.0/16 to 1000
// (overlaps the first), then to 127.0.0.K port 700K (K = 2..5).
ir::Ruleset runs_ruleset();
// Input only: one group jumps to chains a, b, d, c; a, b and c hold two accepts each (from 10.0.K.0/24
// to port 1000+K), d a log rule.
ir::Ruleset fusion_ruleset();
// One chain of `rules` rules from distinct 10.x.y.z/32 to TCP port 5000 + i % ports, accepted: one run.
ir::Ruleset long_run_ruleset(std::size_t rules, std::uint16_t ports);
// One chain of `rules` rules from random networks of 10.0.0.0/16 (prefixes 16 to 32, so that many hold
// others; every tenth from one of 2001:db8::/45) to TCP port 1000, 1001 or 1002 (a quarter of them to
// the next port too), accepted: runs that overlaps end (random with seed).
ir::Ruleset nested_ruleset(std::uint32_t seed, std::size_t rules);
// The same ruleset with every origin `lines` further down its file: lines inserted above its policies.
ir::Ruleset moved_down(ir::Ruleset rs, std::uint32_t lines);

// A set's members or comments as strings: what Catch2 prints when they differ.
std::vector<std::string> strings_of(const PackedStrings& list);

// Moves this test process into a fresh network namespace (unshare(CLONE_NEWNET)), so nothing it does
// reaches the host's firewall. Exits with 77 (ctest: skipped) when that or iptables-legacy/ipset
// cannot work here.
void enter_scratch_netns();

// iptables-legacy-save (or ip6tables-) output without comments and counters: what to compare.
std::string save_text(bool v6 = false);
std::string ipset_text_now();

}  // namespace fwe::iptables::test
