#!/usr/bin/env python3
"""Fleet acceptance test (issue #11, docs/fleet.md): N hosts follow one Calico policy in a real etcd.

  fleet.py --fwengine build/bin/fwengine [--hosts 20] [--sample 4] [--report FILE]

Starts a three-member etcd cluster on 127.0.0.1, builds N "hosts" (network namespaces fwe-fl-<pid>-hN,
each joined to one client namespace by a veth pair), writes a HostEndpoint per host and a
GlobalNetworkPolicy with etcdctl, and runs one `fwengine daemon --source etcd://...` per host in the root
namespace (it programs its host with --netns). Then, checking every host's applied revision and real
traffic from the client on a sample of hosts:

  1. the initial policy reaches every host;
  2. a change reaches every host (the time from the put to each host's state.json is reported);
  3. the etcd leader is killed, another change reaches every host;
  4. every member is stopped: the hosts keep enforcing and report the store unreachable; the members
     are restarted on their data and a change reaches every host;
  5. a bad resource is put: every host keeps the last good ruleset and records the failure; deleting
     it recovers.

Times are reported, never asserted. Needs root; exits 77 (skipped) without etcd/etcdctl or namespaces.
Everything it starts (etcd members, daemons, probe agents) is stopped by pid, and everything it creates
(namespaces, /run/fwengine/<namespace>, the work directory) is removed at exit, also on failure and signals.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

FLEET_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FLEET_DIR.parent))  # scenario.py: topology builder, probe agents, cleanup

import scenario  # noqa: E402
from etcd_cluster import EtcdError, missing_tools, resource_key, start_cluster  # noqa: E402

WEB_PORT, ADMIN_PORT = 8080, 9090  # the two ports the policy versions open and close
POLL_INTERVAL = 0.005  # seconds between two reads of every host's state files
FLEET_LABEL = "fleet"  # HostEndpoint label the policy selects on


class Cleanup:
    """What main() creates besides namespaces and agents (scenario.RESOURCES has those), undone at exit
    in reverse order."""

    def __init__(self):
        self.actions = []

    def add(self, action):
        self.actions.append(action)

    def run(self):
        while self.actions:
            action = self.actions.pop()
            try:
                action()
            except Exception as error:  # keep cleaning up the rest
                print(f"cleanup: {error}", file=sys.stderr)


CLEANUP = Cleanup()


# ---------------------------------------------------------------------------------------------------
# The hosts: a star of veth pairs around one client namespace


def star_spec(count):
    """Host i: eth0 10.213.i.10/24, its peer h<i> in the client namespace 10.213.i.1/24."""
    namespaces = {"client": {"sysctls": {}, "routes": [], "dummies": [], "bridges": []}}
    links = []
    for i in range(1, count + 1):
        namespaces[f"h{i}"] = {"sysctls": {}, "routes": [], "dummies": [], "bridges": []}
        links.append([(f"h{i}", {"ifname": "eth0", "addresses": [f"10.213.{i}.10/24"], "mac": None}),
                      ("client", {"ifname": f"h{i}", "addresses": [f"10.213.{i}.1/24"], "mac": None})])
    return {"namespaces": namespaces, "links": links}


class FleetTopology(scenario.Topology):
    def __init__(self, count):
        super().__init__(star_spec(count), "fl")
        self.names = {ns: f"fwe-fl-{os.getpid()}-{ns}" for ns in self.spec["namespaces"]}
        self.hosts = [f"h{i}" for i in range(1, count + 1)]

    @staticmethod
    def address(host):
        return f"10.213.{host[1:]}.10"


# ---------------------------------------------------------------------------------------------------
# The policy in the store


def host_endpoint(netns, address):
    return {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
            "metadata": {"name": f"{netns}-eth0", "labels": {FLEET_LABEL: "web"}},
            "spec": {"node": netns, "interfaceName": "eth0", "expectedIPs": [address]}}


def web_policy(ports, selector=f"{FLEET_LABEL} == 'web'", name="fleet-web"):
    """Allows TCP to `ports` in; everything else in and out is denied by the host endpoints' default
    (failsafe ports and replies of allowed connections excepted)."""
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": name},
            "spec": {"selector": selector, "order": 100, "types": ["Ingress"],
                     "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ports}}]}}


def expected_verdicts(ports):
    return {port: "open" if port in ports else "closed" for port in (WEB_PORT, ADMIN_PORT)}


# ---------------------------------------------------------------------------------------------------
# The daemons and what they report


class Fleet:
    def __init__(self, engine, cluster, topology, work_dir, verbose):
        self.engine, self.cluster, self.topology = engine, cluster, topology
        self.work_dir, self.verbose = work_dir, verbose
        self.daemons = {}  # host -> Popen
        self.exit_codes = {}

    def netns(self, host):
        return self.topology.names[host]

    def run_dir(self, host):
        return Path("/run/fwengine") / self.netns(host)

    def log_path(self, host):
        return self.work_dir / f"daemon-{host}.log"

    def daemon_command(self, host):
        source = "etcd://" + ",".join(self.cluster.endpoints)
        return [str(self.engine), "--frontend", "calico", "--backend", "nft", "--netns", self.netns(host),
                "--node", self.netns(host), "--source", source,
                # the daemon's copy of the store for a boot during an outage: in the test's own directory
                "--etcd-cache", str(self.work_dir / f"cache-{host}.json"), "daemon"]

    def start_daemons(self):
        for host in self.topology.hosts:
            self.start_daemon(host)

    def start_daemon(self, host):
        command = self.daemon_command(host)
        if self.verbose:
            print("+ " + " ".join(command), flush=True)
        with open(self.log_path(host), "ab") as log:
            # stdin is a pipe only so that scenario's stop_process can close it; the daemon ignores it
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=log)
        scenario.RESOURCES.add_process(process, self.netns(host))  # stopped before its namespace goes
        self.daemons[host] = process

    def restart_daemon(self, host):
        """SIGTERM and start again, as `systemctl restart` does; the exit code of the old one."""
        process = self.daemons[host]
        os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            code = "hung after SIGTERM (killed)"
        self.start_daemon(host)
        return code

    def stop_daemons(self):
        """SIGTERM to all at once (they leave the ruleset in place), SIGKILL for one that hangs."""
        for process in self.daemons.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for host, process in self.daemons.items():
            try:
                self.exit_codes[host] = process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
                self.exit_codes[host] = "hung after SIGTERM (killed)"

    def dead_daemons(self):
        return {host: process.returncode for host, process in self.daemons.items() if process.poll() is not None}

    def log_tail(self, host, lines=15):
        try:
            text = self.log_path(host).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text[-lines:])

    def read_json(self, host, name):
        try:
            with open(self.run_dir(host) / name, encoding="utf-8") as stream:
                return json.load(stream)
        except (OSError, ValueError):  # not written yet (or, never seen with rename, half written)
            return None

    def written_since(self, host, name, time_ns):
        try:
            return (self.run_dir(host) / name).stat().st_mtime_ns >= time_ns
        except OSError:
            return False

    def applied_revision(self, host):
        state = self.read_json(host, "state.json")
        try:
            return int(state["revision"])
        except (TypeError, KeyError, ValueError):
            return None

    def wait_all(self, condition, timeout):
        """Polls every host until condition(host) holds; returns ({host: seconds until it held},
        [hosts where it never did]). Returns early when a daemon dies."""
        start = time.monotonic()
        reached = {}
        waiting = list(self.topology.hosts)
        while waiting:
            now = time.monotonic()
            for host in list(waiting):
                if condition(host):
                    reached[host] = now - start
                    waiting.remove(host)
            if not waiting or now - start > timeout or self.dead_daemons():
                break
            time.sleep(POLL_INTERVAL)
        return reached, waiting

    def wait_revision(self, revision, timeout):
        return self.wait_all(lambda host: (self.applied_revision(host) or 0) >= revision, timeout)

    def status(self, host):
        """`fwengine status --json` of a host, parsed (None if it failed)."""
        completed = subprocess.run([str(self.engine), "--netns", self.netns(host), "--backend", "nft", "--json",
                                    "status"], capture_output=True, text=True, timeout=60)
        try:
            return json.loads(completed.stdout) if completed.returncode == 0 else None
        except ValueError:
            return None

    def status_text(self, host):
        completed = subprocess.run([str(self.engine), "--netns", self.netns(host), "--backend", "nft", "status"],
                                   capture_output=True, text=True, timeout=60)
        return completed.stdout + completed.stderr


# ---------------------------------------------------------------------------------------------------
# The test


class Run:
    """Results: check lines as they happen, convergence figures for the summary and the report."""

    def __init__(self, fleet, sample, probe_timeout):
        self.fleet, self.sample, self.probe_timeout = fleet, sample, probe_timeout
        self.failures = 0
        self.convergence = []  # (what, {host: seconds})

    def check(self, what, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)
        if not ok:
            self.failures += 1
        return ok

    def traffic(self, what, verdicts):
        """Real TCP from the client to every sampled host, each port against its expected verdict."""
        topology = self.fleet.topology
        probes = [{"from": "client", "to": topology.address(host), "src": None, "proto": "tcp", "port": port,
                   "expect": verdict, "host": host}
                  for host in self.sample for port, verdict in verdicts.items()]
        results = scenario.send_probes_checked(topology, probes, lambda probe: probe["expect"], self.probe_timeout)
        wrong = [f"{probe['host']}:{probe['port']} {scenario.real_text(result)} (expected {probe['expect']})"
                 for probe, result in zip(probes, results) if result[0] != probe["expect"]]
        shown = ", ".join(f"{port} {verdict}" for port, verdict in verdicts.items())
        return self.check(f"{what}: traffic on {len(self.sample)} hosts ({shown})", not wrong, "; ".join(wrong))

    def converged(self, what, revision, timeout, record=True):
        reached, missing = self.fleet.wait_revision(revision, timeout)
        if record and reached:
            self.convergence.append((what, reached))
        detail = f"{len(reached)}/{len(reached) + len(missing)} hosts at revision >= {revision}"
        if reached:
            detail += f"; {spread(reached.values())}"
        if missing:
            detail += f"; not after {timeout} s: {', '.join(missing[:8])}" + self.daemon_news(missing)
        return self.check(what, not missing, detail)

    def daemon_news(self, hosts):
        """Why hosts fell behind, from their daemons: which died, and the last lines of one log."""
        dead = self.fleet.dead_daemons()
        text = "".join(f"\n  daemon of {host} exited {code}" for host, code in dead.items())
        host = next((h for h in hosts if h in dead), hosts[0])
        return text + f"\n  log of {host}:\n{self.fleet.log_tail(host)}"


def spread(seconds):
    values = sorted(seconds)
    return (f"min {values[0] * 1000:.0f} ms, median {statistics.median(values) * 1000:.0f} ms, "
            f"max {values[-1] * 1000:.0f} ms")


def watched_member(fleet, cluster):
    """The member most daemons say they are connected to (source.json's message names its URL)."""
    watchers = {member.name: 0 for member in cluster.members}
    for host in fleet.topology.hosts:
        message = (fleet.read_json(host, "source.json") or {}).get("message", "")
        for member in cluster.members:
            if message.endswith(member.client_url):
                watchers[member.name] += 1
    name = max(watchers, key=watchers.get)
    return next(member for member in cluster.members if member.name == name)


def pick_sample(hosts, count):
    """`count` hosts spread evenly over the fleet, first and last included."""
    if count >= len(hosts):
        return list(hosts)
    if count <= 1:
        return hosts[:1]
    return [hosts[round(i * (len(hosts) - 1) / (count - 1))] for i in range(count)]


def phases(run, fleet, cluster, options):
    hosts = fleet.topology.hosts

    # 1. The initial policy, written before any daemon runs.
    for host in hosts:
        cluster.put_resource(host_endpoint(fleet.netns(host), fleet.topology.address(host)))
    ports = [WEB_PORT]
    revision = cluster.put_resource(web_policy(ports))
    fleet.start_daemons()
    if not run.converged("initial policy on every host", revision, options.start_timeout, record=False):
        return
    run.traffic("initial policy", expected_verdicts(ports))

    # 2. A change: the web port closes, the admin port opens.
    ports = [ADMIN_PORT]
    revision = cluster.put_resource(web_policy(ports))
    run.converged("change reaches every host", revision, options.change_timeout)
    run.traffic("after the change", expected_verdicts(ports))

    # 2b (--hung-member). The member most daemons watch hangs; the two others keep the store.
    if options.hung_member:
        member = watched_member(fleet, cluster)
        cluster.freeze_member(member)
        run.check(f"etcd member {member.name} (pid {member.process.pid}), watched by the daemons, frozen "
                  "with SIGSTOP", True)
        ports = [WEB_PORT, ADMIN_PORT]
        revision = cluster.put_resource(web_policy(ports))
        run.converged("change with a hung member reaches every host", revision, options.change_timeout)
        run.traffic("with a hung member", expected_verdicts(ports))
        cluster.thaw_member(member)
        cluster.wait_ready(options.change_timeout)

    # 3. The leader dies; the two others keep the store.
    leader = cluster.leader()
    cluster.kill_member(leader)
    run.check(f"etcd leader {leader.name} (pid {leader.process.pid}) killed with SIGKILL", True)
    ports = [WEB_PORT]
    revision = cluster.put_resource(web_policy(ports))
    run.converged("change with one member down reaches every host", revision, options.change_timeout)
    run.traffic("with one member down", expected_verdicts(ports))

    # 4. The whole store goes; the hosts keep the last policy and say that the store is gone.
    cluster.stop()
    run.check("all etcd members stopped", all(not m.running() for m in cluster.members))
    reached, missing = fleet.wait_all(lambda host: (fleet.read_json(host, "source.json") or {}).get("reachable")
                                      is False, options.outage_timeout)
    run.check("every host reports the store unreachable (source.json)", not missing,
              f"after {spread(reached.values())}" if reached and not missing else
              f"not after {options.outage_timeout} s: {', '.join(missing[:8])}")
    statuses = {host: fleet.status(host) for host in run.sample}
    as_said = [host for host, status in statuses.items()
               if status and (status.get("source") or {}).get("reachable") is False
               and str((status.get("applied") or {}).get("revision")) == str(revision)]
    run.check(f"`status --json` shows source.reachable false and applied.revision {revision}",
              len(as_said) == len(statuses), f"{len(as_said)}/{len(statuses)} sampled hosts" +
              ("" if len(as_said) == len(statuses) else
               f"; e.g. {json.dumps(statuses[next(h for h in statuses if h not in as_said)])[:600]}"))
    run.check("no daemon exited while the store was down", not fleet.dead_daemons(),
              str(fleet.dead_daemons()))
    run.traffic("store down: the last policy still enforced", expected_verdicts(ports))
    # A daemon (re)started while the store is down enforces its copy of the store on disk (--etcd-cache),
    # the same policy the kernel has.
    restarted = run.sample[0]
    restart_time = time.time_ns()
    code = fleet.restart_daemon(restarted)
    run.check(f"daemon of {restarted} restarted while the store is down", code == 0, f"old one exited {code}")
    deadline = time.monotonic() + options.outage_timeout
    while not (fleet.written_since(restarted, "source.json", restart_time)
               and (fleet.read_json(restarted, "source.json") or {}).get("reachable") is False):
        if time.monotonic() > deadline or fleet.daemons[restarted].poll() is not None:
            break
        time.sleep(POLL_INTERVAL)
    reported = fleet.written_since(restarted, "source.json", restart_time) and fleet.daemons[restarted].poll() is None
    run.check(f"the new daemon of {restarted} reports the store unreachable", reported,
              "" if reported else "\n" + fleet.log_tail(restarted, 5))
    run.traffic(f"store down, daemon of {restarted} restarted: the last policy still enforced",
                expected_verdicts(ports))
    for member in cluster.members:
        cluster.start_member(member)
    cluster.wait_ready(options.change_timeout)
    run.check("all etcd members restarted on their data", True)
    ports = [ADMIN_PORT]
    revision = cluster.put_resource(web_policy(ports))
    run.converged("change after the restart reaches every host (catch-up)", revision, options.outage_timeout)
    run.traffic("after the restart", expected_verdicts(ports))
    good_revision = revision

    # 5. A resource the frontend refuses: the last good ruleset stays, the failure is recorded.
    broken = web_policy([WEB_PORT], selector=f"{FLEET_LABEL} == ", name="fleet-broken")
    bad_revision = cluster.put_resource(broken)
    reached, missing = fleet.wait_all(lambda host: fleet.read_json(host, "failure.json") is not None
                                      and int((fleet.read_json(host, "source.json") or {}).get("revision") or 0)
                                      >= bad_revision, options.change_timeout)
    run.check("every host records the bad resource as a failure (failure.json)", not missing,
              f"{spread(reached.values())}" if not missing else
              f"not after {options.change_timeout} s: {', '.join(missing[:8])}" + run.daemon_news(missing))
    moved = [host for host in hosts if (fleet.applied_revision(host) or 0) != good_revision]
    run.check("every host keeps the last good ruleset (state.json revision unchanged)", not moved,
              ", ".join(f"{host}: {fleet.applied_revision(host)}" for host in moved[:8]))
    texts = {host: fleet.status_text(host) for host in run.sample}
    silent = [host for host, text in texts.items() if "fail" not in text.lower()]
    run.check("`status` shows the failure", not silent,
              "; ".join(f"{host}: {texts[host].strip()[:300]!r}" for host in silent[:2]))
    run.traffic("bad resource in the store: the last good policy enforced", expected_verdicts(ports))
    revision = cluster.delete(resource_key(broken))
    run.converged("deleting the bad resource recovers every host", revision, options.change_timeout, record=False)
    # state.json is renamed into place before failure.json is removed: wait, do not look once
    reached, missing = fleet.wait_all(lambda host: fleet.read_json(host, "failure.json") is None, 5)
    run.check("the failure is cleared on every host", not missing, f"{len(reached)}/{len(hosts)} hosts")
    run.traffic("after the recovery", expected_verdicts(ports))


def machine_description():
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}"


