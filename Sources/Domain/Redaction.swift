import Foundation
import JSONCore

/// Minimum necessary (DESIGN.md, "Privacy"): what of an in-scope IntakeQ appointment object is
/// never recorded. A pure function of the object and the IntakeQ client ids of the roster in
/// force, applied by the sync before anything is hashed, diffed or appended, and by the reader to
/// events recorded before it existed (`appointment.*` v1), so old and new events read alike.
///
/// The list is versioned: a change to it is a new `version`, documented in docs/FORMAT.md.
public enum Redaction {
    /// The version of the redaction list below.
    /// 2: a primary with no `ClientId` counts as outside the roster; `CreatedBy` naming the
    /// primary is matched without regard to case and surrounding spaces.
    /// 3: an outside primary's `TelehealthInfo.Invitation` (free text addressed to them, "Join
    /// Quintessa Outsider …", hostile test) keeps only the links in it.
    /// 4: of that invitation only its first link (the meeting link) is kept, and the links kept
    /// from it and from the note lose the parts that can name a person (`personalURL`): a link
    /// kept whole carried "?name=Quintessa%20Outsider&email=…" into the log (cold review).
    /// 5: the same for every object, a roster primary's too: their invitation ("Hi Wren Wojcik
    /// (wren@…), join …", or naming a stranger attending) and a join link's "uname=Wren%20Wojcik"
    /// were clear text outside every sealed part, so `forget` left them readable (hostile test).
    /// `CreatedBy` of a booking by a client who is not the primary goes (a stranger in the group
    /// booked it), and names are compared with any run of spaces as one space; an outside
    /// primary's `CreatedBy` goes when it shares a word of their name ("X. Stranger").
    public static let version = 5

    /// Query parameters of a kept link that name or reach a person (compared without regard to
    /// case, `-` and `_`); any parameter whose value holds an "@" (an address) goes too.
    public static let personalQueryParameters: Set<String> = [
        "name", "uname", "username", "user", "fullname", "displayname", "firstname", "lastname", "fname", "lname",
        "email", "mail", "emailaddress", "phone", "tel", "mobile", "dob", "birthdate", "dateofbirth",
        "client", "clientname", "patient", "patientname", "tk",
        "participant", "participantname", "attendee", "attendeename", "guest", "guestname", "givenname", "surname",
        "familyname", "nickname", "contact", "who",
    ]

    /// `url` without what in it can name a person: its user and password (`user:pass@`), and
    /// the query parameters `personalQueryParameters` names or whose value holds an address, in
    /// its query and in its fragment ("#/join?name=…"; a fragment that is a route, "#/room/77",
    /// is kept). HTML's `&amp;` between parameters counts as `&`. The scheme, host, path and
    /// other parameters (a meeting's `pwd`) are kept as written.
    public static func personalURL(_ url: String, naming people: [String] = []) -> String {
        var rest = Substring(linkText(url))
        var fragment: Substring?
        if let hash = rest.firstIndex(of: "#") {
            fragment = rest[rest.index(after: hash)...]
            rest = rest[..<hash]
        }
        var query: Substring?
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var out = String(rest)
        if let scheme = out.range(of: "://") {
            // A backslash ends the host as a slash does (as browsers read it): "zoom.us\@evil/…"
            // is zoom.us, not "evil" once "zoom.us\@" is taken for a user (hostile test).
            let authorityEnd = out[scheme.upperBound...].firstIndex { $0 == "/" || $0 == "\\" } ?? out.endIndex
            if let at = out[scheme.upperBound..<authorityEnd].lastIndex(of: "@") {
                out.removeSubrange(scheme.upperBound...at)
            }
        }
        if let query {
            let kept = keptParameters(query, people)
            if !kept.isEmpty { out += "?" + kept }
        }
        if let fragment {
            // A route with parameters ("/join?name=…"), parameters alone ("name=…&room=7"), or
            // a route or anchor (kept).
            if let mark = fragment.firstIndex(of: "?") {
                let kept = keptParameters(fragment[fragment.index(after: mark)...], people)
                // Nothing left of "#?name=…": no "#" either (the same link when cleaned again).
                if mark != fragment.startIndex || !kept.isEmpty { out += "#" + fragment[..<mark] + (kept.isEmpty ? "" : "?" + kept) }
            } else if fragment.contains("=") {
                let kept = keptParameters(fragment, people)
                if !kept.isEmpty { out += "#" + kept }
            } else if !fragment.isEmpty {
                out += "#" + fragment
            }
        }
        // As links are read from text (`MeetingLink.urls`): the same link when read again.
        while let last = out.last, ".,;:)]}'".contains(last) { out.removeLast() }
        return out
    }

