import Domain
import EventLog
import Foundation
import GRDB
import IntakeQ
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

// Shared helpers for the ledger and projection tests: temporary stores, a manual clock,
// appointment objects, the golden event sequence and snapshots of every view.

/// A fresh store in its own temporary directory per test, removed with it at the end.
final class TempStore {
    private let dir = TempDir("ledgertests")
    let path: String
    let store: Store
    var root: String { dir.path }

    init(_ label: String = "store") throws {
        path = dir.sub(label)
        store = try Store.openOrCreate(path)
    }

    /// Another path under the same temporary root (removed with it).
    func sibling(_ name: String) -> String { dir.sub(name) }
}

let fastLog = LogOptions(fsync: false)

func makeWriter(_ store: Store, clock: ManualClock) throws -> LedgerWriter {
    try LedgerWriter(store: store, waitLock: nil, options: fastLog, clock: { clock.read() })
}

// MARK: - JSON literals for expected rows

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByNilLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(uniqueKeysWithValues: elements))
    }
}

func js(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }

/// Minified JSON bytes of a Foundation object, keys sorted (stands in for "as received").
func jsonBytes(_ object: Any) -> [UInt8] {
    Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
}

func parseJSON(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

// MARK: - Times

let goldenBase: Int64 = ISOTime.parse("2026-11-20T10:00:00.000Z")!
/// The `at` of the golden append made with clock tick `k` (seconds after the base).
func T(_ k: Int) -> String { ISOTime.format(millis: goldenBase + Int64(k) * 1000) }
func ms(_ iso: String) -> Int64 { ISOTime.parse(iso)! }

// MARK: - Appointment objects

let practitionerLee = "64b7aa00000000000000beef"
let practitionerMoss = "64b7aa0000000000000000aa"

/// An IntakeQ appointment object; `extra` keys override or add (NSNull() for null, nil removes).
func appointmentObject(_ id: String, client: Any, clientName: String, status: String, start: String,
                       minutes: Int, duration: Bool = true, practitioner: String = practitionerLee,
                       extra: [String: Any?] = [:]) -> [String: Any] {
    let s = ms(start)
    var o: [String: Any] = [
        "Id": id, "ClientId": client, "ClientName": clientName, "Status": status,
        "StartDate": s, "EndDate": s + Int64(minutes) * 60_000,
        "PractitionerId": practitioner,
        "PractitionerName": practitioner == practitionerLee ? "Dr Lee" : "Dr Moss",
        "ServiceName": "Therapy", "LastModified": s - 86_400_000,
    ]
    if duration { o["Duration"] = minutes }
    for (k, v) in extra {
        if let v { o[k] = v } else { o.removeValue(forKey: k) }
    }
    return o
}

func observation(_ type: EventType, _ object: [String: Any], run: String, changed: [String] = []) -> NewEvent {
    let bytes = jsonBytes(object)
    let id = object["Id"] as! String
    let hash = contentHash(of: try! JSONValue.parse(bytes))
    let obs = AppointmentObservation(appointmentId: id, contentHash: hash, changedFields: changed, object: bytes)
    return NewEvent(type: type, run: run, stream: Streams.appointment(id),
                    data: obs.encodeData(includeChangedFields: type == .appointmentChanged))
}

func discovered(_ object: [String: Any], run: String) -> NewEvent { observation(.appointmentDiscovered, object, run: run) }
func changed(_ object: [String: Any], run: String, fields: [String]) -> NewEvent {
    observation(.appointmentChanged, object, run: run, changed: fields)
}

func removedEvent(_ id: String, reason: String, run: String) -> NewEvent {
    NewEvent(type: .appointmentRemoved, run: run, stream: Streams.appointment(id),
             data: encodeData(AppointmentRemoved(appointmentId: id, reason: reason)))
}

func startedEvent(_ run: String, type: String, org: String? = nil, patient: String? = nil, by: String = "cron") -> NewEvent {
    NewEvent(type: .syncStarted, run: run, stream: Streams.syncRun(run), data: encodeData(SyncStarted(
        syncType: type, organizationId: org, patientId: patient,
        window: DateWindow(start: "2026-08-22", end: "2027-02-18"), triggeredBy: by, toolVersion: "0.1.0",
        now: "2026-11-20T10:00:00.000Z")))
}

func completedEvent(_ run: String, writer: LedgerWriter, new: Int = 0, updated: Int = 0, removed: Int = 0,
                    unchanged: [String] = [], warnings: [String] = [], calls: Int = 3, durationMs: Int64 = 2000,
                    status: String = "completed") -> NewEvent {
    var counts = SyncCounts()
    counts.new = new
    counts.updated = updated
    counts.removed = removed
    counts.unchanged = unchanged.count
    counts.patientsProcessed = 4
    var api = APIUsage()
    api.calls = calls
    return NewEvent(type: .syncCompleted, run: run, stream: Streams.syncRun(run), data: encodeData(SyncCompleted(
        status: status, counts: counts, api: api, warnings: warnings, errors: [], errorMessage: nil,
        unchanged: unchanged.map { .init(id: $0, hash: "h-" + $0) }, headBefore: writer.head.description,
        durationMs: durationMs)))
}

func rosterEvent(_ roster: RosterObserved, run: String) -> NewEvent {
    NewEvent(type: .rosterObserved, run: run, stream: Streams.roster, data: encodeData(roster))
}

func roster(movingAveryToHope: Bool) -> RosterObserved {
    typealias P = RosterObserved.Patient
    let avery = P(id: "p-017", name: "Avery Quinn", email: "avery@example.org", intakeqClientId: "4127")
    let blake = P(id: "p-018", name: "Blake Rowe", email: nil, intakeqClientId: "5001")
    let casey = P(id: "p-020", name: "Casey Lin", email: nil, intakeqClientId: "6001")
    let drew = P(id: "p-021", name: "Drew Park", email: nil, intakeqClientId: "7001")
    let fsh = RosterObserved.Organization(id: "fsh", name: "First Step House",
                                          patients: movingAveryToHope ? [blake] : [avery, blake])
    let hope = RosterObserved.Organization(id: "hope", name: "Hope Center",
                                           patients: movingAveryToHope ? [casey, drew, avery] : [casey, drew])
    return RosterObserved(organizations: [fsh, hope],
                          practitioners: [.init(intakeqId: practitionerLee, providerId: "prov-lee")],
                          rosterHash: movingAveryToHope ? "roster-2" : "roster-1")
}

// MARK: - The golden sequence

enum Golden {
    static let s1 = "2026-11-25T16:00:00.000Z"
    static let s2 = "2026-11-25T17:00:00.000Z"
    static let s3 = "2026-11-24T15:00:00.000Z"
    static let s4 = "2026-11-26T09:00:00.000Z"
    static let s5 = "2026-11-27T09:30:00.000Z"
    static let s6 = "2026-11-23T18:00:00.000Z"
    static let s7 = "2026-11-28T12:00:00.000Z"

    static let meet = "https://meet.google.com/abc-defg-hij"

    static var a1: [String: Any] {
        appointmentObject("a1", client: 4127, clientName: "Avery Quinn", status: "Confirmed", start: s1, minutes: 50, extra: [
            "PlaceOfService": "02",
            "TelehealthInfo": ["Id": "t1", "StartUrl": "https://zoom.us/s/host-1001", "JoinUrl": "https://zoom.us/j/1001",
                               "Provider": "Zoom"],
        ])
    }
    static var a1Moved: [String: Any] {
        var o = a1
        o["StartDate"] = ms(s1) + 3_600_000
        o["EndDate"] = ms(s1) + 3_600_000 + 50 * 60_000
        return o
    }
    static var a1NewLink: [String: Any] {
        var o = a1Moved
        o["TelehealthInfo"] = ["Id": "t1", "StartUrl": "https://zoom.us/s/host-1002", "JoinUrl": "https://zoom.us/j/1002",
                               "Provider": "Zoom"]
        return o
    }
    /// Only the practitioner's host link: it must never become the meeting URL.
    static var a2: [String: Any] {
        appointmentObject("a2", client: 5001, clientName: "Blake Rowe", status: "WaitingConfirmation", start: s2,
                          minutes: 30, duration: false, practitioner: practitionerMoss, extra: [
                              "TelehealthInfo": ["StartUrl": "https://zoom.us/s/host-2002", "JoinUrl": NSNull(), "Provider": "Zoom"],
                          ])
    }
    static var a2Canceled: [String: Any] {
        var o = a2
        o["Status"] = "Canceled"
        return o
    }
    /// A Google Meet link in LocationName, TelehealthInfo null, no PlaceOfService.
    static var a3: [String: Any] {
        appointmentObject("a3", client: 4127, clientName: "Avery Quinn", status: "Missed", start: s3, minutes: 45, extra: [
            "LocationName": "Video: \(meet) (camera on)", "TelehealthInfo": NSNull(),
        ])
    }
    static var a4: [String: Any] {
        appointmentObject("a4", client: 6001, clientName: "Casey Lin", status: "Declined", start: s4, minutes: 60, extra: [
            "PlaceOfService": "11", "LocationId": "1", "LocationName": "Main Office",
        ])
    }
    static var a5: [String: Any] {
        appointmentObject("a5", client: "7001", clientName: "Drew Park", status: "Pending", start: s5, minutes: 90, extra: [
            "PlaceOfService": "12", "LocationName": "Client home",
        ])
    }
    /// A group session: the primary client and two additional ones, one of them not in the roster.
    static var a6: [String: Any] {
        appointmentObject("a6", client: 5001, clientName: "Blake Rowe", status: "Confirmed", start: s6, minutes: 90, extra: [
            "PlaceOfService": "10",
            "AdditionalClients": [["ClientId": 6001, "ClientName": "Casey Lin"], ["ClientId": 8888, "ClientName": "Not Served"]],
            "TelehealthInfo": ["Invitation": "Join the group: https://intakeq.com/tele/grp-6.",
                               "StartUrl": "https://intakeq.com/host/grp-6", "Provider": "IntakeQ"],
        ])
    }
    static var a7: [String: Any] {
        appointmentObject("a7", client: 6001, clientName: "Casey Lin", status: "Confirmed", start: s7, minutes: 30)
    }
    static var a7Link: [String: Any] {
        var o = a7
        o["TelehealthInfo"] = ["JoinUrl": "https://zoom.us/j/7007", "Provider": "Zoom"]
        return o
    }

    static var settings: [String: Any] { [
        "Locations": [["Id": 1, "Name": "Main Office", "Address": "100 Main St, Salt Lake City, UT 84101"],
                      ["Id": "2", "Name": "Annex", "Address": "2 Side Ave, Provo, UT"]],
        "Services": [["Id": "svc-1", "Name": "Therapy", "Duration": 50, "Price": 150.0]],
        "Practitioners": [["Id": practitionerLee, "CompleteName": "Dr Lee"]],
    ] }

    /// One append: the clock tick (seconds after `goldenBase`) and the events.
    struct Step {
        var tick: Int
        var make: (LedgerWriter) -> [NewEvent]
    }

    static var steps: [Step] {
        [
            // run-1: first daily sync
            Step(tick: 1) { _ in [startedEvent("run-1", type: "automated_daily")] },                      // seq 1
            Step(tick: 2) { _ in [rosterEvent(roster(movingAveryToHope: false), run: "run-1")] },         // seq 2
            Step(tick: 3) { _ in [a1, a2, a3, a4, a5, a6, a7].map { discovered($0, run: "run-1") } },    // seq 3-9
            Step(tick: 4) { w in [completedEvent("run-1", writer: w, new: 7, calls: 3, durationMs: 3000)] }, // seq 10
            // run-2: an organization refresh; settings, a time change, a link added
            Step(tick: 10) { _ in [startedEvent("run-2", type: "manual_org_bulk", org: "fsh", by: "user:cm-1")] }, // 11
            Step(tick: 11) { _ in
                [NewEvent(type: .settingsObserved, run: "run-2", stream: Streams.settings,
                          data: SettingsObserved(contentHash: "settings-1", object: jsonBytes(settings)).encodeData()), // 12
                 changed(a1Moved, run: "run-2", fields: ["EndDate", "StartDate"]),                       // 13
                 changed(a7Link, run: "run-2", fields: ["TelehealthInfo"])]                              // 14
            },
            Step(tick: 12) { w in
                [completedEvent("run-2", writer: w, updated: 2, unchanged: ["a2", "a3", "a4", "a5", "a6"],
                                warnings: ["appointment a5 has status 'Pending', shown as unknown"], calls: 4, durationMs: 2500)] // 15
            },
            // run-3: link changed, a cancellation, a removal
            Step(tick: 20) { _ in [startedEvent("run-3", type: "automated_daily")] },                     // 16
            Step(tick: 21) { _ in
                [changed(a1NewLink, run: "run-3", fields: ["TelehealthInfo"]),                           // 17
                 changed(a2Canceled, run: "run-3", fields: ["Status"]),                                  // 18
                 removedEvent("a3", reason: "deleted_only", run: "run-3")]                               // 19
            },
            Step(tick: 22) { w in
                [completedEvent("run-3", writer: w, updated: 2, removed: 1, unchanged: ["a4", "a5", "a6", "a7"],
                                calls: 5, durationMs: 1800)]                                             // 20
            },
            // run-4 starts and never completes
            Step(tick: 30) { _ in [startedEvent("run-4", type: "automated_daily")] },                     // 21
            // run-5 abandons it and records a roster that moves Avery to Hope Center
            Step(tick: 40) { _ in
                [startedEvent("run-5", type: "manual_patient", patient: "p-017", by: "user:cm-2"),       // 22
                 NewEvent(type: .syncAbandoned, run: "run-5", stream: Streams.syncRun("run-4"),
                          data: encodeData(SyncAbandoned(abandonedRun: "run-4", reason: "the run never completed"))), // 23
                 rosterEvent(roster(movingAveryToHope: true), run: "run-5")]                             // 24
            },
            Step(tick: 41) { w in [completedEvent("run-5", writer: w, unchanged: ["a1", "a4"], calls: 2, durationMs: 900)] }, // 25
        ]
    }

    static let eventCount: UInt64 = 25

    /// Appends the golden steps (all, or `range`) through a writer; `after` runs after each append.
    static func write(_ store: Store, steps range: Range<Int>? = nil, after: ((Int) throws -> Void)? = nil) throws {
        let clock = ManualClock(goldenBase)
        let writer = try makeWriter(store, clock: clock)
        defer { writer.close() }
        let all = steps
        for i in range ?? 0..<all.count {
            clock.millis = goldenBase + Int64(all[i].tick) * 1000
            try writer.append(all[i].make(writer))
            try after?(i)
        }
    }
}

// MARK: - Snapshots

/// Every view's rows, through the public queries, plus the tables behind the joins.
struct Snapshot: Equatable, CustomStringConvertible {
    var appointments: [ViewRow]
    var patients: [[String]]
    var meetingURLs: [ViewRow]
    var locations: [ViewRow]
    var syncLogs: [ViewRow]
    /// One row per event: the per-stream index without its "observed unchanged" rows.
    var streams: [[String]]
    /// The index rows that file a run's sync.completed under each appointment it observed unchanged.
    var observations: [[String]]

    var description: String {
        func rows(_ r: [ViewRow]) -> String { r.map { $0.json.canonicalText }.joined(separator: "\n  ") }
        return """
            appointments:\n  \(rows(appointments))
            patients: \(patients)
            meeting_urls:\n  \(rows(meetingURLs))
            locations:\n  \(rows(locations))
            sync_logs:\n  \(rows(syncLogs))
            streams: \(streams.count) rows
            """
    }
}

func snapshot(_ views: ProjectionStore) throws -> Snapshot {
    try views.readSync { db in
        let all = AppointmentFilter()
        return Snapshot(
            appointments: try Views.appointments(db, all),
            patients: try Row.fetchAll(db, sql: "SELECT appointment_id, patient_id, organization_id, role FROM appointment_patients ORDER BY appointment_id, patient_id")
                .map { r in (0..<4).map { (r[$0] as String?) ?? "NULL" } },
            meetingURLs: try Views.meetingURLs(db, all),
            locations: try Views.locations(db, all),
            syncLogs: try Views.syncLogs(db, limit: nil, type: nil),
            streams: try Row.fetchAll(db, sql: """
                SELECT stream, seq, type FROM event_streams
                WHERE NOT (type = 'sync.completed' AND stream LIKE 'appointment/%') ORDER BY stream, seq
                """).map { r in [r[0] as String, String(r[1] as Int64), r[2] as String] },
            observations: try Row.fetchAll(db, sql: """
                SELECT stream, seq FROM event_streams
                WHERE type = 'sync.completed' AND stream LIKE 'appointment/%' ORDER BY stream, seq
                """).map { r in [r[0] as String, String(r[1] as Int64)] })
    }
}

/// A clean rebuild of a store's log into a fresh views database.
func cleanSnapshot(_ store: Store, scratch: String) throws -> Snapshot {
    let views = try ProjectionStore(path: scratch)
    _ = try views.rebuild(names: [], try LedgerReader(store: store))
    return try snapshot(views)
}

/// Checks rows against expected dictionaries that name every column exactly.
func expectRows(_ rows: [ViewRow], _ expected: [[String: JSONValue]], _ view: String,
                sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(rows.count == expected.count, "\(view): \(rows.count) rows, expected \(expected.count)", sourceLocation: sourceLocation)
    for (row, want) in zip(rows, expected) {
        #expect(Set(want.keys) == Set(row.columns), "\(view): expected row names other columns", sourceLocation: sourceLocation)
        for c in row.columns {
            #expect(row[c] == want[c], "\(view) row \(row["appointment_id"] ?? row["id"] ?? .null) column \(c)",
                    sourceLocation: sourceLocation)
        }
    }
}

