// frontend.hpp - the firewalld frontend's load: options -> ReadRequest -> Config -> IR.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

namespace fwe::firewalld {

struct LoadRequest {
  std::vector<std::string> sources;            // /etc/firewalld-like directories, later ones win
  std::map<std::string, std::string> options;  // defaults=DIR, compat=1.3|2
};

ir::Ruleset load(const LoadRequest& request, Diagnostics& diag);

}  // namespace fwe::firewalld
