// mapping_support.hpp - firewalld configurations built in C++ for the mapping tests: the stock objects
// the scenarios of spec firewalld.md §6 use, located in one pseudo file so that origins and diagnostics
// point somewhere; then the IR after core's passes, and packets walked through it by core's evaluator.
#pragma once

#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "fwengine/passes.hpp"
#include "fwengine/trace.hpp"
#include "mapping.hpp"
#include "rich.hpp"

namespace fwe::firewalld::test {

class Setup {
 public:
  explicit Setup(Compat compat = Compat::v2) {
    file_ = diag.add_file("firewalld-test");
    config.compat = compat;
    config.settings.loc = {file_, 0, 0};
    for (const char* name :
         {"block", "dmz", "drop", "external", "home", "internal", "public", "trusted", "work"})
      zone(name).forward = true;  // every stock zone has <forward/>
    zone("block").target = ZoneTarget::reject;
    zone("drop").target = ZoneTarget::drop;
    zone("trusted").target = ZoneTarget::accept;
    service("ssh", {{22, "tcp"}});
    service("http", {{80, "tcp"}});
    service("dhcpv6-client", {{546, "udp"}}).destination_v6 = ir::parse_cidr("fe80::/64");
    Service& mdns = service("mdns", {{5353, "udp"}});
    mdns.destination_v4 = ir::parse_cidr("224.0.0.251");
    mdns.destination_v6 = ir::parse_cidr("ff02::fb");
    service("samba-client", {{137, "udp"}, {138, "udp"}});
    for (const char* name : {"public", "work"}) services(zone(name).body, {"ssh", "dhcpv6-client"});
    for (const char* name : {"home", "internal"})
      services(zone(name).body, {"ssh", "mdns", "samba-client", "dhcpv6-client"});
    services(zone("external").body, {"ssh"});
    zone("external").body.masquerade = SourceLoc{};
    services(zone("dmz").body, {"ssh"});
    for (const char* name : {"echo-request", "echo-reply", "redirect", "router-advertisement"})
      icmptype(name);
    for (const char* name : {"neighbour-advertisement", "neighbour-solicitation"})
      icmptype(name).ipv4 = false;
    Policy& nd = policy("allow-host-ipv6", {"ANY"}, {"HOST"}, PolicyTarget::continue_, -15000);
    for (const char* type :
         {"neighbour-advertisement", "neighbour-solicitation", "router-advertisement", "redirect"})
      rich(nd.body, std::string("rule family=\"ipv6\" icmp-type name=\"") + type + "\" accept");
  }
  Setup(const Setup&) = delete;
  Setup& operator=(const Setup&) = delete;

  Config config;
  Diagnostics diag;

  // The next line of the pseudo file: every object and item gets its own.
  SourceLoc loc() { return {file_, ++line_, 1}; }

  Zone& zone(const std::string& name) {
    Zone& z = config.zones[name];
    if (z.name.empty()) {
      z.name = name;
      z.loc = loc();
    }
    return z;
  }
  Service& service(const std::string& name, const std::vector<std::pair<std::uint16_t, std::string>>& ports) {
    Service& s = config.services[name];
    s = Service{};
    s.name = name;
    s.loc = loc();
    for (const auto& [port, protocol] : ports) s.ports.push_back({{port, port}, protocol, loc()});
    return s;
  }
  IcmpType& icmptype(const std::string& name) {
    IcmpType& t = config.icmptypes[name];
    t.name = name;
    t.loc = loc();
    return t;
  }
  Policy& policy(const std::string& name, std::vector<std::string> ingress, std::vector<std::string> egress,
                 PolicyTarget target, std::int32_t priority = -1) {
    Policy& p = config.policies[name];
    p = Policy{};
    p.name = name;
    p.ingress_zones = std::move(ingress);
    p.egress_zones = std::move(egress);
    p.target = target;
    p.priority = priority;
    p.loc = loc();
    return p;
  }
  IpSet& ipset(const std::string& name, const std::string& type, const std::vector<std::string>& entries) {
    IpSet& set = config.ipsets[name];
    set.name = name;
    set.type = type;
    set.loc = loc();
    for (const std::string& entry : entries) {
      if (auto mac = ir::parse_mac(entry)) {
        set.macs.push_back(*mac);
      } else {
        set.addresses.push_back(*ir::parse_cidr(entry));
      }
    }
    return set;
  }

