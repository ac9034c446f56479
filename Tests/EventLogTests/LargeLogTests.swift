import Foundation
import TestSupport
import Testing
@testable import EventLog

@Suite struct LargeLogTests {
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

        // Read it end to end in a process of its own: maxrss is process-wide, and the other
        // tests running in parallel in this one would be counted too.
        let r = try Harness.run(["read", dir.log], timeout: 120)
        #expect(r.status == 0, "\(r.stderr)")
        let fields = r.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        func value(_ key: String) -> Int? { fields.firstIndex(of: key).flatMap { Int(fields[$0 + 1]) } }
        #expect(value("events") == 1_000_000)
        #expect((value("bytes") ?? 0) > 30_000_000)
        let peakKB = try #require(value("peak_rss_kb"))
        print("reading 1,000,000 events peaked at \(peakKB / 1024) MiB RSS (the log: \(value("bytes") ?? 0) bytes)")
        // The harness alone peaks near 24 MiB reading a tiny log; holding these 40 MB of events
        // would put it past 64 MiB. One decompressed batch (~400 KB) at a time stays well under.
        #expect(peakKB < 64 << 10)
    }
}
