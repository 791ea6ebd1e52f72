// yaml_locate.cpp - from a byte of a scalar's decoded text back to its line and column in the source.
//
// A node keeps only where its scalar starts. Escapes ("\"" is two characters for one byte), folded line
// breaks and the indentation of block scalars make the decoded text and the source differ, so a
// position inside the text (a selector's error, say) is found by scanning the scalar again from its
// start, with libyaml's rules for each style, and checking every decoded byte against the node's text.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "fwengine/yaml.hpp"

namespace fwe::yaml {

namespace {

class Rescan {
 public:
  Rescan(std::string_view source, const Node& node, std::size_t offset)
      : src_(source), text_(node.text()), offset_(offset), file_(node.loc().file) {}

  std::optional<SourceLoc> run(SourceLoc start) {
    if (!seek(start)) return std::nullopt;
    // Properties (an anchor, a tag) come before the scalar itself; the node's mark is at the first.
    while (at('&') || at('!')) {
      while (!eof() && !blank() && !brk()) advance();
      while (blank() || brk()) brk() ? skip_break() : advance();
    }
    end_ = here();
    if (at('"') || at('\'')) {
      flow(at('\''));
    } else if (at('|') || at('>')) {
      block(at('|'));
    } else {
      plain();
    }
    done();
    return result_;
  }

 private:
  bool eof() const { return pos_ >= src_.size(); }
  char cur(std::size_t ahead = 0) const { return pos_ + ahead < src_.size() ? src_[pos_ + ahead] : '\0'; }
  bool at(char c) const { return !eof() && cur() == c; }
  bool blank() const { return at(' ') || at('\t'); }
  bool brk(std::size_t ahead = 0) const {
    return pos_ + ahead < src_.size() && (cur(ahead) == '\n' || cur(ahead) == '\r');
  }
  SourceLoc here() const { return {file_, line_, col_}; }

  // One character: a UTF-8 sequence counts as one column, as libyaml's marks count.
  std::size_t char_length() const {
    const auto lead = static_cast<unsigned char>(cur());
    const std::size_t length = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    return std::min(length, src_.size() - pos_);
  }
  void advance() {
    pos_ += char_length();
    ++col_;
  }
  void skip_break() {
    pos_ += cur() == '\r' && cur(1) == '\n' ? 2 : 1;
    ++line_;
    col_ = 1;
  }

  bool seek(SourceLoc start) {
    if (start.line == 0 || start.col == 0) return false;
    while (line_ < start.line) {
      while (!eof() && !brk()) ++pos_;
      if (eof()) return false;
      skip_break();
    }
    while (col_ < start.col) {
      if (eof() || brk()) return false;
      advance();
    }
    return true;
  }

  // Decoded bytes must be the node's text; the answer is taken when the asked-for byte comes, or when
  // the text is complete and the offset lies at or past its end.
  bool done() {
    if (failed_ || result_) return true;
    if (out_ >= text_.size() && offset_ >= text_.size()) result_ = end_;
    return result_.has_value();
  }
  void emit(std::string_view bytes, SourceLoc loc, SourceLoc after) {
    for (char byte : bytes) {
      if (done()) return;
      if (out_ >= text_.size() || text_[out_] != byte) {
        failed_ = true;
        return;
      }
      if (out_ == offset_) result_ = loc;
      ++out_;
    }
    end_ = after;
    done();
  }
  void emit_char() {
    const SourceLoc loc = here();
    const std::string_view bytes = src_.substr(pos_, char_length());
    advance();
    emit(bytes, loc, here());
  }
  // A line break as content, or folded to a space: at the break; the text ends where its line does.
  void emit_break(char byte, SourceLoc loc) { emit(std::string_view(&byte, 1), loc, loc); }

  static void append_utf8(std::string& out, char32_t code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xc0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xe0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    }
  }

  // A double-quoted escape other than an escaped line break, as libyaml decodes it.
  void emit_escape() {
    const SourceLoc loc = here();
    advance();  // the backslash
    const char kind = cur();
    std::string bytes;
    std::size_t hex = 0;
    switch (kind) {
      case '0':
        bytes = std::string(1, '\0');
        break;
      case 'a':
        bytes = "\a";
        break;
      case 'b':
        bytes = "\b";
        break;
      case 't':
      case '\t':
        bytes = "\t";
        break;
      case 'n':
        bytes = "\n";
        break;
      case 'v':
        bytes = "\v";
        break;
      case 'f':
        bytes = "\f";
        break;
      case 'r':
        bytes = "\r";
        break;
      case 'e':
        bytes = "\x1b";
        break;
      case ' ':
      case '"':
      case '/':
      case '\'':
      case '\\':
        bytes = std::string(1, kind);
        break;
      case 'N':
        append_utf8(bytes, 0x85);
        break;
      case '_':
        append_utf8(bytes, 0xa0);
        break;
      case 'L':
        append_utf8(bytes, 0x2028);
        break;
      case 'P':
        append_utf8(bytes, 0x2029);
        break;
      case 'x':
        hex = 2;
        break;
      case 'u':
        hex = 4;
        break;
      case 'U':
        hex = 8;
        break;
      default:
        failed_ = true;
        return;
    }
    advance();
    if (hex > 0) {
      char32_t code = 0;
      for (std::size_t i = 0; i < hex; ++i, advance()) {
        const char c = cur();
        const int digit = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
        if (digit < 0) {
          failed_ = true;
          return;
        }
        code = code * 16 + static_cast<char32_t>(digit);
      }
      append_utf8(bytes, code);
    }
    emit(bytes, loc, here());
  }

