#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: a fake IntakeQ on loopback, five
# simulated days of syncs into a fresh store, then the views, a history, verify and rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
SYNCLEDGER_SETUP_MINIMAL=1 ./tools/setup.sh
echo "building syncledger, syncledger-demo and fake-intakeq (a few minutes the first time)…" >&2
log=$(mktemp)
for product in syncledger syncledger-demo fake-intakeq; do
  if ! swift build --product "$product" >"$log" 2>&1; then
    cat "$log" >&2
    echo "the build of $product failed; the output is above" >&2
    exit 1
  fi
done
rm -f "$log"
exec .build/debug/syncledger demo "$@"
