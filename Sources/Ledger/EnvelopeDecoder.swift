#if canImport(Glibc)
import Glibc
#endif

/// Decodes stored envelope lines one after another, reading the bytes in place (no copy of the
/// line) and reusing the strings the previous line had: a batch shares one `at` and usually one
/// `run`, and there are ten event types. What it returns is exactly what `EventEnvelope.decode`
/// returns for the line (it is the same scanner; anything it does not read falls back to the
/// general JSON parse).
public struct EnvelopeDecoder {
    private var lastAt: String?
    private var lastRun: String?

    public init() {}

    /// The envelope of one stored line (without its newline).
    public mutating func decode(_ line: some Collection<UInt8>) throws -> EventEnvelope {
        // Set in place and moved out (`take`): unwrapping the closure's optional result copied
        // the envelope, retaining and releasing each of its references.
        var fast: EventEnvelope?
        _ = line.withContiguousStorageIfAvailable { buf in
            if buf.count > 0 { fast = scan(buf) }
        }
        if let e = fast.take() { return e }
        let bytes = Array(line)
        var scanner = EnvelopeScanner(bytes)
        if let e = scanner.scan() { return e }
        return try EventEnvelope.decodeSlow(bytes)
    }

    /// The fixed key order SyncLedger writes (the grammar of `EnvelopeScanner`).
    private mutating func scan(_ b: UnsafeBufferPointer<UInt8>) -> EventEnvelope? {
        var i = 0
        let n = b.count
        let base = b.baseAddress!

        @inline(__always) func lit(_ s: StaticString) -> Bool {
            let k = s.utf8CodeUnitCount
            guard i + k <= n, memcmp(base + i, s.utf8Start, k) == 0 else { return false }
            i += k
            return true
        }
        @inline(__always) func int() -> Int64? {
            var v: Int64 = 0
            let start = i
            while i < n, b[i] >= 48, b[i] <= 57, i - start < 18 {
                v = v * 10 + Int64(b[i] - 48)
                i += 1
            }
            return i > start ? v : nil
        }
        /// The bytes of a string without escapes (nil: the general parser decides).
        @inline(__always) func str() -> UnsafeBufferPointer<UInt8>? {
            guard i < n, b[i] == 34 else { return nil }
            i += 1
            let start = i
            guard let hit = memchr(base + i, 34, n - i) else { return nil }
            let end = UnsafeRawPointer(hit).assumingMemoryBound(to: UInt8.self) - base
            if memchr(base + start, 92, end - start) != nil { return nil }
            i = end + 1
            return UnsafeBufferPointer(rebasing: b[start..<end])
        }

        guard lit("{\"seq\":"), let seq = int(), lit(",\"id\":"), let id = str(),
            lit(",\"type\":"), let type = str(), lit(",\"v\":"), let v = int(),
            lit(",\"at\":"), let at = str(), lit(",\"run\":")
        else { return nil }
        var run: UnsafeBufferPointer<UInt8>?
        if !lit("null") {
            guard let r = str() else { return nil }
            run = r
        }
        guard lit(",\"stream\":"), let stream = str(), lit(",\"data\":") else { return nil }
        guard n > i + 1, b[n - 1] == UInt8(ascii: "}") else { return nil }

        let atString = Self.reuse(&lastAt, at)
        let runString = run.map { Self.reuse(&lastRun, $0) }
        let (typeString, eventType) = Self.typeName(type)
        return EventEnvelope(
            seq: UInt64(seq), id: String(decoding: id, as: UTF8.self), type: typeString, eventType: eventType, v: Int(v),
            at: atString, run: runString, stream: String(decoding: stream, as: UTF8.self),
            data: Array(UnsafeBufferPointer(rebasing: b[i..<(n - 1)])))
    }

    /// `last` when it has these bytes, else a new string (remembered).
    @inline(__always) private static func reuse(_ last: inout String?, _ bytes: UnsafeBufferPointer<UInt8>) -> String {
        if var s = last {
            let same = s.withUTF8 { u in
                u.count == bytes.count && (u.isEmpty || memcmp(u.baseAddress!, bytes.baseAddress!, u.count) == 0)
            }
            if same { return s }
        }
        let s = String(decoding: bytes, as: UTF8.self)
        last = s
        return s
    }

    private static let typeNames: [(bytes: [UInt8], name: String, type: EventType)] = EventType.allCases.map {
        (Array($0.rawValue.utf8), $0.rawValue, $0)
    }

    /// The catalogue's type name with these bytes (a shared string) and its type, else a new
    /// string and nil (no name in the catalogue is spelled with these bytes).
    @inline(__always) static func typeName(_ bytes: UnsafeBufferPointer<UInt8>) -> (String, EventType?) {
        for t in typeNames where t.bytes.count == bytes.count && !bytes.isEmpty {
            let same = t.bytes.withUnsafeBufferPointer { memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 }
            if same { return (t.name, t.type) }
        }
        return (String(decoding: bytes, as: UTF8.self), nil)
    }
}
