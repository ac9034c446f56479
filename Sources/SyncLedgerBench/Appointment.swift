import Domain
import Foundation
import Ledger
import TestSupport

/// Names, services, locations and practitioners the synthetic appointments draw from, shaped
/// like Fixtures/practice/day-01.json.
enum Catalogue {
    static let organizations = 6
    /// Clients per clinic (ids `clientId(clinic:k:)`, k below this).
    static let clientsPerClinic = 60
    static let firstNames = ["Indigo", "Elliot", "Sage", "Peyton", "Cameron", "Noel", "Remy", "Morgan", "Emerson",
                             "Rowan", "Quinn", "Avery", "Harper", "Jules", "Kai", "Marlowe"]
    static let lastNames = ["Valdez", "Zeller", "Quintero", "Delacroix", "Oyelaran", "Birch", "Park", "Mbeki",
                            "Fairbanks", "Okafor", "Lindqvist", "Nakamura", "Haddad", "Brennan", "Castillo", "Ivanova"]
    static let services: [(id: String, name: String, minutes: Int, price: String)] = [
        ("3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e01", "Individual Therapy 50 min", 50, "150.0"),
        ("3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e02", "Couples Session 60 min", 60, "180.0"),
        ("3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e03", "Group Therapy 90 min", 90, "60.0"),
        ("3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e04", "Free Consultation 30 min", 30, "0"),
        ("3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e05", "Psychiatric Evaluation 60 min", 60, "250.0"),
    ]
    static let locations: [(id: String, name: String, address: String)] = [
        ("\"1\"", "Downtown Office", "120 Main Street, Suite 4, Salt Lake City, UT 84101"),
        ("2", "Telehealth", ""), ("\"3\"", "Eastside Clinic", "455 East 900 South, Salt Lake City, UT 84111"),
        ("4", "Home Visits", ""),
    ]
    static let practitioners: [(id: String, name: String, email: String)] = [
        ("64b7aa00000000000000beef", "Jordan Lee", "jordan.lee@example.com"),
        ("64b7aa00000000000000c0de", "Sam Rivera", "sam.rivera@example.com"),
        ("64b7aa00000000000000f00d", "Priya Natarajan", "priya.natarajan@example.com"),
        ("64b7aa00000000000000d1ce", "Alex Moreno", "alex.moreno@example.com"),
    ]
    static let statuses = ["Confirmed", "Confirmed", "Confirmed", "Completed", "Canceled", "WaitingConfirmation", "NoShow"]
    static let notes = [
        "Client asked to move to a later slot if one opens up; prefers afternoons after school pickup.",
        "Bring the updated intake packet. Insurance card on file expires next month, ask for the new one.",
        "Follow-up on medication change discussed last session; coordinate with prescriber before visit.",
        "Parking validation available at the front desk. Client uses the east entrance (accessibility).",
    ]

    static func clientId(clinic: Int, k: Int) -> Int { 4000 + clinic * 1000 + k }

    /// One `roster.observed`: organizations whose patients are the first `patients` clients of
    /// their clinics (all of them by default: `sync` records only appointments that name a roster
    /// patient, so in a real log every observation has personal data to seal).
    static func roster(patients: Int) -> NewEvent {
        var orgs: [RosterObserved.Organization] = []
        for o in 0..<organizations {
            let patients = (0..<patients).map { k in
                RosterObserved.Patient(id: "p-\(o)-\(k)", name: "\(firstNames[k % 16]) \(lastNames[(o + k) % 16])",
                                       email: nil, intakeqClientId: String(clientId(clinic: o, k: k)))
            }
            orgs.append(.init(id: "org-\(o)", name: "Organization \(o)", patients: patients))
        }
        let prs = practitioners.enumerated().map { RosterObserved.Practitioner(intakeqId: $1.id, providerId: "prov-\($0)") }
        let r = RosterObserved(organizations: orgs, practitioners: prs, rosterHash: String(repeating: "a", count: 64))
        return NewEvent(type: .rosterObserved, run: nil, stream: Streams.roster, data: encodeData(r))
    }

