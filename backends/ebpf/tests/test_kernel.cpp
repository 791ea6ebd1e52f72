// test_kernel.cpp - verdicts of the real programs through BPF_PROG_TEST_RUN, compared with trace.
// Each test unshares a network and mount namespace of its own (its own bpffs too); needs root.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <utility>

#include "backend.hpp"
#include "compile.hpp"
#include "fwengine/canonical.hpp"
#include "fwengine/passes.hpp"
#include "support.hpp"

using namespace fwe;
using namespace fwe::ebpf;

namespace {

void run(const std::string& command) {
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
}

bool an_address_is_tentative() {
  std::ifstream addresses("/proc/net/if_inet6");  // this namespace's: address index length scope flags name
  std::string address, index, length, scope, flags, name;
  while (addresses >> address >> index >> length >> scope >> flags >> name)
    if (std::stoul(flags, nullptr, 16) & IFA_F_TENTATIVE) return true;
  return false;
}

std::string link_counters() {
  std::ifstream counters("/proc/net/dev");
  std::ostringstream text;
  text << counters.rdbuf();
  return text.str();
}

// The chatter above still follows a link's setup by some milliseconds (more on a loaded machine): wait
// until every address is past DAD and no link has sent or received anything for 100 ms.
void wait_until_links_are_quiet() {
  for (int tries = 0; tries < 50; ++tries) {
    const std::string before = link_counters();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!an_address_is_tentative() && link_counters() == before) return;
  }
  FAIL("the scratch namespace's links were still sending after 5 s");
}

void enter_scratch_namespace() {
  if (geteuid() != 0) std::_Exit(77);  // CTest: skipped
  REQUIRE(unshare(CLONE_NEWNET | CLONE_NEWNS) == 0);
  REQUIRE(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0);
  REQUIRE(mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") == 0);
  // The links of this namespace send IPv6 chatter of their own (router solicitations every 4 s, duplicate
  // address detection, MLD reports repeated up to 1 s later) through the programs, which counted it
  // between a test's two counter reads. Quiet them: no solicitations and no DAD, MLD repeats at once, and
  // a link-local address's DAD (and with it its MLD reports) starts at once instead of up to 1 s later.
  for (const auto& [key, value] : {std::pair{"router_solicitations", "0"},
                                   {"router_solicitation_delay", "0"},
                                   {"accept_ra", "0"},
                                   {"dad_transmits", "0"},
                                   {"mldv1_unsolicited_report_interval", "1"},
                                   {"mldv2_unsolicited_report_interval", "1"}})
    std::ofstream(std::string("/proc/sys/net/ipv6/conf/default/") + key) << value << "\n";
  run("ip link set lo up");
  run("ip link add d0 type veth peer name p0 && ip link add d1 type veth peer name p1");
  run("ip link set d0 up && ip link set p0 up && ip link set d1 up && ip link set p1 up");
  run("ip addr add 10.0.0.1/24 dev d0 && ip addr add 10.1.0.1/24 dev d1");
  run("ip addr add 2001:db8::1/64 dev d0 nodad && ip addr add 2001:db8:1::1/64 dev d1 nodad");
  std::ofstream("/proc/sys/net/ipv4/ip_forward") << "1\n";
  std::ofstream("/proc/sys/net/ipv6/conf/all/forwarding") << "1\n";
  wait_until_links_are_quiet();
}

// The programs' verdict for one packet: true = let through.
bool delivered(const trace::Packet& p) {
  try {
    return test::run_programs(p);
  } catch (const std::runtime_error& e) {
    FAIL(e.what());
    return false;
  }
}

void apply(EbpfBackend& backend, const ir::Ruleset& rs) {
  Diagnostics diag;
  auto plan = backend.render(rs, diag);
  REQUIRE(plan);
  backend.apply(*plan, {.ir_hash = canonical::hash(rs)});
}

// With the sample ruleset: a request from d1's side to the host's ssh, and the host's answer. d1's
// output endpoint drops by default: the answer leaves only as the reply of a request.
std::pair<trace::Packet, trace::Packet> ssh_through_d1() {
  auto request = test::packet("d1", "", "10.1.0.5", "10.0.0.1", 6, 40000, 22);
  request.src_mac.reset();
  return {request, test::packet("", "d1", "10.0.0.1", "10.1.0.5", 6, 22, 40000)};
}

struct Outcomes {
  std::size_t passed = 0, dropped = 0;
};

// The sample ruleset, applied in a scratch namespace of its own.
struct SampleApplied {
  ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend{PluginContext{"test"}};
  Kernel kernel{"test"};
  SampleApplied() {
    enter_scratch_namespace();
    apply(backend, rs);
  }
};

// Applies rs and checks each packet, each the first of its flow, against trace's verdict, and the mark
// of each one let through against the mark trace's walk leaves it with.
Outcomes check_against_trace(EbpfBackend& backend, const ir::Ruleset& rs,
                             const std::vector<trace::Packet>& packets) {
  apply(backend, rs);
  Kernel kernel("test");
  Outcomes out;
  for (const auto& p : packets) {
    test::clear_conntrack(kernel.pin_dir());
    const trace::Result expected = trace::evaluate(rs, p);
    ++(expected.delivered ? out.passed : out.dropped);
    INFO(test::describe(p));
    const test::Judged judged = test::judge(p);
    CHECK((judged.outcome == test::Outcome::passed) == expected.delivered);
    if (!expected.delivered) continue;
    CHECK(judged.mark == expected.packet.mark);
  }
  return out;
}

}  // namespace

TEST_CASE("every sample packet and its reply get trace's verdict", "[root]") {
  const SampleApplied sample;
  const ir::Ruleset& rs = sample.rs;
  std::size_t passed = 0, dropped = 0, answered = 0;
  for (const auto& p : test::sample_packets()) {
    test::clear_conntrack(sample.kernel.pin_dir());
    const trace::Result expected = trace::evaluate(rs, p);
    const test::Outcome outcome = test::expected_outcome(expected, p);
    ++(outcome == test::Outcome::passed ? passed : outcome == test::Outcome::dropped ? dropped : answered);
    INFO(test::describe(p));
    const test::Judged judged = test::judge(p);
    CHECK(test::to_string(judged.outcome) == test::to_string(outcome));
    if (!expected.delivered) continue;
    CHECK(judged.mark == expected.packet.mark);
    const trace::Packet reply = trace::reply_of(p, expected);
    INFO("reply " << test::describe(reply));
    CHECK(delivered(reply) == trace::evaluate(rs, reply).delivered);
  }
  CHECK(passed >= 10);  // the table exercises every outcome
  CHECK(dropped >= 10);
  CHECK(answered >= 1);
}

namespace answers {

std::uint16_t get16(const std::vector<std::uint8_t>& f, std::size_t at) {
  return static_cast<std::uint16_t>(f.at(at) << 8 | f.at(at + 1));
}
std::uint32_t get32(const std::vector<std::uint8_t>& f, std::size_t at) {
  return static_cast<std::uint32_t>(get16(f, at)) << 16 | get16(f, at + 2);
}

// The ones' complement sum of the bytes, folded: 0xffff over a region whose checksum is right.
std::uint16_t sum(const std::vector<std::uint8_t>& bytes) {
  std::uint32_t s = 0;
  for (std::size_t i = 0; i < bytes.size(); i += 2)
    s += static_cast<std::uint32_t>(bytes[i] << 8 | (i + 1 < bytes.size() ? bytes[i + 1] : 0));
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<std::uint16_t>(s);
}

// The transport part of an answer (behind its IP header), with the pseudo-header its checksum covers
// (none for ICMP over IPv4), summed.
std::uint16_t transport_sum(const std::vector<std::uint8_t>& f, bool v6) {
  const std::size_t l4 = v6 ? 54 : 34;
  std::vector<std::uint8_t> covered;
  const std::uint8_t proto = f.at(v6 ? 20 : 23);
  const auto length = static_cast<std::uint16_t>(f.size() - l4);
  if (v6) {
    covered.assign(f.begin() + 22, f.begin() + 54);  // source, destination
    covered.insert(covered.end(), {0, 0, static_cast<std::uint8_t>(length >> 8),
                                   static_cast<std::uint8_t>(length & 0xff), 0, 0, 0, proto});
  } else if (proto != 1) {
    covered.assign(f.begin() + 26, f.begin() + 34);
    covered.insert(covered.end(), {0, proto, static_cast<std::uint8_t>(length >> 8),
                                   static_cast<std::uint8_t>(length & 0xff)});
  }
  covered.insert(covered.end(), f.begin() + static_cast<std::ptrdiff_t>(l4), f.end());
  return sum(covered);
}

// The frame comes back to its sender: addresses (Ethernet and IP) swapped, a valid IP header.
void check_returned(const std::vector<std::uint8_t>& sent, const std::vector<std::uint8_t>& answer, bool v6,
                    std::uint8_t proto) {
  REQUIRE(answer.size() >= (v6 ? 62u : 42u));
  CHECK(std::equal(answer.begin(), answer.begin() + 6, sent.begin() + 6));
  CHECK(std::equal(answer.begin() + 6, answer.begin() + 12, sent.begin()));
  CHECK(get16(answer, 12) == get16(sent, 12));
  if (v6) {
    CHECK(answer[14] >> 4 == 6);
    CHECK(get16(answer, 18) == answer.size() - 54);
    CHECK(answer[20] == proto);
    CHECK(std::equal(answer.begin() + 22, answer.begin() + 38, sent.begin() + 38));  // from its destination
    CHECK(std::equal(answer.begin() + 38, answer.begin() + 54, sent.begin() + 22));  // to its source
  } else {
    CHECK(answer[14] == 0x45);
    CHECK(get16(answer, 16) == answer.size() - 14);
    CHECK(answer[23] == proto);
    CHECK(std::equal(answer.begin() + 26, answer.begin() + 30, sent.begin() + 30));
    CHECK(std::equal(answer.begin() + 30, answer.begin() + 34, sent.begin() + 26));
    CHECK(sum({answer.begin() + 14, answer.begin() + 34}) == 0xffff);
  }
  CHECK(transport_sum(answer, v6) == 0xffff);
}

struct Answered {
  std::vector<std::uint8_t> sent, answer;
};

// frame_of's frame for p with `extra` bytes of payload more (the IP and UDP lengths to match).
std::vector<std::uint8_t> longer(const trace::Packet& p, std::size_t extra) {
  std::vector<std::uint8_t> frame = test::frame_of(p);
  frame.resize(frame.size() + extra, 0x5a);
  const bool v6 = p.src.family == ir::Family::ipv6;
  const std::size_t length_at = v6 ? 18 : 16, l4 = v6 ? 54 : 34;
  const auto length = static_cast<std::uint16_t>(get16(frame, length_at) + extra);
  frame[length_at] = static_cast<std::uint8_t>(length >> 8);
  frame[length_at + 1] = static_cast<std::uint8_t>(length & 0xff);
  if (p.protocol == 17) {
    const auto udp = static_cast<std::uint16_t>(frame.size() - l4);
    frame[l4 + 4] = static_cast<std::uint8_t>(udp >> 8);
    frame[l4 + 5] = static_cast<std::uint8_t>(udp & 0xff);
  }
  return frame;
}

Answered run_frame(const trace::Packet& p, std::vector<std::uint8_t> sent) {
  const bool in = !p.iif.empty();
  const std::string& ifname = in ? p.iif : p.oif;
  const int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  const int fd = Kernel::attached_program(ifindex, in);
  REQUIRE(fd >= 0);
  const auto own = test::test_run_frame(fd, sent, ifindex, 0);
  close(fd);
  REQUIRE(own.retval == TC_ACT_REDIRECT);
  std::copy(own.frame.begin() + 6, own.frame.begin() + 12, sent.begin());  // the MAC the run sent it to
  return {sent, own.frame};
}

Answered run(const trace::Packet& p, std::uint8_t tcp_flags = test::kTcpSyn) {
  return run_frame(p, test::frame_of(p, tcp_flags));
}

}  // namespace answers

