#!/usr/bin/env python3
"""Independent verifier for a SyncLedger export bundle.

Needs only Python 3 (>= 3.8, standard library only) and the stock `lz4`
command-line tool (Debian/Ubuntu: apt-get install lz4). It does not import or
trust any SyncLedger code.

Usage:
    python3 verify_bundle.py [BUNDLE_DIR] [--expect-head SEQ:HASH] [--no-crc] [--json]

BUNDLE_DIR defaults to the directory this script is in. Exit status: 0 = bundle
OK, 1 = bundle FAILED (one line on stdout says where and why), 2 = usage error
or the lz4 command is missing.

What "OK" means: the bundle is self-consistent (manifest, file hashes, batch
headers, CRC32C checksums, sequence numbers, LZ4 frames, line counts and the
SHA-256 hash chain all agree). Self-consistency alone does NOT prove the bundle
was not rewritten: whoever can edit the events can also recompute every CRC,
chain hash and the manifest. Tampering is detected only by comparing against a
head obtained from a trusted source: pass it as --expect-head SEQ:HASH. The
expected head may be an earlier anchor (SEQ <= the bundle's last seq); it must
then equal the chain hash of the batch that ends exactly at SEQ.

Bundle layout
-------------
    BUNDLE_DIR/MANIFEST.json        the manifest (canonical form below)
    BUNDLE_DIR/segments/<20 digits>.seg
    BUNDLE_DIR/verify_bundle.py     this script (compare it with a trusted copy:
                                    it cannot vouch for itself)

Manifest (exact, canonical bytes)
---------------------------------
The manifest is a JSON object whose values are only strings, non-negative
integers, and a list of objects of the same kind. The file's bytes must be
EXACTLY the canonical serialization of the object it parses to, which is
Python's

    json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True) + "\\n"

i.e.: keys sorted by code point at every level; two-space indentation, one
key or element per line; ": " between key and value; "," at the end of every
line except the last in an object/array (no space after it, no trailing
whitespace anywhere); an empty list is written "[]"; integers in plain decimal
without leading zeros; strings with only printable ASCII (anything else
escaped as \\uXXXX -- the writer never needs it); LF line endings; exactly one
"\\n" after the final "}"; no BOM. Any other byte sequence (even one that
parses to the same object) is rejected, so changing any byte of the manifest
fails verification.

Keys (all required, no others allowed):
    "created_at"       string, ISO 8601 UTC, e.g. "2024-05-01T12:00:00Z"
                       (regex ^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?(Z|[+-]\\d{2}:\\d{2})$)
    "events"           integer = the head's seq (seqs start at 1, gapless)
    "files"            list sorted by "name", one object per segment file:
        "batches"      integer >= 1, batches in the file
        "bytes"        integer, file size
        "first_seq"    integer, first seq in the file
        "last_seq"     integer, last seq in the file
        "name"         "segments/" + first_seq as 20 zero-padded digits + ".seg"
        "sha256"       64 lowercase hex digits, SHA-256 of the file
    "format"           "syncledger-bundle"
    "head"             "SEQ:HASH", SEQ decimal (no leading zeros), HASH 64 lowercase hex;
                       an empty bundle's head is "0:" + 64 zeros (and "files" is [])
    "manifest_sha256"  64 lowercase hex digits: SHA-256 of the canonical bytes (as
                       above, including the final "\\n") of the manifest object WITHOUT
                       the "manifest_sha256" key. This is a corruption check for the
                       fields nothing else can check (e.g. created_at); like
                       everything else in the bundle it is not an authenticity proof.
    "version"          1

Example (exact bytes; the writer renders them by hand):

{
  "created_at": "2024-05-01T12:00:00Z",
  "events": 5,
  "files": [
    {
      "batches": 2,
      "bytes": 402,
      "first_seq": 1,
      "last_seq": 3,
      "name": "segments/00000000000000000001.seg",
      "sha256": "<64 hex>"
    },
    {
      "batches": 1,
      "bytes": 190,
      "first_seq": 4,
      "last_seq": 5,
      "name": "segments/00000000000000000004.seg",
      "sha256": "<64 hex>"
    }
  ],
  "format": "syncledger-bundle",
  "head": "5:<64 hex>",
  "manifest_sha256": "<64 hex>",
  "version": 1
}

Version 2, a range of the log (syncledger export --bundle DIR --from-seq N --to-seq M),
adds four keys and keeps the others (events and head are the whole log's head):
    "range_first_seq"  first seq in the bundle (the start of the batch holding N)
    "range_last_seq"   last seq in the bundle (the end of the batch holding M)
    "chain_before"     64 lowercase hex: the chain hash at range_first_seq - 1 (64 zeros at seq 1)
    "proof"            list, one object per batch after the range up to the head, in order:
                       "count", "first_seq", "uncompressed_length", "version" (the batch header's)
                       and "payload_sha256" (SHA-256 of its JSON Lines), i.e. the chain inputs
The chain is recomputed from chain_before through the range's batches (their bytes) and then
through the proof entries (their hashes) to the head: a head (or later anchor) from a trusted
source therefore proves the range, without the events outside it. An --expect-head before the
range is refused (an anchor before a range proves nothing about it). "files" then start at
range_first_seq, and their names at the first seq they hold.

segments/ must contain exactly the listed files (any other entry whose name
does not start with "." fails). Segments must not be empty (the exporter omits
an active segment that has no complete batch).

Segment format: see docs/CONTRACTS.md (EventLog). Each batch is an 80-byte LZ4
skippable frame (magic 0x184D2A50, size 72, header "SLGB" ...) followed by one
standard LZ4 frame holding JSON Lines. This script checks, per segment:

  pass 1 (pure Python, reads the file): magic, header size, "SLGB", header
    CRC32C, version, flags, gapless seqs starting at 1, file name = first seq,
    count/length bounds, payload CRC32C (skipped with --no-crc: it is the slow
    part; header CRCs are always checked), and that the payload bytes are
    exactly one well-formed LZ4 frame (frame header, block sizes, end mark,
    content size = uncompressed_length when present) ending exactly at
    compressed_length;
  pass 2: ONE `lz4 -d -c SEGMENT` subprocess per segment. Stock lz4 skips the
    skippable frames and writes the concatenated contents of the LZ4 frames;
    since pass 1 proved every batch's payload is exactly one complete frame,
    that stream is the batches' contents in order. It is read incrementally,
    split by each header's uncompressed_length (so memory stays bounded by
    one batch), and its total length must match exactly. One process per
    segment instead of per batch: a 64 MiB segment can hold thousands of
    batches, and a process per batch would dominate the run time. Then each
    batch must hold exactly `count` lines each ending in "\\n", and the
    SHA-256 chain is recomputed and compared with every stored chain_hash.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

FORMAT_NAME = "syncledger-bundle"
BUNDLE_VERSION = 1
SKIPPABLE_MAGIC = 0x184D2A50
LZ4_FRAME_MAGIC = 0x184D2204
HEADER_SIZE = 72
BATCH_HEADER_BYTES = 8 + HEADER_SIZE  # 80
FORMAT_VERSION = 1
MAX_COUNT = 1000000
MAX_UNCOMPRESSED = 256 << 20
MAX_MANIFEST_BYTES = 64 << 20
ZERO_HASH = b"\x00" * 32
SEGMENT_NAME_RE = re.compile(r"^segments/([0-9]{20})\.seg$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
HEAD_RE = re.compile(r"^(0|[1-9][0-9]{0,19}):([0-9a-f]{64})$")
CREATED_AT_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
TOP_KEYS = {"created_at", "events", "files", "format", "head", "manifest_sha256", "version"}
FILE_KEYS = {"batches", "bytes", "first_seq", "last_seq", "name", "sha256"}
# Version 2: a range of the log (export --bundle --from-seq/--to-seq), proven against the head.
RANGE_VERSION = 2
RANGE_KEYS = TOP_KEYS | {"chain_before", "proof", "range_first_seq", "range_last_seq"}
PROOF_KEYS = {"count", "first_seq", "payload_sha256", "uncompressed_length", "version"}
U64_MAX = (1 << 64) - 1

_HDR = struct.Struct("<II4sHHQIIQ32sII")  # 80 bytes: the whole skippable frame


# --------------------------------------------------------------------------- CRC32C

def _make_crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli), reflected, init/xorout 0xFFFFFFFF."""
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------- helpers

