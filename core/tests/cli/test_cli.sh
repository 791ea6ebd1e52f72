#!/usr/bin/env bash
# The command line as users meet it: exit codes, located errors, trace explanations of the tutorial,
# and migrate round trips that keep the IR hash. No kernel is touched.
set -uo pipefail
FWE=$1 ROOT=$2
source "$ROOT/core/tests/cli/checks.sh"

TUTORIAL=("$FWE" --frontend calico -f "$ROOT/fixtures/calico/home-cluster" --node control1.kryukov.local)

check "usage: unknown command" 2 "$FWE" aplly && contains "hint" "did you mean 'apply'?"
check "usage: option of another command" 2 "$FWE" check --dport 22 && contains "wrong command" "--dport is an option of 'trace'"
check "usage: -v and -q" 2 "$FWE" -v -q check
check "usage: missing netns" 2 "$FWE" --netns fwe-no-such-ns-$$ -f "$ROOT/fixtures/yaml/example/policy.yaml" check
contains "netns message" "no network namespace 'fwe-no-such-ns-$$'"
check "usage: --netns ." 2 "$FWE" --netns . -f "$ROOT/fixtures/yaml/example/policy.yaml" check &&
  contains "netns dot" "--netns takes a name from 'ip netns list', not a path"
check "usage: unknown frontend" 2 "$FWE" --frontend calicoo check && contains "frontend hint" "did you mean 'calico'?"
check "confirm with nothing pending" 1 "$FWE" confirm && contains "confirm message" "nothing is waiting for confirmation"
check "version" 0 "$FWE" --version && contains "version text" "fwengine "
check "version --json" 0 "$FWE" --json version && contains "version document" '{"ok":true,"version":"'
check "help --json" 0 "$FWE" --help --json
equals "help --json is one document: every command and option, the exit codes" "$(python3 -c '
import json, sys
d = json.load(sys.stdin)
names = {c["name"] for c in d["commands"]}
options = {o["name"]: o for o in d["options"]}
print(d["ok"], "apply" in names and "daemon" in names, options["--file"]["short"], options["--file"]["takes-value"],
      options["--json"]["takes-value"], sorted(d["exit-codes"]))' <<<"$out")" "True True -f True False ['0', '1', '2', '3']"

# fwengine.conf's plugin-dirs reach the loader; a directory that does not exist is an error there.
printf 'plugin-dirs: [%s]\n' "$work" > "$work/plugins.conf"
check "config plugin-dirs" 0 "$FWE" --config "$work/plugins.conf" plugins --json && contains "dir listed" "\"$work\""
printf 'plugin-dirs:\n  - %s/nosuch\n' "$work" > "$work/no-plugins.conf"
check "config plugin-dirs missing" 2 "$FWE" --config "$work/no-plugins.conf" plugins &&
  contains "missing dir located" "no-plugins.conf:2:5: error: plugin directory '$work/nosuch' does not exist"
check "usage: --backend checked by check" 2 "$FWE" --backend nftables -f "$ROOT/fixtures/yaml/example" check &&
  contains "tool name hint" "did you mean 'nft'?"

printf 'apiVersion: fwengine/v1\nchains:\n  c:\n    - {protocol: tcp, dport: 99999, action: accept}\n' > "$work/bad.yaml"
check "bad input exits 2" 2 "$FWE" -f "$work/bad.yaml" check && contains "located error" "bad.yaml:4:"

printf 'apiVersion: fwengine/v1\nchains:\n  c:\n    - {ct-status: dant, action: accept}\n' > "$work/bad-status.yaml"
check "unknown ct-status exits 2" 2 "$FWE" -f "$work/bad-status.yaml" check &&
  contains "ct-status located" "bad-status.yaml:4:19: error: ct-status: unknown conntrack status 'dant'"

# ct-status: the redirected port is open through the DNATed connection's status, the port itself is not.
FORWARD_PORT=("$FWE" --frontend yaml -f "$ROOT/integration/scenarios/yaml/forward-port/policy.yaml")
check "ct-status: redirected port" 0 "${FORWARD_PORT[@]}" trace --iif veth-up --src 198.51.100.20 \
  --dst 198.51.100.10 --dport 2223
