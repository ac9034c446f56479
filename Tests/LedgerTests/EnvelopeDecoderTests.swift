import EventLog
import Foundation
import JSONCore
@testable import Ledger
import TestSupport
import Testing

/// `EnvelopeDecoder` reads lines in place and reuses the strings of the line before; it must give
/// exactly what the scanner and the general parse gave for every line, alone or in any sequence.
@Suite struct EnvelopeDecoderTests {
    /// What `EventEnvelope.decode` did before the decoder (a copy of the line, the scanner, the parse).
    static func reference(_ line: [UInt8]) throws -> EventEnvelope {
        var scanner = EnvelopeScanner(line)
        if let e = scanner.scan() { return e }
        return try EventEnvelope.decodeSlow(line)
    }

    @Test func decoderEqualsTheScannerOnRandomLines() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("EnvelopeDecoderTests seed: \(seed)")
        var rng = SeededRNG(seed: seed)
        func pick<T>(_ xs: [T]) -> T { xs[rng.below(xs.count)] }
        let types = EventType.allCases.map(\.rawValue) + ["custom.thing", "appointment.change", "", "sync.started\\u0041"]
        let ats = ["2026-11-20T10:00:00.000Z", "2026-11-20T10:00:00.001Z", "", "ä ☃", "q\"uote"]
        let runs: [String?] = [nil, "run-1", "run-2", "", "r\"un", "ünï"]
        let streams = ["appointment/a-1", "sync/run-1", "", "appointment/é", "s\\x"]
        var decoder = EnvelopeDecoder()
        var lines = 0, errors = 0
        for n in 0..<4000 {
            let e = EventEnvelope(seq: UInt64(rng.below(1 << 40)), id: pick(["", "0f0e-1", "a\"b", "é"]) + String(rng.below(99)),
                                  type: pick(types), v: pick([1, 2, 0, 17]), at: pick(ats), run: pick(runs), stream: pick(streams),
                                  data: Array(pick(["{}", "{\"k\":[1,2]}", "null", "{\"object\":{\"a\":\"b\\n\"}}", "7"]).utf8))
            var line = e.encoded()
            switch rng.below(10) {
            case 0:
                // Another key order or spacing: the general parse.
                let text = String(decoding: line, as: UTF8.self)
                line = Array(text.replacingOccurrences(of: ",\"v\":", with: ", \"v\" : ").utf8)
            case 1:
                // Damaged.
                if !line.isEmpty { line = Array(line.prefix(rng.below(line.count))) }
            case 2:
                if !line.isEmpty { line[rng.below(line.count)] = pick(Array("{}\",:\\0a ".utf8)) }
            default:
                break
            }
            // As the cursor hands lines out: a slice of a bigger buffer.
            let buffer = Array("x\n".utf8) + line + Array("\ny".utf8)
            let slice = buffer[2..<(2 + line.count)]
            let expected = Result(catching: { try Self.reference(line) })
            let got = Result(catching: { try decoder.decode(slice) })
            switch (expected, got) {
            case (.success(let a), .success(let b)):
                lines += 1
                #expect(a == b && a.seq == b.seq && a.v == b.v && a.run == b.run, "case \(n) (seed \(seed)): \(String(decoding: line, as: UTF8.self))")
                // The decoder hands over the catalogue type it matched (`==` does not compare it).
                #expect(b.eventType == a.eventType && b.eventType == EventType(rawValue: b.type), "case \(n) (seed \(seed))")
            case (.failure(let a), .failure(let b)):
                errors += 1
                #expect("\(a)" == "\(b)", "case \(n) (seed \(seed))")
            default:
                Issue.record("case \(n) (seed \(seed)): \(expected) vs \(got) for \(String(decoding: line, as: UTF8.self))")
            }
            // The static entry point and a collection without contiguous storage agree too.
            if case .success(let a) = expected {
                #expect(try EventEnvelope.decode(slice) == a)
                #expect(try decoder.decode(line.lazy.map { $0 }) == a)
            }
        }
        print("EnvelopeDecoderTests: \(lines) lines decoded, \(errors) errors")
        #expect(lines > 2000 && errors > 100)
    }
}

/// `LedgerWriter.append` writes its batch's lines straight into one buffer; what is stored, and
/// the refusal of data holding a newline, stay as they were.
@Suite struct LedgerAppendLinesTests {
    @Test func storedLinesReadBackAndNewlinesInDataAreRefused() throws {
        let tmp = try TempStore()
        let writer = try makeWriter(tmp.store, clock: ManualClock(goldenBase))
        defer { writer.close() }
        let events = (0..<50).map { i in
            NewEvent(type: i % 3 == 0 ? .syncStarted : .appointmentChanged, run: i % 2 == 0 ? "run-\(i)" : nil,
                     stream: "s/\(i)\"q\n", data: Array("{\"i\":\(i),\"t\":\"a\\nb é\"}".utf8))
        }
        let stored = try writer.append(events)
        let bad = events.prefix(2) + [NewEvent(type: .syncStarted, run: nil, stream: "s", data: Array("{\"a\":\n1}".utf8))]
        do {
            _ = try writer.append(Array(bad))
            Issue.record("a newline inside data was accepted")
        } catch let error as LogError {
            #expect(error.code == .invalidArgument)
            #expect(error.message == "event 2 of the batch is empty or contains a '\\n': each event must be one non-empty line")
        }
        #expect(writer.head.seq == 50)
        let reader = try EventLogReader(directory: tmp.store.logPath)
        let cursor = try reader.cursor(from: 1)
        var read: [EventEnvelope] = []
        while let r = try cursor.next() {
            #expect(Array(r.payload) == stored[read.count].encoded())
            read.append(try EventEnvelope.decode(r.payload))
        }
        #expect(read == stored)
    }
}
