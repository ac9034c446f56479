import Crypto
import Domain
import EventLog
import Foundation
import JSONCore

/// An auditor's bundle: the segments up to the head (the active one cut after its last
/// complete batch), `MANIFEST.json` (head, each file's SHA-256 and seq range) and a
/// standalone verifier (`verify_bundle.py`: Python 3 standard library plus the `lz4` command).
/// Nothing else: every byte of the bundle is covered by the manifest or is the verifier itself
/// (which an auditor compares with a trusted copy).
public enum AuditBundle {
    public struct FileEntry: Sendable {
        public var name: String
        public var sha256: String
        public var bytes: UInt64
        public var firstSeq: UInt64
        public var lastSeq: UInt64
        public var batches: UInt64
    }

    /// A batch after a range bundle's range, by its chain inputs (version 2).
    public struct ProofEntry: Sendable {
        public var firstSeq: UInt64
        public var count: UInt32
        public var uncompressedLength: UInt64
        public var version: UInt16
        public var payloadSHA256: String
    }

    /// A range bundle's range (version 2): its seqs and the chain hash just before it.
    public struct Range: Sendable {
        public var firstSeq: UInt64
        public var lastSeq: UInt64
        public var chainBefore: String
        public var proof: [ProofEntry]
    }

    public struct Manifest: Sendable {
        public var createdAt: String
        public var head: String
        public var events: UInt64
        public var files: [FileEntry]
        /// Set for `export --bundle --from-seq/--to-seq` (manifest version 2).
        public var range: Range?

        /// Exactly Python's `json.dumps(manifest, indent=2, sort_keys=True) + "\n"`: the
        /// verifier refuses any other spelling, so no byte of the manifest can change unseen.
        public var canonicalText: String {
            let body = text(selfHash: nil)
            return text(selfHash: sha256Hex(Array(body.utf8)))
        }

        /// Without `selfHash`, the text the `manifest_sha256` field is the hash of.
        func text(selfHash: String?) -> String {
            var s = "{\n"
            if let range { s += "  \"chain_before\": \(jsonQuoted(range.chainBefore)),\n" }
            s += "  \"created_at\": \(jsonQuoted(createdAt)),\n  \"events\": \(events),\n"
            if files.isEmpty {
                s += "  \"files\": [],\n"
            } else {
                s += "  \"files\": [\n"
                s += files.map { f in
                    "    {\n      \"batches\": \(f.batches),\n      \"bytes\": \(f.bytes),\n      \"first_seq\": \(f.firstSeq),\n"
                        + "      \"last_seq\": \(f.lastSeq),\n      \"name\": \(jsonQuoted(f.name)),\n      \"sha256\": \(jsonQuoted(f.sha256))\n    }"
                }.joined(separator: ",\n")
                s += "\n  ],\n"
            }
            s += "  \"format\": \"syncledger-bundle\",\n  \"head\": \(jsonQuoted(head)),\n"
            if let selfHash { s += "  \"manifest_sha256\": \(jsonQuoted(selfHash)),\n" }
            if let range {
                if range.proof.isEmpty {
                    s += "  \"proof\": [],\n"
                } else {
                    s += "  \"proof\": [\n"
                    s += range.proof.map { p in
                        "    {\n      \"count\": \(p.count),\n      \"first_seq\": \(p.firstSeq),\n"
                            + "      \"payload_sha256\": \(jsonQuoted(p.payloadSHA256)),\n"
                            + "      \"uncompressed_length\": \(p.uncompressedLength),\n      \"version\": \(p.version)\n    }"
                    }.joined(separator: ",\n")
                    s += "\n  ],\n"
                }
                s += "  \"range_first_seq\": \(range.firstSeq),\n  \"range_last_seq\": \(range.lastSeq),\n"
            }
            s += "  \"version\": \(range == nil ? 1 : 2)\n}\n"
            return s
        }
    }

