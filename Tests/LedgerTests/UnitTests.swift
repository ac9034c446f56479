import Domain
import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

@Suite struct EnvelopeTests {
    let sample = EventEnvelope(
        seq: 41, id: "5d1c2f1e-0000-4000-8000-000000000041", type: "appointment.changed", v: 1,
        at: "2026-11-26T09:00:03.120Z", run: "8f0e0000-0000-4000-8000-0000000000aa",
        stream: "appointment/65f1c0ffee0000000000a001",
        data: Array(#"{"appointment_id":"65f1c0ffee0000000000a001","content_hash":"ab","object":{"Id":"65f1c0ffee0000000000a001","Price":150.0,"Note":"a \"quoted\" word"}}"#.utf8))

    @Test func encodesTheDocumentedLayout() {
        let line = String(decoding: sample.encoded(), as: UTF8.self)
        #expect(line.hasPrefix(#"{"seq":41,"id":"5d1c2f1e-0000-4000-8000-000000000041","type":"appointment.changed","v":1,"at":"2026-11-26T09:00:03.120Z","run":"8f0e0000-0000-4000-8000-0000000000aa","stream":"appointment/65f1c0ffee0000000000a001","data":{"#))
        #expect(line.hasSuffix("}}}"))
        #expect(!line.contains("\n"))
        // The data bytes are kept exactly, number text included.
        #expect(line.contains(#""Price":150.0"#))
        // Valid JSON as a whole.
        #expect((try? JSONValue.parse(sample.encoded())) != nil)
    }

    @Test func roundTripsThroughTheFastPath() throws {
        let decoded = try EventEnvelope.decode(sample.encoded())
        #expect(decoded == sample)
        var noRun = sample
        noRun.run = nil
        #expect(String(decoding: noRun.encoded(), as: UTF8.self).contains(#""run":null"#))
        #expect(try EventEnvelope.decode(noRun.encoded()) == noRun)
        var big = sample
        big.seq = 12_345_678_901
        big.v = 3
        #expect(try EventEnvelope.decode(big.encoded()) == big)
    }

    @Test func decodesReorderedKeysThroughTheSlowPath() throws {
        let line = #"{"data":{"object":{"Id":"x1"},"appointment_id":"x1"},"stream":"appointment/x1","type":"appointment.discovered","seq":7,"at":"2026-11-26T09:00:03.120Z","v":1,"id":"i-7","run":null}"#
        let e = try EventEnvelope.decode(Array(line.utf8))
        #expect(e.seq == 7 && e.id == "i-7" && e.type == "appointment.discovered" && e.v == 1)
        #expect(e.at == "2026-11-26T09:00:03.120Z" && e.run == nil && e.stream == "appointment/x1")
        #expect(try e.dataValue() == ["appointment_id": "x1", "object": ["Id": "x1"]])
        // Whitespace, an escaped id and a run also take the slow path.
        let spaced = #"{ "seq": 8, "id": "i\/8", "type": "sync.started", "v": 1, "at": "2026-11-26T09:00:04.000Z", "run": "r-1", "stream": "sync/r-1", "data": {"sync_type": "webhook"} }"#
        let s = try EventEnvelope.decode(Array(spaced.utf8))
        #expect(s.seq == 8 && s.id == "i/8" && s.run == "r-1" && s.stream == "sync/r-1")
        #expect(try s.dataValue()["sync_type"] == "webhook")
        // A missing v reads as 1; the re-encoded line is the fast-path layout and decodes the same.
        let noV = #"{"stream":"roster","seq":9,"type":"roster.observed","at":"2026-11-26T09:00:05.000Z","data":{}}"#
        let n = try EventEnvelope.decode(Array(noV.utf8))
        #expect(n.v == 1 && n.id == "")
        #expect(try EventEnvelope.decode(n.encoded()) == n)
    }

    @Test func rejectsWhatIsNotAnEnvelope() {
        #expect(throws: LedgerError.self) { try EventEnvelope.decode(Array("not json".utf8)) }
        #expect(throws: LedgerError.self) { try EventEnvelope.decode(Array(#"{"seq":1,"type":"x"}"#.utf8)) }
        #expect(throws: LedgerError.self) { try EventEnvelope.decode(Array(#"[1,2]"#.utf8)) }
    }

    @Test func typedPayloadsRoundTrip() throws {
        let removed = AppointmentRemoved(appointmentId: "a1", reason: "not_found")
        let e = EventEnvelope(seq: 1, id: "i", type: "appointment.removed", v: 1, at: T(1), run: nil,
                              stream: Streams.appointment("a1"), data: encodeData(removed))
        #expect(try e.decodeData(AppointmentRemoved.self) == removed)
        #expect(String(decoding: e.data, as: UTF8.self) == #"{"appointment_id":"a1","reason":"not_found"}"#)
        let bad = EventEnvelope(seq: 2, id: "i", type: "appointment.removed", v: 1, at: T(1), run: nil,
                                stream: "s", data: Array(#"{"reason":1}"#.utf8))
        #expect(throws: LedgerError.self) { try bad.decodeData(AppointmentRemoved.self) }
        // An observation keeps the object bytes exactly as received.
        let object = Array(#"{"Id":"a9","Price":150.0,"B":1,"A":2}"#.utf8)
        let obs = AppointmentObservation(appointmentId: "a9", contentHash: "h", changedFields: ["Price"], object: object)
        let data = obs.encodeData(includeChangedFields: true)
        #expect(String(decoding: data, as: UTF8.self) == #"{"appointment_id":"a9","content_hash":"h","changed_fields":["Price"],"object":{"Id":"a9","Price":150.0,"B":1,"A":2}}"#)
        let back = try AppointmentObservation.decode(EventEnvelope(seq: 3, id: "i", type: "appointment.changed", v: 1, at: T(1),
                                                                   run: nil, stream: "s", data: data))
        #expect(back.appointmentId == "a9" && back.changedFields == ["Price"])
    }
}

@Suite struct ISOTimeTests {
    @Test func formats() {
        #expect(ISOTime.format(millis: 0) == "1970-01-01T00:00:00.000Z")
        #expect(ISOTime.format(millis: 1) == "1970-01-01T00:00:00.001Z")
        #expect(ISOTime.format(millis: -1) == "1969-12-31T23:59:59.999Z")
        #expect(ISOTime.format(millis: -1000) == "1969-12-31T23:59:59.000Z")
        #expect(ISOTime.format(millis: 1_795_683_603_120) == "2026-11-26T09:00:03.120Z")
        #expect(ISOTime.format(millis: 1_709_164_800_000) == "2024-02-29T00:00:00.000Z")
        #expect(ISOTime.format(Date(timeIntervalSince1970: 1.9999)) == "1970-01-01T00:00:01.999Z")
        #expect(ISOTime.day(millis: 1_795_683_603_120) == "2026-11-26")
        // The years 1–9999 are written as they are; beyond them, their first or last
        // millisecond (four digits: 10000-01-01 came out as 0000-01-01, year 275760 as 5760).
        #expect(ISOTime.format(millis: 253_402_300_799_999) == "9999-12-31T23:59:59.999Z")
        #expect(ISOTime.format(millis: -62_135_596_800_000) == "0001-01-01T00:00:00.000Z")
        for far: Int64 in [253_402_300_800_000, 8_640_000_000_000_000, .max] {
            #expect(ISOTime.format(millis: far) == "9999-12-31T23:59:59.999Z")
        }
        for early: Int64 in [-62_135_596_800_001, -100_000_000_000_000, .min] {
            #expect(ISOTime.format(millis: early) == "0001-01-01T00:00:00.000Z")
        }
    }

    @Test func parses() {
        #expect(ISOTime.parse("2026-11-26T09:00:03.120Z") == 1_795_683_603_120)
        #expect(ISOTime.parse("2026-11-26T09:00:03.12Z") == 1_795_683_603_120)
        #expect(ISOTime.parse("2026-11-26T09:00:03.1Z") == 1_795_683_603_100)
        #expect(ISOTime.parse("2026-11-26T09:00:03.1209999Z") == 1_795_683_603_120, "IntakeQ's seven digits: truncated")
        #expect(ISOTime.parse("2026-11-26T09:00:03Z") == 1_795_683_603_000)
        #expect(ISOTime.parse("2026-11-26T09:00Z") == 1_795_683_600_000)
        #expect(ISOTime.parse("2026-11-26T09:00:03") == 1_795_683_603_000, "no zone reads as UTC")
        #expect(ISOTime.parse("2026-11-26 09:00:03Z") == 1_795_683_603_000)
        #expect(ISOTime.parse("2026-11-26T09:00:03z") == 1_795_683_603_000)
        #expect(ISOTime.parse("2026-11-26T02:00:03-07:00") == 1_795_683_603_000)
        #expect(ISOTime.parse("2026-11-26T11:00:03+0200") == 1_795_683_603_000)
        #expect(ISOTime.parse("2026-11-26") == 1_795_651_200_000)
        #expect(ISOTime.parse("2026-11-26T23:00:03+14:00") == 1_795_683_603_000)
        #expect(ISOTime.parse("2026-11-25T19:00:03-14:00") == 1_795_683_603_000)
        #expect(ISOTime.parse("1969-12-31T23:59:59.999Z") == -1)
        #expect(ISOTime.parse("2024-02-29T00:00:00Z") == 1_709_164_800_000)
        #expect(ISOTime.parse("2000-02-29") != nil)
        #expect(ISOTime.parse("2026-12-31T23:59:59.999Z") == ISOTime.parse("2027-01-01")! - 1)
        for bad in ["", "2026", "2026-13-01", "2026-00-10", "2026-11-32", "2026-11-26T24:00Z", "2026-11-26T09:60Z",
                    "2026-11-26T09:00:03.Z", "2026-11-26T09:00:03ZZ", "2026-11-26X09:00", "26-11-2026",
                    "2026-11-26T09:00:03+7", "now", "2026-11-26T09:00:03.120Z ", "2026-02-31", "2026-02-29T00:00Z",
                    "2100-02-29", "2026-04-31T10:00:00Z",
                    // Not UTC offsets (at most 14 hours, whole minutes), as the CLI's --from says.
                    "2026-12-01T10:00+99:99", "2026-12-01T10:00+15:00", "2026-12-01T10:00-14:01", "2026-12-01T10:00+05:60"] {
            #expect(ISOTime.parse(bad) == nil, "\(bad) parsed")
        }
    }

    @Test func formatThenParseIsIdentity() {
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<2000 {
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let millis = Int64(x >> 22) - (1 << 41)  // roughly 1900…2040
            #expect(ISOTime.parse(ISOTime.format(millis: millis)) == millis, "seed state \(x)")
        }
    }
}

@Suite struct WriterClockTests {
    @Test func atNeverDecreasesWhenTheClockStepsBack() throws {
        let tmp = try TempStore()
        let clock = ManualClock(goldenBase + 10_000)
        let w = try makeWriter(tmp.store, clock: clock)
        let e1 = try w.append([startedEvent("r1", type: "webhook")])
        clock.millis = goldenBase + 4_000  // NTP stepped back
        let e2 = try w.append([startedEvent("r2", type: "webhook"), startedEvent("r3", type: "webhook")])
        clock.millis = goldenBase + 12_345
        let e3 = try w.append([startedEvent("r4", type: "webhook")])
        w.close()
        #expect(e1[0].at == T(10))
        #expect(e2.allSatisfy { $0.at == T(10) }, "clamped to the previous at")
        #expect(e3[0].at == "2026-11-20T10:00:12.345Z")
        #expect((e1 + e2 + e3).map(\.seq) == [1, 2, 3, 4])
        #expect(Set((e1 + e2 + e3).map(\.id)).count == 4)

        // A new writer remembers the last at across a restart.
        clock.millis = goldenBase
        let w2 = try makeWriter(tmp.store, clock: clock)
        let e4 = try w2.append([startedEvent("r5", type: "webhook")])
        w2.close()
        #expect(e4[0].at == "2026-11-20T10:00:12.345Z")
        #expect(e4[0].seq == 5)

        var ats: [Int64] = []
        try LedgerReader(store: tmp.store).forEachEvent { ats.append($0.atMillis); return true }
        #expect(ats.count == 5)
        #expect(ats == ats.sorted())
        // As-of a time is a prefix of the log.
        #expect(try AsOf.seq(atOrBefore: goldenBase + 11_000, reader: LedgerReader(store: tmp.store)) == 3)
    }

    @Test func appendedEventsReadBackAsStored() throws {
        let tmp = try TempStore()
        let clock = ManualClock(goldenBase)
        let w = try makeWriter(tmp.store, clock: clock)
        let stored = try w.append([discovered(Golden.a1, run: "r"), discovered(Golden.a6, run: "r")])
        #expect(w.head.seq == 2)
        w.close()
        var read: [EventEnvelope] = []
        try LedgerReader(store: tmp.store).forEachEvent { read.append($0); return true }
        #expect(read == stored)
        let obs = try AppointmentObservation.decode(read[0])
        #expect(obs.appointmentId == "a1")
        #expect(obs.object == jsonBytes(Golden.a1))
    }
}

@Suite struct StoreTests {
    @Test func refusesADirectoryThatIsNotAStore() throws {
        let tmp = try TempStore()
        let dir = tmp.sibling("notes")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/shopping.txt", contents: Data("milk".utf8))
        for open in [{ try Store.open(dir) }, { try Store.openOrCreate(dir) }] {
            do {
                _ = try open()
                Issue.record("a directory without STORE was accepted")
            } catch let e as StoreError {
                #expect(e.code == .notAStore)
                #expect(e.message.contains("is not a SyncLedger store"), "\(e.message)")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/STORE"), "nothing was written into it")
        // An empty directory is not a store either, but openOrCreate may make it one.
        let empty = tmp.sibling("empty")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        #expect { try Store.open(empty) } throws: { e in
            let e = e as? StoreError
            return e?.code == .notAStore && e?.message.contains("is an empty directory, not a store yet") == true
        }
        _ = try Store.openOrCreate(empty)
        _ = try Store.open(empty)
        // A missing directory and a file.
        #expect { try Store.open(tmp.sibling("missing")) } throws: { ($0 as? StoreError)?.code == .noStore }
        _ = FileManager.default.createFile(atPath: tmp.sibling("file"), contents: Data())
        #expect { try Store.openOrCreate(tmp.sibling("file")) } throws: { ($0 as? StoreError)?.code == .notADirectory }
    }

    @Test func refusesANewerStoreVersionAndAForeignMarker() throws {
        let tmp = try TempStore()
        try Data(#"{"format": "syncledger-store", "version": 2}"#.utf8).write(to: URL(fileURLWithPath: tmp.path + "/STORE"))
        for open in [{ try Store.open(tmp.path) }, { try Store.openOrCreate(tmp.path) }] {
            do {
                _ = try open()
                Issue.record("a newer store was accepted")
            } catch let e as StoreError {
                #expect(e.code == .newerVersion)
                #expect(e.message.contains("newer"), "\(e.message)")
                #expect(e.message.contains("version 2"))
            }
        }
        try Data(#"{"format": "something-else", "version": 1}"#.utf8).write(to: URL(fileURLWithPath: tmp.path + "/STORE"))
        #expect { try Store.open(tmp.path) } throws: { ($0 as? StoreError)?.code == .notAStore }
    }

    @Test func createsAnOwnerOnlyStore() throws {
        let tmp = try TempStore()
        let marker = try #require(FileManager.default.contents(atPath: tmp.path + "/STORE"))
        #expect(try JSONValue.parse(Array(marker)) == ["format": "syncledger-store", "version": 1])
        func mode(_ p: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: p)[.posixPermissions] as? NSNumber)?.intValue ?? -1
        }
        #expect(try mode(tmp.path) == 0o700)
        #expect(try mode(tmp.path + "/STORE") == 0o600)
        try Golden.write(tmp.store, steps: 0..<3)
        try ProjectionStore(store: tmp.store).catchUp(try LedgerReader(store: tmp.store))
        #expect(try mode(tmp.store.projectionsPath) & 0o077 == 0, "the views database holds patient names")
        #expect(try Store.open(tmp.path).path == tmp.path)
    }
}

@Suite struct ContentAndDiffTests {
    @Test func contentHashIgnoresKeyOrderAndNumberText() throws {
        let a = try parseJSON(#"{"Id":"a1","Price":150,"TelehealthInfo":{"JoinUrl":"https://zoom.us/j/1","Id":"t"},"List":[1,2]}"#)
        let b = try parseJSON(#"{"List":[1.0,2],"TelehealthInfo":{"Id":"t","JoinUrl":"https://zoom.us/j/1"},"Price":150.0,"Id":"a1"}"#)
        #expect(contentHash(of: a) == contentHash(of: b))
        #expect(contentHash(of: a).count == 64)
        let c = try parseJSON(#"{"Id":"a1","Price":150.5,"TelehealthInfo":{"JoinUrl":"https://zoom.us/j/1","Id":"t"},"List":[1,2]}"#)
        #expect(contentHash(of: a) != contentHash(of: c))
        let d = try parseJSON(#"{"Id":"a1","Price":150,"TelehealthInfo":{"JoinUrl":"https://zoom.us/j/1","Id":"t"},"List":[2,1]}"#)
        #expect(contentHash(of: a) != contentHash(of: d), "array order matters")
        #expect(a.canonicalText == #"{"Id":"a1","List":[1,2],"Price":150,"TelehealthInfo":{"Id":"t","JoinUrl":"https://zoom.us/j/1"}}"#)
        #expect(sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func diffObjectsGivesDottedPaths() throws {
        let old = try parseJSON(#"{"Id":"a1","StartDate":1000,"Status":"Confirmed","TelehealthInfo":{"JoinUrl":"https://zoom.us/j/1","StartUrl":"s"},"Gone":1,"Nulled":null}"#)
        let new = try parseJSON(#"{"Id":"a1","StartDate":2000.0,"Status":"Confirmed","TelehealthInfo":{"JoinUrl":"https://zoom.us/j/2","StartUrl":"s"},"Added":true}"#)
        let changes = diffObjects(old, new)
        #expect(changes.map(\.field) == ["Added", "Gone", "StartDate", "TelehealthInfo.JoinUrl"])
        let join = try #require(changes.first { $0.field == "TelehealthInfo.JoinUrl" })
        #expect(join.from == "https://zoom.us/j/1" && join.to == "https://zoom.us/j/2")
        #expect(changes.first { $0.field == "Gone" }?.to == .null)
        #expect(diffObjects(old, old).isEmpty)
        // 150 and 150.0 are the same value; absent and null are the same.
        #expect(diffObjects(try parseJSON(#"{"P":150,"X":null}"#), try parseJSON(#"{"P":150.0}"#)).isEmpty)
        // null → object descends into the object's keys.
        let fromNull = diffObjects(try parseJSON(#"{"TelehealthInfo":null}"#), try parseJSON(#"{"TelehealthInfo":{"JoinUrl":"u"}}"#))
        #expect(fromNull == [FieldChange(field: "TelehealthInfo.JoinUrl", from: .null, to: "u")])
        let toNull = diffObjects(try parseJSON(#"{"TelehealthInfo":{"JoinUrl":"u"}}"#), try parseJSON(#"{"TelehealthInfo":null}"#))
        #expect(toNull == [FieldChange(field: "TelehealthInfo.JoinUrl", from: "u", to: .null)])
        // Arrays compare whole.
        let arr = diffObjects(try parseJSON(#"{"AdditionalClients":[{"ClientId":1}]}"#), try parseJSON(#"{"AdditionalClients":[{"ClientId":2}]}"#))
        #expect(arr.map(\.field) == ["AdditionalClients"])
    }
}

@Suite struct DerivationTests {
    func link(_ json: String) throws -> MeetingLink? { MeetingLink.find(in: try parseJSON(json)) }

    @Test func meetingLinkPrecedence() throws {
        let all = #"""
            {"TelehealthInfo":{"StartUrl":"https://zoom.us/s/host","JoinUrl":"https://zoom.us/j/join","Url":"https://intakeq.com/url",
             "Invitation":"Join https://doxy.me/invite now","Provider":"Zoom"},
             "LocationName":"https://meet.google.com/loc-loc-loc","ClientNote":"https://teams.microsoft.com/l/note",
             "CustomFields":[{"Value":"https://whereby.com/custom"}]}
            """#
        var o = try parseJSON(all)
        func drop(_ path: [String]) {
            guard case .object(var top) = o else { return }
            if path.count == 1 {
                top.removeValue(forKey: path[0])
            } else if case .object(var inner)? = top[path[0]] {
                inner.removeValue(forKey: path[1])
                top[path[0]] = .object(inner)
            }
            o = .object(top)
        }
        var seen: [(String, String, String)] = []
        for next in [["TelehealthInfo", "JoinUrl"], ["TelehealthInfo", "Url"], ["TelehealthInfo", "Invitation"],
                     ["LocationName"], ["ClientNote"], ["CustomFields"]] {
            let l = try #require(MeetingLink.find(in: o))
            seen.append((l.url, l.provider, l.sourceField))
            drop(next)
        }
        #expect(MeetingLink.find(in: o) == nil, "only StartUrl is left and it is never the meeting URL")
        #expect(seen.map(\.0) == ["https://zoom.us/j/join", "https://intakeq.com/url", "https://doxy.me/invite",
                                  "https://meet.google.com/loc-loc-loc", "https://teams.microsoft.com/l/note",
                                  "https://whereby.com/custom"])
        #expect(seen.map(\.2) == ["TelehealthInfo.JoinUrl", "TelehealthInfo.Url", "TelehealthInfo.Invitation",
                                  "LocationName", "ClientNote", "CustomFields[0].Value"])
        #expect(seen.map(\.1) == ["Zoom", "IntakeQ", "Zoom", "Google Meet", "other", "other"])
    }

    @Test func neverTheStartUrl() throws {
        #expect(try link(#"{"TelehealthInfo":{"StartUrl":"https://zoom.us/s/host"}}"#) == nil)
        #expect(try link(#"{"TelehealthInfo":{"StartUrl":"https://zoom.us/s/host","JoinUrl":null,"Url":""}}"#) == nil)
        // A plain (non-video) URL in free text is not a meeting link; in TelehealthInfo it is.
        #expect(try link(#"{"LocationName":"See https://example.com/map","TelehealthInfo":null}"#) == nil)
        #expect(try link(#"{"ClientNote":"zoom: https://us02web.zoom.us/j/123?pwd=x, thanks"}"#)?.url == "https://us02web.zoom.us/j/123?pwd=x")
        #expect(try link(#"{"CustomFields":[{"Value":"none"},{"Value":"https://meet.google.com/zzz-zzzz-zzz"}]}"#)?.sourceField == "CustomFields[1].Value")
    }

    func facts(_ extra: String) throws -> AppointmentFacts {
        try AppointmentFacts(object: try parseJSON(#"{"Id":"x","ClientId":1,"Status":"Confirmed""# + extra + "}"))
    }

    @Test func visitTypeRules() throws {
        #expect(try facts(#","PlaceOfService":"02""#).visitType == "telehealth")
        #expect(try facts(#","PlaceOfService":"10""#).visitType == "telehealth")
        #expect(try facts(#","PlaceOfService":"11","TelehealthInfo":{"JoinUrl":"https://zoom.us/j/1"}"#).visitType == "office")
        #expect(try facts(#","PlaceOfService":"12""#).visitType == "home")
        #expect(try facts(#","PlaceOfService":"99","LocationName":"Annex""#).visitType == "office")
        #expect(try facts(#","TelehealthInfo":{"StartUrl":"https://zoom.us/s/1"}"#).visitType == "telehealth")
        #expect(try facts(#","TelehealthInfo":null,"LocationName":"Main Office""#).visitType == "office")
        #expect(try facts(#","LocationName":"https://meet.google.com/a-b-c""#).visitType == "telehealth")
        #expect(try facts(#","LocationName":"  ""#).visitType == "unknown")
        #expect(try facts("").visitType == "unknown")
        #expect(try facts(#","PlaceOfService":null"#).visitType == "unknown")
    }

    @Test func statusMapping() throws {
        let cases: [(String?, String)] = [
            ("Confirmed", "confirmed"), ("WaitingConfirmation", "scheduled"), ("Canceled", "cancelled"),
            ("Declined", "cancelled"), ("Missed", "no_show"), ("Cancelled", "unknown"), ("confirmed", "unknown"),
            ("Rescheduled", "unknown"), (nil, "unknown"),
        ]
        for (raw, mapped) in cases { #expect(mapStatus(raw) == mapped, "\(raw ?? "nil")") }
        let f = try AppointmentFacts(object: try parseJSON(#"{"Id":"x","Status":"Rescheduled"}"#))
        #expect(f.status == "unknown" && f.intakeqStatus == "Rescheduled")
        #expect(throws: (any Error).self) { try AppointmentFacts(object: try parseJSON(#"{"ClientId":1}"#)) }
        #expect(throws: (any Error).self) { try AppointmentFacts(object: try parseJSON(#"{"Id":""}"#)) }
    }
}
