import EventLog
import GRDB
import Foundation
import TestSupport
import Ledger
@testable import Projections
import Testing

/// The evidence of acknowledged heads against a log spread over several segments.
@Suite struct TrustTests {
    func store(segmentBytes: Int) throws -> (TempStore, [HeadEvidence]) {
        let tmp = try TempStore()
        let clock = ManualClock(goldenBase)
        let writer = try LedgerWriter(store: tmp.store, options: LogOptions(segmentBytes: segmentBytes, fsync: false),
                                      clock: { clock.read() })
        for i in 0..<30 {
            try writer.append([startedEvent("run-\(i)", type: "webhook", by: "test")])
            clock.millis += 1000
        }
        writer.close()
        let recorded = try #require(try Trust.recordedHead(tmp.store))
        return (tmp, [recorded])
    }

    @Test func theRecordedHeadIsTheLogsHead() throws {
        let (tmp, evidence) = try store(segmentBytes: 1500)
        #expect(evidence[0].head == (try LedgerReader(store: tmp.store).head()))
        #expect(Trust.findLoss(tmp.store, evidence: evidence) == nil)
    }

    /// A segment in the middle or the first one deleted: the log cannot be read to its end;
    /// the last one deleted: it ends early. Each is a loss naming the acknowledged head.
    @Test(arguments: ["first", "middle", "last", "all"])
    func deletedSegmentsAreALoss(which: String) throws {
        let (tmp, evidence) = try store(segmentBytes: 1500)
        let segments = try FileManager.default.contentsOfDirectory(atPath: tmp.store.logPath).filter { $0.hasSuffix(".seg") }.sorted()
        #expect(segments.count >= 3)
        let doomed: [String] = switch which {
        case "first": [segments[0]]
        case "middle": [segments[segments.count / 2]]
        case "last": [segments[segments.count - 1]]
        default: segments
        }
        for s in doomed { try FileManager.default.removeItem(atPath: tmp.store.logPath + "/" + s) }
        let loss = try #require(Trust.findLoss(tmp.store, evidence: evidence))
        #expect(loss.message.contains("seq \(evidence[0].head.seq) was acknowledged (head \(evidence[0].head), recorded in state/head)"), "\(loss.message)")
        if which == "last" || which == "all" {
            #expect(loss.damage == nil && loss.logHead.seq < evidence[0].head.seq)
            #expect(loss.message.contains("the log ends at seq \(loss.logHead.seq) but"))
            #expect(loss.message.contains("repair --accept-loss"), "\(loss.message)")
        } else {
            // Damage inside the log is not what `repair` alone records: the advice is a backup,
            // and without one the cut (`--cut-damaged`), never `repair --accept-loss` alone.
            #expect(loss.damage != nil, "\(loss.message)")
            #expect(loss.message.contains("Restore the damaged or missing segment from a backup")
                    && loss.message.contains("`syncledger repair --accept-loss REASON --cut-damaged`")
                    && !loss.message.contains(Trust.repairHint), "\(loss.message)")
        }
        #expect(throws: (any Error).self) { _ = try LedgerWriter(store: tmp.store, options: LogOptions(fsync: false)) }
    }
}