class VerifyError(Exception):
    def __init__(self, what, file=None, offset=None, seq=None):
        Exception.__init__(self, what)
        self.what = what
        self.file = file
        self.offset = offset
        self.seq = seq

    def line(self):
        where = self.file if self.file is not None else "bundle"
        if self.offset is not None:
            where += " offset %d" % self.offset
        if self.seq is not None:
            where += " (seq %d)" % self.seq
        return "%s: %s" % (where, self.what)


class UsageError(Exception):
    pass


def canonical_manifest_bytes(obj):
    """The exact bytes a manifest object must be stored as."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


def manifest_self_hash(obj):
    body = dict(obj)
    body.pop("manifest_sha256", None)
    return hashlib.sha256(canonical_manifest_bytes(body)).hexdigest()


def parse_head(text):
    """'SEQ:HASH' -> (seq, 32 bytes) or None."""
    if not isinstance(text, str):
        return None
    m = HEAD_RE.match(text)
    if not m:
        return None
    seq = int(m.group(1))
    if seq > U64_MAX:
        return None
    return seq, bytes.fromhex(m.group(2))


def format_head(seq, chain):
    return "%d:%s" % (seq, chain.hex())


def _is_uint(v):
    return type(v) is int and 0 <= v <= U64_MAX


# --------------------------------------------------------------------------- manifest

def load_manifest(bundle_dir):
    path = os.path.join(bundle_dir, "MANIFEST.json")
    name = "MANIFEST.json"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise VerifyError("missing (is %s a bundle directory?)" % bundle_dir, name)
    except OSError as e:
        raise VerifyError("cannot read: %s" % e.strerror, name)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise VerifyError("larger than %d bytes" % MAX_MANIFEST_BYTES, name)
    try:
        text = raw.decode("ascii")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise VerifyError("not valid ASCII JSON (%s)" % str(e).splitlines()[0][:200], name)
    if not isinstance(obj, dict):
        raise VerifyError("not a JSON object", name)
    try:
        canonical = canonical_manifest_bytes(obj)
    except (ValueError, TypeError, RecursionError) as e:
        raise VerifyError("cannot be re-serialized (%s)" % e, name)
    if canonical != raw:
        i = next((k for k in range(min(len(raw), len(canonical))) if raw[k] != canonical[k]),
                 min(len(raw), len(canonical)))
        raise VerifyError("not in canonical form (json.dumps(m, indent=2, sort_keys=True, "
                          "ensure_ascii=True) + '\\n'); first difference at byte %d" % i, name, i)
    validate_manifest(obj)
    return obj


def validate_manifest(m):
    name = "MANIFEST.json"

    def bad(what):
        raise VerifyError(what, name)

    keys = set(m.keys())
    if type(m.get("version")) is not int or m.get("version") not in (BUNDLE_VERSION, RANGE_VERSION):
        bad("unsupported bundle version %r" % (m.get("version"),))
    ranged = m["version"] == RANGE_VERSION
    want = RANGE_KEYS if ranged else TOP_KEYS
    if keys != want:
        missing = sorted(want - keys)
        extra = sorted(keys - want)
        bad("wrong keys for a version %d bundle (missing %s, unexpected %s)" % (m["version"], missing, extra))
    if m["format"] != FORMAT_NAME:
        bad("format is %r, expected %r" % (m["format"], FORMAT_NAME))
    if not isinstance(m["manifest_sha256"], str) or not HEX64_RE.match(m["manifest_sha256"]):
        bad("manifest_sha256 is not 64 lowercase hex digits")
    if m["manifest_sha256"] != manifest_self_hash(m):
        bad("manifest_sha256 does not match the manifest's contents (manifest corrupted)")
    if not isinstance(m["created_at"], str) or not CREATED_AT_RE.match(m["created_at"]):
        bad("created_at is not an ISO 8601 timestamp")
    head = parse_head(m["head"])
    if head is None:
        bad("head is not 'SEQ:<64 lowercase hex>'")
    if not _is_uint(m["events"]):
        bad("events is not a non-negative integer")
    if m["events"] != head[0]:
        bad("events %d != head seq %d" % (m["events"], head[0]))
    files = m["files"]
    if not isinstance(files, list):
        bad("files is not a list")
    prev_last = 0
    if ranged:
        for k in ("range_first_seq", "range_last_seq"):
            if not _is_uint(m[k]) or m[k] < 1:
                bad("%s is not a positive integer" % k)
        if m["range_last_seq"] < m["range_first_seq"]:
            bad("range_last_seq %d < range_first_seq %d" % (m["range_last_seq"], m["range_first_seq"]))
        if not isinstance(m["chain_before"], str) or not HEX64_RE.match(m["chain_before"]):
            bad("chain_before is not 64 lowercase hex digits")
        if m["range_first_seq"] == 1 and m["chain_before"] != "0" * 64:
            bad("chain_before of a range starting at seq 1 must be 64 zeros")
        if not files:
            bad("a range bundle holds at least one segment")
        prev_last = m["range_first_seq"] - 1
    prev_name = None
    for i, f in enumerate(files):
        if not isinstance(f, dict) or set(f.keys()) != FILE_KEYS:
            bad("files[%d] must be an object with exactly the keys %s" % (i, sorted(FILE_KEYS)))
        fname = f["name"]
        if not isinstance(fname, str) or not SEGMENT_NAME_RE.match(fname):
            bad("files[%d].name %r is not 'segments/<20 digits>.seg'" % (i, fname))
        for k in ("batches", "bytes", "first_seq", "last_seq"):
            if not _is_uint(f[k]):
                bad("files[%d].%s is not a non-negative integer" % (i, k))
        if not isinstance(f["sha256"], str) or not HEX64_RE.match(f["sha256"]):
            bad("files[%d].sha256 is not 64 lowercase hex digits" % i)
        if prev_name is not None and fname <= prev_name:
            bad("files not sorted by name / duplicate name at files[%d]" % i)
        prev_name = fname
        if int(SEGMENT_NAME_RE.match(fname).group(1)) != f["first_seq"]:
            bad("files[%d]: name %s does not match first_seq %d" % (i, fname, f["first_seq"]))
        if f["first_seq"] != prev_last + 1:
            bad("files[%d]: first_seq %d does not continue previous last_seq %d"
                % (i, f["first_seq"], prev_last))
        if f["last_seq"] < f["first_seq"]:
            bad("files[%d]: last_seq %d < first_seq %d" % (i, f["last_seq"], f["first_seq"]))
        if f["batches"] < 1 or f["batches"] > f["last_seq"] - f["first_seq"] + 1:
            bad("files[%d]: batches %d impossible for seqs %d...%d"
                % (i, f["batches"], f["first_seq"], f["last_seq"]))
        if f["bytes"] < f["batches"] * BATCH_HEADER_BYTES:
            bad("files[%d]: bytes %d too small for %d batches" % (i, f["bytes"], f["batches"]))
        prev_last = f["last_seq"]
    if ranged:
        if prev_last != m["range_last_seq"]:
            bad("range_last_seq %d != last file's last_seq %d" % (m["range_last_seq"], prev_last))
        proof = m["proof"]
        if not isinstance(proof, list):
            bad("proof is not a list")
        for i, p in enumerate(proof):
            if not isinstance(p, dict) or set(p.keys()) != PROOF_KEYS:
                bad("proof[%d] must be an object with exactly the keys %s" % (i, sorted(PROOF_KEYS)))
            for k in ("count", "first_seq", "uncompressed_length", "version"):
                if not _is_uint(p[k]):
                    bad("proof[%d].%s is not a non-negative integer" % (i, k))
            if not isinstance(p["payload_sha256"], str) or not HEX64_RE.match(p["payload_sha256"]):
                bad("proof[%d].payload_sha256 is not 64 lowercase hex digits" % i)
            if p["first_seq"] != prev_last + 1 or p["count"] < 1:
                bad("proof[%d]: batch %d (+%d) does not continue seq %d" % (i, p["first_seq"], p["count"], prev_last))
            prev_last = p["first_seq"] + p["count"] - 1
    if prev_last != head[0]:
        bad("head seq %d != last file's last_seq %d" % (head[0], prev_last))
    if not files and head[1] != ZERO_HASH:
        bad("empty bundle must have head 0:%s" % ("0" * 64))


# --------------------------------------------------------------------------- files

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def check_files(bundle_dir, manifest):
    listed = set()
    for f in manifest["files"]:
        name = f["name"]
        listed.add(name.split("/", 1)[1])
        path = os.path.join(bundle_dir, *name.split("/"))
        try:
            if not os.path.isfile(path):
                raise VerifyError("listed in the manifest but missing (or not a regular file)", name)
            size = os.path.getsize(path)
            if size != f["bytes"]:
                raise VerifyError("size %d != manifest bytes %d" % (size, f["bytes"]), name)
            digest = sha256_file(path)
        except OSError as e:
            raise VerifyError("cannot read: %s" % (e.strerror or e), name)
        if digest != f["sha256"]:
            raise VerifyError("sha256 %s != manifest sha256 %s" % (digest, f["sha256"]), name)
    seg_dir = os.path.join(bundle_dir, "segments")
    try:
        entries = sorted(os.listdir(seg_dir))
    except FileNotFoundError:
        entries = []
    except OSError as e:
        raise VerifyError("cannot list: %s" % (e.strerror or e), "segments/")
    for e in entries:
        if e.startswith("."):
            continue
        if e not in listed:
            raise VerifyError("not listed in the manifest", "segments/" + e)


# --------------------------------------------------------------------------- LZ4 frame

def check_lz4_frame(buf, uncompressed_length):
    """Structure of one standard LZ4 frame occupying exactly buf. Returns None or a problem."""
    n = len(buf)
    if n < 7:
        return "LZ4 frame shorter than a frame header"
    if struct.unpack_from("<I", buf, 0)[0] != LZ4_FRAME_MAGIC:
        return "payload does not start with the LZ4 frame magic 0x184D2204"
    flg, bd = buf[4], buf[5]
    if (flg >> 6) != 1:
        return "LZ4 frame version is not 01"
    if flg & 0x02:
        return "LZ4 frame FLG reserved bit set"
    if flg & 0x01:
        return "LZ4 frame uses a dictionary id (not supported)"
    if bd & 0x8F:
        return "LZ4 frame BD reserved bits set"
    code = (bd >> 4) & 7
    if code < 4:
        return "LZ4 frame block max size code %d invalid" % code
    block_max = 1 << (2 * code + 8)
    block_checksum = bool(flg & 0x10)
    pos = 6
    if flg & 0x08:
        if n < pos + 8 + 1:
            return "LZ4 frame header truncated"
        content_size = struct.unpack_from("<Q", buf, pos)[0]
        if content_size != uncompressed_length:
            return ("LZ4 frame content size %d != header uncompressed_length %d"
                    % (content_size, uncompressed_length))
        pos += 8
    pos += 1  # header checksum byte (lz4 verifies it)
    while True:
        if pos + 4 > n:
            return "LZ4 frame truncated (no end mark within compressed_length)"
        bsize = struct.unpack_from("<I", buf, pos)[0]
        pos += 4
        if bsize == 0:
            break
        size = bsize & 0x7FFFFFFF
        if size > block_max:
            return "LZ4 block of %d bytes exceeds the frame's block max %d" % (size, block_max)
        pos += size + (4 if block_checksum else 0)
    if flg & 0x04:
        pos += 4
    if pos != n:
        return ("LZ4 frame is %d bytes but compressed_length is %d" % (pos, n))
    return None


# --------------------------------------------------------------------------- segments

class Walk(object):
    def __init__(self, expect):
        self.seq = 0            # last seq verified
        self.chain = ZERO_HASH  # chain hash at self.seq
        self.batches = 0
        self.segments = 0
        self.expect = expect    # (seq, hash) or None
        self.expect_matched = expect is not None and expect[0] == 0 and expect[1] == ZERO_HASH
        self.losses = []        # ledger.loss_recorded events met (dicts), in seq order


LOSS_MARK = b'"ledger.loss_recorded"'


def printable(text):
    """Recorded text (a repair's reason) shown so that it cannot drive the terminal."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def note_losses(data, walk):
    """The `ledger.loss_recorded` events of a verified batch: `syncledger repair --accept-loss`
    appends one when the log ended before a head it had acknowledged. The chain proves what was
    kept; this says what was not (a bundle of a repaired store said only "bundle OK")."""
    if LOSS_MARK not in data:
        return
    for line in data.split(b"\n"):
        if LOSS_MARK not in line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict) or ev.get("type") != "ledger.loss_recorded":
            continue
        d = ev.get("data") if isinstance(ev.get("data"), dict) else {}
        walk.losses.append({"seq": ev.get("seq"), "last_known_head": d.get("last_known_head"),
                            "log_ended_at": d.get("log_ended_at"), "reason": d.get("reason"),
                            "cut": d.get("cut"), "cut_held": held_records(d.get("cut_held")),
                            "held_losses": held_losses(d.get("cut_held"))})


