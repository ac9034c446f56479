import Foundation
import TestSupport
import Testing
@testable import EventLog

@Suite struct LockAndToolsTests {
    /// A lock file's text names a holder only when it is a pid (what a holder writes); other
    /// bytes in it name none, rather than the digits picked out of them.
    @Test func aLockFileNamesAPidOnlyWhenItHoldsOne() {
        #expect(LockFileText.pid(Array("12345\n".utf8)) == "12345")
        #expect(LockFileText.pid(Array("7".utf8)) == "7")
        for text in ["", "\n", "\u{1B}[31mEVIL", "pid 31", "12 34", "0\n", "-5", "99999999999", "１２３"] {
            #expect(LockFileText.pid(Array(text.utf8)) == nil, "\(text.debugDescription)")
        }
    }

    /// The lock's message names the holder's program and subcommand ("syncledger repair"), read
    /// from /proc, so that a sync held up by a repair no longer says "another sync is running";
    /// never its other arguments, and nothing that is not plain words.
    @Test func aLockedMessageNamesTheHoldersCommand() throws {
        func spawn(_ path: String, _ arguments: [String]) throws -> ChildProcess {
            try ProcessRunner.start(path, arguments)
        }
        // `exec -a` names the program as a syncledger command line would.
        let sleeper = try spawn("/bin/bash", ["-c", "exec -a syncledger /usr/bin/python3 -c 'import time; time.sleep(30)' --store ledger-data repair"])
        let optioned = try spawn("/bin/sleep", ["--", "30"])
        // argv[0] set to a terminal escape, as a hostile holder could.
        let hostile = try spawn("/bin/bash", ["-c", "exec -a $'\\e[31mEVIL' /bin/sleep 30"])
        // SIGKILL: a test runner's children may inherit SIGTERM ignored.
        defer { for p in [sleeper, optioned, hostile] { p.kill(SIGKILL); _ = p.waitBlocking() } }
        // Once bash has exec'd the program and the kernel has laid out its arguments: the exe link
        // changes before the new argument area is set, so a cmdline read between the two is empty
        // (CI read nil twice, once before the exe check and once after it).
        func execed(_ p: ChildProcess, _ path: String) -> Bool {
            let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            for _ in 0..<500 {
                let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p.pid)/exe")
                let arguments = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(p.pid)/cmdline"))) ?? Data()
                if exe == target && !arguments.isEmpty { return true }
                usleep(10_000)
            }
            return false
        }
        #expect(execed(sleeper, "/usr/bin/python3"))
        let named = LockFileText.command(ofPid: sleeper.pid)
        #expect(named == "syncledger repair", "\(named ?? "nil")")
        #expect(execed(optioned, "/bin/sleep"))
        #expect(LockFileText.command(ofPid: optioned.pid) == "sleep")
        #expect(execed(hostile, "/bin/sleep"))
        let storeNamedSync = try spawn("/bin/bash", ["-c", "exec -a syncledger /usr/bin/python3 -c 'import time; time.sleep(30)' --store sync serve"])
        defer { storeNamedSync.kill(SIGKILL); _ = storeNamedSync.waitBlocking() }
        #expect(execed(storeNamedSync, "/usr/bin/python3"))
        let serving = LockFileText.command(ofPid: storeNamedSync.pid)
        #expect(serving == "syncledger serve", "the value of --store is not a command: \(serving ?? "nil")")
        let hostileCommand = LockFileText.command(ofPid: hostile.pid)
        #expect(hostileCommand == nil, "\(hostileCommand ?? "nil")")
        #expect(LockFileText.command(ofPid: Int32.max) == nil)
    }

    /// `/proc/locks` lines: only an exclusive flock on the very file (device as major:minor in
    /// hex, inode) names its holder; a waiter ("->"), a POSIX lock, a shared one or another
    /// file's lock does not.
    @Test func theKernelsListOfLocksNamesTheHolder() {
        let device = UInt64(0xfe) << 8 | 0x01  // fe:01
        let text = """
            1: POSIX  ADVISORY  WRITE 111 fe:01:500 0 EOF
            2: FLOCK  ADVISORY  READ 222 fe:01:500 0 EOF
            3: FLOCK  ADVISORY  WRITE 333 fe:01:500 0 EOF
            3: -> FLOCK  ADVISORY  WRITE 444 fe:01:500 0 EOF
            4: FLOCK  ADVISORY  WRITE 555 fe:02:500 0 EOF
            5: FLOCK  ADVISORY  WRITE 666 fe:01:501 0 EOF
            6: FLOCK ADVISORY WRITE garbage
            """
        #expect(LockFileText.flockHolders(of: device, 500, in: text) == [333])
        #expect(LockFileText.flockHolders(of: device, 500, in: nil).isEmpty)
        // btrfs lists another device than stat gives: the same inode, when nothing matches both.
        #expect(LockFileText.flockHolders(of: device, 600, in: "1: FLOCK  ADVISORY  WRITE 77 00:2f:600 0 EOF") == [77])
        // A device number past 255:255 (major 259, minor 300) as the kernel prints it.
        let large = (UInt64(259 & 0xfff) << 8) | UInt64(300 & 0xff) | (UInt64(300 & ~0xff) << 12)
        #expect(LockFileText.flockHolders(of: large, 7, in: "1: FLOCK  ADVISORY  WRITE 9 103:12c:7 0 EOF") == [9])
    }

    /// A LOCK file naming a process that does not hold the lock (a holder that has not written
    /// its pid yet, or a pid from another namespace) gives the pid without a command: the
    /// command of an unrelated process would look authoritative (cold review).
    @Test func aPidThatDoesNotHoldTheLockIsNotNamed() throws {
        let dir = TempDir()
        let first = try EventLogWriter.open(directory: dir.log, options: fast)
        defer { first.close() }
        let other = try ProcessRunner.start("/bin/sleep", ["30"])
        defer { other.kill(SIGKILL); _ = other.waitBlocking() }
        try "\(other.pid)\n".write(toFile: dir.log + "/LOCK", atomically: false, encoding: .utf8)
        let error = expectError(.locked) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
        #expect(error?.message == "store is locked by pid \(other.pid)", "\(error?.message ?? "nil")")
    }

    /// What this process's own lock says when another writer of it is refused.
    var lockedBySelf: String {
        "store is locked by pid \(getpid())" + (LockFileText.command(ofPid: getpid()).map { " (\($0))" } ?? "")
    }

    @Test func secondWriterFailsFast() throws {
        let dir = TempDir()
        let first = try EventLogWriter.open(directory: dir.log, options: fast)
        let started = Date()
        let error = expectError(.locked) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
        #expect(error?.message == lockedBySelf)
        #expect(Date().timeIntervalSince(started) < 1)
        // With waitLock, it waits, then fails the same way.
        let waited = Date()
        _ = expectError(.locked) { _ = try EventLogWriter.open(directory: dir.log, options: fast, waitLock: 0.3) }
        #expect(Date().timeIntervalSince(waited) >= 0.3)
        // Readers do not need the lock.
        try first.append([event(1)])
        #expect(try EventLogReader(directory: dir.log).head().seq == 1)
        first.close()
        let second = try EventLogWriter.open(directory: dir.log, options: fast)
        #expect(second.head.seq == 1)
    }

    @Test func waitLockSucceedsWhenReleased() throws {
        let dir = TempDir()
        let first = try EventLogWriter.open(directory: dir.log, options: fast)
        // The holder lets go on an OS thread of its own: the waiting open blocks its thread, and
        // under a loaded suite no cooperative thread may be free to run a releasing task.
        nonisolated(unsafe) let holder = first
        let releaser = Thread {
            usleep(200_000)
            _ = try? holder.append([event(1)])
            holder.close()
        }
        releaser.start()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast, waitLock: 30)
        #expect(writer.head.seq == 1)
    }

    /// A child this process forks holds a copy of the writer's LOCK descriptor, and its flock,
    /// until it calls exec. A writer closed and opened again in that window found LOCK held "by
    /// pid <itself>" and failed (CI, twice). Such a copy (a lock under this process's pid that no
    /// writer of this process holds) is waited out; a live second writer still fails at once.
    @Test func aForkedChildsCopyOfTheLockIsWaitedOut() throws {
        let dir = TempDir()
        let first = try EventLogWriter.open(directory: dir.log, options: fast)
        try first.append([event(1)])
        // The child's copy: the LOCK file held through a descriptor of its own, with our pid in it.
        let copy = open(dir.log + "/LOCK", O_RDWR | O_CLOEXEC)
        try #require(copy >= 0)
        first.close()
        #expect(flock(copy, LOCK_EX | LOCK_NB) == 0)
        let releaser = Thread {
            usleep(300_000)
            close(copy)  // the child's exec
        }
        let started = Date()
        releaser.start()
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        #expect(Date().timeIntervalSince(started) >= 0.25)
        #expect(writer.head.seq == 1)
        // A second writer while this one lives: at once, as before.
        let again = Date()
        let error = expectError(.locked) { _ = try EventLogWriter.open(directory: dir.log, options: fast) }
        #expect(error?.message == lockedBySelf)
        #expect(Date().timeIntervalSince(again) < 1)
        writer.close()
    }

    /// The promise: stock lz4 decodes the concatenated segments to exactly the appended lines.
    @Test func stockLz4ReadsTheLog() throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 4000, fsync: false))
        let payloads = try appendBatches(writer, batches: 30, size: 17)
        writer.close()
        #expect(dir.segments().count > 1)
        let r = try ProcessRunner.runBlocking("/bin/sh", ["-c", "cat \"$0\"/*.seg | /usr/bin/lz4 -dc", dir.log])
        let output = r.stdout
        #expect(r.status == 0)
        let expected: [UInt8] = payloads.flatMap { $0 + [UInt8(10)] }
        #expect(Array(output) == expected)
    }

    /// A reader running while the writer appends sees a consistent, gapless prefix every time.
    @Test func readerConcurrentWithWriter() async throws {
        let dir = TempDir()
        let writer = try EventLogWriter.open(directory: dir.log, options: LogOptions(segmentBytes: 3000, fsync: false))
        try writer.append([event(1)])
        let path = dir.log
        let reading = Task.detached { () -> Int in
            var checks = 0
            for _ in 0..<200 {
                let reader = try EventLogReader(directory: path)
                let records = try readAll(path)
                let seqs = records.map(\.0)
                #expect(seqs == Array(1...UInt64(max(seqs.count, 1))).prefix(seqs.count).map { $0 })
                for (seq, payload) in records { #expect(payload == event(Int(seq))) }
                _ = try reader.head()
                checks += 1
            }
            return checks
        }
        var n = 2
        for size in 0..<300 {
            let batch = (0..<(size % 9 + 1)).map { event(n + $0) }
            n += batch.count
            try writer.append(batch)
        }
        #expect(try await reading.value == 200)
        #expect(try readAll(dir.log).count == n - 1)
    }
}
