// selector.cpp - tokenizer and recursive-descent parser following Calico's libcalico-go selector package,
// so that exactly the selectors Calico accepts are accepted, with the same precedence.
#include "selector.hpp"

#include <algorithm>
#include <utility>

namespace fwe::calico {
namespace {

constexpr std::size_t kMaxLabelLength = 512;

enum class Tok {
  label,
  string,
  lbrace,
  rbrace,
  comma,
  eq,
  ne,
  in,
  not_,
  not_in,
  contains,
  starts_with,
  ends_with,
  all,
  has,
  lparen,
  rparen,
  and_,
  or_,
  global,
  eof
};

struct Token {
  Tok kind;
  std::string value;
  std::size_t offset;
};

bool is_label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '/' || c == '-';
}

class Tokenizer {
 public:
  explicit Tokenizer(std::string_view text) : text_(text) {}

  std::optional<std::vector<Token>> run(SelectorError& error) {
    std::vector<Token> tokens;
    while (true) {
      skip_blanks();
      const std::size_t start = pos_;
      if (pos_ >= text_.size()) {
        tokens.push_back({Tok::eof, {}, start});
        return tokens;
      }
      const char c = text_[pos_];
      auto single = [&](Tok kind) {
        tokens.push_back({kind, {}, start});
        ++pos_;
      };
      switch (c) {
        case '(':
          single(Tok::lparen);
          continue;
        case ')':
          single(Tok::rparen);
          continue;
        case '{':
          single(Tok::lbrace);
          continue;
        case '}':
          single(Tok::rbrace);
          continue;
        case ',':
          single(Tok::comma);
          continue;
        case '"':
        case '\'': {
          const std::size_t close = text_.find(c, pos_ + 1);
          if (close == std::string_view::npos) {
            error = {start, "unterminated string", std::string("close the string with ") + c};
            return std::nullopt;
          }
          tokens.push_back({Tok::string, std::string(text_.substr(pos_ + 1, close - pos_ - 1)), start});
          pos_ = close + 1;
          continue;
        }
        case '=':
          if (!cut("==")) {
            error = {start, "expected '=='", "write '==' to compare a label with a value"};
            return std::nullopt;
          }
          tokens.push_back({Tok::eq, {}, start});
          continue;
        case '!':
          if (cut("!=")) {
            tokens.push_back({Tok::ne, {}, start});
          } else {
            single(Tok::not_);
          }
          continue;
        case '&':
          if (!cut("&&")) {
            error = {start, "expected '&&'", "write '&&' for 'and'"};
            return std::nullopt;
          }
          tokens.push_back({Tok::and_, {}, start});
          continue;
        case '|':
          if (!cut("||")) {
            error = {start, "expected '||'", "write '||' for 'or'"};
            return std::nullopt;
          }
          tokens.push_back({Tok::or_, {}, start});
          continue;
        default:
          break;
      }
      if (!tokens.empty() && tokens.back().kind == Tok::label) {
        // After a label only an operator may follow.
        if (cut_word({"contains"})) {
          tokens.push_back({Tok::contains, {}, start});
        } else if (cut_word({"starts", "with"})) {
          tokens.push_back({Tok::starts_with, {}, start});
        } else if (cut_word({"ends", "with"})) {
          tokens.push_back({Tok::ends_with, {}, start});
        } else if (cut_word({"not", "in"})) {
          tokens.push_back({Tok::not_in, {}, start});
        } else if (cut_word({"in"})) {
          tokens.push_back({Tok::in, {}, start});
        } else {
          error = {start, "expected an operator after label '" + tokens.back().value + "'",
                   "use ==, !=, in, not in, contains, starts with or ends with"};
          return std::nullopt;
        }
        continue;
      }
      if (cut("has(")) {
        skip_blanks();
        const std::size_t label_start = pos_;
        auto label = identifier(error);
        if (!label) return std::nullopt;
        skip_blanks();
        if (!cut(")")) {
          error = {pos_, "no closing ')' after has(" + *label, "write has(label)"};
          return std::nullopt;
        }
        tokens.push_back({Tok::has, *label, label_start});
        continue;
      }
      if (cut_function("all(", Tok::all, tokens, error) ||
          cut_function("global(", Tok::global, tokens, error)) {
        continue;
      }
      if (!error.message.empty()) return std::nullopt;
      auto label = identifier(error);
      if (!label) return std::nullopt;
      tokens.push_back({Tok::label, *label, start});
    }
  }

