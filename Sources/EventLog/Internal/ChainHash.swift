import Crypto

/// chain_n = SHA-256(chain_(n-1) [32] || u16 version || u64 first_seq || u32 count
///                   || u64 uncompressed_length || SHA-256(JSON Lines) [32]), integers little-endian.
enum ChainHash {
    static let zero = [UInt8](repeating: 0, count: 32)

    static func next(previous: [UInt8], version: UInt16, firstSeq: UInt64, count: UInt32,
                     content: UnsafeRawBufferPointer) -> [UInt8] {
        var contentHasher = SHA256()
        contentHasher.update(bufferPointer: content)
        let contentDigest = contentHasher.finalize()

        var fields = [UInt8](repeating: 0, count: 2 + 8 + 4 + 8)
        fields.withUnsafeMutableBytes { p in
            p.storeBytes(of: version.littleEndian, toByteOffset: 0, as: UInt16.self)
            p.storeBytes(of: firstSeq.littleEndian, toByteOffset: 2, as: UInt64.self)
            p.storeBytes(of: count.littleEndian, toByteOffset: 10, as: UInt32.self)
            p.storeBytes(of: UInt64(content.count).littleEndian, toByteOffset: 14, as: UInt64.self)
        }
        var hasher = SHA256()
        previous.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        fields.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        contentDigest.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return hasher.finalize().withUnsafeBytes { Array($0) }
    }
}
