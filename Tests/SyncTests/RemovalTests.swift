import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import Sync
import TestSupport
import Testing

@Suite("End to end: removal needs evidence")
struct RemovalTests {
    @Test("deletedOnly → removed deleted_only; gone from a complete crawl → lookup → 404 → removed not_found; never after an incomplete crawl; a move out of the window is a change")
    func removalOnlyWithEvidence() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        let deleteD2 = Fixtures.traps["delete_d2"]!
        let vanishD3 = Fixtures.traps["vanish_d3"]!
        let movedFar = Fixtures.traps["moved_far_d4"]!

        _ = try await rig.sync(store: store, day: 1)

        // Day 2: delete_d2 is reported by deletedOnly=true.
        rig.setDay(2)
        let d2 = try await rig.sync(store: store, day: 2)
        #expect(d2.status == "completed")
        let e2 = try StoreReader.events(store).filter { $0.run == d2.runId && $0.type == "appointment.removed" }
        #expect(e2.map(\.appointmentId) == [deleteD2])
        #expect(e2.first?.data["reason"]?.stringValue == "deleted_only")
        #expect(e2.first?.envelope.stream == "appointment/" + deleteD2)

        // Day 3 with page 2 of the window crawl failing with 500 on every attempt (1 + 4 retries):
        // the crawl is incomplete, so vanish_d3 (gone without a `deleted` entry) is neither
        // looked up nor removed.
        rig.setDay(3)
        rig.server.clearRequests()
        rig.server.inject(.status(500, retryAfter: nil), path: "/appointments", page: 2, times: 5)
        let partial = try await rig.sync(store: store, day: 3)
        #expect(partial.status == "partial_success")
        #expect(partial.exitCode == 2)
        #expect(partial.counts.removed == 0)
        #expect(partial.counts.errors == 1)
        #expect(partial.counts.patientsFailed == partial.counts.patientsProcessed)
        #expect(partial.errors.contains { $0.contains("page 2") && $0.contains("500") }, "\(partial.errors)")
        #expect(partial.api.retries == 4)
        let p3 = try StoreReader.events(store).filter { $0.run == partial.runId }
        #expect(!p3.contains { $0.type == "appointment.removed" })
        let page2Attempts = rig.server.requests().filter { $0.path == "/appointments" && $0.page == 2 && $0.query["deletedOnly"] == nil }
        #expect(page2Attempts.count == 5 && page2Attempts.allSatisfy { $0.status == 500 })
        #expect(!rig.server.requests().contains { $0.path.hasPrefix("/appointments/") && $0.path != "/appointments/settings" },
                "an incomplete crawl must not look anything up")
        let logs = try StoreReader.syncLogs(store)
        #expect(logs.first { $0["id"] == .string(partial.runId) }?["status"] == .string("partial_success"))
        let vanishRow = try StoreReader.appointments(store).first { $0["appointment_id"] == .string(vanishD3) }
        #expect(vanishRow?["removed"] == .bool(false))

        // Day 3 again, complete: vanish_d3 is looked up by id, 404 → removed not_found.
        rig.server.clearRequests()
        let d3 = try await rig.sync(store: store, day: 3)
        #expect(d3.status == "completed")
        let e3 = try StoreReader.events(store).filter { $0.run == d3.runId && $0.type == "appointment.removed" }
        #expect(e3.map(\.appointmentId) == [vanishD3])
        #expect(e3.first?.data["reason"]?.stringValue == "not_found")
        let lookups = rig.server.requests().filter { $0.path == "/appointments/" + vanishD3 }
        #expect(lookups.count == 1 && lookups.first?.status == 404)
        let vanishAfter = try StoreReader.appointments(store).first { $0["appointment_id"] == .string(vanishD3) }
        #expect(vanishAfter?["removed"] == .bool(true))

        // Day 4: moved_far_d4 moves to now + 200 days: not in the crawl, looked up by id, returned → changed.
        rig.setDay(4)
        rig.server.clearRequests()
        let d4 = try await rig.sync(store: store, day: 4)
        #expect(d4.status == "completed")
        #expect(d4.counts.removed == 0)
        let moved = try StoreReader.events(store).filter { $0.run == d4.runId && $0.appointmentId == movedFar }
        #expect(moved.map(\.type) == ["appointment.changed"])
        let fields = moved.first?.data["changed_fields"].flatMap { v -> [String]? in
            if case .array(let a) = v { return a.compactMap(\.stringValue) }
            return nil
        } ?? []
        #expect(fields.contains("StartDate"), "\(fields)")
        #expect(rig.server.requests().contains { $0.path == "/appointments/" + movedFar && $0.status == 200 })
        let movedRow = try StoreReader.appointments(store).first { $0["appointment_id"] == .string(movedFar) }
        #expect(movedRow?["removed"] == .bool(false))
        let startAt = movedRow?["start_at"]?.stringValue ?? ""
        #expect(startAt > "2027-06-01", "start_at \(startAt)")
        await rig.stop()
    }
}
