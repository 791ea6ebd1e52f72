// ipset.cpp - the ipset netlink protocol: messages of nfnetlink's ipset subsystem, one request and its
// acknowledgement at a time; members go many to a message (IPSET_ATTR_ADT), as `ipset restore` sends them.
#include "ipset.hpp"

#include <arpa/inet.h>
#include <endian.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/ipset/ip_set.h>
#include <linux/netfilter/ipset/ip_set_hash.h>
#include <linux/netfilter/ipset/ip_set_list.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>

#include "fwengine/diagnostics.hpp"

namespace fwe::iptables {

namespace {

constexpr std::string_view kListSet = "list:set";
// Room for a message's members: IPSET_ATTR_ADT's length is 16 bits.
constexpr std::size_t kMessageLimit = 60'000;
constexpr std::uint16_t kNetOrder = NLA_F_NET_BYTEORDER;
constexpr std::size_t kSmallMessage = 1024;  // any request without members
// Room for the largest message a dump sends (the kernel fills up to 32 KiB).
constexpr std::size_t kReceiveBuffer = 65536;

// The newest revision of each type that this code knows how to fill; the kernel may know newer ones.
std::uint8_t newest_known(std::string_view type) {
  if (type == kNetSet) return 7;
  if (type == kRunSet) return 8;
  return 3;  // list:set
}

std::string error_text(int error) {
  switch (error) {
    case IPSET_ERR_PROTOCOL:
      return "the kernel did not understand the request (ipset protocol)";
    case IPSET_ERR_FIND_TYPE:
      return "the kernel has no such set type (is the ip_set module loadable?)";
    case IPSET_ERR_MAX_SETS:
      return "the kernel holds as many sets as it can";
    case IPSET_ERR_BUSY:
      return "the set is in use by a kernel component";
    case IPSET_ERR_EXIST_SETNAME2:
      return "the second set does not exist";
    case IPSET_ERR_TYPE_MISMATCH:
      return "the sets are of different types";
    case IPSET_ERR_EXIST:
      return "the member is in the set already";
    case EEXIST:
      return "a set of that name exists with other settings";
    case IPSET_ERR_INVALID_CIDR:
      return "a prefix length is out of range";
    case IPSET_ERR_INVALID_FAMILY:
      return "an address is of the other family";
    case IPSET_ERR_REFERENCED:
      return "the set is referenced by a rule or another set";
    case IPSET_ERR_COMMENT:
      return "the set takes no comments";
    case IPSET_ERR_COUNTER:
      return "the set takes no counters";
    case IPSET_ERR_HASH_FULL:
      return "the set is full (maxelem)";
    case IPSET_ERR_INVALID_PROTO:
      return "a protocol is not valid here";
    case IPSET_ERR_MISSING_PROTO:
      return "a member lacks its protocol";
    case ENOENT:
      return "the set does not exist";
    default:
      return std::strerror(error);
  }
}

std::uint8_t nf_family(IpFamily f) {
  return f == IpFamily::v4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
}

// A member as the model writes it: "ADDR[/LEN]" or "ADDR[/LEN],PROTO:PORT".
struct Member {
  std::array<unsigned char, 16> address{};
  std::uint8_t prefix = 0;
  std::optional<std::pair<std::uint8_t, std::uint16_t>> protocol_port;
};

Member parse_member(std::string_view text, IpFamily family) {
  Member m;
  std::string_view net = text.substr(0, text.find(','));
  if (net.size() < text.size()) {
    std::string_view rest = text.substr(net.size() + 1);
    const auto colon = rest.find(':');
    std::uint16_t port = 0;
    for (char c : rest.substr(colon + 1)) port = static_cast<std::uint16_t>(port * 10 + (c - '0'));
    const auto protocol = protocol_number(rest.substr(0, colon));
    if (!protocol)
      throw RuntimeError("internal error: the ipset member '" + std::string(text) + "' has no protocol");
    m.protocol_port = {*protocol, port};
  }
  const auto slash = net.find('/');
  const std::string address(net.substr(0, slash));
  const int af = family == IpFamily::v4 ? AF_INET : AF_INET6;
  if (inet_pton(af, address.c_str(), m.address.data()) != 1)
    throw RuntimeError("internal error: the ipset member '" + std::string(text) + "' is not an address");
  m.prefix = family == IpFamily::v4 ? 32 : 128;
  if (slash != std::string_view::npos) {
    m.prefix = 0;
    for (char c : net.substr(slash + 1)) m.prefix = static_cast<std::uint8_t>(m.prefix * 10 + (c - '0'));
  }
  return m;
}

// Appends one member to a message's IPSET_ATTR_ADT; false, with nothing appended, when it does not fit.
bool put_member(nlmsghdr* nlh, const Member& m, IpFamily family, std::string_view comment) {
  nlattr* data = mnl_attr_nest_start_check(nlh, kMessageLimit, IPSET_ATTR_DATA);
  nlattr* ip = data ? mnl_attr_nest_start_check(nlh, kMessageLimit, IPSET_ATTR_IP) : nullptr;
  bool fits = ip != nullptr;
  if (fits) {
    fits = family == IpFamily::v4 ? mnl_attr_put_check(nlh, kMessageLimit, IPSET_ATTR_IPADDR_IPV4 | kNetOrder,
                                                       4, m.address.data())
                                  : mnl_attr_put_check(nlh, kMessageLimit, IPSET_ATTR_IPADDR_IPV6 | kNetOrder,
                                                       16, m.address.data());
    if (fits) mnl_attr_nest_end(nlh, ip);
  }
  fits = fits && mnl_attr_put_u8_check(nlh, kMessageLimit, IPSET_ATTR_CIDR, m.prefix);
  if (fits && m.protocol_port) {
    const std::uint16_t port = htons(m.protocol_port->second);
    fits = mnl_attr_put_check(nlh, kMessageLimit, IPSET_ATTR_PORT | kNetOrder, sizeof port, &port) &&
           mnl_attr_put_u8_check(nlh, kMessageLimit, IPSET_ATTR_PROTO, m.protocol_port->first);
  }
  if (fits && !comment.empty()) {
    const std::string text(comment.substr(0, IPSET_MAX_COMMENT_SIZE));
    fits = mnl_attr_put_strz_check(nlh, kMessageLimit, IPSET_ATTR_COMMENT, text.c_str());
  }
  if (!fits) {
    if (data) mnl_attr_nest_cancel(nlh, data);
    return false;
  }
  mnl_attr_nest_end(nlh, data);
  return true;
}

// Calls visit(attr) for each attribute in a nest, or after a message's nfgenmsg header (libmnl's
// iteration macros need C's conversions from void*).
template <typename Visit>
void for_each_nested(const nlattr* nest, Visit visit) {
  mnl_attr_parse_nested(
      nest,
      [](const nlattr* attr, void* data) {
        (*static_cast<Visit*>(data))(attr);
        return static_cast<int>(MNL_CB_OK);
      },
      &visit);
}

template <typename Visit>
void for_each_attribute(const nlmsghdr* nlh, Visit visit) {
  mnl_attr_parse(
      nlh, sizeof(nfgenmsg),
      [](const nlattr* attr, void* data) {
        (*static_cast<Visit*>(data))(attr);
        return static_cast<int>(MNL_CB_OK);
      },
      &visit);
}

std::string address_text(const void* bytes, bool v6) {
  char text[INET6_ADDRSTRLEN];
  inet_ntop(v6 ? AF_INET6 : AF_INET, bytes, text, sizeof text);
  return text;
}

// One entry of a listing, written as `ipset save` writes it.
struct Entry {
  std::string address, name;
  int prefix = -1, protocol = -1, port = -1;
  bool v6 = false;
  KernelSet::Extra extra;
  std::string text() const {
    if (!name.empty()) return name;
    std::string out = address;
    if (prefix >= 0 && prefix != (v6 ? 128 : 32)) out += '/' + std::to_string(prefix);
    if (protocol >= 0)
      out +=
          ',' + protocol_name(static_cast<std::uint8_t>(protocol)) + ':' + std::to_string(std::max(port, 0));
    return out;
  }
};

Entry parse_entry(const nlattr* data) {
  Entry e;
  for_each_nested(data, [&](const nlattr* attr) {
    switch (mnl_attr_get_type(attr)) {
      case IPSET_ATTR_IP:
        for_each_nested(attr, [&](const nlattr* ip) {
          e.v6 = mnl_attr_get_type(ip) == IPSET_ATTR_IPADDR_IPV6;
          e.address = address_text(mnl_attr_get_payload(ip), e.v6);
        });
        break;
      case IPSET_ATTR_CIDR:
        e.prefix = mnl_attr_get_u8(attr);
        break;
      case IPSET_ATTR_PROTO:
        e.protocol = mnl_attr_get_u8(attr);
        break;
      case IPSET_ATTR_PORT:
        e.port = ntohs(mnl_attr_get_u16(attr));
        break;
      case IPSET_ATTR_NAME:
        e.name = mnl_attr_get_str(attr);
        break;
      case IPSET_ATTR_PACKETS:
        e.extra.packets = be64toh(mnl_attr_get_u64(attr));
        break;
      case IPSET_ATTR_BYTES:
        e.extra.bytes = be64toh(mnl_attr_get_u64(attr));
        break;
      case IPSET_ATTR_COMMENT:
        e.extra.comment = mnl_attr_get_str(attr);
        break;
      default:
        break;
    }
  });
  return e;
}

struct Listing {
  bool members = false;
  std::vector<KernelSet> sets;
};

// One message of a dump: a set's header (name, type, family) and some of its members, or more members of
// the set before.
int on_listed(const nlmsghdr* nlh, void* data) {
  auto& listing = *static_cast<Listing*>(data);
  std::string name, type;
  std::uint8_t family = NFPROTO_UNSPEC;
  const nlattr* entries = nullptr;
  for_each_attribute(nlh, [&](const nlattr* attr) {
    switch (mnl_attr_get_type(attr)) {
      case IPSET_ATTR_SETNAME:
        name = mnl_attr_get_str(attr);
        break;
      case IPSET_ATTR_TYPENAME:
        type = mnl_attr_get_str(attr);
        break;
      case IPSET_ATTR_FAMILY:
        family = mnl_attr_get_u8(attr);
        break;
      case IPSET_ATTR_ADT:
        entries = attr;
        break;
      default:
        break;
    }
  });
  if (name.rfind("fwe", 0) != 0) return MNL_CB_OK;
  if (listing.sets.empty() || listing.sets.back().name != name) {
    KernelSet set{name, family == NFPROTO_IPV4 ? "inet" : family == NFPROTO_IPV6 ? "inet6" : "", {}, type};
    listing.sets.push_back(std::move(set));
  }
  KernelSet& set = listing.sets.back();
  if (!listing.members || !entries) return MNL_CB_OK;
  for_each_nested(entries, [&](const nlattr* attr) {
    if (mnl_attr_get_type(attr) != IPSET_ATTR_DATA) return;
    Entry e = parse_entry(attr);
    set.members.push_back(e.text());
    if (set.type == kRunSet) set.extras.push_back(std::move(e.extra));
  });
  return MNL_CB_OK;
}

struct TypeReply {
  std::uint8_t newest = 0;
};

int on_type(const nlmsghdr* nlh, void* data) {
  for_each_attribute(nlh, [&](const nlattr* attr) {
    if (mnl_attr_get_type(attr) == IPSET_ATTR_REVISION)
      static_cast<TypeReply*>(data)->newest = mnl_attr_get_u8(attr);
  });
  return MNL_CB_OK;
}

}  // namespace

bool IpsetResult::full() const {
  return error == IPSET_ERR_HASH_FULL;
}

bool IpsetResult::busy() const {
  return error == IPSET_ERR_BUSY || error == IPSET_ERR_REFERENCED;
}

Ipset::Ipset()
    : socket_(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC), mnl_socket_close),
      members_(new char[kMessageLimit]),
      answers_(new char[kReceiveBuffer]) {
  if (!socket_)
    throw RuntimeError("cannot open a netlink socket for ipset: " + std::string(std::strerror(errno)));
  if (mnl_socket_bind(socket_.get(), 0, MNL_SOCKET_AUTOPID) < 0)
    throw RuntimeError("cannot bind the netlink socket for ipset: " + std::string(std::strerror(errno)));
}

