// etcd.cpp - the etcdv3 source: etcd's JSON gateway (POST /v3/kv/range, streaming POST /v3/watch) over
// libcurl, and the watch thread of the daemon.
#include "etcd.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "fwengine/diagnostics.hpp"

namespace fwe::calico::etcd {
namespace {

using nlohmann::json;

// The kinds the frontend reads, by the plural libcalico-go names their directories with; and of "nodes"
// this node's alone (is_policy_key).
constexpr std::array<std::string_view, 6> kPolicyPlurals = {
    "hostendpoints", "globalnetworkpolicies", "globalnetworksets", "felixconfigurations", "tiers",
    "profiles"};

constexpr long kConnectTimeoutMs = 2000;
constexpr long kListTimeoutMs = 10000;
// A watch that is quiet is not proof of life: a member that hangs, or that lost the leader, keeps the
// stream open and sends nothing. Every kProbeEvery the watched member must answer a linearizable read
// (which needs the leader) within kProbeTimeoutMs, or the watch moves to the next member.
constexpr auto kProbeEvery = std::chrono::seconds(3);
constexpr long kProbeTimeoutMs = 2000;
constexpr auto kFirstBackoff = std::chrono::milliseconds(200);
constexpr auto kLastBackoff = std::chrono::seconds(5);

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(std::max(n, 0)));
  return out;
}

std::string unbase64(std::string_view text) {
  if (text.empty()) return {};
  std::string out(3 * (text.size() / 4) + 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) throw RuntimeError("etcd sent a value that is not base64");
  std::size_t padding = text.size() - text.find_last_not_of('=') - 1;
  out.resize(static_cast<std::size_t>(n) - std::min<std::size_t>(padding, 2));
  return out;
}

// The gateway prints int64 fields as strings.
std::int64_t int_field(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) return 0;
  if (it->is_string()) return std::stoll(it->get<std::string>());
  if (it->is_number_integer()) return it->get<std::int64_t>();
  return 0;
}

// The end of etcd's range for "every key with this prefix": the prefix with its last byte increased.
std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  end.back() = static_cast<char>(end.back() + 1);
  return end;
}

json range_of_resources() {
  return {{"key", base64(kResourcePrefix)}, {"range_end", base64(prefix_end(kResourcePrefix))}};
}

void init_curl_once() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  if (!done) throw RuntimeError("libcurl failed to initialise");
}

// Sockets are made in the namespace the engine started in: setns changes only the calling thread,
// and a socket keeps the namespace it was made in.
curl_socket_t open_socket_in_origin(void* origin_fd, curlsocktype, curl_sockaddr* address) {
  const int origin = *static_cast<const int*>(origin_fd);
  const int type = address->socktype | SOCK_CLOEXEC;
  if (origin < 0) return socket(address->family, type, address->protocol);
  const int here = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (here < 0) return CURL_SOCKET_BAD;
  curl_socket_t fd = CURL_SOCKET_BAD;
  if (setns(origin, CLONE_NEWNET) == 0) {
    fd = socket(address->family, type, address->protocol);
    if (setns(here, CLONE_NEWNET) != 0) {
      // A thread left in the host's namespace would change the host's firewall: stop at once.
      static constexpr char kWhy[] = "fwengine: cannot return to the target network namespace; aborting\n";
      ssize_t unused = write(STDERR_FILENO, kWhy, sizeof kWhy - 1);
      (void)unused;
      std::abort();
    }
  }
  close(here);
  return fd;
}

struct CurlDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
struct HeaderListDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

// One POST of JSON to one endpoint; the body arrives through `sink`.
class Request {
 public:
  using Sink = std::function<bool(std::string_view)>;  // false: stop the transfer

