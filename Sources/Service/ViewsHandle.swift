import EventLog
import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import Projections
import ServiceLifecycle

/// The views the server reads. `syncledger rebuild` on a damaged views file moves it aside and
/// folds the log into a new `projections.sqlite`; a server that kept its connections to the old
/// file would go on answering 503 (and recording the damage again) until restarted. So every
/// second (`ViewsWatchService`), and at once when a read meets damage, the server compares the
/// file at the views' path with the one it opened (device and inode). Another file, once no
/// process is rebuilding into it, is opened, caught up to the log's head and only then read: a
/// half-built file (an interrupted rebuild, or one another command is still catching up) is
/// never shown. Reading `current` is a lock and a load; the check runs on the thread pool.
final class ViewsHandle: Sendable {
    private struct Opened {
        var views: ProjectionStore
        var file: FileIdentity?
    }

    private let opened: NIOLockedValueBox<Opened>
    /// One check at a time; a second caller returns at once.
    private let checking = NIOLockedValueBox(false)
    /// The file whose opening failed last (logged once).
    private let failed = NIOLockedValueBox<FileIdentity?>(nil)
    private let store: Store
    private let logger: Logger

    init(store: Store, logger: Logger) throws {
        self.store = store
        self.logger = logger
        let views = try ProjectionStore(store: store)  // creates the file in a new store
        opened = NIOLockedValueBox(Opened(views: views, file: FileIdentity(path: store.projectionsPath)))
    }

    /// The views to read now.
    var current: ProjectionStore { opened.withLockedValue { $0.views } }
    /// The file `current` reads.
    var currentFile: FileIdentity? { opened.withLockedValue { $0.file } }

    /// Another file is at the views' path and no rebuild is folding into it: a switch is near.
    var switchPending: Bool {
        let path = store.projectionsPath
        guard let file = FileIdentity(path: path), file != currentFile else { return false }
        return !ProjectionStore.rebuildRunning(viewsPath: path)
    }

    /// Whether the file a reader read (`readFrom`) is still the one at the views' path. Damage
    /// met in a file that was replaced since is not the store's any more.
    func stillAtPath(_ readFrom: FileIdentity?) -> Bool {
        FileIdentity(path: store.projectionsPath) == readFrom
    }

    /// Switches to the file at the views' path when it is another one and no rebuild is folding
    /// into it: opened, caught up to the log's head (`catchUp`; without it, only a file already
    /// at the head is switched to: a request never runs a fold), then read. Blocking (file and
    /// SQLite work). Returns whether it switched. A check already running makes this one
    /// return false at once.
    @discardableResult
    func refresh(catchUp: Bool) -> Bool {
        guard checking.withLockedValue({ busy in defer { busy = true }; return !busy }) else { return false }
        defer { checking.withLockedValue { $0 = false } }
        let path = store.projectionsPath
        guard let file = FileIdentity(path: path), file != currentFile else { return false }
        // A rebuild holds the lock while it folds; it creates the file a moment before it takes
        // the lock, and writes it (or its WAL) at least every chunk: a file written in the last
        // two seconds is left for the next look.
        guard !ProjectionStore.rebuildRunning(viewsPath: path), !Self.writtenLately(path) else { return false }
        do {
            let fresh = try ProjectionStore(store: store)
            guard FileIdentity(path: path) == file else { return false }  // replaced again meanwhile
            let reader = try LedgerReader(store: store)
            var folded: UInt64 = 0
            if catchUp {
                folded = try fresh.catchUp(reader).applied
            } else if try fresh.appliedSeq() < reader.head().seq {
                return false
            }
            opened.withLockedValue { $0 = Opened(views: fresh, file: file) }
            failed.withLockedValue { $0 = nil }
            logger.notice("the views file was replaced (by `syncledger forget` or `repair`, or a rebuild of damaged views): reading the new one",
                          metadata: ["events_caught_up": "\(folded)"])
            onSwitch.withLockedValue { $0 }?()
            return true
        } catch {
            let first = failed.withLockedValue { f in defer { f = file }; return f != file }
            if first {
                logger.error("the views file was replaced but the new one cannot be read; still reading the old one",
                             metadata: ["error": "\(error)"])
                // Recorded for status and the alerts: the rebuild cleared the record, and the
                // old file's damage is no longer recorded (it is not at the path), so without
                // this a server stuck on the old file would look healthy.
                let words = ViewsDamaged.words(of: error) ?? "the new views file cannot be opened: \(error)"
                try? ViewsDamageRecord.record(by: "serve", error: words, in: store)
            }
            return false
        }
    }

    /// Called after a switch (the server marks itself ready: its start-up catch-up may have
    /// failed on the damaged file).
    let onSwitch = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)

    /// The file or its WAL was modified in the last two seconds.
    static func writtenLately(_ path: String) -> Bool {
        let now = Date()
        for p in [path, path + "-wal"] {
            if let m = (try? FileManager.default.attributesOfItem(atPath: p))?[.modificationDate] as? Date,
               now.timeIntervalSince(m) < 2 {
                return true
            }
        }
        return false
    }
}

/// Looks at the views file every second (`ViewsHandle.refresh`), so that a server reads the
/// views a rebuild put in a new file without a restart.
struct ViewsWatchService: Service {
    let server: SyncLedgerServer

    func run() async throws {
        let handle = server.viewsHandle
        let stopping = NIOLockedValueBox(false)
        var last = Date.distantPast
        await withGracefulShutdownHandler {
            while !stopping.withLockedValue({ $0 }) && !Task.isCancelled {
                if Date().timeIntervalSince(last) >= 1 {
                    last = Date()
                    // On a thread of its own: catching a file up can be a whole fold, which
                    // must not hold one of the thread pool's few threads that requests use.
                    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                        Thread { handle.refresh(catchUp: true); done.resume() }.start()
                    }
                }
                try? await Task.sleep(nanoseconds: 100_000_000)
            }
        } onGracefulShutdown: {
            stopping.withLockedValue { $0 = true }
        }
    }
}