Ipset::~Ipset() = default;

nlmsghdr* Ipset::start(char* buffer, int command, std::uint8_t family) {
  nlmsghdr* nlh = mnl_nlmsg_put_header(buffer);
  nlh->nlmsg_type = static_cast<std::uint16_t>((NFNL_SUBSYS_IPSET << 8) | command);
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = ++sequence_;
  auto* header = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  header->nfgen_family = family;
  header->version = NFNETLINK_V0;
  header->res_id = 0;
  mnl_attr_put_u8(nlh, IPSET_ATTR_PROTOCOL, IPSET_PROTOCOL);
  return nlh;
}

IpsetResult Ipset::request(const nlmsghdr* message, std::string_view what,
                           int (*callback)(const nlmsghdr*, void*), void* data) {
  IpsetResult result;
  if (mnl_socket_sendto(socket_.get(), message, message->nlmsg_len) < 0) {
    result.error = errno;
  } else {
    const std::uint32_t portid = mnl_socket_get_portid(socket_.get());
    for (;;) {
      ssize_t n = mnl_socket_recvfrom(socket_.get(), answers_.get(), kReceiveBuffer);
      if (n < 0) {
        result.error = errno;
        break;
      }
      int ret =
          mnl_cb_run(answers_.get(), static_cast<std::size_t>(n), message->nlmsg_seq, portid, callback, data);
      if (ret < 0) result.error = errno;
      if (ret <= MNL_CB_STOP) break;
    }
  }
  if (!result.ok()) result.message = std::string(what) + ": " + error_text(result.error);
  return result;
}

