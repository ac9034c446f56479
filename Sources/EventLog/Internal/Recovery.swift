#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What opening for write found: the active segment's index (nil when the log has no segment).
struct RecoveredLog {
    var active: SegmentIndex?
    /// Set when a torn tail was cut off: what it was and where.
    var truncated: String?
}

enum Recovery {
    /// Checks the segments (sealed ones through their validated index file when it checks out,
    /// else header and payload CRCs, seqs, names; the active segment fully, chain included; every
    /// segment fully with `verifyChainOnOpen`), refreshes the index files of sealed segments it
    /// scanned, and truncates a torn tail of the active segment. Corruption throws.
    static func run(directory: String, options: LogOptions) throws -> RecoveredLog {
        let io = BatchIO()
        let segments = try SegmentName.list(directory)
        var lastSeq: UInt64 = 0
        var lastChain = ChainHash.zero
        var result = RecoveredLog()
        for (i, segment) in segments.enumerated() {
            let isLast = i == segments.count - 1
            try checkContinuity(segment.name, firstSeq: segment.firstSeq, after: lastSeq)
            let file = try SegmentFile(directory: directory, name: segment.name)
            let extent = try BatchIO.Extent(file: file, isLast: isLast)
            // A sealed segment is never modified: its index file, once it checks out (CRC, the
            // segment's exact size, headers at its first and last entries, a header walk from
            // the last entry to the end landing on the stored last seq and chain hash, and the
            // chain hash before it matching the previous segment), stands for a scan. So open
            // reads a few KiB per sealed segment instead of all of it; `verify` reads everything.
            if !isLast && !options.verifyChainOnOpen,
               let loaded = IndexFile.load(directory: directory, extent: extent, io: io),
               loaded.entries.first?.previousChain == lastChain {
                lastSeq = loaded.lastSeq
                lastChain = loaded.lastChain
                continue
            }
            let level: ScanLevel = isLast || options.verifyChainOnOpen ? .full : .checksums
            let start = SegmentIndex(name: segment.name, firstSeq: segment.firstSeq, previousChain: lastChain)
            let (index, torn) = try io.scan(extent, continuing: start, level: level)
            if isLast {
                if let torn {
                    try truncate(file.path, name: segment.name, to: index.length, fsync: options.fsync)
                    result.truncated = "\(segment.name): removed \(torn) (never acknowledged)"
                }
                result.active = index
            } else if !index.isEmpty {
                _ = IndexFile.refresh(index, directory: directory)
            }
            lastSeq = index.lastSeq
            lastChain = index.lastChain
        }
        return result
    }

    static func checkContinuity(_ name: String, firstSeq: UInt64, after lastSeq: UInt64) throws {
        guard firstSeq == lastSeq + 1 else {
            // Named by the first missing seq: "export what precedes" it is what can be saved.
            throw corruption(.sequenceGap, name, 0, lastSeq + 1,
                             "segment starts at seq \(firstSeq) but the log before it ends at seq \(lastSeq)")
        }
    }

    private static func truncate(_ path: String, name: String, to length: UInt64, fsync: Bool) throws {
        try translating(segment: name) {
            let fd = try Sys.open(path, O_RDWR)
            defer { Sys.close(fd) }
            try Sys.ftruncate(fd, length, path: path)
            if fsync { try Sys.fsync(fd, path: path) }
        }
    }
}
