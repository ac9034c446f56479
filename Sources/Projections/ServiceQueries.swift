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

    /// The appointments of any of these organizations, and of those the ones whose primary
    /// client (IntakeQ's `ClientId`) is a patient of one of them. One read.
    public func appointmentIds(inOrganizations orgs: Set<String>) throws -> (any: Set<String>, primary: Set<String>) {
        guard !orgs.isEmpty else { return ([], []) }
        return try readSync { db in
            let marks = Array(repeating: "?", count: orgs.count).joined(separator: ", ")
            var ids: (any: Set<String>, primary: Set<String>) = ([], [])
            for row in try Row.fetchAll(db, sql: """
                SELECT appointment_id, max(role = 'primary') AS primary_theirs FROM appointment_patients
                WHERE organization_id IN (\(marks)) GROUP BY appointment_id
                """, arguments: StatementArguments(Array(orgs))) {
                let id: String = row["appointment_id"]
                ids.any.insert(id)
                if row["primary_theirs"] as Bool { ids.primary.insert(id) }
            }
            return ids
        }
    }
}
