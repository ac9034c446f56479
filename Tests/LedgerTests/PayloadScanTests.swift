import Foundation
import JSONCore
import Ledger
@testable import Projections
import TestSupport
import Testing

/// `sync.started` and `sync.completed` are read without `JSONDecoder` when the bytes are plain;
/// whenever the fast reader gives a value, `JSONDecoder` must give the same one, and the payloads
/// SyncLedger writes must take the fast path.
@Suite struct PayloadScanTests {
    struct Gen {
        var rng: SeededRNG
        mutating func pick<T>(_ xs: [T]) -> T { xs[rng.below(xs.count)] }
        mutating func chance(_ p: Double) -> Bool { rng.chance(p) }

        mutating func text() -> String {
            pick(["", "completed", "partial_success", "a \"quoted\" word", "back\\slash", "tab\there", "x/y", rng.hex(12),
                  "0:" + String(repeating: "0", count: 64), "Zoë", "line\nbreak", "\u{1}"])
        }

        mutating func completed() -> SyncCompleted {
            var counts = SyncCounts()
            counts.new = rng.below(500)
            counts.updated = rng.below(500)
            counts.unchanged = rng.below(50)
            counts.removed = rng.below(5)
            counts.errors = chance(0.2) ? -rng.below(3) : 0
            counts.patientsProcessed = rng.below(40)
            counts.patientsFailed = rng.below(2)
            var api = APIUsage()
            api.calls = rng.below(1000)
            api.retries = rng.below(3)
            api.rateLimitWaits = rng.below(3)
            api.waitedSeconds = pick([0, 1.5, 0.1, 0.30000000000000004, 12, 1e-7, 123456.789])
            api.rateLimitHit = chance(0.3)
            var c = SyncCompleted(
                status: text(), counts: counts, api: api, warnings: (0..<rng.below(3)).map { _ in text() },
                errors: (0..<rng.below(2)).map { _ in text() }, errorMessage: chance(0.3) ? text() : nil,
                unchanged: (0..<rng.below(6)).map { _ in .init(id: "a" + rng.hex(8), hash: rng.hex(64)) },
                headBefore: "12:" + rng.hex(64), durationMs: Int64(rng.below(100_000)))
            if chance(0.3) { c.changesMissedByWebhooks = rng.below(9) }
            return c
        }

        mutating func started() -> SyncStarted {
            SyncStarted(syncType: pick(["automated_daily", "manual_org_bulk", "webhook"]),
                        organizationId: chance(0.7) ? "org-\(rng.below(9))" : nil, patientId: chance(0.3) ? "p-\(rng.below(9))" : nil,
                        window: DateWindow(start: "2026-11-01", end: "2026-12-01"), triggeredBy: text(), toolVersion: "0.9",
                        now: "2026-11-20T10:00:00.000Z", appointmentIds: chance(0.3) ? (0..<rng.below(3)).map { _ in rng.hex(6) } : nil)
        }

        /// Odd rewrites of a valid payload: retyped, doubled, escaped or dropped keys, spacing, non-ASCII.
        mutating func oddly(_ data: [UInt8]) -> [UInt8] {
            var s = String(decoding: data, as: UTF8.self)
            switch rng.below(12) {
            case 0: s = s.replacingOccurrences(of: ":0", with: ":0.0")
            case 1: s = s.replacingOccurrences(of: "\"new\":", with: "\"new\":1,\"new\":")
            case 2: s = s.replacingOccurrences(of: "\"status\"", with: "\"st\\u0061tus\"")
            case 3: s = s.replacingOccurrences(of: ",", with: " ,\n ")
            case 4: s = s.replacingOccurrences(of: "\"calls\":", with: "\"calls\":\"") .replacingOccurrences(of: ",\"rate_limit_hit\"", with: "\",\"rate_limit_hit\"")
            case 5: s = s.replacingOccurrences(of: "\"head_before\"", with: "\"head_befor\"")
            case 6: s = s.replacingOccurrences(of: "\"rate_limit_hit\":false", with: "\"rate_limit_hit\":0")
            case 7: s = s.replacingOccurrences(of: "\"sync_type\"", with: "\"x\":{\"y\":[1,2,{}]},\"sync_type\"")
            case 8: s = s.replacingOccurrences(of: "\"duration_ms\":", with: "\"duration_ms\":1e3,\"_\":")
            case 9: s = s.replacingOccurrences(of: "completed", with: "compléted")
            case 10: s = s.replacingOccurrences(of: "\"organization_id\":", with: "\"organization_id\":null,\"patient_id\":")
            default: s = s.replacingOccurrences(of: "}", with: ",\"changes_missed_by_webhooks\":null}")
            }
            return Array(s.utf8)
        }
    }

    @Test func fastReadsEqualJSONDecoder() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("PayloadScanTests.fastReadsEqualJSONDecoder seed: \(seed)")
        var g = Gen(rng: SeededRNG(seed: seed))
        var fast = 0, fallback = 0
        for n in 0..<1500 {
            let c = g.completed()
            let cData = encodeData(c)
            // What SyncLedger writes (ASCII) takes the fast path and reads back as written.
            let ascii = cData.allSatisfy { $0 < 0x80 }
            let got = PayloadScan.syncCompleted(cData)
            #expect(got == c || (!ascii && got == nil), "seed \(seed), case \(n): \(String(decoding: cData, as: UTF8.self))")
            let s = g.started()
            let sData = encodeData(s)
            #expect(PayloadScan.syncStarted(sData) == s || !sData.allSatisfy { $0 < 0x80 }, "seed \(seed), case \(n)")
            for data in [g.oddly(cData), g.oddly(g.oddly(cData))] {
                let decoded = try? JSONDecoder().decode(SyncCompleted.self, from: Data(data))
                if let quick = PayloadScan.syncCompleted(data) {
                    fast += 1
                    #expect(quick == decoded, "seed \(seed), case \(n): \(String(decoding: data, as: UTF8.self))")
                } else {
                    fallback += 1
                }
            }
            for data in [g.oddly(sData), g.oddly(g.oddly(sData))] {
                let decoded = try? JSONDecoder().decode(SyncStarted.self, from: Data(data))
                if let quick = PayloadScan.syncStarted(data) {
                    fast += 1
                    #expect(quick == decoded, "seed \(seed), case \(n): \(String(decoding: data, as: UTF8.self))")
                } else {
                    fallback += 1
                }
            }
        }
        #expect(fast > 1000 && fallback > 1000, "seed \(seed): \(fast) fast, \(fallback) decoded")
    }

    @Test func unsureInputsAreLeftToJSONDecoder() {
        for text in [
            #"{"status":"ok"}"#,  // keys missing: the decoder's error
            "[1]", "", "{", #"{"status":1}"#, "nul",
            #"{"status":"c","counts":{"new":1,"new":2}}"#,
        ] {
            #expect(PayloadScan.syncCompleted(Array(text.utf8)) == nil, "\(text)")
            #expect(PayloadScan.syncStarted(Array(text.utf8)) == nil, "\(text)")
        }
    }
}
