import Foundation
import Hummingbird
import IntakeQ
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A fake IntakeQ over loopback that behaves like the real API as INTAKEQ-API.md describes it:
///
/// - `GET /api/v1/appointments`: newest `StartDate` first, 100 per page (`page`, 1-based),
///   canceled rows included, deleted rows only with `deletedOnly=true`; `startDate`/`endDate`
///   filter by the UTC day of `StartDate`, inclusive; `client` is a case-insensitive *partial*
///   match on ClientName or ClientEmail (the trap); `status`, `practitionerEmail`,
///   `updatedSince` (LastModified on or after that UTC day).
/// - `GET /api/v1/appointments/{id}`: the object, or 404 for unknown and deleted ids.
/// - `GET /api/v1/appointments/settings`, `GET /api/v1/clients?search=&page=`.
/// - `X-Auth-Key` must equal the key, else 401.
///
/// Bodies are the state's raw bytes, re-indented (the real API's whitespace is unknown).
/// Faults can be injected per path/page; an optional per-minute limit answers 429 with `Retry-After`.
public final class FakeIntakeQServer: Sendable {
    struct Injected: Sendable {
        var fault: Fault
        var path: String
        var page: Int?
        var remaining: Int
    }

    struct Mutable: Sendable {
        var state: ServedState
        var faults: [Injected] = []
        var log: [RecordedRequest] = []
        var recent: [Date] = []
        var requestsPerMinute: Int?
        /// Standing faults (`fake-intakeq --fail-rate / --429-every`): every request counts.
        var failRate = 0.0
        var every429: Int?
        var served = 0
        var random: UInt64 = 0x9E37_79B9_7F4A_7C15
        var pretty = true
        var port: Int?
        var task: Task<Void, any Error>?
        var group: ServiceGroup?
        var webhookURL: String?
        var sentWebhooks: [SentWebhook] = []
        /// `start` waiting for the bound port.
        var portWaiter: CheckedContinuation<Int, any Error>?
    }

    let apiKey: String
    let box: Mutex<Mutable>
    private let logger: Logger

    /// - Parameters:
    ///   - requestsPerMinute: when set, the fake answers 429 (with `Retry-After`) once more than
    ///     this many requests arrive within 60 s, like IntakeQ's own limit.
    public init(state: PracticeState, apiKey: String, requestsPerMinute: Int? = nil, logger: Logger? = nil) {
        self.apiKey = apiKey
        self.box = Mutex(Mutable(state: Self.serve(state), requestsPerMinute: requestsPerMinute))
        var l = logger ?? Logger(label: "fake-intakeq")
        if logger == nil { l.logLevel = .warning }
        self.logger = l
    }

    /// Starts listening on 127.0.0.1 (port 0 = any free port) and returns the base URL,
    /// e.g. `http://127.0.0.1:40123/api/v1`.
    @discardableResult
    public func start(port: Int = 0) async throws -> String {
        let responder = FakeResponder(server: self)
        let logger = self.logger
        let app = Application(
            responder: responder,
            configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: nil),
            onServerRunning: { channel in
                let p = channel.localAddress?.port ?? 0
                self.box.withLock { m in
                    m.portWaiter?.resume(returning: p)
                    m.portWaiter = nil
                }
            },
            logger: logger
        )
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        let bound: Int = try await withCheckedThrowingContinuation { cont in
            box.withLock { $0.portWaiter = cont }
            let task = Task {
                do {
                    try await group.run()
                } catch {
                    self.box.withLock { m in
                        m.portWaiter?.resume(throwing: error)
                        m.portWaiter = nil
                    }
                    throw error
                }
                self.box.withLock { m in
                    m.portWaiter?.resume(throwing: CancellationError())
                    m.portWaiter = nil
                }
            }
            box.withLock {
                $0.task = task
                $0.group = group
            }
        }
        box.withLock { $0.port = bound }
        return "http://127.0.0.1:\(bound)/api/v1"
    }

    /// The bound port once started.
    public var port: Int? { box.withLock { $0.port } }

    /// The base URL once started.
    public var baseURL: String? { port.map { "http://127.0.0.1:\($0)/api/v1" } }

    /// Stops the server and waits for it to close.
    public func stop() async {
        let (task, group) = box.withLock { m -> (Task<Void, any Error>?, ServiceGroup?) in
            defer {
                m.task = nil
                m.group = nil
            }
            return (m.task, m.group)
        }
        await group?.triggerGracefulShutdown()
        _ = try? await task?.value
    }

    /// Replaces what the fake serves (e.g. the next timeline day).
    public func setState(_ state: PracticeState) {
        let served = Self.serve(state)
        box.withLock { $0.state = served }
    }

    static func serve(_ state: PracticeState) -> ServedState { ServedState(state) }

    /// The next `times` requests whose path equals `path` (below `/api/v1`, e.g.
    /// `/appointments`; `*` matches every path) and, when given, whose `page` (default 1)
    /// equals `page`, get `fault`.
    public func inject(_ fault: Fault, path: String, page: Int? = nil, times: Int = 1) {
        box.withLock { $0.faults.append(Injected(fault: fault, path: path, page: page, remaining: times)) }
    }

    /// Standing faults for every request: a share `failRate` (0…1) answered 500, chosen by a
    /// generator seeded with `seed` (reproducible), and every `every429`-th request answered 429
    /// with `Retry-After: 1`.
    public func setStandingFaults(failRate: Double, every429: Int?, seed: UInt64) {
        box.withLock {
            $0.failRate = failRate
            $0.every429 = every429
            $0.random = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed
        }
    }

    /// Removes all pending faults.
    public func clearFaults() { box.withLock { $0.faults.removeAll() } }

    /// Changes (or removes) the per-minute limit.
    public func setRequestsPerMinute(_ limit: Int?) {
        box.withLock {
            $0.requestsPerMinute = limit
            $0.recent.removeAll()
        }
    }

    /// Serve minified instead of re-indented bodies.
    public func setPretty(_ pretty: Bool) { box.withLock { $0.pretty = pretty } }

    /// Every request received so far, in order.
    public func requests() -> [RecordedRequest] { box.withLock { $0.log } }

    public func clearRequests() { box.withLock { $0.log.removeAll() } }
}
