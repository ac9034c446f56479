import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

/// The expected rows of every view after the golden sequence (Support.swift, `Golden.steps`).
enum GoldenExpect {
    static func appointment(_ id: String, org: String?, patient: String?, client: String, name: String,
                            practitioner: String = practitionerLee, status: String, raw: String,
                            start: String, end: String, minutes: Int, locationId: String? = nil,
                            location: String? = nil, pos: String?, visit: String, meeting: String?,
                            removed: Bool = false, lastChanged: String, lastSynced: String,
                            version: Int, lastSeq: Int) -> [String: JSONValue] {
        [
            "appointment_id": .string(id), "organization_id": js(org), "patient_id": js(patient),
            "intakeq_client_id": .string(client), "client_name": .string(name),
            "practitioner_id": .string(practitioner),
            "practitioner_name": practitioner == practitionerLee ? "Dr Lee" : "Dr Moss",
            "provider_id": practitioner == practitionerLee ? "prov-lee" : nil,
            "service_name": "Therapy", "status": .string(status), "intakeq_status": .string(raw),
            "start_at": .string(start), "end_at": .string(end), "duration_minutes": .number(Double(minutes)),
            "location_id": js(locationId), "location_name": js(location), "place_of_service": js(pos),
            "visit_type": .string(visit), "meeting_url": js(meeting), "removed": .bool(removed),
            "first_seen_at": .string(T(3)), "last_changed_at": .string(lastChanged),
            "last_synced_at": .string(lastSynced), "version": .number(Double(version)),
            "last_seq": .number(Double(lastSeq)),
        ]
    }

    static let appointments: [[String: JSONValue]] = [
        appointment("a6", org: "fsh", patient: "p-018", client: "5001", name: "Blake Rowe", status: "confirmed",
                    raw: "Confirmed", start: Golden.s6, end: "2026-11-23T19:30:00.000Z", minutes: 90, pos: "10",
                    visit: "telehealth", meeting: "https://intakeq.com/tele/grp-6", lastChanged: T(3),
                    lastSynced: T(22), version: 1, lastSeq: 8),
        appointment("a3", org: "hope", patient: "p-017", client: "4127", name: "Avery Quinn", status: "no_show",
                    raw: "Missed", start: Golden.s3, end: "2026-11-24T15:45:00.000Z", minutes: 45,
                    location: "Video: \(Golden.meet) (camera on)", pos: nil, visit: "telehealth", meeting: Golden.meet,
                    removed: true, lastChanged: T(21), lastSynced: T(21), version: 2, lastSeq: 19),
        appointment("a1", org: "hope", patient: "p-017", client: "4127", name: "Avery Quinn", status: "confirmed",
                    raw: "Confirmed", start: "2026-11-25T17:00:00.000Z", end: "2026-11-25T17:50:00.000Z", minutes: 50,
                    pos: "02", visit: "telehealth", meeting: "https://zoom.us/j/1002", lastChanged: T(21),
                    lastSynced: T(41), version: 3, lastSeq: 17),
        appointment("a2", org: "fsh", patient: "p-018", client: "5001", name: "Blake Rowe", practitioner: practitionerMoss,
                    status: "cancelled", raw: "Canceled", start: Golden.s2, end: "2026-11-25T17:30:00.000Z", minutes: 30,
                    pos: nil, visit: "telehealth", meeting: nil, lastChanged: T(21), lastSynced: T(21), version: 2, lastSeq: 18),
        appointment("a4", org: "hope", patient: "p-020", client: "6001", name: "Casey Lin", status: "cancelled",
                    raw: "Declined", start: Golden.s4, end: "2026-11-26T10:00:00.000Z", minutes: 60, locationId: "1",
                    location: "Main Office", pos: "11", visit: "office", meeting: nil, lastChanged: T(3),
                    lastSynced: T(41), version: 1, lastSeq: 6),
        appointment("a5", org: "hope", patient: "p-021", client: "7001", name: "Drew Park", status: "unknown",
                    raw: "Pending", start: Golden.s5, end: "2026-11-27T11:00:00.000Z", minutes: 90,
                    location: "Client home", pos: "12", visit: "home", meeting: nil, lastChanged: T(3),
                    lastSynced: T(22), version: 1, lastSeq: 7),
        appointment("a7", org: "hope", patient: "p-020", client: "6001", name: "Casey Lin", status: "confirmed",
                    raw: "Confirmed", start: Golden.s7, end: "2026-11-28T12:30:00.000Z", minutes: 30, pos: nil,
                    visit: "telehealth", meeting: "https://zoom.us/j/7007", lastChanged: T(11), lastSynced: T(22),
                    version: 2, lastSeq: 14),
    ]

