import Domain
import Foundation
import JSONCore
import Synchronization

/// The event types of the catalogue (DESIGN.md, "Event catalogue").
public enum EventType: String, Sendable, CaseIterable {
    case syncStarted = "sync.started"
    case rosterObserved = "roster.observed"
    case appointmentDiscovered = "appointment.discovered"
    case appointmentChanged = "appointment.changed"
    case appointmentRemoved = "appointment.removed"
    case settingsObserved = "practice.settings_observed"
    case syncCompleted = "sync.completed"
    case syncAbandoned = "sync.abandoned"
    case lossRecorded = "ledger.loss_recorded"

    case patientForgotten = "patient.forgotten"

    /// The schema version this code writes, and the one every read is upcast to.
    /// `appointment.discovered`/`changed` v2: redacted (docs/FORMAT.md, "Redaction list") and
    /// with personal data sealed per patient; `roster.observed` v2: patients sealed.
    public var currentVersion: Int {
        switch self {
        case .appointmentDiscovered, .appointmentChanged, .rosterObserved: return 2
        default: return 1
        }
    }
}

/// One event as stored: a JSON object on one line, keys in this order:
/// `{"seq":41,"id":"…","type":"…","v":1,"at":"…","run":"…","stream":"…","data":{…}}`.
/// `data` is kept as bytes; typed accessors decode it on demand.
public struct EventEnvelope: Sendable, Hashable {
    public var seq: UInt64
    public var id: String
    public var type: String {
        didSet { eventType = EventType(rawValue: type) }
    }
    /// `type` in the catalogue, nil for a type it does not name. Kept beside `type`: the fold
    /// asks it of every event several times, and a string switch each time showed in its profile.
    public private(set) var eventType: EventType?
    public var v: Int
    /// When SyncLedger recorded it (real clock), ISO 8601 UTC with milliseconds.
    public var at: String
    public var run: String?
    public var stream: String
    public var data: [UInt8] {
        didSet { memo = DecodeMemo() }
    }
    /// The parsed `data`, shared by the copies of this envelope, so the projections folding
    /// one event parse it once between them. Not part of the value (== and hash ignore it).
    var memo: DecodeMemo

    public static func == (a: EventEnvelope, b: EventEnvelope) -> Bool {
        a.seq == b.seq && a.id == b.id && a.type == b.type && a.v == b.v && a.at == b.at && a.run == b.run
            && a.stream == b.stream && a.data == b.data
    }

    public func hash(into h: inout Hasher) {
        h.combine(seq)
        h.combine(id)
        h.combine(data)
    }

    public init(seq: UInt64, id: String, type: String, v: Int, at: String, run: String?, stream: String, data: [UInt8]) {
        self.init(seq: seq, id: id, type: type, eventType: EventType(rawValue: type), v: v, at: at, run: run, stream: stream, data: data)
    }

    /// `eventType` must be `EventType(rawValue: type)`: given by a decoder that matched the
    /// type's bytes against the catalogue already (the string switch of `init(rawValue:)` was
    /// 0.6 % of a rebuild's CPU samples).
    init(seq: UInt64, id: String, type: String, eventType: EventType?, v: Int, at: String, run: String?, stream: String,
         data: [UInt8]) {
        self.seq = seq
        self.id = id
        self.type = type
        self.v = v
        self.at = at
        self.run = run
        self.stream = stream
        self.data = data
        self.memo = DecodeMemo()
        self.eventType = eventType
    }

    public var atMillis: Int64 { ISOTime.parse(at) ?? 0 }