std::uint8_t Ipset::revision(std::string_view type, std::uint8_t family) {
  if (auto it = revisions_.find(type); it != revisions_.end()) return it->second;
  std::array<char, kSmallMessage> buffer{};
  nlmsghdr* nlh = start(buffer.data(), IPSET_CMD_TYPE, family);
  mnl_attr_put_strz(nlh, IPSET_ATTR_TYPENAME, std::string(type).c_str());
  mnl_attr_put_u8(nlh, IPSET_ATTR_FAMILY, family);
  TypeReply reply;
  auto result = request(nlh, "ipset type " + std::string(type), on_type, &reply);
  if (!result.ok()) throw RuntimeError(result.message);
  const std::uint8_t chosen = std::min(reply.newest, newest_known(type));
  revisions_.emplace(std::string(type), chosen);
  return chosen;
}

IpsetResult Ipset::create(const SetDef& set, std::string_view name) {
  const std::string what = "ipset create " + std::string(name);
  const std::uint8_t family = nf_family(set.family);
  {
    nlmsghdr* nlh = start(members_.get(), IPSET_CMD_CREATE, family);
    mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME, std::string(name).c_str());
    mnl_attr_put_strz(nlh, IPSET_ATTR_TYPENAME, set.type.c_str());
    mnl_attr_put_u8(nlh, IPSET_ATTR_REVISION, revision(set.type, family));
    mnl_attr_put_u8(nlh, IPSET_ATTR_FAMILY, family);
    nlattr* data = mnl_attr_nest_start(nlh, IPSET_ATTR_DATA);
    mnl_attr_put_u32(nlh, IPSET_ATTR_MAXELEM | kNetOrder,
                     htonl(static_cast<std::uint32_t>(ipset_maxelem(set))));
    if (const std::uint32_t buckets = ipset_hashsize(set); buckets != 0)
      mnl_attr_put_u32(nlh, IPSET_ATTR_HASHSIZE | kNetOrder, htonl(buckets));
    if (set.type == kRunSet)
      mnl_attr_put_u32(nlh, IPSET_ATTR_CADT_FLAGS | kNetOrder,
                       htonl(IPSET_FLAG_WITH_COUNTERS | IPSET_FLAG_WITH_COMMENT));
    mnl_attr_nest_end(nlh, data);
    if (auto result = request(nlh, what); !result.ok()) return result;
  }
  return add_members(set, name);
}