/// A projection that stands in for another one and throws (not a quarantine) at one seq,
/// the way a crash or an interruption stops a fold mid-way.
struct FailingProjection: Projection {
    struct Boom: Error {}
    let inner: any Projection
    let failAt: UInt64
    var name: String { inner.name }
    var schemaVersion: Int { inner.schemaVersion }
    var tables: [String] { inner.tables }
    func create(_ db: Database, _ t: TableSet) throws { try inner.create(db, t) }
    func apply(_ event: EventEnvelope, _ db: Database, _ t: TableSet) throws {
        if event.seq == failAt { throw Boom() }
        try inner.apply(event, db, t)
    }
}

/// A projection whose schema version differs from the real one it wraps.
struct BumpedProjection: Projection {
    let inner: any Projection
    let schemaVersion: Int
    var name: String { inner.name }
    var tables: [String] { inner.tables }
    func create(_ db: Database, _ t: TableSet) throws { try inner.create(db, t) }
    func apply(_ event: EventEnvelope, _ db: Database, _ t: TableSet) throws { try inner.apply(event, db, t) }
}

/// Writes a views database to `dest` as a standalone file (the WAL folded in).
func copyViews(_ views: ProjectionStore, to dest: String) throws {
    try? FileManager.default.removeItem(atPath: dest)
    try views.pool.writeWithoutTransaction { db in
        try db.execute(sql: "VACUUM INTO ?", arguments: [dest])
    }
}

/// A copy of a directory tree.
func copyTree(_ from: String, _ to: String) throws {
    try? FileManager.default.removeItem(atPath: to)
    try FileManager.default.copyItem(atPath: from, toPath: to)
}
