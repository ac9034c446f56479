import Foundation
import TestSupport
import Testing
@testable import EventLog

/// Disk full and I/O errors under the log, through the `_FaultInjection` hook in the syscall
/// layer (scoped to each test's directory, so parallel tests are unaffected).
///
/// What the writer promises (docs/FORMAT.md, "Write failures"): a failed *write* (ENOSPC, EFBIG,
/// EIO, short or no progress) is cut back and the same writer appends again once the fault is
/// gone; a failed *fsync* poisons the writer (`.writerFailed`) until the log is reopened.
@Suite("Fault injection: disk full, EIO, short writes", .serialized)
struct FaultInjectionTests {
    static let durable = LogOptions(fsync: true)

    /// Opens the log again right after its writer closed. Waits up to 10 s for the lock: a
    /// child process another test spawns at that moment holds a copy of every descriptor from
    /// its fork to its exec (where close-on-exec drops them), the closed writer's flock'd `LOCK`
    /// too (CI once saw "store is locked by pid" naming this very process).
    static func reopen(_ dir: TempDir) throws -> EventLogWriter {
        try EventLogWriter.open(directory: dir.log, options: durable, waitLock: 10)
    }

    /// All acknowledged payloads are there, in order, with the same bytes, and verify is clean.
    func expectIntact(_ dir: TempDir, _ acknowledged: [[UInt8]], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let report = try EventLogReader(directory: dir.log).verify()
        #expect(report.ok, "\(report.error?.message ?? "")", sourceLocation: sourceLocation)
        #expect(report.warnings.allSatisfy { !$0.contains("torn") }, "\(report.warnings)", sourceLocation: sourceLocation)
        let all = try readAll(dir.log)
        #expect(all.map(\.0) == (0..<all.count).map { UInt64($0 + 1) }, "seqs not gapless", sourceLocation: sourceLocation)
        #expect(all.count == acknowledged.count && all.map(\.1) == acknowledged, "events differ from those acknowledged",
                sourceLocation: sourceLocation)
    }

    func batch(_ start: Int, _ size: Int) -> [[UInt8]] { (0..<size).map { event(start + $0, pad: 200) } }

    @Test("ENOSPC at the Nth write: diskFull with advice, nothing acknowledged lost, same writer resumes")
    func enospcAtNthWrite() throws {
        var rng = SeededRNG(state: UInt64.random(in: 0...UInt64(UInt32.max)))
        print("enospcAtNthWrite seed \(rng.state)")
        var injected = 0
        for _ in 0..<6 {
            let dir = TempDir()
            let writer = try EventLogWriter.open(directory: dir.log, options: Self.durable)
            let n = Int.random(in: 0..<8, using: &rng)
            _FaultInjection.fail(.write, under: dir.log, after: n, times: .max, errno: ENOSPC)
            var acknowledged: [[UInt8]] = []
            var failures = 0
            for i in 0..<10 {
                let payloads = batch(i * 10 + 1, Int.random(in: 1...20, using: &rng))
                do {
                    try writer.append(payloads)
                    acknowledged += payloads
                } catch let error as LogError {
                    failures += 1
                    #expect(error.code == .diskFull)
                    #expect(error.message.contains("disk full") && error.message.contains("free space and retry"))
                    #expect(error.message.contains("nothing after seq \(acknowledged.count) was acknowledged"), "\(error.message)")
                }
            }
            #expect(failures == 10 - n)
            #expect(writer.head.seq == UInt64(acknowledged.count))
            injected += _FaultInjection.clear(under: dir.log)
            // The disk has room again: the same writer continues the chain.
            let more = batch(1000, 5)
            let info = try writer.append(more)
            #expect(info.firstSeq == UInt64(acknowledged.count) + 1)
            acknowledged += more
            writer.close()
            try expectIntact(dir, acknowledged)
            let reopened = try Self.reopen(dir)
            #expect(reopened.recoveredTail == nil)
        }
        print("enospcAtNthWrite: \(injected) faults injected")
    }

    @Test("EIO at the Nth fsync: io error, writer refuses until reopened, reopen recovers and appends")
    func eioAtNthFsync() throws {
        var injected = 0
        for n in 0..<5 {
            let dir = TempDir()
            let writer = try EventLogWriter.open(directory: dir.log, options: Self.durable)
            _FaultInjection.fail(.fsync, under: dir.log, after: n, times: 1, errno: EIO)
            var acknowledged: [[UInt8]] = []
            var failed = false
            for i in 0..<8 {
                let payloads = batch(i * 10 + 1, 3)
                do {
                    try writer.append(payloads)
                    #expect(!failed, "an append succeeded after a failed fsync without reopening")
                    acknowledged += payloads
                } catch let error as LogError {
                    if !failed {
                        #expect(error.code == .io)
                        #expect(error.errno == EIO && error.operation == "fdatasync")
                        #expect(error.message.contains("I/O error") && error.message.contains("reopen the log"), "\(error.message)")
                        #expect(error.message.contains("nothing after seq \(acknowledged.count) was acknowledged"))
                    } else {
                        #expect(error.code == .writerFailed)
                        #expect(error.message.contains("reopen the log to recover"))
                    }
                    failed = true
                }
            }
            #expect(failed)
            injected += _FaultInjection.clear(under: dir.log)
            writer.close()
            try expectIntact(dir, acknowledged)
            let reopened = try Self.reopen(dir)
            #expect(reopened.head.seq == UInt64(acknowledged.count))
            let more = batch(500, 4)
            try reopened.append(more)
            reopened.close()
            try expectIntact(dir, acknowledged + more)
        }
        print("eioAtNthFsync: \(injected) faults injected")
    }

    @Test("short writes are completed; a short write then ENOSPC is cut back to the last acknowledged batch")
    func shortWrites() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: Self.durable)
        var acknowledged = batch(1, 10)
        try writer.append(acknowledged)
        _FaultInjection.shortWrite(under: dir.log, after: 0, times: 4)
        let second = batch(11, 30)
        try writer.append(second)  // pwriteAll loops over the short writes
        acknowledged += second
        var injected = _FaultInjection.clear(under: dir.log)
        #expect(injected == 4)

        let sizeBefore = fileBytes(dir.segmentPath(dir.segments()[0])).count
        _FaultInjection.shortWrite(under: dir.log, after: 0, times: 1)
        _FaultInjection.fail(.write, under: dir.log, after: 1, times: .max, errno: ENOSPC)
        _ = expectError(.diskFull) { try writer.append(batch(41, 30)) }
        #expect(fileBytes(dir.segmentPath(dir.segments()[0])).count == sizeBefore, "half a batch left on disk")
        injected += _FaultInjection.clear(under: dir.log)
        let third = batch(41, 5)
        try writer.append(third)
        acknowledged += third

        // A write that makes no progress is an error, not an endless loop.
        _FaultInjection.zeroWrite(under: dir.log)
        let zero = expectError(.io) { try writer.append(batch(46, 2)) }
        #expect(zero?.errno == EIO)
        injected += _FaultInjection.clear(under: dir.log)
        let fourth = batch(46, 2)
        try writer.append(fourth)
        acknowledged += fourth
        writer.close()
        try expectIntact(dir, acknowledged)
        print("shortWrites: \(injected) faults injected")
    }

    @Test("a failed write whose cut-back also fails leaves a torn tail that reopening removes")
    func failedTruncateLeavesTornTail() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: Self.durable)
        let acknowledged = batch(1, 10)
        try writer.append(acknowledged)
        _FaultInjection.shortWrite(under: dir.log, after: 0, times: 1)
        _FaultInjection.fail(.write, under: dir.log, after: 1, times: .max, errno: ENOSPC)
        _FaultInjection.fail(.truncate, under: dir.log, after: 0, times: .max, errno: EIO)
        _ = expectError(.diskFull) { try writer.append(batch(11, 40)) }
        let poisoned = expectError(.writerFailed) { try writer.append(batch(11, 1)) }
        #expect(poisoned?.message.contains("reopen the log to recover") == true)
        let injected = _FaultInjection.clear(under: dir.log)
        writer.close()
        let report = try EventLogReader(directory: dir.log).verify()
        #expect(report.ok && report.head.seq == 10)
        #expect(report.warnings.contains { $0.contains("torn tail") })
        let reopened = try Self.reopen(dir)
        #expect(reopened.recoveredTail != nil)
        let more = batch(11, 3)
        try reopened.append(more)
        reopened.close()
        try expectIntact(dir, acknowledged + more)
        print("failedTruncateLeavesTornTail: \(injected) faults injected")
    }

    @Test("ENOSPC or EIO while rolling to a new segment: no stray file, the same writer rolls once the fault is gone")
    func faultDuringRoll() throws {
        var injected = 0
        for fault in [("create", ENOSPC), ("fsync", EIO)] {
            let dir = TempDir()
            let options = LogOptions(segmentBytes: 256, fsync: true)
            let writer = try EventLogWriter.open(directory: dir.log, options: options)
            var acknowledged = batch(1, 40)
            try writer.append(acknowledged)  // > 256 bytes: the next append rolls
            #expect(dir.segments().count == 1)
            if fault.0 == "create" {
                _FaultInjection.fail(.create, under: dir.log, after: 0, times: .max, errno: fault.1)
            } else {
                _FaultInjection.fail(.fsync, under: dir.log, after: 0, times: 1, errno: fault.1)
            }
            let error = expectError(fault.1 == ENOSPC ? .diskFull : .io) { try writer.append(batch(41, 3)) }
            #expect(error?.message.isEmpty == false)
            #expect(dir.segments().count == 1, "a failed roll left \(dir.segments())")
            injected += _FaultInjection.clear(under: dir.log)
            let more = batch(41, 3)
            try writer.append(more)
            acknowledged += more
            #expect(dir.segments().count == 2)
            writer.close()
            try expectIntact(dir, acknowledged)
        }
        print("faultDuringRoll: \(injected) faults injected")
    }

    @Test("a child under RLIMIT_FSIZE (SIGXFSZ ignored) stops with one 'file too large' line; the store stays valid")
    func fileSizeLimit() throws {
        let dir = TempDir()
        // setrlimit in the child before exec (ulimit -f) with SIGXFSZ ignored (inherited across exec).
        let result = try Harness.run(["fill", dir.log], shell: "trap '' XFSZ; ulimit -f 2048 && exec \"$0\" \"$@\"",
                                     timeout: 60)
        let errorLines = result.stderr.split(separator: "\n")
        #expect(result.status != 0)
        #expect(errorLines.count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("file too large") && result.stderr.contains("ulimit -f"), "\(result.stderr)")
        #expect(!result.stderr.contains("Fatal error") && !result.stderr.contains("Stack"))
        let acks = result.stdout.split(separator: "\n").map { $0.split(separator: " ") }
        #expect(acks.count > 10, "\(result.stdout.prefix(200))")
        // Every acknowledged batch is there with the same bytes.
        let reader = try EventLogReader(directory: dir.log)
        let report = reader.verify()
        #expect(report.ok, "\(report.error?.message ?? "")")
        let lastAcknowledged = acks.last.map { UInt64($0[1])! + UInt64($0[2])! - 1 } ?? 0
        #expect(report.head.seq == lastAcknowledged, "an unacknowledged batch is visible, or an acknowledged one is lost")
        let cursor = try reader.cursor(from: 1)
        var seen = 0
        while let (info, content) = try cursor.nextBatch() {
            guard seen < acks.count else { Issue.record("batch \(info.firstSeq) was never acknowledged"); break }
            #expect(String(info.firstSeq) == acks[seen][1] && String(info.count) == acks[seen][2])
            #expect(String(fnv1a(content)) == acks[seen][3], "batch \(info.firstSeq) bytes differ")
            seen += 1
        }
        #expect(seen == acks.count)
        // Without the limit, appends continue.
        let writer = try EventLogWriter.open(directory: dir.log, options: Self.durable)
        try writer.append([event(1)])
        #expect(writer.head.seq == report.head.seq + 1)
        print("fileSizeLimit: \(acks.count) batches acknowledged before EFBIG; 1 fault (a real rlimit)")
    }

    @Test("a real 512 KiB tmpfs fills up: diskFull, store valid, appends resume after growing it (skips without mount permission)")
    func realSmallFilesystem() throws {
        let mountPoint = TempDir()
        let mount = try shell("mount -t tmpfs -o size=512k,mode=0700 tmpfs '\(mountPoint.path)'")
        guard mount.status == 0 else {
            print("SKIPPED realSmallFilesystem: mounting a tmpfs is not permitted here (\(mount.output.trimmingCharacters(in: .whitespacesAndNewlines)))")
            return
        }
        defer { _ = try? shell("umount '\(mountPoint.path)'") }
        let log = mountPoint.path + "/log"
        let writer = try EventLogWriter.open(directory: log, options: Self.durable)
        var rng = SeededRNG(state: 7)
        var acknowledged: [[UInt8]] = []
        var full: LogError?
        for i in 0..<1000 {
            // Incompressible payloads so the disk really fills.
            let payloads = (0..<16).map { j in
                Array("{\"n\":\(i * 16 + j),\"r\":\"".utf8) + (0..<400).map { _ in UInt8(97 + rng.next() % 26) } + Array("\"}".utf8)
            }
            do {
                try writer.append(payloads)
                acknowledged += payloads
            } catch let error as LogError {
                full = error
                break
            }
        }
        #expect(full?.code == .diskFull, "\(String(describing: full))")
        #expect(full?.message.contains("disk full") == true)
        #expect(acknowledged.count > 100)
        let report = try EventLogReader(directory: log).verify()
        #expect(report.ok && report.head.seq == UInt64(acknowledged.count))
        let grow = try shell("mount -o remount,size=4m '\(mountPoint.path)'")
        #expect(grow.status == 0, "\(grow.output)")
        let more = [event(1), event(2)]
        try writer.append(more)
        writer.close()
        let all = try readAll(log)
        #expect(all.map(\.1) == acknowledged + more, "events differ from those acknowledged")
    }

    func shell(_ command: String) throws -> (status: Int32, output: String) {
        let r = try ProcessRunner.runBlocking("/bin/sh", ["-c", command + " 2>&1"])
        return (r.status, r.stdoutText)
    }
}

