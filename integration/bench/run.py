#!/usr/bin/env python3
"""Apply-time and peak-RSS benchmark of fwengine against the tools it replaces (issues #4, #5, #10).

Run as root; it is not part of the test command:

    python3 integration/bench/run.py                  # the full series, writes docs/benchmarks.md
    python3 integration/bench/run.py --quick          # N = 100 and 1,000, 3 runs

Workloads (seeded, generated into a temporary directory): N rules "source CIDR + TCP dport -> accept", the
rule the test traffic would hit last, default drop, written in fwengine's YAML with one chain per 100
rules; the same as one linear nftables chain / iptables chain / ipset + one rule (the forms of
../shared/perf/baselines.md); and one rule with a set of S addresses. Each workload has a variant that
differs in one rule (one set element for the set workload).

Everything runs in one throwaway network namespace `fwe-bench-<pid>`, deleted at the end, also on a
failure or a signal. Before every timed run the namespace is emptied and given time to settle (untimed);
contenders of one figure run in alternation (A B C A B C ...) so that machine noise hits them alike.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FWENGINE = REPO / "build-bench" / "bin" / "fwengine"
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"

MATCHING_CIDR = "192.168.77.0/24"  # the rule test traffic hits: always last
MATCHING_PORT = 5201
CHANGED_PORT = 9999  # the one-rule change: rule 0 gets this port (generated ports are 10000-10999)
RULES_PER_CHAIN = 100
SKIP = 77  # CTest's SKIP_RETURN_CODE
CLONE_NEWNET = 0x40000000
SETTLE_SECONDS = 0.2  # after emptying the namespace: let deferred (RCU) frees finish before timing


# ---------------------------------------------------------------- workloads


def linear_rules(n, seed):
    """N (cidr, port) pairs: N-1 distinct 10.x.y.0/24 with random ports, then the matching rule."""
    rng = random.Random(f"rules-{seed}-{n}")
    blocks = rng.sample(range(65536), n - 1)
    rules = [(f"10.{b >> 8}.{b & 255}.0/24", rng.randrange(10000, 11000)) for b in blocks]
    rules.append((MATCHING_CIDR, MATCHING_PORT))
    return rules


def with_one_rule_changed(rules):
    return [(rules[0][0], CHANGED_PORT)] + rules[1:]


def set_elements(size, seed):
    """SIZE distinct /30 networks 8 addresses apart (so core cannot merge them), plus the matching net."""
    rng = random.Random(f"set-{seed}-{size}")
    base = 10 << 24
    elements = []
    for slot in rng.sample(range(1 << 21), size - 1):
        a = base + slot * 8
        elements.append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/30")
    elements.append(MATCHING_CIDR)
    return elements


def with_one_element_changed(elements):
    return ["11.0.0.0/30"] + elements[1:]  # 11/8 is outside every generated element


def yaml_rules_policy(rules, title):
    chains = [rules[i:i + RULES_PER_CHAIN] for i in range(0, len(rules), RULES_PER_CHAIN)]
    names = [f"p{i:05d}" for i in range(len(chains))]
    out = ["apiVersion: fwengine/v1", f"# {title}", "chains:"]
    for name, chain in zip(names, chains):
        out.append(f"  {name}:")
        out += [f"    - {{protocol: tcp, src: {c}, dport: {p}, action: accept}}" for c, p in chain]
    out += ["stages:", "  input:", "    - name: bench", "      endpoints:", "        - name: all",
            f"          chains: [{', '.join(names)}]", "          default: drop"]
    return "\n".join(out) + "\n"


def yaml_set_policy(elements, title):
    out = ["apiVersion: fwengine/v1", f"# {title}", "sets:", "  allow:"]
    out += [f"    - {e}" for e in elements]
    out += ["chains:", "  allow-set:",
            f"    - {{protocol: tcp, src: allow, dport: {MATCHING_PORT}, action: accept}}",
            "stages:", "  input:", "    - name: bench", "      endpoints:", "        - name: all",
            "          chains: [allow-set]", "          default: drop"]
    return "\n".join(out) + "\n"


def nft_linear(rules, replace=False):
    out = ["flush ruleset"] if replace else []
    out += ["table ip fw {", "  chain input {", "    type filter hook input priority 0; policy drop;"]
    out += [f"    ip saddr {c} tcp dport {p} accept" for c, p in rules]
    out += ["  }", "}"]
    return "\n".join(out) + "\n"


def nft_interval_set(elements, replace=False):
    out = ["flush ruleset"] if replace else []
    out += ["table ip fw {", "  set allow {", "    type ipv4_addr; flags interval;",
            "    elements = { " + ",\n      ".join(elements) + " }", "  }",
            "  chain input {", "    type filter hook input priority 0; policy drop;",
            f"    ip saddr @allow tcp dport {MATCHING_PORT} accept", "  }", "}"]
    return "\n".join(out) + "\n"


def iptables_linear(rules):
    out = ["*filter", ":INPUT DROP [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    out += [f"-A INPUT -s {c} -p tcp -m tcp --dport {p} -j ACCEPT" for c, p in rules]
    return "\n".join(out + ["COMMIT"]) + "\n"


def ipset_net_port(rules):
    out = [f"create allow hash:net,port family inet hashsize 1024 maxelem {max(65536, 2 * len(rules))}"]
    out += [f"add allow {c},tcp:{p}" for c, p in rules]
    return "\n".join(out) + "\n"


def ipset_net(elements):
    out = [f"create allow hash:net family inet hashsize 1024 maxelem {max(65536, 2 * len(elements))}"]
    out += [f"add allow {e}" for e in elements]
    return "\n".join(out) + "\n"


def iptables_set_rule(match):
    return ("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            f"-A INPUT {match} -j ACCEPT\nCOMMIT\n")


def split_iptables_render(text):
    """fwengine's iptables render: '# <tool> <args>' header lines, each followed by that tool's input."""
    parts, current = [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("# ") and line[2:].split(" ")[0] in ("ipset", "iptables-legacy-restore",
                                                                 "ip6tables-legacy-restore"):
            current = [line[2:].split(), []]
            parts.append(current)
        elif current is not None:
            current[1].append(line)
    return [(argv, "".join(lines)) for argv, lines in parts if "".join(lines).strip()]


# ---------------------------------------------------------------- processes and the namespace

libc = ctypes.CDLL(None, use_errno=True)


class Namespace:
    def __init__(self, name):
        self.name = name
        self.path = f"/run/netns/{name}"

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)
        shutil.rmtree(f"/run/fwengine/{self.name}", ignore_errors=True)  # fwengine's lock/state for it

    def enter(self):
        """preexec_fn: move the child into the namespace (no `ip netns exec`, whose mounts cost ~2 ms)."""
        fd = os.open(self.path, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(126)
        os.close(fd)


class KernelMemory:
    """Kernel memory a contender leaves behind: its timed steps run in a memory cgroup of their own, and
    what the cgroup is still charged with after they exited (and the kernel settled) is the ruleset's
    kernel objects. nf_tables, x_tables and (partly) ipset allocate with memcg accounting, so that is
    what their rules, chains, sets and elements cost. cgroup v1 (memory.kmem.usage_in_bytes) and v2
    (memory.stat `kernel`) are both read; where neither can be used the figure is left out."""

    def __init__(self):
        self.base, self.v2, self.why = None, False, ""
        try:
            with open("/proc/self/cgroup") as f:
                lines = [line.rstrip("\n").split(":", 2) for line in f]
        except OSError as e:
            self.why = f"cannot read /proc/self/cgroup: {e}"
            return
        v1 = next((path for _, ctrl, path in lines if "memory" in ctrl.split(",")), None)
        if v1 is not None and os.path.exists(f"/sys/fs/cgroup/memory{v1}/memory.kmem.usage_in_bytes"):
            self.base = f"/sys/fs/cgroup/memory{v1}"
        elif os.path.exists("/sys/fs/cgroup/cgroup.subtree_control"):
            with open("/sys/fs/cgroup/cgroup.subtree_control") as f:
                if "memory" in f.read().split():
                    self.base, self.v2 = "/sys/fs/cgroup", True  # the root may hold processes and children
        if self.base is None:
            self.why = "no memory cgroup with kernel-memory accounting found"
            return
        try:  # a read-only cgroupfs (containers) or a refused move: no figure rather than a failed run
            probe = self.create(f"fwe-bench-probe-{os.getpid()}")
            try:
                subprocess.run(["true"], check=True, preexec_fn=self.joiner(probe))
                self.read_kib(probe)
            finally:
                self.remove(probe)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            self.base, self.why = None, f"cannot use a memory cgroup here ({e})"

    def create(self, name):
        path = f"{self.base}/{name}"
        os.mkdir(path)
        return path

    @staticmethod
    def joiner(path):
        """A preexec_fn step: the forked child moves itself into the cgroup."""
        def join():
            with open(f"{path}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
        return join

    def read_kib(self, path):
        if not self.v2:
            with open(f"{path}/memory.kmem.usage_in_bytes") as f:
                return int(f.read()) / 1024
        with open(f"{path}/memory.stat") as f:
            stat = dict(line.split() for line in f)
        return int(stat.get("kernel", 0)) / 1024

    @staticmethod
    def remove(path):
        try:
            os.rmdir(path)  # what is still charged moves to the parent
        except OSError:
            pass


class Step:
    """One process: argv, optional stdin file, whether it runs inside the namespace, working directory."""

    def __init__(self, argv, stdin=None, in_netns=True, cwd=None):
        self.argv, self.stdin, self.in_netns, self.cwd = [str(a) for a in argv], stdin, in_netns, cwd


# A forked child's ru_maxrss starts at its parent's RSS (the kernel keeps the high-water mark across
# exec), so the harness's ~15 MiB would leak into every figure. Every command therefore runs under GNU
# time, which forks it from a ~1 MiB process and reports the command's own peak RSS.
GNU_TIME = "/usr/bin/time"


def run_steps(steps, ns, check=True, cgroup=None):
    """Runs the steps one after the other; returns wall ms, peak RSS KiB (max), user+system CPU ms,
    system CPU ms, and the stdout of the last step. Every step is started the same way (fork with
    preexec_fn, then GNU time), so fwengine and the alternatives pay the same start-up."""
    total = {"wall_ms": 0.0, "rss_kib": 0, "cpu_ms": 0.0, "sys_ms": 0.0, "stdout": ""}
    for step in steps:
        stdin = open(step.stdin, "rb") if step.stdin else subprocess.DEVNULL
        with tempfile.NamedTemporaryFile() as usage, tempfile.TemporaryFile() as out, \
                tempfile.TemporaryFile() as err:
            argv = [GNU_TIME, "-f", "%M", "-o", usage.name] + step.argv
            start = time.perf_counter()
            enter = ns.enter if step.in_netns else (lambda: None)
            join = KernelMemory.joiner(cgroup) if cgroup else (lambda: None)
            proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, cwd=step.cwd,
                                    preexec_fn=lambda: (join(), enter()))
            _, status, rusage = os.wait4(proc.pid, 0)  # CPU times include GNU time's child
            wall = (time.perf_counter() - start) * 1000
            proc.returncode = os.waitstatus_to_exitcode(status)
            if stdin is not subprocess.DEVNULL:
                stdin.close()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
            # the last line; before it GNU time may write "Command exited with non-zero status N"
            rss_kib = int(usage.read().decode().split("\n")[-2])
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(step.argv)} exited {proc.returncode}: {stderr.strip()[:2000]}")
        total["wall_ms"] += wall
        total["rss_kib"] = max(total["rss_kib"], rss_kib)
        total["cpu_ms"] += (rusage.ru_utime + rusage.ru_stime) * 1000
        total["sys_ms"] += rusage.ru_stime * 1000
        total["stdout"] = stdout
    return total


