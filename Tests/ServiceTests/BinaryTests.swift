import FakeIntakeQ
import Foundation
#if canImport(CNIOLinux)
import CNIOLinux  // members of C structs (sockaddr_in, pollfd) may be taken for its (MemberImportVisibility)
#endif
import JSONCore
import Ledger
import NIOHTTP1
@testable import Service
import Sync
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// The built `syncledger serve` as an operator runs it.
enum Binary {
    static let path: String? = {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["SYNCLEDGER_BIN"], !env.isEmpty { candidates.append(env) }
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append((exe as NSString).deletingLastPathComponent + "/syncledger")
        }
        candidates.append(Paths.root + "/.build/debug/syncledger")
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()
}

/// What `serve` needs beside its store, in `dir`: `fake` started (its base URL), a tokens file and
/// the webhook secret's file.
func serveFiles(in dir: TempDir, fake: FakeIntakeQServer) async throws -> (fakeBase: String, tokens: TestTokens, secretFile: String) {
    let fakeBase = try await fake.start()
    let tokens = try TestTokens.write(in: dir.path)
    let secretFile = dir.sub("secret")
    try webhookSecret.write(toFile: secretFile, atomically: true, encoding: .utf8)
    // Owner-only, as the README sets it up (a wider mode is warned about).
    chmod(secretFile, 0o600)
    return (fakeBase, tokens, secretFile)
}

final class Spawned: Sendable {
    let child: ChildProcess
    let out: String
    let err: String

    init(_ args: [String], env: [String: String] = [:], dir: String) throws {
        let binary = try #require(Binary.path, "build the syncledger binary first (swift build --build-tests)")
        let id = UUID().uuidString.prefix(8)
        out = dir + "/out-\(id)"
        err = dir + "/err-\(id)"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        // The key and the store come only from `env`, never from the test runner's environment.
        var overrides: [String: String?] = ["INTAKEQ_API_KEY": .none, "SYNCLEDGER_STORE": .none]
        for (k, v) in env { overrides.updateValue(v, forKey: k) }
        child = try ProcessRunner.start(binary, args, overrides: overrides, stdoutPath: out, stderrPath: err)
    }

    var pid: Int32 { child.pid }
    var isRunning: Bool { child.isRunning }
    var stdout: String { String(decoding: FileManager.default.contents(atPath: out) ?? Data(), as: UTF8.self) }
    var stderr: String { String(decoding: FileManager.default.contents(atPath: err) ?? Data(), as: UTF8.self) }

    /// The base URL once `serve` prints its listening line.
    func listening(timeout: Double = 60) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = stdout.split(separator: "\n").first(where: { $0.contains("listening on ") }) {
                return String(line.split(separator: " ").last!)
            }
            guard child.isRunning else { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        throw ServeError("serve did not start: \(stderr)")
    }

    func signal(_ sig: Int32) { child.kill(sig) }

    /// The exit status, or nil when it was still running after `timeout` s (then SIGKILLed).
    func wait(timeout: Double = 60) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while child.isRunning, Date() < deadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        if child.isRunning {
            child.kill(SIGKILL)
            _ = await child.wait()
            return nil
        }
        return await child.wait().status
    }
}

@Suite(.serialized) struct ServeBinaryTests {
    static let apiKey = "sk-test-BINARY-SERVE-never-printed"

    func serveArgs(store: String, fake: String, tokens: String, secretFile: String, extra: [String] = []) -> [String] {
        ["--store", store, "serve", "--roster", Paths.roster, "--listen", "127.0.0.1:0", "--base-url", fake,
         "--tokens", tokens, "--webhook-secret-file", secretFile, "--requests-per-minute", "100000"] + extra
    }

