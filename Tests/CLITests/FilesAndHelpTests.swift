import FakeIntakeQ
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The permission bits (`stat`) of `root` and of everything under it, by relative path ("." = root).
func modes(under root: String) -> [(path: String, mode: mode_t, isDir: Bool)] {
    var out: [(String, mode_t, Bool)] = []
    func visit(_ rel: String) {
        let full = rel == "." ? root : root + "/" + rel
        var st = stat()
        guard lstat(full, &st) == 0 else { return }
        let isDir = (st.st_mode & S_IFMT) == S_IFDIR
        out.append((rel, st.st_mode & 0o7777, isDir))
        if isDir, let names = try? FileManager.default.contentsOfDirectory(atPath: full) {
            for n in names.sorted() { visit(rel == "." ? n : rel + "/" + n) }
        }
    }
    visit(".")
    return out
}

/// Directories 0700, files 0600 (or, with `allowOwnerExec`, any mode without group/other bits).
func expectOwnerOnly(_ root: String, _ what: String, allowOwnerExec: Bool = false,
                     sourceLocation: SourceLocation = #_sourceLocation) {
    let all = modes(under: root)
    #expect(all.count > 1, "\(what): nothing in \(root)", sourceLocation: sourceLocation)
    for m in all {
        let ok = m.isDir ? m.mode == 0o700 : (allowOwnerExec ? m.mode & 0o077 == 0 : m.mode == 0o600)
        #expect(ok, "\(what): \(m.path) has mode \(String(m.mode, radix: 8)), want \(m.isDir ? "700" : "600")",
                sourceLocation: sourceLocation)
    }
}

extension CLIBinaryTests {
    /// Issue 7, part 6. The binary runs under `umask 000`, so a file it does not restrict itself
    /// would come out 0666 / 0777.
    @Test("the store and every file in it are owner-only after sync, rebuild, export and export --bundle")
    func filesAtRest() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("modes")
        defer { tmp.remove() }
        // An empty directory the user made with the usual 0755: the sync must tighten it.
        let store = tmp.path + "/store"
        #expect(mkdir(store, 0o755) == 0)
        chmod(store, 0o755)
        try await withFakeServer(practice.days[0]) { server, url in
            for n in [1, 2, 3] {
                let day = try #require(practice.day(n))
                server.setState(day.state)
                let r = try await cliUnderOpenUmask(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv)
                expectSuccess(r)
                expectOwnerOnly(store, "after the day \(n) sync")
            }
        }
        // A store created by sync where no directory existed (intermediate directories too).
        let nested = tmp.path + "/a/b/store"
        try await withFakeServer(practice.days[0]) { _, url in
            let r = try await cliUnderOpenUmask(syncArgs(store: nested, baseURL: url, now: practice.days[0].now), env: keyEnv)
            expectSuccess(r)
        }
        expectOwnerOnly(nested, "a store created by sync")

        expectSuccess(try await cliUnderOpenUmask(["rebuild", "--store", store]))
        expectOwnerOnly(store, "after rebuild")
        expectSuccess(try await cliUnderOpenUmask(["appointments", "--store", store, "--json"]))
        expectOwnerOnly(store, "after a read")

        let out = tmp.path + "/events.jsonl"
        expectSuccess(try await cliUnderOpenUmask(["export", "--store", store, "--format", "jsonl", "--out", out]))
        var st = stat()
        #expect(stat(out, &st) == 0 && st.st_mode & 0o777 == 0o600, "export --out wrote mode \(String(st.st_mode & 0o777, radix: 8))")

        let bundle = tmp.path + "/bundle"
        expectSuccess(try await cliUnderOpenUmask(["export", "--store", store, "--bundle", bundle]))
        expectOwnerOnly(store, "after export --bundle")
        // The bundle holds the segments, so it is owner-only too (its verifier script may be executable).
        expectOwnerOnly(bundle, "the audit bundle", allowOwnerExec: true)
    }

    static let helpOptions: [String: [String]] = [
        "sync": ["--roster", "--org", "--patient", "--type", "--base-url", "--now", "--days-back", "--days-ahead",
                 "--requests-per-minute", "--daily-budget", "--wait-lock", "--json", "--store"],
        "status": ["--max-age", "--json", "--store"],
        "appointments": ["--org", "--patient", "--from", "--to", "--hide-removed", "--timezone", "--wide", "--json", "--store"],
        "upcoming": ["--days", "--org", "--patient", "--all", "--now", "--timezone", "--wide", "--json", "--store"],
        "changes": ["--since", "--run", "--org", "--patient", "--timezone", "--json", "--store"],
        "meeting-urls": ["--all", "--json", "--store"],
        "locations": ["--json", "--store"],
        "sync-logs": ["--limit", "--type", "--json", "--store"],
        "history": ["<appointment-id>", "--json", "--store"],
        "as-of": ["--seq", "--appointment", "--json", "--store"],
        "verify": ["--expect-head", "--json", "--store"],
        "rebuild": ["--projection", "--store"],
        "export": ["--format", "--from-seq", "--to-seq", "--out", "--force", "--bundle", "--store"],
        "log": ["--from-seq", "--limit", "--store"],
        "demo": ["--store", "--fixtures"],
    ]

    @Test("--help of the root and of every subcommand exits 0 and lists its options")
    func help() async throws {
        let root = try await cli(["--help"])
        expectSuccess(root)
        for name in Self.helpOptions.keys {
            #expect(root.stdout.contains(name), "syncledger --help does not list \(name)")
        }
        for (name, options) in Self.helpOptions.sorted(by: { $0.key < $1.key }) {
            for form in [[name, "--help"], ["help", name]] {
                let r = try await cli(form)
                expectSuccess(r)
                let text = r.stdout + r.stderr
                for o in options {
                    #expect(text.contains(o), "`syncledger \(form.joined(separator: " "))` does not mention \(o)")
                }
            }
        }
    }

    @Test("syncledger --store DIR <command> works the same as syncledger <command> --store DIR")
    func globalStoreOption() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("global")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)
        for command in [["verify"], ["verify", "--json"], ["sync-logs", "--json"], ["log", "--limit", "3"],
                        ["history", Self.rescheduledId, "--json"], ["as-of", "--seq", "10", "--json"]] {
            let after = try await cli(command + ["--store", store], cwd: tmp.path)
            let before = try await cli(["--store", store] + command, cwd: tmp.path)
            let equals = try await cli(["--store=\(store)"] + command, cwd: tmp.path)
            expectSuccess(after)
            for r in [before, equals] {
                expectSuccess(r)
                #expect(r.stdout == after.stdout, "`\(r.label)` printed something else than `\(after.label)`")
                #expect(r.status == after.status)
            }
        }
        // The hoisted option is not silently ignored: with no store there, the command fails.
        let missing = try await cli(["--store", tmp.path + "/nowhere", "verify"], cwd: tmp.path)
        expectCleanFailure(missing, mentioning: [tmp.path + "/nowhere"])
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/ledger-data"))
    }
}
