/// Reads a log directory. Any number of readers, in any process, may read while the writer
/// appends; readers never take the lock and never change segments (they may rewrite a missing
/// or stale index file, which is derived data).
///
/// Not thread-safe: use one reader per thread.
public final class EventLogReader {
    let directory: String
    let io = BatchIO()
    /// Segment indexes by name. Sealed ones are complete; the active one grows by re-scanning.
    private var cache: [String: SegmentIndex] = [:]
    private var sealed: Set<String> = []
    /// Segments whose index file disagreed with the segment: rebuilt from a header scan.
    private var distrusted: Set<String> = []
    /// False: a missing or stale index file is rebuilt in memory only (for checks that must
    /// write nothing, and stores the user cannot write).
    public var rewritesIndexFiles = true

    /// Opens the log in `directory` for reading; throws `.notFound` when there is none.
    public init(directory: String) throws {
        guard Sys.isDirectory(directory) else {
            throw LogError(code: .notFound, message: "no event log at \(directory): check the store path")
        }
        self.directory = directory
    }

    typealias SegmentList = [(name: String, firstSeq: UInt64)]

    func segments() throws -> SegmentList { try SegmentName.list(directory) }

    /// The index of segment `i` of `list`, up to date. For the last segment, also whether it
    /// ends in a torn (unfinished) batch.
    func segmentIndex(_ i: Int, of list: SegmentList) throws -> (SegmentIndex, String?) {
        let name = list[i].name
        if sealed.contains(name), let cached = cache[name] { return (cached, nil) }
        let isLast = i == list.count - 1
        let extent = try BatchIO.Extent(file: SegmentFile(directory: directory, name: name), isLast: isLast)
        if !isLast, let cached = cache[name], cached.length == extent.size {
            sealed.insert(name)
            return (cached, nil)
        }
        if !isLast, cache[name] == nil, !distrusted.contains(name),
           let loaded = IndexFile.load(directory: directory, extent: extent, io: io) {
            cache[name] = loaded
            sealed.insert(name)
            return (loaded, nil)
        }
        let start: SegmentIndex
        if let cached = cache[name] {
            start = cached
        } else {
            let previous = i == 0 ? ChainHash.zero : try segmentIndex(i - 1, of: list).0.lastChain
            try Recovery.checkContinuity(name, firstSeq: list[i].firstSeq,
                                         after: i == 0 ? 0 : try segmentIndex(i - 1, of: list).0.lastSeq)
            start = SegmentIndex(name: name, firstSeq: list[i].firstSeq, previousChain: previous)
        }
        let (index, torn) = try io.scan(extent, continuing: start, level: .headers)
        cache[name] = index
        if !isLast {
            sealed.insert(name)
            if rewritesIndexFiles { _ = IndexFile.refresh(index, directory: directory) }
        }
        return (index, torn)
    }

    /// Forgets what is cached about a segment (its index file disagreed with the segment); the
    /// next look rebuilds it from the segment's headers and rewrites the file.
    func invalidate(_ name: String) {
        cache[name] = nil
        sealed.remove(name)
        distrusted.insert(name)
    }

    /// The last complete batch's seq and chain hash. A torn tail is just the end of the log.
    public func head() throws -> LogHead {
        let list = try segments()
        guard !list.isEmpty else { return .empty }
        let (index, _) = try segmentIndex(list.count - 1, of: list)
        return LogHead(seq: index.lastSeq, hash: index.lastChain)
    }

    /// The batch holding `seq`, found through the sparse index (headers only); nil past the end.
    public func batch(containing seq: UInt64) throws -> BatchInfo? {
        guard let found = try locate(seq) else { return nil }
        return BatchInfo(found.header, segment: found.segment, offset: found.offset)
    }

    struct Location {
        var segment: String
        var offset: UInt64
        var header: BatchHeader
        var previousChain: [UInt8]
    }

    /// Finds the batch holding `seq`: the segment by name, the nearest index entry, then a walk
    /// over headers (payloads skipped). Rebuilds a segment's index once if an entry is stale.
    func locate(_ seq: UInt64) throws -> Location? {
        let list = try segments()
        guard seq >= 1, let i = list.lastIndex(where: { $0.firstSeq <= seq }) else { return nil }
        for attempt in 0..<2 {
            let (index, _) = try segmentIndex(i, of: list)
            guard seq <= index.lastSeq, let k = index.entryPosition(before: seq) else { return nil }
            let entry = index.entries[k]
            let extent = try BatchIO.Extent(file: SegmentFile(directory: directory, name: index.name),
                                            isLast: i == list.count - 1)
            if try entryIsTrusted(k, of: index, segment: i, in: list, extent),
               let found = try walk(extent, from: entry, to: seq) { return found }
            if attempt == 0 { invalidate(index.name) }
        }
        throw LogError(code: .io, message: "cannot find seq \(seq) in \(list[i].name) although its index says it is there; run verify",
                       segment: list[i].name, seq: seq)
    }

