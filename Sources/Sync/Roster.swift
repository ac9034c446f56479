import Foundation
import IntakeQ
import JSONCore
import Ledger

/// The scope of a sync: partner organizations, their patients with IntakeQ client ids, and
/// the practitioner → provider mapping (DESIGN.md, "Sync semantics").
public struct Roster: Sendable, Hashable {
    public var organizations: [RosterObserved.Organization]
    public var practitioners: [RosterObserved.Practitioner]

    public init(organizations: [RosterObserved.Organization], practitioners: [RosterObserved.Practitioner]) {
        self.organizations = organizations
        self.practitioners = practitioners
    }

    /// Loads a roster file; every error names the file and, for bad content, the JSON path.
    public static func load(path: String) throws -> Roster {
        guard let data = FileManager.default.contents(atPath: path) else {
            let why = FileManager.default.fileExists(atPath: path) ? "cannot be read (check its permissions)" : "does not exist"
            throw SyncError("roster \(path) \(why)")
        }
        let value: JSONValue
        do { value = try FastJSON.parse(Array(data)) } catch {
            throw SyncError("roster \(path) is not valid JSON: \(error)")
        }
        return try parse(value, file: path)
    }

    static func parse(_ v: JSONValue, file: String) throws -> Roster {
        func fail(_ path: String, _ what: String) -> SyncError { SyncError("roster \(file): \(path) \(what)") }
        guard case .object = v else { throw fail("$", "must be an object with \"organizations\"") }
        guard case .array(let orgs)? = v["organizations"] else { throw fail("$.organizations", "must be a list") }
        var organizations: [RosterObserved.Organization] = []
        var seenPatients = Set<String>()
        var clientOwner: [String: String] = [:]
        for (i, org) in orgs.enumerated() {
            let p = "$.organizations[\(i)]"
            guard case .object = org else { throw fail(p, "must be an object") }
            guard let id = org["id"]?.stringValue, !id.isEmpty else { throw fail(p + ".id", "is missing or empty") }
            guard case .array(let pats)? = org["patients"] ?? .array([]) else { throw fail(p + ".patients", "must be a list") }
            var patients: [RosterObserved.Patient] = []
            for (j, pat) in pats.enumerated() {
                let pp = "\(p).patients[\(j)]"
                guard case .object = pat else { throw fail(pp, "must be an object") }
                guard let pid = pat["id"]?.stringValue, !pid.isEmpty else { throw fail(pp + ".id", "is missing or empty") }
                guard let cid = pat["intakeq_client_id"], !cid.isNull, let client = cid.stringValue, !client.isEmpty else {
                    throw fail(pp + ".intakeq_client_id", "is missing (a number or a string)")
                }
                if case .bool = cid { throw fail(pp + ".intakeq_client_id", "must be a number or a string") }
                guard seenPatients.insert(pid).inserted else { throw fail(pp + ".id", "repeats patient id \(pid)") }
                // Two patients with one IntakeQ client would file one person's appointments
                // under the other: refuse, naming the patients by id only.
                if let other = clientOwner[client] {
                    throw fail(pp + ".intakeq_client_id", "repeats IntakeQ client \(client), already given to patient \(other); each patient needs their own")
                }
                clientOwner[client] = pid
                patients.append(.init(id: pid, name: pat["name"]?.stringValue, email: pat["email"]?.stringValue, intakeqClientId: client))
            }
            organizations.append(.init(id: id, name: org["name"]?.stringValue, patients: patients))
        }
        var practitioners: [RosterObserved.Practitioner] = []
        if let list = v["practitioners"], !list.isNull {
            guard case .array(let prs) = list else { throw fail("$.practitioners", "must be a list") }
            for (i, pr) in prs.enumerated() {
                guard let iq = pr["intakeq_id"]?.stringValue, let prov = pr["provider_id"]?.stringValue else {
                    throw fail("$.practitioners[\(i)]", "needs intakeq_id and provider_id")
                }
                practitioners.append(.init(intakeqId: iq, providerId: prov))
            }
        }
        return Roster(organizations: organizations, practitioners: practitioners)
    }

    public var hash: String {
        let o = RosterObserved(organizations: organizations, practitioners: practitioners, rosterHash: "")
        return sha256Hex(encodeData(o))
    }

    public var observed: RosterObserved {
        RosterObserved(organizations: organizations, practitioners: practitioners, rosterHash: hash)
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
