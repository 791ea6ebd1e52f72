// merge.hpp - a run of consecutive rules with the same verdict that differ only in the values of the
// same matches becomes one rule that looks the values up in a set (issue #10). Every element carries
// a counter and the origin stamp of its rule, so hits still map to source rules.
//
// First match wins inside a run because no two rules of a run match the same packet: a rule whose
// values overlap an earlier rule's ends the run (Run::try_add). All rules of a run have the same
// verdict and no other effect, so which one matched changes nothing but the counter.
#pragma once

#include <endian.h>

#include <array>
#include <compare>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fwengine/ir.hpp"
#include "model.hpp"

namespace fwe::nft::merge {

// The matches a merged rule can look up, in the order of the set's concatenated key.
enum class Field : std::uint8_t { iif, oif, l4proto, saddr, daddr, sport, dport };
inline constexpr std::size_t kFieldCount = 7;
inline constexpr std::size_t kMaxKeyBytes = 64;  // the kernel's registers: 16 of 32 bits

// One key of a field, big-endian, held in place (a policy makes hundreds of thousands of them); the
// bytes past its size are zero, so keys compare as the numbers they are, a shorter one first on a tie.
struct Key {
  std::array<std::uint8_t, 16> bytes{};
  std::uint8_t size = 0;
  Bytes to_bytes() const { return Bytes(bytes.begin(), bytes.begin() + size); }
  friend bool operator==(const Key&, const Key&) = default;
  // Two 64-bit numbers rather than a memcmp call: runs compare keys millions of times.
  friend std::strong_ordering operator<=>(const Key& a, const Key& b) {
    for (std::size_t half = 0; half < 2; ++half)
      if (auto order = a.word(half) <=> b.word(half); order != 0) return order;
    return a.size <=> b.size;
  }

 private:
  std::uint64_t word(std::size_t half) const {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + half * 8, 8);
    return be64toh(w);
  }
};

// One value of a field: an inclusive range of keys (lo == hi for a single value). Address values of
// both families share a field; their size tells them apart.
struct Value {
  Key lo, hi;
};
using Values = std::vector<Value>;

Values iface_values(const std::vector<ir::IfacePattern>& exact_names);
Values protocol_values(const std::vector<std::uint8_t>& protocols);
// The cidrs of family `only` (any: all of them).
Values address_values(std::span<const ir::Cidr> cidrs, ir::Family only);
Values port_values(const ir::PortSet& ports);

// One value per field of some fields, in place: a point or box of a member's values.
struct Dims {
  std::array<const Value*, kFieldCount> values{};
  std::size_t count = 0;
  const Value* operator[](std::size_t i) const { return values[i]; }
};

// What one rule of a run matches: per field its values (nullopt: the rule does not match on it).
struct Member {
  std::array<std::optional<Values>, kFieldCount> values{};
  std::string stamp;
  bool has(Field f) const { return values[static_cast<std::size_t>(f)].has_value(); }
  const Values& of(Field f) const { return *values[static_cast<std::size_t>(f)]; }
  bool by_address() const { return has(Field::saddr) || has(Field::daddr); }
  // How many set elements the rule needs in family f (any: address fields are absent).
  std::size_t boxes(ir::Family f) const;
  // The bytes of the longest key the rule's fields can form.
  std::size_t key_bytes() const;
};

// A run under construction: members in order, and an index of their elements per family.
class Run {
 public:
  // Adds m (moving it in) when it matches no packet an earlier member matches: then the order inside
  // the run is free. Otherwise returns false and leaves m as it was.
  bool try_add(Member& m);
  const std::vector<Member>& members() const { return members_; }

 private:
  using Box = Dims;  // one value per present field
  // Boxes by one dimension, in disjoint merged intervals: a new box only meets the boxes of the
  // intervals that dimension overlaps. The dimension is the most telling field of the run's shape (an
  // address rather than the protocol all members share).
  struct Cover {
    Key hi;
    std::vector<Box> boxes;
  };
  using Index = std::map<Key, Cover>;
  static bool overlap(const Box& a, const Box& b);
  // The covers of index that box meets, into touched_.
  void touching(const Index& index, const Box& box);

  std::vector<Member> members_;
  std::size_t dim_ = 0;           // the dimension boxes are indexed by
  std::array<Index, 3> index_{};  // by family: any, ipv4, ipv6
  // try_add's working space, kept for its capacity: a run adds thousands of members.
  std::array<std::vector<Box>, 3> boxes_{};
  std::vector<Index::const_iterator> touched_;
};

// The fields whose values differ between the members: the set's key. The others are matched as usual.
std::vector<Field> keyed_fields(const std::vector<Member>& members);
// Whether two members have the same fields and, in the fields not keyed, the same values: runs whose
// heads do match alike outside their keys.
bool same_outside(const Member& a, const Member& b, const std::vector<Field>& keyed);

// One set of a run and how its lookup loads the key: per keyed field the prefix length its addresses
// are masked to before the lookup (nullopt: the whole value).
struct RunSet {
  Set set;
  std::vector<std::optional<std::size_t>> masks;
};

// The sets of a run for family f (any when no address field is keyed): one element per member and
// combination of its values; with `counted`, each with a counter and the member's stamp (without, the
// merged rule counts for all of them and the members need no stamps). Where every value is one key
// once its addresses are masked to their prefix, the elements go to hash sets, one per combination of
// prefix lengths (the kernel builds and searches a hash far faster than an interval set, and a
// concatenated interval set costs hundreds of KiB however few its elements); otherwise to one
// interval set.
// run_file: the file part of the run's first stamp; the stamps of counted elements from the same file
// leave it out, and the set's comment holds it (Set::comment).
std::vector<RunSet> build_sets(const std::vector<Member>& members, const std::vector<Field>& keyed,
                               ir::Family f, std::string_view run_file, bool counted);

// Loads the keyed fields into consecutive registers, masks the addresses as the set wants and looks
// them up in the named set.
void lookup(Rule& r, const std::vector<Field>& keyed, const std::vector<std::optional<std::size_t>>& masks,
            ir::Family f, const std::string& set_name);

}  // namespace fwe::nft::merge
