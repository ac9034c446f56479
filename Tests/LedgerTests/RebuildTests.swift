import EventLog
import Foundation
import GRDB
import IntakeQ
import Ledger
import Projections
import TestSupport
import Testing

@Suite struct RebuildTests {
    @Test func rebuildFromScratchEqualsIncrementalApplication() throws {
        let tmp = try TempStore()
        let views = try ProjectionStore(store: tmp.store)
        var batches = 0
        try Golden.write(tmp.store) { _ in
            try views.catchUp(try LedgerReader(store: tmp.store))
            batches += 1
        }
        #expect(batches == Golden.steps.count)
        let incremental = try snapshot(views)
        #expect(incremental.appointments.count == 7)

        let reader = try LedgerReader(store: tmp.store)
        let report = try views.rebuild(names: [], reader)
        #expect(Set(report.rebuilt) == Set(allProjections.map(\.name)))
        #expect(report.applied == Golden.eventCount)
        let rebuilt = try snapshot(views)
        #expect(rebuilt == incremental, "rebuilt:\n\(rebuilt)\nincremental:\n\(incremental)")

        // And a fresh database folded in one catch-up, with tiny transactions.
        let other = try ProjectionStore(path: tmp.sibling("other.sqlite"))
        other.eventsPerTransaction = 1
        try other.catchUp(reader)
        #expect(try snapshot(other) == incremental)
        try GoldenExpect.check(rebuilt, reader: reader)
    }

