// rich.cpp - both forms fill a RawRule (the attribute strings as written), which one check turns into
// a RichRule; the canonical text is built from the strings, as firewalld's str() does.
#include "rich.hpp"

#include <algorithm>
#include <array>
#include <map>

#include "values.hpp"

namespace fwe::firewalld {
namespace {

constexpr std::string_view kManual = "see firewalld.richlanguage(5)";

struct RawAddress {
  std::string address, mac, ipset;  // empty = absent, as firewalld treats ""
  bool invert = false;
};

struct RawLimit {
  std::string value;  // RATE/UNIT
  std::string burst;  // empty: none given
};

struct RawPart {  // an element, a log, an audit or an action: its name and attributes
  std::string name;
  std::map<std::string, std::string> attributes;
  std::optional<RawLimit> limit;
  bool present() const { return !name.empty(); }
  const std::string* get(const std::string& key) const {
    auto it = attributes.find(key);
    return it == attributes.end() ? nullptr : &it->second;
  }
};

struct RawRule {
  std::optional<std::string> family;
  std::int64_t priority = 0;
  std::optional<RawAddress> source, destination;
  RawPart element, log, audit, action;
};

struct Problem {
  std::string message, hint;
};

// firewalld keeps MAC addresses upper case (Rich_Source), which matters for the canonical text.
std::string upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// Rich_Limit's constructor shortens the unit ("3/minute" -> "3/m").
std::string canonical_limit(const std::string& value) {
  const std::size_t slash = value.find('/');
  if (slash == std::string::npos || value.find('/', slash + 1) != std::string::npos) return value;
  const std::string unit = value.substr(slash + 1);
  if (unit == "second" || unit == "minute" || unit == "hour" || unit == "day")
    return value.substr(0, slash + 1) + unit.substr(0, 1);
  return value;
}

// Inside double quotes the lexer (split_words) takes \\ and \" for \ and ": escape them so that the text
// reads back as the same value.
std::string quoted(const std::string& key, const std::string& value) {
  std::string out = " " + key + "=\"";
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string limit_text(const std::optional<RawLimit>& limit) {
  if (!limit) return "";
  return " limit value=\"" + limit->value + "\"" + (limit->burst.empty() ? "" : " burst=" + limit->burst);
}

std::string address_text(const char* what, const RawAddress& a) {
  std::string out = std::string(" ") + what + (a.invert ? " NOT" : "");
  if (!a.address.empty()) return out + quoted("address", a.address);
  if (!a.mac.empty()) return out + quoted("mac", a.mac);
  return out + quoted("ipset", a.ipset);
}

std::string attribute_or_empty(const RawPart& part, const std::string& key) {
  const std::string* value = part.get(key);
  return value ? *value : std::string();
}

// firewalld's Rich_Rule.__str__.
std::string canonical_text(const RawRule& r) {
  std::string out = "rule";
  if (r.priority != 0) out += " priority=\"" + std::to_string(r.priority) + "\"";
  if (r.family) out += quoted("family", *r.family);
  if (r.source) out += address_text("source", *r.source);
  if (r.destination) out += address_text("destination", *r.destination);
  const RawPart& e = r.element;
  if (e.name == "service" || e.name == "icmp-block" || e.name == "icmp-type") {
    out += " " + e.name + quoted("name", attribute_or_empty(e, "name"));
  } else if (e.name == "port" || e.name == "source-port") {
    out += " " + e.name + quoted("port", attribute_or_empty(e, "port")) +
           quoted("protocol", attribute_or_empty(e, "protocol"));
  } else if (e.name == "protocol") {
    out += " protocol" + quoted("value", attribute_or_empty(e, "value"));
  } else if (e.name == "masquerade") {
    out += " masquerade";
  } else if (e.name == "tcp-mss-clamp") {
    out += " tcp-mss-clamp";
    if (const std::string* value = e.get("value"); value && !value->empty()) out += quoted("value", *value);
  } else if (e.name == "forward-port") {
    out += " forward-port" + quoted("port", attribute_or_empty(e, "port")) +
           quoted("protocol", attribute_or_empty(e, "protocol"));
    if (const std::string* to = e.get("to-port"); to && !to->empty()) out += quoted("to-port", *to);
    if (const std::string* to = e.get("to-addr"); to && !to->empty()) out += quoted("to-addr", *to);
  }
  if (r.log.present()) {
    out += " " + r.log.name;
    const std::array<const char*, 3> keys = {"group", "prefix", "queue-size"};
    for (const char* key : keys)
      if (const std::string* value = r.log.get(key); value && !value->empty()) out += quoted(key, *value);
    if (const std::string* level = r.log.get("level"); level && !level->empty())
      out += quoted("level", *level);
    out += limit_text(r.log.limit);
  }
  if (r.audit.present()) out += " audit" + limit_text(r.audit.limit);
  if (r.action.present()) {
    out += " " + r.action.name;
    if (const std::string* type = r.action.get("type"); type && !type->empty()) out += quoted("type", *type);
    if (r.action.name == "mark") out += " set=" + attribute_or_empty(r.action, "set");
    out += limit_text(r.action.limit);
  }
  return out;
}

// The cells of Rich_Rule.__lt__'s comparisons, in its order: priority, family, source, destination,
// element, log, audit, action. An absent part sorts first; parts of different classes sort by the class
// name; a part's values as its dataclass holds them. Its log and action classes compare field by field
// with an `elif` chain that is not quite lexicographic, and equal rules come in set order (which varies
// from one firewalld process to the next): lexicographic order here, load order for ties.
std::vector<std::variant<std::int64_t, std::string>> sort_key(const RawRule& r) {
  std::vector<std::variant<std::int64_t, std::string>> key{r.priority, r.family.value_or("")};
  auto absent = [&](bool is_absent) {
    key.emplace_back(std::int64_t{is_absent ? 0 : 1});
    return is_absent;
  };
  auto number = [](std::string_view text) { return parse_signed(text).value_or(0); };
  auto limit = [&](const std::optional<RawLimit>& l) {  // Rich_Limit: burst, rate, duration
    if (absent(!l)) return;
    const std::size_t slash = l->value.find('/');
    key.emplace_back(number(l->burst));
    key.emplace_back(number(std::string_view(l->value).substr(0, slash)));
    key.emplace_back(l->value.substr(slash + 1));
  };
  for (const auto* address : {&r.source, &r.destination}) {
    if (absent(!*address)) continue;
    key.emplace_back((*address)->address);
    if (address == &r.source) key.emplace_back((*address)->mac);
    key.emplace_back((*address)->ipset);
    key.emplace_back(std::int64_t{(*address)->invert});
  }
  const RawPart& e = r.element;
  static const std::map<std::string, std::pair<std::string, std::vector<std::string>>> kElements = {
      {"forward-port", {"Rich_ForwardPort", {"port", "protocol", "to-port", "to-addr"}}},
      {"icmp-block", {"Rich_IcmpBlock", {"name"}}},
      {"icmp-type", {"Rich_IcmpType", {"name"}}},
      {"masquerade", {"Rich_Masquerade", {}}},
      {"port", {"Rich_Port", {"port", "protocol"}}},
      {"protocol", {"Rich_Protocol", {"value"}}},
      {"service", {"Rich_Service", {"name"}}},
      {"source-port", {"Rich_SourcePort", {"port", "protocol"}}},
      {"tcp-mss-clamp", {"Rich_Tcp_Mss_Clamp", {"value"}}}};
  if (!absent(!e.present())) {
    const auto known = kElements.find(e.name);  // check() let no other through
    key.emplace_back(known == kElements.end() ? e.name : known->second.first);
    if (known != kElements.end())
      for (const std::string& field : known->second.second) key.emplace_back(attribute_or_empty(e, field));
  }
  if (!absent(!r.log.present())) {
    if (r.log.name == "log") {
      key.emplace_back(std::string("Rich_Log"));
      key.emplace_back(attribute_or_empty(r.log, "prefix"));
      key.emplace_back(attribute_or_empty(r.log, "level"));
    } else {
      key.emplace_back(std::string("Rich_NFLog"));
      key.emplace_back(number(attribute_or_empty(r.log, "group")));
      key.emplace_back(attribute_or_empty(r.log, "prefix"));
      key.emplace_back(number(attribute_or_empty(r.log, "queue-size")));
    }
    limit(r.log.limit);
  }
  if (!absent(!r.audit.present())) limit(r.audit.limit);
  if (!absent(!r.action.present())) {
    static const std::map<std::string, std::string> kActions = {
        {"accept", "Rich_Accept"}, {"drop", "Rich_Drop"}, {"mark", "Rich_Mark"}, {"reject", "Rich_Reject"}};
    const auto known = kActions.find(r.action.name);
    key.emplace_back(known == kActions.end() ? r.action.name : known->second);
    if (r.action.name == "reject") key.emplace_back(attribute_or_empty(r.action, "type"));
    if (r.action.name == "mark") key.emplace_back(attribute_or_empty(r.action, "set"));
    limit(r.action.limit);
  }
  return key;
}

std::optional<Problem> check_limit(const std::optional<RawLimit>& raw, std::optional<RichLimit>& into) {
  if (!raw) return std::nullopt;
  const std::string* limit = &raw->value;
  const std::size_t slash = limit->find('/');
  const std::string unit = slash == std::string::npos ? "" : limit->substr(slash + 1);
  auto rate = parse_signed(slash == std::string::npos ? "" : limit->substr(0, slash));
  static const std::map<std::string, std::string> kUnits = {
      {"s", "second"}, {"m", "minute"}, {"h", "hour"}, {"d", "day"}};
  if (!rate || *rate < 1 || *rate > 0xffffffff || !kUnits.count(unit))
    return Problem{"invalid limit '" + *limit + "'", "write RATE/UNIT with RATE >= 1 and UNIT s, m, h or d"};
  if (*rate == 1 && unit == "d")
    return Problem{"limit '1/d' is too slow", "firewalld refuses 1/d; use a faster rate, e.g. 1/h"};
  // 2.2+: burst=N, 0..10,000,000 (Rich_Limit._burst_parse); 0 is the backend's default.
  std::int64_t burst = 0;
  if (!raw->burst.empty()) {
    auto number = parse_signed(raw->burst);
    if (!number || *number < 0 || *number > 10'000'000)
      return Problem{"invalid limit burst '" + raw->burst + "'", "use a number 0..10000000"};
    burst = *number;
  }
  into = RichLimit{static_cast<std::uint32_t>(*rate), kUnits.at(unit), static_cast<std::uint32_t>(burst)};
  return std::nullopt;
}

std::optional<Problem> check_address(const RawAddress& raw, const std::optional<std::string>& family,
                                     const char* what, std::optional<RichAddress>& into) {
  RichAddress a;
  a.invert = raw.invert;
  const std::string w = what;
  if (!raw.address.empty()) {
    if (!family) return Problem{w + " address needs a rule family", "add family=\"ipv4\" or family=\"ipv6\""};
    if (!raw.mac.empty()) return Problem{w + " has both an address and a mac", "give only one of them"};
    if (!raw.ipset.empty()) return Problem{w + " has both an address and an ipset", "give only one of them"};
    a.cidr = parse_address(raw.address, *family == "ipv4" ? Family::ipv4 : Family::ipv6);
    if (!a.cidr)
      return Problem{"'" + raw.address + "' is not a valid " + *family + " address",
                     "write ADDRESS[/PREFIX] of the rule's family"};
  } else if (!raw.mac.empty()) {
    if (!raw.ipset.empty()) return Problem{w + " has both a mac and an ipset", "give only one of them"};
    a.kind = RichAddress::Kind::mac;
    a.mac = parse_mac_address(raw.mac);
    if (!a.mac) return Problem{"'" + raw.mac + "' is not a valid MAC address", "write XX:XX:XX:XX:XX:XX"};
  } else if (!raw.ipset.empty()) {
    a.kind = RichAddress::Kind::ipset;
    a.ipset = raw.ipset;
    if (raw.ipset.size() > 32)
      return Problem{"ipset name '" + raw.ipset + "' is too long", "use at most 32 characters"};
  } else {
    return Problem{w + " has no address, mac or ipset", "give one of them"};
  }
  into = std::move(a);
  return std::nullopt;
}

std::optional<Problem> check_port(const RawPart& e, const std::string& key, PortSpec& into,
                                  bool check_protocol) {
  const std::string text = attribute_or_empty(e, key);
  auto range = parse_port_range(text);
  if (!range)
    return Problem{"invalid port '" + text + "' in " + e.name,
                   "write N or N-M with 0 <= N < M <= 65535, or a name from /etc/services"};
  into.range = *range;
  if (check_protocol) {
    into.protocol = attribute_or_empty(e, "protocol");
    if (!is_port_protocol(into.protocol))
      return Problem{"invalid protocol '" + into.protocol + "' in " + e.name, "use tcp, udp, sctp or dccp"};
  }
  return std::nullopt;
}

bool is_terminal_action(const std::string& action) {
  return action == "accept" || action == "reject" || action == "drop";
}

// Rich_Rule.check, in firewalld's order, producing the model's rule.
std::optional<Problem> check(const RawRule& r, RichRule& out) {
  const bool has_element = r.element.present();
  const std::string& element = r.element.name;
  if (!r.family && ((r.source && !r.source->address.empty()) || r.destination || element == "forward-port"))
    return Problem{"the rule needs a family", "add family=\"ipv4\" or family=\"ipv6\""};
  if (r.priority < -32768 || r.priority > 32767)
    return Problem{"priority " + std::to_string(r.priority) + " is out of range", "use -32768..32767"};
  if (!has_element && (!r.log.present() || r.priority == 0)) {
    if (!r.action.present()) return Problem{"the rule has no element and no action", "add an action"};
    if (!r.source && !r.destination && r.priority == 0)
      return Problem{"the rule has no element, no source and no destination",
                     "add what it matches (a service, port, source, ...)"};
  }
  if (element != "icmp-block" && element != "forward-port" && element != "masquerade" &&
      element != "tcp-mss-clamp" && !r.log.present() && !r.audit.present() && !r.action.present())
    return Problem{"the rule has no action, log or audit", "add accept, reject, drop, mark, log or audit"};

  out.family = !r.family ? Family::any : *r.family == "ipv4" ? Family::ipv4 : Family::ipv6;
  out.priority = static_cast<std::int32_t>(r.priority);
  if (r.source)
    if (auto p = check_address(*r.source, r.family, "source", out.source)) return p;
  if (r.destination) {
    if (!r.destination->mac.empty()) return Problem{"a destination cannot be a MAC", "use address or ipset"};
    if (auto p = check_address(*r.destination, r.family, "destination", out.destination)) return p;
  }

  RichElement& e = out.element;
  const RawPart& raw = r.element;
  if (element == "service" || element == "icmp-block" || element == "icmp-type") {
    e.kind = element == "service"      ? RichElement::Kind::service
             : element == "icmp-block" ? RichElement::Kind::icmp_block
                                       : RichElement::Kind::icmp_type;
    e.name = attribute_or_empty(raw, "name");
    if (e.name.empty()) return Problem{element + " without a name", "add name=\"...\""};
    if (element == "icmp-block" && r.action.present())
      return Problem{"an icmp-block rule cannot have an action (it always rejects)",
                     "remove the action, or use icmp-type with the action"};
  } else if (element == "port" || element == "source-port") {
    e.kind = element == "port" ? RichElement::Kind::port : RichElement::Kind::source_port;
    e.port.emplace();
    if (auto p = check_port(raw, "port", *e.port, true)) return p;
  } else if (element == "protocol") {
    e.kind = RichElement::Kind::protocol;
    const std::string value = attribute_or_empty(raw, "value");
    auto number = parse_protocol_value(value);
    if (!number)
      return Problem{"invalid protocol '" + value + "'", "use a number 0..255 or a name from /etc/protocols"};
    e.protocol = ProtocolSpec{*number, {}};
  } else if (element == "masquerade") {
    e.kind = RichElement::Kind::masquerade;
    if (r.action.present()) return Problem{"masquerade cannot have an action", "remove the action"};
    if (r.source && !r.source->mac.empty())
      return Problem{"masquerade cannot match a MAC source", "match an address or ipset"};
  } else if (element == "forward-port") {
    e.kind = RichElement::Kind::forward_port;
    PortSpec port;
    if (auto p = check_port(raw, "port", port, true)) return p;
    ForwardPort fp;
    fp.port = port.range;
    fp.protocol = port.protocol;
    const std::string to_port = attribute_or_empty(raw, "to-port"),
                      to_addr = attribute_or_empty(raw, "to-addr");
    if (to_port.empty() && to_addr.empty())
      return Problem{"forward-port needs to-port or to-addr", "add where to forward to"};
    if (!to_port.empty()) {
      PortSpec to;
      if (auto p = check_port(raw, "to-port", to, false)) return p;
      fp.to_port = to.range;
    }
    if (!to_addr.empty()) {
      fp.to_addr = parse_single_address(to_addr, out.family);
      if (!fp.to_addr)
        return Problem{"to-addr '" + to_addr + "' is not one " + *r.family + " address",
                       "write a single address of the rule's family"};
    }
    if (r.action.present()) return Problem{"forward-port cannot have an action", "remove the action"};
    e.forward_port = fp;
  } else if (element == "tcp-mss-clamp") {
    e.kind = RichElement::Kind::tcp_mss_clamp;
    if (r.action.present()) return Problem{"tcp-mss-clamp cannot have an action", "remove the action"};
    const std::string value = attribute_or_empty(raw, "value");
    const auto number = parse_signed(value).value_or(0);
    const bool number_ok =
        number >= 536 && number <= 65535 && value.find_first_not_of("0123456789") == std::string::npos;
    if (!value.empty() && value != "pmtu" && value != "None" && !number_ok)
      return Problem{"invalid tcp-mss-clamp value '" + value + "'", "use pmtu or a number from 536 to 65535"};
    e.mss_value = value.empty() || value == "None" ? "pmtu" : value;
  }

  if (r.log.present()) {
    RichLog log;
    log.kind = r.log.name == "nflog" ? RichLog::Kind::nflog : RichLog::Kind::log;
    log.prefix = attribute_or_empty(r.log, "prefix");
    if (log.prefix.size() > 127) return Problem{"log prefix longer than 127 characters", "shorten it"};
    if (log.kind == RichLog::Kind::log) {
      log.level = attribute_or_empty(r.log, "level");
      static const std::array<std::string_view, 8> kLevels = {"emerg",   "alert",  "crit", "error",
                                                              "warning", "notice", "info", "debug"};
      if (!log.level.empty() && std::find(kLevels.begin(), kLevels.end(), log.level) == kLevels.end())
        return Problem{"invalid log level '" + log.level + "'",
                       "use emerg, alert, crit, error, warning, notice, info or debug"};
    } else {
      for (const auto& [key, into] :
           {std::pair{"group", &log.group}, std::pair{"queue-size", &log.queue_size}}) {
        const std::string value = attribute_or_empty(r.log, key);
        if (value.empty()) continue;
        auto number = parse_unsigned(value, 65535);
        if (!number)
          return Problem{std::string("nflog ") + key + " '" + value + "' is invalid", "use 0..65535"};
        *into = static_cast<std::uint16_t>(*number);
      }
    }
    if (auto p = check_limit(r.log.limit, log.limit)) return p;
    out.log = std::move(log);
  }
  if (r.audit.present()) {
    if (!is_terminal_action(r.action.name))
      return Problem{"audit needs an accept, reject or drop action", "add one of them"};
    std::optional<RichLimit> limit;
    if (auto p = check_limit(r.audit.limit, limit)) return p;
    out.audit = limit.value_or(RichLimit{});
    out.audit_present = true;
  }
  if (r.action.present()) {
    RichAction& a = out.action;
    const std::string& name = r.action.name;
    a.kind = name == "accept"   ? RichAction::Kind::accept
             : name == "reject" ? RichAction::Kind::reject
             : name == "drop"   ? RichAction::Kind::drop
                                : RichAction::Kind::mark;
    if (a.kind == RichAction::Kind::reject) {
      a.reject_type = attribute_or_empty(r.action, "type");
      if (!a.reject_type.empty()) {
        if (!r.family)
          return Problem{"a reject type needs a rule family", "add family=\"ipv4\" or family=\"ipv6\""};
        static const std::vector<std::string_view> kV4 = {"icmp-host-prohibited",
                                                          "host-prohib",
                                                          "icmp-net-unreachable",
                                                          "net-unreach",
                                                          "icmp-host-unreachable",
                                                          "host-unreach",
                                                          "icmp-port-unreachable",
                                                          "port-unreach",
                                                          "icmp-proto-unreachable",
                                                          "proto-unreach",
                                                          "icmp-net-prohibited",
                                                          "net-prohib",
                                                          "tcp-reset",
                                                          "tcp-rst",
                                                          "icmp-admin-prohibited",
                                                          "admin-prohib"};
        static const std::vector<std::string_view> kV6 = {"icmp6-adm-prohibited",
                                                          "adm-prohibited",
                                                          "icmp6-no-route",
                                                          "no-route",
                                                          "icmp6-addr-unreachable",
                                                          "addr-unreach",
                                                          "icmp6-port-unreachable",
                                                          "port-unreach",
                                                          "tcp-reset"};
        const auto& valid = *r.family == "ipv4" ? kV4 : kV6;
        if (std::find(valid.begin(), valid.end(), a.reject_type) == valid.end()) {
          std::string hint = did_you_mean(a.reject_type, valid);
          if (hint.empty()) hint = "see the reject types for " + *r.family + " in firewalld.richlanguage(5)";
          return Problem{"reject type '" + a.reject_type + "' is not valid for " + *r.family, hint};
        }
      }
    } else if (a.kind == RichAction::Kind::mark) {
      const std::string set = attribute_or_empty(r.action, "set");
      const std::size_t slash = set.find('/');
      auto value = parse_unsigned(set.substr(0, slash), 0xffffffff);
      std::optional<std::uint64_t> mask;
      if (slash != std::string::npos) mask = parse_unsigned(set.substr(slash + 1), 0xffffffff);
      if (!value || (slash != std::string::npos && !mask))
        return Problem{"invalid mark '" + set + "'", "write VALUE or VALUE/MASK, each a 32-bit number"};
      a.mark = static_cast<std::uint32_t>(*value);
      a.mark_has_mask = mask.has_value();
      a.mark_mask = static_cast<std::uint32_t>(mask.value_or(0xffffffff));
    }
    if (auto p = check_limit(r.action.limit, a.limit)) return p;
  }
  out.text = canonical_text(r);
  out.order = sort_key(r);
  return std::nullopt;
}

std::optional<RichRule> finish(const RawRule& raw, SourceLoc loc, Severity severity, Diagnostics& diag) {
  RichRule rule;
  rule.loc = loc;
  if (auto problem = check(raw, rule)) {
    std::string hint = problem->hint;
    hint += (hint.empty() ? "" : "; ") + std::string(kManual);
    diag.report(severity, loc, "invalid rich rule: " + problem->message, hint);
    return std::nullopt;
  }
  if (rule.element.port) rule.element.port->loc = loc;
  if (rule.element.protocol) rule.element.protocol->loc = loc;
  if (rule.element.forward_port) rule.element.forward_port->loc = loc;
  return rule;
}

// ---- string form ----------------------------------------------------------------------------------

// shlex.split in POSIX mode: whitespace separates words, quotes group, backslash escapes.
std::optional<std::vector<std::string>> split_words(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else if (c == '\'' || c == '"') {
      in_word = true;
      // Inside double quotes \\ and \" stand for \ and ", so an escaped quote does not close the word.
      std::size_t j = i + 1;
      for (; j < text.size() && text[j] != c; ++j) {
        if (c == '"' && text[j] == '\\' && j + 1 < text.size() && (text[j + 1] == '\\' || text[j + 1] == '"'))
          ++j;
        word += text[j];
      }
      if (j == text.size()) return std::nullopt;
      i = j;
    } else if (c == '\\') {
      if (i + 1 >= text.size()) return std::nullopt;
      word += text[++i];
      in_word = true;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

// The byte offset of the first byte that is not part of a well-formed UTF-8 sequence, if any. firewalld
// reads rules as Unicode strings, so such a rule never reaches it.
std::optional<std::size_t> invalid_utf8_at(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 1;
    unsigned char low = 0x80, high = 0xbf;  // the allowed range of the second byte
    if (lead < 0x80) {
      ++i;
      continue;
    }
    if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      if (lead == 0xe0) low = 0xa0;   // overlong
      if (lead == 0xed) high = 0x9f;  // surrogates
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      if (lead == 0xf0) low = 0x90;   // overlong
      if (lead == 0xf4) high = 0x8f;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + length > text.size()) return i;
    for (std::size_t k = 1; k < length; ++k) {
      const auto byte = static_cast<unsigned char>(text[i + k]);
      if (k == 1 ? (byte < low || byte > high) : (byte < 0x80 || byte > 0xbf)) return i;
    }
    i += length;
  }
  return std::nullopt;
}

// Non-printable characters (C0 and C1 control codes) are removed before lexing, as firewalld does. The
// text is valid UTF-8, so a C1 code point is always the two bytes 0xc2 0x80..0x9f.
std::string strip_non_printable(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 32 || c == 127) continue;
    if (c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0) {
      ++i;
      continue;
    }
    out += text[i];
  }
  return out;
}

struct Token {
  std::string element, name, value;  // element, or name=value
  bool is_attribute() const { return !name.empty(); }
};

std::optional<Problem> lex(std::string_view text, std::vector<Token>& tokens) {
  if (const auto at = invalid_utf8_at(text))
    return Problem{"the text is not UTF-8 (byte " + std::to_string(*at + 1) + ")",
                   "write the rule as UTF-8 text"};
  auto words = split_words(strip_non_printable(text));
  if (!words) return Problem{"unbalanced quotes", "close every quote"};
  for (auto& word : *words) {
    const std::size_t eq = word.find('=');
    if (eq == std::string::npos) {
      tokens.push_back({word, {}, {}});
      continue;
    }
    if (eq == 0 || eq + 1 == word.size() || word.find('=', eq + 1) != std::string::npos)
      return Problem{"malformed attribute '" + word + "'", "write NAME=VALUE"};
    tokens.push_back({{}, word.substr(0, eq), word.substr(eq + 1)});
  }
  tokens.push_back({"EOL", {}, {}});
  return std::nullopt;
}

bool is_element_kind(const std::string& name) {
  static const std::array<std::string_view, 9> kElements = {"service",      "port",        "protocol",
                                                            "icmp-block",   "icmp-type",   "masquerade",
                                                            "forward-port", "source-port", "tcp-mss-clamp"};
  return std::find(kElements.begin(), kElements.end(), name) != kElements.end();
}

// The state machine of Rich_Rule._import_from_string: an element collects the attributes that follow
// it and ends at the first token that is not one of its attributes.
std::optional<Problem> parse_tokens(const std::vector<Token>& tokens, RawRule& r) {
  static const std::map<std::string, std::vector<std::string>> kAttributes = {
      {"source", {"address", "mac", "ipset", "invert"}},
      {"destination", {"address", "ipset", "invert"}},
      {"service", {"name"}},
      {"port", {"port", "protocol"}},
      {"source-port", {"port", "protocol"}},
      {"protocol", {"value"}},
      {"icmp-block", {"name"}},
      {"icmp-type", {"name"}},
      {"masquerade", {}},
      {"tcp-mss-clamp", {"value"}},
      {"forward-port", {"port", "protocol", "to-port", "to-addr"}},
      {"log", {"prefix", "level"}},
      {"nflog", {"group", "prefix", "queue-size"}},
      {"audit", {}},
      {"accept", {}},
      {"drop", {}},
      {"reject", {"type"}},
      {"mark", {"set"}},
  };
  static const std::array<std::string_view, 19> kKnownAttributes = {
      "priority", "family",     "address", "mac",     "ipset", "invert", "value",
      "port",     "protocol",   "to-port", "to-addr", "name",  "group",  "prefix",
      "level",    "queue-size", "type",    "set",     "burst"};
  if (tokens.size() < 2 || tokens[0].element != "rule")
    return Problem{"a rich rule starts with 'rule'", "write rule [family=...] ..."};
  std::size_t i = 1;
  auto attribute_allowed = [&](const std::string& part, const Token& t) {
    const auto& allowed = kAttributes.at(part);
    return t.is_attribute() && std::find(allowed.begin(), allowed.end(), t.name) != allowed.end();
  };
  while (tokens[i].element != "EOL") {
    const Token& t = tokens[i];
    if (t.is_attribute()) {
      if (std::find(kKnownAttributes.begin(), kKnownAttributes.end(), t.name) == kKnownAttributes.end())
        return Problem{"unknown attribute '" + t.name + "'", "check the spelling"};
      if (t.name == "family") {
        if (t.value != "ipv4" && t.value != "ipv6")
          return Problem{"family '" + t.value + "' is invalid", "use ipv4 or ipv6"};
        r.family = t.value;
      } else if (t.name == "priority") {
        auto priority = parse_signed(t.value);
        if (!priority) return Problem{"priority '" + t.value + "' is not a number", "use -32768..32767"};
        r.priority = *priority;
      } else {
        return Problem{"attribute '" + t.name + "' outside of any element",
                       "put it after the element it belongs to"};
      }
      ++i;
      continue;
    }
    const std::string& part = t.element;
    if (part == "rule") return Problem{"'rule' appears twice", "write one rule at a time"};
    if (!kAttributes.count(part)) {
      std::string hint =
          did_you_mean(part, {"source", "destination", "service", "port", "protocol", "icmp-block",
                              "icmp-type", "masquerade", "forward-port", "source-port", "tcp-mss-clamp",
                              "log", "nflog", "audit", "accept", "drop", "reject", "mark"});
      return Problem{"unknown element '" + part + "'", hint.empty() ? "check the spelling" : hint};
    }
    ++i;
    if (part == "source" || part == "destination") {
      auto& slot = part == "source" ? r.source : r.destination;
      if (slot) return Problem{"more than one " + part, "a rule has at most one " + part};
      RawAddress a;
      bool any = false;
      for (; attribute_allowed(part, tokens[i]) || tokens[i].element == "not" || tokens[i].element == "NOT";
           ++i) {
        const Token& at = tokens[i];
        if (!at.is_attribute()) {
          a.invert = true;
          continue;
        }
        any = true;
        if (at.name == "address") a.address = at.value;
        if (at.name == "mac") a.mac = upper(at.value);
        if (at.name == "ipset") a.ipset = at.value;
        if (at.name == "invert") a.invert = true;  // any non-empty value inverts (a Python truthiness quirk)
      }
      if (!any || (a.address.empty() && a.mac.empty() && a.ipset.empty()))
        return Problem{part + " has no address, mac or ipset", "give one of them"};
      slot = a;
      continue;
    }
    RawPart* slot = nullptr;
    if (is_element_kind(part)) {
      slot = &r.element;
    } else if (part == "log" || part == "nflog") {
      slot = &r.log;
    } else if (part == "audit") {
      slot = &r.audit;
    } else {
      slot = &r.action;
    }
    const std::string kind = slot == &r.element ? "element"
                             : slot == &r.log   ? "log"
                             : slot == &r.audit ? "audit"
                                                : "action";
    if (slot->present())
      return Problem{"more than one " + kind + " ('" + slot->name + "' and '" + part + "')",
                     "split it into two rules"};
    slot->name = part;
    const bool single_attribute =
        part == "service" || part == "protocol" || part == "icmp-block" || part == "icmp-type";
    if (single_attribute) {
      if (!attribute_allowed(part, tokens[i]))
        return Problem{"'" + part + "' needs its attribute",
                       "write " + part + " " + kAttributes.at(part)[0] + "=..."};
      slot->attributes[tokens[i].name] = tokens[i].value;
      ++i;
      continue;
    }
    for (;;) {
      if (attribute_allowed(part, tokens[i])) {
        slot->attributes[tokens[i].name] = tokens[i].value;
        ++i;
      } else if (tokens[i].element == "limit" && slot != &r.element) {
        if (!tokens[i + 1].is_attribute() || tokens[i + 1].name != "value")
          return Problem{"'limit' needs value=RATE/UNIT", "write limit value=3/m"};
        slot->limit = RawLimit{canonical_limit(tokens[i + 1].value), ""};
        i += 2;
        if (tokens[i].is_attribute() && tokens[i].name == "burst") slot->limit->burst = tokens[i++].value;
      } else {
        break;
      }
    }
  }
  return std::nullopt;
}

// ---- XML form -------------------------------------------------------------------------------------

std::string attribute(const xml::Element& e, std::string_view key) {
  const std::string* value = e.attribute(key);
  return value ? *value : std::string();
}

bool is_yes(std::string value) {
  for (char& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return value == "yes" || value == "true";
}

}  // namespace

std::optional<RichRule> parse_rich_rule(std::string_view text, SourceLoc loc, Severity severity,
                                        Diagnostics& diag) {
  std::vector<Token> tokens;
  RawRule raw;
  std::optional<Problem> problem = lex(text, tokens);
  if (!problem && tokens.size() == 1) problem = Problem{"empty rule", "write rule ..."};
  if (!problem) problem = parse_tokens(tokens, raw);
  if (problem) {
    diag.report(severity, loc, "invalid rich rule: " + problem->message,
                problem->hint + "; " + std::string(kManual));
    return std::nullopt;
  }
  return finish(raw, loc, severity, diag);
}

std::optional<RichRule> read_rich_rule(const xml::Element& rule, Severity severity, Diagnostics& diag) {
  RawRule raw;
  auto fail = [&](const xml::Element& at, const std::string& message, const std::string& hint) {
    diag.report(severity, at.loc, "invalid rich rule: " + message, hint + "; " + std::string(kManual));
    return std::nullopt;
  };
  if (const std::string* family = rule.attribute("family")) {
    if (*family != "ipv4" && *family != "ipv6")
      return fail(rule, "family '" + *family + "' is invalid", "use ipv4 or ipv6");
    raw.family = *family;
  }
  if (const std::string* priority = rule.attribute("priority")) {
    auto value = parse_signed(*priority);
    if (!value) {
      // firewalld's int() raises here, outside the lenient rule handling: always an error.
      diag.error(rule.loc, "rule priority '" + *priority + "' is not a number", "use -32768..32767");
      return std::nullopt;
    }
    raw.priority = *value;
  }
  for (const xml::Element& child : rule.children) {
    const std::string& name = child.name;
    if (name == "source" || name == "destination") {
      auto& slot = name == "source" ? raw.source : raw.destination;
      if (slot) {
        // 1.3.3 keeps the rule and ignores a second destination, but drops a rule with two sources.
        if (name == "destination" && severity == Severity::warning) {
          diag.warning(child.loc, "second destination in a rule ignored",
                       "a rule has at most one destination");
          continue;
        }
        return fail(child, "more than one " + name, "a rule has at most one " + name);
      }
      RawAddress a;
      a.address = attribute(child, "address");
      a.mac = upper(attribute(child, "mac"));
      a.ipset = attribute(child, "ipset");
      a.invert = is_yes(attribute(child, "invert"));
      if (a.address.empty() && a.mac.empty() && a.ipset.empty())
        return fail(child, name + " has no address, mac or ipset", "give one of them");
      slot = a;
    } else if (is_element_kind(name) || name == "log" || name == "nflog" || name == "audit" ||
               name == "accept" || name == "reject" || name == "drop" || name == "mark") {
      RawPart* slot = is_element_kind(name)              ? &raw.element
                      : name == "log" || name == "nflog" ? &raw.log
                      : name == "audit"                  ? &raw.audit
                                                         : &raw.action;
      if (slot->present()) {
        if (slot == &raw.log && severity == Severity::warning) {
          diag.warning(child.loc, "second log in a rule ignored", "a rule logs at most once");
          continue;
        }
        return fail(child, "more than one " + (slot == &raw.element ? std::string("element") : name),
                    "split it into two rules");
      }
      slot->name = name;
      for (const auto& [key, value] : child.attributes) slot->attributes[key] = value;
      if (name == "tcp-mss-clamp" && attribute(child, "value").empty()) slot->attributes["value"] = "pmtu";
      if ((name == "log" || name == "nflog") && child.has("prefix") && attribute(child, "prefix").empty())
        return fail(child, "empty log prefix", "remove prefix= or give it a text");
      for (const xml::Element& limit : child.children) {
        if (limit.name != "limit" || slot == &raw.element)
          return fail(limit, "'" + limit.name + "' is not allowed inside '" + name + "'",
                      "only a limit goes inside a log, audit or action");
        if (slot->limit) return fail(limit, "more than one limit", "give one limit");
        slot->limit = RawLimit{canonical_limit(attribute(limit, "value")), attribute(limit, "burst")};
      }
    } else if (name == "limit") {
      return fail(child, "limit outside of an action, log or audit",
                  "put it inside the action, log or audit");
    } else {
      return fail(child, "'" + name + "' is not allowed in a rule", "see the <rule> element's children");
    }
  }
  return finish(raw, rule.loc, severity, diag);
}

}  // namespace fwe::firewalld
