// cli.cpp - the command line of cli.md: option parsing, the compile pipeline, and each command.
#include "cli.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "cli_config.hpp"
#include "cli_memory.hpp"
#include "cli_service.hpp"
#include "fwengine/canonical.hpp"
#include "fwengine/loader.hpp"
#include "fwengine/passes.hpp"
#include "fwengine/source_text.hpp"
#include "fwengine/state.hpp"
#include "fwengine/trace.hpp"
#include "fwengine/yaml.hpp"

namespace fwe::cli {

namespace po = boost::program_options;
using nlohmann::json;

namespace {

// A --json answer: what it quotes of the input (messages, origins, paths, foreign rules) need not be
// UTF-8, and a byte that is not becomes U+FFFD instead of an exception.
std::string json_text(const json& j, int indent = -1) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

constexpr const char* kDefaultConfig = "/etc/fwengine/fwengine.conf";

struct CommandInfo {
  std::string_view name;
  std::string_view summary;
};
constexpr CommandInfo kCommands[] = {
    {"apply", "replace fwengine's ruleset in the kernel atomically (the default command)"},
    {"check", "parse, validate and compile; print diagnostics"},
    {"ir", "print the final IR in its canonical form and its hash"},
    {"render", "print what the backend would load"},
    {"diff", "what apply would change against the kernel"},
    {"trace", "evaluate one packet against the IR and explain the verdict"},
    {"status", "what fwengine has in the kernel, with hit counters"},
    {"flush", "remove everything fwengine owns, nothing else"},
    {"migrate", "convert the input to our YAML (same IR) or to Calico resources"},
    {"confirm", "keep a ruleset applied with --confirm"},
    {"daemon", "service mode"},
    {"plugins", "list the plugins found"},
    {"version", "print the version"},
    {"help", "print this help"},
};

// Options that belong to one command only; using them with another is a usage error.
const std::map<std::string, std::set<std::string>>& command_options() {
  static const std::map<std::string, std::set<std::string>> table = {
      {"dry-run", {"apply"}},
      {"full", {"apply"}},
      {"confirm", {"apply"}},
      {"exit-code", {"diff"}},
      {"iif", {"trace"}},
      {"oif", {"trace"}},
      {"src", {"trace"}},
      {"dst", {"trace"}},
      {"proto", {"trace"}},
      {"sport", {"trace"}},
      {"dport", {"trace"}},
      {"icmp-type", {"trace"}},
      {"icmp-code", {"trace"}},
      {"state", {"trace"}},
      {"src-mac", {"trace"}},
      {"pkt-type", {"trace"}},
      {"oif-addr", {"trace"}},
      {"iif-addr", {"trace"}},
      {"src-route", {"trace"}},
      {"to", {"migrate"}},
      {"output", {"migrate"}},
      {"watch", {"daemon"}},
      {"ct-status", {"trace"}},
      {"metrics-file", {"daemon"}},
      {"ct-orig-dport", {"trace"}},
      {"rollback-of", {"apply", "flush"}},
      {"rollback-token", {"apply", "flush"}},
  };
  return table;
}

po::options_description describe_options() {
  // clang-format off
  po::options_description global("Global options");
  global.add_options()
      ("frontend", po::value<std::string>(), "calico, yaml, firewalld (any installed frontend plugin)")
      ("backend", po::value<std::string>(), "nft, iptables, ebpf (any installed backend plugin)")
      ("file,f", po::value<std::vector<std::string>>()->composing(), "a file, a directory, or - for stdin; repeatable")
      ("source", po::value<std::vector<std::string>>()->composing(),
       "a datastore: etcd://HOST:PORT[,HOST:PORT...] (calico); like -f")
      ("netns", po::value<std::string>(), "act inside the network namespace /run/netns/NAME")
      ("node", po::value<std::string>(), "this host's node name (default: the host name, lower-cased)")
      ("plugin-dir", po::value<std::vector<std::string>>()->composing(), "look for plugins there too")
      ("config", po::value<std::string>(), "the engine's own config (default /etc/fwengine/fwengine.conf)")
      ("frontend-option", po::value<std::vector<std::string>>()->composing(), "KEY=VALUE for the frontend; repeatable")
      ("backend-option", po::value<std::vector<std::string>>()->composing(),
       "KEY=VALUE for the backend, e.g. counters=rule for nft; repeatable")
      ("firewalld-defaults", po::value<std::string>(), "firewalld: the stock tree (default /usr/lib/firewalld)")
      ("firewalld-compat", po::value<std::string>(), "firewalld: 2 (default) or 1.3 (Debian 12's firewalld 1.3.3)")
      ("etcd-ca", po::value<std::string>(), "calico etcd source: CA certificate file (PEM); turns on TLS")
      ("etcd-cert", po::value<std::string>(), "calico etcd source: client certificate file (PEM)")
      ("etcd-key", po::value<std::string>(), "calico etcd source: client key file (PEM)")
      ("etcd-cache", po::value<std::string>(),
       "daemon with an etcd source: keep the store's last policy there (default "
       "/var/lib/fwengine/etcd-cache/NODE.json; none: keep nothing)")
      ("lock-timeout", po::value<int>()->default_value(30),
       "seconds to wait while another fwengine changes the same namespace")
      ("json", "machine-readable output")
      ("verbose,v", "more output")
      ("quiet,q", "less output")
      ("help,h", "print help")
      ("version", "print the version");
  po::options_description commands("Command options");
  commands.add_options()
      ("dry-run", "apply: render and diff only")
      ("full", "apply: replace everything, not only what changed")
      ("confirm", po::value<unsigned>(), "apply: roll back after SECONDS unless confirmed")
      ("exit-code", "diff: exit 3 when there is a difference")
      ("iif", po::value<std::string>(), "trace: input interface")
      ("oif", po::value<std::string>(), "trace: output interface")
      ("src", po::value<std::string>(), "trace: source address")
      ("dst", po::value<std::string>(), "trace: destination address")
      ("proto", po::value<std::string>(), "trace: tcp, udp, icmp, icmpv6 or a number (default tcp)")
      ("sport", po::value<unsigned>(), "trace: source port (default 40000)")
      ("dport", po::value<unsigned>(), "trace: destination port")
      ("icmp-type", po::value<std::string>(), "trace: ICMP type, a name or 0-255 (default echo-request)")
      ("icmp-code", po::value<unsigned>(), "trace: ICMP code (default 0)")
      ("state", po::value<std::string>(),
       "trace: new, established, related, invalid (default: what conntrack makes of a first packet; new, but "
       "invalid or untracked for ICMP other than a request)")
      ("src-mac", po::value<std::string>(), "trace: source MAC address")
      ("pkt-type", po::value<std::string>(),
       "trace: unicast, broadcast or multicast (default: from --dst for a packet in on --iif)")
      ("oif-addr", po::value<std::string>(), "trace: the output interface's address (masquerade's source)")
      ("iif-addr", po::value<std::string>(), "trace: the input interface's address (redirect's destination)")
      ("src-route", po::value<std::string>(),
       "trace: the interface the host routes the source address out of, or none (rpf; default: --iif)")
      ("ct-status", po::value<std::string>(), "trace: the connection was NATed: dnat, snat or dnat,snat")
      ("ct-orig-dport", po::value<unsigned>(),
       "trace: the connection's destination port before DNAT (default: --dport)")
      ("to", po::value<std::string>(), "migrate: yaml or calico (a frontend that can write)")
      ("output,o", po::value<std::string>(), "migrate: output directory (default .)")
      ("watch", "daemon: reload when a source file changes")
      ("metrics-file", po::value<std::string>(), "daemon: keep Prometheus metrics in this file (textfile collector)");
  // clang-format on
  po::options_description all;
  all.add(global).add(commands);
  return all;
}

constexpr std::string_view kUsage = "fwengine [global options] [command] [command options]";

void print_help(std::ostream& out) {
  out << "usage: " << kUsage << "\n\n"
      << "fwengine reads host firewall policy (Calico resources, firewalld configuration, or its own YAML),\n"
      << "compiles it to one IR and loads it into the kernel (nftables, iptables-legacy or "
         "eBPF).\n\nCommands:\n";
  for (const auto& c : kCommands) out << "  " << std::left << std::setw(10) << c.name << c.summary << '\n';
  out << '\n'
      << describe_options() << '\n'
      << "Exit codes: 0 done, 1 runtime failure (nothing changed), 2 bad input or usage (nothing changed),\n"
      << "3 diff --exit-code found a difference.\n";
}

// The help as one JSON document (--json): the commands, the options, the exit codes.
void print_help_json(std::ostream& out) {
  json commands = json::array();
  for (const auto& c : kCommands) commands.push_back({{"name", c.name}, {"summary", c.summary}});
  json options = json::array();
  const po::options_description described = describe_options();
  for (const auto& option : described.options()) {
    json entry = {{"name", "--" + option->long_name()},
                  {"takes-value", option->semantic()->max_tokens() > 0},
                  {"description", option->description()}};
    if (const std::string shown = option->format_name(); shown.starts_with("-") && !shown.starts_with("--"))
      entry["short"] = shown.substr(0, 2);
    options.push_back(std::move(entry));
  }
  out << json{{"ok", true},
              {"usage", kUsage},
              {"commands", commands},
              {"options", options},
              {"exit-codes",
               {{"0", "done"},
                {"1", "runtime failure (nothing changed)"},
                {"2", "bad input or usage (nothing changed)"},
                {"3", "diff --exit-code found a difference"}}}}
             .dump(2)
      << '\n';
}

// Why dir cannot be a plugin directory ("'DIR' does not exist"); empty when it can.
std::string plugin_dir_problem(const std::string& dir) {
  std::error_code ec;
  const auto status = std::filesystem::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) return "'" + dir + "': " + ec.message();
  if (!std::filesystem::exists(status)) return "'" + dir + "' does not exist";
  if (!std::filesystem::is_directory(status)) return "'" + dir + "' is not a directory";
  return {};
}

Options parse_options(int argc, char** argv) {
  Options o;
  po::positional_options_description positional;
  positional.add("command", 1);
  auto all = describe_options();
  all.add_options()("command", po::value<std::string>())("rollback-of", po::value<std::string>())(
      "rollback-token", po::value<std::string>());
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), o.vm);
    po::notify(o.vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()) + " (see fwengine --help)");
  }
  o.argv.assign(argv, argv + argc);
  auto& vm = o.vm;
  if (vm.count("command")) o.command = vm["command"].as<std::string>();
  if (vm.count("help")) o.command = "help";
  if (vm.count("version")) o.command = "version";
  bool known =
      std::any_of(std::begin(kCommands), std::end(kCommands), [&](auto& c) { return c.name == o.command; });
  if (!known) {
    std::vector<std::string_view> names;
    for (const auto& c : kCommands) names.push_back(c.name);
    auto hint = did_you_mean(o.command, names);
    throw UsageError("unknown command '" + o.command + "'" + (hint.empty() ? "" : "; " + hint) +
                     " (see fwengine --help)");
  }
  for (const auto& [option, commands] : command_options())
    if (vm.count(option) && !commands.count(o.command))
      throw UsageError("--" + option + " is an option of '" + *commands.begin() + "', not of '" + o.command +
                       "'");
  auto str = [&](const char* k) { return vm.count(k) ? vm[k].as<std::string>() : std::string{}; };
  auto list = [&](const char* k) {
    return vm.count(k) ? vm[k].as<std::vector<std::string>>() : std::vector<std::string>{};
  };
  o.frontend = str("frontend");
  o.backend = str("backend");
  o.netns = str("netns");
  o.rollback_of = str("rollback-of");
  o.rollback_token = str("rollback-token");
  if (vm.count("netns") && o.netns.empty())
    throw UsageError("--netns needs a name from 'ip netns list' (leave it out for this namespace)");
  // An empty name is a mistake (an unset shell variable), not a request for the default.
  for (const char* key : {"frontend", "backend", "node", "config", "output"})
    if (vm.count(key) && str(key).empty())
      throw UsageError(std::string("--") + key + " needs a value (leave it out for the default)");
  if (vm["lock-timeout"].as<int>() < 0)
    throw UsageError("--lock-timeout is in seconds, 0 or more (0: do not wait for another fwengine)");
  if (vm.count("dry-run") && vm.count("confirm"))
    throw UsageError("apply --dry-run changes nothing, so there is nothing to --confirm; give one of them");
  // A day at most: a longer wait is a typo (and "-1" arrives here as 4294967295).
  if (vm.count("confirm") && (vm["confirm"].as<unsigned>() == 0 || vm["confirm"].as<unsigned>() > 86400))
    throw UsageError("--confirm is the seconds to wait for 'fwengine confirm', 1 to 86400");
  o.node = str("node");
  o.config = str("config");
  o.files = list("file");
  for (const auto& source : list("source")) o.files.push_back(source);
  o.plugin_dirs = list("plugin-dir");
  for (const auto& dir : o.plugin_dirs)
    if (auto problem = plugin_dir_problem(dir); !problem.empty())
      throw UsageError("--plugin-dir " + problem + " (give a directory that holds libfwe_*.so plugins)");
  o.frontend_options = list("frontend-option");
  o.backend_options = list("backend-option");
  for (const auto& kv : o.backend_options)
    if (kv.find('=') == std::string::npos || kv.front() == '=')
      throw UsageError("--backend-option takes KEY=VALUE, got '" + kv + "'");
  // Aliases of --frontend-option defaults=DIR and compat=V; Session checks the frontend is firewalld.
  if (vm.count("firewalld-defaults")) o.frontend_options.push_back("defaults=" + str("firewalld-defaults"));
  if (vm.count("firewalld-compat")) {
    const std::string compat = str("firewalld-compat");
    if (compat != "1.3" && compat != "2")
      throw UsageError("--firewalld-compat must be 1.3 or 2, not '" + compat + "'");
    o.frontend_options.push_back("compat=" + compat);
  }
  o.firewalld_aliases = vm.count("firewalld-defaults") || vm.count("firewalld-compat");
  // Aliases of --frontend-option etcd-ca=FILE etc.; Session checks the frontend is calico.
  for (const char* key : {"etcd-ca", "etcd-cert", "etcd-key", "etcd-cache"})
    if (vm.count(key)) {
      o.frontend_options.push_back(std::string(key) + "=" + str(key));
      o.etcd_aliases = true;
    }
  // A key given twice (or by an option and its alias) is a contradiction, not a last-one-wins.
  for (const auto& [what, options] : {std::pair{"--frontend-option", &o.frontend_options},
                                      std::pair{"--backend-option", &o.backend_options}}) {
    std::map<std::string, std::string> seen;
    for (const auto& kv : *options) {
      const std::string key = kv.substr(0, kv.find('='));
      if (auto [it, fresh] = seen.emplace(key, kv); !fresh)
        throw UsageError(std::string(what) + " " + key + " is given twice ('" + it->second + "' and '" + kv +
                         (options == &o.frontend_options
                              ? "'; --firewalld-* and --etcd-* set frontend options too"
                              : "'") +
                         "): give it once");
    }
  }
  o.json = vm.count("json") > 0;
  o.verbose = vm.count("verbose") > 0;
  o.quiet = vm.count("quiet") > 0;
  if (o.verbose && o.quiet) throw UsageError("-v and -q contradict each other; give one");
  return o;
}

}  // namespace

