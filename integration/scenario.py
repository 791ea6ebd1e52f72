#!/usr/bin/env python3
"""Data-driven scenario runner: builds a namespace topology, applies a policy with fwengine, sends real
TCP/UDP/ICMP probes, and checks every probe against its expected verdict and against `fwengine trace`.

  scenario.py --fwengine build/bin/fwengine --backend trace --backend nft integration/scenarios/calico

The scenario file format is described in integration/README.md. Everything the runner creates (network
namespaces named fwe-t-<pid>-..., the agents in them) is removed on exit, also on failure and Ctrl-C.
The root network namespace is never changed: every `ip` and `nft` command names a test namespace.
"""

import argparse
import atexit
import concurrent.futures
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import yaml

INTEGRATION_DIR = Path(__file__).resolve().parent
REPO_DIR = INTEGRATION_DIR.parent
AGENT_SCRIPT = INTEGRATION_DIR / "netns_agent.py"
EXIT_SKIPPED = 77  # CTest's SKIP_RETURN_CODE: this machine cannot run namespace tests
PSEUDO_BACKEND_TRACE = "trace"  # no kernel: probes are checked against `fwengine trace` only


def plugin_of(backend):
    """A backend as --backend names it: the plugin, then, after a colon, its options (ebpf:xdp=veth-up)."""
    return backend.split(":", 1)[0]


def backend_options_of(backend):
    """The --backend-option KEY=VALUE list of a backend written PLUGIN:KEY=VALUE[,KEY=VALUE...]; a value
    may hold commas too (ebpf:xdp=eth0,eth1): a part without '=' belongs to the option before it."""
    _, _, options = backend.partition(":")
    out = []
    for part in options.split(","):
        if "=" in part or not out:
            out.append(part)
        else:
            out[-1] += "," + part
    return [option for option in out if option]
PSEUDO_BACKEND_KERNEL = "kernel"  # scenario without policy: only the pre-rules filter
VERDICTS = ("open", "closed")
PROTOCOLS = ("tcp", "udp", "icmp", "tcp-invalid")


class ScenarioError(Exception):
    """A scenario file that does not say what the runner needs; the message names file and key."""


class CommandError(Exception):
    def __init__(self, command, completed):
        self.command, self.completed = command, completed
        output = (completed.stderr or completed.stdout or "").strip()
        super().__init__(f"`{' '.join(command)}` exited {completed.returncode}: {output}")


def run_command(command, stdin_text=None, check=True, timeout=60):
    completed = subprocess.run(command, input=stdin_text, capture_output=True, text=True, timeout=timeout)
    if check and completed.returncode != 0:
        raise CommandError(command, completed)
    return completed


# ---------------------------------------------------------------------------------------------------
# Cleanup: everything created is registered before it exists, and removed by pid / by exact name.


class Resources:
    def __init__(self):
        self.lock = threading.Lock()
        self.processes = []
        self.namespaces = []

    def add_process(self, process, netns):
        with self.lock:
            self.processes.append((process, netns))

    def add_namespace(self, name):
        with self.lock:
            self.namespaces.append(name)

    def release(self, namespaces):
        """Stop the agents in `namespaces` and delete the namespaces."""
        with self.lock:
            mine = [process for process, netns in self.processes if netns in namespaces]
            self.processes = [(process, netns) for process, netns in self.processes if netns not in namespaces]
            self.namespaces = [n for n in self.namespaces if n not in namespaces]
        for process in mine:
            stop_process(process)
        for name in namespaces:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            # fwengine's own state for that namespace (lock, applied state, snapshots), and the ebpf
            # backend's pins, which outlive the namespace when a run ends before its flush
            shutil.rmtree(os.path.join("/run/fwengine", name), ignore_errors=True)
            shutil.rmtree(os.path.join("/sys/fs/bpf/fwengine", name), ignore_errors=True)

    def release_all(self):
        with self.lock:
            namespaces = list(self.namespaces)
        self.release(namespaces)


def stop_process(process):
    if process.poll() is not None:
        return
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=2)
    except ProcessLookupError:
        pass


RESOURCES = Resources()


def exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through every `finally`, then atexit cleans the rest


# ---------------------------------------------------------------------------------------------------
# Scenario files


