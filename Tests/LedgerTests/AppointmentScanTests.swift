@testable import Domain
import Foundation
import JSONCore
import Ledger
@testable import Projections
import TestSupport
import Testing

/// The chunked fold reads appointment events by scanning their bytes once
/// (`AppointmentEventScan`, `AppointmentFields.scan`) instead of parsing part of the data into a
/// `JSONValue` and looking the keys up. The two must agree on every input: the same facts, the
/// same content hash, the same object text, and the same bytes rejected with the same error.
@Suite struct AppointmentScanTests {
    // MARK: - The old path and the new one

    enum Outcome: Equatable, CustomStringConvertible {
        case rejected(String)
        case read(facts: AppointmentFacts?, hash: String?)
        var description: String {
            switch self {
            case .rejected(let m): return "rejected: \(m)"
            case .read(let f, let h): return "facts \(f.map { "\($0)" } ?? "nil"), hash \(h ?? "nil")"
            }
        }
    }

    /// What the fold read before the scanner: the filtered parse, then the lookups.
    static func old(_ data: [UInt8]) -> Outcome {
        let value: JSONValue
        do { value = try FastJSON.parse(data, keeping: appointmentDataFilter) } catch { return .rejected("\(error)") }
        let facts = value["object"].flatMap { try? AppointmentFacts(object: $0) }
        return .read(facts: facts, hash: value["content_hash"]?.stringValue)
    }

    /// The one-pass scan.
    static func new(_ data: [UInt8]) -> Outcome {
        let scan: AppointmentEventScan
        do { scan = try AppointmentEventScan.scan(data) } catch { return .rejected("\(error)") }
        let facts = scan.fields.flatMap { try? AppointmentFacts(fields: $0) }
        return .read(facts: facts, hash: scan.contentHash?.string)
    }

    /// Checks one data text both ways, and against the whole parse; returns whether it was read.
    @discardableResult
    static func check(_ data: [UInt8], _ context: @autoclosure () -> String) -> Bool {
        let a = old(data), b = new(data)
        #expect(a == b, "\(context())\nold: \(a)\nnew: \(b)\ndata: \(String(decoding: data, as: UTF8.self))")
        // The strict whole parse rejects exactly the same bytes, with the same error.
        let whole: Outcome
        do {
            let v = try FastJSON.parse(data)
            whole = .read(facts: v["object"].flatMap { try? AppointmentFacts(object: $0) }, hash: v["content_hash"]?.stringValue)
            // And the fields read from the bytes are those looked up in the parsed object.
            if let object = v["object"], case .read = b {
                let scanned = try? AppointmentEventScan.scan(data).fields
                #expect(scanned == AppointmentFields(object: object), "\(context()): fields differ")
            }
        } catch {
            whole = .rejected("\(error)")
        }
        #expect(whole == b, "\(context()): whole parse \(whole), scan \(b)")
        if case .read = b { return true }
        return false
    }

    // MARK: - Random objects with odd values

    struct Gen {
        var rng: SeededRNG
        mutating func pick<T>(_ xs: [T]) -> T { xs[rng.below(xs.count)] }
        mutating func chance(_ p: Double) -> Bool { rng.chance(p) }

        /// Optional whitespace between tokens.
        mutating func ws() -> String { chance(0.85) ? "" : pick([" ", "\n", "\t", "\r\n  ", "  "]) }

        static let fieldKeys = [
            "Id", "ClientId", "AdditionalClients", "ClientName", "PractitionerId", "PractitionerName", "ServiceName",
            "Status", "StartDate", "EndDate", "Duration", "LocationId", "LocationName", "PlaceOfService",
            "TelehealthInfo", "ClientNote", "CustomFields", "LastModified",
        ]
        static let otherKeys = [
            "ClientEmail", "ClientPhone", "Price", "IntakeId", "StartDateIso", "Procedures", "id", "ID", "Ids", "I",
            "ClientIds", "Clientid", "Durations", "Statu", "StatusX", "LocationIdX", "Provider", "Value", "object",
        ]

