import Domain
import EventLog
import Foundation
import JSONCore
import Ledger

/// Exports for auditors: the events exactly as stored (JSON Lines), or one CSV row per
/// appointment version.
public enum Export {
    /// Writes the stored lines from `from` through `to`, each followed by '\n'. Returns the count.
    @discardableResult
    /// `checkFromStart`: the chain is checked from the log's first event (a salvage's export),
    /// not from the stored chain hash of the batch before `from`.
    public static func jsonLines(reader: LedgerReader, from: UInt64, to: UInt64?, checkFromStart: Bool = false,
                                 write: ([UInt8]) throws -> Void) throws -> UInt64 {
        var n: UInt64 = 0
        // Batches read and checked on a second thread while these are written out.
        let cursor = try ReadAheadCursor(reader.log, from: checkFromStart ? 1 : max(1, from), through: to)
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        while let record = try cursor.next() {
            if record.seq < from { continue }
            buffer += record.payload
            buffer.append(10)
            n += 1
            if buffer.count >= 1 << 20 {
                try write(buffer)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        if !buffer.isEmpty { try write(buffer) }
        return n
    }

    public static let csvColumns = [
        "seq", "recorded_at", "run", "sync_type", "event_type", "appointment_id", "organization_id", "patient_id",
        "intakeq_client_id", "status", "intakeq_status", "start_at", "end_at", "practitioner_name", "visit_type",
        "meeting_url", "location_id", "location_name", "last_modified", "content_hash", "changed_fields",
    ]

    /// One CSV row (RFC 4180) per appointment version: discovered, changed, removed. The
    /// organization and patient are those of the roster in force when the version was recorded.
    @discardableResult
    /// A removal row repeats the appointment's last recorded version, read through the per-stream
    /// index of `views` when given — memory stays bounded however long the log. Without views
    /// (none usable), the last facts of each appointment are kept in memory instead.
    public static func csv(reader: LedgerReader, views: ProjectionStore? = nil, from: UInt64, to: UInt64?,
                           write: ([UInt8]) throws -> Void) throws -> Int {
        try write(Array((csvColumns.joined(separator: ",") + "\r\n").utf8))
        var roster = RosterIndex(nil)
        var runTypes: [String: String] = [:]
        var latest: [String: AppointmentFacts] = [:]
        var rows = 0
        try reader.forEachEvent(from: 1, through: to) { e in
            switch e.eventType {
            case .rosterObserved:
                if let r = try? e.decodeData(RosterObserved.self) { roster = RosterIndex(r) }
            case .syncStarted:
                if let s = try? e.decodeData(SyncStarted.self), let run = e.run { runTypes[run] = s.syncType }
            case .appointmentDiscovered, .appointmentChanged, .appointmentRemoved:
                let data = try e.dataValue()
                var facts: AppointmentFacts?
                var changed = ""
                if let object = data["object"] {
                    facts = try? AppointmentFacts(object: object)
                    if views == nil, let f = facts { latest[f.appointmentId] = f }
                    if case .array(let a)? = data["changed_fields"] { changed = a.compactMap(\.stringValue).joined(separator: ";") }
                } else if let id = data["appointment_id"]?.stringValue {
                    changed = "removed"
                    if let views {
                        guard e.seq >= from else { return true }
                        facts = try lastVersion(of: id, before: e.seq, reader: reader, views: views)
                    } else {
                        facts = latest[id]
                    }
                }
                guard e.seq >= from else { return true }
                let member = facts.map { roster.members(of: $0).first } ?? nil
                let cells: [String?] = [
                    String(e.seq), e.at, e.run, e.run.flatMap { runTypes[$0] }, e.type,
                    data["appointment_id"]?.stringValue, member?.organizationId, member?.patientId,
                    facts?.intakeqClientId, facts?.status, facts?.intakeqStatus, facts?.startAt, facts?.endAt,
                    facts?.practitionerName, facts?.visitType, facts?.meeting?.url, facts?.locationId,
                    facts?.locationName, facts?.lastModified, data["content_hash"]?.stringValue, changed,
                ]
                try write(Array((cells.map { csvField($0 ?? "") }.joined(separator: ",") + "\r\n").utf8))
                rows += 1
            default:
                break
            }
            return true
        }
        return rows
    }

    /// The facts of an appointment's last discovered/changed event before `seq`.
    static func lastVersion(of id: String, before seq: UInt64, reader: LedgerReader, views: ProjectionStore) throws -> AppointmentFacts? {
        let seqs = try views.streamSeqs(Streams.appointment(id), through: seq - 1,
                                        types: [.appointmentDiscovered, .appointmentChanged])
        guard let last = seqs.last, let e = try reader.events(at: [last]).first,
            let object = try e.dataValue()["object"]
        else { return nil }
        return try? AppointmentFacts(object: object)
    }

    /// One RFC 4180 field: quoted when it holds a comma, quote or line break. A text that a
    /// spreadsheet would run as a formula (`=`, `+`, `-`, `@`, a tab or a carriage return first)
    /// gets a leading `'`, which spreadsheets show as text: IntakeQ's free text (a location's or
    /// practitioner's name) reached the auditor's spreadsheet as `=HYPERLINK(…)` (hostile test).
    /// A number (`-5`) is left as it is.
    public static func csvField(_ s: String) -> String {
        var v = s
        if let f = v.utf8.first, [UInt8(ascii: "="), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "@"), 9, 13].contains(f),
           Double(v) == nil {
            v = "'" + v
        }
        guard v.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return v }
        return "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
