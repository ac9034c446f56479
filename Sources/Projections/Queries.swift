import Domain
import Foundation
import GRDB
import JSONCore
import Ledger

/// One row of a view, columns in the view's order, values as JSON (booleans and the
/// `metadata` object already typed) so the CLI can print a table or `--json` alike.
public struct ViewRow: Sendable, Hashable {
    public var columns: [String]
    public var values: [JSONValue]
    public init(columns: [String], values: [JSONValue]) {
        self.columns = columns
        self.values = values
    }
    public subscript(_ column: String) -> JSONValue? {
        get { columns.firstIndex(of: column).map { values[$0] } }
        set { if let i = columns.firstIndex(of: column) { values[i] = newValue ?? .null } }
    }
    public var json: JSONValue {
        .object(Dictionary(uniqueKeysWithValues: zip(columns, values)))
    }

    /// Cancelled or removed: what `upcoming` and `meeting-urls` leave out unless asked (`--all`).
    public var hiddenByDefault: Bool { self["status"]?.stringValue == "cancelled" || self["removed"] == .bool(true) }

    /// `start_local` / `end_local` (ISO 8601 with the zone's offset) after `start_at` / `end_at`:
    /// what the CLI's `--json` and the read API show a practice.
    public func localized(in zone: ZoneRules) -> ViewRow {
        var r = ViewRow(columns: [], values: [])
        for (c, v) in zip(columns, values) {
            r.columns.append(c)
            r.values.append(v)
            if c == "start_at" || c == "end_at" {
                r.columns.append(c == "start_at" ? "start_local" : "end_local")
                r.values.append(v.stringValue.flatMap(ISOTime.parse).map { .string(LocalFormat.iso($0, zone)) } ?? .null)
            }
        }
        return r
    }
}

public struct AppointmentFilter: Sendable {
    public var organizationId: String?
    public var patientId: String?
    public var appointmentId: String?
    /// Inclusive bounds on start_at (ISO 8601 UTC with milliseconds, compared as text).
    public var from: String?
    public var to: String?
    public var hideRemoved = false
    public init(organizationId: String? = nil, patientId: String? = nil, appointmentId: String? = nil,
                from: String? = nil, to: String? = nil, hideRemoved: Bool = false) {
        self.organizationId = organizationId
        self.patientId = patientId
        self.appointmentId = appointmentId
        self.from = from
        self.to = to
        self.hideRemoved = hideRemoved
    }
}

let booleanColumns: Set<String> = ["removed"]
let objectColumns: Set<String> = ["metadata"]

func viewRows(_ db: Database, columns: [String], sql: String, arguments: StatementArguments) throws -> [ViewRow] {
    try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
        ViewRow(columns: columns, values: columns.map { c in
            let v: DatabaseValue = row[c]
            switch v.storage {
            case .null: return .null
            case .int64(let i): return booleanColumns.contains(c) ? .bool(i != 0) : .number(Double(i))
            case .double(let d): return .number(d)
            case .string(let s):
                if objectColumns.contains(c), let o = try? FastJSON.parse(Array(s.utf8)) { return o }
                return .string(s)
            case .blob(let b): return .string(b.base64EncodedString())
            }
        })
    }
}

/// Reads of the views. `t` picks the live tables (or an as-of database's own).
public enum Views {
    public static func appointments(_ db: Database, _ f: AppointmentFilter) throws -> [ViewRow] {
        let cols = AppointmentsProjection.columns
        var wheres: [String] = []
        var args: [(any DatabaseValueConvertible)?] = []
        if let o = f.organizationId {
            wheres.append("appointment_id IN (SELECT appointment_id FROM appointment_patients WHERE organization_id = ?)")
            args.append(o)
        }
        if let p = f.patientId {
            wheres.append("appointment_id IN (SELECT appointment_id FROM appointment_patients WHERE patient_id = ?)")
            args.append(p)
        }
        if let a = f.appointmentId { wheres.append("appointment_id = ?"); args.append(a) }
        if let from = f.from { wheres.append("start_at >= ?"); args.append(from) }
        if let to = f.to { wheres.append("start_at <= ?"); args.append(to) }
        if f.hideRemoved { wheres.append("removed = 0") }
        let whereSQL = wheres.isEmpty ? "" : " WHERE " + wheres.joined(separator: " AND ")
        return try viewRows(
            db, columns: cols,
            sql: "SELECT \(cols.joined(separator: ", ")) FROM appointments\(whereSQL) ORDER BY start_at, appointment_id",
            arguments: StatementArguments(args))
    }

    public static func meetingURLs(_ db: Database, _ f: AppointmentFilter) throws -> [ViewRow] {
        let cols = MeetingURLsProjection.columns
        let (w, args) = scope(f, alias: "m")
        return try viewRows(
            db, columns: cols,
            sql: "SELECT \(cols.map { "m." + $0 }.joined(separator: ", ")) FROM appointment_meeting_urls m LEFT JOIN appointments a USING (appointment_id)\(w) ORDER BY a.start_at, m.appointment_id",
            arguments: args)
    }

    public static func locations(_ db: Database, _ f: AppointmentFilter) throws -> [ViewRow] {
        let cols = LocationsProjection.columns
        let (w, args) = scope(f, alias: "l")
        return try viewRows(
            db, columns: cols,
            sql: "SELECT \(cols.map { "l." + $0 }.joined(separator: ", ")) FROM appointment_locations l LEFT JOIN appointments a USING (appointment_id)\(w) ORDER BY a.start_at, l.appointment_id",
            arguments: args)
    }

