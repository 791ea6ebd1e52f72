// reader.cpp - our plain-YAML policy format into the IR. docs/yaml-format.md describes every field.
//
// Each read_* function checks one node completely: its type, its fields (unknown ones get a
// did-you-mean hint) and its values, and reports every problem it finds before going on, so that one
// run shows all mistakes. Cross-references (sets, chains) are collected and resolved in finish(),
// because a policy may be spread over several files in any order.
#include "reader.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <set>
#include <span>
#include <stdexcept>
#include <system_error>
#include <tuple>

#include "fwengine/source_text.hpp"
#include "fwengine/yaml.hpp"
#include "policy_format.hpp"

namespace fwe::yamlfe {

using yaml::Node;

namespace {

std::string quote(std::string_view text) {
  return "'" + std::string(text) + "'";
}

std::string join(std::span<const std::string_view> words, std::string_view separator = ", ") {
  std::string out;
  for (const auto& word : words) {
    if (!out.empty()) out += separator;
    out += word;
  }
  return out;
}

// A did-you-mean hint when a known word is close, else the list of known words (when it is short).
std::string hint_for(std::string_view word, std::span<const std::string_view> known, std::string_view what) {
  std::string hint = did_you_mean(word, {known.begin(), known.end()});
  if (!hint.empty()) return hint;
  if (known.empty()) return "no " + std::string(what) + " is defined";
  if (known.size() > 20) return "see docs/yaml-format.md for the " + std::string(what) + "s";
  return std::string(what) + "s: " + join(known);
}

std::optional<std::uint64_t> parse_unsigned(std::string_view text) {
  int base = 10;
  if (text.starts_with("0x") || text.starts_with("0X")) {
    base = 16;
    text.remove_prefix(2);
  } else if (text.starts_with("0o")) {
    base = 8;
    text.remove_prefix(2);
  }
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::vector<std::string_view> protocol_names(bool with_ports_only) {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all;
    for (unsigned number = 0; number <= 255; ++number) {
      std::string name = ir::protocol_name(static_cast<std::uint8_t>(number));
      if (name != std::to_string(number)) all.push_back(name);
    }
    return all;
  }();
  std::vector<std::string_view> out;
  for (const auto& name : names)
    if (!with_ports_only || ir::protocol_has_ports(*ir::parse_protocol(name))) out.push_back(name);
  return out;
}

std::vector<std::string_view> verdict_names() {
  std::vector<std::string_view> names;
  for (std::size_t i = 0; i <= static_cast<std::size_t>(ir::Verdict::continue_); ++i)
    names.push_back(ir::to_string(static_cast<ir::Verdict>(i)));
  return names;
}

std::vector<std::string_view> conntrack_names() {
  std::vector<std::string_view> names;
  for (std::size_t i = 0; i <= static_cast<std::size_t>(ir::Conntrack::accept_established_drop_invalid); ++i)
    names.push_back(ir::to_string(static_cast<ir::Conntrack>(i)));
  return names;
}

std::vector<std::string_view> family_names() {
  return {ir::to_string(ir::Family::any), ir::to_string(ir::Family::ipv4), ir::to_string(ir::Family::ipv6)};
}

std::string_view family_word(ir::Family family) {
  return family == ir::Family::ipv4 ? "IPv4" : "IPv6";
}

// The fields each kind of mapping may have.
const std::vector<std::string_view> kTopFields{"apiVersion", "failsafe", "sets", "chains", "stages"};
const std::vector<std::string_view> kFailsafeFields{"inbound", "outbound"};
const std::vector<std::string_view> kFailsafeEntryFields{"protocol", "port", "net"};
constexpr std::array<std::string_view, 28> kRuleFields{
    "iif",        "oif",       "family",        "protocol", "src",      "dst",         "sport",
    "dport",      "icmp",      "icmpv6",        "ct-state", "src-mac",  "pkt-type",    "mark",
    "rate-limit", "ct-status", "ct-orig-dport", "rpf",      "action",   "reject-with", "prefix",
    "level",      "target",    "helper",        "mss",      "set-mark", "to",          "to-port"};
const std::vector<std::string_view> kSectionFields{"name", "honour-allow", "endpoints"};
const std::vector<std::string_view> kEndpointFields{
    "name", "iif", "oif", "src", "dst", "src-mac", "conntrack", "failsafe", "groups", "chains", "default"};
const std::vector<std::string_view> kGroupFields{"name", "chains", "on-end"};
const std::vector<std::string_view> kIcmpFields{"type", "code"};
const std::vector<std::string_view> kMarkFields{"value", "mask"};
const std::vector<std::string_view> kRateFields{"rate", "per", "burst"};

// The rules a mapping of chains needs before its second half is read on another thread (starting one
// costs ~0.1 ms; 2,000 rules take ~1.5 ms to read).
constexpr std::size_t kSplitRules = 2000;

// A rule field's place in kRuleFields, worked out by the compiler: a name that is not one does not build.
consteval std::size_t rule_field(std::string_view name) {
  for (std::size_t i = 0; i < kRuleFields.size(); ++i)
    if (kRuleFields[i] == name) return i;
  throw std::invalid_argument("not a rule field");
}

// A rule's fields by their place in kRuleFields, found in one pass over its keys. Reading a rule asks
// for some thirty fields, and scanning the keys for each was a quarter of the reader's time per rule.
struct RuleFields {
  const Node& rule;  // the mapping, for messages about the rule as a whole
  std::array<const Node*, kRuleFields.size()> values{};
  const Node* operator[](std::size_t field) const { return values[field]; }
};

// Fields that give an action its argument (by their place in kRuleFields), and the actions that take them.
struct ActionArgument {
  std::size_t field;
  std::vector<ir::ActionKind> actions;
};
const std::vector<ActionArgument> kActionArguments{
    {rule_field("reject-with"), {ir::ActionKind::reject}},
    {rule_field("prefix"), {ir::ActionKind::log}},
    {rule_field("level"), {ir::ActionKind::log}},
    {rule_field("target"), {ir::ActionKind::jump}},
    {rule_field("helper"), {ir::ActionKind::ct_helper}},
    {rule_field("mss"), {ir::ActionKind::tcp_mss_clamp}},
    {rule_field("set-mark"), {ir::ActionKind::set_mark}},
    {rule_field("to"), {ir::ActionKind::dnat, ir::ActionKind::snat}},
    {rule_field("to-port"),
     {ir::ActionKind::dnat, ir::ActionKind::snat, ir::ActionKind::redirect, ir::ActionKind::masquerade}},
};

// A value with its negation taken off: `{not: X}` or a string starting with '!'.
struct Peeled {
  const Node* node = nullptr;
  std::string_view text;  // for scalars: the text without '!'
  bool negate = false;
};

// Whether the rule's protocol field rules out protocol `number`: a list without it, or "not" a list with it.
// The stage a NAT or notrack action belongs in, for the check in finish().
bool action_fits_stage(ir::ActionKind kind, ir::Stage stage) {
  switch (kind) {
    case ir::ActionKind::dnat:
    case ir::ActionKind::redirect:
      return stage == ir::Stage::dnat || stage == ir::Stage::dnat_out;
    case ir::ActionKind::snat:
    case ir::ActionKind::masquerade:
      return stage == ir::Stage::snat;
    case ir::ActionKind::notrack:
      return ir::is_untracked(stage);
    case ir::ActionKind::tcp_mss_clamp:
      return stage == ir::Stage::forward || stage == ir::Stage::output;
    default:
      return true;
  }
}

std::string stages_for(ir::ActionKind kind) {
  switch (kind) {
    case ir::ActionKind::dnat:
    case ir::ActionKind::redirect:
      return std::string(ir::to_string(ir::Stage::dnat)) + " or " +
             std::string(ir::to_string(ir::Stage::dnat_out));
    case ir::ActionKind::snat:
    case ir::ActionKind::masquerade:
      return std::string(ir::to_string(ir::Stage::snat));
    case ir::ActionKind::tcp_mss_clamp:
      return "forward or output";
    default:
      return std::string(ir::to_string(ir::Stage::untracked_in)) + " or " +
             std::string(ir::to_string(ir::Stage::untracked_out));
  }
}

// Moves the entries of `from` into `into`, both maps ordered by name and with no name in both, trying
// the place after the last one moved first (names of one part of a policy mostly follow each other).
template <class Map>
void move_entries(Map& from, Map& into) {
  auto place = into.end();
  while (!from.empty()) place = std::next(into.insert(place, from.extract(from.begin())));
}

}  // namespace

class PolicyReader::Impl {
 public:
  Impl(Diagnostics& diag, bool split_chains) : diag_(diag), split_chains_(split_chains) {}

  void read_source(const std::string& source);
  void read_text(std::string_view text, const std::string& name);
  ir::Ruleset finish();
  bool split_conflicted() const { return split_conflict_; }

 private:
  struct Reference {
    std::string name;
    SourceLoc loc;
  };
  // Where a chain is used from: a stage's group, or another chain's jump.
  struct ChainUse {
    std::string chain;
    ir::Stage stage;
    SourceLoc loc;
  };

  Diagnostics& diag_;
  ir::Ruleset ruleset_;
  // Just after the set add_set put in last: where the next one most likely goes (a hint for the map).
  std::map<std::string, ir::AddrSet, std::less<>>::iterator next_set_place_ = ruleset_.sets.end();
  std::vector<Reference> set_refs_, chain_refs_;
  std::map<std::string, ir::SharedString, std::less<>> set_names_;  // the names rules gave sets by
  std::vector<ChainUse> stage_uses_;
  // A large mapping of chains is read in two halves at once, the second by another Impl on another
  // thread; its reading could only tell apart the names read before it when none of them is met again.
  const bool split_chains_;
  bool split_conflict_ = false;  // one was: what was read is not what one thread reads

  void error(const Node& node, std::string message, std::string hint = {}) {
    diag_.error(node.loc(), std::move(message), std::move(hint));
  }
  void type_error(const Node& node, std::string_view field, std::string_view expected) {
    std::string hint;
    if (node.is_null()) hint = "give it a value; a value starting with '!' must be quoted: \"!x\"";
    error(node, std::string(field) + ": expected " + std::string(expected) + ", got " + node.describe(),
          hint);
  }

