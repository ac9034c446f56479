import Foundation
import GRDB
import JSONCore
import Projections

/// One `sync_logs` row as the admin pages show it.
struct RunRow: Sendable {
    var id: String
    var syncType: String
    var organizationId: String?
    var patientId: String?
    var triggeredBy: String?
    var startedAt: String
    var completedAt: String?
    var durationMs: Int64?
    var status: String
    var new = 0, updated = 0, unchanged = 0, removed = 0, errors = 0
    var errorMessage: String?
    var metadata: JSONValue = .null
    var startSeq: Int64?
    var endSeq: Int64?

    var apiCalls: Int? { metadata["intakeq_api_calls"]?.doubleValue.map { Int($0) } }

    init(_ r: Row) {
        id = r["id"]
        syncType = r["sync_type"]
        organizationId = r["organization_id"]
        patientId = r["patient_id"]
        triggeredBy = r["triggered_by"]
        startedAt = r["started_at"]
        completedAt = r["completed_at"]
        durationMs = r["duration_ms"]
        status = r["status"]
        new = r["appointments_new"] ?? 0
        updated = r["appointments_updated"] ?? 0
        unchanged = r["appointments_unchanged"] ?? 0
        removed = r["appointments_removed"] ?? 0
        errors = r["appointments_errors"] ?? 0
        errorMessage = r["error_message"]
        if let text: String = r["metadata"] { metadata = (try? FastJSON.parse(Array(text.utf8))) ?? .null }
        startSeq = r["start_seq"]
        endSeq = r["end_seq"]
    }
}

/// The runs page's filters (all optional). `organizationId` matches runs scoped to that
/// organisation or to one of its patients; `patientIds` are that organisation's patients.
struct RunFilter: Sendable {
    var organizationId: String?
    var patientIds: [String] = []
    var syncType: String?
    var status: String?
    /// Inclusive bounds on started_at (ISO 8601 UTC, compared as text).
    var from: String?
    var to: String?

    func whereClause() -> (String, StatementArguments) {
        var w: [String] = []
        var args: [(any DatabaseValueConvertible)?] = []
        if let o = organizationId {
            let marks = Array(repeating: "?", count: patientIds.count).joined(separator: ", ")
            w.append(patientIds.isEmpty ? "organization_id = ?" : "(organization_id = ? OR patient_id IN (\(marks)))")
            args.append(o)
            args += patientIds.map { $0 }
        }
        if let t = syncType { w.append("sync_type = ?"); args.append(t) }
        if let s = status { w.append("status = ?"); args.append(s) }
        if let f = from { w.append("started_at >= ?"); args.append(f) }
        if let t = to { w.append("started_at <= ?"); args.append(t) }
        return (w.isEmpty ? "" : " WHERE " + w.joined(separator: " AND "), StatementArguments(args))
    }
}

/// What a run recorded about one appointment.
struct RunChange: Sendable {
    var appointmentId: String
    var seq: Int64
    var type: String
}

enum AdminQueries {
    static let runColumns = """
        id, sync_type, organization_id, patient_id, triggered_by, started_at, completed_at, duration_ms, status,
        appointments_new, appointments_updated, appointments_unchanged, appointments_removed, appointments_errors,
        error_message, metadata, start_seq, end_seq
        """

    static func runs(_ db: Database, _ f: RunFilter, limit: Int) throws -> (rows: [RunRow], total: Int) {
        let (w, args) = f.whereClause()
        let total = try Int.fetchOne(db, sql: "SELECT count(*) FROM sync_logs" + w, arguments: args) ?? 0
        var a = args
        a += [limit]
        let rows = try Row.fetchAll(db, sql: "SELECT \(runColumns) FROM sync_logs\(w) ORDER BY started_at DESC, start_seq DESC LIMIT ?",
                                    arguments: a).map(RunRow.init)
        return (rows, total)
    }

    /// started_at and status of the filtered runs since `since` (for the 30-day chart).
    static func runTimes(_ db: Database, _ f: RunFilter, since: String) throws -> [(String, String)] {
        var g = f
        g.from = max(since, f.from ?? since)
        let (w, args) = g.whereClause()
        return try Row.fetchAll(db, sql: "SELECT started_at, status FROM sync_logs" + w, arguments: args).map {
            ($0["started_at"] as String, $0["status"] as String)
        }
    }

    static func run(_ db: Database, id: String) throws -> RunRow? {
        try Row.fetchOne(db, sql: "SELECT \(runColumns) FROM sync_logs WHERE id = ?", arguments: [id]).map(RunRow.init)
    }

    static func latest(_ db: Database, type: String, status: String? = nil) throws -> RunRow? {
        var sql = "SELECT \(runColumns) FROM sync_logs WHERE sync_type = ?"
        var args: [(any DatabaseValueConvertible)?] = [type]
        if let status { sql += " AND status = ?"; args.append(status) }
        return try Row.fetchOne(db, sql: sql + " ORDER BY started_at DESC LIMIT 1", arguments: StatementArguments(args)).map(RunRow.init)
    }

    static func count(_ db: Database, sql: String) throws -> Int { try Int.fetchOne(db, sql: sql) ?? 0 }

    /// The appointments whose new, changed or removed events lie in the run's seq range (found
    /// through the per-stream index, no scan of the log).
    static func changes(_ db: Database, from: Int64, through: Int64) throws -> [RunChange] {
        try Row.fetchAll(db, sql: """
            SELECT stream, seq, type FROM event_streams
            WHERE seq BETWEEN ? AND ? AND stream LIKE 'appointment/%'
              AND type IN ('appointment.discovered', 'appointment.changed', 'appointment.removed')
            ORDER BY seq LIMIT 5000
            """, arguments: [from, through]).map { r in
            let stream: String = r["stream"]
            return RunChange(appointmentId: String(stream.dropFirst("appointment/".count)), seq: r["seq"], type: r["type"])
        }
    }

    /// The appointments view rows of these ids, keyed by id: one lookup each for a few, one
    /// read of the view for many (a first run discovers the whole practice).
    static func appointments(_ db: Database, ids: [String]) throws -> [String: ViewRow] {
        let wanted = Set(ids)
        var out: [String: ViewRow] = [:]
        if wanted.count > 20 {
            for row in try Views.appointments(db, AppointmentFilter()) {
                if let id = row["appointment_id"]?.stringValue, wanted.contains(id) { out[id] = row }
            }
            return out
        }
        for id in wanted {
            if let row = try Views.appointments(db, AppointmentFilter(appointmentId: id)).first { out[id] = row }
        }
        return out
    }
}
