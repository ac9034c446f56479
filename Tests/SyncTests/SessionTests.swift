import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import Sync
import TestSupport
import Testing

@Suite("SyncSession: the one path of a run")
struct SessionTests {
    /// A field nothing reads that changes type upstream must not fail the row: failing it would make
    /// the crawl incomplete and silently turn off removal detection for the whole practice.
    @Test("an odd type in a field nothing reads: the appointment is recorded, the crawl is complete, a vanished appointment is still removed")
    func oddTypeInAnUnreadField() async throws {
        let tmp = TempDir()
        let store = tmp.sub("store")
        let rig = try await Rig.start(day: 1)
        _ = try await rig.sync(store: store, day: 1)
        rig.setDay(2)
        _ = try await rig.sync(store: store, day: 2)

        // Day 3, with one in-roster appointment's Price sent as an object and its Duration as a string.
        var state = Fixtures.day(3).state
        let rosterIds = Fixtures.rosterClientIds
        // One recorded on day 2 and unchanged since (so the only change is the odd field).
        let day2 = Dictionary(uniqueKeysWithValues: Fixtures.day(2).state.appointments.compactMap { b -> (String, JSONValue)? in
            guard let v = try? JSONValue.parse(b), let id = v["Id"]?.stringValue else { return nil }
            return (id, v)
        })
        let index = try #require(state.appointments.firstIndex { bytes in
            guard let v = try? JSONValue.parse(bytes), let c = v["ClientId"]?.stringValue, let id = v["Id"]?.stringValue
            else { return false }
            return rosterIds.contains(c) && v["Price"] != nil && day2[id] == v
        })
        var odd = try JSONValue.parse(state.appointments[index])
        guard case .object(var o) = odd else { Issue.record("not an object"); return }
        o["Price"] = .object(["amount": .number(150), "currency": .string("USD")])
        o["Duration"] = .string("50")
        odd = .object(o)
        let oddId = try #require(odd["Id"]?.stringValue)
        state.appointments[index] = Array(odd.canonicalText.utf8)
        rig.server.setState(state)
        let d3 = try await rig.sync(store: store, day: 3)
        await rig.stop()

        #expect(d3.status == "completed", "\(d3.errors)")
        #expect(d3.counts.errors == 0)
        let events = try StoreReader.events(store).filter { $0.run == d3.runId }
        let changed = try #require(events.first { $0.type == "appointment.changed" && $0.appointmentId == oddId })
        #expect(changed.data["changed_fields"] == .array([.string("Duration"), .string("Price")]),
                "both fields changed type; the row is recorded all the same")
        let vanished = Fixtures.traps["vanish_d3"]!
        let removed = events.filter { $0.type == "appointment.removed" }
        #expect(removed.contains { $0.appointmentId == vanished && $0.data["reason"]?.stringValue == "not_found" })
        let row = try #require(try StoreReader.appointments(store).first { $0["appointment_id"]?.stringValue == oddId })
        #expect(row["duration_minutes"]?.int64Value == 50)
    }

    /// The daily budget and the call record in state/ hold on the path `syncledger sync` takes.
    @Test("the call record in state/ counts every call; a run the budget cannot cover is refused before anything is appended")
    func budgetAndCallRecordOnTheSessionPath() async throws {
        let tmp = TempDir()
        let store = tmp.sub("store")
        let rig = try await Rig.start(day: 1)
        // The call record is on the real clock (the rig's manual clock starts at the real now).
        let first = try await rig.sync(store: store, day: 1)
        #expect(first.status == "completed")
        let recordPath = store + "/state/api-calls.json"
        let record = try JSONValue.parse(Array(try #require(FileManager.default.contents(atPath: recordPath))))
        guard case .array(let calls) = record["calls"] ?? record else { Issue.record("unexpected call record \(record)"); return }
        #expect(calls.count == first.api.calls && first.api.calls >= SyncSession.minimumCalls)

        let head = try StoreReader.head(store)
        let tight = RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: first.api.calls + SyncSession.minimumCalls - 1)
        await #expect {
            _ = try await rig.sync(store: store, day: 1, policy: tight)
        } throws: { e in
            (e as? SyncSessionError)?.code == .budgetExhausted
        }
        #expect(try StoreReader.head(store) == head, "a refused run appends nothing")

        // With room for exactly one more run, it goes through and the record grows by its calls.
        let roomy = RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: first.api.calls + 50)
        let second = try await rig.sync(store: store, day: 1, policy: roomy)
        #expect(second.status == "completed")
        let after = try JSONValue.parse(Array(try #require(FileManager.default.contents(atPath: recordPath))))
        guard case .array(let calls2) = after["calls"] ?? after else { Issue.record("unexpected call record"); return }
        #expect(calls2.count == first.api.calls + second.api.calls)
        await rig.stop()
    }

    /// A disk problem under state/ is the store's problem, not the network's.
    @Test("a call record that cannot be written fails the run as a storage problem, never as 'could not reach IntakeQ'")
    func callRecordFailureIsNotANetworkError() async throws {
        let tmp = TempDir()
        let store = tmp.sub("store")
        let rig = try await Rig.start(day: 1)
        _ = try await rig.sync(store: store, day: 1)
        // The record's temporary file (this process's: the session runs in it) replaced by a
        // directory: every write of the record (a temporary file renamed over it) fails with
        // EISDIR, even as root. (Not all of state/: the head evidence lives there too, and a
        // store whose state/head cannot be read refuses to run at all.)
        let recordPath = store + "/state/api-calls.json"
        try FileManager.default.createDirectory(atPath: recordPath + ".tmp-\(getpid())/not-a-file", withIntermediateDirectories: true)
        let r = try await rig.sync(store: store, day: 1)
        #expect(r.status == "failed")
        let message = r.errorMessage ?? ""
        #expect(message.contains("record of API calls"), "\(message)")
        #expect(!message.contains("could not reach IntakeQ"), "\(message)")
        #expect(r.api.calls == 0, "no request may be sent when the call cannot be recorded")
        try FileManager.default.removeItem(atPath: recordPath + ".tmp-\(getpid())")

        // A record that cannot be read (not a regular file, a link, not its JSON) fails the run
        // before anything is recorded, in one line naming the file and the way out. (It failed
        // the first call, recording a failed run that had sent nothing; a FIFO read as
        // "You don't have permission", a link was followed.)
        let saved = try #require(FileManager.default.contents(atPath: recordPath))
        for (make, says) in [
            ({ try FileManager.default.createDirectory(atPath: recordPath, withIntermediateDirectories: false) }, "is not a regular file"),
            ({ #expect(mkfifo(recordPath, 0o600) == 0) }, "is not a regular file"),
            ({ try FileManager.default.createSymbolicLink(atPath: recordPath, withDestinationPath: tmp.sub("elsewhere.json")) }, "symbolic link"),
            ({ try Data("{\"calls\": \"many\"}".utf8).write(to: URL(fileURLWithPath: recordPath)) }, "is not the call record"),
            // A time JSON reads but cannot write back (it failed every later save, each sync
            // recording a failed run), and calls from a clock that was set ahead.
            ({ try Data("{\"calls\": [1e308], \"version\": 1}".utf8).write(to: URL(fileURLWithPath: recordPath)) }, "is not the call record"),
            ({ try Data("{\"calls\": [4000000000], \"version\": 1}".utf8).write(to: URL(fileURLWithPath: recordPath)) }, "recorded in the future"),
            ({ try Data("{\"calls\": [], \"version\": 2}".utf8).write(to: URL(fileURLWithPath: recordPath)) }, "a call record of version 2"),
            // A later version whose calls have another shape is still named by its version.
            ({ try Data("{\"calls\": {\"day\": [1]}, \"version\": 3}".utf8).write(to: URL(fileURLWithPath: recordPath)) }, "a call record of version 3"),
            ({ try Data("{\"calls\": []}".utf8).write(to: URL(fileURLWithPath: recordPath)) }, "is not the call record"),
        ] as [(() throws -> Void, String)] {
            try FileManager.default.removeItem(atPath: recordPath)
            try make()
            let head = try StoreReader.head(store)
            await #expect {
                _ = try await rig.sync(store: store, day: 1)
            } throws: { e in
                let text = "\(e)"
                return text.contains("api-calls.json") && text.contains(says) && text.contains("to start a fresh count")
                    && !text.contains("NSCocoaErrorDomain") && !text.contains("DecodingError") && !text.contains("\n")
            }
            #expect(try StoreReader.head(store) == head, "\(says): a run was recorded")
        }
        try FileManager.default.removeItem(atPath: recordPath)
        try saved.write(to: URL(fileURLWithPath: recordPath))
        await rig.stop()
    }
}
