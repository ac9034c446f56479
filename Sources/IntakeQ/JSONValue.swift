import Foundation

/// A decoded JSON value, used to compare two appointment objects field by field
/// (numbers by value, so `150` equals `150.0`; object key order is irrelevant).
public indirect enum JSONValue: Sendable, Hashable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// Parses JSON bytes.
    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
        } catch {
            throw IntakeQError.from(decoding: error)
        }
    }
}

/// Top-level keys whose values differ between two JSON objects (including keys present in
/// only one of them), sorted. A key that is absent and a key that is `null` count as equal.
public func changedKeys(_ old: [UInt8], _ new: [UInt8]) throws -> [String] {
    guard case .object(let a) = try JSONValue.parse(old), case .object(let b) = try JSONValue.parse(new) else {
        throw IntakeQError.decode("expected two JSON objects to compare")
    }
    var out: [String] = []
    for key in Set(a.keys).union(b.keys) {
        if (a[key] ?? .null) != (b[key] ?? .null) { out.append(key) }
    }
    return out.sorted()
}
