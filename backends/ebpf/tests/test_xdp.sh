#!/usr/bin/env bash
# test_xdp.sh FWENGINE SOURCE_DIR - the backend option xdp=eth0 with real traffic between two throwaway
# namespaces over a veth pair (whose driver runs XDP natively): what the untracked-in stage drops is
# dropped by fwe_xdp alone (the test takes fwe_ingress off to show it), everything else reaches tc and
# the host, each verdict equal to trace's; every packet is counted once; a MAC address changed since the
# apply is drift; the daemon binds again after it, and when an interface moves to another namespace
# (which keeps its XDP hook); flush takes fwe_xdp off. Root; exit 77 without.
set -u
engine=$1 src=$2
source "$src/core/tests/cli/checks.sh"
require_root_and_backend "$engine" ebpf
ns=fwe-xdp-$$ client=fwe-xdpc-$$ third=fwe-xdpt-$$
pids=() daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && stop_process "$daemon_pid"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  "$engine" --netns "$ns" --backend ebpf -q flush >/dev/null 2>&1
  ip netns del "$ns" 2>/dev/null
  ip netns del "$client" 2>/dev/null
  ip netns del "$third" 2>/dev/null
  rm -rf "/run/fwengine/$ns" "$work"
}
trap cleanup EXIT
host_and_client "$ns" "$client"
ip -n "$ns" addr add 10.0.0.1/24 dev eth0
ip -n "$client" addr add 10.0.0.2/24 dev eth0
ip -n "$client" addr add 10.0.0.66/24 dev eth0

# A blocklisted source and a closed port in untracked-in; ICMP goes untracked (counted, then passed on).
cat >"$work/policy.yaml" <<'EOF'
apiVersion: fwengine/v1
chains:
  raw:
    - {src: [10.0.0.66/32, 10.9.0.66/32], action: drop}
    - {protocol: tcp, dport: 9999, action: drop}
    - {protocol: icmp, action: notrack}
stages:
  untracked-in:
    - endpoints:
        - {name: wire, iif: eth+, chains: [raw], default: continue}
  input:
    - endpoints:
        - {name: wire, iif: eth+, default: accept}
EOF
fwe() { "$engine" --netns "$ns" --backend ebpf --backend-option xdp=eth0 -f "$work/policy.yaml" "$@"; }
tcp_listen "$ns" 8080
tcp_listen "$ns" 9999
connect() { tcp_probe "$client" 10.0.0.1 "$2" "$1"; }  # connect SOURCE PORT: from the client to the host
traced() {  # traced SOURCE PORT: trace's verdict, open or closed
  "$engine" -f "$work/policy.yaml" trace --iif eth0 --src "$1" --dst 10.0.0.1 --proto tcp --dport "$2" |
    sed -n 's/^verdict: //p'
}
hits() {  # hits RULE: the packets status counts for chain raw's rule #RULE
  fwe status | awk -v rule="#$1" '$3 == "raw" && $4 == rule { print $1 }'
}
probes() {  # probes WHEN: every probe's real verdict against trace's
  local when=$1 source port
  for probe in "10.0.0.2 8080" "10.0.0.2 9999" "10.0.0.66 8080"; do
    read -r source port <<<"$probe"
    equals "$source to port $port ($when)" "$(connect "$source" "$port")" "$(traced "$source" "$port")"
  done
}

check "apply with xdp=eth0" 0 fwe apply
out=$(ip -n "$ns" link show eth0)
contains "fwe_xdp is on eth0" "name fwe_xdp"
check "status shows the option" 0 fwe status
contains "status shows the option" "xdp=eth0"
probes "with both programs"
equals "trace: 10.0.0.66 is dropped" "$(traced 10.0.0.66 8080)" closed
equals "trace: port 9999 is dropped" "$(traced 10.0.0.2 9999)" closed

