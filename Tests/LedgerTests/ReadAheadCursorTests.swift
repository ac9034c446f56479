@testable import EventLog
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

    /// A log of 60 batches (`log`), its directory, and every batch as a `LogCursor` reads them.
    func logAndBatches(_ rng: inout SeededRNG) throws -> (TempDir, UInt64, String, [BatchInfo]) {
        let (dir, count) = try log(&rng, batches: 60)
        var batches: [BatchInfo] = []
        let cursor = try EventLogReader(directory: dir.sub("log")).cursor(from: 1)
        while let (info, _) = try cursor.nextBatch() { batches.append(info) }
        return (dir, count, dir.sub("log"), batches)
    }

    /// Flips `mask` in byte `byte` of `batch`'s compressed payload: its payload CRC fails.
    func damagePayload(_ dir: TempDir, _ batch: BatchInfo, byte: Int, mask: UInt8) throws {
        let path = dir.sub("log/" + batch.segment)
        var bytes = Array(try #require(FileManager.default.contents(atPath: path)))
        bytes[Int(batch.offset) + 80 + byte] ^= mask
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    }

    /// Rewrites the batch at `offset` of the segment at `path` with `edit` applied to its JSON
    /// Lines: recompressed, with both CRCs recomputed but its chain hash left as it was, so that
    /// only the hash chain shows the change (what someone editing history without the chain
    /// would leave). Later batches of the segment move; the index files must be removed.
    func forgeContent(_ path: String, at offset: Int, _ edit: (inout [UInt8]) -> Void) throws {
        var bytes = Array(try #require(FileManager.default.contents(atPath: path)))
        let header = try bytes.withUnsafeBytes { try BatchHeader.decode($0.baseAddress! + offset).get() }
        let payload = Array(bytes[(offset + 80)..<(offset + Int(header.batchLength))])
        var content = [UInt8](repeating: 0, count: Int(header.uncompressedLength))
        let failure = payload.withUnsafeBytes { source in
            content.withUnsafeMutableBytes { LZ4.Decoder().decode(source, into: $0) }
        }
        #expect(failure == nil)
        edit(&content)
        var frame = [UInt8](repeating: 0, count: LZ4.compressBound(content.count))
        let n = content.withUnsafeBytes { source in frame.withUnsafeMutableBytes { LZ4.compress(source, into: $0) } }
        frame.removeLast(frame.count - n)
        var forged = header
        forged.compressedLength = UInt32(n)
        forged.payloadCRC = frame.withUnsafeBytes { crc32c($0) }
        var head = [UInt8](repeating: 0, count: 80)
        head.withUnsafeMutableBytes { forged.encode(into: $0.baseAddress!) }
        bytes.replaceSubrange(offset..<(offset + Int(header.batchLength)), with: head + frame)
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    }

    /// A batch whose content was changed with its CRCs recomputed breaks only the hash chain,
    /// which the read-ahead and `verify` check on other cores (`ChainCheck`): they still stop at
    /// that batch, after exactly the events before it, with the error a `LogCursor` gives; also
    /// when one of the next three batches is damaged too (its payload CRC fails on the reading
    /// thread while the forged batch's link may still be being checked), when a batch in a later
    /// segment is, and when the forged batch is the last one.
    @Test func aBrokenChainStopsReadsWhereALogCursorStops() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("ReadAheadCursorTests chain seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        for round in 0..<12 {
            let (dir, count, log, batches) = try logAndBatches(&rng)
            let v = round == 0 ? batches.count - 1 : Int(rng.next() % UInt64(batches.count - 4))
            let victim = batches[v]
            // A later batch damaged too (its payload CRC fails): one of the next three, or one in
            // a later segment.
            let later = round % 3 == 1 ? Array((v + 1)...(v + 3))
                : batches.indices.filter { $0 > v && batches[$0].segment != victim.segment }
            let damaged = round % 3 != 0 ? later.randomElement(using: &rng).map { batches[$0] } : nil
            if let damaged { try damagePayload(dir, damaged, byte: 8, mask: 0x20) }
            try forgeContent(dir.sub("log/" + victim.segment), at: Int(victim.offset)) { content in
                // The last event's padding (or its closing brace) changes by one bit.
                content[content.count - 3] ^= 0x01
            }
            try? FileManager.default.removeItem(atPath: dir.sub("log/index"))
            let context = "seed \(seed), round \(round), batch \(victim.firstSeq) of \(count) events, damaged \(damaged?.firstSeq ?? 0)"

            let expected = drain { try EventLogReader(directory: log).cursor(from: 1).next }
            let want = try #require(expected.1, "\(context): the forged batch went unnoticed")
            #expect(want.code == .brokenChain && want.seq == victim.firstSeq, "\(context): \(want)")
            #expect(UInt64(expected.0.count) == victim.firstSeq - 1, "\(context)")

            try? FileManager.default.removeItem(atPath: dir.sub("log/index"))
            let got = drain { try ReadAheadCursor(try EventLogReader(directory: log), from: 1, depth: 1 + round % 3).next }
            let error = try #require(got.1, "\(context): the read-ahead went past the forged batch")
            #expect(error.code == want.code && error.segment == want.segment && error.offset == want.offset
                        && error.seq == want.seq, "\(context): \(error) vs \(want)")
            let equal = same(got.0, expected.0)
            #expect(equal, "\(context): \(got.0.count) events, expected \(expected.0.count)")

            // The same through `forEachBatchCheckingChainAside` (bundles): every batch before the
            // forged one, then its error; and told to stop just before it, no error at all.
            var seen: [UInt64] = []
            var thrown: LogError?
            do {
                try EventLogReader(directory: log).cursor(from: 1).forEachBatchCheckingChainAside { info, _ in
                    seen.append(info.firstSeq)
                    return true
                }
            } catch let e as LogError { thrown = e }
            #expect(seen == batches[..<v].map(\.firstSeq), "\(context): \(seen.count) batches")
            #expect(thrown?.code == want.code && thrown?.seq == want.seq && thrown?.offset == want.offset, "\(context): \(String(describing: thrown))")
            if v > 0 {
                seen = []
                try EventLogReader(directory: log).cursor(from: 1).forEachBatchCheckingChainAside { info, _ in
                    seen.append(info.firstSeq)
                    return seen.count < v
                }
                #expect(seen == batches[..<v].map(\.firstSeq), "\(context): stopped after \(seen.count)")
            }

            let report = try EventLogReader(directory: log).verify()
            #expect(!report.ok, "\(context)")
            #expect(report.error?.code == .brokenChain && report.error?.seq == victim.firstSeq, "\(context): \(String(describing: report.error))")
            #expect(report.events == victim.firstSeq - 1 && report.head.seq == victim.firstSeq - 1, "\(context): \(report.events)")
            #expect(report.batches == UInt64(v), "\(context)")
        }
    }

    /// `forEachBatchCheckingChainAside` stops at a body that throws: what it throws comes out, and
    /// the batches already read ahead are not handed to the body.
    @Test func aThrowingBodyIsCalledNoMore() throws {
        var rng = SeededRNG(seed: 11)
        let (dir, _) = try log(&rng, batches: 40)
        struct Stop: Error {}
        for at in [0, 2, 10] {
            var calls = 0
            #expect(throws: Stop.self) {
                try EventLogReader(directory: dir.sub("log")).cursor(from: 1).forEachBatchCheckingChainAside { _, _ in
                    calls += 1
                    if calls == at + 1 { throw Stop() }
                    return true
                }
            }
            #expect(calls == at + 1, "thrown at batch \(at), called \(calls) times")
        }
    }

    /// A batch whose payload CRC fails, anywhere in a segment: `verify` reports the events, the
    /// batches, the head, the progress and the inspected batches of exactly the batches before it
    /// (the ones after it were already read, and their chain links being checked, when it failed).
    @Test func verifyCountsOnlyTheBatchesBeforeTheDamage() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("ReadAheadCursorTests verify seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        for round in 0..<8 {
            let (dir, _, log, batches) = try logAndBatches(&rng)
            let d = 1 + Int(rng.next() % UInt64(batches.count - 1))
            let damaged = batches[d]
            try damagePayload(dir, damaged, byte: 8 + Int(rng.next() % 8), mask: 0x04)
            let context = "seed \(seed), round \(round), damaged batch \(d) at seq \(damaged.firstSeq)"

            var progress: [UInt64] = []
            var inspected: [UInt64] = []
            let report = try EventLogReader(directory: log).verify(progress: { progress.append($0) },
                                                                  inspect: { info, _ in inspected.append(info.firstSeq) })
            #expect(!report.ok && report.error?.code == .payloadChecksum && report.error?.seq == damaged.firstSeq,
                    "\(context): \(String(describing: report.error))")
            let before = batches[..<d]
            #expect(report.events == damaged.firstSeq - 1 && report.batches == UInt64(d), "\(context): \(report.events) events")
            #expect(report.head == LogHead(seq: batches[d - 1].lastSeq, hash: batches[d - 1].chainHash), "\(context)")
            #expect(progress == before.map(\.lastSeq), "\(context): progress \(progress.count) calls")
            #expect(inspected == before.map(\.firstSeq), "\(context): \(inspected.count) inspected")
        }
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
