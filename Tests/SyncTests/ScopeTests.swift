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

@Suite("End to end: scope, roster and minimum necessary")
struct ScopeTests {
    static let samLee = "p-017"  // Sam Lee, ClientId 4117, sam.lee@example.org

    /// Ids of a day's in-window appointments in which `clientId` takes part.
    static func appointmentIds(of clientId: String, day: Int) -> Set<String> {
        let now = Int64(Fixtures.day(day).nowDate.timeIntervalSince1970 * 1000)
        let lo = now - 90 * 86_400_000, hi = now + 90 * 86_400_000
        return Set(Fixtures.appointments(day: day).filter { a in
            a.allClientIds.contains(clientId) && (a.startDate.map { $0 >= lo && $0 <= hi } ?? true)
        }.compactMap(\.id))
    }

    @Test("Sam Lee and Sam Leeds stay apart in a manual_patient sync (client= partial match, filtered by ClientId)")
    func partialMatchStaysApart() async throws {
        let tmp = TempDir()
        let expected = Self.appointmentIds(of: "4117", day: 4)
        #expect(expected.isSuperset(of: [Fixtures.traps["sam_lee_1"]!, Fixtures.traps["sam_lee_2"]!]))
        let leeds = Set(["sam_leeds_1", "sam_leeds_2", "sam_leeds_3", "sam_leeds_new_d4"].map { Fixtures.traps[$0]! })

        func check(_ store: String, _ outcome: SyncOutcome, _ label: String) throws {
            #expect(outcome.status == "completed", "\(label): \(outcome.errors)")
            #expect(outcome.syncType == "manual_patient")
            let events = try StoreReader.events(store)
            let ids = RunIds(events: events, run: outcome.runId)
            #expect(ids.new == expected, "\(label): extra \(ids.new.subtracting(expected)), missing \(expected.subtracting(ids.new))")
            #expect(ids.new.isDisjoint(with: leeds), "\(label)")
            let started = events.first { $0.run == outcome.runId && $0.type == "sync.started" }
            #expect(started?.data["patient_id"]?.stringValue == Self.samLee, "\(label)")
            #expect(started?.data["sync_type"]?.stringValue == "manual_patient", "\(label)")
            let rows = try StoreReader.appointments(store)
            #expect(rows.allSatisfy { $0["intakeq_client_id"] == .string("4117") && $0["patient_id"] == .string(Self.samLee) }, "\(label)")
            // Nothing about Sam Leeds anywhere in the log.
            for e in events {
                let text = String(decoding: e.envelope.encoded(), as: UTF8.self)
                #expect(!text.contains("Sam Leeds") && !text.contains("sam.leeds@") && !text.contains("\"ClientId\":5300"), "\(label): seq \(e.seq)")
            }
        }

        // 1. The fixture as is: the runner asks client=<email>.
        do {
            let rig = try await Rig.start(day: 4)
            let store = tmp.sub("email")
            let outcome = try await rig.sync(store: store, day: 4, patient: Self.samLee)
            let windowQueries = rig.server.requests().filter { $0.path == "/appointments" && $0.query["deletedOnly"] == nil }
            #expect(!windowQueries.isEmpty && windowQueries.allSatisfy { $0.query["client"] == "sam.lee@example.org" })
            try check(store, outcome, "client=email")
            await rig.stop()
        }

        // 2. Sam Leeds' email contains Sam Lee's: the fake's partial match returns both to client=.
        do {
            var state = Fixtures.day(4).state
            state.appointments = state.appointments.map { raw in
                let s = String(decoding: raw, as: UTF8.self)
                return Array(s.replacingOccurrences(of: "sam.leeds@example.org", with: "sam.lee@example.org.au").utf8)
            }
            let rig = try await Rig.start(state: state)
            // The trap is real: the same query returns Sam Leeds' appointments too.
            let probe = IntakeQClient(baseURL: rig.baseURL, apiKey: rig.apiKey,
                                      limiter: RateLimiter(policy: .init(requestsPerMinute: 1000, dailyBudget: 1000)))
            let page = try await probe.appointmentsPage(AppointmentQuery(client: "sam.lee@example.org"), page: 1)
            #expect(!Set(page.compactMap(\.id)).isDisjoint(with: leeds), "the fake's client= should match Sam Leeds too")
            let store = tmp.sub("collision")
            let outcome = try await rig.sync(store: store, day: 4, patient: Self.samLee)
            #expect(outcome.status == "completed")
            let ids = RunIds(events: try StoreReader.events(store), run: outcome.runId)
            #expect(ids.new == expected)
            #expect(ids.new.isDisjoint(with: leeds))
            await rig.stop()
        }

        // 3. No email in the roster: the runner crawls the window and keeps only ClientId 4117.
        do {
            var roster = Fixtures.roster
            for o in roster.organizations.indices {
                for p in roster.organizations[o].patients.indices where roster.organizations[o].patients[p].id == Self.samLee {
                    roster.organizations[o].patients[p].email = nil
                }
            }
            let rig = try await Rig.start(day: 4)
            let store = tmp.sub("noemail")
            let outcome = try await rig.sync(store: store, day: 4, roster: roster, patient: Self.samLee)
            #expect(rig.server.requests().allSatisfy { $0.query["client"] == nil })
            try check(store, outcome, "window crawl")
            await rig.stop()
        }
    }

