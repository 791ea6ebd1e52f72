#!/usr/bin/env python3
"""Differential testing of one fwengine backend against `fwengine trace`.

  fuzz.py --fwengine build/bin/fwengine --backend nft --seed 1 --cases 40

For each case a seeded random policy in our YAML format and probes aimed at its edges are generated
(generate.py); `fwengine trace` says whether each probe gets through; the backend applies the policy in
the protected namespace of a throwaway topology (topology.py; one topology per run, reused: apply,
probe, flush) and the probes are sent for real. A disagreement is confirmed, shrunk to a minimal
reproducer (rules, endpoints, sets, set entries deleted while it persists) and written to the corpus
(--write-corpus). The corpus (corpus/*.case.yaml) is replayed first; known_failures.yaml lists
reproducers whose disagreement is known and not fixed yet, so they do not fail the run.

Exit codes: 0 all agree, 1 disagreement or error, 77 cannot run here (not root, plugin missing).
"""

import argparse
import concurrent.futures
import copy
import ipaddress
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

FUZZ_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ_DIR.parent))  # scenario.py: topology builder, agents, fwengine wrapper

import scenario  # noqa: E402
from generate import FEATURES, PORT_ANCHORS, STAGES, Profile, cidr_around, generate  # noqa: E402
from topology import PEER_MACS, PORTS, spec  # noqa: E402

CORPUS_DIR = FUZZ_DIR / "corpus"
KNOWN_FAILURES = FUZZ_DIR / "known_failures.yaml"
HOST = "h"


def yaml_text(data):
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


def probe_text(probe):
    port = f":{probe['port']}" if probe.get("port") else ""
    return f"{probe['proto']} {probe.get('src') or '(auto)'} -> {probe['to']}{port} from {probe['from']}"


class RecordingEngine(scenario.Engine):
    """scenario.Engine that keeps the JSON of the trace runs since the last clear(), for reproducers."""

    def __init__(self, binary):
        super().__init__(binary, False)
        self.traces = []

    def run(self, args, timeout=120):
        completed = super().run(args, timeout)
        if "trace" in args and completed.returncode == 0:
            self.traces.append(completed.stdout)
        return completed


def explain_trace(document, indent="    "):
    """trace's JSON as a few lines: the packet, each stage's verdict and its deciding step, the reply."""
    lines = [f"{indent}{document.get('packet')}: {'delivered' if document.get('delivered') else 'stopped'}"]
    for stage in document.get("stages") or []:
        step = (stage.get("steps") or [{}])[-1]
        where = " ".join(str(step[k]) for k in ("at", "chain", "what") if step.get(k))
        lines.append(f"{indent}  {stage.get('stage')}: {stage.get('verdict')} (endpoint {stage.get('endpoint')}; {where})")
    if document.get("reply"):
        lines += explain_trace(document["reply"], indent + "  reply ").splitlines()
    return "\n".join(lines)


