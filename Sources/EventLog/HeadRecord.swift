#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Paths

/// Evidence of the acknowledged head kept outside the log (the store's `state/head`): the writer
/// rewrites it after every durable batch, so a log that ends before it (cut, a segment deleted,
/// the whole log gone, an older copy restored) is detected instead of read as a clean, shorter
/// history. Layout in docs/FORMAT.md ("Head evidence").
///
/// A fixed 4096-byte file with two 64-byte slots (offsets 0 and 2048, in different sectors).
/// Writes alternate between them with a growing generation, so a torn write damages at most the
/// slot being written and the other still holds the previous head. A reader takes the valid slot
/// with the highest generation.
public enum HeadRecord {
    static let magic: UInt32 = 0x4448_4C53  // "SLHD" little-endian
    static let version: UInt16 = 1
    static let fileSize = 4096
    static let slotSize = 64
    static let slotOffsets: [UInt64] = [0, 2048]

    /// One decoded slot: the head and the generation it was written with.
    public struct Entry: Equatable, Sendable {
        public var generation: UInt64
        public var head: LogHead
    }

    static func encode(_ entry: Entry) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: slotSize)
        bytes.withUnsafeMutableBytes { p in
            p.storeBytes(of: magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: version.littleEndian, toByteOffset: 4, as: UInt16.self)
            p.storeBytes(of: entry.generation.littleEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: entry.head.seq.littleEndian, toByteOffset: 16, as: UInt64.self)
            for (i, b) in entry.head.hash.enumerated() { p[24 + i] = b }
            let crc = crc32c(UnsafeRawBufferPointer(rebasing: p[0..<56]))
            p.storeBytes(of: crc.littleEndian, toByteOffset: 56, as: UInt32.self)
        }
        return bytes
    }

    static func decode(_ bytes: ArraySlice<UInt8>) -> Entry? {
        guard bytes.count >= 60 else { return nil }
        return Array(bytes).withUnsafeBytes { p -> Entry? in
            func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
            guard UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) == magic,
                  UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) == version,
                  crc32c(UnsafeRawBufferPointer(rebasing: p[0..<56]))
                    == UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 56, as: UInt32.self))
            else { return nil }
            return Entry(generation: u64(8), head: LogHead(seq: u64(16), hash: Array(p[24..<56])))
        }
    }

    /// The recorded head, nil when there is no file (a store from before head evidence, or a
    /// new one). Throws when the file exists but no slot is valid (it was damaged or replaced):
    /// that is not the same as "nothing was ever acknowledged".
    public static func read(path: String) throws -> Entry? {
        guard let size = try translating(segment: nil, { try Sys.fileSize(path: path) }) else { return nil }
        let fd = try translating { try Sys.openRegular(path, O_RDONLY) }
        defer { Sys.close(fd) }
        let length = Int(min(size, UInt64(fileSize)))
        var bytes = [UInt8](repeating: 0, count: length)
        let n = try bytes.withUnsafeMutableBytes { p in
            try translating { try Sys.preadFull(fd, p.baseAddress!, length, at: 0, path: path) }
        }
        var best: Entry?
        for offset in slotOffsets where Int(offset) + slotSize <= n {
            if let e = decode(bytes[Int(offset)..<(Int(offset) + slotSize)]), e.generation >= (best?.generation ?? 0) {
                best = e
            }
        }
        guard let best else {
            throw LogError(code: .malformedBatch,
                           message: "the head evidence \(path) is damaged (no valid record): the head the log had reached is unknown; "
                               + "if the log is known to be complete, `syncledger repair --accept-loss REASON` records that and rewrites it")
        }
        return best
    }
}

/// The open head-evidence file of a writer: rewritten (one slot, then fdatasync) after each
/// durable batch.
final class HeadRecordFile {
    let path: String
    private var fd: Int32
    private var generation: UInt64
    private let fsync: Bool

    /// Opens (creating it when missing) and records `head` in it. A new file is written whole
    /// (4096 bytes, the first record in place) under a temporary name and renamed, so a crash
    /// leaves either no file or a complete one; later rewrites never change its size, so the
    /// fdatasync of a record has no metadata to write.
    /// `recordNow` false keeps an existing record as it is, readable or damaged, until the first
    /// `record` (a writer opened to accept a loss: the lost head, or the damage, stays the
    /// evidence until the loss is appended; a damaged one was rewritten: cold review).
    init(path: String, head: LogHead, previous: HeadRecord.Entry?, fsync: Bool, recordNow: Bool = true) throws {
        self.path = path
        self.fsync = fsync
        generation = previous?.generation ?? 0
        fd = -1
        if (try? Sys.fileSize(path: path)) == nil {
            generation = 1
            var bytes = [UInt8](repeating: 0, count: HeadRecord.fileSize)
            let slot = HeadRecord.encode(HeadRecord.Entry(generation: generation, head: head))
            let at = Int(HeadRecord.slotOffsets[1])
            bytes.replaceSubrange(at..<(at + slot.count), with: slot)
            let temporary = path + ".tmp.\(getpid())"
            try translating {
                let tfd = try Sys.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: 0o600)
                StoreOwnership.adopt(fd: tfd, path: temporary)
                do {
                    try bytes.withUnsafeBytes { try Sys.pwriteAll(tfd, $0.baseAddress!, $0.count, at: 0, path: temporary) }
                    if fsync { try Sys.fsync(tfd, path: temporary) }
                    Sys.close(tfd)
                    try Sys.rename(temporary, path)
                } catch {
                    Sys.close(tfd)
                    Sys.unlink(temporary)
                    throw error
                }
                if fsync { try Sys.fsyncDirectory(Sys.parentDirectory(path)) }
            }
            fd = try translating { try Sys.openRegular(path, O_RDWR) }
            lastSync = monotonicSeconds()
            return
        }
        fd = try translating { try Sys.openRegular(path, O_RDWR) }
        if previous?.head != head && recordNow {
            do { try record(head) } catch {
                close()
                throw error
            }
        }
    }

    deinit { close() }

    func close() {
        try? sync()
        if fd >= 0 { Sys.close(fd) }
        fd = -1
    }

    /// How long a record may stay in the page cache only: it is fdatasynced when the last sync
    /// of the file is at least this old, and when the writer closes.
    static let syncInterval = 1.0
    private var lastSync = -Double.infinity
    private var unsynced = false

    /// Writes `head` into the slot not holding the newest record (one pwrite, in the page cache
    /// at once: a killed process never loses it), and fdatasyncs the file when the last sync is
    /// older than `syncInterval`. So a steady stream of appends pays one extra fdatasync a second
    /// instead of one per batch; after a power cut the record may lag the log by that much, which
    /// is never a false alarm (it is never ahead of the log), only a shorter reach.
    func record(_ head: LogHead) throws {
        generation += 1
        let bytes = HeadRecord.encode(HeadRecord.Entry(generation: generation, head: head))
        let offset = HeadRecord.slotOffsets[Int(generation % 2)]
        try translating {
            try bytes.withUnsafeBytes { try Sys.pwriteAll(fd, $0.baseAddress!, $0.count, at: offset, path: path) }
        }
        unsynced = true
        if fsync && monotonicSeconds() - lastSync >= Self.syncInterval { try sync() }
    }

    /// Makes the newest record durable.
    func sync() throws {
        guard unsynced, fd >= 0 else { return }
        if fsync { try translating { try Sys.fdatasync(fd, path: path) } }
        lastSync = monotonicSeconds()
        unsynced = false
    }
}
