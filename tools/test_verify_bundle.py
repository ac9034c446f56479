#!/usr/bin/env python3
"""Tests for tools/verify_bundle.py (stdlib unittest + the stock lz4 command).

Run from the repository root:
    python3 -m unittest tools/test_verify_bundle.py
    python3 tools/test_verify_bundle.py

The bundle writer below is independent of verify_bundle.py (its own CRC32C,
chain, batch encoder and manifest writer, following docs/CONTRACTS.md), so the
two implementations check each other.
"""

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "verify_bundle.py")
LZ4 = shutil.which("lz4")

_spec = importlib.util.spec_from_file_location("verify_bundle", SCRIPT)
vb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vb)


# ----------------------------------------------------------------- independent writer

def _crc_table():
    t = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def lz4_compress(data):
    """One standard LZ4 frame as the Swift writer makes it: content size set, no content
    checksum, linked blocks (-BD), 64 KiB blocks here (-B4) so big batches span blocks."""
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
        name = f.name
    try:
        return subprocess.run([LZ4, "-c", "-q", "-B4", "-BD", "--content-size", "--no-frame-crc",
                               name], check=True, stdout=subprocess.PIPE).stdout
    finally:
        os.unlink(name)


def lz4_plain(data):
    """A frame without the content-size field (lz4 reading stdin)."""
    return subprocess.run([LZ4, "-c", "-q", "-BD", "--no-frame-crc"], input=data,
                          stdout=subprocess.PIPE, check=True).stdout


def lz4_decompress(frame):
    return subprocess.run([LZ4, "-d", "-c", "-q"], input=frame, check=True,
                          stdout=subprocess.PIPE).stdout


def chain_next(prev, first_seq, count, payload, version=1):
    return hashlib.sha256(prev + struct.pack("<HQIQ", version, first_seq, count, len(payload))
                          + hashlib.sha256(payload).digest()).digest()


def encode_batch(prev_chain, first_seq, payload, count, frame=None, version=1, flags=0,
                 chain=None, ulen=None):
    """Batch bytes per docs/CONTRACTS.md; keyword overrides build consistent-but-wrong batches."""
    if frame is None:
        frame = lz4_compress(payload)
    if ulen is None:
        ulen = len(payload)
    if chain is None:
        chain = chain_next(prev_chain, first_seq, count, payload, version)
    hdr = (b"SLGB" + struct.pack("<HHQIIQ", version, flags, first_seq, count, len(frame), ulen)
           + chain + struct.pack("<I", crc32c(frame)))
    assert len(hdr) == 68
    hdr += struct.pack("<I", crc32c(hdr))
    return struct.pack("<II", 0x184D2A50, 72) + hdr + frame, chain


def event_lines(first_seq, count, size=0):
    out = []
    for s in range(first_seq, first_seq + count):
        ev = {"seq": s, "type": "appointment.created", "id": "apt-%05d" % s}
        if size:
            ev["pad"] = "".join(random.Random(s).choice("abcdefghij") for _ in range(size))
        out.append(json.dumps(ev, sort_keys=True).encode() + b"\n")
    return out


def build_segments(layout, pad=0):
    """layout: list of segments, each a list of batch sizes. Returns (segments, head, lines) where
    segments = [(name, bytes, [batch dicts])]."""
    segments = []
    chain = b"\x00" * 32
    seq = 0
    all_lines = []
    for seg in layout:
        data = b""
        batches = []
        name = "segments/%020d.seg" % (seq + 1)
        for count in seg:
            lines = event_lines(seq + 1, count, pad)
            payload = b"".join(lines)
            raw, chain = encode_batch(chain, seq + 1, payload, count)
            batches.append({"offset": len(data), "first": seq + 1, "last": seq + count,
                            "chain": chain, "lines": lines})
            data += raw
            seq += count
            all_lines.extend(lines)
        segments.append((name, data, batches))
    return segments, "%d:%s" % (seq, chain.hex()), all_lines


def canonical(obj):
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def write_manifest(bundle, files, head, created_at="2024-05-01T12:00:00Z", tweak=None,
                   after_hash=None):
    m = {"format": "syncledger-bundle", "version": 1, "created_at": created_at, "head": head,
         "events": int(head.split(":")[0]), "files": files}
    if tweak:
        tweak(m)
    m.pop("manifest_sha256", None)
    m["manifest_sha256"] = hashlib.sha256(canonical(m)).hexdigest()
    if after_hash:
        after_hash(m)
    with open(os.path.join(bundle, "MANIFEST.json"), "wb") as f:
        f.write(canonical(m))
    return m