  Request(const Endpoints& endpoints, const std::string& url, const std::string& body, const int* origin_fd)
      : handle_(curl_easy_init()), body_(body) {
    if (!handle_) throw RuntimeError("libcurl: cannot create a transfer");
    headers_.reset(curl_slist_append(nullptr, "Content-Type: application/json"));
    CURL* h = handle_.get();
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body_.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers_.get());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, kConnectTimeoutMs);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);  // a dead peer under a quiet watch is noticed
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket_in_origin);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, origin_fd);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_);
    if (!endpoints.ca_file.empty()) {
      // That CA alone: libcurl would also trust the system's store (Debian's is built with a CA path).
      curl_easy_setopt(h, CURLOPT_CAINFO, endpoints.ca_file.c_str());
      curl_easy_setopt(h, CURLOPT_CAPATH, nullptr);
    }
    if (!endpoints.cert_file.empty()) curl_easy_setopt(h, CURLOPT_SSLCERT, endpoints.cert_file.c_str());
    if (!endpoints.key_file.empty()) curl_easy_setopt(h, CURLOPT_SSLKEY, endpoints.key_file.c_str());
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Request::write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, this);
  }

  void set_timeout(long ms) { curl_easy_setopt(handle_.get(), CURLOPT_TIMEOUT_MS, ms); }

  // Polled by libcurl at least once a second: how a watch notices that it is to stop, or that its
  // member no longer answers (alive() false).
  void stop_when(const std::atomic<bool>& stop, std::function<bool()> alive) {
    stop_ = &stop;
    alive_ = std::move(alive);
    last_probe_ = std::chrono::steady_clock::now();
    curl_easy_setopt(handle_.get(), CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(handle_.get(), CURLOPT_XFERINFOFUNCTION, &Request::progress);
    curl_easy_setopt(handle_.get(), CURLOPT_XFERINFODATA, this);
  }

  // Runs the transfer; returns "" when it went through with HTTP 200, else why not.
  std::string perform(const Sink& sink) {
    sink_ = &sink;
    CURLcode code = curl_easy_perform(handle_.get());
    if (sink_error_) std::rethrow_exception(sink_error_);
    if (stop_ && stop_->load()) return {};
    if (dead_) return "no answer to a read within " + std::to_string(kProbeTimeoutMs) + " ms";
    if (code != CURLE_OK) return error_[0] ? std::string(error_) : curl_easy_strerror(code);
    long status = 0;
    curl_easy_getinfo(handle_.get(), CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) return "HTTP " + std::to_string(status);
    return {};
  }

 private:
  static std::size_t write(char* data, std::size_t size, std::size_t count, void* self_ptr) {
    auto* self = static_cast<Request*>(self_ptr);
    try {
      if (!(*self->sink_)({data, size * count})) return 0;
    } catch (...) {
      self->sink_error_ = std::current_exception();  // exceptions must not cross libcurl's C frames
      return 0;
    }
    return size * count;
  }
  static int progress(void* self_ptr, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto* self = static_cast<Request*>(self_ptr);
    if (self->stop_->load()) return 1;
    const auto now = std::chrono::steady_clock::now();
    if (now - self->last_probe_ < kProbeEvery) return 0;
    self->last_probe_ = now;
    self->dead_ = !self->alive_();
    return self->dead_ ? 1 : 0;
  }

  std::unique_ptr<CURL, CurlDeleter> handle_;
  std::unique_ptr<curl_slist, HeaderListDeleter> headers_;
  std::string body_;
  char error_[CURL_ERROR_SIZE] = {};
  const Sink* sink_ = nullptr;
  std::exception_ptr sink_error_;
  const std::atomic<bool>* stop_ = nullptr;
  std::function<bool()> alive_;
  std::chrono::steady_clock::time_point last_probe_;
  bool dead_ = false;
};

std::string error_of(const json& reply) {
  if (reply.contains("message") && reply["message"].is_string()) return reply["message"].get<std::string>();
  if (reply.contains("error")) return reply["error"].dump();
  return reply.dump();
}

std::string iso_now() {
  char text[32] = {};
  std::time_t now = std::time(nullptr);
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

}  // namespace

bool is_policy_key(std::string_view key, std::string_view node) {
  if (!key.starts_with(kResourcePrefix)) return false;
  key.remove_prefix(kResourcePrefix.size());
  const auto slash = key.find('/');
  if (slash == std::string_view::npos || slash + 1 == key.size()) return false;
  const std::string_view plural = key.substr(0, slash);
  if (plural == "nodes") return key.substr(slash + 1) == node;
  return std::find(kPolicyPlurals.begin(), kPolicyPlurals.end(), plural) != kPolicyPlurals.end() &&
         key.find('/', slash + 1) == std::string_view::npos;
}

bool is_source(std::string_view source) {
  return source.starts_with("etcd://");
}

