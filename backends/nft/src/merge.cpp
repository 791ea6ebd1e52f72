// merge.cpp - see merge.hpp.
#include "merge.hpp"

#include <netinet/in.h>  // before linux/netfilter.h (redefinition of in_addr otherwise)

#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <array>
#include <span>

namespace fwe::nft::merge {
namespace {

constexpr std::size_t kIfNameSize = 16;

bool is_address(Field f) {
  return f == Field::saddr || f == Field::daddr;
}
bool in_family(const Value& v, ir::Family f) {
  return f == ir::Family::any || v.lo.size == (f == ir::Family::ipv4 ? 4u : 16u);
}
std::size_t padded(std::size_t len) {
  return (len + 3) / 4 * 4;
}
bool same(const Values& a, const Values& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const Value& x, const Value& y) { return x.lo == y.lo && x.hi == y.hi; });
}

// How many values of field f a member has in family f (address fields) or at all.
std::size_t count_in(const Member& m, Field field, ir::Family family) {
  const Values& values = m.of(field);
  if (!is_address(field)) return values.size();
  return static_cast<std::size_t>(
      std::count_if(values.begin(), values.end(), [&](const Value& v) { return in_family(v, family); }));
}

// The fields a member matches, in order, without an allocation: they are asked for per member and box.
struct FieldList {
  std::array<Field, kFieldCount> fields{};
  std::size_t count = 0;
  const Field* begin() const { return fields.data(); }
  const Field* end() const { return fields.data() + count; }
  operator std::span<const Field>() const { return {fields.data(), count}; }
};

// Every combination of one value per field (address values of family only), the first field's value
// changing fastest.
// Appends to out.
void product(const Member& m, std::span<const Field> fields, ir::Family family, std::vector<Dims>& out) {
  Dims dims;
  dims.count = fields.size();
  // Chooses the values of the first `left` fields, the last of them in the outermost loop.
  auto choose = [&](auto& self, std::size_t left) -> void {
    if (left == 0) {
      out.push_back(dims);
      return;
    }
    Field field = fields[left - 1];
    for (const Value& v : m.of(field)) {
      if (is_address(field) && !in_family(v, family)) continue;
      dims.values[left - 1] = &v;
      self(self, left - 1);
    }
  };
  choose(choose, fields.size());
}

FieldList present(const Member& m) {
  FieldList out;
  for (std::size_t i = 0; i < kFieldCount; ++i)
    if (m.values[i]) out.fields[out.count++] = static_cast<Field>(i);
  return out;
}

std::span<const ir::Family> families(const Member& m) {
  static constexpr ir::Family kByAddress[] = {ir::Family::ipv4, ir::Family::ipv6};
  static constexpr ir::Family kAny[] = {ir::Family::any};
  if (m.by_address()) return kByAddress;
  return kAny;
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

Key key(std::initializer_list<std::uint8_t> bytes) {
  Key k;
  std::copy(bytes.begin(), bytes.end(), k.bytes.begin());
  k.size = static_cast<std::uint8_t>(bytes.size());
  return k;
}

bool by_lo(const Value& a, const Value& b) {
  return a.lo < b.lo;
}
bool same_lo(const Value& a, const Value& b) {
  return a.lo == b.lo;
}

}  // namespace

Values iface_values(const std::vector<ir::IfacePattern>& exact_names) {
  Values out;
  for (const auto& p : exact_names) {
    Key name{.size = kIfNameSize};
    std::copy_n(p.name.begin(), std::min(p.name.size(), kIfNameSize), name.bytes.begin());
    out.push_back({name, name});
  }
  std::sort(out.begin(), out.end(), by_lo);
  out.erase(std::unique(out.begin(), out.end(), same_lo), out.end());
  return out;
}

Values protocol_values(const std::vector<std::uint8_t>& protocols) {
  Values out;
  for (auto p : protocols) out.push_back({key({p}), key({p})});
  std::sort(out.begin(), out.end(), by_lo);
  out.erase(std::unique(out.begin(), out.end(), same_lo), out.end());
  return out;
}

