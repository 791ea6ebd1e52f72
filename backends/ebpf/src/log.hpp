// log.hpp - the lines of log rules: what the programs put into the ring buffer fwe_log, in the form the
// kernel log gives the same packet.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fwe_shared.h"
#include "fwengine/plugin.hpp"

struct ring_buffer;

namespace fwe::ebpf {

class RingLog : public LogWatch {
 public:
  // The ring buffer pinned in pin_dir; nullptr where none is (nothing applied).
  static std::unique_ptr<RingLog> open(const std::string& pin_dir);
  ~RingLog() override;
  RingLog(const RingLog&) = delete;
  RingLog& operator=(const RingLog&) = delete;
  int fd() const override;
  // At most kBatch lines: under a flood of logged packets the caller gets back to its other work
  // between batches (fd() stays readable while records wait).
  std::vector<LogLine> consume() override;
  static constexpr std::size_t kBatch = 1000;

 private:
  RingLog(int map_fd, ring_buffer* ring) : map_fd_(map_fd), ring_(ring) {}
  static int take(void* self, void* data, std::size_t size);
  int map_fd_;
  ring_buffer* ring_;
  std::vector<LogLine> lines_;
  std::map<std::uint32_t, std::string> names_;  // interface names, looked up once a batch
};

// "PREFIX IN=d0 OUT= SRC=... DST=... LEN=... PROTO=TCP SPT=... DPT=... SYN MARK=0x1", as nf_log
// writes it, without the fields the programs do not read (README.md). name_of: an interface's name.
std::string log_line(const fwe_log_event& event, const std::function<std::string(std::uint32_t)>& name_of);

}  // namespace fwe::ebpf
