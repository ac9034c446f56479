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
