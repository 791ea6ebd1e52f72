#!/usr/bin/env bash
# test_etcd.sh FWENGINE SOURCE_DIR - the calico frontend's etcd source against a real etcd (one member on
# loopback, started and removed here): the same IR as from files, errors located at the resource's key,
# an unreachable store, bad URLs and options, TLS with client certificates; then, as root, a daemon in a
# namespace of its own that follows the store (it reaches etcd from the namespace it started in),
# survives the store going away, catches up when it is back, and after a "reboot" during an outage
# enforces the policy it kept on disk. Exit 77 (skipped) without etcd, or without root for the daemon.
set -u
engine=$1 src=$2
source "$src/core/tests/cli/checks.sh"
command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v openssl >/dev/null ||
  { echo "skipped: etcd, etcdctl or openssl is not installed"; exit 77; }
export ETCDCTL_API=3

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
client_port=$(free_port) peer_port=$(free_port) dead_port=$(free_port)
endpoint=127.0.0.1:$client_port
etcd_pid="" tls_pid="" daemon_pid="" hung_pid="" netns=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  [ -n "$hung_pid" ] && kill "$hung_pid" 2>/dev/null && wait "$hung_pid" 2>/dev/null
  [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
  [ -n "$tls_pid" ] && kill "$tls_pid" 2>/dev/null && wait "$tls_pid" 2>/dev/null
  [ -n "$netns" ] && ip netns del "$netns" 2>/dev/null && rm -rf "/run/fwengine/$netns"
  rm -rf "$work"
}
trap cleanup EXIT

start_etcd() {
  etcd --name t --data-dir "$work/etcd" --listen-client-urls "http://$endpoint" --advertise-client-urls "http://$endpoint" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "t=http://127.0.0.1:$peer_port" >>"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 100); do etcdctl --endpoints "$endpoint" endpoint health >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "etcd did not start:"; cat "$work/etcd.log"; exit 1
}
stop_etcd() { kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null; etcd_pid=""; }

prefix=/calico/resources/v3/projectcalico.org
put() { etcdctl --endpoints "$endpoint" put "$prefix/$1" "$2" >/dev/null; }
# The fixture as calicoctl would store it: each resource as JSON under its kind's plural and name.
put_fixture() {
  python3 - "$1" <<'EOF' | while read -r key value; do put "$key" "$value"; done
import json, sys, pathlib, yaml
plural = {"HostEndpoint": "hostendpoints", "GlobalNetworkPolicy": "globalnetworkpolicies",
          "GlobalNetworkSet": "globalnetworksets", "FelixConfiguration": "felixconfigurations", "Tier": "tiers"}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        for resource in doc.get("items", [doc]) if doc else []:
            print(f'{plural[resource["kind"]]}/{resource["metadata"]["name"]}', json.dumps(resource))
EOF
}

start_etcd
fixture=$src/fixtures/calico/home-cluster
node=worker1.kryukov.local
put_fixture "$fixture"
# Keys of kinds the frontend does not read are ignored, whatever they hold.
put bgppeers/worker1 'not even JSON'
put nodes/worker1 'not even JSON'  # another node's Node: not this one's labels
put ippools/default '{"kind": "IPPool"}'

check "files" 0 "$engine" --frontend calico -f "$fixture" --node $node -q check
want=${out##* }
check "etcd: the same IR as from files" 0 "$engine" --frontend calico --source "etcd://$endpoint" --node $node -q check
contains "etcd: the same IR as from files" "$want"
check "etcd: -f takes a URL too; a dead endpoint before a live one is skipped" 0 \
  "$engine" --frontend calico -f "etcd://127.0.0.1:$dead_port,$endpoint" --node $node -q check
contains "etcd: failover" "$want"
check "etcd: trace" 0 "$engine" --frontend calico --source "etcd://$endpoint" --node $node trace \
  --iif ens160 --src 192.168.218.1 --dst 192.168.218.176 --proto tcp --dport 22
contains "etcd: trace" "accept"
# A selector-scoped FelixConfiguration (Calico 3.32) applies when this node's Node, read from the store,
# has the labels its nodeSelector selects: its failsafe port then opens before the preDNAT drop.
put felixconfigurations/edge '{"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
  "metadata": {"name": "edge", "creationTimestamp": "2026-11-02T09:15:00Z"},
  "spec": {"nodeSelector": "edge == \"true\"", "failsafeInboundHostPorts": [{"protocol": "TCP", "port": 2222}]}}'