Values address_values(std::span<const ir::Cidr> cidrs, ir::Family only) {
  Values out;
  out.reserve(cidrs.size());
  for (const auto& cidr : cidrs) {
    if (only != ir::Family::any && cidr.addr.family != only) continue;
    Value v;
    v.lo.size = static_cast<std::uint8_t>(cidr.addr.width() / 8);
    std::copy_n(cidr.addr.bytes.begin(), v.lo.size, v.lo.bytes.begin());
    v.hi = v.lo;
    for (std::size_t bit = cidr.prefix; bit < cidr.addr.width(); ++bit)
      v.hi.bytes[bit / 8] |= static_cast<std::uint8_t>(0x80 >> (bit % 8));
    out.push_back(v);
  }
  return out;
}

Values port_values(const ir::PortSet& ports) {
  Values out;
  auto be16 = [](std::uint16_t v) {
    return key({static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)});
  };
  for (const auto& p : ports) out.push_back({be16(p.lo), be16(p.hi)});
  return out;
}

std::size_t Member::boxes(ir::Family f) const {
  std::size_t n = 1;
  for (Field field : present(*this)) n *= count_in(*this, field, f);
  return n;
}

std::size_t Member::key_bytes() const {
  std::size_t n = 0;
  for (Field field : present(*this)) {
    std::size_t longest = 0;
    for (const auto& v : of(field)) longest = std::max<std::size_t>(longest, v.lo.size);
    n += padded(longest);
  }
  return n;
}

bool Run::overlap(const Box& a, const Box& b) {
  for (std::size_t i = 0; i < a.count; ++i)
    if (a[i]->hi < b[i]->lo || b[i]->hi < a[i]->lo) return false;
  return true;
}

void Run::touching(const Index& index, const Box& box) {
  touched_.clear();
  const Key &lo = box[dim_]->lo, &hi = box[dim_]->hi;
  for (auto it = index.upper_bound(hi); it != index.begin();) {
    --it;
    if (it->second.hi < lo) break;  // covers are disjoint: every earlier one ends before this one
    touched_.push_back(it);
  }
}

bool Run::try_add(Member& m) {
  const FieldList fields = present(m);
  if (members_.empty()) {
    for (Field telling : {Field::saddr, Field::daddr, Field::dport, Field::sport, Field::iif, Field::oif})
      if (auto at = std::find(fields.begin(), fields.end(), telling); at != fields.end()) {
        dim_ = static_cast<std::size_t>(at - fields.begin());
        break;
      }
  }
  // Boxes point into the member's value vectors, whose storage stays put when the member is moved.
  for (auto& boxes : boxes_) boxes.clear();
  for (ir::Family f : families(m)) {
    const Index& index = index_[static_cast<std::size_t>(f)];
    auto& boxes = boxes_[static_cast<std::size_t>(f)];
    product(m, fields, f, boxes);
    for (const Box& box : boxes) {
      touching(index, box);
      for (auto cover : touched_)
        for (const Box& other : cover->second.boxes)
          if (overlap(box, other)) return false;
    }
  }
  members_.push_back(std::move(m));
  for (std::size_t f = 0; f < boxes_.size(); ++f) {
    Index& index = index_[f];
    for (const Box& box : boxes_[f]) {
      Key lo = box[dim_]->lo, hi = box[dim_]->hi;
      std::vector<Box> merged_boxes{box};
      touching(index, box);
      for (auto it : touched_) {
        lo = std::min(lo, it->first);
        hi = std::max(hi, it->second.hi);
        const auto& merged = it->second.boxes;
        merged_boxes.insert(merged_boxes.end(), merged.begin(), merged.end());
        index.erase(it);
      }
      index[lo] = Cover{hi, std::move(merged_boxes)};
    }
  }
  return true;
}