TEST_CASE("a rejected packet comes back as the answer the kernel's reject sends", "[root]") {
  enter_scratch_namespace();
  EbpfBackend backend{PluginContext{"test"}};
  apply(backend, test::reject_ruleset());
  using answers::get16;
  using answers::get32;

  SECTION("a SYN gets a reset that acknowledges it") {
    const auto [sent, rst] = answers::run(test::packet("d0", "", "10.0.0.5", "10.0.0.1", 6, 40000, 23));
    answers::check_returned(sent, rst, false, 6);
    REQUIRE(rst.size() == 54);
    CHECK(get16(rst, 34) == 23);
    CHECK(get16(rst, 36) == 40000);
    CHECK(get32(rst, 38) == 0);
    CHECK(get32(rst, 42) == 2);  // frame_of's SYN has sequence number 1
    CHECK(rst[46] == 0x50);
    CHECK(rst[47] == 0x14);  // RST+ACK
  }
  SECTION("a packet that acknowledges gets a reset from its acknowledgment number") {
    const auto [sent, rst] =
        answers::run(test::packet("d0", "", "2001:db8::5", "2001:db8::1", 6, 40000, 23), test::kTcpAck);
    answers::check_returned(sent, rst, true, 6);
    REQUIRE(rst.size() == 74);
    CHECK(get32(rst, 58) == get32(sent, 62));
    CHECK(rst[67] == 0x04);  // RST alone
  }
  SECTION("UDP gets the rule's ICMP error, quoting the packet") {
    const auto [sent, error] = answers::run(test::packet("d0", "", "10.0.0.5", "10.0.0.1", 17, 40000, 53));
    answers::check_returned(sent, error, false, 1);
    CHECK(error[34] == 3);
    CHECK(error[35] == 13);  // admin-prohibited
    CHECK(std::vector(error.begin() + 42, error.end()) == std::vector(sent.begin() + 14, sent.end()));
  }
  SECTION("IPv6 gets ICMPv6, and an IPv4-only type becomes admin-prohibited") {
    const auto [sent, error] =
        answers::run(test::packet("d0", "", "2001:db8::5", "2001:db8::1", 6, 40000, 24));
    answers::check_returned(sent, error, true, 58);
    CHECK(error[54] == 1);
    CHECK(error[55] == 1);
    CHECK(std::vector(error.begin() + 62, error.end()) == std::vector(sent.begin() + 14, sent.end()));
  }
  SECTION(
      "the endpoint's default reject answers port unreachable; tcp-reset answers a packet the host sends") {
    const auto [sent, error] = answers::run(test::packet("d0", "", "10.0.0.5", "10.0.0.1", 17, 40000, 9999));
    CHECK(error.at(34) == 3);
    CHECK(error.at(35) == 3);
    const auto [out, rst] = answers::run(test::packet("", "d0", "10.0.0.1", "10.0.0.5", 6, 40000, 80));
    answers::check_returned(out, rst, false, 6);
    CHECK(rst.at(47) == 0x14);
  }
  SECTION("any protocol gets its ICMP error; the quote stops at 128 bytes, an odd one is padded to sum") {
    const auto gre = test::packet("d0", "", "10.0.0.5", "10.0.0.1", 47, 0, 0);
    const auto [sent, error] = answers::run_frame(gre, answers::longer(gre, 200));
    answers::check_returned(sent, error, false, 1);
    REQUIRE(error.size() == 42 + 128);
    CHECK(std::vector(error.begin() + 42, error.end()) == std::vector(sent.begin() + 14, sent.begin() + 142));
    const auto odd = test::packet("d0", "", "2001:db8::5", "2001:db8::1", 17, 40000, 5000);
    const auto [sent6, error6] = answers::run_frame(odd, answers::longer(odd, 3));
    answers::check_returned(sent6, error6, true, 58);
    CHECK(error6.size() == 62 + 40 + 8 + 3);
    CHECK(error6[55] == 4);
  }
  SECTION("no answer to a broadcast frame, even to a unicast address (a directed broadcast)") {
    const auto p = test::packet("d0", "", "10.0.0.5", "10.0.0.255", 17, 40000, 5000);
    auto frame = test::frame_of(p);
    std::fill(frame.begin(), frame.begin() + 6, 0xff);
    const int ifindex = static_cast<int>(if_nametoindex("d0"));
    const int fd = Kernel::attached_program(ifindex, true);
    CHECK(test::test_run_frame(fd, frame, ifindex, 0).retval == TC_ACT_SHOT);
    close(fd);
  }
  SECTION("no answer to an ICMP error, a reset, or a multicast packet: dropped") {
    auto error = test::packet("d0", "", "10.0.0.5", "10.0.0.1", 1, 0, 0);
    error.icmp_type = 3;
    CHECK(test::outcome_of(error) == test::Outcome::dropped);
    CHECK(test::outcome_of(test::packet("d0", "", "10.0.0.5", "10.0.0.1", 6, 40000, 23), 0x04) ==
          test::Outcome::dropped);
    CHECK(test::outcome_of(test::packet("d0", "", "10.0.0.5", "239.1.1.1", 17, 40000, 5000)) ==
          test::Outcome::dropped);
    auto echo = test::packet("d0", "", "10.0.0.5", "10.0.0.1", 1, 0, 0);
    CHECK(test::outcome_of(echo) == test::Outcome::answered);
  }
}

TEST_CASE("log rules write the kernel log's lines, with their levels, for the daemon to read", "[root]") {
  enter_scratch_namespace();
  EbpfBackend backend{PluginContext{"test"}};
  CHECK(backend.watch_log() == nullptr);  // nothing applied: nothing to read
  apply(backend, test::log_ruleset());
  const auto log = backend.watch_log();
  REQUIRE(log != nullptr);
  CHECK(log->fd() >= 0);
  CHECK(test::run_programs(test::packet("d0", "", "10.0.0.5", "10.0.0.1", 6, 40000, 23)));
  auto udp = test::packet("d0", "", "2001:db8::5", "2001:db8::1", 17, 5353, 53);
  udp.mark = 0x2a;
  CHECK(test::run_programs(udp));
  const std::vector<LogLine> lines = log->consume();
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].level == 6);
  CHECK(lines[0].text ==
        "fwe-telnet: IN=d0 OUT= SRC=10.0.0.5 DST=10.0.0.1 LEN=40 PROTO=TCP SPT=40000 DPT=23 SYN");
  CHECK(lines[1].level == 4);
  CHECK(lines[1].text.rfind("fwe-in: IN=d0 OUT= SRC=10.0.0.5 ", 0) == 0);
  CHECK(lines[2].text ==
        "fwe-in: IN=d0 OUT= SRC=2001:0db8:0000:0000:0000:0000:0000:0005 "
        "DST=2001:0db8:0000:0000:0000:0000:0000:0001 "
        "LEN=48 PROTO=UDP SPT=5353 DPT=53 MARK=0x2a");
  CHECK(log->consume().empty());
  // A flood comes in batches, so that the daemon gets back to its other work in between.
  test::test_run(test::packet("d0", "", "10.0.0.5", "10.0.0.1", 17, 40000, 9), true, 0, 1500);
  CHECK(log->consume().size() == RingLog::kBatch);
  CHECK(log->consume().size() == 1500 - RingLog::kBatch);
  CHECK(log->consume().empty());
  // A changed prefix is a changed rule for diff; the same policy again lists as it did.
  const std::string before = backend.read_back().text;
  ir::Ruleset renamed = test::log_ruleset();
  renamed.chains["logged"].rules[1].action.log_prefix = "fwe-other: ";
  apply(backend, renamed);
  CHECK(backend.read_back().text != before);
  apply(backend, test::log_ruleset());
  CHECK(backend.read_back().text == before);
}

