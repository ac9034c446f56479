import Foundation
import GRDBSQLite

/// A rebuild's helper thread for the disk work that used to stall its pipeline (BENCHMARKS.md,
/// stop 44). The writer checkpoints the WAL into the database file every
/// `ProjectionStore.rebuildCheckpointBytes`; each checkpoint first syncs the WAL, then copies
/// its pages and syncs the file, and while the writer waits for the disk, the reader and the
/// fold soon have nowhere to put their work: a 1M-event rebuild left ~2.2 of its ~17 core-seconds
/// idle, about half of it there and the rest in its last second, when the writer alone builds
/// the indexes and the swap's commit checkpoints what the WAL still holds.
///
/// So, while the shadow tables are written, this thread
/// - syncs the WAL every `interval` (`fdatasync` of its own descriptor), so that the pages are
///   on disk already, or on their way, when a checkpoint syncs it;
/// - on `checkpointSoon()` (after the last chunk, while the writer builds the indexes) copies
///   the WAL into the database file through a connection of its own (a passive checkpoint, which
///   never waits for, nor blocks, the writer), leaving the swap's checkpoint little to copy.
///
/// Neither changes what is durable when: SQLite still syncs the WAL before each checkpoint and
/// the file after it, and a commit is as safe as before. Only the main database file is never
/// opened here by hand: closing a descriptor of it would drop SQLite's POSIX locks on it (the
/// WAL file has none; the connection goes through SQLite, which shares them).
/// `SYNCLEDGER_REBUILD_WRITEBACK=0` turns the helper off (for comparisons).
final class RebuildWriteback: @unchecked Sendable {
    // @unchecked: every var is read and written under `condition`, except `wal` and
    // `connection`, which only the helper thread touches.
    static let interval = 0.1

    typealias Summary = WritebackSummary

    /// True unless `SYNCLEDGER_REBUILD_WRITEBACK` is `0`.
    static var enabled: Bool { ProcessInfo.processInfo.environment["SYNCLEDGER_REBUILD_WRITEBACK"] != "0" }

    private let path: String
    private let condition = NSCondition()
    private var stopping = false
    private var running = true
    private var checkpointAsked = false
    private var summary = Summary()
    private var wal: Int32 = -1
    private var connection: OpaquePointer?

    /// Starts the helper for the views database at `path` (its WAL is `path-wal`).
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

    /// Stops the helper (a checkpoint under way is finished first; one asked for and not begun
    /// is dropped: the swap's commit checkpoints anyway) and says what it did.
    @discardableResult
    func stop() -> Summary {
        condition.lock()
        defer { condition.unlock() }
        stopping = true
        condition.broadcast()
        while running { condition.wait() }
        return summary
    }

    private func run() {
        defer {
            if wal >= 0 { close(wal) }
            if let connection { sqlite3_close_v2(connection) }
        }
        while true {
            condition.lock()
            if !stopping && !checkpointAsked {
                _ = condition.wait(until: Date(timeIntervalSinceNow: Self.interval))
            }
            let stop = stopping
            let checkpoint = checkpointAsked && !stop
            checkpointAsked = false
            condition.unlock()
            if stop { return }
            if checkpoint {
                let t0 = monotonicSeconds()
                let pages = passiveCheckpoint()
                let seconds = monotonicSeconds() - t0
                condition.lock()
                summary.checkpointedFrames += pages
                summary.checkpointSeconds += seconds
                condition.unlock()
            } else if syncWAL() {
                condition.lock()
                summary.walSyncs += 1
                condition.unlock()
            }
        }
    }

    /// `fdatasync` of the WAL (opened once it exists); false when there is none to sync.
    private func syncWAL() -> Bool {
        if wal < 0 { wal = open(path + "-wal", O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK) }
        guard wal >= 0 else { return false }
        return fdatasync(wal) == 0
    }

    /// Copies what the WAL holds into the database file, without waiting for or blocking any
    /// other connection; the WAL's frames now in the file (0 when SQLite declined).
    private func passiveCheckpoint() -> Int {
        if connection == nil {
            var db: OpaquePointer?
            // No SQLITE_OPEN_CREATE: a missing file is not made. Multi-thread mode: this
            // connection is this thread's alone.
            guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK else {
                sqlite3_close_v2(db)
                return 0
            }
            connection = db
        }
        // A connection learns that the file is in WAL mode when it first reads it.
        guard sqlite3_exec(connection, "PRAGMA schema_version", nil, nil, nil) == SQLITE_OK else { return 0 }
        var frames: Int32 = 0, copied: Int32 = 0
        guard sqlite3_wal_checkpoint_v2(connection, nil, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied) == SQLITE_OK,
            copied > 0
        else { return 0 }
        return Int(copied)
    }
}

/// What a rebuild's `RebuildWriteback` did, for `--timings` and the benchmark.
public struct WritebackSummary: Equatable, Sendable {
    /// Times the WAL was synced in the background.
    public var walSyncs = 0
    /// The WAL's frames in the database file after the background checkpoint (0: none ran).
    public var checkpointedFrames = 0
    /// Seconds the background checkpoint took (on the helper's thread).
    public var checkpointSeconds = 0.0
}
