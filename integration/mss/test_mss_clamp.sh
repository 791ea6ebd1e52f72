#!/usr/bin/env bash
# test_mss_clamp.sh FWENGINE SOURCE_DIR BACKEND - tcp-mss-clamp with real traffic: a client in namespace
# a connects through h (which forwards, and where fwengine applies) to a server in b; the MSS each end
# ends up with (TCP_MAXSEG) is above 1000 without a policy and at most 1000 with one that clamps
# forwarded SYNs to 1000, on IPv4 and IPv6. A clamp to the path MTU is applied and read back without
# drift. Root; throwaway namespaces (removed on exit); exit 77 without them.
set -u
engine=$1 src=$2 backend=$3
source "$src/core/tests/cli/checks.sh"
require_root_and_backend "$engine" "$backend"
a=fwe-mss-$$-a h=fwe-mss-$$-h b=fwe-mss-$$-b
cleanup() {
  "$engine" --netns "$h" --backend "$backend" -q flush >/dev/null 2>&1
  for ns in "$a" "$h" "$b"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "/run/fwengine/$h" "$work"
}
trap cleanup EXIT
for ns in "$a" "$h" "$b"; do
  ip netns add "$ns" || { echo "skipped: cannot create network namespaces"; exit 77; }
  ip -n "$ns" link set lo up
done
ip -n "$h" link add to-a type veth peer name eth0 netns "$a"
ip -n "$h" link add to-b type veth peer name eth0 netns "$b"
ip -n "$h" addr add 10.71.1.1/24 dev to-a && ip -n "$h" addr add fd71:1::1/64 dev to-a nodad
ip -n "$h" addr add 10.71.2.1/24 dev to-b && ip -n "$h" addr add fd71:2::1/64 dev to-b nodad
ip -n "$a" addr add 10.71.1.2/24 dev eth0 && ip -n "$a" addr add fd71:1::2/64 dev eth0 nodad
ip -n "$b" addr add 10.71.2.2/24 dev eth0 && ip -n "$b" addr add fd71:2::2/64 dev eth0 nodad
for pair in "$h to-a" "$h to-b" "$a eth0" "$b eth0"; do set -- $pair; ip -n "$1" link set "$2" up; done
ip -n "$a" route add default via 10.71.1.1 && ip -n "$a" route add default via fd71:1::1
ip -n "$b" route add default via 10.71.2.1 && ip -n "$b" route add default via fd71:2::1
ip netns exec "$h" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

# One connection: prints "CLIENT_MSS SERVER_MSS".
maxseg() {  # maxseg SERVER_ADDRESS
  ip netns exec "$b" $python - "$1" <<'PY' >"$work/server" 2>&1 &
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
server = socket.socket(family, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 8000))
server.listen(1)
print("listening", flush=True)
server.settimeout(30)
connection, _ = server.accept()
print(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG), flush=True)
PY
  local server_pid=$! i
  # Up to 30 s: on a loaded CI host the server's Python has taken longer than 5 s to start listening.
  for i in $(seq 300); do grep -q listening "$work/server" && break; sleep 0.1; done
  local client
  client=$(ip netns exec "$a" $python - "$1" <<'PY'
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
client = socket.create_connection((sys.argv[1], 8000), timeout=10)
print(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
PY
)
  wait "$server_pid"
  echo "$client $(tail -n 1 "$work/server")"
}

cat >"$work/clamp.yaml" <<'YAML'
apiVersion: fwengine/v1
chains:
  clamp:
  - {action: tcp-mss-clamp, mss: 1000}
stages:
  forward:
  - endpoints:
    - {name: all, chains: [clamp], default: accept}
YAML
sed 's/, mss: 1000//' "$work/clamp.yaml" >"$work/pmtu.yaml"
fwe() { "$engine" --netns "$h" --backend "$backend" "$@"; }

for server in 10.71.2.2 fd71:2::2; do
  read -r client_mss server_mss <<<"$(maxseg $server)"
  equals "no policy, $server: both ends keep their MSS ($client_mss, $server_mss)" \
    "$([ "${client_mss:-0}" -gt 1000 ] && [ "${server_mss:-0}" -gt 1000 ] && echo yes)" yes
done
check "apply the clamp to 1000" 0 fwe -q -f "$work/clamp.yaml" apply
for server in 10.71.2.2 fd71:2::2; do
  read -r client_mss server_mss <<<"$(maxseg $server)"
  equals "clamped, $server: both ends at most 1000 ($client_mss, $server_mss)" \
    "$([ "${client_mss:-0}" -gt 0 ] && [ "$client_mss" -le 1000 ] && [ "${server_mss:-0}" -gt 0 ] &&
      [ "$server_mss" -le 1000 ] && echo yes)" yes
done
check "apply the clamp to the path MTU" 0 fwe -q -f "$work/pmtu.yaml" apply
equals "no drift after the path-MTU clamp" \
  "$(fwe --json status | $python -c 'import json,sys; print(len(json.load(sys.stdin)["drift"]))')" 0
read -r client_mss server_mss <<<"$(maxseg 10.71.2.2)"
equals "path-MTU clamp on equal MTUs changes nothing ($client_mss, $server_mss)" \
  "$([ "${client_mss:-0}" -gt 1000 ] && echo yes)" yes

# firewalld: a zone that forwards within itself (<forward/>) clamps those connections too, as firewalld
# puts the rich rule's clamp before the zone's intra-zone accept. Its forward chain accepts established
# packets first, so the SYN-ACK keeps the server's MSS: only the server's side is clamped.
mkdir -p "$work/firewalld/zones"
echo DefaultZone=internal >"$work/firewalld/firewalld.conf"
cat >"$work/firewalld/zones/internal.xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<zone>
  <interface name="to-a"/>
  <interface name="to-b"/>
  <forward/>
  <rule><tcp-mss-clamp value="1000"/></rule>
</zone>
XML
check "apply a firewalld zone that forwards within itself and clamps" 0 fwe -q --frontend firewalld \
  --firewalld-defaults "$src/tests/bad-input/firewalld/_stock" -f "$work/firewalld" apply
for server in 10.71.2.2 fd71:2::2; do
  read -r client_mss server_mss <<<"$(maxseg $server)"
  equals "firewalld zone, $server: the server's end at most 1000 ($client_mss, $server_mss)" \
    "$([ "${server_mss:-0}" -gt 0 ] && [ "$server_mss" -le 1000 ] && echo yes)" yes
done
summary
