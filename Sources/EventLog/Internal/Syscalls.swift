#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Paths

/// A failed system call: which one, on what, and errno. Turned into a `LogError` in
/// `LogError+Syscall.swift`, the only place that knows what each errno means for the log.
struct SyscallError: Error {
    var operation: String
    var path: String
    var errno: Int32
}

/// A FIFO, a directory, a device or a socket where the log expects a file of its own.
struct NotARegularFile: Error, CustomStringConvertible {
    var path: String
    var mode: mode_t

    var kind: String {
        switch mode & S_IFMT {
        case S_IFIFO: return "a FIFO"
        case S_IFDIR: return "a directory"
        case S_IFCHR, S_IFBLK: return "a device"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }

    var description: String { message(naming: path) }

    /// The one line that says so, naming the file as `name`.
    func message(naming name: String) -> String { "\(name) is \(kind), not a file of the log: move it aside" }
}

/// Thin wrappers over the few system calls the log uses. Each retries EINTR and throws
/// `SyscallError`; none allocates except `listDirectory`.
enum Sys {
    @inline(__always)
    private static func retrying<T: BinaryInteger>(_ op: String, _ path: String, _ body: () -> T) throws -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            let code = errno
            if code == EINTR { continue }
            throw SyscallError(operation: op, path: path, errno: code)
        }
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws -> Int32 {
        if flags & O_CREAT != 0 { try injectFault(.create, "open", path) }
        return try retrying("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    /// Opens `path` only when it is a regular file: a FIFO, a directory, a device or a socket
    /// put in a file's place is `NotARegularFile`. `O_NONBLOCK` makes the open of a FIFO return
    /// at once instead of waiting for a writer forever; it is cleared again after the check.
    static func openRegular(_ path: String, _ flags: Int32) throws -> Int32 {
        let fd = try open(path, flags | O_NONBLOCK)
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            close(fd)
            throw SyscallError(operation: "fstat", path: path, errno: code)
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw NotARegularFile(path: path, mode: st.st_mode)
        }
        let current = fcntl(fd, F_GETFL)
        if current >= 0 { _ = fcntl(fd, F_SETFL, current & ~O_NONBLOCK) }
        return fd
    }

    static func close(_ fd: Int32) {
        // close is not retried on EINTR: on Linux the descriptor is released either way.
        _ = Glibc.close(fd)
    }

    /// Reads exactly `count` bytes unless the file ends first; returns how many were read.
    static func preadFull(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, at offset: UInt64,
                          path: String) throws -> Int {
        var done = 0
        while done < count {
            let n = try retrying("pread", path) {
                Glibc.pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Writes all `count` bytes, looping over short writes. A write that makes no progress
    /// (returns 0) is reported as EIO rather than retried forever.
    static func pwriteAll(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, at offset: UInt64,
                          path: String) throws {
        var done = 0
        while done < count {
            var length = count - done
            if faultInjectionArmed, let fault = FaultInjector.shared.check(.write, path: path) {
                switch fault {
                case .fail(let code): throw SyscallError(operation: "pwrite", path: path, errno: code)
                case .short: length = max(1, length / 2)
                case .zero: length = 0
                }
            }
            let n = try retrying("pwrite", path) {
                length == 0 ? 0 : Glibc.pwrite(fd, buffer + done, length, off_t(offset) + off_t(done))
            }
            if n == 0 { throw SyscallError(operation: "pwrite", path: path, errno: EIO) }
            done += n
        }
    }

    static func fdatasync(_ fd: Int32, path: String) throws {
        try injectFault(.fsync, "fdatasync", path)
        _ = try retrying("fdatasync", path) { Glibc.fdatasync(fd) }
    }

    static func fsync(_ fd: Int32, path: String) throws {
        try injectFault(.fsync, "fsync", path)
        _ = try retrying("fsync", path) { Glibc.fsync(fd) }
    }

    static func ftruncate(_ fd: Int32, _ length: UInt64, path: String) throws {
        try injectFault(.truncate, "ftruncate", path)
        _ = try retrying("ftruncate", path) { Glibc.ftruncate(fd, off_t(length)) }
    }

    @inline(__always)
    private static func injectFault(_ kind: FaultInjector.Operation, _ operation: String, _ path: String) throws {
        if faultInjectionArmed, case .fail(let code)? = FaultInjector.shared.check(kind, path: path) {
            throw SyscallError(operation: operation, path: path, errno: code)
        }
    }

    /// flock; returns false when the lock is held elsewhere (EWOULDBLOCK with LOCK_NB).
    static func flock(_ fd: Int32, _ operation: Int32, path: String) throws -> Bool {
        while true {
            if systemFlock(fd, operation) == 0 { return true }
            let code = errno
            if code == EINTR { continue }
            if code == EWOULDBLOCK || code == EAGAIN { return false }
            throw SyscallError(operation: "flock", path: path, errno: code)
        }
    }

    static func rename(_ from: String, _ to: String) throws {
        _ = try retrying("rename", to) { Glibc.rename(from, to) }
    }

    static func unlink(_ path: String) {
        _ = Glibc.unlink(path)
    }

    static func fileSize(_ fd: Int32, path: String) throws -> UInt64 {
        var st = stat()
        _ = try retrying("fstat", path) { Glibc.fstat(fd, &st) }
        return UInt64(st.st_size)
    }

    /// Size of the file at `path`, or nil when it does not exist.
    static func fileSize(path: String) throws -> UInt64? {
        var st = stat()
        if systemStat(path, &st) == 0 { return UInt64(st.st_size) }
        if errno == ENOENT { return nil }
        throw SyscallError(operation: "stat", path: path, errno: errno)
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return systemStat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// mkdir -p with mode 0700 for every directory created.
    static func makeDirectories(_ path: String) throws {
        if isDirectory(path) { return }
        let parent = parentDirectory(path)
        if parent != path && !parent.isEmpty { try makeDirectories(parent) }
        if Glibc.mkdir(path, 0o700) == 0 {
            StoreOwnership.adopt(directory: path)
        } else if errno != EEXIST {
            throw SyscallError(operation: "mkdir", path: path, errno: errno)
        }
    }

    /// fsync a directory so that a file created or renamed in it survives a power cut.
    static func fsyncDirectory(_ path: String) throws {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            throw SyscallError(operation: "opendir", path: path, errno: errno)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func parentDirectory(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

// The struct types `flock` and `stat` shadow the functions inside `Sys`; these aliases reach them.
private func systemFlock(_ fd: Int32, _ op: Int32) -> Int32 { flock(fd, op) }
private func systemStat(_ path: String, _ st: inout stat) -> Int32 { stat(path, &st) }
