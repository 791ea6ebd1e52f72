// rich.hpp - firewalld's rich-rule language: the string form (firewall-cmd --add-rich-rule) and the
// <rule> element of zone and policy files. Both check what firewalld's Rich_Rule.check checks and give
// a RichRule whose text is firewalld's canonical str() (the key firewalld removes duplicates by).
#pragma once

#include <optional>
#include <string_view>

#include "fwengine/diagnostics.hpp"
#include "model.hpp"
#include "xml.hpp"

namespace fwe::firewalld {

// A rule that does not parse or check is reported with `severity` at loc and gives nullopt.
std::optional<RichRule> parse_rich_rule(std::string_view text, SourceLoc loc, Severity severity,
                                        Diagnostics& diag);
std::optional<RichRule> read_rich_rule(const xml::Element& rule, Severity severity, Diagnostics& diag);

}  // namespace fwe::firewalld
