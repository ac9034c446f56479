import FakeIntakeQ
import Foundation
import TestSupport
import Testing

/// Edge cases a hostile tester found in everyday commands: each is one clear answer, never a
/// silent one.
extension CLIBinaryTests {
    /// The head's seq, from `verify --json` ("SEQ:HASH").
    static func verifiedHeadSeq(of store: String) async throws -> UInt64 {
        let v = try await cli(["verify", "--store", store, "--json"])
        expectSuccess(v)
        let head = try #require((parseJSON(v.stdout) as? [String: Any])?["head"] as? String)
        return try #require(UInt64(head.prefix { $0 != ":" }))
    }

    /// `log --from-seq` one past the head asks "anything new?": nothing, exit 0. Further on is a
    /// mistake: one line naming the head.
    /// A full disk is said as such, with what to do, in one line: a store whose views must be
    /// folded again on a tmpfs with room for the log but not for the views (a private mount
    /// namespace; root, as in CI), then an export bundle there. They printed SQLite's "database
    /// or disk is full - while executing COMMIT TRANSACTION" and Foundation's
    /// "Error Domain=NSCocoaErrorDomain Code=640" (hostile test). Since stop 58 the reads answer
    /// on a full disk (the views read into memory and caught up there, one warning line:
    /// DiskFullTests); the bundle, which must be written, fails in one line.
    @Test func aFullDiskIsSaidAsSuch() async throws {
        let tmp = TempDir("disk-full")
        defer { tmp.remove() }
        let store = tmp.sub("store")
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let mount = tmp.sub("small")
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: false)
        let script = """
            need=$(du -sk --exclude='projections.sqlite*' "$3" | cut -f1)
            mount -t tmpfs -o size=$((need + 160))k tmpfs "$1" || exit 97
            mkdir "$1/store" && (cd "$3" && tar cf - --exclude='projections.sqlite*' .) | (cd "$1/store" && tar xpf -) || exit 98
            "$2" status --store "$1/store" --max-age 100000; echo "status-rc=$?"
            head -c $(( $(df -k --output=avail "$1" | tail -1) * 1024 - 4096 )) /dev/zero > "$1/filler" 2>/dev/null
            "$2" export --store "$1/store" --bundle "$1/bundle"; echo "export-rc=$?"
            rm -f "$1/store/projections.sqlite"*
            head -c $(( $(df -k --output=avail "$1" | tail -1) * 1024 )) /dev/zero > "$1/filler2" 2>/dev/null
            "$2" appointments --store "$1/store"; echo "appointments-rc=$?"
            all=$(du -sk "$3" | cut -f1)
            mount -t tmpfs -o size=$((all + 512))k tmpfs "$4" || exit 97
            mkdir "$4/store" && (cd "$3" && tar cf - --exclude='projections.sqlite-*' .) | (cd "$4/store" && tar xpf -) || exit 98
            head -c $(( $(df -k --output=avail "$4" | tail -1) * 1024 )) /dev/zero > "$4/filler" 2>/dev/null
            "$2" appointments --store "$4/store"; echo "shm-rc=$?"
            """
        let whole = tmp.sub("whole")
        try FileManager.default.createDirectory(atPath: whole, withIntermediateDirectories: false)
        let r = try await ProcessRunner.run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", script, "sh", mount, try Repo.requireBinary(), store, whole],
                                            timeout: 120)
        let said = String(decoding: r.stdout + r.stderr, as: UTF8.self)
        #expect(r.status != 97, "cannot mount a tmpfs (this test needs root, as in CI): \(said)")
        let warning = "warning: the disk holding the views database (projections.sqlite) or SQLite's temporary files is full: "
            + "the views were read into memory and brought up to the log for this command (nothing saved); free space there"
        #expect(said.contains("status-rc=1") && said.contains("is full: the views were read into memory to answer"), "\(said)")
        #expect(said.contains("export-rc=1") && said.contains("syncledger: the disk is full"), "\(said)")
        // With no room to make the views file at all (it failed "cannot open the views database
        // …: SQLite error 13: database or disk is full": hostile test).
        #expect(said.contains("appointments-rc=0"), "\(said)")
        // With the views file there but no room for the shared memory WAL needs (it said "SQLite
        // error 10: disk I/O error - while executing `SELECT * FROM sqlite_master`", hostile test).
        #expect(said.contains("shm-rc=0"), "\(said)")
        #expect(said.components(separatedBy: warning).count - 1 == 3, "\(said)")
        #expect(!said.contains("note: "), "one line each: \(said)")
        #expect(!said.contains("NSCocoaErrorDomain") && !said.contains("SQLite error"), "\(said)")
    }

    @Test func logFromSeqPastTheHead() async throws {
        let tmp = TempDir("logpast")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let head = try await Self.verifiedHeadSeq(of: store)
        #expect(head > 1)

        let last = try await cli(["log", "--store", store, "--from-seq", String(head)])
        expectSuccess(last)
        #expect(last.stdoutLines.count == 1, "the head's own event: \(last.stdout)")
        #expect(last.stdoutLines.first?.contains("\"seq\":\(head)") == true, "\(last.stdout)")

        let next = try await cli(["log", "--store", store, "--from-seq", String(head + 1)])
        expectSuccess(next)
        #expect(next.stdout.isEmpty && next.stderr.isEmpty, "nothing new is nothing at all: \(next.stdout)\(next.stderr)")
        let nextLimited = try await cli(["log", "--store", store, "--from-seq", String(head + 1), "--limit", "5"])
        expectSuccess(nextLimited)
        #expect(nextLimited.stdout.isEmpty)

        for past in [head + 2, 500_000] {
            let r = try await cli(["log", "--store", store, "--from-seq", String(past)])
            expectCleanFailure(r, mentioning: ["--from-seq \(past) is past the log's head (seq \(head))"])
            #expect(r.status == 1)
        }
        // A --limit reaching past the largest seq is "to the end", not an overflow.
        let huge = try await cli(["log", "--store", store, "--from-seq", String(head), "--limit", String(UInt64.max)])
        expectSuccess(huge)
        #expect(huge.stdoutLines.count == 1)
    }

    /// A token's name is recorded in the log with every run it asks for ("api:NAME"): one that
    /// names a roster patient is refused, `_` read as a space (hostile test, stop 56).
    @Test func tokenNewRefusesANameThatNamesAPatient() async throws {
        let tmp = TempDir("tokenname")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let tokens = tmp.path + "/tokens.json"
        for name in [PrivacyFixture.forgotten.name.replacingOccurrences(of: " ", with: "_") + "_p021", "birch.dashboard"] {
            let r = try await cli(["token", "new", "--store", store, "--name", name, "--role", "admin", "--tokens", tokens])
            expectCleanFailure(r, mentioning: ["--name", "names a roster patient"])
            #expect(!r.stderr.contains(PrivacyFixture.forgotten.name), "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: tokens), "a refused token was written")
        }
        expectSuccess(try await cli(["token", "new", "--store", store, "--name", "front-desk", "--role", "admin", "--tokens", tokens]))
    }

    /// `token new --org` must name an organization the store knows; a store that knows none yet
    /// (README: tokens are made before the first `serve`) takes it with a warning.
    @Test func tokenNewChecksTheOrganization() async throws {
        let tmp = TempDir("tokenorg")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let tokens = tmp.path + "/tokens.json"
        let before = storeSnapshot(store)

        let bad = try await cli(["token", "new", "--store", store, "--name", "dash", "--role", "reader", "--org", "fsh", "--org", "nope",
                                 "--tokens", tokens])
        expectCleanFailure(bad, mentioning: ["no organization nope", "fsh, rrc, hwc"])
        #expect(!bad.stderr.contains("no organization fsh"), "\(bad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: tokens), "a refused token was written")

        let good = try await cli(["token", "new", "--store", store, "--name", "dash", "--role", "reader", "--org", "fsh", "--org", "hwc",
                                  "--tokens", tokens])
        expectSuccess(good)
        #expect(good.stdout.hasPrefix("slt_"))
        #expect(good.stderrLines.count == 1 && !good.stderr.contains("warning"), "\(good.stderr)")
        expectSameSnapshot(before, storeSnapshot(store), "token new")

        // No store yet, or a store without a sync: taken, with one warning line.
        let fresh = tmp.path + "/fresh"
        let early = try await cli(["token", "new", "--store", fresh, "--name", "early", "--role", "reader", "--org", "fsh"])
        expectSuccess(early)
        #expect(early.stdout.hasPrefix("slt_"))
        #expect(early.stderrLines.count == 2, "\(early.stderr)")
        #expect(early.stderrLines.first?.hasPrefix("warning: ") == true && early.stderr.contains("knows no organizations"), "\(early.stderr)")
        #expect(FileManager.default.fileExists(atPath: fresh + "/state/api-tokens.json"))
        // An admin token names no organization: nothing to check, nothing to warn about.
        let admin = try await cli(["token", "new", "--store", fresh, "--name", "ops", "--role", "admin"])
        expectSuccess(admin)
        #expect(!admin.stderr.contains("warning"), "\(admin.stderr)")
        // README's order: the tokens before the first sync. That sync finds a store, not a
        // directory it must refuse (the tokens made it a store, as the sync would have).
        let practice = try Practice.load()
        let day = try #require(practice.day(1))
        // A directory an older `token new` left (its tokens file only) is made a store around it.
        let older = tmp.path + "/older"
        try FileManager.default.createDirectory(atPath: older + "/state", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fresh + "/state/api-tokens.json", toPath: older + "/state/api-tokens.json")
        let tokensBefore = try Data(contentsOf: URL(fileURLWithPath: older + "/state/api-tokens.json"))
        try await withFakeServer(day) { _, url in
            expectSuccess(try await cli(syncArgs(store: fresh, baseURL: url, now: day.now), env: keyEnv))
            expectSuccess(try await cli(syncArgs(store: older, baseURL: url, now: day.now), env: keyEnv))
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: older + "/state/api-tokens.json")) == tokensBefore)
        #expect(try await cli(["token", "new", "--store", fresh, "--name", "late", "--role", "reader", "--org", "nope"]).status == 1)
    }

    /// One-character relative paths (`--store q`, `--tokens t`): Foundation's path arithmetic
    /// trapped on them on Linux; they are paths like any other.
    @Test func oneLetterRelativePaths() async throws {
        let tmp = TempDir("oneletter")
        defer { tmp.remove() }
        expectSuccess(try await cli(["token", "new", "--store", "q", "--name", "ops", "--role", "admin"], cwd: tmp.path))
        expectSuccess(try await cli(["token", "new", "--store", "q", "--name", "ops", "--role", "admin", "--tokens", "t"], cwd: tmp.path))
        #expect(FileManager.default.fileExists(atPath: tmp.path + "/q/STORE"))
        #expect(FileManager.default.fileExists(atPath: tmp.path + "/t"))
        let day = try #require(try Practice.load().day(1))
        try await withFakeServer(day) { _, url in
            expectSuccess(try await cli(syncArgs(store: "q", baseURL: url, now: day.now) + ["--keys", "k"], env: keyEnv, cwd: tmp.path))
        }
        expectSuccess(try await cli(["export", "--store", "q", "--keys", "k", "--out", "o"], cwd: tmp.path))
        #expect(FileManager.default.fileExists(atPath: tmp.path + "/o"))
        // A wrong --keys later: refused with one line, nothing written, no key store left behind.
        let head = try Data(contentsOf: URL(fileURLWithPath: tmp.path + "/q/state/head"))
        try await withFakeServer(day) { _, url in
            let wrong = try await cli(syncArgs(store: "q", baseURL: url, now: day.now) + ["--keys", "kk"], env: keyEnv, cwd: tmp.path)
            #expect(wrong.status == 1 && wrong.stderr.contains("--keys kk: no key store there"), "\(wrong.stderr)")
            #expect(wrong.stderr.split(separator: "\n").count == 1, "\(wrong.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/kk"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: tmp.path + "/q/state/head")) == head)
    }

    /// Given `--json`, a command that fails before it has a result prints one JSON object on
    /// stdout with the stderr line and the exit code; the stderr line is unchanged.
    @Test func jsonFailuresAreJSONToo() async throws {
        let tmp = TempDir("jsonfail")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let missing = tmp.path + "/missing"

        func expectJSONFailure(_ args: [String], code: Int32, mentioning needle: String,
                               sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let r = try await cli(args, env: keyEnv, cwd: tmp.path)
            expectCleanFailure(r, mentioning: [needle], allowStdout: true, sourceLocation: sourceLocation)
            #expect(r.status == code, "\(r.label): exit \(r.status)", sourceLocation: sourceLocation)
            #expect(r.stdoutLines.count == 1, "\(r.label): \(r.stdout)", sourceLocation: sourceLocation)
            let o = parseJSON(r.stdout) as? [String: Any]
            #expect(o?.count == 2, "\(r.label): \(r.stdout)", sourceLocation: sourceLocation)
            #expect(o?["error"] as? String == r.stderrLines.first, "\(r.label): \(r.stdout) vs \(r.stderr)", sourceLocation: sourceLocation)
            #expect(o?["exit_code"] as? Int == Int(code), "\(r.label): \(r.stdout)", sourceLocation: sourceLocation)
        }

        // Failures met while running: the "syncledger: …" line.
        try await expectJSONFailure(["appointments", "--store", missing, "--json"], code: 1, mentioning: "no store")
        try await expectJSONFailure(["status", "--json", "--store", missing], code: 1, mentioning: "no store")
        try await expectJSONFailure(["upcoming", "--store", store, "--org", "nope", "--json"], code: 1, mentioning: "organization nope")
        try await expectJSONFailure(["history", "--store", store, "no-such-appointment", "--json"], code: 1, mentioning: "no-such-appointment")
        try await expectJSONFailure(["as-of", "--store", store, "--seq", "999999", "--json"], code: 1, mentioning: "999999")
        try await expectJSONFailure(["verify", "--store", missing, "--json"], code: 1, mentioning: "no store")
        try await expectJSONFailure(["sync", "--store", store, "--roster", Repo.roster, "--org", "nope", "--base-url", "http://127.0.0.1:1/api/v1",
                                     "--json"], code: 1, mentioning: "organization nope")
        // Usage errors (exit 64): their one line too.
        try await expectJSONFailure(["sync-logs", "--store", store, "--json", "--limit", "0"], code: 64, mentioning: "--limit must be positive")
        try await expectJSONFailure(["sync", "--store", store, "--json", "--roster", Repo.roster, "--org", "fsh", "--patient", "p-001"],
                                    code: 64, mentioning: "not both")
        try await expectJSONFailure(["--store", "", "appointments", "--json"], code: 64, mentioning: "--store is empty")

        // Without --json, or for a command without it, stdout stays empty.
        expectCleanFailure(try await cli(["appointments", "--store", missing]), mentioning: ["no store"])
        expectCleanFailure(try await cli(["log", "--store", missing]), mentioning: ["no store"])
        expectCleanFailure(try await cli(["log", "--store", store, "--json"]), mentioning: ["--json"])
        // A command that ran and printed its result keeps to it: one object, no error added.
        let verified = try await cli(["verify", "--store", store, "--json"])
        expectSuccess(verified)
        let status = try await cli(["status", "--store", store, "--json"])
        #expect(status.stdoutLines.count == 1, "\(status.stdout)")
        let o = parseJSON(status.stdout) as? [String: Any]
        #expect(o?["head"] != nil && o?["exit_code"] == nil, "\(status.stdout)")
    }
}

