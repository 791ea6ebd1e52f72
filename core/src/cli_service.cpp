// cli_service.cpp - snapshots, the rollback watchdog, systemd notification and the service loop.
#include "cli_service.hpp"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string_view>
#include <thread>
#include <vector>

#include "fwengine/diagnostics.hpp"
#include "fwengine/ir.hpp"
#include "fwengine/loader.hpp"
#include "fwengine/netlink.hpp"
#include "fwengine/state.hpp"

namespace fwe::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr auto kDebounce = std::chrono::milliseconds(300);
constexpr auto kDebounceBound = std::chrono::seconds(3);  // files that never rest are read anyway
// Interfaces: a short quiet time (an interface is uncovered until the apply), and a bound, so that links
// that keep coming (a node starting many pods) are still covered as they come.
constexpr auto kLinkQuiet = std::chrono::milliseconds(50);
constexpr auto kLinkBound = std::chrono::milliseconds(500);

std::string pending_path(const std::string& netns) {
  return state::run_dir(netns) + "/pending-confirm";
}
std::string rolled_back_path(const std::string& netns) {
  return state::run_dir(netns) + "/rolled-back";
}
std::string left_behind_path(const std::string& netns) {
  return state::run_dir(netns) + "/left-behind";
}

// Whole or not at all: a reader (the watchdog, status) never finds half a file.
void write_file(const std::string& path, const std::string& text) {
  state::write_file_atomically(path, text);
}

void replace_dir(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::remove_all(to, ec);
  fs::rename(from, to, ec);
  if (ec) throw RuntimeError("cannot move " + from.string() + " to " + to.string() + ": " + ec.message());
}

// A JSON file of ours: nothing when it is missing or not JSON (a crash mid-write, an older layout).
json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return json();
  json j = json::parse(in, nullptr, false);
  return j.is_discarded() ? json() : j;
}

// Copies every regular file below `from` to the same place below `to`; stops at the first failure,
// rather than keep part of the policy. Symlinks are followed, as the frontends follow them: a directory
// given by a link, a file in it that is one. What no frontend reads is left out: a dangling link (an
// editor's lock file), a FIFO, a socket.
void copy_regular_files(const fs::path& from, const fs::path& to, std::error_code& ec) {
  fs::create_directories(to, ec);
  if (ec) return;
  fs::recursive_directory_iterator it(from, fs::directory_options::follow_directory_symlink, ec);
  // (increment clears the code it is given: the body's failures have one of their own.)
  for (const fs::recursive_directory_iterator end; !ec && it != end; it.increment(ec)) {
    const fs::path target = to / it->path().lexically_relative(from);  // the link's place, not its target's
    std::error_code kind_unknown;  // a dangling link: no kind, nothing to copy
    if (fs::is_directory(it->path(), kind_unknown))
      fs::create_directories(target, ec);
    else if (fs::is_regular_file(it->path(), kind_unknown))
      fs::copy_file(it->path(), target, fs::copy_options::overwrite_existing, ec);
    if (ec) return;
  }
}

}  // namespace

std::string utc_time(std::time_t at) {
  char text[32] = {};
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&at));
  return text;
}

std::string good_snapshot_dir(const std::string& netns) {
  return state::run_dir(netns) + "/good";
}
std::string candidate_snapshot_dir(const std::string& netns) {
  return state::run_dir(netns) + "/candidate";
}
std::string backend_state_dir(const std::string& netns, const std::string& backend) {
  return state::run_dir(netns) + "/backend-" + backend;
}

void require_keepable(const std::vector<std::string>& sources) {
  for (const auto& source : sources)
    if (source == "-" || source.find("://") != std::string::npos)
      throw UsageError(
          "a policy read from stdin or a datastore cannot be kept for rollback: give files with -f");
}

void save_snapshot(const std::string& dir, const std::vector<std::string>& sources, Snapshot meta) {
  stage_snapshot(dir, sources, std::move(meta));
  commit_snapshot(dir);
}

void commit_snapshot(const std::string& dir) {
  replace_dir(dir + ".tmp", dir);
}

void discard_snapshot(const std::string& dir) {
  std::error_code ec;
  fs::remove_all(dir + ".tmp", ec);
}

namespace {
// name with each byte that starts no valid UTF-8 sequence written as %XX, so that snapshot.json can name
// the copy (JSON holds UTF-8 only); alone in its directory, the copy meets no other name.
std::string name_for_json(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size();) {
    if (const std::size_t length = ir::utf8_length(name.substr(i))) {
      out.append(name.substr(i, length));
      i += length;
      continue;
    }
    char escaped[4];
    std::snprintf(escaped, sizeof escaped, "%%%02X", static_cast<unsigned char>(name[i++]));
    out += escaped;
  }
  return out;
}
}  // namespace