TEST_CASE("IPv6 extension headers do not hide the transport header: trace's verdict still", "[root]") {
  const SampleApplied sample;
  const ir::Ruleset& rs = sample.rs;
  std::size_t checked = 0, dropped = 0;
  for (const auto& p : test::sample_packets()) {
    if (p.src.family != ir::Family::ipv6 || p.iif.empty() || (p.protocol != 6 && p.protocol != 17)) continue;
    const bool expected = trace::evaluate(rs, p).delivered;
    const int ifindex = static_cast<int>(if_nametoindex(p.iif.c_str()));
    const int fd = Kernel::attached_program(ifindex, true);
    REQUIRE(fd >= 0);
    for (std::uint8_t kind : {0, 43, 44, 60}) {
      test::clear_conntrack(sample.kernel.pin_dir());
      const auto run =
          test::test_run_frame(fd, test::with_ipv6_extension(test::frame_of(p), kind), ifindex, p.mark);
      INFO(test::describe(p) << " behind extension header " << int(kind));
      CHECK((run.retval != TC_ACT_UNSPEC) == !expected);
      ++checked;
      dropped += expected ? 0 : 1;
    }
    close(fd);
  }
  CHECK(checked >= 8);
  CHECK(dropped >= 4);  // a rule that drops by port is not passed by with an extension header
}

TEST_CASE(
    "a first fragment is judged as its datagram and the later ones get its verdict, one too short for its "
    "ports is dropped",
    "[root]") {
  const SampleApplied sample;
  constexpr std::size_t kIpv4 = 14, kIpv4Id = kIpv4 + 4, kIpv4Flags = kIpv4 + 6, kIpv6Fragment = 14 + 40;
  std::uint16_t next_id = 100;  // each datagram its own: the first fragments' verdicts are kept by it
  std::size_t checked = 0, dropped = 0;
  for (const auto& p : test::sample_packets()) {
    if (p.protocol != 6 && p.protocol != 17) continue;
    const bool ingress = !p.iif.empty(), v4 = p.src.family == ir::Family::ipv4;
    const bool expected = trace::evaluate(sample.rs, p).delivered;
    const int ifindex = static_cast<int>(if_nametoindex((ingress ? p.iif : p.oif).c_str()));
    const int fd = Kernel::attached_program(ifindex, ingress);
    REQUIRE(fd >= 0);
    const auto whole = v4 ? test::frame_of(p) : test::with_ipv6_extension(test::frame_of(p), 44);
    const std::size_t flags = v4 ? kIpv4Flags : kIpv6Fragment + 2;  // offset (8-byte units) and flags
    // A fragment of datagram `id`: the first (offset 0, more to come) or the last, at offset 1480.
    auto fragment = [&](std::uint16_t id, bool first) {
      auto f = whole;
      f.at(v4 ? kIpv4Id + 1 : kIpv6Fragment + 7) = static_cast<std::uint8_t>(id & 0xff);
      f.at(v4 ? kIpv4Id : kIpv6Fragment + 6) = static_cast<std::uint8_t>(id >> 8);
      if (first) {
        f.at(v4 ? flags : flags + 1) |= v4 ? 0x20 : 0x01;
      } else {
        f.at(flags) = v4 ? 0x00 : 0x05;
        f.at(flags + 1) = v4 ? 0xb9 : 0xc8;
      }
      return f;
    };
    auto run = [&](std::vector<std::uint8_t> f, const char* what) {
      test::clear_conntrack(sample.kernel.pin_dir());
      INFO(test::describe(p) << ": " << what);
      // a rejected first fragment is answered, which drops it too
      return test::test_run_frame(fd, std::move(f), ifindex, p.mark).retval == TC_ACT_UNSPEC ? "passed"
                                                                                             : "dropped";
    };
    const char* verdict = expected ? "passed" : "dropped";
    const std::uint16_t id = next_id++;
    // Coming in, fragments may come out of order: a later one whose first is not seen yet passes (no one
    // can reassemble it without the first); going out, the host sends the first first.
    CHECK(std::string(run(fragment(id, false), "a later fragment before its first")) ==
          (ingress ? "passed" : "dropped"));
    CHECK(std::string(run(fragment(id, true), "the first fragment")) == verdict);
    CHECK(std::string(run(fragment(id, false), "a later fragment after its first")) == verdict);
    const std::uint16_t cut = next_id++;
    auto tiny =
        fragment(cut, true);  // 2 bytes of the transport header: a later fragment could supply the ports
    tiny.resize((v4 ? kIpv4 + 20 : kIpv6Fragment + 8) + 2);
    CHECK(std::string(run(tiny, "a first fragment without its ports")) == "dropped");
    CHECK(std::string(run(fragment(cut, false), "a later fragment of that one")) == "dropped");
    if (v4 && p.protocol == 6) {
      auto overlap = whole;  // offset 8 bytes: it would overwrite the TCP flags (RFC 1858)
      overlap[flags + 1] = 0x01;
      CHECK(std::string(run(overlap, "a TCP fragment at offset 1")) == "dropped");
    }
    if (!v4) {  // a first fragment whose header chain ends before the transport header: as too short
      auto chain = fragment(next_id++, true);
      chain[kIpv6Fragment] = 60;  // the fragment header is followed by destination options
      chain.resize(kIpv6Fragment + 8 + 4);
      CHECK(std::string(run(chain, "a first fragment cut short in its header chain")) == "dropped");
    }
    close(fd);
    ++checked;
    dropped += expected ? 0 : 1;
  }
  CHECK(checked >= 12);
  CHECK(dropped >= 4);
}

TEST_CASE("a forwarded packet larger than the way out's MTU is still judged as forwarded", "[root]") {
  const SampleApplied sample;
  std::size_t checked = 0;
  for (const auto& p : test::sample_packets()) {
    if (p.iif.empty() || p.oif.empty()) continue;
    const int ifindex = static_cast<int>(if_nametoindex(p.iif.c_str()));
    const int fd = Kernel::attached_program(ifindex, true);
    REQUIRE(fd >= 0);
    auto frame = test::frame_of(p);
    frame.resize(1600);  // beyond the 1500 bytes of the way out: fragmented or answered with Packet Too Big
    test::clear_conntrack(sample.kernel.pin_dir());
    INFO(test::describe(p));
    CHECK((test::test_run_frame(fd, frame, ifindex, p.mark).retval == TC_ACT_UNSPEC) ==
          trace::evaluate(sample.rs, p).delivered);
    close(fd);
    ++checked;
  }
  CHECK(checked >= 4);
}

TEST_CASE("pins a deleted namespace left are not taken for those of a new one with its name", "[root]") {
  SampleApplied sample;
  const std::string pins = sample.kernel.pin_dir();
  const auto ssh = test::packet("d0", "", "10.0.0.9", "10.0.0.1", 6, 40000, 22);
  REQUIRE(trace::evaluate(sample.rs, ssh).delivered);
  REQUIRE(delivered(ssh));
  REQUIRE(test::count_entries(pins, "fwe_ct4") > 0);
  // The namespace is gone; a new one gets its name (the same pin directory) and interfaces with the
  // same indexes, one with a clsact qdisc another tool made.
  REQUIRE(unshare(CLONE_NEWNET) == 0);
  run("ip link set lo up && ip link add d0 type veth peer name p0 && ip link set d0 up && ip link set p0 up");
  run("tc qdisc add dev d0 clsact");
  const auto before = sample.backend.read_back();
  CHECK_FALSE(before.present);
  REQUIRE(before.drift.size() == 1);
  CHECK(before.drift[0].find("a namespace of this name that is gone") != std::string::npos);

  apply(sample.backend, sample.rs);
  CHECK(test::count_entries(pins, "fwe_ct4") == 0);  // no flow of the old namespace's is established here
  CHECK(sample.backend.read_back().present);
  sample.backend.flush();
  CHECK(std::system("tc qdisc show dev d0 | grep -q clsact") == 0);  // the other tool's, kept
  CHECK_FALSE(std::filesystem::exists(pins));
}

TEST_CASE("flush in a new namespace with a deleted one's name leaves its interfaces alone", "[root]") {
  SampleApplied sample;
  REQUIRE(unshare(CLONE_NEWNET) == 0);
  run("ip link set lo up && ip link add d0 type veth peer name p0 && ip link set d0 up && ip link set p0 up");
  run("tc qdisc add dev d0 clsact");
  sample.backend.flush();
  CHECK(std::system("tc qdisc show dev d0 | grep -q clsact") == 0);
  CHECK_FALSE(std::filesystem::exists(sample.kernel.pin_dir()));
}

