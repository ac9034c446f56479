import Foundation
import TestSupport
import Testing
@testable import EventLog

@Suite struct RoundTripTests {
    @Test func roundTripAcrossSegmentRolls() throws {
        let dir = TempDir()
        var writer: EventLogWriter? = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 600, fsync: false))
        var payloads: [[UInt8]] = []
        var n = 1
        for size in [1, 3, 5, 2, 7, 1, 4, 6, 2, 3, 8, 1] {
            let batch = (0..<size).map { event(n + $0) }
            let info = try writer!.append(batch)
            #expect(info.firstSeq == UInt64(n) && info.lastSeq == UInt64(n + size - 1))
            n += size
            payloads += batch
        }
        let headBefore = writer!.head
        #expect(headBefore.seq == UInt64(payloads.count))
        #expect(dir.segments().count >= 3, "segments: \(dir.segments())")
        writer!.close()
        writer = nil

        let all = try readAll(dir.log)
        #expect(all.map(\.0) == Array(1...UInt64(payloads.count)))
        #expect(all.map(\.1) == payloads)
        for from in 1...payloads.count {
            let tail = try readAll(dir.log, from: UInt64(from))
            #expect(tail.first?.0 == UInt64(from) && tail.map(\.1) == Array(payloads[(from - 1)...]))
        }
        #expect(try readAll(dir.log, from: UInt64(payloads.count + 1)).isEmpty)

        let reopened = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 600, fsync: false))
        #expect(reopened.head == headBefore)
        #expect(try EventLogReader(directory: dir.log).head() == headBefore)
        let info = try reopened.append([event(1000)])
        #expect(info.firstSeq == headBefore.seq + 1)
        #expect(try readAll(dir.log).map(\.0) == Array(1...headBefore.seq + 1))
        // Segment names are their first seq and every batch of a segment follows on.
        for name in dir.segments() {
            let first = UInt64(name.dropLast(4))!
            #expect(try EventLogReader(directory: dir.log).batch(containing: first)?.segment == name)
        }
    }

    @Test func cursorThroughAndBatches() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        let payloads = try appendBatches(writer, batches: 5, size: 4)
        let reader = try EventLogReader(directory: dir.log)
        let cursor = try reader.cursor(from: 6, through: 13)
        var seqs: [UInt64] = []
        while let r = try cursor.next() { seqs.append(r.seq) }
        #expect(seqs == Array(6...13))
        let batches = try reader.cursor(from: 1)
        var lines = 0
        while let (info, content) = try batches.nextBatch() {
            #expect(content.last == 10)
            lines += content.split(separator: 10).count
            #expect(info.count == 4)
        }
        #expect(lines == payloads.count)
        let info = try #require(try reader.batch(containing: 10))
        #expect(info.firstSeq == 9 && info.lastSeq == 12)
        #expect(try reader.batch(containing: 21) == nil)
    }

    @Test func headParsesAndPrints() throws {
        #expect(LogHead.empty.description == "0:" + String(repeating: "0", count: 64))
        let head = LogHead(seq: 42, hash: (0..<32).map { UInt8($0 * 7 & 0xff) })
        #expect(LogHead(parsing: head.description) == head)
        #expect(LogHead(parsing: "12:abc") == nil)
        #expect(LogHead(parsing: "x:" + String(repeating: "0", count: 64)) == nil)
    }

    @Test func rejectsBadInput() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        _ = expectError(.invalidArgument) { try writer.append([]) }
        _ = expectError(.invalidArgument) { try writer.append([Array("a\nb".utf8)]) }
        _ = expectError(.tooLarge) { try writer.append(Array(repeating: [UInt8(65)], count: 1_000_001)) }
        _ = expectError(.tooLarge) { try writer.append([[UInt8](repeating: 65, count: 256 << 20)]) }
        #expect(writer.head == .empty)
        #expect(try writer.append([event(1)]).firstSeq == 1)
    }

    @Test func permissionsAreOwnerOnly() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 100))  // fsync on
        try appendBatches(writer, batches: 3, size: 2)
        func mode(_ path: String) -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int ?? -1) & 0o777
        }
        #expect(mode(dir.log) == 0o700)
        #expect(mode(dir.log + "/index") == 0o700)
        #expect(mode(dir.log + "/LOCK") == 0o600)
        for name in dir.segments() { #expect(mode(dir.segmentPath(name)) == 0o600) }
        let indexes = try FileManager.default.contentsOfDirectory(atPath: dir.log + "/index")
        #expect(!indexes.isEmpty)
        for name in indexes { #expect(mode(dir.log + "/index/" + name) == 0o600) }
    }
}

