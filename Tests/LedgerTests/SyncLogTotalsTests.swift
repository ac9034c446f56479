import Domain
import Foundation
import GRDB
import Ledger
import Projections
import TestSupport
import Testing

/// `sync_log_totals` (what `/metrics`, the alerts and `status` read instead of every run) must
/// equal the sums over `sync_logs` after any mix of runs: in the views folded one catch-up at a
/// time, in views a rebuild filled and renamed into place (whose triggers SQLite rewrote), and
/// in those once more caught up after it.
@Suite struct SyncLogTotalsTests {
    static func totals(_ views: ProjectionStore) throws -> (kept: [[String]], summed: [[String]]) {
        try views.readSync { db in
            func rows(_ sql: String) throws -> [[String]] {
                try Row.fetchAll(db, sql: "SELECT * FROM (\(sql)) ORDER BY sync_type, status").map { row in
                    row.databaseValues.map { "\($0)" }
                }
            }
            return (try rows("SELECT * FROM sync_log_totals"), try rows(SyncLogsProjection.totalsQuery))
        }
    }

    /// Runs of every kind, appended in `rounds` bursts: completed, partial and failed runs with
    /// counts and API calls, runs left in progress, abandoned ones, a run id started again after it
    /// finished (its row replaced), a completion for a run never started, a second completion.
    static func appendRuns(_ store: Store, seed: UInt64, round: Int) throws {
        var rng = SeededRNG(seed: seed &+ UInt64(round))
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        let clock = ManualClock(goldenBase + Int64(round) * 100_000_000)
        let writer = try makeWriter(store, clock: clock)
        defer { writer.close() }
        var finished: [String] = []
        var open: [String] = []
        for step in 0..<40 {
            clock.millis += 60_000
            let r = "run-\(round)-\(step)"
            var events: [NewEvent] = []
            switch rng.next() % 10 {
            case 0 where !finished.isEmpty:
                // The same run id started again: its row is replaced, its old sums taken out.
                let again = pick(finished)
                events.append(startedEvent(again, type: pick(HealthRows.types)))
                open.append(again)
            case 1 where !open.isEmpty:
                let o = open.removeFirst()
                events.append(NewEvent(type: .syncAbandoned, run: o, stream: Streams.syncRun(o),
                                       data: encodeData(SyncAbandoned(abandonedRun: o, reason: "never completed"))))
            case 2:
                events.append(completedEvent("never-started-\(round)-\(step)", writer: writer, new: 5, calls: 7))
            case 3 where !finished.isEmpty:
                events.append(completedEvent(pick(finished), writer: writer, new: 1, updated: 2, calls: 11, status: "failed"))
            default:
                events.append(startedEvent(r, type: pick(HealthRows.types)))
                if rng.next() % 4 == 0 {
                    open.append(r)
                } else {
                    events.append(completedEvent(r, writer: writer, new: Int(rng.next() % 9), updated: Int(rng.next() % 5),
                                                 removed: Int(rng.next() % 3), calls: Int(rng.next() % 20),
                                                 status: pick(["completed", "partial_success", "failed"])))
                    finished.append(r)
                }
            }
            _ = try writer.append(events)
        }
    }

    @Test func theTotalsAreTheSumsOfTheRunsAfterCatchUpsAndRebuilds() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("SyncLogTotalsTests seed: \(seed)")
        let tmp = try TempStore()
        let incremental = try ProjectionStore(path: tmp.sibling("incremental.sqlite"))
        incremental.eventsPerTransaction = 3
        for round in 0..<3 {
            try Self.appendRuns(tmp.store, seed: seed, round: round)
            try incremental.catchUp(try LedgerReader(store: tmp.store))
            let t = try Self.totals(incremental)
            #expect(t.kept == t.summed, "seed \(seed), round \(round)")
        }
        let rebuilt = try ProjectionStore(path: tmp.sibling("rebuilt.sqlite"))
        try rebuilt.catchUp(try LedgerReader(store: tmp.store))
        _ = try rebuilt.rebuild(names: ["sync_logs"], try LedgerReader(store: tmp.store))
        var t = try Self.totals(rebuilt)
        #expect(t.kept == t.summed, "seed \(seed), rebuilt")
        #expect(t.kept.count >= 6, "seed \(seed): the runs should cover several types and statuses (\(t.kept))")
        #expect(t.kept == (try Self.totals(incremental)).kept, "seed \(seed)")
        // The rebuilt tables' triggers keep counting.
        try Self.appendRuns(tmp.store, seed: seed, round: 3)
        try rebuilt.catchUp(try LedgerReader(store: tmp.store))
        t = try Self.totals(rebuilt)
        #expect(t.kept == t.summed, "seed \(seed), caught up after the rebuild")
        let inProgress = try rebuilt.readSync { try Int.fetchOne($0, sql: "SELECT count(*) FROM sync_logs WHERE status = 'in_progress'") }
        #expect((inProgress ?? 0) > 0, "seed \(seed): some runs should be left in progress")
    }
}

/// The sync types the random runs use.
enum HealthRows {
    static let types = ["automated_daily", "manual_org_bulk", "manual_patient", "webhook"]
}
