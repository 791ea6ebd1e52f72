// Loading whole configurations: the stock tree, overlays, combined zones, services, ipsets,
// firewalld.conf, direct.xml, and bad inputs with their locations.
#include <catch2/catch.hpp>

#include "support.hpp"
#include "values.hpp"

using namespace fwe;
using namespace fwe::firewalld;
using test::TempTree;

namespace {

const char* kHeader = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";

}  // namespace

TEST_CASE("reader: the stock configuration loads without errors") {
  TempTree etc;
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  CHECK(config.settings.default_zone == "public");
  REQUIRE(config.zones.count("public"));
  const Zone& pub = config.zones.at("public");
  CHECK(pub.body.services == std::vector<std::string>{"ssh", "dhcpv6-client"});
  CHECK(pub.forward);
  CHECK(pub.target == ZoneTarget::default_);
  CHECK(config.zones.at("drop").target == ZoneTarget::drop);
  CHECK(config.zones.at("block").target == ZoneTarget::reject);
  CHECK(config.zones.at("trusted").target == ZoneTarget::accept);
  CHECK(config.zones.at("external").body.masquerade.has_value());
  REQUIRE(config.policies.count("allow-host-ipv6"));
  const Policy& nd = config.policies.at("allow-host-ipv6");
  CHECK(nd.priority == -15000);
  CHECK(nd.ingress_zones == std::vector<std::string>{"ANY"});
  CHECK(nd.egress_zones == std::vector<std::string>{"HOST"});
  CHECK(nd.body.rules.size() == 4);
  const Service& dhcp = config.services.at("dhcpv6-client");
  REQUIRE(dhcp.destination_v6);
  CHECK(ir::to_string(*dhcp.destination_v6) == "fe80::/64");
  CHECK_FALSE(dhcp.destination_v4);
  CHECK(config.services.at("ftp").helpers == std::vector<std::string>{"ftp"});
  CHECK(config.helpers.at("ftp").module == "nf_conntrack_ftp");
  CHECK_FALSE(config.icmptypes.at("host-prohibited").ipv6);
  CHECK(config.icmptypes.at("echo-request").ipv6);
  CHECK(config.direct.empty());
}

TEST_CASE("reader: an /etc object replaces the stock one wholesale") {
  TempTree etc;
  etc.write(
      "zones/public.xml",
      test::zone_xml("  <port port=\"8080\" protocol=\"tcp\"/>\n  <icmp-block name=\"echo-request\"/>\n"));
  etc.write("services/ssh.xml",
            std::string(kHeader) + "<service>\n  <port port=\"2222\" protocol=\"tcp\"/>\n</service>\n");
  etc.write("zones/notes.txt", "not a zone");
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  const Zone& pub = config.zones.at("public");
  CHECK(pub.body.services.empty());
  CHECK_FALSE(pub.forward);  // absent <forward/> is off
  REQUIRE(pub.body.ports.size() == 1);
  CHECK(pub.body.ports[0].range == ir::PortRange{8080, 8080});
  CHECK(pub.body.ports[0].loc.line == 3);
  CHECK(pub.body.icmp_blocks == std::vector<std::string>{"echo-request"});
  CHECK(pub.file == etc.dir() + "/zones/public.xml");
  REQUIRE(config.services.at("ssh").ports.size() == 1);
  CHECK(config.services.at("ssh").ports[0].range.lo == 2222);
  CHECK(config.zones.count("dmz"));  // the rest of the stock tree stays
}

TEST_CASE("reader: later config dirs win over earlier ones") {
  TempTree first, second;
  first.write("zones/work.xml", test::zone_xml("  <service name=\"http\"/>\n"));
  second.write("zones/work.xml", test::zone_xml("  <service name=\"https\"/>\n"));
  Diagnostics diag;
  ReadRequest request;
  request.config_dirs = {first.dir(), second.dir()};
  const Config config = read_config(request, diag);
  CHECK_FALSE(diag.has_errors());
  CHECK(config.zones.at("work").body.services == std::vector<std::string>{"https"});
}

TEST_CASE("reader: combined zones from zones/<dir>/*.xml") {
  TempTree etc;
  etc.write("zones/lab/a.xml", test::zone_xml("  <interface name=\"veth-a\"/>\n  <service name=\"ssh\"/>\n"
                                              "  <rule><service name=\"http\"/><accept/></rule>\n",
                                              " target=\"DROP\""));
  etc.write("zones/lab/b.xml",
            test::zone_xml("  <interface name=\"veth+\"/>\n  <service name=\"ssh\"/>\n  <masquerade/>\n"
                           "  <forward/>\n  <rule><service name=\"http\"/><accept/></rule>\n"));
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  REQUIRE(config.zones.count("lab"));
  CHECK_FALSE(config.zones.count("lab/a"));
  const Zone& lab = config.zones.at("lab");
  REQUIRE(lab.interfaces.size() == 2);
  CHECK(lab.interfaces[1].pattern.prefix);
  CHECK(lab.body.services == std::vector<std::string>{"ssh"});
  CHECK(lab.body.masquerade.has_value());
  CHECK(lab.forward);
  CHECK(lab.body.rules.size() == 2);          // concatenated, not deduplicated
  CHECK(lab.target == ZoneTarget::default_);  // firewalld does not carry a part's target over
}

