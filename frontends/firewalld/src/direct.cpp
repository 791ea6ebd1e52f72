// direct.cpp - see direct.hpp. The options follow iptables(8) and iptables-extensions(8); an option is
// taken only with the meaning iptables gives it, and everything else makes the whole rule refused.
#include "direct.hpp"

#include <algorithm>
#include <array>
#include <map>

#include "values.hpp"

namespace fwe::firewalld {
namespace {

using Result = std::variant<DirectRuleIr, std::string>;

// Splits like a shell without expansions: blanks separate words, quotes group them.
std::optional<std::vector<std::string>> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (char c : text) {
    if (quote != 0) {
      if (c == quote)
        quote = 0;
      else
        word += c;
    } else if (c == '"' || c == '\'') {
      quote = c;
      in_word = true;
    } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (quote != 0) return std::nullopt;
  if (in_word) words.push_back(std::move(word));
  return words;
}

std::optional<std::uint16_t> port_number(std::string_view text) {
  auto value = parse_unsigned(text, 65535);
  if (!value || text.empty() ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return static_cast<std::uint16_t>(*value);
}

// "22", "1000:2000", ":1023", "1024:" as iptables reads them.
std::optional<ir::PortRange> port_range(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) {
    auto port = port_number(text);
    if (!port) return std::nullopt;
    return ir::PortRange{*port, *port};
  }
  const std::string_view low = text.substr(0, colon), high = text.substr(colon + 1);
  auto lo = low.empty() ? std::optional<std::uint16_t>{0} : port_number(low);
  auto hi = high.empty() ? std::optional<std::uint16_t>{65535} : port_number(high);
  if (!lo || !hi || *lo > *hi) return std::nullopt;
  return ir::PortRange{*lo, *hi};
}

// ICMP types by name or number, as iptables' icmp and ip6tables' icmp6 matches know the common ones.
std::optional<ir::IcmpMatch> icmp_type(std::string_view text, bool v6) {
  static const std::map<std::string_view, std::array<int, 2>> kV4 = {{"echo-reply", {0, -1}},
                                                                     {"pong", {0, -1}},
                                                                     {"destination-unreachable", {3, -1}},
                                                                     {"network-unreachable", {3, 0}},
                                                                     {"host-unreachable", {3, 1}},
                                                                     {"protocol-unreachable", {3, 2}},
                                                                     {"port-unreachable", {3, 3}},
                                                                     {"fragmentation-needed", {3, 4}},
                                                                     {"communication-prohibited", {3, 13}},
                                                                     {"source-quench", {4, -1}},
                                                                     {"redirect", {5, -1}},
                                                                     {"echo-request", {8, -1}},
                                                                     {"ping", {8, -1}},
                                                                     {"router-advertisement", {9, -1}},
                                                                     {"router-solicitation", {10, -1}},
                                                                     {"time-exceeded", {11, -1}},
                                                                     {"ttl-exceeded", {11, -1}},
                                                                     {"parameter-problem", {12, -1}},
                                                                     {"timestamp-request", {13, -1}},
                                                                     {"timestamp-reply", {14, -1}}};
  static const std::map<std::string_view, std::array<int, 2>> kV6 = {{"destination-unreachable", {1, -1}},
                                                                     {"no-route", {1, 0}},
                                                                     {"communication-prohibited", {1, 1}},
                                                                     {"address-unreachable", {1, 3}},
                                                                     {"port-unreachable", {1, 4}},
                                                                     {"packet-too-big", {2, -1}},
                                                                     {"time-exceeded", {3, -1}},
                                                                     {"ttl-exceeded", {3, -1}},
                                                                     {"parameter-problem", {4, -1}},
                                                                     {"echo-request", {128, -1}},
                                                                     {"ping", {128, -1}},
                                                                     {"echo-reply", {129, -1}},
                                                                     {"pong", {129, -1}},
                                                                     {"router-solicitation", {133, -1}},
                                                                     {"router-advertisement", {134, -1}},
                                                                     {"neighbour-solicitation", {135, -1}},
                                                                     {"neighbor-solicitation", {135, -1}},
                                                                     {"neighbour-advertisement", {136, -1}},
                                                                     {"neighbor-advertisement", {136, -1}},
                                                                     {"redirect", {137, -1}}};
  ir::IcmpMatch match;
  match.v6 = v6;
  const auto& names = v6 ? kV6 : kV4;
  if (auto it = names.find(text); it != names.end()) {
    match.type = static_cast<std::uint8_t>(it->second[0]);
    if (it->second[1] >= 0) match.code = static_cast<std::uint8_t>(it->second[1]);
    return match;
  }
  const auto slash = text.find('/');
  auto type = parse_unsigned(text.substr(0, slash), 255);
  if (!type) return std::nullopt;
  match.type = static_cast<std::uint8_t>(*type);
  if (slash != std::string_view::npos) {
    auto code = parse_unsigned(text.substr(slash + 1), 255);
    if (!code) return std::nullopt;
    match.code = static_cast<std::uint8_t>(*code);
  }
  return match;
}

class ArgsReader {
 public:
  ArgsReader(std::vector<std::string> words, ir::Family family) : words_(std::move(words)), family_(family) {
    out_.rule.match.family = family;
  }

