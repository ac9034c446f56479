import Domain
import Foundation
import GRDB
import JSONCore
import Ledger

/// `appointments` (one row per appointment) and `appointment_patients` (one row per
/// appointment and in-roster patient). Organization and patient come from the latest
/// `roster.observed`, so a roster change re-attributes every appointment.
public struct AppointmentsProjection: Projection {
    public init() {}
    public let name = "appointments"
    /// 2: the roster is kept as lookup tables (v1 decoded the roster JSON for every event).
    /// 3: `appointments_objects` keeps what the next sync's diff needs (content hash, client ids,
    /// start), so a run no longer re-parses every object ever recorded.
    /// 4: `appointments_objects` no longer copies the object text (~1.6 KB per appointment): the
    /// sync's field-level diff reads the prior object from the log (`recordedObjects`), and a new
    /// roster re-attributes appointments from their columns; `client_ids` is a JSON array (it was
    /// the ids joined by spaces, which an empty id or one with a space in it would misread).
    /// 5: an observation naming a forgotten patient reads with its clear telehealth part cleaned
    /// (redaction version 5): views folded before keep its join link ("…&uname=…") in
    /// `meeting_url`, so they are folded again (review).
    public let schemaVersion = 5
    public let tables = ["appointments", "appointment_patients", "appointments_objects", "appointments_roster",
                         "appointments_roster_clients", "appointments_roster_providers"]

    public static let columns = [
        "appointment_id", "organization_id", "patient_id", "intakeq_client_id", "client_name",
        "practitioner_id", "practitioner_name", "provider_id", "service_name", "status",
        "intakeq_status", "start_at", "end_at", "duration_minutes", "location_id", "location_name",
        "place_of_service", "visit_type", "meeting_url", "removed", "first_seen_at",
        "last_changed_at", "last_synced_at", "version", "last_seq",
    ]

    public func create(_ db: Database, _ t: TableSet) throws {
        try db.execute(sql: """
            CREATE TABLE \(t("appointments")) (
              appointment_id TEXT PRIMARY KEY, organization_id TEXT, patient_id TEXT,
              intakeq_client_id TEXT, client_name TEXT, practitioner_id TEXT, practitioner_name TEXT,
              provider_id TEXT, service_name TEXT, status TEXT NOT NULL, intakeq_status TEXT,
              start_at TEXT, end_at TEXT, duration_minutes INTEGER, location_id TEXT, location_name TEXT,
              place_of_service TEXT, visit_type TEXT NOT NULL, meeting_url TEXT,
              removed INTEGER NOT NULL DEFAULT 0, first_seen_at TEXT NOT NULL, last_changed_at TEXT NOT NULL,
              last_synced_at TEXT NOT NULL, version INTEGER NOT NULL, last_seq INTEGER NOT NULL);
            CREATE INDEX \(indexName("appointments")) ON \(t("appointments"))(start_at);
            CREATE INDEX \(indexName("appointments")) ON \(t("appointments"))(organization_id, start_at);
            CREATE TABLE \(t("appointment_patients")) (
              appointment_id TEXT NOT NULL, patient_id TEXT NOT NULL, organization_id TEXT,
              role TEXT NOT NULL, PRIMARY KEY (appointment_id, patient_id));
            CREATE INDEX \(indexName("appointment_patients")) ON \(t("appointment_patients"))(patient_id);
            CREATE TABLE \(t("appointments_objects")) (
              appointment_id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, client_ids TEXT NOT NULL,
              start_millis INTEGER);
            CREATE TABLE \(t("appointments_roster")) (id INTEGER PRIMARY KEY CHECK (id = 1), roster TEXT NOT NULL);
            CREATE TABLE \(t("appointments_roster_clients")) (
              intakeq_client_id TEXT PRIMARY KEY, patient_id TEXT NOT NULL, organization_id TEXT NOT NULL);
            CREATE TABLE \(t("appointments_roster_providers")) (intakeq_id TEXT PRIMARY KEY, provider_id TEXT NOT NULL);
            """)
    }