    @Test func rebuildOfOneProjectionLeavesTheOthersAndEqualsIncremental() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(reader)
        let before = try snapshot(views)
        let report = try views.rebuild(names: ["meeting_urls"], reader)
        #expect(report.rebuilt == ["meeting_urls"])
        #expect(try snapshot(views) == before)
        #expect(throws: LedgerError.self) { try views.rebuild(names: ["nope"], reader) }
    }

    /// One projection rebuilt into a new views database: the views that hold nothing yet are
    /// rebuilt with it (rather than folded from the first event by the catch-up after the swap),
    /// the report says so, and the views are what a rebuild of all makes. Once they hold the log,
    /// the same call rebuilds the named one only.
    @Test func rebuildOfOneProjectionIntoANewViewsDatabaseRebuildsTheEmptyOnesWithIt() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        let report = try views.rebuild(names: ["stream_index"], reader)
        #expect(Set(report.rebuilt) == Set(allProjections.map(\.name)), "\(report.rebuilt)")
        let others = allProjections.map(\.name).filter { $0 != "stream_index" }
        #expect(report.notes == ["\(others.joined(separator: ", ")) held nothing yet: rebuilt with stream_index, "
                                 + "faster than folding them from the first event afterwards"], "\(report.notes)")
        #expect(try views.appliedSeq() == reader.head().seq)
        #expect(try snapshot(views) == cleanSnapshot(tmp.store, scratch: tmp.sibling("clean.sqlite")))
        #expect(try views.differences(from: ProjectionStore(path: tmp.sibling("clean.sqlite"))).total == 0)

        let again = try views.rebuild(names: ["stream_index"], reader)
        #expect(again.rebuilt == ["stream_index"])
        #expect(again.notes.isEmpty, "\(again.notes)")

        // A view new to this version beside others at the head: only it joins the rebuild.
        let beside = tmp.sibling("beside.sqlite")
        try ProjectionStore(path: beside, projections: allProjections.filter { $0.name != "locations" }).catchUp(reader)
        let upgraded = try ProjectionStore(path: beside)
        let added = try upgraded.rebuild(names: ["meeting_urls"], reader)
        #expect(added.rebuilt == ["meeting_urls", "locations"] || added.rebuilt == ["locations", "meeting_urls"], "\(added.rebuilt)")
        #expect(added.notes == ["locations held nothing yet: rebuilt with meeting_urls, faster than folding them from the first event afterwards"],
                "\(added.notes)")
        #expect(try snapshot(upgraded) == cleanSnapshot(tmp.store, scratch: tmp.sibling("clean2.sqlite")))
    }

    /// A fold stopped between batches (the process died with some transactions committed),
    /// then caught up: every event applied exactly once.
    @Test func crashBetweenBatchesThenCatchUpAppliesEachEventOnce() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store, steps: 0..<4)
        let viewsPath = tmp.store.projectionsPath
        try ProjectionStore(path: viewsPath).catchUp(try LedgerReader(store: tmp.store))
        try Golden.write(tmp.store, steps: 4..<Golden.steps.count)

        // Fold the rest one batch per transaction, and "crash" at seq 19 (the removal of a3):
        // batches through seq 16 are committed, the one holding 17–19 is not.
        let crashing = allProjections.map { p -> any Projection in
            p.name == "locations" ? FailingProjection(inner: p, failAt: 19) : p
        }
        let first = try ProjectionStore(path: viewsPath, projections: crashing)
        first.eventsPerTransaction = 1
        #expect(throws: FailingProjection.Boom.self) { try first.catchUp(try LedgerReader(store: tmp.store)) }
        #expect(try first.appliedSeq() == 16)
        let mid = try snapshot(first)
        #expect(mid.appointments.first { $0["appointment_id"] == "a1" }?["version"] == 2)

        // Restart with the real projections: catch up from the checkpoints.
        let views = try ProjectionStore(path: viewsPath)
        let report = try views.catchUp(try LedgerReader(store: tmp.store))
        #expect(report.rebuilt.isEmpty)
        #expect(report.applied == Golden.eventCount - 16)
        #expect(try views.appliedSeq() == Golden.eventCount)
        let clean = try cleanSnapshot(tmp.store, scratch: tmp.sibling("clean.sqlite"))
        #expect(try snapshot(views) == clean)
        try GoldenExpect.check(try snapshot(views), reader: try LedgerReader(store: tmp.store))
    }

    /// Projections whose checkpoints differ (one ran ahead alone) catch up without applying
    /// anything twice.
    @Test func projectionsAtDifferentCheckpointsCatchUpExactlyOnce() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store, steps: 0..<9)
        let viewsPath = tmp.store.projectionsPath
        try ProjectionStore(path: viewsPath, projections: [AppointmentsProjection()]).catchUp(try LedgerReader(store: tmp.store))
        try Golden.write(tmp.store, steps: 9..<Golden.steps.count)
        let views = try ProjectionStore(path: viewsPath)
        try views.catchUp(try LedgerReader(store: tmp.store))
        let clean = try cleanSnapshot(tmp.store, scratch: tmp.sibling("clean.sqlite"))
        #expect(try snapshot(views) == clean)
    }

    /// The log lost a tail the views had seen (cut off, or the log restored from an older copy):
    /// the views' checkpoint is evidence of acknowledged events, so catch-up refuses instead of
    /// rebuilding the views down to the shorter log; an explicit rebuild (what `repair
    /// --accept-loss` does once the loss is recorded) then folds the log as it is.
    @Test func lostTailIsRefusedNotRebuiltDownTo() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store, steps: 0..<7)
        let shortStore = try TempStore()
        try copyTree(tmp.store.logPath, shortStore.store.logPath)  // the log as it was at seq 15
        try Golden.write(tmp.store, steps: 7..<Golden.steps.count)
        let full = try ProjectionStore(store: tmp.store)
        try full.catchUp(try LedgerReader(store: tmp.store))
        #expect(try full.appliedSeq() == Golden.eventCount)

        // The views that saw seq 25 meet a log that ends at 15.
        try copyViews(full, to: shortStore.store.projectionsPath)
        let views = try ProjectionStore(store: shortStore.store)
        let reader = try LedgerReader(store: shortStore.store)
        #expect(try reader.head().seq == 15)
        let before = try snapshot(views)
        do {
            try views.catchUp(reader)
            Issue.record("catch-up accepted a log that ends before the views' checkpoint")
        } catch let e as LedgerError {
            #expect(e.message.contains("the log ends at seq 15 but seq \(Golden.eventCount) was acknowledged"), "\(e.message)")
            #expect(e.message.contains("repair --accept-loss"), "\(e.message)")
        }
        #expect(try views.appliedSeq() == Golden.eventCount)
        #expect(try snapshot(views) == before)

        _ = try views.rebuild(names: [], reader)
        #expect(try views.appliedSeq() == 15)
        let clean = try cleanSnapshot(shortStore.store, scratch: shortStore.sibling("clean.sqlite"))
        #expect(try snapshot(views) == clean)
        #expect(try snapshot(views).appointments.first { $0["appointment_id"] == "a3" }?["removed"] == false)
    }

    /// Same length or longer, but a different history after the views' checkpoint.
    @Test func divergedHistoryIsRefusedByTheChainHash() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store, steps: 0..<7)
        let forked = try TempStore()
        try copyTree(tmp.store.logPath, forked.store.logPath)
        try Golden.write(tmp.store, steps: 7..<9)  // through seq 19
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(try LedgerReader(store: tmp.store))
        // The fork appends other batches after seq 15, with its own boundaries, past seq 19.
        let clock = ManualClock(goldenBase + 50_000)
        let w = try makeWriter(forked.store, clock: clock)
        try w.append([startedEvent("run-x", type: "webhook", by: "webhook")])
        try w.append([removedEvent("a4", reason: "not_found", run: "run-x"), changed(Golden.a2Canceled, run: "run-x", fields: ["Status"])])
        try w.append([removedEvent("a5", reason: "not_found", run: "run-x"), removedEvent("a6", reason: "not_found", run: "run-x"),
                      removedEvent("a7", reason: "not_found", run: "run-x")])
        w.close()
        try copyViews(views, to: forked.store.projectionsPath)
        let forkViews = try ProjectionStore(store: forked.store)
        let reader = try LedgerReader(store: forked.store)
        #expect(try reader.head().seq == 21)
        do {
            try forkViews.catchUp(reader)
            Issue.record("catch-up accepted a log whose chain differs at the views' checkpoint")
        } catch let e as LedgerError {
            // The fork's log holds its own writer's record (state/head): the views, copied from
            // the other store, are named as the likeliest odd one, the log replaced as the other
            // reading; still refused.
            #expect(e.message.contains("names another history at seq 19") && e.message.contains("another store's")
                    && e.message.contains("If instead the log and state/head were both replaced"), "\(e.message)")
        }
        _ = try forkViews.rebuild(names: [], reader)
        let clean = try cleanSnapshot(forked.store, scratch: forked.sibling("clean.sqlite"))
        #expect(try snapshot(forkViews) == clean)
        let a3 = try #require(clean.appointments.first { $0["appointment_id"] == "a3" })
        #expect(a3["removed"] == false)
    }

    @Test func schemaVersionChangeIsNotedAndRebuilt() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        try ProjectionStore(store: tmp.store).catchUp(reader)
        let before = try snapshot(try ProjectionStore(store: tmp.store))

        let bumped = allProjections.map { p -> any Projection in
            p.name == "sync_logs" ? BumpedProjection(inner: p, schemaVersion: p.schemaVersion + 1) : p
        }
        let views = try ProjectionStore(store: tmp.store, projections: bumped)
        let report = try views.catchUp(reader)
        #expect(report.rebuilt == ["sync_logs"])
        #expect(report.notes.count == 1)
        let current = SyncLogsProjection().schemaVersion
        #expect(report.notes.first?.contains("schema version \(current)") == true, "\(report.notes)")
        #expect(report.notes.first?.contains("version \(current + 1)") == true)
        #expect(try snapshot(views) == before)
        let stored = try views.readSync { try Int.fetchOne($0, sql: "SELECT schema_version FROM projection_state WHERE name = 'sync_logs'") }
        #expect(stored == current + 1)
        // Once rebuilt, nothing more to say.
        let again = try views.catchUp(reader)
        #expect(again.notes.isEmpty && again.rebuilt.isEmpty)
    }

    @Test func badEventIsQuarantinedWithItsSeqAndTheRebuildGoesOn() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        // One batch after the golden sequence: a run starts, two unusable discoveries (an object
        // without Id, no object at all), then a good one that must still be applied.
        let clock = ManualClock(goldenBase + 60_000)
        let w = try makeWriter(tmp.store, clock: clock)
        let a8 = appointmentObject("a8", client: 7001, clientName: "Drew Park", status: "Confirmed",
                                   start: "2026-11-29T10:00:00.000Z", minutes: 30)
        try w.append([
            startedEvent("run-9", type: "webhook", by: "webhook"),                                            // 26
            NewEvent(type: .appointmentDiscovered, run: "run-9", stream: Streams.appointment("bad-1"),      // 27
                     data: Array(#"{"appointment_id":"bad-1","content_hash":"x","object":{"ClientId":4127,"Status":"Confirmed"}}"#.utf8)),
            NewEvent(type: .appointmentDiscovered, run: "run-9", stream: Streams.appointment("bad-2"),      // 28
                     data: Array(#"{"appointment_id":"bad-2","content_hash":"y"}"#.utf8)),
            discovered(a8, run: "run-9"),                                                                     // 29
        ])
        w.close()
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        let expectedProjections: Set<String> = ["appointments", "meeting_urls", "locations"]

        // Incremental catch-up: quarantined, not aborted.
        let first = try views.catchUp(reader)
        #expect(Set(first.quarantined.map(\.seq)) == [27, 28])
        #expect(try views.quarantine().count == 2 * expectedProjections.count)
        let incremental = try snapshot(views)
        // Rebuild: the same, and the quarantine table is replaced, not duplicated.
        let report = try views.rebuild(names: [], reader)
        #expect(report.quarantined.count == 2 * expectedProjections.count)
        let q = try views.quarantine()
        #expect(q.count == 2 * expectedProjections.count, "\(q)")
        #expect(Set(q.map(\.seq)) == [27, 28])
        #expect(Set(q.map(\.projection)) == expectedProjections)
        #expect(q.allSatisfy { $0.type == "appointment.discovered" && !$0.error.isEmpty })
        #expect(try views.appliedSeq() == 29)
        var snap = try snapshot(views)
        #expect(snap == incremental)
        #expect(snap.streams.count == 29, "the stream index still records the bad events")
        // The good events around the bad ones were applied.
        let row8 = try #require(snap.appointments.first { $0["appointment_id"] == "a8" })
        #expect(row8["last_seq"] == 29)
        #expect(row8["organization_id"] == "hope")
        #expect(snap.syncLogs.first?["id"] == "run-9")
        // Everything else is exactly the golden rows.
        snap.appointments.removeAll { $0["appointment_id"] == "a8" }
        snap.locations.removeAll { $0["appointment_id"] == "a8" }
        snap.patients.removeAll { $0[0] == "a8" }
        snap.syncLogs.removeAll { $0["id"] == "run-9" }
        snap.streams.removeAll { Int($0[1])! > 25 }
        try GoldenExpect.check(snap, reader: reader)
    }
}

@Suite struct ShadowRebuildTests {
    /// While a rebuild folds into shadow tables, readers of the live tables see the old,
    /// complete rows; after the swap, the new ones.
    @Test func readersSeeTheOldCompleteRowsDuringARebuild() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store, steps: 0..<7)
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(try LedgerReader(store: tmp.store))
        let old = try snapshot(views)
        try Golden.write(tmp.store, steps: 7..<Golden.steps.count)  // not caught up: the rebuild brings these

        views.eventsPerTransaction = 1
        var calls = 0
        var mismatches: [String] = []
        let progress: (FoldProgress) -> Void = { p in
            calls += 1
            do {
                // A plain read of the live tables, between two shadow transactions.
                let live = try views.pool.read { db in
                    (try Views.appointments(db, AppointmentFilter()), try Views.syncLogs(db, limit: nil, type: nil),
                     try Views.meetingURLs(db, AppointmentFilter()), try Views.locations(db, AppointmentFilter()),
                     try Int.fetchOne(db, sql: "SELECT count(*) FROM event_streams"))
                }
                if live.0 != old.appointments { mismatches.append("appointments at \(p.appliedEvents)") }
                if live.1 != old.syncLogs { mismatches.append("sync_logs at \(p.appliedEvents)") }
                if live.2 != old.meetingURLs { mismatches.append("meeting_urls at \(p.appliedEvents)") }
                if live.3 != old.locations { mismatches.append("locations at \(p.appliedEvents)") }
                if live.4 != old.streams.count + old.observations.count { mismatches.append("event_streams at \(p.appliedEvents)") }
            } catch {
                mismatches.append("read failed: \(error)")
            }
        }
        let reader = try LedgerReader(store: tmp.store)
        _ = try views.rebuild(names: [], reader, progress: progress)
        #expect(calls >= Golden.steps.count, "one shadow transaction per batch")
        #expect(mismatches.isEmpty, "\(mismatches)")
        try GoldenExpect.check(try snapshot(views), reader: reader)
    }

    /// A reader that opened its transaction before the swap keeps its consistent view through it.
    @Test func aReaderInTheMiddleOfAQueryKeepsItsView() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store, steps: 0..<7)
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(try LedgerReader(store: tmp.store))
        let old = try snapshot(views).appointments
        try Golden.write(tmp.store, steps: 7..<Golden.steps.count)

        let opened = DispatchSemaphore(value: 0)
        let swapped = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        let box = Locked<(first: [ViewRow]?, second: [ViewRow]?, error: String?)>((nil, nil, nil))
        let thread = Thread {
            do {
                try views.pool.read { db in
                    let first = try Views.appointments(db, AppointmentFilter())
                    opened.signal()
                    _ = swapped.wait(timeout: .now() + 20)
                    let second = try Views.appointments(db, AppointmentFilter())
                    box.value = (first, second, nil)
                }
            } catch {
                box.withLock { $0.error = "\(error)" }
                opened.signal()
            }
            finished.signal()
        }
        thread.start()
        #expect(opened.wait(timeout: .now() + 20) == .success)
        _ = try views.rebuild(names: ["appointments"], try LedgerReader(store: tmp.store))
        swapped.signal()
        #expect(finished.wait(timeout: .now() + 20) == .success)
        let (first, second, error) = box.value
        #expect(error == nil)
        #expect(first == old)
        #expect(second == old, "the reader's snapshot changed under it")
        let now = try views.readSync { try Views.appointments($0, AppointmentFilter()) }
        #expect(now != old)
        #expect(now.first { $0["appointment_id"] == "a3" }?["removed"] == true)
    }

    /// An interrupted rebuild (an error mid-fold) leaves the live views exactly as they were,
    /// and the next rebuild still works.
    @Test func interruptedRebuildLeavesTheLiveViewsUntouched() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(reader)
        let before = try snapshot(views)
        let stateBefore = try views.readSync { try Row.fetchAll($0, sql: "SELECT name, schema_version, last_seq, last_hash FROM projection_state ORDER BY name") }

        // The progress callback cannot throw (it is `(FoldProgress) -> Void`), so the rebuild
        // is interrupted by a projection that fails mid-fold, after some transactions committed.
        for victim in ["appointments", "sync_logs"] {
            let failing = allProjections.map { p -> any Projection in
                p.name == victim ? FailingProjection(inner: p, failAt: 18) : p
            }
            let broken = try ProjectionStore(store: tmp.store, projections: failing)
            broken.eventsPerTransaction = 2
            var progressed = 0
            #expect(throws: FailingProjection.Boom.self) {
                try broken.rebuild(names: [victim], reader) { _ in progressed += 1 }
            }
            #expect(progressed > 0, "some shadow transactions committed before the failure")
            #expect(try snapshot(views) == before)
            let stateAfter = try views.readSync { try Row.fetchAll($0, sql: "SELECT name, schema_version, last_seq, last_hash FROM projection_state ORDER BY name") }
            #expect(stateAfter == stateBefore)
        }
        let report = try views.rebuild(names: [], reader)
        #expect(report.rebuilt.count == allProjections.count)
        #expect(try snapshot(views) == before)
        let leftovers = try views.readSync { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE name LIKE '%__shadow'") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }
}
