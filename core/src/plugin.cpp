// plugin.cpp - key functions of the plugin interfaces live in libfwcore, so their vtables and
// typeinfo are unique across the engine and every plugin.
#include "fwengine/plugin.hpp"

#include <algorithm>

namespace fwe {

Frontend::~Frontend() = default;
Backend::~Backend() = default;
Plan::~Plan() = default;

std::string Plan::listing(std::string_view ir_hash) const {
  return text(ir_hash);
}
SourceWatch::~SourceWatch() = default;

std::unique_ptr<SourceWatch> Frontend::watch(const FrontendRequest&) {
  return nullptr;
}

bool Frontend::write(const ir::Ruleset&, const std::string&, Diagnostics& diag) {
  diag.error({}, "this frontend cannot write its own format", "choose another --to");
  return false;
}

bool Capabilities::supports(ir::Stage s) const {
  return std::find(stages.begin(), stages.end(), s) != stages.end();
}
bool Capabilities::supports(ir::MatchKind m) const {
  return std::find(matches.begin(), matches.end(), m) != matches.end();
}
bool Capabilities::supports(ir::ActionKind a) const {
  return std::find(actions.begin(), actions.end(), a) != actions.end();
}

}  // namespace fwe
