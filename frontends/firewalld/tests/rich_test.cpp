// The rich-rule language: valid forms with their canonical text, firewalld's quirks, and one rejected
// rule for every row of Rich_Rule.check's validation table.
#include <catch2/catch.hpp>

#include "rich.hpp"
#include "support.hpp"

using namespace fwe;
using namespace fwe::firewalld;

namespace {

std::optional<RichRule> parse(const std::string& text, Diagnostics& diag) {
  return parse_rich_rule(text, {diag.add_file("<rule>"), 1, 1}, Severity::error, diag);
}

std::string canonical(const std::string& text) {
  Diagnostics diag;
  auto rule = parse(text, diag);
  INFO(diag.text());
  REQUIRE(rule);
  return rule->text;
}

std::string rejected(const std::string& text) {
  Diagnostics diag;
  auto rule = parse(text, diag);
  INFO(text);
  CHECK_FALSE(rule);
  CHECK(diag.error_count() == 1);
  return test::first_error(diag);
}

std::optional<RichRule> from_xml(const std::string& xml_text, Diagnostics& diag,
                                 Severity severity = Severity::error) {
  auto root = xml::parse(xml_text, diag.add_file("rule.xml"), diag);
  REQUIRE(root);
  return read_rich_rule(*root, severity, diag);
}

}  // namespace

TEST_CASE("rich: a limit's burst (2.2+) is kept, in text and XML") {
  CHECK(canonical("rule service name=ssh accept limit value=3/minute burst=10") ==
        "rule service name=\"ssh\" accept limit value=\"3/m\" burst=10");
  Diagnostics diag;
  auto rule = from_xml(
      "<rule>\n  <service name=\"ssh\"/>\n  <accept><limit value=\"3/m\" burst=\"20\"/></accept>\n"
      "</rule>\n",
      diag);
  INFO(diag.text());
  REQUIRE(rule);
  REQUIRE(rule->action.limit);
  CHECK(rule->action.limit->burst == 20);
  CHECK(rule->text == "rule service name=\"ssh\" accept limit value=\"3/m\" burst=20");
}

TEST_CASE("rich: canonical text is firewalld's str() order") {
  CHECK(canonical("rule family=ipv4 priority=5 source address=10.0.0.0/8 port port=22 protocol=tcp accept") ==
        "rule priority=\"5\" family=\"ipv4\" source address=\"10.0.0.0/8\" port port=\"22\" protocol=\"tcp\" "
        "accept");
  CHECK(canonical("rule accept service name=ssh") == "rule service name=\"ssh\" accept");
  CHECK(
      canonical(
          "rule family=\"ipv6\" destination not address=\"fd00::/8\" service name=\"http\" log "
          "prefix=\"web \" level=\"info\" limit value=\"3/minute\" audit reject type=icmp6-adm-prohibited") ==
      "rule family=\"ipv6\" destination NOT address=\"fd00::/8\" service name=\"http\" log prefix=\"web \" "
      "level=\"info\" limit value=\"3/m\" audit reject type=\"icmp6-adm-prohibited\"");
  CHECK(canonical("rule nflog group=5 queue-size=10 prefix=x source ipset=blk drop") ==
        "rule source ipset=\"blk\" nflog group=\"5\" prefix=\"x\" queue-size=\"10\" drop");
  CHECK(canonical("rule source mac=00:11:22:aa:bb:cc mark set=0x10/0xff") ==
        "rule source mac=\"00:11:22:AA:BB:CC\" mark set=0x10/0xff");
  CHECK(
      canonical("rule family=ipv4 forward-port port=80 protocol=tcp to-port=8080 to-addr=10.0.0.2") ==
      "rule family=\"ipv4\" forward-port port=\"80\" protocol=\"tcp\" to-port=\"8080\" to-addr=\"10.0.0.2\"");
  CHECK(canonical("rule tcp-mss-clamp") == "rule tcp-mss-clamp");
  CHECK(canonical("rule family=ipv4 masquerade") == "rule family=\"ipv4\" masquerade");
  CHECK(canonical("rule icmp-block name=echo-request") == "rule icmp-block name=\"echo-request\"");
  CHECK(canonical("rule protocol value=gre accept") == "rule protocol value=\"gre\" accept");
}

