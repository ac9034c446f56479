#!/usr/bin/env python3
"""Fails when the package's module graph breaks docs/ARCHITECTURE.md's rules.

Reads `swift package dump-package` (or a JSON file given as the first argument) and checks, for the
transitive closure of each target's dependencies, that:
- EventLog, JSONCore, Domain and Ledger reach no HTTP package;
- Projections reaches neither IntakeQ nor an HTTP package;
- PostgresSink reaches no HTTP package, IntakeQ, Sync or FakeIntakeQ;
- the shipped `syncledger` (SyncLedgerCLI) never reaches FakeIntakeQ, and reaches Hummingbird only
  through the Service target (`syncledger serve`), never by a direct dependency;
- Sync reaches no HTTP server (Hummingbird, ServiceLifecycle); Service never reaches FakeIntakeQ.
Prints one line per violation and exits 1, or prints "module graph ok" and exits 0.
"""
import json
import subprocess
import sys

HTTP = {"AsyncHTTPClient", "NIOCore", "NIOHTTP1", "NIOPosix", "Hummingbird", "HTTPTypes", "ServiceLifecycle"}
RULES = {
    "EventLog": HTTP, "JSONCore": HTTP | {"Foundation"}, "Domain": HTTP, "Ledger": HTTP | {"IntakeQ"},
    "Projections": HTTP | {"IntakeQ"},
    "PostgresSink": {"AsyncHTTPClient", "NIOHTTP1", "Hummingbird", "HTTPTypes", "IntakeQ", "Sync", "FakeIntakeQ"},
    "SyncLedgerCLI": {"FakeIntakeQ", "FakeIntakeQServer", "SyncLedgerDemo"},
    "Sync": {"Hummingbird", "ServiceLifecycle"},
    "Service": {"FakeIntakeQ", "FakeIntakeQServer", "SyncLedgerDemo"},
}
# Direct dependencies a target must not declare (the server's HTTP stack stays inside Service).
DIRECT = {"SyncLedgerCLI": {"Hummingbird", "HTTPTypes", "ServiceLifecycle"}}


def load(argv):
    if len(argv) > 1:
        with open(argv[1]) as f:
            return json.load(f)
    out = subprocess.run(["swift", "package", "dump-package"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv):
    package = load(argv)
    deps = {}
    for t in package["targets"]:
        names = []
        for d in t.get("dependencies", []):
            kind, value = next(iter(d.items()))
            names.append(value[0])
        deps[t["name"]] = names

    def closure(name, seen=None):
        seen = set() if seen is None else seen
        for d in deps.get(name, []):
            if d not in seen:
                seen.add(d)
                closure(d, seen)
        return seen

    problems = []
    for target, forbidden in RULES.items():
        if target not in deps:
            problems.append(f"{target}: no such target")
            continue
        bad = sorted(closure(target) & forbidden)
        if bad:
            problems.append(f"{target} depends on {', '.join(bad)}")
    for target, forbidden in DIRECT.items():
        bad = sorted(set(deps.get(target, [])) & forbidden)
        if bad:
            problems.append(f"{target} declares {', '.join(bad)} directly (only Service may)")
    for p in problems:
        print("module graph: " + p)
    if not problems:
        print("module graph ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
