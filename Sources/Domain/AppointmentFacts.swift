import Foundation
import JSONCore

/// What the views say about one IntakeQ appointment object, independent of the roster.
/// Pure functions of the object: the same code serves the live views, rebuilds, `as-of`
/// and the derived-field diffs of `history`.
public struct AppointmentFacts: Sendable, Hashable {
    public var appointmentId: String
    public var intakeqClientId: String?
    public var additionalClientIds: [String]
    public var clientName: String?
    public var practitionerId: String?
    public var practitionerName: String?
    public var serviceName: String?
    public var status: String
    public var intakeqStatus: String?
    /// `startMillis` as the views write it (ISO 8601, UTC, clamped to years 1–9999).
    public var startAt: String? { startMillis.map(ISOTime.format(millis:)) }
    /// The end as the views write it. The times are kept as numbers and written out as text only
    /// when read: a rebuild folds about four observations of an appointment for each row it
    /// writes, and formatting three times for each of them cost ~3 % of its CPU (BENCHMARKS.md, 2026-12-07).
    public var endAt: String? { endAtMillis.map(ISOTime.format(millis:)) }
    public var startMillis: Int64?
    /// The end's milliseconds, clamped as `ISOTime.format` clamps (so equal facts are those
    /// whose texts are equal).
    private var endAtMillis: Int64?
    public var durationMinutes: Int?
    public var locationId: String?
    public var locationName: String?
    public var placeOfService: String?
    public var visitType: String
    public var meeting: MeetingLink?
    public var lastModified: String? { lastModifiedMillis.map(ISOTime.format(millis:)) }
    private var lastModifiedMillis: Int64?

    public init(object: JSONValue) throws {
        try self.init(fields: AppointmentFields(object: object))
    }

    /// The facts of the values `fields` holds: the one set of rules, whether the values were
    /// looked up in a parsed object (`init(object:)`) or scanned from its bytes
    /// (`AppointmentFields.scan`).
    public init(fields: consuming AppointmentFields) throws {
        // The texts are moved out of `fields` (`take()`), not copied: a copy retains each one,
        // and `fields`' end releases it again, for every observation a rebuild folds.
        var o = fields
        guard o.isObject, let id = o.id.take(), !id.isEmpty else {
            throw DomainError("the appointment object has no Id")
        }
        // Read before its texts are moved out below.
        meeting = MeetingLink.find(o)
        let hasMeeting = meeting != nil || o.telehealthPresent
        appointmentId = id
        intakeqClientId = o.clientId.take()
        additionalClientIds = o.additionalClientIds
        clientName = o.clientName.take()
        practitionerId = o.practitionerId.take()
        practitionerName = o.practitionerName.take()
        serviceName = o.serviceName.take()
        intakeqStatus = o.status.take()
        status = mapStatus(intakeqStatus)
        startMillis = o.startDate
        let endMillis = o.endDate
        endAtMillis = endMillis.map(ISOTime.clamp)
        if let d = o.duration {
            durationMinutes = Int(d)
        } else if let s = startMillis, let e = endMillis {
            // Overflowing times (±9e18 ms) have no duration rather than a crash.
            let (span, overflow) = e.subtractingReportingOverflow(s)
            durationMinutes = overflow ? nil : Int(span / 60_000)
        }
        locationId = o.locationId.take()
        locationName = o.locationName.take()
        placeOfService = o.placeOfService.take()
        visitType = deriveVisitType(
            placeOfService: placeOfService, hasMeeting: hasMeeting,
            locationName: locationName)
        lastModifiedMillis = o.lastModified.map(ISOTime.clamp)
    }

    /// The view fields an auditor compares between versions (`history`'s derived changes).
    public var derivedFields: [(String, JSONValue)] {
        [
            ("start_at", str(startAt)), ("end_at", str(endAt)), ("status", .string(status)),
            ("meeting_url", str(meeting?.url)), ("visit_type", .string(visitType)),
            ("location_name", str(locationName)), ("location_id", str(locationId)),
            ("practitioner_name", str(practitionerName)), ("service_name", str(serviceName)),
        ]
    }
}

private func nonNull(_ v: JSONValue) -> JSONValue? { v.isNull ? nil : v }
private func str(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }

