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
    /// The log's head after the cut.
    public var head: LogHead
    /// The first seq no longer in the log.
    public var firstSeqCut: UInt64 { head.seq + 1 }
    /// The directory inside the log directory that holds what was cut.
    public var asideName: String
    /// The files written there, and how many bytes of segments they hold.
    public var files: [String]
    public var bytes: UInt64
    /// How many of the cut's batches, and events, still read on their own (header, payload CRC,
    /// LZ4 frame and line count; not the chain, which the damage broke): what `inspectCut` saw.
    public var readableBatches = 0
    public var readableEvents: UInt64 = 0
}

/// Asks `EventLogWriter.open` to cut the log at its first damage, under the writer's lock, before
/// it checks the segments (`EventLogWriter.cutAtDamage`).
public struct CutRequest {
    /// The directory inside the log directory for what is cut (`-2`, `-3`, … appended when taken).
    public var asideName: String
    /// Called once the damage is found and before anything is moved, with the cut as it will be:
    /// the caller notes it where a crash cannot lose it (`state/cut-pending`).
    public var beforeMoving: (LogCut) throws -> Void
    /// Called when the whole log verifies (nothing is cut), with its head and how many events.
    public var whenIntact: (LogHead, UInt64) -> Void
    /// Called, before `beforeMoving`, with the JSON Lines of each batch of what is to be cut that
    /// still reads on its own (`EventLogWriter.readableBatches`), in the order they lie: the
    /// caller keeps what the log would otherwise stop saying (a second cut took an earlier
    /// loss's record with it, unsaid: hostile test). Not checked by the chain.
    public var inspectCut: ([UInt8]) -> Void
    /// Called with the JSON Lines of each batch the full verify passed (what the log keeps), as
    /// it reads them: the caller learns what the log still holds without reading it again.
    public var inspectKept: ([UInt8]) -> Void = { _ in }
    /// Cut only a torn write at the log's end (which opening would remove), nothing inside the
    /// log: a plain `repair`, which keeps those bytes too but refuses damage inside.
    public var tornTailOnly = false

    public init(asideName: String, beforeMoving: @escaping (LogCut) throws -> Void, whenIntact: @escaping (LogHead, UInt64) -> Void,
                inspectCut: @escaping ([UInt8]) -> Void = { _ in }, tornTailOnly: Bool = false) {
        (self.asideName, self.beforeMoving, self.whenIntact, self.inspectCut) = (asideName, beforeMoving, whenIntact, inspectCut)
        self.tornTailOnly = tornTailOnly
    }
}

extension EventLogWriter {
    /// Damage a cut can end: bytes that do not read as the batches the chain continues with.
    /// A batch of a newer format (`unsupportedVersion`) is not damage, and an operating-system
    /// failure says nothing about the bytes.
    static let cuttable: [LogError.Code] = [.tornTail, .badMagic, .headerChecksum, .payloadChecksum, .brokenChain,
                                            .decompression, .malformedBatch, .sequenceGap, .segmentName]

