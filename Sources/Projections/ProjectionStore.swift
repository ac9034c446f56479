import Domain
import EventLog
import Foundation
import GRDB
import GRDBSQLite
import Ledger
import Paths
import Synchronization

/// Progress of a long fold, for a progress bar.
public struct FoldProgress: Sendable {
    public var projection: String
    public var appliedEvents: UInt64
    public var totalEvents: UInt64
}

/// What a catch-up or rebuild did.
public struct FoldReport: Sendable {
    public var applied: UInt64 = 0
    public var rebuilt: [String] = []
    public var notes: [String] = []
    public var quarantined: [QuarantineEntry] = []
}

public struct QuarantineEntry: Sendable, Hashable {
    public var projection: String
    public var seq: UInt64
    public var type: String
    public var error: String
}

/// The SQLite database of views, with each projection's checkpoint (last applied seq and that
/// batch's chain hash) committed in the same transaction as its rows.
public final class ProjectionStore: @unchecked Sendable {
    // @unchecked: every stored property is immutable or synchronised: GRDB's DatabasePool and
    // DatabaseQueue serialise all access themselves, the settings below are an atomic and a
    // mutex, the rebuild lock is a lock box.
    public let pool: any DatabaseWriter
    public let projections: [any Projection]
    /// True when the views are an in-memory copy of `projections.sqlite` (a store this process
    /// must not write): catching up folds into the copy only, and nothing is saved.
    public let inMemory: Bool
    private let transactionSize = Atomic<Int>(50_000)
    private let chunked = Atomic<Bool>(true)
    /// Events applied per transaction while folding (a chunk of the chunked fold); each commit
    /// carries the checkpoint. A pipelined fold (`pipelineMinEvents`) commits every half as many:
    /// up to three chunks are in memory at once there (one written, one waiting, one folded), so
    /// its peak memory stays about the one-thread fold's and a half, plus, in a rebuild, the
    /// appointments held back between chunks (`carriedAppointmentsLimit`).
    public var eventsPerTransaction: Int {
        get { transactionSize.load(ordering: .relaxed) }
        set { transactionSize.store(newValue, ordering: .relaxed) }
    }
    /// True (the default): rebuilds and catch-ups fold each chunk in memory and write each
    /// appointment once per chunk (`ChunkFolder`). False: every event is applied to every view one
    /// by one, the reference the chunked fold is tested against.
    public var chunkedFold: Bool {
        get { chunked.load(ordering: .relaxed) }
        set { chunked.store(newValue, ordering: .relaxed) }
    }
    private let pipelineFrom = Atomic<Int>(20_000)
    /// A chunked fold of at least this many events (and more than one chunk) reads the log on one
    /// thread and folds each chunk on another while the previous one is written (`FoldPipeline`); smaller
    /// ones (a catch-up after a sync) run on the calling thread alone. Tests set 0 to pipeline
    /// every fold of more than one chunk, `Int.max` to pipeline none.
    var pipelineMinEvents: Int {
        get { pipelineFrom.load(ordering: .relaxed) }
        set { pipelineFrom.store(newValue, ordering: .relaxed) }
    }

    private let prepareFrom = Atomic<Int>(FoldPipeline.readAhead / 2)
    /// A pipelined fold's reader works out observations' facts for the fold while at least this
    /// many read batches wait for it (`FoldPipeline`): the fold is then the slower thread. Tests
    /// set 0 to have every observation prepared, `Int.max` for none.
    var prepareWhenQueued: Int {
        get { prepareFrom.load(ordering: .relaxed) }
        set { prepareFrom.store(newValue, ordering: .relaxed) }
    }
    /// `prepareWhenQueued` for a fold of these projections: nil when none of them reads observations' facts.
    func prepareWhenQueued(_ projections: [any Projection]) -> Int? {
        projections.contains(where: Self.readsObservations) ? prepareWhenQueued : nil
    }
    /// The views whose fold works out observations' facts (`ChunkFolder.appointmentFacts`).
    static func readsObservations(_ p: any Projection) -> Bool {
        p is AppointmentsProjection || p is MeetingURLsProjection || p is LocationsProjection
    }
    private let preparedCount = Atomic<Int>(0)
    /// Observations whose facts pipelined folds' readers worked out (for tests).
    var preparedObservations: Int { preparedCount.load(ordering: .relaxed) }

    private let knownBits = Atomic<Int>(0)
    /// The size in bits of a rebuild's record of the appointments it has written
    /// (`KnownAppointments`); 0 (the default): sized from the events to fold. Tests set a tiny
    /// one, which answers yes for nearly every id, so that stored rows are looked up for
    /// appointments that have none.
    var knownAppointmentsBits: Int {
        get { knownBits.load(ordering: .relaxed) }
        set { knownBits.store(newValue, ordering: .relaxed) }
    }

    /// `carriedAppointmentsLimit`'s default.
    public static let defaultCarriedAppointmentsLimit = 4_096
    private let carryLimit = Atomic<Int>(defaultCarriedAppointmentsLimit)
    /// A pipelined rebuild holds back up to this many appointments from one chunk's write to the
    /// next (`CarriedAppointments`): each is written once it goes a chunk untouched, not once per
    /// chunk it appears in. 0 writes every chunk's appointments with the chunk (tests). At 1M
    /// events of the benchmark 4,096 cut the appointment row writes from 322,139 to 258,123 for
    /// ~10 MB, 16,384 to 249,943 for ~20–30 MB.
    public var carriedAppointmentsLimit: Int {
        get { carryLimit.load(ordering: .relaxed) }
        set { carryLimit.store(newValue, ordering: .relaxed) }
    }

    /// Folds run through the pipeline, and pipelined catch-ups that found another process had
    /// moved the checkpoints meanwhile and went on on one thread (for tests).
    let pipelineCounts = Mutex<(folds: Int, restarted: Int)>((0, 0))

    var pipelinedFolds: Int { pipelineCounts.withLock { $0.folds } }
    var restartedCatchUps: Int { pipelineCounts.withLock { $0.restarted } }

    func pipelines(_ events: UInt64, chunk: Int) -> Bool {
        events >= UInt64(max(0, pipelineMinEvents)) && events > UInt64(max(1, chunk))
    }

    private let timings = Mutex<[String: Double]>([:])
    /// Where the last chunked rebuild spent its time, in seconds: `read` (log, decompression,
    /// chain, envelopes, upcasting), `fold` (field scan, opening sealed parts and the in-memory
    /// fold), `write`
    /// (SQLite), and, when the fold was pipelined, `wait` (the writer waiting for the next
    /// folded chunk; `read` and `fold` then ran on their own threads, overlapping `write`).
    /// For `syncledger-bench`'s profile.
    public var lastFoldTimings: [String: Double] { timings.withLock { $0 } }
    private let writebackDone = Mutex<WritebackSummary?>(nil)
    /// What the last rebuild's background helper did (`RebuildWriteback`); nil when none ran.
    public var lastWriteback: WritebackSummary? { writebackDone.withLock { $0 } }
    private let appointmentWrites = Atomic<Int>(0)
    /// Rows of `appointments` the last chunked rebuild wrote (inserted or updated): the rows,
    /// plus one for each time an appointment's row was written again.
    public var lastFoldAppointmentsWritten: Int { appointmentWrites.load(ordering: .relaxed) }
    private let stopCheck = Mutex<(@Sendable () -> Bool)?>(nil)
    private let waitNotice = Mutex<(@Sendable (_ holderPid: String?) -> Void)?>(nil)
    /// Called once when a rebuild or catch-up has to wait for another process's rebuild of
    /// these views (it holds their rebuild lock), with that process's pid when known. The wait
    /// ends when that rebuild does, or when `shouldStop` says so (`FoldInterrupted`, nothing
    /// started).
    public var onWaitingForRebuild: (@Sendable (_ holderPid: String?) -> Void)? {
        get { waitNotice.withLock { $0 } }
        set { waitNotice.withLock { $0 = newValue } }
    }
    /// Polled by a rebuild between transactions: true stops it (`FoldInterrupted`), its shadow
    /// tables dropped and the live views untouched.
    public var shouldStop: (@Sendable () -> Bool)? {
        get { stopCheck.withLock { $0 } }
        set { stopCheck.withLock { $0 = newValue } }
    }