        /// A key, sometimes spelled with escapes.
        mutating func key() -> String {
            let name = chance(0.7) ? pick(Self.fieldKeys) : pick(Self.otherKeys)
            return quoteKey(name)
        }

        mutating func quoteKey(_ name: String) -> String {
            guard chance(0.06), let first = name.unicodeScalars.first else { return jsonQuoted(name) }
            // "\u0049d" for "Id": the same key to a parser, other bytes to a byte compare.
            let hex = String(first.value, radix: 16)
            return "\"\\u" + String(repeating: "0", count: 4 - hex.count) + hex + String(name.unicodeScalars.dropFirst()) + "\""
        }

        static let texts = [
            "", " ", "Confirmed", "Canceled", "Declined", "Missed", "WaitingConfirmation", "confirmed", "Odd",
            "02", " 02 ", "2", "10", "11", "12", "\t11", "Downtown Office", "Telehealth",
            "Video https://meet.google.com/abc-defg-hij", "see https://doxy.me/room-4.", "HTTPS://ZOOM.US/j/99?pwd=x",
            "join https://intakeq.com/tele/x", "http://example.com/not-video", "https://teams.microsoft.com/l/meetup",
            "Zoom", "IntakeQ", "Zoom ", "50", " 50", "5e1", "0x10", "nan", "inf", "-1", "1788000000000", "1e400",
            "12.9", "Ünïcødé ✓", "日本語 https://zoom.us/j/5 テスト", "Café", "emoji 😀 https://whereby.com/room",
            "quote \" and \\ backslash", "line\nbreak\ttab", "\u{7F}", "a/b", "€",
        ]

