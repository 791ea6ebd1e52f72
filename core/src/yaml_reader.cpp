// yaml_reader.cpp - the one YAML reader: scanner events to a located Node tree.
//
// The text is read by the fast scanner (yaml_fast_scanner.hpp) when it lies in the subset that one
// knows, and otherwise, or when it has an error, by libyaml, whose messages name every problem.
// libyaml's event API gives a start mark for every node and is much faster than building a libyaml
// document first. Children of open collections wait on two shared stacks (mapping keys; items and
// values) and are moved into exactly sized vectors when the collection closes, so building the tree
// costs one allocation per collection, and nothing per scalar beyond its long text.
// Large inputs are scanned by libyaml on a second thread while this one builds the tree.
#include <yaml.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "fwengine/source_text.hpp"
#include "fwengine/yaml.hpp"
#include "yaml_fast_scanner.hpp"

namespace fwe::yaml {

namespace {

constexpr std::string_view kCoreTagPrefix = "tag:yaml.org,2002:";
// Deeper nesting is certainly a mistake, and the recursive destruction of Node must not overflow the stack.
constexpr std::size_t kMaxDepth = 1000;
// Aliases are expanded by copy; this bounds "billion laughs" inputs.
constexpr std::size_t kMaxAliasNodes = 1'000'000;
// Mappings with more keys than this index their keys for the duplicate check instead of scanning.
constexpr std::size_t kLinearKeyScanLimit = 16;
// From this input size on, libyaml runs on a second thread (see EventPipeline); below it, starting
// a thread costs more than the overlap gains.
constexpr std::size_t kPipelineMinBytes = 256 * 1024;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_octal_digit(char c) {
  return c >= '0' && c <= '7';
}
bool is_hex_digit(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

template <typename Predicate>
bool all_of_nonempty(std::string_view s, Predicate predicate) {
  if (s.empty()) return false;
  for (char c : s)
    if (!predicate(c)) return false;
  return true;
}

std::string_view strip_sign(std::string_view s) {
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) s.remove_prefix(1);
  return s;
}

bool is_null_text(std::string_view s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}
bool is_true_text(std::string_view s) {
  return s == "true" || s == "True" || s == "TRUE";
}
bool is_false_text(std::string_view s) {
  return s == "false" || s == "False" || s == "FALSE";
}

bool is_decimal_text(std::string_view s) {
  return all_of_nonempty(strip_sign(s), is_digit);
}
bool is_octal_text(std::string_view s) {
  return s.starts_with("0o") && all_of_nonempty(s.substr(2), is_octal_digit);
}
bool is_hex_text(std::string_view s) {
  return s.starts_with("0x") && all_of_nonempty(s.substr(2), is_hex_digit);
}
bool is_integer_text(std::string_view s) {
  return is_decimal_text(s) || is_octal_text(s) || is_hex_text(s);
}

bool is_infinity_text(std::string_view s) {
  s = strip_sign(s);
  return s == ".inf" || s == ".Inf" || s == ".INF";
}
bool is_nan_text(std::string_view s) {
  return s == ".nan" || s == ".NaN" || s == ".NAN";
}

// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool is_float_number_text(std::string_view s) {
  s = strip_sign(s);
  std::size_t i = 0;
  auto skip_digits = [&] {
    std::size_t start = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    return i - start;
  };
  std::size_t integer_digits = skip_digits();
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t fraction_digits = skip_digits();
    if (integer_digits == 0 && fraction_digits == 0) return false;
  } else if (integer_digits == 0) {
    return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (skip_digits() == 0) return false;
  }
  return i == s.size();
}

bool is_float_text(std::string_view s) {
  return is_float_number_text(s) || is_infinity_text(s) || is_nan_text(s);
}

ScalarType resolve_plain(std::string_view s) {
  if (is_null_text(s)) return ScalarType::null;
  if (is_true_text(s) || is_false_text(s)) return ScalarType::boolean;
  if (is_integer_text(s)) return ScalarType::integer;
  if (is_float_text(s)) return ScalarType::floating;
  return ScalarType::string;
}