def check_keys(mapping, allowed, where, required=()):
    if not isinstance(mapping, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed:
            raise ScenarioError(f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in mapping:
            raise ScenarioError(f"{where}: '{key}' is required")


def as_list(value, where):
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise ScenarioError(f"{where}: expected a list")


def load_yaml_file(path):
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML: {error}") from error


def parse_interface(spec, where):
    check_keys(spec, {"ifname", "addresses", "mac"}, where, required=("ifname",))
    addresses = [str(a) for a in as_list(spec.get("addresses"), f"{where}.addresses")]
    for address in addresses:
        try:
            ipaddress.ip_interface(address)
        except ValueError as error:
            raise ScenarioError(f"{where}.addresses: {error}") from error
    if len(spec["ifname"]) > 15:
        raise ScenarioError(f"{where}.ifname: '{spec['ifname']}' is longer than 15 characters")
    return {"ifname": spec["ifname"], "addresses": addresses, "mac": str(spec["mac"]) if spec.get("mac") else None}


def parse_topology(spec, where):
    check_keys(spec, {"namespaces", "links"}, where, required=("links",))
    namespaces = {}
    for name, ns_spec in (spec.get("namespaces") or {}).items():
        ns_where = f"{where}.namespaces.{name}"
        ns_spec = ns_spec or {}
        check_keys(ns_spec, {"sysctls", "routes", "dummies", "bridges", "macvlans"}, ns_where)
        namespaces[name] = {
            "sysctls": {str(k): str(v) for k, v in (ns_spec.get("sysctls") or {}).items()},
            "routes": [str(r) for r in as_list(ns_spec.get("routes"), f"{ns_where}.routes")],
            "dummies": [parse_interface(d, f"{ns_where}.dummies[{i}]")
                        for i, d in enumerate(as_list(ns_spec.get("dummies"), f"{ns_where}.dummies"))],
            "bridges": [parse_bridge(b, f"{ns_where}.bridges[{i}]")
                        for i, b in enumerate(as_list(ns_spec.get("bridges"), f"{ns_where}.bridges"))],
            "macvlans": [parse_macvlan(m, f"{ns_where}.macvlans[{i}]")
                         for i, m in enumerate(as_list(ns_spec.get("macvlans"), f"{ns_where}.macvlans"))],
        }
    links = []
    for index, link in enumerate(as_list(spec.get("links"), f"{where}.links")):
        link_where = f"{where}.links[{index}]"
        if not isinstance(link, dict) or len(link) != 2:
            raise ScenarioError(f"{link_where}: a link names exactly two namespaces, each with ifname/addresses")
        ends = [(ns, parse_interface(end, f"{link_where}.{ns}")) for ns, end in link.items()]
        for ns, _ in ends:
            namespaces.setdefault(ns, {"sysctls": {}, "routes": [], "dummies": [], "bridges": []})
        links.append(ends)
    link_ends = {(ns, end["ifname"]) for ends in links for ns, end in ends}
    for name, ns_spec in namespaces.items():
        for bridge in ns_spec["bridges"]:
            for port in bridge["ports"]:
                if (name, port) not in link_ends:
                    raise ScenarioError(f"{where}.namespaces.{name}.bridges: port '{port}' is no link end in {name}")
        for macvlan in ns_spec.get("macvlans", []):
            if macvlan["lower"] not in link_ends:
                raise ScenarioError(f"{where}.namespaces.{name}.macvlans: '{'/'.join(macvlan['lower'])}' is no link end")
    return {"namespaces": namespaces, "links": links}


def parse_bridge(spec, where):
    """A bridge whose ports are link ends of its namespace; its addresses are the namespace's on that LAN."""
    check_keys(spec, {"ifname", "addresses", "ports"}, where, required=("ifname", "ports"))
    bridge = parse_interface({k: v for k, v in spec.items() if k != "ports"}, where)
    bridge["ports"] = [str(port) for port in as_list(spec["ports"], f"{where}.ports")]
    return bridge


def parse_macvlan(spec, where):
    """A macvlan (bridge mode) in this namespace on top of a link end `lower: NS/IFNAME` of another: frames
    for its MAC come in on that end and go to it alone, as Docker's macvlan networks give containers."""
    check_keys(spec, {"ifname", "addresses", "mac", "lower"}, where, required=("ifname", "lower"))
    macvlan = parse_interface({k: v for k, v in spec.items() if k != "lower"}, where)
    lower = str(spec["lower"]).split("/")
    if len(lower) != 2:
        raise ScenarioError(f"{where}.lower: '{spec['lower']}' is not NAMESPACE/IFNAME")
    macvlan["lower"] = tuple(lower)
    return macvlan


def parse_probe(spec, where, namespaces):
    check_keys(spec, {"name", "from", "to", "src", "proto", "port", "expect", "trace", "listen", "baseline",
                      "decided_by", "size", "answer", "closed_by"},
               where, required=("name", "from", "to", "proto", "expect"))
    probe = dict(spec)
    probe["to"], probe["src"] = str(spec["to"]), (str(spec["src"]) if spec.get("src") else None)
    for key in ("to", "src"):
        if probe[key]:
            try:
                ipaddress.ip_address(probe[key])
            except ValueError as error:
                raise ScenarioError(f"{where}.{key}: {error}") from error
    if spec["from"] not in namespaces:
        raise ScenarioError(f"{where}.from: no namespace '{spec['from']}' in the topology")
    if spec["proto"] not in PROTOCOLS:
        raise ScenarioError(f"{where}.proto: '{spec['proto']}' is not one of {', '.join(PROTOCOLS)}")
    if spec["proto"] != "icmp" and not isinstance(spec.get("port"), int):
        raise ScenarioError(f"{where}.port: {spec['proto']} probes need a port number")
    if spec["expect"] not in VERDICTS:
        raise ScenarioError(f"{where}.expect: '{spec['expect']}' is not 'open' or 'closed'")
    for key in ("size", "answer"):
        if key in spec and (spec["proto"] != "udp" or type(spec[key]) is not int or not 1 <= spec[key] <= 65000):
            raise ScenarioError(f"{where}.{key}: UDP probes only, 1-65000 bytes")
    probe.setdefault("baseline", "open")
    if probe["baseline"] not in VERDICTS + ("skip",):
        raise ScenarioError(f"{where}.baseline: must be open, closed or skip")
    probe.setdefault("listen", True)
    if "closed_by" in spec and (spec["expect"] != "closed" or not isinstance(spec["closed_by"], str)):
        raise ScenarioError(f"{where}.closed_by: only for closed probes, e.g. 'refused', 'icmp 3/13' or 'timeout'")
    probe["decided_by"] = [str(text) for text in as_list(spec.get("decided_by"), f"{where}.decided_by")]
    trace = spec.get("trace", {})
    if trace is not False:
        check_keys(trace or {}, {"iif", "oif", "src", "dst"}, f"{where}.trace")
    probe["trace"] = trace if trace is False else dict(trace or {})
    return probe


def parse_policy(spec, where, namespaces):
    check_keys(spec, {"frontend", "files", "node", "host", "options"}, where,
               required=("frontend", "files", "host"))
    if spec["host"] not in namespaces:
        raise ScenarioError(f"{where}.host: no namespace '{spec['host']}' in the topology")
    files = [str(f) for f in as_list(spec["files"], f"{where}.files")]
    return {"frontend": spec["frontend"], "files": files, "node": spec.get("node"), "host": spec["host"],
            "options": [str(o) for o in as_list(spec.get("options"), f"{where}.options")]}


def load_scenario(path):
    path = Path(path)
    data = load_yaml_file(path)
    where = str(path)
    check_keys(data, {"name", "description", "topology", "pre_rules", "listeners", "policy", "probes",
                      "cases", "unsupported"}, where, required=("topology",))
    topology_spec = data["topology"]
    topology_where = f"{where}: topology"
    if isinstance(topology_spec, str):  # a shared topology file, relative to this scenario
        topology_path = (path.parent / topology_spec).resolve()
        topology_where = str(topology_path)
        topology_spec = load_yaml_file(topology_path)
    topology = parse_topology(topology_spec, topology_where)
    namespaces = topology["namespaces"]

    pre_rules = []
    for index, rule in enumerate(as_list(data.get("pre_rules"), f"{where}: pre_rules")):
        rule_where = f"{where}: pre_rules[{index}]"
        check_keys(rule, {"ns", "nft"}, rule_where, required=("ns", "nft"))
        if rule["ns"] not in namespaces:
            raise ScenarioError(f"{rule_where}.ns: no namespace '{rule['ns']}' in the topology")
        pre_rules.append(rule)

    listeners = []
    for index, listener in enumerate(as_list(data.get("listeners"), f"{where}: listeners")):
        listener_where = f"{where}: listeners[{index}]"
        check_keys(listener, {"ns", "tcp", "udp"}, listener_where, required=("ns",))
        if listener["ns"] not in namespaces:
            raise ScenarioError(f"{listener_where}.ns: no namespace '{listener['ns']}' in the topology")
        listeners.append({"ns": listener["ns"], "tcp": as_list(listener.get("tcp"), listener_where),
                          "udp": as_list(listener.get("udp"), listener_where)})

    default_policy = data.get("policy")
    default_probes = data.get("probes")
    cases = []
    for index, case in enumerate(as_list(data.get("cases"), f"{where}: cases") or [{"name": "default"}]):
        case_where = f"{where}: cases[{index}]"
        check_keys(case, {"name", "description", "policy", "probes", "expect", "decided_by", "unsupported",
                          "sysctls", "sysctls_optional", "ip"}, case_where, required=("name",))
        ip_commands = {}
        for ns, lines in (case.get("ip") or {}).items():
            if ns not in namespaces:
                raise ScenarioError(f"{case_where}.ip: no namespace '{ns}' in the topology")
            ip_commands[ns] = [str(line) for line in as_list(lines, f"{case_where}.ip.{ns}")]
        sysctls = {}
        for ns, values in (case.get("sysctls") or {}).items():
            if ns not in namespaces or not isinstance(values, dict):
                raise ScenarioError(f"{case_where}.sysctls: maps a namespace of the topology to its sysctls")
            sysctls[ns] = {str(k): str(v) for k, v in values.items()}
        sysctls_optional = case.get("sysctls_optional", False)
        if not isinstance(sysctls_optional, bool):
            raise ScenarioError(f"{case_where}.sysctls_optional: must be true or false")
        policy_spec = dict(default_policy or {})
        policy_spec.update(case.get("policy") or {})
        policy = parse_policy(policy_spec, f"{case_where}.policy", namespaces) if policy_spec else None
        probe_specs = case.get("probes", default_probes)
        probes_where = f"{case_where}.probes" if "probes" in case else f"{where}: probes"
        probes = [parse_probe(p, f"{probes_where}[{i}]", namespaces)
                  for i, p in enumerate(as_list(probe_specs, probes_where))]
        if not probes:
            raise ScenarioError(f"{case_where}: no probes (give 'probes' at the top or in the case)")
        names = [p["name"] for p in probes]
        if len(set(names)) != len(names):
            raise ScenarioError(f"{case_where}: probe names must be unique")
        for name, verdict in (case.get("expect") or {}).items():
            if name not in names:
                raise ScenarioError(f"{case_where}.expect: no probe named '{name}'")
            if verdict not in VERDICTS:
                raise ScenarioError(f"{case_where}.expect.{name}: '{verdict}' is not 'open' or 'closed'")
            probes[names.index(name)] = dict(probes[names.index(name)], expect=verdict)
        for name, texts in (case.get("decided_by") or {}).items():
            if name not in names:
                raise ScenarioError(f"{case_where}.decided_by: no probe named '{name}'")
            texts = [str(text) for text in as_list(texts, f"{case_where}.decided_by.{name}")]
            probes[names.index(name)] = dict(probes[names.index(name)], decided_by=texts)
        unsupported = {}
        for owner, owner_where in ((data, where), (case, case_where)):
            if not isinstance(owner.get("unsupported") or {}, dict):
                raise ScenarioError(f"{owner_where}: 'unsupported' maps a backend to the reason it refuses the policy")
            unsupported.update(owner.get("unsupported") or {})
        cases.append({"name": case["name"], "policy": policy, "probes": probes, "sysctls": sysctls,
                      "sysctls_optional": sysctls_optional, "ip": ip_commands,
                      "unsupported": {str(k): str(v) for k, v in unsupported.items()}})
    name = data.get("name") or path.stem
    return {"name": name, "path": path, "topology": topology, "pre_rules": pre_rules, "listeners": listeners,
            "cases": cases}


# ---------------------------------------------------------------------------------------------------
# Topology: namespaces, veth links, addresses, routes, sysctls, static neighbours, agents


class Agent:
    """The netns_agent.py process in one namespace; requests are matched to answers by id."""

    def __init__(self, netns):
        self.netns = netns
        self.ids = itertools.count(1)
        self.pending = {}
        self.lock = threading.Lock()
        self.process = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-u", str(AGENT_SCRIPT)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        RESOURCES.add_process(self.process, netns)
        ready = self.process.stdout.readline()
        if not ready or not json.loads(ready).get("ready"):
            raise RuntimeError(f"agent in {netns} did not start")
        threading.Thread(target=self._read_answers, daemon=True).start()

    def _read_answers(self):
        for line in self.process.stdout:
            answer = json.loads(line)
            with self.lock:
                future = self.pending.pop(answer["id"], None)
            if future is not None:
                future.set_result(answer)
        with self.lock:  # the agent died: fail whatever still waits
            for future in self.pending.values():
                future.set_result({"result": "error", "detail": "agent exited", "ok": False})
            self.pending.clear()

    def submit(self, request):
        future = concurrent.futures.Future()
        with self.lock:
            request = dict(request, id=next(self.ids))
            self.pending[request["id"]] = future
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        return future


class Topology:
    def __init__(self, spec, tag):
        self.spec = spec
        self.names = {ns: f"fwe-t-{os.getpid()}-{tag}-{ns}" for ns in spec["namespaces"]}
        self.agents = {}
        self.owner = {}  # address -> logical namespace
        self.peers = {}  # (ns, ifname) -> (peer ns, peer ifname)
        self.macs = {}  # (ns, ifname) -> MAC, for the link ends the spec gives one
        self.addresses = {ns: [] for ns in spec["namespaces"]}
        self.redirect_addresses = {}  # (ns, ifname, family, scope) -> address, see redirect_address
        self.source_routes = {}  # (ns, address) -> interface or "none", see source_route
        self.interfaces = {ns: ["lo"] + [d["ifname"] for d in spec["namespaces"][ns]["dummies"]]
                           + [b["ifname"] for b in spec["namespaces"][ns]["bridges"]]
                           for ns in spec["namespaces"]}
        self.bridge_of = {}  # (ns, port) -> the bridge it is a port of
        self.macvlans_on = {}  # (ns, ifname) -> [(ns, macvlan)]: the macvlans on top of that link end
        for ns, ns_spec in spec["namespaces"].items():
            for macvlan in ns_spec.get("macvlans", []):
                self._own(ns, macvlan["addresses"])
                self.interfaces[ns].append(macvlan["ifname"])
                self.macvlans_on.setdefault(macvlan["lower"], []).append((ns, macvlan))
            for dummy in ns_spec["dummies"]:
                self._own(ns, dummy["addresses"])
            for bridge in ns_spec["bridges"]:
                self._own(ns, bridge["addresses"])
                for port in bridge["ports"]:
                    self.bridge_of[(ns, port)] = bridge
        for (ns_a, end_a), (ns_b, end_b) in spec["links"]:
            self._own(ns_a, end_a["addresses"])
            self._own(ns_b, end_b["addresses"])
            self.interfaces[ns_a].append(end_a["ifname"])
            self.interfaces[ns_b].append(end_b["ifname"])
            self.peers[(ns_a, end_a["ifname"])] = (ns_b, end_b["ifname"])
            self.peers[(ns_b, end_b["ifname"])] = (ns_a, end_a["ifname"])
            for ns, end in ((ns_a, end_a), (ns_b, end_b)):
                if end["mac"]:
                    self.macs[(ns, end["ifname"])] = end["mac"]

    def _own(self, ns, addresses):
        for address in addresses:
            ip = str(ipaddress.ip_interface(address).ip)
            self.owner[ip] = ns
            self.addresses[ns].append(ip)

    def ip(self, ns, *args, **kwargs):
        return run_command(["ip", "-n", self.names[ns], *args], **kwargs)

    def ip_batch(self, ns, lines):
        if lines:
            run_command(["ip", "-n", self.names[ns], "-batch", "-"], stdin_text="\n".join(lines) + "\n")

    def build(self):
        for ns, name in self.names.items():
            RESOURCES.add_namespace(name)
            run_command(["ip", "netns", "add", name])
            sysctls = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0",
                       "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}
            sysctls.update(self.spec["namespaces"][ns]["sysctls"])
            # Written to /proc/sys directly: no dependency on procps' sysctl.
            missing = self.set_sysctls(ns, sysctls)
            if missing:
                raise RuntimeError(f"namespace {ns}: the kernel has no sysctl {missing}")
            self.ip(ns, "link", "set", "lo", "up")
        setup = {ns: [] for ns in self.names}
        for (ns_a, end_a), (ns_b, end_b) in self.spec["links"]:
            mac_a = ["address", end_a["mac"]] if end_a["mac"] else []
            mac_b = ["address", end_b["mac"]] if end_b["mac"] else []
            self.ip(ns_a, "link", "add", "name", end_a["ifname"], *mac_a, "type", "veth", "peer", "name",
                    end_b["ifname"], *mac_b, "netns", self.names[ns_b])
            for ns, end in ((ns_a, end_a), (ns_b, end_b)):
                setup[ns] += address_commands(end) + [f"link set {end['ifname']} up"]
        for (lower_ns, lower_if), macvlans in self.macvlans_on.items():
            for ns, macvlan in macvlans:
                mac = ["address", macvlan["mac"]] if macvlan["mac"] else []
                self.ip(lower_ns, "link", "add", "link", lower_if, "name", macvlan["ifname"], *mac,
                        "netns", self.names[ns], "type", "macvlan", "mode", "bridge")
                setup[ns] += address_commands(macvlan) + [f"link set {macvlan['ifname']} up"]
        for ns, ns_spec in self.spec["namespaces"].items():
            for dummy in ns_spec["dummies"]:
                self._add_dummy(ns, dummy["ifname"])
                setup[ns] += address_commands(dummy) + [f"link set {dummy['ifname']} up"]
            for bridge in ns_spec["bridges"]:
                setup[ns] += [f"link add name {bridge['ifname']} type bridge"]
                setup[ns] += [f"link set {port} master {bridge['ifname']}" for port in bridge["ports"]]
                setup[ns] += address_commands(bridge) + [f"link set {bridge['ifname']} up"]
        for ns, lines in setup.items():
            self.ip_batch(ns, lines)
        self._add_static_neighbours()
        for ns, ns_spec in self.spec["namespaces"].items():
            self.ip_batch(ns, [f"route add {route}" for route in ns_spec["routes"]])

    def set_sysctls(self, ns, sysctls):
        """Written to /proc/sys directly: no dependency on procps' sysctl. Returns the first one the
        kernel does not have (nothing written then), else None."""
        pairs = [item for key, value in sysctls.items() for item in (key.replace(".", "/"), value)]
        completed = run_command(["ip", "netns", "exec", self.names[ns], "sh", "-c",
                                 'missing() { while [ $# -gt 1 ]; do [ -e "/proc/sys/$1" ] || { echo "$1"; return; }; '
                                 'shift 2; done; return 1; }; missing "$@" && exit 0; '
                                 'while [ $# -gt 1 ]; do printf %s "$2" > "/proc/sys/$1" || exit 1; shift 2; done',
                                 "sysctl"] + pairs)
        missing = completed.stdout.strip()
        return missing.replace("/", ".") if missing else None

    def _add_dummy(self, ns, ifname):
        """A dummy interface; on kernels without the dummy driver an empty bridge, which holds local
        addresses just as well."""
        if self.ip(ns, "link", "add", "name", ifname, "type", "dummy", check=False).returncode != 0:
            self.ip(ns, "link", "add", "name", ifname, "type", "bridge")

    def _add_static_neighbours(self):
        """Permanent neighbour entries on every link, so no probe depends on ARP/ND getting through a
        firewall that is not about them (Calico's default deny would also drop ICMPv6 neighbour discovery)."""
        macs = {}
        for (ns_a, end_a), (ns_b, end_b) in self.spec["links"]:
            for ns, end in ((ns_a, end_a), (ns_b, end_b)):
                link = json.loads(self.ip(ns, "-j", "link", "show", "dev", end["ifname"]).stdout)
                macs[(ns, end["ifname"])] = link[0]["address"]
        lines = {ns: [] for ns in self.names}
        for (ns_a, end_a), (ns_b, end_b) in self.spec["links"]:
            for (ns, end), (peer_ns, peer_end) in (((ns_a, end_a), (ns_b, end_b)), ((ns_b, end_b), (ns_a, end_a))):
                # A bridge port's neighbours are the bridge's; behind a port are the bridge's addresses
                # (a frame to the port's MAC goes up to the bridge) and those of the bridge's other LANs.
                device = self.bridge_of.get((ns, end["ifname"]), end)["ifname"]
                reachable = [(peer_end["addresses"], macs[(peer_ns, peer_end["ifname"])])]
                bridge = self.bridge_of.get((peer_ns, peer_end["ifname"]))
                if bridge:
                    reachable.append((bridge["addresses"], macs[(peer_ns, peer_end["ifname"])]))
                    for port in bridge["ports"]:
                        if port != peer_end["ifname"]:
                            far_ns, far_if = self.peers[(peer_ns, port)]
                            far_end = self._link_end(far_ns, far_if)
                            reachable.append((far_end["addresses"], macs[(far_ns, far_if)]))
                for addresses, mac in reachable:
                    for address in addresses:
                        ip = ipaddress.ip_interface(address).ip
                        lines[ns].append(f"neigh replace {ip} lladdr {mac} dev {device} nud permanent")
        # A macvlan and the far end of the link it is on know each other.
        for (lower_ns, lower_if), macvlans in self.macvlans_on.items():
            far_ns, far_if = self.peers[(lower_ns, lower_if)]
            far_mac = macs[(far_ns, far_if)]
            for ns, macvlan in macvlans:
                mac = json.loads(self.ip(ns, "-j", "link", "show", "dev", macvlan["ifname"]).stdout)[0]["address"]
                for address in macvlan["addresses"]:
                    ip = ipaddress.ip_interface(address).ip
                    lines[far_ns].append(f"neigh replace {ip} lladdr {mac} dev {far_if} nud permanent")
                for address in self._link_end(far_ns, far_if)["addresses"]:
                    ip = ipaddress.ip_interface(address).ip
                    lines[ns].append(f"neigh replace {ip} lladdr {far_mac} dev {macvlan['ifname']} nud permanent")
        for ns, batch in lines.items():
            self.ip_batch(ns, batch)

    def _link_end(self, ns, ifname):
        return next(end for link in self.spec["links"] for end_ns, end in link
                    if end_ns == ns and end["ifname"] == ifname)

    def start_agents(self):
        for ns, name in self.names.items():
            self.agents[ns] = Agent(name)

    def load_nft(self, ns, script):
        run_command(["ip", "netns", "exec", self.names[ns], "nft", "-f", "-"], stdin_text=script)

    def listen(self, ports_by_ns):
        futures = []
        for ns, (tcp, udp) in ports_by_ns.items():
            addresses = self.addresses[ns] + ["127.0.0.1", "::1"]
            futures.append((ns, self.agents[ns].submit(
                {"op": "listen", "tcp": sorted(tcp), "udp": sorted(udp), "addresses": addresses})))
        for ns, future in futures:
            answer = future.result(timeout=10)
            if not answer.get("ok"):
                raise RuntimeError(f"listeners in {ns}: {answer.get('error')}")

    def kernel_state(self, ns):
        """What any backend may change in the namespace, as text per place, without counters: compared
        before apply and after flush to prove that flush removes all fwengine added and nothing else."""
        netns = self.names[ns]

        def output(*command):
            return run_command(["ip", "netns", "exec", netns, *command], check=False).stdout

        state = {"nft ruleset": output("nft", "-s", "list", "ruleset")}
        for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
            if shutil.which(tool):  # rules, user chains and non-default policies; loaded empty tables are no change
                lines = output(tool).splitlines()
                state[tool] = [re.sub(r" \[\d+:\d+\]$", "", line) for line in lines
                               if line.startswith("-A ") or (line.startswith(":") and " ACCEPT [" not in line)]
        if shutil.which("ipset"):
            state["ipset"] = output("ipset", "list", "-n")
        if shutil.which("tc"):
            for ifname in self.interfaces[ns]:
                for direction in ("ingress", "egress"):
                    state[f"tc filter {ifname} {direction}"] = output("tc", "filter", "show", "dev", ifname, direction)
        pins = Path("/sys/fs/bpf/fwengine") / netns
        state["bpf pins"] = sorted(os.listdir(pins)) if pins.is_dir() else []
        return state

    def route_get(self, ns, dst, src=None):
        args = ["-j", "route", "get", dst] + (["from", src] if src else [])
        return json.loads(self.ip(ns, *args).stdout)[0]

    def redirect_address(self, ns, ifname, dst):
        """Where the kernel's redirect sends a packet to dst that came in on ifname: the interface's first
        IPv4 address, or its first IPv6 address of dst's scope (nf_nat_redirect.c); None if it has none."""
        family = ipaddress.ip_address(dst).version
        scope = "link" if ipaddress.ip_address(dst).is_link_local else "global"
        key = (ns, ifname, family, scope)
        if key not in self.redirect_addresses:
            links = json.loads(self.ip(ns, "-j", f"-{family}", "address", "show", "dev", ifname).stdout)
            infos = links[0].get("addr_info", []) if links else []
            self.redirect_addresses[key] = next((info["local"] for info in infos
                                                 if family == 4 or info.get("scope") == scope), None)
        return self.redirect_addresses[key]

    def source_route(self, ns, src, iif):
        """The interface ns routes src out of, as the kernel's reverse-path check looks it up: "none" for
        no route or a local, unreachable, blackhole or prohibit one; a link-local source belongs to iif."""
        if ipaddress.ip_address(src).is_link_local:
            return iif
        key = (ns, src)
        if key not in self.source_routes:
            completed = self.ip(ns, "-j", "route", "get", src, check=False)
            route = json.loads(completed.stdout)[0] if completed.returncode == 0 and completed.stdout.strip() else {}
            usable = route.get("type", "unicast") == "unicast" and route.get("dev") not in (None, "lo")
            self.source_routes[key] = route["dev"] if usable else "none"
        return self.source_routes[key]

    def bridge_calls_netfilter(self, ns, bridge, dst):
        """Whether the bridge hands frames of dst's family to netfilter: br_netfilter is loaded (its
        sysctls exist) and its namespace sysctl bridge-nf-call-iptables / -ip6tables or the bridge's own
        nf_call_iptables / nf_call_ip6tables option is on."""
        table = "ip6tables" if ipaddress.ip_address(dst).version == 6 else "iptables"
        completed = run_command(["ip", "netns", "exec", self.names[ns], "sh", "-c",
                                 'test -d /proc/sys/net/bridge && cat "/proc/sys/net/bridge/bridge-nf-call-$1" '
                                 '"/sys/class/net/$2/bridge/nf_call_$1"', "sh", table, bridge], check=False)
        return completed.returncode == 0 and "1" in completed.stdout.split()

    def trace_packets(self, host, probe):
        """Which packet(s) `fwengine trace` must evaluate for this probe, as seen by the protected host:
        interfaces found by following the kernel's routes from the probe's namespace to the host. Empty if
        the probe never passes the host. Traffic from the host to itself is one packet out on lo: trace
        walks it in on lo again."""
        src = probe["src"] or self.route_get(probe["from"], probe["to"]).get("prefsrc")
        packets = []
        if probe["from"] == host:
            route = self.route_get(host, probe["to"], probe["src"])
            if route.get("type") == "local" or route.get("dev") == "lo":
                packets = [{"oif": "lo"}]
            else:
                # masquerade's address: what the kernel would pick as source, whatever the probe's is
                packets = [{"oif": route["dev"], "oif_addr": self.route_get(host, probe["to"]).get("prefsrc")}]
        else:
            current, hop_src = probe["from"], probe["src"]
            for _ in range(8):
                route = self.route_get(current, probe["to"], hop_src)
                hop_src = None
                if route.get("type") == "local" or (current, route.get("dev")) not in self.peers:
                    break
                peer_ns, peer_if = self.peers[(current, route["dev"])]
                # A frame for a macvlan on top of the link end goes to the macvlan, not up the end itself.
                owner = self.owner.get(probe["to"])
                peer_ns, peer_if = next(((ns, macvlan["ifname"]) for ns, macvlan in
                                         self.macvlans_on.get((peer_ns, peer_if), []) if ns == owner),
                                        (peer_ns, peer_if))
                bridge = self.bridge_of.get((peer_ns, peer_if))
                if peer_ns == host and bridge:
                    # It comes up on the bridge; or it is switched across to another of its LANs, where
                    # netfilter sees it only if br_netfilter passes bridged frames to it (as forwarded
                    # from the bridge to the bridge), else no stage does.
                    owner = self.owner.get(probe["to"])
                    switched = any(self.peers[(host, port)][0] == owner for port in bridge["ports"])
                    if switched and not self.bridge_calls_netfilter(host, bridge["ifname"], probe["to"]):
                        break
                    peer_if = bridge["ifname"]
                if peer_ns == host:
                    onward = self.route_get(host, probe["to"])
                    local = onward.get("type") == "local" or onward.get("dev") == "lo"
                    packets = [{"iif": peer_if} if local else
                               {"iif": peer_if, "oif": onward["dev"], "oif_addr": onward.get("prefsrc")}]
                    packets[0]["iif_addr"] = self.redirect_address(host, peer_if, probe["to"])
                    packets[0]["src_route"] = self.source_route(host, src, peer_if)
                    # The sender's MAC, where the spec fixes it (a kernel-chosen one is not known here).
                    if (current, route["dev"]) in self.macs:
                        packets[0]["src_mac"] = self.macs[(current, route["dev"])]
                    break
                current = peer_ns
        for packet in packets:
            packet.update(src=src, dst=probe["to"])
            packet.update(probe["trace"] or {})
        return packets

    def destroy(self):
        RESOURCES.release(list(self.names.values()))


def address_commands(interface):
    commands = []
    for address in interface["addresses"]:
        parsed = ipaddress.ip_interface(address)
        nodad = " nodad" if parsed.version == 6 else ""
        commands.append(f"address add {parsed.with_prefixlen} dev {interface['ifname']}{nodad}")
    return commands


# ---------------------------------------------------------------------------------------------------
# fwengine: every call to the CLI goes through Engine.run


class Engine:
    def __init__(self, binary, verbose):
        self.binary = binary
        self.verbose = verbose
        self.trace_cache = {}
        self.cache_lock = threading.Lock()

    def run(self, args, timeout=120):
        command = [str(self.binary)] + args
        if self.verbose:
            print("+ " + " ".join(command), flush=True)
        # From the repository, so that the policy paths (and trace's file:line:col) are repository-relative.
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_DIR)

    @staticmethod
    def policy_args(policy, backend, netns):
        args = ["--frontend", policy["frontend"]]
        if backend not in (None, PSEUDO_BACKEND_TRACE):
            args += ["--backend", plugin_of(backend)]
            for option in backend_options_of(backend):
                args += ["--backend-option", option]
        for path in policy["files"]:
            args += ["-f", path]
        if policy["node"]:
            args += ["--node", policy["node"]]
        return args + ["--netns", netns] + policy["options"]

    def apply(self, policy, backend, netns):
        return self.run(self.policy_args(policy, backend, netns) + ["apply"])

    def flush(self, policy, backend, netns):
        return self.run(self.policy_args(policy, backend, netns) + ["flush"])

    def trace(self, policy, netns, packet, probe):
        """(verdict, deciding step): verdict 'open' iff the packet and its reply are both delivered, else
        'closed', or 'error: ...' if trace failed; the step as deciding_step() describes it. Trace
        evaluates the IR, which no backend changes: one run per packet serves every backend (the cache)."""
        args = self.policy_args(policy, None, netns) + ["--json", "trace"]
        for key, option in (("iif", "--iif"), ("oif", "--oif"), ("src", "--src"), ("dst", "--dst"),
                            ("src_mac", "--src-mac"), ("sport", "--sport"), ("oif_addr", "--oif-addr"),
                            ("iif_addr", "--iif-addr"), ("src_route", "--src-route")):
            if packet.get(key):
                args += [option, str(packet[key])]
        v6 = ipaddress.ip_address(packet["dst"]).version == 6
        if probe["proto"] == "icmp":
            args += ["--proto", "icmpv6", "--icmp-type", "128"] if v6 else ["--proto", "icmp", "--icmp-type", "8"]
        elif probe["proto"] == "tcp-invalid":  # conntrack INVALID: trace has no reply to walk
            args += ["--proto", "tcp", "--dport", str(probe["port"])]
        else:
            args += ["--proto", probe["proto"], "--dport", str(probe["port"])]
        args += ["--state", "invalid" if probe["proto"] == "tcp-invalid" else "new"]
        key = tuple(args)
        with self.cache_lock:
            if key in self.trace_cache:
                return self.trace_cache[key]
        completed = self.run(args)
        decision = ""
        if completed.returncode != 0:
            verdict = f"error: exit {completed.returncode}: {first_line(completed.stderr or completed.stdout)}"
        else:
            try:
                document = json.loads(completed.stdout)
                # open: the packet, its reply and (TCP) a later packet of the connection are delivered
                verdict = "open" if document["open"] else "closed"
                decision = deciding_step(document)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                verdict = f"error: unreadable trace JSON ({error})"
        with self.cache_lock:
            self.trace_cache[key] = (verdict, decision)
        return verdict, decision

    def plugins(self):
        """Names of the installed plugins, or None if the engine cannot tell."""
        completed = self.run(["--json", "plugins"], timeout=30)
        names = set()
        if completed.returncode == 0:
            try:
                collect_plugin_names(json.loads(completed.stdout), names)
            except ValueError:
                pass
        if names:
            return names
        plugin_files = Path(self.binary).resolve().parent.parent.glob("lib*/**/fwengine/plugins/libfwe_*.so")
        names = {f.name[len("libfwe_"):-len(".so")] for f in plugin_files}
        return names or None


def deciding_step(document):
    """The step that decided the (original) packet, as one line "stage: at chain policy what": the last
    step of the stage that dropped it, or, if it was delivered, of the first stage that accepted it (a
    later stage usually only honours that stage's allow)."""
    stages = document.get("stages") or []
    if document["delivered"]:
        deciding = [stage for stage in stages if stage.get("verdict") in ("accept", "allow")]
    else:
        deciding = [stage for stage in stages if stage.get("verdict") in ("drop", "reject")]
    if not deciding or not deciding[0].get("steps"):
        return "(no stage decided)"
    step = deciding[0]["steps"][-1]
    fields = [step.get(key) for key in ("at", "chain", "policy", "what")]
    return f"{deciding[0].get('stage')}: " + " ".join(str(field) for field in fields if field)


def collect_plugin_names(document, names):
    if isinstance(document, dict):
        if isinstance(document.get("name"), str):
            names.add(document["name"])
        for value in document.values():
            collect_plugin_names(value, names)
    elif isinstance(document, list):
        for value in document:
            collect_plugin_names(value, names)


def first_line(text):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no output)"


