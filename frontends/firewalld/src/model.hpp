// model.hpp - a firewalld configuration as firewalld itself holds it after loading: /usr/lib/firewalld
// overlaid by /etc/firewalld, object by object. The reader (reader.hpp) builds it from files, the mapping
// (mapping.hpp) turns it into the IR. Semantics: ../shared/spec/firewalld.md and docs/firewalld.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::firewalld {

// Which firewalld's behaviour to reproduce where versions differ (docs/firewalld.md lists each case).
enum class Compat : std::uint8_t {
  v2,   // firewalld 2.x, the default
  v1_3  // Debian 12's firewalld 1.3.3 exactly (--firewalld-compat 1.3)
};

enum class Family : std::uint8_t { any, ipv4, ipv6 };

struct PortSpec {  // "22", "8000-8100"; names from /etc/services resolved by the reader
  ir::PortRange range;
  std::string protocol;  // tcp, udp, sctp, dccp
  SourceLoc loc;
};

struct ProtocolSpec {
  std::uint8_t number = 0;  // /etc/protocols names resolved by the reader
  SourceLoc loc;
};

struct ForwardPort {
  ir::PortRange port;
  std::string protocol;
  std::optional<ir::PortRange> to_port;
  std::optional<ir::IpAddr> to_addr;
  SourceLoc loc;
};

// A rich-rule address, MAC or ipset, possibly inverted.
struct RichAddress {
  enum class Kind : std::uint8_t { address, mac, ipset } kind = Kind::address;
  std::optional<ir::Cidr> cidr;  // address
  std::optional<ir::MacAddr> mac;
  std::string ipset;
  bool invert = false;
};

struct RichLimit {
  std::uint32_t rate = 0;
  std::string unit;         // second, minute, hour, day
  std::uint32_t burst = 0;  // 2.2+; 0: none given (nft's default, 5)
};

struct RichLog {
  enum class Kind : std::uint8_t { log, nflog } kind = Kind::log;
  std::string prefix;
  std::string level;                        // log: emerg..debug; empty = firewalld's default (warning)
  std::uint16_t group = 0, queue_size = 0;  // nflog
  std::optional<RichLimit> limit;
};

struct RichElement {
  enum class Kind : std::uint8_t {
    none,
    service,
    port,
    protocol,
    icmp_block,
    icmp_type,
    masquerade,
    forward_port,
    source_port,
    tcp_mss_clamp
  } kind = Kind::none;
  std::string name;              // service, icmp-block, icmp-type
  std::optional<PortSpec> port;  // port, source-port
  std::optional<ProtocolSpec> protocol;
  std::optional<ForwardPort> forward_port;
  std::string mss_value;  // tcp-mss-clamp: "pmtu" or a number
};

struct RichAction {
  enum class Kind : std::uint8_t { none, accept, reject, drop, mark } kind = Kind::none;
  std::string reject_type;  // firewalld's spelling, e.g. "icmp-host-prohibited", "tcp-reset"
  std::uint32_t mark = 0, mark_mask = 0xffffffff;
  bool mark_has_mask = false;
  std::optional<RichLimit> limit;
};

struct RichRule {
  Family family = Family::any;
  std::int32_t priority = 0;
  std::optional<RichAddress> source, destination;
  RichElement element;
  std::optional<RichLog> log;
  std::optional<RichLimit> audit;  // present = audit; limit rate 0 = no limit
  bool audit_present = false;
  RichAction action;
  std::string text;  // canonical string form (firewalld's str()), also the dedup key
  // What firewalld 2.3+ sorts a zone's or policy's rich rules by before it applies them (Rich_Rule.__lt__):
  // compared cell by cell.
  std::vector<std::variant<std::int64_t, std::string>> order;
  SourceLoc loc;
};

// Primitives zones and policies share.
struct Body {
  std::vector<std::string> services;  // names, checked to exist
  std::vector<SourceLoc> service_locs;
  std::vector<PortSpec> ports;
  std::vector<ProtocolSpec> protocols;
  std::vector<PortSpec> source_ports;
  std::vector<std::string> icmp_blocks;
  std::vector<SourceLoc> icmp_block_locs;
  std::optional<SourceLoc> masquerade;  // where <masquerade/> is, if it is
  std::vector<ForwardPort> forward_ports;
  std::vector<RichRule> rules;  // load order, duplicates (same text) removed
};