EMPTY_TABLES = "".join(f"*{t}\nCOMMIT\n" for t in ("raw", "mangle", "nat", "filter"))


def empty_namespace(ns, workdir):
    """Removes every ruleset any contender can leave (untimed), then lets the kernel settle."""
    empty = workdir / "empty.rules"
    if not empty.exists():
        empty.write_text(EMPTY_TABLES)
    steps = [Step(["nft", "flush", "ruleset"]), Step(["iptables-legacy-restore"], stdin=empty),
             Step(["ip6tables-legacy-restore"], stdin=empty),
             Step(["iptables-legacy", "-P", "INPUT", "ACCEPT"]),
             # a list:set (fwengine's gates) lets go of its members only after an RCU grace period; destroying
             # all sets refuses while any is in use, so the gates are emptied first
             Step(["sh", "-c", "ipset flush; for i in 1 2 3 4 5 6 7 8 9 10; do ipset destroy && exit; sleep 0.1; done; exit 1"])]
    run_steps(steps, ns)
    try:
        os.remove(f"/run/fwengine/{ns.name}/state.json")
    except FileNotFoundError:
        pass
    time.sleep(SETTLE_SECONDS)


# ---------------------------------------------------------------- figures


class Contender:
    def __init__(self, key, label, timed, prepare=(), fwengine=False):
        self.key, self.label, self.timed, self.prepare, self.fwengine = key, label, timed, prepare, fwengine
        self.samples = []  # dicts from run_steps (+ backend_ms for fwengine --json apply)
        self.skipped = ""  # why it was not run at this size


