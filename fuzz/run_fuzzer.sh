#!/usr/bin/env bash
# run_fuzzer.sh FUZZER SECONDS SEED ARTIFACT_DIR INPUT...: ctest fuzz.<target>. The seeds and regressions
# (INPUT...: files and directories) are copied into a throwaway directory, which libFuzzer also adds what
# it finds to, so the source tree is never written; an input that crashes, leaks or hangs is kept in
# ARTIFACT_DIR and fails the test.
set -euo pipefail
fuzzer=$1 seconds=$2 seed=$3 artifacts=$4
shift 4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/seeds" "$work/tmp" "$artifacts"
# A target's scratch files (firewalld_reader) go with the rest, even when it crashes.
export TMPDIR=$work/tmp
n=0
for input in "$@"; do
  cp -r "$input" "$work/seeds/$((n++))-$(basename "$input")"
done
# -entropic=0: libFuzzer 14's entropic scheduling spends most of the time of these targets (tens of
# thousands of coverage features per input) in its own bookkeeping; without it they run 2-3 times as
# many inputs and reach more coverage in a short run.
"$fuzzer" -max_total_time="$seconds" -seed="$seed" -entropic=0 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$work/corpus" "$work/seeds"