  // Frees each chain's part of the tree once its rules are read (a large policy's tree and IR are then
  // never both held whole).
  void read_document(Node& document);
  bool check_fields(const Node& map, std::span<const std::string_view> known, std::string_view what);
  // The rule's fields; a key that is not one is reported, as check_fields does.
  RuleFields rule_fields(const Node& rule);
  std::optional<std::string_view> text_of(const Node& node, std::string_view field,
                                          std::string_view expected);
  std::optional<bool> bool_of(const Node& node, std::string_view field);
  std::optional<std::uint64_t> unsigned_of(const Node& node, std::string_view text, std::string_view field,
                                           std::uint64_t max);
  std::optional<Peeled> peel(const Node& node, std::string_view field);
  std::vector<const Node*> one_or_list(const Node& node, std::string_view field, std::string_view expected);

  std::optional<ir::Cidr> read_cidr(const Node& node, std::string_view text, std::string_view field);
  std::optional<ir::PortRange> read_port_range(const Node& node, std::string_view text,
                                               std::string_view field);
  void add_set(std::string name, ir::AddrSet set);

  void read_failsafe(const Node& node);
  void read_failsafe_entry(const Node& node, std::string_view direction, std::size_t index,
                           std::vector<ir::FailsafeEntry>& out);
  void read_sets(const Node& node);
  void read_chains(Node& node);
  // Chains [begin, end) of the mapping, in order; each one's part of the tree is freed once read.
  void read_chain_range(Node& chains, std::size_t begin, std::size_t end);
  // Takes what `second` read after this one's last chain, as if this one had read it.
  void adopt(Impl& second, const Diagnostics& second_diag, std::size_t reported_before);
  // What an inline address set belongs to: the name it is called after (inline_set_name) and the policy
  // and rule of its origin (a rule's: its chain's policy, which all the chain's rules and sets share).
  struct SetOwner {
    std::string name;
    ir::SharedString policy;
    std::int32_t rule = -1;
  };
  void read_rule(const Node& node, const ir::SharedString& chain, std::size_t index, ir::Rule& rule);
  void read_match(const RuleFields& fields, const SetOwner& owner, ir::Match& match);
  void read_addresses(const Node& node, std::string_view field, const SetOwner& owner, ir::Family family,
                      ir::AddrMatches& out);
  // A rule's one address or network stays in its match (one_in_place); an endpoint's is a set.
  void read_one_address(const Node& node, std::string_view field, const SetOwner& owner, std::size_t position,
                        ir::Family family, bool one_in_place, ir::AddrMatches& out);
  void read_ports(const Node& node, std::string_view field, ir::PortMatches& out);
  std::optional<ir::PortMatch> read_one_port(const Node& node, std::string_view field);
  std::optional<std::vector<ir::IfacePattern>> read_ifaces(const Node& node, std::string_view field,
                                                           bool& negate);
  std::optional<ir::IfacePattern> read_iface(const Node& node, std::string_view text, std::string_view field);
  // A protocol by name or number; a YAML integer (6, 0x6, +6) as every number field reads one, which
  // reports what is wrong with it itself (then `reported`).
  std::optional<std::uint8_t> protocol_of(const Node& node, std::string_view text, std::string_view field,
                                          bool& reported);
  std::optional<std::vector<std::uint8_t>> read_protocols(const Node& node, bool& negate);
  std::optional<ir::IcmpMatch> read_icmp(const Node& node, std::string_view field, bool v6);
  std::optional<std::uint8_t> read_icmp_type(const Node& node, std::string_view text, std::string_view field,
                                             bool v6);
  std::optional<std::vector<ir::CtState>> read_ct_states(const Node& node, bool& negate);
  std::optional<std::vector<ir::CtStatus>> read_ct_status(const Node& node);
  void read_rpf(const Node& node, ir::Match& match);
  std::optional<std::vector<ir::MacAddr>> read_macs(const Node& node, std::string_view field, bool* negate);
  void read_mark(const Node& node, ir::Match& match);
  std::optional<ir::RateLimit> read_rate_limit(const Node& node);
  void read_action(const RuleFields& fields, const ir::Match& match, ir::Action& action);
  std::optional<std::pair<ir::Verdict, std::string>> read_verdict(const Node& node, std::string_view field);
  std::optional<std::string> read_reject_with(const Node& node, std::string_view text,
                                              std::string_view field);

  void read_stages(const Node& node);
  void read_section(const Node& node, ir::Stage stage, std::size_t section_index, ir::Section& section);
  void read_endpoint(const Node& node, ir::Stage stage, const std::string& owner, ir::Endpoint& endpoint);
  void read_group(const Node& node, ir::Stage stage, ir::Group& group);
  void read_group_chains(const Node& node, ir::Stage stage, ir::Group& group);
  std::optional<std::string> read_endpoint_set(const Node& node, std::string_view field,
                                               const std::string& owner);

  void resolve_references();
  void check_jump_loops();
  void check_stage_actions();
};

// ---- sources ------------------------------------------------------------------------------------

void PolicyReader::Impl::read_source(const std::string& source) {
  namespace fs = std::filesystem;
  if (source == "-") {
    if (auto text = read_source_stdin(diag_.add_file("<stdin>"), diag_)) read_text(*text, "<stdin>");
    return;
  }
  std::error_code ec;
  if (!fs::is_directory(source, ec)) {
    if (auto documents = yaml::parse_file(source, diag_))
      for (auto& document : *documents) read_document(document);
    return;
  }
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(source, ec)) {
    auto extension = entry.path().extension();
    if (extension != ".yaml" && extension != ".yml") continue;
    // A policy file that cannot be read is an error, not a file less: its rules would be missing.
    std::error_code status_error;
    const fs::file_status status = fs::status(entry.path(), status_error);
    if (fs::is_regular_file(status)) {
      files.push_back(entry.path());
    } else if (!fs::is_directory(status) && !entry.path().filename().string().starts_with('.')) {
      // (A hidden one is an editor's lock or backup, such as Emacs's dangling .#policy.yaml.)
      const std::string path = entry.path().string();
      const std::string why = status_error ? status_error.message() : "not a regular file";
      diag_.error({diag_.add_file(path), 0, 0}, "cannot read '" + path + "': " + why,
                  "remove it from the directory, or make it a readable YAML file");
    }
  }
  if (ec) {
    diag_.error({}, "cannot read directory '" + source + "': " + ec.message(),
                "check that the directory exists and is readable");
    return;
  }
  if (files.empty())
    diag_.warning({}, "no *.yaml or *.yml files in '" + source + "'", "the policy from it is empty");
  std::sort(files.begin(), files.end());
  for (const auto& file : files)
    if (auto documents = yaml::parse_file(file, diag_))
      for (auto& document : *documents) read_document(document);
}

void PolicyReader::Impl::read_text(std::string_view text, const std::string& name) {
  if (auto documents = yaml::parse(text, diag_.add_file(name), diag_))
    for (auto& document : *documents) read_document(document);
}

void PolicyReader::Impl::read_document(Node& document) {
  if (document.is_null()) return;  // an empty document or a file of comments
  if (!document.is_mapping()) {
    type_error(document, "document", "a mapping starting with 'apiVersion: fwengine/v1'");
    return;
  }
  const Node* version = document.find("apiVersion");
  if (!version) {
    error(document, "missing apiVersion",
          "start the document with 'apiVersion: " + std::string(kApiVersion) + "'");
    return;
  }
  if (version->text() != kApiVersion) {
    const bool calico = version->text().find("projectcalico.org/") != std::string::npos;
    error(*version, "unsupported apiVersion " + quote(version->text()),
          calico ? "this is a Calico resource: read it with --frontend calico"
                 : "this fwengine reads apiVersion: " + std::string(kApiVersion));
    return;
  }
  check_fields(document, kTopFields, "a policy document");
  if (const Node* failsafe = document.find("failsafe")) read_failsafe(*failsafe);
  if (const Node* sets = document.find("sets")) read_sets(*sets);
  if (Node* chains = document.find("chains")) read_chains(*chains);
  if (const Node* stages = document.find("stages")) read_stages(*stages);
}

// ---- small checked values -----------------------------------------------------------------------

bool PolicyReader::Impl::check_fields(const Node& map, std::span<const std::string_view> known,
                                      std::string_view what) {
  bool ok = true;
  for (const auto& key : map.keys()) {
    if (std::find(known.begin(), known.end(), key.text()) != known.end()) continue;
    error(key, "unknown field " + quote(key.text()) + " in " + std::string(what),
          hint_for(key.text(), known, "field"));
    ok = false;
  }
  return ok;
}

RuleFields PolicyReader::Impl::rule_fields(const Node& rule) {
  RuleFields fields{rule};
  for (std::size_t i = 0; i < rule.size(); ++i) {
    const Node& key = rule.keys()[i];
    auto known = std::find(kRuleFields.begin(), kRuleFields.end(), key.text());
    if (key.is_scalar() && known != kRuleFields.end())
      fields.values[static_cast<std::size_t>(known - kRuleFields.begin())] = &rule.values()[i];
    else if (known == kRuleFields.end())
      error(key, "unknown field " + quote(key.text()) + " in a rule",
            hint_for(key.text(), kRuleFields, "field"));
  }
  return fields;
}

std::optional<std::string_view> PolicyReader::Impl::text_of(const Node& node, std::string_view field,
                                                            std::string_view expected) {
  if (!node.is_scalar()) {
    type_error(node, field, expected);
    return std::nullopt;
  }
  return std::string_view(node.text());
}

std::optional<bool> PolicyReader::Impl::bool_of(const Node& node, std::string_view field) {
  if (auto value = node.as_bool()) return value;
  type_error(node, field, "true or false");
  return std::nullopt;
}

