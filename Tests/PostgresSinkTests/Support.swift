import EventLog
import FakeIntakeQ
import Foundation
import GRDB
import IntakeQ
import JSONCore
import Ledger
import Logging
import PostgresNIO
import PostgresSink
import Projections
import Sync
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: Paths, fixtures, temp dirs

extension Paths {
    static let clusterScript = root + "/tools/pg_cluster.sh"
}

enum Fixtures {
    static let practice: FixturePractice = {
        do { return try FixturePractice.load(directory: Paths.practice) } catch { fatalError("cannot load fixtures: \(error)") }
    }()
    static let roster: Roster = {
        do { return try Roster.load(path: Paths.roster) } catch { fatalError("cannot load the roster: \(error)") }
    }()
    static func day(_ n: Int) -> FixtureDay { practice.day(n)! }

    /// The roster with its first organization's first patient moved to the second organization.
    static var movedRoster: Roster {
        var r = roster
        let p = r.organizations[0].patients.removeFirst()
        r.organizations[1].patients.append(p)
        return r
    }
}

// MARK: The fake IntakeQ

final class Rig: @unchecked Sendable {
    let server: FakeIntakeQServer
    let baseURL: String
    let apiKey: String
    let clock = ManualClock(now: Date())

    private init(server: FakeIntakeQServer, baseURL: String, apiKey: String) {
        self.server = server
        self.baseURL = baseURL
        self.apiKey = apiKey
    }

    static func start(day: Int = 1) async throws -> Rig {
        let key = "test-key-\(UUID().uuidString.prefix(8))"
        let server = FakeIntakeQServer(state: Fixtures.day(day).state, apiKey: key)
        let base = try await server.start()
        return Rig(server: server, baseURL: base, apiKey: key)
    }

    func stop() async { await server.stop() }

    /// The fake serves fixture day `day`, then one sync into `store` through `SyncSession`.
    @discardableResult
    func sync(store dir: String, day: Int, roster: Roster = Fixtures.roster) async throws -> SyncOutcome {
        server.setState(Fixtures.day(day).state)
        var logger = Logger(label: "pgsinktests")
        logger.logLevel = .critical
        let request = SyncRequest(roster: roster, now: Fixtures.day(day).nowDate)
        return try await SyncSession.run(SyncConfiguration(
            storePath: dir, request: request, apiKey: apiKey, baseURL: baseURL,
            policy: RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: 100_000),
            maxRetries: 4, timeoutSeconds: 20, clock: clock, logger: logger))
    }
}

// MARK: A throwaway PostgreSQL cluster

struct ClusterUnavailable: Error {}

/// A PostgreSQL 15 cluster of its own in a temp directory, on a free loopback port, started with
/// tools/pg_cluster.sh (initdb/pg_ctl as the `postgres` user when run as root) and stopped by `stop()`.
final class PGCluster: @unchecked Sendable {
    static let password = "syncledger-test"
    let dir: String
    let port: Int

    private init(dir: String, port: Int) {
        self.dir = dir
        self.port = port
    }