    static func scope(_ f: AppointmentFilter, alias: String) -> (String, StatementArguments) {
        var wheres: [String] = []
        var args: [(any DatabaseValueConvertible)?] = []
        if let o = f.organizationId {
            wheres.append("\(alias).appointment_id IN (SELECT appointment_id FROM appointment_patients WHERE organization_id = ?)")
            args.append(o)
        }
        if let p = f.patientId {
            wheres.append("\(alias).appointment_id IN (SELECT appointment_id FROM appointment_patients WHERE patient_id = ?)")
            args.append(p)
        }
        if let from = f.from { wheres.append("a.start_at >= ?"); args.append(from) }
        if let to = f.to { wheres.append("a.start_at <= ?"); args.append(to) }
        if f.hideRemoved { wheres.append("coalesce(a.removed, 0) = 0") }
        return (wheres.isEmpty ? "" : " WHERE " + wheres.joined(separator: " AND "), StatementArguments(args))
    }

    /// The sync types that have runs (from `sync_log_totals`; views of schema version 1, which a
    /// server may read while its first catch-up rebuilds them, have only `sync_logs`).
    public static func syncTypes(_ db: Database) throws -> [String] {
        try String.fetchAll(db, sql: "SELECT DISTINCT sync_type FROM " + (try db.tableExists("sync_log_totals") ? "sync_log_totals" : "sync_logs"))
    }

    /// One run, by its id (the table's key), or nil.
    public static func syncLog(_ db: Database, id: String) throws -> ViewRow? {
        let cols = SyncLogsProjection.columns
        return try viewRows(db, columns: cols, sql: "SELECT \(cols.joined(separator: ", ")) FROM sync_logs WHERE id = ?", arguments: [id]).first
    }

    public static func syncLogs(_ db: Database, limit: Int?, type: String?, statuses: [String]? = nil) throws -> [ViewRow] {
        let cols = SyncLogsProjection.columns
        if let type, let asked = statuses, Set(asked).count > 1, let limit {
            let statuses = Array(Set(asked)).sorted()
            // One walk back through the (sync_type, status, started_at) index per status, merged:
            // `status IN (…)` would read every run of those statuses to sort them.
            let one = """
                SELECT * FROM (SELECT \(cols.joined(separator: ", ")), start_seq FROM sync_logs WHERE sync_type = ? AND status = ?
                  ORDER BY started_at DESC, start_seq DESC LIMIT ?)
                """
            let sql = "SELECT \(cols.joined(separator: ", ")) FROM (\(statuses.map { _ in one }.joined(separator: " UNION ALL ")))"
                + " ORDER BY started_at DESC, start_seq DESC LIMIT ?"
            let args = statuses.flatMap { [type, $0, limit] as [any DatabaseValueConvertible] } + [limit]
            return try viewRows(db, columns: cols, sql: sql, arguments: StatementArguments(args))
        }
        var sql = "SELECT \(cols.joined(separator: ", ")) FROM sync_logs"
        var args: [(any DatabaseValueConvertible)?] = []
        var conditions: [String] = []
        if let type { conditions.append("sync_type = ?"); args.append(type) }
        if let statuses {
            conditions.append("status IN (\(statuses.map { _ in "?" }.joined(separator: ", ")))")
            args += statuses.map { $0 as (any DatabaseValueConvertible)? }
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY started_at DESC, start_seq DESC"
        if let limit { sql += " LIMIT ?"; args.append(limit) }
        return try viewRows(db, columns: cols, sql: sql, arguments: StatementArguments(args))
    }
}

extension Views {
    /// The roster the views attribute appointments with (the latest `roster.observed`), or nil
    /// before any run recorded one. It holds the patients' names: print them, never log them.
    public static func roster(_ db: Database) throws -> RosterObserved? {
        guard try db.tableExists("appointments_roster"),
            let text = try String.fetchOne(db, sql: "SELECT roster FROM appointments_roster WHERE id = 1") else { return nil }
        return try? JSONDecoder().decode(RosterObserved.self, from: Data(text.utf8))
    }
}

extension Views {
    /// Columns of the appointment shown beside a link or a location.
    static let appointmentContext = ["start_at", "end_at", "patient_id", "organization_id", "status", "removed"]

    /// `appointment_meeting_urls` rows with the appointment's time, patient, organization, status.
    public static func meetingURLsWithAppointments(_ db: Database, _ f: AppointmentFilter) throws -> [ViewRow] {
        let cols = MeetingURLsProjection.columns
        let (w, args) = scope(f, alias: "m")
        return try viewRows(
            db, columns: cols + appointmentContext,
            sql: "SELECT \((cols.map { "m." + $0 } + appointmentContext.map { "a." + $0 }).joined(separator: ", ")) FROM appointment_meeting_urls m LEFT JOIN appointments a USING (appointment_id)\(w) ORDER BY a.start_at, m.appointment_id",
            arguments: args)
    }

    /// `appointment_locations` rows with the appointment's time, patient, organization, status.
    public static func locationsWithAppointments(_ db: Database, _ f: AppointmentFilter) throws -> [ViewRow] {
        let cols = LocationsProjection.columns
        let (w, args) = scope(f, alias: "l")
        return try viewRows(
            db, columns: cols + appointmentContext,
            sql: "SELECT \((cols.map { "l." + $0 } + appointmentContext.map { "a." + $0 }).joined(separator: ", ")) FROM appointment_locations l LEFT JOIN appointments a USING (appointment_id)\(w) ORDER BY a.start_at, l.appointment_id",
            arguments: args)
    }
}
