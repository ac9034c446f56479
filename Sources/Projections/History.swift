import Domain
import Foundation
import GRDB
import JSONCore
import Ledger

/// One recorded version of an appointment, for auditors.
public struct HistoryEntry: Sendable {
    public var seq: UInt64
    public var at: String
    public var run: String?
    public var syncType: String?
    public var type: String
    /// IntakeQ's `LastModified` of this version, ISO 8601.
    public var lastModified: String?
    /// IntakeQ fields (`StartDate`, `TelehealthInfo.JoinUrl`, …) and view fields
    /// (`view.start_at`, `view.meeting_url`, …) that differ from the previous version.
    public var changes: [FieldChange]

    public init(seq: UInt64, at: String, run: String?, syncType: String?, type: String, lastModified: String?,
                changes: [FieldChange]) {
        (self.seq, self.at, self.run, self.syncType, self.type) = (seq, at, run, syncType, type)
        (self.lastModified, self.changes) = (lastModified, changes)
    }

    public var json: JSONValue {
        .object([
            "seq": .number(Double(seq)), "at": .string(at), "run": run.map(JSONValue.string) ?? .null,
            "sync_type": syncType.map(JSONValue.string) ?? .null, "type": .string(type),
            "last_modified": lastModified.map(JSONValue.string) ?? .null,
            "changes": .array(changes.map {
                .object(["field": .string($0.field), "from": $0.from, "to": $0.to])
            }),
        ])
    }
}

public enum History {
    /// Every recorded version of one appointment, found through the per-stream index (no scan
    /// of the log). Returns an empty list for an id the ledger has never recorded.
    public static func of(_ appointmentId: String, reader: LedgerReader, views: ProjectionStore) throws -> [HistoryEntry] {
        let seqs = try views.streamSeqs(
            Streams.appointment(appointmentId), types: [.appointmentDiscovered, .appointmentChanged, .appointmentRemoved])
        guard !seqs.isEmpty else { return [] }
        let events = try reader.events(at: seqs)
        // Only the runs these events name: `sync_logs` has a row per run (~50,000 at 10M events).
        let runs = Set(events.compactMap(\.run)).sorted()
        let runTypes = try views.pool.read { db in
            try Dictionary(
                Row.fetchAll(db, sql: "SELECT id, sync_type FROM sync_logs WHERE id IN (SELECT value FROM json_each(?))",
                             arguments: [JSONValue.array(runs.map(JSONValue.string)).canonicalText])
                    .map { ($0["id"] as String, $0["sync_type"] as String) },
                uniquingKeysWith: { a, _ in a })
        }
        var out: [HistoryEntry] = []
        var previous: JSONValue?
        var previousFacts: AppointmentFacts?
        // Removed, until observed again: the view's row comes back (`removed` 1 → 0). An
        // appointment restored unchanged showed an entry with no change at all (hostile test).
        var removed = false
        for e in events {
            var entry = HistoryEntry(seq: e.seq, at: e.at, run: e.run, syncType: e.run.flatMap { runTypes[$0] },
                                     type: e.type, lastModified: nil, changes: [])
            switch e.eventType {
            case .appointmentDiscovered, .appointmentChanged:
                guard let object = try e.dataValue()["object"] else { break }
                let facts = try? AppointmentFacts(object: object)
                entry.lastModified = facts?.lastModified
                entry.changes = diffObjects(previous ?? .object([:]), object)
                if let facts { entry.changes += derivedChanges(previousFacts, facts) }
                if e.eventType == .appointmentDiscovered { entry.changes = facts.map { derivedChanges(nil, $0) } ?? [] }
                if removed { entry.changes.insert(FieldChange(field: "view.removed", from: .bool(true), to: .bool(false)), at: 0) }
                removed = false
                previous = object
                previousFacts = facts
            case .appointmentRemoved:
                entry.lastModified = previousFacts?.lastModified
                entry.changes = [FieldChange(field: "view.removed", from: .bool(false), to: .bool(true))]
                removed = true
            default:
                break
            }
            out.append(entry)
        }
        return out
    }

