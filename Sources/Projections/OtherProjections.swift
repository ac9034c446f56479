import Domain
import Foundation
import GRDB
import JSONCore
import Ledger

/// `appointment_meeting_urls`: one row per appointment that has a join link.
public struct MeetingURLsProjection: Projection {
    public init() {}
    public let name = "meeting_urls"
    /// 2: folded again for the cleaned join links of forgotten patients (`AppointmentsProjection` 5).
    public let schemaVersion = 2
    public let tables = ["appointment_meeting_urls"]
    public static let columns = ["appointment_id", "meeting_url", "url_provider", "source_field", "changed_at"]

    public func create(_ db: Database, _ t: TableSet) throws {
        try db.execute(sql: """
            CREATE TABLE \(t("appointment_meeting_urls")) (
              appointment_id TEXT PRIMARY KEY, meeting_url TEXT NOT NULL, url_provider TEXT NOT NULL,
              source_field TEXT NOT NULL, changed_at TEXT NOT NULL);
            """)
    }

    public func apply(_ e: EventEnvelope, _ db: Database, _ t: TableSet) throws {
        guard e.eventType == .appointmentDiscovered || e.eventType == .appointmentChanged else { return }
        let f = try e.appointmentFacts().facts
        guard let link = f.meeting else {
            try db.run("DELETE FROM \(t("appointment_meeting_urls")) WHERE appointment_id = ?", [f.appointmentId])
            return
        }
        let current = try String.fetchOne(
            db.cachedStatement(sql: "SELECT meeting_url FROM \(t("appointment_meeting_urls")) WHERE appointment_id = ?"),
            arguments: [f.appointmentId])
        if current == link.url {
            try db.run(
                "UPDATE \(t("appointment_meeting_urls")) SET url_provider = ?, source_field = ? WHERE appointment_id = ?",
                [link.provider, link.sourceField, f.appointmentId])
        } else {
            try db.run(
                "INSERT OR REPLACE INTO \(t("appointment_meeting_urls")) (appointment_id, meeting_url, url_provider, source_field, changed_at) VALUES (?, ?, ?, ?, ?)",
                [f.appointmentId, link.url, link.provider, link.sourceField, e.at])
        }
    }
}

/// `appointment_locations`: where each appointment happens, with the address from the
/// latest practice settings.
public struct LocationsProjection: Projection {
    public init() {}
    public let name = "locations"
    public let schemaVersion = 1
    public let tables = ["appointment_locations", "locations_settings"]
    public static let columns = ["appointment_id", "location_id", "location_name", "address", "place_of_service", "visit_type"]

    public func create(_ db: Database, _ t: TableSet) throws {
        try db.execute(sql: """
            CREATE TABLE \(t("appointment_locations")) (
              appointment_id TEXT PRIMARY KEY, location_id TEXT, location_name TEXT, address TEXT,
              place_of_service TEXT, visit_type TEXT NOT NULL);
            CREATE INDEX \(indexName("appointment_locations")) ON \(t("appointment_locations"))(location_id);
            CREATE TABLE \(t("locations_settings")) (location_id TEXT PRIMARY KEY, name TEXT, address TEXT);
            """)
    }