std::optional<std::uint64_t> PolicyReader::Impl::unsigned_of(const Node& node, std::string_view text,
                                                             std::string_view field, std::uint64_t max) {
  const bool integer = node.is_scalar() && node.scalar_type() == yaml::ScalarType::integer;
  auto value = parse_unsigned(integer && text.starts_with('+') ? text.substr(1) : text);  // YAML's +16
  if (!value && text.starts_with('-') && integer) {
    error(node, std::string(field) + ": " + std::string(text) + " is negative",
          "write a number from 0 to " + std::to_string(max));
    return std::nullopt;
  }
  if (!value && integer) {  // more digits than 64 bits hold
    error(node, std::string(field) + ": " + std::string(text) + " is too large",
          "the largest value is " + std::to_string(max));
    return std::nullopt;
  }
  if (!value && node.is_scalar() && node.scalar_type() == yaml::ScalarType::floating) {
    error(node, std::string(field) + ": " + std::string(text) + " is not a whole number",
          "write a whole number such as 10 or 0x1f");
    return std::nullopt;
  }
  if (!value && node.is_scalar() && node.scalar_type() != yaml::ScalarType::string) {
    type_error(node, field, "a number");
    return std::nullopt;
  }
  if (!value) {
    error(node, std::string(field) + ": " + quote(text) + " is not a number",
          "write a number such as 10 or 0x1f");
    return std::nullopt;
  }
  if (*value > max) {
    error(node, std::string(field) + ": " + std::string(text) + " is too large",
          "the largest value is " + std::to_string(max));
    return std::nullopt;
  }
  return value;
}

std::optional<Peeled> PolicyReader::Impl::peel(const Node& node, std::string_view field) {
  if (node.is_mapping()) {
    if (const Node* inner = node.find("not")) {
      if (node.size() != 1) {
        error(node, std::string(field) + ": 'not' must be the only field of its mapping",
              "write the negated value alone: {not: VALUE}");
        return std::nullopt;
      }
      if (inner->is_scalar() && inner->text().starts_with('!')) {
        error(*inner, std::string(field) + ": " + quote(inner->text()) + " is negated twice",
              "drop either 'not' or the '!'");
        return std::nullopt;
      }
      if (inner->is_mapping() && inner->find("not")) {
        error(*inner, std::string(field) + ": a value is negated twice", "drop one of the 'not's");
        return std::nullopt;
      }
      return Peeled{inner, inner->text(), true};
    }
    return Peeled{&node, {}, false};
  }
  std::string_view text = node.text();
  if (node.is_scalar() && text.starts_with('!')) return Peeled{&node, text.substr(1), true};
  return Peeled{&node, text, false};
}

// The items of a list, or the node itself when a single value stands where a list may.
std::vector<const Node*> PolicyReader::Impl::one_or_list(const Node& node, std::string_view field,
                                                         std::string_view expected) {
  std::vector<const Node*> items;
  if (node.is_sequence()) {
    if (node.items().empty())
      error(node, std::string(field) + ": the list is empty", "give at least one value");
    for (const auto& item : node.items()) {
      if (item.is_scalar() && item.text().starts_with('!')) {
        error(item,
              std::string(field) + ": " + quote(item.text()) + " cannot be negated on its own in a list",
              "'!' negates a whole value; write " + std::string(field) + ": {not: [...]}");
        continue;
      }
      if (!item.is_scalar()) {
        type_error(item, field, expected);
        continue;
      }
      items.push_back(&item);
    }
  } else if (node.is_scalar()) {
    items.push_back(&node);
  } else {
    type_error(node, field, std::string(expected) + " or a list of them");
  }
  return items;
}

std::optional<ir::Cidr> PolicyReader::Impl::read_cidr(const Node& node, std::string_view text,
                                                      std::string_view field) {
  if (auto cidr = ir::parse_cidr(text)) return cidr;
  if (auto loose = ir::parse_cidr(text, false)) {
    error(node, std::string(field) + ": " + quote(text) + " has host bits set",
          "write the network address: " + ir::to_string(*loose));
    return std::nullopt;
  }
  error(node, std::string(field) + ": " + quote(text) + " is not an IP address or CIDR",
        "write e.g. 10.0.0.0/8, 192.0.2.1 or 2001:db8::/32");
  return std::nullopt;
}

std::optional<ir::PortRange> PolicyReader::Impl::read_port_range(const Node& node, std::string_view text,
                                                                 std::string_view field) {
  if (node.is_scalar() && node.scalar_type() == yaml::ScalarType::integer) {  // 22, 0x16, +22 alike
    const auto port = unsigned_of(node, text, field, 65535);
    if (!port) return std::nullopt;
    return ir::PortRange{static_cast<std::uint16_t>(*port), static_cast<std::uint16_t>(*port)};
  }
  auto dash = text.find('-');
  auto lo = parse_unsigned(text.substr(0, dash));
  auto hi = dash == std::string_view::npos ? lo : parse_unsigned(text.substr(dash + 1));
  if (!lo || !hi) {
    error(node, std::string(field) + ": " + quote(text) + " is not a port or port range",
          "write a number such as 443 or a range such as 8000-8090; service names are not supported");
    return std::nullopt;
  }
  if (*lo > 65535 || *hi > 65535) {
    error(node, std::string(field) + ": port " + std::to_string(std::max(*lo, *hi)) + " is out of range",
          "ports are 0 to 65535");
    return std::nullopt;
  }
  if (*lo > *hi) {
    error(node, std::string(field) + ": port range " + quote(text) + " runs backwards",
          "write the lower port first: " + std::to_string(*hi) + "-" + std::to_string(*lo));
    return std::nullopt;
  }
  return ir::PortRange{static_cast<std::uint16_t>(*lo), static_cast<std::uint16_t>(*hi)};
}

void PolicyReader::Impl::add_set(std::string name, ir::AddrSet set) {
  // Sets and chains share one name space: a rule's `jump` and a match's set reference read alike.
  if (auto chain = ruleset_.chains.find(name); chain != ruleset_.chains.end())
    diag_.error(set.origin.loc, "set " + quote(name) + " has the name of a chain",
                "the chain is at " + diag_.where(chain->second.origin.loc) + "; rename one of them");
  // Taken only when the name is new (then the set is moved in); a rule's sets mostly go just after the
  // previous rule's, so the place after the last insertion is tried first.
  const std::size_t before = ruleset_.sets.size();
  auto placed = ruleset_.sets.try_emplace(next_set_place_, std::move(name), std::move(set));
  if (ruleset_.sets.size() == before) {
    // Addresses written in a rule or an endpoint make a set named after where they are.
    const bool inline_one =
        !set.origin.policy.starts_with("set ") || !placed->second.origin.policy.starts_with("set ");
    diag_.error(set.origin.loc, "set " + quote(placed->first) + " is defined twice",
                "the first is at " + diag_.where(placed->second.origin.loc) + "; rename one of them" +
                    (inline_one ? " (several addresses written in a rule are the set CHAIN.RULE.FIELD, "
                                  "those of an endpoint STAGE.SECTION.ENDPOINT.FIELD: a chain or set may not "
                                  "take such a name)"
                                : ""));
    return;
  }
  next_set_place_ = std::next(placed);
}

// ---- failsafe -----------------------------------------------------------------------------------

void PolicyReader::Impl::read_failsafe(const Node& node) {
  if (!node.is_mapping()) return type_error(node, "failsafe", "a mapping with 'inbound' and 'outbound'");
  check_fields(node, kFailsafeFields, "failsafe");
  for (auto [direction, out] : {std::pair{"inbound", &ruleset_.failsafe.inbound},
                                std::pair{"outbound", &ruleset_.failsafe.outbound}}) {
    const Node* list = node.find(direction);
    if (!list) continue;
    if (!list->is_sequence()) {
      type_error(*list, std::string("failsafe.") + direction, "a list of {protocol, port, net} entries");
      continue;
    }
    for (std::size_t i = 0; i < list->items().size(); ++i)
      read_failsafe_entry(list->items()[i], direction, i, *out);
  }
}

void PolicyReader::Impl::read_failsafe_entry(const Node& node, std::string_view direction, std::size_t index,
                                             std::vector<ir::FailsafeEntry>& out) {
  std::string field = "failsafe." + std::string(direction);
  ir::FailsafeEntry entry;
  entry.origin = {node.loc(), "failsafe " + std::string(direction), static_cast<std::int32_t>(index)};
  // Short form "tcp:22", as Calico writes failsafe ports.
  if (node.is_scalar() && node.scalar_type() == yaml::ScalarType::string) {
    auto colon = node.text().find(':');
    std::string_view text = node.text();
    if (colon == std::string_view::npos) {
      error(node, field + ": " + quote(text) + " is not a failsafe entry",
            "write tcp:22 or {protocol: tcp, port: 22}");
      return;
    }
    bool reported = false;  // (a string: never)
    auto protocol = protocol_of(node, text.substr(0, colon), field, reported);
    if (!protocol || !ir::protocol_has_ports(*protocol)) {
      error(node, field + ": " + quote(text.substr(0, colon)) + " is not a protocol with ports",
            "use one of " + join(protocol_names(true)));
      return;
    }
    auto port = read_port_range(node, text.substr(colon + 1), field);
    if (!port) return;
    if (port->lo != port->hi) {
      error(node, field + ": a failsafe entry is one port, not a range", "write one entry per port");
      return;
    }
    entry.protocol = *protocol;
    entry.port = port->lo;
    out.push_back(entry);
    return;
  }
  if (!node.is_mapping()) return type_error(node, field, "a {protocol, port, net} mapping or tcp:PORT");
  check_fields(node, kFailsafeEntryFields, "a failsafe entry");
  if (const Node* protocol = node.find("protocol")) {
    if (auto text = text_of(*protocol, field + ".protocol", "a protocol name")) {
      bool reported = false;
      const auto number = protocol_of(*protocol, *text, field + ".protocol", reported);
      if (number && ir::protocol_has_ports(*number))
        entry.protocol = *number;
      else if (!reported)
        error(*protocol, field + ".protocol: " + quote(*text) + " is not a protocol with ports",
              number ? "use one of: " + join(protocol_names(true))
                     : hint_for(*text, protocol_names(true), "protocol"));
    }
  }
  const Node* port = node.find("port");
  if (!port) {
    error(node, field + ": the entry has no port", "add port: NUMBER");
  } else if (auto value = unsigned_of(*port, port->text(), field + ".port", 65535)) {
    entry.port = static_cast<std::uint16_t>(*value);
  }
  if (const Node* net = node.find("net"))
    if (auto text = text_of(*net, field + ".net", "a CIDR"))
      entry.net = read_cidr(*net, *text, field + ".net");
  out.push_back(entry);
}