    /// Stops the statement the views' connections are running now (`sqlite3_interrupt`), for a
    /// signal that must not wait for the transaction to end: a rebuild's last steps (building the
    /// shadow tables' indexes, the swap) are single statements that take seconds at millions of
    /// events. The transaction rolls back; a rebuild whose `shouldStop` is then true drops its
    /// shadow tables and throws `FoldInterrupted`, the live views as they were.
    public func interrupt() { pool.interrupt() }
    /// Copies the WAL into the views file, empties it (when no other process is reading the
    /// views at that moment: it does not wait), and closes the views' connections. A large
    /// rebuild's WAL (hundreds of MB) otherwise stayed at its largest after the process
    /// ended, and the next command to open the views read all of it back (287 MB and 0.27 s
    /// at 1M events; BENCHMARKS.md, stop 45).
    /// SQLite deletes the WAL only when the last connection to close may write, and the pool's
    /// readers close last. The store must not be used afterwards.
    public func close() throws {
        if !inMemory {
            pool.writeWithoutTransaction { db in
                sqlite3_busy_timeout(db.sqliteConnection, 0)
                _ = sqlite3_wal_checkpoint_v2(db.sqliteConnection, nil, SQLITE_CHECKPOINT_TRUNCATE, nil, nil)
            }
        }
        do { try pool.close() } catch let error as DatabaseError {
            throw LedgerError("cannot close the views database \(databasePath): \(error)")
        }
    }

    /// The views database's file.
    let databasePath: String
    var rebuildLockPath: String { databasePath + ".rebuild-lock" }
    private let rebuildLock = RebuildLock()

