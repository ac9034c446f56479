import Crypto
import Domain
import EventLog
import Foundation
import JSONCore

/// What every read path does to an event after upcasting: an `appointment.*` event stored as v1
/// (before redaction existed) is redacted with the roster in force at its seq; sealed personal
/// data is opened with the patients' keys (a forgotten patient's reads as `(forgotten)`).
final class ReadPrivacy: @unchecked Sendable {
    // @unchecked: the lazy state is only touched under `lock`.
    let store: Store
    let log: EventLogReader
    private var keys: KeyRing?
    /// Client id → patient id of each clear `roster.observed` (seq order), found on the first v1
    /// event; forgotten patients left out.
    private var rosters: [(seq: UInt64, clients: [String: String])]?
    private let lock = NSRecursiveLock()

    init(store: Store, log: EventLogReader, keys: KeyRing?) {
        self.store = store
        self.log = log
        self.keys = keys
    }

    func reveal(_ e: EventEnvelope, storedVersion: Int) throws -> EventEnvelope {
        switch e.eventType {
        case .appointmentDiscovered, .appointmentChanged:
            if storedVersion < 2 { return try redactLegacy(e) }
            // Nothing sealed (no `"sealed"` anywhere in the bytes): no need to parse the data.
            if !containsAnywhere(e.data, Self.sealedKey) { return e }
            var out = e
            if let data = PersonalData.openObservationBytes(e.data, key: key(for:)) {
                out.data = data
                return out
            }
            guard let (data, value) = try PersonalData.openObservationDataParsing(e.data, key: key(for:)) else { return e }
            return Self.replacing(e, data: data, value: value)
        case .rosterObserved:
            guard let d = try? e.dataValue(), d["sealed"] == .bool(true) else { return e }
            let opened = try PersonalData.openRoster(d, key: key(for:))
            return Self.replacing(e, data: Array(opened.canonicalText.utf8), value: opened)
        default:
            return e
        }
    }

    static let sealedKey = Array("\"sealed\"".utf8)

    /// The event with `object` in place of the stored one (and without `sealed`).
    func rewrite(_ e: EventEnvelope, _ d: JSONValue, object: JSONValue, contentHash: String?) -> EventEnvelope {
        let (data, value) = PersonalData.observationData(d, object: object, contentHash: contentHash)
        return Self.replacing(e, data: data, value: value)
    }

    /// The event with other data, and its parsed value kept beside it (readers do not parse it again).
    static func replacing(_ e: EventEnvelope, data: [UInt8], value: JSONValue) -> EventEnvelope {
        var out = e
        out.data = data
        out.memo.withLock { $0.value = value }
        return out
    }

    /// The patient's key; nil for a forgotten patient. A missing key of a patient not forgotten
    /// is an error (a wrong `--keys`, a damaged key store), never silently "forgotten".
    func key(for patient: String) throws -> SymmetricKey? {
        let ring = try keyRing()
        if let k = try ring.existingKey(for: patient) { return k }
        if ring.isForgotten(patient) { return nil }
        throw LedgerError("the key store \(ring.directory) has no key for patient \(patient) (wrong --keys directory?)")
    }

    func keyRing() throws -> KeyRing {
        lock.lock()
        defer { lock.unlock() }
        if let keys { return keys }
        let ring = try KeyRing.open(directory: store.keysPath, create: false)
        keys = ring
        return ring
    }

    /// v1 → v2: the redaction list applied with the roster in force when the event was recorded
    /// (the last clear `roster.observed` before it; a sync records the roster before any
    /// appointment). The content hash is recomputed on what is left.
    func redactLegacy(_ e: EventEnvelope) throws -> EventEnvelope {
        guard let d = try? e.dataValue(), let object = d["object"] else { return e }
        let clients = try rosterClients(before: e.seq)
        var result = Redaction.apply(object, rosterClients: clients ?? [])
        if clients == nil {
            // No roster before it (not written by `syncledger sync`): credentials only.
            result = Redaction.apply(object, rosterClients: Set(allClientIds(object)))
        }
        guard result.changed else { return e }
        return rewrite(e, d, object: result.object, contentHash: contentHash(of: result.object))
    }

    private func allClientIds(_ object: JSONValue) -> [String] {
        guard let f = try? AppointmentFacts(object: object) else { return [] }
        return RosterMembership.clientIds(of: f)
    }

    func rosterClients(before seq: UInt64) throws -> Set<String>? {
        lock.lock()
        defer { lock.unlock() }
        if rosters == nil {
            var found: [(seq: UInt64, clients: [String: String])] = []
            let head = try log.head()
            if head.seq > 0 {
                let cursor = try log.cursor(from: 1, through: head.seq)
                let marker = Array("\"type\":\"roster.observed\"".utf8)
                while let record = try cursor.next() {
                    guard contains(record.payload, marker), let env = try? EventEnvelope.decode(record.payload),
                        let r = try? env.decodeData(RosterObserved.self)
                    else { continue }
                    var clients: [String: String] = [:]
                    for p in r.organizations.flatMap(\.patients)
                    where clients[p.intakeqClientId] == nil && !KeyRing.isForgotten(directory: store.keysPath, patient: p.id) {
                        clients[p.intakeqClientId] = p.id
                    }
                    found.append((seq: env.seq, clients: clients))
                }
            }
            rosters = found
        }
        // A patient forgotten since is redacted like anyone outside the roster: their clear
        // fields stay in the log's bytes, but no read path shows them.
        return rosters?.last(where: { $0.seq < seq }).map { Set($0.clients.keys) }
    }
}

private func contains(_ hay: some Collection<UInt8>, _ needle: [UInt8]) -> Bool {
    let h = Array(hay.prefix(200))
    guard h.count >= needle.count else { return false }
    for i in 0...(h.count - needle.count) where h[i] == needle[0] {
        if Array(h[i..<(i + needle.count)]) == needle { return true }
    }
    return false
}

/// True when `needle` (at least 2 bytes) occurs in `hay` (memmem: vectorised in glibc).
func containsAnywhere(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
    guard needle.count >= 2, hay.count >= needle.count else { return false }
    return hay.withUnsafeBytes { h in needle.withUnsafeBytes { nd in firstOffset(of: nd, in: h) != nil } }
}
