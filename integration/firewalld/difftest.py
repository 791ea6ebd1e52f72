#!/usr/bin/python3
"""Differential test: the real firewalld (Debian 12's 1.3.3) against `fwengine --frontend firewalld
--firewalld-compat 1.3` on the same configuration, with real traffic.

  difftest.py --fwengine build/bin/fwengine --backend nft --backend iptables integration/firewalld/cases.yaml

Identical topologies are built (scenario.py's namespaces, veth links, agents and probes), one for
firewalld and one per fwengine backend. For each case the configuration is written twice; firewalld runs
in the first topology's firewall namespace (a private D-Bus, see oracle.py) and fwengine applies the same
directory in the others; the same probes go through all of them at the same time, and each probe's
verdict class (open / rst / icmp T/C / drop) must be the case's expectation, firewalld's, and every
backend's. `fwengine trace` must agree with open/closed. Cases, format and what the suite covers:
README.md in integration/.
"""

import argparse
import atexit
import concurrent.futures
import ipaddress
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import oracle  # noqa: E402
import scenario  # noqa: E402
from scenario import CommandError, ScenarioError, check_keys, first_line, run_command  # noqa: E402

# The firewall in the middle (fw), a client LAN (lan: several addresses stand for several hosts, a fixed
# MAC for MAC sources), a server behind it (srv) and a third network on an interface that is not
# veth-* (wan), so wildcards and three-zone policies can be told apart. As spec/firewalld.md §6.
TOPOLOGY = {
    "namespaces": {
        # ICMP errors unlimited: a case sends several rejects to one client at once, and the kernel's
        # per-destination limit (burst 6, then 1/s) would turn the later ones into timeouts
        "fw": {"sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, "net.ipv4.icmp_ratelimit": 0,
                           "net.ipv4.icmp_ratemask": 0, "net.ipv6.icmp.ratelimit": 0},
               "routes": ["2002::/16 via fd99::2"]},  # 6to4 addresses, for RFC3964_IPv4 (wan drops them)
        "lan": {"routes": ["default via 10.77.0.1", "default via fd77::1"]},
        "srv": {"routes": ["default via 10.88.0.1", "default via fd88::1"]},
        "wan": {"routes": ["default via 10.99.0.1", "default via fd99::1"]},
    },
    "links": [
        {"fw": {"ifname": "veth-a", "addresses": ["10.77.0.1/24", "fd77::1/64"]},
         "lan": {"ifname": "eth0", "mac": "02:77:00:00:00:02",
                 "addresses": ["10.77.0.2/24", "10.77.0.3/24", "10.77.0.9/24", "fd77::2/64", "fd77::3/64"]}},
        {"fw": {"ifname": "veth-b", "addresses": ["10.88.0.1/24", "fd88::1/64"]},
         "srv": {"ifname": "eth0", "addresses": ["10.88.0.2/24", "fd88::2/64"]}},
        {"fw": {"ifname": "wan0", "addresses": ["10.99.0.1/24", "fd99::1/64"]},
         "wan": {"ifname": "eth0", "addresses": ["10.99.0.2/24", "fd99::2/64"]}},
    ],
}
FIREWALL_NS = "fw"

# Debian 12's /etc/firewalld/firewalld.conf (the keys it sets); a case's `conf` changes or adds keys.
FIREWALLD_CONF = {
    "DefaultZone": "public", "CleanupOnExit": "yes", "CleanupModulesOnExit": "no", "Lockdown": "no",
    "IPv6_rpfilter": "yes", "IndividualCalls": "no", "LogDenied": "off", "FirewallBackend": "nftables",
    "FlushAllOnReload": "yes", "RFC3964_IPv4": "yes",
}
FWENGINE_OPTIONS = ["--firewalld-compat", "1.3", "--firewalld-defaults", "/usr/lib/firewalld"]
CLASS_OPEN, CLASS_DROP, CLASS_RST = "open", "drop", "rst"
PROBE_KEYS = {"name", "from", "to", "src", "sport", "proto", "port", "expect", "seen", "listen", "baseline", "trace"}
CASE_KEYS = {"name", "description", "compat", "files", "conf", "state", "probes", "unsupported", "fwengine_refuses",
             "fwengine_differs"}


