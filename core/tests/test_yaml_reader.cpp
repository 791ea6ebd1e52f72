#include <catch2/catch.hpp>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "fwengine/yaml.hpp"

namespace Catch {
template <>
struct StringMaker<fwe::SourceLoc> {
  static std::string convert(const fwe::SourceLoc& loc) {
    return "{file " + std::to_string(loc.file) + ", " + std::to_string(loc.line) + ":" +
           std::to_string(loc.col) + "}";
  }
};
}  // namespace Catch

using fwe::Diagnostics;
using fwe::SourceLoc;
using namespace fwe::yaml;

namespace {

// Parses `text` as the file "test.yaml"; the diagnostics stay inspectable through `diag`.
struct Parsed {
  Diagnostics diag;
  std::uint32_t file = diag.add_file("test.yaml");
  std::optional<std::vector<Node>> docs;
  explicit Parsed(std::string_view text) { docs = parse(text, file, diag); }
  const Node& doc(std::size_t i = 0) const { return docs->at(i); }
};

// The single root of a one-document stream that must parse cleanly.
Node parse_one(std::string_view text) {
  Parsed parsed(text);
  INFO(parsed.diag.text());
  REQUIRE(parsed.docs);
  REQUIRE(parsed.docs->size() == 1);
  return parsed.doc();
}

// The value of `key: <text>`, resolved as a mapping value.
Node value_of(std::string_view text) {
  Node root = parse_one("key: " + std::string(text) + "\n");
  REQUIRE(root.find("key"));
  return *root.find("key");
}

SourceLoc at(std::uint32_t file, std::uint32_t line, std::uint32_t col) {
  return {file, line, col};
}

// The only error of a stream that must fail.
fwe::Diagnostic only_error(const Parsed& parsed) {
  INFO(parsed.diag.text());
  REQUIRE_FALSE(parsed.docs);
  REQUIRE(parsed.diag.all().size() == 1);
  return parsed.diag.all().front();
}

}  // namespace

TEST_CASE("yaml reader: plain scalars resolve by the YAML 1.2 core schema") {
  struct Case {
    const char* text;
    ScalarType type;
  };
  const Case cases[] = {
      {"true", ScalarType::boolean},   {"False", ScalarType::boolean},
      {"TRUE", ScalarType::boolean},   {"yes", ScalarType::string},
      {"on", ScalarType::string},      {"tRue", ScalarType::string},
      {"0", ScalarType::integer},      {"010", ScalarType::integer},
      {"-42", ScalarType::integer},    {"+7", ScalarType::integer},
      {"0x1F", ScalarType::integer},   {"0o17", ScalarType::integer},
      {"0x", ScalarType::string},      {"0o8", ScalarType::string},
      {"1_000", ScalarType::string},   {"-0x1", ScalarType::string},
      {"1.5", ScalarType::floating},   {".5", ScalarType::floating},
      {"1.", ScalarType::floating},    {"-1e3", ScalarType::floating},
      {"2E+2", ScalarType::floating},  {".inf", ScalarType::floating},
      {"-.Inf", ScalarType::floating}, {".NaN", ScalarType::floating},
      {"1e", ScalarType::string},      {".", ScalarType::string},
      {"1.2.3", ScalarType::string},   {"10.0.0.0/8", ScalarType::string},
      {"tcp:22", ScalarType::string},  {"node-endpoint", ScalarType::string},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    Node value = value_of(c.text);
    CHECK(value.is_scalar());
    CHECK(value.scalar_type() == c.type);
    CHECK(value.text() == c.text);
    CHECK_FALSE(value.quoted());
  }
}

TEST_CASE("yaml reader: null forms become null nodes with empty text") {
  for (const char* text : {"~", "null", "Null", "NULL", ""}) {
    INFO(text);
    Node value = value_of(text);
    CHECK(value.is_null());
    CHECK(value.kind() == Kind::null);
    CHECK(value.text().empty());
    CHECK(value.scalar_type() == ScalarType::null);
    CHECK(value.describe() == "null");
  }
  CHECK(value_of("nULL").is_scalar());
}

TEST_CASE("yaml reader: quoted and block scalars are always strings") {
  for (const char* text : {"'010'", "\"true\"", "\"~\"", "''", "\"0x1F\""}) {
    INFO(text);
    Node value = value_of(text);
    CHECK(value.is_scalar());
    CHECK(value.quoted());
    CHECK(value.scalar_type() == ScalarType::string);
    CHECK_FALSE(value.as_int());
    CHECK_FALSE(value.as_bool());
    CHECK_FALSE(value.as_double());
  }
  CHECK(value_of("''").text().empty());
  Node block = *parse_one("text: |\n  42\n").find("text");
  CHECK(block.text() == "42\n");
  CHECK(block.scalar_type() == ScalarType::string);
}

