import Foundation
@testable import Ledger
import TestSupport
import Testing

/// `ByteJSON.scanValue` and `scanString` (the C scanner in CChecksum's jsonscan.c) give the
/// verdicts of the Swift scanner they replaced, kept here as the reference: the same values
/// rejected (the slow path then runs), the same end, the same "already canonical" and "plain".
@Suite struct JSONScanTests {
    /// The Swift scanner sealing used before the C one, unchanged.
    struct ReferenceScanner {
        let b: UnsafeBufferPointer<UInt8>
        static let maxDepth = 128

        @inline(__always) static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 }

        /// Skips whitespace; true when there was some.
        @inline(__always) func skipSpace(_ i: inout Int) -> Bool {
            let start = i
            while i < b.count, Self.isSpace(b[i]) { i += 1 }
            return i != start
        }

        // MARK: Scanning (validation as strict as FastJSON, plus "already canonical?")

        /// Checks the value at `i` (no leading whitespace) and moves past it. True when its bytes
        /// are exactly its canonical text.
        func scanValue(_ i: inout Int, depth: Int) throws(BytesBail) -> Bool {
            guard i < b.count, depth < Self.maxDepth else { throw BytesBail() }
            switch b[i] {
            case UInt8(ascii: "{"): return try scanObject(&i, depth: depth)
            case UInt8(ascii: "["): return try scanArray(&i, depth: depth)
            case UInt8(ascii: "\""): return try scanString(&i).canonical
            case UInt8(ascii: "t"): try literal(&i, "true"); return true
            case UInt8(ascii: "f"): try literal(&i, "false"); return true
            case UInt8(ascii: "n"): try literal(&i, "null"); return true
            default: return try scanNumber(&i)
            }
        }

        func literal(_ i: inout Int, _ word: StaticString) throws(BytesBail) {
            let n = word.utf8CodeUnitCount
            guard i + n <= b.count else { throw BytesBail() }
            for k in 0..<n where b[i + k] != word.utf8Start[k] { throw BytesBail() }
            i += n
        }