// ---- sets ---------------------------------------------------------------------------------------

void PolicyReader::Impl::read_sets(const Node& node) {
  if (!node.is_mapping()) return type_error(node, "sets", "a mapping of set names to address lists");
  for (std::size_t i = 0; i < node.size(); ++i) {
    const Node& key = node.keys()[i];
    const Node& value = node.values()[i];
    std::string field = "sets." + key.text();
    if (!valid_set_name(key.text())) {
      error(key, "set name " + quote(key.text()) + " looks like an address or a negation",
            "give the set a name with letters, e.g. trusted");
      continue;
    }
    ir::AddrSet set;
    set.origin = {key.loc(), "set " + key.text(), -1};
    if (value.is_sequence()) {
      for (const auto& item : value.items()) {
        if (!item.is_scalar()) {
          type_error(item, field, "an address or CIDR");
          continue;
        }
        if (auto cidr = read_cidr(item, item.text(), field)) set.cidrs.push_back(*cidr);
      }
    } else if (value.is_scalar()) {
      if (auto cidr = read_cidr(value, value.text(), field)) set.cidrs.push_back(*cidr);
    } else if (!value.is_null()) {
      type_error(value, field, "a list of addresses");
    }
    add_set(key.text(), std::move(set));
  }
}

// ---- chains and rules ---------------------------------------------------------------------------

void PolicyReader::Impl::read_chains(Node& node) {
  if (!node.is_mapping()) return type_error(node, "chains", "a mapping of chain names to rule lists");
  // Where the rules are halved, when there are enough of them to be worth a thread.
  std::size_t rules = 0;
  for (const Node& value : node.values()) rules += value.is_sequence() ? value.items().size() : 0;
  std::size_t split = 0;
  if (split_chains_ && !split_conflict_ && rules >= kSplitRules)
    for (std::size_t seen = 0; split < node.size() && seen < rules / 2; ++split)
      seen += node.values()[split].is_sequence() ? node.values()[split].items().size() : 0;
  if (split == 0 || split == node.size()) return read_chain_range(node, 0, node.size());
  Diagnostics second_diag = diag_;  // the same files; what the second half reports comes after these
  const std::size_t reported_before = second_diag.all().size();
  Impl second(second_diag, false);
  std::future<void> second_done;
  try {
    second_done = std::async(std::launch::async, [&] { second.read_chain_range(node, split, node.size()); });
  } catch (const std::system_error&) {
    return read_chain_range(node, 0, node.size());  // no thread to be had
  }
  read_chain_range(node, 0, split);
  second_done.get();
  adopt(second, second_diag, reported_before);
}

void PolicyReader::Impl::read_chain_range(Node& node, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end; ++i) {
    const Node& key = node.keys()[i];
    const Node& value = node.values()[i];
    if (key.text().empty()) {
      error(key, "a chain needs a name", "write chains: {NAME: [rules...]}");
      continue;
    }
    if (key.text().front() == '!') {  // a list of chains would read it as a negation
      error(key, "chain name " + quote(key.text()) + " starts with '!', which negates",
            "give the chain a name that starts with a letter");
      continue;
    }
    ir::Chain chain;
    chain.name = key.text();
    chain.origin = {key.loc(), chain.name, -1};
    if (value.is_sequence()) {
      chain.rules.resize(value.items().size());
      for (std::size_t r = 0; r < chain.rules.size(); ++r)
        read_rule(value.items()[r], chain.origin.policy, r, chain.rules[r]);
    } else if (!value.is_null()) {
      type_error(value, "chains." + chain.name, "a list of rules");
    }
    if (auto set = ruleset_.sets.find(chain.name); set != ruleset_.sets.end())
      error(key, "chain " + quote(chain.name) + " has the name of a set",
            "the set is at " + diag_.where(set->second.origin.loc) + "; rename one of them");
    auto hint = ruleset_.chains.lower_bound(chain.name);
    if (hint != ruleset_.chains.end() && hint->first == chain.name) {
      error(key, "chain " + quote(chain.name) + " is defined twice",
            "the first is at " + diag_.where(hint->second.origin.loc) +
                "; rename one of them or merge their rules");
      continue;
    }
    std::string name = chain.name;
    ruleset_.chains.emplace_hint(hint, std::move(name), std::move(chain));
    node.release_value(i);
  }
}

void PolicyReader::Impl::adopt(Impl& second, const Diagnostics& second_diag, std::size_t reported_before) {
  // A name of the second half that one of the first (or an earlier source) has was checked against
  // neither: its messages, and which of the two is kept, would be wrong. Chains are looked up among
  // sets rather than the other way round: there are fewer of them.
  auto clash = [](const auto& fewer, const auto& more) {
    return std::any_of(fewer.begin(), fewer.end(),
                       [&](const auto& entry) { return more.contains(entry.first); });
  };
  // Once one split met such a name, what this reader read is not what one thread reads, whatever later
  // splits meet: the flag stays, and nothing of the second half is moved in.
  if (clash(second.ruleset_.chains, ruleset_.chains) || clash(second.ruleset_.chains, ruleset_.sets) ||
      clash(ruleset_.chains, second.ruleset_.sets) || clash(second.ruleset_.sets, ruleset_.sets)) {
    split_conflict_ = true;
    return;
  }
  move_entries(second.ruleset_.sets, ruleset_.sets);
  move_entries(second.ruleset_.chains, ruleset_.chains);
  for (std::size_t i = reported_before; i < second_diag.all().size(); ++i) {
    const Diagnostic& d = second_diag.all()[i];
    diag_.report(d.severity, d.loc, d.message, d.hint);
  }
  set_refs_.insert(set_refs_.end(), second.set_refs_.begin(), second.set_refs_.end());
  chain_refs_.insert(chain_refs_.end(), second.chain_refs_.begin(), second.chain_refs_.end());
}

void PolicyReader::Impl::read_rule(const Node& node, const ir::SharedString& chain, std::size_t index,
                                   ir::Rule& rule) {
  rule.origin = {node.loc(), chain, static_cast<std::int32_t>(index)};
  if (!node.is_mapping())
    return type_error(node, "rule", "a mapping such as {protocol: tcp, dport: 22, action: accept}");
  const RuleFields fields = rule_fields(node);
  read_match(fields, {rule_owner(chain, index), chain, rule.origin.rule}, rule.match);
  read_action(fields, rule.match, rule.action);
}

void PolicyReader::Impl::read_match(const RuleFields& fields, const SetOwner& owner, ir::Match& match) {
  if (const Node* family = fields[rule_field("family")]) {
    if (auto text = text_of(*family, "family", "ipv4 or ipv6")) {
      auto names = family_names();
      auto it = std::find(names.begin(), names.end(), *text);
      if (it == names.end())
        error(*family, "family: unknown family " + quote(*text), hint_for(*text, names, "family"));
      else
        match.family = static_cast<ir::Family>(it - names.begin());
    }
  }
  for (auto [field, target, negate] : {std::tuple{rule_field("iif"), &match.iif, &match.iif_negate},
                                       std::tuple{rule_field("oif"), &match.oif, &match.oif_negate}})
    if (const Node* value = fields[field]) *target = read_ifaces(*value, kRuleFields[field], *negate);
  if (const Node* protocol = fields[rule_field("protocol")])
    match.protocols = read_protocols(*protocol, match.protocol_negate);
  if (const Node* src = fields[rule_field("src")])
    read_addresses(*src, "src", owner, match.family, match.src_addr);
  if (const Node* dst = fields[rule_field("dst")])
    read_addresses(*dst, "dst", owner, match.family, match.dst_addr);

  // A positive protocol list that has no protocol with ports can never meet a port match.
  auto positive_protocols_without = [&](auto&& wanted) {
    return match.protocols && !match.protocol_negate &&
           std::none_of(match.protocols->begin(), match.protocols->end(), wanted);
  };
  for (auto [index, out] :
       {std::pair{rule_field("sport"), &match.src_port}, std::pair{rule_field("dport"), &match.dst_port},
        std::pair{rule_field("ct-orig-dport"), &match.ct_orig_dport}}) {
    const Node* value = fields[index];
    if (!value) continue;
    const std::string_view field = kRuleFields[index];
    read_ports(*value, field, *out);
    if (positive_protocols_without(ir::protocol_has_ports))
      error(*value, std::string(field) + " needs a protocol with ports, but the rule's protocol has none",
            "use protocol " + join(protocol_names(true), ", ") + ", or remove " + std::string(field));
  }

  const Node* icmp = fields[rule_field("icmp")];
  const Node* icmpv6 = fields[rule_field("icmpv6")];
  if (icmp && icmpv6) error(*icmpv6, "a rule can match icmp or icmpv6, not both", "write two rules");
  if (const Node* value = icmpv6 ? icmpv6 : icmp) {
    bool v6 = value == icmpv6;
    std::string_view field = v6 ? "icmpv6" : "icmp";
    match.icmp = read_icmp(*value, field, v6);
    if (excludes_protocol(match, v6 ? 58 : 1)) {
      std::string protocol_text;
      for (auto protocol : *match.protocols)
        protocol_text += (protocol_text.empty() ? "" : ", ") + ir::protocol_name(protocol);
      error(*value,
            std::string(field) + " needs protocol " + std::string(field) + ", but the rule's protocol is " +
                (match.protocol_negate ? "not " : "") + protocol_text,
            match.protocol_negate ? "remove protocol or make it " + std::string(field)
                                  : "remove protocol or add " + std::string(field) + " to it");
    }
    if (match.family == (v6 ? ir::Family::ipv4 : ir::Family::ipv6))
      error(*value,
            std::string(field) + " never matches with family: " + std::string(ir::to_string(match.family)),
            v6 ? "use icmp for IPv4" : "use icmpv6 for IPv6");
    // A port match asks for a protocol with ports, which an ICMP packet is not.
    for (std::size_t index : {rule_field("sport"), rule_field("dport"), rule_field("ct-orig-dport")})
      if (fields[index])
        error(*value,
              std::string(field) + " never matches with " + std::string(kRuleFields[index]) +
                  ", which needs a protocol with ports (" + join(protocol_names(true), ", ") + ")",
              "write two rules, one with " + std::string(field) + " and one with " +
                  std::string(kRuleFields[index]));
  }

  if (const Node* value = fields[rule_field("ct-state")])
    match.ct_states = read_ct_states(*value, match.ct_negate);
  if (const Node* value = fields[rule_field("src-mac")])
    match.src_mac = read_macs(*value, "src-mac", &match.src_mac_negate);
  if (const Node* value = fields[rule_field("pkt-type")]) {
    if (auto text = text_of(*value, "pkt-type", "unicast, broadcast or multicast")) {
      const auto& names = pkt_type_names();
      if (std::find(names.begin(), names.end(), *text) == names.end())
        error(*value, "pkt-type: unknown packet type " + quote(*text), hint_for(*text, names, "packet type"));
      else
        match.pkt_type = std::string(*text);
    }
  }
  if (const Node* value = fields[rule_field("mark")]) read_mark(*value, match);
  if (const Node* value = fields[rule_field("rate-limit")]) match.rate_limit = read_rate_limit(*value);
  if (const Node* value = fields[rule_field("ct-status")]) match.ct_status = read_ct_status(*value);
  if (const Node* value = fields[rule_field("rpf")]) read_rpf(*value, match);
}

