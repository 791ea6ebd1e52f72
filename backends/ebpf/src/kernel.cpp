// kernel.cpp - libbpf side: skeleton, pinned maps, generations, tc attachment.
#include "kernel.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/magic.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

// bpftool writes the object file as one string literal, longer than C++ promises to take (clang warns).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverlength-strings"
#include "fwengine.skel.h"
#pragma GCC diagnostic pop
#include "fwengine/netlink.hpp"
#include "fwengine/state.hpp"

namespace fwe::ebpf {

namespace {

constexpr const char* kBpffs = "/sys/fs/bpf";
constexpr __u32 kFilterHandle = 0xfe;  // our tc filter's handle and priority on every clsact hook
constexpr __u32 kFilterPriority = 1;
constexpr const char* kIngressName = "fwe_ingress";
constexpr const char* kEgressName = "fwe_egress";
constexpr const char* kPortIngressName = "fwe_port_in";
constexpr const char* kXdpName = "fwe_xdp";

bool is_ours(const std::string& program) {
  return program == kIngressName || program == kEgressName || program == kPortIngressName;
}

// libbpf's warnings (verifier log included), kept for the error message of a failed load.
std::string& libbpf_log() {
  static std::string log;
  return log;
}

int collect_libbpf_output(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[1024];
  int n = std::vsnprintf(line, sizeof line, format, args);
  std::string& log = libbpf_log();
  log += line;
  if (log.size() > 16384) log.erase(0, log.size() - 16384);
  return n;
}

[[noreturn]] void fail(const std::string& what, int err, const std::string& hint = "") {
  std::string message = "ebpf: " + what + ": " + std::strerror(err < 0 ? -err : err);
  if (!hint.empty()) message += " (" + hint + ")";
  const std::string& log = libbpf_log();
  if (!log.empty()) message += "\n" + log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
  throw RuntimeError(message);
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd >= 0) close(fd);
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

struct SkeletonDeleter {
  void operator()(fwengine_bpf* s) const { fwengine_bpf::destroy(s); }
};
using Skeleton = std::unique_ptr<fwengine_bpf, SkeletonDeleter>;

struct Interface {
  int index;
  std::string name;
  // Ethernet or loopback: the programs read an Ethernet header first. An IP tunnel, VPN or PPP link
  // (WireGuard, tun, GRE, sit, ipip) has none at tc: read as if it had, its verdicts would be noise, so it
  // gets no program, and apply warns while it is up.
  bool framed = true;
  bool ethernet = false;  // not lo
  bool up = false;
  std::string mac{};   // its address, as the kernel gives it
  std::string kind{};  // IFLA_INFO_KIND ("veth", "bond", ...); empty for a NIC
  // A VLAN, macvlan, ipvlan or DSA device is stacked on it: fwe_xdp stays off (why_no_xdp).
  bool carries_uppers = false;
  __u32 xdp_id = 0;  // the program on its native XDP hook, 0 for none
  // A port of a bridge, bond, team or Open vSwitch: what comes in on it goes on up to its master, where
  // netfilter sees it (or across the bridge, where netfilter does not), and what goes out on it came
  // down from there. Judged on the master only, as nft judges it; a VRF's member is judged as itself.
  bool stacked = false;
  int bridge = 0;       // the bridge it is a port of, 0 if none
  __u32 switched = 0;   // FWE_BRIDGED_*: the frames switched to it that br_netfilter hands to netfilter
  __u32 up_groups = 0;  // bit g: the bridge hands a frame to 01:80:c2:00:00:0g up on this port
};

// Masters whose members netfilter sees as themselves: a VRF's (it sees their packets on the member, then
// on the VRF), and batman-adv's hard interfaces (what is not batman-adv's goes up on them). Every other
// master takes its members' packets (a bridge, bond, team, Open vSwitch, HSR, net_failover, and one
// that reports no kind, as hv_netvsc does for its VF).
constexpr std::string_view kMastersOfThemselves[] = {"vrf", "batadv"};

// Devices stacked on a lower one that take some of its frames: a VLAN device those tagged for it (a NIC
// that takes the tag off in hardware hands XDP the frame without it), a passthru macvlan or an ipvlan
// those to the lower device's own MAC address, a DSA switch port those its conduit carries (with a tag
// XDP does not read).
constexpr std::string_view kUppers[] = {"vlan", "macvlan", "macvtap", "ipvlan", "ipvtap", "dsa"};

// What br_netfilter hands to netfilter of the frames bridges switch (FWE_BRIDGED_*), by the namespace's
// sysctls: the families on for every bridge, and whether VLAN-tagged frames go too; nullopt where the
// module is not loaded (a bridge's own options then do nothing either).
struct BridgeNetfilter {
  __u32 families = 0;
  bool vlan_tagged = false;
};
std::optional<BridgeNetfilter> bridge_netfilter() {
  std::error_code ec;
  if (!std::filesystem::exists("/proc/sys/net/bridge", ec)) return std::nullopt;
  auto on = [](const char* name) {
    std::ifstream file(std::string("/proc/sys/net/bridge/") + name);
    int value = 0;
    return file >> value && value != 0;
  };
  return BridgeNetfilter{(on("bridge-nf-call-iptables") ? FWE_BRIDGED_IPV4 : 0u) |
                             (on("bridge-nf-call-ip6tables") ? FWE_BRIDGED_IPV6 : 0u),
                         on("bridge-nf-filter-vlan-tagged")};
}

// The id of the program on a link's native XDP hook (IFLA_XDP), 0 for none. From the dump, not from
// bpf_xdp_query_id, which dumps every link again for each one it is asked about.
__u32 native_xdp_program(const nlmsghdr& message) {
  const auto* info = static_cast<const ifinfomsg*>(NLMSG_DATA(&message));
  auto length = static_cast<int>(IFLA_PAYLOAD(&message));
  for (auto* a = IFLA_RTA(info); RTA_OK(a, length); a = RTA_NEXT(a, length)) {
    if (a->rta_type != IFLA_XDP) continue;
    __u8 mode = XDP_ATTACHED_NONE;
    __u32 id = 0, drv_id = 0;
    auto nested_length = static_cast<int>(RTA_PAYLOAD(a));
    for (auto* x = static_cast<const rtattr*>(RTA_DATA(a)); RTA_OK(x, nested_length);
         x = RTA_NEXT(x, nested_length)) {
      if (x->rta_type == IFLA_XDP_ATTACHED && RTA_PAYLOAD(x) >= 1)
        mode = *static_cast<const __u8*>(RTA_DATA(x));
      if (x->rta_type == IFLA_XDP_PROG_ID && RTA_PAYLOAD(x) >= 4) std::memcpy(&id, RTA_DATA(x), 4);
      if (x->rta_type == IFLA_XDP_DRV_PROG_ID && RTA_PAYLOAD(x) >= 4) std::memcpy(&drv_id, RTA_DATA(x), 4);
    }
    // One mode: IFLA_XDP_PROG_ID is its program; several: each mode's own id.
    return mode == XDP_ATTACHED_DRV ? id : mode == XDP_ATTACHED_MULTI ? drv_id : 0;
  }
  return 0;
}

// One RTM_GETLINK dump of the current namespace, with each master's kind; nullopt if the kernel says it
// was interrupted by a change (NLM_F_DUMP_INTR): it is taken again.
std::optional<std::vector<Interface>> dump_interfaces() {
  std::vector<netlink::Link> links;
  std::map<int, ifinfomsg> headers;  // type and flags, by index
  std::map<int, __u32> xdp_ids;      // by index
  ifinfomsg family{};
  family.ifi_family = AF_UNSPEC;
  const auto end = netlink::dump_route(RTM_GETLINK, family, [&](const nlmsghdr& message) {
    if (message.nlmsg_type != RTM_NEWLINK) return;
    if (auto link = netlink::link_of(message)) {
      headers[link->index] = *static_cast<const ifinfomsg*>(NLMSG_DATA(&message));
      xdp_ids[link->index] = native_xdp_program(message);
      links.push_back(std::move(*link));
    }
  });
  if (end.error != 0) fail("listing interfaces", end.error);
  if (end.interrupted) return std::nullopt;
  std::map<int, const netlink::Link*> by_index;
  for (const auto& link : links) by_index[link.index] = &link;
  const auto netfilter = bridge_netfilter();
  std::vector<Interface> out;
  for (const auto& link : links) {
    Interface& iface = out.emplace_back(Interface{link.index, link.name});
    const ifinfomsg& header = headers[link.index];
    iface.framed = header.ifi_type == ARPHRD_ETHER || header.ifi_type == ARPHRD_LOOPBACK;
    iface.ethernet = header.ifi_type == ARPHRD_ETHER;
    iface.up = (header.ifi_flags & IFF_UP) != 0;
    iface.mac = link.address;
    iface.kind = link.kind;
    iface.xdp_id = xdp_ids[link.index];
    if (link.master == 0 || link.master == link.index) continue;
    const auto found = by_index.find(link.master);
    const netlink::Link* master = found == by_index.end() ? nullptr : found->second;
    const std::string kind = master ? master->kind : "";
    iface.stacked = std::find(std::begin(kMastersOfThemselves), std::end(kMastersOfThemselves), kind) ==
                    std::end(kMastersOfThemselves);
    if (kind == "bridge") {
      iface.bridge = link.master;
      iface.up_groups = groups_up_on_port(master->bridge, link.port_group_fwd_mask);
      // The families whose namespace sysctl or bridge option is on.
      const __u32 own = (master->bridge.calls_iptables ? FWE_BRIDGED_IPV4 : 0u) |
                        (master->bridge.calls_ip6tables ? FWE_BRIDGED_IPV6 : 0u);
      if (netfilter) iface.switched = netfilter->families | own;
      if (iface.switched != 0 && netfilter->vlan_tagged) iface.switched |= FWE_BRIDGED_VLAN;
    }
  }
  for (const auto& link : links)
    if (std::find(std::begin(kUppers), std::end(kUppers), link.kind) != std::end(kUppers) && link.lower != 0)
      for (auto& iface : out)
        if (iface.index == link.lower) iface.carries_uppers = true;
  return out;
}

std::vector<Interface> interfaces() {
  for (int attempt = 1;; ++attempt) {
    if (auto listed = dump_interfaces()) return std::move(*listed);
    if (attempt == 10) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10 * attempt));  // a burst of changes passes
  }
  fail("listing interfaces", EAGAIN, "they kept changing while they were listed");
}

