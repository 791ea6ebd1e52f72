// state.cpp - the applied-state file and the writer lock under /run/fwengine.
#include "fwengine/state.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "fwengine/diagnostics.hpp"

namespace fwe::state {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr const char* kRunRoot = "/run/fwengine";
constexpr const char* kCookieFile = "netns-cookie";  // the cookie of the namespace the directory is for

// Root's alone, whatever the umask: what is in it decides what a rollback puts into the kernel.
std::string ensure_dir(const std::string& netns) {
  std::string dir = run_dir(netns);
  for (const std::string& path : {std::string(kRunRoot), dir})
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
      throw RuntimeError("cannot create " + path + ": " + std::strerror(errno));
  return dir;
}
void write_atomically(const std::string& path, const json& j) {
  write_file_atomically(path, j.dump(2, ' ', false, json::error_handler_t::replace) + '\n');  // quotes input
}

std::optional<json> read_object(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

std::uint64_t recorded_cookie(const std::string& dir) {
  std::ifstream in(dir + "/" + kCookieFile);
  std::uint64_t cookie = 0;
  return in >> cookie ? cookie : 0;
}

// Under the writer lock. A namespace's directory is found by its name, which a namespace made later may
// have again (`ip netns add` after a delete; an inode `unshare -n` reuses): what one recorded for another
// namespace (which backend applied, rollback snapshots, failures, pending confirms) is removed before
// this one's is kept. A directory from before fwengine recorded cookies is taken as this namespace's.
void claim(const std::string& dir, std::uint64_t ours) {
  if (ours == 0) return;
  const std::uint64_t theirs = recorded_cookie(dir);
  if (theirs == ours) return;
  std::error_code ec;
  if (theirs != 0)
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.path().filename() != "lock") fs::remove_all(entry.path(), ec);
  write_file_atomically(dir + "/" + kCookieFile, std::to_string(ours) + '\n');
}

std::string now_iso() {
  char when[32] = {};
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return when;
}
}  // namespace

namespace {

// Writes all of text to fd; 0, or the errno that stopped it.
int write_all(int fd, std::string_view text) {
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    written += static_cast<std::size_t>(n);
  }
  return 0;
}

}  // namespace

void write_file_atomically(const std::string& path, std::string_view text, mode_t mode) {
  const std::string tmp = path + ".tmp";
  unlink(tmp.c_str());  // one a crash left
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw RuntimeError("cannot write " + tmp + ": " + std::strerror(errno));
  int error = write_all(fd, text);
  if (!error && fchmod(fd, mode) != 0) error = errno;  // the mode whatever the umask
  close(fd);
  if (error) throw RuntimeError("cannot write " + tmp + ": " + std::strerror(error));
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw RuntimeError("cannot write " + path + ": " + ec.message());
}

void write_file_replacing(const std::string& path, std::string_view text) {
  const fs::path target(path);
  const std::string stem = (target.parent_path() / ("." + target.filename().string() + ".")).string();
  std::random_device random;
  std::string tmp;
  int fd = -1;
  // Mode 0666 at creation: the kernel takes the umask (or the directory's default ACL) off it, as for
  // any new file of the user's.
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    char suffix[9];
    std::snprintf(suffix, sizeof suffix, "%08x", random());
    tmp = stem + suffix;
    fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) throw RuntimeError("cannot write " + path + ": " + std::strerror(errno));
  std::error_code ec;
  const int error = write_all(fd, text);
  close(fd);
  if (error)
    ec = std::error_code(error, std::generic_category());
  else
    fs::rename(tmp, path, ec);
  if (!ec) return;
  unlink(tmp.c_str());
  throw RuntimeError("cannot write " + path + ": " + ec.message());
}

bool replace_record(const std::string& path, std::string_view text) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  try {
    write_file_atomically(path, text);
    return true;
  } catch (const RuntimeError&) {
    fs::remove(path + ".tmp", ec);
    fs::remove(path, ec);
    return false;
  }
}

std::optional<std::string> read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return std::nullopt;
  std::string bytes(static_cast<std::size_t>(in.tellg()), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) return std::nullopt;
  return bytes;
}