probe_2222=(trace --iif ens160 --src 192.168.218.1 --dst 192.168.218.176 --proto tcp --dport 2222)
# Another node's Node is not read: its labels select nothing here.
put nodes/worker2 '{"apiVersion": "projectcalico.org/v3", "kind": "Node",
  "metadata": {"name": "worker2", "labels": {"edge": "true"}}}'
check "etcd: a selector-scoped config without its Node" 0 "$engine" --frontend calico --source "etcd://$endpoint" \
  --node $node "${probe_2222[@]}"
contains "etcd: without the Node, the config applies to none" "no Node '$node' was read"
contains "etcd: without the Node, port 2222 stays closed" "verdict: closed"
put nodes/$node '{"apiVersion": "projectcalico.org/v3", "kind": "Node",
  "metadata": {"name": "'$node'", "labels": {"edge": "true"}}, "spec": {"bgp": {"ipv4Address": "192.168.218.176/24"}}}'
check "etcd: the Node's labels select the config" 0 "$engine" --frontend calico --source "etcd://$endpoint" \
  --node $node "${probe_2222[@]}"
contains "etcd: the selected config's failsafe port" "(FelixConfiguration edge)"
contains "etcd: the selected config's failsafe port is open" "verdict: open"
etcdctl --endpoints "$endpoint" del "$prefix/felixconfigurations/edge" >/dev/null
for key in "nodes/$node" nodes/worker2; do etcdctl --endpoints "$endpoint" del "$prefix/$key" >/dev/null; done
check "etcd: every endpoint down" 1 "$engine" --frontend calico --source "etcd://127.0.0.1:$dead_port" --node $node check
contains "etcd: every endpoint down" "no etcd endpoint answered"
contains "etcd: every endpoint down names the endpoint" "127.0.0.1:$dead_port"
check "etcd: URL without a port" 2 "$engine" --frontend calico --source etcd://localhost check
contains "etcd: URL without a port" "is not HOST:PORT"
check "etcd: a user and password in the URL" 2 "$engine" --frontend calico \
  --source "etcd://root:s3cret@127.0.0.1:$dead_port" check
contains "etcd: a user and password in the URL" "authenticate with a client certificate"
equals "etcd: the password is not shown" "$(grep -c s3cret <<<"$out")" 0
check "etcd: a key without its certificate" 2 "$engine" --frontend calico --source "etcd://$endpoint" --etcd-key k.pem check
contains "etcd: a key without its certificate" "--etcd-cert and --etcd-key go together"
check "etcd: TLS options need the calico frontend" 2 "$engine" --frontend yaml --etcd-ca ca.pem check
contains "etcd: TLS options need the calico frontend" "need --frontend calico"
echo "not a certificate" >"$work/junk-ca.pem"
check "etcd: a TLS store that is not there" 1 "$engine" --frontend calico --source "etcd://127.0.0.1:$dead_port" \
  --etcd-ca "$work/junk-ca.pem" check
contains "etcd: TLS is https" "https://127.0.0.1:$dead_port"
# A TLS file that is not there is the store's failure (exit 1), not a usage error: a daemon started
# before its certificates are provisioned falls back to its cache.
check "etcd: a CA file that is not there" 1 "$engine" --frontend calico --source "etcd://127.0.0.1:$dead_port" \
  --etcd-ca /nonexistent/ca.pem check

