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
                // Rows by their whole key, values whole: compared as stored, shown cut short. The
                // rendered (cut) values were compared, so an edit past a text's 120th character
                // went unseen, and keys of personal data, shown as "(personal)", made every row of
                // such a table one (hostile test: the roster and the client map edited by hand).
                func load(_ store: ProjectionStore) throws -> [[DatabaseValue]: (shown: String, values: [String: DatabaseValue])] {
                    try store.pool.read { db in
                        var rows: [[DatabaseValue]: (shown: String, values: [String: DatabaseValue])] = [:]
                        for row in try Row.fetchAll(db, sql: sql) {
                            var values: [String: DatabaseValue] = [:]
                            for c in columns { values[c] = row[c] as DatabaseValue }
                            // A key of personal data (a table keyed by all its columns) is not spelled out either.
                            let shown = keyColumns.map { c in
                                ViewDifference.isPersonal(table: table, column: c) ? "\(c)=(personal)" : "\(c)=\(render(values[c] ?? .null))"
                            }.joined(separator: ", ")
                            rows[keyColumns.map { values[$0] ?? .null }] = (shown, values)
                        }
                        return rows
                    }
                }
                let live = try load(self)
                let log = try load(folded)
                // In the order shown, ties (keys of personal data) by the whole key: the same
                // first differences on every run. Each key's text is made once (cold review).
                let keys = Set(live.keys).union(log.keys).map { k in
                    (key: k, shown: (live[k] ?? log[k])!.shown, whole: k.map(\.description).joined(separator: "\u{1F}"))
                }.sorted { ($0.shown, $0.whole) < ($1.shown, $1.whole) }.map(\.key)
                for key in keys {
                    switch (live[key], log[key]) {
                    case let (l?, f?):
                        for c in columns where l.values[c] != f.values[c] {
                            let personal = ViewDifference.isPersonal(table: table, column: c)
                            note(ViewDifference(view: p.name, table: table, key: l.shown, column: c,
                                                live: personal ? nil : render(l.values[c] ?? .null),
                                                log: personal ? nil : render(f.values[c] ?? .null)))
                        }
                    case let (l?, nil):
                        note(ViewDifference(view: p.name, table: table, key: l.shown, column: nil, live: "present", log: "absent"))
                    case let (nil, f?):
                        note(ViewDifference(view: p.name, table: table, key: f.shown, column: nil, live: "absent", log: "present"))
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