// The namespace this process is in, by name: the name `ip netns` knows it by (so that `ip netns exec X`
// and `--netns X` share one state; not one named "default", which --netns refuses), "default" for the
// host's, else netns-<inode> (`unshare -n`): never the host's state for another namespace. The host's is pid
// 1's; where pid 1 cannot be looked at (a container that hides it), the kernel's initial namespace, which
// recent kernels give a fixed inode number. Failing both, a namespace is named by its inode: a stable name,
// if not "default".
static std::string find_netns_name(const struct stat& self) {
  auto same = [&](const struct stat& other) {
    return other.st_ino == self.st_ino && other.st_dev == self.st_dev;
  };
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
    struct stat named {};
    if (entry.path().filename() != "default" && stat(entry.path().c_str(), &named) == 0 && same(named))
      return entry.path().filename().string();
  }
  constexpr ino_t kInitialNetnsInode = 0xEFFFFFF9;  // the kernel's PROC_NET_INIT_INO
  struct stat host {};
  const bool hosts = stat("/proc/1/ns/net", &host) == 0 ? same(host) : self.st_ino == kInitialNetnsInode;
  return hosts ? "default" : "netns-" + std::to_string(self.st_ino);
}

// Found again only when the process's namespace or /run/netns changed (a name added or removed changes the
// directory's time): a command asks about ten times, and on a node with many pods the directory is long.
// A time within the last second is not trusted: the kernel stamps times by its tick, so a change in the
// same tick as the lookup would leave the time as it was.
std::string current_netns_name() {
  struct stat self {};
  if (stat("/proc/self/ns/net", &self) != 0) return "default";
  struct stat names {};
  if (stat("/run/netns", &names) != 0) names = {};
  const std::array<std::uint64_t, 6> key{self.st_dev,
                                         self.st_ino,
                                         names.st_dev,
                                         names.st_ino,
                                         static_cast<std::uint64_t>(names.st_mtim.tv_sec),
                                         static_cast<std::uint64_t>(names.st_mtim.tv_nsec)};
  static std::mutex guard;
  static std::optional<std::pair<std::array<std::uint64_t, 6>, std::string>> found;
  const std::lock_guard lock(guard);
  const bool settled = names.st_mtim.tv_sec + 1 < std::time(nullptr);
  if (!found || found->first != key || !settled) found.emplace(key, find_netns_name(self));
  return found->second;
}

std::uint64_t netns_cookie() {
  const int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  std::uint64_t cookie = 0;
  socklen_t size = sizeof cookie;
  if (probe >= 0 && getsockopt(probe, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &size) != 0) cookie = 0;
  if (probe >= 0) close(probe);
  return cookie;
}

// A thread of its own enters the namespace (setns moves only the calling thread), so the caller stays
// where it is.
std::uint64_t netns_cookie(const std::string& netns) {
  if (netns.empty()) return netns_cookie();
  if (netns.find('/') != std::string::npos) return 0;
  const int fd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::uint64_t cookie = 0;
  std::thread([&] {
    if (setns(fd, CLONE_NEWNET) == 0) cookie = netns_cookie();
  }).join();
  close(fd);
  return cookie;
}

bool left_by_another_namespace(const std::string& netns) {
  const std::uint64_t theirs = recorded_cookie(run_dir(netns));
  if (theirs == 0) return false;
  const std::uint64_t ours = netns_cookie(netns);
  return ours != 0 && ours != theirs;
}

std::string run_dir(const std::string& netns) {
  return std::string(kRunRoot) + "/" + (netns.empty() ? current_netns_name() : netns);
}

