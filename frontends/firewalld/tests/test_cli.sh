#!/usr/bin/env bash
# fwengine --frontend firewalld on the command line: located errors exit 2, valid trees check, and the
# --firewalld-* aliases. No kernel is touched.
set -uo pipefail
FWE=$1 ROOT=$2
FIX=$ROOT/fixtures/firewalld
source "$ROOT/core/tests/cli/checks.sh"

FW=("$FWE" --frontend firewalld --firewalld-defaults /usr/lib/firewalld)
mkdir -p "$work/empty"
check "stock configuration checks" 0 "${FW[@]}" -f "$work/empty" check
check "stock configuration, compat 1.3" 0 "${FW[@]}" --firewalld-compat 1.3 -f "$work/empty" check
check "overlay fixture checks" 0 "${FW[@]}" -f "$FIX/overlay" check

check "bad tree exits 2" 2 "${FW[@]}" -f "$FIX/bad" check
contains "unknown element located" "$FIX/bad/zones/public.xml:4:3: error: unknown element <servise> in a zone"
contains "unknown element hint" "did you mean 'service'?"
check "bad tree, compat 1.3, still exits 2" 2 "${FW[@]}" --firewalld-compat 1.3 -f "$FIX/bad" check
contains "unknown element located (1.3)" "$FIX/bad/zones/public.xml:4:3: error:"

mkdir -p "$work/svc/zones"
printf '<?xml version="1.0"?>\n<zone>\n  <service name="htttp"/>\n</zone>\n' >"$work/svc/zones/public.xml"
check "unknown service exits 2" 2 "${FW[@]}" -f "$work/svc" check
contains "unknown service located" "$work/svc/zones/public.xml:3:3: error: zone public uses the unknown service htttp"

mkdir -p "$work/broken/zones"
printf '<zone>\n  <service name="ssh">\n</zone>\n' >"$work/broken/zones/public.xml"
check "broken XML exits 2" 2 "${FW[@]}" -f "$work/broken" check
contains "broken XML located" "$work/broken/zones/public.xml:3:3: error: broken XML"

check "missing directory" 2 "${FW[@]}" -f "$work/nosuch" check
contains "missing directory message" "firewalld configuration directory $work/nosuch does not exist"
check "a file, not a directory" 2 "${FW[@]}" -f "$work/svc/zones/public.xml" check
contains "file message" "firewalld configuration $work/svc/zones/public.xml is a file, not a directory"

if "$FWE" plugins | grep -q '^ebpf .*backend'; then
  check "ebpf cannot run a firewalld configuration" 2 "${FW[@]}" -f "$work/empty" --backend ebpf render
  contains "and says why" "the firewalld frontend adds this rule to every policy: choose another --backend"
fi

# DCCP ports (firewalld's port, source-port and rich-rule protocols include dccp) reach both backends.
mkdir -p "$work/dccp/zones"
cat >"$work/dccp/zones/public.xml" <<'XML'
<?xml version="1.0"?>
<zone>
  <port port="5004" protocol="dccp"/>
  <rule family="ipv4"><source address="10.0.0.0/8"/><port port="6000" protocol="dccp"/><drop/></rule>
  <source-port port="7000" protocol="dccp"/>
</zone>
XML
check "dccp ports render for nft" 0 "${FW[@]}" -f "$work/dccp" --backend nft render
contains "dccp port" "meta l4proto 33 th dport 5004 counter accept"
contains "dccp source port" "meta l4proto 33 th sport 7000 counter accept"
contains "dccp rich rule" "meta l4proto 33 ip saddr 10.0.0.0/8 th dport 6000 counter drop"
check "dccp ports render for iptables" 0 "${FW[@]}" -f "$work/dccp" --backend iptables render
contains "iptables dccp port" "-p dccp -m multiport --dports 5004"
contains "iptables dccp rich rule" "-s 10.0.0.0/8 -p dccp -m multiport --dports 6000"
check "trace of an IPv4 packet" 0 "${FW[@]}" -f "$work/dccp" trace --iif eth0 --src 10.1.1.1 --dst 10.2.2.2 --proto dccp --dport 5004
equals "shows no IPv6-only section it passed (without -v)" "$(grep -c ipv6-rpfilter <<<"$out")" 0
check "trace of a dccp packet" 0 "${FW[@]}" -f "$work/dccp" trace --iif eth0 --src 10.1.1.1 --dst 10.2.2.2 --proto dccp --dport 6000
contains "the rich rule drops it" "verdict: closed"
# Without a firewalld.conf, what firewalld does by itself says so; migrate does not list it as a source.
check "trace of loopback traffic" 0 "${FW[@]}" -f "$work/dccp" trace --iif lo --src 127.0.0.1 --dst 127.0.0.1 --dport 9
contains "the prelude names firewalld's defaults" "<firewalld's defaults: no firewalld.conf> (firewalld filter_INPUT)"
check "migrate without a firewalld.conf" 0 "${FW[@]}" -f "$work/dccp" migrate --to yaml -o "$work/dccp-yaml"
equals "its header names real files only" "$(head -1 "$work/dccp-yaml"/*.yaml | grep -c '<firewalld')" 0

