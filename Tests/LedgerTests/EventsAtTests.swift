import EventLog
import Foundation
import Ledger
import TestSupport
import Testing

/// `LedgerReader.events(at:)` (history, as-of and `changes` read through it) reads only the
/// batches holding the seqs asked for and decodes only those lines of them.
@Suite struct EventsAtTests {
    /// For random sets of seqs (repeated ones, ones past the head, 0), the events a full read
    /// gives at those seqs, in seq order, each once.
    @Test func givesTheEventsAFullReadGivesAtThoseSeqs() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("EventsAtTests seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        let tmp = try TempStore()
        let writer = try makeWriter(tmp.store, clock: ManualClock())
        for b in 0..<40 {
            let run = "run-\(b)"
            try writer.append((0...rng.below(30)).map { _ in startedEvent(run, type: "manual") })
        }
        writer.close()
        let reader = try LedgerReader(store: tmp.store)
        var all: [EventEnvelope] = []
        try reader.forEachEvent { all.append($0); return true }
        let head = UInt64(all.count)
        #expect(head > 100, "seed \(seed)")
        for _ in 0..<40 {
            var seqs = (0..<(1 + rng.below(25))).map { _ in UInt64(1 + rng.below(Int(head))) }
            if rng.chance(0.3) { seqs.append(seqs[0]) }
            if rng.chance(0.2) { seqs.append(head + 1 + UInt64(rng.below(5))) }
            if rng.chance(0.1) { seqs.append(0) }
            let expected = Set(seqs).sorted().filter { $0 >= 1 && $0 <= head }.map { all[Int($0) - 1] }
            let got = try reader.events(at: seqs.shuffled(using: &rng))
            #expect(got.map(\.seq) == expected.map(\.seq), "seed \(seed): \(seqs)")
            #expect(got.map(\.id) == expected.map(\.id) && got == expected, "seed \(seed)")
        }
        #expect(try reader.events(at: []).isEmpty)
        #expect(try reader.events(at: all.map(\.seq)).map(\.id) == all.map(\.id))
    }

    /// A line of the same batch that is not asked for is not decoded: one that does not decode
    /// fails only a lookup that asks for it (it failed every lookup in its batch before).
    @Test func decodesOnlyTheLinesAskedFor() throws {
        let source = try TempStore()
        let writer = try makeWriter(source.store, clock: ManualClock())
        _ = try writer.append((0..<3).map { _ in startedEvent("run", type: "manual") })
        writer.close()
        let cursor = try EventLogReader(directory: source.store.logPath).cursor(from: 1)
        var lines: [[UInt8]] = []
        while let r = try cursor.next() { lines.append(Array(r.payload)) }
        #expect(lines.count == 3)

        // The same three lines in one batch, the second one not an envelope.
        let tmp = try TempStore()
        let log = try EventLogWriter.open(directory: tmp.store.logPath, options: LogOptions(fsync: false))
        _ = try log.append([lines[0], Array(#"{"not":"an envelope"}"#.utf8), lines[2]])
        log.close()
        let reader = try LedgerReader(store: tmp.store)
        let got = try reader.events(at: [1, 3])
        #expect(got.map(\.seq) == [1, 3])
        #expect(got.map(\.id) == [try EventEnvelope.decode(lines[0][...]).id, try EventEnvelope.decode(lines[2][...]).id])
        #expect(throws: LedgerError.self) { _ = try reader.events(at: [2]) }
    }
}
