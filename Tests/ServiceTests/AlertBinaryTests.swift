import FakeIntakeQ
import Foundation
import GRDB
import JSONCore
import Ledger
import NIOHTTP1
@testable import Service
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// The built binary as an operator runs it: `serve --alert-webhook --alert-command
/// --metrics-public`, `alert test`, and `status` with the alerts' checks.
@Suite(.serialized) struct AlertBinaryTests {
    static let apiKey = "sk-test-ALERTS-never-in-a-payload"

    /// A wrong API key (IntakeQ answers 401): the real `serve` sends the alert to both targets,
    /// the command without the key in its environment; `status` then lists the alert and exits 1.
    @Test func serveAlertsAWebhookAndACommandAndStatusListsThem() async throws {
        let dir = TempDir()
        let receiver = try AlertReceiver()
        defer { receiver.stop() }
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        let fakeBase = try await fake.start()
        defer { Task { await fake.stop() } }
        let tokens = try TestTokens.write(in: dir.path)
        let store = dir.sub("store")
        let stdinFile = dir.sub("stdin.jsonl")
        let envFile = dir.sub("env.txt")
        let urlFile = dir.sub("alert-url")
        try (receiver.url + "\n").write(toFile: urlFile, atomically: true, encoding: .utf8)
        let wrongKey = "sk-wrong-key-that-IntakeQ-refuses"
        let server = try Spawned([
            "--store", store, "serve", "--roster", Paths.roster, "--listen", "127.0.0.1:0", "--base-url", fakeBase,
            "--tokens", tokens.path, "--requests-per-minute", "100000", "--metrics-public",
            "--alert-webhook", "@" + urlFile, "--alert-command", "env > '\(envFile)'; cat >> '\(stdinFile)'",
        ], env: ["INTAKEQ_API_KEY": wrongKey], dir: dir.path)
        let base = try await server.listening()
        let queued = try await http(.POST, base + "/api/v1/sync", token: tokens.admin, body: Array(#"{"scope":"all"}"#.utf8))
        #expect(queued.status == 202)
        #expect(await eventually(timeout: 60) { receiver.messages.count == 1 }, "stderr: \(server.stderr)")
        #expect(await eventually(timeout: 30) { ((try? String(contentsOfFile: stdinFile, encoding: .utf8)) ?? "").contains("run_failed") })
        let fired = try #require(receiver.messages.first)
        #expect(fired["alert"]?.stringValue == "run_failed" && fired["status"]?.stringValue == "firing")
        #expect(fired["run_id"]?.stringValue == queued["run_id"]?.stringValue)
        let viaCommand = try String(contentsOfFile: stdinFile, encoding: .utf8)
        #expect(try FastJSON.parse(Array(viaCommand.split(separator: "\n")[0].utf8))["id"] == fired["id"])
        for text in [fired.canonicalText, viaCommand, server.stderr] {
            #expect(!text.contains(wrongKey), "the API key in an alert or a log line")
        }
        let env = try String(contentsOfFile: envFile, encoding: .utf8)
        #expect(!env.contains(wrongKey) && !env.contains("INTAKEQ_API_KEY"), "the alert command saw the API key")
        // /metrics without a token (--metrics-public) shows the alert firing.
        let scrape = try await http(.GET, base + "/metrics")
        #expect(scrape.status == 200)
        let m = try Exposition(scrape.text)
        #expect(m.value("syncledger_alerts_firing", ["alert": "run_failed"]) == 1)
        #expect(m.value("syncledger_last_run_failed", ["sync_type": "manual_org_bulk"]) == 1)
        server.signal(SIGTERM)
        let exit = await server.wait()
        #expect(exit == 0, "serve exited \(exit.map(String.init) ?? "nil"): \(server.stderr)")

        // Cron's view: status exits 1, says why, and lists the alert sent and the incident open.
        let status = try Spawned(["--store", store, "status"], dir: dir.path)
        #expect(await status.wait() == 1)
        #expect(status.stdout.contains("problem: the last manual_org_bulk run failed"), "\(status.stdout)")
        #expect(status.stdout.contains("alert firing") && status.stdout.contains("alerts sent"), "\(status.stdout)")
        #expect(status.stdout.contains("firing run_failed") && status.stdout.contains("webhook 127.0.0.1 ok"), "\(status.stdout)")
        // Their times as the table's other times are shown (they were ISO UTC).
        let denver = try Spawned(["--store", store, "status", "--timezone", "America/Denver"], dir: dir.path)
        #expect(await denver.wait() == 1)
        let lines = denver.stdout.split(separator: "\n")
        #expect(lines.contains { $0.contains(#/^alert firing \(since \d{4}-\d\d-\d\d \d\d:\d\d M[SD]T\): run_failed: /#) }, "\(denver.stdout)")
        #expect(lines.contains { $0.contains(#/^  \d{4}-\d\d-\d\d \d\d:\d\d M[SD]T firing run_failed: /#) }, "\(denver.stdout)")
        // Text from outside (here IntakeQ's error message, kept in the views) reaches the terminal
        // escaped on every line that quotes it: the problem line printed it raw.
        let views = try DatabaseQueue(path: store + "/projections.sqlite")
        try await views.write { db in
            try db.execute(sql: "UPDATE sync_logs SET error_message = ? WHERE sync_type = 'manual_org_bulk' AND status = 'failed'",
                           arguments: ["bad \u{1B}[2J gateway"])
            #expect(db.changesCount > 0)
        }
        try views.close()
        let escaped = try Spawned(["--store", store, "status"], dir: dir.path)
        #expect(await escaped.wait() == 1)
        #expect(!escaped.stdout.contains("\u{1B}") && escaped.stdout.contains("problem: the last manual_org_bulk run failed: bad \\u{1B}[2J gateway"),
                "\(escaped.stdout)")
        let json = try Spawned(["--store", store, "status", "--json"], dir: dir.path)
        #expect(await json.wait() == 1)
        let o = try FastJSON.parse(Array(json.stdout.utf8))
        #expect(o["ok"] == .bool(false) && o["head"]?.stringValue != nil && o["runs"] != nil && o["problems"] != nil)
        if case .array(let recent)? = o["alerts"]?["recent"] {
            #expect(recent.count == 1 && recent[0]["alert"]?.stringValue == "run_failed")
            if case .array(let deliveries)? = recent[0]["deliveries"] {
                #expect(deliveries.count == 2 && deliveries.allSatisfy { $0["ok"] == .bool(true) })
            } else {
                Issue.record("no deliveries in \(recent[0])")
            }
        } else {
            Issue.record("status --json has no alerts.recent: \(json.stdout)")
        }
        if case .array(let firing)? = o["alerts"]?["firing"] {
            #expect(firing.map { $0["key"]?.stringValue } == ["run_failed:manual_org_bulk"])
        } else {
            Issue.record("status --json has no alerts.firing")
        }
        #expect(!json.stdout.contains("not-a-real-secret"), "a webhook URL's path in status")
    }

    /// `alert test`: delivered to a live receiver and a command (exit 0); a receiver that never
    /// answers fails within the timeout (exit 1) instead of hanging.
    @Test func alertTestSendsToEachTargetAndFailsOnADeadOne() async throws {
        let dir = TempDir()
        let receiver = try AlertReceiver()
        defer { receiver.stop() }
        let out = dir.sub("mail.json")
        let ok = try Spawned(["alert", "test", "--alert-webhook", receiver.url, "--alert-command", "cat > '\(out)'"], dir: dir.path)
        #expect(await ok.wait() == 0, "\(ok.stdout) \(ok.stderr)")
        #expect(ok.stdout.contains("delivered to webhook 127.0.0.1 (1 attempt)") && ok.stdout.contains("delivered to command"), "\(ok.stdout)")
        #expect(receiver.messages.first?["status"]?.stringValue == "test")
        #expect(receiver.messages.first?["text"]?.stringValue?.hasPrefix("[TEST] syncledger") == true)
        let mailed = try FastJSON.parse(Array(try String(contentsOfFile: out, encoding: .utf8).utf8))
        #expect(mailed["status"]?.stringValue == "test" && mailed["id"] == receiver.messages.first?["id"])

        let dead = try AlertReceiver(silent: true)
        defer { dead.stop() }
        let started = Date()
        let failed = try Spawned(["alert", "test", "--alert-webhook", dead.url, "--alert-timeout", "1", "--attempts", "2"], dir: dir.path)
        #expect(await failed.wait(timeout: 30) == 1)
        #expect(Date().timeIntervalSince(started) < 15)
        #expect(failed.stdout.contains("NOT delivered to webhook 127.0.0.1 after 2 attempts"), "\(failed.stdout)")

        let none = try Spawned(["alert", "test"], dir: dir.path)
        #expect(await none.wait() == 1)
        #expect(none.stderr.contains("no alert target"))
        let bad = try Spawned(["alert", "test", "--alert-webhook", "ftp://example.org/x"], dir: dir.path)
        #expect(await bad.wait() != 0)
        #expect(bad.stderr.contains("--alert-webhook") && !bad.stderr.contains("Fatal"), "\(bad.stderr)")
    }

    /// A command that does not read the message (`exit 3`, `true`, a missing mailer) is not a
    /// broken pipe crash: its exit status decides. A command past --alert-timeout is stopped with
    /// its children (a shell's `sleep`) and reported as such, at the timeout.
    @Test func aCommandThatIgnoresItsInputOrHangsIsOneLine() async throws {
        let dir = TempDir()
        let exit3 = try Spawned(["alert", "test", "--alert-command", "exit 3", "--attempts", "1"], dir: dir.path)
        #expect(await exit3.wait(timeout: 30) == 1, "\(exit3.stdout) \(exit3.stderr)")
        #expect(exit3.stdout.contains("exited with status 3"), "\(exit3.stdout)")
        let ignores = try Spawned(["alert", "test", "--alert-command", "true", "--attempts", "1"], dir: dir.path)
        #expect(await ignores.wait(timeout: 30) == 0, "\(ignores.stdout) \(ignores.stderr)")
        #expect(!ignores.stderr.contains("Fatal"), "\(ignores.stderr)")
        let started = Date()
        let hangs = try Spawned(["alert", "test", "--alert-command", "cat > /dev/null; sleep 30", "--alert-timeout", "1", "--attempts", "1"], dir: dir.path)
        #expect(await hangs.wait(timeout: 60) == 1)
        #expect(Date().timeIntervalSince(started) < 15, "the timeout did not stop the command's children")
        #expect(hangs.stdout.contains("did not finish within 1.0 s"), "\(hangs.stdout)")
    }

    /// `status` for cron users: an id waiting in the webhook inbox for over an hour is a problem.
    @Test func statusFlagsAnOldWebhookInbox() async throws {
        let rig = try await ServerRig.start()
        let run = try await rig.nightlyAndWait()
        #expect(run["status"]?.stringValue == "completed")
        await rig.stop()
        let fresh = try Spawned(["--store", rig.store, "status", "--json"], dir: rig.dir.path)
        #expect(await fresh.wait() == 0, "\(fresh.stdout)")
        let two = Int64(Date().timeIntervalSince1970 * 1000) - 2 * 3_600_000
        let line = "+ 98765 \(String(repeating: "a", count: 64)) \(two)\n"
        let inbox = try FileHandle(forWritingTo: URL(fileURLWithPath: rig.store + "/state/webhook-inbox.log"))
        try inbox.seekToEnd()
        try inbox.write(contentsOf: Data(line.utf8))
        try inbox.close()
        let old = try Spawned(["--store", rig.store, "status", "--json"], dir: rig.dir.path)
        #expect(await old.wait() == 1)
        let o = try FastJSON.parse(Array(old.stdout.utf8))
        #expect(o["inbox"]?["depth"]?.doubleValue == 1)
        #expect((o["inbox"]?["oldest_age_seconds"]?.doubleValue ?? 0) > 7000)
        if case .array(let problems)? = o["problems"] {
            #expect(problems.contains { $0.stringValue?.contains("webhook inbox") == true }, "\(problems)")
        }
        if case .array(let checks)? = o["checks"] {
            #expect(checks.map { $0["alert"]?.stringValue } == ["webhook_inbox_stale"])
        }
    }
}
