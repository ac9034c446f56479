#!/usr/bin/env bash
# The whole test suite, from a fresh clone: system packages, the Python verifier's tests,
# the benchmark at a tiny size (it must run), then `swift test` (last, so its summary closes
# the output).
set -euo pipefail
cd "$(dirname "$0")/.."
# Under CI, warnings are errors in this package's own targets (Package.swift reads
# SYNCLEDGER_WERROR; dependencies never get the flag). Locally they stay warnings.
if [ -n "${CI:-}" ]; then export SYNCLEDGER_WERROR=1; fi
./tools/setup.sh
python3 tools/check_module_graph.py
python3 tools/test_verify_bundle.py
swift build --build-tests
swift run syncledger-bench --events 2000 --runs 1 --scratch "$(mktemp -d)"
# And on a corpus of IntakeQ objects (issue 19's `--corpus`), as a user would make one.
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
python3 tools/make_corpus.py --lines 3000 > "$corpus/corpus.jsonl"
swift run syncledger-bench --corpus "$corpus/corpus.jsonl" --events 2000 --runs 1 --scratch "$corpus"
swift test