TEST_CASE("rich: parsed values") {
  Diagnostics diag;
  auto rule = parse(
      "rule family=ipv4 source address=192.168.1.7/255.255.255.0 port port=ssh-http protocol=tcp "
      "log level=debug limit value=2/h accept limit value=10/s",
      diag);
  INFO(diag.text());
  REQUIRE(rule);
  CHECK(rule->family == Family::ipv4);
  CHECK(ir::to_string(*rule->source->cidr) == "192.168.1.0/24");
  CHECK(rule->element.kind == RichElement::Kind::port);
  CHECK(rule->element.port->range == ir::PortRange{22, 80});
  CHECK(rule->log->level == "debug");
  CHECK(rule->log->limit->rate == 2);
  CHECK(rule->log->limit->unit == "hour");
  CHECK(rule->action.kind == RichAction::Kind::accept);
  CHECK(rule->action.limit->unit == "second");
  auto mark = parse("rule source ipset=x mark set=7", diag);
  REQUIRE(mark);
  CHECK(mark->action.mark == 7);
  CHECK_FALSE(mark->action.mark_has_mask);
  auto audit = parse("rule service name=ssh audit accept", diag);
  REQUIRE(audit);
  CHECK(audit->audit_present);
}

TEST_CASE("rich: quirks of firewalld's string form") {
  // Any non-empty invert value inverts (Python truthiness); 'not' does too.
  CHECK(canonical("rule family=ipv4 source address=10.0.0.1 invert=false accept") ==
        "rule family=\"ipv4\" source NOT address=\"10.0.0.1\" accept");
  // A log-only rule is fine when its priority is not 0.
  CHECK(canonical("rule priority=-5 log prefix=all") == "rule priority=\"-5\" log prefix=\"all\"");
  // Quotes group words, control characters vanish.
  CHECK(canonical("rule service name='ssh' log prefix=\"a b\"\x01 accept") ==
        "rule service name=\"ssh\" log prefix=\"a b\" accept");
  // Inside double quotes an escaped quote does not end the word.
  CHECK(canonical(R"(rule service name=ssh log prefix="say \"hi\" \\o/" accept)") ==
        R"(rule service name="ssh" log prefix="say \"hi\" \\o/" accept)");
  // C1 control code points vanish too; other non-ASCII characters stay.
  CHECK(canonical("rule service name=ss\xc2\x85h log prefix=\"\xc3\xa9t\xc3\xa9\" accept") ==
        "rule service name=\"ssh\" log prefix=\"\xc3\xa9t\xc3\xa9\" accept");
  CHECK(canonical("rule family=ipv4 source address=10.0.0.1 reject type=tcp-rst") ==
        "rule family=\"ipv4\" source address=\"10.0.0.1\" reject type=\"tcp-rst\"");
}