Endpoints parse_source(std::string_view source, const std::map<std::string, std::string>& options) {
  Endpoints endpoints;
  auto option = [&](const char* key) {
    auto it = options.find(key);
    if (it == options.end()) return std::string{};
    // Empty (an unset shell variable): not "none", which for --etcd-ca would mean no TLS at all.
    if (it->second.empty()) throw UsageError(std::string("--") + key + " needs a file");
    return it->second;
  };
  endpoints.ca_file = option("etcd-ca");
  endpoints.cert_file = option("etcd-cert");
  endpoints.key_file = option("etcd-key");
  if (endpoints.cert_file.empty() != endpoints.key_file.empty())
    throw UsageError("--etcd-cert and --etcd-key go together: a client certificate needs its key");
  const bool tls = !endpoints.ca_file.empty() || !endpoints.cert_file.empty();
  std::string_view rest = source.substr(std::string_view("etcd://").size());
  if (rest.empty())
    throw UsageError("'" + std::string(source) + "' names no endpoint: etcd://HOST:PORT[,HOST:PORT...]");
  // Not echoed: what comes before '@' may be a password.
  if (rest.find('@') != std::string_view::npos)
    throw UsageError(
        "the etcd source names a user (USER[:PASSWORD]@HOST): fwengine does not log in to etcd "
        "with a password, and would keep it in its state; authenticate with a client "
        "certificate (--etcd-cert, --etcd-key)");
  for (bool more = true; more;) {
    const auto comma = rest.find(',');
    const std::string_view hostport = rest.substr(0, comma);
    more = comma != std::string_view::npos;
    if (more) rest.remove_prefix(comma + 1);
    const auto colon = hostport.rfind(':');
    const std::string_view port = colon == std::string_view::npos ? "" : hostport.substr(colon + 1);
    const bool has_port = !port.empty() && port.size() <= 5 &&
                          port.find_first_not_of("0123456789") == std::string_view::npos &&
                          std::stoul(std::string(port)) >= 1 && std::stoul(std::string(port)) <= 65535;
    if (hostport.empty() || !has_port || colon == 0 || hostport.find('/') != std::string_view::npos)
      throw UsageError("'" + std::string(hostport) + "' in " + std::string(source) +
                       " is not HOST:PORT (etcd://HOST:PORT[,HOST:PORT...], e.g. etcd://127.0.0.1:2379)");
    endpoints.urls.push_back((tls ? "https://" : "http://") + std::string(hostport));
  }
  return endpoints;
}

Client::Client(Endpoints endpoints, int origin_netns_fd, std::string node)
    : endpoints_(std::move(endpoints)),
      // Hosts of a fleet start on different members, so that no one member serves them all.
      current_(std::random_device{}() % endpoints_.urls.size()),
      origin_netns_fd_(origin_netns_fd),
      node_(std::move(node)) {
  init_curl_once();
}

bool Client::answers(const std::string& url) {
  json read = range_of_resources();
  read["limit"] = 1;
  read["keys_only"] = true;
  Request request(endpoints_, url + "/v3/kv/range", read.dump(), &origin_netns_fd_);
  request.set_timeout(kProbeTimeoutMs);
  return request.perform([](std::string_view) { return true; }).empty();
}

Snapshot Client::list(const std::atomic<bool>* stop) {
  // Serializable: the member answers from its own copy, without a round through the leader, so that a
  // fleet relisting at once (its member died) does not load the leader; the watch then follows that
  // member from the same revision, and the liveness probe (linearizable) leaves a member cut off.
  json range = range_of_resources();
  range["serializable"] = true;
  const std::string body = range.dump();
  std::string failures;
  for (std::size_t attempt = 0; attempt < endpoints_.urls.size(); ++attempt) {
    if (stop && stop->load()) throw RuntimeError("stopped while listing the store");
    const std::size_t index = (current_ + attempt) % endpoints_.urls.size();
    const std::string& url = endpoints_.urls[index];
    std::string reply;
    Request request(endpoints_, url + "/v3/kv/range", body, &origin_netns_fd_);
    request.set_timeout(kListTimeoutMs);
    // A stopping daemon does not wait for a member that hangs (up to kListTimeoutMs each).
    if (stop) request.stop_when(*stop, [] { return true; });
    std::string error = request.perform([&](std::string_view part) {
      reply.append(part);
      return true;
    });
    if (stop && stop->load()) throw RuntimeError("stopped while listing the store");  // the reply may be cut
    json parsed = json::parse(reply, nullptr, false);
    if (error.empty() && (parsed.is_discarded() || !parsed.is_object())) error = "the reply is not JSON";
    if (!error.empty()) {
      if (!parsed.is_discarded() && parsed.is_object()) error += ": " + error_of(parsed);
      failures += (failures.empty() ? "" : "; ") + url + ": " + error;
      continue;
    }
    current_ = index;
    Snapshot snapshot;
    snapshot.revision = int_field(parsed.value("header", json::object()), "revision");
    for (const auto& kv : parsed.value("kvs", json::array())) {
      std::string key = unbase64(kv.value("key", ""));
      if (is_policy_key(key, node_)) snapshot.resources[key] = unbase64(kv.value("value", ""));
    }
    return snapshot;
  }
  current_ = (current_ + 1) % endpoints_.urls.size();
  throw RuntimeError("no etcd endpoint answered (" + failures + ")");
}

