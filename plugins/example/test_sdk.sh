#!/usr/bin/env bash
# Installs fwengine into a scratch prefix, builds the example plugin out of tree against the installed
# SDK, and checks that the installed engine (relocated, no environment variables) loads and runs it.
set -euo pipefail
build_dir=$1 source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/plugins/example" -B "$work/example" -DCMAKE_PREFIX_PATH="$work/prefix" \
      -DCMAKE_CXX_FLAGS="${SDK_CXX_FLAGS:-}" -DCMAKE_MODULE_LINKER_FLAGS="${SDK_LINK_FLAGS:-}" >/dev/null
cmake --build "$work/example" >/dev/null
chmod 755 "$work/example"
printf 'allow tcp 22\nallow tcp 443\n' > "$work/policy.txt"
fwe="$work/prefix/bin/fwengine"
"$fwe" plugins | tee "$work/plugins.txt"
grep -q '^yaml .*frontend' "$work/plugins.txt"    # found relative to the relocated executable
"$fwe" --plugin-dir "$work/example" plugins | grep -q '^example .*frontend'
"$fwe" --plugin-dir "$work/example" --frontend example -f "$work/policy.txt" check
"$fwe" --plugin-dir "$work/example" --frontend example -f "$work/policy.txt" \
  trace --iif eth0 --src 192.0.2.1 --dst 192.0.2.2 --proto tcp --dport 443 | tee "$work/trace.txt"
grep -q "policy.txt:2:1" "$work/trace.txt"
grep -q "verdict: open" "$work/trace.txt"
printf 'allow udp 53\n' > "$work/bad.txt"
set +e
"$fwe" --plugin-dir "$work/example" --frontend example -f "$work/bad.txt" check 2> "$work/err.txt"
rc=$?
set -e
grep -q "bad.txt:1:1: error: expected 'allow tcp PORT'" "$work/err.txt"
[ "$rc" = 2 ]
echo "SDK example plugin: ok"
