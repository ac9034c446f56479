import EventLog
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `crash-harness read LOGDIR`: reads every event with one cursor and prints
/// `events N bytes B peak_rss_kb K` — its own peak memory, in a process of its own, so a test can
/// prove the reader's memory is bounded without other tests' allocations in the figure.
func runRead(directory: String) -> Never {
    do {
        let cursor = try EventLogReader(directory: directory).cursor()
        var events: UInt64 = 0
        var bytes = 0
        var expected: UInt64 = 1
        while let record = try cursor.next() {
            guard record.seq == expected else { fail("read seq \(record.seq), expected \(expected)") }
            bytes += record.payload.count
            events += 1
            expected += 1
        }
        emit("events \(events) bytes \(bytes) peak_rss_kb \(peakRSSKilobytes())")
        exit(0)
    } catch {
        fail("read failed: \(error)")
    }
}

/// VmHWM from /proc/self/status: the peak of this process's own memory since exec.
/// (getrusage's ru_maxrss is not: Linux carries it across exec, so a child spawned with
/// vfork semantics reports its parent's peak.)
func peakRSSKilobytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? -1
    }
    return -1
}
