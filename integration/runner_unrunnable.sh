#!/bin/sh
# A scenario run asked for a backend whose plugin is not installed must end as a skipped run (exit 77),
# never as a pass: an engine that leaves nft out of its plugin list stands in for a host without it.
# usage: runner_unrunnable.sh PYTHON RUNNER FWENGINE SCENARIOS WORKDIR
set -eu
python=$1 runner=$2 engine=$3 scenarios=$4 workdir=$5
if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the scenario runner needs root"
  exit 77
fi
mkdir -p "$workdir"  # in the build tree: a /tmp mounted noexec could not run the engine below
trap 'rm -f "$workdir/fwengine" "$workdir/out"' EXIT
cat > "$workdir/fwengine" <<WRAPPER
#!/bin/sh
if [ "\$*" = "--json plugins" ]; then
  "$engine" --json plugins | "$python" -c '
import json, sys
listing = json.load(sys.stdin)
listing["plugins"] = [p for p in listing["plugins"] if p["name"] != "nft"]
json.dump(listing, sys.stdout)'
  exit
fi
exec "$engine" "\$@"
WRAPPER
chmod +x "$workdir/fwengine"
code=0
"$python" "$runner" --fwengine "$workdir/fwengine" --backend nft --backends-available "$scenarios" \
  >"$workdir/out" 2>&1 || code=$?
cat "$workdir/out"
# The SKIP line shows the wrapper ran and hid nft: a broken wrapper would also end in 77, for another reason.
if ! grep -q "SKIP backend nft: plugin libfwe_nft.so is not installed" "$workdir/out"; then
  echo "FAIL: the runner did not report the nft plugin as missing"
  exit 1
fi
if [ "$code" -ne 77 ]; then
  echo "FAIL: the runner exited $code where a missing backend plugin must make it exit 77"
  exit 1
fi
echo "ok: a missing backend plugin made the run a skipped one (exit 77)"
