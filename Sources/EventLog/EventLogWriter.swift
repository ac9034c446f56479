#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Paths

/// The single writer of a log directory. Appends batches durably; holds `<dir>/LOCK` while open.
///
/// Not thread-safe and not `Sendable`: serialise access to it in one place.
public final class EventLogWriter {
    private let directory: String
    private let options: LogOptions
    private var lock: FileLock?
    private var fd: Int32 = -1
    private var index: SegmentIndex
    private var failure: LogError?
    private var headFile: HeadRecordFile?
    // Reused across appends so that a steady stream of batches allocates nothing per batch.
    private var plain: [UInt8] = []
    private var frame: [UInt8] = []

    /// The last acknowledged seq and its batch's chain hash.
    public private(set) var head: LogHead

    /// What recovery removed on open (a torn, never-acknowledged tail), or nil.
    public let recoveredTail: String?

    /// What `open(cutting:)` moved out of the log, or nil.
    public private(set) var cut: LogCut?

    private var segmentPath: String { directory + "/" + index.name }

    /// Opens (creating with mode 0700 if missing) the log in `directory` for writing: takes the
    /// lock, checks every segment, cuts off a torn tail of the active segment and refuses to open
    /// on corruption. Throws `LogError` with code `.locked` ("store is locked by pid N") when
    /// another writer holds the lock and does not release it within `waitLock` seconds
    /// (`onWaitingForLock` is told once, with that message, when the wait begins).
    ///
    /// With `options.headRecordPath`, the log must hold the head recorded there (only a torn
    /// batch past it may be missing); otherwise `open` throws `.lostEvents` before creating,
    /// truncating or writing anything. `acceptingLoss` skips that check: the deliberate way out,
    /// whose first append records the loss. The recorded head stays as it was until that append
    /// (a process killed before it leaves the evidence of the loss in place).
    ///
    /// `cutting` (with `acceptingLoss`): first, under the lock, the log is cut at its first
    /// damage (`cutAtDamage`); `cut` says what was moved aside.
    public static func open(directory: String, options: LogOptions = .init(),
                            waitLock: Double? = nil, acceptingLoss: Bool = false, cutting: CutRequest? = nil,
                            onWaitingForLock: ((_ lock: String) -> Void)? = nil) throws -> EventLogWriter {
        precondition(cutting == nil || acceptingLoss, "a cut is made only by a writer accepting the loss")
        var recorded: HeadRecord.Entry?
        if let path = options.headRecordPath {
            if acceptingLoss {
                recorded = try? HeadRecord.read(path: path)
            } else {
                recorded = try HeadRecord.read(path: path)
                // Before anything is created: a whole log gone must not become a new empty one.
                if let recorded { try requireHolds(directory: directory, recorded.head, path: path) }
            }
        }
        try translating { try Sys.makeDirectories(directory) }
        let lock = try FileLock.acquire(path: directory + "/LOCK", wait: waitLock, onWait: onWaitingForLock)
        // Again under the lock: another writer may have appended (never removed) meanwhile, or
        // a repair this one waited for recorded a loss (a stale generation would be written).
        if let path = options.headRecordPath, acceptingLoss {
            recorded = try? HeadRecord.read(path: path)
        }
        if let path = options.headRecordPath, !acceptingLoss {
            recorded = try HeadRecord.read(path: path)
            if let recorded { try requireHolds(directory: directory, recorded.head, path: path) }
        }
        let cut = try cutting.flatMap { try cutAtDamage(directory: directory, request: $0, fsync: options.fsync) }
        try translating { try Sys.makeDirectories(directory + "/index") }
        let recovered = try Recovery.run(directory: directory, options: options)
        var active = recovered.active
        if active == nil {
            let name = SegmentName.make(1)
            try createSegment(directory: directory, name: name, fsync: options.fsync)
            active = SegmentIndex(name: name, firstSeq: 1, previousChain: ChainHash.zero)
        }
        let writer = try EventLogWriter(directory: directory, options: options, lock: lock,
                                        active: active!, recovered: recovered.truncated)
        writer.cut = cut
        if let path = options.headRecordPath {
            writer.headFile = try HeadRecordFile(path: path, head: writer.head, previous: recorded, fsync: options.fsync,
                                                 recordNow: !acceptingLoss)
        }
        return writer
    }

