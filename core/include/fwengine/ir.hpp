// fwengine/ir.hpp - the one intermediate representation every frontend produces and every backend
// consumes. Its meaning is defined in docs/ir.md and, executably, by the reference evaluator (trace.hpp).
#pragma once

#include <array>
#include <atomic>
#include <concepts>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/slim_vector.hpp"

namespace fwe::ir {

// ---- closed vocabularies (vocab.def) ------------------------------------------------------------
enum class Stage : std::uint8_t {
#define FWE_STAGE(id, text) id,
#include "fwengine/vocab.def"
#undef FWE_STAGE
};
enum class Verdict : std::uint8_t {
#define FWE_VERDICT(id, text) id,
#include "fwengine/vocab.def"
#undef FWE_VERDICT
};
enum class MatchKind : std::uint8_t {
#define FWE_MATCH(id, text) id,
#include "fwengine/vocab.def"
#undef FWE_MATCH
};
enum class ActionKind : std::uint8_t {
#define FWE_ACTION(id, text) id,
#include "fwengine/vocab.def"
#undef FWE_ACTION
};
enum class CtState : std::uint8_t {
#define FWE_CTSTATE(id, text) id,
#include "fwengine/vocab.def"
#undef FWE_CTSTATE
};
enum class CtStatus : std::uint8_t {
#define FWE_CTSTATUS(id, text) id,
#include "fwengine/vocab.def"
#undef FWE_CTSTATUS
};
enum class RpfMode : std::uint8_t {
#define FWE_RPF(id, text) id,
#include "fwengine/vocab.def"
#undef FWE_RPF
};

inline constexpr std::size_t kStageCount = static_cast<std::size_t>(Stage::snat) + 1;
inline constexpr std::size_t kMatchKindCount = static_cast<std::size_t>(MatchKind::rpf) + 1;
inline constexpr std::size_t kActionKindCount = static_cast<std::size_t>(ActionKind::tcp_mss_clamp) + 1;
inline constexpr std::size_t kCtStateCount = static_cast<std::size_t>(CtState::untracked) + 1;
inline constexpr std::size_t kCtStatusCount = static_cast<std::size_t>(CtStatus::snat) + 1;
inline constexpr std::size_t kRpfModeCount = static_cast<std::size_t>(RpfMode::loose) + 1;

std::string_view to_string(Stage);
std::string_view to_string(Verdict);
std::string_view to_string(MatchKind);
std::string_view to_string(ActionKind);
std::string_view to_string(CtState);
std::string_view to_string(CtStatus);
std::string_view to_string(RpfMode);
std::optional<Stage> parse_stage(std::string_view);
std::optional<Verdict> parse_verdict(std::string_view);
std::optional<ActionKind> parse_action(std::string_view);
std::optional<CtState> parse_ct_state(std::string_view);
std::optional<CtStatus> parse_ct_status(std::string_view);
std::optional<RpfMode> parse_rpf_mode(std::string_view);
std::vector<std::string_view> stage_names();
std::vector<std::string_view> action_names();
std::vector<std::string_view> ct_state_names();
std::vector<std::string_view> ct_status_names();
std::vector<std::string_view> rpf_mode_names();
constexpr std::size_t index(Stage s) {
  return static_cast<std::size_t>(s);
}
// Stages a packet meets before conntrack sees it.
constexpr bool is_untracked(Stage s) {
  return s == Stage::untracked_in || s == Stage::untracked_out;
}

// A string that its copies share: one counted block (none when empty), 8 bytes in every holder, and a
// copy is no allocation. Used where many IR objects hold the same text (an origin's policy: all of a
// chain's rules, and the inline sets of a policy of 50,000 rules) or most leave it empty (a reject reply,
// a log prefix, a jump target). It reads like a const std::string and is set by assignment. The count
// is atomic: a rendering backend copies origins while core hashes the same IR on another thread.
class SharedString {
 public:
  SharedString() = default;
  SharedString(std::string value) : block_(value.empty() ? nullptr : new Block{std::move(value)}) {}
  SharedString(std::string_view value) : SharedString(std::string(value)) {}
  SharedString(const char* value) : SharedString(std::string(value)) {}
  SharedString(const SharedString& other) noexcept : block_(other.block_) {
    if (block_) block_->holders.fetch_add(1, std::memory_order_relaxed);
  }
  SharedString(SharedString&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  SharedString& operator=(SharedString other) noexcept {
    std::swap(block_, other.block_);
    return *this;
  }
  ~SharedString() {
    if (block_ && block_->holders.fetch_sub(1, std::memory_order_acq_rel) == 1) delete block_;
  }

  const std::string& str() const { return block_ ? block_->text : empty_string(); }
  operator const std::string&() const { return str(); }
  operator std::string_view() const { return str(); }
  bool empty() const { return block_ == nullptr; }
  std::size_t size() const { return str().size(); }
  const char* c_str() const { return str().c_str(); }
  bool starts_with(std::string_view prefix) const { return str().starts_with(prefix); }
  std::string substr(std::size_t pos, std::size_t count = std::string::npos) const {
    return str().substr(pos, count);
  }
  std::string::const_iterator begin() const { return str().begin(); }
  std::string::const_iterator end() const { return str().end(); }

  friend bool operator==(const SharedString& a, const SharedString& b) {
    return a.block_ == b.block_ || a.str() == b.str();
  }
  friend bool operator==(const SharedString& a, const std::string& b) { return a.str() == b; }
  friend bool operator==(const SharedString& a, std::string_view b) { return a.str() == b; }
  friend bool operator==(const SharedString& a, const char* b) { return a.str() == b; }
  friend std::string operator+(const SharedString& a, std::string_view b) { return a.str() + std::string(b); }
  friend std::string operator+(std::string_view a, const SharedString& b) { return std::string(a) + b.str(); }
  friend std::ostream& operator<<(std::ostream& out, const SharedString& s);

 private:
  struct Block {
    const std::string text;
    std::atomic<std::uint32_t> holders{1};
  };
  static const std::string& empty_string() {
    static const std::string empty;
    return empty;
  }
  Block* block_ = nullptr;
};

// ---- where every piece came from ----------------------------------------------------------------
struct Origin {
  // Built as {loc, policy, rule}; the members are in another order, which packs them into 24 bytes.
  Origin() = default;
  Origin(SourceLoc loc, SharedString policy = {}, std::int32_t rule = -1)
      : loc(loc), rule(rule), policy(std::move(policy)) {}
  SourceLoc loc;           // file indexes Ruleset::files
  std::int32_t rule = -1;  // index of the rule inside its policy, -1 if none
  SharedString policy;     // e.g. "GlobalNetworkPolicy default-rules", "zone public"
};

// ---- addresses and ports ------------------------------------------------------------------------
enum class Family : std::uint8_t { any, ipv4, ipv6 };
std::string_view to_string(Family);

struct IpAddr {
  Family family = Family::ipv4;          // ipv4 or ipv6, never any
  std::array<std::uint8_t, 16> bytes{};  // network order; IPv4 uses the first 4 bytes
  std::size_t width() const { return family == Family::ipv4 ? 32 : 128; }
  friend auto operator<=>(const IpAddr&, const IpAddr&) = default;
};
std::optional<IpAddr> parse_ip(std::string_view);
std::string to_string(const IpAddr&);

struct Cidr {
  IpAddr addr;  // host bits are zero
  std::uint8_t prefix = 0;
  friend auto operator<=>(const Cidr&, const Cidr&) = default;
};
// "10.0.0.0/8", "2001:db8::/32"; a bare address is a /32 or /128. With strict, host bits must be zero;
// otherwise they are cleared.
std::optional<Cidr> parse_cidr(std::string_view, bool strict = true);
std::string to_string(const Cidr&);
bool contains(const Cidr&, const IpAddr&);

// A named set of CIDRs, IPv4 and IPv6 together. After core's normalise pass the list is sorted
// (IPv4 first), without overlaps or mergeable neighbours - what the kernel's interval sets require.
struct AddrSet {
  SlimVector<Cidr> cidrs;  // 8 bytes: a policy of 50,000 rules may hold 50,000 inline sets
  Origin origin;
  bool has(Family f) const;
  bool contains(const IpAddr&) const;
};

struct PortRange {
  std::uint16_t lo = 0, hi = 0;  // inclusive
  friend auto operator<=>(const PortRange&, const PortRange&) = default;
};
using PortSet = std::vector<PortRange>;  // sorted and merged after normalise
bool contains(const PortSet&, std::uint16_t port);

// Interface name as nft/iptables know it: exact, or a prefix written "eth+" (prefix = true).
struct IfacePattern {
  std::string name;
  bool prefix = false;
  bool matches(std::string_view ifname) const;
  friend bool operator==(const IfacePattern&, const IfacePattern&) = default;
};
std::string to_string(const IfacePattern&);
IfacePattern parse_iface(std::string_view);  // "eth+" -> {eth, prefix}
// Whether Linux could give an interface this name (dev_valid_name: 1 to 15 characters, not "." or "..",
// no space, control character, '/' or ':'), leaving out '+' and '*' (patterns) and the quotes and
// backslash no backend can write. The name of a pattern is checked without its '+'.
bool valid_iface_name(std::string_view);

// The length of the valid UTF-8 sequence text starts with (RFC 3629: no overlong form, surrogate or code
// point past U+10FFFF), 0 for none.
std::size_t utf8_length(std::string_view text);

// A log prefix as every backend writes it to the kernel: at most max_bytes, cut before a character
// rather than inside one; a quote becomes ', a backslash / and a control character _ (nft and iptables
// write the prefix quoted, and a log line should not break).
std::string kernel_log_prefix(std::string_view prefix, std::size_t max_bytes);

// text with each byte that starts no valid UTF-8 sequence replaced by U+FFFD: a file name need not be
// UTF-8, and JSON must be.
std::string with_valid_utf8(std::string text);

// The length of a character at the start of text that breaks or ends a line where fwengine writes a
// name (a kernel listing, the log, a comment migrate writes): a C0 or C1 control character, DEL, or
// U+2028/U+2029 (UTF-8); 0 for any other.
std::size_t line_breaking_character(std::string_view text);
bool has_line_breaking_character(std::string_view text);
// text with each such character replaced by '?', for one line of a comment.
std::string on_one_line(std::string_view text);

using MacAddr = std::array<std::uint8_t, 6>;
std::optional<MacAddr> parse_mac(std::string_view);
std::string to_string(const MacAddr&);

// ---- rules --------------------------------------------------------------------------------------
// The packet's address is in a set of the ruleset, or in one CIDR written in place: most rules name one
// address or network, and a set of its own for each (a map entry and a block for one CIDR) was a third
// of the IR of a policy of 50,000 rules.
struct AddrMatch {
  AddrMatch() = default;
  AddrMatch(bool negate, SharedString set) : set_name(std::move(set)), negate(negate) {}
  AddrMatch(bool negate, const Cidr& cidr) : cidr(cidr), negate(negate), in_place_(true) {}
  SharedString set_name;  // a key of Ruleset::sets, unless in_place()
  Cidr cidr;              // only in_place()
  bool negate = false;
  bool in_place() const { return in_place_; }
  friend bool operator==(const AddrMatch&, const AddrMatch&) = default;