    /// The link as a browser would take it from HTML or text: HTML's `&amp;`, `&#38;` and
    /// `&#x26;` (again and again: "&amp;amp;") read as `&`, and cut at the first space of any
    /// kind, an HTML no-break space (`&nbsp;`, `&#160;`) or an invisible character (a zero-width
    /// space): what follows is not the link (hostile test: "…&#38;uname=NAME" was split at its
    /// "#", and "…?pwd=k&nbsp;Drew&nbsp;Underwood" kept the name).
    static func linkText(_ url: String) -> String {
        var text = url
        while true {
            var next = text
            for entity in ["&amp;", "&#38;", "&#x26;", "&#X26;", "&AMP;"] { next = next.replacingOccurrences(of: entity, with: "&") }
            if next == text { break }
            text = next
        }
        for space in ["&nbsp;", "&#160;", "&#xa0;", "&#xA0;", "&NBSP;"] {
            if let r = text.range(of: space) { text = String(text[..<r.lowerBound]) }
        }
        if let cut = text.firstIndex(where: { c in c.isWhitespace || c.unicodeScalars.contains { $0.properties.generalCategory == .format } }) {
            text = String(text[..<cut])
        }
        return text
    }

    /// The parameters of `text` ("a=1&b=2", or ";" between them) that name no person, joined
    /// by "&": not named as personal, no address in the value, and no word of `people` (the
    /// names and addresses of the clients the object names, lower-cased) in it as a whole word
    /// ("x=Wren%20Wojcik"; "pwd=annual" is kept for Ann).
    private static func keptParameters(_ text: Substring, _ people: [String]) -> String {
        let pairs = text.split(omittingEmptySubsequences: true) { $0 == "&" || $0 == ";" }
        return pairs.filter { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = decoded(parts[0]).lowercased().filter { $0 != "-" && $0 != "_" && $0 != "." }
            let value = parts.count > 1 ? decoded(parts[1]) : ""
            let lower = value.lowercased()
            return !personalQueryParameters.contains(key) && !value.contains("@") && !value.contains("＠") && !value.contains("﹫")
                && !people.contains { $0.contains("@") ? lower.contains($0) : PersonalText.containsWord(lower, $0) }
        }.joined(separator: "&")
    }

    /// Percent-decoded ("+" as a space) until nothing more decodes ("%2540" is "@"), or as
    /// written where it does not decode.
    private static func decoded(_ text: Substring) -> String {
        var value = text.replacingOccurrences(of: "+", with: " ")
        for _ in 0..<4 {
            guard let next = value.removingPercentEncoding, next != value else { break }
            value = next
        }
        return value
    }

    /// Credentials: removed from every object, whoever it belongs to. `TelehealthInfo.StartUrl`
    /// starts the meeting as its host; the others are the same power under other names.
    public static let credentialFields: [(parent: String, field: String)] = [
        ("TelehealthInfo", "StartUrl"),
        ("TelehealthInfo", "HostUrl"),
        ("TelehealthInfo", "HostKey"),
        ("TelehealthInfo", "HostPassword"),
        ("TelehealthInfo", "ZakToken"),
    ]

    /// When the primary client (`ClientId`) is not in the roster (the appointment is in scope
    /// through an additional client): set to null. Personal data of the primary and free text
    /// written by or about them.
    public static let outsiderPrimaryFields = [
        "ClientId", "ClientName", "ClientEmail", "ClientPhone", "ClientDateOfBirth", "ClientNote",
        "ExternalClientId", "IntakeId",
    ]

