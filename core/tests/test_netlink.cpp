// Link messages as the kernel writes them, read by netlink::link_of; one real dump of this namespace.
#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "fwengine/netlink.hpp"

namespace {

// Builds one netlink message of an ifinfomsg and nested attributes, as the kernel lays them out.
class Message {
 public:
  Message(std::uint16_t type, unsigned char family, int index) : used_(NLMSG_SPACE(sizeof(ifinfomsg))) {
    auto* message = reinterpret_cast<nlmsghdr*>(bytes_.data());
    message->nlmsg_type = type;
    auto* info = static_cast<ifinfomsg*>(NLMSG_DATA(message));
    info->ifi_family = family;
    info->ifi_index = index;
    finish();
  }
  Message& text(std::uint16_t type, const std::string& value) {
    return add(type, value.c_str(), value.size() + 1);
  }
  Message& u32(std::uint16_t type, std::uint32_t value) { return add(type, &value, sizeof value); }
  Message& u16(std::uint16_t type, std::uint16_t value) { return add(type, &value, sizeof value); }
  Message& u8(std::uint16_t type, std::uint8_t value) { return add(type, &value, sizeof value); }
  Message& add_bytes(std::uint16_t type, const void* data, std::size_t size) { return add(type, data, size); }
  // Attributes added until close() go inside this one.
  Message& open(std::uint16_t type) {
    open_.push_back(used_);
    return add(type, nullptr, 0);
  }
  Message& close() {
    auto* nest = reinterpret_cast<rtattr*>(bytes_.data() + open_.back());
    nest->rta_len = static_cast<unsigned short>(used_ - open_.back());
    open_.pop_back();
    return *this;
  }
  const nlmsghdr& header() const { return *reinterpret_cast<const nlmsghdr*>(bytes_.data()); }

 private:
  Message& add(std::uint16_t type, const void* data, std::size_t size) {
    const std::size_t at = used_;
    used_ += RTA_SPACE(size);
    REQUIRE(used_ <= bytes_.size());
    auto* a = reinterpret_cast<rtattr*>(bytes_.data() + at);
    a->rta_type = type;
    a->rta_len = static_cast<unsigned short>(RTA_LENGTH(size));
    if (size > 0) std::memcpy(RTA_DATA(a), data, size);
    finish();
    return *this;
  }
  void finish() { reinterpret_cast<nlmsghdr*>(bytes_.data())->nlmsg_len = static_cast<__u32>(used_); }

  alignas(nlmsghdr) std::array<char, 512> bytes_{};
  std::size_t used_;
  std::vector<std::size_t> open_;
};

}  // namespace

TEST_CASE("netlink: a link message gives the interface's name, master, kind and bridge options") {
  Message bridge(RTM_NEWLINK, AF_UNSPEC, 7);
  bridge.text(IFLA_IFNAME, "br0")
      .open(IFLA_LINKINFO)
      .text(IFLA_INFO_KIND, "bridge")
      .open(IFLA_INFO_DATA)
      .u8(IFLA_BR_NF_CALL_IPTABLES, 1)
      .u8(IFLA_BR_NF_CALL_IP6TABLES, 0)
      .u32(IFLA_BR_STP_STATE, 1)
      .u16(IFLA_BR_GROUP_FWD_MASK, 0x4000)
      .u16(IFLA_BR_VLAN_PROTOCOL, htons(0x88a8))
      .close()
      .close();
  auto link = fwe::netlink::link_of(bridge.header());
  REQUIRE(link);
  CHECK(link->index == 7);
  CHECK(link->name == "br0");
  CHECK(link->kind == "bridge");
  CHECK(link->master == 0);
  CHECK(link->bridge.calls_iptables);
  CHECK_FALSE(link->bridge.calls_ip6tables);
  CHECK(link->bridge.stp);
  CHECK(link->bridge.group_fwd_mask == 0x4000);
  CHECK(link->bridge.vlan_protocol == 0x88a8);

  Message port(RTM_NEWLINK, AF_UNSPEC, 9);
  port.text(IFLA_IFNAME, "veth1")
      .u32(IFLA_MASTER, 7)
      .open(IFLA_LINKINFO)
      .text(IFLA_INFO_KIND, "veth")
      .text(IFLA_INFO_SLAVE_KIND, "bridge")
      .open(IFLA_INFO_SLAVE_DATA)
      .u16(IFLA_BRPORT_GROUP_FWD_MASK, 0x0008)
      .close()
      .close();
  link = fwe::netlink::link_of(port.header());
  REQUIRE(link);
  CHECK(link->name == "veth1");
  CHECK(link->master == 7);
  CHECK(link->kind == "veth");
  CHECK(link->port_group_fwd_mask == 0x0008);
  CHECK_FALSE(link->bridge.stp);

  Message gone(RTM_DELLINK, AF_UNSPEC, 9);
  gone.text(IFLA_IFNAME, "veth1");
  link = fwe::netlink::link_of(gone.header());
  REQUIRE(link);
  CHECK(link->index == 9);
}