# ---------------------------------------------------------------------------------------------------
# Running scenarios


class Report:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.probed = 0  # probe verdicts compared (baselines and SKIPs not counted)
        self.unrunnable = 0  # SKIPs for what this machine or build lacks, not for what a case expects
        self.lock = threading.Lock()

    def line(self, where, backend, probe, expect, real, trace, ok):
        status = "ok" if ok else "FAIL"
        with self.lock:
            self.probed += 1
            if ok:
                self.passed += 1
            else:
                self.failed += 1
            print(f"{where:<44} {backend:<8} {probe:<28} expect={expect:<6} real={real:<22} "
                  f"trace={trace:<7} {status}", flush=True)

    def failure(self, where, message):
        with self.lock:
            self.failed += 1
            print(f"{where:<44} FAIL {message}", flush=True)

    def skip(self, where, message, count=1):
        with self.lock:
            self.skipped += count
            print(f"{where:<44} SKIP {message}", flush=True)

    def cannot_run(self, where, message, count=1):
        """A skip for a missing plugin, engine or sysctl: the run then counts as skipped, not passed."""
        with self.lock:
            self.unrunnable += 1
        self.skip(where, message, count)

    def note(self, where, message):
        with self.lock:
            print(f"{where:<44} {message}", flush=True)


def listener_ports(scenario, topology):
    """Explicit listeners plus, for every probe, its port in the namespace that owns the destination."""
    ports = {ns: (set(), set()) for ns in topology.names}
    for listener in scenario["listeners"]:
        ports[listener["ns"]][0].update(listener["tcp"])
        ports[listener["ns"]][1].update(listener["udp"])
    for case in scenario["cases"]:
        for probe in case["probes"]:
            if not probe["listen"] or probe["proto"] in ("icmp", "tcp-invalid"):
                continue
            owner = probe["from"] if ipaddress.ip_address(probe["to"]).is_loopback else topology.owner.get(probe["to"])
            if owner is not None:
                ports[owner][0 if probe["proto"] == "tcp" else 1].add(probe["port"])
    return {ns: value for ns, value in ports.items() if value[0] or value[1]}


