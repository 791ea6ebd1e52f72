// bench.cpp - ns per packet through BPF_PROG_TEST_RUN as rules and set elements grow, against the floor
// (floor.bpf.c: one LPM lookup alone), and the time an apply and a one-rule policy change take. Root;
// runs in a network and mount namespace of its own. integration/bench/run.py reads its --json.
//   build/bin/ebpf_bench [--json] [--repeat N] [--rounds R] [--rules LIST] [--address-rules LIST]
//                        [--elements LIST]
#include <bpf/bpf.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "backend.hpp"
#include "floor.skel.h"
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

struct Options {
  bool json = false;
  std::uint32_t repeat = 1'000'000;  // packets per BPF_PROG_TEST_RUN
  int rounds = 5;                    // runs of fwengine's program and of the floor, in alternation
  std::vector<std::size_t> rules = {10, 1'000, 10'000, 100'000};
  std::vector<std::size_t> address_rules = {10, 1'000, 10'000, 100'000};
  std::vector<std::size_t> elements = {10, 1'000, 10'000, 100'000};
  std::size_t change_rules = 10'000;  // the one-rule change's policy
};

std::vector<std::size_t> parse_list(const char* text) {
  std::vector<std::size_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoul(item));
  return out;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--json") {
      o.json = true;
    } else if (arg == "--repeat" && has_value) {
      o.repeat = static_cast<std::uint32_t>(std::stoul(argv[++i]));
    } else if (arg == "--rounds" && has_value) {
      o.rounds = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--rules" && has_value) {
      o.rules = parse_list(argv[++i]);
      // The change's policy: the largest rule count up to 10,000 (0: none).
      o.change_rules = 0;
      for (std::size_t n : o.rules)
        if (n <= 10'000) o.change_rules = std::max(o.change_rules, n);
    } else if (arg == "--address-rules" && has_value) {
      o.address_rules = parse_list(argv[++i]);
    } else if (arg == "--elements" && has_value) {
      o.elements = parse_list(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: ebpf_bench [--json] [--repeat PACKETS] [--rounds R] [--rules N,...] "
                   "[--address-rules N,...] "
                   "[--elements N,...]\n");
      std::exit(2);
    }
  }
  return o;
}

// 11.0.0.0 + n*8: /30s with gaps between them, so that core cannot merge them into fewer CIDRs, and
// none contains the probe.
ir::Cidr nth_cidr(std::uint32_t n) {
  ir::IpAddr a;
  const std::uint32_t v = (11u << 24) + n * 8;
  a.bytes = {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
             static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
  return {a, 30};
}

// The source set of the accepting rule: elements - 1 CIDRs that miss, then the probe's network.
std::vector<ir::Cidr> set_cidrs(std::size_t elements) {
  std::vector<ir::Cidr> cidrs;
  for (std::size_t i = 0; i + 1 < elements; ++i) cidrs.push_back(nth_cidr(static_cast<std::uint32_t>(i)));
  cidrs.push_back(*ir::parse_cidr("10.0.0.0/24"));
  return cidrs;
}

// rules: that many non-matching rules (one destination port each, so they form an indexed run; with
// sources, each also from its own /30, so they form one address run), then the accepting one.
// elements: one rule whose source set has that many CIDRs, the probe's among them.
ir::Ruleset ruleset(std::size_t rules, std::size_t elements, bool sources = false) {
  ir::Ruleset rs;
  rs.files = {"<command line>", "bench"};
  const std::vector<ir::Cidr> clients = set_cidrs(elements);
  rs.sets["clients"] = ir::AddrSet{{clients.begin(), clients.end()}, {}};
  ir::Chain chain{"bench", {}, {}};
  for (std::size_t i = 0; i + 1 < rules; ++i) {
    ir::Rule r;
    r.match.protocols = std::vector<std::uint8_t>{6};
    r.match.dst_port.push_back(
        {false,
         {{static_cast<std::uint16_t>(1000 + i % 60000), static_cast<std::uint16_t>(1000 + i % 60000)}}});
    r.action.kind = ir::ActionKind::drop;
    if (sources) {
      const std::string set = "r" + std::to_string(i);
      rs.sets[set] = ir::AddrSet{{nth_cidr(static_cast<std::uint32_t>(i))}, {}};
      r.match.src_addr.push_back({false, set});
    }
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

const trace::Packet& probe() {
  static const trace::Packet p = test::packet("d0", "", "10.0.0.20", "10.0.0.1", 6, 40000, 80);
  return p;
}

double apply_ms(EbpfBackend& backend, const ir::Ruleset& rs) {
  Diagnostics diag;
  auto plan = backend.render(rs, diag);
  must(plan != nullptr, "render");
  auto start = std::chrono::steady_clock::now();
  backend.apply(*plan, {.ir_hash = "bench"});
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

struct FloorDeleter {
  void operator()(floor_bpf* s) const { floor_bpf::destroy(s); }
};

// floor.bpf.c, loaded once; its trie is given each case's CIDRs.
class Floor {
 public:
  Floor() : skel_(floor_bpf::open_and_load()) { must(skel_ != nullptr, "loading floor.bpf.o"); }

  void fill(const std::vector<ir::Cidr>& cidrs) {
    const int fd = bpf_map__fd(skel_->maps.floor_set);
    for (const auto& key : keys_) bpf_map_delete_elem(fd, &key);
    keys_.clear();
    const std::uint8_t present = 1;
    for (const auto& cidr : cidrs) {
      Key key{cidr.prefix, {}};
      std::memcpy(key.addr, cidr.addr.bytes.data(), 4);
      must(bpf_map_update_elem(fd, &key, &present, BPF_ANY) == 0, "filling the floor's trie");
      keys_.push_back(key);
    }
  }

  double ns_per_packet(std::uint32_t repeat) const {
    const int ifindex = static_cast<int>(if_nametoindex("d0"));
    const auto run = test::test_run_program(bpf_program__fd(skel_->progs.floor_lookup), probe(), ifindex,
                                            test::kTcpSyn, repeat);
    must(run.retval == TC_ACT_OK, "the floor's lookup");
    return run.duration_ns;
  }

 private:
  struct Key {
    std::uint32_t prefixlen;
    std::uint8_t addr[4];
  };
  std::unique_ptr<floor_bpf, FloorDeleter> skel_;
  std::vector<Key> keys_;
};

double fwengine_ns_per_packet(std::uint32_t repeat) {
  const test::TestRun run = test::test_run(probe(), true, test::kTcpSyn, repeat);
  must(run.retval == TC_ACT_UNSPEC, "the accepting rule");
  return run.duration_ns;
}

struct Case {
  std::string kind;  // "rules", "address-rules" or "elements"
  std::size_t n = 0;
  bool over_limit = false;
  double apply_ms = 0;
  std::vector<double> ns, floor_ns;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string json_list(const std::vector<double>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    char item[32];
    std::snprintf(item, sizeof item, "%s%.1f", i ? ", " : "", v[i]);
    out += item;
  }
  return out + "]";
}

void print_json(const Options& o, const std::vector<Case>& cases, const std::vector<double>& change_ms) {
  std::printf("{\"repeat\": %u, \"rounds\": %d, \"cases\": [", o.repeat, o.rounds);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::printf(
        "%s\n {\"kind\": \"%s\", \"n\": %zu, \"over_limit\": %s, \"apply_ms\": %.2f, \"ns\": %s, "
        "\"floor_ns\": %s}",
        i ? "," : "", c.kind.c_str(), c.n, c.over_limit ? "true" : "false", c.apply_ms,
        json_list(c.ns).c_str(), json_list(c.floor_ns).c_str());
  }
  std::printf("],\n \"change\": {\"rules\": %zu, \"ms\": %s}}\n", o.change_rules,
              json_list(change_ms).c_str());
}

void print_text(const std::vector<Case>& cases, const std::vector<double>& change_ms,
                std::size_t change_rules) {
  std::printf("%-24s %12s %12s %8s %12s\n", "case (median)", "ns/packet", "floor ns", "ratio", "apply ms");
  for (const Case& c : cases) {
    const std::string name = std::to_string(c.n) + (c.kind == "rules"           ? " rules"
                                                    : c.kind == "address-rules" ? " address rules"
                                                                                : " set elements");
    if (c.over_limit) {
      std::printf("%-24s %12s\n", name.c_str(), "over limit");
      continue;
    }
    const double ns = median(c.ns), floor = median(c.floor_ns);
    std::printf("%-24s %12.1f %12.1f %8.2f %12.1f\n", name.c_str(), ns, floor, floor > 0 ? ns / floor : 0,
                c.apply_ms);
  }
  if (!change_ms.empty())
    std::printf("%-24s %12s %12s %8s %12.1f\n", ("one-rule change, " + std::to_string(change_rules)).c_str(),
                "", "", "", median(change_ms));
}

// The whole run on one CPU, the last one allowed: on this machine kind a packet has cost up to 1.5x
// more on CPU 0 than on CPU 1 (the floor too), and a move between them mid-run would read as a change
// with N. BPF_PROG_TEST_RUN runs on the CPU that calls it.
void pin_to_last_cpu() {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  for (int cpu = CPU_SETSIZE - 1; cpu >= 0; --cpu)
    if (CPU_ISSET(cpu, &allowed)) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      must(sched_setaffinity(0, sizeof one, &one) == 0, "pinning to one CPU");
      return;
    }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  if (geteuid() != 0) return std::fprintf(stderr, "ebpf_bench: needs root\n"), 77;
  pin_to_last_cpu();
  must(unshare(CLONE_NEWNET | CLONE_NEWNS) == 0, "unshare");
  must(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, "making / private");
  must(mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") == 0, "mounting bpffs");
  must(std::system("ip link set lo up && ip link add d0 type veth peer name p0 && ip link set d0 up && "
                   "ip link set p0 up && ip addr add 10.0.0.1/24 dev d0") == 0,
       "setting up interfaces");
  EbpfBackend backend(PluginContext{"bench"});
  Floor floor;
  std::vector<Case> cases;
  auto measure = [&](const std::string& kind, std::size_t n, std::size_t rules, std::size_t elements) {
    Case c;
    c.kind = kind;
    c.n = n;
    const bool sources = kind == "address-rules";
    const ir::Ruleset rs = ruleset(rules, elements, sources);
    Diagnostics diag;
    if (compile(rs, diag), diag.has_errors()) {
      c.over_limit = true;
      cases.push_back(c);
      return;
    }
    c.apply_ms = apply_ms(backend, rs);
    floor.fill(set_cidrs(sources ? rules : elements));  // the rules' networks and the probe's
    for (int r = 0; r < o.rounds; ++r) {                // A B A B: noise hits both alike
      c.ns.push_back(fwengine_ns_per_packet(o.repeat));
      c.floor_ns.push_back(floor.ns_per_packet(o.repeat));
    }
    cases.push_back(c);
  };
  for (std::size_t n : o.rules) measure("rules", n, n, 1);
  for (std::size_t n : o.address_rules) measure("address-rules", n, n, 1);
  for (std::size_t n : o.elements) measure("elements", n, 1, n);

  // Policy-update latency: both generations hold the policy first (as on a host that has applied it
  // before), then one rule's port flips back and forth.
  std::vector<double> change_ms;
  if (o.change_rules >= 2) {  // rule 0 is a port rule
    ir::Ruleset rs = ruleset(o.change_rules, 1);
    apply_ms(backend, rs);
    apply_ms(backend, rs);
    for (int r = 0; r < o.rounds; ++r) {
      rs.chains["bench"].rules[0].match.dst_port[0].ports[0] =
          r % 2 ? ir::PortRange{1000, 1000} : ir::PortRange{999, 999};
      change_ms.push_back(apply_ms(backend, rs));
    }
  }
  backend.flush();
  if (o.json)
    print_json(o, cases, change_ms);
  else
    print_text(cases, change_ms, o.change_rules);
  return 0;
}