/// `append(lines:count:)`: the JSON Lines of a batch given whole are stored as `append(_:)` stores
/// its payloads; a count that disagrees, an empty line or a missing last newline is refused and
/// nothing is written.
@Suite struct AppendLinesTests {
    @Test func linesAreStoredLikePayloadsAndBadLinesAreRefused() throws {
        let dir = TempDir("appendlines")
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        defer { writer.close() }
        let payloads = (1...40).map { event($0) }
        let lines: [UInt8] = payloads.flatMap { $0 + [UInt8(10)] }
        let info = try writer.append(lines: lines, count: payloads.count)
        #expect(info.firstSeq == 1 && info.count == 40)
        let bad: [([UInt8], Int, Int)] = [
            (lines, 39, 39), (lines, 41, 40), (Array(lines.dropLast()), 40, 39), ([], 1, 0), ([10], 1, 0),
            (payloads[0] + [10, 10] + payloads[1] + [10], 3, 1), ([10] + payloads[0] + [10], 2, 0),
        ]
        for (bytes, count, index) in bad {
            let error = expectError(.invalidArgument) { try writer.append(lines: bytes, count: count) }
            #expect(error?.message.hasPrefix("event \(index) of the batch is empty or contains a '\\n'") == true, "\(error?.message ?? "")")
        }
        _ = expectError(.invalidArgument) { try writer.append(lines: lines, count: 0) }
        #expect(writer.head.seq == 40)
        try writer.append(payloads)
        let all = try readAll(dir.log)
        #expect(all.map(\.0) == Array(1...80))
        #expect(all.map(\.1) == payloads + payloads)
    }
}

/// A batch of `SideBySide.minimumBytes` or more is hashed on a second core while it is
/// compressed: its chain hash must be the one the formula gives, and the reader must accept it,
/// for batches just under, at and well over the threshold, in a chain with small ones.
@Suite struct LargeBatchHashTests {
    @Test func chainHashesOfLargeBatchesAreTheFormulas() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        var previous = ChainHash.zero
        var payloads: [[UInt8]] = []
        var n = 1
        // Batches of about these many bytes: small, just under and just over the threshold, large.
        let limit = SideBySide.minimumBytes
        for target in [50, limit - 300, limit + 300, 200, 600_000, 1, 3 * limit] {
            var batch: [[UInt8]] = [event(n, pad: 100)]
            var bytes = batch[0].count + 1
            while true {
                let next = event(n + batch.count, pad: 100)
                if bytes + next.count + 1 > target { break }
                batch.append(next)
                bytes += next.count + 1
            }
            let size = batch.count
            let plain: [UInt8] = batch.flatMap { $0 + [10] }
            #expect((plain.count >= limit) == (target > limit), "target \(target): \(plain.count) bytes")
            let info = try writer.append(batch)
            let expected = plain.withUnsafeBytes {
                ChainHash.next(previous: previous, version: BatchHeader.currentVersion, firstSeq: UInt64(n),
                               count: UInt32(size), content: $0)
            }
            #expect(info.chainHash == expected, "batch of \(size) events (\(plain.count) bytes)")
            #expect(writer.head.hash == expected)
            previous = expected
            payloads += batch
            n += size
        }
        writer.close()
        // Every batch is read back, its CRC and chain hash checked.
        #expect(try readAll(dir.log).map(\.1) == payloads)
        #expect(try EventLogReader(directory: dir.log).head() == LogHead(seq: UInt64(payloads.count), hash: previous))
    }
}