    public func apply(_ e: EventEnvelope, _ db: Database, _ t: TableSet) throws {
        switch e.eventType {
        case .appointmentDiscovered, .appointmentChanged:
            let (object, facts) = try e.appointmentFacts()
            let hash = try e.projectionValue()["content_hash"]?.stringValue ?? contentHash(of: object)
            try db.run(
                """
                    INSERT OR REPLACE INTO \(t("appointments_objects"))
                      (appointment_id, content_hash, client_ids, start_millis) VALUES (?, ?, ?, ?)
                    """,
                [facts.appointmentId, hash, Self.clientIdsText(facts), facts.startMillis])
            let prior = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT first_seen_at, version FROM \(t("appointments")) WHERE appointment_id = ?"),
                arguments: [facts.appointmentId])
            let firstSeen: String = prior?["first_seen_at"] ?? e.at
            let version: Int = (prior?["version"] ?? 0) + 1
            try write(facts, meta: Meta(firstSeen: firstSeen, lastChanged: e.at, lastSynced: e.at,
                                                          version: version, lastSeq: e.seq, removed: false), db, t)
        case .appointmentRemoved:
            let removed = try e.projectionData(AppointmentRemoved.self)
            try db.run(
                """
                    UPDATE \(t("appointments")) SET removed = 1, last_changed_at = ?, last_synced_at = ?,
                      version = version + 1, last_seq = ? WHERE appointment_id = ?
                    """,
                [e.at, e.at, e.seq, removed.appointmentId])
        case .syncCompleted:
            let done = try e.syncCompleted()
            let stmt = try db.cachedStatement(sql: "UPDATE \(t("appointments")) SET last_synced_at = ? WHERE appointment_id = ?")
            for o in done.unchanged { try stmt.execute(arguments: [e.at, o.id]) }
        case .rosterObserved:
            let roster = try e.projectionData(RosterObserved.self)
            try db.run(
                "INSERT OR REPLACE INTO \(t("appointments_roster")) (id, roster) VALUES (1, ?)",
                [String(decoding: encodeData(roster), as: UTF8.self)])
            try storeLookups(roster, db, t)
            try reattribute(db, t)
        default:
            break
        }
    }

    struct Meta {
        var firstSeen: String
        var lastChanged: String
        var lastSynced: String
        var version: Int
        var lastSeq: UInt64
        var removed: Bool
    }

    func write(_ f: AppointmentFacts, meta m: Meta, _ db: Database, _ t: TableSet) throws {
        let members = try self.members(of: f, db, t)
        let primary = members.first
        try db.run(
            """
                INSERT OR REPLACE INTO \(t("appointments")) (\(Self.columns.joined(separator: ", ")))
                VALUES (\(Array(repeating: "?", count: Self.columns.count).joined(separator: ", ")))
                """,
            [
                f.appointmentId, primary?.organizationId, primary?.patientId, f.intakeqClientId, f.clientName,
                f.practitionerId, f.practitionerName, try provider(f.practitionerId, db, t),
                f.serviceName, f.status, f.intakeqStatus, f.startAt, f.endAt, f.durationMinutes,
                f.locationId, f.locationName, f.placeOfService, f.visitType, f.meeting?.url,
                m.removed, m.firstSeen, m.lastChanged, m.lastSynced, m.version, Int64(m.lastSeq),
            ])
        try db.run("DELETE FROM \(t("appointment_patients")) WHERE appointment_id = ?", [f.appointmentId])
        for member in members {
            try db.run(
                "INSERT OR IGNORE INTO \(t("appointment_patients")) (appointment_id, patient_id, organization_id, role) VALUES (?, ?, ?, ?)",
                [f.appointmentId, member.patientId, member.organizationId, member.role])
        }
    }

    /// Replaces the roster lookup tables: IntakeQ client id → (patient, organization) (the first
    /// patient listed wins a duplicate id) and practitioner → provider.
    func storeLookups(_ roster: RosterObserved, _ db: Database, _ t: TableSet) throws {
        try db.execute(sql: "DELETE FROM \(t("appointments_roster_clients")); DELETE FROM \(t("appointments_roster_providers"))")
        for org in roster.organizations {
            for p in org.patients {
                try db.run(
                    "INSERT OR IGNORE INTO \(t("appointments_roster_clients")) (intakeq_client_id, patient_id, organization_id) VALUES (?, ?, ?)",
                    [p.intakeqClientId, p.id, org.id])
            }
        }
        for pr in roster.practitioners {
            try db.run(
                "INSERT OR REPLACE INTO \(t("appointments_roster_providers")) (intakeq_id, provider_id) VALUES (?, ?)",
                [pr.intakeqId, pr.providerId])
        }
    }

    /// In-roster patients of an appointment, looked up in the roster tables.
    func members(of f: AppointmentFacts, _ db: Database, _ t: TableSet) throws -> [RosterIndex.Member] {
        try members(primary: f.intakeqClientId, additional: f.additionalClientIds, db, t)
    }

    /// The same from the client ids alone (what `reattribute` has of a stored appointment).
    func members(primary: String?, additional: [String], _ db: Database, _ t: TableSet) throws -> [RosterIndex.Member] {
        let lookup = try db.cachedStatement(
            sql: "SELECT patient_id, organization_id FROM \(t("appointments_roster_clients")) WHERE intakeq_client_id = ?")
        return try RosterMembership.members(primary: primary, additional: additional) { client in
            try Row.fetchOne(lookup, arguments: [client]).map { ($0["patient_id"], $0["organization_id"]) }
        }
    }

    func provider(_ practitionerId: String?, _ db: Database, _ t: TableSet) throws -> String? {
        guard let practitionerId else { return nil }
        return try String.fetchOne(
            db.cachedStatement(sql: "SELECT provider_id FROM \(t("appointments_roster_providers")) WHERE intakeq_id = ?"),
            arguments: [practitionerId])
    }

    /// `appointments_objects.client_ids`: the appointment's client ids (`ClientId` first when it
    /// has one, then the additional clients'), as a JSON array of strings, so an empty id or one
    /// with a space in it reads back as itself.
    static func clientIdsText(_ f: AppointmentFacts) -> String {
        // The canonical text of `JSONValue.array` of the ids, written straight (a rebuild writes
        // one for every appointment row: the array of values was built and walked for each).
        var out = "["
        if let c = f.intakeqClientId { out += jsonQuoted(c) }
        for (i, c) in f.additionalClientIds.enumerated() {
            if i > 0 || f.intakeqClientId != nil { out += "," }
            out += jsonQuoted(c)
        }
        out += "]"
        return out
    }

    /// The ids `clientIdsText` wrote; none for text that is not such an array.
    static func clientIds(fromText text: String) -> [String] {
        guard case .array(let items)? = try? FastJSON.parse(Array(text.utf8)) else { return [] }
        return items.compactMap(\.stringValue)
    }

    /// Re-derives organization, patient and provider of every appointment from a new roster, from
    /// the clients and practitioner its row and `appointments_objects` keep (no object is read).
    func reattribute(_ db: Database, _ t: TableSet) throws {
        let rows = try Row.fetchAll(db, sql: """
            SELECT a.appointment_id, a.intakeq_client_id, a.practitioner_id, o.client_ids
            FROM \(t("appointments")) a JOIN \(t("appointments_objects")) o USING (appointment_id)
            """)
        try db.execute(sql: "DELETE FROM \(t("appointment_patients"))")
        for row in rows {
            let id: String = row[0]
            let primary: String? = row[1]
            // `client_ids` is the primary (when there is one) followed by the additional clients.
            var additional = Self.clientIds(fromText: row[3])
            if primary != nil, !additional.isEmpty { additional.removeFirst() }
            let members = try self.members(primary: primary, additional: additional, db, t)
            try db.run(
                "UPDATE \(t("appointments")) SET organization_id = ?, patient_id = ?, provider_id = ? WHERE appointment_id = ?",
                [members.first?.organizationId, members.first?.patientId, try provider(row[2], db, t), id])
            for m in members {
                try db.run(
                    "INSERT OR IGNORE INTO \(t("appointment_patients")) (appointment_id, patient_id, organization_id, role) VALUES (?, ?, ?, ?)",
                    [id, m.patientId, m.organizationId, m.role])
            }
        }
    }
}

/// The roster as lookups: IntakeQ client id → (organization, patient), practitioner → provider.
public struct RosterIndex: Sendable {
    public typealias Member = RosterMembership.Member
    var patients: [String: (patient: String, org: String)] = [:]
    public var providers: [String: String] = [:]

    public init(_ roster: RosterObserved?) {
        guard let roster else { return }
        for org in roster.organizations {
            for p in org.patients where patients[p.intakeqClientId] == nil {
                patients[p.intakeqClientId] = (p.id, org.id)
            }
        }
        for pr in roster.practitioners { providers[pr.intakeqId] = pr.providerId }
    }

    /// In-roster patients of an appointment: the primary (ClientId) first, then additional ones.
    public func members(of f: AppointmentFacts) -> [Member] {
        RosterMembership.members(of: f) { patients[$0] }
    }
}