 private:
  // Said by the constructor alone: an empty set name stays an unknown set (verify refuses it), never a
  // CIDR of default value (0.0.0.0/0) that would match every IPv4 packet.
  bool in_place_ = false;
};
struct PortMatch {
  bool negate = false;
  PortSet ports;
  friend bool operator==(const PortMatch&, const PortMatch&) = default;
};
// Any of them, or all for the negated ones (8 bytes each in every rule: most rules have few of them).
using AddrMatches = SlimVector<AddrMatch>;
using PortMatches = SlimVector<PortMatch>;
struct IcmpMatch {
  bool negate = false;  // "icmp, but not this type/code": still only matches ICMP packets
  bool v6 = false;      // ICMPv6 (protocol 58) rather than ICMP (protocol 1)
  std::optional<std::uint8_t> type;
  std::optional<std::uint8_t> code;  // only with type
  friend bool operator==(const IcmpMatch&, const IcmpMatch&) = default;
};
// An optional held out of line, for the matches few rules (or endpoints) have: 8 bytes in every one
// instead of the value's 32-56 (a policy of 50,000 rules holds 50,000 Matches). Copies are deep; it
// reads like std::optional.
template <typename T>
class Boxed {
  // What may be assigned or compared as a value: not another Boxed, not nullopt, not an optional.
  template <typename U>
  static constexpr bool is_value = !std::is_same_v<std::remove_cvref_t<U>, Boxed> &&
                                   !std::is_same_v<std::remove_cvref_t<U>, std::nullopt_t> &&
                                   !std::is_same_v<std::remove_cvref_t<U>, std::optional<T>>;