    @Test("a client outside the roster never appears in the log (cat log/*.seg | lz4 -dc)")
    func nonRosterNeverRecorded() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        _ = try await syncTimeline(rig, store: store)
        await rig.stop()

        let sh = try await ProcessRunner.run("/bin/sh", ["-c", "cat \"$0\"/log/*.seg | lz4 -dc > \"$0\"/../dump.jsonl", store])
        #expect(sh.status == 0, "lz4 -dc failed")
        let dump = String(decoding: FileManager.default.contents(atPath: tmp.sub("dump.jsonl")) ?? Data(), as: UTF8.self)
        let lines = dump.split(separator: "\n")
        #expect(UInt64(lines.count) == (try StoreReader.head(store)).seq, "lz4 -dc prints every event")
        #expect(dump.contains("\"sync.completed\"") && dump.contains("\"appointment.discovered\""))
        // Roster patients' personal data is sealed under their keys (issue 13): not in the log either.
        #expect(!dump.contains("Sam Lee") && !dump.contains("\"ClientId\":4117") && !dump.contains("sam.lee@example.org"))

        // Clients outside the roster, including those who share an in-scope appointment with a
        // roster patient (issue 13: a group appointment keeps only its roster patients).
        var all: [Appointment] = []
        for d in 1...5 { all += Fixtures.appointments(day: d, includeDeleted: true) }
        let sharing = Set<String>()
        struct Person: Hashable { var id: String; var name: String?; var email: String? }
        var outsiders = Set<Person>()
        for a in all {
            if let c = a.clientId?.stringValue, !Fixtures.rosterClientIds.contains(c), !sharing.contains(c) {
                outsiders.insert(Person(id: c, name: a.clientName, email: a.clientEmail))
            }
            for ac in a.additionalClients ?? [] {
                if let c = ac.clientId?.stringValue, !Fixtures.rosterClientIds.contains(c), !sharing.contains(c) {
                    outsiders.insert(Person(id: c, name: ac.clientName, email: ac.clientEmail))
                }
            }
        }
        #expect(outsiders.contains { $0.id == "5300" && $0.name == "Sam Leeds" })
        #expect(outsiders.count >= 10)
        for p in outsiders {
            if let n = p.name, !n.isEmpty { #expect(!dump.contains(n), "outsider name \(n) is in the log") }
            if let e = p.email, !e.isEmpty { #expect(!dump.contains(e), "outsider email \(e) is in the log") }
            for pattern in ["\"ClientId\":\(p.id)", "\"ClientId\":\"\(p.id)\""] {
                let hit = dump.ranges(of: pattern).contains { r in
                    // `"ClientId":53` must not match `"ClientId":5300`.
                    r.upperBound == dump.endIndex || !dump[r.upperBound].isNumber
                }
                #expect(!hit, "outsider ClientId \(p.id) is in the log")
            }
        }
        // The non-roster traps by id.
        for trap in ["new_d2_non_roster", "non_roster_change_d2", "delete_non_roster_d3", "group_no_roster",
                     "deleted_before_day1_non_roster", "sam_leeds_1", "sam_leeds_new_d4"] {
            #expect(!dump.contains(Fixtures.traps[trap]!), "\(trap) is in the log")
        }
    }

    @Test("a roster change re-attributes appointments on the next run; roster.observed only when it changed")
    func rosterChangeReattributes() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        func rosterEvents() throws -> [StoredEvent] { try StoreReader.events(store).filter { $0.type == "roster.observed" } }

        let r1 = try await rig.sync(store: store, day: 1)
        #expect(try rosterEvents().map(\.run) == [r1.runId])
        let r2 = try await rig.sync(store: store, day: 1)
        #expect(try rosterEvents().count == 1, "an unchanged roster is not recorded again")
        _ = r2

        // Move the first fsh patient that has appointments to hwc, and write the roster file.
        let rows = try StoreReader.appointments(store)
        let fsh = Fixtures.roster.organization("fsh")!.patients
        let mover = try #require(fsh.first { p in rows.contains { $0["patient_id"] == .string(p.id) } })
        let moved = Set(rows.filter { $0["patient_id"] == .string(mover.id) }.compactMap { $0["appointment_id"]?.stringValue })
        #expect(rows.filter { $0["patient_id"] == .string(mover.id) }.allSatisfy { $0["organization_id"] == .string("fsh") })

        let file = tmp.sub("roster-moved.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Paths.roster))) as! [String: Any]
        var orgs = json["organizations"] as! [[String: Any]]
        let from = orgs.firstIndex { $0["id"] as? String == "fsh" }!
        let to = orgs.firstIndex { $0["id"] as? String == "hwc" }!
        var fromPatients = orgs[from]["patients"] as! [[String: Any]]
        let i = fromPatients.firstIndex { $0["id"] as? String == mover.id }!
        let patient = fromPatients.remove(at: i)
        orgs[from]["patients"] = fromPatients
        orgs[to]["patients"] = (orgs[to]["patients"] as! [[String: Any]]) + [patient]
        json["organizations"] = orgs
        try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted]).write(to: URL(fileURLWithPath: file))
        let newRoster = try Roster.load(path: file)
        #expect(newRoster.hash != Fixtures.roster.hash)

