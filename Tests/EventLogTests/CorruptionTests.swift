import Foundation
import TestSupport
import Testing
@testable import EventLog

@Suite struct CorruptionTests {
    /// Flips a random byte in the skippable frame, the header and the payload of a batch in a
    /// sealed segment: verify, a cursor and open for write (for a payload byte: without a trusted
    /// index file) all refuse, naming where.
    @Test(arguments: ["frame", "header", "payload"])
    func flippedByteInSealedSegment(region: String) throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        print("seed", seed)
        var rng = SeededRNG(state: seed)
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 2000, fsync: false))
        try appendBatches(writer, batches: 12, size: 10)
        writer.close()
        let segments = dir.segments()
        #expect(segments.count >= 2)
        let sealed = segments[0]
        // Pick a batch of the sealed segment.
        let reader = try EventLogReader(directory: dir.log)
        var batches: [BatchInfo] = []
        var seq: UInt64 = 1
        while let info = try reader.batch(containing: seq), info.segment == sealed {
            batches.append(info)
            seq = info.lastSeq + 1
        }
        let batch = batches[Int.random(in: 0..<batches.count, using: &rng)]
        let range: Range<Int> = switch region {
        case "frame": 0..<8
        case "header": 8..<80
        default: 80..<(80 + Int(batch.compressedLength))
        }
        let at = Int(batch.offset) + Int.random(in: range, using: &rng)
        var bytes = fileBytes(dir.segmentPath(sealed))
        bytes[at] ^= UInt8.random(in: 1...255, using: &rng)
        writeBytes(bytes, dir.segmentPath(sealed))
        try? FileManager.default.removeItem(atPath: dir.log + "/index")

        let report = try EventLogReader(directory: dir.log).verify()
        #expect(!report.ok)
        let error = try #require(report.error)
        #expect(error.segment == sealed && error.offset == batch.offset && error.seq == batch.firstSeq,
                "\(error.message) (flipped byte \(at), batch at \(batch.offset))")
        #expect(error.message.contains(sealed) && error.message.contains("offset \(batch.offset)"))
        #expect(error.isCorruption)

        #expect(throws: LogError.self) { _ = try readAll(dir.log) }
        // Reading rewrote the sealed segment's index from its (intact) headers; `open` trusts a
        // validated index instead of reading sealed payloads (the scrub, `verify`, reads them),
        // so only without the index file does it meet a flipped payload byte.
        if region == "payload" { try? FileManager.default.removeItem(atPath: dir.log + "/index") }
        #expect(throws: LogError.self) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
        #expect(fileBytes(dir.segmentPath(sealed)) == bytes, "nothing was truncated")
    }

    /// A complete last batch with a bad CRC is corruption, not a torn tail.
    @Test func corruptCompleteLastBatchIsNotTruncated() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        try appendBatches(writer, batches: 2, size: 5)
        let last = try writer.append((0..<20).map { event($0) })
        writer.close()
        var bytes = fileBytes(dir.segmentPath(last.segment))
        bytes[Int(last.offset) + 100] ^= 0x40
        writeBytes(bytes, dir.segmentPath(last.segment))
        let error = expectError(.payloadChecksum) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
        #expect(error?.seq == last.firstSeq && error?.offset == last.offset)
        #expect(fileBytes(dir.segmentPath(last.segment)).count == bytes.count)
    }

    /// Rewrites the header at `offset` of `path` with `edit`, recomputing the header CRC.
    static func rewriteHeader(_ path: String, at offset: Int, _ edit: (inout [UInt8]) -> Void) {
        var bytes = fileBytes(path)
        var header = Array(bytes[offset..<(offset + 80)])
        edit(&header)
        let crc = header.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[8..<76])) }
        withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { header[76 + i] = $0[i] } }
        bytes.replaceSubrange(offset..<(offset + 80), with: header)
        writeBytes(bytes, path)
    }

    @Test func futureFormatVersion() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        try appendBatches(writer, batches: 2, size: 3)
        let last = try writer.append([event(1)])
        writer.close()
        Self.rewriteHeader(dir.segmentPath(last.segment), at: Int(last.offset)) { $0[12] = 2; $0[13] = 0 }
        let expected = "segment \(last.segment) offset \(last.offset) was written by a newer SyncLedger (format version 2)"
        let error = expectError(.unsupportedVersion) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
        #expect(error?.message.hasPrefix(expected) == true, "\(error?.message ?? "")")
        #expect(try EventLogReader(directory: dir.log).verify().error?.code == .unsupportedVersion)
        #expect(throws: LogError.self) { _ = try readAll(dir.log) }
    }

    @Test(arguments: [28, 32])
    func absurdLengthField(field: Int) throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        let first = try writer.append([event(1)])
        try writer.append([event(2)])
        writer.close()
        // 4 GiB in the compressed (u32) or uncompressed (u64) length, with a valid header CRC.
        Self.rewriteHeader(dir.segmentPath(first.segment), at: 0) { header in
            if field == 28 { for i in 0..<4 { header[28 + i] = 0xff } } else { header[36] = 1 }
        }
        _ = expectError(.malformedBatch) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
        let report = try EventLogReader(directory: dir.log).verify()
        #expect(!report.ok && report.error?.code == .malformedBatch && report.error?.offset == 0)
        #expect(throws: LogError.self) { _ = try readAll(dir.log) }
    }

    @Test func segmentNameMustMatchFirstBatch() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 200, fsync: false))
        try appendBatches(writer, batches: 6, size: 3)
        writer.close()
        let segments = dir.segments()
        #expect(segments.count >= 2)
        // A missing segment in the middle leaves a seq gap.
        try FileManager.default.removeItem(atPath: dir.segmentPath(segments[1]))
        _ = expectError(.sequenceGap) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
        #expect(try EventLogReader(directory: dir.log).verify().error?.code == .sequenceGap)
        // The first segment renamed: its name no longer agrees with its first batch.
        let other = TempDir()
        let w2 = try EventLogWriter.open(directory: other.log, options: fast)
        try w2.append([event(1)])
        w2.close()
        try FileManager.default.moveItem(atPath: other.segmentPath("00000000000000000001.seg"),
                                         toPath: other.log + "/00000000000000000002.seg")
        _ = expectError(.sequenceGap) { _ = try EventLogWriter.open(directory: other.log, options: fast) }
    }
}
