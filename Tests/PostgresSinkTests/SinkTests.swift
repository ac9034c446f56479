import EventLog
import FakeIntakeQ
import Foundation
import Ledger
import PostgresNIO
import PostgresSink
import Projections
import Sync
import TestSupport
import Testing

/// The PostgreSQL sink against a real PostgreSQL 15 (a throwaway cluster per test).
@Suite(.serialized)
struct SinkTests {
    /// One catch-up with a sink of its own whose pool runs just for it (as `syncledger postgres sync`).
    @discardableResult
    func sync(_ cluster: PGCluster, _ store: String, schema: String = "syncledger", user: String = "postgres",
              password: String = PGCluster.password) async throws -> SinkReport {
        let sink = try PostgresSink(url: cluster.sinkURL(user: user, password: password), schema: schema)
        return try await sink.withRunning { try await $0.catchUp(store: try Store.open(store)) }
    }

    @discardableResult
    func rebuild(_ cluster: PGCluster, _ store: String, schema: String = "syncledger") async throws -> SinkReport {
        let sink = try PostgresSink(url: cluster.sinkURL(), schema: schema)
        return try await sink.withRunning { try await $0.rebuild(store: try Store.open(store)) }
    }

    func checkpointSeq(_ cluster: PGCluster, schema: String = "syncledger") async throws -> UInt64 {
        UInt64(try await scalar(cluster, "SELECT min(seq)::text FROM \(schema).checkpoints") ?? "0") ?? 0
    }