TEST_CASE("reader: service includes are kept by name and checked, cycles are harmless") {
  TempTree etc;
  etc.write("services/a.xml",
            std::string(kHeader) +
                "<service><include service=\"b\"/><port port=\"1\" protocol=\"tcp\"/></service>");
  etc.write("services/b.xml",
            std::string(kHeader) + "<service><include service=\"a\"/><include service=\"ssh\"/></service>");
  etc.write("zones/public.xml", test::zone_xml("  <service name=\"a\"/>\n"));
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  CHECK(config.services.at("b").includes == std::vector<std::string>{"a", "ssh"});

  etc.write("services/c.xml",
            std::string(kHeader) + "<service>\n  <include service=\"nosuch\"/>\n</service>");
  Diagnostics bad;
  test::read(etc, bad);
  CHECK_THAT(test::first_error(bad),
             Catch::Contains("services/c.xml:3:3: error: service c includes the unknown service nosuch"));
}

TEST_CASE(
    "reader: a backwards port range is turned round and a repeated include ignored, as firewalld does") {
  // firewalld's getPortRange swaps "90-80" to 80-90; its service reader warns about a repeated include.
  TempTree etc;
  etc.write("services/a.xml", std::string(kHeader) +
                                  "<service>\n  <port port=\"90-80\" protocol=\"tcp\"/>\n"
                                  "  <include service=\"ssh\"/>\n  <include service=\"ssh\"/>\n</service>");
  etc.write("zones/public.xml", test::zone_xml("  <service name=\"a\"/>\n"));
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  const Service& a = config.services.at("a");
  REQUIRE(a.ports.size() == 1);
  CHECK(a.ports[0].range == ir::PortRange{80, 90});
  CHECK(a.includes == std::vector<std::string>{"ssh"});
  CHECK_THAT(
      diag.text(),
      Catch::Contains("services/a.xml:5:3: warning: include ssh is listed twice; the repetition is ignored"));
}

TEST_CASE("reader: ipsets with entries, invalid entries and timeouts") {
  TempTree etc;
  etc.write("ipsets/allowed.xml",
            std::string(kHeader) +
                "<ipset type=\"hash:net\">\n  <entry>10.77.0.8/29</entry>\n  <entry>10.1.2.3</entry>\n"
                "  <entry>nonsense</entry>\n  <entry>10.1.2.3</entry>\n</ipset>\n");
  etc.write(
      "ipsets/v6.xml",
      std::string(kHeader) +
          "<ipset type=\"hash:ip\"><option name=\"family\" value=\"inet6\"/><entry>fd00::1</entry></ipset>");
  etc.write("ipsets/macs.xml",
            std::string(kHeader) + "<ipset type=\"hash:mac\"><entry>00:11:22:33:44:55</entry></ipset>");
  etc.write(
      "ipsets/temp.xml",
      std::string(kHeader) +
          "<ipset type=\"hash:ip\"><option name=\"timeout\" value=\"60\"/><entry>10.0.0.1</entry></ipset>");
  etc.write("ipsets/ports.xml",
            std::string(kHeader) + "<ipset type=\"hash:ip,port\"><entry>10.0.0.1,tcp:80</entry></ipset>");
  etc.write("zones/drop.xml", test::zone_xml("  <source ipset=\"allowed\"/>\n  <source ipset=\"macs\"/>\n",
                                             " target=\"DROP\""));
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  const IpSet& allowed = config.ipsets.at("allowed");
  REQUIRE(allowed.addresses.size() == 2);
  CHECK(ir::to_string(allowed.addresses[0]) == "10.77.0.8/29");
  CHECK_THAT(diag.text(), Catch::Contains("allowed.xml:5:3: warning: invalid entry 'nonsense'"));
  CHECK_THAT(diag.text(), Catch::Contains("allowed.xml:6:3: warning: entry 10.1.2.3 is listed twice"));
  CHECK(config.ipsets.at("v6").family == Family::ipv6);
  CHECK(config.ipsets.at("v6").addresses.size() == 1);
  CHECK(config.ipsets.at("macs").macs.size() == 1);
  CHECK(config.ipsets.at("temp").has_timeout);
  CHECK(config.ipsets.at("temp").addresses.empty());
  CHECK(config.ipsets.at("ports").other_entries == std::vector<std::string>{"10.0.0.1,tcp:80"});
  CHECK(config.zones.at("drop").sources.size() == 2);
}

