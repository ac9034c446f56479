import EventLog
import Foundation
import Ledger
import TestSupport
import Testing

/// `SealedAppender`: each batch sealed (on another thread) while the one before it is written.
/// What reaches the log must be what one-after-the-other gives: every batch sealed once, in order,
/// and a batch whose sealing fails never written, with the ones before it on disk.
@Suite struct SealedAppenderTests {
    static func batch(_ b: Int, size: Int) -> [NewEvent] {
        (0..<size).map { i in NewEvent(type: .syncStarted, run: "r", stream: "s", data: Array("{\"n\":\"\(b)-\(i)\"}".utf8)) }
    }

    /// The "sealing" used here: marks the data, counts the batches it saw.
    static func marking(_ sealedBatches: Locked<[Int]>, failingAt: Int? = nil) -> @Sendable ([NewEvent]) throws -> [NewEvent] {
        { batch in
            let b = Int(String(decoding: batch[0].data, as: UTF8.self).split(separator: "\"")[3].split(separator: "-")[0])!
            if b == failingAt { throw LedgerError("sealing batch \(b) failed") }
            sealedBatches.withLock { $0.append(b) }
            return batch.map { e in
                var e = e
                e.data = Array("{\"sealed\":".utf8) + e.data + [UInt8(ascii: "}")]
                return e
            }
        }
    }

    static func logged(_ store: Store) throws -> [String] {
        var out: [String] = []
        try LedgerReader(store: store).forEachEvent { e in
            out.append(String(decoding: e.data, as: UTF8.self))
            return true
        }
        return out
    }

    @Test func everyBatchIsSealedOnceAndWrittenInOrder() throws {
        let tmp = try TempStore()
        let writer = try LedgerWriter(store: tmp.store, options: fastLog)
        defer { writer.close() }
        let seen = Locked<[Int]>([])
        let appender = SealedAppender(writer: writer, seal: Self.marking(seen))
        var returned: [[String]] = []
        for b in 0..<5 {
            let stored = try appender.append(Self.batch(b, size: 3 + b))
            // A call returns only once its batch is sealed (nothing runs between calls) …
            #expect(seen.withLock { $0 } == Array(0...b))
            // … and with the batch before it on disk.
            #expect(writer.head.seq == UInt64((0..<b).reduce(0) { $0 + 3 + $1 }))
            returned.append(stored.map { String(decoding: $0.data, as: UTF8.self) })
        }
        returned.append(try appender.finish().map { String(decoding: $0.data, as: UTF8.self) })
        #expect(try appender.finish().isEmpty)

        let expected = (0..<5).flatMap { b in (0..<(3 + b)).map { "{\"sealed\":{\"n\":\"\(b)-\($0)\"}}" } }
        #expect(try Self.logged(tmp.store) == expected)
        #expect(returned.first == [], "the first call appends nothing")
        #expect(Array(returned.dropFirst().joined()) == expected, "each call returns the batch it wrote")
    }

    @Test func aBatchWhoseSealingFailsIsNotWritten() throws {
        let tmp = try TempStore()
        let writer = try LedgerWriter(store: tmp.store, options: fastLog)
        defer { writer.close() }
        let seen = Locked<[Int]>([])
        let appender = SealedAppender(writer: writer, seal: Self.marking(seen, failingAt: 2))
        try appender.append(Self.batch(0, size: 2))
        try appender.append(Self.batch(1, size: 2))
        #expect(throws: LedgerError.self) { try appender.append(Self.batch(2, size: 2)) }
        // Batches 0 and 1 are on disk; 2 was never written, and nothing is left to finish.
        #expect(try appender.finish().isEmpty)
        #expect(try Self.logged(tmp.store) == ["{\"sealed\":{\"n\":\"0-0\"}}", "{\"sealed\":{\"n\":\"0-1\"}}",
                                                "{\"sealed\":{\"n\":\"1-0\"}}", "{\"sealed\":{\"n\":\"1-1\"}}"])
    }
}