// Interfaces that went away (deleted, taking their qdiscs along, or moved to another namespace, taking an
// XDP program along) leave their entries (fwe_hooks, fwe_xdp_links): interfaces come and go by the
// thousand on a node that runs pods (the daemon applies for each), and an index the kernel gives out
// again must not make flush remove a qdisc someone else made, nor fwe_xdp judge another interface (or
// the moved one, in its new namespace) by this namespace's rules.
void forget_gone_interfaces(int map_fd, const std::vector<Interface>& present) {
  std::set<__u32> live;
  for (const auto& iface : present) live.insert(static_cast<__u32>(iface.index));
  std::vector<__u32> gone;
  __u32 key = 0, next = 0;
  for (const __u32* at = nullptr; bpf_map_get_next_key(map_fd, at, &next) == 0; at = &key) {
    key = next;
    if (!live.contains(key)) gone.push_back(key);
  }
  for (__u32 index : gone) bpf_map_delete_elem(map_fd, &index);
}

bool is_bpffs(const std::string& path) {
  struct statfs fs {};
  return statfs(path.c_str(), &fs) == 0 && fs.f_type == BPF_FS_MAGIC;
}

std::optional<ino_t> mount_namespace_of(pid_t pid) {
  struct stat ns {};
  if (stat(("/proc/" + std::to_string(pid) + "/ns/mnt").c_str(), &ns) != 0) return std::nullopt;
  return ns.st_ino;
}

pid_t parent_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  const std::string line((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto end_of_name = line.rfind(')');  // the name may hold spaces and parentheses
  if (end_of_name == std::string::npos) return 0;
  std::istringstream fields(line.substr(end_of_name + 1));
  std::string state;
  pid_t parent = 0;
  fields >> state >> parent;
  return parent;
}

// Where the pins go: the bpffs on /sys/fs/bpf. `ip netns exec` gives the process a mount namespace of
// its own with a fresh /sys, where a bpffs would be mounted for it alone and its pins gone when it
// exits: then the host's, as the nearest process outside that namespace sees it (the shell that ran
// ip), held open so that it stays reachable if that process ends.
std::string bpffs_root() {
  static const std::string root = [] {
    if (is_bpffs(kBpffs)) return std::string(kBpffs);
    const auto own = mount_namespace_of(getpid());
    for (pid_t pid = getppid(); own && pid > 0; pid = parent_of(pid)) {
      if (mount_namespace_of(pid) == own) continue;
      const std::string seen = "/proc/" + std::to_string(pid) + "/root" + kBpffs;
      if (!is_bpffs(seen)) break;
      const int fd = open(seen.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);  // kept until exit
      if (fd < 0) break;
      return "/proc/self/fd/" + std::to_string(fd);
    }
    return std::string(kBpffs);
  }();
  return root;
}

void ensure_bpffs(const std::string& pin_dir) {
  if (!pin_dir.starts_with(kBpffs) || is_bpffs(kBpffs)) return;
  // A host that never mounted it, or a mount namespace of our own outside of which none is mounted.
  if (mount("bpf", kBpffs, "bpf", 0, "mode=0700") != 0)
    fail(std::string("mounting bpffs on ") + kBpffs, errno);
}

bpf_tc_hook hook_of(int ifindex, bpf_tc_attach_point point) {
  bpf_tc_hook hook{};
  hook.sz = sizeof hook;
  hook.ifindex = ifindex;
  hook.attach_point = point;
  return hook;
}

// Whether a tc filter is on the interface's clsact hooks: another program's, once ours are detached.
// true also when it cannot be told (the qdisc is then left where it is).
bool clsact_holds_filters(int ifindex) {
  for (__u32 parent : {TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS), TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)}) {
    tcmsg filters{};
    filters.tcm_family = AF_UNSPEC;
    filters.tcm_ifindex = ifindex;
    filters.tcm_parent = parent;
    bool held = false;
    const auto end = netlink::dump_route(RTM_GETTFILTER, filters, [&](const nlmsghdr& message) {
      held = held || message.nlmsg_type == RTM_NEWTFILTER;
    });
    if (held || end.error != 0) return true;
  }
  return false;
}

bpf_tc_opts filter_opts() {
  bpf_tc_opts opts{};
  opts.sz = sizeof opts;
  opts.handle = kFilterHandle;
  opts.priority = kFilterPriority;
  return opts;
}

std::string program_name(__u32 prog_id) {
  Fd fd(bpf_prog_get_fd_by_id(prog_id));
  if (fd.fd < 0) return {};
  bpf_prog_info info{};
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd.fd, &info, &len) != 0) return {};
  return info.name;
}

// The id of the program at our handle/priority on a hook, 0 if none; name_out gets its name.
__u32 query_filter(int ifindex, bpf_tc_attach_point point, std::string* name_out) {
  bpf_tc_hook hook = hook_of(ifindex, point);
  bpf_tc_opts opts = filter_opts();
  if (bpf_tc_query(&hook, &opts) != 0) return 0;
  if (name_out) *name_out = program_name(opts.prog_id);
  return opts.prog_id;
}

// A program's kernel id, 0 if the fd is not a program.
__u32 program_id(int prog_fd) {
  bpf_prog_info info{};
  __u32 len = sizeof info;
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 ? info.id : 0;
}

void attach(int ifindex, const std::string& ifname, bpf_tc_attach_point point, int prog_fd, const char* ours,
            int hooks_fd) {
  bpf_tc_hook hook = hook_of(ifindex, point);
  int rc = bpf_tc_hook_create(&hook);
  if (rc == -ENODEV) return;  // gone since it was listed (a pod deleted): nothing to filter there
  if (rc == 0) {
    __u32 key = static_cast<__u32>(ifindex);
    __u8 created = 1;
    // Unrecorded, flush would leave this qdisc behind: it goes again at once.
    if (int err = bpf_map_update_elem(hooks_fd, &key, &created, BPF_ANY); err != 0) {
      bpf_tc_hook both = hook_of(ifindex, static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
      bpf_tc_hook_destroy(&both);
      fail("recording the clsact qdisc made on " + ifname + " (fwe_hooks)", -err);
    }
  } else if (rc != -EEXIST) {
    fail("creating the clsact qdisc on " + ifname, rc);
  }
  auto refuse_foreign = [&](const std::string& what) {
    throw RuntimeError("ebpf: " + ifname + " already has a tc filter (" + what + ") at handle " +
                       std::to_string(kFilterHandle) + " priority " + std::to_string(kFilterPriority) +
                       "; fwengine does not replace other software's filters");
  };
  std::string existing;
  const __u32 existing_id = query_filter(ifindex, point, &existing);
  const bool occupied = existing_id != 0;
  if (occupied && !is_ours(existing)) refuse_foreign("program '" + existing + "'");
  if (occupied && existing_id == program_id(prog_fd)) return;  // reused programs: already in place
  bpf_tc_opts opts = filter_opts();
  opts.prog_fd = prog_fd;
  // Replace only our own: bpf_tc_query does not see a filter without an eBPF program id (classic
  // BPF), and without REPLACE the kernel refuses to create ours over it.
  opts.flags = occupied ? BPF_TC_F_REPLACE : 0;
  rc = bpf_tc_attach(&hook, &opts);
  if (rc == -ENODEV) return;
  if (rc == -EEXIST) refuse_foreign("classic BPF, or another filter without an eBPF program id");
  if (rc != 0) fail(std::string("attaching ") + ours + " to " + ifname, rc);
}

// Takes our program off the hook; other programs' filters stay.
void detach(const Interface& iface, bpf_tc_attach_point point) {
  std::string name;
  if (query_filter(iface.index, point, &name) == 0 || !is_ours(name)) return;
  bpf_tc_hook hook = hook_of(iface.index, point);
  bpf_tc_opts opts = filter_opts();
  // An interface that went meanwhile took its filters with it.
  if (int rc = bpf_tc_detach(&hook, &opts); rc != 0 && rc != -ENODEV && rc != -ENOENT)
    fail("detaching " + name + " from " + iface.name, rc);
}

constexpr bpf_tc_attach_point kHooks[] = {BPF_TC_INGRESS, BPF_TC_EGRESS};

// Why fwe_xdp may not go on an interface the backend option names ("" if it may): it must be an
// Ethernet link netfilter names, with no device stacked on it that takes frames XDP could not tell from
// its own. A bond or team hands its program to its ports, where it would find no entry.
std::string why_no_xdp(const Interface& iface) {
  if (!iface.ethernet || iface.mac.size() != 6) return "it is not an Ethernet link";
  if (iface.stacked) return "it is a port, judged on its master";
  if (iface.carries_uppers) return "a VLAN, macvlan, ipvlan or DSA device is stacked on it";
  if (iface.kind == "bond" || iface.kind == "team") return "a " + iface.kind + " runs XDP on its ports";
  return {};
}

bool xdp_named(const Interface& iface, const std::vector<ir::IfacePattern>& names) {
  return std::any_of(names.begin(), names.end(), [&](const auto& n) { return n.matches(iface.name); });
}

void update(int fd, const void* key, const void* value, const char* what) {
  if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0) fail(std::string("writing ") + what, errno);
}

