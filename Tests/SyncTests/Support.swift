import EventLog
import FakeIntakeQ
import Foundation
import IntakeQ
import Ledger
import Logging
import Projections
import Sync
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
import JSONCore
#endif

// MARK: Paths and fixtures

enum Fixtures {
    static let practice: FixturePractice = {
        do { return try FixturePractice.load(directory: Paths.practice) } catch {
            fatalError("cannot load fixtures: \(error)")
        }
    }()

    static let traps: [String: String] = {
        struct F: Decodable { var traps: [String: String] }
        let data = FileManager.default.contents(atPath: Paths.practice + "/expected.json")!
        return try! JSONDecoder().decode(F.self, from: data).traps
    }()

    static let roster: Roster = {
        do { return try Roster.load(path: Paths.roster) } catch { fatalError("cannot load the roster: \(error)") }
    }()

    static func day(_ n: Int) -> FixtureDay { practice.day(n)! }

    static func expected(_ n: Int) -> ExpectedDay { practice.expected.first { $0.day == n }! }

    static let rosterClientIds: Set<String> = Set(roster.allPatients.map(\.intakeqClientId))

    /// Every appointment (served and deleted) of a day, decoded.
    static func appointments(day n: Int, includeDeleted: Bool = false) -> [Appointment] {
        let s = day(n).state
        return (s.appointments + (includeDeleted ? s.deleted : [])).map { try! Appointment.decode(json: $0) }
    }
}

extension Appointment {
    var allClientIds: [String] {
        [clientId?.stringValue].compactMap { $0 } + (additionalClients ?? []).compactMap { $0.clientId?.stringValue }
    }
}

// MARK: Driving SyncSession directly

/// A fake IntakeQ server on loopback plus what a test needs to sync against it.
final class Rig {
    let server: FakeIntakeQServer
    let baseURL: String
    let apiKey: String
    /// The client's clock (retry back-off); the limiter uses it too. Sleeps return at once.
    let clock = ManualClock(now: Date())

    private init(server: FakeIntakeQServer, baseURL: String, apiKey: String) {
        self.server = server
        self.baseURL = baseURL
        self.apiKey = apiKey
    }

    static func start(day: Int = 1, apiKey: String = "test-key-\(UUID().uuidString.prefix(8))") async throws -> Rig {
        try await start(state: Fixtures.day(day).state, apiKey: apiKey)
    }

    static func start(state: PracticeState, apiKey: String = "test-key-\(UUID().uuidString.prefix(8))") async throws -> Rig {
        let server = FakeIntakeQServer(state: state, apiKey: apiKey)
        let base = try await server.start()
        return Rig(server: server, baseURL: base, apiKey: apiKey)
    }

    func setDay(_ n: Int) { server.setState(Fixtures.day(n).state) }

    func stop() async { await server.stop() }

    /// One sync into `store` through `SyncSession`, as `syncledger sync` runs it (high per-minute
    /// limit and budget; the call record lives in the store's state/ as in production).
    func sync(store dir: String, day: Int? = nil, roster: Roster = Fixtures.roster, patient: String? = nil,
              org: String? = nil, now: Date? = nil, maxRetries: Int = 4, apiKey: String? = nil,
              policy: RateLimitPolicy = RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: 100_000),
              progress: (@Sendable (String) -> Void)? = nil) async throws -> SyncOutcome {
        var logger = Logger(label: "synctests")
        logger.logLevel = .critical
        let request = SyncRequest(roster: roster, organizationId: org, patientId: patient,
                                  now: now ?? day.map { Fixtures.day($0).nowDate })
        return try await SyncSession.run(SyncConfiguration(
            storePath: dir, request: request, apiKey: apiKey ?? self.apiKey, baseURL: baseURL, policy: policy,
            maxRetries: maxRetries, timeoutSeconds: 20, clock: clock, logger: logger, progress: progress))
    }
}

// MARK: Reading a store

struct StoredEvent {
    var envelope: EventEnvelope
    var data: JSONValue
    var seq: UInt64 { envelope.seq }
    var type: String { envelope.type }
    var run: String? { envelope.run }
    var appointmentId: String? { data["appointment_id"]?.stringValue }
}

enum StoreReader {
    static func events(_ dir: String, from: UInt64 = 1) throws -> [StoredEvent] {
        let reader = try LedgerReader(store: try Store.open(dir))
        var out: [StoredEvent] = []
        try reader.forEachEvent(from: from) { e in
            out.append(StoredEvent(envelope: e, data: try e.dataValue()))
            return true
        }
        return out
    }

    static func head(_ dir: String) throws -> LogHead {
        try LedgerReader(store: try Store.open(dir)).head()
    }

    static func views(_ dir: String) throws -> ProjectionStore {
        let store = try Store.open(dir)
        let views = try ProjectionStore(store: store)
        try views.catchUp(try LedgerReader(store: store))
        return views
    }