/// IntakeQ status → view status (DESIGN.md). Anything else is `unknown`, and the sync run
/// warns about it; the raw status stays beside it in `intakeq_status`.
public func mapStatus(_ raw: String?) -> String {
    switch raw {
    case "Confirmed": return "confirmed"
    case "WaitingConfirmation": return "scheduled"
    case "Canceled", "Declined": return "cancelled"
    case "Missed": return "no_show"
    default: return "unknown"
    }
}

public func isKnownStatus(_ raw: String?) -> Bool { mapStatus(raw) != "unknown" }

/// `s.trimmingCharacters(in: .whitespaces)`, without Foundation when the ends are plainly not
/// whitespace (an ASCII character other than space and tab): then it is `s` itself.
func trimmedWhitespace(_ s: String) -> String {
    let u = s.utf8
    if let first = u.first, let last = u.last, first > 0x20, first < 0x7F, last > 0x20, last < 0x7F { return s }
    return s.trimmingCharacters(in: .whitespaces)
}

public func deriveVisitType(placeOfService: String?, hasMeeting: Bool, locationName: String?) -> String {
    switch placeOfService.map(trimmedWhitespace) {
    case "02", "10", "2": return "telehealth"
    case "11": return "office"
    case "12": return "home"
    default:
        if hasMeeting { return "telehealth" }
        if let l = locationName, !trimmedWhitespace(l).isEmpty { return "office" }
        return "unknown"
    }
}

/// The link a patient uses to join. Never `TelehealthInfo.StartUrl`: that is the
/// practitioner's host link.
public struct MeetingLink: Sendable, Hashable {
    public var url: String
    public var provider: String
    public var sourceField: String

    static let videoHosts = [
        "meet.google.com", "zoom.us", "teams.microsoft.com", "teams.live.com", "doxy.me",
        "whereby.com", "webex.com", "gotomeeting.com", "vsee.me", "intakeq.com", "practiceq.com",
    ]

    /// Each video host with a dot before it: its subdomains' suffix.
    static let videoHostSuffixes = videoHosts.map { "." + $0 }

    static func isVideoHost(_ host: String) -> Bool {
        videoHosts.contains(host) || videoHostSuffixes.contains { host.hasSuffix($0) }
    }

    public static func find(in object: JSONValue) -> MeetingLink? {
        find(AppointmentFields(object: object))
    }

    /// The rules of `find(in:)` over the values they read.
    static func find(_ o: AppointmentFields) -> MeetingLink? {
        if o.telehealthPresent {
            if let u = o.telehealthJoinUrl, let url = firstURL(in: u) {
                return MeetingLink(url: url, provider: provider(url, o.telehealthProvider), sourceField: "TelehealthInfo.JoinUrl")
            }
            if let u = o.telehealthUrl, let url = firstURL(in: u) {
                return MeetingLink(url: url, provider: provider(url, o.telehealthProvider), sourceField: "TelehealthInfo.Url")
            }
            if let inv = o.telehealthInvitation, let url = firstURL(in: inv) {
                return MeetingLink(url: url, provider: provider(url, o.telehealthProvider), sourceField: "TelehealthInfo.Invitation")
            }
        }
        if let text = o.locationName, let url = firstVideoURL(in: text) {
            return MeetingLink(url: url, provider: provider(url, nil), sourceField: "LocationName")
        }
        if let text = o.clientNote, let url = firstVideoURL(in: text) {
            return MeetingLink(url: url, provider: provider(url, nil), sourceField: "ClientNote")
        }
        for c in o.customFieldValues {
            if let url = firstVideoURL(in: c.value) {
                return MeetingLink(url: url, provider: provider(url, nil), sourceField: "CustomFields[\(c.index)].Value")
            }
        }
        return nil
    }

    static func provider(_ url: String, _ teleProvider: String?) -> String {
        let host = hostOf(url)
        if host.hasSuffix("zoom.us") { return "Zoom" }
        if host == "meet.google.com" { return "Google Meet" }
        if host.hasSuffix("intakeq.com") || host.hasSuffix("practiceq.com") { return "IntakeQ" }
        switch teleProvider {
        case "Zoom": return "Zoom"
        case "IntakeQ": return "IntakeQ"
        default: return "other"
        }
    }

