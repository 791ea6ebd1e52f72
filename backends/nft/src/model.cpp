// model.cpp - `nft -f` text of the object model.
#include "model.hpp"

#include <netinet/in.h>  // before linux/netfilter.h (redefinition of in_addr otherwise)

#include <linux/netfilter.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "fwengine/ir.hpp"

namespace fwe::nft {

std::string hook_name(std::uint32_t hooknum) {
  switch (hooknum) {
    case NF_INET_PRE_ROUTING:
      return "prerouting";
    case NF_INET_LOCAL_IN:
      return "input";
    case NF_INET_FORWARD:
      return "forward";
    case NF_INET_LOCAL_OUT:
      return "output";
    case NF_INET_POST_ROUTING:
      return "postrouting";
    default:
      return "unknown";
  }
}

RegValue::RegValue(std::span<const std::uint8_t> bytes) {
  if (bytes.size() > kCapacity)  // a bug of the translator: no register holds it
    throw std::length_error("nft: a register value of " + std::to_string(bytes.size()) + " bytes");
  std::copy(bytes.begin(), bytes.end(), bytes_.begin());
  size_ = static_cast<std::uint8_t>(bytes.size());
}

std::uint32_t hash_set_size(std::size_t elements) {
  // The kernel gives a set of size S the next power of two of 4S/3 buckets: the size that fills that
  // many to three quarters keeps the table as small as a growing hash would make it.
  constexpr std::size_t kFewestBuckets = 16, kMostBuckets = std::size_t{1} << 31;
  const std::size_t buckets = std::bit_ceil(std::clamp((elements * 4 + 2) / 3, kFewestBuckets, kMostBuckets));
  return static_cast<std::uint32_t>(buckets / 4 * 3);
}

std::uint64_t digest_bytes(std::uint64_t h, std::string_view bytes) {
  constexpr std::uint64_t prime = 1099511628211ull;
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    std::uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    h = (h ^ word) * prime;
    h ^= h >> 32;
  }
  for (; i < bytes.size(); ++i) h = (h ^ static_cast<unsigned char>(bytes[i])) * prime;
  return (h ^ 0xff) * prime;
}

std::uint64_t element_digest(const Element& element, std::uint64_t seed) {
  auto view = [](const Bytes& b) {
    return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
  };
  seed = digest_bytes(seed, view(element.key));
  seed = digest_bytes(seed, element.interval_end ? "end" : "");
  seed = digest_bytes(seed, view(element.key_end));
  return digest_bytes(seed, element.comment);
}

std::uint64_t set_digest(std::string_view name, std::uint64_t content) {
  return digest_bytes(digest_bytes(kDigestSeed, name),
                      std::string_view(reinterpret_cast<const char*>(&content), sizeof content));
}

std::string type_name(KeyType type) {
  switch (type) {
    case KeyType::ipv4_addr:
      return "ipv4_addr";
    case KeyType::ipv6_addr:
      return "ipv6_addr";
    case KeyType::ether_addr:
      return "ether_addr";
    case KeyType::inet_proto:
      return "inet_proto";
    case KeyType::inet_service:
      return "inet_service";
    case KeyType::ifname:
      return "ifname";
  }
  return "invalid";
}

std::uint32_t key_length(KeyType type) {
  switch (type) {
    case KeyType::ipv4_addr:
      return 4;
    case KeyType::ether_addr:
      return 6;
    case KeyType::inet_proto:
      return 1;
    case KeyType::inet_service:
      return 2;
    case KeyType::ipv6_addr:
    case KeyType::ifname:
      return 16;
  }
  return 0;
}

void add_interval(Set& set, const Bytes& first, const Bytes& last, std::string comment) {
  if (set.elements.empty() && std::any_of(first.begin(), first.end(), [](auto b) { return b != 0; }))
    set.elements.push_back({Bytes(first.size(), 0), true});
  set.elements.push_back({first, false, {}, std::move(comment)});
  Bytes end = last;
  for (auto it = end.rbegin(); it != end.rend(); ++it)
    if (++*it != 0) {
      set.elements.push_back({end, true});
      return;
    }
}

std::optional<std::size_t> prefix_length(KeyBytes lo, KeyBytes hi) {
  std::size_t width = lo.size() * 8, prefix = 0;
  auto bit = [](KeyBytes b, std::size_t i) { return (b[i / 8] >> (7 - i % 8)) & 1; };
  while (prefix < width && bit(lo, prefix) == bit(hi, prefix)) ++prefix;
  for (std::size_t i = prefix; i < width; ++i)
    if (bit(lo, i) || !bit(hi, i)) return std::nullopt;
  return prefix;
}

