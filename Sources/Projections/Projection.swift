import Domain
import Foundation
import GRDB
import JSONCore
import Ledger

/// The table names a projection writes to: the live ones, or the shadow copies a rebuild
/// fills while the live ones keep serving.
public struct TableSet: Sendable {
    public let suffix: String
    public static let live = TableSet(suffix: "")
    public static let shadow = TableSet(suffix: "__shadow")
    public func callAsFunction(_ name: String) -> String { name + suffix }
}

/// A projection folds events into its own tables. Each one has a name, a schema version and
/// a checkpoint; it can be rebuilt alone.
public protocol Projection: Sendable {
    /// The name used by `rebuild --projection` and in `projection_state`.
    var name: String { get }
    /// Bump when the tables or the fold change: stored views of another version are rebuilt.
    var schemaVersion: Int { get }
    /// Live table names, in creation order.
    var tables: [String] { get }
    /// Creates the tables (and indexes) under these names.
    func create(_ db: Database, _ t: TableSet) throws
    /// Applies one event. Throws `QuarantineError` for an event it cannot use (bad payload);
    /// that event is skipped and recorded. Any other error aborts the transaction.
    func apply(_ event: EventEnvelope, _ db: Database, _ t: TableSet) throws
    /// False for an event `apply` certainly ignores: the chunked fold then need not keep it
    /// for the writer. True (the default) when unsure.
    func reads(_ event: EventEnvelope) -> Bool
}

extension Projection {
    public func reads(_ event: EventEnvelope) -> Bool { true }
}

/// An event a projection cannot apply: it is skipped into the quarantine table.
public struct QuarantineError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

func indexName(_ table: String) -> String {
    // Index names are global in SQLite and survive a table rename, so each generation of
    // a table gets fresh ones; the old ones go with the old table.
    "ix_\(table)_" + UUID().uuidString.prefix(8).lowercased()
}

/// A trigger's name: global like an index's, and dropped with its table likewise.
func triggerName(_ table: String) -> String {
    "tr_\(table)_" + UUID().uuidString.prefix(8).lowercased()
}

extension EventEnvelope {
    /// Decodes `data` for a projection; a bad payload becomes a quarantine entry.
    func projectionData<T: Decodable>(_ type: T.Type) throws -> T {
        do { return try decodeData(type) } catch { throw QuarantineError("\(error)") }
    }
    func projectionValue() throws -> JSONValue {
        do { return try dataValue() } catch { throw QuarantineError("\(error)") }
    }

    /// The appointment object of a discovered/changed event and its view facts, computed once
    /// per event however many projections fold it.
    func appointmentFacts() throws -> (object: JSONValue, facts: AppointmentFacts) {
        try memoized("projections.appointmentFacts") {
            let data = try projectionValue()
            guard let object = data["object"], let facts = try? AppointmentFacts(object: object) else {
                throw QuarantineError("\(type) at seq \(seq) has no usable appointment object (missing Id)")
            }
            return (object, facts)
        }
    }
}

/// All projections this version of SyncLedger maintains, in apply order.
public let allProjections: [any Projection] = [
    AppointmentsProjection(), MeetingURLsProjection(), LocationsProjection(),
    SyncLogsProjection(), StreamIndexProjection(),
]

public func projection(named name: String) -> (any Projection)? {
    allProjections.first { $0.name == name }
}

extension Database {
    /// Runs one statement through GRDB's statement cache: the fold runs the same few
    /// statements millions of times during a rebuild, and preparing them is not free.
    func run(_ sql: String, _ arguments: StatementArguments = []) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}