void stage_snapshot(const std::string& dir, const std::vector<std::string>& sources, Snapshot meta) {
  require_keepable(sources);
  const fs::path tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) throw RuntimeError("cannot create " + tmp.string() + ": " + ec.message());
  meta.sources.clear();
  // A snapshot copied from another (the candidate, confirmed) keeps the first one's originals.
  if (meta.originals.size() != sources.size()) {
    meta.originals.clear();
    for (const auto& source : sources) {
      std::error_code ec;
      const fs::path absolute = fs::absolute(source, ec);
      // For the record (status), as state.json has them.
      meta.originals.push_back(ir::with_valid_utf8(ec ? source : absolute.lexically_normal().string()));
    }
  }
  for (std::size_t i = 0; i < sources.size(); ++i) {
    const fs::path source = sources[i];
    // The copy has the file's name (a frontend may read meaning into it) as far as JSON can hold it.
    const std::string name = name_for_json(source.filename().string());
    const fs::path target = tmp / std::to_string(i) / name;
    fs::create_directories(target.parent_path(), ec);
    if (fs::is_directory(source, ec)) {
      copy_regular_files(source, target, ec);
    } else {
      fs::copy_file(source, target, fs::copy_options::overwrite_existing, ec);
    }
    if (ec) throw RuntimeError("cannot keep a copy of " + source.string() + ": " + ec.message());
    meta.sources.push_back((fs::path(dir) / std::to_string(i) / name).string());
  }
  // The config too, as it was read: one edited (or broken) while a trial runs does not change what a
  // rollback applies.
  const fs::path config_copy = tmp / "fwengine.conf";
  if (meta.config_text)
    write_file(config_copy.string(), *meta.config_text);
  else if (!meta.config.empty())
    fs::copy_file(meta.config, config_copy, fs::copy_options::overwrite_existing, ec);
  if (ec) throw RuntimeError("cannot keep a copy of " + meta.config + ": " + ec.message());
  if (meta.config_text || !meta.config.empty()) meta.config = (fs::path(dir) / "fwengine.conf").string();
  json j = {{"frontend", meta.frontend},
            {"backend", meta.backend},
            {"node", meta.node},
            {"config", meta.config},
            {"sources", meta.sources},
            {"originals", meta.originals},
            {"frontend-options", meta.frontend_options},
            {"backend-options", meta.backend_options},
            {"plugin-dirs", meta.plugin_dirs}};
  std::string text;
  try {
    text = j.dump(2);
  } catch (const json::type_error&) {  // these must come back exactly
    throw RuntimeError(
        "cannot keep the settings in effect for rollback: one of them (an option, the node name, a plugin "
        "directory, the namespace's name) is not UTF-8 text");
  }
  write_file((tmp / "snapshot.json").string(), text + "\n");
}

std::optional<Snapshot> load_snapshot(const std::string& dir) {
  const json j = read_json(dir + "/snapshot.json");
  if (!j.is_object()) return std::nullopt;
  Snapshot s;
  s.frontend = j.value("frontend", "");
  s.backend = j.value("backend", "");
  s.node = j.value("node", "");
  s.config = j.value("config", "");
  s.sources = j.value("sources", std::vector<std::string>{});
  s.originals = j.value("originals", std::vector<std::string>{});
  if (s.originals.size() != s.sources.size()) s.originals = s.sources;  // an older snapshot
  s.frontend_options = j.value("frontend-options", std::vector<std::string>{});
  s.backend_options = j.value("backend-options", std::vector<std::string>{});
  s.plugin_dirs = j.value("plugin-dirs", std::vector<std::string>{});
  return s;
}

void promote_candidate(const std::string& netns) {
  const std::string candidate = candidate_snapshot_dir(netns);
  auto meta = load_snapshot(candidate);
  if (!meta) return;
  // The candidate's paths point into its own directory; copy it as the good snapshot.
  std::vector<std::string> sources = meta->sources;
  save_snapshot(good_snapshot_dir(netns), sources, *meta);
  std::error_code ec;
  fs::remove_all(candidate, ec);
}

std::optional<Pending> load_pending(const std::string& netns) {
  const json j = read_json(pending_path(netns));
  if (!j.is_object()) return std::nullopt;
  return Pending{j.value("token", ""), j.value("deadline", ""), j.value("watchdog", 0)};
}

