// fwengine/trace.hpp - the reference evaluator: walks one packet through a ruleset's stages exactly as
// docs/ir.md says. It is the oracle every backend is tested against.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "fwengine/ir.hpp"

namespace fwe::trace {

enum class Path { input, forward, output };
std::string_view to_string(Path);

struct Packet {
  std::string iif, oif;  // input path: iif; output path: oif; forward: both
  ir::IpAddr src, dst;
  std::uint8_t protocol = 6;
  std::uint16_t sport = 0, dport = 0;         // TCP/UDP/SCTP/UDPLite
  std::uint8_t icmp_type = 8, icmp_code = 0;  // ICMP/ICMPv6
  ir::CtState ct = ir::CtState::new_;
  // The connection's conntrack status, indexed by CtStatus: set by the walk's NAT, kept by its reply.
  std::array<bool, ir::kCtStatusCount> ct_status{};
  // The destination port of the connection's original direction (conntrack's original tuple): unset,
  // the packet's own dport, as for the first packet of a connection.
  std::optional<std::uint16_t> ct_orig_dport;
  std::optional<ir::MacAddr> src_mac;
  std::optional<ir::IpAddr> oif_addr;  // the output interface's address: masquerade's source
  std::optional<ir::IpAddr> iif_addr;  // the input interface's address: redirect's destination
  // Where the host routes the packet's source address (the reverse path an rpf match checks): that
  // interface, or "" for no usable route (none, or a local, unreachable, blackhole or prohibit one).
  // Unset: back out of iif, as for any packet that is not spoofed.
  std::optional<std::string> src_route;
  std::uint32_t mark = 0;
  std::string pkt_type = "unicast";
  // A reply of a source-NATed connection carries the NAT address and port as its destination until the
  // kernel undoes the NAT at nat PREROUTING: the untracked-in and prednat stages see these instead.
  std::optional<ir::IpAddr> snat_dst;
  std::uint16_t snat_dport = 0;
  // A later packet of a destination-NATed connection: the NAT stages skip it, but the kernel rewrites its
  // destination where the dnat stage runs, as it did for the first packet.
  std::optional<ir::IpAddr> dnat_dst;
  std::uint16_t dnat_dport = 0;
};

// One rule (or default, prelude, failsafe) that decided something, for people.
struct Step {
  ir::Stage stage;
  std::string section, endpoint, group, chain;
  std::int32_t rule_index = -1;  // index in chain, -1 for a default/prelude
  const ir::Rule* rule = nullptr;
  // Where no rule decided (an endpoint's default, a group's end): the endpoint or group, for its line.
  const ir::Origin* origin = nullptr;
  std::string what;  // "rule 3 (drop)", "conntrack: established", "endpoint default drop", ...
};

struct StageResult {
  ir::Stage stage;
  ir::Verdict verdict = ir::Verdict::continue_;
  std::string endpoint;     // the endpoint of the deciding section, empty if none matched
  std::vector<Step> steps;  // what was evaluated that mattered, in order; last one decided
};

struct Result {
  Path path;
  Packet packet;  // as it left the last stage (after NAT)
  std::vector<StageResult> stages;
  bool delivered = true;  // no stage dropped or rejected
  bool allow_mark = false;
  bool untracked = false;             // a stage gave notrack
  ir::Verdict final_verdict() const;  // drop/reject if not delivered, else accept or continue
};

// The conntrack state the kernel gives a packet of `family` that no connection precedes (trace's default
// --state): new, except for ICMP (ICMPv6 over IPv6), where only a query conntrack tracks starts one
// (echo, timestamp, information and address mask requests; ICMPv6 echo and node information queries).
// ICMPv6 neighbour discovery and multicast listener messages (130-136, 143) are untracked (conntrack
// leaves them alone); any other ICMP is invalid: a reply, an error about no connection conntrack knows,
// an IPv4 router advertisement (9), an ICMPv6 redirect (137), ICMP in the other family's packet.
ir::CtState first_packet_state(ir::Family family, std::uint8_t protocol, std::uint8_t icmp_type);

// The path follows from the interfaces: iif only = input, oif only = output, both = forward.
Path path_of(const Packet&);
Result evaluate(const ir::Ruleset&, const Packet&);

// The reply of a packet that was delivered: swapped addresses, ports, interfaces, on the reverse path;
// established, or, if the original was untracked (no entry), new (invalid for a TCP SYN+ACK or an echo
// reply); the connection's ct status stays.
Packet reply_of(const Packet& original, const Result& result);
// A later packet of a TCP connection whose first packet was delivered (the handshake's ACK and the data
// after it): the same packet, established (new if the first was untracked, invalid if only the reply
// was), with the connection's NAT. A verdict only a connection's first packet meets (a NAT stage's
// allow) does not reach it.
Packet later_of(const Packet& original, const Result& result, const Result& reply_result);

// "file:line:col" of a rule's origin, using the ruleset's file table.
std::string where(const ir::Ruleset&, const ir::Origin&);

}  // namespace fwe::trace
