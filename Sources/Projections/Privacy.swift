import GRDB
import Ledger

extension ProjectionStore {
    /// The patient ids of the roster the views were last folded with.
    public func rosterPatientIds() throws -> Set<String> {
        try pool.read { db in Set(try String.fetchAll(db, sql: "SELECT patient_id FROM appointments_roster_clients")) }
    }
}

extension ProjectionStore {
    /// Reads the last recorded roster through `reader`, opening its parts: each roster patient's
    /// part is sealed under their key, so a key store that is not this log's (another store's
    /// `keys/`) throws here, naming the patient whose part does not open. Writers call it before
    /// they seal or record anything. Nothing to check before the first roster.
    public func checkKeysOpenTheLastRoster(_ reader: LedgerReader) throws {
        if let last = try streamSeqs(Streams.roster).last { _ = try reader.events(at: [last]) }
    }

    /// Every recorded roster (through seq `last`: a log that lost its end still holds the ones
    /// before it), oldest first, opened through `reader` (a forgotten patient's name and email
    /// are gone from them): the last one checks the key store as
    /// `checkKeysOpenTheLastRoster` does, and a roster that cannot be read throws.
    public func recordedRosters(_ reader: LedgerReader, through last: UInt64 = .max) throws -> [RosterObserved] {
        try reader.events(at: try streamSeqs(Streams.roster).filter { $0 <= last }).map { try $0.decodeData(RosterObserved.self) }
    }
}