class Figure:
    def __init__(self, key, title, size, contenders):
        self.key, self.title, self.size, self.contenders = key, title, size, contenders


def fwengine_step(args, policy, *argv):
    """fwengine runs where the policy is and reads it by its bare name: the original and the changed
    policy then have the same origins (file:line:col), which the backends stamp on every rule."""
    return Step([args.fwengine, "-f", policy.name, *argv], in_netns=False, cwd=policy.parent)


def fwe(args, policy, backend, *extra):
    return fwengine_step(args, policy, "--backend", backend, "--netns", args.ns.name, "--json", "apply", *extra)


def build_workloads(args, workdir):
    """Writes every input file; returns the list of figures to measure."""
    figures = []

    def write(name, text):
        path = workdir / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return path

    def render(policy, backend):
        return run_steps([fwengine_step(args, policy, "--backend", backend, "render")], args.ns)["stdout"]

    backends = args.backends
    workloads = []
    for n in args.sizes:
        rules = linear_rules(n, args.seed)
        changed = with_one_rule_changed(rules)
        title = f"{n} rules, seed {args.seed}, generated by integration/bench/run.py"
        workloads.append(dict(kind="rules", size=n, label=f"N={n:,}",
                              policy=write(f"rules-{n}/policy.yaml", yaml_rules_policy(rules, title)),
                              changed=write(f"rules-{n}-changed/policy.yaml", yaml_rules_policy(changed, title)),
                              nft_plain=write(f"rules-{n}.nft", nft_linear(rules)),
                              nft_replace=write(f"rules-{n}-changed.nft", nft_linear(changed, replace=True)),
                              ipt_plain=write(f"rules-{n}.rules", iptables_linear(rules)),
                              ipt_replace=write(f"rules-{n}-changed.rules", iptables_linear(changed)),
                              ipset=write(f"rules-{n}.ipset", ipset_net_port(rules)),
                              ipset_rule=write("ipset-net-port.rules",
                                               iptables_set_rule("-m set --match-set allow src,dst")),
                              ipset_delta=None, nft_delta=None))
    if args.set_size:
        s = args.set_size
        elements = set_elements(s, args.seed)
        changed = with_one_element_changed(elements)
        title = f"one rule with a set of {s} addresses, seed {args.seed}"
        workloads.append(dict(kind="set", size=s, label=f"set of {s:,}",
                              policy=write(f"set-{s}/policy.yaml", yaml_set_policy(elements, title)),
                              changed=write(f"set-{s}-changed/policy.yaml", yaml_set_policy(changed, title)),
                              nft_plain=write(f"set-{s}.nft", nft_interval_set(elements)),
                              nft_replace=write(f"set-{s}-changed.nft", nft_interval_set(changed, True)),
                              nft_delta=write(f"set-{s}-delta.nft",
                                              f"delete element ip fw allow {{ {elements[0]} }}\n"
                                              f"add element ip fw allow {{ {changed[0]} }}\n"),
                              ipt_plain=None, ipt_replace=None,
                              ipset=write(f"set-{s}.ipset", ipset_net(elements)),
                              ipset_rule=write("ipset-net.rules", iptables_set_rule(
                                  f"-p tcp -m set --match-set allow src -m tcp --dport {MATCHING_PORT}")),
                              ipset_delta=write(f"set-{s}-delta.ipset",
                                                f"del allow {elements[0]}\nadd allow {changed[0]}\n")))

    for w in workloads:
        label, policy, changed = w["label"], w["policy"], w["changed"]
        plain = "interval set" if w["kind"] == "set" else "linear"
        if "nft" in backends:
            own = write(f"{policy.parent.name}.own.nft", render(policy, "nft"))
            figures.append(Figure("nft-full", "nft: full apply into an empty namespace", label, [
                Contender("fwe", "fwengine apply --full", [fwe(args, policy, "nft", "--full")], fwengine=True),
                Contender("own", "nft -f own text", [Step(["nft", "-f", own])]),
                Contender("plain", f"nft -f {plain}", [Step(["nft", "-f", w["nft_plain"]])]),
            ]))
            change = [
                Contender("fwe", "fwengine apply (incremental)", [fwe(args, changed, "nft")],
                          prepare=[fwe(args, policy, "nft", "--full")], fwengine=True),
                Contender("replace", f"nft -f full replace, {plain}", [Step(["nft", "-f", w["nft_replace"]])],
                          prepare=[Step(["nft", "-f", w["nft_plain"]])]),
            ]
            if w["nft_delta"]:
                change.append(Contender("delta", "nft -f element delta", [Step(["nft", "-f", w["nft_delta"]])],
                                        prepare=[Step(["nft", "-f", w["nft_plain"]])]))
            what = "one element" if w["kind"] == "set" else "one rule"
            figures.append(Figure("nft-change", f"nft: {what} changed, after a full apply", label, change))
        if "iptables" in backends:
            own_steps = []
            for argv, text in split_iptables_render(render(policy, "iptables")):
                own_steps.append(Step(argv, stdin=write(f"{policy.parent.name}.own.{argv[0]}", text)))
            ipset_steps = [Step(["ipset", "restore", "-f", w["ipset"]]),
                           Step(["iptables-legacy-restore"], stdin=w["ipset_rule"])]
            full = [Contender("fwe", "fwengine apply --full", [fwe(args, policy, "iptables", "--full")],
                              fwengine=True),
                    Contender("own", "restore of own text", own_steps)]
            if w["ipt_plain"]:
                full.append(Contender("plain", "iptables-legacy-restore linear",
                                      [Step(["iptables-legacy-restore"], stdin=w["ipt_plain"])]))
            full.append(Contender("ipset", "ipset restore + rule", ipset_steps))
            figures.append(Figure("ipt-full", "iptables: full apply into an empty namespace", label, full))
            change = [Contender("fwe", "fwengine apply (incremental)", [fwe(args, changed, "iptables")],
                                prepare=[fwe(args, policy, "iptables", "--full")], fwengine=True)]
            if w["ipt_replace"]:
                change.append(Contender("replace", "iptables-legacy-restore linear, replace",
                                        [Step(["iptables-legacy-restore"], stdin=w["ipt_replace"])],
                                        prepare=[Step(["iptables-legacy-restore"], stdin=w["ipt_plain"])]))
            if w["ipset_delta"]:
                change.append(Contender("delta", "ipset restore element delta",
                                        [Step(["ipset", "restore", "-f", w["ipset_delta"]])],
                                        prepare=ipset_steps))
            what = "one element" if w["kind"] == "set" else "one rule"
            figures.append(Figure("ipt-change", f"iptables: {what} changed, after a full apply", label, change))
    return figures, workloads


