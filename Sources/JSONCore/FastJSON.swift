/// A JSON parser for the replay path. Foundation's JSON runs at about 60 MB/s here, the
/// slowest step of a rebuild (DESIGN.md, "Performance notes"); this one reads UTF-8 bytes
/// straight into `JSONValue`. Strict (RFC 8259), with a nesting limit so hostile input
/// cannot exhaust the stack.
public enum FastJSON {
    public struct ParseError: Error, CustomStringConvertible {
        public var offset: Int
        public var what: String
        public var description: String { "invalid JSON at byte \(offset): \(what)" }
    }

    public static let maxDepth = 256

    public static func parse(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buf in
            var p = Parser(b: buf)
            p.skipSpace()
            let v = try p.value(depth: 0)
            p.skipSpace()
            guard p.i == buf.count else { throw ParseError(offset: p.i, what: "trailing bytes") }
            return v
        }
    }

    /// `parse` for a file a person edits (the roster): a key given twice in one object and bytes
    /// that are not UTF-8 are errors, not passed over. `parse` keeps the last of repeated keys
    /// and repairs bad UTF-8 in strings, so a hand-merged roster with two "patients" lists lost
    /// one of them without a word.
    public static func parseStrictly(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        let array = Array(bytes)
        if String(validating: array, as: UTF8.self) == nil {
            // The first byte that does not decode: the longest valid prefix's end.
            var end = 0
            var it = array.makeIterator()
            var decoder = UTF8()
            loop: while true {
                switch decoder.decode(&it) {
                case .scalarValue(let s): end += UTF8.width(s)
                case .emptyInput, .error: break loop
                }
            }
            throw ParseError(offset: end, what: "not UTF-8 text")
        }
        return try array.withUnsafeBufferPointer { buf in
            var p = Parser(b: buf, rejectingRepeatedKeys: true)
            p.skipSpace()
            let v = try p.value(depth: 0)
            p.skipSpace()
            guard p.i == buf.count else { throw ParseError(offset: p.i, what: "trailing bytes") }
            return v
        }
    }

    struct Parser {
        let b: UnsafeBufferPointer<UInt8>
        var i = 0
        /// A key repeated in one object is an error (`parseStrictly`).
        var rejectingRepeatedKeys = false

        init(b: UnsafeBufferPointer<UInt8>, rejectingRepeatedKeys: Bool = false) {
            self.b = b
            self.rejectingRepeatedKeys = rejectingRepeatedKeys
        }

        func fail(_ what: String) -> ParseError { ParseError(offset: i, what: what) }

        /// Skips whitespace. Inlined for the common case (minified JSON: none), the loop apart.
        @inline(__always)
        mutating func skipSpace() {
            guard i < b.count, b[i] <= 0x20 else { return }
            skipSpaceLoop()
        }

        @inline(never)
        mutating func skipSpaceLoop() {
            while i < b.count {
                let c = b[i]
                guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { return }
                i += 1
            }
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < FastJSON.maxDepth else { throw fail("nested more than \(FastJSON.maxDepth) levels") }
            guard i < b.count else { throw fail("unexpected end") }
            switch b[i] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            default: return .number(try number())
            }
        }

        mutating func literal(_ word: StaticString) throws {
            let n = word.utf8CodeUnitCount
            guard i + n <= b.count else { throw fail("unexpected end") }
            for k in 0..<n where b[i + k] != word.utf8Start[k] { throw fail("unexpected character") }
            i += n
        }

        mutating func object(depth: Int) throws -> JSONValue {
            i += 1
            var out: [String: JSONValue] = [:]
            skipSpace()
            if i < b.count, b[i] == UInt8(ascii: "}") {
                i += 1
                return .object(out)
            }
            while true {
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a key") }
                let keyAt = i
                let key = try string()
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                i += 1
                skipSpace()
                if rejectingRepeatedKeys, out[key] != nil {
                    // Named when it looks like a field's name: a value typed as a key may be personal.
                    let shown = key.count <= 40 && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") } ? "\"\(key)\"" : "a key"
                    throw ParseError(offset: keyAt, what: "\(shown) appears twice in one object")
                }
                out[key] = try value(depth: depth + 1)
                skipSpace()
                guard i < b.count else { throw fail("unexpected end") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
                throw fail("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            i += 1
            var out: [JSONValue] = []
            skipSpace()
            if i < b.count, b[i] == UInt8(ascii: "]") {
                i += 1
                return .array(out)
            }
            while true {
                skipSpace()
                out.append(try value(depth: depth + 1))
                skipSpace()
                guard i < b.count else { throw fail("unexpected end") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
                throw fail("expected ',' or ']'")
            }
        }

        mutating func string() throws -> String {
            i += 1
            let start = i
            // Fast path: no escapes.
            skipPlain()
            if i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\"") {
                    let s = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
                    i += 1
                    return s
                }
                if c < 0x20 { throw fail("control character in a string") }
            }
            var bytes = Array(b[start..<i])
            while i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\"") {
                    i += 1
                    return String(decoding: bytes, as: UTF8.self)
                }
                if c < 0x20 { throw fail("control character in a string") }
                if c != UInt8(ascii: "\\") {
                    bytes.append(c)
                    i += 1
                    continue
                }
                i += 1
                guard i < b.count else { break }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): bytes.append(e)
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0C)
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "r"): bytes.append(0x0D)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "u"):
                    let scalar = try unicodeEscape()
                    guard let u = Unicode.Scalar(scalar) else { throw fail("bad \\u escape") }
                    bytes.append(contentsOf: Array(String(Character(u)).utf8))
                default:
                    throw fail("bad escape")
                }
            }
            throw fail("unterminated string")
        }

        /// Moves to the next byte of a string that is not plain content (a quote, a backslash or
        /// a control character), or to the end; eight bytes at a time. The lowest flagged byte
        /// of each test is a true one (a borrow only moves up), so it stops exactly there.
        @inline(__always)
        mutating func skipPlain() {
            #if _endian(little)
            if i + 8 <= b.count {
                let base = UnsafeRawPointer(b.baseAddress!)
                let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
                repeat {
                    let x = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    let q = x ^ 0x2222_2222_2222_2222, e = x ^ 0x5C5C_5C5C_5C5C_5C5C
                    let m = (((q &- ones) & ~q) | ((e &- ones) & ~e) | ((x &- 0x2020_2020_2020_2020) & ~x)) & highs
                    if m != 0 {
                        i += m.trailingZeroBitCount >> 3
                        return
                    }
                    i += 8
                } while i + 8 <= b.count
            }
            #endif
            while i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") || c < 0x20 { return }
                i += 1
            }
        }

        /// The code point of a `\\u` escape, `i` just past the `u`: four hex digits, and after a
        /// high surrogate the `\\u` low surrogate that must follow, joined into one code point.
        mutating func unicodeEscape() throws -> UInt32 {
            let scalar = try hex4()
            if (0xD800..<0xDC00).contains(scalar) {
                guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                    throw fail("lone surrogate")
                }
                i += 2
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw fail("bad surrogate pair") }
                return 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            if (0xDC00..<0xE000).contains(scalar) { throw fail("lone surrogate") }
            return scalar
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= b.count else { throw fail("short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = b[i]
                let d: UInt32
                switch c {
                case 48...57: d = UInt32(c - 48)
                case 65...70: d = UInt32(c - 55)
                case 97...102: d = UInt32(c - 87)
                default: throw fail("bad hex digit")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        mutating func number() throws -> Double {
            let start = i
            if let integer = try skipNumber() {
                return Double(b[start] == UInt8(ascii: "-") ? -integer : integer)
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
            // Text the grammar above accepts always converts (an overflow gives an infinity).
            guard let d = Double(text) else { throw fail("bad number") }
            return d
        }

        /// Checks a number and moves past it, with `number`'s checks and errors: its magnitude
        /// when it is an integer of at most 18 digits (exact in an `Int64`), else nil (the text
        /// is converted by `number`; a number only skipped is not).
        mutating func skipNumber() throws -> Int64? {
            let start = i
            if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
            var intDigits = 0
            var integer: Int64 = 0
            var exact = true
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                if intDigits < 18 { integer = integer * 10 + Int64(b[i] - 48) } else { exact = false }
                intDigits += 1
                i += 1
            }
            guard intDigits > 0 else { throw fail("unexpected character") }
            if intDigits > 1, b[start + (b[start] == UInt8(ascii: "-") ? 1 : 0)] == 48 { throw fail("leading zero") }
            var simple = true
            if i < b.count, b[i] == UInt8(ascii: ".") {
                simple = false
                i += 1
                let f = i
                while i < b.count, b[i] >= 48, b[i] <= 57 { i += 1 }
                guard i > f else { throw fail("digits expected after '.'") }
            }
            if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
                simple = false
                i += 1
                if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
                let f = i
                while i < b.count, b[i] >= 48, b[i] <= 57 { i += 1 }
                guard i > f else { throw fail("digits expected in the exponent") }
            }
            return simple && exact ? integer : nil
        }
    }
}
