import Domain
import Foundation
import GRDB
import JSONCore
import Ledger

/// The keys of an appointment event's data the views read: what `AppointmentFacts` and
/// `MeetingLink.find` look at, and the content hash. The other ~30 keys of an IntakeQ object are
/// checked (the data must be valid JSON) but never built.
let appointmentDataFilter = KeyFilter([
    "appointment_id": nil, "content_hash": nil,
    "object": KeyFilter([
        "Id", "ClientId", "AdditionalClients", "ClientName", "PractitionerId", "PractitionerName", "ServiceName",
        "Status", "StartDate", "EndDate", "Duration", "LocationId", "LocationName", "PlaceOfService",
        "TelehealthInfo", "ClientNote", "CustomFields", "LastModified",
    ]),
])

extension EventEnvelope {
    /// The decoded `sync.completed`, decoded once for all the views that read it.
    func syncCompleted() throws -> SyncCompleted {
        try memoized("projections.syncCompleted") { try PayloadScan.syncCompleted(data) ?? projectionData(SyncCompleted.self) }
    }
}

/// Folds a chunk of events into the built-in appointment views in memory — per appointment the
/// operations that touch its row, the last observation, the meeting links, the stream index
/// entries — and writes each appointment once per chunk, with cached statements, inside the
/// caller's transaction. The result is row for row what applying the events one by one gives
/// (`ChunkedFoldTests`): each row is replayed in memory from its stored state with the same
/// rules the one-by-one `apply` runs in SQL.
///
/// Events that change what every row depends on (`roster.observed` for `appointments`,
/// `practice.settings_observed` for `locations`) flush what is folded so far and are applied one
/// by one; so are all events for projections the folder does not know (`sync_logs`, a test's
/// wrapper), each in log order within its own tables.
final class ChunkFolder {
    let t: TableSet
    let recordLive: Bool
    /// Folded views and the seq each one has already applied (catch-up resumes each from its
    /// own checkpoint).
    var appointments: UInt64?
    var meetings: UInt64?
    var locations: UInt64?
    var streams: UInt64?
    var appointmentsP: (any Projection)?
    var meetingsP: (any Projection)?
    var locationsP: (any Projection)?
    /// Projections applied event by event, with their checkpoints.
    var others: [(p: any Projection, after: UInt64)] = []

    struct Observation {
        var facts: AppointmentFacts
        /// The object text and content hash, built only for the observation that is written.
        var textSource: DeferredText
        var hashSource: DeferredText
        var at: String
        var seq: UInt64
        var text: String { textSource.string }
        var hash: String { hashSource.string }
    }
    enum Op {
        case observed(at: String, seq: UInt64)
        case removed(at: String, seq: UInt64)
        case synced(at: String)
    }
    struct Link {
        var url: String?
        var provider: String
        var source: String
        var at: String
    }
    final class Pending {
        var ops: [Op] = []
        var last: Observation?
        var links: [Link] = []
        var location: AppointmentFacts?
    }
    var pending: [String: Pending] = [:]
    var streamEntries: [(stream: String, seq: Int64, type: String)] = []
    var quarantined: [QuarantineEntry] = []

    init(_ chosen: [(p: any Projection, after: UInt64)], _ t: TableSet, recordLive: Bool) {
        self.t = t
        self.recordLive = recordLive
        for (p, after) in chosen {
            switch p {
            case is AppointmentsProjection: appointments = after; appointmentsP = p
            case is MeetingURLsProjection: meetings = after; meetingsP = p
            case is LocationsProjection: locations = after; locationsP = p
            case is StreamIndexProjection: streams = after
            default: others.append((p, after))
            }
        }
    }

    private func wants(_ after: UInt64?, _ e: EventEnvelope) -> Bool { after.map { e.seq > $0 } ?? false }

    private func slot(_ id: String) -> Pending {
        if let p = pending[id] { return p }
        let p = Pending()
        pending[id] = p
        return p
    }

