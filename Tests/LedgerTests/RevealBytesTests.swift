import Foundation
import JSONCore
@testable import Ledger
import TestSupport
import Testing

/// Reading a sealed observation opens it on byte ranges (`PersonalData.openObservationBytes`);
/// it must give exactly the bytes parsing the whole data gives (`openObservationDataParsing`,
/// the reference), or step aside (nil) so the reference runs — never a different result, and
/// never a result where the reference fails.
@Suite struct RevealBytesTests {
    /// Sealed data as `sync` records it, from `SealBytesTests`' random observations; sometimes
    /// re-spaced or damaged afterwards.
    @Test func byteOpeningEqualsParsingOnRandomSealedObservations() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("RevealBytesTests seed: \(seed)")
        let dir = TempDir("revealbytes")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let sealKey = SealBytesTests.sealKey(keys)
        var g = SealBytesTests.Generator(rng: SeededRNG(seed: seed))
        var fast = 0, opened = 0, forgotten = 0, errors = 0, altered = 0
        let cases = 3000
        for n in 0..<cases {
            let clear = Array(g.data().utf8)
            guard var data = try? PersonalData.sealObservationDataParsing(clear, patientOf: { SealBytesTests.patientOf[$0] }, key: sealKey)
            else { continue }
            if g.chance(10) {
                // Re-spaced: a space after some commas and colons (inside strings too, which changes them).
                var spaced: [UInt8] = []
                for c in data {
                    spaced.append(c)
                    if c == UInt8(ascii: ",") || c == UInt8(ascii: ":"), g.chance(30) { spaced.append(UInt8(ascii: " ")) }
                }
                data = spaced
                altered += 1
            } else if g.chance(6) {
                if g.chance(50) { data = Array(data.prefix(g.rng.below(data.count))) } else if !data.isEmpty {
                    data[g.rng.below(data.count)] = g.pick(Array("{}[]\",:\\ 0a-".utf8))
                }
                altered += 1
            }
            // Some patients forgotten (no key), one sometimes missing from the key store (an error).
            let (readKey, anyForgotten) = g.readKey(keys)
            let text = String(decoding: data, as: UTF8.self)
            let reference = Result(catching: { try PersonalData.openObservationDataParsing(data, key: readKey) })
            let bytes = PersonalData.openObservationBytes(data, key: readKey)
            switch reference {
            case .failure(let error):
                errors += 1
                if let out = bytes {
                    Issue.record("case \(n) (seed \(seed)): the reference fails (\(error)) but the byte path gives \(String(decoding: out, as: UTF8.self)) for \(text)")
                }
            case .success(nil):
                if let out = bytes {
                    Issue.record("case \(n) (seed \(seed)): the reference reads the data as stored but the byte path gives \(String(decoding: out, as: UTF8.self)) for \(text)")
                }
            case .success(let expected?):
                opened += 1
                if anyForgotten { forgotten += 1 }
                guard let out = bytes else { continue }
                // A forgotten patient's part: the byte path steps aside (the parsing path also
                // cleans the clear part, `Redaction.cleanedTelehealth`).
                #expect(!String(decoding: expected.data, as: UTF8.self).contains(PersonalData.forgottenName),
                        "case \(n) (seed \(seed)): the byte path opened a forgotten patient's part")
                fast += 1
                #expect(String(decoding: out, as: UTF8.self) == String(decoding: expected.data, as: UTF8.self),
                        "case \(n) (seed \(seed)): \(text)")
                // The value a reader of the event parses is the one the reference keeps.
                #expect(try FastJSON.parse(out) == expected.value, "case \(n) (seed \(seed)): \(text)")
            }
        }
        print("RevealBytesTests: \(cases) cases, \(opened) opened by the reference, \(fast) of them on the byte path, \(forgotten) with forgotten patients, \(errors) errors, \(altered) altered")
        // The generator must exercise the byte path, forgotten patients and the failures.
        #expect(fast > (opened - forgotten) / 2)
        #expect(opened > cases / 6)
        #expect(forgotten > cases / 30)
        #expect(errors > 0)  // ~15 a run: more than 3 (the bar before) failed about 1 run in 5,000
    }

    /// The shape the benchmark and `sync` record opens on the byte path, to the clear object;
    /// with a forgotten additional client it is left to the parsing path, where they read as
    /// `(forgotten)`.
    @Test func intakeQShapedObservationOpensOnTheBytePath() throws {
        let dir = TempDir("revealbytes")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let object = #"{"AdditionalClients":[{"ClientEmail":"in@example.org","ClientId":100,"ClientName":"In Side"},{"ClientId":"999","ClientName":"Out"}],"ClientDateOfBirth":"1980-02-03","ClientEmail":"sage@example.org","ClientId":4127,"ClientName":"Sage Quintero","ClientNote":null,"ClientPhone":"(555) 011-4891","CustomFields":[{"FieldId":"vid1","Text":"Video link","Value":"https://zoom.us/j/1"}],"Duration":50,"Id":"6a3f0001","PractitionerNote":"Line one.\nLine two \"quoted\" café","Price":150,"StartDate":1796925900000,"Status":"Confirmed"}"#
        let clear = Array((#"{"appointment_id":"6a3f0001","content_hash":"abc","changed_fields":["Status"],"object":"# + object + "}").utf8)
        let sealed = try PersonalData.sealObservationData(clear, patientOf: { SealBytesTests.patientOf[$0] }, key: keys.key(for:))
        #expect(!String(decoding: sealed, as: UTF8.self).contains("Sage"))

        let out = try #require(PersonalData.openObservationBytes(sealed, key: { try keys.key(for: $0) }))
        #expect(String(decoding: out, as: UTF8.self) == String(decoding: clear, as: UTF8.self))

        let forgetting: (String) throws -> SealingKey? = { $0 == "p1" ? nil : try keys.key(for: $0) }
        #expect(PersonalData.openObservationBytes(sealed, key: forgetting) == nil)
        let reference = try #require(try PersonalData.openObservationDataParsing(sealed, key: forgetting))
        let text = String(decoding: reference.data, as: UTF8.self)
        #expect(text.contains(#"{"ClientId":null,"ClientName":"(forgotten)"}"#))
        #expect(text.contains("Sage Quintero") && !text.contains("In Side"))
    }

    /// Parts that overlap (which sealing never writes, but a log may hold): the later part's
    /// value wins, a forgotten part between them included (on the parsing path; the byte path
    /// steps aside for it, and gives what the parsing path gives when every key is there).
    @Test func laterPartsWinOnBothPaths() throws {
        let dir = TempDir("revealbytes")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        func box(_ plain: String, _ patient: String) throws -> String {
            try PersonalData.sealPlain(Array(plain.utf8), patient: patient, context: "appointment/a-1", key: keys.key(for: patient))
        }
        let orders: [[PersonalData.Part]] = [
            [PersonalData.Part(patient: "p1", slots: ["client"], box: try box(#"{"ClientName":"First","ClientPhone":"1"}"#, "p1")),
             PersonalData.Part(patient: "p9", slots: ["client", "AdditionalClients/0"], box: try box("{}", "p9")),
             PersonalData.Part(patient: "p2", slots: ["client"], box: try box(#"{"AdditionalClients/0":{"ClientId":7},"ClientName":"Second"}"#, "p2"))],
            [PersonalData.Part(patient: "p2", slots: ["client"], box: try box(#"{"AdditionalClients/0":{"ClientId":7},"ClientName":"Second"}"#, "p2")),
             PersonalData.Part(patient: "p1", slots: ["client"], box: try box(#"{"ClientName":"First","ClientPhone":"1"}"#, "p1")),
             PersonalData.Part(patient: "p9", slots: ["client", "AdditionalClients/0"], box: try box("{}", "p9"))],
        ]
        var results: Set<[UInt8]> = []
        for parts in orders {
            var obs = AppointmentObservation(appointmentId: "a-1", contentHash: "h", changedFields: [],
                                             object: Array(#"{"AdditionalClients":[{}],"ClientName":null,"Id":"a-1"}"#.utf8))
            obs.sealed = parts
            let data = obs.encodeData(includeChangedFields: false)
            let key: (String) throws -> SealingKey? = { $0 == "p9" ? nil : try keys.key(for: $0) }
            let reference = try #require(try PersonalData.openObservationDataParsing(data, key: key))
            // A forgotten part among them: the byte path steps aside.
            #expect(PersonalData.openObservationBytes(data, key: key) == nil)
            results.insert(reference.data)
            let known = try #require(try PersonalData.openObservationDataParsing(data, key: { try keys.key(for: $0) }))
            #expect(PersonalData.openObservationBytes(data, key: { try keys.key(for: $0) }) == known.data)
        }
        // The order of the parts decides.
        #expect(results.count == 2)
    }

    /// Boxes no sealing writes but a log may hold: another spelling of an element's index, a
    /// negative index (the parsing path trapped on it), a number too large for a Double. The
    /// byte path steps aside for each, and the parsing path reads them without crashing.
    @Test func oddBoxesStepAsideAndNeverCrash() throws {
        let dir = TempDir("revealbytes")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        func data(_ plain: String, slots: [String] = ["client"], patient: String = "p1") throws -> [UInt8] {
            let box = try PersonalData.sealPlain(Array(plain.utf8), patient: patient, context: "appointment/a-1", key: keys.key(for: patient))
            var obs = AppointmentObservation(appointmentId: "a-1", contentHash: "h", changedFields: [],
                                             object: Array(#"{"AdditionalClients":[{},{}],"ClientName":null,"Id":"a-1"}"#.utf8))
            obs.sealed = [PersonalData.Part(patient: patient, slots: slots, box: box)]
            return obs.encodeData(includeChangedFields: false)
        }
        let key: (String) throws -> SealingKey? = { $0 == "p9" ? nil : try keys.key(for: $0) }
        for plain in [#"{"AdditionalClients/0":1,"AdditionalClients/00":2}"#, #"{"AdditionalClients/+1":3}"#,
                      #"{"ClientName":1e400}"#] {
            let d = try data(plain)
            #expect(PersonalData.openObservationBytes(d, key: key) == nil, "\(plain)")
            let reference = try #require(try PersonalData.openObservationDataParsing(d, key: key), "\(plain)")
            #expect(String(decoding: reference.data, as: UTF8.self).contains(#""Id":"a-1""#))
        }
        // A negative index names no element: the field is kept under its name, as the parsing path does.
        let negative = try data(#"{"AdditionalClients/-1":4}"#)
        let kept = try #require(PersonalData.openObservationBytes(negative, key: key))
        #expect(kept == (try #require(try PersonalData.openObservationDataParsing(negative, key: key))).data)
        #expect(String(decoding: kept, as: UTF8.self).contains(#""AdditionalClients/-1":4"#))
        // A forgotten patient's negative slot (slots are outside the box): nothing replaced.
        let d = try data("{}", slots: ["client", "AdditionalClients/-1"], patient: "p9")
        let reference = try #require(try PersonalData.openObservationDataParsing(d, key: key))
        #expect(PersonalData.openObservationBytes(d, key: key) == nil)
        #expect(String(decoding: reference.data, as: UTF8.self).contains(#""AdditionalClients":[{},{}],"ClientName":"(forgotten)""#))
        // An index in the canonical spelling still takes the byte path.
        let one = try data(#"{"AdditionalClients/1":{"ClientId":7}}"#)
        let opened = try #require(PersonalData.openObservationBytes(one, key: key))
        #expect(opened == (try #require(try PersonalData.openObservationDataParsing(one, key: key))).data)
        #expect(String(decoding: opened, as: UTF8.self).contains(#""AdditionalClients":[{},{"ClientId":7}]"#))
    }
}