# A second member-less store that wants TLS with client certificates, as production etcd does. Its
# server certificate also says clientAuth: etcd 3.4's JSON gateway dials its own gRPC side with it.
tls=$work/tls
mkdir -p "$tls"
make_cert() {  # make_cert NAME SUBJECT EXTENSIONS
  openssl req -newkey rsa:2048 -nodes -keyout "$tls/$1.key" -out "$tls/$1.csr" -subj "$2" 2>/dev/null &&
    printf '%b' "$3" >"$tls/$1.ext" &&
    openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
      -out "$tls/$1.pem" -extfile "$tls/$1.ext" 2>/dev/null
}
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 1 -subj /CN=fwe-test-ca 2>/dev/null
make_cert server /CN=127.0.0.1 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n'
make_cert client /CN=fwengine 'extendedKeyUsage=clientAuth\n'
tls_port=$(free_port) tls_peer_port=$(free_port)
etcd --name tls --data-dir "$work/etcd-tls" --listen-client-urls "https://127.0.0.1:$tls_port" \
  --advertise-client-urls "https://127.0.0.1:$tls_port" --listen-peer-urls "http://127.0.0.1:$tls_peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$tls_peer_port" --initial-cluster "tls=http://127.0.0.1:$tls_peer_port" \
  --cert-file "$tls/server.pem" --key-file "$tls/server.key" --client-cert-auth --trusted-ca-file "$tls/ca.pem" \
  >>"$work/etcd-tls.log" 2>&1 &
tls_pid=$!
etls=(--cacert "$tls/ca.pem" --cert "$tls/client.pem" --key "$tls/client.key" --endpoints "127.0.0.1:$tls_port")
for _ in $(seq 100); do etcdctl "${etls[@]}" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
etcdctl "${etls[@]}" put "$prefix/globalnetworksets/tls" '{"apiVersion": "projectcalico.org/v3",
  "kind": "GlobalNetworkSet", "metadata": {"name": "tls"}, "spec": {"nets": ["203.0.113.0/24"]}}' >/dev/null
check "etcd: TLS with a client certificate" 0 "$engine" --frontend calico --source "etcd://127.0.0.1:$tls_port" \
  --etcd-ca "$tls/ca.pem" --etcd-cert "$tls/client.pem" --etcd-key "$tls/client.key" --node $node -q check
check "etcd: TLS without the client certificate is refused" 1 "$engine" --frontend calico \
  --source "etcd://127.0.0.1:$tls_port" --etcd-ca "$tls/ca.pem" --node $node -q check
check "etcd: plain HTTP to a TLS store fails" 1 "$engine" --frontend calico --source "etcd://127.0.0.1:$tls_port" \
  --node $node -q check
# The same from the engine's config file: the store as a source, TLS files as frontend options.
cat >"$work/fwengine.conf" <<EOF
frontend: calico
sources: [etcd://127.0.0.1:$tls_port]
node: $node
frontend-options:
  etcd-ca: $tls/ca.pem
  etcd-cert: $tls/client.pem
  etcd-key: $tls/client.key
EOF
check "etcd: TLS from fwengine.conf" 0 "$engine" --config "$work/fwengine.conf" -q check
kill "$tls_pid"
wait "$tls_pid" 2>/dev/null
tls_pid=""

put globalnetworkpolicies/bad '{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
  "metadata": {"name": "bad"}, "spec": {"selector": "a ==", "ingress": [{"action": "Allow"}]}}'
check "etcd: a bad resource is located at its key" 2 "$engine" --frontend calico --source "etcd://$endpoint" --node $node check
contains "etcd: a bad resource is located at its key" "etcd:$prefix/globalnetworkpolicies/bad:2:"
contains "etcd: a bad resource says what is wrong" "invalid selector"
etcdctl --endpoints "$endpoint" del "$prefix/globalnetworkpolicies/bad" >/dev/null

# ---- the daemon follows the store from inside a namespace (root) ---------------------------------------
if [ "$(id -u)" != 0 ] || ! ip netns add "fwe-etcd-$$" 2>/dev/null; then
  summary
  echo "skipped: the daemon part needs root and network namespaces"
  [ "$failures" = 0 ] && exit 77 || exit 1