def verdict_class(result):
    """Class of an agent answer: open, rst, icmp T/C, icmp6 T/C, drop; or the socket error as it is."""
    verdict, detail = result
    if verdict == "open":
        return CLASS_OPEN
    if verdict == "closed" and detail == "timeout":
        return CLASS_DROP
    if verdict == "closed" and detail == "refused":
        return CLASS_RST
    if verdict == "closed" and detail.startswith("icmp"):
        return detail
    return f"{verdict}({detail})"


def seen_source(result):
    verdict, detail = result
    return detail[len("connected from "):] if verdict == "open" and detail.startswith("connected from ") else None


def valid_class(text):
    if text in (CLASS_OPEN, CLASS_DROP, CLASS_RST):
        return True
    kind, _, code = text.partition(" ")
    return kind in ("icmp", "icmp6") and all(part.isdigit() for part in code.split("/")) and code.count("/") == 1


# ---------------------------------------------------------------------------------------------------
# Cases


def parse_probe(spec, where):
    check_keys(spec, PROBE_KEYS, where, required=("to", "proto", "expect"))
    probe = {"from": "lan", "src": None, "sport": None, "listen": True, "baseline": "open", "trace": {}}
    probe.update(spec)
    probe["to"] = str(probe["to"])
    probe["src"] = str(probe["src"]) if probe["src"] else None
    for key in ("to", "src", "seen"):
        if probe.get(key):
            try:
                ipaddress.ip_address(probe[key])
            except ValueError as error:
                raise ScenarioError(f"{where}.{key}: {error}") from error
    if probe["from"] not in TOPOLOGY["namespaces"]:
        raise ScenarioError(f"{where}.from: no namespace '{probe['from']}' "
                            f"(one of {', '.join(TOPOLOGY['namespaces'])})")
    if probe["proto"] not in scenario.PROTOCOLS:
        raise ScenarioError(f"{where}.proto: one of {', '.join(scenario.PROTOCOLS)}")
    if probe["proto"] != "icmp" and not isinstance(probe.get("port"), int):
        raise ScenarioError(f"{where}.port: {probe['proto']} probes need a port number")
    for key in ("expect", "baseline"):
        if not valid_class(str(probe[key])):
            raise ScenarioError(f"{where}.{key}: '{probe[key]}' is not open, drop, rst, 'icmp T/C' or 'icmp6 T/C'")
    if probe["trace"] is not False:
        check_keys(probe["trace"] or {}, {"iif", "oif", "src", "dst"}, f"{where}.trace")
        probe["trace"] = dict(probe["trace"] or {})
    if "name" not in probe:
        src = f"{probe['src']}>" if probe["src"] else ""
        port = f":{probe['port']}" if probe["proto"] != "icmp" else ""
        sport = f"<{probe['sport']}" if probe["sport"] else ""
        probe["name"] = f"{probe['from']}:{probe['proto']}:{src}{probe['to']}{port}{sport}"
    probe["decided_by"] = []  # scenario.py's trace helpers read it
    return probe


def load_cases(path):
    data = scenario.load_yaml_file(path)
    if not isinstance(data, list):
        raise ScenarioError(f"{path}: expected a list of cases")
    cases, names = [], set()
    for index, spec in enumerate(data):
        where = f"{path}: [{index}]"
        check_keys(spec, CASE_KEYS, where, required=("name", "compat", "probes"))
        where = f"{path}: {spec['name']}"
        if spec["name"] in names:
            raise ScenarioError(f"{where}: a second case with this name")
        names.add(spec["name"])
        files = spec.get("files") or {}
        for relative in files:
            if Path(relative).is_absolute() or ".." in Path(relative).parts:
                raise ScenarioError(f"{where}.files: '{relative}' must be relative to the configuration directory")
        probes = [parse_probe(p, f"{where}.probes[{i}]") for i, p in enumerate(scenario.as_list(spec["probes"], where))]
        if len({p["name"] for p in probes}) != len(probes):
            raise ScenarioError(f"{where}: two probes with the same name (give one a `name`)")
        state = spec.get("state", "running")
        if state not in ("running", "failed"):
            raise ScenarioError(f"{where}.state: running or failed")
        cases.append({"name": spec["name"], "compat": str(spec["compat"]), "files": files,
                      "conf": {str(k): v for k, v in (spec.get("conf") or {}).items()}, "state": state,
                      "probes": probes,
                      "unsupported": {str(k): str(v) for k, v in (spec.get("unsupported") or {}).items()},
                      "fwengine_refuses": spec.get("fwengine_refuses"),
                      "fwengine_differs": spec.get("fwengine_differs")})
    return cases