void restore_pending(const std::string& netns, const std::optional<Pending>& previous) {
  if (!previous) return clear_pending(netns);
  const json j = {
      {"token", previous->token}, {"deadline", previous->deadline}, {"watchdog", previous->watchdog}};
  write_file(pending_path(netns), j.dump() + "\n");
}

void clear_pending(const std::string& netns) {
  std::error_code ec;
  fs::remove(pending_path(netns), ec);
}

namespace {
// Closes every descriptor above stderr: with close_range, or one by one where the kernel (before 5.9)
// or a seccomp filter refuses it.
void close_inherited() {
  if (close_range(3, ~0U, 0) == 0) return;
  std::vector<int> open_fds;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd", ec))
    if (const int fd = std::atoi(entry.path().filename().c_str()); fd > 2) open_fds.push_back(fd);
  for (const int fd : open_fds) close(fd);  // the directory's own descriptor is gone by then: EBADF
}
}  // namespace

pid_t spawn_rollback_watchdog(const std::string& netns, unsigned seconds,
                              const std::vector<std::string>& rollback, const std::string& unconfirmed) {
  std::random_device random;
  const std::string token = std::to_string(random()) + std::to_string(random());
  const std::string deadline = utc_time(std::time(nullptr) + seconds);
  const std::string log = state::run_dir(netns) + "/rollback.log";
  const std::string self = (fs::path(executable_dir()) / "fwengine").string();

  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) throw RuntimeError(std::string("pipe: ") + std::strerror(errno));
  pid_t child = fork();
  if (child < 0) throw RuntimeError(std::string("fork: ") + std::strerror(errno));
  if (child == 0) {
    // Its own session and a second fork: no terminal, shell or SSH session can take it down.
    setsid();
    pid_t watchdog = fork();
    if (watchdog != 0) _exit(watchdog < 0 ? 1 : 0);
    close(ready[0]);
    pid_t me = getpid();
    ssize_t unused = write(ready[1], &me, sizeof me);
    (void)unused;
    // Inherited descriptors include the caller's writer lock: a watchdog holding it would block
    // `fwengine confirm` until the deadline (and its own rollback, which waits for that lock).
    close_inherited();
    int devnull = open("/dev/null", O_RDONLY);
    int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(devnull, 0);
    dup2(out, 1);
    dup2(out, 2);
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    // A first look, without the lock; the rollback looks again under it (a confirm or a newer apply
    // may take the lock first) and clears the pending confirmation itself.
    auto pending = load_pending(netns);
    if (!pending || pending->token != token) _exit(0);  // confirmed, or superseded by a newer apply
    std::vector<char*> argv;
    std::vector<std::string> args = rollback;
    args.insert(args.begin(), self);
    args.insert(args.end(), {"--rollback-token", token});
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    signal(SIGCHLD, SIG_DFL);  // an ignored SIGCHLD (inherited) would leave nothing to wait for
    pid_t runner = fork();
    if (runner == 0) {
      execv(self.c_str(), argv.data());
      _exit(127);
    }
    int status = 0;
    pid_t waited = -1;
    while (runner > 0 && (waited = waitpid(runner, &status, 0)) < 0 && errno == EINTR) {
    }
    // The rollback records its success itself, under the writer lock; a failure is ours to record.
    int code = -1;  // unknown: it could not be started or waited for
    if (waited == runner && WIFEXITED(status)) code = WEXITSTATUS(status);
    if (waited == runner && WIFSIGNALED(status)) code = 128 + WTERMSIG(status);
    if (code == 0) _exit(0);
    try {
      // A rollback that failed before it could clear the confirmation (its lock timed out): nothing
      // waits for a confirm any more.
      if (auto still = load_pending(netns); still && still->token == token) clear_pending(netns);
      record_rolled_back(netns, unconfirmed, code);
    } catch (const std::exception&) {
      _exit(1);  // nobody reads this process's status; the log has the rollback's own output
    }
    _exit(0);
  }
  close(ready[1]);
  pid_t watchdog = 0;
  ssize_t n = read(ready[0], &watchdog, sizeof watchdog);
  close(ready[0]);
  int status = 0;
  waitpid(child, &status, 0);
  if (n != sizeof watchdog) throw RuntimeError("could not start the rollback watchdog");
  json j = {{"token", token}, {"deadline", deadline}, {"watchdog", watchdog}};
  write_file(pending_path(netns), j.dump() + "\n");
  return watchdog;
}