def file_entry(name, data, batches):
    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "first_seq": batches[0]["first"], "last_seq": batches[-1]["last"],
            "batches": len(batches)}


def write_bundle(bundle, segments, head, copy_script=False):
    os.makedirs(os.path.join(bundle, "segments"), exist_ok=True)
    for name, data, _ in segments:
        with open(os.path.join(bundle, name), "wb") as f:
            f.write(data)
    write_manifest(bundle, [file_entry(n, d, b) for n, d, b in segments], head)
    if copy_script:
        shutil.copy(SCRIPT, os.path.join(bundle, "verify_bundle.py"))


def refresh_file_hash(bundle, name):
    """Rewrite only sha256/bytes of one file in the manifest (keeps everything else)."""
    path = os.path.join(bundle, "MANIFEST.json")
    with open(path, "rb") as f:
        m = json.loads(f.read())
    with open(os.path.join(bundle, name), "rb") as f:
        data = f.read()
    for e in m["files"]:
        if e["name"] == name:
            e["sha256"] = hashlib.sha256(data).hexdigest()
            e["bytes"] = len(data)
    write_manifest(bundle, m["files"], m["head"], m["created_at"])


def run_inproc(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = vb.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def run_cli(*argv, env=None, cwd=None):
    p = subprocess.run([sys.executable] + list(argv), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, cwd=cwd, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


LAYOUT = [[2, 3, 1], [4, 2], [1, 3, 2]]   # 3 segments, 8 batches, 18 events


@unittest.skipIf(LZ4 is None, "the lz4 command is required (apt-get install lz4)")
class VerifyBundleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.segments, cls.head, cls.lines = build_segments(LAYOUT)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="vb-test-")
        self.bundle = os.path.join(self.tmp, "bundle")
        write_bundle(self.bundle, self.segments, self.head)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # helpers
    def assertOK(self, *extra, head=None):
        rc, out, err = run_inproc(self.bundle, *extra)
        self.assertEqual(rc, 0, out + err)
        self.assertTrue(out.startswith("bundle OK: "), out)
        if head is not None:
            self.assertIn("head " + head + "\n", out)
        return out

    def assertFailed(self, *extra, contains=None, msg=""):
        rc, out, err = run_inproc(self.bundle, *extra)
        self.assertEqual(rc, 1, "%s: expected failure, got rc=%r %s%s" % (msg, rc, out, err))
        self.assertTrue(out.startswith("bundle FAILED: "), msg + ": " + out)
        self.assertEqual(out.count("\n"), 1, msg + ": " + out)
        self.assertNotIn("internal error", out, msg)
        if contains is not None:
            self.assertIn(contains, out, msg)
        return out

    def manifest(self):
        with open(os.path.join(self.bundle, "MANIFEST.json"), "rb") as f:
            return json.loads(f.read())

    def seg_path(self, i):
        return os.path.join(self.bundle, self.segments[i][0])

    def rewrite_segment(self, i, data, refresh=True):
        with open(self.seg_path(i), "wb") as f:
            f.write(data)
        if refresh:
            refresh_file_hash(self.bundle, self.segments[i][0])

    # ---------------------------------------------------------------- basics

    def test_crc32c_check_values(self):
        self.assertEqual(vb.crc32c(b"123456789"), 0xE3069283)
        self.assertEqual(crc32c(b"123456789"), 0xE3069283)
        data = os.urandom(1000)
        self.assertEqual(vb.crc32c(data), crc32c(data))

    def write_range_bundle(self, tweak=None):
        """Seqs 3...10 of LAYOUT: seg0 from its 2nd batch, seg1's 1st batch; proof for 11...18."""
        (n0, d0, b0), (n1, d1, b1), (n2, d2, b2) = self.segments
        rng = os.path.join(self.tmp, "range")
        os.makedirs(os.path.join(rng, "segments"))
        part0, part1 = d0[b0[1]["offset"]:], d1[:b1[1]["offset"]]
        files = [file_entry("segments/%020d.seg" % 3, part0, b0[1:]), file_entry("segments/%020d.seg" % 7, part1, b1[:1])]
        for f, data in zip(files, (part0, part1)):
            with open(os.path.join(rng, f["name"]), "wb") as out:
                out.write(data)
        proof = [{"count": b["last"] - b["first"] + 1, "first_seq": b["first"], "version": 1,
                  "uncompressed_length": len(b"".join(b["lines"])),
                  "payload_sha256": hashlib.sha256(b"".join(b["lines"])).hexdigest()} for b in b1[1:] + b2]

        def fill(m):
            m.update(version=2, range_first_seq=3, range_last_seq=10, chain_before=b0[0]["chain"].hex(), proof=proof)
            if tweak:
                tweak(m)
        write_manifest(rng, files, self.head, tweak=fill)
        return rng, [b0, b1, b2]

    def test_range_bundle_is_proven_against_the_head(self):
        rng, (b0, b1, b2) = self.write_range_bundle()
        rc, out, err = run_inproc(rng, "--expect-head", self.head)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("seqs 3...10", out)
        self.assertIn("head " + self.head, out)
        # A later anchor inside the range or at a proof batch's end also proves it.
        for b in (b0[2], b1[0], b1[1], b2[1]):
            rc, out, err = run_inproc(rng, "--expect-head", "%d:%s" % (b["last"], b["chain"].hex()))
            self.assertEqual(rc, 0, out + err)
        # An anchor before the range proves nothing: refused.
        rc, out, err = run_inproc(rng, "--expect-head", "%d:%s" % (b0[0]["last"], b0[0]["chain"].hex()))
        self.assertEqual(rc, 2, out + err)
        # A changed proof hash, chain_before, or byte of the range fails (or misses the trusted head).
        rc, out, _ = run_inproc(rng, "--expect-head", self.head)
        self.assertEqual(rc, 0)
        shutil.rmtree(rng)
        rng, _ = self.write_range_bundle(lambda m: m["proof"][1].update(payload_sha256="0" * 64))
        rc, out, _ = run_inproc(rng)
        self.assertEqual(rc, 1, out)
        self.assertIn("computed head", out)
        shutil.rmtree(rng)
        rng, _ = self.write_range_bundle(lambda m: m.update(chain_before="1" * 64))
        rc, out, _ = run_inproc(rng)
        self.assertEqual(rc, 1, out)
        self.assertIn("chain hash mismatch", out)
        shutil.rmtree(rng)
        rng, _ = self.write_range_bundle(lambda m: m.update(range_last_seq=9))
        rc, out, _ = run_inproc(rng)
        self.assertEqual(rc, 1, out)

    def test_ok_and_head(self):
        out = self.assertOK(head=self.head)
        self.assertEqual(out, "bundle OK: 18 events in 8 batches, 3 segments; head %s\n" % self.head)
        self.assertTrue(self.head.startswith("18:"))

    def test_stock_lz4_reads_concatenated_segments(self):
        p = subprocess.run(["sh", "-c", "cat segments/*.seg | lz4 -dc"], cwd=self.bundle,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
        self.assertEqual(p.stdout, b"".join(self.lines))

    def test_manifest_is_canonical_and_documented(self):
        with open(os.path.join(self.bundle, "MANIFEST.json"), "rb") as f:
            raw = f.read()
        m = json.loads(raw)
        self.assertEqual(raw, vb.canonical_manifest_bytes(m))
        self.assertEqual(m["manifest_sha256"], vb.manifest_self_hash(m))
        self.assertTrue(raw.startswith(b'{\n  "created_at": "2024-05-01T12:00:00Z",\n  "events": 18,\n'
                                       b'  "files": [\n    {\n      "batches": 3,\n'), raw[:200])
        self.assertTrue(raw.endswith(b'  "version": 1\n}\n'))
        self.assertIn(b'  "manifest_sha256": "', vb.__doc__.encode() + raw)
        self.assertIn("json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True)", vb.__doc__)

    def test_json_output(self):
        rc, out, _ = run_inproc(self.bundle, "--json")
        self.assertEqual(rc, 0)
        j = json.loads(out)
        self.assertEqual((j["ok"], j["head"], j["events"], j["batches"], j["segments"], j["error"]),
                         (True, self.head, 18, 8, 3, None))
        with open(self.seg_path(1), "r+b") as f:
            f.seek(100)
            b = f.read(1)
            f.seek(100)
            f.write(bytes([b[0] ^ 1]))
        rc, out, _ = run_inproc(self.bundle, "--json")
        self.assertEqual(rc, 1)
        j = json.loads(out)
        self.assertFalse(j["ok"])
        self.assertIn("sha256", j["error"])

    def test_recorded_loss_is_reported(self):
        # A repaired store's bundle: the chain holds, and the loss its log records is said (it
        # said only "bundle OK"; hostile test).
        loss = {"seq": 4, "type": "ledger.loss_recorded", "id": "l-1",
                "data": {"last_known_head": "9:" + "ab" * 32, "log_ended_at": "3:" + "cd" * 32,
                         "evidence": "state/head", "reason": "disk replaced\x1b[2J; backup lost"}}
        lines = event_lines(1, 3) + [json.dumps(loss, sort_keys=True).encode() + b"\n"]
        raw, chain = encode_batch(b"\x00" * 32, 1, b"".join(lines), 4)
        name = "segments/%020d.seg" % 1
        bundle = os.path.join(self.tmp, "repaired")
        head = "4:" + chain.hex()
        write_bundle(bundle, [(name, raw, [{"offset": 0, "first": 1, "last": 4, "chain": chain, "lines": lines}])], head)
        rc, out, err = run_inproc(bundle)
        self.assertEqual(rc, 0, out + err)
        self.assertTrue(out.startswith("bundle OK: 4 events"), out)
        self.assertIn("warning: seq 4 records a loss: the log ended at 3:%s, before the head 9:%s"
                      % ("cd" * 32, "ab" * 32), out)
        self.assertIn("(reason: disk replaced?[2J; backup lost)", out)
        rc, out, _ = run_inproc(bundle, "--json")
        self.assertEqual(rc, 0)
        self.assertEqual([l["seq"] for l in json.loads(out)["losses"]], [4])
        # No loss, no warning.
        self.assertNotIn("records a loss", self.assertOK())
        rc, out, _ = run_inproc(self.bundle, "--json")
        self.assertEqual(json.loads(out)["losses"], [])

    def test_no_crc_still_ok(self):
        self.assertOK("--no-crc", head=self.head)

    def test_empty_bundle(self):
        shutil.rmtree(self.bundle)
        os.makedirs(os.path.join(self.bundle, "segments"))
        write_manifest(self.bundle, [], "0:" + "0" * 64)
        self.assertOK(head="0:" + "0" * 64)
        self.assertOK("--expect-head", "0:" + "0" * 64)
        self.assertFailed("--expect-head", "1:" + "a" * 64, contains="beyond")

    def test_multi_block_batches(self):
        segs, head, lines = build_segments([[300, 5], [700]], pad=200)   # 64 KiB blocks: several per batch
        shutil.rmtree(self.bundle)
        write_bundle(self.bundle, segs, head)
        for _, data, batches in segs:
            frame = data[80:80 + struct.unpack_from("<I", data, 28)[0]]
            self.assertGreater(len(lz4_decompress(frame)), 65536)
        self.assertOK(head=head)
        self.assertOK("--expect-head", "300:" + segs[0][2][0]["chain"].hex())

    # ---------------------------------------------------------------- expect-head

    def test_expect_head_current_and_every_earlier_anchor(self):
        self.assertOK("--expect-head", self.head)
        self.assertOK("--expect-head", self.head.upper())  # hex digits case-insensitive
        self.assertOK("--expect-head", "0:" + "0" * 64)
        for _, _, batches in self.segments:
            for b in batches:
                out = self.assertOK("--expect-head", "%d:%s" % (b["last"], b["chain"].hex()),
                                    head=self.head)
                self.assertIn("matches the expected head", out)

    def test_expect_head_wrong(self):
        seq, h = self.head.split(":")
        wrong = h[:-1] + ("0" if h[-1] != "0" else "1")
        self.assertFailed("--expect-head", seq + ":" + wrong, contains="--expect-head mismatch")
        first = self.segments[0][2][0]
        self.assertFailed("--expect-head", "%d:%s" % (first["last"], wrong),
                          contains="--expect-head mismatch")
        # seq inside a batch (batch 2 is seqs 3...5)
        self.assertFailed("--expect-head", "4:" + h, contains="no batch ends there")
        self.assertFailed("--expect-head", "19:" + h, contains="beyond")
        self.assertFailed("--expect-head", "0:" + h)

    def test_expect_head_malformed_is_usage_error(self):
        for bad in ("", "abc", "5", "5:" + "0" * 63, "-1:" + "0" * 64, "x:" + "0" * 64,
                    "5:" + "g" * 64):
            rc, _, err = run_inproc(self.bundle, "--expect-head", bad)
            self.assertEqual(rc, 2, bad)
            self.assertIn("--expect-head", err)

    # ---------------------------------------------------------------- every-byte corruption

    def test_every_bit_of_manifest(self):
        path = os.path.join(self.bundle, "MANIFEST.json")
        with open(path, "rb") as f:
            orig = f.read()
        try:
            for i in range(len(orig)):
                for bit in range(8):
                    data = bytearray(orig)
                    data[i] ^= 1 << bit
                    with open(path, "wb") as f:
                        f.write(data)
                    self.assertFailed(msg="manifest byte %d bit %d" % (i, bit))
        finally:
            with open(path, "wb") as f:
                f.write(orig)
        self.assertOK()

    def test_every_byte_of_segments(self):
        """Bit flips anywhere in a segment: caught by the manifest's SHA-256; and with the manifest's
        sha256 refreshed (corruption before export), caught by the CRCs / structure."""
        for si, (name, orig, _) in enumerate(self.segments):
            path = self.seg_path(si)
            mpath = os.path.join(self.bundle, "MANIFEST.json")
            with open(mpath, "rb") as f:
                morig = f.read()
            try:
                for i in range(len(orig)):
                    for bit in (i % 8, (i + 3) % 8):
                        data = bytearray(orig)
                        data[i] ^= 1 << bit
                        with open(path, "wb") as f:
                            f.write(data)
                        with open(mpath, "wb") as f:
                            f.write(morig)
                        self.assertFailed(contains="sha256", msg="%s byte %d" % (name, i))
                        refresh_file_hash(self.bundle, name)
                        out = self.assertFailed(msg="%s byte %d bit %d (refreshed)" % (name, i, bit))
                        self.assertNotIn("sha256", out)
            finally:
                with open(path, "wb") as f:
                    f.write(orig)
                with open(mpath, "wb") as f:
                    f.write(morig)
        self.assertOK(head=self.head)

    def test_no_crc_random_corruption_never_crashes(self):
        """With --no-crc the lz4/frame/chain paths see the corruption; the verdict must be a clean
        one-liner. (A flip can leave decoded content unchanged -- e.g. a match offset pointing at
        identical bytes -- which only the CRC would notice, so rc 0 is allowed here.)"""
        rng = random.Random(1234)
        name, orig, batches = self.segments[0]
        detected = 0
        for trial in range(150):
            data = bytearray(orig)
            for _ in range(rng.choice((1, 1, 2, 5))):
                i = rng.randrange(80, len(data))   # payload and later headers
                data[i] = rng.randrange(256)
            self.rewrite_segment(0, bytes(data))
            rc, out, err = run_inproc(self.bundle, "--no-crc")
            self.assertIn(rc, (0, 1), out + err)
            self.assertEqual(out.count("\n"), 1, out)
            self.assertNotIn("internal error", out)
            detected += rc == 1
        self.assertGreater(detected, 100)

    # ---------------------------------------------------------------- truncation

    def test_truncated_segments(self):
        for si, (name, orig, batches) in enumerate(self.segments):
            boundaries = {b["offset"] for b in batches} | {len(orig)}
            for cut in range(0, len(orig), 7):
                self.rewrite_segment(si, orig[:cut], refresh=False)
                self.assertFailed(msg="%s cut %d" % (name, cut))
                self.rewrite_segment(si, orig[:cut], refresh=True)
                out = self.assertFailed(msg="%s cut %d refreshed" % (name, cut))
                if cut not in boundaries:
                    self.assertTrue("truncated" in out or "too small" in out, out)
            self.rewrite_segment(si, orig, refresh=True)
        self.assertOK(head=self.head)

    def test_rollback_to_earlier_batch_needs_expect_head(self):
        """Dropping the last batch and rewriting the manifest consistently is a valid, shorter
        bundle: only --expect-head with the original head exposes it."""
        name, data, batches = self.segments[-1]
        keep = batches[:-1]
        cut = batches[-1]["offset"]
        with open(self.seg_path(2), "wb") as f:
            f.write(data[:cut])
        files = [file_entry(n, d, b) for n, d, b in self.segments[:-1]]
        files.append(file_entry(name, data[:cut], keep))
        short_head = "%d:%s" % (keep[-1]["last"], keep[-1]["chain"].hex())
        write_manifest(self.bundle, files, short_head)
        self.assertOK(head=short_head)
        self.assertFailed("--expect-head", self.head, contains="beyond")

    # ---------------------------------------------------------------- the rewrite attack

    def test_attacker_recomputes_everything(self):
        """Change one event in segment 1, batch 2; re-encode that and every later batch (new CRCs,
        new chain hashes) and rewrite the manifest. Self-consistent -> OK; but it fails against the
        original head, while an anchor before the change still verifies."""
        segs = []
        chain = b"\x00" * 32
        target = self.segments[0][2][1]
        for name, data, batches in self.segments:
            out = b""
            new_batches = []
            for b in batches:
                frame_len = struct.unpack_from("<I", data, b["offset"] + 28)[0]
                frame = data[b["offset"] + 80:b["offset"] + 80 + frame_len]
                payload = lz4_decompress(frame)       # the attacker reads the stock format
                if b is target:
                    payload = payload.replace(b'"apt-00004"', b'"apt-99999"')
                    self.assertNotEqual(payload, b"".join(b["lines"]))
                count = payload.count(b"\n")
                raw, chain = encode_batch(chain, b["first"], payload, count)
                new_batches.append(dict(b, offset=len(out), chain=chain))
                out += raw
            segs.append((name, out, new_batches))
        forged_head = "%d:%s" % (segs[-1][2][-1]["last"], chain.hex())
        self.assertNotEqual(forged_head, self.head)
        shutil.rmtree(self.bundle)
        write_bundle(self.bundle, segs, forged_head)
        self.assertEqual(segs[0][1][:segs[0][2][1]["offset"]],
                         self.segments[0][1][:self.segments[0][2][1]["offset"]])
        self.assertOK(head=forged_head)                       # self-consistent
        out = self.assertFailed("--expect-head", self.head, contains="--expect-head mismatch")
        self.assertIn("segments/00000000000000000013.seg", out)  # the last batch ends at 18
        first = self.segments[0][2][0]
        self.assertOK("--expect-head", "%d:%s" % (first["last"], first["chain"].hex()))
        second = self.segments[0][2][1]                       # the changed batch
        out = self.assertFailed("--expect-head", "%d:%s" % (second["last"], second["chain"].hex()),
                                contains="--expect-head mismatch")
        self.assertIn("segments/00000000000000000001.seg offset %d (seq 3)" % segs[0][2][1]["offset"],
                      out)

    # ---------------------------------------------------------------- consistent-but-wrong batches

    def _single_batch_bundle(self, **kw):
        payload = b"".join(event_lines(1, 3))
        count = kw.pop("count", 3)
        payload = kw.pop("payload", payload)
        raw, chain = encode_batch(b"\x00" * 32, kw.pop("first_seq", 1), payload, count, **kw)
        name = kw.pop("name", "segments/%020d.seg" % 1)
        shutil.rmtree(self.bundle)
        os.makedirs(os.path.join(self.bundle, "segments"))
        with open(os.path.join(self.bundle, name), "wb") as f:
            f.write(raw)
        write_manifest(self.bundle, [{"name": name, "sha256": hashlib.sha256(raw).hexdigest(),
                                      "bytes": len(raw), "first_seq": 1, "last_seq": count,
                                      "batches": 1}], "%d:%s" % (count, chain.hex()))

    def test_consistent_but_invalid_batches(self):
        good = b"".join(event_lines(1, 3))
        self._single_batch_bundle()
        self.assertOK()
        cases = [
            (dict(count=4), "lines"),
            (dict(payload=good[:-1], count=3), "lines"),
            (dict(payload=good + b"\n", count=3), "lines"),
            (dict(version=2), "unsupported format_version 2"),
            (dict(flags=1), "reserved flags"),
            (dict(first_seq=2), "first_seq 2"),
            (dict(chain=b"\x11" * 32), "chain hash mismatch"),
            (dict(frame=good), "LZ4 frame magic"),
            (dict(frame=lz4_plain(good[:40]) + lz4_plain(good[40:])), "LZ4 frame is"),
            (dict(frame=lz4_compress(good), ulen=len(good) + 1), "content size"),
            (dict(frame=lz4_compress(good + b"x\n"), ulen=len(good) + 2), None),
        ]
        for kw, contains in cases:
            self._single_batch_bundle(**dict(kw))
            self.assertFailed(contains=contains, msg=repr(kw)[:80])

    def test_frame_without_content_size_and_wrong_length(self):
        """A frame without the content-size field whose content is longer than uncompressed_length:
        caught by the split (chain mismatch) or the total-length check."""
        good = b"".join(event_lines(1, 3))
        frame = lz4_plain(good + b"zz\n")
        self._single_batch_bundle(frame=frame, ulen=len(good))
        self.assertFailed()
        frame = lz4_plain(good)
        self._single_batch_bundle(frame=frame)  # no content size, but right: accepted
        self.assertOK()

    def test_segment_name_must_match_first_seq(self):
        name, data, batches = self.segments[1]
        os.rename(self.seg_path(1), os.path.join(self.bundle, "segments", "%020d.seg" % 8))
        m = self.manifest()
        m["files"][1]["name"] = "segments/%020d.seg" % 8
        write_manifest(self.bundle, m["files"], m["head"])
        self.assertFailed(contains="does not match first_seq")   # manifest catches it first

    def test_sequence_gap_between_segments(self):
        # drop the middle segment, manifest rewritten consistently apart from the gap
        os.remove(self.seg_path(1))
        m = self.manifest()
        del m["files"][1]
        write_manifest(self.bundle, m["files"], m["head"])
        self.assertFailed(contains="does not continue")
        # and with the manifest also lying about seqs, the segment walk catches it
        m["files"][1]["first_seq"] = 7
        m["files"][1]["name"] = "segments/%020d.seg" % 7
        os.rename(self.seg_path(2), os.path.join(self.bundle, m["files"][1]["name"]))
        write_manifest(self.bundle, m["files"], m["head"])
        self.assertFailed(contains="first_seq 13 does not continue the previous seq 6")

    # ---------------------------------------------------------------- files / manifest rules

    def test_extra_missing_and_empty_files(self):
        extra = os.path.join(self.bundle, "segments", "%020d.seg" % 19)
        with open(extra, "wb") as f:
            f.write(b"")
        self.assertFailed(contains="not listed")
        os.remove(extra)
        with open(os.path.join(self.bundle, "segments", ".DS_Store"), "wb") as f:
            f.write(b"x")
        self.assertOK()
        os.remove(self.seg_path(2))
        self.assertFailed(contains="missing")

    def test_empty_segment_listed(self):
        self.rewrite_segment(2, b"")
        self.assertFailed()

    def test_manifest_rules(self):
        path = os.path.join(self.bundle, "MANIFEST.json")
        m = self.manifest()

        def put(raw):
            with open(path, "wb") as f:
                f.write(raw)

        put(json.dumps(m, indent=4, sort_keys=True).encode() + b"\n")
        self.assertFailed(contains="canonical")
        put(canonical(m)[:-1])
        self.assertFailed(contains="canonical")
        put(canonical(m).replace(b"\n", b"\r\n"))
        self.assertFailed(contains="canonical")
        put(json.dumps(dict(reversed(list(m.items()))), indent=2).encode() + b"\n")  # unsorted
        self.assertFailed(contains="canonical")
        put(b"\xef\xbb\xbf" + canonical(m))
        self.assertFailed()
        put(b"")
        self.assertFailed()
        put(b"[]\n")
        self.assertFailed()
        os.remove(path)
        self.assertFailed(contains="missing")

        def bad(tweak, contains=None, after_hash=None):
            write_manifest(self.bundle, json.loads(json.dumps(m["files"])), m["head"], tweak=tweak,
                           after_hash=after_hash)
            self.assertFailed(contains=contains, msg=contains or "")

        # a value nothing else can check: only the self-hash notices
        bad(None, "manifest_sha256", after_hash=lambda d: d.update(created_at="2024-05-01T12:00:01Z"))
        bad(None, "manifest_sha256", after_hash=lambda d: d.update(manifest_sha256="0" * 64))
        bad(None, "manifest_sha256", after_hash=lambda d: d.pop("manifest_sha256"))
        bad(lambda d: d.update(format="other"), "format")
        bad(lambda d: d.update(version=2), "version")
        bad(lambda d: d.update(version=True), "version")
        bad(lambda d: d.update(extra="x"), "wrong keys")
        bad(lambda d: d.pop("created_at"), "wrong keys")
        bad(lambda d: d.update(created_at="yesterday"), "created_at")
        bad(lambda d: d.update(events=17), "events")
        bad(lambda d: d.update(events="18"), "events")
        bad(lambda d: d.update(head=d["head"].upper()), "head")
        bad(lambda d: d.update(head="018:" + d["head"].split(":")[1]), "head")
        bad(lambda d: d.update(files={}), "files")
        bad(lambda d: d["files"].reverse(), "files[0]")
        bad(lambda d: d["files"].insert(1, dict(d["files"][0])), "sorted")
        bad(lambda d: d["files"][0].update(name="../00000000000000000001.seg"), "name")
        bad(lambda d: d["files"][0].update(name="segments/1.seg"), "name")
        bad(lambda d: d["files"][0].update(bytes=-1), "bytes")
        bad(lambda d: d["files"][0].update(bytes=2 ** 70), "bytes")
        bad(lambda d: d["files"][0].update(batches=0), "batches")
        bad(lambda d: d["files"][0].update(batches=2), "batches")       # real value 3
        bad(lambda d: d["files"][0].update(last_seq=7) or d["files"][1].update(
            first_seq=8, name="segments/%020d.seg" % 8), None)
        bad(lambda d: d["files"][0].update(sha256=d["files"][0]["sha256"].upper()), "sha256")
        bad(lambda d: d["files"][0].update(extra=1), "keys")
        bad(lambda d: d["files"].append(dict(d["files"][-1])), None)
        bad(lambda d: d["files"].pop(), None)
        bad(lambda d: d.update(head="18:" + "0" * 64), "head")
        write_manifest(self.bundle, m["files"], m["head"])
        self.assertOK(head=self.head)

    # ---------------------------------------------------------------- the real CLI

    def test_cli_default_dir_and_exit_codes(self):
        shutil.copy(SCRIPT, os.path.join(self.bundle, "verify_bundle.py"))
        rc, out, err = run_cli(os.path.join(self.bundle, "verify_bundle.py"), cwd=self.tmp)
        self.assertEqual((rc, out), (0, "bundle OK: 18 events in 8 batches, 3 segments; head %s\n"
                                     % self.head), err)
        self.assertIn("--expect-head", err)   # the self-consistency-only note
        rc, out, err = run_cli(SCRIPT, self.bundle, "--expect-head", self.head, "--json")
        self.assertEqual(rc, 0, err)
        self.assertTrue(json.loads(out)["ok"])
        with open(self.seg_path(0), "r+b") as f:
            f.truncate(50)
        rc, out, err = run_cli(SCRIPT, self.bundle)
        self.assertEqual(rc, 1)
        self.assertEqual(out.count("\n"), 1)
        self.assertTrue(out.startswith("bundle FAILED: segments/00000000000000000001.seg: size 50"),
                        out)
        self.assertEqual(err, "")
        rc, out, err = run_cli(SCRIPT, os.path.join(self.tmp, "nope"))
        self.assertEqual(rc, 2)
        rc, out, err = run_cli(SCRIPT, self.bundle, "--bogus")
        self.assertEqual(rc, 2)
        self.assertNotIn("Traceback", err)
        rc, out, err = run_cli(SCRIPT, self.tmp)             # a directory without a manifest
        self.assertEqual(rc, 1)
        self.assertIn("MANIFEST.json: missing", out)

    def test_cli_lz4_missing(self):
        empty = os.path.join(self.tmp, "emptybin")
        os.makedirs(empty)
        rc, out, err = run_cli(SCRIPT, self.bundle, env={"PATH": empty})
        self.assertEqual(rc, 2)
        self.assertIn("apt-get install lz4", err)
        self.assertNotIn("Traceback", err)


if __name__ == "__main__":
    unittest.main()