    public func apply(_ e: EventEnvelope, _ db: Database, _ t: TableSet) throws {
        switch e.eventType {
        case .appointmentDiscovered, .appointmentChanged:
            let f = try e.appointmentFacts().facts
            let address = try f.locationId.flatMap {
                try String.fetchOne(db.cachedStatement(sql: "SELECT address FROM \(t("locations_settings")) WHERE location_id = ?"), arguments: [$0])
            }
            try db.run(
                "INSERT OR REPLACE INTO \(t("appointment_locations")) (appointment_id, location_id, location_name, address, place_of_service, visit_type) VALUES (?, ?, ?, ?, ?, ?)",
                [f.appointmentId, f.locationId, f.locationName, address, f.placeOfService, f.visitType])
        case .settingsObserved:
            let data = try e.projectionValue()
            guard case .array(let locations)? = data["object"]?["Locations"] else {
                throw QuarantineError("practice.settings_observed at seq \(e.seq) has no Locations list")
            }
            try db.execute(sql: "DELETE FROM \(t("locations_settings"))")
            for l in locations {
                guard let id = l["Id"]?.stringValue else { continue }
                try db.run(
                    "INSERT OR REPLACE INTO \(t("locations_settings")) (location_id, name, address) VALUES (?, ?, ?)",
                    [id, l["Name"]?.stringValue, l["Address"]?.stringValue])
            }
            try db.execute(sql: """
                UPDATE \(t("appointment_locations")) SET address =
                  (SELECT address FROM \(t("locations_settings")) s WHERE s.location_id = \(t("appointment_locations")).location_id)
                """)
        default:
            break
        }
    }
}

/// `sync_logs`: one row per sync run, `in_progress` until completed or abandoned; and
/// `sync_log_totals`, its sums by sync type and status, so `/metrics`, the alerts and `status`
/// read a few rows instead of every run a busy server ever recorded (a webhook run every few
/// seconds). Triggers keep the totals equal to `totalsQuery` over `sync_logs`, whatever
/// statement changes a row.
public struct SyncLogsProjection: Projection {
    public init() {}
    public let name = "sync_logs"
    /// 2: `sync_log_totals`, and indexes for each type's and status's latest runs.
    public let schemaVersion = 2
    public let tables = ["sync_logs", "sync_log_totals"]
    public static let columns = [
        "id", "sync_type", "organization_id", "patient_id", "triggered_by", "started_at", "completed_at",
        "duration_ms", "status", "appointments_new", "appointments_updated", "appointments_unchanged",
        "appointments_removed", "appointments_errors", "patients_processed", "patients_failed",
        "error_message", "metadata",
    ]

    /// What one run adds to its (sync type, status) row of `sync_log_totals`: the column and its
    /// value in terms of the run's row (`NEW.` or `OLD.` in a trigger, nothing in `totalsQuery`).
    static let totalled: [(column: String, value: @Sendable (String) -> String)] = [
        ("runs", { _ in "1" }),
        ("appointments_new", { "\($0)appointments_new" }),
        ("appointments_updated", { "\($0)appointments_updated" }),
        ("appointments_removed", { "\($0)appointments_removed" }),
        // Events the run appended (start_seq through end_seq).
        ("events", { r in "CASE WHEN \(r)end_seq IS NOT NULL AND \(r)start_seq IS NOT NULL THEN \(r)end_seq - \(r)start_seq + 1 ELSE 0 END" }),
        ("intakeq_api_calls", { "coalesce(json_extract(\($0)metadata, '$.intakeq_api_calls'), 0)" }),
        ("retries", { "coalesce(json_extract(\($0)metadata, '$.retries'), 0)" }),
        ("rate_limit_waits", { "coalesce(json_extract(\($0)metadata, '$.rate_limit_waits'), 0)" }),
    ]

    /// `sync_log_totals` computed from `sync_logs` itself (what the triggers keep it equal to).
    public static let totalsQuery = """
        SELECT sync_type, status, \(totalled.map { "sum(\($0.value(""))) AS \($0.column)" }.joined(separator: ", "))
        FROM sync_logs GROUP BY sync_type, status
        """