    private func quarantine(_ name: String, _ e: EventEnvelope, _ message: String, _ db: Database) throws {
        quarantined.append(QuarantineEntry(projection: name, seq: e.seq, type: e.type, error: message))
        if recordLive {
            try db.run("INSERT OR REPLACE INTO quarantine (projection, seq, type, error) VALUES (?, ?, ?, ?)",
                       [name, Int64(e.seq), e.type, message])
        }
    }

    /// Applies one event (into memory, or at once for the event-by-event projections).
    func add(_ e: EventEnvelope, _ db: Database) throws {
        for (p, after) in others where e.seq > after {
            do { try p.apply(e, db, t) } catch let q as QuarantineError { try quarantine(p.name, e, q.message, db) }
        }
        let kind = e.eventType
        if wants(streams, e) { streamEntries.append((e.stream, Int64(e.seq), e.type)) }
        switch kind {
        case .appointmentDiscovered, .appointmentChanged:
            let a = wants(appointments, e), m = wants(meetings, e), l = wants(locations, e)
            guard a || m || l else { break }
            let facts: AppointmentFacts
            let scan: AppointmentEventScan?
            do {
                (facts, scan) = try appointmentFacts(e)
            } catch let q as QuarantineError {
                if a { try quarantine(appointmentsP!.name, e, q.message, db) }
                if m { try quarantine(meetingsP!.name, e, q.message, db) }
                if l { try quarantine(locationsP!.name, e, q.message, db) }
                break
            }
            let s = slot(facts.appointmentId)
            if a {
                var text = AppointmentEventScan.objectTextRange(in: e.data).map { DeferredText.bytes(e.data, $0) }
                var hash: DeferredText?
                if let scan {
                    hash = scan.contentHash
                } else {
                    hash = try e.partialDataValue(keeping: appointmentDataFilter)["content_hash"]?.stringValue.map(DeferredText.string)
                }
                if text == nil || hash == nil {
                    // Not the layout SyncLedger writes: the whole object, as the one-by-one fold reads it.
                    let whole = try e.dataValue()["object"] ?? .null
                    if text == nil { text = .string(whole.canonicalText) }
                    if hash == nil { hash = .string(contentHash(of: whole)) }
                }
                s.ops.append(.observed(at: e.at, seq: e.seq))
                s.last = Observation(facts: facts, textSource: text!, hashSource: hash!, at: e.at, seq: e.seq)
            }
            if m {
                let link = facts.meeting
                s.links.append(Link(url: link?.url, provider: link?.provider ?? "", source: link?.sourceField ?? "", at: e.at))
            }
            if l { s.location = facts }
        case .appointmentRemoved:
            guard wants(appointments, e) else { break }
            do {
                let removed = try e.projectionData(AppointmentRemoved.self)
                slot(removed.appointmentId).ops.append(.removed(at: e.at, seq: e.seq))
            } catch let q as QuarantineError {
                try quarantine(appointmentsP!.name, e, q.message, db)
            }
        case .syncCompleted:
            let a = wants(appointments, e), s = wants(streams, e)
            guard a || s else { break }
            do {
                let done = try e.syncCompleted()
                for o in done.unchanged {
                    if a { slot(o.id).ops.append(.synced(at: e.at)) }
                    if s { streamEntries.append((Streams.appointment(o.id), Int64(e.seq), e.type)) }
                }
            } catch let q as QuarantineError {
                if a { try quarantine(appointmentsP!.name, e, q.message, db) }
                if s { try quarantine(StreamIndexProjection().name, e, q.message, db) }
            }
        case .rosterObserved:
            guard wants(appointments, e), let p = appointmentsP else { break }
            try flush(db)
            do { try p.apply(e, db, t) } catch let q as QuarantineError { try quarantine(p.name, e, q.message, db) }
        case .settingsObserved:
            guard wants(locations, e), let p = locationsP else { break }
            try flush(db)
            do { try p.apply(e, db, t) } catch let q as QuarantineError { try quarantine(p.name, e, q.message, db) }
        default:
            break
        }
    }

