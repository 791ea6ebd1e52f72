#!/usr/bin/env python3
"""Apply-time, peak-RSS, reading, dataplane and ebpf per-packet benchmark of fwengine against the tools it replaces
(issues #4, #5, #6, #10).

Run as root; it is not part of the test command:

    python3 integration/bench/run.py                  # the full series, writes docs/benchmarks.md and its plots
    python3 integration/bench/run.py --quick          # N = 100 and 1,000, 3 runs
    python3 integration/bench/run.py --figures dataplane -o /tmp/dp.md   # only the TCP rates
    python3 integration/bench/run.py --figures ebpf -o /tmp/ebpf.md      # only ebpf_bench's figures
    python3 integration/bench/run.py --figures read -o /tmp/read.md      # only the YAML readers

Workloads (seeded, generated into a temporary directory): N rules "source CIDR + TCP dport -> accept", the
rule the test traffic would hit last, default drop, written in fwengine's YAML with one chain per 100
rules; the same as one linear nftables chain / iptables chain / ipset + one rule (the forms of
../shared/perf/baselines.md); and one rule with a set of S addresses. Each workload has a variant that
differs in one rule (one set element for the set workload); a rule workload also has one with a comment
line inserted at its top, which moves every rule one line down and changes nothing else.

Everything runs in one throwaway network namespace `fwe-bench-<pid>`, deleted at the end, also on a
failure or a signal. Before every timed run the namespace is emptied and given time to settle (untimed);
contenders of one figure run in alternation (A B C, B C A, C A B ...) so that machine noise hits them
alike, and no contender always follows the same one (a run pays for the memory the one before it freed).

The dataplane figures (TCP connect and request rates, `tcprate` from tcprate.cpp, built beside fwengine)
run in a pair of namespaces, client --veth-- server, made afresh for every run and deleted after it. The
plots are PNGs drawn with gnuplot (Debian: gnuplot-nox) next to the report; without gnuplot the report
says so and has the tables only.
"""
import argparse
import contextlib
import ctypes
import datetime
import itertools
import json
import os
import platform
import random
import re
import select
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
CGROUP_SERIAL = itertools.count()  # each measurement's memory cgroup has a name of its own
SETTLE_SECONDS = 0.2  # after emptying the namespace: let deferred (RCU) frees finish before timing
FIGURES = ("apply", "read", "dataplane", "ebpf")
APPLY_BACKENDS = ("nft", "iptables")  # the apply figures; the dataplane figures measure ebpf too


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


def with_a_line_inserted(policy_text):
    """The policy with a comment line at its top: every rule one line further down, nothing else."""
    return "# a comment line inserted at the top\n" + policy_text


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


CALICO_RULES, CALICO_SETS = 10, 50


def calico_resources(policies, cidrs, seed, changed=False):
    """Issue #10's Calico workload: POLICIES (1,000) GlobalNetworkPolicies of 10 rules each
    (`source.selector` of one of 50 GlobalNetworkSets, TCP to one port, Allow) over CIDRS (50,000)
    networks in those sets, for one HostEndpoint. `changed`: policy 0's first rule gets another port."""
    rng = random.Random(f"calico-{seed}-{policies}-{cidrs}")
    hosts = rng.sample(range(1 << 24), cidrs)
    out = ["apiVersion: projectcalico.org/v3", "kind: HostEndpoint",
           "metadata: {name: bench-eth0, labels: {role: bench}}",
           "spec: {interfaceName: eth0, node: bench, expectedIPs: [192.0.2.1]}"]
    for k in range(CALICO_SETS):
        nets = hosts[k::CALICO_SETS]
        out += ["---", "apiVersion: projectcalico.org/v3", "kind: GlobalNetworkSet",
                f"metadata: {{name: set-{k:02d}, labels: {{netset: s{k:02d}}}}}", "spec:", "  nets:"]
        out += [f"    - 10.{h >> 16}.{(h >> 8) & 255}.{h & 255}/32" for h in nets]
    for i in range(policies):
        out += ["---", "apiVersion: projectcalico.org/v3", "kind: GlobalNetworkPolicy",
                f"metadata: {{name: gnp-{i:04d}}}", "spec:", f"  order: {i}", "  selector: role == 'bench'",
                "  types: [Ingress]", "  ingress:"]
        for j in range(CALICO_RULES):
            n = i * CALICO_RULES + j
            port = CHANGED_PORT if changed and n == 0 else 10000 + n % 1000
            out.append(f"    - {{action: Allow, protocol: TCP, source: {{selector: \"netset == 's{n % CALICO_SETS:02d}'\"}}, "
                       f"destination: {{ports: [{port}]}}}}")
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
        self.state = Path(f"/run/fwengine/{name}")  # fwengine's lock and state for this namespace

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.state, ignore_errors=True)

    def enter(self):
        """preexec_fn: move the child into the namespace (no `ip netns exec`, whose mounts cost ~2 ms)."""
        fd = os.open(self.path, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(126)
        os.close(fd)

    @contextlib.contextmanager
    def entered(self):
        """The harness's own thread in the namespace for a while: a child started then is born there,
        with no preexec_fn (which makes Python fork itself instead of vfork: ~10 ms a command here)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            there = os.open(self.path, os.O_RDONLY)
            try:
                if libc.setns(there, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {self.path}")
            finally:
                os.close(there)
            try:
                yield
            finally:
                # Back home whatever happened (an exception in flight stays chained to this one).
                if libc.setns(home, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the harness's namespace")
        finally:
            os.close(home)


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
                subprocess.run(self.joined(probe, ["true"]), check=True, stderr=subprocess.DEVNULL)
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
    def joined(path, argv):
        """argv run through a shell that moves itself into the cgroup and then execs it (~1 ms): the
        child joins before it does any work, and the harness starts it with vfork all the same."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', f"{path}/cgroup.procs", *argv]

    def read_kib(self, path):
        if not self.v2:
            with open(f"{path}/memory.kmem.usage_in_bytes") as f:
                return int(f.read()) / 1024
        with open(f"{path}/memory.stat") as f:
            stat = dict(line.split() for line in f)
        return int(stat.get("kernel", 0)) / 1024

    @staticmethod
    def wait_empty(path, seconds=5.0):
        """Until the processes the command left in the cgroup are gone: nft's netlink keeper lets go of
        its socket half a second after the command's exit, and what it holds is no part of the ruleset."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with open(f"{path}/cgroup.procs") as f:
                if not f.read().strip():
                    return
            time.sleep(0.02)

    @staticmethod
    def remove(path):
        KernelMemory.wait_empty(path)
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
    system CPU ms, and the stdout of the last step. Every step is started the same way (GNU time,
    vforked; born in the namespace when it runs there), so fwengine and the alternatives pay the same
    start-up. With a cgroup, a shell joins it and execs GNU time (KernelMemory.joined)."""
    total = {"wall_ms": 0.0, "rss_kib": 0, "cpu_ms": 0.0, "sys_ms": 0.0, "stdout": ""}
    for step in steps:
        stdin = open(step.stdin, "rb") if step.stdin else subprocess.DEVNULL
        with tempfile.NamedTemporaryFile() as usage, tempfile.TemporaryFile() as out, \
                tempfile.TemporaryFile() as err:
            argv = [GNU_TIME, "-f", "%M", "-o", usage.name] + step.argv
            start = time.perf_counter()
            if cgroup:
                argv = KernelMemory.joined(cgroup, argv)
            with ns.entered() if step.in_netns else contextlib.nullcontext():
                proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, cwd=step.cwd)
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


def state_and_ruleset_kmem(args, cgroup):
    """fwengine's files in /run after a full apply (tmpfs, so RAM: the policy kept for rollback, the
    backend's record of its sets), and the kernel memory the ruleset holds without them: the files'
    inodes and page-cache entries are charged as kernel memory too. The files go, as a full apply needs
    none of them."""
    state = args.ns.state
    files = [f for f in state.rglob("*") if f.is_file()] if state.exists() else []
    state_kib = sum(f.stat().st_size for f in files) / 1024
    shutil.rmtree(state, ignore_errors=True)
    time.sleep(SETTLE_SECONDS)
    return {"state_kib": state_kib, "kmem_ruleset_kib": args.kmem.read_kib(cgroup)}


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
        os.remove(ns.state / "state.json")
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


