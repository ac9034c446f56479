import Foundation
import GRDB
import JSONCore
import Ledger
import Projections
@testable import Service
import Testing

/// A request that meets a damaged page of the views gets a 503 saying what to do, not "internal
/// error", and the damage is recorded for `status`: /metrics and the built-in alerts show it.
@Suite(.serialized) struct ViewsDamageServiceTests {
    @Test func aRequestMeetingADamagedPageIs503AndRaisesTheAlert() async throws {
        let rig = try await ServerRig.start()
        defer { Task { await rig.stop() } }
        let run = try await rig.nightlyAndWait()
        #expect(run["status"]?.stringValue == "completed", "\(run.text)")
        #expect(try await rig.get("/api/v1/appointments", token: rig.tokens.reader).status == 200)
        #expect(try await rig.server.alertConditions().filter { $0.alert == "views_damaged" }.isEmpty)

        try await damageRootPage(of: "appointments", rig)

        let answer = try await rig.get("/api/v1/appointments", token: rig.tokens.reader)
        #expect(answer.status == 503, "\(answer.status) \(answer.text)")
        #expect(answer["error"]?.stringValue?.contains("syncledger rebuild") == true, "\(answer.text)")
        let record = try #require(ViewsDamageRecord.last(try Store.open(rig.store)))
        #expect(record.command == "serve")
        #expect(record.error.contains("malformed"), "\(record.error)")

        let conditions = try await rig.server.alertConditions()
        #expect(conditions.map(\.alert).contains("views_damaged"), "\(conditions)")
        let m = try Exposition(try await rig.admin("/metrics").text)
        #expect(m.value("syncledger_views_damaged") == 1)
        // The status route reads only `sync_logs`: it answers, and says so.
        let status = try await rig.admin("/api/v1/status")
        #expect(status.status == 200 && status["ok"] == .bool(false), "\(status.text)")
        #expect(status["views_damaged"]?["command"]?.stringValue == "serve", "\(status.text)")
    }

    /// Damage under the pages the health check itself reads (`sync_logs`) must not hide itself
    /// behind a failing scrape: the check records it, /metrics answers with the gauge at 1 and
    /// the alert holds, with no request meeting it first.
    @Test func damageUnderTheHealthCheckStillRaisesTheAlert() async throws {
        let rig = try await ServerRig.start()
        defer { Task { await rig.stop() } }
        let run = try await rig.nightlyAndWait()
        #expect(run["status"]?.stringValue == "completed", "\(run.text)")
        try await damageRootPage(of: "sync_logs", rig)
        let conditions = try await rig.server.alertConditions()
        #expect(conditions.map(\.alert).contains("views_damaged"), "\(conditions)")
        #expect(ViewsDamageRecord.last(try Store.open(rig.store))?.command == "serve")
        let scrape = try await rig.admin("/metrics")
        #expect(scrape.status == 200, "\(scrape.text)")
        #expect(try Exposition(scrape.text).value("syncledger_views_damaged") == 1)
    }

    /// A run of the server's own (here the nightly one) that meets the damage records it too,
    /// with no request or health check reading the damaged page.
    @Test func aRunMeetingDamageRecordsIt() async throws {
        let rig = try await ServerRig.start()
        defer { Task { await rig.stop() } }
        let first = try await rig.nightlyAndWait()
        #expect(first["status"]?.stringValue == "completed", "\(first.text)")
        try await damageRootPage(of: "appointments_objects", rig)
        let run = try await rig.nightlyAndWait()
        #expect(run["status"]?.stringValue == "failed", "\(run.text)")
        let store = try Store.open(rig.store)
        #expect(await rig.eventually(timeout: 10) { ViewsDamageRecord.last(store) != nil })
        #expect(ViewsDamageRecord.last(store)?.command == "serve")
    }

    /// Overwrites the root page of `table` in the running server's views file and drops the
    /// server's cached pages, so that its next read meets the damage.
    func damageRootPage(of table: String, _ rig: ServerRig) async throws {
        let views = rig.server.views
        try await views.pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        let (root, size) = try views.readSync { db in
            (try Int.fetchOne(db, sql: "SELECT rootpage FROM sqlite_master WHERE name = ?", arguments: [table]) ?? 0,
             try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 0)
        }
        let file = try #require(FileHandle(forWritingAtPath: rig.store + "/projections.sqlite"))
        try file.seek(toOffset: UInt64((root - 1) * size))
        try file.write(contentsOf: Data(repeating: 0xFF, count: size))
        try file.close()
        try #require(views.pool as? DatabasePool).releaseMemory()
    }
}
