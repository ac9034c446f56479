import Foundation
import GRDB
@testable import Projections
import TestSupport
import Testing

/// `RebuildWriteback`, a rebuild's helper thread: it syncs the WAL in the background and, asked,
/// copies the WAL into the database file through a connection of its own (a passive checkpoint).
@Suite struct RebuildWritebackTests {
    /// A views-like database whose `rows` rows are only in the WAL (no checkpoint yet).
    static func databaseWithRowsInTheWAL(_ path: String, rows: Int) throws -> DatabasePool {
        let pool = try DatabasePool(path: path)
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
        try pool.write { db in
            try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            for i in 0..<rows { try db.execute(sql: "INSERT INTO t (body) VALUES (?)", arguments: [String(repeating: "x", count: 200) + "\(i)"]) }
        }
        return pool
    }

    /// A temporary directory holding `views.sqlite` with `rows` rows only in its WAL.
    static func scratchDatabase(_ label: String, rows: Int) throws -> (TempDir, String, DatabasePool) {
        let tmp = TempDir(label)
        let path = tmp.sub("views.sqlite")
        return (tmp, path, try databaseWithRowsInTheWAL(path, rows: rows))
    }

    /// The rows of `t` in the database file alone, read from a copy made without its WAL (nil:
    /// the file does not have the table yet). `cp` copies it in a child process: opening and
    /// closing a descriptor of the file here would drop this process's SQLite locks on it.
    static func rowsInTheFileAlone(_ path: String, _ tmp: TempDir, _ label: String) throws -> Int? {
        let copy = tmp.sub("file-only-\(label).sqlite")
        let cp = try ProcessRunner.runBlocking("/bin/cp", [path, copy], timeout: 60)
        try #require(cp.status == 0 && !cp.signaled, "cp failed: \(String(decoding: cp.stderr, as: UTF8.self))")
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

    /// The checkpoint copies the committed rows into the file while the writer holds a write
    /// transaction open (it neither waits for the writer nor blocks it).
    @Test func askedToCheckpointItCopiesTheWALIntoTheFileWhileAWriteIsOpen() throws {
        let (tmp, path, pool) = try Self.scratchDatabase("writeback-ckpt", rows: 3_000)
        defer { tmp.remove() }
        // The control: the rows are in the WAL, not in the file.
        #expect(try Self.rowsInTheFileAlone(path, tmp, "before") == nil)

        let helper = RebuildWriteback(path: path)
        var copiedDuringTheWrite = false
        try pool.write { db in
            try db.execute(sql: "INSERT INTO t (body) VALUES ('during')")
            helper.checkpointSoon()
            copiedDuringTheWrite = Self.waitFor(20) { helper.summarySoFar.checkpoints > 0 }
        }
        #expect(copiedDuringTheWrite, "no checkpoint within 20 s while a write transaction was open")
        let summary = helper.stop()
        #expect(summary.checkpoints == 1 && summary.checkpointedFrames > 0 && summary.checkpointedFrames == summary.walFrames,
                "\(summary)")
        #expect(summary.checkpointSeconds > 0, "\(summary)")
        let inFile = try #require(try Self.rowsInTheFileAlone(path, tmp, "after"), "the file has no table t after the checkpoint")
        #expect(inFile == 3_000, "the file alone has \(inFile) of the 3,000 committed rows")
        #expect(try pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM t") } == 3_001)
        try pool.close()
    }

    /// A checkpoint asked for just before `stop()` still runs (the swap would otherwise copy
    /// the same pages), so a small rebuild's request is not lost to a quick index build.
    @Test func stopRunsACheckpointAskedForJustBefore() throws {
        let (tmp, path, pool) = try Self.scratchDatabase("writeback-stop", rows: 500)
        defer { tmp.remove() }
        let helper = RebuildWriteback(path: path)
        helper.checkpointSoon()
        let ran = helper.stop()
        #expect(ran.checkpoints == 1 && ran.checkpointedFrames > 0, "\(ran)")
        #expect(try Self.rowsInTheFileAlone(path, tmp, "stopped") == 500)
        try pool.close()
    }

    @Test func itSyncsTheWALInTheBackgroundAndStopsPromptly() throws {
        let (tmp, path, pool) = try Self.scratchDatabase("writeback-sync", rows: 100)
        defer { tmp.remove() }
        let helper = RebuildWriteback(path: path)
        #expect(Self.waitFor(20) { helper.summarySoFar.walSyncs >= 2 }, "the WAL was not synced twice within 20 s")
        let t0 = Date()
        let summary = helper.stop()
        #expect(Date().timeIntervalSince(t0) < 5, "stop took \(Date().timeIntervalSince(t0)) s")
        #expect(summary.walSyncs >= 2 && summary.checkpoints == 0, "\(summary)")
        try pool.close()
    }

    /// No database at the path: nothing is synced or checkpointed, nothing is created.
    @Test func aMissingDatabaseIsNeitherSyncedNorCreated() throws {
        let tmp = TempDir("writeback-missing")
        defer { tmp.remove() }
        let path = tmp.sub("absent.sqlite")
        let helper = RebuildWriteback(path: path)
        helper.checkpointSoon()
        usleep(300_000)
        let summary = helper.stop()
        #expect(summary == RebuildWriteback.Summary(), "\(summary)")
        for suffix in ["", "-wal", "-shm"] {
            #expect(!FileManager.default.fileExists(atPath: path + suffix), "\(path + suffix) was created")
        }
    }
}