class Progress:
    def __init__(self, total):
        self.total, self.done, self.tty = total, 0, sys.stderr.isatty()

    def step(self, what):
        self.done += 1
        if self.tty:
            sys.stderr.write(f"\r\033[K[{self.done}/{self.total}] {what}")
            sys.stderr.flush()

    def finish(self):
        if self.tty:
            sys.stderr.write("\r\033[K")


def too_slow(fig, c, figures, args):
    """A contender is not started when the same contender at the next smaller rule count, scaled
    quadratically, would take longer than the budget: a kernel busy with one huge netlink batch cannot
    be interrupted, so it would hold up the series for many minutes."""
    if not fig.size.startswith("N="):
        return ""
    n = int(fig.size[2:].replace(",", ""))
    smaller = [f for f in figures if f.key == fig.key and f.size.startswith("N=")
               and int(f.size[2:].replace(",", "")) < n]
    if not smaller:
        return ""
    prev = max(smaller, key=lambda f: int(f.size[2:].replace(",", "")))
    pc = contender(prev, c.key)
    if not pc or pc.skipped:
        return f"not run (not run at {prev.size} either)" if pc else ""
    m = int(prev.size[2:].replace(",", ""))
    estimate = (med(pc.samples, "wall_ms") + med(pc.samples, "prepare_ms")) / 1000 * (n / m) ** 2
    if estimate <= args.budget:
        return ""
    prepared = med(pc.samples, "prepare_ms")
    return (f"not run: {med(pc.samples, 'wall_ms') / 1000:.1f} s at {prev.size}"
            + (f" after a {prepared / 1000:.1f} s preparation" if prepared else "")
            + f", about {estimate:.0f} s in all expected here (quadratic)")


def measure(figures, args, workdir):
    """Alternation A B C A B C ...; a contender whose run (with its preparation) took longer than the
    budget gets no further runs, so that one slow contender cannot hold up the whole series."""
    progress = Progress(sum(len(f.contenders) for f in figures) * args.runs)
    for fig in figures:
        for c in fig.contenders:
            c.skipped = too_slow(fig, c, figures, args)
        for run in range(args.runs):
            for c in fig.contenders:
                progress.step(f"{fig.title}, {fig.size}: {c.label} (run {run + 1}/{args.runs})")
                if c.skipped or c.samples and c.samples[-1]["wall_ms"] + c.samples[-1]["prepare_ms"] > args.budget * 1000:
                    continue
                empty_namespace(args.ns, workdir)
                prepare_ms = 0.0
                if c.prepare:
                    prepare_ms = run_steps(c.prepare, args.ns)["wall_ms"]
                    time.sleep(SETTLE_SECONDS)
                cgroup = None
                if fig.key.endswith("-full") and args.kmem.base:
                    cgroup = args.kmem.create(f"fwe-bench-{os.getpid()}-{run}-{c.key}")
                try:
                    sample = run_steps(c.timed, args.ns, cgroup=cgroup)
                    if cgroup:
                        time.sleep(SETTLE_SECONDS)  # deferred (RCU) frees of the transaction
                        sample["kmem_kib"] = args.kmem.read_kib(cgroup)
                finally:
                    if cgroup:
                        KernelMemory.remove(cgroup)
                sample["prepare_ms"] = prepare_ms
                if c.fwengine:
                    sample["backend_ms"] = json.loads(sample["stdout"].strip().splitlines()[-1])["ms"]
                sample.pop("stdout")
                c.samples.append(sample)
    empty_namespace(args.ns, workdir)
    progress.finish()