void Client::watch(std::int64_t after, const OnChange& on_change, const std::atomic<bool>& stop) {
  json create = range_of_resources();
  create["start_revision"] = std::to_string(after + 1);
  const std::string url = endpoints_.urls[current_];
  Request request(endpoints_, url + "/v3/watch", json{{"create_request", create}}.dump(), &origin_netns_fd_);
  request.stop_when(stop, [this, &url] { return answers(url); });
  std::string pending;
  // The gateway streams one JSON object per line.
  std::string error = request.perform([&](std::string_view part) {
    pending.append(part);
    std::size_t newline;
    while ((newline = pending.find('\n')) != std::string::npos) {
      json message = json::parse(pending.substr(0, newline), nullptr, false);
      pending.erase(0, newline + 1);
      if (message.is_discarded() || !message.is_object())
        throw RuntimeError("the watch sent something not JSON");
      if (message.contains("error")) throw RuntimeError("watch failed: " + error_of(message["error"]));
      const json result = message.value("result", json::object());
      if (result.value("canceled", false)) {
        if (int_field(result, "compact_revision") > 0)
          throw Compacted("revision " + std::to_string(after + 1) + " was compacted");
        throw RuntimeError("the store cancelled the watch: " +
                           result.value("cancel_reason", std::string("no reason")));
      }
      std::vector<Event> events;
      for (const auto& e : result.value("events", json::array())) {
        const json kv = e.value("kv", json::object());
        Event event{unbase64(kv.value("key", "")), std::nullopt};
        if (!is_policy_key(event.key, node_)) continue;
        if (e.value("type", std::string("PUT")) != "DELETE") event.value = unbase64(kv.value("value", ""));
        events.push_back(std::move(event));
      }
      on_change(events, int_field(result.value("header", json::object()), "revision"));
    }
    return true;
  });
  if (stop.load()) return;
  current_ = (current_ + 1) % endpoints_.urls.size();  // the next attempt starts elsewhere
  throw RuntimeError("the watch on " + url + " ended: " + (error.empty() ? "the store closed it" : error));
}

// The cache: the last policy read from the store, kept across reboots (0600, replaced atomically and on
// the disk before it replaces the old one: a power loss is what it is for). A cache that cannot be
// written only costs the fallback at the next boot: nothing here throws.
void save_cache(const std::string& file, const Snapshot& snapshot) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path dir = fs::path(file).parent_path();
  fs::create_directories(dir, ec);
  const std::string tmp = file + ".tmp";
  std::string text;
  try {
    // A value that is not UTF-8 (bytes put by hand) is kept with U+FFFD in its place, not thrown at.
    text = json{{"revision", snapshot.revision}, {"resources", snapshot.resources}}.dump(
               -1, ' ', false, json::error_handler_t::replace) +
           "\n";
  } catch (const std::exception&) {
    return;
  }
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const bool written =
      write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fsync(fd) == 0;
  close(fd);
  if (!written) return;
  fs::rename(tmp, file, ec);
  const int dir_fd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);  // the rename itself
    close(dir_fd);
  }
}

std::optional<Snapshot> load_cache(const std::string& file, std::string_view node) {
  std::ifstream in(file);
  if (!in) return std::nullopt;
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("resources") || !j["resources"].is_object())
    return std::nullopt;
  Snapshot snapshot;
  snapshot.revision = int_field(j, "revision");
  for (const auto& [key, value] : j["resources"].items())
    if (value.is_string() && is_policy_key(key, node)) snapshot.resources[key] = value.get<std::string>();
  return snapshot;
}