    /// The line as stored (without the newline). Written byte by byte (the same bytes as
    /// building the text would give): a durable append encodes every event it stores.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + id.utf8.count + type.utf8.count + at.utf8.count + stream.utf8.count
                            + (run?.utf8.count ?? 4) + 80)
        encode(into: &out)
        return out
    }

    /// Appends the line as stored (without the newline) to `out`.
    public func encode(into out: inout [UInt8]) {
        out.append(contentsOf: Self.seqKey)
        appendDecimal(&out, seq)
        out.append(contentsOf: Self.idKey)
        appendQuoted(&out, id)
        out.append(contentsOf: Self.typeKey)
        appendQuoted(&out, type)
        out.append(contentsOf: Self.vKey)
        if v < 0 {
            out.append(contentsOf: Array(String(v).utf8))
        } else {
            appendDecimal(&out, UInt64(v))
        }
        out.append(contentsOf: Self.atKey)
        appendQuoted(&out, at)
        out.append(contentsOf: Self.runKey)
        if let run { appendQuoted(&out, run) } else { out.append(contentsOf: Self.null) }
        out.append(contentsOf: Self.streamKey)
        appendQuoted(&out, stream)
        out.append(contentsOf: Self.dataKey)
        out.append(contentsOf: data)
        out.append(UInt8(ascii: "}"))
    }

    static let seqKey = Array("{\"seq\":".utf8)
    static let idKey = Array(",\"id\":".utf8)
    static let typeKey = Array(",\"type\":".utf8)
    static let vKey = Array(",\"v\":".utf8)
    static let atKey = Array(",\"at\":".utf8)
    static let runKey = Array(",\"run\":".utf8)
    static let null = Array("null".utf8)
    static let streamKey = Array(",\"stream\":".utf8)
    static let dataKey = Array(",\"data\":".utf8)

    /// Parses a stored line. The fast path reads the fixed key order SyncLedger writes; anything
    /// else that is a valid envelope object is accepted through a general JSON parse.
    /// (`EnvelopeDecoder` reads a run of lines, sharing the strings they have in common.)
    public static func decode(_ line: some Collection<UInt8>) throws -> EventEnvelope {
        var decoder = EnvelopeDecoder()
        return try decoder.decode(line)
    }

    static func decodeSlow(_ bytes: [UInt8]) throws -> EventEnvelope {
        let value: JSONValue
        do { value = try FastJSON.parse(bytes) } catch {
            throw LedgerError("an event line is not valid JSON: \(error.localizedDescription)")
        }
        guard case .object(let o) = value,
            let seq = o["seq"]?.int64Value, let type = o["type"]?.stringValue,
            let at = o["at"]?.stringValue, let stream = o["stream"]?.stringValue, let data = o["data"]
        else { throw LedgerError("an event line lacks seq, type, at, stream or data") }
        let run = o["run"].flatMap { $0.isNull ? nil : $0.stringValue }
        return EventEnvelope(
            seq: UInt64(max(0, seq)), id: o["id"]?.stringValue ?? "", type: type,
            v: Int(o["v"]?.int64Value ?? 1), at: at, run: run, stream: stream,
            data: Array(data.canonicalText.utf8))
    }

    /// The data object, decoded generically (parsed once per envelope).
    public func dataValue() throws -> JSONValue {
        if let v = memo.withLock({ $0.value }) { return v }
        do {
            let v = try FastJSON.parse(data)
            memo.withLock { $0.value = v }
            return v
        } catch {
            throw LedgerError("event \(seq) (\(type)) has a data field that is not valid JSON: \(error)")
        }
    }

    /// The data object with only the keys `filter` keeps (the whole data when it was parsed
    /// already, for example by opening sealed parts). Throws as `dataValue` does on bad JSON.
    public func partialDataValue(keeping filter: KeyFilter) throws -> JSONValue {
        if let v = memo.withLock({ $0.value }) { return v }
        do { return try FastJSON.parse(data, keeping: filter) } catch {
            throw LedgerError("event \(seq) (\(type)) has a data field that is not valid JSON: \(error)")
        }
    }

    /// A value derived from this event by a reader (for example a projection's view of the
    /// appointment object), computed once and shared by the envelope's copies.
    public func memoized<T: Sendable>(_ key: String, _ make: () throws -> T) rethrows -> T {
        // Boxed in a class: casting an `Any` back to a tuple or struct is a slow dynamic cast,
        // casting to a known class is not.
        if let box = memo.withLock({ $0.derived[key] }) as? MemoBox<T> { return box.value }
        let v = try make()
        memo.withLock { $0.derived[key] = MemoBox(v) }
        return v
    }

    /// Decodes `data` as a typed payload.
    public func decodeData<T: Decodable>(_: T.Type) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(data)) } catch {
            throw LedgerError("event \(seq) (\(type) v\(v)) has a data field this version cannot read: \(describe(error))")
        }
    }
}

final class MemoBox<T: Sendable>: Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Holds what was parsed from an envelope's data. A class so copies of the envelope share it.
final class DecodeMemo: Sendable {
    struct State {
        var value: JSONValue?
        var derived: [String: any AnyObject & Sendable] = [:]
    }
    private let state = Mutex(State())

    func withLock<T: Sendable>(_ body: (inout State) -> T) -> T {
        state.withLock { (s: inout sending State) -> sending T in body(&s) }
    }
}

/// Reads the envelope keys in the order SyncLedger writes them, without a JSON library.
struct EnvelopeScanner {
    let b: [UInt8]
    var i = 0
    init(_ bytes: [UInt8]) { b = bytes }

    mutating func lit(_ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard i + n <= b.count else { return false }
        let p = s.utf8Start
        for k in 0..<n where b[i + k] != p[k] { return false }
        i += n
        return true
    }

    mutating func int() -> Int64? {
        var v: Int64 = 0
        let start = i
        while i < b.count, b[i] >= 48, b[i] <= 57, i - start < 18 {
            v = v * 10 + Int64(b[i] - 48)
            i += 1
        }
        return i > start ? v : nil
    }

    /// A string without escapes (ids, types, times and streams SyncLedger writes have none);
    /// anything escaped falls back to the general parser.
    mutating func str() -> String? {
        guard i < b.count, b[i] == 34 else { return nil }
        i += 1
        let start = i
        while i < b.count, b[i] != 34 {
            if b[i] == 92 { return nil }
            i += 1
        }
        guard i < b.count else { return nil }
        let s = String(decoding: b[start..<i], as: UTF8.self)
        i += 1
        return s
    }