namespace {

// A mapping KEY: VALUE of fwengine.conf into KEY=VALUE settings, but for the keys the command line
// gave (it wins), recording where each was written; a backend's under backend_option_origin, since a
// frontend may know the same key.
void read_config_options(const yaml::Node& value, const std::string& where, const std::string& backend,
                         const std::vector<std::string>& command_line, std::vector<std::string>& into,
                         Diagnostics& diag) {
  if (!value.is_mapping()) {
    diag.error(value.loc(), where + " must be a mapping (KEY: VALUE), got " + value.describe(),
               backend.empty()
                   ? ""
                   : "backend options are per backend, e.g. backend-options: {nft: {counters: rule}}");
    return;
  }
  const std::size_t given = command_line.size();  // into may be command_line itself
  for (std::size_t j = 0; j < value.size(); ++j) {
    const std::string option = value.keys()[j].text();
    const auto& setting = value.values()[j];
    if (!setting.is_scalar()) {
      diag.error(setting.loc(), where + "." + option + " must be a string, got " + setting.describe());
      continue;
    }
    if (std::any_of(command_line.begin(), command_line.begin() + static_cast<std::ptrdiff_t>(given),
                    [&](const std::string& kv) { return kv.starts_with(option + "="); }))
      continue;
    into.push_back(option + "=" + setting.text());
    diag.set_option_origin(backend.empty() ? option : backend_option_origin(backend, option),
                           value.keys()[j].loc(), setting.loc());
  }
}

}  // namespace

std::string config_path(const Options& o) {
  return o.config.empty() ? kDefaultConfig : o.config;
}

std::optional<std::string> read_config_text(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;  // the reader names what it is
  if (std::filesystem::file_size(path, ec) > kMaxSourceBytes)
    return std::nullopt;  // and that it is too large
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The engine's config supplies defaults that the command line overrides.
void read_config(Options& o, Diagnostics& diag) {
  const std::string path = config_path(o);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (!o.config.empty()) throw UsageError("config file " + path + " does not exist");
    return;
  }
  o.config_text = read_config_text(path);
  auto docs = yaml::parse_file(path, diag);
  if (!docs || docs->empty()) return;
  const yaml::Node& root = docs->front();
  if (!root.is_mapping()) {
    diag.error(root.loc(), "the config must be a mapping, got " + root.describe(), "see fwengine.conf(5)");
    return;
  }
  if (docs->size() > 1)
    diag.error(docs->at(1).loc(), "the config is one YAML document; this second one would be ignored",
               "move its keys into the first document and remove the '---'");
  static const std::vector<std::string_view> kKeys = {
      "frontend",    "backend",       "sources",          "node",
      "plugin-dirs", "flush-on-stop", "frontend-options", "backend-options"};
  for (std::size_t i = 0; i < root.size(); ++i) {
    const auto& key = root.keys()[i];
    const auto& value = root.values()[i];
    const std::string& k = key.text();
    // Both return whether the file's value was taken (the command line gave none).
    auto scalar = [&](std::string& into) {
      if (!value.is_scalar()) {
        diag.error(value.loc(), k + " must be a string, got " + value.describe());
        return false;
      }
      if (!into.empty()) return false;
      into = value.text();
      return true;
    };
    auto strings = [&](std::vector<std::string>& into) {
      if (!value.is_sequence()) {
        diag.error(value.loc(), k + " must be a list, got " + value.describe());
        return false;
      }
      std::vector<std::string> items;
      for (const auto& item : value.items()) {
        if (!item.is_scalar()) {
          diag.error(item.loc(), k + " entries must be strings, got " + item.describe());
          return false;
        }
        items.push_back(item.text());
      }
      if (!into.empty()) return false;
      into = std::move(items);
      return true;
    };
    if (k == "frontend") {
      if (scalar(o.frontend)) o.frontend_loc = value.loc();
    } else if (k == "backend") {
      if (scalar(o.backend)) o.backend_loc = value.loc();
    } else if (k == "node") {
      scalar(o.node);
    } else if (k == "sources") {
      if (strings(o.files))
        for (const auto& item : value.items()) o.file_locs.push_back(item.loc());
    } else if (k == "flush-on-stop") {
      if (auto b = value.as_bool())
        o.flush_on_stop = *b;
      else
        diag.error(value.loc(), "flush-on-stop must be true or false, got " + value.describe());
    } else if (k == "plugin-dirs") {
      if (strings(o.plugin_dirs))
        for (const auto& item : value.items())
          if (auto problem = plugin_dir_problem(item.text()); !problem.empty())
            diag.error(item.loc(), "plugin directory " + problem, "create it or remove it from plugin-dirs");
    } else if (k == "frontend-options") {
      read_config_options(value, k, "", o.frontend_options, o.frontend_options, diag);
    } else if (k == "backend-options") {
      // Per backend, so that one file serves every backend: BACKEND: {KEY: VALUE}.
      if (!value.is_mapping()) {
        diag.error(value.loc(),
                   "backend-options must be a mapping (BACKEND: {KEY: VALUE}), got " + value.describe(),
                   "e.g. backend-options: {nft: {counters: rule}}");
        continue;
      }
      for (std::size_t j = 0; j < value.size(); ++j) {
        auto& entry = o.config_backend_options.emplace_back();
        entry.backend = value.keys()[j].text();
        entry.backend_loc = value.keys()[j].loc();
        read_config_options(value.values()[j], k + "." + entry.backend, entry.backend, o.backend_options,
                            entry.settings, diag);
      }
    } else
      diag.error(key.loc(), "unknown key '" + k + "'", did_you_mean(k, kKeys));
  }
}

namespace {

// Enters /run/netns/<name> and returns a descriptor of the namespace the engine started in (-1 when
// it stays where it is): plugins make sockets to the host's own services there.
int enter_netns(const std::string& name) {
  if (name.empty()) return -1;
  if (name.find('/') != std::string::npos || name == "." || name == "..")
    throw UsageError("--netns takes a name from 'ip netns list', not a path");
  if (name == "default")
    throw UsageError(
        "--netns default: fwengine keeps the host's state under the name 'default' (/run/fwengine/default, "
        "/sys/fs/bpf/fwengine/default), so a namespace of that name cannot have its own; give it another "
        "name, or leave out --netns for the host");
  std::string path = "/run/netns/" + name;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw UsageError("no network namespace '" + name + "' (" + path + " is missing; see 'ip netns list')");
  int origin = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  int rc = setns(fd, CLONE_NEWNET);
  const int error = errno;
  close(fd);
  if (rc != 0 && error == EINVAL)
    throw UsageError(path + " is not a network namespace (see 'ip netns list')");
  if (rc != 0)
    throw RuntimeError("cannot enter network namespace '" + name + "': " + std::strerror(error) +
                       " (run as root)");
  return origin;
}

// Marks every descriptor but the standard three close-on-exec. close_range's flag needs Linux 5.11 (and
// a seccomp filter may refuse it): else one by one.
void close_all_on_exec() {
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec))
    if (const int fd = std::atoi(entry.path().filename().c_str()); fd > 2)
      fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
}

// A source the engine reads over the network (etcd://...), not a path.
bool is_url(const std::string& source) {
  return source.find("://") != std::string::npos;
}

// The node name a host has in Kubernetes and Calico: its host name trimmed and lower-cased, as Felix
// (names.Hostname) and kubelet derive it.
std::string host_name() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  std::string name = buf;
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  name.erase(std::find_if_not(name.rbegin(), name.rend(), space).base(), name.end());
  name.erase(name.begin(), std::find_if_not(name.begin(), name.end(), space));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

// Milliseconds since the last lap (or since it was made).
class Stopwatch {
 public:
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return ms;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

class Session {
 public:
  explicit Session(Options options)
      : command_line_(options), o_(std::move(options)), loader_(std::vector<std::string>{}) {}

  bool wants_json() const { return o_.json; }

  int run() {
    const std::string& c = o_.command;
    if (c == "help") return (o_.json ? print_help_json(std::cout) : print_help(std::cout)), 0;
    if (c == "version") {
      if (o_.json)
        std::cout << json{{"ok", true}, {"version", FWE_VERSION}}.dump() << '\n';
      else
        std::cout << "fwengine " << FWE_VERSION << '\n';
      return 0;
    }
    // A stop while the daemon starts (the config, the plugins) waits until the daemon can serve it, before
    // its first apply, and flushes as flush-on-stop asks: the signal's default action would end it there
    // with the ruleset of before left in the kernel.
    if (c == "daemon") block_service_signals();
    // A confirm needs nothing of fwengine.conf: one edited (or broken) while a trial runs must not keep
    // it from confirming, which the rollback would then undo.
    if (c == "confirm") {
      origin_netns_fd_ = enter_netns(o_.netns);
      return confirm();
    }
    if (!configure()) return fail_input();
    if (c == "plugins") return plugins();
    if (!backend_fits()) return fail_input();
    // The watchdog's rollback decides whether it is still due under the writer lock, and keeps the lock:
    // it reads good/, which a confirm or an apply that wins the lock rewrites.
    if (!o_.rollback_token.empty()) {
      held_lock_ = writer_lock();
      if (!rollback_due()) return 0;
    }
    const bool reads_policy = c != "status" && c != "flush";
    if (reads_policy && !policy_fits()) return fail_input();
    origin_netns_fd_ = enter_netns(o_.netns);
    if (c == "daemon") return daemon();
    if (c == "status") return status();
    if (c == "flush") return flush();
    if (!compile()) return fail_input();
    if ((c == "check" || c == "ir" || c == "trace") && !backend_options_fit()) return fail_input();
    if (c == "check") return check();
    if (c == "ir") return ir();
    if (c == "trace") return trace();
    if (c == "migrate") return migrate();
    if (c == "render") return render_only();
    if (c == "diff") return diff();
    return apply();
  }

