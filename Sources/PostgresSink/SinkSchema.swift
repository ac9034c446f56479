import Foundation

/// One column of a sink table: its PostgreSQL name and type, and the SQLite expression (over the
/// view's tables) that gives its value in COPY's text form.
struct SinkColumn: Sendable {
    var name: String
    var type: String
    var constraint: String = ""
    var sqlite: String

    /// information_schema.columns.data_type for `type`.
    var informationType: String {
        switch type {
        case "timestamptz": return "timestamp with time zone"
        default: return type
        }
    }
}

/// One sink table: which SQLite rows feed it and how they are keyed. Every table is keyed by an
/// appointment id except `sync_logs` (run id).
struct SinkTable: Sendable {
    enum Key: Sendable { case appointment, run }
    var name: String
    var key: Key
    /// The PostgreSQL key column (deletes by key use it).
    var keyColumn: String
    /// The SQLite key expression and FROM clause.
    var sqliteKey: String
    var sqliteFrom: String
    var columns: [SinkColumn]
    var tableConstraints: [String] = []
    var indexes: [String] = []
}

/// The sink's tables, the checkpoints, and their DDL. Changing anything here means bumping
/// `SinkSchema.version`: a sink of another version is rebuilt.
enum SinkSchema {
    /// 1: first version.
    static let version = 1

    /// The SQLite projections the sink ships; their fold versions are recorded per checkpoint row.
    static let projections = ["appointments", "meeting_urls", "locations", "sync_logs"]

    static func ts(_ expr: String) -> String { expr }

