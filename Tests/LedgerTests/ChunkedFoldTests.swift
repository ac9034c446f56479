import Domain
import Foundation
import GRDB
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

/// The chunked fold (each chunk folded in memory, each appointment written once per chunk) must
/// give the same rows, in every table of every view, as applying the events one by one.
@Suite struct ChunkedFoldTests {
    /// A random log: rosters that move patients, settings, runs with unchanged lists (some naming
    /// appointments never seen), discoveries, changes of time, status, meeting link and location,
    /// additional clients, removals (also of unknown appointments, and re-observations after one),
    /// abandoned runs, unreadable events, personal data sealed per patient and a forgotten patient.
    static func randomLog(_ store: Store, seed: UInt64, appends: Int,
                          after: ((Int) throws -> Void)? = nil) throws {
        var rng = SeededRNG(seed: seed)
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }
        let keys = try KeyRing.open(directory: store.keysPath, create: true, environment: [:], notice: { _ in })
        let clock = ManualClock(goldenBase)
        let writer = try makeWriter(store, clock: clock)
        defer { writer.close() }
        var currentRoster = roster(movingAveryToHope: false)
        var patientOf: [String: String] = [:]
        func learn(_ r: RosterObserved) {
            currentRoster = r
            patientOf = [:]
            for p in r.organizations.flatMap(\.patients) where patientOf[p.intakeqClientId] == nil { patientOf[p.intakeqClientId] = p.id }
        }
        learn(currentRoster)
        let ids = (1...12).map { "r\($0)" }
        let clients: [Any] = [4127, 5001, "6001", 7001, 8888, NSNull()]
        let links: [Any?] = [nil, NSNull(), ["JoinUrl": "https://zoom.us/j/1"], ["JoinUrl": "https://zoom.us/j/2", "Provider": "Zoom"],
                             ["Invitation": "join https://intakeq.com/tele/x", "Provider": "IntakeQ"]]
        func object(_ id: String) -> [String: Any] {
            var extra: [String: Any?] = [
                "TelehealthInfo": pick(links),
                "LocationId": pick([nil, "1", "2", NSNull()] as [Any?]),
                "LocationName": pick([nil, "Main Office", "Video https://meet.google.com/abc-defg-hij", ""] as [Any?]),
                "PlaceOfService": pick([nil, "02", "11", "12", NSNull()] as [Any?]),
                "ClientNote": pick([nil, "see https://doxy.me/room-4", "plain note"] as [Any?]),
            ]
            if chance(25) {
                extra["AdditionalClients"] = [["ClientId": pick(clients), "ClientName": "Extra"], ["ClientId": 8888]]
            }
            let start = ISOTime.format(millis: goldenBase + Int64(rng.next() % 20) * 3_600_000)
            return appointmentObject(id, client: pick(clients), clientName: "Some One", status: pick(["Confirmed", "Canceled", "Missed", "WaitingConfirmation", "Odd"]),
                                     start: start, minutes: pick([30, 45, 60]), duration: chance(70),
                                     practitioner: pick([practitionerLee, practitionerMoss]), extra: extra)
        }
        func sealed(_ e: NewEvent) throws -> NewEvent {
            guard chance(60) else { return e }
            var e = e
            switch e.type {
            case .rosterObserved:
                e.data = try PersonalData.sealRoster(currentRoster, key: keys.key(for:))
            case .appointmentDiscovered, .appointmentChanged:
                e.data = try PersonalData.sealObservationData(e.data, patientOf: { patientOf[$0] }, key: keys.key(for:))
            default:
                break
            }
            return e
        }
        var seen: [String] = []
        var open: String?
        for step in 0..<appends {
            clock.millis = goldenBase + Int64(step) * 1000
            let run = "run-\(step / 6)"
            var events: [NewEvent] = []
            for _ in 0..<(1 + Int(rng.next() % 5)) {
                switch rng.next() % 100 {
                case 0..<4:
                    learn(roster(movingAveryToHope: chance(50)))
                    events.append(try sealed(rosterEvent(currentRoster, run: run)))
                case 4..<7:
                    var s = Golden.settings
                    if chance(50) { s["Locations"] = [["Id": "2", "Name": "Annex", "Address": "\(rng.next() % 9) Side Ave"]] }
                    events.append(NewEvent(type: .settingsObserved, run: run, stream: Streams.settings,
                                           data: SettingsObserved(contentHash: "s", object: jsonBytes(s)).encodeData()))
                case 7..<12:
                    if let o = open, chance(50) {
                        events.append(NewEvent(type: .syncAbandoned, run: run, stream: Streams.syncRun(o),
                                               data: encodeData(SyncAbandoned(abandonedRun: o, reason: "never completed"))))
                        open = nil
                    } else {
                        let r = "run-s\(step)-\(rng.next() % 1000)"
                        events.append(startedEvent(r, type: "automated_daily"))
                        open = r
                    }
                case 12..<20:
                    let r = open ?? "run-x\(step)"
                    open = nil
                    let unchanged = (0..<Int(rng.next() % 6)).map { _ in chance(85) ? pick(ids) : "never-\(rng.next() % 3)" }
                    events.append(completedEvent(r, writer: writer, unchanged: unchanged))
                case 20..<26:
                    events.append(removedEvent(chance(80) ? pick(ids) : "ghost", reason: "deleted_only", run: run))
                case 26..<28:
                    // Unreadable for the views: quarantined by both folds.
                    events.append(NewEvent(type: .appointmentChanged, run: run, stream: Streams.appointment("bad"),
                                           data: Array("{\"appointment_id\":\"bad\",\"object\":{\"NoId\":1}}".utf8)))
                case 28..<30:
                    // Filed under another appointment's stream than its data's: the stream index
                    // keeps the stream, the views the data's id (both folds).
                    let id = pick(ids)
                    if !seen.contains(id) { seen.append(id) }
                    var e = changed(object(id), run: run, fields: ["Status"])
                    e.stream = Streams.appointment(pick(ids + ["elsewhere"]))
                    events.append(e)
                default:
                    let id = pick(ids)
                    let first = !seen.contains(id)
                    if first { seen.append(id) }
                    let e = first ? discovered(object(id), run: run) : changed(object(id), run: run, fields: ["Status"])
                    events.append(try sealed(e))
                }
            }
            _ = try writer.append(events)
            try after?(step)
        }
    }

    static func quarantine(_ views: ProjectionStore) throws -> [String] {
        try views.quarantine().map { "\($0.projection) \($0.seq) \($0.error)" }.sorted()
    }

    @Test func chunkedFoldEqualsEventByEventApplication() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("ChunkedFoldTests seed: \(seed)")
        for round in 0..<3 {
            let seed = seed &+ UInt64(round)
            let tmp = try TempStore()
            // Incremental, chunked: caught up after every few appends, in tiny random chunks.
            let incremental = try ProjectionStore(path: tmp.sibling("incremental.sqlite"))
            var chunkRNG = SeededRNG(seed: seed ^ 0xC0FFEE)
            try Self.randomLog(tmp.store, seed: seed, appends: 120) { step in
                guard step % 7 == 3 else { return }
                incremental.eventsPerTransaction = 1 + Int(chunkRNG.next() % 25)
                try incremental.catchUp(try LedgerReader(store: tmp.store))
            }
            func reference() throws -> ProjectionStore {
                // Every event applied to every view one by one.
                let views = try ProjectionStore(path: tmp.sibling("reference-\(UUID().uuidString).sqlite"))
                views.chunkedFold = false
                views.eventsPerTransaction = 3
                try views.catchUp(try LedgerReader(store: tmp.store))
                return views
            }
            func expectSame(_ views: ProjectionStore, _ reference: ProjectionStore, _ what: String) throws {
                let diff = try views.differences(from: reference)
                #expect(diff.total == 0, "seed \(seed), \(what): \(diff.first.map(\.description).joined(separator: "\n"))")
                #expect(try Self.quarantine(views) == Self.quarantine(reference), "seed \(seed), \(what)")
                #expect(try snapshot(views) == snapshot(reference), "seed \(seed), \(what)")
                let totals = try SyncLogTotalsTests.totals(views)
                #expect(totals.kept == totals.summed, "seed \(seed), \(what): sync_log_totals")
            }
            incremental.eventsPerTransaction = 5
            try incremental.catchUp(try LedgerReader(store: tmp.store))
            try expectSame(incremental, try reference(), "incremental catch-up")

            // Forget one patient: their sealed parts now read as "(forgotten)".
            let keys = try KeyRing.open(directory: tmp.store.keysPath, create: false, environment: [:], notice: { _ in })
            try keys.destroyKey(for: "p-018", at: "2026-12-01T00:00:00.000Z")
            let reference = try reference()
            let reader = try LedgerReader(store: tmp.store)
            // A chunked rebuild, with chunks of every size from one event to the whole log.
            for chunk in [1, 4, 17, 100_000] {
                let rebuilt = try ProjectionStore(path: tmp.sibling("rebuilt-\(chunk).sqlite"))
                rebuilt.eventsPerTransaction = chunk
                _ = try rebuilt.rebuild(names: [], reader)
                try expectSame(rebuilt, reference, "rebuild in chunks of \(chunk)")
            }
            let fresh = try ProjectionStore(path: tmp.sibling("fresh.sqlite"))
            fresh.eventsPerTransaction = 9
            try fresh.catchUp(reader)
            try expectSame(fresh, reference, "one catch-up in chunks of 9")
            let counts = try reference.readSync { db in
                try (Int.fetchOne(db, sql: "SELECT count(*) FROM appointments")!,
                     Int.fetchOne(db, sql: "SELECT count(*) FROM appointments WHERE removed = 1")!,
                     Int.fetchOne(db, sql: "SELECT count(*) FROM appointment_meeting_urls")!)
            }
            #expect(counts.0 > 5 && counts.2 > 0, "seed \(seed): the random log should exercise the views (\(counts))")
        }
    }
}
