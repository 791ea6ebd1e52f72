#!/usr/bin/env bash
# test_fresh_bpffs.sh FWENGINE SOURCE_DIR - a host that never mounted bpffs: the ebpf backend mounts one on
# /sys/fs/bpf itself (mode 0700), pins there, reads its ruleset back from it and flushes it; a real ping
# from a peer namespace meets its programs (dropped, as trace says) and passes once they are flushed.
# Runs itself again in mount, PID and network namespaces of its own (unshare) with a fresh /sys, where
# /sys/fs/bpf holds no bpffs and no process outside them can be asked for one, so that everything it
# mounts and attaches goes with them. Root; exit 77 without what it needs.
set -u
engine=$1 src=$2
source "$src/core/tests/cli/checks.sh"
if [ "${3:-}" != inside ]; then
  [ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
  "$engine" plugins | grep -q '^ebpf .*backend' || { echo "skipped: the ebpf backend is not built"; exit 77; }
  # Private mounts: nothing done inside reaches the host's mount table.
  unshare --mount --propagation private --pid --fork --kill-child --mount-proc --net true ||
    { echo "skipped: cannot make mount, PID and network namespaces"; exit 77; }
  unshare --mount --propagation private --pid --fork --kill-child --mount-proc --net "$0" "$engine" "$src" inside
  exit $?
fi
# Only as PID 1 of the namespaces made above: what follows mounts over /run and /sys.
[ $$ = 1 ] || { echo "FAIL: the inside part runs only in the namespaces the test makes"; exit 1; }

# A /run of our own: pid 1 here shares our network namespace, so fwengine takes it for the host's
# ("default") and keeps its state in /run/fwengine/default, which must not be the host's.
mount -t tmpfs -o mode=0755 tmpfs /run || { echo "skipped: cannot mount a tmpfs on /run here"; exit 77; }
# A /sys of this network namespace, as `ip netns exec` makes one: no bpffs on it.
mount -t sysfs sysfs /sys || { echo "skipped: cannot mount a sysfs on /sys here"; exit 77; }
equals "no bpffs on /sys/fs/bpf before the apply" "$(stat -f -c %T /sys/fs/bpf)" sysfs

# The peer's namespace is named on our /run, so it goes with our mount namespace.
ip netns add peer
ip link set lo up
ip link add up0 type veth peer name up0p netns peer
ip addr add 10.9.0.1/24 dev up0
ip link set up0 up
ip -n peer addr add 10.9.0.2/24 dev up0p
ip -n peer link set up0p up
cat >"$work/policy.yaml" <<'EOF'
apiVersion: fwengine/v1
stages:
  input:
    - name: host
      endpoints:
        - {name: loopback, iif: lo, default: accept}
        - {name: uplink, iif: up0, default: drop}
EOF

check "apply mounts a bpffs and pins there" 0 "$engine" --backend ebpf -f "$work/policy.yaml" apply
equals "a bpffs is on /sys/fs/bpf" "$(stat -f -c %T /sys/fs/bpf)" bpf_fs
equals "only root may enter it (and sticky, as every bpffs root)" "$(stat -c %a /sys/fs/bpf)" 1700
check "the pins are in it" 0 test -d /sys/fs/bpf/fwengine/default
check "status reads the ruleset back" 0 "$engine" --backend ebpf status
contains "status names the IR it applied" "IR "
if grep -q drift <<<"$out"; then equals "no drift" "$out" ""; fi
# From the peer, in over up0, which drops.
trace=$("$engine" -f "$work/policy.yaml" trace --iif up0 --src 10.9.0.2 --dst 10.9.0.1 --proto icmp |
  sed -n 's/^verdict: //p')
equals "trace: a ping in over up0 is closed" "$trace" closed
check "the programs drop a ping in over up0" 1 ip netns exec peer ping -c 1 -W 1 10.9.0.1
check "flush" 0 "$engine" --backend ebpf -q flush
check "and the pins are gone" 1 test -e /sys/fs/bpf/fwengine/default/fwe_hooks
check "without them the ping passes" 0 ip netns exec peer ping -c 1 -W 1 10.9.0.1
summary