    /// The facts of an appointment event: scanned from the data's bytes in one pass, or, when
    /// the data was parsed already (opened sealed parts), read from that value. The scan is
    /// returned when it was made. Bad data is a `QuarantineError`.
    private func appointmentFacts(_ e: EventEnvelope) throws -> (AppointmentFacts, AppointmentEventScan?) {
        let noObject = "\(e.type) at seq \(e.seq) has no usable appointment object (missing Id)"
        if let data = e.parsedData {
            guard let object = data["object"], let f = try? AppointmentFacts(object: object) else { throw QuarantineError(noObject) }
            return (f, nil)
        }
        let scan: AppointmentEventScan
        do { scan = try AppointmentEventScan.scan(e.data) } catch {
            throw QuarantineError("event \(e.seq) (\(e.type)) has a data field that is not valid JSON: \(error)")
        }
        guard let fields = scan.fields, let f = try? AppointmentFacts(fields: fields) else { throw QuarantineError(noObject) }
        return (f, scan)
    }

    /// Writes what is folded so far (each appointment once) and empties the folder.
    func flush(_ db: Database) throws {
        if !streamEntries.isEmpty {
            streamEntries.sort { $0.stream != $1.stream ? $0.stream < $1.stream : $0.seq < $1.seq }
            let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO \(t("event_streams")) (stream, seq, type) VALUES (?, ?, ?)")
            for s in streamEntries { try insert.execute(arguments: [s.stream, s.seq, s.type]) }
            streamEntries.removeAll(keepingCapacity: true)
        }
        guard !pending.isEmpty else { return }
        let ids = pending.keys.sorted()
        if appointments != nil { try writeAppointments(ids, db) }
        if meetings != nil { try writeMeetings(ids, db) }
        if locations != nil { try writeLocations(ids, db) }
        pending.removeAll(keepingCapacity: true)
    }