// Puts fwe_xdp on the interface's native (driver) XDP hook, and its MAC address into fwe_xdp_links.
// Returns why it could not ("" if it did): a driver without XDP, another program on the hook (fwengine
// does not replace other software's), or one in generic mode there. tc judges the interface's packets
// either way.
std::string place_xdp(const Interface& iface, int prog_fd, int links_fd) {
  const __u32 existing = iface.xdp_id;
  if (existing != 0 && program_name(existing) != kXdpName)
    return "another XDP program (" + program_name(existing) + ") is on it";
  fwe_xdp_link link{};
  std::memcpy(link.mac, iface.mac.data(), sizeof link.mac);
  const __u32 key = static_cast<__u32>(iface.index);
  update(links_fd, &key, &link, "fwe_xdp_links");
  if (existing != 0 && existing == program_id(prog_fd)) return {};
  // Only over nothing, or over our own older program: never over one another tool put there meanwhile.
  int rc = 0;
  if (existing == 0) {
    rc = bpf_xdp_attach(iface.index, prog_fd, XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr);
  } else {
    const Fd old(bpf_prog_get_fd_by_id(existing));
    bpf_xdp_attach_opts opts{};
    opts.sz = sizeof opts;
    opts.old_prog_fd = old.fd;
    rc = old.fd < 0 ? -errno
                    : bpf_xdp_attach(iface.index, prog_fd, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts);
  }
  if (rc == 0) return {};
  bpf_map_delete_elem(links_fd, &key);
  if (rc == -ENODEV) return {};  // gone since it was listed
  if (rc == -EOPNOTSUPP) return "its driver runs no XDP programs";
  if (rc == -EEXIST || rc == -EBUSY) return "another program is on its XDP hook";
  return std::string("the kernel refused it: ") + std::strerror(-rc);
}

// Takes fwe_xdp off the interface, if it is there; another program stays.
void remove_xdp(const Interface& iface, int links_fd) {
  const __u32 key = static_cast<__u32>(iface.index);
  const __u32 existing = iface.xdp_id;
  if (existing != 0 && program_name(existing) == kXdpName) {
    // Only ours: a program another tool put there meanwhile makes the kernel refuse (EEXIST), and stays.
    const Fd ours(bpf_prog_get_fd_by_id(existing));
    bpf_xdp_attach_opts opts{};
    opts.sz = sizeof opts;
    opts.old_prog_fd = ours.fd;
    if (int rc = ours.fd < 0 ? 0 : bpf_xdp_detach(iface.index, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts);
        rc != 0 && rc != -ENODEV && rc != -EEXIST)
      fail(std::string("detaching ") + kXdpName + " from " + iface.name, rc);
  }
  if (links_fd >= 0) bpf_map_delete_elem(links_fd, &key);
}

// Which of our programs belongs on the hook, nullptr for none: on every hook of an interface netfilter
// names; on a bridge port, the one that judges what the bridge hands up on the port itself, and
// fwe_egress where switched frames are judged.
const char* program_for(const Interface& iface, bpf_tc_attach_point point) {
  if (!iface.framed) return nullptr;
  const bool ingress = point == BPF_TC_INGRESS;
  if (!iface.stacked) return ingress ? kIngressName : kEgressName;
  if (iface.bridge == 0) return nullptr;
  if (ingress) return kPortIngressName;
  return iface.switched != 0 ? kEgressName : nullptr;
}

struct PinnedMaps {
  Fd rules, stages, config, meta, set4, set6, runs4, runs6, runs4_exact, runs6_exact, run_counters, iflists,
      portsets, portindex, chains, wheres, counters, limits, ct4, ct6, frags, ports, hooks, netns, answer,
      answered, logs, log, xdp_links;
};

int get_pinned(const std::string& dir, const char* name) {
  return bpf_obj_get((dir + "/" + name).c_str());
}

// Every pinned map with its name: what open_pinned opens, and what uses_only compares a program's maps with.
template <typename Maps>  // PinnedMaps, or const PinnedMaps
auto named_maps(Maps& m) {
  using Map = std::pair<decltype(&m.rules), const char*>;
  return std::array<Map, 29>{{{&m.rules, "fwe_rules_v2"},
                              {&m.stages, "fwe_stages"},
                              {&m.config, "fwe_config"},
                              {&m.meta, "fwe_meta"},
                              {&m.set4, "fwe_set4"},
                              {&m.set6, "fwe_set6"},
                              {&m.runs4, "fwe_runs4"},
                              {&m.runs6, "fwe_runs6"},
                              {&m.runs4_exact, "fwe_runs4_exact"},
                              {&m.runs6_exact, "fwe_runs6_exact"},
                              {&m.run_counters, "fwe_run_counters"},
                              {&m.iflists, "fwe_iflists"},
                              {&m.portsets, "fwe_portsets"},
                              {&m.portindex, "fwe_portindex"},
                              {&m.chains, "fwe_chains"},
                              {&m.wheres, "fwe_wheres"},
                              {&m.counters, "fwe_counters"},
                              {&m.limits, "fwe_limits"},
                              {&m.ct4, "fwe_ct4"},
                              {&m.ct6, "fwe_ct6"},
                              {&m.frags, "fwe_frags"},
                              {&m.ports, "fwe_ports"},
                              {&m.hooks, "fwe_hooks"},
                              {&m.netns, "fwe_netns"},
                              {&m.answer, "fwe_answer"},
                              {&m.answered, "fwe_answered"},
                              {&m.logs, "fwe_logs"},
                              {&m.log, "fwe_log"},
                              {&m.xdp_links, "fwe_xdp_links"}}};
}

bool open_pinned(const std::string& dir, PinnedMaps& m) {
  for (auto& [fd, name] : named_maps(m)) {
    *fd = Fd(get_pinned(dir, name));
    if (fd->fd < 0) return false;
  }
  return true;
}

// Whether the pins in dir were made in another network namespace than this one: one deleted since (its
// pins stayed), whose name this one has now. Pins from before fwengine recorded it are taken as ours.
bool pins_of_another_namespace(const std::string& dir) {
  const Fd recorded(get_pinned(dir, "fwe_netns"));
  __u32 zero = 0;
  std::uint64_t theirs = 0;
  if (recorded.fd < 0 || bpf_map_lookup_elem(recorded.fd, &zero, &theirs) != 0 || theirs == 0) return false;
  const std::uint64_t ours = state::netns_cookie();
  return ours != 0 && ours != theirs;
}

// The build's BPF object, as a short digest: the programs are pinned under it, so that an apply by the
// same build finds them, and one by another build loads its own.
std::string object_tag() {
  std::size_t size = 0;
  const auto* bytes = static_cast<const unsigned char*>(fwengine_bpf::elf_bytes(&size));
  std::uint64_t digest = 0xcbf29ce484222325ull;  // FNV-1a
  for (std::size_t i = 0; i < size; ++i) digest = (digest ^ bytes[i]) * 0x100000001b3ull;
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(digest));
  return text;
}

