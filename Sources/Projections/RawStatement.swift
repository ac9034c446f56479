import GRDB
import GRDBSQLite

/// One of GRDB's cached statements, bound and stepped through SQLite's C API. The chunked fold
/// writes hundreds of thousands of rows per rebuild; GRDB's `StatementArguments` boxes every
/// value into a `DatabaseValue` array (about half the cost of writing a row), these calls bind
/// the Swift values as they are. Values are bound exactly as GRDB binds them (text as a C string,
/// `Bool` as the integers 0 and 1, nil as NULL), so the rows are the same.
///
/// No project code registers GRDB transaction observers on the views database; statements run
/// here bypass GRDB's per-statement observer bookkeeping.
struct RawStatement {
    let statement: Statement
    let handle: OpaquePointer

    init(_ db: Database, _ sql: String) throws {
        statement = try db.cachedStatement(sql: sql)
        handle = statement.sqliteStatement
        sqlite3_reset(handle)
    }

    /// As GRDB binds a string: a C string (up to a NUL, if the string holds one), copied by SQLite.
    /// A native Swift string is already NUL-terminated in memory, so nothing is copied here.
    func bind(_ i: Int32, _ value: String) {
        _ = value.withCString { sqlite3_bind_text(handle, i, $0, -1, rawTransient) }
    }

    func bind(_ i: Int32, _ value: String?) {
        if let value { bind(i, value) } else { sqlite3_bind_null(handle, i) }
    }

    func bind(_ i: Int32, _ value: Int64) { sqlite3_bind_int64(handle, i, value) }
    func bind(_ i: Int32, _ value: Int) { sqlite3_bind_int64(handle, i, Int64(value)) }
    func bind(_ i: Int32, _ value: Bool) { sqlite3_bind_int64(handle, i, value ? 1 : 0) }

    func bind(_ i: Int32, _ value: Int64?) {
        if let value { sqlite3_bind_int64(handle, i, value) } else { sqlite3_bind_null(handle, i) }
    }

    func bind(_ i: Int32, _ value: Int?) {
        if let value { sqlite3_bind_int64(handle, i, Int64(value)) } else { sqlite3_bind_null(handle, i) }
    }

    /// Runs a statement that returns no rows, then resets it.
    func run() throws {
        let rc = sqlite3_step(handle)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw failure(rc) }
        sqlite3_reset(handle)
    }

    /// Runs a query and reads its first row with `read` (nil when there is none), then resets it.
    func first<T>(_ read: (RawStatement) -> T) throws -> T? {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_DONE {
            sqlite3_reset(handle)
            return nil
        }
        guard rc == SQLITE_ROW else { throw failure(rc) }
        let value = read(self)
        sqlite3_reset(handle)
        return value
    }

    func text(_ column: Int32) -> String {
        guard let p = sqlite3_column_text(handle, column) else { return "" }
        return String(decoding: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(handle, column))), as: UTF8.self)
    }

    func int(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    private func failure(_ rc: Int32) -> DatabaseError {
        let message = String(cString: sqlite3_errmsg(sqlite3_db_handle(handle)))
        sqlite3_reset(handle)
        return DatabaseError(resultCode: ResultCode(rawValue: rc), message: message, sql: statement.sql)
    }
}

/// SQLite copies the bound bytes (`SQLITE_TRANSIENT`).
private let rawTransient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)