struct ZoneSource {
  enum class Kind : std::uint8_t { address, mac, ipset } kind = Kind::address;
  std::optional<ir::Cidr> cidr;
  std::optional<ir::MacAddr> mac;
  std::string ipset;
  SourceLoc loc;
};

struct ZoneInterface {
  ir::IfacePattern pattern;  // "veth+" -> prefix
  SourceLoc loc;
};

enum class ZoneTarget : std::uint8_t { default_, accept, reject, drop, explicit_default };

struct Zone {
  std::string name;
  ZoneTarget target = ZoneTarget::default_;
  bool icmp_block_inversion = false;
  bool forward = false;  // <forward/> present
  std::vector<ZoneInterface> interfaces;
  std::vector<ZoneSource> sources;
  std::int32_t ingress_priority = 0, egress_priority = 0;  // 2.x
  Body body;
  std::string file;  // the file it came from (last one for combined zones)
  SourceLoc loc;     // the <zone> element
};

enum class PolicyTarget : std::uint8_t { continue_, accept, reject, drop };

struct Policy {
  std::string name;
  PolicyTarget target = PolicyTarget::continue_;
  std::int32_t priority = -1;
  bool disabled = false;                                 // <disable/> (2.4+): kept, but never active
  std::vector<std::string> ingress_zones, egress_zones;  // zone names, or exactly one of "ANY", "HOST"
  Body body;
  std::string file;
  SourceLoc loc;
};

struct Service {
  std::string name;
  std::vector<PortSpec> ports;
  std::vector<ProtocolSpec> protocols;
  std::vector<PortSpec> source_ports;
  std::optional<ir::Cidr> destination_v4, destination_v6;  // <destination ipv4= ipv6=>
  std::vector<std::string> includes;
  std::vector<SourceLoc> include_locs;
  std::vector<std::string> helpers;
  std::string file;
  SourceLoc loc;
};

struct IpSet {
  std::string name;
  std::string type;                        // hash:ip, hash:net, hash:mac, ...
  Family family = Family::ipv4;            // option family=inet|inet6
  bool has_timeout = false;                // option timeout=N>0: entries are ignored
  std::vector<ir::Cidr> addresses;         // hash:ip / hash:net entries
  std::vector<ir::MacAddr> macs;           // hash:mac entries
  std::vector<std::string> other_entries;  // entries of types the IR cannot carry, as written
  std::string file;
  SourceLoc loc;
};

struct IcmpType {
  std::string name;
  bool ipv4 = true, ipv6 = true;  // <destination ipv4= ipv6=>
  std::string file;
  SourceLoc loc;
};

struct Helper {
  std::string name, module;
  Family family = Family::any;
  std::vector<PortSpec> ports;
  std::string file;
  SourceLoc loc;
};

// One <rule>, <chain> or <passthrough> of direct.xml: carried over only where it maps, else reported.
struct DirectRule {
  std::string ipv, table, chain;
  std::int32_t priority = 0;
  std::string args;
  SourceLoc loc;
  enum class Kind : std::uint8_t { rule, chain, passthrough } kind = Kind::rule;  // last: keeps brace init
};

struct Settings {  // firewalld.conf
  std::string default_zone = "public";
  std::string log_denied = "off";  // off, all, unicast, broadcast, multicast
  bool ipv6_rpfilter = true;       // "yes" / strict; 2.2+ values kept in ipv6_rpfilter_mode
  std::string ipv6_rpfilter_mode = "strict";
  bool rfc3964_ipv4 = true;
  bool strict_forward_ports = false;          // 2.3+
  std::string firewall_backend = "nftables";  // iptables: deprecated in 2.x, its direct rules differ
  std::optional<SourceLoc> firewall_backend_loc;
  // As written: firewalld's sanity check of the two compares them so (case matters there).
  std::string firewall_backend_text, ipv6_rpfilter_text;
  SourceLoc loc;                               // the file, line 0
  std::optional<SourceLoc> default_zone_loc;   // where DefaultZone= is, if it is
  std::optional<SourceLoc> ipv6_rpfilter_loc;  // where IPv6_rpfilter= is, if it is
};

struct Config {
  Compat compat = Compat::v2;
  Settings settings;
  std::map<std::string, Zone> zones;
  std::map<std::string, Policy> policies;
  std::map<std::string, Service> services;
  std::map<std::string, IpSet> ipsets;
  std::map<std::string, IcmpType> icmptypes;
  std::map<std::string, Helper> helpers;
  std::vector<DirectRule> direct;
};

}  // namespace fwe::firewalld
