// A libFuzzer target for the segment reader (issue 7). Built only by tools/fuzz.sh, which sets
// SYNCLEDGER_FUZZ=1 so Package.swift declares this target, and builds it with
// `--sanitize fuzzer` (libFuzzer provides `main`). Each input is written as a segment file and
// read back with a cursor and `verify`: any outcome but a typed LogError is a finding.
import EventLog
import Foundation

private let directory: String = {
    let dir = NSTemporaryDirectory() + "/segment-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSegment(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = directory + "/00000000000000000001.seg"
    let bytes = Data(bytes: data, count: size)
    try? FileManager.default.removeItem(atPath: directory + "/index")
    FileManager.default.createFile(atPath: path, contents: bytes)
    do {
        let reader = try EventLogReader(directory: directory)
        let cursor = try reader.cursor(from: 1)
        var n = 0
        while let _ = try cursor.next(), n < 2_000_000 { n += 1 }
        _ = reader.verify()
    } catch is LogError {
        // The expected outcome for most inputs: a typed error naming where.
    } catch {
        fatalError("untyped error from the segment reader: \(error)")
    }
    return 0
}
