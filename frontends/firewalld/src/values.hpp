// values.hpp - firewalld's value syntaxes (ports, protocols, addresses, MACs, interface and object
// names, integers), accepting exactly what firewalld 1.3.3's checks accept.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fwengine/ir.hpp"
#include "model.hpp"

namespace fwe::firewalld {

// "22", "8000-8100" (reversed ranges are swapped), "ssh", "ssh-http": numbers 0..65535 or /etc/services
// names; an ambiguous or unknown name is nullopt.
std::optional<ir::PortRange> parse_port_range(std::string_view text);

// tcp, udp, sctp, dccp: the protocols a port, source-port or forward-port may name.
bool is_port_protocol(std::string_view name);
// A number 0..255 or an /etc/protocols name.
std::optional<std::uint8_t> parse_protocol_value(std::string_view text);

// An address with an optional prefix length (IPv4 also a dotted, contiguous mask); host bits are
// cleared as the kernel would. family any accepts either family.
std::optional<ir::Cidr> parse_address(std::string_view text, Family family);
// One address, no prefix.
std::optional<ir::IpAddr> parse_single_address(std::string_view text, Family family);
// "FIRST-LAST", two addresses of one family, FIRST <= LAST (an ipset entry's range): the fewest CIDRs
// that cover exactly that range, in order. nullopt when it is no range of that form.
std::optional<std::vector<ir::Cidr>> parse_address_range(std::string_view text, Family family);
// XX:XX:XX:XX:XX:XX, hex digits of either case.
std::optional<ir::MacAddr> parse_mac_address(std::string_view text);

// 1..16 characters, none of ' ', '/', '!', '*'; a trailing '+' is a prefix wildcard.
bool is_valid_interface(std::string_view name);

// Python's int(text, 0) within [0, max]: decimal, 0x.., 0o.., 0b...
std::optional<std::uint64_t> parse_unsigned(std::string_view text, std::uint64_t max);
// A decimal integer with an optional sign (Python's int(text)).
std::optional<std::int64_t> parse_signed(std::string_view text);

// A reject type of firewalld's rich rules (§3.6) or of iptables' --reject-with, in the IR's reject_with
// words; the family decides port-unreach. Empty: port unreachable.
std::optional<std::string> reject_type(std::string_view type, ir::Family family);

// Object names: letters and digits plus extra characters, 1..max_length long.
bool is_valid_name(std::string_view name, std::string_view extra_chars, std::size_t max_length);

}  // namespace fwe::firewalld
