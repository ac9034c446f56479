import Foundation
import GRDB
@testable import Projections
import TestSupport
import Testing

/// `RebuildWriteback`, a rebuild's helper thread: it syncs the WAL in the background and, asked,
/// copies the WAL into the database file through a connection of its own (a passive checkpoint).
@Suite struct RebuildWritebackTests {
    /// A views-like database whose last `rows` rows are only in the WAL (no checkpoint yet).
    static func databaseWithRowsInTheWAL(_ path: String, rows: Int) throws -> DatabasePool {
        let pool = try DatabasePool(path: path)
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
        try pool.write { db in
            try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            for i in 0..<rows { try db.execute(sql: "INSERT INTO t (body) VALUES (?)", arguments: [String(repeating: "x", count: 200) + "\(i)"]) }
        }
        return pool
    }

    /// The rows of `t` in the database file alone, read from a copy made without its WAL (nil:
    /// the file does not have the table yet).
    static func rowsInTheFileAlone(_ path: String, _ tmp: TempDir, _ label: String) throws -> Int? {
        let copy = tmp.sub("file-only-\(label).sqlite")
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        let queue = try DatabaseQueue(path: copy)
        defer { try? queue.close() }
        return try queue.read { db in
            try db.tableExists("t") ? try Int.fetchOne(db, sql: "SELECT count(*) FROM t") : nil
        }
    }

    static func waitFor(_ seconds: Double, _ done: () -> Bool) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        while !done() {
            if Date() > deadline { return false }
            usleep(10_000)
        }
        return true
    }

    @Test func askedToCheckpointItCopiesTheWALIntoTheFileWhileTheWriterGoesOn() throws {
        let tmp = TempDir("writeback-ckpt")
        defer { tmp.remove() }
        let path = tmp.sub("views.sqlite")
        let pool = try Self.databaseWithRowsInTheWAL(path, rows: 3_000)
        // The control: the rows are in the WAL, not in the file.
        #expect(try Self.rowsInTheFileAlone(path, tmp, "before") == nil)

        let helper = RebuildWriteback(path: path)
        helper.checkpointSoon()
        // The writer is not blocked meanwhile.
        try pool.write { db in try db.execute(sql: "INSERT INTO t (body) VALUES ('during')") }
        #expect(Self.waitFor(20) { helper.summarySoFar.checkpointedFrames > 0 }, "no checkpoint within 20 s")
        let summary = helper.stop()
        #expect(summary.checkpointedFrames > 0 && summary.checkpointSeconds > 0, "\(summary)")
        let inFile = try #require(try Self.rowsInTheFileAlone(path, tmp, "after"), "the file has no table t after the checkpoint")
        #expect(inFile >= 3_000, "the file alone has \(inFile) of the 3,000 rows")
        // Every row is still there through SQLite, the one written during the checkpoint too.
        #expect(try pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 3_001)
        try pool.close()
    }

    @Test func itSyncsTheWALInTheBackgroundAndStopsPromptly() throws {
        let tmp = TempDir("writeback-sync")
        defer { tmp.remove() }
        let path = tmp.sub("views.sqlite")
        let pool = try Self.databaseWithRowsInTheWAL(path, rows: 100)
        let helper = RebuildWriteback(path: path)
        #expect(Self.waitFor(20) { helper.summarySoFar.walSyncs >= 2 }, "the WAL was not synced twice within 20 s")
        let t0 = Date()
        let summary = helper.stop()
        #expect(Date().timeIntervalSince(t0) < 5, "stop took \(Date().timeIntervalSince(t0)) s")
        #expect(summary.walSyncs >= 2 && summary.checkpointedFrames == 0, "\(summary)")
        try pool.close()
    }

    /// No database (or no WAL) at the path: nothing is synced, nothing is created.
    @Test func aMissingDatabaseIsNeitherSyncedNorCreated() throws {
        let tmp = TempDir("writeback-missing")
        defer { tmp.remove() }
        let path = tmp.sub("absent.sqlite")
        let helper = RebuildWriteback(path: path)
        helper.checkpointSoon()
        usleep(300_000)
        let summary = helper.stop()
        #expect(summary.walSyncs == 0 && summary.checkpointedFrames == 0, "\(summary)")
        for suffix in ["", "-wal", "-shm"] {
            #expect(!FileManager.default.fileExists(atPath: path + suffix), "\(path + suffix) was created")
        }
    }
}
