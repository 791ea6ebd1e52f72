// log.cpp - the lines of log rules, read from the ring buffer fwe_log.
#include "log.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <utility>

namespace fwe::ebpf {

std::unique_ptr<RingLog> RingLog::open(const std::string& pin_dir) {
  const std::string pin = pin_dir + "/fwe_log";
  const int map_fd = bpf_obj_get(pin.c_str());
  if (map_fd < 0) return nullptr;
  std::unique_ptr<RingLog> log(new RingLog(map_fd, nullptr));
  log->ring_ = ring_buffer__new(map_fd, &RingLog::take, log.get(), nullptr);
  if (log->ring_ == nullptr) return nullptr;
  return log;
}

RingLog::~RingLog() {
  if (ring_ != nullptr) ring_buffer__free(ring_);
  close(map_fd_);
}

int RingLog::fd() const {
  return ring_buffer__epoll_fd(ring_);
}

int RingLog::take(void* self, void* data, std::size_t size) {
  if (size < sizeof(fwe_log_event)) return 0;  // not of this layout: skipped
  fwe_log_event event;
  std::memcpy(&event, data, sizeof event);
  static_cast<RingLog*>(self)->lines_.push_back({event.rule.level, log_line(event)});
  return 0;
}

std::vector<LogLine> RingLog::consume() {
  ring_buffer__consume(ring_);
  return std::exchange(lines_, {});
}

namespace {

std::string interface_name(std::uint32_t ifindex) {
  if (ifindex == 0) return "";
  char name[IF_NAMESIZE] = {};
  return if_indextoname(ifindex, name) ? name : std::to_string(ifindex);
}

std::string address(std::uint8_t family, const std::uint8_t* bytes) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == 4 ? AF_INET : AF_INET6, bytes, text, sizeof text);
  return text;
}

}  // namespace

std::string log_line(const fwe_log_event& event) {
  std::string line(event.rule.prefix, strnlen(event.rule.prefix, sizeof event.rule.prefix));
  line += "IN=" + interface_name(event.iif) + " OUT=" + interface_name(event.oif);
  line += " SRC=" + address(event.family, event.src) + " DST=" + address(event.family, event.dst);
  line += " LEN=" + std::to_string(event.len);
  switch (event.proto) {
    case IPPROTO_TCP:
      line += " PROTO=TCP SPT=" + std::to_string(event.sport) + " DPT=" + std::to_string(event.dport);
      for (const auto& [bit, name] : {std::pair{0x20, "URG"},
                                      {0x10, "ACK"},
                                      {0x08, "PSH"},
                                      {0x04, "RST"},
                                      {0x02, "SYN"},
                                      {0x01, "FIN"}})
        if (event.tcp_flags & bit) line += std::string(" ") + name;
      break;
    case IPPROTO_UDP:
      line += " PROTO=UDP SPT=" + std::to_string(event.sport) + " DPT=" + std::to_string(event.dport);
      break;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6:
      line += std::string(" PROTO=") + (event.proto == IPPROTO_ICMP ? "ICMP" : "ICMPv6") +
              " TYPE=" + std::to_string(event.icmp_type) + " CODE=" + std::to_string(event.icmp_code);
      break;
    default:
      line += " PROTO=" + std::to_string(event.proto);
      if (event.sport || event.dport)
        line += " SPT=" + std::to_string(event.sport) + " DPT=" + std::to_string(event.dport);
  }
  if (event.mark != 0) {
    char mark[16];
    std::snprintf(mark, sizeof mark, "%x", event.mark);
    line += std::string(" MARK=0x") + mark;
  }
  return line;
}

}  // namespace fwe::ebpf
