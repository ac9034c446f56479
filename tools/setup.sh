#!/usr/bin/env bash
# Installs the system packages SyncLedger needs on Debian/Ubuntu, only those missing:
# liblz4-dev (the log's compression), libsqlite3-dev (the views, through GRDB), lz4 (the stock
# tool the tests and auditors read segments with), python3 (the bundle verifier) and postgresql
# (the PostgreSQL sink's tests start a throwaway cluster with its initdb/pg_ctl).
set -euo pipefail
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in liblz4-dev libsqlite3-dev lz4 python3 postgresql; do
  if [ "$p" = python3 ] && command -v python3 >/dev/null 2>&1; then continue; fi
  have_pkg "$p" || need+=("$p")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v swift >/dev/null 2>&1; then
  echo "swift is not on PATH: install Swift 6 (https://www.swift.org/install/linux/) and retry" >&2
  exit 1
fi