def breakdown(workloads, args):
    """Where fwengine's time goes, per workload: read+compile (`check`) and +render (`render`)."""
    commands = [("check", ["--json", "check"])]
    commands += [("render_" + b, ["--backend", b, "render"]) for b in args.backends]
    rows = []
    for w in workloads:
        row = {"label": w["label"]}
        for what, argv in commands:
            step = fwengine_step(args, w["policy"], *argv)
            row[what] = [run_steps([step], args.ns) for _ in range(args.runs)]
            for sample in row[what]:
                stdout = sample.pop("stdout")
                if what == "check":  # the phases of compiling, as the engine timed them
                    for phase, ms in json.loads(stdout.strip().splitlines()[-1])["ms"].items():
                        sample[f"{phase}_ms"] = ms
        rows.append(row)
    return rows


def profile(workloads, args, workdir):
    """perf's hottest symbols of one full nft apply of the 10,000-rule policy (or the largest below)."""
    if not shutil.which("perf") or "nft" not in args.backends:
        return None
    candidates = [w for w in workloads if w["kind"] == "rules" and w["size"] <= 10000]
    if not candidates:
        return None
    w = max(candidates, key=lambda w: w["size"])
    data = workdir / "perf.data"
    try:
        empty_namespace(args.ns, workdir)
        rec = subprocess.run(["perf", "record", "-q", "-F", "2000", "-o", data, "--", args.fwengine,
                              "--backend", "nft", "--netns", args.ns.name, "-f", w["policy"], "apply", "--full"],
                             capture_output=True, text=True)
        if rec.returncode != 0:
            return None
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "dso,sym",
                              "--percent-limit", "1"], capture_output=True, text=True)
        lines = [ln.rstrip() for ln in rep.stdout.splitlines() if re.match(r"^\s+\d+\.\d+%", ln)]
        return {"label": w["label"], "lines": lines[:15]}
    finally:
        empty_namespace(args.ns, workdir)


# ---------------------------------------------------------------- report


def med(samples, key):
    return statistics.median(s[key] for s in samples) if samples else float("nan")


def cell(samples, key, fmt="{:.1f}", scale=1.0, runs=0):
    """median (min–max), saying how many runs when a contender got fewer than the others."""
    values = [s[key] * scale for s in samples]
    if not values:
        return "—"
    if len(values) == 1:
        return fmt.format(values[0]) + (" (1 run)" if runs > 1 else "")
    few = f", {len(values)} runs" if len(values) < runs else ""
    return (fmt.format(statistics.median(values)) + " (" + fmt.format(min(values)) + "–"
            + fmt.format(max(values)) + few + ")")


def ratio(a, b, key="wall_ms"):
    return med(a.samples, key) / med(b.samples, key) if a.samples and b.samples else float("nan")


def ratio_text(a, b, key="wall_ms"):
    if not b or not a.samples or not b.samples:
        return "—"
    return f"{ratio(a, b, key):.2f}"


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "not found"


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return cpu


def find(figures, key, size):
    return next((f for f in figures if f.key == key and f.size == size), None)


def contender(fig, key):
    return next((c for c in fig.contenders if c.key == key), None) if fig else None


