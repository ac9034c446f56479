import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import Sync
import TestSupport
import Testing

/// Cases a review of the sync runner asked for: a known appointment handed to a client outside
/// the roster, a crawl that "completes" while most known appointments are missing, and a roster
/// that gives two patients one IntakeQ client.
@Suite("End to end: leaving scope and suspicious crawls")
struct ScopeAndSanityTests {
    /// Day 1's state with one appointment's object rewritten.
    static func state(rewriting id: String, _ edit: (inout [String: Any]) -> Void) throws -> PracticeState {
        var state = Fixtures.day(1).state
        state.appointments = try state.appointments.map { raw in
            var object = try #require(try JSONSerialization.jsonObject(with: Data(raw)) as? [String: Any])
            guard object["Id"] as? String == id else { return raw }
            edit(&object)
            return Array(try JSONSerialization.data(withJSONObject: object))
        }
        return state
    }

    @Test("a known appointment moved to a client outside the roster is recorded as removed (out_of_scope), by id only")
    func knownAppointmentLeavingTheRoster() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        _ = try await rig.sync(store: store, day: 1)
        let row = try #require(try StoreReader.appointments(store).first { $0["removed"] == .bool(false) && $0["patient_id"] != .null })
        let id = try #require(row["appointment_id"]?.stringValue)

