# checks.sh - sourced by the command-line tests: run a command and check its exit code and output.
# After sourcing: $work is a scratch directory removed at exit; call `summary` last.
failures=0 passes=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() {  # check NAME EXPECTED_RC COMMAND... ; stdout+stderr in $out
  local name=$1 want=$2; shift 2
  out=$("$@" 2>&1); local rc=$?
  if [ "$rc" != "$want" ]; then
    echo "FAIL $name: exit $rc, expected $want"; echo "$out" | sed 's/^/    /'; failures=$((failures + 1)); return 1
  fi
  passes=$((passes + 1))
}
equals() {  # equals NAME ACTUAL WANTED
  if [ "$2" != "$3" ]; then
    echo "FAIL $1: got '$2', expected '$3'"; failures=$((failures + 1)); return 1
  fi
  passes=$((passes + 1))
}
contains() {  # contains NAME TEXT
  if ! grep -qF -- "$2" <<<"$out"; then
    echo "FAIL $1: output lacks '$2'"; echo "$out" | sed 's/^/    /'; failures=$((failures + 1)); return 1
  fi
  passes=$((passes + 1))
}
# Kernel tests: skipped (exit 77) unless root and the backend is built; $python is the interpreter.
require_root_and_backend() {  # require_root_and_backend ENGINE BACKEND
  [ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
  "$1" plugins | grep -q "^$2 .*backend" || { echo "skipped: backend $2 not built"; exit 77; }
  python=/usr/bin/python3
  [ -x $python ] || python=python3
}
until_true() {  # until_true SECONDS COMMAND...: retries COMMAND every 0.1 s until it succeeds or time is up
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}
stop_process() {  # stop_process PID: SIGTERM, 5 s to end, then SIGKILL; reaps it (a child of this shell)
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}
# A kernel test's exit trap: ends the processes in $pids, removes fwengine's ruleset and state from NS
# (the first namespace), then every namespace named, and $work.
remove_test_namespaces() {  # remove_test_namespaces ENGINE BACKEND NS [NS...]
  local engine=$1 backend=$2 pid name
  shift 2
  for pid in ${pids[@]+"${pids[@]}"}; do stop_process "$pid"; done
  "$engine" --netns "${1:?}" --backend "$backend" -q flush >/dev/null 2>&1
  rm -rf "/run/fwengine/${1:?}" "$work"
  for name in "$@"; do ip netns del "$name" 2>/dev/null; done
}
host_and_client() {  # host_and_client NS CLIENT: two new namespaces, lo up in each, joined by a veth pair
  # named eth0 on both sides (up); exit 77 where namespaces cannot be made. The caller's cleanup deletes them.
  ip netns add "$1" || { echo "skipped: cannot create network namespaces"; exit 77; }
  ip netns add "$2"
  ip -n "$1" link add eth0 type veth peer name eth0 netns "$2"
  for n in "$1" "$2"; do
    ip -n "$n" link set lo up
    ip -n "$n" link set eth0 up
  done
}
# Real TCP between a test's namespaces ($python: require_root_and_backend sets it).
tcp_listen() {  # tcp_listen NAMESPACE PORT: a server that accepts and closes, in the background; its pid
  # goes into the caller's pids array, which its cleanup ends
  ip netns exec "$1" "$python" -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    s.accept()[0].close()
' "$2" &
  pids+=($!)
}
tcp_probe() {  # tcp_probe NAMESPACE ADDRESS PORT [SOURCE]: open or closed, by a real TCP connect
  ip netns exec "$1" "$python" -c '
import socket, sys
s = socket.socket(); s.settimeout(1.5)
if len(sys.argv) > 3:
    s.bind((sys.argv[3], 0))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except OSError:
    print("closed")
' "${@:2}"
}
summary() {  # the closing line CTest logs; the exit status of the test
  echo "$passes passed, $failures failed"
  [ "$failures" = 0 ]
}
