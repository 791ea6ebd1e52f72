// model.hpp - the nftables objects the backend sends: one table with sets, chains and rules, each rule
// held twice in lockstep: as the kernel's expressions (what apply sends) and as `nft -f` text (render).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fwengine/ir.hpp"

namespace fwe::nft {

using Bytes = std::vector<std::uint8_t>;
using KeyBytes = std::span<const std::uint8_t>;

inline constexpr const char* kTableName = "fwengine";
// Packet mark bits the ruleset uses for itself. The allow mark survives from one stage to the next
// (honour_allow sections test it); the pass bit lives only while a group is being evaluated. IR mark
// matches and set-mark actions are masked so that they neither see nor change these two bits.
inline constexpr std::uint32_t kAllowMark = 0x40000000;
inline constexpr std::uint32_t kPassMark = 0x20000000;
// nft limits rule comments to this many characters.
inline constexpr std::size_t kMaxComment = 128;

// nft's own datatype ids: the kernel ignores them, but `nft list` needs them to print set elements.
enum class KeyType : std::uint32_t {
  ipv4_addr = 7,
  ipv6_addr = 8,
  ether_addr = 9,
  inet_proto = 12,
  inet_service = 13,
  ifname = 41,
};

inline constexpr std::uint64_t kDigestSeed = 1469598103934665603ull;  // FNV-1a's offset basis

struct Element {
  Bytes key{};
  bool interval_end = false;
  Bytes key_end{};        // concatenated interval sets: the inclusive end of the range
  std::string comment{};  // sets with counters: the origin stamp of the rule the element stands for
};

// A named set (an IR address set, one per family; a merged run's key) or an anonymous one bound to a
// single rule.
struct Set {
  std::string name{};  // anonymous: "__set%d", the kernel picks the number
  KeyType key_type = KeyType::ipv4_addr;
  std::uint32_t key_len = 4;
  std::vector<KeyType> concat{};  // a concatenated key: its fields (key_type and key_len unused)
  bool interval = false;
  bool anonymous = false;
  // A named hash set: the most elements it takes (hash_set_size; 0: no limit). Told the size in advance,
  // the kernel makes the set's hash table once instead of growing it while the elements arrive.
  std::uint32_t size = 0;
  bool counters = false;  // every element gets a counter (a merged run: hits per source rule)
  // An anonymous verdict map: element i's verdict is `goto goto_chains[i]` (kept beside the elements, so
  // that the many elements of plain sets carry no verdict field).
  std::vector<std::string> goto_chains{};
  std::uint32_t id = 0;  // batch-local id the rule's lookup refers to
  std::vector<Element> elements{};
  // A merged run's set: the file of its rules. Element stamps in that file leave it out and start with
  // ':' (read back, this comment goes before them): a shorter comment keeps each element in a smaller
  // kernel allocation.
  std::string comment{};
  std::uint64_t content = 0;  // named sets: the sum of its elements' element_digest (order-free)
};

// The size a named hash set of this many elements is declared with: three quarters of the kernel's
// bucket count for it (a power of two, at least 16). It is part of the set's declaration and so of its
// name: a count that crosses a step (growing past one, or shrinking to the one below) makes the set anew,
// so that it is never patched past its size.
std::uint32_t hash_set_size(std::size_t elements);

// FNV-1a's step over 8 bytes at a time (folding the high bits back down, which the multiplication
// never carries there), then over the rest, and a separator: a stable digest, fast enough for every
// element of a 50,000-rule policy on every apply.
std::uint64_t digest_bytes(std::uint64_t h, std::string_view bytes);
// The digest of an element's key, flags, end key and comment, continuing from seed: what tells two
// elements, or two sets' contents, apart.
std::uint64_t element_digest(const Element& element, std::uint64_t seed = kDigestSeed);
// One named set's share of a table's elements digest: its name and the (order-free) sum of its
// elements' digests. The kernel lists a set's elements in its own order, hence a sum.
std::uint64_t set_digest(std::string_view name, std::uint64_t content);

// nft's name and byte length of a key type.
std::string type_name(KeyType type);
std::uint32_t key_length(KeyType type);

// Interval elements as nft writes them: a leading end marker at zero unless the first range starts
// there, then each range as start + exclusive end (left out when the end wraps past the last key).
// The start element carries the comment.
void add_interval(Set& set, const Bytes& first, const Bytes& last, std::string comment = {});

// The length of the prefix the range of keys lo..hi (as long as each other) is, if it is one.
std::optional<std::size_t> prefix_length(KeyBytes lo, KeyBytes hi);

// The set's elements as nft writes them, with their comments: made from the keys when the text is
// wanted (render, a refused rule's message), so that an apply never builds it.
std::vector<std::string> element_texts(const Set& set);
// One element's key (its range, for a concatenated interval set) as nft prints it, without comment.
std::string element_key_text(const Set& set, const Element& element);

// A value an expression compares a register with or puts in one: at most a register's 16 bytes
// (NFT_REG_SIZE), held in place rather than in a block of its own.
class RegValue {
 public:
  static constexpr std::size_t kCapacity = 16;
  RegValue() = default;
  RegValue(std::initializer_list<std::uint8_t> bytes) : RegValue(std::span(bytes.begin(), bytes.size())) {}
  RegValue(const Bytes& bytes) : RegValue(std::span<const std::uint8_t>(bytes)) {}
  explicit RegValue(std::span<const std::uint8_t> bytes);
  const std::uint8_t* data() const { return bytes_.data(); }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  std::array<std::uint8_t, kCapacity> bytes_{};
  std::uint8_t size_ = 0;
};

// One kernel expression; which fields count depends on kind (mirrors libnftnl's expression types).
struct Expr {
  enum class Kind : std::uint8_t {
    meta_load,  // key -> reg 1
    meta_set,   // key <- reg 1
    ct_load,    // key -> reg 1
    payload,    // base, offset, len -> reg 1
    cmp,        // op, data
    range,      // op, data .. data_to
    bitwise,    // len, data = mask, data_to = xor
    lookup,     // set_name/set_id, invert; dreg NFT_REG_VERDICT for a verdict map
    immediate,  // dreg, data
    verdict,    // code, chain
    counter,
    limit,   // rate, unit (seconds), burst
    log,     // text = prefix, level (when has_level)
    reject,  // type, code
    nat,     // nat_type, family, regs
    redir,   // regs
    masq,    // regs
    notrack,
    rt_load,       // key -> reg 1
    byteorder,     // reg 1 = hton(reg 1), len bytes in elements of offset bytes
    exthdr_write,  // reg 1 -> TCP option key at offset, len bytes
    fib,           // route lookup with flags (code) -> result (key) in reg 1
    objref,        // a stateful object of the table by type (key) and name (text): ct helper set
  };
  // Packed: 104 bytes (a Calico policy of 10,000 rules holds 100,000 of them).
  Kind kind = Kind::counter;
  bool invert = false;
  bool has_level = false;
  std::int8_t ct_dir = -1;  // ct_load of a key of one direction's tuple: IP_CT_DIR_ORIGINAL or _REPLY
  std::uint8_t reg_addr = 0, reg_proto_min = 0, reg_proto_max = 0;  // nat/redir/masq; 0 = absent
  std::uint32_t key = 0;  // meta/ct key, payload base, cmp/range op, reject type, nat type, verdict code
  std::uint32_t offset = 0, len = 0;
  std::uint32_t dreg = 1;  // immediate, meta_load, payload (a concatenated key fills several registers)
  std::uint32_t set_id = 0;
  std::uint32_t burst = 0, level = 0, code = 0, family = 0;
  RegValue data{}, data_to{};
  std::uint64_t rate = 0, unit = 0;
  ir::SharedString text{};  // lookup set name, jump/goto chain, log prefix (8 bytes: most have none)
};

// A rule's nft syntax, statement by statement, in one block: each statement after its length (a Calico
// policy of 10,000 rules has 70,000 statements; as strings of their own, most took a block).
class Words {
 public:
  Words() = default;
  Words(std::initializer_list<std::string_view> words) {
    for (std::string_view word : words) push_back(word);
  }
  void push_back(std::string_view word) {
    const auto length = static_cast<std::uint32_t>(word.size());
    joined_.append(reinterpret_cast<const char*>(&length), sizeof length).append(word);
  }
  void append(const Words& more) { joined_ += more.joined_; }
  // Each statement in turn.
  template <typename Visit>
  void each(Visit visit) const {
    for (std::size_t at = 0; at < joined_.size();) {
      std::uint32_t length = 0;
      joined_.copy(reinterpret_cast<char*>(&length), sizeof length, at);
      at += sizeof length;
      visit(std::string_view(joined_).substr(at, length));
      at += length;
    }
  }
  void append_text(std::string& out) const;  // as nft reads them: joined by spaces
  void shrink_to_fit() { joined_.shrink_to_fit(); }

