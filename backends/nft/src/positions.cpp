// positions.cpp - the `where` set of nft's origin stamps.
#include "positions.hpp"

#include <algorithm>

namespace fwe::nft {
namespace {
constexpr std::size_t kIfNameSize = 16;  // the key type of `where`: 15 characters and a zero
}  // namespace

std::optional<Set> Stamper::positions() const {
  const auto first_lines = this->first_lines();
  if (first_lines.empty()) return std::nullopt;
  Set where{.name = std::string(kPositionsSet), .key_type = KeyType::ifname, .key_len = kIfNameSize};
  where.elements.reserve(first_lines.size());
  for (const auto& first : first_lines) {
    Element element{Bytes(first.key.begin(), first.key.end())};
    element.key.resize(kIfNameSize);  // the terminating zero
    element.comment = first.text;
    where.elements.push_back(std::move(element));
  }
  return where;
}

Positions::Positions(const Set& where) {
  for (const auto& element : where.elements) {
    const auto* key = reinterpret_cast<const char*>(element.key.data());
    add(std::string_view(key, std::find(key, key + element.key.size(), '\0') - key), element.comment);
  }
}

}  // namespace fwe::nft
