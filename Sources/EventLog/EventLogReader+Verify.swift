extension EventLogReader {
    /// Checks the whole log: every header and payload CRC, every LZ4 frame, the line counts, the
    /// hash chain from chain_0, seq continuity and segment names; and the index files of sealed
    /// segments (a missing or stale one is rebuilt and reported as a warning).
    ///
    /// A torn tail of the active segment is a warning (`ok` stays true). With `expectHead`, the
    /// log must contain that head: a batch ending at exactly that seq with that chain hash.
    /// `progress` is called with the last seq of each verified batch.
    /// `inspect` sees each verified batch with its decoded JSON Lines.
    public func verify(expectHead: LogHead? = nil, progress: ((UInt64) -> Void)? = nil,
                       inspect: ((BatchInfo, [UInt8]) -> Void)? = nil) -> VerifyReport {
        var report = VerifyReport(ok: true, head: .empty, events: 0, batches: 0, segments: 0, warnings: [], error: nil)
        // A batch that is not the expected head's does not stop the read: the rest of the log is
        // verified, and "intact through" names its end (it named the batch before the mismatch,
        // as if the log were damaged there; hostile test). The mismatch stays the failure, the
        // one recorded (evidence of another history must outlive a cut of later damage: cold
        // review); damage found after it is a warning beside it.
        var mismatch: LogError?
        do {
            do {
                try verifySegments(&report, expectHead: expectHead, mismatch: &mismatch, progress: progress, inspect: inspect)
            } catch let damage as LogError where mismatch != nil {
                report.warnings.append("the log is also damaged after it: " + damage.message)
                throw mismatch!
            } catch where mismatch != nil {
                report.warnings.append("the log could not be read on after it: \(error)")
                throw mismatch!
            }
            if let mismatch { throw mismatch }
            if let expected = expectHead, expected.seq == 0, expected != .empty {
                throw LogError(code: .headMismatch, message: "the expected head \(expected) is not valid: seq 0 has chain hash 0")
            }
            if let expected = expectHead, expected.seq > report.head.seq {
                throw LogError(code: .headMismatch,
                               message: "the log ends at seq \(report.head.seq), before the expected head \(expected): "
                                   + "events up to seq \(expected.seq) were lost or removed",
                               seq: report.head.seq)
            }
        } catch let error as LogError {
            report.ok = false
            report.error = error
        } catch {
            report.ok = false
            report.error = LogError(code: .io, message: "verify failed: \(error)")
        }
        return report
    }

    private func verifySegments(_ report: inout VerifyReport, expectHead: LogHead?, mismatch: inout LogError?,
                                progress: ((UInt64) -> Void)?, inspect: ((BatchInfo, [UInt8]) -> Void)?) throws {
        let list = try segments()
        // Every segment of the log, also when one of them fails (the count is not "verified so far").
        report.segments = list.count
        let io = BatchIO()
        // Batches read, decompressed and CRC-checked, whose chain links are being checked on
        // another core (`ChainCheck`), in log order. Each counts as verified, and is inspected,
        // only once its link has passed; a failure among them comes before any later one, and
        // nothing after the first failure counts.
        var pending = ChainWindow<(header: BatchHeader, offset: UInt64, content: [UInt8]?, segment: String)>()
        func settle(keeping kept: Int) throws {
            _ = try pending.settle(keeping: kept) { b in
                if let inspect, let content = b.content {
                    inspect(BatchInfo(b.header, segment: b.segment, offset: b.offset), content)
                }
                if let expected = expectHead, mismatch == nil {
                    do { try Self.check(expected, against: b.header, segment: b.segment, offset: b.offset) } catch let e as LogError {
                        mismatch = e
                    }
                }
                report.batches += 1
                report.events += UInt64(b.header.count)
                report.head = LogHead(seq: b.header.lastSeq, hash: b.header.chainHash)
                progress?(b.header.lastSeq)
                return true
            }
        }
        var last = SegmentIndex(name: "", firstSeq: 1, previousChain: ChainHash.zero)
        for (i, segment) in list.enumerated() {
            let isLast = i == list.count - 1
            let index: SegmentIndex, torn: String?
            do {
                try Recovery.checkContinuity(segment.name, firstSeq: segment.firstSeq, after: last.lastSeq)
                let extent = try BatchIO.Extent(file: SegmentFile(directory: directory, name: segment.name), isLast: isLast)
                let start = SegmentIndex(name: segment.name, firstSeq: segment.firstSeq, previousChain: last.lastChain)
                (index, torn) = try io.scan(extent, continuing: start, level: .fullChainAside) { header, offset, content, check in
                    pending.append((header, offset, content, segment.name), check: check, bytes: content?.count ?? 0)
                    // Three links in flight keep both cores busy while this thread reads on; fewer
                    // when batches are large (up to 256 MiB each), so that little more than one
                    // batch's worth of memory is held as before.
                    try settle(keeping: pending.bytes > Self.pendingBytesLimit ? 0 : 3)
                }
                // The segment's batches all passed before its index file is looked at.
                try settle(keeping: 0)
                if !isLast && !index.isEmpty && IndexFile.load(directory: directory, extent: extent, io: io) != index {
                    if rewritesIndexFiles { _ = IndexFile.refresh(index, directory: directory) }
                    invalidate(segment.name)
                    report.warnings.append("index for \(segment.name) was missing or stale; rebuilt")
                }
            } catch {
                // A broken link before the batch that failed here is the first damage in the log.
                try settle(keeping: 0)
                throw error
            }
            if let torn {
                report.warnings.append("torn tail in \(segment.name): \(torn); it was never acknowledged "
                    + "and the writer removes it when it next opens")
            }
            last = index
        }
    }

    /// Decompressed bytes `verify` holds while their chain links are checked, beyond which it waits
    /// for them before reading on.
    static let pendingBytesLimit = 32 << 20

    private static func check(_ expected: LogHead, against header: BatchHeader, segment: String, offset: UInt64) throws {
        if header.lastSeq == expected.seq && header.chainHash != expected.hash {
            throw LogError(code: .headMismatch,
                           message: "segment \(segment) offset \(offset) (seq \(header.lastSeq)): the log diverges from "
                               + "the expected head \(expected); its chain hash there is \(hexString(header.chainHash)). "
                               + "History up to seq \(expected.seq) is not the one that was published",
                           segment: segment, offset: offset, seq: header.firstSeq)
        }
        if header.firstSeq <= expected.seq && expected.seq < header.lastSeq {
            throw LogError(code: .headMismatch,
                           message: "segment \(segment) offset \(offset): the expected head seq \(expected.seq) falls inside "
                               + "batch \(header.firstSeq)...\(header.lastSeq), so this log never had that head",
                           segment: segment, offset: offset, seq: header.firstSeq)
        }
    }
}