IpsetResult Ipset::add_members(const SetDef& set, std::string_view name) {
  return send_members(IPSET_CMD_ADD, set, name);
}

IpsetResult Ipset::delete_members(const SetDef& set, std::string_view name) {
  return send_members(IPSET_CMD_DEL, set, name);
}

// Without NLM_F_EXCL the kernel takes each command as `ipset -exist` does: an add of a member that is
// there overwrites its comment (and keeps its counters), a delete of one that is not there is no error.
IpsetResult Ipset::send_members(int command, const SetDef& set, std::string_view name) {
  const std::uint8_t family = nf_family(set.family);
  const std::string what = (command == IPSET_CMD_ADD ? "ipset add " : "ipset del ") + std::string(name);
  std::size_t next = 0;
  while (next < set.members.size()) {
    nlmsghdr* nlh = start(members_.get(), command, family);
    mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME, std::string(name).c_str());
    mnl_attr_put_u32(nlh, IPSET_ATTR_LINENO, 0);  // required with IPSET_ATTR_ADT
    nlattr* entries = mnl_attr_nest_start(nlh, IPSET_ATTR_ADT);
    const std::size_t first = next;
    for (; next < set.members.size(); ++next) {
      const std::string_view comment = next < set.comments.size() ? set.comments[next] : std::string_view{};
      if (!put_member(nlh, parse_member(set.members[next], set.family), set.family, comment)) break;
    }
    mnl_attr_nest_end(nlh, entries);
    if (auto result =
            request(nlh, what + " " + std::string(set.members[first]) + (next - first > 1 ? " ..." : ""));
        !result.ok())
      return result;
  }
  return {};
}