def targets(figures, workloads, rows, args):
    """One paragraph per target of issues #4, #5 and #10 that this harness measures."""
    out = []
    by_size = {w["size"]: w["label"] for w in workloads if w["kind"] == "rules"}
    bd = {r["label"]: r for r in rows}

    def where(label, fwe_c, backend):
        r = bd.get(label)
        if not r or not fwe_c:
            return ""
        check = med(r["check"], "wall_ms")
        rend = med(r.get("render_" + backend, r["check"]), "wall_ms")
        total = med(fwe_c.samples, "wall_ms")
        kernel = med(fwe_c.samples, "backend_ms")
        return (f" Where the time goes (medians): reading and compiling the policy (`fwengine check`) "
                f"{check:.1f} ms, reading + compiling + rendering (`fwengine render`) {rend:.1f} ms, the "
                f"backend's apply step (netlink/restore, as `apply --json` reports it) {kernel:.1f} ms, "
                f"{total:.1f} ms in all.")

    label = by_size.get(10000)
    fig = find(figures, "nft-full", label)
    if fig:
        f, own, lin = contender(fig, "fwe"), contender(fig, "own"), contender(fig, "plain")
        r_own, r_lin = ratio(f, own), ratio(lin, f)
        met = r_own <= 1.0 and r_lin >= 5.0
        out.append(f"**nft, full apply of 10,000 rules: at least as fast as `nft -f` of our own text and ≥ 5× "
                   f"faster than `nft -f` of the linear ruleset — {'met' if met else 'not met'}.** fwengine "
                   f"takes {med(f.samples, 'wall_ms'):.1f} ms, {r_own:.2f}× the time of `nft -f` of its own "
                   f"text ({med(own.samples, 'wall_ms'):.1f} ms), and the linear `nft -f` takes "
                   f"{r_lin:.2f}× fwengine's time ({med(lin.samples, 'wall_ms'):.1f} ms)."
                   + where(label, f, "nft"))
    label = by_size.get(50000)
    fig = find(figures, "nft-change", label)
    if fig and not contender(fig, "fwe").samples:
        out.append("**nft, one-rule change in the 50,000-rule policy: ≤ 1 ms of kernel time and ≥ 100× faster "
                   "than a full `nft -f` replace — not met: not measurable here.** The full apply that must "
                   f"come first is too slow: {contender(fig, 'fwe').skipped}.")
    elif fig:
        f, rep = contender(fig, "fwe"), contender(fig, "replace")
        kernel, sys_ms = med(f.samples, "backend_ms"), med(f.samples, "sys_ms")
        speedup = ratio(rep, f)
        met = kernel <= 1.0 and speedup >= 100
        out.append(f"**nft, one-rule change in the 50,000-rule policy: ≤ 1 ms of kernel time and ≥ 100× faster "
                   f"than a full `nft -f` replace — {'met' if met else 'not met'}.** The backend's apply step "
                   f"takes {kernel:.2f} ms (the process spends {sys_ms:.1f} ms in the kernel in all, "
                   f"{med(f.samples, 'wall_ms'):.1f} ms wall end to end); a full linear replace takes "
                   f"{med(rep.samples, 'wall_ms'):.1f} ms, {speedup:.1f}× fwengine's end-to-end time."
                   + (" Most of the end-to-end time is not the kernel's: the whole policy is read, compiled "
                      "and rendered again before the difference is sent."
                      if kernel < 0.5 * med(f.samples, "wall_ms") else "") + where(label, f, "nft"))
    label = by_size.get(10000)
    fig = find(figures, "ipt-full", label)
    if fig:
        f, lin, ips = contender(fig, "fwe"), contender(fig, "plain"), contender(fig, "ipset")
        r_lin, r_set = ratio(lin, f), ratio(ips, f)
        met = r_lin >= 1.0 and r_set >= 1.0
        out.append(f"**iptables, full apply of 10,000 rules: ≥ 1× (at least as fast as) "
                   f"`iptables-legacy-restore` linear and `ipset restore` + rule — {'met' if met else 'not met'}"
                   f".** fwengine takes {med(f.samples, 'wall_ms'):.1f} ms; the linear restore is "
                   f"{r_lin:.2f}× that, ipset + rule {r_set:.2f}×." + where(label, f, "iptables"))
    label = by_size.get(50000)
    fig = find(figures, "nft-full", label)
    if fig:
        f = contender(fig, "fwe")
        ipt = contender(find(figures, "ipt-full", label), "fwe")
        rss = [med(c.samples, "rss_kib") / 1024 for c in (f, ipt) if c and c.samples]
        nft_rss = f"{rss[0]:.1f} MiB" if f.samples else f"not measured ({f.skipped})"
        out.append(f"**Peak RSS of `fwengine apply` for the 50,000-rule policy ≤ 40 MiB — "
                   f"{'met' if rss and max(rss) <= 40 else 'not met'}{'' if f.samples else ' for iptables, unknown for nft'}"
                   f".** nft backend: {nft_rss} (`nft -f` linear: "
                   f"{med(contender(fig, 'plain').samples, 'rss_kib') / 1024:.1f} MiB)"
                   + (f"; iptables backend: {med(ipt.samples, 'rss_kib') / 1024:.1f} MiB" if ipt else "") + ".")
    fig = find(figures, "nft-full", by_size.get(50000))
    if fig and any("kmem_kib" in c for c in contender(fig, "fwe").samples):
        f, lin, own = contender(fig, "fwe"), contender(fig, "plain"), contender(fig, "own")
        kmem = med(f.samples, "kmem_kib") / 1024
        out.append(f"**Kernel memory added by the 50,000-rule policy ≤ 8 MiB (nft) — "
                   f"{'met' if kmem <= 8 else 'not met'}.** fwengine's ruleset holds {kmem:.1f} MiB of kernel "
                   f"memory; the linear `nft -f` ruleset {med(lin.samples, 'kmem_kib') / 1024:.1f} MiB, our own "
                   f"text loaded by `nft -f` {med(own.samples, 'kmem_kib') / 1024:.1f} MiB (the same objects).")
    label = by_size.get(10000)
    if label in bd and "read_ms" in bd[label]["check"][0]:
        read = med(bd[label]["check"], "read_ms")
        out.append(f"**Reading the 10,000-rule policy ≤ 25 ms (issue #10) — {'met' if read <= 25 else 'not met'}"
                   f".** The YAML frontend takes {read:.1f} ms (`check --json`'s `ms.read`: the file read, "
                   f"parsed and turned into the IR); `fwengine check` as a whole (process start, plugins, "
                   f"passes, hash) {med(bd[label]['check'], 'wall_ms'):.1f} ms.")
    elif label in bd:
        check = med(bd[label]["check"], "wall_ms")
        out.append(f"**Reading the 10,000-rule policy ≤ 25 ms (issue #10) — {'met' if check <= 25 else 'not met'}"
                   f" (upper bound).** This harness times `fwengine check` as a whole (process start, plugin "
                   f"loading, reading, compiling): {check:.1f} ms; reading alone is part of that.")
    set_label = next((w["label"] for w in workloads if w["kind"] == "set"), None)
    for key, alt, name in (("nft-change", "delta", "nft"), ("ipt-change", "delta", "iptables")):
        fig = find(figures, key, set_label)
        if fig:
            f, d = contender(fig, "fwe"), contender(fig, alt)
            met = med(f.samples, "wall_ms") <= med(d.samples, "wall_ms")
            out.append(f"**{name}, one-address change in a {args.set_size:,}-element set: ≤ the time of the "
                       f"element delta through the plain tool — {'met' if met else 'not met'}.** fwengine "
                       f"{med(f.samples, 'wall_ms'):.1f} ms end to end (apply step "
                       f"{med(f.samples, 'backend_ms'):.1f} ms), the delta {med(d.samples, 'wall_ms'):.1f} ms "
                       f"({ratio(f, d):.2f}×)." + where(set_label, f, name))
    return out