    /// The deliberate way past damage inside the log when no backup holds the segment. Run by
    /// `open` under the writer's lock: verifies the whole log and, at its first failure, moves
    /// the damaged batch and everything after it (the rest of that segment, every later segment)
    /// into `<directory>/<asideName>/`, so that the log ends at the last batch that verified.
    ///
    /// Nothing is deleted, and a crash at any step leaves a log that is a prefix of the old one
    /// with every byte kept: the damaged segment's tail is copied there and synced first (once
    /// the later segments are gone, damage at its end could read as a torn write, which opening
    /// cuts off unkept); then the later segments are renamed there, the last first; then the
    /// segment is truncated. Index files of the segments concerned are removed (derived data).
    /// Returns nil when the log verifies. The caller records the loss: this only moves bytes.
    static func cutAtDamage(directory: String, request: CutRequest, fsync: Bool) throws -> LogCut? {
        let reader = try EventLogReader(directory: directory)
        reader.rewritesIndexFiles = false
        let report = reader.verify(inspect: { _, content in request.inspectKept(content) })
        var found = report.error
        if request.tornTailOnly && !report.ok { return nil }
        if report.ok {
            // A torn write at the log's end is cut aside too, not removed as opening removes it:
            // zeros from inside an acknowledged batch to the end of the file read as one, and
            // its bytes were deleted with no copy (hostile test).
            let list = try reader.segments()
            if let last = list.indices.last, case let (index, torn?) = try reader.segmentIndex(last, of: list) {
                found = LogError(code: .tornTail, message: "segment \(list[last].name) offset \(index.length): a torn write at the log's end (\(torn))",
                                 segment: list[last].name, offset: index.length, seq: report.head.seq + 1)
            }
        }
        guard let damage = found else {
            request.whenIntact(report.head, report.events)
            return nil
        }
        guard cuttable.contains(damage.code), let segment = damage.segment, let offset = damage.offset else {
            throw LogError(code: .invalidArgument, message: "this failure is not damage a cut can end (\(damage.message))",
                           segment: damage.segment, offset: damage.offset, seq: damage.seq)
        }
        let list = try SegmentName.list(directory)
        guard let k = list.firstIndex(where: { $0.name == segment }) else {
            throw LogError(code: .notFound, message: "segment \(segment), where verify found the damage, is no longer in the log")
        }
        let path = directory + "/" + segment
        let later = list[(k + 1)...].map(\.name)
        // An empty file among the segments holds no events: what follows it may be sound, and
        // cutting there moved healthy acknowledged segments out (hostile test). As a FIFO or a
        // directory in a segment's place, it is for the operator to move aside.
        if !later.isEmpty, (try? Sys.fileSize(path: path)) == 0 {
            throw LogError(code: .invalidArgument,
                           message: "segment \(segment) is an empty file among the segments, holding no events; move it out of "
                               + "log/ and run the repair again (the segments after it may be sound)",
                           segment: segment, offset: 0, seq: damage.seq)
        }
        let tailName = offset == 0 ? segment : segment + ".from-offset-\(offset)"
        return try translating(segment: segment) {
            // What still reads of what is to be cut, before anything is made or moved.
            var readable = (0, UInt64(0))
            for (s, from) in [(segment, offset)] + later.map({ ($0, UInt64(0)) }) {
                let (batches, events) = try readableBatches(path: directory + "/" + s, from: from, request.inspectCut)
                readable.0 += batches
                readable.1 += events
            }
            var name = request.asideName
            var n = 1
            while mkdir(directory + "/" + name, 0o700) != 0 {
                guard errno == EEXIST, n < 100 else { throw SyscallError(operation: "mkdir", path: directory + "/" + name, errno: errno) }
                n += 1
                name = request.asideName + "-\(n)"
            }
            let aside = directory + "/" + name
            StoreOwnership.adopt(directory: aside)
            func sync(_ dir: String) throws { if fsync { try Sys.fsyncDirectory(dir) } }
            try sync(directory)
            var bytes = try Sys.fileSize(path: path) ?? 0
            bytes -= min(bytes, offset)
            for s in later { bytes += try Sys.fileSize(path: directory + "/" + s) ?? 0 }
            // What verify found good ends where the cut begins.
            var cut = LogCut(damage: damage, head: report.head, asideName: name,
                             files: [tailName] + later, bytes: bytes)
            (cut.readableBatches, cut.readableEvents) = readable
            do { try request.beforeMoving(cut) } catch {
                rmdir(aside)
                throw error
            }
            if offset > 0 {
                _ = try copyTail(of: path, from: offset, to: aside + "/" + tailName, fsync: fsync)
                try sync(aside)
            }
            // The later segments, the last first: the log stays a prefix of itself throughout.
            for s in later.reversed() {
                try Sys.rename(directory + "/" + s, aside + "/" + s)
                Sys.unlink(IndexFile.path(directory: directory, segment: s))
                try sync(aside)
                try sync(directory)
            }
            if offset == 0 {
                try Sys.rename(path, aside + "/" + segment)
                try sync(aside)
            } else {
                let fd = try Sys.openRegular(path, O_RDWR)
                defer { Sys.close(fd) }
                try Sys.ftruncate(fd, offset, path: path)
                if fsync { try Sys.fsync(fd, path: path) }
            }
            Sys.unlink(IndexFile.path(directory: directory, segment: segment))
            try sync(directory)
            return cut
        }
    }

