/// Who an appointment belongs to (DESIGN.md, "Sync semantics"): a roster patient whose IntakeQ
/// client id is the appointment's `ClientId` (the primary) or one of its
/// `AdditionalClients[].ClientId` — never by name or e-mail. One rule for the sync's scope, the
/// views' attribution and the CSV export.
public enum RosterMembership {
    public struct Member: Sendable, Hashable {
        public var patientId: String
        public var organizationId: String
        /// `primary` (ClientId) or `additional` (AdditionalClients).
        public var role: String
        public init(patientId: String, organizationId: String, role: String) {
            self.patientId = patientId
            self.organizationId = organizationId
            self.role = role
        }
    }

    /// Every IntakeQ client id of the appointment: `ClientId` first, then the additional clients.
    public static func clientIds(of f: AppointmentFacts) -> [String] {
        (f.intakeqClientId.map { [$0] } ?? []) + f.additionalClientIds
    }

    /// True when any client of the appointment is in `clients`.
    public static func involves(_ f: AppointmentFacts, anyOf clients: Set<String>) -> Bool {
        if let c = f.intakeqClientId, clients.contains(c) { return true }
        return f.additionalClientIds.contains { clients.contains($0) }
    }

    /// In-roster patients of an appointment, the primary first, each patient once. `lookup` maps
    /// an IntakeQ client id to its roster patient and organization, whatever holds the roster.
    public static func members(of f: AppointmentFacts,
                               lookup: (String) throws -> (patient: String, org: String)?) rethrows -> [Member] {
        try members(primary: f.intakeqClientId, additional: f.additionalClientIds, lookup: lookup)
    }

    /// The same from the client ids alone: the primary (`ClientId`, if any) and the additional ones.
    public static func members(primary: String?, additional: [String],
                               lookup: (String) throws -> (patient: String, org: String)?) rethrows -> [Member] {
        var out: [Member] = []
        var seen = Set<String>()
        for (i, client) in ([primary] + additional.map(Optional.some)).enumerated() {
            guard let client, let p = try lookup(client), seen.insert(p.patient).inserted else { continue }
            out.append(Member(patientId: p.patient, organizationId: p.org, role: i == 0 ? "primary" : "additional"))
        }
        return out
    }
}
