import EventLog
import Foundation
import GRDB
import Ledger
@testable import PostgresSink
import Projections
import TestSupport
import Testing

/// The PostgreSQL sink's catch-up ships the keys the events after its checkpoint touched. It finds
/// them in the log or in the SQLite stream index; both must give the same keys for every range.
@Suite struct SinkDeltaTests {
    @Test func theStreamIndexGivesTheKeysTheLogGives() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("SinkDeltaTests seed: \(seed)")
        for round in 0..<2 {
            let seed = seed &+ UInt64(round)
            let tmp = try TempStore()
            // The random log of the chunked fold's tests: rosters, settings, abandoned runs, runs
            // with unchanged lists, removals, unreadable events, sealed personal data.
            // Every fifth append, the views catch up and every range from one of the last dozen
            // batch boundaries (and from the start) to the head is compared.
            let views = try ProjectionStore(store: tmp.store)
            var boundaries: [UInt64] = [0]
            var specific = 0, compared = 0
            try ChunkedFoldTests.randomLog(tmp.store, seed: seed, appends: 150) { step in
                let reader = try LedgerReader(store: tmp.store)
                let head = try reader.head().seq
                defer { boundaries.append(head) }
                guard step % 5 == 4 else { return }
                let snap = try ViewsSnapshot(reader: reader, views: views)
                #expect(snap.streamIndexReady)
                for after in [0] + boundaries.suffix(12) where after < snap.seq {
                    let fromLog = try snap.delta(after: after, from: .log)
                    let fromIndex = try snap.delta(after: after, from: .streamIndex)
                    #expect(fromLog == fromIndex, "seed \(seed), (\(after), \(snap.seq)]: log \(fromLog), index \(fromIndex)")
                    compared += 1
                    if !fromLog.allAppointments && !fromLog.appointmentIds.isEmpty && !fromLog.runIds.isEmpty { specific += 1 }
                }
            }
            #expect(compared > 300)
            #expect(specific > 5, "seed \(seed): ranges with specific keys were compared (\(specific))")
        }
    }

    /// A patient forgotten ships every appointment (not the runs); a recorded loss ships
    /// everything — from either source.
    @Test func eventsThatTouchEveryRowShipEverythingFromEitherSource() throws {
        let tmp = try TempStore()
        try ChunkedFoldTests.randomLog(tmp.store, seed: 7, appends: 30)
        let views = try ProjectionStore(store: tmp.store)
        func snapshot() throws -> ViewsSnapshot { try ViewsSnapshot(reader: try LedgerReader(store: tmp.store), views: views) }
        let before = try snapshot().seq
        let writer = try makeWriter(tmp.store, clock: ManualClock(goldenBase + 60_000))
        defer { writer.close() }
        let forgotten = PatientForgotten(patientId: "p-018", forgottenAt: "2026-12-01T00:00:00.000Z", reason: "consent withdrawn")
        _ = try writer.append([NewEvent(type: .patientForgotten, run: nil, stream: Streams.patient("p-018"), data: encodeData(forgotten))])
        var snap = try snapshot()
        for source in ViewsSnapshot.DeltaSource.allCases {
            let d = try snap.delta(after: before, from: source)
            #expect(d.allAppointments && !d.allRuns && d.appointmentIds.isEmpty && d.runIds.isEmpty, "\(source): \(d)")
        }
        let afterForget = snap.seq
        _ = try writer.append([NewEvent(type: .lossRecorded, run: nil, stream: Streams.ledger, data: Array("{\"reason\":\"test\"}".utf8))])
        snap = try snapshot()
        for source in ViewsSnapshot.DeltaSource.allCases {
            let d = try snap.delta(after: afterForget, from: source)
            #expect(d.allAppointments && d.allRuns, "\(source): \(d)")
        }
    }

    /// The index is used for a long range and the log for a short one; a `sync.completed` the
    /// index could not read (quarantined, so its unchanged appointments are not filed) sends the
    /// catch-up back to the log, which ships every appointment.
    @Test func theSourceIsChosenByRangeAndTrust() throws {
        let tmp = try TempStore()
        try ChunkedFoldTests.randomLog(tmp.store, seed: 11, appends: 60)
        var snap = try ViewsSnapshot(reader: try LedgerReader(store: tmp.store), views: try ProjectionStore(store: tmp.store))
        #expect(try snap.deltaSource(after: 0) == .streamIndex)
        #expect(try snap.deltaSource(after: snap.seq / 2) == .streamIndex)
        #expect(try snap.deltaSource(after: snap.seq - 1) == .log, "one event of \(snap.seq)")
        let good = snap.seq
        let writer = try makeWriter(tmp.store, clock: ManualClock(goldenBase + 90_000))
        _ = try writer.append([NewEvent(type: .syncCompleted, run: "run-broken", stream: Streams.syncRun("run-broken"),
                                        data: Array("{\"status\":7}".utf8))])
        writer.close()
        snap = try ViewsSnapshot(reader: try LedgerReader(store: tmp.store), views: try ProjectionStore(store: tmp.store))
        #expect(try snap.deltaSource(after: 0) == .log, "the range holds an event the stream index quarantined")
        let d = try snap.delta(after: good, from: .log)
        #expect(d.allAppointments && d.runIds == ["run-broken"], "\(d)")
    }
}
