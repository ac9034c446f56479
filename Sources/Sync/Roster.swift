import Domain
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections

/// The scope of a sync: partner organizations, their patients with IntakeQ client ids, and
/// the practitioner → provider mapping (DESIGN.md, "Sync semantics").
public struct Roster: Sendable, Hashable {
    public var organizations: [RosterObserved.Organization]
    public var practitioners: [RosterObserved.Practitioner]
    /// The practice's IANA time zone (`"timezone"`), for local days and times; validated on load.
    public var timezone: String?

    public init(organizations: [RosterObserved.Organization], practitioners: [RosterObserved.Practitioner],
                timezone: String? = nil) {
        self.organizations = organizations
        self.practitioners = practitioners
        self.timezone = timezone
    }

    /// The largest roster file read (a roster of 10,000 patients is ~2 MB).
    public static let maxBytes = 64 << 20

    /// Loads a roster file; every error names the file and, for bad content, the JSON path.
    public static func load(path: String) throws -> Roster {
        let data: [UInt8]
        switch readInputFile(path, limit: maxBytes) {
        case .success(let bytes): data = bytes
        case .failure(let why): throw SyncError("roster \(path) \(why)")
        }
        let value: JSONValue
        // A byte-order mark, which Windows editors put before UTF-8 text, is not part of the
        // JSON (RFC 8259 lets a parser ignore it): it was refused as "unexpected character" at
        // byte 0, which did not say what to change.
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        do { value = try FastJSON.parseStrictly(data.starts(with: bom) ? Array(data.dropFirst(bom.count)) : data) } catch {
            throw SyncError("roster \(path) is not valid JSON: \(error)")
        }
        return try parse(value, file: path)
    }

