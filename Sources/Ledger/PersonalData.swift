import Crypto
import Domain
import Foundation
import JSONCore

/// Per-patient encryption of the personal data inside events (docs/FORMAT.md, "Encrypted
/// personal data"). What identifies or describes a person is moved out of the clear object into
/// one sealed part per roster patient (AES-256-GCM under that patient's key); the rest stays
/// clear and compressible. Reading with the keys puts every field back where it was; a part whose
/// key `forget` destroyed reads as `(forgotten)`.
public enum PersonalData {
    /// The primary client's fields, sealed under the primary's key (slot `client`).
    public static let clientFields = [
        "ClientId", "ClientName", "ClientEmail", "ClientPhone", "ClientDateOfBirth", "ExternalClientId",
        "IntakeId", "CreatedBy",
    ]
    /// Free text and answers of the appointment, sealed under the key of its owner — the primary
    /// client when in the roster, else the first roster patient among the additional clients
    /// (slot `appointment`).
    public static let appointmentFields = [
        "ClientNote", "PractitionerNote", "CustomFields", "CancellationReasonNote", "FullCancellationReason",
    ]
    /// The same names for byte-level lookups (`sealObservationBytes`).
    static let clientFieldNames: [StaticString] = [
        "ClientId", "ClientName", "ClientEmail", "ClientPhone", "ClientDateOfBirth", "ExternalClientId",
        "IntakeId", "CreatedBy",
    ]
    static let appointmentFieldNames: [StaticString] = [
        "ClientNote", "PractitionerNote", "CustomFields", "CancellationReasonNote", "FullCancellationReason",
    ]
    /// What a field of a forgotten person reads as.
    public static let forgottenName = "(forgotten)"

    /// One sealed part: whose key, which slots it fills, and the box (base64 of nonce | ciphertext | tag).
    public struct Part: Sendable, Hashable {
        public var patient: String
        public var slots: [String]
        public var box: String

        var json: String {
            "{\"patient\":\(jsonQuoted(patient)),\"slots\":[" + slots.map(jsonQuoted).joined(separator: ",")
                + "],\"box\":\"\(box)\"}"
        }

        /// Appends the bytes of `json`.
        func encode(into out: inout [UInt8]) {
            out.append(contentsOf: Self.patientKey)
            appendQuoted(&out, patient)
            out.append(contentsOf: Self.slotsKey)
            for (i, slot) in slots.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendQuoted(&out, slot)
            }
            out.append(contentsOf: Self.boxKey)
            out.append(contentsOf: box.utf8)
            out.append(UInt8(ascii: "\""))
            out.append(UInt8(ascii: "}"))
        }