TEST_CASE("yaml reader: scalar conversions") {
  CHECK(value_of("010").as_int() == 10);
  CHECK(value_of("0x1F").as_int() == 31);
  CHECK(value_of("0o17").as_int() == 15);
  CHECK(value_of("-42").as_int() == -42);
  CHECK(value_of("+42").as_int() == 42);
  CHECK(value_of("9223372036854775807").as_int() == INT64_MAX);
  CHECK(value_of("-9223372036854775808").as_int() == INT64_MIN);

  Node too_big = value_of("9223372036854775808");
  CHECK(too_big.scalar_type() == ScalarType::integer);
  CHECK_FALSE(too_big.as_int());
  CHECK(too_big.as_double() == Approx(9223372036854775808.0));
  CHECK_FALSE(value_of("0xFFFFFFFFFFFFFFFFFF").as_int());

  CHECK(value_of("1.5").as_double() == 1.5);
  CHECK(value_of(".5").as_double() == 0.5);
  CHECK(value_of("+1e3").as_double() == 1000.0);
  CHECK(value_of("7").as_double() == 7.0);
  CHECK(value_of("0x10").as_double() == 16.0);
  CHECK(std::isinf(*value_of(".inf").as_double()));
  CHECK(*value_of("-.INF").as_double() < 0);
  CHECK(std::isnan(*value_of(".nan").as_double()));
  CHECK_FALSE(value_of("1.5").as_int());
  CHECK_FALSE(value_of("abc").as_double());

  CHECK(value_of("true").as_bool() == true);
  CHECK(value_of("FALSE").as_bool() == false);
  CHECK_FALSE(value_of("yes").as_bool());
  CHECK_FALSE(value_of("1").as_bool());
  CHECK_FALSE(value_of("~").as_int());
}

TEST_CASE("yaml reader: describe() names kinds for messages") {
  Node root = parse_one("m: {a: 1}\nl: [1]\ns: x\ni: 3\nf: 2.5\nb: true\nn: ~\nq: '3'\n");
  CHECK(root.describe() == "a mapping");
  CHECK(root.find("m")->describe() == "a mapping");
  CHECK(root.find("l")->describe() == "a list");
  CHECK(root.find("s")->describe() == "a string");
  CHECK(root.find("i")->describe() == "an integer");
  CHECK(root.find("f")->describe() == "a number");
  CHECK(root.find("b")->describe() == "a boolean");
  CHECK(root.find("n")->describe() == "null");
  CHECK(root.find("q")->describe() == "a string");
  CHECK(Node().describe() == "null");
  // Collections have no scalar value, so they never pass for a string.
  CHECK(root.find("m")->scalar_type() == ScalarType::null);
  CHECK_FALSE(root.find("l")->as_int());
}

TEST_CASE("yaml reader: explicit tags") {
  Node root = parse_one(
      "a: !!str 10\nb: !!int \"12\"\nc: !!float 1\nd: !!bool 'true'\ne: !!null ''\nf: ! 5\n"
      "g: !!map {x: 1}\nh: !!seq [1]\n");
  CHECK(root.find("a")->scalar_type() == ScalarType::string);
  CHECK(root.find("a")->text() == "10");
  CHECK(root.find("b")->as_int() == 12);
  CHECK(root.find("c")->as_double() == 1.0);
  CHECK(root.find("d")->as_bool() == true);
  CHECK(root.find("e")->is_null());
  CHECK(root.find("f")->scalar_type() == ScalarType::string);
  CHECK(root.find("g")->is_mapping());
  CHECK(root.find("h")->is_sequence());

  SECTION("a tag that does not fit its value") {
    auto error = only_error(Parsed("port: !!int eighty\n"));
    CHECK(error.loc == at(1, 1, 7));
    CHECK(error.message == "\"eighty\" is not a valid !!int");
    CHECK_FALSE(error.hint.empty());
  }
  SECTION("an unsupported tag") {
    auto error = only_error(Parsed("when: !!timestamp 2001-12-14\n"));
    CHECK(error.loc == at(1, 1, 7));
    CHECK(error.message == "unsupported tag '!!timestamp'");
    CHECK(only_error(Parsed("x: !Ref other\n")).message == "unsupported tag '!Ref'");
    CHECK(only_error(Parsed("x: !!seq {a: 1}\n")).message == "unsupported tag '!!seq' on a mapping");
  }
}

TEST_CASE("yaml reader: every node has its 1-based line and column") {
  const char* text =
      "apiVersion: projectcalico.org/v3\n"  // line 1
      "spec:\n"                             // 2
      "  ingress:\n"                        // 3
      "  - action: Allow\n"                 // 4
      "    ports: [80, 443]\n"              // 5
      "  order:\n"                          // 6
      "    10\n"                            // 7
      "  empty:\n";                         // 8
  Parsed parsed(text);
  REQUIRE(parsed.docs);
  const Node& root = parsed.doc();
  const std::uint32_t f = parsed.file;
  CHECK(root.loc() == at(f, 1, 1));
  CHECK(root.keys()[0].loc() == at(f, 1, 1));
  CHECK(root.values()[0].loc() == at(f, 1, 13));
  const Node& spec = *root.find("spec");
  CHECK(spec.loc() == at(f, 3, 3));
  const Node& ingress = *spec.find("ingress");
  CHECK(ingress.is_sequence());
  CHECK(ingress.loc() == at(f, 4, 3));
  const Node& rule = ingress.items()[0];
  CHECK(rule.loc() == at(f, 4, 5));
  CHECK(rule.find("action")->loc() == at(f, 4, 13));
  const Node& ports = *rule.find("ports");
  CHECK(ports.loc() == at(f, 5, 12));
  CHECK(ports.items()[1].loc() == at(f, 5, 17));
  CHECK(spec.find("order")->loc() == at(f, 7, 5));  // a mapping value's loc is its own start
  CHECK(spec.find("empty")->is_null());
  CHECK(spec.find("empty")->loc().line == 8);
}