    static func parse(_ v: JSONValue, file: String) throws -> Roster {
        func fail(_ path: String, _ what: String) -> SyncError { SyncError("roster \(file): \(path) \(what)") }
        // A name or email that is there must be text: `"email": 12` was dropped without a word,
        // and with it the checks that keep a patient's email out of what is recorded in the clear.
        func optionalText(_ object: JSONValue, _ key: String, _ path: String) throws -> String? {
            guard let value = object[key], !value.isNull else { return nil }
            guard case .string(let text) = value else {
                // The kind, not the value: a name or an email is personal data.
                let kind = switch value {
                case .number: "a number"
                case .bool: "true or false"
                case .array: "a list"
                default: "an object"
                }
                throw fail(path + "." + key, "must be text (in quotes), not \(kind)")
            }
            return text
        }
        guard case .object = v else { throw fail("$", "must be an object with \"organizations\"") }
        guard case .array(let orgs)? = v["organizations"] else { throw fail("$.organizations", "must be a list") }
        var organizations: [RosterObserved.Organization] = []
        var seenPatients = Set<String>()
        var clientOwner: [String: String] = [:]
        var seenOrganizations: [String: Int] = [:]
        for (i, org) in orgs.enumerated() {
            let p = "$.organizations[\(i)]"
            guard case .object = org else { throw fail(p, "must be an object") }
            guard let id = org["id"]?.stringValue, !id.isEmpty else { throw fail(p + ".id", "is missing or empty") }
            // Two entries with one id would file both organizations' appointments, and show both
            // organizations' patients to a reader of that one organization, under one id.
            if let first = seenOrganizations.updateValue(i, forKey: id) {
                throw fail(p + ".id", "repeats organization id \(id) (already $.organizations[\(first)]); each organization needs its own id")
            }
            guard case .array(let pats)? = org["patients"] ?? .array([]) else { throw fail(p + ".patients", "must be a list") }
            var patients: [RosterObserved.Patient] = []
            for (j, pat) in pats.enumerated() {
                let pp = "\(p).patients[\(j)]"
                guard case .object = pat else { throw fail(pp, "must be an object") }
                guard let pid = pat["id"]?.stringValue, !pid.isEmpty else { throw fail(pp + ".id", "is missing or empty") }
                guard let cid = pat["intakeq_client_id"], !cid.isNull else {
                    throw fail(pp + ".intakeq_client_id", "is missing (a number or a string)")
                }
                guard let client = Self.clientId(cid) else {
                    throw fail(pp + ".intakeq_client_id", "must be a positive whole number (like 4101 or \"4101\"), not \(cid.canonicalText)")
                }
                guard seenPatients.insert(pid).inserted else { throw fail(pp + ".id", "repeats patient id \(pid)") }
                // Two patients with one IntakeQ client would file one person's appointments
                // under the other: refuse, naming the patients by id only.
                if let other = clientOwner[client] {
                    throw fail(pp + ".intakeq_client_id", "repeats IntakeQ client \(client), already given to patient \(other); each patient needs their own")
                }
                clientOwner[client] = pid
                patients.append(.init(id: pid, name: try optionalText(pat, "name", pp), email: try optionalText(pat, "email", pp),
                                      intakeqClientId: client))
            }
            organizations.append(.init(id: id, name: try optionalText(org, "name", p), patients: patients))
        }
        var practitioners: [RosterObserved.Practitioner] = []
        if let list = v["practitioners"], !list.isNull {
            guard case .array(let prs) = list else { throw fail("$.practitioners", "must be a list") }
            var mapped: [String: Int] = [:]
            for (i, pr) in prs.enumerated() {
                guard let iq = pr["intakeq_id"]?.stringValue, let prov = pr["provider_id"]?.stringValue else {
                    throw fail("$.practitioners[\(i)]", "needs intakeq_id and provider_id")
                }
                if let first = mapped[iq] {
                    throw fail("$.practitioners[\(i)].intakeq_id", "maps practitioner \(iq) again (already $.practitioners[\(first)]); map each practitioner once")
                }
                mapped[iq] = i
                practitioners.append(.init(intakeqId: iq, providerId: prov))
            }
        }
        var timezone: String?
        if let tz = v["timezone"], !tz.isNull {
            guard case .string(let name) = tz else { throw fail("$.timezone", "must be an IANA time zone name such as \"America/Denver\"") }
            do { _ = try PracticeZone.load(name) } catch let e as LocalTimeError { throw fail("$.timezone", e.message) }
            timezone = name
        }
        return Roster(organizations: organizations, practitioners: practitioners, timezone: timezone)
    }

    /// An IntakeQ client id: a positive whole number, given as a number or a string of digits.
    /// `4101.5`, `-1`, `0`, `" 4101 "` and `"4101x"` are refused (they would match nobody).
    static func clientId(_ v: JSONValue) -> String? {
        let text: String
        switch v {
        case .number(let d):
            guard d >= 1, d <= 9_007_199_254_740_991, d.rounded() == d else { return nil }
            text = String(Int64(d))
        case .string(let s): text = s
        default: return nil
        }
        guard !text.isEmpty, text.utf8.allSatisfy({ (48...57).contains($0) }), text.first != "0", text.count <= 18 else { return nil }
        return text
    }

    public var hash: String {
        let o = RosterObserved(organizations: organizations, practitioners: practitioners, rosterHash: "", timezone: timezone)
        return sha256Hex(encodeData(o))
    }

    public var observed: RosterObserved {
        RosterObserved(organizations: organizations, practitioners: practitioners, rosterHash: hash, timezone: timezone)
    }

    public func organization(_ id: String) -> RosterObserved.Organization? { organizations.first { $0.id == id } }

    public func patient(_ id: String) -> (RosterObserved.Patient, RosterObserved.Organization)? {
        for o in organizations { if let p = o.patients.first(where: { $0.id == id }) { return (p, o) } }
        return nil
    }

    public var allPatients: [RosterObserved.Patient] { organizations.flatMap(\.patients) }
}

/// An error of a sync run's set-up (roster, arguments, store), with what to do.
public struct SyncError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
