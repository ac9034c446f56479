import FakeIntakeQ
import Foundation
import JSONCore
import Ledger
import Sync
import TestSupport
import Testing

/// `sync` seals all of a run's observations together, on every core from 128 of them on
/// (`PersonalData.sealObservationData` over many): what it records must be what sealing one
/// object at a time recorded.
@Suite("Sync: sealing a large run")
struct SealingTests {
    @Test("a run of 128+ observations: each opens to the object its hash names, and each names a roster patient and is sealed")
    func aLargeRunSealsAsOneByOne() async throws {
        // Day 1's practice, each appointment five times over under new ids.
        var state = Fixtures.day(1).state
        var copies: [[UInt8]] = []
        for k in 1...4 {
            for a in state.appointments {
                guard case .object(var o) = try FastJSON.parse(a), let id = o["Id"]?.stringValue else { continue }
                o["Id"] = .string(id + "c\(k)")
                copies.append(Array(JSONValue.object(o).canonicalText.utf8))
            }
        }
        state.appointments += copies
        let tmp = TempDir()
        let rig = try await Rig.start(state: state)
        let store = tmp.sub("store")
        let outcome = try await rig.sync(store: store, day: 1)
        await rig.stop()

        let events = try StoreReader.events(store)  // opened with the store's keys
        let sh = try await ProcessRunner.run("/bin/sh", ["-c", "cat \"$0\"/log/*.seg | lz4 -dc > \"$0\"/../dump.jsonl", store])
        #expect(sh.status == 0, "lz4 -dc failed")
        let raw = (FileManager.default.contents(atPath: tmp.sub("dump.jsonl")) ?? Data()).split(separator: 10)
        try #require(raw.count == events.count)

        var observations = 0, sealed = 0, clear = 0
        for (e, line) in zip(events, raw) where e.run == outcome.runId
            && (e.type == "appointment.discovered" || e.type == "appointment.changed") {
            observations += 1
            let object = try #require(e.data["object"])
            #expect(e.data["content_hash"]?.stringValue == contentHash(of: object), "\(e.appointmentId ?? "?")")
            var named = [object["ClientId"]?.stringValue]
            if case .array(let extra)? = object["AdditionalClients"] { named += extra.map { $0["ClientId"]?.stringValue } }
            let rosterNamed = named.contains { $0.map(Fixtures.rosterClientIds.contains) ?? false }
            let stored = try FastJSON.parse(Array(line))["data"]
            let hasSealed = stored?["sealed"] != nil
            #expect(hasSealed == rosterNamed, "\(e.appointmentId ?? "?"): sealed \(hasSealed), names a roster patient \(rosterNamed)")
            if hasSealed { sealed += 1 } else {
                clear += 1
                // Nothing sealed: recorded exactly as opened.
                #expect(stored?["object"] == object)
            }
        }
        print("SealingTests: \(observations) observations, \(sealed) sealed, \(clear) with no roster patient")
        #expect(observations >= 128, "too few observations to seal on more than one thread")
        // `sync` records only appointments that name a roster patient: every one is sealed.
        #expect(sealed == observations && clear == 0)
    }
}