TEST_CASE("yaml reader: documents of a stream keep absolute line numbers") {
  Parsed parsed("# leading comment\na: 1\n---\nb: 2\n...\n---\n- c\n--- 4\n");
  INFO(parsed.diag.text());
  REQUIRE(parsed.docs);
  REQUIRE(parsed.docs->size() == 4);
  CHECK(parsed.doc(0).loc() == at(parsed.file, 2, 1));
  CHECK(parsed.doc(1).find("b")->loc() == at(parsed.file, 4, 4));
  CHECK(parsed.doc(2).items()[0].loc() == at(parsed.file, 7, 3));
  CHECK(parsed.doc(3).as_int() == 4);
  CHECK(parsed.doc(3).loc() == at(parsed.file, 8, 5));
}

TEST_CASE("yaml reader: empty streams") {
  for (const char* text : {"", "\n\n", "# only a comment\n", "   \n# x\n"}) {
    INFO('"' << text << '"');
    Parsed parsed(text);
    REQUIRE(parsed.docs);
    CHECK(parsed.docs->empty());
    CHECK(parsed.diag.all().empty());
  }
  Parsed empty_document("---\n");
  REQUIRE(empty_document.docs);
  REQUIRE(empty_document.docs->size() == 1);
  CHECK(empty_document.doc().is_null());
}

TEST_CASE("yaml reader: duplicate keys are errors at the second key") {
  SECTION("top level") {
    auto error = only_error(Parsed("name: a\norder: 1\nname: b\n"));
    CHECK(error.loc == at(1, 3, 1));
    CHECK(error.message == "duplicate key 'name' (first at line 1)");
    CHECK_FALSE(error.hint.empty());
  }
  SECTION("nested, in flow style and in a later document; all of them are reported") {
    Parsed parsed("spec:\n  rules:\n  - {action: Allow, action: Deny}\n---\nx: 1\nx: 2\n");
    INFO(parsed.diag.text());
    CHECK_FALSE(parsed.docs);
    REQUIRE(parsed.diag.all().size() == 2);
    CHECK(parsed.diag.all()[0].loc == at(1, 3, 21));
    CHECK(parsed.diag.all()[0].message == "duplicate key 'action' (first at line 3)");
    CHECK(parsed.diag.all()[1].loc == at(1, 6, 1));
  }
  SECTION("the same key in sibling mappings is fine") {
    Node root = parse_one("a: {x: 1}\nb: {x: 2}\n");
    CHECK(root.find("b")->find("x")->as_int() == 2);
  }
  SECTION("large mappings") {
    std::string text;
    for (int i = 0; i < 100; ++i) text += "key" + std::to_string(i) + ": " + std::to_string(i) + "\n";
    Node root = parse_one(text);
    CHECK(root.size() == 100);
    CHECK(root.find("key99")->as_int() == 99);
    text += "key42: again\n";
    auto error = only_error(Parsed(text));
    CHECK(error.loc == at(1, 101, 1));
    CHECK(error.message == "duplicate key 'key42' (first at line 43)");
  }
}

