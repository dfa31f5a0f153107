#!/bin/sh
# A short, bounded run of every fuzz target (for .ci/run): ./fuzz/smoke.sh [seconds per target]
# Runs on a scratch copy of the committed seed corpus, so the repository stays unchanged.
# Recovery is linear in the input and bounded in memory by it (issue 17 items 8, 9): an input
# that takes over 10 s, or makes the process use over 1 GiB or ask for 256 MiB in one
# allocation (a 64 KiB input never needs that), is a finding, not just a slow run.
set -eu
cd "$(dirname "$0")"
secs="${1:-30}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in open_any_file crash_recovery damaged_file; do
    mkdir -p "$scratch/$t"
    cp corpus/"$t"/* "$scratch/$t/" 2>/dev/null || true
    if [ -d "regressions/$t" ]; then cp regressions/"$t"/* "$scratch/$t/"; fi
    echo "== fuzz $t for ${secs}s"
    cargo +nightly fuzz run -O "$t" "$scratch/$t" -- \
        -max_total_time="$secs" -max_len=65536 \
        -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256
done
