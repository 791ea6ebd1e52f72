// test_support.hpp - building rulesets from inline YAML and walking packets through them.
#pragma once

#include <string>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"
#include "fwengine/trace.hpp"
#include "mapping.hpp"
#include "resources.hpp"

namespace fwe::calico::test {

// Reads YAML text (as file "test.yaml") into a model.
Model read_yaml(const std::string& text, Diagnostics& diag);
// Every diagnostic of a severity, formatted "file:line:col: severity: message (hint)".
std::vector<std::string> formatted(const Diagnostics& diag, Severity severity);

// Scenario base of spec §8: node n1, eth0 10.0.0.10 + 2001:db8::10, eth1 172.16.0.1, lo.
MappingOptions n1_options();
// Reads, maps and runs core's passes; fails the test on any error.
ir::Ruleset build(const std::string& text, const MappingOptions& options = n1_options());

enum class Verdict { allow, deny, no_verdict };
std::string to_string(Verdict);

trace::Packet packet(const std::string& iif, const std::string& oif, const std::string& src,
                     const std::string& dst, std::uint8_t protocol, std::uint16_t dport,
                     ir::CtState state = ir::CtState::new_);
Verdict verdict(const ir::Ruleset& ruleset, const trace::Packet& packet);
// The verdict of the reply to a packet, after the packet itself went through.
Verdict reply_verdict(const ir::Ruleset& ruleset, const trace::Packet& packet);

// h0 of spec §8.
extern const std::string kH0;
// hall: the * HostEndpoint of n1, with no labels and no profiles.
extern const std::string kHall;

}  // namespace fwe::calico::test
