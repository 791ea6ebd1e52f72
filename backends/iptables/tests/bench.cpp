// bench.cpp - `iptables_bench` (not a ctest test; run as root): render+apply time of fwengine's iptables
// backend against a plain iptables-legacy-restore of the same linear ruleset, in a scratch namespace.
#include <chrono>
#include <iostream>

#include "kernel.hpp"
#include "render.hpp"
#include "support.hpp"

using namespace fwe;
using namespace fwe::iptables;

namespace {

std::string host(int i) {
  return "10." + std::to_string(i / 65536) + "." + std::to_string(i / 256 % 256) + "." +
         std::to_string(i % 256);
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

Model render_or_die(const ir::Ruleset& rs) {
  Diagnostics diag;
  Model m = render(rs, diag);
  if (diag.has_errors()) {
    diag.print(std::cerr);
    std::exit(1);
  }
  return m;
}

}  // namespace

int main() {
  test::enter_scratch_netns();
  for (int n : {100, 1000, 10000, 50000}) {
    ir::Ruleset rs = test::tiny_ruleset();
    auto& rules = rs.chains.begin()->second.rules;
    std::string linear = "*filter\n";
    for (int i = 0; i < n; ++i) {
      std::string set = "host-" + std::to_string(i);
      rs.sets[set] = {{*ir::parse_cidr(host(i) + "/32")}, {}};
      ir::Rule r = rules.back();
      r.match.src_addr = {{false, set}};
      rules.push_back(r);
      linear += "-A INPUT -s " + host(i) + "/32 -p tcp -m multiport --dports 80 -j ACCEPT\n";
    }
    linear += "COMMIT\n";
    auto start = std::chrono::steady_clock::now();
    apply_model(render_or_die(rs), "bench", false);
    double ours = ms_since(start);
    flush_all();
    start = std::chrono::steady_clock::now();
    if (run_tool({"iptables-legacy-restore", "--noflush"}, linear).status != 0) return 1;
    double plain = ms_since(start);
    run_tool({"iptables-legacy", "-F", "INPUT"});
    std::cout << n << " rules: render+apply " << ours << " ms, plain restore " << plain << " ms\n";
  }
  ir::Ruleset rs = test::tiny_ruleset();
  auto& admins = rs.sets.at("admins").cidrs;
  admins.clear();
  for (int i = 0; i < 100000; ++i) admins.push_back(*ir::parse_cidr(host(i) + "/32"));
  auto start = std::chrono::steady_clock::now();
  apply_model(render_or_die(rs), "bench", false);
  std::cout << "100000 set elements: render+apply " << ms_since(start) << " ms\n";
  return 0;
}