# fwe_xdp alone: without fwe_ingress the drops still happen, and the rest still passes.
ip netns exec "$ns" tc filter del dev eth0 ingress pref 1 handle 0xfe bpf
check "status tells fwe_ingress is gone" 0 fwe status
contains "status tells fwe_ingress is gone" "fwe_ingress is not attached"
before66=$(hits 0) before9999=$(hits 1)
probes "with fwe_xdp alone"
# A connect retries its SYN; each one that fwe_xdp dropped counts once.
equals "fwe_xdp's drops of 10.0.0.66 count" "$(($(hits 0) > before66))" 1
equals "fwe_xdp's drops of port 9999 count" "$(($(hits 1) > before9999))" 1

# Both again: a packet fwe_xdp passes on is counted once, by fwe_ingress.
check "apply again" 0 fwe apply
icmp_before=$(hits 2)
ip netns exec "$client" ping -c 5 -i 0.2 -W 1 -I 10.0.0.2 10.0.0.1 >/dev/null
equals "5 echo requests count 5 at the notrack rule" "$(( $(hits 2) - icmp_before ))" 5

# The MAC address changed since the apply: fwe_xdp would judge frames to the old one.
ip -n "$ns" link set eth0 address 02:00:00:00:10:01
check "status after a MAC change" 0 fwe status
contains "status tells the MAC address changed" "its MAC address changed since the last apply"
ip -n "$client" neigh flush dev eth0  # the client learns the new address
check "apply after the MAC change" 0 fwe apply
check "status finds no drift" 0 fwe status
equals "no drift" "$(grep -c drift <<<"$out")" 0
probes "after the MAC change"

# The daemon follows a MAC address change: it binds its ruleset again, and fwe_xdp knows the new one.
"$engine" --netns "$ns" --backend ebpf --backend-option xdp=eth+ -f "$work/policy.yaml" daemon 2>"$work/daemon.log" &
daemon_pid=$!
applies() { grep -c '^fwengine: applied IR' "$work/daemon.log"; }
covers() { grep -c ': covered by IR' "$work/daemon.log"; }
at_least() { [ "$("$1")" -ge "$2" ]; }  # at_least COUNTER N
check "the daemon applies at start" 0 until_true 20 at_least applies 1
ip -n "$ns" link set eth0 address 02:00:00:00:10:02
check "the daemon binds again after the MAC change" 0 until_true 20 at_least covers 1
check "status after the daemon's rebind" 0 fwe status
equals "no drift after the daemon's rebind" "$(grep -c drift <<<"$out")" 0
ip -n "$client" neigh flush dev eth0
probes "after the daemon's rebind"

# An interface moved to another namespace keeps its XDP hook: the daemon binds again when it goes, which
# drops its fwe_xdp_links entry, so that there fwe_xdp judges nothing by this namespace's rules.
ip netns add "$third"
ip -n "$third" link set lo up
ip -n "$ns" link add eth9 type veth peer name eth9 netns "$client"
ip -n "$ns" link set eth9 up
ip -n "$client" link set eth9 up
ip -n "$client" addr add 10.9.0.66/24 dev eth9
covered() { grep -Eq "interface\(s\) (.*, )?$1(, .*)?: covered by IR" "$work/daemon.log"; }  # covered NAME
check "the daemon covers eth9 when it appears" 0 until_true 20 covered eth9
out=$(ip -n "$ns" link show eth9)
contains "fwe_xdp is on eth9" "name fwe_xdp"
ip -n "$ns" link set eth9 netns "$third"
check "the daemon binds again when eth9 goes" 0 until_true 20 covered "eth9 \(gone\)"
ip -n "$third" link set eth9 up
ip -n "$third" addr add 10.9.0.1/24 dev eth9
tcp_listen "$third" 8080
sleep 0.3
equals "a source this namespace blocks reaches eth9 in the other one" "$(tcp_probe "$client" 10.9.0.1 8080 10.9.0.66)" open
stop_process "$daemon_pid"
daemon_pid=""

check "flush" 0 fwe flush
equals "no XDP program is left" "$(ip -n "$ns" link show eth0 | grep -c prog/xdp)" 0
summary
