#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: a fake IntakeQ on loopback, five
# simulated days of syncs into a fresh store, then the views, a history, verify and rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
swift build --product syncledger
exec .build/debug/syncledger demo "$@"