TEST_CASE("a frame addressed to another MAC passes unjudged, uncounted and untracked", "[root]") {
  // A promiscuous device's copy (tcpdump, a bridge), or a frame for a macvlan on top of the device: IPv4
  // and IPv6 drop it before netfilter, and the macvlan's own hook sees what is for it.
  SampleApplied sample;
  const auto hits_before = sample.backend.read_back().counters;
  std::size_t checked = 0, refused = 0;
  for (const auto& p : test::sample_packets()) {
    if (p.iif.empty() || p.iif == "lo") continue;
    const int ifindex = static_cast<int>(if_nametoindex(p.iif.c_str()));
    const int fd = Kernel::attached_program(ifindex, true);
    REQUIRE(fd >= 0);
    auto frame = test::frame_of(p);
    frame.at(5) = 0x77;  // 02:00:00:00:00:77, not the interface's
    test::clear_conntrack(sample.kernel.pin_dir());
    INFO(test::describe(p));
    CHECK(test::test_run_frame(fd, frame, ifindex, p.mark).retval == TC_ACT_UNSPEC);
    CHECK(test::count_entries(sample.kernel.pin_dir(),
                              p.src.family == ir::Family::ipv6 ? "fwe_ct6" : "fwe_ct4") == 0);
    close(fd);
    ++checked;
    refused += trace::evaluate(sample.rs, p).delivered ? 0 : 1;
  }
  CHECK(checked >= 6);
  CHECK(refused >= 2);  // among them, packets the policy drops when they are addressed to the host
  const auto hits_after = sample.backend.read_back().counters;
  REQUIRE(hits_after.size() == hits_before.size());
  for (std::size_t i = 0; i < hits_after.size(); ++i) {
    INFO(hits_after[i].where << " " << hits_after[i].origin.policy);
    CHECK(hits_after[i].packets == hits_before[i].packets);
  }
}

