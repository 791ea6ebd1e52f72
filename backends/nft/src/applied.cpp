// applied.cpp - see applied.hpp. The records are binary, in the host's byte order (they never leave the
// host's /run). Sets: a header with the stamp chain's name, then per set its name, content digest,
// element count and elements (flags, key, end key and the element's digest, which covers its comment
// too). Content: the generation, the content chain's name, then per chain its name and rules' digest.
#include "applied.hpp"

#include <cstring>

#include "fwengine/state.hpp"

namespace fwe::nft {
namespace {

constexpr std::string_view kMagic = "fwengine nft sets 1\n";
constexpr const char* kFileName = "/sets";
// 2: rules' comments count in their chain's share (a record of 1 is not trusted: one full replace).
constexpr std::string_view kContentMagic = "fwengine nft content 2\n";
constexpr const char* kContentFileName = "/content";
constexpr std::size_t kMinElementBytes = 11;  // flags, two key lengths and the digest

template <class T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}
void put_bytes(std::string& out, const std::string& s) {
  put(out, static_cast<std::uint32_t>(s.size()));
  out += s;
}
void put_key(std::string& out, const Bytes& key) {
  put(out, static_cast<std::uint8_t>(key.size()));
  out.append(key.begin(), key.end());
}

// Reads what put wrote, refusing to run past the end.
class Reader {
 public:
  Reader(const std::string& bytes, std::size_t at, std::size_t end) : bytes_(bytes), at_(at), end_(end) {}
  template <class T>
  bool get(T& value) {
    if (end_ - at_ < sizeof value) return false;
    std::memcpy(&value, bytes_.data() + at_, sizeof value);
    at_ += sizeof value;
    return true;
  }
  bool get_bytes(std::string& s) {
    std::uint32_t len = 0;
    if (!get(len) || end_ - at_ < len) return false;
    s.assign(bytes_, at_, len);
    at_ += len;
    return true;
  }
  bool get_key(Bytes& key) {
    std::uint8_t len = 0;
    if (!get(len) || end_ - at_ < len) return false;
    key.assign(bytes_.begin() + static_cast<std::ptrdiff_t>(at_),
               bytes_.begin() + static_cast<std::ptrdiff_t>(at_ + len));
    at_ += len;
    return true;
  }
  bool skip(std::size_t n) {
    if (end_ - at_ < n) return false;
    at_ += n;
    return true;
  }
  std::size_t at() const { return at_; }

 private:
  const std::string& bytes_;
  std::size_t at_, end_;
};

}  // namespace

void AppliedSets::save(const std::string& dir, const Table& table, const std::string& marker) {
  std::string out(kMagic);
  put_bytes(out, marker);
  put(out, static_cast<std::uint32_t>(table.sets.size()));
  for (const auto& set : table.sets) {
    put_bytes(out, set.name);
    put(out, set.content);
    put(out, static_cast<std::uint64_t>(set.elements.size()));
    std::string elements;
    for (const auto& element : set.elements) {
      put(elements, static_cast<std::uint8_t>(element.interval_end ? 1 : 0));
      put_key(elements, element.key);
      put_key(elements, element.key_end);
      put(elements, element_digest(element));
    }
    put(out, static_cast<std::uint64_t>(elements.size()));
    out += elements;
  }
  state::replace_record(dir + kFileName, out);
}

std::optional<AppliedSets> AppliedSets::load(const std::string& dir) {
  auto bytes = state::read_whole_file(dir + kFileName);
  if (!bytes) return std::nullopt;
  AppliedSets out;
  out.bytes_ = std::move(*bytes);
  if (out.bytes_.compare(0, kMagic.size(), kMagic) != 0) return std::nullopt;
  Reader in(out.bytes_, kMagic.size(), out.bytes_.size());
  std::uint32_t sets = 0;
  if (!in.get_bytes(out.marker_) || !in.get(sets)) return std::nullopt;
  for (std::uint32_t i = 0; i < sets; ++i) {
    std::string name;
    Entry entry;
    std::uint64_t count = 0, size = 0;
    if (!in.get_bytes(name) || !in.get(entry.content) || !in.get(count) || !in.get(size) ||
        count > size / kMinElementBytes)  // a damaged count must not size anything
      return std::nullopt;
    entry.count = count;
    entry.begin = in.at();
    if (!in.skip(size)) return std::nullopt;
    entry.end = in.at();
    out.sets_[name] = entry;
  }
  return out;
}

