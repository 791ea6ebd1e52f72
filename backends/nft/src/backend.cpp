// backend.cpp - the `nft` backend plugin: render = translate to the nftables object model, apply = one
// netlink transaction replacing table inet fwengine, read_back = list it with counters and origins.
#include "backend.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <sstream>

#include "applied.hpp"
#include "fwengine/stamps.hpp"
#include "netlink.hpp"
#include "translate.hpp"

namespace fwe::nft {
namespace {

// Every rule's chain and stamp, and every counted element's set and stamp. The lists are counted first:
// a 50,000-rule policy has as many elements, and a list grown by doubling held twice their room.
std::pair<Stamps, Stamps> stamps_of(const Table& table) {
  auto counted = [](const Element& element) { return !element.interval_end; };
  std::size_t rule_count = 0, element_count = 0;
  for (const auto& chain : table.chains) rule_count += chain.rules.size();
  for (const auto& set : table.sets)
    if (set.counters)
      element_count +=
          static_cast<std::size_t>(std::count_if(set.elements.begin(), set.elements.end(), counted));
  Stamps rules, elements;
  rules.reserve(rule_count);
  elements.reserve(element_count);
  for (const auto& chain : table.chains)
    for (const auto& rule : chain.rules) rules.emplace_back(chain.name, rule.comment);
  for (const auto& set : table.sets)
    if (set.counters)
      for (const auto& element : set.elements)
        if (counted(element)) elements.emplace_back(set.name, element.comment);
  return {std::move(rules), std::move(elements)};
}

// The name of the empty chain that stamps an apply (backend.hpp): a function of its own, so that the
// stamps it digests are gone before the transaction, the peak of an apply.
std::string marker_of(const Table& table, std::string_view ir_hash) {
  auto [rules, elements] = stamps_of(table);
  const std::string hash = ir_hash.empty() ? "none" : std::string(ir_hash.substr(0, 64));
  const std::size_t count = rules.size() + elements.size();
  return std::string(kMarkerPrefix) + hash + "-" + std::to_string(count) + "-" +
         rules_digest(std::move(rules), elements);
}

// Whether a set or chain has the name apply gives (content_address): NAME.<16 hex digits>. Anything else
// in our table was made by someone else (or by a fwengine before 2026-12-07, with 8), and the next apply
// removes it.
bool named_by_apply(std::string_view name) {
  const auto dot = name.rfind('.');
  return dot != std::string_view::npos && name.size() - dot == 17 &&
         name.substr(dot + 1).find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// Lines of NftPlan::listing and of read_back's text. diff compares them up to the tab, and a rule by its
// chain and stamp, not its position: a rule inserted by hand is one line, not a shift of all below it.
std::string chain_line(std::string_view chain) {
  return "chain " + std::string(chain);
}
std::string rule_line(std::string_view chain, std::int32_t index, std::string_view stamp) {
  return "  " + std::string(chain) + "  " +
         (stamp.empty() ? std::string("(no comment: not a rule of fwengine's)") : std::string(stamp)) +
         "\t#" + std::to_string(index);
}
std::string set_line(std::string_view set) {
  return "set " + std::string(set);
}

}  // namespace

std::string NftPlan::listing(std::string_view) const {
  std::string out;
  for (const auto& set : table_.sets) out += set_line(set.name) + '\n';
  for (const auto& chain : table_.chains) {
    out += chain_line(chain.name) + '\n';
    for (std::size_t i = 0; i < chain.rules.size(); ++i)
      out += rule_line(chain.name, static_cast<std::int32_t>(i), chain.rules[i].comment) + "  " +
             chain.rules[i].text() + '\n';
  }
  return out;
}

Capabilities NftBackend::capabilities() const {
  Capabilities caps;
  for (std::size_t s = 0; s < ir::kStageCount; ++s) caps.stages.push_back(static_cast<ir::Stage>(s));
  for (std::size_t m = 0; m < ir::kMatchKindCount; ++m) caps.matches.push_back(static_cast<ir::MatchKind>(m));
  for (std::size_t a = 0; a < ir::kActionKindCount; ++a)
    caps.actions.push_back(static_cast<ir::ActionKind>(a));
  caps.log_prefix_max = kMaxLogPrefix;
  return caps;
}

std::unique_ptr<Plan> NftBackend::render(const ir::Ruleset& ruleset, Diagnostics& diag) {
  reject_unknown_backend_options(context_, "nft", {"counters"}, diag);
  constexpr std::array kCounters{Counters::element, Counters::rule};
  const Counters counters =
      kCounters[backend_option_choice(context_, "nft", "counters", {"element", "rule"},
                                      "element: hits per source rule (a per-CPU counter in every set "
                                      "element); rule: per merged rule only, less kernel memory",
                                      diag)];
  if (diag.has_errors()) return nullptr;
  return std::make_unique<NftPlan>(translate(ruleset, diag, counters));
}

ApplyReport NftBackend::apply(const Plan& plan, const ApplyOptions& options) {
  const auto* ours = dynamic_cast<const NftPlan*>(&plan);
  if (!ours) throw RuntimeError("nft: the plan was rendered by another backend");
  const Table& table = ours->table();
  // The kernel keeps no comment changes on tables or chains, so the stamp is a name: an empty chain.
  const std::string marker = marker_of(table, options.ir_hash);
  std::optional<AppliedSets> previous;
  std::optional<ContentRecord> content;
  if (!options.full && !options.state_dir.empty()) {
    previous = AppliedSets::load(options.state_dir);
    content = ContentRecord::load(options.state_dir);
  }
  ApplyReport report;
  Committed committed;
  try {
    committed = guarded([&] {
      return options.full
                 ? apply_table(connection(), table, marker)
                 : apply_table_incremental(connection(), table, marker, previous ? &*previous : nullptr,
                                           content ? &*content : nullptr);
    });
  } catch (const RuntimeError&) {
    // The record can be out of step with the kernel where no stamp shows it (an element deleted by
    // hand): a full replace needs no record. What the kernel refuses in both is refused again.
    if (options.full || !previous) throw;
    committed = guarded([&] { return apply_table(connection(), table, marker); });
  }
  report.transaction_ms = committed.ms;
  if (!options.state_dir.empty()) AppliedSets::save(options.state_dir, table, marker);
  // The ruleset is in place whatever this does. Without the record, the next incremental apply
  // replaces the table, as it cannot tell an edit by hand.
  try {
    auto record = guarded([&] {
      return record_content(connection(), marker, set_elements_digest(table), committed, table,
                            content ? &*content : nullptr);
    });
    if (record && !options.state_dir.empty()) record->save(options.state_dir);
  } catch (const RuntimeError&) {
  }
  return report;
}

Connection& NftBackend::connection() {
  if (!connection_) connection_ = std::make_unique<Connection>();
  return *connection_;
}

KernelState NftBackend::read_back() {
  return read(Elements::all);
}

std::vector<RuleCounter> NftBackend::counters() {
  return read(Elements::counted).counters;
}

KernelState NftBackend::read(Elements elements) {
  Listing listing = guarded([&] { return list_table(connection(), elements); });
  KernelState state;
  state.present = listing.present;
  if (!listing.present) return state;
  // The apply's marker chain, kMarkerPrefix + "<hash>-<rules>-<digest>", and the chain named after it
  // + "-<content>" once the apply recorded that (an older fwengine renamed the marker instead).
  std::set<std::string_view> markers;
  std::vector<std::string_view> contents;
  for (const auto& chain : listing.chains)
    if (chain.name.starts_with(kMarkerPrefix)) {
      auto [marker, content] = split_marker(chain.name);
      markers.insert(marker);
      if (!content.empty()) contents.push_back(content);
    }
  std::vector<std::string> stamp_fields;
  if (markers.size() == 1 && contents.size() <= 1) {
    std::istringstream fields(std::string(markers.begin()->substr(kMarkerPrefix.size())));
    for (std::string field; std::getline(fields, field, '-');) stamp_fields.push_back(field);
    if (!contents.empty()) stamp_fields.emplace_back(contents.front());
  }
  Stamps stamps, counted_elements;
  auto count = [&](const std::string& chain, std::int32_t index, const std::string& stamp,
                   std::uint64_t packets, std::uint64_t bytes) {
    RuleCounter counter;
    counter.chain = chain;
    counter.rule = index;
    counter.origin.policy = listing.positions.absolute(stamp);
    counter.where = stamps::where_of(counter.origin.policy);
    counter.packets = packets;
    counter.bytes = bytes;
    state.counters.push_back(counter);
  };
  // A merged rule counts per element of its set: each element stands for one source rule.
  std::map<std::string, std::vector<const ListedElement*>> counted;
  for (const auto& element : listing.elements) counted[element.set].push_back(&element);
  for (const auto& rule : listing.rules) {
    stamps.emplace_back(rule.chain, rule.comment);
    if (rule.counted) count(rule.chain, rule.index, rule.comment, rule.packets, rule.bytes);
    for (const auto& set : rule.lookups)
      if (auto it = counted.find(set); it != counted.end()) {
        auto file = listing.set_comments.find(set);
        for (const ListedElement* element : it->second) {
          counted_elements.emplace_back(set, element->comment);
          bool relative = file != listing.set_comments.end() && element->comment.starts_with(':');
          count(rule.chain, rule.index, relative ? file->second + element->comment : element->comment,
                element->packets, element->bytes);
        }
        counted.erase(it);  // a set shared by a run's rules (one per reject form) counts once
      }
  }
  // In the form of NftPlan::listing (the marker chain is a record, not something packets meet).
  std::map<std::string_view, std::vector<const ListedRule*>> rules_of;
  for (const auto& rule : listing.rules) rules_of[rule.chain].push_back(&rule);
  for (const auto& set : listing.sets) state.text += set_line(set) + '\n';
  for (const auto& chain : listing.chains) {
    if (chain.name.starts_with(kMarkerPrefix)) continue;
    state.text += chain_line(chain.name) + '\n';
    for (const ListedRule* rule : rules_of[chain.name])
      state.text += rule_line(rule->chain, rule->index, rule->comment) + '\n';
  }
  if (listing.dormant)
    state.drift.push_back(
        "table inet fwengine is dormant: its chains see no packets; fwengine apply replaces it with a live "
        "one");
  if (stamp_fields.size() != 3 && stamp_fields.size() != 4) {
    state.drift.push_back(
        "table inet fwengine has no (or several) fwengine stamps: not written by one fwengine apply");
    return state;
  }
  state.ir_hash = stamp_fields[0] == "none" ? std::string{} : stamp_fields[0];
  const std::size_t held = stamps.size() + counted_elements.size();
  if (stamp_fields[1] != std::to_string(held))
    state.drift.push_back("applied " + stamp_fields[1] + " rules and counted elements, the kernel holds " +
                          std::to_string(held));
  else if (stamp_fields[2] != rules_digest(stamps, counted_elements))
    state.drift.push_back("rules were changed or reordered since apply (digest " + stamp_fields[2] +
                          " applied, " + rules_digest(stamps, counted_elements) + " now)");
  else if (stamp_fields.size() == 4 && stamp_fields[3].substr(0, 16) != listing.content)
    state.drift.push_back(
        "rules were changed in place since apply: their matches, verdicts or comments differ from what "
        "apply loaded (content " +
        stamp_fields[3].substr(0, 16) + " applied, " + listing.content +
        " now); fwengine apply puts them back");
  for (const auto& set : listing.sets)
    if (!named_by_apply(set))
      state.drift.push_back("set " + set +
                            " in table inet fwengine is not one fwengine made; fwengine apply "
                            "removes it");
  for (const auto& chain : listing.chains)
    if (!named_by_apply(chain.name) && !chain.name.starts_with(kMarkerPrefix))
      state.drift.push_back("chain " + chain.name +
                            " in table inet fwengine is not one fwengine made; fwengine apply removes it");
  // Content recorded before set elements were part of it is 16 digits long.
  std::uint64_t elements_now = 0;
  for (const auto& [set, digest] : listing.set_elements)
    if (named_by_apply(set)) elements_now += digest;
  if (elements == Elements::all && stamp_fields.size() == 4 && stamp_fields[3].size() == 32 &&
      stamp_fields[3].substr(16) != hex16(elements_now))
    state.drift.push_back("elements were added to or removed from fwengine's sets since apply (digest " +
                          stamp_fields[3].substr(16) + " applied, " + hex16(elements_now) +
                          " now); fwengine apply --full puts them back");
  return state;
}

void NftBackend::flush() {
  guarded([this] { return delete_table(connection()); });
}

}  // namespace fwe::nft