extension CLIBinaryTests {
    /// A forgotten patient's appointments read as "(forgotten)" in `as-of` (and `appointments`)
    /// tables, as `forget --help` and docs/FORMAT.md say, not as a blank patient.
    @Test func asOfShowsAForgottenPatientAsForgotten() async throws {
        let tmp = TempDir("asofforgot")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let before = try await Self.verifiedHeadSeq(of: store)
        expectSuccess(try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"]))
        let head = try await Self.verifiedHeadSeq(of: store)

        // The view's own columns say so: no patient id left, the client name "(forgotten)".
        let json = try await cli(["as-of", "--store", store, "--seq", String(head), "--json"])
        expectSuccess(json)
        let forgotten = Self.rows(json).filter { ($0["client_name"] as? String) == "(forgotten)" }
        #expect(!forgotten.isEmpty, "no appointment of the forgotten patient in as-of --json")
        let id = try #require(forgotten.first?["appointment_id"] as? String)

        for seq in [head, before] {
            let one = try await cli(["as-of", "--store", store, "--seq", String(seq), "--appointment", id, "--wide"])
            expectSuccess(one)
            let line = one.stdoutLines.first { $0.contains(id) }
            #expect(line?.contains("(forgotten)") == true, "as-of --seq \(seq): \(one.stdout)")
            let all = try await cli(["as-of", "--store", store, "--seq", String(seq), "--wide"])
            expectSuccess(all)
            #expect(all.stdoutLines.filter { $0.contains("(forgotten)") }.count == forgotten.count, "as-of --seq \(seq): \(all.stdout)")
            #expect(!all.stdout.contains(PrivacyFixture.forgotten.name))
        }
        let live = try await cli(["appointments", "--store", store, "--wide"])
        #expect(live.stdoutLines.filter { $0.contains("(forgotten)") }.count == forgotten.count, "\(live.stdout)")

        // A link's, a location's and a change's row carry no client name: their tables (and the
        // changes' JSON) say "(forgotten)" too, for exactly the forgotten patient's appointments.
        let ids = Set(forgotten.compactMap { $0["appointment_id"] as? String })
        var shown = 0
        for command in [["meeting-urls", "--all"], ["locations"], ["changes", "--since", "3650d"]] {
            let asJSON = try await cli([command[0], "--store", store, "--json"] + command.dropFirst())
            expectSuccess(asJSON)
            let theirs = Self.rows(asJSON).filter { ids.contains($0["appointment_id"] as? String ?? "") }
            let table = try await cli([command[0], "--store", store] + command.dropFirst())
            expectSuccess(table)
            #expect(table.stdoutLines.filter { $0.contains("(forgotten)") }.count == theirs.count, "\(command): \(table.stdout)")
            #expect(!table.stdout.contains(PrivacyFixture.forgotten.name))
            if command[0] == "changes" {
                for row in theirs { #expect(row["patient_name"] as? String == "(forgotten)", "\(row)") }
            }
            shown += theirs.count
        }
        #expect(shown > 0, "the forgotten patient has no link, location or change to show")
    }
}
