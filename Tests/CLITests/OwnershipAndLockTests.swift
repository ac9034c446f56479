import FakeIntakeQ
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Entries under `dir` (itself included) whose owner is not `uid`, as "path (uid N)".
private func entriesNotOwned(by uid: uid_t, under dir: String) -> [String] {
    var out: [String] = []
    var st = stat()
    if lstat(dir, &st) == 0, st.st_uid != uid { out.append(". (uid \(st.st_uid))") }
    guard let walker = FileManager.default.enumerator(atPath: dir) else { return ["cannot list \(dir)"] }
    while let rel = walker.nextObject() as? String {
        if lstat(dir + "/" + rel, &st) == 0, st.st_uid != uid { out.append("\(rel) (uid \(st.st_uid))") }
    }
    return out
}

/// A lock file (the views' rebuild lock, the log's LOCK) held by this process as another
/// process holds it, its pid written in the file, until `release()` (which closes it once: a
/// second close could close a descriptor another test's thread has just opened).
private final class HeldLock {
    private var fd: Int32

    init(_ path: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        _ = ftruncate(fd, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// The rebuild lock of `store`'s views.
    static func rebuild(of store: String) throws -> HeldLock { try HeldLock(store + "/projections.sqlite.rebuild-lock") }

    func release() {
        if fd >= 0 { close(fd) }
        fd = -1
    }
}

/// Makes the `appointments` view's schema version another than this syncledger's (as after an
/// upgrade), so the next command that opens the views must rebuild it.
private func makeViewsStale(_ store: String) throws {
    let stale = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        + "c.execute(\"UPDATE projection_state SET schema_version = schema_version + 100 WHERE name = 'appointments'\"); c.commit()"
    #expect(try python(stale, [store + "/projections.sqlite"]) == 0)
}

/// Waits for `command`'s note that it waits for another rebuild, naming this process (which
/// holds the lock, `HeldLock`).
private func expectWaitingNote(_ command: Launched) async {
    #expect(await waitUntil(timeout: 30) { command.child.stderrSoFar.contains("waiting for another rebuild") },
            "no waiting note: \(command.child.stderrSoFar)")
    #expect(command.child.stderrSoFar.contains("(pid \(getpid()))"), "\(command.child.stderrSoFar)")
}

/// Sends SIGINT to `command` once it says it waits for another rebuild; it must end within
/// 10 s with exit 130 and no trace. Returns its result.
private func interruptWhileWaiting(_ command: Launched) async -> RunResult {
    await expectWaitingNote(command)
    let signalled = Date()
    kill(command.pid, SIGINT)
    let r = await command.wait()
    #expect(Date().timeIntervalSince(signalled) < 10, "\(r.label) took \(Date().timeIntervalSince(signalled)) s to stop")
    #expect(!r.signaled && r.status == 130, "\(r.label) exited \(r.status): \(r.stderr)")
    #expect(!traceMarkers.contains { r.stderr.contains($0) }, "\(r.stderr)")
    return r
}

extension CLIBinaryTests {
    /// Root running commands on another user's store (sync, rebuild, verify, status) leaves
    /// every file it makes there owned by the store's owner, who can then go on using the store.
    /// Before, the rebuild lock and state/verify.json (and new keys and log files) stayed root's,
    /// owner-only, and the owner's next rebuild failed with "Permission denied".
    @Test func filesRootMakesInAStoreBelongToItsOwner() async throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            // Only root can make files for someone else; CI runs as root.
            #expect(ProcessInfo.processInfo.environment["CI"] == nil, "CI must run this test as root with setpriv")
            return
        }
        let practice = try Practice.load()
        let tmp = TempDir("owner")
        defer { tmp.remove() }
        chmod(tmp.path, 0o755)
        let store = tmp.path + "/store"
        let nobody: uid_t = 65534
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        try chownTree(store, uid: Int(nobody))
        // The owner's views were never opened by root: the lock and the state files are new.
        for name in ["projections.sqlite.rebuild-lock", "state/verify.json"] { unlink(store + "/" + name) }

        // Root works on it: a sync (new events, new patients' keys), a rebuild, a verify, status.
        try await makeSyncedStore(at: store, practice: practice, days: [2, 3])
        expectSuccess(try await cli(["rebuild", "--store", store]))
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        _ = try await cli(["status", "--store", store, "--max-age", "100000"])
        for name in ["projections.sqlite.rebuild-lock", "state/verify.json"] {
            #expect(FileManager.default.fileExists(atPath: store + "/" + name), "root's commands made no \(name)")
        }
        let strays = entriesNotOwned(by: nobody, under: store)
        #expect(strays.isEmpty, "owned by someone else than the store's owner after root's commands: \(strays)")

