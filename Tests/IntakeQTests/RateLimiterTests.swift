import Foundation
import IntakeQ
import TestSupport
import Testing

@Suite struct RateLimiterTests {
    static let t0 = Date(timeIntervalSince1970: 1_795_662_012)  // 2026-11-26T03:00:12Z

    @Test func burstNeverExceedsPerMinuteBudget() async throws {
        let clock = ManualClock(now: Self.t0)
        let limiter = RateLimiter(policy: .init(requestsPerMinute: 10, dailyBudget: 500), clock: clock)
        let times = Locked<[Date]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await limiter.acquire()
                    times.withLock { $0.append(clock.now()) }
                }
            }
            try await group.waitForAll()
        }
        let calls = (await limiter.recordedCalls()).sorted()
        #expect(calls.count == 50)
        for (i, t) in calls.enumerated() {
            let inWindow = calls[i...].prefix { $0.timeIntervalSince(t) < 60 }.count
            #expect(inWindow <= 10, "\(inWindow) calls within 60 s of \(t)")
        }
        // 50 calls at 10/min need at least 4 full minutes; the manual clock slept instead of real time.
        #expect(calls.last!.timeIntervalSince(calls.first!) >= 240)
        #expect(!clock.sleeps.isEmpty)
    }

    @Test func sequentialCallsWaitExactlyForTheWindow() async throws {
        let clock = ManualClock(now: Self.t0)
        let limiter = RateLimiter(policy: .init(requestsPerMinute: 2, dailyBudget: .max), clock: clock)
        #expect(try await limiter.acquire() == 0)
        clock.advance(seconds: 10)
        #expect(try await limiter.acquire() == 0)
        let waited = try await limiter.acquire()
        #expect(waited == 50)  // the first call leaves the window at t0 + 60
        #expect(clock.sleeps == [50])
        #expect(await limiter.remainingToday() == Int.max)
    }

    @Test func eachWaitIsToldBeforeItIsWaited() async throws {
        let clock = ManualClock(now: Self.t0)
        let limiter = RateLimiter(policy: .init(requestsPerMinute: 2, dailyBudget: .max), clock: clock)
        let told = Locked<[(Double, Int, Int)]>([])
        let ended = Locked<[Int]>([])
        await limiter.setOnWait({ seconds, recent in told.withLock { $0.append((seconds, recent, clock.sleeps.count)) } },
                                ended: { ended.withLock { $0.append(clock.sleeps.count) } })
        #expect(try await limiter.acquire() == 0)
        clock.advance(seconds: 10)
        #expect(try await limiter.acquire() == 0)
        #expect(told.withLock { $0.isEmpty })
        #expect(try await limiter.acquire() == 50)
        // Told once, of the 50 s and the two calls filling the minute, before the sleep began.
        let calls = told.withLock { $0 }
        #expect(calls.count == 1 && calls[0].0 == 50 && calls[0].1 == 2 && calls[0].2 == 0, "\(calls)")
        // And told once it is over, after the sleep.
        #expect(ended.withLock { $0 } == [1])
    }

    @Test func dailyBudgetPersistsAcrossInstancesAndExplainsItself() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("iq-\(UUID().uuidString)/state")
        let path = dir.appendingPathComponent("api-calls.json").path
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        let clock = ManualClock(now: Self.t0)
        let policy = RateLimitPolicy(requestsPerMinute: 1000, dailyBudget: 500)
        do {
            let a = RateLimiter(policy: policy, clock: clock, store: FileCallRecord(path: path))
            for i in 0..<300 {
                try await a.acquire()
                if i == 0 { clock.advance(seconds: 1) }
            }
            #expect(await a.remainingToday() == 200)
        }
        // The file is private to the owner and holds 300 calls.
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        #expect(try FileCallRecord(path: path).load().count == 300)

        let b = RateLimiter(policy: policy, clock: clock, store: FileCallRecord(path: path))
        #expect(await b.remainingToday() == 200)
        for _ in 0..<200 { try await b.acquire() }
        do {
            try await b.acquire()
            Issue.record("expected dailyBudgetExhausted")
        } catch let e as IntakeQError {
            #expect(e.code == .dailyBudgetExhausted)
            #expect(e.remaining == 0)
            #expect(e.description == "daily API budget used up: 0 of 500 calls left; the next frees at 2026-11-27T03:00:12Z")
        }
        // A third instance sees the same; after the oldest call leaves the window, one slot frees.
        let c = RateLimiter(policy: policy, clock: clock, store: FileCallRecord(path: path))
        #expect(await c.resetsAt() == Self.t0.addingTimeInterval(86_400))
        clock.set(Self.t0.addingTimeInterval(86_400 + 0.5))
        #expect(await c.remainingToday() == 1)
        try await c.acquire()
        #expect(await c.remainingToday() == 0)
    }

    @Test func recordIsWrittenBeforeTheCallReturns() async throws {
        let store = InMemoryCallRecord()
        let limiter = RateLimiter(policy: .init(), clock: ManualClock(now: Self.t0), store: store)
        try await limiter.acquire()
        #expect(try store.load() == [Self.t0])
    }
}
