#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Iterates events in seq order, checking header CRC, payload CRC and the chain as it goes
/// (from the start of the log, or from the stored chain hash of the batch before its start).
/// Holds at most one decompressed batch. At the end of the log `next()` returns nil; calling it
/// again later returns events appended since. Not thread-safe.
public final class LogCursor {
    private let reader: EventLogReader
    private let io = BatchIO()
    private var file: SegmentFile?
    private var extent: BatchIO.Extent?
    private var offset: UInt64
    private var nextSeq: UInt64
    private var previousChain: [UInt8]
    private let skipBefore: UInt64
    private let through: UInt64?
    // The current batch: its content, where the next line starts, and that line's seq.
    private var content: [UInt8] = []
    private var position = 0
    private var lineSeq: UInt64 = 0
    private var current: BatchInfo?
    /// The chain check of the batch `loadNextBatch(chainAside: true)` loaded, until handed out.
    private var pendingCheck: ChainCheck?

    init(reader: EventLogReader, segment: String?, offset: UInt64, nextSeq: UInt64, previousChain: [UInt8],
         skipBefore: UInt64, through: UInt64?) throws {
        self.reader = reader
        self.offset = offset
        self.nextSeq = nextSeq
        self.previousChain = previousChain
        self.skipBefore = skipBefore
        self.through = through
        if let segment { file = try SegmentFile(directory: reader.directory, name: segment) }
    }

    /// The next event, or nil at the end of the log (or past `through`). Throws `LogError` on
    /// corruption, naming segment, offset and seq.
    public func next() throws -> LogRecord? {
        while true {
            if let batch = current, position < content.count {
                let seq = lineSeq
                let start = position
                let end = LogRecord.lineEnd(in: content, from: start)
                position = end + 1
                lineSeq += 1
                if seq < skipBefore { continue }
                if let through, seq > through { return nil }
                return LogRecord(seq: seq, payload: content[start..<end], batch: batch)
            }
            guard try loadNextBatch() else { return nil }
        }
    }

    /// The next whole decompressed batch (JSON Lines, each event followed by '\n'), for fast
    /// replay. It is the batch holding the next unread event and may hold events before the
    /// cursor's start seq or after `through` (see `BatchInfo.firstSeq`/`lastSeq`). Events of a
    /// batch partly read with `next()` are not returned again.
    public func nextBatch() throws -> (BatchInfo, [UInt8])? {
        if let batch = current, position < content.count, let result = finishCurrent(batch) { return result }
        guard try loadNextBatch(), let batch = current else { return nil }
        if let through, batch.firstSeq > through { return nil }
        position = content.count
        return (batch, content)
    }

    /// `nextBatch()`, with the batch's hash chain link checked on another core: the batch
    /// comes back with its `ChainCheck`, whose `wait()` throws what `nextBatch()` would have
    /// thrown for it. Nothing of the content may be used before `wait()` returned. Every other
    /// check (CRCs, the LZ4 frame, the line count, seqs) is done, and fails, here as before. For a
    /// reader that keeps a core for this (`ReadAheadCursor`): the chain's SHA-256 is most of a
    /// batch's check.
    public func nextBatchCheckingChainAside() throws -> (BatchInfo, [UInt8], ChainCheck)? {
        if let batch = current, position < content.count, let result = finishCurrent(batch) {
            // Loaded by `next()`, which checked all of it.
            return (result.0, result.1, .passed)
        }
        guard try loadNextBatch(chainAside: true), let batch = current else { return nil }
        // Taken as a whole here, never given out by `next()` or as `.passed` above.
        position = content.count
        guard let check = pendingCheck else { preconditionFailure("a batch loaded with its chain aside has a check") }
        pendingCheck = nil
        if let through, batch.firstSeq > through { return nil }
        return (batch, content, check)
    }

    /// Every batch from the cursor's position to the end of the log (or `through`), as
    /// `nextBatch()` gives them, with each batch's chain link checked on Dispatch's threads while
    /// the next ones are read, at most `window` of them ahead. `body` sees a batch only after its
    /// link passed, in log order, and what is thrown is the first damage in log order, after
    /// `body` saw every batch before it: what a loop over `nextBatch()` does, on two cores.
    /// `body` returns false to stop (the cursor may then have read up to `window` batches past
    /// the last one `body` saw).
    public func forEachBatchCheckingChainAside(window: Int = 3, _ body: (BatchInfo, [UInt8]) throws -> Bool) throws {
        var ahead = ChainWindow<(BatchInfo, [UInt8])>()
        let hand: ((BatchInfo, [UInt8])) throws -> Bool = { try body($0.0, $0.1) }
        do {
            while let (info, content, check) = try nextBatchCheckingChainAside() {
                ahead.append((info, content), check: check)
                guard try ahead.settle(keeping: window, hand) else { return }
            }
        } catch {
            // A broken link among the batches read before the one that failed comes first.
            guard try ahead.settle(keeping: 0, hand) else { return }
            throw error
        }
        _ = try ahead.settle(keeping: 0, hand)
    }