TEST_CASE("yaml reader: syntax errors give one located diagnostic with a hint") {
  struct Case {
    const char* text;
    std::uint32_t line;
    std::uint32_t col;
    const char* message_part;
  };
  const Case cases[] = {
      {"a: b: c\n", 1, 5, "':'"},
      {"spec:\n  order: 1\n selector: all()\n", 3, 2, "mapping key"},
      {"ingress:\n\t- action: Allow\n", 2, 1, "tab"},
      {"name: @home\n", 1, 7, "'@'"},
      {"name: \"unclosed\n", 2, 1, "ends too early"},
      {"ports: [80, 443\n", 2, 1, "end of the input"},
      {"- a\nb: 1\n", 2, 1, "list item"},
      {"a: \"bad \\q escape\"\n", 1, 9, "escape"},
      {"a: 1\n---\nb: [\n", 4, 1, "end of the input"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto error = only_error(Parsed(c.text));
    CHECK(error.loc == at(1, c.line, c.col));
    CHECK_THAT(error.message, Catch::Contains(c.message_part));
    CHECK_FALSE(error.hint.empty());
  }
  SECTION("the context of a problem is named with its position") {
    auto error = only_error(Parsed("spec:\n  order: 1\n selector: all()\n"));
    CHECK_THAT(error.message, Catch::Contains("block mapping that started at line 1, column 1"));
  }
  SECTION("invalid UTF-8 and control characters point at their position") {
    auto bad_utf8 = only_error(Parsed("a: ok\nb: \xff\n"));
    CHECK(bad_utf8.loc == at(1, 2, 4));
    CHECK_THAT(bad_utf8.message, Catch::Contains("UTF-8"));
    CHECK(only_error(Parsed("a: \x01\n")).loc == at(1, 1, 4));
  }
  SECTION("an error in a later document discards the earlier ones") {
    Parsed parsed("a: 1\n---\nb: c: d\n");
    CHECK_FALSE(parsed.docs);
    CHECK(parsed.diag.has_errors());
  }
}

TEST_CASE("yaml reader: aliases are expanded by copy") {
  const char* text =
      "defaults: &web\n"       // 1
      "  ports: [80, 443]\n"   // 2
      "  protocol: TCP\n"      // 3
      "name: &n frontend\n"    // 4
      "rules:\n"               // 5
      "- *web\n"               // 6
      "- *web\n"               // 7
      "labels: {*n : yes}\n";  // 8
  Parsed parsed(text);
  INFO(parsed.diag.text());
  REQUIRE(parsed.docs);
  const Node& root = parsed.doc();
  const Node& rules = *root.find("rules");
  REQUIRE(rules.size() == 2);
  for (const Node& rule : rules.items()) {
    CHECK(rule.is_mapping());
    CHECK(rule.loc() == at(parsed.file, 1, 11));  // the anchored node starts at its anchor
    CHECK(rule.find("ports")->items()[1].as_int() == 443);
  }
  CHECK(root.find("labels")->find("frontend")->text() == "yes");

  SECTION("an undefined alias") {
    auto error = only_error(Parsed("a: &x 1\nb: *y\n"));
    CHECK(error.loc == at(1, 2, 4));
    CHECK(error.message == "undefined alias '*y'");
    CHECK_FALSE(error.hint.empty());
  }
  SECTION("anchors do not carry across documents") {
    auto error = only_error(Parsed("a: &x 1\n---\nb: *x\n"));
    CHECK(error.loc == at(1, 3, 4));
  }
  SECTION("an alias inside its own anchor") {
    auto error = only_error(Parsed("a: &loop\n  - *loop\n"));
    CHECK(error.loc == at(1, 2, 5));
    CHECK_THAT(error.message, Catch::Contains("contains it"));
  }
  SECTION("a later anchor of the same name replaces the earlier one") {
    Node root = parse_one("a: &x 1\nb: &x 2\nc: *x\n");
    CHECK(root.find("c")->as_int() == 2);
  }
  SECTION("an alias as a duplicate key") {
    auto error = only_error(Parsed("- &k port\n- {port: 1, *k : 2}\n"));
    CHECK(error.loc == at(1, 2, 13));
    CHECK_THAT(error.message, Catch::Contains("duplicate key 'port'"));
  }
  SECTION("exponential alias expansion is refused") {
    std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i < 10; ++i) {
      std::string previous = "*a" + std::to_string(i - 1);
      bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
      for (int j = 0; j < 10; ++j) bomb += (j ? ", " : "") + previous;
      bomb += "]\n";
    }
    auto error = only_error(Parsed(bomb));
    CHECK_THAT(error.message, Catch::Contains("aliases expand to more than"));
  }
}

TEST_CASE("yaml reader: complex keys, merge keys and deep nesting are refused") {
  auto list_key = only_error(Parsed("? [a, b]\n: value\n"));
  CHECK(list_key.loc == at(1, 1, 3));
  CHECK(list_key.message == "a list as a mapping key is not supported");
  CHECK_FALSE(list_key.hint.empty());
  CHECK(only_error(Parsed("{a: 1}: value\n")).message == "a mapping as a mapping key is not supported");
  CHECK(only_error(Parsed("- &m {a: 1}\n- {*m : 2}\n")).loc == at(1, 2, 4));
  auto merge = only_error(Parsed("base: &b {a: 1}\nderived:\n  <<: *b\n  c: 2\n"));
  CHECK(merge.loc == at(1, 3, 3));
  CHECK(merge.message == "merge keys ('<<') are not supported");
  CHECK(parse_one("'<<': quoted is a plain key\n").find("<<"));

  std::string deep(5000, '[');
  auto error = only_error(Parsed(deep + std::string(5000, ']')));
  CHECK_THAT(error.message, Catch::Contains("nesting deeper than"));
}

TEST_CASE("yaml reader: a kind: List of policies, navigated with find()") {
  const char* text =
      "apiVersion: v1\n"
      "kind: List\n"
      "items:\n"
      "- apiVersion: projectcalico.org/v3\n"
      "  kind: GlobalNetworkPolicy\n"
      "  metadata:\n"
      "    name: allow-web\n"
      "  spec:\n"
      "    order: 10\n"
      "    ingress:\n"
      "    - action: Allow\n"
      "      destination:\n"
      "        ports: [80, 443]\n"
      "- apiVersion: projectcalico.org/v3\n"
      "  kind: HostEndpoint\n"
      "  metadata: {name: eth0, labels: {role: home}}\n"
      "metadata:\n"
      "  resourceVersion: \"\"\n";
  Node root = parse_one(text);
  CHECK(root.find("kind")->text() == "List");
  const Node& items = *root.find("items");
  REQUIRE(items.is_sequence());
  REQUIRE(items.size() == 2);
  const Node& policy = items.items()[0];
  CHECK(policy.find("metadata")->find("name")->text() == "allow-web");
  CHECK(policy.find("spec")->find("order")->as_int() == 10);
  const Node& rule = policy.find("spec")->find("ingress")->items()[0];
  CHECK(rule.find("destination")->find("ports")->items()[0].as_int() == 80);
  CHECK(items.items()[1].find("metadata")->find("labels")->find("role")->text() == "home");
  CHECK(root.find("metadata")->find("resourceVersion")->quoted());
  CHECK(root.find("missing") == nullptr);
  CHECK(items.find("kind") == nullptr);  // not a mapping

  REQUIRE(policy.keys().size() == 4);
  CHECK(policy.keys()[0].text() == "apiVersion");
  CHECK(policy.keys()[3].text() == "spec");
  CHECK(policy.values()[1].text() == "GlobalNetworkPolicy");
}

