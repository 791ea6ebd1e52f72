#!/usr/bin/env bash
# test_coexistence.sh FWENGINE SOURCE_DIR - the ebpf backend shares tc with other programs (issue #9):
# another program's classifiers on the same clsact hooks (one at fwengine's own priority with another
# handle, one behind it) and its clsact qdisc are byte-for-byte the same after apply, a second apply and
# flush; an interface where fwengine made the clsact itself has none left after flush. Root; a
# throwaway namespace; exit 77 without them.
set -u
engine=$1 src=$2
source "$src/core/tests/cli/checks.sh"
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
"$engine" plugins | grep -q '^ebpf .*backend' || { echo "skipped: the ebpf backend is not built"; exit 77; }
ns=fwe-bpfco-$$
cleanup() {
  "$engine" --netns "$ns" --backend ebpf -q flush >/dev/null 2>&1
  ip netns del "$ns" 2>/dev/null
  rm -rf "/run/fwengine/$ns" "$work"
}
trap cleanup EXIT
ip netns add "$ns" || { echo "skipped: cannot create network namespaces"; exit 77; }
in_ns() { ip netns exec "$ns" "$@"; }
ip -n "$ns" link set lo up
ip -n "$ns" link add veth-up type veth peer name veth-peer
ip -n "$ns" link add eth1 type veth peer name eth1-peer
ip -n "$ns" link set veth-up up
ip -n "$ns" link set eth1 up

# Another program's classifiers: classic BPF that needs no object file or extra kernel module.
in_ns tc qdisc add dev veth-up clsact
for hook in ingress egress; do
  in_ns tc filter add dev veth-up "$hook" pref 1 bpf bytecode '1,6 0 0 0,' classid 1:1
  in_ns tc filter add dev veth-up "$hook" pref 7 bpf bytecode '1,6 0 0 65535,' classid 1:2
done
foreign() {  # what the other program has: its filters (not ours, by name) and the qdiscs
  for hook in ingress egress; do in_ns tc filter show dev veth-up "$hook" | grep -v 'fwe_'; done
  in_ns tc qdisc show dev veth-up
}
before=$(foreign)
fwe() { "$engine" --netns "$ns" --backend ebpf "$@"; }

check "apply" 0 fwe -f "$src/fixtures/yaml/example/policy.yaml" -q apply
check "the foreign filters and qdisc are unchanged after apply" 0 test "$(foreign)" = "$before"
check "ours is attached beside them" 0 bash -c "ip netns exec $ns tc filter show dev veth-up ingress | grep -q fwe_"
check "ours is on eth1 with a clsact of its own" 0 bash -c "ip netns exec $ns tc filter show dev eth1 ingress | grep -q fwe_"
check "a second apply" 0 fwe -f "$src/fixtures/yaml/ipv6/policy.yaml" -q apply
check "the foreign filters and qdisc are unchanged after a second apply" 0 test "$(foreign)" = "$before"
check "flush" 0 fwe -q flush
check "the foreign filters and qdisc are unchanged after flush" 0 test "$(foreign)" = "$before"
check "nothing of ours is left on the shared hooks" 1 bash -c "ip netns exec $ns tc filter show dev veth-up ingress | grep -q fwe_"
check "no clsact is left where fwengine made it" 1 bash -c "ip netns exec $ns tc qdisc show dev eth1 | grep -q clsact"
summary
