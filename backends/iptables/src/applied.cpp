// applied.cpp - see applied.hpp. The sets' record is text: a header line, then per set a line
// "NAME FAMILY TYPE DIGEST COUNT" and COUNT lines "MEMBER<tab>COMMENT" (members and stamps hold no tab
// or line break).
#include "applied.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "fwengine/state.hpp"

namespace fwe::iptables {
namespace {

constexpr std::string_view kHeader = "fwengine iptables sets 1";
constexpr const char* kFileName = "/sets";
constexpr const char* kChangingName = "/sets.changing";
constexpr std::string_view kTablesHeader = "fwengine iptables tables 1";
constexpr const char* kTablesName = "/tables";

// The next line of text from `at` (without its '\n'); false at the end.
bool next_line(std::string_view text, std::size_t& at, std::string_view& line) {
  if (at >= text.size()) return false;
  const auto end = text.find('\n', at);
  line = text.substr(at, (end == std::string_view::npos ? text.size() : end) - at);
  at = end == std::string_view::npos ? text.size() : end + 1;
  return true;
}

// Reads one set's header and members; false when the text is cut short or malformed.
bool read_set(std::string_view text, std::size_t& at, std::string& digest, SetDef& set) {
  std::string_view line;
  if (!next_line(text, at, line)) return false;
  std::istringstream fields{std::string(line)};
  std::string family;
  std::size_t count = 0;
  if (!(fields >> set.name >> family >> set.type >> digest >> count) || (family != "4" && family != "6"))
    return false;
  set.family = family == "4" ? IpFamily::v4 : IpFamily::v6;
  // A member's line takes at least two characters: a count the text cannot hold is not reserved.
  const std::size_t room = std::min(count, (text.size() - at) / 2);
  set.members.reserve(room);
  set.comments.reserve(room);
  for (std::size_t i = 0; i < count; ++i) {
    if (!next_line(text, at, line)) return false;
    const auto tab = line.find('\t');
    if (tab == std::string_view::npos || std::max(tab, line.size() - tab - 1) > PackedStrings::kBlock)
      return false;
    set.members.push_back(line.substr(0, tab));
    set.comments.push_back(line.substr(tab + 1));
  }
  return true;
}

}  // namespace

std::optional<AppliedSets> AppliedSets::load(const std::string& dir) {
  const auto file = state::read_whole_file(dir + kFileName);
  if (!file) return std::nullopt;
  const std::string& text = *file;
  std::size_t at = 0;
  std::string_view line;
  if (!next_line(text, at, line) || line != kHeader) return std::nullopt;
  AppliedSets record;
  while (at < text.size()) {
    Entry entry;
    if (!read_set(text, at, entry.digest, entry.set)) break;  // what was read before stays usable
    // (A set without comments has empty ones here, which give the same digest as none.)
    if (members_digest(entry.set.members, entry.set.comments) != entry.digest) continue;
    std::string name = entry.set.name;
    record.sets_.emplace(std::move(name), std::move(entry));
  }
  return record;
}

void AppliedSets::save(const std::string& dir, const std::vector<SetDef>& sets,
                       const std::vector<std::string>& digests) {
  std::string out(kHeader);
  out += '\n';
  for (std::size_t s = 0; s < sets.size(); ++s) {
    const SetDef& set = sets[s];
    out += set.name + (set.family == IpFamily::v4 ? " 4 " : " 6 ") + set.type + ' ' + digests[s] + ' ' +
           std::to_string(set.members.size()) + '\n';
    for (std::size_t i = 0; i < set.members.size(); ++i) {
      out += set.members[i];
      out += '\t';
      if (i < set.comments.size()) out += set.comments[i];
      out += '\n';
    }
  }
  state::replace_record(dir + kFileName, out);
}

// The record is its header line, the fingerprint's line, a line with the two texts' sizes, then the
// texts (IPv4's, IPv6's).
std::optional<HeldTables> HeldTables::load(const std::string& dir) {
  const auto file = state::read_whole_file(dir + kTablesName);
  if (!file) return std::nullopt;
  std::size_t at = 0;
  std::string_view header, fingerprint, sizes;
  if (!next_line(*file, at, header) || header != kTablesHeader || !next_line(*file, at, fingerprint) ||
      fingerprint.empty() || !next_line(*file, at, sizes))
    return std::nullopt;
  // Two decimal sizes, a space between, that add up to the rest of the file.
  std::size_t size[2] = {};
  const char* end = sizes.data() + sizes.size();
  auto [after_first, first_error] = std::from_chars(sizes.data(), end, size[0]);
  if (first_error != std::errc{} || after_first == end || *after_first != ' ') return std::nullopt;
  auto [after_second, second_error] = std::from_chars(after_first + 1, end, size[1]);
  const std::size_t rest = file->size() - at;
  if (second_error != std::errc{} || after_second != end || size[0] > rest || size[1] != rest - size[0])
    return std::nullopt;
  HeldTables held{std::string(fingerprint), {file->substr(at, size[0]), file->substr(at + size[0])}};
  return held;
}

void HeldTables::save(const std::string& dir) const {
  std::string out(kTablesHeader);
  out += '\n' + fingerprint + '\n' + std::to_string(text[0].size()) + ' ' + std::to_string(text[1].size()) +
         '\n' + text[0] + text[1];
  state::replace_record(dir + kTablesName, out);
}

void HeldTables::forget(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove(dir + kTablesName, ec);
}

bool mark_changing(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::ofstream file(dir + kChangingName, std::ios::binary | std::ios::trunc);
  return static_cast<bool>(file.flush());
}

bool changing(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::exists(dir + kChangingName, ec);
}

void unmark_changing(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove(dir + kChangingName, ec);
}

const SetDef* AppliedSets::find(const std::string& name, std::string_view digest) const {
  const auto it = sets_.find(name);
  return it != sets_.end() && it->second.digest == digest ? &it->second.set : nullptr;
}

std::optional<MemberDelta> member_delta(const SetDef& was, const SetDef& now) {
  auto comment = [](const SetDef& set, std::size_t i) {
    return i < set.comments.size() ? set.comments[i] : std::string_view{};
  };
  auto same = [&](std::size_t i, std::size_t j) {
    return was.members[i] == now.members[j] && comment(was, i) == comment(now, j);
  };
  // Both are in the order render gives, so a few changed members sit between a long common head and
  // tail: only the members between are looked up.
  const std::size_t shorter = std::min(was.members.size(), now.members.size());
  std::size_t head = 0, tail = 0;
  while (head < shorter && same(head, head)) ++head;
  while (tail < shorter - head && same(was.members.size() - 1 - tail, now.members.size() - 1 - tail)) ++tail;
  const std::size_t was_end = was.members.size() - tail, now_end = now.members.size() - tail;

  auto empty_like = [](const SetDef& set) { return SetDef{set.name, set.family, {}, set.type}; };
  MemberDelta delta{empty_like(now), empty_like(now), empty_like(now), empty_like(now)};
  auto put = [](SetDef& into, std::string_view member, std::string_view comment) {
    into.members.push_back(member);
    into.comments.push_back(comment);
  };
  std::unordered_map<std::string_view, std::string_view> old_comment;
  old_comment.reserve(was_end - head);
  for (std::size_t i = head; i < was_end; ++i) old_comment.emplace(was.members[i], comment(was, i));
  std::unordered_map<std::string_view, bool> kept;  // the members of now that was holds
  kept.reserve(now_end - head);
  for (std::size_t i = head; i < now_end; ++i) {
    const auto old = old_comment.find(now.members[i]);
    kept.emplace(now.members[i], old != old_comment.end());
    if (old == old_comment.end()) {
      put(delta.add, now.members[i], comment(now, i));
      put(delta.withdraw, now.members[i], {});
    } else if (old->second != comment(now, i)) {
      put(delta.add, now.members[i], comment(now, i));
      put(delta.restore, old->first, old->second);
    }
  }
  for (std::size_t i = head; i < was_end; ++i)
    if (!kept.contains(was.members[i])) {
      put(delta.remove, was.members[i], {});
      put(delta.restore, was.members[i], comment(was, i));
    }
  if (delta.add.members.size() + delta.remove.members.size() > now.members.size()) return std::nullopt;
  return delta;
}

}  // namespace fwe::iptables
