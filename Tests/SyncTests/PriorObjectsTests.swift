import Domain
import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import Ledger
@testable import Projections
@testable import Sync
import TestSupport
import Testing

/// The diff reads the prior objects of the appointments whose hash changed in one call, after
/// every fetched appointment is observed. What it does when that read fails, for one appointment
/// or for all of them.
@Suite struct PriorObjectsTests {
    /// Day 1's in-roster appointments as fetched, and a `known` entry for each with an old hash.
    static func fixture() throws -> (SyncPlan, [FetchedAppointment], [String: KnownAppointment]) {
        let plan = try SyncPlan(SyncRequest(roster: Fixtures.roster, now: Fixtures.day(1).nowDate))
        var fetched: [FetchedAppointment] = []
        var known: [String: KnownAppointment] = [:]
        for bytes in Fixtures.day(1).state.appointments {
            let a = try FetchedAppointment.parse(json: bytes)
            guard let facts = try? AppointmentFacts(object: a.value), plan.inScope(facts), plan.inWindow(facts) else { continue }
            fetched.append(a)
            known[a.id] = KnownAppointment(id: a.id, contentHash: "old", removed: false,
                                           clientIds: RosterMembership.clientIds(of: facts), startMillis: facts.startMillis)
        }
        return (plan, fetched, known)
    }

    static func fetch(_ appointments: [FetchedAppointment]) -> FetchResult {
        var f = FetchResult()
        f.crawled = appointments
        f.crawlComplete = true
        f.anythingFetched = true
        return f
    }

    @Test func oneUnreadablePriorCostsOnlyThatAppointment() throws {
        let (plan, fetched, known) = try Self.fixture()
        #expect(fetched.count >= 4, "day 1 should have in-scope appointments (\(fetched.count))")
        let bad = fetched[1].id
        var asked: [[String]] = []
        var diff = SyncDiff(plan: plan, known: known) { ids in
            asked.append(ids)
            var r = ProjectionStore.RecordedObjects()
            for a in fetched where ids.contains(a.id) {
                guard a.id != bad else {
                    r.unreadable[a.id] = "seq 9: damaged"
                    continue
                }
                // The prior version (as recorded: redacted) differed in one field.
                guard case .object(var o) = Redaction.apply(a.value, rosterClients: plan.rosterClients).object else { continue }
                o["Status"] = .string("Was-\(o["Status"]?.stringValue ?? "")")
                r.objects[a.id] = .object(o)
            }
            return r
        }
        diff.apply(Self.fetch(fetched))
        #expect(asked.count == 1 && Set(asked[0]) == Set(fetched.map(\.id)), "one read for all the changed ones")
        #expect(diff.changed.count == fetched.count - 1)
        #expect(diff.changed.allSatisfy { $0.changedFields == ["Status"] }, "\(diff.changed.map(\.changedFields))")
        #expect(!diff.changed.contains { $0.appointmentId == bad })
        #expect(diff.counted == 1)
        #expect(diff.warnings.contains { $0.contains(bad) && $0.contains("could not be read") }, "\(diff.warnings)")
        // The order of the changed ones is the order they were fetched in.
        #expect(diff.changed.map(\.appointmentId) == fetched.map(\.id).filter { $0 != bad })
    }

    @Test func aFailedReadRecordsNoneOfTheChangedAndSaysSo() throws {
        let (plan, fetched, known) = try Self.fixture()
        var unknown = known
        // One appointment the ledger has never seen: discovered whatever the read does.
        let new = fetched[0].id
        unknown[new] = nil
        var diff = SyncDiff(plan: plan, known: unknown) { _ in throw LedgerError("segment 3 is damaged") }
        diff.apply(Self.fetch(fetched))
        #expect(diff.discovered.map(\.appointmentId) == [new])
        #expect(diff.changed.isEmpty && diff.unchanged.isEmpty)
        #expect(diff.counted == fetched.count - 1)
        #expect(diff.warnings.filter { $0.contains("segment 3 is damaged") }.count == 1, "\(diff.warnings)")
    }

    @Test func readsAreGroupedAndOrderIsKept() throws {
        let (plan, fetched, known) = try Self.fixture()
        // Many changed appointments: copies of the fixture's under new ids.
        var many: [FetchedAppointment] = []
        var knownMany: [String: KnownAppointment] = [:]
        for i in 0..<(SyncDiff.resolveGroup * 2 + 7) {
            let a = fetched[i % fetched.count]
            guard case .object(var o) = a.value else { continue }
            let id = "copy-\(i)"
            o["Id"] = .string(id)
            let copy = try FetchedAppointment.parse(json: Array(JSONValue.object(o).canonicalText.utf8))
            many.append(copy)
            // Every third one unchanged: its known hash is the one the diff computes (after redaction).
            let hash = contentHash(of: Redaction.apply(copy.value, rosterClients: plan.rosterClients).object)
            knownMany[id] = KnownAppointment(id: id, contentHash: i % 3 == 0 ? hash : "old", removed: false,
                                             clientIds: known[a.id]!.clientIds, startMillis: known[a.id]!.startMillis)
        }
        var sizes: [Int] = []
        var diff = SyncDiff(plan: plan, known: knownMany) { ids in
            sizes.append(ids.count)
            return ProjectionStore.RecordedObjects()
        }
        diff.apply(Self.fetch(many))
        #expect(sizes.count == 2 && sizes.allSatisfy { $0 <= SyncDiff.resolveGroup }, "\(sizes)")
        #expect(sizes.reduce(0, +) == many.count - (many.count + 2) / 3, "each changed one read once: \(sizes)")
        let ids = many.map(\.id)
        #expect(diff.unchanged.map(\.id) == ids.enumerated().filter { $0.offset % 3 == 0 }.map(\.element))
        #expect(diff.changed.map(\.appointmentId) == ids.enumerated().filter { $0.offset % 3 != 0 }.map(\.element))
    }
}
