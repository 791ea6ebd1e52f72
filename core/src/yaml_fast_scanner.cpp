// yaml_fast_scanner.cpp - the subset of YAML that policies use, read line by line (see the header).
//
// The marks follow libyaml 0.2.5: a scalar at its first character (its quote), a block mapping at its
// first key, a block list at its first '-', an empty value just after its ':' or '-', the empty root
// of a document at the token that ends it. Indentation decides structure as in libyaml, and every
// line whose indentation fits no open collection stops the scan: that is how continuation lines of
// multi-line scalars, and indentation errors, end up with libyaml.
#include "yaml_fast_scanner.hpp"

#include <cstring>
#include <string>

namespace fwe::yaml::fast {

namespace {

// Deeper input goes to libyaml, whose reader reports nesting beyond its own limit.
constexpr std::size_t kMaxDepth = 512;
// libyaml ends a simple key's chance after 1,024 characters; stay clear of that edge.
constexpr std::size_t kMaxKeySpan = 1000;
// next_content()'s answer at the end of the input or at a '---' / '...' line: it ends every collection.
constexpr int kNoContent = -1;

bool is_flow_indicator(char c) {
  return c == ',' || c == '[' || c == ']' || c == '{' || c == '}';
}

// Characters that cannot start a plain scalar (libyaml's list; '-' may, when a non-blank follows).
bool is_indicator(char c) {
  return std::strchr("-?:,[]{}#&*!|>'\"%@`", c) != nullptr;
}

bool is_ascii_printable(char c) {
  return c >= 0x20 && c <= 0x7e;
}

// Printable ASCII and line feeds, and in comments any UTF-8 that libyaml reads as one printable
// character (the scanners stop at a non-ASCII byte outside a comment, where it would change how
// columns are counted). Tabs, CRs, a BOM, invalid UTF-8 and the Unicode line breaks, which move
// libyaml's line count, go to libyaml.
bool readable(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  for (std::size_t i = 0; i < text.size();) {
    unsigned char lead = bytes[i];
    if (lead < 0x80) {
      if (lead < 0x20 ? lead != '\n' : lead == 0x7f) return false;
      ++i;
      continue;
    }
    std::size_t length = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 ? 2 : 0;
    if (length == 0 || lead > 0xf4 || i + length > text.size()) return false;
    char32_t code = lead & (0x3f >> (length - 1));
    for (std::size_t k = 1; k < length; ++k) {
      if ((bytes[i + k] & 0xc0) != 0x80) return false;
      code = (code << 6) | (bytes[i + k] & 0x3f);
    }
    bool overlong = (length == 3 && code < 0x800) || (length == 4 && code < 0x10000);
    bool printable = (code >= 0xa0 && code <= 0xd7ff) ||
                     (code >= 0xe000 && code <= 0xfffd && code != 0xfeff) ||
                     (code >= 0x10000 && code <= 0x10ffff);
    if (overlong || !printable || code == 0x2028 || code == 0x2029) return false;
    i += length;
  }
  return true;
}

class Scanner {
 public:
  Scanner(std::string_view text, Events& events) : text_(text), events_(events) {}

  bool run() {
    if (!readable(text_)) return false;
    for (int indent = next_content(); pos_ < text_.size(); indent = next_content()) {
      bool explicit_start = starts_with_marker("---");
      if (starts_with_marker("...")) return false;
      if (explicit_start) {
        pos_ += 3;
        skip_spaces();
        if (!end_line()) return false;  // content after '---' on its line
        indent = next_content();
      }
      if (!events_.document_start()) return false;
      if (indent == kNoContent) {
        // '---' followed by '---' or by the end: the document is an empty scalar at that token.
        if (!events_.scalar(pos_ < text_.size() ? mark() : stream_end_mark(), {}, true)) return false;
      } else {
        if (!block_node(0)) return false;
        if (next_content() != kNoContent) return false;  // more after the root: a continuation or an error
      }
      if (!events_.document_end()) return false;
    }
    return true;
  }

 private:
  struct Scalar {
    Mark at;
    std::string_view text;
    bool plain = true;
  };

