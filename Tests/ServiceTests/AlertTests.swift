import FakeIntakeQ
import Domain
import Foundation
import JSONCore
import GRDB
import Ledger
import NIOHTTP1
import Projections
@testable import Service
import Sync
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// A clock tests move by hand (epoch millis).
final class TestClock: Sendable {
    private let t: Locked<Int64>
    init(_ start: Int64 = 1_800_000_000_000) { t = Locked(start) }
    var now: Int64 { t.value }
    func advance(hours: Double) { t.withLock { $0 += Int64(hours * 3_600_000) } }
}

/// Nothing personal and no secret in what an alert carries.
func expectNoSecretsOrPersonalData(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(!text.contains(ServerRig.apiKey), "the API key in an alert", sourceLocation: sourceLocation)
    #expect(!text.contains(webhookSecret), "the webhook secret in an alert", sourceLocation: sourceLocation)
    for p in Fixtures.roster.allPatients {
        if let name = p.name { #expect(!text.contains(name), "a patient's name in an alert", sourceLocation: sourceLocation) }
        if let email = p.email { #expect(!text.contains(email), "a patient's e-mail in an alert", sourceLocation: sourceLocation) }
    }
}

@Suite(.serialized) struct AlertTests {
    /// 401 from IntakeQ: the first failed run fires (webhook and command), the second does not
    /// fire again, a successful run sends "resolved"; the command reads the same JSON on stdin.
    @Test func aFailingRunFiresOnceAndASuccessSendsResolved() async throws {
        let receiver = try AlertReceiver()
        defer { receiver.stop() }
        let dir = TempDir()
        let commandOut = dir.sub("command-stdin.jsonl")
        let rig = try await ServerRig.start(dir: dir) { c in
            c.alertTargets = AlertTargets(webhooks: [receiver.url], command: "cat >> '\(commandOut)'")
            c.alertTargets.backoffSeconds = 0.05
        }
        defer { Task { await rig.stop() } }
        rig.fake.inject(.status(401, retryAfter: nil), path: "*", times: 100_000)

        let run1 = try await rig.nightlyAndWait()
        #expect(run1["status"]?.stringValue == "failed", "\(run1.text)")
        #expect(await rig.eventually(timeout: 30) { receiver.messages.count == 1 })
        let fired = try #require(receiver.messages.first)
        #expect(fired["status"]?.stringValue == "firing")
        #expect(fired["alert"]?.stringValue == "run_failed")
        #expect(fired["key"]?.stringValue == "run_failed:automated_daily")
        #expect(fired["severity"]?.stringValue == "critical")
        #expect(fired["run_id"]?.stringValue == run1["run_id"]?.stringValue)
        #expect(fired["store"]?.stringValue == rig.store)
        #expect(fired["at"]?.stringValue.flatMap(ISOTime.parse) != nil)
        let text = fired["text"]?.stringValue ?? ""
        #expect(text.hasPrefix("[CRITICAL] syncledger run_failed") && text.contains("401"), "\(text)")
        #expect(fired["summary"]?.stringValue?.contains("refused the API key") == true)
        expectNoSecretsOrPersonalData(fired.canonicalText)

        // A second failure is the same incident: nothing new is sent.
        let run2 = try await rig.nightlyAndWait()
        #expect(run2["status"]?.stringValue == "failed")
        #expect(try await rig.server.checkAlerts().isEmpty)
        try await Task.sleep(nanoseconds: 500_000_000)
        #expect(receiver.messages.count == 1)
        #expect(rig.server.alerts.firing.map(\.key) == ["run_failed:automated_daily"])
        // /admin shows the incident firing and the alert sent.
        let web = AdminClient(base: rig.base)
        _ = try await web.login(rig.tokens.admin)
        let dashboard = try await web.request(.GET, "/admin")
        await web.shutdown()
        #expect(dashboard.status == 200)
        #expect(dashboard.text.contains("Alert firing: run_failed") && dashboard.text.contains("run_failed (firing)"), "\(dashboard.text)")

        // IntakeQ takes the key again: the next run succeeds and the incident resolves.
        rig.fake.clearFaults()
        let run3 = try await rig.nightlyAndWait()
        #expect(run3["status"]?.stringValue == "completed", "\(run3.text)")
        #expect(await rig.eventually(timeout: 30) { receiver.messages.count == 2 })
        let resolved = try #require(receiver.messages.last)
        #expect(resolved["status"]?.stringValue == "resolved")
        #expect(resolved["key"]?.stringValue == "run_failed:automated_daily")
        #expect(resolved["text"]?.stringValue?.hasPrefix("[RESOLVED] syncledger run_failed") == true)
        #expect(rig.server.alerts.firing.isEmpty)
        #expect(await rig.server.alerts.idle(timeout: 30))

        // --alert-command read the same two messages on its standard input. Delivery is at
        // least once: an attempt judged failed after the command had written (stopped at the
        // time limit on a loaded machine) is tried again, so a message may come again right after
        // itself, but only as many times as the alert log counts attempts for it.
        let log = AlertLog.recent(storePath: rig.store)
        let lines = (try String(contentsOfFile: commandOut, encoding: .utf8)).split(separator: "\n")
        let viaCommand = lines.compactMap { try? FastJSON.parse(Array($0.utf8)) }
        var distinct: [JSONValue] = []
        for v in viaCommand where distinct.last?["id"] != v["id"] { distinct.append(v) }
        #expect(distinct.map { $0["id"]?.stringValue } == receiver.messages.map { $0["id"]?.stringValue }, "\(lines)")
        #expect(distinct.map { $0["status"]?.stringValue } == ["firing", "resolved"])
        for m in distinct {
            let copies = viaCommand.filter { $0["id"] == m["id"] }.count
            let attempts = log.first { $0.message.id == m["id"]?.stringValue }?.deliveries.first { $0.target == "command" }?.attempts ?? 1
            #expect(copies == 1 || copies <= attempts, "message \(m["id"]?.stringValue ?? "?") came \(copies) times in \(attempts) attempt(s)")
        }

        // The alert log lists both, each delivered to both targets; /metrics agrees nothing fires.
        #expect(log.map(\.message.status) == ["resolved", "firing"])
        for e in log {
            #expect(Set(e.deliveries.map(\.target)) == ["webhook 127.0.0.1", "command"])
            #expect(e.deliveries.allSatisfy { $0.ok })
        }
        let logText = try String(contentsOfFile: AlertLog.path(storePath: rig.store), encoding: .utf8)
        #expect(!logText.contains("not-a-real-secret"), "the webhook URL's path (its secret) in the alert log")
        expectNoSecretsOrPersonalData(logText)
        let m = try Exposition(try await rig.admin("/metrics").text)
        #expect(m.sum("syncledger_alerts_firing") == 0)
    }

    /// A receiver that accepts and never answers: the alert waits (bounded by its timeout and
    /// attempts), the next sync does not.
    @Test func aDeadReceiverDoesNotSlowASync() async throws {
        let dead = try AlertReceiver(silent: true)
        defer { dead.stop() }
        let rig = try await ServerRig.start { c in
            c.alertTargets = AlertTargets(webhooks: [dead.url])
            // 8 s: the run's bound below (a clean-clone CI run under full load took 5.6 s for
            // the fixtures' sync; the bound was 5 s).
            c.alertTargets.attemptTimeoutSeconds = 8
            c.alertTargets.maxAttempts = 2
            c.alertTargets.backoffSeconds = 0.1
        }
        defer { Task { await rig.stop() } }
        rig.fake.inject(.status(401, retryAfter: nil), path: "*", times: 100_000)
        let failed = try await rig.syncAndWait()
        #expect(failed["status"]?.stringValue == "failed")
        #expect(await rig.eventually(timeout: 10) { dead.requestCount >= 1 })
        #expect(rig.server.alerts.deliveriesInFlight >= 1)

        rig.fake.clearFaults()
        let started = Date()
        let ok = try await rig.syncAndWait()
        let seconds = Date().timeIntervalSince(started)
        #expect(ok["status"]?.stringValue == "completed")
        // The run finished while the alert to the dead receiver was still waiting for an answer.
        #expect(rig.server.alerts.deliveriesInFlight >= 1, "the sync waited for the alert (\(seconds) s)")
        #expect((ok["duration_ms"]?.doubleValue ?? .infinity) < 8000, "the run took \(ok["duration_ms"]?.doubleValue ?? -1) ms")

        // Bounded: both attempts time out, the delivery is recorded as failed, nothing hangs.
        #expect(await rig.server.alerts.idle(timeout: 40))
        let firing = try #require(AlertLog.recent(storePath: rig.store).first { $0.message.status == "firing" })
        let d = try #require(firing.deliveries.first)
        #expect(!d.ok && d.attempts == 2 && d.error != nil, "\(d)")
        #expect(dead.requestCount >= 2)
    }

    /// The incident rules with a clock the test moves: once, again after 6 h, resolved when it
    /// clears, not again after a restart; deliveries retried with doubling back-off.
    @Test func onceThenEverySixHoursThenResolvedAcrossARestart() async throws {
        let receiver = try AlertReceiver(failFirst: 2)
        defer { receiver.stop() }
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.sub("store/state"), withIntermediateDirectories: true)
        let clock = TestClock()
        let waits = Locked<[Double]>([])
        var targets = AlertTargets(webhooks: [receiver.url])
        targets.backoffSeconds = 2
        let make = {
            AlertEngine(targets: targets, storePath: dir.sub("store"), now: { clock.now },
                        sleep: { s in waits.withLock { $0.append(s) } })
        }
        let verifyFailed = AlertCondition(key: "verify_failed", alert: "verify_failed", severity: "critical",
                                          summary: "the last verify failed: a checksum does not match", runId: nil)
        let engine = make()
        #expect(engine.evaluate([verifyFailed]).map(\.status) == ["firing"])
        #expect(await engine.idle())
        // The first two attempts got 500: retried after 2 s, then 4 s.
        #expect(waits.withLock { $0 } == [2, 4])
        #expect(AlertLog.recent(storePath: dir.sub("store")).first?.deliveries.first?.attempts == 3)
        clock.advance(hours: 1)
        #expect(engine.evaluate([verifyFailed]).isEmpty)
        clock.advance(hours: 4.9)
        #expect(engine.evaluate([verifyFailed]).isEmpty)
        clock.advance(hours: 0.2)
        let reminder = engine.evaluate([verifyFailed])
        #expect(reminder.map(\.status) == ["firing"] && reminder.first?.reminder == true)
        clock.advance(hours: 1)
        #expect(engine.evaluate([verifyFailed]).isEmpty)
        #expect(await engine.idle())

        // A restart remembers the open incident: no new announcement.
        let restarted = make()
        #expect(restarted.firing.map(\.key) == ["verify_failed"])
        #expect(restarted.evaluate([verifyFailed]).isEmpty)
        let resolved = restarted.evaluate([])
        #expect(resolved.map(\.status) == ["resolved"])
        #expect(resolved.first?.summary.hasPrefix("cleared after 7.1 h") == true, "\(resolved.first?.summary ?? "")")
        #expect(restarted.evaluate([]).isEmpty)
        #expect(await restarted.idle())
        #expect(receiver.messages.map { $0["status"]?.stringValue ?? "" } == ["firing", "firing", "resolved"])
        #expect(AlertLog.open(storePath: dir.sub("store")).isEmpty)
    }

    /// The alert command gets the message on its standard input and is done when its shell
    /// exits, even if it left a job running in the background (Foundation's `Process` saw the
    /// end only once that job had gone: the delivery "ran" to the attempt's timeout and failed);
    /// two at once do not wait on each other. One that runs past the timeout is stopped, its
    /// group with it, and one that exits non-zero fails; each says so.
    @Test func theAlertCommandIsDoneWhenItsShellExits() async throws {
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.sub("store/state"), withIntermediateDirectories: true)
        func engine(_ command: String, timeout: Double) -> AlertEngine {
            var targets = AlertTargets(command: command)
            targets.attemptTimeoutSeconds = timeout
            targets.maxAttempts = 1
            return AlertEngine(targets: targets, storePath: dir.sub("store"), sleep: { _ in })
        }
        func pids(_ file: String) -> [Int32] {
            ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
        }
        /// True while `pid` is a live `sleep` (not a zombie, not a pid given to another process).
        func sleeping(_ pid: Int32) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
            return stat.contains("(sleep) ") && !stat.contains(") Z ")
        }
        defer { for p in pids(dir.sub("jobs")) where sleeping(p) { kill(p, SIGKILL) } }
        // Each leaves `sleep 60` running, its pid noted so the test can end it.
        func leaving(_ n: Int) -> String {
            "cat > '\(dir.sub("out-\(n).json"))'; sleep 60 > /dev/null 2>&1 & echo $! >> '\(dir.sub("jobs"))'"
        }
        let one = engine(leaving(1), timeout: 8), two = engine(leaving(2), timeout: 8)
        let started = Date()
        async let first = one.sendTest()
        async let second = two.sendTest()
        let (a, b) = await (first, second)
        let took = Date().timeIntervalSince(started)
        #expect(a.map(\.ok) == [true] && b.map(\.ok) == [true], "\(a) \(b)")
        #expect(took < 6, "the deliveries took \(took) s (the attempt's timeout is 8 s)")
        for n in [1, 2] {
            let text = (try? String(contentsOfFile: dir.sub("out-\(n).json"), encoding: .utf8)) ?? ""
            #expect(text.contains("\"alert\":\"test\""), "command \(n) read: \(text.debugDescription)")
        }
        // Left running: each is a `sleep` once its shell's fork has run `exec` (under load, a
        // moment after the shell has exited).
        var running = false
        for _ in 0..<100 where !running {
            running = pids(dir.sub("jobs")).count == 2 && pids(dir.sub("jobs")).allSatisfy(sleeping)
            if !running { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(running, "the background jobs are left running: \(pids(dir.sub("jobs")))")

        let slow = await engine("sleep 60 & echo $! >> '\(dir.sub("jobs"))'; wait", timeout: 3).sendTest()
        #expect(slow.first?.ok == false && slow.first?.error == "the alert command did not finish within 3.0 s and was stopped",
                "\(slow)")
        // Its group was stopped: the shell's `sleep` too (reaped by init, or gone).
        let jobs = pids(dir.sub("jobs"))
        try #require(jobs.count == 3, "\(jobs)")
        var stopped = false
        for _ in 0..<50 where !stopped {
            stopped = !sleeping(jobs[2])
            if !stopped { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(stopped, "the timed-out command's background sleep \(jobs[2]) still runs")

        let failing = await engine("exit 3", timeout: 5).sendTest()
        #expect(failing.first?.ok == false && failing.first?.error == "the alert command exited with status 3", "\(failing)")
    }

    /// At shutdown a delivery still on its way is given its grace, then cancelled: its command
    /// is stopped with its group and the delivery recorded as not delivered, because the server
    /// stopped (it was lost without a record, and its command outlived the server).
    @Test func aDeliveryStillRunningAtShutdownIsStoppedAndRecorded() async throws {
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.sub("store/state"), withIntermediateDirectories: true)
        let jobs = dir.sub("jobs")
        var targets = AlertTargets(command: "sleep 60 & echo $! >> '\(jobs)'; wait")
        targets.attemptTimeoutSeconds = 60
        targets.maxAttempts = 3
        let engine = AlertEngine(targets: targets, storePath: dir.sub("store"), sleep: { _ in })
        let failed = AlertCondition(key: "verify_failed", alert: "verify_failed", severity: "critical",
                                    summary: "the last verify failed", runId: nil)
        #expect(engine.evaluate([failed]).map(\.status) == ["firing"])
        var started = false
        for _ in 0..<100 where !started {
            started = ((try? String(contentsOfFile: jobs, encoding: .utf8)) ?? "").contains("\n")
            if !started { try await Task.sleep(for: .milliseconds(50)) }
        }
        try #require(started, "the alert command never started")
        let job = try #require(Int32(((try? String(contentsOfFile: jobs, encoding: .utf8)) ?? "").split(separator: "\n")[0]))
        defer { kill(job, SIGKILL) }
        let stopping = Date()
        await engine.stop(grace: 0.5)
        _ = await engine.idle(timeout: 30)
        let took = Date().timeIntervalSince(stopping)
        // Well before the attempt's own 60 s timeout (and its two more attempts).
        #expect(engine.deliveriesInFlight == 0 && took < 30, "in flight: \(engine.deliveriesInFlight) after \(took) s")
        let entry = try #require(AlertLog.recent(storePath: dir.sub("store")).first)
        #expect(entry.deliveries.map(\.target) == ["command"] && entry.deliveries.first?.ok == false, "\(entry.deliveries)")
        #expect(entry.deliveries.first?.error == "the server stopped before the delivery ended", "\(entry.deliveries)")
        #expect(entry.deliveries.first?.attempts == 1, "\(entry.deliveries)")
        // The command's group was stopped: its background sleep too.
        var gone = false
        for _ in 0..<50 where !gone {
            let stat = try? String(contentsOfFile: "/proc/\(job)/stat", encoding: .utf8)
            gone = stat == nil || stat!.contains(") Z ") || !stat!.contains("(sleep) ")
            if !gone { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(gone, "the alert command's sleep \(job) outlived the shutdown")
        // The next server sends the incident at its first check, not hours later at the reminder;
        // once only.
        let received = dir.sub("received")
        let restarted = AlertEngine(targets: AlertTargets(command: "cat >> '\(received)'"), storePath: dir.sub("store"), sleep: { _ in })
        let again = restarted.evaluate([failed])
        #expect(again.map(\.status) == ["firing"] && again.map(\.reminder) == [true], "\(again)")
        #expect(await restarted.idle(timeout: 30))
        #expect(((try? String(contentsOfFile: received, encoding: .utf8)) ?? "").contains("\"verify_failed\""))
        #expect(restarted.evaluate([failed]).isEmpty)
        #expect(AlertEngine(targets: AlertTargets(command: "true"), storePath: dir.sub("store"), sleep: { _ in }).evaluate([failed]).isEmpty)
    }

    /// Every incident whose delivery a shutdown cut short is due again at the next server, not
    /// only the last one saved: the cancelled deliveries record it at the same moment.
    @Test func everyIncidentCutShortAtShutdownIsDueAgain() async throws {
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.sub("store/state"), withIntermediateDirectories: true)
        var targets = AlertTargets(command: "exec sleep 60")
        targets.attemptTimeoutSeconds = 60
        targets.maxAttempts = 1
        let engine = AlertEngine(targets: targets, storePath: dir.sub("store"), sleep: { _ in })
        let conditions = (0..<8).map { AlertCondition(key: "run_failed:t\($0)", alert: "run_failed", severity: "critical",
                                                      summary: "a run failed", runId: nil) }
        #expect(engine.evaluate(conditions).count == 8)
        try await Task.sleep(for: .milliseconds(300))
        await engine.stop(grace: 0)
        #expect(await engine.idle(timeout: 30))
        let restarted = AlertEngine(targets: AlertTargets(command: "true"), storePath: dir.sub("store"), sleep: { _ in })
        let again = restarted.evaluate(conditions)
        #expect(again.map(\.key).sorted() == conditions.map(\.key).sorted() && again.allSatisfy(\.reminder), "\(again.map(\.key))")
        _ = await restarted.idle(timeout: 30)
    }

    /// A message with no delivery recorded says why: no target, or (with targets) still on its
    /// way or cut off by a kill. After a SIGKILL of serve, `status` said "no target".
    @Test func aMessageWithoutADeliverySaysWhy() async throws {
        let dir = TempDir()
        let store = dir.sub("store")
        try FileManager.default.createDirectory(atPath: store + "/state", withIntermediateDirectories: true)
        let failed = AlertCondition(key: "verify_failed", alert: "verify_failed", severity: "critical", summary: "the last verify failed", runId: nil)
        // No target.
        _ = AlertEngine(targets: AlertTargets(), storePath: store).evaluate([failed])
        #expect(AlertLog.recent(storePath: store).first?.outcome == "no target")
        // A target, and the server killed before the delivery was recorded: the message alone.
        let m = AlertEngine.message(failed, status: "firing", store: store, at: 0, reminder: false)
        AlertLog.record(m, targets: 2, storePath: store)
        let killed = try #require(AlertLog.recent(storePath: store).first)
        #expect(killed.message.id == m.id && killed.targets == 2)
        #expect(killed.outcome == "no delivery recorded: still on its way, or the server was killed before it ended")
        // A line from before the count was kept.
        let old = #"{"type":"message","id":"old-1","alert":"verify_failed","key":"verify_failed","status":"firing","severity":"critical","summary":"s","at":"2026-12-01T00:00:00.000Z"}"#
        let h = try #require(FileHandle(forWritingAtPath: AlertLog.path(storePath: store)))
        h.seekToEndOfFile()
        h.write(Data((old + "\n").utf8))
        h.closeFile()
        #expect(AlertLog.recent(storePath: store).first?.outcome == "no delivery recorded")
        // Delivered: each target's outcome.
        let engine = AlertEngine(targets: AlertTargets(command: "true"), storePath: store, sleep: { _ in })
        _ = engine.evaluate([AlertCondition(key: "k", alert: "run_failed", severity: "critical", summary: "s", runId: nil)])
        #expect(await engine.idle(timeout: 30))
        #expect(AlertLog.recent(storePath: store).first?.outcome == "command ok")
    }

    /// A message names its store by an absolute path, whatever `--store` was given as.
    @Test func theStoreIsNamedByItsAbsolutePath() {
        #expect(AlertEngine.absolute("s", in: "/srv/a") == "/srv/a/s")
        #expect(AlertEngine.absolute(".", in: "/srv/a") == "/srv/a")
        #expect(AlertEngine.absolute("../b/./s", in: "/srv/a") == "/srv/b/s")
        #expect(AlertEngine.absolute("/var/lib//syncledger", in: "/srv/a") == "/var/lib//syncledger")
        #expect(AlertEngine(targets: AlertTargets(), storePath: "store").storePath == FileManager.default.currentDirectoryPath + "/store")
    }

    /// The alert command's environment is the server's without its secrets: the IntakeQ key
    /// (and its file), the master key's file, and the PostgreSQL URL, which holds a password.
    @Test func theAlertCommandGetsNoSecrets() {
        let server = ["PATH": "/usr/bin:/bin", "HOME": "/root", "INTAKEQ_API_KEY": "k", "INTAKEQ_API_KEY_FILE": "/run/k",
                      "SYNCLEDGER_MASTER_KEY_FILE": "/run/m", "SYNCLEDGER_POSTGRES_URL": "postgres://u:secret@db/x", "PGPASSWORD": "secret",
                      "PGPASSFILE": "/run/pgpass"]
        #expect(AlertEngine.commandEnvironment(server) == ["PATH": "/usr/bin:/bin", "HOME": "/root"])
    }

    /// SERVICE.md's six conditions over hand-made snapshots: each fires exactly past its threshold.
    @Test func theSixConditionsAndTheirThresholds() {
        let now: Int64 = 1_800_000_000_000
        let hour: Int64 = 3_600_000
        let rules = AlertRules()
        func snapshot(_ edit: (inout HealthSnapshot) -> Void) -> HealthSnapshot {
            var s = HealthSnapshot(now: now)
            var daily = RunTypeHealth(syncType: "automated_daily")
            daily.lastRunId = "d1"
            daily.lastStatus = "completed"
            daily.lastStartedAt = now - 2 * hour
            daily.lastSuccessAt = now - 2 * hour
            daily.lastErrorRatio = 0
            s.types["automated_daily"] = daily
            s.firstRunAt = now - 100 * hour
            edit(&s)
            return s
        }
        #expect(rules.evaluate(snapshot { _ in }).isEmpty)
        // 1. A run fails.
        var failed: [AlertCondition] = []
        failed = rules.evaluate(snapshot { s in s.types["automated_daily"]?.lastStatus = "failed"; return })
        #expect(failed.map(\.key) == ["run_failed:automated_daily"])
        // A failed manual run is cleared by a later successful nightly run; not by an earlier one.
        let manual = { (startedAt: Int64) in
            rules.evaluate(snapshot { s in
                var m = RunTypeHealth(syncType: "manual_patient")
                m.lastStatus = "failed"
                m.lastStartedAt = startedAt
                s.types["manual_patient"] = m
            }).map(\.key)
        }
        #expect(manual(now - 3 * hour).isEmpty)
        #expect(manual(now - hour) == ["run_failed:manual_patient"])
        // 2. partial_success twice in a row (once is fine).
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"]?.partialStreak = 1; return })
            #expect(r.isEmpty)
        }
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"]?.partialStreak = 2; return })
            #expect(r.map(\.alert) == ["partial_success_repeated"])
        }
        // 3. Error share over 10%.
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"]?.lastErrorRatio = 0.10; return })
            #expect(r.isEmpty)
        }
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"]?.lastErrorRatio = 0.11; return })
            #expect(r.map(\.alert) == ["error_share_high"])
        }
        // A failed run's errors are run_failed's business, not a second incident.
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"]?.lastErrorRatio = 1; s.types["automated_daily"]?.lastStatus = "failed"; return })
            #expect(r.map(\.alert) == ["run_failed"])
        }
        // 4. No successful automated_daily run in 26 h (or none ever, 26 h after the first run).
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"]?.lastSuccessAt = now - 25 * hour; return })
            #expect(r.isEmpty)
        }
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"]?.lastSuccessAt = now - 27 * hour; return })
            #expect(r.map(\.alert) == ["daily_sync_stale"])
        }
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"] = nil; return })
            #expect(r.map(\.alert) == ["daily_sync_stale"])
        }
        do {
            let r = rules.evaluate(snapshot { s in s.types["automated_daily"] = nil; s.firstRunAt = nil; return }, watchingSince: now - hour)
            #expect(r.isEmpty)
        }
        // 5. Verify fails.
        let verify = VerifyRecord(at: "2026-12-01T00:00:00.000Z", head: "1:ab", ok: false, events: 1, error: "checksum mismatch in peyton@example.org")
        let v = rules.evaluate(snapshot { s in s.verify = verify; return })
        #expect(v.map(\.alert) == ["verify_failed"])
        #expect(v.first?.summary.contains("@") == false, "an e-mail-shaped word in a summary")
        #expect(v.first?.summary.contains("more standing") == false, "\(v)")
        // Another kind of failure standing beside it is counted (the alert named the first only).
        var both = VerifyRecord(at: "2026-12-01T00:00:00.000Z", head: "1:ab", ok: false, events: 1,
                                error: String(repeating: "the log diverges from the expected head ", count: 10), kind: VerifyRecord.expectedHead)
        both.standing = [verify]
        let v2 = rules.evaluate(snapshot { s in s.verify = both; return })
        #expect(v2.first?.summary.hasSuffix("(and 1 more standing failure: see `syncledger status`)") == true, "\(v2)")
        // Damaged views met by a command or a request.
        let damage = ViewsDamageRecord(at: "2026-12-01T00:00:00.000Z", command: "appointments",
                                       error: "SQLite error 11: database disk image is malformed near peyton@example.org")
        let d = rules.evaluate(snapshot { s in s.viewsDamage = damage; return })
        #expect(d.map(\.alert) == ["views_damaged"])
        #expect(d.first?.severity == "critical")
        #expect(d.first?.summary.contains("`appointments`") == true && d.first?.summary.contains("syncledger rebuild") == true, "\(d)")
        #expect(d.first?.summary.contains("@") == false, "an e-mail-shaped word in a summary")
        // 6. The inbox's oldest id older than an hour.
        do {
            let r = rules.evaluate(snapshot { s in s.inboxDepth = 3; s.inboxOldestAt = now - 59 * 60_000; return })
            #expect(r.isEmpty)
        }
        do {
            let r = rules.evaluate(snapshot { s in s.inboxDepth = 3; s.inboxOldestAt = now - 61 * 60_000; return })
            #expect(r.map(\.alert) == ["webhook_inbox_stale"])
        }
    }
}

