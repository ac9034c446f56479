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
    public static let version = 3

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
    ///   null, and so does `CreatedBy` when it names that client (a booking by the client
    ///   themselves; the name compared without regard to case and surrounding spaces);
    ///   video-meeting links in the removed `ClientNote` are kept (the roster patients join by
    ///   them), the rest of the note is not, and `TelehealthInfo.Invitation` (free text
    ///   addressed to that client) is cut to the links in it;
    /// - the credential fields are removed.
    /// Objects that are not JSON objects are returned as they are.
    public static func apply(_ object: JSONValue, rosterClients: Set<String>) -> Result {
        guard case .object(var o) = object else { return Result(object: object, changed: false) }
        var changed = false
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
                let links = MeetingLink.videoURLs(in: note)
                if !links.isEmpty { o["ClientNote"] = .string(links.joined(separator: " ")) }
            }
            if case .object(var telehealth)? = o["TelehealthInfo"], case .string(let invitation)? = telehealth["Invitation"] {
                // Every link, not only known video hosts': the meeting link is the invitation's
                // first URL whatever its host (`MeetingLink.find`), and a URL is not the free text.
                let links = MeetingLink.urls(in: invitation)
                let kept: JSONValue = links.isEmpty ? .null : .string(links.joined(separator: " "))
                if kept != .string(invitation) {
                    telehealth["Invitation"] = kept
                    o["TelehealthInfo"] = .object(telehealth)
                    changed = true
                }
            }
            if let by = o["CreatedBy"]?.stringValue,
                (o["BookedByClient"] == .bool(true)) || (name.map { sameName($0, by) } ?? false)
            {
                o["CreatedBy"] = .null
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

/// The same name, but for case and surrounding spaces ("dakota brennan " is "Dakota Brennan").
private func sameName(_ a: String, _ b: String) -> Bool {
    let x = a.trimmingCharacters(in: .whitespacesAndNewlines)
    return !x.isEmpty && x.lowercased() == b.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
}