std::optional<RolledBack> load_rolled_back(const std::string& netns) {
  const json j = read_json(rolled_back_path(netns));
  if (!j.is_object()) return std::nullopt;
  return RolledBack{j.value("time", ""), j.value("unconfirmed", ""), j.value("exit", 0)};
}

void record_rolled_back(const std::string& netns, const std::string& unconfirmed, int exit_code) {
  // A rollback that flushed removed the namespace's directory with the rest.
  fs::create_directories(state::run_dir(netns));
  write_file(
      rolled_back_path(netns),
      json{{"time", utc_time(std::time(nullptr))}, {"unconfirmed", unconfirmed}, {"exit", exit_code}}.dump(
          -1, ' ', false, json::error_handler_t::replace) +
          "\n");
}

void clear_rolled_back(const std::string& netns) {
  std::error_code ec;
  fs::remove(rolled_back_path(netns), ec);
}

std::vector<LeftBehind> load_left_behind(const std::string& netns) {
  std::vector<LeftBehind> out;
  const json j = read_json(left_behind_path(netns));
  if (!j.is_array()) return out;
  for (const auto& entry : j)
    if (entry.is_object() && !entry.value("backend", "").empty())
      out.push_back({entry.value("backend", ""), entry.value("time", ""), entry.value("message", "")});
  return out;
}

void save_left_behind(const std::string& netns, const std::vector<LeftBehind>& left) {
  std::error_code ec;
  if (left.empty()) {
    fs::remove(left_behind_path(netns), ec);
    return;
  }
  json j = json::array();
  for (const auto& l : left) j.push_back({{"backend", l.backend}, {"time", l.time}, {"message", l.message}});
  write_file(left_behind_path(netns), j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

void notify_systemd(const std::string& message) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::size_t length = std::strlen(path);
  if (length >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, length);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract socket
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
         static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length));
  close(fd);
}

namespace {
std::string label_value(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    out += c == '\n' ? std::string("\\n") : std::string(1, c);
  }
  return out;
}
}  // namespace

void write_metrics(const std::string& path, const Metrics& m) {
  const std::string common = "netns=\"" + label_value(m.netns) + "\",node=\"" + label_value(m.node) + "\"";
  std::ostringstream out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  };
  metric("fwengine_reloads_total", "counter", "Policy loads by the daemon, by result.");
  out << "fwengine_reloads_total{" << common << ",result=\"ok\"} " << m.reloads_ok << '\n'
      << "fwengine_reloads_total{" << common << ",result=\"failed\"} " << m.reloads_failed << '\n'
      << "fwengine_reloads_total{" << common << ",result=\"deferred\"} " << m.reloads_deferred << '\n';
  metric("fwengine_last_reload_success", "gauge",
         "1 if the last reload applied, 0 if the kernel kept the last good ruleset.");
  out << "fwengine_last_reload_success{" << common << "} " << (m.last_reload_ok ? 1 : 0) << '\n';
  metric("fwengine_last_apply_timestamp_seconds", "gauge",
         "When the ruleset in the kernel was applied (Unix time).");
  out << "fwengine_last_apply_timestamp_seconds{" << common << "} " << m.last_apply_unix << '\n';
  metric("fwengine_apply_duration_seconds", "gauge", "How long the last apply took (read, compile, kernel).");
  out << "fwengine_apply_duration_seconds{" << common << "} " << m.apply_seconds << '\n';
  if (m.has_store) {
    metric("fwengine_store_reachable", "gauge", "1 if the policy store answers.");
    out << "fwengine_store_reachable{" << common << "} " << (m.store_reachable ? 1 : 0) << '\n';
    metric("fwengine_store_revision_seen", "gauge", "The newest store revision the daemon has seen.");
    out << "fwengine_store_revision_seen{" << common << "} "
        << (m.store_revision_seen.empty() ? "0" : m.store_revision_seen) << '\n';
    metric("fwengine_store_revision_applied", "gauge",
           "The store revision the ruleset in the kernel was read at.");
    out << "fwengine_store_revision_applied{" << common << "} "
        << (m.store_revision_applied.empty() ? "0" : m.store_revision_applied) << '\n';
  }
  metric("fwengine_rule_packets_total", "counter",
         "Packets that matched a rule, by chain, rule and policy source.");
  for (const auto& c : m.counters)
    out << "fwengine_rule_packets_total{" << common << ",chain=\"" << label_value(c.chain) << "\",rule=\""
        << c.rule << "\",origin=\"" << label_value(c.where) << "\"} " << c.packets << '\n';
  metric("fwengine_rule_bytes_total", "counter",
         "Bytes that matched a rule, by chain, rule and policy source.");
  for (const auto& c : m.counters)
    out << "fwengine_rule_bytes_total{" << common << ",chain=\"" << label_value(c.chain) << "\",rule=\""
        << c.rule << "\",origin=\"" << label_value(c.where) << "\"} " << c.bytes << '\n';
  // Readable by a collector that runs as another user, whatever umask the service has (0077 packaged).
  state::write_file_atomically(path, out.str(), 0644);
}