  char at(std::size_t i) const { return i < text_.size() ? text_[i] : '\0'; }
  char current() const { return at(pos_); }
  // Whether the character at i ends a token in block context: a space, a line break or the end.
  bool blank_or_end(std::size_t i) const {
    char c = at(i);
    return c == ' ' || c == '\n' || c == '\0';
  }
  Mark mark() const { return {line_, static_cast<std::uint32_t>(pos_ - line_start_)}; }
  Mark mark_after(Mark m) const { return {m.line, m.column + 1}; }
  // libyaml puts the end of the stream at the start of the line after the last one.
  Mark stream_end_mark() const {
    bool ends_line = text_.empty() || text_.back() == '\n';
    return {ends_line ? line_ : line_ + 1, 0};
  }
  void skip_spaces() {
    while (current() == ' ') ++pos_;
  }
  void next_line() {
    ++pos_;
    ++line_;
    line_start_ = pos_;
  }
  bool starts_with_marker(std::string_view marker) const {
    return pos_ == line_start_ && text_.substr(pos_, 3) == marker && blank_or_end(pos_ + 3);
  }
  bool at_sequence_entry() const { return current() == '-' && blank_or_end(pos_ + 1); }

  // From a line's start (or content already found), skips blank and comment lines. Returns the
  // indentation of the next content line, with pos_ at its first character, or kNoContent.
  int next_content() {
    for (;;) {
      skip_spaces();
      char c = current();
      if (c == '\n') {
        next_line();
      } else if (c == '#') {
        const void* end = std::memchr(text_.data() + pos_, '\n', text_.size() - pos_);
        pos_ = end ? static_cast<std::size_t>(static_cast<const char*>(end) - text_.data()) : text_.size();
      } else if (c == '\0') {
        return kNoContent;
      } else {
        if (starts_with_marker("---") || starts_with_marker("...")) return kNoContent;
        return static_cast<int>(pos_ - line_start_);
      }
    }
  }

  // After a node: spaces, an optional comment, then the line break or the end of the input.
  bool end_line() {
    skip_spaces();
    if (current() == '#') {
      if (text_[pos_ - 1] != ' ') return false;  // a comment must follow a space
      const void* end = std::memchr(text_.data() + pos_, '\n', text_.size() - pos_);
      pos_ = end ? static_cast<std::size_t>(static_cast<const char*>(end) - text_.data()) : text_.size();
    }
    if (current() == '\n') {
      next_line();
      return true;
    }
    return current() == '\0';
  }

  // A node in block context starting at pos_ (the first character of its line's content, or after
  // a '- '); its indentation is its column.
  bool block_node(std::size_t depth) {
    if (depth > kMaxDepth) return false;
    int indent = static_cast<int>(pos_ - line_start_);
    if (at_sequence_entry()) return block_sequence(indent, false, depth);
    if (current() == '[' || current() == '{') return flow_node(depth) && end_line();
    Scalar scalar;
    if (!scan_scalar(false, scalar)) return false;
    std::size_t after = pos_;
    skip_spaces();
    if (current() == ':' && blank_or_end(pos_ + 1)) return block_mapping(indent, scalar, depth);
    pos_ = after;
    return events_.scalar(scalar.at, scalar.text, scalar.plain) && end_line();
  }

  // A block mapping whose first key was scanned; pos_ is at that key's ':'.
  bool block_mapping(int indent, Scalar key, std::size_t depth) {
    if (!events_.open(Kind::mapping, key.at)) return false;
    for (;;) {
      if (pos_ - line_start_ - key.at.column > kMaxKeySpan) return false;
      if (!events_.scalar(key.at, key.text, key.plain)) return false;
      Mark after_colon = mark_after(mark());
      ++pos_;
      skip_spaces();
      if (current() == '#' || current() == '\n' || current() == '\0') {
        if (!end_line()) return false;
        int next = next_content();
        if (next > indent) {
          if (!block_node(depth + 1)) return false;
        } else if (next == indent && at_sequence_entry()) {
          if (!block_sequence(indent, true, depth + 1)) return false;  // a list at its key's indentation
        } else if (!events_.scalar(after_colon, {}, true)) {
          return false;
        }
      } else if (at_sequence_entry() || !inline_value(depth + 1)) {
        return false;
      }
      int next = next_content();
      if (next < indent) break;
      if (next > indent || at_sequence_entry() || !scan_key(key)) return false;
    }
    return events_.close();
  }