    static let patients: [[String]] = [
        ["a1", "p-017", "hope", "primary"], ["a2", "p-018", "fsh", "primary"], ["a3", "p-017", "hope", "primary"],
        ["a4", "p-020", "hope", "primary"], ["a5", "p-021", "hope", "primary"], ["a6", "p-018", "fsh", "primary"],
        ["a6", "p-020", "hope", "additional"], ["a7", "p-020", "hope", "primary"],
    ]

    static let meetingURLs: [[String: JSONValue]] = [
        ["appointment_id": "a6", "meeting_url": "https://intakeq.com/tele/grp-6", "url_provider": "IntakeQ",
         "source_field": "TelehealthInfo.Invitation", "changed_at": .string(T(3))],
        ["appointment_id": "a3", "meeting_url": .string(Golden.meet), "url_provider": "Google Meet",
         "source_field": "LocationName", "changed_at": .string(T(3))],
        ["appointment_id": "a1", "meeting_url": "https://zoom.us/j/1002", "url_provider": "Zoom",
         "source_field": "TelehealthInfo.JoinUrl", "changed_at": .string(T(21))],
        ["appointment_id": "a7", "meeting_url": "https://zoom.us/j/7007", "url_provider": "Zoom",
         "source_field": "TelehealthInfo.JoinUrl", "changed_at": .string(T(11))],
    ]

    static func location(_ id: String, _ locationId: String?, _ name: String?, _ address: String?, _ pos: String?,
                         _ visit: String) -> [String: JSONValue] {
        ["appointment_id": .string(id), "location_id": js(locationId), "location_name": js(name),
         "address": js(address), "place_of_service": js(pos), "visit_type": .string(visit)]
    }

    static let locations: [[String: JSONValue]] = [
        location("a6", nil, nil, nil, "10", "telehealth"),
        location("a3", nil, "Video: \(Golden.meet) (camera on)", nil, nil, "telehealth"),
        location("a1", nil, nil, nil, "02", "telehealth"),
        location("a2", nil, nil, nil, nil, "telehealth"),
        location("a4", "1", "Main Office", "100 Main St, Salt Lake City, UT 84101", "11", "office"),
        location("a5", nil, "Client home", nil, "12", "home"),
        location("a7", nil, nil, nil, nil, "telehealth"),
    ]

    static let startedMeta: [String: JSONValue] = [
        "date_range": ["start": "2026-08-22", "end": "2027-02-18"], "now": "2026-11-20T10:00:00.000Z",
        "tool_version": "0.1.0",
    ]

    static func completedMeta(calls: Int, headBefore: String, warnings: [String] = []) -> JSONValue {
        var m = startedMeta
        m["warnings"] = .array(warnings.map(JSONValue.string))
        m["errors"] = []
        m["intakeq_api_calls"] = .number(Double(calls))
        m["retries"] = 0
        m["rate_limit_waits"] = 0
        m["rate_limit_hit"] = false
        m["head_before"] = .string(headBefore)
        return .object(m)
    }

