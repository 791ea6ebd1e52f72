// diagnostics.cpp - formatting and collection of located messages.
#include "fwengine/diagnostics.hpp"

#include <algorithm>
#include <ostream>

namespace fwe {

Diagnostics::Diagnostics() {
  files_.emplace_back("<command line>");
}

std::uint32_t Diagnostics::add_file(std::string name) {
  auto it = std::find(files_.begin(), files_.end(), name);
  if (it != files_.end()) return static_cast<std::uint32_t>(it - files_.begin());
  files_.push_back(std::move(name));
  return static_cast<std::uint32_t>(files_.size() - 1);
}

const std::string& Diagnostics::file_name(std::uint32_t index) const {
  return index < files_.size() ? files_[index] : files_.front();
}

void Diagnostics::report(Severity severity, SourceLoc loc, std::string message, std::string hint) {
  if (severity == Severity::error) ++errors_;
  items_.push_back({severity, loc, std::move(message), std::move(hint)});
}

std::string Diagnostics::where(SourceLoc loc) const {
  std::string out = file_name(loc.file);
  if (loc.line > 0) {
    out += ':' + std::to_string(loc.line);
    if (loc.col > 0) out += ':' + std::to_string(loc.col);
  }
  return out;
}

std::string Diagnostics::format(const Diagnostic& d) const {
  static constexpr const char* kNames[] = {"note", "warning", "error"};
  std::string out = where(d.loc) + ": " + kNames[static_cast<int>(d.severity)] + ": " + d.message;
  if (!d.hint.empty()) out += " (" + d.hint + ")";
  return out;
}

Diagnostics Diagnostics::fresh() const {
  Diagnostics out;
  out.option_origins_ = option_origins_;
  std::size_t files = 1;  // <command line>, and the files up to the last an option origin is in
  for (const auto& origin : option_origins_)
    files = std::max<std::size_t>({files, origin.key_loc.file + 1u, origin.value_loc.file + 1u});
  out.files_.assign(files_.begin(),
                    files_.begin() + static_cast<std::ptrdiff_t>(std::min(files, files_.size())));
  return out;
}

void Diagnostics::set_option_origin(std::string key, SourceLoc key_loc, SourceLoc value_loc) {
  option_origins_.push_back({std::move(key), key_loc, value_loc});
}

const Diagnostics::OptionOrigin* Diagnostics::option_origin(std::string_view key) const {
  auto it = std::find_if(option_origins_.begin(), option_origins_.end(),
                         [&](const OptionOrigin& o) { return o.key == key; });
  return it == option_origins_.end() ? nullptr : &*it;
}

SourceLoc Diagnostics::option_key_loc(std::string_view key) const {
  const OptionOrigin* origin = option_origin(key);
  return origin ? origin->key_loc : SourceLoc{};
}

SourceLoc Diagnostics::option_value_loc(std::string_view key) const {
  const OptionOrigin* origin = option_origin(key);
  return origin ? origin->value_loc : SourceLoc{};
}

std::string Diagnostics::text() const {
  std::string out;
  for (const auto& d : items_) out += format(d) + '\n';
  return out;
}

void Diagnostics::print(std::ostream& out) const {
  out << text();
}

namespace {
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& known) {
  std::string_view best;
  std::size_t best_distance = word.size() / 2 + 2;  // beyond this a suggestion is noise
  for (auto candidate : known) {
    std::size_t d = edit_distance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best.empty() ? std::string{} : "did you mean '" + std::string(best) + "'?";
}

}  // namespace fwe
