import Foundation
import Ledger

/// Reads a log's batches on a thread of its own, a few batches ahead of the fold, so reading
/// (decompression, the chain's SHA-256, envelope decoding, opening sealed data) runs on the
/// second core while the caller folds and writes SQLite. At most `depth` batches wait in memory.
/// Batches come out in log order; an error of the reader is thrown by the `next()` that would
/// have returned the batch.
final class ReadAhead: @unchecked Sendable {
    // @unchecked: `queue`, `finished`, `failure` and `stopped` are only touched under `condition`;
    // `batches` only on the reading thread once it has started.
    private let condition = NSCondition()
    private var queue: [LedgerBatch] = []
    private var head = 0
    private var finished = false
    private var failure: (any Error)?
    private var stopped = false
    private let exited = DispatchSemaphore(value: 0)
    private let depth: Int

    init(_ batches: LedgerBatches, depth: Int = 8) {
        self.depth = max(1, depth)
        nonisolated(unsafe) let source = batches
        let thread = Thread { [self] in
            defer { exited.signal() }
            while true {
                condition.lock()
                while queue.count - head >= self.depth && !stopped { condition.wait() }
                let stop = stopped
                condition.unlock()
                if stop { return }
                let result = Result { try source.next() }
                condition.lock()
                switch result {
                case .success(let batch?): queue.append(batch)
                case .success(nil): finished = true
                case .failure(let error):
                    failure = error
                    finished = true
                }
                let done = finished
                condition.broadcast()
                condition.unlock()
                if done { return }
            }
        }
        thread.name = "syncledger-read-ahead"
        thread.start()
    }

    /// The next batch, or nil after the last.
    func next() throws -> LedgerBatch? {
        condition.lock()
        defer { condition.unlock() }
        while head == queue.count && !finished { condition.wait() }
        if head < queue.count {
            let batch = queue[head]
            head += 1
            if head >= 64 {
                queue.removeFirst(head)
                head = 0
            }
            condition.broadcast()
            return batch
        }
        if let failure { throw failure }
        return nil
    }

    /// Stops the reading thread and waits for it to end (it may be reading a batch). Call once.
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
        exited.wait()
    }
}

/// Experiment switches for the rebuild's write path (environment, read once). TEMPORARY.
enum FoldTuning {
    static let env = ProcessInfo.processInfo.environment
    static let readAhead = env["SYNCLEDGER_FOLD_READ_AHEAD"] != "0"
    static let deferIndexes = env["SYNCLEDGER_FOLD_DEFER_INDEXES"] != "0"
    static let skipLookups = env["SYNCLEDGER_FOLD_SKIP_LOOKUPS"] != "0"
}
