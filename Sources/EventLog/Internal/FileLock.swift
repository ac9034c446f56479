#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Paths
import Synchronization

/// The single-writer lock: flock(LOCK_EX) on `<dir>/LOCK`, which holds the owner's pid.
/// Held for as long as this object lives (the descriptor is the lock).
final class FileLock {
    private let fd: Int32
    private let identity: FileKey

    private init(fd: Int32, identity: FileKey) {
        self.fd = fd
        self.identity = identity
    }

    deinit {
        // Forgotten before it is let go: a thread of this process that takes it at once must
        // find it held by this process, not see it forgotten after.
        _ = Self.held.withLock { $0.remove(identity) }
        Sys.close(fd)
    }

    /// A file by device and inode.
    struct FileKey: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    /// The LOCK files this process holds now. A child this process forks shares its open
    /// descriptors, and so its flocks, until it calls exec (which closes them, O_CLOEXEC):
    /// a writer closed and opened again while another thread spawns a process found its own
    /// LOCK held "by pid <itself>" and failed (seen twice in CI). A LOCK held under this
    /// process's pid that this process does not hold is such a child's: waited for.
    private static let held = Mutex<Set<FileKey>>([])
    /// How long `acquire` waits out a forked child's copy of the lock.
    static let forkWindow = 2.0

