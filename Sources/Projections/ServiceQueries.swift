import Foundation
import GRDB

/// Reads the long-running server (and the sync's webhook accounting) needs besides `Views`.
extension ProjectionStore {
    /// Whether the views hold at least one run of this sync type.
    public func hasRun(ofType type: String) throws -> Bool {
        try readSync { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM sync_logs WHERE sync_type = ?)", arguments: [type]) ?? false
        }
    }

    /// The organizations an appointment belongs to (through its roster patients); empty when
    /// the appointment is unknown.
    public func organizations(ofAppointment id: String) throws -> Set<String> {
        try readSync { db in
            Set(try String.fetchAll(db, sql: "SELECT DISTINCT organization_id FROM appointment_patients WHERE appointment_id = ? AND organization_id IS NOT NULL", arguments: [id]))
        }
    }

    /// The appointments of any of these organizations (`primaryOnly`: whose primary client,
    /// IntakeQ's `ClientId`, is a patient of one of them).
    public func appointmentIds(inOrganizations orgs: Set<String>, primaryOnly: Bool = false) throws -> Set<String> {
        guard !orgs.isEmpty else { return [] }
        return try readSync { db in
            let marks = Array(repeating: "?", count: orgs.count).joined(separator: ", ")
            let role = primaryOnly ? " AND role = 'primary'" : ""
            return Set(try String.fetchAll(db, sql: "SELECT DISTINCT appointment_id FROM appointment_patients WHERE organization_id IN (\(marks))\(role)", arguments: StatementArguments(Array(orgs))))
        }
    }
}