    /// Opens the views database at `path`, creating it when missing. `readOnly`: the file is only
    /// read, through a read-only connection, into an in-memory copy (a missing file gives empty
    /// views); nothing next to it is created or written. A damaged file throws `ViewsDamaged`.
    public init(path: String, projections: [any Projection] = allProjections, readOnly: Bool = false) throws {
        self.projections = projections
        self.databasePath = path
        self.inMemory = readOnly
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.label = "projections"
        // A FIFO or a device in the views' place would hang SQLite's first read (hostile test).
        var st = stat()
        if stat(path, &st) == 0, st.st_mode & S_IFMT != S_IFREG {
            let what = st.st_mode & S_IFMT == S_IFDIR ? "a directory" : st.st_mode & S_IFMT == S_IFIFO ? "a FIFO" : "not a regular file"
            // With what to do (hostile test: every command, `rebuild` too, said only the first part).
            throw LedgerError("cannot open the views database \(path): it is \(what); move it out of the way and "
                              + "`syncledger rebuild` makes the views again from the log")
        }
        do {
            if readOnly {
                pool = try Self.memoryCopy(of: path, configuration: config)
            } else {
                if !FileManager.default.fileExists(atPath: path) {
                    // Owner-only before SQLite creates it; the -wal and -shm files copy this mode.
                    let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
                    if fd >= 0 {
                        // SQLite gives the -wal and -shm files this file's owner.
                        StoreOwnership.adopt(fd: fd, path: path)
                        Glibc.close(fd)
                    }
                }
                // Another program's database in the views' place (a link left pointing at it, a
                // file copied over it) is refused before the pool opens it: opening one writes
                // to it (WAL mode set in its header; GRDB creates and drops a table), and the
                // views' tables would then be written into it (hostile test).
                if Self.hasContent(path), let foreign = try DatabaseQueue(path: path, configuration: Self.readOnlyConfiguration)
                    .read(Self.foreignTables) {
                    throw ForeignViewsFile(path: path, tables: foreign)
                }
                // A new (empty) file gets `pageSize`; SQLite ignores the pragma for a file that has
                // pages already, so an existing views file keeps its own until it is recreated.
                config.prepareDatabase { db in try db.execute(sql: "PRAGMA page_size = \(Self.pageSize)") }
                // The pool opens its reader connections later, by path: one opened after a
                // rebuild replaced the file would read the new, maybe half-built, file while the
                // others read the old one. A long-lived store (the server's) gets `ViewsReplaced`
                // instead, and reopens.
                if let opened = FileIdentity(path: path) {
                    config.prepareDatabase { _ in
                        guard FileIdentity(path: path) == opened else { throw ViewsReplaced(path: path) }
                    }
                }
                pool = try DatabasePool(path: path, configuration: config)
            }
            // Read through a copy, another program's database would read as views that hold
            // nothing: refused too.
            if readOnly, let foreign = try pool.read(Self.foreignTables) {
                throw ForeignViewsFile(path: path, tables: foreign)
            }
            // Written only when missing: a write here waited silently (up to the busy timeout)
            // behind another process's rebuild, before this one could say it waits for it.
            let present = readOnly ? false : try pool.read { db in
                try db.tableExists("projection_state") && db.tableExists("quarantine")
            }
            if !present { try pool.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS projection_state (
                      name TEXT PRIMARY KEY, schema_version INTEGER NOT NULL, last_seq INTEGER NOT NULL,
                      last_hash TEXT NOT NULL, updated_at TEXT NOT NULL);
                    CREATE TABLE IF NOT EXISTS quarantine (
                      projection TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, error TEXT NOT NULL,
                      PRIMARY KEY (projection, seq));
                    """)
            } }
            let checked = projections
            try pool.read { db in try Self.checkMissingCheckpoints(of: checked, db, path: path) }
        } catch let error as DatabaseError where ViewsDamaged.isDamage(error) {
            throw ViewsDamaged(path: path, reason: "\(error)")
        } catch let error as DatabaseError
                    where [.SQLITE_READONLY, .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_AUTH].contains(error.resultCode) && !readOnly {
            throw ViewsNotWritable(path: path, reason: "\(error)")
        } catch let error as DatabaseError where ViewsDamaged.isDiskFull(error) {
            // Said as a full disk by whoever catches it (`ViewsDamaged.diskFullWords`), not as
            // SQLite's "database or disk is full - while executing COMMIT" (hostile test).
            throw error
        } catch let error as DatabaseError where error.resultCode == .SQLITE_IOERR && Self.nearlyFull(directoryOf: path) {
            // The shared-memory file that WAL needs could not be made on a full disk: SQLite
            // says "disk I/O error" (hostile test, 0–64 KiB free); said as the full disk it is.
            throw DatabaseError(resultCode: .SQLITE_FULL, message: "\(error.message ?? "disk I/O error") (the disk is full)")
        } catch let error as DatabaseError {
            throw LedgerError("cannot open the views database \(path): \(error)")
        }
        if !readOnly { try dropLeftoverShadowTables() }
    }

    /// Opens a connection that reads only.
    static var readOnlyConfiguration: Configuration {
        var c = Configuration()
        c.readonly = true
        c.busyMode = .timeout(30)
        return c
    }

    /// True when there is a file with content at `path` (not a missing or empty file, which the
    /// pool makes a new views database of). Looked at with `stat`, never opened here: closing a
    /// descriptor of the file drops every POSIX lock this process holds on it, those of its
    /// SQLite connections included (SQLite defers its own closes for that reason). A server that
    /// ran a sync in-process lost its locks that way; another process's connection then took
    /// itself for the last one and deleted the WAL index under the server.
    static func hasContent(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && st.st_size > 0
    }

    /// The first tables of a database that is not a views database (no `projection_state`,
    /// which every views file has from its first write, and tables or views of another
    /// program's); nil for a views database or an empty one.
    static func foreignTables(_ db: Database) throws -> [String]? {
        guard try !db.tableExists("projection_state") else { return nil }
        let names = try String.fetchAll(db, sql: """
            SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
            ORDER BY name LIMIT 4
            """)
        return names.isEmpty ? nil : names
    }

    /// True when the file system holding `path`'s directory has less than 1 MiB free for this
    /// process (an I/O error there is then most likely the full disk).
    static func nearlyFull(directoryOf path: String) -> Bool {
        var st = statvfs()
        let dir = (path as NSString).deletingLastPathComponent
        guard statvfs(dir.isEmpty ? "." : dir, &st) == 0 else { return false }
        return UInt64(st.f_bavail) * UInt64(st.f_frsize) < 1 << 20
    }

    /// A fresh in-memory database holding a copy of the file at `path` (empty when missing).
    /// SQLite never opens the original: in WAL mode even a read-only connection creates -shm and
    /// -wal files beside it (and root may), so the file (and its -wal) is copied into a private
    /// temporary directory, read from there through a read-only connection, and removed.
    static func memoryCopy(of path: String, configuration: Configuration) throws -> DatabaseQueue {
        let memory = try DatabaseQueue(configuration: configuration)
        guard FileManager.default.fileExists(atPath: path) else { return memory }
        var template = Array((NSTemporaryDirectory() + "/syncledger-views-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw LedgerError("cannot make a temporary directory to read \(path)") }
        let dir = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let copy = dir + "/projections.sqlite"
        do {
            try FileManager.default.copyItem(atPath: path, toPath: copy)
            if FileManager.default.fileExists(atPath: path + "-wal") {
                try FileManager.default.copyItem(atPath: path + "-wal", toPath: copy + "-wal")
            }
        } catch {
            throw LedgerError("cannot read the views database \(path): \(error.localizedDescription)")
        }
        var readOnly = configuration
        readOnly.readonly = true
        let source = try DatabaseQueue(path: copy, configuration: readOnly)
        try source.backup(to: memory)
        try source.close()
        return memory
    }

    /// Shadow tables a rebuild left behind when it was killed: the live tables never depend on
    /// them, so they are dropped (they can double the file's size).
    /// Skipped while another process holds the rebuild lock (its shadow tables are in use).
    func dropLeftoverShadowTables() throws {
        let sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%\\_\\_shadow' ESCAPE '\\'"
        guard try !pool.read({ try String.fetchAll($0, sql: sql) }).isEmpty else { return }
        _ = try rebuildLock.hold(path: rebuildLockPath, wait: false) {
            try writeDroppingTables { db in
                for name in try String.fetchAll(db, sql: sql) { try db.execute(sql: "DROP TABLE IF EXISTS \(name)") }
            }
        }
    }

    /// Runs `body` in a write transaction with SQLite's `secure_delete` at FAST, for the
    /// transactions that drop whole tables (a rebuild's swap, shadow tables left behind).
    /// Debian's SQLite is built with `secure_delete` on: a dropped table's every page was then
    /// overwritten with zeros, and inside a transaction of several statements the pages' old
    /// contents went to a statement journal, a temporary file as large as the tables (~110 MB
    /// at 1M events): with a small temporary directory (`SQLITE_TMPDIR`, `TMPDIR`) the drop
    /// failed with "database or disk is full", and every later command with it; with room, the
    /// swap took ~0.8 s more (hostile test, stop 44). FAST zeroes what a write touches anyway
    /// and leaves freed pages as they are. What those pages hold is the views as they were
    /// before the rebuild, the same kind of data as the live tables; `forget` does not rely on
    /// it (it deletes the whole file).
    func writeDroppingTables<T>(_ body: (Database) throws -> T) throws -> T {
        try pool.writeWithoutTransaction { db in
            let before = try Int.fetchOne(db, sql: "PRAGMA secure_delete") ?? 0
            try db.execute(sql: "PRAGMA secure_delete = FAST")
            defer { try? db.execute(sql: "PRAGMA secure_delete = \(before == 2 ? "FAST" : String(before))") }
            var result: T?
            try db.inTransaction {
                result = try body(db)
                return .commit
            }
            return result!
        }
    }

    public convenience init(store: Store, projections: [any Projection] = allProjections, readOnly: Bool = false) throws {
        try self.init(path: store.projectionsPath, projections: projections, readOnly: readOnly)
    }

    /// Empty views in memory, to fold the log into and compare (`verify --views`).
    public static func scratch(projections: [any Projection] = allProjections) throws -> ProjectionStore {
        try ProjectionStore(path: "/dev/null/no-such-views", projections: projections, readOnly: true)
    }

    struct Checkpoint {
        var schemaVersion: Int
        var seq: UInt64
        var hash: String
    }

    func checkpoint(_ name: String, _ db: Database) throws -> Checkpoint? {
        guard let row = try Row.fetchOne(db, sql: "SELECT schema_version, last_seq, last_hash FROM projection_state WHERE name = ?", arguments: [name])
        else { return nil }
        return Checkpoint(schemaVersion: row["schema_version"], seq: UInt64(row["last_seq"] as Int64), hash: row["last_hash"])
    }

    /// Throws `ViewsDamaged` when a view's tables are there without its checkpoint. No write
    /// leaves that (both are made in one transaction), but a damaged index of projection_state
    /// does: its lookup finds no row rather than failing, and the catch-up then made the view's
    /// tables again, failing with SQLite's "table appointments already exists", which named
    /// neither the cause nor the remedy, on every read command; `rebuild` did not see the damage
    /// and left the index as it was (hostile test: random bytes over the pages after the second).
    static func checkMissingCheckpoints(of projections: [any Projection], _ db: Database, path: String) throws {
        guard try db.tableExists("projection_state") else { return }
        for p in projections {
            guard try Row.fetchOne(db, sql: "SELECT 1 FROM projection_state WHERE name = ?", arguments: [p.name]) == nil,
                  let table = try p.tables.first(where: { try db.tableExists($0) })
            else { continue }
            throw ViewsDamaged(path: path, reason: "projection_state holds no checkpoint of the \(p.name) view, though its table \(table) is there")
        }
    }

    func setCheckpoint(_ p: any Projection, seq: UInt64, hash: String, _ db: Database) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO projection_state (name, schema_version, last_seq, last_hash, updated_at) VALUES (?, ?, ?, ?, ?)",
            arguments: [p.name, p.schemaVersion, Int64(seq), hash, ISOTime.format(millis: ISOTime.nowMillis())])
    }

    /// The last seq every projection has applied (the smallest checkpoint).
    public func appliedSeq() throws -> UInt64 {
        try pool.read { db in
            var low = UInt64.max
            for p in projections { low = min(low, try checkpoint(p.name, db)?.seq ?? 0) }
            return low == .max ? 0 : low
        }
    }

    /// Why a projection must be rebuilt before it can catch up, or nil when it can. A checkpoint
    /// the log no longer holds (beyond its end, or another chain hash there) is never a reason to
    /// rebuild: the views are evidence of acknowledged events, so that is refused as a loss.
    func rebuildReason(_ p: any Projection, _ cp: Checkpoint?, _ reader: LedgerReader, head: LogHead) throws -> String? {
        let log = reader.log
        guard let cp else { return nil }
        if cp.seq > 0 {
            let evidence = HeadEvidence(head: LogHead(parsing: "\(cp.seq):\(cp.hash)") ?? LogHead(seq: cp.seq, hash: LogHead.empty.hash),
                                        source: "the \(p.name) view's checkpoint in projections.sqlite")
            if cp.seq > head.seq {
                throw LedgerError(Trust.Loss(evidence: evidence, logHead: head, differs: false).message)
            }
            guard let batch = try log.batch(containing: cp.seq), batch.lastSeq == cp.seq,
                hexString(batch.chainHash) == cp.hash
            else {
                var loss = Trust.Loss(evidence: evidence, logHead: head, differs: true)
                loss.viewsAreOdd = Trust.writerRecordHolds(reader.store, through: cp.seq)
                throw LedgerError(loss.message)
            }
        }
        if cp.schemaVersion != p.schemaVersion {
            return "view \(p.name) is at schema version \(cp.schemaVersion) and this syncledger writes version \(p.schemaVersion)"
        }
        return nil
    }

    /// Each view's checkpoint in the database at `path` as evidence of an acknowledged head,
    /// read through a read-only connection: nothing is created or written. A missing or
    /// unreadable database gives none (`state/head` is the main evidence).
    /// `readOnly`: the store must not be written; the file is read from a private copy.
    public static func checkpointEvidence(path: String, readOnly: Bool = false) -> [HeadEvidence] {
        // Only a regular file: SQLite's open of a FIFO would block (hostile test).
        var st = stat()
        guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return [] }
        var config = Configuration()
        config.readonly = true
        config.busyMode = .timeout(30)
        let opened: DatabaseQueue? = readOnly ? try? memoryCopy(of: path, configuration: Configuration())
            : try? DatabaseQueue(path: path, configuration: config)
        guard let queue = opened else { return [] }
        return (try? queue.read { db -> [HeadEvidence] in
            guard try db.tableExists("projection_state") else { return [] }
            return try Row.fetchAll(db, sql: "SELECT name, last_seq, last_hash FROM projection_state WHERE last_seq > 0").compactMap { row in
                let name: String = row["name"]
                let seq = UInt64(row["last_seq"] as Int64)
                let hash: String = row["last_hash"]
                guard let head = LogHead(parsing: "\(seq):\(hash)") else { return nil }
                return HeadEvidence(head: head, source: "the \(name) view's checkpoint in projections.sqlite")
            }
        }) ?? []
    }

    /// Brings every projection up to the log's head: rebuilds those whose schema version or
    /// checkpoint no longer matches, then applies the new events, batch by batch.
    @discardableResult
    public func catchUp(_ reader: LedgerReader, progress: ((FoldProgress) -> Void)? = nil) throws -> FoldReport {
        var report = FoldReport()
        let head = try reader.head()
        var stale: [any Projection] = []
        // Every checkpoint is checked against the log before anything is written.
        let checkpoints = try projections.map { p in try pool.read { try checkpoint(p.name, $0) } }
        let reasons = try zip(projections, checkpoints).map { p, cp in try rebuildReason(p, cp, reader, head: head) }
        for (i, p) in projections.enumerated() {
            let cp = checkpoints[i]
            if let why = reasons[i] {
                report.notes.append(why + "; rebuilt it from the log")
                // (A lost log tail throws above instead: the views are never rebuilt down to it.)
                stale.append(p)
            } else if cp == nil {
                try pool.write { db in
                    // (`checkMissingCheckpoints` ran at the open; another process's write may not.)
                    try Self.checkMissingCheckpoints(of: [p], db, path: databasePath)
                    try p.create(db, .live)
                    try setCheckpoint(p, seq: 0, hash: hexString(LogHead.empty.hash), db)
                }
            }
        }
        if !stale.isEmpty {
            // Another process may be rebuilding the same views right now (every reader catches
            // up): take the rebuild lock, then look again — it may have done the work already.
            try withRebuildLock {
                let head = try reader.head()
                let still = try stale.filter { p in
                    try rebuildReason(p, pool.read { try checkpoint(p.name, $0) }, reader, head: head) != nil
                }
                guard !still.isEmpty else { return }
                let r = try rebuild(still, reader, progress: progress)
                report.rebuilt += r.rebuilt
                report.quarantined += r.quarantined
            }
        }
        let from = try appliedSeq() + 1
        guard from <= head.seq else { return report }
        if chunkedFold {
            try catchUpChunked(reader, from: from, head: head, report: &report, progress: progress)
            return report
        }
        var pending: [LedgerBatch] = []
        var pendingEvents = 0
        func flush() throws {
            guard let last = pending.last else { return }
            let batches = pending
            let q = try pool.writeWithoutTransaction { db -> [QuarantineEntry] in
                var q: [QuarantineEntry] = []
                try db.inTransaction(.immediate) {
                    // Re-read checkpoints inside the write lock: another process may have caught up.
                    for p in projections {
                        let done = try checkpoint(p.name, db)?.seq ?? 0
                        for b in batches where b.info.lastSeq > done {
                            for e in b.events where e.seq > done {
                                if let entry = try applyOne(p, e, db, .live) { q.append(entry) }
                            }
                        }
                        if last.info.lastSeq > done {
                            try setCheckpoint(p, seq: last.info.lastSeq, hash: hexString(last.info.chainHash), db)
                        }
                    }
                    return .commit
                }
                return q
            }
            report.quarantined += q
            report.applied += UInt64(pendingEvents)
            progress?(FoldProgress(projection: "all", appliedEvents: last.info.lastSeq - from + 1, totalEvents: head.seq - from + 1))
            pending.removeAll(keepingCapacity: true)
            pendingEvents = 0
        }
        try reader.forEachBatch(from: from, through: head.seq) { batch in
            pending.append(batch)
            pendingEvents += batch.events.count
            if pendingEvents >= eventsPerTransaction { try flush() }
            return true
        }
        try flush()
        return report
    }

    /// Applies one event; a quarantine error is recorded (in `quarantine`) and skipped.
    func applyOne(_ p: any Projection, _ e: EventEnvelope, _ db: Database, _ t: TableSet,
                  recordLive: Bool = true) throws -> QuarantineEntry? {
        do {
            try p.apply(e, db, t)
            return nil
        } catch let q as QuarantineError {
            let entry = QuarantineEntry(projection: p.name, seq: e.seq, type: e.type, error: q.message)
            if recordLive {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO quarantine (projection, seq, type, error) VALUES (?, ?, ?, ?)",
                    arguments: [p.name, Int64(e.seq), e.type, q.message])
            }
            return entry
        }
    }

    /// Rebuilds one projection from the whole log into shadow tables while the live tables keep
    /// serving, then swaps them in with one transaction.
    @discardableResult
    public func rebuild(_ p: any Projection, _ reader: LedgerReader,
                        progress: ((FoldProgress) -> Void)? = nil) throws -> FoldReport {
        try rebuild([p], reader, progress: progress)
    }

    /// Rebuilds these projections in one pass over the log into shadow tables while the live
    /// tables keep serving, then swaps them all in with one transaction. Interrupted, it leaves
    /// the live tables as they were (the shadow tables are dropped by the next rebuild).
    @discardableResult
    public func rebuild(_ chosen: [any Projection], _ reader: LedgerReader, through: LogHead? = nil,
                        progress: ((FoldProgress) -> Void)? = nil) throws -> FoldReport {
        try withRebuildLock { try rebuildLocked(chosen, reader, through: through, progress: progress) }
    }

    /// Deletes the store's views database (with its WAL, shared memory and journal) and folds
    /// a new one from the log, from its first event. Unlike a rebuild it neither reads the old
    /// file nor waits for another process's rebuild of it (that one goes on into the deleted
    /// file, which nothing opens again; a `serve` switches to the new one). The new file is
    /// written chunk by chunk with its checkpoints, so a process killed meanwhile leaves views
    /// that the next command catches up. `why` names the purpose in the error of a file that
    /// cannot be deleted.
    ///
    /// When `projections.sqlite` is a symlink, the file it points to is deleted (SQLite keeps the
    /// -wal and -shm beside that file) and the link kept, so the new views are made where the
    /// link points. Deleting the link alone left the old file, and every row `forget` purges, on
    /// the other disk (hostile test, stop 56).
    @discardableResult
    public static func refold(_ store: Store, _ reader: LedgerReader, why: String,
                              progress: ((FoldProgress) -> Void)? = nil) throws -> FoldReport {
        let target = resolvedViewsPath(store)
        for base in Set([target, store.projectionsPath]).sorted() {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let path = base + suffix
                // The link itself is kept (its target is among the bases).
                if base == store.projectionsPath, base != target, suffix.isEmpty { continue }
                if unlink(path) != 0 && errno != ENOENT {
                    throw LedgerError("cannot delete \(path) to \(why): \(String(cString: strerror(errno)))")
                }
            }
        }
        return try ProjectionStore(store: store).catchUp(reader, progress: progress)
    }

    /// The file the views are in: `projections.sqlite`, or where it points when it is a symlink
    /// (each link followed; a chain that ends at nothing yet gives the name it ends at).
    public static func resolvedViewsPath(_ store: Store) -> String {
        resolvedPath(store.projectionsPath)
    }

    /// `path` with its symlinks followed (up to 40, as the kernel does).
    public static func resolvedPath(_ path: String) -> String {
        if let resolved = realpath(path, nil) {
            defer { free(resolved) }
            return String(cString: resolved)
        }
        var path = path
        for _ in 0..<40 {
            guard let dest = try? FileManager.default.destinationOfSymbolicLink(atPath: path) else { break }
            path = dest.hasPrefix("/") ? dest : (path as NSString).deletingLastPathComponent + "/" + dest
        }
        return path
    }

    /// What `rebuild` names a damaged views file it moves aside: the views file's path with
    /// this and the time after it (its -wal and -shm follow the new name).
    public static let damagedSuffix = ".damaged-"

    /// The damaged views files `rebuild` moved aside (`projections.sqlite.damaged-TIME`, TIME as
    /// `2026-12-06T190604.047Z`, with their -wal and -shm), beside `projections.sqlite` and beside
    /// the file it points to: stale copies of the views, with every row they held. Only files
    /// (or symlinks: a rebuild before stop 44 renamed a symlinked views file's link, not its
    /// file) named exactly so; anything else of a similar name is not SyncLedger's.
    public static func movedAsideViews(_ store: Store) -> [String] {
        var out: [String] = []
        // One file once: the two paths may name one directory, spelled two ways (a relative
        // `--store` and its resolved path), and `forget` named each file twice (hostile test).
        var seen = Set<[UInt64]>()
        for base in Set([resolvedViewsPath(store), store.projectionsPath]) {
            let dir = (base as NSString).deletingLastPathComponent
            let prefix = (base as NSString).lastPathComponent + damagedSuffix
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(prefix) {
                guard isDamagedStamp(name.dropFirst(prefix.count)) else { continue }
                var st = stat()
                guard lstat(dir + "/" + name, &st) == 0, seen.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted else { continue }
                let kind = st.st_mode & S_IFMT
                if kind == S_IFREG || kind == S_IFLNK { out.append(dir + "/" + name) }
            }
        }
        return out.sorted()
    }

    /// `2026-12-06T190604.047Z`, then nothing, `-wal` or `-shm`: the time `moveViewsAside` adds.
    static func isDamagedStamp(_ text: Substring) -> Bool {
        var t = text
        for suffix in ["-wal", "-shm"] where t.hasSuffix(suffix) {
            t = t.dropLast(suffix.count)
            break
        }
        let shape = Array("dddd-dd-ddTdddddd.dddZ")
        guard t.count == shape.count else { return false }
        return zip(t, shape).allSatisfy { c, s in s == "d" ? (c.isASCII && c.isNumber) : c == s }
    }

    /// A process rebuilds the views at `viewsPath` now (it holds their rebuild lock). Nothing is
    /// created: no lock file means no rebuild.
    public static func rebuildRunning(viewsPath: String) -> Bool {
        let fd = open(viewsPath + ".rebuild-lock", O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        guard flock(fd, LOCK_SH | LOCK_NB) == 0 else { return errno == EWOULDBLOCK }
        _ = flock(fd, LOCK_UN)
        return false
    }

    /// Holds an exclusive flock on `projections.sqlite.rebuild-lock` around `body`, so two
    /// processes never fill the same shadow tables. Re-entrant within this store object.
    func withRebuildLock<T>(_ body: () throws -> T) throws -> T {
        // An in-memory copy is this process's alone.
        if inMemory { return try body() }
        let onWait = waitNotice.withLock { $0 }
        return try rebuildLock.hold(path: rebuildLockPath, wait: true, shouldStop: { [weak self] in self?.shouldStop?() == true },
                                    onWait: onWait.map { notice in { pid in notice(pid) } }, body)!
    }

    private func rebuildLocked(_ chosen: [any Projection], _ reader: LedgerReader, through: LogHead?,
                               progress: ((FoldProgress) -> Void)?) throws -> FoldReport {
        writebackDone.withLock { $0 = nil }
        let head = try through ?? reader.head()
        let label = chosen.count == projections.count ? "all views" : chosen.map(\.name).joined(separator: ", ")
        do {
            try writeDroppingTables { db in
                for p in chosen {
                    for table in p.tables { try db.execute(sql: "DROP TABLE IF EXISTS \(TableSet.shadow(table))") }
                    try p.create(db, .shadow)
                }
            }
            return try rebuildShadows(chosen, reader, head: head, label: label, progress: progress)
        } catch let error where error is FoldInterrupted || (shouldStop?() == true && Self.isInterruption(error)) {
            // Stopped between transactions, or mid-statement (`interrupt()`, whose transaction
            // rolled back): the live tables are as they were. A late `interrupt()` may stop the
            // drop too; shadow tables left behind are dropped when the views are next opened.
            var interrupted = FoldInterrupted()
            do { try dropShadowTables(of: chosen) } catch { interrupted.shadowTablesLeft = true }
            throw interrupted
        }
    }

    /// An error of a statement `interrupt()` stopped. SQLite says `SQLITE_INTERRUPT`, except
    /// when the interrupt lands in the schema check that follows an `ALTER TABLE … RENAME` (the
    /// swap): "error in table X after rename: interrupted", `SQLITE_ERROR` (hostile test: a
    /// SIGINT during the swap was reported as that raw error, exit 1).
    static func isInterruption(_ error: any Error) -> Bool {
        guard let e = error as? DatabaseError else { return false }
        if e.resultCode == .SQLITE_INTERRUPT { return true }
        return e.resultCode == .SQLITE_ERROR && (e.message ?? "").hasSuffix(": interrupted")
    }

    /// Throws `FoldInterrupted` when `shouldStop` says so (the caller drops the shadow tables).
    private func stopIfAsked() throws {
        if shouldStop?() == true { throw FoldInterrupted() }
    }

    /// Drops the shadow tables of these projections (an interrupted rebuild's partial work).
    private func dropShadowTables(of chosen: [any Projection]) throws {
        try writeDroppingTables { db in
            for p in chosen {
                for table in p.tables { try db.execute(sql: "DROP TABLE IF EXISTS \(TableSet.shadow(table))") }
            }
        }
    }

    /// Fills the (created, empty) shadow tables from the log up to `head`, then swaps them in.
    private func rebuildShadows(_ chosen: [any Projection], _ reader: LedgerReader, head: LogHead, label: String,
                                progress: ((FoldProgress) -> Void)?) throws -> FoldReport {
        var report = FoldReport()
        var quarantined: [QuarantineEntry] = []
        var buffer: [EventEnvelope] = []
        var applied: UInt64 = 0
        var lastHash = hexString(LogHead.empty.hash)
        appointmentWrites.store(0, ordering: .relaxed)
        if chunkedFold, head.seq > 0 {
            // The shadow tables' secondary indexes are built once from the loaded rows (a sort)
            // rather than entry by entry while the rows arrive in id order.
            let indexes = try pool.write { db in try dropSecondaryIndexes(of: chosen.flatMap(\.tables).map { TableSet.shadow($0) }, db) }
            try withShadowWriting { writeback in
                try rebuildChunked(chosen, reader, head: head, label: label, quarantined: &quarantined, applied: &applied,
                                   lastHash: &lastHash, progress: progress)
                // The rows are in; their pages go into the file while the indexes are built.
                writeback?.checkpointSoon()
                let t0 = monotonicSeconds()
                try pool.write { db in
                    for sql in indexes {
                        try stopIfAsked()
                        try db.execute(sql: sql)
                    }
                }
                // Building the indexes is part of writing SQLite (and shown on its own).
                let built = monotonicSeconds() - t0
                timings.withLock {
                    $0["write", default: 0] += built
                    $0["indexes"] = built
                }
            }
            // The swap below commits with the connection's own settings again: its commit is
            // synced, and checkpoints what the rebuild left in the WAL (its cost is the rebuild's).
        }
        func flush() throws {
            try stopIfAsked()
            let events = buffer
            let q = try pool.write { db in
                var q: [QuarantineEntry] = []
                for e in events {
                    for p in chosen {
                        if let entry = try applyOne(p, e, db, .shadow, recordLive: false) { q.append(entry) }
                    }
                }
                return q
            }
            quarantined += q
            applied += UInt64(events.count)
            progress?(FoldProgress(projection: label, appliedEvents: applied, totalEvents: head.seq))
            buffer.removeAll(keepingCapacity: true)
        }
        if head.seq > 0, !chunkedFold {
            try reader.forEachBatch(from: 1, through: head.seq) { batch in
                buffer += batch.events
                lastHash = hexString(batch.info.chainHash)
                if buffer.count >= eventsPerTransaction { try flush() }
                return true
            }
            try flush()
        }
        try stopIfAsked()
        try writeDroppingTables { db in
            for p in chosen {
                for table in p.tables {
                    try db.execute(sql: "DROP TABLE IF EXISTS \(table)")
                    try db.execute(sql: "ALTER TABLE \(TableSet.shadow(table)) RENAME TO \(table)")
                }
                try db.execute(sql: "DELETE FROM quarantine WHERE projection = ?", arguments: [p.name])
                try setCheckpoint(p, seq: head.seq, hash: lastHash, db)
            }
            for q in quarantined {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO quarantine (projection, seq, type, error) VALUES (?, ?, ?, ?)",
                    arguments: [q.projection, Int64(q.seq), q.type, q.error])
            }
        }
        report.applied = applied
        report.rebuilt = chosen.map(\.name)
        report.quarantined = quarantined
        return report
    }

    /// The page size of a new views file (bytes; SQLite's default is 4,096). A 1M-event rebuild
    /// into 16 KiB pages made 44 % of the `pwrite` calls and 32 % of the `pread` calls of 4 KiB
    /// pages, and took 3–5 % less CPU (BENCHMARKS.md, stop 40).
    public static let pageSize = 16_384

    /// WAL a rebuild lets accumulate before SQLite checkpoints it into the database file (bytes;
    /// SQLite's default is every 1,000 pages, 16 MiB at 16 KiB).
    public static let rebuildCheckpointBytes = 256 << 20

    /// `rebuildCheckpointBytes` in pages of `db`'s size.
    static func rebuildCheckpointPages(_ db: Database) throws -> Int {
        rebuildCheckpointBytes / max(512, try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096)
    }
    /// The size SQLite truncates the WAL file to when it restarts it after a rebuild (bytes).
    static let walSizeLimit = 64 << 20

    /// Runs `body` (a rebuild's chunks and index builds, which fill shadow tables only) with
    /// checkpoints every `rebuildCheckpointBytes` of WAL, then restores the connection's setting,
    /// so the swap that publishes the rebuild commits, and checkpoints, as before.
    ///
    /// With the default, every chunk's commit was followed by a checkpoint: copying the chunk's
    /// pages into the database file and syncing it (GRDB's pools run `synchronous=NORMAL`,
    /// which syncs at checkpoints), ~2.5 s of the writer's ~9.5 s in `syncledger rebuild` of a
    /// 1M-event store (its commits timed apart from its statements). A page the fold rewrites in
    /// several chunks is now copied once per checkpoint, not once per chunk. Commits stay as safe as before: only how often the WAL is
    /// folded into the file changes.
    ///
    /// Meanwhile `RebuildWriteback` syncs the WAL in the background and, asked by `body`, copies
    /// it into the file while the indexes are built (not for an in-memory copy, nor with
    /// `SYNCLEDGER_REBUILD_WRITEBACK=0`); what it did is `lastWriteback`.
    func withShadowWriting<T>(_ body: (RebuildWriteback?) throws -> T) throws -> T {
        let checkpoint = try pool.writeWithoutTransaction { db in
            let before = try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") ?? 1000
            try db.execute(sql: "PRAGMA wal_autocheckpoint = \(try Self.rebuildCheckpointPages(db))")
            return before
        }
        let writeback = !inMemory && RebuildWriteback.enabled ? RebuildWriteback(path: databasePath) : nil
        var finished = false
        defer {
            // A failed or interrupted rebuild does not wait for a checkpoint it no longer needs.
            let done = finished ? writeback?.stop() : writeback?.abandon()
            writebackDone.withLock { $0 = done }
        }
        defer {
            try? pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA wal_autocheckpoint = \(checkpoint)")
                // The WAL file grew to ~256 MiB; cut it back to 64 MiB when SQLite next restarts
                // it (after the checkpoint that follows the swap, once no reader needs it).
                try db.execute(sql: "PRAGMA journal_size_limit = \(Self.walSizeLimit)")
            }
        }
        let result = try body(writeback)
        finished = true
        return result
    }

    /// Drops the indexes of these tables other than their primary keys and unique constraints,
    /// and returns the statements that create them again.
    func dropSecondaryIndexes(of tables: [String], _ db: Database) throws -> [String] {
        guard !tables.isEmpty else { return [] }
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
                AND tbl_name IN (\(Array(repeating: "?", count: tables.count).joined(separator: ", "))) ORDER BY rowid
                """,
            arguments: StatementArguments(tables))
        for row in rows { try db.execute(sql: "DROP INDEX \(row["name"] as String)") }
        return rows.map { $0["sql"] }
    }

    /// The chunked rebuild: one transaction per chunk of `eventsPerTransaction` events into the
    /// shadow tables, each chunk folded in memory first.
    private func rebuildChunked(_ chosen: [any Projection], _ reader: LedgerReader, head: LogHead, label: String,
                                quarantined: inout [QuarantineEntry], applied: inout UInt64, lastHash: inout String,
                                progress: ((FoldProgress) -> Void)?) throws {
        let batches = try reader.batches(from: 1, through: head.seq, deferOpening: true)
        let chunk = max(1, eventsPerTransaction)
        var finished = false
        var read = 0.0, fold = 0.0, write = 0.0, wait = 0.0, prepare = 0.0
        var written = 0
        // Pipelined, `read` and `fold` are the reader's and the producer's threads' time,
        // overlapping `write`; `wait` is the time the writer waited for the producer.
        defer {
            timings.withLock { $0 = ["read": read, "fold": fold, "write": write, "wait": wait, "prepare": prepare] }
            appointmentWrites.store(written, ordering: .relaxed)
        }
        let known = knownAppointmentsBits > 0 ? KnownAppointments(bits: knownAppointmentsBits)
            : KnownAppointments(events: head.seq)
        if pipelines(head.seq, chunk: chunk) {
            // Reading and folding the next chunk on two other threads while this one is written.
            // Appointments held back from one chunk's write to the next: the shadow tables are
            // read by nobody until the swap, so a row may be written chunks after its events.
            // The producer settles each chunk's with the carry (`sortForWriting`), in order; the
            // writer takes what is left once the producer has handed over its last chunk.
            let carry = CarriedAppointments(limit: carriedAppointmentsLimit)
            let pipeline = FoldPipeline(batches: batches, chunkSize: max(1, chunk / 2),
                                        prepareWhenQueued: prepareWhenQueued(chosen)) { _ in
                let folder = ChunkFolder(chosen.map { ($0, 0) }, .shadow, recordLive: false)
                folder.carry = carry
                return folder
            }
            pipeline.start()
            pipelineCounts.withLock { $0.folds += 1 }
            defer {
                pipeline.finish()
                read += pipeline.read
                fold += pipeline.fold
                prepare += pipeline.prepare
                preparedCount.add(pipeline.prepared, ordering: .relaxed)
            }
            var lastFolder: ChunkFolder?
            while true {
                try stopIfAsked()
                let waited = monotonicSeconds()
                guard let c = try pipeline.next() else {
                    let t0 = monotonicSeconds()
                    wait += t0 - waited
                    if let lastFolder, !carry.isEmpty {
                        written += try pool.write { db in try lastFolder.writeCarried(carry, db) }
                    }
                    write += monotonicSeconds() - t0
                    return
                }
                let t0 = monotonicSeconds()
                wait += t0 - waited
                let q = try pool.write { db -> [QuarantineEntry] in
                    c.folder.known = known
                    try c.folder.flush(db)
                    return c.folder.quarantined
                }
                lastFolder = c.folder
                written += c.folder.appointmentsWritten
                write += monotonicSeconds() - t0
                quarantined += q
                applied += UInt64(c.events)
                if let last = c.last { lastHash = hexString(last.chainHash) }
                progress?(FoldProgress(projection: label, appliedEvents: applied, totalEvents: head.seq))
            }
        }
        while !finished {
            try stopIfAsked()
            let (q, n, hash) = try pool.write { db -> ([QuarantineEntry], Int, String?) in
                let folder = ChunkFolder(chosen.map { ($0, 0) }, .shadow, recordLive: false)
                folder.known = known
                var n = 0
                var hash: String?
                while n < chunk {
                    let t0 = monotonicSeconds()
                    guard let batch = try batches.next() else {
                        finished = true
                        break
                    }
                    let t1 = monotonicSeconds()
                    for (i, e) in batch.events.enumerated() { try folder.add(e, opening: batch.opening(at: i)) }
                    let t2 = monotonicSeconds()
                    read += t1 - t0
                    fold += t2 - t1
                    n += batch.events.count
                    hash = hexString(batch.info.chainHash)
                }
                let t3 = monotonicSeconds()
                try folder.flush(db)
                written += folder.appointmentsWritten
                write += monotonicSeconds() - t3
                return (folder.quarantined, n, hash)
            }
            quarantined += q
            applied += UInt64(n)
            if let hash { lastHash = hash }
            if n > 0 { progress?(FoldProgress(projection: label, appliedEvents: applied, totalEvents: head.seq)) }
        }
    }

    /// The chunked catch-up: one transaction per chunk, each projection from its own checkpoint
    /// (re-read inside the write lock: another process may have caught up meanwhile).
    private func catchUpChunked(_ reader: LedgerReader, from: UInt64, head: LogHead, report: inout FoldReport,
                                progress: ((FoldProgress) -> Void)?, pipelined: Bool = true) throws {
        let batches = try reader.batches(from: from, through: head.seq, deferOpening: true)
        let chunk = max(1, eventsPerTransaction)
        if pipelined, pipelines(head.seq - from + 1, chunk: chunk) {
            if try catchUpPipelined(batches, from: from, head: head, chunk: chunk, report: &report, progress: progress) {
                // Another process moved the checkpoints meanwhile: go on from where they are now,
                // on this thread.
                let from = try appliedSeq() + 1
                if from <= head.seq {
                    try catchUpChunked(reader, from: from, head: head, report: &report, progress: progress, pipelined: false)
                }
            }
            return
        }
        var finished = false
        while !finished {
            try stopCatchUpIfAsked(report)
            let (q, n, last) = try pool.writeWithoutTransaction { db -> ([QuarantineEntry], Int, BatchInfo?) in
                var result: ([QuarantineEntry], Int, BatchInfo?) = ([], 0, nil)
                try db.inTransaction(.immediate) {
                    let dones = try projections.map { try checkpoint($0.name, db)?.seq ?? 0 }
                    let folder = ChunkFolder(Array(zip(projections, dones)).map { ($0, $1) }, .live, recordLive: true)
                    var n = 0
                    var last: BatchInfo?
                    while n < chunk {
                        guard let batch = try batches.next() else {
                            finished = true
                            break
                        }
                        for (i, e) in batch.events.enumerated() { try folder.add(e, opening: batch.opening(at: i)) }
                        n += batch.events.count
                        last = batch.info
                    }
                    try folder.flush(db)
                    if let last {
                        for (p, done) in zip(projections, dones) where last.lastSeq > done {
                            try setCheckpoint(p, seq: last.lastSeq, hash: hexString(last.chainHash), db)
                        }
                    }
                    result = (folder.quarantined, n, last)
                    return .commit
                }
                return result
            }
            report.quarantined += q
            report.applied += UInt64(n)
            if let last {
                progress?(FoldProgress(projection: "all", appliedEvents: last.lastSeq - from + 1, totalEvents: head.seq - from + 1))
            }
        }
    }

    /// Throws `FoldInterrupted` (`catchingUp`) between a catch-up's transactions when
    /// `shouldStop` says so: what the chunks before folded is committed with its checkpoints,
    /// and the next command goes on from there. (A sync's first fold of a new store's views, or
    /// of views far behind, took tens of seconds at millions of events and ignored Ctrl-C.)
    private func stopCatchUpIfAsked(_ report: FoldReport) throws {
        guard shouldStop?() == true else { return }
        var stopped = FoldInterrupted()
        stopped.catchingUp = true
        stopped.applied = report.applied
        throw stopped
    }

    /// The chunked catch-up with each chunk read and folded on two other threads while the one
    /// before is written. The producer folds each chunk from the checkpoints the chunks before
    /// leave; the writer re-reads them inside its transaction. True when another process moved
    /// them meanwhile: that chunk is not written, and the caller goes on from where they are.
    private func catchUpPipelined(_ batches: LedgerBatches, from: UInt64, head: LogHead, chunk: Int, report: inout FoldReport,
                                  progress: ((FoldProgress) -> Void)?) throws -> Bool {
        let projections = self.projections
        var assumed = try pool.read { db in try projections.map { try checkpoint($0.name, db)?.seq ?? 0 } }
        // Observations the views that read them have all applied are not prepared.
        let observationViews = zip(projections, assumed).filter { Self.readsObservations($0.0) }
        let pipeline = FoldPipeline(batches: batches, chunkSize: max(1, chunk / 2),
                                    prepareWhenQueued: prepareWhenQueued(projections),
                                    prepareAfter: observationViews.map(\.1).min() ?? 0) { previous in
            if let previous { assumed = assumed.map { max($0, previous.lastSeq) } }
            return ChunkFolder(Array(zip(projections, assumed)).map { ($0, $1) }, .live, recordLive: true)
        }
        pipeline.start()
        pipelineCounts.withLock { $0.folds += 1 }
        defer {
            pipeline.finish()
            preparedCount.add(pipeline.prepared, ordering: .relaxed)
        }
        while let c = try pipeline.next() {
            try stopCatchUpIfAsked(report)
            let q = try pool.writeWithoutTransaction { db -> [QuarantineEntry]? in
                var q: [QuarantineEntry]?
                try db.inTransaction(.immediate) {
                    let dones = try projections.map { try checkpoint($0.name, db)?.seq ?? 0 }
                    guard c.folder.checkpoints == dones else { return .rollback }
                    try c.folder.flush(db)
                    if let last = c.last {
                        for (p, done) in zip(projections, dones) where last.lastSeq > done {
                            try setCheckpoint(p, seq: last.lastSeq, hash: hexString(last.chainHash), db)
                        }
                    }
                    q = c.folder.quarantined
                    return .commit
                }
                return q
            }
            guard let q else {
                pipelineCounts.withLock { $0.restarted += 1 }
                return true
            }
            report.quarantined += q
            report.applied += UInt64(c.events)
            if let last = c.last {
                progress?(FoldProgress(projection: "all", appliedEvents: last.lastSeq - from + 1, totalEvents: head.seq - from + 1))
            }
        }
        return false
    }

    /// Rebuilds the named projections (all when empty), then catches up with anything appended meanwhile.
    ///
    /// Views that hold nothing yet while the log has events (a new views database, a view new
    /// to this version) are rebuilt with the named ones, and the report says so in its notes:
    /// the catch-up after the swap would fold them from the first event into live, indexed
    /// tables (1M events: `--projection stream_index` with the views file gone took 14.7 s that
    /// way, 9.1 s with the others rebuilt beside it; BENCHMARKS.md, stop 55). What they hold in
    /// the end is the same either way.
    public func rebuild(names: [String], _ reader: LedgerReader,
                        progress: ((FoldProgress) -> Void)? = nil) throws -> FoldReport {
        for n in names where !projections.contains(where: { $0.name == n }) {
            throw LedgerError("no projection named \(n); choose one of: \(projections.map(\.name).joined(separator: ", "))")
        }
        var empty: [String] = []
        if !names.isEmpty, try reader.head().seq > 0 {
            empty = try pool.read { db in
                try projections.map(\.name).filter { n in try !names.contains(n) && (checkpoint(n, db)?.seq ?? 0) == 0 }
            }
        }
        let chosen = names.isEmpty ? projections : projections.filter { names.contains($0.name) || empty.contains($0.name) }
        var report = try rebuild(chosen, reader, progress: progress)
        if !empty.isEmpty {
            report.notes.append("\(empty.joined(separator: ", ")) held nothing yet: rebuilt with "
                                + names.joined(separator: ", ") + ", faster than folding them from the first event afterwards")
        }
        // The rebuilt views are in place; events appended meanwhile are folded now, or, once
        // asked to stop (its statement interrupted), by the next command that reads the views.
        if shouldStop?() == true { return report }
        do {
            let after = try catchUp(reader)
            report.quarantined += after.quarantined
        } catch let error where shouldStop?() == true && Self.isInterruption(error) {
            return report
        }
        return report
    }

    public func quarantine() throws -> [QuarantineEntry] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT projection, seq, type, error FROM quarantine ORDER BY seq").map {
                QuarantineEntry(projection: $0["projection"], seq: UInt64($0["seq"] as Int64), type: $0["type"], error: $0["error"])
            }
        }
    }
}


