import FakeIntakeQ
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs a short Python 3 script (the sqlite3 module edits a view by hand, as a tamperer would).
func python(_ script: String, _ args: [String]) throws -> Int32 {
    let r = try ProcessRunner.runBlocking("/usr/bin/env", ["python3", "-c", script] + args, timeout: 120)
    if r.status != 0 || r.signaled { print("python3 -c …: \(r.stdoutText)\(r.stderrText)") }
    return r.signaled ? -1 : r.status
}

/// Overwrites with 0xff the root page of the table `name` in the views database at `views` (or,
/// with `index`, of the table's first secondary index), after checkpointing its WAL: a page
/// SQLite finds damaged when a read meets it.
func damageRootPage(of name: String, index: Bool = false, views: String) throws {
    let script = """
        import sqlite3,sys
        c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)')
        q="SELECT rootpage FROM sqlite_master WHERE " + ("type='index' AND tbl_name=? AND sql IS NOT NULL" if sys.argv[3]=='1' else "name=?")
        root,=c.execute(q, (sys.argv[2],)).fetchone()
        size,=c.execute('PRAGMA page_size').fetchone(); c.close()
        f=open(sys.argv[1],'r+b'); f.seek((root-1)*size); f.write(b'\\xff'*size); f.close()
        """
    #expect(try python(script, [views, name, index ? "1" : "0"]) == 0)
}

/// Runs a tool that must succeed.
private func mustSucceed(_ path: String, _ args: [String]) throws {
    let r = try ProcessRunner.runBlocking(path, args, timeout: 60)
    #expect(r.status == 0 && !r.signaled, "\(path) \(args): \(r.stderrText)")
}

/// `chmod -R a-w` (directories keep their execute bits).
func chmodReadOnly(_ path: String) throws {
    try mustSucceed("/bin/chmod", ["-R", "a-w", path])
}

func chownTree(_ path: String, uid: Int) throws {
    try mustSucceed("/bin/chown", ["-R", "\(uid):\(uid)", path])
}

/// The read commands whose output does not depend on the clock, with their arguments.
func stableReads(_ store: String, appointment: String, seq: UInt64) -> [[String]] {
    [["appointments", "--json"], ["appointments"], ["meeting-urls"], ["locations", "--json"], ["sync-logs", "--json"],
     ["history", appointment], ["history", appointment, "--json"], ["as-of", "--seq", String(seq), "--json"],
     ["as-of", "2030-01-01T00:00:00Z"], ["export", "--format", "csv"], ["export", "--format", "jsonl"], ["log"],
     ["verify"], ["verify", "--views"]].map { $0 + ["--store", store] }
}

extension CLIBinaryTests {
    /// A byte flipped inside an old batch is not seen by reads (they serve the views); the scrub
    /// (`verify`) finds it, records it, and from then on `status` fails and every read warns.
    @Test func failedScrubIsRecordedAndReported() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("scrub")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        let good = try await cli(["verify", "--store", store])
        expectSuccess(good)
        let okStatus = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(okStatus.status == 0, "\(okStatus.stdout)\(okStatus.stderr)")
        #expect(okStatus.stdout.contains("last verify") && okStatus.stdout.contains(": ok through head"), "\(okStatus.stdout)")

        let segment = try segments(store)[0]
        let first = try segmentBatches(segment)[0]
        var bytes = try #require(FileManager.default.contents(atPath: segment))
        bytes[first.offset + 80 + (first.end - first.offset - 80) / 2] ^= 0x5a
        try bytes.write(to: URL(fileURLWithPath: segment))

        let appointmentsBefore = try await cli(["appointments", "--store", store])
        expectSuccess(appointmentsBefore)
        #expect(appointmentsBefore.stderr.isEmpty, "no scrub has failed yet: \(appointmentsBefore.stderr)")
        let verify = try await cli(["verify", "--store", store])
        #expect(verify.status == 1)
        #expect(verify.stdout.contains("verify FAILED") && verify.stdout.contains("offset \(first.offset)"), "\(verify.stdout)")

