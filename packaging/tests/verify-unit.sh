#!/bin/bash
# verify-unit.sh UNIT_TEMPLATE FWENGINE_BINARY WORK_DIR
# Fills in the template with the built binary (verify checks that ExecStart exists) and runs
# systemd-analyze verify on it; any complaint about the unit fails the test.
set -euo pipefail
template=$1 binary=$2 work=$3
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is not installed: skipped"; exit 77; }
mkdir -p "$work"
unit="$work/fwengine.service"
sed "s|@FWE_BINARY@|$binary|g" "$template" >"$unit"
if grep -n '@[A-Z_]*@' "$unit"; then
  echo "unfilled placeholder in $template" >&2
  exit 1
fi
# --man=no: the man pages named in Documentation= are not installed in a build tree.
if ! output=$(systemd-analyze verify --man=no "$unit" 2>&1); then
  echo "$output" >&2
  exit 1
fi
if grep -F "fwengine.service" <<<"$output" >&2; then
  echo "systemd-analyze verify complained about the unit (above)" >&2
  exit 1
fi
echo "ok: systemd-analyze verify $unit"
