import Domain
import EventLog
import Foundation
import GRDB
import JSONCore
import Ledger
@testable import Projections
import Testing

/// Recorded before redaction version 5, a roster primary's telehealth invitation ("Hi In Side
/// (in@example.org), join …") and join link ("…&uname=In%20Side") were clear text outside every
/// sealed part, so `forget` left them readable (hostile test). Once the patient is forgotten every
/// read path cleans them as version 5 does: the reader, the views by every fold path, history.
@Suite struct ForgottenClearTextTests {
    static let object = #"""
        {"Id":"g1","ClientId":100,"ClientName":"In Side","ClientEmail":"in@example.org","StartDate":1796925900000,
         "Status":"Confirmed","PractitionerId":"pr1","PlaceOfService":"02",
         "TelehealthInfo":{"JoinUrl":"https://zoom.us/j/9?pwd=k&uname=In%20Side","Provider":"Zoom",
           "Invitation":"Hi In Side (in@example.org), join https://zoom.us/j/9?pwd=k&uname=In%20Side with Out Sider"}}
        """#
    static let personal = ["In Side", "In%20Side", "in@example.org", "Out Sider"]

    /// A store holding the roster and the appointment as redaction version 4 recorded it: the
    /// object sealed for patient p-1, its telehealth part clear.
    static func store() throws -> TempStore {
        let t = try TempStore()
        let keys = try KeyRing.open(directory: t.store.keysPath, create: true, environment: [:], notice: { _ in })
        let roster = RosterObserved(
            organizations: [.init(id: "o", name: "Org", patients: [.init(id: "p-1", name: "In Side", email: nil, intakeqClientId: "100")])],
            practitioners: [], rosterHash: String(repeating: "0", count: 64))
        let objectBytes = Array(try JSONValue.parse(Array(object.utf8)).canonicalText.utf8)
        let clear = AppointmentObservation(appointmentId: "g1", contentHash: "h", changedFields: [], object: objectBytes)
            .encodeData(includeChangedFields: false)
        let sealed = try PersonalData.sealObservationData(clear, patientOf: { $0 == "100" ? "p-1" : nil }, key: keys.key(for:))
        #expect(!String(decoding: sealed, as: UTF8.self).contains("in@example.org\","), "the email field is sealed")
        let log = try EventLogWriter.open(directory: t.store.logPath)
        _ = try log.append([
            EventEnvelope(seq: 1, id: "a", type: "roster.observed", v: 1, at: "2026-11-26T09:00:00.000Z", run: nil,
                          stream: "roster", data: encodeData(roster)).encoded(),
            EventEnvelope(seq: 2, id: "b", type: "appointment.discovered", v: 2, at: "2026-11-26T09:00:00.000Z", run: nil,
                          stream: "appointment/g1", data: sealed).encoded(),
        ])
        log.close()
        return t
    }

    static func meetingURL(_ views: ProjectionStore) throws -> String? {
        try views.readSync { db in try String.fetchOne(db, sql: "SELECT meeting_url FROM appointment_meeting_urls WHERE appointment_id = 'g1'") }
    }

    @Test func aForgottenPatientsClearInvitationAndLinkAreCleanedOnEveryReadPath() throws {
        let t = try Self.store()
        // Not forgotten: read as recorded (redaction is applied when a sync records, not on read).
        let before = try ProjectionStore(store: t.store)
        try before.catchUp(try LedgerReader(store: t.store))
        #expect(try Self.meetingURL(before)?.contains("uname=In%20Side") == true)

        let keys = try KeyRing.open(directory: t.store.keysPath, create: false, environment: [:], notice: { _ in })
        try keys.destroyKey(for: "p-1", at: "2026-12-01T00:00:00.000Z")
        let reader = try LedgerReader(store: t.store)
        var data = ""
        try reader.forEachEvent { e in
            if e.seq == 2 { data = String(decoding: e.data, as: UTF8.self) }
            return true
        }
        for name in Self.personal { #expect(!data.contains(name), "\(name) read back: \(data)") }
        #expect(data.contains(#""Invitation":"https://zoom.us/j/9?pwd=k""#), "\(data)")
        #expect(data.contains(#""JoinUrl":"https://zoom.us/j/9?pwd=k""#), "\(data)")
        #expect(data.contains(#""ClientName":"(forgotten)""#), "\(data)")

        // The views, by the one-thread fold and by the pipelined one with and without the reader
        // preparing the facts (the fields path steps aside for a forgotten patient).
        for (pipeline, prepare) in [(Int.max, Int.max), (0, 0), (0, Int.max)] {
            let views = try ProjectionStore(path: t.sibling("views-\(pipeline)-\(prepare).sqlite"))
            views.pipelineMinEvents = pipeline
            views.prepareWhenQueued = prepare
            _ = try views.rebuild(names: [], try LedgerReader(store: t.store))
            #expect(try Self.meetingURL(views) == "https://zoom.us/j/9?pwd=k", "pipeline \(pipeline), prepare \(prepare)")
            let name = try views.readSync { db in try String.fetchOne(db, sql: "SELECT client_name FROM appointments WHERE appointment_id = 'g1'") }
            #expect(name == "(forgotten)")
        }
        let history = try History.of("g1", reader: reader, views: before)
        let text = history.map { "\($0.json)" }.joined()
        for name in Self.personal { #expect(!text.contains(name), "\(name) in history: \(text)") }
    }
}
