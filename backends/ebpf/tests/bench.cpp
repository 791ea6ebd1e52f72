// bench.cpp - ns per packet through BPF_PROG_TEST_RUN as rules and set elements grow, and the time a
// one-rule policy change takes. Root; runs in a network and mount namespace of its own.
//   build/bin/ebpf_bench [repeat]     (repeat for the small cases; scaled down as the rules grow, so
//                                     that a case takes seconds, not minutes: the scan is linear)
#include <linux/pkt_cls.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "backend.hpp"
#include "fwengine/passes.hpp"
#include "support.hpp"

using namespace fwe;
using namespace fwe::ebpf;

namespace {

void must(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "ebpf_bench: %s failed\n", what);
  std::exit(1);
}

// 11.0.0.0 + n*8: /30s with gaps between them, so that core cannot merge them into fewer CIDRs, and
// none contains the probe.
ir::IpAddr nth_v4(std::uint32_t n) {
  ir::IpAddr a;
  const std::uint32_t v = (11u << 24) + n * 8;
  a.bytes = {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
             static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
  return a;
}

// rules: that many non-matching rules, then the accepting one. elements: one rule whose source set has
// that many CIDRs, the probe's among them.
ir::Ruleset ruleset(std::size_t rules, std::size_t elements) {
  ir::Ruleset rs;
  rs.files = {"<command line>", "bench"};
  ir::AddrSet set{"clients", {}, {}};
  for (std::size_t i = 0; i + 1 < elements; ++i)
    set.cidrs.push_back({nth_v4(static_cast<std::uint32_t>(i)), 30});
  set.cidrs.push_back(*ir::parse_cidr("10.0.0.0/24"));
  rs.sets["clients"] = set;
  ir::Chain chain{"bench", {}, {}};
  for (std::size_t i = 0; i + 1 < rules; ++i) {
    ir::Rule r;
    r.match.protocols = std::vector<std::uint8_t>{6};
    r.match.dst_port.push_back(
        {false,
         {{static_cast<std::uint16_t>(1000 + i % 60000), static_cast<std::uint16_t>(1000 + i % 60000)}}});
    r.action.kind = ir::ActionKind::drop;
    chain.rules.push_back(r);
  }
  ir::Rule accept;
  accept.match.src_addr.push_back({false, "clients"});
  accept.action.kind = ir::ActionKind::accept;
  chain.rules.push_back(accept);
  rs.chains["bench"] = chain;
  ir::Endpoint ep;
  ep.name = "bench";
  ep.groups.push_back({"bench", {"bench"}, ir::Verdict::continue_, {}, {}});
  ep.default_verdict = ir::Verdict::drop;
  rs.stage(ir::Stage::input).sections.push_back({"bench", false, {ep}});
  passes::normalise(rs);
  return rs;
}

double ns_per_packet(int repeat) {
  auto p = test::packet("d0", "", "10.0.0.20", "10.0.0.1", 6, 40000, 80);
  const test::TestRun run = test::test_run(p, true, test::kTcpSyn, static_cast<std::uint32_t>(repeat));
  must(run.retval == TC_ACT_OK, "the accepting rule");
  return run.duration_ns;
}

double apply_ms(EbpfBackend& backend, const ir::Ruleset& rs) {
  Diagnostics diag;
  auto plan = backend.render(rs, diag);
  must(plan != nullptr, "render");
  auto start = std::chrono::steady_clock::now();
  backend.apply(*plan, {.ir_hash = "bench"});
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int repeat = argc > 1 ? std::atoi(argv[1]) : 1'000'000;
  if (geteuid() != 0) return std::fprintf(stderr, "ebpf_bench: needs root\n"), 77;
  must(unshare(CLONE_NEWNET | CLONE_NEWNS) == 0, "unshare");
  must(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, "making / private");
  must(mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") == 0, "mounting bpffs");
  must(std::system("ip link set lo up && ip link add d0 type veth peer name p0 && ip link set d0 up && "
                   "ip link set p0 up && ip addr add 10.0.0.1/24 dev d0") == 0,
       "setting up interfaces");
  EbpfBackend backend(PluginContext{"bench"});
  std::printf("%-28s %12s %12s\n", "case", "ns/packet", "apply ms");
  for (std::size_t n : {10, 1'000, 10'000, 100'000}) {
    ir::Ruleset rs = ruleset(n, 1);
    Diagnostics diag;
    if (compile(rs, diag), diag.has_errors()) {
      std::printf("%-28s %12s\n", (std::to_string(n) + " rules").c_str(), "over limit");
      continue;
    }
    double ms = apply_ms(backend, rs);
    const int scaled = std::max(1000, static_cast<int>(repeat / std::max<std::size_t>(1, n / 10)));
    std::printf("%-28s %12.1f %12.1f\n", (std::to_string(n) + " rules").c_str(), ns_per_packet(scaled), ms);
  }
  for (std::size_t n : {10, 1'000, 10'000, 100'000}) {
    double ms = apply_ms(backend, ruleset(1, n));
    std::printf("%-28s %12.1f %12.1f\n", (std::to_string(n) + " set elements").c_str(), ns_per_packet(repeat),
                ms);
  }
  // Both generations hold the 10,000 rules first, so the change clears only what a steady host's
  // previous apply left (not the 100,000-element set of the case before).
  ir::Ruleset rs = ruleset(10'000, 1);
  apply_ms(backend, rs);
  apply_ms(backend, rs);
  rs.chains["bench"].rules[0].match.dst_port[0].ports[0] = {999, 999};
  std::printf("%-28s %12s %12.1f\n", "one-rule change, 10k rules", "", apply_ms(backend, rs));
  backend.flush();
  return 0;
}
