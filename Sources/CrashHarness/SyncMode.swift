import Foundation  // JSONSerialization, for comparing the views' JSON
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TestSupport

/// Sync mode (issue 7, part 1): real `syncledger sync` runs against `fake-intakeq`, SIGKILLed at
/// random moments. After every kill:
///
/// 1. `verify --json` → ok (a torn tail is only a warning);
/// 2. `appointments --json` and `sync-logs --json` (read commands catch the views up) equal, byte
///    for byte, the same after `rebuild`;
/// 3. the same sync run to completion exits 0, records every run the kill left open as `failed`
///    ("abandoned: …"), and converges: its counts add up to what a clean store saw that day, and
///    the appointments view equals that of a reference store that ran the same days cleanly.
///
/// The day advances 1 → 5 over the kills (fake-intakeq restarted with `--day N` when it changes).

/// Columns of the appointments view that must equal the clean reference store's after a
/// completed sync of the same day. Everything except:
/// - `first_seen_at`, `last_changed_at`, `last_synced_at`: wall-clock times of the events that
///   recorded the change (not the simulated `--now`), so two stores never agree on them;
/// - `last_seq`: the crashed store's log also holds `sync.started` / `sync.abandoned` /
///   `sync.completed` events of the killed and repeated runs, which shift every later seq.
/// `version` IS compared: it counts recorded versions of the appointment, and each change is
/// recorded at most once whatever the kills do — a killed run either made its observation batch
/// durable (then the next run diffs against it and records nothing again) or did not (then the
/// next run records it) — and a repeated sync of a day already recorded adds no version. So a
/// crashed store that ran the same sequence of days must hold exactly the reference's versions.
let volatileAppointmentColumns: Set<String> = ["first_seen_at", "last_changed_at", "last_synced_at", "last_seq"]
let requiredAppointmentColumns = [
    "appointment_id", "organization_id", "patient_id", "status", "start_at", "end_at", "meeting_url", "removed",
    "visit_type", "location_name", "version",
]

struct SyncCounts: Equatable, CustomStringConvertible {
    var new = 0, updated = 0, unchanged = 0, removed = 0, errors = 0
    /// Appointments the run fetched and classified (removals are of ones not fetched).
    var observed: Int { new + updated + unchanged }
    var description: String {
        "\(new) new, \(updated) updated, \(unchanged) unchanged, \(removed) removed, \(errors) errors"
    }

    init() {}

    /// Parses `X new, Y updated, Z unchanged, R removed, E errors in N s; head SEQ:HASH`.
    init?(summary text: String) {
        guard let line = text.split(separator: "\n").last(where: { $0.contains(" new, ") && $0.contains("; head ") })
        else { return nil }
        var found: [String: Int] = [:]
        // A run that did not complete has its status first ("partial_success: 3 new, …").
        let counts = line.split(separator: ";")[0].split(separator: ": ").last ?? ""
        for part in counts.split(separator: ",") {
            let words = part.split(separator: " ")
            guard words.count >= 2, let n = Int(words[0]) else { continue }
            found[String(words[1])] = n
        }
        guard let n = found["new"], let u = found["updated"], let c = found["unchanged"], let r = found["removed"],
              let e = found["errors"] else { return nil }
        (new, updated, unchanged, removed, errors) = (n, u, c, r, e)
    }
}

struct SyncTally {
    var kills = 0
    var midRun = 0
    var beforeStore = 0
    var finishedFirst = 0
    var tornTails = 0
    var abandonedChecked = 0
    var checks = 0
    var convergedAsFirst = 0
    var convergedAsRepeat = 0
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var exitCode: Int32? { status & 0x7f == 0 ? (status >> 8) & 0xff : nil }
    var signal: Int32? { status & 0x7f != 0 && status & 0x7f != 0x7f ? status & 0x7f : nil }
}

