import Foundation
import JSONCore
import Ledger

/// `--encryption`: the same workload with personal data sealed per patient (what `sync` does
/// before appending), so the cost of AES-GCM and of ciphertext that does not compress shows
/// beside the clear figures.
struct Sealer {
    let keys: KeyRing
    let patientOf: [String: String]

    init(keysDirectory: String) throws {
        keys = try KeyRing.open(directory: keysDirectory, create: true, environment: [:], notice: { _ in })
        var map: [String: String] = [:]
        if let r = try? Catalogue.roster().dataJSON(), case .array(let orgs)? = r["organizations"] {
            for o in orgs {
                if case .array(let ps)? = o["patients"] {
                    for p in ps {
                        if let c = p["intakeq_client_id"]?.stringValue, let id = p["id"]?.stringValue { map[c] = id }
                    }
                }
            }
        }
        patientOf = map
    }

    /// The event as `sync` would record it: roster patients and appointment personal data sealed.
    func seal(_ e: NewEvent) throws -> NewEvent {
        var e = e
        switch e.type {
        case .rosterObserved:
            let r = try JSONDecoder().decode(RosterObserved.self, from: Data(e.data))
            e.data = try PersonalData.sealRoster(r, key: keys.key(for:))
        case .appointmentDiscovered, .appointmentChanged:
            let d = try FastJSON.parse(e.data)
            guard let object = d["object"], let id = d["appointment_id"]?.stringValue else { return e }
            let (clear, parts) = try PersonalData.sealAppointment(object, appointmentId: id, patientOf: { patientOf[$0] },
                                                                  key: keys.key(for:))
            var changed: [String]?
            if case .array(let a)? = d["changed_fields"] { changed = a.compactMap(\.stringValue) }
            var obs = AppointmentObservation(appointmentId: id, contentHash: d["content_hash"]?.stringValue ?? "",
                                             changedFields: changed ?? [], object: Array(clear.canonicalText.utf8))
            obs.sealed = parts
            e.data = obs.encodeData(includeChangedFields: changed != nil)
        default:
            break
        }
        return e
    }
}

extension NewEvent {
    func dataJSON() throws -> JSONValue { try FastJSON.parse(data) }
}
