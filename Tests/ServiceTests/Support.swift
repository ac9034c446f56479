import AsyncHTTPClient
import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Logging
import NIOCore
import NIOHTTP1
import Projections
@testable import Service
import ServiceLifecycle
import Sync
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

enum Fixtures {
    static let practice: FixturePractice = try! FixturePractice.load(directory: Paths.practice)
    static let roster: Roster = try! Roster.load(path: Paths.roster)
    static func day(_ n: Int) -> FixtureDay { practice.day(n)! }
    static let rosterClients: Set<String> = Set(roster.allPatients.map(\.intakeqClientId))

    /// The day's served appointments whose ClientId is in the roster.
    static func rosterAppointments(day n: Int) -> [JSONValue] {
        day(n).state.appointments.compactMap { try? FastJSON.parse($0) }.filter {
            $0["ClientId"]?.stringValue.map(rosterClients.contains) ?? false
        }
    }

    /// `count` appointments of roster clients with ids `prefix-0001`…, cloned from a real one.
    static func synthetic(_ count: Int, prefix: String = "burst") -> PracticeState {
        let template = rosterAppointments(day: 1)[0]
        guard case .object(var o) = template else { fatalError() }
        var rows: [[UInt8]] = []
        let clients = roster.allPatients.map(\.intakeqClientId)
        for i in 0..<count {
            o["Id"] = .string(String(format: "\(prefix)-%04d", i))
            o["ClientId"] = .number(Double(clients[i % clients.count])!)
            o["StartDate"] = .number(Double(Int64(Date().timeIntervalSince1970 * 1000) + Int64(i) * 3_600_000))
            rows.append(Array(JSONValue.object(o).canonicalText.utf8))
        }
        return PracticeState(settings: day(1).state.settings, appointments: rows, deleted: [])
    }
}

/// Tokens a test's server accepts: an admin, and a reader of `fsh` only.
struct TestTokens {
    var admin: String
    var reader: String
    var path: String

    static func write(in dir: String) throws -> TestTokens {
        let (admin, a) = TokenFile.newToken(name: "ops", role: .admin, organizations: [])
        let (reader, r) = TokenFile.newToken(name: "fsh-dashboard", role: .reader, organizations: ["fsh"])
        let path = dir + "/tokens.json"
        try TokenFile(tokens: [a, r]).save(path: path)
        return TestTokens(admin: admin, reader: reader, path: path)
    }
}

let webhookSecret = "whsec-0123456789abcdef0123456789abcdef"

/// An HTTP answer: status and the body parsed as JSON (nil when it is not JSON).
struct Answer: Sendable {
    var status: Int
    var text: String
    var headers: [(name: String, value: String)] = []
    var json: JSONValue? { try? FastJSON.parse(Array(text.utf8)) }
    func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
    var array: [JSONValue] { if case .array(let a)? = json { return a }; return [] }
    subscript(_ key: String) -> JSONValue? { json?[key] }
}

/// A real HTTP request on loopback.
func http(_ method: HTTPMethod, _ url: String, token: String? = nil, body: [UInt8]? = nil,
          headers: [(String, String)] = []) async throws -> Answer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let token { request.headers.add(name: "Authorization", value: "Bearer " + token) }
    for (k, v) in headers { request.headers.add(name: k, value: v) }
    if let body {
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
    }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
    let buffer = try await response.body.collect(upTo: 64 << 20)
    return Answer(status: Int(response.status.code), text: String(buffer: buffer), headers: response.headers.map { ($0.name, $0.value) })
}

/// The fake IntakeQ plus `SyncLedgerServer` in this process, on loopback.
final class ServerRig: @unchecked Sendable {
    let fake: FakeIntakeQServer
    let server: SyncLedgerServer
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let base: String
    let tokens: TestTokens
    let store: String
    let dir: TempDir
    static let apiKey = "sk-test-SERVICE-do-not-print"

    var webhookURL: String { base + "/webhooks/intakeq/" + webhookSecret }

    private init(fake: FakeIntakeQServer, server: SyncLedgerServer, group: ServiceGroup, task: Task<Void, any Error>,
                 base: String, tokens: TestTokens, store: String, dir: TempDir) {
        self.fake = fake
        self.server = server
        self.group = group
        self.task = task
        self.base = base
        self.tokens = tokens
        self.store = store
        self.dir = dir
    }

