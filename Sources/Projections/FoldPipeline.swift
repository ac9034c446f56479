import Foundation
import EventLog
import Ledger

/// A chunk of the log folded in memory (`ChunkFolder.add`), ready to be written (`flush`).
final class FoldedChunk {
    let folder: ChunkFolder
    var events = 0
    /// The last batch folded.
    var last: BatchInfo?

    init(_ folder: ChunkFolder) { self.folder = folder }
}

/// Reads the log and folds it into chunks on a thread of its own, while the caller writes the
/// previous chunk: reading and folding one chunk overlaps with writing the one before, on the
/// second core. The hand-off is a rendezvous: a folded chunk waits until the writer takes it,
/// so at most two chunks live at once (one being written, one folded or being folded).
/// The SQLite connection is used only by the caller; the producer never touches the database.
final class FoldPipeline: @unchecked Sendable {
    // @unchecked: `batches`, `makeFolder`, `read` and `fold` are used only by the producer thread
    // from `start()` until `finish()` has waited for it to end (the caller reads the timings after
    // that); `slot`, `closed` and `running` only under `condition`. A chunk is touched by one
    // thread at a time: the producer until it is handed over, the writer after.
    private enum Item {
        case chunk(FoldedChunk)
        case end
        case failed(any Error)
    }
    private let batches: LedgerBatches
    private let chunkSize: Int
    private let makeFolder: (BatchInfo?) -> ChunkFolder
    private let condition = NSCondition()
    private var slot: Item?
    private var closed = false
    private var running = false
    /// Seconds the producer spent reading the log and folding (its own thread's time).
    private(set) var read = 0.0
    private(set) var fold = 0.0

    /// `makeFolder` makes each chunk's folder, given the last batch of the chunk before (nil for the first).
    init(batches: LedgerBatches, chunkSize: Int, makeFolder: @escaping (BatchInfo?) -> ChunkFolder) {
        self.batches = batches
        self.chunkSize = max(1, chunkSize)
        self.makeFolder = makeFolder
    }

    func start() {
        running = true
        let thread = Thread { [self] in
            produce()
            condition.lock()
            running = false
            condition.broadcast()
            condition.unlock()
        }
        // The fold's JSON readers recurse; give the producer a main thread's stack.
        thread.stackSize = 8 << 20
        thread.name = "syncledger-fold"
        thread.start()
    }

    /// The next folded chunk, nil after the last; throws the producer's error (reading the log,
    /// folding) where the one-thread fold would have thrown it.
    func next() throws -> FoldedChunk? {
        condition.lock()
        while slot == nil { condition.wait() }
        let item = slot!
        slot = nil
        condition.broadcast()
        condition.unlock()
        switch item {
        case .chunk(let c): return c
        case .end: return nil
        case .failed(let error): throw error
        }
    }

    /// Stops the producer (if it still runs) and waits for its thread to end.
    func finish() {
        condition.lock()
        closed = true
        condition.broadcast()
        while running { condition.wait() }
        slot = nil
        condition.unlock()
    }

    private var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return closed
    }

    /// Hands `item` to the writer and waits until it is taken; false when the writer stopped.
    private func hand(_ item: Item) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while slot != nil && !closed { condition.wait() }
        guard !closed else { return false }
        slot = item
        condition.broadcast()
        while slot != nil && !closed { condition.wait() }
        return !closed
    }

    private func produce() {
        var previous: BatchInfo?
        do {
            var finished = false
            while !finished {
                let c = FoldedChunk(makeFolder(previous))
                while c.events < chunkSize {
                    if isClosed { return }
                    let t0 = monotonicSeconds()
                    guard let batch = try batches.next() else {
                        finished = true
                        break
                    }
                    let t1 = monotonicSeconds()
                    for e in batch.events { try c.folder.add(e) }
                    read += t1 - t0
                    fold += monotonicSeconds() - t1
                    c.events += batch.events.count
                    c.last = batch.info
                }
                if c.events > 0 {
                    let t2 = monotonicSeconds()
                    c.folder.sortForWriting()
                    fold += monotonicSeconds() - t2
                    guard hand(.chunk(c)) else { return }
                    previous = c.last
                }
            }
            _ = hand(.end)
        } catch {
            _ = hand(.failed(error))
        }
    }
}
