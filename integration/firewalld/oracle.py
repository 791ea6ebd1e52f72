"""A real firewalld (Debian 12: 1.3.3, nftables backend) inside one network namespace: the differential
test's oracle.

firewalld talks D-Bus on the *system* bus, so each instance gets a private dbus-daemon of type "system"
whose socket is a file in the instance's state directory (a path socket is reachable from any network
namespace; an abstract one would not be). firewalld runs in the foreground (--nofork) inside the
namespace (`ip netns exec` exec()s it, so the pid we hold is firewalld's), with --system-config pointing
at the case's directory, the /etc/firewalld of this instance; the stock files still come from
/usr/lib/firewalld. Both daemons are our direct children: they are stopped by pid and reaped here, never
by name. On SIGTERM firewalld removes its `table inet firewalld` (CleanupOnExit=yes).

Facts this relies on (firewalld 1.3.3): without polkit on the bus firewalld only checks that the caller is
uid 0; its D-Bus property `state` is "RUNNING" once the ruleset is loaded, or "FAILED" when the
configuration was rejected and it fell back to the stock configuration (fail-safe mode).
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

DBUS_NAME = "org.fedoraproject.FirewallD1"
FIREWALLD = "/usr/sbin/firewalld"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def missing_programs():
    """What this machine lacks to run the oracle (empty if nothing)."""
    return [name for name, path in (("firewalld", FIREWALLD), ("dbus-daemon", shutil.which("dbus-daemon")),
                                    ("dbus-send", shutil.which("dbus-send")))
            if not path or not os.access(path, os.X_OK)]


class OracleError(Exception):
    pass


class Firewalld:
    """One firewalld + its bus. start() returns "running" or "failed" (fail-safe mode); stop() is safe to
    call more than once and after a failed start."""

    def __init__(self, netns, config_dir, state_dir, register=None):
        self.netns, self.config_dir, self.state_dir = netns, Path(config_dir), Path(state_dir)
        self.socket = self.state_dir / "system_bus_socket"
        self.log = self.state_dir / "firewalld.log"
        self.bus = self.daemon = None
        self.register = register  # called with each process we start, so a caller's cleanup knows it

    def _spawn(self, command, output):
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True,  # a Ctrl-C to the harness must not reach them first
                                   env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={self.socket}"))
        if self.register:
            self.register(process)
        return process

    def start(self, timeout=30):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # the bus lets anyone in: only root may reach its socket
        (self.state_dir / "dbus.conf").write_text(BUS_CONFIG.format(socket=self.socket))
        if self.socket.exists():
            self.socket.unlink()
        with open(self.state_dir / "dbus.out", "w") as output:
            self.bus = self._spawn(["dbus-daemon", "--nofork", "--nopidfile",
                                    f"--config-file={self.state_dir / 'dbus.conf'}"], output)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.bus.poll() is not None or time.monotonic() > deadline:
                raise OracleError(f"dbus-daemon did not start: {(self.state_dir / 'dbus.out').read_text()[-500:]}")
            time.sleep(0.02)
        with open(self.state_dir / "firewalld.out", "w") as output:
            self.daemon = self._spawn(["ip", "netns", "exec", self.netns, FIREWALLD, "--nofork", "--nopid",
                                       "--system-config", str(self.config_dir), "--log-target", "file",
                                       "--log-file", str(self.log)], output)
        while True:
            state = self.state()
            if state in ("RUNNING", "FAILED"):
                return state.lower()
            if self.daemon.poll() is not None:
                raise OracleError(f"firewalld exited {self.daemon.returncode} during start: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise OracleError(f"firewalld not ready after {timeout} s (state {state}): {self.log_tail()}")
            time.sleep(0.05)

    def state(self):
        """The daemon's D-Bus `state` property ("INIT", "RUNNING", "FAILED"), or None before it answers."""
        completed = subprocess.run(
            ["dbus-send", f"--bus=unix:path={self.socket}", "--print-reply=literal", "--reply-timeout=500",
             f"--dest={DBUS_NAME}",
             "/org/fedoraproject/FirewallD1", "org.freedesktop.DBus.Properties.Get", f"string:{DBUS_NAME}",
             "string:state"], capture_output=True, text=True, timeout=5)
        if completed.returncode != 0:
            return None
        return completed.stdout.split()[-1] if completed.stdout.split() else None

    def log_tail(self, lines=15):
        texts = []
        for path in (self.log, self.state_dir / "firewalld.out"):
            if path.exists():
                texts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(texts)

    def errors(self):
        """ERROR/WARNING lines of this instance's log (why a configuration was rejected)."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if "ERROR" in line]

    def stop(self):
        for process in (self.daemon, self.bus):  # firewalld first: it needs the bus while it cleans up
            stop_child(process)
        self.daemon = self.bus = None


def stop_child(process, grace=5):
    if process is None or process.poll() is not None:
        return
    try:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)
    except ProcessLookupError:
        pass