    /// The five fixture days (removals included), then a roster change: after every sync the
    /// sink catches up and equals the SQLite views row for row.
    @Test func fiveDaysAndARosterChangeEqualSQLite() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            defer { Task { await rig.stop() } }
            var lastSeq: UInt64 = 0
            var sources: [String] = []
            for day in 1...5 {
                try await rig.sync(store: store, day: day)
                let report = try await sync(cluster, store)
                #expect(report.fromSeq == lastSeq, "day \(day) resumes from the previous checkpoint")
                #expect(report.seq == (try LedgerReader(store: Store.open(store)).head().seq))
                sources.append(report.deltaSource ?? "none")
                lastSeq = report.seq
                try await Compare.equal(cluster, store: store, "day \(day)")
            }
            // Long ranges find their keys in the stream index, short ones in the log: both are
            // checked against SQLite here.
            #expect(Set(sources).isSuperset(of: ["log", "stream index"]), "\(sources)")
            let removed = try await scalar(cluster, "SELECT count(*)::text FROM syncledger.appointments WHERE removed")
            #expect((Int(removed ?? "0") ?? 0) > 0, "the timeline removes appointments")
            // A roster change re-attributes appointments: every row, not only the events' keys.
            try await rig.sync(store: store, day: 5, roster: Fixtures.movedRoster)
            try await sync(cluster, store)
            try await Compare.equal(cluster, store: store, "after the roster change")
            // Nothing new: a no-op that keeps the checkpoint.
            let again = try await sync(cluster, store)
            #expect(again.rows == 0 && again.events == 0)
        }
    }

    /// Several catch-ups at once on a fresh database: each event is applied by exactly one of
    /// them (the applied ranges add up to the log), and the result equals SQLite.
    @Test func concurrentCatchUpsApplyEachEventOnce() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            for day in 1...3 { try await rig.sync(store: store, day: day) }
            await rig.stop()
            let head = try LedgerReader(store: Store.open(store)).head().seq
            let url = try cluster.sinkURL()
            let reports = try await withThrowingTaskGroup(of: SinkReport.self) { group in
                for _ in 0..<4 {
                    group.addTask { try await PostgresSink(url: url).withRunning { try await $0.catchUp(store: try Store.open(store)) } }
                }
                var out: [SinkReport] = []
                for try await r in group { out.append(r) }
                return out
            }
            #expect(reports.map(\.events).reduce(0, +) == head, "applied ranges \(reports.map { ($0.fromSeq, $0.seq) }) must add up to \(head)")
            #expect(reports.filter { $0.rows > 0 }.count == 1)
            try await Compare.equal(cluster, store: store, "after 4 concurrent catch-ups")
        }
    }

    /// Two `syncledger postgres sync` processes at once, twice (fresh schema, then after more
    /// days): each event is applied by exactly one of them, and the result equals SQLite.
    @Test func twoCatchUpProcessesAtOnce() async throws {
        try await withCluster { cluster in
            let tmp = TempDir("pgtwo")
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            var env = ProcessInfo.processInfo.environment
            env["SYNCLEDGER_POSTGRES_URL"] = cluster.url()
            let binary = try Paths.binary()
            var previous: UInt64 = 0
            for days in [1...2, 3...5] {
                for day in days { try await rig.sync(store: store, day: day) }
                let head = try LedgerReader(store: Store.open(store)).head().seq
                async let a = PGCluster.shell([binary, "postgres", "sync", "--store", store], environment: env)
                async let b = PGCluster.shell([binary, "postgres", "sync", "--store", store], environment: env)
                let outputs = await [a, b]
                var applied: UInt64 = 0
                for o in outputs {
                    #expect(o.status == 0, "\(o.stderr)")
                    // "…: seq A → B (N events, R rows written)" or "… is up to date at seq B"
                    if let r = o.stdout.range(of: "seq "), o.stdout.contains("→") {
                        let parts = o.stdout[r.upperBound...].split(separator: " ")
                        let from = UInt64(parts[0]) ?? 0
                        let to = UInt64(parts[2]) ?? 0
                        #expect(from == previous && to == head, "\(o.stdout)")
                        applied += to - from
                    } else {
                        #expect(o.stdout.contains("up to date at seq \(head)"), "\(o.stdout)")
                    }
                }
                #expect(applied == head - previous, "the two processes applied \(applied) events of \(head - previous): \(outputs.map(\.stdout))")
                try await Compare.equal(cluster, store: store, "after two processes at once, days \(days)")
                previous = head
            }
            await rig.stop()
        }
    }

    /// Rebuild while readers query the live schema: no reader error, and every read sees a
    /// whole generation (the row counts and checkpoint of the complete sink), never a half one.
    @Test func rebuildWhileReadersRead() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            for day in 1...5 { try await rig.sync(store: store, day: day) }
            await rig.stop()
            try await sync(cluster, store)
            let expected = try await scalar(cluster, """
                SELECT (SELECT count(*) FROM syncledger.appointments) || '/' || (SELECT count(*) FROM syncledger.appointment_patients)
                  || '/' || (SELECT count(*) FROM syncledger.sync_logs) || '/' || (SELECT min(seq) FROM syncledger.checkpoints)
                """)
            let stop = Locked(false)
            let readers = (0..<4).map { _ in
                Task { () -> (reads: Int, bad: [String]) in
                    var reads = 0
                    var bad: [String] = []
                    try await withPG(cluster) { conn in
                        while !stop.value {
                            do {
                                let v = try await Compare.pgRows(conn, """
                                    SELECT (SELECT count(*) FROM syncledger.appointments) || '/' || (SELECT count(*) FROM syncledger.appointment_patients)
                                      || '/' || (SELECT count(*) FROM syncledger.sync_logs) || '/' || (SELECT min(seq) FROM syncledger.checkpoints)
                                    """).first?.first ?? nil
                                if v != expected { bad.append("read \(v ?? "nil")") }
                                reads += 1
                            } catch {
                                bad.append(String(reflecting: error))
                            }
                        }
                    }
                    return (reads, bad)
                }
            }
            for _ in 0..<3 {
                let r = try await rebuild(cluster, store)
                #expect(r.rebuilt)
            }
            stop.value = true
            var total = 0
            for t in readers {
                let (reads, bad) = try await t.value
                total += reads
                #expect(bad.isEmpty, "reader saw: \(bad.prefix(3))")
            }
            #expect(total > 0)
            try await Compare.equal(cluster, store: store, "after rebuilds")
            let leftovers = try await scalar(cluster, "SELECT count(*)::text FROM pg_namespace WHERE nspname LIKE 'syncledger\\_\\_%'")
            #expect(leftovers == "0", "no shadow or old generation left behind")
        }
    }

    /// The server stops (crash) while a catch-up is in the middle of its transaction: one line
    /// naming the connection, nothing of it applied; restarted, the next catch-up resumes.
    @Test func serverStoppedMidCatchUpThenResumed() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            try await rig.sync(store: store, day: 1)
            // One sink whose pool runs throughout, as under `serve --postgres`: it must recover
            // by itself once the server is back.
            let sink = try PostgresSink(url: cluster.sinkURL())
            // Not withRunning: should a statement outlive its dead connection again, the pool
            // could not shut down, and the test must be able to walk away from it.
            let running = Task { try await sink.run() }
            defer { running.cancel() }
            do {
                _ = try await sink.catchUp(store: try Store.open(store))
                let before = try await checkpointSeq(cluster)
                let rowsBefore = try await scalar(cluster, "SELECT count(*)::text || '/' || sum(version)::text FROM syncledger.appointments")
                for day in 2...5 { try await rig.sync(store: store, day: day) }
                await rig.stop()
                // Hold a lock on a table the catch-up writes after appointments: it blocks mid-way.
                let blocker = Task {
                    try await withPG(cluster) { conn in
                        try await conn.query("BEGIN", logger: quietLogger())
                        try await conn.query("LOCK TABLE syncledger.sync_logs IN ACCESS EXCLUSIVE MODE", logger: quietLogger())
                        try await Task.sleep(nanoseconds: 60_000_000_000)
                    }
                }
                try await Task.sleep(nanoseconds: 300_000_000)
                let catchUp = Task { try await sink.catchUp(store: try Store.open(store)) }
                // Wait until the catch-up is stuck on the lock, having written appointments already.
                var waiting = false
                for _ in 0..<400 {
                    let n = try await scalar(cluster, "SELECT count(*)::text FROM pg_stat_activity WHERE application_name = 'syncledger' AND wait_event_type = 'Lock'")
                    if n == "1" { waiting = true; break }
                    try await Task.sleep(nanoseconds: 50_000_000)
                }
                #expect(waiting, "the catch-up reached the locked table")
                await cluster.halt("immediate")
                blocker.cancel()
                // postgres-nio 1.33.2's pool sometimes never completes a statement whose server
                // died (its socket is gone): the sink fails the operation when the connection
                // closes (PostgresSink.failingWhenClosed). Bounded so a regression fails here
                // instead of hanging the suite.
                let settled = Locked<Result<SinkReport, any Error>?>(nil)
                let waiter = Task { settled.value = await catchUp.result }
                for _ in 0..<300 where settled.value == nil { try await Task.sleep(nanoseconds: 100_000_000) }
                guard let result = settled.value else {
                    Issue.record("the catch-up did not fail within 30 s of the server stopping")
                    waiter.cancel()
                    await cluster.restart()
                    return
                }
                do {
                    _ = try result.get()
                    Issue.record("the catch-up succeeded though the server was stopped")
                } catch let e as SinkError {
                    #expect(e.kind == .connection, "\(e)")
                    #expect(!e.message.contains("\n") && !e.message.contains(PGCluster.password), "\(e)")
                    #expect(e.message.contains("nothing of it was applied"), "\(e)")
                }
                // While it is down: one line at once, not a minute of pool retries.
                do {
                    _ = try await sink.catchUp(store: try Store.open(store))
                    Issue.record("a catch-up succeeded with the server down")
                } catch let e as SinkError {
                    #expect(e.kind == .connection, "\(e)")
                    #expect(e.message.contains("postgres://postgres:***@127.0.0.1"), "\(e)")
                }
                await cluster.restart()
                #expect(try await checkpointSeq(cluster) == before, "the checkpoint did not move")
                #expect(try await scalar(cluster, "SELECT count(*)::text || '/' || sum(version)::text FROM syncledger.appointments") == rowsBefore,
                        "no row of the interrupted catch-up is visible")
                let r = try await sink.catchUp(store: try Store.open(store))
                #expect(r.fromSeq == before)
                try await Compare.equal(cluster, store: store, "resumed after the server came back")
            }
        }
    }

    /// A wrong password: one line, no password in it, nothing applied; the right one resumes.
    @Test func wrongPasswordIsOneClearLine() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            try await rig.sync(store: store, day: 1)
            await rig.stop()
            do {
                _ = try await sync(cluster, store, password: "not-the-Secret-42")
                Issue.record("a wrong password was accepted")
            } catch let e as SinkError {
                #expect(e.kind == .authentication, "\(e)")
                #expect(e.message.contains("refused the login"), "\(e)")
                #expect(!e.message.contains("not-the-Secret-42") && !e.message.contains("\n"), "\(e)")
                #expect(e.message.contains("postgres://postgres:***@127.0.0.1"), "\(e)")
            }
            try await sync(cluster, store)
            try await Compare.equal(cluster, store: store, "after the right password")
        }
    }

    /// A read-only role: refused with one line, nothing applied, and the owner's next catch-up
    /// resumes from the checkpoint.
    @Test func readOnlyRoleIsRefusedAndTheNextCatchUpResumes() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            try await rig.sync(store: store, day: 1)
            // A fresh database and a role that may not create schemas.
            #expect(await cluster.psql("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'; REVOKE CREATE ON SCHEMA public FROM PUBLIC;").status == 0)
            do {
                _ = try await sync(cluster, store, user: "reader", password: "reader-pw")
                Issue.record("a role without CREATE created the schema")
            } catch let e as SinkError {
                #expect(e.kind == .permission, "\(e)")
                #expect(!e.message.contains("reader-pw"))
            }
            try await sync(cluster, store)
            #expect(await cluster.psql("GRANT USAGE ON SCHEMA syncledger TO reader; GRANT SELECT ON ALL TABLES IN SCHEMA syncledger TO reader;").status == 0)
            let before = try await checkpointSeq(cluster)
            try await rig.sync(store: store, day: 2)
            await rig.stop()
            do {
                _ = try await sync(cluster, store, user: "reader", password: "reader-pw")
                Issue.record("a read-only role wrote the sink")
            } catch let e as SinkError {
                #expect(e.kind == .permission, "\(e)")
                #expect(e.message.contains("permission denied"), "\(e)")
                #expect(!e.message.contains("\n"))
            }
            #expect(try await checkpointSeq(cluster) == before)
            let r = try await sync(cluster, store)
            #expect(r.fromSeq == before)
            try await Compare.equal(cluster, store: store, "after the owner's catch-up")
            // A rebuild keeps the reader's grants: it still reads the new generation.
            try await rebuild(cluster, store)
            let read = await cluster.psql("SELECT count(*) > 0 FROM syncledger.appointments", user: "reader", password: "reader-pw")
            #expect(read.status == 0 && read.stdout.hasPrefix("t"), "\(read.stderr)")
        }
    }

    /// A schema edited by hand: one line naming what changed, nothing applied; `rebuild`
    /// recreates it and catch-ups resume.
    @Test func schemaEditedByHandIsRefusedThenRebuilt() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            try await rig.sync(store: store, day: 1)
            try await sync(cluster, store)
            #expect(await cluster.psql("ALTER TABLE syncledger.appointments DROP COLUMN client_name").status == 0)
            let before = try await checkpointSeq(cluster)
            try await rig.sync(store: store, day: 2)
            await rig.stop()
            do {
                _ = try await sync(cluster, store)
                Issue.record("a hand-edited schema was written to")
            } catch let e as SinkError {
                #expect(e.kind == .schemaEdited, "\(e)")
                #expect(e.message.contains("appointments.client_name is missing"), "\(e)")
                #expect(e.message.contains("syncledger postgres rebuild"), "\(e)")
            }
            #expect(try await checkpointSeq(cluster) == before)
            let r = try await rebuild(cluster, store)
            #expect(r.rebuilt)
            try await Compare.equal(cluster, store: store, "after the rebuild")
        }
    }

    /// A checkpoint whose chain hash is not the log's → rebuilt; one past the log's end →
    /// refused with one line (the log lost events), the sink untouched.
    @Test func checkpointMismatchRebuildsAndCheckpointPastTheLogIsRefused() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            try await rig.sync(store: store, day: 1)
            try await sync(cluster, store)
            #expect(await cluster.psql("UPDATE syncledger.checkpoints SET chain_hash = repeat('0', 64); DELETE FROM syncledger.appointments WHERE ctid IN (SELECT ctid FROM syncledger.appointments LIMIT 3)").status == 0)
            try await rig.sync(store: store, day: 2)
            await rig.stop()
            let r = try await sync(cluster, store)
            #expect(r.rebuilt)
            #expect(r.notes.contains { $0.contains("differs from this one") }, "\(r.notes)")
            try await Compare.equal(cluster, store: store, "after the rebuild on a hash mismatch")
            #expect(await cluster.psql("UPDATE syncledger.checkpoints SET seq = 1000000").status == 0)
            do {
                _ = try await sync(cluster, store)
                Issue.record("a checkpoint past the log's end was accepted")
            } catch let e as SinkError {
                #expect(e.kind == .logLostEvents, "\(e)")
                #expect(e.message.contains("the log lost events"), "\(e)")
            }
            #expect(try await checkpointSeq(cluster) == 1_000_000, "refused without touching the sink")
        }
    }

    /// The seed-shaped columns, read by a plain `psql` as a dashboard would; another schema name;
    /// purge for `forget`.
    @Test func seedShapedColumnsThroughPsqlAndPurge() async throws {
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            try await rig.sync(store: store, day: 1)
            await rig.stop()
            try await sync(cluster, store, schema: "practice_views")
            let r = await cluster.psql("""
                SELECT pq_appointment_id, patient_id, organization_id, provider_id, start_time < end_time, status,
                  meeting_url IS NOT NULL, location_info ? 'locationId', location_info ? 'locationType', removed
                FROM practice_views.appointments WHERE patient_id IS NOT NULL ORDER BY start_time LIMIT 5
                """)
            #expect(r.status == 0, "\(r.stderr)")
            let lines = r.stdout.split(separator: "\n")
            #expect(lines.count == 5, "\(r.stdout)")
            for line in lines {
                let f = line.split(separator: "|", omittingEmptySubsequences: false)
                #expect(f.count == 10)
                #expect(f[4] == "t" && f[7] == "t" && f[8] == "t" && f[9] == "f", "\(line)")
            }
            let logs = await cluster.psql("SELECT sync_type, status, metadata ? 'date_range' FROM practice_views.sync_logs")
            #expect(logs.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "automated_daily|completed|t", "\(logs.stdout)")
            try await Compare.equal(cluster, store: store, schema: "practice_views", "schema practice_views")
            // The CHECK values are the seed's.
            let bad = await cluster.psql("INSERT INTO practice_views.sync_logs (id, sync_type, started_at, status, metadata) VALUES ('x', 'nightly', now(), 'completed', '{}')")
            #expect(bad.status != 0 && bad.stderr.contains("check constraint"))
            // purge: the rows of one patient's appointments go, in one transaction.
            let patient = try await scalar(cluster, "SELECT patient_id FROM practice_views.appointments WHERE patient_id IS NOT NULL LIMIT 1")!
            let sink = try PostgresSink(url: cluster.sinkURL(), schema: "practice_views")
            let n = try await sink.withRunning { try await $0.purge(patientIds: [patient]) }
            #expect(n > 0)
            #expect(try await scalar(cluster, "SELECT count(*)::text FROM practice_views.appointment_patients WHERE patient_id = '\(patient)'") == "0")
        }
    }

    /// `syncledger postgres sync|rebuild` as a user runs them: URL from the flag or the
    /// environment, the password never printed, one line on failure.
    @Test func cliSyncAndRebuild() async throws {
        guard FileManager.default.isExecutableFile(atPath: try Paths.binary()) else {
            Issue.record("build the syncledger binary first (swift build --build-tests)")
            return
        }
        try await withCluster { cluster in
            let tmp = TempDir()
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            try await rig.sync(store: store, day: 1)
            await rig.stop()
            var env = ProcessInfo.processInfo.environment
            env["SYNCLEDGER_POSTGRES_URL"] = cluster.url()
            let a = await PGCluster.shell([try Paths.binary(), "postgres", "sync", "--store", store], environment: env)
            #expect(a.status == 0, "\(a.stderr)")
            #expect(a.stdout.contains("seq"), "\(a.stdout)")
            #expect(!(a.stdout + a.stderr).contains(PGCluster.password))
            try await Compare.equal(cluster, store: store, "after the CLI sync")
            let b = await PGCluster.shell([try Paths.binary(), "postgres", "rebuild", "--store", store, "--url", cluster.url(), "--schema", "other"])
            #expect(b.status == 0, "\(b.stderr)")
            try await Compare.equal(cluster, store: store, schema: "other", "after the CLI rebuild")
            let c = await PGCluster.shell([try Paths.binary(), "postgres", "sync", "--store", store, "--url", cluster.url(password: "Wr0ng-pass")])
            #expect(c.status != 0)
            #expect(c.stderr.split(separator: "\n").count == 1, "\(c.stderr)")
            #expect(c.stderr.contains("refused the login") && !c.stderr.contains("Wr0ng-pass"), "\(c.stderr)")
            let d = await PGCluster.shell([try Paths.binary(), "postgres", "sync", "--store", store],
                                    environment: ProcessInfo.processInfo.environment.filter { $0.key != "SYNCLEDGER_POSTGRES_URL" })
            #expect(d.status != 0 && d.stderr.contains("SYNCLEDGER_POSTGRES_URL"), "\(d.stderr)")
        }
    }
}


