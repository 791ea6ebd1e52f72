#!/usr/bin/env python3
"""The failsafe guarantee (issue #9): for random Calico policies that deny everything, the failsafe ports
stay reachable on every backend, and only an explicit empty failsafe list closes them.

  failsafe.py --fwengine build-asan/bin/fwengine --seed ci --cases 8 --backend nft --backend iptables

Each case is a seeded draw: a HostEndpoint (named, or the `*` wildcard), one to four GlobalNetworkPolicies
that deny in every way Calico can (normal, preDNAT, doNotTrack; ingress and egress; any protocol, the
failsafe ports themselves, source and destination nets; any order) and a failsafe configuration: Felix's
defaults, a random subset of ports (some limited to a source net), or the lists explicitly empty. The
expected verdict of each probe follows from the failsafe configuration alone: open when a failsafe entry
covers it, closed otherwise, since the policy denies the rest. The cases are written as scenario files
and run by the scenario runner (integration/scenario.py), which also checks every probe against `fwengine
trace`, with real traffic in throwaway namespaces, on each backend given.
"""

import argparse
import ipaddress
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

INTEGRATION_DIR = Path(__file__).resolve().parent.parent
TOPOLOGY = INTEGRATION_DIR / "scenarios" / "topologies" / "spec-n1.yaml"
HOST, PEER = "10.0.0.10", "10.0.0.1"  # n1's eth0 and the lan gateway in that topology
REMOTE = "198.51.100.7"  # a lan address outside 10.0.0.0/8

