#!/usr/bin/env bash
# Installs what SyncLedger's build, demo and tests need on Debian/Ubuntu, only what is missing:
#   liblz4-dev       the log's compression
#   libsqlite3-dev   the views, through GRDB
#   libjemalloc-dev  the allocator the executables link (Sources/Allocator)
#   libssl-dev       OpenSSL's libcrypto: AES-GCM for sealed personal data (Sources/CGCM)
#   lz4              the stock tool the tests and auditors read segments with
#   python3          the bundle verifier and the test drivers below
#   postgresql       the PostgreSQL sink's tests start a throwaway cluster (initdb/pg_ctl)
#   chromium, chromium-driver   the admin pages' browser test (Selenium)
#   prometheus       promtool, which checks and unit-tests docs/alerts.yml
# and a Python virtual environment at .venv-test (tools/requirements-test.txt: schemathesis,
# selenium) that the OpenAPI fuzzing and the browser test run from.
# `SYNCLEDGER_SETUP_MINIMAL=1` installs only the first six (enough to build and run the demo).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
pkgs=(liblz4-dev libsqlite3-dev libjemalloc-dev libssl-dev lz4 python3)
if [ -z "${SYNCLEDGER_SETUP_MINIMAL:-}" ]; then
  pkgs+=(postgresql chromium chromium-driver prometheus)
fi
for p in "${pkgs[@]}"; do
  if [ "$p" = python3 ] && command -v python3 >/dev/null 2>&1; then continue; fi
  have_pkg "$p" || need+=("$p")
done
if [ -z "${SYNCLEDGER_SETUP_MINIMAL:-}" ] && command -v python3 >/dev/null 2>&1 \
   && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
# Where /dev/null is a plain file only root may write (as on some CI machines), apt's sandbox
# user cannot write it: apt-key then finds no gpgv and every index is refused. apt stays root there.
apt_opts=()
if [ ! -c /dev/null ]; then apt_opts=(-o APT::Sandbox::User=root); fi
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  $sudo apt-get "${apt_opts[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${apt_opts[@]}" install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${SYNCLEDGER_SETUP_MINIMAL:-}" ]; then
  req=tools/requirements-test.txt
  stamp=.venv-test/.installed
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
    echo "preparing .venv-test from $req" >&2
    python3 -m venv .venv-test
    .venv-test/bin/pip install -q --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
fi
if ! command -v swift >/dev/null 2>&1; then
  echo "swift is not on PATH: install Swift 6 (https://www.swift.org/install/linux/) and retry" >&2
  exit 1
fi
