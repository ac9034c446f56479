import Foundation
import Testing
@testable import EventLog

/// A fresh temporary directory per test, removed at the end.
final class TempDir {
    let path: String
    var log: String { path + "/log" }

    init() {
        var template = Array((NSTemporaryDirectory() + "eventlog-test-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func segments() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: log)) ?? []).filter { $0.hasSuffix(".seg") }.sorted()
    }

    func segmentPath(_ name: String) -> String { log + "/" + name }
}

let fast = LogOptions(fsync: false)

func event(_ seq: Int, pad: Int = 20) -> [UInt8] {
    Array("{\"n\":\(seq),\"type\":\"test.event\",\"pad\":\"\(String(repeating: "x", count: pad + seq % 7))\"}".utf8)
}

/// Appends `batches` batches of `size` events numbered from `start`; returns the payloads.
@discardableResult
func appendBatches(_ writer: EventLogWriter, batches: Int, size: Int, start: Int = 1) throws -> [[UInt8]] {
    var all: [[UInt8]] = []
    var n = start
    for _ in 0..<batches {
        let batch = (0..<size).map { event(n + $0) }
        n += size
        try writer.append(batch)
        all.append(contentsOf: batch)
    }
    return all
}

/// Every event from `from` to the end, through a fresh reader.
func readAll(_ directory: String, from: UInt64 = 1) throws -> [(UInt64, [UInt8])] {
    let cursor = try EventLogReader(directory: directory).cursor(from: from)
    var out: [(UInt64, [UInt8])] = []
    while let record = try cursor.next() { out.append((record.seq, Array(record.payload))) }
    return out
}

func fileBytes(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path) ?? Data()) }

func writeBytes(_ bytes: [UInt8], _ path: String) { _ = FileManager.default.createFile(atPath: path, contents: Data(bytes)) }

func truncateFile(_ path: String, _ length: Int) { _ = truncate(path, off_t(length)) }

/// A small deterministic RNG (SplitMix64) so a failing seed can be replayed.
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func expectError(_ code: LogError.Code, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> LogError? {
    do {
        try body()
        Issue.record("expected \(code), nothing thrown", sourceLocation: sourceLocation)
    } catch let error as LogError {
        #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
    return nil
}
