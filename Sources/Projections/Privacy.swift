import GRDB
import Ledger

extension ProjectionStore {
    /// The patient ids of the roster the views were last folded with.
    public func rosterPatientIds() throws -> Set<String> {
        try pool.read { db in Set(try String.fetchAll(db, sql: "SELECT patient_id FROM appointments_roster_clients")) }
    }
}