    /// Throws `.lostEvents` unless the log holds `head` (a batch ending at that seq with that hash).
    static func requireHolds(directory: String, _ head: LogHead, path: String) throws {
        let (check, end) = try EventLogReader.check(directory: directory, holds: head)
        switch check {
        case .holds: return
        case .endsBefore:
            throw LogError(code: .lostEvents,
                           message: "the log ends at seq \(end.seq) but seq \(head.seq) was acknowledged (head \(head), recorded in \(path)): "
                               + "acknowledged events are missing (cut off, a segment deleted, or an older copy restored)",
                           seq: end.seq)
        case .differs:
            throw LogError(code: .lostEvents,
                           message: "the log's history differs at seq \(head.seq) from the acknowledged head \(head) (recorded in \(path)); "
                               + "the log ends at \(end): it was replaced by another copy",
                           seq: head.seq)
        }
    }

    private init(directory: String, options: LogOptions, lock: FileLock, active: SegmentIndex,
                 recovered: String?) throws {
        self.directory = directory
        self.options = options
        self.lock = lock
        self.index = active
        self.recoveredTail = recovered
        self.head = LogHead(seq: active.lastSeq, hash: active.lastChain)
        let path = directory + "/" + active.name
        fd = try SegmentFile.openRegular(path, name: active.name, flags: O_RDWR)
    }

    deinit { close() }

    /// Records the head in the head record and syncs it now, or throws why it cannot: a repair
    /// says its loss is recorded only once the evidence names the head after it (an append
    /// whose head record failed still succeeds, and the evidence kept naming the lost head).
    public func recordHeadDurably() throws {
        if let failure { throw failure }
        guard let headFile else { return }
        try headFile.record(head)
        try headFile.sync()
    }

    /// Releases the lock and the file. Further appends throw.
    public func close() {
        headFile?.close()
        headFile = nil
        if fd >= 0 { Sys.close(fd) }
        fd = -1
        lock = nil
        if failure == nil { failure = LogError(code: .writerFailed, message: "the log writer is closed") }
    }

    /// Appends `payloads` as one batch with the next seqs and returns once it is durable
    /// (written and fdatasynced). Each payload is one JSON line without '\n'.
    ///
    /// Throws `.invalidArgument` (empty batch, empty payload, a '\n' inside), `.tooLarge`
    /// (over 1,000,000 events or 256 MiB), `.diskFull`/`.io` when the disk refuses: then nothing
    /// of the batch is acknowledged and the segment is cut back to the last acknowledged batch.
    @discardableResult
    public func append(_ payloads: [[UInt8]]) throws -> BatchInfo {
        if let failure { throw failure }
        let plainLength = try Self.validate(payloads)
        buildPlain(payloads, length: plainLength)
        return try write(plain, count: payloads.count)
    }

    /// Appends a batch given as its JSON Lines: `count` non-empty lines, each followed by '\n'
    /// (what `append(_:)` joins its payloads into; a caller that encodes events can write them
    /// straight into one buffer). Same durability and errors as `append(_:)`.
    @discardableResult
    public func append(lines: [UInt8], count: Int) throws -> BatchInfo {
        if let failure { throw failure }
        guard count > 0 else {
            throw LogError(code: .invalidArgument, message: "cannot append an empty batch: pass at least one event")
        }
        guard count <= Int(BatchHeader.maxCount) else {
            throw LogError(code: .tooLarge, message: "a batch holds at most 1,000,000 events, got \(count): split it")
        }
        guard lines.count <= Int(BatchHeader.maxUncompressed) else {
            throw LogError(code: .tooLarge, message: "a batch holds at most 256 MiB of events: split it")
        }
        if let bad = lines.withUnsafeBytes({ Self.firstBadLine($0, count: count) }) {
            throw LogError(code: .invalidArgument,
                           message: "event \(bad) of the batch is empty or contains a '\\n': each event must be one non-empty line")
        }
        return try write(lines, count: count)
    }