def held_events(held):
    """The events a cut's loss record keeps (`cut_held`: envelope lines), decoded; None for a
    line that does not decode as one."""
    out = []
    for line in held if isinstance(held, list) else []:
        try:
            ev = json.loads(line) if isinstance(line, str) else None
        except ValueError:
            ev = None
        out.append(ev if isinstance(ev, dict) else None)
    return out


def held_records(held):
    """The ledger's records a cut took out of the log: "TYPE at seq N" each, or [] when none."""
    return ["%s at seq %s" % (ev.get("type"), ev.get("seq")) if ev is not None else "a record that does not decode"
            for ev in held_events(held)]


def held_losses(held):
    """The loss records a cut took out of the log, as its loss record keeps them (`cut_held`)."""
    return [{"seq": ev.get("seq"), "last_known_head": ev["data"].get("last_known_head"),
             "log_ended_at": ev["data"].get("log_ended_at"), "reason": ev["data"].get("reason")}
            for ev in held_events(held)
            if ev is not None and ev.get("type") == "ledger.loss_recorded" and isinstance(ev.get("data"), dict)]


def lost_by_a_recorded_loss(walk, seq, head=None):
    """Words naming the recorded loss that gave up seq (after where the log ended, at most the
    head it had acknowledged), or "" when none did: an expected head the log no longer holds
    read as a truncated or replaced bundle (hostile test; `syncledger verify` names it). A loss
    whose record a later cut took is found in that cut's record (`cut_held`); the loss naming the
    expected head itself comes first."""
    found = [(loss, None) for loss in walk.losses]
    found += [(inner, loss.get("seq")) for loss in walk.losses for inner in loss.get("held_losses") or []]
    named = [f for f in found if head is not None and f[0].get("last_known_head") == head]
    for loss, kept_at in named + found:
        ended = parse_head(loss.get("log_ended_at"))
        known = parse_head(loss.get("last_known_head"))
        if ended is not None and seq > ended[0] and (known is None or seq <= known[0]):
            return ("; the log records losing it: at seq %s a loss was accepted of the events after %s up to %s%s "
                    "(reason: %s)" % (printable(loss.get("seq")), printable(loss.get("log_ended_at")),
                                      printable(loss.get("last_known_head")),
                                      " (a later cut took that record; the loss recorded at seq %s keeps it)"
                                      % printable(kept_at) if kept_at is not None else "",
                                      printable(loss.get("reason"))))
    return ""