# The frontend options of a policy file that is not our YAML (the Calico workload's).
FRONTEND_OPTIONS = {}


def fwengine_step(args, policy, *argv):
    """fwengine runs where the policy is and reads it by its bare name: the original and the changed
    policy then have the same origins (file:line:col), which the backends stamp on every rule."""
    return Step([args.fwengine, *FRONTEND_OPTIONS.get(policy, []), "-f", policy.name, *argv], in_netns=False,
                cwd=policy.parent)


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

    def own_steps(backend, policy):
        """What `fwengine render` prints for the policy, as the plain tools load it."""
        if backend == "nft":
            return [Step(["nft", "-f", write(f"{policy.parent.name}.own.nft", render(policy, "nft"))])]
        return [Step(argv, stdin=write(f"{policy.parent.name}.own.{argv[0]}", text))
                for argv, text in split_iptables_render(render(policy, "iptables"))]

    backends = args.backends
    workloads = []
    for n in args.sizes:
        rules = linear_rules(n, args.seed)
        changed = with_one_rule_changed(rules)
        title = f"{n} rules, seed {args.seed}, generated by integration/bench/run.py"
        workloads.append(dict(kind="rules", size=n, label=f"N={n:,}",
                              policy=write(f"rules-{n}/policy.yaml", yaml_rules_policy(rules, title)),
                              changed=write(f"rules-{n}-changed/policy.yaml", yaml_rules_policy(changed, title)),
                              shifted=write(f"rules-{n}-shifted/policy.yaml",
                                            with_a_line_inserted(yaml_rules_policy(rules, title))),
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
                              shifted=None,
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

    if args.calico_policies:
        n, c = args.calico_policies, args.calico_cidrs
        policy = write(f"calico-{n}/resources.yaml", calico_resources(n, c, args.seed))
        changed = write(f"calico-{n}-changed/resources.yaml", calico_resources(n, c, args.seed, changed=True))
        for path in (policy, changed):
            FRONTEND_OPTIONS[path] = ["--frontend", "calico", "--node", "bench"]
        workloads.append(dict(kind="calico", size=n, label=f"Calico {n:,} GNPs", policy=policy, changed=changed))

    for w in workloads:
        label, policy, changed = w["label"], w["policy"], w["changed"]
        if w["kind"] == "calico":
            # No plain form: Calico's own dataplane (Felix) is not here; our own text is the alternative.
            for backend, key in (("nft", "nft"), ("iptables", "ipt")):
                if backend not in backends:
                    continue
                own = own_steps(backend, policy)
                figures.append(Figure(f"{key}-full", f"{backend}: full apply into an empty namespace", label, [
                    Contender("fwe", "fwengine apply --full", [fwe(args, policy, backend, "--full")],
                              fwengine=True),
                    Contender("own", "nft -f own text" if backend == "nft" else "restore of own text", own)]))
                figures.append(Figure(f"{key}-change", f"{backend}: one rule changed, after a full apply", label, [
                    Contender("fwe", "fwengine apply (incremental)", [fwe(args, changed, backend)],
                              prepare=[fwe(args, policy, backend, "--full")], fwengine=True)]))
            continue
        plain = "interval set" if w["kind"] == "set" else "linear"
        if "nft" in backends:
            full = [
                Contender("fwe", "fwengine apply --full", [fwe(args, policy, "nft", "--full")], fwengine=True),
                Contender("own", "nft -f own text", own_steps("nft", policy)),
                Contender("plain", f"nft -f {plain}", [Step(["nft", "-f", w["nft_plain"]])]),
            ]
            if w["kind"] == "rules":  # merged runs: what counting per rule instead of per element saves
                full.append(Contender("per-rule", "fwengine apply --full, counters=rule",
                                      [fwe(args, policy, "nft", "--full", "--backend-option", "counters=rule")],
                                      fwengine=True))
            figures.append(Figure("nft-full", "nft: full apply into an empty namespace", label, full))
            change = [
                Contender("fwe", "fwengine apply (incremental)", [fwe(args, changed, "nft")],
                          prepare=[fwe(args, policy, "nft", "--full")], fwengine=True),
                Contender("replace", f"nft -f full replace, {plain}", [Step(["nft", "-f", w["nft_replace"]])],
                          prepare=[Step(["nft", "-f", w["nft_plain"]])]),
            ]
            if w["nft_delta"]:
                change.append(Contender("delta", "nft -f element delta", [Step(["nft", "-f", w["nft_delta"]])],
                                        prepare=[Step(["nft", "-f", w["nft_plain"]])]))
            if w["shifted"]:  # every rule's line moves: the stamps must not make that a rewrite of all
                change.append(Contender("lines", "fwengine apply, a comment line inserted at the top",
                                        [fwe(args, w["shifted"], "nft")],
                                        prepare=[fwe(args, policy, "nft", "--full")], fwengine=True))
            what = "one element" if w["kind"] == "set" else "one rule"
            figures.append(Figure("nft-change", f"nft: {what} changed, after a full apply", label, change))
        if "iptables" in backends:
            ipset_steps = [Step(["ipset", "restore", "-f", w["ipset"]]),
                           Step(["iptables-legacy-restore"], stdin=w["ipset_rule"])]
            full = [Contender("fwe", "fwengine apply --full", [fwe(args, policy, "iptables", "--full")],
                              fwengine=True),
                    Contender("own", "restore of own text", own_steps("iptables", policy))]
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
            if w["shifted"]:
                change.append(Contender("lines", "fwengine apply, a comment line inserted at the top",
                                        [fwe(args, w["shifted"], "iptables")],
                                        prepare=[fwe(args, policy, "iptables", "--full")], fwengine=True))
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
    """Alternation A B C, B C A, C A B ...: each round starts one contender later, since a run pays for
    the memory the run before it freed (the host takes freed memory back), and a fixed order would charge
    one contender for its predecessor every time. A contender whose run (with its preparation) took
    longer than the budget gets no further runs, so that one slow contender cannot hold up the whole
    series."""
    progress = Progress(sum(len(f.contenders) for f in figures) * args.runs)
    for fig in figures:
        for c in fig.contenders:
            c.skipped = too_slow(fig, c, figures, args)
        for run in range(args.runs):
            first = run % len(fig.contenders)
            for c in fig.contenders[first:] + fig.contenders[:first]:
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
                    cgroup = args.kmem.create(f"fwe-bench-{os.getpid()}-{next(CGROUP_SERIAL)}-{c.key}")
                try:
                    sample = run_steps(c.timed, args.ns, cgroup=cgroup)
                    if cgroup:
                        args.kmem.wait_empty(cgroup)
                        time.sleep(SETTLE_SECONDS)  # deferred (RCU) frees of the transaction
                        sample["kmem_kib"] = args.kmem.read_kib(cgroup)
                        if c.fwengine:
                            sample.update(state_and_ruleset_kmem(args, cgroup))
                finally:
                    if cgroup:
                        KernelMemory.remove(cgroup)
                sample["prepare_ms"] = prepare_ms
                if c.fwengine:
                    applied = json.loads(sample["stdout"].strip().splitlines()[-1])
                    sample["backend_ms"] = applied["ms"]
                    if "transaction_ms" in applied:  # nft: the kernel transaction alone
                        sample["transaction_ms"] = applied["transaction_ms"]
                sample.pop("stdout")
                c.samples.append(sample)
    empty_namespace(args.ns, workdir)
    progress.finish()


def breakdown(workloads, args):
    """Where fwengine's time goes, per workload: read+compile (`check`) and +render (`render`)."""
    commands = [("check", ["--json", "check"])]
    commands += [("render_" + b, ["--backend", b, "render"]) for b in args.backends if b in APPLY_BACKENDS]
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


# ---------------------------------------------------------------- reading YAML


def kubectl_policies(count, seed):
    """COUNT GlobalNetworkPolicies of 10 rules each, as `kubectl get -o yaml` prints them (block style,
    server-set metadata): about 1.6 KB a policy, so 1,000 are issue #10's "10,000-rule policy (1.6 MB)"."""
    rng = random.Random(f"kubectl-{seed}-{count}")
    out = []
    for p in range(count):
        out += ["---", "apiVersion: projectcalico.org/v3", "kind: GlobalNetworkPolicy", "metadata:",
                "  creationTimestamp: \"2026-05-01T10:00:00Z\"", "  generation: 1", f"  name: policy-{p:04d}",
                f"  resourceVersion: \"{100000 + p}\"", f"  uid: 5d1c7a3e-0b7e-4c1d-9f3a-{rng.randrange(1 << 48):012x}",
                "spec:", f"  order: {p}", f"  selector: role == 'web-{p}'", "  types:", "  - Ingress", "  ingress:"]
        for r in range(10):
            out += ["  - action: Allow", "    protocol: TCP", "    source:", "      nets:",
                    f"      - 10.{rng.randrange(256)}.{rng.randrange(256)}.0/24", "    destination:", "      ports:",
                    f"      - {rng.randrange(1024, 65536)}"]
    return "\n".join(out) + "\n"


def measure_read(args, workdir):
    """yaml_bench's figures (yaml_bench.cpp): fwengine's YAML reader, libyaml's events into the same tree
    and yaml-cpp's LoadAll, in alternation, over the kubectl-style text. A dict; {"skipped": why} where
    yaml_bench is not built, and {"skipped": why, "failed": True} where it failed."""
    if not os.access(args.yaml_bench, os.X_OK):
        return {"skipped": f"{args.yaml_bench} is not built"}
    path = workdir / "kubectl-policies.yaml"
    path.write_text(kubectl_policies(args.read_policies, args.seed))
    proc = subprocess.run([args.yaml_bench, "--rounds", str(args.runs), str(path)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return {"skipped": f"yaml_bench exited {proc.returncode}: {why}", "failed": True}
    return {"policies": args.read_policies, **json.loads(proc.stdout)}


def read_section(rd):
    lines = ["## Reading YAML", ""]
    if rd.get("skipped"):
        return lines + [f"Not measured in this run: {rd['skipped']}.", ""]
    rules = rd["policies"] * 10
    lines += [f"`yaml_bench` (integration/bench/yaml_bench.cpp) reads {rd['policies']:,} GlobalNetworkPolicies of 10 "
              f"rules each ({rules:,} rules, {rd['bytes'] / 1e6:.2f} MB, {rd['documents']:,} documents) as `kubectl "
              "get -o yaml` prints them, from memory, with three readers in alternation, "
              f"{len(rd['fwengine_ms'])} run{'s' if len(rd['fwengine_ms']) != 1 else ''} each; median (min–max) ms. fwengine's reader is `yaml::parse`, the "
              "one every frontend uses: the fast scanner "
              + ("read this text" if rd["fast_scanner"] else "gave up on this text, so libyaml read it") +
              ". libyaml builds the same located tree from libyaml's events (what fwengine falls back to). "
              "Both check duplicate keys and keep every node's line and column; yaml-cpp's `LoadAll` builds "
              "yaml-cpp's own tree.", "",
              "| reader | ms | ratio to fwengine |", "|---|---|---|"]
    own = statistics.median(rd["fwengine_ms"])
    for key, label in (("fwengine_ms", "fwengine (`yaml::parse`)"), ("libyaml_ms", "libyaml events, same tree"),
                       ("yamlcpp_ms", "yaml-cpp `LoadAll`")):
        lines.append(f"| {label} | {cell([{'ms': v} for v in rd[key]], 'ms')} | "
                     f"{statistics.median(rd[key]) / own:.1f}× |")
    return lines + [""]


def read_target(rd, workloads, rows):
    """The paragraph of issue #10's reading target (the 10,000-rule policy, 1.6 MB of YAML, ≤ 25 ms against
    yaml-cpp's LoadAll), with what the YAML frontend takes to build the IR of the apply figures' policy."""
    bd = {r["label"]: r for r in rows}
    label = next((w["label"] for w in workloads if w["kind"] == "rules" and w["size"] == 10000), None)
    frontend = ""
    if label in bd and "read_ms" in bd[label]["check"][0]:
        frontend = (f" Building the IR as well: the YAML frontend takes {med(bd[label]['check'], 'read_ms'):.1f} ms "
                    f"for the apply figures' 10,000-rule policy (`check --json`'s `ms.read`: the file read, parsed "
                    f"and turned into the IR; `fwengine check` as a whole {med(bd[label]['check'], 'wall_ms'):.1f} ms).")
    if not rd or rd.get("skipped"):
        return (f"**Reading the 10,000-rule policy ≤ 25 ms — not measured in this run.**{frontend}"
                if frontend else None)
    own = statistics.median(rd["fwengine_ms"])
    rules = rd["policies"] * 10
    if rules < 10000:
        verdict = "not measured at full size"
    else:
        verdict = "met" if own <= 25 else "not met"
    return (f"**Reading the {rules:,}-rule policy ({rd['bytes'] / 1e6:.1f} MB of YAML) ≤ 25 ms — {verdict}"
            f".** fwengine's reader takes {own:.1f} ms; yaml-cpp's `LoadAll` "
            f"{statistics.median(rd['yamlcpp_ms']):.1f} ms ({statistics.median(rd['yamlcpp_ms']) / own:.1f}× as long), "
            f"libyaml's events into the same tree {statistics.median(rd['libyaml_ms']):.1f} ms.{frontend}")


# ---------------------------------------------------------------- ebpf per packet

def measure_ebpf(args):
    """ebpf_bench's figures (backends/ebpf/tests/bench.cpp, in a namespace of its own): ns per packet through
    BPF_PROG_TEST_RUN for fwengine's programs and for the floor (one LPM lookup alone), in alternation, and
    the times of applies and of a one-rule change. A dict; {"skipped": why} where it is not built, and
    {"skipped": why, "failed": True} where it failed (run.py then exits 1, after writing the report)."""
    if not os.access(args.ebpf_bench, os.X_OK):
        return {"skipped": f"{args.ebpf_bench} is not built"}
    sizes = ",".join(str(n) for n in args.ebpf_sizes)
    argv = [args.ebpf_bench, "--json", "--rounds", str(args.runs), "--repeat", str(args.ebpf_repeat),
            "--rules", sizes, "--address-rules", sizes, "--elements", sizes]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        return {"skipped": "ebpf_bench took over 20 minutes", "failed": True}
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return {"skipped": f"ebpf_bench exited {proc.returncode}: {why}", "failed": True}
    return json.loads(proc.stdout)


def ebpf_section(eb, args):
    cases = [c for c in eb.get("cases", []) if not c["over_limit"]]
    lines = ["## ebpf: ns per packet (BPF_PROG_TEST_RUN)", "",
             f"`ebpf_bench` (backends/ebpf/tests/bench.cpp) in a network namespace of its own: the ebpf backend "
             "applies a policy of N rules (each naming one TCP destination port the probe does not have, so they "
             "form one port-indexed run, then the accepting rule), of N such \"address rules\" that each also name "
             "a source /30 of their own (so they form one address run: one lookup in a hash of the members, as they "
             "all have one prefix length), or of one rule whose source "
             "set holds N distinct /30 networks (the probe's among them); then one TCP SYN from 10.0.0.20 runs through the program "
             f"attached to the interface's ingress with `BPF_PROG_TEST_RUN` (on one CPU, the last), repeated {eb['repeat']:,} times per "
             "run (the kernel reports the mean). The floor is `floor.bpf.c`: one LPM-trie lookup of the packet's "
             "source in a trie of the same networks, nothing else. fwengine's program and the floor run in "
             f"alternation, {eb['rounds']} runs each; median (min–max) ns per packet; ratio = fwengine / floor. "
             "\"apply\" is one apply of the case's policy (the first also loads and pins the programs).", ""]
    if eb.get("skipped"):
        return lines + [f"Not measured in this run: {eb['skipped']}.", ""]
    lines += ["| workload | fwengine ebpf (ns/packet) | floor: one LPM lookup | ratio | apply (ms) |",
              "|---|---|---|---|---|"]
    for c in eb["cases"]:
        what = f"{c['n']:,} " + {"rules": "rules", "address-rules": "address rules"}.get(c["kind"], "set elements")
        if c["over_limit"]:
            lines.append(f"| {what} | over the rule limit (refused at render) | | | |")
            continue
        samples = [{"ns": v} for v in c["ns"]]
        floor = [{"ns": v} for v in c["floor_ns"]]
        lines.append(f"| {what} | {cell(samples, 'ns')} | {cell(floor, 'ns')} | "
                     f"{statistics.median(c['ns']) / statistics.median(c['floor_ns']):.2f} | {c['apply_ms']:.1f} |")
    change = eb.get("change", {})
    if change.get("ms"):
        lines += ["", f"Policy update: one rule changed in the {change['rules']:,}-rule policy (both generations "
                  f"held it before; maps only, no program load): {cell([{'ms': v} for v in change['ms']], 'ms')} "
                  f"ms over {len(change['ms'])} applies."]
    return lines + [""]


def ebpf_speed_target(eb):
    """The paragraph of issue #6's target: under 100 ns per packet at 10,000 rules, and flat in the
    number of CIDRs (the set cases, one LPM lookup whatever their size: within 1.25× across N)."""
    cases = [c for c in eb.get("cases", []) if not c["over_limit"]]
    at_10k = [c for c in cases if c["kind"] == "rules" and c["n"] == 10_000]
    set_cases = [c for c in cases if c["kind"] == "elements"]
    sets = [statistics.median(c["ns"]) for c in set_cases]
    if eb.get("skipped") or not at_10k or len(sets) < 2:
        return None
    ns = statistics.median(at_10k[0]["ns"])
    spread = max(sets) / min(sets)
    met = ns < 100 and spread <= 1.25
    names = {"address-rules": "address rules", "elements": "set elements"}
    others = ", ".join(f"{c['n']:,} {names.get(c['kind'], c['kind'])} {statistics.median(c['ns']):.0f} ns"
                       for c in cases if c["n"] == 10_000 and c["kind"] != "rules")
    return (f"**ebpf per-packet cost under 100 ns at 10,000 rules and flat in the number of CIDRs (issue #6) — "
            f"{'met' if met else 'not met'}.** {ns:.0f} ns per packet at 10,000 rules (median of "
            f"{len(at_10k[0]['ns'])} runs of {eb['repeat']:,} packets; at 10,000 also: {others}); the set cases "
            f"take {min(sets):.0f}–{max(sets):.0f} ns from {min(c['n'] for c in set_cases):,} to "
            f"{max(c['n'] for c in set_cases):,} CIDRs ({spread:.2f}× across N; flat is at "
            "most 1.25×).")


def ebpf_target(eb):
    """The paragraph of issue #10's ebpf target (≤ 2× the floor, flat in N). Flatness is judged within
    each kind of case (a rules case walks more rules than a set case), on the ratios to the floor, which
    was measured in alternation with each case (the machine's noise between cases cancels), and on
    fwengine's own nanoseconds: the floor's trie is not the program's, and a floor that happens to
    grow with N would hide a program that grows with it."""
    cases = [c for c in eb.get("cases", []) if not c["over_limit"]]
    if eb.get("skipped") or not cases:
        return None
    medians = [statistics.median(c["ns"]) for c in cases]
    ratios = {id(c): statistics.median(c["ns"]) / statistics.median(c["floor_ns"]) for c in cases}
    spread, own_spread = {}, {}
    for kind in sorted({c["kind"] for c in cases}):
        of_kind = [c for c in cases if c["kind"] == kind]
        spread[kind] = max(ratios[id(c)] for c in of_kind) / min(ratios[id(c)] for c in of_kind)
        own = [statistics.median(c["ns"]) for c in of_kind]
        own_spread[kind] = max(own) / min(own)
    flat = all(v <= 1.25 for v in list(spread.values()) + list(own_spread.values()))
    met = flat and max(ratios.values()) <= 2.0
    over = [f"{c['n']:,} {c['kind']}" for c in eb["cases"] if c["over_limit"]]
    return (f"**ebpf per-packet cost ≤ 2× the floor (one LPM lookup) and flat in N — "
            f"{'met' if met else ('half met: flat' if flat else 'not met')}.** fwengine's program takes "
            f"{min(medians):.0f}–{max(medians):.0f} ns per packet across the cases, "
            f"{min(ratios.values()):.2f}–{max(ratios.values()):.2f}× the floor measured beside it; "
            f"{'flat' if flat else 'not flat'} in N (the spread across N of the ratio, and of the program's "
            "own time: " + ", ".join(f"{kind} {v:.2f}× and {own_spread[kind]:.2f}×" for kind, v in spread.items())
            + "; flat is at most 1.25× for both)."
            + (f" Over the rule limit: {', '.join(over)}." if over else "")
            + " Where the rest goes: backends/ebpf/README.md.")


# ---------------------------------------------------------------- dataplane

SERVER_ADDR, CLIENT_ADDR = "192.168.77.2", "192.168.77.1"  # in MATCHING_CIDR: the probe hits the last rule
LOAD_THREADS = min(2, os.cpu_count() or 1)  # client and server threads: one client/server pair per CPU
MODES = (("connect", "connections_per_s"), ("request", "requests_per_s"))
WARMUP_SECONDS = 0.2  # tcprate's default: not counted


def backend_plugins(args):
    """The backends `fwengine plugins` lists."""
    out = subprocess.run([args.fwengine, "plugins"], capture_output=True, text=True).stdout
    return {f[0] for f in (line.split() for line in out.splitlines()) if len(f) > 1 and f[1] == "backend"}


# The floor of every stateful ruleset: one `ct state` rule makes the kernel track every connection of the
# namespace, which costs each new connection its conntrack entry whatever the rules are.
NFT_CONNTRACK_ALONE = """table inet conntrack {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
  }
}
"""


def build_dataplane(args, workdir):
    """One figure per rule count: no firewall, the linear rulesets of the apply figures, and fwengine's apply
    of the same policy with each backend, all in the server namespace."""
    figures = []
    plugins = backend_plugins(args)
    for n in args.dataplane_sizes:
        rules = linear_rules(n, args.seed)
        where = workdir / f"dataplane-{n}"
        where.mkdir()
        policy = where / "policy.yaml"
        title = f"{n} rules, seed {args.seed}, generated by integration/bench/run.py"
        policy.write_text(yaml_rules_policy(rules, title))
        (where / "linear.nft").write_text(nft_linear(rules))
        (where / "linear.rules").write_text(iptables_linear(rules))
        (where / "conntrack.nft").write_text(NFT_CONNTRACK_ALONE)
        contenders = [
            Contender("none", "no firewall", []),
            Contender("conntrack", "conntrack alone", [], prepare=[Step(["nft", "-f", where / "conntrack.nft"])]),
            Contender("nft-linear", "nft -f linear", [], prepare=[Step(["nft", "-f", where / "linear.nft"])]),
            Contender("ipt-linear", "iptables-legacy-restore linear", [],
                      prepare=[Step(["iptables-legacy-restore"], stdin=where / "linear.rules")]),
        ]
        for backend in args.backends:
            apply = fwengine_step(args, policy, "--backend", backend, "--netns", args.dp_server, "apply")
            c = Contender(f"fwe-{backend}", f"fwengine {backend}", [], prepare=[apply], fwengine=True)
            if backend not in plugins:
                c.skipped = f"not measured: fwengine has no {backend} plugin here"
            contenders.append(c)
        figures.append(Figure("dataplane", "Dataplane: TCP connect and request rates", f"N={n:,}", contenders))
    return figures


def wire(server, client):
    """client --veth-- server, made from inside the client namespace (the root namespace never sees a link)."""
    for argv, ns in ((["ip", "link", "add", "fwe-c", "type", "veth", "peer", "name", "fwe-s", "netns", server.name],
                      client),
                     (["ip", "addr", "add", f"{CLIENT_ADDR}/24", "dev", "fwe-c"], client),
                     (["ip", "link", "set", "fwe-c", "up"], client),
                     (["ip", "addr", "add", f"{SERVER_ADDR}/24", "dev", "fwe-s"], server),
                     (["ip", "link", "set", "fwe-s", "up"], server),
                     # every connect-mode connection leaves a TIME_WAIT socket on the client's side
                     (["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"],
                      client)):
        subprocess.run(argv, check=True, preexec_fn=ns.enter)


def start_server(args, server):
    proc = subprocess.Popen([args.tcprate, "server", "--port", str(MATCHING_PORT), "--threads", str(LOAD_THREADS)],
                            stdout=subprocess.PIPE, preexec_fn=server.enter)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    if not ready or proc.stdout.readline().strip() != b"ready":
        proc.kill()
        proc.wait()
        raise RuntimeError("tcprate server did not start")
    return proc


def dataplane_run(c, args):
    """One run of one contender in a fresh pair of namespaces: the ruleset (untimed), then each mode.
    Returns (sample, "") or (None, why the contender cannot be measured)."""
    with Namespace(args.dp_server) as server, Namespace(args.dp_client) as client:
        proc = None
        try:
            wire(server, client)
            try:
                run_steps(c.prepare, server)
            except RuntimeError as e:  # e.g. a backend refusing the policy: a finding, not a harness failure
                return None, "not measured: " + re.sub(r"^.*? exited \d+: ", "", str(e)).splitlines()[0]
            proc = start_server(args, server)
            time.sleep(SETTLE_SECONDS)
            sample = {}
            for mode, key in MODES:
                out = subprocess.run([args.tcprate, "client", "--host", SERVER_ADDR, "--port", str(MATCHING_PORT),
                                      "--mode", mode, "--seconds", str(args.dataplane_seconds),
                                      "--warmup", str(WARMUP_SECONDS), "--threads", str(LOAD_THREADS)],
                                     capture_output=True, text=True, preexec_fn=client.enter,
                                     timeout=args.dataplane_seconds + 60)
                if out.returncode != 0:
                    return None, (f"not measured: no {mode} got through ({out.stdout.strip() or out.stderr.strip()})"
                                  if c.key != "none" else f"tcprate failed: {out.stdout}{out.stderr}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                sample[key], sample[f"{mode}_errors"] = result[key], result["errors"]
            return sample, ""
        finally:
            if proc:
                proc.kill()
                proc.wait()
            if c.key == "fwe-ebpf":  # unpins the maps; deleting the namespace would not
                run_steps([Step([args.fwengine, "--backend", "ebpf", "--netns", server.name, "flush"], in_netns=False)],
                          server, check=False)


def measure_dataplane(figures, args):
    """Alternation A B C A B C ...; a contender that cannot be measured (a refused policy, probe traffic
    dropped) is not tried again."""
    progress = Progress(sum(len(f.contenders) for f in figures) * args.runs)
    for fig in figures:
        for run in range(args.runs):
            for c in fig.contenders:
                progress.step(f"{fig.title}, {fig.size}: {c.label} (run {run + 1}/{args.runs})")
                if c.skipped:
                    continue
                sample, why = dataplane_run(c, args)
                if c.key == "none" and why:
                    raise RuntimeError(why)
                if why:
                    c.skipped = why
                else:
                    c.samples.append(sample)
    progress.finish()


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
        # Reports from before transaction_ms existed: the apply step stands in for it.
        measured = [s for s in f.samples if "transaction_ms" in s]
        transaction = med(measured, "transaction_ms") if measured else kernel
        speedup = ratio(rep, f)
        fast_kernel, fast_end = transaction <= 1.0, speedup >= 100
        verdict = "met" if fast_kernel and fast_end else (
            "half met: the kernel's part is" if fast_kernel else "not met")
        out.append(f"**nft, one-rule change in the 50,000-rule policy: ≤ 1 ms of kernel time and ≥ 100× faster "
                   f"than a full `nft -f` replace — {verdict}.** "
                   + (f"The kernel transaction takes {transaction:.2f} ms (`apply --json`'s `transaction_ms`: "
                      "sent, every answer read); the backend's" if measured else "The backend's")
                   + " apply step "
                   f"takes {kernel:.2f} ms (the process spends {sys_ms:.1f} ms in the kernel in all, "
                   f"{med(f.samples, 'wall_ms'):.1f} ms wall end to end); a full linear replace takes "
                   f"{med(rep.samples, 'wall_ms'):.1f} ms, {speedup:.1f}× fwengine's end-to-end time."
                   + (" Most of the end-to-end time is not the kernel's: the whole policy is read, compiled "
                      "and rendered again before the difference is sent."
                      if kernel < 0.5 * med(f.samples, "wall_ms") else "") + where(label, f, "nft"))
        lines = contender(fig, "lines")
        if lines and lines.samples:
            moved = [s for s in lines.samples if "transaction_ms" in s]
            out[-1] += (f" A comment line inserted at the top of the policy (every rule one line down) takes "
                        f"{med(lines.samples, 'wall_ms'):.1f} ms end to end"
                        + (f", {med(moved, 'transaction_ms'):.2f} ms of it the kernel transaction" if moved else "")
                        + ": only set `where` changes.")
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
        ruleset = (f"; the ruleset alone {med(f.samples, 'kmem_ruleset_kib') / 1024:.2f} MiB "
                   f"({med(f.samples, 'kmem_ruleset_kib') * 1024 / 50000:.0f} bytes a rule), the rest is "
                   f"charged for its files in /run" if all("kmem_ruleset_kib" in s for s in f.samples) else "")
        out.append(f"**Kernel memory added by the 50,000-rule policy ≤ 8 MiB (nft) — "
                   f"{'met' if kmem <= 8 else 'not met'}.** fwengine leaves {kmem:.2f} MiB of kernel "
                   f"memory{ruleset}. The linear `nft -f` ruleset holds {med(lin.samples, 'kmem_kib') / 1024:.1f} "
                   f"MiB, our own text loaded by `nft -f` {med(own.samples, 'kmem_kib') / 1024:.2f} MiB (the same "
                   f"objects).")
        per_rule = contender(fig, "per-rule")
        if per_rule and per_rule.samples and "kmem_kib" in per_rule.samples[0]:
            kmem = med(per_rule.samples, "kmem_kib") / 1024
            out[-1] += (f" With `--backend-option counters=rule` (hits counted per merged rule, not per source "
                        f"rule: no per-CPU counter in each set element) it leaves {kmem:.2f} MiB — "
                        f"{'within' if kmem <= 8 else 'over'} the target.")
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
    calico = next((w for w in workloads if w["kind"] == "calico"), None)
    if calico:
        for key, name in (("nft", "nft"), ("ipt", "iptables")):
            full, change = find(figures, f"{key}-full", calico["label"]), find(figures, f"{key}-change", calico["label"])
            if not full or not contender(full, "fwe").samples:
                continue
            f, o = contender(full, "fwe"), contender(full, "own")
            text = (f"**{name}, the Calico workload ({calico['label']}, {args.calico_cidrs:,} networks in "
                    f"GlobalNetworkSets; no target of its own).** Full apply {med(f.samples, 'wall_ms'):.1f} ms end "
                    f"to end (apply step {med(f.samples, 'backend_ms'):.1f} ms, peak RSS "
                    f"{med(f.samples, 'rss_kib') / 1024:.1f} MiB)")
            if o and o.samples:
                text += f", {ratio(f, o):.2f}× the time of loading our own text with the plain tool"
            if change and contender(change, "fwe").samples:
                c = contender(change, "fwe")
                text += (f"; one rule changed: {med(c.samples, 'wall_ms'):.1f} ms (apply step "
                         f"{med(c.samples, 'backend_ms'):.1f} ms)")
            out.append(text + "." + where(calico["label"], f, name))
    return out


def dataplane_target(dp, args):
    """The paragraph of the dataplane target: every fwengine backend at every size, both rates."""
    sizes = " and ".join(fig.size for fig in dp)
    measured, refused, met = [], [], True
    for fig in dp:
        base = contender(fig, "none")
        for c in fig.contenders:
            if not c.fwengine:
                continue
            if not c.samples:
                refused.append(f"{c.label} at {fig.size} ({c.skipped.removeprefix('not measured: ')})")
                met = False
                continue
            rates = []
            for mode, key in MODES:
                r = ratio(c, base, key)
                # each client/server pair keeps one CPU busy, so threads / rate is CPU time per transaction
                extra = LOAD_THREADS * (1 / med(c.samples, key) - 1 / med(base.samples, key)) * 1e6
                rates.append(f"{mode} {r:.2f}" + (f" (+{extra:,.1f} µs)" if r < 0.95 else ""))
                met = met and r >= 0.95
            measured.append(f"{c.label} at {fig.size}: {', '.join(rates)}")
    linear = [f"{c.label} at {fig.size}: " + ", ".join(f"{mode} {ratio(c, contender(fig, 'none'), key):.2f}"
                                                    for mode, key in MODES)
              for fig in dp for c in fig.contenders if c.key.endswith("-linear") and c.samples]
    text = (f"**Dataplane TCP connect and request rates with the {sizes} policies, each backend: ≥ 0.95 of no "
            f"firewall — {'met' if met else 'not met'}.** Rate / rate with no firewall (medians); below 0.95, "
            f"the CPU time a connection or a request costs more than with no firewall ({LOAD_THREADS} "
            "client/server pairs, each keeping one CPU busy): " + "; ".join(measured) + ".")
    if refused:
        text += " Not measured: " + "; ".join(refused) + "."
    if linear:
        text += " The linear rulesets, for comparison: " + "; ".join(linear) + "."
    # What conntrack alone costs, and fwengine's rates over that floor.
    floor, over_floor = [], []
    for fig in dp:
        ct = contender(fig, "conntrack")
        if not (ct and ct.samples):
            continue
        floor.append(f"at {fig.size} " + ", ".join(f"{mode} {ratio(ct, contender(fig, 'none'), key):.2f}"
                                                  for mode, key in MODES))
        for c in fig.contenders:
            if c.fwengine and c.samples:
                over_floor.append(f"{c.label} at {fig.size}: " +
                                  ", ".join(f"{mode} {ratio(c, ct, key):.2f}" for mode, key in MODES))
    if floor:
        text += (" Conntrack alone (one `ct state established,related accept` rule in nft, so that the kernel "
                 "tracks every connection, as every stateful ruleset makes it do): " + "; ".join(floor) +
                 "; fwengine's rates over conntrack alone's: " + "; ".join(over_floor) + ".")
    # fwengine's set-based ruleset against the linear ruleset of the same tool, rate over rate.
    against = []
    for fig in dp:
        for ours, theirs in (("fwe-nft", "nft-linear"), ("fwe-iptables", "ipt-linear")):
            a, b = contender(fig, ours), contender(fig, theirs)
            if a and b and a.samples and b.samples:
                against.append(f"{a.label} / {b.label} at {fig.size}: " +
                               ", ".join(f"{mode} {ratio(a, b, key):.1f}×" for mode, key in MODES))
    if against:
        text += " Set-based against linear (the same tool's rates, fwengine's over the linear ruleset's): " + \
            "; ".join(against) + "."
    return text


def dataplane_section(dp, args, plot):
    lines = [f"## {dp[0].title}", "",
             f"Client namespace —veth— server namespace, both made afresh for each run and deleted after it; the "
             "ruleset is loaded into the server namespace (its input: host policy) before the server starts "
             f"(untimed). The client ({CLIENT_ADDR}) connects to port {MATCHING_PORT} of the server "
             f"({SERVER_ADDR}): every packet it sends is accepted only by the policy's last rule, so a linear "
             "ruleset walks all of it. The linear rulesets are those of the apply figures (one chain, no "
             "conntrack); \"conntrack alone\" is one nftables rule, `ct state established,related accept` "
             "(policy accept), which makes the kernel track every connection as every stateful ruleset does; "
             "\"fwengine X\" is `fwengine --backend X apply` of the same policy. Load: "
             f"`tcprate` (integration/bench/tcprate.cpp), {LOAD_THREADS} client and {LOAD_THREADS} server "
             "threads, client and server thread i pinned to the same CPU, one 64-byte request and 64-byte "
             "response in flight per connection; *connect*: a new connection per request, closed by the client "
             "after the response; *request*: requests on persistent connections. "
             f"{args.dataplane_seconds:g} s per mode after {WARMUP_SECONDS:g} s of warm-up; the contenders run "
             f"in alternation (A B C ...), {args.runs} run{'s' if args.runs != 1 else ''} each. Median (min–max); "
             "ratio = rate / rate with no firewall (higher is better; the target is ≥ 0.95).", ""]
    head = ["workload", "contender", "connections/s", "ratio", "requests/s", "ratio"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for fig in dp:
        base = contender(fig, "none")
        for c in fig.contenders:
            row = [fig.size, c.label]
            for _, key in MODES:
                row += [cell(c.samples, key, "{:,.0f}", runs=args.runs),
                        ratio_text(c, base, key) if c is not base else "1"]
            lines.append("| " + " | ".join(row) + " |")
            if c.skipped:
                notes.append(f"- {c.label}, {fig.size}: {c.skipped}.")
            errors = sum(s.get(f"{mode}_errors", 0) for s in c.samples for mode, _ in MODES)
            if errors:
                notes.append(f"- {c.label}, {fig.size}: {errors} connections or requests failed (timed out after "
                             "1 s or refused) over all runs.")
    lines.append("")
    if notes:
        lines += notes + [""]
    if plot:
        lines += [f"![{dp[0].title}]({plot})", ""]
    return lines


# ---------------------------------------------------------------- plots

APPLY_PLOTS = ("nft-full", "nft-change", "ipt-full", "ipt-change")  # rule workloads: time against N


def gnuplot_text(text):
    return "'" + text.replace("'", "''") + "'"


def draw(script, png):
    """Runs gnuplot; returns "" or why the PNG was not written."""
    try:
        out = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if out.returncode != 0 or not png.exists():
        return out.stderr.strip()[:300] or "no PNG written"
    return ""


def apply_plot(figs, png, data):
    """Time against N, log-log, one line per contender with its min–max."""
    labels = {}
    for fig in figs:
        for c in fig.contenders:
            labels.setdefault(c.key, c.label)
    blocks, titles = [], []
    for key, label in labels.items():
        points = []
        for fig in figs:
            c = contender(fig, key)
            if c and c.samples:
                values = [s["wall_ms"] for s in c.samples]
                n = fig.size[2:].replace(",", "")
                points.append(f"{n} {statistics.median(values)} {min(values)} {max(values)}")
        if points:
            blocks.append("\n".join(points))
            titles.append(label)
    data.write_text("\n\n\n".join(blocks) + "\n")
    plots = ", ".join(f"{gnuplot_text(str(data))} index {i} using 1:2:3:4 with yerrorlines title {gnuplot_text(t)}"
                      for i, t in enumerate(titles))
    return draw(f"""set terminal pngcairo size 900,560 noenhanced font ',10'
set output {gnuplot_text(str(png))}
set title {gnuplot_text(figs[0].title + ' (log-log; median, min–max)')}
set logscale xy
set xlabel 'rules (N)'
set ylabel 'wall time from fork to exit, ms'
set key top left
set grid
plot {plots}
""", png)


def dataplane_plot(dp, png, tmp):
    """Per contender, its rate / the rate with no firewall at each size; the target as a dashed line."""
    panels = []
    for mode, key in MODES:
        data = tmp / f"dataplane-{mode}.dat"
        rows = ['"contender" ' + " ".join(f'"{fig.size}"' for fig in dp)]
        for c in dp[0].contenders[1:]:
            cells = []
            for fig in dp:
                other = contender(fig, c.key)
                r = ratio(other, contender(fig, "none"), key) if other and other.samples else None
                cells.append(f"{r:.4f}" if r is not None else "-")
            rows.append(f'"{c.label}" ' + " ".join(cells))
        data.write_text("\n".join(rows) + "\n")
        columns = ", ".join(f"{gnuplot_text(str(data))} using {i + 2}{':xtic(1)' if i == 0 else ''}"
                            for i in range(len(dp)))
        panels.append(f"set title 'TCP {mode} rate'\nplot {columns}")
    return draw(f"""set terminal pngcairo size 1100,560 noenhanced font ',10'
set output {gnuplot_text(str(png))}
set multiplot layout 1,2 title 'Dataplane: rate with the ruleset / rate with no firewall (median; target 0.95)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set datafile missing '-'
set key autotitle columnhead top right
set yrange [0:1.2]
set grid ytics
set xtics rotate by -25
set arrow 1 from graph 0, first 0.95 to graph 1, first 0.95 nohead dashtype 2 linecolor rgb 'red'
""" + "\n".join(panels) + "\nunset multiplot\n", png)


def write_plots(path, figures, dp):
    """PNGs next to the report: {figure title: file name}, and what could not be drawn."""
    if not shutil.which("gnuplot"):
        return {}, ["gnuplot is not installed (Debian package gnuplot-nox), so this report has no plots"]
    files, problems = {}, []
    with tempfile.TemporaryDirectory(prefix="fwe-bench-plot-") as tmp:
        todo = []
        for key in APPLY_PLOTS:
            figs = [f for f in figures if f.key == key and f.size.startswith("N=")]
            if figs:
                todo.append((key, figs[0].title,
                             lambda png, figs=figs, key=key: apply_plot(figs, png, Path(tmp) / f"{key}.dat")))
        if dp:
            todo.append(("dataplane", dp[0].title, lambda png: dataplane_plot(dp, png, Path(tmp))))
        for key, title, plot in todo:
            png = path.parent / f"{path.stem}-{key}.png"
            png.unlink(missing_ok=True)
            why = plot(png)
            if why:
                problems.append(f"the plot {png.name} was not drawn: {why}")
            else:
                files[title] = png.name
    return files, problems


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


def state_table(figs, args):
    """Of fwengine's kernel memory, what its files in /run account for; and the files themselves."""
    rows = [(fig, contender(fig, "fwe")) for fig in figs]
    rows = [(fig, f) for fig, f in rows if any("kmem_ruleset_kib" in s for s in f.samples)]
    if not rows:
        return []
    lines = ["", "fwengine's part of that: the ruleset alone, and its files in /run (tmpfs, so RAM; the "
             "policy kept for `apply --confirm` to roll back to, and the backend's record of its sets), "
             "whose inodes and page-cache entries the kernel charges as kernel memory too (MiB):", "",
             "| workload | kernel memory | of it: the ruleset | files in /run |", "|---|---|---|---|"]
    for fig, f in rows:
        lines.append(f"| {fig.size} | {cell(f.samples, 'kmem_kib', scale=1 / 1024, runs=args.runs)} | "
                     f"{cell(f.samples, 'kmem_ruleset_kib', scale=1 / 1024, runs=args.runs)} | "
                     f"{cell(f.samples, 'state_kib', scale=1 / 1024, runs=args.runs)} |")
    return lines


def write_report(path, figures, workloads, rows, prof, started, elapsed, args, dp, eb, rd):
    """The Markdown report and its plots; returns what could not be drawn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fw_version = tool_version([args.fwengine, "version"])
    plots, plot_problems = write_plots(path, figures, dp)
    for problem in plot_problems:
        print(f"run.py: {problem}", file=sys.stderr)
    options = (" --quick" if args.quick else "") + ("" if set(args.figures) == set(FIGURES) else
                                                    f" --figures {','.join(args.figures)}")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `integration/bench/run.py{options}` on "
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
    ]
    workloads_text = (
        f"- Workloads (seed {args.seed}): N rules `source CIDR + TCP dport -> accept` (distinct random "
        "10.x.y.0/24, random ports 10000–10999), the rule test traffic would hit "
        f"(`{MATCHING_CIDR}` port {MATCHING_PORT}) last, default drop; in fwengine's YAML one chain per "
        f"{RULES_PER_CHAIN} rules, every rule with its address inline.")
    method = [
        workloads_text + " The alternatives load the same "
        "rules as one linear chain (`nft -f`, `iptables-legacy-restore`) or as an `ipset` `hash:net,port` "
        "plus one rule. The set workload is one rule `src: allow, tcp dport 5201` over a set of "
        f"{args.set_size:,} distinct /30 networks; its plain form is one nftables interval set, or an "
        "`ipset` `hash:net` plus one rule. \"Changed\" variants differ in one rule (rule 0's port) or in one "
        "set element. The Calico workload is issue #10's: "
        f"{args.calico_policies:,} GlobalNetworkPolicies of {CALICO_RULES} rules (`Allow` TCP to one port from "
        f"`source.selector` of one of {CALICO_SETS} GlobalNetworkSets) over {args.calico_cidrs:,} random /32 "
        "networks in those sets, for one HostEndpoint (`--frontend calico --node bench`); its only alternative "
        "is our own text (Felix, Calico's own dataplane, is not here).",
        "- \"own text\" is what `fwengine render` prints for the same policy, loaded with `nft -f` (or with "
        "`ipset restore` + `iptables-legacy-restore --noflush` + `ip6tables-legacy-restore --noflush`).",
        f"- Every figure's contenders run in alternation, each round starting one contender later (A B C, B C A, C A B ...: a run pays for the memory the run before it freed, so no contender always follows the same one), {args.runs} runs each (a contender "
        f"whose run, with its untimed preparation, took over {args.budget:.0f} s got no more runs), in one "
        "throwaway network namespace. Before each run the namespace is emptied and the kernel gets "
        f"{SETTLE_SECONDS * 1000:.0f} ms to settle (untimed); for the change figures the original is "
        "loaded first (untimed). Alternatives are started from inside the namespace (the harness's thread "
        "enters it by `setns` while it starts them; no `ip netns exec`); fwengine enters it itself (`--netns`). "
        "Every command is started the same way, under GNU time, which the harness starts with `vfork`: "
        "~9 ms from start to exit for `/bin/true` here (a forking start took ~20); in the full applies, "
        "through a shell that first moves itself into the memory cgroup (below; ~1 ms more), for every "
        "contender alike.",
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
    ]
    lines += method if figures else [workloads_text]  # the dataplane describes its alternatives itself
    lines += ["- The machine is shared by several busy sessions and noisy: compare the ratios, which were "
              "measured side by side, rather than the absolute numbers."]
    lines += [f"- Plots: {problem}." for problem in plot_problems] + [""]
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
            lines += state_table(figs, args)
        lines.append("")
        if title in plots:
            lines += [f"![{title}]({plots[title]})", ""]
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
    if dp:
        lines += dataplane_section(dp, args, plots.get(dp[0].title))
    if rd:
        lines += read_section(rd)
    if eb:
        lines += ebpf_section(eb, args)
    lines += ["## Targets (issues #4, #5, #6, #10)", ""]
    paragraphs = targets(figures, workloads, rows, args) + ([dataplane_target(dp, args)] if dp else [])
    paragraphs += [p for p in [read_target(rd, workloads, rows), ebpf_speed_target(eb) if eb else None,
                               ebpf_target(eb) if eb else None] if p]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    calico = "" if any(w["kind"] == "calico" for w in workloads) else " the Calico workload;"
    lines += [f"Not measured by this harness (issue #10):{calico} the ebpf backend's apply figures against "
              "another tool (none loads the same maps), `firewall-cmd --reload`: "
              "[benchmarks-firewalld.md](benchmarks-firewalld.md).", ""]
    if args.notes and Path(args.notes).exists():
        lines += [Path(args.notes).read_text().rstrip(), ""]
    path.write_text("\n".join(lines))
    return plot_problems


# ---------------------------------------------------------------- main


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fwengine", default=str(DEFAULT_FWENGINE), help="the engine (default: build-bench/bin)")
    p.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only, 3 runs: a smoke run")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                   help="rule counts, comma-separated (default 100,1000,10000,50000)")
    p.add_argument("--set-size", type=int, help="addresses in the set workload (default 100000; 0 = none)")
    p.add_argument("--calico-policies", type=int,
                   help="GlobalNetworkPolicies of 10 rules in the Calico workload (default 1000, --quick 100; 0 = "
                        "no Calico workload)")
    p.add_argument("--calico-cidrs", type=int,
                   help="networks in the Calico workload's 50 GlobalNetworkSets (default 50000, --quick 1000)")
    p.add_argument("--runs", type=int, help="runs per contender (default 5, --quick 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--budget", type=float, default=60,
                   help="seconds: a contender whose run takes longer gets no more runs (default 60)")
    p.add_argument("--backend", dest="backends", action="append", choices=["nft", "iptables", "ebpf"],
                   help="repeatable (default: all three; ebpf is measured in the dataplane figures only)")
    p.add_argument("--figures", type=lambda s: s.split(","), default=list(FIGURES),
                   help="comma-separated: apply (apply times, RSS, kernel memory, breakdown, profile), "
                        "read (YAML readers), dataplane (TCP connect and request rates), ebpf (ns per packet "
                        "against the floor, policy-update time); default all")
    p.add_argument("--dataplane-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   help="rule counts of the dataplane figures (default 10000,50000, --quick 1000)")
    p.add_argument("--dataplane-seconds", type=float,
                   help="seconds per dataplane rate measurement (default 3, --quick 1)")
    p.add_argument("--tcprate", help="the dataplane load generator (default: tcprate beside --fwengine)")
    p.add_argument("--ebpf-bench", help="the ebpf figures' program (default: ebpf_bench beside --fwengine)")
    p.add_argument("--yaml-bench", help="the reading figure's program (default: yaml_bench beside --fwengine)")
    p.add_argument("--read-policies", type=int,
                   help="GlobalNetworkPolicies of 10 rules in the reading figure (default 1000, --quick 100)")
    p.add_argument("--ebpf-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   help="rule counts and set sizes of the ebpf figures (default 10,1000,10000,100000, --quick 10,1000)")
    p.add_argument("--ebpf-repeat", type=int,
                   help="packets per BPF_PROG_TEST_RUN in the ebpf figures (default 1000000, --quick 100000)")
    p.add_argument("--require-plots", action="store_true",
                   help="exit 1 when a plot cannot be drawn (the smoke test: gnuplot-nox is a CI package)")
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
    if args.calico_policies is None:
        args.calico_policies = 100 if args.quick else 1000
    if args.calico_cidrs is None:
        args.calico_cidrs = 1000 if args.quick else 50000
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.dataplane_sizes is None:
        args.dataplane_sizes = [1000] if args.quick else [10000, 50000]
    if args.dataplane_seconds is None:
        args.dataplane_seconds = 1 if args.quick else 3
    args.tcprate = args.tcprate or str(Path(args.fwengine).parent / "tcprate")
    args.ebpf_bench = args.ebpf_bench or str(Path(args.fwengine).parent / "ebpf_bench")
    args.yaml_bench = args.yaml_bench or str(Path(args.fwengine).parent / "yaml_bench")
    if args.read_policies is None:
        args.read_policies = 100 if args.quick else 1000
    if args.ebpf_sizes is None:
        args.ebpf_sizes = [10, 1000] if args.quick else [10, 1000, 10000, 100000]
    if args.ebpf_repeat is None:
        args.ebpf_repeat = 100000 if args.quick else 1000000
    args.backends = args.backends or ["nft", "iptables", "ebpf"]
    if min(args.sizes + args.dataplane_sizes) < 2 or args.runs < 1 or (args.set_size and args.set_size < 2):
        p.error("sizes and --set-size must be at least 2, --runs at least 1")
    if not args.figures or not set(args.figures) <= set(FIGURES):
        p.error(f"--figures takes a comma-separated subset of {', '.join(FIGURES)}")
    if args.dataplane_seconds <= 0:
        p.error("--dataplane-seconds must be positive")
    return args


def save_raw(path, figures, workloads, rows, prof, started, elapsed, dp, eb, rd, args):
    def saved(figs):
        return [{"key": f.key, "title": f.title, "size": f.size,
                 "contenders": [{"key": c.key, "label": c.label, "samples": c.samples, "skipped": c.skipped,
                                 "fwengine": c.fwengine} for c in f.contenders]} for f in figs]
    data = {"started": started.isoformat(), "elapsed": elapsed, "prof": prof, "rows": rows,
            "args": {k: getattr(args, k) for k in ("fwengine", "quick", "sizes", "set_size", "runs", "seed", "budget",
                                                   "backends", "kmem_note", "figures", "dataplane_sizes",
                                                   "dataplane_seconds")},
            "workloads": [{k: w[k] for k in ("kind", "size", "label")} for w in workloads],
            "figures": saved(figures), "dataplane": saved(dp), "ebpf": eb, "read": rd}
    Path(path).write_text(json.dumps(data, indent=1))


def load_raw(path, args):
    data = json.loads(Path(path).read_text())
    for k, v in data["args"].items():
        setattr(args, k, v)
    args.figures = data["args"].get("figures", ["apply"])  # raw files from before the dataplane figures

    def loaded(figs):
        out = []
        for f in figs:
            contenders = []
            for c in f["contenders"]:
                contenders.append(Contender(c["key"], c["label"], [], fwengine=c.get("fwengine", c["key"] == "fwe")))
                contenders[-1].samples, contenders[-1].skipped = c["samples"], c["skipped"]
            out.append(Figure(f["key"], f["title"], f["size"], contenders))
        return out
    return (loaded(data["figures"]), data["workloads"], data["rows"], data["prof"],
            datetime.datetime.fromisoformat(data["started"]), data["elapsed"], loaded(data.get("dataplane", [])),
            data.get("ebpf"), data.get("read"))


def main():
    args = parse_args()
    if args.from_raw:
        results = load_raw(args.from_raw, args)
        return report(results, args)
    if os.geteuid() != 0:
        print("run.py: needs root (network namespaces, nft, iptables); skipped", file=sys.stderr)
        return SKIP
    needed = [GNU_TIME, "ip", "nft", "iptables-legacy-restore", "ip6tables-legacy-restore", "ipset"]
    needed += ["sysctl"] if "dataplane" in args.figures else []
    missing = [t for t in needed if not shutil.which(t)]
    missing += [p for p in [args.fwengine] + ([args.tcprate] if "dataplane" in args.figures else [])
                if not os.access(p, os.X_OK)]
    if missing:
        print(f"run.py: missing {', '.join(missing)}; skipped", file=sys.stderr)
        return SKIP
    args.fwengine, args.tcprate = str(Path(args.fwengine).resolve()), str(Path(args.tcprate).resolve())
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    # SIGTERM/SIGHUP become exceptions so that the namespace is deleted on the way out.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    # the dataplane's pair of namespaces is made afresh for every run, under these names
    args.dp_server, args.dp_client = f"fwe-bench-{os.getpid()}-srv", f"fwe-bench-{os.getpid()}-cli"
    with tempfile.TemporaryDirectory(prefix="fwe-bench-") as tmp, Namespace(f"fwe-bench-{os.getpid()}") as ns:
        args.ns = ns
        args.kmem = KernelMemory()
        args.kmem_note = (f"Not measured in this run: {args.kmem.why}." if args.kmem.why else
                          "Read from " + ("memory.stat `kernel` (cgroup v2)." if args.kmem.v2 else
                                         "memory.kmem.usage_in_bytes (cgroup v1)."))
        workdir = Path(tmp)
        figures, workloads, rows, prof, dp, eb, rd = [], [], [], None, [], None, None
        if "apply" in args.figures:
            figures, workloads = build_workloads(args, workdir)
            measure(figures, args, workdir)
            rows = breakdown(workloads, args)
            prof = None if args.no_profile else profile(workloads, args, workdir)
        if "dataplane" in args.figures:
            dp = build_dataplane(args, workdir)
            measure_dataplane(dp, args)
        if "read" in args.figures:
            rd = measure_read(args, workdir)
        if "ebpf" in args.figures and "ebpf" in args.backends:
            eb = measure_ebpf(args)
    results = (figures, workloads, rows, prof, started, time.monotonic() - t0, dp, eb, rd)
    if args.raw:
        save_raw(args.raw, *results, args)
    return report(results, args)


def report(results, args):
    problems = write_report(Path(args.output), *results[:-3], args, *results[-3:])
    print(f"wrote {args.output}")
    for name, figure in (("ebpf", results[-2]), ("read", results[-1])):
        if figure and figure.get("failed"):
            print(f"run.py: the {name} figures failed: {figure['skipped']}", file=sys.stderr)
            return 1
    if problems and args.require_plots:
        print("run.py: --require-plots: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
