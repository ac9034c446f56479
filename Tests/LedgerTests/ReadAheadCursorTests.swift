import EventLog
import Foundation
@testable import Ledger
import TestSupport
import Testing

/// `ReadAheadCursor` (the next batches read and checked on a second thread) gives what
/// `LogCursor` gives, event for event, and fails where it fails.
@Suite struct ReadAheadCursorTests {
    /// A log of `batches` batches of 1–9 events over segments of ~3 KB.
    func log(_ rng: inout SeededRNG, batches: Int) throws -> (TempDir, UInt64) {
        let dir = TempDir("read-ahead")
        let writer = try EventLogWriter.open(directory: dir.sub("log"), options: LogOptions(segmentBytes: 3000, fsync: false))
        var n = 0
        for _ in 0..<batches {
            let size = 1 + Int(rng.next() % 9)
            try writer.append((0..<size).map { i in
                Array("{\"n\":\(n + i),\"pad\":\"\(String(repeating: "y", count: Int(rng.next() % 90)))\"}".utf8)
            })
            n += size
        }
        writer.close()
        return (dir, UInt64(n))
    }

    func segments(_ dir: TempDir) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.sub("log"))) ?? []).filter { $0.hasSuffix(".seg") }.sorted()
    }

    /// Every record of a cursor, and the error that ended it (nil: it reached the end).
    func drain(_ make: () throws -> () throws -> LogRecord?) -> ([(UInt64, [UInt8], UInt64)], LogError?) {
        var out: [(UInt64, [UInt8], UInt64)] = []
        do {
            let next = try make()
            while let r = try next() { out.append((r.seq, Array(r.payload), r.batch.firstSeq)) }
        } catch let e as LogError {
            return (out, e)
        } catch {
            Issue.record("not a LogError: \(error)")
        }
        return (out, nil)
    }

    func same(_ a: [(UInt64, [UInt8], UInt64)], _ b: [(UInt64, [UInt8], UInt64)]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 && $0.2 == $1.2 }
    }

    /// Random ranges of a log over many segments, read ahead 1–3 batches deep.
    @Test func theSameEventsAsALogCursor() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("ReadAheadCursorTests seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        let (dir, count) = try log(&rng, batches: 120)
        let reader = try EventLogReader(directory: dir.sub("log"))
        #expect(segments(dir).count > 5, "seed \(seed)")
        var ranges: [(UInt64, UInt64?)] = [(1, nil), (count, nil), (count + 1, nil), (1, 1), (1, count + 50)]
        for _ in 0..<30 {
            let from = 1 + rng.next() % count
            ranges.append((from, rng.next() % 3 == 0 ? nil : from + rng.next() % 200))
        }
        for (from, through) in ranges {
            let expected = drain { try reader.cursor(from: from, through: through).next }
            let ahead = try ReadAheadCursor(reader, from: from, through: through, depth: 1 + Int(rng.next() % 3))
            let got = drain { ahead.next }
            #expect(expected.1 == nil && got.1 == nil, "seed \(seed), \(from)...\(String(describing: through))")
            let equal = same(got.0, expected.0)
            #expect(equal, "seed \(seed), \(from)...\(String(describing: through)): \(got.0.count) events, expected \(expected.0.count)")
            // Done stays done.
            #expect(try ahead.next() == nil)
        }
    }

    /// A flipped byte in a sealed segment: the same events come out first, then the same error.
    @Test func aDamagedBatchFailsWhereALogCursorFails() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("ReadAheadCursorTests damage seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        let (dir, count) = try log(&rng, batches: 60)
        let reader = try EventLogReader(directory: dir.sub("log"))
        _ = reader
        let sealed = Array(segments(dir).dropLast())
        let victim = sealed[Int(rng.next() % UInt64(sealed.count))]
        let path = dir.sub("log/" + victim)
        var bytes = Array(FileManager.default.contents(atPath: path)!)
        // A byte of a payload, past the first batch's frame and header.
        let at = 100 + Int(rng.next() % UInt64(bytes.count - 100))
        bytes[at] ^= 0x5A
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        try? FileManager.default.removeItem(atPath: dir.sub("log/index"))

        let log = dir.sub("log")
        let expected = drain { try EventLogReader(directory: log).cursor(from: 1).next }
        try? FileManager.default.removeItem(atPath: dir.sub("log/index"))
        let got = drain { try ReadAheadCursor(try EventLogReader(directory: log), from: 1).next }
        let want = try #require(expected.1, "seed \(seed): flipping byte \(at) of \(victim) went unnoticed")
        let gotError = got.1
        let error = try #require(gotError, "seed \(seed)")
        #expect(error.code == want.code && error.segment == want.segment && error.offset == want.offset && error.seq == want.seq,
                "seed \(seed): \(error) vs \(want)")
        let equal = same(got.0, expected.0)
        #expect(equal, "seed \(seed): \(got.0.count) events, expected \(expected.0.count)")
        let read = UInt64(got.0.count)
        #expect(read < count)
    }

    /// A cursor dropped after a few events (its thread blocked on a full read-ahead), or never
    /// read, stops its thread: what the thread held is freed (it would stay blocked, holding it,
    /// otherwise).
    @Test func aCursorDroppedEarlyStopsItsThread() throws {
        var rng = SeededRNG(seed: 7)
        let (dir, _) = try log(&rng, batches: 80)
        let reader = try EventLogReader(directory: dir.sub("log"))
        var held: [() -> AnyObject?] = []
        for round in 0..<20 {
            let cursor = try ReadAheadCursor(reader, from: 1, depth: 1)
            weak let state = cursor.threadState
            held.append { state }
            for _ in 0..<(round % 4) { #expect(try cursor.next() != nil) }
            Thread.sleep(forTimeInterval: 0.002)
        }
        let deadline = Date().addingTimeInterval(10)
        while held.contains(where: { $0() != nil }), Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(held.allSatisfy { $0() == nil }, "a dropped cursor's reading thread still runs")
    }
}