def scan_segment(path, name, walk, check_crc):
    """Pass 1: headers, CRCs, LZ4 frame structure. Returns the list of batch records."""
    records = []
    seq = walk.seq
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise VerifyError("empty segment file", name, 0, seq + 1)
        offset = 0
        while offset < size:
            expected_first = seq + 1

            def fail(what, off=None):
                raise VerifyError(what, name, offset if off is None else off, expected_first)

            raw = f.read(BATCH_HEADER_BYTES)
            if len(raw) < BATCH_HEADER_BYTES:
                fail("truncated batch header (%d of %d bytes)" % (len(raw), BATCH_HEADER_BYTES))
            (magic, hsize, slgb, version, flags, first_seq, count, clen, ulen, chain,
             pcrc, hcrc) = _HDR.unpack(raw)
            if magic != SKIPPABLE_MAGIC:
                fail("bad skippable-frame magic 0x%08X (expected 0x%08X)" % (magic, SKIPPABLE_MAGIC))
            if hsize != HEADER_SIZE:
                fail("bad header size %d (expected %d)" % (hsize, HEADER_SIZE))
            if slgb != b"SLGB":
                fail("bad batch header magic %r (expected b'SLGB')" % slgb)
            actual = crc32c(raw[8:76])
            if actual != hcrc:
                fail("header checksum mismatch (stored 0x%08X, computed 0x%08X)" % (hcrc, actual))
            if version != FORMAT_VERSION:
                fail("unsupported format_version %d" % version)
            if flags != 0:
                fail("reserved flags 0x%04X not zero" % flags)
            if first_seq != expected_first:
                fail("first_seq %d does not continue the previous seq %d (sequence gap/overlap)"
                     % (first_seq, seq))
            if offset == 0:
                name_seq = int(os.path.basename(name)[:20])
                if name_seq != first_seq:
                    fail("segment file name says seq %d but its first batch starts at %d"
                         % (name_seq, first_seq))
            if count < 1 or count > MAX_COUNT:
                fail("count %d out of range 1...%d" % (count, MAX_COUNT))
            if first_seq + count - 1 > U64_MAX:
                fail("seq overflow")
            if ulen > MAX_UNCOMPRESSED:
                fail("uncompressed_length %d exceeds %d" % (ulen, MAX_UNCOMPRESSED))
            if ulen < count:
                fail("uncompressed_length %d too small for %d lines" % (ulen, count))
            remaining = size - offset - BATCH_HEADER_BYTES
            if clen > remaining:
                fail("truncated payload: compressed_length %d but only %d bytes left in file"
                     % (clen, remaining))
            payload = f.read(clen)
            if len(payload) != clen:
                fail("file shrank while reading")
            if check_crc:
                actual = crc32c(payload)
                if actual != pcrc:
                    fail("payload checksum mismatch (stored 0x%08X, computed 0x%08X)"
                         % (pcrc, actual))
            problem = check_lz4_frame(payload, ulen)
            if problem:
                fail(problem)
            records.append((offset, first_seq, count, ulen, chain))
            seq = first_seq + count - 1
            offset += BATCH_HEADER_BYTES + clen
    return records


