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

/// Reads the log on one thread and folds it into chunks on another, while the caller writes the
/// previous chunk: reading (decompressing, checking each batch's checksums and hash chain,
/// decoding its envelopes) runs ahead of folding by at most `readAhead` batches, and folding one
/// chunk overlaps with writing the one before. While the fold is behind (half the read-ahead
/// waiting), the reader also works out the facts of each observation it reads (scanning its
/// JSON, opening its sealed parts), which the fold would otherwise do: the reader had time to
/// spare and the fold none (BENCHMARKS.md, stop 42). Three stages on two cores: none of them alone
/// fills a core, so the cores are shared by whichever stage has work. One folded chunk may wait
/// for the writer while the producer folds the next, so at most three chunks live at once (one
/// being written, one waiting, one being folded). With a rendezvous instead (the producer waiting
/// until the writer took its chunk), a writer slower than the fold left the producer idle and the
/// reader blocked on a full read-ahead, one core idle: the 1M-event rebuild took ~5 % longer
/// (BENCHMARKS.md, stop 40). The SQLite connection is used only by the caller; neither the
/// reader nor the producer touches the database.
final class FoldPipeline: @unchecked Sendable {
    // @unchecked: `batches`, `read`, `prepare` and `prepared` are used only by the reader thread, `makeFolder` and `fold`
    // only by the producer thread, from `start()` until `finish()` has waited for both to end (the
    // caller reads the timings after that); `slot`, `closed` and `running` only under `condition`;
    // `readQueue` and `readerRunning` only under `readCondition` (which may be held while taking
    // `condition`, never the other way round). A batch is touched by one thread at a time: the
    // reader until it is queued, the producer after; a chunk by the producer until it is handed
    // over, the writer after. A rebuild's `CarriedAppointments`, shared by all the chunks' folders,
    // is the producer's until it hands over `.end` (`sortForWriting` settles each chunk with it),
    // then the writer's: the hand-over under `condition` orders the two.
    private enum Item {
        case chunk(FoldedChunk)
        case end
        case failed(any Error)
    }
    /// A batch read, with what the reader worked out for the fold (`prepared`).
    struct ReadBatch {
        var batch: LedgerBatch
        /// By index in the batch: the observation's facts as the fold works them out, or the error
        /// it throws; nil for an event not prepared (then the fold works it out itself). Empty
        /// when the reader prepared none of the batch.
        var prepared: [ChunkFolder.PreparedFacts?]
    }
    private let batches: LedgerBatches
    /// Batches read and not yet folded, under `readCondition`; the reader stops at `readAhead`.
    private var readQueue: [Result<ReadBatch?, any Error>] = []
    private var readerRunning = false
    private let readCondition = NSCondition()
    static let readAhead = 8
    private let chunkSize: Int
    private let makeFolder: (BatchInfo?) -> ChunkFolder
    private let condition = NSCondition()
    private var slot: Item?
    private var closed = false
    private var running = false
    /// Seconds the reader spent reading the log (its thread's time in `LedgerBatches.next`) and
    /// the producer folding; both are wall-clock time on their threads. `prepare`: the reader's
    /// time working out observations' facts for the fold (`prepareWhenQueued`).
    private(set) var read = 0.0
    private(set) var fold = 0.0
    private(set) var prepare = 0.0
    /// Observations whose facts the reader worked out.
    private(set) var prepared = 0
    /// The reader works out the facts of a batch's observations for the fold (the JSON scan, and
    /// opening sealed parts: most of the fold's work) when at least this many batches are already
    /// waiting for the fold, that is when the fold is the slower of the two and the reader would
    /// otherwise wait for room. Nil: never (no view that reads observations is folded).
    private let prepareWhenQueued: Int?
    /// Events at or before this seq are not prepared: every view that reads observations has
    /// applied them (a catch-up whose other views are behind).
    private let prepareAfter: UInt64

    /// `makeFolder` makes each chunk's folder, given the last batch of the chunk before (nil for the first).
    init(batches: LedgerBatches, chunkSize: Int, prepareWhenQueued: Int? = nil, prepareAfter: UInt64 = 0,
         makeFolder: @escaping (BatchInfo?) -> ChunkFolder) {
        self.batches = batches
        self.chunkSize = max(1, chunkSize)
        self.prepareWhenQueued = prepareWhenQueued
        self.prepareAfter = prepareAfter
        self.makeFolder = makeFolder
    }

    func start() {
        running = true
        readerRunning = true
        spawn("syncledger-read", readAll, readCondition) { self.readerRunning = false }
        spawn("syncledger-fold", produce, condition) { self.running = false }
    }

