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
/// Does nothing unless the process runs as root and the directory belongs to someone else.
/// Best effort: a failed `fchown` leaves the file as it was (root can still use it).
public enum StoreOwnership {
    /// Gives the open file `fd`, at `path`, the owner and group of its directory.
    public static func adopt(fd: Int32, path: String) {
        guard geteuid() == 0, let owner = directoryOwner(of: path) else { return }
        _ = fchown(fd, owner.uid, owner.gid)
    }

    /// Gives the directory (or file) at `path`, just made by this process, the owner and group
    /// of the directory it is in. Does not follow a symlink at `path`.
    public static func adopt(path: String) {
        guard geteuid() == 0, let owner = directoryOwner(of: path) else { return }
        _ = lchown(path, owner.uid, owner.gid)
    }

    /// The owner of the directory `path` is in, when it is not root.
    private static func directoryOwner(of path: String) -> (uid: uid_t, gid: gid_t)? {
        let parent = parentDirectory(of: path)
        var st = stat()
        guard stat(parent.isEmpty ? "." : parent, &st) == 0, st.st_uid != 0 else { return nil }
        return (st.st_uid, st.st_gid)
    }
}