        /// A string at `i` (its opening quote). `plain`: no escapes and ASCII only (a key that sorts
        /// by its bytes). `canonical`: the token is what `jsonQuoted` writes for its value.
        func scanString(_ i: inout Int) throws(BytesBail) -> (canonical: Bool, plain: Bool) {
            i += 1
            // Most strings are plain ASCII: find the closing quote, check the bytes before it eight
            // at a time; at the first byte that needs a look, go on byte by byte.
            let base = b.baseAddress!
            if let hit = memchr(base + i, 34, b.count - i) {
                let end = UnsafeRawPointer(hit).assumingMemoryBound(to: UInt8.self) - base
                var k = i
                while k + 8 <= end {
                    let w = UInt64(littleEndian: UnsafeRawPointer(base + k).loadUnaligned(as: UInt64.self))
                    if Self.needsALook(w) { break }
                    k += 8
                }
                while k < end {
                    let c = b[k]
                    if c < 0x20 || c >= 0x80 || c == 92 { break }
                    k += 1
                }
                if k == end {
                    i = end + 1
                    return (true, true)
                }
                i = k
            }
            var canonical = true
            var plain = true
            while i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\"") {
                    i += 1
                    return (canonical, plain)
                }
                if c < 0x20 { throw BytesBail() }
                if c >= 0x80 {
                    // Kept as is by jsonQuoted when it is valid UTF-8; checked by the slow conversion.
                    canonical = false
                    plain = false
                    i += 1
                    continue
                }
                if c != UInt8(ascii: "\\") {
                    i += 1
                    continue
                }
                plain = false
                guard i + 1 < b.count else { throw BytesBail() }
                let e = b[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    break  // jsonQuoted writes these escapes
                case UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"):
                    canonical = false
                case UInt8(ascii: "u"):
                    let v = try hex4(&i)
                    if (0xD800..<0xDC00).contains(v) {
                        guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else { throw BytesBail() }
                        i += 2
                        let low = try hex4(&i)
                        guard (0xDC00..<0xE000).contains(low) else { throw BytesBail() }
                        canonical = false
                    } else if (0xDC00..<0xE000).contains(v) {
                        throw BytesBail()
                    } else if v >= 0x20 || v == 0x09 || v == 0x0A || v == 0x0D || (b[i - 1] >= 65 && b[i - 1] <= 70) {
                        // jsonQuoted writes only other control characters as \u00xx, in lowercase.
                        canonical = false
                    }
                default:
                    throw BytesBail()
                }
            }
            throw BytesBail()
        }

        /// True when one of the eight bytes is a control character, a backslash or not ASCII.
        @inline(__always) static func needsALook(_ w: UInt64) -> Bool {
            let ones: UInt64 = 0x0101_0101_0101_0101
            let high: UInt64 = 0x8080_8080_8080_8080
            let control = (w &- ones &* 0x20) & ~w & high  // some byte < 0x20
            let v = w ^ (ones &* 0x5C)
            let backslash = (v &- ones) & ~v & high  // some byte == '\\'
            return (w & high) | control | backslash != 0
        }

        func hex4(_ i: inout Int) throws(BytesBail) -> UInt32 {
            guard i + 4 <= b.count else { throw BytesBail() }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = b[i]
                let d: UInt32
                switch c {
                case 48...57: d = UInt32(c - 48)
                case 65...70: d = UInt32(c - 55)
                case 97...102: d = UInt32(c - 87)
                default: throw BytesBail()
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        /// A number (FastJSON's grammar). Canonical: an integer of at most 15 digits (exact in a
        /// Double, written back by `canonicalText` digit for digit), other than `-0`.
        func scanNumber(_ i: inout Int) throws(BytesBail) -> Bool {
            let start = i
            let negative = b[i] == UInt8(ascii: "-")
            if negative { i += 1 }
            var digits = 0
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                digits += 1
                i += 1
            }
            guard digits > 0 else { throw BytesBail() }
            let first = b[start + (negative ? 1 : 0)]
            if digits > 1, first == 48 { throw BytesBail() }
            var canonical = digits <= 15 && !(negative && first == 48)
            if i < b.count, b[i] == UInt8(ascii: ".") {
                canonical = false
                i += 1
                let f = i
                while i < b.count, b[i] >= 48, b[i] <= 57 { i += 1 }
                guard i > f else { throw BytesBail() }
            }
            if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
                canonical = false
                i += 1
                if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
                let f = i
                while i < b.count, b[i] >= 48, b[i] <= 57 { i += 1 }
                guard i > f else { throw BytesBail() }
            }
            return canonical
        }

        /// -1, 0, 1 as the key bytes of two members compare (ASCII keys: Swift's String order).
        @inline(__always) func compareKeys(_ a0: Int, _ a1: Int, _ b0: Int, _ b1: Int) -> Int {
            Self.compare(b, a0, a1, b0, b1)
        }

        @inline(__always) static func compare(_ b: UnsafeBufferPointer<UInt8>, _ a0: Int, _ a1: Int, _ b0: Int, _ b1: Int) -> Int {
            let n = min(a1 - a0, b1 - b0)
            if n > 0 {
                let c = memcmp(b.baseAddress! + a0, b.baseAddress! + b0, n)
                if c != 0 { return c < 0 ? -1 : 1 }
            }
            return (a1 - a0) == (b1 - b0) ? 0 : ((a1 - a0) < (b1 - b0) ? -1 : 1)
        }

        func scanObject(_ i: inout Int, depth: Int) throws(BytesBail) -> Bool {
            i += 1
            var canonical = !skipSpace(&i)
            if i < b.count, b[i] == UInt8(ascii: "}") {
                i += 1
                return canonical
            }
            var previous = (0, 0)
            var first = true
            while true {
                if skipSpace(&i) { canonical = false }
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw BytesBail() }
                let keyStart = i + 1
                let key = try scanString(&i)
                let keyEnd = i - 1
                if !key.plain {
                    canonical = false
                } else if canonical, !first, compareKeys(previous.0, previous.1, keyStart, keyEnd) >= 0 {
                    canonical = false
                }
                previous = (keyStart, keyEnd)
                first = false
                if skipSpace(&i) { canonical = false }
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw BytesBail() }
                i += 1
                if skipSpace(&i) { canonical = false }
                if try !scanValue(&i, depth: depth + 1) { canonical = false }
                if skipSpace(&i) { canonical = false }
                guard i < b.count else { throw BytesBail() }
                if b[i] == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                if b[i] == UInt8(ascii: "}") {
                    i += 1
                    return canonical
                }
                throw BytesBail()
            }
        }

        func scanArray(_ i: inout Int, depth: Int) throws(BytesBail) -> Bool {
            i += 1
            var canonical = !skipSpace(&i)
            if i < b.count, b[i] == UInt8(ascii: "]") {
                i += 1
                return canonical
            }
            while true {
                if skipSpace(&i) { canonical = false }
                if try !scanValue(&i, depth: depth + 1) { canonical = false }
                if skipSpace(&i) { canonical = false }
                guard i < b.count else { throw BytesBail() }
                if b[i] == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                if b[i] == UInt8(ascii: "]") {
                    i += 1
                    return canonical
                }
                throw BytesBail()
            }
        }

    }

    enum Verdict: Equatable { case bail, value(end: Int, canonical: Bool), string(end: Int, canonical: Bool, plain: Bool) }

    static func verdicts(_ bytes: [UInt8], at start: Int) -> (reference: Verdict, c: Verdict, referenceString: Verdict?, cString: Verdict?) {
        bytes.withUnsafeBufferPointer { b in
            let r = ReferenceScanner(b: b), s = ByteJSON(b: b)
            func value(_ f: (inout Int) throws(BytesBail) -> Bool) -> Verdict {
                var i = start
                do { let c = try f(&i); return .value(end: i, canonical: c) } catch { return .bail }
            }
            func string(_ f: (inout Int) throws(BytesBail) -> (canonical: Bool, plain: Bool)) -> Verdict {
                var i = start
                do { let c = try f(&i); return .string(end: i, canonical: c.canonical, plain: c.plain) } catch { return .bail }
            }
            let isString = start < b.count && b[start] == UInt8(ascii: "\"")
            return (value { (i: inout Int) throws(BytesBail) in try r.scanValue(&i, depth: 1) },
                    value { (i: inout Int) throws(BytesBail) in try s.scanValue(&i, depth: 1) },
                    isString ? string { (i: inout Int) throws(BytesBail) in try r.scanString(&i) } : nil,
                    isString ? string { (i: inout Int) throws(BytesBail) in try s.scanString(&i) } : nil)
        }
    }

    /// Random observations (the sealing tests' generator), damaged at times, and random bytes,
    /// scanned from every position: the two scanners agree everywhere.
    @Test func theCScannerGivesTheSwiftScannersVerdicts() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("JSONScanTests seed: \(seed)")
        var g = SealBytesTests.Generator(rng: SeededRNG(seed: seed))
        let alphabet = Array("{}[]\",:\\ \n\t0123456789-+.eEtrufalsnbu/ABCDEFabcdef\u{e9}".utf8) + [0x01, 0x1F, 0x7F, 0x80, 0xFF]
        var positions = 0, bails = 0, canonical = 0, strings = 0
        for n in 0..<3000 {
            var data: [UInt8]
            switch g.rng.below(10) {
            case 0:
                data = (0..<g.rng.below(40)).map { _ in g.pick(alphabet) }
            case 1:
                // Deep nesting, around the limit.
                let d = 120 + g.rng.below(16)
                data = Array((String(repeating: g.pick(["[", "{\"a\":"]), count: d) + "1").utf8)
                    + Array(repeating: UInt8(ascii: "]"), count: g.rng.below(d + 1))
            default:
                data = Array(g.data().utf8)
                for _ in 0..<g.rng.below(3) where !data.isEmpty {
                    if g.chance(30) { data = Array(data.prefix(g.rng.below(data.count))) } else if !data.isEmpty {
                        data[g.rng.below(data.count)] = g.pick(alphabet)
                    }
                }
            }
            for start in 0...data.count {
                let v = Self.verdicts(data, at: start)
                positions += 1
                #expect(v.reference == v.c, "case \(n) at \(start) (seed \(seed)): \(String(decoding: data, as: UTF8.self))")
                #expect(v.referenceString == v.cString, "case \(n) at \(start) (seed \(seed)): \(String(decoding: data, as: UTF8.self))")
                if v.reference == .bail { bails += 1 } else if case .value(_, true) = v.reference { canonical += 1 }
                if v.referenceString != nil { strings += 1 }
            }
        }
        print("JSONScanTests: \(positions) positions, \(bails) rejected, \(canonical) canonical, \(strings) strings")
        #expect(bails > 1000 && canonical > 1000 && strings > 1000)
    }

    /// Strings and numbers at the edges of the eight-byte steps, each spelling's verdict as the reference's.
    @Test func stringsAndNumbersOfEveryLength() {
        let pieces = ["a", "\\n", "\\u0041", "\\u001f", "\\u001F", "\\ud83d\\ude00", "\\ud83d", "\u{e9}", "\u{1}", "\\x", "\"", "\\"]
        for length in 0..<20 {
            for piece in pieces {
                for at in 0...length {
                    let s = String(repeating: "x", count: at) + piece + String(repeating: "y", count: length - at)
                    for text in ["\"" + s + "\"", "\"" + s, "\"" + s + "\" "] {
                        let v = Self.verdicts(Array(text.utf8), at: 0)
                        #expect(v.reference == v.c, "\(text)")
                        #expect(v.referenceString == v.cString, "\(text)")
                    }
                }
            }
            let digits = String(repeating: "1", count: length + 1)
            for text in [digits, "-" + digits, "0" + digits, "-0", digits + ".5", digits + "e3", digits + "E+", "-", "1.", digits + "x"] {
                let v = Self.verdicts(Array(text.utf8), at: 0)
                #expect(v.reference == v.c, "\(text)")
            }
        }
    }
}
