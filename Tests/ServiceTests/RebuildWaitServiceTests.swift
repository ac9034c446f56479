import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GRDB
import Logging
import JSONCore
@testable import Service
import Testing
import TestSupport

/// `serve` runs syncs in-process: one whose views must be rebuilt while another process
/// rebuilds them waits for it, and says so in the service's log (it hung silently before).
@Suite(.serialized) struct RebuildWaitServiceTests {
    @Test func aRunWaitingForAnotherRebuildSaysSoInTheLog() async throws {
        let lines = Locked<[String]>([])
        let rig = try await ServerRig.start { config in
            config.logger = Logger(label: "servicetests") { _ in CapturingLogHandler(lines: lines) }
        }
        defer { Task { await rig.stop() } }
        let first = try await rig.nightlyAndWait()
        #expect(first["status"]?.stringValue == "completed", "\(first.text)")

        // The views at another schema version (as after an upgrade), and their rebuild lock held
        // by "another process" (this one, its pid in the lock file).
        let views = rig.store + "/projections.sqlite"
        try await DatabaseQueue(path: views).write { db in
            try db.execute(sql: "UPDATE projection_state SET schema_version = schema_version + 100 WHERE name = 'appointments'")
        }
        let lock = open(views + ".rebuild-lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        try #require(lock >= 0)
        var held = true
        defer { if held { close(lock) } }
        #expect(flock(lock, LOCK_EX | LOCK_NB) == 0)
        _ = Array("\(getpid())\n".utf8).withUnsafeBytes { pwrite(lock, $0.baseAddress, $0.count, 0) }

        let (record, _) = try rig.server.coordinator.enqueue(.all, syncType: "automated_daily", triggeredBy: "scheduler")
        let said = await rig.eventually(timeout: 30) {
            lines.withLock { $0.contains { $0.contains("waits for another process's rebuild of the views") && $0.contains("holder_pid=\(getpid())") } }
        }
        #expect(said, "\(lines.withLock { $0 })")
        close(lock)
        held = false
        var last = try await rig.admin("/api/v1/runs/" + record.runId)
        _ = await rig.eventually(timeout: 60) {
            last = try await rig.admin("/api/v1/runs/" + record.runId)
            let s = last["status"]?.stringValue ?? ""
            return s != "queued" && s != "running"
        }
        #expect(last["status"]?.stringValue == "completed", "\(last.text)")
    }
}