 private:
  // Joins fwengine.conf to the command line and fills in the defaults: false when the file has errors
  // (in diag_); contradicting options are a UsageError.
  bool configure() {
    read_config(o_, diag_);
    if (diag_.has_errors()) return false;
    loader_ = PluginLoader(o_.plugin_dirs);  // the config's plugin-dirs count too
    backend_named_ = !o_.backend.empty();
    if (o_.frontend.empty()) o_.frontend = "yaml";
    if (o_.firewalld_aliases && o_.frontend != "firewalld")
      throw UsageError("--firewalld-defaults and --firewalld-compat need --frontend firewalld, not '" +
                       o_.frontend + "'");
    if (o_.etcd_aliases && o_.frontend != "calico")
      throw UsageError("--etcd-ca, --etcd-cert, --etcd-key and --etcd-cache need --frontend calico, not '" +
                       o_.frontend + "'");
    // What a namespace deleted since left under this one's name is not this one's to go by.
    if (state::left_by_another_namespace(o_.netns)) writer_lock()->remove_if_alone();
    // Unless a backend is named (--backend, the config), the one the last apply here used goes on: status,
    // flush and diff look at what it loaded, and a plain apply does not switch away from it.
    if (!backend_named_)
      if (auto applied = state::load(o_.netns)) o_.backend = applied->backend;
    if (o_.backend.empty()) o_.backend = "nft";
    join_config_backend_options();
    if (o_.node.empty()) o_.node = host_name();
    return true;
  }

  // A backend named by mistake is an error also where the command never loads it (check, ir).
  bool backend_fits() {
    return !backend_named_ || plugin_exists(o_.backend, PluginKind::backend, o_.backend_loc);
  }

  // The backend checks its options when it renders: commands that never render have it render nothing,
  // so that an option apply would refuse is refused here too.
  bool backend_options_fit() {
    if (o_.backend_options.empty()) return true;
    backend()->render(ir::Ruleset{}, diag_);
    return !diag_.has_errors();
  }

  bool policy_fits() {
    return plugin_exists(o_.frontend, PluginKind::frontend, o_.frontend_loc) && sources_fit();
  }

  // The first error in diag_, counted: "3 error(s) in WHAT; first: FILE:LINE:COL: ...".
  std::string first_error(const std::string& what) const {
    std::string failure = std::to_string(diag_.error_count()) + " error(s) in " + what;
    for (const auto& d : diag_.all())
      if (d.severity == Severity::error) return failure + "; first: " + diag_.format(d);
    return failure;
  }

  // A daemon reload that finds fwengine.conf changed starts the daemon again (exec: the same pid, so
  // systemd sees a reload), which reads the file as a restart would: frontend, backend, sources,
  // options, watches. It is checked first (the file reads, the plugins load, the namespace is there,
  // --watch can follow the sources, and a policy from files reads and renders with it): a file that
  // fails is not used. Returns only then, with the problem; the reload goes on with the config in use.
  std::string start_again_with_config(const std::string& self, bool watching) {
    const std::string path = config_path(o_);
    // Moved away while it is edited, or removed: a restart, not a reload, goes back to the defaults.
    if (o_.config_text && !read_config_text(path))
      return "the changed " + path +
             " is not used: it is gone (or not a regular file); the config in use "
             "stays until one is there again";
    std::string problem;
    std::optional<std::string> checked;  // the text the check read
    {
      Session next(command_line_);
      next.o_.quiet = true;                      // the new process prints the warnings
      next.origin_netns_fd_ = origin_netns_fd_;  // plugins reach the host's services from there
      try {
        problem = next.problem_as_daemon(watching, path);
        if (!problem.empty()) next.print_diagnostics();
      } catch (const std::exception& e) {
        problem = e.what();
      }
      checked = next.o_.config_text;
    }
    if (!problem.empty()) return "the changed " + path + " is not used: " + problem;
    // An edit in several steps: the next reload checks what it has come to.
    if (read_config_text(path) != checked)
      return "the changed " + path + " is not used: it changed again while it was checked";
    // A stop that came during the check is served by this process: the new one would start first.
    if (stop_pending()) return "the changed " + path + " is not used: a stop is pending";
    std::cerr << "fwengine: " << path << " changed: starting again with it\n";
    std::vector<char*> argv;
    for (auto& arg : o_.argv) argv.push_back(arg.data());
    argv.push_back(nullptr);
    std::cout.flush();
    // Nothing of this process's goes on in the new one (a plugin's socket, an inherited descriptor).
    close_all_on_exec();
    // The new process enters --netns itself, from the namespace this one started in; should the exec
    // fail, this one goes back where it works (by descriptor: the name may have gone meanwhile).
    const int here = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (origin_netns_fd_ >= 0 && (here < 0 || setns(origin_netns_fd_, CLONE_NEWNET) != 0)) {
      if (here >= 0) close(here);
      return std::string("cannot start again: leaving the namespace: ") + std::strerror(errno);
    }
    execv(self.c_str(), argv.data());
    const std::string failure = std::string("cannot start again: ") + self + ": " + std::strerror(errno);
    if (origin_netns_fd_ >= 0 && setns(here, CLONE_NEWNET) != 0) {
      // Working on in the host's namespace would change the host's firewall: stop, abnormally (systemd
      // restarts the service), leaving the kernel as it is.
      std::cerr << "fwengine: " << failure
                << ", and cannot go back into the namespace: " << std::strerror(errno) << '\n';
      std::abort();
    }
    if (here >= 0) close(here);
    return failure;
  }

  // What would stop the daemon from starting (or its first reload from applying) with this session's
  // options: empty when nothing.
  std::string problem_as_daemon(bool watching, const std::string& config) {
    if (!configure() || !backend_fits() || !policy_fits()) return first_error(config);
    if (std::error_code ec; !o_.netns.empty() && !std::filesystem::exists("/run/netns/" + o_.netns, ec))
      return "no network namespace '" + o_.netns + "' to start in";
    auto be = backend();
    auto fe = loader_.frontend(o_.frontend, context());
    const FrontendRequest request = frontend_request(*fe);
    const auto& sources = request.sources;
    if (watching)
      for (const auto& source : sources)
        if (std::error_code ec;
            !is_url(source) && !std::filesystem::is_directory(ServiceLoop::watch_dir(source), ec))
          return "--watch cannot follow " + source + ": no directory " + ServiceLoop::watch_dir(source);
    const auto stores = std::count_if(sources.begin(), sources.end(), is_url);
    if (stores > 1) return "one store per daemon, not " + std::to_string(stores);
    fe->check_sources(request);
    // A store's policy is the daemon's to follow once it starts (it waits for the store, or uses its
    // cache): only a policy from files is read here.
    if (stores == 0 && (!compile(*fe) || !render(*be))) return first_error("the policy read with it");
    return {};
  }

  // A wrong value from fwengine.conf is reported at its place there (false: fail_input() prints it);
  // one from the command line is a usage error.
  bool input_error(SourceLoc where, std::string message, std::string hint = {}) {
    if (where == SourceLoc{}) throw UsageError(hint.empty() ? message : message + " (" + hint + ")");
    diag_.error(where, std::move(message), std::move(hint));
    return false;
  }

  bool plugin_exists(const std::string& name, PluginKind kind, SourceLoc where) {
    try {
      loader_.locate(name, kind);
      return true;
    } catch (const UsageError& e) {
      return input_error(where, e.msg);
    }
  }

  // Only the calico frontend reads a datastore; any other would look for a file called etcd://...
  bool sources_fit() {
    // A reload reads the sources again; stdin, read once, would then give an empty policy.
    if (o_.command == "daemon" && std::find(o_.files.begin(), o_.files.end(), "-") != o_.files.end())
      throw UsageError(
          "the daemon reads its policy again at every reload, which stdin cannot give: give -f "
          "files or directories");
    // The same file twice would define everything in it twice, each at the same place.
    std::set<std::string> seen;
    for (const auto& source : o_.files) {
      std::error_code ec;
      const auto canonical = std::filesystem::weakly_canonical(source, ec);
      if (!seen.insert(ec ? source : canonical.string()).second)
        throw UsageError("-f " + source + " is given twice (or also by the config's sources); give it once");
    }
    if (o_.frontend == "calico") return true;
    bool fit = true;
    for (std::size_t i = 0; i < o_.files.size(); ++i)
      if (o_.files[i].starts_with("etcd://"))
        fit = input_error(i < o_.file_locs.size() ? o_.file_locs[i] : SourceLoc{},
                          "'" + o_.files[i] +
                              "': etcd:// sources are read by the calico frontend only, not by '" +
                              o_.frontend + "'",
                          "use --frontend calico, or give files and directories") &&
              fit;
    return fit;
  }

  // NAT that sends packets on to another host needs the kernel to forward them. firewalld switches
  // forwarding on by itself for masquerade and for a forward-port to another address; fwengine leaves
  // the host's sysctls to the host, and says when the one a NAT rule needs is off here.
  void warn_if_not_forwarding() {
    const ir::Rule* needs[2] = {nullptr, nullptr};  // IPv4, IPv6
    for (const auto& [name, chain] : ruleset_.chains)
      for (const auto& rule : chain.rules) {
        const auto kind = rule.action.kind;
        if (kind != ir::ActionKind::masquerade && kind != ir::ActionKind::snat &&
            !(kind == ir::ActionKind::dnat && rule.action.nat_addr))
          continue;
        ir::Family family = rule.action.nat_addr ? rule.action.nat_addr->family : rule.match.family;
        const bool v6 = family == ir::Family::ipv6;
        if (!needs[v6]) needs[v6] = &rule;
      }
    const char* sysctl[2] = {"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"};
    const char* path[2] = {"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"};
    for (int v6 = 0; v6 < 2; ++v6) {
      if (!needs[v6]) continue;
      std::ifstream in(path[v6]);
      std::string value;
      if (!(in >> value) || value != "0") continue;
      diag_.warning(needs[v6]->origin.loc,
                    std::string("this rule NATs packets on to other hosts, but forwarding is off (") +
                        sysctl[v6] + " = 0" + (o_.netns.empty() ? "" : " in netns " + o_.netns) +
                        "): the kernel does not route them; fwengine leaves sysctls to the host (firewalld "
                        "turned this one on by itself)",
                    std::string("sysctl -w ") + sysctl[v6] + "=1, and keep it in /etc/sysctl.d/");
    }
  }

  // Every diagnostic, for --json answers.
  json diagnostics_json() const {
    json diagnostics = json::array();
    for (const auto& d : diag_.all())
      diagnostics.push_back({{"file", diag_.file_name(d.loc.file)},
                             {"line", d.loc.line},
                             {"col", d.loc.col},
                             {"severity", d.severity == Severity::error     ? "error"
                                          : d.severity == Severity::warning ? "warning"
                                                                            : "note"},
                             {"message", d.message},
                             {"hint", d.hint}});
    return diagnostics;
  }

  int fail_input() {
    print_diagnostics();
    if (o_.json)  // messages quote the input, which need not be UTF-8
      std::cout << json_text(
                       {{"ok", false}, {"errors", diag_.error_count()}, {"diagnostics", diagnostics_json()}})
                << '\n';
    return 2;
  }

  // Prints what was not printed yet: compile prints the frontend's diagnostics, migrate the writer's.
  void print_diagnostics() {
    const auto& all = diag_.all();
    for (; printed_ < all.size(); ++printed_)
      if (all[printed_].severity == Severity::error || !o_.quiet)
        std::cerr << diag_.format(all[printed_]) << '\n';
  }