class Runner:
    """One backend, one topology; runs policies against probes and compares with trace."""

    def __init__(self, engine, backend, topology, timeout, workdir, incremental=False):
        self.engine, self.backend, self.topology = engine, backend, topology
        self.timeout = timeout
        self.incremental = incremental  # each policy applied over the previous one, no flush in between
        self.workdir = Path(workdir)
        self.files = 0
        self.netns = topology.names[HOST]
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
        # ebpf: probes also through BPF_PROG_TEST_RUN, with the tool built beside fwengine (not installed)
        testrun = Path(engine.binary).resolve().parent / "ebpf_testrun"
        self.testrun = testrun if scenario.plugin_of(backend) == "ebpf" and testrun.exists() else None

    def write_policy(self, policy):
        self.files += 1  # a new name each time: Engine caches trace answers by command line
        path = self.workdir / f"policy-{self.files}.yaml"
        path.write_text(yaml_text(policy))
        return {"frontend": "yaml", "files": [str(path)], "node": None, "host": HOST, "options": []}

    def check(self, policy):
        """None if core accepts the policy, else its diagnostics."""
        completed = self.engine.run(self.engine.policy_args(self.write_policy(policy), None, self.netns) + ["check"])
        return None if completed.returncode == 0 else (completed.stderr or completed.stdout).strip()

    def render_refusal(self, policy):
        """None if the backend renders it, else why not."""
        args = self.engine.policy_args(self.write_policy(policy), self.backend, self.netns) + ["render"]
        completed = self.engine.run(args)
        return None if completed.returncode == 0 else scenario.first_line(completed.stderr or completed.stdout)

    def run(self, policy, probes):
        """{'status': 'refused'|'error'|'done', 'why': text, 'results': [(trace, real, detail, decision)]}"""
        files = self.write_policy(policy)
        self.engine.traces = []
        completed = self.engine.apply(files, self.backend, self.netns)
        if completed.returncode == 2:
            return {"status": "refused", "why": scenario.first_line(completed.stderr or completed.stdout)}
        if completed.returncode != 0:
            return {"status": "error", "why": f"apply exited {completed.returncode}: "
                                              f"{(completed.stderr or completed.stdout).strip()[:1500]}"}
        try:
            probes = [dict(p, trace={}) for p in probes]
            packets = [self.topology.trace_packets(HOST, probe) for probe in probes]
            futures = [[self.pool.submit(self.engine.trace, files, self.netns, packet, probe)
                        for packet in probe_packets] for probe, probe_packets in zip(probes, packets)]
            traces = [scenario.combine_traces(f) for f in futures]
            errors = [verdict for verdict, _ in traces if verdict not in ("open", "closed")]
            if errors:
                return {"status": "error", "why": f"trace: {errors[0]}"}
            expected = {id(p): t[0] for p, t in zip(probes, traces)}
            real = scenario.send_probes_checked(self.topology, probes, lambda p: expected[id(p)], self.timeout)
            if self.testrun:
                real = [self.program_verdict(probe, probe_packets, trace[0], outcome)
                        for probe, probe_packets, trace, outcome in zip(probes, packets, traces, real)]
            results = [(t[0], r[0], r[1], " | ".join(t[1])) for t, r in zip(traces, real)]
            return {"status": "done", "results": results}
        finally:
            if not self.incremental:
                self.flush()

    def flush(self):
        completed = self.engine.flush(self.write_policy(minimal_policy()), self.backend, self.netns)
        if completed.returncode != 0:
            raise RuntimeError(f"flush exited {completed.returncode}: {completed.stderr.strip()}")

    def program_verdict(self, probe, packets, expected, real):
        """ebpf: the probe's packets also through the attached programs with BPF_PROG_TEST_RUN
        (ebpf_testrun). The real traffic's (verdict, detail), unless it agrees with trace and the
        programs do not: then theirs."""
        verdicts, details = [], []
        for packet in packets:
            family = ipaddress.ip_address(packet["dst"]).version
            proto = {"icmp": "icmp" if family == 4 else "icmpv6"}.get(probe["proto"], probe["proto"])
            args = [str(self.testrun), self.netns, f"proto={proto}"]
            args += [f"{key.replace('_', '-')}={packet[key]}" for key in ("iif", "oif", "src", "dst", "src_mac", "sport")
                     if packet.get(key)]
            if "port" in probe and proto in ("tcp", "udp"):
                args.append(f"dport={probe['port']}")
            completed = subprocess.run(args, capture_output=True, text=True, timeout=60)
            if completed.returncode != 0:
                return f"error: ebpf_testrun exited {completed.returncode}: {completed.stderr.strip()}", ""
            answer = json.loads(completed.stdout)
            verdicts.append(all(answer[key] is not False for key in ("delivered", "reply", "later")))
            details.append(completed.stdout.strip())
        verdict = "open" if all(verdicts) else "closed"
        if real[0] != expected or verdict == expected:
            return real
        return verdict, f"BPF_PROG_TEST_RUN {'; '.join(details)} (real traffic: {real[0]})"

    def disagreements(self, outcome):
        if outcome["status"] != "done":
            return []
        return [i for i, (trace, real, _, _) in enumerate(outcome["results"]) if real in ("open", "closed") and trace != real]

    def still_disagrees(self, policy, probe, attempts=1):
        for _ in range(attempts):
            outcome = self.run(policy, [probe])
            if not self.disagreements(outcome):
                return False
        return True

    def shrink(self, policy, probe, budget):
        """Delete pieces of the policy while the probe still disagrees: passes over all one-deletion-smaller
        policies until a pass deletes nothing, or the budget of kernel runs is spent."""
        current, runs, position, progressed = policy, 0, 0, False
        while runs < budget:
            candidates = list(smaller_policies(current))
            if position >= len(candidates):
                if not progressed:
                    break
                position, progressed = 0, False
                continue
            candidate = prune(candidates[position])
            position += 1
            if candidate == current or self.check(candidate) is not None:
                continue
            runs += 1
            if self.still_disagrees(candidate, probe):
                current, progressed = candidate, True
                position -= 1  # the next candidate now has this index
        return current, runs