def write_config(case, directory):
    """The case's /etc/firewalld: firewalld.conf (Debian's keys with the case's changes; a key set to
    null is left out) and the case's files."""
    directory.mkdir(parents=True)
    conf = dict(FIREWALLD_CONF)
    conf.update(case["conf"])
    (directory / "firewalld.conf").write_text("".join(f"{k}={v}\n" for k, v in conf.items() if v is not None))
    for relative, text in case["files"].items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


# ---------------------------------------------------------------------------------------------------
# Running


class Daemons:
    """Every firewalld and dbus-daemon this run started, so that exit (also on a signal) stops them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.processes = []

    def add(self, process):
        with self.lock:
            self.processes.append(process)

    def stop_all(self):
        with self.lock:
            processes, self.processes = self.processes, []
        for process in processes:
            oracle.stop_child(process)


DAEMONS = Daemons()
TRACE_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2)


class Output:
    def __init__(self):
        self.lock = threading.Lock()
        self.passed = self.failed = self.skipped = 0

    def print(self, text):
        with self.lock:
            print(text, flush=True)

    def count(self, ok):
        with self.lock:
            if ok:
                self.passed += 1
            else:
                self.failed += 1


def probe_all(topology, probes, timeout):
    """Real results of all probes; the expected-open ones that timed out are retried with a longer wait."""
    return scenario.send_probes_checked(topology, probes, lambda p: "open" if p["expect"] == CLASS_OPEN else "closed",
                                        timeout)


def ruleset_left(topology):
    return run_command(["ip", "netns", "exec", topology.names[FIREWALL_NS], "nft", "list", "ruleset"]).stdout.strip()


def run_oracle(case, topology, workdir, options):
    """firewalld's side: (state, results, notes)."""
    config = workdir / "firewalld"
    write_config(case, config)
    notes = []
    firewalld = oracle.Firewalld(topology.names[FIREWALL_NS], config, workdir / "state", register=DAEMONS.add)
    try:
        state = firewalld.start()
        if state != case["state"]:
            notes.append(f"firewalld state {state}, expected {case['state']}: "
                         + " | ".join(firewalld.errors()[-3:]))
        results = probe_all(topology, case["probes"], options.timeout)
    finally:
        firewalld.stop()
    if ruleset_left(topology):  # the iptables-nft tables of direct rules stay: keep them from the next case
        run_command(["ip", "netns", "exec", topology.names[FIREWALL_NS], "nft", "flush", "ruleset"])
    return state, results, notes


def fwengine_policy(config):
    return {"frontend": "firewalld", "files": [str(config)], "node": None, "host": FIREWALL_NS,
            "options": FWENGINE_OPTIONS}


def run_backend(case, topology, config, engine, backend, options):
    """One backend's side, in its own topology: (results or None if apply refused or failed, note)."""
    policy = fwengine_policy(config)
    netns = topology.names[FIREWALL_NS]
    completed = engine.apply(policy, backend, netns)
    if completed.returncode != 0:
        output = error_lines(completed.stderr or completed.stdout)
        engine.flush(policy, backend, netns)
        reason = case["unsupported"].get(backend) or case["fwengine_refuses"]
        if reason and completed.returncode == 2:
            return None, f"refused as expected ({reason}): {first_line(output)}"
        return None, f"FAIL apply exited {completed.returncode}: {output}"
    notes = []
    if case["unsupported"].get(backend) or case["fwengine_refuses"]:
        notes.append("applied although the case lists it as refused: update the case")
    try:
        results = probe_all(topology, case["probes"], options.timeout)
    finally:
        flushed = engine.flush(policy, backend, netns)
    if flushed.returncode != 0:
        notes.append(f"FAIL flush exited {flushed.returncode}: {first_line(flushed.stderr or flushed.stdout)}")
    else:  # the namespace holds nothing else, so "as before apply" is its state when it was new
        after = topology.kernel_state(FIREWALL_NS)
        changed = [place for place in topology.clean_state if after.get(place) != topology.clean_state[place]]
        if changed:
            notes.append(f"FAIL not as before apply after flush: {', '.join(changed)}")
            topology.clean_state = after  # report it once, not again for every later case
    return results, "; ".join(notes)