TEST_CASE("rich: every validation row is rejected") {
  // firewalld reads rules as Unicode text: a byte that is not UTF-8 is refused, not guessed at.
  CHECK_THAT(rejected("rule service name=ss\xc2-h accept"), Catch::Contains("not UTF-8 (byte 21)"));
  CHECK_THAT(rejected("rule service name=ssh\xff accept"), Catch::Contains("not UTF-8"));
  CHECK_THAT(rejected("rule service name=ssh\xed\xa0\x80 accept"), Catch::Contains("not UTF-8"));
  CHECK_THAT(rejected("rule source address=10.0.0.1 accept"), Catch::Contains("needs a family"));
  CHECK_THAT(rejected("rule destination address=10.0.0.1 accept"), Catch::Contains("needs a family"));
  CHECK_THAT(rejected("rule forward-port port=80 protocol=tcp to-port=81"),
             Catch::Contains("needs a family"));
  CHECK_THAT(rejected("rule family=ipv4 source address=10.0.0.1"),
             Catch::Contains("no element and no action"));
  CHECK_THAT(rejected("rule log prefix=x"), Catch::Contains("no element and no action"));
  CHECK_THAT(rejected("rule accept"), Catch::Contains("no element, no source and no destination"));
  CHECK_THAT(rejected("rule service name=ssh"), Catch::Contains("no action, log or audit"));
  CHECK_THAT(rejected("rule family=ipv4 source address=1.2.3.4 mac=00:11:22:33:44:55 accept"),
             Catch::Contains("both an address and a mac"));
  CHECK_THAT(rejected("rule source mac=00:11:22:33:44:55 ipset=x accept"),
             Catch::Contains("both a mac and an ipset"));
  CHECK_THAT(rejected("rule family=ipv6 source address=1.2.3.4 accept"),
             Catch::Contains("not a valid ipv6 address"));
  CHECK_THAT(rejected("rule family=ipv4 source address=10.0.0.1/33 accept"),
             Catch::Contains("not a valid ipv4"));
  CHECK_THAT(rejected("rule source mac=00:11:22:33:44 accept"), Catch::Contains("not a valid MAC"));
  CHECK_THAT(rejected("rule source ipset=" + std::string(33, 'a') + " accept"), Catch::Contains("too long"));
  CHECK_THAT(rejected("rule port port=99999 protocol=tcp accept"), Catch::Contains("invalid port '99999'"));
  CHECK_THAT(rejected("rule port port=20-10x protocol=tcp accept"), Catch::Contains("invalid port"));
  CHECK_THAT(rejected("rule port port=22 protocol=icmp accept"), Catch::Contains("invalid protocol 'icmp'"));
  CHECK_THAT(rejected("rule source-port port=22 protocol=gre accept"), Catch::Contains("invalid protocol"));
  CHECK_THAT(rejected("rule protocol value=nosuchproto accept"), Catch::Contains("invalid protocol"));
  CHECK_THAT(rejected("rule protocol value=256 accept"), Catch::Contains("invalid protocol"));
  CHECK_THAT(rejected("rule family=ipv4 masquerade accept"),
             Catch::Contains("masquerade cannot have an action"));
  CHECK_THAT(rejected("rule source mac=00:11:22:33:44:55 masquerade"), Catch::Contains("MAC source"));
  CHECK_THAT(rejected("rule icmp-block name=echo-request drop"),
             Catch::Contains("icmp-block rule cannot have an action"));
  CHECK_THAT(rejected("rule family=ipv4 forward-port port=80 protocol=tcp to-port=81 accept"),
             Catch::Contains("forward-port cannot have an action"));
  CHECK_THAT(rejected("rule family=ipv4 forward-port port=80 protocol=tcp"),
             Catch::Contains("to-port or to-addr"));
  CHECK_THAT(rejected("rule family=ipv4 forward-port port=80 protocol=tcp to-addr=10.0.0.0/24"),
             Catch::Contains("is not one ipv4 address"));
  CHECK_THAT(rejected("rule family=ipv6 forward-port port=80 protocol=tcp to-addr=10.0.0.1"),
             Catch::Contains("is not one ipv6 address"));
  CHECK_THAT(rejected("rule family=ipv4 forward-port port=80 protocol=tcp to-port=70000"),
             Catch::Contains("invalid port"));
  CHECK_THAT(rejected("rule tcp-mss-clamp value=500"), Catch::Contains("invalid tcp-mss-clamp value"));
  CHECK_THAT(rejected("rule tcp-mss-clamp value=1400 accept"),
             Catch::Contains("tcp-mss-clamp cannot have an action"));
  CHECK_THAT(rejected("rule service name=ssh audit"),
             Catch::Contains("audit needs an accept, reject or drop"));
  CHECK_THAT(rejected("rule source ipset=x audit mark set=1"), Catch::Contains("audit needs"));
  CHECK_THAT(rejected("rule service name=ssh reject type=tcp-reset"),
             Catch::Contains("reject type needs a rule family"));
  CHECK_THAT(rejected("rule family=ipv6 service name=ssh reject type=icmp-host-prohibited"),
             Catch::Contains("not valid for ipv6"));
  CHECK_THAT(rejected("rule family=ipv4 service name=ssh reject type=icmp6-no-route"),
             Catch::Contains("not valid for ipv4"));
  CHECK_THAT(rejected("rule service name=ssh accept limit value=0/m"), Catch::Contains("invalid limit"));
  CHECK_THAT(rejected("rule service name=ssh accept limit value=3/week"), Catch::Contains("invalid limit"));
  CHECK_THAT(rejected("rule service name=ssh accept limit value=1/d"), Catch::Contains("too slow"));
  CHECK_THAT(rejected("rule service name=ssh accept limit value=3/m burst=-1"),
             Catch::Contains("invalid limit burst '-1'"));
  CHECK_THAT(rejected("rule service name=ssh accept limit value=3/m burst=10000001"),
             Catch::Contains("invalid limit burst"));
  CHECK_THAT(rejected("rule service name=ssh log level=warn accept"),
             Catch::Contains("invalid log level 'warn'"));
  CHECK_THAT(rejected("rule service name=ssh log level=err accept"),
             Catch::Contains("invalid log level 'err'"));
  CHECK_THAT(rejected("rule service name=ssh log prefix=" + std::string(128, 'p') + " accept"),
             Catch::Contains("longer than 127"));
  CHECK_THAT(rejected("rule service name=ssh nflog group=70000 accept"), Catch::Contains("nflog group"));
  CHECK_THAT(rejected("rule source ipset=x mark set=0x1ffffffff"), Catch::Contains("invalid mark"));
  CHECK_THAT(rejected("rule priority=40000 service name=ssh accept"), Catch::Contains("out of range"));
}