# ---------------------------------------------------------------------------------------------------
# Shrinking: every policy one deletion smaller


def smaller_policies(policy):
    def variant(mutate):
        copy_ = copy.deepcopy(policy)
        mutate(copy_)
        return copy_

    if "failsafe" in policy:
        yield variant(lambda p: p.pop("failsafe"))
        for direction, entries in policy["failsafe"].items():
            for i in range(len(entries)):
                yield variant(lambda p, d=direction, i=i: p["failsafe"][d].pop(i))
    for stage in list(policy.get("stages", {})):
        yield variant(lambda p, s=stage: p["stages"].pop(s))
    for stage, sections in policy.get("stages", {}).items():
        for si, section in enumerate(sections):
            yield variant(lambda p, s=stage, si=si: p["stages"][s].pop(si))
            for ei, endpoint in enumerate(section["endpoints"]):
                yield variant(lambda p, s=stage, si=si, ei=ei: p["stages"][s][si]["endpoints"].pop(ei))
                for key in [k for k in endpoint if k != "name"]:
                    yield variant(lambda p, s=stage, si=si, ei=ei, k=key: p["stages"][s][si]["endpoints"][ei].pop(k))
                for gi, group in enumerate(endpoint.get("groups", [])):
                    yield variant(lambda p, s=stage, si=si, ei=ei, gi=gi:
                                  p["stages"][s][si]["endpoints"][ei]["groups"].pop(gi))
                    for ci in range(len(group["chains"])):
                        yield variant(lambda p, s=stage, si=si, ei=ei, gi=gi, ci=ci:
                                      p["stages"][s][si]["endpoints"][ei]["groups"][gi]["chains"].pop(ci))
                    if "on-end" in group:
                        yield variant(lambda p, s=stage, si=si, ei=ei, gi=gi:
                                      p["stages"][s][si]["endpoints"][ei]["groups"][gi].pop("on-end"))
                for ci in range(len(endpoint.get("chains", []))):
                    yield variant(lambda p, s=stage, si=si, ei=ei, ci=ci:
                                  p["stages"][s][si]["endpoints"][ei]["chains"].pop(ci))
            if section.get("honour-allow"):
                yield variant(lambda p, s=stage, si=si: p["stages"][s][si].pop("honour-allow"))
    for name, rules in policy.get("chains", {}).items():
        for ri, rule in enumerate(rules):
            yield variant(lambda p, n=name, ri=ri: p["chains"][n].pop(ri))
        for ri, rule in enumerate(rules):
            for key in [k for k in rule if k not in ("action", "target")]:
                yield variant(lambda p, n=name, ri=ri, k=key: p["chains"][n][ri].pop(k))
    for name, nets in policy.get("sets", {}).items():
        for ni in range(len(nets)):
            yield variant(lambda p, n=name, ni=ni: p["sets"][n].pop(ni))


def prune(policy):
    """Drop what nothing uses any more (chains no endpoint or jump reaches, sets no one names), and
    containers left empty, so that a reproducer holds only what matters."""
    policy = copy.deepcopy(policy)
    stages = policy.get("stages", {})
    for stage in list(stages):
        stages[stage] = [s for s in stages[stage] if s["endpoints"]]
        for section in stages[stage]:
            for endpoint in section["endpoints"]:
                if "groups" in endpoint:
                    endpoint["groups"] = [g for g in endpoint["groups"] if g["chains"]]
                    if not endpoint["groups"]:
                        endpoint.pop("groups")
                if "chains" in endpoint and not endpoint["chains"]:
                    endpoint.pop("chains")
        if not stages[stage]:
            stages.pop(stage)
    chains = policy.get("chains", {})
    stage_text = yaml_text(policy.get("stages", {}))
    reachable, todo = set(), [n for n in chains if mentions(stage_text, n)]
    while todo:
        name = todo.pop()
        if name in reachable:
            continue
        reachable.add(name)
        todo += [r["target"] for r in chains.get(name, []) if r.get("action") == "jump"]
    if "chains" in policy:
        policy["chains"] = {n: r for n, r in chains.items() if n in reachable}
        if not policy["chains"]:
            policy.pop("chains")
    text = yaml_text(policy.get("stages", {})) + yaml_text(policy.get("chains", {}))
    if "sets" in policy:
        policy["sets"] = {n: v for n, v in policy["sets"].items() if mentions(text, n)}
        if not policy["sets"]:
            policy.pop("sets")
    if "failsafe" in policy:
        policy["failsafe"] = {d: e for d, e in policy["failsafe"].items() if e}
        if not policy["failsafe"]:
            policy.pop("failsafe")
    return policy


