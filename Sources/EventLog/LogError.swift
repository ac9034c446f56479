/// An error from the event log: what went wrong, where, and what to do about it.
///
/// `code` says which kind of failure it is (compare with `LogError.Code` constants);
/// `message` is a sentence for a human; `segment`, `offset` and `seq` locate it on disk.
public struct LogError: Error, CustomStringConvertible, Sendable {
    /// The kind of failure. A struct around a private enum so that new codes can be added
    /// without breaking callers that switch over them.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Kind: String, Sendable {
            case tornTail, badMagic, headerChecksum, payloadChecksum, brokenChain, decompression
            case malformedBatch, unsupportedVersion, sequenceGap, segmentName, headMismatch, lostEvents
            case locked, notFound, io, diskFull, tooLarge, invalidArgument, writerFailed
        }
        fileprivate let kind: Kind
        fileprivate init(_ kind: Kind) { self.kind = kind }

        /// A sealed segment (or the middle of the log) ends inside a batch.
        public static let tornTail = Code(.tornTail)
        /// A batch does not start with the LZ4 skippable-frame magic and "SLGB".
        public static let badMagic = Code(.badMagic)
        /// The batch header's CRC32C does not match.
        public static let headerChecksum = Code(.headerChecksum)
        /// The compressed payload's CRC32C does not match.
        public static let payloadChecksum = Code(.payloadChecksum)
        /// A batch's chain hash does not follow from the previous batch and its content.
        public static let brokenChain = Code(.brokenChain)
        /// The LZ4 frame could not be decoded, or decoded to the wrong size.
        public static let decompression = Code(.decompression)
        /// Header fields are impossible (absurd lengths, count, flags) or the lines do not match the count.
        public static let malformedBatch = Code(.malformedBatch)
        /// A batch was written by a newer format version.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// Sequence numbers have a gap or overlap between batches or segments.
        public static let sequenceGap = Code(.sequenceGap)
        /// A segment's file name disagrees with its first batch.
        public static let segmentName = Code(.segmentName)
        /// `verify(expectHead:)`: the log does not contain the expected head.
        public static let headMismatch = Code(.headMismatch)
        /// The log ends before (or differs at) a head recorded as acknowledged outside it: acknowledged
        /// events are missing (cut off, a segment deleted, an older copy restored).
        public static let lostEvents = Code(.lostEvents)
        /// Another writer holds the lock.
        public static let locked = Code(.locked)
        /// The log directory or a file does not exist.
        public static let notFound = Code(.notFound)
        /// Any other operating-system failure.
        public static let io = Code(.io)
        /// No room for a write: the disk is full (ENOSPC), a quota (EDQUOT) or a file-size
        /// limit (EFBIG, `ulimit -f`) was reached.
        public static let diskFull = Code(.diskFull)
        /// A batch exceeds 1,000,000 events or 256 MiB.
        public static let tooLarge = Code(.tooLarge)
        /// The caller passed something the log cannot store.
        public static let invalidArgument = Code(.invalidArgument)
        /// An earlier append failed in a way that needs a reopen to recover.
        public static let writerFailed = Code(.writerFailed)

        public var description: String { kind.rawValue }
    }

    public var code: Code
    /// What happened and what to do, for a human.
    public var message: String
    /// Segment file name (e.g. `00000000000000000001.seg`), when the error is about one.
    public var segment: String?
    /// Byte offset of the batch inside `segment`.
    public var offset: UInt64?
    /// First seq of the batch concerned (or the seq involved).
    public var seq: UInt64?
    /// The `errno` behind an operating-system failure.
    public var errno: Int32?
    /// The failing system call or operation, e.g. `fdatasync`.
    public var operation: String?

    public init(code: Code, message: String, segment: String? = nil, offset: UInt64? = nil,
                seq: UInt64? = nil, errno: Int32? = nil, operation: String? = nil) {
        self.code = code
        self.message = message
        self.segment = segment
        self.offset = offset
        self.seq = seq
        self.errno = errno
        self.operation = operation
    }

    public var description: String { message }

    /// True for failures that mean bytes on disk are wrong (as opposed to I/O, locking, arguments).
    public var isCorruption: Bool {
        switch code.kind {
        case .tornTail, .badMagic, .headerChecksum, .payloadChecksum, .brokenChain, .decompression,
             .malformedBatch, .sequenceGap, .segmentName, .headMismatch, .lostEvents:
            return true
        default:
            return false
        }
    }
}
