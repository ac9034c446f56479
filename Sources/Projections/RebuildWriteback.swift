import Foundation
import Glibc
import GRDBSQLite

/// A rebuild's helper thread for the disk work that used to stall its pipeline (BENCHMARKS.md,
/// stop 44). The writer checkpoints the WAL into the database file every
/// `ProjectionStore.rebuildCheckpointBytes`; each checkpoint first syncs the WAL, then copies
/// its pages and syncs the file, and while the writer waits for the disk, the reader and the
/// fold soon have nowhere to put their work: a 1M-event rebuild left ~2.2 of its ~17
/// core-seconds idle, about half of it there and the rest in its last second, when the writer
/// alone builds the indexes and the swap's commit checkpoints what the WAL still holds.
///
/// So, while the shadow tables are written, this thread
/// - syncs the WAL every `interval` (`fdatasync` of its own descriptor), so that the pages are
///   on disk already, or on their way, when a checkpoint syncs it;
/// - on `checkpointSoon()` (after the last chunk, while the writer builds the indexes) copies
///   the WAL into the database file through a connection of its own: a passive checkpoint,
///   which copies committed frames only and neither waits for the writer nor holds it up (while
///   it runs, the writer's own automatic checkpoints are skipped, as SQLite skips them whenever
///   another connection checkpoints), leaving the swap's checkpoint little to copy.
///
/// Neither changes what is durable when: SQLite still syncs the WAL before each checkpoint and
/// the file after it, and a commit is as safe as before. The main database file is opened only
/// through SQLite, never by hand: closing a descriptor of it would drop the process's POSIX
/// locks on it, which SQLite's own connections share safely. The WAL (which carries no locks)
/// is opened by the name SQLite gives it. The helper is stopped before the swap.
/// `SYNCLEDGER_REBUILD_WRITEBACK=0` turns it off (for comparisons).
final class RebuildWriteback: @unchecked Sendable {
    // @unchecked: every var is read and written under `condition`, except `wal` and `walPath`,
    // which only the helper thread touches. `connection` is opened and closed by the helper
    // thread under `condition`, so that `abandon()` can interrupt it from another thread
    // (`sqlite3_interrupt` may be called from any thread while the connection is open).
    static let interval = 0.1

    typealias Summary = WritebackSummary

    /// True unless `SYNCLEDGER_REBUILD_WRITEBACK` turns it off (`setting`).
    static var enabled: Bool { setting(ProcessInfo.processInfo.environment["SYNCLEDGER_REBUILD_WRITEBACK"]) ?? true }

    /// What a value of `SYNCLEDGER_REBUILD_WRITEBACK` asks for: false for 0, off, false, no;
    /// true for unset, empty, 1, on, true, yes (any case); nil for anything else (the helper then
    /// stays on, and `syncledger rebuild` says the value was not understood).
    static func setting(_ value: String?) -> Bool? {
        switch value?.lowercased() {
        case nil, "", "1", "on", "true", "yes": true
        case "0", "off", "false", "no": false
        default: nil
        }
    }

    private let path: String
    private let condition = NSCondition()
    private var stopping = false
    private var abandoned = false
    private var running = true
    private var checkpointAsked = false
    private var summary = Summary()
    private var connection: OpaquePointer?
    private var wal: Int32 = -1
    private var walPath: String?

    /// Starts the helper for the views database at `path`.
    init(path: String) {
        self.path = path
        let thread = Thread { [self] in
            run()
            condition.lock()
            running = false
            condition.broadcast()
            condition.unlock()
        }
        thread.name = "syncledger-writeback"
        thread.start()
    }

    /// Asks for one passive checkpoint, as soon as the helper is free.
    func checkpointSoon() {
        condition.lock()
        checkpointAsked = true
        condition.broadcast()
        condition.unlock()
    }

    /// What the helper has done so far.
    var summarySoFar: Summary {
        condition.lock()
        defer { condition.unlock() }
        return summary
    }

    /// Stops the helper once it has done what it was asked: a checkpoint under way, or asked
    /// for and not begun, runs to its end first (the swap's commit would do that copying
    /// anyway). Says what it did.
    @discardableResult
    func stop() -> Summary { end(abandon: false) }

