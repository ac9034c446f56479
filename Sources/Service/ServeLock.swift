import Foundation
import Paths
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One `serve` per store: `STORE/state/serve.lock`, flock'd for the server's life and holding
/// its pid. Two servers on one store each kept their own webhook inbox in memory over one file:
/// when one rewrote the file (compaction), the other went on appending to the unlinked old one,
/// and ids it had acknowledged were gone at its restart; both also ran `--daily-at` (hostile
/// test). The log's writer lock does not cover this: a server takes that only while it writes.
final class ServeLock: Sendable {
    private let fd: Mutex<Int32>

    init(statePath: String) throws {
        let path = statePath + "/serve.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0o600)
        guard fd >= 0 else {
            throw ServeError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        StoreOwnership.adopt(fd: fd, path: path)
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let reason = String(cString: strerror(errno))
            var buffer = [UInt8](repeating: 0, count: 16)
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            close(fd)
            guard busy else { throw ServeError("cannot lock \(path): \(reason)") }
            let pid = n > 0 ? String(decoding: buffer[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
            let who = pid.allSatisfy(\.isNumber) && !pid.isEmpty ? "pid \(pid)" : "another process"
            throw ServeError("this store is already served (\(who)); one `syncledger serve` per store: stop that one first")
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.fd = Mutex(fd)
    }

    /// Lets go (when the server has stopped; also when this object goes).
    func release() {
        fd.withLock {
            if $0 >= 0 { close($0) }
            $0 = -1
        }
    }

    deinit { release() }
}