/// A rebuild stopped by `shouldStop`: its shadow tables were dropped, the live views are as before.
public struct FoldInterrupted: Error, CustomStringConvertible, Sendable {
    /// A rebuild's partial shadow tables could not be dropped (the next `ProjectionStore`
    /// opened for writing drops them).
    public var shadowTablesLeft = false
    /// Stopped while waiting for another process's rebuild to finish: nothing was started.
    public var beforeStart = false
    /// Stopped between the transactions of a catch-up (not a rebuild): the `applied` events
    /// before are in the views with their checkpoints.
    public var catchingUp = false
    public var applied: UInt64 = 0
    public init() {}
    public var description: String {
        catchingUp ? "bringing the views up to date was interrupted after \(applied) event(s); the next command goes on from there"
            : "the rebuild was interrupted; the live views are unchanged"
    }
}

/// `projections.sqlite` (or its directory) cannot be written by this process.
public struct ViewsNotWritable: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var reason: String
    public var description: String { "cannot write the views database \(path): \(reason)" }
}

/// The file at the views' path is another program's SQLite database: its tables are not the
/// views', and none is written into it.
public struct ForeignViewsFile: Error, CustomStringConvertible, Sendable {
    public var path: String
    /// Its first tables (up to four).
    public var tables: [String]
    public var description: String {
        let named = tables.prefix(3).joined(separator: ", ") + (tables.count > 3 ? ", …" : "")
        let link = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)).map { " (a link to \($0))" } ?? ""
        return "the views database \(path)\(link) is not SyncLedger's: it holds other tables (\(named)); "
            + "nothing was written to it. Move it away (or remove the link), and the next command builds the views from the log"
    }
}