    static func derivedChanges(_ old: AppointmentFacts?, _ new: AppointmentFacts) -> [FieldChange] {
        let before = Dictionary(uniqueKeysWithValues: old?.derivedFields ?? [])
        return new.derivedFields.compactMap { key, value in
            let was = before[key] ?? .null
            return was == value ? nil : FieldChange(field: "view." + key, from: was, to: value)
        }
    }
}

/// The appointments view as it stood at a seq, folded by the same projection code into a
/// private in-memory database.
public enum AsOf {
    /// The last seq recorded at or before `millis` (`at` never decreases along the log, so
    /// "as of T" is a prefix); 0 when the log starts later.
    public static func seq(atOrBefore millis: Int64, reader: LedgerReader, views: ProjectionStore? = nil) throws -> UInt64 {
        var last: UInt64 = 0
        var from: UInt64 = 1
        if let views {
            // `at` never decreases, so everything before the last run that started by then is
            // in the prefix: scan from that run's sync.started, not from seq 1.
            let start = try views.readSync { db in
                try Int64.fetchOne(db, sql: "SELECT max(start_seq) FROM sync_logs WHERE started_at <= ?",
                                   arguments: [ISOTime.format(millis: millis)])
            }
            if let start, start > 0 {
                from = UInt64(start)
                last = from - 1
            }
        }
        try reader.forEachEvent(from: from) { e in
            guard e.atMillis <= millis else { return false }
            last = e.seq
            return true
        }
        return last
    }

    public static func appointments(through seq: UInt64, filter: AppointmentFilter, reader: LedgerReader,
                                    views: ProjectionStore) throws -> [ViewRow] {
        var quarantined: [UInt64] = []
        return try appointments(through: seq, filter: filter, reader: reader, views: views, quarantined: &quarantined)
    }

    /// The appointments view as of `seq`. Events the live views would quarantine are skipped the
    /// same way and their seqs reported in `quarantined`; any other error (SQLite, I/O) is thrown.
    public static func appointments(through seq: UInt64, filter: AppointmentFilter, reader: LedgerReader,
                                    views: ProjectionStore, quarantined: inout [UInt64]) throws -> [ViewRow] {
        var skipped: [UInt64] = []
        func apply(_ events: [EventEnvelope], _ d: Database, _ p: AppointmentsProjection) throws {
            for e in events {
                do { try p.apply(e, d, .live) } catch is QuarantineError { skipped.append(e.seq) }
            }
        }
        defer { quarantined = skipped }
        let db = try DatabaseQueue()
        let p = AppointmentsProjection()
        try db.write { try p.create($0, .live) }
        if seq > 0 {
            if let id = filter.appointmentId {
                // One appointment: its own events, the rosters, and the last run that observed
                // it unchanged (for last_synced_at) — not the whole log.
                let own = try views.streamSeqs(
                    Streams.appointment(id), through: seq, types: [.appointmentDiscovered, .appointmentChanged, .appointmentRemoved])
                let lastSeen = try views.streamSeqs(Streams.appointment(id), through: seq, types: [.syncCompleted]).suffix(1)
                let seqs = own + lastSeen + (try views.streamSeqs(Streams.roster, through: seq))
                let events = try reader.events(at: seqs)
                try db.write { d in try apply(events, d, p) }
            } else {
                var buffer: [EventEnvelope] = []
                func flush() throws {
                    let events = buffer
                    try db.write { d in try apply(events, d, p) }
                    buffer.removeAll(keepingCapacity: true)
                }
                try reader.forEachBatch(from: 1, through: seq) { batch in
                    buffer += batch.events
                    if buffer.count >= 20_000 { try flush() }
                    return true
                }
                try flush()
            }
        }
        return try db.read { try Views.appointments($0, filter) }
    }
}
