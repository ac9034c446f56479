/// Which keys of an object to keep when parsing only part of it (`FastJSON.parse(_:keeping:)`).
/// A key maps to nil (parse its value whole) or to a nested filter (the value, when it is an
/// object, is parsed with that filter too).
public final class KeyFilter: Sendable {
    let keys: [[UInt8]]
    let names: [String]
    let nested: [KeyFilter?]
    /// Key indices by key length in bytes (the first test of a key, before any byte compare).
    let byLength: [[Int]]

    public init(_ spec: [String: KeyFilter?]) {
        let sorted = spec.sorted { $0.key < $1.key }
        names = sorted.map(\.key)
        keys = sorted.map { Array($0.key.utf8) }
        nested = sorted.map { $0.value }
        var table = [[Int]](repeating: [], count: (sorted.map { $0.key.utf8.count }.max() ?? 0) + 1)
        for (k, key) in keys.enumerated() { table[key.count].append(k) }
        byLength = table
    }

    public convenience init(_ keys: [String]) {
        self.init(Dictionary(uniqueKeysWithValues: keys.map { ($0, KeyFilter?.none) }))
    }

    /// The index of the key spelled by these bytes (no escapes), or nil.
    func index(of bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        guard bytes.count < byLength.count else { return nil }
        for k in byLength[bytes.count] {
            let key = keys[k]
            var j = 0
            while j < key.count, key[j] == bytes[j] { j += 1 }
            if j == key.count { return k }
        }
        return nil
    }
}

extension FastJSON {
    /// Parses `bytes` strictly (the whole text is checked exactly as `parse` checks it: any
    /// input `parse` rejects is rejected here too), but builds only the kept keys of the top-level
    /// object (and of nested objects named in the filter). Reading a projection's ~20 keys of a
    /// 49-key IntakeQ object this way allocates nothing for the others.
    public static func parse(_ bytes: some Collection<UInt8>, keeping filter: KeyFilter) throws -> JSONValue {
        let run = { (buf: UnsafeBufferPointer<UInt8>) throws -> JSONValue in
            var p = Parser(b: buf)
            p.skipSpace()
            let v = try p.filtered(filter, depth: 0)
            p.skipSpace()
            guard p.i == buf.count else { throw ParseError(offset: p.i, what: "trailing bytes") }
            return v
        }
        if let v = try bytes.withContiguousStorageIfAvailable(run) { return v }
        return try Array(bytes).withUnsafeBufferPointer(run)
    }
}

extension FastJSON.Parser {
    /// A value; when it is an object, only the filter's keys are built.
    mutating func filtered(_ filter: KeyFilter, depth: Int) throws -> JSONValue {
        guard depth < FastJSON.maxDepth else { throw fail("nested more than \(FastJSON.maxDepth) levels") }
        guard i < b.count, b[i] == UInt8(ascii: "{") else { return try value(depth: depth) }
        i += 1
        var out: [String: JSONValue] = [:]
        out.reserveCapacity(filter.keys.count)
        skipSpace()
        if i < b.count, b[i] == UInt8(ascii: "}") {
            i += 1
            return .object(out)
        }
        while true {
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a key") }
            let keyStart = i + 1
            let escaped = try skipString()
            var slot: Int?
            if !escaped {
                slot = filter.index(of: UnsafeBufferPointer(rebasing: b[keyStart..<(i - 1)]))
            } else {
                // Rare: decode the key to compare it.
                let save = i
                i = keyStart - 1
                let key = try string()
                i = save
                slot = filter.names.firstIndex(of: key)
            }
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            if let slot {
                if let inner = filter.nested[slot] {
                    out[filter.names[slot]] = try filtered(inner, depth: depth + 1)
                } else {
                    out[filter.names[slot]] = try value(depth: depth + 1)
                }
            } else {
                try skipValue(depth: depth + 1)
            }
            skipSpace()
            guard i < b.count else { throw fail("unexpected end") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
            throw fail("expected ',' or '}'")
        }
    }

    /// Checks a value as `value` would, building nothing.
    mutating func skipValue(depth: Int) throws {
        guard depth < FastJSON.maxDepth else { throw fail("nested more than \(FastJSON.maxDepth) levels") }
        guard i < b.count else { throw fail("unexpected end") }
        switch b[i] {
        case UInt8(ascii: "{"):
            i += 1
            skipSpace()
            if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return }
            while true {
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a key") }
                _ = try skipString()
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                i += 1
                skipSpace()
                try skipValue(depth: depth + 1)
                skipSpace()
                guard i < b.count else { throw fail("unexpected end") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; return }
                throw fail("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            i += 1
            skipSpace()
            if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return }
            while true {
                skipSpace()
                try skipValue(depth: depth + 1)
                skipSpace()
                guard i < b.count else { throw fail("unexpected end") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return }
                throw fail("expected ',' or ']'")
            }
        case UInt8(ascii: "\""): _ = try skipString()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: _ = try skipNumber()
        }
    }

    /// Checks a string as `string` would (escapes, surrogate pairs, control characters) without
    /// building it. Returns true when it held an escape.
    mutating func skipString() throws -> Bool {
        i += 1
        var escaped = false
        while true {
            skipPlain()
            guard i < b.count else { break }
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return escaped
            }
            if c < 0x20 { throw fail("control character in a string") }
            // A backslash.
            escaped = true
            i += 1
            guard i < b.count else { break }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                break
            case UInt8(ascii: "u"):
                _ = try unicodeEscape()
            default:
                throw fail("bad escape")
            }
        }
        throw fail("unterminated string")
    }
}