  Result run() {
    while (at_ < words_.size()) {
      const bool negate = take("!");
      const std::string option = next();
      if (option.empty()) return "a '!' ends the arguments";
      if (!negate && take_target(option)) continue;
      if (!error_.empty()) return error_;
      if (!option_(option, negate)) return error_.empty() ? "'" + option + "' is not understood" : error_;
    }
    if (!error_.empty()) return error_;
    if (!target_seen_) return "a rule without -j only counts packets";
    if (needs_notrack_) return "CT without --notrack is not carried over";
    if (needs_address_) return target_ + " needs --to-destination or --to-source";
    // The kernel's ICMP matches take their protocol's packets only: iptables refuses the rule otherwise.
    const ir::Match& m = out_.rule.match;
    if (m.icmp) {
      const std::uint8_t icmp_protocol = m.icmp->v6 ? 58 : 1;
      if (!(m.protocols && !m.protocol_negate && *m.protocols == std::vector{icmp_protocol}))
        return std::string(m.icmp->v6 ? "--icmpv6-type needs -p icmpv6" : "--icmp-type needs -p icmp");
    }
    // fwengine rewrites the ports of these protocols only (iptables also maps ICMP's identifier).
    if (out_.rule.action.nat_port && !(has_port_protocol() && m.protocols->front() != 136))
      return target_ + " to a port needs -p tcp, udp, sctp or dccp";
    return out_;
  }

 private:
  bool take(std::string_view word) {
    if (at_ < words_.size() && words_[at_] == word) {
      ++at_;
      return true;
    }
    return false;
  }
  std::string next() { return at_ < words_.size() ? words_[at_++] : std::string{}; }
  bool fail(std::string why) {
    error_ = std::move(why);
    return false;
  }
  std::optional<std::string> value(const std::string& option) {
    if (at_ >= words_.size()) {
      fail(option + " needs a value");
      return std::nullopt;
    }
    return words_[at_++];
  }

