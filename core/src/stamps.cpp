// stamps.cpp - stamps with lines relative to their policy's first line, and what turns them back.
#include "fwengine/stamps.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <limits>
#include <optional>

namespace fwe::stamps {
namespace {

constexpr std::size_t kKeySize = 15;      // hex digits: as long as an interface name (nft keys by one)
constexpr std::size_t kMaxPosition = 16;  // ":+D:col", D up to 8 digits, col up to 5
constexpr std::uint64_t kKeyBits = (1ull << 60) - 1;  // 15 hex digits: an interface name's 15 characters

bool continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xc0) == 0x80;
}

bool all_digits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// " +N" (N at least one digit): what a merged run's rule adds to its first rule's stamp.
bool run_suffix(std::string_view s) {
  return s.size() > 2 && s[0] == ' ' && s[1] == '+' && all_digits(s.substr(2));
}

// The policy a stamp's label names: without a run's " +N" and the rule's "#N".
std::string_view policy_of(std::string_view label) {
  if (auto space = label.rfind(' '); space != std::string_view::npos && run_suffix(label.substr(space)))
    label = label.substr(0, space);
  if (auto hash = label.rfind('#'); hash != std::string_view::npos && all_digits(label.substr(hash + 1)))
    label = label.substr(0, hash);
  return label;
}

// What identifies a policy in stamps: a digest of the file and the policy as the stamps write them, so
// that read-back finds it from the stamp alone. Two policies with the same 60 bits would share one first
// line (one in 10^9 for 10^5 policies): only their lines would be off.
std::uint64_t policy_key(std::string_view file, std::string_view label) {
  std::uint64_t h = 1469598103934665603ull;
  auto add = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  };
  add(file);
  add("\n");
  add(policy_of(label));
  return h & kKeyBits;
}

std::string key_text(std::uint64_t key) {
  char text[kKeySize + 1];
  std::snprintf(text, sizeof text, "%015llx", static_cast<unsigned long long>(key));
  return text;
}

// Quotes and backslashes would end or escape a quoted comment (iptables-save escapes apostrophes too, so
// that its text would not be ours); control characters break lines; a space ends the file part.
void sanitize(std::string& text, bool file) {
  for (char& c : text)
    if (c == '"' || c == '\'' || c == '\\' || static_cast<unsigned char>(c) < ' ' || (file && c == ' '))
      c = '_';
}

void cut_utf8(std::string& text, std::size_t size) {
  if (text.size() <= size) return;
  while (size > 0 && continuation(text[size])) --size;
  text.resize(size);
}

// "etcd:" of "etcd:/calico/...": lower-case letters and a colon at the start of a source's name.
std::string scheme_of(std::string_view file) {
  const auto colon = file.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 8) return {};
  const bool letters =
      std::all_of(file.begin(), file.begin() + colon, [](char c) { return c >= 'a' && c <= 'z'; });
  return letters ? std::string(file.substr(0, colon + 1)) : std::string{};
}

// "file:line:col" at the start of a stamp, split: file, the line (with '+' when relative), col.
struct Where {
  std::string_view file, line, col, rest;  // rest: from the space before the label on
};
std::optional<Where> split_where(std::string_view stamp) {
  const auto space = stamp.find(' ');
  const std::string_view where = stamp.substr(0, space);
  const auto second = where.rfind(':');
  if (second == std::string_view::npos || second == 0) return std::nullopt;
  const auto first = where.rfind(':', second - 1);
  if (first == std::string_view::npos) return std::nullopt;
  Where out{where.substr(0, first), where.substr(first + 1, second - first - 1), where.substr(second + 1),
            space == std::string_view::npos ? std::string_view{} : stamp.substr(space)};
  // A label without a line may hold colons too ("zone:public:ssh"): a position is digits.
  const std::string_view line = out.line.starts_with('+') ? out.line.substr(1) : out.line;
  if (line.empty() || !all_digits(line) || out.col.empty() || !all_digits(out.col)) return std::nullopt;
  return out;
}

}  // namespace

Stamper::Stamper(const ir::Ruleset& ruleset, Style style) : ruleset_(ruleset), style_(style) {
  auto note = [this](const ir::Origin& origin) {
    if (origin.loc.line == 0) return;
    const Shared* s = shared(origin);
    Parts p;
    if (!s) p = parts(origin);
    auto [it, fresh] = first_.try_emplace(s ? s->key : policy_key(p.file, p.label));
    if (!fresh) {
      it->second.line = std::min(it->second.line, origin.loc.line);
    } else if (s) {
      it->second = {origin.loc.line, s->file_text, s->label};
    } else {
      it->second = {origin.loc.line, std::move(p.file), std::string(policy_of(p.label))};
    }
  };
  ir::for_each_rule_origin(ruleset, note);
}

const Stamper::Shared* Stamper::shared(const ir::Origin& origin) {
  if (origin.loc.line == 0 || origin.rule < 0) return nullptr;
  if (!shared_ || shared_->file != origin.loc.file || shared_->policy != origin.policy) {
    ir::Origin first_rule = origin;
    first_rule.rule = 0;
    Parts p = parts(first_rule);  // label "policy#0": the policy part as every rule's
    Shared& s = shared_.emplace(Shared{});
    s.file = origin.loc.file;
    s.policy = origin.policy;
    const std::size_t room = style_.max_comment - p.file.size() - kMaxPosition - 1 - style_.run_suffix;
    if (origin.policy.size() + 2 <= room) {  // else cut: room stays 0, and each rule takes the long way
      s.key = policy_key(p.file, p.label);
      s.room = room;
      s.label = p.label.substr(0, p.label.size() - 2);
      s.file_text = std::move(p.file);
    }
  }
  // parts() cuts a label only past room; "#rule" ends the label, so no " +N" does.
  const std::size_t digits = std::to_string(origin.rule).size();
  return shared_->label.size() + 1 + digits <= shared_->room ? &*shared_ : nullptr;
}