    static func syncLog(_ id: String, type: String, org: String? = nil, patient: String? = nil, by: String = "cron",
                        started: String, completed: String?, durationMs: Int?, status: String,
                        counts: [Int] = [0, 0, 0, 0, 0, 0, 0], error: String? = nil, metadata: JSONValue) -> [String: JSONValue] {
        [
            "id": .string(id), "sync_type": .string(type), "organization_id": js(org), "patient_id": js(patient),
            "triggered_by": .string(by), "started_at": .string(started), "completed_at": js(completed),
            "duration_ms": durationMs.map { .number(Double($0)) } ?? .null, "status": .string(status),
            "appointments_new": .number(Double(counts[0])), "appointments_updated": .number(Double(counts[1])),
            "appointments_unchanged": .number(Double(counts[2])), "appointments_removed": .number(Double(counts[3])),
            "appointments_errors": .number(Double(counts[4])), "patients_processed": .number(Double(counts[5])),
            "patients_failed": .number(Double(counts[6])), "error_message": js(error), "metadata": metadata,
        ]
    }

    /// `head_before` of each run's `sync.completed` is the head just before it: computed from the log.
    static func syncLogs(_ reader: LedgerReader) throws -> [[String: JSONValue]] {
        func head(_ seq: UInt64) throws -> String {
            let batch = try #require(try reader.log.batch(containing: seq))
            return LogHead(seq: seq, hash: batch.chainHash).description
        }
        return [
            syncLog("run-5", type: "manual_patient", patient: "p-017", by: "user:cm-2", started: T(40), completed: T(41),
                    durationMs: 900, status: "completed", counts: [0, 0, 2, 0, 0, 4, 0],
                    metadata: completedMeta(calls: 2, headBefore: try head(24))),
            syncLog("run-4", type: "automated_daily", started: T(30), completed: T(40), durationMs: nil, status: "failed",
                    error: "abandoned: the run never completed", metadata: .object(startedMeta)),
            syncLog("run-3", type: "automated_daily", started: T(20), completed: T(22), durationMs: 1800,
                    status: "completed", counts: [0, 2, 4, 1, 0, 4, 0], metadata: completedMeta(calls: 5, headBefore: try head(19))),
            syncLog("run-2", type: "manual_org_bulk", org: "fsh", by: "user:cm-1", started: T(10), completed: T(12),
                    durationMs: 2500, status: "completed", counts: [0, 2, 5, 0, 0, 4, 0],
                    metadata: completedMeta(calls: 4, headBefore: try head(14),
                                            warnings: ["appointment a5 has status 'Pending', shown as unknown"])),
            syncLog("run-1", type: "automated_daily", started: T(1), completed: T(4), durationMs: 3000,
                    status: "completed", counts: [7, 0, 0, 0, 0, 4, 0], metadata: completedMeta(calls: 3, headBefore: try head(9))),
        ]
    }

    static func check(_ snap: Snapshot, reader: LedgerReader, sourceLocation: SourceLocation = #_sourceLocation) throws {
        expectRows(snap.appointments, appointments, "appointments", sourceLocation: sourceLocation)
        #expect(snap.patients == patients, sourceLocation: sourceLocation)
        expectRows(snap.meetingURLs, meetingURLs, "appointment_meeting_urls", sourceLocation: sourceLocation)
        expectRows(snap.locations, locations, "appointment_locations", sourceLocation: sourceLocation)
        expectRows(snap.syncLogs, try syncLogs(reader), "sync_logs", sourceLocation: sourceLocation)
        #expect(snap.streams.count == Int(Golden.eventCount), sourceLocation: sourceLocation)
        // Runs 2, 3 and 5 observed 5 + 4 + 2 appointments unchanged; each is filed under them.
        #expect(snap.observations.count == 11, sourceLocation: sourceLocation)
        #expect(snap.observations.filter { $0[0] == "appointment/a4" }.count == 3, sourceLocation: sourceLocation)
    }
}

