import Foundation

/// The time source of the rate limiter and the retry back-off, injectable so tests never sleep.
public protocol IntakeQClock: Sendable {
    func now() -> Date
    func sleep(seconds: Double) async throws
}

/// The real clock.
public struct SystemClock: IntakeQClock {
    public init() {}
    public func now() -> Date { Date() }
    public func sleep(seconds: Double) async throws {
        guard seconds > 0 else { return }
        try await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
    }
}

/// Test double: `sleep` returns at once after moving `now` forward to the sleeper's wake-up
/// time (sleepers that overlap wake at their own targets, never earlier), and records the
/// requested duration.
public final class ManualClock: IntakeQClock, @unchecked Sendable {
    // @unchecked: all mutable state is behind `lock`.
    private let lock = NSLock()
    private var current: Date
    private var recorded: [Double] = []

    public init(now: Date = Date(timeIntervalSince1970: 1_795_168_800)) {  // 2026-11-20T10:00:00Z
        self.current = now
    }

    public func now() -> Date {
        lock.lock()
        defer { lock.unlock() }
        return current
    }

    public func sleep(seconds: Double) async throws {
        try Task.checkCancellation()
        record(seconds)
        await Task.yield()
    }

    private func record(_ seconds: Double) {
        lock.lock()
        defer { lock.unlock() }
        recorded.append(seconds)
        let target = current.addingTimeInterval(max(0, seconds))
        if target > current { current = target }
    }

    /// Moves time forward without recording a sleep.
    public func advance(seconds: Double) {
        lock.lock()
        current = current.addingTimeInterval(seconds)
        lock.unlock()
    }

    public func set(_ date: Date) {
        lock.lock()
        current = date
        lock.unlock()
    }

    /// Every duration passed to `sleep`, in call order.
    public var sleeps: [Double] {
        lock.lock()
        defer { lock.unlock() }
        return recorded
    }
}
