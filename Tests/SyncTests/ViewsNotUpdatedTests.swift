import EventLog
import FakeIntakeQ
import Foundation
import TestSupport
import GRDB
import IntakeQ
import JSONCore
import Ledger
import Logging
import Projections
@testable import Sync
import Testing

/// Stands in for a view whose update fails (a disk error, a full disk) when `sync.completed`
/// is applied: after the run's events are all durable.
struct FailsOnCompletion: Projection {
    struct DiskError: Error, CustomStringConvertible { var description: String { "SQLite error 10: disk I/O error" } }
    /// Throw SQLite's own "database or disk is full" instead.
    var full = false
    var name: String { "fails_on_completion" }
    var schemaVersion: Int { 1 }
    var tables: [String] { ["fails_on_completion"] }
    func create(_ db: Database, _ t: TableSet) throws {
        try db.execute(sql: "CREATE TABLE \(t("fails_on_completion")) (seq INTEGER PRIMARY KEY)")
    }
    func apply(_ event: EventEnvelope, _ db: Database, _ t: TableSet) throws {
        if event.type == EventType.syncCompleted.rawValue {
            if full { throw DatabaseError(resultCode: .SQLITE_FULL, message: "database or disk is full") }
            throw DiskError()
        }
    }
}

@Suite struct ViewsNotUpdatedTests {
    /// A client of the rig's fake IntakeQ, unthrottled, and a logger of nothing below critical.
    static func client(_ rig: Rig) -> (IntakeQClient, Logger) {
        client(baseURL: rig.baseURL, apiKey: rig.apiKey, clock: rig.clock)
    }

    /// The same from the rig's parts (`Rig` itself cannot cross into `StoreIO`).
    static func client(baseURL: String, apiKey: String, clock: ManualClock) -> (IntakeQClient, Logger) {
        var logger = Logger(label: "synctests")
        logger.logLevel = .critical
        let limiter = RateLimiter(policy: RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: 100_000),
                                  clock: clock, store: InMemoryCallRecord())
        let client = IntakeQClient(baseURL: baseURL, apiKey: apiKey, limiter: limiter, clock: clock,
                                   maxRetries: 1, timeoutSeconds: 20, logger: logger)
        return (client, logger)
    }

    /// The run is fully recorded in the log, so it is not a failed run: the outcome keeps its
    /// status and says the views could not be updated (the CLI prints that and exits 2).
    @StoreIO @Test func viewsFailingAfterTheRunIsDurableIsNotAFailedRun() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = try Store.openOrCreate(tmp.sub("store"))
        let writer = try LedgerWriter(store: store)
        defer { writer.close() }
        let views = try ProjectionStore(store: store, projections: allProjections + [FailsOnCompletion()])
        let (client, logger) = Self.client(rig)
        let runner = try SyncRunner(writer: writer, views: views, client: client, logger: logger)
        let outcome = try await runner.run(SyncRequest(roster: Fixtures.roster, now: Fixtures.day(1).nowDate))
        #expect(outcome.status == "completed")
        #expect(outcome.viewsError?.contains("disk I/O error") == true, "\(outcome.viewsError ?? "nil")")
        // Not a clean run (2), and a failed run whose views then failed too stays failed (1).
        #expect(outcome.exitCode == 2)
        var failed = outcome
        failed.status = "failed"
        #expect(failed.exitCode == 1)
        let events = try StoreReader.events(tmp.sub("store"))
        #expect(events.last?.type == "sync.completed")
        #expect(outcome.head == (try LedgerReader(store: store).head()))
        await rig.stop()
    }

    /// A full disk under the views is said as such (it was SQLite's "database or disk is full").
    @StoreIO @Test func viewsFailingOnAFullDiskSaySo() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = try Store.openOrCreate(tmp.sub("store"))
        let writer = try LedgerWriter(store: store)
        defer { writer.close() }
        let views = try ProjectionStore(store: store, projections: allProjections + [FailsOnCompletion(full: true)])
        let (client, logger) = Self.client(rig)
        let runner = try SyncRunner(writer: writer, views: views, client: client, logger: logger)
        let outcome = try await runner.run(SyncRequest(roster: Fixtures.roster, now: Fixtures.day(1).nowDate))
        #expect(outcome.status == "completed" && outcome.exitCode == 2)
        #expect(outcome.viewsError == "the disk holding the views database (projections.sqlite) or SQLite's temporary files is full",
                "\(outcome.viewsError ?? "nil")")
        await rig.stop()
    }

    /// A run that fails after `sync.started` is recorded as failed with its reason (one line),
    /// not left in progress (which `status` would later call died); the next run needs no
    /// `sync.abandoned` for it.
    @StoreIO @Test func aRunThatFailsAfterItStartedIsRecordedAsFailed() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = try Store.openOrCreate(tmp.sub("store"))
        let writer = try LedgerWriter(store: store)
        defer { writer.close() }
        let views = try ProjectionStore(store: store)
        let (client, logger) = Self.client(rig)
        let runner = try SyncRunner(writer: writer, views: views, client: client, logger: logger)
        struct Injected: Error, CustomStringConvertible { var description: String { "injected failure\nwith a second line" } }
        runner.failAfterStart = { throw Injected() }
        await #expect(throws: Injected.self) { _ = try await runner.run(SyncRequest(roster: Fixtures.roster, now: Fixtures.day(1).nowDate)) }
        let events = try StoreReader.events(tmp.sub("store"))
        let last = try #require(events.last)
        #expect(last.type == "sync.completed")
        #expect(last.data["status"]?.stringValue == "failed", "\(last.data)")
        #expect(last.data["error_message"]?.stringValue == "injected failure with a second line", "\(last.data)")
        #expect(last.data["unchanged"] == .array([]), "\(last.data)")
        runner.failAfterStart = nil
        let again = try await runner.run(SyncRequest(roster: Fixtures.roster, now: Fixtures.day(1).nowDate))
        #expect(again.status == "completed" && again.abandoned.isEmpty, "\(again.abandoned)")
        await rig.stop()
    }
}