    @Test func sigkillWithAFullInboxLosesNothing() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.synthetic(40, prefix: "kill"), apiKey: Self.apiKey)
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        defer { Task { await fake.stop() } }
        let store = dir.sub("store")
        // A budget of 10 calls: 10 ids are looked up, 30 wait in the inbox.
        let args = serveArgs(store: store, fake: fakeBase, tokens: tokens.path, secretFile: secretFile, extra: ["--daily-budget", "10"])
        let first = try Spawned(args, env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await first.listening()
        let appts = Fixtures.synthetic(40, prefix: "kill").appointments.map { try! FastJSON.parse($0) }
        for a in appts {
            let r = try await http(.POST, base + "/webhooks/intakeq/" + webhookSecret, body: webhookBody("AppointmentCreated", a))
            #expect(r.status == 200)
        }
        let lookedUp = { fake.requests().filter { $0.path.hasPrefix("/appointments/kill-") }.count }
        let waitingOK = await eventually(timeout: 30) {
            let s = try? await http(.GET, base + "/api/v1/status", token: tokens.admin)
            return s?["inbox"]?["depth"]?.doubleValue == 30 && lookedUp() == 10
        }
        #expect(waitingOK, "stderr: \(first.stderr)")
        first.signal(SIGKILL)
        _ = await first.wait()

        // Restart: the 30 waiting ids are still there; nothing was lost or looked up twice.
        let second = try Spawned(args, env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base2 = try await second.listening()
        let status = try await http(.GET, base2 + "/api/v1/status", token: tokens.admin)
        #expect(status["inbox"]?["depth"]?.doubleValue == 30)
        let inbox = try WebhookInbox(path: store + "/state/webhook-inbox.log")
        let waiting = Set(inbox.next(100))
        let fetched = Set(fake.requests().map { String($0.path.dropFirst("/appointments/".count)) })
        #expect(waiting.union(fetched) == Set(appts.compactMap { $0["Id"]?.stringValue }))
        // SIGTERM: a clean exit 0.
        second.signal(SIGTERM)
        #expect(await second.wait() == 0)
        #expect(!first.stderr.contains(Self.apiKey) && !second.stderr.contains(Self.apiKey))
        #expect(!second.stderr.contains(webhookSecret))
    }

    /// With `--daily-at`, SIGTERM and SIGINT still end the server with exit 0: the scheduler
    /// stopped the coordinator itself, which ended the worker before the service group asked it
    /// to stop, and the group exited 1 with "A service has finished unexpectedly" (hostile test).
    @Test func aServerWithADailyRunStopsCleanly() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.synthetic(2, prefix: "daily"), apiKey: Self.apiKey)
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        defer { Task { await fake.stop() } }
        // Twelve hours from now, so that the daily run does not start during the test.
        let hour = (Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: Date()).hour! + 12) % 24
        let at = (hour < 10 ? "0" : "") + "\(hour):00"
        for signal in [SIGTERM, SIGINT] {
            let args = serveArgs(store: dir.sub("store"), fake: fakeBase, tokens: tokens.path, secretFile: secretFile,
                                 extra: ["--daily-at", at, "--timezone", "UTC"])
            let server = try Spawned(args, env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
            _ = try await server.listening()
            // The scheduler has started (it logs its next run) before the signal.
            #expect(await eventually(timeout: 10) { server.stderr.contains("next automated_daily run") }, "\(server.stderr)")
            server.signal(signal)
            #expect(await server.wait() == 0, "signal \(signal): \(server.stderr)")
            #expect(!server.stderr.contains("finished unexpectedly"), "\(server.stderr)")
        }
    }

    /// `serve --keys DIR` (the key store kept apart): the server's runs seal under that key
    /// store and its reads open with it. `serve` took `--keys` and never passed it on: its
    /// first run made a new key store in STORE/keys and sealed new events under it (cold review).
    @Test func aServerUsesTheKeyStoreItIsGiven() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        defer { Task { await fake.stop() } }
        let store = dir.sub("store"), keys = dir.sub("keys-apart")
        let first = try Spawned(["--store", store, "--keys", keys, "sync", "--roster", Paths.roster, "--base-url", fakeBase,
                                 "--requests-per-minute", "100000"], env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        #expect(await first.wait(timeout: 120) == 0, "\(first.stderr)")
        #expect(FileManager.default.fileExists(atPath: keys + "/master.check"))
        let server = try Spawned(serveArgs(store: store, fake: fakeBase, tokens: tokens.path, secretFile: secretFile, extra: ["--keys", keys]),
                                 env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await server.listening()
        await fake.setState(Fixtures.day(2).state, postWebhooks: false)
        let queued = try await http(.POST, base + "/api/v1/sync", token: tokens.admin, body: Array(#"{"scope":"all"}"#.utf8))
        #expect(queued.status == 202)
        let id = queued["run_id"]?.stringValue ?? ""
        #expect(await eventually(timeout: 60) {
            (try? await http(.GET, base + "/api/v1/runs/" + id, token: tokens.admin))?["status"]?.stringValue == "completed"
        }, "\(server.stderr)")
        // The server's reads open the sealed names with the key store it was given.
        let rows = try await http(.GET, base + "/api/v1/appointments", token: tokens.admin).array
        #expect(!rows.isEmpty && rows.contains { ($0["client_name"]?.stringValue ?? "").isEmpty == false }, "\(rows.prefix(2))")
        server.signal(SIGTERM)
        #expect(await server.wait() == 0)
        // No second key store in the store; everything the server recorded opens with the one given.
        #expect(!FileManager.default.fileExists(atPath: store + "/keys"))
        let verify = try Spawned(["--store", store, "--keys", keys, "export", "--format", "jsonl"], dir: dir.path)
        #expect(await verify.wait(timeout: 60) == 0, "\(verify.stderr)")
    }

    @Test func aCronSyncAndTheServerShareOneStore() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        defer { Task { await fake.stop() } }
        let store = dir.sub("store")
        let server = try Spawned(serveArgs(store: store, fake: fakeBase, tokens: tokens.path, secretFile: secretFile),
                                 env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await server.listening()
        fake.setWebhookURL(base + "/webhooks/intakeq/" + webhookSecret)
        // The server runs a sync while cron's `syncledger sync --wait-lock` runs on the same store.
        fake.inject(.delay(seconds: 1), path: "/appointments/settings", times: 2)
        let queued = try await http(.POST, base + "/api/v1/sync", token: tokens.admin, body: Array(#"{"scope":"all"}"#.utf8))
        #expect(queued.status == 202)
        let cron = try Spawned(["--store", store, "sync", "--roster", Paths.roster, "--base-url", fakeBase,
                                "--requests-per-minute", "100000", "--wait-lock", "120", "--triggered-by", "cron"],
                               env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        #expect(await cron.wait(timeout: 120) == 0, "cron sync: \(cron.stderr)")
        let id = queued["run_id"]?.stringValue ?? ""
        #expect(await eventually(timeout: 60) {
            (try? await http(.GET, base + "/api/v1/runs/" + id, token: tokens.admin))?["status"]?.stringValue == "completed"
        })
        // Webhooks keep flowing after cron's run; the server still takes the lock when it needs it.
        await fake.setState(Fixtures.day(2).state, postWebhooks: true)
        #expect(await eventually(timeout: 30) {
            let logs = try? await http(.GET, base + "/api/v1/sync-logs?type=webhook", token: tokens.admin)
            return !(logs?.array.isEmpty ?? true)
        })
        let logs = try await http(.GET, base + "/api/v1/sync-logs", token: tokens.admin).array
        #expect(logs.contains { $0["triggered_by"]?.stringValue == "cron" && $0["status"]?.stringValue == "completed" })
        #expect(logs.allSatisfy { $0["status"]?.stringValue != "in_progress" && $0["status"]?.stringValue != "failed" })
        server.signal(SIGTERM)
        #expect(await server.wait() == 0)
        // The store verifies after both writers.
        let verify = try Spawned(["--store", store, "verify"], dir: dir.path)
        #expect(await verify.wait() == 0, "verify: \(verify.stderr)")
    }

    /// `forget` while the server runs: once it has returned, no answer shows the patient (the
    /// server read the old views file, which still held them, for about two more seconds).
    @Test func aPatientForgottenWhileServedIsNotServedAfterwards() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        defer { Task { await fake.stop() } }
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        let server = try Spawned(serveArgs(store: dir.sub("store"), fake: fakeBase, tokens: tokens.path, secretFile: secretFile),
                                 env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await server.listening()
        let queued = try await http(.POST, base + "/api/v1/sync", token: tokens.admin, body: Array(#"{"scope":"all"}"#.utf8))
        let id = queued["run_id"]?.stringValue ?? ""
        #expect(await eventually(timeout: 60) {
            (try? await http(.GET, base + "/api/v1/runs/" + id, token: tokens.admin))?["status"]?.stringValue == "completed"
        })
        let patient = Fixtures.roster.organizations[0].patients[0]
        let name = try #require(patient.name)
        let before = try await http(.GET, base + "/api/v1/appointments?patient=" + patient.id, token: tokens.admin)
        #expect(before.text.contains(name), "\(before.text.prefix(300))")
        let forget = try Spawned(["--store", dir.sub("store"), "forget", "--patient", patient.id, "--reason", "consent withdrawn"], dir: dir.path)
        #expect(await forget.wait(timeout: 120) == 0, "forget: \(forget.stderr)")
        for path in ["/api/v1/appointments?patient=" + patient.id, "/api/v1/appointments", "/api/v1/upcoming?days=366", "/api/v1/meeting-urls"] {
            let after = try await http(.GET, base + path, token: tokens.admin)
            #expect(after.status == 200 || after.status == 503, "\(path): \(after.status) \(after.text.prefix(300))")
            #expect(!after.text.contains(name), "\(path) still shows the forgotten patient: \(after.text.prefix(300))")
        }
        // A run for the forgotten patient is refused up front (it was queued, 202, and failed).
        let again = try await http(.POST, base + "/api/v1/sync", token: tokens.admin,
                                   body: Array(#"{"scope":{"patient":"\#(patient.id)"}}"#.utf8))
        #expect(again.status == 400, "\(again.status) \(again.text)")
        #expect(again.text.contains("was forgotten"), "\(again.text)")
        server.signal(SIGTERM)
        #expect(await server.wait() == 0)
    }

    /// Runs accepted (202) and queued behind a running one outlive the server: SIGKILLed, then
    /// started again, it runs them under the ids it gave (they were lost, and their ids answered
    /// 404: hostile test). The run that had started is not started again and answers "failed",
    /// and the queue's file keeps only that failure once the queue is empty.
    @Test func queuedRunsOutliveTheServer() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        defer { Task { await fake.stop() } }
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        let store = dir.sub("store")
        let args = serveArgs(store: store, fake: fakeBase, tokens: tokens.path, secretFile: secretFile)
        let first = try Spawned(args, env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await first.listening()
        // The first call of the first run waits, long enough for two more runs to queue behind
        // it and the kill to come; not longer than the second server's first call can wait
        // (seen: a 60 s delay made that call time out).
        fake.inject(.delay(6), path: "*", times: 1)
        func ask(_ base: String, _ scope: String) async throws -> String {
            let r = try await http(.POST, base + "/api/v1/sync", token: tokens.admin, body: Array(#"{"scope":\#(scope)}"#.utf8))
            #expect(r.status == 202, "\(scope): \(r.status) \(r.text)")
            return r["run_id"]?.stringValue ?? ""
        }
        let running = try await ask(base, #""all""#)
        #expect(await eventually(timeout: 30) {
            (try? await http(.GET, base + "/api/v1/runs/" + running, token: tokens.admin))?["status"]?.stringValue == "running"
        })
        let queued = [try await ask(base, #"{"org":"fsh"}"#), try await ask(base, #"{"patient":"p-001"}"#)]
        for id in queued {
            #expect(try await http(.GET, base + "/api/v1/runs/" + id, token: tokens.admin)["status"]?.stringValue == "queued")
        }
        #expect(FileManager.default.fileExists(atPath: store + "/state/queued-runs.json"))
        first.signal(SIGKILL)
        _ = await first.wait()

        let second = try Spawned(args, env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base2 = try await second.listening()
        for id in queued {
            #expect(await eventually(timeout: 120) {
                (try? await http(.GET, base2 + "/api/v1/runs/" + id, token: tokens.admin))?["status"]?.stringValue == "completed"
            }, "run \(id): \(second.stderr)")
        }
        // The run that had started is not run again, and its id says it failed (it was a 404
        // when the kill came before the run recorded its start).
        let interrupted = try await http(.GET, base2 + "/api/v1/runs/" + running, token: tokens.admin)
        #expect(interrupted["status"]?.stringValue == "failed", "\(interrupted.text)")
        #expect(interrupted.text.contains("the server stopped before this run finished") || interrupted["sync_log"] != nil,
                "\(interrupted.text)")
        let logs = try await http(.GET, base2 + "/api/v1/sync-logs?limit=10", token: tokens.admin).array
        let ids = logs.compactMap { $0["id"]?.stringValue ?? $0["run_id"]?.stringValue }
        #expect(Set(ids).isSuperset(of: queued) && Set(ids).count == ids.count && !ids.isEmpty, "each run once: \(logs)")
        #expect(logs.filter { $0["status"]?.stringValue == "completed" }.count == 2, "\(logs)")
        // The queue file keeps only the interrupted run, as failed (for a week: its id answers so).
        #expect(await eventually(timeout: 10) {
            let text = (try? String(contentsOfFile: store + "/state/queued-runs.json", encoding: .utf8)) ?? ""
            return text.contains(running) && text.contains("\"failed\"") && !queued.contains { text.contains($0) }
        })
        second.signal(SIGTERM)
        #expect(await second.wait() == 0)
    }

    /// A webhook secret file other users can read is warned about at start (with the chmod that
    /// fixes it), and an owner-only one is not; the secret itself is never printed.
    @Test func aSecretFileOthersCanReadIsWarnedAbout() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        defer { Task { await fake.stop() } }
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        for mode in [0o644, 0o600] as [mode_t] {
            chmod(secretFile, mode)
            let server = try Spawned(serveArgs(store: dir.sub("store"), fake: fakeBase, tokens: tokens.path, secretFile: secretFile),
                                     env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
            _ = try await server.listening()
            server.signal(SIGTERM)
            #expect(await server.wait() == 0)
            let warned = server.stderr.contains("--webhook-secret-file \(secretFile) can be read by other users (mode 644): `chmod 600")
            #expect(warned == (mode == 0o644), "mode \(String(mode, radix: 8)): \(server.stderr)")
            #expect(!server.stderr.contains(webhookSecret))
        }
    }

    /// SIGTERM while a client holds a webhook request whose body stopped arriving: the server
    /// exits 0 once `--idle-timeout` closes that connection. It waited for the body without end
    /// (hostile test: still running 100 s later, no longer listening).
    @Test func sigtermDoesNotWaitForAStalledBodyForever() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        defer { Task { await fake.stop() } }
        let (server, port) = try await startServe(in: dir, fake: fake, extra: ["--idle-timeout", "2"])
        let stalled = try StalledClient(
            port: port, sending: "POST /webhooks/intakeq/\(webhookSecret) HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        try await Task.sleep(nanoseconds: 300_000_000)
        let signalled = Date()
        server.signal(SIGTERM)
        #expect(await server.wait(timeout: 30) == 0, "\(server.stderr)")
        #expect(Date().timeIntervalSince(signalled) < 15, "took \(Date().timeIntervalSince(signalled)) s")
        #expect(stalled.closedByServer(within: 1))
        #expect(!server.stderr.contains("status=413"), "\(server.stderr)")
    }

    /// A client that pipelines requests and never reads the answers: once its socket is full and
    /// no write completed for `--idle-timeout`, the server closes the connection, and a SIGTERM
    /// meanwhile does not wait for the client. Before, Hummingbird's idle timeout did not run
    /// while an answer was being written: the connection stayed, and SIGTERM waited, for as long
    /// as the client kept its socket open (hostile test: 28 s, the client's choice).
    @Test func aClientThatNeverReadsItsAnswersIsLetGo() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        defer { Task { await fake.stop() } }
        let (server, port) = try await startServe(in: dir, fake: fake, extra: ["--idle-timeout", "2"])
        let pid = server.pid
        let idleSockets = Self.sockets(of: pid)
        // ~72 MB of answers (the OpenAPI document, 2,000 times) for a receive buffer of 4 KiB.
        let client = try NonReadingClient(port: port, pipelining: String(repeating: "GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n", count: 2000))
        #expect(await eventually(timeout: 10) { Self.sockets(of: pid) > idleSockets }, "the connection was never accepted")
        let stuck = Date()
        #expect(await eventually(timeout: 20) { Self.sockets(of: pid) <= idleSockets },
                "still \(Self.sockets(of: pid)) sockets against \(idleSockets) after \(Date().timeIntervalSince(stuck)) s")
        // A second such client, then SIGTERM while it holds its connection.
        let second = try NonReadingClient(port: port, pipelining: String(repeating: "GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n", count: 2000))
        #expect(await eventually(timeout: 10) { Self.sockets(of: pid) > idleSockets })
        let signalled = Date()
        server.signal(SIGTERM)
        #expect(await server.wait(timeout: 60) == 0, "\(server.stderr)")
        #expect(Date().timeIntervalSince(signalled) < 15, "took \(Date().timeIntervalSince(signalled)) s")
        withExtendedLifetime((client, second)) {}
    }

    /// A second `serve` on a store is refused in one line naming the first; once the first has
    /// stopped, a server starts. Two ran side by side, each with its own inbox in memory over
    /// one file: ids one acknowledged were lost when the other rewrote the file (hostile test).
    @Test func aSecondServerOnAStoreIsRefused() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        defer { Task { await fake.stop() } }
        let args = serveArgs(store: dir.sub("store"), fake: fakeBase, tokens: tokens.path, secretFile: secretFile)
        let first = try Spawned(args, env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        _ = try await first.listening()
        let second = try Spawned(args, env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        #expect(await second.wait(timeout: 30) == 1)
        let said = second.stderr.split(separator: "\n").filter { !$0.isEmpty }
        #expect(said.count == 1 && said[0].contains("this store is already served (pid \(first.pid))"), "\(second.stderr)")
        first.signal(SIGTERM)
        #expect(await first.wait(timeout: 60) == 0, "\(first.stderr)")
        let third = try Spawned(args, env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        _ = try await third.listening()
        third.signal(SIGTERM)
        #expect(await third.wait(timeout: 60) == 0, "\(third.stderr)")
    }

    /// The webhook secret never reaches the request log, whatever the path that holds it (a
    /// proxy that doubles a slash, adds a prefix or changes the case: each such 404 was logged
    /// with the secret in full: hostile test).
    @Test func theWebhookSecretNeverReachesTheLog() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        defer { Task { await fake.stop() } }
        let server = try Spawned(serveArgs(store: dir.sub("store"), fake: fakeBase, tokens: tokens.path, secretFile: secretFile),
                                 env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await server.listening()
        let encoded = webhookSecret.utf8.map { String(format: "%%%02X", $0) }.joined()
        for path in ["/webhooks//intakeq/\(webhookSecret)", "/WEBHOOKS/intakeq/\(webhookSecret)", "/syncledger/webhooks/intakeq/\(webhookSecret)",
                     "/x/\(webhookSecret.uppercased())/y", "/webhooks/intakeq/\(webhookSecret)", "/z/\(encoded)",
                     "/x%zz/\(encoded)", "/admin/\(webhookSecret)",
                     // Cut short, or a piece of it (a bad paste, a truncating proxy).
                     "/webhooks/intakeq-x/\(webhookSecret.prefix(30))", "/a/b/\(webhookSecret.dropFirst(6).prefix(20))x"] {
            let r = try await http(.POST, base + path, body: Array(#"{"Appointment":{"Id":"a1","ClientId":1}}"#.utf8))
            #expect([200, 303, 401, 403, 404].contains(r.status), "\(path): \(r.status)")
        }
        // A value in an API path is not logged at info level either, only the route's template
        // (hostile test: a client that put a name in the path put it in the log).
        let named = try await http(.GET, base + "/api/v1/appointments/WrenWojcikName/history", token: tokens.admin)
        #expect(named.status == 404, "\(named.status) \(named.text)")
        server.signal(SIGTERM)
        #expect(await server.wait(timeout: 60) == 0)
        let log = server.stderr + server.stdout
        #expect(log.contains("status=404"), "\(log)")
        #expect(log.contains("(no route, "), "a path with no route is logged by its length: \(log)")
        #expect(log.contains("/api/v1/appointments/{id}/history") && !log.contains("WrenWojcikName"), "\(log)")
        #expect(!log.lowercased().contains(webhookSecret.lowercased()) && !log.contains(encoded), "\(log)")
        #expect(!log.contains(webhookSecret.prefix(30)) && !log.contains(webhookSecret.dropFirst(6).prefix(20)), "\(log)")
    }

    /// A client that reads its answers slowly but steadily keeps its connection, however long
    /// the answers take, and gets every byte of them (the other side of the stalled-reader rule).
    @Test func aSlowButSteadyReaderGetsEveryAnswer() async throws {
        let dir = TempDir()
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        defer { Task { await fake.stop() } }
        let server = try Spawned(serveArgs(store: dir.sub("store"), fake: fakeBase, tokens: tokens.path, secretFile: secretFile,
                                           extra: ["--idle-timeout", "1"]),
                                 env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await server.listening()
        let port = try #require(Int(base.split(separator: ":").last ?? ""))
        let one = try await http(.GET, base + "/openapi.yaml")
        let answers = 20
        let client = try NonReadingClient(port: port, pipelining: String(repeating: "GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n", count: answers))
        // ~100 KB/s: the ~730 KB take ~7 s, seven idle timeouts. (The kernel's send buffer may
        // hold most of it; StalledReaderRuleTests drives the rule itself through full and not.)
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        let started = Date()
        let expected = answers * one.text.utf8.count
        while received < expected + answers * 100, Date().timeIntervalSince(started) < 60 {
            var p = pollfd(fd: client.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 2000) > 0 else { break }
            let n = buffer.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            received += n
            usleep(40_000)
        }
        let took = Date().timeIntervalSince(started)
        // Every answer's body, with its head (each a little over 100 bytes).
        #expect(received >= expected, "received \(received) of \(expected)+ bytes in \(took) s")
        #expect(took > 3, "the answers did not wait in a full socket (\(took) s): the test proves nothing")
        server.signal(SIGTERM)
        #expect(await server.wait(timeout: 60) == 0)
    }

    /// `serve` on a new store in `dir` (IntakeQ is `fake`), started and listening; its port.
    func startServe(in dir: TempDir, fake: FakeIntakeQServer, extra: [String]) async throws -> (Spawned, Int) {
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        let server = try Spawned(serveArgs(store: dir.sub("store"), fake: fakeBase, tokens: tokens.path, secretFile: secretFile, extra: extra),
                                 env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await server.listening()
        return (server, try #require(Int(base.split(separator: ":").last ?? "")))
    }

    /// How many sockets process `pid` holds (its listening socket among them).
    static func sockets(of pid: Int32) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return fds.filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "").hasPrefix("socket:") }.count
    }

    /// A listen address already taken (or not this machine's): one line naming it, exit 1, at
    /// once — not a silent process spinning a core until SIGKILL.
    @Test func anAddressItCannotBindIsOneLine() async throws {
        let dir = TempDir()
        let tokens = try TestTokens.write(in: dir.path)
        let secretFile = dir.sub("secret")
        try webhookSecret.write(toFile: secretFile, atomically: true, encoding: .utf8)
        // Hold a port by listening on it.
        let (holder, port) = try listeningSocket(backlog: 1)
        defer { close(holder) }
        for listen in ["127.0.0.1:\(port)", "192.0.2.1:8080"] {
            let started = Date()
            let server = try Spawned(
                ["--store", dir.sub("store"), "serve", "--roster", Paths.roster, "--listen", listen, "--base-url", "http://127.0.0.1:9",
                 "--tokens", tokens.path, "--webhook-secret-file", secretFile],
                env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
            #expect(await server.wait(timeout: 30) == 1, "\(listen): \(server.stderr)")
            #expect(Date().timeIntervalSince(started) < 20)
            #expect(server.stderr.contains("cannot listen on \(listen)"), "\(server.stderr)")
            #expect(!server.stderr.contains("CancellationError"), "\(server.stderr)")
        }
    }

    @Test func tokenNewPrintsOnceAndStoresTheHash() async throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        let p = try Spawned(["--store", dir.sub("store"), "token", "new", "--name", "fsh-dash", "--role", "reader", "--org", "fsh", "--tokens", path], dir: dir.path)
        #expect(await p.wait() == 0, "\(p.stderr)")
        let token = p.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.hasPrefix("slt_") && token.count == 68)
        let text = String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
        #expect(!text.contains(token))
        let file = try TokenFile.load(path: path)
        #expect(file.tokens.count == 1 && file.tokens[0].sha256 == tokenHash(token) && file.tokens[0].organizations == ["fsh"])
        let mode = (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
        #expect(mode == 0o600)
        let bad = try Spawned(["token", "new", "--name", "x", "--role", "reader", "--tokens", path], dir: dir.path)
        #expect(await bad.wait() != 0)
        #expect(bad.stderr.contains("--org"))
        // Eight at once: every token printed is in the file (it kept five of eight: hostile test).
        let many = try (0..<8).map { i in
            try Spawned(["--store", dir.sub("store"), "token", "new", "--name", "many-\(i)", "--role", "admin", "--tokens", path], dir: dir.path)
        }
        var printed: [String] = []
        for p in many {
            #expect(await p.wait() == 0, "\(p.stderr)")
            printed.append(p.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let kept = Set(try TokenFile.load(path: path).tokens.map(\.sha256))
        #expect(printed.allSatisfy { kept.contains(tokenHash($0)) } && kept.count == 9, "\(kept.count) tokens kept")
        // A link to the file is followed (a secrets mount links its files); a FIFO is named
        // for what it is, not read.
        let link = dir.sub("linked-tokens.json")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: path)
        let throughLink = try Spawned(["token", "new", "--name", "linked", "--role", "admin", "--tokens", link], dir: dir.path)
        #expect(await throughLink.wait() == 0, "\(throughLink.stderr)")
        #expect(try TokenFile.load(path: link).tokens.contains { $0.name == "linked" })
        // Written through the link: the link stays one, and the file it leads to has the token
        // (renamed over the link, the link became a file and the real file kept the old tokens).
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == path)
        #expect(try TokenFile.load(path: path).tokens.contains { $0.name == "linked" })
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }.isEmpty)
        // A link that leads to no file is refused, not replaced by a file.
        let dangling = dir.sub("dangling-tokens.json")
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: dir.sub("missing/tokens.json"))
        let throughDangling = try Spawned(["token", "new", "--name", "d", "--role", "admin", "--tokens", dangling], dir: dir.path)
        #expect(await throughDangling.wait() == 1)
        #expect(throughDangling.stderr.contains("symbolic link that leads to no file"), "\(throughDangling.stderr)")
        var st = stat()
        #expect(lstat(dangling, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK)
        let fifo = dir.sub("fifo-tokens.json")
        #expect(mkfifo(fifo, 0o600) == 0)
        let fromFIFO = try Spawned(["token", "new", "--name", "f", "--role", "admin", "--tokens", fifo], dir: dir.path)
        #expect(await fromFIFO.wait(timeout: 20) == 1)
        #expect(fromFIFO.stderr.contains("is not a regular file"), "\(fromFIFO.stderr)")
        // A directory given as the tokens file is named as one.
        let directory = try Spawned(["token", "new", "--name", "d", "--role", "admin", "--tokens", dir.path], dir: dir.path)
        #expect(await directory.wait() == 1)
        #expect(directory.stderr.contains("is a directory"), "\(directory.stderr)")
    }
}

func eventually(timeout: Double, _ condition: () async -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if await condition() { return true }
        try? await Task.sleep(nanoseconds: 25_000_000)
    }
    return await condition()
}
