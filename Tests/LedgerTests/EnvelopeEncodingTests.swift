import Foundation
import JSONCore
import Ledger
import TestSupport
import Testing

/// The append path builds envelope bytes and event ids without Foundation strings; the bytes and
/// the id format must stay exactly what they were.
@Suite struct EnvelopeEncodingTests {
    /// The line as the text-building encoder wrote it before.
    static func reference(_ e: EventEnvelope) -> [UInt8] {
        var head = "{\"seq\":\(e.seq),\"id\":\(jsonQuoted(e.id)),\"type\":\(jsonQuoted(e.type)),\"v\":\(e.v)"
        head += ",\"at\":\(jsonQuoted(e.at)),\"run\":\(e.run.map(jsonQuoted) ?? "null")"
        head += ",\"stream\":\(jsonQuoted(e.stream)),\"data\":"
        return Array(head.utf8) + e.data + [UInt8(ascii: "}")]
    }

    @Test func encodedBytesAreTheTextEncodersBytes() throws {
        let cases = [
            EventEnvelope(seq: 0, id: "", type: "sync.started", v: 1, at: "2026-11-20T10:00:00.000Z", run: nil,
                          stream: "run/x", data: Array("{}".utf8)),
            EventEnvelope(seq: 98_765_432_101, id: "a\"b\\c\u{1}", type: "t\nx", v: -3, at: "ä ☃", run: "r\"un",
                          stream: "appointment/é", data: Array("{\"k\":[1,2]}".utf8)),
            EventEnvelope(seq: 1_234_567_890, id: "0f0e", type: "appointment.changed", v: 2, at: "", run: "",
                          stream: "", data: Array("null".utf8)),
        ]
        let huge = EventEnvelope(seq: UInt64.max, id: "x", type: "t", v: Int.max, at: "a", run: nil, stream: "s", data: Array("1".utf8))
        #expect(huge.encoded() == Self.reference(huge))
        for e in cases {
            #expect(e.encoded() == Self.reference(e))
            #expect(try EventEnvelope.decode(e.encoded()) == e)
        }
    }

    /// Strings of 0–40 characters (up to 120 bytes), half of them with a character JSON must
    /// escape at a random place, so the check of eight bytes at a time meets them at the offsets
    /// of a word and in the tail.
    @Test func stringsNeedingEscapesAreFoundAtAnyPlace() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("EnvelopeEncodingTests seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        let plain: [Character] = ["a", "Z", "0", "-", " ", "é", "☃", "~", "!", "#", "]", "`", "\u{7F}"]
        let special: [Character] = ["\"", "\\", "\u{0}", "\u{1}", "\n", "\t", "\u{1F}"]
        for _ in 0..<4_000 {
            var chars = (0..<rng.below(41)).map { _ in plain[rng.below(plain.count)] }
            if !chars.isEmpty, rng.chance(0.5) { chars[rng.below(chars.count)] = special[rng.below(special.count)] }
            let text = String(chars)
            let e = EventEnvelope(seq: 7, id: text, type: "appointment.changed", v: 1, at: text, run: text, stream: text,
                                  data: Array("{}".utf8))
            #expect(e.encoded() == Self.reference(e), "seed \(seed): \(text.debugDescription)")
        }
    }

    @Test func appendedIdsAreDistinctLowercaseVersion4UUIDs() throws {
        let tmp = try TempStore()
        let writer = try makeWriter(tmp.store, clock: ManualClock(goldenBase))
        defer { writer.close() }
        var ids = Set<String>()
        for _ in 0..<3 {
            // 3 × 300 ids: more than one pool of random bytes (256 ids).
            let stored = try writer.append((0..<300).map { _ in startedEvent("run-1", type: "automated_daily") })
            for e in stored {
                let u = Array(e.id.utf8)
                #expect(u.count == 36)
                #expect(UUID(uuidString: e.id) != nil, "\(e.id)")
                #expect(e.id == e.id.lowercased())
                #expect(u[14] == UInt8(ascii: "4"), "\(e.id)")
                #expect([UInt8(ascii: "8"), UInt8(ascii: "9"), UInt8(ascii: "a"), UInt8(ascii: "b")].contains(u[19]), "\(e.id)")
                ids.insert(e.id)
            }
        }
        #expect(ids.count == 900)
    }
}