TEST_CASE("yaml reader: unicode text and columns in characters") {
  Parsed parsed(
      "\xEF\xBB\xBFname: caf\xC3\xA9\n\xE4\xB8\xAD\xE6\x96\x87: \"\\u00e9\\U0001F600\"\ngr\xC3\xBC\xC3\x9F: "
      "x\n");
  INFO(parsed.diag.text());
  REQUIRE(parsed.docs);
  const Node& root = parsed.doc();
  CHECK(root.find("name")->text() == "caf\xC3\xA9");
  const Node* chinese = root.find("\xE4\xB8\xAD\xE6\x96\x87");
  REQUIRE(chinese);
  CHECK(chinese->text() == "\xC3\xA9\xF0\x9F\x98\x80");
  CHECK(chinese->loc() == at(parsed.file, 2, 5));  // two characters, a colon and a space before it
  CHECK(root.find("gr\xC3\xBC\xC3\x9F")->loc() == at(parsed.file, 3, 7));
}

namespace {

// Where byte `offset` of the scalar found at `path` (keys, one per level) is, as "line:col".
std::string locate(const std::string& text, const std::vector<std::string>& path, std::size_t offset,
                   std::size_t document = 0) {
  Parsed parsed(text);
  INFO(parsed.diag.text());
  REQUIRE(parsed.docs);
  const Node* node = &parsed.doc(document);
  for (const std::string& key : path) {
    node = node->find(key);
    REQUIRE(node);
  }
  auto loc = locate_in_scalar(text, *node, offset);
  if (!loc) return "none";
  CHECK(loc->file == parsed.file);
  return std::to_string(loc->line) + ":" + std::to_string(loc->col);
}

}  // namespace

TEST_CASE("yaml reader: locate_in_scalar finds a byte of the decoded text in the source") {
  // Plain, and past the end: just after the last character.
  CHECK(locate("k: has(a) && b == 'x'\n", {"k"}, 10) == "1:14");
  CHECK(locate("k: has(a) && b == 'x'\n", {"k"}, 18) == "1:22");
  // A plain scalar over two lines: the break is folded to a space, the indentation is not text.
  CHECK(locate("k: a\n  b\n", {"k"}, 2) == "2:3");
  // Single quotes: '' is one byte from two characters.
  CHECK(locate("k: 'it''s b'\n", {"k"}, 5) == "1:11");
  CHECK(locate("k: 'it''s b'\n", {"k"}, 6) == "1:12");  // the end is the closing quote
  // Double quotes: \" \\ \t \u00e9 are one or two bytes from two or six characters.
  const std::string escaped = "k: \"a \\\"x\\\" \\\\ \\t \\u00e9 z\"\n";
  CHECK(locate(escaped, {"k"}, 3) == "1:9");
  CHECK(locate(escaped, {"k"}, 10) == "1:19");
  CHECK(locate(escaped, {"k"}, 11) == "1:19");
  CHECK(locate(escaped, {"k"}, 13) == "1:26");
  CHECK(locate(escaped, {"k"}, 14) == "1:27");
  // Double quotes over lines: a folded break and an escaped one.
  const std::string lines = "k: \"ab\n  cd\\\n  ef\"\n";
  CHECK(locate(lines, {"k"}, 2) == "1:7");
  CHECK(locate(lines, {"k"}, 3) == "2:3");
  CHECK(locate(lines, {"k"}, 5) == "3:3");
  // Folded and literal block scalars: the header line and the indentation are not text.
  const std::string folded = "k: >-\n  has(a) &&\n  b == 'x'\n";
  CHECK(locate(folded, {"k"}, 0) == "2:3");
  CHECK(locate(folded, {"k"}, 9) == "2:12");
  CHECK(locate(folded, {"k"}, 10) == "3:3");
  CHECK(locate(folded, {"k"}, 18) == "3:11");
  CHECK(locate("k: |\n  a\n   b\n", {"k"}, 3) == "3:4");
  CHECK(locate("k: >\n  a\n\n  b\n", {"k"}, 2) == "4:3");
  // An explicit indentation indicator, in a nested mapping: the extra space is text.
  CHECK(locate("m:\n  k: |2\n     x\n", {"m", "k"}, 1) == "3:6");
  // An anchor before the scalar; a later document of the stream keeps absolute lines.
  CHECK(locate("k: &a \"x y\"\n", {"k"}, 2) == "1:10");
  CHECK(locate("k: 1\n---\nk: \"a\\tb\"\n", {"k"}, 2, 1) == "3:8");
  // A source that does not hold the scalar there.
  Parsed parsed("k: \"abc\"\n");
  REQUIRE(parsed.docs);
  CHECK_FALSE(locate_in_scalar("k: \"xyz\"\n", *parsed.doc().find("k"), 1));
  CHECK_FALSE(locate_in_scalar("k:\n", *parsed.doc().find("k"), 1));
}

