// model.cpp - text forms of the model and the per-rule stamps.
#include "model.hpp"

#include <netdb.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cstdio>
#include <map>
#include <optional>
#include <stdexcept>
#include <string_view>

namespace fwe::iptables {

namespace {
constexpr std::string_view kCommentOpen = "-m comment --comment \"";
}

std::string_view PackedStrings::operator[](std::size_t i) const {
  const std::size_t end = ends_[i], previous = i == 0 ? 0 : ends_[i - 1];
  if (end == previous) return {};
  const std::size_t block = (end - 1) / kBlock;
  const std::size_t begin = std::max(previous, block * kBlock);
  return std::string_view(blocks_[block].data() + (begin - block * kBlock), end - begin);
}

void PackedStrings::push_back(std::string_view item) {
  if (item.size() > kBlock)
    throw std::length_error("a packed string over " + std::to_string(kBlock) + " bytes");
  if (!item.empty()) {
    if (blocks_.empty() || blocks_.back().size() + item.size() > kBlock) blocks_.emplace_back();
    std::vector<char>& block = blocks_.back();
    // Doubling would give a block that fills up past kBlock twice the room it can use.
    if (block.size() + item.size() > block.capacity())
      block.reserve(std::min(kBlock, std::max(2 * block.capacity(), block.size() + item.size())));
    block.insert(block.end(), item.begin(), item.end());
  }
  ends_.push_back(static_cast<std::uint32_t>(
      blocks_.empty() ? 0 : (blocks_.size() - 1) * kBlock + blocks_.back().size()));
}

const ChainDef* TableDef::find(std::string_view chain) const {
  auto it = std::find_if(chains.begin(), chains.end(), [&](const ChainDef& c) { return c.name == chain; });
  return it == chains.end() ? nullptr : &*it;
}

int slot_of(std::string_view name) {
  if (name.substr(0, kPrefix.size()) == kPrefix) return 0;
  if (name.size() < 5 || name.substr(0, 3) != "fwe" || name[4] != '-') return kNoSlot;
  switch (name[3]) {
    case '0':
      return kHelperSlot;
    case '1':
      return 1;
    case '2':
      return 2;
    default:
      return kNoSlot;
  }
}

std::string in_slot(std::string_view name, int slot) {
  int from = slot_of(name);
  if (from < 0 || from == slot) return std::string(name);
  std::string_view rest = name.substr(from == 0 ? 4 : 5);
  return (slot == 0 ? std::string(kPrefix) : "fwe" + std::to_string(slot) + "-") + std::string(rest);
}

namespace {
// The word of a rule spec that starts at i (a quoted part, with its escapes, is inside the word); i moves
// past it.
std::string_view next_word(std::string_view spec, std::size_t& i) {
  const std::size_t start = i;
  bool quoted = false;
  for (; i < spec.size() && (quoted || spec[i] != ' '); ++i) {
    if (spec[i] == '\\' && quoted && i + 1 < spec.size())
      ++i;
    else if (spec[i] == '"')
      quoted = !quoted;
  }
  return spec.substr(start, i - start);
}
}  // namespace

std::string spec_in_slot(std::string_view spec, int slot) {
  std::string out;
  out.reserve(spec.size() + 8);
  std::string_view previous;
  std::size_t i = 0;
  while (i < spec.size()) {
    if (spec[i] == ' ') {
      out += spec[i++];
      continue;
    }
    std::string_view word = next_word(spec, i);
    bool names_ours = previous == "-j" || previous == "-g" || previous == "--match-set";
    out += names_ours ? in_slot(word, slot) : std::string(word);
    previous = word;
  }
  return out;
}

std::optional<Jump> jump_of(std::string_view spec) {
  std::optional<Jump> out;
  std::string_view previous;
  for (std::size_t i = 0; i < spec.size();) {
    if (spec[i] == ' ') {
      ++i;
      continue;
    }
    std::string_view word = next_word(spec, i);
    if (previous == "-j" || previous == "-g") out = Jump{word, previous == "-g"};
    previous = word;
  }
  return out;
}

std::string hook_spec(std::string_view target) {
  return "-m set --match-set " + in_slot(kGateSet, slot_of(target)) + " src " + std::string(kCommentOpen) +
         "fwe:hook\" -j " + std::string(target);
}

namespace {
// FNV-1a over text, continuing from h (so that pieces hash as their concatenation would).
std::uint64_t fnv1a(std::string_view text, std::uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::string hex16(std::uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(value));
  return buf;
}
}  // namespace

std::string hash16(std::string_view text) {
  return hex16(fnv1a(text));
}

namespace {
// The comment's text and where it sits in the spec.
std::pair<std::size_t, std::size_t> comment_span(std::string_view spec) {
  auto open = spec.find(kCommentOpen);
  if (open == std::string_view::npos) return {std::string_view::npos, 0};
  auto close = spec.find('"', open + kCommentOpen.size());
  if (close == std::string_view::npos) return {std::string_view::npos, 0};
  return {open, close + 1 - open};
}
}  // namespace

std::string_view comment_of(std::string_view spec) {
  auto [at, len] = comment_span(spec);
  if (at == std::string_view::npos) return {};
  return spec.substr(at + kCommentOpen.size(), len - kCommentOpen.size() - 1);
}

std::string stamp_of(std::string_view spec) {
  auto comment = comment_of(spec);
  if (comment.substr(0, 4) != "fwe:" || comment.size() < 20) return {};
  auto hash = comment.substr(4, 16);
  if (!std::all_of(hash.begin(), hash.end(),
                   [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }))
    return {};
  return "fwe:" + std::string(hash);
}

std::string origin_stamp_of(std::string_view spec) {
  auto comment = comment_of(spec);
  auto space = comment.find(' ');
  return space == std::string_view::npos ? std::string{} : std::string(comment.substr(space + 1));
}

std::string content_hash(std::string_view chain, std::string_view spec) {
  std::string text = in_slot(chain, 0);
  text += ' ';
  std::string rest = spec_in_slot(spec, 0);
  auto [at, len] = comment_span(rest);
  if (at != std::string_view::npos) rest.erase(at, len);
  // Quoting aside, as a save may quote what we did not; but a space inside quotes is part of its argument
  // (a log prefix "DROP " is not "DROP"), so it is kept apart from the spaces between arguments.
  bool space = false, quoted = false;
  for (char c : rest) {
    if (c == '\\') continue;
    if (c == '"') {
      quoted = !quoted;
      continue;
    }
    if (c == ' ' && !quoted) {
      space = true;
      continue;
    }
    if (space && text.back() != ' ') text += ' ';
    space = false;
    text += c == ' ' ? '\x1f' : c;
  }
  return hash16(text);
}

std::string restore_text(const std::vector<TableDef>& tables) {
  std::string out;
  for (const auto& table : tables) {
    out += '*' + table.name + '\n';
    for (const auto& chain : table.chains) out += ':' + chain.name + " - [0:0]\n";
    for (const auto& chain : table.chains)
      for (const auto& rule : chain.rules) out += "-A " + chain.name + ' ' + rule + '\n';
    for (const auto& hook : table.hooks) out += "-I " + hook.builtin + " 1 " + hook_spec(hook.target) + '\n';
    out += "COMMIT\n";
  }
  return out;
}

std::string_view family_name(IpFamily f) {
  return f == IpFamily::v4 ? "inet" : "inet6";
}

std::size_t ipset_maxelem(const SetDef& set) {
  return std::max<std::size_t>(65536, 2 * set.members.size());
}

std::string ipset_create_line(const SetDef& set, std::string_view name) {
  const std::size_t maxelem = ipset_maxelem(set);
  const std::uint32_t hashsize = ipset_hashsize(set);
  return "create " + std::string(name) + " " + set.type + " family " + std::string(family_name(set.family)) +
         (hashsize != 0 ? " hashsize " + std::to_string(hashsize) : "") + " maxelem " +
         std::to_string(maxelem) + (set.type == kRunSet ? " counters comment" : "");
}

std::uint32_t ipset_hashsize(const SetDef& set) {
  constexpr std::size_t kDefaultBuckets = 1024, kMembersPerBucket = 2;
  const std::size_t buckets = std::bit_ceil(set.members.size() / kMembersPerBucket);
  return buckets > kDefaultBuckets ? static_cast<std::uint32_t>(buckets) : 0;
}

namespace {

// A member as `ipset restore` reads it fastest. ipset looks a protocol name up in /etc/protocols again
// for every member (half of restoring 10,000 members); a number it takes as it is. Members are kept,
// and compared, as ipset lists them: with the name.
std::string restore_form(std::string_view member) {
  const std::size_t comma = member.find(',');
  const std::size_t colon = comma == std::string_view::npos ? comma : member.find(':', comma + 1);
  if (colon == std::string_view::npos) return std::string(member);
  auto number = protocol_number(member.substr(comma + 1, colon - comma - 1));
  if (!number) return std::string(member);
  return std::string(member.substr(0, comma + 1)) + std::to_string(*number) +
         std::string(member.substr(colon));
}

// /etc/protocols read once (getprotobynumber reads the file again on every call): the first name of
// each number, as getprotobynumber gives it.
struct ProtocolNames {
  std::array<std::string, 256> in_file, listed;  // listed: the name, else the number
  std::map<std::string, std::uint8_t, std::less<>> by_name;
  ProtocolNames() {
    setprotoent(1);
    while (const protoent* e = getprotoent())
      if (e->p_proto >= 0 && e->p_proto < 256 && in_file[e->p_proto].empty()) {
        in_file[e->p_proto] = e->p_name;
        by_name.emplace(e->p_name, static_cast<std::uint8_t>(e->p_proto));
      }
    endprotoent();
    for (unsigned n = 0; n < listed.size(); ++n)
      listed[n] = in_file[n].empty() ? std::to_string(n) : in_file[n];
  }
};

const ProtocolNames& protocol_names() {
  static const ProtocolNames names;
  return names;
}

}  // namespace

const std::string& protocol_name(std::uint8_t number) {
  return protocol_names().listed[number];
}

std::string_view protocol_file_name(std::uint8_t number) {
  return protocol_names().in_file[number];
}

std::optional<std::uint8_t> protocol_number(std::string_view name) {
  const auto& by_name = protocol_names().by_name;
  if (auto it = by_name.find(name); it != by_name.end()) return it->second;
  unsigned number = 0;
  if (name.empty() || name.size() > 3) return std::nullopt;
  for (char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
    number = number * 10 + static_cast<unsigned>(c - '0');
  }
  if (number > 255) return std::nullopt;
  return static_cast<std::uint8_t>(number);
}

std::string ipset_text(const std::vector<SetDef>& sets) {
  std::string out;
  for (const auto& set : sets) {
    out += ipset_create_line(set, set.name) + '\n';
    for (std::size_t i = 0; i < set.members.size(); ++i) {
      out += "add " + set.name + ' ' + restore_form(set.members[i]);
      if (i < set.comments.size() && !set.comments[i].empty()) {
        out += " comment \"";
        out += set.comments[i];
        out += '"';
      }
      out += '\n';
    }
  }
  return out;
}

std::string gate_text(std::string_view gate, bool on) {
  std::string out;
  for (const SetDef& any : kAnySets) {
    out += "create " + any.name + " hash:net family " + std::string(family_name(any.family)) + '\n';
    for (const auto member : any.members) out.append("add " + any.name + ' ').append(member).append(1, '\n');
  }
  out += "create " + std::string(gate) + " list:set\n";
  if (on)
    for (const SetDef& any : kAnySets) out += "add " + std::string(gate) + ' ' + any.name + '\n';
  return out;
}

std::string meta_rule(std::string_view ir_hash, std::string_view summary) {
  return std::string(kCommentOpen) + "fwe:ir " +
         (ir_hash.empty() ? std::string("unknown") : std::string(ir_hash)) +
         (summary.empty() ? "" : " " + std::string(summary)) + "\"";
}

std::string members_digest(const PackedStrings& members, const PackedStrings& comments) {
  // A sum of per-member digests: the same whatever order ipset lists the members in, without sorting.
  std::uint64_t sum = members.size();
  for (std::size_t i = 0; i < members.size(); ++i)
    sum += fnv1a(i < comments.size() ? comments[i] : std::string_view(), fnv1a(" ", fnv1a(members[i])));
  return hex16(sum);
}

std::vector<std::string> set_digests(const std::vector<SetDef>& sets) {
  std::vector<std::string> out;
  out.reserve(sets.size());
  for (const auto& set : sets) out.push_back(members_digest(set.members, set.comments));
  return out;
}

std::string set_record_rule(const SetDef& set, std::string_view digest) {
  return std::string(kCommentOpen) + "fwe:set " + set.name + ' ' + std::string(digest) + '"';
}

std::pair<std::string, std::string> set_record_of(std::string_view meta_spec) {
  auto comment = comment_of(meta_spec);
  if (comment.substr(0, 8) != "fwe:set ") return {};
  comment.remove_prefix(8);
  const auto space = comment.find(' ');
  if (space == std::string_view::npos) return {};
  return {std::string(comment.substr(0, space)), std::string(comment.substr(space + 1))};
}

std::string first_line_rule(const stamps::FirstLine& first) {
  return std::string(kCommentOpen) + "fwe:where " + first.key + ' ' + first.text + '"';
}

stamps::FirstLine first_line_of(std::string_view meta_spec) {
  auto comment = comment_of(meta_spec);
  if (comment.substr(0, 10) != "fwe:where ") return {};
  comment.remove_prefix(10);
  const auto space = comment.find(' ');
  if (space == std::string_view::npos) return {};
  return {std::string(comment.substr(0, space)), std::string(comment.substr(space + 1))};
}

std::string ir_hash_of(std::string_view meta_spec) {
  auto comment = comment_of(meta_spec);
  if (comment.substr(0, 7) != "fwe:ir ") return {};
  comment.remove_prefix(7);
  return std::string(comment.substr(0, comment.find(' ')));
}

std::string summary_of(std::string_view meta_spec) {
  auto comment = comment_of(meta_spec);
  if (comment.substr(0, 7) != "fwe:ir ") return {};
  auto space = comment.find(' ', 7);
  return space == std::string_view::npos ? std::string{} : std::string(comment.substr(space + 1));
}

void RuleStamps::add_members(std::string_view set_name, const PackedStrings& members,
                             const PackedStrings& comments) {
  auto& out = entries_["ipset/" + std::string(set_name)].members;
  out.reserve(out.size() + members.size());
  for (std::size_t i = 0; i < members.size(); ++i)
    out.emplace_back(members[i], i < comments.size() ? comments[i] : std::string_view());
  // By member, then comment: the order of "MEMBER COMMENT", as no member holds a character below ' '.
  std::sort(out.begin(), out.end());
}

std::string RuleStamps::summary() const {
  // The digest of "chain:stamp,stamp,...;" for every chain, hashed piece by piece: written out, the text
  // of 50,000 rules' stamps took 6 MB at the peak of an apply.
  std::size_t rules = 0;
  std::uint64_t digest = fnv1a({});
  for (const auto& [chain, entry] : entries_) {
    digest = fnv1a(":", fnv1a(chain, digest));
    for (const auto& stamp : entry.stamps) digest = fnv1a(",", fnv1a(stamp, digest));
    for (const auto& [member, comment] : entry.members)
      digest = fnv1a(",", fnv1a(comment, fnv1a(" ", fnv1a(member, digest))));
    digest = fnv1a(";", digest);
    rules += entry.stamps.size() + entry.members.size();
  }
  return "rules " + std::to_string(rules) + " digest " + hex16(digest);
}

bool operator==(const RuleStamps& a, const RuleStamps& b) {
  return std::equal(a.entries_.begin(), a.entries_.end(), b.entries_.begin(), b.entries_.end(),
                    [](const auto& x, const auto& y) {
                      return x.first == y.first && x.second.stamps == y.second.stamps &&
                             x.second.members == y.second.members;
                    });
}

std::vector<TableDef> with_meta(const Model& model, IpFamily family, std::string_view ir_hash,
                                const std::vector<std::string>& digests) {
  if (family == IpFamily::v6 && !model.ipv6) return {};
  std::vector<TableDef> tables = model.family(family);
  const std::vector<SetDef>& sets = model.sets;
  RuleStamps stamps;
  for (const auto& table : tables)
    for (const auto& chain : table.chains)
      for (const auto& rule : chain.rules)
        stamps.chain(table.name + '/' + chain.name).push_back(stamp_of(rule));
  for (const auto& set : sets)
    if (set.type == kRunSet && set.family == family) stamps.add_members(set.name, set.members, set.comments);
  auto filter =
      std::find_if(tables.begin(), tables.end(), [](const TableDef& t) { return t.name == "filter"; });
  if (filter == tables.end()) filter = tables.insert(tables.end(), TableDef{"filter", {}, {}});
  ChainDef meta{std::string(kMetaChain), {meta_rule(ir_hash, stamps.summary())}};
  for (std::size_t i = 0; i < sets.size(); ++i)
    if (sets[i].family == family) meta.rules.push_back(set_record_rule(sets[i], digests[i]));
  if (family == IpFamily::v4)
    for (const auto& first : model.first_lines) meta.rules.push_back(first_line_rule(first));
  filter->chains.push_back(std::move(meta));
  return tables;
}

}  // namespace fwe::iptables
