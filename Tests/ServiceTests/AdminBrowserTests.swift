import FakeIntakeQ
import Ledger
import Foundation
@testable import Service
import Sync
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The admin pages in a real headless Chromium: the built `syncledger serve` on loopback, fed by
/// the fake IntakeQ after the demo's five daily syncs, driven through Selenium by
/// tools/admin_browser_test.py (run with `.venv-test/bin/python`, made by `./tools/setup.sh`).
/// Missing Chromium, chromedriver or the venv is a failure, never a skip.
@Suite(.serialized) struct AdminBrowserTests {
    static let apiKey = "sk-test-ADMIN-BROWSER-never-shown"
    static let scriptName = "<script>alert(1)</script>"

    static func firstExecutable(_ paths: [String]) -> String? {
        paths.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Where the screenshots go: `$SYNCLEDGER_TEST_OUTPUT/AdminBrowserTests`, else
    /// `.build/test-output/AdminBrowserTests` in the package (kept after the run).
    static var outputFolder: String {
        let base = ProcessInfo.processInfo.environment["SYNCLEDGER_TEST_OUTPUT"].flatMap { $0.isEmpty ? nil : $0 }
            ?? Paths.root + "/.build/test-output"
        return base + "/AdminBrowserTests"
    }

    @Test func adminPagesInHeadlessChromium() async throws {
        let python = Paths.root + "/.venv-test/bin/python"
        let script = Paths.root + "/tools/admin_browser_test.py"
        try #require(FileManager.default.isExecutableFile(atPath: python),
                     "\(python) is missing: run ./tools/setup.sh (it makes the venv with selenium)")
        let chromium = try #require(Self.firstExecutable(["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
                                    "chromium is not installed: run ./tools/setup.sh (Debian's chromium)")
        let driver = try #require(Self.firstExecutable(["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]),
                                  "chromedriver is not installed: run ./tools/setup.sh (Debian's chromium-driver)")
        let selenium = try await ProcessRunner.run(python, ["-c", "import selenium"], timeout: 60)
        try #require(selenium.status == 0, "selenium is not in \(python): run ./tools/setup.sh (\(selenium.stderrText))")
        let binary = try #require(Binary.path, "build the syncledger binary first (swift build --build-tests)")

        let dir = TempDir("admin-browser")
        let store = dir.sub("store")
        let tokens = try TestTokens.write(in: dir.path)
        // The fixture roster with one patient named like a script.
        let rosterText = try String(contentsOfFile: Paths.roster, encoding: .utf8)
        let firstName = Fixtures.roster.organizations[0].patients[0].name ?? ""
        #expect(rosterText.contains("\"\(firstName)\""))
        let roster = dir.sub("roster.json")
        try rosterText.replacingOccurrences(of: "\"\(firstName)\"", with: "\"\(Self.scriptName)\"")
            .write(toFile: roster, atomically: true, encoding: .utf8)

        // The demo's runs: one `syncledger sync` per fixture day, as tools/demo.sh does.
        let days = Fixtures.practice.days
        let fake = FakeIntakeQServer(state: days[0].state, apiKey: Self.apiKey)
        let fakeBase = try await fake.start()
        for day in days {
            fake.setState(day.state)
            let r = try await ProcessRunner.run(binary, [
                "--store", store, "sync", "--roster", roster, "--base-url", fakeBase, "--now", day.now,
                "--requests-per-minute", "100000", "--daily-budget", "100000", "--triggered-by", "demo",
            ], overrides: ["INTAKEQ_API_KEY": Self.apiKey, "SYNCLEDGER_STORE": nil], timeout: 120)
            try #require(r.status == 0, "day \(day.day)'s sync: \(r.stderrText)")
        }

        // The real server on a free loopback port.
        let out = dir.sub("serve.out")
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        let serve = try ProcessRunner.start(binary, [
            "--store", store, "serve", "--roster", roster, "--listen", "127.0.0.1:0", "--base-url", fakeBase,
            "--tokens", tokens.path, "--requests-per-minute", "100000", "--daily-budget", "100000",
        ], overrides: ["INTAKEQ_API_KEY": Self.apiKey, "SYNCLEDGER_STORE": nil], timeout: 900, stdoutPath: out)
        var base: String?
        let deadline = Date().addingTimeInterval(60)
        while base == nil, Date() < deadline, serve.isRunning {
            let text = String(decoding: FileManager.default.contents(atPath: out) ?? Data(), as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.contains("listening on ") }) {
                base = String(line.split(separator: " ").last!)
            } else {
                try await Task.sleep(nanoseconds: 50_000_000)
            }
        }
        guard let base else {
            serve.kill()
            let o = await serve.wait()
            await fake.stop()
            Issue.record("serve did not start: \(o.stderrText)")
            return
        }

        let folder = Self.outputFolder
        removeTree(folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        print("admin browser test: screenshots in \(folder)")
        let other = Fixtures.roster.organizations[1].id
        let browser = try await ProcessRunner.run(python, [
            script, "--base", base, "--admin-token", tokens.admin, "--reader-token", tokens.reader, "--out", folder,
            "--org", Fixtures.roster.organizations[0].id, "--other-org", other, "--zone", Fixtures.roster.timezone ?? "UTC",
            "--script-name", Self.scriptName, "--chromium", chromium, "--chromedriver", driver,
        ], timeout: 600)
        print(browser.stdoutText)
        #expect(browser.status == 0 && !browser.timedOut, "the browser test failed:\n\(browser.stdoutText)\n\(browser.stderrText)")
        let shots = (try? FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".png") }) ?? []
        #expect(shots.count >= 12, "screenshots written: \(shots.sorted())")

        serve.kill(SIGTERM)
        let ended = await serve.wait()
        await fake.stop()
        #expect(ended.status == 0 && !ended.signaled, "serve did not exit cleanly: \(ended.stderrText)")
        // The server's log names neither the tokens nor the patients.
        for secret in [tokens.admin, tokens.reader, Self.scriptName, Self.apiKey] {
            #expect(!ended.stderrText.contains(secret))
        }
    }
}
