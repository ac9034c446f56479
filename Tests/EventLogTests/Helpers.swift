import Foundation
import TestSupport
import Testing
@testable import EventLog

extension TempDir {
    /// The event log directory of a test (`<tmp>/log`, made by the writer).
    var log: String { path + "/log" }

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
