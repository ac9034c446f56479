/// Where a head recorded as acknowledged (outside the log) stands against the log.
public enum HeadCheck: Sendable, Equatable {
    /// The log has a batch ending at exactly that seq with that chain hash.
    case holds
    /// The log ends before the recorded seq.
    case endsBefore
    /// The log reaches the recorded seq, but its chain there differs: another history.
    case differs
}

extension EventLogReader {
    /// Checks that the log in `directory` holds `expected` (a batch ending at exactly that seq
    /// with that chain hash) and returns the log's head. A missing directory is an empty log.
    /// Reads headers only, writes nothing (not even a derived index file). A torn tail is the
    /// end of the log, so an acknowledged batch cut in half counts as missing.
    public static func check(directory: String, holds expected: LogHead) throws -> (HeadCheck, LogHead) {
        do {
            return try checkHeaders(directory: directory, holds: expected)
        } catch let e as LogError where e.isCorruption {
            throw damageBefore(e, directory: directory) ?? e
        }
    }

    /// Damage found at a batch's header, as a headers-only read finds it: a block of damage
    /// (zeros, say) that begins in the payload of the batch before reaches that header too, and
    /// the batch before is the first one damaged. It was not named: the advice to export what
    /// precedes the damage named a seq that export could not reach (hostile test). Reads the
    /// headers before it in its segment and the previous batch's payload; nil when that reads.
    static func damageBefore(_ e: LogError, directory: String) -> LogError? {
        guard let segment = e.segment, let offset = e.offset, offset > 0,
              let file = try? SegmentFile(directory: directory, name: segment),
              let extent = try? BatchIO.Extent(file: file, isLast: false) else { return nil }
        let io = BatchIO()
        var at: UInt64 = 0
        var previous: (offset: UInt64, header: BatchHeader)?
        while at < offset {
            guard case .batch(let header)? = try? io.probe(extent, at: at, seq: 0) else { return nil }
            previous = (at, header)
            at += header.batchLength
        }
        guard at == offset, let previous else { return nil }
        do {
            _ = try io.readPayload(extent, previous.header, at: previous.offset)
            return nil
        } catch let damage as LogError where damage.code == .payloadChecksum {
            return corruption(.payloadChecksum, segment, previous.offset, previous.header.firstSeq,
                              "payload CRC32C mismatch, and the damage reaches on into the next batch's header")
        } catch {
            return nil
        }
    }

    static func checkHeaders(directory: String, holds expected: LogHead) throws -> (HeadCheck, LogHead) {
        guard Sys.isDirectory(directory) else { return (expected.seq == 0 ? .holds : .endsBefore, .empty) }
        let reader = try EventLogReader(directory: directory)
        reader.rewritesIndexFiles = false
        try reader.checkSegmentsJoin()
        let head = try reader.head()
        if expected.seq == 0 { return (.holds, head) }
        if head.seq < expected.seq { return (.endsBefore, head) }
        guard let batch = try reader.batch(containing: expected.seq), batch.lastSeq == expected.seq,
              batch.chainHash == expected.hash else { return (.differs, head) }
        return (.holds, head)
    }
}

extension EventLogReader {
    /// Checks that the segments follow each other: the first starts at seq 1, each next one at
    /// the seq after the previous one's last, with the previous one's chain hash before its first
    /// entry. Sealed segments come from their (validated) index files, so this reads a few KiB
    /// per segment. A deleted segment anywhere throws `.sequenceGap`.
    func checkSegmentsJoin() throws {
        let list = try segments()
        var lastSeq: UInt64 = 0
        var lastChain = ChainHash.zero
        for i in list.indices {
            try Recovery.checkContinuity(list[i].name, firstSeq: list[i].firstSeq, after: lastSeq)
            let (index, _) = try segmentIndex(i, of: list)
            if let first = index.entries.first, first.previousChain != lastChain {
                throw corruption(.brokenChain, list[i].name, 0, list[i].firstSeq,
                                 "the chain before this segment does not continue the previous segment's")
            }
            lastSeq = index.lastSeq
            lastChain = index.lastChain
        }
    }
}
