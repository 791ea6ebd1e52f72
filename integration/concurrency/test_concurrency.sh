#!/usr/bin/env bash
# test_concurrency.sh FWENGINE SOURCE_DIR BACKEND - writers at the same time never mix (issue #9): many
# applies of two policies racing each other, applies racing a daemon that reloads on every file change,
# and a flush racing both. After each round the kernel must hold exactly one whole policy (the hash of A
# or of B, no drift, `diff` clean against it) or, after a flush that came last, nothing; every writer
# either succeeded or waited its turn, none failed. Root; a throwaway namespace; exit 77 without them.
set -u
engine=$1 src=$2 backend=$3
source "$src/core/tests/cli/checks.sh"
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
"$engine" plugins | grep -q "^$backend .*backend" || { echo "skipped: backend $backend not built"; exit 77; }
ns=fwe-conc-$$
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  "$engine" --netns "$ns" --backend "$backend" -q flush >/dev/null 2>&1
  ip netns del "$ns" 2>/dev/null
  rm -rf "/run/fwengine/$ns" "$work"
}
trap cleanup EXIT
ip netns add "$ns" || { echo "skipped: cannot create network namespaces"; exit 77; }
ip -n "$ns" link set lo up
ip -n "$ns" link add veth-up type veth peer name veth-peer
ip -n "$ns" link set veth-up up

policy_a=$src/fixtures/yaml/example/policy.yaml
policy_b=$src/fixtures/yaml/ipv6/policy.yaml
hash_of() { "$engine" -f "$1" --json check | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p'; }
hash_a=$(hash_of "$policy_a") hash_b=$(hash_of "$policy_b")
fwe() { "$engine" --netns "$ns" --backend "$backend" --lock-timeout 120 "$@"; }

# The kernel holds one whole policy of the allowed ones: its hash, no drift, and `diff` clean.
holds_one_of() {  # holds_one_of NAME ALLOWED-HASH... ("none" allows an empty kernel)
  local name=$1; shift
  local status hash present
  status=$(fwe --json status)
  present=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["present"])' <<<"$status")
  hash=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["hash"] if d["present"] else "none")' <<<"$status")
  local drift
  drift=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["drift"]))' <<<"$status")
  out="kernel: $hash (present $present, drift $drift); allowed: $*"
  if [[ " $* " != *" $hash "* ]] || [ "$drift" != 0 ]; then
    echo "FAIL $name"; echo "    $out"; failures=$((failures + 1)); return 1
  fi
  case $hash in
    "$hash_a") check "$name: diff is clean" 0 fwe -f "$policy_a" diff --exit-code ;;
    "$hash_b") check "$name: diff is clean" 0 fwe -f "$policy_b" diff --exit-code ;;
    *) passes=$((passes + 1)) ;;
  esac
}

# Starts writers in the background; every one must end with exit 0.
writers=()
start() { fwe -q "$@" >"$work/writer-${#writers[@]}.log" 2>&1 & writers+=($!); }
all_succeed() {  # all_succeed NAME
  local failed=0 i
  for i in "${!writers[@]}"; do
    wait "${writers[$i]}" || { failed=1; echo "    writer $i: $(cat "$work/writer-$i.log")"; }
  done
  writers=()
  if [ "$failed" = 0 ]; then passes=$((passes + 1)); else echo "FAIL $1: a writer failed"; failures=$((failures + 1)); fi
}

for round in 1 2 3; do
  for _ in 1 2 3; do
    start -f "$policy_a" apply
    start -f "$policy_b" apply
  done
  all_succeed "round $round: six racing applies"
  holds_one_of "round $round: six racing applies leave one whole policy" "$hash_a" "$hash_b"
  start -f "$policy_a" apply
  start flush
  start -f "$policy_b" apply --full
  all_succeed "round $round: applies racing a flush"
  holds_one_of "round $round: after a flush race, one whole policy or nothing" "$hash_a" "$hash_b" none
done

# The daemon reloads after its debounce, later still on a loaded machine: wait until what status reports
# (hash and apply time) has stayed the same for a second.
settle() {
  local last="" now
  for _ in $(seq 30); do
    now=$(fwe --json status)
    [ "$now" = "$last" ] && return
    last=$now
    sleep 1
  done
}

# A daemon that reloads on every change of its file, while applies of the other policy race it.
cp "$policy_a" "$work/policy.yaml"
# The engine itself, not a shell around it: its pid is what gets SIGTERM.
"$engine" --netns "$ns" --backend "$backend" --lock-timeout 120 -f "$work/policy.yaml" daemon --watch \
  >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do fwe status | grep -q "IR $hash_a" && break; sleep 0.1; done
for round in 1 2 3; do
  cp "$policy_b" "$work/policy.yaml.new" && mv "$work/policy.yaml.new" "$work/policy.yaml"
  start -f "$policy_a" apply
  start -f "$policy_b" apply
  sleep 0.2
  cp "$policy_a" "$work/policy.yaml.new" && mv "$work/policy.yaml.new" "$work/policy.yaml"
  start -f "$policy_b" apply
  all_succeed "daemon round $round: applies racing the daemon's reloads"
  settle
  holds_one_of "daemon round $round: one whole policy" "$hash_a" "$hash_b"
done
kill "$daemon_pid"
wait "$daemon_pid"
rc=$?
daemon_pid=""
if [ "$rc" = 0 ] && ! grep -q "reload failed" "$work/daemon.log"; then
  passes=$((passes + 1))
else
  echo "FAIL the daemon never failed a reload and stopped cleanly (exit $rc)"; sed 's/^/    /' "$work/daemon.log"
  failures=$((failures + 1))
fi
summary
