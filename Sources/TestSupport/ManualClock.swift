import Foundation
import IntakeQ
import Synchronization

/// The one manual clock of the tests: time moves only when a test (or a sleeper) moves it.
///
/// - As an `IntakeQClock` (rate limiter, retry back-off): `sleep` returns at once after moving
///   `now` forward to the sleeper's wake-up time (sleepers that overlap wake at their own
///   targets, never earlier), and records the requested duration.
/// - As a ledger clock (`LedgerWriter(clock:)` takes `() -> Int64`): `read()` / `millis` give
///   and set the time in milliseconds since 1970.
public final class ManualClock: IntakeQClock, Sendable {
    private struct State {
        var current: Date
        var recorded: [Double] = []
    }

    private let state: Mutex<State>

    public init(now: Date = Date(timeIntervalSince1970: 1_795_168_800)) {  // 2026-11-20T10:00:00Z
        state = Mutex(State(current: now))
    }

    /// Starts at `millis` milliseconds since 1970.
    public convenience init(_ millis: Int64) {
        self.init(now: Date(timeIntervalSince1970: Double(millis) / 1000))
    }

    public func now() -> Date { state.withLock { $0.current } }

    public func sleep(seconds: Double) async throws {
        try Task.checkCancellation()
        state.withLock { s in
            s.recorded.append(seconds)
            let target = s.current.addingTimeInterval(max(0, seconds))
            if target > s.current { s.current = target }
        }
        await Task.yield()
    }

    /// Moves time forward without recording a sleep.
    public func advance(seconds: Double) {
        state.withLock { $0.current = $0.current.addingTimeInterval(seconds) }
    }

    public func set(_ date: Date) { state.withLock { $0.current = date } }

    /// Every duration passed to `sleep`, in call order.
    public var sleeps: [Double] { state.withLock { $0.recorded } }

    /// The time in milliseconds since 1970 (rounded to the nearest millisecond).
    public var millis: Int64 {
        get { Int64((now().timeIntervalSince1970 * 1000).rounded()) }
        set { set(Date(timeIntervalSince1970: Double(newValue) / 1000)) }
    }

    /// `millis`, as a function a `LedgerWriter` can call.
    public func read() -> Int64 { millis }
}
