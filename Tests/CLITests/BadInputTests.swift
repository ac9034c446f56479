import FakeIntakeQ
import Foundation
import GRDB
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 7, part 5: every command with missing, malformed and out-of-range input gives one clear
/// line on stderr (or ArgumentParser's short usage block), a non-zero exit, no trace, and leaves
/// the store as it was.
extension CLIBinaryTests {
    struct BadArg: Sendable {
        var args: [String]
        var mentions: [String]
        init(_ args: [String], _ mentions: String...) {
            self.args = args
            self.mentions = mentions
        }
    }

    /// `S` stands for the store path, `R` for the fixture roster.
    static let badArguments: [BadArg] = [
        // sync
        BadArg(["sync", "--store", "S"], "--roster"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--org", "fsh", "--patient", "p-001"], "not both"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--now", "yesterday"], "yesterday"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--days-back", "-5"], "--days-back", "between 0 and 3650"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--days-back=-5"], "--days-back"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--days-ahead", "99999"], "--days-ahead"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--days-back", "ninety"], "ninety"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--requests-per-minute", "0"], "--requests-per-minute"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--daily-budget=-1"], "--daily-budget"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--type", "hourly"], "--type"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--wait-lock=-1"], "--wait-lock"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--timeout", "0"], "--timeout"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--org", "nope"], "organization nope", "fsh"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--patient", "nope"], "patient nope"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--bogus"], "--bogus"),
        // status
        BadArg(["status", "--store", "S", "--max-age", "abc"], "abc"),
        BadArg(["status", "--store", "S", "--bogus"], "--bogus"),
        // the views
        BadArg(["appointments", "--store", "S", "--from", "yesterday"], "yesterday"),
        BadArg(["appointments", "--store", "S", "--to", "2026-13-45"], "2026-13-45"),
        BadArg(["appointments", "--store", "S", "--org"], "--org"),
        BadArg(["meeting-urls", "--store", "S", "--to", "nope"], "nope"),
        BadArg(["locations", "--store", "S", "--from", "31/12/2026"], "31/12/2026"),
        BadArg(["sync-logs", "--store", "S", "--limit", "-1"], "--limit"),
        // A negative number after a space is the option's value (not read as another option).
        BadArg(["sync-logs", "--store", "S", "--limit", "-5"], "--limit must be positive"),
        BadArg(["upcoming", "--store", "S", "--days", "-3"], "--days must be between 0 and 366"),
        BadArg(["as-of", "--store", "S", "--seq", "-1"], "'-1' is invalid for '--seq"),
        BadArg(["status", "--store", "S", "--max-age", "-1"], "0 or more"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--wait-lock", "-1"], "--wait-lock must be a number of seconds, 0 or more"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--wait-lock", "nan"], "--wait-lock must be a number of seconds, 0 or more"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--timeout", "-1"], "--timeout more than 0"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--timeout", "inf"], "at most 3600 seconds"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--timeout", "1e300"], "at most 3600 seconds"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--requests-per-minute", "-1"], "--requests-per-minute and --daily-budget must be positive"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--daily-budget", "-1"], "--requests-per-minute and --daily-budget must be positive"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--max-retries", "-1"], "--max-retries must be 0...20"),
        BadArg(["forget", "--store", "S", "--patient", "p-001", "--reason", "test", "--wait-lock", "-1"], "--wait-lock must be a number of seconds, 0 or more"),
        BadArg(["forget", "--store", "S", "--patient", "p-001", "--reason", "client 4101 asked"], "IntakeQ client id or a phone number"),
        BadArg(["forget", "--store", "S", "--patient", "p-001", "--reason", "phone (555) 010-1234"], "IntakeQ client id or a phone number"),
        BadArg(["repair", "--store", "S", "--accept-loss", "test", "--wait-lock", "-1"], "--wait-lock must be a number of seconds, 0 or more"),
        BadArg(["repair", "--store", "S", "--accept-loss", String(repeating: "x", count: 501)], "--accept-loss is 501 characters; say why in at most 500"),
        BadArg(["serve", "--store", "S", "--roster", "R", "--requests-per-minute", "-1"], "--requests-per-minute and --daily-budget must be positive"),
        BadArg(["serve", "--store", "S", "--roster", "R", "--max-retries", "-1"], "--max-retries must be 0...20"),
        BadArg(["alert", "test", "--store", "S", "--alert-command", "true", "--attempts", "-1"], "--attempts must be from 1 to 10"),
        BadArg(["alert", "test", "--store", "S", "--alert-command", "true", "--alert-timeout", "-1"], "--alert-timeout must be"),
        BadArg(["sync-logs", "--store", "S", "--limit=-1"], "--limit"),
        BadArg(["sync-logs", "--store", "S", "--limit", "0"], "--limit"),
        BadArg(["sync-logs", "--store", "S", "--limit", "many"], "many"),
        // history
        BadArg(["history", "--store", "S"], "appointment-id"),
        BadArg(["history", "--store", "S", "no-such-appointment"], "no-such-appointment"),
        BadArg(["history", "--store", "S", ""], "give an appointment id"),
        // Empty values are usage errors naming the option (they searched for "": "no
        // organization  in the roster", or nothing printed with exit 0).
        BadArg(["upcoming", "--store", "S", "--org", ""], "--org is empty"),
        BadArg(["upcoming", "--store", "S", "--now", ""], "--now is empty"),
        BadArg(["upcoming", "--store", "S", "--now", "soon"], "--now"),
        BadArg(["changes", "--store", "S", "--run", ""], "--run is empty"),
        BadArg(["changes", "--store", "S", "--since", " "], "--since is empty"),
        BadArg(["as-of", "--store", "S", "--seq", "2", "--appointment", ""], "--appointment is empty"),
        BadArg(["as-of", "--store", "S", ""], "the time is empty"),
        BadArg(["appointments", "--store", "S", "--patient", ""], "--patient is empty"),
        BadArg(["sync-logs", "--store", "S", "--type", ""], "--type is empty"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--org", ""], "--org is empty"),
        BadArg(["token", "new", "--store", "S", "--name", "x", "--role", "reader", "--org", ""], "--org is empty"),
        BadArg(["verify", "--store", "S", "--expect-head", ""], "--expect-head is empty"),
        BadArg(["rebuild", "--store", "S", "--projection", ""], "--projection is empty"),
        BadArg(["history", "--store", "S", "a", "b"], "b"),
        // as-of
        BadArg(["as-of", "--store", "S", "notatime"], "notatime"),
        BadArg(["as-of", "--store", "S"], "--seq"),
        BadArg(["as-of", "--store", "S", "--seq", "999999"], "999999"),
        BadArg(["as-of", "--store", "S", "2026-11-20T10:00:00Z", "--seq", "3"], "--seq"),
        BadArg(["as-of", "--store", "S", "--seq", "abc"], "abc"),
        BadArg(["as-of", "--store", "S", "--seq=-1"], "-1"),
        // verify
        BadArg(["verify", "--store", "S", "--expect-head", "garbage"], "garbage"),
        BadArg(["verify", "--store", "S", "--expect-head", "5:abc"], "5:abc"),
        // The empty log's head passed and cleared a standing failure; another hash at seq 0 was
        // recorded as a failed verify (hostile test).
        BadArg(["verify", "--store", "S", "--expect-head", "0:" + String(repeating: "0", count: 64)], "seq 0 is before the first event"),
        BadArg(["verify", "--store", "S", "--expect-head", "0:" + String(repeating: "a", count: 64)], "seq 0 is before the first event"),
        // rebuild
        BadArg(["rebuild", "--store", "S", "--projection", "nope"], "nope", "appointments"),
        // export
        BadArg(["export", "--store", "S", "--format", "xml"], "--format"),
        BadArg(["export", "--store", "S", "--from-seq", "0"], "--from-seq"),
        BadArg(["export", "--store", "S", "--from-seq", "abc"], "abc"),
        BadArg(["export", "--store", "S", "--from-seq", "5", "--to-seq", "2"], "--to-seq 2 is before --from-seq 5"),
        // Not "before --from-seq", which was not given (hostile test).
        BadArg(["export", "--store", "S", "--to-seq", "0"], "--to-seq starts at 1"),
        BadArg(["export", "--store", "S", "--out", "/nonexistent-dir/x.jsonl"], "/nonexistent-dir/x.jsonl"),
        BadArg(["export", "--store", "S", "--bundle", "S"], "would write into the store"),
        BadArg(["export", "--store", "S", "--bundle", Repo.practice], "not empty"),
        BadArg(["export", "--store", "S", "--bundle", "/nonexistent-dir/b", "--format", "csv"], "--bundle writes the log's segments as stored"),
        BadArg(["export", "--store", "S", "--bundle", "/nonexistent-dir/b", "--out", "/nonexistent-dir/x"], "--format, --out and --force"),
        // log
        BadArg(["log", "--store", "S", "--from-seq", "abc"], "abc"),
        BadArg(["log", "--store", "S", "--from-seq", "0"], "--from-seq"),
        BadArg(["log", "--store", "S", "--limit", "-1"], "'-1' is invalid for '--limit"),
        BadArg(["log", "--store", "S", "--from-seq", "-1"], "'-1' is invalid for '--from-seq"),
        BadArg(["export", "--store", "S", "--from-seq", "-1"], "'-1' is invalid for '--from-seq"),
        BadArg(["export", "--store", "S", "--to-seq", "-2"], "'-2' is invalid for '--to-seq"),
        BadArg(["log", "--store", "S", "--limit", "0"], "--limit"),
        BadArg(["log", "--store", "S", "--from-seq", "999999"], "--from-seq 999999 is past the log's head (seq "),
        // demo
        BadArg(["demo", "--fixtures", "/nonexistent-fixtures"], "/nonexistent-fixtures"),
        BadArg(["demo", "--store", "S"], "not empty"),
        BadArg(["demo", "--bogus"], "--bogus"),
        // issue 14: unknown scope or type lists the valid ones; small validation fixes
        BadArg(["appointments", "--store", "S", "--org", "nope"], "organization nope", "fsh, rrc, hwc"),
        BadArg(["appointments", "--store", "S", "--patient", "nope"], "patient nope", "p-001"),
        BadArg(["meeting-urls", "--store", "S", "--org", "nope"], "fsh"),
        BadArg(["locations", "--store", "S", "--patient", "p-999"], "p-001"),
        BadArg(["upcoming", "--store", "S", "--org", "nope"], "fsh"),
        BadArg(["upcoming", "--store", "S", "--days=-1"], "--days"),
        BadArg(["changes", "--store", "S", "--since", "24h", "--patient", "nope"], "p-001"),
        BadArg(["changes", "--store", "S"], "--since"),
        BadArg(["changes", "--store", "S", "--since", "yesterday"], "yesterday"),
        BadArg(["changes", "--store", "S", "--since", "99999999999d"], "is too large a duration", "at most 3650d"),
        BadArg(["changes", "--store", "S", "--since", "3651d"], "is too large a duration", "at most 3650d"),
        BadArg(["changes", "--store", "S", "--since", "87601h"], "is too large a duration", "87600h"),
        BadArg(["changes", "--store", "S", "--run", "no-such-run"], "no-such-run"),
        BadArg(["sync-logs", "--store", "S", "--type", "hourly"], "hourly", "automated_daily, manual_org_bulk"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--patient", "p-001", "--type", "automated_daily"], "automated_daily"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--org", "fsh", "--type", "automated_daily"], "automated_daily"),
        BadArg(["status", "--store", "S", "--max-age", "nan"], "--max-age"),
        BadArg(["status", "--store", "S", "--max-age", "inf"], "--max-age"),
        BadArg(["status", "--store", "S", "--max-age=-3"], "--max-age"),
        BadArg(["appointments", "--store", "S", "--from", "2026-12-01T10:00+25:00"], "+25:00"),
        // A range that ends before it starts (it listed nothing and exited 0; the API answers 400).
        BadArg(["appointments", "--store", "S", "--from", "2026-12-03", "--to", "2026-12-02"], "--from 2026-12-03 is after --to 2026-12-02"),
        BadArg(["meeting-urls", "--store", "S", "--from", "2026-12-02T10:00", "--to", "2026-12-02T09:59"], "is after --to"),
        BadArg(["as-of", "--store", "S", "2026-12-01T10:00:00+15:00"], "+15:00"),
        BadArg(["sync", "--store", "S", "--roster", "R", "--now", "2026-11-20T10:00+25:00"], "+25:00"),
        BadArg(["appointments", "--store", "S", "--timezone", "Mars/Olympus"], "Mars/Olympus"),
        BadArg(["upcoming", "--store", "S", "--timezone", "../../etc/passwd"], "../../etc/passwd"),
        BadArg(["export", "--store", "S", "--out", "R"], "already exists", "--force"),
        BadArg(["export", "--store", "S", "--out", "F", "--force"], "would write into the store"),
        // the root command
        BadArg(["no-such-command"], "no-such-command"),
        BadArg(["--store"], "--store"),
        // An empty store or key store path (an unset shell variable) never falls back to ./ledger-data.
        BadArg(["appointments", "--store", ""], "--store is empty"),
        BadArg(["--store", "", "status"], "--store is empty"),
        BadArg(["--store=", "verify"], "--store"),
        BadArg(["sync", "--store=", "--roster", "R", "--base-url", "http://127.0.0.1:1/api/v1"], "--store"),
        BadArg(["token", "new", "--store", "", "--name", "x", "--role", "admin"], "--store is empty"),
        BadArg(["--store", "", "token", "new", "--name", "x", "--role", "admin"], "--store is empty"),
        BadArg(["log", "--store", "", "--from-seq", "1"], "--store is empty"),
        BadArg(["appointments", "--store", "S", "--keys", ""], "--keys is empty"),
        BadArg(["demo", "--store", ""], "--store is empty"),
        BadArg(["token", "new", "--store", "S", "--name", "x", "--role", "admin", "--tokens", ""], "--tokens is empty"),
        BadArg(["serve", "--store", "S", "--roster", "R", "--tokens", ""], "--tokens is empty"),
    ]

    /// A malformed time and a range that ends before it starts are usage errors: exit 64, one
    /// line naming the help (they exited 1, hostile test).
    @Test func malformedTimesAreUsageErrors() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("badtimes")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)
        for args in [["appointments", "--from", "2026-12-03", "--to", "2026-12-02"], ["changes", "--since", "yesterday"],
                     ["upcoming", "--now", "2026-13-45"], ["as-of", "2026-12-01T10:00:00+15:00"]] {
            let r = try await cli(args + ["--store", store])
            #expect(r.status == 64, "\(args): exit \(r.status): \(r.stderr)")
            #expect(r.stderr.hasSuffix("--help` lists the options)\n"), "\(args): \(r.stderr)")
            expectCleanFailure(r)
        }
        // A negative duration is the command's to judge, not "Missing value for '--since'".
        let negative = try await cli(["changes", "--store", store, "--since", "-1h"])
        #expect(negative.status == 64 && negative.stderr.contains("--since '-1h' is neither a duration"), "\(negative.stderr)")
        let json = try await cli(["appointments", "--store", store, "--from", "2026-12-03", "--to", "2026-12-02", "--json"])
        #expect((parseJSON(json.stdout) as? [String: Any])?["exit_code"] as? Int == 64, "\(json.stdout)")
    }

    @Test("every command with missing, malformed and out-of-range arguments fails cleanly, store unchanged")
    func badArgumentMatrix() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("badargs")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)
        let before = storeSnapshot(store)
        let viewsBefore = try await cli(["appointments", "--store", store, "--json"])
        expectSuccess(viewsBefore)

        for c in Self.badArguments {
            let args = c.args.map { $0 == "S" ? store : $0 == "R" ? Repo.roster : $0 == "F" ? store + "/STORE" : $0 }
            let r = try await cli(args, env: keyEnv, cwd: tmp.path)
            expectCleanFailure(r, mentioning: c.mentions)
        }

        expectSameSnapshot(before, storeSnapshot(store), "the bad-argument matrix")
        let viewsAfter = try await cli(["appointments", "--store", store, "--json"])
        #expect(viewsAfter.stdout == viewsBefore.stdout, "the appointments view changed")
        // Nothing fell back to the default store in the working directory.
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/ledger-data"))
    }

    @Test("a missing, unreadable or malformed roster is one line naming the file (and the JSON path)")
    func rosterProblems() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("roster")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)
        let before = storeSnapshot(store)
        let neverCreated = tmp.path + "/never-created"

        func sync(_ roster: String, storePath: String) async throws -> RunResult {
            try await cli(syncArgs(store: storePath, baseURL: "http://127.0.0.1:1/api/v1", now: practice.days[0].now)
                .map { $0 == Repo.roster ? roster : $0 }, env: keyEnv, cwd: tmp.path)
        }

        var cases: [(path: String, mentions: [String])] = []
        // Missing.
        cases.append((tmp.path + "/no-such-roster.json", ["no-such-roster.json", "does not exist"]))
        // A directory, and a device that never ends: each named, not "check its permissions".
        cases.append((tmp.path, ["is a directory"]))
        cases.append(("/dev/zero", ["/dev/zero is larger than"]))
        // Not JSON at all, and JSON cut off.
        let garbage = tmp.path + "/garbage.json"
        try Data("organizations: fsh\n".utf8).write(to: URL(fileURLWithPath: garbage))
        cases.append((garbage, [garbage, "JSON", "byte"]))
        let cut = tmp.path + "/cut.json"
        try Data(#"{"organizations": [{"id": "fsh", "patients": ["#.utf8).write(to: URL(fileURLWithPath: cut))
        cases.append((cut, [cut, "JSON", "byte"]))
        // Valid JSON, wrong shape: the message names the file and the JSON path.
        let shape = tmp.path + "/shape.json"
        try Data(#"""
            {"organizations": [
              {"id": "a", "patients": [{"id": "p1", "intakeq_client_id": 1}]},
              {"id": "b", "patients": [{"id": "p2", "name": "No Client Id"}]}]}
            """#.utf8).write(to: URL(fileURLWithPath: shape))
        cases.append((shape, [shape, "$.organizations[1].patients[0].intakeq_client_id"]))
        // An email that is not text: named, not dropped (the privacy checks compare emails).
        let numericEmail = tmp.path + "/numeric-email.json"
        try Data(#"{"organizations": [{"id": "a", "patients": [{"id": "p1", "intakeq_client_id": 1, "email": 12}]}]}"#.utf8)
            .write(to: URL(fileURLWithPath: numericEmail))
        cases.append((numericEmail, [numericEmail, "$.organizations[0].patients[0].email must be text (in quotes), not a number"]))
        let topArray = tmp.path + "/array.json"
        try Data("[1, 2, 3]".utf8).write(to: URL(fileURLWithPath: topArray))
        cases.append((topArray, [topArray, "$"]))
        let orgsNotList = tmp.path + "/orgs.json"
        try Data(#"{"organizations": {"id": "fsh"}}"#.utf8).write(to: URL(fileURLWithPath: orgsNotList))
        cases.append((orgsNotList, [orgsNotList, "$.organizations"]))
        let badPractitioner = tmp.path + "/practitioners.json"
        try Data(#"{"organizations": [], "practitioners": [{"intakeq_id": "x"}]}"#.utf8).write(to: URL(fileURLWithPath: badPractitioner))
        cases.append((badPractitioner, [badPractitioner, "$.practitioners[0]"]))
        // Issue 14: client ids that are not positive whole numbers, a practitioner mapped twice,
        // an unknown time zone: refused, the JSON path named.
        for (n, bad) in [#"4101.5"#, #"-1"#, #"" 4101 ""#, #"0"#, #""41x""#].enumerated() {
            let path = tmp.path + "/client-\(n).json"
            try Data(#"{"organizations": [{"id": "a", "patients": [{"id": "p1", "intakeq_client_id": 4102}, {"id": "p2", "intakeq_client_id": "#.utf8
                + Data(bad.utf8) + Data("}]}]}".utf8)).write(to: URL(fileURLWithPath: path))
            cases.append((path, [path, "$.organizations[0].patients[1].intakeq_client_id", "positive whole number"]))
        }
        let twice = tmp.path + "/twice.json"
        try Data(#"{"organizations": [{"id": "a", "patients": [{"id": "p1", "intakeq_client_id": "4101"}]}], "practitioners": [{"intakeq_id": "x", "provider_id": "a"}, {"intakeq_id": "x", "provider_id": "b"}]}"#.utf8)
            .write(to: URL(fileURLWithPath: twice))
        cases.append((twice, [twice, "$.practitioners[1].intakeq_id", "once"]))
        let zone = tmp.path + "/zone.json"
        try Data(#"{"timezone": "America/Denverr", "organizations": [{"id": "a", "patients": [{"id": "p1", "intakeq_client_id": 4101}]}]}"#.utf8)
            .write(to: URL(fileURLWithPath: zone))
        cases.append((zone, [zone, "$.timezone", "America/Denverr"]))
        // A directory where the file should be.
        let dirRoster = tmp.path + "/roster-dir"
        try FileManager.default.createDirectory(atPath: dirRoster, withIntermediateDirectories: true)
        cases.append((dirRoster, [dirRoster]))

        for c in cases {
            let r = try await sync(c.path, storePath: store)
            expectCleanFailure(r, mentioning: c.mentions)
            // A roster is a local file: its errors must not read like a bad API response.
            #expect(!r.stderr.contains("response") && !r.stderr.contains("IntakeQ"), "misleading roster error: \(r.stderr)")
            // Checked before the store is touched: a store is not even created.
            expectCleanFailure(try await sync(c.path, storePath: neverCreated), mentioning: c.mentions)
            #expect(!FileManager.default.fileExists(atPath: neverCreated), "a bad roster (\(c.path)) created a store")
        }

        // Unreadable (chmod 000). As root that is still readable: detect it and skip, saying so.
        let locked = tmp.path + "/unreadable.json"
        try FileManager.default.copyItem(atPath: Repo.roster, toPath: locked)
        chmod(locked, 0)
        let fd = open(locked, O_RDONLY)
        if fd >= 0 {
            close(fd)
            print("CLITests: skipping the unreadable-roster case: chmod 000 does not stop this user (uid \(getuid())) from reading")
        } else {
            expectCleanFailure(try await sync(locked, storePath: store), mentioning: [locked, "cannot be read"])
        }

        expectSameSnapshot(before, storeSnapshot(store), "the roster cases")
    }

    @Test("INTAKEQ_API_KEY unset or empty: one line, exit 1, no store touched")
    func apiKeyUnset() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("nokey")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)
        let before = storeSnapshot(store)
        let fresh = tmp.path + "/fresh"
        // The key file a directory, or a device that never ends: the cause named.
        let cases: [([String: String?], [String])] = [
            ([:], ["INTAKEQ_API_KEY"]), (["INTAKEQ_API_KEY": ""], ["INTAKEQ_API_KEY"]),
            (["INTAKEQ_API_KEY_FILE": tmp.path], ["INTAKEQ_API_KEY_FILE", "is a directory"]),
            (["INTAKEQ_API_KEY_FILE": "/dev/zero"], ["INTAKEQ_API_KEY_FILE /dev/zero is larger than 4096 bytes"]),
        ]
        for (env, mentions) in cases {
            for s in [store, fresh] {
                let r = try await cli(syncArgs(store: s, baseURL: "http://127.0.0.1:1/api/v1", now: practice.days[0].now),
                                      env: env, cwd: tmp.path)
                expectCleanFailure(r, mentioning: mentions)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: fresh))
        expectSameSnapshot(before, storeSnapshot(store), "syncs without a key")
    }

    /// Another program's SQLite database in the views' place, through a link or copied over the
    /// file: every command that reads or writes the views refuses it in one line naming the
    /// link and its tables, writes nothing into it and records nothing; moved away, the views
    /// are built from the log again (hostile test: the views' tables were created inside it,
    /// and commands answered from empty views).
    @Test("another program's database in the views' place is refused and left as it was")
    func aForeignViewsFileIsRefused() async throws {
        let tmp = TempDir("foreignviews")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1])
        let views = store + "/projections.sqlite"
        for suffix in ["", "-wal", "-shm"] { unlink(views + suffix) }
        // The other program's database in rollback-journal mode, and one in WAL mode (whose
        // side files SQLite may make on reading it: only the database itself is compared).
        var wal = Configuration()
        wal.prepareDatabase { db in try db.execute(sql: "PRAGMA journal_mode = WAL") }
        for (name, configuration) in [("crm.db", Configuration()), ("crm-wal.db", wal)] {
            try await DatabaseQueue(path: tmp.path + "/" + name, configuration: configuration).write { db in
                try db.execute(sql: "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ada')")
                try db.execute(sql: "CREATE VIEW recent AS SELECT * FROM customers")
            }
        }
        let head = try await cli(["verify", "--store", store])
        expectSuccess(head)
        let unchecked: (String) -> Bool = { $0 == "store/log/LOCK" || $0.hasPrefix("crm-wal.db-") }
        for (placed, foreign) in [("link", tmp.path + "/crm.db"), ("copy", tmp.path + "/crm.db"), ("link", tmp.path + "/crm-wal.db")] {
            if placed == "link" {
                try FileManager.default.createSymbolicLink(atPath: views, withDestinationPath: foreign)
            } else {
                try FileManager.default.copyItem(atPath: foreign, toPath: views)
            }
            let before = snapshot(tmp.path, excluding: unchecked)
            for c in [["appointments"], ["status"], ["rebuild"], ["as-of", "--seq", "5"], ["upcoming"],
                      syncArgs(store: store, baseURL: "http://127.0.0.1:1/api/v1", now: "2026-11-20T10:00:00Z")] {
                let args = c[0] == "sync" ? c : [c[0], "--store", store] + c.dropFirst()
                let r = try await cli(args, env: keyEnv, cwd: tmp.path)
                expectCleanFailure(r, mentioning: ["is not SyncLedger's", "customers, recent", "Move it away"] + (placed == "link" ? ["a link to " + foreign] : []))
            }
            // The writer's lock file names the sync that took it (before it opened the views).
            expectSameSnapshot(before, snapshot(tmp.path, excluding: unchecked), "the store and the other program's database (\(placed) to \(foreign))")
            let tables = try await DatabaseQueue(path: foreign).read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master ORDER BY name") }
            #expect(tables == ["customers", "recent"], "\(tables)")
            unlink(views)
        }
        // Moved away: the views are built again from the log.
        let shown = try await cli(["appointments", "--store", store, "--json"])
        expectSuccess(shown)
        #expect(shown.stdout.contains("appointment_id"), "\(shown.stdout.prefix(200))")
    }

    @Test("a directory that is not a store, and a store of a newer format, are refused by every command")
    func notAStoreAndNewerFormat() async throws {
        let tmp = TempDir("notstore")
        defer { tmp.remove() }
        let notStore = tmp.path + "/not-a-store"
        try FileManager.default.createDirectory(atPath: notStore + "/photos", withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: notStore + "/notes.txt"))
        try Data([0, 1, 2]).write(to: URL(fileURLWithPath: notStore + "/photos/a.bin"))
        let newer = tmp.path + "/newer"
        try FileManager.default.createDirectory(atPath: newer + "/log", withIntermediateDirectories: true)
        try Data(#"{"format": "syncledger-store", "version": 99}"#.utf8).write(to: URL(fileURLWithPath: newer + "/STORE"))
        let commands: [[String]] = [
            ["sync", "--roster", Repo.roster, "--base-url", "http://127.0.0.1:1/api/v1", "--now", "2026-11-20T10:00:00Z"],
            ["status"], ["appointments"], ["meeting-urls"], ["locations"], ["sync-logs"], ["history", "abc"],
            ["as-of", "--seq", "1"], ["as-of", "2026-11-20T10:00:00Z"], ["verify"], ["rebuild"],
            ["export"], ["export", "--format", "csv"], ["log"],
        ]
        for (dir, needle) in [(notStore, "not a SyncLedger store"), (newer, "version 99")] {
            let before = snapshot(dir)
            for c in commands {
                let r = try await cli([c[0], "--store", dir] + c.dropFirst(), env: keyEnv, cwd: tmp.path)
                expectCleanFailure(r, mentioning: [needle, dir])
            }
            // Compared whole here, projections.sqlite included: nothing may be created at all.
            expectSameSnapshot(before, snapshot(dir), dir)
            let entries = try FileManager.default.subpathsOfDirectory(atPath: dir).sorted()
            #expect(entries == (dir == notStore ? ["notes.txt", "photos", "photos/a.bin"] : ["STORE", "log"]),
                    "files were created in \(dir): \(entries)")
        }
        // A plain file given as the store, and a store that does not exist (reads only).
        let file = tmp.path + "/file"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        expectCleanFailure(try await cli(["verify", "--store", file]), mentioning: [file])
        expectCleanFailure(try await cli(["appointments", "--store", tmp.path + "/missing"]), mentioning: ["no store"])
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/missing"))

        // A store that lost only its marker: said so, with the marker's text to put back; put
        // back as said, the store verifies (it was "not a SyncLedger store": hostile test).
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1])
        let marker = try Data(contentsOf: URL(fileURLWithPath: store + "/STORE"))
        unlink(store + "/STORE")
        let lost = snapshot(store)
        var said = ""
        for c in [["status"], ["appointments"], ["verify"], ["rebuild"], commands[0]] {
            let r = try await cli([c[0], "--store", store] + c.dropFirst(), env: keyEnv, cwd: tmp.path)
            expectCleanFailure(r, mentioning: ["holds a log/ but no STORE file", "write it back"])
            said = r.stderr
        }
        expectSameSnapshot(lost, snapshot(store), "a store without its marker")
        let text = try #require(said.range(of: "its whole text: ").flatMap { start in
            said[start.upperBound...].range(of: "), then run").map { String(said[start.upperBound..<$0.lowerBound]) }
        }, "\(said)")
        #expect(Data((text + "\n").utf8) == marker, "\(text)")
        try Data((text + "\n").utf8).write(to: URL(fileURLWithPath: store + "/STORE"))
        expectSuccess(try await cli(["verify", "--store", store]))
    }

    @Test("an unreachable base URL: one line, exit 1; only the failed run's own events are added")
    func unreachableBaseURL() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("unreachable")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)
        let before = storeSnapshot(store)
        let eventsBefore = try await exportedEvents(store)
        // 127.0.0.1:1 is a closed port. Default timeout and retries: a refused connection must
        // fail fast (it once waited the whole 30 s timeout for each of 5 requests).
        let r = try await cli(syncArgs(store: store, baseURL: "http://127.0.0.1:1/api/v1", now: practice.days[0].now),
                              env: keyEnv, cwd: tmp.path, timeout: 45)
        expectCleanFailure(r, mentioning: ["127.0.0.1:1"], allowStdout: true)
        #expect(r.status == 1)
        #expect(r.seconds < 10, "took \(r.seconds) s to find a closed port")
        #expect(r.stdoutLines.count <= 1, "sync prints one summary line: \(r.stdout)")

        // A failed run is recorded (DESIGN: a sync_logs row per run, status failed), so the log
        // grows by exactly that run's sync.started and sync.completed; every byte before stays.
        let after = storeSnapshot(store)
        for (path, bytes) in before where path.hasSuffix(".seg") {
            let now = try #require(after[path])
            #expect(now.prefix(bytes.count) == bytes, "\(path): bytes before the failed run changed")
        }
        #expect(after["STORE"] == before["STORE"])
        let eventsAfter = try await exportedEvents(store)
        #expect(eventsAfter.count == eventsBefore.count + 2)
        let added = eventsAfter.dropFirst(eventsBefore.count)
        #expect(added.map { $0["type"] as? String } == ["sync.started", "sync.completed"])
        if let done = added.last?["data"] as? [String: Any] {
            #expect(done["status"] as? String == "failed")
        }
        for (i, e) in eventsAfter.enumerated() { #expect(e["seq"] as? Int == i + 1) }
        let v = try await cli(["verify", "--store", store])
        expectSuccess(v)
        let logs = try await cli(["sync-logs", "--store", store, "--json"])
        let rows = parseJSON(logs.stdout) as? [[String: Any]] ?? []
        #expect(rows.first?["status"] as? String == "failed")
    }

    @Test("a refused API key (401): exit 1, says so, never prints the key")
    func refusedKey() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("401")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await withFakeServer(practice.days[0], apiKey: "the-right-key") { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: practice.days[0].now), env: keyEnv, cwd: tmp.path)
            expectCleanFailure(r, mentioning: ["key"], allowStdout: true)
            #expect(r.status == 1)
        }
        // And the key is in no file of the store either.
        for (path, bytes) in snapshot(store) {
            #expect(bytes.range(of: Data(fakeAPIKey.utf8)) == nil, "the API key is stored in \(path)")
        }
    }
}
