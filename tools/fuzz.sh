#!/usr/bin/env bash
# libFuzzer on the segment reader. Usage: tools/fuzz.sh [SECONDS] (default 60).
# Builds the SegmentFuzz target with SwiftPM's --sanitize fuzzer in its own scratch folder
# (.build-fuzz), seeds a corpus with a real segment from the demo, then runs libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
swift build --product syncledger >/dev/null
.build/debug/syncledger demo --store "$work/store" >/dev/null
mkdir -p "$work/corpus"
cp "$work"/store/log/*.seg "$work/corpus/"
SYNCLEDGER_FUZZ=1 swift build --sanitize fuzzer --scratch-path .build-fuzz --product segment-fuzz
.build-fuzz/debug/segment-fuzz "$work/corpus" -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=2048