template <typename Number>
std::optional<Number> parse_number(std::string_view s, int base = 10) {
  Number value{};
  auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), value, base);
  if (error != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

std::optional<std::int64_t> parse_integer(std::string_view s) {
  if (is_octal_text(s)) return parse_number<std::int64_t>(s.substr(2), 8);
  if (is_hex_text(s)) return parse_number<std::int64_t>(s.substr(2), 16);
  if (!is_decimal_text(s)) return std::nullopt;
  if (s.front() == '+') s.remove_prefix(1);  // from_chars takes '-' only
  return parse_number<std::int64_t>(s);
}

std::optional<double> parse_floating(std::string_view s) {
  if (is_nan_text(s)) return std::numeric_limits<double>::quiet_NaN();
  if (is_infinity_text(s))
    return s.front() == '-' ? -std::numeric_limits<double>::infinity()
                            : std::numeric_limits<double>::infinity();
  if (!is_float_number_text(s)) return std::nullopt;
  if (s.front() == '+') s.remove_prefix(1);
  double value = 0;
  auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), value, std::chars_format::general);
  if (error != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

// "tag:yaml.org,2002:int" reads better as the "!!int" that was written.
std::string short_tag(std::string_view tag) {
  if (tag.starts_with(kCoreTagPrefix)) return "!!" + std::string(tag.substr(kCoreTagPrefix.size()));
  return std::string(tag);
}

std::string_view as_view(const yaml_char_t* s) {
  return s ? std::string_view(reinterpret_cast<const char*>(s)) : std::string_view{};
}

std::size_t count_nodes(const Node& node) {
  std::size_t count = 1;
  for (const Node& key : node.keys()) count += count_nodes(key);
  for (const Node& child : node.values()) count += count_nodes(child);
  return count;
}

// libyaml's problem texts, reworded for people who write firewall rules, with what to do about them.
struct ProblemWording {
  std::string_view problem;
  std::string_view message;
  std::string_view hint;
};
constexpr ProblemWording kProblemWordings[] = {
    {"mapping values are not allowed in this context", "unexpected ':' (a mapping value is not allowed here)",
     "check the indentation of this line, or quote the text if the ': ' belongs to it"},
    {"could not find expected ':'", "expected ':' after a mapping key",
     "write 'key: value' with a space after the colon; quote text that spans several lines"},
    {"did not find expected key", "expected a mapping key at this indentation",
     "keys of one mapping must start in the same column; check the indentation"},
    {"did not find expected '-' indicator", "expected a '- ' list item at this indentation",
     "items of one list must start in the same column; check the indentation"},
    {"block sequence entries are not allowed in this context", "a '- ' list item is not allowed here",
     "start the list on a new line below its key, or check the indentation"},
    {"did not find expected node content", "expected a value here", "write a value, or quote the text"},
    {"found unexpected end of stream", "the input ends too early",
     "close the open quote, '[' list or '{' mapping"},
    {"did not find expected ',' or ']'", "expected ',' or ']' in a '[...]' list",
     "separate list items with ',' and close the list with ']'"},
    {"did not find expected ',' or '}'", "expected ',' or '}' in a '{...}' mapping",
     "separate entries with ',' and close the mapping with '}'"},
    {"found unknown escape character", "unknown escape sequence in a double-quoted string",
     "write a backslash as '\\\\', or use single quotes, which have no escapes"},
    {"found a tab character that violates indentation", "tab character in the indentation",
     "indent with spaces; YAML does not allow tabs there"},
    {"found a tab character where an indentation space is expected", "tab character in the indentation",
     "indent with spaces; YAML does not allow tabs there"},
    {"did not find expected <document start>", "expected '---' before the next document",
     "start every document after a '...' with '---'"},
    {"found undefined tag handle", "unknown tag handle", "remove the tag; plain values need no tag"},
    {"did not find expected alphabetic or numeric character", "an anchor or alias needs a name",
     "write '&name' or '*name', or quote the value if '&' or '*' belongs to the text"},
    {"found unexpected document indicator", "'---' or '...' inside a quoted string",
     "close the quote before the document marker"},
};

// The character at `offset` for a message: quoted, or in hex when it is a control character.
std::string char_description(std::string_view text, std::size_t offset) {
  if (offset >= text.size()) return "the end of the input";
  unsigned char c = static_cast<unsigned char>(text[offset]);
  if (c < 0x20 || c == 0x7f) {
    char buffer[8];
    std::snprintf(buffer, sizeof buffer, "0x%02x", c);
    return buffer;
  }
  std::size_t end = offset + 1;  // a whole UTF-8 sequence, not its first byte
  while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
  return "'" + std::string(text.substr(offset, end - offset)) + "'";
}

// Why libyaml stopped. Its texts are string literals, so this stays valid after the parser is gone.
struct SyntaxProblem {
  yaml_error_type_t error = YAML_NO_ERROR;
  const char* problem = nullptr;
  const char* context = nullptr;
  yaml_mark_t problem_mark{};
  yaml_mark_t context_mark{};
  std::size_t problem_offset = 0;
};

// A libyaml parser reading one text.
class Parser {
 public:
  explicit Parser(std::string_view text) {
    if (!yaml_parser_initialize(&parser_)) throw std::bad_alloc();
    yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  }
  ~Parser() { yaml_parser_delete(&parser_); }
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // Fills `event` (to be freed with yaml_event_delete); false on a syntax error, see problem().
  bool next(yaml_event_t& event) { return yaml_parser_parse(&parser_, &event) != 0; }
  SyntaxProblem problem() const {
    return {parser_.error,        parser_.problem,      parser_.context,
            parser_.problem_mark, parser_.context_mark, parser_.problem_offset};
  }

 private:
  yaml_parser_t parser_;
};

// Runs a Parser on a second thread that hands its events over in batches, so that building the tree
// (its allocations and their first-touch page faults) overlaps libyaml's scanning. The events are
// freed on the parser thread, which allocated them, once the consumer has handed their batch back.
class EventPipeline {
 public:
  struct Batch {
    std::array<yaml_event_t, 1024> events;
    std::size_t count = 0;
    bool last = false;
    std::optional<SyntaxProblem> problem;  // on the last batch when libyaml failed
  };

  explicit EventPipeline(Parser& parser) : parser_(parser) {
    thread_ = std::thread(&EventPipeline::produce, this);
  }
  ~EventPipeline() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    slot_released_.notify_one();
    thread_.join();
    for (std::size_t slot = 0; slot < kSlots; ++slot) free_events(slots_[slot]);
  }
  EventPipeline(const EventPipeline&) = delete;
  EventPipeline& operator=(const EventPipeline&) = delete;

  // The next batch, in order; hands the previous one back. Do not call again after a `last` batch.
  const Batch& next() {
    std::unique_lock lock(mutex_);
    if (holding_) {
      ++released_;
      slot_released_.notify_one();
    }
    batch_filled_.wait(lock, [&] { return released_ < produced_; });
    holding_ = true;
    return slots_[released_ % kSlots];
  }

 private:
  static constexpr std::size_t kSlots = 4;

  void produce() {
    for (bool last = false; !last;) {
      std::size_t slot = 0;
      {
        std::unique_lock lock(mutex_);
        slot_released_.wait(lock, [&] { return stop_ || produced_ - released_ < kSlots; });
        if (stop_) return;
        slot = produced_ % kSlots;
      }
      Batch& batch = slots_[slot];
      free_events(batch);  // from the slot's previous round
      fill(batch);
      last = batch.last;
      {
        std::lock_guard lock(mutex_);
        ++produced_;
      }
      batch_filled_.notify_one();
    }
  }

  void fill(Batch& batch) {
    batch.last = false;
    batch.problem.reset();
    while (batch.count < batch.events.size()) {
      yaml_event_t& event = batch.events[batch.count];
      if (!parser_.next(event)) {
        batch.problem = parser_.problem();
        batch.last = true;
        return;
      }
      ++batch.count;
      if (event.type == YAML_STREAM_END_EVENT) {
        batch.last = true;
        return;
      }
    }
  }

  static void free_events(Batch& batch) {
    for (std::size_t i = 0; i < batch.count; ++i) yaml_event_delete(&batch.events[i]);
    batch.count = 0;
  }

  Parser& parser_;
  // Not zero-filled: pages of the event arrays are touched only as far as they are used.
  std::unique_ptr<Batch[]> slots_ = std::make_unique_for_overwrite<Batch[]>(kSlots);
  std::mutex mutex_;
  std::condition_variable batch_filled_;
  std::condition_variable slot_released_;
  std::size_t produced_ = 0;  // batches filled so far
  std::size_t released_ = 0;  // batches the consumer is done with
  bool holding_ = false;      // whether the consumer holds slots_[released_ % kSlots]
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

// Builds Node trees from either scanner's events; a friend of Node so it can fill the private fields.
// Without diagnostics (the fast scanner's run), the first error stops the build, unreported: libyaml's
// run then reports it.
class Builder final : private fast::Events {
 public:
  Builder(std::string_view text, std::uint32_t file, Diagnostics* diag)
      : text_(text), file_(file), diag_(diag) {}
  // libyaml's events, with every error reported.
  std::optional<std::vector<Node>> run();
  // The fast scanner's events; nullopt when the text is outside its subset or has an error.
  std::optional<std::vector<Node>> run_fast();

 private:
  // Both return false when the parse stopped early (the errors are reported).
  bool run_sequential(Parser& parser);
  bool run_pipelined(EventPipeline& pipeline);
  struct Frame {
    Node node;  // kind and loc; children wait on the pending stacks until the collection ends
    std::size_t first_value = 0;
    std::size_t first_key = 0;
    std::string anchor;
    // Key text -> line of its first occurrence, built only for large mappings.
    std::unique_ptr<std::unordered_map<std::string, std::uint32_t>> key_lines;
  };
  struct Anchored {
    Node node;
    std::size_t node_count = 0;
  };

  // fast::Events: each stops the scan at the first error.
  bool document_start() override {
    anchors_.clear();  // anchors do not carry across documents
    return true;
  }
  bool document_end() override {
    documents_.push_back(std::move(pending_values_.back()));
    pending_values_.clear();
    return true;
  }
  bool scalar(fast::Mark at, std::string_view text, bool plain) override {
    add_scalar(loc_of(at), text, !plain, {}, {});
    return errors_ == 0;
  }
  bool open(Kind kind, fast::Mark at) override {
    return open_collection(kind, loc_of(at), {}, {}) && errors_ == 0;
  }
  bool close() override {
    close_collection();
    return errors_ == 0;
  }

  // Handles one libyaml event; false stops the parse (a fatal error was reported).
  bool handle(const yaml_event_t& event);
  bool handle_alias(const yaml_event_t& event);
  void add_scalar(SourceLoc at, std::string_view text, bool quoted, std::string_view tag,
                  std::string_view anchor);
  bool open_collection(Kind kind, SourceLoc at, std::string_view tag, std::string_view anchor);
  void close_collection();
  // Whether the next finished node is a key of the innermost open collection, when `open` are open.
  bool next_is_key(std::size_t open) const;
  // Places a finished node into the open collection (or as the document root); `at` is its event's mark.
  void add(Node&& node, SourceLoc at);
  // Checks the key just placed last on pending_keys_.
  void check_key(SourceLoc at);
  void remember_anchor(std::string_view anchor, const Node& node);
  bool apply_scalar_tag(std::string_view tag, Node& node);
  void check_collection_tag(std::string_view tag, Kind kind, SourceLoc at);
  void report_syntax_error(const SyntaxProblem& syntax);

  SourceLoc loc_of(const yaml_mark_t& mark) const {
    return {file_, static_cast<std::uint32_t>(mark.line + 1), static_cast<std::uint32_t>(mark.column + 1)};
  }
  SourceLoc loc_of(fast::Mark mark) const { return {file_, mark.line + 1, mark.column + 1}; }
  SourceLoc loc_of_offset(std::size_t offset) const;
  void error(SourceLoc at, std::string message, std::string hint) {
    ++errors_;
    if (diag_) diag_->error(at, std::move(message), std::move(hint));
  }

  std::string_view text_;
  std::uint32_t file_;
  Diagnostics* diag_;
  std::size_t errors_ = 0;
  std::vector<Frame> frames_;
  // Children of every open collection, innermost last: mapping keys, and sequence items or mapping values.
  std::vector<Node> pending_keys_;
  std::vector<Node> pending_values_;
  std::vector<Node> documents_;
  std::unordered_map<std::string, Anchored> anchors_;
  std::size_t alias_nodes_ = 0;
};

std::optional<std::vector<Node>> Builder::run() {
  Parser parser(text_);
  std::optional<EventPipeline> pipeline;
  if (text_.size() >= kPipelineMinBytes) {
    try {
      pipeline.emplace(parser);
    } catch (const std::system_error&) {
      // no thread to be had: parse on this one
    }
  }
  bool finished = pipeline ? run_pipelined(*pipeline) : run_sequential(parser);
  if (!finished || errors_ > 0) return std::nullopt;
  return std::move(documents_);
}

std::optional<std::vector<Node>> Builder::run_fast() {
  if (!fast::scan(text_, *this) || errors_ > 0) return std::nullopt;
  return std::move(documents_);
}

bool Builder::run_sequential(Parser& parser) {
  for (;;) {
    yaml_event_t event;
    if (!parser.next(event)) {
      report_syntax_error(parser.problem());
      return false;
    }
    std::unique_ptr<yaml_event_t, decltype(&yaml_event_delete)> event_guard(&event, &yaml_event_delete);
    if (!handle(event)) return false;
    if (event.type == YAML_STREAM_END_EVENT) return true;
  }
}

bool Builder::run_pipelined(EventPipeline& pipeline) {
  for (;;) {
    const EventPipeline::Batch& batch = pipeline.next();
    for (std::size_t i = 0; i < batch.count; ++i)
      if (!handle(batch.events[i])) return false;
    if (batch.problem) {
      report_syntax_error(*batch.problem);
      return false;
    }
    if (batch.last) return true;
  }
}

bool Builder::handle(const yaml_event_t& event) {
  switch (event.type) {
    case YAML_DOCUMENT_START_EVENT:
      return document_start();
    case YAML_DOCUMENT_END_EVENT:
      return document_end();
    case YAML_SCALAR_EVENT: {
      const auto& scalar = event.data.scalar;
      add_scalar(loc_of(event.start_mark), {reinterpret_cast<const char*>(scalar.value), scalar.length},
                 scalar.style != YAML_PLAIN_SCALAR_STYLE, as_view(scalar.tag), as_view(scalar.anchor));
      return true;
    }
    case YAML_ALIAS_EVENT:
      return handle_alias(event);
    case YAML_SEQUENCE_START_EVENT:
      return open_collection(Kind::sequence, loc_of(event.start_mark), as_view(event.data.sequence_start.tag),
                             as_view(event.data.sequence_start.anchor));
    case YAML_MAPPING_START_EVENT:
      return open_collection(Kind::mapping, loc_of(event.start_mark), as_view(event.data.mapping_start.tag),
                             as_view(event.data.mapping_start.anchor));
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
      close_collection();
      return true;
    default:  // stream start/end and the empty event carry nothing for the tree
      return true;
  }
}

void Builder::add_scalar(SourceLoc at, std::string_view text, bool quoted, std::string_view tag,
                         std::string_view anchor) {
  bool is_key = next_is_key(frames_.size());
  Node& node = (is_key ? pending_keys_ : pending_values_).emplace_back();  // in place: most nodes are scalars
  node.loc_ = at;
  node.text_.assign(text);
  node.quoted_ = quoted;
  if (!tag.empty() && !apply_scalar_tag(tag, node))
    node.quoted_ = true;  // reported; keep the text as a string
  if (!node.quoted_ && is_null_text(node.text_)) {
    node.text_.clear();
  } else {
    node.kind_ = Kind::scalar;
  }
  if (!anchor.empty()) remember_anchor(anchor, node);
  if (is_key) check_key(at);
}

// Returns false when the tag is unsupported or does not fit the text (an error was reported).
bool Builder::apply_scalar_tag(std::string_view tag, Node& node) {
  if (tag == "!" || tag == "tag:yaml.org,2002:str") {
    node.quoted_ = true;
    return true;
  }
  ScalarType wanted;
  if (tag == "tag:yaml.org,2002:int") {
    wanted = ScalarType::integer;
  } else if (tag == "tag:yaml.org,2002:float") {
    wanted = ScalarType::floating;
  } else if (tag == "tag:yaml.org,2002:bool") {
    wanted = ScalarType::boolean;
  } else if (tag == "tag:yaml.org,2002:null") {
    wanted = ScalarType::null;
  } else {
    error(node.loc_, "unsupported tag '" + short_tag(tag) + "'",
          "remove the tag; plain values need none, and quotes make a string");
    return false;
  }
  ScalarType actual = resolve_plain(node.text_);
  bool fits = actual == wanted || (wanted == ScalarType::floating && actual == ScalarType::integer);
  if (!fits) {
    error(node.loc_, quote(node.text_) + " is not a valid " + short_tag(tag),
          "fix the value or remove the tag '" + short_tag(tag) + "'");
    return false;
  }
  node.quoted_ = false;  // the tag asks for exactly what plain resolution gives
  return true;
}

bool Builder::handle_alias(const yaml_event_t& event) {
  SourceLoc at = loc_of(event.start_mark);
  std::string_view name = as_view(event.data.alias.anchor);
  auto found = anchors_.find(std::string(name));
  if (found == anchors_.end()) {
    bool inside_itself =
        std::any_of(frames_.begin(), frames_.end(), [&](const Frame& frame) { return frame.anchor == name; });
    if (inside_itself) {
      error(at, "alias '*" + std::string(name) + "' refers to a node that contains it",
            "recursive structures are not supported; copy the values instead");
    } else {
      error(at, "undefined alias '*" + std::string(name) + "'",
            "define the anchor '&" + std::string(name) +
                "' earlier in the same document; anchors do not carry across '---'");
    }
    Node placeholder;  // keeps keys and values paired so later errors are still found
    placeholder.loc_ = at;
    add(std::move(placeholder), at);
    return true;
  }
  alias_nodes_ += found->second.node_count;
  if (alias_nodes_ > kMaxAliasNodes) {
    error(at, "aliases expand to more than " + std::to_string(kMaxAliasNodes) + " nodes",
          "use fewer nested aliases; each alias is a full copy of its anchor");
    return false;
  }
  add(Node(found->second.node), at);
  return true;
}

bool Builder::open_collection(Kind kind, SourceLoc at, std::string_view tag, std::string_view anchor) {
  if (frames_.size() >= kMaxDepth) {
    error(at, "nesting deeper than " + std::to_string(kMaxDepth) + " levels", "flatten the structure");
    return false;
  }
  if (!tag.empty()) check_collection_tag(tag, kind, at);
  Frame& frame = frames_.emplace_back();
  frame.node.become_collection(kind);
  frame.node.loc_ = at;
  frame.first_value = pending_values_.size();
  frame.first_key = pending_keys_.size();
  frame.anchor = anchor;
  return true;
}

void Builder::check_collection_tag(std::string_view tag, Kind kind, SourceLoc at) {
  std::string_view expected = kind == Kind::mapping ? "tag:yaml.org,2002:map" : "tag:yaml.org,2002:seq";
  if (tag == "!" || tag == expected) return;
  error(at, "unsupported tag '" + short_tag(tag) + "' on " + (kind == Kind::mapping ? "a mapping" : "a list"),
        "remove the tag; mappings and lists need none");
}

void Builder::close_collection() {
  Frame& frame = frames_.back();
  Node& node = frame.node;
  auto take = [](std::vector<Node>& pending, std::size_t first, std::vector<Node>& into) {
    auto begin = pending.begin() + static_cast<std::ptrdiff_t>(first);
    into.insert(into.end(), std::make_move_iterator(begin),
                std::make_move_iterator(pending.end()));  // one exact allocation
    pending.erase(begin, pending.end());
  };
  if (node.kind_ == Kind::mapping) {
    node.children_.reserve((pending_keys_.size() - frame.first_key) +
                           (pending_values_.size() - frame.first_value));
    take(pending_keys_, frame.first_key, node.children_);
  }
  take(pending_values_, frame.first_value, node.children_);
  if (!frame.anchor.empty()) remember_anchor(frame.anchor, node);
  SourceLoc at = node.loc_;
  bool is_key = next_is_key(frames_.size() - 1);
  (is_key ? pending_keys_ : pending_values_).push_back(std::move(node));
  frames_.pop_back();
  if (is_key) check_key(at);
}

void Builder::remember_anchor(std::string_view anchor, const Node& node) {
  Anchored& anchored = anchors_[std::string(anchor)];
  anchored.node = node;
  anchored.node_count = count_nodes(node);
}

bool Builder::next_is_key(std::size_t open) const {
  if (open == 0) return false;
  const Frame& frame = frames_[open - 1];
  return frame.node.kind_ == Kind::mapping &&
         pending_keys_.size() - frame.first_key == pending_values_.size() - frame.first_value;
}

void Builder::add(Node&& node, SourceLoc at) {
  bool is_key = next_is_key(frames_.size());
  (is_key ? pending_keys_ : pending_values_).push_back(std::move(node));
  if (is_key) check_key(at);
}

void Builder::check_key(SourceLoc at) {
  Frame& frame = frames_.back();
  const Node& key = pending_keys_.back();
  if (key.is_mapping() || key.is_sequence()) {
    error(at, std::string(key.is_mapping() ? "a mapping" : "a list") + " as a mapping key is not supported",
          "use a plain string as the key");
    return;
  }
  if (key.is_scalar() && !key.quoted_ && key.text_ == "<<") {
    error(at, "merge keys ('<<') are not supported", "write the keys out, or quote '<<' if it is a real key");
    return;
  }
  std::size_t first = frame.first_key;
  std::size_t end = pending_keys_.size() - 1;  // the earlier keys of this mapping are [first, end)
  auto report_duplicate = [&](std::uint32_t first_line) {
    error(at, "duplicate key '" + key.text() + "' (first at line " + std::to_string(first_line) + ")",
          "remove one of them or merge their values; a mapping cannot repeat a key");
  };
  if (!frame.key_lines && end - first < kLinearKeyScanLimit) {
    for (std::size_t i = first; i < end; ++i) {
      const Node& earlier = pending_keys_[i];
      if (!earlier.is_sequence() && !earlier.is_mapping() && earlier.text_ == key.text_) {
        report_duplicate(earlier.loc_.line);
        return;
      }
    }
    return;
  }
  if (!frame.key_lines) {
    frame.key_lines = std::make_unique<std::unordered_map<std::string, std::uint32_t>>();
    for (std::size_t i = first; i < end; ++i) {
      const Node& earlier = pending_keys_[i];
      if (!earlier.is_sequence() && !earlier.is_mapping())
        frame.key_lines->emplace(earlier.text_, earlier.loc_.line);
    }
  }
  auto [it, inserted] = frame.key_lines->emplace(key.text_, at.line);
  if (!inserted) report_duplicate(it->second);
}

SourceLoc Builder::loc_of_offset(std::size_t offset) const {
  offset = std::min(offset, text_.size());
  SourceLoc loc{file_, 1, 1};
  for (std::size_t i = 0; i < offset; ++i) {
    if (text_[i] == '\n') {
      ++loc.line;
      loc.col = 1;
    } else if ((static_cast<unsigned char>(text_[i]) & 0xC0) != 0x80) {
      ++loc.col;  // columns count characters, as libyaml's marks do
    }
  }
  return loc;
}

void Builder::report_syntax_error(const SyntaxProblem& syntax) {
  std::string_view problem = syntax.problem ? syntax.problem : "unknown problem";
  if (syntax.error == YAML_MEMORY_ERROR) throw std::bad_alloc();
  if (syntax.error == YAML_READER_ERROR) {
    error(loc_of_offset(syntax.problem_offset), "cannot read the input: " + std::string(problem),
          "save the file as UTF-8 text; control characters other than tab and newline are not allowed");
    return;
  }
  SourceLoc at = loc_of(syntax.problem_mark);
  std::string message = "YAML syntax error: " + std::string(problem);
  std::string hint = "check the YAML syntax near this position";
  for (const auto& wording : kProblemWordings) {
    if (problem == wording.problem) {
      message = wording.message;
      hint = wording.hint;
      break;
    }
  }
  if (problem == "found character that cannot start any token") {
    std::size_t offset = syntax.problem_mark.index;
    if (offset < text_.size() && text_[offset] == '\t') {
      message = "tab character where YAML expects a value or indentation";
      hint = "indent with spaces; YAML does not allow tabs there";
    } else {
      message = char_description(text_, offset) + " cannot start a plain value";
      bool reserved = offset < text_.size() && (text_[offset] == '@' || text_[offset] == '`');
      hint = reserved ? "quote the value; '@' and '`' are reserved in YAML" : "quote the value";
    }
  }
  bool at_end = syntax.problem_mark.index >= text_.size();
  if (at_end && problem != "found unexpected end of stream") {
    message += " at the end of the input";
    hint = "close the open quote, '[' list or '{' mapping";
  }
  // "while scanning for the next token" says nothing that the position does not.
  if (syntax.context && std::string_view(syntax.context) != "while scanning for the next token") {
    message += " (" + std::string(syntax.context) + " that started at line " +
               std::to_string(syntax.context_mark.line + 1) + ", column " +
               std::to_string(syntax.context_mark.column + 1) + ")";
  }
  error(at, std::move(message), std::move(hint));
}

const std::string Node::kNoText;

Node::Node(const Node& other) {
  take_value(other);
}

Node::Node(Node&& other) noexcept {
  take_value(std::move(other));
}

Node& Node::operator=(const Node& other) {
  return *this = Node(other);
}

// Through a temporary: `other` may be a part of this node's own tree.
Node& Node::operator=(Node&& other) noexcept {
  Node taken(std::move(other));
  destroy_value();
  take_value(std::move(taken));
  return *this;
}

std::string Node::describe() const {
  switch (kind_) {
    case Kind::null:
      return "null";
    case Kind::sequence:
      return "a list";
    case Kind::mapping:
      return "a mapping";
    case Kind::scalar:
      break;
  }
  switch (scalar_type()) {
    case ScalarType::boolean:
      return "a boolean";
    case ScalarType::integer:
      return "an integer";
    case ScalarType::floating:
      return "a number";
    case ScalarType::null:
      return "null";
    case ScalarType::string:
      break;
  }
  return "a string";
}

// Collections have no scalar value; they answer null so that a string check never accepts them.
ScalarType Node::scalar_type() const {
  if (kind_ != Kind::scalar) return ScalarType::null;
  if (quoted_) return ScalarType::string;
  return resolve_plain(text_);
}

std::optional<bool> Node::as_bool() const {
  if (kind_ != Kind::scalar || quoted_) return std::nullopt;
  if (is_true_text(text_)) return true;
  if (is_false_text(text_)) return false;
  return std::nullopt;
}

std::optional<std::int64_t> Node::as_int() const {
  if (kind_ != Kind::scalar || quoted_) return std::nullopt;
  return parse_integer(text_);
}

std::optional<double> Node::as_double() const {
  if (kind_ != Kind::scalar || quoted_) return std::nullopt;
  if (auto integer = parse_integer(text_)) return static_cast<double>(*integer);
  return parse_floating(text_);  // also takes decimal integers too large for int64
}

const Node* Node::find(std::string_view key) const {
  std::size_t pairs = kind_ == Kind::mapping ? size() : 0;
  for (std::size_t i = 0; i < pairs; ++i)
    if (children_[i].kind_ == Kind::scalar && children_[i].text_ == key) return &children_[pairs + i];
  return nullptr;
}

std::optional<std::vector<Node>> parse(std::string_view text, std::uint32_t file, Diagnostics& diag) {
  if (auto documents = detail::parse_fast(text, file)) return documents;
  return detail::parse_libyaml(text, file, diag);
}

namespace detail {

std::optional<std::vector<Node>> parse_fast(std::string_view text, std::uint32_t file) {
  return Builder(text, file, nullptr).run_fast();
}

std::optional<std::vector<Node>> parse_libyaml(std::string_view text, std::uint32_t file, Diagnostics& diag) {
  return Builder(text, file, &diag).run();
}

std::optional<std::string> first_difference(const Node& a, const Node& b) {
  auto where = [&] {
    return " at " + std::to_string(a.loc().line) + ":" + std::to_string(a.loc().col) + " / " +
           std::to_string(b.loc().line) + ":" + std::to_string(b.loc().col);
  };
  if (a.kind() != b.kind()) return "kinds differ (" + a.describe() + ", " + b.describe() + ")" + where();
  if (!(a.loc() == b.loc())) return "locations differ" + where();
  if (a.text() != b.text() || a.quoted() != b.quoted())
    return "scalars differ (" + quote(a.text()) + ", " + quote(b.text()) + ")" + where();
  if (a.keys().size() != b.keys().size() || a.values().size() != b.values().size())
    return "sizes differ" + where();
  for (std::size_t i = 0; i < a.keys().size(); ++i)
    if (auto difference = first_difference(a.keys()[i], b.keys()[i])) return difference;
  for (std::size_t i = 0; i < a.values().size(); ++i)
    if (auto difference = first_difference(a.values()[i], b.values()[i])) return difference;
  return std::nullopt;
}

}  // namespace detail

std::optional<std::vector<Node>> parse_file(const std::string& path, Diagnostics& diag) {
  const std::uint32_t file = diag.add_file(path);
  auto text = read_source_file(path, file, diag);
  if (!text) return std::nullopt;
  return parse(*text, file, diag);
}

std::string quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\0':
        out += "\\0";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char escape[8];
          std::snprintf(escape, sizeof escape, "\\x%02x", static_cast<unsigned char>(c));
          out += escape;
        } else {
          out += c;  // UTF-8 passes through unchanged
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace fwe::yaml
