import Foundation
import JSONCore
@testable import Ledger
import TestSupport
import Testing

/// `PersonalData.sealObservationData` seals on byte ranges (`sealObservationBytes`); it must
/// give exactly what parsing the whole data gives (`sealObservationDataParsing`, the reference):
/// the same bytes but for the AES-GCM boxes, whose plaintexts must be the same bytes; the same
/// error when the reference throws; the data unchanged when it has no object or id.
@Suite struct SealBytesTests {
    static let patientOf: [String: String] = [
        "100": "p1", "101": "p2", "4127": "p3", "555": "p4", "150": "p5", "true": "p6", "x\"y": "p7",
        "José": "p8", "gone": "p-forgotten",
    ]

    /// The key lookup the random sealing tests seal with: `p-forgotten` is refused (that
    /// observation is not sealed).
    static func sealKey(_ keys: KeyRing) -> (String) throws -> SealingKey {
        { p in
            if p == "p-forgotten" { throw LedgerError("patient \(p) was forgotten") }
            return try keys.key(for: p)
        }
    }

    /// Random JSON text of IntakeQ-like observations: keys in any order (repeated sometimes),
    /// whitespace sometimes, numbers and strings in canonical and other spellings.
    struct Generator {
        var rng: SeededRNG
        var spaced = false

        mutating func pick<T>(_ xs: [T]) -> T { xs[rng.below(xs.count)] }
        mutating func chance(_ percent: Int) -> Bool { rng.below(100) < percent }

        /// A key lookup for reading: some patients forgotten (nil), one sometimes missing from
        /// the key store (an error). `forgotten`: whether any patient is.
        mutating func readKey(_ keys: KeyRing) -> (lookup: (String) throws -> SealingKey?, forgotten: Bool) {
            let gone: Set<String> = Set(["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"].filter { _ in chance(20) })
            let missing = chance(3) ? pick(["p1", "p3", "p5"]) : nil
            return ({ p in
                if p == missing { throw LedgerError("the key store has no key for patient \(p)") }
                return gone.contains(p) ? nil : try keys.key(for: p)
            }, !gone.isEmpty)
        }
        mutating func ws() -> String { spaced && chance(30) ? pick([" ", "\n", "\t ", "\r\n  "]) : "" }