def submit_traces(case, topology, config, engine):
    """`fwengine trace` for every probe (it evaluates the IR alone, so once per case, not per backend)."""
    policy = fwengine_policy(config)
    netns = topology.names[FIREWALL_NS]
    return [[TRACE_POOL.submit(engine.trace, policy, netns, packet, probe)
             for packet in trace_packets(topology, probe)] if probe["trace"] is not False else None
            for probe in case["probes"]]


def error_lines(text):
    """fwengine's errors without its notes and warnings (the whole text if it has no error line)."""
    errors = [line for line in text.strip().splitlines() if "error" in line]
    return "\n".join(errors)[:1500] if errors else text.strip()[:1500]


def trace_packets(topology, probe):
    """The runner's packets for `fwengine trace`, with what firewalld can also match on: the source port
    and, for a packet that arrives on a link, the sender's MAC address."""
    packets = topology.trace_packets(FIREWALL_NS, probe)
    for packet in packets:
        if probe["sport"]:
            packet["sport"] = probe["sport"]
        if packet.get("iif") and packet["iif"] != "lo":
            packet["src_mac"] = peer_mac(topology, packet["iif"])
    return packets


def peer_mac(topology, ifname):
    peer_ns, peer_if = topology.peers[(FIREWALL_NS, ifname)]
    cache = topology.__dict__.setdefault("peer_macs", {})
    if ifname not in cache:
        cache[ifname] = json.loads(topology.ip(peer_ns, "-j", "link", "show", "dev", peer_if).stdout)[0]["address"]
    return cache[ifname]


def trace_verdict(answers):
    if answers is None:
        return "-"
    if not answers:
        return "n/a"
    verdicts = [verdict for verdict, _ in answers]
    errors = [v for v in verdicts if v.startswith("error")]
    if errors:
        return errors[0]
    return "open" if all(v == "open" for v in verdicts) else "closed"


def firewall_decided(probe, real_class):
    """Whether the probe's result says what the firewall did: not when a probe that fails without any
    firewall (its baseline) fails the same way with it (e.g. a destination behind fw that drops it)."""
    return probe["baseline"] == CLASS_OPEN or real_class != probe["baseline"]


def describe(result):
    text = verdict_class(result)
    seen = seen_source(result)
    return f"{text}@{seen}" if seen else text


