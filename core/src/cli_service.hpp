// cli_service.hpp - what service mode and safe apply need besides the pipeline: snapshots of the
// last good policy, the rollback watchdog of `apply --confirm`, systemd notification and the wait for
// signals and file changes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fwengine/netlink.hpp"
#include "fwengine/plugin.hpp"

namespace fwe::cli {

// How to load a policy again: the engine's arguments, with sources copied into a snapshot directory.
struct Snapshot {
  std::string frontend, backend, node;
  std::string config;                      // the kept copy of the config (stage_snapshot makes it)
  std::optional<std::string> config_text;  // to stage: the config as read ("" when there was none)
  std::vector<std::string> frontend_options, backend_options, plugin_dirs;
  std::vector<std::string> sources;    // paths inside the snapshot directory
  std::vector<std::string> originals;  // the absolute paths they were copied from, one each
};

// A moment as status shows it: 2026-12-01T00:04:55Z.
std::string utc_time(std::time_t at);

// /run/fwengine/<netns>/good: what the last confirmed apply loaded.
std::string good_snapshot_dir(const std::string& netns);
// /run/fwengine/<netns>/candidate: what an apply --confirm loaded and waits to be confirmed.
std::string candidate_snapshot_dir(const std::string& netns);
// /run/fwengine/<netns>/backend-<name>: what a backend keeps to make its next apply incremental.
std::string backend_state_dir(const std::string& netns, const std::string& backend);

// Throws UsageError for sources that cannot be kept for a rollback: stdin ("-") and datastores.
void require_keepable(const std::vector<std::string>& sources);
// Copies the sources (files, or every regular file below a directory) into dir, replacing it whole.
// Throws as require_keepable does.
void save_snapshot(const std::string& dir, const std::vector<std::string>& sources, Snapshot meta);
// save_snapshot in two steps, for a copy that may only replace dir once the kernel took the policy:
// stage_snapshot writes it beside dir, then commit_snapshot puts it in dir's place, or discard_snapshot
// drops it.
void stage_snapshot(const std::string& dir, const std::vector<std::string>& sources, Snapshot meta);
void commit_snapshot(const std::string& dir);
void discard_snapshot(const std::string& dir);
std::optional<Snapshot> load_snapshot(const std::string& dir);
// Makes the candidate the good snapshot.
void promote_candidate(const std::string& netns);

// The pending confirmation of `apply --confirm`: a token in /run/fwengine/<netns>/pending-confirm.
struct Pending {
  std::string token;
  std::string deadline;  // for people
  pid_t watchdog = 0;
};
std::optional<Pending> load_pending(const std::string& netns);
void clear_pending(const std::string& netns);
// Puts back the pending confirmation there was before (none: clears it), for an apply --confirm that
// armed its watchdog and then failed.
void restore_pending(const std::string& netns, const std::optional<Pending>& previous);

// Starts a process in its own session (it survives the caller, its terminal and its SSH session) that
// waits `seconds`, then - unless the pending confirmation with this token is gone - runs `rollback`
// (the engine's own executable with these arguments, --rollback-of among them, and --rollback-token
// added: under the writer lock, that command checks that the confirmation is still pending, clears
// it, and records its success) and records a failure of it (RolledBack; `unconfirmed` says what was
// not confirmed, for people). Writes the pending file; returns the pid.
pid_t spawn_rollback_watchdog(const std::string& netns, unsigned seconds,
                              const std::vector<std::string>& rollback, const std::string& unconfirmed);

// What the watchdog did when an apply --confirm ran out of time, in /run/fwengine/<netns>/rolled-back:
// status says so until the next apply or flush.
struct RolledBack {
  std::string time;
  std::string unconfirmed;
  int exit_code = 0;  // of the rollback command: not 0, the kernel may hold the unconfirmed ruleset
};
std::optional<RolledBack> load_rolled_back(const std::string& netns);
void record_rolled_back(const std::string& netns, const std::string& unconfirmed, int exit_code);
void clear_rolled_back(const std::string& netns);

// Backends whose rulesets an apply with another backend could not remove (they still filter beside the
// new one), in /run/fwengine/<netns>/left-behind: status warns, and the next apply tries again.
struct LeftBehind {
  std::string backend, time, message;
};
std::vector<LeftBehind> load_left_behind(const std::string& netns);
// Replaces the record (none left: removes it).
void save_left_behind(const std::string& netns, const std::vector<LeftBehind>& left);

// Tells systemd (NOTIFY_SOCKET) about readiness, status and stopping; nothing without systemd.
void notify_systemd(const std::string& message);

// What the daemon tells monitoring: Prometheus' text format, for node_exporter's textfile collector.
struct Metrics {
  std::string netns, node;  // labels of every series: many daemons may write side by side
  std::uint64_t reloads_ok = 0, reloads_failed = 0;
  std::uint64_t reloads_deferred = 0;  // not applied: an apply --confirm was on trial
  bool last_reload_ok = false;
  std::int64_t last_apply_unix = 0;
  double apply_seconds = 0;
  bool has_store = false, store_reachable = false;
  std::string store_revision_seen, store_revision_applied;
  std::vector<RuleCounter> counters;
};
// Replaces the file atomically, so that a collector never reads half of it.
void write_metrics(const std::string& path, const Metrics& metrics);

// Blocks SIGHUP, SIGTERM and SIGINT in the calling thread and in the threads and programs it starts
// later: they then wait for a ServiceLoop instead of ending the process.
void block_service_signals();
// Whether a SIGTERM or SIGINT waits there: a stop not served yet.
bool stop_pending();

enum class Wake { reload, stop, source, tick, links };
// Blocks until SIGHUP (reload), SIGTERM/SIGINT (stop), a change under one of the watch paths (reload,
// debounced so that a burst of writes gives one reload), news from a followed live source, or an
// interface that appeared or was renamed (links, when followed).
class ServiceLoop {
 public:
  // Blocks SIGHUP, SIGTERM and SIGINT in the calling thread (and in every thread it starts later). Wakes
  // (reload) on a change in a watch path that is a directory or anywhere below it. For one that is a
  // file, and for watch_file, only when that file changes: its directory is watched, not what is below
  // it, and only events naming the file (or a symlink within the directory it is reached through, as in
  // a ConfigMap) count unless a directory watch path is the same directory.
  explicit ServiceLoop(const std::vector<std::string>& watch_paths, const std::string& watch_file = {});
  // The directory a watch path is followed by: the path itself when it is one, else the one it is in.
  static std::string watch_dir(const std::string& path);
  // Wakes with Wake::source when this descriptor is readable.
  void follow(int source_fd) { source_fd_ = source_fd; }
  // Wakes with Wake::tick when nothing else happened for this long.
  void tick_every(std::chrono::milliseconds period) { tick_ = period; }
  // Wakes with Wake::links when an interface appears, goes (deleted, or moved to another namespace), is
  // renamed, changes its address or the device it is stacked on, is put under a master (a bridge, a
  // bond) or taken from one, or changes the bridge or bridge port options that decide what a bridge
  // hands up on a port, in this network namespace: for backends that bind to interfaces when they apply.
  // The interfaces there now are the baseline.
  void follow_links();
  // Writes the lines of the backend's log rules to stderr as they come (with their syslog level where
  // stderr is the journal), without waking; replaces an earlier log, whose waiting lines go first.
  void follow_log(std::unique_ptr<LogWatch> log);
  // The names of the interfaces that appeared, went ("NAME (gone)"), were renamed, changed master or
  // changed the other things above since the last Wake::links.
  const std::vector<std::string>& new_links() const { return new_links_; }
  ~ServiceLoop();
  ServiceLoop(const ServiceLoop&) = delete;
  ServiceLoop& operator=(const ServiceLoop&) = delete;
  Wake wait();

