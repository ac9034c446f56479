import FakeIntakeQ
import Foundation
import IntakeQ
import Logging
import TestSupport

enum Fixtures {
    /// Loaded once for all tests.
    static let practice: FixturePractice = {
        do {
            return try FixturePractice.load(directory: Paths.practice)
        } catch {
            fatalError("cannot load fixtures: \(error)")
        }
    }()

    static let traps: [String: String] = {
        struct F: Decodable { var traps: [String: String] }
        let data = FileManager.default.contents(atPath: Paths.practice + "/expected.json")!
        return try! JSONDecoder().decode(F.self, from: data).traps
    }()

    static func appointment(_ trap: String, day: Int = 1) throws -> Appointment {
        let id = traps[trap]!
        for raw in practice.day(day)!.state.appointments + practice.day(day)!.state.deleted {
            let a = try Appointment.decode(json: raw)
            if a.id == id { return a }
        }
        throw IntakeQError(code: .notFound, detail: "no \(trap) on day \(day)")
    }

    /// Roster patients' client ids (as strings).
    static let rosterIds: Set<String> = {
        struct R: Decodable {
            struct Org: Decodable { var patients: [P] }
            struct P: Decodable { var intakeq_client_id: FlexibleID }
            var organizations: [Org]
        }
        let r = try! JSONDecoder().decode(R.self, from: Data(practice.roster))
        return Set(r.organizations.flatMap { $0.patients.map(\.intakeq_client_id.stringValue) })
    }()
}

/// A fake server + client wired with a ManualClock; shut both down with `close()`.
struct Rig {
    let server: FakeIntakeQServer
    let client: IntakeQClient
    let clock: ManualClock
    let limiter: RateLimiter

    static func start(state: PracticeState, apiKey: String = "secret-key-123", clientKey: String? = nil,
                      maxRetries: Int = 3, timeout: Double = 5, policy: RateLimitPolicy = .init(requestsPerMinute: 1000, dailyBudget: 500),
                      serverLimit: Int? = nil) async throws -> Rig {
        let server = FakeIntakeQServer(state: state, apiKey: apiKey, requestsPerMinute: serverLimit)
        let base = try await server.start()
        let clock = ManualClock()
        let limiter = RateLimiter(policy: policy, clock: clock, store: InMemoryCallRecord())
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let client = IntakeQClient(baseURL: base, apiKey: clientKey ?? apiKey, limiter: limiter, clock: clock,
                                   maxRetries: maxRetries, timeoutSeconds: timeout, logger: logger)
        return Rig(server: server, client: client, clock: clock, limiter: limiter)
    }

    func close() async {
        try? await client.shutdown()
        await server.stop()
    }
}

/// `n` appointments, one per hour from a fixed instant, ids a000…
func syntheticState(_ n: Int) -> PracticeState {
    let base: Int64 = 1_795_168_800_000  // 2026-11-20T10:00:00Z
    let appts = (0..<n).map { i -> [UInt8] in
        let start = base + Int64(i) * 3_600_000
        return Array("""
            {"Id":"a\(String(format: "%05d", i))","ClientName":"Client \(i % 7)","ClientEmail":"c\(i % 7)@example.org","ClientId":\(4000 + i % 7),"Status":"Confirmed","StartDate":\(start),"EndDate":\(start + 3_000_000),"LastModified":\(base - 86_400_000)}
            """.utf8)
    }
    return PracticeState(appointments: appts)
}