    /// The index of the first line that is empty, or `count` when there are more or fewer
    /// lines than `count` (or the last is not ended); nil when the lines are as they must be.
    static func firstBadLine(_ p: UnsafeRawBufferPointer, count: Int) -> Int? {
        guard let base = p.baseAddress, p.count > 0 else { return 0 }
        var start = 0
        var line = 0
        while start < p.count, let hit = memchr(base + start, 10, p.count - start) {
            let end = UnsafeRawPointer(hit) - base
            if end == start || line >= count { return min(line, count) }
            line += 1
            start = end + 1
        }
        return start == p.count && line == count ? nil : min(line, count)
    }

    private func write(_ plain: [UInt8], count: Int) throws -> BatchInfo {
        if index.length > 0 && index.length >= UInt64(options.segmentBytes) { try roll() }
        let header = compressBatch(plain, count: UInt32(count))
        let offset = index.length
        let total = BatchHeader.frameSize + Int(header.compressedLength)
        do {
            try frame.withUnsafeBytes { try Sys.pwriteAll(fd, $0.baseAddress!, total, at: offset, path: segmentPath) }
            if options.fsync { try Sys.fdatasync(fd, path: segmentPath) }
        } catch let error as SyscallError {
            throw rollBack(error, to: offset)
        }
        index.add(header, at: offset)
        head = LogHead(seq: header.lastSeq, hash: header.chainHash)
        if let headFile {
            // The batch is durable and acknowledged whatever happens here; evidence that lags
            // behind the log is never a false alarm, but the writer stops until reopened.
            do { try headFile.record(head) } catch {
                failure = LogError(code: .writerFailed,
                                   message: "could not record the head in \(headFile.path) (\(error)); reopen the log to recover",
                                   segment: index.name, seq: head.seq)
            }
        }
        return BatchInfo(firstSeq: header.firstSeq, count: header.count, chainHash: header.chainHash,
                         segment: index.name, offset: offset, compressedLength: header.compressedLength,
                         uncompressedLength: header.uncompressedLength, version: header.version)
    }

    /// Checks the batch bounds before any work; returns the JSON Lines length.
    private static func validate(_ payloads: [[UInt8]]) throws -> Int {
        guard !payloads.isEmpty else {
            throw LogError(code: .invalidArgument, message: "cannot append an empty batch: pass at least one event")
        }
        guard payloads.count <= Int(BatchHeader.maxCount) else {
            throw LogError(code: .tooLarge, message: "a batch holds at most 1,000,000 events, got \(payloads.count): split it")
        }
        var length = 0
        for (i, payload) in payloads.enumerated() {
            let hasNewline = payload.withUnsafeBytes { $0.isEmpty || memchr($0.baseAddress!, 10, $0.count) != nil }
            if hasNewline {
                throw LogError(code: .invalidArgument,
                               message: "event \(i) of the batch is empty or contains a '\\n': each event must be one non-empty line")
            }
            length += payload.count + 1
            if length > Int(BatchHeader.maxUncompressed) {
                throw LogError(code: .tooLarge, message: "a batch holds at most 256 MiB of events: split it")
            }
        }
        return length
    }

    private func buildPlain(_ payloads: [[UInt8]], length: Int) {
        plain.removeAll(keepingCapacity: true)
        plain.reserveCapacity(length)
        for payload in payloads {
            plain.append(contentsOf: payload)
            plain.append(10)
        }
    }