/// The trust rules: a log that lost acknowledged events is refused (the sink untouched) until
/// `repair --accept-loss` records the loss; then the next catch-up rebuilds the sink from it.
@Suite(.serialized)
struct SinkTrustTests {
    @Test func aLostLogIsRefusedUntilRepairThenRebuilt() async throws {
        try await withCluster { cluster in
            let tmp = TempDir("pgtrust")
            let store = tmp.sub("store")
            let rig = try await Rig.start()
            try await rig.sync(store: store, day: 1)
            try FileManager.default.copyItem(atPath: store + "/log", toPath: tmp.sub("log-day-1"))
            for day in 2...3 { try await rig.sync(store: store, day: day) }
            await rig.stop()
            var env = ProcessInfo.processInfo.environment
            env["SYNCLEDGER_POSTGRES_URL"] = cluster.url()
            let binary = try Paths.binary()
            let first = await PGCluster.shell([binary, "postgres", "sync", "--store", store], environment: env)
            #expect(first.status == 0, "\(first.stderr)")
            let seqOf = "SELECT min(seq)::text || '/' || (SELECT count(*) FROM syncledger.appointments)::text FROM syncledger.checkpoints"
            let before = try await scalar(cluster, seqOf)
            // An older copy of the log is restored over the newer one.
            try FileManager.default.removeItem(atPath: store + "/log")
            try FileManager.default.copyItem(atPath: tmp.sub("log-day-1"), toPath: store + "/log")
            let refused = await PGCluster.shell([binary, "postgres", "sync", "--store", store], environment: env)
            #expect(refused.status != 0)
            #expect(refused.stderr.split(separator: "\n").count == 1 && refused.stderr.contains("refusing to touch the PostgreSQL sink"), "\(refused.stderr)")
            #expect(!refused.stderr.contains(PGCluster.password))
            #expect(try await scalar(cluster, seqOf) == before, "the sink is untouched")
            let repair = await PGCluster.shell([binary, "repair", "--store", store, "--accept-loss", "restored an older backup (test)"], environment: env)
            #expect(repair.status == 0, "\(repair.stderr)")
            let rebuilt = await PGCluster.shell([binary, "postgres", "sync", "--store", store], environment: env)
            #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
            #expect(rebuilt.stdout.contains("rebuilt") && rebuilt.stderr.contains("repair --accept-loss"), "\(rebuilt.stdout) \(rebuilt.stderr)")
            try await Compare.equal(cluster, store: store, "after the accepted loss")
        }
    }
}

