#!/usr/bin/env python3
"""Config change to rules in the kernel: fwengine (firewalld frontend) against `firewall-cmd --reload` of a
real firewalld, on the same configuration, in the same run (issues #7 and #10).

Run as root; it is not part of the test command:

    python3 integration/bench/firewalld.py                # writes docs/benchmarks-firewalld.md
    python3 integration/bench/firewalld.py --quick        # 3 runs per contender, no report file

Two configurations: firewalld's stock one (/usr/lib/firewalld, an /etc with only firewalld.conf) and a
large one (8 zones, 100 rich rules, 10,000 ipset entries; seeded). Each is changed back and forth by one
port in a zone, and each contender is timed from "the new files are on disk" to "the command that puts
them into the kernel has returned": `firewall-cmd --reload` for firewalld (its reload is synchronous),
`fwengine --frontend firewalld ... apply` for fwengine (which reads, compiles and loads everything). The
contenders alternate (A B A B) so machine noise hits both alike.

While a change is being made, a client in a second namespace opens new TCP connections to an open port
as fast as it can; every connection that fails counts as dropped by the change (firewalld drops new
connections while it reloads; an atomic replace should drop none).

Everything runs in throwaway namespaces `fwb-<pid>-*`, removed at the end, also on failure or a signal.
"""
import argparse
import datetime
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "integration" / "firewalld"))
import oracle  # noqa: E402  (our firewalld-in-a-namespace runner)

DEFAULT_FWENGINE = REPO / "build-bench" / "bin" / "fwengine"
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks-firewalld.md"
SKIP = 77
FW_ADDR, CLIENT_ADDR, OPEN_PORT, CHANGED_PORT = "10.97.0.1", "10.97.0.2", 22, 4711


# ---------------------------------------------------------------- configurations


def zone_xml(name, target=None, interfaces=(), sources=(), services=(), ports=(), rules=(), forward=True):
    attrs = f' target="{target}"' if target else ""
    out = ['<?xml version="1.0" encoding="utf-8"?>', f"<zone{attrs}>", f"  <short>{name}</short>"]
    out += [f'  <interface name="{i}"/>' for i in interfaces]
    out += [f'  <source {"ipset" if s.startswith("ipset:") else "address"}="{s.removeprefix("ipset:")}"/>'
            for s in sources]
    out += [f'  <service name="{s}"/>' for s in services]
    out += [f'  <port port="{p}" protocol="{proto}"/>' for p, proto in ports]
    out += rules
    if forward:
        out.append("  <forward/>")
    out.append("</zone>")
    return "\n".join(out) + "\n"


def ipset_xml(set_type, entries):
    out = ['<?xml version="1.0" encoding="utf-8"?>', f'<ipset type="{set_type}">']
    out += [f"  <entry>{e}</entry>" for e in entries]
    out.append("</ipset>")
    return "\n".join(out) + "\n"


def write_conf(cfg, default_zone):
    """The packaged firewalld.conf with another DefaultZone."""
    packaged = Path("/etc/firewalld/firewalld.conf")
    lines = packaged.read_text().splitlines() if packaged.exists() else []
    lines = [line for line in lines if not line.startswith("DefaultZone=")]
    (cfg / "firewalld.conf").write_text("\n".join(lines + [f"DefaultZone={default_zone}"]) + "\n")


def stock_config(cfg, changed):
    """Stock zones and services; the change opens one port in the default zone (a copy of public)."""
    for sub in ("zones", "services", "policies", "ipsets", "icmptypes", "helpers"):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
    write_conf(cfg, "public")
    public = cfg / "zones" / "public.xml"
    if changed:
        public.write_text(zone_xml("public", services=("ssh", "dhcpv6-client"), ports=((CHANGED_PORT, "tcp"),)))
    elif public.exists():
        public.unlink()


def large_config(cfg, changed, seed=1):
    """8 zones with sources and ports, 100 rich rules, two ipsets with 10,000 entries in all."""
    rng = random.Random(f"firewalld-large-{seed}")
    for sub in ("zones", "services", "policies", "ipsets", "icmptypes", "helpers"):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
    write_conf(cfg, "z0")
    nets = rng.sample(range(1 << 20), 10000)
    entries = [f"10.{(n >> 12) & 255}.{(n >> 4) & 255}.{(n & 15) * 16}/28" for n in nets]
    (cfg / "ipsets" / "blocklist.xml").write_text(ipset_xml("hash:net", entries[:5000]))
    (cfg / "ipsets" / "partners.xml").write_text(ipset_xml("hash:net", entries[5000:]))
    rules_left = 100
    for z in range(8):
        count = rules_left // (8 - z)
        rules_left -= count
        rules = []
        for r in range(count):
            port = 20000 + z * 100 + r
            source = f"192.168.{z}.{r}" if r % 3 else "ipset=partners"
            src = f'<source ipset="partners"/>' if source.startswith("ipset") else f'<source address="{source}"/>'
            action = ("<accept/>", "<drop/>", '<reject type="icmp-port-unreachable"/>')[r % 3]
            rules.append(f'  <rule family="ipv4">{src}<port port="{port}" protocol="tcp"/>{action}</rule>')
        ports = [(30000 + z * 10 + p, "tcp" if p % 2 else "udp") for p in range(10)]
        if changed and z == 0:
            ports.append((CHANGED_PORT, "tcp"))
        sources = [f"172.{16 + z}.{s}.0/24" for s in range(5)]
        if z == 7:
            sources.append("ipset:blocklist")
        interfaces = ("fwb-veth",) if z == 0 else ()
        (cfg / "zones" / f"z{z}.xml").write_text(
            zone_xml(f"z{z}", target="DROP" if z == 7 else None, interfaces=interfaces, sources=sources,
                     services=("ssh", "http", "https"), ports=ports, rules=rules))