def send_probes(topology, probes, timeout):
    """Real traffic, all probes at once (each uses its own source port / ICMP id, so they cannot mix)."""
    futures = []
    for probe in probes:
        request = {"op": "probe", "proto": probe["proto"], "dst": probe["to"], "src": probe["src"],
                   "port": probe.get("port"), "sport": probe.get("sport"), "size": probe.get("size"),
                   "answer": probe.get("answer"),
                   "timeout": timeout}
        futures.append(topology.agents[probe["from"]].submit(request))
    results = []
    for future in futures:
        try:
            answer = future.result(timeout=timeout + 10)
            results.append((answer.get("result", "error"), answer.get("detail", "")))
        except concurrent.futures.TimeoutError:
            results.append(("error", "agent did not answer"))
    return results


def send_probes_checked(topology, probes, expected, timeout):
    """send_probes, then once more with a longer wait for the probes that timed out where an answer was
    expected: on a loaded machine a late answer is not a firewall's verdict, while a drop stays a drop."""
    results = send_probes(topology, probes, timeout)
    late = [i for i, (probe, result) in enumerate(zip(probes, results))
            if expected(probe) == "open" and result == ("closed", "timeout")]
    if late:
        for index, result in zip(late, send_probes(topology, [probes[i] for i in late], 3 * timeout)):
            results[index] = result
    return results


