"""A throwaway etcd cluster on 127.0.0.1 for the fleet tests: three members (Debian's etcd-server 3.4,
/usr/bin/etcd), each a child process on ports picked here, with data directories under a work directory
the caller owns. Members can be killed and restarted on the same data, as the fleet test needs.

Only processes started here are ever signalled, by pid. Writes go through `etcdctl` (ETCDCTL_API=3),
as an operator would write them; reads of the cluster's own state too.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
CALICO_PREFIX = "/calico/resources/v3/projectcalico.org/"


def missing_tools():
    """What this machine lacks to run a cluster ('' if nothing)."""
    missing = [tool for tool in (ETCD, ETCDCTL) if not os.access(tool, os.X_OK)]
    return f"{' and '.join(missing)} not installed (Debian: etcd-server, etcd-client)" if missing else ""


def free_loopback_ports(count):
    """Ports nobody listens on now on 127.0.0.1: each is bound once to prove it (all held at the same
    time, so they differ), then released for etcd."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def etcd_environment():
    """No ETCD_*/ETCDCTL_* settings of the caller's shell leak into the cluster or the client."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ETCD_", "ETCDCTL_"))}
    env["ETCDCTL_API"] = "3"
    return env


class EtcdError(Exception):
    pass


class Member:
    def __init__(self, name, client_port, peer_port, data_dir, log_path):
        self.name, self.client_port, self.peer_port = name, client_port, peer_port
        self.data_dir, self.log_path = data_dir, log_path
        self.process = None
        self.frozen = False

    @property
    def client_url(self):
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://127.0.0.1:{self.peer_port}"

    def running(self):
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    def __init__(self, work_dir, size=3, token="fwe"):
        self.work_dir = Path(work_dir)
        ports = free_loopback_ports(2 * size)
        self.members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1], self.work_dir / f"etcd-m{i}",
                               self.work_dir / f"etcd-m{i}.log") for i in range(size)]
        self.token = token
        self.env = etcd_environment()

    # -- membership -------------------------------------------------------------------------------

    @property
    def endpoints(self):
        """host:port of every member, as the daemon's etcd:// source and etcdctl take them."""
        return [f"127.0.0.1:{member.client_port}" for member in self.members]

    def start(self, timeout=30):
        for member in self.members:
            self.start_member(member)
        self.wait_ready(timeout)

    def start_member(self, member):
        """Start (or restart, on the same data directory: etcd then ignores the initial-cluster flags)."""
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        command = [ETCD, "--name", member.name, "--data-dir", str(member.data_dir),
                   "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
                   "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
                   "--initial-cluster", initial, "--initial-cluster-token", self.token,
                   "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr"]
        log = open(member.log_path, "ab")
        try:
            member.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                              env=self.env)
        finally:
            log.close()

    def kill_member(self, member, signum=signal.SIGKILL):
        if member.running():
            os.kill(member.process.pid, signum)
            member.process.wait(timeout=30)

    def freeze_member(self, member):
        """SIGSTOP: the member keeps its connections open and answers nothing, as a hung or cut-off
        member does (a killed one refuses connections at once)."""
        os.kill(member.process.pid, signal.SIGSTOP)
        member.frozen = True

    def thaw_member(self, member):
        if member.frozen and member.running():
            os.kill(member.process.pid, signal.SIGCONT)
        member.frozen = False

    def stop(self):
        """Every member: SIGTERM, then SIGKILL for one that does not go within 10 s."""
        for member in self.members:
            self.thaw_member(member)  # a stopped process would keep SIGTERM pending
            if member.running():
                os.kill(member.process.pid, signal.SIGTERM)
        for member in self.members:
            if member.process is None:
                continue
            try:
                member.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(member.process.pid, signal.SIGKILL)
                member.process.wait(timeout=10)

    def close(self):
        """Cleanup at exit: the members, then their data."""
        self.stop()
        for member in self.members:
            shutil.rmtree(member.data_dir, ignore_errors=True)

    def wait_ready(self, timeout):
        """Until a write goes through (the members found each other and elected a leader)."""
        deadline = time.monotonic() + timeout
        while True:
            dead = [m.name for m in self.members if m.process is not None and m.process.poll() is not None
                    and m.process.returncode not in (-signal.SIGKILL, -signal.SIGTERM)]
            if dead:
                raise EtcdError(f"etcd member(s) {', '.join(dead)} exited: {self.log_tail()}")
            completed = self.etcdctl("put", "/fwengine-test/ready", "1", check=False, timeout=5)
            if completed.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise EtcdError(f"etcd cluster not ready after {timeout} s: {completed.stderr.strip()}; "
                                f"{self.log_tail()}")
            time.sleep(0.2)

    def leader(self, timeout=20):
        """The member that leads now, asked of the running members. Just after a member came back (a
        thawed one calls an election) there can be none for a moment: etcd's JSON then leaves out
        "leader", and a member may not answer; asked again until one leads."""
        deadline = time.monotonic() + timeout
        while True:
            running = [m for m in self.members if m.running()]
            completed = self.etcdctl("endpoint", "status", "-w", "json", check=False,
                                     endpoints=[f"127.0.0.1:{m.client_port}" for m in running])
            try:
                statuses = json.loads(completed.stdout) if completed.stdout.strip() else []
            except json.JSONDecodeError:
                statuses = []
            for status in statuses:
                state = status.get("Status", {})
                leader_id = state.get("leader")
                if leader_id and leader_id == state.get("header", {}).get("member_id"):
                    return next(m for m in running if status["Endpoint"].endswith(f":{m.client_port}"))
            if time.monotonic() > deadline:
                raise EtcdError(f"no member says it is the leader after {timeout} s: "
                                f"{completed.stderr.strip()}; {self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines=5):
        tails = []
        for member in self.members:
            try:
                text = member.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            tails.append(f"--- {member.name} ({member.log_path}):\n" + "\n".join(text))
        return "\n".join(tails)

    # -- data -------------------------------------------------------------------------------------

    def etcdctl(self, *args, endpoints=None, check=True, timeout=30):
        command = [ETCDCTL, "--endpoints", ",".join(endpoints or self.endpoints), "--dial-timeout", "2s",
                   "--command-timeout", "3s", *args]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and completed.returncode != 0:
            raise EtcdError(f"`{' '.join(command)}` exited {completed.returncode}: {completed.stderr.strip()}")
        return completed

    def _write(self, args, retry_for):
        """A write's revision; retried while the cluster has no leader (after a member was killed)."""
        deadline = time.monotonic() + retry_for
        while True:
            completed = self.etcdctl("-w", "json", *args, check=False)
            if completed.returncode == 0:
                return int(json.loads(completed.stdout)["header"]["revision"])
            if time.monotonic() > deadline:
                raise EtcdError(f"etcdctl {' '.join(args[:2])} failed for {retry_for} s: {completed.stderr.strip()}")
            time.sleep(0.2)

    def put(self, key, value, retry_for=20):
        return self._write(["put", key, value], retry_for)

    def delete(self, key, retry_for=20):
        return self._write(["del", key], retry_for)

    def put_resource(self, resource, retry_for=20):
        """A Calico v3 resource at the key libcalico-go's etcdv3 backend gives it (cluster-scoped kinds)."""
        return self.put(resource_key(resource), json.dumps(resource, separators=(",", ":")), retry_for)


PLURALS = {"HostEndpoint": "hostendpoints", "GlobalNetworkPolicy": "globalnetworkpolicies",
           "GlobalNetworkSet": "globalnetworksets", "FelixConfiguration": "felixconfigurations", "Tier": "tiers"}


def start_cluster(name, cleanup):
    """A running cluster in a new temporary directory (both undone by cleanup, in reverse order), or
    None after printing why it did not start."""
    work_dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    cleanup.add(lambda: shutil.rmtree(work_dir, ignore_errors=True))
    cluster = EtcdCluster(work_dir, token=f"{name}-{os.getpid()}")
    cleanup.add(cluster.close)
    try:
        cluster.start()
    except EtcdError as error:
        print(f"FAIL: {error}")
        return None
    return cluster


def resource_key(resource):
    return f"{CALICO_PREFIX}{PLURALS[resource['kind']]}/{resource['metadata']['name']}"