def mentions(text, name):
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


# ---------------------------------------------------------------------------------------------------
# What the backend accepts, asked from the backend itself (render of one-stage policies)


def minimal_policy(stage="input"):
    endpoint = {"name": "x", "chains": ["c"], "default": "accept"}
    return {"apiVersion": "fwengine/v1", "chains": {"c": [{"protocol": "tcp", "action": "accept"}]},
            "stages": {stage: [{"endpoints": [endpoint]}]}}


# One rule per generator feature, and the stage it is asked in.
FEATURE_RULES = {
    "src-mac": ("input", {"src-mac": PEER_MACS["a"], "action": "accept"}),
    "mark": ("input", {"mark": {"value": 1, "mask": 3}, "action": "accept"}),
    "set-mark": ("input", {"action": "set-mark", "set-mark": {"value": 1, "mask": 3}}),
    "rate-limit": ("input", {"rate-limit": {"rate": 2000, "per": "second", "burst": 1000}, "action": "accept"}),
    "pkt-type": ("input", {"pkt-type": "unicast", "action": "accept"}),
    "ct-status": ("input", {"ct-status": "dnat", "action": "accept"}),
    "redirect": ("dnat", {"family": "ipv4", "protocol": "tcp", "action": "redirect", "to-port": 80}),
    "ct-helper": ("untracked-in", {"protocol": "tcp", "action": "ct-helper", "helper": "ftp"}),
    "ct-helper-tracked": ("input", {"protocol": "tcp", "action": "ct-helper", "helper": "ftp"}),
    "tcp-mss-clamp": ("forward", {"action": "tcp-mss-clamp"}),
    "dnat": ("dnat", {"family": "ipv4", "protocol": "tcp", "action": "dnat", "to": "10.9.0.1", "to-port": 80}),
    "snat": ("snat", {"family": "ipv4", "oif": "eth0", "action": "snat", "to": "10.9.0.1"}),
    "masquerade": ("snat", {"oif": "eth0", "action": "masquerade"}),
    "not-iface-list": ("input", {"iif": {"not": ["eth0", "eth1"]}, "action": "accept"}),
    "not-protocol-list": ("input", {"protocol": {"not": ["tcp", "icmp"]}, "action": "accept"}),
    "iface-prefix-list": ("input", {"iif": ["eth0", "vx+"], "action": "accept"}),
    "rpf": ("prednat", {"rpf": "!strict", "action": "drop"}),
    "rpf-after-routing": ("input", {"rpf": "!strict", "action": "drop"}),
    "ct-orig-dport": ("input", {"protocol": "tcp", "ct-orig-dport": 80, "action": "accept"}),
    "dnat-out": ("dnat-out", {"family": "ipv4", "protocol": "tcp", "action": "dnat", "to": "10.9.0.1", "to-port": 80}),
}
assert set(FEATURE_RULES) == set(FEATURES)


def backend_profile(runner, avoid):
    accepted, no_drop, no_reject = [], [], []
    for stage in STAGES:
        policy = minimal_policy(stage)
        if runner.render_refusal(policy) is not None:
            continue
        accepted.append(stage)
        for verdict, refused in (("drop", no_drop), ("reject", no_reject)):
            policy["chains"]["c"][0]["action"] = verdict
            if runner.render_refusal(policy) is not None:
                refused.append(stage)
    features = []
    for feature, (stage, rule) in FEATURE_RULES.items():
        policy = minimal_policy(stage)
        policy["chains"]["c"] = [rule]
        if stage in accepted and runner.render_refusal(policy) is None:
            features.append(feature)
    return Profile(accepted, no_drop, no_reject, avoid, features)


# ---------------------------------------------------------------------------------------------------
# Corpus and known failures


def load_known_failures():
    data = yaml.safe_load(KNOWN_FAILURES.read_text()) if KNOWN_FAILURES.exists() else None
    return (data or {}).get("known", []) or []