    public func create(_ db: Database, _ t: TableSet) throws {
        try db.execute(sql: """
            CREATE TABLE \(t("sync_logs")) (
              id TEXT PRIMARY KEY, sync_type TEXT NOT NULL, organization_id TEXT, patient_id TEXT,
              triggered_by TEXT, started_at TEXT NOT NULL, completed_at TEXT, duration_ms INTEGER,
              status TEXT NOT NULL, appointments_new INTEGER NOT NULL DEFAULT 0,
              appointments_updated INTEGER NOT NULL DEFAULT 0, appointments_unchanged INTEGER NOT NULL DEFAULT 0,
              appointments_removed INTEGER NOT NULL DEFAULT 0, appointments_errors INTEGER NOT NULL DEFAULT 0,
              patients_processed INTEGER NOT NULL DEFAULT 0, patients_failed INTEGER NOT NULL DEFAULT 0,
              error_message TEXT, metadata TEXT NOT NULL, start_seq INTEGER, end_seq INTEGER);
            CREATE INDEX \(indexName("sync_logs")) ON \(t("sync_logs"))(started_at);
            CREATE INDEX \(indexName("sync_logs")) ON \(t("sync_logs"))(sync_type, started_at, start_seq);
            CREATE INDEX \(indexName("sync_logs")) ON \(t("sync_logs"))(sync_type, status, started_at, start_seq);
            CREATE INDEX \(indexName("sync_logs")) ON \(t("sync_logs"))(start_seq) WHERE status = 'in_progress';
            CREATE TABLE \(t("sync_log_totals")) (
              sync_type TEXT NOT NULL, status TEXT NOT NULL,
              \(Self.totalled.map { "\($0.column) INTEGER NOT NULL" }.joined(separator: ", ")),
              PRIMARY KEY (sync_type, status)) WITHOUT ROWID;
            """)
        // Each run's row is added to its (type, status) row and taken out of it again when it
        // changes or goes; a row of no runs is deleted, so the table is exactly `totalsQuery`.
        // (No UPSERT: SQLite 3.40's ALTER TABLE RENAME, which publishes a rebuild's tables,
        // rewrites a trigger's `excluded.` into the table's name.)
        let totals = t("sync_log_totals")
        let add = """
            INSERT OR IGNORE INTO \(totals) VALUES (NEW.sync_type, NEW.status\(String(repeating: ", 0", count: Self.totalled.count)));
            UPDATE \(totals) SET \(Self.totalled.map { "\($0.column) = \($0.column) + \($0.value("NEW."))" }.joined(separator: ", "))
              WHERE sync_type = NEW.sync_type AND status = NEW.status;
            """
        let take = """
            UPDATE \(totals) SET \(Self.totalled.map { "\($0.column) = \($0.column) - \($0.value("OLD."))" }.joined(separator: ", "))
              WHERE sync_type = OLD.sync_type AND status = OLD.status;
            DELETE FROM \(totals) WHERE sync_type = OLD.sync_type AND status = OLD.status AND runs = 0;
            """
        try db.execute(sql: """
            CREATE TRIGGER \(triggerName("sync_logs")) AFTER INSERT ON \(t("sync_logs")) BEGIN \(add) END;
            CREATE TRIGGER \(triggerName("sync_logs")) AFTER DELETE ON \(t("sync_logs")) BEGIN \(take) END;
            CREATE TRIGGER \(triggerName("sync_logs")) AFTER UPDATE ON \(t("sync_logs")) BEGIN \(take) \(add) END;
            """)
    }