    static func appointments(_ dir: String) throws -> [ViewRow] {
        try views(dir).readSync { try Views.appointments($0, AppointmentFilter()) }
    }

    static func syncLogs(_ dir: String) throws -> [ViewRow] {
        try views(dir).readSync { try Views.syncLogs($0, limit: nil, type: nil) }
    }
}

/// The ids a run recorded, per category, from its own events.
struct RunIds: Equatable, CustomStringConvertible {
    var new: Set<String> = []
    var updated: Set<String> = []
    var unchanged: Set<String> = []
    var removed: Set<String> = []
    var description: String { "new \(new.count), updated \(updated.count), unchanged \(unchanged.count), removed \(removed.count)" }

    init(new: Set<String> = [], updated: Set<String> = [], unchanged: Set<String> = [], removed: Set<String> = []) {
        self.new = new
        self.updated = updated
        self.unchanged = unchanged
        self.removed = removed
    }

    init(events: [StoredEvent], run: String) {
        for e in events where e.run == run {
            switch e.type {
            case "appointment.discovered": new.insert(e.appointmentId!)
            case "appointment.changed": updated.insert(e.appointmentId!)
            case "appointment.removed": removed.insert(e.appointmentId!)
            case "sync.completed":
                if case .array(let list)? = e.data["unchanged"] {
                    for o in list { if let id = o["id"]?.stringValue { unchanged.insert(id) } }
                }
            default: break
            }
        }
    }
}

// MARK: Running the built binary

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var seconds: Double

    init(_ r: ProcessOutput) {
        status = r.status
        stdout = r.stdoutText
        stderr = r.stderrText
        seconds = r.seconds
    }
}

enum Binary {
    /// The built `syncledger` executable (`swift build --build-tests` builds it).
    static var path: String { Paths.product("syncledger") ?? Paths.root + "/.build/debug/syncledger" }

    static var available: Bool { FileManager.default.isExecutableFile(atPath: path) }

    /// The environment of a run: never the developer's key or store; `apiKey` when given.
    /// (`outputs` is kept for the callers; the runner keeps stdout and stderr itself.)
    static func overrides(apiKey: String?) -> [String: String?] {
        ["INTAKEQ_API_KEY": apiKey, "SYNCLEDGER_STORE": nil]
    }

    /// Starts the binary and returns at once.
    static func start(_ args: [String], apiKey: String?, outputs dir: String) throws -> RunningProcess {
        RunningProcess(try ProcessRunner.start(path, args, overrides: overrides(apiKey: apiKey)))
    }

    /// Runs the binary to completion (killed after `timeout` seconds).
    static func run(_ args: [String], apiKey: String?, outputs dir: String, timeout: Double = 120) async throws -> ProcessResult {
        let r = try await ProcessRunner.run(path, args, overrides: overrides(apiKey: apiKey), timeout: timeout)
        if r.timedOut { Issue.record("syncledger \(args) did not finish within \(timeout) s; killed it") }
        return ProcessResult(r)
    }
}

/// A started `syncledger` (see `ChildProcess`).
struct RunningProcess: Sendable {
    let child: ChildProcess
    init(_ child: ChildProcess) { self.child = child }

    var pid: Int32 { child.pid }
    var isRunning: Bool { child.isRunning }

    func kill9() { child.kill(SIGKILL) }

    func wait(timeout: Double) async throws -> ProcessResult {
        let deadline = Date().addingTimeInterval(timeout)
        while child.isRunning {
            if Date() > deadline {
                kill9()
                Issue.record("syncledger \(child.arguments) did not finish within \(timeout) s; killed it")
                break
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        return ProcessResult(await child.wait())
    }
}

/// Arguments of `syncledger sync` against a fake server for one fixture day.
func syncArgs(store: String, baseURL: String, day: Int, roster: String = Paths.roster, extra: [String] = []) -> [String] {
    ["--store", store, "sync", "--roster", roster, "--base-url", baseURL, "--now", Fixtures.day(day).now,
     "--requests-per-minute", "1000"] + extra
}

/// The appointments view without the columns that depend on when or at which seq it was recorded.
func comparableAppointments(_ rows: [ViewRow]) -> [[String: JSONValue]] {
    let drop: Set<String> = ["first_seen_at", "last_changed_at", "last_synced_at", "last_seq"]
    return rows.map { row in
        var d: [String: JSONValue] = [:]
        for (c, v) in zip(row.columns, row.values) where !drop.contains(c) { d[c] = v }
        return d
    }.sorted { ($0["appointment_id"]?.stringValue ?? "") < ($1["appointment_id"]?.stringValue ?? "") }
}

/// Waits until `condition` holds, polling; false on timeout.
func eventually(timeout: Double, _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        try? await Task.sleep(nanoseconds: 25_000_000)
    }
    return try condition()
}