 public:
  Boxed() = default;
  Boxed(std::nullopt_t) {}
  template <typename U = T>  // = T: a braced list, as for std::optional
  requires(is_value<U>&& std::is_constructible_v<T, U&&>) Boxed(U&& value)
      : value_(std::make_unique<T>(std::forward<U>(value))) {}
  Boxed(std::optional<T> value) : value_(value ? std::make_unique<T>(std::move(*value)) : nullptr) {}
  Boxed(const Boxed& other) : value_(other ? std::make_unique<T>(*other) : nullptr) {}
  Boxed(Boxed&&) noexcept = default;
  Boxed& operator=(const Boxed& other) {
    if (this != &other) value_ = other ? std::make_unique<T>(*other) : nullptr;
    return *this;
  }
  Boxed& operator=(Boxed&&) noexcept = default;
  template <typename U = T>
  requires(is_value<U>&& std::is_constructible_v<T, U&&>) Boxed& operator=(U&& value) {
    value_ = std::make_unique<T>(std::forward<U>(value));
    return *this;
  }
  ~Boxed() = default;

  bool has_value() const { return value_ != nullptr; }
  explicit operator bool() const { return has_value(); }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }
  T* operator->() { return value_.get(); }
  const T* operator->() const { return value_.get(); }
  template <typename... Args>
  T& emplace(Args&&... args) {
    value_ = std::make_unique<T>(std::forward<Args>(args)...);
    return *value_;
  }
  void reset() { value_.reset(); }

