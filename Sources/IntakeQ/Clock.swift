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

// The manual clock the tests use lives in the TestSupport target (Sources/TestSupport/ManualClock.swift).
