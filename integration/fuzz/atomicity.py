#!/usr/bin/env python3
"""Crash atomicity: SIGKILL `fwengine apply` at random moments while it switches a namespace between two
rulesets A and B, and check after every kill that the kernel holds exactly A or exactly B, and that the
next apply works.

  atomicity.py --fwengine build/bin/fwengine --backend nft --kills 200

The kernel is read back with `fwengine status` (IR hash, drift, the rules behind the counters) and the
backend's own tools (nft: `nft -j list ruleset`; iptables: the legacy save output of every table for both
families and `ipset save`, each table compared on its own, of the slot in effect: the one whose gate set
is on; a switched-off slot beside it is counted, not compared; ebpf: our tc filters and the pinned maps'
names) and compared with the listings taken after complete applies of A and of B. Kill moments are drawn in microseconds from 0 to 0.9
times the measured apply time (a process start is part of it), half of them from its second half, where
the kernel is written.

With `--backend iptables:atomic=table` (the backend's option after a colon) a change is made table by
table: then each table, compared on its own, must be A or B, the sets those of A, B or both (the new sets
are made first and the old ones destroyed last), and where the tables are a mix `status` must report
drift.

Exit codes: 0 always A or B, 1 a mix (or a failed apply after a kill), 77 cannot run here.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

FUZZ_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ_DIR.parent))

import scenario  # noqa: E402

TOPOLOGY = {"links": [{"h": {"ifname": "eth0", "addresses": ["10.0.1.1/24", "fd00:1::1/64"]},
                       "p": {"ifname": "eth0", "addresses": ["10.0.1.2/24", "fd00:1::2/64"]}},
                      {"h": {"ifname": "eth1", "addresses": ["10.0.2.1/24", "fd00:2::1/64"]},
                       "q": {"ifname": "eth0", "addresses": ["10.0.2.2/24", "fd00:2::2/64"]}}]}


def policy(variant, stages):
    """A ruleset big enough that apply has many steps (several tables, sets of both families, many
    rules); A and B differ in every part, so any mix of them shows."""
    base = 1 if variant == "A" else 2
    rules = 40 if variant == "A" else 60
    sets = {f"{variant}-net{i}": [f"10.{base}{i}.{j}.0/24" for j in range(6)] + [f"fd00:{base}{i}:{j}::/64" for j in range(6)]
            for i in range(3)}
    chains = {}
    for stage in stages:
        chains[f"{variant}-{stage}"] = [
            {"protocol": "tcp" if r % 2 else "udp", "dport": 1000 * base + r,
             "src": f"{variant}-net{r % 3}", "action": "accept" if r % 3 else "drop"} for r in range(rules)]
    chains[f"{variant}-{stages[0]}"].append({"src": f"!{variant}-net0", "action": "log", "prefix": f"{variant} "})
    return {"apiVersion": "fwengine/v1", "failsafe": {"inbound": [f"tcp:{20 + base}"]}, "sets": sets,
            "chains": chains,
            "stages": {stage: [{"name": f"{variant}-{stage}", "endpoints": [
                {"name": "up", **({"oif": "eth+"} if stage in ("output", "untracked-out") else {"iif": "eth+"}),
                 "chains": [f"{variant}-{stage}"], "default": "accept" if variant == "A" else "continue"}]}]
                       for stage in stages}}


STAGES = {"A": ["untracked-in", "prednat", "input", "output"], "B": ["input", "forward", "output", "untracked-out"]}


class Kernel:
    """Reads back what the backend keeps in one namespace, as comparable text."""

    def __init__(self, engine, backend, netns, interfaces):
        self.engine, self.netns, self.interfaces = engine, netns, interfaces
        self.backend = scenario.plugin_of(backend)
        self.backend_args = ["--backend", self.backend]
        for option in scenario.backend_options_of(backend):
            self.backend_args += ["--backend-option", option]
        self.leftovers = False  # the last state() saw a switched-off slot (iptables)

    def exec(self, *command):
        completed = subprocess.run(["ip", "netns", "exec", self.netns, *command], capture_output=True, text=True)
        return completed.stdout

    def status(self):
        """`fwengine status` as read back from the kernel (hash, drift, counters' places; not the
        applied-state file fwengine writes after the kernel, nor counter values)."""
        completed = self.engine.run([*self.backend_args, "--netns", self.netns, "--json", "status"])
        try:
            document = json.loads(completed.stdout)
        except ValueError:
            return f"status exited {completed.returncode}: {scenario.first_line(completed.stderr)}"
        places = sorted((c.get("chain"), c.get("rule"), c.get("at")) for c in document.get("counters", []))
        # iptables reports a switched-off slot beside the ruleset in effect; the listing counts it apart.
        drift = [d for d in document.get("drift") or [] if "beside the ruleset in effect" not in d]
        return json.dumps([document.get("present"), document.get("hash"), drift, places])

    def state(self):
        listing = {"status": self.status()}
        if self.backend == "nft":
            listing["nft"] = normalised_nft(self.exec("nft", "-j", "-s", "list", "ruleset"))
        elif self.backend == "iptables":
            # Two slots (fwe1-, fwe2-) hold rulesets; the one whose gate set holds members is in effect,
            # the other is switched off (what an interrupted apply leaves until the next apply).
            ipset = self.exec("ipset", "save")
            on = re.search(r"^add fwe([12])-gate ", ipset, re.M)
            slot = on.group(1) if on else None

            def in_effect(line):
                """The line with the slot in effect named fweN-, or None for a line of the other slot."""
                if re.search(rf"\bfwe(?!{slot or 0})[12]-|\bfwe0-t-", line):
                    self.leftovers |= not re.match(r"create fwe[12]-gate ", line)  # the other gate stays
                    return None
                return line.replace(f"fwe{slot}-", "fweN-") if slot else line

            self.leftovers = False
            for family, tool in (("ipv4", "iptables-legacy-save"), ("ipv6", "ip6tables-legacy-save")):
                table = None
                for line in self.exec(tool).splitlines():
                    if line.startswith("*"):
                        table = f"{family} {line[1:]}"  # one place per table: each is restored on its own
                        listing[table] = []
                    elif table and not line.startswith("#") and (line := in_effect(line)) is not None:
                        listing[table].append(re.sub(r"\[\d+:\d+\]", "", line))
            listing["ipset"] = "\n".join(sorted(re.sub(r" initval 0x[0-9a-f]+", "", line)
                                                for line in map(in_effect, ipset.splitlines()) if line is not None))
        else:
            for ifname in self.interfaces:
                for direction in ("ingress", "egress"):
                    text = self.exec("tc", "filter", "show", "dev", ifname, direction)
                    listing[f"tc {ifname} {direction}"] = re.sub(r"(:\[\d+\]| id \d+)", "", text)
            pins = Path("/sys/fs/bpf/fwengine") / self.netns
            listing["pins"] = sorted(os.listdir(pins)) if pins.is_dir() else []
        return listing


# The chain named after the nft backend's marker chain and the content digest that a second transaction
# adds after the apply: a record for read-back, not something packets meet (backends/nft/README.md).
NFT_MARKER_CONTENT = re.compile(r"^fwengine-ir-[^-]+-[^-]+-[^-]+-[0-9a-f]{16}(?:[0-9a-f]{16})?$")


def normalised_nft(text):
    """nft's JSON listing without handles, objects sorted by kind and name (an incremental apply may
    create chains in another order) but rules kept in their order within each chain. The chain that
    records the content does not count: a kill between the apply and that record leaves it off."""
    if not text.strip():
        return []

    def content_record(o):
        chain = o.get("chain")
        return (chain is not None and chain.get("table") == "fwengine"
                and NFT_MARKER_CONTENT.match(chain["name"]) is not None)

    objects = [strip_handles(o) for o in json.loads(text)["nftables"]
               if "metainfo" not in o and not content_record(o)]
    kinds = ["table", "set", "map", "chain", "rule"]

    def key(entry):
        kind = next(iter(entry))
        body = entry[kind]
        return (kinds.index(kind) if kind in kinds else len(kinds), body.get("family", ""), body.get("table", ""),
                body.get("chain", "") if kind == "rule" else body.get("name", ""))

    for entry in objects:
        body = next(iter(entry.values()))
        if isinstance(body.get("elem"), list):
            body["elem"] = sorted(body["elem"], key=lambda e: json.dumps(e, sort_keys=True))
    return [json.dumps(o, sort_keys=True) for o in sorted(objects, key=key)]


def strip_handles(value):
    if isinstance(value, dict):
        return {k: strip_handles(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [strip_handles(v) for v in value]
    return value


def load_known_failures(section):
    path = FUZZ_DIR / "known_failures.yaml"
    return ((yaml.safe_load(path.read_text()) if path.exists() else None) or {}).get(section) or []


def known_mix(state, reference, names, known_mixes):
    """The known_failures.yaml entry that explains this state: leaving out its `ignore` places, each of
    its `each_a_or_b` places is one of the two rulesets on its own, and all other places together are
    exactly one of them."""
    for known in known_mixes:
        ignore, each = set(known.get("ignore", [])), set(known.get("each_a_or_b", []))
        rest = (set(state) | set(reference[names[0]])) - ignore - each
        if (all(any(state.get(p) == reference[n].get(p) for n in names) for p in each)
                and any(all(state.get(p) == reference[n].get(p) for p in rest) for n in names)):
            return known
    return None


def table_by_table(state, reference, names):
    """Whether a state is one that an apply made table by table may leave: every table of the two
    families as in A or as in B, the sets those of A and B, and, where the tables are a mix, status
    reporting drift."""
    tables = [place for place in set(state) | set(reference[names[0]]) if place not in ("status", "ipset")]
    if not all(any(state.get(p) == reference[n].get(p) for n in names) for p in tables):
        return False
    known_sets = lines_of(reference[names[0]].get("ipset")) | lines_of(reference[names[1]].get("ipset"))
    if not lines_of(state.get("ipset")) <= known_sets:
        return False
    if any(all(state.get(p) == reference[n].get(p) for p in tables) for n in names):
        return True  # one ruleset's tables, perhaps with the other's sets made or not yet destroyed
    try:
        present, _, drift, _ = json.loads(state["status"])
    except ValueError:  # status failed: its message
        return False
    return bool(present and drift)


def differences(state, reference):
    return sorted(place for place in set(state) | set(reference) if state.get(place) != reference.get(place))


def lines_of(value):
    return set(value.splitlines() if isinstance(value, str) else map(str, value or []))


def describe_mix(state, reference, names):
    """Per place that differs from both A and B: what the kernel has that neither has, and what it lacks."""
    text = []
    for place in sorted(set(differences(state, reference[names[0]])) & set(differences(state, reference[names[1]]))):
        known = lines_of(reference[names[0]].get(place)) | lines_of(reference[names[1]].get(place))
        extra = [line[:160] for line in sorted(lines_of(state.get(place)) - known)[:3]]
        text.append(f"  {place}: {len(lines_of(state.get(place)) - known)} lines in neither A nor B, e.g. {extra}")
    for place in sorted(set(differences(state, reference[names[0]])) - set(differences(state, reference[names[1]]))):
        text.append(f"  {place}: as in {names[1]}")
    for place in sorted(set(differences(state, reference[names[1]])) - set(differences(state, reference[names[0]]))):
        text.append(f"  {place}: as in {names[0]}")
    return "\n".join(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fwengine", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", default=None, help="default: random (printed)")
    parser.add_argument("--time-budget", type=float, default=0, help="stop killing after S seconds (with a note)")
    options = parser.parse_args()
    seed = options.seed or str(random.randrange(1 << 32))
    run_started = time.monotonic()
    rng = random.Random(seed)

    problem = scenario.namespace_support_problem()
    if problem:
        print(f"SKIP: {problem}")
        return scenario.EXIT_SKIPPED
    engine = scenario.Engine(Path(options.fwengine).resolve(), False)
    plugins = engine.plugins() or set()
    for needed in (scenario.plugin_of(options.backend), "yaml"):
        if needed not in plugins:
            print(f"SKIP: plugin libfwe_{needed}.so is not installed")
            return scenario.EXIT_SKIPPED

    topology = scenario.Topology(scenario.parse_topology(TOPOLOGY, "atomicity topology"), "atom")
    netns = topology.names["h"]
    kernel = Kernel(engine, options.backend, netns, ["lo", "eth0", "eth1"])
    failures = []
    known_mixes = [k for k in load_known_failures("atomicity") if options.backend in k["backends"]]
    per_table = "atomic=table" in scenario.backend_options_of(options.backend)

    def fail(message):
        failures.append(message)
        print(f"FAIL {message}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fwe-atomicity-") as workdir:
        files = {}
        for variant in ("A", "B"):
            files[variant] = Path(workdir) / f"{variant}.yaml"
            files[variant].write_text(yaml.safe_dump(policy(variant, STAGES[variant]), sort_keys=False))

        def command(variant, verb="apply"):
            return [str(engine.binary), "--frontend", "yaml", *kernel.backend_args, "-f", str(files[variant]),
                    "--netns", netns, verb]

        def apply(variant):
            started = time.monotonic()
            completed = subprocess.run(command(variant), capture_output=True, text=True, timeout=120)
            if completed.returncode != 0:
                raise RuntimeError(f"apply {variant} exited {completed.returncode}: {completed.stderr.strip()[:1500]}")
            return time.monotonic() - started

        try:
            topology.build()
            apply("A")
            reference = {"A": kernel.state()}
            apply("B")
            reference["B"] = kernel.state()
            durations = [apply(v) for v in ("A", "B", "A", "B", "A")]
            if kernel.state() != reference["A"]:
                raise RuntimeError(f"A's listing depends on what was applied before: {differences(kernel.state(), reference['A'])}")
            if reference["A"] == reference["B"]:
                raise RuntimeError("A and B read back the same: the test could not tell them apart")
            duration = sorted(durations)[len(durations) // 2]
            print(f"{options.backend}: seed {seed}, apply takes ~{duration * 1000:.0f} ms; {options.kills} kills", flush=True)
            current, outcomes = "A", {"old": 0, "new": 0, "finished": 0, "known": 0, "MIX": 0, "leftovers": 0,
                                      "table by table": 0}
            for kill in range(options.kills):
                target = "B" if current == "A" else "A"
                late = rng.random() < 0.5
                delay = rng.uniform(0.45 * duration, 0.9 * duration) if late else rng.uniform(0, 0.9 * duration)
                delay = round(delay, 6)
                process = subprocess.Popen(command(target), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                scenario.RESOURCES.add_process(process, netns)
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                returncode = process.wait()
                stderr = process.stderr.read().decode(errors="replace")
                process.stderr.close()
                state = kernel.state()
                if returncode == 0:
                    outcome = "finished"
                    if state != reference[target]:
                        fail(f"kill {kill}: apply {target} finished but the kernel is not {target}: "
                             f"{differences(state, reference[target])}")
                elif state == reference[current]:
                    outcome = "old"
                elif state == reference[target]:
                    outcome = "new"
                elif per_table and table_by_table(state, reference, (current, target)):
                    outcome = "table by table"
                else:
                    known = known_mix(state, reference, (current, target), known_mixes)
                    outcome = "known" if known else "MIX"
                    report = (f"kill {kill} ({current} -> {target}, after {delay * 1e6:.0f} us, exit {returncode}): "
                              f"neither A nor B:\n{describe_mix(state, reference, (current, target))}"
                              + (f"\n  stderr: {stderr.strip()[:300]}" if stderr.strip() else ""))
                    if known:
                        print(f"KNOWN FAILURE {report}\n  ({known['summary']})", flush=True)
                    else:
                        fail(report)
                outcomes[outcome] += 1
                outcomes["leftovers"] += kernel.leftovers
                print(f"kill {kill:4} {current}->{target} after {delay * 1e6:8.0f} us: {outcome}"
                      + (" (a switched-off slot is left)" if kernel.leftovers else ""), flush=True)
                try:
                    apply(target)
                    if kernel.state() != reference[target]:
                        fail(f"kill {kill}: the apply after the kill left the kernel not {target}: "
                             f"{differences(kernel.state(), reference[target])}")
                except RuntimeError as error:
                    fail(f"kill {kill}: the next apply failed: {error}")
                current = target
                if len(failures) >= 20:
                    break
                if options.time_budget and time.monotonic() - run_started > options.time_budget:
                    print(f"time budget used up after {kill + 1} kills", flush=True)
                    break
            print(f"{options.backend}: {kill + 1} kills: {outcomes['old']} left the old ruleset, {outcomes['new']} the "
                  f"new one, {outcomes['finished']} finished before the kill, {outcomes['known']} known failures "
                  f"(known_failures.yaml), {outcomes['MIX']} mixes; {len(failures)} failures"
                  + (f"; {outcomes['table by table']} left tables of both, each whole (atomic=table)"
                     if per_table else "")
                  + (f"; {outcomes['leftovers']} left a switched-off slot that the next apply removed"
                     if outcomes["leftovers"] else ""))
        except (RuntimeError, scenario.CommandError, subprocess.TimeoutExpired) as error:
            fail(str(error))
        finally:
            subprocess.run(command("A", "flush"), capture_output=True)
            topology.destroy()
            shutil.rmtree(Path("/sys/fs/bpf/fwengine") / netns, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    scenario.run_main(main)