def _stop(proc):
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.stdout.close()
    except OSError:
        pass
    proc.wait()


def decode_segment(path, name, records, walk, lz4):
    """Pass 2: one lz4 process for the segment; split its output per batch; lines and chain."""
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen([lz4, "-d", "-c", path], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=errf)
        except OSError as e:
            raise UsageError("cannot run %s: %s (install it: apt-get install lz4)" % (lz4, e))

        def lz4_said():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            errf.seek(0)
            msg = errf.read(2000).decode("utf-8", "replace").strip().replace("\n", " | ")
            return msg or "(no message)"

        try:
            for offset, first_seq, count, ulen, stored in records:
                data = proc.stdout.read(ulen)
                if len(data) != ulen:
                    raise VerifyError("decompression failed: lz4 produced %d of %d bytes; lz4: %s"
                                      % (len(data), ulen, lz4_said()), name, offset, first_seq)
                if data.count(b"\n") != count or not data.endswith(b"\n"):
                    raise VerifyError("payload has %d newline-terminated lines, header count is %d"
                                      "%s" % (data.count(b"\n"), count,
                                              "" if data.endswith(b"\n") else
                                              " (last line lacks '\\n')"),
                                      name, offset, first_seq)
                chain = hashlib.sha256(
                    walk.chain + struct.pack("<HQIQ", FORMAT_VERSION, first_seq, count, ulen)
                    + hashlib.sha256(data).digest()).digest()
                if chain != stored:
                    raise VerifyError("chain hash mismatch (stored %s, computed %s)"
                                      % (stored.hex(), chain.hex()), name, offset, first_seq)
                last = first_seq + count - 1
                walk.chain = chain
                walk.seq = last
                walk.batches += 1
                note_losses(data, walk)
                if walk.expect is not None and first_seq <= walk.expect[0] <= last:
                    if walk.expect[0] != last:
                        raise VerifyError("--expect-head seq %d is inside this batch (%d...%d); "
                                          "no batch ends there" % (walk.expect[0], first_seq, last),
                                          name, offset, first_seq)
                    if walk.expect[1] != chain:
                        raise VerifyError("--expect-head mismatch at seq %d: expected %s, bundle "
                                          "has %s (history differs from the trusted head)%s"
                                          % (last, walk.expect[1].hex(), chain.hex(),
                                             lost_by_a_recorded_loss(walk, last, format_head(*walk.expect))),
                                          name, offset, first_seq)
                    walk.expect_matched = True
            extra = proc.stdout.read(1)
            if extra:
                raise VerifyError("lz4 output is longer than the sum of uncompressed_length",
                                  name, None, None)
            proc.stdout.close()
            rc = proc.wait()
            if rc != 0:
                raise VerifyError("lz4 exited with status %d: %s" % (rc, lz4_said()), name)
        finally:
            _stop(proc)


