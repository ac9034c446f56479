import Foundation
import TestSupport
import Testing
@testable import EventLog

@Suite struct VerifyTests {
    @Test func intactLog() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 1500, fsync: false))
        try appendBatches(writer, batches: 20, size: 5)
        let head = writer.head
        writer.close()
        var progressed: [UInt64] = []
        let report = try EventLogReader(directory: dir.log).verify { progressed.append($0) }
        #expect(report.ok && report.error == nil && report.warnings.isEmpty)
        #expect(report.head == head && report.events == 100 && report.batches == 20)
        #expect(report.segments == dir.segments().count && report.segments > 2)
        #expect(progressed.last == 100)
    }

    @Test func indexMissingOrGarbledIsRebuilt() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 500, fsync: false))
        let payloads = try appendBatches(writer, batches: 20, size: 5)
        writer.close()
        let indexDir = dir.log + "/index"
        let files = try FileManager.default.contentsOfDirectory(atPath: indexDir).sorted()
        #expect(files.count == dir.segments().count - 1)
        try FileManager.default.removeItem(atPath: indexDir + "/" + files[0])
        var garbled = fileBytes(indexDir + "/" + files[1])
        garbled[90] ^= 0xff
        writeBytes(garbled, indexDir + "/" + files[1])
        #expect(files.count >= 4)
        // Another segment's (valid) index file in place of this one's, and a truncated one.
        writeBytes(fileBytes(indexDir + "/" + files[3]), indexDir + "/" + files[2])
        writeBytes(Array(fileBytes(indexDir + "/" + files[3]).prefix(10)), indexDir + "/" + files[3])

        // Reads work without them (rebuilt in memory and on disk).
        #expect(try readAll(dir.log, from: 37).map(\.1) == Array(payloads[36...]))
        let report = try EventLogReader(directory: dir.log).verify()
        #expect(report.ok)
        #expect(try FileManager.default.contentsOfDirectory(atPath: indexDir).sorted() == files)
        // A second verify finds nothing to rebuild.
        #expect(try EventLogReader(directory: dir.log).verify().warnings.isEmpty)
        for from in stride(from: 1, through: 100, by: 7) {
            #expect(try readAll(dir.log, from: UInt64(from)).first?.0 == UInt64(from))
        }
    }

    @Test func expectHead() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        try appendBatches(writer, batches: 3, size: 4)
        let published = writer.head
        try appendBatches(writer, batches: 3, size: 4, start: 13)
        let reader = try EventLogReader(directory: dir.log)
        #expect(reader.verify(expectHead: published).ok)
        #expect(reader.verify(expectHead: .empty).ok)
        #expect(reader.verify(expectHead: writer.head).ok)

        var wrong = published
        wrong.hash[0] ^= 1
        let diverged = reader.verify(expectHead: wrong)
        #expect(!diverged.ok && diverged.error?.code == .headMismatch && diverged.error?.seq == 9)
        #expect(diverged.error?.segment == "00000000000000000001.seg")

        let inside = reader.verify(expectHead: LogHead(seq: 10, hash: published.hash))
        #expect(!inside.ok && inside.error?.code == .headMismatch)

        let beyond = reader.verify(expectHead: LogHead(seq: 99, hash: published.hash))
        #expect(!beyond.ok && beyond.error?.code == .headMismatch)
        #expect(beyond.error?.message.contains("ends at seq 24") == true)

        // A mismatch does not stop the read: the whole log is verified and counted.
        #expect(diverged.head == writer.head && diverged.events == 24 && diverged.batches == 6)
        #expect(inside.head == writer.head && inside.events == 24)
        // The mismatch stays the failure; damage after it is a warning beside it.
        let path = dir.segmentPath(try #require(dir.segments().first))
        var bytes = fileBytes(path)
        let last = CutSalvageTests.layout(bytes).last!
        bytes[last.offset + 80 + 3] ^= 0x11
        writeBytes(bytes, path)
        let damaged = try EventLogReader(directory: dir.log).verify(expectHead: wrong)
        #expect(!damaged.ok && damaged.error?.code == .headMismatch && damaged.head.seq == 20
                && damaged.warnings.contains { $0.hasPrefix("the log is also damaged after it: segment") && $0.contains("payload CRC32C mismatch") },
                "\(damaged)")
    }
}
