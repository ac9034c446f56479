import Foundation
import TestSupport
import Testing
@testable import EventLog

/// `state/head`-style head evidence kept by the writer, and what `open` does with it.
@Suite struct HeadEvidenceTests {
    func options(_ dir: TempDir, segmentBytes: Int = 64 << 20) -> LogOptions {
        LogOptions(segmentBytes: segmentBytes, fsync: false, headRecordPath: dir.path + "/head")
    }

    @Test func everyAppendRecordsTheHeadInAlternatingSlots() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: options(dir))
        #expect(try HeadRecord.read(path: dir.path + "/head")?.head == .empty)
        var generations: [UInt64] = []
        for _ in 0..<5 {
            try writer.append([event(1)])
            let entry = try #require(try HeadRecord.read(path: dir.path + "/head"))
            #expect(entry.head == writer.head)
            generations.append(entry.generation)
        }
        #expect(generations == generations.sorted() && Set(generations).count == 5)
        #expect(fileBytes(dir.path + "/head").count == 4096)
        writer.close()

        // A torn write of the newest slot: the other slot still holds the previous head, which
        // the log holds, so the next open is silent.
        var bytes = fileBytes(dir.path + "/head")
        let newest = Int(HeadRecord.slotOffsets[Int(generations.last! % 2)])
        for i in newest..<(newest + 30) { bytes[i] = 0xff }
        writeBytes(bytes, dir.path + "/head")
        let previous = try #require(try HeadRecord.read(path: dir.path + "/head"))
        #expect(previous.generation == generations.last! - 1 && previous.head.seq == 4)
        let again = try EventLogWriter.open(directory: dir.log, options: options(dir))
        #expect(again.head.seq == 5)
        #expect(try HeadRecord.read(path: dir.path + "/head")?.head == again.head)
        again.close()

        // Both slots unreadable: that is damage, never "nothing was acknowledged".
        writeBytes([UInt8](repeating: 0x33, count: 4096), dir.path + "/head")
        #expect(throws: LogError.self) { _ = try HeadRecord.read(path: dir.path + "/head") }
        #expect(throws: LogError.self) { _ = try EventLogWriter.open(directory: dir.log, options: options(dir)) }
    }

    /// The log cut at the last batch boundary, inside the last batch, a segment deleted, the
    /// whole log gone: `open` throws `.lostEvents` and changes nothing (no truncation of the
    /// half batch, no new empty log). `acceptingLoss` opens and records the head as it is.
    @Test func openRefusesALogShorterThanItsEvidenceAndChangesNothing() throws {
        for damage in ["boundary", "inside", "segment", "log"] {
            let dir = TempDir()
            let writer = try EventLogWriter.open(directory: dir.log, options: options(dir, segmentBytes: 600))
            _ = try appendBatches(writer, batches: 12, size: 4)
            let infos = try (1...writer.head.seq).compactMap { try EventLogReader(directory: dir.log).batch(containing: $0) }
            writer.close()
            let last = try #require(infos.last)
            let lastSegment = dir.segmentPath(last.segment)
            switch damage {
            case "boundary": truncateFile(lastSegment, Int(last.offset))
            case "inside": truncateFile(lastSegment, Int(last.offset) + (80 + Int(last.compressedLength)) / 2)
            case "segment": try FileManager.default.removeItem(atPath: lastSegment)
            default: try FileManager.default.removeItem(atPath: dir.log)
            }
            let before = dir.segments().map { fileBytes(dir.segmentPath($0)) }
            let error = expectError(.lostEvents) { _ = try EventLogWriter.open(directory: dir.log, options: options(dir)) }
            #expect(error?.message.contains("was acknowledged") == true, "\(damage): \(error?.message ?? "")")
            #expect(dir.segments().map { fileBytes(dir.segmentPath($0)) } == before, "\(damage): the log changed")
            if damage == "log" { #expect(!FileManager.default.fileExists(atPath: dir.log), "a new empty log was created") }

            let accepted = try EventLogWriter.open(directory: dir.log, options: options(dir), acceptingLoss: true)
            #expect(accepted.head.seq < last.lastSeq)
            // The lost head stays the evidence until something is appended (the loss's record):
            // the open moved it on, and a repair killed before its append left no trace of the
            // loss, and no evidence that anything was lost (hostile test).
            #expect(try HeadRecord.read(path: dir.path + "/head")?.head.seq == last.lastSeq, "\(damage)")
            _ = try appendBatches(accepted, batches: 1, size: 1, start: 900)
            #expect(try HeadRecord.read(path: dir.path + "/head")?.head == accepted.head)
            accepted.close()
            _ = try EventLogWriter.open(directory: dir.log, options: options(dir))
        }
    }

    /// A different history in place of the log (same length, other content): refused.
    @Test func anotherLogInPlaceIsRefused() throws {
        let dir = TempDir()
        let other = TempDir()
        let w1 = try EventLogWriter.open(directory: dir.log, options: options(dir))
        _ = try appendBatches(w1, batches: 3, size: 5)
        w1.close()
        let w2 = try EventLogWriter.open(directory: other.log, options: fast)
        _ = try appendBatches(w2, batches: 3, size: 5, start: 100)
        w2.close()
        try FileManager.default.removeItem(atPath: dir.log)
        try FileManager.default.copyItem(atPath: other.log, toPath: dir.log)
        let error = expectError(.lostEvents) { _ = try EventLogWriter.open(directory: dir.log, options: options(dir)) }
        #expect(error?.message.contains("differs") == true, "\(error?.message ?? "")")
    }

    /// Opening trusts a validated index for sealed segments instead of reading them: a payload
    /// byte flipped in a sealed segment (index intact) is not read by `open`, while `verify`,
    /// which reads everything, still finds it; without the index file `open` scans and refuses.
    @Test func openTrustsAValidatedIndexForSealedSegments() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 2000, fsync: false))
        _ = try appendBatches(writer, batches: 12, size: 10)
        writer.close()
        let sealed = dir.segments()[0]
        let info = try #require(try EventLogReader(directory: dir.log).batch(containing: 1))
        var bytes = fileBytes(dir.segmentPath(sealed))
        bytes[Int(info.offset) + 90] ^= 0x40
        writeBytes(bytes, dir.segmentPath(sealed))

        let reopened = try EventLogWriter.open(directory: dir.log, options: fast)
        reopened.close()
        #expect(!(try EventLogReader(directory: dir.log).verify().ok))
        try FileManager.default.removeItem(atPath: dir.log + "/index")
        _ = expectError(.payloadChecksum) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
    }
}