    private func finishCurrent(_ batch: BatchInfo) -> (BatchInfo, [UInt8])? {
        if let through, lineSeq > through { return nil }
        let rest = Array(content[position...])
        position = content.count
        return (batch, rest)
    }

    /// Reads, checks and decodes the batch at the cursor's position, moving to the next segment
    /// at the end of one. False at the end of the log.
    private func loadNextBatch(chainAside: Bool = false) throws -> Bool {
        if let through, nextSeq > through { return false }
        while true {
            guard let file else {
                guard try openSegment(named: SegmentName.make(nextSeq)) else { return false }
                continue
            }
            if extent == nil || offset >= extent!.size {
                extent = try BatchIO.Extent(file: file, isLast: try !laterSegmentExists(file.name))
            }
            let extent = extent!
            switch try io.probe(extent, at: offset, seq: nextSeq) {
            case .batch(let header):
                if try load(header, extent, chainAside: chainAside) { return true }
                if try !sealedNow(extent) { return false }  // zero-filled tail: end for now
            case .end:
                let moveOn = try !extent.isLast || laterSegmentExists(file.name)
                if moveOn {
                    guard try openSegment(named: SegmentName.make(nextSeq)) else {
                        throw corruption(.sequenceGap, file.name, offset, nextSeq,
                                         "no segment starts at seq \(nextSeq) although later segments exist")
                    }
                    continue
                }
                return false
            case .torn:
                if try !sealedNow(extent) { return false }  // the writer may be mid-append
            }
        }
    }

    /// After a torn-looking tail: if the segment has since been sealed, look again with the
    /// strict rules for sealed segments (a real tear there is corruption). False when it is
    /// still the last segment.
    private func sealedNow(_ old: BatchIO.Extent) throws -> Bool {
        guard try laterSegmentExists(old.file.name) else {
            extent = nil  // re-stat next time: the writer may have finished the batch
            return false
        }
        extent = try BatchIO.Extent(file: old.file, isLast: false)
        return true
    }

    private func load(_ header: BatchHeader, _ extent: BatchIO.Extent, chainAside: Bool) throws -> Bool {
        let name = extent.file.name
        if header.firstSeq != nextSeq {
            let code: LogError.Code = offset == 0 ? .segmentName : .sequenceGap
            // Named by the seq that should be here: "export what precedes" it is what can be saved.
            throw corruption(code, name, offset, nextSeq, "batch starts at seq \(header.firstSeq), expected \(nextSeq)")
        }
        guard try io.readPayload(extent, header, at: offset) else { return false }
        content = []  // drop the previous batch before decoding the next: at most one in memory
        if chainAside {
            content = try io.decompress(header, segment: name, at: offset)
            pendingCheck = ChainCheck.start(ChainLink(header, previous: previousChain, segment: name, offset: offset), content)
        } else {
            content = try io.decode(header, segment: name, at: offset, previous: previousChain)
        }
        current = BatchInfo(header, segment: name, offset: offset)
        position = 0
        lineSeq = header.firstSeq
        previousChain = header.chainHash
        nextSeq = header.lastSeq + 1
        offset += header.batchLength
        return true
    }

    private func openSegment(named name: String) throws -> Bool {
        guard try reader.segments().contains(where: { $0.name == name }) else { return false }
        file = try SegmentFile(directory: reader.directory, name: name)
        extent = nil
        offset = 0
        return true
    }

    private func laterSegmentExists(_ name: String) throws -> Bool {
        let firstSeq = SegmentName.parse(name) ?? 0
        return try reader.segments().contains { $0.firstSeq > firstSeq }
    }
}

extension LogRecord {
    /// Where the line of a decompressed batch that starts at `start` ends: its '\n' (every
    /// line of a checked batch has one), else the end of `content`.
    @inlinable
    public static func lineEnd(in content: [UInt8], from start: Int) -> Int {
        content.withUnsafeBytes { p -> Int in
            guard start < p.count, let hit = memchr(p.baseAddress! + start, 10, p.count - start) else { return p.count }
            return UnsafeRawPointer(hit) - p.baseAddress!
        }
    }
}
