// ipset.hpp - ipset's netlink interface (nfnetlink's ipset subsystem), spoken directly: sets are created,
// filled, swapped, listed and destroyed without starting the ipset tool, which parses every member as
// text (a getaddrinfo for each) and is a process per command.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"

struct mnl_socket;
struct nlmsghdr;

namespace fwe::iptables {

// A set as the kernel holds it, its members written as `ipset save` writes them.
struct KernelSet {
  std::string name, family;  // family: inet, inet6, or empty (list:set)
  PackedStrings members;
  std::string type{kNetSet};
  // Sets with counters and comments (kRunSet): per member.
  struct Extra {
    std::uint64_t packets = 0, bytes = 0;
    std::string comment;
  };
  std::vector<Extra> extras{};
};

// What a command did: error 0, or the kernel's error (an errno or one of ipset's own codes) with a
// message naming the command.
struct IpsetResult {
  int error = 0;
  std::string message;
  bool ok() const { return error == 0; }
  bool busy() const;  // the set is still referenced (a list:set lets go only after an RCU grace period)
  bool full() const;  // the set holds as many members as its maxelem allows
};

// A netlink socket in the network namespace of the calling thread. Creating a set that exists with the
// same type, or adding a member that is there, is not an error (as with `ipset -exist`).
class Ipset {
 public:
  Ipset();
  ~Ipset();
  Ipset(const Ipset&) = delete;
  Ipset& operator=(const Ipset&) = delete;

  // The set, named `name`, with all its members (and their comments).
  IpsetResult create(const SetDef& set, std::string_view name);
  // The members of `set` (with their comments) put into the set `name`, or taken out of it. Adding a
  // member that is there replaces its comment and keeps its counters; deleting one that is not there
  // is not an error.
  IpsetResult add_members(const SetDef& set, std::string_view name);
  IpsetResult delete_members(const SetDef& set, std::string_view name);
  // An empty list:set, and a set name added to one.
  IpsetResult create_list(std::string_view name);
  IpsetResult add_to_list(std::string_view list, std::string_view member);
  IpsetResult swap(std::string_view a, std::string_view b);
  IpsetResult destroy(std::string_view name);
  IpsetResult flush(std::string_view name);  // removes every member
  // Our sets (names starting fwe), or the one named; without members only names, types and families.
  std::vector<KernelSet> list(bool members, std::string_view name = {});

 private:
  nlmsghdr* start(char* buffer, int command, std::uint8_t family);
  IpsetResult send_members(int command, const SetDef& set, std::string_view name);
  IpsetResult request(const nlmsghdr* message, std::string_view what,
                      int (*callback)(const nlmsghdr*, void*) = nullptr, void* data = nullptr);
  std::uint8_t revision(std::string_view type, std::uint8_t family);

  std::unique_ptr<mnl_socket, int (*)(mnl_socket*)> socket_;
  // Made once for the socket's life: a set's members take many messages, each with an answer.
  std::unique_ptr<char[]> members_, answers_;
  std::uint32_t sequence_ = 0;
  std::map<std::string, std::uint8_t, std::less<>> revisions_;
};

}  // namespace fwe::iptables