namespace {

// The sample ruleset applied with the backend option xdp=d+ (d0, d1, ... of the scratch namespace).
struct SampleWithXdp {
  ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend{context()};
  SampleWithXdp() {
    enter_scratch_namespace();
    apply(backend, rs);
  }
  static PluginContext context() {
    PluginContext c{"test"};
    c.backend_options["xdp"] = "d+";
    return c;
  }
  std::uint64_t hits() {
    std::uint64_t sum = 0;
    for (const auto& c : backend.read_back().counters) sum += c.packets;
    return sum;
  }
};

bool dropped_untracked(const trace::Result& result) {
  return std::any_of(result.stages.begin(), result.stages.end(), [](const trace::StageResult& s) {
    return s.stage == ir::Stage::untracked_in && s.verdict == ir::Verdict::drop;
  });
}

// A program of another tool for an XDP hook: lets everything pass.
int other_xdp_program() {
  bpf_insn pass[2]{};
  pass[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = XDP_PASS
  pass[0].dst_reg = BPF_REG_0;
  pass[0].imm = XDP_PASS;
  pass[1].code = BPF_JMP | BPF_EXIT;
  return bpf_prog_load(BPF_PROG_TYPE_XDP, "other_xdp", "GPL", pass, 2, nullptr);
}

__u32 xdp_id(const char* ifname) {
  __u32 id = 0;
  bpf_xdp_query_id(static_cast<int>(if_nametoindex(ifname)), XDP_FLAGS_DRV_MODE, &id);
  return id;
}

}  // namespace

TEST_CASE("fwe_xdp drops what untracked-in drops, counted once, and passes the rest on to tc, as trace says",
          "[root]") {
  SampleWithXdp sample;
  const std::uint64_t hits_before = sample.hits();
  std::size_t dropped = 0, passed = 0;
  for (const auto& p : test::sample_packets()) {
    if (p.iif.empty() || p.iif == "lo") continue;
    const int ifindex = static_cast<int>(if_nametoindex(p.iif.c_str()));
    const int fd = Kernel::attached_xdp(ifindex);
    REQUIRE(fd >= 0);
    INFO(test::describe(p));
    const bool drops = dropped_untracked(trace::evaluate(sample.rs, p));
    CHECK(test::xdp_test_run(fd, test::frame_of(p), ifindex) == (drops ? XDP_DROP : XDP_PASS));
    // Addressed to another MAC: a promiscuous copy, or a macvlan's frame; tc lets it pass unjudged too.
    auto other = test::frame_of(p);
    other.at(5) = 0x77;
    CHECK(test::xdp_test_run(fd, other, ifindex) == XDP_PASS);
    close(fd);
    ++(drops ? dropped : passed);
  }
  CHECK(dropped >= 2);
  CHECK(passed >= 6);
  // Each drop hits one rule's counter; what passed (the mDNS notrack rule's hits among it) counts at tc.
  CHECK(sample.hits() == hits_before + dropped);
  CHECK(Kernel::attached_xdp(static_cast<int>(if_nametoindex("lo"))) < 0);
  CHECK(sample.backend.read_back().drift.empty());
  CHECK(sample.backend.read_back().text.find(listing::kXdpLine) != std::string::npos);

  // Only where the option names: xdp=d1 takes it off d0.
  PluginContext only_d1{"test"};
  only_d1.backend_options["xdp"] = "d1";
  EbpfBackend d1_backend{only_d1};
  apply(d1_backend, sample.rs);
  CHECK(xdp_id("d0") == 0);
  CHECK(xdp_id("d1") != 0);
  // Without the option the programs come off; flush leaves none either.
  EbpfBackend plain{PluginContext{"test"}};
  apply(plain, sample.rs);
  CHECK(xdp_id("d0") == 0);
  CHECK(xdp_id("d1") == 0);
  CHECK(plain.read_back().text.find(listing::kXdpLine) == std::string::npos);
  apply(sample.backend, sample.rs);
  CHECK(xdp_id("d0") != 0);
  Kernel("test").flush();
  CHECK(xdp_id("d0") == 0);
  CHECK(xdp_id("d1") == 0);
}

TEST_CASE(
    "fwe_xdp leaves another program's XDP hook and a macvlan's lower device alone, and status tells drift",
    "[root]") {
  enter_scratch_namespace();
  const int other = other_xdp_program();
  REQUIRE(other >= 0);
  REQUIRE(bpf_xdp_attach(static_cast<int>(if_nametoindex("d1")), other, XDP_FLAGS_DRV_MODE, nullptr) == 0);
  const __u32 other_id = xdp_id("d1");
  REQUIRE(other_id != 0);
  // (macvlan: VLAN devices need the 8021q module, which not every test machine can load)
  run("ip link add d2 type veth peer name p2 && ip link add link d2 name m2 type macvlan mode passthru");
  run("ip link set d2 up && ip link set p2 up && ip link set m2 up");
  const ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend{SampleWithXdp::context()};
  apply(backend, rs);
  CHECK(xdp_id("d0") != 0);
  CHECK(xdp_id("d1") == other_id);  // another tool's, kept
  CHECK(xdp_id("d2") == 0);         // a passthru macvlan takes d2's own MAC: tc judges d2's frames
  CHECK(backend.read_back().drift.empty());

  // A device stacked on d0 since the apply, and fwe_xdp taken off d0 by someone: status tells both.
  run("ip link add link d0 name m0 type macvlan");
  auto drift = backend.read_back().drift;
  auto told = [&](const std::string& what) {
    return std::any_of(drift.begin(), drift.end(),
                       [&](const std::string& d) { return d.find(what) != d.npos; });
  };
  CHECK(told("interface d0: fwe_xdp is on it, but a VLAN, macvlan, ipvlan or DSA device is stacked on it"));
  apply(backend, rs);
  CHECK(xdp_id("d0") == 0);
  run("ip link del m0");
  apply(backend, rs);
  REQUIRE(xdp_id("d0") != 0);
  REQUIRE(bpf_xdp_detach(static_cast<int>(if_nametoindex("d0")), XDP_FLAGS_DRV_MODE, nullptr) == 0);
  drift = backend.read_back().drift;
  CHECK(told("interface d0: fwe_xdp is gone since the last apply"));

  Kernel("test").flush();
  CHECK(xdp_id("d1") == other_id);
  close(other);
}
TEST_CASE("ICMP other than echo makes no flow: what the host sent does not let another type back in",
          "[root]") {
  const SampleApplied sample;
  const ir::Ruleset& rs = sample.rs;
  test::clear_conntrack(sample.kernel.pin_dir());
  auto unreachable = test::packet("", "d0", "2001:db8::1", "2001:db8::20", 58, 0, 0);
  unreachable.icmp_type = 1;
  unreachable.icmp_code = 4;
  REQUIRE(trace::evaluate(rs, unreachable).delivered);
  REQUIRE(delivered(unreachable));
  auto exceeded = test::packet("d0", "", "2001:db8::20", "2001:db8::1", 58, 0, 0);
  exceeded.icmp_type = 3;
  const bool expected = trace::evaluate(rs, exceeded).delivered;  // judged as new
  CHECK_FALSE(expected);
  CHECK(delivered(exceeded) == expected);
  CHECK(test::count_entries(sample.kernel.pin_dir(), "fwe_ct6") == 0);
}

TEST_CASE(
    "an ICMP error is related to the flow it quotes and invalid without one, as the kernel's conntrack has "
    "it",
    "[root]") {
  const SampleApplied sample;
  const ir::Ruleset& rs = sample.rs;
  std::size_t checked = 0;
  for (const bool v6 : {false, true}) {
    const char* host = v6 ? "2001:db8::1" : "10.0.0.1";
    const char* peer = v6 ? "2001:db8::20" : "10.0.0.20";
    test::clear_conntrack(sample.kernel.pin_dir());
    const auto query = test::packet("", "d0", host, peer, 17, 40000, 53);  // the host's own, let out
    REQUIRE(trace::evaluate(rs, query).delivered);
    REQUIRE(delivered(query));
    // Port unreachable back from the peer, quoting a query: what of it an error carries, the IP header
    // and the transport header's first 8 bytes.
    // ext: the quoted IPv6 packet carries a fragment header (offset 0), which the kernel skips too.
    auto error_about = [&](std::uint16_t sport, ir::CtState state, const char* to = nullptr,
                           bool ext = false) {
      auto error = test::packet("d0", "", peer, to ? to : host, v6 ? 58 : 1, 0, 0);
      error.icmp_type = v6 ? 1 : 3;
      error.icmp_code = v6 ? 4 : 3;
      error.ct = state;
      auto frame = test::frame_of(error);
      auto quoted = test::frame_of(test::packet("", "d0", host, peer, 17, sport, 53));
      if (ext) quoted = test::with_ipv6_extension(quoted, 44);
      frame.insert(frame.end(), quoted.begin() + 14,
                   quoted.begin() + 14 + (v6 ? 40 : 20) + (ext ? 8 : 0) + 8);
      return std::pair{error, frame};
    };
    const int ifindex = static_cast<int>(if_nametoindex("d0"));
    const int fd = Kernel::attached_program(ifindex, true);
    REQUIRE(fd >= 0);
    for (const auto& [sport, state] : {std::pair{std::uint16_t{40000}, ir::CtState::related},
                                       std::pair{std::uint16_t{40001}, ir::CtState::invalid}}) {
      const auto [error, frame] = error_about(sport, state);
      const bool expected = trace::evaluate(rs, error).delivered;
      CHECK(expected == (state == ir::CtState::related));  // the sample accepts related, drops invalid
      INFO(test::describe(error) << (v6 ? " (IPv6)" : " (IPv4)"));
      CHECK((test::test_run_frame(fd, frame, ifindex, 0).retval == TC_ACT_UNSPEC) == expected);
      ++checked;
    }
    auto passes = [&](const std::vector<std::uint8_t>& frame) {
      return test::test_run_frame(fd, frame, ifindex, 0).retval == TC_ACT_UNSPEC;
    };
    // Cut short of the quoted ports: too little to relate.
    auto [error, frame] = error_about(40000, ir::CtState::invalid);
    frame.resize(frame.size() - 6);
    CHECK(passes(frame) == trace::evaluate(rs, error).delivered);
    // Addressed to another of the host's addresses than the quoted packet's sender: not related (the
    // kernel checks it too).
    const auto [elsewhere, elsewhere_frame] =
        error_about(40000, ir::CtState::invalid, v6 ? "2001:db8:1::1" : "10.1.0.1");  // d1's
    CHECK(passes(elsewhere_frame) == trace::evaluate(rs, elsewhere).delivered);
    if (v6) {  // Packet Too Big about a fragmented datagram: related past the quoted fragment header
      const auto [big, big_frame] = error_about(40000, ir::CtState::related, nullptr, true);
      CHECK(trace::evaluate(rs, big).delivered);
      CHECK(passes(big_frame));
    }
    close(fd);
  }
  CHECK(checked == 4);
}

TEST_CASE("port runs skip only rules that cannot match", "[root]") {
  enter_scratch_namespace();
  EbpfBackend backend(PluginContext{"test"});
  CHECK(check_against_trace(backend, test::port_run_ruleset(), test::port_run_packets()).passed > 0);
}

TEST_CASE("address runs give trace's verdict and count each hit for the rule trace names", "[root]") {
  enter_scratch_namespace();
  // Members of one prefix length per family (the exact maps), then of several (the tries).
  for (const bool mixed_prefixes : {false, true}) {
    INFO("mixed prefixes: " << mixed_prefixes);
    const ir::Ruleset rs = test::address_run_ruleset(mixed_prefixes);
    EbpfBackend backend(PluginContext{"test"});
    const Outcomes outcomes = check_against_trace(backend, rs, test::address_run_packets());
    CHECK(outcomes.passed >= 20);
    CHECK(outcomes.dropped >= 20);

    backend.flush();
    apply(backend, rs);  // counters from zero
    const auto overlapped = test::packet("d0", "", "10.0.11.200", "10.0.0.1", 6, 40000, 2001);
    const trace::Result expected = trace::evaluate(rs, overlapped);
    REQUIRE(expected.delivered);
    REQUIRE(delivered(overlapped));
    REQUIRE(delivered(test::packet("d0", "", "2001:db8:2::9", "2001:db8::1", 6, 40000, 2002)));
    std::map<std::int32_t, std::uint64_t> hits;
    std::string where;
    for (const auto& c : backend.read_back().counters)
      if (c.chain == "runs" && c.packets > 0) {
        hits[c.rule] += c.packets;
        if (c.rule == 1) where = c.where;
      }
    CHECK(hits == std::map<std::int32_t, std::uint64_t>{{1, 1}, {2, 1}});  // not runs#8, which overlaps
    CHECK(where == "runs.yaml:301:1");
    backend.flush();
  }
}

TEST_CASE("address runs without ports or protocols give trace's verdict", "[root]") {
  enter_scratch_namespace();
  EbpfBackend backend(PluginContext{"test"});
  const Outcomes outcomes =
      check_against_trace(backend, test::blocklist_ruleset(), test::blocklist_packets());
  CHECK(outcomes.passed >= 8);
  CHECK(outcomes.dropped >= 8);
}

TEST_CASE("a generation larger than one batch is cleared whole before it is written again", "[root]") {
  enter_scratch_namespace();
  // /32 members go into the exact map; with one /24 among them, into the trie.
  for (const bool mixed_prefixes : {false, true}) {
    INFO("mixed prefixes: " << mixed_prefixes);
    EbpfBackend backend(PluginContext{"test"});
    const ir::Ruleset first = test::large_address_run_ruleset(3000, 5000, 1, mixed_prefixes);
    apply(backend, first);
    apply(backend, test::large_address_run_ruleset(3000, 5001, 1, mixed_prefixes));
    apply(backend, first);  // into the generation of the first, which holds three batches of members
    Kernel kernel("test");
    const char* map = mixed_prefixes ? "fwe_runs4" : "fwe_runs4_exact";
    CHECK(test::count_entries(kernel.pin_dir(), map) == 6000);  // both generations, nothing twice
    CHECK(delivered(test::packet("d0", "", "172.16.11.183", "10.0.0.1", 6, 40000, 5000)));
    CHECK_FALSE(delivered(test::packet("d0", "", "172.16.11.183", "10.0.0.1", 6, 40000, 5001)));
    CHECK_FALSE(delivered(test::packet("d0", "", "172.16.11.184", "10.0.0.1", 6, 40000, 5000)));
    backend.flush();
  }
}

TEST_CASE("notracked and marked flows: each packet, its mark and its reply get trace's verdict", "[root]") {
  enter_scratch_namespace();
  const ir::Ruleset rs = test::notrack_ruleset();
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  std::size_t untracked = 0, marked = 0, replies_dropped = 0, replies_passed = 0;
  for (const auto& p : test::notrack_packets()) {
    test::clear_conntrack(pin_dir_for("test"));
    const trace::Result expected = trace::evaluate(rs, p);
    INFO(test::describe(p));
    const test::Judged judged = test::judge(p);
    CHECK((judged.outcome == test::Outcome::passed) == expected.delivered);
    if (!expected.delivered) continue;
    CHECK(judged.mark == expected.packet.mark);
    untracked += expected.untracked ? 1 : 0;
    marked += expected.packet.mark != 0 ? 1 : 0;
    // The reply as the peer sends it: a TCP SYN+ACK, which cannot start a flow of its own.
    const trace::Packet reply = trace::reply_of(p, expected);
    INFO("reply " << test::describe(reply));
    const bool reply_expected = trace::evaluate(rs, reply).delivered;
    CHECK(test::run_programs(reply, test::kTcpSynAck) == reply_expected);
    ++(reply_expected ? replies_passed : replies_dropped);
  }
  CHECK(untracked >= 4);        // UDP 5353 and TCP 8022, each family
  CHECK(marked >= 4);           // TCP 8022 and 8023, each family
  CHECK(replies_dropped >= 4);  // the notracked flows' replies: new (or invalid), and output takes no new
  CHECK(replies_passed >= 2);   // the tracked TCP 8023's: established
}

TEST_CASE("negated matches, rule interfaces, endpoint sets and MACs, untracked-out: trace's verdicts",
          "[root]") {
  enter_scratch_namespace();
  EbpfBackend backend(PluginContext{"test"});
  const Outcomes outcomes = check_against_trace(backend, test::negation_ruleset(), test::negation_packets());
  CHECK(outcomes.passed >= 10);
  CHECK(outcomes.dropped >= 10);
}

TEST_CASE("a reply is new without its original and established with it", "[root]") {
  enter_scratch_namespace();
  const ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  const auto [request, unsolicited] = ssh_through_d1();
  CHECK_FALSE(delivered(unsolicited));
  CHECK(trace::evaluate(rs, request).delivered);  // no input endpoint for d1: continue
  CHECK(delivered(request));
  CHECK(delivered(unsolicited));  // now the reply of an allowed flow
}

TEST_CASE("TCP flags no TCP sends are invalid as in the kernel, with a flow or without", "[root]") {
  enter_scratch_namespace();
  // Input on d0: invalid dropped, everything else accepted.
  ir::Ruleset rs;
  rs.files = {"<command line>", "flags.yaml"};
  ir::Rule invalid;
  invalid.match.ct_states = std::vector<ir::CtState>{ir::CtState::invalid};
  invalid.action.kind = ir::ActionKind::drop;
  ir::Rule rest;
  rest.action.kind = ir::ActionKind::accept;
  rs.chains["flags"] = {"flags", {invalid, rest}, {}};
  ir::Endpoint ep;
  ep.name = "d0";
  ep.match.iif = ir::parse_iface("d0");
  ep.groups.push_back({"g", {"flags"}, ir::Verdict::continue_, {}, {}});
  ep.default_verdict = ir::Verdict::drop;
  rs.stage(ir::Stage::input).sections.push_back({"host", false, {ep}});
  passes::normalise(rs);
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  const std::string pins = pin_dir_for("test");
  auto in = test::packet("d0", "", "10.0.0.20", "10.0.0.1", 6, 40000, 22);
  in.src_mac.reset();
  auto through = [&](std::uint8_t flags) {
    test::clear_conntrack(pins);
    return test::run_programs(in, flags);
  };
  constexpr std::uint8_t fin = 0x01, syn = 0x02, rst = 0x04, psh = 0x08, ack = 0x10, urg = 0x20;
  CHECK(through(syn));        // starts a flow
  CHECK(through(ack));        // picked up midway, as nf_conntrack_tcp_loose does
  CHECK(through(ack | psh));  // PSH is left out of the check
  // New, not invalid as in the kernel: with no entry here, they may answer a flow another program's
  // NAT rewrote, which the kernel knows (README).
  CHECK(through(syn | ack));
  CHECK(through(rst));
  CHECK(through(fin | ack));
  CHECK_FALSE(through(0));                // a NULL scan
  CHECK_FALSE(through(fin | psh | urg));  // an Xmas scan
  CHECK_FALSE(through(syn | fin));        // no TCP sends both
  // Within a flow the end of it passes; a combination no TCP sends does not.
  test::clear_conntrack(pins);
  CHECK(test::run_programs(in, syn));
  CHECK(test::run_programs(in, fin | ack));
  CHECK_FALSE(test::run_programs(in, syn | rst));
}

TEST_CASE("a flow is one conntrack entry for both directions, and one the LRU evicted starts again",
          "[root]") {
  enter_scratch_namespace();
  const ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  const auto [request, answer] = ssh_through_d1();
  REQUIRE(delivered(request));
  REQUIRE(delivered(answer));
  const int ct4 = bpf_obj_get((pin_dir_for("test") + "/fwe_ct4").c_str());
  REQUIRE(ct4 >= 0);
  fwe_ct4_key key{};
  REQUIRE(bpf_map_get_next_key(ct4, nullptr, &key) == 0);
  fwe_ct4_key next{};
  CHECK(bpf_map_get_next_key(ct4, &key, &next) != 0);  // the only entry
  fwe_ct_value value{};
  REQUIRE(bpf_map_lookup_elem(ct4, &key, &value) == 0);
  // One direction the original, replied; the other the reply.
  const bool request_first = !(value.dir[0] & FWE_DIR_REPLY);
  const std::uint8_t original = value.dir[request_first ? 0 : 1], reply = value.dir[request_first ? 1 : 0];
  CHECK(original == (FWE_DIR_KNOWN | FWE_DIR_SEEN_REPLY));
  CHECK(reply == (FWE_DIR_KNOWN | FWE_DIR_REPLY));
  REQUIRE(bpf_map_delete_elem(ct4, &key) == 0);  // as an eviction leaves it: both directions gone
  close(ct4);
  CHECK_FALSE(delivered(answer));  // new, and d1's output takes no new packets
  CHECK(delivered(request));       // the host's peer sends again
  CHECK(delivered(answer));        // its reply is established again
}

TEST_CASE("a ping of the host's own address is one flow whose two directions stay apart", "[root]") {
  // Source and destination are equal: only the echo type tells the request's direction from the reply's.
  enter_scratch_namespace();
  const ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  auto request = test::packet("", "lo", "10.0.0.1", "10.0.0.1", 1, 0, 0);
  request.icmp_type = 8;
  auto reply = request;
  reply.icmp_type = 0;
  REQUIRE(trace::evaluate(rs, request).delivered);
  REQUIRE(delivered(request));  // out on lo, then in on lo
  const int ct4 = bpf_obj_get((pin_dir_for("test") + "/fwe_ct4").c_str());
  REQUIRE(ct4 >= 0);
  const auto only_entry = [&] {
    fwe_ct4_key key{}, next{};
    REQUIRE(bpf_map_get_next_key(ct4, nullptr, &key) == 0);
    CHECK(bpf_map_get_next_key(ct4, &key, &next) != 0);
    CHECK(key.query_type == 8);  // keyed by the request
    fwe_ct_value value{};
    REQUIRE(bpf_map_lookup_elem(ct4, &key, &value) == 0);
    return value;
  };
  const fwe_ct_value requested = only_entry();
  CHECK(requested.dir[0] == FWE_DIR_KNOWN);
  CHECK(requested.dir[1] == (FWE_DIR_KNOWN | FWE_DIR_REPLY));
  REQUIRE(delivered(reply));
  const fwe_ct_value replied = only_entry();
  CHECK(replied.dir[0] == (FWE_DIR_KNOWN | FWE_DIR_SEEN_REPLY));
  CHECK(replied.dir[1] == (FWE_DIR_KNOWN | FWE_DIR_REPLY));
  close(ct4);
}

TEST_CASE("read_back lists the maps as the plan lists itself, so that diff compares like with like",
          "[root]") {
  enter_scratch_namespace();
  EbpfBackend backend(PluginContext{"test"});
  // Sets and port bitmaps (sample), port runs, address runs of mixed prefixes (tries and hashes).
  for (ir::Ruleset rs : {test::sample_ruleset(), test::port_run_ruleset(), test::address_run_ruleset(true)}) {
    Diagnostics diag;
    auto plan = backend.render(rs, diag);
    REQUIRE(plan);
    backend.apply(*plan, {.ir_hash = canonical::hash(rs)});  // into the other generation each time
    std::string listed;
    for (std::istringstream lines(plan->listing(canonical::hash(rs))); !lines.eof();) {
      std::string line;
      std::getline(lines, line);
      if (!line.empty()) listed += line.substr(0, line.find('\t')) + '\n';
    }
    CHECK(listed.find("  input ") != std::string::npos);
    CHECK(backend.read_back().text == listed);
  }
}

TEST_CASE("read_back gives hash and counters then a new policy flips the generation and flush removes all",
          "[root]") {
  enter_scratch_namespace();
  ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend(PluginContext{"test"});
  REQUIRE_FALSE(backend.read_back().present);
  apply(backend, rs);
  auto ssh = test::packet("d0", "", "10.0.0.9", "10.0.0.1", 6, 40000, 22);
  REQUIRE(delivered(ssh));
  KernelState state = backend.read_back();
  CHECK(state.present);
  CHECK(state.ir_hash == canonical::hash(rs));
  CHECK(state.drift.empty());
  bool counted = false;
  for (const auto& c : state.counters)
    if (c.chain == "in-admin" && c.rule == 0)
      counted = c.packets == 1 && c.bytes > 0 && c.where == "sample.yaml:30:1";
  CHECK(counted);

  rs.chains["in-admin"].rules[0].action.kind = ir::ActionKind::drop;  // a one-rule change
  apply(backend, rs);
  CHECK_FALSE(delivered(ssh));
  CHECK(backend.read_back().ir_hash == canonical::hash(rs));

  backend.flush();
  CHECK_FALSE(backend.read_back().present);
  CHECK(Kernel::attached_program(static_cast<int>(if_nametoindex("d0")), true) < 0);
  CHECK_FALSE(std::filesystem::exists(pin_dir_for("test")));
  CHECK(std::system("tc qdisc show dev d0 | grep -q clsact") != 0);
}

namespace {

// What the kernel tells of a BPF program or map (bpf_prog_info, bpf_map_info); closes fd.
template <typename Info>
Info info_of(int fd) {
  REQUIRE(fd >= 0);
  Info info{};
  __u32 len = sizeof info;
  const int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
  close(fd);
  REQUIRE(rc == 0);
  return info;
}

// The id of the program on d0's ingress hook.
__u32 attached_ingress_id() {
  return info_of<bpf_prog_info>(Kernel::attached_program(static_cast<int>(if_nametoindex("d0")), true)).id;
}

std::size_t pinned_programs() {
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(pin_dir_for("test")))
    n += entry.path().filename().string().starts_with("prog-");
  return n;
}

// Replaces the pinned map by a new, empty one of the same shape, as another tool might.
void replace_pinned_map(const std::string& pin) {
  const auto info = info_of<bpf_map_info>(bpf_obj_get(pin.c_str()));
  std::filesystem::remove(pin);
  bpf_map_create_opts opts{};  // what LIBBPF_OPTS makes, without its GNU statement expression
  opts.sz = sizeof opts;
  opts.map_flags = info.map_flags;
  const int fd = bpf_map_create(static_cast<bpf_map_type>(info.type), info.name, info.key_size,
                                info.value_size, info.max_entries, &opts);
  REQUIRE(fd >= 0);
  REQUIRE(bpf_obj_pin(fd, pin.c_str()) == 0);
  close(fd);
}

// Pins at `pin` a new hash map (4-byte keys) with values of `value_size` bytes, as an older fwengine
// with another layout would have left it.
void pin_map_of_other_layout(const std::string& pin, __u32 value_size) {
  std::filesystem::remove(pin);
  const int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "fwe_older", 4, value_size, 16, nullptr);
  REQUIRE(fd >= 0);
  REQUIRE(bpf_obj_pin(fd, pin.c_str()) == 0);
  close(fd);
}

