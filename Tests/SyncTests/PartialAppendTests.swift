import EventLog
import FakeIntakeQ
import IntakeQ
import Foundation
import JSONCore
import Ledger
import Logging
import Projections
import Synchronization
@testable import Sync
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A disk that fills part way through a run's appends: the batches before the failure stay in the
/// log, and the run's `sync.completed` (status failed) must count exactly those, not zero.
@Suite("A run whose append fails part way", .serialized)
struct PartialAppendTests {
    /// What the log holds of one run: its appointment events by type, and its record.
    struct RunInLog {
        var discovered = 0, changed = 0, removed = 0
        var completed: StoredEvent?

        init(_ events: [StoredEvent], run: String) {
            for e in events where e.run == run {
                switch e.type {
                case "appointment.discovered": discovered += 1
                case "appointment.changed": changed += 1
                case "appointment.removed": removed += 1
                case "sync.completed": completed = e
                default: break
                }
            }
        }
    }

    /// A store at `dir`, its writer (the caller closes it) and a runner syncing into it from the server.
    @StoreIO
    static func runner(_ server: (baseURL: String, apiKey: String, clock: ManualClock), dir: String) throws
        -> (Store, LedgerWriter, SyncRunner) {
        let store = try Store.openOrCreate(dir)
        let writer = try LedgerWriter(store: store)
        let (client, logger) = ViewsNotUpdatedTests.client(baseURL: server.baseURL, apiKey: server.apiKey, clock: server.clock)
        do {
            return (store, writer, try SyncRunner(writer: writer, views: try ProjectionStore(store: store), client: client, logger: logger))
        } catch {
            writer.close()
            throw error
        }
    }

    /// One run into `dir` whose `after`+1-th write under the log fails with ENOSPC once; checks
    /// that its failed record counts what the log holds of it. Returns what was recorded, or nil
    /// when the failure came before the run had started (nothing of it in the log).
    @StoreIO
    func failingRun(_ server: (baseURL: String, apiKey: String, clock: ManualClock), dir: String, day: Int, batchSize: Int, after: Int,
                    sourceLocation: SourceLocation = #_sourceLocation) async throws -> RunInLog? {
        let (store, writer, runner) = try Self.runner(server, dir: dir)
        defer { writer.close() }
        runner.batchSize = batchSize
        let runId = "partial-\(day)-\(after)"
        _FaultInjection.fail(.write, under: store.logPath, after: after, times: 1, errno: ENOSPC)
        defer { _FaultInjection.clear(under: store.logPath) }
        do {
            var request = SyncRequest(roster: Fixtures.roster, now: Fixtures.day(day).nowDate)
            request.runId = runId
            let outcome = try await runner.run(request)
            Issue.record("the run did not fail (\(outcome.status)): \(after) writes are more than it makes", sourceLocation: sourceLocation)
            return nil
        } catch let error as LogError {
            #expect(error.code == .diskFull, "\(error)", sourceLocation: sourceLocation)
        }
        let run = RunInLog(try StoreReader.events(dir), run: runId)
        guard let completed = run.completed else { return nil }  // the opening append failed
        let data = completed.data
        #expect(data["status"]?.stringValue == "failed", sourceLocation: sourceLocation)
        #expect(data["counts"]?["new"] == .number(Double(run.discovered)), "\(data)", sourceLocation: sourceLocation)
        #expect(data["counts"]?["updated"] == .number(Double(run.changed)), "\(data)", sourceLocation: sourceLocation)
        #expect(data["counts"]?["removed"] == .number(Double(run.removed)), "\(data)", sourceLocation: sourceLocation)
        let recorded = run.discovered + run.changed + run.removed
        guard case .array(let warnings)? = data["warnings"] else {
            Issue.record("no warnings in \(data)", sourceLocation: sourceLocation)
            return run
        }
        let warned = warnings.compactMap(\.stringValue).contains { $0.hasPrefix("\(recorded) of the run's ") }
        #expect(warned == (recorded > 0), "\(data)", sourceLocation: sourceLocation)
        // The views' run summary says the same.
        let log = try StoreReader.syncLogs(dir).first { $0["id"]?.stringValue == runId }
        #expect(log?["status"] == .string("failed"), sourceLocation: sourceLocation)
        #expect(log?["appointments_new"] == .number(Double(run.discovered)), "\(String(describing: log))", sourceLocation: sourceLocation)
        return run
    }

