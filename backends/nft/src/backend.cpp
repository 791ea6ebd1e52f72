// backend.cpp - the `nft` backend plugin: render = translate to the nftables object model, apply = one
// netlink transaction replacing table inet fwengine, read_back = list it with counters and origins.
#include "backend.hpp"

#include <sstream>

#include "netlink.hpp"
#include "translate.hpp"

namespace fwe::nft {
namespace {

std::vector<std::pair<std::string, std::string>> stamps_of(const Table& table) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& chain : table.chains)
    for (const auto& rule : chain.rules) out.emplace_back(chain.name, rule.comment);
  return out;
}

constexpr std::string_view kMarkerPrefix = "fwengine-ir-";

// "file:line:col" at the start of a rule stamp, when it has one.
std::string where_of(const std::string& stamp) {
  std::string first = stamp.substr(0, stamp.find(' '));
  auto last_colon = first.rfind(':');
  if (last_colon == std::string::npos || last_colon == 0) return {};
  auto second_colon = first.rfind(':', last_colon - 1);
  return second_colon == std::string::npos ? std::string{} : first;
}

}  // namespace

Capabilities NftBackend::capabilities() const {
  Capabilities caps;
  for (std::size_t s = 0; s < ir::kStageCount; ++s) caps.stages.push_back(static_cast<ir::Stage>(s));
  for (std::size_t m = 0; m < ir::kMatchKindCount; ++m) caps.matches.push_back(static_cast<ir::MatchKind>(m));
  for (std::size_t a = 0; a < ir::kActionKindCount; ++a)
    if (static_cast<ir::ActionKind>(a) != ir::ActionKind::ct_helper)
      caps.actions.push_back(static_cast<ir::ActionKind>(a));
  return caps;
}

std::unique_ptr<Plan> NftBackend::render(const ir::Ruleset& ruleset, Diagnostics& diag) {
  return std::make_unique<NftPlan>(translate(ruleset, diag));
}

void NftBackend::apply(const Plan& plan, const ApplyOptions& options) {
  const auto* ours = dynamic_cast<const NftPlan*>(&plan);
  if (!ours) throw RuntimeError("nft: the plan was rendered by another backend");
  const Table& table = ours->table();
  auto stamps = stamps_of(table);
  // The kernel keeps no comment changes on tables or chains, so the stamp is a name: an empty chain.
  std::string hash = options.ir_hash.empty() ? "none" : options.ir_hash.substr(0, 64);
  std::string marker =
      std::string(kMarkerPrefix) + hash + "-" + std::to_string(stamps.size()) + "-" + rules_digest(stamps);
  if (options.full)
    apply_table(table, marker);
  else
    apply_table_incremental(table, marker);
}

KernelState NftBackend::read_back() {
  Listing listing = list_table();
  KernelState state;
  state.present = listing.present;
  if (!listing.present) return state;
  // kMarkerPrefix + "<hash>-<rules>-<digest>"
  std::vector<std::string> stamp_fields;
  for (const auto& chain : listing.chains)
    if (chain.rfind(kMarkerPrefix, 0) == 0) {
      std::istringstream fields(chain.substr(std::string_view(kMarkerPrefix).size()));
      for (std::string field; std::getline(fields, field, '-');) stamp_fields.push_back(field);
    }
  std::vector<std::pair<std::string, std::string>> stamps;
  std::ostringstream text;
  text << "table inet " << kTableName << "\n";
  for (const auto& rule : listing.rules) {
    stamps.emplace_back(rule.chain, rule.comment);
    RuleCounter counter;
    counter.chain = rule.chain;
    counter.rule = rule.index;
    counter.where = where_of(rule.comment);
    counter.origin.policy = rule.comment;
    counter.packets = rule.packets;
    counter.bytes = rule.bytes;
    state.counters.push_back(counter);
    text << "  " << rule.chain << "#" << rule.index << " packets " << rule.packets << " bytes " << rule.bytes
         << "  " << rule.comment << "\n";
  }
  state.text = text.str();
  if (stamp_fields.size() != 3) {
    state.drift.push_back(
        "table inet fwengine has no (or several) fwengine stamps: not written by one fwengine apply");
    return state;
  }
  state.ir_hash = stamp_fields[0] == "none" ? std::string{} : stamp_fields[0];
  if (stamp_fields[1] != std::to_string(stamps.size()))
    state.drift.push_back("applied " + stamp_fields[1] + " rules, the kernel holds " +
                          std::to_string(stamps.size()));
  else if (stamp_fields[2] != rules_digest(stamps))
    state.drift.push_back("rules were changed or reordered since apply (digest " + stamp_fields[2] +
                          " applied, " + rules_digest(stamps) + " now)");
  return state;
}

void NftBackend::flush() {
  delete_table();
}

}  // namespace fwe::nft
