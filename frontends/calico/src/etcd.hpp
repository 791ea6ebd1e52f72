// etcd.hpp - Calico's etcdv3 datastore as a policy source: the key layout, a client for etcd's v3 JSON
// gateway (libcurl), and a watch that keeps a live copy of the policy for the daemon.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fwengine/plugin.hpp"

namespace fwe::calico::etcd {

// libcalico-go's etcdv3 backend keeps every v3 resource as JSON under this prefix:
// <prefix><plural>/<name> for cluster-wide kinds, <prefix><plural>/<namespace>/<name> for namespaced ones.
inline constexpr std::string_view kResourcePrefix = "/calico/resources/v3/projectcalico.org/";

// Whether a key holds a resource of a kind the frontend reads (host endpoints, global policies and
// sets, tiers, Felix configuration, and the Node named node, for its labels); the store holds many
// others (other nodes, IPAM, workload endpoints).
bool is_policy_key(std::string_view key, std::string_view node);

// etcd://host:port[,host:port...]; TLS (https) when any of the files is given, as calicoctl's
// etcdCACertFile / etcdCertFile / etcdKeyFile.
struct Endpoints {
  std::vector<std::string> urls;  // http[s]://host:port
  std::string ca_file, cert_file, key_file;
};
bool is_source(std::string_view source);
// Throws UsageError for a malformed URL or a key file without its certificate (and the reverse).
Endpoints parse_source(std::string_view source, const std::map<std::string, std::string>& options);

// The policy resources in the store at one revision: key -> JSON value.
struct Snapshot {
  std::int64_t revision = 0;
  std::map<std::string, std::string> resources;
};

struct Event {
  std::string key;
  std::optional<std::string> value;  // nullopt: deleted
};

// The store no longer has the history a watch needs; list again.
struct Compacted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Client {
 public:
  // origin_netns_fd: make sockets in that namespace (the engine may work inside another one, while
  // the store is reached from the host's); -1 for the current one.
  // node: the Node resource read is this one's.
  Client(Endpoints endpoints, int origin_netns_fd, std::string node);

  // Every policy resource, read from the first endpoint that answers (starting with the last good
  // one, or a random one). Throws RuntimeError naming every endpoint's failure when none answers.
  // With `stop`, the list ends (throwing) within a second of it turning true, however long a member
  // takes to answer.
  Snapshot list(const std::atomic<bool>* stop = nullptr);

  using OnChange = std::function<void(const std::vector<Event>& events, std::int64_t revision)>;
  // Follows the changes after revision `after` on the last endpoint that answered. Returns when stop
  // is set; throws Compacted when the store dropped that history, RuntimeError when the stream breaks
  // or the member stops answering reads.
  void watch(std::int64_t after, const OnChange& on_change, const std::atomic<bool>& stop);

  const std::string& current_url() const { return endpoints_.urls[current_]; }
  const std::string& node() const { return node_; }

 private:
  // Whether the member answers a linearizable read in time (it is alive and has a leader).
  bool answers(const std::string& url);

  Endpoints endpoints_;
  std::size_t current_ = 0;
  int origin_netns_fd_;
  std::string node_;
};

// Keeps a live copy of the store's policy on a thread of its own (list, then watch from the list's
// revision; relist after a compaction or a broken stream, with backoff while no endpoint answers) and
// tells the daemon through an eventfd. With a cache file, every copy is also kept on disk, and a daemon
// that starts while the store cannot be reached (a host that reboots during an outage) enforces the
// cached policy instead of nothing.
class Watch final : public SourceWatch {
 public:
  Watch(Endpoints endpoints, int origin_netns_fd, std::string cache_file, std::string node);
  ~Watch() override;
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  int fd() const override { return event_fd_; }
  SourceStatus consume() override;
  // The copy to compile; nullopt until the store has answered once.
  std::optional<Snapshot> snapshot() const;
  // Keeps a copy that read without errors as the one a start without the store enforces: not one the
  // daemon refused (a bad resource), which would leave a host rebooted during an outage with nothing.
  void keep_cache(const Snapshot& read) const;

 private:
  void run();
  void notify();
  void set_unreachable(const std::string& why);
  // Before the store's first answer: take the cached policy; returns what to add to the message.
  std::string fall_back_to_cache();

  Client client_;
  std::string cache_file_;  // "" for none
  int event_fd_ = -1;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<Snapshot> snapshot_;
  std::int64_t seen_revision_ = 0;
  bool reachable_ = false;
  bool changed_ = false;
  std::string message_ = "not answered yet";
  bool told_unreachable_ = false;
  std::thread thread_;
};

}  // namespace fwe::calico::etcd