def real_text(result):
    verdict, detail = result
    return verdict if verdict == "open" else f"{verdict}({detail})"[:22]


def run_baseline(scenario, topology, timeout, report):
    """With no fwengine rules every probe must get through: otherwise a 'closed' verdict later would prove
    nothing about the firewall."""
    unique = {}
    for case in scenario["cases"]:
        for probe in case["probes"]:
            if probe["baseline"] != "skip":
                unique.setdefault((probe["from"], probe["src"], probe["to"], probe["proto"], probe.get("port")), probe)
    probes = list(unique.values())
    failures = 0
    results = send_probes_checked(topology, probes, lambda probe: probe["baseline"], timeout)
    for probe, result in zip(probes, results):
        if result[0] != probe["baseline"]:
            failures += 1
            report.line(f"{scenario['name']}/baseline", "none", probe["name"], probe["baseline"],
                        real_text(result), "-", False)
    if failures == 0:
        report.passed += 1
        report.note(f"{scenario['name']}/baseline", f"ok: all {len(probes)} probes as expected with no firewall")
    return failures == 0


def combine_traces(traces):
    """(verdict, deciding steps) of a probe from its trace futures: '-' if trace was not asked, 'n/a' if
    the probe never passes the protected host, the first error, else open iff every packet was open."""
    if traces is None:
        return "-", []
    if not traces:
        return "n/a", []
    answers = [future.result() for future in traces]
    verdicts = [verdict for verdict, _ in answers]
    errors = [verdict for verdict in verdicts if verdict.startswith("error")]
    if errors:
        return errors[0], []
    return ("open" if all(v == "open" for v in verdicts) else "closed"), [decision for _, decision in answers]