final class SyncHarness {
    let syncledger: String
    let fake: String
    let practice: String
    let roster: String
    let root: String
    let store: String
    let reference: String
    let apiKey = "crash-harness-key"
    var nows: [Int: String] = [:]
    var server: Child?
    var serverDay = 0
    var baseURL = ""
    var tally = SyncTally()
    var stderrSeq = 0
    /// Wall time of the last uninterrupted sync (process start to exit), to aim the kills.
    var lastSyncSeconds: Double?
    /// The reference store's last day, its first and repeated syncs' counts that day, and its appointments (volatile
    /// columns dropped).
    var referenceDay = 0
    var referenceFirst = SyncCounts()
    var referenceRepeat = SyncCounts()
    var referenceRows: [String: [String: Any]] = [:]

    init(syncledger: String, fake: String, fixtures: String, roster: String) throws {
        self.syncledger = try absolute(syncledger, executable: true)
        self.fake = try absolute(fake, executable: true)
        self.roster = try absolute(roster, executable: false)
        let dir = try absolute(fixtures, executable: false)
        // Accept the repository's Fixtures/ or the practice directory itself.
        practice = access(dir + "/day-01.json", R_OK) == 0 ? dir : dir + "/practice"
        for day in 1...99 {
            let path = practice + (day < 10 ? "/day-0\(day).json" : "/day-\(day).json")
            guard let data = FileManager.default.contents(atPath: path) else { break }
            guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let now = o["now"] as? String
            else { throw HarnessError("\(path) has no \"now\"") }
            nows[day] = now
        }
        guard !nows.isEmpty else { throw HarnessError("no day-01.json under \(practice)") }
        root = try! makeTempDir("crash-harness-sync")
        store = root + "/store"
        reference = root + "/reference"
        _ = mkdir(root + "/stderr", 0o700)
    }

    var days: Int { nows.count }

    /// Runs `syncledger ARGS…` to its end (SIGKILLed after `timeout` s), stderr to a file.
    func run(_ arguments: [String], timeout: Double = 120) throws -> CommandResult {
        let child = try spawn(arguments)
        if child.collect(for: timeout) {
            _ = child.kill()
            throw HarnessError("`syncledger \(arguments.joined(separator: " "))` did not finish within \(Int(timeout)) s")
        }
        return result(child, child.wait())
    }

    var lastStderrPath = ""
    func spawn(_ arguments: [String]) throws -> Child {
        stderrSeq += 1
        lastStderrPath = root + "/stderr/\(stderrSeq)-\(arguments.first ?? "").err"
        return try Child([syncledger] + arguments, environment: ["INTAKEQ_API_KEY": apiKey], stderrPath: lastStderrPath)
    }

    func result(_ child: Child, _ status: Int32) -> CommandResult {
        let err = FileManager.default.contents(atPath: lastStderrPath).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return CommandResult(status: status, stdout: child.output, stderr: err)
    }

