// testrun.cpp - `ebpf_testrun NETNS KEY=VALUE...`: one packet, its reply and (TCP) a later packet of its
// connection through the programs fwengine attached in network namespace NETNS (/run/netns/NETNS), with
// BPF_PROG_TEST_RUN, as integration/fuzz checks them against trace. Keys as trace's options: iif, oif,
// src, dst, proto, sport (default 40000, as trace), dport, icmp-type, src-mac. Prints one JSON line:
// {"delivered": B, "reply": B|null, "later": B|null}, with reply and later where trace walks them too
// (after a delivered new packet). Clears the namespace's conntrack map first. Exit 2 on bad arguments,
// 1 when the programs cannot be run.
#include <bpf/bpf.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include "kernel.hpp"
#include "support.hpp"

using namespace fwe;

namespace {

struct BadArgument : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::uint16_t number(const std::map<std::string, std::string>& args, const std::string& key,
                     std::uint16_t fallback, unsigned max = 65535) {
  auto it = args.find(key);
  if (it == args.end()) return fallback;
  std::size_t used = 0;
  unsigned long value = std::stoul(it->second, &used);
  if (used != it->second.size() || value > max)
    throw BadArgument(key + "=" + it->second + " is out of range");
  return static_cast<std::uint16_t>(value);
}

ir::IpAddr address(const std::map<std::string, std::string>& args, const std::string& key) {
  auto it = args.find(key);
  std::optional<ir::IpAddr> parsed = it == args.end() ? std::nullopt : ir::parse_ip(it->second);
  if (!parsed) throw BadArgument(key + "= needs an IP address");
  return *parsed;
}

trace::Packet packet_of(const std::map<std::string, std::string>& args) {
  trace::Packet p;
  if (args.count("iif")) p.iif = args.at("iif");
  if (args.count("oif")) p.oif = args.at("oif");
  if (p.iif.empty() && p.oif.empty()) throw BadArgument("iif= or oif= is needed");
  p.src = address(args, "src");
  p.dst = address(args, "dst");
  if (p.src.family != p.dst.family) throw BadArgument("src= and dst= are of different families");
  auto protocol = ir::parse_protocol(args.count("proto") ? args.at("proto") : "");
  if (!protocol) throw BadArgument("proto= needs tcp, udp, icmp or icmpv6");
  p.protocol = *protocol;
  p.sport = number(args, "sport", 40000);
  p.dport = number(args, "dport", 0);
  p.icmp_type = static_cast<std::uint8_t>(number(args, "icmp-type", p.protocol == 58 ? 128 : 8, 255));
  if (args.count("src-mac")) {
    auto mac = ir::parse_mac(args.at("src-mac"));
    if (!mac) throw BadArgument("src-mac= needs a MAC address");
    p.src_mac = *mac;
  }
  return p;
}

void enter_namespace(const std::string& netns) {
  const std::string path = "/run/netns/" + netns;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error("cannot enter " + path);
  close(fd);
}

const char* json(bool value) {
  return value ? "true" : "false";
}

}  // namespace

int main(int argc, char** argv) {
  trace::Packet packet;
  std::string netns;
  try {
    if (argc < 2) throw BadArgument("usage: ebpf_testrun NETNS KEY=VALUE...");
    netns = argv[1];
    std::map<std::string, std::string> args;
    for (int i = 2; i < argc; ++i) {
      std::string word = argv[i];
      auto equals = word.find('=');
      if (equals == std::string::npos) throw BadArgument("'" + word + "' is not KEY=VALUE");
      args[word.substr(0, equals)] = word.substr(equals + 1);
    }
    packet = packet_of(args);
  } catch (const std::exception& e) {  // BadArgument, and std::stoul's own
    std::cerr << "ebpf_testrun: " << e.what() << "\n";
    return 2;
  }
  try {
    enter_namespace(netns);
    ebpf::test::clear_conntrack(ebpf::pin_dir_for(netns));
    const bool delivered = ebpf::test::run_programs(packet);
    std::string reply = "null", later = "null";
    if (delivered) {
      const bool tcp = packet.protocol == 6;
      trace::Result walked;  // no NAT: the ebpf backend refuses it, so the packet arrives as it was sent
      walked.packet = packet;
      reply =
          json(ebpf::test::run_programs(trace::reply_of(packet, walked), tcp ? ebpf::test::kTcpSynAck : 0));
      if (tcp) later = json(ebpf::test::run_programs(packet, ebpf::test::kTcpAck));
    }
    std::cout << "{\"delivered\": " << json(delivered) << ", \"reply\": " << reply << ", \"later\": " << later
              << "}\n";
  } catch (const std::runtime_error& e) {
    std::cerr << "ebpf_testrun: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