    /// An entry's stored previous chain hash seeds the chain check of a cursor, so it is checked
    /// before use: entry 0 against the previous segment's last chain, entry k against the header
    /// chain met walking from entry k-1 (headers are CRC-checked; at most one entry interval).
    /// A forged or stale index then costs a rebuild, never a false "damaged log".
    private func entryIsTrusted(_ k: Int, of index: SegmentIndex, segment i: Int, in list: SegmentList,
                                _ extent: BatchIO.Extent) throws -> Bool {
        let entry = index.entries[k]
        if k == 0 {
            let previous = i == 0 ? ChainHash.zero : try segmentIndex(i - 1, of: list).0.lastChain
            return entry.offset == 0 && entry.firstSeq == index.firstSeq && entry.previousChain == previous
        }
        guard let found = try walk(extent, from: index.entries[k - 1], to: entry.firstSeq) else { return false }
        return found.offset == entry.offset && found.header.firstSeq == entry.firstSeq
            && found.previousChain == entry.previousChain
    }

    private func walk(_ extent: BatchIO.Extent, from entry: IndexEntry, to seq: UInt64) throws -> Location? {
        var offset = entry.offset
        var previous = entry.previousChain
        var expected = entry.firstSeq
        while true {
            // An index entry may point anywhere: a bad header here means "rebuild the index"
            // (the rebuild's scan reports real damage with the strict rules).
            guard case .batch(let header)? = try? io.probe(extent, at: offset, seq: expected),
                  header.firstSeq == expected else { return nil }
            if header.lastSeq >= seq {
                return Location(segment: extent.file.name, offset: offset, header: header, previousChain: previous)
            }
            previous = header.chainHash
            expected = header.lastSeq + 1
            offset += header.batchLength
        }
    }

    /// A cursor over events from `seq` (1 = the start) through `through` (inclusive; nil = to
    /// the end). It starts at the batch holding `seq` without decoding anything before it.
    ///
    /// When the segment holding `seq` cannot be indexed (a damaged batch header in it), the
    /// cursor starts at that segment's first batch instead and checks each batch as it goes: the
    /// events before the damage are still read (what a salvage needs), and the damage is thrown
    /// where it is met.
    public func cursor(from seq: UInt64 = 1, through: UInt64? = nil) throws -> LogCursor {
        let start = max(seq, 1)
        let located: Location?
        do { located = try locate(start) } catch let error as LogError where Self.damagedHeaders.contains(error.code) {
            // Only for damage inside the segment holding `seq`: a gap between segments keeps its
            // own, clearer error.
            let list = try segments()
            guard let i = list.lastIndex(where: { $0.firstSeq <= start }), error.segment == list[i].name else { throw error }
            let previous = i == 0 ? ChainHash.zero : try segmentIndex(i - 1, of: list).0.lastChain
            return try LogCursor(reader: self, segment: list[i].name, offset: 0, nextSeq: list[i].firstSeq,
                                 previousChain: previous, skipBefore: start, through: through)
        }
        if let found = located {
            return try LogCursor(reader: self, segment: found.segment, offset: found.offset,
                                 nextSeq: found.header.firstSeq, previousChain: found.previousChain,
                                 skipBefore: start, through: through)
        }
        // Past the end (or an empty log): wait at the end for events to arrive.
        let list = try segments()
        guard !list.isEmpty else {
            return try LogCursor(reader: self, segment: nil, offset: 0, nextSeq: 1, previousChain: ChainHash.zero,
                                 skipBefore: start, through: through)
        }
        let (index, _) = try segmentIndex(list.count - 1, of: list)
        return try LogCursor(reader: self, segment: index.name, offset: index.length, nextSeq: index.lastSeq + 1,
                             previousChain: index.lastChain, skipBefore: start, through: through)
    }
}

extension EventLogReader {
    /// The damage that keeps a segment from being indexed, from which a cursor falls back to
    /// reading the segment from its start (`cursor(from:through:)`).
    static let damagedHeaders: Set<LogError.Code> = [.badMagic, .headerChecksum, .malformedBatch, .tornTail, .unsupportedVersion]
}

extension BatchInfo {
    init(_ header: BatchHeader, segment: String, offset: UInt64) {
        self.init(firstSeq: header.firstSeq, count: header.count, chainHash: header.chainHash, segment: segment,
                  offset: offset, compressedLength: header.compressedLength,
                  uncompressedLength: header.uncompressedLength, version: header.version)
    }
}