    /// Compresses `plain` into `frame` after room for the header, then writes the header. The
    /// chain hash (SHA-256 over the plain bytes) is computed beside the compression, on a
    /// second core, for batches of `SideBySide.minimumBytes` or more.
    private func compressBatch(_ plain: [UInt8], count: UInt32) -> BatchHeader {
        let needed = BatchHeader.frameSize + LZ4.compressBound(plain.count)
        if frame.count < needed { frame = [UInt8](repeating: 0, count: needed) }
        let previous = head.hash, firstSeq = head.seq + 1
        var compressedLength = 0, crc: UInt32 = 0, chain: [UInt8] = []
        plain.withUnsafeBytes { source in
            frame.withUnsafeMutableBytes { destination in
                let body = UnsafeMutableRawBufferPointer(rebasing: destination[BatchHeader.frameSize...])
                let compress = {
                    compressedLength = LZ4.compress(source, into: body)
                    crc = crc32c(UnsafeRawBufferPointer(rebasing: body[..<compressedLength]))
                }
                let hash = {
                    chain = ChainHash.next(previous: previous, version: BatchHeader.currentVersion, firstSeq: firstSeq,
                                           count: count, content: source)
                }
                if source.count >= SideBySide.minimumBytes {
                    SideBySide.run(compress, hash)
                } else {
                    compress()
                    hash()
                }
            }
        }
        let header = BatchHeader(firstSeq: firstSeq, count: count, compressedLength: UInt32(compressedLength),
                                 uncompressedLength: UInt64(plain.count), chainHash: chain, payloadCRC: crc)
        frame.withUnsafeMutableBytes { header.encode(into: $0.baseAddress!) }
        return header
    }

    /// After a failed write or sync: cut the segment back to the last acknowledged batch so no
    /// reader can ever accept the half-written one. A failed fdatasync leaves the page cache in
    /// an unknown state, so the writer then refuses further appends until reopened (recovery).
    private func rollBack(_ error: SyscallError, to offset: UInt64) -> LogError {
        let translated = LogError.from(error, appendingTo: index.name, acknowledged: head.seq)
        let truncated = (try? Sys.ftruncate(fd, offset, path: segmentPath)) != nil
        if error.operation != "pwrite" || !truncated {
            failure = LogError(code: .writerFailed,
                               message: "an earlier append failed (\(translated.message)); reopen the log to recover",
                               segment: index.name, seq: head.seq)
        }
        return translated
    }

    /// Seals the active segment (writes its index file) and starts `<next seq>.seg`.
    /// If anything fails before the switch, the new (empty) file is removed again so that the
    /// next append can retry the roll once the fault is gone.
    private func roll() throws {
        let name = SegmentName.make(head.seq + 1)
        try Self.createSegment(directory: directory, name: name, fsync: options.fsync)
        let path = directory + "/" + name
        let newFD: Int32
        do {
            newFD = try SegmentFile.openRegular(path, name: name, flags: O_RDWR)
        } catch {
            Sys.unlink(path)
            throw error
        }
        _ = IndexFile.refresh(index, directory: directory)
        Sys.close(fd)
        fd = newFD
        index = SegmentIndex(name: name, firstSeq: head.seq + 1, previousChain: head.hash)
    }

    /// Creates an empty segment (0600) and makes its directory entry durable. When the directory
    /// fsync fails the file is removed again (it holds nothing), so a retry can create it.
    private static func createSegment(directory: String, name: String, fsync: Bool) throws {
        try translating(segment: name) {
            let path = directory + "/" + name
            let fd = try Sys.open(path, O_RDWR | O_CREAT | O_EXCL, mode: 0o600)
            StoreOwnership.adopt(fd: fd, path: path)
            Sys.close(fd)
            do {
                if fsync { try Sys.fsyncDirectory(directory) }
            } catch {
                Sys.unlink(path)
                throw error
            }
        }
    }
}
