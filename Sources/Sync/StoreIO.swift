import Dispatch

/// Where a sync run does its blocking work: appending (write + fdatasync), catching the SQLite
/// views up, taking the writer lock. Swift's cooperative pool has as many threads as cores (two
/// here); blocking one of them for an fsync would stall every other task of a long-running server.
/// `@StoreIO` code runs on one dedicated serial queue instead, and hops off it at every `await`
/// on the network.
@globalActor
public actor StoreIO {
    public static let shared = StoreIO()

    private static let executor = DispatchQueueExecutor(label: "syncledger.store-io")

    public nonisolated var unownedExecutor: UnownedSerialExecutor { Self.executor.asUnownedSerialExecutor() }
}

/// A serial executor backed by a Dispatch queue (a thread of its own when busy, not one of the
/// cooperative pool's).
final class DispatchQueueExecutor: SerialExecutor {
    private let queue: DispatchQueue

    init(label: String) { queue = DispatchQueue(label: label) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedSerialExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}
