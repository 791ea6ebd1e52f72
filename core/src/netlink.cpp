// netlink.cpp - route-netlink dumps and link messages.
#include "fwengine/netlink.hpp"

#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace fwe::netlink {

namespace {
struct Socket {
  int fd;
  ~Socket() {
    if (fd >= 0) close(fd);
  }
};

std::string attribute_text(const rtattr* a) {
  const auto* text = static_cast<const char*>(RTA_DATA(a));
  return {text, strnlen(text, RTA_PAYLOAD(a))};
}

template <typename Number>
Number attribute_number(const rtattr* a) {
  Number value{};
  if (RTA_PAYLOAD(a) >= sizeof value) std::memcpy(&value, RTA_DATA(a), sizeof value);
  return value;
}

// A bridge's own options, in IFLA_INFO_DATA.
BridgeOptions bridge_options(const rtattr* data) {
  BridgeOptions options;
  auto length = static_cast<int>(RTA_PAYLOAD(data));
  for (auto* d = static_cast<const rtattr*>(RTA_DATA(data)); RTA_OK(d, length); d = RTA_NEXT(d, length)) {
    if (d->rta_type == IFLA_BR_NF_CALL_IPTABLES)
      options.calls_iptables = attribute_number<std::uint8_t>(d) != 0;
    if (d->rta_type == IFLA_BR_NF_CALL_IP6TABLES)
      options.calls_ip6tables = attribute_number<std::uint8_t>(d) != 0;
    if (d->rta_type == IFLA_BR_STP_STATE) options.stp = attribute_number<std::uint32_t>(d) != 0;
    if (d->rta_type == IFLA_BR_GROUP_FWD_MASK) options.group_fwd_mask = attribute_number<std::uint16_t>(d);
    if (d->rta_type == IFLA_BR_VLAN_FILTERING)
      options.vlan_filtering = attribute_number<std::uint8_t>(d) != 0;
    if (d->rta_type == IFLA_BR_VLAN_PROTOCOL)
      options.vlan_protocol = ntohs(attribute_number<std::uint16_t>(d));
    if (d->rta_type == IFLA_BR_GROUP_ADDR && RTA_PAYLOAD(d) >= 6)
      options.group_address_last = static_cast<const std::uint8_t*>(RTA_DATA(d))[5];
  }
  return options;
}

// A bridge port's group_fwd_mask, in IFLA_INFO_SLAVE_DATA.
std::uint16_t port_group_fwd_mask(const rtattr* data) {
  auto length = static_cast<int>(RTA_PAYLOAD(data));
  for (auto* d = static_cast<const rtattr*>(RTA_DATA(data)); RTA_OK(d, length); d = RTA_NEXT(d, length))
    if (d->rta_type == IFLA_BRPORT_GROUP_FWD_MASK) return attribute_number<std::uint16_t>(d);
  return 0;
}
}  // namespace

DumpEnd dump_route(std::uint16_t type, const void* family_header, std::size_t size,
                   const std::function<void(const nlmsghdr&)>& each) {
  const Socket nl{socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)};
  if (nl.fd < 0) return {errno};
  std::vector<char> request(NLMSG_SPACE(size));
  auto* header = reinterpret_cast<nlmsghdr*>(request.data());
  header->nlmsg_len = static_cast<std::uint32_t>(NLMSG_LENGTH(size));
  header->nlmsg_type = type;
  header->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  std::memcpy(NLMSG_DATA(header), family_header, size);
  if (send(nl.fd, request.data(), header->nlmsg_len, 0) != static_cast<ssize_t>(header->nlmsg_len))
    return {errno != 0 ? errno : EIO};
  DumpEnd end;
  // The kernel sizes a dump's datagrams to the reader's buffer up to 32 KiB; MSG_TRUNC tells of a cut one.
  std::vector<char> buf(65536);
  while (true) {
    ssize_t n = recv(nl.fd, buf.data(), buf.size(), MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return {n < 0 ? errno : EIO, end.interrupted};
    if (n > static_cast<ssize_t>(buf.size())) return {EMSGSIZE, end.interrupted};
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
      end.interrupted = end.interrupted || (h->nlmsg_flags & NLM_F_DUMP_INTR);
      if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type == NLMSG_DONE) {
        // Both carry the kernel's answer: an nlmsgerr, or for NLMSG_DONE an int (0 or -errno).
        int answer = 0;
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof answer))
          std::memcpy(&answer, NLMSG_DATA(h), sizeof answer);
        else if (h->nlmsg_type == NLMSG_ERROR)
          answer = -EIO;
        end.error = -answer;
        return end;
      }
      each(*h);
    }
  }
}

