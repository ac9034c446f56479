import CChecksum
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

    func reveal(_ e: consuming EventEnvelope, storedVersion: Int) throws -> EventEnvelope {
        switch e.eventType {
        case .appointmentDiscovered, .appointmentChanged:
            if storedVersion < 2 { return try redactLegacy(e) }
            // Nothing sealed (no `"sealed"` anywhere in the bytes): no need to parse the data.
            if !containsAnywhere(e.data, Self.sealedKey) { return e }
            var out = e
            if let data = PersonalData.openObservationBytes(out.data, key: key(for:)) {
                out.data = data
                return out
            }
            guard let (data, value) = try PersonalData.openObservationDataParsing(out.data, key: key(for:)) else { return out }
            return Self.replacing(out, data: data, value: value)
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
        throw LedgerError("the key store \(ring.directory) has no key for patient \(patient) (wrong --keys directory? If the key file "
                          + "is lost, restore it from a backup, or `syncledger forget --patient \(patient) --key-lost --reason …` records the patient as forgotten)")
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
            // No roster before it (not written by `syncledger sync`): every client id counts as
            // on the roster, so only credentials go, and a primary with no ClientId.
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

/// Opens the `appointment.*` events a reader left sealed (`LedgerReader.batches(…,
/// deferOpening: true)`), with the reader's keys: whole (`reveal`), as the reader would have
/// given them, or only the object's fields a caller read (`openedObject`).
public struct DeferredOpening: Sendable {
    let privacy: ReadPrivacy

    /// The event as a reader that opens sealed parts gives it (an event that is not a sealed
    /// observation as it is).
    public func reveal(_ e: EventEnvelope) throws -> EventEnvelope {
        switch e.eventType {
        case .appointmentDiscovered, .appointmentChanged: return try privacy.reveal(e, storedVersion: max(2, e.v))
        default: return e
        }
    }

    /// True when the event's data may hold sealed parts (the bytes name a `"sealed"` key);
    /// false: it reads as stored.
    public static func maySeal(_ e: EventEnvelope) -> Bool {
        containsAnywhere(e.data, ReadPrivacy.sealedKey)
    }

    /// The opened `object` of observation data parsed with the keys `sealed`, `object` and
    /// `appointment_id` kept (the object's members may be filtered): its parts' fields put in,
    /// as `reveal` puts them into the whole object, with the content hash the revealed event
    /// carries. Nil when the data is not a sealed observation (`reveal` leaves it as stored).
    /// Throws what `reveal` throws: a part that does not open, a missing key.
    public func openedObject(_ d: JSONValue) throws -> (object: JSONValue, contentHash: String)? {
        try PersonalData.openedObject(d, key: privacy.key(for:))
    }

    /// `PersonalData.openedFields` with the reader's keys.
    public func openedFields(_ fields: consuming AppointmentFields?, sealed: ArraySlice<UInt8>?, appointmentId: String?) -> OpenedFields {
        PersonalData.openedFields(consume fields, sealed: sealed, appointmentId: appointmentId, key: privacy.key(for:))
    }
}

/// What opening a sealed observation's parts into its scanned fields gave.
public enum OpenedFields: Equatable {
    /// Not a sealed observation: read it as stored.
    case stored
    /// The fields of the object opened whole.
    case opened(AppointmentFields)
    /// Not simple enough, or an error: open the object itself (`openedObject`), which gives the
    /// result or the error.
    case unsure
}

extension PersonalData {
    /// `DeferredOpening.openedObject` with these keys: what `openObservationDataParsing` opens
    /// (the same conditions, the same errors), on data parsed with some of the object's keys.
    public static func openedObject(_ d: JSONValue, key: (String) throws -> SymmetricKey?) throws
        -> (object: JSONValue, contentHash: String)?
    {
        guard case .array(let parts)? = d["sealed"], !parts.isEmpty, let object = d["object"],
            let id = d["appointment_id"]?.stringValue
        else { return nil }
        return (try openAppointment(object, parts: parts, appointmentId: id, key: key), d["content_hash"]?.stringValue ?? "")
    }

    /// `openedObject` on what a scan of the data read, its object's fields and not the object:
    /// `fields` of the last `object` (nil: none), the bytes of the last `sealed` value, the last
    /// `appointment_id` as text. Each part is opened and its fields put in, in order, as
    /// `openAppointment` puts them into the object. Never throws: what it cannot do exactly so
    /// (`AppointmentFields.overlay`), a part that does not open, a missing key and a forgotten
    /// patient's part (`openAppointment` also cleans the clear part) are `.unsure`.
    ///
    /// `fields` is taken (`consuming`): copying them retained each of their texts, and their
    /// end released them again, for every sealed observation a rebuild folds.
    public static func openedFields(_ fields: consuming AppointmentFields?, sealed: ArraySlice<UInt8>?, appointmentId: String?,
                                    key: (String) throws -> SymmetricKey?) -> OpenedFields
    {
        guard var f = fields.take(), let sealed, let appointmentId else { return .stored }
        return sealed.withUnsafeBufferPointer { buf -> OpenedFields in
            var s = JSONScanner(buf)
            // `sealed` is an array with an element (else the data reads as stored).
            guard (try? s.beginArray(depth: 0)) == true else { return .stored }
            guard let any = try? s.nextElement(first: true) else { return .unsure }
            guard any else { return .stored }
            guard f.isObject else { return .opened(f) }
            var more = true
            while more {
                guard let part = try? s.sealedPart(depth: 1), let patient = part.patient, let box = part.box else { return .unsure }
                let found: SymmetricKey?
                do { found = try key(patient) } catch { return .unsure }
                if let k = found {
                    guard let plain = openBox(UnsafeBufferPointer(rebasing: buf[box]), patient: patient, appointmentId: appointmentId, key: k)
                    else { return .unsure }
                    let simple = plain.withUnsafeBytes { raw -> Bool in
                        var p = JSONScanner(raw.bindMemory(to: UInt8.self))
                        guard (try? f.overlay(&p, depth: 0)) == true, (try? p.finish()) != nil else { return false }
                        return true
                    }
                    guard simple else { return .unsure }
                } else {
                    // A forgotten patient (no key): the clear part is cleaned too
                    // (`PersonalData.openAppointment`), on the parsing path; a rare event.
                    return .unsure
                }
                guard let next = try? s.nextElement(first: false) else { return .unsure }
                more = next
            }
            return .opened(f)
        }
    }

    /// The plaintext of a box given as its base64 text, in the canonical spelling sealing writes;
    /// nil when it does not open (or is spelled otherwise: the caller's slow path decides).
    /// The context is the appointment's (`appointment/ID`), as sealing an observation gives it.
    static func openBox(_ text: UnsafeBufferPointer<UInt8>, patient: String, appointmentId: String, key: SymmetricKey) -> [UInt8]? {
        guard let combined = Base64Canonical.decode(text) else { return nil }
        return combined.withUnsafeBytes { box in
            withAppointmentAAD(patient, appointmentId: appointmentId) { GCM.open(box, key: key, aad: $0) }
        }
    }
}

extension JSONScanner {
    /// A sealed part at `depth` as `openAppointment` reads it: `patient` as its value's
    /// `stringValue`, and where `box` is when it is a string without escapes (the last of
    /// repeated keys). Every other member (`slots` among them: the opened fields' own keys say
    /// where they go) is checked and skipped. Throws for anything else than an object, or an
    /// escaped key.
    mutating func sealedPart(depth: Int) throws -> (patient: String?, box: Range<Int>?) {
        guard try beginObject(depth: depth) else { throw BytesBail() }
        var patient: String?, box: Range<Int>?
        var first = true
        while let k = try nextKey(first: first) {
            first = false
            guard !k.escaped else { throw BytesBail() }
            if key(k, is: "patient") {
                patient = try scalar(depth: depth + 1).stringValue
            } else if key(k, is: "box") {
                guard let r = try plainString(depth: depth + 1) else { throw BytesBail() }
                box = r
            } else {
                try skipValue(depth: depth + 1)
            }
        }
        return (patient, box)
    }
}

/// Base64 as sealing writes it (RFC 4648 alphabet, `=` padding, no line breaks, zero bits
/// after the last byte): anything else is nil, for the caller's slow path to judge.
enum Base64Canonical {
    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// The base64 text of `bytes`, padded, on one line: `Data.base64EncodedString()`'s text
    /// (sealing spells its boxes so), written straight into the string's storage.
    static func encode(_ bytes: UnsafeRawBufferPointer) -> String {
        let length = encodedCount(bytes.count)
        guard length > 0 else { return "" }
        return String(unsafeUninitializedCapacity: length) { o in
            encode(bytes, into: o.baseAddress!)
            return length
        }
    }

    /// How many bytes `encode` writes for `n` bytes.
    static func encodedCount(_ n: Int) -> Int { (n + 2) / 3 * 4 }

    /// Writes the base64 text of `bytes` at `o` (`encodedCount(bytes.count)` bytes), in C
    /// (`syncledger_base64_encode`: six bytes from one load per step).
    static func encode(_ bytes: UnsafeRawBufferPointer, into o: UnsafeMutablePointer<UInt8>) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        syncledger_base64_encode(base.assumingMemoryBound(to: UInt8.self), bytes.count, o)
    }

    static let values: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

    static func decode(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        let n = text.count
        guard n % 4 == 0 else { return nil }
        if n == 0 { return [] }
        let pad = text[n - 1] == UInt8(ascii: "=") ? (text[n - 2] == UInt8(ascii: "=") ? 2 : 1) : 0
        let count = n / 4 * 3 - pad
        return values.withUnsafeBufferPointer { t -> [UInt8]? in
            var ok = true
            let out = [UInt8](unsafeUninitializedCapacity: count) { o, initialized in
                let src = text.baseAddress!, dst = o.baseAddress!
                // Any character outside the alphabet (padding included) has a high bit in the table.
                var bad: UInt8 = 0
                var i = 0, j = 0
                // Every group but the last: four characters, three bytes, nothing to check on the way.
                while i + 4 < n {
                    let a = t[Int(src[i])], b = t[Int(src[i + 1])], c = t[Int(src[i + 2])], d = t[Int(src[i + 3])]
                    bad |= a | b | c | d
                    let v = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                    dst[j] = UInt8(truncatingIfNeeded: v >> 16)
                    dst[j + 1] = UInt8(truncatingIfNeeded: v >> 8)
                    dst[j + 2] = UInt8(truncatingIfNeeded: v)
                    i += 4
                    j += 3
                }
                // The last group, with its padding.
                let a = t[Int(src[i])], b = t[Int(src[i + 1])]
                let c = pad == 2 ? 0 : t[Int(src[i + 2])]
                let d = pad >= 1 ? 0 : t[Int(src[i + 3])]
                bad |= a | b | c | d
                let v = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                dst[j] = UInt8(truncatingIfNeeded: v >> 16)
                if pad < 2 { dst[j + 1] = UInt8(truncatingIfNeeded: v >> 8) }
                if pad < 1 { dst[j + 2] = UInt8(truncatingIfNeeded: v) }
                // The bits after the last byte are zero in the canonical spelling.
                if bad & 0xC0 != 0 || (pad == 2 && v & 0xFFFF != 0) || (pad == 1 && v & 0xFF != 0) { ok = false }
                initialized = ok ? count : 0
            }
            return ok ? out : nil
        }
    }
}
