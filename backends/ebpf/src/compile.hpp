// compile.hpp - the IR flattened into the tables the BPF programs read (fwe_shared.h). No kernel here.
//
// Every stage becomes one forward-only list of rules: per section an optional allow-mark check, the
// endpoints' classifiers (goto the endpoint's body), then each body: conntrack prelude, failsafe
// chain, groups (chains inlined; jumps inlined behind an inverted goto, return/pass as gotos),
// on_end and default. A verdict ends the section (DONE) or the packet (DROP). Stretches of rules that
// differ only in their address, protocols and port become one address-run rule over fwe_runs4/6 (or
// their exact twins).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fwe_shared.h"
#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::ebpf {

static_assert(sizeof(fwe_rule) == 208, "fwe_rule layout changed: update both sides");
static_assert(sizeof(fwe_lpm4_key) == 12 && sizeof(fwe_lpm6_key) == 24, "LPM key layout");
static_assert(sizeof(fwe_ct4_key) == 16 && sizeof(fwe_ct6_key) == 40 && sizeof(fwe_ct_value) == 2,
              "conntrack layout");
static_assert(sizeof(fwe_where_key) == 12, "origin key layout");
static_assert(sizeof(fwe_run4_key) == 16 && sizeof(fwe_run6_key) == 28 && sizeof(fwe_run_member) == 16,
              "address run layout");

inline constexpr std::size_t kMaxJumpDepth = 8;
// Shortest list of consecutive single-destination-port rules worth indexing by port.
inline constexpr std::size_t kMinPortRun = 8;
// Shortest stretch of rules worth one address-run lookup, and the most members one rule may add to it
// (CIDRs x ports x protocols).
inline constexpr std::size_t kMinAddressRun = 4;
inline constexpr std::size_t kMaxMembersPerRule = 256;
// Burst of a rate limit that gives none (nft's default).
inline constexpr std::uint32_t kDefaultBurst = 5;
// Set ids carry the generation in their top byte (see fwe_addr_match).
inline constexpr std::uint32_t kSetIndexBits = 24;

struct CompiledSet {
  std::string name;
  std::vector<ir::Cidr> cidrs;
  std::string used_at;  // file:line:col of the first rule or endpoint matching on it (refusals name it)
};

using PortBitmap = std::array<std::uint8_t, FWE_PORTSET_BYTES>;

// What one flattened rule stands for, for counters and listings.
struct RuleSource {
  ir::Stage stage;
  std::string what;  // "section/endpoint: chain#3 drop", "endpoint default accept", ...
};

struct Program {
  std::vector<fwe_rule> rules;
  std::vector<RuleSource> sources;  // parallel to rules
  std::array<fwe_stage_span, FWE_STAGE_COUNT> stages{};
  static_assert(FWE_STAGE_COUNT == ir::kStageCount, "fwe_shared.h lists the stages of vocab.def");
  std::vector<CompiledSet> sets;                                         // set index = position
  std::vector<std::vector<ir::IfacePattern>> iface_lists;                // list id = position + 1
  std::vector<PortBitmap> port_bitmaps;                                  // bitmap index = position
  std::vector<std::string> chains;                                       // chain id = position
  std::map<std::pair<std::uint32_t, std::int32_t>, std::string> wheres;  // (chain id, rule) -> file:line:col
  std::vector<fwe_portindex_key> port_index;    // gen 0; the loader sets the generation
  std::vector<std::uint32_t> port_index_first;  // parallel: the run's first rule for that port
  // Members of address runs (FWE_F_ADDR_RUN), generation 0 in `run`; the loader sets the generation.
  // Their `counter`s number them across all four lists. run4/run6 go into the tries (fwe_runs4/6),
  // exact4/exact6 (a run's members of a family with one prefix length, address masked) into the hashes.
  std::vector<fwe_run4_key> run4, exact4;
  std::vector<fwe_run6_key> run6, exact6;
  std::vector<fwe_run_member> run4_members, run6_members, exact4_members, exact6_members;  // parallel
  std::size_t run_members() const { return run4.size() + run6.size() + exact4.size() + exact6.size(); }
  std::vector<fwe_log_rule> logs;  // fwe_logs entries: fwe_rule.log - 1 = position
  // What the dataplane does differently (log rules' lines, ...), at the first rule it concerns.
  struct Note {
    SourceLoc where;
    std::string text;
  };
  std::vector<Note> notes;
  bool uses_rpf = false;  // the loader sets the generation's bit in fwe_config.rpf_gens
  // Where fwe_xdp goes (backend option xdp): the loader attaches it to the interfaces these name.
  std::vector<ir::IfacePattern> xdp_interfaces;
  // fwe_xdp drops what the untracked-in stage drops (allow_xdp): the loader sets the generation's bit in
  // fwe_config.xdp_gens; without it fwe_xdp passes everything on.
  bool xdp = false;

