// kernel.hpp - loads the compiled tables into pinned maps, attaches the tc programs, reads back, flushes.
#pragma once

#include <cstdint>
#include <string>

#include "compile.hpp"
#include "fwengine/netlink.hpp"
#include "fwengine/plugin.hpp"

namespace fwe::ebpf {

// Where a namespace's maps are pinned: /sys/fs/bpf/fwengine/<netns or "default">.
std::string pin_dir_for(const std::string& netns);

// The link-local groups (01:80:c2:00:00:0g, bit g) whose frames a bridge hands up on the port they came
// in on instead of forwarding them, as the kernel's bridge decides from its options and the port's
// group_fwd_mask.
std::uint32_t groups_up_on_port(const netlink::BridgeOptions& bridge, std::uint16_t port_group_fwd_mask);

class Kernel {
 public:
  explicit Kernel(const std::string& netns);

  // Writes the program into the generation not in use, attaches the programs to every interface of
  // the current namespace, then flips the generation: readers see the old or the new policy, never a
  // mix. Throws RuntimeError (policy in effect unchanged) on failure.
  // rebind: the program is the one in effect (the caller applied it): when the generation in use holds
  // that IR and the programs in place are this BPF object's, it stays, counters and token buckets
  // included, and only the interfaces are bound anew (programs attached, interface lists brought up
  // to date). Otherwise a full apply as above.
  void apply(const Program& program, const std::string& ir_hash, bool rebind = false);
  KernelState read_back();
  // Detaches our programs, removes the clsact qdiscs we created and unpins everything.
  void flush();

  // A new fd for the program fwengine attached to ifindex (ingress or egress), or -1.
  static int attached_program(int ifindex, bool ingress);
  // A new fd for fwe_xdp on ifindex's native XDP hook, or -1.
  static int attached_xdp(int ifindex);
  const std::string& pin_dir() const { return pin_dir_; }

 private:
  std::string pin_dir_;
};

}  // namespace fwe::ebpf