namespace {
constexpr auto kWatchEvents =
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF;

// The entries of dir that dir/name is reached through: the name, and where it is a symlink within dir,
// each link's first component on the way. A Kubernetes ConfigMap mounts fwengine.conf ->
// ..data/fwengine.conf and ..data -> ..2026_12_01_...; an update renames a new ..data over the old one,
// an event that names ..data, not the file.
std::set<std::string> names_on_the_way(const fs::path& dir, const std::string& name) {
  std::set<std::string> names{name};
  fs::path at = dir / name;
  for (int hops = 0; hops < 8; ++hops) {  // a loop of links ends here too
    std::error_code ec;
    const fs::path target = fs::read_symlink(at, ec);
    if (ec || target.empty() || target.is_absolute()) break;
    const std::string first = target.begin()->string();
    if (first == "." || first == ".." || !names.insert(first).second) break;
    at = dir / first;
  }
  return names;
}

// Where the path `link`/`rest` leads through the link: read from where the link really is, which `..`
// in its target depends on. nullopt if either cannot be read.
std::optional<fs::path> through_link(const fs::path& link, const fs::path& rest) {
  std::error_code parent_error, link_error;
  fs::path named =
      fs::weakly_canonical(link.parent_path(), parent_error) / fs::read_symlink(link, link_error);
  if (parent_error || link_error) return std::nullopt;
  if (!rest.empty() && rest != ".") named /= rest;
  return named;
}

sigset_t service_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  return signals;
}
}  // namespace

void block_service_signals() {
  const sigset_t signals = service_signals();
  sigprocmask(SIG_BLOCK, &signals, nullptr);
}

bool stop_pending() {
  sigset_t pending;
  return sigpending(&pending) == 0 &&
         (sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1);
}

std::string ServiceLoop::watch_dir(const std::string& path) {
  std::error_code ec;
  // Editors replace files by renaming: watch the directory a file is in, not the file.
  std::string dir = fs::is_directory(path, ec) ? path : fs::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

ServiceLoop::ServiceLoop(const std::vector<std::string>& watch_paths, const std::string& watch_file) {
  block_service_signals();
  const sigset_t signals = service_signals();
  signal_fd_ = signalfd(-1, &signals, SFD_CLOEXEC);
  if (signal_fd_ < 0) throw RuntimeError(std::string("signalfd: ") + std::strerror(errno));
  if (watch_paths.empty() && watch_file.empty()) return;
  inotify_fd_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify_fd_ < 0) throw RuntimeError(std::string("inotify: ") + std::strerror(errno));
  // A directory is followed with everything below it; a file (one missing too, unless its path ends
  // with '/') by the events in its directory that name it, so that a policy in /etc is not a watch of
  // every directory there.
  auto watch_file_by_name = [&](const std::string& path) {
    std::error_code ec;
    const fs::path file = fs::absolute(path, ec).lexically_normal();
    watched_files_.push_back({file.parent_path().string(), file.filename().string()});
  };
  for (const auto& p : watch_paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec) || fs::path(p).filename().empty())
      watched_dirs_.push_back(watch_dir(p));
    else
      watch_file_by_name(p);
  }
  if (!watch_file.empty()) watch_file_by_name(watch_file);
  watch_directories(true);
}