namespace {

ir::IpAddr address_of(KeyBytes bytes) {
  ir::IpAddr a{bytes.size() == 4 ? ir::Family::ipv4 : ir::Family::ipv6, {}};
  std::copy(bytes.begin(), bytes.end(), a.bytes.begin());
  return a;
}

std::uint32_t number_of(KeyBytes bytes) {
  std::uint32_t n = 0;
  for (auto b : bytes) n = n << 8 | b;
  return n;
}

// One field of an element: a value, an address prefix or a range lo..hi.
std::string field_text(KeyType type, KeyBytes lo, KeyBytes hi) {
  bool single = std::equal(lo.begin(), lo.end(), hi.begin(), hi.end());
  switch (type) {
    case KeyType::ipv4_addr:
    case KeyType::ipv6_addr: {
      if (single) return ir::to_string(address_of(lo));
      if (auto prefix = prefix_length(lo, hi))
        return ir::to_string(ir::Cidr{address_of(lo), static_cast<std::uint8_t>(*prefix)});
      return ir::to_string(address_of(lo)) + "-" + ir::to_string(address_of(hi));
    }
    case KeyType::ifname: {
      auto end = std::find(lo.begin(), lo.end(), 0);
      return '"' + std::string(lo.begin(), end) + '"';
    }
    case KeyType::ether_addr: {
      ir::MacAddr mac{};
      std::copy_n(lo.begin(), mac.size(), mac.begin());
      return ir::to_string(mac);
    }
    case KeyType::inet_proto:
    case KeyType::inet_service:
      break;
  }
  std::string out = std::to_string(number_of(lo));
  return single ? out : out + "-" + std::to_string(number_of(hi));
}

// The element lo..hi (hi: lo for a single key), field by field for a concatenated key.
std::string element_text(const Set& set, KeyBytes lo, KeyBytes hi, const std::string& comment) {
  std::string out;
  if (set.concat.empty()) {
    out = field_text(set.key_type, lo, hi);
  } else {
    std::size_t at = 0;
    for (KeyType type : set.concat) {
      std::size_t len = key_length(type);
      if (at) out += " . ";
      out += field_text(type, lo.subspan(at, len), hi.subspan(at, len));
      at += (len + 3) / 4 * 4;  // each field fills whole registers
    }
  }
  if (!comment.empty()) out += " comment \"" + comment + '"';
  return out;
}

}  // namespace

std::string element_key_text(const Set& set, const Element& element) {
  return element_text(set, element.key, element.key_end.empty() ? element.key : element.key_end, {});
}

std::vector<std::string> element_texts(const Set& set) {
  std::vector<std::string> out;
  out.reserve(set.elements.size());
  const auto& elements = set.elements;
  for (std::size_t i = 0; i < elements.size(); ++i) {
    const Element& e = elements[i];
    if (!set.interval || !set.concat.empty()) {
      out.push_back(element_text(set, e.key, e.key_end.empty() ? e.key : e.key_end, e.comment));
      continue;
    }
    // add_interval's form: a start, then the exclusive end unless the range runs to the last key.
    if (e.interval_end) continue;  // the leading marker at zero
    Bytes last(e.key.size(), 0xff);
    if (i + 1 < elements.size() && elements[i + 1].interval_end) {
      last = elements[++i].key;
      for (auto it = last.rbegin(); it != last.rend(); ++it)  // less one: borrow through the zeros
        if ((*it)-- != 0) break;
    }
    out.push_back(element_text(set, e.key, last, e.comment));
  }
  return out;
}

std::string Rule::text() const {
  std::string out;
  append_text(out);
  return out;
}

void Words::append_text(std::string& out) const {
  bool first = true;
  each([&](std::string_view word) {
    if (!first) out += ' ';
    out += word;
    first = false;
  });
}

void Rule::append_text(std::string& out) const {
  words.append_text(out);
  if (!comment.empty()) out.append(" comment \"").append(comment) += '"';
}

void Chain::append(Rule rule) {
  rule.exprs.shrink_to_fit();
  rule.words.shrink_to_fit();
  rules.push_back(std::move(rule));
}

std::string Table::text() const {
  std::ostringstream out;
  out << "table inet " << kTableName << "\ndelete table inet " << kTableName << "\ntable inet " << kTableName
      << " {\n";
  for (const auto& helper : helpers)
    out << "\tct helper " << helper.name << " {\n\t\ttype \"" << helper.type << "\" protocol "
        << (helper.l4proto == 17 ? "udp" : "tcp") << "\n\t\tl3proto inet\n\t}\n";
  for (const auto& set : sets) {
    out << "\tset " << set.name << " {\n\t\ttype ";
    if (set.concat.empty()) out << type_name(set.key_type);
    for (std::size_t i = 0; i < set.concat.size(); ++i) out << (i ? " . " : "") << type_name(set.concat[i]);
    out << "\n";
    if (set.size) out << "\t\tsize " << set.size << "\n";
    if (set.interval) out << "\t\tflags interval\n";
    if (set.counters) out << "\t\tcounter\n";
    if (!set.comment.empty()) out << "\t\tcomment \"" << set.comment << "\"\n";
    if (!set.elements.empty()) {
      out << "\t\telements = { ";
      const auto texts = element_texts(set);
      for (std::size_t i = 0; i < texts.size(); ++i) out << (i ? ", " : "") << texts[i];
      out << " }\n";
    }
    out << "\t}\n";
  }
  for (const auto& chain : chains) {
    out << "\tchain " << chain.name << " {\n";
    if (chain.hook)
      out << "\t\ttype " << chain.hook->type << " hook " << hook_name(chain.hook->hooknum) << " priority "
          << chain.hook->priority << "; policy accept;\n";
    for (const auto& rule : chain.rules) out << "\t\t" << rule.text() << "\n";
    out << "\t}\n";
  }
  out << "}\n";
  return out.str();
}

}  // namespace fwe::nft
