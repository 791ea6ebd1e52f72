#!/usr/bin/env bash
# test_coexistence.sh FWENGINE SOURCE_DIR - the ebpf backend shares tc with other programs (issue #9):
# another program's classifiers on the same clsact hooks (one at fwengine's own priority with another
# handle, one behind it) and its clsact qdisc are byte-for-byte the same after apply, a second apply and
# flush; an interface where fwengine made the clsact itself has none left after flush. A packet fwengine
# lets through still meets the other program's classifiers behind ours (real ICMP from another
# namespace), as another table's chains in netfilter; a clsact fwengine made stays at flush while another
# program's filter is on it. Root; throwaway namespaces; exit 77 without them.
set -u
engine=$1 src=$2
source "$src/core/tests/cli/checks.sh"
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
"$engine" plugins | grep -q '^ebpf .*backend' || { echo "skipped: the ebpf backend is not built"; exit 77; }
ns=fwe-bpfco-$$ client=fwe-bpfcoc-$$
cleanup() {
  "$engine" --netns "$ns" --backend ebpf -q flush >/dev/null 2>&1
  ip netns del "$ns" 2>/dev/null
  ip netns del "$client" 2>/dev/null
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

# What ours lets through goes on to the other program's classifiers: one behind ours that drops.
ip netns add "$client"
ip -n "$ns" link set veth-peer netns "$client"
ip -n "$ns" addr add 10.98.0.1/30 dev veth-up
ip -n "$client" addr add 10.98.0.2/30 dev veth-peer
ip -n "$client" link set veth-peer up
cat >"$work/open.yaml" <<'EOF'
apiVersion: fwengine/v1
stages:
  input:
    - name: host
      endpoints:
        - {name: any, default: accept}
EOF
check "apply a policy that accepts everything" 0 fwe -f "$work/open.yaml" -q apply
ping_ns() { ip netns exec "$client" ping -c 1 -W 2 10.98.0.1 >/dev/null; }
check "ping passes with ours alone" 0 ping_ns
in_ns tc filter add dev veth-up ingress pref 5 bpf da bytecode '1,6 0 0 2,'  # TC_ACT_SHOT
check "a classifier behind ours still drops what ours accepted" 1 ping_ns
in_ns tc filter del dev veth-up ingress pref 5
check "and without it the ping passes again" 0 ping_ns

# A clsact fwengine made stays at flush while another program's filter is on it.
in_ns tc filter add dev eth1 egress pref 9 bpf bytecode '1,6 0 0 0,' classid 1:9
check "flush with another program's filter on a clsact fwengine made" 0 fwe -q flush
check "that clsact stays" 0 bash -c "ip netns exec $ns tc qdisc show dev eth1 | grep -q clsact"
check "with the other program's filter" 0 bash -c "ip netns exec $ns tc filter show dev eth1 egress | grep -q 'pref 9 bpf'"
check "and none of ours" 1 bash -c "ip netns exec $ns tc filter show dev eth1 egress | grep -q fwe_"

# Without --netns the pins go by the name of the namespace fwengine runs in (unshare -n: netns-<inode>,
# on the host's bpffs), never by the host's "default".
out=$(unshare -n sh -c 'ino=$(stat -L -c %i /proc/self/ns/net)
  "$1" --backend ebpf -q -f "$2" apply && test -d "/sys/fs/bpf/fwengine/netns-$ino" && echo "pinned as netns-$ino"
  "$1" --backend ebpf -q flush; rm -rf "/run/fwengine/netns-$ino"' sh "$engine" "$work/open.yaml" 2>&1)
check "without --netns the pins go by the namespace's name" 0 grep -q "^pinned as netns-[0-9]*$" <<<"$out"
summary