# The iptables backend cannot assign a service's helper where firewalld does: it says so at render.
mkdir -p "$work/ftp/zones"
printf '<?xml version="1.0"?>\n<zone>\n  <service name="ftp"/>\n</zone>\n' >"$work/ftp/zones/public.xml"
check "a helper iptables leaves out" 0 "${FW[@]}" -f "$work/ftp" --backend iptables render
contains "is a warning at its service" "$work/ftp/zones/public.xml:3:3: warning: iptables assigns conntrack helpers only before conntrack: helper 'ftp'"

# A zone bound to a source MAC: trace says that a packet without --src-mac has none.
mkdir -p "$work/mac/zones"
printf '<?xml version="1.0"?>\n<zone target="ACCEPT">\n  <source address="52:54:00:12:34:56"/>\n</zone>\n' >"$work/mac/zones/trusted.xml"
check "trace without --src-mac" 0 "${FW[@]}" -f "$work/mac" trace --iif eth0 --src 10.1.1.1 --dst 10.2.2.2 --dport 8080
contains "notes that the packet has no MAC" "without --src-mac this packet has none of them"
check "trace with the bound MAC" 0 "${FW[@]}" -f "$work/mac" trace --iif eth0 --src 10.1.1.1 --dst 10.2.2.2 --dport 8080 --src-mac 52:54:00:12:34:56
contains "goes to the MAC's zone" "verdict: open"

check "bad compat value" 2 "${FW[@]}" --firewalld-compat 3 -f "$work/empty" check
contains "bad compat message" "--firewalld-compat must be 1.3 or 2"
check "alias with another frontend" 2 "$FWE" --frontend yaml --firewalld-compat 1.3 -f "$ROOT/fixtures/yaml/example/policy.yaml" check
contains "alias frontend message" "need --frontend firewalld"
check "unknown frontend option" 2 "${FW[@]}" --frontend-option compt=2 -f "$work/empty" check
contains "option hint" "did you mean 'compat'?"

# docs/migrating-from-firewalld.md shows real outputs for its example configuration: they stay true.
guide=$ROOT/docs/migrating-from-firewalld.md
mkdir -p "$work/guide/zones"
sed -n '/^```xml$/,/^```$/p' "$guide" | sed '1d;$d' >"$work/guide/zones/public.xml"
check "the migration guide's example checks" 0 "${FW[@]}" -f "$work/guide" check
checked=$out
equals "as the guide shows it" "$(grep -cxF -- "$checked" "$guide")" 2
check "the guide's example converts to YAML" 0 "${FW[@]}" -f "$work/guide" migrate --to yaml -o "$work/guide-yaml"
check "which checks with the same IR hash" 0 "$FWE" -f "$work/guide-yaml" check
equals "as the guide shows it" "$out" "$checked"
check "the guide's trace" 0 "${FW[@]}" -f "$work/guide" trace --iif eth0 --src 203.0.113.9 --dst 192.0.2.10 --proto tcp --dport 22
equals "closes the ssh of the dropped network, as the guide shows it" \
  "$(sed "s#$work/guide/#/etc/firewalld/#" <<<"$out" | grep -cxF -f - "$guide")" "$(wc -l <<<"$out")"
if "$FWE" plugins | grep -q '^calico '; then
  check "the guide's example converts to Calico (exit 2: a rule it cannot write)" 2 "${FW[@]}" -f "$work/guide" --node web-1 migrate --to calico -o "$work/guide-calico"
  check "whose resources check" 0 "$FWE" --frontend calico -f "$work/guide-calico" --node web-1 check
  equals "as the guide shows it" "$(grep -cxF -- "$out" "$guide")" 1
fi

echo "$passes checks passed, $failures failed"
[ "$failures" = 0 ]