 private:
  // Adds a watch on each watched directory and every directory below it. One that is missing (not made
  // yet, deleted, renamed away) is awaited in the nearest directory above it that is there. Only the
  // first time is a directory that can be neither watched nor awaited an error.
  void watch_directories(bool first);
  // A watch on dir and the directories below it; false (errno set) if dir cannot be watched.
  bool watch_tree(const std::string& dir);
  // A watch on the nearest directory above dir that is there, for the name on the way down to dir (and
  // where that name is a link to something missing, on the way to what it names).
  bool await_directory(const std::filesystem::path& dir, int links_followed = 0);
  std::vector<std::string> watched_dirs_;
  std::set<int> dir_wds_;  // the watches of watched_dirs_ and the directories below them
  // A watch on the directory of each link on the way to dir, for the link's name: a link pointed
  // elsewhere (`ln -sfn`, a `current` link of releases) is a directory replaced.
  void watch_links_on_the_way(const std::filesystem::path& dir, int links_followed = 0);
  // Watches of directories that hold a name on the way to a watched one (missing, or a link): the names.
  std::map<int, std::set<std::string>> awaited_;
  std::set<int> unwatched_;  // watches removed here, whose IN_IGNORED is no news
  void unwatch(int wd);
  // Files followed by name: a watch of the directory, for the events that name the file.
  struct WatchedFile {
    std::string dir, name;
    int wd = -1;  // -1 while the directory is missing (awaited)
  };
  std::vector<WatchedFile> watched_files_;
  // Where those that are links lead (their watches made anew with the others'), for the target's name.
  std::vector<WatchedFile> link_targets_;
  // Reads the events waiting; whether one is news: any under a watched directory, of a watched file's
  // directory only the file's own, of a directory on the way to a watched one only the awaited name's.
  bool drain_inotify();
  int signal_fd_ = -1;
  int inotify_fd_ = -1;
  int source_fd_ = -1;
  int link_fd_ = -1;
  std::unique_ptr<LogWatch> log_;
  void write_log_lines();
  // By ifindex, as last seen: names, masters, kinds, and the bridge and bridge port options that decide
  // what a bridge hands up on a port (STP, group_fwd_mask, VLAN protocol, nf_call_iptables).
  std::map<int, netlink::Link> links_;
  std::vector<std::string> new_links_;
  std::optional<std::chrono::milliseconds> tick_;
  // Reads the link messages waiting; records new, gone, renamed and re-mastered interfaces in new_links_.
  void read_link_news();
  // Compares the interfaces there now with links_ (report: record the differences in new_links_).
  void take_links(bool report);
};

}  // namespace fwe::cli