def known_for(known, case_name, backend):
    return [k for k in known if k["case"] == case_name and scenario.plugin_of(backend) in k["backends"]]


def corpus_cases():
    for path in sorted(CORPUS_DIR.glob("*.case.yaml")):
        case = yaml.safe_load(path.read_text())
        policy = yaml.safe_load((CORPUS_DIR / case["policy"]).read_text())
        yield path.name[: -len(".case.yaml")], case, policy


def write_corpus(name, policy, probe, backend, trace, real, detail, decision, seed, profile_stages):
    CORPUS_DIR.mkdir(exist_ok=True)
    policy_file = f"{name}.policy.yaml"
    header = (f"# Reproducer found by integration/fuzz (seed {seed}, backend {backend}): the probe below\n"
              f"# {probe_text(probe)} is {trace} in trace but {real} ({detail}) in the kernel.\n")
    (CORPUS_DIR / policy_file).write_text(header + yaml_text(policy))
    case = {"policy": policy_file, "probe": {k: probe[k] for k in ("from", "src", "to", "proto", "port") if probe.get(k)},
            "found": {"backend": backend, "seed": seed, "trace": trace, "real": f"{real} ({detail})",
                      "trace_says": [line.strip() for line in decision.splitlines()], "stages_tried": profile_stages}}
    (CORPUS_DIR / f"{name}.case.yaml").write_text(yaml_text(case))


# ---------------------------------------------------------------------------------------------------


def replay_corpus(runner, backend, known, report):
    for name, case, policy in corpus_cases():
        probe = dict(case["probe"], name=name)
        probe.setdefault("src", None)
        outcome = runner.run(policy, [probe])
        marks = known_for(known, name, backend)
        if outcome["status"] == "refused":
            report.refused += 1
            print(f"corpus {name:<40} refused: {outcome['why']}")
            continue
        if outcome["status"] == "error":
            report.fail(f"corpus {name}: {outcome['why']}")
            continue
        trace, real, detail, _ = outcome["results"][0]
        agree = trace == real
        if agree and marks:
            print(f"corpus {name:<40} agrees now (trace {trace}): listed in known_failures.yaml, remove it")
        elif agree:
            print(f"corpus {name:<40} ok ({trace})")
        elif marks:
            report.known += 1
            print(f"corpus {name:<40} KNOWN FAILURE: trace {trace}, {backend} {real} ({detail}): {marks[0]['summary']}")
        else:
            report.fail(f"corpus {name}: trace {trace}, {backend} {real} ({detail}) for {probe_text(probe)}")
        report.corpus += 1


class Report:
    def __init__(self):
        self.cases = self.probes = self.refused = self.invalid = self.known = self.corpus = 0
        self.failures = []

    def fail(self, message):
        self.failures.append(message)
        print(f"FAIL {message}", flush=True)


def mutated(rng, policy):
    """The policy with one small change, the kind a backend applies in place (an element delta, one set
    swapped, one chain rewritten): a set member replaced, added or removed, or else one rule's port."""
    policy = copy.deepcopy(policy)
    sets = [name for name, nets in policy.get("sets", {}).items() if nets]
    if sets and rng.random() < 0.7:
        nets = policy["sets"][rng.choice(sets)]
        i = rng.randrange(len(nets))
        family = ipaddress.ip_network(nets[i]).version
        roll = rng.random()
        if roll < 0.5:
            nets[i] = cidr_around(rng, family, wide=False)
        elif roll < 0.75 or len(nets) == 1:
            nets.append(cidr_around(rng, family, wide=False))
        else:
            del nets[i]
        return policy
    rules = [r for chain in policy.get("chains", {}).values() for r in chain
             if isinstance(r.get("dport"), int)]
    if rules:
        rng.choice(rules)["dport"] = rng.choice(PORT_ANCHORS)
    return policy


def compare_case(runner, backend, profile, options, report, case_seed, policy, probes):
    """Applies the policy, sends the probes and records the outcome; False if the case did not run."""
    outcome = runner.run(policy, probes)
    if outcome["status"] == "refused":
        report.refused += 1
        if options.verbose:
            print(f"case {case_seed}: refused: {outcome['why']}")
        return False
    if outcome["status"] == "error":
        report.fail(f"case {case_seed}: {outcome['why']}")
        return False
    report.cases += 1
    report.probes += len(probes)
    bad = runner.disagreements(outcome)
    if options.verbose:
        opened = sum(1 for r in outcome["results"] if r[0] == "open")
        print(f"case {case_seed}: {len(probes)} probes agree ({opened} open)" if not bad else
              f"case {case_seed}: {len(bad)} disagreements")
    if bad:
        handle_disagreement(runner, backend, profile, options, report, case_seed, policy, probes[bad[0]],
                            outcome["results"][bad[0]])
    return True


