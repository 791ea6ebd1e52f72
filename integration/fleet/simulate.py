#!/usr/bin/env python3
"""Fleet convergence for 1,000 hosts, by simulation (issue #11, docs/fleet.md "Measured convergence").

  simulate.py [--hosts 1000] [--changes 10] [--fwengine build/bin/fwengine] [--report FILE]

What a fleet shares is the store; what each host does after an event reaches it (debounce, compile,
apply) runs on that host's own CPU and does not grow with the fleet. So the simulation measures the
two parts apart and adds them per host:

  1. fan-out: a three-member etcd on 127.0.0.1 holding the fleet's policy (a HostEndpoint per host and
     one GlobalNetworkPolicy), and one watch per host on the Calico prefix, spread over --members
     members (a daemon starts on a random endpoint of its --source: 3 is what a fleet sees, 1 the worst
     case of every host on one member), each on its own HTTP connection to
     etcd's JSON gateway (POST /v3/watch, the protocol the daemon speaks). A change to the policy is
     put --changes times; for every watch, the time from sending the put (a watch on a follower can see
     the event before the put's answer is back) to the event arriving is recorded.
  2. relist: every host lists the prefix at once (POST /v3/kv/range), as all daemons do when the store
     comes back after an outage; the time until each has its answer is recorded.
  3. per-host work, with --fwengine (root): `fwengine apply` of the same store content (all HostEndpoints
     and the policy, as files) into one network namespace, --applies times, alternating two versions of
     the policy. A whole process per apply (start, plugin loading, parse, compile, apply): an upper bound
     of the daemon's in-process recompile and apply.

Convergence of host i for a change = its fan-out time + the daemon's debounce + an apply time drawn
(seeded) from part 3. Reported, never asserted. All on loopback; every process it starts is stopped by
pid, every namespace and directory it creates is removed at exit.
"""

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

FLEET_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FLEET_DIR.parent))

import scenario  # noqa: E402
from etcd_cluster import CALICO_PREFIX, missing_tools, resource_key, start_cluster  # noqa: E402
from fleet import CLEANUP, host_endpoint, machine_description, web_policy  # noqa: E402

DEBOUNCE = 0.05  # the daemon reads a burst as one: it waits for 50 ms without news before it recompiles


def b64(text):
    return base64.b64encode(text.encode()).decode()


def prefix_range_end(prefix):
    """etcd's range end for 'every key with this prefix': the prefix with its last byte incremented."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Gateway:
    """Unary calls to one member's JSON gateway."""

    def __init__(self, port):
        self.port = port

    def call(self, path, body, timeout=60):
        """The answer's bytes."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"POST {path} on :{self.port}: HTTP {response.status}: {data[:200]!r}")
            return data
        finally:
            connection.close()

    def put(self, key, value):
        answer = json.loads(self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)}))
        return int(answer["header"]["revision"])

    def list_prefix(self, prefix):
        """The raw answer: the simulated hosts do not parse it, so that their CPU goes to etcd."""
        return self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix_range_end(prefix))})


class Arrivals:
    """When each watch saw each revision (monotonic seconds), and who waits for a revision to be seen by
    every watch."""

    def __init__(self):
        self.condition = threading.Condition()
        self.times = {}  # revision -> [seconds, one per watch that saw it]
        self.errors = []

    def seen(self, revision, when):
        with self.condition:
            self.times.setdefault(revision, []).append(when)
            self.condition.notify_all()

    def failed(self, message):
        with self.condition:
            self.errors.append(message)
            self.condition.notify_all()

    def wait(self, revision, count, timeout):
        deadline = time.monotonic() + timeout
        with self.condition:
            while len(self.times.get(revision, [])) < count and not self.errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.condition.wait(left)
            return list(self.times.get(revision, []))


class Watch(threading.Thread):
    """One host's watch on the Calico prefix, on its own connection, as the daemon keeps it."""

    def __init__(self, port, start_revision, arrivals, created):
        super().__init__(daemon=True)
        self.port, self.start_revision = port, start_revision
        self.arrivals, self.created = arrivals, created
        self.connection = None

    def run(self):
        try:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=None)
            request = {"create_request": {"key": b64(CALICO_PREFIX), "range_end": b64(prefix_range_end(CALICO_PREFIX)),
                                          "start_revision": self.start_revision}}
            self.connection.request("POST", "/v3/watch", json.dumps(request), {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            while True:
                line = response.readline()  # one JSON message per line of the stream
                now = time.monotonic()
                if not line:
                    return
                message = json.loads(line)
                if "error" in message:
                    raise RuntimeError(str(message["error"])[:200])
                result = message.get("result", {})
                if result.get("created"):
                    self.created.release()
                for event in result.get("events", []):
                    self.arrivals.seen(int(event["kv"]["mod_revision"]), now)
        except (OSError, ValueError, RuntimeError, http.client.HTTPException) as error:
            self.arrivals.failed(f"watch on :{self.port}: {error}")
            self.created.release()

    def close(self):
        """Ends the stream: shutdown wakes the reader, which close alone would not while it reads."""
        if self.connection is not None and self.connection.sock is not None:
            try:
                self.connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * len(values)))]