    static func settings() -> NewEvent {
        let locs = locations.map { "{\"Id\":\($0.id),\"Name\":\"\($0.name)\",\"Address\":\"\($0.address)\"}" }
        let svcs = services.map { "{\"Id\":\"\($0.id)\",\"Name\":\"\($0.name)\",\"Duration\":\($0.minutes),\"Price\":\($0.price)}" }
        let prs = practitioners.map { "{\"Id\":\"\($0.id)\",\"CompleteName\":\"\($0.name)\",\"Email\":\"\($0.email)\"}" }
        let object = "{\"Locations\":[\(locs.joined(separator: ","))],\"Services\":[\(svcs.joined(separator: ","))],\"Practitioners\":[\(prs.joined(separator: ","))]}"
        let bytes = Array(object.utf8)
        return NewEvent(type: .settingsObserved, run: nil, stream: Streams.settings,
                        data: SettingsObserved(contentHash: sha256Hex(bytes), object: bytes).encodeData())
    }
}

/// The mutable facts of one synthetic appointment; its JSON is rebuilt from them each time.
struct SyntheticAppointment {
    var id: String
    var clientId: Int
    var clientName: String
    var service: Int
    var location: Int
    var practitioner: Int
    var start: Int64
    var status: Int
    var note: Int?
    var telehealth: Bool
    var customLink: Bool
    var additional: Int?
    var created: Int64
    var lastModified: Int64
    var observations = 1
    var maxObservations: Int
    // Per-appointment random text, as real exports carry (ids, phone, birth date, note details).
    var intakeId: String
    var phone: String
    var birth: String
    var emailTag: Int
    var meetingId: String
    var noteDetail: String

    init(number: Int, clinic: Int, day: Int, rng: inout SeededRNG) {
        id = "6a3f" + String(clinic, radix: 16).leftPadded(4) + String(number, radix: 16).leftPadded(16)
        let k = rng.below(Catalogue.clientsPerClinic)
        clientId = Catalogue.clientId(clinic: clinic % Catalogue.organizations, k: k)
        clientName = "\(Catalogue.firstNames[k % 16]) \(Catalogue.lastNames[(clinic + k) % 16])"
        service = rng.below(Catalogue.services.count)
        location = rng.below(Catalogue.locations.count)
        practitioner = rng.below(Catalogue.practitioners.count)
        let base: Int64 = 1_788_000_000_000 + Int64(day) * 86_400_000
        start = base + Int64(1 + rng.below(21)) * 86_400_000 + Int64(8 + rng.below(10)) * 3_600_000
        status = rng.below(3)
        note = rng.chance(0.5) ? rng.below(Catalogue.notes.count) : nil
        telehealth = location == 1
        customLink = rng.chance(0.15)
        additional = service == 1 ? Catalogue.clientId(clinic: clinic % Catalogue.organizations, k: rng.below(Catalogue.clientsPerClinic)) : nil
        created = base - Int64(rng.below(30)) * 86_400_000
        lastModified = base + Int64(rng.below(3_600_000))
        maxObservations = 2 + rng.below(5)
        intakeId = "\(rng.hex(8))-\(rng.hex(4))-4\(rng.hex(3))-8\(rng.hex(3))-\(rng.hex(12))"
        phone = "(\(200 + rng.below(800))) \(String(rng.below(1000)).leftPadded(3))-\(String(rng.below(10000)).leftPadded(4))"
        birth = "19\(40 + rng.below(60))-\(String(1 + rng.below(12)).leftPadded(2))-\(String(1 + rng.below(28)).leftPadded(2))"
        emailTag = rng.below(10_000)
        meetingId = String(1_000_000_000 + rng.below(8_999_999_999))
        noteDetail = "Ref \(rng.hex(6).uppercased()), room \(1 + rng.below(40)), copay $\(rng.below(80)).\(String(rng.below(100)).leftPadded(2))."
    }

