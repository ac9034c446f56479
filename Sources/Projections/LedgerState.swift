import Domain
import Foundation
import GRDB
import JSONCore
import Ledger

/// The last recorded version of an appointment, as the sync runner diffs against it.
public struct KnownAppointment: Sendable {
    public var id: String
    public var contentHash: String
    public var removed: Bool
    /// `ClientId` first, then the additional clients' ids, as last recorded.
    public var clientIds: [String]
    /// `StartDate` as last recorded (epoch ms).
    public var startMillis: Int64?
}

extension ProjectionStore {
    /// What the next sync's diff needs of every appointment the ledger has recorded: its content
    /// hash, whether it was removed, its clients and start. Read from columns, no object parsed.
    /// Call after `catchUp`.
    public func knownAppointments() throws -> [String: KnownAppointment] {
        try pool.read { db in
            var out: [String: KnownAppointment] = [:]
            let rows = try Row.fetchCursor(db, sql: """
                SELECT o.appointment_id, o.content_hash, o.client_ids, o.start_millis, a.removed
                FROM appointments_objects o JOIN appointments a USING (appointment_id)
                """)
            while let row = try rows.next() {
                let id: String = row["appointment_id"]
                let clients = AppointmentsProjection.clientIds(fromText: row["client_ids"])
                out[id] = KnownAppointment(
                    id: id, contentHash: row["content_hash"], removed: (row["removed"] as Int64? ?? 0) != 0,
                    clientIds: clients, startMillis: row["start_millis"])
            }
            return out
        }
    }

    /// The last recorded objects of some appointments, and those whose object could not be read.
    public struct RecordedObjects: Sendable {
        public var objects: [String: JSONValue] = [:]
        /// Appointment id → why its last observation could not be read.
        public var unreadable: [String: String] = [:]

        public init(objects: [String: JSONValue] = [:], unreadable: [String: String] = [:]) {
            self.objects = objects
            self.unreadable = unreadable
        }
    }

    /// The last recorded object of each of `ids` (for the field-level diff of a change), read from
    /// the log: the stream index names each one's last `appointment.discovered` or `changed` that
    /// the appointments view applied (a quarantined one never was), and the reader reads those
    /// events in one pass in log order, opening sealed ones with its keys. An id the ledger has
    /// not observed is left out; one whose event cannot be parsed is in `unreadable`, the others
    /// are read all the same. Throws only when the log or the views cannot be read. Call after
    /// `catchUp`.
    public func recordedObjects(_ ids: [String], reader: LedgerReader) throws -> RecordedObjects {
        var wanted: [UInt64: String] = [:]
        try pool.read { db in
            let last = try db.cachedStatement(sql: """
                SELECT max(seq) FROM event_streams WHERE stream = ? AND type IN (?, ?)
                  AND seq NOT IN (SELECT seq FROM quarantine WHERE projection = ?)
                """)
            for id in Set(ids) {
                if let seq = try Int64.fetchOne(last, arguments: [
                    Streams.appointment(id), EventType.appointmentDiscovered.rawValue, EventType.appointmentChanged.rawValue,
                    AppointmentsProjection().name,
                ]) {
                    wanted[UInt64(seq)] = id
                }
            }
        }
        var out = RecordedObjects()
        for e in try reader.events(at: Array(wanted.keys)) {
            guard let id = wanted[e.seq] else { continue }
            do {
                if let object = try e.dataValue()["object"] { out.objects[id] = object }
            } catch {
                out.unreadable[id] = "seq \(e.seq): \(error)"
            }
        }
        return out
    }

    /// Runs that started and have neither completed nor been abandoned.
    public func openRuns() throws -> [String] {
        try pool.read { db in
            try String.fetchAll(db, sql: "SELECT id FROM sync_logs WHERE status = 'in_progress' ORDER BY start_seq")
        }
    }

    /// The hash of the last recorded roster, if any.
    public func lastRosterHash() throws -> String? {
        try pool.read { db in
            guard let text = try String.fetchOne(db, sql: "SELECT roster FROM appointments_roster WHERE id = 1"),
                let r = try? JSONDecoder().decode(RosterObserved.self, from: Data(text.utf8))
            else { return nil }
            return r.rosterHash
        }
    }

    /// The patients the log records as forgotten (`patient.forgotten` in their `patient/ID`
    /// streams), from the per-stream index: a range of its key, not a scan of every entry.
    public func forgottenPatients() throws -> Set<String> {
        try pool.read { db in
            let streams = try String.fetchAll(db, sql: "SELECT DISTINCT stream FROM event_streams WHERE stream >= 'patient/' AND stream < 'patient0' AND type = ?",
                                              arguments: [EventType.patientForgotten.rawValue])
            return Set(streams.map { String($0.dropFirst("patient/".count)) })
        }
    }

    /// The seqs of one stream's events, in order (from the per-stream index).
    public func streamSeqs(_ stream: String, through: UInt64? = nil, types: [EventType]? = nil) throws -> [UInt64] {
        try pool.read { db in
            var sql = "SELECT seq FROM event_streams WHERE stream = ? AND seq <= ?"
            var args: [(any DatabaseValueConvertible)?] = [stream, Int64(clamping: through ?? UInt64(Int64.max))]
            if let types {
                sql += " AND type IN (\(types.map { _ in "?" }.joined(separator: ", ")))"
                args += types.map { $0.rawValue }
            }
            return try Int64.fetchAll(db, sql: sql + " ORDER BY seq", arguments: StatementArguments(args)).map { UInt64($0) }
        }
    }

    /// The content hash of the last recorded practice settings, if any.
    public func lastSettingsHash(_ reader: LedgerReader) throws -> String? {
        guard let seq = try streamSeqs(Streams.settings).last,
            let e = try reader.events(at: [seq]).first
        else { return nil }
        return try e.dataValue()["content_hash"]?.stringValue
    }
}
