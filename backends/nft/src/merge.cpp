// merge.cpp - see merge.hpp.
#include "merge.hpp"

#include <netinet/in.h>  // before linux/netfilter.h (redefinition of in_addr otherwise)

#include <linux/netfilter/nf_tables.h>

#include <algorithm>

namespace fwe::nft::merge {
namespace {

constexpr std::size_t kIfNameSize = 16;

bool is_address(Field f) {
  return f == Field::saddr || f == Field::daddr;
}
bool in_family(const Value& v, ir::Family f) {
  return f == ir::Family::any || v.lo.size() == (f == ir::Family::ipv4 ? 4u : 16u);
}
std::size_t padded(std::size_t len) {
  return (len + 3) / 4 * 4;
}
Bytes be16(std::uint16_t v) {
  return {static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
}
bool same(const Values& a, const Values& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const Value& x, const Value& y) { return x.lo == y.lo && x.hi == y.hi; });
}

// The values of field f a member has in family f (address fields) or all of them.
std::vector<const Value*> values_in(const Member& m, Field field, ir::Family family) {
  std::vector<const Value*> out;
  for (const auto& v : m.of(field))
    if (!is_address(field) || in_family(v, family)) out.push_back(&v);
  return out;
}

// Every combination of one value per field (the fields in order).
std::vector<std::vector<const Value*>> product(const Member& m, const std::vector<Field>& fields,
                                               ir::Family family) {
  std::vector<std::vector<const Value*>> out{{}};
  for (Field field : fields) {
    std::vector<std::vector<const Value*>> next;
    for (const Value* v : values_in(m, field, family))
      for (const auto& prefix : out) {
        next.push_back(prefix);
        next.back().push_back(v);
      }
    out = std::move(next);
  }
  return out;
}

std::vector<Field> present(const Member& m) {
  std::vector<Field> out;
  for (std::size_t i = 0; i < kFieldCount; ++i)
    if (m.values[i]) out.push_back(static_cast<Field>(i));
  return out;
}

std::vector<ir::Family> families(const Member& m) {
  if (m.by_address()) return {ir::Family::ipv4, ir::Family::ipv6};
  return {ir::Family::any};
}

KeyType key_type(Field field, ir::Family f) {
  switch (field) {
    case Field::iif:
    case Field::oif:
      return KeyType::ifname;
    case Field::l4proto:
      return KeyType::inet_proto;
    case Field::saddr:
    case Field::daddr:
      return f == ir::Family::ipv6 ? KeyType::ipv6_addr : KeyType::ipv4_addr;
    case Field::sport:
    case Field::dport:
      return KeyType::inet_service;
  }
  return KeyType::inet_service;
}

}  // namespace

// A loop rather than std::vector's operator<: GCC 12 warns falsely (-Wstringop-overread) about the
// memcmp that one inlines to in Release builds.
bool KeyLess::operator()(const Bytes& a, const Bytes& b) const {
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (a[i] != b[i]) return a[i] < b[i];
  return a.size() < b.size();
}

Values iface_values(const std::vector<ir::IfacePattern>& exact_names) {
  Values out;
  for (const auto& p : exact_names) {
    Bytes name(p.name.begin(), p.name.end());
    name.resize(kIfNameSize, 0);
    out.push_back({name, name, '"' + p.name + '"'});
  }
  std::sort(out.begin(), out.end(), [](const Value& a, const Value& b) { return KeyLess{}(a.lo, b.lo); });
  out.erase(std::unique(out.begin(), out.end(), [](const Value& a, const Value& b) { return a.lo == b.lo; }),
            out.end());
  return out;
}

Values protocol_values(const std::vector<std::uint8_t>& protocols) {
  std::vector<std::uint8_t> sorted = protocols;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  Values out;
  for (auto p : sorted) out.push_back({{p}, {p}, std::to_string(p)});
  return out;
}