fi
netns=fwe-etcd-$$
ip -n "$netns" link add ens160 type veth peer name peer0
ip -n "$netns" link set ens160 up
state=/run/fwengine/$netns/state.json
revision() { etcdctl --endpoints "$endpoint" get / --prefix --keys-only --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])'; }
applied_revision() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("revision", ""))' "$state" 2>/dev/null; }
wait_for() {  # wait_for WHAT COMMAND...: up to 15 s
  for _ in $(seq 150); do "${@:2}" && { passes=$((passes + 1)); return 0; }; sleep 0.1; done
  echo "FAIL $1"; sed 's/^/    /' "$work/daemon.log"; failures=$((failures + 1)); return 1
}
at_revision() { [ "$(applied_revision)" = "$1" ]; }
kernel_has() { ip netns exec "$netns" nft list table inet fwengine 2>/dev/null | grep -q -- "$1"; }

stop_etcd
start_daemon() {
  "$engine" --frontend calico --backend nft --netns "$netns" --node $node --source "etcd://$endpoint" \
    --etcd-cache "$work/cache.json" daemon --metrics-file "$work/metrics.prom" >>"$work/daemon.log" 2>&1 &
  daemon_pid=$!
}
stop_daemon() {  # SIGTERM ends it cleanly and leaves the ruleset
  kill "$daemon_pid"
  wait "$daemon_pid"
  local rc=$?
  daemon_pid=""
  if [ "$rc" = 0 ]; then passes=$((passes + 1)); else echo "FAIL daemon: SIGTERM ends it cleanly (exit $rc)"; failures=$((failures + 1)); fi
}
start_daemon
wait_for "daemon: a store down at start is reported" grep -q "unreachable" "$work/daemon.log"
check "daemon: nothing applied while the store is down" 0 "$engine" --netns "$netns" --backend nft status
contains "daemon: nothing applied while the store is down" "nothing of fwengine's is loaded"
contains "daemon: status says the store is unreachable" "UNREACHABLE"

start_etcd
wait_for "daemon: applies once the store answers" at_revision "$(revision)"
wait_for "daemon: the policy is in the kernel" kernel_has "tcp dport"
check "daemon: status names the revision" 0 "$engine" --netns "$netns" --backend nft status
contains "daemon: status names the revision" "at revision $(revision)"
contains "daemon: status says the store is reachable" "reachable, revision"

put globalnetworksets/blocked '{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
  "metadata": {"name": "blocked", "labels": {"blocked": "true"}}, "spec": {"nets": ["198.51.100.0/24"]}}'
put globalnetworkpolicies/deny-blocked '{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
  "metadata": {"name": "deny-blocked"}, "spec": {"order": 1, "selector": "all()",
  "ingress": [{"action": "Deny", "source": {"selector": "blocked == \"true\""}}]}}'
wait_for "daemon: follows a change" at_revision "$(revision)"
wait_for "daemon: the change is in the kernel" kernel_has "198.51.100.0/24"
metric() { grep -q "^$1{netns=\"$netns\",node=\"$node\"$2} $3\$" "$work/metrics.prom" 2>/dev/null; }
wait_for "metrics: the applied revision" metric fwengine_store_revision_applied "" "$(revision)"
wait_for "metrics: the store is reachable" metric fwengine_store_reachable "" 1
wait_for "metrics: reloads are counted" grep -q '^fwengine_reloads_total{.*result="ok"} [1-9]' "$work/metrics.prom"
wait_for "metrics: readable by a collector of another user" test "$(stat -c %a "$work/metrics.prom")" = 644
wait_for "metrics: per-rule counters name their policy source" grep -q '^fwengine_rule_packets_total{.*origin="etcd:' "$work/metrics.prom"

