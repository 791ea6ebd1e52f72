// fwengine/state.hpp - what fwengine remembers about what it applied, and the one-writer lock.
// Both live under /run/fwengine/<netns>/ (tmpfs: gone at reboot, like the ruleset they describe).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fwe::state {

// /run/fwengine/<netns>; without --netns: "default" in the host's namespace, the `ip netns` name of
// the namespace fwengine runs in, or netns-<inode> for an anonymous one.
std::string run_dir(const std::string& netns);

// The kernel's cookie of a network namespace (SO_NETNS_COOKIE, Linux 5.14): unlike its name or inode,
// never given to another namespace while the host runs; 0 where the kernel does not tell it. Of the
// calling thread's namespace, or of the one `ip netns` knows by that name ("" for the thread's).
std::uint64_t netns_cookie();
std::uint64_t netns_cookie(const std::string& netns);

// Whether run_dir(netns) holds what fwengine recorded for another namespace that had this name before
// (deleted since). Taking the WriterLock empties it.
bool left_by_another_namespace(const std::string& netns);

// Writes path whole or not at all: a reader finds the old file or the new one. The text goes to
// path.tmp, made anew (O_EXCL|O_NOFOLLOW: not through a link someone put in its place), given `mode`
// whatever the umask, then renamed over path.
void write_file_atomically(const std::string& path, std::string_view text, mode_t mode = 0600);
// Writes a file of the user's (migrate's output) whole or not at all: under a new hidden name beside
// path (".NAME.<8 hex digits>", unique), made as any new file is (0666 less the umask, or as the
// directory's default ACL says), then renamed over path, so that a link there is replaced, not written
// through. The temporary file goes if a step fails.
void write_file_replacing(const std::string& path, std::string_view text);

// A backend's record of what it applied, which only spares it reading the kernel: written as
// write_file_atomically writes (its directory made if missing), or, where that fails, removed, so that
// no stale record is trusted. False then.
bool replace_record(const std::string& path, std::string_view text);
// The whole of a file, or nothing where it cannot be read.
std::optional<std::string> read_whole_file(const std::string& path);

// Serialises apply, flush and reloads per namespace. A second writer waits up to timeout, then gets a
// RuntimeError naming the holder's pid. Once held, the directory is this namespace's: what another one of the
// same name recorded there is removed, and this one's cookie recorded.
class WriterLock {
 public:
  WriterLock(const std::string& netns, std::chrono::milliseconds timeout);
  ~WriterLock();
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

  // After a flush: removes the lock file, and the namespace's directory, when nothing else is left in it,
  // so that a namespace fwengine no longer serves leaves nothing behind. The lock stays held until
  // destruction; a writer waiting on the removed file finds it gone once it gets it, and takes the new one.
  void remove_if_alone();

 private:
  std::string path_;
  int fd_ = -1;
};

struct Applied {
  std::string backend, frontend, hash, node, time;
  std::string revision;  // the datastore revision the policy was read at ("" for files)
  std::vector<std::string> sources;
  std::vector<std::string> frontend_options;  // KEY=VALUE, as --frontend-option gave them
  std::vector<std::string> backend_options;   // KEY=VALUE, as --backend-option gave them
  std::size_t chains = 0, rules = 0, sets = 0;
};

// Saving a successful apply also clears the last error.
void save(const std::string& netns, const Applied&);
std::optional<Applied> load(const std::string& netns);
// What was applied, and the last failure, are forgotten (a flush).
void forget(const std::string& netns);

// A reload that failed (bad input, kernel refusal) while the previous ruleset stayed in place.
struct Failure {
  std::string time, message;
};
void record_failure(const std::string& netns, const std::string& message);
std::optional<Failure> last_failure(const std::string& netns);

// The health of a live source (a datastore) as the daemon last saw it: source.json, written atomically
// so that status and monitoring read a whole one.
struct Source {
  std::string url;
  bool reachable = false;
  std::string revision;  // the newest revision seen
  std::string message, time;
};
void save_source(const std::string& netns, const Source&);
std::optional<Source> load_source(const std::string& netns);
void forget_source(const std::string& netns);

}  // namespace fwe::state