// Every map the program uses is one of the pinned maps: a program pinned beside maps that were since
// made anew would read maps nobody writes.
bool uses_only(int prog_fd, const PinnedMaps& m) {
  std::vector<__u32> map_ids(64);
  bpf_prog_info info{};
  info.nr_map_ids = static_cast<__u32>(map_ids.size());
  info.map_ids = reinterpret_cast<std::uintptr_t>(map_ids.data());
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0 || info.nr_map_ids > map_ids.size()) return false;
  std::vector<__u32> pinned;
  for (const auto& [fd, name] : named_maps(m)) {
    bpf_map_info map{};
    __u32 map_len = sizeof map;
    if (bpf_obj_get_info_by_fd(fd->fd, &map, &map_len) != 0) return false;
    pinned.push_back(map.id);
  }
  for (__u32 i = 0; i < info.nr_map_ids; ++i)
    if (std::find(pinned.begin(), pinned.end(), map_ids[i]) == pinned.end()) return false;
  return true;
}

struct Programs {
  Fd ingress, egress, port_ingress, xdp;
  // Whether the load made the ruleset's maps anew (the first apply, or pins of another layout): nothing
  // runs on them yet, so the new generation can be made current before the programs are attached.
  bool new_maps = false;
  // Whether these programs were in place already (pinned by an earlier apply of the same BPF object).
  bool reused = false;

  int fd_of(std::string_view name) const {
    return name == kIngressName ? ingress.fd : name == kEgressName ? egress.fd : port_ingress.fd;
  }
};

// Maps whose entries are not the ruleset's, kept when a new layout makes the other maps anew (an
// upgrade) if their own shape did not change: the state of open flows, so that flows open across the
// upgrade stay established, and the record of the clsact qdiscs fwengine created, without which flush
// would leave them behind. An entry must then mean what it meant before: a change of the meaning of
// struct fwe_ct_value at the same size renames the conntrack maps (fwe_shared.h).
constexpr std::string_view kKeptAcrossLayouts[] = {"fwe_ct4", "fwe_ct6", "fwe_hooks"};

// Whether the map pinned at `path` is one libbpf can reuse for `map` (what libbpf compares).
bool reusable(const std::string& path, const bpf_map* map) {
  Fd pinned(bpf_obj_get(path.c_str()));
  bpf_map_info info{};
  __u32 len = sizeof info;
  if (pinned.fd < 0 || bpf_obj_get_info_by_fd(pinned.fd, &info, &len) != 0) return false;
  return info.type == static_cast<__u32>(bpf_map__type(map)) && info.key_size == bpf_map__key_size(map) &&
         info.value_size == bpf_map__value_size(map) && info.max_entries == bpf_map__max_entries(map) &&
         info.map_flags == bpf_map__map_flags(map);
}

// Makes the pin directory hold only what this build pins: when any of its maps is missing or pinned
// with another shape (an older fwengine's layout), every map pin goes but those kept across layouts
// (kKeptAcrossLayouts) that still fit, so that the load makes the ruleset's maps anew rather than fail or mix
// two layouts. Returns whether it did. The programs attached now keep their maps until they are replaced.
bool unpin_unfit_maps(const std::string& pin_dir, const bpf_object* object) {
  const bpf_map* map = nullptr;
  bool fit = true;
  std::vector<std::string> kept;
  bpf_object__for_each_map(map, object) {
    const char* pin = bpf_map__pin_path(map);
    if (!pin) continue;
    const std::string name = std::filesystem::path(pin).filename();
    if (!reusable(pin, map))
      fit = false;
    else if (std::find(std::begin(kKeptAcrossLayouts), std::end(kKeptAcrossLayouts), name) !=
             std::end(kKeptAcrossLayouts))
      kept.push_back(name);
  }
  if (fit) return false;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(pin_dir, ec)) {
    const std::string name = entry.path().filename();
    if (name.starts_with("fwe_") && std::find(kept.begin(), kept.end(), name) == kept.end())
      std::filesystem::remove(entry.path(), ec);
  }
  return true;
}

// After a load, before its programs are pinned: every pin but this build's maps goes (programs pinned
// before, an older layout's maps).
void unpin_all_but_maps(const std::string& pin_dir, const bpf_object* object) {
  std::vector<std::string> ours;
  const bpf_map* map = nullptr;
  bpf_object__for_each_map(map, object) {
    if (const char* pin = bpf_map__pin_path(map)) ours.push_back(std::filesystem::path(pin).filename());
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(pin_dir, ec)) {
    const std::string name = entry.path().filename();
    if (std::find(ours.begin(), ours.end(), name) == ours.end()) std::filesystem::remove(entry.path(), ec);
  }
}

// The programs of this build and the pinned maps they use. A policy change is a map update: the
// programs are loaded (and verified, most of an apply's time) only when this build has not pinned
// them yet; the load creates or reuses the maps and pins both.
Programs programs(const std::string& pin_dir, PinnedMaps& maps) {
  const std::string prefix = "prog-" + object_tag();
  const std::string ingress_pin = pin_dir + "/" + prefix + "-ingress";
  const std::string egress_pin = pin_dir + "/" + prefix + "-egress";
  const std::string port_ingress_pin = pin_dir + "/" + prefix + "-port-ingress";
  const std::string xdp_pin = pin_dir + "/" + prefix + "-xdp";
  {
    Programs pinned{Fd(bpf_obj_get(ingress_pin.c_str())), Fd(bpf_obj_get(egress_pin.c_str())),
                    Fd(bpf_obj_get(port_ingress_pin.c_str())), Fd(bpf_obj_get(xdp_pin.c_str()))};
    if (pinned.ingress.fd >= 0 && pinned.egress.fd >= 0 && pinned.port_ingress.fd >= 0 &&
        pinned.xdp.fd >= 0 && open_pinned(pin_dir, maps) && uses_only(pinned.ingress.fd, maps) &&
        uses_only(pinned.egress.fd, maps) && uses_only(pinned.port_ingress.fd, maps) &&
        uses_only(pinned.xdp.fd, maps)) {
      pinned.reused = true;
      return pinned;
    }
  }
  bpf_object_open_opts open_opts{};
  open_opts.sz = sizeof open_opts;
  open_opts.pin_root_path = pin_dir.c_str();
  Skeleton skel(fwengine_bpf::open(&open_opts));
  if (!skel) fail("opening the BPF object", errno);
  const bool new_maps = unpin_unfit_maps(pin_dir, skel->obj);
  if (int rc = fwengine_bpf::load(skel.get())) fail("loading the BPF programs", rc);
  if (!open_pinned(pin_dir, maps)) fail("opening the maps pinned in " + pin_dir, errno);
  // The filters that run other builds' programs keep them, and their maps, alive until replaced.
  unpin_all_but_maps(pin_dir, skel->obj);
  Programs loaded{Fd(dup(bpf_program__fd(skel->progs.fwe_ingress))),
                  Fd(dup(bpf_program__fd(skel->progs.fwe_egress))),
                  Fd(dup(bpf_program__fd(skel->progs.fwe_port_in))),
                  Fd(dup(bpf_program__fd(skel->progs.fwe_xdp))), new_maps};
  if (loaded.ingress.fd < 0 || loaded.egress.fd < 0 || loaded.port_ingress.fd < 0 || loaded.xdp.fd < 0)
    fail("keeping the loaded programs", errno);
  for (const auto& [fd, pin] :
       {std::pair{loaded.ingress.fd, &ingress_pin}, std::pair{loaded.egress.fd, &egress_pin},
        std::pair{loaded.port_ingress.fd, &port_ingress_pin}, std::pair{loaded.xdp.fd, &xdp_pin}})
    if (bpf_obj_pin(fd, pin->c_str()) != 0) fail("pinning " + *pin, errno);
  return loaded;
}

void record_namespace(const PinnedMaps& m) {
  __u32 zero = 0;
  const std::uint64_t cookie = state::netns_cookie();
  update(m.netns.fd, &zero, &cookie, "the namespace's cookie");
}

// Entries per batch call: enough that the syscalls stop mattering (a generation of 10,000 rules was
// 50,000 of them), few enough that per-CPU values stay small on any machine.
constexpr std::size_t kBatch = 1024;

// Writes keys[i] -> values[i] with BPF_MAP_UPDATE_BATCH (per-CPU maps: every CPU's value in a row).
// False if the kernel refused a batch or has none for this map: then the caller writes one entry at a
// time, which names what the kernel refuses.
template <typename Key>
bool update_batch(int fd, const std::vector<Key>& keys, const void* values, std::size_t value_bytes) {
  const auto* bytes = static_cast<const unsigned char*>(values);
  for (std::size_t done = 0; done < keys.size();) {
    __u32 count = static_cast<__u32>(std::min(kBatch, keys.size() - done));
    if (bpf_map_update_batch(fd, keys.data() + done, bytes + done * value_bytes, &count, nullptr) != 0)
      return false;
    done += count;
  }
  return true;
}

