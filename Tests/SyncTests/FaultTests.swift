import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import Sync
import TestSupport
import Testing

@Suite("End to end: API faults")
struct FaultTests {
    @Test("429 with Retry-After, then success: the run completes and the retry is counted")
    func rateLimitedThenSuccess() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        rig.server.inject(.status(429, retryAfter: 1), path: "/appointments", page: 1, times: 1)
        let outcome = try await rig.sync(store: store, day: 1)
        #expect(outcome.status == "completed", "\(outcome.errors)")
        #expect(outcome.counts.new == Fixtures.expected(1).counts.new)
        #expect(outcome.counts.errors == 0)
        #expect(outcome.api.retries == 1)
        #expect(outcome.api.rateLimitHit)
        // settings + 3 window pages + deletedOnly, plus the retried attempt.
        #expect(outcome.api.calls == 6)
        // The client waited what Retry-After asked (on its injected clock).
        #expect(rig.clock.sleeps.contains(1.0), "\(rig.clock.sleeps)")
        let statuses = rig.server.requests().filter { $0.path == "/appointments" && $0.page == 1 && $0.query["deletedOnly"] == nil }.map(\.status)
        #expect(statuses == [429, 200])
        // Recorded in sync.completed and in sync_logs.
        let completed = try StoreReader.events(store).last { $0.type == "sync.completed" }
        #expect(completed?.data["api"]?["retries"] == .number(1))
        #expect(completed?.data["api"]?["rate_limit_hit"] == .bool(true))
        let log = try StoreReader.syncLogs(store).first
        #expect(log?["status"] == .string("completed"))
        #expect(log?["metadata"]?["retries"] == .number(1))
        #expect(log?["metadata"]?["rate_limit_hit"] == .bool(true))
        #expect(log?["metadata"]?["intakeq_api_calls"] == .number(6))
        await rig.stop()
    }

    @Test("one malformed page → partial_success, the rest synced, the error counted and named")
    func malformedPage() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let day = Fixtures.day(1)
        // What page 2 of the window holds, asked before the fault is injected.
        let probe = IntakeQClient(baseURL: rig.baseURL, apiKey: rig.apiKey,
                                  limiter: RateLimiter(policy: .init(requestsPerMinute: 1000, dailyBudget: 1000)))
        let query = AppointmentQuery.window(from: day.nowDate.addingTimeInterval(-90 * 86_400),
                                            to: day.nowDate.addingTimeInterval(90 * 86_400))
        let page2 = Set(try await probe.appointmentsPage(query, page: 2).compactMap(\.id))
        #expect(page2.count == 100)
        let expectedAll = Set(Fixtures.expected(1).ids.new)
        let expectedNew = expectedAll.subtracting(page2)
        #expect(expectedNew.count < expectedAll.count)

        rig.server.clearRequests()
        rig.server.inject(.malformed, path: "/appointments", page: 2, times: 1)
        let store = tmp.sub("store")
        let outcome = try await rig.sync(store: store, day: 1)
        #expect(outcome.status == "partial_success")
        #expect(outcome.exitCode == 2)
        #expect(outcome.counts.errors == 1)
        #expect(outcome.counts.removed == 0)
        #expect(outcome.counts.new == expectedNew.count)
        let ids = RunIds(events: try StoreReader.events(store), run: outcome.runId)
        #expect(ids.new == expectedNew)
        // Page 3 was still fetched, and the error names the page.
        #expect(rig.server.requests().contains { $0.path == "/appointments" && $0.page == 3 })
        #expect(outcome.errors.count == 1)
        #expect(outcome.errorMessage?.contains("GET /appointments page 2") == true, "\(outcome.errorMessage ?? "nil")")
        #expect(outcome.summaryLine.hasPrefix("partial_success: \(expectedNew.count) new, 0 updated, 0 unchanged, 0 removed, 1 errors in "))
        let log = try StoreReader.syncLogs(store).first
        #expect(log?["status"] == .string("partial_success"))
        #expect(log?["appointments_errors"] == .number(1))
        #expect(log?["error_message"]?.stringValue?.contains("page 2") == true)

        // The next complete run picks up what page 2 held.
        let next = try await rig.sync(store: store, day: 1)
        #expect(next.status == "completed")
        #expect(next.counts.new == expectedAll.count - expectedNew.count)
        #expect(next.counts.unchanged == expectedNew.count)
        await rig.stop()
    }
}
