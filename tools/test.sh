#!/usr/bin/env bash
# The whole test suite, from a fresh clone: system packages, the Python verifier's tests,
# the benchmark at a tiny size (it must run), then `swift test` (last, so its summary closes
# the output).
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
python3 tools/check_module_graph.py
python3 tools/test_verify_bundle.py
swift build --build-tests
swift run syncledger-bench --events 2000 --runs 1 --scratch "$(mktemp -d)"
swift test