    /// Writes the bundle into `directory`, which must not exist or be empty. Reads the log
    /// (checking every CRC and the chain on the way) and copies each segment's verified bytes.
    /// With `fromSeq`/`toSeq` the bundle holds only the batches covering that range (whole
    /// batches: the range widens to their edges), the chain hash before it, and the chain inputs
    /// of every later batch, so the verifier recomputes the head from the range (version 2).
    @discardableResult
    public static func write(store: Store, to directory: String, fromSeq: UInt64 = 1, toSeq: UInt64? = nil) throws -> Manifest {
        let fm = FileManager.default
        let existed = fm.fileExists(atPath: directory)
        if existed, !((try? fm.contentsOfDirectory(atPath: directory)) ?? []).isEmpty {
            throw LedgerError("\(directory) exists and is not empty; give a new directory for the bundle")
        }
        do {
            if !existed {
                try fm.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
        } catch {
            throw LedgerError("cannot create \(directory): \(reason(error))")
        }
        do {
            // `segments/` is made here, never taken as found, and the copies are made inside it
            // through its descriptor: in a directory others can write, a `segments` link planted
            // (or put in its place) before the copies led them into the store's own log, where
            // the truncating open cut a segment to nothing (hostile test, review).
            let bundle = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard bundle >= 0 else { throw LedgerError("cannot open \(directory): \(String(cString: strerror(errno)))") }
            defer { close(bundle) }
            guard mkdirat(bundle, "segments", 0o700) == 0 else {
                throw LedgerError("cannot create \(directory)/segments: \(String(cString: strerror(errno)))")
            }
            let segments = openat(bundle, "segments", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard segments >= 0 else { throw LedgerError("cannot open \(directory)/segments: \(String(cString: strerror(errno)))") }
            defer { close(segments) }
            return try writeInto(store: store, directory: directory, segments: segments, fromSeq: fromSeq, toSeq: toSeq)
        } catch {
            // A bundle that failed (damage in the log, a full disk) leaves nothing behind, so
            // that the same command can be run again (hostile test: its partial directory was
            // then refused as not empty).
            if existed {
                for item in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] { try? fm.removeItem(atPath: directory + "/" + item) }
            } else {
                try? fm.removeItem(atPath: directory)
            }
            throw error
        }
    }

    /// `write` into its new, empty directory (with `segments/` made).
    private static func writeInto(store: Store, directory: String, segments: Int32, fromSeq: UInt64, toSeq: UInt64?) throws -> Manifest {
        let reader = try EventLogReader(directory: store.logPath)
        let head = try reader.head()
        if fromSeq > 1 || (toSeq.map { $0 < head.seq } ?? false) {
            return try writeRange(reader: reader, logPath: store.logPath, head: head, to: directory, segments: segments, fromSeq: fromSeq,
                                  toSeq: min(toSeq ?? head.seq, head.seq))
        }
        var spans: [(segment: String, first: UInt64, last: UInt64, batches: UInt64, end: UInt64)] = []
        if head.seq > 0 {
            let cursor = try reader.cursor(from: 1, through: head.seq)
            try cursor.forEachBatchCheckingChainAside { info, _ in
                if let i = spans.indices.last, spans[i].segment == info.segment {
                    spans[i].last = info.lastSeq
                    spans[i].batches += 1
                    spans[i].end = info.endOffset
                } else {
                    spans.append((info.segment, info.firstSeq, info.lastSeq, 1, info.endOffset))
                }
                return info.lastSeq < head.seq
            }
        }
        var files: [FileEntry] = []
        for span in spans {
            let name = "segments/" + span.segment
            let digest = try copyPrefix(from: store.logPath + "/" + span.segment, into: segments, named: span.segment,
                                        shown: directory + "/" + name, length: span.end)
            files.append(FileEntry(name: name, sha256: digest, bytes: span.end, firstSeq: span.first,
                                   lastSeq: span.last, batches: span.batches))
        }
        let manifest = Manifest(createdAt: ISOTime.format(millis: ISOTime.nowMillis()), head: head.description,
                                events: head.seq, files: files)
        try writeFileAtomically(directory + "/MANIFEST.json", Array(manifest.canonicalText.utf8))
        try writeFileAtomically(directory + "/verify_bundle.py", Array(VerifierScript.source.utf8), mode: 0o700)
        return manifest
    }

    static func writeRange(reader: EventLogReader, logPath: String, head: LogHead, to directory: String, segments: Int32, fromSeq: UInt64,
                           toSeq: UInt64) throws -> Manifest {
        guard fromSeq <= head.seq, fromSeq <= toSeq else {
            throw LedgerError("the range \(fromSeq)...\(toSeq) is not in the log (it ends at seq \(head.seq))")
        }
        var chainBefore = [UInt8](repeating: 0, count: 32)
        var spans: [(segment: String, first: UInt64, last: UInt64, batches: UInt64, start: UInt64, end: UInt64)] = []
        var proof: [ProofEntry] = []
        let cursor = try reader.cursor(from: 1, through: head.seq)
        try cursor.forEachBatchCheckingChainAside { info, content in
            if info.lastSeq < fromSeq {
                chainBefore = info.chainHash
            } else if info.firstSeq <= toSeq {
                if let i = spans.indices.last, spans[i].segment == info.segment {
                    spans[i].last = info.lastSeq
                    spans[i].batches += 1
                    spans[i].end = info.endOffset
                } else {
                    spans.append((info.segment, info.firstSeq, info.lastSeq, 1, info.offset, info.endOffset))
                }
            } else {
                proof.append(ProofEntry(firstSeq: info.firstSeq, count: info.count, uncompressedLength: info.uncompressedLength,
                                        version: info.version, payloadSHA256: hexString(SHA256.hash(data: content))))
            }
            return info.lastSeq < head.seq
        }
        var files: [FileEntry] = []
        for span in spans {
            let file = String(format: "%020llu.seg", span.first)
            let name = "segments/" + file
            let digest = try copyPrefix(from: logPath + "/" + span.segment, into: segments, named: file, shown: directory + "/" + name,
                                        length: span.end - span.start, offset: span.start)
            files.append(FileEntry(name: name, sha256: digest, bytes: span.end - span.start, firstSeq: span.first,
                                   lastSeq: span.last, batches: span.batches))
        }
        guard let first = spans.first, let last = spans.last else { throw LedgerError("the range \(fromSeq)...\(toSeq) holds no batch") }
        let manifest = Manifest(createdAt: ISOTime.format(millis: ISOTime.nowMillis()), head: head.description,
                                events: head.seq, files: files,
                                range: Range(firstSeq: first.first, lastSeq: last.last, chainBefore: hexString(chainBefore), proof: proof))
        try writeFileAtomically(directory + "/MANIFEST.json", Array(manifest.canonicalText.utf8))
        try writeFileAtomically(directory + "/verify_bundle.py", Array(VerifierScript.source.utf8), mode: 0o700)
        return manifest
    }

    /// Copies `length` bytes of a file from `offset`, returning their SHA-256 (hex).
    static func copyPrefix(from source: String, into segments: Int32, named file: String, shown target: String, length: UInt64,
                           offset: UInt64 = 0) throws -> String {
        // Opened without blocking and checked to be a regular file: a FIFO or device put in a
        // segment's place must fail in one line, not hang the export or read without end.
        let fd = open(source, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw LedgerError("cannot read \(source): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw LedgerError("cannot read \(source): not a regular file")
        }
        let input = FileHandle(fileDescriptor: fd, closeOnDealloc: false)
        defer { try? input.close() }
        if offset > 0 { try input.seek(toOffset: offset) }
        // A new file, never one found there nor a link's target (hostile test: a link planted in
        // a bundle directory others could write led this copy onto the store's segment, cut to
        // nothing by the truncating open).
        let out = openat(segments, file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw LedgerError("cannot create \(target): \(String(cString: strerror(errno)))") }
        let output = FileHandle(fileDescriptor: out, closeOnDealloc: true)
        defer { try? output.close() }
        var hasher = SHA256()
        var left = length
        while left > 0 {
            let chunk = try input.read(upToCount: Int(min(left, 1 << 20))) ?? Data()
            guard !chunk.isEmpty else { throw LedgerError("\(source) ended before byte \(length)") }
            hasher.update(data: chunk)
            try output.write(contentsOf: chunk)
            left -= UInt64(chunk.count)
        }
        try output.synchronize()
        return hexString(hasher.finalize())
    }

}