  void services(Body& body, const std::vector<std::string>& names) {
    for (const std::string& name : names) {
      body.services.push_back(name);
      body.service_locs.push_back(loc());
    }
  }
  void port(Body& body, std::uint16_t lo, std::uint16_t hi, const std::string& protocol) {
    body.ports.push_back({{lo, hi}, protocol, loc()});
  }
  void bind(const std::string& zone_name, const std::string& iface) {
    zone(zone_name).interfaces.push_back({ir::parse_iface(iface), loc()});
  }
  void source(const std::string& zone_name, const std::string& address) {
    ZoneSource source;
    if (auto mac = ir::parse_mac(address)) {
      source.mac = mac;
    } else {
      source.cidr = ir::parse_cidr(address);
    }
    source.loc = loc();
    zone(zone_name).sources.push_back(source);
  }
  void source_ipset(const std::string& zone_name, const std::string& ipset_name) {
    ZoneSource source;
    source.kind = ZoneSource::Kind::ipset;
    source.ipset = ipset_name;
    source.loc = loc();
    zone(zone_name).sources.push_back(source);
  }
  // A rich rule in firewall-cmd's string form, parsed by the reader's rich-rule parser.
  void rich(Body& body, const std::string& text) {
    auto rule = parse_rich_rule(text, loc(), Severity::error, diag);
    INFO(text);
    REQUIRE(rule.has_value());
    body.rules.push_back(*rule);
  }

  // The IR after core's passes; the test fails on any error.
  ir::Ruleset build() {
    ir::Ruleset ruleset = to_ir(config, diag);
    passes::run_all(ruleset, diag);
    INFO(diag.text());
    REQUIRE_FALSE(diag.has_errors());
    return ruleset;
  }

  std::size_t count(Severity severity, const std::string& fragment) const {
    std::size_t n = 0;
    for (const Diagnostic& d : diag.all())
      if (d.severity == severity && d.message.find(fragment) != std::string::npos) ++n;
    return n;
  }

 private:
  std::uint32_t file_ = 0;
  std::uint32_t line_ = 0;
};

// ---- packets in the topology of spec §6: fwpeer 10.77.0.2 -- veth-a [fwtest] veth-b -- fwpeer2 10.88.0.2
// ----
constexpr std::uint8_t kTcp = 6, kUdp = 17;

inline trace::Packet packet(const std::string& iif, const std::string& oif, const std::string& src,
                            const std::string& dst, std::uint8_t protocol, std::uint16_t dport) {
  trace::Packet p;
  p.iif = iif;
  p.oif = oif;
  p.src = *ir::parse_ip(src);
  p.dst = *ir::parse_ip(dst);
  p.protocol = protocol;
  p.sport = 40000;
  p.dport = dport;
  return p;
}
// From fwpeer to fwtest itself.
inline trace::Packet to_host(const std::string& src, std::uint16_t dport, std::uint8_t protocol = kTcp) {
  const bool v6 = src.find(':') != std::string::npos;
  return packet("veth-a", "", src, v6 ? "fd77::1" : "10.77.0.1", protocol, dport);
}
// ICMP (ICMPv6) of a type from fwpeer to fwtest.
inline trace::Packet icmp_to_host(const std::string& src, std::uint8_t type) {
  const bool v6 = src.find(':') != std::string::npos;
  trace::Packet p = packet("veth-a", "", src, v6 ? "fd77::1" : "10.77.0.1", v6 ? 58 : 1, 0);
  p.icmp_type = type;
  return p;
}
// From fwpeer through fwtest to fwpeer2.
inline trace::Packet through(const std::string& src, const std::string& dst, std::uint16_t dport) {
  return packet("veth-a", "veth-b", src, dst, kTcp, dport);
}
// From fwtest out of an interface.
inline trace::Packet from_host(const std::string& oif, const std::string& dst, std::uint16_t dport) {
  const bool v6 = dst.find(':') != std::string::npos;
  const std::string src = oif == "lo"       ? dst
                          : oif == "veth-a" ? (v6 ? "fd77::1" : "10.77.0.1")
                                            : (v6 ? "fd88::1" : "10.88.0.1");
  return packet("", oif, src, dst, kTcp, dport);
}

// "open" (delivered), "drop", or "reject:<reject_with>" of the rule or default that decided.
inline std::string outcome(const ir::Ruleset& rs, const trace::Result& result) {
  if (result.delivered) return "open";
  const trace::StageResult& stage = result.stages.back();
  if (stage.verdict == ir::Verdict::drop) return "drop";
  std::string with;
  const trace::Step& last = stage.steps.back();
  if (last.rule != nullptr) {
    with = last.rule->action.reject_with;
  } else {
    for (const ir::Section& section : rs.stage(stage.stage).sections)
      for (const ir::Endpoint& endpoint : section.endpoints)
        if (endpoint.name == last.endpoint) with = endpoint.reject_with;
  }
  return "reject:" + with;
}
inline std::string outcome(const ir::Ruleset& rs, const trace::Packet& packet) {
  return outcome(rs, trace::evaluate(rs, packet));
}

}  // namespace fwe::firewalld::test