put globalnetworkpolicies/bad '{"kind": "GlobalNetworkPolicy", "metadata": {"name": "bad"}, "spec": {"selector": "(("}}'
wait_for "daemon: a bad resource is reported" grep -q "globalnetworkpolicies/bad" "$work/daemon.log"
check "daemon: status shows the failure" 0 "$engine" --netns "$netns" --backend nft status
contains "daemon: status shows the failure" "last reload failed"
wait_for "daemon: the last good ruleset stays" kernel_has "198.51.100.0/24"
check "daemon: the copy kept for a reboot is not the refused one" 1 grep -q "globalnetworkpolicies/bad" "$work/cache.json"
# A value that is not UTF-8 (a Latin-1 byte put by hand) is a bad resource like any other, not a crash.
put globalnetworkpolicies/latin1 "$(printf '{"kind": "GlobalNetworkPolicy", "metadata": {"name": "latin1",
  "annotations": {"note": "caf\xe9"}}, "spec": {"selector": "all()"}}')"
wait_for "daemon: a value that is not UTF-8 is reported" grep -q "globalnetworkpolicies/latin1" "$work/daemon.log"
sleep 2  # past the watch's next list, after which an older fwengine wrote the cache and aborted
check "daemon: and it runs on" 0 kill -0 "$daemon_pid"
etcdctl --endpoints "$endpoint" del "$prefix/globalnetworkpolicies/latin1" >/dev/null

stop_etcd
wait_for "daemon: a store that goes away is reported" grep -q "keeps IR" "$work/daemon.log"
wait_for "daemon: the ruleset stays while the store is away" kernel_has "198.51.100.0/24"
start_etcd
etcdctl --endpoints "$endpoint" del "$prefix/globalnetworkpolicies/bad" >/dev/null
etcdctl --endpoints "$endpoint" del "$prefix/globalnetworkpolicies/deny-blocked" >/dev/null
wait_for "daemon: catches up after the store is back" at_revision "$(revision)"
wait_for "daemon: the removed policy left the kernel" bash -c "! ip netns exec $netns nft list table inet fwengine | grep -q 198.51.100.0/24"


# A reboot during an outage: the kernel holds nothing and the store is down; the daemon enforces the copy
# of the store's policy it kept on disk, and follows the store again once it is back.
put globalnetworkpolicies/deny-blocked '{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
  "metadata": {"name": "deny-blocked"}, "spec": {"order": 1, "selector": "all()",
  "ingress": [{"action": "Deny", "source": {"selector": "blocked == \"true\""}}]}}'
cached=$(revision)
wait_for "daemon: follows the change before the outage" at_revision "$cached"
stop_daemon
check "reboot: the kernel is empty" 0 "$engine" --netns "$netns" --backend nft -q flush
stop_etcd
start_daemon
wait_for "reboot: the cached policy is enforced while the store is down" kernel_has "198.51.100.0/24"
# The daemon records what it applied just after the kernel took it: status reads that record.
wait_for "reboot: the applied revision is recorded" at_revision "$cached"
check "reboot: status" 0 "$engine" --netns "$netns" --backend nft status
contains "reboot: status names the cached revision" "at revision $cached"
contains "reboot: status says where the policy comes from" "enforcing the copy of revision $cached"
start_etcd
reconnected() { [ "$(grep -c "reachable again" "$work/daemon.log")" -ge 2 ]; }  # the second outage's end
wait_for "reboot: the store is followed again" reconnected
stop_daemon

# A member that takes the connection and never answers: a stop does not wait out the list's 10 s.
hung_port=$(free_port)
python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4)
held = []
while True:
    held.append(s.accept()[0])
    open(sys.argv[2], "a").write("accepted\n")
' "$hung_port" "$work/hung.log" &
hung_pid=$!
endpoint=127.0.0.1:$hung_port start_daemon
wait_for "hung member: the daemon is listing it" grep -qs accepted "$work/hung.log"
kill "$daemon_pid"
for _ in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$daemon_pid" 2>/dev/null; then
  echo "FAIL hung member: SIGTERM did not end the daemon within 5 s (the list waits for its timeout)"
  failures=$((failures + 1))
fi
wait "$daemon_pid"
equals "hung member: SIGTERM ends the daemon cleanly" "$?" 0
daemon_pid=""
kill "$hung_pid" && wait "$hung_pid" 2>/dev/null
hung_pid=""
summary