        static let patientKey = Array("{\"patient\":".utf8)
        static let slotsKey = Array(",\"slots\":[".utf8)
        static let boxKey = Array("],\"box\":\"".utf8)
    }

    /// The additional authenticated data of a box: `syncledger-personal-v1\n` + patient + `\n` +
    /// context, written as bytes into one array (no intermediate strings: it is made for every box
    /// sealed or opened).
    static func aad(_ patient: String, _ context: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(aadPrefix.count + patient.utf8.count + 1 + context.utf8.count)
        out.append(contentsOf: aadPrefix)
        out.append(contentsOf: patient.utf8)
        out.append(UInt8(ascii: "\n"))
        out.append(contentsOf: context.utf8)
        return out
    }

    static let aadPrefix = Array("syncledger-personal-v1\n".utf8)

    /// `body` given the bytes of `aad(patient, "appointment/" + appointmentId)`, written on the
    /// stack (opening every sealed observation of a rebuild built the context and this array
    /// on the heap for each).
    static func withAppointmentAAD<R>(_ patient: String, appointmentId: String, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        let context: StaticString = "appointment/"
        var patient = patient, appointmentId = appointmentId
        return patient.withUTF8 { p in
            appointmentId.withUTF8 { id in
                let count = aadPrefix.count + p.count + 1 + context.utf8CodeUnitCount + id.count
                return withUnsafeTemporaryAllocation(byteCount: count, alignment: 1) { raw in
                    var at = 0
                    func put(_ bytes: UnsafeRawBufferPointer) {
                        guard !bytes.isEmpty else { return }
                        UnsafeMutableRawBufferPointer(rebasing: raw[at..<(at + bytes.count)]).copyMemory(from: bytes)
                        at += bytes.count
                    }
                    aadPrefix.withUnsafeBytes { put($0) }
                    put(UnsafeRawBufferPointer(p))
                    raw[at] = UInt8(ascii: "\n")
                    at += 1
                    put(UnsafeRawBufferPointer(start: context.utf8Start, count: context.utf8CodeUnitCount))
                    put(UnsafeRawBufferPointer(id))
                    return body(UnsafeRawBufferPointer(raw))
                }
            }
        }
    }

    static func seal(_ fields: [String: JSONValue], patient: String, context: String, key: SymmetricKey) throws -> String {
        try sealPlain(Array(JSONValue.object(fields).canonicalText.utf8), patient: patient, context: context, key: key)
    }

    /// Seals the canonical text of a part's fields.
    static func sealPlain(_ plain: [UInt8], patient: String, context: String, key: SymmetricKey,
                          nonce: ArraySlice<UInt8>? = nil) throws -> String {
        let box = try GCM.seal(plain, key: key, nonce: nonce, aad: aad(patient, context))
        return box.withUnsafeBytes { Base64Canonical.encode($0) }
    }

    static func open(_ box: String, patient: String, context: String, key: SymmetricKey) throws -> [String: JSONValue] {
        guard let bytes = Data(base64Encoded: box),
            let plain = bytes.withUnsafeBytes({ GCM.open($0, key: key, aad: aad(patient, context)) }),
            case .object(let o)? = try? FastJSON.parse(plain)
        else {
            throw LedgerError("a sealed part of patient \(patient) (\(context)) does not open with their key: the keys are not the ones this log was sealed with (another store's `keys/` with its master key: check --keys), or the event or the key store was altered")
        }
        return o
    }

    private static func present(_ v: JSONValue?) -> Bool {
        guard let v else { return false }
        switch v {
        case .null: return false
        case .array(let a): return !a.isEmpty
        case .string(let s): return !s.isEmpty
        default: return true
        }
    }

    /// The data of an `appointment.discovered`/`changed` event recorded in the clear, sealed as
    /// `sync` records it (`sync`, the benchmark and the tests all seal this way). Data without an
    /// object or an id, or whose object names nobody on the roster, comes back unchanged. Works
    /// on the bytes (`sealObservationBytes`) and falls back to parsing the whole data for odd
    /// shapes; both give the same bytes (but for the random nonces).
    public static func sealObservationData(_ data: [UInt8], patientOf: (String) -> String?,
                                           key: (String) throws -> SymmetricKey) throws -> [UInt8] {
        var scratch = SealScratch(expected: 1)
        return try sealObservationData(data, patientOf: patientOf, key: key, scratch: &scratch)
    }

    /// The same, reusing `scratch`'s keys and nonces (one thread sealing many).
    static func sealObservationData(_ data: [UInt8], patientOf: (String) -> String?, key: (String) throws -> SymmetricKey,
                                    scratch: inout SealScratch) throws -> [UInt8] {
        if let sealed = try sealObservationBytes(data, patientOf: patientOf, key: key, scratch: &scratch) { return sealed }
        return try sealObservationDataParsing(data, patientOf: patientOf, key: key)
    }

    /// `sealObservationData` by parsing the whole data into a `JSONValue` (the reference).
    static func sealObservationDataParsing(_ data: [UInt8], patientOf: (String) -> String?,
                                           key: (String) throws -> SymmetricKey) throws -> [UInt8] {
        let d = try FastJSON.parse(data)
        guard let object = d["object"], let id = d["appointment_id"]?.stringValue else { return data }
        let (clear, parts) = try sealAppointment(object, appointmentId: id, patientOf: patientOf, key: key)
        // Nothing sealed: the data as it came (as `sync` always recorded it).
        if parts.isEmpty { return data }
        var changed: [String]?
        if case .array(let a)? = d["changed_fields"] { changed = a.compactMap(\.stringValue) }
        var obs = AppointmentObservation(appointmentId: id, contentHash: d["content_hash"]?.stringValue ?? "",
                                         changedFields: changed ?? [], object: Array(clear.canonicalText.utf8))
        obs.sealed = parts
        return obs.encodeData(includeChangedFields: changed != nil)
    }

    /// Splits a (redacted) appointment object into its clear part and one sealed part per roster
    /// patient. `patientOf` maps an IntakeQ client id to its roster patient id.
    public static func sealAppointment(_ object: JSONValue, appointmentId: String, patientOf: (String) -> String?,
                                       key: (String) throws -> SymmetricKey) throws -> (clear: JSONValue, parts: [Part]) {
        guard case .object(var o) = object else { return (object, []) }
        var order: [String] = []
        var fields: [String: [String: JSONValue]] = [:]
        var slots: [String: [String]] = [:]
        func put(_ patient: String, _ slot: String, _ f: [String: JSONValue]) {
            if fields[patient] == nil { order.append(patient) }
            fields[patient, default: [:]].merge(f) { _, b in b }
            slots[patient, default: []].append(slot)
        }
        let primary = o["ClientId"].flatMap { $0.isNull ? nil : $0.stringValue }.flatMap(patientOf)
        var owner = primary
        if let p = primary {
            var f: [String: JSONValue] = [:]
            for k in clientFields where present(o[k]) {
                f[k] = o[k]
                o[k] = .null
            }
            put(p, "client", f)
        }
        if case .array(var extra)? = o["AdditionalClients"] {
            for (i, entry) in extra.enumerated() {
                guard let id = entry["ClientId"].flatMap({ $0.isNull ? nil : $0.stringValue }), let p = patientOf(id) else { continue }
                if owner == nil { owner = p }
                put(p, "AdditionalClients/\(i)", ["AdditionalClients/\(i)": entry])
                extra[i] = .object([:])
            }
            o["AdditionalClients"] = .array(extra)
        }
        if let owner {
            var f: [String: JSONValue] = [:]
            for k in appointmentFields where present(o[k]) {
                f[k] = o[k]
                o[k] = .null
            }
            if !f.isEmpty { put(owner, "appointment", f) }
        }
        var parts: [Part] = []
        for p in order {
            let box = try seal(fields[p] ?? [:], patient: p, context: "appointment/" + appointmentId, key: try key(p))
            parts.append(Part(patient: p, slots: slots[p] ?? [], box: box))
        }
        return (.object(o), parts)
    }

    /// Puts the sealed parts back into the clear object. `key` returns nil for a forgotten patient:
    /// their slots read as `(forgotten)` (client name) with every other field null, and the clear
    /// `TelehealthInfo` is cleaned as redaction version 5 cleans every object
    /// (`Redaction.cleanedTelehealth`): recorded before it, the invitation and join link could
    /// name the patient in the clear, outside every sealed part.
    public static func openAppointment(_ clear: JSONValue, parts: [JSONValue], appointmentId: String,
                                       key: (String) throws -> SymmetricKey?) throws -> JSONValue {
        guard case .object(var o) = clear else { return clear }
        var forgotten = false
        for part in parts {
            guard let patient = part["patient"]?.stringValue, let box = part["box"]?.stringValue else {
                throw LedgerError("a sealed part of appointment \(appointmentId) lacks its patient or box")
            }
            let slots: [String]
            if case .array(let a)? = part["slots"] { slots = a.compactMap(\.stringValue) } else { slots = [] }
            if let k = try key(patient) {
                for (field, value) in try open(box, patient: patient, context: "appointment/" + appointmentId, key: k) {
                    if field.hasPrefix("AdditionalClients/"), let i = Int(field.dropFirst("AdditionalClients/".count)),
                        case .array(var extra)? = o["AdditionalClients"], i >= 0, i < extra.count
                    {
                        extra[i] = value
                        o["AdditionalClients"] = .array(extra)
                    } else {
                        o[field] = value
                    }
                }
            } else {
                forgotten = true
                for slot in slots {
                    if slot == "client" {
                        o["ClientName"] = .string(forgottenName)
                    } else if slot.hasPrefix("AdditionalClients/"), let i = Int(slot.dropFirst("AdditionalClients/".count)),
                        case .array(var extra)? = o["AdditionalClients"], i >= 0, i < extra.count
                    {
                        extra[i] = .object(["ClientId": .null, "ClientName": .string(forgottenName)])
                        o["AdditionalClients"] = .array(extra)
                    }
                }
            }
        }
        if forgotten, let telehealth = o["TelehealthInfo"] {
            o["TelehealthInfo"] = Redaction.cleanedTelehealthValue(telehealth)
        }
        return .object(o)
    }

    /// The `roster.observed` data with each patient's name, email and IntakeQ client id sealed
    /// under their key: `{"id":…,"box":…}` in place of the patient.
    public static func sealRoster(_ roster: RosterObserved, key: (String) throws -> SymmetricKey) throws -> [UInt8] {
        var orgs: [JSONValue] = []
        for org in roster.organizations {
            var patients: [JSONValue] = []
            for p in org.patients {
                var f: [String: JSONValue] = ["intakeq_client_id": .string(p.intakeqClientId)]
                if let n = p.name { f["name"] = .string(n) }
                if let e = p.email { f["email"] = .string(e) }
                let box = try seal(f, patient: p.id, context: "roster", key: try key(p.id))
                patients.append(.object(["id": .string(p.id), "box": .string(box)]))
            }
            orgs.append(.object(["id": .string(org.id), "name": org.name.map(JSONValue.string) ?? .null, "patients": .array(patients)]))
        }
        let practitioners = JSONValue.array(roster.practitioners.map {
            .object(["intakeq_id": .string($0.intakeqId), "provider_id": .string($0.providerId)])
        })
        var fields: [String: JSONValue] = [
            "organizations": .array(orgs), "practitioners": practitioners, "roster_hash": .string(roster.rosterHash),
            "sealed": .bool(true),
        ]
        if let tz = roster.timezone { fields["timezone"] = .string(tz) }
        let data = JSONValue.object(fields)
        return Array(data.canonicalText.utf8)
    }

    /// A sealed roster's data back in the clear shape; a forgotten patient keeps only their id.
    public static func openRoster(_ data: JSONValue, key: (String) throws -> SymmetricKey?) throws -> JSONValue {
        guard case .object(var d) = data, case .array(let orgs)? = d["organizations"] else { return data }
        var out: [JSONValue] = []
        for org in orgs {
            guard case .object(var o) = org, case .array(let patients)? = o["patients"] else {
                out.append(org)
                continue
            }
            o["patients"] = .array(try patients.map { p -> JSONValue in
                guard let id = p["id"]?.stringValue, let box = p["box"]?.stringValue else { return p }
                guard let k = try key(id) else {
                    return .object(["id": .string(id), "name": .string(forgottenName), "email": .null, "intakeq_client_id": .string("")])
                }
                var f = try open(box, patient: id, context: "roster", key: k)
                f["id"] = .string(id)
                return .object(f)
            })
            out.append(.object(o))
        }
        d["organizations"] = .array(out)
        d["sealed"] = nil
        return .object(d)
    }
}

extension Collection where Element == RosterObserved.Patient {
    /// What `PersonalText.problem` finds in `text` (recorded in the clear for good) that names
    /// one of these patients: a name, an email or a client id. A forgotten patient's placeholder
    /// name, "(forgotten)", is no one's: the word stays usable (hostile test: "right to be
    /// forgotten" was refused once anyone had been forgotten).
    public func personalDataProblem(in text: String) -> String? {
        PersonalText.problem(text, names: compactMap(\.name).filter { $0 != PersonalData.forgottenName },
                             emails: compactMap(\.email), clientIds: Set(map(\.intakeqClientId)))
    }
}
