/// A pull scanner over JSON bytes for readers that want a few fields of an object without
/// building a `JSONValue` of it (the chunked fold's appointment facts). It checks the text
/// exactly as `FastJSON.parse` does, step for step — the same checks in the same order, so an
/// input `parse` rejects is rejected here with the same `ParseError` — as long as the caller
/// walks every value (reads, skips or descends into it) and ends with `finish()`.
///
/// Depth follows `parse`: the top-level value is at depth 0, the values inside a container at
/// depth `n` are at `n + 1`.
///
/// The scanner reads through an unsafe pointer: use it only inside the closure that lends the
/// bytes (`withUnsafeBufferPointer`).
public struct JSONScanner {
    var p: FastJSON.Parser

    public init(_ bytes: UnsafeBufferPointer<UInt8>) {
        p = FastJSON.Parser(b: bytes)
        p.skipSpace()
    }

    /// The bytes scanned.
    public var bytes: UnsafeBufferPointer<UInt8> { p.b }
    /// The offset of the next byte to read (after any whitespace, at a value's start).
    public var offset: Int { p.i }

    /// A key of an object: its bytes between the quotes (escapes not decoded).
    public struct Key {
        public var range: Range<Int>
        /// True when the key holds a backslash escape: compare `decodedKey(_:)`, not the bytes.
        public var escaped: Bool
    }

    /// A value read as a scalar; containers are checked and skipped.
    public enum Scalar: Equatable {
        case null
        case bool(Bool)
        case number(Double)
        case string(String)
        /// An array or an object (checked, skipped).
        case container

        /// What `JSONValue.stringValue` gives for this value.
        public var stringValue: String? {
            switch self {
            case .string(let s): return s
            case .number(let d): return JSONValue.number(d).stringValue
            case .bool(let b): return b ? "true" : "false"
            case .null, .container: return nil
            }
        }

        /// What `JSONValue.int64Value` gives for this value.
        public var int64Value: Int64? {
            switch self {
            case .number(let d): return JSONValue.number(d).int64Value
            case .string(let s): return JSONValue.string(s).int64Value
            default: return nil
            }
        }

        public var isNull: Bool { self == .null }
    }

    /// The checks `parse` makes on entering a value at `depth`.
    mutating func enter(_ depth: Int) throws {
        guard depth < FastJSON.maxDepth else { throw p.fail("nested more than \(FastJSON.maxDepth) levels") }
        guard p.i < p.b.count else { throw p.fail("unexpected end") }
    }

    /// The first byte of the value at the offset (nil at the end).
    public var next: UInt8? { p.i < p.b.count ? p.b[p.i] : nil }

    /// Starts reading the value at `depth` as an object: true (and the `{` consumed) when it is
    /// one; false (nothing consumed) when it is some other value, which the caller must then
    /// read or skip.
    public mutating func beginObject(depth: Int) throws -> Bool {
        try enter(depth)
        guard p.b[p.i] == UInt8(ascii: "{") else { return false }
        p.i += 1
        p.skipSpace()
        return true
    }

    /// Starts reading the value at `depth` as an array, like `beginObject`.
    public mutating func beginArray(depth: Int) throws -> Bool {
        try enter(depth)
        guard p.b[p.i] == UInt8(ascii: "[") else { return false }
        p.i += 1
        p.skipSpace()
        return true
    }

    /// The next key of the object begun with `beginObject`, with the `:` after it consumed (the
    /// offset is at its value, which the caller must read or skip); nil when the object ends
    /// (its `}` consumed). `first` is true for the first call after `beginObject`.
    public mutating func nextKey(first: Bool) throws -> Key? {
        if first {
            if p.i < p.b.count, p.b[p.i] == UInt8(ascii: "}") {
                p.i += 1
                return nil
            }
        } else {
            p.skipSpace()
            guard p.i < p.b.count else { throw p.fail("unexpected end") }
            if p.b[p.i] == UInt8(ascii: "}") {
                p.i += 1
                return nil
            }
            guard p.b[p.i] == UInt8(ascii: ",") else { throw p.fail("expected ',' or '}'") }
            p.i += 1
        }
        p.skipSpace()
        guard p.i < p.b.count, p.b[p.i] == UInt8(ascii: "\"") else { throw p.fail("expected a key") }
        let start = p.i + 1
        let escaped = try p.skipString()
        let key = Key(range: start..<(p.i - 1), escaped: escaped)
        p.skipSpace()
        guard p.i < p.b.count, p.b[p.i] == UInt8(ascii: ":") else { throw p.fail("expected ':'") }
        p.i += 1
        p.skipSpace()
        return key
    }