TEST_CASE("netlink: only a bridge's link data are read as bridge options, and AF_BRIDGE news is not a link") {
  // IFLA_BR_* and IFLA_BRPORT_* share their numbers with other kinds' attributes.
  Message other(RTM_NEWLINK, AF_UNSPEC, 3);
  other.open(IFLA_LINKINFO)
      .text(IFLA_INFO_KIND, "vxlan")
      .open(IFLA_INFO_DATA)
      .u8(IFLA_BR_NF_CALL_IPTABLES, 1)
      .u32(IFLA_BR_STP_STATE, 1)
      .close()
      .text(IFLA_INFO_SLAVE_KIND, "bond")
      .open(IFLA_INFO_SLAVE_DATA)
      .u16(IFLA_BRPORT_GROUP_FWD_MASK, 0x0008)
      .close()
      .close();
  auto link = fwe::netlink::link_of(other.header());
  REQUIRE(link);
  CHECK_FALSE(link->bridge.calls_iptables);
  CHECK_FALSE(link->bridge.stp);
  CHECK(link->port_group_fwd_mask == 0);

  Message port_news(RTM_NEWLINK, AF_BRIDGE, 9);
  port_news.u32(IFLA_MASTER, 9);
  CHECK_FALSE(fwe::netlink::link_of(port_news.header()));
  Message route(RTM_NEWROUTE, AF_UNSPEC, 1);
  CHECK_FALSE(fwe::netlink::link_of(route.header()));
}

TEST_CASE("netlink: a dump of this namespace's links lists lo and ends complete") {
  ifinfomsg family{};
  family.ifi_family = AF_UNSPEC;
  std::vector<std::string> names;
  const auto end = fwe::netlink::dump_route(RTM_GETLINK, family, [&](const nlmsghdr& message) {
    if (auto link = fwe::netlink::link_of(message)) names.push_back(link->name);
  });
  CHECK(end.error == 0);
  CHECK(end.complete());
  CHECK(std::find(names.begin(), names.end(), "lo") != names.end());
}

TEST_CASE("netlink: a link message gives the device it is stacked on and its address") {
  const std::array<std::uint8_t, 6> mac = {0x02, 0, 0, 0, 0x10, 0x01};
  Message vlan(RTM_NEWLINK, AF_UNSPEC, 12);
  vlan.text(IFLA_IFNAME, "eth0.100").u32(IFLA_LINK, 2).add_bytes(IFLA_ADDRESS, mac.data(), mac.size());
  auto link = fwe::netlink::link_of(vlan.header());
  REQUIRE(link);
  CHECK(link->lower == 2);
  CHECK(link->address == std::string(reinterpret_cast<const char*>(mac.data()), mac.size()));
  // A veth whose peer is in another namespace: its index is that namespace's, not a device here.
  Message veth(RTM_NEWLINK, AF_UNSPEC, 5);
  veth.u32(IFLA_LINK, 2).u32(IFLA_LINK_NETNSID, 0);
  link = fwe::netlink::link_of(veth.header());
  REQUIRE(link);
  CHECK(link->lower == 0);
  // lo and other devices name themselves.
  Message lo(RTM_NEWLINK, AF_UNSPEC, 1);
  lo.u32(IFLA_LINK, 1);
  link = fwe::netlink::link_of(lo.header());
  REQUIRE(link);
  CHECK(link->lower == 0);
}