void ServiceLoop::watch_directories(bool first) {
  // Every watch is looked at anew: a tree renamed away took its subdirectories' watches with it, and a
  // directory awaited before may be there now.
  const auto dirs_before = std::exchange(dir_wds_, {});
  const auto awaited_before = std::exchange(awaited_, {});
  std::set<int> files_before;
  for (const auto& file : watched_files_) files_before.insert(file.wd);
  for (const auto& target : link_targets_) files_before.insert(target.wd);
  link_targets_.clear();
  // A source missing at start, taken for a file, that is a directory now is followed as one.
  std::erase_if(watched_files_, [&](const WatchedFile& file) {
    std::error_code ec;
    const fs::path path = fs::path(file.dir) / file.name;
    if (!fs::is_directory(path, ec)) return false;
    watched_dirs_.push_back(path.string());
    return true;
  });
  // A watched file's directory again too, should it have been replaced (its watch then went with it).
  for (auto& file : watched_files_) {
    watch_links_on_the_way(file.dir);
    // A file that is a link to one elsewhere is edited there: that directory is watched for its name too.
    std::error_code ec;
    const fs::path named = fs::path(file.dir) / file.name;
    if (const fs::path target = fs::canonical(named, ec); !ec && target != named)
      if (const int wd =
              inotify_add_watch(inotify_fd_, target.parent_path().c_str(), kWatchEvents | IN_ONLYDIR);
          wd >= 0)
        link_targets_.push_back({target.parent_path().string(), target.filename().string(), wd});
    file.wd = inotify_add_watch(inotify_fd_, file.dir.c_str(), kWatchEvents | IN_ONLYDIR);
    if (file.wd >= 0) continue;
    const int error = errno;
    const bool missing = error == ENOENT || error == ENOTDIR;
    if (!(missing && await_directory(file.dir)) && first)
      throw RuntimeError("cannot watch " + file.dir + ": " + std::strerror(error));
  }
  for (const auto& dir : watched_dirs_) {
    watch_links_on_the_way(dir);
    if (watch_tree(dir)) continue;
    const int error = errno;
    const bool missing = error == ENOENT || error == ENOTDIR;
    if (!(missing && await_directory(dir)) && first)
      throw RuntimeError("cannot watch " + dir + ": " + std::strerror(error));
    // Otherwise the reload reports what is missing.
  }
  auto wanted = [&](int wd) {
    auto watches = [&](const WatchedFile& file) { return file.wd == wd; };
    return dir_wds_.contains(wd) || awaited_.contains(wd) ||
           std::any_of(watched_files_.begin(), watched_files_.end(), watches) ||
           std::any_of(link_targets_.begin(), link_targets_.end(), watches);
  };
  for (const int wd : dirs_before)
    if (!wanted(wd)) unwatch(wd);
  for (const int wd : files_before)
    if (wd >= 0 && !wanted(wd)) unwatch(wd);
  for (const auto& [wd, names] : awaited_before)
    if (!wanted(wd)) unwatch(wd);
}

bool ServiceLoop::watch_tree(const std::string& dir) {
  const int wd = inotify_add_watch(inotify_fd_, dir.c_str(), kWatchEvents | IN_ONLYDIR);
  if (wd < 0) return false;
  dir_wds_.insert(wd);
  // And every directory below it (a firewalld tree edits zones/*.xml, a policy directory may have
  // subdirectories); one made since the last walk is walked now. A second watch of one is the same.
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_directory(ec) && !it->is_symlink(ec))
      if (const int below = inotify_add_watch(inotify_fd_, it->path().c_str(), kWatchEvents); below >= 0)
        dir_wds_.insert(below);
  return true;
}

bool ServiceLoop::await_directory(const fs::path& dir, int links_followed) {
  const fs::path target = fs::absolute(dir).lexically_normal();
  // One made while the watch above it was being set is awaited one level further down.
  for (int depth = 0; depth < 64; ++depth) {
    fs::path below = target, above = target.parent_path();
    std::error_code ec;
    while (!fs::is_directory(above, ec) && above != above.parent_path()) {
      below = above;
      above = above.parent_path();
    }
    if (below.filename().empty()) return false;  // nothing above it to wait in
    const int wd = inotify_add_watch(inotify_fd_, above.c_str(), kWatchEvents | IN_ONLYDIR);
    if (wd < 0) return false;
    awaited_[wd].insert(below.filename().string());
    // A link to what is not there (yet): what it names is awaited too, since its coming changes nothing
    // where the link is.
    if (fs::is_symlink(below, ec) && !fs::exists(below, ec) && links_followed < 8)
      if (auto named = through_link(below, target.lexically_relative(below)))
        await_directory(*named, links_followed + 1);
    if (!fs::exists(below, ec)) return true;  // the watch above tells when it comes
    if (below == target) {
      watch_tree(target.string());  // not a directory: the watch above tells when it is replaced
      return true;
    }
  }
  return true;
}

void ServiceLoop::watch_links_on_the_way(const fs::path& dir, int links_followed) {
  const fs::path whole = fs::absolute(dir).lexically_normal();
  fs::path at;
  std::error_code ec;
  for (const auto& part : whole) {
    at /= part;
    if (!fs::is_symlink(at, ec)) continue;
    if (const int wd = inotify_add_watch(inotify_fd_, at.parent_path().c_str(), kWatchEvents | IN_ONLYDIR);
        wd >= 0)
      awaited_[wd].insert(at.filename().string());
    // The rest of the way goes through where the link points, which may hold links of its own.
    if (links_followed < 8)
      if (auto named = through_link(at, whole.lexically_relative(at)))
        watch_links_on_the_way(*named, links_followed + 1);
    return;
  }
}