def run_random(runner, backend, profile, options, report):
    for index in range(options.cases):
        case_seed = f"{options.seed}-{index}"
        policy, probes = generate(random.Random(case_seed), profile, options.probes)
        problem = runner.check(policy)
        if problem:
            report.invalid += 1
            report.fail(f"case {case_seed}: the generator made a policy core rejects: {problem[:600]}\n"
                        f"{yaml_text(policy)}")
            continue
        ran = compare_case(runner, backend, profile, options, report, case_seed, policy, probes)
        if ran and options.mutate:
            # Over the policy just applied: the backend's in-place path, with the same probes.
            changed = mutated(random.Random(f"{case_seed}-m"), policy)
            if not runner.check(changed):
                compare_case(runner, backend, profile, options, report, f"{case_seed}-m", changed, probes)
        if not options.verbose and (index + 1) % 25 == 0:
            print(f"{index + 1} cases: {report.cases} compared, {report.refused} refused, "
                  f"{len(report.failures)} failures", flush=True)
        if options.deadline and time.monotonic() > options.deadline:
            print(f"time budget used up after {index + 1} cases")
            break


def handle_disagreement(runner, backend, profile, options, report, case_seed, policy, probe, result):
    trace, real, detail, decision = result
    if not runner.still_disagrees(policy, probe, attempts=2):
        print(f"case {case_seed}: {probe_text(probe)} disagreed once (trace {trace}, real {real} ({detail})) "
              "but not when sent again: not counted")
        return
    print(f"case {case_seed}: {probe_text(probe)}: trace {trace}, {backend} {real} ({detail}); shrinking ...",
          flush=True)
    small, runs = runner.shrink(policy, probe, options.shrink_budget)
    outcome = runner.run(small, [probe])
    trace, real, detail, decision = outcome["results"][0] if outcome["status"] == "done" else result
    explanation = "\n".join(explain_trace(json.loads(text)) for text in runner.engine.traces)
    name = f"{backend}-{case_seed}"
    report.fail(f"case {case_seed}: DISAGREEMENT ({runs} shrink runs)\n"
                f"  probe:  {probe_text(probe)}\n  trace:  {trace}\n{explanation}\n"
                f"  {backend}: {real} ({detail})\n  policy:\n"
                + "".join(f"    {line}\n" for line in yaml_text(small).splitlines()))
    if options.write_corpus:
        write_corpus(name, small, probe, backend, trace, real, detail, explanation, case_seed, profile.stages)
        print(f"  written to {CORPUS_DIR.relative_to(FUZZ_DIR.parent.parent)}/{name}.*.yaml")


