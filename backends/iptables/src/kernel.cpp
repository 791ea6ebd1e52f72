// kernel.cpp - loading models with iptables-legacy-restore and ipset, and reading them back.
#include "kernel.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "fwengine/diagnostics.hpp"

extern char** environ;

namespace fwe::iptables {

namespace {

bool ours(std::string_view name) {
  return name.substr(0, kPrefix.size()) == kPrefix;
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

std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> out;
  std::istringstream in{std::string(text)};
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::vector<std::string> lines(std::string_view text) {
  std::vector<std::string> out;
  std::istringstream in{std::string(text)};
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The chain a rule jumps or goes to, or empty.
std::string target_of(std::string_view spec) {
  auto w = words(spec);
  for (std::size_t i = 0; i + 1 < w.size(); ++i)
    if (w[i] == "-j" || w[i] == "-g") return w[i + 1];
  return {};
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
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0)
    throw RuntimeError("cannot create a pipe: " + std::string(std::strerror(errno)));
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
    throw RuntimeError("cannot create a pipe: " + std::string(std::strerror(errno)));
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
      if (ours(name)) {
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
    if (ours(chain)) {
      if (auto it = index.find(chain); it != index.end())
        current.chains[it->second].rules.push_back(std::move(rule));
      continue;
    }
    std::size_t position = ++positions[chain];
    std::string target = target_of(rule.spec);
    if (builtin(current.name, chain) && ours(target))
      current.hooks.push_back({chain, position, rule.spec, target});
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
    if (stamp_of(want.rules[i]).empty()) {  // fwe-meta: compared as text
      if (have.rules[i].spec != want.rules[i]) return false;
      continue;
    }
    std::string stamp = stamp_of(have.rules[i].spec);
    if (stamp.empty() || stamp != stamp_of(want.rules[i])) return false;
    if ("fwe:" + content_hash(have.name, have.rules[i].spec) != stamp) return false;
  }
  return true;
}

}  // namespace

std::string transition(const std::vector<KernelTable>& now, const std::vector<TableDef>& want, bool full) {
  std::string out;
  for (auto name : kTableOrder) {
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
        for (const auto& rule : chain.rules) fill += "-A " + chain.name + ' ' + rule + '\n';
      }
    }
    // Hooks: keep one that is already first and exactly ours; delete every other, bottom up.
    std::vector<const KernelHook*> satisfied;
    std::vector<HookDef> insert;
    if (wanted) {
      for (const auto& h : wanted->hooks) {
        const KernelHook* match = nullptr;
        if (have)
          for (const auto& k : have->hooks)
            if (k.builtin == h.builtin && k.target == h.target && k.position == 1 &&
                k.spec == hook_spec(h.target))
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
      for (const auto* k : doomed) hooks += "-D " + k->builtin + ' ' + std::to_string(k->position) + '\n';
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

std::vector<KernelSet> parse_ipset_save(std::string_view text) {
  std::vector<KernelSet> sets;
  std::map<std::string, std::size_t> index;
  for (const auto& line : lines(text)) {
    auto w = words(line);
    if (w.size() < 3 || !ours(w[1])) continue;
    if (w[0] == "create") {
      KernelSet set{w[1], {}, {}};
      for (std::size_t i = 2; i + 1 < w.size(); ++i)
        if (w[i] == "family") set.family = w[i + 1];
      index[set.name] = sets.size();
      sets.push_back(std::move(set));
    } else if (w[0] == "add") {
      if (auto it = index.find(w[1]); it != index.end()) sets[it->second].members.push_back(w[2]);
    }
  }
  return sets;
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

std::vector<KernelTable> save(IpFamily f, bool counters = false) {
  std::vector<std::string> argv{kSave[static_cast<int>(f)]};
  if (counters) argv.push_back("-c");
  auto r = run_tool(argv);
  if (r.status != 0) throw RuntimeError(argv[0] + " failed: " + trimmed(r.err));
  return parse_save(r.out);
}

// Which input line a failed iptables-restore names, and what that line came from.
std::string explain_restore_failure(const std::string& tool, const ToolResult& r, const std::string& input) {
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
      if (auto where = where_of(text); !where.empty()) message += "\n  from the rule at " + where;
    }
  }
  return message + "\n  " + trimmed(r.err);
}

// Runs a restore; on failure returns the explanation, else empty.
std::string restore(IpFamily f, const std::string& input) {
  if (input.empty()) return {};
  std::string tool = kRestore[static_cast<int>(f)];
  auto r = run_tool({tool, "-w", "10", "--noflush"}, input);
  return r.status == 0 ? std::string{} : explain_restore_failure(tool, r, input);
}

std::vector<KernelSet> our_sets() {
  auto r = run_tool({"ipset", "save"});
  if (r.status != 0) throw RuntimeError("ipset save failed: " + trimmed(r.err));
  return parse_ipset_save(r.out);
}

std::string destroy_sets(const std::vector<std::string>& names) {
  std::string problems;
  for (const auto& name : names) {
    auto r = run_tool({"ipset", "destroy", name});
    if (r.status != 0) problems += "\n  ipset destroy " + name + ": " + trimmed(r.err);
  }
  return problems;
}

// Loads the sets: new ones under their names, changed ones under a temporary name then swapped in, so a
// set in use is never empty. Remembers how to undo that.
class SetUpdate {
 public:
  void load(const std::vector<SetDef>& sets, const std::vector<KernelSet>& before, bool full) {
    std::vector<std::string> stale;
    for (const auto& k : before)
      if (k.name.substr(0, kTempSetPrefix.size()) == kTempSetPrefix) stale.push_back(k.name);
    destroy_sets(stale);

    std::string input;
    std::vector<std::pair<std::string, std::string>> swaps;  // temporary, final
    for (const auto& set : sets) {
      auto old =
          std::find_if(before.begin(), before.end(), [&](const KernelSet& k) { return k.name == set.name; });
      if (old != before.end() && old->family == family_name(set.family) && !full) {
        std::vector<std::string> a = old->members, b = set.members;
        std::sort(a.begin(), a.end());
        std::sort(b.begin(), b.end());
        if (a == b) continue;
      }
      std::string name = old == before.end() ? set.name : std::string(kTempSetPrefix) + hash16(set.name);
      input += ipset_create_line(set, name) + '\n';
      for (const auto& m : set.members) input += "add " + name + ' ' + m + '\n';
      if (old == before.end())
        created_.push_back(set.name);
      else
        swaps.emplace_back(name, set.name);
    }
    if (input.empty()) return;
    auto r = run_tool({"ipset", "-exist", "restore"}, input);
    if (r.status != 0) {
      std::string message = "ipset restore failed: " + trimmed(r.err);
      for (const auto& [temp, final_name] : swaps) temporaries_.push_back(temp);
      undo();
      throw RuntimeError(message);
    }
    for (const auto& [temp, final_name] : swaps) {
      temporaries_.push_back(temp);
      auto s = run_tool({"ipset", "swap", temp, final_name});
      if (s.status != 0) {
        std::string message = "ipset swap " + temp + " " + final_name + " failed: " + trimmed(s.err);
        undo();
        throw RuntimeError(message);
      }
      swapped_.emplace_back(temp, final_name);
    }
  }

  // Puts the old contents back and removes what load created.
  void undo() {
    for (const auto& [temp, final_name] : swapped_) run_tool({"ipset", "swap", temp, final_name});
    swapped_.clear();
    destroy_sets(temporaries_);
    destroy_sets(created_);
    temporaries_.clear();
    created_.clear();
  }

  // After success: the temporaries hold the old contents.
  std::string finish() {
    auto problems = destroy_sets(temporaries_);
    temporaries_.clear();
    swapped_.clear();
    created_.clear();
    return problems;
  }

 private:
  std::vector<std::string> created_, temporaries_;
  std::vector<std::pair<std::string, std::string>> swapped_;
};

}  // namespace

void apply_model(const Model& model, std::string_view ir_hash, bool full) {
  const std::vector<KernelTable> before[2] = {save(IpFamily::v4), save(IpFamily::v6)};
  const auto sets_before = our_sets();

  SetUpdate sets;
  sets.load(model.sets, sets_before, full);

  std::vector<IpFamily> loaded;
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    const auto& now = before[static_cast<int>(f)];
    std::string failure = restore(f, transition(now, with_meta(model.family(f), ir_hash), full));
    if (failure.empty()) {
      loaded.push_back(f);
      continue;
    }
    // iptables-restore commits table by table: put back every table of every family we touched.
    loaded.push_back(f);
    std::string rollback_problems;
    for (IpFamily back : loaded) {
      try {
        auto undo = transition(save(back), to_defs(before[static_cast<int>(back)]), false);
        if (auto problem = restore(back, undo); !problem.empty()) rollback_problems += "\n" + problem;
      } catch (const RuntimeError& e) {
        rollback_problems += "\n" + e.msg;
      }
    }
    sets.undo();
    throw RuntimeError(failure +
                       (rollback_problems.empty()
                            ? "\n  the previous ruleset is back in place"
                            : "\n  restoring the previous ruleset failed too:" + rollback_problems));
  }