TEST_CASE("reader: ipset entries as firewalld checks them: overlaps, a zero MAC, a timeout of 00") {
  TempTree etc;
  etc.write("ipsets/feed.xml", std::string(kHeader) +
                                   "<ipset type=\"hash:net\">\n  <entry>192.0.2.0/24</entry>\n"
                                   "  <entry>10.1.0.0/16</entry>\n  <entry>10.0.0.0/8</entry>\n</ipset>\n");
  // Apart, or the same network twice (nft takes that).
  etc.write("ipsets/apart.xml", std::string(kHeader) +
                                    "<ipset type=\"hash:net\">\n  <entry>10.0.0.0/16</entry>\n"
                                    "  <entry>10.1.0.0/16</entry>\n  <entry>192.0.2.1</entry>\n"
                                    "  <entry>192.0.2.1/32</entry>\n</ipset>\n");
  // A range that starts at another entry overlaps it, though the range's first CIDR is that entry.
  etc.write("ipsets/range.xml", std::string(kHeader) +
                                    "<ipset type=\"hash:ip\">\n  <entry>10.0.0.1</entry>\n"
                                    "  <entry>10.0.0.1-10.0.0.3</entry>\n</ipset>\n");
  etc.write("ipsets/macs.xml", std::string(kHeader) +
                                   "<ipset type=\"hash:mac\">\n  <entry>00:00:00:00:00:00</entry>\n"
                                   "  <entry>00:11:22:33:44:55</entry>\n</ipset>\n");
  etc.write("ipsets/temp.xml", std::string(kHeader) +
                                   "<ipset type=\"hash:ip\"><option name=\"timeout\" value=\"00\"/>"
                                   "<entry>10.0.0.1</entry></ipset>");
  etc.write("ipsets/first.xml",
            std::string(kHeader) +
                "<ipset type=\"hash:ip\"><option name=\"timeout\" value=\"0\"/>"
                "<option name=\"timeout\" value=\"300\"/><entry>10.0.0.1</entry></ipset>");
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  const std::string text = diag.text();
  INFO(text);
  CHECK_FALSE(diag.has_errors());
  CHECK_THAT(text,
             Catch::Contains("feed.xml:2:1: warning: ipset feed holds overlapping entries (10.0.0.0/8 and "
                             "10.1.0.0/16): firewalld's nftables backend leaves out the batch"));
  CHECK(config.ipsets.at("feed").addresses.size() == 3);  // fwengine keeps them all
  CHECK_THAT(text, !Catch::Contains("ipset apart holds overlapping"));
  CHECK_THAT(text, Catch::Contains("range.xml:2:1: warning: ipset range holds overlapping entries"));
  CHECK_THAT(text, Catch::Contains("macs.xml:3:3: warning: invalid entry '00:00:00:00:00:00' in ipset macs "
                                   "(ipset refuses 00:00:00:00:00:00)"));
  CHECK(config.ipsets.at("macs").macs.size() == 1);
  CHECK(config.ipsets.at("temp").has_timeout);
  CHECK(config.ipsets.at("temp").addresses.empty());
  CHECK_FALSE(config.ipsets.at("first").has_timeout);  // the first option counts
  CHECK(config.ipsets.at("first").addresses.size() == 1);
  // 1.3.3 loads an ipset's entries in one nft transaction, which the overlap fails: it then falls back
  // to its stock configuration.
  Diagnostics v1_3;
  test::read(etc, v1_3, Compat::v1_3);
  CHECK_THAT(v1_3.text(),
             Catch::Contains("feed.xml:2:1: error: ipset feed holds overlapping entries (10.0.0.0/8 "
                             "and 10.1.0.0/16), which firewalld 1.3.3 cannot load"));
}

TEST_CASE("reader: ipset ranges become the CIDRs that cover them, what ipset refuses is ignored") {
  TempTree etc;
  etc.write("ipsets/ranges.xml",
            std::string(kHeader) +
                "<ipset type=\"hash:ip\">\n  <entry>10.0.0.5-10.0.0.9</entry>\n  <entry>0.0.0.0</entry>\n"
                "  <entry>10.0.0.9-10.0.0.5</entry>\n</ipset>\n");
  etc.write("ipsets/nets.xml", std::string(kHeader) +
                                   "<ipset type=\"hash:net\">\n  <entry>10.2.0.0-10.2.0.255</entry>\n"
                                   "  <entry>0.0.0.0/0</entry>\n  <entry>192.0.2.0/24</entry>\n</ipset>\n");
  etc.write("ipsets/nets6.xml",
            std::string(kHeader) +
                "<ipset type=\"hash:net\">\n  <option name=\"family\" value=\"inet6\"/>\n"
                "  <entry>fd00::-fd00::ffff:ffff</entry>\n  <entry>::/0</entry>\n</ipset>\n");
  etc.write("ipsets/ips6.xml", std::string(kHeader) +
                                   "<ipset type=\"hash:ip\">\n  <option name=\"family\" value=\"inet6\"/>\n"
                                   "  <entry>fd00::1-fd00::2</entry>\n</ipset>\n");
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  auto cidrs = [&](const std::string& set) {
    std::vector<std::string> out;
    for (const auto& c : config.ipsets.at(set).addresses) out.push_back(ir::to_string(c));
    return out;
  };
  CHECK(cidrs("ranges") == std::vector<std::string>{"10.0.0.5/32", "10.0.0.6/31", "10.0.0.8/31"});
  CHECK(cidrs("nets") == std::vector<std::string>{"10.2.0.0/24", "192.0.2.0/24"});
  CHECK(cidrs("nets6") == std::vector<std::string>{"fd00::/96"});
  CHECK(cidrs("ips6").empty());  // hash:ip takes ranges of IPv4 only
  const std::string all = diag.text();
  CHECK_THAT(all, Catch::Contains("ranges.xml:4:3: warning: invalid entry '0.0.0.0'"));
  CHECK_THAT(all, Catch::Contains("ranges.xml:5:3: warning: invalid entry '10.0.0.9-10.0.0.5'"));
  CHECK_THAT(all, Catch::Contains("nets.xml:4:3: warning: invalid entry '0.0.0.0/0'"));
  CHECK_THAT(all, Catch::Contains("nets6.xml:5:3: warning: invalid entry '::/0'"));
  CHECK_THAT(all, Catch::Contains("ips6.xml:4:3: warning: invalid entry 'fd00::1-fd00::2'"));
}