// Every key of a map: kBatch at a time with BPF_MAP_LOOKUP_BATCH where the kernel has it, else one at a
// time.
template <typename Key>
std::vector<Key> keys_of(int fd) {
  std::vector<Key> keys;
  bpf_map_info info{};
  __u32 info_len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &info_len) == 0 && info.key_size == sizeof(Key)) {
    std::vector<Key> chunk(kBatch);
    std::vector<unsigned char> values(kBatch * info.value_size);
    // Where the next batch starts: a bucket (4 bytes) for hash maps, the last key for the others (LPM
    // tries), which the kernel writes whole.
    std::vector<unsigned char> position(std::max<std::size_t>(sizeof(Key), sizeof(__u32)));
    for (bool first = true;; first = false) {
      __u32 count = kBatch;
      const int rc = bpf_map_lookup_batch(fd, first ? nullptr : position.data(), position.data(),
                                          chunk.data(), values.data(), &count, nullptr);
      const int err = errno;
      keys.insert(keys.end(), chunk.begin(), chunk.begin() + count);
      if (rc == 0) continue;
      if (err == ENOENT) return keys;  // the end of the map
      break;
    }
  }
  keys.clear();
  Key key{}, next{};
  const Key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    keys.push_back(next);
    key = next;
    prev = &key;
  }
  return keys;
}

// Deletes the keys of one generation from a map whose keys start with a generation-tagged word.
template <typename Key>
void delete_generation(int fd, std::uint32_t generation, bool (*of_generation)(const Key&, std::uint32_t)) {
  std::vector<Key> doomed;
  for (const Key& key : keys_of<Key>(fd))
    if (of_generation(key, generation)) doomed.push_back(key);
  for (std::size_t done = 0; done < doomed.size();) {
    __u32 count = static_cast<__u32>(std::min(kBatch, doomed.size() - done));
    if (bpf_map_delete_batch(fd, doomed.data() + done, &count, nullptr) != 0) {
      for (; done < doomed.size(); ++done) bpf_map_delete_elem(fd, &doomed[done]);  // no batch here
      return;
    }
    done += count;
  }
}

template <typename LpmKey>
bool lpm_of_generation(const LpmKey& k, std::uint32_t generation) {
  return (ntohl(k.set_id) >> kSetIndexBits) == generation;
}
template <typename RunKey>
bool run_of_generation(const RunKey& k, std::uint32_t generation) {
  return (ntohl(k.run) >> kSetIndexBits) == generation;
}
bool iflist_of_generation(const fwe_iflist_key& k, std::uint32_t generation) {
  return k.gen == generation;
}
bool where_of_generation(const fwe_where_key& k, std::uint32_t generation) {
  return k.gen == generation;
}
bool portindex_of_generation(const fwe_portindex_key& k, std::uint32_t generation) {
  return k.gen == generation;
}

// Empties a generation in the maps keyed by it (array slots are simply overwritten by the next write).
// fwe_ports as the interfaces are now: every bridge port.
std::map<__u32, fwe_port> wanted_ports(const std::vector<Interface>& ifaces) {
  std::map<__u32, fwe_port> wanted;
  for (const auto& iface : ifaces)
    if (iface.bridge != 0)
      wanted[static_cast<__u32>(iface.index)] = {static_cast<__u32>(iface.bridge), iface.switched,
                                                 iface.up_groups};
  return wanted;
}

void write_ports(int ports_fd, const std::vector<Interface>& ifaces) {
  const auto wanted = wanted_ports(ifaces);
  for (const __u32& key : keys_of<__u32>(ports_fd))
    if (!wanted.contains(key)) bpf_map_delete_elem(ports_fd, &key);
  for (const auto& [key, port] : wanted) update(ports_fd, &key, &port, "a bridge port");
}

void clear_generation(std::uint32_t generation, const PinnedMaps& m) {
  delete_generation<fwe_lpm4_key>(m.set4.fd, generation, lpm_of_generation<fwe_lpm4_key>);
  delete_generation<fwe_lpm6_key>(m.set6.fd, generation, lpm_of_generation<fwe_lpm6_key>);
  delete_generation<fwe_run4_key>(m.runs4.fd, generation, run_of_generation<fwe_run4_key>);
  delete_generation<fwe_run6_key>(m.runs6.fd, generation, run_of_generation<fwe_run6_key>);
  delete_generation<fwe_run4_key>(m.runs4_exact.fd, generation, run_of_generation<fwe_run4_key>);
  delete_generation<fwe_run6_key>(m.runs6_exact.fd, generation, run_of_generation<fwe_run6_key>);
  delete_generation<fwe_iflist_key>(m.iflists.fd, generation, iflist_of_generation);
  delete_generation<fwe_portindex_key>(m.portindex.fd, generation, portindex_of_generation);
  delete_generation<fwe_where_key>(m.wheres.fd, generation, where_of_generation);
}

void write_sets(const Program& program, std::uint32_t generation, const PinnedMaps& m) {
  for (std::uint32_t i = 0; i < program.sets.size(); ++i) {
    const CompiledSet& set = program.sets[i];
    const __u32 id = htonl((generation << kSetIndexBits) | i);
    std::vector<fwe_lpm4_key> v4;
    std::vector<fwe_lpm6_key> v6;
    std::vector<const ir::Cidr*> v4_cidrs, v6_cidrs;  // parallel: what each key stands for
    for (const auto& cidr : set.cidrs) {
      if (cidr.addr.family == ir::Family::ipv4) {
        std::memcpy(v4.emplace_back(fwe_lpm4_key{32u + cidr.prefix, id, {}}).addr, cidr.addr.bytes.data(), 4);
        v4_cidrs.push_back(&cidr);
      } else {
        std::memcpy(v6.emplace_back(fwe_lpm6_key{32u + cidr.prefix, id, {}}).addr, cidr.addr.bytes.data(),
                    16);
        v6_cidrs.push_back(&cidr);
      }
    }
    const std::vector<__u8> present(std::max(v4.size(), v6.size()), 1);
    if (update_batch(m.set4.fd, v4, present.data(), 1) && update_batch(m.set6.fd, v6, present.data(), 1))
      continue;
    // One at a time: the element the kernel refuses is named.
    auto one_by_one = [&](int fd, const auto& keys, const std::vector<const ir::Cidr*>& cidrs) {
      for (std::size_t k = 0; k < keys.size(); ++k) {
        if (bpf_map_update_elem(fd, &keys[k], present.data(), BPF_ANY) == 0) continue;
        const int err = errno;
        // A set that fits alone may not fit beside the generation in use, so only the kernel can tell.
        fail("writing " + ir::to_string(*cidrs[k]) + " of set " + set.name + " (matched at " + set.used_at +
                 ")",
             err,
             err == ENOSPC ? "the set maps hold " + std::to_string(FWE_SET_CIDRS) +
                                 " CIDRs of each family, both generations together"
                           : "");
      }
    };
    one_by_one(m.set4.fd, v4, v4_cidrs);
    one_by_one(m.set6.fd, v6, v6_cidrs);
  }
}

// The members of the address runs, their counters at zero.
void write_runs(const Program& program, std::uint32_t generation, const PinnedMaps& m) {
  auto write = [&](int fd, auto keys, const std::vector<fwe_run_member>& members) {
    for (auto& key : keys) key.run = htonl((generation << kSetIndexBits) | ntohl(key.run));
    if (update_batch(fd, keys, members.data(), sizeof(fwe_run_member))) return;
    for (std::size_t i = 0; i < keys.size(); ++i) {  // one at a time: the member the kernel refuses is named
      if (bpf_map_update_elem(fd, &keys[i], &members[i], BPF_ANY) == 0) continue;
      const int err = errno;
      const auto where = program.wheres.find({members[i].chain_id, members[i].rule_index});
      fail("writing a member of the address run of the rule at " +
               (where == program.wheres.end() ? std::string("?") : where->second),
           err);
    }
  };
  write(m.runs4.fd, program.run4, program.run4_members);
  write(m.runs6.fd, program.run6, program.run6_members);
  write(m.runs4_exact.fd, program.exact4, program.exact4_members);
  write(m.runs6_exact.fd, program.exact6, program.exact6_members);
  std::vector<__u32> counters;
  for (std::size_t i = 0; i < program.run_members(); ++i)
    counters.push_back(generation * FWE_MAX_RUN_MEMBERS + static_cast<__u32>(i));
  const std::vector<fwe_counter> zero(counters.size());
  if (!update_batch(m.run_counters.fd, counters, zero.data(), sizeof(fwe_counter)))
    for (const auto& key : counters) update(m.run_counters.fd, &key, zero.data(), "a run member's counter");
}

// (list id, ifindex) of every interface each of the program's name lists matches.
std::set<std::tuple<__u32, __u32>> iface_memberships(const Program& program,
                                                     const std::vector<Interface>& ifaces) {
  std::set<std::tuple<__u32, __u32>> out;
  for (std::uint32_t i = 0; i < program.iface_lists.size(); ++i)
    for (const auto& iface : ifaces)
      for (const auto& pattern : program.iface_lists[i])
        if (pattern.matches(iface.name)) {
          out.emplace(i + 1, static_cast<__u32>(iface.index));
          break;
        }
  return out;
}