  // A block list whose first '-' is at pos_. An indentless list (the value of a key at the key's own
  // indentation) ends at the first line of that indentation that is not an entry.
  bool block_sequence(int indent, bool indentless, std::size_t depth) {
    if (!events_.open(Kind::sequence, mark())) return false;
    for (;;) {
      Mark after_dash = mark_after(mark());
      ++pos_;
      skip_spaces();
      if (current() == '#' || current() == '\n' || current() == '\0') {
        if (!end_line()) return false;
        if (next_content() > indent) {
          if (!block_node(depth + 1)) return false;
        } else if (!events_.scalar(after_dash, {}, true)) {
          return false;
        }
      } else if (!block_node(depth + 1)) {  // on the entry's line: a scalar, a mapping or a list
        return false;
      }
      int next = next_content();
      if (next < indent) break;
      if (next > indent) return false;
      if (!at_sequence_entry()) {
        if (indentless) break;
        return false;
      }
    }
    return events_.close();
  }

  // A mapping's next key at pos_, up to its ':'.
  bool scan_key(Scalar& key) {
    if (current() == '[' || current() == '{' || !scan_scalar(false, key)) return false;
    skip_spaces();
    return current() == ':' && blank_or_end(pos_ + 1);
  }

  // A value on its key's line: a scalar or a flow collection, then the end of the line.
  bool inline_value(std::size_t depth) {
    if (current() == '[' || current() == '{') return flow_node(depth) && end_line();
    Scalar scalar;
    return scan_scalar(false, scalar) && events_.scalar(scalar.at, scalar.text, scalar.plain) && end_line();
  }

  bool flow_node(std::size_t depth) {
    if (depth > kMaxDepth) return false;
    if (current() == '[') return flow_sequence(depth);
    if (current() == '{') return flow_mapping(depth);
    Scalar scalar;
    return scan_scalar(true, scalar) && events_.scalar(scalar.at, scalar.text, scalar.plain);
  }

  // '[ a, b ]' on one line; pos_ is at '['.
  bool flow_sequence(std::size_t depth) {
    if (!events_.open(Kind::sequence, mark())) return false;
    ++pos_;
    skip_spaces();
    if (current() != ']') {
      for (;;) {
        if (!flow_node(depth + 1)) return false;
        skip_spaces();
        if (current() == ']') break;
        if (current() != ',') return false;
        ++pos_;
        skip_spaces();
        if (current() == ']') return false;  // a trailing comma: leave it to libyaml
      }
    }
    ++pos_;
    return events_.close();
  }

  // '{ k: v, ... }' on one line, every key with a value; pos_ is at '{'.
  bool flow_mapping(std::size_t depth) {
    if (!events_.open(Kind::mapping, mark())) return false;
    ++pos_;
    skip_spaces();
    if (current() != '}') {
      for (;;) {
        Scalar key;
        if (current() == '[' || current() == '{' || !scan_scalar(true, key)) return false;
        if (!events_.scalar(key.at, key.text, key.plain)) return false;
        skip_spaces();
        if (current() != ':' || at(pos_ + 1) != ' ') return false;
        if (pos_ - line_start_ - key.at.column > kMaxKeySpan) return false;
        ++pos_;
        skip_spaces();
        if (current() == ',' || current() == '}' || !flow_node(depth + 1)) return false;
        skip_spaces();
        if (current() == '}') break;
        if (current() != ',') return false;
        ++pos_;
        skip_spaces();
        if (current() == '}') return false;
      }
    }
    ++pos_;
    return events_.close();
  }

  bool scan_scalar(bool flow, Scalar& scalar) {
    scalar.at = mark();
    if (current() == '\'') return scan_single_quoted(scalar);
    if (current() == '"') return scan_double_quoted(scalar);
    return scan_plain(flow, scalar);
  }

