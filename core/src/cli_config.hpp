// cli_config.hpp - the command line's options and fwengine.conf, which supplies their defaults.
// A header of its own so that the fuzz target of fwengine.conf (fuzz/fwengine_conf.cpp) reaches the reader.
#pragma once

#include <boost/program_options/variables_map.hpp>
#include <optional>
#include <string>
#include <vector>

#include "fwengine/diagnostics.hpp"

namespace fwe::cli {

struct Options {
  std::string command = "apply";
  std::string frontend, backend, netns, node, config;
  std::vector<std::string> files, plugin_dirs, frontend_options, backend_options;
  // fwengine.conf's backend-options, per backend: those of the backend in use join backend_options (the
  // command line's win per key) once it is known.
  struct ConfigBackendOptions {
    std::string backend;
    SourceLoc backend_loc;
    std::vector<std::string> settings;  // KEY=VALUE
  };
  std::vector<ConfigBackendOptions> config_backend_options;
  bool json = false, verbose = false, quiet = false;
  // --firewalld-defaults or --firewalld-compat given
  bool firewalld_aliases = false;
  // --etcd-ca, --etcd-cert, --etcd-key or --etcd-cache given
  bool etcd_aliases = false;
  bool flush_on_stop = false;  // daemon: remove the ruleset on SIGTERM (off: a firewall stays up)
  // The rollback watchdog's apply or flush: what was not confirmed, recorded (RolledBack) under the
  // writer lock once the previous ruleset is back. Internal: not in --help.
  std::string rollback_of;
  // ... and the token of the pending confirmation it rolls back: once it holds the lock, a rollback
  // whose confirmation is gone (confirmed, or replaced by a newer apply) does nothing.
  std::string rollback_token;
  // Where fwengine.conf gave frontend, backend and each of files, so that a value found wrong later is
  // reported there; {} (and file_locs empty) when the command line gave it.
  SourceLoc frontend_loc, backend_loc;
  std::vector<SourceLoc> file_locs;
  boost::program_options::variables_map vm;
  std::vector<std::string> argv;  // as the process was started: a daemon starts again with it
  // fwengine.conf as read_config read it, nullopt when there was none: a daemon reload compares the file
  // with it.
  std::optional<std::string> config_text;
};

// The config file o names, or the default one.
std::string config_path(const Options& o);
// The text of the config file at path now; nullopt when there is none.
std::optional<std::string> read_config_text(const std::string& path);

// Reads o.config (or /etc/fwengine/fwengine.conf when none is given and it exists) into the fields of o
// the command line left empty, and records in diag where the file set each frontend option. Problems in
// the file (also a plugin directory that does not exist) go to diag; a missing --config file is a
// UsageError.
void read_config(Options& o, Diagnostics& diag);

}  // namespace fwe::cli