    /// A small change, as IntakeQ would show between two syncs. Returns the changed fields.
    mutating func mutate(_ rng: inout SeededRNG) -> [String] {
        observations += 1
        lastModified += Int64(3_600_000 + rng.below(86_400_000))
        switch rng.below(4) {
        case 0:
            status = 3 + rng.below(4)
            return ["Status", "LastModified"]
        case 1:
            start += Int64(rng.below(5) - 2) * 86_400_000 + 1_800_000
            return ["StartDate", "EndDate", "StartDateIso", "EndDateIso", "StartDateLocal", "EndDateLocal",
                    "StartDateLocalFormatted", "LastModified"]
        case 2:
            note = rng.below(Catalogue.notes.count)
            noteDetail = "Ref \(rng.hex(6).uppercased()), room \(1 + rng.below(40)), copay $\(rng.below(80)).\(String(rng.below(100)).leftPadded(2))."
            return ["PractitionerNote", "LastModified"]
        default:
            telehealth.toggle()
            return ["TelehealthInfo", "LastModified"]
        }
    }

    func hashText(_ rng: inout SeededRNG) -> String { rng.hex(64) }

    func json() -> [UInt8] {
        let s = Catalogue.services[service], l = Catalogue.locations[location], p = Catalogue.practitioners[practitioner]
        let end = start + Int64(s.minutes) * 60_000
        let email = clientName.lowercased().replacingOccurrences(of: " ", with: ".") + "\(emailTag)@example.org"
        let tele = telehealth
            ? "{\"Id\":\"tv-\(intakeId.suffix(10))\",\"StartUrl\":\"https://zoom.us/s/\(meetingId)?zak=\(intakeId.prefix(8))\",\"Invitation\":null,\"Provider\":\"Zoom\",\"InvitationCode\":null}"
            : "null"
        let custom = customLink ? "{\"FieldId\":\"vid1\",\"Text\":\"Video link\",\"Value\":\"https://zoom.us/j/\(meetingId)?pwd=\(intakeId.suffix(12))\"}" : ""
        let extra = additional.map {
            "{\"ClientId\":\($0),\"ClientName\":\"Sage Quintero\",\"ClientEmail\":\"sage.quintero@example.com\",\"ClientPhone\":\"(555) 011-4891\",\"IntakeId\":null}"
        } ?? ""
        let noteText = note.map { "\"\(Catalogue.notes[$0]) \(noteDetail)\"" } ?? "null"
        var o = "{\"Id\":\"\(id)\",\"ClientName\":\"\(clientName)\",\"ClientEmail\":\"\(email)\""
        o += ",\"ClientPhone\":\"\(phone)\",\"ClientDateOfBirth\":\"\(birth)\""
        o += ",\"ClientId\":\(clientId),\"Status\":\"\(Catalogue.statuses[status])\",\"StartDate\":\(start),\"EndDate\":\(end)"
        o += ",\"Duration\":\(s.minutes),\"ServiceName\":\"\(s.name)\",\"ServiceId\":\"\(s.id)\",\"LocationName\":\"\(l.name)\""
        o += ",\"LocationId\":\(l.id),\"Price\":\(s.price),\"PractitionerEmail\":\"\(p.email)\",\"PractitionerName\":\"\(p.name)\""
        o += ",\"PractitionerId\":\"\(p.id)\",\"DateCreated\":\(created),\"IntakeId\":\"\(intakeId)\""
        o += ",\"BookedByClient\":\(clientId % 3 == 0),\"CreatedBy\":\"Front Desk\",\"AppointmentPackageId\":null,\"AppointmentPackageName\":null"
        o += ",\"StartDateIso\":\"\(iso(start))\",\"EndDateIso\":\"\(iso(end))\",\"StartDateLocal\":\"\(local(start))\""
        o += ",\"EndDateLocal\":\"\(local(end))\",\"StartDateLocalFormatted\":\"\(formatted(start))\",\"TelehealthInfo\":\(tele)"
        o += ",\"ReminderType\":\"Email\",\"InvoiceId\":null,\"InvoiceNumber\":null,\"ClientNote\":null,\"PractitionerNote\":\(noteText)"
        o += ",\"AttendanceConfirmationResponse\":\"None\",\"CustomFields\":[\(custom)],\"SessionStart\":null,\"SessionEnd\":null"
        o += ",\"ExternalClientId\":null,\"ExternalPractitionerId\":null,\"ExternalServiceId\":null,\"LastModified\":\(lastModified)"
        o += ",\"PlaceOfService\":\"\(telehealth ? "02" : "11")\",\"AdditionalClients\":[\(extra)],\"FullCancellationReason\":\(status == 4 ? "\"Client request\"" : "null")"
        o += ",\"CancellationReasonNote\":null,\"CancellationDate\":\(status == 4 ? String(lastModified) : "null"),\"Procedures\":[]}"
        return Array(o.utf8)
    }

    func iso(_ ms: Int64) -> String {
        let t = ISOTime.format(millis: ms)  // yyyy-MM-ddTHH:mm:ss.SSSZ
        return String(t.prefix(19)) + ".0000000Z"
    }

    func local(_ ms: Int64) -> String { String(ISOTime.format(millis: ms - 7 * 3_600_000).prefix(19)) }

    func formatted(_ ms: Int64) -> String {
        let days = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"]
        let localMs = ms - 7 * 3_600_000
        let t = ISOTime.format(millis: localMs)
        let hour = Int(t.dropFirst(11).prefix(2)) ?? 0
        let minute = t.dropFirst(14).prefix(2)
        let h12 = hour % 12 == 0 ? 12 : hour % 12
        return "\(days[Int((localMs / 86_400_000) % 7)]), \(t.prefix(10)) \(h12):\(minute) \(hour < 12 ? "AM" : "PM")"
    }
}

