import ArgumentParser
import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import FakeIntakeQ
import Foundation
import JSONCore
import Logging
import Subprocess
import SystemPackage

/// `syncledger-demo`: the whole story on the bundled fixtures. It starts a fake IntakeQ on a free
/// loopback port and drives the real `syncledger` binary through it, exactly the commands a user
/// would type — so the shipped `syncledger` needs neither the fake server nor Hummingbird.
@main
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "syncledger-demo",
        abstract: "The whole story on bundled fixtures, through a local fake IntakeQ server.",
        discussion: """
            Starts a fake IntakeQ on a free loopback port serving the fixture practice, runs one \
            `syncledger sync` per simulated day into a fresh store (a temporary directory unless \
            --store), then shows the views, one rescheduled appointment's history, a verify, a \
            rebuild whose views equal the live ones, the log through `lz4 -dc` (envelopes, no names) \
            and a `forget` of one patient after which verify still passes.
            """)

    @Option(help: ArgumentHelp("Write the demo store here (a new or empty directory).", valueName: "DIR")) var store: String?
    @Option(help: ArgumentHelp("The fixtures directory (default: the repository's Fixtures/).", valueName: "DIR")) var fixtures: String?
    @Option(help: ArgumentHelp("The syncledger binary (default: the one beside this program).", valueName: "PATH")) var syncledger: String?

    func run() async throws {
        let code: Int32
        do {
            code = try await Demo(storeOption: store, fixturesOption: fixtures, binaryOption: syncledger).run()
        } catch let e as DemoFailure {
            FileHandle.standardError.write(Data("syncledger: \(e.message)\n".utf8))
            code = 1
        }
        if code != 0 { throw ExitCode(code) }
    }
}

struct DemoFailure: Error {
    var message: String
}

struct Demo {
    var storeOption: String?
    var fixturesOption: String?
    var binaryOption: String?

    func section(_ title: String) {
        print("")
        print("== \(title) " + String(repeating: "=", count: max(3, 76 - title.count)))
    }

