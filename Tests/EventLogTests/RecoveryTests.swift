import Foundation
import TestSupport
import Testing
@testable import EventLog

@Suite struct RecoveryTests {
    /// Cuts the last batch at every byte offset: the earlier batches survive, the torn one goes,
    /// and the next append gets the right seq and chain.
    @Test func tornTailAtEveryOffset() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        let kept = try appendBatches(writer, batches: 2, size: 3)
        let headKept = writer.head
        let last = try writer.append((0..<3).map { event(100 + $0) })
        writer.close()
        let segment = dir.segmentPath(last.segment)
        let original = fileBytes(segment)
        let end = Int(last.endOffset)
        #expect(original.count == end)

        // The appended batch we expect after recovery, from a reference log.
        let reference = TempDir()
        let refWriter = try EventLogWriter.open(directory: reference.log, options: fast)
        try appendBatches(refWriter, batches: 2, size: 3)
        let expected = try refWriter.append([event(7)])

        for cut in Int(last.offset)..<end {
            writeBytes(Array(original[..<cut]), segment)
            let reader = try EventLogReader(directory: dir.log)
            #expect(try reader.head() == headKept, "cut \(cut)")
            let reopened = try EventLogWriter.open(directory: dir.log, options: fast)
            #expect(reopened.head == headKept, "cut \(cut)")
            #expect(reopened.recoveredTail != nil || cut == Int(last.offset), "cut \(cut)")
            let info = try reopened.append([event(7)])
            #expect(info.firstSeq == 7 && info.chainHash == expected.chainHash, "cut \(cut)")
            reopened.close()
            #expect(try readAll(dir.log).map(\.1) == kept + [event(7)], "cut \(cut)")
        }
    }

    @Test func zeroFilledTail() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        try appendBatches(writer, batches: 2, size: 3)
        let headKept = writer.head
        let last = try writer.append((0..<50).map { event(100 + $0) })
        writer.close()
        let segment = dir.segmentPath(last.segment)
        let original = fileBytes(segment)
        // Zeros from inside the header, inside the payload, and zeros beyond a complete batch.
        let zeroFrom = [Int(last.offset), Int(last.offset) + 30, Int(last.offset) + 100, original.count - 10]
        for start in zeroFrom {
            var bytes = original
            for i in start..<bytes.count { bytes[i] = 0 }
            writeBytes(bytes, segment)
            #expect(try EventLogReader(directory: dir.log).head() == headKept)
            #expect(try EventLogReader(directory: dir.log).verify().ok)
            let reopened = try EventLogWriter.open(directory: dir.log, options: fast)
            #expect(reopened.head == headKept, "zeros from \(start)")
            #expect(fileBytes(segment).count == Int(last.offset))
            reopened.close()
        }
        // Zeros appended after the last complete batch (file extended, data never written).
        writeBytes(Array(original[..<Int(last.offset)]) + [UInt8](repeating: 0, count: 4096), segment)
        let reopened = try EventLogWriter.open(directory: dir.log, options: fast)
        #expect(reopened.head == headKept)
    }

    @Test func tornTailIsAWarningForVerify() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        try appendBatches(writer, batches: 3, size: 2)
        let head = writer.head
        let last = try writer.append([event(9)])
        writer.close()
        truncateFile(dir.segmentPath(last.segment), Int(last.endOffset) - 3)
        let report = try EventLogReader(directory: dir.log).verify()
        #expect(report.ok && report.error == nil && report.head == head && report.warnings.count == 1)
    }
}