bool same_outside(const Member& a, const Member& b, const std::vector<Field>& keyed) {
  for (std::size_t f = 0; f < kFieldCount; ++f) {
    if (a.values[f].has_value() != b.values[f].has_value()) return false;
    if (a.values[f] && std::find(keyed.begin(), keyed.end(), static_cast<Field>(f)) == keyed.end() &&
        !same(*a.values[f], *b.values[f]))
      return false;
  }
  return true;
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

namespace {

// A run's elements: one value per keyed field, and the stamp of the member they come from.
struct Item {
  Dims dims;
  const std::string* stamp;
};

// Hash sets of masked keys: at most this many per run and family (each is one more lookup per packet),
// and only one for a single-field key, whose interval set is a cheap tree rather than pipapo.
constexpr std::size_t kMaxHashSetsConcat = 4;

// The length of the prefix an address value's range is, if it is one.
std::optional<std::size_t> prefix_of(const Value& v) {
  return prefix_length({v.lo.bytes.data(), v.lo.size}, {v.hi.bytes.data(), v.hi.size});
}

// The key of an element (the end of its ranges with last): each field's value, in whole registers
// when there are several.
Bytes key_of(const Item& item, bool last = false) {
  auto part = [last](const Value* v) -> const Key& { return last ? v->hi : v->lo; };
  if (item.dims.count == 1) return part(item.dims[0]).to_bytes();  // one field: its own length
  Bytes key;
  for (std::size_t i = 0; i < item.dims.count; ++i) {
    const Key& k = part(item.dims[i]);
    std::size_t at = key.size();
    key.resize(at + padded(k.size), 0);
    std::copy_n(k.bytes.begin(), k.size, key.begin() + static_cast<std::ptrdiff_t>(at));
  }
  return key;
}

void set_key_type(Set& set, const std::vector<Field>& keyed, ir::Family f) {
  if (keyed.size() == 1) {
    set.key_type = key_type(keyed[0], f);
    set.key_len = key_length(set.key_type);
  } else {
    for (Field field : keyed) set.concat.push_back(key_type(field, f));
  }
}

// An element's stamp: relative to the run's file when it is in that file (Set::comment).
std::string element_stamp(const std::string& stamp, std::string_view run_file) {
  bool in_file = !run_file.empty() && stamp.size() > run_file.size() && stamp.starts_with(run_file) &&
                 stamp[run_file.size()] == ':';
  return in_file ? stamp.substr(run_file.size()) : stamp;
}

// A set of a run, with its elements still to come.
Set run_set(const std::vector<Field>& keyed, ir::Family f, bool counted) {
  Set set{.counters = counted};
  set_key_type(set, keyed, f);
  return set;
}
// Once its elements are in: the run's file becomes the set's comment when some element's stamp is
// relative to it.
void name_run_file(Set& set, std::string_view run_file) {
  if (std::any_of(set.elements.begin(), set.elements.end(),
                  [](const Element& e) { return e.comment.starts_with(':'); }))
    set.comment = run_file;
}

// One interval set, or a hash set when no value is a range.
Set plain_set(std::vector<Item> items, const std::vector<Field>& keyed, ir::Family f,
              std::string_view run_file, bool counted) {
  Set set = run_set(keyed, f, counted);
  bool ranges = false;
  for (const auto& item : items)
    for (std::size_t i = 0; i < item.dims.count; ++i) ranges = ranges || item.dims[i]->lo != item.dims[i]->hi;
  set.interval = ranges;
  if (keyed.size() == 1 && ranges) {
    // An interval set: the kernel's tree wants its elements in order.
    std::sort(items.begin(), items.end(),
              [](const Item& a, const Item& b) { return a.dims[0]->lo < b.dims[0]->lo; });
    for (const auto& item : items)
      add_interval(set, item.dims[0]->lo.to_bytes(), item.dims[0]->hi.to_bytes(),
                   counted ? element_stamp(*item.stamp, run_file) : std::string{});
  } else {
    for (const auto& item : items)
      set.elements.push_back({key_of(item), false, ranges ? key_of(item, true) : Bytes{},
                              counted ? element_stamp(*item.stamp, run_file) : std::string{}});
  }
  name_run_file(set, run_file);
  return set;
}

// Per keyed field the prefix length of an item's value (addresses) or the value's width (single
// values), where every value is one key once masked; nullopt when a value is a range.
struct HashShape {
  std::array<std::size_t, kFieldCount> lengths{};
  friend auto operator<=>(const HashShape&, const HashShape&) = default;
};
std::optional<HashShape> hash_shape(const Item& item, const std::vector<Field>& keyed) {
  HashShape shape;
  for (std::size_t i = 0; i < keyed.size(); ++i) {
    const Value& v = *item.dims[i];
    if (is_address(keyed[i])) {
      auto prefix = prefix_of(v);
      if (!prefix) return std::nullopt;
      shape.lengths[i] = *prefix;
    } else {
      if (v.lo != v.hi) return std::nullopt;
      shape.lengths[i] = v.lo.size * 8u;
    }
  }
  return shape;
}

}  // namespace

std::vector<RunSet> build_sets(const std::vector<Member>& members, const std::vector<Field>& keyed,
                               ir::Family f, std::string_view run_file, bool counted) {
  std::vector<Item> items;
  std::vector<Dims> boxes;
  for (const auto& m : members) {
    boxes.clear();
    product(m, keyed, f, boxes);
    for (const Dims& dims : boxes) items.push_back({dims, &m.stamp});
  }
  std::map<HashShape, std::vector<const Item*>> by_shape;
  bool hashable = true;
  for (const auto& item : items) {
    auto shape = hash_shape(item, keyed);
    if (!shape) {
      hashable = false;
      break;
    }
    by_shape[*shape].push_back(&item);
  }
  std::size_t limit = keyed.size() == 1 ? 1 : kMaxHashSetsConcat;
  bool masked = hashable && std::any_of(by_shape.begin(), by_shape.end(), [&](const auto& entry) {
                  for (std::size_t i = 0; i < keyed.size(); ++i)
                    if (entry.first.lengths[i] < entry.second.front()->dims[i]->lo.size * 8u) return true;
                  return false;
                });
  if (!masked || by_shape.size() > limit)
    return {{plain_set(std::move(items), keyed, f, run_file, counted),
             std::vector<std::optional<std::size_t>>(keyed.size())}};
  std::vector<RunSet> out;
  for (const auto& [shape, group] : by_shape) {
    RunSet out_set{run_set(keyed, f, counted), {}};
    for (std::size_t i = 0; i < keyed.size(); ++i) {
      bool whole = shape.lengths[i] == group.front()->dims[i]->lo.size * 8u;
      out_set.masks.push_back(whole ? std::nullopt : std::optional<std::size_t>(shape.lengths[i]));
    }
    out_set.set.elements.reserve(group.size());
    for (const Item* item : group)
      out_set.set.elements.push_back(
          {key_of(*item), false, {}, counted ? element_stamp(*item->stamp, run_file) : std::string{}});
    name_run_file(out_set.set, run_file);
    out.push_back(std::move(out_set));
  }
  return out;
}

void lookup(Rule& r, const std::vector<Field>& keyed, const std::vector<std::optional<std::size_t>>& masks,
            ir::Family f, const std::string& set_name) {
  bool v4 = f != ir::Family::ipv6;
  std::string words;
  std::size_t offset = 0;
  for (std::size_t i = 0; i < keyed.size(); ++i) {
    Field field = keyed[i];
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
    // The key's fields sit in consecutive 32-bit registers from register 1 on, named as nft names
    // them: by the 128-bit register where one starts (the kernel maps both names to the same place).
    load.dreg = offset % 16 == 0
                    ? static_cast<std::uint32_t>(NFT_REG_1) + static_cast<std::uint32_t>(offset / 16)
                    : static_cast<std::uint32_t>(NFT_REG32_00) + static_cast<std::uint32_t>(offset / 4);
    offset += padded(key_length(key_type(field, f)));
    r.exprs.push_back(load);
    if (masks[i]) {
      ir::IpAddr mask{v4 ? ir::Family::ipv4 : ir::Family::ipv6, {}};
      for (std::size_t b = 0; b < *masks[i]; ++b)
        mask.bytes[b / 8] |= static_cast<std::uint8_t>(0x80 >> (b % 8));
      Bytes mask_bytes(mask.bytes.begin(), mask.bytes.begin() + static_cast<std::ptrdiff_t>(load.len));
      r.exprs.push_back({.kind = Expr::Kind::bitwise,
                         .len = load.len,
                         .dreg = load.dreg,
                         .data = mask_bytes,
                         .data_to = Bytes(load.len, 0)});
      subject += " & " + ir::to_string(mask);
    }
    words += (words.empty() ? "" : " . ") + subject;
  }
  // nft writes the comparison out when a single masked field is looked up.
  bool single_masked = keyed.size() == 1 && masks[0];
  r.words.push_back(words + (single_masked ? " == @" : " @") + set_name);
  r.exprs.push_back({.kind = Expr::Kind::lookup, .text = set_name});
}

}  // namespace fwe::nft::merge