    /// The batch header's first twelve bytes, the same in every batch: the LZ4 skippable frame's
    /// magic, its size (72) and "SLGB".
    private static let headerStart: [UInt8] = [0x50, 0x2A, 0x4D, 0x18, 72, 0, 0, 0, 0x53, 0x4C, 0x47, 0x42]

    /// Every batch of `path` from `offset` on that reads on its own (header CRC, payload CRC, LZ4
    /// frame, line count), its JSON Lines handed to `body` in the order they lie. Past bytes that
    /// do not read as a batch (a header that fails, or a sound header whose payload fails: it may
    /// be stale, and its length would skip real batches; cold review), the next batch is found by
    /// its header's first bytes, searched in a 1 MiB window read once. A file that cannot be read
    /// (EIO, not a regular file) ends its scan without failing the cut: the scan only looks for
    /// what the log would otherwise stop saying. Returns how many batches and events were read.
    static func readableBatches(path: String, from offset: UInt64, _ body: ([UInt8]) -> Void) throws -> (Int, UInt64) {
        guard let fd = try? Sys.openRegular(path, O_RDONLY) else { return (0, 0) }
        defer { Sys.close(fd) }
        guard let size = try? Sys.fileSize(fd, path: path) else { return (0, 0) }
        let frame = UInt64(BatchHeader.frameSize)
        var header = [UInt8](repeating: 0, count: BatchHeader.frameSize)
        var window = [UInt8](repeating: 0, count: 1 << 20)
        var windowStart: UInt64 = 0, windowCount = 0
        var compressed: [UInt8] = []
        let decoder = LZ4.Decoder()
        var batches = 0, events: UInt64 = 0
        var at = offset
        func read(_ buffer: inout [UInt8], _ count: Int, at: UInt64) -> Int {
            (try? buffer.withUnsafeMutableBytes { try Sys.preadFull(fd, $0.baseAddress!, count, at: at, path: path) }) ?? -1
        }
        while at + frame <= size {
            guard read(&header, Int(frame), at: at) == Int(frame) else { break }
            if case .success(let h) = header.withUnsafeBytes({ BatchHeader.decode($0.baseAddress!) }), at + h.batchLength <= size {
                let length = Int(h.compressedLength)
                if compressed.count < length { compressed = [UInt8](repeating: 0, count: length) }
                if read(&compressed, length, at: at + frame) == length,
                   compressed.withUnsafeBytes({ crc32c(UnsafeRawBufferPointer(rebasing: $0[..<length])) }) == h.payloadCRC {
                    var failed = false
                    let content = [UInt8](unsafeUninitializedCapacity: Int(h.uncompressedLength)) { buffer, initialized in
                        compressed.withUnsafeBytes { source in
                            failed = decoder.decode(UnsafeRawBufferPointer(rebasing: source[..<length]),
                                                    into: UnsafeMutableRawBufferPointer(buffer)) != nil
                        }
                        initialized = buffer.count
                    }
                    if !failed, content.last == 10, content.withUnsafeBytes({ countLines($0) }) == h.count {
                        body(content)
                        batches += 1
                        events += UInt64(h.count)
                        at += h.batchLength
                        continue
                    }
                }
            }
            // Not a batch here: the next place a header's first bytes occur, after this one.
            var from = at + 1
            var found: UInt64?
            while found == nil, from + UInt64(headerStart.count) <= size {
                if from < windowStart || from + UInt64(headerStart.count) > windowStart + UInt64(max(windowCount, 0)) {
                    windowStart = from
                    windowCount = read(&window, Int(min(UInt64(window.count), size - from)), at: from)
                    guard windowCount >= headerStart.count else { break }
                }
                let skip = Int(from - windowStart)
                let hit = window.withUnsafeBytes { hay in
                    headerStart.withUnsafeBytes { firstOffset(of: $0, in: UnsafeRawBufferPointer(rebasing: hay[skip..<windowCount])) }
                }
                if let hit {
                    found = from + UInt64(hit)
                } else {
                    // The window's last bytes may begin a header the next window holds whole.
                    from = windowStart + UInt64(windowCount - headerStart.count + 1)
                    if windowStart + UInt64(windowCount) >= size { break }
                }
            }
            guard let next = found else { break }
            at = next
        }
        return (batches, events)
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