        /// A string literal: plain, or with escapes of every kind.
        mutating func string() -> String {
            var s = pick(Self.texts)
            if chance(0.05) { s = rng.hex(1 + rng.below(30)) }
            guard chance(0.3) else { return jsonQuoted(s) }
            // Escape some characters that need none.
            var out = "\""
            for u in s.unicodeScalars {
                switch u {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\t": out += "\\t"
                case "/" where chance(0.5): out += "\\/"
                default:
                    if u.value < 0x20 || chance(0.15) {
                        if u.value > 0xFFFF {
                            let v = u.value - 0x10000
                            out += String(format: "\\u%04x\\u%04X", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                        } else {
                            out += String(format: chance(0.5) ? "\\u%04x" : "\\u%04X", u.value)
                        }
                    } else {
                        out.unicodeScalars.append(u)
                    }
                }
            }
            if chance(0.1) { out += "\\b\\f\\r" }
            return out + "\""
        }

        mutating func number() -> String {
            pick([
                "0", "-0", "1", "50", "-7", "4127", "1788000000000", "1788003600000", "1788000000000.7", "-1788000000000",
                "9000000000000000000", "-9000000000000000000", "8999999999999999999", "-8900000000000000000",
                "8900000000000000000", "12345678901234567890", "1e3", "1E+3", "2.5e-3", "-0.0", "1.5", "150.0",
                "1e400", "-1e400", "9007199254740993", "0.1", "3.14159",
            ])
        }

        mutating func scalar() -> String {
            switch rng.below(10) {
            case 0..<4: return string()
            case 4..<7: return number()
            case 7: return "true"
            case 8: return "false"
            default: return "null"
            }
        }

        /// Any value; nested containers get shallower.
        mutating func value(_ depth: Int) -> String {
            if depth > 3 || chance(0.75) { return scalar() }
            if chance(0.5) {
                return "[" + ws() + (0..<rng.below(4)).map { _ in value(depth + 1) }.joined(separator: ws() + "," + ws()) + ws() + "]"
            }
            return object(depth + 1, keys: { g in g.pick(["ClientId", "Value", "JoinUrl", "Url", "Provider", "x"]) })
        }

        mutating func object(_ depth: Int, keys: (inout Gen) -> String) -> String {
            var members: [String] = []
            for _ in 0..<rng.below(5) {
                let name = keys(&self)
                let k = quoteKey(name)
                let before = ws(), after = ws()
                members.append(k + before + ":" + after + value(depth + 1))
            }
            return "{" + ws() + members.joined(separator: ws() + "," + ws()) + ws() + "}"
        }

        /// A value for one of the facts' keys, usually of the expected shape, sometimes not.
        mutating func fieldValue(_ name: String) -> String {
            if chance(0.12) { return value(1) }
            switch name {
            case "StartDate", "EndDate", "Duration", "LastModified":
                return chance(0.8) ? number() : string()
            case "AdditionalClients":
                let items = (0..<rng.below(4)).map { _ -> String in
                    if chance(0.15) { return value(2) }
                    return object(2) { g in g.pick(["ClientId", "ClientId", "ClientName", "IntakeId", "clientid"]) }
                }
                return "[" + items.joined(separator: "," + ws()) + "]"
            case "CustomFields":
                let items = (0..<rng.below(4)).map { _ -> String in
                    if chance(0.15) { return value(2) }
                    return object(2) { g in g.pick(["Value", "Value", "FieldId", "Text"]) }
                }
                return "[" + items.joined(separator: "," + ws()) + "]"
            case "TelehealthInfo":
                if chance(0.3) { return "null" }
                return object(1) { g in g.pick(["JoinUrl", "Url", "Invitation", "Provider", "StartUrl", "Id"]) }
            default:
                return chance(0.7) ? string() : scalar()
            }
        }

        /// An appointment object: the facts' keys in any order, some missing or repeated, and others.
        mutating func appointment() -> String {
            var members: [String] = []
            if chance(0.95) { members.append(quoteKey("Id") + ":" + (chance(0.9) ? jsonQuoted("a" + rng.hex(6)) : scalar())) }
            for _ in 0..<rng.below(30) {
                let k = key()
                let name = (try? FastJSON.parse(Array(k.utf8)))?.stringValue ?? ""
                members.append(k + ws() + ":" + ws() + fieldValue(name))
            }
            members.shuffle(using: &rng)
            return "{" + ws() + members.joined(separator: ws() + "," + ws()) + ws() + "}"
        }

        /// An event's data: appointment_id, content_hash, changed_fields and the object, in the
        /// layout SyncLedger writes or in another.
        mutating func data() -> String {
            var members = [
                "\"appointment_id\":" + jsonQuoted("a" + rng.hex(4)),
                "\"content_hash\":" + (chance(0.85) ? jsonQuoted(rng.hex(64)) : scalar()),
            ]
            if chance(0.5) { members.append("\"changed_fields\":[\"Status\",\"LastModified\"]") }
            if chance(0.1) { members.append("\"sealed\":[{\"patient\":\"p1\",\"object\":{\"Id\":\"x\"}}]") }
            if chance(0.05) { members.append(quoteKey("content_hash") + ":" + scalar()) }
            if chance(0.03) { members.append(quoteKey("object") + ":" + appointment()) }
            members.append(quoteKey("object") + ":" + (chance(0.97) ? appointment() : value(1)))
            if chance(0.15) { members.shuffle(using: &rng) }
            if chance(0.03) { return value(0) }
            return "{" + members.joined(separator: ws() + "," + ws()) + "}"
        }
    }

