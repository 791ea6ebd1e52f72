// test_support.hpp - small IR builders and scratch network namespaces for the nft backend's tests.
#pragma once

#include <functional>
#include <string>

#include "fwengine/ir.hpp"

namespace nft_test {

// A ruleset with one input section: endpoint "eth0" (iif eth0, conntrack prelude, failsafe), one group
// "tier" with chain "allow-ssh" (tcp dport 22 from set "admins" -> allow) and default drop.
fwe::ir::Ruleset small_ruleset();
// Every stage, match and action the backend declares, for the "text equals what is sent" test.
fwe::ir::Ruleset kitchen_sink_ruleset();
fwe::ir::Origin origin(std::uint32_t line, std::string policy, std::int32_t rule = -1);

struct ChildResult {
  int exit_code = -1;
  std::string output;  // what the body returned, or the exception text
};
// Runs body in a forked child that first enters a fresh network namespace (unshare CLONE_NEWNET):
// nothing it does can reach the namespace the tests run in.
ChildResult in_scratch_netns(const std::function<std::string()>& body);
// Runs a shell command (in the caller's namespace), returns its stdout; throws when it fails.
std::string shell(const std::string& command);
// Skips a [root] test (CTest SKIP_RETURN_CODE 77) when we cannot create namespaces.
void require_root();

}  // namespace nft_test