/// A run still in progress with no live writer died: `status` counts it as failed, and its reason
/// (the view has none for it) is that it died, in the snapshot and so in the run_failed alert.
@Suite struct DiedRunHealthTests {
    @Test func aDiedRunsReasonIsThatItDied() throws {
        let db = try DatabaseQueue()
        try db.write { db in
            try SyncLogsProjection().create(db, .live)
            try db.execute(sql: """
                INSERT INTO sync_logs (id, sync_type, started_at, status, metadata) VALUES ('r1', 'webhook', '2026-12-01T10:00:00.000Z', 'in_progress', '{}')
                """)
        }
        let now = try #require(ISOTime.parse("2026-12-01T11:00:00Z"))
        let watched = try db.read { try HealthSnapshot.read($0, now: now, treatInProgressAsFailed: true) }
        #expect(watched.types["webhook"]?.lastStatus == "failed")
        #expect(watched.types["webhook"]?.lastErrorMessage == HealthSnapshot.died)
        let alert = try #require(AlertRules().evaluate(watched).first { $0.alert == "run_failed" })
        #expect(alert.summary.contains("run failed: died") && !alert.summary.contains("no reason recorded"), "\(alert.summary)")
        // The server leaves a run in progress alone: no finished run, no alert.
        let served = try db.read { try HealthSnapshot.read($0, now: now) }
        #expect(served.types["webhook"]?.lastStatus == nil)
    }
}