    mutating func scan() -> EventEnvelope? {
        guard lit("{\"seq\":"), let seq = int(), lit(",\"id\":"), let id = str(),
            lit(",\"type\":"), let type = str(), lit(",\"v\":"), let v = int(),
            lit(",\"at\":"), let at = str(), lit(",\"run\":")
        else { return nil }
        var run: String? = nil
        if !lit("null") {
            guard let r = str() else { return nil }
            run = r
        }
        guard lit(",\"stream\":"), let stream = str(), lit(",\"data\":") else { return nil }
        guard b.count > i + 1, b[b.count - 1] == UInt8(ascii: "}") else { return nil }
        return EventEnvelope(
            seq: UInt64(seq), id: id, type: type, v: Int(v), at: at, run: run, stream: stream,
            data: Array(b[i..<(b.count - 1)]))
    }
}

/// An error of the ledger layer, with a message that says what to do.
public struct LedgerError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

func describe(_ error: any Error) -> String {
    if let e = error as? DecodingError {
        switch e {
        case .keyNotFound(let k, let c): return "missing key \(path(c.codingPath + [k]))"
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
            return "\(c.debugDescription) at \(path(c.codingPath))"
        @unknown default: return "\(e)"
        }
    }
    return "\(error)"
}

private func path(_ keys: [any CodingKey]) -> String {
    keys.isEmpty ? "top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}

/// Appends the decimal digits of `n`.
func appendDecimal(_ out: inout [UInt8], _ n: UInt64) {
    var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                 UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var v = n
    var count = 0
    withUnsafeMutableBytes(of: &digits) { d in
        repeat {
            d[19 - count] = UInt8(48 + v % 10)
            v /= 10
            count += 1
        } while v > 0
        out.append(contentsOf: d[(20 - count)...])
    }
}

/// Appends `s` as a JSON string, as `jsonQuoted` writes it.
func appendQuoted(_ out: inout [UInt8], _ s: String) {
    // Native strings hand out their UTF-8 in place: check and copy it as one buffer.
    let done = s.utf8.withContiguousStorageIfAvailable { u -> Bool in
        if needsEscaping(u) { return false }
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: u)
        out.append(UInt8(ascii: "\""))
        return true
    }
    if done == true { return }
    let plain = !s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") })
    if plain {
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: s.utf8)
        out.append(UInt8(ascii: "\""))
    } else {
        out.append(contentsOf: jsonQuoted(s).utf8)
    }
}

/// Whether some byte is a control character, a quote or a backslash (what JSON text must escape),
/// eight bytes at a time: the check ran byte by byte over every id, time and hash of every event
/// written (~2 % of a sealed append's CPU).
func needsEscaping(_ u: UnsafeBufferPointer<UInt8>) -> Bool {
    guard let base = u.baseAddress else { return false }
    let p = UnsafeRawPointer(base), n = u.count
    let ones: UInt64 = 0x0101_0101_0101_0101, high: UInt64 = 0x8080_8080_8080_8080
    var i = 0
    while i + 8 <= n {
        let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        // Some byte below 0x20; some byte equal to '"' or '\\' (a zero byte after the XOR).
        let control = (w &- ones &* 0x20) & ~w & high
        let q = w ^ (ones &* 0x22), s = w ^ (ones &* 0x5C)
        let quote = (q &- ones) & ~q & high, backslash = (s &- ones) & ~s & high
        if control | quote | backslash != 0 { return true }
        i += 8
    }
    while i < n {
        let c = base[i]
        if c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") { return true }
        i += 1
    }
    return false
}

/// Random version-4 UUIDs in lowercase text (`UUID().uuidString.lowercased()`'s format), from
/// one read of `/dev/urandom` per 256 ids instead of a Foundation UUID, a String and a lowercased copy each.
struct UUIDSource {
    private var pool = [UInt8](repeating: 0, count: 16 * 256)
    private var next = 16 * 256
    @inline(__always) private static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 48 + v : 87 + v }
    /// Kept open for the process (one descriptor, never closed).
    private static let urandom: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

    mutating func make() -> String {
        if next == pool.count {
            var filled = 0
            let fd = Self.urandom
            if fd >= 0 {
                pool.withUnsafeMutableBytes { p in
                    while filled < p.count {
                        let n = read(fd, p.baseAddress! + filled, p.count - filled)
                        if n > 0 { filled += n } else if n == 0 || errno != EINTR { break }
                    }
                }
            }
            if filled < pool.count {
                // No getrandom: Foundation's generator.
                next = pool.count
                return UUID().uuidString.lowercased()
            }
            next = 0
        }
        let first = next
        next += 16
        return pool.withUnsafeBufferPointer { b in
            String(unsafeUninitializedCapacity: 36) { out in
                var o = 0
                for i in 0..<16 {
                    if i == 4 || i == 6 || i == 8 || i == 10 {
                        out[o] = UInt8(ascii: "-")
                        o += 1
                    }
                    var byte = b[first + i]
                    if i == 6 { byte = (byte & 0x0F) | 0x40 }
                    if i == 8 { byte = (byte & 0x3F) | 0x80 }
                    out[o] = Self.hexDigit(byte >> 4)
                    out[o + 1] = Self.hexDigit(byte & 0xF)
                    o += 2
                }
                return o
            }
        }
    }
}