/// Which file is at a path (device and inode, following symlinks): a views file moved aside and
/// replaced by a new one at the same path is another file.
public struct FileIdentity: Equatable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    /// Nil when there is no file at `path`.
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}

/// The views file this store opened is no longer at its path (a rebuild moved a damaged one
/// aside and folded the log into a new one): a new connection, which SQLite opens by path, is
/// refused rather than reading the other file, which may still be half-built.
public struct ViewsReplaced: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var description: String {
        "the views database \(path) was replaced (a rebuild moved it aside): reopen it"
    }
}

/// `projections.sqlite` cannot be read as a database (not one, or corrupt).
public struct ViewsDamaged: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var reason: String
    public var description: String {
        "the views database \(path) is damaged (\(reason)); `syncledger rebuild` recreates it from the log (the damaged file is moved aside)"
    }

    static func isDamage(_ error: DatabaseError) -> Bool {
        error.resultCode == .SQLITE_NOTADB || error.resultCode == .SQLITE_CORRUPT
    }

    /// True for an error that says the database file is damaged.
    public static func isDamage(_ error: any Error) -> Bool {
        (error as? DatabaseError).map(isDamage) ?? (error is ViewsDamaged)
    }

    /// What a full disk under the views is called, wherever it is said.
    public static let diskFullWords = "the disk holding the views database (projections.sqlite) or SQLite's temporary files is full"

    /// SQLite said the disk is full (`SQLITE_FULL`): not damage; the write was rolled back.
    public static func isDiskFull(_ error: any Error) -> Bool {
        (error as? DatabaseError)?.resultCode == .SQLITE_FULL
    }

    /// SQLite's words for an error that says the database file is damaged (what a
    /// `ViewsDamageRecord` keeps); nil for any other error.
    public static func words(of error: any Error) -> String? {
        guard isDamage(error) else { return nil }
        return (error as? ViewsDamaged)?.reason ?? String(describing: error)
    }
}