 private:
  void skip_blanks() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }
  bool cut(std::string_view prefix) {
    if (text_.substr(pos_).starts_with(prefix)) {
      pos_ += prefix.size();
      return true;
    }
    return false;
  }
  // Keyword operators: the words (blanks between them allowed, none needed) and a word boundary after.
  bool cut_word(std::initializer_list<std::string_view> words) {
    std::size_t p = pos_;
    for (std::string_view word : words) {
      if (!text_.substr(p).starts_with(word)) return false;
      p += word.size();
      while (p < text_.size() && (text_[p] == ' ' || text_[p] == '\t')) ++p;
    }
    if (p < text_.size() && is_label_char(text_[p])) return false;
    pos_ = p;
    return true;
  }
  bool cut_function(std::string_view open, Tok kind, std::vector<Token>& tokens, SelectorError& error) {
    const std::size_t start = pos_;
    if (!cut(open)) return false;
    skip_blanks();
    if (!cut(")")) {
      error = {pos_, "no closing ')' after " + std::string(open),
               "write " + std::string(open) + ") - it takes no argument"};
      return false;
    }
    tokens.push_back({kind, {}, start});
    return true;
  }
  std::optional<std::string> identifier(SelectorError& error) {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && is_label_char(text_[pos_])) ++pos_;
    if (pos_ == start) {
      error = {start, "expected a label name",
               "labels are made of letters, digits and '_', '.', '/', '-'; values need quotes"};
      return std::nullopt;
    }
    if (pos_ - start > kMaxLabelLength) {
      error = {start, "label longer than 512 characters", "shorten the label"};
      return std::nullopt;
    }
    return std::string(text_.substr(start, pos_ - start));
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  std::optional<Selector::Expr> run(SelectorError& error) {
    auto expr = parse_or(error);
    if (!expr) return std::nullopt;
    if (peek().kind != Tok::eof) {
      error = {peek().offset, "unexpected content at end of selector", "join expressions with && or ||"};
      return std::nullopt;
    }
    return expr;
  }

 private:
  static constexpr int kMaxNesting = 64;