void PolicyReader::Impl::read_rpf(const Node& node, ir::Match& match) {
  auto peeled = peel(node, "rpf");
  if (!peeled) return;
  if (!peeled->node->is_scalar()) return type_error(*peeled->node, "rpf", "strict or loose");
  if (auto mode = ir::parse_rpf_mode(peeled->text)) {
    match.rpf = *mode;
    match.rpf_negate = peeled->negate;
  } else {
    error(*peeled->node, "rpf: unknown mode " + quote(peeled->text),
          hint_for(peeled->text, ir::rpf_mode_names(), "mode"));
  }
}

void PolicyReader::Impl::read_addresses(const Node& node, std::string_view field, const SetOwner& owner,
                                        ir::Family family, ir::AddrMatches& out) {
  if (node.is_mapping() && node.find("all")) {
    const Node& all = *node.find("all");
    if (node.size() != 1) error(node, std::string(field) + ": 'all' must be the only field of its mapping");
    if (!all.is_sequence() || all.items().empty())
      return type_error(all, std::string(field) + ".all", "a list of address matches that must all hold");
    for (std::size_t i = 0; i < all.items().size(); ++i)
      read_one_address(all.items()[i], field, owner, i, family, true, out);
    return;
  }
  read_one_address(node, field, owner, 0, family, true, out);
}

void PolicyReader::Impl::read_one_address(const Node& node, std::string_view field, const SetOwner& owner,
                                          std::size_t position, ir::Family family, bool one_in_place,
                                          ir::AddrMatches& out) {
  auto peeled = peel(node, field);
  if (!peeled) return;
  const Node& value = *peeled->node;
  bool is_name = value.is_scalar() && !peeled->text.empty() && !looks_like_address(peeled->text) &&
                 !ir::parse_cidr(peeled->text, false);
  if (is_name) {
    set_refs_.push_back({std::string(peeled->text), value.loc()});
    // The rules naming one set share its name's block.
    auto known = set_names_.find(peeled->text);
    if (known == set_names_.end())
      known = set_names_.emplace(std::string(peeled->text), ir::SharedString(peeled->text)).first;
    out.push_back(ir::AddrMatch(peeled->negate, known->second));
    return;
  }
  ir::AddrSet set;
  set.origin = {value.loc(), owner.policy, owner.rule};
  if (value.is_scalar()) {
    if (auto cidr = read_cidr(value, peeled->text, field)) set.cidrs.push_back(*cidr);
  } else {
    for (const Node* item : one_or_list(value, field, "a set name, an address or a CIDR"))
      if (auto cidr = read_cidr(*item, item->text(), field)) set.cidrs.push_back(*cidr);
  }
  if (set.cidrs.empty()) return;
  // Negated, addresses of the other family hold for every packet of this one (as Calico's notNets of
  // a rule split by family are written by migrate).
  if (!peeled->negate && family != ir::Family::any &&
      std::none_of(set.cidrs.begin(), set.cidrs.end(),
                   [&](const ir::Cidr& c) { return c.addr.family == family; }))
    error(value,
          std::string(field) + ": no address here is " + std::string(family_word(family)) +
              ", so the rule with family: " + std::string(ir::to_string(family)) + " can never match",
          "fix the addresses or the family");
  if (one_in_place && set.cidrs.size() == 1) {
    out.push_back(ir::AddrMatch(peeled->negate, set.cidrs.front()));
    return;
  }
  std::string name = inline_set_name(owner.name, field, position);
  out.push_back(ir::AddrMatch(peeled->negate, ir::SharedString(name)));
  add_set(std::move(name), std::move(set));
}

void PolicyReader::Impl::read_ports(const Node& node, std::string_view field, ir::PortMatches& out) {
  if (node.is_mapping() && node.find("all")) {
    const Node& all = *node.find("all");
    if (node.size() != 1) error(node, std::string(field) + ": 'all' must be the only field of its mapping");
    if (!all.is_sequence() || all.items().empty())
      return type_error(all, std::string(field) + ".all", "a list of port matches that must all hold");
    for (const auto& item : all.items())
      if (auto match = read_one_port(item, field)) out.push_back(std::move(*match));
    return;
  }
  if (auto match = read_one_port(node, field)) out.push_back(std::move(*match));
}

std::optional<ir::PortMatch> PolicyReader::Impl::read_one_port(const Node& node, std::string_view field) {
  auto peeled = peel(node, field);
  if (!peeled) return std::nullopt;
  ir::PortMatch match{peeled->negate, {}};
  const Node& value = *peeled->node;
  if (value.is_scalar()) {
    if (auto range = read_port_range(value, peeled->text, field)) match.ports.push_back(*range);
  } else {
    for (const Node* item : one_or_list(value, field, "a port, a range such as 8000-8090"))
      if (auto range = read_port_range(*item, item->text(), field)) match.ports.push_back(*range);
  }
  if (match.ports.empty()) return std::nullopt;
  return match;
}

std::optional<ir::IfacePattern> PolicyReader::Impl::read_iface(const Node& node, std::string_view text,
                                                               std::string_view field) {
  std::string_view name = text.ends_with('+') ? text.substr(0, text.size() - 1) : text;
  if (text.ends_with('*')) {
    error(node, std::string(field) + ": " + quote(text) + " is not an interface name",
          "write a prefix with '+': " + std::string(text.substr(0, text.size() - 1)) + "+");
    return std::nullopt;
  }
  if (text.starts_with('!')) {
    error(node, std::string(field) + ": " + quote(text) + " is not an interface name",
          "a rule negates the whole field: " + std::string(field) + ": {not: [" +
              std::string(text.substr(1)) + "]}; an endpoint cannot");
    return std::nullopt;
  }
  if (!ir::valid_iface_name(name)) {
    error(
        node, std::string(field) + ": " + quote(text) + " is not an interface name",
        "interface names have 1 to 15 characters, none of them a space, a control character, '/', ':', '*', "
        "a quote or a backslash, and are not '.' or '..'; a '+' only at the end, for a prefix");
    return std::nullopt;
  }
  return ir::parse_iface(text);
}

std::optional<std::vector<ir::IfacePattern>> PolicyReader::Impl::read_ifaces(const Node& node,
                                                                             std::string_view field,
                                                                             bool& negate) {
  auto peeled = peel(node, field);
  if (!peeled) return std::nullopt;
  negate = peeled->negate;
  std::vector<ir::IfacePattern> out;
  const Node& value = *peeled->node;
  if (value.is_scalar()) {
    if (auto iface = read_iface(value, peeled->text, field)) out.push_back(*iface);
  } else {
    for (const Node* item : one_or_list(value, field, "an interface name"))
      if (auto iface = read_iface(*item, item->text(), field)) out.push_back(*iface);
  }
  if (out.empty()) return std::nullopt;
  return out;
}

std::optional<std::uint8_t> PolicyReader::Impl::protocol_of(const Node& node, std::string_view text,
                                                            std::string_view field, bool& reported) {
  if (!node.is_scalar() || node.scalar_type() != yaml::ScalarType::integer) {
    if (auto named = ir::parse_protocol(text)) return named;
    const auto number = parse_unsigned(text);  // "0x11" as a string
    return number && *number <= 255 ? std::optional(static_cast<std::uint8_t>(*number)) : std::nullopt;
  }
  const auto number = unsigned_of(node, text, field, 255);
  reported = !number;
  return number ? std::optional(static_cast<std::uint8_t>(*number)) : std::nullopt;
}

std::optional<std::vector<std::uint8_t>> PolicyReader::Impl::read_protocols(const Node& node, bool& negate) {
  auto peeled = peel(node, "protocol");
  if (!peeled) return std::nullopt;
  negate = peeled->negate;
  std::vector<std::uint8_t> out;
  auto add = [&](const Node& item, std::string_view text) {
    bool reported = false;
    if (auto number = protocol_of(item, text, "protocol", reported))
      out.push_back(*number);
    else if (!reported)
      error(item, "protocol: unknown protocol " + quote(text),
            hint_for(text, protocol_names(false), "protocol"));
  };
  const Node& value = *peeled->node;
  if (value.is_scalar())
    add(value, peeled->text);
  else
    for (const Node* item : one_or_list(value, "protocol", "a protocol name or number"))
      add(*item, item->text());
  if (out.empty()) return std::nullopt;
  return out;
}

std::optional<std::uint8_t> PolicyReader::Impl::read_icmp_type(const Node& node, std::string_view text,
                                                               std::string_view field, bool v6) {
  if (node.is_scalar() && node.scalar_type() == yaml::ScalarType::integer) {  // 8, 0x8, +8 alike
    const auto number = unsigned_of(node, text, std::string(field) + " type", 255);
    return number ? std::optional(static_cast<std::uint8_t>(*number)) : std::nullopt;
  }
  if (auto number = parse_unsigned(text)) {
    if (*number <= 255) return static_cast<std::uint8_t>(*number);
    error(node, std::string(field) + ": type " + std::string(text) + " is out of range",
          "types are 0 to 255");
    return std::nullopt;
  }
  if (auto type = parse_icmp_type(text, v6)) return type;
  error(node, std::string(field) + ": unknown " + std::string(field) + " type " + quote(text),
        hint_for(text, icmp_type_names(v6), std::string(field) + " type"));
  return std::nullopt;
}