  std::vector<std::string> unused;
  for (const auto& k : sets_before)
    if (k.name.substr(0, kTempSetPrefix.size()) != kTempSetPrefix &&
        std::none_of(model.sets.begin(), model.sets.end(), [&](const SetDef& s) { return s.name == k.name; }))
      unused.push_back(k.name);
  std::string problems = sets.finish() + destroy_sets(unused);
  if (!problems.empty())
    std::cerr << "fwengine: warning: some old ipsets could not be removed:" << problems << '\n';
}

void flush_all() {
  std::string problems;
  for (IpFamily f : {IpFamily::v4, IpFamily::v6})
    if (auto problem = restore(f, transition(save(f), {}, false)); !problem.empty())
      problems += "\n" + problem;
  std::vector<std::string> names;
  for (const auto& s : our_sets()) names.push_back(s.name);
  problems += destroy_sets(names);
  if (!problems.empty()) throw RuntimeError("flush failed:" + problems);
}

KernelState read_kernel() {
  KernelState state;
  std::string text = "# ipset restore -exist\n";
  for (const auto& set : our_sets()) {
    SetDef def{set.name, set.family == "inet6" ? IpFamily::v6 : IpFamily::v4, set.members};
    text += ipset_create_line(def, def.name) + '\n';
    for (const auto& m : set.members) text += "add " + set.name + ' ' + m + '\n';
    state.present = true;
  }
  for (IpFamily f : {IpFamily::v4, IpFamily::v6}) {
    const std::string family = f == IpFamily::v4 ? "ipv4" : "ipv6";
    text += f == IpFamily::v4 ? "# iptables-legacy-restore --noflush\n"
                              : "# ip6tables-legacy-restore --noflush\n";
    for (const auto& table : save(f, true)) {
      state.present = true;
      text += '*' + table.name + '\n';
      for (const auto& c : table.chains) text += ':' + c.name + " - [0:0]\n";
      for (const auto& c : table.chains) {
        for (std::size_t i = 0; i < c.rules.size(); ++i) {
          const auto& rule = c.rules[i];
          text += "-A " + c.name + ' ' + rule.spec + '\n';
          const std::string label = family + " " + table.name + " " + c.name + " #" + std::to_string(i + 1);
          if (c.name == kMetaChain) {
            if (f == IpFamily::v4 && state.ir_hash.empty()) state.ir_hash = ir_hash_of(rule.spec);
            continue;
          }
          RuleCounter counter;
          counter.chain = family + "/" + table.name + "/" + c.name;
          counter.rule = static_cast<std::int32_t>(i);
          counter.where = where_of(rule.spec);
          counter.packets = rule.packets;
          counter.bytes = rule.bytes;
          state.counters.push_back(std::move(counter));
          std::string stamp = stamp_of(rule.spec);
          if (stamp.empty())
            state.drift.push_back(label + " is not fwengine's (no stamp): " + rule.spec);
          else if (stamp != "fwe:" + content_hash(c.name, rule.spec))
            state.drift.push_back(label + " was changed since it was loaded: " + rule.spec);
        }
      }
      for (const auto& h : table.hooks) {
        text += "-I " + h.builtin + " 1 " + h.spec + '\n';
        if (h.position != 1)
          state.drift.push_back(family + " " + table.name + " " + h.builtin + ": the jump to " + h.target +
                                " is rule " + std::to_string(h.position) + ", not the first");
      }
      for (const auto& c : table.chains) {
        // A stage chain (fwe-<stage>) that nothing jumps to filters nothing.
        static const std::set<std::string> kStageChains = {
            "fwe-untracked-in", "fwe-untracked-out", "fwe-prednat", "fwe-dnat",
            "fwe-input",        "fwe-forward",       "fwe-output",  "fwe-snat"};
        if (kStageChains.count(c.name) &&
            std::none_of(table.hooks.begin(), table.hooks.end(),
                         [&](const KernelHook& h) { return h.target == c.name; }))
          state.drift.push_back(family + " " + table.name + ": nothing jumps to " + c.name);
      }
      text += "COMMIT\n";
    }
  }
  state.text = std::move(text);
  return state;
}

}  // namespace fwe::iptables