    /// Runs `body` on a thread of its own, then `ended` under `condition` (clearing the thread's
    /// running flag) and wakes its waiters. Decoding, upcasting and opening sealed events recurse
    /// over JSON, and so do the fold's readers: each thread gets a main thread's 8 MiB stack.
    private func spawn(_ name: String, _ body: @escaping @Sendable () -> Void, _ condition: NSCondition,
                       ended: @escaping @Sendable () -> Void) {
        let thread = Thread {
            body()
            condition.lock()
            ended()
            condition.broadcast()
            condition.unlock()
        }
        thread.stackSize = 8 << 20
        thread.name = name
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

    /// Stops the reader and the producer (if they still run) and waits for their threads to end.
    func finish() {
        condition.lock()
        closed = true
        condition.broadcast()
        while running { condition.wait() }
        slot = nil
        condition.unlock()
        readCondition.lock()
        readCondition.broadcast()
        while readerRunning { readCondition.wait() }
        readQueue = []
        readCondition.unlock()
    }

    /// The reader's thread: reads batches until the last (or an error), at most `readAhead`
    /// ahead of the producer, and stops early when the pipeline is closed.
    private func readAll() {
        while true {
            let t0 = monotonicSeconds()
            let item: Result<ReadBatch?, any Error>
            do {
                if let batch = try batches.next() {
                    let t1 = monotonicSeconds()
                    read += t1 - t0
                    var facts: [ChunkFolder.PreparedFacts?] = []
                    if let least = prepareWhenQueued, queuedBatches >= least {
                        facts = ChunkFolder.prepare(batch, after: prepareAfter)
                        prepared += facts.lazy.filter { $0 != nil }.count
                        prepare += monotonicSeconds() - t1
                    }
                    item = .success(ReadBatch(batch: batch, prepared: facts))
                } else {
                    read += monotonicSeconds() - t0
                    item = .success(nil)
                }
            } catch {
                read += monotonicSeconds() - t0
                item = .failure(error)
            }
            var more = false
            if case .success(let b) = item, b != nil { more = true }
            readCondition.lock()
            while readQueue.count >= Self.readAhead && !isClosed { readCondition.wait() }
            guard !isClosed else {
                readCondition.unlock()
                return
            }
            // Handed over, not shared: the producer folds the batch's events in place, which
            // would copy them all if this thread still held the batch.
            readQueue.append(consume item)
            readCondition.broadcast()
            readCondition.unlock()
            if more { continue }
            return
        }
    }

    /// Batches read and waiting for the fold.
    private var queuedBatches: Int {
        readCondition.lock()
        defer { readCondition.unlock() }
        return readQueue.count
    }

    /// The next batch the reader read, nil after the last; throws the reader's error.
    private func nextBatch() throws -> ReadBatch? {
        readCondition.lock()
        defer { readCondition.unlock() }
        while readQueue.isEmpty {
            // The reader hands over its last item before it stops; it stops without one only
            // when the pipeline was closed.
            if !readerRunning || isClosed { return nil }
            readCondition.wait()
        }
        let item = readQueue.removeFirst()
        readCondition.broadcast()
        return try item.get()
    }

    private var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return closed
    }

    /// Hands `item` to the writer once the chunk handed before was taken (not waiting for this
    /// one to be taken); false when the writer stopped.
    private func hand(_ item: Item) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while slot != nil && !closed { condition.wait() }
        guard !closed else { return false }
        slot = item
        condition.broadcast()
        return true
    }

    private func produce() {
        var previous: BatchInfo?
        do {
            var finished = false
            while !finished {
                let c = FoldedChunk(makeFolder(previous))
                while c.events < chunkSize {
                    if isClosed { return }
                    guard var next = try nextBatch() else {
                        finished = true
                        break
                    }
                    let t1 = monotonicSeconds()
                    // Each event is passed where it is in the batch's storage, not copied out
                    // of it (a copy retains and releases its seven references); so is each
                    // prepared observation (taken out of its array, which is then this thread's alone).
                    var prepared: [ChunkFolder.PreparedFacts?] = []
                    swap(&prepared, &next.prepared)
                    let deferred = next.batch.deferred
                    try next.batch.events.withUnsafeMutableBufferPointer { events in
                        for i in events.indices {
                            try c.folder.add(&events[i], opening: deferred?.opening(at: i),
                                             prepared: i < prepared.count ? prepared[i].take() : nil)
                        }
                    }
                    fold += monotonicSeconds() - t1
                    c.events += next.batch.events.count
                    c.last = next.batch.info
                    BackgroundRelease.release(&next.batch.events, leaving: [])
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

/// Frees large, finished values (a written chunk's folded state, a folded batch's envelopes) on
/// a thread of its own. In a pipelined rebuild the writer is the slowest stage and the fold the
/// next; freeing a chunk's hundreds of thousands of objects took ~1 s of the writer's thread in a
/// 1M-event rebuild (`perf`), most of it atomic reference counts on memory the other core wrote.
/// It is the same CPU on another thread: it helps while the cores have time to spare (the three
/// stages kept ~1.75 of 2 busy).
enum BackgroundRelease {
    private static let queue = DispatchQueue(label: "syncledger-release", qos: .utility)

    /// The one owner of a value until the queue drops it.
    private final class Doomed<T>: @unchecked Sendable {
        // @unchecked: only the queue's block touches it after `release` hands it over.
        let value: T
        init(_ value: T) { self.value = value }
    }

    /// Replaces `value` with `empty` and frees what `value` held on the release queue. The
    /// caller keeps no reference to it: the box is the only owner when the block runs.
    static func release<T>(_ value: inout T, leaving empty: T) {
        let box = Unmanaged.passRetained(Doomed(value))
        value = empty
        queue.async { box.release() }
    }
}
