#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: a fake IntakeQ on loopback, five
# simulated days of syncs into a fresh store, then the views, a history, verify and rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
echo "building syncledger and fake-intakeq (a few minutes the first time)…" >&2
log=$(mktemp)
# Every binary the README then uses: syncledger, and fake-intakeq for trying commands by hand.
if ! { swift build --product syncledger && swift build --product fake-intakeq; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "the build failed; the output is above" >&2
  exit 1
fi
rm -f "$log"
exec .build/debug/syncledger demo "$@"