    @Test("first sync: the failed record counts the discovered appointments appended, and the next run the rest")
    func firstSync() async throws {
        let rig = try await Rig.start(day: 1)
        let total = Fixtures.expected(1).counts.new
        var partial = 0
        for after in [0, 1, 2, 4, 6, 8, 10] {
            let tmp = TempDir()
            guard let run = try await failingRun((rig.baseURL, rig.apiKey, rig.clock), dir: tmp.sub("store"), day: 1, batchSize: 20, after: after) else { continue }
            if run.discovered > 0 && run.discovered < total { partial += 1 }
            // The disk has room again: the next run records what the failed one did not.
            let again = try await rig.sync(store: tmp.sub("store"), day: 1)
            #expect(again.status == "completed")
            #expect(run.discovered + again.counts.new == total, "after \(after) writes: \(run.discovered) + \(again.counts.new)")
            #expect(try StoreReader.appointments(tmp.sub("store")).count == total)
        }
        #expect(partial > 3, "too few runs failed part way: \(partial)")
        await rig.stop()
    }

    /// Sealing batch k fails while batch k-1 is written: k-1 is durable, and counted, though the
    /// call that wrote it threw the sealing error.
    @StoreIO
    func sealingFailsAt(_ server: (baseURL: String, apiKey: String, clock: ManualClock), dir: String, batch failing: Int) async throws -> RunInLog {
        let (_, writer, runner) = try Self.runner(server, dir: dir)
        defer { writer.close() }
        runner.batchSize = 20
        struct SealingFailed: Error {}
        let sealed = Atomic<Int>(0)
        runner.failSealing = { _ in
            if sealed.add(1, ordering: .relaxed).newValue == failing { throw SealingFailed() }
        }
        var request = SyncRequest(roster: Fixtures.roster, now: Fixtures.day(1).nowDate)
        request.runId = "sealing-\(failing)"
        await #expect(throws: SealingFailed.self) { _ = try await runner.run(request) }
        return RunInLog(try StoreReader.events(dir), run: "sealing-\(failing)")
    }

    @Test("sealing a batch fails: the batches written before it are counted, the one written beside it too")
    func sealingFails() async throws {
        let rig = try await Rig.start(day: 1)
        let total = Fixtures.expected(1).counts.new
        for failing in [1, 2, 3, 5, 9] {
            let tmp = TempDir()
            let run = try await sealingFailsAt((rig.baseURL, rig.apiKey, rig.clock), dir: tmp.sub("store"), batch: failing)
            let data = try #require(run.completed?.data)
            #expect(data["status"]?.stringValue == "failed")
            // Batches 1 … failing-1 are on disk (the settings event rides in the first).
            let expected = max(0, min(total, (failing - 1) * 20 - 1))
            #expect(run.discovered == expected, "sealing batch \(failing) failed")
            #expect(data["counts"]?["new"] == .number(Double(run.discovered)), "sealing batch \(failing) failed: \(data)")
            let again = try await rig.sync(store: tmp.sub("store"), day: 1)
            #expect(run.discovered + again.counts.new == total)
        }
        await rig.stop()
    }

    @Test("a later sync: new, updated and removed each counted as far as they were appended")
    func laterSync() async throws {
        let rig = try await Rig.start(day: 1)
        let expected = Fixtures.expected(2).counts
        let planned = expected.new + expected.updated + expected.removed
        var seen = Set<Int>()
        for after in 0..<6 {
            let tmp = TempDir()
            rig.setDay(1)
            _ = try await rig.sync(store: tmp.sub("store"), day: 1)
            rig.setDay(2)
            guard let run = try await failingRun((rig.baseURL, rig.apiKey, rig.clock), dir: tmp.sub("store"), day: 2, batchSize: 2, after: after) else { continue }
            seen.insert(run.discovered + run.changed + run.removed)
            let again = try await rig.sync(store: tmp.sub("store"), day: 2)
            #expect(run.discovered + again.counts.new == expected.new)
            #expect(run.changed + again.counts.updated == expected.updated)
            #expect(run.removed + again.counts.removed == expected.removed)
        }
        // Failures at several points of the run, some of them part way.
        #expect(seen.contains { $0 > 0 && $0 < planned }, "\(seen) of \(planned)")
        #expect(seen.count > 2, "\(seen)")
        await rig.stop()
    }
}
