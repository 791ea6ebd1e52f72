#!/bin/bash
# test_plugin_error.sh FWENGINE TEST_PLUGIN_DIR
# A backend's error (an exception thrown inside the plugin) is reported with exit code 1 - and not a
# crash: the exception's code lives in the plugin's library, which must still be loaded when the
# engine reports it. The test backend does nothing in the kernel; the namespace only keeps fwengine's
# lock and state away from the host's.
set -u
export ASAN_OPTIONS="${ASAN_OPTIONS:-} exitcode=86"  # a sanitizer report must not pass for exit code 1
fwengine=$1 plugins=$2
[ "$(id -u)" = 0 ] || { echo "not root: skipped"; exit 77; }
ns=fwe-cli-err-$$
work=$(mktemp -d)
ip netns add "$ns"
trap 'ip netns del "$ns"; rm -rf "/run/fwengine/$ns" "$work"' EXIT
cat >"$work/policy.yaml" <<'YAML'
apiVersion: fwengine/v1
chains:
  c:
    - {action: accept}
stages:
  input:
    - name: s
      endpoints:
        - {name: all, chains: [c]}
YAML
out=$("$fwengine" --plugin-dir "$plugins" --frontend yaml -f "$work/policy.yaml" --netns "$ns" --backend testbe apply 2>&1)
rc=$?
if [ "$rc" != 1 ] || ! grep -q "test backend refuses" <<<"$out"; then
  echo "expected exit 1 with the plugin's message, got $rc:" >&2
  echo "$out" >&2
  exit 1
fi
echo "ok: $out"
