/// Settings of a writer.
public struct LogOptions: Sendable {
    /// Roll to a new segment when the active one has reached this many bytes (checked before an append).
    public var segmentBytes: Int = 64 << 20
    /// fdatasync every batch and fsync the directory after creating files. Only tests of pure
    /// logic should turn this off: without it an acknowledged append may be lost on power failure.
    public var fsync: Bool = true
    /// Open also decodes every sealed batch and checks the whole hash chain (slow on a big log).
    /// By default open checks header and payload CRCs everywhere and the chain of the active segment;
    /// `EventLogReader.verify` always checks everything.
    public var verifyChainOnOpen: Bool = false
    /// Where the writer keeps evidence of the acknowledged head outside the log (`HeadRecord`),
    /// rewritten after every durable batch; nil for none. With it, `open` refuses a log that
    /// ends before (or differs at) the recorded head, before changing anything.
    public var headRecordPath: String?

    public init(segmentBytes: Int = 64 << 20, fsync: Bool = true, verifyChainOnOpen: Bool = false,
                headRecordPath: String? = nil) {
        self.segmentBytes = segmentBytes
        self.fsync = fsync
        self.verifyChainOnOpen = verifyChainOnOpen
        self.headRecordPath = headRecordPath
    }
}

/// What a batch header says, and where the batch is.
public struct BatchInfo: Sendable, Equatable {
    public var firstSeq: UInt64
    public var count: UInt32
    public var lastSeq: UInt64 { firstSeq + UInt64(count) - 1 }
    /// This batch's chain hash (32 bytes).
    public var chainHash: [UInt8]
    /// Segment file name, e.g. `00000000000000000001.seg`.
    public var segment: String
    /// Byte offset of the batch (its skippable frame) in the segment.
    public var offset: UInt64
    /// Bytes of the LZ4 frame after the 80-byte skippable frame.
    public var compressedLength: UInt32
    /// Bytes of JSON Lines (payloads plus one '\n' each).
    public var uncompressedLength: UInt64
    /// Format version of the batch.
    public var version: UInt16

    /// Where the next batch starts in the same segment.
    public var endOffset: UInt64 { offset + UInt64(BatchHeader.frameSize) + UInt64(compressedLength) }
}

/// One event read from the log.
public struct LogRecord: Sendable {
    public var seq: UInt64
    /// The payload bytes without the trailing '\n'. A slice of the batch's buffer (no copy).
    public var payload: ArraySlice<UInt8>
    /// The batch the event came from.
    public var batch: BatchInfo

    public init(seq: UInt64, payload: ArraySlice<UInt8>, batch: BatchInfo) {
        self.seq = seq
        self.payload = payload
        self.batch = batch
    }
}

/// The outcome of `EventLogReader.verify`.
public struct VerifyReport: Sendable {
    /// False when any corruption was found (then `error` says where); a torn tail is only a warning.
    public var ok: Bool
    /// The last intact batch's seq and chain hash.
    public var head: LogHead
    public var events: UInt64
    public var batches: UInt64
    public var segments: Int
    /// Torn tails, rebuilt index files and other things worth knowing that are not corruption.
    public var warnings: [String]
    public var error: LogError?
}