TEST_CASE("rich: the grammar itself") {
  CHECK_THAT(rejected("rule service name=ssh port port=22 protocol=tcp accept"),
             Catch::Contains("more than one element"));
  CHECK_THAT(rejected("rule service name=ssh accept drop"), Catch::Contains("more than one action"));
  CHECK_THAT(rejected("rule source ipset=a source ipset=b accept"), Catch::Contains("more than one source"));
  CHECK_THAT(rejected("rule service name=ssh acept"), Catch::Contains("did you mean 'accept'?"));
  CHECK_THAT(rejected("rule family=ipv5 service name=ssh accept"), Catch::Contains("family 'ipv5'"));
  CHECK_THAT(rejected("rule service name=ssh log prefix=\"x accept"), Catch::Contains("unbalanced quotes"));
  CHECK_THAT(rejected("service name=ssh accept"), Catch::Contains("starts with 'rule'"));
  CHECK_THAT(rejected("rule name=ssh accept"), Catch::Contains("outside of any element"));
  CHECK_THAT(rejected("rule service name=ssh accept color=red"),
             Catch::Contains("unknown attribute 'color'"));
  CHECK_THAT(rejected(""), Catch::Contains("empty rule"));
}

TEST_CASE("rich: the XML form") {
  Diagnostics diag;
  auto rule = from_xml(
      "<rule family=\"ipv4\" priority=\"-3\">\n  <source address=\"10.0.0.1\" invert=\"false\"/>\n"
      "  <service name=\"ssh\"/>\n  <log prefix=\"p\"><limit value=\"2/minute\"/></log>\n"
      "  <reject type=\"icmp-host-prohibited\"/>\n</rule>",
      diag);
  INFO(diag.text());
  REQUIRE(rule);
  // In the XML form only yes/true invert.
  CHECK(rule->text ==
        "rule priority=\"-3\" family=\"ipv4\" source address=\"10.0.0.1\" service name=\"ssh\" log "
        "prefix=\"p\" "
        "limit value=\"2/m\" reject type=\"icmp-host-prohibited\"");
  CHECK(rule->loc.line == 1);
  auto inverted =
      from_xml("<rule family=\"ipv4\"><source address=\"10.0.0.1\" invert=\"Yes\"/><accept/></rule>", diag);
  REQUIRE(inverted);
  CHECK(inverted->source->invert);
  auto clamp = from_xml("<rule><tcp-mss-clamp/></rule>", diag);
  REQUIRE(clamp);
  CHECK(clamp->text == "rule tcp-mss-clamp value=\"pmtu\"");
  CHECK(clamp->element.mss_value == "pmtu");
}

TEST_CASE("rich: XML rule errors point at the element, with the requested severity") {
  Diagnostics diag;
  CHECK_FALSE(from_xml(
      "<rule>\n  <service name=\"ssh\"/>\n  <port port=\"22\" protocol=\"tcp\"/>\n  <accept/>\n</rule>",
      diag));
  CHECK_THAT(test::first_error(diag),
             Catch::Contains("rule.xml:3:3: error: invalid rich rule: more than one element"));

  Diagnostics lenient;
  CHECK_FALSE(from_xml("<rule>\n  <service name=\"ssh\"/>\n  <log level=\"warn\"/>\n  <accept/>\n</rule>",
                       lenient, Severity::warning));
  CHECK_FALSE(lenient.has_errors());
  REQUIRE(lenient.all().size() == 1);
  CHECK_THAT(lenient.format(lenient.all()[0]),
             Catch::Contains("rule.xml:1:1: warning: invalid rich rule: invalid log level"));
}