    /// The members of `TelehealthInfo` IntakeQ documents, kept by `cleanedTelehealth`; the
    /// credentials among them go later (`credentialFields`).
    public static let telehealthMembers = Set(["Id", "Provider", "InvitationCode", "JoinUrl", "Url", "Invitation"]
        + credentialFields.filter { $0.parent == "TelehealthInfo" }.map(\.field))

    /// `TelehealthInfo` with its `Invitation` cut to its first link, whatever its host (null
    /// when it has none): the meeting link is the invitation's first URL (`MeetingLink.find`);
    /// the other links (an app's download page, a dial-in list) are not needed, and a URL is
    /// not the free text. That link and the `JoinUrl` and `Url` lose what can name a person
    /// (`personalURL`). Members IntakeQ does not document ("Topic": "Session with …"), and a
    /// link or invitation that is not text (a list, an object), go; so do lists and objects in
    /// the other members (hostile test: each was kept as received). Applied to every object by
    /// `apply`, and by readers to the clear part of an observation recorded before version 5
    /// that names a forgotten patient.
    public static func cleanedTelehealth(_ telehealth: [String: JSONValue], naming people: [String] = []) -> [String: JSONValue] {
        var t = telehealth.filter { telehealthMembers.contains($0.key) }
        for (key, value) in t {
            switch value {
            case .array, .object: t[key] = .null
            default: break
            }
        }
        for field in ["JoinUrl", "Url", "Invitation"] {
            if case .string(let text)? = t[field] {
                let kept = firstLink(text, people) ?? .null
                if kept != .string(text) { t[field] = kept }
            }
        }
        return t
    }

    /// `TelehealthInfo` as `apply` records it: an object cleaned (`cleanedTelehealth`); text
    /// (not what IntakeQ sends) as its first link, cleaned; anything else null.
    public static func cleanedTelehealthValue(_ value: JSONValue, naming people: [String] = []) -> JSONValue {
        switch value {
        case .object(let t): return .object(cleanedTelehealth(t, naming: people))
        case .string(let text): return firstLink(text, people) ?? .null
        default: return .null
        }
    }

    /// The first link of `text`, cleaned (`personalURL`); nil when it holds none. Text with no
    /// space in it that names a scheme or a path ("zoom.us/j/1?uname=…": no scheme, so not found
    /// as a link, hostile test) is taken as the link itself, so that it is cleaned too.
    static func firstLink(_ text: String, _ people: [String] = []) -> JSONValue? {
        if let link = MeetingLink.urls(in: text).first { return .string(personalURL(link, naming: people)) }
        let lone = linkText(text.trimmingCharacters(in: .whitespaces))
        guard !lone.isEmpty, lone.contains("/") || lone.contains("?") else { return nil }
        return .string(personalURL(lone, naming: people))
    }

    /// The words (three letters or more) of the names, and the addresses, of the clients `o`
    /// names (primary and additional), lower-cased: no parameter of a kept link may hold one.
    static func people(in o: [String: JSONValue]) -> [String] {
        var entries: [[String: JSONValue]] = [o]
        if case .array(let extra)? = o["AdditionalClients"] {
            for case .object(let e) in extra { entries.append(e) }
        }
        var out: Set<String> = []
        for e in entries {
            if let name = e["ClientName"]?.stringValue {
                for word in nameWords(name) where word.count >= 3 { out.insert(word) }
            }
            if let email = e["ClientEmail"]?.stringValue?.trimmingCharacters(in: .whitespaces).lowercased(), email.count >= 3 {
                out.insert(email)
            }
        }
        return out.sorted()
    }

    /// The result of redacting one object.
    public struct Result: Sendable {
        /// The object to record.
        public var object: JSONValue
        /// False when nothing was removed (the bytes as received can be recorded unchanged).
        public var changed: Bool
    }