    static func start(state: PracticeState = Fixtures.day(1).state, dailyBudget: Int = 100_000, dir: TempDir = TempDir(),
                      configure: (inout ServeConfiguration) -> Void = { _ in }) async throws -> ServerRig {
        let fake = FakeIntakeQServer(state: state, apiKey: apiKey)
        let fakeBase = try await fake.start()
        let tokens = try TestTokens.write(in: dir.path)
        let store = dir.sub("store")
        var config = ServeConfiguration(storePath: store, roster: Fixtures.roster, apiKey: apiKey)
        config.port = 0
        config.baseURL = fakeBase
        config.tokensPath = tokens.path
        config.webhookSecret = webhookSecret
        config.policy = RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: dailyBudget)
        config.timeoutSeconds = 10
        config.maxRetries = 1
        var logger = Logger(label: "servicetests")
        logger.logLevel = .critical
        config.logger = logger
        let port = PortBox()
        config.onListening = { p in port.set(p) }
        configure(&config)
        let server = try SyncLedgerServer(config: config)
        let group = try server.makeGroup(signals: [])
        let task = Task { try await group.run() }
        let bound = try await port.wait()
        let base = "http://127.0.0.1:\(bound)"
        fake.setWebhookURL(base + "/webhooks/intakeq/" + webhookSecret)
        let rig = ServerRig(fake: fake, server: server, group: group, task: task, base: base, tokens: tokens, store: store, dir: dir)
        #expect(await rig.eventually(timeout: 30) { try await rig.get("/readyz").status == 200 })
        return rig
    }

    func get(_ path: String, token: String? = nil) async throws -> Answer {
        try await http(.GET, base + path, token: token)
    }

    func admin(_ path: String) async throws -> Answer { try await get(path, token: tokens.admin) }

    func post(_ path: String, token: String? = nil, json: String) async throws -> Answer {
        try await http(.POST, base + path, token: token, body: Array(json.utf8))
    }

    /// Queues a run and waits for it to finish; returns its final record.
    /// Queues the nightly `automated_daily` run as the scheduler does (the API's "all" is a manual
    /// bulk run) and waits for it, through the API.
    func nightlyAndWait(timeout: Double = 60) async throws -> Answer {
        let (record, _) = try server.coordinator.enqueue(.all, syncType: "automated_daily", triggeredBy: "scheduler")
        var last = Answer(status: 0, text: "")
        _ = await eventually(timeout: timeout) {
            last = try await self.admin("/api/v1/runs/" + record.runId)
            let s = last["status"]?.stringValue ?? ""
            return s != "queued" && s != "running"
        }
        return last
    }

    func syncAndWait(_ scopeJSON: String = "\"all\"", timeout: Double = 60) async throws -> Answer {
        let queued = try await post("/api/v1/sync", token: tokens.admin, json: "{\"scope\": \(scopeJSON)}")
        #expect(queued.status == 202, "POST /api/v1/sync: \(queued.text)")
        let id = queued["run_id"]?.stringValue ?? ""
        var last = queued
        _ = await eventually(timeout: timeout) {
            last = try await self.admin("/api/v1/runs/" + id)
            let s = last["status"]?.stringValue ?? ""
            return s != "queued" && s != "running"
        }
        return last
    }

    /// The fake's lookups by id so far.
    func lookups(_ id: String? = nil) -> Int {
        fake.requests().filter { r in
            r.path.hasPrefix("/appointments/") && r.path != "/appointments/settings" && (id == nil || r.path == "/appointments/" + id!)
        }.count
    }

    func inboxDepth() async throws -> Int {
        Int(try await admin("/api/v1/status")["inbox"]?["depth"]?.doubleValue ?? -1)
    }

    func events() throws -> [EventEnvelope] {
        let reader = try LedgerReader(store: try Store.open(store))
        var out: [EventEnvelope] = []
        try reader.forEachEvent { out.append($0); return true }
        return out
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        await fake.stop()
    }

    func eventually(timeout: Double, _ condition: () async throws -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if (try? await condition()) == true { return true }
            try? await Task.sleep(nanoseconds: 25_000_000)
        }
        return (try? await condition()) == true
    }
}

final class PortBox: Sendable {
    private let port = Locked<Int?>(nil)
    func set(_ p: Int) { port.value = p }
    func wait() async throws -> Int {
        for _ in 0..<2000 {
            if let p = port.value { return p }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        throw ServeError("the server did not start listening")
    }
}

/// A webhook body as IntakeQ sends it, for a served appointment object.
func webhookBody(_ event: String, _ object: JSONValue) -> [UInt8] {
    FakeIntakeQServer.webhookBody(eventType: event, object: Array(object.canonicalText.utf8))
}