void write_iface_lists(const Program& program, std::uint32_t generation, const PinnedMaps& m,
                       const std::vector<Interface>& ifaces) {
  const __u8 present = 1;
  for (const auto& [list, ifindex] : iface_memberships(program, ifaces)) {
    fwe_iflist_key key{generation, list, ifindex};
    update(m.iflists.fd, &key, &present, "an interface list");
  }
}

// The interface lists of a generation in use, brought up to date with the interfaces there are: entries
// of interfaces that are gone or no longer match (a rename) go, those of new ones come. Each entry is
// one update; only the interfaces that changed meet a changing entry.
void rebind_iface_lists(const Program& program, std::uint32_t generation, const PinnedMaps& m,
                        const std::vector<Interface>& ifaces) {
  const auto wanted = iface_memberships(program, ifaces);
  std::set<__u32> live;
  for (const auto& iface : ifaces) live.insert(static_cast<__u32>(iface.index));
  std::vector<fwe_iflist_key> gone, renamed;
  std::set<std::tuple<__u32, __u32>> present;
  fwe_iflist_key key{}, next{};
  for (const fwe_iflist_key* at = nullptr; bpf_map_get_next_key(m.iflists.fd, at, &next) == 0; at = &key) {
    key = next;
    if (key.gen != generation) continue;
    if (wanted.contains({key.list_id, key.ifindex}))
      present.emplace(key.list_id, key.ifindex);
    else
      (live.contains(key.ifindex) ? renamed : gone).push_back(key);
  }
  // The entries of interfaces that are gone first (no packet uses them), so that they make room for
  // the new ones in the shared map; those of a renamed interface last.
  for (const auto& stale : gone) bpf_map_delete_elem(m.iflists.fd, &stale);
  const __u8 member = 1;
  for (const auto& [list, ifindex] : wanted)
    if (!present.contains({list, ifindex})) {
      fwe_iflist_key add{generation, list, ifindex};
      update(m.iflists.fd, &add, &member, "an interface list");
    }
  for (const auto& stale : renamed) bpf_map_delete_elem(m.iflists.fd, &stale);
}

void write_tables(const Program& program, std::uint32_t generation, const PinnedMaps& m,
                  const std::string& ir_hash) {
  for (std::uint32_t i = 0; i < program.port_bitmaps.size(); ++i) {
    __u32 key = generation * FWE_MAX_PORTSETS + i;
    update(m.portsets.fd, &key, program.port_bitmaps[i].data(), "a port set");
  }
  for (std::uint32_t i = 0; i < program.chains.size(); ++i) {
    __u32 key = generation * FWE_MAX_CHAINS + i;
    char name[FWE_NAME_LEN] = {};
    std::strncpy(name, program.chains[i].c_str(), sizeof name - 1);
    update(m.chains.fd, &key, name, "a chain name");
  }
  for (std::uint32_t i = 0; i < program.logs.size(); ++i) {
    __u32 key = generation * FWE_MAX_LOGS + i;
    update(m.logs.fd, &key, &program.logs[i], "a log prefix");
  }
  std::vector<fwe_portindex_key> index_keys = program.port_index;
  for (auto& key : index_keys) key.gen = generation;
  if (!update_batch(m.portindex.fd, index_keys, program.port_index_first.data(), sizeof(__u32)))
    for (std::size_t i = 0; i < index_keys.size(); ++i)
      update(m.portindex.fd, &index_keys[i], &program.port_index_first[i], "a port index");
  std::vector<fwe_where_key> where_keys;
  std::vector<fwe_where> wheres;
  for (const auto& [rule, text] : program.wheres) {
    where_keys.push_back({generation, rule.first, rule.second});
    fwe_where& where = wheres.emplace_back();
    std::strncpy(where.text, text.c_str(), sizeof where.text - 1);
  }
  if (!update_batch(m.wheres.fd, where_keys, wheres.data(), sizeof(fwe_where)))
    for (std::size_t i = 0; i < where_keys.size(); ++i)
      update(m.wheres.fd, &where_keys[i], &wheres[i], "a rule's origin");

  const auto cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) fail("counting CPUs", cpus);
  std::vector<__u32> keys;
  std::vector<fwe_rule> rules;
  for (std::uint32_t pc = 0; pc < program.rules.size(); ++pc) {
    keys.push_back(generation * FWE_MAX_RULES + pc);
    rules.push_back(for_generation(program.rules[pc], generation));
  }
  if (!update_batch(m.rules.fd, keys, rules.data(), sizeof(fwe_rule)))
    for (std::size_t i = 0; i < keys.size(); ++i) update(m.rules.fd, &keys[i], &rules[i], "a rule");
  // Counters start at zero: one fwe_counter per CPU and rule.
  const std::size_t per_rule = static_cast<std::size_t>(cpus) * sizeof(fwe_counter);
  const std::vector<fwe_counter> zero(std::min(keys.size(), kBatch) * static_cast<std::size_t>(cpus));
  for (std::size_t done = 0; done < keys.size(); done += kBatch) {
    const std::vector<__u32> chunk(
        keys.begin() + static_cast<std::ptrdiff_t>(done),
        keys.begin() + static_cast<std::ptrdiff_t>(std::min(keys.size(), done + kBatch)));
    if (!update_batch(m.counters.fd, chunk, zero.data(), per_rule))
      for (const auto& key : chunk) update(m.counters.fd, &key, zero.data(), "a counter");
  }
  const fwe_limit full{};  // last_ns 0: never used, so full (under_limit)
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (rules[i].limit_cost_ns) update(m.limits.fd, &keys[i], &full, "a rate limit");
  for (std::uint32_t s = 0; s < FWE_STAGE_COUNT; ++s) {
    __u32 key = generation * FWE_STAGE_COUNT + s;
    update(m.stages.fd, &key, &program.stages[s], "a stage");
  }
  fwe_meta meta{};
  std::strncpy(meta.ir_hash, ir_hash.c_str(), sizeof meta.ir_hash - 1);
  update(m.meta.fd, &generation, &meta, "the IR hash");
}

fwe_config read_config(const PinnedMaps& m) {
  __u32 zero = 0;
  fwe_config config{};
  bpf_map_lookup_elem(m.config.fd, &zero, &config);
  return config;
}

}  // namespace

// The link-local groups (01:80:c2:00:00:0g, bit g) whose frames a bridge hands up on the port they came
// in on, as br_handle_frame decides: each group the bridge and the port do not forward, but the Bridge
// Group Address (0) only while STP runs, and never MAC Control (1), which the bridge drops. A bridge
// that filters 802.1ad VLANs must forward more of them, though not the one its STP uses.
std::uint32_t groups_up_on_port(const netlink::BridgeOptions& bridge, std::uint16_t port_group_fwd_mask) {
  constexpr std::uint16_t kEthernet8021ad = 0x88a8, kForwardedFor8021ad = 0xb801;
  const std::uint16_t required =
      bridge.vlan_filtering && bridge.vlan_protocol == kEthernet8021ad
          ? static_cast<std::uint16_t>(kForwardedFor8021ad & ~(1u << (bridge.group_address_last & 0x0f)))
          : 0;
  std::uint32_t up = 0;
  for (unsigned group = 0; group < 16; ++group) {
    const std::uint16_t forwarded = required | port_group_fwd_mask | (group == 0 ? 0 : bridge.group_fwd_mask);
    const bool stays = group == 0 ? bridge.stp : group != 1;
    if (stays && !(forwarded & (1u << group))) up |= 1u << group;
  }
  return up;
}

// By the name fwengine's state in /run/fwengine goes by: without --netns, that of the namespace the
// process is in, so two namespaces that share a bpffs (nsenter, a container given the host's
// /sys/fs/bpf) keep apart.
std::string pin_dir_for(const std::string& netns) {
  return bpffs_root() + "/fwengine/" + std::filesystem::path(state::run_dir(netns)).filename().string();
}

Kernel::Kernel(const std::string& netns) : pin_dir_(pin_dir_for(netns)) {
  libbpf_set_print(collect_libbpf_output);
}

namespace {
// The kernel's route lookup from BPF answers only where forwarding is on for the device it is given (lo,
// for the reverse path): without it the rpf check could decide nothing, so the ruleset is refused. A
// kernel without IPv6 has no IPv6 setting (and no IPv6 packet to check).
void require_lo_forwarding() {
  const bool ipv6 = netlink::kernel_has_ipv6();
  std::vector<const char*> paths{"/proc/sys/net/ipv4/conf/lo/forwarding"};
  if (ipv6) paths.push_back("/proc/sys/net/ipv6/conf/lo/forwarding");
  for (const char* path : paths) {
    std::ifstream file(path);
    int value = 0;
    if (!(file >> value) || value == 0)
      throw RuntimeError(std::string("ebpf: the rpf check needs forwarding on for lo, and ") + path +
                         " is not 1; nothing was changed\n  set net.ipv4.conf.lo.forwarding=1" +
                         (ipv6 ? " and net.ipv6.conf.lo.forwarding=1" : "") +
                         " (lo forwards nothing), or choose --backend nft");
  }
}
}  // namespace