def write_report(path, run, options, engine, started):
    lines = [f"# Fleet convergence, {options.hosts} hosts", "",
             f"- when: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}",
             f"- machine: {machine_description()}",
             f"- fwengine: {engine}",
             f"- method: integration/fleet/fleet.py: {options.hosts} network namespaces, one `fwengine daemon` "
             "each (all on this machine), a 3-member etcd 3.4 on 127.0.0.1; time from `etcdctl put` "
             f"returning to the host's state.json showing the put's revision (polled every "
             f"{POLL_INTERVAL * 1000:.0f} ms)", "",
             "| change | hosts | min | median | max |", "|---|---|---|---|---|"]
    for what, reached in run.convergence:
        values = sorted(reached.values())
        lines.append(f"| {what} | {len(values)} | {values[0] * 1000:.0f} ms | "
                     f"{statistics.median(values) * 1000:.0f} ms | {values[-1] * 1000:.0f} ms |")
    lines += ["", f"Checks failed: {run.failures}", ""]
    Path(path).write_text("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description="Fleet test: N hosts follow one Calico policy in etcd.")
    parser.add_argument("--fwengine", required=True, help="the fwengine binary")
    parser.add_argument("--hosts", type=int, default=20, help="network namespaces, one daemon each (1-250)")
    parser.add_argument("--sample", type=int, default=4, help="hosts probed with real traffic")
    parser.add_argument("--report", help="write the convergence figures there (markdown)")
    parser.add_argument("--timeout", dest="probe_timeout", type=float, default=1.0,
                        help="seconds a probe waits for an answer")
    parser.add_argument("--start-timeout", type=float, default=120, help="seconds for the first apply everywhere")
    parser.add_argument("--change-timeout", type=float, default=60, help="seconds for a change to reach all")
    parser.add_argument("--outage-timeout", type=float, default=90,
                        help="seconds to notice a dead store, and to catch up after it is back")
    parser.add_argument("--hung-member", action="store_true",
                        help="also freeze (SIGSTOP) the member the daemons watch, then change the policy")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every daemon command")
    options = parser.parse_args()
    if not 1 <= options.hosts <= 250:
        parser.error("--hosts must be between 1 and 250")
    engine = Path(options.fwengine).resolve()
    if not engine.is_file():
        print(f"FAIL: fwengine binary {options.fwengine} not found")
        return 1

    problem = missing_tools() or scenario.namespace_support_problem()
    if problem:
        print(f"SKIP: {problem}")
        return scenario.EXIT_SKIPPED

    started = time.time()
    cluster = start_cluster("fwe-fleet", CLEANUP)
    if cluster is None:
        return 1
    work_dir = cluster.work_dir
    print(f"etcd: 3 members on {', '.join(cluster.endpoints)} "
          f"(pids {', '.join(str(m.process.pid) for m in cluster.members)})", flush=True)

    topology = FleetTopology(options.hosts)
    CLEANUP.add(topology.destroy)  # daemons, agents, namespaces and their /run/fwengine directories
    topology.build()
    sample = pick_sample(topology.hosts, options.sample)
    for ns in ["client"] + sample:
        topology.agents[ns] = scenario.Agent(topology.names[ns])
    topology.listen({host: ({WEB_PORT, ADMIN_PORT}, set()) for host in sample})
    print(f"hosts: {options.hosts} namespaces {topology.names['h1']} ... {topology.names[topology.hosts[-1]]}; "
          f"traffic checked on {', '.join(sample)}", flush=True)

    fleet = Fleet(engine, cluster, topology, work_dir, options.verbose)
    run = Run(fleet, sample, options.probe_timeout)
    if not run.traffic("baseline without fwengine", {WEB_PORT: "open", ADMIN_PORT: "open"}):
        return 1
    try:
        phases(run, fleet, cluster, options)
    except (EtcdError, scenario.CommandError, subprocess.TimeoutExpired) as error:
        run.check("test aborted", False, str(error))
    finally:
        dead = fleet.dead_daemons()
        fleet.stop_daemons()
    run.check("no daemon exited before the end", not dead,
              "".join(f"\n  {host} exited {code}:\n{fleet.log_tail(host)}" for host, code in dead.items()))
    bad_exits = [(host, code) for host, code in fleet.exit_codes.items() if host not in dead and code != 0]
    run.check("every daemon stopped cleanly on SIGTERM (exit 0)", not bad_exits,
              "".join(f"\n  {host} exited {code}:\n{fleet.log_tail(host)}" for host, code in bad_exits[:2]))

    print("\nconvergence (put returned -> state.json at the new revision):")
    for what, reached in run.convergence:
        print(f"  {what}: {len(reached)} hosts, {spread(reached.values())}")
    if options.report:
        write_report(options.report, run, options, engine, started)
        print(f"report written to {options.report}")
    print(f"{run.failures} checks failed" if run.failures else "all checks passed")
    return 1 if run.failures else 0


if __name__ == "__main__":
    scenario.run_main(main, CLEANUP.run)
