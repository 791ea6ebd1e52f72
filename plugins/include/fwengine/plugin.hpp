// fwengine/plugin.hpp - the plugin SDK: what a frontend or backend implements, and how it registers.
//
// A plugin is a shared library that exports two Boost.DLL aliases: a PluginDescriptor (checked before
// any C++ type crosses the boundary) and a factory. Use FWE_REGISTER_FRONTEND / FWE_REGISTER_BACKEND.
// Bump FWE_PLUGIN_ABI_VERSION whenever this header or the IR headers change: plugins are built with
// the engine, from the same tree, and are not a stable C++ ABI.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/dll/alias.hpp>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"

#define FWE_PLUGIN_ABI_VERSION 13u

#define FWE_API __attribute__((visibility("default")))

namespace fwe {

enum class PluginKind : std::uint32_t { frontend = 1, backend = 2 };

extern "C" struct PluginDescriptor {
  std::uint32_t abi_version;
  PluginKind kind;
  const char* name;
  const char* version;
  const char* summary;
};

// Given to a plugin when it is created.
struct PluginContext {
  std::string netns;  // the namespace the engine has entered ("" = the one it started in)
  // The namespace the engine started in, while it works inside another (-1 otherwise): sockets to the
  // host's own services, such as a datastore on loopback, are made there.
  int origin_netns_fd = -1;
  // This host's node name (--node), e.g. for the HostEndpoints `migrate --to calico` writes.
  std::string node{};
  // Backends only: --backend-option KEY=VALUE and fwengine.conf's backend-options for this backend,
  // checked by the backend when it renders (reject_unknown_backend_options).
  std::map<std::string, std::string> backend_options{};
};

// Reports each backend option whose key is not one of known: an error where it was given (the command
// line, or its line in fwengine.conf), with the keys the backend knows.
FWE_API void reject_unknown_backend_options(const PluginContext& context, std::string_view backend,
                                            const std::vector<std::string_view>& known, Diagnostics& diag);
// Where the backend's option key got its value, for the backend's message about that value.
FWE_API SourceLoc backend_option_value_loc(const Diagnostics& diag, std::string_view backend,
                                           std::string_view key);
// The index in values of a backend option that takes one of them, values[0] when it is not given. Any
// other value is an error where it was given, naming the values, with hint (what each one does); the
// result is then 0.
FWE_API std::size_t backend_option_choice(const PluginContext& context, std::string_view backend,
                                          std::string_view key, const std::vector<std::string_view>& values,
                                          std::string_view hint, Diagnostics& diag);
// The name fwengine.conf's reader records a backend option's place under (Diagnostics::set_option_origin):
// a frontend may know the same key.
FWE_API std::string backend_option_origin(std::string_view backend, std::string_view key);

// ---- frontends ----------------------------------------------------------------------------------
struct FrontendRequest {
  std::vector<std::string> sources;            // files, directories, "-" (stdin) or URLs; never empty
  std::string node;                            // this host's node name
  std::string netns;                           // namespace the ruleset is for ("" = current)
  std::map<std::string, std::string> options;  // --option key=value, frontend-specific
};

// What a live source (a datastore) reports to the daemon that watches it.
struct SourceStatus {
  bool reachable = false;
  bool changed = false;  // the policy in the source changed since the last consume()
  std::string revision;  // the newest revision of the source seen
  std::string message;   // why the source is unreachable
};

// A source that changes by itself. The daemon polls fd() and calls consume() when it is readable.
class FWE_API SourceWatch {
 public:
  virtual ~SourceWatch();
  virtual int fd() const = 0;
  virtual SourceStatus consume() = 0;
};

class FWE_API Frontend {
 public:
  virtual ~Frontend();
  // Where policy lives when the user names no source (e.g. /etc/fwengine/calico/).
  virtual std::vector<std::string> default_sources() const = 0;
  // Reads the sources into one ruleset. Errors go to diag (all of them, with locations); the caller
  // checks diag.has_errors() and never applies a ruleset that had one.
  virtual ir::Ruleset load(const FrontendRequest& request, Diagnostics& diag) = 0;
  // Starts watching sources that change by themselves; load() then reads what the watch has seen.
  // Default (files): nothing to watch here, the daemon watches files itself.
  virtual std::unique_ptr<SourceWatch> watch(const FrontendRequest& request);
  // Throws UsageError for a source that could never be read (a malformed store address), without
  // reading any: a daemon checks a changed config with it before it starts again. Default: nothing.
  virtual void check_sources(const FrontendRequest& request) const;
  // Writes a ruleset in this frontend's own format (`migrate --to NAME`), one or more files in out_dir;
  // returns false (with diagnostics) for what the format cannot express. Default: cannot write.
  virtual bool can_write() const { return false; }
  virtual bool write(const ir::Ruleset& ruleset, const std::string& out_dir, Diagnostics& diag);
  // Whether a directory source reads its file of this name as policy: what `migrate -o DIR` warns of
  // finding there besides what it writes. Default: *.yaml and *.yml.
  virtual bool reads_file_named(std::string_view name) const;
};

// ---- backends -----------------------------------------------------------------------------------
struct Capabilities {
  std::vector<ir::Stage> stages;
  std::vector<ir::MatchKind> matches;
  std::vector<ir::ActionKind> actions;
  bool ipv6 = true;
  // The backend resolves interfaces when it applies (it attaches to each one, or looks names up then):
  // one created later is covered only by the next apply, so `daemon` applies again when one appears.
  bool binds_interfaces = false;
  // Log prefixes longer than this are cut to it (0: kept whole); check warns where one is.
  std::size_t log_prefix_max = 0;
  bool supports(ir::Stage s) const;
  bool supports(ir::MatchKind m) const;
  bool supports(ir::ActionKind a) const;
};

// What a backend would load: its own data, plus text for people (`render`).
class FWE_API Plan {
 public:
  virtual ~Plan();
  // ir_hash: the ruleset's canonical hash, which a backend may stamp into what it loads.
  virtual std::string text(std::string_view ir_hash) const = 0;
  // What KernelState::text lists of the kernel once this plan is in it, line for line: what `diff`
  // compares. Lines compare up to a tab; what follows it is shown, not compared (what only the plan
  // knows, such as a rule's text). By default text(), for backends whose read-back lists what they load.
  virtual std::string listing(std::string_view ir_hash) const;
};

struct ApplyOptions {
  bool full = false;  // replace everything even where an incremental change would do
  std::string ir_hash{};
  // A directory of this namespace's state (empty: none) where the backend may keep what it needs to
  // make the next apply incremental. It survives applies; flush removes it.
  std::string state_dir{};
  // The plan is the one in effect (this process applied it last) and is applied again only because
  // interfaces changed (binds_interfaces): the backend may keep what it has and bind the interfaces
  // there are now, keeping counters and rate-limit state. It must fall back to a plain apply when it
  // cannot tell that the plan is in effect.
  bool rebind = false;
};

// What an apply says about itself.
struct ApplyReport {
  // The wall time of the one kernel transaction that made the change (sent, and every answer read),
  // in ms, where the backend makes it in one (nft); user-space work before and after is not in it.
  std::optional<double> transaction_ms{};
};

struct RuleCounter {
  std::string chain;
  std::int32_t rule = -1;
  ir::Origin origin;  // resolved against the applied ruleset by the backend when it can
  std::string where;  // "file:line:col" as stamped into the kernel
  std::uint64_t packets = 0, bytes = 0;
};

// What is in the kernel now, as far as fwengine owns it.
struct KernelState {
  bool present = false;
  std::string ir_hash;  // the hash stamped at apply time
  std::string text;     // the backend's own listing, in the form of Plan::listing
  std::vector<RuleCounter> counters;
  std::vector<std::string> drift;  // differences between the kernel and what was applied
};

// A line a backend's log rules wrote, where they do not write to the kernel log, in the kernel log's
// form ("PREFIX IN=... OUT=... SRC=..."), with the rule's syslog level.
struct LogLine {
  std::uint8_t level = 4;
  std::string text;
};

// Those lines as they come. The daemon polls fd() and calls consume() when it is readable.
class FWE_API LogWatch {
 public:
  virtual ~LogWatch();
  virtual int fd() const = 0;
  virtual std::vector<LogLine> consume() = 0;  // the lines waiting, oldest first
};

class FWE_API Backend {
 public:
  virtual ~Backend();
  virtual Capabilities capabilities() const = 0;
  // Translates a final ruleset, as core's passes leave it (normalised: each set's CIDRs sorted, IPv4
  // first, without overlaps; verified). Refuses (diagnostics with the rule's origin) what it cannot
  // express; the ruleset's files name the origins' files.
  virtual std::unique_ptr<Plan> render(const ir::Ruleset& ruleset, Diagnostics& diag) = 0;
  // Loads a plan atomically: all of it or, on failure, none (throws RuntimeError, kernel unchanged).
  virtual ApplyReport apply(const Plan& plan, const ApplyOptions& options) = 0;
  virtual KernelState read_back() = 0;
  // The hit counters alone, for monitoring that reads them often: a backend whose full drift check is
  // costly (listing every set element) skips it here.
  virtual std::vector<RuleCounter> counters() { return read_back().counters; }
  // Removes everything this backend owns, and nothing else.
  virtual void flush() = 0;
  // Where the lines of log rules come from when they do not go to the kernel log: after an apply, or
  // nullptr (they go to the kernel log, or nothing is applied).
  virtual std::unique_ptr<LogWatch> watch_log() { return nullptr; }
};

using FrontendFactory = std::unique_ptr<Frontend>(const PluginContext&);
using BackendFactory = std::unique_ptr<Backend>(const PluginContext&);

}  // namespace fwe