    public func apply(_ e: EventEnvelope, _ db: Database, _ t: TableSet) throws {
        switch e.eventType {
        case .syncStarted:
            let s = try PayloadScan.syncStarted(e.data) ?? e.projectionData(SyncStarted.self)
            guard let run = e.run else { throw QuarantineError("sync.started at seq \(e.seq) has no run id") }
            let metadata: JSONValue = .object([
                "date_range": .object(["start": .string(s.window.start), "end": .string(s.window.end)]),
                "now": .string(s.now), "tool_version": .string(s.toolVersion),
            ])
            // A DELETE of its own, not INSERT OR REPLACE, whose delete fires no trigger.
            try db.run("DELETE FROM \(t("sync_logs")) WHERE id = ?", [run])
            try db.run(
                "INSERT INTO \(t("sync_logs")) (id, sync_type, organization_id, patient_id, triggered_by, started_at, status, metadata, start_seq) VALUES (?, ?, ?, ?, ?, ?, 'in_progress', ?, ?)",
                [run, s.syncType, s.organizationId, s.patientId, s.triggeredBy, e.at, metadata.canonicalText, Int64(e.seq)])
        case .syncCompleted:
            let c = try e.syncCompleted()
            guard let run = e.run else { throw QuarantineError("sync.completed at seq \(e.seq) has no run id") }
            var meta = try existingMetadata(run, db, t)
            meta["warnings"] = .array(c.warnings.map(JSONValue.string))
            meta["errors"] = .array(c.errors.map(JSONValue.string))
            meta["intakeq_api_calls"] = .number(Double(c.api.calls))
            meta["retries"] = .number(Double(c.api.retries))
            meta["rate_limit_waits"] = .number(Double(c.api.rateLimitWaits))
            meta["rate_limit_hit"] = .bool(c.api.rateLimitHit)
            meta["head_before"] = .string(c.headBefore)
            if let missed = c.changesMissedByWebhooks { meta["changes_missed_by_webhooks"] = .number(Double(missed)) }
            try db.run(
                """
                    UPDATE \(t("sync_logs")) SET completed_at = ?, duration_ms = ?, status = ?, appointments_new = ?,
                      appointments_updated = ?, appointments_unchanged = ?, appointments_removed = ?,
                      appointments_errors = ?, patients_processed = ?, patients_failed = ?, error_message = ?,
                      metadata = ?, end_seq = ? WHERE id = ?
                    """,
                [e.at, c.durationMs, c.status, c.counts.new, c.counts.updated, c.counts.unchanged,
                            c.counts.removed, c.counts.errors, c.counts.patientsProcessed, c.counts.patientsFailed,
                            c.errorMessage, JSONValue.object(meta).canonicalText, Int64(e.seq), run])
        case .syncAbandoned:
            let a = try e.projectionData(SyncAbandoned.self)
            try db.run(
                "UPDATE \(t("sync_logs")) SET status = 'failed', completed_at = ?, error_message = ?, end_seq = ? WHERE id = ? AND status = 'in_progress'",
                [e.at, "abandoned: " + a.reason, Int64(e.seq), a.abandonedRun])
        default:
            break
        }
    }

    public func reads(_ e: EventEnvelope) -> Bool {
        e.eventType == .syncStarted || e.eventType == .syncCompleted || e.eventType == .syncAbandoned
    }

    func existingMetadata(_ run: String, _ db: Database, _ t: TableSet) throws -> [String: JSONValue] {
        guard let text = try String.fetchOne(db, sql: "SELECT metadata FROM \(t("sync_logs")) WHERE id = ?", arguments: [run]),
            case .object(let o)? = try? FastJSON.parse(Array(text.utf8))
        else { return [:] }
        return o
    }
}

/// `event_streams`: the per-stream index (stream → seqs), so one appointment's history is
/// found without decoding the whole log. Derived, rebuildable like every view. A run's
/// `sync.completed` is also indexed under each appointment it observed unchanged, so the
/// state of one appointment as of any seq needs only that appointment's rows.
public struct StreamIndexProjection: Projection {
    public init() {}
    public let name = "stream_index"
    /// 2: sync.completed indexed under the appointments it observed unchanged.
    public let schemaVersion = 2
    public let tables = ["event_streams"]

    public func create(_ db: Database, _ t: TableSet) throws {
        try db.execute(sql: """
            CREATE TABLE \(t("event_streams")) (stream TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
              PRIMARY KEY (stream, seq)) WITHOUT ROWID;
            """)
    }

    public func apply(_ e: EventEnvelope, _ db: Database, _ t: TableSet) throws {
        let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO \(t("event_streams")) (stream, seq, type) VALUES (?, ?, ?)")
        try insert.execute(arguments: [e.stream, Int64(e.seq), e.type])
        if e.eventType == .syncCompleted {
            let done = try e.syncCompleted()
            for o in done.unchanged {
                try insert.execute(arguments: [Streams.appointment(o.id), Int64(e.seq), e.type])
            }
        }
    }
}