        rig.server.setState(try Self.state(rewriting: id) { o in
            o["ClientId"] = 987_654
            o["ClientName"] = "Outside Person"
            o["ClientEmail"] = "outside.person@example.net"
            o["AdditionalClients"] = []
            o["LastModified"] = 1_900_000_000_000
        })
        let outcome = try await rig.sync(store: store, day: 1)
        #expect(outcome.status == "completed")
        #expect(outcome.counts.removed == 1)
        let removed = try StoreReader.events(store).filter { $0.run == outcome.runId && $0.type == "appointment.removed" }
        #expect(removed.map(\.appointmentId) == [id])
        #expect(removed.first?.data["reason"]?.stringValue == "out_of_scope")
        let after = try #require(try StoreReader.appointments(store).first { $0["appointment_id"] == .string(id) })
        #expect(after["removed"] == .bool(true))
        // None of the new client's data reached the log.
        let lines = try StoreReader.events(store).map { String(decoding: $0.envelope.encoded(), as: UTF8.self) }
        #expect(!lines.contains { $0.contains("Outside Person") || $0.contains("outside.person") || $0.contains("987654") })
        await rig.stop()
    }

    @Test("a crawl that completes while most known appointments are missing removes nothing and says why")
    func suspiciousEmptyCrawl() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        let first = try await rig.sync(store: store, day: 1)
        #expect(first.counts.new > 100)
        var empty = Fixtures.day(1).state
        empty.appointments = []
        rig.server.setState(empty)
        rig.server.clearRequests()
        let outcome = try await rig.sync(store: store, day: 1)
        #expect(outcome.status == "partial_success")
        #expect(outcome.counts.removed == 0)
        #expect(outcome.warnings.contains { $0.contains("nothing was looked up or removed") }, "\(outcome.warnings)")
        #expect(!rig.server.requests().contains { $0.path.hasPrefix("/appointments/") && $0.path != "/appointments/settings" },
                "no lookups by id")
        #expect(try StoreReader.appointments(store).allSatisfy { $0["removed"] == .bool(false) })
        await rig.stop()
    }

    @Test("a roster that gives two patients one IntakeQ client is refused, naming both by id")
    func duplicateClientIdInRoster() throws {
        let tmp = TempDir()
        let path = tmp.sub("roster.json")
        let text = """
            {"organizations": [{"id": "a", "patients": [{"id": "p1", "name": "One", "intakeq_client_id": 4101}]},
                               {"id": "b", "patients": [{"id": "p2", "name": "Two", "intakeq_client_id": "4101"}]}]}
            """
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        #expect {
            _ = try Roster.load(path: path)
        } throws: { error in
            let message = "\(error)"
            return message.contains("organizations[1].patients[0].intakeq_client_id") && message.contains("4101")
                && message.contains("p1") && !message.contains("One") && !message.contains("Two")
        }
    }

    @Test("a roster that gives two organizations one id is refused, naming the entries")
    func duplicateOrganizationIdInRoster() throws {
        let tmp = TempDir()
        let path = tmp.sub("roster.json")
        let text = """
            {"organizations": [{"id": "fsh", "patients": [{"id": "p1", "name": "One", "intakeq_client_id": 4101}]},
                               {"id": "rrc", "patients": [{"id": "p2", "name": "Two", "intakeq_client_id": 4102}]},
                               {"id": "fsh", "patients": [{"id": "p3", "name": "Three", "intakeq_client_id": 4103}]}]}
            """
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        #expect {
            _ = try Roster.load(path: path)
        } throws: { error in
            let message = "\(error)"
            return message.contains("$.organizations[2].id") && message.contains("repeats organization id fsh")
                && message.contains("$.organizations[0]") && !message.contains("One") && !message.contains("Three")
        }
        // Distinct ids load.
        let fine = text.replacingOccurrences(of: #"{"id": "fsh", "patients": [{"id": "p3""#, with: #"{"id": "hwc", "patients": [{"id": "p3""#)
        #expect(fine != text)
        _ = FileManager.default.createFile(atPath: path, contents: Data(fine.utf8))
        #expect(try Roster.load(path: path).organizations.map(\.id) == ["fsh", "rrc", "hwc"])
    }

    /// A roster saved by a Windows editor starts with a UTF-8 byte-order mark: it loads as the
    /// same roster (it was refused, "unexpected character" at byte 0). A mark anywhere else is
    /// still refused.
    @Test("a roster that starts with a byte-order mark loads")
    func rosterWithByteOrderMark() throws {
        let tmp = TempDir()
        let path = tmp.sub("roster.json")
        let text = try Data(contentsOf: URL(fileURLWithPath: Paths.roster))
        _ = FileManager.default.createFile(atPath: path, contents: Data([0xEF, 0xBB, 0xBF]) + text)
        let marked = try Roster.load(path: path)
        let plain = try Roster.load(path: Paths.roster)
        #expect(marked.organizations.map(\.id) == plain.organizations.map(\.id))
        #expect(marked.allPatients.map(\.id) == plain.allPatients.map(\.id))
        _ = FileManager.default.createFile(atPath: path, contents: Data(" ".utf8) + Data([0xEF, 0xBB, 0xBF]) + text)
        #expect(throws: SyncError.self) { try Roster.load(path: path) }
    }

    /// A roster merged by hand with a key twice in one object (two "patients" lists) lost the
    /// first without a word; bytes that are not UTF-8 were read as replacement characters.
    /// Each is refused in one line that says where, without the names around it.
    @Test("a roster with a key given twice, or bytes that are not UTF-8, is refused")
    func repeatedKeysAndBadBytesInRoster() throws {
        let tmp = TempDir()
        let path = tmp.sub("roster.json")
        let twice = #"{"organizations": [{"id": "fsh", "patients": [{"id": "p1", "name": "Ann One", "intakeq_client_id": 4101}], "patients": [{"id": "p2", "intakeq_client_id": 4102}]}]}"#
        _ = FileManager.default.createFile(atPath: path, contents: Data(twice.utf8))
        let at = twice.utf8.count - #""patients": [{"id": "p2", "intakeq_client_id": 4102}]}]}"#.utf8.count
        do {
            _ = try Roster.load(path: path)
            Issue.record("a roster with a key twice loaded")
        } catch {
            #expect("\(error)" == "roster \(path) is not valid JSON: invalid JSON at byte \(at): \"patients\" appears twice in one object")
        }
        var bad = Array(#"{"organizations": [{"id": "fsh", "patients": [{"id": "p1", "name": "Ann "#.utf8)
        let badAt = bad.count
        bad += [0xC3, 0x28] + Array(#"", "intakeq_client_id": 4101}]}]}"#.utf8)
        _ = FileManager.default.createFile(atPath: path, contents: Data(bad))
        do {
            _ = try Roster.load(path: path)
            Issue.record("a roster that is not UTF-8 loaded")
        } catch {
            #expect("\(error)" == "roster \(path) is not valid JSON: invalid JSON at byte \(badAt): not UTF-8 text")
        }
        // The same without the repeat, and with the name's bytes mended, load.
        let once = twice.replacingOccurrences(of: #"], "patients": [{"id": "p2""#, with: #", {"id": "p2""#)
        #expect(once != twice)
        _ = FileManager.default.createFile(atPath: path, contents: Data(once.utf8))
        #expect(try Roster.load(path: path).organizations.first?.patients.map(\.id) == ["p1", "p2"])
        bad[badAt] = 0xC3
        bad[badAt + 1] = 0xA9
        _ = FileManager.default.createFile(atPath: path, contents: Data(bad))
        #expect(try Roster.load(path: path).organizations.first?.patients.first?.name == "Ann é")
    }

    /// A run that must wait for the per-minute limit (calls of the run before it fill the
    /// minute) says so on its progress line before it waits (it said nothing for a minute:
    /// hostile test).
    @Test("a wait for the API rate limit is said before it is waited")
    func aRateLimitWaitIsSaid() async throws {
        let tmp = TempDir()
        let rig = try await Rig.start(day: 1)
        let store = tmp.sub("store")
        let policy = RateLimitPolicy(requestsPerMinute: 3, dailyBudget: 100_000)
        _ = try await rig.sync(store: store, day: 1, policy: policy)
        let lines = Locked<[String]>([])
        let sleptBefore = rig.clock.sleeps.count
        _ = try await rig.sync(store: store, day: 1, policy: policy, progress: { line in lines.withLock { $0.append(line) } })
        let waits = lines.withLock { $0 }.filter { $0.hasPrefix("waiting ") }
        #expect(!waits.isEmpty, "\(lines.withLock { $0 })")
        #expect(waits.allSatisfy { $0.contains("s for the API rate limit (3 requests a minute, 3 made in the last minute)") }, "\(waits)")
        // After each wait the step it interrupted is shown again (the line kept saying "waiting").
        let all = lines.withLock { $0 }
        for (i, line) in all.enumerated() where line.hasPrefix("waiting ") {
            #expect(i + 1 < all.count && !all[i + 1].hasPrefix("waiting ") && all[..<i].last { !$0.hasPrefix("waiting ") } == all[i + 1],
                    "after \(line): \(all)")
        }
        // Every wait of a second or more was said (the client's clock sleeps instead of waiting).
        #expect(waits.count == rig.clock.sleeps.dropFirst(sleptBefore).filter { $0 >= 1 }.count, "\(waits) \(rig.clock.sleeps)")
        await rig.stop()
    }
}