Stamper::Parts Stamper::parts(const ir::Origin& origin) const {
  Parts p;
  p.file = file_text(origin);
  p.label = origin.policy;
  if (origin.rule >= 0) p.label += "#" + std::to_string(origin.rule);
  sanitize(p.label, false);
  cut_utf8(p.label, style_.max_comment - p.file.size() - kMaxPosition - 1 - style_.run_suffix);
  // So that a stamp's " +N" is always a run's, which policy_of takes off.
  if (auto space = p.label.rfind(' ');
      space != std::string::npos && run_suffix(std::string_view(p.label).substr(space)))
    p.label[space] = '_';
  // A leading ':' marks a stamp without its file (nft's set elements): no whole stamp starts so.
  if (p.file.empty() && p.label.starts_with(':')) p.label.front() = '_';
  return p;
}

std::string Stamper::file_text(const ir::Origin& origin) const {
  if (origin.loc.line == 0) return {};
  std::string file =
      origin.loc.file < ruleset_.files.size() ? ruleset_.files[origin.loc.file] : std::string("?");
  sanitize(file, true);
  if (file.size() > style_.max_file) {
    const std::string head = scheme_of(file) + "...";
    std::size_t from = file.size() - (style_.max_file - head.size());
    while (from < file.size() && continuation(file[from])) ++from;
    file = head + file.substr(from);
  }
  return file;
}

std::string Stamper::stamp(const ir::Origin& origin) {
  const Shared* s = shared(origin);
  Parts p;
  if (!s) p = parts(origin);
  std::string out = s ? s->file_text : std::move(p.file);
  // Room for this stamp, not for the longest: backends keep one per rule (50,000 rules: 11 MB at 229).
  const std::size_t label =
      s ? s->label.size() + 1 + std::numeric_limits<std::uint32_t>::digits10 + 1 : p.label.size();
  out.reserve(std::min(out.size() + kMaxPosition + 1 + label, style_.max_comment));
  auto append_number = [&out](std::uint32_t n) {
    char digits[10];
    out.append(digits, std::to_chars(digits, digits + sizeof digits, n).ptr);
  };
  if (origin.loc.line > 0) {
    auto it = first_.find(s ? s->key : policy_key(out, p.label));
    if (it != first_.end() && origin.loc.line >= it->second.line) {
      it->second.used = true;
      out += ":+";
      append_number(origin.loc.line - it->second.line);
    } else {  // an origin the ruleset's walk did not meet: its absolute line
      out += ':';
      append_number(origin.loc.line);
    }
    out += ':';
    append_number(origin.loc.col);
  }
  if (s) {
    out += ' ';
    out += s->label;
    out += '#';
    append_number(static_cast<std::uint32_t>(origin.rule));
  } else if (!p.label.empty()) {
    if (!out.empty()) out += ' ';
    out += p.label;
  }
  cut_utf8(out, style_.max_comment - style_.run_suffix);  // a line or column longer than kMaxPosition allows
  return out;
}

std::vector<FirstLine> Stamper::first_lines() const {
  std::vector<std::pair<std::uint64_t, const First*>> used;
  for (const auto& [key, first] : first_)
    if (first.used) used.emplace_back(key, &first);
  std::sort(used.begin(), used.end());  // the same text for the same ruleset
  std::vector<FirstLine> out;
  out.reserve(used.size());
  for (const auto& [key, first] : used) {
    FirstLine line{key_text(key), first->file + ":" + std::to_string(first->line)};
    if (!first->policy.empty()) line.text += " " + first->policy;
    cut_utf8(line.text, style_.max_comment);
    out.push_back(std::move(line));
  }
  return out;
}

void Positions::add(std::string_view key, std::string_view text) {
  const std::string_view where = text.substr(0, text.find(' '));
  const auto colon = where.rfind(':');
  if (colon == std::string_view::npos) return;
  std::uint32_t line = 0;
  const std::string_view digits = where.substr(colon + 1);
  if (std::from_chars(digits.data(), digits.data() + digits.size(), line).ec != std::errc{}) return;
  first_line_[std::string(key)] = line;
}

std::string Positions::absolute(std::string_view stamp) const {
  auto where = split_where(stamp);
  if (!where || !where->line.starts_with('+')) return std::string(stamp);
  std::uint32_t offset = 0;
  const std::string_view digits = where->line.substr(1);
  if (std::from_chars(digits.data(), digits.data() + digits.size(), offset).ec != std::errc{})
    return std::string(stamp);
  // The policy, also where the stamp has a run's " +N" and no label.
  std::string_view label = policy_of(where->rest);
  if (label.starts_with(' ')) label.remove_prefix(1);
  auto it = first_line_.find(key_text(policy_key(where->file, label)));
  if (it == first_line_.end()) return std::string(stamp);
  return std::string(where->file) + ":" + std::to_string(it->second + offset) + ":" +
         std::string(where->col) + std::string(where->rest);
}

std::string_view where_of(std::string_view stamp) {
  const auto where = split_where(stamp);
  if (!where) return {};
  return stamp.substr(0, where->file.size() + where->line.size() + where->col.size() + 2);
}

}  // namespace fwe::stamps