Watch::Watch(Endpoints endpoints, int origin_netns_fd, std::string cache_file, std::string node)
    : client_(std::move(endpoints), origin_netns_fd, std::move(node)),
      cache_file_(std::move(cache_file)),
      event_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (event_fd_ < 0) throw RuntimeError("eventfd failed");
  thread_ = std::thread([this] { run(); });
}

Watch::~Watch() {
  stop_ = true;
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  close(event_fd_);
}

SourceStatus Watch::consume() {
  std::uint64_t count = 0;
  ssize_t unused = read(event_fd_, &count, sizeof count);  // clears readiness; nothing to read is fine
  (void)unused;
  std::lock_guard lock(mutex_);
  SourceStatus status{reachable_, changed_, std::to_string(seen_revision_), message_};
  changed_ = false;
  return status;
}

std::optional<Snapshot> Watch::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

void Watch::notify() {
  const std::uint64_t one = 1;
  ssize_t unused = write(event_fd_, &one, sizeof one);
  (void)unused;
}

void Watch::set_unreachable(const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    if (told_unreachable_) return;  // the daemon knows already; a new reason is no news
    told_unreachable_ = true;
    reachable_ = false;
    message_ = "since " + iso_now() + ": " + why;
  }
  notify();
}

std::string Watch::fall_back_to_cache() {
  if (cache_file_.empty()) return {};
  {
    std::lock_guard lock(mutex_);
    if (snapshot_) return {};  // the store answered before: what it said is newer than any cache
  }
  auto cached = load_cache(cache_file_, client_.node());
  if (!cached) return "; no copy of an earlier policy in " + cache_file_;
  std::lock_guard lock(mutex_);
  snapshot_ = std::move(cached);
  changed_ = true;
  return "; enforcing the copy of revision " + std::to_string(snapshot_->revision) + " kept in " +
         cache_file_;
}

void Watch::keep_cache(const Snapshot& read) const {
  if (!cache_file_.empty()) save_cache(cache_file_, read);
}

void Watch::run() {
  auto backoff = std::chrono::milliseconds(kFirstBackoff);
  auto pause = [this](std::chrono::milliseconds how_long) {
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, how_long, [this] { return stop_.load(); });
  };
  while (!stop_) {
    Snapshot listed;
    try {
      listed = client_.list(&stop_);
    } catch (const std::exception& e) {
      if (stop_) break;
      set_unreachable(e.what() + fall_back_to_cache());
      pause(backoff);
      // Doubling, with jitter: a fleet that lost its store does not come back in lockstep.
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, kLastBackoff);
      backoff += std::chrono::milliseconds(std::random_device{}() % (backoff.count() / 4 + 1));
      continue;
    }
    backoff = kFirstBackoff;
    {
      std::lock_guard lock(mutex_);
      if (!snapshot_ || snapshot_->resources != listed.resources) changed_ = true;
      snapshot_ = listed;
      seen_revision_ = listed.revision;
      reachable_ = true;
      told_unreachable_ = false;
      message_ = "connected to " + client_.current_url();
    }
    notify();
    try {
      client_.watch(
          listed.revision,
          [this](const std::vector<Event>& events, std::int64_t revision) {
            {
              std::lock_guard lock(mutex_);
              for (const auto& event : events) {
                if (event.value)
                  snapshot_->resources[event.key] = *event.value;
                else
                  snapshot_->resources.erase(event.key);
              }
              if (!events.empty()) {
                snapshot_->revision = revision;
                changed_ = true;
              }
              seen_revision_ = std::max(seen_revision_, revision);
            }
            if (events.empty()) return;
            notify();
          },
          stop_);
    } catch (const Compacted&) {
      // list again at once: the history between the list and now is gone
    } catch (const std::exception&) {
      // A broken stream (a member went away): list again from the next endpoint after a pause that
      // keeps a store that refuses watches from being hammered, and spreads the hosts that watched the
      // lost member over a second. Only a failed list is "unreachable".
      pause(kFirstBackoff + std::chrono::milliseconds(std::random_device{}() % 800));
    }
  }
}

}  // namespace fwe::calico::etcd