__u32 pinned_value_size(const std::string& pin) {
  return info_of<bpf_map_info>(bpf_obj_get(pin.c_str())).value_size;
}

__u32 pinned_map_id(const std::string& pin) {
  return info_of<bpf_map_info>(bpf_obj_get(pin.c_str())).id;
}

}  // namespace

TEST_CASE("an apply over an older layout's pins makes its maps anew and leaves no stale pin", "[root]") {
  enter_scratch_namespace();
  ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  const std::string dir = pin_dir_for("test");
  const __u32 ct_value_size = pinned_value_size(dir + "/fwe_ct4");
  const __u32 first = attached_ingress_id(), rules = pinned_map_id(dir + "/fwe_rules_v2");
  const __u32 ct6 = pinned_map_id(dir + "/fwe_ct6"), hooks = pinned_map_id(dir + "/fwe_hooks");
  pin_map_of_other_layout(dir + "/fwe_ct4", ct_value_size + 8);
  pin_map_of_other_layout(dir + "/fwe_ct", 8);  // a map this build does not have

  rs.chains["in-admin"].rules[0].action.kind = ir::ActionKind::drop;
  apply(backend, rs);
  CHECK(attached_ingress_id() != first);
  CHECK(pinned_map_id(dir + "/fwe_rules_v2") != rules);
  CHECK(pinned_value_size(dir + "/fwe_ct4") == ct_value_size);
  CHECK(pinned_map_id(dir + "/fwe_ct6") == ct6);      // conntrack whose shape still fits stays
  CHECK(pinned_map_id(dir + "/fwe_hooks") == hooks);  // and so does the record of our qdiscs
  CHECK_FALSE(std::filesystem::exists(dir + "/fwe_ct"));
  CHECK(pinned_programs() == 4);  // ingress, egress, a bridge port's ingress, and XDP
  CHECK(backend.read_back().ir_hash == canonical::hash(rs));
  CHECK_FALSE(delivered(test::packet("d0", "", "10.0.0.9", "10.0.0.1", 6, 40000, 22)));
  CHECK(delivered(test::packet("d0", "", "10.0.0.20", "10.0.0.1", 1, 0, 0)));  // in-admin's echo request

  // Pins of an older layout, which lacks a map of this build's (an upgrade installed, not applied
  // yet): flush still removes the qdiscs fwengine created.
  std::filesystem::remove(dir + "/fwe_runs6_exact");
  backend.flush();
  CHECK(std::system("tc qdisc show dev d0 | grep -q clsact") != 0);
}

