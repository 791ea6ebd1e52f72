#!/usr/bin/env bash
# What a running engine keeps of its process (root, nft backend, throwaway namespaces): transparent huge
# pages only while its policy is large (at least 512 KiB of files), decided again at each reload; and the
# state directory of a namespace found by name again when the namespace gets a name while it runs.
set -uo pipefail
FWE=$1 ROOT=$2
[ "$(id -u)" = 0 ] || exit 77
"$FWE" plugins | grep -q '^nft .*backend' || { echo "nft backend not built"; exit 77; }
grep -q '^THP_enabled:' /proc/self/status || { echo "no THP_enabled in /proc/PID/status"; exit 77; }
ns=fwe-mem-$$ named=fwe-mem-named-$$
work=$(mktemp -d)
pids=() unnamed_dir=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  ip netns del "$named" 2>/dev/null
  rm -rf "/run/fwengine/$ns" "/run/fwengine/$named" ${unnamed_dir:+"$unnamed_dir"} "$work"
}
trap cleanup EXIT
ip netns add "$ns"
failures=0 passes=0
expect() {  # expect NAME COMMAND...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; failures=$((failures + 1)); fi
}
thp_of() { sed -n 's/^THP_enabled:[[:space:]]*//p' "/proc/$1/status"; }
wait_until() {  # wait_until SECONDS COMMAND...
  local deadline=$(( $(date +%s) + $1 )); shift
  while [ "$(date +%s)" -le "$deadline" ]; do "$@" && return 0; sleep 0.2; done
  return 1
}
applied() { [ -s "/run/fwengine/$1/state.json" ]; }

mkdir -p "$work/live"
cp "$ROOT/fixtures/yaml/example/policy.yaml" "$work/small.yaml"
# The same policy with 600 KiB of comment lines: the same rules, a large file.
{ cat "$work/small.yaml"; yes "# padding padding padding padding padding padding padding padding" | head -n 9600; } \
  > "$work/large.yaml"
cp "$work/small.yaml" "$work/live/policy.yaml"

# --- huge pages --------------------------------------------------------------------------------
"$FWE" --netns "$ns" -q -f "$work/live/policy.yaml" daemon 2> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "the daemon applies the small policy" wait_until 10 applied "$ns"
expect "a small policy: no huge pages" test "$(thp_of "$daemon")" = 0
thp_is() { test "$(thp_of "$daemon")" = "$1"; }
cp "$work/large.yaml" "$work/live/policy.yaml"
kill -HUP "$daemon"
expect "reloaded with a large policy: huge pages" wait_until 10 thp_is 1
cp "$work/small.yaml" "$work/live/policy.yaml"
kill -HUP "$daemon"
expect "reloaded with the small policy again: none" wait_until 10 thp_is 0

# --- a namespace named while the daemon runs ---------------------------------------------------
unshare -n "$FWE" -q -f "$work/small.yaml" daemon 2> "$work/unnamed.log" &
unnamed=$!
pids+=($unnamed)
# Its namespace once unshare has made it (the pid is the same before and after the exec).
host_netns=$(stat -L -c %i /proc/self/ns/net)
left_host() { [ "$(stat -L -c %i "/proc/$unnamed/ns/net" 2>/dev/null)" != "$host_netns" ]; }
wait_until 10 left_host
unnamed_dir=/run/fwengine/netns-$(stat -L -c %i "/proc/$unnamed/ns/net")
expect "an unnamed namespace's state is under netns-<inode>" wait_until 10 applied "$(basename "$unnamed_dir")"
ip netns attach "$named" "$unnamed"
kill -HUP "$unnamed"
expect "named later, its next reload keeps its state under the name" wait_until 10 applied "$named"

echo "$passes passed, $failures failed"
[ "$failures" = 0 ]
