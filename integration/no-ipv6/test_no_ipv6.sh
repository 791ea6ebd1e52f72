#!/usr/bin/env bash
# test_no_ipv6.sh FWENGINE SOURCE_DIR BACKEND - a host booted with ipv6.disable=1. Every fwengine call
# runs as on such a kernel: AF_INET6 sockets fail with EAFNOSUPPORT (without_ipv6.py) and
# the ipv6 module's `disable` reads 1 and /proc/sys/net/ipv6 is empty (tmpfs mounts, in a mount namespace
# of the call's own; without them, a sandbox on a kernel with IPv6, iptables fails as it must). A policy with
# IPv6 parts and an rpf check applies (iptables says it loads IPv4 alone and loads nothing into
# ip6tables), reads back without drift, gives real IPv4 TCP the verdicts trace gives, takes a change,
# and flushes to nothing. Root; throwaway namespaces (removed on exit); exit 77 without them.
set -u
engine=$1 src=$2 backend=$3
source "$src/core/tests/cli/checks.sh"
require_root_and_backend "$engine" "$backend"
ns=fwe-noip6-$$ peer=fwe-noip6p-$$
pids=()
trap 'remove_test_namespaces "$engine" "$backend" "$ns" "$peer"' EXIT
host_and_client "$ns" "$peer"
ip -n "$ns" addr add 10.73.0.1/24 dev eth0
ip -n "$peer" addr add 10.73.0.2/24 dev eth0
ip netns exec "$ns" sysctl -qw net.ipv4.conf.lo.forwarding=1  # ebpf's rpf check needs it
policy=$src/integration/no-ipv6/policy.yaml
sed 's/dport: 80,/dport: [80, 8080],/' "$policy" >"$work/changed.yaml"

# fwengine ARG...: in namespace $ns, as on a kernel booted with ipv6.disable=1, in a mount namespace of
# its own (ip netns exec's): the ipv6 module's parameter `disable` reads 1, and IPv6's sysctls are gone.
# The tmpfs over /proc/sys/net/ipv6 is mounted from inside $ns: /proc/sys/net shows the reader's
# namespace, and a mount seen from another namespace's view would not hide $ns's.
without_ipv6() {
  ip netns exec "$ns" sh -c 'mount -t tmpfs none /proc/sys/net/ipv6 &&
    mount -t tmpfs none /sys/module/ipv6/parameters && echo 1 >/sys/module/ipv6/parameters/disable &&
    exec "$@"' sh \
    "$python" "$src/integration/no-ipv6/without_ipv6.py" "$engine" --netns "$ns" --backend "$backend" "$@"
}
without_ipv6 plugins >/dev/null
[ $? = 77 ] && { echo "skipped: cannot set a seccomp filter"; exit 77; }

# Each port's real verdict against trace's, from the peer.
probe_ports() {  # probe_ports POLICY NAME
  local port want got
  for port in 80 443 8080; do
    want=$("$engine" -f "$1" trace --iif eth0 --src 10.73.0.2 --dst 10.73.0.1 --proto tcp --dport "$port" \
      --json | "$python" -c 'import json, sys; print(json.load(sys.stdin)["verdict"])')
    [ "$want" = accept ] && want=open || want=closed
    got=$(tcp_probe "$peer" 10.73.0.1 "$port")
    equals "$2: tcp port $port as trace has it" "$got" "$want"
  done
}
# A sandbox that refuses IPv6 sockets on a kernel that has IPv6 is no kernel without IPv6: there the
# apply fails (ip6tables cannot start) rather than leave IPv6 unfiltered, and loads nothing.
if [ "$backend" = iptables ]; then
  check "sandbox: apply fails" 1 "$python" "$src/integration/no-ipv6/without_ipv6.py" \
    "$engine" --netns "$ns" --backend iptables -f "$policy" apply
  contains "sandbox: ip6tables is named" "ip6tables-legacy-restore failed"
  check "sandbox: IPv4 untouched" 0 ip netns exec "$ns" iptables-legacy-save
  equals "sandbox: no fwe chain" "$(grep -c fwe <<<"$out")" 0
fi
for port in 80 443 8080; do tcp_listen "$ns" "$port"; done
until_true 5 test "$(tcp_probe "$peer" 10.73.0.1 8080)" = open

check "apply" 0 without_ipv6 -f "$policy" apply
[ "$backend" = iptables ] && contains "apply: IPv4 alone" "only the IPv4 rules are loaded"
check "diff: no drift" 0 without_ipv6 -f "$policy" diff
contains "diff: no difference" "no difference"
check "ip6tables: nothing loaded" 0 ip netns exec "$ns" ip6tables-legacy-save
equals "ip6tables: no fwe chain" "$(grep -c fwe <<<"$out")" 0
probe_ports "$policy" "first apply"
check "apply a change" 0 without_ipv6 -f "$work/changed.yaml" apply
check "diff after the change" 0 without_ipv6 -f "$work/changed.yaml" diff
probe_ports "$work/changed.yaml" "after the change"
check "flush" 0 without_ipv6 flush
check "status after flush" 0 without_ipv6 status --json
equals "status after flush: nothing of ours" \
  "$("$python" -c 'import json, sys; print(json.loads(sys.argv[1])["present"])' "$out")" False
summary
