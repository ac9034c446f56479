import Foundation
import JSONCore

/// Byte-level JSON helpers. They never re-encode: key order, number text and string escapes
/// stay exactly as received.

/// Removes whitespace outside strings. Input is assumed to be JSON; bytes inside strings
/// (including escapes and non-ASCII UTF-8) are copied unchanged.
public func minifyJSON(_ bytes: some Collection<UInt8>) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var inString = false
    var escaped = false
    for b in bytes {
        if inString {
            out.append(b)
            if escaped {
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "\"") {
                inString = false
            }
        } else {
            switch b {
            case 0x20, 0x09, 0x0A, 0x0D: continue
            case UInt8(ascii: "\""):
                inString = true
                out.append(b)
            default: out.append(b)
            }
        }
    }
    return out
}

/// Splits a JSON array body into its elements' raw bytes, each minified.
///
/// The scanner checks the structure (brackets balance, strings close, commas between
/// elements, nothing after the closing `]`) but not the grammar inside scalars; the decoder
/// does that per element. Errors are `IntakeQError` with code `.decode` and the byte offset.
public func splitJSONArray(_ body: [UInt8]) throws -> [[UInt8]] {
    var scanner = ArrayScanner(bytes: body)
    return try scanner.split()
}

private struct ArrayScanner {
    let bytes: [UInt8]
    var i = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    static let maxDepth = 512

    mutating func skipWhitespace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D {
            i += 1
        }
    }

    func describe(_ at: Int) -> String {
        guard at < bytes.count else { return "end of body" }
        let b = bytes[at]
        if b >= 0x20, b < 0x7F { return "'\(Character(UnicodeScalar(b)))'" }
        return "byte 0x" + String(b, radix: 16)
    }

    mutating func split() throws -> [[UInt8]] {
        // A UTF-8 byte order mark is tolerated.
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { i = 3 }
        skipWhitespace()
        guard i < bytes.count else {
            throw IntakeQError.decode("the body is empty, expected a JSON array", offset: i)
        }
        guard bytes[i] == UInt8(ascii: "[") else {
            let what = bytes[i] == UInt8(ascii: "<") ? " (looks like HTML)" : ""
            throw IntakeQError.decode("expected a JSON array '[' but found \(describe(i))\(what)", offset: i)
        }
        i += 1
        var elements: [[UInt8]] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
            i += 1
            try expectEnd()
            return elements
        }
        while true {
            skipWhitespace()
            let start = i
            try scanValue(element: elements.count)
            elements.append(minifyJSON(bytes[start..<i]))
            skipWhitespace()
            guard i < bytes.count else {
                throw IntakeQError.decode(
                    "the body ends after element \(elements.count - 1) without closing the array (truncated?)",
                    offset: i)
            }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if bytes[i] == UInt8(ascii: "]") {
                i += 1
                try expectEnd()
                return elements
            }
            throw IntakeQError.decode("expected ',' or ']' after element \(elements.count - 1) but found \(describe(i))", offset: i)
        }
    }

    mutating func expectEnd() throws {
        skipWhitespace()
        if i != bytes.count {
            throw IntakeQError.decode("unexpected \(describe(i)) after the end of the array", offset: i)
        }
    }

    /// Scans one value starting at `i` (not whitespace) and leaves `i` just after it.
    mutating func scanValue(element: Int) throws {
        guard i < bytes.count else {
            throw IntakeQError.decode("the body ends where element \(element) should start (truncated?)", offset: i)
        }
        let start = i
        var stack: [UInt8] = []
        repeat {
            guard i < bytes.count else {
                throw IntakeQError.decode(
                    "the body ends inside element \(element), which starts at byte \(start) (truncated?)", offset: i)
            }
            let b = bytes[i]
            switch b {
            case UInt8(ascii: "\""):
                try scanString(element: element)
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                guard stack.count < Self.maxDepth else {
                    throw IntakeQError.decode("element \(element) nests deeper than \(Self.maxDepth) levels", offset: i)
                }
                stack.append(b == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]"))
                i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                guard let want = stack.last, want == b else {
                    throw IntakeQError.decode("unbalanced \(describe(i)) in element \(element)", offset: i)
                }
                stack.removeLast()
                i += 1
            default:
                if stack.isEmpty {
                    // A scalar element: read up to the next delimiter.
                    while i < bytes.count, !Self.isDelimiter(bytes[i]) { i += 1 }
                    if i == start {
                        throw IntakeQError.decode("expected a value for element \(element) but found \(describe(i))", offset: i)
                    }
                } else {
                    i += 1
                }
            }
        } while !stack.isEmpty
    }

    static func isDelimiter(_ b: UInt8) -> Bool {
        b == UInt8(ascii: ",") || b == UInt8(ascii: "]") || b == UInt8(ascii: "}") || b == 0x20 || b == 0x09
            || b == 0x0A || b == 0x0D
    }

    /// At an opening quote; leaves `i` after the closing quote.
    mutating func scanString(element: Int) throws {
        let open = i
        i += 1
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\\") {
                i += 2
                continue
            }
            if b == UInt8(ascii: "\"") {
                i += 1
                return
            }
            if b < 0x20 {
                throw IntakeQError.decode("control byte 0x\(String(b, radix: 16)) inside a string in element \(element)", offset: i)
            }
            i += 1
        }
        throw IntakeQError.decode(
            "the body ends inside a string (opened at byte \(open)) in element \(element) (truncated?)",
            offset: min(i, bytes.count))
    }
}

