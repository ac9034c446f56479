import Foundation
import Testing
@testable import EventLog

@Suite struct LargeLogTests {
    private func maxRSSBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    /// 1,000,000 events of 40 bytes, read end to end: memory stays bounded by one batch.
    @Test func millionEventsBoundedMemory() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 1 << 20, fsync: false))
        var batch = [[UInt8]](repeating: [], count: 10_000)
        for b in 0..<100 {
            for i in 0..<10_000 {
                let n = b * 10_000 + i
                batch[i] = Array("{\"n\":\(n),\"t\":\"x\",\"p\":\"abcdefghijklm\"}".utf8)
            }
            try writer.append(batch)
        }
        batch = []
        #expect(writer.head.seq == 1_000_000)
        writer.close()

        let before = maxRSSBytes()
        let cursor = try EventLogReader(directory: dir.log).cursor()
        var expected: UInt64 = 1
        var bytes = 0
        while let record = try cursor.next() {
            if record.seq != expected { Issue.record("seq \(record.seq), expected \(expected)"); break }
            bytes += record.payload.count
            expected += 1
        }
        #expect(expected == 1_000_001)
        #expect(bytes > 30_000_000)
        let grown = maxRSSBytes() - before
        print("maxrss grew by \(grown / 1024) KiB reading \(bytes) bytes")
        #expect(grown < 100 << 20)
    }
}