std::optional<ir::IcmpMatch> PolicyReader::Impl::read_icmp(const Node& node, std::string_view field,
                                                           bool v6) {
  auto peeled = peel(node, field);
  if (!peeled) return std::nullopt;
  ir::IcmpMatch match;
  match.negate = peeled->negate;
  match.v6 = v6;
  const Node& value = *peeled->node;
  if (value.is_scalar()) {
    if (peeled->text == "any") {
      if (match.negate) {
        error(value, std::string(field) + ": 'not any' never matches", "remove the rule or name a type");
        return std::nullopt;
      }
      return match;
    }
    match.type = read_icmp_type(value, peeled->text, field, v6);
    return match.type ? std::optional(match) : std::nullopt;
  }
  if (!value.is_mapping()) {
    type_error(value, field, "a type name such as echo-request, 'any', or {type, code}");
    return std::nullopt;
  }
  check_fields(value, kIcmpFields, field == "icmp" ? "an icmp match" : "an icmpv6 match");
  if (match.negate && !value.find("type")) {  // as 'not any'
    error(value, std::string(field) + ": 'not' without a type never matches",
          "remove the rule or name a type");
    return std::nullopt;
  }
  if (const Node* type = value.find("type"))
    if (auto text = text_of(*type, std::string(field) + ".type", "a type name or number"))
      match.type = read_icmp_type(*type, *text, std::string(field) + ".type", v6);
  if (const Node* code = value.find("code")) {
    if (!value.find("type"))
      error(*code, std::string(field) + ": a code needs a type", "add type: NAME-OR-NUMBER");
    else if (auto number = unsigned_of(*code, code->text(), std::string(field) + ".code", 255))
      match.code = static_cast<std::uint8_t>(*number);
  }
  return match;
}

std::optional<std::vector<ir::CtState>> PolicyReader::Impl::read_ct_states(const Node& node, bool& negate) {
  auto peeled = peel(node, "ct-state");
  if (!peeled) return std::nullopt;
  negate = peeled->negate;
  std::vector<ir::CtState> out;
  auto add = [&](const Node& item, std::string_view text) {
    if (auto state = ir::parse_ct_state(text))
      out.push_back(*state);
    else
      error(item, "ct-state: unknown conntrack state " + quote(text),
            hint_for(text, ir::ct_state_names(), "conntrack state"));
  };
  const Node& value = *peeled->node;
  if (value.is_scalar())
    add(value, peeled->text);
  else
    for (const Node* item : one_or_list(value, "ct-state", "a conntrack state")) add(*item, item->text());
  if (out.empty()) return std::nullopt;
  return out;
}

std::optional<std::vector<ir::CtStatus>> PolicyReader::Impl::read_ct_status(const Node& node) {
  std::vector<ir::CtStatus> out;
  for (const Node* item : one_or_list(node, "ct-status", "a conntrack status")) {
    std::string_view text = item->text();
    if (auto status = ir::parse_ct_status(text))
      out.push_back(*status);
    else if (text.starts_with('!'))
      error(*item, "ct-status cannot be negated", "list the statuses that should match");
    else
      error(*item, "ct-status: unknown conntrack status " + quote(text),
            hint_for(text, ir::ct_status_names(), "conntrack status"));
  }
  if (out.empty()) return std::nullopt;
  return out;
}

std::optional<std::vector<ir::MacAddr>> PolicyReader::Impl::read_macs(const Node& node,
                                                                      std::string_view field, bool* negate) {
  Peeled peeled{&node, node.text(), false};
  if (negate) {
    auto taken = peel(node, field);
    if (!taken) return std::nullopt;
    peeled = *taken;
    *negate = peeled.negate;
  }
  std::vector<ir::MacAddr> out;
  auto add = [&](const Node& item, std::string_view text) {
    if (auto mac = ir::parse_mac(text))
      out.push_back(*mac);
    else
      error(item, std::string(field) + ": " + quote(text) + " is not a MAC address",
            "write six hex bytes such as 52:54:00:12:34:56");
  };
  const Node& value = *peeled.node;
  if (value.is_scalar())
    add(value, peeled.text);
  else
    for (const Node* item : one_or_list(value, field, "a MAC address")) add(*item, item->text());
  if (out.empty()) return std::nullopt;
  return out;
}

void PolicyReader::Impl::read_mark(const Node& node, ir::Match& match) {
  auto peeled = peel(node, "mark");
  if (!peeled) return;
  match.mark_negate = peeled->negate;
  const Node& value = *peeled->node;
  if (value.is_mapping()) {
    check_fields(value, kMarkFields, "a mark match");
    const Node* mark = value.find("value");
    if (!mark) return error(value, "mark: the match has no value", "add value: NUMBER");
    if (auto number = unsigned_of(*mark, mark->text(), "mark.value", 0xffffffff))
      match.mark_value = static_cast<std::uint32_t>(*number);
    if (const Node* mask = value.find("mask"))
      if (auto number = unsigned_of(*mask, mask->text(), "mark.mask", 0xffffffff))
        match.mark_mask = static_cast<std::uint32_t>(*number);
    return;
  }
  if (!value.is_scalar()) return type_error(value, "mark", "a number or {value, mask}");
  if (auto number = unsigned_of(value, peeled->text, "mark", 0xffffffff))
    match.mark_value = static_cast<std::uint32_t>(*number);
}

std::optional<ir::RateLimit> PolicyReader::Impl::read_rate_limit(const Node& node) {
  ir::RateLimit limit;
  auto read_unit = [&](const Node& at, std::string_view unit) {
    const auto& units = rate_unit_names();
    if (std::find(units.begin(), units.end(), unit) != units.end()) {
      limit.unit = std::string(unit);
      return true;
    }
    error(at, "rate-limit: unknown unit " + quote(unit), hint_for(unit, units, "unit"));
    return false;
  };
  if (node.is_scalar() && node.scalar_type() == yaml::ScalarType::string) {
    std::string_view text = node.text();
    auto slash = text.find('/');
    auto rate = parse_unsigned(text.substr(0, slash));
    if (slash == std::string_view::npos || !rate || *rate > 0xffffffff || *rate == 0) {
      error(node, "rate-limit: " + quote(text) + " is not a rate",
            "write e.g. 10/second or {rate: 10, per: minute, burst: 5}");
      return std::nullopt;
    }
    limit.rate = static_cast<std::uint32_t>(*rate);
    return read_unit(node, text.substr(slash + 1)) ? std::optional(limit) : std::nullopt;
  }
  if (!node.is_mapping()) {
    type_error(node, "rate-limit", "a rate such as 10/second or {rate, per, burst}");
    return std::nullopt;
  }
  check_fields(node, kRateFields, "a rate limit");
  const Node* rate = node.find("rate");
  if (!rate) {
    error(node, "rate-limit: no rate", "add rate: NUMBER");
    return std::nullopt;
  }
  auto number = unsigned_of(*rate, rate->text(), "rate-limit.rate", 0xffffffff);
  if (!number) return std::nullopt;
  if (*number == 0) {
    error(*rate, "rate-limit.rate: a rate of 0 never matches", "give a rate of at least 1");
    return std::nullopt;
  }
  limit.rate = static_cast<std::uint32_t>(*number);
  if (const Node* per = node.find("per")) {
    auto unit = text_of(*per, "rate-limit.per", "a unit (second, minute, hour, day)");
    if (!unit || !read_unit(*per, *unit)) return std::nullopt;
  }
  if (const Node* burst = node.find("burst")) {
    auto value = unsigned_of(*burst, burst->text(), "rate-limit.burst", 0xffffffff);
    if (!value) return std::nullopt;
    limit.burst = static_cast<std::uint32_t>(*value);
  }
  return limit;
}

std::optional<std::string> PolicyReader::Impl::read_reject_with(const Node& node, std::string_view text,
                                                                std::string_view field) {
  const auto& names = reject_with_names();
  if (std::find(names.begin(), names.end(), text) != names.end()) return std::string(text);
  error(node, std::string(field) + ": unknown reject reply " + quote(text),
        hint_for(text, names, "reject reply"));
  return std::nullopt;
}