TEST_CASE("a flow open across an upgrade to another layout stays established", "[root]") {
  enter_scratch_namespace();
  const ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  const std::string dir = pin_dir_for("test");
  // d1's output endpoint drops by default: the host's answer leaves only as the reply of a request.
  auto request = test::packet("d1", "", "10.1.0.5", "10.0.0.1", 6, 40000, 22);
  request.src_mac.reset();
  const auto reply = test::packet("", "d1", "10.0.0.1", "10.1.0.5", 6, 22, 40000);
  REQUIRE(delivered(request));
  REQUIRE(delivered(reply));
  const __u32 first = attached_ingress_id(), ct4 = pinned_map_id(dir + "/fwe_ct4");
  pin_map_of_other_layout(dir + "/fwe_rules_v2", 8);  // as an older fwengine's rule table

  apply(backend, rs);
  CHECK(attached_ingress_id() != first);  // the programs were loaded anew, on new ruleset maps
  CHECK(pinned_value_size(dir + "/fwe_rules_v2") != 8);
  CHECK(pinned_map_id(dir + "/fwe_ct4") == ct4);
  CHECK(delivered(reply));  // still the reply of a tracked flow
  test::clear_conntrack(dir);
  CHECK_FALSE(delivered(reply));  // which it is only by that entry
}

TEST_CASE("a policy change reuses the pinned programs and a program beside a replaced map is loaded again",
          "[root]") {
  enter_scratch_namespace();
  ir::Ruleset rs = test::sample_ruleset();
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  const __u32 first = attached_ingress_id();
  CHECK(pinned_programs() == 4);  // ingress, egress, a bridge port's ingress, and XDP
  auto ssh = test::packet("d0", "", "10.0.0.9", "10.0.0.1", 6, 40000, 22);
  REQUIRE(delivered(ssh));

  rs.chains["in-admin"].rules[0].action.kind = ir::ActionKind::drop;
  apply(backend, rs);
  CHECK(attached_ingress_id() == first);  // a map update: nothing loaded, nothing attached anew
  CHECK_FALSE(delivered(ssh));

  // The pinned programs would read the replaced map, which this apply writes no more.
  replace_pinned_map(pin_dir_for("test") + "/fwe_rules_v2");
  rs.chains["in-admin"].rules[0].action.kind = ir::ActionKind::accept;
  apply(backend, rs);
  CHECK(attached_ingress_id() != first);
  CHECK(pinned_programs() == 4);  // ingress, egress, a bridge port's ingress, and XDP
  test::clear_conntrack(pin_dir_for("test"));
  CHECK(delivered(ssh));
}

namespace {

// Puts prog_fd at fwengine's place (handle 0xfe, priority 1) on the hook, over what is there.
void put_program(const char* ifname, bpf_tc_attach_point point, int prog_fd) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(if_nametoindex(ifname)), .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = 0xfe,
              .priority = 1);
  REQUIRE(bpf_tc_attach(&hook, &opts) == 0);
}

}  // namespace

TEST_CASE("maps an interrupted upgrade left are filled and made current before a program is put on them",
          "[root]") {
  SampleApplied sample;
  const std::string dir = sample.kernel.pin_dir();
  // The programs in effect, kept beyond their pins: the previous build's.
  const int ingress = Kernel::attached_program(static_cast<int>(if_nametoindex("d0")), true);
  const int egress = Kernel::attached_program(static_cast<int>(if_nametoindex("d0")), false);
  REQUIRE(ingress >= 0);
  REQUIRE(egress >= 0);
  const __u32 previous = attached_ingress_id();
  // An upgrade's apply that stopped before its flip: this build's programs and maps pinned, the
  // maps' generation in use empty, and d0 still run by the previous build on its own maps.
  std::vector<std::filesystem::path> pins;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) pins.push_back(entry.path());
  for (const auto& pin : pins) std::filesystem::remove(pin);
  apply(sample.backend, sample.rs);
  const int config = bpf_obj_get((dir + "/fwe_config").c_str());
  REQUIRE(config >= 0);
  __u32 zero = 0;
  fwe_config in_use{};
  REQUIRE(bpf_map_lookup_elem(config, &zero, &in_use) == 0);
  in_use.active_gen ^= 1;
  REQUIRE(bpf_map_update_elem(config, &zero, &in_use, BPF_ANY) == 0);
  close(config);
  put_program("d0", BPF_TC_INGRESS, ingress);
  put_program("d0", BPF_TC_EGRESS, egress);
  close(ingress);
  close(egress);
  REQUIRE(attached_ingress_id() == previous);
  // d1, attached after d0, refuses the next apply.
  run("tc filter del dev d1 ingress pref 1 handle 0xfe bpf");
  run("tc filter add dev d1 ingress pref 1 handle 0xfe bpf bytecode '1,6 0 0 0,' classid 1:1");

  CHECK_THROWS_WITH(apply(sample.backend, sample.rs), Catch::Contains("already has a tc filter"));
  CHECK(attached_ingress_id() != previous);
  std::size_t dropped = 0;
  for (const auto& p : test::sample_packets()) {
    if (p.iif != "d0") continue;
    test::clear_conntrack(dir);
    const bool expected = trace::evaluate(sample.rs, p).delivered;
    dropped += expected ? 0 : 1;
    INFO(test::describe(p));
    CHECK(delivered(p) == expected);
  }
  CHECK(dropped >= 2);
}

namespace {
// The sample's echo-request accept under `limit`, applied in a scratch namespace: pings of new flows, one
// after the other, get through as `expected` says (then tier1's on_end drops them).
void check_limited_pings(const ir::RateLimit& limit, std::initializer_list<bool> expected) {
  enter_scratch_namespace();
  ir::Ruleset rs = test::sample_ruleset();
  rs.chains["in-admin"].rules[1].match.rate_limit = limit;
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  Kernel kernel("test");
  auto ping = test::packet("d0", "", "10.0.0.20", "10.0.0.1", 1, 0, 0);
  REQUIRE(trace::evaluate(rs, ping).delivered);
  for (bool through : expected) {
    test::clear_conntrack(kernel.pin_dir());
    CHECK(delivered(ping) == through);
  }
}
}  // namespace

TEST_CASE("a rate-limited rule matches its burst and then stops", "[root]") {
  check_limited_pings(ir::RateLimit{1, "minute", 2}, {true, true, false});
}

TEST_CASE("a rate-limited rule's bucket starts full, however long ago the host booted", "[root]") {
  // A bucket of one packet a day: empty until a day after boot, had it counted its credit from boot (a
  // machine up for less than a day, as a CI machine, shows it).
  check_limited_pings(ir::RateLimit{1, "day", 1}, {true, false});
}

TEST_CASE("multicast and the limited broadcast come in to the host even where a default route forwards",
          "[root]") {
  // bpf_fib_lookup would give them the default route's way out; the kernel's input routing takes them in.
  const SampleApplied sample;
  run("ip route add default via 10.1.0.2 dev d1 && ip -6 route add default via 2001:db8:1::2 dev d1");
  std::vector<trace::Packet> packets;
  for (const char* dst : {"224.0.0.1", "239.255.255.250", "255.255.255.255"})
    packets.push_back(test::packet("d0", "", "10.0.0.20", dst, 1, 0, 0));
  packets.push_back(test::packet("d0", "", "2001:db8::20", "ff02::1", 58, 0, 0));
  for (auto& p : packets) p.icmp_type = p.src.family == ir::Family::ipv4 ? 8 : 128;
  auto routed = test::packet("d0", "d1", "10.0.0.20", "192.0.2.5", 1, 0, 0);  // through, by the route
  routed.icmp_type = 8;
  packets.push_back(routed);
  std::size_t delivered_count = 0;
  for (const auto& p : packets) {
    test::clear_conntrack(sample.kernel.pin_dir());
    const bool expected = trace::evaluate(sample.rs, p).delivered;  // input accepts a ping, forward not
    delivered_count += expected ? 1 : 0;
    INFO(test::describe(p));
    CHECK(delivered(p) == expected);
  }
  CHECK(delivered_count == 4);
}