    /// Starts a cluster. Without PostgreSQL installed the test FAILS (never skips): the sink's
    /// tests are the only proof it works.
    static func start() async throws -> PGCluster {
        let dir = "/tmp/pgsink-cluster-" + UUID().uuidString.lowercased().prefix(12)
        let r = await shell([Paths.clusterScript, "start", dir])
        if r.status == 3 {
            Issue.record("PostgreSQL server binaries are not installed (initdb/pg_ctl not found): apt-get install postgresql, or run tools/setup.sh — the PostgreSQL sink's tests cannot run without them")
            throw ClusterUnavailable()
        }
        guard r.status == 0, let port = Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            Issue.record("could not start a PostgreSQL cluster (tools/pg_cluster.sh start, status \(r.status)): \(r.stderr)")
            throw ClusterUnavailable()
        }
        return PGCluster(dir: dir, port: port)
    }

    func url(user: String = "postgres", password: String = PGCluster.password, database: String = "postgres") -> String {
        "postgres://\(user):\(password)@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    func sinkURL(user: String = "postgres", password: String = PGCluster.password) throws -> PostgresURL {
        try PostgresURL(url(user: user, password: password))
    }

    /// Crash (`immediate`) or clean (`fast`) stop; `restart()` brings it back on the same port.
    func halt(_ mode: String = "immediate") async { _ = await PGCluster.shell([Paths.clusterScript, "stop", dir, mode]) }
    func restart() async { _ = await PGCluster.shell([Paths.clusterScript, "restart", dir]) }

    func stop() async {
        await halt("fast")
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Runs SQL through a plain `psql` (as a dashboard would), returning its unaligned output.
    func psql(_ sql: String, user: String = "postgres", password: String = PGCluster.password) async -> (status: Int32, stdout: String, stderr: String) {
        await PGCluster.shell(["psql", url(user: user, password: password), "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", sql])
    }

    /// Runs a command to completion on a thread of its own (never blocking the cooperative pool,
    /// which has as many threads as the machine has cores: a test waiting there for initdb
    /// starved every other test's tasks).
    @discardableResult
    static func shell(_ args: [String], environment: [String: String]? = nil) async -> (status: Int32, stdout: String, stderr: String) {
        await withCheckedContinuation { (cont: CheckedContinuation<(status: Int32, stdout: String, stderr: String), Never>) in
            let thread = Thread { cont.resume(returning: shellBlocking(args, environment: environment)) }
            thread.start()
        }
    }

    static func shellBlocking(_ args: [String], environment: [String: String]?) -> (status: Int32, stdout: String, stderr: String) {
        // Output to files, not pipes: the server started by pg_ctl must not keep a pipe open.
        let base = "/tmp/pgsink-shell-" + UUID().uuidString.lowercased().prefix(12)
        _ = FileManager.default.createFile(atPath: base + ".out", contents: nil)
        _ = FileManager.default.createFile(atPath: base + ".err", contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: base + ".out")
            try? FileManager.default.removeItem(atPath: base + ".err")
        }
        // posix_spawn + waitpid: Foundation's Process missed this child's exit (its SIGCHLD
        // watcher) once the script had started a server, and waited forever.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/zero", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, base + ".out", O_WRONLY | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, base + ".err", O_WRONLY | O_TRUNC, 0o600)
        let argv = (["/usr/bin/env"] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for e in env { free(e) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, "/usr/bin/env", &actions, nil, argv, env) == 0 else { return (127, "", "cannot spawn \(args)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exitStatus: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let o = FileManager.default.contents(atPath: base + ".out") ?? Data()
        let e = FileManager.default.contents(atPath: base + ".err") ?? Data()
        return (exitStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}

/// Runs `body` with a fresh cluster, stopping it afterwards whatever happens.
func withCluster(_ body: (PGCluster) async throws -> Void) async throws {
    let cluster: PGCluster
    do { cluster = try await PGCluster.start() } catch is ClusterUnavailable { return }
    do {
        try await body(cluster)
    } catch {
        await cluster.stop()
        throw error
    }
    await cluster.stop()
}

// MARK: Comparing PostgreSQL with the SQLite views

/// A table as comparable text rows (nil for NULL), sorted.
typealias Rows = [[String?]]

enum Compare {
    static func ts(_ c: String) -> String { "to_char(\(c) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')" }

    /// (SQLite query, PostgreSQL query) per table, column for column; JSON columns are listed so
    /// they compare as values, not text.
    static func queries(schema s: String) -> [(name: String, sqlite: String, pg: String, json: Set<Int>)] {
        [
            ("appointments", """
                SELECT a.appointment_id, a.organization_id, a.patient_id, a.intakeq_client_id, a.client_name, a.practitioner_id,
                  a.practitioner_name, a.provider_id, a.service_name, a.status, a.intakeq_status, a.start_at, a.end_at,
                  a.duration_minutes, a.location_id, a.location_name, a.place_of_service, a.visit_type, a.meeting_url,
                  a.removed, a.first_seen_at, a.last_changed_at, a.last_synced_at, a.version, a.last_seq,
                  l.location_id, l.location_name, l.place_of_service, l.visit_type, l.address
                FROM appointments a LEFT JOIN appointment_locations l USING (appointment_id)
                """, """
                SELECT pq_appointment_id, organization_id, patient_id, intakeq_client_id, client_name, practitioner_id,
                  practitioner_name, provider_id, service_name, status, intakeq_status, \(ts("start_time")), \(ts("end_time")),
                  duration_minutes::text, location_id, location_name, place_of_service, visit_type, meeting_url,
                  CASE WHEN removed THEN '1' ELSE '0' END, \(ts("first_seen_at")), \(ts("last_changed_at")), \(ts("last_synced_at")),
                  version::text, last_seq::text,
                  location_info->>'locationId', location_info->>'locationName', location_info->>'placeOfService',
                  location_info->>'locationType', location_info->>'address'
                FROM \(s).appointments
                """, []),
            ("appointment_patients", "SELECT appointment_id, patient_id, organization_id, role FROM appointment_patients",
             "SELECT appointment_id, patient_id, organization_id, role FROM \(s).appointment_patients", []),
            ("appointment_meeting_urls", "SELECT appointment_id, meeting_url, url_provider, source_field, changed_at FROM appointment_meeting_urls",
             "SELECT appointment_id, meeting_url, url_provider, source_field, \(ts("changed_at")) FROM \(s).appointment_meeting_urls", []),
            ("appointment_locations", "SELECT appointment_id, location_id, location_name, address, place_of_service, visit_type FROM appointment_locations",
             "SELECT appointment_id, location_id, location_name, address, place_of_service, visit_type FROM \(s).appointment_locations", []),
            ("sync_logs", """
                SELECT id, sync_type, organization_id, patient_id, triggered_by, started_at, completed_at, duration_ms, status,
                  appointments_new, appointments_updated, appointments_unchanged, appointments_removed, appointments_errors,
                  patients_processed, patients_failed, error_message, metadata, start_seq, end_seq FROM sync_logs
                """, """
                SELECT id, sync_type, organization_id, patient_id, triggered_by, \(ts("started_at")), \(ts("completed_at")),
                  duration_ms::text, status, appointments_new::text, appointments_updated::text, appointments_unchanged::text,
                  appointments_removed::text, appointments_errors::text, patients_processed::text, patients_failed::text,
                  error_message, metadata::text, start_seq::text, end_seq::text FROM \(s).sync_logs
                """, [17]),
        ]
    }

    static func normalize(_ rows: Rows, json: Set<Int>) -> Rows {
        rows.map { row in
            row.enumerated().map { i, v in
                guard json.contains(i), let v, let parsed = try? FastJSON.parse(Array(v.utf8)) else { return v }
                return parsed.canonicalText
            }
        }.sorted { a, b in a.lexicographicallyPrecedes(b) { ($0 ?? "\u{0}") < ($1 ?? "\u{0}") } }
    }

    static func sqliteRows(_ views: ProjectionStore, _ sql: String) throws -> Rows {
        try views.readSync { db in
            try Row.fetchAll(db, sql: sql).map { row in
                (0..<row.count).map { i -> String? in
                    switch (row[i] as DatabaseValue).storage {
                    case .null: return nil
                    case .int64(let v): return String(v)
                    case .double(let v): return String(v)
                    case .string(let s): return s
                    case .blob(let d): return String(decoding: d, as: UTF8.self)
                    }
                }
            }
        }
    }

    static func pgRows(_ conn: PostgresConnection, _ sql: String) async throws -> Rows {
        var logger = Logger(label: "pgsinktests")
        logger.logLevel = .critical
        let rows = try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger)
        var out: Rows = []
        for try await row in rows {
            out.append(try row.map { cell in try cell.decode(String?.self) })
        }
        return out
    }

    /// Every sink table against its SQLite view, row for row. Records an issue per difference.
    static func equal(_ cluster: PGCluster, store: String, schema: String = "syncledger", _ label: String) async throws {
        let views = try ProjectionStore(store: try Store.open(store))
        try await withPG(cluster) { conn in
            for q in queries(schema: schema) {
                let a = normalize(try sqliteRows(views, q.sqlite), json: q.json)
                let b = normalize(try await pgRows(conn, q.pg), json: q.json)
                #expect(a.count == b.count, "\(label): \(q.name) has \(a.count) rows in SQLite and \(b.count) in PostgreSQL")
                if a != b {
                    let diff = zip(a, b).first { $0 != $1 }
                    Issue.record("\(label): \(q.name) differs; first difference: SQLite \(String(describing: diff?.0)) vs PostgreSQL \(String(describing: diff?.1))")
                }
            }
        }
    }
}

/// A plain connection to the cluster for the test's own queries.
func withPG<T: Sendable>(_ cluster: PGCluster, user: String = "postgres", password: String = PGCluster.password,
                         _ body: (PostgresConnection) async throws -> T) async throws -> T {
    var logger = Logger(label: "pgsinktests")
    logger.logLevel = .critical
    let config = PostgresConnection.Configuration(host: "127.0.0.1", port: cluster.port, username: user,
                                                  password: password, database: "postgres", tls: .disable)
    let conn = try await PostgresConnection.connect(configuration: config, id: 99, logger: logger)
    do {
        let v = try await body(conn)
        try? await conn.close()
        return v
    } catch {
        try? await conn.close()
        throw error
    }
}

func scalar(_ cluster: PGCluster, _ sql: String) async throws -> String? {
    try await withPG(cluster) { conn in try await Compare.pgRows(conn, sql).first?.first ?? nil }
}

func quietLogger() -> Logger {
    var l = Logger(label: "pgsinktests")
    l.logLevel = .critical
    return l
}