        static let numbers = ["0", "-0", "7", "-12", "150", "150.0", "1.5", "1e3", "2E-2", "-3.25e+2", "123456789012345",
                              "-123456789012345", "1234567890123456", "99999999999999999999", "0.1", "-0.0", "1796925900000"]
        static let strings = [#""plain""#, #""""#, #""a\nb""#, #""quote \" and \\ slash""#, #""\/path""#, #""\u00e9t\u00E9""#,
                              #""ctl \u0001 \u001f \u001F""#, #""bell\b form\f""#, "\"Jos\u{e9}\"", "\"emoji \u{1F600}\"",
                              #""pair \ud83d\ude00""#, #""tab\t cr\r""#, #""\u0009\u000a""#, #""https://zoom.us/j/42?pwd=x""#,
                              "\"\u{7f}del\"", #""x\"y""#, #""100""#, #""gone""#]
        static let keys = ["Id", "Status", "StartDate", "Price", "TelehealthInfo", "LocationId", "a", "B", "zz", "Ä",
                           "key\\u0041", "Client", "ClientIdX", "_"]

        mutating func scalar() -> String {
            switch rng.below(5) {
            case 0: return pick(["null", "true", "false"])
            case 1, 2: return pick(Self.numbers)
            default: return pick(Self.strings)
            }
        }

        mutating func value(_ depth: Int) -> String {
            if depth > 3 || chance(60) { return scalar() }
            if chance(50) { return array(depth) }
            return object(depth, keys: (0..<rng.below(5)).map { _ in pick(Self.keys) })
        }

        mutating func array(_ depth: Int, of element: ((inout Generator) -> String)? = nil) -> String {
            let n = rng.below(4)
            var parts: [String] = []
            for _ in 0..<n { parts.append(ws() + (element.map { $0(&self) } ?? value(depth + 1)) + ws()) }
            return "[" + ws() + parts.joined(separator: ",") + "]"
        }

        mutating func object(_ depth: Int, keys: [String], value make: ((inout Generator, String) -> String)? = nil) -> String {
            var members: [String] = []
            for k in keys {
                members.append(ws() + "\"\(k)\"" + ws() + ":" + ws() + (make.map { $0(&self, k) } ?? value(depth + 1)) + ws())
            }
            return "{" + ws() + members.joined(separator: ",") + "}"
        }

        mutating func clientId() -> String {
            pick(["100", "101", "4127", "\"555\"", "150.0", "true", "null", #""x\"y""#, "\"Jos\u{e9}\"", "999", "\"999\"", "[]",
                  "{}", "1.5e2", #""gone""#])
        }

        mutating func appointment() -> String { appointment(keys: appointmentKeys()) }

        /// The keys of an appointment object, in the order it has them.
        mutating func appointmentKeys() -> [String] {
            var keys = PersonalData.clientFields + PersonalData.appointmentFields + ["Id", "Status", "StartDate", "TelehealthInfo",
                                                                                   "AdditionalClients", "Price", "Procedures"]
            keys = keys.filter { _ in chance(75) }
            keys.shuffle(using: &rng)
            if chance(50) { keys.sort() }  // canonical order, as a stored clear object has it
            if chance(10), let k = keys.randomElement(using: &rng) { keys.insert(k, at: rng.below(keys.count + 1)) }
            if chance(10) { keys.append(pick(Self.keys)) }
            return keys
        }

        mutating func appointment(keys: [String]) -> String {
            object(1, keys: keys) { g, k in
                switch k {
                case "ClientId", "ExternalClientId": return g.clientId()
                case "AdditionalClients":
                    if g.chance(10) { return g.scalar() }
                    return g.array(2) { g in
                        if g.chance(15) { return g.scalar() }
                        var ks = ["ClientId", "ClientName", "ClientEmail", "IntakeId"].filter { _ in g.chance(80) }
                        ks.shuffle(using: &g.rng)
                        return g.object(3, keys: ks) { g, k in k == "ClientId" ? g.clientId() : g.value(4) }
                    }
                case "CustomFields":
                    if g.chance(20) { return g.pick(["[]", "null", "[ ]"]) }
                    return g.array(2) { g in g.object(3, keys: ["FieldId", "Text", "Value"]) { g, _ in g.scalar() } }
                default:
                    return g.chance(15) ? g.pick(["null", "\"\"", "[]"]) : g.value(2)
                }
            }
        }

        /// Observation data; `keys`: its object's keys in this order (else random ones).
        mutating func data(keys: [String]? = nil) -> String {
            spaced = chance(20)
            var members: [(String, String)] = []
            if chance(95) { members.append(("appointment_id", pick([#""a-1""#, #""6a3f0001""#, "42", "null", "true", #""a\u0041""#]))) }
            if chance(90) { members.append(("content_hash", pick([#""0123abcd""#, "7", "null", #""h\n""#]))) }
            if chance(50) {
                members.append(("changed_fields", chance(90) ? array(1) { g in g.pick([#""Status""#, #""LastModified""#, "3", "null", "{}"]) }
                                                           : "null"))
            }
            if chance(97) { members.append(("object", chance(97) ? appointment(keys: keys ?? appointmentKeys()) : scalar())) }
            if chance(10) { members.append(("sealed", "[]")) }
            if chance(5) { members.append(("object", appointment())) }
            members.shuffle(using: &rng)
            return ws() + "{" + members.map { ws() + "\"\($0.0)\"" + ws() + ":" + ws() + $0.1 + ws() }.joined(separator: ",") + "}" + ws()
        }
    }

    /// The output with each box replaced by its plaintext (hex), so two sealings compare byte for byte.
    static func opened(_ output: [UInt8], keys: KeyRing) throws -> String {
        var text = String(decoding: output, as: UTF8.self)
        guard case .object(let d)? = try? FastJSON.parse(output), case .array(let parts)? = d["sealed"] else { return text }
        let id = d["appointment_id"]?.stringValue ?? ""
        for part in parts {
            let patient = try #require(part["patient"]?.stringValue)
            let box = try #require(part["box"]?.stringValue)
            let plain = try #require(PersonalData.openedPlaintext(box, patient: patient, context: "appointment/" + id,
                                                                  key: try keys.key(for: patient)))
            text = text.replacingOccurrences(of: box, with: "PLAIN:" + String(decoding: plain, as: UTF8.self))
        }
        return text
    }

    @Test func byteSealingEqualsParsingOnRandomObservations() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("SealBytesTests seed: \(seed)")
        let dir = TempDir("sealbytes")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let key: (String) throws -> SealingKey = { p in
            if p == "p-forgotten" { throw LedgerError("patient \(p) was forgotten") }
            return try keys.key(for: p)
        }
        var g = Generator(rng: SeededRNG(seed: seed))
        var fast = 0, unchanged = 0, sealedParts = 0, errors = 0
        let cases = 3000
        for n in 0..<cases {
            var data = Array(g.data().utf8)
            if g.chance(8) {
                // Damaged: cut short, or one byte changed.
                if g.chance(50) { data = Array(data.prefix(g.rng.below(data.count))) } else if !data.isEmpty {
                    data[g.rng.below(data.count)] = g.pick(Array("{}[]\",:\\ 0a-".utf8))
                }
            }
            let text = String(decoding: data, as: UTF8.self)
            let reference = Result(catching: { try PersonalData.sealObservationDataParsing(data, patientOf: { Self.patientOf[$0] }, key: key) })
            let bytes = Result(catching: { try PersonalData.sealObservationBytes(data, patientOf: { Self.patientOf[$0] }, key: key) })
            let public_ = Result(catching: { try PersonalData.sealObservationData(data, patientOf: { Self.patientOf[$0] }, key: key) })
            switch reference {
            case .failure(let error):
                errors += 1
                // The byte path never succeeds where the reference fails, and the result is its error.
                if case .success(let out?) = bytes {
                    Issue.record("case \(n) (seed \(seed)): the reference fails (\(error)) but the byte path gives \(String(decoding: out, as: UTF8.self)) for \(text)")
                }
                guard case .failure(let e2) = public_ else {
                    Issue.record("case \(n) (seed \(seed)): sealObservationData succeeded where the reference fails: \(text)")
                    continue
                }
                #expect("\(e2)" == "\(error)", "case \(n) (seed \(seed)): \(text)")
            case .success(let expected):
                let got = try public_.get()
                #expect(try Self.opened(got, keys: keys) == Self.opened(expected, keys: keys), "case \(n) (seed \(seed)): \(text)")
                if got == data { unchanged += 1 }
                if case .success(let out?) = bytes {
                    fast += 1
                    #expect(try Self.opened(out, keys: keys) == Self.opened(expected, keys: keys),
                            "case \(n) (seed \(seed)): \(text)")
                    if case .array(let parts)? = try FastJSON.parse(out)["sealed"] { sealedParts += parts.count }
                }
            }
        }
        print("SealBytesTests: \(cases) cases, \(fast) on the byte path, \(unchanged) unchanged, \(errors) errors, \(sealedParts) parts sealed")
        // The generator must exercise the byte path and the sealing, not only the fallbacks.
        #expect(fast > cases / 4)
        #expect(sealedParts > cases / 6)
        #expect(errors > cases / 50)
    }

    /// One thread seals many observations with one `SealScratch`, which remembers how the last
    /// key layouts it met were sorted (`KeyOrderMemo`). Objects with the same keys in the same order
    /// (IntakeQ's), with other keys, as many keys but one different, repeated keys, keys already
    /// sorted: each seals as the reference seals it alone.
    @Test func oneScratchSealsEachObservationAsTheReferenceDoes() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("SealBytesTests one scratch seed: \(seed)")
        let dir = TempDir("sealbytes")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let key = Self.sealKey(keys)
        var g = Generator(rng: SeededRNG(seed: seed))
        // A few layouts, and for each some that differ from it only in one key's spelling (as
        // long, the first letter changed: `Status`, `ztatus`) or in the order of two keys.
        // The first is IntakeQ-shaped (every client and appointment field, a client and additional
        // clients, in an order of its own, not sorted: sorting them is what the memo saves); the
        // random ones may all lack `ClientId`, which leaves few parts to seal.
        var layouts = [["Id", "Status", "StartDate"] + PersonalData.clientFields + ["TelehealthInfo", "AdditionalClients"]
                       + PersonalData.appointmentFields]
            + (0..<3).map { _ in g.appointmentKeys() }
        for l in layouts where l.count > 1 {
            var respelled = l
            let k = g.rng.below(l.count)
            respelled[k] = g.pick(["A", "z", "_"]) + String(l[k].dropFirst())
            var swapped = l
            swapped.swapAt(0, l.count - 1)
            layouts += [respelled, swapped]
        }
        var scratch = SealScratch(expected: 1000)
        var remembered = 0, sealedParts = 0
        var layout = layouts[0]
        for n in 0..<1500 {
            // Mostly the same layout as the one before, so the memo is used and checked; often
            // the IntakeQ-shaped one, so parts are sealed whatever the random layouts hold.
            if g.chance(30) { layout = g.chance(30) ? layouts[0] : g.pick(layouts) }
            let data = Array(g.data(keys: layout).utf8)
            let text = String(decoding: data, as: UTF8.self)
            let reference = Result(catching: { try PersonalData.sealObservationDataParsing(data, patientOf: { Self.patientOf[$0] }, key: key) })
            let bytes = Result(catching: { try PersonalData.sealObservationBytes(data, patientOf: { Self.patientOf[$0] }, key: key, scratch: &scratch) })
            switch (reference, bytes) {
            case (.success(let expected), .success(let out?)):
                remembered += 1
                #expect(try Self.opened(out, keys: keys) == Self.opened(expected, keys: keys), "case \(n) (seed \(seed)): \(text)")
                if case .array(let parts)? = try FastJSON.parse(out)["sealed"] { sealedParts += parts.count }
            case (.failure, .success(let out?)):
                Issue.record("case \(n) (seed \(seed)): the reference fails but the byte path gives \(String(decoding: out, as: UTF8.self)) for \(text)")
            case (.success, .failure(let error)):
                // `sealObservationData` hands the byte path's errors on: it must not throw where the reference does not.
                Issue.record("case \(n) (seed \(seed)): the byte path throws \(error) where the reference does not, for \(text)")
            default:
                break  // the byte path gave up (nil): the reference's result is the one given
            }
        }
        print("SealBytesTests one scratch: \(remembered) of 1500 on the byte path, \(sealedParts) parts sealed, \(scratch.keyOrder.hits) objects sorted by a remembered layout")
        #expect(remembered > 300)
        #expect(sealedParts > 100)  // ~380 a run, sd ~70 (10 runs, after the IntakeQ-shaped layout came in)
        #expect(scratch.keyOrder.hits > 300)
    }

    /// The memo itself: the same keys in the same order fit a remembered layout; a different
    /// key, order or count does not; more layouts than it holds push the oldest out.
    @Test func theKeyOrderMemoFitsOnlyTheSameKeysInTheSameOrder() throws {
        func members(_ object: String, _ memo: KeyOrderMemo) throws -> [String] {
            let data = Array(object.utf8)
            return try data.withUnsafeBufferPointer { buf in
                var scan = ByteJSON(b: buf, keyOrder: memo)
                var i = 0
                let range = try scan.collectMembers(&i, depth: 1)
                return range.filter { !scan.members[$0].shadowed }.map { m in
                    let x = scan.members[m]
                    return String(decoding: buf[x.keyStart..<x.keyEnd], as: UTF8.self) + "=" + String(decoding: buf[x.valueStart..<x.valueEnd], as: UTF8.self)
                }
            }
        }
        let memo = KeyOrderMemo()
        // Nothing remembered yet: no object fits, not even one without members.
        #expect(try members("{}", memo) == [])
        #expect(try members(#"{"b":1,"a":2,"b":3}"#, memo) == ["a=2", "b=3"])
        // Same keys, same order: the remembered order, with the same key shadowed.
        #expect(try members(#"{"b":4,"a":5,"b":6}"#, memo) == ["a=5", "b=6"])
        #expect(memo.hits == 1)
        // Same count, one key different; a different order; fewer keys.
        #expect(try members(#"{"b":4,"c":5,"b":6}"#, memo) == ["b=6", "c=5"])
        #expect(try members(#"{"c":1,"b":2,"a":3}"#, memo) == ["a=3", "b=2", "c=1"])
        #expect(try members(#"{"c":1,"b":2,"a":3}"#, memo) == ["a=3", "b=2", "c=1"])
        #expect(try members(#"{"a":1,"c":2,"b":3}"#, memo) == ["a=1", "b=3", "c=2"])
        #expect(try members(#"{"bb":1,"a":2}"#, memo) == ["a=2", "bb=1"])
        #expect(try members(#"{"b":1,"aa":2}"#, memo) == ["aa=2", "b=1"])
        // Layouts of n + 2 keys for n from 3 to 12 (`k2`, `k1`, `k0`, `x`, `k0` for 3), each met
        // twice in a row (the second sorted by the memo); then all again, the oldest pushed out
        // by then.
        for _ in 0..<2 {
            for n in 3...12 {
                let keys = (0..<n).reversed().map { "k\($0)" } + ["x", "k0"]
                let text = "{" + keys.enumerated().map { "\"\($1)\":\($0)" }.joined(separator: ",") + "}"
                // By key (`k1` before `k10`); the second `k0` wins.
                let expected = (0..<n).map { ("k\($0)", $0 == 0 ? n + 1 : n - 1 - $0) }.sorted { $0.0 < $1.0 }.map { "\($0)=\($1)" }
                    + ["x=\(n)"]
                let before = memo.hits
                #expect(try members(text, memo) == expected, "\(text)")
                #expect(try members(text, memo) == expected, "\(text)")
                #expect(memo.hits == before + 1, "\(text)")
            }
        }
    }

    /// A box authenticates the context FORMAT.md documents: `syncledger-personal-v1\n` + patient +
    /// `\n` + context, as UTF-8 (boxes already in logs open only with exactly these bytes).
    @Test func theAdditionalDataIsTheDocumentedText() {
        for (patient, context) in [("p-021", "appointment/6a3f0001"), ("", ""), ("p-José", "roster"), ("p\n1", "appointment/a\u{1F600}")] {
            #expect(PersonalData.aad(patient, context) == Array("syncledger-personal-v1\n\(patient)\n\(context)".utf8))
        }
    }

    /// The shapes the benchmark and `sync` record take the byte path (no fallback), and open to
    /// the clear object the reference gives.
    @Test func intakeQShapedObservationTakesTheBytePath() throws {
        let dir = TempDir("sealbytes")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let object = #"{"Id":"6a3f0001","ClientName":"Sage Quintero","ClientEmail":"sage@example.org","ClientPhone":"(555) 011-4891","ClientDateOfBirth":"1980-02-03","ClientId":4127,"Status":"Confirmed","StartDate":1796925900000,"Duration":50,"Price":150.0,"LocationId":"1","IntakeId":"ab-12","CreatedBy":"Front Desk","TelehealthInfo":{"Id":"tv-1","StartUrl":"https://zoom.us/s/1?zak=x","Invitation":null,"Provider":"Zoom"},"ClientNote":null,"PractitionerNote":"Line one.\nLine two \"quoted\" caf\u00e9","CustomFields":[{"FieldId":"vid1","Text":"Video link","Value":"https://zoom.us/j/1"}],"AdditionalClients":[{"ClientId":100,"ClientName":"In Side","ClientEmail":"in@example.org"},{"ClientId":"999","ClientName":"Out"}],"FullCancellationReason":null,"Procedures":[]}"#
        let data = Array((#"{"appointment_id":"6a3f0001","content_hash":"abc","changed_fields":["Status"],"object":"# + object + "}").utf8)
        let out = try #require(try PersonalData.sealObservationBytes(data, patientOf: { Self.patientOf[$0] }, key: keys.key(for:)))
        let reference = try PersonalData.sealObservationDataParsing(data, patientOf: { Self.patientOf[$0] }, key: keys.key(for:))
        #expect(try Self.opened(out, keys: keys) == Self.opened(reference, keys: keys))
        // Two parts: the primary (client fields and the appointment's text) and the additional client.
        let parts = try #require(FastJSON.parse(out)["sealed"])
        guard case .array(let list) = parts else { Issue.record("no sealed parts"); return }
        #expect(list.map { $0["patient"]?.stringValue } == ["p3", "p1"])
        #expect(list.first?["slots"] == .array([.string("client"), .string("appointment")]))
        let clear = try #require(AppointmentObservation.objectText(in: out))
        #expect(!clear.contains("Sage") && !clear.contains("Line one") && !clear.contains("In Side") && clear.contains("Out"))
        #expect(clear.contains(#""Price":150,"#))
    }

    /// The StaticString lists the byte path looks up are the lists the reference uses.
    @Test func fieldListsAgree() {
        #expect(PersonalData.clientFieldNames.map { "\($0)" } == PersonalData.clientFields)
        #expect(PersonalData.appointmentFieldNames.map { "\($0)" } == PersonalData.appointmentFields)
    }
}

/// `AppointmentObservation.encodeData` writes bytes directly; they must be the text it wrote
/// before (`{"appointment_id":\(jsonQuoted(id)),…`), escapes and all.
@Suite struct ObservationEncodingTests {
    static func textEncoding(_ o: AppointmentObservation, includeChangedFields: Bool) -> [UInt8] {
        var head = "{\"appointment_id\":\(jsonQuoted(o.appointmentId)),\"content_hash\":\(jsonQuoted(o.contentHash))"
        if includeChangedFields { head += ",\"changed_fields\":[" + o.changedFields.map(jsonQuoted).joined(separator: ",") + "]" }
        if !o.sealed.isEmpty { head += ",\"sealed\":[" + o.sealed.map(\.json).joined(separator: ",") + "]" }
        head += ",\"object\":"
        return Array(head.utf8) + o.object + [UInt8(ascii: "}")]
    }

    @Test func bytesEqualTheTextEncoding() {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("ObservationEncodingTests seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        let words = ["a-1", "", "quote\"d", "back\\slash", "new\nline", "tab\t", "ctl\u{1}", "é", "😀", "Status", "AdditionalClients/0"]
        func word() -> String { words[rng.below(words.count)] + (rng.chance(0.3) ? String(rng.below(1000)) : "") }
        for n in 0..<500 {
            var o = AppointmentObservation(appointmentId: word(), contentHash: word(),
                                           changedFields: (0..<rng.below(4)).map { _ in word() },
                                           object: Array(#"{"Id":"x","N":1}"#.utf8))
            o.sealed = (0..<rng.below(3)).map { _ in
                PersonalData.Part(patient: word(), slots: (0..<rng.below(3)).map { _ in word() }, box: "QUJD+/=" + String(rng.below(99)))
            }
            for include in [true, false] {
                #expect(o.encodeData(includeChangedFields: include) == Self.textEncoding(o, includeChangedFields: include),
                        "case \(n) (seed \(seed))")
            }
        }
    }
}
