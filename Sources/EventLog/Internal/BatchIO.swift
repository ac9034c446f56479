#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What is at an offset of a segment.
enum Probe {
    case batch(BatchHeader)
    /// Nothing more: the offset is the end of the file.
    case end
    /// The rest of the (last) segment is an unfinished batch: short or zero-filled.
    case torn(String)
}

/// Reads and checks batches, reusing its buffers. One per scan or cursor; not thread-safe.
final class BatchIO {
    private var headerBuffer = [UInt8](repeating: 0, count: BatchHeader.frameSize)
    private(set) var compressed: [UInt8] = []
    private let decoder = LZ4.Decoder()

    /// Per-scan view of one segment: its size when the scan began and, for the last segment,
    /// where its trailing zeros begin (computed once; a torn tail can only be there).
    struct Extent {
        let file: SegmentFile
        let size: UInt64
        let isLast: Bool
        let zeroStart: UInt64

        init(file: SegmentFile, isLast: Bool) throws {
            self.file = file
            self.isLast = isLast
            size = try file.size()
            zeroStart = isLast ? try file.zeroSuffixStart(size: size, floor: 0) : size
        }
    }

    /// Reads and checks the header at `offset`. `seq` is the seq expected there (for messages).
    func probe(_ extent: Extent, at offset: UInt64, seq: UInt64) throws -> Probe {
        if offset >= extent.size { return .end }
        let remaining = extent.size - offset
        let name = extent.file.name
        if remaining < UInt64(BatchHeader.frameSize) {
            if extent.isLast { return .torn("a \(remaining)-byte unfinished batch header at offset \(offset)") }
            throw corruption(.tornTail, name, offset, seq,
                             "sealed segment ends inside a batch header (\(remaining) of 80 bytes)")
        }
        let n = try headerBuffer.withUnsafeMutableBytes { (p) throws -> Int in
            try extent.file.read(into: p.baseAddress!, count: BatchHeader.frameSize, at: offset)
        }
        if n < BatchHeader.frameSize {
            if extent.isLast { return .torn("the file shrank while reading offset \(offset)") }
            throw corruption(.tornTail, name, offset, seq, "segment shrank while being read")
        }
        let decoded = headerBuffer.withUnsafeBytes { BatchHeader.decode($0.baseAddress!) }
        switch decoded {
        case .success(let header):
            if offset + header.batchLength > extent.size {
                if extent.isLast {
                    return .torn("a short batch at offset \(offset): \(remaining) of \(header.batchLength) bytes")
                }
                throw corruption(.tornTail, name, offset, header.firstSeq,
                                 "sealed segment ends inside a batch (\(remaining) of \(header.batchLength) bytes)")
            }
            return .batch(header)
        case .failure(let problem):
            if extent.isLast && extent.zeroStart < offset + UInt64(BatchHeader.frameSize) {
                return .torn("a zero-filled batch header at offset \(offset)")
            }
            throw headerError(problem, name, offset, seq)
        }
    }

    /// Reads the compressed payload of `header` and checks its CRC. Returns false when the batch
    /// is a zero-filled torn tail of the last segment (never true of a batch we acknowledged: its
    /// LZ4 frame ends in exactly four zero bytes after a '\n').
    func readPayload(_ extent: Extent, _ header: BatchHeader, at offset: UInt64) throws -> Bool {
        let length = Int(header.compressedLength)
        if compressed.count < length { compressed = [UInt8](repeating: 0, count: length) }
        let start = offset + UInt64(BatchHeader.frameSize)
        let (n, crc) = try compressed.withUnsafeMutableBytes { (p) throws -> (Int, UInt32) in
            let n = try extent.file.read(into: p.baseAddress!, count: length, at: start)
            return (n, crc32c(UnsafeRawBufferPointer(rebasing: p[..<n])))
        }
        if n < length {
            if extent.isLast { return false }
            throw corruption(.tornTail, extent.file.name, offset, header.firstSeq, "segment shrank while being read")
        }
        if crc == header.payloadCRC { return true }
        if extent.isLast && extent.zeroStart + 4 < offset + header.batchLength { return false }
        throw corruption(.payloadChecksum, extent.file.name, offset, header.firstSeq,
                         "payload CRC32C mismatch (stored \(hex32(header.payloadCRC)), computed \(hex32(crc)))")
    }

