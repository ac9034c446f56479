/// One sparse index entry: a batch that starts at `offset` with `firstSeq`, and the chain hash
/// of the batch before it (so a cursor can start there without reading anything earlier).
struct IndexEntry: Equatable {
    var firstSeq: UInt64
    var offset: UInt64
    var previousChain: [UInt8]
}

/// What is known about one segment from its headers: sparse entries and where it ends.
struct SegmentIndex: Equatable {
    /// A new entry when a batch starts at least this far past the previous entry, so a seek
    /// reads at most ~64 KiB of headers-and-skips after the entry.
    static let entryInterval: UInt64 = 64 << 10

    var name: String
    var firstSeq: UInt64
    var entries: [IndexEntry] = []
    /// Bytes of complete batches: where the next batch goes.
    var length: UInt64 = 0
    /// `firstSeq - 1` while empty.
    var lastSeq: UInt64
    /// Chain hash of the last batch; the chain before this segment while empty.
    var lastChain: [UInt8]
    var batches: UInt64 = 0

    init(name: String, firstSeq: UInt64, previousChain: [UInt8]) {
        self.name = name
        self.firstSeq = firstSeq
        self.lastSeq = firstSeq - 1
        self.lastChain = previousChain
    }

    var events: UInt64 { lastSeq + 1 - firstSeq }
    var isEmpty: Bool { batches == 0 }

    mutating func add(_ header: BatchHeader, at offset: UInt64) {
        if entries.isEmpty || offset - entries[entries.count - 1].offset >= Self.entryInterval {
            entries.append(IndexEntry(firstSeq: header.firstSeq, offset: offset, previousChain: lastChain))
        }
        lastSeq = header.lastSeq
        lastChain = header.chainHash
        length = offset + header.batchLength
        batches += 1
    }

    /// The last entry whose batch starts at or before `seq`.
    func entry(before seq: UInt64) -> IndexEntry? {
        entryPosition(before: seq).map { entries[$0] }
    }

    /// The position in `entries` of the last entry whose batch starts at or before `seq`.
    func entryPosition(before seq: UInt64) -> Int? {
        var low = 0
        var high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].firstSeq <= seq { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : low - 1
    }
}

enum ScanLevel {
    /// Headers only (payloads skipped), except a last batch that may be a zero-filled tail.
    case headers
    /// Headers and payload CRCs.
    case checksums
    /// Everything: CRCs, LZ4 decode, line count, chain.
    case full
    /// As `full`, with each batch's chain link checked on another core: `onBatch` gets its
    /// `ChainCheck`, and must wait for it before trusting the batch.
    case fullChainAside
}

extension BatchIO {
    /// Walks the batches of a segment from where `index` ends, extending it. Returns the
    /// extended index and, for the last segment, a description of a torn tail if there is one.
    /// `onBatch` sees each batch (with its decoded content at level `.full`, and with its chain
    /// check at `.fullChainAside`).
    func scan(_ extent: Extent, continuing start: SegmentIndex, level: ScanLevel,
              onBatch: (BatchHeader, UInt64, [UInt8]?, ChainCheck?) throws -> Void = { _, _, _, _ in }) throws -> (SegmentIndex, String?) {
        var index = start
        while true {
            let offset = index.length
            let expected = index.lastSeq + 1
            let header: BatchHeader
            switch try probe(extent, at: offset, seq: expected) {
            case .end: return (index, nil)
            case .torn(let why): return (index, why)
            case .batch(let h): header = h
            }
            if header.firstSeq != expected {
                if offset == 0 {
                    // Named by the seq that should be here: "export what precedes" it is what can be saved.
                    throw corruption(.segmentName, extent.file.name, offset, expected,
                                     "the file name says the segment starts at seq \(expected) but its first batch starts at seq \(header.firstSeq)")
                }
                throw corruption(.sequenceGap, extent.file.name, offset, expected,
                                 "batch starts at seq \(header.firstSeq), expected \(expected) (gap or overlap)")
            }
            let mayBeTorn = extent.isLast && extent.zeroStart + 4 < offset + header.batchLength
            if level != .headers || mayBeTorn {
                guard try readPayload(extent, header, at: offset) else {
                    return (index, "a zero-filled batch at offset \(offset)")
                }
            }
            var content: [UInt8]?
            var check: ChainCheck?
            switch level {
            case .headers, .checksums: break
            case .full:
                content = try decode(header, segment: extent.file.name, at: offset, previous: index.lastChain)
            case .fullChainAside:
                let bytes = try decompress(header, segment: extent.file.name, at: offset)
                check = ChainCheck.start(ChainLink(header, previous: index.lastChain, segment: extent.file.name, offset: offset), bytes)
                content = bytes
            }
            try onBatch(header, offset, content, check)
            index.add(header, at: offset)
        }
    }
}