        let status = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(status.status == 1)
        #expect(status.stdout.contains("problem: the last verify") && status.stdout.contains("FAILED"), "\(status.stdout)")
        let json = try await cli(["status", "--json", "--store", store, "--max-age", "100000"])
        #expect(json.status == 1)
        let obj = try #require(parseJSON(json.stdout) as? [String: Any])
        let last = try #require(obj["last_verify"] as? [String: Any])
        #expect(last["ok"] as? Bool == false && (last["error"] as? String ?? "").contains("offset \(first.offset)"))
        for args in [["appointments"], ["meeting-urls"], ["locations"], ["sync-logs"]] {
            let r = try await cli(args + ["--store", store])
            expectSuccess(r)
            #expect(r.stdout == (args == ["appointments"] ? appointmentsBefore.stdout : r.stdout))
            #expect(r.stderrLines.count == 1 && r.stderr.hasPrefix("warning: the last verify"), "\(r.label): \(r.stderr)")
        }
        // `repair` cannot mend damage inside the log: it says so and exits 1, changing nothing
        // (it said "nothing to repair" and exited 0, which a script takes for a repair).
        let before = storeSnapshot(store)
        let repair = try await cli(["repair", "--store", store, "--accept-loss", "disk failure"])
        expectCleanFailure(repair, mentioning: ["nothing was changed: the last verify", "from a backup", "--cut-damaged"])
        #expect(!repair.stderr.contains("The log is damaged here"), "the reader's own advice is not repeated: \(repair.stderr)")
        expectSameSnapshot(before, storeSnapshot(store), "repair of damage inside the log")
        // A sync says so before it runs (here the damage is in the segment it appends to, which
        // it then refuses; in a sealed segment it appends after the damage and said nothing).
        let day = try #require(practice.day(2))
        try await withFakeServer(day) { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv)
            #expect(r.stderr.hasPrefix("warning: the last verify") && r.stderr.contains("syncing does not mend it"), "\(r.stderr)")
        }
    }

    /// `log` on a log damaged in its second batch prints the events before the damage (they were
    /// checked), then one line naming where it is, and exits 1 (was: nothing printed, so the
    /// events the message says to save were not there).
    @Test func logPrintsWhatPrecedesTheDamage() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("log-damage")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let segment = try segments(store)[0]
        let batches = try segmentBatches(segment)
        #expect(batches.count >= 2)
        let second = batches[1]
        var bytes = try #require(FileManager.default.contents(atPath: segment))
        bytes[second.offset + 80 + (second.end - second.offset - 80) / 2] ^= 0x5a
        try bytes.write(to: URL(fileURLWithPath: segment))
        try? FileManager.default.removeItem(atPath: store + "/log/index")

        let r = try await cli(["log", "--store", store])
        #expect(r.status == 1)
        let seqs = r.stdout.split(separator: "\n").compactMap { (parseJSON(String($0)) as? [String: Any])?["seq"] as? Int }
        #expect(seqs == Array(1...Int(batches[0].lastSeq)), "\(r.stdout.prefix(300))")
        #expect(r.stderrLines.count == 1 && r.stderr.contains("offset \(second.offset)"), "\(r.stderr)")
    }

    /// A meeting link edited by hand in projections.sqlite is served (reads use the views), but
    /// `verify --views` folds the log afresh and names the view, the key and the column; a join
    /// link is a patient's (it may carry the meeting's password), so neither value is shown.
    @Test func handEditedViewIsNamedByVerifyViews() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("views")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let clean = try await cli(["verify", "--views", "--store", store])
        expectSuccess(clean)
        #expect(clean.stdout.contains("views: every row matches"), "\(clean.stdout)")

        let urls = try #require(parseJSON(try await cli(["meeting-urls", "--json", "--store", store]).stdout) as? [[String: Any]])
        let row = try #require(urls.first)
        let id = try #require(row["appointment_id"] as? String)
        let original = try #require(row["meeting_url"] as? String)
        let edited = "https://evil.example/phish"
        let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('UPDATE appointment_meeting_urls SET meeting_url=? WHERE appointment_id=?',(sys.argv[2],sys.argv[3]))\nc.commit()"
        #expect(try python(script, [store + "/projections.sqlite", edited, id]) == 0)

        let served = try await cli(["meeting-urls", "--store", store])
        #expect(served.stdout.contains(edited))
        let r = try await cli(["verify", "--views", "--store", store])
        #expect(r.status == 1)
        #expect(r.stdout.contains("views FAILED: 1 difference"), "\(r.stdout)")
        #expect(r.stdout.contains("view meeting_urls") && r.stdout.contains("appointment_id='\(id)'")
                && r.stdout.contains("column meeting_url") && r.stdout.contains("personal data"), "\(r.stdout)")
        #expect(!r.stdout.contains(edited) && !r.stdout.contains(original), "\(r.stdout)")
        let status = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(status.status == 1 && status.stdout.contains("the views differ from the log"), "\(status.stdout)")
        // Not the log's damage: `repair` says what mends it and exits 0, changing nothing (it
        // sent the operator to a backup, review).
        let before = storeSnapshot(store)
        let repair = try await cli(["repair", "--store", store, "--accept-loss", "disk failure"])
        expectSuccess(repair)
        #expect(repair.stdout.contains("`syncledger rebuild` folds the views again") && !repair.stdout.contains("backup"), "\(repair.stdout)")
        expectSameSnapshot(before, storeSnapshot(store), "repair after a view difference")
        // A plain verify (a nightly cron's) checks the log, not the views: the failure stands,
        // and it says so. It answered "ok" and `status` with it (hostile test).
        let plain = try await cli(["verify", "--store", store])
        #expect(plain.status == 0 && plain.stderr.contains("so that failure stands") && plain.stderr.contains("verify --views"), "\(plain.stderr)")
        let plainJSON = try await cli(["verify", "--json", "--store", store])
        #expect(plainJSON.status == 0 && plainJSON.stdout.contains(#""earlier_failure_stands":"the last verify ("#), "\(plainJSON.stdout)")
        let still = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(still.status == 1 && still.stdout.contains("the views differ from the log"), "\(still.stdout)")
        // The fix: rebuild the views from the log (with where the time went, and the rows written).
        let rebuilt = try await cli(["rebuild", "--store", store, "--timings"])
        expectSuccess(rebuilt)
        let written = rebuilt.stdout.firstMatch(of: /; (\d+) appointment row writes/).flatMap { Int($0.1) }
        #expect((written ?? 0) > 0 && rebuilt.stdout.contains("reading the log"), "\(rebuilt.stdout)")
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        expectSuccess(try await cli(["status", "--store", store, "--max-age", "100000"]))

        // The same for a head that is not in the log: only a verify given a head clears it.
        let head = try #require(plain.stdout.firstMatch(of: /head (\d+):([0-9a-f]{64})/))
        let wrong = "\(head.1):" + String(repeating: "0", count: 64)
        #expect(try await cli(["verify", "--expect-head", wrong, "--store", store]).status == 1)
        // Both at once: the head fails, and the views are not compared. It says so (it said
        // nothing of the views: read as if they had passed, hostile test).
        let both0 = try await cli(["verify", "--views", "--expect-head", wrong, "--store", store])
        #expect(both0.status == 1 && both0.stdout.contains("views: not compared, because the log did not verify"), "\(both0.stdout)")
        let both0JSON = try await cli(["verify", "--views", "--json", "--expect-head", wrong, "--store", store])
        #expect(both0JSON.status == 1 && both0JSON.stdout.contains(#""views_compared":false"#), "\(both0JSON.stdout)")
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        let stands = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(stands.status == 1 && stands.stdout.contains("diverges from the expected head"), "\(stands.stdout)")
        expectSuccess(try await cli(["verify", "--expect-head", "\(head.1):\(head.2)", "--store", store]))
        expectSuccess(try await cli(["status", "--store", store, "--max-age", "100000"]))

        // Two kinds at once: the views differ, then a wrong head fails (which replaced the
        // standing views failure: one record), then the right head passes. The views failure
        // still stands until a `verify --views` passes (hostile test: status read ok).
        #expect(try python(script, [store + "/projections.sqlite", edited, id]) == 0)
        #expect(try await cli(["verify", "--views", "--store", store]).status == 1)
        #expect(try await cli(["verify", "--expect-head", wrong, "--store", store]).status == 1)
        let both = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(both.status == 1 && both.stdout.contains("diverges from the expected head") && both.stdout.contains("the views differ from the log"),
                "\(both.stdout)")
        // A read command's warning names both too (it named the first only).
        let warned = try await cli(["appointments", "--store", store])
        #expect(warned.status == 0 && warned.stderr.contains("diverges from the expected head")
                && warned.stderr.contains("the views differ from the log"), "\(warned.stderr)")
        expectSuccess(try await cli(["verify", "--expect-head", "\(head.1):\(head.2)", "--store", store]))
        let viewsStill = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(viewsStill.status == 1 && viewsStill.stdout.contains("the views differ from the log")
                && !viewsStill.stdout.contains("diverges from the expected head"), "\(viewsStill.stdout)")
        expectSuccess(try await cli(["rebuild", "--store", store]))
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        expectSuccess(try await cli(["status", "--store", store, "--max-age", "100000"]))
    }

    /// A patient's name edited by hand in projections.sqlite: `verify --views` names the view,
    /// the key and the column but shows neither name, and neither reaches `state/` (from which
    /// `status`, the read commands' warnings, the server's log and alerts read it).
    @Test func aHandEditedNameIsNotShownByVerifyViews() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("views-name")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let rows = try #require(parseJSON(try await cli(["appointments", "--json", "--store", store]).stdout) as? [[String: Any]])
        let row = try #require(rows.first { ($0["client_name"] as? String)?.isEmpty == false })
        let id = try #require(row["appointment_id"] as? String)
        let original = try #require(row["client_name"] as? String)
        let edited = "Peyton Tampered"
        let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('UPDATE appointments SET client_name=? WHERE appointment_id=?',(sys.argv[2],sys.argv[3]))\nc.commit()"
        #expect(try python(script, [store + "/projections.sqlite", edited, id]) == 0)

        let r = try await cli(["verify", "--views", "--store", store])
        #expect(r.status == 1)
        #expect(r.stdout.contains("view appointments") && r.stdout.contains("appointment_id='\(id)'")
                && r.stdout.contains("column client_name") && r.stdout.contains("personal data"), "\(r.stdout)")
        let json = try await cli(["verify", "--views", "--json", "--store", store])
        #expect(json.status == 1 && json.stdout.contains("\"personal\":true"), "\(json.stdout)")
        let status = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(status.status == 1 && status.stdout.contains("the views differ from the log"), "\(status.stdout)")
        let statusJSON = try await cli(["status", "--json", "--store", store, "--max-age", "100000"])
        let warned = try await cli(["sync-logs", "--store", store])
        let recorded = (try? String(contentsOfFile: store + "/state/verify.json", encoding: .utf8)) ?? ""
        #expect(!recorded.isEmpty)
        for (label, text) in [("verify", r.stdout + r.stderr), ("verify --json", json.stdout + json.stderr),
                              ("status", status.stdout + status.stderr), ("status --json", statusJSON.stdout + statusJSON.stderr),
                              ("sync-logs", warned.stdout + warned.stderr), ("state/verify.json", recorded)] {
            #expect(!text.contains(original) && !text.contains(edited), "\(label) shows a patient's name: \(text)")
        }
    }

    /// Edits `verify --views` missed (hostile test): a name deep in the roster's text (the
    /// values were compared as shown, cut at 120 characters) and a client's patient in the
    /// client map (keyed by a personal id, shown as "(personal)", every row of it compared as
    /// one). Each is found, and named without the values.
    @Test func editsPastWhatIsShownAreFoundByVerifyViews() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("views-deep")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        let views = store + "/projections.sqlite"
        let copy = tmp.path + "/clean.sqlite"
        try FileManager.default.copyItem(atPath: views, toPath: copy)
        // The last patient's name in the roster: far past its first 120 characters.
        let roster = "import sqlite3,sys,json\nc=sqlite3.connect(sys.argv[1])\nr=json.loads(c.execute('SELECT roster FROM appointments_roster').fetchone()[0])\n"
            + "p=r['organizations'][-1]['patients'][-1]\np['name']='Mallory Evil'\nt=json.dumps(r,sort_keys=True,separators=(',',':'))\n"
            + "assert t.index('Mallory Evil')>200\nc.execute('UPDATE appointments_roster SET roster=?',(t,))\nc.commit()"
        #expect(try python(roster, [views]) == 0)
        let r = try await cli(["verify", "--views", "--store", store])
        #expect(r.status == 1 && r.stdout.contains("table appointments_roster") && r.stdout.contains("column roster")
                && !r.stdout.contains("Mallory"), "\(r.stdout)")
        // The client map: one client given another patient.
        unlink(views)
        for suffix in ["-wal", "-shm"] { unlink(views + suffix) }
        try FileManager.default.copyItem(atPath: copy, toPath: views)
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        let map = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nids=[r[0] for r in c.execute('SELECT patient_id FROM appointments_roster_clients ORDER BY intakeq_client_id')]\n"
            + "c.execute('UPDATE appointments_roster_clients SET patient_id=? WHERE patient_id=?',(ids[-1],ids[0]))\nc.commit()"
        #expect(try python(map, [views]) == 0)
        let m = try await cli(["verify", "--views", "--store", store])
        #expect(m.status == 1 && m.stdout.contains("table appointments_roster_clients") && m.stdout.contains("column patient_id")
                && m.stdout.contains("intakeq_client_id=(personal)"), "\(m.stdout)")
    }

    /// An auditor's copy nobody can write: every read command answers exactly as on the
    /// writable store, views that lag the log are folded in memory (one note), nothing changes.
    /// As root (CI), `chmod -R a-w` does not stop writes, so syncledger honours the mode bits
    /// itself; the copy is also read as an unprivileged user (nobody) where setpriv exists.
    @Test func readOnlyCopyAnswersLikeTheStore() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("readonly")
        defer {
            _ = try? python("import os,sys\nfor r,ds,fs in os.walk(sys.argv[1]):\n  os.chmod(r,0o755)", [tmp.path])
            tmp.remove()
        }
        chmod(tmp.path, 0o755)
        let store = tmp.path + "/store"
        let lagging = tmp.path + "/lagging"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        try copyStore(store, lagging)
        try await makeSyncedStore(at: store, practice: practice, days: [2])
        // The copy's views stop at day 1; its log and state are day 2's.
        for sub in ["log", "state"] {
            try FileManager.default.removeItem(atPath: lagging + "/" + sub)
            try FileManager.default.copyItem(atPath: store + "/" + sub, toPath: lagging + "/" + sub)
        }
        let ids = try #require(parseJSON(try await cli(["appointments", "--json", "--store", store]).stdout) as? [[String: Any]])
        let appointment = try #require(ids.first?["appointment_id"] as? String)
        let head = try await verifiedHead(store)
        let seq = try #require(UInt64(head.split(separator: ":")[0])) / 2

        var expected: [String] = []
        for args in stableReads(store, appointment: appointment, seq: seq) {
            let r = try await cli(args)
            expectSuccess(r)
            expected.append(r.stdout)
        }
        try chmodReadOnly(lagging)
        let before = snapshot(lagging)
        for (i, args) in stableReads(lagging, appointment: appointment, seq: seq).enumerated() {
            let r = try await cli(args)
            expectSuccess(r)
            #expect(r.stdout == expected[i], "\(r.label) differs on the read-only copy")
            #expect(r.stderrLines.count <= (args.contains("--views") ? 2 : 1), "\(r.label): \(r.stderr)")
            if args[0] == "verify" { #expect(r.stderr.contains("read-only: this verify's outcome was not recorded"), "\(r.stderr)") }
            if args[0] == "appointments" { #expect(r.stderr.contains("note: the store is read-only"), "\(r.stderr)") }
        }
        let bundle = try await cli(["export", "--bundle", tmp.path + "/bundle", "--store", lagging])
        expectSuccess(bundle)
        // A rebuild would only fold into memory: refused, in one line, rather than "rebuilt".
        expectCleanFailure(try await cli(["rebuild", "--store", lagging]), mentioning: ["read-only", "would save nothing"])
        // The commands that must write it are refused in one line saying so (they failed on the
        // first file they touched: SQLite's "readonly database", or "the store must belong to
        // the user running SyncLedger", which it did).
        for args in [
            syncArgs(store: lagging, baseURL: "http://127.0.0.1:9/api/v1", now: "2026-11-21T10:00:00Z"),
            ["forget", "--store", lagging, "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"],
            ["repair", "--store", lagging, "--accept-loss", "test"],
        ] {
            let refused = try await cli(args, env: keyEnv)
            expectCleanFailure(refused, mentioning: ["is read-only for this user", "`\(args[0])` must write it", "store's owner"])
        }
        expectSameSnapshot(before, snapshot(lagging), "reading the read-only copy")

        // As an unprivileged user, where we can switch to one.
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else { return }
        let binary = try Repo.requireBinary()
        let exe = tmp.path + "/syncledger"
        try FileManager.default.copyItem(atPath: binary, toPath: exe)
        chmod(exe, 0o755)
        let theirs = tmp.path + "/theirs"
        try FileManager.default.copyItem(atPath: lagging, toPath: theirs)
        _ = try python("import os,sys\nfor r,ds,fs in os.walk(sys.argv[1]):\n  os.chmod(r,0o755)", [theirs])
        try chownTree(theirs, uid: 65534)
        try chmodReadOnly(theirs)
        let theirsBefore = snapshot(theirs)
        for (i, args) in stableReads(theirs, appointment: appointment, seq: seq).enumerated() {
            let r = try await Launched(args, timeout: 120, executable: "/usr/bin/setpriv",
                                       arguments: ["--reuid=65534", "--regid=65534", "--clear-groups", exe] + args).wait()
            expectSuccess(r)
            #expect(r.stdout == expected[i], "\(r.label) as nobody differs: \(r.stderr)")
        }
        expectSameSnapshot(theirsBefore, snapshot(theirs), "reading as nobody")
        // A store this user may not read (root's, owner-only) is said to be so, not "not a store".
        let args = ["status", "--store", store]
        let denied = try await Launched(args, timeout: 120, executable: "/usr/bin/setpriv",
                                        arguments: ["--reuid=65534", "--regid=65534", "--clear-groups", exe] + args).wait()
        expectCleanFailure(denied, mentioning: ["cannot read", "Permission denied", "the user the store belongs to"])
    }

    /// Garbage in projections.sqlite: one line saying it is damaged and that `rebuild` recreates
    /// it; `rebuild` moves it aside and the views answer as before.
    @Test func damagedViewsDatabaseSaysRebuildAndRebuildWorks() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("damaged")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let before = try await cli(["appointments", "--json", "--store", store])
        try Data(repeating: 0x41, count: 64 << 10).write(to: URL(fileURLWithPath: store + "/projections.sqlite"))
        for args in [["appointments"], ["status"], ["history", "x"], ["sync-logs"], ["verify", "--views"]] {
            let r = try await cli(args + ["--store", store])
            expectCleanFailure(r, mentioning: ["projections.sqlite is damaged", "syncledger rebuild"], allowStdout: args[0] == "verify")
        }
        let rebuild = try await cli(["rebuild", "--store", store])
        expectSuccess(rebuild)
        #expect(rebuild.stderr.contains("moved it aside"), "\(rebuild.stderr)")
        let files = try FileManager.default.contentsOfDirectory(atPath: store)
        #expect(files.contains { $0.hasPrefix("projections.sqlite.damaged-") }, "\(files)")
        let after = try await cli(["appointments", "--json", "--store", store])
        #expect(after.stdout == before.stdout)
        // The damage check opens the views in place: no temporary copy of the file (which, read
        // into memory, cost a 1M-event store's rebuild 0.7 GB of RSS).
        let noTemp = try await cli(["rebuild", "--store", store], env: ["TMPDIR": tmp.path + "/no-such-dir"])
        expectSuccess(noTemp)

        // A file that opens, with one page damaged: the root of the appointments table. The read
        // that meets it says so; `rebuild` (whose swap drops that table) moves the file aside and
        // folds the views into a new one, rather than failing on the page it was told to replace.
        try damageRootPage(of: "appointments", views: store + "/projections.sqlite")
        expectCleanFailure(try await cli(["appointments", "--store", store]), mentioning: ["projections.sqlite is damaged"])
        let again = try await cli(["rebuild", "--store", store])
        expectSuccess(again)
        #expect(again.stderr.contains("moved it aside"), "\(again.stderr)")
        #expect(try await cli(["appointments", "--json", "--store", store]).stdout == before.stdout)
        expectSuccess(try await cli(["verify", "--views", "--store", store]))

        // projection_state's index emptied (a valid leaf page with no cells): its lookups find no
        // checkpoint and fail nothing. Every read said SQLite's "table appointments already
        // exists" (a read-only copy too), and `rebuild` left the index as it was (hostile test).
        let emptyIndex = """
            import sqlite3,struct,sys
            c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)')
            root,=c.execute("SELECT rootpage FROM sqlite_master WHERE type='index' AND tbl_name='projection_state'").fetchone()
            size,=c.execute('PRAGMA page_size').fetchone(); c.close()
            page=struct.pack('>BHHHB',0x0A,0,0,size%65536,0)
            f=open(sys.argv[1],'r+b'); f.seek((root-1)*size); f.write(page+bytes(size-len(page))); f.close()
            """
        #expect(try python(emptyIndex, [store + "/projections.sqlite"]) == 0)
        let copy = tmp.path + "/read-only-copy"
        try FileManager.default.copyItem(atPath: store, toPath: copy)
        try chmodReadOnly(copy)
        for target in [store, copy] {
            for args in [["appointments"], ["status"], ["upcoming"]] {
                expectCleanFailure(try await cli(args + ["--store", target]),
                                   mentioning: ["projections.sqlite is damaged", "no checkpoint of the", "syncledger rebuild"])
            }
        }
        let third = try await cli(["rebuild", "--store", store])
        expectSuccess(third)
        #expect(third.stderr.contains("moved it aside"), "\(third.stderr)")
        #expect(try await cli(["appointments", "--json", "--store", store]).stdout == before.stdout)
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
    }

    /// SQLite finds a damaged page only when it reads it, and `status` reads few: a command that
    /// meets one records it (`state/views-damaged.json`), `status` fails on it and the read
    /// commands warn, until a rebuild of every view or a clean `verify --views` clears it.
    @Test func damagedViewsMetByOneCommandShowInStatusUntilRebuilt() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("damaged-status")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let marker = store + "/state/views-damaged.json"
        func status() async throws -> (Int32, [String: Any]) {
            let r = try await cli(["status", "--json", "--store", store, "--max-age", "100000"])
            return (r.status, try #require(parseJSON(r.stdout) as? [String: Any], "\(r.stdout) \(r.stderr)"))
        }
        func damage(_ table: String, index: Bool = false) throws {
            try damageRootPage(of: table, index: index, views: store + "/projections.sqlite")
        }
        #expect(try await status().0 == 0)

        // A table `status` does not read: it still says ok, until `verify --views` meets the page.
        try damage("appointments_objects")
        #expect(try await status().0 == 0)
        // An auditor's read-only copy meets it too, and is not written.
        let copy = tmp.path + "/read-only-copy"
        try FileManager.default.copyItem(atPath: store, toPath: copy)
        try chmodReadOnly(copy)
        expectCleanFailure(try await cli(["verify", "--views", "--store", copy]), mentioning: ["damaged"], allowStdout: true)
        #expect(!FileManager.default.fileExists(atPath: copy + "/state/views-damaged.json"))
        let verify = try await cli(["verify", "--views", "--store", store])
        expectCleanFailure(verify, mentioning: ["projections.sqlite is damaged", "syncledger rebuild"], allowStdout: true)
        var (code, obj) = try await status()
        #expect(code == 1)
        let seen = try #require(obj["views_damaged"] as? [String: Any], "\(obj)")
        #expect(seen["command"] as? String == "verify")
        #expect((seen["error"] as? String ?? "").contains("SQLite error 11"), "\(seen)")
        #expect((obj["problems"] as? [String] ?? []).contains { $0.contains("found damaged by `verify`") && $0.contains("syncledger rebuild") })
        let text = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(text.status == 1 && text.stdout.contains("problem: the views database was found damaged by `verify`"), "\(text.stdout)")
        // The same in another zone: the problem's time in it (it was UTC).
        let denver = try await cli(["status", "--store", store, "--max-age", "100000", "--timezone", "America/Denver"])
        let problem = denver.stdout.split(separator: "\n").first { $0.hasPrefix("problem: the views database was found damaged") } ?? ""
        #expect(denver.status == 1 && (problem.contains(" MST (") || problem.contains(" MDT (")) && !problem.contains("Z ("), "\(denver.stdout)\(denver.stderr)")
        // A read command that does not meet the page answers, and warns.
        let read = try await cli(["appointments", "--store", store])
        expectSuccess(read)
        #expect(read.stderr.contains("found damaged by `verify`"), "\(read.stderr)")
        let saved = try Data(contentsOf: URL(fileURLWithPath: marker))

        let rebuild = try await cli(["rebuild", "--store", store])
        expectSuccess(rebuild)
        #expect(!rebuild.stderr.contains("found damaged"), "\(rebuild.stderr)")
        (code, obj) = try await status()
        #expect(code == 0)
        #expect(obj["views_damaged"] is NSNull)
        #expect(!FileManager.default.fileExists(atPath: marker))

        // Met by a read command; the first record stands while later commands meet it again.
        try damage("appointments")
        expectCleanFailure(try await cli(["appointments", "--store", store]), mentioning: ["projections.sqlite is damaged"])
        (code, obj) = try await status()
        #expect(code == 1)
        let first = try #require(obj["views_damaged"] as? [String: Any], "\(obj)")
        #expect(first["command"] as? String == "appointments")
        expectCleanFailure(try await cli(["upcoming", "--store", store]), mentioning: ["projections.sqlite is damaged"])
        #expect((try await status().1["views_damaged"] as? [String: Any])?["at"] as? String == first["at"] as? String)
        expectSuccess(try await cli(["rebuild", "--store", store]))
        #expect(try await status().0 == 0)

        // A `verify --views` that reads every page without a fault clears a record too.
        try saved.write(to: URL(fileURLWithPath: marker))
        #expect(try await status().0 == 1)
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        #expect(try await status().0 == 0)
        #expect(!FileManager.default.fileExists(atPath: marker))

        // A damaged index page, which the row-by-row comparison does not read: `verify --views`
        // still finds it (SQLite's quick_check) and records it, rather than clearing anything.
        try saved.write(to: URL(fileURLWithPath: marker))
        try damage("appointments", index: true)
        expectCleanFailure(try await cli(["verify", "--views", "--store", store]),
                           mentioning: ["projections.sqlite is damaged", "quick_check"], allowStdout: true)
        #expect(try await status().0 == 1)
        expectSuccess(try await cli(["rebuild", "--store", store]))
        #expect(try await status().0 == 0)

        // Met by `sync` (the nightly command), which reads the views to tell what changed.
        try damage("appointments_objects")
        let day = try #require(practice.day(2))
        try await withFakeServer(day) { server, url in
            server.setState(day.state)
            let r = try await cli(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv)
            expectCleanFailure(r, mentioning: ["projections.sqlite is damaged", "syncledger rebuild"], allowStdout: true)
        }
        (code, obj) = try await status()
        #expect(code == 1)
        #expect((obj["views_damaged"] as? [String: Any])?["command"] as? String == "sync", "\(obj)")
        expectSuccess(try await cli(["rebuild", "--store", store]))
        #expect(try await status().1["views_damaged"] is NSNull)

        // Met by `sync` only after its events are appended (a table it writes but does not read
        // first): the run stands, and the line says a rebuild mends the views, not that the next
        // command catches them up (no command would: each meets the same page).
        try damage("appointment_locations")
        let day3 = try #require(practice.day(3))
        try await withFakeServer(day3) { server, url in
            server.setState(day3.state)
            let r = try await cli(syncArgs(store: store, baseURL: url, now: day3.now), env: keyEnv)
            #expect(r.status == 2, "\(r.status) \(r.stdout) \(r.stderr)")
            #expect(r.stderr.contains("durable in the log") && r.stderr.contains("views could not be updated"), "\(r.stderr)")
            #expect(r.stderr.contains("the views database is damaged: `syncledger rebuild` recreates it"), "\(r.stderr)")
            #expect(!r.stderr.contains("the next command catches them up"), "\(r.stderr)")
        }
        // Recorded as met by `sync`; `status`, catching the views up, meets the page too.
        let record = try #require(parseJSON(String(decoding: try Data(contentsOf: URL(fileURLWithPath: marker)), as: UTF8.self)) as? [String: Any])
        #expect(record["command"] as? String == "sync", "\(record)")
        expectCleanFailure(try await cli(["status", "--store", store, "--max-age", "100000"]),
                           mentioning: ["projections.sqlite is damaged", "syncledger rebuild"])
        expectSuccess(try await cli(["rebuild", "--store", store]))
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        #expect(try await status().1["views_damaged"] is NSNull)
    }

    /// A sync interrupted by SIGINT or SIGTERM while fetching stops, records its run as failed
    /// ("interrupted") and exits 130 or 143; a run killed outright shows as died in `status`.
    @Test func interruptedAndDiedRunsAreFailures() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("runs")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let day = try #require(practice.day(2))
        try await withFakeServer(day) { server, url in
            for (sig, code) in [(SIGINT, Int32(130)), (SIGTERM, Int32(143)), (SIGKILL, Int32(-1))] {
                server.clearRequests()
                server.inject(.delay(30), path: "/appointments", page: 2)
                let sync = try Launched(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv, timeout: 60)
                // The fake records a request when it answers: once page 1 is answered, the sync
                // asks for page 2 at once, and that answer is 30 s away.
                let stalled = await waitUntil(timeout: 20) {
                    server.requests().contains { $0.path == "/appointments" && ($0.query["page"] ?? "1") == "1" }
                }
                #expect(stalled, "the sync never fetched page 1")
                try await Task.sleep(nanoseconds: 500_000_000)
                kill(sync.pid, sig)
                let r = await sync.wait()
                server.clearFaults()
                if sig == SIGKILL {
                    #expect(r.signaled)
                    let status = try await cli(["status", "--json", "--store", store, "--max-age", "100000"])
                    #expect(status.status == 1)
                    let obj = try #require(parseJSON(status.stdout) as? [String: Any])
                    let runs = try #require(obj["runs"] as? [[String: Any]])
                    let daily = try #require(runs.first { $0["sync_type"] as? String == "automated_daily" })
                    #expect(daily["status"] as? String == "failed")
                    let failure = try #require(daily["last_failure"] as? [String: Any])
                    #expect((failure["reason"] as? String ?? "").hasPrefix("died"), "\(failure)")
                    #expect(daily["last_success"] is [String: Any])
                    let text = try await cli(["status", "--store", store, "--max-age", "100000"])
                    #expect(text.stdout.contains("problem: the last automated_daily run failed: died"), "\(text.stdout)")
                } else {
                    #expect(!r.signaled && r.status == code, "\(r.label) exited \(r.status): \(r.stderr)")
                    #expect(r.stderr.contains("interrupted"), "\(r.stderr)")
                    // Its summary says so too: the bare counts read as a run that went well.
                    #expect(r.stdout.hasPrefix("interrupted, recorded as failed: "), "\(r.stdout)")
                    let logs = try #require(parseJSON(try await cli(["sync-logs", "--json", "--store", store]).stdout) as? [[String: Any]])
                    #expect(logs.first?["status"] as? String == "failed" && logs.first?["error_message"] as? String == "interrupted",
                            "\(logs.first ?? [:])")
                    expectSuccess(try await cli(["verify", "--store", store]))
                }
            }
            // The next sync closes the died run out and completes.
            let r = try await cli(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv)
            expectSuccess(r)
            let status = try await cli(["status", "--store", store, "--max-age", "100000"])
            #expect(status.status == 0, "\(status.stdout)")
        }
    }

    /// A webhook inbox `status` cannot read (a FIFO put there) is a problem, exit 1, named as a
    /// server starting would name it: it read as an empty inbox, and `status` said "ok".
    @Test func anInboxStatusCannotReadIsAProblem() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("inbox")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let inbox = store + "/state/webhook-inbox.log"
        let fine = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(fine.status == 0, "\(fine.stdout)")
        try? FileManager.default.removeItem(atPath: inbox)
        #expect(mkfifo(inbox, 0o600) == 0)
        let r = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(r.status == 1)
        #expect(r.stdout.contains("problem: the webhook inbox \(inbox) is not a regular file: move it away, and serve makes a new one"), "\(r.stdout)")
    }
}
