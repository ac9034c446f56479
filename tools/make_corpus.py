#!/usr/bin/env python3
"""A JSON Lines corpus of IntakeQ appointment objects for `syncledger-bench --corpus`.

Takes the objects of the fake practice's five days (Fixtures/practice/day-*.json, in day order, so
the same appointment is observed again on later days), pads each to about --bytes bytes of minified
JSON with a practitioner note (real exports run ~1.9 KB an object; the fixtures ~1.3 KB), and repeats
the five days with fresh ids until --lines lines are written.

    tools/make_corpus.py --lines 120000 > /tmp/corpus.jsonl
    .build/release/syncledger-bench --corpus /tmp/corpus.jsonl --events 100000
"""
import argparse
import glob
import json
import os
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=120_000, help="lines to write (default 120000)")
    ap.add_argument("--bytes", type=int, default=1_900, help="target minified size of an object (default 1900)")
    args = ap.parse_args()
    if args.lines < 1 or args.bytes < 1:
        print("make_corpus: --lines and --bytes must be positive", file=sys.stderr)
        return 2
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    days = sorted(glob.glob(os.path.join(root, "Fixtures", "practice", "day-*.json")))
    if not days:
        print("make_corpus: no Fixtures/practice/day-*.json beside this script", file=sys.stderr)
        return 1
    objects = [o for path in days for o in json.load(open(path))["appointments"]]
    filler = " Follow-up on transport and intake paperwork; confirm the ride with the centre." * 64
    written, epoch = 0, 0
    out = sys.stdout
    while written < args.lines:
        for o in objects:
            o = dict(o)
            o["Id"] = f"{o['Id']}{epoch:04d}"
            pad = args.bytes - len(json.dumps(o, separators=(",", ":")))
            if pad > 0:
                note = o.get("PractitionerNote") or ""
                o["PractitionerNote"] = (note + filler)[: len(note) + pad]
            out.write(json.dumps(o, separators=(",", ":")) + "\n")
            written += 1
            if written >= args.lines:
                break
        epoch += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