  std::string text() const;
  // What `diff` compares with the kernel's read-back, which lists the maps in the same form (namespace
  // listing below).
  std::string listing() const;
};

// The lines of Program::listing and of the kernel's read-back: per address set its index, size and a
// digest of its members; the address runs' members as one count and digest; per rule its stage,
// chain#rule and a digest of what it matches and does; per stage a digest of its rules in order.
// Jump targets, run, chain and bitmap indexes and generation tags are left out of the rule digests, so
// a changed rule is one line (and its stage's order line). Set indexes and interface-list ids stay in:
// the kernel knows sets by index and lists by the interface indexes they resolved to, so a new set or
// list used early in the policy renumbers those after it. Chain names as the kernel keeps them
// (FWE_NAME_LEN - 1 characters).
namespace listing {
std::uint64_t digest(std::uint64_t h, const void* bytes, std::size_t size);
inline constexpr std::uint64_t kSeed = 1469598103934665603ull;
// bitmap_digest(i): the digest of port bitmap i's bits; set_digest(i): of address set i's members. By
// content, not index: a set or bitmap added early does not change the lines of the rules after it.
// log_entry(i): a log rule's fwe_logs entry i, whose prefix and level stand in for its index.
template <typename BitmapDigest, typename SetDigest, typename LogEntry>
std::uint64_t rule(fwe_rule r, BitmapDigest bitmap_digest, SetDigest set_digest, LogEntry log_entry) {
  std::uint64_t h = kSeed;
  r.target = r.run_id = r.run_end = r.next_same = r.chain_id = 0;
  if (r.log) {
    const fwe_log_rule entry = log_entry(r.log - 1u);
    h = digest(h, &entry, sizeof entry);
    r.log = 1;
  }
  for (auto* m : {&r.src[0], &r.src[1], &r.dst[0], &r.dst[1]})
    if (m->used) {
      const std::uint64_t members = set_digest(m->set_id & ((1u << kSetIndexBits) - 1));
      h = digest(h, &members, sizeof members);
      m->set_id = 0;
    }
  for (auto* m : {&r.sport[0], &r.sport[1], &r.dport[0], &r.dport[1]})
    if (m->used && m->bitmap != FWE_NO_BITMAP) {
      const std::uint64_t bits = bitmap_digest(m->bitmap);
      h = digest(h, &bits, sizeof bits);
      m->bitmap = 0;
    }
  return digest(h, &r, sizeof r);
}
std::uint64_t cidr(const ir::Cidr& cidr);
// A member of an address run (exact: in a hash of one prefix length) and the rule it stands for.
std::uint64_t run_member(bool exact, std::uint32_t run, std::uint8_t proto, std::uint16_t port,
                         const ir::Cidr& cidr, const std::string& chain, std::int32_t rule);
std::string set_line(std::size_t members, std::uint64_t digest);
std::string runs_line(std::size_t members, std::uint64_t digest);
std::string rule_line(ir::Stage stage, const std::string& chain, std::int32_t rule, std::uint64_t digest);
// The order of a stage's rules: built from their lines' digests, in order.
std::uint64_t order(std::uint64_t h, std::uint64_t rule_digest);
std::string order_line(ir::Stage stage, std::size_t rules, std::uint64_t digest);
// A chain's name as the kernel's map of chain names keeps it.
std::string kept_name(const std::string& chain);
// The line of a generation whose untracked-in drops fwe_xdp makes (Program::xdp, fwe_config.xdp_gens).
inline const std::string kXdpLine = "xdp\tuntracked-in drops at XDP where the driver has it";
}  // namespace listing

std::vector<ir::Stage> supported_stages();
std::vector<ir::MatchKind> supported_matches();
std::vector<ir::ActionKind> supported_actions();

// Flattens a verified ruleset; refuses (diag, with the rule's origin) what the limits or the
// dataplane cannot take. The result is only usable when diag has no new errors.
Program compile(const ir::Ruleset&, Diagnostics&);

// With fwe_xdp asked for (program.xdp_interfaces): sets program.xdp where the untracked-in stage drops
// something and judges at XDP as at tc (no marks, rate limits or log rules: XDP has no skb mark, and a
// packet it lets through is judged again at tc, where a limit would be spent and a line logged twice);
// else a note says why not.
void allow_xdp(Program& program);

// A per-generation bit field of fwe_config (rpf_gens, xdp_gens) for writing `generation`: its own bit
// set as `on` says, the one of the generation in use kept.
std::uint32_t generation_bits(std::uint32_t bits, std::uint32_t generation, bool on);

// The generation-specific copy of a rule: set ids tagged with the generation.
fwe_rule for_generation(const fwe_rule&, std::uint32_t generation);

}  // namespace fwe::ebpf