def mib_table(figs, alts, key, args):
    """The lines of a table of one KiB figure in MiB: fwengine, each alternative, the ratios."""
    head = ["workload", figs[0].contenders[0].label] + [a.label for a in alts] + \
           [f"ratio vs {a.label}" for a in alts]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fig in figs:
        f = contender(fig, "fwe")
        row = [fig.size, cell(f.samples, key, scale=1 / 1024, runs=args.runs)]
        row += [cell(contender(fig, a.key).samples, key, scale=1 / 1024, runs=args.runs)
                if contender(fig, a.key) else "—" for a in alts]
        row += [ratio_text(f, contender(fig, a.key), key) for a in alts]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_report(path, figures, workloads, rows, prof, started, elapsed, args):
    fw_version = tool_version([args.fwengine, "version"])
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `integration/bench/run.py{' --quick' if args.quick else ''}` on "
        f"{started:%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min. Do not edit by hand: run it again "
        "(as root, on an otherwise idle machine if you can).",
        "",
        "## Machine and versions",
        "",
        f"- machine: {os.cpu_count()} CPUs ({machine()}), kernel {platform.release()}",
        f"- fwengine: {fw_version} ({args.fwengine})",
        f"- {tool_version(['nft', '--version'])}; {tool_version(['iptables-legacy', '--version'])}; "
        f"{tool_version(['ipset', '--version'])}; Python {platform.python_version()}",
        "",
        "## Method",
        "",
        f"- Workloads (seed {args.seed}): N rules `source CIDR + TCP dport -> accept` (distinct random "
        "10.x.y.0/24, random ports 10000–10999), the rule test traffic would hit "
        f"(`{MATCHING_CIDR}` port {MATCHING_PORT}) last, default drop; in fwengine's YAML one chain per "
        f"{RULES_PER_CHAIN} rules, every rule with its address inline. The alternatives load the same "
        "rules as one linear chain (`nft -f`, `iptables-legacy-restore`) or as an `ipset` `hash:net,port` "
        "plus one rule. The set workload is one rule `src: allow, tcp dport 5201` over a set of "
        f"{args.set_size:,} distinct /30 networks; its plain form is one nftables interval set, or an "
        "`ipset` `hash:net` plus one rule. \"Changed\" variants differ in one rule (rule 0's port) or in one "
        "set element.",
        "- \"own text\" is what `fwengine render` prints for the same policy, loaded with `nft -f` (or with "
        "`ipset restore` + `iptables-legacy-restore --noflush` + `ip6tables-legacy-restore --noflush`).",
        f"- Every figure's contenders run in alternation (A B C A B C ...), {args.runs} runs each (a contender "
        f"whose run, with its untimed preparation, took over {args.budget:.0f} s got no more runs), in one "
        "throwaway network namespace. Before each run the namespace is emptied and the kernel gets "
        f"{SETTLE_SECONDS * 1000:.0f} ms to settle (untimed); for the change figures the original is "
        "loaded first (untimed). Alternatives enter the namespace by `setns` in the forked child (no "
        "`ip netns exec`); fwengine enters it itself (`--netns`).",
        "- Times are wall clock from fork to exit (ms): median (min–max). \"apply step\" is the `ms` that "
        "`fwengine apply --json` reports for the backend's apply alone (netlink transaction, or the "
        "restore tools), \"sys\" the process's system CPU time (kernel work done on its behalf, from `wait4`). Peak RSS "
        "is the command's `ru_maxrss` (MiB; the largest of the processes of a multi-step contender"
        + "; every command runs under GNU time, which reports it without the harness's own RSS). "
        "Ratio = fwengine / alternative: below 1 means fwengine is faster.",
        "- Kernel memory (full applies only): the timed commands run in a memory cgroup of their own; what "
        "it is still charged with 200 ms after they exited is what the loaded ruleset holds in the kernel "
        "(nf_tables and x_tables objects are charged to the cgroup that creates them; ipset's hash "
        "tables only partly). " + getattr(args, "kmem_note", ""),
        "- The machine is shared by several busy sessions and noisy: compare the ratios, which were "
        "measured side by side, rather than the absolute numbers.",
        "",
    ]
    groups = {}
    for fig in figures:
        groups.setdefault(fig.title, []).append(fig)
    for title, figs in groups.items():
        alts = []  # every alternative of any size (the linear one exists only for rule workloads)
        for c in (c for fig in figs for c in fig.contenders):
            if c.key != "fwe" and c.key not in [a.key for a in alts]:
                alts.append(c)
        lines += [f"## {title}", "", "Time (ms):", ""]
        head = ["workload", figs[0].contenders[0].label, "apply step", "sys"] + [a.label for a in alts] + \
               [f"ratio vs {a.label}" for a in alts]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for fig in figs:
            f = contender(fig, "fwe")
            row = [fig.size, cell(f.samples, "wall_ms", runs=args.runs), cell(f.samples, "backend_ms", "{:.2f}", runs=args.runs),
                   cell(f.samples, "sys_ms", runs=args.runs)]
            row += [cell(contender(fig, a.key).samples, "wall_ms", runs=args.runs) if contender(fig, a.key) else "—" for a in alts]
            row += [ratio_text(f, contender(fig, a.key)) for a in alts]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "Peak RSS (MiB):", ""] + mib_table(figs, alts, "rss_kib", args)
        if any("kmem_kib" in sample for fig in figs for c in fig.contenders for sample in c.samples):
            lines += ["", "Kernel memory held by the loaded ruleset (MiB; see Method):", ""]
            lines += mib_table(figs, alts, "kmem_kib", args)
        lines.append("")
        for fig in figs:
            for c in fig.contenders:
                if c.skipped:
                    lines.append(f"- {c.label}, {fig.size}: {c.skipped}.")
        if any(c.skipped for fig in figs for c in fig.contenders):
            lines.append("")
    if rows:
        lines += ["## Where fwengine's time goes (no kernel work)", "",
                  "`fwengine check` reads and compiles the policy; `fwengine render` also renders it for the "
                  "backend (output discarded). Wall ms, median (min–max).", ""]
        timed = any("read_ms" in sample for r in rows for sample in r["check"])
        lines += ["| workload | check | " + ("of it: reading | passes | hash | " if timed else "")
                  + "render nft | render iptables |", "|---|---|" + ("---|---|---|" if timed else "") + "---|---|"]
        for r in rows:
            phases = "".join(f"{cell(r['check'], k)} | " for k in ("read_ms", "passes_ms", "hash_ms")) if timed else ""
            lines.append(f"| {r['label']} | {cell(r['check'], 'wall_ms')} | {phases}"
                         f"{cell(r['render_nft'], 'wall_ms') if 'render_nft' in r else '—'} | "
                         f"{cell(r['render_iptables'], 'wall_ms') if 'render_iptables' in r else '—'} |")
        lines.append("")
    if prof:
        lines += [f"## Profile: `fwengine --backend nft apply --full`, {prof['label']}", "",
                  "`perf record`, self time by DSO and symbol (entries ≥ 1 %):", "", "```"]
        lines += prof["lines"] + ["```", ""]
    lines += ["## Targets (issues #4, #5, #10)", ""]
    for paragraph in targets(figures, workloads, rows, args):
        lines += [paragraph, ""]
    lines += ["Not measured by this harness yet (issue #10): the dataplane rates, the ebpf backend (its "
              "per-packet figures: `ebpf_bench`, backends/ebpf/README.md), the Calico workload, plots; "
              "`firewall-cmd --reload`: [benchmarks-firewalld.md](benchmarks-firewalld.md).", ""]
    if args.notes and Path(args.notes).exists():
        lines += [Path(args.notes).read_text().rstrip(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- main


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fwengine", default=str(DEFAULT_FWENGINE), help="the engine (default: build-bench/bin)")
    p.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only, 3 runs: a smoke run")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                   help="rule counts, comma-separated (default 100,1000,10000,50000)")
    p.add_argument("--set-size", type=int, help="addresses in the set workload (default 100000; 0 = none)")
    p.add_argument("--runs", type=int, help="runs per contender (default 5, --quick 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--budget", type=float, default=60,
                   help="seconds: a contender whose run takes longer gets no more runs (default 60)")
    p.add_argument("--backend", dest="backends", action="append", choices=["nft", "iptables"],
                   help="repeatable (default: both)")
    p.add_argument("--no-profile", action="store_true", help="skip the perf profile")
    p.add_argument("--notes", help="a Markdown file appended to the report (analysis written by hand)")
    p.add_argument("--raw", help="also save the measurements as JSON there")
    p.add_argument("--from-raw", help="no measuring: write the report from measurements saved with --raw")
    p.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT), help="the report (default docs/benchmarks.md)")
    args = p.parse_args()
    if args.sizes is None:
        args.sizes = [100, 1000] if args.quick else [100, 1000, 10000, 50000]
    if args.set_size is None:
        args.set_size = 1000 if args.quick else 100000
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    args.backends = args.backends or ["nft", "iptables"]
    if min(args.sizes) < 2 or args.runs < 1 or (args.set_size and args.set_size < 2):
        p.error("sizes and --set-size must be at least 2, --runs at least 1")
    return args