// MARK: - Just enough JSON for `--corpus` lines

/// The snapshot a corpus line holds: the value under a top-level "payload" key when that is an
/// object, else the line itself.
func snapshot(of line: [UInt8]) -> ArraySlice<UInt8> {
    if let r = topLevelValue(line[...], key: "payload"), line[r.lowerBound] == UInt8(ascii: "{") { return line[r] }
    return line[...]
}

/// Removes whitespace outside strings (IntakeQ objects are stored minified).
func minified(_ b: ArraySlice<UInt8>) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(b.count)
    var inString = false, escaped = false
    for c in b {
        if inString {
            if escaped { escaped = false } else if c == 92 { escaped = true } else if c == 34 { inString = false }
            out.append(c)
        } else if c == 34 {
            inString = true
            out.append(c)
        } else if c != 32, c != 9, c != 10, c != 13 {
            out.append(c)
        }
    }
    return out
}

func topLevelString(_ b: [UInt8], key: String) -> String? {
    guard let r = topLevelValue(b[...], key: key) else { return nil }
    var v = b[r]
    if v.first == 34 { v = v.dropFirst().dropLast() }
    return v.isEmpty || v.elementsEqual("null".utf8) ? nil : String(decoding: v, as: UTF8.self)
}

/// The byte range of the value under `key` in a top-level JSON object.
func topLevelValue(_ b: ArraySlice<UInt8>, key: String) -> Range<Int>? {
    let k = Array(key.utf8)
    var i = b.startIndex, depth = 0
    func skipString(_ j: Int) -> Int {
        var j = j + 1
        while j < b.endIndex, b[j] != 34 { j += b[j] == 92 ? 2 : 1 }
        return j + 1
    }
    while i < b.endIndex {
        let c = b[i]
        if c == 34 {
            let end = skipString(i)
            if depth == 1, end <= b.endIndex, b[(i + 1)..<(end - 1)].elementsEqual(k) {
                var j = end
                while j < b.endIndex, b[j] == 32 || b[j] == 58 || b[j] == 9 { j += 1 }
                var e = j, d = 0
                while e < b.endIndex {
                    let x = b[e]
                    if x == 34 { e = skipString(e); if d == 0 { break }; continue }
                    if x == 123 || x == 91 { d += 1 } else if x == 125 || x == 93 {
                        if d == 0 { break }
                        d -= 1
                        if d == 0 { e += 1; break }
                    } else if d == 0, x == 44 { break }
                    e += 1
                }
                var end2 = min(e, b.endIndex)
                while end2 > j, b[end2 - 1] == 32 { end2 -= 1 }
                return j..<end2
            }
            i = end
            continue
        }
        if c == 123 || c == 91 { depth += 1 } else if c == 125 || c == 93 { depth -= 1 }
        i += 1
    }
    return nil
}