        let r3 = try await rig.sync(store: store, day: 1, roster: newRoster)
        #expect(r3.status == "completed" && r3.counts.new == 0 && r3.counts.updated == 0)
        let observed = try rosterEvents()
        #expect(observed.map(\.run) == [r1.runId, r3.runId])
        // Nothing about the appointments themselves was recorded again.
        #expect(try !StoreReader.events(store).contains { $0.run == r3.runId && $0.type.hasPrefix("appointment.") })
        let after = try StoreReader.appointments(store)
        let afterMoved = after.filter { moved.contains($0["appointment_id"]?.stringValue ?? "") }
        #expect(afterMoved.count == moved.count)
        #expect(afterMoved.allSatisfy { $0["organization_id"] == .string("hwc") && $0["patient_id"] == .string(mover.id) })
        let hwc = try StoreReader.views(store).readSync { try Views.appointments($0, AppointmentFilter(organizationId: "hwc")) }
        #expect(moved.isSubset(of: Set(hwc.compactMap { $0["appointment_id"]?.stringValue })))
        let fshRows = try StoreReader.views(store).readSync { try Views.appointments($0, AppointmentFilter(organizationId: "fsh")) }
        #expect(moved.isDisjoint(with: Set(fshRows.compactMap { $0["appointment_id"]?.stringValue })))
        // Other patients keep their organization.
        let others = after.filter { !moved.contains($0["appointment_id"]?.stringValue ?? "") }
        let before = Dictionary(uniqueKeysWithValues: rows.map { ($0["appointment_id"]!.stringValue!, $0["organization_id"]) })
        #expect(others.allSatisfy { before[$0["appointment_id"]!.stringValue!] == $0["organization_id"] })

        // The same modified roster again: no new roster.observed.
        _ = try await rig.sync(store: store, day: 1, roster: newRoster)
        #expect(try rosterEvents().count == 2)
        await rig.stop()
    }
}