  // Between two runs of non-blank characters of a flow or plain scalar: blanks are kept within a line;
  // a line break becomes a space, or the empty lines after it one '\n' each (libyaml's folding).
  struct Gap {
    std::string blanks;
    std::vector<SourceLoc> blank_locs;
    bool leading_blanks = false;
    std::optional<SourceLoc> leading_break;  // none after an escaped line break
    std::vector<SourceLoc> trailing_breaks;
  };
  void read_gap(Gap& gap) {
    while (blank() || brk()) {
      if (blank()) {
        if (!gap.leading_blanks) {
          gap.blanks += cur();
          gap.blank_locs.push_back(here());
        }
        advance();
      } else if (!gap.leading_blanks) {
        gap.blanks.clear();
        gap.blank_locs.clear();
        gap.leading_break = here();
        gap.leading_blanks = true;
        skip_break();
      } else {
        gap.trailing_breaks.push_back(here());
        skip_break();
      }
    }
  }
  void join_gap(Gap& gap) {
    if (gap.leading_blanks) {
      if (gap.leading_break && gap.trailing_breaks.empty()) emit_break(' ', *gap.leading_break);
      for (SourceLoc loc : gap.trailing_breaks) emit_break('\n', loc);
    } else {
      for (std::size_t i = 0; i < gap.blanks.size(); ++i) {
        emit(gap.blanks.substr(i, 1), gap.blank_locs[i],
             {file_, gap.blank_locs[i].line, gap.blank_locs[i].col + 1});
      }
    }
    gap = Gap();
  }

  void flow(bool single) {
    const char quote = cur();
    advance();
    end_ = here();
    if (done()) return;
    while (!eof() && !done()) {
      Gap gap;
      while (!eof() && !blank() && !brk() && !done()) {
        if (single && at('\'') && cur(1) == '\'') {
          const SourceLoc loc = here();
          advance();
          advance();
          emit("'", loc, here());
        } else if (at(quote)) {
          return;
        } else if (!single && at('\\') && brk(1)) {
          advance();
          skip_break();
          gap.leading_blanks = true;
          break;
        } else if (!single && at('\\')) {
          emit_escape();
        } else {
          emit_char();
        }
      }
      if (at(quote) || done()) return;
      read_gap(gap);
      join_gap(gap);
    }
  }

  void plain() {
    Gap gap;
    while (!eof() && !done()) {
      while (!eof() && !blank() && !brk() && !done()) {
        join_gap(gap);
        if (done()) return;
        emit_char();
      }
      if (done() || !(blank() || brk())) return;
      read_gap(gap);
      if (at('#')) return;  // a comment ends the scalar
    }
  }

  void block(bool literal) {
    advance();  // '|' or '>'
    while (at('+') || at('-') || (cur() >= '1' && cur() <= '9')) advance();
    while (blank()) advance();
    if (at('#')) {
      while (!eof() && !brk()) advance();
    }
    if (eof()) return;
    if (!brk()) {
      failed_ = true;
      return;
    }
    skip_break();
    // The content's indentation: the first line with content, less the spaces the text keeps of it.
    std::size_t first_text = text_.find_first_not_of('\n');
    if (first_text == std::string::npos) first_text = text_.size();
    const std::size_t kept = text_.find_first_not_of(' ', first_text) == std::string::npos
                                 ? text_.size() - first_text
                                 : text_.find_first_not_of(' ', first_text) - first_text;
    std::size_t probe = pos_;
    while (probe < src_.size()) {
      std::size_t spaces = 0;
      while (probe + spaces < src_.size() && src_[probe + spaces] == ' ') ++spaces;
      const char next = probe + spaces < src_.size() ? src_[probe + spaces] : '\n';
      if (next != '\n' && next != '\r') {
        if (spaces < kept + 1) {
          failed_ = true;
          return;
        }
        indent_ = static_cast<std::uint32_t>(spaces - kept);
        break;
      }
      probe += spaces + 1;
    }
    if (indent_ == 0) return;  // no content line: only an empty text can be located
    std::optional<SourceLoc> leading_break;
    std::vector<SourceLoc> trailing_breaks;
    bool leading_blank = false;
    auto scan_breaks = [&] {
      while (true) {
        while (col_ - 1 < indent_ && at(' ')) advance();
        if (!brk()) return;
        trailing_breaks.push_back(here());
        skip_break();
      }
    };
    scan_breaks();
    while (col_ - 1 == indent_ && !eof() && !done()) {
      const bool trailing_blank = blank();
      if (!literal && leading_break && !leading_blank && !trailing_blank) {
        if (trailing_breaks.empty()) emit_break(' ', *leading_break);
      } else if (leading_break) {
        emit_break('\n', *leading_break);
      }
      leading_break.reset();
      for (SourceLoc loc : trailing_breaks) emit_break('\n', loc);
      trailing_breaks.clear();
      leading_blank = blank();
      while (!eof() && !brk() && !done()) emit_char();
      if (eof() || done()) return;
      leading_break = here();
      skip_break();
      scan_breaks();
    }
    // What chomping keeps at the end: the last line break and, with '+', the empty lines after it.
    if (leading_break) emit_break('\n', *leading_break);
    for (SourceLoc loc : trailing_breaks) emit_break('\n', loc);
  }

  std::string_view src_;
  const std::string& text_;
  std::size_t offset_;
  std::uint32_t file_;
  std::size_t pos_ = 0;
  std::uint32_t line_ = 1, col_ = 1;
  std::uint32_t indent_ = 0;
  std::size_t out_ = 0;
  SourceLoc end_;
  bool failed_ = false;
  std::optional<SourceLoc> result_;
};

}  // namespace

std::optional<SourceLoc> locate_in_scalar(std::string_view source, const Node& scalar, std::size_t offset) {
  if (!scalar.is_scalar()) return std::nullopt;
  return Rescan(source, scalar, offset).run(scalar.loc());
}

}  // namespace fwe::yaml