    static let tables: [SinkTable] = [
        SinkTable(
            name: "appointments", key: .appointment, keyColumn: "pq_appointment_id",
            sqliteKey: "a.appointment_id",
            sqliteFrom: "appointments a LEFT JOIN appointment_locations l ON l.appointment_id = a.appointment_id",
            columns: [
                SinkColumn(name: "pq_appointment_id", type: "text", constraint: "NOT NULL UNIQUE", sqlite: "a.appointment_id"),
                SinkColumn(name: "patient_id", type: "text", sqlite: "a.patient_id"),
                SinkColumn(name: "organization_id", type: "text", sqlite: "a.organization_id"),
                SinkColumn(name: "provider_id", type: "text", sqlite: "a.provider_id"),
                SinkColumn(name: "start_time", type: "timestamptz", sqlite: "a.start_at"),
                SinkColumn(name: "end_time", type: "timestamptz", sqlite: "a.end_at"),
                SinkColumn(name: "status", type: "text", constraint: "NOT NULL", sqlite: "a.status"),
                SinkColumn(name: "meeting_url", type: "text", sqlite: "a.meeting_url"),
                SinkColumn(name: "location_info", type: "jsonb", sqlite: """
                    CASE WHEN l.appointment_id IS NULL THEN NULL ELSE json_object('locationId', l.location_id,
                      'locationName', l.location_name, 'placeOfService', l.place_of_service,
                      'locationType', l.visit_type, 'address', l.address) END
                    """),
                SinkColumn(name: "removed", type: "boolean", constraint: "NOT NULL", sqlite: "CASE WHEN a.removed THEN 't' ELSE 'f' END"),
                SinkColumn(name: "intakeq_client_id", type: "text", sqlite: "a.intakeq_client_id"),
                SinkColumn(name: "client_name", type: "text", sqlite: "a.client_name"),
                SinkColumn(name: "practitioner_id", type: "text", sqlite: "a.practitioner_id"),
                SinkColumn(name: "practitioner_name", type: "text", sqlite: "a.practitioner_name"),
                SinkColumn(name: "service_name", type: "text", sqlite: "a.service_name"),
                SinkColumn(name: "intakeq_status", type: "text", sqlite: "a.intakeq_status"),
                SinkColumn(name: "duration_minutes", type: "integer", sqlite: "a.duration_minutes"),
                SinkColumn(name: "location_id", type: "text", sqlite: "a.location_id"),
                SinkColumn(name: "location_name", type: "text", sqlite: "a.location_name"),
                SinkColumn(name: "place_of_service", type: "text", sqlite: "a.place_of_service"),
                SinkColumn(name: "visit_type", type: "text", constraint: "NOT NULL", sqlite: "a.visit_type"),
                SinkColumn(name: "first_seen_at", type: "timestamptz", constraint: "NOT NULL", sqlite: "a.first_seen_at"),
                SinkColumn(name: "last_changed_at", type: "timestamptz", constraint: "NOT NULL", sqlite: "a.last_changed_at"),
                SinkColumn(name: "last_synced_at", type: "timestamptz", constraint: "NOT NULL", sqlite: "a.last_synced_at"),
                SinkColumn(name: "version", type: "integer", constraint: "NOT NULL", sqlite: "a.version"),
                SinkColumn(name: "last_seq", type: "bigint", constraint: "NOT NULL", sqlite: "a.last_seq"),
            ],
            indexes: [
                "(start_time)", "(organization_id, start_time)", "(patient_id, start_time)",
                "(provider_id, start_time)",
            ]),
        SinkTable(
            name: "appointment_patients", key: .appointment, keyColumn: "appointment_id",
            sqliteKey: "appointment_id", sqliteFrom: "appointment_patients",
            columns: [
                SinkColumn(name: "appointment_id", type: "text", constraint: "NOT NULL", sqlite: "appointment_id"),
                SinkColumn(name: "patient_id", type: "text", constraint: "NOT NULL", sqlite: "patient_id"),
                SinkColumn(name: "organization_id", type: "text", sqlite: "organization_id"),
                SinkColumn(name: "role", type: "text", constraint: "NOT NULL", sqlite: "role"),
            ],
            tableConstraints: ["PRIMARY KEY (appointment_id, patient_id)"],
            indexes: ["(patient_id)", "(organization_id)"]),
        SinkTable(
            name: "appointment_meeting_urls", key: .appointment, keyColumn: "appointment_id",
            sqliteKey: "appointment_id", sqliteFrom: "appointment_meeting_urls",
            columns: [
                SinkColumn(name: "appointment_id", type: "text", constraint: "PRIMARY KEY", sqlite: "appointment_id"),
                SinkColumn(name: "meeting_url", type: "text", constraint: "NOT NULL", sqlite: "meeting_url"),
                SinkColumn(name: "url_provider", type: "text", constraint: "NOT NULL", sqlite: "url_provider"),
                SinkColumn(name: "source_field", type: "text", constraint: "NOT NULL", sqlite: "source_field"),
                SinkColumn(name: "changed_at", type: "timestamptz", constraint: "NOT NULL", sqlite: "changed_at"),
            ]),
        SinkTable(
            name: "appointment_locations", key: .appointment, keyColumn: "appointment_id",
            sqliteKey: "appointment_id", sqliteFrom: "appointment_locations",
            columns: [
                SinkColumn(name: "appointment_id", type: "text", constraint: "PRIMARY KEY", sqlite: "appointment_id"),
                SinkColumn(name: "location_id", type: "text", sqlite: "location_id"),
                SinkColumn(name: "location_name", type: "text", sqlite: "location_name"),
                SinkColumn(name: "address", type: "text", sqlite: "address"),
                SinkColumn(name: "place_of_service", type: "text", sqlite: "place_of_service"),
                SinkColumn(name: "visit_type", type: "text", constraint: "NOT NULL", sqlite: "visit_type"),
            ],
            indexes: ["(location_id)"]),
        SinkTable(
            name: "sync_logs", key: .run, keyColumn: "id", sqliteKey: "id", sqliteFrom: "sync_logs",
            columns: [
                SinkColumn(name: "id", type: "text", constraint: "PRIMARY KEY", sqlite: "id"),
                SinkColumn(name: "sync_type", type: "text", constraint: "NOT NULL CHECK (sync_type IN ('manual_patient', 'manual_org_bulk', 'automated_daily', 'webhook'))", sqlite: "sync_type"),
                SinkColumn(name: "organization_id", type: "text", sqlite: "organization_id"),
                SinkColumn(name: "patient_id", type: "text", sqlite: "patient_id"),
                SinkColumn(name: "triggered_by", type: "text", sqlite: "triggered_by"),
                SinkColumn(name: "started_at", type: "timestamptz", constraint: "NOT NULL", sqlite: "started_at"),
                SinkColumn(name: "completed_at", type: "timestamptz", sqlite: "completed_at"),
                SinkColumn(name: "duration_ms", type: "bigint", sqlite: "duration_ms"),
                SinkColumn(name: "status", type: "text", constraint: "NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed', 'partial_success'))", sqlite: "status"),
                SinkColumn(name: "appointments_new", type: "integer", constraint: "NOT NULL DEFAULT 0", sqlite: "appointments_new"),
                SinkColumn(name: "appointments_updated", type: "integer", constraint: "NOT NULL DEFAULT 0", sqlite: "appointments_updated"),
                SinkColumn(name: "appointments_unchanged", type: "integer", constraint: "NOT NULL DEFAULT 0", sqlite: "appointments_unchanged"),
                SinkColumn(name: "appointments_removed", type: "integer", constraint: "NOT NULL DEFAULT 0", sqlite: "appointments_removed"),
                SinkColumn(name: "appointments_errors", type: "integer", constraint: "NOT NULL DEFAULT 0", sqlite: "appointments_errors"),
                SinkColumn(name: "patients_processed", type: "integer", constraint: "NOT NULL DEFAULT 0", sqlite: "patients_processed"),
                SinkColumn(name: "patients_failed", type: "integer", constraint: "NOT NULL DEFAULT 0", sqlite: "patients_failed"),
                SinkColumn(name: "error_message", type: "text", sqlite: "error_message"),
                SinkColumn(name: "metadata", type: "jsonb", constraint: "NOT NULL", sqlite: "metadata"),
                SinkColumn(name: "start_seq", type: "bigint", sqlite: "start_seq"),
                SinkColumn(name: "end_seq", type: "bigint", sqlite: "end_seq"),
            ],
            indexes: ["(started_at)", "(organization_id, started_at)", "(status, started_at)"]),
    ]