void Kernel::apply(const Program& program, const std::string& ir_hash, bool rebind) {
  if (program.uses_rpf) require_lo_forwarding();
  libbpf_log().clear();
  ensure_bpffs(pin_dir_);
  std::error_code ec;
  // A namespace's pins left by one deleted under the same name hold nothing of this one's.
  if (pins_of_another_namespace(pin_dir_)) std::filesystem::remove_all(pin_dir_, ec);
  std::filesystem::create_directories(pin_dir_, ec);
  if (ec) fail("creating " + pin_dir_, ec.value());

  PinnedMaps maps;
  const Programs progs = programs(pin_dir_, maps);
  record_namespace(maps);
  fwe_config config = read_config(maps);
  const std::uint32_t generation = (config.active_gen & 1) ^ 1;
  const auto ifaces = interfaces();
  forget_gone_interfaces(maps.hooks.fd, ifaces);
  forget_gone_interfaces(maps.xdp_links.fd, ifaces);
  for (const auto& iface : ifaces)
    if (!iface.framed && iface.up)
      std::cerr << "fwengine: warning: ebpf: interface " << iface.name
                << " has no Ethernet header (an IP tunnel, VPN or PPP link): its packets are not "
                   "judged; choose --backend nft or iptables to filter it\n";
  // The interfaces netfilter names first, then the ports, then a port put under a master since the last
  // apply loses what no longer belongs on it: its master is filtered by the time a port gives up
  // fwe_ingress (for fwe_port_in, or nothing).
  auto attach_all = [&] {
    write_ports(maps.ports.fd, ifaces);
    for (const bool ports : {false, true})
      for (const auto& iface : ifaces)
        for (const auto point : kHooks)
          if (const char* program = program_for(iface, point); program && iface.stacked == ports)
            attach(iface.index, iface.name, point, progs.fd_of(program), program, maps.hooks.fd);
    for (const auto& iface : ifaces)
      for (const auto point : kHooks)
        if (!program_for(iface, point)) detach(iface, point);
    for (const auto& iface : ifaces) {
      if (!xdp_named(iface, program.xdp_interfaces)) {
        remove_xdp(iface, maps.xdp_links.fd);
        continue;
      }
      std::string why = why_no_xdp(iface);
      if (why.empty()) why = place_xdp(iface, progs.xdp.fd, maps.xdp_links.fd);
      if (why.empty()) continue;
      remove_xdp(iface, maps.xdp_links.fd);
      std::cerr << "fwengine: note: ebpf: " << kXdpName << " is not on " << iface.name << ": " << why
                << "; fwe_ingress judges all its packets\n";
    }
  };
  // The generation in use already holds this IR, written for the programs in place: it stays, with its
  // counters and token buckets. The interface lists come first, so a new interface's programs find
  // its entries from their first packet.
  if (rebind && progs.reused) {
    const std::uint32_t active = config.active_gen & 1;
    fwe_meta meta{};
    if (bpf_map_lookup_elem(maps.meta.fd, &active, &meta) == 0 &&
        std::string(meta.ir_hash, strnlen(meta.ir_hash, sizeof meta.ir_hash)) == ir_hash) {
      rebind_iface_lists(program, active, maps, ifaces);
      attach_all();
      return;
    }
  }
  // Maps whose generation in use holds no ruleset are read by no program for one (new maps, or those an
  // apply left when it stopped before its flip): the new generation is made current before any program
  // is attached. On maps in effect the programs come first: until the flip they read the generation
  // still in use, and a program put on them early would let everything through.
  fwe_meta in_effect{};
  const __u32 active = config.active_gen & 1;
  const bool maps_in_effect = !progs.new_maps &&
                              bpf_map_lookup_elem(maps.meta.fd, &active, &in_effect) == 0 &&
                              in_effect.ir_hash[0] != 0;
  clear_generation(generation, maps);
  // Two writes, so that a packet reading the config between them finds its generation's rpf bit right:
  // the new generation's bit first, then the flip.
  auto flip = [&] {
    __u32 zero = 0;
    config.rpf_gens = generation_bits(config.rpf_gens, generation, program.uses_rpf);
    config.xdp_gens = generation_bits(config.xdp_gens, generation, program.xdp);
    update(maps.config.fd, &zero, &config, "the rpf and xdp generations");
    config.active_gen = generation;
    update(maps.config.fd, &zero, &config, "the active generation");
  };
  bool attaching = false;
  try {
    write_sets(program, generation, maps);
    write_runs(program, generation, maps);
    write_iface_lists(program, generation, maps, ifaces);
    write_tables(program, generation, maps, ir_hash);
    if (!maps_in_effect) flip();
    attaching = true;
    attach_all();
  } catch (RuntimeError& e) {
    if (!maps_in_effect && attaching) {
      e.msg +=
          "\n  the interfaces attached so far run the new ruleset, the others the previous one; "
          "apply again";
      throw;
    }
    // No flip yet: packets and status still read the old generation. Free what the new one took.
    clear_generation(generation, maps);
    e.msg += "\n  the ruleset in effect is unchanged";
    throw;
  }
  if (maps_in_effect) flip();
}

