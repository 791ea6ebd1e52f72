// selector_test.cpp - the selector language of spec calico.md §3: grammar and evaluation tables.
#include <catch2/catch.hpp>

#include "selector.hpp"

namespace fwe::calico {
namespace {

Selector parse_ok(const std::string& text) {
  SelectorError error;
  auto selector = Selector::parse(text, error);
  INFO("selector: " << text << " error: " << error.message);
  REQUIRE(selector);
  return *selector;
}

}  // namespace

TEST_CASE("selector grammar accepts what Calico accepts", "[selector]") {
  const auto [text, canonical] = GENERATE(table<std::string, std::string>({
      {"", "all()"},
      {"all()", "all()"},
      {"all( )", "all()"},
      {"global()", "global()"},
      {"has(a)", "has(a)"},
      {"has( a\t)", "has(a)"},
      {"a == 'x'", "a == \"x\""},
      {"a==\"x\"", "a == \"x\""},
      {"a != 'x'", "a != \"x\""},
      {"a == 'say \"hi\"'", "a == 'say \"hi\"'"},
      {"a in {'y', 'x'}", "a in {\"x\", \"y\"}"},
      {"a in {}", "a in {}"},
      {"a in {'x',}", "a in {\"x\"}"},
      {"a not in {'x'}", "a not in {\"x\"}"},
      {"a notin {'x'}", "a not in {\"x\"}"},
      {"a not  in{'x'}", "a not in {\"x\"}"},
      {"a contains 'x'", "a contains \"x\""},
      {"a starts with 'x'", "a starts with \"x\""},
      {"a startswith 'x'", "a starts with \"x\""},
      {"a ends with 'x'", "a ends with \"x\""},
      {"!has(a)", "!has(a)"},
      {"!!has(a)", "has(a)"},
      {"!!!has(a)", "!has(a)"},
      {"(a == 'x')", "a == \"x\""},
      {"a == 'x' && b == 'y' || c == 'z'", "((a == \"x\" && b == \"y\") || c == \"z\")"},
      {"a == 'x' || b == 'y' && c == 'z'", "(a == \"x\" || (b == \"y\" && c == \"z\"))"},
      {"!a == 'x' && b == 'y'", "(!a == \"x\" && b == \"y\")"},
      {"!(a == 'x' && b == 'y')", "!(a == \"x\" && b == \"y\")"},
      {"projectcalico.org/name == 'x'", "projectcalico.org/name == \"x\""},
      {"\tnode-endpoint == 'home' ", "node-endpoint == \"home\""},
  }));
  CAPTURE(text);
  CHECK(parse_ok(text).canonical() == canonical);
}

TEST_CASE("selector grammar rejects with the column of the problem", "[selector]") {
  const auto [text, offset, message] = GENERATE(table<std::string, std::size_t, std::string>({
      {"a == x", 5, "expected a quoted string"},
      {"a = 'x'", 2, "expected '=='"},
      {"a == 'x", 5, "unterminated string"},
      {"has (a)", 4, "expected an operator after label 'has'"},
      {"a & b", 2, "expected '&&'"},
      {"a | b", 2, "expected '||'"},
      {"a in ['x']", 5, "expected a label name"},
      {"a in 'x'", 5, "expected a set literal"},
      {"a in {'x' 'y'}", 10, "expected '}'"},
      {"a == 'x' b == 'y'", 9, "unexpected content at end of selector"},
      {"(a == 'x'", 9, "expected ')'"},
      {"a\n== 'x'", 1, "expected an operator after label 'a'"},
      {"all(x)", 4, "no closing ')' after all("},
      {"global(x)", 7, "no closing ')' after global("},
      {"has(a", 5, "no closing ')' after has(a"},
      {"a contains", 10, "expected a quoted string"},
      {"a inx {'x'}", 2, "expected an operator after label 'a'"},
      {"a ==", 4, "expected a quoted string"},
      {"a == 'x' &&", 11, "unexpected end of selector"},
      {"== 'x'", 0, "unexpected token"},
      {"a == 'x' && ()", 13, "unexpected token"},
      {"a.b$c == 'x'", 3, "expected an operator after label 'a.b'"},
  }));
  CAPTURE(text);
  SelectorError error;
  CHECK_FALSE(Selector::parse(text, error));
  CHECK(error.message == message);
  CHECK(error.offset == offset);
  CHECK_FALSE(error.hint.empty());
}

TEST_CASE("label longer than 512 characters is refused", "[selector]") {
  SelectorError error;
  CHECK_FALSE(Selector::parse("has(" + std::string(513, 'a') + ")", error));
  CHECK(error.message == "label longer than 512 characters");
  CHECK(Selector::parse("has(" + std::string(512, 'a') + ")", error));
}

TEST_CASE("selector evaluation over a label map", "[selector]") {
  const Labels labels = {{"a", "x"}, {"b", "yz"}, {"empty", ""}};
  const auto [text, expected] = GENERATE(table<std::string, bool>({
      {"", true},
      {"all()", true},
      {"global()", true},
      {"has(a)", true},
      {"has(c)", false},
      {"has(empty)", true},
      {"a == 'x'", true},
      {"a == 'y'", false},
      {"c == ''", false},
      {"empty == ''", true},
      {"a != 'x'", false},
      {"c != 'x'", true},
      {"a in {'x', 'y'}", true},
      {"a in {}", false},
      {"c in {'x'}", false},
      {"a not in {'x'}", false},
      {"c not in {'x'}", true},
      {"a not in {}", true},
      {"b contains 'z'", true},
      {"b contains ''", true},
      {"c contains ''", false},
      {"b starts with 'y'", true},
      {"b starts with 'z'", false},
      {"b ends with 'z'", true},
      {"b ends with 'y'", false},
      {"!has(a)", false},
      {"!!has(a)", true},
      {"!has(c)", true},
      {"has(a) && has(c)", false},
      {"has(c) || a == 'x'", true},
      {"has(c) && has(a) || has(b)", true},
      {"has(a) || has(c) && has(d)", true},
      {"(has(a) || has(c)) && has(d)", false},
      {"!has(c) && has(a)", true},
      {"!(has(a) && has(c))", true},
      {"!(has(a) || has(c))", false},
  }));
  CAPTURE(text);
  CHECK(parse_ok(text).matches(labels) == expected);
}

TEST_CASE("global() is detected anywhere in a selector", "[selector]") {
  CHECK(parse_ok("global()").uses_global());
  CHECK(parse_ok("has(a) && !global()").uses_global());
  CHECK_FALSE(parse_ok("has(global)").uses_global());
}

}  // namespace fwe::calico
