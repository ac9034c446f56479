import EventLog
import Foundation
import GRDB
import Ledger
import Projections

/// Monotonic seconds.
func now() -> Double { clockSeconds(CLOCK_MONOTONIC) }

/// Writes every dirty page of the file systems to disk (`sync`), untimed, before a timed phase:
/// the phases before it leave gigabytes written and not yet on disk (the JSON Lines copy of the
/// log, the stores of earlier phases), and the kernel's writeback of them, at any moment of the
/// next phase, slowed that phase's own writes and syncs (stop 50: the rebuild took ~20 % longer
/// inside the bench than `syncledger rebuild` on the same store).
func settleDisk() { sync() }

/// CPU time of every thread of the process so far, in seconds.
func processCPUSeconds() -> Double { clockSeconds(CLOCK_PROCESS_CPUTIME_ID) }

/// The clock's reading in seconds.
private func clockSeconds(_ clock: clockid_t) -> Double {
    var t = timespec()
    clock_gettime(clock, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// Resets the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0: "5" to /proc/self/clear_refs), so
/// each run's figures are its own rather than the process's high-water mark; false when the
/// system does not allow it (figures are then cumulative over the runs).
func resetPeakRSS() -> Bool {
    guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
    defer { try? handle.close() }
    do { try handle.write(contentsOf: Data("5".utf8)) } catch { return false }
    return true
}

/// The process's peak resident set (VmHWM) since it started or since `resetPeakRSS`, in MB: a
/// phase's figure is the peak of everything up to the end of that phase.
func peakRSSMB() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_maxrss) / 1024
    }
    for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
    return 0
}

func fileSize(_ path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : 0
}

/// Bytes of all regular files under a directory.
func directorySize(_ path: String) -> Int {
    guard let e = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total = 0
    while let name = e.nextObject() as? String { total += fileSize(path + "/" + name) }
    return total
}

/// Size of an SQLite database after folding its WAL back in (the steady state on disk).
func sqliteSize(_ path: String, checkpoint: (String) throws -> Void) rethrows -> Int {
    try checkpoint("PRAGMA wal_checkpoint(TRUNCATE)")
    return fileSize(path) + fileSize(path + "-wal") + fileSize(path + "-shm")
}

func median(_ xs: [Double]) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s[min(s.count - 1, Int((p * Double(s.count)).rounded(.up)) - 1)]
}

/// Buffered writer of the JSON Lines the baselines replay (the envelope lines as stored).
/// Without a path (`--skip-baselines`) it only counts the bytes.
final class LinesFile {
    let file: UnsafeMutablePointer<FILE>?
    var bytes = 0
    init(path: String?) throws {
        guard let path else {
            file = nil
            return
        }
        guard let f = fopen(path, "w") else { throw BenchError("cannot create \(path)") }
        file = f
        setvbuf(f, nil, _IOFBF, 1 << 20)
    }
    func write(_ line: [UInt8]) {
        if let file {
            line.withUnsafeBytes { _ = fwrite($0.baseAddress, 1, $0.count, file) }
            fputc(10, file)
        }
        bytes += line.count + 1
    }
    func close() { if let file { fclose(file) } }
}

/// The SyncLedger side of one run: a store of `events` events, then replay, rebuild and lookups.
struct SyncLedgerRun {
    var m: [String: Double] = [:]
    /// `--carried-appointments` (nil: the store's default).
    var carried: Int?
    var rss: [(String, Double)] = []
    var lookupId: String?

    /// Durable append in batches of `batchSize`, through the real `LedgerWriter`. Only the
    /// `append` calls are timed; generating the workload and writing the baselines' copy are not.
    mutating func append(store: Store, source: inout some EventSource, linesPath: String?, batchSize: Int,
                         sealer: Sealer? = nil) throws {
        let writer = try LedgerWriter(store: store)
        defer { writer.close() }
        let lines = try LinesFile(path: linesPath)
        defer { lines.close() }
        var batch: [NewEvent] = []
        batch.reserveCapacity(batchSize)
        var timed = 0.0, events = 0, batches = 0, cpu = 0.0
        // With a sealer, each batch is sealed while the one before it is written, as `sync` does
        // (`SealedAppender`); both are timed, and nothing runs between two timed calls.
        let appender = sealer.map { s in SealedAppender(writer: writer) { try s.seal($0) } }
        func timedAppend(_ body: () throws -> [EventEnvelope]) rethrows {
            let t0 = now(), c0 = processCPUSeconds()
            let stored = try body()
            timed += now() - t0
            // The CPU of every thread: wall times on this shared machine swing by tens of
            // percent, the CPU a change saves much less.
            cpu += processCPUSeconds() - c0
            for e in stored { lines.write(e.encoded()) }
        }
        func flush() throws {
            guard !batch.isEmpty else { return }
            try timedAppend { try appender?.append(batch) ?? writer.append(batch) }
            events += batch.count
            batches += 1
            batch.removeAll(keepingCapacity: true)
        }
        while let e = try source.next() {
            batch.append(e)
            if batch.count >= batchSize { try flush() }
        }
        try flush()
        if let appender { try timedAppend { try appender.finish() } }
        m["events"] = Double(events)
        m["append_events_per_s"] = Double(events) / timed
        m["append_cpu_us_per_event"] = cpu * 1e6 / Double(max(1, events))
        m["append_mb_per_s"] = Double(lines.bytes) / timed / 1e6
        m["raw_json_bytes_per_event"] = Double(lines.bytes) / Double(max(1, events))
        m["raw_object_bytes_per_observation"] = Double(source.rawObjectBytes) / Double(max(1, source.appointmentEvents))
        m["log_bytes_per_event"] = Double(directorySize(store.logPath)) / Double(max(1, events))
        lookupId = source.lookupId
        rss.append(("append", peakRSSMB()))
    }

