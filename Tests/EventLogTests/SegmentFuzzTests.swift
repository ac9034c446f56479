import CChecksum
import Foundation
import TestSupport
import Testing
@testable import EventLog

/// Seeded fuzzing of everything that reads bytes from disk: segments, batch headers, index
/// files. Properties: only `LogError`s are thrown, nothing crashes or hangs, no event that was
/// not written is ever returned, a writer never opens on top of a log that verify rejects, and
/// no length field is believed beyond what the bytes can hold.
@Suite("Fuzzing the segment reader and the index", .timeLimit(.minutes(1)))
struct SegmentFuzzTests {
    /// A small valid log: a few segments, varied batch sizes. Returns its payloads in seq order.
    static func makeLog(_ dir: String, segmentBytes: Int = 1 << 20, rng: inout SeededRNG) throws -> [[UInt8]] {
        let writer = try EventLogWriter.open(directory: dir, options: LogOptions(segmentBytes: segmentBytes, fsync: false))
        var all: [[UInt8]] = []
        for b in 0..<10 {
            let size = Int.random(in: 1...25, using: &rng)
            let batch = (0..<size).map { event(b * 100 + $0, pad: Int.random(in: 0...120, using: &rng)) }
            try writer.append(batch)
            all += batch
        }
        writer.close()
        return all
    }

    /// Rewrites the header CRC of the batch header at `offset` (so the fuzzer reaches the checks behind it).
    static func resealHeader(_ bytes: inout [UInt8], at offset: Int) {
        guard offset + 80 <= bytes.count else { return }
        bytes.withUnsafeMutableBytes { p in
            let crc = syncledger_crc32c(0, p.baseAddress! + offset + 8, 68)
            p.storeBytes(of: crc.littleEndian, toByteOffset: offset + 76, as: UInt32.self)
        }
    }

    static func put<T: FixedWidthInteger>(_ value: T, _ bytes: inout [UInt8], at offset: Int) {
        guard offset + MemoryLayout<T>.size <= bytes.count else { return }
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }

