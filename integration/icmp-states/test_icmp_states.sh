#!/usr/bin/env bash
# test_icmp_states.sh FWENGINE SOURCE_DIR BACKEND... - the conntrack state of ICMP that no connection
# precedes, with real packets: each kind the kernel's conntrack tells apart (icmp_probe.py: queries,
# their replies, router and neighbour discovery, multicast listener queries, redirects, errors about
# nothing sent) goes from a peer namespace to the host, where a policy accepts only state new, then
# only invalid, then only untracked; then one drops new and untracked in untracked-in, before
# conntrack, where every packet reads invalid (neighbour discovery too). Each policy is applied with
# every backend in turn (those not built are skipped), and each probe must reach the host's raw
# sockets exactly when trace, given no --state, delivers it (traced once per policy). Root; throwaway
# namespaces (removed on exit); exit 77 without them.
set -u
engine=$1 src=$2
shift 2
source "$src/core/tests/cli/checks.sh"
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
backends=()
for backend in "$@"; do
  if "$engine" plugins | grep -q "^$backend .*backend"; then backends+=("$backend"); else echo "SKIP $backend: not built"; fi
done
[ ${#backends[@]} -gt 0 ] || { echo "skipped: no backend built"; exit 77; }
python=/usr/bin/python3
[ -x $python ] || python=python3
ns=fwe-icmpst-$$ peer=fwe-icmpstp-$$
probe=$src/integration/icmp-states/icmp_probe.py
pids=()
cleanup() {
  local backend
  for backend in "${backends[@]}"; do "$engine" --netns "$ns" --backend "$backend" -q flush >/dev/null 2>&1; done
  remove_test_namespaces "$engine" "${backends[0]}" "$ns" "$peer"
}
trap cleanup EXIT
host_and_client "$ns" "$peer"
ip -n "$ns" addr add 10.74.0.1/24 dev eth0 && ip -n "$ns" addr add fd74::1/64 dev eth0 nodad
ip -n "$peer" addr add 10.74.0.2/24 dev eth0 && ip -n "$peer" addr add fd74::2/64 dev eth0 nodad
# Static neighbours: the policies below drop what address resolution needs.
mac() { ip -n "$1" -br link show eth0 | awk '{print $3}'; }
ip -n "$peer" neigh replace 10.74.0.1 lladdr "$(mac "$ns")" dev eth0 nud permanent
ip -n "$peer" neigh replace fd74::1 lladdr "$(mac "$ns")" dev eth0 nud permanent
ip -n "$ns" neigh replace 10.74.0.2 lladdr "$(mac "$peer")" dev eth0 nud permanent
ip -n "$ns" neigh replace fd74::2 lladdr "$(mac "$peer")" dev eth0 nud permanent
mapfile -t probes < <("$python" "$probe" list)  # "NUMBER FAMILY TYPE CODE"

round=0
for state in new invalid untracked before-conntrack; do
  policy=$work/$state.yaml
  if [ "$state" = before-conntrack ]; then
    rule="{ct-state: [new, untracked], action: drop}" stage=untracked-in default=accept
  else
    rule="{ct-state: $state, action: accept}" stage=input default=drop
  fi
  cat >"$policy" <<YAML
apiVersion: fwengine/v1
chains:
  by-state:
    - $rule
stages:
  $stage:
    - name: host
      endpoints:
        - {name: uplink, iif: eth0, chains: [by-state], default: $default}
YAML
  want=()  # by probe number: trace's verdict, the same for every backend
  for line in "${probes[@]}"; do
    read -r number family type code <<<"$line"
    if [ "$family" = 4 ]; then from=(--src 10.74.0.2 --dst 10.74.0.1 --proto icmp)
    else from=(--src fd74::2 --dst fd74::1 --proto icmpv6); fi
    want[number]=dropped
    "$engine" -f "$policy" trace --iif eth0 "${from[@]}" --icmp-type "$type" --icmp-code "$code" --json |
      grep -q '^  "verdict": "accept"' && want[number]=arrived
  done
  for backend in "${backends[@]}"; do
    round=$((round + 1))
    check "$backend, $state: apply" 0 "$engine" --netns "$ns" --backend "$backend" -f "$policy" apply || continue
    ip netns exec "$ns" "$python" "$probe" listen >"$work/got.$round" 2>&1 &
    listener=$!
    pids+=("$listener")
    until_true 5 grep -q ready "$work/got.$round" || echo "FAIL $backend, $state: the listener did not start"
    ip netns exec "$peer" "$python" "$probe" send "$round" 10.74.0.1 fd74::1
    sleep 0.5
    stop_process "$listener"
    pids=()  # ended: its pid may be another process's by exit
    for line in "${probes[@]}"; do
      read -r number family type code <<<"$line"
      # An echo reply with no entry is new in ebpf's conntrack (backends/ebpf/README.md: it may be the
      # reply of a flow another program's NAT rewrote), invalid in the kernel's and in trace.
      if [ "$backend" = ebpf ] && { [ "$family/$type" = 4/0 ] || [ "$family/$type" = 6/129 ]; }; then continue; fi
      got=dropped
      grep -qx "$round:$number" "$work/got.$round" && got=arrived
      equals "$backend, $state: IPv$family ICMP type $type code $code as trace has it" "$got" "${want[number]}"
    done
    check "$backend, $state: flush" 0 "$engine" --netns "$ns" --backend "$backend" flush
  done
done
summary
