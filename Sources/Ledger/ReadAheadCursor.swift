import EventLog
import Foundation

/// A cursor over a range of the log that reads ahead on a thread of its own: the next batches are
/// read, checked (header and payload CRCs) and decompressed while the caller reads the events of
/// this one, and their hash chain links (SHA-256 of the content, the larger part of a batch's
/// check) are checked on Dispatch's threads beside both (`ChainCheck`); the caller gets a
/// batch's events only once its link has passed. `LogCursor` does all of it on the caller's
/// thread, where checking a batch took about three quarters of a replay's time. With the chain
/// on the reading thread, that thread was what bounded a replay (stop 53).
///
/// For reading a range to its end (a replay, an export): at the end of the log as it was when the
/// thread got there, `next()` returns nil and the cursor is done; unlike `LogCursor` it does not
/// follow later appends. Errors come out of `next()` where `LogCursor` would have thrown them: after
/// every event before the damaged batch. At most `depth` batches (read, their chain links checked or
/// being checked) wait beside the one being read, and the thread holds one more while it waits for room. One caller at a time; dropping
/// the cursor stops the thread (and waits for it).
public final class ReadAheadCursor {
    /// What the reading thread and the caller share, only under `condition`.
    private final class Shared: @unchecked Sendable {
        // @unchecked: `cursor` is used only by the reading thread (it shares the caller's
        // `EventLogReader`, which holds no state a read changes: its directory, and segment
        // lists it lists afresh); `queue`, `stopped` and `running` only under `condition`. The
        // errors handed over are the cursor's `LogError`s (Sendable).
        let cursor: LogCursor
        let depth: Int
        let condition = NSCondition()
        var queue: [Result<(BatchInfo, [UInt8], ChainCheck)?, any Error>] = []
        var stopped = false
        var running = false

        init(cursor: LogCursor, depth: Int) {
            self.cursor = cursor
            self.depth = depth
        }

        /// The reading thread: batches until the end, an error, or `stopped`.
        func readAll() {
            while true {
                let item: Result<(BatchInfo, [UInt8], ChainCheck)?, any Error>
                do { item = .success(try cursor.nextBatchCheckingChainAside()) } catch { item = .failure(error) }
                condition.lock()
                while queue.count >= depth && !stopped { condition.wait() }
                if stopped {
                    condition.unlock()
                    break
                }
                var more = false
                if case .success(let b) = item, b != nil { more = true }
                queue.append(item)
                condition.broadcast()
                condition.unlock()
                if !more { break }
            }
            condition.lock()
            running = false
            condition.broadcast()
            condition.unlock()
        }

        func take() -> Result<(BatchInfo, [UInt8], ChainCheck)?, any Error> {
            condition.lock()
            defer { condition.unlock() }
            while queue.isEmpty { condition.wait() }
            let item = queue.removeFirst()
            condition.broadcast()
            return item
        }

        func stop() {
            condition.lock()
            stopped = true
            condition.broadcast()
            while running { condition.wait() }
            queue = []
            condition.unlock()
        }
    }

    private let shared: Shared
    /// What the reading thread holds (for tests: it is freed once the thread has ended).
    var threadState: AnyObject { shared }
    private let from: UInt64
    private let through: UInt64?
    private var started = false
    private var done = false
    // The batch being read: its lines, where the next starts, and that line's seq.
    private var content: [UInt8] = []
    private var position = 0
    private var lineSeq: UInt64 = 0
    private var current: BatchInfo?

    /// Events from `seq` through `through` (inclusive; nil: to the end of the log as it is when
    /// the reading thread gets there), reading up to `depth` batches ahead.
    public init(_ reader: EventLogReader, from seq: UInt64 = 1, through: UInt64? = nil, depth: Int = 2) throws {
        self.from = max(1, seq)
        self.through = through
        shared = Shared(cursor: try reader.cursor(from: seq, through: through), depth: max(1, depth))
    }

    deinit { if started { shared.stop() } }

    /// The next event, or nil after the last. Throws `LogError` on corruption, naming segment,
    /// offset and seq, as `LogCursor.next()` does.
    public func next() throws -> LogRecord? {
        while true {
            if let batch = current, position < content.count {
                let seq = lineSeq
                let start = position
                let end = LogRecord.lineEnd(in: content, from: start)
                position = end + 1
                lineSeq += 1
                if seq < from { continue }
                if let through, seq > through {
                    finish()
                    return nil
                }
                return LogRecord(seq: seq, payload: content[start..<end], batch: batch)
            }
            guard try nextBatchLoaded() else { return nil }
        }
    }

    /// Takes the next checked batch from the reading thread (starting it on the first call).
    private func nextBatchLoaded() throws -> Bool {
        guard !done else { return false }
        if !started {
            started = true
            shared.running = true
            let shared = self.shared
            let thread = Thread { shared.readAll() }
            thread.name = "syncledger-read-ahead"
            thread.start()
        }
        content = []  // the batch read before goes before the next is taken
        current = nil
        switch shared.take() {
        case .success(let (info, bytes, check)?):
            do { try check.wait() } catch {
                finish()
                throw error
            }
            (current, content) = (info, bytes)
            position = 0
            lineSeq = info.firstSeq
            return true
        case .success(nil):
            finish()
            return false
        case .failure(let error):
            finish()
            throw error
        }
    }

    /// Done: stops the reading thread (nothing more is read).
    private func finish() {
        done = true
        content = []
        current = nil
        if started { shared.stop() }
        started = false
    }
}