def run_case(case, topologies, engine, backends, options, out, workroot):
    """firewalld in topologies[0] and each backend in the next ones, all at the same time; then compare."""
    workdir = workroot / case["name"]
    workdir.mkdir()
    config = workdir / "fwengine"
    write_config(case, config)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1 + len(backends)) as pool:
        oracle_future = pool.submit(run_oracle, case, topologies[0], workdir, options)
        trace_futures = submit_traces(case, topologies[1], config, engine) if backends else None
        backend_futures = {backend: pool.submit(run_backend, case, topology, config, engine, backend, options)
                           for backend, topology in zip(backends, topologies[1:])}
        _, oracle_results, notes = oracle_future.result()
        outcome = {backend: future.result() for backend, future in backend_futures.items()}
    traces = None  # trace of an input that no backend applied (a refused configuration) says nothing
    if trace_futures is not None and any(results is not None for results, _ in outcome.values()):
        traces = [trace_verdict(None if answers is None else [future.result() for future in answers])
                  for answers in trace_futures]
    case_ok = not notes
    for note in notes:
        out.print(f"{case['name']:<40} FAIL {note}")
    for backend, (_, note) in outcome.items():
        if note:
            out.print(f"{case['name']:<40} {backend}: {note}")
            case_ok &= "FAIL" not in note
    differs = case["fwengine_differs"]
    engine_mismatches = 0
    for index, probe in enumerate(case["probes"]):
        real = oracle_results[index]
        real_class = verdict_class(real)
        problems = []
        if real_class != probe["expect"]:
            problems.append("firewalld != expected")
        if probe.get("seen") and seen_source(real) != probe["seen"]:
            problems.append(f"firewalld: server saw {seen_source(real)}, expected {probe['seen']}")
        columns = [f"firewalld={describe(real):<18}"]
        for backend in backends:
            results, _ = outcome.get(backend, (None, ""))
            if results is None:
                columns.append(f"{backend}=-")
                continue
            mine = results[index]
            columns.append(f"{backend}={describe(mine):<18}")
            if verdict_class(mine) != real_class or seen_source(mine) != seen_source(real):
                problems.append(f"{backend} != firewalld")
                engine_mismatches += 1
        if traces is not None:
            trace = traces[index]
            columns.append(f"trace={'error' if trace.startswith('error') else trace}")
            if trace.startswith("error"):
                problems.append(f"trace {trace}")
            elif trace not in ("-", "n/a") and firewall_decided(probe, real_class) and \
                    trace != ("open" if real_class == CLASS_OPEN else "closed"):
                problems.append("trace != firewalld")
                engine_mismatches += 1
        if differs and problems and all(p.endswith("!= firewalld") and not p.startswith("firewalld") for p in problems):
            problems = [f"known difference ({', '.join(problems)})"]
            ok = True
        else:
            ok = not problems
        case_ok &= ok
        status = ("ok " + problems[0]) if ok and problems else "ok" if ok else "FAIL " + ", ".join(problems)
        out.print(f"{case['name']:<40} {probe['name']:<34} expect={probe['expect']:<10} {' '.join(columns)} {status}")
    if differs and engine and backends and engine_mismatches == 0:
        out.print(f"{case['name']:<40} note: fwengine matches firewalld although the case says it differs "
                  f"({differs}): remove fwengine_differs")
    out.count(case_ok)
    if not case_ok and options.keep_failed:
        out.print(f"{case['name']:<40} kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return case_ok


def build_topology(tag):
    topology = scenario.Topology(scenario.parse_topology(TOPOLOGY, "difftest topology"), tag)
    topology.build()
    topology.start_agents()
    return topology


def baseline(topologies, cases, options, out):
    """With no firewall every probe must give its `baseline` class (default open) in every topology:
    otherwise a closed verdict later would prove nothing about the firewall."""
    unique = {}
    for case in cases:
        for probe in case["probes"]:
            key = (probe["from"], probe["src"], probe["to"], probe["proto"], probe.get("port"), probe["sport"])
            unique.setdefault(key, dict(probe, expect=probe["baseline"]))
    probes = list(unique.values())
    ok = True
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(topologies)) as pool:
        answers = list(pool.map(lambda topology: probe_all(topology, probes, options.timeout), topologies))
    for topology, results in zip(topologies, answers):
        for probe, result in zip(probes, results):
            if verdict_class(result) != probe["expect"]:
                ok = False
                out.print(f"baseline {topology.names[FIREWALL_NS]}: {probe['name']} gave {describe(result)}, "
                          f"expected {probe['expect']}")
    if ok:
        out.print(f"baseline: all {len(probes)} probes as expected with no firewall")
    return ok


def check_unanswered_ports(cases, topology, listeners):
    """A `listen: false` probe (its packet is redirected elsewhere) must not meet a listener that another
    probe needs on the same port: a failed redirect would then look like a working one."""
    for case in cases:
        for probe in case["probes"]:
            if probe["listen"] or probe["proto"] == "icmp":
                continue
            owner = topology.owner.get(probe["to"])
            tcp, udp = listeners.get(owner, (set(), set()))
            if probe["port"] in (tcp if probe["proto"] == "tcp" else udp):
                raise ScenarioError(f"{case['name']}: {probe['name']} has listen: false, but another probe "
                                    f"makes {owner} listen on {probe['proto']} port {probe['port']}: use another port")