  // A plain scalar on one line. It ends before ': ', ' #' and the line's end, and in flow context
  // also before ',[]{}'; it never includes trailing spaces. pos_ is left just after its last character.
  bool scan_plain(bool flow, Scalar& scalar) {
    std::size_t start = pos_;
    char first = current();
    if (first == ' ' || !is_ascii_printable(first)) return false;
    if (is_indicator(first)) {
      char next = at(pos_ + 1);
      bool dash_starts = first == '-' && !blank_or_end(pos_ + 1) && !(flow && is_flow_indicator(next));
      if (!dash_starts) return false;
    }
    std::size_t end = pos_;
    for (;;) {
      for (char c = current(); !blank_or_end(pos_); c = current()) {
        if (!is_ascii_printable(c)) return false;
        if (c == ':') {
          char next = at(pos_ + 1);
          if (next == ' ' || next == '\n' || next == '\0') break;
          if (flow && (is_flow_indicator(next) || next == '?')) return false;  // libyaml refuses these
        }
        if (flow && is_flow_indicator(c)) break;
        ++pos_;
      }
      if (pos_ > end) end = pos_;
      if (!blank_or_end(pos_)) break;  // stopped at an indicator
      skip_spaces();
      if (current() == '#' || current() == '\n' || current() == '\0') break;
      if (current() == ':' && blank_or_end(pos_ + 1)) break;
      if (flow && is_flow_indicator(current())) break;
    }
    pos_ = end;
    scalar.text = text_.substr(start, end - start);
    scalar.plain = true;
    return true;
  }

  // 'text' on one line; '' is a quote.
  bool scan_single_quoted(Scalar& scalar) {
    std::size_t start = ++pos_;
    bool copied = false;
    for (;; ++pos_) {
      char c = current();
      if (!is_ascii_printable(c)) return false;  // a line break, the end or UTF-8
      if (c != '\'') continue;
      if (at(pos_ + 1) != '\'') break;
      if (!copied) scratch_.clear();
      scratch_.append(text_.substr(start, pos_ + 1 - start));
      copied = true;
      start = ++pos_ + 1;
    }
    return end_quoted(scalar, start, copied);
  }

  // "text" on one line, with the escapes that stand for one ASCII character.
  bool scan_double_quoted(Scalar& scalar) {
    std::size_t start = ++pos_;
    bool copied = false;
    for (;; ++pos_) {
      char c = current();
      if (!is_ascii_printable(c)) return false;
      if (c == '"') break;
      if (c != '\\') continue;
      char escaped = unescape(at(pos_ + 1));
      if (escaped == kNoEscape) return false;
      if (!copied) scratch_.clear();
      scratch_.append(text_.substr(start, pos_ - start));
      scratch_.push_back(escaped);
      copied = true;
      start = ++pos_ + 1;
    }
    return end_quoted(scalar, start, copied);
  }

  // At a closing quote: the text from `start` (after what scratch_ holds, when the scalar had to be
  // copied), then what may follow. libyaml takes a token right after a closing quote only in places
  // this scanner leaves to it.
  bool end_quoted(Scalar& scalar, std::size_t start, bool copied) {
    if (copied) {
      scratch_.append(text_.substr(start, pos_ - start));
      scalar.text = scratch_;
    } else {
      scalar.text = text_.substr(start, pos_ - start);
    }
    ++pos_;
    scalar.plain = false;
    char c = current();
    return c == ' ' || c == '\n' || c == '\0' || c == ':' || c == ',' || c == ']' || c == '}';
  }

  static constexpr char kNoEscape = 0x7f;  // never the result of an escape this scanner knows
  static char unescape(char c) {
    switch (c) {
      case '0':
        return '\0';
      case 'a':
        return '\a';
      case 'b':
        return '\b';
      case 't':
        return '\t';
      case 'n':
        return '\n';
      case 'v':
        return '\v';
      case 'f':
        return '\f';
      case 'r':
        return '\r';
      case 'e':
        return '\x1b';
      case ' ':
      case '"':
      case '/':
      case '\\':
        return c;
      default:
        return kNoEscape;  // \x, \u, \U, \N, \_, \L, \P and line breaks produce more than one ASCII byte
    }
  }

  std::string_view text_;
  Events& events_;
  std::size_t pos_ = 0;
  std::size_t line_start_ = 0;
  std::uint32_t line_ = 0;
  std::string scratch_;  // the text of a quoted scalar with escapes, until it is reported
};

}  // namespace

bool scan(std::string_view text, Events& events) {
  return Scanner(text, events).run();
}

}  // namespace fwe::yaml::fast