    /// Runs a read command that must succeed; returns its stdout.
    func read(_ storePath: String, _ arguments: [String]) throws -> String {
        let r = try run(["--store", storePath] + arguments)
        guard r.exitCode == 0 else {
            throw HarnessError("`syncledger --store \(storePath) \(arguments.joined(separator: " "))` exited with status "
                + "\(r.status): \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return r.stdout
    }

    func syncArguments(_ storePath: String, day: Int) -> [String] {
        ["sync", "--store", storePath, "--roster", roster, "--base-url", baseURL, "--now", nows[day]!,
         "--requests-per-minute", "100000", "--daily-budget", "100000"]
    }

    /// Serves `day` (restarting fake-intakeq when the day changes) on a port it picks itself
    /// (`--port 0`: no window between choosing a free port and binding it) and reads the URL
    /// from its banner.
    func serve(day: Int) throws {
        if serverDay == day, server != nil { return }
        stopServer()
        let child = try Child([fake, "--fixtures", practice, "--day", String(day), "--port", "0", "--api-key", apiKey],
                              stderrPath: root + "/stderr/fake-day-\(day).err")
        server = child
        let deadline = now() + 30
        while now() < deadline {
            let open = child.collect(for: 0.05)
            if let line = child.lines.first(where: { $0.contains(" at http") }),
               let url = line.split(separator: " ").last(where: { $0.hasPrefix("http") }) {
                baseURL = String(url)
                serverDay = day
                return
            }
            if !open { break }
        }
        let err = FileManager.default.contents(atPath: root + "/stderr/fake-day-\(day).err")
            .map { String(decoding: $0, as: UTF8.self) } ?? ""
        stopServer()
        throw HarnessError("fake-intakeq did not print its URL for day \(day): \(err)")
    }

    func stopServer() {
        if let s = server { _ = s.kill() }
        server = nil
        serverDay = 0
    }

    func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        guard condition else { throw HarnessError(message()) }
        tally.checks += 1
    }

    func parseArray(_ text: String, _ what: String) throws -> [[String: Any]] {
        guard let rows = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else {
            throw HarnessError("\(what) is not a JSON array of objects: \(text.prefix(200))")
        }
        return rows
    }

    /// Appointments keyed by id, volatile columns dropped.
    func comparableAppointments(_ storePath: String) throws -> [String: [String: Any]] {
        let rows = try parseArray(try read(storePath, ["appointments", "--json"]), "appointments --json")
        var out: [String: [String: Any]] = [:]
        for row in rows {
            guard let id = row["appointment_id"] as? String else { throw HarnessError("an appointment row has no appointment_id") }
            for column in requiredAppointmentColumns where row.index(forKey: column) == nil {
                throw HarnessError("appointment \(id) has no column \(column)")
            }
            out[id] = row.filter { !volatileAppointmentColumns.contains($0.key) }
        }
        return out
    }

    func canonical(_ value: Any) -> String {
        guard JSONSerialization.isValidJSONObject([value]),
              let data = try? JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys]) else { return "\(value)" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Steps 2 and 3 after a kill; returns the runs left in progress.
    func checkKilledStore(_ number: Int) throws -> Set<String> {
        // 2. verify: ok; a torn tail only a warning.
        let verifyText = try run(["--store", store, "verify", "--json"]).stdout
        guard let verify = try? JSONSerialization.jsonObject(with: Data(verifyText.utf8)) as? [String: Any] else {
            throw HarnessError("kill \(number): verify --json printed no JSON object: \(verifyText.prefix(300))")
        }
        try check(verify["ok"] as? Bool == true, "kill \(number): verify failed: \(verifyText)")
        let warnings = verify["warnings"] as? [String] ?? []
        tally.tornTails += warnings.filter { $0.contains("torn") }.count

        // 3. Views caught up by the read commands == views rebuilt from the log, byte for byte.
        let liveAppointments = try read(store, ["appointments", "--json"])
        let liveLogs = try read(store, ["sync-logs", "--json"])
        let logs = try parseArray(liveLogs, "sync-logs --json")
        let open = Set(logs.filter { $0["status"] as? String == "in_progress" }.compactMap { $0["id"] as? String })
        try check(open.count <= 1, "kill \(number): \(open.count) runs in progress after one kill: \(open.sorted())")
        if !open.isEmpty { tally.midRun += 1 }
        _ = try read(store, ["rebuild"])
        let rebuiltAppointments = try read(store, ["appointments", "--json"])
        let rebuiltLogs = try read(store, ["sync-logs", "--json"])
        try check(liveAppointments == rebuiltAppointments,
                  "kill \(number): appointments --json differs after rebuild (\(liveAppointments.utf8.count) vs "
                  + "\(rebuiltAppointments.utf8.count) bytes)")
        try check(liveLogs == rebuiltLogs, "kill \(number): sync-logs --json differs after rebuild")
        return open
    }

    /// One kill round on `day`: start the sync, SIGKILL it after `delay`, check, complete, check.
    func round(_ number: Int, day: Int, delay: Double) throws {
        try serve(day: day)

        // 1. The sync, killed.
        let child = try spawn(syncArguments(store, day: day))
        let stillRunning = child.collect(for: delay)
        if stillRunning {
            let status = child.kill()
            if status & 0x7f == SIGKILL {
                tally.kills += 1
            } else {
                let r = result(child, status)
                try check(r.exitCode == 0, "kill \(number): the sync ended with status \(status) before the kill: \(r.stderr)")
                tally.finishedFirst += 1
            }
        } else {
            let r = result(child, child.wait())
            try check(r.exitCode == 0, "kill \(number): the sync exited with status \(r.status) before the kill: \(r.stderr)")
            tally.finishedFirst += 1
        }

        // A kill in the first milliseconds of the very first run can land before the store
        // directory exists: nothing to check until the completed run creates it. (Once the
        // directory exists, however half-made, every check below applies.)
        let storeExists = access(store, F_OK) == 0
        var open: Set<String> = []
        if storeExists {
            open = try checkKilledStore(number)
        } else {
            tally.beforeStore += 1
        }

        // 4. The same sync to completion.
        let syncStarted = now()
        let done = try run(syncArguments(store, day: day))
        lastSyncSeconds = now() - syncStarted
        try check(done.exitCode == 0, "kill \(number): the sync after the kill exited with status \(done.status): "
                  + done.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        guard let counts = SyncCounts(summary: done.stdout) else {
            throw HarnessError("kill \(number): no summary line in the completed sync's output: \(done.stdout)")
        }
        try check(counts.errors == 0, "kill \(number): the completed sync reported errors: \(counts)")
        for id in open {
            try check(done.stderr.contains(id), "kill \(number): the completed sync did not note abandoned run \(id)")
        }

        // 5. The killed run shows as failed ("abandoned: …"); nothing is left in progress.
        let after = try parseArray(try read(store, ["sync-logs", "--json"]), "sync-logs --json")
        for id in open {
            guard let row = after.first(where: { $0["id"] as? String == id }) else {
                throw HarnessError("kill \(number): killed run \(id) is missing from sync-logs")
            }
            try check(row["status"] as? String == "failed"
                      && (row["error_message"] as? String ?? "").hasPrefix("abandoned"),
                      "kill \(number): killed run \(id) is \(row["status"] ?? "?") (\(row["error_message"] ?? "")), "
                      + "expected failed, abandoned")
            tally.abandonedChecked += 1
        }
        try check(!after.contains { $0["status"] as? String == "in_progress" },
                  "kill \(number): a run is still in_progress after a completed sync")

        // 6. Convergence with a reference store that ran the same days cleanly, without kills: on
        // the first round of a day it syncs that day twice, remembering both summaries.
        if referenceDay != day {
            var summaries: [SyncCounts] = []
            for _ in 0..<2 {
                let clean = try run(syncArguments(reference, day: day))
                guard clean.exitCode == 0, let c = SyncCounts(summary: clean.stdout) else {
                    throw HarnessError("the reference sync of day \(day) failed (status \(clean.status)): \(clean.stderr)")
                }
                summaries.append(c)
            }
            (referenceFirst, referenceRepeat) = (summaries[0], summaries[1])
            referenceRows = try comparableAppointments(reference)
            referenceDay = day
        }
        // The day's observations are appended as one batch (fewer than 1,000 events here), so a
        // kill either recorded all of the day's changes or none: the completed run then reports
        // exactly what a clean store's repeated sync of the day does, or what its first one did.
        // (Not "new + updated + unchanged is constant": a clean store's first and repeated syncs of
        // a day can classify a different number of appointments.)
        if counts == referenceRepeat {
            tally.convergedAsRepeat += 1
        } else if counts == referenceFirst {
            tally.convergedAsFirst += 1
        } else {
            throw HarnessError("kill \(number): day \(day) completed with \(counts); a clean store's first sync of the "
                + "day saw \(referenceFirst), its repeated sync \(referenceRepeat)")
        }
        tally.checks += 1
        let rows = try comparableAppointments(store)
        if rows.count != referenceRows.count || rows.keys.contains(where: { referenceRows[$0] == nil }) {
            let missing = Set(referenceRows.keys).subtracting(rows.keys).sorted().prefix(3)
            let extra = Set(rows.keys).subtracting(referenceRows.keys).sorted().prefix(3)
            throw HarnessError("kill \(number): day \(day): \(rows.count) appointments, the reference has "
                + "\(referenceRows.count) (missing \(Array(missing)), extra \(Array(extra)))")
        }
        for id in rows.keys.sorted() {
            let mine = canonical(rows[id]!), theirs = canonical(referenceRows[id]!)
            guard mine == theirs else {
                throw HarnessError("kill \(number): day \(day): appointment \(id) differs from the clean reference:\n"
                    + "  crashed:   \(mine)\n  reference: \(theirs)")
            }
        }
        tally.checks += 1
    }
}

func absolute(_ path: String, executable: Bool) throws -> String {
    guard let resolved = realpath(path, nil) else { throw HarnessError("\(path): \(String(cString: strerror(errno)))") }
    defer { free(resolved) }
    let text = String(cString: resolved)
    if executable, access(text, X_OK) != 0 { throw HarnessError("\(path) is not executable") }
    return text
}

func runSyncHarness(kills: Int, seed: UInt64, syncledger: String, fake: String, fixtures: String, roster: String,
                    maxDelay: Double, keep: Bool) -> Int32 {
    guard maxDelay > 0 else { fail("--max-delay must be a positive number of seconds") }
    emit("crash-harness: sync mode, seed \(seed), \(kills) kills, delays 0…\(maxDelay) s (replay with --seed \(seed))")
    var rng = SeededRNG(state: seed)
    let harness: SyncHarness
    do {
        harness = try SyncHarness(syncledger: syncledger, fake: fake, fixtures: fixtures, roster: roster)
    } catch {
        fail("\(error)")
    }
    let started = now()
    for n in 1...kills {
        // Days advance 1 → last evenly over the kills.
        let day = min(harness.days, 1 + (n - 1) * harness.days / kills)
        // Aim inside the run: up to 1.2 × the last uninterrupted sync's wall time (never above
        // --max-delay), so that most kills land mid-run rather than after the sync has exited.
        // One kill in six lands in the first 50 ms (start-up, the lock, the first catch-up).
        let upper = min(maxDelay, max(0.05, 1.2 * (harness.lastSyncSeconds ?? maxDelay)))
        let delay = rng.next() % 6 == 0 ? Double.random(in: 0...min(0.05, upper), using: &rng)
            : Double.random(in: 0...upper, using: &rng)
        do {
            try harness.round(n, day: day, delay: delay)
        } catch {
            harness.stopServer()
            emit("crash-harness: FAILED at kill \(n) of \(kills), day \(day), delay \(String(format: "%.3f", delay)) s "
                + "(seed \(seed)); store kept at \(harness.store) (reference \(harness.reference), stderr of each "
                + "command under \(harness.root)/stderr): \(error)", to: 2)
            return 1
        }
    }
    harness.stopServer()
    // A last verify of the crashed store.
    if let v = try? harness.read(harness.store, ["verify", "--json"]), v.contains("\"ok\":true") {
        harness.tally.checks += 1
    } else {
        emit("crash-harness: FAILED: the final verify of \(harness.store) did not pass (seed \(seed))", to: 2)
        return 1
    }
    if !keep { removeTree(harness.root) }
    let t = harness.tally
    emit("crash-harness: sync mode, seed \(seed): \(t.kills) kills (\(t.midRun) mid-run with sync.started and no "
        + "completion, \(t.kills - t.midRun) before sync.started, of which \(t.beforeStore) before the store existed), \(t.finishedFirst) syncs finished before their kill; "
        + "\(t.abandonedChecked) killed runs recorded failed/abandoned, \(t.tornTails) torn tails; "
        + "\(t.checks) checks passed; converged on days 1…\(harness.referenceDay) (\(t.convergedAsFirst) completed runs "
        + "recorded the day's changes, \(t.convergedAsRepeat) found them already recorded); \(Int(now() - started)) s"
        + (keep ? "; store kept at \(harness.store)" : ""))
    return 0
}
