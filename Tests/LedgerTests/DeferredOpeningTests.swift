import Domain
import Foundation
import GRDB
import JSONCore
@testable import Ledger
@testable import Projections
import TestSupport
import Testing

/// The views' fold reads sealed observations as stored and opens their parts straight into the
/// fields it needs (`LedgerReader.batches(…, deferOpening: true)`, `ChunkFolder.openedFacts`).
/// It must give what reading the event opened whole gives: the same facts and content hash,
/// the same errors, and the same "read as stored" for data that is not a sealed observation.
@Suite struct DeferredOpeningTests {
    /// Random sealed observations (`SealBytesTests`' generator, as `RevealBytesTests` uses it):
    /// sometimes re-spaced or damaged, some patients forgotten, a key sometimes missing.
    @Test func openedFactsEqualTheFactsOfTheEventOpenedWhole() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("DeferredOpeningTests seed: \(seed)")
        let dir = TempDir("deferredopening")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let sealKey = SealBytesTests.sealKey(keys)
        var g = SealBytesTests.Generator(rng: SeededRNG(seed: seed))
        var opened = 0, withFacts = 0, forgotten = 0, errors = 0, asStored = 0, fast = 0
        let cases = 3000
        for n in 0..<cases {
            guard var data = try? PersonalData.sealObservationDataParsing(Array(g.data().utf8), patientOf: { SealBytesTests.patientOf[$0] },
                                                                          key: sealKey)
            else { continue }
            if g.chance(8), !data.isEmpty {
                if g.chance(50) { data = Array(data.prefix(g.rng.below(data.count))) } else {
                    data[g.rng.below(data.count)] = g.pick(Array("{}[]\",:\\ 0a-".utf8))
                }
            }
            let (readKey, anyForgotten) = g.readKey(keys)
            let text = String(decoding: data, as: UTF8.self)
            let reference = Result { try PersonalData.openObservationDataParsing(data, key: readKey) }
            let deferred = Result { try ChunkFolder.openedFacts(data, open: { try PersonalData.openedObject($0, key: readKey) }) }
            // The byte path: the parts opened into the scanned fields, or unsure.
            let stored = try? AppointmentEventScan.scan(data)
            let bytes = stored.map { PersonalData.openedFields($0.fields, sealed: $0.sealed.map { data[$0] }, appointmentId: $0.appointmentId, key: readKey) }
            switch (reference, deferred) {
            case (.failure(let a), .failure(let b)):
                errors += 1
                #expect("\(a)" == "\(b)", "case \(n) (seed \(seed)): \(text)")
                #expect(bytes == nil || bytes == .unsure, "case \(n) (seed \(seed)): \(text)")
            case (.success(nil), .success(nil)):
                asStored += 1
                #expect(bytes == nil || bytes == .stored, "case \(n) (seed \(seed)): \(text)")
            case (.success(let whole?), .success(let fields?)):
                opened += 1
                if anyForgotten { forgotten += 1 }
                // What the fold reads from the event opened whole: its bytes scanned, or its value.
                let scan = try AppointmentEventScan.scan(whole.data)
                let scanned = scan.fields.flatMap { try? AppointmentFacts(fields: $0) }
                let parsed = whole.value["object"].flatMap { try? AppointmentFacts(object: $0) }
                #expect(scanned == parsed, "case \(n) (seed \(seed)): \(text)")
                #expect(fields.facts == scanned, "case \(n) (seed \(seed)): \(text)")
                #expect(fields.contentHash == scan.contentHash?.string, "case \(n) (seed \(seed)): \(text)")
                if fields.facts != nil { withFacts += 1 }
                switch bytes {
                case .opened(let f)?:
                    fast += 1
                    #expect((try? AppointmentFacts(fields: f)) == scanned, "case \(n) (seed \(seed)): \(text)")
                    #expect((stored?.contentHash?.string ?? "") == fields.contentHash, "case \(n) (seed \(seed)): \(text)")
                case .stored?, nil:
                    Issue.record("case \(n) (seed \(seed)): opened whole, but the byte path reads it as stored: \(text)")
                case .unsure?:
                    break
                }
            default:
                Issue.record("case \(n) (seed \(seed)): opened whole \(reference), opened into the fields \(deferred), for \(text)")
            }
        }
        print("DeferredOpeningTests: \(cases) cases, \(opened) opened (\(withFacts) with facts, \(forgotten) with forgotten patients, \(fast) on the byte path), \(asStored) read as stored, \(errors) errors")
        #expect(opened > cases / 6)
        #expect(fast > opened / 2)
        #expect(withFacts > opened / 4)
        #expect(forgotten > cases / 30)
        #expect(asStored > 0)
        #expect(errors > 0)  // ~20 a run
    }

    /// Parts with hand-written plaintexts (sealing never writes these, a log may hold them): the
    /// byte path opens the simple ones to the facts of the object opened whole and steps aside
    /// (`.unsure`) for the others, whose fallback gives the reference's facts or error.
    @Test func handWrittenPartsOpenToTheReferenceOrStepAside() throws {
        let dir = TempDir("deferredopening")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let readKey: (String) throws -> SealingKey? = { $0 == "p-gone" ? nil : try keys.key(for: $0) }
        let clear = #"{"AdditionalClients":[{},{"ClientId":"7","ClientName":"Seven"}],"ClientId":null,"ClientName":null,"#
            + #""Id":"a-1","StartDate":1796925900000,"Status":"Confirmed"}"#
        func data(_ parts: [(patient: String, slots: [String], plain: String)]) throws -> [UInt8] {
            let sealed = try parts.map { p -> String in
                let box = try PersonalData.sealPlain(Array(p.plain.utf8), patient: p.patient, context: "appointment/a-1",
                                                     key: keys.key(for: p.patient))
                return PersonalData.Part(patient: p.patient, slots: p.slots, box: box).json
            }
            return Array((#"{"appointment_id":"a-1","content_hash":"h","object":"# + clear + #","sealed":["#
                + sealed.joined(separator: ",") + "]}").utf8)
        }
        let cases: [(parts: [(patient: String, slots: [String], plain: String)], bytePath: Bool)] = [
            ([("p1", ["client"], #"{"ClientId":100,"ClientName":"Ann"}"#)], true),
            ([("p1", ["client"], #"{"ClientName":"a","ClientName":"b"}"#)], true),
            ([("p1", ["client"], #"{"Id":"other","ClientNote":"see https://doxy.me/r","CustomFields":[{"Value":"https://zoom.us/j/1"}]}"#)], true),
            ([("p1", ["AdditionalClients/0"], #"{"AdditionalClients/0":{"ClientId":"55"}}"#)], true),
            ([("p1", [], #"{"AdditionalClients/-1":{"ClientId":"55"},"AdditionalClients/7":{"ClientId":"56"},"AdditionalClients/x":1}"#)], true),
            ([("p1", [], #"{"AdditionalClients":[{"ClientId":"9"}]}"#)], true),
            // A forgotten patient's part: the parsing path, which also cleans the clear telehealth part.
            ([("p1", ["client"], #"{"ClientName":"Ann"}"#), ("p-gone", ["client", "AdditionalClients/01"], "{}")], false),
            ([("p1", [], #"{"Client\u004eame":"x"}"#)], false),
            ([("p1", [], #"{"AdditionalClients/01":{"ClientId":"55"}}"#)], false),
            ([("p1", [], #"{"AdditionalClients/+1":{"ClientId":"55"}}"#)], false),
            ([("p1", [], #"{"AdditionalClients/-0":{"ClientId":"55"}}"#)], false),
            ([("p1", [], #"{"AdditionalClients":[{"ClientId":"9"}],"AdditionalClients/0":{"ClientId":"55"}}"#)], false),
            ([("p1", [], "[1,2]")], false),
            ([("p1", [], #"{"ClientName":"x"} x"#)], false),
        ]
        for (n, c) in cases.enumerated() {
            let d = try data(c.parts)
            let reference = Result { try PersonalData.openObservationDataParsing(d, key: readKey) }
            let scan = try AppointmentEventScan.scan(d)
            let bytes = PersonalData.openedFields(scan.fields, sealed: scan.sealed.map { d[$0] }, appointmentId: scan.appointmentId, key: readKey)
            let fallback = Result { try ChunkFolder.openedFacts(d, open: { try PersonalData.openedObject($0, key: readKey) }) }
            switch reference {
            case .success(let whole?):
                let expected = whole.value["object"].flatMap { try? AppointmentFacts(object: $0) }
                #expect(expected != nil, "case \(n)")
                if case .opened(let f) = bytes {
                    #expect((try? AppointmentFacts(fields: f)) == expected, "case \(n)")
                } else {
                    #expect(bytes == .unsure, "case \(n): \(bytes)")
                }
                #expect((try? fallback.get())??.facts == expected, "case \(n)")
            case .success(nil):
                Issue.record("case \(n): the reference reads it as stored")
            case .failure(let error):
                #expect(bytes == .unsure, "case \(n): the reference fails (\(error)), the byte path gives \(bytes)")
                if case .failure(let other) = fallback { #expect("\(other)" == "\(error)", "case \(n)") } else {
                    Issue.record("case \(n): the reference fails (\(error)), the fallback does not")
                }
            }
            if c.bytePath {
                guard case .opened = bytes else {
                    Issue.record("case \(n): expected on the byte path, got \(bytes)")
                    continue
                }
            } else {
                #expect(bytes == .unsure, "case \(n)")
            }
        }
    }

    /// A store with a clear roster and one observation of Avery Quinn (patient p-017) sealed as
    /// `sync` seals it, its data then passed through `edit`; the data as written.
    func storeWithOneSealedObservation(_ edit: ([UInt8]) -> [UInt8] = { $0 }) throws -> (TempStore, KeyRing, written: [UInt8]) {
        let tmp = try TempStore()
        let keys = try KeyRing.open(directory: tmp.store.keysPath, create: true, environment: [:], notice: { _ in })
        let roster = roster(movingAveryToHope: false)
        var patientOf: [String: String] = [:]
        for p in roster.organizations.flatMap(\.patients) where patientOf[p.intakeqClientId] == nil { patientOf[p.intakeqClientId] = p.id }
        let writer = try makeWriter(tmp.store, clock: ManualClock(goldenBase))
        defer { writer.close() }
        var e = discovered(appointmentObject("m-1", client: 4127, clientName: "Avery Quinn", status: "Confirmed",
                                             start: T(3600), minutes: 50, duration: true, practitioner: practitionerLee), run: "run-1")
        let sealed = try PersonalData.sealObservationData(e.data, patientOf: { patientOf[$0] }, key: keys.key(for:))
        #expect(String(decoding: sealed, as: UTF8.self).contains("\"sealed\""))
        e.data = edit(sealed)
        _ = try writer.append([rosterEvent(roster, run: "run-1"), e])
        return (tmp, keys, e.data)
    }

    /// A sealed observation whose patient's key file is gone (not forgotten), under a clear
    /// roster, so that it is the fold that meets it: the rebuild stops with the error every
    /// reader gives, a rebuild of one view that does not read it too, and nothing is swapped in.
    @Test func aMissingKeyStopsTheRebuildAsItStopsAReader() throws {
        let (tmp, keys, _) = try storeWithOneSealedObservation()
        let views = try ProjectionStore(path: tmp.sibling("views.sqlite"))
        try views.catchUp(try LedgerReader(store: tmp.store))
        let before = try snapshot(views)
        #expect(before.appointments.count == 1)
        try FileManager.default.removeItem(atPath: keys.keyPath("p-017"))

        let reader = try LedgerReader(store: tmp.store)
        let expected = "\(#expect(throws: (any Error).self) { try reader.forEachEvent { _ in true } }!)"
        #expect(expected.contains("no key for patient p-017"), "\(expected)")
        for names in [[], ["sync_logs"], ["stream_index"]] {
            let error = #expect(throws: (any Error).self) { _ = try views.rebuild(names: names, try LedgerReader(store: tmp.store)) }
            #expect(error.map { "\($0)" } == expected, "rebuild of \(names)")
        }
        #expect(try snapshot(views) == before)
    }

    /// The data a reader gives for the store's one observation, the views of a chunked rebuild
    /// of the store, and the one-by-one fold's (the reference's) snapshot of it.
    func readAndRebuilt(_ tmp: TempStore) throws -> (read: [UInt8]?, folded: ProjectionStore, expected: Snapshot) {
        let reader = try LedgerReader(store: tmp.store)
        var read: [UInt8]?
        try reader.forEachEvent { e in
            if e.eventType == .appointmentDiscovered { read = e.data }
            return true
        }
        let folded = try ProjectionStore(path: tmp.sibling("folded.sqlite"))
        let reference = try ProjectionStore(path: tmp.sibling("reference.sqlite"))
        reference.chunkedFold = false
        for views in [folded, reference] { _ = try views.rebuild(names: [], reader) }
        return (read, folded, try snapshot(reference))
    }

    /// A top-level `sealed` key spelled with an escape (`"seal\u0065d"`): readers go by the
    /// bytes (`DeferredOpening.maySeal`) and give such data as stored, so the fold must not open
    /// it either. A rebuild gives the rows of the one-by-one fold: the stored object, its sealed
    /// slots empty.
    @Test func aSealedKeySpelledWithAnEscapeReadsAsStored() throws {
        let (tmp, _, written) = try storeWithOneSealedObservation { sealed in
            let text = String(decoding: sealed, as: UTF8.self)
            #expect(text.contains(#""sealed":["#))
            return Array(text.replacingOccurrences(of: #""sealed":["#, with: #""seal\u0065d":["#).utf8)
        }
        let (read, folded, expected) = try readAndRebuilt(tmp)
        #expect(read == written, "a reader gives it as stored")
        #expect(expected.appointments.count == 1)
        #expect(expected.appointments.first?["client_name"]?.stringValue == nil, "\(expected.appointments)")
        #expect(try snapshot(folded) == expected)
    }

    /// A `sealed` member that holds no part (an empty array, or not an array): sealing never
    /// writes one, a log may hold it, and every reader gives such data as stored. The fold, which
    /// hands the scanned fields to the opening, must still read the stored object: a rebuild
    /// gives the rows of the one-by-one fold.
    @Test func aSealedMemberWithNoPartReadsAsStored() throws {
        for replacement in ["[]", "5", "{}"] {
            let (tmp, _, written) = try storeWithOneSealedObservation { sealed in
                // The `sealed` member's value (its end found by its brackets, outside strings).
                let key = Array(#""sealed":"#.utf8)
                guard let k = (0...(sealed.count - key.count)).first(where: { sealed[$0..<($0 + key.count)].elementsEqual(key) }) else {
                    Issue.record("no sealed member in \(String(decoding: sealed, as: UTF8.self))")
                    return sealed
                }
                let start = k + key.count
                var depth = 0, inString = false, escaped = false, end = start
                for i in start..<sealed.count {
                    let c = sealed[i]
                    if inString {
                        if escaped { escaped = false } else if c == UInt8(ascii: "\\") { escaped = true } else if c == UInt8(ascii: "\"") { inString = false }
                        continue
                    }
                    if c == UInt8(ascii: "\"") { inString = true }
                    if c == UInt8(ascii: "[") || c == UInt8(ascii: "{") { depth += 1 }
                    if c == UInt8(ascii: "]") || c == UInt8(ascii: "}") { depth -= 1 }
                    if depth == 0 { end = i + 1; break }
                }
                #expect(end > start + 2)
                return Array(sealed[..<start]) + Array(replacement.utf8) + Array(sealed[end...])
            }
            #expect(String(decoding: written, as: UTF8.self).contains(#""sealed":"# + replacement), "\(replacement)")
            #expect(String(decoding: written, as: UTF8.self).contains(#""object":{"#), "\(replacement)")
            let (read, folded, expected) = try readAndRebuilt(tmp)
            #expect(read == written, "a reader gives it as stored (\(replacement))")
            #expect(expected.appointments.count == 1, "\(replacement)")
            #expect(expected.appointments.first?["appointment_id"]?.stringValue == "m-1", "\(replacement)")
            #expect(try snapshot(folded) == expected, "\(replacement)")
            #expect(try folded.readSync { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM quarantine") } == 0, "\(replacement)")
        }
    }

    /// The boxes' base64 is written and read without Foundation: sealing's encoder writes
    /// Foundation's text for any bytes; whatever the decoder decodes, Foundation decodes to the
    /// same bytes; what sealing writes it always decodes.
    @Test func canonicalBase64AgreesWithFoundation() {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("DeferredOpeningTests base64 seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        var decoded = 0, refused = 0
        for n in 0..<4000 {
            let bytes = (0..<rng.below(70)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var text = Array(Data(bytes).base64EncodedString().utf8)
            let intact = n % 2 == 0
            if !intact, !text.isEmpty {
                // One character changed, dropped or added (padding, line breaks, other bytes).
                let i = rng.below(text.count)
                let odd = Array("A/+=\n\r -_.Zz09".utf8)
                let c = odd[rng.below(odd.count)]
                switch rng.below(3) {
                case 0: text[i] = c
                case 1: text.remove(at: i)
                default: text.insert(c, at: i)
                }
            }
            if intact {
                // Sealing's encoder spells every box as Foundation does.
                #expect(Array(bytes.withUnsafeBytes { Base64Canonical.encode($0) }.utf8) == text, "seed \(seed), case \(n)")
            }
            let mine = text.withUnsafeBufferPointer { Base64Canonical.decode($0) }
            let foundation = Data(base64Encoded: String(decoding: text, as: UTF8.self)).map { Array($0) }
            if intact { #expect(mine == bytes, "seed \(seed), case \(n)") }
            if let mine {
                decoded += 1
                #expect(foundation == mine, "seed \(seed), case \(n): \(String(decoding: text, as: UTF8.self))")
            } else {
                refused += 1
            }
        }
        #expect(decoded > 2000 && refused > 500)
    }

    /// A rebuild and a catch-up leave observations sealed on the reading thread; a projection
    /// the fold applies one by one still gets each event opened whole, as any reader gives it.
    @Test func projectionsAppliedOneByOneGetEventsOpened() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("DeferredOpeningTests seed: \(seed)")
        let tmp = try TempStore()
        try ChunkedFoldTests.randomLog(tmp.store, seed: seed, appends: 80)
        let reader = try LedgerReader(store: tmp.store)

        // Deferred, the batches hold the events as stored; opened, they are what a reader gives.
        var eager: [EventEnvelope] = []
        try reader.forEachEvent { eager.append($0); return true }
        let batches = try reader.batches(deferOpening: true)
        var i = 0, sealed = 0
        while let batch = try batches.next() {
            let opening = try #require(batch.opening)
            for e in batch.events {
                if DeferredOpening.maySeal(e), case .appointmentDiscovered = e.eventType { sealed += 1 }
                if DeferredOpening.maySeal(e), case .appointmentChanged = e.eventType { sealed += 1 }
                #expect(try opening.reveal(e).data == eager[i].data, "seed \(seed), seq \(e.seq)")
                i += 1
            }
        }
        #expect(i == eager.count)
        #expect(sealed > 5, "seed \(seed): the log should hold sealed observations")
        #expect(try reader.batches().next()?.opening == nil)

        // The same views, folded in memory and applied one by one (wrapped, the fold does not know them).
        let wrapped = allProjections.map { p -> any Projection in
            p is AppointmentsProjection || p is MeetingURLsProjection || p is LocationsProjection
                ? BumpedProjection(inner: p, schemaVersion: p.schemaVersion) : p
        }
        let folded = try ProjectionStore(path: tmp.sibling("folded.sqlite"))
        let applied = try ProjectionStore(path: tmp.sibling("applied.sqlite"), projections: wrapped)
        for views in [folded, applied] {
            views.eventsPerTransaction = 7
            _ = try views.rebuild(names: [], reader)
        }
        let expected = try snapshot(folded)
        #expect(try snapshot(applied) == expected, "seed \(seed)")
        #expect(expected.appointments.contains { $0["client_name"]?.stringValue == "Some One" }, "seed \(seed)")

        let caughtUp = try ProjectionStore(path: tmp.sibling("caught-up.sqlite"), projections: wrapped)
        caughtUp.eventsPerTransaction = 5
        try caughtUp.catchUp(reader)
        #expect(try snapshot(caughtUp) == expected, "seed \(seed)")
    }
}