    /// Damages valid JSON the ways a log could: bytes cut, added, swapped, control characters,
    /// broken escapes and surrogates, trailing bytes.
    static func damage(_ bytes: [UInt8], _ rng: inout SeededRNG) -> [UInt8] {
        var b = bytes
        guard !b.isEmpty else { return [UInt8(ascii: "{")] }
        let at = rng.below(b.count)
        switch rng.below(10) {
        case 0: b.remove(at: at)
        case 1: b.insert([0x00, 0x0A, 0x1F, UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "\""), UInt8(ascii: ":")][rng.below(7)], at: at)
        case 2: b = Array(b.prefix(at))
        case 3: b.insert(contentsOf: Array(#"\ud800"#.utf8), at: at)
        case 4: b.insert(contentsOf: Array(#"\x"#.utf8), at: at)
        case 5: b.append(contentsOf: Array(" x".utf8))
        case 6: b[at] = UInt8(ascii: "\\")
        case 7: b.insert(contentsOf: Array("01".utf8), at: at)
        case 8: b.insert(contentsOf: Array(#"\udc00"#.utf8), at: at)
        default: b[at] = [UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "{"), UInt8(ascii: "1"), UInt8(ascii: "-")][rng.below(5)]
        }
        return b
    }

    @Test func scanEqualsParseOnRandomData() {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("AppointmentScanTests.scanEqualsParseOnRandomData seed: \(seed)")
        var g = Gen(rng: SeededRNG(seed: seed))
        var read = 0, rejected = 0, withFacts = 0
        for n in 0..<4000 {
            let data = Array(g.data().utf8)
            if Self.check(data, "seed \(seed), case \(n)") {
                read += 1
                if case .read(let f?, _) = Self.new(data) { withFacts += 1; _ = f }
            }
            for m in 0..<2 {
                let bad = Self.damage(data, &g.rng)
                if !Self.check(bad, "seed \(seed), case \(n), damage \(m)") { rejected += 1 }
            }
        }
        // The generator must reach both sides of every question.
        #expect(read > 3000 && withFacts > 2000 && rejected > 3000, "seed \(seed): \(read) read, \(withFacts) with facts, \(rejected) rejected")
    }

    @Test func nestingLimitIsTheParsersOwn() {
        // 256 levels are the parser's limit: at the top, inside the object, inside a kept key.
        // (Objects holding a value at depth 128 or more, the top-level value at depth 0, are walked in
        // Swift, not in C: `JSONScanner.forEachMember`.)
        for depth in [126, 127, 128, 129, 253, 254, 255, 256, 257] {
            let deep = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            for data in [
                "{\"object\":{\"Id\":\"x\",\"Procedures\":\(deep)}}",
                "{\"object\":{\"Id\":\"x\",\"CustomFields\":\(deep)}}",
                "{\"object\":{\"Id\":\"x\",\"TelehealthInfo\":{\"JoinUrl\":\(deep)}}}",
                "{\"object\":{\"Id\":\"x\",\"AdditionalClients\":[{\"ClientId\":\(deep)}]}}",
                "{\"content_hash\":\(deep),\"object\":{\"Id\":\"x\"}}",
            ] {
                Self.check(Array(data.utf8), "depth \(depth)")
            }
        }
    }

    @Test func theCWalkHandsOverTheNamedMembersOrSaysItCannot() {
        let names = JSONScanner.Names(["Id", "Status", "ClientId"])
        func walk(_ text: String) -> (walked: Bool, seen: [String], offset: Int) {
            Array(text.utf8).withUnsafeBufferPointer { buf in
                var s = JSONScanner(buf)
                var seen: [String] = []
                let walked = (try? s.forEachMember(depth: 0, named: names) { index, key, value in
                    let name = try index.map { "\($0)" } ?? "escaped " + value.decodedKey(key)
                    seen.append(name + " = " + (try value.scalar(depth: 1).stringValue ?? "-"))
                }) ?? false
                return (walked, seen, s.offset)
            }
        }
        // Named members in order (repeated ones too), escaped keys for the caller to decode; the
        // names inside values and longer keys are not members; the offset is past the object.
        let text = #" {"Id":"a", "Other":{"Id":1,"x":[1,2,{"Status":3}]}, "Status" : 7,"ClientIdx":1,"Cl\u0069entId":"e","Id":"b"} "#
        let a = walk(text)
        #expect(a.walked)
        #expect(a.seen == ["0 = a", "1 = 7", "escaped ClientId = e", "0 = b"])
        #expect(a.offset == text.utf8.count - 1)
        // Whatever is not valid JSON (or not an object): nothing handed over, the offset unchanged.
        for bad in [#"{"Id":"a",}"#, #"{"Id":"a""#, #"{"Id":01}"#, #"{"Id":"\x"}"#, #"{"Id":"a" "Status":1}"#, "[1]", #""s""#, "{\"Id\":\"\u{1}\"}"] {
            let r = walk(bad)
            #expect(!r.walked && r.seen.isEmpty && r.offset == 0, "\(bad)")
        }
        // A key matches a name only byte for byte: one byte changed anywhere, or one more or less,
        // and it is not handed over (names of 1 to 17 bytes: each way C compares them).
        for name in ["I", "Id", "Sta", "Stat", "Statu", "Status", "EndDate", "ClientId", "StartDate", "ServiceName",
                     "PractitionerName", "AdditionalClients"] {
            let only = JSONScanner.Names([name, "Other"])
            func handed(_ key: String) -> Bool {
                Array("{\"\(key)\":1}".utf8).withUnsafeBufferPointer { buf in
                    var s = JSONScanner(buf)
                    var seen = false
                    #expect((try? s.forEachMember(depth: 0, named: only) { index, _, value in
                        seen = index == 0
                        try value.skipValue(depth: 1)
                    }) == true)
                    return seen
                }
            }
            #expect(handed(name), "\(name)")
            for k in 0..<name.utf8.count {
                var bytes = Array(name.utf8)
                bytes[k] ^= 0x20
                #expect(!handed(String(decoding: bytes, as: UTF8.self)), "\(name) at \(k)")
            }
            #expect(!handed(name + "s") && !handed(String(name.dropLast())) && !handed("x" + name))
        }
        // At most `membersAtOnce` named members, and values nested up to C's 128 levels.
        func many(_ n: Int) -> String { "{" + Array(repeating: #""Id":1,"Other":2"#, count: n).joined(separator: ",") + "}" }
        #expect(walk(many(JSONScanner.membersAtOnce)).seen.count == JSONScanner.membersAtOnce)
        #expect(!walk(many(JSONScanner.membersAtOnce + 1)).walked)
        func deep(_ levels: Int) -> String { #"{"Id":"# + String(repeating: "[", count: levels) + String(repeating: "]", count: levels) + "}" }
        #expect(walk(deep(127)).walked)
        #expect(!walk(deep(128)).walked)
    }

    @Test func everyKeyTheScanReadsHasItsName() {
        #expect(AppointmentFields.Key.nameList.count == AppointmentFields.Key.allCases.count)
        for (i, name) in AppointmentFields.Key.nameList.enumerated() {
            #expect(AppointmentFields.Key(name: name) == AppointmentFields.Key(rawValue: i), "\(name)")
        }
    }

    @Test func oddValuesReadAsTheParsedObjectReadsThem() throws {
        // A few cases spelled out (the random test covers many more).
        func facts(_ object: String) throws -> AppointmentFacts {
            let data = Array("{\"content_hash\":\"h\",\"object\":\(object)}".utf8)
            #expect(Self.old(data) == Self.new(data), "\(object)")
            return try #require(try AppointmentEventScan.scan(data).fields.map { try AppointmentFacts(fields: $0) })
        }
        let a = try facts(#"{"Id":12,"ClientId":4127.0,"Duration":"50","StartDate":"1788000000000","Status":"Confirmed","Status":"Missed"}"#)
        #expect(a.appointmentId == "12" && a.intakeqClientId == "4127" && a.durationMinutes == 50)
        #expect(a.status == "no_show" && a.startAt == ISOTime.format(millis: 1_788_000_000_000))
        let b = try facts(#"{"\u0049d":"x","AdditionalClients":[{"ClientId":1},"odd",{"ClientId":null},{"ClientId":2,"ClientId":3},[]],"TelehealthInfo":"yes"}"#)
        #expect(b.appointmentId == "x" && b.additionalClientIds == ["1", "3"] && b.visitType == "telehealth")
        let c = try facts(#"{"Id":"y","CustomFields":[1,{"Value":"plain"},{"Value":"https:\/\/zoom.us\/j\/7"}],"TelehealthInfo":{"JoinUrl":null}}"#)
        #expect(c.meeting?.sourceField == "CustomFields[2].Value" && c.meeting?.url == "https://zoom.us/j/7")
        // Times that would overflow a duration: no duration, no crash.
        let d = try facts(#"{"Id":"z","StartDate":-8900000000000000000,"EndDate":8900000000000000000}"#)
        #expect(d.durationMinutes == nil)
        #expect(throws: (any Error).self) { try facts(#"{"Id":""}"#) }
    }

    // MARK: - The practice fixtures

    @Test func scanEqualsParseOnThePracticeFixtures() throws {
        var objects = 0
        for day in 1...5 {
            let file = Array(try Data(contentsOf: URL(fileURLWithPath: Paths.practice + "/day-0\(day).json")))
            // Each appointment's bytes as they are in the file (pretty-printed), and minified.
            let ranges = try file.withUnsafeBufferPointer { buf -> [Range<Int>] in
                var s = JSONScanner(buf)
                var out: [Range<Int>] = []
                #expect(try s.beginObject(depth: 0))
                var first = true
                while let k = try s.nextKey(first: first) {
                    first = false
                    guard s.key(k, is: "appointments"), try s.beginArray(depth: 1) else {
                        try s.skipValue(depth: 1)
                        continue
                    }
                    var firstElement = true
                    while try s.nextElement(first: firstElement) {
                        firstElement = false
                        let start = s.offset
                        try s.skipValue(depth: 2)
                        out.append(start..<s.offset)
                    }
                }
                try s.finish()
                return out
            }
            #expect(!ranges.isEmpty)
            for r in ranges {
                let raw = Array(file[r])
                let object = try FastJSON.parse(raw)
                let id = object["Id"]?.stringValue ?? "?"
                for text in [raw, Array(object.canonicalText.utf8)] {
                    let data = Array(#"{"appointment_id":"x","content_hash":"abc","object":"#.utf8) + text + [UInt8(ascii: "}")]
                    #expect(Self.check(data, "day \(day), appointment \(id)"))
                    let scanned = try #require(try AppointmentEventScan.scan(data).fields)
                    #expect(try AppointmentFacts(fields: scanned) == AppointmentFacts(object: object), "day \(day), \(id)")
                }
                objects += 1
            }
        }
        #expect(objects > 50, "\(objects) fixture appointments")
    }

    @Test func benchmarkAppointmentsScanAsTheyParse() throws {
        // The layout the benchmark and `sync` write (AppointmentObservation.encodeData).
        let object = Array(#"{"Id":"6a3f0001","ClientName":"Sage Park","ClientId":4012,"Status":"Confirmed","StartDate":1788086400000,"EndDate":1788089400000,"Duration":50,"ServiceName":"Individual Therapy 50 min","LocationName":"Telehealth","LocationId":2,"PractitionerName":"Jordan Lee","PractitionerId":"64b7aa00000000000000beef","TelehealthInfo":{"Id":"tv-1","StartUrl":"https://zoom.us/s/1?zak=x","Invitation":null,"Provider":"Zoom"},"ClientNote":null,"CustomFields":[{"FieldId":"vid1","Text":"Video link","Value":"https://zoom.us/j/1234567890?pwd=abc"}],"LastModified":1788003600000,"PlaceOfService":"02","AdditionalClients":[{"ClientId":4013,"ClientName":"Sage Quintero"}]}"#.utf8)
        let obs = AppointmentObservation(appointmentId: "6a3f0001", contentHash: String(repeating: "ab", count: 32), changedFields: ["Status"], object: object)
        let data = obs.encodeData(includeChangedFields: true)
        #expect(Self.check(data, "benchmark layout"))
        let scan = try AppointmentEventScan.scan(data)
        #expect(scan.contentHash?.string == obs.contentHash)
        let f = try AppointmentFacts(fields: #require(scan.fields))
        #expect(f.meeting?.url == "https://zoom.us/j/1234567890?pwd=abc" && f.additionalClientIds == ["4013"] && f.visitType == "telehealth")
    }

    /// A content hash is kept in place up to 64 bytes (a SHA-256 in hex) and as a string beyond;
    /// either way it reads back as the text scanned, escapes and non-ASCII included.
    @Test func contentHashesOfEveryLengthReadBack() throws {
        for text in ["", "a", String(repeating: "f", count: 63), String(repeating: "0", count: 64), String(repeating: "9", count: 65),
                     "é" + String(repeating: "1", count: 62), "tab\there", String(repeating: "ü", count: 40)] {
            let data = Array("{\"appointment_id\":\"x\",\"content_hash\":\(jsonQuoted(text)),\"object\":{\"Id\":\"x\"}}".utf8)
            let scan = try AppointmentEventScan.scan(data)
            #expect(scan.contentHash?.string == text, "\(text.utf8.count) bytes")
        }
        #expect(InlineText(UnsafeBufferPointer(start: nil, count: 0))?.string == "")
        let long = Array(repeating: UInt8(ascii: "a"), count: 65)
        #expect(long.withUnsafeBufferPointer { InlineText($0) } == nil)
    }
}

/// The meeting-link search over ASCII bytes finds what the search over Characters finds.
@Suite struct MeetingURLSearchTests {
    @Test func asciiSearchEqualsCharacterSearch() {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("MeetingURLSearchTests seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        let pieces = ["http", "HTTP", "hTtPs", "https://", "http://", "://", "zoom.us/j/123", "meet.google.com/abc", "x", "ab",
                      ".", ",", ";", ":", ")", "]", "}", "'", " ", "\t", "\n", "\r\n", "\u{0B}", "\u{0C}", "\"", "<", ">", "/", "?", "#",
                      "\u{1C}", "\u{1F}", "(", "[", "{", "-", "_", "0", "see ", "join at "]
        var found = 0
        for n in 0..<5000 {
            let text = (0..<rng.below(16)).map { _ in pieces[rng.below(pieces.count)] }.joined()
            let fast = MeetingLink.urls(in: text)
            let slow = MeetingLink.unicodeURLs(in: text)
            #expect(fast == slow, "seed \(seed), case \(n): \(text.debugDescription)")
            found += fast.count
        }
        #expect(found > 500, "seed \(seed): \(found) links found")
    }
}

/// Strings are scanned eight bytes at a time: a quote, backslash or control character at any
/// offset from the word boundaries must stop the scan exactly where the byte-by-byte scan did.
@Suite struct StringScanTests {
    @Test func specialBytesAtEveryOffset() throws {
        let filter = KeyFilter(["Id"])
        for length in 0..<40 {
            for at in 0...length {
                let plain = (0..<length).map { k in UInt8(ascii: "a") + UInt8(k % 26) }
                // Skipped (the key "x" is not kept) and built (inside "Id").
                func both(_ content: [UInt8]) -> (skipped: Result<JSONValue, FastJSON.ParseError>, built: Result<JSONValue, FastJSON.ParseError>) {
                    let skipped = Array(#"{"x":""#.utf8) + content + Array(#"","Id":"1"}"#.utf8)
                    let built = Array(#"{"Id":""#.utf8) + content + Array(#""}"#.utf8)
                    func run(_ b: [UInt8]) -> Result<JSONValue, FastJSON.ParseError> {
                        Result { try FastJSON.parse(b, keeping: filter) }.mapError { $0 as! FastJSON.ParseError }
                    }
                    return (run(skipped), run(built))
                }
                var withControl = plain
                withControl.insert(0x1F, at: at)
                let c = both(withControl)
                guard case .failure(let e1) = c.skipped, case .failure(let e2) = c.built else {
                    Issue.record("length \(length), control at \(at): accepted")
                    continue
                }
                #expect(e1.offset == 6 + at && e2.offset == 7 + at, "length \(length), at \(at): \(e1), \(e2)")
                #expect(e1.what == "control character in a string")

                var withEscape = plain
                withEscape.insert(contentsOf: Array(#"\"\\\u00e9\n"#.utf8), at: at)
                let expected = String(decoding: plain[..<at], as: UTF8.self) + "\"\\é\n" + String(decoding: plain[at...], as: UTF8.self)
                let e = both(withEscape)
                #expect((try? e.built.get())?["Id"] == .string(expected), "length \(length), at \(at)")
                #expect((try? e.skipped.get())?["Id"] == .string("1"), "length \(length), at \(at)")

                var withUnicode = plain
                withUnicode.insert(contentsOf: Array("é😀\u{7F}".utf8), at: at)
                #expect((try? both(withUnicode).built.get())?["Id"] == .string(String(decoding: withUnicode, as: UTF8.self)))

                // Cut short: unterminated exactly at the end.
                let cut = Array(#"{"Id":""#.utf8) + plain[..<at]
                #expect(throws: FastJSON.ParseError.self) { try FastJSON.parse(cut) }
                do { _ = try FastJSON.parse(cut) } catch let error as FastJSON.ParseError {
                    #expect(error.offset == cut.count && error.what == "unterminated string", "length \(length), at \(at): \(error)")
                }
            }
        }
    }
}

/// `ChunkFolder.isStream`: whether an event's stream is `appointment/` followed by the id its
/// data names, byte for byte (another spelling of the same text is not the same stream).
@Suite struct StreamOfAppointmentTests {
    @Test func comparesTheStreamWithTheIdByteForByte() {
        let id = "6f2c41f0-9b1e-4c65-a1e1-3d0c2b7e9a10"
        #expect(ChunkFolder.isStream("appointment/" + id, ofAppointment: id))
        #expect(ChunkFolder.isStream("appointment/", ofAppointment: ""))
        #expect(ChunkFolder.isStream("appointment/é", ofAppointment: "é"))
        // Same length, one byte apart: at the end, the start of the id, inside the prefix.
        #expect(!ChunkFolder.isStream("appointment/" + id.dropLast() + "1", ofAppointment: id))
        #expect(!ChunkFolder.isStream("appointment/7" + id.dropFirst(), ofAppointment: id))
        #expect(!ChunkFolder.isStream("appointmenT/" + id, ofAppointment: id))
        #expect(!ChunkFolder.isStream("appointments" + id, ofAppointment: id))
        // Another length.
        #expect(!ChunkFolder.isStream("appointment/" + id + "0", ofAppointment: id))
        #expect(!ChunkFolder.isStream("appointment/" + id, ofAppointment: id + "0"))
        #expect(!ChunkFolder.isStream("run/" + id, ofAppointment: id))
        // The same text spelled another way (é as e + U+0301): other bytes, another stream.
        #expect(!ChunkFolder.isStream("appointment/e\u{301}", ofAppointment: "é"))
        // Small (inline) strings and long ones on the heap read alike.
        let long = String(repeating: "x", count: 200)
        #expect(ChunkFolder.isStream("appointment/" + long, ofAppointment: long))
        #expect(!ChunkFolder.isStream("appointment/" + long, ofAppointment: String(long.dropLast()) + "y"))
    }
}
