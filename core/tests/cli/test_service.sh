#!/usr/bin/env bash
# Safe apply and service mode in throwaway network namespaces (root, nft backend): apply --confirm rolls
# back by itself unless confirmed - also when the shell that ran it is killed; the daemon applies at
# start, tells systemd it is ready, reloads on SIGHUP and on file changes, keeps the last good ruleset
# when a new one is bad, starts again with a changed fwengine.conf, and leaves the ruleset in place on
# SIGTERM.
set -uo pipefail
FWE=$1 ROOT=$2
[ "$(id -u)" = 0 ] || exit 77
"$FWE" plugins | grep -q '^nft .*backend' || { echo "nft backend not built"; exit 77; }
ns=fwe-svc-$$ ns2=fwe-svc2-$$
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  # The rollback watchdogs are ours too: their pids are in the pending files.
  for n in "$ns" "$ns2"; do
    pid=$(sed -n 's/.*"watchdog":\([0-9]*\).*/\1/p' "/run/fwengine/$n/pending-confirm" 2>/dev/null)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    ip netns del "$n" 2>/dev/null
    rm -rf "/run/fwengine/$n"
  done
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip netns add "$ns2"
failures=0 passes=0
expect() {  # expect NAME COMMAND...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; failures=$((failures + 1)); fi
}
hash_of() { "$FWE" -f "$1" --json check | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p'; }
kernel_hash() { "$FWE" --netns "$1" --json status | sed -n 's/.*"hash": "\([0-9a-f]*\)".*/\1/p' | head -1; }
wait_for_status() {  # wait_for_status NS PATTERN SECONDS [--json]
  local deadline=$(( $(date +%s) + $3 ))
  while [ "$(date +%s)" -le "$deadline" ]; do
    "$FWE" --netns "$1" ${4:-} status | grep -q -- "$2" && return 0
    sleep 0.2
  done
  return 1
}
applies() { grep -c "applied IR" "$work/daemon.log"; }
quiet_applies() {  # the daemons' applies so far, once their journal is quiet
  local counted=-1
  while [ "$counted" != "$(applies)" ]; do counted=$(applies); sleep 0.5; done
  echo "$counted"
}
wait_for_hash() {  # wait_for_hash NS HASH SECONDS
  local deadline=$(( $(date +%s) + $3 ))
  while [ "$(date +%s)" -le "$deadline" ]; do
    [ "$(kernel_hash "$1")" = "$2" ] && return 0
    sleep 0.2
  done
  return 1
}

mkdir -p "$work/a" "$work/b" "$work/live"
cp "$ROOT/fixtures/yaml/example/policy.yaml" "$work/a/policy.yaml"
sed 's/dport: \[80, 443\]/dport: [443]/' "$work/a/policy.yaml" > "$work/b/policy.yaml"
A=$(hash_of "$work/a/policy.yaml") B=$(hash_of "$work/b/policy.yaml")
expect "the two policies differ" test -n "$A" -a -n "$B" -a "$A" != "$B"

# --- refusals touch nothing: no lock, no state directory ---------------------------------------
"$FWE" --netns "$ns" confirm >/dev/null 2>&1
expect "confirm with nothing pending fails before the lock" test $? = 1 -a ! -e "/run/fwengine/$ns"
"$FWE" --netns "$ns" -f - apply --confirm 30 < "$work/a/policy.yaml" >/dev/null 2>&1
expect "apply --confirm from stdin is refused before the lock" test $? = 2 -a ! -e "/run/fwengine/$ns"

# --- apply --confirm ---------------------------------------------------------------------------
"$FWE" --netns "$ns" -q -f "$work/a/policy.yaml" apply
out=$("$FWE" --netns "$ns" -f "$work/b/policy.yaml" apply --confirm 2)
expect "apply --confirm says when it rolls back" grep -q "comes back at .* unless you run: fwengine --netns $ns confirm" <<<"$out"
expect "the new ruleset is in place at once" test "$(kernel_hash "$ns")" = "$B"
expect "status shows the pending confirmation" grep -q "waiting for confirmation" <<<"$("$FWE" --netns "$ns" status)"
expect "status --json shows it too" grep -q '"waiting-for-confirmation": {' <<<"$("$FWE" --netns "$ns" status --json)"
expect "unconfirmed: the previous ruleset comes back" wait_for_hash "$ns" "$A" 8
expect "status says that the apply was rolled back" \
  wait_for_status "$ns" "rolled back at .*: the apply of IR ${B:0:16} at .* was not confirmed in time" 5
expect "status --json has the rollback" wait_for_status "$ns" '"unconfirmed": "the apply of IR' 5 --json
expect "after the rollback status names the file, not its kept copy" \
  grep -q "from yaml ($work/a/policy.yaml)" <<<"$("$FWE" --netns "$ns" status)"

"$FWE" --netns "$ns" -q -f "$work/b/policy.yaml" apply --confirm 2
"$FWE" --netns "$ns" -q confirm
sleep 3
expect "confirmed: the new ruleset stays" test "$(kernel_hash "$ns")" = "$B"
expect "a later apply ends the rollback's mention" \
  bash -c "! '$FWE' --netns '$ns' status | grep -q 'rolled back'"
"$FWE" --netns "$ns" confirm >/dev/null 2>&1
expect "confirm with nothing pending fails" test $? = 1

# A second apply --confirm the kernel refuses (a conntrack helper it does not know), while the first
# waits: the first's trial goes on, and a confirm keeps the first's policy, not the refused one.
"$FWE" --netns "$ns" -q -f "$work/a/policy.yaml" apply
"$FWE" --netns "$ns" -q -f "$work/b/policy.yaml" apply --confirm 60
"$FWE" --netns "$ns" -q -f "$ROOT/core/tests/cli/refused-by-kernel.yaml" apply --confirm 60 >/dev/null 2>&1
expect "a refused apply --confirm exits 1" test $? = 1
expect "the first trial still waits" grep -q "waiting for confirmation" <<<"$("$FWE" --netns "$ns" status)"
"$FWE" --netns "$ns" -q confirm
"$FWE" --netns "$ns" -q -f "$work/a/policy.yaml" apply --confirm 1
expect "what the confirm kept is the first trial's policy" wait_for_hash "$ns" "$B" 8
sleep 1
expect "and it stays" test "$(kernel_hash "$ns")" = "$B"

# Sources read through symlinks (a directory given by a link, a file in it that is a link): the copy
# kept for the rollback follows them, as the frontends do.
mkdir -p "$work/kept-real" "$work/kept-links"
cp "$work/a/policy.yaml" "$work/kept-real/actual.yaml"
ln -s "$work/kept-real/actual.yaml" "$work/kept-links/policy.yaml"
ln -s "$work/kept-links" "$work/kept-via"
"$FWE" --netns "$ns" -q -f "$work/kept-via" apply
"$FWE" --netns "$ns" -q -f "$work/b/policy.yaml" apply --confirm 2
expect "unconfirmed: a policy read through symlinks comes back" wait_for_hash "$ns" "$A" 8

# What no frontend reads is not copied: an editor's lock file (a dangling link) and a FIFO beside the
# policy. The apply and the copy kept for the rollback both go through.
mkdir -p "$work/with-lock"
cp "$work/a/policy.yaml" "$work/with-lock/policy.yaml"
ln -s "root@host.1234:1700000000" "$work/with-lock/.#policy.yaml"
mkfifo "$work/with-lock/pipe"
"$FWE" --netns "$ns" -q -f "$work/with-lock" apply
expect "an apply beside a dangling link and a FIFO succeeds" test $? = 0
"$FWE" --netns "$ns" -q -f "$work/b/policy.yaml" apply --confirm 2
expect "unconfirmed: the policy beside them comes back" wait_for_hash "$ns" "$A" 8

# The config in effect is kept with the policy: one broken while a trial runs does not stop its rollback.
printf 'backend: nft\n' > "$work/trial.conf"
"$FWE" --config "$work/trial.conf" --netns "$ns" -q -f "$work/a/policy.yaml" apply
"$FWE" --config "$work/trial.conf" --netns "$ns" -q -f "$work/b/policy.yaml" apply --confirm 2
printf 'backend: [oops\n' > "$work/trial.conf"
expect "unconfirmed, its config broken meanwhile: the previous ruleset comes back" wait_for_hash "$ns" "$A" 8
# Nor does a config broken meanwhile keep a confirm from confirming.
printf 'backend: nft\n' > "$work/trial.conf"
"$FWE" --config "$work/trial.conf" --netns "$ns" -q -f "$work/b/policy.yaml" apply --confirm 30
printf 'backend: [oops\n' > "$work/trial.conf"
"$FWE" --config "$work/trial.conf" --netns "$ns" -q confirm
expect "a confirm with its config broken meanwhile confirms" test $? = 0 -a ! -e "/run/fwengine/$ns/pending-confirm"
expect "and the ruleset stays" test "$(kernel_hash "$ns")" = "$B"

# The watchdog's rollback waits for the writer lock like everyone else; whoever holds it first has the
# last word. This script holds the lock at the deadline and, under it, does what a confirm does to the
# pending file (it leaves candidate/ as it is): the rollback that then gets the lock finds nothing to undo.
rollback_pid() { pgrep -f -- "--netns $ns --rollback-of"; }
"$FWE" --netns "$ns" -q -f "$work/a/policy.yaml" apply --confirm 3
exec {lock}<>"/run/fwengine/$ns/lock"
flock "$lock"
for _ in $(seq 80); do rollback_pid >/dev/null && break; sleep 0.1; done
rollback=$(rollback_pid)
expect "at the deadline the rollback waits for the lock" test -n "$rollback"
# Ours to end if this script dies: the pending file that names the watchdog goes next.
pids+=($rollback $(sed -n 's/.*"watchdog":\([0-9]*\).*/\1/p' "/run/fwengine/$ns/pending-confirm"))
rm -f "/run/fwengine/$ns/pending-confirm"
exec {lock}>&-
for _ in $(seq 50); do rollback_pid >/dev/null || break; sleep 0.1; done
expect "the rollback ends" test -z "$(rollback_pid)"
expect "confirmed first: the rollback leaves the ruleset" test "$(kernel_hash "$ns")" = "$A"
expect "the rollback says why it did nothing" grep -q "no rollback: the apply of IR ${A:0:16}" \
  "/run/fwengine/$ns/rollback.log"
expect "confirmed first: status has no rollback" bash -c "! '$FWE' --netns '$ns' status | grep -q 'rolled back'"
"$FWE" --netns "$ns" -q -f "$work/b/policy.yaml" apply

# The shell that applied dies (as when an SSH session drops): the rollback still happens.
setsid bash -c "'$FWE' --netns '$ns' -q -f '$work/a/policy.yaml' apply --confirm 2; sleep 60" &
session=$!
sleep 1
kill -9 -- "-$session" 2>/dev/null
expect "killed session: the new ruleset was applied" test "$(kernel_hash "$ns")" = "$A"
expect "killed session: the previous ruleset still comes back" wait_for_hash "$ns" "$B" 8

# Nothing of fwengine's before: rolling back means removing what was applied.
"$FWE" --netns "$ns2" -q -f "$work/a/policy.yaml" apply --confirm 1
sleep 3
expect "first apply unconfirmed: flushed again" grep -q "nothing of fwengine's is loaded" <<<"$("$FWE" --netns "$ns2" status)"
expect "first apply unconfirmed: status says it was rolled back" wait_for_status "$ns2" "rolled back at" 5

# A file whose name is not UTF-8 (the copy kept for rollback is described in JSON, which holds UTF-8
# only): it applies, and a rollback comes back to it.
mkdir -p "$work/odd"
odd="$work/odd/policy-$(printf '\xff').yaml"
cp "$work/a/policy.yaml" "$odd"
"$FWE" --netns "$ns2" -q -f "$odd" apply
expect "a file whose name is not UTF-8 applies" test "$(kernel_hash "$ns2")" = "$A"
"$FWE" --netns "$ns2" -q -f "$work/b/policy.yaml" apply --confirm 1
expect "and an unconfirmed apply after it rolls back to it" wait_for_hash "$ns2" "$A" 8
"$FWE" --netns "$ns2" -q flush

# --- daemon ------------------------------------------------------------------------------------
"$FWE" --netns "$ns" -q flush
expect "flush after rollbacks leaves nothing of the namespace" test ! -e "/run/fwengine/$ns"
cp "$work/a/policy.yaml" "$work/live/policy.yaml"
python3 - "$work/notify.sock" "$work/notify.txt" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(30)
with open(sys.argv[2], "w") as out:
    out.write(s.recv(4096).decode()); out.flush()
PY
pids+=($!)
for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
NOTIFY_SOCKET="$work/notify.sock" "$FWE" --netns "$ns" -f "$work/live" daemon --watch 2> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "daemon applies at start" wait_for_hash "$ns" "$A" 10
for _ in $(seq 50); do grep -q "READY=1" "$work/notify.txt" 2>/dev/null && break; sleep 0.1; done
expect "daemon tells systemd it is ready" grep -q "READY=1" "$work/notify.txt"
cp "$work/b/policy.yaml" "$work/live/policy.yaml"
expect "--watch: a changed file is applied" wait_for_hash "$ns" "$B" 10
printf 'apiVersion: fwengine/v1\nchains: [oops\n' > "$work/live/policy.yaml"
sleep 2
expect "a bad policy leaves the last good ruleset" test "$(kernel_hash "$ns")" = "$B"
expect "status reports the failed reload" grep -q "last reload failed" <<<"$("$FWE" --netns "$ns" status)"
expect "status --json reports it too" grep -q '"last-reload-failed": {' <<<"$("$FWE" --netns "$ns" status --json)"
expect "the journal names the file and line" grep -q "policy.yaml:[0-9]*:[0-9]*: error" "$work/daemon.log"
printf 'apiVersion: fwengine/v1\nchains:\n  x: [{action: jump}]\n' > "$work/live/policy.yaml"
sleep 2
expect "a later failed reload prints its diagnostics as well" grep -q "^[^ ]*policy.yaml:3:[0-9]*: error" "$work/daemon.log"
# A reload while an apply --confirm is on trial applies nothing; the one after the confirmation does.
"$FWE" --netns "$ns" -q -f "$work/a/policy.yaml" apply --confirm 60
cp "$work/b/policy.yaml" "$work/live/policy.yaml"
sleep 2
expect "a reload while an apply --confirm is on trial leaves it" test "$(kernel_hash "$ns")" = "$A"
expect "and says why" grep -q "not applied: an apply --confirm waits to be confirmed" "$work/daemon.log"
"$FWE" --netns "$ns" -q confirm
cp "$work/b/policy.yaml" "$work/live/policy.yaml"
expect "the reload after the confirmation applies" wait_for_hash "$ns" "$B" 10
kill -TERM "$daemon"; wait "$daemon"; rc=$?
expect "SIGTERM stops the daemon cleanly" test "$rc" = 0
expect "SIGTERM leaves the ruleset in place" test "$(kernel_hash "$ns")" = "$B"

cp "$work/a/policy.yaml" "$work/live/policy.yaml"
"$FWE" --netns "$ns" -f "$work/live" daemon 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "daemon without --watch applies at start" wait_for_hash "$ns" "$A" 10
cp "$work/b/policy.yaml" "$work/live/policy.yaml"
sleep 1.5
expect "without --watch a change waits for SIGHUP" test "$(kernel_hash "$ns")" = "$A"
kill -HUP "$daemon"
expect "SIGHUP reloads" wait_for_hash "$ns" "$B" 10
kill -TERM "$daemon"; wait "$daemon"

# flush-on-stop: the stop removes the ruleset and, as flush does, the copy an unconfirmed apply --confirm
# would roll back to.
printf 'flush-on-stop: true\n' > "$work/flush-on-stop.conf"
# The last daemon left B loaded: without a flush first, B's status could be that daemon's, and the
# SIGTERM below could reach this one before it blocks the signal (then nothing flushes).
"$FWE" --netns "$ns" -q flush
"$FWE" --config "$work/flush-on-stop.conf" --netns "$ns" -f "$work/live" daemon 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "a daemon with flush-on-stop applies at start" wait_for_status "$ns" "${B:0:16}" 10
kill -TERM "$daemon"; wait "$daemon"
expect "flush-on-stop: nothing of fwengine's is loaded" grep -q "nothing of fwengine's is loaded" <<<"$("$FWE" --netns "$ns" status)"
expect "flush-on-stop: no copy is left to roll back to" test ! -e "/run/fwengine/$ns/good"

# A stop while the daemon starts is served once its loop runs: flush-on-stop flushes what was loaded
# before. The daemon is held while it starts: the state of a namespace deleted since, under this one's
# name, is removed under the writer lock, which this script holds until the SIGTERM was sent.
"$FWE" --netns "$ns" -q -f "$work/a/policy.yaml" apply
ip netns del "$ns" && ip netns add "$ns"
"$FWE" --backend nft -f "$work/a/policy.yaml" render | ip netns exec "$ns" nft -f -
exec {lock}<>"/run/fwengine/$ns/lock"
flock "$lock"
# Without the script's descriptor of the lock, which would hold the lock for the daemon too.
"$FWE" --config "$work/flush-on-stop.conf" --netns "$ns" -f "$work/live" daemon {lock}>&- \
  2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
waits_for_lock() { ls -l "/proc/$daemon/fd" 2>/dev/null | grep -q "/run/fwengine/$ns/lock"; }
for _ in $(seq 100); do waits_for_lock && break; sleep 0.1; done
expect "a starting daemon waits for the writer lock" waits_for_lock
kill -TERM "$daemon"
exec {lock}>&-
wait "$daemon"; rc=$?
expect "a stop while the daemon starts ends it cleanly" test "$rc" = 0
expect "a stop while the daemon starts: flush-on-stop flushes" \
  bash -c "! ip netns exec '$ns' nft list table inet fwengine >/dev/null 2>&1"

# A reload reads a changed fwengine.conf: the daemon starts again with it (same pid). A changed config
# that would not start is not used (status says why) and the policy is read with the one in use.
mkdir -p "$work/conf"
conf="$work/conf/fwengine.conf"
printf 'sources: [%s]\n' "$work/a/policy.yaml" > "$conf"
"$FWE" --netns "$ns" --config "$conf" daemon 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "daemon with a config applies its sources" wait_for_hash "$ns" "$A" 10
cp "$work/b/policy.yaml" "$work/conf/live.yaml"
printf 'sources: [%s]\n' "$work/conf/live.yaml" > "$conf"
kill -HUP "$daemon"
expect "SIGHUP: the changed config's sources are applied" wait_for_hash "$ns" "$B" 10
expect "by the same process, started again" kill -0 "$daemon"
expect "the journal says why it started again" grep -q "fwengine.conf changed: starting again" "$work/daemon.log"
printf 'sources: [%s]\nbakend: nft\n' "$work/a/policy.yaml" > "$conf"
kill -HUP "$daemon"
expect "a bad config is not used, reported at its line" wait_for_status "$ns" "fwengine.conf:2:1" 10
expect "the daemon goes on" kill -0 "$daemon"
expect "the kernel keeps the last good ruleset" test "$(kernel_hash "$ns")" = "$B"
unused() { grep -c "is not used: .*fwengine.conf:2:$1.*the policy was read with the config in use" "$work/daemon.log"; }
cp "$work/a/policy.yaml" "$work/conf/live.yaml"
kill -HUP "$daemon"
expect "meanwhile the policy is read with the config in use" wait_for_hash "$ns" "$A" 10
for _ in $(seq 50); do [ "$(unused 1)" -ge 2 ] && break; sleep 0.2; done
expect "and the journal says again why the changed config is not used" test "$(unused 1)" -ge 2
expect "as status does" wait_for_status "$ns" "is not used: .*fwengine.conf:2:1" 10
# A store is not read by the check (a start waits for it), but its address is.
printf 'frontend: calico\nsources: [etcd://192.0.2.1]\n' > "$conf"
kill -HUP "$daemon"
expect "a config with a malformed store address is not used" \
  wait_for_status "$ns" "is not used: '192.0.2.1' in etcd://192.0.2.1 is not HOST:PORT" 10
expect "and the daemon goes on" kill -0 "$daemon"
printf 'sources: [%s]\nbackend-options: {nft: {counters: bogus}}\n' "$work/conf/live.yaml" > "$conf"
kill -HUP "$daemon"
expect "a config whose option the backend refuses is not used" wait_for_status "$ns" "is not used: .*fwengine.conf:2:35" 10
expect "so the daemon did not start again with it" test "$(grep -c "starting again" "$work/daemon.log")" = 1
kill -TERM "$daemon"; wait "$daemon"

# A daemon started with that config fails its reloads at the option's line, every time.
"$FWE" --netns "$ns" --config "$conf" daemon 2> "$work/daemon2.log" &
daemon=$!
pids+=($daemon)
expect "an option the backend refuses fails the reload at its line" wait_for_status "$ns" "fwengine.conf:2:35" 10
failed_at_line() { grep -c 'fwengine.conf:2:35.*the kernel keeps' "$work/daemon2.log"; }  # one a reload
for _ in $(seq 50); do [ "$(failed_at_line)" -ge 1 ] && break; sleep 0.2; done
kill -HUP "$daemon"  # the same config: a plain reload
for _ in $(seq 50); do [ "$(failed_at_line)" -ge 2 ] && break; sleep 0.2; done
expect "and at its line again on the next reload" test "$(failed_at_line)" -ge 2
expect "which status shows" wait_for_status "$ns" "fwengine.conf:2:35" 10
expect "the kernel still keeps the last good ruleset" test "$(kernel_hash "$ns")" = "$A"
kill -TERM "$daemon"; wait "$daemon"

printf 'sources: [%s]\n' "$work/a/policy.yaml" > "$conf"
"$FWE" --netns "$ns" --config "$conf" daemon --watch 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "daemon --watch with a config applies its sources" wait_for_hash "$ns" "$A" 10
sleep 0.5
printf 'sources: [%s]\n' "$work/b/policy.yaml" > "$conf.new" && mv "$conf.new" "$conf"
expect "--watch: a changed config is applied without SIGHUP" wait_for_hash "$ns" "$B" 10
applied=$(quiet_applies)
echo "not the config" > "$work/conf/other.txt"
sleep 1.5
expect "--watch: another file beside the config is no reload" test "$(applies)" = "$applied"
# An editor that moves the file away before it writes the new one: the config in use stays.
mv "$conf" "$conf.away"
expect "--watch: a config moved away is not used" wait_for_status "$ns" "fwengine.conf is not used: it is gone" 10
expect "the kernel keeps its ruleset" test "$(kernel_hash "$ns")" = "$B"
expect "and the daemon did not start again" test "$(grep -c "starting again" "$work/daemon.log")" = 2
mv "$conf.away" "$conf"
# Its whole directory replaced: deleted, then made again with another config, which is used.
gone_reloads() { grep -c "fwengine.conf is not used: it is gone" "$work/daemon.log"; }
before=$(gone_reloads)
mv "$work/conf" "$work/conf.gone"
for _ in $(seq 50); do [ "$(gone_reloads)" -gt "$before" ] && break; sleep 0.2; done
expect "--watch: a config whose directory went is not used" test "$(gone_reloads)" -gt "$before"
sleep 0.5
mkdir "$work/conf" && printf 'sources: [%s]\n' "$work/a/policy.yaml" > "$work/conf/fwengine.conf"
expect "--watch: the config in a directory made again is applied" wait_for_hash "$ns" "$A" 10
rm -r "$work/conf.gone"
kill -TERM "$daemon"; wait "$daemon"

# A source file is followed by name: another file beside it, or below its directory, is no reload.
mkdir -p "$work/single/below"
cp "$work/a/policy.yaml" "$work/single/policy.yaml"
"$FWE" --netns "$ns" -f "$work/single/policy.yaml" daemon --watch 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "daemon --watch with a source file applies it" wait_for_hash "$ns" "$A" 10
applied=$(quiet_applies)
echo "not the policy" > "$work/single/notes.yaml"
echo "not the policy" > "$work/single/below/notes.yaml"
sleep 1.5
expect "--watch: a file beside a source file, or below its directory, is no reload" test "$(applies)" = "$applied"
cp "$work/b/policy.yaml" "$work/single/policy.yaml.new" && mv "$work/single/policy.yaml.new" "$work/single/policy.yaml"
expect "--watch: the source file replaced is applied" wait_for_hash "$ns" "$B" 10
kill -TERM "$daemon"; wait "$daemon"

# A source file that is a link is followed where it leads: an edit in place there is a reload.
mkdir -p "$work/linkfile/versions"
cp "$work/a/policy.yaml" "$work/linkfile/versions/current.yaml"
ln -s versions/current.yaml "$work/linkfile/policy.yaml"
"$FWE" --netns "$ns" -f "$work/linkfile/policy.yaml" daemon --watch 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "daemon --watch with a source file that is a link applies it" wait_for_hash "$ns" "$A" 10
sleep 0.5
cat "$work/b/policy.yaml" > "$work/linkfile/versions/current.yaml"
expect "--watch: the file a source link leads to, edited in place, is applied" wait_for_hash "$ns" "$B" 10
kill -TERM "$daemon"; wait "$daemon"

# A source missing at start and written without a trailing '/' is awaited as a file; made a directory,
# it is followed as one, with what is below it.
"$FWE" --netns "$ns" -f "$work/later2" daemon --watch 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "--watch: a daemon whose source is missing reports it" wait_for_status "$ns" "cannot read '$work/later2'" 10
mkdir -p "$work/later2" && cp "$work/a/policy.yaml" "$work/later2/policy.yaml"
expect "--watch: the source made a directory since start is applied" wait_for_hash "$ns" "$A" 10
sleep 0.5
cp "$work/b/policy.yaml" "$work/later2/policy.yaml"
expect "--watch: and a file in it changed is applied" wait_for_hash "$ns" "$B" 10
kill -TERM "$daemon"; wait "$daemon"

# A config mounted from a Kubernetes ConfigMap: fwengine.conf -> ..data/fwengine.conf, ..data -> a
# directory per version. kubelet updates it by renaming a new ..data link over the old one.
cm="$work/configmap"
mkdir -p "$cm/..v1"
printf 'sources: [%s]\n' "$work/a/policy.yaml" > "$cm/..v1/fwengine.conf"
ln -s ..v1 "$cm/..data"
ln -s ..data/fwengine.conf "$cm/fwengine.conf"
"$FWE" --netns "$ns" --config "$cm/fwengine.conf" daemon --watch 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "daemon --watch with a ConfigMap's config applies its sources" wait_for_hash "$ns" "$A" 10
sleep 0.5
mkdir "$cm/..v2"
printf 'sources: [%s]\n' "$work/b/policy.yaml" > "$cm/..v2/fwengine.conf"
ln -s ..v2 "$cm/..data_tmp" && mv -T "$cm/..data_tmp" "$cm/..data" && rm -r "$cm/..v1"
expect "--watch: a ConfigMap update (..data renamed over) is applied" wait_for_hash "$ns" "$B" 10
kill -TERM "$daemon"; wait "$daemon"

# --watch follows a source directory by its path: one missing at start is awaited, one renamed away or
# deleted is followed to what takes its place, and the one renamed away is no longer followed.
"$FWE" --netns "$ns" flush >/dev/null
"$FWE" --netns "$ns" -f "$work/later/" daemon --watch 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "--watch: a daemon whose directory is missing reports it" wait_for_status "$ns" "cannot read '$work/later/'" 10
expect "--watch: and keeps running" kill -0 "$daemon"
expect "--watch: the kernel is left as it was" test -z "$(kernel_hash "$ns")"
mkdir -p "$work/later" && cp "$work/a/policy.yaml" "$work/later/policy.yaml"
expect "--watch: the directory made since start is applied" wait_for_hash "$ns" "$A" 10
rm -r "$work/later"
sleep 0.5
mkdir -p "$work/later/notes" && cp "$work/b/policy.yaml" "$work/later/policy.yaml"
expect "--watch: a directory deleted and made again is applied" wait_for_hash "$ns" "$B" 10
mkdir -p "$work/next" && cp "$work/a/policy.yaml" "$work/next/policy.yaml"
mv "$work/later" "$work/earlier" && mv "$work/next" "$work/later"
expect "--watch: a directory renamed into the path is applied" wait_for_hash "$ns" "$A" 10
sleep 0.5
applied=$(applies)
cp "$work/b/policy.yaml" "$work/earlier/policy.yaml"
echo "edited" > "$work/earlier/notes/todo.txt"
sleep 1.5
expect "--watch: the directory renamed away is no longer followed, nor the one below it" \
  test "$(applies)" = "$applied" -a "$(kernel_hash "$ns")" = "$A"
kill -TERM "$daemon"; wait "$daemon"

# A source that is a link to a directory not made yet: it is applied once the directory is there.
ln -s "$work/linked-target" "$work/linked"
"$FWE" --netns "$ns" -f "$work/linked/" daemon --watch 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "--watch: a link to a missing directory is reported" wait_for_status "$ns" "cannot read '$work/linked/'" 10
mkdir "$work/linked-target" && cp "$work/b/policy.yaml" "$work/linked-target/policy.yaml"
expect "--watch: the directory the link names, made since, is applied" wait_for_hash "$ns" "$B" 10
mkdir "$work/linked-next" && cp "$work/a/policy.yaml" "$work/linked-next/policy.yaml"
(cd "$work" && ln -sfn linked-next linked)  # a relative link, pointed elsewhere
expect "--watch: a link pointed to another directory is followed there" wait_for_hash "$ns" "$A" 10
kill -TERM "$daemon"; wait "$daemon"
# A link reached through another: nested -> app/current/conf, current -> releases/v1, then v2.
mkdir -p "$work/app/releases/v1/conf" "$work/app/releases/v2/conf"
cp "$work/b/policy.yaml" "$work/app/releases/v1/conf/policy.yaml"
cp "$work/a/policy.yaml" "$work/app/releases/v2/conf/policy.yaml"
ln -s releases/v1 "$work/app/current" && ln -s app/current/conf "$work/nested"
"$FWE" --netns "$ns" -f "$work/nested/" daemon --watch 2>> "$work/daemon.log" &
daemon=$!
pids+=($daemon)
expect "--watch: a source reached through two links is applied" wait_for_hash "$ns" "$B" 10
sleep 0.5
(cd "$work/app" && ln -sfn releases/v2 current)
expect "--watch: the inner link pointed to another release is followed" wait_for_hash "$ns" "$A" 10
kill -TERM "$daemon"; wait "$daemon"

# --watch follows the subdirectories of a source directory: firewalld's zones/, services/, ...
if "$FWE" plugins | grep -q '^firewalld .*frontend' && [ -d /usr/lib/firewalld/zones ]; then
  fw_hash() { "$FWE" --frontend firewalld -f "$1" --json check | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p'; }
  mkdir -p "$work/fw/zones"
  printf '<?xml version="1.0"?>\n<zone>\n  <service name="ssh"/>\n</zone>\n' > "$work/fw/zones/public.xml"
  F1=$(fw_hash "$work/fw")
  "$FWE" --netns "$ns" --frontend firewalld -f "$work/fw" daemon --watch 2>> "$work/daemon.log" &
  daemon=$!
  pids+=($daemon)
  expect "firewalld daemon applies at start" wait_for_hash "$ns" "$F1" 10
  sleep 0.5
  printf '<?xml version="1.0"?>\n<zone>\n  <service name="ssh"/>\n  <service name="http"/>\n</zone>\n' \
    > "$work/fw/zones/public.xml.new" && mv "$work/fw/zones/public.xml.new" "$work/fw/zones/public.xml"
  F2=$(fw_hash "$work/fw")
  expect "--watch: an edited zone file is applied" wait_for_hash "$ns" "$F2" 10
  mkdir -p "$work/fw/services"
  printf '<?xml version="1.0"?>\n<service>\n  <port protocol="tcp" port="8443"/>\n</service>\n' \
    > "$work/fw/services/web8443.xml"
  sleep 1
  printf '<?xml version="1.0"?>\n<zone>\n  <service name="web8443"/>\n</zone>\n' > "$work/fw/zones/public.xml"
  F3=$(fw_hash "$work/fw")
  expect "--watch: a service in a directory made since start is applied" wait_for_hash "$ns" "$F3" 10
  sleep 0.5
  sed -i 's/8443"/9443"/' "$work/fw/services/web8443.xml"
  F4=$(fw_hash "$work/fw")
  expect "the service's new port is another policy" test "$F4" != "$F3"
  expect "--watch: and that directory is followed" wait_for_hash "$ns" "$F4" 10
  kill -TERM "$daemon"; wait "$daemon"
fi

echo "$passes passed, $failures failed"
[ "$failures" = 0 ]
