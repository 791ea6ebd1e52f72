// xml.cpp - the expat callbacks build the tree; expat reports the first syntax error with its position.
#include "xml.hpp"

#include <expat.h>

#include <memory>

#include "fwengine/source_text.hpp"

namespace fwe::firewalld::xml {
namespace {

// firewalld's files are a few elements deep; the tree is built, walked and destroyed by recursion, so
// a hostile file must not nest without bound.
constexpr std::size_t kMaxDepth = 64;

struct Builder {
  XML_Parser parser = nullptr;
  std::uint32_t file = 0;
  std::optional<Element> root;
  std::vector<Element*> open;         // the path from the root to the current element
  std::optional<SourceLoc> too_deep;  // where nesting went past kMaxDepth (parsing stopped there)
};

SourceLoc current(const Builder& b) {
  // expat's lines are 1-based, its columns 0-based.
  return {b.file, static_cast<std::uint32_t>(XML_GetCurrentLineNumber(b.parser)),
          static_cast<std::uint32_t>(XML_GetCurrentColumnNumber(b.parser)) + 1};
}

void on_start(void* data, const XML_Char* name, const XML_Char** attributes) {
  auto& b = *static_cast<Builder*>(data);
  if (b.open.size() == kMaxDepth) {
    b.too_deep = current(b);
    XML_StopParser(b.parser, XML_FALSE);
    return;
  }
  Element element;
  element.name = name;
  element.loc = current(b);
  for (const XML_Char** a = attributes; a[0] && a[1]; a += 2) element.attributes.emplace_back(a[0], a[1]);
  if (b.open.empty()) {
    b.root = std::move(element);
    b.open.push_back(&*b.root);
  } else {
    auto& children = b.open.back()->children;
    children.push_back(std::move(element));
    b.open.push_back(&children.back());
  }
}

void on_end(void* data, const XML_Char* /*name*/) {
  static_cast<Builder*>(data)->open.pop_back();
}

void on_text(void* data, const XML_Char* text, int length) {
  auto& b = *static_cast<Builder*>(data);
  if (!b.open.empty()) b.open.back()->text.append(text, static_cast<std::size_t>(length));
}

}  // namespace

const std::string* Element::attribute(std::string_view key) const {
  for (const auto& [k, v] : attributes)
    if (k == key) return &v;
  return nullptr;
}

std::optional<Element> parse(std::string_view text, std::uint32_t file, Diagnostics& diag) {
  std::unique_ptr<std::remove_pointer_t<XML_Parser>, decltype(&XML_ParserFree)> parser(
      XML_ParserCreate(nullptr), &XML_ParserFree);
  if (!parser) throw RuntimeError("out of memory creating an XML parser");
  Builder b;
  b.parser = parser.get();
  b.file = file;
  XML_SetUserData(b.parser, &b);
  XML_SetElementHandler(b.parser, on_start, on_end);
  XML_SetCharacterDataHandler(b.parser, on_text);
  const bool parsed =
      XML_Parse(b.parser, text.data(), static_cast<int>(text.size()), XML_TRUE) == XML_STATUS_OK;
  if (b.too_deep) {
    diag.error(*b.too_deep, "elements nested more than " + std::to_string(kMaxDepth) + " deep",
               "firewalld's files are a few levels deep: check that this is a firewalld file");
    return std::nullopt;
  }
  if (!parsed) {
    diag.error(current(b), std::string("broken XML: ") + XML_ErrorString(XML_GetErrorCode(b.parser)),
               "fix the file's XML syntax (firewalld would not load it either)");
    return std::nullopt;
  }
  return std::move(b.root);
}

std::optional<Element> parse_file(const std::string& path, Diagnostics& diag) {
  const std::uint32_t file = diag.add_file(path);
  const auto text = read_source_file(path, file, diag);
  if (!text) return std::nullopt;
  return parse(*text, file, diag);
}

}  // namespace fwe::firewalld::xml
