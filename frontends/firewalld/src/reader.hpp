// reader.hpp - loads a firewalld configuration the way firewalld does: the stock tree, then each
// /etc/firewalld-like tree over it, object by object, then firewalld's full configuration check.
// Unlike firewalld, a configuration error does not fall back to the stock tree: it is reported (with
// file:line:col and a hint) and the caller refuses the configuration (exit 2).
#pragma once

#include <string>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "model.hpp"

namespace fwe::firewalld {

struct ReadRequest {
  std::string defaults_dir = "/usr/lib/firewalld";
  std::vector<std::string>
      config_dirs;  // the /etc/firewalld-like dirs, later ones win; empty = /etc/firewalld
  Compat compat = Compat::v2;
};

Config read_config(const ReadRequest& request, Diagnostics& diag);

}  // namespace fwe::firewalld