def figures(values):
    """min / median / p99 / max in milliseconds."""
    return {"min": min(values) * 1000, "median": statistics.median(values) * 1000,
            "p99": percentile(values, 0.99) * 1000, "max": max(values) * 1000}


def text(values):
    f = figures(values)
    return f"min {f['min']:.0f} ms, median {f['median']:.0f} ms, p99 {f['p99']:.0f} ms, max {f['max']:.0f} ms"


def measure_applies(engine, hosts, count, work_dir):
    """Seconds of `count` `fwengine apply` runs of the fleet's store content into one namespace."""
    netns = f"fwe-fl-{os.getpid()}-sim"
    scenario.RESOURCES.add_namespace(netns)
    scenario.run_command(["ip", "netns", "add", netns])
    scenario.run_command(["ip", "-n", netns, "link", "set", "lo", "up"])
    if scenario.run_command(["ip", "-n", netns, "link", "add", "eth0", "type", "dummy"], check=False).returncode:
        scenario.run_command(["ip", "-n", netns, "link", "add", "eth0", "type", "bridge"])  # no dummy driver
    endpoints = [host_endpoint(f"host{i}", f"10.{i // 250}.{i % 250}.10") for i in range(1, hosts + 1)]
    node = "host1"
    seconds = []
    for round_ in range(count):
        policy_dir = work_dir / f"policy-{round_ % 2}"
        if not policy_dir.exists():
            policy_dir.mkdir()
            ports = [8080] if round_ % 2 == 0 else [9090]
            documents = endpoints + [web_policy(ports)]
            (policy_dir / "store.yaml").write_text("\n---\n".join(json.dumps(d) for d in documents) + "\n")
        command = [str(engine), "--frontend", "calico", "--backend", "nft", "--netns", netns, "--node", node,
                   "-f", str(policy_dir), "apply"]
        start = time.monotonic()
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        seconds.append(time.monotonic() - start)
        if completed.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` exited {completed.returncode}: "
                               f"{(completed.stderr or completed.stdout).strip()[:500]}")
    scenario.RESOURCES.release([netns])
    return seconds


def main():
    parser = argparse.ArgumentParser(description="Simulated fleet: store fan-out to N watches + per-host apply.")
    parser.add_argument("--hosts", type=int, default=1000, help="watches (one per simulated host)")
    parser.add_argument("--changes", type=int, default=10, help="policy changes put")
    parser.add_argument("--members", type=int, choices=(1, 2, 3), default=3,
                        help="over how many of the 3 members the watches (and relists) are spread")
    parser.add_argument("--fwengine", help="also measure the per-host apply with this binary (needs root)")
    parser.add_argument("--applies", type=int, default=10, help="fwengine apply runs measured")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for one change to reach every watch")
    parser.add_argument("--seed", type=int, default=11, help="seed for drawing the per-host apply times")
    parser.add_argument("--report", help="write the figures there (markdown)")
    options = parser.parse_args()
    problem = missing_tools()
    if problem:
        print(f"SKIP: {problem}")
        return scenario.EXIT_SKIPPED

    started = time.time()
    cluster = start_cluster("fwe-fleet-sim", CLEANUP)
    if cluster is None:
        return 1
    work_dir = cluster.work_dir
    gateways = [Gateway(member.client_port) for member in cluster.members]
    print(f"etcd: 3 members on {', '.join(cluster.endpoints)}", flush=True)

    # The store as a fleet of this size has it.
    for i in range(1, options.hosts + 1):
        resource = host_endpoint(f"host{i}", f"10.{i // 250}.{i % 250}.10")
        gateways[i % 3].put(resource_key(resource), json.dumps(resource))
    ports = [8080]
    revision = gateways[0].put(resource_key(web_policy(ports)), json.dumps(web_policy(ports)))

    arrivals = Arrivals()
    created = threading.Semaphore(0)
    watched = gateways[:options.members]
    watches = [Watch(watched[i % len(watched)].port, revision + 1, arrivals, created) for i in range(options.hosts)]
    CLEANUP.add(lambda: [watch.close() for watch in watches])
    start = time.monotonic()
    for watch in watches:
        watch.start()
    for _ in watches:
        created.acquire()
    if arrivals.errors:
        print(f"FAIL: {len(arrivals.errors)} watches failed, e.g. {arrivals.errors[0]}")
        return 1
    print(f"{options.hosts} watches open ({time.monotonic() - start:.1f} s) on {len(watched)} member(s)", flush=True)

    fanout = []  # per change: seconds per watch
    for change in range(options.changes):
        ports = [9090] if change % 2 == 0 else [8080]
        put_sent = time.monotonic()  # not when it returns: a watch on a follower can see it first
        revision = gateways[change % 3].put(resource_key(web_policy(ports)), json.dumps(web_policy(ports)))
        times = arrivals.wait(revision, options.hosts, options.timeout)
        if len(times) < options.hosts or arrivals.errors:
            print(f"FAIL: change {change + 1}: {len(times)}/{options.hosts} watches saw revision {revision}"
                  + (f"; {arrivals.errors[0]}" if arrivals.errors else ""))
            return 1
        fanout.append([t - put_sent for t in times])
        print(f"change {change + 1}: every watch saw revision {revision}: {text(fanout[-1])}", flush=True)
        time.sleep(0.3)  # changes apart, as an operator makes them
    for watch in watches:
        watch.close()

    barrier = threading.Barrier(options.hosts)

    def relist(index):
        """Until it has the list: a failed attempt is retried on the next member after a backoff, as
        the daemon does. (seconds, answer bytes, failed attempts)"""
        barrier.wait()
        begin = time.monotonic()
        for attempt in range(8):
            try:
                answer = watched[(index + attempt) % len(watched)].list_prefix(CALICO_PREFIX)
                return time.monotonic() - begin, len(answer), attempt
            except (OSError, RuntimeError, http.client.HTTPException):
                time.sleep(min(0.2 * 2 ** attempt, 5) * random.uniform(0.5, 1))
        return time.monotonic() - begin, 0, 8

    with concurrent.futures.ThreadPoolExecutor(max_workers=options.hosts) as pool:
        results = list(pool.map(relist, range(options.hosts)))
    relists = [seconds for seconds, _, _ in results]
    size = max(length for _, length, _ in results)
    retried = sum(1 for _, _, failed in results if failed)
    lost = sum(1 for _, length, _ in results if not length)
    print(f"relist by all {options.hosts} at once ({size / 1e6:.2f} MB each): {text(relists)}; "
          f"{retried} retried, {lost} without an answer after 8 attempts", flush=True)

    applies = None
    if options.fwengine:
        if os.geteuid() != 0 or scenario.namespace_support_problem():
            print("note: not measuring the per-host apply (needs root and network namespaces)")
        else:
            try:
                applies = measure_applies(Path(options.fwengine).resolve(), options.hosts, options.applies, work_dir)
            except (RuntimeError, scenario.CommandError) as error:
                print(f"FAIL: {error}")
                return 1
            print(f"fwengine apply of the store content ({options.hosts} HostEndpoints + 1 policy), "
                  f"{len(applies)} runs: {text(applies)}", flush=True)

    all_fanout = [seconds for change in fanout for seconds in change]
    predicted = None
    if applies:
        draw = random.Random(options.seed)
        predicted = [seconds + DEBOUNCE + draw.choice(applies) for seconds in all_fanout]
        print(f"predicted convergence per host and change (fan-out + {DEBOUNCE * 1000:.0f} ms debounce + apply): "
              f"{text(predicted)}")
    if options.report:
        write_report(options, started, all_fanout, (relists, retried, lost), applies, predicted)
        print(f"report written to {options.report}")
    return 0


def write_report(options, started, fanout, relist, applies, predicted):
    relists, retried, lost = relist
    def row(what, values):
        f = figures(values)
        return f"| {what} | {len(values)} | {f['min']:.0f} | {f['median']:.0f} | {f['p99']:.0f} | {f['max']:.0f} |"

    lines = [f"# Simulated fleet of {options.hosts} hosts", "",
             f"- when: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}",
             f"- machine: {machine_description()}",
             f"- fwengine: {Path(options.fwengine).resolve() if options.fwengine else '(per-host apply not measured)'}",
             f"- method: integration/fleet/simulate.py: {options.hosts} watches on a 3-member etcd 3.4 on "
             f"127.0.0.1 (JSON gateway), watched on {options.members} member(s), {options.changes} changes; "
             f"per-host apply measured with "
             f"{options.applies} `fwengine apply` runs", "",
             "| what | samples | min ms | median ms | p99 ms | max ms |", "|---|---|---|---|---|---|",
             row("fan-out: put sent -> event at a watch", fanout),
             row("relist by every host at once", relists)]
    if applies:
        lines.append(row("fwengine apply (whole process)", applies))
        lines.append(row(f"predicted convergence (fan-out + {DEBOUNCE * 1000:.0f} ms + apply)", predicted))
    lines.append(f"\nRelist: {retried} hosts needed more than one attempt, {lost} had no answer after 8.")
    Path(options.report).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    scenario.run_main(main, CLEANUP.run)