    /// One mutation of a valid segment; returns its name for the log.
    static func mutate(_ original: [UInt8], batchOffsets: [Int], rng: inout SeededRNG) -> (String, [UInt8]) {
        var bytes = original
        let kind = Int.random(in: 0..<9, using: &rng)
        let at = { (rng: inout SeededRNG) in Int.random(in: 0..<max(1, bytes.count), using: &rng) }
        let batch = batchOffsets.randomElement(using: &rng) ?? 0
        switch kind {
        case 0:  // bit flips anywhere
            for _ in 0..<Int.random(in: 1...8, using: &rng) where !bytes.isEmpty {
                bytes[at(&rng)] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
            }
            return ("bit flips", bytes)
        case 1:  // truncation
            return ("truncation", Array(bytes.prefix(at(&rng))))
        case 2:  // splice: a range copied over another place
            let from = at(&rng), to = at(&rng)
            let length = min(Int.random(in: 1...200, using: &rng), bytes.count - max(from, to))
            if length > 0 { bytes.replaceSubrange(to..<(to + length), with: bytes[from..<(from + length)]) }
            return ("splice", bytes)
        case 3:  // absurd length or count fields, header CRC recomputed so they are believed-or-rejected on merit
            let field = Int.random(in: 0..<4, using: &rng)
            let huge: [UInt64] = [0, 1, 7, 8, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 256 << 20, (256 << 20) + 1, .max,
                                  UInt64.random(in: 0...UInt64.max, using: &rng)]
            let value = huge.randomElement(using: &rng)!
            switch field {
            case 0: put(UInt32(truncatingIfNeeded: value), &bytes, at: batch + 24)  // count
            case 1: put(UInt32(truncatingIfNeeded: value), &bytes, at: batch + 28)  // compressed length
            case 2: put(value, &bytes, at: batch + 32)  // uncompressed length
            default: put(value, &bytes, at: batch + 16)  // first seq
            }
            if Bool.random(using: &rng) { resealHeader(&bytes, at: batch) }
            return ("length field", bytes)
        case 4:  // random bytes inside a payload, header and payload CRC recomputed: reaches LZ4 and the chain
            let start = batch + 80
            guard start < bytes.count else { return ("payload", bytes) }
            let clen = Int(UInt32(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: batch + 28, as: UInt32.self) }))
            let end = min(bytes.count, start + clen)
            for _ in 0..<Int.random(in: 1...4, using: &rng) where end > start {
                bytes[Int.random(in: start..<end, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            let crc = bytes.withUnsafeBytes { syncledger_crc32c(0, $0.baseAddress! + start, end - start) }
            put(crc, &bytes, at: batch + 72)
            resealHeader(&bytes, at: batch)
            return ("payload+crc", bytes)
        case 5:  // a zero run
            let from = at(&rng)
            let length = min(Int.random(in: 1...300, using: &rng), bytes.count - from)
            if length > 0 { bytes.replaceSubrange(from..<(from + length), with: repeatElement(0, count: length)) }
            return ("zeros", bytes)
        case 6:  // a whole batch duplicated or dropped (seq gap/overlap)
            guard batchOffsets.count >= 2 else { return ("batch", bytes) }
            let i = Int.random(in: 0..<(batchOffsets.count - 1), using: &rng)
            let range = batchOffsets[i]..<batchOffsets[i + 1]
            if Bool.random(using: &rng) { bytes.insert(contentsOf: bytes[range], at: range.upperBound) } else { bytes.removeSubrange(range) }
            return ("batch dup/drop", bytes)
        case 7:  // pure random bytes
            return ("random", (0..<Int.random(in: 0...600, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        default:  // a valid-looking header followed by garbage
            var header = Array(bytes.prefix(80))
            header += (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            return ("header+garbage", header)
        }
    }

    /// Reads everything through a fresh reader. Only LogError may be thrown, and every event returned
    /// must be the one written with that seq.
    static func exercise(_ log: String, original: [[UInt8]], rng: inout SeededRNG) throws -> (verifyOK: Bool, openOK: Bool) {
        let reader = try EventLogReader(directory: log)
        let report = reader.verify()
        if report.ok {
            #expect(report.head.seq <= UInt64(original.count))
        } else {
            #expect(report.error != nil)
        }
        do {
            let cursor = try reader.cursor(from: 1)
            var expected: UInt64 = 1
            while let record = try cursor.next() {
                #expect(record.seq == expected)
                guard record.seq >= 1, record.seq <= UInt64(original.count),
                      Array(record.payload) == original[Int(record.seq) - 1] else {
                    Issue.record("the reader returned an event that was never written at seq \(record.seq)")
                    break
                }
                expected += 1
            }
            if report.ok { #expect(expected - 1 == report.head.seq, "verify ok but the cursor ended elsewhere") }
        } catch is LogError {
            #expect(!report.ok, "verify ok but the cursor threw")
        }
        do {
            _ = try reader.head()
            _ = try reader.batch(containing: UInt64.random(in: 1...UInt64(original.count + 5), using: &rng))
            let c = try EventLogReader(directory: log).cursor(from: UInt64.random(in: 1...UInt64(original.count + 5), using: &rng))
            _ = try c.next()
        } catch is LogError {}
        var openOK = false
        do {
            let writer = try EventLogWriter.open(directory: log, options: LogOptions(fsync: false))
            writer.close()
            openOK = true
            #expect(report.ok, "the writer opened on a log that verify rejects: \(report.error?.message ?? "")")
            let after = try EventLogReader(directory: log).verify()
            #expect(after.ok && after.warnings.allSatisfy { !$0.contains("torn") }, "open did not leave a clean log")
        } catch is LogError {}
        return (report.ok, openOK)
    }

    @Test("mutated and random segments: typed errors only, never a wrong event, no crash or hang")
    func mutatedSegments() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        var rng = SeededRNG(state: seed)
        let base = TempDir()
        let original = try Self.makeLog(base.log, rng: &rng)
        let name = base.segments()[0]
        let valid = fileBytes(base.segmentPath(name))
        let reader = try EventLogReader(directory: base.log)
        var offsets: [Int] = []
        var seq: UInt64 = 1
        while let info = try reader.batch(containing: seq) {
            offsets.append(Int(info.offset))
            seq = info.lastSeq + 1
        }
        offsets.append(valid.count)
        var tried = 0, accepted = 0, opened = 0
        var kinds: [String: Int] = [:]
        let started = Date()
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.log, withIntermediateDirectories: true)
        while tried < 1500 && Date().timeIntervalSince(started) < 8 {
            let (kind, bytes) = Self.mutate(valid, batchOffsets: Array(offsets.dropLast()), rng: &rng)
            kinds[kind, default: 0] += 1
            for file in (try? FileManager.default.contentsOfDirectory(atPath: dir.log)) ?? [] where file != "LOCK" {
                try? FileManager.default.removeItem(atPath: dir.log + "/" + file)
            }
            writeBytes(bytes, dir.log + "/" + name)
            let t0 = Date()
            let (ok, open) = try Self.exercise(dir.log, original: original, rng: &rng)
            #expect(Date().timeIntervalSince(t0) < 5, "input \(tried) (\(kind)) took too long")
            accepted += ok ? 1 : 0
            opened += open ? 1 : 0
            tried += 1
        }
        print("segment fuzz seed \(seed): \(tried) inputs, \(accepted) verified ok (truncations to a batch boundary, torn tails), \(opened) opened for write; \(kinds.sorted { $0.key < $1.key })")
        #expect(tried >= 200)
    }

    @Test("batch headers with random fields: accepted only when every length is within bounds")
    func randomHeaders() {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        var rng = SeededRNG(state: seed)
        var accepted = 0
        let tried = 200_000
        var bytes = [UInt8](repeating: 0, count: 80)
        for i in 0..<tried {
            for j in 0..<80 { bytes[j] = UInt8.random(in: 0...255, using: &rng) }
            if i % 2 == 0 {  // valid magics and size, then a resealed CRC: the field checks decide
                Self.put(BatchHeader.skippableMagic, &bytes, at: 0)
                Self.put(UInt32(72), &bytes, at: 4)
                Self.put(BatchHeader.magic, &bytes, at: 8)
                Self.put(UInt16(i % 4 == 0 ? 1 : bytes[12] % 3), &bytes, at: 12)
                if i % 8 == 0 { Self.put(UInt16(0), &bytes, at: 14) }
                if i % 16 == 0 { Self.put(UInt32.random(in: 1...1000, using: &rng), &bytes, at: 24) }
                if i % 32 == 0 { Self.put(UInt64.random(in: 0...100_000, using: &rng), &bytes, at: 32) }
                Self.resealHeader(&bytes, at: 0)
            }
            if case .success(let h) = bytes.withUnsafeBytes({ BatchHeader.decode($0.baseAddress!) }) {
                accepted += 1
                #expect(h.count >= 1 && h.count <= BatchHeader.maxCount)
                #expect(h.uncompressedLength <= BatchHeader.maxUncompressed)
                #expect(h.uncompressedLength <= UInt64(h.compressedLength) * BatchHeader.maxExpansion)
                #expect(h.compressedLength >= 8 && h.compressedLength <= BatchHeader.maxCompressed)
            }
        }
        print("header fuzz seed \(seed): \(tried) headers, \(accepted) accepted (all within bounds)")
    }

    @Test("a highly compressible batch still passes the expansion bound")
    func compressibleBatchWithinExpansionBound() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 8 << 20)
        let info = try writer.append([big, [UInt8](repeating: UInt8(ascii: "y"), count: 3)])
        writer.close()
        #expect(info.uncompressedLength <= UInt64(info.compressedLength) * BatchHeader.maxExpansion)
        let report = try EventLogReader(directory: dir.log).verify()
        #expect(report.ok, "\(report.error?.message ?? "")")
        print("8 MiB of one byte compresses to \(info.compressedLength) bytes (ratio \(info.uncompressedLength / UInt64(info.compressedLength)))")
    }

    @Test("mutated index files: never a wrong event; a bad index is rebuilt, not reported as a damaged log")
    func mutatedIndexFiles() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        var rng = SeededRNG(state: seed)
        let base = TempDir()
        let original = try Self.makeLog(base.log, segmentBytes: 1500, rng: &rng)
        let indexDir = base.log + "/index"
        let indexNames = try FileManager.default.contentsOfDirectory(atPath: indexDir).filter { $0.hasSuffix(".idx") }.sorted()
        // (Sealed segments have indexes: 1,500-byte segments roll after a few batches.)
        try #require(!indexNames.isEmpty, "seed \(seed): no index file")
        let validIndexes = indexNames.map { fileBytes(indexDir + "/" + $0) }
        var tried = 0, falseAlarms = 0
        var falseAlarmKinds: Set<String> = []
        let started = Date()
        while tried < 800 && Date().timeIntervalSince(started) < 6 {
            let which = Int.random(in: 0..<indexNames.count, using: &rng)
            var bytes = validIndexes[which]
            let kind = Int.random(in: 0..<5, using: &rng)
            switch kind {
            case 0: for _ in 0..<Int.random(in: 1...6, using: &rng) { bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng) }
            case 1: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            case 2: bytes = (0..<Int.random(in: 0...400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            default:  // fields changed and the CRC recomputed: only the cross-checks against the segment can catch it
                let field = [8, 24, 32, 72, 80, 88, 96].randomElement(using: &rng)!
                if field == 72 {
                    Self.put(UInt32.random(in: 0...UInt32.max, using: &rng), &bytes, at: field)
                } else if field == 96, bytes.count >= 80 + 48 + 4 {
                    bytes[96 + Int.random(in: 0..<32, using: &rng)] ^= 0xFF  // the entry's previous chain hash
                } else {
                    Self.put(UInt64.random(in: 0...10_000, using: &rng), &bytes, at: field)
                }
                bytes.withUnsafeMutableBytes { p in
                    let crc = syncledger_crc32c(0, p.baseAddress!, p.count - 4)
                    p.storeBytes(of: crc.littleEndian, toByteOffset: p.count - 4, as: UInt32.self)
                }
            }
            _ = IndexFile.decode(bytes, segment: indexNames[which], firstSeq: SegmentName.parse(indexNames[which].replacingOccurrences(of: ".idx", with: ".seg")) ?? 1)
            writeBytes(bytes, indexDir + "/" + indexNames[which])
            do {
                let reader = try EventLogReader(directory: base.log)
                for _ in 0..<3 {
                    let seq = UInt64.random(in: 1...UInt64(original.count), using: &rng)
                    let cursor = try reader.cursor(from: seq)
                    let record = try #require(try cursor.next())
                    #expect(record.seq == seq && Array(record.payload) == original[Int(seq) - 1])
                    let info = try #require(try reader.batch(containing: seq))
                    #expect(info.firstSeq <= seq && seq <= info.lastSeq)
                }
            } catch let error as LogError {
                falseAlarms += 1
                falseAlarmKinds.insert("\(error.code)")
            }
            writeBytes(validIndexes[which], indexDir + "/" + indexNames[which])
            tried += 1
        }
        let report = try EventLogReader(directory: base.log).verify()
        #expect(report.ok)
        print("index fuzz seed \(seed): \(tried) inputs, \(falseAlarms) reads failed on a bad (derived) index: \(falseAlarmKinds)")
        #expect(falseAlarms == 0, "a damaged index file made reads fail instead of being rebuilt (seed \(seed))")
    }
}
