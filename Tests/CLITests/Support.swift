import FakeIntakeQ
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every test in this target runs the built `syncledger` binary as a user meets it. They share
/// one serialized suite: they spawn many processes, time one of them (the locked second writer
/// must fail in under a second), and the machine has two cores.
@Suite(.serialized) struct CLIBinaryTests {}

// MARK: - Locations (`Repo` is TestSupport's `Paths`)

extension Paths {
    /// The binary, or a test failure saying how to build it.
    static func requireBinary() throws -> String {
        guard let b = product("syncledger") else {
            Issue.record("the syncledger binary is not built: run `swift build --product syncledger` (or `swift build --build-tests`) first")
            throw CLITestError("no syncledger binary")
        }
        return b
    }
}

struct CLITestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A distinctive fake API key: asserted absent from every output of every sync test.
let fakeAPIKey = "sk-test-ZEBRA-7731-do-not-print-4c1d"

// MARK: - Running the binary

struct RunResult: Sendable {
    var args: [String]
    var pid: Int32
    var status: Int32
    /// Terminated by a signal (a crash, or our timeout) instead of exiting.
    var signaled: Bool
    var timedOut: Bool
    var stdout: String
    var stderr: String
    var seconds: Double

    var stderrLines: [String] { stderr.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
    var stdoutLines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
    var label: String { "syncledger " + args.joined(separator: " ") }
}

/// A test decides these itself; never inherit them from the developer's shell.
private func cliEnvironment(_ env: [String: String?]) -> [String: String?] {
    var out: [String: String?] = ["INTAKEQ_API_KEY": .none, "INTAKEQ_API_KEY_FILE": .none, "SYNCLEDGER_STORE": .none,
                                  "SYNCLEDGER_FIXTURES": .none]
    // updateValue: `out[k] = v` with a nil `v` would drop the override, and the runner's own
    // value would be inherited.
    for (k, v) in env { out.updateValue(v, forKey: k) }
    return out
}

extension RunResult {
    init(_ args: [String], _ r: ProcessOutput) {
        self.init(args: args, pid: r.pid, status: r.status, signaled: r.signaled, timedOut: r.timedOut,
                  stdout: r.stdoutText, stderr: r.stderrText, seconds: r.seconds)
    }
}

/// One launched `syncledger` process, for a test that acts while it runs (see `ChildProcess`).
/// A watchdog kills it after `timeout` seconds: a hung command is a failure, not a hung run.
final class Launched: Sendable {
    let args: [String]
    let child: ChildProcess
    var pid: Int32 { child.pid }

    init(_ args: [String], env: [String: String?] = [:], cwd: String? = nil, timeout: Double = 60,
         executable: String? = nil, arguments: [String]? = nil) throws {
        let binary = try Repo.requireBinary()
        self.args = args
        child = try ProcessRunner.start(executable ?? binary, arguments ?? args, overrides: cliEnvironment(env),
                                        cwd: cwd ?? NSTemporaryDirectory(), timeout: timeout)
    }

    var isRunning: Bool { child.isRunning }

    func wait() async -> RunResult { RunResult(args, await child.wait()) }
}

/// Runs `syncledger args…` to completion.
func cli(_ args: [String], env: [String: String?] = [:], cwd: String? = nil, timeout: Double = 60) async throws -> RunResult {
    let r = try await ProcessRunner.run(try Repo.requireBinary(), args, overrides: cliEnvironment(env),
                                        cwd: cwd ?? NSTemporaryDirectory(), timeout: timeout)
    return RunResult(args, r)
}

/// Runs `syncledger args…` under `umask 000` (through /bin/sh), so any file the binary does not
/// explicitly restrict would come out world-readable.
func cliUnderOpenUmask(_ args: [String], env: [String: String?] = [:]) async throws -> RunResult {
    let binary = try Repo.requireBinary()
    let r = try await ProcessRunner.run("/bin/sh", ["-c", "umask 000; exec \"$0\" \"$@\"", binary] + args,
                                        overrides: cliEnvironment(env), cwd: NSTemporaryDirectory(), timeout: 120)
    return RunResult(args, r)
}

// MARK: - Assertions on a failing command

/// Text that only a crash or trace would print.
let traceMarkers = ["Fatal error", "Thread ", "Backtrace", "backtrace", "Stack dump", "*** Signal", "crashed",
                    "Current stack trace", "SIGSEGV", "SIGILL", "SIGTRAP", "SIGABRT", "libswiftCore", "💣"]

/// A clean failure: not a crash, a non-zero exit, no trace text, and one line on stderr starting
/// "syncledger: " (a usage error, exit 64, ends by naming the `--help` to read).
func expectCleanFailure(_ r: RunResult, mentioning needles: [String] = [], allowStdout: Bool = false,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    let what = "\(r.label)\n--- stdout:\n\(r.stdout)--- stderr:\n\(r.stderr)"
    #expect(!r.timedOut, "timed out: \(what)", sourceLocation: sourceLocation)
    #expect(!r.signaled, "killed by a signal (a crash?): \(what)", sourceLocation: sourceLocation)
    #expect(r.status != 0, "exit 0 on bad input: \(what)", sourceLocation: sourceLocation)
    for m in traceMarkers where r.stderr.contains(m) || r.stdout.contains(m) {
        Issue.record("trace-like text \"\(m)\": \(what)", sourceLocation: sourceLocation)
    }
    let lines = r.stderrLines
    if r.status == 64 {
        // A usage error: one line too, naming the help that lists the options.
        #expect(lines.count == 1, "expected ONE line on stderr, got \(lines.count): \(what)", sourceLocation: sourceLocation)
        #expect(lines.first?.hasPrefix("syncledger: ") == true, "the line should start with 'syncledger: ': \(what)", sourceLocation: sourceLocation)
        #expect(lines.first?.hasSuffix("--help` lists the options)") == true, "no help named: \(what)", sourceLocation: sourceLocation)
    } else {
        #expect(lines.count == 1, "expected ONE line on stderr, got \(lines.count): \(what)", sourceLocation: sourceLocation)
        #expect(lines.first?.hasPrefix("syncledger: ") == true, "the line should start with 'syncledger: ': \(what)", sourceLocation: sourceLocation)
    }
    if !allowStdout {
        #expect(r.stdout.isEmpty, "printed on stdout while failing: \(what)", sourceLocation: sourceLocation)
    }
    for n in needles {
        #expect(r.stderr.contains(n), "stderr should mention \"\(n)\": \(what)", sourceLocation: sourceLocation)
    }
    expectNoKey(r, sourceLocation: sourceLocation)
}

func expectNoKey(_ r: RunResult, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(!r.stdout.contains(fakeAPIKey) && !r.stderr.contains(fakeAPIKey),
            "the API key was printed by \(r.label)", sourceLocation: sourceLocation)
}

func expectSuccess(_ r: RunResult, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status == 0 && !r.signaled && !r.timedOut,
            "\(r.label) exited \(r.status)\(r.signaled ? " (signal)" : "")\(r.timedOut ? " (timed out)" : "")\n--- stderr:\n\(r.stderr)",
            sourceLocation: sourceLocation)
    for m in traceMarkers where r.stderr.contains(m) {
        Issue.record("trace-like text \"\(m)\" from \(r.label): \(r.stderr)", sourceLocation: sourceLocation)
    }
    expectNoKey(r, sourceLocation: sourceLocation)
}

