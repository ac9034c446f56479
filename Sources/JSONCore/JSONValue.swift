
// The one JSON value of SyncLedger: what the fast parser returns, what content hashes are
// computed over (its canonical text), and what field-level diffs compare. No Foundation: the
// log, the ledger and the domain rules all read it, none of them pull in an HTTP stack for it.

/// A decoded JSON value. Numbers are compared by value (`150` equals `150.0`) and object key
/// order is irrelevant, so two objects that differ only in formatting are equal.
public indirect enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

extension JSONValue {
    /// Parses UTF-8 JSON bytes.
    public static func parse(bytes: some Collection<UInt8>) throws -> JSONValue {
        try FastJSON.parse(bytes)
    }

    /// Parses UTF-8 JSON bytes.
    public static func parse(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        try FastJSON.parse(bytes)
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? {
        switch self {
        case .string(let s): return s
        case .number: return canonicalText
        case .bool(let b): return b ? "true" : "false"
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .number(let d): return d
        case .string(let s): return Double(s)
        default: return nil
        }
    }

    public var int64Value: Int64? {
        guard let d = doubleValue, d.isFinite, abs(d) < 9.0e18 else { return nil }
        return Int64(d)
    }

    public var isNull: Bool { if case .null = self { return true }; return false }

    /// Canonical text: object keys sorted, no whitespace, integral numbers without a fraction.
    public var canonicalText: String {
        var out = ""
        writeCanonical(into: &out)
        return out
    }

    func writeCanonical(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let d):
            if d.rounded() == d, abs(d) < 9.007_199_254_740_992e15 {
                out += String(Int64(d))
            } else {
                out += "\(d)"
            }
        case .string(let s): out += jsonQuoted(s)
        case .array(let a):
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                v.writeCanonical(into: &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (i, k) in o.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                out += jsonQuoted(k)
                out += ":"
                o[k]!.writeCanonical(into: &out)
            }
            out += "}"
        }
    }
}

/// Quotes a string as a JSON string literal.
public func jsonQuoted(_ s: String) -> String {
    // Most strings (ids, types, times, streams) need no escaping: copy them whole.
    if !s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
        return "\"" + s + "\""
    }
    var out = "\""
    out.reserveCapacity(s.utf8.count + 2)
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = Array("0123456789abcdef".utf8)
                let v = Int(scalar.value)
                out += "\\u00"
                out.unicodeScalars.append(Unicode.Scalar(hex[v >> 4]))
                out.unicodeScalars.append(Unicode.Scalar(hex[v & 0xF]))
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    out += "\""
    return out
}

/// One field that differs between two versions of an object.
public struct FieldChange: Sendable, Hashable {
    public var field: String
    public var from: JSONValue
    public var to: JSONValue
    public init(field: String, from: JSONValue, to: JSONValue) {
        self.field = field
        self.from = from
        self.to = to
    }
}

/// Field-level differences between two JSON objects. Nested objects are compared key by key
/// with dotted paths (`TelehealthInfo.JoinUrl`); arrays are compared whole. An absent key and
/// a `null` are the same (list rows omit keys that the single GET returns as null).
public func diffObjects(_ old: JSONValue, _ new: JSONValue, prefix: String = "") -> [FieldChange] {
    guard case .object(let a) = old, case .object(let b) = new else {
        return old == new ? [] : [FieldChange(field: prefix.isEmpty ? "." : prefix, from: old, to: new)]
    }
    var changes: [FieldChange] = []
    for key in Set(a.keys).union(b.keys).sorted() {
        let x = a[key] ?? .null
        let y = b[key] ?? .null
        if x == y { continue }
        let path = prefix.isEmpty ? key : prefix + "." + key
        if case .object = x, case .object = y {
            changes += diffObjects(x, y, prefix: path)
        } else if case .object = y, x.isNull {
            changes += diffObjects(.object([:]), y, prefix: path)
        } else if case .object = x, y.isNull {
            changes += diffObjects(x, .object([:]), prefix: path)
        } else {
            changes.append(FieldChange(field: path, from: x, to: y))
        }
    }
    return changes
}

/// Top-level keys whose values differ between two JSON objects given as bytes (including keys
/// present in only one of them), sorted. An absent key and a `null` count as equal.
public func changedKeys(_ old: [UInt8], _ new: [UInt8]) throws -> [String] {
    guard case .object(let a) = try FastJSON.parse(old), case .object(let b) = try FastJSON.parse(new) else {
        throw FastJSON.ParseError(offset: 0, what: "expected two JSON objects to compare")
    }
    var out: [String] = []
    for key in Set(a.keys).union(b.keys) where (a[key] ?? .null) != (b[key] ?? .null) { out.append(key) }
    return out.sorted()
}