    /// True when another element of the array begun with `beginArray` follows (the offset is at
    /// it); false when the array ends (its `]` consumed). `first` as for `nextKey`.
    public mutating func nextElement(first: Bool) throws -> Bool {
        if first {
            if p.i < p.b.count, p.b[p.i] == UInt8(ascii: "]") {
                p.i += 1
                return false
            }
        } else {
            p.skipSpace()
            guard p.i < p.b.count else { throw p.fail("unexpected end") }
            if p.b[p.i] == UInt8(ascii: "]") {
                p.i += 1
                return false
            }
            guard p.b[p.i] == UInt8(ascii: ",") else { throw p.fail("expected ',' or ']'") }
            p.i += 1
        }
        p.skipSpace()
        return true
    }

    /// The text of a key with its escapes decoded.
    public func decodedKey(_ key: Key) throws -> String {
        var q = FastJSON.Parser(b: p.b)
        q.i = key.range.lowerBound - 1
        return try q.string()
    }

    /// True when the key's bytes are exactly `name` (an unescaped key).
    @inline(__always)
    public func key(_ key: Key, is name: StaticString) -> Bool {
        let n = name.utf8CodeUnitCount
        guard key.range.count == n else { return false }
        let a = p.b.baseAddress! + key.range.lowerBound, b = name.utf8Start
        for k in 0..<n where a[k] != b[k] { return false }
        return true
    }

    /// Checks and skips the value at `depth`.
    public mutating func skipValue(depth: Int) throws {
        try p.skipValue(depth: depth)
    }

    /// The value at `depth`, built whole.
    public mutating func value(depth: Int) throws -> JSONValue {
        try p.value(depth: depth)
    }

    /// The value at `depth` as a scalar; a container is checked and skipped.
    public mutating func scalar(depth: Int) throws -> Scalar {
        try enter(depth)
        switch p.b[p.i] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            try p.skipValue(depth: depth)
            return .container
        case UInt8(ascii: "\""): return .string(try p.string())
        case UInt8(ascii: "t"): try p.literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try p.literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try p.literal("null"); return .null
        default: return .number(try p.number())
        }
    }

    /// `scalar(depth:).stringValue`, without the `Scalar` (whose string was copied out of it).
    public mutating func stringValue(depth: Int) throws -> String? {
        try enter(depth)
        switch p.b[p.i] {
        case UInt8(ascii: "\""): return try p.string()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            try p.skipValue(depth: depth)
            return nil
        case UInt8(ascii: "t"): try p.literal("true"); return "true"
        case UInt8(ascii: "f"): try p.literal("false"); return "false"
        case UInt8(ascii: "n"): try p.literal("null"); return nil
        default: return JSONValue.number(try p.number()).stringValue
        }
    }

    /// The value at `depth` when it is a string without escapes: its bytes' range (consumed).
    /// Nil (nothing consumed) for any other value.
    public mutating func plainString(depth: Int) throws -> Range<Int>? {
        try enter(depth)
        guard p.b[p.i] == UInt8(ascii: "\"") else { return nil }
        let save = p.i
        if try p.skipString() {
            p.i = save
            return nil
        }
        return (save + 1)..<(p.i - 1)
    }

    /// After the top-level value: only whitespace may follow.
    public mutating func finish() throws {
        p.skipSpace()
        guard p.i == p.b.count else { throw FastJSON.ParseError(offset: p.i, what: "trailing bytes") }
    }
}