TEST_CASE("yaml reader: quote() writes a double-quoted YAML string") {
  CHECK(quote("plain") == "\"plain\"");
  CHECK(quote("") == "\"\"");
  CHECK(quote("say \"hi\"\\") == "\"say \\\"hi\\\"\\\\\"");
  CHECK(quote("a\nb\tc\r") == "\"a\\nb\\tc\\r\"");
  CHECK(quote(std::string_view("\0\x01\x7f", 3)) == "\"\\0\\x01\\x7f\"");
  CHECK(quote("caf\xC3\xA9") == "\"caf\xC3\xA9\"");
  // What quote() writes reads back as the same string.
  std::string tricky = "x: \"y\"\n\t\\z \xC3\xA9";
  CHECK(value_of(quote(tricky)).text() == tricky);
}

TEST_CASE("yaml reader: parse_file registers the file and reads it") {
  auto dir = std::filesystem::temp_directory_path() / ("fwe-yaml-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "policy.yaml").string();
  std::ofstream(path) << "a: 1\nb: [x]\n";

  Diagnostics diag;
  auto docs = parse_file(path, diag);
  REQUIRE(docs);
  REQUIRE(docs->size() == 1);
  const Node& b = *docs->front().find("b");
  CHECK(b.loc().line == 2);
  CHECK(diag.file_name(b.loc().file) == path);
  CHECK(diag.where(b.loc()) == path + ":2:4");

  SECTION("a syntax error names the file") {
    std::ofstream(path) << "a: b: c\n";
    Diagnostics errors;
    CHECK_FALSE(parse_file(path, errors));
    REQUIRE(errors.all().size() == 1);
    CHECK(errors.where(errors.all()[0].loc) == path + ":1:5");
  }
  SECTION("a missing file and a directory are errors at line 0") {
    Diagnostics errors;
    CHECK_FALSE(parse_file((dir / "missing.yaml").string(), errors));
    CHECK_FALSE(parse_file(dir.string(), errors));
    REQUIRE(errors.all().size() == 2);
    for (const auto& error : errors.all()) {
      CHECK(error.loc.line == 0);
      CHECK(error.loc.file != 0);
      CHECK_FALSE(error.hint.empty());
    }
    CHECK_THAT(errors.all()[0].message, Catch::Contains("missing.yaml"));
  }
  std::filesystem::remove_all(dir);
}

namespace {

// `count` GlobalNetworkPolicies of 10 rules each, in kubectl's block style: about 1.6 KB per policy.
std::string kubectl_style_policies(int count) {
  std::string text;
  for (int p = 0; p < count; ++p) {
    std::string id = std::to_string(p);
    text += "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n";
    text += "  creationTimestamp: \"2024-05-01T10:00:00Z\"\n  generation: 1\n  name: policy-" + id + "\n";
    text += "  resourceVersion: \"" + std::to_string(100000 + p) + "\"\n";
    text += "  uid: 5d1c7a3e-0b7e-4c1d-9f3a-" + std::to_string(100000000000 + p) + "\n";
    text += "spec:\n  order: " + id + "\n  selector: role == 'web-" + id +
            "'\n  types:\n  - Ingress\n  ingress:\n";
    for (int r = 0; r < 10; ++r) {
      text += "  - action: Allow\n    protocol: TCP\n    source:\n      nets:\n      - 10." +
              std::to_string(p % 250) + "." + std::to_string(r) +
              ".0/24\n    destination:\n      ports:\n      - " + std::to_string(1000 + r) + "\n";
    }
  }
  return text;
}

}  // namespace

// Inputs from 256 KB on are parsed by libyaml on a second thread; the results must not differ.
TEST_CASE("yaml reader: large streams") {
  std::string text = kubectl_style_policies(300);
  REQUIRE(text.size() > 400 * 1024);
  auto line_of = [&](std::string_view needle) {
    auto offset = text.find(needle);
    REQUIRE(offset != std::string::npos);
    return static_cast<std::uint32_t>(std::count(text.begin(), text.begin() + offset, '\n') + 1);
  };

  SECTION("libyaml on its second thread and the fast scanner give the same tree") {
    Diagnostics diag;
    auto by_libyaml = detail::parse_libyaml(text, diag.add_file("big.yaml"), diag);
    auto by_fast = detail::parse_fast(text, 1);
    REQUIRE(by_libyaml);
    REQUIRE(by_fast);
    REQUIRE(by_fast->size() == by_libyaml->size());
    for (std::size_t i = 0; i < by_fast->size(); ++i) {
      auto difference = detail::first_difference((*by_fast)[i], (*by_libyaml)[i]);
      INFO("document " << i << ": " << difference.value_or(""));
      CHECK_FALSE(difference);
    }
  }
  SECTION("every document, with absolute lines") {
    Parsed parsed(text);
    INFO(parsed.diag.text());
    REQUIRE(parsed.docs);
    REQUIRE(parsed.docs->size() == 300);
    const Node& metadata = *parsed.doc(257).find("metadata");
    CHECK(metadata.find("name")->text() == "policy-257");
    CHECK(metadata.find("name")->loc() == at(parsed.file, line_of("name: policy-257\n"), 9));
    const Node& ingress = *parsed.doc(299).find("spec")->find("ingress");
    CHECK(ingress.size() == 10);
    CHECK(ingress.items()[9].find("destination")->find("ports")->items()[0].as_int() == 1009);
  }
  SECTION("errors anywhere are all reported, in order") {
    std::string broken = text;
    broken.replace(broken.find("  generation: 1\n  name: policy-100\n"), 15, "  name: twice\n");
    broken += "---\nlast: [unclosed\n";
    Parsed parsed(broken);
    CHECK_FALSE(parsed.docs);
    REQUIRE(parsed.diag.all().size() == 2);
    CHECK(parsed.diag.all()[0].message ==
          "duplicate key 'name' (first at line " + std::to_string(line_of("name: policy-100\n") - 1) + ")");
    CHECK_THAT(parsed.diag.all()[1].message, Catch::Contains("end of the input"));
  }
  SECTION("a fatal error stops the parse early") {
    auto error = only_error(Parsed(std::string(2000, '[') + "\n" + text));
    CHECK_THAT(error.message, Catch::Contains("nesting deeper than"));
  }
}

// The benchmark of the reader: 10,000 rules, about 1.6 MB. Hidden by default; run with
// fwcore_tests "[.bench]" in an optimised build.
TEST_CASE("yaml reader: reading a 10,000-rule Calico stream", "[.bench]") {
  std::string text = kubectl_style_policies(1000);
  using Reader = std::optional<std::vector<Node>> (*)(std::string_view, std::uint32_t, Diagnostics&);
  Reader by_libyaml = &detail::parse_libyaml;
  Reader by_fast = [](std::string_view t, std::uint32_t file, Diagnostics&) {
    return detail::parse_fast(t, file);
  };
  for (auto [name, reader] : {std::pair{"fast scanner", by_fast}, std::pair{"libyaml", by_libyaml}}) {
    double best_ms = 1e9;
    for (int round = 0; round < 5; ++round) {
      Diagnostics diag;
      auto start = std::chrono::steady_clock::now();
      auto docs = reader(text, diag.add_file("bench.yaml"), diag);
      auto elapsed =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      best_ms = std::min(best_ms, elapsed);
      REQUIRE(docs);
      REQUIRE(docs->size() == 1000);
    }
    std::cout << "yaml reader, " << name << ": " << text.size() << " bytes, 10,000 rules: best of 5 "
              << best_ms << " ms\n";
  }
}

namespace {

// Whether the fast scanner answers for `text`; when it does, its tree must be libyaml's.
bool fast_agrees_with_libyaml(std::string_view text) {
  INFO("input:\n" << text);
  Diagnostics diag;
  auto by_libyaml = detail::parse_libyaml(text, diag.add_file("test.yaml"), diag);
  auto by_fast = detail::parse_fast(text, 1);
  if (!by_fast) return false;
  REQUIRE(by_libyaml);
  REQUIRE(by_fast->size() == by_libyaml->size());
  for (std::size_t i = 0; i < by_fast->size(); ++i) {
    auto difference = detail::first_difference((*by_fast)[i], (*by_libyaml)[i]);
    INFO("document " << i << ": " << difference.value_or(""));
    CHECK_FALSE(difference);
  }
  return true;
}

}  // namespace

TEST_CASE("yaml reader: the fast scanner reads what policies use, as libyaml does") {
  const char* read_fast[] = {
      "",
      "# only a comment\n\n",
      "a: 1\n",
      "a: 1",
      "a:\n",
      "a:",
      "a: # comment\nb: c # comment\n",
      "a: b#c\nd: 'e' # f\n",
      "key : value\n\"q\" : 'v'\n",
      "a:\n  b:\n    c: d\n  e: f\ng: h\n",
      "  a: 1\n  b: 2\n",
      "list:\n- a\n-\n- b\nnext: 1\n",
      "list:\n  - a\n  -\n  - - x\n    - y\n  -   k: v\n      l: w\n  - k:\n    - z\n    m: n\n",
      "- a\n- b: c\n  d:\n- [x, y]\n- {k: v}\n",
      "-\n  a: 1\n-\n- -1\n",
      "a: [1, 'two', \"three\", {x: y, z: [w]}, []]\nb: {}\nc: { p: q }\n",
      "ips: [10.0.0.0/8, fd00::1/64, '::1']\nv6: fd00::/8\nurl: http://x:80/y\n",
      "s: 'it''s'\nd: \"tab\\tquote\\\" slash\\/ back\\\\\"\ne: \"\"\nf: ''\n",
      "null: ~\nt: true\nn: -12\nf: 1.5e3\nh: 0x1F\nstr: a b  c\n",
      "---\na: 1\n---\nb: 2\n",
      "---\n---\n",
      "a: 1\n---\n",
      "--- # comment\na: 1\n...x: 2\n",
      "[a, b]\n",
      "'just a string'\n",
      "a: -x\nb: x-y\nc: a:b\n",
      "selector: role == 'web' && has(x)\nnets: ['10.0.0.0/8']\n",
      "# \xc2\xa7 3, \xe2\x80\x94 UTF-8 in comments \xf0\x9f\x94\xa5\na: 1 # \xc3\xa9\n",
  };
  for (const char* text : read_fast) {
    INFO(text);
    CHECK(fast_agrees_with_libyaml(text));
  }

  // Outside the subset: the fast scanner gives up, and parse() takes libyaml's answer.
  const char* left_to_libyaml[] = {
      "a: &x 1\nb: *x\n",               // anchors and aliases
      "a: !!str 1\n",                   // tags
      "a: |\n  text\n",                 // block scalars
      "a: plain\n  continued\n",        // multi-line plain scalar
      "a: 'quoted\n  on two lines'\n",  // multi-line quoted scalar
      "a: [1,\n  2]\n",                 // flow collection over two lines
      "a:\tb\n",                        // tab
      "a: b\r\n",                       // CR
      "a: \xc3\xa9\n",                  // non-ASCII outside a comment
      "# \xe2\x80\xa8\na: 1\n",         // a Unicode line break in a comment
      "a: \"\\u00e9\"\n",               // escape giving non-ASCII
      "? a\n: b\n",                     // explicit key
      "%YAML 1.2\n---\na: 1\n",         // directive
      "a: 1\n...\n",                    // document end marker
      "a: b: c\n",                      // syntax error
      "c: :\n",                         // a value that starts with an indicator
      "a: 1\n a2: 2\n",                 // indentation error
      "a: 1\na: 2\n",                   // duplicate key
      "<<: {a: 1}\n",                   // merge key
      "[a, b,]\n",                      // trailing comma
      "{a: 1, b}\n",                    // flow key without a value
      "- a\n  - b\n",                   // continuation in a list
      "a:\n- b\n  c: d\n",              // indentation error in an indentless list
  };
  for (const char* text : left_to_libyaml) {
    INFO(text);
    CHECK_FALSE(fast_agrees_with_libyaml(text));
  }
}

TEST_CASE("yaml reader: the fast scanner agrees with libyaml on every YAML file of the project") {
  std::size_t read_fast = 0;
  std::size_t files = 0;
  for (const char* dir : {"fixtures", "integration", "packaging", "docs", "fuzz"}) {
    for (const auto& entry :
         std::filesystem::recursive_directory_iterator(std::string(FWE_SOURCE_DIR) + "/" + dir)) {
      auto extension = entry.path().extension();
      if (!entry.is_regular_file() || (extension != ".yaml" && extension != ".yml")) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      INFO(entry.path().string());
      ++files;
      if (fast_agrees_with_libyaml(text)) ++read_fast;
    }
  }
  INFO(read_fast << " of " << files << " files read by the fast scanner");
  CHECK(files > 50);
  CHECK(read_fast * 10 >= files * 8);  // the policies people write are in the subset
}

TEST_CASE("yaml reader: release_value frees one value and keeps the rest") {
  Parsed list("- [1, 2]\n- x\n");
  Node root = parse_one("a: [1, 2]\nb: {c: d}\n");
  root.release_value(0);
  CHECK(root.find("a")->is_null());
  CHECK(root.find("a")->loc().line == 1);
  CHECK(root.find("a")->loc().col == 4);
  CHECK(root.find("b")->find("c")->text() == "d");
  CHECK(root.keys()[0].text() == "a");
  REQUIRE(list.docs);
  Node items = list.doc();
  items.release_value(0);
  CHECK(items.items()[0].is_null());
  CHECK(items.items()[1].text() == "x");
}

TEST_CASE("yaml reader: a node holds text or children, and takes a part of its own tree") {
  STATIC_REQUIRE(sizeof(Node) <= 48);
  Node root = parse_one("a: {b: [1, two]}\nc: text\n");
  CHECK(root.text().empty());  // a collection has no text
  Node scalar = *root.find("c");
  CHECK(scalar.text() == "text");
  CHECK(scalar.items().empty());  // nor a scalar children
  CHECK(scalar.size() == 0);
  scalar = root;  // a scalar becomes a mapping, and back
  CHECK(scalar.find("c")->text() == "text");
  scalar = *scalar.find("c");
  CHECK(scalar.text() == "text");
  root = *root.find("a");  // a copy of its own child
  REQUIRE(root.is_mapping());
  root = std::move(*root.find("b"));  // moved out of its own child
  REQUIRE(root.is_sequence());
  REQUIRE(root.items().size() == 2);
  CHECK(root.items()[1].text() == "two");
  CHECK(root.items()[1].loc().line == 1);
}