  const Token& peek() const { return tokens_[pos_]; }
  const Token& take() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }

  std::optional<Selector::Expr> parse_or(SelectorError& error) {
    return parse_list(Tok::or_, Selector::Op::or_, error);
  }
  std::optional<Selector::Expr> parse_list(Tok separator, Selector::Op op, SelectorError& error) {
    std::vector<Selector::Expr> operands;
    while (true) {
      auto operand =
          separator == Tok::or_ ? parse_list(Tok::and_, Selector::Op::and_, error) : parse_unary(error);
      if (!operand) return std::nullopt;
      operands.push_back(std::move(*operand));
      if (peek().kind != separator) break;
      take();
    }
    if (operands.size() == 1) return std::move(operands.front());
    Selector::Expr expr;
    expr.op = op;
    expr.operands = std::move(operands);
    return expr;
  }
  std::optional<Selector::Expr> parse_unary(SelectorError& error) {
    bool negated = false;
    while (peek().kind == Tok::not_) {
      negated = !negated;
      take();
    }
    auto expr = parse_primary(error);
    if (!expr || !negated) return expr;
    if (expr->op == Selector::Op::not_) return std::move(expr->operands.front());  // !(!x) is x, like !!x
    Selector::Expr negation;
    negation.op = Selector::Op::not_;
    negation.operands.push_back(std::move(*expr));
    return negation;
  }
  std::optional<Selector::Expr> parse_primary(SelectorError& error) {
    const Token& token = take();
    Selector::Expr expr;
    switch (token.kind) {
      case Tok::all:
        expr.op = Selector::Op::all;
        return expr;
      case Tok::global:
        expr.op = Selector::Op::global;
        return expr;
      case Tok::has:
        expr.op = Selector::Op::has;
        expr.label = token.value;
        return expr;
      case Tok::lparen: {
        // The parser, the printer and evaluation recurse per level: a bound keeps a hostile selector
        // (from a file or a datastore) from overflowing the stack.
        if (depth_ == kMaxNesting) {
          error = {token.offset, "parentheses nested more than " + std::to_string(kMaxNesting) + " deep",
                   "write the selector with fewer levels"};
          return std::nullopt;
        }
        ++depth_;
        auto inner = parse_or(error);
        --depth_;
        if (!inner) return std::nullopt;
        if (peek().kind != Tok::rparen) {
          error = {peek().offset, "expected ')'",
                   "close the parenthesis opened at offset " + std::to_string(token.offset + 1)};
          return std::nullopt;
        }
        take();
        return inner;
      }
      case Tok::label:
        return parse_comparison(token, error);
      case Tok::eof:
        error = {token.offset, "unexpected end of selector", "complete the expression"};
        return std::nullopt;
      default:
        error = {token.offset, "unexpected token",
                 "an expression starts with a label, has(...), all(), global(), '!' or '('"};
        return std::nullopt;
    }
  }
  std::optional<Selector::Expr> parse_comparison(const Token& label, SelectorError& error) {
    Selector::Expr expr;
    expr.label = label.value;
    const Token& op = take();
    switch (op.kind) {
      case Tok::eq:
        expr.op = Selector::Op::eq;
        break;
      case Tok::ne:
        expr.op = Selector::Op::ne;
        break;
      case Tok::contains:
        expr.op = Selector::Op::contains;
        break;
      case Tok::starts_with:
        expr.op = Selector::Op::starts_with;
        break;
      case Tok::ends_with:
        expr.op = Selector::Op::ends_with;
        break;
      case Tok::in:
      case Tok::not_in:
        return parse_set(label, op.kind == Tok::in, error);
      default:
        error = {op.offset, "expected an operator after label '" + label.value + "'",
                 "use ==, !=, in, not in, contains, starts with or ends with"};
        return std::nullopt;
    }
    const Token& value = take();
    if (value.kind != Tok::string) {
      error = {value.offset, "expected a quoted string", "quote the value: " + label.value + " == 'value'"};
      return std::nullopt;
    }
    expr.value = value.value;
    return expr;
  }
  std::optional<Selector::Expr> parse_set(const Token& label, bool positive, SelectorError& error) {
    Selector::Expr expr;
    expr.op = positive ? Selector::Op::in : Selector::Op::not_in;
    expr.label = label.value;
    if (peek().kind != Tok::lbrace) {
      error = {peek().offset, "expected a set literal", "write " + label.value + " in {'a', 'b'}"};
      return std::nullopt;
    }
    take();
    while (peek().kind == Tok::string) {
      expr.values.insert(take().value);
      if (peek().kind != Tok::comma) break;
      take();
    }
    if (peek().kind != Tok::rbrace) {
      error = {peek().offset, "expected '}'", "a set is quoted strings separated by commas, closed by '}'"};
      return std::nullopt;
    }
    take();
    return expr;
  }

  const std::vector<Token>& tokens_;
  std::size_t pos_ = 0;
  int depth_ = 0;  // parentheses open around the current position
};

bool evaluate(const Selector::Expr& expr, const Labels& labels) {
  using Op = Selector::Op;
  auto value_of = [&](const std::string& key) -> const std::string* {
    auto it = labels.find(key);
    return it == labels.end() ? nullptr : &it->second;
  };
  switch (expr.op) {
    case Op::all:
    case Op::global:
      return true;
    case Op::has:
      return value_of(expr.label) != nullptr;
    case Op::eq: {
      const std::string* v = value_of(expr.label);
      return v && *v == expr.value;
    }
    case Op::ne: {
      const std::string* v = value_of(expr.label);
      return !v || *v != expr.value;
    }
    case Op::in: {
      const std::string* v = value_of(expr.label);
      return v && expr.values.contains(*v);
    }
    case Op::not_in: {
      const std::string* v = value_of(expr.label);
      return !v || !expr.values.contains(*v);
    }
    case Op::contains: {
      const std::string* v = value_of(expr.label);
      return v && v->find(expr.value) != std::string::npos;
    }
    case Op::starts_with: {
      const std::string* v = value_of(expr.label);
      return v && v->starts_with(expr.value);
    }
    case Op::ends_with: {
      const std::string* v = value_of(expr.label);
      return v && v->ends_with(expr.value);
    }
    case Op::not_:
      return !evaluate(expr.operands.front(), labels);
    case Op::and_:
      return std::all_of(expr.operands.begin(), expr.operands.end(),
                         [&](const Selector::Expr& e) { return evaluate(e, labels); });
    case Op::or_:
      return std::any_of(expr.operands.begin(), expr.operands.end(),
                         [&](const Selector::Expr& e) { return evaluate(e, labels); });
  }
  return false;
}