    /// Stops the helper at once, for a rebuild that failed or was interrupted: a checkpoint
    /// under way is interrupted (what it copied is committed data, harmless in the file) and
    /// one not begun is dropped.
    @discardableResult
    func abandon() -> Summary { end(abandon: true) }

    private func end(abandon: Bool) -> Summary {
        condition.lock()
        defer { condition.unlock() }
        stopping = true
        if abandon {
            abandoned = true
            checkpointAsked = false
            if let connection { sqlite3_interrupt(connection) }
        }
        condition.broadcast()
        while running { condition.wait() }
        return summary
    }

    private func run() {
        open()
        defer {
            if wal >= 0 { close(wal) }
            condition.lock()
            if let connection { sqlite3_close_v2(connection) }
            connection = nil
            condition.unlock()
        }
        while true {
            condition.lock()
            if !stopping && !checkpointAsked {
                _ = condition.wait(until: Date(timeIntervalSinceNow: Self.interval))
            }
            let checkpoint = checkpointAsked && !abandoned
            checkpointAsked = false
            let stop = stopping
            condition.unlock()
            if checkpoint {
                let t0 = monotonicSeconds()
                if let (log, copied) = passiveCheckpoint() {
                    let seconds = monotonicSeconds() - t0
                    condition.lock()
                    summary.checkpoints += 1
                    summary.walFrames = log
                    summary.checkpointedFrames = copied
                    summary.checkpointSeconds += seconds
                    condition.unlock()
                }
            } else if stop {
                return
            } else if syncWAL() {
                condition.lock()
                summary.walSyncs += 1
                condition.unlock()
            }
        }
    }

    /// Opens the helper's connection and learns the WAL's name from SQLite; with no database at
    /// `path` (nothing is created) the helper has nothing to do.
    private func open() {
        var db: OpaquePointer?
        // No SQLITE_OPEN_CREATE. Multi-thread mode: the connection is this thread's alone (and
        // `sqlite3_interrupt`'s, which is safe from any thread).
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK,
            let db
        else {
            sqlite3_close_v2(db)
            return
        }
        condition.lock()
        connection = db
        condition.unlock()
        if let main = sqlite3_db_filename(db, "main"), let name = sqlite3_filename_wal(main) {
            walPath = String(cString: name)
        }
    }

    /// `fdatasync` of the WAL (opened once it exists); false when there is none to sync.
    private func syncWAL() -> Bool {
        guard let walPath else { return false }
        if wal < 0 { wal = Glibc.open(walPath, O_RDONLY | O_CLOEXEC | O_NONBLOCK) }
        guard wal >= 0 else { return false }
        return fdatasync(wal) == 0
    }

    /// Copies what the WAL holds into the database file without waiting for any other
    /// connection: the WAL's frames, and how many of them are in the file now; nil when there
    /// is no connection, or SQLite declined or was interrupted.
    private func passiveCheckpoint() -> (log: Int, checkpointed: Int)? {
        guard let connection else { return nil }
        // A connection learns that the file is in WAL mode when it first reads it.
        guard sqlite3_exec(connection, "PRAGMA schema_version", nil, nil, nil) == SQLITE_OK else { return nil }
        var log: Int32 = 0, copied: Int32 = 0
        guard sqlite3_wal_checkpoint_v2(connection, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &copied) == SQLITE_OK else {
            return nil
        }
        return (Int(max(0, log)), Int(max(0, copied)))
    }
}

/// What a rebuild's `RebuildWriteback` did, for `--timings` and the benchmark.
public struct WritebackSummary: Equatable, Sendable {
    /// Times the WAL was synced in the background.
    public var walSyncs = 0
    /// Background checkpoints run (0 or 1 in a rebuild).
    public var checkpoints = 0
    /// After the last one: the frames in the WAL, and how many of them were in the database file
    /// (copied by it or by an earlier checkpoint).
    public var walFrames = 0
    public var checkpointedFrames = 0
    /// Seconds the background checkpoints took (on the helper's thread).
    public var checkpointSeconds = 0.0
}

extension ProjectionStore {
    /// What a value of `SYNCLEDGER_REBUILD_WRITEBACK` asks for (`RebuildWriteback.setting`):
    /// nil when it is not understood.
    public static func rebuildWritebackSetting(_ value: String?) -> Bool? { RebuildWriteback.setting(value) }
}
