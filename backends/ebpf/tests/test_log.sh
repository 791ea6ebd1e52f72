#!/usr/bin/env bash
# test_log.sh FWENGINE SOURCE_DIR - log rules under the ebpf backend: `fwengine daemon` writes the lines
# the programs put into their ring buffer to its log, in the kernel log's form, with each rule's syslog
# level where its stderr is the journal; a packet a log rule did not match writes nothing. Real TCP
# from another namespace. Root; throwaway namespaces; exit 77 without.
set -u
engine=$1 src=$2
source "$src/core/tests/cli/checks.sh"
require_root_and_backend "$engine" ebpf
ns=fwe-bpflog-$$ client=fwe-bpflogc-$$
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && stop_process "$daemon_pid"
  "$engine" --netns "$ns" --backend ebpf -q flush >/dev/null 2>&1
  ip netns del "$ns" 2>/dev/null
  ip netns del "$client" 2>/dev/null
  rm -rf "/run/fwengine/$ns" "$work"
}
trap cleanup EXIT
ip netns add "$ns" || { echo "skipped: cannot create network namespaces"; exit 77; }
ip netns add "$client"
ip -n "$ns" link set lo up
ip -n "$ns" link add eth0 type veth peer name eth0c netns "$client"
ip -n "$ns" addr add 10.98.0.1/24 dev eth0
ip -n "$client" addr add 10.98.0.2/24 dev eth0c
ip -n "$ns" link set eth0 up
ip -n "$client" link set eth0c up

cat >"$work/policy.yaml" <<'YAML'
apiVersion: fwengine/v1
chains:
  in:
    - {protocol: tcp, dport: 81, action: log, prefix: "fwe-drop: ", level: info}
    - {protocol: tcp, dport: 82, action: accept}
stages:
  input:
    - endpoints:
        - {name: loopback, iif: lo, default: accept}
        - {name: any, conntrack: accept-established-drop-invalid, chains: [in], default: drop}
YAML
# As under systemd: stderr is the journal's stream, which JOURNAL_STREAM names by device and inode.
: >"$work/daemon.log"
JOURNAL_STREAM=$(stat -c %d:%i "$work/daemon.log") "$engine" --netns "$ns" --backend ebpf -f "$work/policy.yaml" \
  daemon 2>>"$work/daemon.log" &
daemon_pid=$!
check "the daemon applies" 0 until_true 20 grep -q '^fwengine: applied IR' "$work/daemon.log" || { summary; exit 1; }

connect() {  # connect PORT: a real TCP connect from the client namespace (nothing listens: it fails)
  ip netns exec "$client" "$python" -c '
import socket, sys
s = socket.socket(); s.settimeout(0.5)
try:
    s.connect(("10.98.0.1", int(sys.argv[1])))
except OSError:
    pass
' "$1"
}
connect 82
connect 81
line='<6>fwe-drop: IN=eth0 OUT= SRC=10.98.0.2 DST=10.98.0.1 LEN=[0-9]* PROTO=TCP SPT=[0-9]* DPT=81 SYN$'
check "a logged packet's line, with its level, in the daemon's log" 0 until_true 10 grep -q "$line" "$work/daemon.log"
check "a packet no log rule matched writes nothing" 1 grep -q "DPT=82" "$work/daemon.log"

# With no daemon running the record waits in the kernel; a daemon started later writes it, also when its
# own policy fails to load (it reads the buffer of the ruleset in the kernel from its start).
stop_process "$daemon_pid"
daemon_pid=""
connect 81
echo "chains: [" >"$work/broken.yaml"
JOURNAL_STREAM=$(stat -c %d:%i "$work/daemon.log") "$engine" --netns "$ns" --backend ebpf -f "$work/broken.yaml" \
  daemon 2>>"$work/daemon.log" &
daemon_pid=$!
logged() { [ "$(grep -c "DPT=81 SYN" "$work/daemon.log")" -ge 2 ]; }
check "a daemon whose first reload fails writes the line that waited" 0 until_true 10 logged
check "the ruleset stayed" 0 bash -c "\"$engine\" --netns $ns --backend ebpf status | grep -q 'IR '"
[ "$failures" -gt 0 ] && cat "$work/daemon.log"
summary
