import CChecksum

/// The 80-byte skippable frame that starts every batch (see docs/FORMAT.md).
///
///     +0  u32 0x184D2A50   +4 u32 72   +8 "SLGB"   +12 u16 version   +14 u16 flags
///     +16 u64 first_seq    +24 u32 count   +28 u32 compressed_length   +32 u64 uncompressed_length
///     +40 [32] chain_hash  +72 u32 payload_crc32c   +76 u32 header_crc32c (of +8..<+76)
struct BatchHeader: Equatable {
    static let frameSize = 80
    static let skippableMagic: UInt32 = 0x184D_2A50
    static let headerSize: UInt32 = 72
    static let magic: UInt32 = 0x4247_4C53  // "SLGB" read as little-endian u32
    static let currentVersion: UInt16 = 1
    static let maxCount: UInt32 = 1_000_000
    static let maxUncompressed: UInt64 = 256 << 20
    /// LZ4's worst case for 256 MiB is a few hundred bytes over; 1 MiB of slack is plenty and
    /// still stops a 4 GiB length from being believed.
    static let maxCompressed: UInt32 = UInt32(maxUncompressed) + (1 << 20)
    /// An LZ4 sequence turns each extra match-length byte into at most 255 output bytes.
    static let maxExpansion: UInt64 = 256

    var version: UInt16 = currentVersion
    var flags: UInt16 = 0
    var firstSeq: UInt64
    var count: UInt32
    var compressedLength: UInt32
    var uncompressedLength: UInt64
    var chainHash: [UInt8]
    var payloadCRC: UInt32

    var lastSeq: UInt64 { firstSeq + UInt64(count) - 1 }
    var batchLength: UInt64 { UInt64(Self.frameSize) + UInt64(compressedLength) }

    /// Writes the 80 bytes at `p`, header CRC included.
    func encode(into p: UnsafeMutableRawPointer) {
        precondition(chainHash.count == 32 && count >= 1 && count <= Self.maxCount)
        p.storeBytes(of: Self.skippableMagic.littleEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: Self.headerSize.littleEndian, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: Self.magic.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: version.littleEndian, toByteOffset: 12, as: UInt16.self)
        p.storeBytes(of: flags.littleEndian, toByteOffset: 14, as: UInt16.self)
        p.storeBytes(of: firstSeq.littleEndian, toByteOffset: 16, as: UInt64.self)
        p.storeBytes(of: count.littleEndian, toByteOffset: 24, as: UInt32.self)
        p.storeBytes(of: compressedLength.littleEndian, toByteOffset: 28, as: UInt32.self)
        p.storeBytes(of: uncompressedLength.littleEndian, toByteOffset: 32, as: UInt64.self)
        chainHash.withUnsafeBytes { (p + 40).copyMemory(from: $0.baseAddress!, byteCount: 32) }
        p.storeBytes(of: payloadCRC.littleEndian, toByteOffset: 72, as: UInt32.self)
        let crc = syncledger_crc32c(0, p + 8, 68)
        p.storeBytes(of: crc.littleEndian, toByteOffset: 76, as: UInt32.self)
    }

    enum Problem: Error, Equatable {
        case badMagic(String)
        case checksum
        case newerVersion(UInt16)
        case malformed(String)
    }

    /// Decodes and checks 80 bytes: magics, header CRC, version, and that every field is sane,
    /// so that nothing is allocated from a length that could not have been written by us.
    static func decode(_ p: UnsafeRawPointer) -> Result<BatchHeader, Problem> {
        func u16(_ o: Int) -> UInt16 { UInt16(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }

        let outer = u32(0)
        guard outer == skippableMagic else {
            return .failure(.badMagic("expected LZ4 skippable frame magic 0x184D2A50, found 0x\(String(outer, radix: 16))"))
        }
        guard u32(8) == magic else { return .failure(.badMagic("missing batch header magic \"SLGB\"")) }
        let size = u32(4)
        let version = u16(12)
        // Every version keeps the magics, the version at +12 and the header CRC as the last 4 bytes
        // of the skippable frame. A newer header of the same size is CRC-checked first so that a
        // flipped version field reads as corruption, not as "newer SyncLedger".
        if size == headerSize {
            let stored = u32(76)
            guard syncledger_crc32c(0, p + 8, 68) == stored else { return .failure(.checksum) }
        }
        if version > currentVersion { return .failure(.newerVersion(version)) }
        guard size == headerSize else { return .failure(.badMagic("skippable frame size \(size), expected 72")) }
        guard version == currentVersion else { return .failure(.malformed("format version 0 is not valid")) }
        let header = BatchHeader(
            version: version, flags: u16(14), firstSeq: u64(16), count: u32(24),
            compressedLength: u32(28), uncompressedLength: u64(32),
            chainHash: Array(UnsafeRawBufferPointer(start: p + 40, count: 32)), payloadCRC: u32(72))
        if let why = header.insanity() { return .failure(.malformed(why)) }
        return .success(header)
    }

    /// Why the fields cannot be right, or nil.
    private func insanity() -> String? {
        if flags != 0 { return "reserved flags are \(flags), expected 0" }
        if firstSeq == 0 || firstSeq > UInt64.max / 2 { return "first seq \(firstSeq) is out of range" }
        if count == 0 || count > Self.maxCount { return "event count \(count) is out of range 1...1000000" }
        if uncompressedLength > Self.maxUncompressed {
            return "uncompressed length \(uncompressedLength) exceeds 256 MiB"
        }
        if uncompressedLength < 2 * UInt64(count) { return "uncompressed length \(uncompressedLength) is too small for \(count) events" }
        if compressedLength > Self.maxCompressed || compressedLength < 8 {
            return "compressed length \(compressedLength) is out of range"
        }
        // LZ4 expands at most ~255:1, so a larger ratio cannot decode; refusing it here keeps a
        // forged length (with recomputed CRCs) from making a reader allocate up to 256 MiB.
        if uncompressedLength > UInt64(compressedLength) * Self.maxExpansion {
            return "uncompressed length \(uncompressedLength) is more than LZ4 can expand \(compressedLength) bytes to"
        }
        return nil
    }
}

func crc32c(_ buffer: UnsafeRawBufferPointer) -> UInt32 {
    guard let base = buffer.baseAddress else { return 0 }
    return syncledger_crc32c(0, base, buffer.count)
}