@Suite struct GoldenTests {
    @Test func goldenSequenceGivesExactlyTheExpectedRows() throws {
        let tmp = try TempStore()
        let views = try ProjectionStore(store: tmp.store)
        var checkedBeforeRosterChange = false
        var checkedAfterDiscovery = false
        var checkedRunningRun = false
        try Golden.write(tmp.store) { step in
            let reader = try LedgerReader(store: tmp.store)
            try views.catchUp(reader)
            let snap = try snapshot(views)
            switch step {
            case 2:  // just discovered: a7 has no link, no location, no place of service
                let a7 = try #require(snap.appointments.first { $0["appointment_id"] == "a7" })
                #expect(a7["visit_type"] == "unknown")
                #expect(a7["meeting_url"] == .null)
                #expect(a7["version"] == 1)
                let a4 = try #require(snap.locations.first { $0["appointment_id"] == "a4" })
                #expect(a4["address"] == .null, "no practice settings yet")
                #expect(snap.syncLogs.first?["status"] == "in_progress")
                checkedAfterDiscovery = true
            case 10:  // run-4 started, not yet abandoned; Avery still in First Step House
                let a1 = try #require(snap.appointments.first { $0["appointment_id"] == "a1" })
                #expect(a1["organization_id"] == "fsh")
                #expect(a1["patient_id"] == "p-017")
                #expect(snap.patients.contains(["a1", "p-017", "fsh", "primary"]))
                #expect(snap.patients.contains(["a3", "p-017", "fsh", "primary"]))
                let run4 = try #require(snap.syncLogs.first { $0["id"] == "run-4" })
                #expect(run4["status"] == "in_progress")
                #expect(run4["completed_at"] == .null)
                checkedBeforeRosterChange = true
                checkedRunningRun = true
            default:
                break
            }
        }
        #expect(checkedAfterDiscovery && checkedBeforeRosterChange && checkedRunningRun)
        let reader = try LedgerReader(store: tmp.store)
        #expect(try reader.head().seq == Golden.eventCount)
        try GoldenExpect.check(try snapshot(views), reader: reader)
        #expect(try views.quarantine().isEmpty)
        #expect(try views.appliedSeq() == Golden.eventCount)
    }

    @Test func goldenRowsFromOneCatchUpAndFromARebuild() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        let report = try views.catchUp(reader)
        #expect(report.applied == Golden.eventCount)
        #expect(report.rebuilt.isEmpty)
        try GoldenExpect.check(try snapshot(views), reader: reader)
        _ = try views.rebuild(names: [], reader)
        try GoldenExpect.check(try snapshot(views), reader: reader)
    }

    @Test func viewFiltersUseTheRosterJoin() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(reader)
        func ids(_ f: AppointmentFilter) throws -> [String] {
            try views.readSync { try Views.appointments($0, f) }.compactMap { $0["appointment_id"]?.stringValue }
        }
        // The group session a6 belongs to Blake (primary, fsh) and to Casey (additional, hope).
        #expect(try ids(AppointmentFilter(organizationId: "fsh")) == ["a6", "a2"])
        #expect(try ids(AppointmentFilter(patientId: "p-020")) == ["a6", "a4", "a7"])
        #expect(try ids(AppointmentFilter(patientId: "p-017")) == ["a3", "a1"])
        #expect(try ids(AppointmentFilter(patientId: "p-017", hideRemoved: true)) == ["a1"])
        #expect(try ids(AppointmentFilter(from: Golden.s2, to: Golden.s4)) == ["a1", "a2", "a4"])
        let urls = try views.readSync { try Views.meetingURLs($0, AppointmentFilter(hideRemoved: true)) }
        #expect(urls.compactMap { $0["appointment_id"]?.stringValue } == ["a6", "a1", "a7"])
        let logs = try views.readSync { try Views.syncLogs($0, limit: 2, type: "automated_daily") }
        #expect(logs.compactMap { $0["id"]?.stringValue } == ["run-4", "run-3"])
    }
}
