#!/usr/bin/env bash
# test_vlan.sh FWENGINE SOURCE_DIR - VLAN devices and links without an Ethernet header, with real TCP
# between two throwaway namespaces, on ebpf and nft, each verdict equal to trace's. The kernel takes a
# VLAN's tag off before its parent's tc hook and hands the frame to the VLAN device next: netfilter sees
# it only there, so the ebpf programs on the parent must leave it to the VLAN device's (they judged it
# there as coming in on the parent, where this policy drops everything). The same on the way out. An IP
# tunnel has no Ethernet header at tc: it gets no program (apply warns), rather than verdicts read
# from the wrong bytes. Root; exit 77 without.
set -u
engine=$1 src=$2
source "$src/core/tests/cli/checks.sh"
require_root_and_backend "$engine" ebpf
ns=fwe-vlan-$$ client=fwe-vlanc-$$
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for backend in ebpf nft; do "$engine" --netns "$ns" --backend "$backend" -q flush >/dev/null 2>&1; done
  ip netns del "$ns" 2>/dev/null
  ip netns del "$client" 2>/dev/null
  rm -rf "/run/fwengine/$ns" "$work"
}
trap cleanup EXIT
host_and_client "$ns" "$client"
vlans=yes
for n in "$ns" "$client"; do
  ip -n "$n" link add link eth0 name eth0.100 type vlan id 100 2>/dev/null || vlans=""
  ip -n "$n" link set eth0.100 up 2>/dev/null
done
ip -n "$ns" addr add 10.0.0.1/24 dev eth0
ip -n "$client" addr add 10.0.0.2/24 dev eth0

# Port 80 is open on the VLAN only; the host may connect out over the VLAN only.
cat >"$work/policy.yaml" <<'EOF'
apiVersion: fwengine/v1
chains:
  web:
    - {protocol: tcp, dport: 80, action: accept}
stages:
  input:
    - endpoints:
        - {name: loopback, iif: lo, default: accept}
        - {name: vlan, iif: eth0.100, conntrack: accept-established, chains: [web], default: drop}
        - {name: parent, iif: eth0, default: drop}
  output:
    - endpoints:
        - {name: vlan, oif: eth0.100, default: accept}
        - {name: parent, oif: eth0, default: drop}
EOF
tcp_listen "$ns" 80
tcp_listen "$client" 8080
traced() {  # traced ARGS...: trace's verdict, open or closed
  "$engine" -f "$work/policy.yaml" trace "$@" | sed -n 's/^verdict: //p'
}
if [ -n "$vlans" ]; then
  ip -n "$ns" addr add 10.100.0.1/24 dev eth0.100
  ip -n "$client" addr add 10.100.0.2/24 dev eth0.100
  sleep 0.3
  # The probes: in over the VLAN, in over the parent, out over the VLAN, out over the parent.
  declare -A want
  want[in-vlan]=$(traced --iif eth0.100 --src 10.100.0.2 --dst 10.100.0.1 --proto tcp --dport 80)
  want[in-parent]=$(traced --iif eth0 --src 10.0.0.2 --dst 10.0.0.1 --proto tcp --dport 80)
  want[out-vlan]=$(traced --oif eth0.100 --src 10.100.0.1 --dst 10.100.0.2 --proto tcp --dport 8080)
  want[out-parent]=$(traced --oif eth0 --src 10.0.0.1 --dst 10.0.0.2 --proto tcp --dport 8080)
  equals "trace: in over the VLAN" "${want[in-vlan]}" open
  equals "trace: in over the parent" "${want[in-parent]}" closed
  equals "trace: out over the VLAN" "${want[out-vlan]}" open
  equals "trace: out over the parent" "${want[out-parent]}" closed
  for backend in nft ebpf; do
    for other in nft ebpf; do "$engine" --netns "$ns" --backend "$other" -q flush >/dev/null 2>&1; done
    check "$backend: apply" 0 "$engine" --netns "$ns" --backend "$backend" -q -f "$work/policy.yaml" apply
    equals "$backend: in over the VLAN" "$(tcp_probe "$client" 10.100.0.1 80)" "${want[in-vlan]}"
    equals "$backend: in over the parent" "$(tcp_probe "$client" 10.0.0.1 80)" "${want[in-parent]}"
    equals "$backend: out over the VLAN" "$(tcp_probe "$ns" 10.100.0.2 8080)" "${want[out-vlan]}"
    equals "$backend: out over the parent" "$(tcp_probe "$ns" 10.0.0.2 8080)" "${want[out-parent]}"
  done
else
  echo "skipped: VLAN devices (this kernel has no 8021q)"
fi

# A link without an Ethernet header (a tun device, as VPNs use: ARPHRD_NONE) gets no program, and apply
# says so.
if ip -n "$ns" tuntap add mode tun name fwe-tun 2>/dev/null; then
  ip -n "$ns" link set fwe-tun up
  check "ebpf: apply with a tunnel" 0 "$engine" --netns "$ns" --backend ebpf -f "$work/policy.yaml" apply
  contains "ebpf: apply warns of the tunnel" "interface fwe-tun has no Ethernet header"
  equals "ebpf: no program on the tunnel" \
    "$(ip netns exec "$ns" tc filter show dev fwe-tun ingress 2>/dev/null | grep -c fwe_)" 0
  check "ebpf: status finds no drift" 0 "$engine" --netns "$ns" --backend ebpf status
  if grep -q "drift" <<<"$out"; then equals "ebpf: no drift" "$out" ""; fi
fi
[ "$passes" = 0 ] && [ "$failures" = 0 ] && { echo "skipped: neither VLAN nor tun devices here"; exit 77; }
summary