IpsetResult Ipset::create_list(std::string_view name) {
  std::array<char, kSmallMessage> buffer{};
  nlmsghdr* nlh = start(buffer.data(), IPSET_CMD_CREATE, NFPROTO_UNSPEC);
  mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME, std::string(name).c_str());
  mnl_attr_put_strz(nlh, IPSET_ATTR_TYPENAME, std::string(kListSet).c_str());
  mnl_attr_put_u8(nlh, IPSET_ATTR_REVISION, revision(kListSet, NFPROTO_UNSPEC));
  mnl_attr_put_u8(nlh, IPSET_ATTR_FAMILY, NFPROTO_UNSPEC);
  mnl_attr_nest_end(nlh, mnl_attr_nest_start(nlh, IPSET_ATTR_DATA));
  return request(nlh, "ipset create " + std::string(name) + " list:set");
}

IpsetResult Ipset::add_to_list(std::string_view list, std::string_view member) {
  std::array<char, kSmallMessage> buffer{};
  nlmsghdr* nlh = start(buffer.data(), IPSET_CMD_ADD, NFPROTO_UNSPEC);
  mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME, std::string(list).c_str());
  nlattr* data = mnl_attr_nest_start(nlh, IPSET_ATTR_DATA);
  mnl_attr_put_strz(nlh, IPSET_ATTR_NAME, std::string(member).c_str());
  mnl_attr_nest_end(nlh, data);
  return request(nlh, "ipset add " + std::string(list) + " " + std::string(member));
}

IpsetResult Ipset::swap(std::string_view a, std::string_view b) {
  std::array<char, kSmallMessage> buffer{};
  nlmsghdr* nlh = start(buffer.data(), IPSET_CMD_SWAP, NFPROTO_UNSPEC);
  mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME, std::string(a).c_str());
  mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME2, std::string(b).c_str());
  return request(nlh, "ipset swap " + std::string(a) + " " + std::string(b));
}

IpsetResult Ipset::destroy(std::string_view name) {
  std::array<char, kSmallMessage> buffer{};
  nlmsghdr* nlh = start(buffer.data(), IPSET_CMD_DESTROY, NFPROTO_UNSPEC);
  mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME, std::string(name).c_str());
  return request(nlh, "ipset destroy " + std::string(name));
}

IpsetResult Ipset::flush(std::string_view name) {
  std::array<char, kSmallMessage> buffer{};
  nlmsghdr* nlh = start(buffer.data(), IPSET_CMD_FLUSH, NFPROTO_UNSPEC);
  mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME, std::string(name).c_str());
  return request(nlh, "ipset flush " + std::string(name));
}

std::vector<KernelSet> Ipset::list(bool members, std::string_view name) {
  std::array<char, kSmallMessage> buffer{};
  nlmsghdr* nlh = start(buffer.data(), IPSET_CMD_LIST, NFPROTO_UNSPEC);
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  if (!name.empty()) mnl_attr_put_strz(nlh, IPSET_ATTR_SETNAME, std::string(name).c_str());
  if (!members) mnl_attr_put_u32(nlh, IPSET_ATTR_FLAGS | kNetOrder, htonl(IPSET_FLAG_LIST_HEADER));
  Listing listing{members, {}};
  auto result = request(nlh, "ipset list" + (name.empty() ? std::string() : " " + std::string(name)),
                        on_listed, &listing);
  if (!result.ok() && !(result.error == ENOENT && !name.empty())) throw RuntimeError(result.message);
  return std::move(listing.sets);
}

}  // namespace fwe::iptables
