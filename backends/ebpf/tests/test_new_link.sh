#!/usr/bin/env bash
# test_new_link.sh FWENGINE SOURCE_DIR BPFTOOL - the ebpf backend binds to the interfaces there are when it
# applies, so `fwengine daemon` binds what it enforces again when one appears or is renamed: an
# interface created after the daemon started is filtered (real TCP from another namespace, every
# verdict equal to trace's), a rule's name pattern follows a rename, the rule counters carry on, and
# the policy file, changed on disk meanwhile, is not read (only a reload reads it), a port put under a
# bridge leaves the filtering to the bridge, another writer's
# ruleset is left alone, a failed cover is shown by status until a good one; the record of the qdiscs
# fwengine made forgets the interfaces that went away. Root; throwaway namespaces; exit 77
# without.
set -u
engine=$1 src=$2 bpftool=$3
source "$src/core/tests/cli/checks.sh"
require_root_and_backend "$engine" ebpf
ns=fwe-bpfnl-$$ client=fwe-bpfnlc-$$
daemon_pid="" listener_pid="" holder_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && stop_process "$daemon_pid"
  [ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null
  "$engine" --netns "$ns" --backend ebpf -q flush >/dev/null 2>&1
  ip netns del "$ns" 2>/dev/null
  ip netns del "$client" 2>/dev/null
  rm -rf "/run/fwengine/$ns" "$work"
}
trap cleanup EXIT
ip netns add "$ns" || { echo "skipped: cannot create network namespaces"; exit 77; }
ip netns add "$client"
ip -n "$ns" link set lo up
ip -n "$client" link set lo up

# 80 open everywhere, 82 only from interfaces named eth*, the rest dropped.
cat >"$work/policy.yaml" <<'EOF'
apiVersion: fwengine/v1
chains:
  web:
    - {protocol: tcp, dport: 80, action: accept}
    - {iif: "eth+", protocol: tcp, dport: 82, action: accept}
stages:
  input:
    - name: host
      endpoints:
        - name: loopback
          iif: lo
          default: accept
        - name: any
          conntrack: accept-established-drop-invalid
          chains: [web]
          default: drop
EOF
ports="80 81 82"
ip netns exec "$ns" "$python" -c '
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        key.fileobj.accept()[0].close()
' $ports &
listener_pid=$!