Values address_values(const std::vector<ir::Cidr>& cidrs) {
  Values out;
  for (const auto& cidr : cidrs) {
    Bytes lo(cidr.addr.bytes.begin(), cidr.addr.bytes.begin() + cidr.addr.width() / 8), hi = lo;
    for (std::size_t bit = cidr.prefix; bit < cidr.addr.width(); ++bit)
      hi[bit / 8] |= static_cast<std::uint8_t>(0x80 >> (bit % 8));
    out.push_back(
        {lo, hi, cidr.prefix == cidr.addr.width() ? ir::to_string(cidr.addr) : ir::to_string(cidr)});
  }
  return out;
}

Values port_values(const ir::PortSet& ports) {
  Values out;
  for (const auto& p : ports)
    out.push_back({be16(p.lo), be16(p.hi),
                   p.lo == p.hi ? std::to_string(p.lo) : std::to_string(p.lo) + "-" + std::to_string(p.hi)});
  return out;
}

std::size_t Member::boxes(ir::Family f) const {
  std::size_t n = 1;
  for (Field field : present(*this)) n *= values_in(*this, field, f).size();
  return n;
}

std::size_t Member::key_bytes() const {
  std::size_t n = 0;
  for (Field field : present(*this)) {
    std::size_t longest = 0;
    for (const auto& v : of(field)) longest = std::max(longest, v.lo.size());
    n += padded(longest);
  }
  return n;
}

std::vector<Run::Box> Run::boxes_of(const Member& m, ir::Family f) {
  std::vector<Box> out;
  for (auto& dims : product(m, present(m), f)) out.push_back({std::move(dims)});
  return out;
}

bool Run::overlap(const Box& a, const Box& b) {
  for (std::size_t i = 0; i < a.dims.size(); ++i)
    if (KeyLess{}(a.dims[i]->hi, b.dims[i]->lo) || KeyLess{}(b.dims[i]->hi, a.dims[i]->lo)) return false;
  return true;
}

std::vector<Run::Index::const_iterator> Run::touching(const Index& index, const Box& box) {
  std::vector<Index::const_iterator> out;
  const Bytes &lo = box.dims[0]->lo, &hi = box.dims[0]->hi;
  for (auto it = index.upper_bound(hi); it != index.begin();) {
    --it;
    if (KeyLess{}(it->second.hi, lo)) break;  // covers are disjoint: every earlier one ends before this one
    out.push_back(it);
  }
  return out;
}

bool Run::accepts(const Member& m) const {
  for (ir::Family f : families(m)) {
    const Index& index = index_[static_cast<std::size_t>(f)];
    for (const Box& box : boxes_of(m, f))
      for (auto cover : touching(index, box))
        for (const Box& other : cover->second.boxes)
          if (overlap(box, other)) return false;
  }
  return true;
}

void Run::add(Member m) {
  // Boxes point into the member's value vectors, whose storage stays put when members_ grows.
  members_.push_back(std::move(m));
  const Member& added = members_.back();
  for (ir::Family f : families(added)) {
    Index& index = index_[static_cast<std::size_t>(f)];
    for (Box& box : boxes_of(added, f)) {
      Bytes lo = box.dims[0]->lo, hi = box.dims[0]->hi;
      std::vector<Box> boxes{std::move(box)};
      for (auto it : touching(index, boxes[0])) {
        if (KeyLess{}(it->first, lo)) lo = it->first;
        if (KeyLess{}(hi, it->second.hi)) hi = it->second.hi;
        auto& merged = index.find(it->first)->second.boxes;
        boxes.insert(boxes.end(), std::make_move_iterator(merged.begin()),
                     std::make_move_iterator(merged.end()));
        index.erase(it);
      }
      index[lo] = Cover{hi, std::move(boxes)};
    }
  }
}

std::vector<Field> keyed_fields(const std::vector<Member>& members) {
  std::vector<Field> out;
  for (Field field : present(members.front()))
    for (const auto& m : members)
      if (!same(m.of(field), members.front().of(field))) {
        out.push_back(field);
        break;
      }
  return out;
}

