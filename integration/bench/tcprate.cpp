// tcprate.cpp - the dataplane load generator of integration/bench/run.py (bench only, not installed).
//
//   tcprate server --port P [--threads N] [--size B]
//       answers every B-byte request with a B-byte response; prints "ready" once it listens.
//   tcprate client --host A --port P --mode connect|request [--seconds S] [--warmup W] [--threads T]
//       [--size B]
//       connect: each thread opens a connection, sends one request, reads the response, closes, again;
//       request: each thread keeps one connection and sends request after request.
//       Prints one JSON line: connections/s and requests/s over S seconds, after W seconds not counted.
//
// One request in flight per connection (as netperf's TCP_RR and TCP_CRR), blocking client threads and an
// epoll loop per server thread: the cost of every packet through the firewall shows in the rates, and
// Python's own cost does not. Client thread i and server thread i run on the i-th CPU the process may use,
// and server thread i accepts the connections that arrive on that CPU (SO_INCOMING_CPU): a veth hands a
// packet to the receiving side on the sending CPU, so each client/server pair stays on one CPU. Unpinned,
// the request rate jumped between two modes (4x apart) from run to run, with where the scheduler put
// the threads.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "tcprate: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "tcprate: %s\nusage: tcprate server --port P [--threads N] [--size B]\n"
               "       tcprate client --host A --port P --mode connect|request [--seconds S] [--warmup W] "
               "[--threads T] [--size B]\n",
               why.c_str());
  std::exit(2);
}

struct Options {
  std::string host = "127.0.0.1", mode;
  int port = 0, threads = 2;
  std::size_t size = 64;
  double seconds = 2, warmup = 0.2;
};

Options parse(int argc, char** argv) {
  Options o;
  std::map<std::string, std::string> given;
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc) usage(std::string(argv[i]) + " needs a value");
    given[argv[i]] = argv[i + 1];
  }
  for (const auto& [key, value] : given) {
    if (key == "--host") {
      o.host = value;
    } else if (key == "--mode") {
      o.mode = value;
    } else if (key == "--port") {
      o.port = std::stoi(value);
    } else if (key == "--threads") {
      o.threads = std::stoi(value);
    } else if (key == "--size") {
      o.size = std::stoul(value);
    } else if (key == "--seconds") {
      o.seconds = std::stod(value);
    } else if (key == "--warmup") {
      o.warmup = std::stod(value);
    } else {
      usage("unknown option " + key);
    }
  }
  if (o.port <= 0 || o.port > 65535 || o.threads < 1 || o.size < 1 || o.seconds <= 0 || o.warmup < 0)
    usage("--port, --threads, --size and --seconds must be positive");
  return o;
}

sockaddr_in address(const Options& o) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(o.port));
  if (inet_pton(AF_INET, o.host.c_str(), &a.sin_addr) != 1) usage("--host must be an IPv4 address");
  return a;
}

// The index-th CPU (modulo their number) of those this process may run on.
int nth_cpu(int index) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) die("sched_getaffinity");
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  return cpus[static_cast<std::size_t>(index) % cpus.size()];
}

void pin_to(int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (sched_setaffinity(0, sizeof one, &one) != 0) die("sched_setaffinity");
}

void no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ---------------------------------------------------------------- server

// One listening socket per thread (SO_REUSEPORT) and one epoll loop: no locks, no thread per connection.
[[noreturn]] void serve(const Options& o, int cpu) {
  pin_to(cpu);
  sockaddr_in any = address(o);
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  setsockopt(listener, SOL_SOCKET, SO_INCOMING_CPU, &cpu, sizeof cpu);
  if (bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) die("bind");
  if (listen(listener, 4096) != 0) die("listen");
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  std::unordered_map<int, std::size_t> received;  // bytes of the current request, per connection
  std::vector<char> buffer(o.size), response(o.size, 'r');
  std::vector<epoll_event> events(256);
  for (;;) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        for (int c; (c = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK)) >= 0;) {
          no_delay(c);
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
          received[c] = 0;
        }
        continue;
      }
      ssize_t got = read(fd, buffer.data(), buffer.size() - received[fd]);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      bool done = got <= 0;  // the client closed (or reset) the connection
      if (!done && (received[fd] += static_cast<std::size_t>(got)) == o.size) {
        received[fd] = 0;
        // One request in flight per connection, so the small response always fits the send buffer.
        done = write(fd, response.data(), response.size()) != static_cast<ssize_t>(response.size());
      }
      if (done) {
        received.erase(fd);
        close(fd);  // also removes it from the epoll set
      }
    }
  }
}