def select_shard(cases, shard):
    if not shard:
        return cases
    index, count = (int(part) for part in shard.split("/"))
    return [case for position, case in enumerate(cases) if position % count == index - 1]


def main():
    parser = argparse.ArgumentParser(
        description="firewalld 1.3.3 against fwengine --frontend firewalld, with real traffic.")
    parser.add_argument("cases", nargs="+", help="case files (YAML lists)")
    parser.add_argument("--fwengine", help="the fwengine binary; without it (or without its firewalld plugin) "
                        "only firewalld is checked against the expectations")
    parser.add_argument("--backend", action="append", dest="backends",
                        help="fwengine backend (repeatable; default nft)")
    parser.add_argument("--shard", help="I/N: run every N-th case starting with the I-th (1-based)")
    parser.add_argument("--only", action="append", help="run only the cases with this name (repeatable)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds a probe waits for an answer")
    parser.add_argument("--keep-failed", action="store_true", help="keep the configuration of failed cases")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every fwengine command")
    parser.add_argument("--check", action="store_true", help="only read the case files (no root needed)")
    options = parser.parse_args()

    try:
        cases = [case for path in options.cases for case in load_cases(path)]
    except ScenarioError as error:
        print(f"FAIL {error}")
        return 1
    if options.check:
        print(f"{len(cases)} cases ok")
        return 0
    cases = select_shard(cases, options.shard)
    if options.only:
        cases = [case for case in cases if case["name"] in options.only]
    problem = scenario.namespace_support_problem()
    missing = oracle.missing_programs()
    if problem or missing:
        print(f"SKIP: {problem or 'not installed: ' + ', '.join(missing)}")
        return scenario.EXIT_SKIPPED

    out = Output()
    backends = options.backends or ["nft"]
    engine = None
    if options.fwengine and Path(options.fwengine).is_file():
        engine = scenario.Engine(Path(options.fwengine).resolve(), options.verbose)
        available = engine.plugins() or set()
        if "firewalld" not in available:
            out.print("SKIP fwengine: its firewalld frontend plugin is not installed; checking firewalld alone")
            engine = None
        for backend in [b for b in backends if b not in available]:
            out.print(f"SKIP backend {backend}: plugin not installed")
            backends.remove(backend)
    else:
        out.print("SKIP fwengine: no binary given; checking firewalld alone")
    if engine is None:
        backends = []

    started = time.monotonic()
    workroot = Path(tempfile.mkdtemp(prefix="fwe-fwd-"))  # configurations and firewalld's state and log
    if not options.keep_failed:
        atexit.register(shutil.rmtree, workroot, True)
    topologies = []
    try:
        topologies = [build_topology(f"fd{index}") for index in range(1 + len(backends))]
        listeners = scenario.listener_ports({"listeners": [], "cases": cases}, topologies[0])
        check_unanswered_ports(cases, topologies[0], listeners)
        for topology in topologies:
            topology.listen(listeners)
            topology.clean_state = topology.kernel_state(FIREWALL_NS)
        if not baseline(topologies, cases, options, out):
            return 1
        for case in cases:
            try:
                run_case(case, topologies, engine, backends, options, out, workroot)
            except (CommandError, oracle.OracleError, RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                out.count(False)
                out.print(f"{case['name']:<40} FAIL {error}")
            except Exception:  # a harness bug: say where, go on with the next case
                out.count(False)
                out.print(f"{case['name']:<40} FAIL harness error:\n{traceback.format_exc()}")
    except ScenarioError as error:
        print(f"FAIL {error}")
        return 1
    finally:
        DAEMONS.stop_all()
        for topology in topologies:
            topology.destroy()
    summary = f"{out.passed} cases passed, {out.failed} failed ({time.monotonic() - started:.0f} s"
    summary += ", firewalld only)" if engine is None else f", fwengine backends: {', '.join(backends)})"
    print(summary)
    return 1 if out.failed else 0


if __name__ == "__main__":
    scenario.run_main(main, DAEMONS.stop_all)