  friend bool operator==(const Boxed& a, const Boxed& b) {
    return a.has_value() == b.has_value() && (!a || *a == *b);
  }
  friend bool operator==(const Boxed& a, std::nullopt_t) { return !a; }
  template <typename U>  // a value it could hold: comparing with anything else is not asked for
  requires(is_value<U>&& std::is_constructible_v<T, const U&>) friend bool operator==(const Boxed& a,
                                                                                      const U& value) {
    return a && *a == value;
  }

 private:
  std::unique_ptr<T> value_;
};

struct RateLimit {
  std::uint32_t rate = 0;
  std::string unit = "second";  // second, minute, hour, day
  std::uint32_t burst = 0;      // 0 = backend default
  friend bool operator==(const RateLimit&, const RateLimit&) = default;
};

// All present criteria must hold. Lists of address and port matches are ANDed (Calico's nets and
// notNets are two entries); inside one entry the set is an OR.
struct Match {
  Boxed<std::vector<IfacePattern>> iif, oif;           // any of the patterns
  std::optional<std::vector<std::uint8_t>> protocols;  // L4 protocol numbers, any of them
  AddrMatches src_addr, dst_addr;
  PortMatches src_port, dst_port;  // only match TCP/UDP/SCTP/UDPLite packets
  Boxed<std::vector<CtState>> ct_states;
  Boxed<std::vector<MacAddr>> src_mac;
  Boxed<std::string> pkt_type;             // unicast, broadcast, multicast
  Boxed<RateLimit> rate_limit;             // matches while under the rate
  Boxed<std::vector<CtStatus>> ct_status;  // any of them: the connection was NATed that way
  // The destination port of the connection's original direction, before any DNAT: only packets with
  // ports match, as for dst_port.
  PortMatches ct_orig_dport;
  std::optional<std::uint32_t> mark_value;
  std::uint32_t mark_mask = 0xffffffff;
  std::optional<IcmpMatch> icmp;
  // The host routes the packet's source back out of the interface it came in on (strict) or out of any
  // interface (loose): the reverse-path check. Negated, it holds for spoofed sources.
  std::optional<RpfMode> rpf;
  Family family = Family::any;
  // The negations sit together at the end, where they take one byte each rather than a padded word.
  bool iif_negate = false, oif_negate = false, protocol_negate = false, ct_negate = false,
       src_mac_negate = false, mark_negate = false, rpf_negate = false;
  friend bool operator==(const Match&, const Match&) = default;
};

// Parts of a match that a backend may look up in a set instead (a merged run of rules).
struct MatchParts {
  bool iif = false, oif = false, protocols = false, addresses = false, ports = false;
};
// m without `parts` (and their negations), the rest as it is: a merged run's rules match the rest
// alike. Cheaper than copying m and clearing the parts, which copies them first.
Match without(const Match& m, MatchParts parts);

struct Action {
  SharedString reject_with;      // reject: icmp-port-unreachable (default), tcp-reset, icmp-host-prohibited,
                                 //   icmp-net-prohibited, icmp-admin-prohibited, icmp6-adm-prohibited, ...
  SharedString log_prefix;       // log
  SharedString target;           // jump: chain name; ct-helper: helper name
  std::uint32_t mark_value = 0;  // set-mark
  std::uint32_t mark_mask = 0xffffffff;
  std::optional<IpAddr> nat_addr;     // dnat, snat
  std::optional<PortRange> nat_port;  // dnat, redirect, snat, masquerade
  std::uint16_t mss = 0;              // tcp-mss-clamp: the MSS TCP SYNs get at most; 0: the route's MTU's
  ActionKind kind = ActionKind::accept;
  std::uint8_t log_level = 4;  // log: syslog level (4 = warning)
  friend bool operator==(const Action&, const Action&) = default;
};

struct Rule {
  Match match;
  Action action;
  Origin origin;
};

// A named, ordered list of rules: one policy in one direction, a zone's rules, a failsafe list.
struct Chain {
  std::string name;
  std::vector<Rule> rules;
  Origin origin;
};

// An ordered list of chains (Calico: a tier). `pass` leaves the group; a group whose chains all end
// without verdict or pass ends with on_end (continue, or drop/reject for Calico's end-of-tier).
struct Group {
  std::string name;
  std::vector<std::string> chains;  // keys of Ruleset::chains
  Verdict on_end = Verdict::continue_;
  std::string reject_with;
  Origin origin;
};

// What the conntrack prelude of an endpoint does before anything else.
enum class Conntrack : std::uint8_t {
  none,                             // no prelude
  accept_established,               // established/related -> accept
  accept_established_drop_invalid,  // and invalid -> drop
};
std::string_view to_string(Conntrack);
std::optional<Conntrack> parse_conntrack(std::string_view);

struct EndpointMatch {
  std::optional<IfacePattern> iif, oif;         // absent: any interface
  std::optional<std::string> src_set, dst_set;  // keys of Ruleset::sets
  Boxed<std::vector<MacAddr>> src_mac;
};

// A classifier plus what to do with the packets it classifies, for one stage and section.
struct Endpoint {
  std::string name;
  EndpointMatch match;
  Conntrack conntrack = Conntrack::none;
  bool failsafe = false;       // core places this stage's failsafe chain after the prelude
  std::string failsafe_chain;  // filled by core (inject_failsafe); empty = none
  std::vector<Group> groups;
  Verdict default_verdict = Verdict::continue_;
  std::string reject_with;
  Origin origin;
};

// Endpoints are tried in order and the first that matches classifies the packet. A section whose
// endpoints all miss leaves the stage's verdict as it was. See docs/ir.md for how sections combine.
struct Section {
  std::string name;
  bool honour_allow = false;  // a packet an earlier stage or section allowed is accepted here at once
  std::vector<Endpoint> endpoints;
};

struct StageDef {
  std::vector<Section> sections;
  bool empty() const { return sections.empty(); }
};

// Ports that no policy can close (Calico's failsafe; firewalld has none). Core turns them into chains.
struct FailsafeEntry {
  std::uint8_t protocol = 6;
  std::uint16_t port = 0;
  std::optional<Cidr> net;  // inbound: source; outbound: destination
  Origin origin;
};
struct Failsafe {
  std::vector<FailsafeEntry> inbound, outbound;
};

struct Ruleset {
  std::string frontend;            // who made it (not part of the hash)
  std::vector<std::string> files;  // Origin::loc.file indexes this (not part of the hash)
  std::string source_revision;     // the datastore revision it was read at, "" for files (not hashed)
  // Ordered by name; looked up by views without a copy (a large policy looks names up ~50 times a rule).
  std::map<std::string, AddrSet, std::less<>> sets;
  std::map<std::string, Chain, std::less<>> chains;
  std::array<StageDef, kStageCount> stages;
  Failsafe failsafe;

