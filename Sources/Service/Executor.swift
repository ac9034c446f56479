import Dispatch
import Foundation

/// A task executor on a serial Dispatch queue of its own: the synchronous file, fsync, flock and
/// SQLite work of a run (`SyncSession.run`) happens on that queue's thread, never on Swift's
/// cooperative pool, whose few threads must stay free to answer requests.
final class WriterExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: the queue is the only state and is itself thread-safe.
    private let queue = DispatchQueue(label: "syncledger.writer", qos: .userInitiated)

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { unowned.runSynchronously(on: executor) }
    }
}