    static func hostOf(_ url: String) -> String {
        // The first "://" (over the UTF-8 bytes: a String.Index of them is one of the string's).
        let bytes = url.utf8
        var i = bytes.startIndex
        var after: String.Index?
        while i != bytes.endIndex {
            if bytes[i] == UInt8(ascii: ":") {
                let j = bytes.index(after: i)
                if j != bytes.endIndex, bytes[j] == UInt8(ascii: "/") {
                    let k = bytes.index(after: j)
                    if k != bytes.endIndex, bytes[k] == UInt8(ascii: "/") {
                        after = bytes.index(after: k)
                        break
                    }
                }
            }
            i = bytes.index(after: i)
        }
        guard let after else { return "" }
        let rest = url[after...]
        let host = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" && $0 != ":" }
        return host.lowercased()
    }

    /// All http(s) URLs in free text, in order.
    static func urls(in text: String) -> [String] {
        // ASCII text (nearly all): over its bytes in place.
        var text = text
        if let ascii = text.withUTF8({ b -> [String]? in
            for c in b where c >= 0x80 { return nil }
            return asciiURLs(in: b)
        }) {
            return ascii
        }
        return unicodeURLs(in: text)
    }

    /// `urls(in:)` over Characters (any text; the ASCII fast path must agree with it).
    static func unicodeURLs(in text: String) -> [String] {
        var out: [String] = []
        var search = text[...]
        while let r = search.range(of: "http", options: .caseInsensitive) {
            let tail = search[r.lowerBound...]
            let candidate = tail.prefix { !$0.isWhitespace && $0 != "\"" && $0 != "<" && $0 != ">" }
            var url = String(candidate)
            while let last = url.last, ".,;:)]}'".contains(last) { url.removeLast() }
            let lower = url.lowercased()
            if lower.hasPrefix("https://") || lower.hasPrefix("http://"), url.count > 10 { out.append(url) }
            search = tail.dropFirst(max(1, candidate.count))
        }
        return out
    }

    /// `urls(in:)` of ASCII text, over its bytes (the same rules: from each "http", any case, up
    /// to whitespace, a quote or angle bracket; trailing punctuation dropped; kept when it starts
    /// with http:// or https://, any case, and is longer than 10 characters).
    static func asciiURLs(in b: [UInt8]) -> [String] {
        b.withUnsafeBufferPointer { asciiURLs(in: $0) }
    }

    static func asciiURLs(in b: UnsafeBufferPointer<UInt8>) -> [String] {
        var out: [String] = []
        var i = 0
        func lower(_ c: UInt8) -> UInt8 { c >= 65 && c <= 90 ? c + 32 : c }
        func stops(_ c: UInt8) -> Bool {
            c == 0x20 || (c >= 0x09 && c <= 0x0D) || c == UInt8(ascii: "\"") || c == UInt8(ascii: "<") || c == UInt8(ascii: ">")
        }
        func trailing(_ c: UInt8) -> Bool {
            switch c {
            case UInt8(ascii: "."), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: ":"), UInt8(ascii: ")"),
                UInt8(ascii: "]"), UInt8(ascii: "}"), UInt8(ascii: "'"):
                return true
            default:
                return false
            }
        }
        /// The bytes from `at` spell `word` (lowercase ASCII), any case.
        func spells(_ at: Int, _ end: Int, _ word: StaticString) -> Bool {
            let n = word.utf8CodeUnitCount
            guard end - at >= n else { return false }
            for k in 0..<n where lower(b[at + k]) != word.utf8Start[k] { return false }
            return true
        }
        while i + 4 <= b.count {
            guard lower(b[i]) == UInt8(ascii: "h"), lower(b[i + 1]) == UInt8(ascii: "t"), lower(b[i + 2]) == UInt8(ascii: "t"),
                lower(b[i + 3]) == UInt8(ascii: "p")
            else {
                i += 1
                continue
            }
            var end = i
            while end < b.count, !stops(b[end]) { end += 1 }
            let candidate = end - i
            var urlEnd = end
            while urlEnd > i, trailing(b[urlEnd - 1]) { urlEnd -= 1 }
            if spells(i, urlEnd, "https://") || spells(i, urlEnd, "http://"), urlEnd - i > 10 {
                out.append(String(decoding: UnsafeBufferPointer(rebasing: b[i..<urlEnd]), as: UTF8.self))
            }
            i += max(1, candidate)
        }
        return out
    }

    static func firstURL(in text: String) -> String? { urls(in: text).first }

    /// The video-meeting links in free text, in order.
    public static func videoURLs(in text: String) -> [String] {
        urls(in: text).filter { url in
            isVideoHost(hostOf(url))
        }
    }

    static func firstVideoURL(in text: String) -> String? {
        urls(in: text).first { url in
            isVideoHost(hostOf(url))
        }
    }
}