void PolicyReader::Impl::read_action(const RuleFields& fields, const ir::Match& match, ir::Action& action) {
  const Node* node = fields[rule_field("action")];
  if (!node) {
    error(fields.rule, "the rule has no action", "add action: " + join(ir::action_names(), " | "));
    return;
  }
  auto text = text_of(*node, "action", "an action name");
  if (!text) return;
  // "reject:tcp-reset" is short for action: reject, reject-with: tcp-reset.
  std::string_view word = text->substr(0, text->find(':'));
  auto kind = ir::parse_action(word);
  if (!kind) {
    error(*node, "unknown action " + quote(word), hint_for(word, ir::action_names(), "action"));
    return;
  }
  action.kind = *kind;
  if (word.size() < text->size()) {
    if (*kind != ir::ActionKind::reject)
      error(*node, "action: only reject takes a ':' reply", "write action: " + std::string(word));
    else if (fields[rule_field("reject-with")])
      error(*node, "action: the reply is given twice", "keep either reject:REPLY or reject-with");
    else if (auto with = read_reject_with(*node, text->substr(word.size() + 1), "action"))
      action.reject_with = *with;
  }

  for (const auto& argument : kActionArguments) {
    const Node* value = fields[argument.field];
    if (!value) continue;
    if (std::find(argument.actions.begin(), argument.actions.end(), *kind) == argument.actions.end()) {
      std::vector<std::string_view> takers;
      for (auto taker : argument.actions) takers.push_back(ir::to_string(taker));
      error(*value,
            quote(kRuleFields[argument.field]) + " only goes with action " + join(takers, " or ") + ", not " +
                quote(word),
            "remove " + std::string(kRuleFields[argument.field]) + " or change the action");
    }
  }
  auto need = [&](std::size_t field, std::string_view example) {
    if (fields[field]) return true;
    error(*node, "action " + std::string(word) + " needs " + quote(kRuleFields[field]),
          "add " + std::string(kRuleFields[field]) + ": " + std::string(example));
    return false;
  };
  switch (*kind) {
    case ir::ActionKind::reject:
      if (const Node* with = fields[rule_field("reject-with")])
        if (auto with_text = text_of(*with, "reject-with", "a reject reply"))
          if (auto reply = read_reject_with(*with, *with_text, "reject-with")) action.reject_with = *reply;
      if (action.reject_with == "tcp-reset" && excludes_protocol(match, 6))
        error(*node, "a tcp-reset reply needs protocol tcp",
              match.protocol_negate ? "make the protocol tcp or use an icmp reply"
                                    : "add tcp to the protocol or use an icmp reply");
      break;
    case ir::ActionKind::log:
      if (const Node* prefix = fields[rule_field("prefix")]) {
        if (!prefix->is_scalar())
          type_error(*prefix, "prefix", "a string");
        else
          action.log_prefix = prefix->text();
      }
      if (const Node* level = fields[rule_field("level")]) {
        if (auto number = level->as_int()) {
          if (*number < 0 || *number > 7)
            error(*level, "level: " + level->text() + " is not a syslog level",
                  "levels are 0 (emerg) to 7 (debug)");
          else
            action.log_level = static_cast<std::uint8_t>(*number);
        } else if (auto name = text_of(*level, "level", "a syslog level")) {
          if (auto parsed = parse_log_level(*name))
            action.log_level = *parsed;
          else
            error(*level, "level: unknown log level " + quote(*name),
                  hint_for(*name, log_level_names(), "level"));
        }
      }
      break;
    case ir::ActionKind::jump:
      if (need(rule_field("target"), "CHAIN"))
        if (auto target = text_of(*fields[rule_field("target")], "target", "a chain name")) {
          action.target = std::string(*target);
          chain_refs_.push_back({action.target, fields[rule_field("target")]->loc()});
        }
      break;
    case ir::ActionKind::ct_helper:
      if (need(rule_field("helper"), "ftp"))
        if (auto helper = text_of(*fields[rule_field("helper")], "helper", "a conntrack helper name")) {
          // The kernel's helper names (nf_conntrack_helper's name[16]): ftp, tftp, sip, Q.931, snmp_trap ...
          const bool fits =
              !helper->empty() && helper->size() < 16 &&
              std::all_of(helper->begin(), helper->end(), [](char c) {
                return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
              });
          if (fits)
            action.target = std::string(*helper);
          else
            error(*fields[rule_field("helper")],
                  "helper: " + quote(*helper) + " is not a conntrack helper name",
                  "give the kernel's name of the helper (1-15 letters, digits, '.', '-' or '_'), e.g. ftp, "
                  "tftp or sip");
        }
      break;
    case ir::ActionKind::tcp_mss_clamp:
      // pmtu (the default): what the route's MTU leaves; or a fixed MSS, at least IPv4's minimum.
      if (const Node* mss = fields[rule_field("mss")]; mss && mss->text() != "pmtu") {
        if (auto number = unsigned_of(*mss, mss->text(), "mss", 65535)) {
          if (*number < 536)
            error(*mss, "mss: " + mss->text() + " is below 536, the smallest MSS every host must take",
                  "use pmtu or a value from 536 to 65535");
          else
            action.mss = static_cast<std::uint16_t>(*number);
        }
      }
      break;
    case ir::ActionKind::set_mark:
      if (need(rule_field("set-mark"), "0x1")) {
        const Node& value = *fields[rule_field("set-mark")];
        if (value.is_mapping()) {
          check_fields(value, kMarkFields, "set-mark");
          if (const Node* mark = value.find("value")) {
            if (auto number = unsigned_of(*mark, mark->text(), "set-mark.value", 0xffffffff))
              action.mark_value = static_cast<std::uint32_t>(*number);
          } else {
            error(value, "set-mark: no value", "add value: NUMBER");
          }
          if (const Node* mask = value.find("mask"))
            if (auto number = unsigned_of(*mask, mask->text(), "set-mark.mask", 0xffffffff))
              action.mark_mask = static_cast<std::uint32_t>(*number);
        } else if (auto number = unsigned_of(value, value.text(), "set-mark", 0xffffffff)) {
          action.mark_value = static_cast<std::uint32_t>(*number);
        }
      }
      break;
    case ir::ActionKind::dnat:
    case ir::ActionKind::snat:
      if (need(rule_field("to"), "ADDRESS")) {
        const Node& to = *fields[rule_field("to")];
        if (auto text_to = text_of(to, "to", "an IP address")) {
          action.nat_addr = ir::parse_ip(*text_to);
          if (!action.nat_addr)
            error(to, "to: " + quote(*text_to) + " is not an IP address",
                  "write one address such as 192.0.2.10");
          else if (match.family != ir::Family::any && action.nat_addr->family != match.family)
            error(to,
                  "to: " + quote(*text_to) + " is not " + std::string(family_word(match.family)) +
                      " but the rule has family: " + std::string(ir::to_string(match.family)),
                  "give an address of the rule's family");
        }
      }
      break;
    default:
      break;
  }
  bool takes_port = *kind == ir::ActionKind::dnat || *kind == ir::ActionKind::snat ||
                    *kind == ir::ActionKind::redirect || *kind == ir::ActionKind::masquerade;
  if (const Node* port = fields[rule_field("to-port")]; port && takes_port) {
    if (auto text_port = text_of(*port, "to-port", "a port or a range"))
      action.nat_port = read_port_range(*port, *text_port, "to-port");
    // The kernel rewrites a port only in a packet it knows has one.
    if (!match.protocols || match.protocol_negate ||
        !std::all_of(match.protocols->begin(), match.protocols->end(), ir::protocol_has_ports))
      error(*port, "to-port needs a protocol with ports: only their packets have a port to rewrite",
            "add protocol: tcp, or a list of " + join(protocol_names(true), ", "));
  }
}

std::optional<std::pair<ir::Verdict, std::string>> PolicyReader::Impl::read_verdict(const Node& node,
                                                                                    std::string_view field) {
  auto text = text_of(node, field, "a verdict");
  if (!text) return std::nullopt;
  std::string_view word = text->substr(0, text->find(':'));
  auto verdict = ir::parse_verdict(word);
  if (!verdict) {
    error(node, std::string(field) + ": unknown verdict " + quote(word),
          hint_for(word, verdict_names(), "verdict"));
    return std::nullopt;
  }
  std::string reject_with;
  if (word.size() < text->size()) {
    if (*verdict != ir::Verdict::reject) {
      error(node, std::string(field) + ": only reject takes a ':' reply", "write " + std::string(word));
      return std::nullopt;
    }
    auto with = read_reject_with(node, text->substr(word.size() + 1), field);
    if (!with) return std::nullopt;
    reject_with = *with;
  }
  return std::pair{*verdict, reject_with};
}

// ---- stages -------------------------------------------------------------------------------------

void PolicyReader::Impl::read_stages(const Node& node) {
  if (!node.is_mapping()) return type_error(node, "stages", "a mapping of stage names to sections");
  for (std::size_t i = 0; i < node.size(); ++i) {
    const Node& key = node.keys()[i];
    const Node& value = node.values()[i];
    auto stage = ir::parse_stage(key.text());
    if (!stage) {
      error(key, "unknown stage " + quote(key.text()), hint_for(key.text(), ir::stage_names(), "stage"));
      continue;
    }
    auto& sections = ruleset_.stage(*stage).sections;
    // A single section may be written without the list around it.
    auto append_section = [&](const Node& section) {
      std::size_t index = sections.size();
      read_section(section, *stage, index, sections.emplace_back());
    };
    if (value.is_mapping()) {
      append_section(value);
    } else if (value.is_sequence()) {
      for (const auto& item : value.items()) append_section(item);
    } else {
      type_error(value, "stages." + key.text(), "a list of sections");
    }
  }
}

void PolicyReader::Impl::read_section(const Node& node, ir::Stage stage, std::size_t section_index,
                                      ir::Section& section) {
  std::string field = "stages." + std::string(ir::to_string(stage));
  if (!node.is_mapping()) return type_error(node, field, "a section {name, honour-allow, endpoints}");
  check_fields(node, kSectionFields, "a section");
  if (const Node* name = node.find("name"))
    if (auto text = text_of(*name, "name", "a section name")) section.name = std::string(*text);
  if (const Node* honour = node.find("honour-allow"))
    section.honour_allow = bool_of(*honour, "honour-allow").value_or(false);
  const Node* endpoints = node.find("endpoints");
  if (!endpoints) return error(node, "the section has no endpoints", "add endpoints: [{name: any, ...}]");
  if (!endpoints->is_sequence()) return type_error(*endpoints, "endpoints", "a list of endpoints");
  section.endpoints.resize(endpoints->items().size());
  for (std::size_t e = 0; e < section.endpoints.size(); ++e)
    read_endpoint(endpoints->items()[e], stage, endpoint_owner(stage, section_index, e),
                  section.endpoints[e]);
}

std::optional<std::string> PolicyReader::Impl::read_endpoint_set(const Node& node, std::string_view field,
                                                                 const std::string& owner) {
  if ((node.is_scalar() && node.text().starts_with('!')) || (node.is_mapping() && node.find("not"))) {
    error(node, std::string(field) + ": an endpoint cannot match a negated set",
          "list the addresses it should match, or put the test in a rule");
    return std::nullopt;
  }
  if (node.is_mapping()) {
    type_error(node, field, "a set name, an address or a list of addresses");
    return std::nullopt;
  }
  ir::AddrMatches matches;
  read_one_address(node, field, {owner, owner, -1}, 0, ir::Family::any, false, matches);
  if (matches.empty()) return std::nullopt;
  return matches.front().set_name.str();
}

