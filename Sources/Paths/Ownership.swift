#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Files and directories root makes inside a store take the owner of the directory they are
/// made in, as SQLite does for a database's -wal and -shm files: a `sudo syncledger rebuild`
/// (or sync, verify, status…) on a case manager's store otherwise left root-owned, owner-only
/// files there (the rebuild lock, state/verify.json, new segments, keys), and every later
/// command of the store's owner failed on them with "Permission denied" (hostile test, stop 44).
///
/// Root must not be tricked into giving away a file of its own: the store's owner controls the
/// store's directories and could put a symlink where a file is opened. So only a file or
/// directory root owns is given, and only when the open descriptor really is at `path` (by
/// `/proc/self/fd`, its last component not a symlink) with one link (a regular file); the
/// owner is that of the directory it really is in, which must not be root's. A symlinked
/// `LOCK` pointing at `/etc/shadow` thus gives nothing away, and the lock files are opened with
/// `O_NOFOLLOW` besides.
///
/// Does nothing unless the process runs as root. Best effort: a failed `fchown` leaves the file
/// as it was (root can still use it).
public enum StoreOwnership {
    /// Gives the open file or directory `fd`, opened (made) by this process at `path`, the
    /// owner and group of the directory it is in.
    public static func adopt(fd: Int32, path: String) {
        guard geteuid() == 0 else { return }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_uid == 0 else { return }
        let type = st.st_mode & S_IFMT
        guard type == S_IFDIR || (type == S_IFREG && st.st_nlink == 1) else { return }
        guard let real = realPath(of: fd) else { return }
        let parent = parentDirectory(of: real)
        // Really at `path`: the same name in the directory `path` names (symlinks above it
        // resolved), not a file a symlink at `path` led to.
        let intended = parentDirectory(of: path)
        guard let resolved = realpath(intended.isEmpty ? "." : intended, nil) else { return }
        let intendedParent = String(cString: resolved)
        free(resolved)
        guard intendedParent == parent, lastComponent(real) == lastComponent(path) else { return }
        var owner = stat()
        guard !parent.isEmpty, stat(parent, &owner) == 0, owner.st_uid != 0 else { return }
        _ = fchown(fd, owner.st_uid, owner.st_gid)
    }

    /// Gives the directory at `path`, just made by this process, the owner and group of the
    /// directory it is in (`adopt(fd:)`, through a descriptor that does not follow a symlink).
    public static func adopt(directory path: String) {
        guard geteuid() == 0 else { return }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        adopt(fd: fd, path: path)
    }

    private static func lastComponent(_ path: String) -> Substring {
        var p = Substring(path)
        while p.count > 1, p.last == "/" { p.removeLast() }
        return p.lastIndex(of: "/").map { p[p.index(after: $0)...] } ?? p
    }

    /// Where an open descriptor's file is, symlinks resolved (Linux: `/proc/self/fd/N`).
    private static func realPath(of fd: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0, buffer[0] == 0x2F else { return nil }  // an absolute path, not "pipe:[…]"
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
