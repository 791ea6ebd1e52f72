// fwengine/netlink.hpp - route-netlink dumps and link messages, for the daemon and the backends.
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace fwe::netlink {

// How a dump ended. error: an errno (the socket's, or the kernel's answer); 0 once read to the end.
// interrupted: a change came while the kernel dumped (NLM_F_DUMP_INTR), so the answer may miss some.
struct DumpEnd {
  int error = 0;
  bool interrupted = false;
  bool complete() const { return error == 0 && !interrupted; }
};

// Asks the current namespace's NETLINK_ROUTE for a dump of `type` (RTM_GETLINK, RTM_GETTFILTER, ...)
// with the given family header, and hands each message of the answer to `each` until NLMSG_DONE or an
// error.
DumpEnd dump_route(std::uint16_t type, const void* family_header, std::size_t size,
                   const std::function<void(const nlmsghdr&)>& each);
template <class FamilyHeader>
DumpEnd dump_route(std::uint16_t type, const FamilyHeader& header,
                   const std::function<void(const nlmsghdr&)>& each) {
  return dump_route(type, &header, sizeof header, each);
}

// A bridge's own options, as far as they decide what reaches netfilter and what the bridge hands up on a
// port.
struct BridgeOptions {
  bool calls_iptables = false, calls_ip6tables = false;  // nf_call_iptables, nf_call_ip6tables
  bool stp = false;                                      // STP on (in the kernel or in user space)
  std::uint16_t group_fwd_mask = 0;                      // link-local groups it forwards
  bool vlan_filtering = false;
  std::uint16_t vlan_protocol = 0;      // ETH_P_8021Q or ETH_P_8021AD
  std::uint8_t group_address_last = 0;  // the last byte of its STP group address (01:80:c2:00:00:00)
  bool operator==(const BridgeOptions&) const = default;
};

// An interface as an RTM_NEWLINK or RTM_DELLINK message (a dump's answer, or news) tells of it.
struct Link {
  int index = 0;
  std::string name;
  int master = 0;        // 0: none
  int lower = 0;         // IFLA_LINK in this namespace (a VLAN's or macvlan's device, a veth's peer); 0: none
  std::string address;   // IFLA_ADDRESS, its bytes (Ethernet: the MAC address)
  std::string kind;      // IFLA_INFO_KIND ("bridge", "veth", ...); empty where the kernel gives none
  BridgeOptions bridge;  // a bridge's; defaults for anything else
  // A bridge port's own option: link-local groups it forwards.
  std::uint16_t port_group_fwd_mask = 0;
  bool operator==(const Link&) const = default;
};
// nullopt for other messages, and for those of family AF_BRIDGE that the bridge module sends about its
// ports (and itself, with its own index as master).
std::optional<Link> link_of(const nlmsghdr& message);

// Whether the kernel has IPv6 at all. Booted with ipv6.disable=1 (or built without IPv6) it never
// registers the family: an AF_INET6 socket fails with EAFNOSUPPORT, ip6tables cannot start, the ipv6
// module's parameter `disable` reads 1 (or there is no /proc/sys/net/ipv6/conf), and no IPv6 packet
// reaches a hook. A process that a sandbox keeps from IPv6 sockets on a kernel with IPv6 is told it has
// IPv6 (and ip6tables fails there, loudly). Asked once.
bool kernel_has_ipv6();

}  // namespace fwe::netlink
