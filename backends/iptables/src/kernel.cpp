// kernel.cpp - loading models with iptables-legacy-restore and ipset, and reading them back.
#include "kernel.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
// After glibc's netinet/in.h, which makes them leave out what it defines.
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "applied.hpp"
#include "fwengine/diagnostics.hpp"
#include "fwengine/netlink.hpp"

extern char** environ;

namespace fwe::iptables {

namespace {

// A kernel name in slot 1 or 2, or of our helpers: fwe-... (slot 0) names only the model's chains and
// sets, so in the kernel it is someone else's.
bool is_ours(std::string_view name) {
  const int slot = slot_of(name);
  return slot != kNoSlot && slot != 0;
}

const std::map<std::string_view, std::vector<std::string_view>> kBuiltins = {
    {"raw", {"PREROUTING", "OUTPUT"}},
    {"mangle", {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}},
    {"nat", {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}},
    {"filter", {"INPUT", "FORWARD", "OUTPUT"}}};

bool builtin(std::string_view table, std::string_view chain) {
  auto it = kBuiltins.find(table);
  return it != kBuiltins.end() && std::find(it->second.begin(), it->second.end(), chain) != it->second.end();
}

std::vector<std::string> lines(std::string_view text) {
  std::vector<std::string> out;
  std::istringstream in{std::string(text)};
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~SigpipeBlock() {
    // A write to a tool that exited early leaves a SIGPIPE pending: take it before unblocking.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    timespec zero{0, 0};
    while (sigtimedwait(&set, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_;
};

}  // namespace

ToolResult run_tool(const std::vector<std::string>& argv, std::string_view input) {
  int pipes[3][2];
  for (int made = 0; made < 3; ++made)
    if (pipe2(pipes[made], O_CLOEXEC) != 0) {
      const int error = errno;
      for (int i = 0; i < made; ++i) close(pipes[i][0]), close(pipes[i][1]);
      throw RuntimeError("cannot create a pipe: " + std::string(std::strerror(error)));
    }
  auto& in = pipes[0];
  auto& out = pipes[1];
  auto& err = pipes[2];
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  SigpipeBlock block;
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    close(err[0]);
    throw RuntimeError("cannot run " + argv[0] + ": " + std::strerror(rc) +
                       " (is the iptables/ipset package installed?)");
  }

  ToolResult result;
  std::size_t written = 0;
  int to_child = in[1];
  if (input.empty()) {
    close(to_child);
    to_child = -1;
  } else {
    fcntl(to_child, F_SETFL, O_NONBLOCK);
  }
  bool out_open = true, err_open = true;
  while (out_open || err_open || to_child >= 0) {
    pollfd fds[3];
    nfds_t n = 0;
    if (out_open) fds[n++] = {out[0], POLLIN, 0};
    if (err_open) fds[n++] = {err[0], POLLIN, 0};
    if (to_child >= 0) fds[n++] = {to_child, POLLOUT, 0};
    if (poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == to_child) {
        ssize_t k = write(to_child, input.data() + written, input.size() - written);
        if (k > 0) written += static_cast<std::size_t>(k);
        if (k < 0 && errno != EAGAIN && errno != EINTR) written = input.size();  // the tool stopped reading
        if (written == input.size()) {
          close(to_child);
          to_child = -1;
        }
        continue;
      }
      char buf[65536];
      ssize_t k = read(fds[i].fd, buf, sizeof buf);
      if (k > 0) {
        (fds[i].fd == out[0] ? result.out : result.err).append(buf, static_cast<std::size_t>(k));
      } else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
        (fds[i].fd == out[0] ? out_open : err_open) = false;
      }
    }
  }
  if (to_child >= 0) close(to_child);
  close(out[0]);
  close(err[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// ---- parsing --------------------------------------------------------------------------------------

const KernelChain* KernelTable::find(std::string_view chain) const {
  auto it = std::find_if(chains.begin(), chains.end(), [&](const KernelChain& c) { return c.name == chain; });
  return it == chains.end() ? nullptr : &*it;
}

std::vector<KernelTable> parse_save(std::string_view text) {
  std::vector<KernelTable> tables;
  KernelTable current;
  std::map<std::string, std::size_t> positions;  // rules seen per foreign chain
  std::map<std::string, std::size_t> index;      // our chains in current.chains
  for (const auto& raw : lines(text)) {
    std::string_view line = raw;
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '*') {
      current = KernelTable{std::string(line.substr(1)), {}, {}};
      positions.clear();
      index.clear();
      continue;
    }
    if (line == "COMMIT") {
      if (!current.chains.empty() || !current.hooks.empty()) tables.push_back(std::move(current));
      current = {};
      continue;
    }
    if (line[0] == ':') {
      auto name = line.substr(1, line.find(' ') - 1);
      if (is_ours(name)) {
        index[std::string(name)] = current.chains.size();
        current.chains.push_back({std::string(name), {}});
      }
      continue;
    }
    KernelRule rule;
    if (line[0] == '[') {
      auto close = line.find(']');
      if (close == std::string_view::npos) continue;
      std::string counters(line.substr(1, close - 1));
      std::sscanf(counters.c_str(), "%lu:%lu", &rule.packets, &rule.bytes);
      line = line.substr(std::min(line.size(), close + 2));
    }
    if (line.substr(0, 3) != "-A ") continue;
    line = line.substr(3);
    auto space = line.find(' ');
    std::string chain(line.substr(0, space));
    rule.spec = space == std::string_view::npos ? std::string{} : std::string(line.substr(space + 1));
    if (is_ours(chain)) {
      if (auto it = index.find(chain); it != index.end())
        current.chains[it->second].rules.push_back(std::move(rule));
      continue;
    }
    std::size_t position = ++positions[chain];
    // The jump outside quotes: a comment may name our chain too.
    const auto jump = jump_of(rule.spec);
    if (jump && builtin(current.name, chain) && is_ours(jump->target))
      current.hooks.push_back({chain, position, rule.spec, std::string(jump->target)});
  }
  return tables;
}

std::vector<TableDef> to_defs(const std::vector<KernelTable>& tables) {
  std::vector<TableDef> out;
  for (const auto& t : tables) {
    TableDef def{t.name, {}, {}};
    for (const auto& c : t.chains) {
      ChainDef chain{c.name, {}};
      for (const auto& r : c.rules) chain.rules.push_back(r.spec);
      def.chains.push_back(std::move(chain));
    }
    for (const auto& h : t.hooks)
      if (std::none_of(def.hooks.begin(), def.hooks.end(),
                       [&](const HookDef& d) { return d.builtin == h.builtin; }))
        def.hooks.push_back({h.builtin, h.target});
    out.push_back(std::move(def));
  }
  return out;
}

namespace {

// The kernel's chain is what we would write: same stamps in the same order, and nobody edited a rule.
bool unchanged(const KernelChain& have, const ChainDef& want) {
  if (have.rules.size() != want.rules.size()) return false;
  for (std::size_t i = 0; i < want.rules.size(); ++i) {
    // What render writes is what a save prints: the same text has the same stamps, and its content
    // hash is the stamp, as render made it.
    if (have.rules[i].spec == want.rules[i]) continue;
    if (stamp_of(want.rules[i]).empty()) return false;  // fwe-meta: compared as text
    std::string stamp = stamp_of(have.rules[i].spec);
    if (stamp.empty() || stamp != stamp_of(want.rules[i])) return false;
    if ("fwe:" + content_hash(have.name, have.rules[i].spec) != stamp) return false;
    // A rule moved within its policy: the same rule, but its comment must say where it is now.
    if (origin_stamp_of(have.rules[i].spec) != origin_stamp_of(want.rules[i])) return false;
  }
  return true;
}

}  // namespace

std::string transition(const std::vector<KernelTable>& now, const std::vector<TableDef>& want, bool full,
                       const std::vector<KernelTable>& carried) {
  std::string out;
  for (auto name : kTableOrder) {
    auto c_it =
        std::find_if(carried.begin(), carried.end(), [&](const KernelTable& t) { return t.name == name; });
    auto n_it = std::find_if(now.begin(), now.end(), [&](const KernelTable& t) { return t.name == name; });
    auto w_it = std::find_if(want.begin(), want.end(), [&](const TableDef& t) { return t.name == name; });
    const KernelTable* have = n_it == now.end() ? nullptr : &*n_it;
    const TableDef* wanted = w_it == want.end() ? nullptr : &*w_it;
    if (!have && !wanted) continue;

    std::string declare, fill, hooks, remove;
    std::set<std::string> kept;
    std::map<std::string_view, const KernelChain*> existing;
    if (have)
      for (const auto& c : have->chains) existing[c.name] = &c;
    if (wanted) {
      for (const auto& chain : wanted->chains) {
        kept.insert(chain.name);
        auto found = existing.find(chain.name);
        const KernelChain* k = found == existing.end() ? nullptr : found->second;
        if (!full && k && unchanged(*k, chain)) continue;
        declare += ':' + chain.name + " - [0:0]\n";
        const KernelChain* counted = c_it == carried.end() ? nullptr : c_it->find(chain.name);
        if (counted && counted->rules.size() != chain.rules.size()) counted = nullptr;
        for (std::size_t i = 0; i < chain.rules.size(); ++i) {
          if (counted)
            fill += '[' + std::to_string(counted->rules[i].packets) + ':' +
                    std::to_string(counted->rules[i].bytes) + "] ";
          fill += "-A " + chain.name + ' ' + chain.rules[i] + '\n';
        }
      }
    }
    // Hooks: keep one that is already first, exactly ours and alone of its kind; delete every other by
    // its spec, as positions read before the restore may have moved since (a rule someone inserted).
    // A copy of a kept hook would make its spec delete the kept one: then both go, and it comes anew.
    std::vector<const KernelHook*> satisfied;
    std::vector<HookDef> insert;
    auto copies = [&](const KernelHook& hook) {
      return std::count_if(have->hooks.begin(), have->hooks.end(), [&](const KernelHook& k) {
        return k.builtin == hook.builtin && k.spec == hook.spec;
      });
    };
    if (wanted) {
      for (const auto& h : wanted->hooks) {
        const KernelHook* match = nullptr;
        if (have)
          for (const auto& k : have->hooks)
            if (k.builtin == h.builtin && k.target == h.target && k.position == 1 &&
                k.spec == hook_spec(h.target) && copies(k) == 1)
              match = &k;
        if (match)
          satisfied.push_back(match);
        else
          insert.push_back(h);
      }
    }
    if (have) {
      std::vector<const KernelHook*> doomed;
      for (const auto& k : have->hooks)
        if (std::find(satisfied.begin(), satisfied.end(), &k) == satisfied.end()) doomed.push_back(&k);
      std::sort(doomed.begin(), doomed.end(), [](const KernelHook* a, const KernelHook* b) {
        return a->builtin != b->builtin ? a->builtin < b->builtin : a->position > b->position;
      });
      for (const auto* k : doomed) hooks += "-D " + k->builtin + ' ' + k->spec + '\n';
    }
    for (const auto& h : insert) hooks += "-I " + h.builtin + " 1 " + hook_spec(h.target) + '\n';
    if (have) {
      std::string flush, drop;
      for (const auto& c : have->chains)
        if (!kept.count(c.name)) {
          flush += "-F " + c.name + '\n';
          drop += "-X " + c.name + '\n';
        }
      remove = flush + drop;
    }
    std::string body = declare + fill + hooks + remove;
    if (!body.empty()) out += "*" + std::string(name) + "\n" + body + "COMMIT\n";
  }
  return out;
}

// ---- the record of what an apply left ----------------------------------------------------------------

namespace {

// Mixes bytes into a running digest, eight at a time (a table of 10,000 rules is ~5 MB).
std::uint64_t mix(std::uint64_t h, const unsigned char* bytes, std::size_t size) {
  constexpr std::uint64_t kPrime = 0x100000001b3ull;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    h = (std::rotl(h, 29) ^ word) * kPrime;
  }
  for (; i < size; ++i) h = (h ^ bytes[i]) * kPrime;
  return h;
}
std::uint64_t mix(std::uint64_t h, std::string_view text) {
  return mix(h, reinterpret_cast<const unsigned char*>(text.data()), text.size());
}

// A name the kernel pads with NULs to `size` bytes.
std::string_view padded(const void* bytes, std::size_t size) {
  const auto* text = static_cast<const char*>(bytes);
  return {text, strnlen(text, size)};
}

// Of a rule as IPT_SO_GET_ENTRIES gives it: its comment match's text, and its standard target's verdict
// (a jump's is the offset of its chain's first entry).
struct EntryView {
  std::string_view comment;
  std::optional<int> verdict;
};

// Whether a table as IPT_SO_GET_ENTRIES gives it (`entries`, `info` its sizes) holds `ours` as loaded:
// each chain of ours that it has is one of ours.chains, each of those has the model's rules by their
// comments (each rule's first comment match), and each built-in chain starts with our
// hooks into it, the last inserted first, and has no other jump into ours. This is what
// a record claims; another writer changing the tables while an apply runs (Docker inserting at the top
// of FORWARD, an admin appending to a chain of ours) makes it untrue. A rule replaced under the same
// comment is not seen.
template <typename GetInfo, typename Entry>
bool holds(const GetInfo& info, const unsigned char* entries, const TableDef& ours) {
  static constexpr std::string_view kHookChains[NF_INET_NUMHOOKS] = {"PREROUTING", "INPUT", "FORWARD",
                                                                     "OUTPUT", "POSTROUTING"};
  // Each chain's entries, its policy (a user chain's return) last.
  std::map<std::string_view, std::vector<EntryView>> chains;
  std::map<std::size_t, std::string_view> chain_starting_at;
  std::vector<EntryView>* chain = nullptr;
  for (std::size_t at = 0; at < info.size;) {
    const unsigned char* entry = entries + at;
    for (unsigned hook = 0; hook < NF_INET_NUMHOOKS; ++hook)
      if ((info.valid_hooks & (1u << hook)) != 0 && info.hook_entry[hook] == at)
        chain = &chains[kHookChains[hook]];
    std::uint16_t target_offset = 0, next_offset = 0;
    std::memcpy(&target_offset, entry + offsetof(Entry, target_offset), sizeof target_offset);
    std::memcpy(&next_offset, entry + offsetof(Entry, next_offset), sizeof next_offset);
    xt_entry_target target{};
    if (target_offset < sizeof(Entry) || target_offset + sizeof target > next_offset) return false;
    std::memcpy(&target, entry + target_offset, sizeof target);
    if (target.u.target_size < sizeof target || target_offset + target.u.target_size > next_offset)
      return false;
    const std::string_view target_name = padded(target.u.user.name, sizeof target.u.user.name);
    const unsigned char* target_data = entry + target_offset + sizeof target;
    const std::size_t target_data_size = target.u.target_size - sizeof target;
    if (target_name == XT_ERROR_TARGET) {  // a user chain's head, or the table's end
      const std::string_view name = padded(target_data, target_data_size);
      chain = &chains[name];
      chain_starting_at[at + next_offset] = name;
      at += next_offset;
      continue;
    }
    if (chain == nullptr) return false;
    EntryView view;
    for (std::size_t m = sizeof(Entry); m + sizeof(xt_entry_match) <= target_offset;) {
      xt_entry_match match{};
      std::memcpy(&match, entry + m, sizeof match);
      if (match.u.match_size < sizeof match || m + match.u.match_size > target_offset) return false;
      if (view.comment.empty() && padded(match.u.user.name, sizeof match.u.user.name) == "comment")
        view.comment = padded(entry + m + sizeof match, match.u.match_size - sizeof match);
      m += match.u.match_size;
    }
    if (target_name == XT_STANDARD_TARGET && target_data_size >= sizeof(int)) {
      int verdict = 0;
      std::memcpy(&verdict, target_data, sizeof verdict);
      view.verdict = verdict;
    }
    chain->push_back(view);
    at += next_offset;
  }

  for (const auto& [name, held] : chains)
    if (is_ours(name) && ours.find(name) == nullptr) return false;
  for (const auto& want : ours.chains) {
    const auto held = chains.find(want.name);
    if (held == chains.end() || held->second.size() != want.rules.size() + 1) return false;
    for (std::size_t i = 0; i < want.rules.size(); ++i)
      if (held->second[i].comment != comment_of(want.rules[i])) return false;
  }
  std::map<std::string_view, std::size_t> hooks_seen;
  for (auto hook = ours.hooks.rbegin(); hook != ours.hooks.rend(); ++hook) {
    const auto builtin = chains.find(hook->builtin);
    std::size_t& seen = hooks_seen[hook->builtin];
    if (builtin == chains.end() || seen + 1 >= builtin->second.size()) return false;
    const EntryView& jump = builtin->second[seen++];
    if (jump.comment != comment_of(hook_spec(hook->target)) || !jump.verdict || *jump.verdict < 0)
      return false;
    const auto target = chain_starting_at.find(static_cast<std::size_t>(*jump.verdict));
    if (target == chain_starting_at.end() || target->second != hook->target) return false;
  }
  // Below the hooks, no chain but ours jumps into ours: a save would read such a jump as a hook to
  // remove (a copy of one above it, say, without the gate).
  for (const auto& [name, entries_of] : chains) {
    if (is_ours(name)) continue;
    const auto hooks = hooks_seen.find(name);
    for (std::size_t i = hooks == hooks_seen.end() ? 0 : hooks->second; i < entries_of.size(); ++i) {
      const auto& verdict = entries_of[i].verdict;
      const auto target = verdict && *verdict >= 0
                              ? chain_starting_at.find(static_cast<std::size_t>(*verdict))
                              : chain_starting_at.end();
      if (target != chain_starting_at.end() && is_ours(target->second)) return false;
    }
  }
  return true;
}

// Mixes in one family's tables as the kernel gives them to iptables-legacy-save (IPT_SO_GET_ENTRIES),
// each rule's counters set to zero; false when a table could not be read or, given `ours` (the family's
// tables in their slot), one does not hold them (holds). Only the tables the kernel lists are asked for:
// asking for another would set it up in the namespace.
template <typename GetInfo, typename GetEntries, typename Entry>
bool mix_family(std::uint64_t& h, const char* names_path, int level, int sock, int info_option,
                int entries_option, const std::vector<TableDef>* ours) {
  // A table of ours that the kernel does not list is not loaded.
  auto lists_ours = [&](const std::vector<std::string>& tables) {
    return ours == nullptr || std::all_of(ours->begin(), ours->end(), [&](const TableDef& t) {
             return (t.chains.empty() && t.hooks.empty()) ||
                    std::find(tables.begin(), tables.end(), t.name) != tables.end();
           });
  };
  const int names = open(names_path, O_RDONLY | O_CLOEXEC);
  if (names < 0) return errno == ENOENT && lists_ours({});  // no table was ever set up here
  std::string listed(4096, '\0');
  const ssize_t n = read(names, listed.data(), listed.size());
  close(names);
  if (n < 0 || static_cast<std::size_t>(n) == listed.size()) return false;
  listed.resize(static_cast<std::size_t>(n));
  const std::vector<std::string> tables = lines(listed);
  if (!lists_ours(tables)) return false;
  h = mix(h, listed);
  for (const auto& table : tables) {
    GetInfo info{};
    if (table.size() >= sizeof info.name) return false;
    std::memcpy(info.name, table.data(), table.size());
    // A table replaced between the two calls changes size: the kernel then refuses the second (EAGAIN).
    for (int attempt = 0;; ++attempt) {
      socklen_t info_size = sizeof info;
      if (getsockopt(sock, level, info_option, &info, &info_size) != 0) return false;
      std::vector<std::uint64_t> storage((sizeof(GetEntries) + info.size + 7) / 8);
      auto* bytes = reinterpret_cast<unsigned char*>(storage.data());
      // The request's name and size, written in place: an object of the type (whose entries are a
      // zero-length array) is an extension clang refuses under -Wpedantic.
      static_assert(sizeof(GetEntries::name) == sizeof info.name &&
                    sizeof(GetEntries::size) == sizeof info.size);
      std::memcpy(bytes + offsetof(GetEntries, name), info.name, sizeof info.name);
      std::memcpy(bytes + offsetof(GetEntries, size), &info.size, sizeof info.size);
      auto entries_size = static_cast<socklen_t>(sizeof(GetEntries) + info.size);
      if (getsockopt(sock, level, entries_option, bytes, &entries_size) != 0) {
        if (errno == EAGAIN && attempt < 3) continue;
        return false;
      }
      unsigned char* entries = bytes + sizeof(GetEntries);
      for (std::size_t at = 0; at < info.size;) {
        std::uint16_t next = 0;
        std::memcpy(&next, entries + at + offsetof(Entry, next_offset), sizeof next);
        if (next < sizeof(Entry) || at + next > info.size) return false;
        std::memset(entries + at + offsetof(Entry, counters), 0, sizeof(xt_counters));
        at += next;
      }
      if (ours != nullptr) {
        const auto def =
            std::find_if(ours->begin(), ours->end(), [&](const TableDef& t) { return t.name == table; });
        static const TableDef kNone{};
        if (!holds<GetInfo, Entry>(info, entries, def != ours->end() ? *def : kNone)) return false;
      }
      h = mix(h, reinterpret_cast<const unsigned char*>(&info), sizeof info);
      h = mix(h, entries, info.size);
      break;
    }
  }
  return true;
}

// Our chains and hooks as iptables-legacy-save prints them once `tables` (in their slot) are loaded:
// each table's hooks were inserted at the top of their built-in chains, the last first.
std::string held_text(const std::vector<TableDef>& tables) {
  std::string out;
  for (const auto& table : tables) {
    if (table.chains.empty() && table.hooks.empty()) continue;
    out += '*' + table.name + '\n';
    for (const auto& chain : table.chains) out += ':' + chain.name + " - [0:0]\n";
    for (auto hook = table.hooks.rbegin(); hook != table.hooks.rend(); ++hook)
      out += "-A " + hook->builtin + ' ' + hook_spec(hook->target) + '\n';
    for (const auto& chain : table.chains)
      for (const auto& rule : chain.rules) out += "-A " + chain.name + ' ' + rule + '\n';
    out += "COMMIT\n";
  }
  return out;
}

}  // namespace

std::string tables_fingerprint(const std::array<std::vector<TableDef>, 2>* ours) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  bool whole = true;
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    const bool v4 = f == IpFamily::v4;
    // A kernel without IPv6 has no IPv6 table to hold anything.
    if (v4 || netlink::kernel_has_ipv6()) {
      const int sock = socket(v4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
      if (sock < 0) return {};
      whole = whole && (v4 ? mix_family<ipt_getinfo, ipt_get_entries, ipt_entry>(
                                 h, "/proc/thread-self/net/ip_tables_names", IPPROTO_IP, sock,
                                 IPT_SO_GET_INFO, IPT_SO_GET_ENTRIES, ours ? &(*ours)[0] : nullptr)
                           : mix_family<ip6t_getinfo, ip6t_get_entries, ip6t_entry>(
                                 h, "/proc/thread-self/net/ip6_tables_names", IPPROTO_IPV6, sock,
                                 IP6T_SO_GET_INFO, IP6T_SO_GET_ENTRIES, ours ? &(*ours)[1] : nullptr));
      close(sock);
    }
    h = mix(h, "|");
  }
  if (!whole) return {};
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

// ---- operations -----------------------------------------------------------------------------------

namespace {

constexpr const char* kSave[] = {"iptables-legacy-save", "ip6tables-legacy-save"};
constexpr const char* kRestore[] = {"iptables-legacy-restore", "ip6tables-legacy-restore"};

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (auto& c : text)
    if (c == '\n') c = ' ';
  return text;
}

// Whether the calling thread's namespace may hold rules of the family: false when the kernel has no
// IPv6 and it is asked about IPv6 (ip6tables cannot start), or when every table the kernel lists there
// holds nothing but its built-in chains' policies, and a save would print no rule and no chain. A host
// or namespace without any rule (a first apply at boot, one after a flush) is then read without
// starting the save's process (~10 ms). A table that is not listed is not asked about: asking would
// make the kernel set it up in the namespace.
bool may_hold_rules(IpFamily f) {
  const bool v4 = f == IpFamily::v4;
  if (!v4 && !netlink::kernel_has_ipv6()) return false;
  const int names =
      open(v4 ? "/proc/thread-self/net/ip_tables_names" : "/proc/thread-self/net/ip6_tables_names",
           O_RDONLY | O_CLOEXEC);
  if (names < 0) return true;  // the save says what there is
  std::string listed(256, '\0');
  const ssize_t n = read(names, listed.data(), listed.size());
  close(names);
  if (n < 0 || static_cast<std::size_t>(n) == listed.size()) return true;
  listed.resize(static_cast<std::size_t>(n));
  if (listed.empty()) return false;
  const int sock = socket(v4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (sock < 0) return true;
  bool rules = false;
  for (const auto& table : lines(listed)) {
    // ipt_getinfo and ip6t_getinfo are the same structure.
    ipt_getinfo info{};
    if (table.size() >= sizeof info.name) {
      rules = true;
      break;
    }
    std::memcpy(info.name, table.data(), table.size());
    socklen_t size = sizeof info;
    const int got = v4 ? getsockopt(sock, IPPROTO_IP, IPT_SO_GET_INFO, &info, &size)
                       : getsockopt(sock, IPPROTO_IPV6, IP6T_SO_GET_INFO, &info, &size);
    // An empty table: one entry per built-in chain (its policy) and the table's end.
    if (got != 0 || info.num_entries != static_cast<unsigned>(__builtin_popcount(info.valid_hooks)) + 1) {
      rules = true;
      break;
    }
  }
  close(sock);
  return rules;
}

std::vector<KernelTable> save(IpFamily f, bool counters = false) {
  if (!may_hold_rules(f)) return {};
  std::vector<std::string> argv{kSave[static_cast<int>(f)]};
  if (counters) argv.push_back("-c");
  auto r = run_tool(argv);
  if (r.status != 0) throw RuntimeError(argv[0] + " failed: " + trimmed(r.err));
  return parse_save(r.out);
}

// Which input line a failed iptables-restore names, and what that line came from (its stamp's line made
// absolute with the input's positions).
std::string explain_restore_failure(const std::string& tool, const ToolResult& r, const std::string& input,
                                    const stamps::Positions& positions) {
  std::size_t line = 0;
  for (const char* marker : {"Error occurred at line: ", "line "}) {
    auto at = r.err.find(marker);
    if (at != std::string::npos) {
      line = std::strtoul(r.err.c_str() + at + std::strlen(marker), nullptr, 10);
      if (line) break;
    }
  }
  std::string message = tool + " failed";
  auto all = lines(input);
  if (line > 0 && line <= all.size()) {
    const std::string& text = all[line - 1];
    message += " at input line " + std::to_string(line);
    if (text == "COMMIT") {
      std::string table;
      for (std::size_t i = line - 1; i-- > 0;)
        if (!all[i].empty() && all[i][0] == '*') {
          table = all[i].substr(1);
          break;
        }
      message += " (the kernel refused the " + table + " table)";
    } else {
      message += ": " + text;
      if (auto stamp = origin_stamp_of(text); !stamp.empty())
        message += "\n  from the rule at " + positions.absolute(stamp);
    }
  }
  return message + "\n  " + trimmed(r.err);
}

// Runs a restore (with `counters`, of the counters its rules carry); on failure returns the explanation,
// else empty.
std::string restore(IpFamily f, const std::string& input, const stamps::Positions& positions,
                    bool counters = false) {
  if (input.empty()) return {};
  std::string tool = kRestore[static_cast<int>(f)];
  std::vector<std::string> argv{tool, "-w", "10", "--noflush"};
  if (counters) argv.push_back("--counters");
  auto r = run_tool(argv, input);
  return r.status == 0 ? std::string{} : explain_restore_failure(tool, r, input, positions);
}

// The two families' restores (input by IpFamily) at once: each spends ~5 ms starting up before it waits
// for the xtables lock, which then orders their commits. Returns both failures, else empty.
std::string restore_both(const std::string (&input)[2], const stamps::Positions& positions,
                         bool counters = false) {
  auto v6 = std::async(std::launch::async, [&input, &positions, counters] {
    return restore(IpFamily::v6, input[1], positions, counters);
  });
  std::string problems = restore(IpFamily::v4, input[0], positions, counters);
  std::string v6_problem = v6.get();
  if (!v6_problem.empty()) problems += (problems.empty() ? "" : "\n") + v6_problem;
  return problems;
}

// Our sets (fwe0-, fwe1-, fwe2-), or the one named; without members, their names, types and families.
std::vector<KernelSet> our_sets(Ipset& ipset, bool members, const std::string& name = {}) {
  auto sets = ipset.list(members, name);
  std::erase_if(sets, [](const KernelSet& set) { return !is_ours(set.name); });
  return sets;
}

std::string destroy_sets(Ipset& ipset, const std::vector<std::string>& names) {
  std::string problems;
  for (const auto& name : names)
    if (auto r = ipset.destroy(name); !r.ok()) problems += "\n  " + r.message;
  return problems;
}

bool is_gate(std::string_view name) {
  return in_slot(name, 0) == kGateSet;
}

// One of the sets that match every address of a family (kAnySets), or nullptr.
const SetDef* any_set(std::string_view name) {
  for (const SetDef& any : kAnySets)
    if (any.name == name) return &any;
  return nullptr;
}

// Whether a set that matches every address of its family still does: it holds each of its networks.
bool whole(const SetDef& any, const KernelSet& set) {
  return std::all_of(any.members.begin(), any.members.end(), [&](std::string_view member) {
    return std::find(set.members.begin(), set.members.end(), member) != set.members.end();
  });
}

bool is_temporary(std::string_view name) {
  return name.substr(0, kTempSetPrefix.size()) == kTempSetPrefix;
}

// Everything of ours in the kernel, by kernel name.
struct Holdings {
  std::vector<KernelTable> tables[2];  // by IpFamily
  std::vector<KernelSet> sets;
  int active = kNoSlot;   // the slot in effect: 1 or 2 by its gate
  int also_on = kNoSlot;  // the other slot, when its gate holds members too (a hand edit)

  bool empty() const { return tables[0].empty() && tables[1].empty() && sets.empty(); }
};

// With `members`, every set's members; else only the gates'. Our chains are read from `held` where
// there is one (its fingerprint checked by the caller), else with the saves.
Holdings holdings(Ipset& ipset, bool members, bool counters = false, const HeldTables* held = nullptr) {
  Holdings h;
  if (held) {
    for (int i : {0, 1}) h.tables[i] = parse_save(held->text[i]);
    h.sets = our_sets(ipset, members);
  } else {
    // The two families' tables are read by two processes at once: each takes ~10 ms, mostly starting
    // up, and a save takes no lock.
    auto v6 = std::async(std::launch::async, [counters] { return save(IpFamily::v6, counters); });
    h.tables[static_cast<int>(IpFamily::v4)] = save(IpFamily::v4, counters);
    h.sets = our_sets(ipset, members);
    h.tables[static_cast<int>(IpFamily::v6)] = v6.get();
  }
  if (!members)
    for (auto& set : h.sets)
      if (is_gate(set.name) || any_set(set.name))
        for (auto& listed : our_sets(ipset, true, set.name)) set = std::move(listed);
  bool on[3] = {};
  // How whole a slot's ruleset is: 1 for any chain, 2 more per family whose load got as far as fwe-meta's
  // IR hash (the last chain of its filter table).
  int whole[3] = {};
  for (int slot : {1, 2})
    for (const auto& set : h.sets)
      on[slot] = on[slot] || (set.name == in_slot(kGateSet, slot) && !set.members.empty());
  for (const auto& tables : h.tables) {
    bool recorded[3] = {};
    for (const auto& t : tables)
      for (const auto& c : t.chains)
        if (int slot = slot_of(c.name); slot == 1 || slot == 2) {
          whole[slot] |= 1;
          if (t.name == "filter" && c.name == in_slot(kMetaChain, slot))
            for (const auto& rule : c.rules)
              recorded[slot] = recorded[slot] || !ir_hash_of(rule.spec).empty();
        }
    for (int slot : {1, 2}) whole[slot] += recorded[slot] ? 2 : 0;
  }
  // Were both gates on (a hand edit), the wholer ruleset is the one in effect (slot 1 on a tie): a switch
  // loads the other slot afresh and removes this one only once the new one is in effect.
  for (int slot : {1, 2})
    if (on[slot] && (h.active == kNoSlot || whole[slot] > whole[h.active])) h.active = slot;
  if (h.active != kNoSlot && on[3 - h.active]) h.also_on = 3 - h.active;
  return h;
}

// The chains, and the hooks jumping into them, of the slots `keep` accepts; with `as_model`, under the
// model's names.
template <typename Keep>
std::vector<KernelTable> select(const std::vector<KernelTable>& tables, Keep keep, bool as_model = false) {
  auto name = [&](std::string_view n) { return as_model ? in_slot(n, 0) : std::string(n); };
  auto spec = [&](std::string_view s) { return as_model ? spec_in_slot(s, 0) : std::string(s); };
  std::vector<KernelTable> out;
  for (const auto& t : tables) {
    KernelTable part{t.name, {}, {}};
    for (const auto& c : t.chains) {
      if (!keep(slot_of(c.name))) continue;
      KernelChain chain{name(c.name), {}};
      for (const auto& r : c.rules) chain.rules.push_back({spec(r.spec), r.packets, r.bytes});
      part.chains.push_back(std::move(chain));
    }
    for (const auto& h : t.hooks)
      if (keep(slot_of(h.target)))
        part.hooks.push_back({h.builtin, h.position, spec(h.spec), name(h.target)});
    if (!part.chains.empty() || !part.hooks.empty()) out.push_back(std::move(part));
  }
  return out;
}

std::vector<TableDef> placed(std::vector<TableDef> tables, int slot) {
  for (auto& t : tables) {
    for (auto& c : t.chains) {
      c.name = in_slot(c.name, slot);
      for (auto& rule : c.rules) rule = spec_in_slot(rule, slot);
    }
    for (auto& h : t.hooks) h.target = in_slot(h.target, slot);
  }
  return tables;
}

// The sets of the slots `keep` accepts (gates and the sets that match everything are no slot's).
template <typename Keep>
std::vector<std::string> set_names(const std::vector<KernelSet>& sets, Keep keep) {
  std::vector<std::string> names;
  for (const auto& set : sets)
    if (!is_gate(set.name) && slot_of(set.name) != kHelperSlot && keep(slot_of(set.name)))
      names.push_back(set.name);
  return names;
}

// iptables-restore input removing these hooks (by their spec, so that hooks inserted since they were
// read do not matter) and chains.
std::string removal_text(const std::vector<KernelTable>& tables) {
  std::string out;
  for (const auto& t : tables) {
    std::string hooks, flush, drop;
    for (const auto& h : t.hooks) hooks += "-D " + h.builtin + ' ' + h.spec + '\n';
    for (const auto& c : t.chains) {
      flush += "-F " + c.name + '\n';
      drop += "-X " + c.name + '\n';
    }
    out += '*' + t.name + '\n' + hooks + flush + drop + "COMMIT\n";
  }
  return out;
}

// Removes the chains and hooks of the slots `keep` accepts from both families, then their sets (and,
// with `temporaries`, our temporary sets); returns what could not be removed.
template <typename Keep>
std::string remove_slots(Ipset& ipset, const Holdings& h, Keep keep, bool temporaries = true) {
  const std::string removals[2] = {removal_text(select(h.tables[0], keep)),
                                   removal_text(select(h.tables[1], keep))};
  std::string problems = restore_both(removals, {});  // removals name no rule
  if (!problems.empty()) problems.insert(0, "\n");
  auto doomed = set_names(h.sets, keep);
  for (const auto& set : h.sets)
    if (temporaries && is_temporary(set.name)) doomed.push_back(set.name);
  return problems + destroy_sets(ipset, doomed);
}

// The comments of a run set's members, as the kernel lists them.
PackedStrings comments_of(const KernelSet& set) {
  PackedStrings out;
  out.reserve(set.extras.size());
  for (const auto& extra : set.extras) out.push_back(extra.comment);
  return out;
}

// One `*table ... COMMIT` section of restore input, and whether all it changes is fwe-meta (the IR hash
// and rules summary read_back reads: a record of what was loaded, not something packets meet).
struct TableStep {
  IpFamily family;
  std::string text;
  bool record_only = true;
};

std::vector<TableStep> table_steps(IpFamily family, const std::string& text, int slot) {
  const std::string meta = in_slot(kMetaChain, slot);
  std::vector<TableStep> steps;
  for (const auto& line : lines(text)) {
    if (line.empty()) continue;
    if (line[0] == '*') steps.push_back({family, {}});
    if (steps.empty()) continue;
    TableStep& step = steps.back();
    step.text += line + '\n';
    const bool about_meta = line == ':' + meta + " - [0:0]" || line.starts_with("-A " + meta + ' ');
    if (line[0] != '*' && line != "COMMIT" && !about_meta) step.record_only = false;
  }
  return steps;
}

// Replaces a set's members at one instant: a temporary set gets the new ones, then `ipset swap`. The
// temporary keeps the old members, to swap them back (undo_swap) or destroy them. Returns what went
// wrong, else empty.
// One per set: an apply may swap several, and each temporary holds its set's old members until the end.
std::string temporary_for(const SetDef& set) {
  return std::string(kTempSetPrefix) + hash16(set.name);
}
// (The set's kernel name is `name`, the model's name in the slot in effect.)
std::string swap_members(Ipset& ipset, const SetDef& set, const std::string& name) {
  const std::string temporary = temporary_for(set);
  ipset.destroy(temporary);  // an interrupted apply's; absent is fine
  auto r = ipset.create(set, temporary);
  if (r.ok()) r = ipset.swap(temporary, name);
  if (r.ok()) return {};
  ipset.destroy(temporary);
  return "ipset could not replace the members of " + set.name + ": " + r.message;
}
std::string undo_swap(Ipset& ipset, const SetDef& set, const std::string& name) {
  const auto r = ipset.swap(temporary_for(set), name);
  ipset.destroy(temporary_for(set));
  return r.ok() ? std::string{} : "ipset could not put back the members of " + set.name + ": " + r.message;
}

// Changes a set's members where it is (member_delta: adds first, then deletes), keeping the counters
// of the members that stay.
IpsetResult change_members(Ipset& ipset, const std::string& name, const MemberDelta& delta) {
  auto r = ipset.add_members(delta.add, name);
  if (r.ok()) r = ipset.delete_members(delta.remove, name);
  return r;
}
// Takes such a change back, also one that stopped half-way (re-adding and deleting are idempotent).
std::string unchange_members(Ipset& ipset, const std::string& name, const MemberDelta& delta) {
  auto r = ipset.add_members(delta.restore, name);
  if (r.ok()) r = ipset.delete_members(delta.withdraw, name);
  return r.ok() ? std::string{}
                : "ipset could not put back the members of " + in_slot(name, 0) + ": " + r.message;
}

// A set whose members change in place: by their difference where what the kernel holds is known (from
// the kernel's listing or the record of the last apply) and the difference is the smaller change,
// else by a swap with a temporary set.
struct SetChange {
  const SetDef* set;  // the model's
  std::string name;   // in the slot in effect
  std::optional<MemberDelta> delta;
};

// What fwe-meta records of the sets of a slot (both families), by the model's name: their digests.
std::map<std::string, std::string> recorded_sets(const Holdings& now, int slot) {
  std::map<std::string, std::string> out;
  for (const auto& tables : now.tables)
    for (const auto& table : select(
             tables, [&](int s) { return s == slot; }, true))
      if (const KernelChain* meta = table.find(kMetaChain))
        for (const auto& rule : meta->rules)
          if (auto [set, digest] = set_record_of(rule.spec); !set.empty()) out[set] = digest;
  return out;
}

// Applies a change in the slot in effect, so that only the changed chains are rewritten: the sets the
// new ruleset adds are made first; then per family, IPv4 first, the changed sets' members (added and
// deleted where they are, or swapped) and the changed tables (each COMMIT all or nothing), in turn; the
// sets it no longer has are destroyed last. With Atomicity::ruleset only a change that packets meet in
// one kernel step stays in the slot: per family the members of one set or one table, or nothing, and no
// set added or removed (a packet meets its own family's tables and sets only, so a step in each family
// is still one step for every packet: a rule of both families changed is one table restore in each).
// fwe-meta, which every IR change touches in both families, is only a record: it is brought up to date
// after those steps. Returns false, having changed nothing, when the change needs the other slot, or
// the kernel holds leftovers or the other slot's gate is on; throws when a step fails, having taken back
// the steps before it.
// Sets' members change only under the mark of state_dir (mark_changing), where there is one.
bool apply_in_place(Ipset& ipset, const Holdings& now, const std::vector<SetDef>& sets,
                    const std::vector<std::string>& digests, const std::vector<TableDef> (&want)[2],
                    const stamps::Positions& positions, const AppliedSets* applied,
                    const std::string& state_dir, Atomicity atomicity) {
  const bool one_step = atomicity == Atomicity::ruleset;
  const int slot = now.active;
  auto other = [&](int s) { return s != slot; };
  if (now.also_on > 0) return false;
  for (const auto& tables : now.tables)
    if (!select(tables, other).empty()) return false;
  for (const auto& set : now.sets)
    if ((!is_gate(set.name) && other(slot_of(set.name)) && slot_of(set.name) != kHelperSlot) ||
        is_temporary(set.name))
      return false;

  std::vector<TableStep> rule_steps, record_steps;
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    int i = static_cast<int>(f);
    auto text =
        transition(select(now.tables[i], [&](int s) { return s == slot; }), placed(want[i], slot), false);
    for (auto& step : table_steps(f, text, slot))
      (step.record_only ? record_steps : rule_steps).push_back(step);
  }
  std::array<int, 2> steps_of{};  // by IpFamily
  auto one_step_each = [&steps_of] { return steps_of[0] <= 1 && steps_of[1] <= 1; };
  for (const auto& step : rule_steps) ++steps_of[static_cast<int>(step.family)];
  if (one_step && !one_step_each()) return false;
  const auto have_names = set_names(now.sets, [&](int s) { return s == slot; });
  const std::set<std::string> have(have_names.begin(), have_names.end());
  std::vector<std::string> want_names;
  for (const auto& set : sets) want_names.push_back(in_slot(set.name, slot));
  const std::set<std::string> wanted(want_names.begin(), want_names.end());
  std::vector<const SetDef*> added;
  std::vector<std::string> removed;
  for (std::size_t i = 0; i < sets.size(); ++i)
    if (!have.contains(want_names[i])) added.push_back(&sets[i]);
  for (const auto& name : have_names)
    if (!wanted.contains(name)) removed.push_back(name);
  if (one_step && (!added.empty() || !removed.empty())) return false;
  std::vector<SetChange> changed_sets;
  // fwe-meta records each set's members as a digest: with a record for every set, no set is listed.
  const auto records = recorded_sets(now, slot);
  const bool recorded = std::all_of(sets.begin(), sets.end(), [&](const SetDef& set) {
    return !have.contains(in_slot(set.name, slot)) || records.contains(set.name);
  });
  const auto have_sets = sets.empty() || recorded ? std::vector<KernelSet>{} : our_sets(ipset, true);
  for (std::size_t i = 0; i < sets.size(); ++i) {
    const SetDef& set = sets[i];
    const std::string& name = want_names[i];
    if (!have.contains(name)) continue;  // made below
    if (recorded) {
      const std::string& digest = records.at(set.name);
      if (digest == digests[i]) continue;
      const SetDef* was = applied ? applied->find(set.name, digest) : nullptr;
      changed_sets.push_back({&set, name, was ? member_delta(*was, set) : std::nullopt});
      continue;
    }
    auto k =
        std::find_if(have_sets.begin(), have_sets.end(), [&](const KernelSet& s) { return s.name == name; });
    if (k == have_sets.end() || k->family != family_name(set.family) || k->type != set.type) return false;
    // A run set's comments name the source rules, which may have moved: compare members with them.
    PackedStrings kernel_comments = comments_of(*k);
    RuleStamps have_stamps, want_stamps;
    have_stamps.add_members(set.name, k->members, kernel_comments);
    want_stamps.add_members(set.name, set.members, set.comments);
    if (have_stamps != want_stamps)
      changed_sets.push_back(
          {&set, name,
           member_delta(SetDef{set.name, set.family, k->members, set.type, std::move(kernel_comments)},
                        set)});
  }
  for (const auto& change : changed_sets) ++steps_of[static_cast<int>(change.set->family)];
  if (one_step && !one_step_each()) return false;
  const bool marked = !changed_sets.empty() && !state_dir.empty();
  if (marked && !mark_changing(state_dir)) return false;

  // The steps in turn; a failure takes back the steps before it, last first, so that no table or family
  // is left with the new ruleset while another keeps the old.
  std::vector<std::function<std::string()>> undo;
  std::vector<const SetDef*> swapped;  // whose temporary holds the old members
  auto fail = [&](const std::string& failure) {
    std::string problems;
    for (auto step_back = undo.rbegin(); step_back != undo.rend(); ++step_back)
      if (auto problem = (*step_back)(); !problem.empty()) problems += "\n  " + problem;
    if (problems.empty()) {
      if (marked) unmark_changing(state_dir);
      throw RuntimeError(failure + "\n  nothing was changed: the previous ruleset is in place");
    }
    throw RuntimeError(failure + "\n  part of the change is in effect and could not be taken back:" +
                       problems + "\n  status reports the drift; apply again to finish the change");
  };
  for (const SetDef* set : added) {  // no rule refers to them yet
    const std::string name = in_slot(set->name, slot);
    if (const IpsetResult r = ipset.create(*set, name); !r.ok()) {
      ipset.destroy(name);  // made, but its members refused
      fail("ipset could not make " + set->name + ": " + r.message);
    }
    undo.push_back([&ipset, name] { return destroy_sets(ipset, {name}); });
  }
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    const int i = static_cast<int>(f);
    for (const auto& change : changed_sets) {
      if (change.set->family != f) continue;
      const SetDef& set = *change.set;
      if (change.delta) {
        // Taken back also when it stops half-way.
        undo.push_back([&ipset, &change] { return unchange_members(ipset, change.name, *change.delta); });
        const IpsetResult r = change_members(ipset, change.name, *change.delta);
        if (r.ok()) continue;
        if (!r.full()) fail("ipset could not change the members of " + set.name + ": " + r.message);
        // Its maxelem was set for the members it had when it was made: a fresh set takes the new ones,
        // once the old ones are back.
        if (auto problem = undo.back()(); !problem.empty())
          fail("ipset could not change the members of " + set.name + " (" + r.message +
               "), nor put the old ones back to swap in a fresh set: " + problem);
        undo.pop_back();
      }
      if (auto failure = swap_members(ipset, set, change.name); !failure.empty()) fail(failure);
      undo.push_back([&ipset, &change] { return undo_swap(ipset, *change.set, change.name); });
      swapped.push_back(&set);
    }
    bool family_undone = false;  // one undo puts back all of the family's tables
    for (const auto& step : rule_steps)
      if (step.family == f) {
        if (auto failure = restore(f, step.text, positions); !failure.empty()) fail(failure);
        if (std::exchange(family_undone, true)) continue;
        undo.push_back([&now, f, i, slot] {
          auto in_effect = [slot](int s) { return s == slot; };
          // What the kernel held. Its stamps count from the old first lines: an error putting it back shows
          // them relative (+D).
          return restore(
              f,
              transition(select(save(f, false), in_effect), to_defs(select(now.tables[i], in_effect)), false),
              {});
        });
      }
  }
  for (const SetDef* set : swapped) ipset.destroy(temporary_for(*set));  // the old members
  // No rule refers to them any more; one that could not go is a leftover the next apply removes.
  if (auto problems = destroy_sets(ipset, removed); !problems.empty())
    std::cerr << "fwengine: warning: the new ruleset is in effect, but sets it no longer uses could not be "
                 "removed (the next apply tries again):"
              << problems << '\n';
  std::string records_of[2];  // by IpFamily: both families' restores run at once
  for (const auto& step : record_steps) records_of[static_cast<int>(step.family)] += step.text;
  if (auto failure = restore_both(records_of, positions); !failure.empty())
    throw RuntimeError(
        failure +
        "\n  the new rules are in effect, but fwe-meta (the IR hash and rules summary that status "
        "reads) is not up to date: status reports drift until the next apply" +
        (marked ? std::string(", which loads the whole ruleset again") : std::string{}));
  return true;
}

// The counters of the chains in slot `from` that `want` has unchanged, under their names in slot `to`:
// a switch of slots keeps the hits of every rule it does not change.
std::vector<KernelTable> carried(const std::vector<KernelTable>& tables, const std::vector<TableDef>& want,
                                 int from, int to) {
  const auto have = select(tables, [from](int s) { return s == from; });
  std::vector<KernelTable> out;
  for (const auto& t : placed(want, from)) {
    auto h = std::find_if(have.begin(), have.end(), [&](const KernelTable& k) { return k.name == t.name; });
    if (h == have.end()) continue;
    KernelTable kept{t.name, {}, {}};
    for (const auto& chain : t.chains)
      if (const KernelChain* k = h->find(chain.name); k && unchanged(*k, chain))
        kept.chains.push_back({in_slot(chain.name, to), k->rules});
    out.push_back(std::move(kept));
  }
  return out;
}

// Loads the whole model into the slot not in effect, with its hooks switched off by its empty gate,
// then swaps the gates' contents: both families and every table change at once. Whatever the old slot
// (and an interrupted apply) left is removed afterwards; a kill before the swap leaves the old ruleset
// in effect, after it the new one.
// With carry, the chains it does not change keep their counters (read into `now`). Returns the slot now
// in effect, kNoSlot when some of the old ruleset could not be removed.
int switch_slots(Ipset& ipset, const Holdings& now, const std::vector<SetDef>& sets,
                 const std::vector<TableDef> (&want)[2], const stamps::Positions& positions, bool carry) {
  const int next = now.active == 1 ? 2 : 1;
  const bool gate_on = now.active == 1 || now.active == 2;
  auto in_next = [&](int s) { return s == next; };
  // With no gate on, neither slot is in effect: the other's leftovers go too, as its gate is filled below.
  auto stale = [&](int s) { return s == next || (!gate_on && s == 3 - next); };
  // A ruleset switched on by hand beside the one in effect goes first, whatever happens next.
  const std::string unchanged =
      now.also_on == next ? "the previous ruleset is in place (the one switched on beside it is not)"
                          : "nothing was changed: the previous ruleset is in place";
  if (auto problems = remove_slots(ipset, now, stale); !problems.empty())
    throw RuntimeError("cannot remove what an interrupted apply left in " +
                       (gate_on ? "slot " + std::to_string(next) : std::string("slots 1 and 2")) + ":" +
                       problems + "\n  " + unchanged);
  const std::string gate = in_slot(kGateSet, next);
  auto undo = [&](const std::string& failure) {
    // The failure is what the user must read: one while undoing it is only added to it.
    std::string problems;
    try {
      problems = remove_slots(ipset, holdings(ipset, false), in_next);
    } catch (const RuntimeError& e) {
      problems = "\n  " + std::string(e.what());
    }
    throw RuntimeError(
        failure +
        (problems.empty()
             ? "\n  " + unchanged
             : "\n  the previous ruleset is in place, but removing the new one failed:" + problems));
  };

  IpsetResult r;
  // A next gate that holds members (switched on by hand) would switch each table on as it loads.
  if (now.also_on == next) r = ipset.flush(gate);
  if (!r.ok()) undo(r.message);
  for (const SetDef& any : kAnySets)
    if (r.ok()) r = ipset.create(any, any.name);
  for (int slot : {1, 2})
    if (r.ok()) r = ipset.create_list(in_slot(kGateSet, slot));
  for (const SetDef& set : sets)
    if (r.ok()) r = ipset.create(set, in_slot(set.name, next));
  if (!r.ok()) undo(r.message);
  std::string loads[2];
  for (int i : {0, 1})
    loads[i] = transition(
        {}, placed(want[i], next), true,
        gate_on && carry ? carried(now.tables[i], want[i], now.active, next) : std::vector<KernelTable>{});
  if (auto failure = restore_both(loads, positions, true); !failure.empty()) undo(failure);

  if (gate_on) {
    r = ipset.swap(in_slot(kGateSet, now.active), gate);
  } else {
    // No gate is on yet: fill the other slot's (no hook matches it, its leftovers went above) and swap
    // it in, so that both families start at once. A temporary list:set would cost its destroy, which
    // waits for an RCU grace period (~13 ms).
    const std::string spare = in_slot(kGateSet, 3 - next);
    for (const SetDef& any : kAnySets)
      if (r.ok()) r = ipset.add_to_list(spare, any.name);
    if (r.ok()) r = ipset.swap(spare, gate);
    if (!r.ok()) ipset.destroy(spare);  // half filled, it would read as the gate of a slot in effect
  }
  if (!r.ok()) undo("cannot switch the new ruleset on: " + r.message);

  // What was read before the switch: the old slot's hooks are found by their spec, the temporaries
  // and the stale slots went above.
  if (auto problems = remove_slots(
          ipset, now, [&](int s) { return !stale(s); }, false);
      !problems.empty()) {
    std::cerr << "fwengine: warning: the new ruleset is in effect, but some of the old one could not be "
                 "removed (the next apply tries again):"
              << problems << '\n';
    return kNoSlot;
  }
  return next;
}

// The gate of the slot in effect holds every set that matches everything: one it lacks (an apply
// killed while it filled the gate, or a hand edit) lets that family bypass the ruleset, and a switch
// would pass the lack on to the next gate.
void top_up_gate(Ipset& ipset, const Holdings& now) {
  const std::string gate = in_slot(kGateSet, now.active);
  for (const auto& set : now.sets)
    if (set.name == gate)
      for (const SetDef& any : kAnySets) {
        const auto listed = std::find_if(now.sets.begin(), now.sets.end(),
                                         [&](const KernelSet& k) { return k.name == any.name; });
        const bool gated = std::find(set.members.begin(), set.members.end(), any.name) != set.members.end();
        if (gated && listed != now.sets.end() && whole(any, *listed)) continue;
        // (Re)creating adds what it lacks: create and add take what exists already.
        IpsetResult r = ipset.create(any, any.name);
        if (r.ok() && !gated) r = ipset.add_to_list(gate, any.name);
        if (!r.ok())
          throw RuntimeError("cannot put " + any.name + " back into " + gate + ": " + r.message +
                             "\n  nothing was changed: the ruleset in effect stays, without that family");
      }
}

}  // namespace