    /// Redacts an appointment object for a roster whose IntakeQ client ids are `rosterClients`:
    /// - every `AdditionalClients` entry whose `ClientId` is not in the roster is removed;
    /// - when `ClientId` is not in the roster (or missing or null), `outsiderPrimaryFields` become
    ///   null, and so does `CreatedBy` when it is a booking by a client or shares a word with
    ///   that client's name (without regard to case); video-meeting links in the removed
    ///   `ClientNote` are kept (the roster patients join by them), without what can name a
    ///   person (`personalURL`), the rest of the note is not;
    /// - when `ClientId` is in the roster and `BookedByClient` is true, `CreatedBy` becomes null
    ///   unless it is the primary's name (another client of the group booked it);
    /// - in every object, `TelehealthInfo` is cleaned (`cleanedTelehealth`: the invitation cut to
    ///   its first link, the links without what can name a person);
    /// - the credential fields are removed.
    /// Objects that are not JSON objects are returned as they are.
    public static func apply(_ object: JSONValue, rosterClients: Set<String>) -> Result {
        guard case .object(var o) = object else { return Result(object: object, changed: false) }
        var changed = false
        // Before anything is removed: whoever the object names, roster or not.
        let named = people(in: o)
        if case .array(let extra)? = o["AdditionalClients"] {
            let kept = extra.filter { entry in
                guard let id = entry["ClientId"].flatMap(nonNull)?.stringValue else { return false }
                return rosterClients.contains(id)
            }
            if kept.count != extra.count {
                o["AdditionalClients"] = .array(kept)
                changed = true
            }
        }
        // A primary with no ClientId (missing or null) cannot be a roster patient: the roster
        // is matched by client id only.
        let primary = o["ClientId"].flatMap(nonNull)?.stringValue
        if primary.map({ !rosterClients.contains($0) }) ?? true {
            let name = o["ClientName"]?.stringValue
            let note = o["ClientNote"]?.stringValue
            for key in outsiderPrimaryFields where o[key] != nil && o[key] != .null {
                o[key] = .null
                changed = true
            }
            if let note {
                let links = MeetingLink.videoURLs(in: note).map { personalURL($0, naming: named) }
                if !links.isEmpty { o["ClientNote"] = .string(links.joined(separator: " ")) }
            }
            if let by = o["CreatedBy"]?.stringValue,
                (o["BookedByClient"] == .bool(true)) || (name.map { sharesAWord($0, by) } ?? false)
            {
                o["CreatedBy"] = .null
                changed = true
            }
        } else if o["BookedByClient"] == .bool(true), let by = o["CreatedBy"]?.stringValue,
            !(o["ClientName"]?.stringValue.map { sameName($0, by) } ?? false)
        {
            // Booked by a client who is not the roster primary: someone else in the group, who
            // may be outside the roster.
            o["CreatedBy"] = .null
            changed = true
        }
        // Every object: the invitation is free text addressed to the primary, naming them or
        // anyone attending, and join links may carry the primary's name; none of it is sealed.
        if let telehealth = o["TelehealthInfo"] {
            let cleaned = cleanedTelehealthValue(telehealth, naming: named)
            if cleaned != telehealth {
                o["TelehealthInfo"] = cleaned
                changed = true
            }
        }
        for (parent, field) in credentialFields {
            if case .object(var p)? = o[parent], p[field] != nil {
                p[field] = nil
                o[parent] = .object(p)
                changed = true
            }
        }
        // A primary's note that was only its meeting links is set to the same links again.
        let result = JSONValue.object(o)
        return Result(object: result, changed: changed && result != object)
    }
}

private func nonNull(_ v: JSONValue) -> JSONValue? { v.isNull ? nil : v }

/// The same name, but for case and spaces ("dakota  brennan " is "Dakota Brennan"; any run of
/// white space, a no-break space included, counts as one space).
private func sameName(_ a: String, _ b: String) -> Bool {
    let x = nameWords(a)
    return !x.isEmpty && x == nameWords(b)
}

/// True when the two names have a word in common, without regard to case ("X. Stranger" and
/// "Xavier Stranger", "Stranger, Xavier"); words of one letter do not count.
private func sharesAWord(_ a: String, _ b: String) -> Bool {
    let x = Set(nameWords(a).filter { $0.count > 1 })
    return nameWords(b).contains { x.contains($0) }
}

/// The words of a name, lower-cased: runs of letters and digits (spaces of any kind and
/// punctuation between them).
private func nameWords(_ name: String) -> [String] {
    name.lowercased().split { !($0.isLetter || $0.isNumber) }.map(String.init)
}