  bool option_(const std::string& option, bool negate) {
    ir::Match& m = out_.rule.match;
    if (option == "-p" || option == "--protocol") {
      auto text = value(option);
      if (!text) return false;
      auto number = ir::parse_protocol(*text);
      // iptables reads protocol 0 as every protocol, as it reads "all".
      if (*text == "all" || number == 0) return !negate || fail("'! -p " + *text + "' matches nothing");
      if (!number && (*text == "icmpv6" || *text == "ipv6-icmp" || *text == "icmp6")) number = 58;
      if (!number) return fail("unknown protocol '" + *text + "'");
      m.protocols = std::vector<std::uint8_t>{*number};
      m.protocol_negate = negate;
      return true;
    }
    if (option == "-s" || option == "--source" || option == "-d" || option == "--destination") {
      auto text = value(option);
      if (!text) return false;
      DirectAddresses addresses;
      addresses.negate = negate;
      std::string_view rest = *text;
      while (true) {
        const auto comma = rest.find(',');
        const std::string_view one = rest.substr(0, comma);
        auto cidr = parse_address(one, family_ == ir::Family::ipv6 ? Family::ipv6 : Family::ipv4);
        if (!cidr) return fail("'" + std::string(one) + "' is not an address of the rule's family");
        addresses.cidrs.push_back(*cidr);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      if (negate && addresses.cidrs.size() > 1) return fail("iptables refuses '!' with several addresses");
      (option[1] == 's' || option == "--source" ? out_.source : out_.destination) = std::move(addresses);
      return true;
    }
    if (option == "-i" || option == "--in-interface" || option == "-o" || option == "--out-interface") {
      auto text = value(option);
      if (!text) return false;
      if (!is_valid_interface(*text)) return fail("'" + *text + "' is not an interface name");
      const bool in = option == "-i" || option == "--in-interface";
      (in ? m.iif : m.oif) = std::vector<ir::IfacePattern>{ir::parse_iface(*text)};
      (in ? m.iif_negate : m.oif_negate) = negate;
      return true;
    }
    if (option == "-m" || option == "--match") {
      auto name = value(option);
      if (!name) return false;
      static const std::array<std::string_view, 14> kKnown = {
          "tcp",   "udp",       "sctp", "udplite", "icmp",    "icmp6", "multiport",
          "state", "conntrack", "mac",  "mark",    "pkttype", "limit", "comment"};
      if (std::find(kKnown.begin(), kKnown.end(), *name) == kKnown.end())
        return fail("match '" + *name + "' is not carried over");
      return !negate || fail("'!' before -m");
    }
    if (option == "--dport" || option == "--destination-port" || option == "--sport" ||
        option == "--source-port") {
      if (!has_port_protocol()) return fail(option + " needs -p tcp, udp, sctp or udplite first");
      auto text = value(option);
      if (!text) return false;
      auto range = port_range(*text);
      if (!range) return fail("'" + *text + "' is not a port or port range");
      const bool source = option == "--sport" || option == "--source-port";
      (source ? m.src_port : m.dst_port).push_back({negate, {*range}});
      return true;
    }
    if (option == "--dports" || option == "--destination-ports" || option == "--sports" ||
        option == "--source-ports" || option == "--ports") {
      if (!has_port_protocol()) return fail(option + " needs -p tcp, udp, sctp or udplite first");
      if (option == "--ports") return fail("multiport --ports (either port) is not carried over");
      auto text = value(option);
      if (!text) return false;
      ir::PortSet ports;
      std::string_view rest = *text;
      while (true) {
        const auto comma = rest.find(',');
        auto range = port_range(rest.substr(0, comma));
        if (!range) return fail("'" + *text + "' is not a list of ports");
        ports.push_back(*range);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      const bool source = option == "--sports" || option == "--source-ports";
      (source ? m.src_port : m.dst_port).push_back({negate, std::move(ports)});
      return true;
    }
    if (option == "--icmp-type" || option == "--icmpv6-type") {
      const bool v6 = option == "--icmpv6-type";
      // iptables knows --icmp-type, ip6tables --icmpv6-type (the protocol is checked at the end).
      if (family_ != (v6 ? ir::Family::ipv6 : ir::Family::ipv4))
        return fail(option + " is not an option of " + (v6 ? "iptables" : "ip6tables") + ": use " +
                    (v6 ? "--icmp-type" : "--icmpv6-type") + " in a rule of ipv=\"" + (v6 ? "ipv4" : "ipv6") +
                    "\"");
      auto text = value(option);
      if (!text) return false;
      if (*text == "any") return !negate || fail("'! --icmp-type any' matches nothing");
      auto icmp = icmp_type(*text, v6);
      if (!icmp) return fail("unknown ICMP type '" + *text + "'");
      icmp->negate = negate;
      m.icmp = *icmp;
      return true;
    }
    if (option == "--state" || option == "--ctstate") {
      auto text = value(option);
      if (!text) return false;
      std::vector<ir::CtState> states;
      std::vector<ir::CtStatus> statuses;
      std::string_view rest = *text;
      while (true) {
        const auto comma = rest.find(',');
        std::string word(rest.substr(0, comma));
        std::transform(word.begin(), word.end(), word.begin(), [](char c) { return std::tolower(c); });
        if (auto state = ir::parse_ct_state(word))
          states.push_back(*state);
        else if (auto status = ir::parse_ct_status(word); status && option == "--ctstate")
          statuses.push_back(*status);
        else
          return fail("unknown conntrack state '" + std::string(rest.substr(0, comma)) + "'");
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      // One --ctstate ORs its words; states and NAT statuses are two IR matches, which AND.
      if (!states.empty() && !statuses.empty())
        return fail("--ctstate mixing states and SNAT/DNAT is not carried over");
      if (!statuses.empty()) {
        if (negate) return fail("'! --ctstate' of SNAT/DNAT is not carried over");
        m.ct_status = statuses;
      } else {
        m.ct_states = states;
        m.ct_negate = negate;
      }
      return true;
    }
    if (option == "--mac-source") {
      auto text = value(option);
      if (!text) return false;
      auto mac = parse_mac_address(*text);
      if (!mac) return fail("'" + *text + "' is not a MAC address");
      m.src_mac = std::vector<ir::MacAddr>{*mac};
      m.src_mac_negate = negate;
      return true;
    }
    if (option == "--mark") {
      auto text = value(option);
      if (!text) return false;
      auto mark = mark_value(*text);
      if (!mark) return false;
      m.mark_value = mark->first;
      m.mark_mask = mark->second;
      m.mark_negate = negate;
      return true;
    }
    if (option == "--pkt-type") {
      auto text = value(option);
      if (!text) return false;
      if (negate) return fail("'! --pkt-type' is not carried over");
      if (*text != "unicast" && *text != "broadcast" && *text != "multicast")
        return fail("unknown packet type '" + *text + "'");
      m.pkt_type = *text;
      return true;
    }
    if (option == "--limit") {
      auto text = value(option);
      if (!text) return false;
      if (negate) return fail("'! --limit' is not carried over");
      const auto slash = text->find('/');
      auto rate = parse_unsigned(std::string_view(*text).substr(0, slash), 1000000);
      std::string unit = slash == std::string::npos ? "sec" : text->substr(slash + 1);
      static const std::map<std::string, std::string> kUnits = {
          {"s", "second"},      {"sec", "second"}, {"second", "second"}, {"m", "minute"}, {"min", "minute"},
          {"minute", "minute"}, {"h", "hour"},     {"hour", "hour"},     {"d", "day"},    {"day", "day"}};
      auto it = kUnits.find(unit);
      if (!rate || *rate == 0 || it == kUnits.end()) return fail("'" + *text + "' is not a rate");
      if (!m.rate_limit) m.rate_limit = ir::RateLimit{0, "second", 5};  // iptables' default burst
      m.rate_limit->rate = static_cast<std::uint32_t>(*rate);
      m.rate_limit->unit = it->second;
      return true;
    }
    if (option == "--limit-burst") {
      auto text = value(option);
      if (!text) return false;
      auto burst = parse_unsigned(*text, 10000);
      if (!burst || *burst == 0) return fail("'" + *text + "' is not a burst");
      if (!m.rate_limit) m.rate_limit = ir::RateLimit{3, "hour", 5};  // iptables' default rate
      m.rate_limit->burst = static_cast<std::uint32_t>(*burst);
      return true;
    }
    if (option == "--comment") return value(option).has_value();
    return false;
  }

  bool has_port_protocol() const {
    const ir::Match& m = out_.rule.match;
    return m.protocols && !m.protocol_negate && m.protocols->size() == 1 &&
           ir::protocol_has_ports(m.protocols->front());
  }

  // "0x10" or "16/0xff": a value and mask.
  std::optional<std::pair<std::uint32_t, std::uint32_t>> mark_value(std::string_view text) {
    const auto slash = text.find('/');
    auto mark = parse_unsigned(text.substr(0, slash), 0xffffffff);
    auto mask = slash == std::string_view::npos ? std::optional<std::uint64_t>{0xffffffff}
                                                : parse_unsigned(text.substr(slash + 1), 0xffffffff);
    if (!mark || !mask) {
      fail("'" + std::string(text) + "' is not a mark");
      return std::nullopt;
    }
    // A test of bits outside the mask never holds, and a set of them differs between iptables' MARK
    // variants; the top four bits are fwengine's own.
    if ((*mark & ~*mask) != 0 || (*mark & ir::kReservedMarkBits) != 0) {
      fail("mark '" + std::string(text) +
           "' has value bits outside its mask or in 0xf0000000 (fwengine's own)");
      return std::nullopt;
    }
    return std::pair{static_cast<std::uint32_t>(*mark), static_cast<std::uint32_t>(*mask)};
  }

  // -j TARGET and its options; true when the option was a target (or one of its options).
  bool take_target(const std::string& option) {
    ir::Action& a = out_.rule.action;
    if (option == "-g" || option == "--goto") {
      fail("-g (goto) is not carried over; use -j");
      return false;
    }
    if (option != "-j" && option != "--jump") return target_option(option);
    auto target = value(option);
    if (!target) return false;
    if (target_seen_) return fail("two targets");
    target_seen_ = true;
    target_ = *target;
    static const std::map<std::string, ir::ActionKind> kTargets = {{"ACCEPT", ir::ActionKind::accept},
                                                                   {"DROP", ir::ActionKind::drop},
                                                                   {"REJECT", ir::ActionKind::reject},
                                                                   {"RETURN", ir::ActionKind::return_},
                                                                   {"LOG", ir::ActionKind::log},
                                                                   {"MARK", ir::ActionKind::set_mark},
                                                                   {"NOTRACK", ir::ActionKind::notrack},
                                                                   {"CT", ir::ActionKind::notrack},
                                                                   {"DNAT", ir::ActionKind::dnat},
                                                                   {"SNAT", ir::ActionKind::snat},
                                                                   {"MASQUERADE", ir::ActionKind::masquerade},
                                                                   {"REDIRECT", ir::ActionKind::redirect}};
    if (auto it = kTargets.find(*target); it != kTargets.end()) {
      a.kind = it->second;
      if (a.kind == ir::ActionKind::reject)
        a.reject_with = family_ == ir::Family::ipv6 ? "icmp6-port-unreachable" : "icmp-port-unreachable";
      if (*target == "CT") needs_notrack_ = true;
      if (a.kind == ir::ActionKind::dnat || a.kind == ir::ActionKind::snat) needs_address_ = true;
      return true;
    }
    static const std::array<std::string_view, 6> kOthers = {"QUEUE", "NFQUEUE", "TRACE",
                                                            "AUDIT", "NFLOG",   "TCPMSS"};
    const bool upper = std::all_of(target->begin(), target->end(), [](char c) { return c < 'a' || c > 'z'; });
    if (upper || std::find(kOthers.begin(), kOthers.end(), *target) != kOthers.end())
      return fail("target " + *target + " is not carried over");
    a.kind = ir::ActionKind::jump;
    a.target = *target;
    return true;
  }

  bool target_option(const std::string& option) {
    ir::Action& a = out_.rule.action;
    if (option == "--reject-with" && target_ == "REJECT") {
      auto text = value(option);
      if (!text) return false;
      auto with = reject_type(*text, family_);
      if (!with) return fail("unknown reject type '" + *text + "'");
      a.reject_with = *with;
      return true;
    }
    if (option == "--log-prefix" && target_ == "LOG") {
      auto text = value(option);
      if (!text) return false;
      a.log_prefix = *text;
      return true;
    }
    if (option == "--log-level" && target_ == "LOG") {
      auto text = value(option);
      if (!text) return false;
      static const std::array<std::string_view, 8> kLevels = {"emerg",   "alert",  "crit", "error",
                                                              "warning", "notice", "info", "debug"};
      auto named = std::find(kLevels.begin(), kLevels.end(), *text);
      auto number = parse_unsigned(*text, 7);
      if (named == kLevels.end() && !number) return fail("unknown log level '" + *text + "'");
      a.log_level = static_cast<std::uint8_t>(named != kLevels.end() ? named - kLevels.begin() : *number);
      return true;
    }
    if ((option == "--set-mark" || option == "--set-xmark") && target_ == "MARK") {
      auto text = value(option);
      if (!text) return false;
      auto mark = mark_value(*text);
      if (!mark) return false;
      // --set-mark V/M zeroes the mask's bits and ORs V; --set-xmark XORs: the same, V being inside M.
      a.mark_value = mark->first;
      a.mark_mask = mark->second;
      return true;
    }
    if (option == "--notrack" && target_ == "CT") {
      needs_notrack_ = false;
      return true;
    }
    if ((option == "--to-destination" && target_ == "DNAT") ||
        (option == "--to-source" && target_ == "SNAT")) {
      auto text = value(option);
      if (!text) return false;
      if (!nat_to(*text)) return fail("'" + *text + "' is not an address with an optional port");
      needs_address_ = false;
      return true;
    }
    if (option == "--to-ports" && (target_ == "REDIRECT" || target_ == "MASQUERADE")) {
      auto text = value(option);
      if (!text) return false;
      std::string range = *text;
      std::replace(range.begin(), range.end(), '-', ':');
      auto ports = port_range(range);
      if (!ports) return fail("'" + *text + "' is not a port or port range");
      a.nat_port = *ports;
      return true;
    }
    return false;
  }

  // ADDR, ADDR:PORT, ADDR:LOW-HIGH; IPv6 in brackets when it has a port.
  bool nat_to(std::string_view text) {
    ir::Action& a = out_.rule.action;
    std::string_view address = text, ports;
    if (!text.empty() && text.front() == '[') {
      const auto close = text.find(']');
      if (close == std::string_view::npos) return false;
      address = text.substr(1, close - 1);
      if (close + 1 < text.size()) {
        if (text[close + 1] != ':') return false;
        ports = text.substr(close + 2);
      }
    } else if (family_ == ir::Family::ipv4) {
      const auto colon = text.find(':');
      address = text.substr(0, colon);
      if (colon != std::string_view::npos) ports = text.substr(colon + 1);
    }
    auto ip = parse_single_address(address, family_ == ir::Family::ipv6 ? Family::ipv6 : Family::ipv4);
    if (!ip) return false;
    a.nat_addr = *ip;
    if (!ports.empty()) {
      std::string range(ports);
      std::replace(range.begin(), range.end(), '-', ':');
      auto port = port_range(range);
      if (!port) return false;
      a.nat_port = *port;
    }
    return true;
  }

  std::vector<std::string> words_;
  ir::Family family_;
  std::size_t at_ = 0;
  DirectRuleIr out_;
  std::string error_;
  std::string target_;
  bool target_seen_ = false;
  bool needs_notrack_ = false;
  bool needs_address_ = false;
};

}  // namespace

std::variant<DirectRuleIr, std::string> parse_direct_args(const std::string& args, ir::Family family) {
  auto words = split_words(args);
  if (!words) return std::string("a quote is not closed");
  return ArgsReader(std::move(*words), family).run();
}

}  // namespace fwe::firewalld