void apply_model(const Model& model, std::string_view ir_hash, bool full, const std::string& state_dir,
                 Atomicity atomicity) {
  Ipset ipset;
  std::optional<HeldTables> held;
  if (!full && !state_dir.empty()) held = HeldTables::load(state_dir);
  // The kernel's tables are fingerprinted (~15 ms at 10,000 rules) while the record is read.
  std::future<std::string> fingerprint;
  if (held) fingerprint = std::async(std::launch::async, [] { return tables_fingerprint(); });
  // With counters: a switch of slots carries those of the chains it does not change (not a full apply,
  // which starts every counter from zero, as a full replace does in nft).
  Holdings now = holdings(ipset, false, true, held ? &*held : nullptr);
  if (held && fingerprint.get() != held->fingerprint) {
    held.reset();
    now = holdings(ipset, false, true);
  }
  if (now.active == 1 || now.active == 2) top_up_gate(ipset, now);
  const std::vector<std::string> digests = set_digests(model.sets);
  std::vector<TableDef> want[2];
  for (IpFamily f : {IpFamily::v4, IpFamily::v6})
    want[static_cast<int>(f)] = with_meta(model, f, ir_hash, digests);
  stamps::Positions positions;
  for (const auto& first : model.first_lines) positions.add(first.key, first.text);
  // An apply that stopped half-way through changing members in place leaves fwe-meta's digests untrue.
  const bool interrupted = !state_dir.empty() && changing(state_dir);
  std::optional<AppliedSets> applied;
  if (!full && !interrupted && !state_dir.empty()) applied = AppliedSets::load(state_dir);
  int in_effect = now.active;
  if (full || interrupted || (now.active != 1 && now.active != 2) ||
      !apply_in_place(ipset, now, model.sets, digests, want, positions, applied ? &*applied : nullptr,
                      state_dir, atomicity)) {
    // The record has no counters for the switch to carry.
    if (held) now = holdings(ipset, false, true);
    in_effect = switch_slots(ipset, now, model.sets, want, positions, !full);
  }
  if (state_dir.empty()) return;
  // What the kernel holds of ours is now the model in its slot, unless some of the old ruleset stayed or
  // another writer changed ours (or put a rule above a hook) while this apply ran; the tables are
  // fingerprinted, and that checked, while the record's text is made.
  HeldTables record;
  if (in_effect != kNoSlot) {
    const std::array<std::vector<TableDef>, 2> ours = {placed(want[0], in_effect),
                                                       placed(want[1], in_effect)};
    auto checked = std::async(std::launch::async, [&ours] { return tables_fingerprint(&ours); });
    for (int i : {0, 1}) record.text[i] = held_text(ours[i]);
    record.fingerprint = checked.get();
  }
  if (record.fingerprint.empty())
    HeldTables::forget(state_dir);
  else
    record.save(state_dir);
  unmark_changing(state_dir);
  // The record is written again only where it lacks a set as the kernel now holds it.
  bool up_to_date = applied.has_value();
  for (std::size_t i = 0; i < model.sets.size() && up_to_date; ++i)
    up_to_date = applied->find(model.sets[i].name, digests[i]) != nullptr;
  if (!up_to_date) AppliedSets::save(state_dir, model.sets, digests);
}

