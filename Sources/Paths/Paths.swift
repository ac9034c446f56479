#if canImport(Glibc)
import Glibc
#endif
/// The directory a path names its last component in, as `NSString.deletingLastPathComponent`
/// gives it ("a/b" → "a", "/b" → "/", "b" → ""), without Foundation's: on Linux it traps on a
/// one-character relative path ("q", "q/"), which a user may well give as `--store q`.
public func parentDirectory(of path: String) -> String {
    var p = Substring(path)
    while p.count > 1, p.last == "/" { p.removeLast() }
    guard let slash = p.lastIndex(of: "/") else { return "" }
    var parent = p[..<slash]
    while parent.last == "/" { parent.removeLast() }
    return parent.isEmpty ? "/" : String(parent)
}

/// The first directory above `path` (the nearest first, up to the root) that every user may
/// write and that has no sticky bit, with its mode; nil when there is none. Whoever can write
/// such a directory can rename what is below it and put their own file in its place: the master
/// key's and the tokens file's check (hostile tests).
public func openDirectory(above path: String) -> (String, mode_t)? {
    var directory = path
    while true {
        let parent = parentDirectory(of: directory)
        let next = parent.isEmpty ? (directory.hasPrefix("/") ? "/" : ".") : parent
        var st = stat()
        if stat(next, &st) == 0, st.st_mode & 0o002 != 0, st.st_mode & 0o1000 == 0 { return (next, st.st_mode & 0o777) }
        guard next != directory, next != "/", next != "." else { return nil }
        directory = next
    }
}

/// True when `path` is on a file system mounted read-only (nobody can change it there).
public func isOnReadOnlyMount(_ path: String) -> Bool {
    var fs = statvfs()
    return statvfs(path, &fs) == 0 && fs.f_flag & UInt(ST_RDONLY) != 0
}

/// What tells a change of a file that is re-read when it changes: its modification and
/// status-change times, size, device and inode. The modification time alone missed a file
/// rewritten and given its old time back (`touch -d`): the server's tokens file, whose revoked
/// token then kept working (hostile test); the status-change time cannot be set back.
public struct FileStamp: Equatable, Sendable {
    public var modified: [Int]
    public var changed: [Int]
    public var size: Int
    public var device: UInt64
    public var inode: UInt64

    /// Nil when nothing is at `path` (a link is followed).
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        modified = [Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec)]
        changed = [Int(st.st_ctim.tv_sec), Int(st.st_ctim.tv_nsec)]
        size = Int(st.st_size)
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}