        // The owner goes on: a rebuild and a verify as nobody.
        let exe = tmp.path + "/syncledger"
        try FileManager.default.copyItem(atPath: try Repo.requireBinary(), toPath: exe)
        chmod(exe, 0o755)
        for args in [["rebuild", "--store", store], ["verify", "--views", "--store", store]] {
            let r = try await Launched(args, timeout: 120, executable: "/usr/bin/setpriv",
                                       arguments: ["--reuid=\(nobody)", "--regid=\(nobody)", "--clear-groups", exe] + args).wait()
            expectSuccess(r)
        }
    }

    /// The store's owner plants a symlink where root's commands open a file (the views, their
    /// rebuild lock, the writer's LOCK, the head record), pointing at a file of root's: every
    /// command root runs there fails in one line naming the link, and that file keeps its owner,
    /// its bytes and its name (it was renamed aside and replaced by the views before). A FIFO in
    /// the views' place fails in one line too, rather than hang.
    @Test func rootFollowsNoSymlinkPlantedInAStore() async throws {
        guard getuid() == 0 else {
            #expect(ProcessInfo.processInfo.environment["CI"] == nil, "CI must run this test as root")
            return
        }
        let practice = try Practice.load()
        let tmp = TempDir("owner-links")
        defer { tmp.remove() }
        chmod(tmp.path, 0o755)
        let original = tmp.path + "/original"
        try await makeSyncedStore(at: original, practice: practice, days: [1])
        let day = try #require(practice.day(2))
        let bytes = Data("root's own\n".utf8)
        for name in ["projections.sqlite", "projections.sqlite.rebuild-lock", "log/LOCK", "state/head"] {
            let store = tmp.path + "/store-" + name.replacingOccurrences(of: "/", with: "-")
            try FileManager.default.copyItem(atPath: original, toPath: store)
            let decoys = tmp.path + "/decoys-" + name.replacingOccurrences(of: "/", with: "-")
            try FileManager.default.createDirectory(atPath: decoys, withIntermediateDirectories: false)
            let precious = decoys + "/roots-file"
            try bytes.write(to: URL(fileURLWithPath: precious))
            chmod(precious, 0o600)
            try chownTree(store, uid: 65534)
            for suffix in ["", "-wal", "-shm"] where name == "projections.sqlite" { unlink(store + "/" + name + suffix) }
            unlink(store + "/" + name)
            try FileManager.default.createSymbolicLink(atPath: store + "/" + name, withDestinationPath: precious)
            for args in [["rebuild"], ["status"], ["appointments"], ["verify"]] {
                expectCleanFailure(try await cli(args + ["--store", store]), mentioning: ["symbolic link", "sudo -u"])
            }
            try await withFakeServer(day) { _, url in
                expectCleanFailure(try await cli(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv), mentioning: ["symbolic link"])
            }
            var st = stat()
            #expect(stat(precious, &st) == 0 && st.st_uid == 0, "\(name): root's file was given away (uid \(st.st_uid))")
            #expect(FileManager.default.contents(atPath: precious) == bytes, "\(name): root's file was changed")
            #expect(try FileManager.default.contentsOfDirectory(atPath: decoys) == ["roots-file"], "\(name): files were made beside root's")
        }
        // A FIFO where the views are: one line, no hang (as root or not).
        let fifoStore = tmp.path + "/fifo"
        try FileManager.default.copyItem(atPath: original, toPath: fifoStore)
        for suffix in ["", "-wal", "-shm"] { unlink(fifoStore + "/projections.sqlite" + suffix) }
        #expect(mkfifo(fifoStore + "/projections.sqlite", 0o600) == 0)
        for args in [["status"], ["rebuild"]] {
            expectCleanFailure(try await cli(args + ["--store", fifoStore], timeout: 30),
                               mentioning: ["it is a FIFO", "move it out of the way and `syncledger rebuild`"])
        }
        // A directory: said as one, with the same way out; moved away, rebuild makes the views.
        unlink(fifoStore + "/projections.sqlite")
        try FileManager.default.createDirectory(atPath: fifoStore + "/projections.sqlite", withIntermediateDirectories: false)
        expectCleanFailure(try await cli(["appointments", "--store", fifoStore]), mentioning: ["it is a directory", "move it out of the way"])
        try FileManager.default.removeItem(atPath: fifoStore + "/projections.sqlite")
        expectSuccess(try await cli(["rebuild", "--store", fifoStore]))
    }

    /// A rebuild that has to wait for another process's rebuild (its lock held) says so, naming
    /// that process; Ctrl-C stops the wait at once (exit 130, nothing changed); once the lock is
    /// free a waiting rebuild completes, and leaves no WAL file behind (it closes the views).
    @Test func aRebuildWaitingForAnotherSaysSoAndCtrlCStopsIt() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("rebuild-wait")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        let before = try await cli(["appointments", "--json", "--store", store])
        expectSuccess(before)

        let held = try HeldLock.rebuild(of: store)
        defer { held.release() }

        let r = await interruptWhileWaiting(try Launched(["rebuild", "--store", store], timeout: 60))
        #expect(r.stderr.contains("nothing was changed"), "\(r.stderr)")
        #expect(!r.stdout.contains("rebuilt"), "\(r.stdout)")
        #expect(try await cli(["appointments", "--json", "--store", store]).stdout == before.stdout)

        // Waiting, then the lock is released: the rebuild goes on and completes.
        let waiting = try Launched(["rebuild", "--store", store], timeout: 60)
        await expectWaitingNote(waiting)
        held.release()
        let done = await waiting.wait()
        expectSuccess(done)
        #expect(done.stdout.contains("rebuilt appointments"), "\(done.stdout)")
        // Closed at the end, the views' WAL was copied into the file and emptied (it stayed at
        // its largest before: hundreds of MB after a large rebuild).
        let wal = (try? FileManager.default.attributesOfItem(atPath: store + "/projections.sqlite-wal")[.size] as? Int) ?? 0
        #expect(wal == 0, "the rebuild left \(wal) bytes of WAL")
        #expect(try await cli(["appointments", "--json", "--store", store]).stdout == before.stdout)
    }

    /// A sync whose views must be rebuilt first (here their schema version is not this
    /// syncledger's, as after an upgrade) while another process rebuilds them says that it
    /// waits and for whom, and Ctrl-C stops it before the run begins: nothing fetched or
    /// recorded, exit 130. Before, it waited silently and ignored the first Ctrl-C until the
    /// other rebuild ended. Once the other process lets go, a waiting sync rebuilds and runs.
    @Test func aSyncWaitingForAnotherRebuildSaysSoAndCtrlCStopsIt() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("sync-wait")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let eventsBefore = try await exportedEvents(store).count
        try makeViewsStale(store)

        let held = try HeldLock.rebuild(of: store)
        defer { held.release() }

        let day = try #require(practice.day(2))
        try await withFakeServer(day) { server, url in
            let r = await interruptWhileWaiting(
                try Launched(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv, timeout: 60))
            #expect(r.stderr.contains("nothing was fetched or recorded"), "\(r.stderr)")
            #expect(server.requests().isEmpty, "the interrupted sync called IntakeQ: \(server.requests().map(\.path))")
            #expect(try await exportedEvents(store).count == eventsBefore, "the interrupted sync appended events")

            // Waiting, then the other process lets go: the sync rebuilds the views and runs.
            let waiting = try Launched(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv, timeout: 60)
            await expectWaitingNote(waiting)
            held.release()
            let done = await waiting.wait()
            expectSuccess(done)
            #expect(!server.requests().isEmpty)
        }
        #expect(try await exportedEvents(store).count > eventsBefore)
        expectSuccess(try await cli(["verify", "--store", store, "--views"]))
    }

    /// `sync --wait-lock` waiting for another writer of the log (another sync) says so, and
    /// Ctrl-C ends the wait at once with nothing recorded. Before, the wait ignored the signal
    /// until the other sync ended, and then recorded a failed ("interrupted") run: a stopped
    /// cron job made a good night look failed in `status`.
    @Test func aSyncWaitingForAnotherSyncStopsOnCtrlCAndRecordsNothing() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("sync-wait-writer")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let eventsBefore = try await exportedEvents(store).count
        let lock = try HeldLock(store + "/log/LOCK")
        defer { lock.release() }
        let day = try #require(practice.day(2))
        try await withFakeServer(day) { server, url in
            let sync = try Launched(syncArgs(store: store, baseURL: url, now: day.now, extra: ["--wait-lock", "120"]), env: keyEnv)
            #expect(await waitUntil(timeout: 30) { sync.child.stderrSoFar.contains("waiting up to 120 s for the store's writer lock: store is locked by pid \(getpid())") },
                    "no waiting note: \(sync.child.stderrSoFar)")
            #expect(sync.child.stderrSoFar.contains("locked by pid \(getpid())"), "\(sync.child.stderrSoFar)")
            let signalled = Date()
            kill(sync.pid, SIGINT)
            let r = await sync.wait()
            #expect(Date().timeIntervalSince(signalled) < 10, "\(r.label) took \(Date().timeIntervalSince(signalled)) s to stop")
            #expect(!r.signaled && r.status == 130, "\(r.label) exited \(r.status): \(r.stderr)")
            #expect(r.stderr.contains("sync interrupted while it waited for another writer to finish, before the run began: nothing was fetched or recorded"),
                    "\(r.stderr)")
            #expect(server.requests().isEmpty)
        }
        lock.release()
        #expect(try await exportedEvents(store).count == eventsBefore, "the interrupted sync appended events")
        let status = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(status.status == 0 && !status.stdout.contains("failed"), "\(status.stdout)")
    }

    /// A read-only copy whose views must be rebuilt (another schema version) answers from views
    /// rebuilt in memory, and its note says so (it said "folded 0 event(s)", as if nothing was done).
    @Test func aReadOnlyCopyWithStaleViewsSaysTheyWereRebuiltInMemory() async throws {
        let tmp = TempDir("readonly-stale")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let expected = try await cli(["appointments", "--store", store])
        expectSuccess(expected)
        try makeViewsStale(store)
        try chmodReadOnly(store)
        let r = try await cli(["appointments", "--store", store])
        expectSuccess(r)
        #expect(r.stdout == expected.stdout)
        #expect(r.stderr.contains("note: the store is read-only: a view had to be rebuilt from the log; rebuilt in memory"), "\(r.stderr)")
        #expect(!r.stderr.contains("folded 0 event(s)"), "\(r.stderr)")
    }

    /// `forget` says so too when it must wait for another process's rebuild of the views (it
    /// went on waiting silently).
    @Test func forgetWaitingForAnotherRebuildSaysSo() async throws {
        let tmp = TempDir("forget-wait")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        try makeViewsStale(store)
        let held = try HeldLock.rebuild(of: store)
        defer { held.release() }
        let forget = try Launched(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"])
        await expectWaitingNote(forget)
        held.release()
        let done = await forget.wait()
        expectSuccess(done)
        #expect(done.stdout.contains("forgot patient \(PrivacyFixture.forgotten.id)"), "\(done.stdout)")
    }

    /// `forget --wait-lock` and `repair --wait-lock` waiting for another writer of the log say so
    /// once, as `sync` does (they waited without a word), and go on when it lets go; without
    /// `--wait-lock` they fail at once, saying what to do and that nothing was changed.
    @Test func forgetAndRepairWaitingForAnotherWriterSaySo() async throws {
        let tmp = TempDir("forget-repair-writer")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1, 2])
        let forgetArgs = ["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"]
        let note = "waiting up to 120 s for the store's writer lock: store is locked by pid \(getpid())"
        do {
            let held = try HeldLock(store + "/log/LOCK")
            defer { held.release() }
            let refused = try await cli(forgetArgs)
            #expect(refused.status == 1 && refused.stderr.contains("store is locked by pid \(getpid())")
                    && refused.stderr.contains("pass --wait-lock SECONDS to wait for it; nothing was changed"), "\(refused.stderr)")
            let forget = try Launched(forgetArgs + ["--wait-lock", "120"])
            #expect(await waitUntil(timeout: 30) { forget.child.stderrSoFar.contains(note) }, "no waiting note: \(forget.child.stderrSoFar)")
            held.release()
            let done = await forget.wait()
            expectSuccess(done)
            #expect(done.stdout.contains("forgot patient \(PrivacyFixture.forgotten.id)"), "\(done.stdout)")
        }
        let segment = try segments(store)[0]
        let batches = try segmentBatches(segment)
        truncateFile(segment, to: batches[batches.count - 3].end)
        let held = try HeldLock(store + "/log/LOCK")
        defer { held.release() }
        // Two repairs wait for the lock, each having seen the loss: the one that gets the lock
        // second finds it recorded and records nothing (it recorded a second loss, against a
        // stale head, that `status` showed for good: cold review).
        let repairs = try (0..<2).map { _ in try Launched(["repair", "--store", store, "--accept-loss", "restored from backup", "--wait-lock", "120"]) }
        for repair in repairs {
            #expect(await waitUntil(timeout: 30) { repair.child.stderrSoFar.contains(note) }, "no waiting note: \(repair.child.stderrSoFar)")
        }
        held.release()
        var outputs: [String] = []
        for repair in repairs {
            let repaired = await repair.wait()
            expectSuccess(repaired)
            outputs.append(repaired.stdout)
        }
        #expect(outputs.filter { $0.contains("recorded the loss as seq") }.count == 1, "\(outputs)")
        #expect(outputs.filter { $0.contains("nothing to repair: while this repair waited for the lock, another recorded the loss") }.count == 1,
                "\(outputs)")
        let log = try await cli(["log", "--store", store])
        expectSuccess(log)
        #expect(log.stdout.components(separatedBy: "\"ledger.loss_recorded\"").count - 1 == 1, "\(log.stdout.suffix(2000))")
    }

    /// `repair` records the loss, then deletes the views and folds new ones from the log: it
    /// neither waits for another process's rebuild of the old views (it waited silently, and a
    /// Ctrl-C then left their checkpoints, evidence of the lost head, beside the loss record, so
    /// that every later command refused the store and a second repair recorded the loss again)
    /// nor reads them.
    @Test func repairDoesNotWaitForAnotherRebuildOfTheOldViews() async throws {
        let tmp = TempDir("repair-wait")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1, 2])
        let segment = try segments(store)[0]
        let batches = try segmentBatches(segment)
        let cutTo = batches[batches.count - 3]
        truncateFile(segment, to: cutTo.end)
        let held = try HeldLock.rebuild(of: store)
        defer { held.release() }
        let repair = try await cli(["repair", "--store", store, "--accept-loss", "restored from backup"], timeout: 30)
        expectSuccess(repair)
        #expect(repair.stdout.contains("recorded the loss as seq \(cutTo.lastSeq + 1)") && repair.stdout.contains("views rebuilt"),
                "\(repair.stdout)")
        #expect(!repair.stderr.contains("waiting"), "\(repair.stderr)")
        let verify = try await cli(["verify", "--store", store, "--views"])
        expectSuccess(verify)
        #expect(verify.stderr.contains("a loss of acknowledged events was recorded at seq \(cutTo.lastSeq + 1)"), "\(verify.stderr)")
        #expect(try await cli(["repair", "--store", store, "--accept-loss", "again"]).stdout.contains("nothing to repair"))
    }

    /// A damaged `projections.sqlite` that is a symlink: the file it points to is moved aside
    /// where it is, the link kept, and the new views are made where the link points.
    @Test func damagedViewsBehindASymlinkAreMovedAsideWhereTheyAre() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("views-link")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let before = try await cli(["appointments", "--json", "--store", store])
        expectSuccess(before)
        let elsewhere = tmp.path + "/fast-disk"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let views = store + "/projections.sqlite"
        for suffix in ["-wal", "-shm"] { unlink(views + suffix) }
        try FileManager.default.moveItem(atPath: views, toPath: elsewhere + "/views.sqlite")
        try FileManager.default.createSymbolicLink(atPath: views, withDestinationPath: elsewhere + "/views.sqlite")
        // Damaged past SQLite's header (a file without even the header behind a link is refused
        // as a link to the wrong file: aLinkToAFileThatIsNoViewsFileIsLeftAlone).
        var damaged = try Data(contentsOf: URL(fileURLWithPath: elsewhere + "/views.sqlite"))
        damaged.replaceSubrange(100..<damaged.count, with: Data(repeating: 0x41, count: damaged.count - 100))
        try damaged.write(to: URL(fileURLWithPath: elsewhere + "/views.sqlite"))

        let rebuild = try await cli(["rebuild", "--store", store])
        expectSuccess(rebuild)
        #expect(rebuild.stderr.contains("moved it aside to ") && rebuild.stderr.contains("fast-disk/views.sqlite.damaged-"), "\(rebuild.stderr)")
        let link = try? FileManager.default.destinationOfSymbolicLink(atPath: views)
        #expect(link == elsewhere + "/views.sqlite", "projections.sqlite is no longer the link: \(String(describing: link))")
        let moved = try FileManager.default.contentsOfDirectory(atPath: elsewhere)
        #expect(moved.contains { $0.hasPrefix("views.sqlite.damaged-") }, "\(moved)")
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: store)).contains { $0.contains("damaged") })
        #expect(try await cli(["appointments", "--json", "--store", store]).stdout == before.stdout)
    }

    /// A value of SYNCLEDGER_REBUILD_WRITEBACK that is not understood is said, not ignored.
    @Test func anUnknownWritebackSettingIsSaid() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("writeback-env")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let odd = try await cli(["rebuild", "--store", store], env: ["SYNCLEDGER_REBUILD_WRITEBACK": "maybe"])
        #expect(odd.status == 0, "\(odd.stderr)")
        #expect(odd.stderr.contains("SYNCLEDGER_REBUILD_WRITEBACK=maybe is not understood"), "\(odd.stderr)")
        for value in ["off", "0", "ON", "1"] {
            let r = try await cli(["rebuild", "--store", store], env: ["SYNCLEDGER_REBUILD_WRITEBACK": value])
            expectSuccess(r)
        }
    }
}