    func run() async throws -> Int32 {
        let binary = try locateBinary()
        let fixtureDir = try locateFixtures()
        let practice = try FixturePractice.load(directory: fixtureDir + "/practice")
        guard let rosterPath = practice.rosterPath, let first = practice.days.first, let last = practice.days.last else {
            throw DemoFailure(message: "the fixtures in \(fixtureDir) have no roster.json or no day files")
        }
        let roster = try DemoRoster.load(rosterPath)
        let storePath = try storeOption ?? makeTempDir()
        if let s = storeOption, FileManager.default.fileExists(atPath: s),
            !((try? FileManager.default.contentsOfDirectory(atPath: s)) ?? []).isEmpty {
            throw DemoFailure(message: "\(s) is not empty; the demo writes a fresh store (give a new directory, or none for a temporary one)")
        }
        let cli = CLI(binary: binary, store: storePath, apiKey: "demo-key-not-secret")
        var quiet = Logger(label: "fake-intakeq")
        quiet.logLevel = .critical  // its shutdown chatter is not part of the story
        let server = FakeIntakeQServer(state: first.state, apiKey: cli.apiKey, logger: quiet)
        let baseURL = try await server.start()

        print("SyncLedger demo: \(practice.days.count) simulated days of a practice with \(roster.patients.count) roster patients in \(roster.organizations.count) organizations")
        print("fake IntakeQ at \(baseURL); store at \(storePath)")
        section("one sync per day (what `syncledger sync` prints)")
        for day in practice.days {
            server.setState(day.state)
            // The local fake has no per-minute limit, so the demo lifts the client's.
            let r = try await cli.run(["sync", "--roster", rosterPath, "--base-url", baseURL, "--now", day.now,
                                       "--requests-per-minute", "100000", "--daily-budget", "100000",
                                       "--max-retries", "2", "--timeout", "10", "--triggered-by", "demo"])
            guard r.status == 0 else {
                await server.stop()
                throw DemoFailure(message: "day \(day.day)'s sync failed (exit \(r.status)): \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            print("day \(day.day) (\(day.now.prefix(10))): \(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        await server.stop()

        let org = roster.organizations[0]
        let today = String(last.now.prefix(10))
        let inTwoWeeks = ISO.day(plusDays: 14, from: last.now) ?? today
        // Everyday views, in the practice's local time (the roster's "timezone").
        section("upcoming for \(org.name) (`syncledger upcoming --org \(org.id) --now \(last.now)`)")
        try await cli.show(["upcoming", "--org", org.id, "--now", last.now])
        let logs = try await cli.run(["sync-logs", "--json", "--limit", "2"])
        if case .array(let runs)? = try? JSONValue.parse(Array(logs.stdout.utf8)), runs.count == 2,
            let since = runs[1]["started_at"]?.stringValue {
            section("changes since the previous day's sync (`syncledger changes --since \(since)`)")
            try await cli.show(["changes", "--since", since])
        }
        section("meeting links of the next 14 days (`syncledger meeting-urls`)")
        try await cli.show(["meeting-urls", "--from", last.now, "--to", inTwoWeeks])
        section("sync runs (`syncledger sync-logs`)")
        try await cli.show(["sync-logs"])
        let rescheduled = try await rescheduledAppointment(cli)
        if let id = rescheduled {
            section("history of a rescheduled appointment (`syncledger history \(id)`)")
            try await cli.show(["history", id])
        }
        section("verify (`syncledger verify`)")
        let verify = try await cli.run(["verify"])
        print(verify.stdout.trimmingCharacters(in: .newlines))
        section("rebuild every view from the log (`syncledger rebuild`)")
        let views = ["appointments", "meeting-urls", "locations", "sync-logs"]
        let before = try await snapshot(cli, views)
        let started = Date()
        let rebuild = try await cli.run(["rebuild"])
        let after = try await snapshot(cli, views)
        let same = rebuild.status == 0 && before == after
        let rows = before.reduce(0) { n, v in if case .array(let a) = v { return n + a.count }; return n }
        print(String(format: "rebuilt every view in %.2f s; the rebuilt views %@ the live ones (%d rows compared)",
                     Date().timeIntervalSince(started), same ? "equal" : "DIFFER FROM", rows))
        let privacyOK = try await privacy(cli, roster: roster, storePath: storePath)
        let served = try await serveAct(cli, rosterPath: rosterPath, state: last.state, storePath: storePath)
        print("")
        print("The store is still at \(storePath). Try:")
        print("  \(binary) --store \(storePath) appointments --patient \(roster.patients[0])")
        print("  \(binary) --store \(storePath) history \(rescheduled ?? "APPOINTMENT_ID")")
        print("  cat \(storePath)/log/*.seg | lz4 -dc | head -3")
        return verify.status == 0 && same && privacyOK && served ? 0 : 1
    }

    /// The log through stock tools shows envelopes but no names; then one patient is forgotten
    /// and the chain still verifies against the head taken before.
    func privacy(_ cli: CLI, roster: DemoRoster, storePath: String) async throws -> Bool {
        section("the log without SyncLedger (`cat STORE/log/*.seg | lz4 -dc`)")
        let dump = try await shell("cat \"$0\"/log/*.seg | lz4 -dc", storePath)
        if dump.status != 0 {
            print("(lz4 is not installed: `apt-get install lz4` to read the log with stock tools)")
        } else {
            let lines = dump.stdout.split(separator: "\n")
            if let line = lines.first(where: { $0.contains("\"appointment.discovered\"") && $0.contains("\"sealed\"") }) {
                print(line.prefix(420) + (line.count > 420 ? "…" : ""))
            }
            let found = roster.names.filter { dump.stdout.contains($0) }
            print("\(lines.count) events; roster patient names in the log: \(found.count) of \(roster.names.count) (personal data is encrypted per patient; keys in \(storePath)/keys)")
            if !found.isEmpty { return false }
        }
        let patient = roster.patients.contains("p-021") ? "p-021" : roster.patients[0]
        section("forget one patient (`syncledger forget --patient \(patient) --reason …`)")
        let before = try await cli.run(["verify", "--json"])
        let head = (try? JSONValue.parse(Array(before.stdout.utf8)))?["head"]?.stringValue ?? ""
        let forget = try await cli.run(["forget", "--patient", patient, "--reason", "consent withdrawn (demo)"])
        print(forget.stdout.trimmingCharacters(in: .newlines))
        if forget.status != 0 { print(forget.stderr.trimmingCharacters(in: .newlines)) }
        section("verify against the head taken before the forget (`syncledger verify --expect-head …`)")
        let verify = try await cli.run(["verify", "--expect-head", head])
        print(verify.stdout.trimmingCharacters(in: .newlines))
        return forget.status == 0 && verify.status == 0
    }

    func shell(_ script: String, _ arg: String) async throws -> CLI.Result {
        let r = try await Subprocess.run(
            .path(FilePath("/bin/sh")), arguments: Arguments(["-c", script, arg]),
            output: .string(limit: 256 << 20), error: .string(limit: 1 << 20))
        let status: Int32
        switch r.terminationStatus {
        case .exited(let c): status = Int32(c)
        case .signaled(let sig): status = 128 + Int32(sig)
        }
        return CLI.Result(status: status, stdout: r.standardOutput, stderr: r.standardError)

    }

    /// The last act: `syncledger serve` on the store; the fake IntakeQ posts a webhook for a
    /// rescheduled appointment and the change arrives through the read API.
    func serveAct(_ cli: CLI, rosterPath: String, state: PracticeState, storePath: String) async throws -> Bool {
        section("the server: a webhook for a rescheduled appointment, read back through the API")
        var quiet = Logger(label: "fake-intakeq")
        quiet.logLevel = .critical
        let fake = FakeIntakeQServer(state: state, apiKey: cli.apiKey, logger: quiet)
        let fakeBase = try await fake.start()
        defer { Task { await fake.stop() } }
        let tokensPath = storePath + "/state/api-tokens.json"
        let made = try await cli.run(["token", "new", "--name", "demo-admin", "--role", "admin", "--tokens", tokensPath])
        guard made.status == 0 else { throw DemoFailure(message: "`syncledger token new` failed: \(made.stderr)") }
        let token = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let secretPath = storePath + "/state/webhook-secret"
        let secret = (0..<40).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! }
        // Owner-only, like every other file of the store: the secret admits webhooks.
        guard FileManager.default.createFile(atPath: secretPath, contents: Data(String(secret).utf8), attributes: [.posixPermissions: 0o600]) else {
            throw DemoFailure(message: "cannot write \(secretPath)")
        }
        let serve = try ServeProcess(binary: cli.binary, apiKey: cli.apiKey, args: [
            "--store", storePath, "serve", "--roster", rosterPath, "--listen", "127.0.0.1:0", "--base-url", fakeBase,
            "--tokens", tokensPath, "--webhook-secret-file", secretPath, "--requests-per-minute", "100000",
            "--daily-budget", "100000", "--log-level", "warning"])
        defer { serve.stop() }
        let base = try await serve.listening()
        print("$ syncledger serve --roster roster.json --listen 127.0.0.1:0 --tokens … --webhook-secret-file …   (\(base))")
        fake.setWebhookURL(base + "/webhooks/intakeq/" + String(secret))

        // Reschedule one upcoming appointment by an hour in the fake IntakeQ.
        // (one the store already tracks: a roster patient's)
        var rows = state.appointments
        var chosen: (Int, [String: JSONValue], String, Double, JSONValue)?
        for (i, raw) in rows.enumerated() {
            guard case .object(let o)? = try? JSONValue.parse(raw), let id = o["Id"]?.stringValue,
                  let start = o["StartDate"]?.doubleValue,
                  let row = try await api(base + "/api/v1/appointments/" + id, token: token) else { continue }
            chosen = (i, o, id, start, row)
            break
        }
        guard case (let i, var o, let id, let start, let before)? = chosen else {
            throw DemoFailure(message: "the fixtures have no appointment of a roster patient to reschedule")
        }
        o["StartDate"] = .number(start + 3_600_000)
        if let end = o["EndDate"]?.doubleValue { o["EndDate"] = .number(end + 3_600_000) }
        o["LastModified"] = .number((Date().timeIntervalSince1970 * 1000).rounded())
        rows[i] = Array(JSONValue.object(o).canonicalText.utf8)
        var next = state
        next.appointments = rows
        let started = Date()
        let sent = await fake.setState(next, postWebhooks: true)
        print("fake IntakeQ posted: " + sent.map { "\($0.eventType) \($0.appointmentId) → HTTP \($0.status)" }.joined(separator: ", "))
        let old = before["start_at"]?.stringValue ?? "?"
        var now: String?
        while Date().timeIntervalSince(started) < 10 {
            now = try await api(base + "/api/v1/appointments/" + id, token: token)?["start_at"]?.stringValue
            if let now, now != old { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        let ms = Int(Date().timeIntervalSince(started) * 1000)
        guard let now, now != old else {
            print("the change did not arrive through the API within 10 s")
            return false
        }
        print("$ curl -H 'Authorization: Bearer …' \(base)/api/v1/appointments/\(id)")
        print("start_at \(old) → \(now), \(ms) ms after the webhook was posted")
        if let runs = try await api(base + "/api/v1/sync-logs?type=webhook&limit=1", token: token), case .array(let a) = runs, let r = a.first {
            print("recorded by run \(r["id"]?.stringValue ?? "?") (sync_type webhook, status \(r["status"]?.stringValue ?? "?"))")
        }
        serve.stop()
        return ms < 10_000
    }

    func api(_ url: String, token: String) async throws -> JSONValue? {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: "Bearer " + token)
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 16 << 20)
        guard response.status.code == 200 else { return nil }
        return try? JSONValue.parse(Array(body.readableBytesView))
    }

    /// Every view as the CLI prints it with `--json`, parsed (so formatting cannot hide a difference).
    func snapshot(_ cli: CLI, _ views: [String]) async throws -> [JSONValue] {
        var out: [JSONValue] = []
        for v in views {
            let r = try await cli.run([v, "--json"])
            guard r.status == 0 else { throw DemoFailure(message: "`syncledger \(v) --json` failed: \(r.stderr)") }
            out.append(try JSONValue.parse(Array(r.stdout.utf8)))
        }
        return out
    }

    /// An appointment whose start time changed, to show its history: the first
    /// `appointment.changed` event whose changed fields include StartDate.
    func rescheduledAppointment(_ cli: CLI) async throws -> String? {
        let r = try await cli.run(["export", "--format", "jsonl"])
        for line in r.stdout.split(separator: "\n") where line.contains("\"appointment.changed\"") {
            guard let e = try? JSONValue.parse(Array(line.utf8)), let data = e["data"],
                case .array(let fields)? = data["changed_fields"], fields.contains(.string("StartDate")),
                let id = data["appointment_id"]?.stringValue
            else { continue }
            return id
        }
        return nil
    }

    func makeTempDir() throws -> String {
        var dir = NSTemporaryDirectory()
        while dir.count > 1, dir.hasSuffix("/") { dir.removeLast() }
        var template = Array((dir + "/syncledger-demo-XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else { throw DemoFailure(message: "cannot create a temporary directory") }
        return String(cString: p)
    }

    /// `--syncledger`, else the `syncledger` beside this executable.
    func locateBinary() throws -> String {
        if let b = binaryOption {
            guard FileManager.default.isExecutableFile(atPath: b) else { throw DemoFailure(message: "\(b) is not an executable") }
            return b
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let beside = (exe as NSString).deletingLastPathComponent + "/syncledger"
        guard FileManager.default.isExecutableFile(atPath: beside) else {
            throw DemoFailure(message: "no syncledger binary beside \(exe): build it (`swift build --product syncledger`) or pass --syncledger PATH")
        }
        return beside
    }

    /// `--fixtures`, else $SYNCLEDGER_FIXTURES, else a `Fixtures/` found walking up from the
    /// executable (a build inside the repository) or from the current directory.
    func locateFixtures() throws -> String {
        let fm = FileManager.default
        func ok(_ d: String) -> Bool { fm.fileExists(atPath: d + "/practice/day-01.json") }
        if let f = fixturesOption {
            guard ok(f) else { throw DemoFailure(message: "\(f) does not hold the fixtures (practice/day-01.json)") }
            return f
        }
        if let env = ProcessInfo.processInfo.environment["SYNCLEDGER_FIXTURES"], ok(env) { return env }
        var starts: [String] = [fm.currentDirectoryPath]
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") { starts.insert((exe as NSString).deletingLastPathComponent, at: 0) }
        for start in starts {
            var dir = start
            for _ in 0..<8 {
                if ok(dir + "/Fixtures") { return dir + "/Fixtures" }
                let parent = (dir as NSString).deletingLastPathComponent
                if parent == dir { break }
                dir = parent
            }
        }
        throw DemoFailure(message: "cannot find the fixtures: run from the repository, or pass --fixtures DIR (the repository's Fixtures/)")
    }
}

/// The `syncledger` binary, on one store.
struct CLI {
    var binary: String
    var store: String
    var apiKey: String

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    func run(_ args: [String]) async throws -> Result {
        let r = try await Subprocess.run(
            .path(FilePath(binary)), arguments: Arguments(["--store", store] + args),
            environment: .inherit.updating(["INTAKEQ_API_KEY": apiKey, "COLUMNS": "100"]),
            output: .string(limit: 64 << 20), error: .string(limit: 1 << 20))
        let status: Int32
        switch r.terminationStatus {
        case .exited(let c): status = Int32(c)
        case .signaled(let s): status = 128 + Int32(s)
        }
        return Result(status: status, stdout: r.standardOutput, stderr: r.standardError)
    }

    /// Runs a read command and prints what it printed.
    func show(_ args: [String]) async throws {
        let r = try await run(args)
        print(r.stdout.trimmingCharacters(in: .newlines))
        if r.status != 0 { throw DemoFailure(message: "`syncledger \(args.joined(separator: " "))` failed: \(r.stderr)") }
    }
}

/// The little of the roster file the demo prints.
struct DemoRoster {
    var organizations: [(id: String, name: String)]
    var patients: [String]
    var names: [String] = []

    static func load(_ path: String) throws -> DemoRoster {
        guard let bytes = FileManager.default.contents(atPath: path), let v = try? JSONValue.parse(Array(bytes)),
            case .array(let orgs)? = v["organizations"]
        else { throw DemoFailure(message: "cannot read the roster \(path)") }
        var out = DemoRoster(organizations: [], patients: [])
        for o in orgs {
            guard let id = o["id"]?.stringValue else { continue }
            out.organizations.append((id, o["name"]?.stringValue ?? id))
            if case .array(let ps)? = o["patients"] {
                out.patients += ps.compactMap { $0["id"]?.stringValue }
                out.names += ps.compactMap { $0["name"]?.stringValue }.filter { !$0.isEmpty }
            }
        }
        guard !out.organizations.isEmpty, !out.patients.isEmpty else { throw DemoFailure(message: "the roster \(path) has no patients") }
        return out
    }
}

enum ISO {
    /// The day (yyyy-MM-dd) `days` after the instant `iso`.
    static func day(plusDays days: Int, from iso: String) -> String? {
        let f = ISO8601DateFormatter()
        guard let d = f.date(from: iso) ?? ISO8601DateFormatter().date(from: String(iso.prefix(19)) + "Z") else { return nil }
        f.formatOptions = [.withFullDate]
        return f.string(from: d.addingTimeInterval(Double(days) * 86_400))
    }
}

/// `syncledger serve` running in the background for the demo's last act.
final class ServeProcess: @unchecked Sendable {
    let process = Process()
    let out: String

    init(binary: String, apiKey: String, args: [String]) throws {
        out = NSTemporaryDirectory() + "/syncledger-demo-serve-\(UUID().uuidString.prefix(8)).out"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["INTAKEQ_API_KEY"] = apiKey
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        try process.run()
    }

    func listening() async throws -> String {
        for _ in 0..<3000 {
            let text = String(decoding: FileManager.default.contents(atPath: out) ?? Data(), as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.contains("listening on ") }) {
                return String(line.split(separator: " ").last!)
            }
            guard process.isRunning else { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        throw DemoFailure(message: "`syncledger serve` did not start")
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: out)
    }
}