    /// The cost of the head evidence (`state/head`, one pwrite + fdatasync per batch): the same
    /// batched appends into a store of their own with the evidence off. Only `append` is timed.
    mutating func appendWithoutEvidence(store: Store, source: inout some EventSource, batchSize: Int) throws {
        let writer = try LedgerWriter(store: store, headEvidence: false)
        defer { writer.close() }
        var batch: [NewEvent] = []
        batch.reserveCapacity(batchSize)
        var timed = 0.0, events = 0
        func flush() throws {
            guard !batch.isEmpty else { return }
            let t0 = now()
            try writer.append(batch)
            timed += now() - t0
            events += batch.count
            batch.removeAll(keepingCapacity: true)
        }
        while let e = try source.next() {
            batch.append(e)
            if batch.count >= batchSize { try flush() }
        }
        try flush()
        m["append_no_evidence_events_per_s"] = Double(events) / timed
    }

    /// Single-event durable appends into a store of their own, so the main log keeps `events` events.
    /// `headEvidence: false` measures the same without `state/head` (its cost).
    mutating func singleAppends(store: Store, source: inout some EventSource, count: Int, headEvidence: Bool = true) throws {
        let writer = try LedgerWriter(store: store, headEvidence: headEvidence)
        defer { writer.close() }
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        while latencies.count < count, let e = try source.next() {
            let t0 = now()
            try writer.append([e])
            latencies.append((now() - t0) * 1000)
        }
        let key = headEvidence ? "single_append" : "single_append_no_evidence"
        m[key + "_p50_ms"] = percentile(latencies, 0.5)
        m[key + "_p99_ms"] = percentile(latencies, 0.99)
        if !headEvidence { return }
        m["single_append_count"] = Double(latencies.count)
        rss.append(("single append", peakRSSMB()))
    }

    /// How long a user waits to open the store: for writing (the store, the writer: the log's
    /// tail and the head evidence are checked) and for reading (a reader and its head). Median
    /// of 5 opens, in ms.
    mutating func openTimes(storePath: String) throws {
        var write: [Double] = [], read: [Double] = []
        for _ in 0..<5 {
            let t0 = now()
            let store = try Store.open(storePath)
            let writer = try LedgerWriter(store: store)
            write.append((now() - t0) * 1000)
            writer.close()
            let t1 = now()
            let reader = try LedgerReader(store: try Store.open(storePath))
            _ = try reader.head()
            read.append((now() - t1) * 1000)
        }
        m["open_for_writing_ms"] = median(write)
        m["open_for_reading_ms"] = median(read)
    }

    /// Reads every event through a cursor (CRC, chain) and decodes each envelope. The cursor
    /// reads and checks the next batches on a second thread (`ReadAheadCursor`, as `syncledger
    /// log` and `export` read; stop 40), while this thread decodes. The same replay through a
    /// `LogCursor`, which does both on one thread, is timed after it as the in-run baseline
    /// (`replay_one_thread_events_per_s`).
    mutating func replay(store: Store) throws {
        let reader = try EventLogReader(directory: store.logPath)
        let t0 = now()
        let ahead = try ReadAheadCursor(reader, from: 1)
        let (n, bytes, check) = try decodeAll(ahead.next)
        let t = now() - t0
        let t1 = now()
        let cursor = try reader.cursor(from: 1)
        let (n1, _, check1) = try decodeAll(cursor.next)
        let t2 = now() - t1
        guard Double(n) == m["events"], n1 == n, check1 == check else {
            throw BenchError("replay read \(n) events (one thread: \(n1)), appended \(m["events"] ?? 0)")
        }
        m["replay_events_per_s"] = Double(n) / t
        m["replay_mb_per_s"] = Double(bytes) / t / 1e6
        m["replay_one_thread_events_per_s"] = Double(n) / t2
        m["replay_check"] = Double(check % 1000)
        rss.append(("replay", peakRSSMB()))
        // `syncledger verify`'s check: every CRC, frame, line count and the chain, each batch's
        // lines searched for recorded losses as the command does.
        let t3 = now()
        var losses: [String] = []
        let report = reader.verify(inspect: { _, content in losses += Trust.recordedLosses(in: content) })
        let t4 = now() - t3
        guard report.ok, Double(report.events) == m["events"], losses.isEmpty else {
            throw BenchError("verify: ok \(report.ok), \(report.events) events, \(losses.count) losses: \(report.error?.message ?? "")")
        }
        m["verify_events_per_s"] = Double(report.events) / t4
    }

