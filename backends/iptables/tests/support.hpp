// support.hpp - rulesets and a scratch network namespace for the iptables backend's tests.
#pragma once

#include <string>

#include "fwengine/ir.hpp"

namespace fwe::iptables::test {

// A small host policy: input (loopback accept; uplink with conntrack, failsafe, two groups, sets large
// and small, ports, ICMP, log, pass, reject), forward with honour_allow, output, raw untracked-in with
// notrack, prednat allow, dnat and snat. Passes already run (normalised, failsafe injected).
ir::Ruleset sample_ruleset();
// One set, one chain, input only.
ir::Ruleset tiny_ruleset(const std::string& port_chain_name = "web");

// Moves this test process into a fresh network namespace (unshare(CLONE_NEWNET)), so nothing it does
// reaches the host's firewall. Exits with 77 (ctest: skipped) when that or iptables-legacy/ipset
// cannot work here.
void enter_scratch_netns();

// iptables-legacy-save (or ip6tables-) output without comments and counters: what to compare.
std::string save_text(bool v6 = false);
std::string ipset_text_now();

}  // namespace fwe::iptables::test
