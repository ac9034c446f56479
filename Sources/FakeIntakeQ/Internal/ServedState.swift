import Foundation
import IntakeQ
import JSONCore

/// A `PracticeState` indexed for serving: every object parsed once, lists sorted newest first.
struct ServedState: Sendable {
    /// One served object. Fields are read leniently, as IntakeQ itself stores whatever it stores:
    /// a field of an odd type must not change what the fake serves or how it filters.
    struct Entry: Sendable {
        var raw: [UInt8]
        var value: JSONValue
        var appointment: Lenient { Lenient(value: value) }
    }

    struct Lenient {
        var value: JSONValue
        var id: String? { value["Id"]?.stringValue }
        var startDate: Int64? { value["StartDate"]?.int64Value }
        var status: String? { value["Status"]?.stringValue }
        var practitionerEmail: String? { value["PractitionerEmail"]?.stringValue }
        var clientName: String? { value["ClientName"]?.stringValue }
        var clientEmail: String? { value["ClientEmail"]?.stringValue }
        var clientPhone: String? { value["ClientPhone"]?.stringValue }
        var clientId: FlexibleID? { Self.flexible(value["ClientId"]) }
        var lastModified: Int64? { value["LastModified"]?.int64Value }
        var additionalClients: [Lenient]? {
            guard case .array(let a)? = value["AdditionalClients"] else { return nil }
            return a.map(Lenient.init(value:))
        }
        static func flexible(_ v: JSONValue?) -> FlexibleID? {
            switch v {
            case .number(let d)? where d.rounded() == d: return .number(Int64(d))
            case .string(let s)?: return .string(s)
            default: return nil
            }
        }
    }

    var settings: [UInt8]
    var appointments: [Entry]
    var deleted: [Entry]

    /// Objects that do not decode are still served as they are (to test the client's handling
    /// of a bad row); they match no filter that needs a field.
    init(_ state: PracticeState) {
        func entry(_ raw: [UInt8]) -> Entry {
            Entry(raw: raw, value: (try? FastJSON.parse(raw)) ?? .null)
        }
        settings = state.settings
        appointments = state.appointments.map(entry)
        deleted = state.deleted.map(entry)
        appointments.sort(by: Self.newestFirst)
        deleted.sort(by: Self.newestFirst)
    }

    static func newestFirst(_ a: Entry, _ b: Entry) -> Bool {
        let sa = a.appointment.startDate ?? 0
        let sb = b.appointment.startDate ?? 0
        if sa != sb { return sa > sb }
        return (a.appointment.id ?? "") < (b.appointment.id ?? "")
    }

    /// IntakeQ's filters as the fake understands them (see FakeIntakeQServer docs).
    func query(_ q: [String: String]) -> [Entry] {
        let source = q["deletedOnly"]?.lowercased() == "true" ? deleted : appointments
        let client = q["client"].map { $0.lowercased() }.flatMap { $0.isEmpty ? nil : $0 }
        let practitioner = q["practitionerEmail"].map { $0.lowercased() }.flatMap { $0.isEmpty ? nil : $0 }
        let updatedSince = q["updatedSince"].flatMap { Self.dayStart($0) }
        return source.filter { e in
            let a = e.appointment
            let day = a.startDate.map { IntakeQDate.day(IntakeQDate.fromEpochMs($0)) } ?? ""
            if let s = q["startDate"], !s.isEmpty, day < s { return false }
            if let s = q["endDate"], !s.isEmpty, day > s { return false }
            if let s = q["status"], !s.isEmpty, a.status != s { return false }
            if let practitioner, (a.practitionerEmail ?? "").lowercased() != practitioner { return false }
            if let client {
                // The real API's partial match: "Sam Lee" also finds "Sam Leeds".
                let name = (a.clientName ?? "").lowercased()
                let email = (a.clientEmail ?? "").lowercased()
                if !name.contains(client) && !email.contains(client) { return false }
            }
            if let updatedSince, (a.lastModified ?? 0) < updatedSince { return false }
            return true
        }
    }

    func appointment(id: String) -> Entry? {
        appointments.first { $0.appointment.id == id }
    }

    /// Distinct clients (primary and additional) as `GET /clients` rows without profile.
    func clients(search: String?) -> [[UInt8]] {
        struct Row: Encodable {
            var ClientNumber: Int64?
            var Name: String
            var Email: String
            var Phone: String
        }
        var seen: Set<String> = []
        var rows: [(String, Row)] = []
        func add(_ id: FlexibleID?, _ name: String?, _ email: String?, _ phone: String?) {
            guard let id, seen.insert(id.stringValue).inserted else { return }
            rows.append((id.stringValue, Row(ClientNumber: Int64(id.stringValue), Name: name ?? "", Email: email ?? "", Phone: phone ?? "")))
        }
        for e in appointments {
            let a = e.appointment
            add(a.clientId, a.clientName, a.clientEmail, a.clientPhone)
            for c in a.additionalClients ?? [] { add(c.clientId, c.clientName, c.clientEmail, c.clientPhone) }
        }
        let needle = search?.lowercased() ?? ""
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return rows.sorted { $0.0 < $1.0 }.filter { id, r in
            needle.isEmpty || id == needle || r.Name.lowercased().contains(needle) || r.Email.lowercased().contains(needle)
        }.map { Array((try? enc.encode($0.1)) ?? Data()) }
    }

    static func dayStart(_ day: String) -> Int64? {
        guard let d = IntakeQDate.parse(day + "T00:00:00Z") else { return nil }
        return Int64(d.timeIntervalSince1970 * 1000)
    }
}