std::optional<Link> link_of(const nlmsghdr& message) {
  if ((message.nlmsg_type != RTM_NEWLINK && message.nlmsg_type != RTM_DELLINK) ||
      message.nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg)))
    return std::nullopt;
  const auto* info = static_cast<const ifinfomsg*>(NLMSG_DATA(&message));
  if (info->ifi_family != AF_UNSPEC) return std::nullopt;
  // Options are read before the kinds that give them meaning are known.
  Link link;
  BridgeOptions bridge;
  std::uint16_t port_mask = 0;
  std::string slave_kind;
  int lower = 0;
  bool lower_elsewhere = false;
  link.index = info->ifi_index;
  auto length = static_cast<int>(IFLA_PAYLOAD(&message));
  for (auto* a = IFLA_RTA(info); RTA_OK(a, length); a = RTA_NEXT(a, length)) {
    if (a->rta_type == IFLA_IFNAME) {
      link.name = attribute_text(a);
    } else if (a->rta_type == IFLA_MASTER && RTA_PAYLOAD(a) >= sizeof(std::uint32_t)) {
      std::uint32_t index = 0;
      std::memcpy(&index, RTA_DATA(a), sizeof index);
      link.master = static_cast<int>(index);
    } else if (a->rta_type == IFLA_LINK && RTA_PAYLOAD(a) >= sizeof(std::uint32_t)) {
      std::uint32_t index = 0;
      std::memcpy(&index, RTA_DATA(a), sizeof index);
      lower = static_cast<int>(index);
    } else if (a->rta_type == IFLA_LINK_NETNSID) {
      lower_elsewhere = true;
    } else if (a->rta_type == IFLA_ADDRESS) {
      link.address.assign(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a));
    } else if (a->rta_type == IFLA_LINKINFO) {
      auto info_length = static_cast<int>(RTA_PAYLOAD(a));
      for (auto* i = static_cast<const rtattr*>(RTA_DATA(a)); RTA_OK(i, info_length);
           i = RTA_NEXT(i, info_length)) {
        if (i->rta_type == IFLA_INFO_KIND) link.kind = attribute_text(i);
        if (i->rta_type == IFLA_INFO_SLAVE_KIND) slave_kind = attribute_text(i);
        if (i->rta_type == IFLA_INFO_DATA) bridge = bridge_options(i);
        if (i->rta_type == IFLA_INFO_SLAVE_DATA) port_mask = port_group_fwd_mask(i);
      }
    }
  }
  // Only a bridge's IFLA_INFO_DATA holds these numbers as bridge options, and only a bridge port's
  // IFLA_INFO_SLAVE_DATA as port options.
  if (link.kind == "bridge") link.bridge = bridge;
  if (slave_kind == "bridge") link.port_group_fwd_mask = port_mask;
  if (!lower_elsewhere && lower != link.index) link.lower = lower;
  return link;
}

bool kernel_has_ipv6() {
  static const bool has = [] {
    const int sock = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock >= 0) close(sock);
    if (sock >= 0 || errno != EAFNOSUPPORT) return true;
    // A sandbox refuses the family the same way (systemd's RestrictAddressFamilies=, a seccomp
    // profile) on a kernel that has IPv6. The ipv6 module's own parameter says which (1: booted with
    // ipv6.disable=1); without it (a kernel built without IPv6, or /sys hidden), a kernel without IPv6
    // is one whose visible /proc/sys/net lacks IPv6's sysctls.
    if (std::FILE* disable = std::fopen("/sys/module/ipv6/parameters/disable", "re")) {
      const int flag = std::fgetc(disable);
      std::fclose(disable);
      if (flag == '0' || flag == '1') return flag == '0';
    }
    return access("/proc/sys/net", F_OK) != 0 || access("/proc/sys/net/ipv6/conf", F_OK) == 0;
  }();
  return has;
}

}  // namespace fwe::netlink