CONFIGS = {"stock": stock_config, "large": large_config}


# ---------------------------------------------------------------- namespaces and the client


def sh(*argv, check=True, **kw):
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True, **kw)


class Topology:
    """fw (the firewall under test, listening on OPEN_PORT) <-veth-> client."""

    def __init__(self, tag):
        self.fw, self.client = f"fwb-{os.getpid()}-{tag}-fw", f"fwb-{os.getpid()}-{tag}-cl"
        self.listener = None

    def __enter__(self):
        for ns in (self.fw, self.client):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.fw, "link", "add", "fwb-veth", "type", "veth", "peer", "name", "fwb-peer",
           "netns", self.client)
        sh("ip", "-n", self.fw, "addr", "add", f"{FW_ADDR}/24", "dev", "fwb-veth")
        sh("ip", "-n", self.client, "addr", "add", f"{CLIENT_ADDR}/24", "dev", "fwb-peer")
        sh("ip", "-n", self.fw, "link", "set", "fwb-veth", "up")
        sh("ip", "-n", self.client, "link", "set", "fwb-peer", "up")
        code = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                f"s.bind(('0.0.0.0', {OPEN_PORT})); s.listen(512)\n"
                "while True:\n    c, _ = s.accept(); c.close()\n")
        self.listener = subprocess.Popen(["ip", "netns", "exec", self.fw, "/usr/bin/python3", "-c", code],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.listener and self.listener.poll() is None:
            self.listener.kill()
            self.listener.wait()
        for ns in (self.fw, self.client):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(f"/run/fwengine/{self.fw}", ignore_errors=True)


class ConnectionLoop:
    """New TCP connections from the client namespace to OPEN_PORT, back to back, while a change runs."""

    def __init__(self, topo):
        self.topo = topo

    def __enter__(self):
        code = ("import socket, sys, time\nok = bad = 0\nend = time.monotonic() + 600\n"
                "import select\n"
                "while not select.select([sys.stdin], [], [], 0)[0] and time.monotonic() < end:\n"
                "    s = socket.socket(); s.settimeout(0.25)\n"
                f"    try:\n        s.connect(('{FW_ADDR}', {OPEN_PORT})); ok += 1\n"
                "    except OSError:\n        bad += 1\n"
                "    finally:\n        s.close()\n"
                "print(ok, bad)\n")
        self.process = subprocess.Popen(["ip", "netns", "exec", self.topo.client, "/usr/bin/python3", "-c", code],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)  # connections are flowing before the change starts
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def finish(self):
        time.sleep(0.3)  # and keep flowing after it
        out, _ = self.process.communicate("stop\n", timeout=30)
        ok, bad = (int(x) for x in out.split())
        return ok, bad


# ---------------------------------------------------------------- contenders


class FirewalldContender:
    name = "firewall-cmd --reload"

    def __init__(self, topo, cfg, workdir):
        self.cfg = cfg
        self.daemon = oracle.Firewalld(topo.fw, cfg, workdir / "firewalld-state")

    def start(self):
        state = self.daemon.start()
        if state != "running":
            raise RuntimeError(f"firewalld rejected the configuration: {self.daemon.errors()}")

    def change(self):
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={self.daemon.socket}")
        t0 = time.perf_counter()
        sh("firewall-cmd", "--reload", env=env)
        return (time.perf_counter() - t0) * 1000

    def stop(self):
        self.daemon.stop()


class FwengineContender:
    name = "fwengine apply (nft)"

    def __init__(self, topo, cfg, fwengine):
        self.topo, self.cfg, self.fwengine = topo, cfg, fwengine

    def start(self):
        self.change()

    def change(self):
        t0 = time.perf_counter()
        sh(self.fwengine, "--frontend", "firewalld", "--firewalld-defaults", "/usr/lib/firewalld", "-f", self.cfg,
           "--netns", self.topo.fw, "--backend", "nft", "apply")
        return (time.perf_counter() - t0) * 1000

    def stop(self):
        sh(self.fwengine, "--netns", self.topo.fw, "--backend", "nft", "flush", check=False)


def measure(config, args, workdir):
    """Median and range of change times and dropped connections for both contenders on one config."""
    results = {}
    topos = [Topology(f"{config}-a"), Topology(f"{config}-b")]
    with topos[0] as topo_fd, topos[1] as topo_fe:
        cfg_fd, cfg_fe = workdir / f"{config}-firewalld", workdir / f"{config}-fwengine"
        for cfg in (cfg_fd, cfg_fe):
            CONFIGS[config](cfg, changed=False)
        contenders = [FirewalldContender(topo_fd, cfg_fd, workdir / config),
                      FwengineContender(topo_fe, cfg_fe, args.fwengine)]
        topo_of = {contenders[0].name: topo_fd, contenders[1].name: topo_fe}
        cfg_of = {contenders[0].name: cfg_fd, contenders[1].name: cfg_fe}
        try:
            for c in contenders:
                c.start()
                results[c.name] = {"ms": [], "ok": 0, "dropped": 0}
            for run in range(args.runs):
                for c in contenders:
                    CONFIGS[config](cfg_of[c.name], changed=(run % 2 == 0))
                    with ConnectionLoop(topo_of[c.name]) as loop:
                        ms = c.change()
                        ok, bad = loop.finish()
                    results[c.name]["ms"].append(ms)
                    results[c.name]["ok"] += ok
                    results[c.name]["dropped"] += bad
                    if sys.stderr.isatty():
                        print(f"\r{config}: run {run + 1}/{args.runs} {c.name}: {ms:.0f} ms   ", end="",
                              file=sys.stderr, flush=True)
        finally:
            for c in contenders:
                c.stop()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return results


def package_version(name):
    return sh("dpkg-query", "-W", "-f=${Version}", name, check=False).stdout.strip() or "?"


def summary(samples):
    return statistics.median(samples), min(samples), max(samples)


def report(all_results, args, started, elapsed):
    fd, fe = FirewalldContender.name, FwengineContender.name
    lines = ["# Benchmark: firewalld configuration change to kernel", "",
             f"Generated by `integration/bench/firewalld.py` on {started:%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s; "
             f"{args.runs} changes per contender, alternating. Machine: {platform.node()}, {os.cpu_count()} CPUs, "
             f"kernel {platform.release()}; firewalld {package_version('firewalld')}, nftables {package_version('nftables')}, "
             f"{sh(args.fwengine, '--version', check=False).stdout.strip()} (Release build).",
             "",
             "Time from the changed files on disk to the command returning (firewalld: `firewall-cmd --reload`;",
             "fwengine: `fwengine --frontend firewalld apply`, a new process that reads, compiles and loads",
             "everything). *Dropped*: new TCP connections that failed while the change ran (a client opens them",
             "back to back to an open port).", "",
             "| config | firewall-cmd --reload: median (min–max) ms | fwengine apply: median (min–max) ms | ratio | "
             "dropped connections: firewalld / fwengine |",
             "|---|---|---|---|---|"]
    for config, res in all_results.items():
        m_fd, lo_fd, hi_fd = summary(res[fd]["ms"])
        m_fe, lo_fe, hi_fe = summary(res[fe]["ms"])
        drops = (f"{res[fd]['dropped']} of {res[fd]['ok'] + res[fd]['dropped']} / "
                 f"{res[fe]['dropped']} of {res[fe]['ok'] + res[fe]['dropped']}")
        lines.append(f"| {config} | {m_fd:.0f} ({lo_fd:.0f}–{hi_fd:.0f}) | {m_fe:.0f} ({lo_fe:.0f}–{hi_fe:.0f}) | "
                     f"{m_fd / m_fe:.1f}× faster | {drops} |")
    lines += ["", "Target (issue #10): ≥ 10× faster than `firewall-cmd --reload`, and no dropped connections.", ""]
    return "\n".join(lines)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fwengine", type=Path, default=DEFAULT_FWENGINE)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="3 runs, print the table, write nothing")
    p.add_argument("--config", action="append", choices=sorted(CONFIGS), help="default: all")
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args()
    if args.quick:
        args.runs = 3
    return args


def main():
    args = parse_args()
    if os.geteuid() != 0:
        print("firewalld.py: needs root (network namespaces): skipped", file=sys.stderr)
        return SKIP
    missing = oracle.missing_programs()
    if missing or not args.fwengine.exists():
        print(f"firewalld.py: missing {missing or [str(args.fwengine)]}: skipped", file=sys.stderr)
        return SKIP
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanups
    started, t0 = datetime.datetime.utcnow(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fwb-") as tmp:
        results = {config: measure(config, args, Path(tmp)) for config in (args.config or sorted(CONFIGS))}
    text = report(results, args, started, time.monotonic() - t0)
    print(text)
    if not args.quick:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
