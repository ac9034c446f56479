import Domain
import Foundation
import GRDB
import Projections
import Service
import TestSupport
import Testing

/// `HealthSnapshot` reads sums from `sync_log_totals` and a few rows per type through indexes;
/// what it says must be what every row of `sync_logs` says, counted here one by one.
@Suite struct HealthSnapshotTests {
    struct Run {
        var id: String, type: String, status: String, startedAt: Int64, completedAt: Int64?
        var new: Int, updated: Int, removed: Int, errors: Int, calls: Int, retries: Int, waits: Int
        var startSeq: Int?, endSeq: Int?
    }

    @Test func theSnapshotSaysWhatEveryRunSays() throws {
        let seed = ProcessInfo.processInfo.environment["HEALTH_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64(UInt32.max))
        print("HealthSnapshotTests seed: \(seed) (HEALTH_SEED=\(seed) replays it)")
        var rng = SeededRNG(seed: seed)
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        let base = try #require(ISOTime.parse("2026-11-01T00:00:00Z"))
        let db = try DatabaseQueue()
        try db.write { try SyncLogsProjection().create($0, .live) }
        var runs: [String: Run] = [:]
        for step in 0..<400 {
            let id = "run-\(step)"
            var r = Run(id: id, type: pick(["automated_daily", "manual_org_bulk", "webhook", "backfill"]),
                        status: pick(["completed", "completed", "partial_success", "failed", "in_progress"]),
                        startedAt: base + Int64(step) * 60_000 + Int64(rng.next() % 1000), completedAt: nil,
                        new: Int(rng.next() % 7), updated: Int(rng.next() % 4), removed: Int(rng.next() % 2),
                        errors: Int(rng.next() % 3), calls: Int(rng.next() % 30), retries: Int(rng.next() % 3),
                        waits: Int(rng.next() % 2), startSeq: step * 10 + 1, endSeq: nil)
            if r.status != "in_progress" {
                r.completedAt = rng.next() % 5 == 0 ? nil : r.startedAt + 5_000
                r.endSeq = rng.next() % 7 == 0 ? nil : step * 10 + 1 + Int(rng.next() % 9)
            }
            if rng.next() % 6 == 0 { r.startSeq = nil }
            let metadata = r.status == "in_progress" ? "{}"
                : "{\"intakeq_api_calls\":\(r.calls),\"retries\":\(r.retries),\"rate_limit_waits\":\(r.waits)}"
            if r.status == "in_progress" { (r.calls, r.retries, r.waits) = (0, 0, 0) }
            try db.write { db in
                try db.execute(sql: """
                    INSERT INTO sync_logs (id, sync_type, started_at, completed_at, status, appointments_new, appointments_updated,
                      appointments_removed, appointments_errors, metadata, start_seq, end_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [r.id, r.type, ISOTime.format(millis: r.startedAt), r.completedAt.map { ISOTime.format(millis: $0) },
                                     r.status, r.new, r.updated, r.removed, r.errors, metadata, r.startSeq, r.endSeq])
                // Now and then an earlier run changes (finishes, fails) or goes.
                if step % 9 == 4, var old = runs.values.sorted(by: { $0.id < $1.id }).first(where: { $0.status == "in_progress" }) {
                    old.status = pick(["completed", "failed"])
                    try db.execute(sql: "UPDATE sync_logs SET status = ?, appointments_new = 3 WHERE id = ?", arguments: [old.status, old.id])
                    old.new = 3
                    runs[old.id] = old
                }
                if step % 13 == 7, let gone = runs.keys.sorted().first {
                    try db.execute(sql: "DELETE FROM sync_logs WHERE id = ?", arguments: [gone])
                    runs[gone] = nil
                }
            }
            runs[id] = r
        }
        let now = base + 400 * 60_000
        // Views of schema version 1 (no totals yet, as a server reads them while its first
        // catch-up rebuilds them) must say the same.
        let v1 = try DatabaseQueue()
        try db.backup(to: v1)
        try v1.write { try $0.execute(sql: "DROP TABLE sync_log_totals") }
        for (died, source) in [(false, db), (true, db), (false, v1), (true, v1)] {
            let s = try source.read { try HealthSnapshot.read($0, now: now, treatInProgressAsFailed: died) }
            let counted = runs.values.filter { died || $0.status != "in_progress" }
            func status(_ r: Run) -> String { r.status == "in_progress" ? "failed" : r.status }
            var runCounts: [String: [String: Int]] = [:]
            var events: [String: Int] = [:]
            for r in counted {
                runCounts[r.type, default: [:]][status(r), default: 0] += 1
                events[r.type, default: 0] += r.startSeq.flatMap { a in r.endSeq.map { $0 - a + 1 } } ?? 0
            }
            let what = "seed \(seed), treatInProgressAsFailed \(died), \(source === v1 ? "no totals" : "totals")"
            #expect(s.runCounts == runCounts, "\(what)")
            #expect(s.eventsAppended.filter { $0.value != 0 } == events.filter { $0.value != 0 }, "\(what)")
            #expect(s.appointmentsNew == counted.map(\.new).reduce(0, +), "\(what)")
            #expect(s.appointmentsUpdated == counted.map(\.updated).reduce(0, +), "\(what)")
            #expect(s.appointmentsRemoved == counted.map(\.removed).reduce(0, +), "\(what)")
            #expect(s.intakeqCalls == counted.map(\.calls).reduce(0, +), "\(what)")
            #expect(s.intakeqRetries == counted.map(\.retries).reduce(0, +), "\(what)")
            #expect(s.rateLimitWaits == counted.map(\.waits).reduce(0, +), "\(what)")
            #expect(s.firstRunAt == (counted.isEmpty ? Array(runs.values) : counted).map(\.startedAt).min(), "\(what)")
            for type in Set(runs.values.map(\.type)) {
                let newest = counted.filter { $0.type == type }.sorted { $0.startedAt > $1.startedAt }
                let h = try #require(s.types[type], "\(what), \(type)")
                #expect(h.lastRunId == newest.first?.id, "\(what), \(type)")
                #expect(h.lastStatus == newest.first.map(status), "\(what), \(type)")
                #expect(h.partialStreak == newest.prefix { $0.status == "partial_success" }.count, "\(what), \(type)")
                let success = runs.values.filter { $0.type == type && ["completed", "partial_success"].contains($0.status) }
                    .max { $0.startedAt < $1.startedAt }
                #expect(h.lastSuccessAt == success.map { $0.completedAt ?? $0.startedAt }, "\(what), \(type)")
            }
        }
    }
}
