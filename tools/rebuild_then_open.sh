#!/bin/bash
# Times what a user waits for around a rebuild: `syncledger rebuild` of a fresh copy of a store
# (its views deleted), the size of the views' WAL it leaves, then the next command (`status`),
# which reads back whatever WAL is left. BENCHMARKS.md, stop 45.
#
#   tools/rebuild_then_open.sh SYNCLEDGER_BINARY STORE [LABEL]
#
# STORE is copied to a temporary directory (removed afterwards); it is never written.
set -euo pipefail
bin=$1; source=$2; label=${3:-run}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$source" "$work/store"
rm -f "$work/store"/projections.sqlite*
sync
seconds() { date +%s.%N; }
t0=$(seconds); "$bin" --store "$work/store" rebuild > /dev/null; t1=$(seconds)
wal=$(stat -c %s "$work/store/projections.sqlite-wal" 2>/dev/null || echo none)
t2=$(seconds); "$bin" --store "$work/store" status --max-age 100000000 > /dev/null || true; t3=$(seconds)
awk -v l="$label" -v a="$t0" -v b="$t1" -v w="$wal" -v c="$t2" -v d="$t3" \
    'BEGIN { printf "%s rebuild_s=%.2f wal_bytes_after=%s next_status_s=%.3f\n", l, b - a, w, d - c }'