void ServiceLoop::unwatch(int wd) {
  if (inotify_rm_watch(inotify_fd_, wd) == 0) unwatched_.insert(wd);
}

bool ServiceLoop::drain_inotify() {
  bool news = false;
  alignas(inotify_event) char buf[4096];
  ssize_t n;
  // By watch: the names in its directory on the way to the files watched there.
  std::map<int, std::set<std::string>> file_names;
  for (const auto& file : watched_files_)
    if (file.wd >= 0) file_names[file.wd].merge(names_on_the_way(file.dir, file.name));
  for (const auto& target : link_targets_)
    if (target.wd >= 0) file_names[target.wd].insert(target.name);
  while ((n = read(inotify_fd_, buf, sizeof buf)) > 0)
    for (ssize_t at = 0; at < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buf + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      const int wd = event->wd;
      if (event->mask & IN_Q_OVERFLOW) {  // events lost: anything may have changed
        news = true;
        continue;
      }
      if ((event->mask & IN_IGNORED) && unwatched_.erase(wd)) continue;  // we removed it
      const bool everything = dir_wds_.contains(wd);
      // Not (or no longer) watched: queued before its watch was removed here.
      const auto names_here = file_names.find(wd);
      if (!everything && names_here == file_names.end() && !awaited_.contains(wd)) continue;
      // The directory itself went: deleted (IN_IGNORED follows), or renamed, when the watch would follow
      // it to its new name. The path is watched again, perhaps with another config in it.
      if (event->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
        if (event->mask & IN_MOVE_SELF) unwatch(wd);
        dir_wds_.erase(wd);
        awaited_.erase(wd);
        for (auto* files : {&watched_files_, &link_targets_})
          for (auto& file : *files)
            if (file.wd == wd) file.wd = -1;
        news = true;
        continue;
      }
      // A watch of a watched file's directory, or of a directory holding a name on the way to a watched one,
      // that is no watched directory's (the same directory gives the same watch) tells only of the names it
      // waits for.
      const std::string name = event->len > 0 ? event->name : "";
      const auto awaited = awaited_.find(wd);
      news = news || everything || (names_here != file_names.end() && names_here->second.contains(name)) ||
             (awaited != awaited_.end() && awaited->second.contains(name));
    }
  return news;
}

ServiceLoop::~ServiceLoop() {
  if (signal_fd_ >= 0) close(signal_fd_);
  if (inotify_fd_ >= 0) close(inotify_fd_);
  if (link_fd_ >= 0) close(link_fd_);
}