contains "reply keeps the status" "(output, established, dnat)" && contains "2223 open" "verdict: open"
check "ct-status: the port itself" 0 "${FORWARD_PORT[@]}" trace --iif veth-up --src 198.51.100.20 \
  --dst 198.51.100.10 --dport 22
contains "22 closed" "verdict: closed"
check "ct-status: an established packet of a DNATed connection" 0 "${FORWARD_PORT[@]}" trace --oif veth-up \
  --src 198.51.100.10 --dst 198.51.100.20 --sport 22 --dport 40000 --state established --ct-status dnat,snat
contains "status shown" "(output, established, dnat, snat)"
check "usage: bad --ct-status" 2 "${FORWARD_PORT[@]}" trace --iif veth-up --src 198.51.100.20 \
  --dst 198.51.100.10 --dport 22 --ct-status dnat,sant && contains "ct-status message" "--ct-status 'sant'"

# rpf: trace takes the route to the source from --src-route; without it the source is not spoofed.
RPF=("$FWE" --frontend yaml -f "$ROOT/integration/scenarios/yaml/rpf/strict.yaml")
check "rpf: a source routed back out of iif" 0 "${RPF[@]}" trace --iif veth-wan --src 10.77.0.66 \
  --dst 198.51.100.10 --dport 22 && contains "rpf open" "verdict: open"
check "rpf: a source routed out of another interface" 0 "${RPF[@]}" trace --iif veth-wan --src 10.77.0.66 \
  --dst 198.51.100.10 --dport 22 --src-route veth-lan && contains "rpf closed" "verdict: closed"
check "usage: --src-route without --iif" 2 "${RPF[@]}" trace --oif veth-wan --src 198.51.100.10 \
  --dst 10.77.0.66 --dport 22 --src-route none && contains "src-route message" "--src-route needs --iif"
printf 'apiVersion: fwengine/v1\nchains:\n  c:\n    - {rpf: stirct, action: drop}\n' > "$work/bad-rpf.yaml"
check "unknown rpf mode exits 2" 2 "$FWE" -f "$work/bad-rpf.yaml" check &&
  contains "rpf located" "bad-rpf.yaml:4:13: error: rpf: unknown mode 'stirct'"

check "tutorial check" 0 "${TUTORIAL[@]}" check
check "tutorial: ssh from outside passes (failsafe)" 0 "${TUTORIAL[@]}" trace --iif ens160 \
  --src 192.168.218.50 --dst 192.168.218.171 --proto tcp --dport 22
contains "ssh failsafe" "failsafe-in" && contains "ssh source line" "00-felixconfiguration.yaml:" && contains "ssh open" "verdict: open"
check "tutorial: 8080 from outside is denied" 0 "${TUTORIAL[@]}" trace --iif ens160 \
  --src 192.168.218.50 --dst 192.168.218.171 --proto tcp --dport 8080
contains "8080 deny line" "20-default-rules.yaml:27:7" && contains "8080 policy" "default-rules" && contains "8080 closed" "verdict: closed"
check "tutorial: VIP 443 passes" 0 "${TUTORIAL[@]}" trace --iif ens160 \
  --src 192.168.218.50 --dst 192.168.218.180 --proto tcp --dport 443
contains "VIP rule" "30-allow-rules.yaml:" && contains "VIP policy" "allow-rules" && contains "VIP open" "verdict: open"
check "trace --json" 0 "${TUTORIAL[@]}" --json trace --iif ens160 --src 192.168.218.50 --dst 192.168.218.171 --dport 8080
contains "json delivered" '"delivered": false'

# --json answers quote file names and input, which need not be UTF-8: a byte that is not becomes U+FFFD.
latin1="$work/p$(printf '\xe9').yaml"
cp "$ROOT/fixtures/yaml/example/policy.yaml" "$latin1"
check "render --json of a file whose name is not UTF-8" 0 "$FWE" -f "$latin1" --json render
contains "the name is kept, its byte replaced" "p$(printf '\xef\xbf\xbd').yaml"
check "trace --json of it" 0 "$FWE" -f "$latin1" --json trace --iif eth0 --src 192.0.2.1 --dst 192.0.2.2 --dport 22

