#!/usr/bin/env bash
# The applied-state file and the one-writer lock, in a throwaway network namespace (needs root and the
# nft backend): status tells what was applied; a second writer waits, then gives up with a clear message.
set -uo pipefail
FWE=$1 ROOT=$2
[ "$(id -u)" = 0 ] || exit 77
"$FWE" plugins | grep -q '^nft .*backend' || { echo "nft backend not built"; exit 77; }
ns=fwe-state-$$
holder= work= made_default=
cleanup() {
  [ -n "$holder" ] && kill "$holder" 2>/dev/null
  [ -n "$work" ] && rm -rf "$work"
  ip netns del "$ns" 2>/dev/null
  ip netns del "fwe-state-exec-$$" 2>/dev/null
  rm -rf "/run/fwengine/fwe-state-exec-$$"
  [ -n "$made_default" ] && ip netns del default 2>/dev/null
  rm -rf "/run/fwengine/$ns"
}
trap cleanup EXIT
ip netns add "$ns"
policy="$ROOT/fixtures/yaml/example/policy.yaml"
failures=0 passes=0
expect() {  # expect NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; echo "$out" | sed 's/^/    /'; failures=$((failures + 1)); fi
}

out=$("$FWE" --netns "$ns" -f "$policy" apply 2>&1); rc=$?
expect "apply succeeds" test "$rc" = 0
out=$("$FWE" --netns "$ns" status 2>&1)
expect "status names the source and frontend" grep -q "from yaml ($policy)" <<<"$out"
hash=$("$FWE" -f "$policy" --json check | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p')
expect "status shows the applied hash" grep -q "IR $hash" <<<"$out"
out=$("$FWE" --netns "$ns" status -v 2>&1)
expect "status -v: a rule's line and what it is" grep -Eq "pkts  .* #[0-9]+  $policy:[0-9]+:[0-9]+ \(.+\)$" <<<"$out"

# A rule's comment edited by hand (its label; the place before it kept) is put back by the next apply.
nft_ns() { ip netns exec "$ns" nft "$@"; }
read -r chain handle <<<"$(nft_ns -a list table inet fwengine | awk '/^\tchain /{c=$2} /tcp dport 22 counter/{print c, $NF; exit}')"
line=$(nft_ns -a list chain inet fwengine "$chain" | grep "tcp dport 22 counter")
rule=$(sed 's/comment "\([^ "]*\) [^"]*"/comment "\1 EDITED"/; s/packets [0-9]* bytes [0-9]*//' <<<"${line%% # handle*}")
nft_ns "replace rule inet fwengine $chain handle $handle $rule"
expect "a rule's comment edited by hand" test "$(nft_ns list table inet fwengine | grep -c EDITED)" = 1
out=$("$FWE" --netns "$ns" -f "$policy" apply 2>&1)
expect "is put back by the next apply" test "$(nft_ns list table inet fwengine | grep -c EDITED)" = 0

flock "/run/fwengine/$ns/lock" sleep 5 &
holder=$!
sleep 0.3
out=$("$FWE" --netns "$ns" -f "$policy" --lock-timeout 1 apply 2>&1); rc=$?
expect "a second writer gives up with exit 1" test "$rc" = 1
expect "and says why" grep -q "another fwengine .* is changing the firewall of netns $ns" <<<"$out"
kill "$holder"; wait "$holder" 2>/dev/null; holder=

# diff (nft): only the chain that changes, the kernel's by its rules' stamps, the policy's with their text.
work=$(mktemp -d)
cp "$policy" "$work/p.yaml"
out=$("$FWE" --netns "$ns" -f "$work/p.yaml" apply 2>&1)
out=$("$FWE" --netns "$ns" -f "$work/p.yaml" diff --exit-code 2>&1); rc=$?
expect "diff of what was applied is clean" test "$rc" = 0
sed -i 's/\[80, 443\]/[80, 443, 8443]/' "$work/p.yaml"
out=$("$FWE" --netns "$ns" -f "$work/p.yaml" diff --exit-code 2>&1); rc=$?
expect "diff of a change exits 3" test "$rc" = 3
expect "diff removes the old chain" grep -q '^- chain c-web-server\.' <<<"$out"
expect "diff adds the new rule with its text" grep -q '^+   c-web-server\.[0-9a-f]*  .*  #1  .*th dport { 80, 443, 8443 }' <<<"$out"
expect "diff leaves unchanged chains out" test "$(grep -c '^[-+] chain' <<<"$out")" = 2
# A rule inserted by hand at the top of one of our chains is that one line, not a shift of those below.
chain=$(ip netns exec "$ns" nft list table inet fwengine | sed -n 's/^\tchain \(input-[^ ]*\) {$/\1/p' | head -1)
ip netns exec "$ns" nft insert rule inet fwengine "$chain" tcp dport 9999 accept
out=$("$FWE" --netns "$ns" -f "$work/p.yaml" diff 2>&1)
expect "diff shows a rule inserted by hand as one line, not fwengine's" \
  test "$(grep -c "^-   $chain  " <<<"$out")" = 1 -a "$(grep -c "^+   $chain  " <<<"$out")" = 0
expect "with its position" grep -q "^-   $chain  (no comment: not a rule of fwengine's)  #0\$" <<<"$out"
rm -rf "$work"

out=$("$FWE" --netns "$ns" flush 2>&1)
expect "flush forgets the state" test ! -e "/run/fwengine/$ns/state.json"
expect "flush leaves no directory of the namespace behind" test ! -e "/run/fwengine/$ns"
out=$("$FWE" --netns "$ns" status 2>&1)
expect "status after flush" grep -q "nothing of fwengine's is loaded" <<<"$out"

# A writer that waited on a lock file which its holder then removed (as a flush does) takes a new one.
mkdir -p "/run/fwengine/$ns"
flock "/run/fwengine/$ns/lock" sh -c "sleep 1; rm /run/fwengine/$ns/lock; rmdir /run/fwengine/$ns" &
holder=$!
sleep 0.3
out=$("$FWE" --netns "$ns" -f "$policy" apply 2>&1); rc=$?
wait "$holder" 2>/dev/null; holder=
expect "a writer whose lock file was removed while it waited applies on a new one" test "$rc" = 0
expect "and its state is there" test -e "/run/fwengine/$ns/state.json" -a -e "/run/fwengine/$ns/lock"
out=$("$FWE" --netns "$ns" flush 2>&1)

# Backends: status and flush follow the last apply's backend; another backend's apply switches, removing
# the old ruleset once the new one is in place.
if "$FWE" plugins | grep -q '^iptables .*backend' && command -v iptables-legacy-save >/dev/null; then
  nft_table() { ip netns exec "$ns" nft list table inet fwengine >/dev/null 2>&1; }
  ipt_rules() { ip netns exec "$ns" iptables-legacy-save | grep -c -- '-A fwe'; }
  out=$("$FWE" --netns "$ns" --backend iptables -f "$policy" apply 2>&1); rc=$?
  expect "iptables apply" test "$rc" = 0
  out=$("$FWE" --netns "$ns" status 2>&1)
  expect "status without --backend shows iptables" grep -q "^backend iptables: IR $hash" <<<"$out"
  out=$("$FWE" --netns "$ns" --backend nft status 2>&1)
  expect "status of another backend names the one applied" grep -q "last applied here with backend iptables" <<<"$out"
  out=$("$FWE" --netns "$ns" -f "$policy" apply 2>&1); rc=$?
  expect "a plain apply keeps the last backend" test "$rc" = 0 -a "$(ipt_rules)" -gt 0
  expect "and switches nothing" test -z "$(grep switched <<<"$out")"
  expect "nft holds nothing" sh -c "! ip netns exec $ns nft list table inet fwengine >/dev/null 2>&1"
  out=$("$FWE" --netns "$ns" --backend nft flush 2>&1)
  expect "a flush of another backend keeps the record" test -e "/run/fwengine/$ns/state.json"
  expect "and the iptables rules" test "$(ipt_rules)" -gt 0
  # A switch that cannot remove the old ruleset (iptables-legacy-restore failing) says so, in status too,
  # and the next apply tries again.
  mkdir -p "$work/failing"
  printf '#!/bin/sh\nexit 1\n' > "$work/failing/iptables-legacy-restore"
  chmod +x "$work/failing/iptables-legacy-restore"
  out=$(PATH="$work/failing:$PATH" "$FWE" --netns "$ns" -f "$policy" --backend nft apply 2>&1); rc=$?
  expect "a switch whose old ruleset cannot be removed applies the new one" test "$rc" = 0
  expect "and nft holds it" nft_table
  expect "and warns that the old one still filters" grep -q "could not be removed" <<<"$out"
  out=$("$FWE" --netns "$ns" status 2>&1)
  expect "status warns too" grep -q "the ruleset of backend iptables is still loaded beside this one" <<<"$out"
  out=$("$FWE" --netns "$ns" -f "$policy" apply 2>&1); rc=$?
  expect "the next apply removes it" grep -q "switched from backend iptables to nft" <<<"$out"
  out=$("$FWE" --netns "$ns" status 2>&1)
  expect "and status no longer warns" test -z "$(grep 'still loaded' <<<"$out")"
  expect "the iptables rules are gone" test "$(ipt_rules)" = 0
  expect "nft holds the ruleset" nft_table
  out=$("$FWE" --netns "$ns" flush 2>&1)
  expect "flush without --backend removes nft's" sh -c "! ip netns exec $ns nft list table inet fwengine >/dev/null 2>&1"
  expect "and forgets the state" test ! -e "/run/fwengine/$ns/state.json"
  # flush removes everything fwengine owns: a ruleset a switch could not remove too.
  "$FWE" --netns "$ns" -q -f "$policy" --backend iptables apply
  PATH="$work/failing:$PATH" "$FWE" --netns "$ns" -q -f "$policy" --backend nft apply 2>/dev/null
  expect "a switch leaves the iptables rules behind again" test "$(ipt_rules)" -gt 0
  out=$("$FWE" --netns "$ns" flush 2>&1)
  expect "flush removes the ruleset left behind" test "$(ipt_rules)" = 0
  expect "and says so" grep -q "and the ruleset backend iptables left behind" <<<"$out"
  expect "and nft's" sh -c "! ip netns exec $ns nft list table inet fwengine >/dev/null 2>&1"
  expect "and leaves nothing of the namespace" test ! -e "/run/fwengine/$ns"
fi
# NAT to other hosts where the namespace does not forward (a new one does not): a warning at apply.
out=$("$FWE" --netns "$ns" -f "$ROOT/fixtures/yaml/nat/policy.yaml" apply 2>&1); rc=$?
expect "a NAT policy applies where forwarding is off" test "$rc" = 0
expect "and warns that the kernel will not route" grep -q "forwarding is off (net.ipv4.ip_forward = 0 in netns $ns)" <<<"$out"
ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
out=$("$FWE" --netns "$ns" -f "$ROOT/fixtures/yaml/nat/policy.yaml" apply 2>&1)
expect "no warning once it forwards" test -z "$(grep 'forwarding is off' <<<"$out")"
"$FWE" --netns "$ns" -q flush
# The frontend options the policy was read with are part of what status says was applied.
if "$FWE" plugins | grep -q '^firewalld .*frontend' && [ -d /usr/lib/firewalld/zones ]; then
  out=$("$FWE" --netns "$ns" --frontend firewalld --firewalld-compat 1.3 -f "$ROOT/fixtures/firewalld/overlay" apply 2>&1)
  out=$("$FWE" --netns "$ns" status 2>&1)
  expect "status names the frontend options" grep -q "overlay with compat=1.3)" <<<"$out"
  out=$("$FWE" --netns "$ns" --json status 2>&1)
  expect "status --json has them" grep -q '"frontend-options": \[' <<<"$out"
  expect "status --json counters have a label" grep -q '"label": "zone public' <<<"$out"
  "$FWE" --netns "$ns" -q flush
fi
# A backend option is part of what was applied: status names it, and the kernel holds its effect.
rm -rf "$work"  # the diff part's (cleanup removes only the last one)
work=$(mktemp -d)
{
  echo "apiVersion: fwengine/v1"
  echo "chains:"
  echo "  allow:"
  for i in 1 2 3 4 5 6; do echo "    - {protocol: tcp, src: 10.0.$i.0/24, dport: 80$i, action: accept}"; done
  echo "stages:"
  echo "  input:"
  echo "    - name: all"
  echo "      endpoints:"
  echo "        - {name: all, chains: [allow], default: accept}"
} >"$work/runs.yaml"
out=$("$FWE" --netns "$ns" -f "$work/runs.yaml" --backend-option counters=rule apply 2>&1); rc=$?
expect "apply with counters=rule succeeds" test "$rc" = 0
out=$(ip netns exec "$ns" nft list table inet fwengine 2>&1)
uncounted_set() {  # a concatenated set without the counter flag, and no element with a counter
  grep -q 'type ipv4_addr . inet_service' <<<"$out" && ! grep -Pq '^\t\tcounter$' <<<"$out" &&
    ! grep -q ' . 801 counter' <<<"$out"
}
expect "its run's set has no element counters or stamps" uncounted_set
out=$("$FWE" --netns "$ns" -f "$work/runs.yaml" --backend-option counters=rule --exit-code diff 2>&1); rc=$?
expect "diff with the same option: no drift, no difference" test "$rc" = 0
out=$("$FWE" --netns "$ns" status 2>&1)
expect "status names the backend options" grep -q "runs.yaml; backend counters=rule)" <<<"$out"
out=$("$FWE" --netns "$ns" status -v 2>&1)
expect "status -v counts the merged rule" grep -Eq "pkts  .*runs.yaml:4:7 .*allow#0 \+5" <<<"$out"
out=$("$FWE" --netns "$ns" --json status 2>&1)
expect "status --json has them" grep -q '"backend-options": \[' <<<"$out"
out=$("$FWE" --netns "$ns" -f "$work/runs.yaml" apply 2>&1); rc=$?
expect "the apply without it succeeds" test "$rc" = 0
out=$(ip netns exec "$ns" nft list table inet fwengine 2>&1)
expect "without the option, the next apply counts per element again" grep -q "counter packets 0 bytes 0 comment" <<<"$out"
out=$("$FWE" --netns "$ns" -f "$work/runs.yaml" --exit-code diff 2>&1); rc=$?
expect "diff without options finds nothing to change" test "$rc" = 0
out=$("$FWE" --netns "$ns" -f "$work/runs.yaml" --backend-option counters=rule --exit-code diff 2>&1); rc=$?
expect "diff with another option than the kernel's: a difference" test "$rc" = 3
expect "and says which" grep -q "drift: loaded with backend options none, not counters=rule" <<<"$out"
printf 'backend: nft\nbackend-options:\n  nft:\n    counters: rule\n    countres: rule\n  iptables: {counters: rule}\n' >"$work/fwengine.conf"
out=$("$FWE" --netns "$ns" --config "$work/fwengine.conf" -f "$work/runs.yaml" apply 2>&1); rc=$?
expect "an unknown backend option in fwengine.conf is exit 2" test "$rc" = 2
expect "reported at its line" grep -q "^$work/fwengine.conf:5:5: error: unknown nft backend option 'countres' (did you mean 'counters'?)" <<<"$out"
sed -i '/countres/d' "$work/fwengine.conf"
echo "  nftables: {counters: rule}" >>"$work/fwengine.conf"
out=$("$FWE" --netns "$ns" --config "$work/fwengine.conf" -f "$work/runs.yaml" apply 2>&1); rc=$?
expect "options of another backend are not the nft backend's" test "$rc" = 0
expect "and those of one not installed are a warning" grep -q "fwengine.conf:6:3: warning: backend-options for 'nftables', which is not an installed backend: ignored" <<<"$out"
out=$("$FWE" --netns "$ns" status 2>&1)
expect "fwengine.conf's backend options are applied" grep -q "backend counters=rule)" <<<"$out"
"$FWE" --netns "$ns" -q flush

# A namespace deleted and made again under the same name is a new one: what fwengine recorded for the
# old one (the backend it applied with, its record) is removed, not taken as the new one's.
first_backend=nft
"$FWE" plugins | grep -q '^iptables .*backend' && command -v iptables-legacy-save >/dev/null && first_backend=iptables
"$FWE" --netns "$ns" --backend "$first_backend" -q -f "$policy" apply
expect "the state records the namespace's cookie" test -s "/run/fwengine/$ns/netns-cookie"
ip netns del "$ns"
ip netns add "$ns"
out=$("$FWE" --netns "$ns" --json status 2>&1)
expect "a namespace made again under the same name has nothing applied" \
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(d["applied"] is not None or d["backend"] != "nft")' "$out"
expect "and the old one's directory is gone" test ! -e "/run/fwengine/$ns"
"$FWE" --netns "$ns" --backend "$first_backend" -q -f "$policy" apply
ip netns del "$ns"
ip netns add "$ns"
out=$("$FWE" --netns "$ns" --backend nft -f "$policy" apply 2>&1); rc=$?
expect "an apply there switches from nothing" test "$rc" = 0 -a -z "$(grep -E 'switched|still loaded' <<<"$out")"
out=$("$FWE" --netns "$ns" status 2>&1)
expect "and status shows it alone" grep -q "^applied .* from yaml" <<<"$out"
"$FWE" --netns "$ns" -q flush
expect "a flush leaves no directory behind" test ! -e "/run/fwengine/$ns"

# A namespace without a name (unshare -n, which dies with its process) keeps its state as
# netns-<inode>, never as the host's "default", also where pid 1 is hidden.
host_state=$(stat -c %Y.%i /run/fwengine/default/state.json 2>/dev/null || echo none)
out=$(unshare -n sh -c 'ino=$(stat -L -c %i /proc/self/ns/net)
  "$1" -q -f "$2" apply && test -e "/run/fwengine/netns-$ino/state.json" && echo "kept as netns-$ino"
  "$1" -q flush; rm -rf "/run/fwengine/netns-$ino"' sh "$FWE" "$policy" 2>&1)
expect "an unnamed namespace's state is kept as netns-<inode>" grep -q "^kept as netns-[0-9]*$" <<<"$out"
expect "and the host's state is untouched" \
  test "$(stat -c %Y.%i /run/fwengine/default/state.json 2>/dev/null || echo none)" = "$host_state"

# A first apply the kernel refuses (a conntrack helper it does not know) leaves no state directory.
out=$(unshare -n sh -c 'ino=$(stat -L -c %i /proc/self/ns/net)
  "$1" -q -f "$2" apply; echo "exit $?"; test -e "/run/fwengine/netns-$ino" && echo "left netns-$ino"
  rm -rf "/run/fwengine/netns-$ino"' sh "$FWE" "$ROOT/core/tests/cli/refused-by-kernel.yaml" 2>&1)
expect "a refused first apply exits 1" grep -q "^exit 1$" <<<"$out"
expect "and leaves no state directory" test "$(grep -c '^left netns-' <<<"$out")" = 0

# Inside the namespace (ip netns exec, no --netns), each backend: apply, status and flush find it by
# name, and flush leaves nothing of ours. ip netns exec mounts a fresh /sys, where bpffs is not mounted.
exec_ns=fwe-state-exec-$$
ip netns add "$exec_ns"
ip -n "$exec_ns" link set lo up
ip -n "$exec_ns" link add eth0 type veth peer name eth0-peer
ip -n "$exec_ns" link set eth0 up
holds() {  # holds BACKEND: what the namespace's kernel has of fwengine's, as one line
  case $1 in
    iptables) ip netns exec "$exec_ns" sh -c 'iptables-legacy-save; ip6tables-legacy-save; ipset list -n' | grep -c 'fwe' ;;
    ebpf) ip netns exec "$exec_ns" tc filter show dev eth0 ingress | grep -c 'fwe_' ;;
  esac
}
for backend in iptables ebpf; do
  "$FWE" plugins | grep -q "^$backend .*backend" || continue
  out=$(ip netns exec "$exec_ns" "$FWE" --backend "$backend" -f "$policy" -q apply 2>&1); rc=$?
  expect "ip netns exec: $backend apply succeeds" test "$rc" = 0
  expect "ip netns exec: $backend holds the ruleset" test "$(holds "$backend")" -gt 0
  expect "ip netns exec: $backend state is kept under the namespace's name" test -e "/run/fwengine/$exec_ns/state.json"
  out=$(ip netns exec "$exec_ns" "$FWE" status 2>&1)
  expect "ip netns exec: $backend status shows the applied hash" grep -q "IR $hash" <<<"$out"
  out=$(ip netns exec "$exec_ns" "$FWE" --backend "$backend" flush 2>&1); rc=$?
  expect "ip netns exec: $backend flush succeeds" test "$rc" = 0
  expect "ip netns exec: $backend flush leaves nothing of ours" test "$(holds "$backend")" = 0
done
ip netns del "$exec_ns"
rm -rf "/run/fwengine/$exec_ns"

# A namespace named "default" cannot have the host's state name: --netns refuses it, and inside it
# (ip netns exec) the state is kept as netns-<inode>. Only where no such namespace exists already.
if [ ! -e /run/netns/default ] && ip netns add default; then
  made_default=1
  out=$("$FWE" --netns default status 2>&1); rc=$?
  expect "--netns default is refused (exit 2)" test "$rc" = 2
  expect "and says why" grep -q "keeps the host's state under the name 'default'" <<<"$out"
  out=$(ip netns exec default sh -c 'ino=$(stat -L -c %i /proc/self/ns/net)
    "$1" -q -f "$2" apply && test -e "/run/fwengine/netns-$ino/state.json" && echo "kept as netns-$ino"
    "$1" -q flush; rm -rf "/run/fwengine/netns-$ino"' sh "$FWE" "$policy" 2>&1)
  expect "inside a namespace named default the state is kept as netns-<inode>" grep -q "^kept as netns-[0-9]*$" <<<"$out"
  expect "and the host's state is untouched" \
    test "$(stat -c %Y.%i /run/fwengine/default/state.json 2>/dev/null || echo none)" = "$host_state"
  ip netns del default
  made_default=
fi
echo "$passes passed, $failures failed"
[ "$failures" = 0 ]
