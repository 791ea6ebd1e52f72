// log.cpp - the lines of log rules, read from the ring buffer fwe_log.
#include "log.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <netinet/in.h>
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
  auto* log = static_cast<RingLog*>(self);
  if (size < sizeof(fwe_log_event)) return 0;  // not of this layout: skipped
  fwe_log_event event;
  std::memcpy(&event, data, sizeof event);
  auto name_of = [log](std::uint32_t ifindex) -> std::string {
    if (ifindex == 0) return "";
    auto [it, added] = log->names_.try_emplace(ifindex);
    if (added) {
      char name[IF_NAMESIZE] = {};
      it->second = if_indextoname(ifindex, name) ? name : std::to_string(ifindex);
    }
    return it->second;
  };
  log->lines_.push_back({event.rule.level, log_line(event, name_of)});
  return log->lines_.size() < kBatch ? 0 : -1;  // -1: this record taken, the rest left for later
}

std::vector<LogLine> RingLog::consume() {
  names_.clear();
  ring_buffer__consume(ring_);
  return std::exchange(lines_, {});
}

namespace {

// As the kernel log's %pI4 and %pI6: IPv6 in full, eight groups of four digits.
std::string address(std::uint8_t family, const std::uint8_t* bytes) {
  char text[48] = {};
  if (family == 4) {
    std::snprintf(text, sizeof text, "%u.%u.%u.%u", bytes[0], bytes[1], bytes[2], bytes[3]);
    return text;
  }
  std::string out;
  for (int group = 0; group < 8; ++group) {
    std::snprintf(text, sizeof text, "%s%02x%02x", group ? ":" : "", bytes[2 * group], bytes[2 * group + 1]);
    out += text;
  }
  return out;
}

}  // namespace

std::string log_line(const fwe_log_event& event, const std::function<std::string(std::uint32_t)>& name_of) {
  std::string line(event.rule.prefix, strnlen(event.rule.prefix, sizeof event.rule.prefix));
  line += "IN=" + name_of(event.iif) + " OUT=" + name_of(event.oif);
  line += " SRC=" + address(event.family, event.src) + " DST=" + address(event.family, event.dst);
  line += " LEN=" + std::to_string(event.len);
  const std::string ports = " SPT=" + std::to_string(event.sport) + " DPT=" + std::to_string(event.dport);
  switch (event.proto) {
    case IPPROTO_TCP:
      line += " PROTO=TCP" + ports;
      for (const auto& [bit, name] : {std::pair{0x80, "CWR"},
                                      {0x40, "ECE"},
                                      {0x20, "URG"},
                                      {0x10, "ACK"},
                                      {0x08, "PSH"},
                                      {0x04, "RST"},
                                      {0x02, "SYN"},
                                      {0x01, "FIN"}})
        if (event.tcp_flags & bit) line += std::string(" ") + name;
      break;
    case IPPROTO_UDP:
      line += " PROTO=UDP" + ports;
      break;
    case IPPROTO_UDPLITE:
      line += " PROTO=UDPLITE" + ports;
      break;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6:
      line += std::string(" PROTO=") + (event.proto == IPPROTO_ICMP ? "ICMP" : "ICMPv6") +
              " TYPE=" + std::to_string(event.icmp_type) + " CODE=" + std::to_string(event.icmp_code);
      break;
    case IPPROTO_ESP:
      line += " PROTO=ESP";
      break;
    case IPPROTO_AH:
      line += " PROTO=AH";
      break;
    default:
      line += " PROTO=" + std::to_string(event.proto);
  }
  if (event.mark != 0) {
    char mark[16];
    std::snprintf(mark, sizeof mark, "%x", event.mark);
    line += std::string(" MARK=0x") + mark;
  }
  return line;
}

}  // namespace fwe::ebpf