    /// Takes the lock at once, or keeps trying for `wait` seconds; throws `LogError.locked`.
    /// `onWait` is called once, with the lock's message, when a `wait` begins.
    static func acquire(path: String, wait: Double?, onWait: ((String) -> Void)? = nil) throws -> FileLock {
        let fd = try translating { try Sys.openRegular(path, O_RDWR | O_CREAT | O_NOFOLLOW) }
        StoreOwnership.adopt(fd: fd, path: path)
        var st = stat()
        _ = fstat(fd, &st)
        let identity = FileKey(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        let started = monotonicSeconds()
        let deadline = started + max(0, wait ?? 0)
        do {
            var said = false
            while try !Sys.flock(fd, LOCK_EX | LOCK_NB, path: path) {
                if wait == nil || monotonicSeconds() >= deadline {
                    let pid = holderPid(fd: fd, path: path)
                    let forkedCopy = pid == String(getpid()) && !held.withLock { $0.contains(identity) }
                    if !forkedCopy || monotonicSeconds() >= started + forkWindow {
                        throw LogError(code: .locked, message: lockedMessage(pid, lock: identity))
                    }
                } else if !said, let onWait {
                    said = true
                    onWait(lockedMessage(holderPid(fd: fd, path: path), lock: identity))
                }
                usleep(20_000)
            }
            // Truncate then write: a reader of LOCK sees our pid or nothing, never a mix.
            let text = Array("\(getpid())\n".utf8)
            try Sys.ftruncate(fd, 0, path: path)
            try text.withUnsafeBytes { try Sys.pwriteAll(fd, $0.baseAddress!, $0.count, at: 0, path: path) }
        } catch let error as SyscallError {
            Sys.close(fd)
            throw LogError.from(error)
        } catch {
            Sys.close(fd)
            throw error
        }
        held.withLock { _ = $0.insert(identity) }
        return FileLock(fd: fd, identity: identity)
    }

    /// "store is locked by pid N", with the holder's command when it can be read
    /// ("pid N (syncledger repair)"): a sync that met a repair's lock said "another sync is running".
    /// The command is named only when the kernel's list of locks (`/proc/locks`) shows that pid
    /// holding this very file: the LOCK file still names the previous holder until a new one has
    /// written its pid, and a pid from another pid namespace (a container) names an unrelated
    /// process here; naming that process's command would look authoritative (cold review).
    static func lockedMessage(_ pid: String, lock: FileKey) -> String {
        guard let value = Int32(pid), LockFileText.flockHolders(of: lock.device, lock.inode, in: readProcLocks()).contains(value),
              let command = LockFileText.command(ofPid: value) else {
            return "store is locked by pid \(pid)"
        }
        return "store is locked by pid \(pid) (\(command))"
    }

    /// `/proc/locks`, or nil when it cannot be read.
    private static func readProcLocks() -> String? {
        let fd = Glibc.open("/proc/locks", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while text.count < 4 << 20 {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            text += chunk[..<n]
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The pid written by the holder. It writes it right after locking, so retry briefly when empty.
    private static func holderPid(fd: Int32, path: String) -> String {
        var buffer = [UInt8](repeating: 0, count: 32)
        for _ in 0..<50 {
            let n = buffer.withUnsafeMutableBytes { (try? Sys.preadFull(fd, $0.baseAddress!, 32, at: 0, path: path)) ?? 0 }
            if let pid = LockFileText.pid(buffer[..<n]) { return pid }
            usleep(2_000)
        }
        return "unknown"
    }
}

/// What a lock file holds: the pid of the process holding the lock, as decimal digits and a
/// newline. Anything else (an empty file a holder has not written yet, or bytes someone else
/// wrote) gives no pid: filtering the digits out of any text turned "\u{1B}[31m…" into "pid 31",
/// a real-looking process someone might kill (hostile test).
public enum LockFileText {
    public static func pid(_ bytes: some Collection<UInt8>) -> String? {
        var digits = Substring(String(decoding: bytes, as: UTF8.self))
        while let last = digits.last, last == "\n" || last == "\r" || last == " " { digits = digits.dropLast() }
        guard !digits.isEmpty, digits.count <= 10, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let value = Int32(digits), value > 0 else { return nil }
        return String(value)
    }

    /// The commands of syncledger that take the log's lock, named after the program when one of
    /// them is among its arguments ("syncledger --store DIR repair" reads "syncledger repair").
    static let writerCommands: Set<String> = ["sync", "serve", "forget", "repair", "demo"]
    /// Options whose value is the next argument and may come before the command: their values
    /// are not commands ("syncledger --store sync serve" is a serve of the store `sync`).
    static let valueOptions: Set<String> = ["--store", "--keys"]

    /// The pids `/proc/locks` (its text) shows holding an exclusive flock on the file `device`,
    /// `inode` (nil text: none; the same inode on another device when none is on this one). A line reads "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1311 0 EOF",
    /// the device as major:minor in hex; one waiting for a lock reads "1: -> FLOCK ...".
    public static func flockHolders(of device: UInt64, _ inode: UInt64, in text: String?) -> Set<Int32> {
        guard let text else { return [] }
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
        let minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
        var holders: Set<Int32> = []
        // On btrfs (and overlay file systems) `st_dev` is not the device the kernel lists:
        // when no lock matches device and inode, one on the same inode is taken (cold review).
        var sameInode: Set<Int32> = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 6, fields[1] == "FLOCK", fields[3] == "WRITE", let pid = Int32(fields[4]) else { continue }
            let file = fields[5].split(separator: ":")
            guard file.count == 3, UInt64(file[2]) == inode else { continue }
            if UInt64(file[0], radix: 16) == major, UInt64(file[1], radix: 16) == minor {
                holders.insert(pid)
            } else {
                sameInode.insert(pid)
            }
        }
        return holders.isEmpty ? sameInode : holders
    }

    /// What process `pid` runs, from `/proc/PID/cmdline`: its program's file name, and the first
    /// of its arguments that is a syncledger command taking the lock ("syncledger repair"), or
    /// nil when unreadable (another user's process, another system) or not plain words. Never
    /// its other arguments: they may name files or values that are not ours to print.
    public static func command(ofPid pid: Int32) -> String? {
        let fd = Glibc.open("/proc/\(pid)/cmdline", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        let words = bytes[..<n].split(separator: 0, omittingEmptySubsequences: true).map { String(decoding: $0, as: UTF8.self) }
        guard let program = words.first?.split(separator: "/").last.map(String.init) else { return nil }
        func plain(_ word: String) -> Bool {
            !word.isEmpty && word.count <= 40
                && word.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
        }
        guard plain(program) else { return nil }
        var arguments = words.dropFirst().prefix(32).makeIterator()
        while let word = arguments.next() {
            if valueOptions.contains(word) {
                _ = arguments.next()
            } else if writerCommands.contains(word) {
                return program + " " + word
            }
        }
        return program
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

extension EventLogWriter {
    /// True while a writer holds the lock of the log in `directory` (a live process: the lock
    /// dies with it). Takes a shared lock for an instant when free; writes nothing.
    public static func isLocked(directory: String) -> Bool {
        let path = directory + "/LOCK"
        // Not blocking on a FIFO put in its place, nor following a link (hostile test).
        let fd = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        guard let free = try? Sys.flock(fd, LOCK_SH | LOCK_NB, path: path) else { return false }
        if free { _ = try? Sys.flock(fd, LOCK_UN, path: path) }
        return !free
    }
}
