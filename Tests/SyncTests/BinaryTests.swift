import EventLog
import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import Sync
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `X new, Y updated, Z unchanged, R removed, E errors in N s; head SEQ:HASH`, of a completed run.
var summaryPattern: Regex<(Substring, Substring, Substring, Substring, Substring, Substring, Substring, Substring)> { #/^(\d+) new, (\d+) updated, (\d+) unchanged, (\d+) removed, (\d+) errors in [0-9.]+ s; head (\d+):([0-9a-f]{64})$/# }
/// The same after a run's status, for a run that did not complete (`partial_success: …`).
var partialSummaryPattern: Regex<(Substring, Substring, Substring, Substring, Substring, Substring, Substring, Substring)> { #/^partial_success: (\d+) new, (\d+) updated, (\d+) unchanged, (\d+) removed, (\d+) errors in [0-9.]+ s; head (\d+):([0-9a-f]{64})$/# }

/// Tests of the built `syncledger` binary against the fake server running in this process.
@Suite("End to end: the syncledger binary", .serialized)
struct BinaryTests {
    init() throws {
        try #require(Binary.available, "no syncledger binary at \(Binary.path); run `swift build --product syncledger`")
    }

    @Test("401: wrong INTAKEQ_API_KEY → failed, exit 1, the key refused and never printed; status then exits 1")
    func unauthorized() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1, apiKey: "the-right-key-4f1d")
        let store = tmp.sub("store")
        let wrongKey = "wrong-key-zz9-plural-z-alpha"
        let r = try await Binary.run(syncArgs(store: store, baseURL: rig.baseURL, day: 1), apiKey: wrongKey, outputs: tmp.path)
        #expect(r.status == 1, "stdout: \(r.stdout) stderr: \(r.stderr)")
        #expect(r.stderr.contains("refused the API key"), "\(r.stderr)")
        for text in [r.stdout, r.stderr] {
            #expect(!text.contains(wrongKey))
            #expect(!text.contains(rig.apiKey))
        }
        #expect(rig.server.requests().allSatisfy { $0.status == 401 })
        let log = try #require(try StoreReader.syncLogs(store).first)
        #expect(log["status"] == .string("failed"))
        #expect(log["error_message"]?.stringValue?.contains("refused the API key") == true)
        // Nothing about appointments was recorded.
        #expect(try StoreReader.events(store).map(\.type).filter { $0.hasPrefix("appointment.") }.isEmpty)
        // Monitoring sees the failed daily run.
        let status = try await Binary.run(["--store", store, "status"], apiKey: nil, outputs: tmp.path)
        #expect(status.status == 1, "\(status.stdout)")
        #expect(status.stdout.contains("failed"))
        // `--keys` may stand in front of the command too, as `--store` does.
        let keyed = try await Binary.run(["--store", store, "--keys", store + "/keys", "status"], apiKey: nil, outputs: tmp.path)
        #expect(keyed.status == 1 && keyed.stdout == status.stdout, "\(keyed.stdout)\(keyed.stderr)")
        await rig.stop()
    }

    @Test("one malformed page → exit 2, the summary line counts the error, stderr names the page")
    func malformedPageExit2() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        rig.server.inject(.malformed, path: "/appointments", page: 2, times: 1)
        let store = tmp.sub("store")
        let r = try await Binary.run(syncArgs(store: store, baseURL: rig.baseURL, day: 1), apiKey: rig.apiKey, outputs: tmp.path)
        #expect(r.status == 2, "stdout: \(r.stdout) stderr: \(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 1, "one summary line on stdout: \(r.stdout)")
        let m = try #require(lines.first.flatMap { try? partialSummaryPattern.wholeMatch(in: String($0)) }, "summary: \(r.stdout)")
        #expect(Int(m.output.1)! > 0 && Int(m.output.1)! < Fixtures.expected(1).counts.new)
        #expect(m.output.5 == "1")
        #expect(r.stderr.contains("partial_success"), "\(r.stderr)")
        #expect(r.stderr.contains("page 2"), "\(r.stderr)")
        #expect(try StoreReader.head(store).seq == UInt64(m.output.6)!)
        #expect(try StoreReader.syncLogs(store).first?["status"] == .string("partial_success"))
        await rig.stop()
    }

    @Test("a crash mid-run (SIGKILL) → the next run records sync.abandoned first and converges to an uninterrupted run's views")
    func crashMidRun() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        _ = try await rig.sync(store: store, day: 1)
        let headBefore = try StoreReader.head(store)

        // Day 2 through the binary, with page 2 of the window answering slowly; kill it there.
        rig.setDay(2)
        rig.server.clearRequests()
        rig.server.inject(.delay(4), path: "/appointments", page: 2, times: 1)
        let p = try Binary.start(syncArgs(store: store, baseURL: rig.baseURL, day: 2), apiKey: rig.apiKey, outputs: tmp.path)
        let reachedPage2 = await eventually(timeout: 60) {
            rig.server.requests().contains { $0.path == "/appointments" && $0.page == 1 && $0.query["deletedOnly"] == nil }
        }
        #expect(reachedPage2, "the binary never fetched page 1")
        try await Task.sleep(nanoseconds: 300_000_000)
        let onDisk = try StoreReader.events(store, from: headBefore.seq + 1)
        let started = try #require(onDisk.first { $0.type == "sync.started" }, "sync.started is not on disk")
        let killedRun = try #require(started.run)
        #expect(!onDisk.contains { $0.type == "sync.completed" })
        #expect(p.isRunning)
        p.kill9()
        let killed = try await p.wait(timeout: 30)
        #expect(killed.status == SIGKILL)
        #expect(try StoreReader.syncLogs(store).first { $0["id"] == .string(killedRun) }?["status"] == .string("in_progress"))

        // The next run.
        rig.server.clearFaults()
        let headAfterKill = try StoreReader.head(store)
        let next = try await rig.sync(store: store, day: 2)
        #expect(next.status == "completed")
        #expect(next.abandoned == [killedRun])
        let appended = try StoreReader.events(store, from: headAfterKill.seq + 1)
        #expect(appended.first?.type == "sync.abandoned")
        #expect(appended.first?.data["abandoned_run"]?.stringValue == killedRun)
        #expect(appended.first?.envelope.stream == "sync/" + killedRun)
        #expect(appended.dropFirst().first?.type == "sync.started")
        let exp = Fixtures.expected(2).counts
        #expect(next.counts.new == exp.new && next.counts.updated == exp.updated
                && next.counts.unchanged == exp.unchanged && next.counts.removed == exp.removed)
        let killedLog = try #require(try StoreReader.syncLogs(store).first { $0["id"] == .string(killedRun) })
        #expect(killedLog["status"] == .string("failed"))
        #expect(killedLog["error_message"]?.stringValue?.hasPrefix("abandoned") == true)

        // An uninterrupted run on a fresh store gives the same views.
        let fresh = tmp.sub("fresh")
        rig.setDay(1)
        _ = try await rig.sync(store: fresh, day: 1)
        rig.setDay(2)
        _ = try await rig.sync(store: fresh, day: 2)
        let a = comparableAppointments(try StoreReader.appointments(store))
        let b = comparableAppointments(try StoreReader.appointments(fresh))
        #expect(a.count == b.count && a.count > 0)
        #expect(a == b)
        await rig.stop()
    }

    @Test("a second sync while the store is locked fails at once with the holder's pid; --wait-lock waits")
    func lockedStore() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        _ = try await rig.sync(store: store, day: 1)
        let head = try StoreReader.head(store)

        var holder: LedgerWriter? = try LedgerWriter(store: try Store.open(store))
        let r = try await Binary.run(syncArgs(store: store, baseURL: rig.baseURL, day: 1), apiKey: rig.apiKey, outputs: tmp.path)
        #expect(r.status == 1)
        #expect(r.stderr.contains("store is locked by pid \(getpid())"), "\(r.stderr)")
        #expect(r.stderr.contains("pass --wait-lock SECONDS to wait for it"), "\(r.stderr)")
        #expect(r.seconds < 20, "it should fail at once, took \(r.seconds) s")
        #expect(try StoreReader.head(store) == head)
        // One that waited and still found it held is not told to pass --wait-lock.
        let waited = try await Binary.run(syncArgs(store: store, baseURL: rig.baseURL, day: 1, extra: ["--wait-lock", "0.5"]),
                                          apiKey: rig.apiKey, outputs: tmp.path)
        #expect(waited.status == 1 && waited.stderr.contains("after waiting 0.5 s; retry when it is done, or pass a longer --wait-lock"),
                "\(waited.stderr)")
        #expect(try StoreReader.head(store) == head)

        let waiting = try Binary.start(syncArgs(store: store, baseURL: rig.baseURL, day: 1, extra: ["--wait-lock", "60"]),
                                       apiKey: rig.apiKey, outputs: tmp.path)
        try await Task.sleep(nanoseconds: 1_500_000_000)
        #expect(waiting.isRunning, "with --wait-lock it waits for the lock")
        holder?.close()
        holder = nil
        let w = try await waiting.wait(timeout: 120)
        #expect(w.status == 0, "stdout: \(w.stdout) stderr: \(w.stderr)")
        #expect(w.seconds >= 1.5)
        #expect((try? summaryPattern.wholeMatch(in: w.stdout.trimmingCharacters(in: .newlines))) != nil, "\(w.stdout)")
        #expect(try StoreReader.head(store).seq == head.seq + 2)
        await rig.stop()
    }

    @Test("429 with Retry-After: 1 through the binary: waits, retries, completes with exit 0")
    func rateLimitedBinary() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        rig.server.inject(.status(429, retryAfter: 1), path: "/appointments", page: 2, times: 1)
        let store = tmp.sub("store")
        let r = try await Binary.run(syncArgs(store: store, baseURL: rig.baseURL, day: 1), apiKey: rig.apiKey, outputs: tmp.path)
        #expect(r.status == 0, "\(r.stderr)")
        let m = try #require(try? summaryPattern.wholeMatch(in: r.stdout.trimmingCharacters(in: .newlines)), "\(r.stdout)")
        #expect(Int(m.output.1) == Fixtures.expected(1).counts.new && m.output.5 == "0")
        let page2 = rig.server.requests().filter { $0.path == "/appointments" && $0.page == 2 }
        #expect(page2.map(\.status) == [429, 200])
        if page2.count == 2 {
            #expect(page2[1].at.timeIntervalSince(page2[0].at) >= 0.95, "Retry-After honoured")
        }
        let log = try #require(try StoreReader.syncLogs(store).first)
        #expect(log["status"] == .string("completed"))
        #expect(log["metadata"]?["retries"] == .number(1))
        #expect(log["metadata"]?["rate_limit_hit"] == .bool(true))
        await rig.stop()
    }

    @Test("status: exit 0 after a fresh automated_daily run, exit 1 with --max-age 0; --json parses")
    func status() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        let sync = try await Binary.run(syncArgs(store: store, baseURL: rig.baseURL, day: 1), apiKey: rig.apiKey, outputs: tmp.path)
        #expect(sync.status == 0, "\(sync.stderr)")
        let m = try #require(try? summaryPattern.wholeMatch(in: sync.stdout.trimmingCharacters(in: .newlines)), "\(sync.stdout)")
        #expect(Int(m.output.1) == Fixtures.expected(1).counts.new)
        // Not a terminal: no progress lines on stderr, only the run's warnings.
        #expect(!sync.stderr.contains("fetching") && !sync.stderr.contains("window"), "\(sync.stderr)")
        let head = try StoreReader.head(store)

        let ok = try await Binary.run(["--store", store, "status"], apiKey: nil, outputs: tmp.path)
        #expect(ok.status == 0, "\(ok.stdout) \(ok.stderr)")
        #expect(ok.stdout.contains("automated_daily") && ok.stdout.contains("completed"))
        #expect(ok.stdout.contains("head \(head)"))

        let stale = try await Binary.run(["--store", store, "status", "--max-age", "0"], apiKey: nil, outputs: tmp.path)
        #expect(stale.status == 1, "\(stale.stdout)")
        #expect(stale.stdout.contains("problem:"))

        let json = try await Binary.run(["--store", store, "status", "--json"], apiKey: nil, outputs: tmp.path)
        #expect(json.status == 0)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(obj["ok"] as? Bool == true)
        #expect(obj["head"] as? String == head.description)
        #expect((obj["projection_lag"] as? NSNumber)?.intValue == 0)
        let runs = try #require(obj["runs"] as? [[String: Any]])
        let daily = try #require(runs.first { $0["sync_type"] as? String == "automated_daily" })
        #expect(daily["status"] as? String == "completed")

        let staleJSON = try await Binary.run(["--store", store, "status", "--json", "--max-age", "0"], apiKey: nil, outputs: tmp.path)
        #expect(staleJSON.status == 1)
        let obj2 = try #require(try JSONSerialization.jsonObject(with: Data(staleJSON.stdout.utf8)) as? [String: Any])
        #expect(obj2["ok"] as? Bool == false)
        #expect(((obj2["problems"] as? [String]) ?? []).count == 1)
        await rig.stop()
    }

    @Test("daily budget across runs: a run that cannot fit says how many calls remain and when they free; exit 1, store unchanged")
    func dailyBudget() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        // A full run makes 5 calls (settings, 3 window pages, deletedOnly); 7 leaves 2 < 3.
        let first = try await Binary.run(syncArgs(store: store, baseURL: rig.baseURL, day: 1, extra: ["--daily-budget", "7"]),
                                         apiKey: rig.apiKey, outputs: tmp.path)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(rig.server.requests().count == 5)

        func snapshot() throws -> [String: Data] {
            var out: [String: Data] = [:]
            for sub in ["log", "state"] {
                let dir = store + "/" + sub
                for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
                    var isDir: ObjCBool = false
                    if name != "LOCK", FileManager.default.fileExists(atPath: dir + "/" + name, isDirectory: &isDir), !isDir.boolValue {
                        out[sub + "/" + name] = FileManager.default.contents(atPath: dir + "/" + name)
                    }
                }
            }
            return out
        }
        let before = try snapshot()
        let head = try StoreReader.head(store)
        let logsBefore = try StoreReader.syncLogs(store)

        rig.server.clearRequests()
        let second = try await Binary.run(syncArgs(store: store, baseURL: rig.baseURL, day: 1, extra: ["--daily-budget", "7"]),
                                          apiKey: rig.apiKey, outputs: tmp.path)
        #expect(second.status == 1)
        #expect(second.stderr.contains("2 of 7 calls left"), "\(second.stderr)")
        #expect(second.stderr.contains("frees at 20"), "\(second.stderr)")
        #expect(second.stdout.isEmpty)
        #expect(rig.server.requests().isEmpty, "no call was made")
        #expect(try StoreReader.head(store) == head)
        #expect(try snapshot() == before)
        #expect(try StoreReader.syncLogs(store) == logsBefore)
        await rig.stop()
    }
}
