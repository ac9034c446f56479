#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Paths

/// `index/<first seq, 20 digits>.idx`: the sparse index of one sealed segment. Derived data:
/// written when a segment is sealed (or rebuilt), trusted only after checks, rebuilt when missing
/// or stale. Layout in docs/FORMAT.md.
enum IndexFile {
    static let magic: UInt32 = 0x5849_4C53  // "SLIX" little-endian
    static let version: UInt16 = 1
    static let headerSize = 80
    static let entrySize = 48

    static func path(directory: String, segment: String) -> String {
        directory + "/index/" + segment.dropLast(SegmentName.suffix.count) + ".idx"
    }

    static func encode(_ index: SegmentIndex) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: headerSize + entrySize * index.entries.count + 4)
        bytes.withUnsafeMutableBytes { p in
            p.storeBytes(of: magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: version.littleEndian, toByteOffset: 4, as: UInt16.self)
            p.storeBytes(of: index.length.littleEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: index.firstSeq.littleEndian, toByteOffset: 16, as: UInt64.self)
            p.storeBytes(of: index.lastSeq.littleEndian, toByteOffset: 24, as: UInt64.self)
            p.storeBytes(of: index.batches.littleEndian, toByteOffset: 32, as: UInt64.self)
            copy(index.lastChain, to: p, at: 40)
            p.storeBytes(of: UInt32(index.entries.count).littleEndian, toByteOffset: 72, as: UInt32.self)
            p.storeBytes(of: UInt32(SegmentIndex.entryInterval).littleEndian, toByteOffset: 76, as: UInt32.self)
            var at = headerSize
            for entry in index.entries {
                p.storeBytes(of: entry.firstSeq.littleEndian, toByteOffset: at, as: UInt64.self)
                p.storeBytes(of: entry.offset.littleEndian, toByteOffset: at + 8, as: UInt64.self)
                copy(entry.previousChain, to: p, at: at + 16)
                at += entrySize
            }
            let crc = crc32c(UnsafeRawBufferPointer(rebasing: p[..<at]))
            p.storeBytes(of: crc.littleEndian, toByteOffset: at, as: UInt32.self)
        }
        return bytes
    }

    /// Decodes an index file; nil when it is not one we wrote for `segment` (garbled, truncated).
    static func decode(_ bytes: [UInt8], segment: String, firstSeq: UInt64) -> SegmentIndex? {
        guard bytes.count >= headerSize + 4 else { return nil }
        return bytes.withUnsafeBytes { p -> SegmentIndex? in
            func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
            func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
            let count = Int(u32(72))
            guard u32(0) == magic, p.loadUnaligned(fromByteOffset: 4, as: UInt16.self) == version.littleEndian,
                  bytes.count == headerSize + count * entrySize + 4,
                  crc32c(UnsafeRawBufferPointer(rebasing: p[..<(bytes.count - 4)])) == u32(bytes.count - 4),
                  u64(16) == firstSeq, u64(24) >= firstSeq - 1 else { return nil }
            var index = SegmentIndex(name: segment, firstSeq: firstSeq, previousChain: Array(p[40..<72]))
            index.length = u64(8)
            index.lastSeq = u64(24)
            index.batches = u64(32)
            index.entries.reserveCapacity(count)
            for i in 0..<count {
                let at = headerSize + i * entrySize
                index.entries.append(IndexEntry(firstSeq: u64(at), offset: u64(at + 8),
                                                previousChain: Array(p[(at + 16)..<(at + 48)])))
            }
            return index
        }
    }

    /// Reads the index file of a sealed segment and checks it against the segment: same length,
    /// entries that point at real batch headers with the seq they claim, and a walk over the
    /// headers from the last entry to the end that lands on the stored last seq and chain hash
    /// (the next segment's continuity and chain start from them). nil when it must be rebuilt.
    static func load(directory: String, extent: BatchIO.Extent, io: BatchIO) -> SegmentIndex? {
        let file = path(directory: directory, segment: extent.file.name)
        guard let size = try? Sys.fileSize(path: file), size <= 256 << 20,
              let fd = try? Sys.openRegular(file, O_RDONLY) else { return nil }
        defer { Sys.close(fd) }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        let n = bytes.withUnsafeMutableBytes { (try? Sys.preadFull(fd, $0.baseAddress!, $0.count, at: 0, path: file)) ?? -1 }
        guard n == Int(size), let index = decode(bytes, segment: extent.file.name, firstSeq: extent.file.firstSeq),
              index.length == extent.size, index.batches > 0, index.entries.first?.offset == 0 else { return nil }
        for entry in [index.entries.first!, index.entries.last!] where !entryIsValid(entry, extent: extent, io: io) {
            return nil
        }
        guard let tail = walkToEnd(from: index.entries.last!, extent: extent, io: io),
              tail.firstSeq <= index.lastSeq, tail.lastSeq == index.lastSeq, tail.chainHash == index.lastChain else { return nil }
        return index
    }

    /// The last batch header of the segment, found by walking headers (payloads skipped) from
    /// `entry`; nil when the walk does not end exactly at the end of the segment. At most one
    /// entry interval (~64 KiB of batches) is walked.
    static func walkToEnd(from entry: IndexEntry, extent: BatchIO.Extent, io: BatchIO) -> BatchHeader? {
        var offset = entry.offset
        var expected = entry.firstSeq
        var last: BatchHeader?
        while true {
            guard let probe = try? io.probe(extent, at: offset, seq: expected) else { return nil }
            switch probe {
            case .end: return offset == extent.size ? last : nil
            case .torn: return nil
            case .batch(let header):
                guard header.firstSeq == expected else { return nil }
                last = header
                offset += header.batchLength
                expected = header.lastSeq + 1
            }
        }
    }

    /// An entry is trusted when the header at its offset is a valid batch starting at its seq.
    static func entryIsValid(_ entry: IndexEntry, extent: BatchIO.Extent, io: BatchIO) -> Bool {
        guard let probe = try? io.probe(extent, at: entry.offset, seq: entry.firstSeq),
              case .batch(let header) = probe else { return false }
        return header.firstSeq == entry.firstSeq
    }

    /// Writes the index file atomically (temporary file + rename). Not fsynced: it is derived
    /// and validated on every load, so losing it to a crash only costs a rebuild.
    static func write(_ index: SegmentIndex, directory: String) throws {
        let final = path(directory: directory, segment: index.name)
        let temporary = final + ".tmp.\(getpid())"
        let bytes = encode(index)
        let fd = try Sys.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: 0o600)
        StoreOwnership.adopt(fd: fd, path: temporary)
        do {
            // Closed exactly once, before the rename: a second close after a failed rename could
            // close a descriptor another thread has since been given.
            defer { Sys.close(fd) }
            try bytes.withUnsafeBytes { try Sys.pwriteAll(fd, $0.baseAddress!, $0.count, at: 0, path: temporary) }
        } catch {
            Sys.unlink(temporary)
            throw error
        }
        do {
            try Sys.rename(temporary, final)
        } catch {
            Sys.unlink(temporary)
            throw error
        }
    }

    /// Writes unless an identical file is already there; errors are ignored (derived data).
    static func refresh(_ index: SegmentIndex, directory: String) -> Bool {
        let file = path(directory: directory, segment: index.name)
        if let size = try? Sys.fileSize(path: file), size == UInt64(encode(index).count),
           let fd = try? Sys.openRegular(file, O_RDONLY) {
            defer { Sys.close(fd) }
            var bytes = [UInt8](repeating: 0, count: Int(size))
            let n = bytes.withUnsafeMutableBytes { (try? Sys.preadFull(fd, $0.baseAddress!, $0.count, at: 0, path: file)) ?? -1 }
            if n == Int(size) && bytes == encode(index) { return false }
        }
        try? Sys.makeDirectories(directory + "/index")
        try? write(index, directory: directory)
        return true
    }

    private static func copy(_ bytes: [UInt8], to p: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.withUnsafeBytes { (p.baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }
}