def verify_bundle(bundle_dir, expect=None, check_crc=True, lz4=None):
    """Returns a dict {head, events, batches, segments}; raises VerifyError / UsageError."""
    if lz4 is None:
        lz4 = find_lz4()
    manifest = load_manifest(bundle_dir)
    check_files(bundle_dir, manifest)
    walk = Walk(expect)
    ranged = manifest["version"] == RANGE_VERSION
    if ranged:
        # A range: the chain resumes from the hash just before it; the batches after it are
        # carried by their chain inputs (proof), so the computed head proves the range.
        walk.seq = manifest["range_first_seq"] - 1
        walk.chain = bytes.fromhex(manifest["chain_before"])
        if expect is not None and expect[0] < manifest["range_first_seq"]:
            raise UsageError("--expect-head seq %d is before the bundle's range (%d...%d): an anchor "
                             "before a range proves nothing about it; use the head or a later anchor"
                             % (expect[0], manifest["range_first_seq"], manifest["range_last_seq"]))
    for entry in manifest["files"]:
        name = entry["name"]
        path = os.path.join(bundle_dir, *name.split("/"))
        start_seq = walk.seq + 1
        start_batches = walk.batches
        try:
            records = scan_segment(path, name, walk, check_crc)
            decode_segment(path, name, records, walk, lz4)
        except OSError as e:
            raise VerifyError("cannot read: %s" % (e.strerror or e), name)
        walk.segments += 1
        nb = walk.batches - start_batches
        if (start_seq, walk.seq, nb) != (entry["first_seq"], entry["last_seq"], entry["batches"]):
            raise VerifyError("holds seqs %d...%d in %d batches but the manifest says %d...%d in %d"
                              % (start_seq, walk.seq, nb, entry["first_seq"], entry["last_seq"],
                                 entry["batches"]), name)
    proven = 0
    if ranged:
        for p in manifest["proof"]:
            last = p["first_seq"] + p["count"] - 1
            walk.chain = hashlib.sha256(
                walk.chain + struct.pack("<HQIQ", p["version"], p["first_seq"], p["count"],
                                         p["uncompressed_length"])
                + bytes.fromhex(p["payload_sha256"])).digest()
            walk.seq = last
            proven += 1
            if walk.expect is not None and p["first_seq"] <= walk.expect[0] <= last:
                if walk.expect[0] != last:
                    raise VerifyError("--expect-head seq %d is inside batch %d...%d; no batch ends there"
                                      % (walk.expect[0], p["first_seq"], last), "MANIFEST.json")
                if walk.expect[1] != walk.chain:
                    raise VerifyError("--expect-head mismatch at seq %d: expected %s, the range proves "
                                      "%s (history differs from the trusted head)"
                                      % (last, walk.expect[1].hex(), walk.chain.hex()), "MANIFEST.json")
                walk.expect_matched = True
    head = format_head(walk.seq, walk.chain)
    if head != manifest["head"]:
        raise VerifyError("computed head %s != manifest head %s" % (head, manifest["head"]),
                          "MANIFEST.json")
    if expect is not None and not walk.expect_matched:
        if expect[0] > walk.seq:
            lost = lost_by_a_recorded_loss(walk, expect[0], format_head(*expect))
            if lost:
                raise VerifyError("--expect-head seq %d is beyond the bundle's head %s%s"
                                  % (expect[0], head, lost))
            raise VerifyError("--expect-head seq %d is beyond the bundle's head %s (bundle is "
                              "missing events or was truncated)" % (expect[0], head))
        raise VerifyError("--expect-head %s does not match (seq 0 is the empty chain)"
                          % format_head(*expect))
    result = {"head": head, "events": walk.seq, "batches": walk.batches, "segments": walk.segments,
              "losses": walk.losses}
    if ranged:
        result["range"] = [manifest["range_first_seq"], manifest["range_last_seq"]]
        result["proof_batches"] = proven
    return result