/// SIGINT/SIGTERM during a rebuild (the CLI's `shouldStop`), and a rebuild killed outright.
@Suite struct ShadowLeftoverTests {
    func shadowTables(_ views: ProjectionStore) throws -> [String] {
        try views.readSync { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%\\_\\_shadow' ESCAPE '\\'") }
    }

    /// The golden log's store with its views caught up, and what they hold.
    func goldenViews() throws -> (TempStore, LedgerReader, ProjectionStore, Snapshot) {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(reader)
        return (tmp, reader, views, try snapshot(views))
    }

    @Test func aStoppedRebuildDropsItsShadowTablesAndKeepsTheLiveViews() throws {
        let (tmp, reader, views, before) = try goldenViews()
        _ = tmp
        views.eventsPerTransaction = 2
        let calls = Locked(0)
        views.shouldStop = { calls.withLock { $0 += 1; return $0 } >= 3 }
        #expect(throws: FoldInterrupted.self) { try views.rebuild(names: [], reader) }
        #expect(try shadowTables(views).isEmpty)
        #expect(try snapshot(views) == before)
    }

    /// SQLite reports an interrupt that lands in the schema check after a rename (the swap) as
    /// `SQLITE_ERROR` "…: interrupted": a stopped rebuild, not a failure (hostile test: a SIGINT
    /// there exited 1 with the raw error and left the shadow tables).
    @Test func anInterruptAfterARenameIsAnInterruption() {
        #expect(ProjectionStore.isInterruption(DatabaseError(resultCode: .SQLITE_INTERRUPT)))
        #expect(ProjectionStore.isInterruption(DatabaseError(resultCode: .SQLITE_ERROR, message: "error in table sync_logs after rename: interrupted")))
        #expect(!ProjectionStore.isInterruption(DatabaseError(resultCode: .SQLITE_ERROR, message: "no such table: sync_logs")))
        #expect(!ProjectionStore.isInterruption(DatabaseError(resultCode: .SQLITE_FULL)))
        #expect(!ProjectionStore.isInterruption(FoldInterrupted()))
    }

    /// A signal that comes while the rebuild runs one statement (an index of the shadow tables
    /// being built, the swap's renames: seconds each at millions of events) interrupts it, as
    /// the CLI does on SIGINT (`interrupt()`): that transaction rolls back, the shadow tables are
    /// dropped, and the live views are as before.
    @Test(arguments: [
        ("CREATE INDEX", nil),  // the shadow tables created
        ("CREATE INDEX", "DROP INDEX"),  // their indexes built after the fold (dropped before it)
        ("ALTER TABLE", nil),  // the swap
    ] as [(String, String?)])
    func aRebuildInterruptedMidStatementKeepsTheLiveViews(_ statement: String, after: String?) throws {
        let (tmp, reader, views, before) = try goldenViews()
        _ = tmp
        let stop = Locked(false)
        let fired = Locked(false)
        // The signal arrives as the statement starts: SQLite's trace callback runs inside it.
        func interruptAt(_ statement: String, after: String?) {
            let armed = Locked(after == nil)
            fired.withLock { $0 = false }
            views.pool.writeWithoutTransaction { db in
                db.trace(options: .statement) { event in
                    guard case .statement(let s) = event else { return }
                    if let after, s.sql.hasPrefix(after) { armed.withLock { $0 = true } }
                    guard armed.withLock({ $0 }), s.sql.hasPrefix(statement),
                          fired.withLock({ let first = !$0; $0 = true; return first }) else { return }
                    stop.withLock { $0 = true }
                    views.interrupt()
                }
            }
        }
        // Without `shouldStop`, the interrupted statement's own error comes out: the statement
        // really stopped (a no-op `interrupt()` would let this rebuild finish).
        interruptAt(statement, after: after)
        #expect { try views.rebuild(names: [], reader) } throws: { ($0 as? DatabaseError)?.resultCode == .SQLITE_INTERRUPT }
        #expect(fired.withLock { $0 }, "no \(statement) statement ran")
        #expect(try snapshot(views) == before)
        // With it, as the CLI runs: the rebuild stops cleanly.
        stop.withLock { $0 = false }
        views.shouldStop = { stop.withLock { $0 } }
        interruptAt(statement, after: after)
        #expect(throws: FoldInterrupted.self) { try views.rebuild(names: [], reader) }
        #expect(fired.withLock { $0 }, "no \(statement) statement ran")
        #expect(try shadowTables(views).isEmpty)
        #expect(try snapshot(views) == before)
        // The views stay usable: the next rebuild completes.
        views.shouldStop = nil
        views.pool.writeWithoutTransaction { $0.trace(options: .statement, nil) }
        _ = try views.rebuild(names: [], reader)
        #expect(try snapshot(views) == before)
    }

    /// A rebuild's chunks checkpoint rarely (nothing a reader sees depends on them); the swap
    /// and everything after checkpoint as often as before, also after a stopped rebuild.
    @Test func aRebuildCheckpointsRarelyOnlyWhileItFillsShadowTables() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        func settings() throws -> Int {
            try views.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") ?? -1 }
        }
        let before = try settings()
        #expect(before == 1000)
        views.eventsPerTransaction = 2
        let during = Locked<[Int]>([])
        _ = try views.rebuild(names: [], reader) { _ in
            let now = (try? settings()) ?? -1
            during.withLock { $0.append(now) }
        }
        let seen = during.withLock { $0 }
        #expect(seen.count > 2)
        // 256 MiB of WAL, in the 16 KiB pages of a new views file.
        #expect(try views.pool.read { try Int.fetchOne($0, sql: "PRAGMA page_size") } == ProjectionStore.pageSize)
        #expect(seen.allSatisfy { $0 == ProjectionStore.rebuildCheckpointBytes / ProjectionStore.pageSize })
        #expect(try settings() == before)
        // The WAL the rebuild grew is cut back when SQLite next restarts it.
        #expect(try views.pool.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA journal_size_limit") } == 64 << 20)

        let calls = Locked(0)
        views.shouldStop = { calls.withLock { $0 += 1; return $0 } >= 3 }
        #expect(throws: FoldInterrupted.self) { try views.rebuild(names: [], reader) }
        #expect(try settings() == before)
    }

    /// A views file made before stop 40 has 4 KiB pages: it keeps them (SQLite cannot change a
    /// WAL file's page size in place), rebuilds into them, and a rebuild checkpoints after the
    /// same 256 MiB of WAL as in a new file's 16 KiB pages.
    @Test func anOlderViewsFileKeepsItsPageSize() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let path = tmp.store.projectionsPath
        let old = try DatabaseQueue(path: path)
        try old.writeWithoutTransaction { db in
            // As every views file begins: with its checkpoints' table (a file without it is
            // another program's, and refused).
            try db.execute(sql: """
                PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;
                CREATE TABLE projection_state (name TEXT PRIMARY KEY, schema_version INTEGER NOT NULL, last_seq INTEGER NOT NULL,
                  last_hash TEXT NOT NULL, updated_at TEXT NOT NULL)
                """)
        }
        try old.close()
        let views = try ProjectionStore(store: tmp.store)
        views.eventsPerTransaction = 2
        let during = Locked<[Int]>([])
        let report = try views.rebuild(names: [], try LedgerReader(store: tmp.store)) { _ in
            let now = (try? views.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") }) ?? nil
            during.withLock { $0.append(now ?? -1) }
        }
        #expect(report.quarantined.isEmpty)
        #expect(try views.pool.read { try Int.fetchOne($0, sql: "PRAGMA page_size") } == 4096)
        let seen = during.withLock { $0 }
        #expect(!seen.isEmpty && seen.allSatisfy { $0 == 65_536 })
        #expect(try views.pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM appointments") } ?? 0 > 0)
    }

    /// Shadow tables left by a rebuild that was killed (SIGKILL, power cut) are dropped by the
    /// next open of the views: they never pile up (they can double the file).
    @Test func leftoverShadowTablesAreDroppedOnOpen() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(try LedgerReader(store: tmp.store))
        try views.pool.write { db in
            for p in allProjections { try p.create(db, .shadow) }
        }
        #expect(try shadowTables(views).count >= allProjections.count)
        let reopened = try ProjectionStore(store: tmp.store)
        #expect(try shadowTables(reopened).isEmpty)
    }
}