    static let checkpointColumns: [(String, String)] = [
        ("projection", "text"), ("seq", "bigint"), ("chain_hash", "text"), ("schema_version", "integer"),
        ("fold_version", "integer"), ("updated_at", "timestamp with time zone"),
    ]

    /// A quoted identifier (schema names are validated to [a-z_][a-z0-9_]*, but quote anyway).
    static func q(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    /// CREATE statements for the tables in `schema` (which must exist); indexes separately so a
    /// rebuild can add them after the bulk load.
    static func createTables(in schema: String) -> [String] {
        var out: [String] = []
        for t in tables {
            let cols = t.columns.map { "\($0.name) \($0.type)" + ($0.constraint.isEmpty ? "" : " " + $0.constraint) }
            out.append("CREATE TABLE \(q(schema)).\(t.name) (\((cols + t.tableConstraints).joined(separator: ", ")))")
        }
        out.append("""
            CREATE TABLE \(q(schema)).checkpoints (projection text PRIMARY KEY, seq bigint NOT NULL,
              chain_hash text NOT NULL, schema_version integer NOT NULL, fold_version integer NOT NULL,
              updated_at timestamptz NOT NULL DEFAULT now())
            """)
        return out
    }

    static func createIndexes(in schema: String) -> [String] {
        var out: [String] = []
        for t in tables {
            for (i, cols) in t.indexes.enumerated() {
                out.append("CREATE INDEX IF NOT EXISTS \(t.name)_ix\(i) ON \(q(schema)).\(t.name) \(cols)")
            }
        }
        return out
    }

    /// Expected (table, column) → information_schema data type, checkpoints included.
    static var expectedColumns: [String: String] {
        var out: [String: String] = [:]
        for t in tables { for c in t.columns { out[t.name + "." + c.name] = c.informationType } }
        for (c, type) in checkpointColumns { out["checkpoints." + c] = type }
        return out
    }

    static func isValidSchemaName(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 48 else { return false }
        let lowerOrUnderscore: (UInt8) -> Bool = { ($0 >= 97 && $0 <= 122) || $0 == 95 }
        return lowerOrUnderscore(first) && name.utf8.allSatisfy { lowerOrUnderscore($0) || ($0 >= 48 && $0 <= 57) }
            && !name.hasPrefix("pg_") && !name.hasSuffix("__shadow") && !name.hasSuffix("__old")
    }
}