TEST_CASE("reader: ranges cover exactly their addresses, up to a whole family") {
  auto cover = [](std::string_view text) {
    const auto cidrs = parse_address_range(text, Family::any);
    std::vector<std::string> out;
    for (const auto& c : cidrs.value()) out.push_back(ir::to_string(c));
    return out;
  };
  CHECK(cover("0.0.0.0-255.255.255.255") == std::vector<std::string>{"0.0.0.0/0"});
  CHECK(cover("10.0.0.1-10.0.0.1") == std::vector<std::string>{"10.0.0.1/32"});
  CHECK(cover("10.0.0.255-10.0.1.0") == std::vector<std::string>{"10.0.0.255/32", "10.0.1.0/32"});
  CHECK(cover("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == std::vector<std::string>{"::/0"});
  CHECK(cover("::1-::2") == std::vector<std::string>{"::1/128", "::2/128"});
  CHECK_FALSE(parse_address_range("10.0.0.1-fd00::1", Family::any));
  CHECK_FALSE(parse_address_range("10.0.0.1", Family::any));
}

TEST_CASE("reader: zone sources, MAC addresses, dotted masks") {
  TempTree etc;
  etc.write("zones/trusted.xml",
            test::zone_xml("  <source address=\"10.77.0.3\"/>\n  <source address=\"10.1.0.0/255.255.0.0\"/>\n"
                           "  <source address=\"fd77::/64\"/>\n  <source address=\"00:11:22:33:44:55\"/>\n",
                           " target=\"ACCEPT\""));
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  const auto& sources = config.zones.at("trusted").sources;
  REQUIRE(sources.size() == 4);
  CHECK(ir::to_string(*sources[1].cidr) == "10.1.0.0/16");
  CHECK(sources[3].kind == ZoneSource::Kind::mac);
}

TEST_CASE("reader: firewalld.conf keys, unknown keys and a missing DefaultZone") {
  TempTree etc;
  etc.write("firewalld.conf",
            "# comment\nDefaultZone=nosuchzone\nLogDenied=unicast\nIPv6_rpfilter=no\nFrobnicate=yes\n"
            "LogDenied=all\nFirewallBackend=nftables\n");
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  CHECK(config.settings.default_zone == "public");
  CHECK(config.settings.log_denied == "unicast");
  CHECK_FALSE(config.settings.ipv6_rpfilter);
  const std::string all = diag.text();
  CHECK_THAT(all, Catch::Contains("warning: DefaultZone nosuchzone does not exist; firewalld uses public"));
  CHECK_THAT(all, Catch::Contains("firewalld.conf:5:1: warning: unknown key Frobnicate"));
  CHECK_THAT(all, Catch::Contains("firewalld.conf:6:1: warning: LogDenied is set twice"));
}

TEST_CASE("reader: FirewallBackend=iptables with a -forward IPv6_rpfilter is refused, as by 2.2+") {
  TempTree etc;
  etc.write("firewalld.conf", "DefaultZone=drop\nFirewallBackend=iptables\nIPv6_rpfilter=loose-forward\n");
  Diagnostics v2;
  const Config config = test::read(etc, v2, Compat::v2);
  CHECK(config.settings.firewall_backend == "iptables");
  CHECK_THAT(test::first_error(v2),
             Catch::Contains("firewalld.conf:2:1: error: IPv6_rpfilter=loose-forward is incompatible with "
                             "FirewallBackend=iptables"));
  etc.write("firewalld.conf", "FirewallBackend=IPTables\nIPv6_rpfilter=loose\n");
  Diagnostics loose;
  test::read(etc, loose, Compat::v2);
  CHECK_FALSE(loose.has_errors());
  // firewalld's check compares the values as written.
  etc.write("firewalld.conf", "FirewallBackend=IPTables\nIPv6_rpfilter=Loose-Forward\n");
  Diagnostics written;
  test::read(etc, written, Compat::v2);
  CHECK_FALSE(written.has_errors());
}

TEST_CASE("reader: StrictForwardPorts is yes unless it says no or false, as fw.py reads it") {
  TempTree etc;
  for (const auto& [text, strict] : std::vector<std::pair<std::string, bool>>{
           {"yes", true}, {"1", true}, {"on", true}, {"No", false}, {"FALSE", false}, {"", false}}) {
    etc.write("firewalld.conf", "StrictForwardPorts=" + text + "\n");
    Diagnostics diag;
    const Config config = test::read(etc, diag, Compat::v2);
    INFO(text << ": " << diag.text());
    CHECK(config.settings.strict_forward_ports == strict);
    if (!text.empty()) CHECK(diag.text().find("StrictForwardPorts") == std::string::npos);
  }
}

TEST_CASE("reader: direct.xml is read with locations") {
  TempTree etc;
  etc.write("direct.xml", std::string(kHeader) +
                              "<direct>\n  <rule ipv=\"ipv4\" table=\"filter\" chain=\"INPUT\" "
                              "priority=\"0\">-p tcp --dport 22 -j DROP</rule>\n"
                              "  <passthrough ipv=\"ipv6\">-A INPUT -j ACCEPT</passthrough>\n</direct>\n");
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  CHECK_FALSE(diag.has_errors());
  REQUIRE(config.direct.size() == 2);
  CHECK(config.direct[0].args == "-p tcp --dport 22 -j DROP");
  CHECK(config.direct[0].chain == "INPUT");
  CHECK(config.direct[0].loc.line == 3);
  CHECK(config.direct[1].kind == DirectRule::Kind::passthrough);
}

TEST_CASE("reader: policies and their constraints") {
  TempTree etc;
  etc.write("policies/ok.xml",
            std::string(kHeader) +
                "<policy target=\"DROP\" priority=\"-10\">\n  <ingress-zone name=\"public\"/>\n"
                "  <egress-zone name=\"HOST\"/>\n  <port port=\"8080\" protocol=\"tcp\"/>\n</policy>\n");
  Diagnostics diag;
  const Config config = test::read(etc, diag);
  INFO(diag.text());
  CHECK_FALSE(diag.has_errors());
  CHECK(config.policies.at("ok").target == PolicyTarget::drop);
  CHECK(config.policies.at("ok").priority == -10);

  TempTree bad;
  bad.write("policies/hosts.xml", std::string(kHeader) +
                                      "<policy target=\"ACCEPT\">\n  <ingress-zone name=\"HOST\"/>\n"
                                      "  <egress-zone name=\"HOST\"/>\n  <masquerade/>\n</policy>\n");
  bad.write("policies/mixed.xml",
            std::string(kHeader) +
                "<policy target=\"ACCEPT\">\n  <ingress-zone name=\"ANY\"/>\n"
                "  <ingress-zone name=\"public\"/>\n  <egress-zone name=\"nosuch\"/>\n"
                "  <forward-port port=\"80\" protocol=\"tcp\" to-port=\"8080\"/>\n</policy>\n");
  bad.write("policies/notarget.xml", std::string(kHeader) + "<policy>\n</policy>\n");
  Diagnostics errors;
  test::read(bad, errors);
  const std::string all = errors.text();
  CHECK_THAT(all, Catch::Contains("hosts.xml:2:1: error: policy hosts: HOST cannot be both"));
  CHECK_THAT(all, Catch::Contains("hosts.xml:5:3: error: policy hosts: masquerade is invalid with HOST"));
  CHECK_THAT(all, Catch::Contains("mixed.xml:2:1: error: policy mixed: ingress zones may be"));
  CHECK_THAT(all, Catch::Contains("mixed.xml:2:1: error: policy mixed names the unknown egress zone nosuch"));
  CHECK_THAT(all, Catch::Contains("mixed.xml:6:3: error: policy mixed: a forward-port needs to-addr"));
  CHECK_THAT(all, Catch::Contains("notarget.xml:2:1: error: <policy> lacks the attribute 'target'"));
}

TEST_CASE("reader: a forward-port with to-addr to egress zone HOST is valid from 2.2 on") {
  TempTree etc;
  etc.write("policies/to-host.xml",
            std::string(kHeader) +
                "<policy target=\"CONTINUE\">\n  <ingress-zone name=\"ANY\"/>\n"
                "  <egress-zone name=\"HOST\"/>\n"
                "  <forward-port port=\"8080\" protocol=\"tcp\" to-addr=\"192.0.2.5\"/>\n"
                "  <rule family=\"ipv4\"><forward-port port=\"8081\" protocol=\"tcp\" to-addr=\"192.0.2.6\"/>"
                "</rule>\n</policy>\n");
  Diagnostics v2;
  test::read(etc, v2);
  INFO(v2.text());
  CHECK_FALSE(v2.has_errors());
  Diagnostics v1_3;
  test::read(etc, v1_3, Compat::v1_3);
  INFO(v1_3.text());
  CHECK_THAT(v1_3.text(),
             Catch::Contains("to-host.xml:5:3: error: policy to-host: a forward-port with to-addr "
                             "is invalid for egress zone HOST"));
  CHECK_THAT(v1_3.text(),
             Catch::Contains("to-host.xml:6:3: error: policy to-host: a forward-port with to-addr"));
}

TEST_CASE("reader: bad inputs are errors at file:line:col") {
  struct Case {
    const char* what;
    std::string file, text, expected;
  };
  const std::vector<Case> cases = {
      {"unknown element", "zones/public.xml", test::zone_xml("  <service name=\"ssh\"/>\n  <bogus/>\n"),
       "zones/public.xml:4:3: error: unknown element <bogus> in a zone"},
      {"misspelt element", "zones/public.xml", test::zone_xml("  <servce name=\"ssh\"/>\n"),
       "zones/public.xml:3:3: error: unknown element <servce> in a zone (did you mean 'service'?"},
      {"unknown attribute", "zones/public.xml", test::zone_xml("  <service name=\"ssh\" nme=\"x\"/>\n"),
       "zones/public.xml:3:3: error: <service> has no attribute 'nme'"},
      {"bad address", "zones/public.xml", test::zone_xml("  <source address=\"10.0.0.300\"/>\n"),
       "zones/public.xml:3:3: error: invalid source address '10.0.0.300'"},
      {"bad port", "zones/public.xml", test::zone_xml("  <port port=\"70000\" protocol=\"tcp\"/>\n"),
       "zones/public.xml:3:3: error: invalid port '70000'"},
      {"bad port protocol", "zones/public.xml", test::zone_xml("  <port port=\"22\" protocol=\"icmp\"/>\n"),
       "zones/public.xml:3:3: error: invalid protocol 'icmp' for a port"},
      {"unknown service", "zones/public.xml", test::zone_xml("  <service name=\"sshh\"/>\n"),
       "zones/public.xml:3:3: error: zone public uses the unknown service sshh (did you mean 'ssh'?)"},
      {"unknown icmptype", "zones/public.xml", test::zone_xml("  <icmp-block name=\"echo\"/>\n"),
       "zones/public.xml:3:3: error: zone public blocks the unknown icmptype echo"},
      {"unknown ipset", "zones/public.xml", test::zone_xml("  <source ipset=\"nosuch\"/>\n"),
       "zones/public.xml:3:3: error: unknown ipset nosuch"},
      {"rule with unknown service", "zones/public.xml",
       test::zone_xml("  <rule>\n    <service name=\"nosuch\"/>\n    <accept/>\n  </rule>\n"),
       "zones/public.xml:3:3: error: zone public: rule uses the unknown service nosuch"},
      {"broken XML", "zones/public.xml", test::zone_xml("  <service name=\"ssh\">\n"),
       "zones/public.xml:4:3: error: broken XML: mismatched tag"},
      {"bad interface", "zones/public.xml", test::zone_xml("  <interface name=\"eth*\"/>\n"),
       "zones/public.xml:3:3: error: invalid interface name 'eth*'"},
      {"bad target", "zones/public.xml", test::zone_xml("", " target=\"REJECT\""),
       "zones/public.xml:2:1: error: invalid zone target 'REJECT'"},
      {"zone name too long", "zones/" + std::string(97, 'z') + ".xml", test::zone_xml(""),
       "zones/" + std::string(97, 'z') + ".xml:2:1: error: invalid zone name '" + std::string(97, 'z') + "'"},
      {"policy priority 0", "policies/p.xml",
       std::string(kHeader) + "<policy target=\"ACCEPT\" priority=\"0\">\n  <ingress-zone name=\"public\"/>\n"
                              "  <egress-zone name=\"HOST\"/>\n</policy>\n",
       "policies/p.xml:2:1: error: policy priority 0 is reserved"},
      {"more entries than maxelem", "ipsets/x.xml",
       std::string(kHeader) + "<ipset type=\"hash:ip\">\n  <option name=\"maxelem\" value=\"1\"/>\n"
                              "  <entry>10.0.0.1</entry>\n  <entry>10.0.0.2</entry>\n</ipset>\n",
       "ipsets/x.xml:3:3: error: ipset x has 2 entries, more than its maxelem 1"},
      {"bad ipset type", "ipsets/x.xml", std::string(kHeader) + "<ipset type=\"bitmap:port\"/>\n",
       "ipsets/x.xml:2:1: error: unsupported ipset type 'bitmap:port'"},
      {"forward-port without target", "zones/public.xml",
       test::zone_xml("  <forward-port port=\"80\" protocol=\"tcp\"/>\n"),
       "zones/public.xml:3:3: error: forward-port needs to-port or to-addr"},
      {"wrong document element", "services/x.xml", std::string(kHeader) + "<zone/>\n",
       "services/x.xml:2:1: error: the document element is <zone>, expected <service>"},
      {"rule destination with a service destination", "zones/public.xml",
       test::zone_xml("  <rule family=\"ipv6\">\n    <destination address=\"fe80::1\"/>\n    <service "
                      "name=\"dhcpv6-client\"/>\n"
                      "    <accept/>\n  </rule>\n"),
       "zones/public.xml:3:3: error: zone public: rule has a destination and service dhcpv6-client has one "
       "too"},
      {"icmptype not in the rule family", "zones/public.xml",
       test::zone_xml("  <rule family=\"ipv6\">\n    <icmp-block name=\"host-prohibited\"/>\n  </rule>\n"),
       "zones/public.xml:3:3: error: zone public: icmptype host-prohibited does not exist in the rule's "
       "family"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    TempTree etc;
    etc.write(c.file, c.text);
    Diagnostics diag;
    test::read(etc, diag);
    CHECK_THAT(test::first_error(diag), Catch::Contains(etc.dir() + "/" + c.expected));
  }
}

TEST_CASE("reader: a limit faster than 10000/s is refused in 2.x mode only") {
  TempTree etc;
  etc.write("zones/public.xml",
            test::zone_xml("  <rule>\n    <service name=\"ssh\"/>\n"
                           "    <accept><limit value=\"20000/s\"/></accept>\n  </rule>\n"
                           "  <rule>\n    <service name=\"http\"/>\n"
                           "    <accept><limit value=\"600000/m\"/></accept>\n  </rule>\n"));
  Diagnostics v2;
  test::read(etc, v2, Compat::v2);
  CHECK(v2.error_count() == 1);
  CHECK_THAT(test::first_error(v2),
             Catch::Contains("public.xml:3:3: error: zone public: limit 20000/s is too fast"));
  Diagnostics v13;
  test::read(etc, v13, Compat::v1_3);
  CHECK_FALSE(v13.has_errors());
}

TEST_CASE("reader: a rule's destination conflicts with one of an included service too") {
  TempTree etc;
  etc.write("services/with-mdns.xml", std::string(kHeader) +
                                          "<service>\n  <port port=\"8080\" protocol=\"tcp\"/>\n"
                                          "  <include service=\"mdns\"/>\n</service>\n");
  etc.write("zones/public.xml",
            test::zone_xml("  <rule family=\"ipv4\">\n    <destination address=\"10.0.0.1\"/>\n"
                           "    <service name=\"with-mdns\"/>\n    <accept/>\n  </rule>\n"));
  Diagnostics diag;
  test::read(etc, diag);
  CHECK_THAT(test::first_error(diag),
             Catch::Contains("public.xml:3:3: error: zone public: rule has a destination and service mdns "
                             "has one too"));
}

TEST_CASE("reader: an interface or source bound to two zones") {
  TempTree etc;
  etc.write("zones/public.xml",
            test::zone_xml("  <interface name=\"eth0\"/>\n  <source address=\"10.0.0.0/8\"/>\n"));
  etc.write("zones/work.xml",
            test::zone_xml("  <source address=\"10.0.0.0/8\"/>\n  <interface name=\"eth0\"/>\n"));
  Diagnostics diag;
  test::read(etc, diag);
  const std::string all = diag.text();
  CHECK_THAT(all,
             Catch::Contains(etc.dir() +
                             "/zones/work.xml:4:3: error: interface eth0 is already bound to zone public"));
  CHECK_THAT(
      all, Catch::Contains(etc.dir() +
                           "/zones/work.xml:3:3: error: source 10.0.0.0/8 is already bound to zone public"));
}

TEST_CASE("reader: the parts of a combined zone may not repeat a binding, as firewalld checks them") {
  TempTree etc;
  etc.write("zones/lab/a.xml", test::zone_xml("  <interface name=\"eth1\"/>\n"));
  etc.write("zones/lab/b.xml", test::zone_xml("  <interface name=\"eth1\"/>\n"));
  Diagnostics diag;
  test::read(etc, diag);
  CHECK_THAT(diag.text(),
             Catch::Contains(etc.dir() + "/zones/lab/b.xml:3:3: error: interface eth1 is already "
                                         "bound to zone lab/a"));
}

TEST_CASE("reader: compat 1.3 warns and skips where 2.x refuses") {
  TempTree etc;
  etc.write("zones/public.xml",
            test::zone_xml(
                "  <service name=\"ssh\"/>\n  <source mac=\"00:11:22:33:44:55\"/>\n"
                "  <rule>\n    <service name=\"ssh\"/>\n    <log level=\"warn\"/>\n    <accept/>\n  </rule>\n"
                "  <rule family=\"ipv4\">\n    <source address=\"10.0.0.1\"/>\n    <service name=\"ssh\"/>\n"
                "    <port port=\"1\" protocol=\"tcp\"/>\n    <accept/>\n  </rule>\n"
                "  <tcp-mss-clamp value=\"1400\"/>\n"
                "  <rule>\n    <service name=\"http\"/>\n    <accept/>\n  </rule>\n"));
  Diagnostics v13;
  const Config config = test::read(etc, v13, Compat::v1_3);
  INFO(v13.text());
  CHECK_FALSE(v13.has_errors());
  const Zone& pub = config.zones.at("public");
  CHECK(pub.sources.empty());
  REQUIRE(pub.body.rules.size() == 1);
  CHECK(pub.body.rules[0].text == "rule service name=\"http\" accept");
  const std::string warnings = v13.text();
  CHECK_THAT(warnings, Catch::Contains("public.xml:4:3: warning: <source> has no address and no ipset"));
  CHECK_THAT(warnings,
             Catch::Contains("public.xml:5:3: warning: invalid rich rule: invalid log level 'warn'"));
  CHECK_THAT(warnings, Catch::Contains("public.xml:13:5: warning: invalid rich rule: more than one element"));
  CHECK_THAT(warnings,
             Catch::Contains("public.xml:16:3: warning: <tcp-mss-clamp> is only allowed inside a <rule>"));

  Diagnostics v2;
  test::read(etc, v2, Compat::v2);
  CHECK(v2.error_count() == 4);
  CHECK_THAT(test::first_error(v2),
             Catch::Contains("public.xml:4:3: error: <source> has no address and no ipset"));
}

TEST_CASE("reader: 2.4+ stock policies (disable, long names) load, and 1.3 refuses them") {
  TempTree etc;
  const std::string name = "gateway-lan-to-world";  // longer than 1.3's 18 characters
  etc.write("policies/" + name + ".xml",
            std::string(kHeader) +
                "<policy target=\"ACCEPT\" priority=\"1000\">\n  <disable />\n"
                "  <ingress-zone name=\"internal\"/>\n  <egress-zone name=\"public\"/>\n</policy>\n");
  etc.write("zones/office-network-lan.xml", test::zone_xml(""));
  etc.write("firewalld.conf", "IPv6_rpfilter=Loose\n");
  Diagnostics v2;
  const Config config = test::read(etc, v2, Compat::v2);
  INFO(v2.text());
  CHECK_FALSE(v2.has_errors());
  CHECK(config.policies.at(name).disabled);
  CHECK(config.zones.count("office-network-lan") == 1);
  CHECK(config.settings.ipv6_rpfilter_mode == "loose");  // firewalld lower-cases the value

  Diagnostics v13;
  test::read(etc, v13, Compat::v1_3);
  const std::string all = v13.text();
  CHECK_THAT(all, Catch::Contains("unknown element <disable> in a policy"));
  CHECK_THAT(all, Catch::Contains("invalid policy name '" + name + "'"));
  CHECK_THAT(all, Catch::Contains("invalid zone name 'office-network-lan'"));
}

TEST_CASE("reader: zone priorities are a 2.x attribute") {
  TempTree etc;
  etc.write("zones/work.xml", test::zone_xml("", " ingress-priority=\"-5\" egress-priority=\"3\""));
  Diagnostics v2;
  const Config config = test::read(etc, v2, Compat::v2);
  CHECK_FALSE(v2.has_errors());
  CHECK(config.zones.at("work").ingress_priority == -5);
  CHECK(config.zones.at("work").egress_priority == 3);
  Diagnostics v13;
  test::read(etc, v13, Compat::v1_3);
  CHECK_THAT(test::first_error(v13), Catch::Contains("<zone> has no attribute 'ingress-priority'"));
}

TEST_CASE("reader: what cannot be read in a tree is an error, not an object less") {
  TempTree etc;
  etc.write("zones/work.xml", test::zone_xml(""));
  std::filesystem::create_symlink(etc.dir() + "/nowhere", etc.dir() + "/zones/lab.xml");  // dangling
  std::filesystem::create_symlink("user@host.1:1", etc.dir() + "/zones/.#work.xml");      // an editor's lock
  std::filesystem::create_directory(etc.dir() + "/firewalld.conf");
  etc.write("policies", "a file where a directory belongs");
  Diagnostics diag;
  test::read(etc, diag);
  const std::string all = diag.text();
  CHECK(diag.error_count() == 3);
  CHECK_THAT(all, Catch::Contains("zones/lab.xml: error: cannot read '"));
  CHECK_THAT(all, Catch::Contains("firewalld.conf: error: cannot read '"));
  CHECK_THAT(all,
             Catch::Contains("policies: error: cannot read '" + etc.dir() + "/policies': not a directory"));
}

TEST_CASE("reader: missing directories are errors") {
  Diagnostics diag;
  ReadRequest request;
  request.config_dirs = {"/nonexistent/firewalld"};
  request.defaults_dir = "/nonexistent/stock";
  read_config(request, diag);
  const std::string all = diag.text();
  CHECK_THAT(
      all, Catch::Contains("error: firewalld configuration directory /nonexistent/firewalld does not exist"));
  CHECK_THAT(all, Catch::Contains("error: firewalld defaults directory /nonexistent/stock does not exist"));
}