extension CLIBinaryTests {
    /// A practitioner's name from IntakeQ holding an escape sequence, C1 and DEL controls, a
    /// bidirectional override and a line separator reaches tables, `history` and, on a
    /// terminal, `log` only as visible escapes; `--json` and `log` into a pipe keep the value as
    /// recorded.
    @Test func textFromIntakeQCannotDriveTheTerminal() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("terminal")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        var day = try #require(practice.day(1))
        let hostile = "Dr \u{1B}[2J\u{202E}Evil\u{85}\u{7F}\u{2028}Hide"
        let escapedName = try #require(String(data: try JSONEncoder().encode(hostile), encoding: .utf8))
        var object = try #require(try JSONSerialization.jsonObject(with: Data(day.state.appointments[0])) as? [String: Any])
        let appointment = try #require(object["Id"] as? String)
        object["PractitionerName"] = "PLACEHOLDER"
        // Not in the roster's practitioners: the sync warns, naming the practitioner.
        object["PractitionerId"] = "zz-not-on-the-roster"
        let json = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
            .replacingOccurrences(of: "\"PLACEHOLDER\"", with: escapedName)
        day.state.appointments[0] = Array(json.utf8)
        let raw: [Character] = ["\u{1B}", "\u{202E}", "\u{85}", "\u{7F}", "\u{2028}"]
        try await withFakeServer(day) { _, url in
            let sync = try await cli(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv)
            expectSuccess(sync)
            #expect(sync.stderr.contains("zz-not-on-the-roster") && sync.stderr.contains(#"\u{1B}[2J"#), "\(sync.stderr)")
            #expect(!raw.contains { sync.stderr.contains($0) }, "sync's warning printed a raw control: \(sync.stderr.debugDescription)")
        }
        for args in [["appointments", "--wide"], ["history", appointment], ["upcoming", "--all", "--days", "30", "--now", day.now]] {
            let r = try await cli(args + ["--store", store])
            expectSuccess(r)
            #expect(!raw.contains { r.stdout.contains($0) }, "\(r.label) printed a raw control: \(r.stdout.debugDescription)")
        }
        let table = try await cli(["appointments", "--wide", "--store", store])
        #expect(table.stdout.contains(#"Dr \u{1B}[2J\u{202E}Evil\u{85}\u{7F}\u{2028}Hide"#), "\(table.stdout)")
        // JSON keeps the value.
        let rows = try #require(parseJSON(try await cli(["appointments", "--json", "--store", store]).stdout) as? [[String: Any]])
        #expect(rows.contains { $0["practitioner_name"] as? String == hostile })
        // `log` into a pipe: the bytes stored, with the raw characters (JSON need not escape them).
        let piped = try await cli(["log", "--store", store])
        expectSuccess(piped)
        #expect(piped.stdout.contains("\u{202E}"), "the stored line should hold the override raw")
        // On a terminal (`script` gives it one): JSON escapes instead, the same values.
        let typescript = tmp.path + "/typescript"
        let binary = try Repo.requireBinary()
        let tty = try await Launched([], timeout: 60, executable: "/usr/bin/script",
                                     arguments: ["-q", "-e", "-c", "'\(binary)' log --store '\(store)'", typescript]).wait()
        #expect(tty.status == 0, "\(tty.stdout)\(tty.stderr)")
        let seen = String(decoding: FileManager.default.contents(atPath: typescript) ?? Data(), as: UTF8.self)
        #expect(seen.contains(#"\u202E"#) && seen.contains(#"\u0085"#) && seen.contains(#"\u007F"#) && seen.contains(#"\u2028"#),
                "\(seen.suffix(2000))")
        #expect(!["\u{202E}", "\u{85}", "\u{7F}", "\u{2028}"].contains { (c: Character) in seen.contains(c) }, "log on a terminal printed a raw control")
    }
}