int server(const Options& o) {
  std::vector<int> cpus;
  for (int i = 0; i < o.threads; ++i) cpus.push_back(nth_cpu(i));  // before any thread is pinned
  std::vector<std::thread> threads;
  for (int i = 1; i < o.threads; ++i) threads.emplace_back(serve, o, cpus[i]);
  // Every listener is bound before "ready": SO_REUSEPORT spreads connections only over bound sockets.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::printf("ready\n");
  std::fflush(stdout);
  serve(o, cpus[0]);
}

// ---------------------------------------------------------------- client

struct alignas(64) Counter {
  std::atomic<std::uint64_t> connections{0}, requests{0}, errors{0};
};

// Sends one request and reads the whole response; false on any error or timeout.
bool transact(int fd, const std::vector<char>& request, std::vector<char>& response) {
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) return false;
  for (std::size_t got = 0; got < response.size();) {
    ssize_t n = read(fd, response.data() + got, response.size() - got);
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

int open_connection(const sockaddr_in& server) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  // A packet the firewall drops must not hang a thread past the end of the run.
  timeval timeout{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);  // also bounds connect()
  no_delay(fd);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&server), sizeof server) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void load(const Options& o, int cpu, const std::atomic<bool>& stop, Counter& count) {
  pin_to(cpu);
  sockaddr_in server = address(o);
  std::vector<char> request(o.size, 'q'), response(o.size);
  int fd = -1;
  while (!stop.load(std::memory_order_relaxed)) {
    if (fd < 0) {
      fd = open_connection(server);
      if (fd < 0) {
        count.errors.fetch_add(1, std::memory_order_relaxed);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // e.g. no ephemeral port left
        continue;
      }
    }
    bool ok = transact(fd, request, response);
    if (!ok) count.errors.fetch_add(1, std::memory_order_relaxed);
    if (!ok || o.mode == "connect") {
      close(fd);
      fd = -1;
      if (ok) count.connections.fetch_add(1, std::memory_order_relaxed);
    }
    if (ok) count.requests.fetch_add(1, std::memory_order_relaxed);
  }
  if (fd >= 0) close(fd);
}

int client(const Options& o) {
  if (o.mode != "connect" && o.mode != "request") usage("--mode must be connect or request");
  std::atomic<bool> stop{false};
  std::vector<Counter> counts(static_cast<std::size_t>(o.threads));
  std::vector<std::thread> threads;
  for (int i = 0; i < o.threads; ++i)
    threads.emplace_back(load, std::cref(o), nth_cpu(i), std::cref(stop), std::ref(counts[i]));
  auto totals = [&] {
    std::array<std::uint64_t, 3> sum{};
    for (const auto& c : counts) {
      sum[0] += c.connections.load();
      sum[1] += c.requests.load();
      sum[2] += c.errors.load();
    }
    return sum;
  };
  using clock = std::chrono::steady_clock;
  std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup));
  auto before = totals();
  auto start = clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  auto after = totals();
  double elapsed = std::chrono::duration<double>(clock::now() - start).count();
  stop = true;
  for (auto& t : threads) t.join();
  std::uint64_t connections = after[0] - before[0], requests = after[1] - before[1];
  std::printf(
      "{\"mode\": \"%s\", \"threads\": %d, \"seconds\": %.3f, \"connections\": %llu, \"requests\": %llu, "
      "\"errors\": %llu, \"connections_per_s\": %.1f, \"requests_per_s\": %.1f}\n",
      o.mode.c_str(), o.threads, elapsed, static_cast<unsigned long long>(connections),
      static_cast<unsigned long long>(requests), static_cast<unsigned long long>(after[2]),
      static_cast<double>(connections) / elapsed, static_cast<double>(requests) / elapsed);
  return requests > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("no command");
  std::string command = argv[1];
  if (command == "server") return server(parse(argc, argv));
  if (command == "client") return client(parse(argc, argv));
  usage("unknown command " + command);
}