WriterLock::WriterLock(const std::string& netns, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    path_ = ensure_dir(netns) + "/lock";
    fd_ = open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0 && errno == ENOENT) continue;  // the directory went with a flush just now: make it again
    if (fd_ < 0) throw RuntimeError("cannot open " + path_ + ": " + std::strerror(errno));
    while (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (std::chrono::steady_clock::now() >= deadline) {
        char holder[32] = {};
        ssize_t n = pread(fd_, holder, sizeof holder - 1, 0);
        close(fd_);
        fd_ = -1;
        throw RuntimeError("another fwengine (pid " + std::string(n > 0 ? holder : "?") +
                           ") is changing the firewall" + (netns.empty() ? "" : " of netns " + netns) +
                           "; gave up after " + std::to_string(timeout.count() / 1000) +
                           " s (try again, or raise --lock-timeout)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // The holder before may have removed the file (remove_if_alone): a lock on it guards nothing.
    struct stat held {
    }, named{};
    if (fstat(fd_, &held) == 0 && stat(path_.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
        held.st_dev == named.st_dev)
      break;
    close(fd_);
    fd_ = -1;
  }
  claim(fs::path(path_).parent_path().string(), netns_cookie(netns));
  std::string pid = std::to_string(getpid());
  if (ftruncate(fd_, 0) == 0 && pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // The pid is only a courtesy for the next waiter's message; the lock itself is held.
  }
}

void WriterLock::remove_if_alone() {
  const fs::path dir = fs::path(path_).parent_path();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().filename() != "lock" && entry.path().filename() != kCookieFile) return;
  if (ec) return;
  fs::remove(dir / kCookieFile, ec);
  fs::remove(path_, ec);
  fs::remove(dir, ec);  // fails, harmlessly, if a waiter made it anew meanwhile
}

WriterLock::~WriterLock() {
  if (fd_ >= 0) close(fd_);  // closing releases the flock
}

void save(const std::string& netns, const Applied& a) {
  std::string dir = ensure_dir(netns);
  json j = {{"backend", a.backend},
            {"frontend", a.frontend},
            {"hash", a.hash},
            {"node", a.node},
            {"time", a.time},
            {"sources", a.sources},
            {"chains", a.chains},
            {"rules", a.rules},
            {"sets", a.sets},
            {"revision", a.revision},
            {"frontend-options", a.frontend_options},
            {"backend-options", a.backend_options}};
  write_atomically(dir + "/state.json", j);
  std::error_code ec;
  fs::remove(dir + "/failure.json", ec);
}

std::optional<Applied> load(const std::string& netns) {
  auto found = read_object(run_dir(netns) + "/state.json");
  if (!found) return std::nullopt;
  const json& j = *found;
  Applied a;
  a.backend = j.value("backend", "");
  a.frontend = j.value("frontend", "");
  a.hash = j.value("hash", "");
  a.node = j.value("node", "");
  a.time = j.value("time", "");
  a.sources = j.value("sources", std::vector<std::string>{});
  a.frontend_options = j.value("frontend-options", std::vector<std::string>{});
  a.backend_options = j.value("backend-options", std::vector<std::string>{});
  a.chains = j.value("chains", std::size_t{0});
  a.rules = j.value("rules", std::size_t{0});
  a.sets = j.value("sets", std::size_t{0});
  a.revision = j.value("revision", "");
  return a;
}

void forget(const std::string& netns) {
  std::error_code ec;
  fs::remove(run_dir(netns) + "/state.json", ec);
  fs::remove(run_dir(netns) + "/failure.json", ec);  // a failure to keep what is gone now
}

void record_failure(const std::string& netns, const std::string& message) {
  write_atomically(ensure_dir(netns) + "/failure.json", {{"time", now_iso()}, {"message", message}});
}

std::optional<Failure> last_failure(const std::string& netns) {
  auto j = read_object(run_dir(netns) + "/failure.json");
  if (!j) return std::nullopt;
  return Failure{j->value("time", ""), j->value("message", "")};
}

void save_source(const std::string& netns, const Source& s) {
  write_atomically(ensure_dir(netns) + "/source.json", {{"url", s.url},
                                                        {"reachable", s.reachable},
                                                        {"revision", s.revision},
                                                        {"message", s.message},
                                                        {"time", now_iso()}});
}

std::optional<Source> load_source(const std::string& netns) {
  auto j = read_object(run_dir(netns) + "/source.json");
  if (!j) return std::nullopt;
  return Source{j->value("url", ""), j->value("reachable", false), j->value("revision", ""),
                j->value("message", ""), j->value("time", "")};
}

void forget_source(const std::string& netns) {
  std::error_code ec;
  fs::remove(run_dir(netns) + "/source.json", ec);
}

}  // namespace fwe::state