    private func writeAppointments(_ ids: [String], _ db: Database) throws {
        var clients: [String: (patient: String, org: String)] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT intakeq_client_id, patient_id, organization_id FROM \(t("appointments_roster_clients"))") {
            clients[row[0]] = (row[1], row[2])
        }
        var providers: [String: String] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT intakeq_id, provider_id FROM \(t("appointments_roster_providers"))") {
            providers[row[0]] = row[1]
        }
        let prior = try db.cachedStatement(sql: """
            SELECT first_seen_at, version, removed, last_changed_at, last_synced_at, last_seq
            FROM \(t("appointments")) WHERE appointment_id = ?
            """)
        let object = try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO \(t("appointments_objects"))
              (appointment_id, object, content_hash, client_ids, start_millis) VALUES (?, ?, ?, ?, ?)
            """)
        let row = try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO \(t("appointments")) (\(AppointmentsProjection.columns.joined(separator: ", ")))
            VALUES (\(Array(repeating: "?", count: AppointmentsProjection.columns.count).joined(separator: ", ")))
            """)
        let meta = try db.cachedStatement(sql: """
            UPDATE \(t("appointments")) SET removed = ?, last_changed_at = ?, last_synced_at = ?, version = ?, last_seq = ?
            WHERE appointment_id = ?
            """)
        let unlink = try db.cachedStatement(sql: "DELETE FROM \(t("appointment_patients")) WHERE appointment_id = ?")
        let link = try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO \(t("appointment_patients")) (appointment_id, patient_id, organization_id, role) VALUES (?, ?, ?, ?)
            """)
        for id in ids {
            guard let s = pending[id], !s.ops.isEmpty else { continue }
            // The row as stored, then every operation replayed on it as the one-by-one fold runs it in SQL.
            var exists = false
            var firstSeen = "", lastChanged = "", lastSynced = ""
            var version = 0
            var removed = false
            var lastSeq: Int64 = 0
            if let r = try Row.fetchOne(prior, arguments: [id]) {
                exists = true
                firstSeen = r[0]
                version = r[1]
                removed = r[2]
                lastChanged = r[3]
                lastSynced = r[4]
                lastSeq = r[5]
            }
            var changed = false
            for op in s.ops {
                switch op {
                case .observed(let at, let seq):
                    if !exists { firstSeen = at }
                    version = exists ? version + 1 : 1
                    exists = true
                    removed = false
                    lastChanged = at
                    lastSynced = at
                    lastSeq = Int64(seq)
                    changed = true
                case .removed(let at, let seq):
                    guard exists else { continue }
                    removed = true
                    lastChanged = at
                    lastSynced = at
                    version += 1
                    lastSeq = Int64(seq)
                    changed = true
                case .synced(let at):
                    guard exists else { continue }
                    lastSynced = at
                    changed = true
                }
            }
            guard changed else { continue }
            if let o = s.last {
                let f = o.facts
                try object.execute(arguments: [id, o.text, o.hash, RosterMembership.clientIds(of: f).joined(separator: " "), f.startMillis])
                let members = RosterMembership.members(of: f) { clients[$0] }
                let primary = members.first
                let provider = f.practitionerId.flatMap { providers[$0] }
                try row.execute(arguments: [
                    f.appointmentId, primary?.organizationId, primary?.patientId, f.intakeqClientId, f.clientName,
                    f.practitionerId, f.practitionerName, provider,
                    f.serviceName, f.status, f.intakeqStatus, f.startAt, f.endAt, f.durationMinutes,
                    f.locationId, f.locationName, f.placeOfService, f.visitType, f.meeting?.url,
                    removed, firstSeen, lastChanged, lastSynced, version, lastSeq,
                ])
                try unlink.execute(arguments: [id])
                for m in members { try link.execute(arguments: [id, m.patientId, m.organizationId, m.role]) }
            } else {
                try meta.execute(arguments: [removed, lastChanged, lastSynced, version, lastSeq, id])
            }
        }
    }

    private func writeMeetings(_ ids: [String], _ db: Database) throws {
        let table = t("appointment_meeting_urls")
        let current = try db.cachedStatement(sql: "SELECT meeting_url, url_provider, source_field, changed_at FROM \(table) WHERE appointment_id = ?")
        let put = try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO \(table) (appointment_id, meeting_url, url_provider, source_field, changed_at) VALUES (?, ?, ?, ?, ?)
            """)
        let drop = try db.cachedStatement(sql: "DELETE FROM \(table) WHERE appointment_id = ?")
        for id in ids {
            guard let s = pending[id], !s.links.isEmpty else { continue }
            var row: Link?
            var known = false
            for l in s.links {
                guard let url = l.url else {
                    row = nil
                    known = true
                    continue
                }
                if !known {
                    row = try Row.fetchOne(current, arguments: [id]).map { Link(url: $0[0], provider: $0[1], source: $0[2], at: $0[3]) }
                    known = true
                }
                if row?.url == url {
                    row?.provider = l.provider
                    row?.source = l.source
                } else {
                    row = l
                }
            }
            if let row, let url = row.url {
                try put.execute(arguments: [id, url, row.provider, row.source, row.at])
            } else {
                try drop.execute(arguments: [id])
            }
        }
    }

    private func writeLocations(_ ids: [String], _ db: Database) throws {
        var addresses: [String: String?] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT location_id, address FROM \(t("locations_settings"))") {
            addresses[row[0]] = .some(row[1])
        }
        let put = try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO \(t("appointment_locations")) (appointment_id, location_id, location_name, address, place_of_service, visit_type) VALUES (?, ?, ?, ?, ?, ?)
            """)
        for id in ids {
            guard let f = pending[id]?.location else { continue }
            let address = f.locationId.flatMap { addresses[$0] ?? nil }
            try put.execute(arguments: [f.appointmentId, f.locationId, f.locationName, address, f.placeOfService, f.visitType])
        }
    }
}