 private:
  std::string joined_;
};

struct Rule {
  std::vector<Set> anon_sets{};  // created in the same batch, just before the rule
  std::vector<Expr> exprs{};
  Words words{};
  std::string comment{};  // its origin stamp, "file:+D:col policy#rule" (fwengine/stamps.hpp)
  std::string text() const;
  void append_text(std::string& out) const;  // text() at the end of out
};

struct Hook {
  std::string type{};  // filter, nat
  std::uint32_t hooknum = 0;
  std::int32_t priority = 0;
};

struct Chain {
  std::string name{};
  std::optional<Hook> hook{};  // base chains only; their policy is always accept
  std::vector<Rule> rules{};
  // Adds a finished rule with its lists cut to their length: built by appending, they held up to twice
  // what they need (a Calico policy of 10,000 rules: 27 MB of expressions where 17 are used).
  void append(Rule rule);
};

// A conntrack helper object (`ct helper NAME { type "ftp" protocol tcp; l3proto inet; }`), which
// `ct helper set "NAME"` assigns to a new connection.
struct CtHelper {
  std::string name, type;
  std::uint8_t l4proto = 6;
  friend bool operator==(const CtHelper&, const CtHelper&) = default;
};

struct Table {
  std::vector<CtHelper> helpers;
  std::vector<Set> sets;
  std::vector<Chain> chains;
  // The whole table in `nft -f` syntax, starting with add/delete/add so that loading it replaces ours.
  std::string text() const;
};

std::string hook_name(std::uint32_t hooknum);

}  // namespace fwe::nft
