import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GRDB
import JSONCore
import Ledger
import Projections
@testable import Service
import Testing
import TestSupport

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

    /// `syncledger rebuild` on views too damaged to rebuild in place moves the file aside and folds
    /// the log into a new one. The running server switches to the new file by itself: never while
    /// a rebuild is folding into it, and only once it caught it up (a half-built file is never
    /// shown). Its readers get answers again, and damage met in the old file is not recorded
    /// again.
    @Test func aRebuildIntoANewFileIsServedWithoutARestart() async throws {
        let rig = try await ServerRig.start()
        defer { Task { await rig.stop() } }
        let first = try await rig.nightlyAndWait()
        #expect(first["status"]?.stringValue == "completed", "\(first.text)")
        let before = try await rig.get("/api/v1/appointments", token: rig.tokens.reader)
        #expect(before.status == 200 && !before.array.isEmpty, "\(before.text)")
        let oldFile = rig.server.viewsHandle.currentFile
        try await damageRootPage(of: "appointments", rig)
        #expect(try await rig.get("/api/v1/appointments", token: rig.tokens.reader).status == 503)

        // Another file at the path, empty, while a "rebuild" holds its lock: not switched to.
        let store = try Store.open(rig.store)
        let aside = rig.store + "/projections.sqlite.aside-for-test"
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: store.projectionsPath + suffix) {
            try FileManager.default.moveItem(atPath: store.projectionsPath + suffix, toPath: aside + suffix)
        }
        let lock = open(store.projectionsPath + ".rebuild-lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        try #require(lock >= 0 && flock(lock, LOCK_EX) == 0)
        let empty = try ProjectionStore(store: store)
        try await Task.sleep(nanoseconds: 2_500_000_000)
        // The old pool's idle connections closed: the next read needs a new one, which SQLite
        // opens by path. It must not read the empty file (200 with no rows, or "no such table").
        try #require(rig.server.views.pool as? DatabasePool).releaseMemory()
        let during = try await rig.get("/api/v1/appointments", token: rig.tokens.reader)
        #expect(during.status == 503 && during.text.contains("being rebuilt"), "\(during.status) \(during.text)")
        #expect(rig.server.viewsHandle.currentFile == oldFile)
        // The lock let go (an interrupted rebuild): the server catches the file up itself, then reads it.
        close(lock)
        var answer = Answer(status: 0, text: "")
        #expect(await rig.eventually(timeout: 15) {
            answer = try await rig.get("/api/v1/appointments", token: rig.tokens.reader)
            return answer.status == 200
        }, "still \(answer.status) \(answer.text)")
        #expect(answer.array.count == before.array.count, "a half-built file was shown: \(answer.array.count) rows")
        _ = empty
        // Damage met in the old file now (a read or a run that began before the switch) is not
        // recorded; the same in the file at the path is.
        try ViewsDamageRecord.clear(store)
        let damage = DatabaseError(resultCode: .SQLITE_CORRUPT, message: "database disk image is malformed")
        #expect(await rig.server.noteViewsDamage(damage, readFrom: oldFile) == false)
        #expect(ViewsDamageRecord.last(store) == nil)
        #expect(await rig.server.noteViewsDamage(damage, readFrom: rig.server.viewsHandle.currentFile) == true)
        #expect(ViewsDamageRecord.last(store)?.command == "serve")
        try ViewsDamageRecord.clear(store)

        // The real thing: the damaged file back in place, `syncledger rebuild` moves it aside.
        try await damageRootPage(of: "appointments", rig)
        #expect(try await rig.get("/api/v1/appointments", token: rig.tokens.reader).status == 503)
        let rebuild = try Spawned(["--store", rig.store, "rebuild"], dir: rig.dir.path)
        #expect(await rebuild.wait() == 0, "\(rebuild.stderr)")
        #expect(rebuild.stderr.contains("moved it aside"), "\(rebuild.stderr)")
        #expect(ViewsDamageRecord.last(store) == nil, "the rebuild did not clear the record")
        // The first read after it may meet the old file: not recorded, tried again on the new one
        // (the server waits a moment for a file written just now to settle).
        #expect(await rig.eventually(timeout: 15) {
            answer = try await rig.get("/api/v1/appointments", token: rig.tokens.reader)
            return answer.status == 200
        }, "still \(answer.status) \(answer.text)")
        #expect(answer.array.count == before.array.count, "\(answer.text)")
        let status = try await rig.admin("/api/v1/status")
        #expect(status["views_damaged"] == .null, "\(status.text)")
        #expect(ViewsDamageRecord.last(store) == nil, "the server recorded the damage of the old file again")
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