def check_generator(binary, seed, count):
    """Every generated policy must be valid (core accepts it), every corpus case readable, and every
    known failure must name a corpus case."""
    engine = scenario.Engine(binary, False)
    problems = 0
    with tempfile.TemporaryDirectory(prefix="fwe-fuzz-") as workdir:
        path = Path(workdir) / "policy.yaml"
        for index in range(count):
            case_seed = f"{seed}-{index}"
            policy, probes = generate(random.Random(case_seed), Profile(STAGES), 12)
            path.write_text(yaml_text(policy))
            completed = engine.run(["--frontend", "yaml", "-f", str(path), "check"])
            if completed.returncode != 0 or len(probes) != 12:
                problems += 1
                print(f"FAIL case {case_seed}: {(completed.stderr or completed.stdout).strip()[:800]}\n{yaml_text(policy)}")
    names = set()
    for name, case, policy in corpus_cases():
        names.add(name)
        if not {"from", "to", "proto"} <= set(case["probe"]) or policy.get("apiVersion") != "fwengine/v1":
            problems += 1
            print(f"FAIL corpus {name}: needs probe from/to/proto and a policy")
    for known in load_known_failures():
        if known["case"] not in names or not known.get("backends") or not known.get("summary"):
            problems += 1
            print(f"FAIL known_failures.yaml: {known.get('case')}: needs an existing corpus case, backends, summary")
    print(f"{count} generated policies and {len(names)} corpus cases checked, {problems} problems")
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fwengine", required=True)
    parser.add_argument("--backend")
    parser.add_argument("--check-generator", type=int, metavar="N",
                        help="no kernel: check N generated policies with `fwengine check`, and the corpus")
    parser.add_argument("--seed", default="1", help="campaign seed (any text); case i uses SEED-i")
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--probes", type=int, default=12, help="probes per case")
    parser.add_argument("--timeout", type=float, default=0.5, help="seconds a probe waits for an answer")
    parser.add_argument("--shrink-budget", type=int, default=150, help="kernel runs one shrink may take")
    parser.add_argument("--time-budget", type=float, default=0, help="stop starting cases after S seconds")
    parser.add_argument("--no-corpus", dest="corpus", action="store_false", help="do not replay the corpus")
    parser.add_argument("--write-corpus", action="store_true", help="write reproducers to corpus/")
    parser.add_argument("--incremental", action="store_true",
                        help="apply each policy over the previous one (the backend's incremental path), "
                             "flush only at the end; a reproducer then may need the policy before it")
    parser.add_argument("--mutate", action="store_true",
                        help="after each case, apply it again with one small change (a set member, a port) over "
                             "it and probe again: the in-place paths; implies --incremental")
    parser.add_argument("-v", "--verbose", action="store_true")
    options = parser.parse_args()
    options.incremental = options.incremental or options.mutate
    options.deadline = time.monotonic() + options.time_budget if options.time_budget else None
    if options.check_generator is not None:
        return check_generator(Path(options.fwengine).resolve(), options.seed, options.check_generator)
    if not options.backend:
        parser.error("--backend is required")

    problem = scenario.namespace_support_problem()
    if problem:
        print(f"SKIP: {problem}")
        return scenario.EXIT_SKIPPED
    engine = RecordingEngine(Path(options.fwengine).resolve())
    plugins = engine.plugins() or set()
    for needed in (scenario.plugin_of(options.backend), "yaml"):
        if needed not in plugins:
            print(f"SKIP: plugin libfwe_{needed}.so is not installed")
            return scenario.EXIT_SKIPPED

    known = load_known_failures()
    avoid = {feature for k in known if scenario.plugin_of(options.backend) in k["backends"]
             for feature in k.get("avoid", [])}
    report = Report()
    started = time.monotonic()
    topology = scenario.Topology(scenario.parse_topology(spec(), "fuzz topology"), "fz")
    with tempfile.TemporaryDirectory(prefix="fwe-fuzz-") as workdir:
        try:
            topology.build()
            topology.start_agents()
            topology.listen({ns: (set(PORTS), set(PORTS)) for ns in topology.names})
            runner = Runner(engine, options.backend, topology, options.timeout, workdir, options.incremental)
            before = topology.kernel_state(HOST)
            profile = backend_profile(runner, avoid)
            print(f"backend {options.backend}: stages {', '.join(profile.stages)}; no drop in "
                  f"{', '.join(profile.no_drop) or 'none'}; no reject in {', '.join(profile.no_reject) or 'none'}; "
                  f"features {', '.join(f for f in FEATURES if f in profile.features) or 'none'}"
                  + (f"; avoiding {', '.join(sorted(avoid))} (known_failures.yaml)" if avoid else ""), flush=True)
            if runner.testrun:
                print(f"probes also through BPF_PROG_TEST_RUN ({runner.testrun.name})", flush=True)
            if not profile.stages:
                report.fail(f"{options.backend} renders no stage at all: {runner.render_refusal(minimal_policy())}")
                return 1
            if options.corpus:
                replay_corpus(runner, options.backend, known, report)
            print(f"random cases: seed {options.seed}, {options.cases} cases of {options.probes} probes", flush=True)
            run_random(runner, options.backend, profile, options, report)
            if options.incremental:
                runner.flush()
            after = topology.kernel_state(HOST)
            changed = [place for place in before if after.get(place) != before[place]]
            if changed:
                report.fail(f"after the last flush the host differs from before the first apply: {', '.join(changed)}")
        finally:
            topology.destroy()
    print(f"{options.backend}: {report.cases} cases ({report.probes} probes) compared, {report.refused} refused, "
          f"corpus {report.corpus} replayed ({report.known} known failures), {len(report.failures)} failures, "
          f"{time.monotonic() - started:.0f} s")
    return 1 if report.failures else 0


if __name__ == "__main__":
    scenario.run_main(main)
