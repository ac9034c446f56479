import Dispatch
import Synchronization

/// Appends batches that are sealed first (`PersonalData.sealObservations`), each batch sealed
/// while the one before it is written. Sealing takes both cores for several times the CPU of the
/// append; one after the other, a core sat idle through the append's single-threaded parts and its
/// fdatasync. Overlapped, the batch before is on disk by the time the next one is sealed.
///
/// `append(_:)` returns once both are done, so nothing runs between two calls, and a batch is
/// durable when the call after it returns (or `finish()`). A batch whose sealing fails is not
/// appended and its error is thrown; the batches before it are on disk. After an error the
/// appender is done with: the batch it had sealed is dropped, so use a new one (`sync` fails the
/// run). Not thread-safe, as `LedgerWriter`.
public final class SealedAppender {
    private let writer: LedgerWriter
    private let seal: @Sendable ([NewEvent]) throws -> [NewEvent]
    /// The last batch sealed, not yet appended.
    private var sealed: [NewEvent]?

    /// `seal`: what a batch becomes before it is appended; called on another thread.
    public init(writer: LedgerWriter, seal: @escaping @Sendable ([NewEvent]) throws -> [NewEvent]) {
        self.writer = writer
        self.seal = seal
    }

    /// Seals `batch` while appending the batch the previous call sealed; returns that one as
    /// stored (nothing on the first call).
    @discardableResult
    public func append(_ batch: [NewEvent]) throws -> [EventEnvelope] {
        guard !batch.isEmpty else { return [] }
        guard let previous = sealed else {
            sealed = try seal(batch)
            return []
        }
        sealed = nil
        let sealing = Background.start { [seal] in try seal(batch) }
        let stored: [EventEnvelope]
        do {
            stored = try writer.append(previous)
        } catch {
            _ = try? sealing.value()
            throw error
        }
        sealed = try sealing.value()
        return stored
    }

    /// Appends the last batch sealed; returns it as stored.
    @discardableResult
    public func finish() throws -> [EventEnvelope] {
        guard let last = sealed else { return [] }
        sealed = nil
        return try writer.append(last)
    }
}

/// A computation started on another thread at once; `value()` waits for it.
final class Background<T: Sendable>: Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let result = Mutex<Result<T, any Error>?>(nil)

    private init() {}

    /// Starts `body` on another thread.
    static func start(_ body: @escaping @Sendable () throws -> T) -> Background {
        let b = Background()
        DispatchQueue.global().async {
            let r = Result { try body() }
            b.result.withLock { $0 = r }
            b.done.signal()
        }
        return b
    }

    /// The result, once the computation ended; it throws what the computation threw. Call once.
    func value() throws -> T {
        done.wait()
        return try result.withLock { $0! }.get()
    }
}
