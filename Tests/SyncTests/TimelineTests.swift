import EventLog
import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import Sync
import TestSupport
import Testing

/// Syncs fixture days `days` into `store` one after the other; returns each run's outcome and ids.
func syncTimeline(_ rig: Rig, store: String, days: ClosedRange<Int> = 1...5) async throws -> [(Int, SyncOutcome, RunIds)] {
    var out: [(Int, SyncOutcome, RunIds)] = []
    for d in days {
        rig.setDay(d)
        let outcome = try await rig.sync(store: store, day: d)
        let ids = RunIds(events: try StoreReader.events(store), run: outcome.runId)
        out.append((d, outcome, ids))
    }
    return out
}

@Suite("End to end: the fixture timeline")
struct TimelineTests {
    @Test("day by day: exact counts and ids per category equal expected.json")
    func dayByDay() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        let runs = try await syncTimeline(rig, store: store)
        for (d, outcome, ids) in runs {
            let exp = Fixtures.expected(d)
            #expect(outcome.status == "completed", "day \(d): \(outcome.errors)")
            #expect(outcome.exitCode == 0)
            #expect(outcome.counts.new == exp.counts.new, "day \(d) new")
            #expect(outcome.counts.updated == exp.counts.updated, "day \(d) updated")
            #expect(outcome.counts.unchanged == exp.counts.unchanged, "day \(d) unchanged")
            #expect(outcome.counts.removed == exp.counts.removed, "day \(d) removed")
            #expect(outcome.counts.errors == 0, "day \(d) errors")
            #expect(ids.new == Set(exp.ids.new), "day \(d) new ids: extra \(ids.new.subtracting(exp.ids.new)), missing \(Set(exp.ids.new).subtracting(ids.new))")
            #expect(ids.updated == Set(exp.ids.updated), "day \(d) updated ids: extra \(ids.updated.subtracting(exp.ids.updated)), missing \(Set(exp.ids.updated).subtracting(ids.updated))")
            #expect(ids.unchanged == Set(exp.ids.unchanged), "day \(d) unchanged ids: extra \(ids.unchanged.subtracting(exp.ids.unchanged)), missing \(Set(exp.ids.unchanged).subtracting(ids.unchanged))")
            #expect(ids.removed == Set(exp.ids.removed), "day \(d) removed ids: extra \(ids.removed.subtracting(exp.ids.removed)), missing \(Set(exp.ids.removed).subtracting(ids.removed))")
            // The summary line reports the same counts.
            #expect(outcome.summaryLine.hasPrefix("\(exp.counts.new) new, \(exp.counts.updated) updated, \(exp.counts.unchanged) unchanged, \(exp.counts.removed) removed, 0 errors in "))
            #expect(outcome.summaryLine.contains("; head \(outcome.head.seq):"))
        }
        // Day 1 warns about the practitioner missing from the roster and the unknown status.
        let warnings = runs[0].1.warnings
        #expect(warnings.contains { $0.contains("64b7aa00000000000000d1ce") }, "\(warnings)")
        #expect(warnings.contains { $0.contains(Fixtures.traps["unknown_status"]!) && $0.contains("Rescheduled") }, "\(warnings)")
        // Each run starts with sync.started and ends with sync.completed, whose head_before is the head just before it.
        let events = try StoreReader.events(store)
        for (d, outcome, _) in runs {
            let mine = events.filter { $0.run == outcome.runId }
            #expect(mine.first?.type == "sync.started", "day \(d)")
            #expect(mine.last?.type == "sync.completed", "day \(d)")
            #expect(mine.last?.seq == outcome.head.seq, "day \(d)")
            let headBefore = mine.last?.data["head_before"]?.stringValue ?? ""
            #expect(headBefore.hasPrefix("\(outcome.head.seq - 1):"), "day \(d): head_before \(headBefore)")
        }
        // The views agree: removed rows are flagged, nothing else is.
        let rows = try StoreReader.appointments(store)
        let removedIds = Set(rows.filter { $0["removed"] == .bool(true) }.compactMap { $0["appointment_id"]?.stringValue })
        let allRemoved = Set(Fixtures.practice.expected.flatMap(\.ids.removed))
        #expect(removedIds == allRemoved)
        let syncLogs = try StoreReader.syncLogs(store)
        #expect(syncLogs.count == 5)
        #expect(syncLogs.allSatisfy { $0["status"] == .string("completed") && $0["sync_type"] == .string("automated_daily") })
        await rig.stop()
    }

    @Test("idempotent: the same state synced twice appends only the second run's sync events")
    func idempotentRerun() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        let first = try await rig.sync(store: store, day: 1)
        #expect(first.status == "completed" && first.counts.new == 173)
        let headAfterFirst = try StoreReader.head(store)
        let rowsAfterFirst = comparableAppointments(try StoreReader.appointments(store))

        let second = try await rig.sync(store: store, day: 1)
        #expect(second.status == "completed")
        #expect(second.counts.new == 0 && second.counts.updated == 0 && second.counts.removed == 0)
        #expect(second.counts.unchanged == 173)
        let appended = try StoreReader.events(store, from: headAfterFirst.seq + 1)
        #expect(appended.map(\.type) == ["sync.started", "sync.completed"])
        #expect(appended.allSatisfy { $0.run == second.runId })
        #expect(second.head.seq == headAfterFirst.seq + 2)
        // The views hold the same appointments (only last_synced_at moves).
        #expect(comparableAppointments(try StoreReader.appointments(store)) == rowsAfterFirst)

        // The same again on a later day of unchanged state (day 4 → day 5).
        rig.setDay(4)
        _ = try await rig.sync(store: store, day: 4)
        let before5 = try StoreReader.head(store)
        rig.setDay(5)
        let fifth = try await rig.sync(store: store, day: 5)
        #expect(fifth.counts.new == 0 && fifth.counts.updated == 0 && fifth.counts.removed == 0)
        #expect(try StoreReader.events(store, from: before5.seq + 1).map(\.type) == ["sync.started", "sync.completed"])
        await rig.stop()
    }
}
