import Foundation
import JSONCore
import Ledger

/// `--encryption`: the same workload with personal data sealed per patient (what `sync` does
/// before appending), so the cost of AES-GCM and of ciphertext that does not compress shows
/// beside the clear figures.
struct Sealer {
    let keys: KeyRing
    let patientOf: [String: String]

    /// `roster`: the workload's `roster.observed` (its patients are the ones sealed).
    init(keysDirectory: String, roster: NewEvent) throws {
        keys = try KeyRing.open(directory: keysDirectory, create: true, environment: [:], notice: { _ in })
        var map: [String: String] = [:]
        if let r = try? roster.dataJSON(), case .array(let orgs)? = r["organizations"] {
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

    /// A batch as `sync` records it: the roster first (its patients' keys made together,
    /// `KeyRing.makeKeys`), then the observations sealed together, on every core
    /// (`PersonalData.sealObservations(in:…)`).
    func seal(_ batch: [NewEvent]) throws -> [NewEvent] {
        var batch = batch
        let keys = self.keys, patientOf = self.patientOf
        for i in batch.indices where batch[i].type == .rosterObserved {
            let r = try JSONDecoder().decode(RosterObserved.self, from: Data(batch[i].data))
            try keys.makeKeys(for: r.organizations.flatMap { $0.patients.map(\.id) })
            batch[i] = try seal(batch[i])
        }
        try PersonalData.sealObservations(in: &batch, patientOf: { patientOf[$0] }, key: { try keys.key(for: $0) })
        return batch
    }

    /// The event as `sync` would record it: roster patients and appointment personal data sealed.
    func seal(_ e: NewEvent) throws -> NewEvent {
        var e = e
        switch e.type {
        case .rosterObserved:
            let r = try JSONDecoder().decode(RosterObserved.self, from: Data(e.data))
            e.data = try PersonalData.sealRoster(r, key: keys.key(for:))
        case .appointmentDiscovered, .appointmentChanged:
            e.data = try PersonalData.sealObservationData(e.data, patientOf: { patientOf[$0] }, key: keys.key(for:))
        default:
            break
        }
        return e
    }
}

extension NewEvent {
    func dataJSON() throws -> JSONValue { try FastJSON.parse(data) }
}
