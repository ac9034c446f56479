import EventLog
import FakeIntakeQ
import Foundation
import GRDB
import IntakeQ
import Ledger
import Logging
import PostgresSink
import Projections
@testable import Service
import ServiceLifecycle
import Sync
import TestSupport
import Testing

/// `serve --postgres`: the sink follows every run the server makes; and `forget` purges
/// PostgreSQL too.
@Suite(.serialized)
struct ServeAndForgetTests {
    func serve(_ cluster: PGCluster, rig: Rig, store: String, password: String = PGCluster.password,
               lines: Locked<[String]>) throws -> SyncLedgerServer {
        var config = ServeConfiguration(storePath: store, roster: Fixtures.roster, apiKey: rig.apiKey)
        config.port = 0
        config.baseURL = rig.baseURL
        config.policy = RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: 100_000)
        config.timeoutSeconds = 10
        config.maxRetries = 1
        config.logger = Logger(label: "pgserve") { _ in CapturingLogHandler(lines: lines) }
        config.postgres = try PostgresSink(url: cluster.sinkURL(password: password))
        return try SyncLedgerServer(config: config)
    }

    func waitFor(_ seconds: Double, _ condition: () async throws -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await condition()) == true { return true }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        return false
    }

    /// Two manual runs through the server's coordinator: after each, the sink reaches the log's
    /// head by itself and equals the SQLite views; a graceful shutdown stops the pool cleanly.
    @Test func serveCatchesUpAfterEveryRun() async throws {
        try await withCluster { cluster in
            let tmp = TempDir("pgserve")
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            let lines = Locked<[String]>([])
            let server = try serve(cluster, rig: rig, store: store, lines: lines)
            let group = try server.makeGroup(signals: [])
            let running = Task { try await group.run() }
            for day in 1...2 {
                rig.server.setState(Fixtures.day(day).state)
                let (record, _) = try server.coordinator.enqueue(.all, triggeredBy: "test")
                let finished = await waitFor(60) {
                    let s = server.coordinator.run(record.runId)?.status ?? ""
                    return s != "queued" && s != "running"
                }
                #expect(finished, "run \(day) finished")
                let head = try LedgerReader(store: Store.open(store)).head().seq
                let caughtUp = await waitFor(60) { server.postgres?.snapshot.seq == head }
                #expect(caughtUp, "the sink reached seq \(head) after run \(day); state \(String(describing: server.postgres?.snapshot))")
                try await Compare.equal(cluster, store: store, "serve, after run \(day)")
            }
            let rows = try await scalar(cluster, "SELECT count(*)::text FROM syncledger.sync_logs WHERE triggered_by = 'test'")
            #expect(rows == "2", "both runs' sync_logs rows are in PostgreSQL")
            await group.triggerGracefulShutdown()
            try await running.value
            await rig.stop()
            #expect(lines.value.contains { $0.contains("postgres caught up") })
        }
    }

    /// A wrong password in `serve --postgres`: the runs go on, the catch-up fails with one line
    /// naming the server without the password, and no log line holds the password.
    @Test func serveWithAWrongPasswordLogsOneLineWithoutIt() async throws {
        try await withCluster { cluster in
            let tmp = TempDir("pgserve")
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            let lines = Locked<[String]>([])
            let secret = "Sup3r-secret-pw"
            let server = try serve(cluster, rig: rig, store: store, password: secret, lines: lines)
            let group = try server.makeGroup(signals: [])
            let running = Task { try await group.run() }
            let (record, _) = try server.coordinator.enqueue(.all, triggeredBy: "test")
            let finished = await waitFor(60) { server.coordinator.run(record.runId)?.status == "completed" }
            #expect(finished, "the run completes though PostgreSQL refuses the login")
            let failed = await waitFor(60) {
                (server.postgres?.snapshot.catchUps ?? 0) >= 2
                    && server.postgres?.snapshot.lastError != nil
            }
            #expect(failed)
            let error = server.postgres?.snapshot.lastError ?? ""
            #expect(error.contains("refused the login") && error.contains("postgres://postgres:***@127.0.0.1"), "\(error)")
            #expect(!error.contains(secret) && !error.contains("\n"))
            await group.triggerGracefulShutdown()
            try await running.value
            await rig.stop()
            let all = lines.value
            #expect(all.contains { $0.contains("postgres catch-up failed") && $0.contains("refused the login") }, "\(all)")
            #expect(!all.joined(separator: "\n").contains(secret), "a log line holds the password")
            #expect(try await scalar(cluster, "SELECT count(*)::text FROM pg_namespace WHERE nspname = 'syncledger'") == "0")
        }
    }

    /// `syncledger forget` (without --postgres) while `serve --postgres` runs: the server sees the
    /// views file replaced and has the sink catch up, so the patient's rows leave PostgreSQL
    /// without waiting for its next run (they stayed until then: hostile test, stop 56).
    @Test func forgetWhileServingPurgesTheServersPostgresCopy() async throws {
        try await withCluster { cluster in
            let tmp = TempDir("pgserveforget")
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            let lines = Locked<[String]>([])
            let server = try serve(cluster, rig: rig, store: store, lines: lines)
            let group = try server.makeGroup(signals: [])
            let running = Task { try await group.run() }
            let (record, _) = try server.coordinator.enqueue(.all, triggeredBy: "test")
            #expect(await waitFor(120) { server.coordinator.run(record.runId)?.status == "completed" })
            let head = try LedgerReader(store: Store.open(store)).head().seq
            #expect(await waitFor(120) { server.postgres?.snapshot.seq == head })
            let views = try ProjectionStore(store: try Store.open(store))
            let (patient, name) = try views.readSync { db -> (String, String) in
                let row = try #require(try Row.fetchOne(db, sql: """
                    SELECT patient_id, client_name FROM appointments
                    WHERE patient_id IS NOT NULL AND client_name IS NOT NULL AND client_name <> '' LIMIT 1
                    """))
                return (row["patient_id"], row["client_name"])
            }
            let countName = "SELECT count(*)::text FROM syncledger.appointments WHERE client_name = $n$\(name)$n$"
            #expect(try await scalar(cluster, countName) != "0")
            let f = await PGCluster.shell([try Paths.binary(), "forget", "--store", store, "--patient", patient, "--reason", "consent withdrawn"])
            #expect(f.status == 0, "\(f.stderr)")
            let forgotten = try LedgerReader(store: Store.open(store)).head().seq
            #expect(forgotten > head)
            // No run in between: only the views switch can have moved the sink.
            #expect(await waitFor(120) { server.postgres?.snapshot.seq == forgotten },
                    "the sink reached the forget's seq \(forgotten): \(String(describing: server.postgres?.snapshot))")
            #expect(try await scalar(cluster, countName) == "0", "the name left PostgreSQL")
            let runs = try await scalar(cluster, "SELECT count(*)::text FROM syncledger.sync_logs")
            #expect(runs == "1", "one run, the first")
            await group.triggerGracefulShutdown()
            try await running.value
            await rig.stop()
        }
    }

    /// `syncledger forget` with SYNCLEDGER_POSTGRES_URL set: the patient's name leaves the
    /// PostgreSQL rows in the same command, and PostgreSQL still equals the purged views.
    @Test func forgetPurgesThePostgresRows() async throws {
        try await withCluster { cluster in
            let tmp = TempDir("pgforget")
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            for day in 1...5 { try await rig.sync(store: store, day: day) }
            await rig.stop()
            var env = ProcessInfo.processInfo.environment
            env["SYNCLEDGER_POSTGRES_URL"] = cluster.url()
            let synced = await PGCluster.shell([try Paths.binary(), "postgres", "sync", "--store", store], environment: env)
            #expect(synced.status == 0, "\(synced.stderr)")
            let views = try ProjectionStore(store: try Store.open(store))
            let (patient, name) = try views.readSync { db -> (String, String) in
                let row = try #require(try Row.fetchOne(db, sql: """
                    SELECT patient_id, client_name FROM appointments
                    WHERE patient_id IS NOT NULL AND client_name IS NOT NULL AND client_name <> '' LIMIT 1
                    """))
                return (row["patient_id"], row["client_name"])
            }
            let countName = "SELECT count(*) FROM syncledger.appointments WHERE client_name = $n$\(name)$n$"
            let before = await cluster.psql(countName)
            #expect(before.status == 0 && before.stdout.trimmingCharacters(in: .whitespacesAndNewlines) != "0", "\(before)")
            let f = await PGCluster.shell([try Paths.binary(), "forget", "--store", store, "--patient", patient, "--reason", "consent withdrawn"],
                                          environment: env)
            #expect(f.status == 0, "\(f.stderr)")
            #expect(f.stdout.contains("PostgreSQL views syncledger at postgres://postgres:***@"), "\(f.stdout)")
            #expect(!(f.stdout + f.stderr).contains(PGCluster.password))
            let after = await cluster.psql(countName)
            #expect(after.status == 0 && after.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "the name is gone: \(after)")
            try await Compare.equal(cluster, store: store, "after forget")
            // With PostgreSQL down, forget of another patient still forgets, and says PostgreSQL is owed.
            let other = try views.readSync { db in
                try String.fetchOne(db, sql: "SELECT patient_id FROM appointments WHERE patient_id IS NOT NULL AND patient_id <> ? LIMIT 1",
                                    arguments: [patient])
            }
            if let other {
                await cluster.halt("fast")
                let g = await PGCluster.shell([try Paths.binary(), "forget", "--store", store, "--patient", other, "--reason", "x"], environment: env)
                #expect(g.status == 4, "\(g.stderr)")
                #expect(g.stderr.split(separator: "\n").count == 1 && g.stderr.contains("syncledger postgres sync"), "\(g.stderr)")
                #expect(!g.stderr.contains(PGCluster.password))
                await cluster.restart()
                let s = await PGCluster.shell([try Paths.binary(), "postgres", "sync", "--store", store], environment: env)
                #expect(s.status == 0, "\(s.stderr)")
                try await Compare.equal(cluster, store: store, "after the second forget and a sync")
            }
        }
    }
}
