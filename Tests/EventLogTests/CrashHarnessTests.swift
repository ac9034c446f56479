import Foundation
import TestSupport
import Testing
@testable import EventLog

/// Runs the built `crash-harness` executable (built with the package: `swift build --build-tests`
/// or `swift build --product crash-harness`).
enum Harness {
    static var root: String { Paths.root }

    static var binary: String? { Paths.product("crash-harness") }

    /// Runs `arguments` (through /bin/sh when `shell` is given, as `sh -c shell harness args…`);
    /// returns exit status, stdout and stderr. Kills it after `timeout` seconds.
    static func run(_ arguments: [String], shell: String? = nil, timeout: Double = 80) throws
        -> (status: Int32, stdout: String, stderr: String) {
        guard let binary else {
            throw HarnessMissing()
        }
        let (executable, argv) = shell.map { ("/bin/sh", ["-c", $0, binary] + arguments) } ?? (binary, arguments)
        let r = try ProcessRunner.runBlocking(executable, argv, timeout: timeout)
        if r.timedOut { Issue.record("crash-harness \(arguments) did not finish within \(timeout) s") }
        return (r.status, r.stdoutText, r.stderrText)
    }
}

struct HarnessMissing: Error, CustomStringConvertible {
    var description: String {
        "crash-harness is not built under \(Harness.root)/.build: run `swift build --product crash-harness` first"
    }
}

@Suite("Crash harness (SIGKILL at random moments)")
struct CrashHarnessTests {
    @Test("20 SIGKILLs while appending with fsync: nothing acknowledged lost, nothing half-visible")
    func twentyKills() throws {
        let seed = UInt64.random(in: 1...UInt64(UInt32.max))
        print("crash harness seed \(seed)")
        let result = try Harness.run(["--kills", "20", "--seed", String(seed)])
        print(result.stdout, result.stderr)
        #expect(result.status == 0, "seed \(seed): \(result.stderr)")
        #expect(result.stdout.contains("20 kills survived"), "\(result.stdout)")
    }

    @Test("5 SIGKILLs of real syncs against fake-intakeq: verify passes, views equal a rebuild, the next sync converges")
    func syncKills() throws {
        // `swift build` (or `swift build --build-tests`) builds every product; the test needs three.
        let dir = URL(fileURLWithPath: try #require(Harness.binary, "\(HarnessMissing())")).deletingLastPathComponent().path
        var tools: [String: String] = [:]
        for name in ["syncledger", "fake-intakeq"] {
            let path = dir + "/" + name
            try #require(FileManager.default.isExecutableFile(atPath: path),
                         "\(path) is not built: run `swift build` (builds every product) first")
            tools[name] = path
        }
        let seed = UInt64.random(in: 1...UInt64(UInt32.max))
        print("crash harness (sync) seed \(seed)")
        let result = try Harness.run([
            "sync", "--syncledger", tools["syncledger"]!, "--fake", tools["fake-intakeq"]!,
            "--fixtures", Harness.root + "/Fixtures", "--roster", Harness.root + "/Fixtures/roster.json",
            "--kills", "5", "--seed", String(seed),
        ], timeout: 90)
        print(result.stdout, result.stderr)
        #expect(result.status == 0, "seed \(seed): \(result.stderr)")
        #expect(result.stdout.contains("checks passed; converged on days 1…5"), "\(result.stdout)")
    }

    @Test("a bad argument is one line on stderr and a non-zero exit")
    func badArgument() throws {
        let result = try Harness.run(["--kills", "zero"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--kills must be a positive integer"))
    }
}