# check --json times compiling's phases.
check "check --json" 0 "$FWE" --frontend yaml -f "$ROOT/fixtures/yaml/example/policy.yaml" --json check
contains "check --json times reading" '"ms":{"hash":'
contains "check --json times reading" '"read":'

# migrate --to yaml keeps the IR hash, for Calico and for our own YAML.
for input in "calico:$ROOT/fixtures/calico/home-cluster" "yaml:$ROOT/fixtures/yaml/example/policy.yaml" \
             "yaml:$ROOT/fixtures/yaml/nat" "yaml:$ROOT/integration/scenarios/yaml/forward-port/policy.yaml"; do
  fe=${input%%:*} src=${input#*:} out_dir="$work/migrated-$passes"
  check "ir of $src" 0 "$FWE" --frontend "$fe" -f "$src" --node control1.kryukov.local --json check
  want=$(sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p' <<<"$out")
  check "migrate $src" 0 "$FWE" --frontend "$fe" -f "$src" --node control1.kryukov.local migrate --to yaml -o "$out_dir"
  check "check migrated $src" 0 "$FWE" --frontend yaml -f "$out_dir" --json check
  got=$(sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p' <<<"$out")
  if [ -z "$want" ] || [ "$want" != "$got" ]; then
    echo "FAIL migrate $src: hash $got, expected $want"; failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
done

# Found by an exploratory review: what a user meets on the way.
EXAMPLE="$ROOT/fixtures/yaml/example/policy.yaml"
check "check --json of bad input lists the diagnostics" 2 "$FWE" -f "$work/bad.yaml" --json check
contains "diagnostic as JSON" '"line":4'
check "trace shows a log rule on the way without -v" 0 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 198.51.100.7 --dst 192.0.2.10 --dport 8443
contains "the log step" "log-drops rule 0 (log)"
check "trace of a rate-limited rule" 0 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 198.51.100.7 --dst 192.0.2.10 --proto icmp
contains "says it takes the packet as under the rate" "ping rule 0 (accept) while under 20/second"
check "trace: an interface name longer than the kernel's" 2 "$FWE" -f "$EXAMPLE" trace --iif eth0123456789abcdef --src 192.0.2.1 --dst 192.0.2.2
contains "interface name message" "is not an interface name (1 to 15 characters"
check "--json with an unknown option" 2 "$FWE" --json --bogus check
equals "an unknown option is JSON on stdout with --json" "$("$FWE" --json --bogus check 2>/dev/null)" \
  '{"error":"unrecognised option '"'"'--bogus'"'"' (see fwengine --help)","exit":2,"ok":false}'
check "--json with an unknown backend" 2 "$FWE" --json --backend nope -f "$EXAMPLE" check
contains "an unknown backend is JSON too" '"ok":false'
check "the same file twice" 2 "$FWE" -f "$EXAMPLE" -f "$EXAMPLE" check && contains "twice message" "is given twice"
check "migrate to a backend" 2 "$FWE" -f "$EXAMPLE" migrate --to nft -o "$work/to-nft"
contains "migrate to a backend message" "'fwengine --backend nft render'"
check "Calico resources with the yaml frontend" 2 "$FWE" -f "$ROOT/fixtures/calico/home-cluster" check
contains "Calico hint" "this is a Calico resource: read it with --frontend calico"
mkdir -p "$work/crowded" && cp "$EXAMPLE" "$work/crowded/00-default.yaml" && echo '{}' >"$work/crowded/notes.json"
check "migrate into a directory that holds a policy" 0 "$FWE" -f "$ROOT/fixtures/yaml/nat" migrate --to yaml -o "$work/crowded"
contains "migrate warns of the other policy" "also holds 00-default.yaml, which"
# What 'fwengine -f DIR' fails on: a link to nothing, a FIFO; not a hidden one (an editor's lock).
mkdir -p "$work/dangling" && ln -s "$work/nothing-here" "$work/dangling/gone.yaml"
ln -s "$work/nothing-here" "$work/dangling/.#lock.yaml" && mkfifo "$work/dangling/pipe.yaml"
check "migrate into a directory with a link to nothing" 0 "$FWE" -f "$ROOT/fixtures/yaml/nat" migrate --to yaml -o "$work/dangling"
contains "migrate warns of what the read fails on" "also holds gone.yaml, pipe.yaml, which 'fwengine -f $work/dangling' cannot read"
equals "but not of an editor's lock" "$(grep -c 'lock' <<<"$out")" 0
# A link where migrate writes is replaced, never written through: the policy stays in -o DIR.
mkdir -p "$work/linked" "$work/outside" && echo "kept" >"$work/outside/kept.yaml"
ln -s "$work/outside/policy.yaml" "$work/linked/policy.yaml"
check "migrate over a link to nothing" 0 "$FWE" -f "$ROOT/fixtures/yaml/nat" migrate --to yaml -o "$work/linked"
equals "the link became the policy" "$(test -f "$work/linked/policy.yaml" && ! test -L "$work/linked/policy.yaml" && echo file)" file
equals "nothing was written outside" "$(ls "$work/outside")" kept.yaml
ln -sf "$work/outside/kept.yaml" "$work/linked/policy.yaml"
check "migrate over a link to a file" 0 "$FWE" -f "$ROOT/fixtures/yaml/nat" migrate --to yaml -o "$work/linked"
equals "the linked file is left alone" "$(cat "$work/outside/kept.yaml")" kept
check "the migrated policy loads" 0 "$FWE" -f "$work/linked" check
ln -s "$work/outside/00-felixconfiguration.yaml" "$work/linked/00-felixconfiguration.yaml"
check "migrate --to calico over a link to nothing (exit 2: rate-limited rules)" 2 \
  "$FWE" --node n1 -f "$EXAMPLE" migrate --to calico -o "$work/linked"
equals "calico: the link became the file" \
  "$(test -f "$work/linked/00-felixconfiguration.yaml" && ! test -L "$work/linked/00-felixconfiguration.yaml" && echo file)" file
equals "calico: nothing was written outside" "$(ls "$work/outside")" kept.yaml
equals "no temporary file is left" "$(ls -A "$work/linked" | grep -c '^\.')" 0
equals "the file has the umask's mode" "$(umask 077 && "$FWE" -f "$ROOT/fixtures/yaml/nat" migrate --to yaml -o "$work/linked" >/dev/null 2>&1 && stat -c %a "$work/linked/policy.yaml")" 600
# Calico's files are written also when some of the policy cannot be said (exit 2).
mkdir -p "$work/crowded-calico" && cp "$EXAMPLE" "$work/crowded-calico/zz-old.yaml"
echo '{}' >"$work/crowded-calico/zz-old.json"  # the calico frontend reads *.json too
check "migrate --to calico with errors into a directory that holds a policy" 2 \
  "$FWE" --node n1 -f "$ROOT/fixtures/yaml/nat" migrate --to calico -o "$work/crowded-calico"
contains "migrate warns of the other policy there too" "also holds zz-old.json, zz-old.yaml, which"
check "migrate -o ''" 2 "$FWE" -f "$EXAMPLE" migrate --to yaml -o ''
contains "an empty -o is a usage error" "--output needs a value"
# pkt-type: a multicast or the limited broadcast destination is sent to such a MAC; --pkt-type says so of
# a subnet's broadcast.
printf 'apiVersion: fwengine/v1\nchains:\n  c:\n    - {pkt-type: multicast, action: drop}\n    - {pkt-type: broadcast, action: drop}\nstages:\n  input:\n    - endpoints: [{name: any, chains: [c], default: accept}]\n' > "$work/pkt-type.yaml"
check "trace to a multicast address" 0 "$FWE" -f "$work/pkt-type.yaml" trace --iif eth0 --src 10.0.0.1 --dst 224.0.0.251 --proto udp --dport 5353
contains "multicast is dropped" "verdict: closed"
check "trace to the limited broadcast" 0 "$FWE" -f "$work/pkt-type.yaml" trace --iif eth0 --src 10.0.0.1 --dst 255.255.255.255 --proto udp --dport 67
contains "broadcast is dropped" "verdict: closed"
check "trace to an IPv6 multicast address" 0 "$FWE" -f "$work/pkt-type.yaml" trace --iif eth0 --src fe80::1 --dst ff02::1 --proto icmpv6
contains "IPv6 multicast is dropped" "verdict: closed"
check "trace to a subnet's broadcast address" 0 "$FWE" -f "$work/pkt-type.yaml" trace --iif eth0 --src 10.0.0.1 --dst 10.0.0.255 --proto udp --dport 137
contains "taken for unicast" "verdict: open"
check "trace --pkt-type broadcast" 0 "$FWE" -f "$work/pkt-type.yaml" trace --iif eth0 --src 10.0.0.1 --dst 10.0.0.255 --proto udp --dport 137 --pkt-type broadcast
contains "as given" "verdict: closed"
printf 'apiVersion: fwengine/v1\nchains:\n  c:\n    - {pkt-type: multicast, action: drop}\nstages:\n  output:\n    - endpoints: [{name: any, chains: [c], default: accept}]\n' > "$work/pkt-type-out.yaml"
check "trace: the reply to a multicast is unicast" 0 "$FWE" -f "$work/pkt-type-out.yaml" trace --iif eth0 --src 10.0.0.1 --dst 224.0.0.251 --proto udp --dport 5353
contains "so the output's multicast rule leaves it" "verdict: open"
check "trace --pkt-type of what the host sends" 2 "$FWE" -f "$work/pkt-type-out.yaml" trace --oif eth0 --src 10.0.0.1 --dst 224.0.0.251 --proto udp --dport 5353 --pkt-type multicast
contains "refused" "--pkt-type multicast needs --iif"
for dst in "255.255.255.255" "10.0.0.255 --pkt-type broadcast"; do
  check "trace: a broadcast to $dst is not forwarded" 2 "$FWE" -f "$work/pkt-type.yaml" trace --iif eth0 --oif eth1 --src 10.0.0.1 --dst $dst --proto udp --dport 67
  contains "refused, $dst" "a broadcast packet is never forwarded"
done
check "trace: a multicast can be forwarded (multicast routing)" 0 "$FWE" -f "$work/pkt-type.yaml" trace --iif eth0 --oif eth1 --src 10.0.0.1 --dst 239.1.1.1 --proto udp --dport 5000
check "trace --pkt-type misspelt" 2 "$FWE" -f "$work/pkt-type.yaml" trace --iif eth0 --src 10.0.0.1 --dst 10.0.0.255 --proto udp --dport 137 --pkt-type brodcast
contains "pkt-type message" "must be unicast, broadcast or multicast"
check "trace --icmp-type by name" 0 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 10.0.0.9 --dst 10.0.0.1 --proto icmp --icmp-type echo-reply
contains "icmp type by name" "type 0 code 0"
contains "an echo reply alone is invalid, and trace says why" "--state established traces the reply to one"
check "trace of a router advertisement" 0 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 10.0.0.9 --dst 10.0.0.1 --proto icmp --icmp-type 9
contains "no --state makes it valid" "it can neither start a connection nor belong to one"
check "trace of neighbour discovery" 0 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src fe80::9 --dst 2001:db8::1 --proto icmpv6 --icmp-type nd-neighbor-solicit
contains "neighbour discovery is untracked" "(input, untracked)"
check "trace --icmp-type misspelt" 2 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 10.0.0.9 --dst 10.0.0.1 --proto icmp --icmp-type echo-requets
contains "icmp type hint" "did you mean 'echo-request'?"
check "trace to a closed port" 0 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 10.0.0.9 --dst 10.0.0.1 --dport 99
contains "the endpoint's default names its line" "endpoint uplink default -> drop  $EXAMPLE:43:11 (uplink)"
check "trace --icmp-type as firewalld names it" 0 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 10.0.0.9 --dst 10.0.0.1 --proto icmp --icmp-type port-unreachable
contains "the name gives the code" "type 3 code 3"
check "trace --icmpv6 type as firewalld names it" 0 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 2001:db8::9 --dst 2001:db8::1 --proto icmpv6 --icmp-type neighbour-solicitation
contains "ICMPv6 neighbour solicitation" "type 135 code 0"
check "trace --icmp-type name with another code" 2 "$FWE" -f "$EXAMPLE" trace --iif eth0 --src 10.0.0.9 --dst 10.0.0.1 --proto icmp --icmp-type host-prohibited --icmp-code 3
contains "name and code contradict" "--icmp-type host-prohibited is type 3 code 10, not code 3"
# (checked with the options, before anything else: the netns named does not exist)
NAT=("$FWE" -f "$ROOT/fixtures/yaml/nat/policy.yaml" trace --iif wan0 --src 198.51.100.9 --dst 203.0.113.7 --dport 8080)
check "trace of a port forward, as input" 0 "${NAT[@]}"
contains "dnat's destination" "(dnat): to 192.168.10.20 port 80 (traced on as input to this host; --oif IF traces it forwarded)"
check "trace of a port forward, forwarded" 0 "${NAT[@]}" --oif lan0
contains "dnat without the hint" "(dnat): to 192.168.10.20 port 80  "
check "apply --confirm -1" 2 "$FWE" --netns fwe-no-such-ns-$$ -f "$EXAMPLE" apply --confirm -1
contains "confirm range" "1 to 86400"

# Contradictions and empty values are usage errors, not a silent choice.
check "a frontend option and its alias" 2 "$FWE" --frontend firewalld --firewalld-compat 1.3 --frontend-option compat=2 check
contains "given twice" "--frontend-option compat is given twice ('compat=2' and 'compat=1.3'"
check "a backend option twice" 2 "$FWE" --backend-option counters=rule --backend-option counters=element -f "$EXAMPLE" check
contains "backend option twice" "--backend-option counters is given twice"
check "an iptables atomic of neither ruleset nor table" 2 "$FWE" --backend iptables --backend-option atomic=tables -f "$EXAMPLE" render
contains "atomic's values" "the iptables backend's atomic must be ruleset or table, not 'tables'"
check "iptables atomic=table" 0 "$FWE" --backend iptables --backend-option atomic=table -f "$EXAMPLE" render
check "an empty --backend" 2 "$FWE" --backend '' -f "$EXAMPLE" render
contains "empty value" "--backend needs a value"
# The node name is part of the etcd cache's path: one Felix would not take is refused before anything.
check "a node name with a '/'" 2 "$FWE" --frontend calico --node ../../tmp/x -f "$ROOT/fixtures/calico/home-cluster" check
contains "node name" "'../../tmp/x' is not a node name (--node)"
# A source without end is not read into memory without bound.
check "a device as a policy file" 2 "$FWE" -f /dev/zero check
contains "bounded read" "/dev/zero: error: holds more than 64 MiB, more than any policy or config fwengine reads"
check "a device on standard input" 2 sh -c 'exec "$1" --frontend calico --node n1 -f - check </dev/zero' sh "$FWE"
contains "bounded stdin" "<stdin>: error: holds more than 64 MiB"
check "a directory on standard input" 2 sh -c 'exec "$1" -f - check </' sh "$FWE"
contains "stdin read error" "<stdin>: error: cannot read standard input: Is a directory"
truncate -s 65M "$work/large.conf"
check "a config file over the bound" 2 "$FWE" --config "$work/large.conf" check
contains "bounded config" "large.conf: error: holds more than 64 MiB"
touch "$work/not-a-dir"
check "migrate -o a file" 2 "$FWE" -f "$EXAMPLE" migrate --to yaml -o "$work/not-a-dir"
contains "migrate -o" "is not a directory"
# The daemon reads its sources at every reload: stdin would give an empty policy the second time.
check "daemon from stdin" 2 "$FWE" -f - daemon </dev/null
contains "daemon stdin" "the daemon reads its policy again at every reload, which stdin cannot give"
# Refused before the datastore is read (nothing listens on port 1 of the loopback of a fresh namespace).
if [ "$(id -u)" = 0 ]; then
  # --json is one document for every command: apply --dry-run's is diff's, with the rendered text.
  dry_run=$(unshare -n "$FWE" --json -f "$EXAMPLE" apply --dry-run 2>/dev/null)
  equals "apply --dry-run --json is one JSON document" \
    "$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["same"], "table inet fwengine" in d["text"])' <<<"$dry_run")" \
    "False True"
  check "apply --confirm of a datastore" 2 unshare -n "$FWE" --frontend calico --source etcd://127.0.0.1:1 \
    apply --confirm 5
  contains "not kept" "cannot be kept for rollback"
fi

summary
