import FakeIntakeQ
import Foundation
import JSONCore
import TestSupport
import Testing
@testable import IntakeQ

/// Seeded fuzzing of the IntakeQ decoding path on mutated fixture JSON: `splitJSONArray`,
/// `splitJSONObject`, `minifiedJSONValue`, `minifyJSON` and `Appointment.decode`. Only
/// `IntakeQError`s are thrown (code `.decode`), nothing crashes or hangs.
@Suite("Fuzzing the IntakeQ decoder", .timeLimit(.minutes(1)))
struct FuzzTests {
    typealias RNG = SeededRNG

    /// A response body as IntakeQ sends it: a pretty-printed array of appointment objects.
    static let body: [UInt8] = {
        let objects = Array(Fixtures.practice.day(1)!.state.appointments.prefix(12))
        var out = Array("[\n  ".utf8)
        for (i, o) in objects.enumerated() {
            if i > 0 { out += Array(",\n  ".utf8) }
            out += o
        }
        return out + Array("\n]".utf8)
    }()

    static let tokens: [[UInt8]] = ["{", "}", "[", "]", "\"", "\\", ",", ":", "null", "true", "-0", "1e999",
                                    "\"\\u0000\"", "\"\\ud800\"", "99999999999999999999999", "\u{FEFF}", "\u{00}", " ", "\n",
                                    "\"StartDate\":", "\"Id\":", "\"ClientId\":\"x\"", "\"TelehealthInfo\":{", "<html>"].map { Array($0.utf8) }

    static func mutate(_ input: [UInt8], _ rng: inout RNG) -> [UInt8] {
        var b = input
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let at = b.isEmpty ? 0 : Int.random(in: 0..<b.count, using: &rng)
            switch Int.random(in: 0..<8, using: &rng) {
            case 0: if !b.isEmpty { b[at] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng) }
            case 1: if !b.isEmpty { b[at] = UInt8.random(in: 0...255, using: &rng) }
            case 2: b = Array(b.prefix(at))
            case 3: b.insert(contentsOf: tokens.randomElement(using: &rng)!, at: at)
            case 4: if !b.isEmpty { b.removeSubrange(at..<min(b.count, at + Int.random(in: 1...40, using: &rng))) }
            case 5:  // splice a range from elsewhere
                let from = b.isEmpty ? 0 : Int.random(in: 0..<b.count, using: &rng)
                b.insert(contentsOf: b[from..<min(b.count, from + Int.random(in: 1...200, using: &rng))], at: at)
            case 6:  // deep nesting
                let depth = [10, 511, 513, 5000].randomElement(using: &rng)!
                b.insert(contentsOf: [UInt8](repeating: UInt8(ascii: Bool.random(using: &rng) ? "[" : "{"), count: depth), at: at)
            default: b = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        }
        return b
    }

    /// Runs `body`; an `IntakeQError` with code `.decode` is fine, anything else is an issue.
    static func typed(_ what: String, _ body: () throws -> Void) -> Bool {
        do {
            try body()
            return true
        } catch let error as IntakeQError {
            #expect(error.code == .decode, "\(what): \(error)")
        } catch {
            Issue.record("\(what) threw \(type(of: error)), not IntakeQError: \(error)")
        }
        return false
    }

    @Test("mutated appointment arrays and objects: typed decode errors only, no crash, bounded time")
    func mutatedFixtureJSON() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        var rng = RNG(state: seed)
        let started = Date()
        var tried = 0, arraysOK = 0, objectsDecoded = 0, slowest = 0.0
        let valid = try splitJSONArray(Self.body)
        #expect(valid.count == 12)
        while tried < 2000 && Date().timeIntervalSince(started) < 6 {
            let input = Bool.random(using: &rng) ? Self.mutate(Self.body, &rng)
                : Self.mutate(valid.randomElement(using: &rng)!, &rng)
            let t0 = Date()
            let minified = minifyJSON(input)
            #expect(minifyJSON(minified) == minified, "minify is not idempotent (seed \(seed), input \(tried))")
            #expect(minified.count <= input.count)
            var elements: [[UInt8]] = []
            if Self.typed("splitJSONArray", { elements = try splitJSONArray(input) }) { arraysOK += 1 }
            _ = Self.typed("splitJSONObject") { _ = try splitJSONObject(input) }
            _ = Self.typed("minifiedJSONValue") { _ = try minifiedJSONValue(input) }
            for element in elements.prefix(20) {
                if Self.typed("FetchedAppointment.parse(minifiedObject:)", { _ = try FetchedAppointment.parse(minifiedObject: element) }) {
                    objectsDecoded += 1
                }
            }
            _ = Self.typed("FetchedAppointment.parse(json:)") { _ = try FetchedAppointment.parse(json: input) }
            slowest = max(slowest, Date().timeIntervalSince(t0))
            tried += 1
        }
        print("IntakeQ decoder fuzz seed \(seed): \(tried) inputs, \(arraysOK) still split as arrays, "
            + "\(objectsDecoded) elements decoded as appointments, slowest input \(Int(slowest * 1000)) ms")
        #expect(slowest < 2, "an input took \(slowest) s (seed \(seed))")
        #expect(tried >= 300)
    }

    @Test("pathological bodies: huge nesting, unterminated strings, lone escapes — typed errors, fast")
    func pathologicalBodies() {
        let cases: [[UInt8]] = [
            [UInt8](repeating: UInt8(ascii: "["), count: 1_000_000),
            Array("[".utf8) + [UInt8](repeating: UInt8(ascii: "{"), count: 100_000),
            Array("[\"".utf8) + [UInt8](repeating: UInt8(ascii: "\\"), count: 100_001),
            Array("[\"abc\\".utf8),
            [UInt8](repeating: UInt8(ascii: "{"), count: 100_000),
            Array(String(repeating: "{\"Id\":", count: 50_000).utf8),
            Array("{\"Id\":\"a\",\"X\":".utf8) + [UInt8](repeating: UInt8(ascii: "["), count: 100_000),
            Array("[1,]".utf8), Array("[,1]".utf8), Array("]".utf8), [], [0xEF, 0xBB, 0xBF], Array("[1] x".utf8),
            Array("[{\"Id\":\"a\",\"StartDate\":1e999999}]".utf8),
            Array("[{\"Id\":\"a\",\"StartDate\":\"\\ud800\"}]".utf8),
        ]
        for (i, body) in cases.enumerated() {
            let t0 = Date()
            _ = Self.typed("case \(i) splitJSONArray") {
                for e in try splitJSONArray(body) { _ = try FetchedAppointment.parse(minifiedObject: e) }
            }
            _ = Self.typed("case \(i) FetchedAppointment.parse(json:)") { _ = try FetchedAppointment.parse(json: body) }
            #expect(Date().timeIntervalSince(t0) < 2, "case \(i) is slow")
        }
    }
}