  PluginContext context() const {
    PluginContext c{o_.netns, origin_netns_fd_, o_.node};
    for (const auto& kv : o_.backend_options) {  // KEY=VALUE: checked when parsed or read
      auto eq = kv.find('=');
      c.backend_options[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    return c;
  }

  // fwengine.conf's backend-options for the backend in use join the command line's. Options for a
  // backend not installed here are left out with a warning (one file may serve hosts with other plugins).
  void join_config_backend_options() {
    if (o_.config_backend_options.empty()) return;
    std::vector<std::string> installed;
    for (const auto& plugin : loader_.discover())
      if (plugin.kind == PluginKind::backend && plugin.problem.empty()) installed.push_back(plugin.name);
    for (const auto& entry : o_.config_backend_options) {
      if (entry.backend == o_.backend)
        o_.backend_options.insert(o_.backend_options.end(), entry.settings.begin(), entry.settings.end());
      else if (std::find(installed.begin(), installed.end(), entry.backend) == installed.end())
        diag_.warning(
            entry.backend_loc,
            "backend-options for '" + entry.backend + "', which is not an installed backend: ignored",
            did_you_mean(entry.backend, {installed.begin(), installed.end()}));
    }
  }

  FrontendRequest frontend_request(const Frontend& fe) const {
    FrontendRequest request;
    request.sources = o_.files.empty() ? fe.default_sources() : o_.files;
    request.node = o_.node;
    request.netns = o_.netns;
    for (const auto& kv : o_.frontend_options) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        throw UsageError("--frontend-option takes KEY=VALUE, got '" + kv + "'");
      request.options[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    return request;
  }

  bool compile() {
    auto fe = loader_.frontend(o_.frontend, context());
    return compile(*fe);
  }

  bool compile(Frontend& fe) {
    FrontendRequest request = frontend_request(fe);
    sources_ = request.sources;
    // Before a datastore is read: what cannot be kept for rollback is refused first.
    if (o_.command == "apply" && o_.vm.count("confirm")) require_keepable(sources_);
    hash();  // one still being worked out reads the ruleset about to be replaced
    use_huge_pages(source_bytes(sources_, kHugePagesFrom) >= kHugePagesFrom);
    Stopwatch watch;
    ruleset_ = fe.load(request, diag_);
    phase_ms_.read = watch.lap();
    // migrate writes what the user wrote, not what core derived from it (e.g. failsafe chains); the
    // written policy goes through the same passes when it is loaded, so the hash is the same.
    if (o_.command == "migrate") as_written_ = ruleset_;
    if (!diag_.has_errors()) passes::run_all(ruleset_, diag_);
    phase_ms_.passes = watch.lap();
    if (diag_.has_errors()) return false;
    if (o_.command == "apply" || o_.command == "daemon") warn_if_not_forwarding();
    if (!o_.quiet) print_diagnostics();
    // Worked out beside what comes next (rendering, on the other core): a large policy's hash takes as
    // long as a tenth of its apply. The ruleset stays as it is until the hash is taken (hash()).
    pending_hash_ = std::async(std::launch::async, [this] { return canonical::hash(ruleset_); });
    phase_ms_.hash = watch.lap();
    return true;
  }

  // What commands tell and record of the ruleset: worked out from it, or what was kept of it when apply
  // let it go (release_ruleset).
  struct RulesetSummary {
    std::size_t chains = 0, rules = 0, sets = 0;
    std::string revision;
  };
  RulesetSummary summary() const {
    if (released_) return *released_;
    RulesetSummary s{
        .chains = ruleset_.chains.size(), .sets = ruleset_.sets.size(), .revision = ruleset_.source_revision};
    for (const auto& [n, c] : ruleset_.chains) s.rules += c.rules.size();
    return s;
  }

  // Once rendered and hashed, apply needs nothing of the ruleset but its summary: a large policy's IR is
  // as large as everything else the apply holds at once (50,000 rules: 26 of 38 MB), and the backend's
  // transaction can then be built in the memory it frees. Freed here, not on another thread: with the
  // huge-page extent hooks (cli_memory.cpp), a thread freeing this one's blocks hung in jemalloc 5.3.
  void release_ruleset() {
    hash();
    released_ = summary();
    ruleset_ = {};
  }

  int check() {
    auto [chains, rules, sets, revision] = summary();
    Stopwatch hashing;  // nothing runs beside it here: the wait is the hash's time
    hash();
    phase_ms_.hash += hashing.lap();
    if (o_.json)
      std::cout << json_text(
                       {{"ok", true},
                        {"hash", hash()},
                        {"chains", chains},
                        {"rules", rules},
                        {"diagnostics", diagnostics_json()},  // warnings and notes: what was left out
                        {"ms",
                         {{"read", phase_ms_.read}, {"passes", phase_ms_.passes}, {"hash", phase_ms_.hash}}}})
                << '\n';
    else
      std::cout << "ok: " << chains << " chains, " << rules << " rules, " << sets << " sets; IR hash "
                << hash() << '\n';
    return 0;
  }

  int ir() {
    if (o_.json)
      std::cout << json{{"hash", hash()}, {"ir", canonical::to_json(ruleset_, true)}}.dump(2) << '\n';
    else
      std::cout << "# IR hash " << hash() << '\n' << canonical::to_yaml(ruleset_, true);
    return 0;
  }

  trace::Packet packet_from_options() const {
    const auto& vm = o_.vm;
    trace::Packet p;
    auto str = [&](const char* k) { return vm.count(k) ? vm[k].as<std::string>() : std::string{}; };
    p.iif = str("iif");
    p.oif = str("oif");
    if (p.iif.empty() && p.oif.empty())
      throw UsageError("trace needs --iif (incoming) and/or --oif (outgoing)");
    // A name the kernel cannot give an interface would match a rule no packet can meet.
    for (const auto& [option, name] : {std::pair{"--iif", p.iif}, std::pair{"--oif", p.oif}})
      if (name.size() > 15 || name.find_first_of("/ \t") != std::string::npos)
        throw UsageError(std::string(option) + " '" + name +
                         "' is not an interface name (1 to 15 characters, no '/' or spaces)");
    if (!vm.count("src") || !vm.count("dst")) throw UsageError("trace needs --src and --dst addresses");
    auto src = ir::parse_ip(str("src"));
    auto dst = ir::parse_ip(str("dst"));
    if (!src) throw UsageError("--src '" + str("src") + "' is not an IPv4 or IPv6 address");
    if (!dst) throw UsageError("--dst '" + str("dst") + "' is not an IPv4 or IPv6 address");
    if (src->family != dst->family) throw UsageError("--src and --dst must be of the same family");
    p.src = *src;
    p.dst = *dst;
    std::string proto = vm.count("proto") ? str("proto") : "tcp";
    auto number = ir::parse_protocol(proto);
    if (!number)
      throw UsageError("--proto '" + proto + "' is not a protocol (tcp, udp, icmp, icmpv6 or 0-255)");
    p.protocol = *number;
    if (p.protocol == 1 && p.src.family == ir::Family::ipv6) p.protocol = 58;  // "icmp" on IPv6 means ICMPv6
    auto port = [&](const char* k, std::uint16_t dflt) -> std::uint16_t {
      if (!vm.count(k)) return dflt;
      unsigned v = vm[k].as<unsigned>();
      if (v > 65535) throw UsageError("--" + std::string(k) + " must be 0-65535");
      return static_cast<std::uint16_t>(v);
    };
    if (ir::protocol_has_ports(p.protocol)) {
      if (!vm.count("dport"))
        throw UsageError("trace of " + ir::protocol_name(p.protocol) + " needs --dport");
      p.dport = port("dport", 0);
      p.sport = port("sport", 40000);
      if (vm.count("ct-orig-dport")) p.ct_orig_dport = port("ct-orig-dport", 0);
    } else if (vm.count("dport") || vm.count("sport") || vm.count("ct-orig-dport")) {
      throw UsageError(
          "--dport/--sport/--ct-orig-dport need a protocol with ports (tcp, udp, sctp, udplite, dccp)");
    }
    auto byte = [&](const char* k, std::uint8_t dflt) -> std::uint8_t {
      if (!vm.count(k)) return dflt;
      unsigned v = vm[k].as<unsigned>();
      if (v > 255) throw UsageError("--" + std::string(k) + " must be 0-255");
      return static_cast<std::uint8_t>(v);
    };
    const bool icmpv6 = p.protocol == 58;
    if ((vm.count("icmp-type") || vm.count("icmp-code")) && p.protocol != 1 && !icmpv6)
      throw UsageError("--icmp-type and --icmp-code need --proto icmp (or icmpv6), not " +
                       ir::protocol_name(p.protocol));
    p.icmp_type = icmpv6 ? 128 : 8;  // echo-request
    p.icmp_code = byte("icmp-code", 0);
    if (vm.count("icmp-type")) {
      const std::string type = str("icmp-type");
      auto named = ir::parse_icmp_message(type, icmpv6);
      if (!named && !type.empty() &&
          std::all_of(type.begin(), type.end(), [](unsigned char c) { return std::isdigit(c) != 0; }) &&
          type.size() <= 3 && std::stoi(type) <= 255)
        named = ir::IcmpMessage{static_cast<std::uint8_t>(std::stoi(type)), std::nullopt};
      if (!named) {
        auto hint = did_you_mean(type, ir::icmp_message_names(icmpv6));
        throw UsageError("--icmp-type '" + type + "' is not an " + (icmpv6 ? "ICMPv6" : "ICMP") +
                         " type (a name such as echo-request or port-unreachable, or 0-255)" +
                         (hint.empty() ? "" : "; " + hint));
      }
      if (named->code && vm.count("icmp-code") && *named->code != p.icmp_code)
        throw UsageError("--icmp-type " + type + " is type " + std::to_string(named->type) + " code " +
                         std::to_string(*named->code) + ", not code " + std::to_string(p.icmp_code) +
                         "; leave out --icmp-code, or give --icmp-type " + std::to_string(named->type));
      p.icmp_type = named->type;
      if (named->code) p.icmp_code = *named->code;
    }
    // What a received packet's frame was sent to, as the kernel tells it by the destination MAC: an IP
    // multicast or the limited broadcast goes to such a MAC. A subnet's broadcast address, which trace
    // cannot tell from a unicast one, needs --pkt-type broadcast; a packet the host sends is unicast.
    if (vm.count("pkt-type")) {
      p.pkt_type = str("pkt-type");
      if (p.pkt_type != "unicast" && p.pkt_type != "broadcast" && p.pkt_type != "multicast")
        throw UsageError("--pkt-type '" + p.pkt_type + "' must be unicast, broadcast or multicast");
      if (p.iif.empty() && p.pkt_type != "unicast")
        throw UsageError("--pkt-type " + p.pkt_type + " needs --iif: what the host sends is unicast there");
    } else if (!p.iif.empty()) {
      const auto& b = p.dst.bytes;
      if (p.dst.family == ir::Family::ipv4 ? (b[0] & 0xf0) == 0xe0 : b[0] == 0xff)
        p.pkt_type = "multicast";
      else if (p.dst.family == ir::Family::ipv4 && b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255)
        p.pkt_type = "broadcast";
    }
    // ip_forward() drops what came to a broadcast address; multicast routing does forward.
    if (p.pkt_type == "broadcast" && !p.iif.empty() && !p.oif.empty())
      throw UsageError(
          "a broadcast packet is never forwarded: the kernel delivers it to the host or drops it; "
          "leave out --oif to trace it in to the host");
    if (vm.count("state")) {
      auto st = ir::parse_ct_state(str("state"));
      if (!st || *st == ir::CtState::untracked)
        throw UsageError("--state must be new, established, related or invalid");
      p.ct = *st;
    } else {
      p.ct = trace::first_packet_state(p.src.family, p.protocol, p.icmp_type);
    }
    if (vm.count("ct-status")) {
      std::string_view rest = vm["ct-status"].as<std::string>();
      while (true) {
        auto comma = rest.find(',');
        auto word = rest.substr(0, comma);
        auto status = ir::parse_ct_status(word);
        if (!status) throw UsageError("--ct-status '" + std::string(word) + "' must be dnat, snat or both");
        p.ct_status[static_cast<std::size_t>(*status)] = true;
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
    }
    if (vm.count("src-mac")) {
      auto mac = ir::parse_mac(str("src-mac"));
      if (!mac)
        throw UsageError("--src-mac '" + str("src-mac") + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
      p.src_mac = *mac;
    }
    if (vm.count("oif-addr")) {
      auto addr = ir::parse_ip(str("oif-addr"));
      if (!addr || addr->family != p.src.family)
        throw UsageError("--oif-addr '" + str("oif-addr") + "' is not an address of the packet's family");
      p.oif_addr = *addr;
    }
    if (vm.count("iif-addr")) {
      auto addr = ir::parse_ip(str("iif-addr"));
      if (!addr || addr->family != p.src.family)
        throw UsageError("--iif-addr '" + str("iif-addr") + "' is not an address of the packet's family");
      p.iif_addr = *addr;
    }
    if (vm.count("src-route")) {
      if (p.iif.empty())
        throw UsageError("--src-route needs --iif: it is checked against the input interface");
      p.src_route = str("src-route") == "none" ? "" : str("src-route");
    }
    return p;
  }

  std::string describe(const trace::Packet& p) const {
    std::ostringstream s;
    bool ports = ir::protocol_has_ports(p.protocol);
    auto addr = [&](const ir::IpAddr& a, std::uint16_t port) {
      std::string t = ir::to_string(a);
      if (!ports) return t;
      return (a.family == ir::Family::ipv6 ? "[" + t + "]" : t) + ":" + std::to_string(port);
    };
    s << ir::protocol_name(p.protocol) << ' ' << addr(p.src, p.sport) << " -> " << addr(p.dst, p.dport);
    if (p.protocol == 1 || p.protocol == 58)
      s << " type " << int(p.icmp_type) << " code " << int(p.icmp_code);
    if (!p.iif.empty()) s << " in " << p.iif;
    if (!p.oif.empty()) s << " out " << p.oif;
    s << " (" << trace::to_string(trace::path_of(p)) << ", " << ir::to_string(p.ct);
    for (std::size_t i = 0; i < ir::kCtStatusCount; ++i)
      if (p.ct_status[i]) s << ", " << ir::to_string(static_cast<ir::CtStatus>(i));
    s << ")";
    return s.str();
  }

  // The rule that decided a step, or the endpoint or group whose default did, where it has a line.
  static const ir::Origin* step_origin(const trace::Step& st) {
    if (st.rule) return &st.rule->origin;
    return st.origin && st.origin->loc.line > 0 ? st.origin : nullptr;
  }

  json step_json(const trace::Step& st) const {
    json j = {{"what", st.what}};
    if (!st.endpoint.empty()) j["endpoint"] = st.endpoint;
    if (!st.chain.empty()) j["chain"] = st.chain;
    if (st.rule_index >= 0) j["rule"] = st.rule_index;
    if (const ir::Origin* origin = step_origin(st)) {
      j["at"] = trace::where(ruleset_, *origin);
      if (!origin->policy.empty()) j["policy"] = origin->policy;
    }
    return j;
  }

  json result_json(const trace::Packet& in, const trace::Result& r) const {
    json stages = json::array();
    for (const auto& s : r.stages) {
      json steps = json::array();
      for (const auto& st : s.steps) steps.push_back(step_json(st));
      stages.push_back({{"stage", ir::to_string(s.stage)},
                        {"verdict", ir::to_string(s.verdict)},
                        {"endpoint", s.endpoint},
                        {"steps", std::move(steps)}});
    }
    return {{"packet", describe(in)},
            {"path", trace::to_string(r.path)},
            {"delivered", r.delivered},
            {"verdict", ir::to_string(r.final_verdict())},
            {"stages", std::move(stages)}};
  }

  void print_result(const trace::Packet& in, const trace::Result& r, std::string_view title) const {
    std::cout << title << describe(in) << '\n';
    if (r.stages.empty()) std::cout << "  (no stage of this path has rules)\n";
    for (const auto& s : r.stages) {
      // Without -v a stage that no rule touched and that let the packet go on (an IPv6-only section
      // met by an IPv4 packet) says nothing.
      if (!o_.verbose && s.verdict == ir::Verdict::continue_ && !s.steps.empty() &&
          std::none_of(s.steps.begin(), s.steps.end(),
                       [](const trace::Step& st) { return st.rule != nullptr; }))
        continue;
      std::cout << "  " << std::left << std::setw(14) << ir::to_string(s.stage) << std::setw(9)
                << ir::to_string(s.verdict);
      if (s.steps.empty()) {
        std::cout << "no endpoint matched\n";
        continue;
      }
      // Without -v: what decided, and what did something to the packet on the way (a log line, a mark).
      auto has_effect = [](const trace::Step& st) {
        if (!st.rule) return false;
        using enum ir::ActionKind;
        const auto kind = st.rule->action.kind;
        return kind == log || kind == set_mark || kind == notrack || kind == ct_helper ||
               kind == tcp_mss_clamp;
      };
      bool first = true;
      for (std::size_t i = 0; i < s.steps.size(); ++i) {
        const auto& st = s.steps[i];
        if (!o_.verbose && i + 1 != s.steps.size() && !has_effect(st)) continue;
        if (!first) std::cout << "  " << std::setw(23) << "";
        first = false;
        std::cout << (st.endpoint.empty() ? "" : "[" + st.endpoint + "] ");
        if (!st.chain.empty()) std::cout << st.chain << ' ';
        std::cout << st.what;
        if (const ir::Origin* origin = step_origin(st)) {
          std::cout << "  " << trace::where(ruleset_, *origin);
          if (!origin->policy.empty()) std::cout << " (" << origin->policy << ")";
        }
        std::cout << '\n';
      }
    }
    std::cout << "  => " << (r.delivered ? "delivered" : "stopped") << " ("
              << ir::to_string(r.final_verdict()) << ")\n";
  }

  bool matches_on_source_mac() const {
    for (const auto& [name, chain] : ruleset_.chains)
      for (const auto& rule : chain.rules)
        if (rule.match.src_mac) return true;
    for (const auto& stage : ruleset_.stages)
      for (const auto& section : stage.sections)
        for (const auto& endpoint : section.endpoints)
          if (endpoint.match.src_mac) return true;
    return false;
  }

  // Why an ICMP message with no --state is not new, and which --state traces it within a connection.
  static void print_state_note(const trace::Packet& p) {
    if (p.ct == ir::CtState::untracked) {
      std::cout << "note: conntrack leaves ICMPv6 neighbour discovery and multicast listener messages "
                   "untracked\n";
      return;
    }
    if (p.ct != ir::CtState::invalid) return;
    const bool v4 = p.protocol == 1 && p.src.family == ir::Family::ipv4;
    const bool v6 = p.protocol == 58 && p.src.family == ir::Family::ipv6;
    const std::uint8_t t = p.icmp_type;
    const bool reply = (v4 && (t == 0 || t == 14 || t == 16 || t == 18)) || (v6 && (t == 129 || t == 140));
    const bool error = (v4 && (t == 3 || t == 4 || t == 5 || t == 11 || t == 12)) || (v6 && t < 128);
    std::cout << "note: conntrack takes this ICMP message for invalid "
              << (reply   ? "when no request preceded it; --state established traces the reply to one\n"
                  : error ? "when it is about no connection conntrack knows; --state related traces an error "
                            "about one\n"
                          : "always: it can neither start a connection nor belong to one\n");
  }

  int trace() {
    auto packet = packet_from_options();
    auto result = trace::evaluate(ruleset_, packet);
    std::optional<trace::Packet> reply;
    std::optional<trace::Result> reply_result;
    std::optional<trace::Packet> later;
    std::optional<trace::Result> later_result;
    if (result.delivered && packet.ct == ir::CtState::new_) {
      reply = trace::reply_of(packet, result);
      reply_result = trace::evaluate(ruleset_, *reply);
      if (packet.protocol == 6) {
        later = trace::later_of(packet, result, *reply_result);
        later_result = trace::evaluate(ruleset_, *later);
      }
    }
    bool open = result.delivered && (!reply_result || reply_result->delivered) &&
                (!later_result || later_result->delivered);
    if (o_.json) {
      json j = result_json(packet, result);
      j["hash"] = hash();
      j["open"] = open;
      if (reply_result) j["reply"] = result_json(*reply, *reply_result);
      if (later_result) j["later"] = result_json(*later, *later_result);
      std::cout << json_text(j, 2) << '\n';
      return 0;
    }
    print_result(packet, result, "packet: ");
    if (reply_result) print_result(*reply, *reply_result, "reply:  ");
    if (later_result && !later_result->delivered) print_result(*later, *later_result, "later:  ");
    std::cout << "verdict: " << (open ? "open" : "closed") << '\n';
    if (!packet.src_mac && matches_on_source_mac())
      std::cout << "note: the policy matches source MAC addresses (a firewalld MAC <source>, a src-mac "
                   "rule): without --src-mac this packet has none of them\n";
    if (!o_.vm.count("state")) print_state_note(packet);
    return 0;
  }

  int migrate() {
    if (!o_.vm.count("to")) throw UsageError("migrate needs --to yaml|calico");
    std::string to = o_.vm["to"].as<std::string>();
    std::string out = o_.vm.count("output") ? o_.vm["output"].as<std::string>() : ".";
    if (to == "nft" || to == "iptables" || to == "ebpf")
      throw UsageError("migrate converts between policy formats (--to yaml or calico); what the " + to +
                       " backend would load is 'fwengine --backend " + to + " render'");
    auto writer = loader_.frontend(to, context());
    if (!writer->can_write())
      throw UsageError("the '" + to + "' frontend cannot write its format; try --to yaml");
    std::error_code ec;
    if (std::filesystem::exists(out, ec) && !std::filesystem::is_directory(out, ec))
      throw UsageError("-o " + out + " is not a directory: migrate writes one file per resource there");
    std::filesystem::create_directories(out, ec);
    if (ec) throw RuntimeError("cannot create " + out + ": " + ec.message());
    // Policies already there are read with the migrated one by 'fwengine -f DIR': say so. So is what
    // that read fails on, as the frontends' directory read does: a *.yaml that is no file (a link to
    // nothing, a FIFO) and not hidden (an editor's lock, such as Emacs's dangling .#policy.yaml).
    std::map<std::filesystem::path, std::filesystem::file_time_type> before;
    const auto unreadable = [](const std::filesystem::path& path) {
      std::error_code status_error;
      const auto status = std::filesystem::status(path, status_error);
      return !std::filesystem::is_regular_file(status) && !std::filesystem::is_directory(status) &&
             !path.filename().string().starts_with('.');
    };
    std::vector<std::filesystem::path> not_files;
    for (const auto& entry : std::filesystem::directory_iterator(out, ec)) {
      if (!writer->reads_file_named(entry.path().filename().string())) continue;
      if (unreadable(entry.path()))
        not_files.push_back(entry.path());
      else if (entry.is_regular_file(ec))
        before[entry.path()] = entry.last_write_time(ec);
    }
    const bool written = writer->write(as_written_, out, diag_);
    const bool failed = !written || diag_.has_errors();
    if (failed)
      fail_input();
    else
      print_diagnostics();
    std::vector<std::string> others, cannot_read;
    for (const auto& path : not_files)  // unless the migration wrote a file of that name in its place
      if (unreadable(path)) cannot_read.push_back(path.filename().string());
    for (const auto& [path, when] : before)
      if (std::filesystem::last_write_time(path, ec) == when) others.push_back(path.filename().string());
    // Also when what could not be said was reported as an error: the files were written all the same.
    if (written && !others.empty() && !o_.quiet)
      std::cerr << "fwengine: warning: " << out << " also holds " << join(others) << ", which 'fwengine -f "
                << out
                << "' reads with the migrated policy: its IR differs from this one; move them away, or use "
                   "another --output directory\n";
    if (written && !cannot_read.empty() && !o_.quiet)
      std::cerr << "fwengine: warning: " << out << " also holds " << join(cannot_read)
                << ", which 'fwengine -f " << out
                << "' cannot read (no regular file: a link to nothing, say); remove them from it\n";
    if (failed) return 2;
    if (o_.json)
      std::cout << json{{"ok", true}, {"to", to}, {"output", out}, {"hash", hash()}}.dump() << '\n';
    else
      std::cout << "wrote " << to << " policy to " << out << " (IR hash " << hash() << ")\n";
    return 0;
  }

  Loaded<Backend> backend() { return loader_.backend(o_.backend, context()); }

  std::unique_ptr<state::WriterLock> writer_lock() const {
    auto seconds = o_.vm["lock-timeout"].as<int>();
    return std::make_unique<state::WriterLock>(o_.netns, std::chrono::seconds(seconds));
  }

  void remember_applied() const {
    auto [chains, rules, sets, revision] = summary();
    const std::string when = utc_time(std::time(nullptr));
    state::Applied a{.backend = o_.backend,
                     .frontend = o_.frontend,
                     .hash = hash(),
                     .node = o_.node,
                     .time = when,
                     .revision = revision,
                     .sources = o_.files,
                     .frontend_options = o_.frontend_options,
                     .backend_options = o_.backend_options,
                     .chains = chains,
                     .rules = rules,
                     .sets = sets};
    for (auto& source : a.sources) {
      std::error_code ec;
      auto absolute = std::filesystem::absolute(source, ec);
      if (!ec && source != "-" && !is_url(source)) source = absolute.lexically_normal().string();
    }
    // A rollback applies the copies kept in good/: the record names the files they were copied from.
    if (!o_.rollback_of.empty())
      if (auto good = load_snapshot(good_snapshot_dir(o_.netns)); good && good->sources == a.sources)
        a.sources = good->originals;
    state::save(o_.netns, a);
    note_rollback();
  }

  // A rollback's lock, taken before it read its policy; anyone else's now.
  std::unique_ptr<state::WriterLock> held_or_new_lock() {
    return held_lock_ ? std::move(held_lock_) : writer_lock();
  }

  // The watchdog's rollback, once it holds the writer lock: due only while the apply it undoes is still
  // unconfirmed. A confirm, apply or flush that took the lock first has the last word.
  bool rollback_due() const {
    auto pending = load_pending(o_.netns);
    if (!pending || pending->token != o_.rollback_token) {
      std::cout << "no rollback: " << o_.rollback_of << " was confirmed or replaced in the meantime\n";
      return false;
    }
    clear_pending(o_.netns);
    return true;
  }

  // A rollback's apply or flush records that it restored the ruleset; any other makes that history.
  void note_rollback() const {
    if (o_.rollback_of.empty())
      clear_rolled_back(o_.netns);
    else
      record_rolled_back(o_.netns, o_.rollback_of, 0);
  }

  // After an apply with another backend than the last one here: that backend's ruleset is removed, so
  // that two firewalls do not filter at once (the new one is in place first, so nothing opens between).
  // Those that earlier switches could not remove are tried again.
  // Removes the ruleset another backend loaded here, and its state; nullopt when done, else why not.
  std::optional<std::string> remove_ruleset_of(const std::string& backend) {
    try {
      loader_.backend(backend, context())->flush();
      std::error_code ec;
      std::filesystem::remove_all(backend_state_dir(o_.netns, backend), ec);
      return std::nullopt;
    } catch (const std::exception& e) {
      return e.what();
    }
  }

  void retire_previous_backend() {
    std::vector<LeftBehind> left;
    for (auto& l : load_left_behind(o_.netns))
      if (l.backend != o_.backend) left.push_back(std::move(l));  // the apply just replaced the others
    if (const auto previous = state::load(o_.netns);
        previous && previous->backend != o_.backend &&
        std::none_of(left.begin(), left.end(),
                     [&](const LeftBehind& l) { return l.backend == previous->backend; }))
      left.push_back({previous->backend, {}, {}});
    std::vector<LeftBehind> still;
    for (auto& old : left) {
      if (auto failure = remove_ruleset_of(old.backend)) {
        std::cerr << "fwengine: warning: the ruleset backend " << old.backend
                  << " loaded earlier could not be removed (" << *failure << "); it still filters beside "
                  << o_.backend << "'s: the next apply tries again, or remove it with fwengine --backend "
                  << old.backend << " flush\n";
        still.push_back({old.backend, utc_time(std::time(nullptr)), *failure});
      } else if (!o_.quiet) {
        std::cerr << "fwengine: switched from backend " << old.backend << " to " << o_.backend
                  << ": the ruleset " << old.backend << " had loaded is removed\n";
      }
    }
    try {
      save_left_behind(o_.netns, still);
    } catch (const std::exception&) {
    }  // the warnings above are then all there is
  }

  std::unique_ptr<Plan> render(Backend& be) {
    passes::check_capabilities(ruleset_, be.capabilities(), o_.backend, diag_);
    if (diag_.has_errors()) return nullptr;
    auto plan = be.render(ruleset_, diag_);
    if (diag_.has_errors()) return nullptr;
    if (!o_.quiet) print_diagnostics();  // how the backend differs (ebpf: log lines via the daemon)
    return plan;
  }

  int render_only() {
    auto be = backend();
    auto plan = render(*be);
    if (!plan) return fail_input();
    if (o_.json)
      std::cout << json_text({{"backend", o_.backend}, {"hash", hash()}, {"text", plan->text(hash())}}, 2)
                << '\n';
    else
      std::cout << plan->text(hash());
    keep_to_the_end(std::move(be), std::move(plan));
    return 0;
  }

  static std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
  }

  // A line-set difference of the backend's own listings: enough to see what an apply changes.
  static std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) lines.push_back(line);
    return lines;
  }

  // With `rendered` (apply --dry-run --json), the one JSON document holds that text too.
  int diff(const std::optional<std::string>& rendered = std::nullopt) {
    auto be = backend();
    auto plan = render(*be);
    if (!plan) return fail_input();
    auto state = be->read_back();
    // The IR hash does not cover backend options: the same policy loaded otherwise is a difference.
    auto applied = state::load(o_.netns);
    auto sorted = [](std::vector<std::string> v) {
      std::sort(v.begin(), v.end());
      return v;
    };
    auto shown = [&](const std::vector<std::string>& v) {
      return v.empty() ? std::string("none") : join(sorted(v));
    };
    if (applied && applied->backend == o_.backend && applied->hash == state.ir_hash &&
        sorted(applied->backend_options) != sorted(o_.backend_options))
      state.drift.push_back("loaded with backend options " + shown(applied->backend_options) + ", not " +
                            shown(o_.backend_options));
    bool same = state.present && state.ir_hash == hash() && state.drift.empty();
    if (o_.json) {
      json j = {
          {"same", same}, {"kernel-hash", state.ir_hash}, {"policy-hash", hash()}, {"drift", state.drift}};
      if (rendered) j["text"] = *rendered;
      std::cout << json_text(j, 2) << '\n';
    } else if (same) {
      std::cout << "no difference: the kernel holds IR " << hash() << '\n';
    } else {
      std::cout << "kernel: "
                << (state.present ? "IR " + state.ir_hash : std::string("nothing of fwengine's"))
                << "\npolicy: IR " << hash() << '\n';
      for (const auto& d : state.drift) std::cout << "drift: " << d << '\n';
      auto want = lines_of(plan->listing(hash()));
      auto have = lines_of(state.text);
      // Plan::listing: lines compare up to a tab; the rest is shown.
      auto key = [](const std::string& line) { return std::string_view(line).substr(0, line.find('\t')); };
      // Count for count: a line the kernel holds twice and the plan once (a chain inlined in two
      // places, one of them gone) is one '-'.
      std::map<std::string_view, std::size_t> have_left, want_left;
      for (const auto& l : have) ++have_left[key(l)];
      for (const auto& l : want) ++want_left[key(l)];
      auto shown = [](const std::string& line) {
        auto tab = line.find('\t');
        return tab == std::string::npos ? line : line.substr(0, tab) + "  " + line.substr(tab + 1);
      };
      for (const auto& l : have)
        if (auto& left = want_left[key(l)]; left > 0)
          --left;
        else
          std::cout << "- " << shown(l) << '\n';
      for (const auto& l : want)
        if (auto& left = have_left[key(l)]; left > 0)
          --left;
        else
          std::cout << "+ " << shown(l) << '\n';
    }
    keep_to_the_end(std::move(be), std::move(plan));
    return !same && o_.vm.count("exit-code") ? 3 : 0;
  }

  Snapshot snapshot_meta() const {
    Snapshot meta;
    meta.frontend = o_.frontend;
    meta.backend = o_.backend;
    meta.node = o_.node;
    meta.config_text = o_.config_text.value_or("");
    meta.frontend_options = o_.frontend_options;
    meta.backend_options = o_.backend_options;
    meta.plugin_dirs = o_.plugin_dirs;
    return meta;
  }

  // Copies the policy about to be applied beside good/, before the kernel changes: a copy that fails
  // changes nothing. False for a policy that cannot be kept (stdin, a datastore).
  bool stage_good() const {
    if (std::any_of(sources_.begin(), sources_.end(),
                    [](const std::string& s) { return s == "-" || is_url(s); }))
      return false;
    stage_snapshot(good_snapshot_dir(o_.netns), sources_, snapshot_meta());
    return true;
  }

  // Once the kernel took it, the policy staged (or none) becomes what a later `apply --confirm` rolls
  // back to.
  void keep_as_good(bool staged) const {
    std::error_code ec;
    if (staged)
      commit_snapshot(good_snapshot_dir(o_.netns));
    else
      std::filesystem::remove_all(good_snapshot_dir(o_.netns), ec);
  }

  // The command the rollback watchdog runs: apply the last good policy again, or flush when fwengine
  // had nothing in the kernel before.
  std::vector<std::string> rollback_command(const std::string& unconfirmed) const {
    std::vector<std::string> args;
    if (!o_.netns.empty()) args = {"--netns", o_.netns};
    args.insert(args.end(), {"--rollback-of", unconfirmed});
    auto good = load_snapshot(good_snapshot_dir(o_.netns));
    if (!good) {
      if (state::load(o_.netns))
        throw UsageError(
            "the ruleset in the kernel was read from stdin or a datastore and cannot be restored by "
            "--confirm; apply it from files first");
      args.insert(args.end(), {"--backend", o_.backend, "--lock-timeout", "120", "-q", "flush"});
      return args;
    }
    if (good->backend != o_.backend)
      throw UsageError("apply --confirm cannot switch backends (" + good->backend + " to " + o_.backend +
                       "); flush " + good->backend + " first");
    args.insert(args.end(), {"--backend", good->backend, "--frontend", good->frontend, "--node", good->node});
    if (!good->config.empty()) args.insert(args.end(), {"--config", good->config});
    for (const auto& dir : good->plugin_dirs) args.insert(args.end(), {"--plugin-dir", dir});
    for (const auto& f : good->sources) args.insert(args.end(), {"-f", f});
    for (const auto& kv : good->frontend_options) args.insert(args.end(), {"--frontend-option", kv});
    for (const auto& kv : good->backend_options) args.insert(args.end(), {"--backend-option", kv});
    args.insert(args.end(), {"--lock-timeout", "120", "-q", "apply", "--full"});
    return args;
  }

  int apply() {
    auto be = backend();
    auto plan = render(*be);
    if (!plan) return fail_input();
    if (o_.vm.count("dry-run")) {
      if (!o_.json) std::cout << plan->text(hash());
      return diff(o_.json ? std::optional<std::string>(plan->text(hash())) : std::nullopt);
    }
    std::optional<unsigned> confirm_within;
    if (o_.vm.count("confirm")) confirm_within = o_.vm["confirm"].as<unsigned>();
    if (confirm_within) require_keepable(sources_);  // before the lock: a refusal touches nothing
    release_ruleset();
    auto lock = held_or_new_lock();
    const bool keeps_good = !confirm_within && o_.rollback_of.empty();  // a rollback applies good/ itself
    bool good_staged = false;
    try {
      good_staged = keeps_good && stage_good();
    } catch (...) {
      discard_snapshot(good_snapshot_dir(o_.netns));
      lock->remove_if_alone();
      throw;
    }
    std::vector<std::string> rollback;
    const std::string unconfirmed =
        "the apply of IR " + hash().substr(0, 16) + " at " + utc_time(std::time(nullptr));
    // The copy to keep if this is confirmed replaces the candidate only once the kernel took it: an
    // earlier apply --confirm still waiting must not be confirmed with a policy that was never applied.
    // The watchdog is armed before the kernel changes: a kill or a hangup from then on still ends in
    // the rollback.
    std::optional<Pending> earlier;
    pid_t watchdog = 0;
    if (confirm_within) {
      rollback = rollback_command(unconfirmed);
      stage_snapshot(candidate_snapshot_dir(o_.netns), sources_, snapshot_meta());
      earlier = load_pending(o_.netns);
      watchdog = spawn_rollback_watchdog(o_.netns, *confirm_within, rollback, unconfirmed);
    }
    auto start = std::chrono::steady_clock::now();
    ApplyReport report;
    try {
      report = be->apply(*plan, {o_.vm.count("full") > 0, hash(), backend_state_dir(o_.netns, o_.backend)});
    } catch (...) {
      if (confirm_within) {  // nothing changed: an earlier apply's trial goes on as it was
        kill(watchdog, SIGTERM);
        restore_pending(o_.netns, earlier);
        discard_snapshot(candidate_snapshot_dir(o_.netns));
      }
      if (good_staged) discard_snapshot(good_snapshot_dir(o_.netns));
      lock->remove_if_alone();  // a first apply the kernel refused leaves no state directory behind
      throw;
    }
    if (confirm_within) commit_snapshot(candidate_snapshot_dir(o_.netns));
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    retire_previous_backend();
    remember_applied();
    std::string deadline;
    if (confirm_within) {
      deadline = load_pending(o_.netns)->deadline;
    } else {
      if (keeps_good) keep_as_good(good_staged);
      clear_pending(o_.netns);
    }
    const auto [chains, rules, sets, revision] = summary();
    if (o_.json) {
      json j = {{"ok", true},       {"backend", o_.backend}, {"hash", hash()}, {"netns", o_.netns},
                {"chains", chains}, {"rules", rules},        {"ms", ms}};
      if (confirm_within) j["rollback-at"] = deadline;
      if (report.transaction_ms) j["transaction_ms"] = *report.transaction_ms;
      std::cout << j.dump() << '\n';
    } else if (!o_.quiet) {
      std::cout << "applied IR " << hash().substr(0, 16) << " (" << chains << " chains, " << rules
                << " rules) with " << o_.backend << (o_.netns.empty() ? "" : " in netns " + o_.netns)
                << " in " << std::fixed << std::setprecision(1) << ms << " ms\n";
      if (confirm_within)
        std::cout << "the previous ruleset comes back at " << deadline << " unless you run: fwengine"
                  << (o_.netns.empty() ? "" : " --netns " + o_.netns) << " confirm\n";
    }
    keep_to_the_end(std::move(be), std::move(plan));
    return 0;
  }

  int confirm() {
    const auto nothing_pending = [] {
      return RuntimeError(
          "nothing is waiting for confirmation (no apply --confirm pending, or its time ran out "
          "and the previous ruleset was restored; see fwengine status)");
    };
    if (!load_pending(o_.netns)) throw nothing_pending();  // before the lock: touches nothing
    auto lock = writer_lock();
    auto pending = load_pending(o_.netns);
    if (!pending) throw nothing_pending();
    promote_candidate(o_.netns);  // first: if it fails, the rollback is still due
    clear_pending(o_.netns);
    if (o_.json)
      std::cout << json{{"ok", true}}.dump() << '\n';
    else if (!o_.quiet)
      std::cout << "confirmed: the ruleset stays\n";
    return 0;
  }

  // Service mode: apply, then reload on SIGHUP, on file changes with --watch and on every change of a
  // datastore source, until SIGTERM. A policy that fails to load or apply is reported and the kernel
  // keeps the last good ruleset; so does a datastore that cannot be reached.
  int daemon() {
    auto be = backend();
    auto fe = loader_.frontend(o_.frontend, context());
    const FrontendRequest request = frontend_request(*fe);
    sources_ = request.sources;
    std::string store_url;
    std::vector<std::string> watched_files;
    for (const auto& source : sources_) {
      if (is_url(source))
        store_url = source;
      else if (o_.vm.count("watch"))
        watched_files.push_back(source);
    }
    // A change of fwengine.conf is a reload too (which starts the daemon again with it).
    const bool watching = o_.vm.count("watch") > 0;
    std::error_code ec;
    const auto config_dir = std::filesystem::absolute(config_path(o_), ec).parent_path();
    const std::string watched_config =
        watching && std::filesystem::is_directory(config_dir, ec) ? config_path(o_) : "";
    // Read now: after a package upgrade the link names the old, deleted file.
    const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    // The loop blocks the signals it waits for; threads a watch starts must inherit that mask (and so
    // does the process an exec makes of this one: no signal is lost while it starts).
    ServiceLoop loop(watched_files, watched_config);
    // A backend that binds to the interfaces there are when it applies (ebpf) leaves a new one open
    // until the next apply: the daemon binds what it enforces again as soon as one appears.
    const bool follow_links = be->capabilities().binds_interfaces;
    if (follow_links) loop.follow_links();
    // Log rules of a ruleset in the kernel already (a restart) write their lines before the first reload.
    loop.follow_log(be->watch_log());
    std::unique_ptr<Plan> enforced;  // the last good reload's plan, kept only to cover new interfaces
    std::string enforced_hash;
    std::optional<state::Applied> enforced_record;  // as this daemon recorded it
    std::unique_ptr<SourceWatch> store = fe->watch(request);
    if (store) loop.follow(store->fd());
    Metrics metrics;
    metrics.netns = std::filesystem::path(state::run_dir(o_.netns)).filename().string();
    metrics.node = o_.node;
    metrics.has_store = store != nullptr;
    const std::string metrics_file =
        o_.vm.count("metrics-file") ? o_.vm["metrics-file"].as<std::string>() : "";
    if (!metrics_file.empty()) loop.tick_every(kMetricsPeriod);
    auto publish = [&] {
      if (metrics_file.empty()) return;
      try {
        metrics.counters = be->counters();
        if (auto applied = state::load(o_.netns)) metrics.store_revision_applied = applied->revision;
        write_metrics(metrics_file, metrics);
      } catch (const std::exception& e) {
        std::cerr << "fwengine: metrics not written: " << e.what()
                  << '\n';  // monitoring must not stop the firewall
      }
    };
    auto reload = [&]() -> bool {
      const auto start = std::chrono::steady_clock::now();
      diag_ = diag_.fresh();
      printed_ = 0;
      std::string failure, config_problem;
      try {
        // Back only when the changed file is not used: then the policy is read as before.
        if (read_config_text(config_path(o_)) != o_.config_text)
          config_problem = start_again_with_config(self, watching);
        if (compile(*fe)) {
          if (auto plan = render(*be)) {
            auto lock = writer_lock();
            // An apply --confirm waits for its confirmation: applying now would replace what is on trial
            // and make it the ruleset to roll back to. Its confirmation or rollback decides; then the
            // next reload applies.
            if (auto pending = load_pending(o_.netns)) {
              std::cerr << "fwengine: not applied: an apply --confirm waits to be confirmed (until "
                        << pending->deadline << "); the next reload after its confirmation or rollback "
                        << "applies IR " << hash().substr(0, 16) << '\n';
              ++metrics.reloads_deferred;
              return false;
            }
            const bool good_staged = stage_good();
            try {
              be->apply(*plan, {false, hash(), backend_state_dir(o_.netns, o_.backend)});
            } catch (...) {
              if (good_staged) discard_snapshot(good_snapshot_dir(o_.netns));  // under the lock still
              throw;
            }
            loop.follow_log(be->watch_log());
            if (follow_links) {  // in the kernel now, whatever the bookkeeping below does
              enforced = std::move(plan);
              enforced_hash = hash();
              enforced_record.reset();
            }
            retire_previous_backend();
            remember_applied();
            if (follow_links) enforced_record = state::load(o_.netns);
            keep_as_good(good_staged);
            // A reload that leaves a changed config unused is a failed one, though it applied the policy.
            (config_problem.empty() ? metrics.reloads_ok : metrics.reloads_failed)++;
            metrics.last_reload_ok = config_problem.empty();
            metrics.last_apply_unix = std::time(nullptr);
            metrics.apply_seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            std::cerr << "fwengine: applied IR " << hash()
                      << (ruleset_.source_revision.empty()
                              ? ""
                              : " (store revision " + ruleset_.source_revision + ")")
                      << '\n';
            if (config_problem.empty()) return true;
            // status shows the file's problem until a reload uses it (or it is put back as it was).
            std::cerr << "fwengine: " << config_problem << "; the policy was read with the config in use\n";
            state::record_failure(o_.netns, config_problem);
            return false;
          }
        }
        print_diagnostics();
        failure = (config_problem.empty() ? "" : config_problem + "; and ") + first_error("the policy");
      } catch (const std::exception& e) {
        failure = (config_problem.empty() ? "" : config_problem + "; and ") + e.what();
      }
      keep_last_good(failure);
      ++metrics.reloads_failed;
      metrics.last_reload_ok = false;
      return false;
    };
    auto ready = [&](bool ok) {
      notify_systemd(
          std::string("READY=1\nSTATUS=") +
          (ok ? "enforcing IR " + hash().substr(0, 16) : "last reload failed (fwengine status says why)"));
    };
    // What is enforced, bound to the interfaces there are now (counters and rate limits stay): not the
    // files as they are now, which only a reload reads.
    auto cover_new_links = [&] {
      std::string names;
      for (const auto& name : loop.new_links()) names += (names.empty() ? "" : ", ") + name;
      if (!enforced) {
        std::cerr << "fwengine: new or changed interface(s) " << names
                  << ": no ruleset of this daemon to cover them with\n";
        return;
      }
      try {
        auto lock = writer_lock();
        // Another writer's ruleset (an apply by hand, one waiting for --confirm) is not replaced here:
        // the daemon's own comes back at its next reload.
        auto applied = state::load(o_.netns);
        if (!applied || applied->hash != enforced_hash || applied->backend != o_.backend) {
          std::cerr << "fwengine: new or changed interface(s) " << names << " not covered: the kernel holds "
                    << (applied ? "IR " + applied->hash.substr(0, 16) : std::string("nothing"))
                    << " from another writer, not this daemon's; it stays until the next reload\n";
          return;
        }
        // Only what this daemon wrote itself is rebound; the same IR from another writer (perhaps
        // another fwengine build) is applied again whole.
        const bool ours = enforced_record && applied->time == enforced_record->time;
        ApplyOptions options{false, enforced_hash, backend_state_dir(o_.netns, o_.backend)};
        options.rebind = ours;
        be->apply(*enforced, options);
        loop.follow_log(be->watch_log());
        std::cerr << "fwengine: new or changed interface(s) " << names << ": covered by IR "
                  << enforced_hash.substr(0, 16) << '\n';
        // A failure to cover earlier ones is over; a failed reload stays shown.
        if (auto failure = state::last_failure(o_.netns);
            failure && failure->message.rfind(kNotCovered, 0) == 0)
          state::save(o_.netns, *applied);
      } catch (const std::exception& e) {
        keep_last_good(kNotCovered + names + ": " + e.what());  // status shows it
      }
    };
    // The store's news: a changed policy means a reload; losing the store only keeps what is enforced.
    bool store_reachable = true;
    auto store_changed = [&]() -> bool {
      SourceStatus status = settle(*store);
      state::save_source(o_.netns, {store_url, status.reachable, status.revision, status.message, ""});
      metrics.store_reachable = status.reachable;
      metrics.store_revision_seen = status.revision;
      if (status.reachable != store_reachable) {
        store_reachable = status.reachable;
        if (status.reachable)
          std::cerr << "fwengine: store " << store_url << " reachable again at revision " << status.revision
                    << '\n';
        else
          // Not a failed reload: status shows the store's health from source.json.
          std::cerr << "fwengine: store " << store_url << " unreachable: " << status.message
                    << "; the kernel keeps " << kept() << '\n';
      }
      return status.changed;
    };
    if (store) {
      // Nothing is applied before the store's first answer (or, while it cannot be reached, before the
      // watch has fallen back to its copy on disk); without either the kernel stays as it is.
      while (true) {
        Wake wake = loop.wait();
        if (wake == Wake::stop) return stop_daemon(*be);
        if (wake != Wake::source) continue;
        bool changed = store_changed();
        if (changed || !store_reachable) {
          ready(changed && reload());
          break;
        }
      }
    } else {
      // A stop that came while the daemon started is served before it applies anything.
      if (stop_pending()) return stop_daemon(*be);
      ready(reload());
    }
    publish();
    for (Wake wake; (wake = loop.wait()) != Wake::stop; publish()) {
      if (wake == Wake::tick || (wake == Wake::source && !store_changed())) continue;
      if (wake == Wake::links) {
        cover_new_links();
        continue;
      }
      notify_systemd("RELOADING=1");
      ready(reload());
    }
    return stop_daemon(*be);
  }

  static constexpr auto kMetricsPeriod = std::chrono::seconds(15);
  static constexpr const char* kNotCovered = "not covered: new or changed interface(s) ";

  // Waits for a burst of changes to end (it is read as one), up to a limit so that a store that never
  // rests is still followed.
  static SourceStatus settle(SourceWatch& store) {
    constexpr auto kQuiet = std::chrono::milliseconds(50);
    constexpr int kMaxRounds = 10;
    SourceStatus merged;
    for (int round = 0; round < kMaxRounds; ++round) {
      std::this_thread::sleep_for(kQuiet);
      SourceStatus status = store.consume();
      status.changed = status.changed || merged.changed;
      merged = status;
      pollfd more{store.fd(), POLLIN, 0};
      if (poll(&more, 1, 0) <= 0) break;
    }
    return merged;
  }

  // What the kernel holds while a new policy cannot be applied.
  std::string kept() const {
    auto applied = state::load(o_.netns);
    return applied ? "IR " + applied->hash : std::string("what it had");
  }

  void keep_last_good(const std::string& failure) const {
    std::cerr << "fwengine: " << failure << "; the kernel keeps " << kept() << '\n';
    state::record_failure(o_.netns, failure);
  }

  int stop_daemon(Backend& be) {
    notify_systemd("STOPPING=1");
    if (o_.flush_on_stop) {
      auto lock = writer_lock();
      flush_ruleset(be);
      lock->remove_if_alone();
      std::cerr << "fwengine: stopped; flushed (flush-on-stop: true)\n";
    } else {
      std::cerr << "fwengine: stopped; the ruleset stays in the kernel\n";
    }
    return 0;
  }

  int status() {
    auto be = backend();
    auto state = be->read_back();
    auto applied = state::load(o_.netns);
    auto source = state::load_source(o_.netns);
    const auto rolled = load_rolled_back(o_.netns);
    const auto left = load_left_behind(o_.netns);
    if (o_.json) {
      json left_json = json::array();
      for (const auto& l : left)
        left_json.push_back({{"backend", l.backend}, {"time", l.time}, {"message", l.message}});
      json counters = json::array();
      for (const auto& c : state.counters)
        counters.push_back({{"chain", c.chain},
                            {"rule", c.rule},
                            {"at", c.where},
                            {"label", counter_label(c)},
                            {"packets", c.packets},
                            {"bytes", c.bytes}});
      const auto pending = load_pending(o_.netns);
      const auto failure = state::last_failure(o_.netns);
      std::cout << json_text({{"backend", o_.backend},
                              {"present", state.present},
                              {"hash", state.ir_hash},
                              {"counters", counters},
                              {"drift", state.drift},
                              {"applied", applied ? json{{"backend", applied->backend},
                                                         {"frontend", applied->frontend},
                                                         {"sources", applied->sources},
                                                         {"frontend-options", applied->frontend_options},
                                                         {"backend-options", applied->backend_options},
                                                         {"time", applied->time},
                                                         {"hash", applied->hash},
                                                         {"revision", applied->revision},
                                                         {"rules", applied->rules}}
                                                  : json(nullptr)},
                              {"left-behind", left_json},
                              {"waiting-for-confirmation",
                               pending ? json{{"deadline", pending->deadline}} : json(nullptr)},
                              {"last-reload-failed",
                               failure ? json{{"time", failure->time}, {"message", failure->message}}
                                       : json(nullptr)},
                              {"rolled-back", rolled ? json{{"time", rolled->time},
                                                            {"unconfirmed", rolled->unconfirmed},
                                                            {"exit", rolled->exit_code}}
                                                     : json(nullptr)},
                              {"source", source ? json{{"url", source->url},
                                                       {"reachable", source->reachable},
                                                       {"revision", source->revision},
                                                       {"message", source->message},
                                                       {"time", source->time}}
                                                : json(nullptr)}},
                             2)
                << '\n';
      return 0;
    }
    const bool applied_here = applied && applied->backend == o_.backend;
    if (applied && !applied_here)
      std::cout << "note: fwengine last applied here with backend " << applied->backend << " ("
                << applied->time << "; fwengine --backend " << applied->backend << " status)\n";
    if (!state.present) {
      std::cout << "backend " << o_.backend << ": nothing of fwengine's is loaded\n";
    } else {
      std::cout << "backend " << o_.backend << ": IR " << state.ir_hash << '\n';
      if (applied_here && applied->hash == state.ir_hash)
        std::cout << "applied " << applied->time << " from " << applied->frontend << " ("
                  << (applied->sources.empty() ? std::string("default sources") : join(applied->sources))
                  << (applied->revision.empty() ? "" : " at revision " + applied->revision)
                  << (applied->frontend_options.empty() ? "" : " with " + join(applied->frontend_options))
                  << (applied->backend_options.empty() ? "" : "; backend " + join(applied->backend_options))
                  << "): " << applied->chains << " chains, " << applied->rules << " rules, " << applied->sets
                  << " sets\n";
      else if (applied_here)
        std::cout << "warning: the kernel does not hold what fwengine last applied ("
                  << applied->hash.substr(0, 16) << " at " << applied->time
                  << "); someone changed it, or it was applied elsewhere\n";
      for (const auto& c : state.counters)
        if (c.packets > 0 || o_.verbose)
          std::cout << "  " << std::right << std::setw(10) << c.packets << " pkts  " << c.chain << " #"
                    << c.rule << "  " << counter_origin(c) << '\n';
    }
    for (const auto& d : state.drift) std::cout << "drift: " << d << '\n';
    // What the service knows besides the kernel: also when nothing is loaded (a store down at start).
    if (source && source->reachable)
      std::cout << "store " << source->url << ": reachable, revision " << source->revision << " seen ("
                << source->message << ")\n";
    else if (source)
      std::cout << "store " << source->url << ": UNREACHABLE: " << source->message
                << "; the kernel keeps the last good ruleset\n";
    if (auto pending = load_pending(o_.netns))
      std::cout << "waiting for confirmation: the previous ruleset comes back at " << pending->deadline
                << " unless 'fwengine confirm' runs\n";
    if (auto failure = state::last_failure(o_.netns))
      std::cout << "last reload failed at " << failure->time << ": " << failure->message << '\n';
    for (const auto& l : left)
      std::cout << "warning: the ruleset of backend " << l.backend << " is still loaded beside this one: "
                << "removing it failed at " << l.time << " (" << l.message
                << "); the next apply tries again, or: fwengine --backend " << l.backend << " flush\n";
    if (rolled) {
      if (rolled->exit_code == 0)
        std::cout << "rolled back at " << rolled->time << ": " << rolled->unconfirmed
                  << " was not confirmed in time; "
                  << (state.present ? "the ruleset before it was restored\n"
                                    : "it was removed (fwengine had nothing loaded before it)\n");
      else
        std::cout << "ROLLBACK FAILED at " << rolled->time << " ("
                  << (rolled->exit_code > 0 ? "exit " + std::to_string(rolled->exit_code)
                                            : std::string("unknown"))
                  << "): " << rolled->unconfirmed << " was not confirmed in time, and restoring the "
                  << "ruleset before it failed; see " << state::run_dir(o_.netns) << "/rollback.log\n";
    }
    return 0;
  }

  // What a counted rule is, where the backend's stamp says (nft's: a zone's service, a policy's rule).
  static std::string counter_label(const RuleCounter& c) {
    std::string_view label = c.origin.policy;
    if (label.starts_with(c.where)) label.remove_prefix(c.where.size());
    while (label.starts_with(' ')) label.remove_prefix(1);
    return std::string(label);
  }
  // "zones/public.xml:5:3 (zone public: service ssh)"
  static std::string counter_origin(const RuleCounter& c) {
    const std::string label = counter_label(c);
    if (label.empty()) return c.where;
    return c.where + (c.where.empty() ? "(" : " (") + label + ")";
  }

  struct Flushed {
    std::vector<std::string> left_behind;  // backends whose ruleset a switch had left, removed now
    std::string other;                     // the backend of the last apply, when another: its record stays
  };

  // Removes the backend's ruleset, any a switch of backends could not remove, and what fwengine recorded
  // of them (under the writer lock). Another backend's last apply keeps its record, and what --confirm
  // would roll back to.
  Flushed flush_ruleset(Backend& be) {
    Flushed flushed;
    be.flush();
    std::error_code ec;
    std::filesystem::remove_all(backend_state_dir(o_.netns, o_.backend), ec);
    std::vector<LeftBehind> still;
    for (auto& left : load_left_behind(o_.netns)) {
      if (left.backend == o_.backend) continue;
      if (auto failure = remove_ruleset_of(left.backend)) {
        std::cerr << "fwengine: warning: the ruleset backend " << left.backend
                  << " left behind could not be removed (" << *failure << "); it still filters\n";
        still.push_back({left.backend, utc_time(std::time(nullptr)), *failure});
      } else {
        flushed.left_behind.push_back(left.backend);
      }
    }
    save_left_behind(o_.netns, still);
    const auto applied = state::load(o_.netns);
    if (applied && applied->backend != o_.backend) {
      flushed.other = applied->backend;
      return flushed;
    }
    state::forget(o_.netns);
    state::forget_source(o_.netns);
    clear_pending(o_.netns);
    std::filesystem::remove_all(good_snapshot_dir(o_.netns), ec);
    std::filesystem::remove_all(candidate_snapshot_dir(o_.netns), ec);
    std::filesystem::remove(state::run_dir(o_.netns) + "/rollback.log", ec);
    note_rollback();
    return flushed;
  }

  int flush() {
    auto be = backend();
    auto lock = held_or_new_lock();
    const Flushed flushed = flush_ruleset(*be);
    lock->remove_if_alone();
    if (!o_.quiet && !o_.json) {
      std::cout << "flushed everything fwengine owned (" << o_.backend;
      for (const auto& left : flushed.left_behind)
        std::cout << ", and the ruleset backend " << left << " left behind";
      std::cout << ")\n";
      if (!flushed.other.empty())
        std::cout << "note: fwengine last applied here with backend " << flushed.other
                  << "; its ruleset stays (fwengine --backend " << flushed.other << " flush)\n";
    }
    if (o_.json) std::cout << json{{"ok", true}}.dump() << '\n';
    return 0;
  }

  int plugins() {
    auto found = loader_.discover();
    if (o_.json) {
      json list = json::array();
      for (const auto& p : found)
        list.push_back({{"name", p.name},
                        {"kind", p.kind == PluginKind::frontend ? "frontend" : "backend"},
                        {"version", p.version},
                        {"path", p.path},
                        {"problem", p.problem}});
      std::cout << json{{"directories", loader_.directories()}, {"plugins", list}}.dump(2) << '\n';
      return 0;
    }
    for (const auto& p : found) {
      std::cout << std::left << std::setw(10) << p.name << std::setw(10)
                << (p.problem.empty() ? (p.kind == PluginKind::frontend ? "frontend" : "backend") : "BROKEN")
                << std::setw(8) << p.version << (p.problem.empty() ? p.summary : p.problem) << '\n';
      if (p.problem.empty() && p.kind == PluginKind::backend && o_.verbose) {
        auto be = loader_.backend(p.name, {});
        auto caps = be->capabilities();
        std::cout << "          stages:";
        for (auto s : caps.stages) std::cout << ' ' << ir::to_string(s);
        std::cout << "\n          actions:";
        for (auto a : caps.actions) std::cout << ' ' << ir::to_string(a);
        std::cout << '\n';
      }
    }
    if (found.empty()) std::cout << "no plugins found in " << loader_.directories().front() << '\n';
    return 0;
  }

  const Options command_line_;  // before the config joined it: a daemon reload reads a changed config anew
  Options o_;
  PluginLoader loader_;
  // What apply, render and diff built, kept for the end of the process to free (end_process); the plan goes
  // before the backend whose library holds its code.
  struct {
    std::optional<Loaded<Backend>> backend;
    std::unique_ptr<Plan> plan;
  } kept_;
  void keep_to_the_end(Loaded<Backend> be, std::unique_ptr<Plan> plan) {
    kept_.backend.emplace(std::move(be));
    kept_.plan = std::move(plan);
  }
  Diagnostics diag_;
  ir::Ruleset ruleset_;
  std::optional<RulesetSummary> released_;
  ir::Ruleset as_written_;
  // Wall time of compile's phases: the frontend's reading, core's passes, the hash (check --json).
  struct {
    double read = 0, passes = 0, hash = 0;
  } phase_ms_;
  std::size_t printed_ = 0;  // diagnostics printed so far
  std::vector<std::string> sources_;
  mutable std::future<std::string> pending_hash_;
  mutable std::string hash_;
  const std::string& hash() const {
    if (pending_hash_.valid()) hash_ = pending_hash_.get();
    return hash_;
  }
  bool backend_named_ = false;  // by --backend or the config
  int origin_netns_fd_ = -1;    // the namespace the engine started in, while it works in --netns
  std::unique_ptr<state::WriterLock> held_lock_;  // a rollback's, from before it read its policy
};

// Freeing what a command built piece by piece only to exit is work the kernel does at once: the IR
// and the backend's objects of 50,000 rules are some 600,000 frees, 11 ms of a 420 ms apply. Sanitizer
// builds free it all, as LeakSanitizer checks at exit that nothing was lost.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kTearDownAtExit = true;
#else
constexpr bool kTearDownAtExit = false;
#endif

[[noreturn]] void end_process(int code) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  std::_Exit(code);
}

// An error that ends the command: on stderr, and with --json also as JSON on stdout, so that a script
// reading stdout gets an answer whatever failed (the options too, before they were understood).
int report_error(const std::optional<Session>& session, int argc, char** argv, const std::string& message,
                 int code) {
  std::cerr << "fwengine: error: " << message << '\n';
  const bool json_wanted =
      session
          ? session->wants_json()
          : std::any_of(argv + 1, argv + argc, [](const char* a) { return std::string_view(a) == "--json"; });
  if (json_wanted) std::cout << json_text({{"ok", false}, {"error", message}, {"exit", code}}) << '\n';
  return code;
}

}  // namespace

int run(int argc, char** argv) {
  // The session (and its plugin loader) outlives the handlers: an exception thrown by a plugin has its
  // destructor in the plugin's library, which must still be loaded when the handler ends.
  std::optional<Session> session;
  use_huge_pages(false);  // until a large policy asks for them (compile)
  try {
    session.emplace(parse_options(argc, argv));
    const int code = session->run();
    if constexpr (!kTearDownAtExit) end_process(code);
    return code;
  } catch (const UsageError& e) {
    return report_error(session, argc, argv, e.msg, 2);
  } catch (const RuntimeError& e) {
    return report_error(session, argc, argv, e.msg, 1);
  } catch (const std::exception& e) {
    return report_error(session, argc, argv, e.what(), 1);
  }
}

}  // namespace fwe::cli