    /// Decodes every envelope `next` gives: the events, their bytes and a checksum of what was decoded.
    private func decodeAll(_ next: () throws -> LogRecord?) throws -> (Int, Int, UInt64) {
        var n = 0, bytes = 0
        var check: UInt64 = 0
        var decoder = EnvelopeDecoder()
        while let r = try next() {
            let e = try decoder.decode(r.payload)
            guard e.seq == r.seq else { throw BenchError("replay: seq \(r.seq) decodes as \(e.seq)") }
            n += 1
            bytes += r.payload.count + 1
            check &+= UInt64(e.data.count) &+ UInt64(e.type.utf8.count)
        }
        return (n, bytes, check)
    }

    /// Folds the whole log into every view, from an empty views database.
    mutating func rebuild(store: Store, compareFold: Bool = false) throws -> ProjectionStore {
        let views = try ProjectionStore(store: store)
        if let carried { views.carriedAppointmentsLimit = carried }
        let reader = try LedgerReader(store: store)
        let t0 = now()
        let report = try views.rebuild(names: [], reader)
        let t = now() - t0
        m["rebuild_events_per_s"] = (m["events"] ?? 0) / t
        m["rebuild_s"] = t
        m["rebuild_quarantined"] = Double(report.quarantined.count)
        for (k, v) in views.lastFoldTimings { m["rebuild_\(k)_s"] = v }
        m["rebuild_appointments_written"] = Double(views.lastFoldAppointmentsWritten)
        if let w = views.lastWriteback {
            m["rebuild_writeback_wal_syncs"] = Double(w.walSyncs)
            m["rebuild_writeback_wal_frames"] = Double(w.walFrames)
            m["rebuild_writeback_checkpointed_frames"] = Double(w.checkpointedFrames)
            m["rebuild_writeback_checkpoint_s"] = w.checkpointSeconds
        }
        if compareFold {
            // The same rebuild applying every event to every view one by one (the reference the
            // chunked fold is tested against): the A/B of the fold on the same log, same process.
            let path = store.projectionsPath + ".event-by-event"
            let reference = try ProjectionStore(path: path)
            reference.chunkedFold = false
            reference.eventsPerTransaction = 2_000
            let t1 = now()
            _ = try reference.rebuild(names: [], reader)
            m["rebuild_event_by_event_events_per_s"] = (m["events"] ?? 0) / (now() - t1)
            try reference.pool.close()
            for suffix in ["", "-wal", "-shm", ".rebuild-lock"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
        m["views_bytes_per_event"] = Double(try sqliteSize(store.projectionsPath) { sql in
            try views.pool.writeWithoutTransaction { try $0.execute(sql: sql) }
        }) / (m["events"] ?? 1)
        rss.append(("rebuild", peakRSSMB()))
        return views
    }

    /// History and as-of of one appointment observed several times (median of a few tries).
    mutating func lookups(store: Store, views: ProjectionStore, tries: Int) throws {
        guard let id = lookupId else { throw BenchError("the workload has no appointment to look up") }
        let reader = try LedgerReader(store: store)
        // What a read command does first: open the views and check them against the log.
        var opens: [Double] = []
        for _ in 0..<3 {
            let t0 = now()
            let other = try ProjectionStore(store: store)
            _ = try other.catchUp(reader)
            opens.append((now() - t0) * 1000)
            try other.pool.close()
        }
        m["open_views_ms"] = median(opens)
        let head = try reader.head()
        var history: [Double] = [], asOf: [Double] = []
        var versions = 0, rows = 0
        for _ in 0..<tries {
            let t0 = now()
            versions = try History.of(id, reader: reader, views: views).count
            history.append((now() - t0) * 1000)
            let t1 = now()
            rows = try AsOf.appointments(through: head.seq, filter: AppointmentFilter(appointmentId: id),
                                         reader: reader, views: views).count
            asOf.append((now() - t1) * 1000)
            if history.last! + asOf.last! > 5000 { break }  // slow enough that one try says it
        }
        guard versions >= 1, rows == 1 else { throw BenchError("lookup of \(id): \(versions) versions, \(rows) as-of rows") }
        m["history_ms"] = median(history)
        m["as_of_ms"] = median(asOf)
        m["history_versions"] = Double(versions)
        rss.append(("lookups", peakRSSMB()))
    }
}