    /// Decodes the payload read by `readPayload`, checks the line count and the chain from
    /// `previous`. Returns the JSON Lines in a new array (the caller keeps at most one).
    func decode(_ header: BatchHeader, segment: String, at offset: UInt64, previous: [UInt8]) throws -> [UInt8] {
        let content = try decompress(header, segment: segment, at: offset)
        if let failure = ChainLink(header, previous: previous, segment: segment, offset: offset).failure(content) {
            throw failure
        }
        return content
    }

    /// `decode` without the chain: the LZ4 frame and the line count. The caller checks the
    /// batch's `ChainLink` before it uses a byte of the content (`ChainCheck` does it on another core).
    func decompress(_ header: BatchHeader, segment: String, at offset: UInt64) throws -> [UInt8] {
        let size = Int(header.uncompressedLength)
        var failure: String?
        let content = [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            compressed.withUnsafeBytes { source in
                failure = decoder.decode(UnsafeRawBufferPointer(rebasing: source[..<Int(header.compressedLength)]),
                                         into: UnsafeMutableRawBufferPointer(buffer))
            }
            // On failure the bytes are garbage but never read: we throw below.
            initialized = size
        }
        if let failure {
            throw corruption(.decompression, segment, offset, header.firstSeq, "LZ4 frame does not decode: \(failure)")
        }
        let lines = content.withUnsafeBytes { countLines($0) }
        guard lines == header.count, content.last == 10 else {
            throw corruption(.malformedBatch, segment, offset, header.firstSeq,
                             "payload has \(lines) lines, header says \(header.count) events")
        }
        return content
    }
}

/// One batch's link in the hash chain: what its content must hash to, with the chain hash of the
/// batch before it (as that batch's header stores it, itself checked against its own content).
/// Each link depends only on headers and its own content, so links can be checked in any order
/// and on any thread; a reader reports the first failure in log order.
struct ChainLink: Sendable {
    let version: UInt16
    let firstSeq: UInt64
    let count: UInt32
    let chainHash: [UInt8]
    let previous: [UInt8]
    let segment: String
    let offset: UInt64

    init(_ header: BatchHeader, previous: [UInt8], segment: String, offset: UInt64) {
        version = header.version
        firstSeq = header.firstSeq
        count = header.count
        chainHash = header.chainHash
        self.previous = previous
        self.segment = segment
        self.offset = offset
    }

    /// nil when `content` (the batch's JSON Lines) hashes to the header's chain hash.
    func failure(_ content: [UInt8]) -> LogError? {
        let chain = content.withUnsafeBytes {
            ChainHash.next(previous: previous, version: version, firstSeq: firstSeq, count: count, content: $0)
        }
        guard chain != chainHash else { return nil }
        return corruption(.brokenChain, segment, offset, firstSeq,
                          "chain hash does not follow from the previous batch and this batch's content")
    }
}

/// Counts '\n' bytes with memchr (fast on long lines).
func countLines(_ buffer: UnsafeRawBufferPointer) -> Int {
    guard var cursor = buffer.baseAddress else { return 0 }
    let end = cursor + buffer.count
    var lines = 0
    while cursor < end, let hit = memchr(cursor, 10, end - cursor) {
        lines += 1
        cursor = UnsafeRawPointer(hit) + 1
    }
    return lines
}

func hex32(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}

/// A corruption error that names segment, offset and seq and says what to do.
func corruption(_ code: LogError.Code, _ segment: String, _ offset: UInt64, _ seq: UInt64, _ what: String) -> LogError {
    LogError(code: code,
             message: "segment \(segment) offset \(offset) (seq \(seq)): \(what). The log is damaged here; "
                + "nothing was changed. Restore this segment from a backup or export what precedes seq \(seq).",
             segment: segment, offset: offset, seq: seq)
}

func headerError(_ problem: BatchHeader.Problem, _ segment: String, _ offset: UInt64, _ seq: UInt64) -> LogError {
    switch problem {
    case .badMagic(let why): return corruption(.badMagic, segment, offset, seq, why)
    case .checksum: return corruption(.headerChecksum, segment, offset, seq, "batch header CRC32C mismatch")
    case .malformed(let why): return corruption(.malformedBatch, segment, offset, seq, why)
    case .newerVersion(let version):
        return LogError(code: .unsupportedVersion,
                        message: "segment \(segment) offset \(offset) was written by a newer SyncLedger "
                            + "(format version \(version)); upgrade SyncLedger to read it",
                        segment: segment, offset: offset, seq: seq)
    }
}