fwe() { "$engine" --netns "$ns" --backend ebpf "$@"; }
hash=$("$engine" -f "$work/policy.yaml" --json check | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p')
cp "$work/policy.yaml" "$work/live.yaml"
"$engine" --netns "$ns" --backend ebpf --lock-timeout 1 -f "$work/live.yaml" daemon 2>"$work/daemon.log" &
daemon_pid=$!
applies() { grep -c '^fwengine: applied IR' "$work/daemon.log"; }
covers() { grep -c ': covered by IR' "$work/daemon.log"; }
at_least() { [ "$("$1")" -ge "$2" ]; }  # at_least COUNTER N
must() {  # must NAME SECONDS COUNTER N: waits for the daemon; without it the rest cannot be checked
  check "$1" 0 until_true "$2" at_least "$3" "$4" || { summary; exit 1; }
}
must "the daemon applies at start" 20 applies 1

# A new interface, made in the namespace itself (nothing in the root namespace changes).
ip -n "$ns" link add eth1 type veth peer name eth1c netns "$client"
ip -n "$ns" addr add 10.99.0.1/24 dev eth1
ip -n "$client" addr add 10.99.0.2/24 dev eth1c
ip -n "$ns" link set eth1 up
ip -n "$client" link set eth1c up
must "the daemon covers eth1 when it appears" 20 covers 1
check "it says so" 0 grep -q "new or changed interface(s) eth1: covered by IR ${hash:0:16}" "$work/daemon.log"
check "its programs are on eth1" 0 bash -c "ip netns exec $ns tc filter show dev eth1 ingress | grep -q fwe_"

probe() { tcp_probe "$client" 10.99.0.1 "$1"; }  # probe PORT: open or closed, from the client namespace
traced() {  # traced IFACE PORT: trace's verdict for the same packet
  "$engine" -f "$work/policy.yaml" --json trace --iif "$1" --src 10.99.0.2 --dst 10.99.0.1 --proto tcp \
    --dport "$2" | "$python" -c 'import json, sys; print("open" if json.load(sys.stdin)["open"] else "closed")'
}
hits() {  # the packets all rules counted
  fwe --json status | "$python" -c 'import json, sys; print(sum(c["packets"] for c in json.load(sys.stdin)["counters"]))'
}
# The first connection may meet the neighbour discovery: let it settle once.
probe 80 >/dev/null
for port in $ports; do
  equals "eth1, port $port: the kernel's verdict is trace's" "$(probe "$port")" "$(traced eth1 "$port")"
done
equals "eth1: trace says 82 is open (the name pattern)" "$(traced eth1 82)" open

# A rename: the same interface leaves the pattern eth+, so 82 closes once the daemon has applied again.
# The file the daemon read now opens 81 too, which it must not pick up: trace reads the original.
sed 's/dport: 80,/dport: [80, 81],/' "$work/policy.yaml" >"$work/live.yaml"
hits_before=$(hits)
ip -n "$ns" link set eth1 down
ip -n "$ns" link set eth1 name lan1
ip -n "$ns" link set lan1 up
must "the daemon covers lan1 when eth1 becomes lan1" 20 covers 2
check "it names the new name" 0 grep -q "new or changed interface(s) lan1: covered by IR ${hash:0:16}" "$work/daemon.log"
check "the rule counters carry on (the generation in effect stays)" 0 test "$(hits)" -ge "$hits_before" -a "$hits_before" -gt 0
probe 80 >/dev/null
for port in $ports; do
  equals "lan1, port $port: the kernel's verdict is trace's" "$(probe "$port")" "$(traced lan1 "$port")"
done
equals "lan1: trace says 82 is closed" "$(traced lan1 82)" closed
equals "lan1: 81 stays closed (the changed file was not read)" "$(probe 81)" closed

# Other news of a known interface (down, up) changes nothing: no apply.
ip -n "$ns" link set lan1 down
ip -n "$ns" link set lan1 up
sleep 1
equals "a link going down and up is not a new interface" "$(covers)" 2
equals "no reload either: the policy was read once" "$(applies)" 1

# An interface that goes away leaves fwe_hooks (where flush finds the qdiscs fwengine made): the daemon
# binds again when one goes (its index may be given to someone else's interface later; an XDP program
# on one moved to another namespace stops judging there).
hooked() {  # hooked IFINDEX: whether fwe_hooks holds it
  "$bpftool" map dump pinned "/sys/fs/bpf/fwengine/$ns/fwe_hooks" | grep -Eq "\"key\": $1,"
}
gone=$(ip -n "$ns" -o link show lan1 | cut -d: -f1)
check "fwe_hooks records the qdisc made on lan1" 0 hooked "$gone"
ip -n "$ns" link del lan1
must "the daemon binds again when lan1 goes" 20 covers 3
check "it says so" 0 grep -q "new or changed interface(s) lan1 (gone): covered by IR ${hash:0:16}" "$work/daemon.log"
check "lan1's index has left fwe_hooks" 1 hooked "$gone"
ip -n "$ns" link add eth2 type veth peer name eth2p
ip -n "$ns" link set eth2 up
must "the daemon covers eth2 when it appears" 20 covers 4
check "eth2's qdisc is recorded" 0 hooked "$(ip -n "$ns" -o link show eth2 | cut -d: -f1)"

# A cover that fails (another writer holds the lock past --lock-timeout) is shown by status, and the
# next good cover clears it.
flock "/run/fwengine/$ns/lock" sleep 4 &
holder_pid=$!
ip -n "$ns" link add eth4 type veth peer name eth4p
cover_failed() { fwe status 2>&1 | grep -Eq "not covered: new or changed interface\(s\) .*eth4"; }
check "a cover that fails is shown by status" 0 until_true 20 cover_failed
wait "$holder_pid"
holder_pid=""
ip -n "$ns" link add eth5 type veth peer name eth5p
must "the daemon covers eth5 once the lock is free" 20 covers 5
check "the good cover clears the failure" 1 cover_failed
# A port put under a bridge is judged as the bridge, as netfilter judges it: the daemon binds again when
# an interface changes master, and the programs leave the port.
ip -n "$ns" link add br0 type bridge
ip -n "$ns" link set br0 up
must "the daemon covers br0 when it appears" 20 covers 6
ip -n "$ns" link set eth5 master br0
must "the daemon covers eth5 again when it becomes a port of br0" 20 covers 7
ours_on() { ip netns exec "$ns" tc filter show dev "$1" ingress | grep -q fwe_; }
# On a port, only what judges the frames the bridge hands up on the port itself (fwe_port_in).
judged_as_itself() { ip netns exec "$ns" tc filter show dev "$1" ingress | grep -q fwe_ingress; }
check "our programs are on br0" 0 ours_on br0
check "and no longer on its port eth5" 1 judged_as_itself eth5
check "which keeps the judge of what stays on the port" 0 ours_on eth5
fwe status >"$work/status.txt" 2>&1
check "status finds no drift for the port" 1 grep -q "eth5" "$work/status.txt"
ip -n "$ns" link set eth5 nomaster
must "the daemon covers eth5 again when it leaves br0" 20 covers 8
check "our programs are back on eth5" 0 judged_as_itself eth5
# A port enslaved with no daemon to see it is drift until the next apply.
kill -STOP "$daemon_pid"
ip -n "$ns" link set eth5 master br0
check "status shows our programs left on a port as drift" 0 bash -c "'$engine' --netns '$ns' --backend ebpf status | grep -q 'eth5: fwe_ingress is attached to a port'"
kill -CONT "$daemon_pid"
must "the daemon covers it once it runs again" 20 covers 9
# The bridge's options decide which link-local groups stay on a port (fwe_ports): turning STP on keeps
# the Bridge Group Address there. (A port's own group_fwd_mask changes with no news at all: drift.)
no_port_drift() { ! fwe status 2>&1 | grep -q "bridge ports:"; }
ip -n "$ns" link set br0 type bridge stp_state 1
must "the daemon follows a change of the bridge's options" 20 covers 10
check "after which status finds no drift of the ports" 0 until_true 10 no_port_drift
# Another writer's ruleset (an apply by hand) is not replaced when an interface appears: it stays until
# the daemon's next reload.
sed 's/dport: 80,/dport: 8080,/' "$work/policy.yaml" >"$work/other.yaml"
other=$("$engine" -f "$work/other.yaml" --json check | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p')
check "another writer applies its own ruleset" 0 fwe -q -f "$work/other.yaml" apply
ip -n "$ns" link add eth3 type veth peer name eth3p
left_alone() { grep -Eq "new or changed interface\(s\) .*eth3.* not covered: the kernel holds IR ${other:0:16}" "$work/daemon.log"; }
check "the daemon leaves a new interface to the other writer's ruleset" 0 until_true 20 left_alone
holds_other() { fwe --json status | grep -q "\"hash\": \"$other\""; }
check "which stays in the kernel" 0 holds_other
kill "$daemon_pid"
stopped() { ! kill -0 "$daemon_pid" 2>/dev/null || [ -n "$(ps -o stat= -p "$daemon_pid" | grep Z)" ]; }
if until_true 10 stopped; then
  wait "$daemon_pid"
  equals "the daemon stops on SIGTERM with exit 0" "$?" 0
  daemon_pid=""
else
  equals "the daemon stops on SIGTERM" running stopped  # cleanup kills it
fi
summary
