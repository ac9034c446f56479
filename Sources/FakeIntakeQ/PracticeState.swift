import Foundation
import IntakeQ

/// What the fake IntakeQ serves: the practice's booking settings, its appointments and the
/// recently deleted appointments, each as the raw JSON bytes of one object.
public struct PracticeState: Sendable {
    public var settings: [UInt8]
    public var appointments: [[UInt8]]
    public var deleted: [[UInt8]]

    public init(settings: [UInt8] = Array(#"{"Locations":[],"Services":[],"Practitioners":[]}"#.utf8),
                appointments: [[UInt8]] = [], deleted: [[UInt8]] = []) {
        self.settings = settings
        self.appointments = appointments
        self.deleted = deleted
    }

    /// Reads a day file (`{"day":1,"now":"…","settings":{…},"appointments":[…],"deleted":[…]}`);
    /// each object's bytes are kept as written (minified).
    public static func decode(dayFile bytes: [UInt8]) throws -> (day: Int, now: String, state: PracticeState) {
        var day = 0
        var now = ""
        var state = PracticeState()
        for (key, value) in try splitJSONObject(bytes) {
            switch key {
            case "day": day = Int(String(decoding: value, as: UTF8.self)) ?? 0
            case "now": now = (try? JSONDecoder().decode(String.self, from: Data(value))) ?? ""
            case "settings": state.settings = value
            case "appointments": state.appointments = try splitJSONArray(value)
            case "deleted": state.deleted = try splitJSONArray(value)
            default: continue
            }
        }
        return (day, now, state)
    }
}

/// A fault the fake injects instead of (or before) its normal answer.
public enum Fault: Sendable, Hashable {
    /// Answer with this HTTP status (e.g. 429, 500, 503), optionally with `Retry-After: N`.
    case status(Int, retryAfter: Int?)
    /// 200 with an HTML body (a proxy error page) instead of JSON.
    case malformed
    /// 200 with the normal JSON body cut off partway.
    case truncated
    /// Wait this many seconds, then answer normally.
    case delay(Double)

    /// Same as `.delay(_:)`.
    public static func delay(seconds: Double) -> Fault { .delay(seconds) }
}

/// One request the fake received, for assertions.
public struct RecordedRequest: Sendable, Hashable {
    public var method: String
    /// Path below the API root, e.g. `/appointments` or `/appointments/abc`.
    public var path: String
    /// Decoded query parameters.
    public var query: [String: String]
    public var status: Int
    /// The fault applied, if any.
    public var fault: Fault?
    public var at: Date

    public var page: Int? { query["page"].flatMap { Int($0) } }
}
