// The expat element reader: structure, attributes, text, positions and broken documents.
#include <catch2/catch.hpp>

#include "support.hpp"
#include "xml.hpp"

using namespace fwe;
using namespace fwe::firewalld;

TEST_CASE("xml: elements, attributes, text and line:column") {
  Diagnostics diag;
  const auto file = diag.add_file("t.xml");
  auto root = xml::parse(
      "<?xml version=\"1.0\"?>\n<zone target=\"DROP\">\n  <short>Lab</short>\n"
      "  <rule family=\"ipv4\"><accept/></rule>\n</zone>\n",
      file, diag);
  REQUIRE(root);
  CHECK(root->name == "zone");
  CHECK(*root->attribute("target") == "DROP");
  CHECK(root->attribute("version") == nullptr);
  CHECK(root->loc == SourceLoc{file, 2, 1});
  REQUIRE(root->children.size() == 2);
  CHECK(root->children[0].text == "Lab");
  CHECK(root->children[0].loc == SourceLoc{file, 3, 3});
  CHECK(root->children[1].children.at(0).name == "accept");
  CHECK(root->children[1].children.at(0).loc == SourceLoc{file, 4, 23});
  CHECK_FALSE(diag.has_errors());
}

TEST_CASE("xml: entities are decoded") {
  Diagnostics diag;
  auto root = xml::parse("<a x=\"&lt;&amp;\">1 &gt; 0</a>", diag.add_file("t.xml"), diag);
  REQUIRE(root);
  CHECK(*root->attribute("x") == "<&");
  CHECK(root->text == "1 > 0");
}

TEST_CASE("xml: broken XML is an error at file:line:col") {
  Diagnostics diag;
  CHECK_FALSE(xml::parse("<zone>\n  <service name=\"ssh\">\n</zone>\n", diag.add_file("bad.xml"), diag));
  REQUIRE(diag.has_errors());
  CHECK_THAT(test::first_error(diag), Catch::Contains("bad.xml:3:3: error: broken XML: mismatched tag"));
}

TEST_CASE("xml: an unreadable file is an error naming it") {
  Diagnostics diag;
  CHECK_FALSE(xml::parse_file("/nonexistent/fwe.xml", diag));
  CHECK_THAT(test::first_error(diag), Catch::Contains("/nonexistent/fwe.xml: error: cannot read"));
}
