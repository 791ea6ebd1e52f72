// fwengine/yaml.hpp - the one YAML reader of every frontend and of the engine's config.
//
// Read by a fast scanner of the block-style subset that policies use, and by libyaml's event API for
// everything else and for every error (yaml_fast_scanner.hpp says which is which). Every node carries its
// file:line:column; duplicate mapping keys are errors; plain scalars resolve by YAML 1.2's core schema
// (so `010` is the integer 10, `yes` is the string "yes", `0x1F` is 31, `0o17` is 15).
#pragma once

#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fwengine/diagnostics.hpp"

namespace fwe::yaml {

enum class Kind : std::uint8_t { null, scalar, sequence, mapping };
// What a scalar resolves to under the YAML 1.2 core schema; quoted scalars are always strings.
enum class ScalarType { null, boolean, integer, floating, string };

class Node {
 public:
  Node() noexcept : text_() {}
  Node(const Node& other);
  Node(Node&& other) noexcept;
  Node& operator=(const Node& other);
  Node& operator=(Node&& other) noexcept;
  ~Node() { destroy_value(); }

  Kind kind() const { return kind_; }
  SourceLoc loc() const { return loc_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_scalar() const { return kind_ == Kind::scalar; }
  bool is_sequence() const { return kind_ == Kind::sequence; }
  bool is_mapping() const { return kind_ == Kind::mapping; }
  // The kind in words, for messages: "a mapping", "a list", "a string", "an integer", "null".
  std::string describe() const;

  // Scalars (a null node has empty text). A plain null form (~, null, an empty value) is a null node,
  // never a scalar: a scalar's scalar_type() is never null.
  const std::string& text() const { return has_children() ? kNoText : text_; }
  bool quoted() const { return quoted_; }
  ScalarType scalar_type() const;
  std::optional<bool> as_bool() const;         // true/True/TRUE/false/False/FALSE, unquoted
  std::optional<std::int64_t> as_int() const;  // decimal, 0o octal, 0x hex; unquoted; no overflow
  std::optional<double> as_double() const;     // integers and core-schema floats, unquoted

  // Sequences.
  std::span<const Node> items() const { return values(); }
  // Mappings: keys and values in document order. keys()[i] belongs to values()[i].
  std::span<const Node> keys() const { return children().first(children().size() - size()); }
  std::span<const Node> values() const { return children().last(size()); }
  std::size_t size() const { return kind_ == Kind::mapping ? children_.size() / 2 : children().size(); }
  // The value for a scalar key, or nullptr.
  const Node* find(std::string_view key) const;
  Node* find(std::string_view key) { return const_cast<Node*>(std::as_const(*this).find(key)); }

  // Frees the subtree of values()[i] (items()[i] of a list), which becomes null at the same location.
  // For a reader that is done with one part of a large document: it then does not hold the whole tree
  // and everything it built from the tree at the same time.
  void release_value(std::size_t i) {
    Node& value = children_[children_.size() - size() + i];
    SourceLoc at = value.loc_;
    value = Node();
    value.loc_ = at;
  }

 private:
  friend class Builder;
  static const std::string kNoText;

  bool has_children() const { return kind_ == Kind::sequence || kind_ == Kind::mapping; }
  std::span<const Node> children() const {
    return has_children() ? std::span(children_) : std::span<const Node>();
  }
  // Makes a null node an empty collection of that kind.
  void become_collection(Kind kind) {
    text_.~basic_string();
    new (&children_) std::vector<Node>();
    kind_ = kind;
  }
  void destroy_value() noexcept {
    if (has_children())
      children_.~vector();
    else
      text_.~basic_string();
  }
  // Constructs this node's value (destroyed or never built) from other's, copied or moved.
  template <typename Other>
  void take_value(Other&& other) {
    loc_ = other.loc_;
    kind_ = other.kind_;
    quoted_ = other.quoted_;
    if (other.has_children())
      new (&children_) std::vector<Node>(std::forward<Other>(other).children_);
    else
      new (&text_) std::string(std::forward<Other>(other).text_);
  }

  SourceLoc loc_;
  Kind kind_ = Kind::null;
  bool quoted_ = false;
  // A node holds text or children, never both (48 bytes rather than 72: a policy of 50,000 rules has
  // 450,000 nodes). Collections hold children_; scalars and nulls text_ (empty for a null).
  union {
    std::string text_;
    // A list's items; a mapping's keys, then its values: one allocation per collection.
    std::vector<Node> children_;
  };
};

// Parses every document of a stream. On a syntax error, a duplicate key, an undefined alias or an
// unsupported construct (complex keys), reports it through diag (with `file` as the location's file
// index) and returns std::nullopt: a stream with an error yields no documents at all. An empty stream
// gives an empty vector. Aliases are expanded (the copy keeps the anchor's location).
std::optional<std::vector<Node>> parse(std::string_view text, std::uint32_t file, Diagnostics& diag);

// Reads the file (read_source_file) and parses it; an unreadable file is an error at line 0 of it.
std::optional<std::vector<Node>> parse_file(const std::string& path, Diagnostics& diag);

// Where byte `offset` of a scalar's text is in `source`, the text the scalar was parsed from (the whole
// stream): re-scans it from its location by its style (plain, '...', "..." with escapes, | and > block
// scalars), so escapes and folded or indented lines are counted as written. An offset at or past the
// text's end gives the position just after its last character. nullopt when `source` does not hold
// that scalar there.
std::optional<SourceLoc> locate_in_scalar(std::string_view source, const Node& scalar, std::size_t offset);

// Quoting a string for YAML output where yaml-cpp is not used (e.g. in messages).
std::string quote(std::string_view s);

// parse()'s two scanners, for the test and the fuzz target that check they agree: parse() takes the
// fast one's answer when there is one, and otherwise libyaml's.
namespace detail {
// nullopt, with nothing reported, when the text is outside the fast scanner's subset or has an error.
std::optional<std::vector<Node>> parse_fast(std::string_view text, std::uint32_t file);
std::optional<std::vector<Node>> parse_libyaml(std::string_view text, std::uint32_t file, Diagnostics& diag);
// Where two trees differ (kind, location, text, quoting or size), or nullopt when they are the same.
std::optional<std::string> first_difference(const Node& a, const Node& b);
}  // namespace detail

}  // namespace fwe::yaml