// Registration: one of these per plugin library, at namespace scope.
#define FWE_REGISTER_PLUGIN_(kind_, name_, version_, summary_, Class, Base, alias_)                     \
  namespace fwe_plugin_registration {                                                                   \
  extern "C" FWE_API const ::fwe::PluginDescriptor fwe_descriptor_object{FWE_PLUGIN_ABI_VERSION, kind_, \
                                                                         name_, version_, summary_};    \
  std::unique_ptr<::fwe::Base> fwe_create(const ::fwe::PluginContext& context) {                        \
    return std::make_unique<Class>(context);                                                            \
  }                                                                                                     \
  }                                                                                                     \
  BOOST_DLL_ALIAS(fwe_plugin_registration::fwe_descriptor_object, fwe_plugin_descriptor)                \
  BOOST_DLL_ALIAS(fwe_plugin_registration::fwe_create, alias_)

#define FWE_REGISTER_FRONTEND(name, version, summary, Class)                                 \
  FWE_REGISTER_PLUGIN_(::fwe::PluginKind::frontend, name, version, summary, Class, Frontend, \
                       fwe_create_frontend)
#define FWE_REGISTER_BACKEND(name, version, summary, Class) \
  FWE_REGISTER_PLUGIN_(::fwe::PluginKind::backend, name, version, summary, Class, Backend, fwe_create_backend)