def run_case(scenario, case, backend, topology, engine, options, report, pool):
    where = f"{scenario['name']}/{case['name']}"
    policy = case["policy"]
    probes = case["probes"]
    host_netns = topology.names[policy["host"]] if policy else None
    kernel = backend != PSEUDO_BACKEND_TRACE
    if policy and kernel:
        state_before = topology.kernel_state(policy["host"])
        completed = engine.apply(policy, backend, host_netns)
        reason = case["unsupported"].get(plugin_of(backend))
        if reason and completed.returncode == 2:
            report.skip(f"{where} [{backend}]", f"{reason} (apply refused it, as expected: "
                        f"{first_line(completed.stderr or completed.stdout)})", len(probes))
            return
        if reason:
            report.note(f"{where} [{backend}]", f"listed as unsupported ({reason}) but apply exited "
                        f"{completed.returncode}: remove it from 'unsupported' once the probes pass")
        if completed.returncode != 0:
            report.failure(f"{where} [{backend}]", f"apply exited {completed.returncode}: "
                           f"{(completed.stderr or completed.stdout).strip()[:2000]}")
            return
    try:
        trace_futures = []
        for probe in probes:
            if policy is None or probe["trace"] is False:
                trace_futures.append(None)
                continue
            packets = topology.trace_packets(policy["host"], probe)
            trace_futures.append([pool.submit(engine.trace, policy, host_netns, packet, probe)
                                  for packet in packets])
        trace_errors_shown = set()
        real_results = ([None] * len(probes) if not kernel else
                        send_probes_checked(topology, probes, lambda probe: probe["expect"], options.timeout))
        for probe, real, traces in zip(probes, real_results, trace_futures):
            trace_verdict, decisions = combine_traces(traces)
            ok = (real is None or (real[0] == probe["expect"] and real[1] == probe.get("closed_by", real[1]))) \
                and trace_verdict in (probe["expect"], "-", "n/a")
            unexplained = [text for text in probe["decided_by"] if not any(text in d for d in decisions)]
            trace_shown = "error" if trace_verdict.startswith("error") else trace_verdict
            report.line(where, backend, probe["name"], probe["expect"], real_text(real) if real else "-",
                        trace_shown, ok and not unexplained)
            if unexplained and not trace_verdict.startswith("error"):
                report.note(f"{where} [{backend}]", f"trace of {probe['name']} does not say "
                            f"{', '.join(repr(u) for u in unexplained)}; it was decided by: {' | '.join(decisions)}")
            if trace_verdict.startswith("error") and trace_verdict not in trace_errors_shown:
                trace_errors_shown.add(trace_verdict)
                report.note(f"{where} [{backend}]", f"trace of {probe['name']}: {trace_verdict}")
    finally:
        if policy and kernel:
            completed = engine.flush(policy, backend, host_netns)
            if completed.returncode != 0:
                report.failure(f"{where} [{backend}]", f"flush exited {completed.returncode}: "
                               f"{first_line(completed.stderr or completed.stdout)}")
            else:
                state_after = topology.kernel_state(policy["host"])
                changed = [place for place in state_before if state_after.get(place) != state_before[place]]
                if changed:
                    report.failure(f"{where} [{backend}]", f"not as before apply after flush: {', '.join(changed)} "
                                   "(fwengine left something behind or changed what is not its own)")
                kept = os.path.join("/run/fwengine", host_netns, f"backend-{plugin_of(backend)}")
                if os.path.exists(kept):
                    report.failure(f"{where} [{backend}]", f"flush left the backend's state {kept} behind")


