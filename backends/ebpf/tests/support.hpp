// support.hpp - a ruleset that uses every match and action the ebpf backend supports, packets for it,
// and the Ethernet frames BPF_PROG_TEST_RUN needs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fwengine/ir.hpp"
#include "fwengine/trace.hpp"

namespace fwe::ebpf::test {

// Interfaces of the scratch namespace (veth, peers p0 and p1): d0 (10.0.0.1/24, 2001:db8::1/64), d1
// (10.1.0.1/24, 2001:db8:1::1/64).
ir::Ruleset sample_ruleset();
std::vector<trace::Packet> sample_packets();
// Two chains of single-port rules (one long port run across the chain boundary, with return, log,
// set-mark and extra criteria inside), and packets to every port around them.
ir::Ruleset port_run_ruleset();
std::vector<trace::Packet> port_run_packets();

// Address runs (runs#0..7 accept, of both families and several protocols and ports; runs#8 overlaps
// runs#1 and ends that run; runs#9..12 a drop run; runs#13..16 a run on destinations), and a chain whose
// inlined jump's target is the head of a run ("outer"), with packets that hit, miss and straddle them.
// With mixed_prefixes, one run's IPv4 members and its IPv6 members each have two prefix lengths (so
// they go into the tries, not the exact maps).
ir::Ruleset address_run_ruleset(bool mixed_prefixes = false);
std::vector<trace::Packet> address_run_packets();

// Address runs without ports: ICMP and TCP accepts from 10.0.9K.0/24 and 10.0.10K.0/24 (one run keyed by
// protocol), drops of anything from 10.0.8K.0/24 (one run keyed by address alone), then an accept of
// anything from 10.0.0.0/8; default drop. Packets of several protocols from each.
ir::Ruleset blocklist_ruleset();
std::vector<trace::Packet> blocklist_packets();

// One chain of `rules` rules, each from its own 172.x.y.z/32 (172.16.0.0 onwards) to TCP ports `port`
// .. `port` + `ports` - 1, accepted; a single run. With mixed_prefixes, the first rule's network is
// 192.168.200.0/24 instead (so the run's members go into the trie, not the exact map).
ir::Ruleset large_address_run_ruleset(std::size_t rules, std::uint16_t port, std::uint16_t ports = 1,
                                      bool mixed_prefixes = false);

ir::IpAddr ip(const char* text);
trace::Packet packet(const char* iif, const char* oif, const char* src, const char* dst,
                     std::uint8_t protocol, std::uint16_t sport, std::uint16_t dport);
std::string describe(const trace::Packet&);

// Ethernet + IPv4/IPv6 + TCP (with tcp_flags, SYN by default) / UDP / ICMP echo; ICMP type and code
// from the packet.
inline constexpr std::uint8_t kTcpSyn = 0x02, kTcpSynAck = 0x12, kTcpAck = 0x10;
// The destination MAC of frame_of's frames, which the test runs below replace with the interface's own.
inline constexpr ir::MacAddr kToInterface = {0x02, 0, 0, 0, 0, 0xfe};
std::vector<std::uint8_t> frame_of(const trace::Packet&, std::uint8_t tcp_flags = kTcpSyn);
// An IPv6 frame with an 8-byte extension header of that kind (hop-by-hop 0, routing 43, fragment 44,
// destination options 60) before its transport header; a fragment header says offset 0.
std::vector<std::uint8_t> with_ipv6_extension(std::vector<std::uint8_t> frame, std::uint8_t kind);

// One BPF_PROG_TEST_RUN (repeated `repeat` times) of the program fwengine attached to the packet's iif
// (ingress) or oif (egress) in the current network namespace: the tc verdict, the mean time per run and
// the mark the program left. Throws std::runtime_error where no program is attached or the run fails.
struct TestRun {
  int retval = 0;
  std::uint32_t duration_ns = 0;
  std::uint32_t mark = 0;
  std::vector<std::uint8_t> frame;  // the frame as the program left it (a reject's: its answer)
};
TestRun test_run(const trace::Packet&, bool ingress, std::uint8_t tcp_flags = kTcpSyn,
                 std::uint32_t repeat = 1);
// The same with any tc program, as if the packet came in on (or went out of) ifindex.
TestRun test_run_program(int prog_fd, const trace::Packet&, int ifindex, std::uint8_t tcp_flags = kTcpSyn,
                         std::uint32_t repeat = 1);
// The same with a frame as given, its mark `mark`.
TestRun test_run_frame(int prog_fd, std::vector<std::uint8_t> frame, int ifindex, std::uint32_t mark,
                       std::uint32_t repeat = 1);

// One BPF_PROG_TEST_RUN of an XDP program with the frame as if it came in on ifindex (frame_of's
// destination MAC made the interface's own): its XDP verdict.
int xdp_test_run(int prog_fd, std::vector<std::uint8_t> frame, int ifindex);

// What the programs fwengine attached in the current network namespace do with a packet: let it through,
// drop it, or answer it in its place (a reject: the frame, made a TCP reset or ICMP error, goes back).
enum class Outcome { passed, dropped, answered };
// The outcome, and the mark the packet leaves the last program with.
struct Judged {
  Outcome outcome;
  std::uint32_t mark = 0;
};
Judged judge(trace::Packet, std::uint8_t tcp_flags = kTcpSyn);
Outcome outcome_of(trace::Packet, std::uint8_t tcp_flags = kTcpSyn);
// The outcome a packet trace evaluated gets: a reject is answered, unless the kernel's reject would not
// answer it either (an ICMP error, a reset, a broadcast or multicast packet).
Outcome expected_outcome(const trace::Result&, const trace::Packet&, std::uint8_t tcp_flags = kTcpSyn);
std::string to_string(Outcome);

// A reject ruleset on d0: input rejects TCP 23 with tcp-reset, UDP 53 with icmp-admin-prohibited, TCP 24
// with icmp-net-prohibited (IPv4 only: IPv6 gets admin-prohibited) and everything else by the endpoint's
// default (icmp-port-unreachable); output rejects TCP 80 with tcp-reset.
ir::Ruleset reject_ruleset();

// Notrack and set-mark on d0: untracked-in notracks UDP 5353 and TCP 8022; prednat marks TCP 8022 and
// 8023 with 0x40 (mask 0xf0); input accepts UDP 5353 and TCP 8022, 8023 (which it marks 0x5 in 0xf as
// well) with established and related accepted first; output to d0 accepts established and related and
// drops the rest. So a notracked flow's reply is new (a TCP SYN+ACK invalid) and dropped, a tracked
// one's established. notrack_packets: the packets of these flows, and some the input drops.
ir::Ruleset notrack_ruleset();
std::vector<trace::Packet> notrack_packets();

// Every negated match, rule-level interfaces, an endpoint matched by source set and MAC, and the
// untracked-out stage: input on d0 or d1 from "lan" (10.0.0.0/24, 2001:db8::/64) and MAC 02:00:00:00:00:01
// or :99 accepts TCP 7001 not from d1, 7002 from d0, 7004 not established, 7005 without mark 0x10, 7006
// not from MAC :99, and drops anything else; what does not come from lan is accepted only to 7007;
// forward accepts TCP 7003 not out of d0; untracked-out drops UDP 9 out of d0. negation_packets: packets
// on each side of each match (new ones only: the not-established match is met on its matching side).
ir::Ruleset negation_ruleset();
std::vector<trace::Packet> negation_packets();

// Log rules in input on d0: "fwe-telnet: " (level 6) for TCP 23, then "fwe-in: " (level 4) for every
// packet; the endpoint accepts.
ir::Ruleset log_ruleset();

// Through outcome_of, BPF_PROG_TEST_RUN: true if let through (TC_ACT_OK). A packet with an iif runs the
// ingress program of iif, one without the egress program of oif; one from the host to itself (oif lo, no iif)
// runs lo's egress program and then, let through, lo's ingress program with the mark the first one left, as
// it loops. Throws std::runtime_error where no program is attached or the run fails.
bool run_programs(trace::Packet, std::uint8_t tcp_flags = kTcpSyn);

// How many entries the map pinned as pin_dir/name holds. Throws std::runtime_error where none is pinned.
std::size_t count_entries(const std::string& pin_dir, const char* name);

// Empties our conntrack maps (both families) pinned in pin_dir, so the next packet starts a flow.
// Throws std::runtime_error where they are not pinned.
void clear_conntrack(const std::string& pin_dir);

}  // namespace fwe::ebpf::test