void PolicyReader::Impl::read_endpoint(const Node& node, ir::Stage stage, const std::string& owner,
                                       ir::Endpoint& endpoint) {
  if (!node.is_mapping()) return type_error(node, "endpoint", "a mapping {name, iif, ..., groups, default}");
  check_fields(node, kEndpointFields, "an endpoint");
  endpoint.origin = {node.loc(), {}, -1};
  // Unnamed endpoints are called after their interface, so that trace output says something useful.
  if (const Node* name = node.find("name")) {
    if (auto text = text_of(*name, "name", "an endpoint name")) endpoint.name = std::string(*text);
  } else if (const Node* iif = node.find("iif"); iif && iif->is_scalar()) {
    endpoint.name = iif->text();
  } else {
    endpoint.name = "any";
  }
  endpoint.origin.policy = endpoint.name;
  for (auto [field, out] : {std::pair{"iif", &endpoint.match.iif}, std::pair{"oif", &endpoint.match.oif}}) {
    const Node* value = node.find(field);
    if (!value) continue;
    if (auto text = text_of(*value, field, "one interface name (or prefix+)"))
      *out = read_iface(*value, *text, field);
  }
  if (const Node* src = node.find("src")) endpoint.match.src_set = read_endpoint_set(*src, "src", owner);
  if (const Node* dst = node.find("dst")) endpoint.match.dst_set = read_endpoint_set(*dst, "dst", owner);
  if (const Node* mac = node.find("src-mac")) endpoint.match.src_mac = read_macs(*mac, "src-mac", nullptr);
  if (const Node* conntrack = node.find("conntrack")) {
    if (auto text = text_of(*conntrack, "conntrack", "a conntrack prelude")) {
      if (auto parsed = ir::parse_conntrack(*text)) {
        endpoint.conntrack = *parsed;
        if (ir::is_untracked(stage) && *parsed != ir::Conntrack::none)
          error(*conntrack,
                "conntrack: stage " + std::string(ir::to_string(stage)) + " comes before conntrack",
                "remove conntrack here; put it on the endpoints of later stages");
      } else {
        error(*conntrack, "conntrack: unknown prelude " + quote(*text),
              hint_for(*text, conntrack_names(), "conntrack prelude"));
      }
    }
  }
  if (const Node* failsafe = node.find("failsafe")) {
    endpoint.failsafe = bool_of(*failsafe, "failsafe").value_or(false);
    // docs/ir.md: only the untracked stages, prednat, input and output have a failsafe chain.
    bool stage_has_failsafe = stage != ir::Stage::forward && stage != ir::Stage::dnat &&
                              stage != ir::Stage::dnat_out && stage != ir::Stage::snat;
    if (endpoint.failsafe && !stage_has_failsafe)
      diag_.warning(failsafe->loc(),
                    "failsafe: stage " + std::string(ir::to_string(stage)) + " has no failsafe chain",
                    "failsafe ports guard the host's own traffic; remove this or move it to input/output");
  }
  const Node* groups = node.find("groups");
  const Node* chains = node.find("chains");
  if (groups && chains) {
    error(*chains, "an endpoint has either groups or chains, not both",
          "move these chains into a group of 'groups'");
  } else if (chains) {
    // `chains: [a, b]` is one unnamed group that goes on when its chains do not decide.
    ir::Group& group = endpoint.groups.emplace_back();
    group.origin = {chains->loc(), endpoint.name, -1};
    read_group_chains(*chains, stage, group);
  } else if (groups) {
    if (!groups->is_sequence()) {
      type_error(*groups, "groups", "a list of groups");
    } else {
      endpoint.groups.resize(groups->items().size());
      for (std::size_t g = 0; g < endpoint.groups.size(); ++g)
        read_group(groups->items()[g], stage, endpoint.groups[g]);
    }
  }
  if (const Node* verdict = node.find("default"))
    if (auto parsed = read_verdict(*verdict, "default"))
      std::tie(endpoint.default_verdict, endpoint.reject_with) = *parsed;
}

void PolicyReader::Impl::read_group(const Node& node, ir::Stage stage, ir::Group& group) {
  group.origin = {node.loc(), {}, -1};
  if (!node.is_mapping()) return type_error(node, "group", "a mapping {name, chains, on-end}");
  check_fields(node, kGroupFields, "a group");
  if (const Node* name = node.find("name"))
    if (auto text = text_of(*name, "name", "a group name")) group.name = std::string(*text);
  group.origin.policy = group.name;
  if (const Node* chains = node.find("chains"))
    read_group_chains(*chains, stage, group);
  else
    error(node, "the group has no chains", "add chains: [CHAIN, ...]");
  if (const Node* on_end = node.find("on-end"))
    if (auto parsed = read_verdict(*on_end, "on-end")) std::tie(group.on_end, group.reject_with) = *parsed;
}

void PolicyReader::Impl::read_group_chains(const Node& node, ir::Stage stage, ir::Group& group) {
  if (node.is_sequence() && node.items().empty()) return;  // a group with no chains yet: legal, it only ends
  for (const Node* item : one_or_list(node, "chains", "a chain name")) {
    group.chains.push_back(item->text());
    chain_refs_.push_back({item->text(), item->loc()});
    stage_uses_.push_back({item->text(), stage, item->loc()});
  }
}

// ---- whole-policy checks ------------------------------------------------------------------------

void PolicyReader::Impl::resolve_references() {
  std::vector<std::string_view> set_names, chain_names;
  for (const auto& [name, set] : ruleset_.sets)
    if (set.origin.policy.starts_with("set ")) set_names.push_back(name);
  for (const auto& [name, chain] : ruleset_.chains) chain_names.push_back(name);
  for (const auto& ref : set_refs_)
    if (!ruleset_.find_set(ref.name))
      diag_.error(ref.loc, "unknown set " + quote(ref.name), hint_for(ref.name, set_names, "known set"));
  for (const auto& ref : chain_refs_)
    if (!ruleset_.find_chain(ref.name))
      diag_.error(ref.loc, "unknown chain " + quote(ref.name),
                  hint_for(ref.name, chain_names, "known chain"));
}

// A chain that jumps, directly or not, into itself would never end.
void PolicyReader::Impl::check_jump_loops() {
  enum class Mark { unvisited, active, done };
  std::map<std::string, Mark> marks;
  std::vector<std::string> path;
  std::function<void(const ir::Chain&)> visit = [&](const ir::Chain& chain) {
    marks[chain.name] = Mark::active;
    path.push_back(chain.name);
    for (const auto& rule : chain.rules) {
      if (rule.action.kind != ir::ActionKind::jump) continue;
      const ir::Chain* target = ruleset_.find_chain(rule.action.target);
      if (!target) continue;
      Mark mark = marks[target->name];
      if (mark == Mark::active) {
        std::string loop;
        for (auto it = std::find(path.begin(), path.end(), target->name); it != path.end(); ++it)
          loop += *it + " -> ";
        diag_.error(rule.origin.loc, "jump loop: " + loop + target->name,
                    "a chain must not jump back into a chain that called it");
      } else if (mark == Mark::unvisited) {
        visit(*target);
      }
    }
    path.pop_back();
    marks[chain.name] = Mark::done;
  };
  for (const auto& [name, chain] : ruleset_.chains)
    if (marks[name] == Mark::unvisited) visit(chain);
}

// NAT belongs in the dnat/snat stages and notrack before conntrack; a chain's stage is where it is used.
void PolicyReader::Impl::check_stage_actions() {
  std::set<std::pair<std::string, std::size_t>> reported;
  std::function<void(const ir::Chain&, const ChainUse&, std::set<std::string>&)> walk =
      [&](const ir::Chain& chain, const ChainUse& use, std::set<std::string>& seen) {
        if (!seen.insert(chain.name).second) return;
        for (std::size_t r = 0; r < chain.rules.size(); ++r) {
          const ir::Rule& rule = chain.rules[r];
          if (rule.action.kind == ir::ActionKind::jump) {
            if (const ir::Chain* target = ruleset_.find_chain(rule.action.target)) walk(*target, use, seen);
            continue;
          }
          if (action_fits_stage(rule.action.kind, use.stage) || !reported.insert({chain.name, r}).second)
            continue;
          diag_.error(rule.origin.loc,
                      "action " + std::string(ir::to_string(rule.action.kind)) + " only works in stage " +
                          stages_for(rule.action.kind) + ", but chain " + quote(chain.name) +
                          " is used in stage " + std::string(ir::to_string(use.stage)) + " at " +
                          diag_.where(use.loc),
                      "move the rule to a chain that only stage " + stages_for(rule.action.kind) + " uses");
        }
      };
  for (const auto& use : stage_uses_) {
    std::set<std::string> seen;
    if (const ir::Chain* chain = ruleset_.find_chain(use.chain)) walk(*chain, use, seen);
  }
}

ir::Ruleset PolicyReader::Impl::finish() {
  resolve_references();
  check_jump_loops();
  check_stage_actions();
  ruleset_.frontend = "yaml";
  ruleset_.files = diag_.files();
  return std::move(ruleset_);
}

// ---- public face --------------------------------------------------------------------------------

PolicyReader::PolicyReader(Diagnostics& diag, bool split_chains)
    : impl_(std::make_unique<Impl>(diag, split_chains)) {}
PolicyReader::~PolicyReader() = default;
void PolicyReader::read_source(const std::string& source) {
  impl_->read_source(source);
}
void PolicyReader::read_text(std::string_view text, const std::string& name) {
  impl_->read_text(text, name);
}
ir::Ruleset PolicyReader::finish() {
  return impl_->finish();
}
bool PolicyReader::split_conflicted() const {
  return impl_->split_conflicted();
}

ir::Ruleset read_policy(const std::vector<std::string>& sources, Diagnostics& diag) {
  // First with large mappings of chains read on two threads, reporting into a copy; when that met a
  // name it could not check, once more on one thread. So only sources that can be read twice are
  // split: regular files, and directories (whose policy files are regular), not standard input, a
  // pipe or a FIFO, which the second reading would find empty.
  auto rereadable = [](const std::string& source) {
    std::error_code ec;
    const auto status = std::filesystem::status(source, ec);
    return std::filesystem::is_regular_file(status) || std::filesystem::is_directory(status);
  };
  if (std::all_of(sources.begin(), sources.end(), rereadable)) {
    Diagnostics trial = diag;
    PolicyReader split(trial, true);
    for (const auto& source : sources) split.read_source(source);
    if (!split.split_conflicted()) {
      ir::Ruleset ruleset = split.finish();
      diag = std::move(trial);
      return ruleset;
    }
  }
  PolicyReader reader(diag);
  for (const auto& source : sources) reader.read_source(source);
  return reader.finish();
}

}  // namespace fwe::yamlfe
