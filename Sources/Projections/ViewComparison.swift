import Foundation
import GRDB
import Ledger

/// One cell (or row) where the live views disagree with a fold of the log.
public struct ViewDifference: Sendable, CustomStringConvertible {
    public var view: String
    public var table: String
    /// The row's key, `column=value` joined by ", ".
    public var key: String
    /// The column that differs; nil when the whole row is missing on one side.
    public var column: String?
    /// The two values as text; nil for a column of personal data (`isPersonal`), whose values
    /// are never shown: this text is recorded in `state/`, and from there reaches `status`,
    /// the read commands' warnings, the server's log and alerts.
    public var live: String?
    public var log: String?

    public var description: String {
        let what = column.map { "column \($0)" } ?? "row"
        guard let live, let log else {
            return "view \(view) (table \(table)), \(key): \(what): live and log differ (personal data: the values are not shown)"
        }
        return "view \(view) (table \(table)), \(key): \(what): live \(live) vs log \(log)"
    }

    /// The views' columns that hold a patient's personal data, as `table.column`: a name, the
    /// IntakeQ client ids (sealed in the log as personal), the roster (names, emails, phones),
    /// and the link a patient joins a meeting by (it may carry the meeting's password).
    public static let personalColumns: Set<String> = [
        "appointments.client_name", "appointments.intakeq_client_id", "appointments.meeting_url",
        "appointments_objects.client_ids", "appointments_roster.roster", "appointments_roster_clients.intakeq_client_id",
        "appointment_meeting_urls.meeting_url",
    ]

    /// True when `column` of `table` holds personal data.
    public static func isPersonal(table: String, column: String) -> Bool {
        personalColumns.contains(table + "." + column)
    }
}

extension ProjectionStore {
    /// Compares every table of every projection, row by row, with `folded` (the log folded into
    /// scratch views through the same seq). Returns the first `limit` differences and how many
    /// there are in all.
    public func differences(from folded: ProjectionStore, limit: Int = 10) throws -> (first: [ViewDifference], total: Int) {
        var first: [ViewDifference] = []
        var total = 0
        func note(_ d: ViewDifference) {
            total += 1
            if first.count < limit { first.append(d) }
        }
        for p in projections {
            for table in p.tables {
                let (columns, keyColumns) = try pool.read { db -> ([String], [String]) in
                    let info = try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))")
                    let columns = info.map { $0["name"] as String }
                    let keyed = info.filter { ($0["pk"] as Int) > 0 }.sorted { ($0["pk"] as Int) < ($1["pk"] as Int) }.map { $0["name"] as String }
                    return (columns, keyed.isEmpty ? columns : keyed)
                }
                let order = keyColumns.map { "\"\($0)\"" }.joined(separator: ", ")
                let sql = "SELECT * FROM \(table) ORDER BY \(order)"
                func load(_ store: ProjectionStore) throws -> [String: [String: String]] {
                    try store.pool.read { db in
                        var rows: [String: [String: String]] = [:]
                        for row in try Row.fetchAll(db, sql: sql) {
                            var values: [String: String] = [:]
                            for c in columns { values[c] = render(row[c] as DatabaseValue) }
                            // A key of personal data (a table keyed by all its columns) is not spelled out either.
                            rows[keyColumns.map { c in
                                ViewDifference.isPersonal(table: table, column: c) ? "\(c)=(personal)" : "\(c)=\(values[c] ?? "NULL")"
                            }.joined(separator: ", ")] = values
                        }
                        return rows
                    }
                }
                let live = try load(self)
                let log = try load(folded)
                for key in Set(live.keys).union(log.keys).sorted() {
                    switch (live[key], log[key]) {
                    case let (l?, f?):
                        for c in columns where l[c] != f[c] {
                            let personal = ViewDifference.isPersonal(table: table, column: c)
                            note(ViewDifference(view: p.name, table: table, key: key, column: c,
                                                live: personal ? nil : l[c] ?? "NULL", log: personal ? nil : f[c] ?? "NULL"))
                        }
                    case (_?, nil):
                        note(ViewDifference(view: p.name, table: table, key: key, column: nil, live: "present", log: "absent"))
                    case (nil, _?):
                        note(ViewDifference(view: p.name, table: table, key: key, column: nil, live: "absent", log: "present"))
                    default: break
                    }
                }
            }
        }
        return (first, total)
    }
}

private func render(_ value: DatabaseValue) -> String {
    switch value.storage {
    case .null: return "NULL"
    case .int64(let i): return String(i)
    case .double(let d): return String(d)
    case .string(let s): return "'" + (s.count > 120 ? s.prefix(119) + "…" : s) + "'"
    case .blob(let b): return "blob of \(b.count) bytes"
    }
}