KernelState Kernel::read_back() {
  KernelState state;
  PinnedMaps m;
  if (!open_pinned(pin_dir_, m)) return state;
  if (pins_of_another_namespace(pin_dir_)) {
    state.drift.push_back("the pins in " + pin_dir_ +
                          " were left by a namespace of this name that is gone; apply or flush removes them");
    return state;
  }
  const fwe_config config = read_config(m);
  const std::uint32_t generation = config.active_gen & 1;
  fwe_meta meta{};
  if (bpf_map_lookup_elem(m.meta.fd, &generation, &meta) != 0 || meta.ir_hash[0] == 0) return state;
  state.present = true;
  state.ir_hash = std::string(meta.ir_hash, strnlen(meta.ir_hash, sizeof meta.ir_hash));

  // In the form of Program::listing: sets, address runs, then rules.
  std::ostringstream text;
  const auto cpus = libbpf_num_possible_cpus();
  std::vector<fwe_counter> per_cpu(static_cast<std::size_t>(cpus > 0 ? cpus : 1));
  std::map<std::pair<std::string, std::int32_t>, RuleCounter> counters;
  // The counter of a policy rule, named by its chain and origin the first time.
  auto counter_of = [&](std::uint32_t chain_id, std::int32_t rule_index) -> RuleCounter& {
    __u32 chain_key = generation * FWE_MAX_CHAINS + chain_id;
    char name[FWE_NAME_LEN] = {};
    bpf_map_lookup_elem(m.chains.fd, &chain_key, name);
    const std::string chain(name, strnlen(name, sizeof name));
    RuleCounter& c = counters[{chain, rule_index}];
    if (c.chain.empty()) {
      c.chain = chain;
      c.rule = rule_index;
      fwe_where_key where_key{generation, chain_id, rule_index};
      fwe_where where{};
      if (bpf_map_lookup_elem(m.wheres.fd, &where_key, &where) == 0)
        c.where = std::string(where.text, strnlen(where.text, sizeof where.text));
    }
    return c;
  };
  std::map<std::uint32_t, std::pair<std::size_t, std::uint64_t>> sets;  // index: members, digest sum
  auto add_set_members = [&](int fd, auto key_type, ir::Family family) {
    using Key = decltype(key_type);
    for (const Key& key : keys_of<Key>(fd)) {
      if (!lpm_of_generation(key, generation)) continue;
      ir::Cidr cidr;
      cidr.addr.family = family;
      std::memcpy(cidr.addr.bytes.data(), key.addr, sizeof key.addr);
      cidr.prefix = static_cast<std::uint8_t>(key.prefixlen - 32);
      auto& [count, sum] = sets[ntohl(key.set_id) & ((1u << kSetIndexBits) - 1)];
      ++count;
      sum += listing::cidr(cidr);
    }
  };
  add_set_members(m.set4.fd, fwe_lpm4_key{}, ir::Family::ipv4);
  add_set_members(m.set6.fd, fwe_lpm6_key{}, ir::Family::ipv6);
  for (const auto& [index, members] : sets) text << listing::set_line(members.first, members.second) << '\n';
  auto set_digest = [&](std::uint32_t index) {
    auto it = sets.find(index);
    return it == sets.end() ? std::uint64_t{0} : it->second.second;
  };
  std::map<std::uint16_t, std::uint64_t> bitmaps;
  auto bitmap_digest = [&](std::uint16_t index) {
    if (auto it = bitmaps.find(index); it != bitmaps.end()) return it->second;
    std::vector<std::uint8_t> bits(FWE_PORTSET_BYTES);
    __u32 key = generation * FWE_MAX_PORTSETS + index;
    if (bpf_map_lookup_elem(m.portsets.fd, &key, bits.data()) != 0) bits.clear();
    return bitmaps[index] = listing::digest(listing::kSeed, bits.data(), bits.size());
  };
  auto log_entry = [&](unsigned index) {
    fwe_log_rule entry{};
    __u32 key = generation * FWE_MAX_LOGS + index;
    if (index >= FWE_MAX_LOGS || bpf_map_lookup_elem(m.logs.fd, &key, &entry) != 0) entry = {};
    return entry;
  };
  std::string rule_lines;
  for (std::uint32_t s = 0; s < FWE_STAGE_COUNT; ++s) {
    __u32 key = generation * FWE_STAGE_COUNT + s;
    fwe_stage_span span{};
    if (bpf_map_lookup_elem(m.stages.fd, &key, &span) != 0 || span.count == 0) continue;
    std::string lines;
    std::uint64_t in_order = listing::kSeed;
    auto add_line = [&](const std::string& line) {
      in_order = listing::order(in_order, listing::digest(listing::kSeed, line.data(), line.size()));
      lines += line + '\n';
    };
    for (std::uint32_t pc = span.start; pc < span.start + span.count && pc < FWE_MAX_RULES; ++pc) {
      __u32 rule_key = generation * FWE_MAX_RULES + pc;
      fwe_rule rule{};
      if (bpf_map_lookup_elem(m.rules.fd, &rule_key, &rule) != 0) continue;
      if (rule.rule_index < 0) {
        add_line(listing::rule_line(static_cast<ir::Stage>(s), {}, rule.rule_index,
                                    listing::rule(rule, bitmap_digest, set_digest, log_entry)));
        continue;
      }
      RuleCounter& c = counter_of(rule.chain_id, rule.rule_index);
      add_line(listing::rule_line(static_cast<ir::Stage>(s), c.chain, rule.rule_index,
                                  listing::rule(rule, bitmap_digest, set_digest, log_entry)));
      if (bpf_map_lookup_elem(m.counters.fd, &rule_key, per_cpu.data()) != 0) continue;
      for (const auto& cpu : per_cpu) {
        c.packets += cpu.packets;
        c.bytes += cpu.bytes;
      }
    }
    rule_lines += listing::order_line(static_cast<ir::Stage>(s), span.count, in_order) + '\n' + lines;
  }
  // Members of address runs count for their source rules.
  std::size_t run_members = 0;
  std::uint64_t runs_digest = 0;
  auto add_members = [&](int fd, auto key_type, ir::Family family, bool exact) {
    using Key = decltype(key_type);
    for (const Key& key : keys_of<Key>(fd)) {
      fwe_run_member member{};
      if (!run_of_generation(key, generation) || bpf_map_lookup_elem(fd, &key, &member) != 0) continue;
      RuleCounter& c = counter_of(member.chain_id, member.rule_index);
      ir::Cidr cidr;
      cidr.addr.family = family;
      std::memcpy(cidr.addr.bytes.data(), key.addr, sizeof key.addr);
      cidr.prefix = static_cast<std::uint8_t>(key.prefixlen - 64);
      ++run_members;
      runs_digest += listing::run_member(exact, ntohl(key.run) & ((1u << kSetIndexBits) - 1), key.proto,
                                         key.port, cidr, c.chain, member.rule_index);
      __u32 counter_key = generation * FWE_MAX_RUN_MEMBERS + member.counter;
      fwe_counter hits{};
      if (bpf_map_lookup_elem(m.run_counters.fd, &counter_key, &hits) != 0) continue;
      c.packets += hits.packets;
      c.bytes += hits.bytes;
    }
  };
  add_members(m.runs4.fd, fwe_run4_key{}, ir::Family::ipv4, false);
  add_members(m.runs6.fd, fwe_run6_key{}, ir::Family::ipv6, false);
  add_members(m.runs4_exact.fd, fwe_run4_key{}, ir::Family::ipv4, true);
  add_members(m.runs6_exact.fd, fwe_run6_key{}, ir::Family::ipv6, true);
  if (run_members > 0) text << listing::runs_line(run_members, runs_digest) << '\n';
  text << rule_lines;
  if ((config.xdp_gens >> generation) & 1) text << listing::kXdpLine << '\n';
  for (auto& [key, counter] : counters) state.counters.push_back(std::move(counter));
  const auto ifaces = interfaces();
  const auto wanted = wanted_ports(ifaces);
  std::map<__u32, fwe_port> ports;
  for (const __u32& key : keys_of<__u32>(m.ports.fd))
    if (fwe_port port{}; bpf_map_lookup_elem(m.ports.fd, &key, &port) == 0) ports[key] = port;
  const auto same = [](const auto& a, const auto& b) {
    return a.first == b.first && a.second.bridge == b.second.bridge &&
           a.second.families == b.second.families && a.second.up_groups == b.second.up_groups;
  };
  if (!std::equal(ports.begin(), ports.end(), wanted.begin(), wanted.end(), same))
    state.drift.push_back(
        "bridge ports: the bridges, their options or br_netfilter's settings changed since the last apply, "
        "so frames switched between ports or handed up on one are not judged as nft would judge them; "
        "apply again");
  for (const auto& iface : ifaces) {
    std::string name;
    for (const auto point : kHooks) {
      name.clear();
      const bool attached = query_filter(iface.index, point, &name) != 0 && is_ours(name);
      const char* belongs = program_for(iface, point);
      if (attached && name == (belongs ? belongs : "")) continue;
      if (attached && iface.stacked)
        state.drift.push_back("interface " + iface.name + ": " + name +
                              " is attached to a port, which is judged as itself instead of as its master; "
                              "apply again");
      else if (attached)
        state.drift.push_back("interface " + iface.name + ": " + name + " is attached where " +
                              (belongs ? belongs : "none of ours") + " belongs; apply again");
      else if (belongs)
        state.drift.push_back("interface " + iface.name + ": " + belongs + " is not attached");
    }
    const __u32 key = static_cast<__u32>(iface.index);
    fwe_xdp_link link{};
    const bool placed = bpf_map_lookup_elem(m.xdp_links.fd, &key, &link) == 0;
    if (placed != (iface.xdp_id != 0 && program_name(iface.xdp_id) == kXdpName))
      state.drift.push_back("interface " + iface.name + ": " + kXdpName +
                            (placed ? " is gone" : " is attached") + " since the last apply; apply again");
    else if (const std::string why = why_no_xdp(iface); placed && !why.empty())
      state.drift.push_back("interface " + iface.name + ": " + kXdpName + " is on it, but " + why +
                            " since the last apply; apply again");
    else if (placed && std::memcmp(link.mac, iface.mac.data(), sizeof link.mac) != 0)
      state.drift.push_back(
          "interface " + iface.name + ": its MAC address changed since the last apply, so " + kXdpName +
          " judges frames to the old one and leaves those to the new one to tc; " + "apply again");
  }
  state.text = text.str();
  return state;
}

void Kernel::flush() {
  // Alone, not with the other maps: after an upgrade and before its first apply, the pins are of another
  // layout, and the qdiscs this records are still fwengine's to remove. Those of a namespace that is
  // gone are not this one's: its interfaces with the same indexes hold none of ours.
  const Fd hooks(get_pinned(pin_dir_, "fwe_hooks"));
  const bool ours = !pins_of_another_namespace(pin_dir_);
  for (const auto& iface : ours ? interfaces() : std::vector<Interface>{}) {
    for (const auto point : kHooks) detach(iface, point);
    remove_xdp(iface, -1);
    __u32 key = static_cast<__u32>(iface.index);
    __u8 created = 0;
    // A clsact fwengine made stays while another program's filters are on it (added after ours).
    if (hooks.fd >= 0 && bpf_map_lookup_elem(hooks.fd, &key, &created) == 0 && created &&
        !clsact_holds_filters(iface.index)) {
      bpf_tc_hook hook =
          hook_of(iface.index, static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
      bpf_tc_hook_destroy(&hook);
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(pin_dir_, ec);
  if (ec) fail("unpinning " + pin_dir_, ec.value());
  std::filesystem::remove(std::filesystem::path(pin_dir_).parent_path(),
                          ec);  // only if no other namespace is left
}

int Kernel::attached_program(int ifindex, bool ingress) {
  std::string name;
  __u32 id = query_filter(ifindex, ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS, &name);
  if (id == 0 || (ingress ? name != kIngressName && name != kPortIngressName : name != kEgressName))
    return -1;
  return bpf_prog_get_fd_by_id(id);
}

int Kernel::attached_xdp(int ifindex) {
  __u32 id = 0;
  if (bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &id) != 0 || id == 0) return -1;
  return program_name(id) == kXdpName ? bpf_prog_get_fd_by_id(id) : -1;
}

}  // namespace fwe::ebpf