void ServiceLoop::follow_links() {
  link_fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (link_fd_ < 0) throw RuntimeError(std::string("netlink socket: ") + std::strerror(errno));
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  local.nl_groups = RTMGRP_LINK;
  if (bind(link_fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
    throw RuntimeError(std::string("cannot follow the interfaces: ") + std::strerror(errno));
  // After subscribing: an interface made in between is reported twice at worst, never missed.
  take_links(false);
}

void ServiceLoop::take_links(bool report) {
  std::map<int, netlink::Link> now;
  ifinfomsg family{};
  family.ifi_family = AF_UNSPEC;
  const auto end = netlink::dump_route(RTM_GETLINK, family, [&](const nlmsghdr& message) {
    if (message.nlmsg_type != RTM_NEWLINK) return;
    if (auto link = netlink::link_of(message)) now[link->index] = std::move(*link);
  });
  // An error, or a dump a change interrupted (it may miss a link): not a list to compare with, and what
  // changed is not known, so everything is bound again.
  if (!end.complete()) {
    if (report) new_links_.push_back("(unknown: news lost)");
    return;
  }
  if (report) {
    for (const auto& [index, link] : now)
      if (auto it = links_.find(index); it == links_.end() || it->second != link)
        new_links_.push_back(link.name);
    for (const auto& [index, link] : links_)
      if (!now.contains(index)) new_links_.push_back(link.name + " (gone)");
  }
  links_ = std::move(now);
}

void ServiceLoop::read_link_news() {
  alignas(nlmsghdr) char buf[16384];
  bool lost = false;  // news lost or cut: once the queue is read, compare with what is there then
  while (true) {
    // MSG_TRUNC: the datagram's whole length, so that a cut one is seen as such.
    ssize_t n = recv(link_fd_, buf, sizeof buf, MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if ((n < 0 && errno == ENOBUFS) || n > static_cast<ssize_t>(sizeof buf)) {
      lost = true;
      continue;
    }
    if (n <= 0) break;  // all read
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
      auto news = netlink::link_of(*h);
      if (!news) continue;
      // Gone: deleted, or moved to another namespace, where a program it carries (XDP) still reads the
      // backend's records of it until they are bound again without it.
      if (h->nlmsg_type == RTM_DELLINK) {
        if (links_.erase(news->index) > 0) new_links_.push_back(news->name + " (gone)");
        continue;
      }
      // Other news of a known interface (up, down, carrier, MTU) changes nothing a backend bound.
      auto [it, added] = links_.try_emplace(news->index, *news);
      if (added || it->second != *news) {
        it->second = *news;
        new_links_.push_back(news->name);
      }
    }
  }
  if (lost) take_links(true);
}

void ServiceLoop::follow_log(std::unique_ptr<LogWatch> log) {
  if (log_) write_log_lines();
  log_ = std::move(log);
}

namespace {

// Whether stderr is the journal's stream (systemd's JOURNAL_STREAM names its device and inode), where
// "<N>" at a line's start is read as its priority (SyslogLevelPrefix, on by default).
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  unsigned long long device = 0, inode = 0;
  struct stat st {};
  return stream && std::sscanf(stream, "%llu:%llu", &device, &inode) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
         st.st_dev == device && st.st_ino == inode;
}

}  // namespace

void ServiceLoop::write_log_lines() {
  static const bool journal = stderr_is_journal();
  for (const auto& line : log_->consume()) {
    if (journal) std::cerr << '<' << static_cast<int>(line.level) << '>';
    std::cerr << line.text << '\n';
  }
}

Wake ServiceLoop::wait() {
  // The tick counts from the call: news that wakes nobody (a link going up) must not put it off.
  const auto tick_at = std::chrono::steady_clock::now() + tick_.value_or(std::chrono::milliseconds(0));
  while (true) {
    int timeout = -1;
    if (tick_ && std::chrono::steady_clock::now() >= tick_at) return Wake::tick;
    if (tick_) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(tick_at - std::chrono::steady_clock::now());
      timeout = static_cast<int>(std::max<std::chrono::milliseconds::rep>(left.count(), 0));
    }
    // A negative descriptor is ignored by poll.
    pollfd fds[5] = {{signal_fd_, POLLIN, 0},
                     {inotify_fd_, POLLIN, 0},
                     {source_fd_, POLLIN, 0},
                     {link_fd_, POLLIN, 0},
                     {log_ ? log_->fd() : -1, POLLIN, 0}};
    int n = poll(fds, 5, timeout);
    if (n == 0) return Wake::tick;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw RuntimeError(std::string("poll: ") + std::strerror(errno));
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (read(signal_fd_, &info, sizeof info) != sizeof info) continue;
      return info.ssi_signo == SIGHUP ? Wake::reload : Wake::stop;
    }
    if (inotify_fd_ >= 0 && (fds[1].revents & POLLIN)) {
      // Debounce: wait until the files have been quiet for a moment.
      bool news = false;
      const auto bound = std::chrono::steady_clock::now() + kDebounceBound;
      do {
        news = drain_inotify() || news;
        if (!news) break;  // only other files beside a watched file: nothing to wait for
        pollfd quiet{inotify_fd_, POLLIN, 0};
        if (poll(&quiet, 1, static_cast<int>(kDebounce.count())) <= 0) break;
      } while (std::chrono::steady_clock::now() < bound);
      if (!news) continue;
      watch_directories(false);
      return Wake::reload;
    }
    if (log_ && (fds[4].revents & POLLIN)) {
      write_log_lines();
      if (n == 1) continue;
    }
    if (source_fd_ >= 0 && (fds[2].revents & POLLIN)) return Wake::source;
    if (link_fd_ >= 0 && (fds[3].revents & (POLLIN | POLLERR))) {  // POLLERR: news lost (ENOBUFS)
      new_links_.clear();
      read_link_news();
      if (new_links_.empty()) continue;
      const auto bound = std::chrono::steady_clock::now() + kLinkBound;
      pollfd quiet{link_fd_, POLLIN, 0};
      while (std::chrono::steady_clock::now() < bound &&
             poll(&quiet, 1, static_cast<int>(kLinkQuiet.count())) > 0)
        read_link_news();
      return Wake::links;
    }
  }
}

}  // namespace fwe::cli