std::string quoted(const std::string& value) {
  return value.find('"') == std::string::npos ? "\"" + value + "\"" : "'" + value + "'";
}

void print(const Selector::Expr& expr, std::string& out) {
  using Op = Selector::Op;
  auto list = [&](std::string_view separator) {
    out += '(';
    for (std::size_t i = 0; i < expr.operands.size(); ++i) {
      if (i) out += separator;
      print(expr.operands[i], out);
    }
    out += ')';
  };
  auto set = [&](std::string_view op) {
    out += expr.label;
    out += op;
    out += '{';
    bool first = true;
    for (const std::string& v : expr.values) {
      if (!first) out += ", ";
      first = false;
      out += quoted(v);
    }
    out += '}';
  };
  switch (expr.op) {
    case Op::all:
      out += "all()";
      return;
    case Op::global:
      out += "global()";
      return;
    case Op::has:
      out += "has(" + expr.label + ")";
      return;
    case Op::eq:
      out += expr.label + " == " + quoted(expr.value);
      return;
    case Op::ne:
      out += expr.label + " != " + quoted(expr.value);
      return;
    case Op::contains:
      out += expr.label + " contains " + quoted(expr.value);
      return;
    case Op::starts_with:
      out += expr.label + " starts with " + quoted(expr.value);
      return;
    case Op::ends_with:
      out += expr.label + " ends with " + quoted(expr.value);
      return;
    case Op::in:
      set(" in ");
      return;
    case Op::not_in:
      set(" not in ");
      return;
    case Op::not_:
      out += '!';
      print(expr.operands.front(), out);
      return;
    case Op::and_:
      list(" && ");
      return;
    case Op::or_:
      list(" || ");
      return;
  }
}

bool contains_global(const Selector::Expr& expr) {
  if (expr.op == Selector::Op::global) return true;
  return std::any_of(expr.operands.begin(), expr.operands.end(), contains_global);
}

Selector::Expr replace_all_nodes(const Selector::Expr& expr, std::string_view label, bool global_too) {
  using Op = Selector::Op;
  Selector::Expr has;
  has.op = Op::has;
  has.label = label;
  if (expr.op == Op::all) return has;
  if (expr.op == Op::global && global_too) {
    Selector::Expr negated;
    negated.op = Op::not_;
    negated.operands.push_back(std::move(has));
    return negated;
  }
  Selector::Expr out = expr;
  for (auto& operand : out.operands) operand = replace_all_nodes(operand, label, global_too);
  return out;
}

}  // namespace

Selector::Selector() : root_(std::make_shared<const Expr>()) {}
Selector::Selector(Expr root) : root_(std::make_shared<const Expr>(std::move(root))) {}

Selector Selector::with_all_as(std::string_view label, bool global_too) const {
  return Selector(replace_all_nodes(*root_, label, global_too));
}

std::optional<Selector> Selector::parse(std::string_view text, SelectorError& error) {
  error = {};
  auto tokens = Tokenizer(text).run(error);
  if (!tokens) return std::nullopt;
  if (tokens->front().kind == Tok::eof) return Selector();
  auto root = Parser(*tokens).run(error);
  if (!root) return std::nullopt;
  return Selector(std::move(*root));
}

bool Selector::matches(const Labels& labels) const {
  return evaluate(*root_, labels);
}

std::string Selector::canonical() const {
  std::string out;
  print(*root_, out);
  return out;
}

bool Selector::uses_global() const {
  return contains_global(*root_);
}

}  // namespace fwe::calico
