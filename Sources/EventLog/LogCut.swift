#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Paths

/// What `EventLogWriter.cutAtDamage` moved out of the log.
public struct LogCut: Sendable {
    /// The first failure a full verify found, where the log was cut.
    public var damage: LogError
    /// The first seq no longer in the log (the damaged batch's, or the one after the last kept).
    public var firstSeqCut: UInt64
    /// The log's head after the cut.
    public var head: LogHead
    /// The directory (inside the log directory) that holds what was cut, and its name there.
    public var aside: String
    public var asideName: String
    /// The files written there, and how many bytes of segments they hold.
    public var files: [String]
    public var bytes: UInt64
}

extension EventLogWriter {
    /// Damage a cut can end: bytes that do not read as the batches the chain continues with.
    /// A batch of a newer format (`unsupportedVersion`) is not damage, and an operating-system
    /// failure says nothing about the bytes.
    static let cuttable: [LogError.Code] = [.tornTail, .badMagic, .headerChecksum, .payloadChecksum, .brokenChain,
                                            .decompression, .malformedBatch, .sequenceGap, .segmentName]

    /// The deliberate way past damage inside the log when no backup holds the segment: under the
    /// writer's lock, verifies the whole log and, at its first failure, moves the damaged batch
    /// and everything after it (the rest of that segment, every later segment) into
    /// `<directory>/<asideName>/`, so that the log ends at the last batch that verified. Nothing
    /// is deleted: the tail of a segment is copied there (and synced) before the segment is
    /// truncated, whole segments are renamed there, the last first, so that a crash at any point
    /// leaves a log that is a prefix of the old one (a later cut goes on from there). Index files
    /// of the segments concerned are removed (derived data). Returns nil when the log verifies.
    ///
    /// The caller records the loss (`ledger.loss_recorded`): this only moves bytes.
    public static func cutAtDamage(directory: String, asideName: String, waitLock: Double? = nil, fsync: Bool = true,
                                   onWaitingForLock: ((_ lock: String) -> Void)? = nil) throws -> LogCut? {
        let lock = try FileLock.acquire(path: directory + "/LOCK", wait: waitLock, onWait: onWaitingForLock)
        defer { withExtendedLifetime(lock) {} }
        let reader = try EventLogReader(directory: directory)
        reader.rewritesIndexFiles = false
        let report = reader.verify()
        guard !report.ok, let damage = report.error else { return nil }
        guard cuttable.contains(damage.code), let segment = damage.segment, let offset = damage.offset else {
            throw LogError(code: .invalidArgument, message: "this failure is not damage a cut can end (\(damage.message))",
                           segment: damage.segment, offset: damage.offset, seq: damage.seq)
        }
        let list = try SegmentName.list(directory)
        guard let k = list.firstIndex(where: { $0.name == segment }) else {
            throw LogError(code: .notFound, message: "segment \(segment), where verify found the damage, is no longer in the log")
        }
        let aside = directory + "/" + asideName
        return try translating(segment: segment) {
            guard mkdir(aside, 0o700) == 0 else {
                throw SyscallError(operation: "mkdir", path: aside, errno: errno)
            }
            StoreOwnership.adopt(directory: aside)
            var files: [String] = []
            var bytes: UInt64 = 0
            func sync(_ dir: String) throws { if fsync { try Sys.fsyncDirectory(dir) } }
            // The later segments, the last first: the log stays a prefix of itself throughout.
            for s in list[(k + 1)...].reversed() {
                bytes += try Sys.fileSize(path: directory + "/" + s.name) ?? 0
                try Sys.rename(directory + "/" + s.name, aside + "/" + s.name)
                Sys.unlink(IndexFile.path(directory: directory, segment: s.name))
                files.append(s.name)
                try sync(aside)
                try sync(directory)
            }
            let path = directory + "/" + segment
            if offset == 0 {
                bytes += try Sys.fileSize(path: path) ?? 0
                try Sys.rename(path, aside + "/" + segment)
                files.append(segment)
                try sync(aside)
            } else {
                let name = segment + ".from-offset-\(offset)"
                bytes += try copyTail(of: path, from: offset, to: aside + "/" + name, fsync: fsync)
                files.append(name)
                try sync(aside)
                let fd = try Sys.openRegular(path, O_RDWR)
                defer { Sys.close(fd) }
                try Sys.ftruncate(fd, offset, path: path)
                if fsync { try Sys.fsync(fd, path: path) }
            }
            Sys.unlink(IndexFile.path(directory: directory, segment: segment))
            try sync(directory)
            files.reverse()
            let head: LogHead
            if offset == 0 {
                head = k == 0 ? .empty : try Self.lastHead(directory: directory)
            } else {
                head = try Self.lastHead(directory: directory)
            }
            return LogCut(damage: damage, firstSeqCut: head.seq + 1, head: head, aside: aside, asideName: asideName,
                          files: files, bytes: bytes)
        }
    }

    /// The head of what is left, read again (every batch checked) after the cut.
    private static func lastHead(directory: String) throws -> LogHead {
        let reader = try EventLogReader(directory: directory)
        reader.rewritesIndexFiles = false
        let report = reader.verify()
        if let error = report.error { throw error }
        return report.head
    }

    /// Copies `path` from `offset` to its end into a new file `to` (synced); the bytes copied.
    private static func copyTail(of path: String, from offset: UInt64, to: String, fsync: Bool) throws -> UInt64 {
        let src = try Sys.openRegular(path, O_RDONLY)
        defer { Sys.close(src) }
        let size = try Sys.fileSize(src, path: path)
        let dst = try Sys.open(to, O_WRONLY | O_CREAT | O_EXCL)
        defer { Sys.close(dst) }
        StoreOwnership.adopt(fd: dst, path: to)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var at = offset
        while at < size {
            let n = Int(min(UInt64(buffer.count), size - at))
            try buffer.withUnsafeMutableBytes { b in
                guard try Sys.preadFull(src, b.baseAddress!, n, at: at, path: path) == n else {
                    throw SyscallError(operation: "pread", path: path, errno: EIO)
                }
                try Sys.pwriteAll(dst, b.baseAddress!, n, at: at - offset, path: to)
            }
            at += UInt64(n)
        }
        if fsync { try Sys.fsync(dst, path: to) }
        return size - min(size, offset)
    }
}