bool AppliedSets::same(const Set& set) const {
  auto it = sets_.find(set.name);
  return it != sets_.end() && it->second.content == set.content && it->second.count == set.elements.size();
}

std::optional<SetDelta> AppliedSets::delta(const Set& set) const {
  auto it = sets_.find(set.name);
  if (it == sets_.end()) return std::nullopt;
  // The recorded elements' digests and where each element starts; only the removed ones are decoded.
  struct Recorded {
    std::uint64_t digest;
    std::size_t at;
    bool kept;
  };
  std::vector<Recorded> recorded;
  recorded.reserve(it->second.count);
  Reader in(bytes_, it->second.begin, it->second.end);
  for (std::size_t i = 0; i < it->second.count; ++i) {
    Recorded r{0, in.at(), false};
    std::uint8_t flags = 0, key_len = 0, end_len = 0;
    if (!in.get(flags) || !in.get(key_len) || !in.skip(key_len) || !in.get(end_len) || !in.skip(end_len) ||
        !in.get(r.digest))
      return std::nullopt;
    recorded.push_back(r);
  }
  // An open-addressing table of their indexes by digest (a large set has hundreds of thousands).
  std::size_t slots = 16;
  while (slots < 2 * recorded.size()) slots *= 2;
  constexpr std::uint32_t kEmpty = 0xffffffff;
  std::vector<std::uint32_t> table(slots, kEmpty);
  for (std::uint32_t i = 0; i < recorded.size(); ++i) {
    std::size_t slot = recorded[i].digest & (slots - 1);
    while (table[slot] != kEmpty) slot = (slot + 1) & (slots - 1);
    table[slot] = i;
  }
  SetDelta out;
  for (const auto& element : set.elements) {
    const std::uint64_t digest = element_digest(element);
    bool found = false;
    for (std::size_t slot = digest & (slots - 1); table[slot] != kEmpty; slot = (slot + 1) & (slots - 1))
      if (Recorded& r = recorded[table[slot]]; r.digest == digest && !r.kept) {
        r.kept = found = true;
        break;
      }
    if (!found) out.added.push_back(&element);
  }
  for (const auto& r : recorded) {
    if (r.kept) continue;
    Element element;
    std::uint8_t flags = 0;
    Reader at(bytes_, r.at, it->second.end);
    if (!at.get(flags) || !at.get_key(element.key) || !at.get_key(element.key_end)) return std::nullopt;
    element.interval_end = flags != 0;
    out.removed.push_back(std::move(element));
  }
  return out;
}

void ContentRecord::save(const std::string& dir) const {
  std::string out(kContentMagic);
  put(out, generation);
  put_bytes(out, chain);
  put(out, static_cast<std::uint32_t>(rules.size()));
  for (const auto& [name, digest] : rules) {
    put_bytes(out, name);
    put(out, digest);
  }
  state::replace_record(dir + kContentFileName, out);
}

std::optional<ContentRecord> ContentRecord::load(const std::string& dir) {
  auto bytes = state::read_whole_file(dir + kContentFileName);
  if (!bytes || bytes->compare(0, kContentMagic.size(), kContentMagic) != 0) return std::nullopt;
  Reader in(*bytes, kContentMagic.size(), bytes->size());
  ContentRecord out;
  std::uint32_t chains = 0;
  if (!in.get(out.generation) || !in.get_bytes(out.chain) || !in.get(chains)) return std::nullopt;
  for (std::uint32_t i = 0; i < chains; ++i) {
    std::string name;
    std::uint64_t digest = 0;
    if (!in.get_bytes(name) || !in.get(digest)) return std::nullopt;
    out.rules.emplace_hint(out.rules.end(), std::move(name), digest);
  }
  if (in.at() != bytes->size()) return std::nullopt;  // more than it says: not one we wrote
  return out;
}

}  // namespace fwe::nft