def save_raw(path, figures, workloads, rows, prof, started, elapsed, args):
    data = {"started": started.isoformat(), "elapsed": elapsed, "prof": prof, "rows": rows,
            "args": {k: getattr(args, k) for k in ("fwengine", "quick", "sizes", "set_size", "runs", "seed", "budget",
                                                   "backends", "kmem_note")},
            "workloads": [{k: w[k] for k in ("kind", "size", "label")} for w in workloads],
            "figures": [{"key": f.key, "title": f.title, "size": f.size,
                         "contenders": [{"key": c.key, "label": c.label, "samples": c.samples,
                                         "skipped": c.skipped}
                                        for c in f.contenders]} for f in figures]}
    Path(path).write_text(json.dumps(data, indent=1))


def load_raw(path, args):
    data = json.loads(Path(path).read_text())
    for k, v in data["args"].items():
        setattr(args, k, v)
    figures = []
    for f in data["figures"]:
        contenders = []
        for c in f["contenders"]:
            contenders.append(Contender(c["key"], c["label"], [], fwengine=c["key"] == "fwe"))
            contenders[-1].samples, contenders[-1].skipped = c["samples"], c["skipped"]
        figures.append(Figure(f["key"], f["title"], f["size"], contenders))
    return (figures, data["workloads"], data["rows"], data["prof"],
            datetime.datetime.fromisoformat(data["started"]), data["elapsed"])


def main():
    args = parse_args()
    if args.from_raw:
        write_report(Path(args.output), *load_raw(args.from_raw, args), args)
        print(f"wrote {args.output}")
        return 0
    if os.geteuid() != 0:
        print("run.py: needs root (network namespaces, nft, iptables); skipped", file=sys.stderr)
        return SKIP
    missing = [t for t in (GNU_TIME, "ip", "nft", "iptables-legacy-restore", "ip6tables-legacy-restore", "ipset")
               if not shutil.which(t)]
    if missing or not os.access(args.fwengine, os.X_OK):
        print(f"run.py: missing {', '.join(missing) or args.fwengine}; skipped", file=sys.stderr)
        return SKIP
    args.fwengine = str(Path(args.fwengine).resolve())
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    # SIGTERM/SIGHUP become exceptions so that the namespace is deleted on the way out.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="fwe-bench-") as tmp, Namespace(f"fwe-bench-{os.getpid()}") as ns:
        args.ns = ns
        args.kmem = KernelMemory()
        args.kmem_note = (f"Not measured in this run: {args.kmem.why}." if args.kmem.why else
                          "Read from " + ("memory.stat `kernel` (cgroup v2)." if args.kmem.v2 else
                                         "memory.kmem.usage_in_bytes (cgroup v1)."))
        workdir = Path(tmp)
        figures, workloads = build_workloads(args, workdir)
        measure(figures, args, workdir)
        rows = breakdown(workloads, args)
        prof = None if args.no_profile else profile(workloads, args, workdir)
    results = (figures, workloads, rows, prof, started, time.monotonic() - t0)
    if args.raw:
        save_raw(args.raw, *results, args)
    write_report(Path(args.output), *results, args)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