/// Checks that `body` holds exactly one JSON value (structure only, as `splitJSONArray`)
/// and returns it minified. Errors carry the byte offset.
public func minifiedJSONValue(_ body: [UInt8]) throws -> [UInt8] {
    var scanner = ArrayScanner(bytes: body)
    return try scanner.single()
}

extension ArrayScanner {
    fileprivate mutating func single() throws -> [UInt8] {
        skipWhitespace()
        guard i < bytes.count else { throw IntakeQError.decode("the body is empty, expected JSON", offset: 0) }
        if bytes[i] == UInt8(ascii: "<") {
            throw IntakeQError.decode("expected JSON but the body looks like HTML", offset: i)
        }
        let start = i
        try scanValue(element: 0)
        let end = i
        try expectEnd()
        return minifyJSON(bytes[start..<end])
    }
}

/// Splits a JSON object into its top-level members in order: each key (unescaped) with its
/// value's raw bytes, minified. Errors carry the byte offset.
public func splitJSONObject(_ body: [UInt8]) throws -> [(key: String, value: [UInt8])] {
    var scanner = ArrayScanner(bytes: body)
    return try scanner.members()
}

extension ArrayScanner {
    fileprivate mutating func members() throws -> [(key: String, value: [UInt8])] {
        skipWhitespace()
        guard i < bytes.count, bytes[i] == UInt8(ascii: "{") else {
            throw IntakeQError.decode("expected a JSON object '{' but found \(describe(i))", offset: i)
        }
        i += 1
        var out: [(key: String, value: [UInt8])] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
            try expectEnd()
            return out
        }
        while true {
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else {
                throw IntakeQError.decode("expected a key string but found \(describe(i))", offset: i)
            }
            let keyStart = i
            try scanString(element: out.count)
            let keyBytes = Array(bytes[keyStart..<i])
            guard let key = try? JSONDecoder().decode(String.self, from: Data(keyBytes)) else {
                throw IntakeQError.decode("invalid key string", offset: keyStart)
            }
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else {
                throw IntakeQError.decode("expected ':' after key \"\(key)\" but found \(describe(i))", offset: i)
            }
            i += 1
            skipWhitespace()
            let start = i
            try scanValue(element: out.count)
            out.append((key, minifyJSON(bytes[start..<i])))
            skipWhitespace()
            guard i < bytes.count else {
                throw IntakeQError.decode("the body ends before the object closes (truncated?)", offset: i)
            }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if bytes[i] == UInt8(ascii: "}") {
                i += 1
                try expectEnd()
                return out
            }
            throw IntakeQError.decode("expected ',' or '}' after \"\(key)\" but found \(describe(i))", offset: i)
        }
    }
}
