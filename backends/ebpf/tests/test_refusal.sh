#!/usr/bin/env bash
# test_refusal.sh FWENGINE SOURCE_DIR BPFTOOL - the kernel refuses an apply half-way (issue #9, "Faults").
# 1. Ruleset A holds 140,001 CIDRs in the IPv4 set map; B's 140,000 fit alone but not beside A's in
#    the map both generations share (FWE_SET_CIDRS), so the kernel refuses a set element after B's
#    programs were loaded and part of its generation written.
# 2. C is refused on an interface made after A that has a classic BPF filter at fwengine's handle and
#    priority (bpf_tc_query cannot name it; the kernel refuses to create ours over it): after C's whole
#    generation was written and the programs attached to the interfaces before it.
# Each time apply exits 1 naming what was refused (the element, its set and the rule matching on it;
# the interface), and the kernel still holds exactly A: status hash and origins, the active
# generation, no CIDR of the refused policy left in the set map, A's verdict on a ping. Then C applies.
# Root; throwaway namespaces; exit 77 without them.
set -u
engine=$1 src=$2 bpftool=$3
source "$src/core/tests/cli/checks.sh"
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
"$engine" plugins | grep -q '^ebpf .*backend' || { echo "skipped: the ebpf backend is not built"; exit 77; }
ns=fwe-bpfref-$$ peer=fwe-bpfrefp-$$
cleanup() {
  "$engine" --netns "$ns" --backend ebpf -q flush >/dev/null 2>&1
  ip netns del "$ns" 2>/dev/null
  ip netns del "$peer" 2>/dev/null
  rm -rf "/run/fwengine/$ns" "$work"
}
trap cleanup EXIT
ip netns add "$ns" || { echo "skipped: cannot create network namespaces"; exit 77; }
ip netns add "$peer"
ip -n "$ns" link set lo up
ip -n "$ns" link add up0 type veth peer name up0p netns "$peer"
ip -n "$ns" addr add 10.9.0.1/24 dev up0
ip -n "$ns" link set up0 up
ip -n "$peer" addr add 10.9.0.2/24 dev up0p
ip -n "$peer" link set up0p up

# policy FILE COUNT [CIDR]: input on up0 accepts sources in set clients (CIDR, then COUNT /32s that no
# merge can shrink) and drops the rest. The rule is at FILE:4:7.
policy() {
  cat >"$1" <<EOF
apiVersion: fwengine/v1
chains:
  from-clients:
    - {src: clients, action: accept}
stages:
  input:
    - name: host
      endpoints:
        - name: uplink
          iif: up0
          chains: [from-clients]
          default: drop
sets:
  clients:
EOF
  [ -z "${3:-}" ] || echo "    - $3" >>"$1"
  awk -v n="$2" 'BEGIN { for (i = 0; i < n; i++)
    printf "    - 10.%d.%d.%d/32\n", 64 + int(i / 32768), int(i / 128) % 256, (i % 128) * 2 }' >>"$1"
}
policy "$work/a.yaml" 140000 10.9.0.2/32
policy "$work/b.yaml" 140000
policy "$work/c.yaml" 10
fwe() { "$engine" --netns "$ns" --backend ebpf "$@"; }
hash_of() { fwe -f "$1" check | sed -n 's/.*IR hash //p'; }
pins=/sys/fs/bpf/fwengine/$ns
active_gen() { "$bpftool" map lookup pinned "$pins/fwe_config" key 0 0 0 0 | grep active_gen; }
set4_size() { "$bpftool" map dump pinned "$pins/fwe_set4" | grep -c '"key"'; }
ping_peer() { ip netns exec "$peer" ping -c 1 -W 2 10.9.0.1; }

a_still_holds() {  # a_still_holds WHEN: the kernel holds exactly A; $status keeps `status -v`'s output
  check "status $1" 0 fwe -v status
  status=$out
  contains "status $1: A's hash" "backend ebpf: IR $hash_a"
  contains "status $1: A's rule and origin" "from-clients #0  $work/a.yaml:4:7"
  check "status $1: what fwengine applied last is what the kernel holds" 1 grep -q warning: <<<"$status"
  check "the generation in use $1 is A's" 0 test "$(active_gen)" = "$gen_a"
  check "the set map $1 holds A's CIDRs only (the half-written generation was freed)" 0 \
    test "$(set4_size)" = 140001
  check "A's verdict $1: the peer's ping still gets in" 0 ping_peer
}

check "apply A" 0 fwe -f "$work/a.yaml" -q apply
hash_a=$(hash_of "$work/a.yaml")
gen_a=$(active_gen)
check "A lets the peer's ping in" 0 ping_peer

check "apply B: the kernel refuses it (exit 1, runtime failure)" 1 fwe -f "$work/b.yaml" apply
contains "the refused element and its set" "of set clients"
contains "the rule that matches on the set" "b.yaml:4:7"
contains "the kernel's reason" "No space left on device"
contains "the map's size" "the set maps hold 262144 CIDRs of each family, both generations together"
contains "nothing changed" "the ruleset in effect is unchanged"

a_still_holds "after the set map's refusal"
check "no drift after the set map's refusal: programs attached on every interface" 1 grep -q drift: <<<"$status"

late() { ip netns exec "$ns" tc filter show dev late0 ingress; }
ip -n "$ns" link add late0 type veth peer name late0p
ip -n "$ns" link set late0 up
ip netns exec "$ns" tc qdisc add dev late0 clsact
ip netns exec "$ns" tc filter add dev late0 ingress pref 1 handle 0xfe bpf bytecode '1,6 0 0 0,' classid 1:1
classic=$(late)
check "apply C beside a classic filter at fwengine's handle: refused (exit 1)" 1 fwe -f "$work/c.yaml" apply
contains "the interface and the filter" "late0 already has a tc filter (classic BPF"
contains "nothing changed" "the ruleset in effect is unchanged"
check "the classic filter is unchanged" 0 test "$(late)" = "$classic"
a_still_holds "after the refused filter"
ip -n "$ns" link del late0

check "apply C (B with 10 CIDRs) after both refusals" 0 fwe -f "$work/c.yaml" -q apply
check "status after C" 0 fwe status
contains "status: C's hash" "backend ebpf: IR $(hash_of "$work/c.yaml")"
check "C's verdict: the peer (not in C's set) is dropped" 1 ping_peer
summary
