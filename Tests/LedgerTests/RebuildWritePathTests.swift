import Domain
import Foundation
import GRDB
import JSONCore
import Ledger
@testable import Projections
import TestSupport
import Testing

/// A rebuild writes into empty shadow tables: it skips the lookup of appointments it has not
/// written yet, and builds the secondary indexes after the load. A catch-up writes into tables
/// that already hold rows and looks every appointment up. Both bind values through SQLite's C
/// API. The two paths must give the same tables, row for row, as event-by-event application —
/// also for odd text (quotes, backslashes, unicode, emoji, empty strings, nulls, a NUL character).
@Suite struct RebuildWritePathTests {
    static let oddTexts: [String?] = [
        nil, "", "O'Brien \"quoted\" \\ back\\slash", "Zoë Ångström-Łukasz", "名前 テスト", "🙂 emoji 👩‍⚕️",
        "tab\there\nnewline", "nul\u{0}after", String(repeating: "long ", count: 400),
    ]

    /// Appointments with odd client names, locations, notes and links, observed several times
    /// across chunks, some removed and re-observed.
    static func oddLog(_ store: Store, seed: UInt64) throws {
        var rng = SeededRNG(seed: seed)
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        let clock = ManualClock(goldenBase)
        let writer = try makeWriter(store, clock: clock)
        defer { writer.close() }
        _ = try writer.append([rosterEvent(roster(movingAveryToHope: false), run: "run-0")])
        // nil leaves the key out, NSNull is a JSON null.
        let oddValues: [Any?] = Self.oddTexts.map { $0 } + [NSNull()]
        var seen = Set<String>()
        for step in 0..<60 {
            clock.millis = goldenBase + Int64(step) * 1000
            let run = "run-\(step / 5)"
            var events: [NewEvent] = []
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let id = "odd-\(rng.next() % 15)"
                if seen.contains(id), rng.next() % 10 == 0 {
                    events.append(removedEvent(id, reason: "deleted_only", run: run))
                    continue
                }
                let extra: [String: Any?] = [
                    "LocationId": pick(["1", "2", nil, "ü-3"] as [Any?]),
                    "LocationName": pick(oddValues),
                    "PlaceOfService": pick(oddValues),
                    "ClientNote": pick(oddValues + ["see https://doxy.me/röom-4"]),
                    "TelehealthInfo": pick([nil, ["JoinUrl": "https://zoom.us/j/1?pwd=ä"], ["JoinUrl": "https://zoom.us/j/2"]] as [Any?]),
                ]
                let name = pick(Self.oddTexts) ?? "Plain Name"
                let object = appointmentObject(id, client: pick([4127, 5001, 7001] as [Any]), clientName: name,
                                               status: pick(["Confirmed", "Canceled"]),
                                               start: T(Int(rng.next() % 5000)), minutes: 45, extra: extra)
                let first = seen.insert(id).inserted
                events.append(first ? discovered(object, run: run) : changed(object, run: run, fields: ["Status"]))
            }
            _ = try writer.append(events)
        }
        // Every odd text also ends the log as the client name of an appointment of its own, so the
        // views hold each of them whatever the seed picked above (a seed whose last observations
        // were all ASCII once left nothing non-ASCII to check).
        clock.millis = goldenBase + 60 * 1000
        _ = try writer.append(Self.oddTexts.enumerated().compactMap { k, text in
            text.map { discovered(appointmentObject("odd-text-\(k)", client: 4127, clientName: $0, status: "Confirmed",
                                                    start: T(k * 60), minutes: 45), run: "run-last") }
        })
    }

    /// The secondary indexes and the triggers of the views, their generated names taken out (and
    /// the quotes SQLite adds around a table name when it renames a shadow table).
    static func indexes(_ views: ProjectionStore) throws -> [String] {
        try views.readSync { db in
            try Row.fetchAll(db, sql: "SELECT tbl_name, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT NULL").map { row in
                let name: String = row["name"]
                let sql: String = row["sql"]
                return "\(row["tbl_name"] as String): " + sql.replacingOccurrences(of: name, with: "IX").replacingOccurrences(of: "\"", with: "")
            }.sorted()
        }
    }

    @Test func rebuildIntoEmptyTablesEqualsCatchUpAndEventByEvent() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("RebuildWritePathTests seed: \(seed)")
        for (round, odd) in [(0, true), (1, false), (2, true)] {
            let seed = seed &+ UInt64(round)
            let tmp = try TempStore()
            if odd {
                try Self.oddLog(tmp.store, seed: seed)
            } else {
                try ChunkedFoldTests.randomLog(tmp.store, seed: seed, appends: 80)
            }
            let reader = try LedgerReader(store: tmp.store)
            let reference = try ProjectionStore(path: tmp.sibling("reference.sqlite"))
            reference.chunkedFold = false
            reference.eventsPerTransaction = 3
            try reference.catchUp(reader)
            // Catch-up: tables created empty, every appointment looked up, indexes kept throughout.
            let caughtUp = try ProjectionStore(path: tmp.sibling("caught-up.sqlite"))
            caughtUp.eventsPerTransaction = 7
            try caughtUp.catchUp(reader)
            for chunk in [1, 5, 100_000] {
                // Rebuild: shadow tables, no lookups of unseen appointments, indexes built at the end.
                let rebuilt = try ProjectionStore(path: tmp.sibling("rebuilt-\(chunk).sqlite"))
                try rebuilt.catchUp(reader)
                rebuilt.eventsPerTransaction = chunk
                _ = try rebuilt.rebuild(names: [], reader)
                for (views, what) in [(rebuilt, "rebuild in chunks of \(chunk)"), (caughtUp, "catch-up")] {
                    let diff = try views.differences(from: reference)
                    #expect(diff.total == 0, "seed \(seed), \(what): \(diff.first.map(\.description).joined(separator: "\n"))")
                    #expect(try snapshot(views) == snapshot(reference), "seed \(seed), \(what)")
                    let (mine, theirs) = (try Self.indexes(views), try Self.indexes(reference))
                    #expect(mine == theirs, "seed \(seed), \(what): the secondary indexes \(mine) vs \(theirs)")
                    #expect(mine.count == 11, "seed \(seed), \(what): \(mine)")
                }
                // Rebuilt again over the rows of the first rebuild: still the same.
                _ = try rebuilt.rebuild(names: ["appointments", "meeting_urls"], reader)
                #expect(try rebuilt.differences(from: reference).total == 0, "seed \(seed), second rebuild in chunks of \(chunk)")
                #expect(try Self.indexes(rebuilt) == Self.indexes(reference), "seed \(seed), second rebuild: the secondary indexes")
            }
            if odd {
                // The odd text reached the views as event-by-event application stores it.
                let names = try reference.readSync { db in try String.fetchAll(db, sql: "SELECT client_name FROM appointments WHERE client_name IS NOT NULL") }
                for text in Self.oddTexts.compactMap({ $0 }) where !text.contains("\u{0}") {
                    #expect(names.contains(text), "seed \(seed): \(text.debugDescription) is not among \(names)")
                }
            }
        }
    }

    /// The C-API binding matches GRDB's: the same values read back for every odd text.
    @Test func rawBindingStoresWhatGRDBStores() throws {
        let tmp = try TempStore()
        let a = try ProjectionStore(path: tmp.sibling("a.sqlite"))
        let b = try ProjectionStore(path: tmp.sibling("b.sqlite"))
        for views in [a, b] {
            try views.pool.write { db in try db.execute(sql: "CREATE TABLE t (k INTEGER PRIMARY KEY, s TEXT, n INTEGER, f INTEGER)") }
        }
        let texts = Self.oddTexts
        try a.pool.write { db in
            for (k, s) in texts.enumerated() {
                try db.execute(sql: "INSERT INTO t VALUES (?, ?, ?, ?)", arguments: [k, s, k % 2 == 0 ? nil : Int64(-k), k % 3 == 0])
            }
        }
        try b.pool.write { db in
            let insert = try RawStatement(db, "INSERT INTO t VALUES (?, ?, ?, ?)")
            for (k, s) in texts.enumerated() {
                insert.bind(1, k)
                insert.bind(2, s)
                insert.bind(3, k % 2 == 0 ? nil : Int64(-k))
                insert.bind(4, k % 3 == 0)
                try insert.run()
            }
        }
        let dump = "SELECT k, s, typeof(s), length(s), n, typeof(n), f, typeof(f) FROM t ORDER BY k"
        let rowsA = try a.readSync { db in try Row.fetchAll(db, sql: dump).map(\.description) }
        let rowsB = try b.readSync { db in try Row.fetchAll(db, sql: dump).map(\.description) }
        #expect(rowsA == rowsB)
        #expect(rowsA.count == texts.count)
    }

    /// `appointments_objects.client_ids`, written straight, is the canonical text of the JSON
    /// array of the ids (what it was built as before), for odd ids too.
    @Test func clientIdsTextIsTheCanonicalArrayOfTheIds() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("RebuildWritePathTests clientIds seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        let ids: [String] = Self.oddTexts.compactMap { $0 } + ["6024", "a,b", "[x]", "\u{7F}", "\u{1F}ctl"]
        var facts = try AppointmentFacts(object: .object(["Id": .string("a-1")]))
        var shapes = Set<String>()
        for n in 0..<500 {
            facts.intakeqClientId = rng.next() % 3 == 0 ? nil : ids[Int(rng.next() % UInt64(ids.count))]
            facts.additionalClientIds = (0..<Int(rng.next() % 4)).map { _ in ids[Int(rng.next() % UInt64(ids.count))] }
            let reference = JSONValue.array(RosterMembership.clientIds(of: facts).map(JSONValue.string)).canonicalText
            let text = AppointmentsProjection.clientIdsText(facts)
            #expect(text == reference, "case \(n) (seed \(seed))")
            #expect(AppointmentsProjection.clientIds(fromText: text) == RosterMembership.clientIds(of: facts), "case \(n) (seed \(seed))")
            shapes.insert("\(facts.intakeqClientId == nil)-\(facts.additionalClientIds.count)")
        }
        #expect(shapes.count == 8, "seed \(seed): \(shapes)")
    }
}