def run_scenario(path, tag, backends, engine, options, report, pool):
    try:
        scenario = load_scenario(path)
    except ScenarioError as error:
        report.failure(Path(path).stem, str(error))
        return
    topology = Topology(scenario["topology"], tag)
    try:
        topology.build()
        topology.start_agents()
        for rule in scenario["pre_rules"]:
            topology.load_nft(rule["ns"], rule["nft"])
        topology.listen(listener_ports(scenario, topology))
        has_policy = any(case["policy"] for case in scenario["cases"])
        if has_policy and options.baseline and not run_baseline(scenario, topology, options.timeout, report):
            return
        for case in scenario["cases"]:
            where = f"{scenario['name']}/{case['name']}"
            if case["policy"] is None:
                run_case(scenario, case, PSEUDO_BACKEND_KERNEL, topology, engine, options, report, pool)
            elif engine is None:
                report.cannot_run(where, "no fwengine binary: policy not applied", len(case["probes"]))
            elif options.available is not None and case["policy"]["frontend"] not in options.available:
                report.cannot_run(where, f"frontend plugin {case['policy']['frontend']} is not installed",
                                  len(case["probes"]))
            else:
                missing = next(filter(None, (topology.set_sysctls(ns, values)
                                             for ns, values in case["sysctls"].items())), None)
                if missing:
                    # A case that needs a module the runner cannot load says so (sysctls_optional): its skip
                    # leaves the run passing; any other case's missing sysctl makes the run a skipped one.
                    skip = report.skip if case["sysctls_optional"] else report.cannot_run
                    skip(where, f"the kernel has no sysctl {missing}", len(case["probes"]))
                    continue
                for ns, lines in case["ip"].items():
                    topology.ip_batch(ns, lines)
                for backend in backends:
                    run_case(scenario, case, backend, topology, engine, options, report, pool)
    except (CommandError, RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        report.failure(scenario["name"], str(error))
    except Exception:  # a bug in the runner: report it with where it happened, and go on with the next file
        report.failure(scenario["name"], "runner error:\n" + traceback.format_exc())
    finally:
        topology.destroy()


def scenario_files(paths):
    files = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.yaml") if is_scenario_file(p))
        else:
            files.append(path)
    return files


def is_scenario_file(path):
    """Scenario files sit in the scenario tree; policy inputs live in subdirectories named after them
    (spec-04/...) and shared topologies in topologies/: those are not scenarios."""
    try:
        data = load_yaml_file(path)
    except ScenarioError:  # e.g. a multi-document Calico input file
        return False
    return isinstance(data, dict) and "topology" in data


def namespace_support_problem():
    if os.geteuid() != 0:
        return "not root: network namespace tests need root"
    name = f"fwe-t-{os.getpid()}-check"
    RESOURCES.add_namespace(name)
    completed = run_command(["ip", "netns", "add", name], check=False)
    RESOURCES.release([name])
    if completed.returncode != 0:
        return f"cannot create a network namespace: {first_line(completed.stderr)}"
    return None


def check_scenarios(paths):
    """Read every scenario file and the policy files it names; print what is wrong."""
    files = scenario_files(paths)
    problems = 0
    for path in files:
        try:
            scenario = load_scenario(path)
            for case in scenario["cases"]:
                for policy_path in (case["policy"] or {}).get("files", []):
                    if not (REPO_DIR / policy_path).exists():
                        raise ScenarioError(f"{path}: case {case['name']}: policy file {policy_path} does not exist")
        except ScenarioError as error:
            problems += 1
            print(f"FAIL {error}")
    print(f"{len(files) - problems} scenario files ok, {problems} with problems")
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description="Run fwengine scenario files in throwaway network namespaces.")
    parser.add_argument("scenarios", nargs="+", help="scenario files or directories (searched recursively)")
    parser.add_argument("--fwengine", help="the fwengine binary; without it only topologies are checked")
    parser.add_argument("--backend", action="append", dest="backends",
                        help="backend to apply with (repeatable), with its options as PLUGIN:KEY=VALUE[,...] "
                             "(ebpf:xdp=veth-up); 'trace' = no kernel, trace only (default)")
    parser.add_argument("--backends-available", action="store_true",
                        help="skip, with a SKIP line, backends and frontends whose plugin is not installed")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds a probe waits for an answer")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not first check that every probe gets through with no firewall")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every fwengine command")
    parser.add_argument("--check", action="store_true",
                        help="only read and check the scenario files (no root needed), then exit")
    options = parser.parse_args()
    backends = options.backends or [PSEUDO_BACKEND_TRACE]

    if options.check:
        return check_scenarios(options.scenarios)

    problem = namespace_support_problem()
    if problem:
        print(f"SKIP: {problem}")
        return EXIT_SKIPPED

    report = Report()
    engine = None
    options.available = None
    if options.fwengine and Path(options.fwengine).is_file():
        engine = Engine(Path(options.fwengine).resolve(), options.verbose)
        if options.backends_available:
            options.available = engine.plugins() or set()
            for backend in [b for b in backends
                            if b != PSEUDO_BACKEND_TRACE and plugin_of(b) not in options.available]:
                report.cannot_run("runner", f"backend {backend}: plugin libfwe_{plugin_of(backend)}.so is not installed",
                                  count=0)
                backends.remove(backend)
    elif options.fwengine:
        report.note("runner", f"fwengine binary {options.fwengine} not found: checking topologies and probes only")

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for index, path in enumerate(scenario_files(options.scenarios)):
            run_scenario(path, index, backends, engine, options, report, pool)

    summary = f"{report.passed} passed, {report.failed} failed"
    if report.skipped:
        summary += f", {report.skipped} skipped"
    print(summary)
    if report.failed:
        return 1
    if report.unrunnable:
        print("skipped: part of it cannot run here (the SKIP lines above say what is missing)")
        return EXIT_SKIPPED
    return EXIT_SKIPPED if report.skipped and not report.probed else 0


def run_main(main, *cleanups):
    """Runs a runner's main with the cleanup every runner needs: whatever it created is released at exit,
    also on SIGTERM, SIGHUP, Ctrl-C or a cut pipe. Extra cleanups run first (e.g. daemons before the
    namespaces they live in)."""
    atexit.register(RESOURCES.release_all)
    for cleanup in cleanups:
        atexit.register(cleanup)  # atexit is last-in first-out
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output cut short (e.g. `| head`): clean up quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