# Felix's default failsafe lists (spec calico.md), as (protocol, port).
DEFAULT_INBOUND = [("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379), ("tcp", 2380), ("tcp", 5473),
                   ("tcp", 6443), ("tcp", 6666), ("tcp", 6667)]
DEFAULT_OUTBOUND = [("udp", 53), ("udp", 67), ("tcp", 179), ("tcp", 2379), ("tcp", 2380), ("tcp", 5473),
                    ("tcp", 6443), ("tcp", 6666), ("tcp", 6667)]

# The probes every case sends: (name, direction, protocol, port, source address).
PROBES = [("in-tcp-22", "in", "tcp", 22, REMOTE), ("in-tcp-22-from-10/8", "in", "tcp", 22, PEER),
          ("in-udp-68", "in", "udp", 68, REMOTE), ("in-tcp-6443", "in", "tcp", 6443, REMOTE),
          ("in-tcp-8080", "in", "tcp", 8080, REMOTE),
          ("out-udp-53", "out", "udp", 53, None), ("out-tcp-2379", "out", "tcp", 2379, None),
          ("out-tcp-8080", "out", "tcp", 8080, None)]


def resource(kind, name, spec, labels=None):
    metadata = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": spec}


def deny_rule(rng, direction):
    """A Deny that matches everything, or a narrower one (the failsafe ports themselves included)."""
    rule = {"action": "Deny"}
    roll = rng.random()
    if roll < 0.35:
        return rule
    if roll < 0.7:
        rule["protocol"] = rng.choice(["TCP", "UDP"])
        ports = rng.sample([22, 53, 68, 179, 2379, 6443, 8080, "1:65535"], rng.randint(1, 3))
        rule["destination" if rng.random() < 0.8 else "source"] = {"ports": ports}
        return rule
    net = rng.choice(["0.0.0.0/0", "10.0.0.0/8", "198.51.100.0/24", "10.0.0.0/24"])
    side = "source" if direction == "ingress" else "destination"
    rule[side] = {"nets": [net]}
    return rule


def policy(rng, index):
    """One GlobalNetworkPolicy that denies, in one of Calico's three flavours."""
    flavour = rng.choice(["normal", "normal", "preDNAT", "doNotTrack"])
    types = ["Ingress"] if flavour == "preDNAT" else rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    spec = {"order": rng.randint(0, 1000), "selector": rng.choice(["all()", "host == '1'", "has(host)"]),
            "types": types}
    if flavour != "normal":
        spec[flavour] = True
        spec["applyOnForward"] = True
    for direction in ("ingress", "egress"):
        if direction.capitalize() in types:
            rules = [deny_rule(rng, direction) for _ in range(rng.randint(0, 3))]
            spec[direction] = rules + [{"action": "Deny"}]  # the rest is denied too
    return resource("GlobalNetworkPolicy", f"deny-{index}", spec)


def failsafe_config(rng):
    """(mode, FelixConfiguration or None, inbound entries, outbound entries); entries as (proto, port, net)."""
    mode = rng.choice(["default", "default", "subset", "off"])
    if mode == "default":
        return mode, None, [(p, n, None) for p, n in DEFAULT_INBOUND], [(p, n, None) for p, n in DEFAULT_OUTBOUND]
    if mode == "off":
        spec = {"failsafeInboundHostPorts": [], "failsafeOutboundHostPorts": []}
        return mode, resource("FelixConfiguration", "default", spec), [], []
    inbound = [(p, n, rng.choice([None, None, "10.0.0.0/8"])) for p, n in rng.sample(DEFAULT_INBOUND, 4)]
    outbound = [(p, n, None) for p, n in rng.sample(DEFAULT_OUTBOUND, 4)]

    def entries(items):
        return [dict({"protocol": p.upper(), "port": n}, **({"net": net} if net else {})) for p, n, net in items]

    spec = {"failsafeInboundHostPorts": entries(inbound), "failsafeOutboundHostPorts": entries(outbound)}
    return mode, resource("FelixConfiguration", "default", spec), inbound, outbound


def covered(entries, proto, port, source):
    return any(p == proto and n == port and (net is None or ipaddress.ip_address(source) in ipaddress.ip_network(net))
               for p, n, net in entries)


def case(rng, seed, out_dir):
    """Writes one case's policy files; returns its scenario case and the probes' expectations."""
    files = out_dir / seed
    files.mkdir(parents=True)
    interface = rng.choice(["eth0", "*"])
    hep = {"node": "n1", "interfaceName": interface}
    if interface == "*" or rng.random() < 0.5:
        hep["expectedIPs"] = [HOST]
    documents = [resource("HostEndpoint", "h0", hep, {"host": "1"})]
    documents += [policy(rng, i) for i in range(rng.randint(1, 4))]
    mode, felix, inbound, outbound = failsafe_config(rng)
    if felix:
        documents.append(felix)
    (files / "policy.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    expect = {}
    for name, direction, proto, port, source in PROBES:
        entries = inbound if direction == "in" else outbound
        expect[name] = "open" if covered(entries, proto, port, source or HOST) else "closed"
    return {"name": f"{seed}-{mode}-{'wildcard' if interface == '*' else 'named'}",
            "policy": {"frontend": "calico", "files": [str(files)], "node": "n1", "host": "n1"},
            "expect": expect}


def probe_specs():
    specs = []
    for name, direction, proto, port, source in PROBES:
        if direction == "in":
            specs.append({"name": name, "from": "lan", "src": source, "to": HOST, "proto": proto, "port": port,
                          "expect": "closed"})
        else:
            specs.append({"name": name, "from": "n1", "to": PEER, "proto": proto, "port": port, "expect": "closed"})
    return specs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fwengine", required=True)
    parser.add_argument("--backend", action="append", dest="backends", required=True)
    parser.add_argument("--seed", default="1", help="campaign seed (any text); case i uses SEED-i")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--keep", help="write the scenario there and keep it (default: a temporary directory)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fwe-failsafe-") as temporary:
        out_dir = Path(options.keep or temporary).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        cases = [case(random.Random(f"{options.seed}-{i}"), f"{options.seed}-{i}", out_dir)
                 for i in range(options.cases)]
        scenario = {"name": f"failsafe-guarantee-{options.seed}", "topology": str(TOPOLOGY),
                    "probes": probe_specs(), "cases": cases}
        path = out_dir / "failsafe.yaml"
        path.write_text(yaml.safe_dump(scenario, sort_keys=False))
        command = [sys.executable, str(INTEGRATION_DIR / "scenario.py"), "--fwengine", options.fwengine,
                   "--backends-available", "--backend", "trace"]
        for backend in options.backends:
            command += ["--backend", backend]
        # The runner cleans up after itself (namespaces, agents) also when it fails.
        return subprocess.run(command + [str(path)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