void flush_all() {
  Ipset ipset;
  const Holdings now = holdings(ipset, false);
  std::string problems = remove_slots(ipset, now, [](int s) { return s >= 0; });
  // Then the gates, and last what they hold.
  std::vector<std::string> gates, any;
  for (const auto& set : now.sets) (is_gate(set.name) ? gates : any).push_back(set.name);
  std::erase_if(any,
                [](const std::string& name) { return slot_of(name) != kHelperSlot || is_temporary(name); });
  problems += destroy_sets(ipset, gates);
  // A list:set lets go of its members only after an RCU grace period: until then they are "in use".
  for (int attempt = 0; attempt < 100 && !any.empty(); ++attempt) {
    if (attempt > 0) usleep(10'000);
    std::erase_if(any, [&](const std::string& name) { return !ipset.destroy(name).busy(); });
  }
  problems += destroy_sets(ipset, any);
  if (!problems.empty()) throw RuntimeError("flush failed:" + problems);
}

KernelState read_kernel() {
  KernelState state;
  Ipset ipset;
  const Holdings k = holdings(ipset, true, true);
  state.present = !k.empty();
  const int slot = k.active;
  auto in_effect = [&](int s) { return s == slot; };
  std::string text = "# ipset restore -exist\n";
  stamps::Positions positions;  // fwe-meta's first lines, for the counters' stamps
  if (slot > 0) text += gate_text(kGateSet, true);
  for (const auto& set : k.sets) {
    if (is_gate(set.name) || !in_effect(slot_of(set.name))) continue;
    SetDef def{in_slot(set.name, 0), set.family == "inet6" ? IpFamily::v6 : IpFamily::v4, set.members,
               set.type};
    for (std::size_t i = 0; i < set.extras.size(); ++i) {
      def.comments.push_back(set.extras[i].comment);
      RuleCounter counter;  // a member of a merged run: the hits of its source rule
      counter.chain = "ipset/" + def.name;
      counter.rule = static_cast<std::int32_t>(i);
      counter.where = set.extras[i].comment;  // a stamp until made absolute below
      counter.packets = set.extras[i].packets;
      counter.bytes = set.extras[i].bytes;
      state.counters.push_back(std::move(counter));
    }
    text += ipset_text({def});
  }
  // The other slot's ruleset, when its gate is on too, is reported as such below, not as leftovers.
  auto leftover = [&](int s) { return !in_effect(s) && s != k.also_on; };
  std::size_t leftover_chains = 0, leftover_sets = set_names(k.sets, leftover).size();
  std::string family_hash[2];  // by IpFamily: the IR hash each family's fwe-meta records
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    const std::string family = f == IpFamily::v4 ? "ipv4" : "ipv6";
    text += f == IpFamily::v4 ? "# iptables-legacy-restore --noflush\n"
                              : "# ip6tables-legacy-restore --noflush\n";
    for (const auto& table : select(k.tables[static_cast<int>(f)], leftover))
      leftover_chains += table.chains.size();
    RuleStamps stamps;                          // for the rules summary in fwe-meta
    std::deque<PackedStrings> member_comments;  // the comments of the run sets there, which stamps holds
    for (const auto& set : k.sets)
      if (set.type == kRunSet && in_effect(slot_of(set.name)) && set.family == family_name(f))
        stamps.add_members(in_slot(set.name, 0), set.members, member_comments.emplace_back(comments_of(set)));
    std::string applied_summary;
    std::map<std::string, std::string> recorded_sets;  // fwe-meta's digests of the sets' members
    for (const auto& table : select(k.tables[static_cast<int>(f)], in_effect, true)) {
      text += '*' + table.name + '\n';
      for (const auto& c : table.chains) text += ':' + c.name + " - [0:0]\n";
      for (const auto& c : table.chains) {
        for (std::size_t i = 0; i < c.rules.size(); ++i) {
          const auto& rule = c.rules[i];
          text += "-A " + c.name + ' ' + rule.spec + '\n';
          const std::string label = family + " " + table.name + " " + c.name + " #" + std::to_string(i + 1);
          if (c.name == kMetaChain) {
            if (auto hash = ir_hash_of(rule.spec); !hash.empty()) {
              if (f == IpFamily::v4 && state.ir_hash.empty()) state.ir_hash = hash;
              family_hash[static_cast<int>(f)] = hash;
              applied_summary = summary_of(rule.spec);
            } else if (auto [set, digest] = set_record_of(rule.spec); !set.empty()) {
              recorded_sets[set] = digest;
            } else if (auto first = first_line_of(rule.spec); !first.key.empty()) {
              positions.add(first.key, first.text);
            }
            continue;
          }
          RuleCounter counter;
          counter.chain = family + "/" + table.name + "/" + c.name;
          counter.rule = static_cast<std::int32_t>(i);
          counter.where = origin_stamp_of(rule.spec);  // a stamp until made absolute below
          counter.packets = rule.packets;
          counter.bytes = rule.bytes;
          state.counters.push_back(std::move(counter));
          std::string stamp = stamp_of(rule.spec);
          stamps.chain(table.name + '/' + c.name).push_back(stamp);
          if (stamp.empty())
            state.drift.push_back(label + " is not fwengine's (no stamp): " + rule.spec);
          else if (stamp != "fwe:" + content_hash(c.name, rule.spec))
            state.drift.push_back(label + " was changed since it was loaded: " + rule.spec);
        }
      }
      for (const auto& h : table.hooks) {
        text += "-I " + h.builtin + " 1 " + h.spec + '\n';
        // Leftover hooks above ours are counted in the leftovers, not here.
        std::size_t position = h.position;
        for (const auto& t : k.tables[static_cast<int>(f)])
          if (t.name == table.name)
            for (const auto& other : t.hooks)
              if (other.builtin == h.builtin && other.position < h.position &&
                  !in_effect(slot_of(other.target)))
                --position;
        if (position != 1)
          state.drift.push_back(family + " " + table.name + " " + h.builtin + ": the jump to " + h.target +
                                " is rule " + std::to_string(position) + ", not the first");
      }
      for (const auto& c : table.chains) {
        // A stage chain (fwe-<stage>) that nothing jumps to filters nothing.
        static const std::set<std::string> kStageChains = [] {
          std::set<std::string> names;
          for (auto stage : ir::stage_names()) names.insert(std::string(kPrefix) + std::string(stage));
          return names;
        }();
        if (kStageChains.count(c.name) &&
            std::none_of(table.hooks.begin(), table.hooks.end(),
                         [&](const KernelHook& h) { return h.target == c.name; }))
          state.drift.push_back(family + " " + table.name + ": nothing jumps to " + c.name);
      }
      text += "COMMIT\n";
    }
    for (const auto& set : k.sets) {  // a run set's members are rules: the summary above covers them
      if (!in_effect(slot_of(set.name)) || is_gate(set.name) || set.family != family_name(f) ||
          set.type == kRunSet)
        continue;
      const auto record = recorded_sets.find(in_slot(set.name, 0));
      if (record != recorded_sets.end() && record->second != members_digest(set.members, comments_of(set)))
        state.drift.push_back("ipset " + record->first + ": members were added or removed since apply");
    }
    if (const std::string now_summary = stamps.summary();
        !applied_summary.empty() && applied_summary != now_summary)
      state.drift.push_back(family + ": rules were deleted, added or moved since apply (" + applied_summary +
                            " applied, " + now_summary + " now)");
  }
  // Each family's record is written with its own tables: an apply stopped between the families leaves
  // one family's rules (or record) new and the other's old, which each family's summary alone cannot show.
  if (!family_hash[0].empty() && !family_hash[1].empty() && family_hash[0] != family_hash[1])
    state.drift.push_back("ipv4 holds IR " + family_hash[0].substr(0, 16) + ", ipv6 IR " +
                          family_hash[1].substr(0, 16) +
                          ": an apply stopped between the two families; the next apply finishes the change");
  bool slot_loaded = false, other_loaded = false;  // the slot whose gate is on holds chains; the other too
  for (const auto& tables : k.tables) {
    slot_loaded = slot_loaded || !select(tables, in_effect).empty();
    other_loaded = other_loaded || !select(tables, [&](int s) { return s == k.also_on; }).empty();
  }
  if (k.also_on > 0) {
    const std::string other = std::to_string(k.also_on);
    state.drift.push_back(other_loaded
                              ? "ipsets fwe1-gate and fwe2-gate both hold members: slot " + other +
                                    "'s ruleset is switched on beside the one in effect, and packets pass "
                                    "through both; the next apply loads slot " +
                                    other + " afresh and leaves one slot on"
                              : "ipset fwe" + other + "-gate holds members, but slot " + other +
                                    " holds no ruleset; the next apply loads slot " + other +
                                    " afresh and leaves one slot on");
  }
  if (slot > 0 && !slot_loaded)
    state.drift.push_back(
        "an apply was interrupted before its switch: no ruleset of fwengine's is switched on; "
        "the next apply switches one on");
  for (const auto& set : k.sets) {
    if (slot > 0 && slot_loaded && set.name == in_slot(kGateSet, slot))
      for (const SetDef& any : kAnySets)
        if (std::find(set.members.begin(), set.members.end(), any.name) == set.members.end())
          state.drift.push_back("ipset " + set.name + " lacks " + any.name + ": " +
                                (any.family == IpFamily::v4 ? "IPv4" : "IPv6") +
                                " bypasses the ruleset; the next apply puts it back");
    if (const SetDef* any = any_set(set.name); any && !whole(*any, set))
      state.drift.push_back("ipset " + set.name + " no longer holds every " +
                            (any->family == IpFamily::v4 ? "IPv4" : "IPv6") +
                            " address: what it lacks bypasses the ruleset; the next apply puts it back");
  }
  if (leftover_chains + leftover_sets > 0)
    state.drift.push_back("an interrupted apply (or an older fwengine) left " +
                          std::to_string(leftover_chains) + " chains and " + std::to_string(leftover_sets) +
                          " ipsets beside the ruleset in effect; the next apply removes them");
  for (auto& counter : state.counters) {
    counter.origin.policy = positions.absolute(counter.where);
    counter.where = std::string(stamps::where_of(counter.origin.policy));
  }
  state.text = std::move(text);
  return state;
}

}  // namespace fwe::iptables