def find_lz4():
    path = shutil.which("lz4")
    if not path:
        raise UsageError("the lz4 command was not found on PATH; install it "
                         "(Debian/Ubuntu: apt-get install lz4; macOS: brew install lz4)")
    return path


# --------------------------------------------------------------------------- CLI

def _emit(text, stream=None):
    try:
        print(text, file=stream or sys.stdout)
        (stream or sys.stdout).flush()
    except (BrokenPipeError, OSError):
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="verify_bundle.py",
        description="Verify a SyncLedger export bundle (needs only python3 and the lz4 command).")
    parser.add_argument("bundle_dir", nargs="?", default=None,
                        help="bundle directory (default: the directory of this script)")
    parser.add_argument("--expect-head", metavar="SEQ:HASH",
                        help="trusted head (or earlier anchor) the bundle's chain must contain")
    parser.add_argument("--no-crc", action="store_true",
                        help="skip payload CRC32C (slow in pure Python); header CRCs, SHA-256 "
                             "file hashes and the chain are still checked")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2

    def usage(msg):
        if args.json:
            _emit(json.dumps({"ok": False, "head": None, "events": None, "batches": None,
                              "segments": None, "expect_head": args.expect_head,
                              "error": "usage: " + msg}))
        _emit("verify_bundle.py: error: " + msg, sys.stderr)
        return 2

    bundle_dir = args.bundle_dir
    if bundle_dir is None:
        bundle_dir = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isdir(bundle_dir):
        return usage("%s is not a directory" % bundle_dir)
    expect = None
    if args.expect_head is not None:
        expect = parse_head(args.expect_head.strip().lower())
        if expect is None:
            return usage("--expect-head must be SEQ:HASH (decimal seq, 64 hex digits), got %r"
                         % args.expect_head)
    try:
        result = verify_bundle(bundle_dir, expect=expect, check_crc=not args.no_crc)
    except UsageError as e:
        return usage(str(e))
    except VerifyError as e:
        if args.json:
            _emit(json.dumps({"ok": False, "head": None, "events": None, "batches": None,
                              "segments": None, "expect_head": args.expect_head,
                              "error": e.line()}))
        else:
            _emit("bundle FAILED: " + e.line())
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # safety net: never a traceback
        msg = "bundle: internal error while verifying: %s: %s" % (type(e).__name__, e)
        if args.json:
            _emit(json.dumps({"ok": False, "head": None, "events": None, "batches": None,
                              "segments": None, "expect_head": args.expect_head,
                              "error": msg}))
        else:
            _emit("bundle FAILED: " + msg.replace("\n", " "))
        return 1
    if args.json:
        out = {"ok": True, "error": None, "expect_head": format_head(*expect) if expect else None}
        out.update(result)
        _emit(json.dumps(out, sort_keys=True))
    else:
        if "range" in result:
            _emit("bundle OK: seqs %d...%d in %d batches, %d segments, proven against head %s "
                  "(%d later batches by their hashes)"
                  % (result["range"][0], result["range"][1], result["batches"], result["segments"],
                     result["head"], result["proof_batches"]))
        else:
            _emit("bundle OK: %d events in %d batches, %d segments; head %s"
                  % (result["events"], result["batches"], result["segments"], result["head"]))
        for loss in result["losses"]:
            _emit("warning: seq %s records a loss: the log ended at %s, before the head %s it had "
                  "acknowledged; what came between is not in the log%s (reason: %s)"
                  % (printable(loss["seq"]), printable(loss["log_ended_at"]),
                     printable(loss["last_known_head"]),
                     " (%s)" % printable(loss["cut"]) if loss.get("cut") is not None else "",
                     printable(loss["reason"])))
            if loss.get("cut_held"):
                _emit("  the bytes it cut held the ledger's own records it keeps as cut_held: %s"
                      % printable(", ".join(loss["cut_held"])))
        if expect is not None:
            _emit("matches the expected head %s" % format_head(*expect))
        else:
            _emit("note: this proves self-consistency only; pass --expect-head SEQ:HASH from a "
                  "trusted source to detect tampering", sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
