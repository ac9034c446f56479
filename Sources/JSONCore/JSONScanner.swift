import CChecksum

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

    /// Names looked for by `forEachMember`, prepared once (keep it in a `static let`).
    public final class Names: Sendable {
        /// The names' bytes one after another, sorted by length (stable).
        let bytes: [UInt8]
        /// Where each sorted name starts in `bytes`.
        let starts: [Int]
        /// The sorted names of length L are `byLength[L] ..< byLength[L + 1]`.
        let byLength: [Int]
        /// The index in the caller's list of each sorted name.
        let index: [Int]
        let longest: Int

        public init(_ names: [String]) {
            let sorted = names.enumerated().sorted { ($0.element.utf8.count, $0.offset) < ($1.element.utf8.count, $1.offset) }
            longest = names.map(\.utf8.count).max() ?? 0
            var bytes: [UInt8] = [], starts: [Int] = [], byLength = [Int](repeating: 0, count: longest + 2)
            for (_, name) in sorted {
                starts.append(bytes.count)
                bytes += Array(name.utf8)
            }
            for length in 0...(longest + 1) { byLength[length] = sorted.firstIndex { $0.element.utf8.count >= length } ?? sorted.count }
            self.bytes = bytes
            self.starts = starts
            self.byLength = byLength
            index = sorted.map(\.offset)
        }
    }

    /// Members `forEachMember` hands over per call, at most: an object with more that are named
    /// (or have an escaped key) is read the slow way. Their records (32 bytes each) stay under
    /// the 1 KiB that `withUnsafeTemporaryAllocation` places on the stack without asking (at 64
    /// it went to the heap for every object).
    public static let membersAtOnce = 24

    /// Checks the object at the offset (at `depth`) in one pass in C (`syncledger_json_object_members`:
    /// exactly the checks walking it with `nextKey` and `skipValue` makes), then calls `body` for
    /// each member whose key is one of `names` (with its index in them) or holds an escape (nil:
    /// decode the key to know), in order, with a scanner at its value for `body` to read it
    /// (at `depth + 1`); the offset is then past the object. Returns false, having read nothing
    /// and called nothing, when the C walk cannot say: the value is not an object, the bytes are
    /// not valid JSON, a value in it is at depth 128 or more (the top-level value at depth 0), or
    /// more than `membersAtOnce` members are to be handed over. Then walk the object with
    /// `beginObject` and `nextKey` instead, which finds any error.
    public mutating func forEachMember(depth: Int, named names: Names, _ body: (Int?, Key, inout JSONScanner) throws -> Void) rethrows -> Bool {
        guard p.i < p.b.count, p.b[p.i] == UInt8(ascii: "{"), let base = p.b.baseAddress else { return false }
        return try withUnsafeTemporaryAllocation(of: syncledger_json_member.self, capacity: Self.membersAtOnce) { members in
            var end = p.i
            let found = names.bytes.withUnsafeBufferPointer { bytes in
                names.starts.withUnsafeBufferPointer { starts in
                    names.byLength.withUnsafeBufferPointer { byLength in
                        syncledger_json_object_members(base, p.b.count, &end, depth, bytes.baseAddress, starts.baseAddress,
                                                       byLength.baseAddress, names.longest, members.baseAddress!, Self.membersAtOnce)
                    }
                }
            }
            guard found >= 0 else { return false }
            for m in members.prefix(found) {
                var value = self
                value.p.i = m.value_start
                let key = Key(range: m.key_start..<m.key_end, escaped: m.name < 0)
                try body(m.name < 0 ? nil : names.index[m.name], key, &value)
            }
            p.i = end
            return true
        }
    }

    /// After the top-level value: only whitespace may follow.
    public mutating func finish() throws {
        p.skipSpace()
        guard p.i == p.b.count else { throw FastJSON.ParseError(offset: p.i, what: "trailing bytes") }
    }
}