TEST_CASE("the replies of the ICMP queries conntrack tracks are established, as in trace", "[root]") {
  // Input on d0 takes only established and related packets; the host's requests go out freely.
  enter_scratch_namespace();
  ir::Ruleset rs;
  rs.files = {"<command line>"};
  ir::Endpoint ep;
  ep.name = "host-d0";
  ep.match.iif = ir::parse_iface("d0");
  ep.conntrack = ir::Conntrack::accept_established_drop_invalid;
  ep.default_verdict = ir::Verdict::drop;
  rs.stage(ir::Stage::input).sections.push_back({"host", false, {ep}});
  passes::normalise(rs);
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  Kernel kernel("test");
  // Echo, timestamp, information and address mask; ICMPv6 echo and node information.
  const std::pair<std::uint8_t, std::uint8_t> queries[] = {{1, 8},  {1, 13},   {1, 15},
                                                           {1, 17}, {58, 128}, {58, 139}};
  for (const auto& [protocol, type] : queries) {
    const bool v4 = protocol == 1;
    auto request = test::packet("", "d0", v4 ? "10.0.0.1" : "2001:db8::1", v4 ? "10.0.0.20" : "2001:db8::20",
                                protocol, 0, 0);
    request.icmp_type = type;
    test::clear_conntrack(kernel.pin_dir());
    const trace::Result sent = trace::evaluate(rs, request);
    REQUIRE(sent.delivered);
    INFO(test::describe(request));
    REQUIRE(delivered(request));
    const trace::Packet reply = trace::reply_of(request, sent);
    CHECK(reply.icmp_type == type + (type == 8 ? -8 : 1));
    CHECK(trace::evaluate(rs, reply).delivered);
    CHECK(delivered(reply));
    test::clear_conntrack(kernel.pin_dir());  // the same reply, no request before it: new, dropped
    CHECK_FALSE(delivered(reply));
  }
}

TEST_CASE("the reverse-path check follows the host's routes, as trace told the route", "[root]") {
  enter_scratch_namespace();
  run("ip route add blackhole 198.51.100.0/24 && ip -6 route add prohibit 2001:db8:99::/48");
  // (source, the interface the host routes it out of: "" for none), each in on d0.
  const std::vector<std::pair<const char*, const char*>> sources = {
      {"10.0.0.5", "d0"},    {"10.1.0.5", "d1"},      {"192.0.2.5", ""},      {"198.51.100.5", ""},
      {"2001:db8::5", "d0"}, {"2001:db8:1::5", "d1"}, {"2001:db8:99::5", ""}, {"2001:db8:77::5", ""},
  };
  std::vector<trace::Packet> packets;
  for (const auto& [src, route] : sources) {
    auto p = test::packet("d0", "", src,
                          ir::parse_ip(src)->family == ir::Family::ipv4 ? "10.0.0.1" : "2001:db8::1", 6,
                          40000, 22);
    p.src_route = route;
    packets.push_back(p);
  }
  auto dhcp = test::packet("d0", "", "0.0.0.0", "255.255.255.255", 17, 68, 67);
  dhcp.src_route = "";
  packets.push_back(dhcp);
  auto looped = test::packet("lo", "", "192.0.2.5", "10.0.0.1", 6, 40000, 22);
  looped.src_mac.reset();
  looped.src_route = "";
  packets.push_back(looped);

  EbpfBackend backend(PluginContext{"test"});
  Kernel kernel("test");
  for (auto mode : {ir::RpfMode::strict, ir::RpfMode::loose})
    for (bool negate : {false, true}) {
      ir::Ruleset rs;
      ir::Rule rule;
      rule.match.rpf = mode;
      rule.match.rpf_negate = negate;
      rule.action.kind = ir::ActionKind::drop;
      rs.chains["c"] = ir::Chain{"c", {rule}, {}};
      ir::Endpoint all;
      all.name = "all";
      all.groups.push_back(ir::Group{"g", {"c"}, ir::Verdict::continue_, "", {}});
      rs.stage(ir::Stage::prednat).sections.push_back({"rpf", false, {all}});
      apply(backend, rs);
      std::size_t passed = 0;
      for (const auto& p : packets) {
        test::clear_conntrack(kernel.pin_dir());
        const bool expected = trace::evaluate(rs, p).delivered;
        passed += expected;
        INFO(to_string(mode) << (negate ? " negated: " : ": ") << test::describe(p));
        CHECK(delivered(p) == expected);
      }
      CHECK(passed > 0);  // both outcomes in each mode
      CHECK(passed < packets.size());
    }
}

TEST_CASE("an rpf ruleset is refused while lo does not forward, and nothing is loaded", "[root]") {
  enter_scratch_namespace();
  std::ofstream("/proc/sys/net/ipv4/conf/lo/forwarding") << "0\n";
  ir::Ruleset rs;
  ir::Rule rule;
  rule.match.rpf = ir::RpfMode::strict;
  rule.match.rpf_negate = true;
  rule.action.kind = ir::ActionKind::drop;
  rs.chains["c"] = ir::Chain{"c", {rule}, {}};
  ir::Endpoint all;
  all.name = "all";
  all.groups.push_back(ir::Group{"g", {"c"}, ir::Verdict::continue_, "", {}});
  rs.stage(ir::Stage::prednat).sections.push_back({"rpf", false, {all}});
  EbpfBackend backend(PluginContext{"test"});
  CHECK_THROWS_WITH(apply(backend, rs), Catch::Contains("needs forwarding on for lo"));
  std::error_code ec;
  const std::string pins = Kernel("test").pin_dir();
  CHECK((!std::filesystem::exists(pins, ec) || std::filesystem::is_empty(pins, ec)));
}

namespace {
// Sends one UDP datagram from 10.0.0.1 out of d0 to dst:port, with the host listening there (a member of
// the group on d0, for multicast); whether the copy the kernel loops back to the host came in on d0.
bool looped_back(const char* dst, int port) {
  const std::string script = R"(
import socket, struct, sys
dst, port = sys.argv[1], int(sys.argv[2])
pktinfo = getattr(socket, "IP_PKTINFO", 8)
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
r.setsockopt(socket.IPPROTO_IP, pktinfo, 1)
r.bind(("", port))
if int(dst.split(".")[0]) >= 224:
    r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(dst) + socket.inet_aton("10.0.0.1"))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.0.0.1"))
s.bind(("10.0.0.1", 40000))
s.sendto(b"x", (dst, port))
r.settimeout(0.5)
d0 = socket.if_nametoindex("d0")
try:
    while True:  # the original also reaches p0, d0's peer: only the copy in on d0 counts
        _, ancillary, _, _ = r.recvmsg(16, 256)
        if any(t == pktinfo and struct.unpack("i", d[:4])[0] == d0 for _, t, d in ancillary):
            sys.exit(0)
except socket.timeout:
    sys.exit(1)
)";
  const std::string path = "/tmp/fwe-looped-" + std::to_string(getpid()) + ".py";
  std::ofstream(path) << script;
  const int status = std::system(("python3 " + path + " " + dst + " " + std::to_string(port)).c_str());
  std::filesystem::remove(path);
  return status == 0;
}
}  // namespace

TEST_CASE(
    "the host's own multicast and broadcast, looped back to it without an Ethernet header, get trace's "
    "verdict",
    "[root]") {
  // Input on d0 takes UDP to port 5353 only; preDNAT drops what fails the strict reverse-path check, which
  // the host's own packets pass.
  enter_scratch_namespace();
  ir::Ruleset rs;
  rs.files = {"<command line>"};
  ir::Rule spoofed;
  spoofed.match.rpf = ir::RpfMode::strict;
  spoofed.match.rpf_negate = true;
  spoofed.action.kind = ir::ActionKind::drop;
  rs.chains["rpf"] = ir::Chain{"rpf", {spoofed}, {}};
  ir::Endpoint all;
  all.name = "all";
  all.groups.push_back(ir::Group{"g", {"rpf"}, ir::Verdict::continue_, "", {}});
  rs.stage(ir::Stage::prednat).sections.push_back({"rpf", false, {all}});
  ir::Rule mdns;
  mdns.match.protocols = std::vector<std::uint8_t>{17};
  mdns.match.dst_port.push_back({false, {{5353, 5353}}});
  mdns.action.kind = ir::ActionKind::accept;
  rs.chains["mdns"] = ir::Chain{"mdns", {mdns}, {}};
  ir::Endpoint ep;
  ep.name = "host-d0";
  ep.match.iif = ir::parse_iface("d0");
  ep.groups.push_back(ir::Group{"g", {"mdns"}, ir::Verdict::continue_, "", {}});
  ep.default_verdict = ir::Verdict::drop;
  rs.stage(ir::Stage::input).sections.push_back({"host", false, {ep}});
  passes::normalise(rs);
  EbpfBackend backend(PluginContext{"test"});
  apply(backend, rs);
  std::size_t delivered_count = 0;
  for (const char* dst : {"239.1.2.3", "10.0.0.255"})
    for (int port : {5353, 5354}) {
      auto p = test::packet("d0", "", "10.0.0.1", dst, 17, 40000, static_cast<std::uint16_t>(port));
      p.src_mac.reset();
      const bool expected = trace::evaluate(rs, p).delivered;
      delivered_count += expected ? 1 : 0;
      INFO(test::describe(p));
      CHECK(looped_back(dst, port) == expected);
    }
  CHECK(delivered_count == 2);
}