// MARK: - Temporary directories and store snapshots

/// Every regular file under `dir`, by relative path, with its bytes (stores here are small).
func snapshot(_ dir: String, excluding: (String) -> Bool = { _ in false }) -> [String: Data] {
    var out: [String: Data] = [:]
    let fm = FileManager.default
    guard let walker = fm.enumerator(atPath: dir) else { return out }
    while let rel = walker.nextObject() as? String {
        let full = dir + "/" + rel
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue, !excluding(rel) else { continue }
        out[rel] = fm.contents(atPath: full) ?? Data("<unreadable>".utf8)
    }
    return out
}

/// `projections.sqlite` (and its -wal/-shm/-journal) is derived and always rebuildable, and every
/// read command first catches the views up to the log's head, so a read may legitimately write
/// it. Everything else (STORE, the log's segments, index and LOCK, state/) must not change; the
/// views are instead compared by what they answer (`appointments --json`).
func storeSnapshot(_ dir: String) -> [String: Data] {
    snapshot(dir) { $0.hasPrefix("projections.sqlite") }
}

func expectSameSnapshot(_ before: [String: Data], _ after: [String: Data], _ what: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    let changed = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }.sorted()
    #expect(changed.isEmpty, "\(what) changed the store: \(changed)", sourceLocation: sourceLocation)
}

// MARK: - The fake IntakeQ and real syncs

enum Practice {
    static func load() throws -> FixturePractice { try FixturePractice.load(directory: Repo.practice) }
}

/// `sync` arguments against the fake: the day's `now`, no client-side throttling.
func syncArgs(store: String, baseURL: String, now: String, extra: [String] = []) -> [String] {
    ["sync", "--store", store, "--roster", Repo.roster, "--base-url", baseURL, "--now", now,
     "--requests-per-minute", "1000"] + extra
}

let keyEnv: [String: String?] = ["INTAKEQ_API_KEY": fakeAPIKey]

/// Starts a fake IntakeQ serving `day` (expecting `fakeAPIKey`), runs `body`, stops the fake.
func withFakeServer<T>(_ day: FixtureDay, apiKey: String = fakeAPIKey,
                       _ body: (FakeIntakeQServer, String) async throws -> T) async throws -> T {
    let server = FakeIntakeQServer(state: day.state, apiKey: apiKey)
    let url = try await server.start()
    do {
        let result = try await body(server, url)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

/// A store holding day 1's sync (177 events), made through the binary.
func makeSyncedStore(at store: String, practice: FixturePractice, days: [Int] = [1]) async throws {
    try await withFakeServer(practice.days[0]) { server, url in
        for n in days {
            let day = try #require(practice.day(n))
            server.setState(day.state)
            let r = try await cli(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv)
            expectSuccess(r)
            guard r.status == 0 else { throw CLITestError("setup sync of day \(n) failed: \(r.stderr)") }
        }
    }
}

/// The head seq printed by `sync` ("…; head 171:abcd…").
func headSeq(inSummary text: String) -> UInt64? {
    guard let range = text.range(of: #"head (\d+):[0-9a-f]{64}"#, options: .regularExpression) else { return nil }
    let m = text[range].dropFirst(5).prefix { $0.isNumber }
    return UInt64(m)
}

func parseJSON(_ text: String) -> Any? {
    try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
}

/// The events of `export --format jsonl`, each line parsed.
func exportedEvents(_ store: String) async throws -> [[String: Any]] {
    let r = try await cli(["export", "--store", store, "--format", "jsonl"])
    expectSuccess(r)
    return r.stdoutLines.compactMap { parseJSON($0) as? [String: Any] }
}

/// Polls `condition` every 20 ms until true or `timeout` seconds pass.
func waitUntil(timeout: Double, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 20_000_000)
    }
    return condition()
}