  StageDef& stage(Stage s) { return stages[index(s)]; }
  const StageDef& stage(Stage s) const { return stages[index(s)]; }
  const AddrSet* find_set(std::string_view name) const;
  const Chain* find_chain(std::string_view name) const;
};

// The CIDRs a match looks the address up in: its set's, or its one CIDR (none for a set rs lacks).
std::span<const Cidr> addresses(const Ruleset& rs, const AddrMatch& match);
// Its text in messages and listings: the set's name, or the CIDR written in place.
std::string to_string(const AddrMatch& match);

// Calls visit(origin) for every chain, rule, endpoint and group of ruleset, const or not. Sets and failsafe
// entries are left to the caller: only some walks want them.
template <class R, class Visit>
requires std::same_as<std::remove_const_t<R>, Ruleset>
void for_each_rule_origin(R& ruleset, Visit&& visit) {
  for (auto& [name, chain] : ruleset.chains) {
    visit(chain.origin);
    for (auto& rule : chain.rules) visit(rule.origin);
  }
  for (auto& stage : ruleset.stages)
    for (auto& section : stage.sections)
      for (auto& endpoint : section.endpoints) {
        visit(endpoint.origin);
        for (auto& group : endpoint.groups) visit(group.origin);
      }
}

// The packet-mark bits the backends keep for their own marks (the allow mark, a pass leaving its group,
// ...): a policy neither tests nor sets them, so every backend sees the same mark as trace does.
inline constexpr std::uint32_t kReservedMarkBits = 0xf0000000;

// Well-known chain names core creates for the failsafe part (no policy's chain may have them).
inline constexpr std::string_view kFailsafeIn = "failsafe-in";
inline constexpr std::string_view kFailsafeOut = "failsafe-out";
inline constexpr std::string_view kFailsafeUntrackedIn = "failsafe-untracked-in";
inline constexpr std::string_view kFailsafeUntrackedOut = "failsafe-untracked-out";

// Protocol names the IR prints and reads ("tcp" -> 6); numbers print as numbers.
std::optional<std::uint8_t> parse_protocol(std::string_view);
std::string protocol_name(std::uint8_t);
// ICMP and ICMPv6 type names as nftables writes them ("echo-request" is 8, or 128 for ICMPv6).
std::optional<std::uint8_t> parse_icmp_type(std::string_view name, bool v6);
std::optional<std::string_view> icmp_type_name(std::uint8_t type, bool v6);
std::vector<std::string_view> icmp_type_names(bool v6);
// A message by the name nft gives its type, or iptables and firewalld give it ("port-unreachable":
// type 3 code 3, or type 1 code 4 for ICMPv6): the type, and the code where the name implies one.
struct IcmpMessage {
  std::uint8_t type = 0;
  std::optional<std::uint8_t> code;
};
std::optional<IcmpMessage> parse_icmp_message(std::string_view name, bool v6);
std::vector<std::string_view> icmp_message_names(bool v6);
bool protocol_has_ports(std::uint8_t);
// What a reject of type `with` (an Action's reject_with; empty is the default) sends back to a packet of
// `family`, by iptables' name for it: each type gives the packet's own family's error (an IPv4-only type
// gives IPv6 adm-prohibited, as nft's icmpx does), and tcp-reset gives a TCP packet a reset and any other
// the default error, as every backend sends them; nullopt for a type the backends do not take.
std::optional<std::string_view> reject_reply(std::string_view with, Family family, std::uint8_t protocol);

}  // namespace fwe::ir