extension ProjectionStore {
    /// A synchronous read (GRDB's async overload is chosen in async contexts otherwise).
    public func readSync<T>(_ body: (Database) throws -> T) throws -> T {
        try pool.read(body)
    }
}

/// An exclusive, re-entrant flock on a file. The depth counter lets a rebuild started from a
/// catch-up (which already holds the lock) run without locking itself out.
final class RebuildLock: @unchecked Sendable {
    // @unchecked: `depth` and `fd` are only touched under `mutex`, held for the whole body.
    // Not `Synchronization.Mutex` (the package's lock elsewhere): this one must be re-entrant
    // on the thread that holds it, and Mutex is not.
    private let mutex = NSRecursiveLock()
    private var depth = 0
    private var fd: Int32 = -1

    /// How often a waiting `hold` tries the lock again and asks `shouldStop`.
    static let retryInterval: useconds_t = 50_000

    /// Runs `body` holding the lock. `wait: false`: returns nil at once when another process
    /// holds it. `wait: true`: tries again every 50 ms until it is free, calling `onWait` once
    /// (with the holder's pid, when it wrote one) and throwing `FoldInterrupted` (nothing
    /// started) as soon as `shouldStop` says so: a blocking `flock` could not be stopped by a
    /// signal the process handles itself, so a Ctrl-C while another rebuild ran was not acted
    /// on, and nothing said what it waited for (hostile test, stop 44).
    func hold<T>(path: String, wait: Bool, shouldStop: (() -> Bool)? = nil, onWait: ((String?) -> Void)? = nil,
                 _ body: () throws -> T) throws -> T? {
        mutex.lock()
        defer { mutex.unlock() }
        if depth == 0 {
            fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                let reason = errno == ELOOP ? "it is a symbolic link, which syncledger does not follow there" : String(cString: strerror(errno))
                throw LedgerError("cannot open \(path) to serialise rebuilds: \(reason)")
            }
            // Made by root in someone else's store: theirs, or their next rebuild cannot open it.
            StoreOwnership.adopt(fd: fd, path: path)
            var waited = false
            while flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let err = errno
                if err == EINTR { continue }
                guard err == EWOULDBLOCK else {
                    close(fd)
                    fd = -1
                    throw LedgerError("cannot lock \(path): \(String(cString: strerror(err)))")
                }
                if !wait || shouldStop?() == true {
                    close(fd)
                    fd = -1
                    if !wait { return nil }
                    var stopped = FoldInterrupted()
                    stopped.beforeStart = true
                    throw stopped
                }
                if !waited {
                    waited = true
                    onWait?(Self.holderPid(fd))
                }
                usleep(Self.retryInterval)
            }
            // Who holds it, for a process that has to wait (best effort).
            let text = Array("\(getpid())\n".utf8)
            if ftruncate(fd, 0) == 0 { _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
        }
        depth += 1
        defer {
            depth -= 1
            if depth == 0 {
                _ = ftruncate(fd, 0)  // no stale pid for the next waiter to name
                Glibc.close(fd)  // releases the flock
                fd = -1
            }
        }
        return try body()
    }

    /// The pid the lock's holder wrote into the file, if any.
    private static func holderPid(_ fd: Int32) -> String? {
        var buffer = [UInt8](repeating: 0, count: 24)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return LockFileText.pid(buffer[..<n])
    }
}

func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}
