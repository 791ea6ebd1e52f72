#!/usr/bin/env bash
# test_ftp_helper.sh FWENGINE SOURCE_DIR BACKEND - ct-helper with real traffic: a client in namespace c
# opens a passive FTP session to a server on h, where fwengine lets in only port 21 and what conntrack
# calls established or related. The data connection (to the port the server's 227/229 reply names)
# opens only while the policy assigns the ftp helper to port 21 - in input on nft, which assigns
# helpers after conntrack, in untracked-in on iptables, which assigns them before - on IPv4 and IPv6.
# Root; throwaway namespaces (removed on exit); exit 77 without them.
set -u
engine=$1 src=$2 backend=$3
source "$src/core/tests/cli/checks.sh"
require_root_and_backend "$engine" "$backend"
c=fwe-ftp-$$-c h=fwe-ftp-$$-h
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null
  "$engine" --netns "$h" --backend "$backend" -q flush >/dev/null 2>&1
  for ns in "$c" "$h"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "/run/fwengine/$h" "$work"
}
trap cleanup EXIT
for ns in "$c" "$h"; do
  ip netns add "$ns" || { echo "skipped: cannot create network namespaces"; exit 77; }
  ip -n "$ns" link set lo up
done
ip -n "$h" link add eth0 type veth peer name eth0 netns "$c"
ip -n "$h" addr add 10.72.0.1/24 dev eth0 && ip -n "$h" addr add fd72::1/64 dev eth0 nodad
ip -n "$c" addr add 10.72.0.2/24 dev eth0 && ip -n "$c" addr add fd72::2/64 dev eth0 nodad
ip -n "$h" link set eth0 up && ip -n "$c" link set eth0 up

# The server: control connections on port 21 (IPv4 and IPv6), each answered with a banner and, on PASV
# or EPSV, the data port; it sends "data" to whoever connects there.
ip netns exec "$h" $python - <<'PY' >"$work/server" 2>&1 &
import select, socket
listeners, controls = {}, set()
for family, address in ((socket.AF_INET, "10.72.0.1"), (socket.AF_INET6, "fd72::1")):
    for port in (21, 50021):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(8)
        listeners[s] = port
print("listening", flush=True)
while True:
    ready, _, _ = select.select(list(listeners) + list(controls), [], [])
    for s in ready:
        if s in controls:  # a command, or the client closing the session
            command = s.recv(100)
            if command.startswith(b"PASV"):
                s.sendall(b"227 Entering Passive Mode (10,72,0,1,195,101)\r\n")
            elif command.startswith(b"EPSV"):
                s.sendall(b"229 Entering Extended Passive Mode (|||50021|)\r\n")
            elif not command:
                controls.discard(s)
                s.close()
            continue
        conn, _ = s.accept()
        if listeners[s] == 50021:
            conn.sendall(b"data\r\n")
            conn.close()
        else:
            conn.sendall(b"220 fwengine test\r\n")
            controls.add(conn)
PY
server_pid=$!
for _ in $(seq 50); do grep -q listening "$work/server" && break; sleep 0.1; done

# One passive session: "open" if the data connection delivers, else "closed".
session() {  # session SERVER_ADDRESS
  ip netns exec "$c" $python - "$1" <<'PY'
import re, socket, sys
server = sys.argv[1]
try:
    control = socket.create_connection((server, 21), timeout=3)
    control.recv(100)
    control.sendall(b"EPSV\r\n" if ":" in server else b"PASV\r\n")
    reply = control.recv(100).decode()
    numbers = re.search(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply)
    port = int(numbers[5]) * 256 + int(numbers[6]) if numbers else int(re.search(r"\|\|\|(\d+)\|", reply)[1])
    data = socket.create_connection((server, port), timeout=3)
    print("open" if data.recv(100).startswith(b"data") else "closed")
    control.close()
except OSError:
    print("closed")
PY
}

# nft: the helper in input, before the accept (where firewalld assigns it); iptables: in untracked-in.
stage=input
[ "$backend" = iptables ] && stage=untracked-in
$python - "$stage" >"$work/helper.yaml" <<'PY'
import sys, yaml
host = {"name": "host", "conntrack": "accept-established", "chains": ["helpers", "ftp"], "default": "drop"}
stages = {"input": [{"endpoints": [host]}]}
if sys.argv[1] != "input":
    host["chains"] = ["ftp"]
    stages[sys.argv[1]] = [{"endpoints": [{"name": "helpers", "chains": ["helpers"], "default": "continue"}]}]
print(yaml.safe_dump({"apiVersion": "fwengine/v1", "stages": stages, "chains": {
    "helpers": [{"protocol": "tcp", "dport": 21, "action": "ct-helper", "helper": "ftp"}],
    "ftp": [{"protocol": "tcp", "dport": 21, "action": "accept"}]}}))
PY
# The same policy without the helper.
$python - <<'PY' >"$work/plain.yaml"
import yaml
host = {"name": "host", "conntrack": "accept-established", "chains": ["ftp"], "default": "drop"}
print(yaml.safe_dump({"apiVersion": "fwengine/v1", "stages": {"input": [{"endpoints": [host]}]},
                      "chains": {"ftp": [{"protocol": "tcp", "dport": 21, "action": "accept"}]}}))
PY
fwe() { "$engine" --netns "$h" --backend "$backend" "$@"; }

for server in 10.72.0.1 fd72::1; do
  equals "no policy, $server: the data connection opens" "$(session $server)" open
done
check "apply without the helper" 0 fwe -q -f "$work/plain.yaml" apply
for server in 10.72.0.1 fd72::1; do
  equals "without the helper, $server: the data connection is dropped" "$(session $server)" closed
done
check "apply with the ftp helper on port 21 ($stage)" 0 fwe -q -f "$work/helper.yaml" apply
for server in 10.72.0.1 fd72::1; do
  equals "with the helper, $server: the data connection is related and opens" "$(session $server)" open
done
equals "no drift with the helper" \
  "$(fwe --json status | $python -c 'import json,sys; print(len(json.load(sys.stdin)["drift"]))')" 0
summary