Set build_set(const std::vector<Member>& members, const std::vector<Field>& keyed, ir::Family f) {
  Set set{.counters = true};
  struct Item {
    std::vector<const Value*> dims;
    const std::string* stamp;
  };
  std::vector<Item> items;
  bool ranges = false;
  for (const auto& m : members)
    for (auto& dims : product(m, keyed, f)) {
      for (const Value* v : dims) ranges = ranges || v->lo != v->hi;
      items.push_back({std::move(dims), &m.stamp});
    }
  set.interval = ranges;
  auto text = [](const Item& item) {
    std::string out;
    for (const Value* v : item.dims) out += (out.empty() ? "" : " . ") + v->text;
    return out + " comment \"" + *item.stamp + '"';
  };
  if (keyed.size() == 1) {
    set.key_type = key_type(keyed[0], f);
    set.key_len = key_length(set.key_type);
    if (ranges)  // an interval set: the kernel's tree wants its elements in order
      std::sort(items.begin(), items.end(),
                [](const Item& a, const Item& b) { return KeyLess{}(a.dims[0]->lo, b.dims[0]->lo); });
    for (const auto& item : items) {
      if (ranges)
        add_interval(set, item.dims[0]->lo, item.dims[0]->hi, *item.stamp);
      else
        set.elements.push_back({item.dims[0]->lo, false, {}, *item.stamp});
      set.element_text.push_back(text(item));
    }
    return set;
  }
  for (Field field : keyed) set.concat.push_back(key_type(field, f));
  for (const auto& item : items) {
    Element element{{}, false, {}, *item.stamp};
    for (const Value* v : item.dims) {
      std::size_t at = element.key.size();
      element.key.resize(at + padded(v->lo.size()), 0);
      std::copy(v->lo.begin(), v->lo.end(), element.key.begin() + static_cast<std::ptrdiff_t>(at));
      if (ranges) {
        element.key_end.resize(at + padded(v->hi.size()), 0);
        std::copy(v->hi.begin(), v->hi.end(), element.key_end.begin() + static_cast<std::ptrdiff_t>(at));
      }
    }
    set.elements.push_back(std::move(element));
    set.element_text.push_back(text(item));
  }
  return set;
}

void lookup(Rule& r, const std::vector<Field>& keyed, ir::Family f, const std::string& set_name) {
  bool v4 = f != ir::Family::ipv6;
  std::string words;
  std::size_t offset = 0;
  for (Field field : keyed) {
    Expr load;
    std::string subject;
    switch (field) {
      case Field::iif:
      case Field::oif:
        load = {.kind = Expr::Kind::meta_load,
                .key = static_cast<std::uint32_t>(field == Field::iif ? NFT_META_IIFNAME : NFT_META_OIFNAME)};
        subject = field == Field::iif ? "iifname" : "oifname";
        break;
      case Field::l4proto:
        load = {.kind = Expr::Kind::meta_load, .key = NFT_META_L4PROTO};
        subject = "meta l4proto";
        break;
      case Field::saddr:
      case Field::daddr: {
        bool source = field == Field::saddr;
        load = {.kind = Expr::Kind::payload,
                .key = NFT_PAYLOAD_NETWORK_HEADER,
                .offset = v4 ? (source ? 12u : 16u) : (source ? 8u : 24u),
                .len = v4 ? 4u : 16u};
        subject = std::string(v4 ? "ip " : "ip6 ") + (source ? "saddr" : "daddr");
        break;
      }
      case Field::sport:
      case Field::dport:
        load = {.kind = Expr::Kind::payload,
                .key = NFT_PAYLOAD_TRANSPORT_HEADER,
                .offset = field == Field::sport ? 0u : 2u,
                .len = 2};
        subject = field == Field::sport ? "th sport" : "th dport";
        break;
    }
    // The key's first field sits in register 1, the next ones in the 32-bit registers after it.
    load.dreg = offset == 0
                    ? static_cast<std::uint32_t>(NFT_REG_1)
                    : static_cast<std::uint32_t>(NFT_REG32_00) + static_cast<std::uint32_t>(offset / 4);
    offset += padded(key_length(key_type(field, f)));
    r.exprs.push_back(load);
    words += (words.empty() ? "" : " . ") + subject;
  }
  r.words.push_back(words + " @" + set_name);
  r.exprs.push_back({.kind = Expr::Kind::lookup, .text = set_name});
}

}  // namespace fwe::nft::merge
