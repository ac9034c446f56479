/// The head of the log: the last seq and its batch's chain hash. Identifies the whole history.
///
/// Printed `SEQ:<64 lowercase hex>`; an empty log is `0:` followed by 64 zeros.
public struct LogHead: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var seq: UInt64
    /// 32 bytes: the chain hash of the batch ending at `seq`.
    public var hash: [UInt8]

    public init(seq: UInt64, hash: [UInt8]) {
        precondition(hash.count == 32, "a chain hash is 32 bytes")
        self.seq = seq
        self.hash = hash
    }

    /// The head of an empty log: seq 0 and 32 zero bytes (chain_0).
    public static let empty = LogHead(seq: 0, hash: [UInt8](repeating: 0, count: 32))

    public var description: String { "\(seq):" + hexString(hash) }

    /// Parses `SEQ:HEX` (64 hex digits, either case); nil when malformed.
    public init?(parsing text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let seq = UInt64(parts[0]), parts[1].utf8.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        var iterator = parts[1].utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            guard let h = hexValue(high), let l = hexValue(low) else { return nil }
            bytes.append(h << 4 | l)
        }
        self.init(seq: seq, hash: bytes)
    }
}

/// Lowercase hex of bytes (chain hashes, SHA-256 digests).
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.underestimatedCount * 2)
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}
