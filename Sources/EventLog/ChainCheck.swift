import Dispatch

/// A batch's chain link being checked on another core: SHA-256 of its content, two thirds of
/// what checking a batch costs (BENCHMARKS.md, stop 53). A reader hands the check to Dispatch
/// and goes on to the next batch; whoever uses the batch's events first calls `wait()`, which
/// throws the error a sequential read would have thrown at this batch. Links do not depend on
/// each other's results (`ChainLink`), so batches are checked side by side and a reader that
/// waits for them in log order reports the first broken one, after every event before it.
/// `wait()` blocks its thread until a Dispatch thread has run the check: call it from a thread of
/// one's own (a command's, a reading thread), not from a pool of fixed width that the check
/// itself may need.
public final class ChainCheck: @unchecked Sendable {
    // @unchecked: `failure` is written once by the checking thread before it signals `done`,
    // and read only after waiting for `done`; `waited` only by the one thread that waits.
    private let done = DispatchSemaphore(value: 0)
    private var failure: LogError?
    private var waited = false

    private init() {}

    /// A check that has already passed (a batch checked in full before it was handed out).
    static let passed: ChainCheck = {
        let c = ChainCheck()
        c.waited = true
        return c
    }()

    /// Starts checking `link` against `content` on Dispatch's threads.
    static func start(_ link: ChainLink, _ content: [UInt8]) -> ChainCheck {
        let check = ChainCheck()
        DispatchQueue.global().async {
            check.failure = link.failure(content)
            check.done.signal()
        }
        return check
    }

    /// Returns when the check is done; throws `LogError` (`brokenChain`, naming segment, offset
    /// and seq) when the batch's content does not hash to its chain hash. One thread at a time.
    public func wait() throws {
        if !waited {
            done.wait()
            waited = true
        }
        if let failure { throw failure }
    }
}

/// Batches read ahead whose chain links are being checked aside, handed on in log order, each only
/// once its link passed (`verify`, `LogCursor.forEachBatchCheckingChainAside`). After a failure —
/// a broken link, or an error of the code they are handed to — or a stop, the rest is dropped:
/// nothing after it is handed on, as a reader checking one batch at a time would never have got there.
struct ChainWindow<Item> {
    private var pending: [(item: Item, check: ChainCheck?, bytes: Int)] = []
    /// Bytes of the items waiting (as given to `append`).
    private(set) var bytes = 0

    mutating func append(_ item: Item, check: ChainCheck?, bytes: Int = 0) {
        pending.append((item, check, bytes))
        self.bytes += bytes
    }

    /// Hands items to `body` in order, each after its check passed, until `kept` are left. False
    /// when `body` said stop.
    mutating func settle(keeping kept: Int, _ body: (Item) throws -> Bool) throws -> Bool {
        while pending.count > max(0, kept) {
            let next = pending.removeFirst()
            bytes -= next.bytes
            let go: Bool
            do {
                try next.check?.wait()
                go = try body(next.item)
            } catch {
                drop()
                throw error
            }
            if !go {
                drop()
                return false
            }
        }
        return true
    }

    private mutating func drop() {
        pending = []
        bytes = 0
    }
}
