import ArgumentParser
import EventLog
import Domain
import Foundation
import GRDB
import IntakeQ
import JSONCore
import Ledger
import Paths
import Projections

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every CRC, the whole hash chain and the index; print the head.",
        discussion: """
            Exit 0 when intact (a torn tail left by a crash is only a warning), 1 with the first bad \
            segment, byte offset and seq. With --expect-head SEQ:HASH (a head written down earlier), \
            also proves the first SEQ events are exactly those that head was taken from. The outcome \
            is recorded in STORE/state/verify.json: `status` shows it and fails, and every read \
            command warns, while the last verify failed. With --views, also folds the log into \
            scratch views and compares them with the live ones row by row (exit 1 on a difference). \
            A failed --views (or --expect-head) stands until a verify with --views (or with \
            --expect-head) passes: a verify without it does not clear what it did not check.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: ArgumentHelp("A head published earlier.", valueName: "SEQ:HASH")) var expectHead: String?
    @Flag(help: "Also compare the live views with a fresh fold of the log, row by row.") var views = false
    @Flag(help: "Print JSON: ok, head, events, batches, segments, warnings, error, earlier_failure_stands (and views_compared, view_differences with --views).") var json = false

    func validate() throws {
        try refuseBlank([("--expect-head", expectHead)])
        if let e = expectHead {
            guard let head = LogHead(parsing: e) else {
                throw ValidationError("--expect-head '\(e)' is not SEQ:HASH (a number, a colon and 64 hex digits)")
            }
            // Seq 0 is no head anyone published: the empty log's, which every log holds. It
            // passed, and cleared a standing --expect-head failure (hostile test).
            if head.seq == 0 {
                throw ValidationError("--expect-head '\(e)': seq 0 is before the first event; give a head `verify` printed (seq 1 or more)")
            }
        }
    }

    func run() async throws {
        try await guarded {
            let store = try Store.open(storeOptions.path)
            try refuseIfLost(store)
            let writable = store.isWritable
            let reader = try EventLogReader(directory: store.logPath)
            if !writable { reader.rewritesIndexFiles = false }
            let progress = ProgressLine()
            var losses: [Trust.RecordedLoss] = []
            let expected = expectHead.flatMap(LogHead.init(parsing:))
            var report = reader.verify(expectHead: expected,
                                       progress: { seq in progress.update("verifying … seq \(seq)") },
                                       inspect: { _, content in losses += Trust.recordedLossEvents(in: content) })
            progress.finish()
            report.warnings += losses.map(\.warning)
            // A head the log gave up with `repair --accept-loss`: the mismatch is that recorded
            // loss, not an unexplained divergence (it read as tampering, with the loss a warning
            // beside it).
            // Or a loss whose record a later cut took, kept in that cut's record (`cut_held`): it
            // was no longer named (hostile test).
            let held = losses.flatMap { outer in
                (outer.loss.cutHeld ?? []).compactMap { line -> (Trust.RecordedLoss, UInt64)? in
                    guard let e = try? EventEnvelope.decode(Array(line.utf8)), e.type == EventType.lossRecorded.rawValue,
                          let inner = try? e.decodeData(LossRecorded.self) else { return nil }
                    return (Trust.RecordedLoss(seq: e.seq, at: e.at, loss: inner), outer.seq)
                }
            }
            // The loss that names the head itself first (a later loss's range may cover its seq,
            // in the history written after the first loss).
            let all = losses.map { ($0, UInt64?.none) } + held.map { ($0.0, Optional($0.1)) }
            if let expected, report.error?.code == .headMismatch,
               let (loss, keptAt) = all.first(where: { $0.0.loss.lastKnownHead == expected.description })
                   ?? all.first(where: { $0.0.covers(expected) }) {
                // Without the reason: this text is recorded in state/ and reaches alerts (cold review).
                report.error?.message += ". The log records losing it: at seq \(loss.seq) (\(Trust.printable(loss.at))) a loss was accepted "
                    + "of the events after \(Trust.printable(loss.loss.logEndedAt)) up to \(Trust.printable(loss.loss.lastKnownHead)) "
                    + (keptAt.map { "(a later cut took that record; the loss recorded at seq \($0) keeps it) " } ?? "")
                    + "(`syncledger status` shows the reason)"
            }
            var differences: (first: [ViewDifference], total: Int)?
            if views && report.ok {
                differences = try compareViews()
                // Every row of every view read without a fault: damage recorded before is gone.
                if differences?.total == 0, writable { DamageWitness.clear(store) }
            }
            let viewsOK = (differences?.total ?? 0) == 0
            // The scrub's record: `status` and the read commands report a failed one.
            let record = VerifyRecord(
                at: ISOTime.format(millis: ISOTime.nowMillis()), head: report.head.description, ok: report.ok && viewsOK,
                events: report.events,
                error: report.error?.message ?? differences.flatMap { $0.first.first.map { "the views differ from the log: \($0)" } },
                kind: report.error.map { $0.code == .headMismatch ? VerifyRecord.expectedHead : VerifyRecord.logDamage } ?? VerifyRecord.viewsDiffer)
            // Failures of what this verify did not check stand beside its own (`outstanding`).
            let (recorded, outstanding) = record.merged(after: Scrub.last(store), logOK: report.ok, checkedViews: views && report.ok && viewsOK,
                                                        checkedHead: expectHead != nil && report.ok)
            if let first = outstanding.first {
                warn("note: this verify did not check what an earlier one found failing, so that failure stands in `status`: "
                     + Trust.printable(first.failure) + (outstanding.count > 1 ? " (and \(outstanding.count - 1) more)" : ""))
            }
            if writable {
                do { try Scrub.record(recorded, in: store) } catch {
                    warn("warning: could not record this verify's outcome in \(Scrub.path(store)): \(describeError(error))")
                }
            } else {
                warn("note: the store is read-only: this verify's outcome was not recorded in state/")
            }
            if json {
                var o: [String: JSONValue] = [
                    "ok": .bool(report.ok && viewsOK), "head": .string(report.head.description),
                    "events": .number(Double(report.events)), "batches": .number(Double(report.batches)),
                    "segments": .number(Double(report.segments)),
                    "warnings": .array(report.warnings.map(JSONValue.string)), "error": .null,
                    "earlier_failure_stands": outstanding.first.map { .string($0.failure) } ?? .null,
                ]
                if let e = report.error {
                    o["error"] = .object([
                        "message": .string(e.message), "segment": e.segment.map(JSONValue.string) ?? .null,
                        "offset": e.offset.map { .number(Double($0)) } ?? .null, "seq": e.seq.map { .number(Double($0)) } ?? .null,
                    ])
                }
                if let differences {
                    o["view_differences"] = .array(differences.first.map { d in
                        .object(["view": .string(d.view), "table": .string(d.table), "key": .string(d.key),
                                 "column": d.column.map(JSONValue.string) ?? .null,
                                 "live": d.live.map(JSONValue.string) ?? .null, "log": d.log.map(JSONValue.string) ?? .null,
                                 "personal": .bool(d.live == nil)])
                    })
                    o["view_differences_total"] = .number(Double(differences.total))
                }
                if views { o["views_compared"] = .bool(differences != nil) }
                print(Output.json(.object(o)))
            } else {
                // Recorded text (a repair's reason) shown so that it cannot drive the terminal.
                for w in report.warnings { warn("warning: " + Trust.printable(w)) }
                if let e = report.error {
                    print("verify FAILED: \(e.message)")
                    print("intact through head \(report.head)")
                } else {
                    print("ok: \(report.events) events in \(report.batches) batches, \(report.segments) segment\(report.segments == 1 ? "" : "s")")
                    if let e = expectHead { print("matches the expected head \(e)") }
                    print("head \(report.head)")
                }
                if views && differences == nil {
                    // The views are folded from the log: against a log that did not verify, the
                    // comparison would prove nothing, and a silent skip read as if it had passed.
                    print("views: not compared, because the log did not verify")
                }
                if let differences {
                    if differences.total == 0 {
                        print("views: every row matches a fresh fold of the log")
                    } else {
                        print("views FAILED: \(differences.total) difference\(differences.total == 1 ? "" : "s") from a fresh fold of the log (first \(differences.first.count)):")
                        for d in differences.first { print("  " + d.description) }
                    }
                }
            }
            return report.ok && viewsOK ? 0 : 1
        }
    }

    /// Folds the log into scratch views (in memory) through the seq the live views have
    /// applied, and compares the two row by row. First, SQLite's `quick_check` reads every page
    /// of the live file, the indexes' too, which the row-by-row comparison does not read.
    func compareViews() throws -> (first: [ViewDifference], total: Int) {
        let (_, reader, live) = try openForRead(storeOptions, warnScrub: false)
        let check = try live.readSync { try String.fetchAll($0, sql: "PRAGMA quick_check(1)") }
        if check != ["ok"] {
            throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "PRAGMA quick_check: " + check.joined(separator: "; "))
        }
        let applied = try live.appliedSeq()
        let scratch = try ProjectionStore.scratch()
        _ = try scratch.rebuild(scratch.projections, reader, through: LogHead(seq: applied, hash: LogHead.empty.hash))
        return try live.differences(from: scratch)
    }
}

struct RebuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Rebuild views from the log into shadow tables, then swap them in.",
        discussion: """
            Readers keep the live views until the swap, which is one transaction. Interrupted, the \
            live views are untouched. Events a view cannot apply are quarantined and reported \
            (exit 1). Projections: \(allProjections.map(\.name).joined(separator: ", ")).
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: ArgumentHelp("Rebuild only this projection.", valueName: "NAME")) var projection: String?
    @Flag(help: "Also print where the time went: reading the log, folding, writing SQLite (each on its own thread in a large rebuild), and the appointment rows written.")
    var timings = false

    func validate() throws {
        try refuseBlank([("--projection", projection)])
        if let projection, Projections.projection(named: projection.replacingOccurrences(of: "-", with: "_")) == nil {
            throw ValidationError("no projection named \(projection); choose one of: \(allProjections.map(\.name).joined(separator: ", "))")
        }
    }

    func run() async throws {
        try await guarded {
            let store = try Store.open(storeOptions.path)
            try refuseIfLost(store)
            // SIGINT/SIGTERM: the rebuild stops, the statement it is running interrupted (building
            // indexes or the swap take seconds at millions of events), and drops its shadow tables.
            // Watched from the start: a signal while the views open is acted on once they are.
            let interrupts = Interrupts.watch()
            defer { interrupts.stop() }
            var movedAside: String?
            if let moved = try moveAsideIfDamaged(store) {
                movedAside = moved
                warn("note: the views database was damaged; moved it aside to \(moved) and rebuilding it from the log")
            }
            var (_, reader, views) = try openForRead(storeOptions, catchUp: false, warnDamage: false)
            if views.inMemory {
                // Rebuilt into an in-memory copy, nothing would be saved.
                throw CLIFailure(message: "the store is read-only (\(store.projectionsPath) cannot be written by this user): "
                                 + "a rebuild would save nothing; run it as the store's owner on a writable store")
            }
            func stopOnSignal(_ views: ProjectionStore) {
                views.shouldStop = { interrupts.requested }
                interrupts.onSignal { views.interrupt() }
            }
            stopOnSignal(views)
            if let value = ProcessInfo.processInfo.environment["SYNCLEDGER_REBUILD_WRITEBACK"], ProjectionStore.rebuildWritebackSetting(value) == nil {
                warn("warning: SYNCLEDGER_REBUILD_WRITEBACK=\(value) is not understood (0/off or 1/on); the rebuild's writeback helper stays on")
            }
            let progress = ProgressLine()
            let started = Date()
            let names = projection.map { [$0.replacingOccurrences(of: "-", with: "_")] } ?? []
            let report: FoldReport
            do {
                do {
                    report = try views.rebuild(names: names, reader, progress: progress.fold)
                } catch where ViewsDamaged.isDamage(error) {
                    // The file opened, but a page the rebuild reads or frees (the live tables it
                    // drops) is damaged: moved aside, and the views folded into a new file.
                    progress.finish()
                    let moved = try moveViewsAside(store)
                    movedAside = moved
                    warn("note: the views database was damaged; moved it aside to \(moved) and rebuilding it from the log "
                         + "(a `syncledger serve` on this store reads the new file once the rebuild completes)")
                    (_, reader, views) = try openForRead(storeOptions, catchUp: false, warnScrub: false)
                    stopOnSignal(views)
                    report = try views.rebuild(names: [], reader, progress: progress.fold)
                }
            } catch let interrupted as FoldInterrupted {
                progress.finish()
                if interrupted.beforeStart && movedAside == nil {
                    throw CLIFailure(message: "rebuild interrupted while it waited for another rebuild of these views to finish: nothing was changed",
                                     code: interrupts.exitCode ?? 130)
                }
                if let movedAside {
                    throw CLIFailure(message: "rebuild interrupted: the damaged views were moved aside to \(movedAside) and the new ones "
                                     + "are not complete; run `syncledger rebuild` again", code: interrupts.exitCode ?? 130)
                }
                throw CLIFailure(message: "rebuild interrupted: the live views are unchanged and the partial shadow tables "
                                 + (interrupted.shadowTablesLeft ? "could not be dropped now; the next command that opens the views for writing drops them" : "were dropped"),
                                 code: interrupts.exitCode ?? 130)
            }
            progress.finish()
            // Every page of the views is new (every view rebuilt, or a new file): damage
            // recorded before is gone.
            if names.isEmpty || movedAside != nil { DamageWitness.clear(store) }
            // Closed, the views' WAL (hundreds of MB after a large rebuild) is checkpointed and
            // emptied; left open at exit it stayed at its largest, and the next command paid
            // 0.27 s at 1M events reading it back (BENCHMARKS.md, stop 45).
            do { try views.close() } catch {
                // The rebuilt views are in place; only their WAL was not emptied.
                warn("warning: \(error)")
            }
            let secs = Date().timeIntervalSince(started)
            print(String(format: "rebuilt %@ from %llu events in %.2f s", report.rebuilt.joined(separator: ", "),
                         try reader.head().seq, secs))
            for note in report.notes { warn("note: \(note)") }
            if interrupts.requested {
                warn("note: the signal came too late to stop the swap: the rebuilt views are in place; events appended during the rebuild are folded by the next command")
            }
            if timings {
                print(Self.describe(views.lastFoldTimings, views.lastWriteback) + "; \(views.lastFoldAppointmentsWritten) appointment row writes")
            }
            for q in report.quarantined {
                warn("quarantined: seq \(q.seq) (\(q.type)) in \(q.projection): \(q.error)")
            }
            if !report.quarantined.isEmpty {
                warn("syncledger: \(report.quarantined.count) event(s) could not be applied; they are skipped and listed in the quarantine table")
                return 1
            }
            return 0
        }
    }

    /// The last rebuild's time per stage, in seconds, in words.
    static func describe(_ t: [String: Double], _ writeback: WritebackSummary? = nil) -> String {
        func s(_ key: String) -> String { String(format: "%.2f s", t[key] ?? 0) }
        var line = "reading the log \(s("read")), folding \(s("fold")), writing SQLite \(s("write"))"
        if (t["wait"] ?? 0) > 0 { line += " (waited \(s("wait")) for the fold)" }
        if (t["prepare"] ?? 0) > 0 { line += ", the reader also working out observations' facts for the fold \(s("prepare"))" }
        if t["indexes"] != nil { line += ", of which building indexes \(s("indexes"))" }
        if let w = writeback {
            line += "; in the background the WAL was synced \(w.walSyncs) times"
            if w.checkpoints > 0 {
                line += String(format: ", and checkpointed in %.2f s while the indexes were built (%d of its %d frames then in the file)",
                               w.checkpointSeconds, w.checkpointedFrames, w.walFrames)
            }
        }
        return line
    }
}

/// Moves a damaged `projections.sqlite` (and its -wal/-shm) aside as
/// `projections.sqlite.damaged-<time>`; returns the new name, or nil when it is not damaged.
func moveAsideIfDamaged(_ store: Store) throws -> String? {
    // A store this process must not write is neither opened for writing nor moved: the rebuild
    // reads its views into memory (`openViews`), which says so when they are damaged.
    guard store.isWritable else { return nil }
    do {
        // Opened as the rebuild opens it: a damaged header or schema fails here. (Opened
        // read-only, the views would be copied whole into memory first: 0.7 GB of RSS for a
        // 1M-event store, and a temporary copy of the file.)
        _ = try ProjectionStore(store: store)
        return nil
    } catch is ViewsNotWritable {
        return nil
    } catch is ViewsDamaged {
        return try moveViewsAside(store)
    }
}

/// Renames the views database (and its -wal and -shm) to `projections.sqlite.damaged-TIME`;
/// returns that path. When `projections.sqlite` is a symlink, the file it points to is moved
/// aside where it is (SQLite keeps the -wal and -shm beside that file) and the link is kept, so
/// the new views are made where the link points, as before; renaming the link moved only the
/// link and left the damaged file and its -wal behind (hostile test, stop 44).
///
/// A link to a file that does not even begin with SQLite's header is refused, and the file left
/// alone: a link made to the wrong file (a hostile test linked `precious.db`) was moved aside as
/// "damaged", and the next `forget` deleted it as a damaged views file holding old rows. Inside
/// the store, such a file is the store's own damaged views file, moved aside as before.
func moveViewsAside(_ store: Store) throws -> String {
    let stamp = ISOTime.format(millis: ISOTime.nowMillis()).replacingOccurrences(of: ":", with: "")
    let path = ProjectionStore.resolvedViewsPath(store)
    var link = stat()
    if lstat(store.projectionsPath, &link) == 0, link.st_mode & S_IFMT == S_IFLNK, let header = fileStart(path, 16), !header.isEmpty,
       header != Array("SQLite format 3\0".utf8) {
        throw CLIFailure(message: "\(store.projectionsPath) links to \(path), which is not a SQLite database (a link to the wrong "
                         + "file?): it was left alone; point the link at the views file, or remove the link, then run `syncledger rebuild` again")
    }
    let aside = path + ProjectionStore.damagedSuffix + stamp
    for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
        guard rename(path + suffix, aside + suffix) == 0 else {
            throw CLIFailure(message: "cannot move the damaged \(path + suffix) aside: \(String(cString: strerror(errno)))")
        }
    }
    return aside
}

/// The first `count` bytes of the file at `path` (fewer when it is shorter), or nil when it
/// cannot be read.
private func fileStart(_ path: String, _ count: Int) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, 0) }
    return n < 0 ? nil : Array(bytes[..<n])
}

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export events for auditors: JSON Lines as stored, CSV of appointment versions, or a verifiable bundle.",
        discussion: """
            On a store that lost acknowledged events only the salvage is allowed: --format jsonl \
            --to-seq N, with N up to where the log ends (or before its damage); the loss is a warning.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "jsonl (events exactly as stored) or csv (one row per appointment version).") var format: String = "jsonl"
    @Option(parsing: .unconditional, help: "First seq to export; the head's seq + 1 exports nothing until more is recorded.") var fromSeq: UInt64 = 1
    @Option(parsing: .unconditional, help: "Last seq to export.") var toSeq: UInt64?
    @Option(help: ArgumentHelp("Write to this file instead of stdout (through a temporary file renamed into place; an existing file only with --force).", valueName: "FILE"))
    var out: String?
    @Flag(help: "Let --out replace an existing file.") var force = false
    @Option(help: ArgumentHelp("Write an auditor's bundle (segments, manifest, its verifier: Python 3 and lz4) into this new directory.", valueName: "DIR"))
    var bundle: String?

    func validate() throws {
        guard ["jsonl", "csv"].contains(format) else { throw ValidationError("--format must be jsonl or csv") }
        if fromSeq == 0 { throw ValidationError("--from-seq starts at 1") }
        if toSeq == 0 { throw ValidationError("--to-seq starts at 1 (seqs count from 1)") }
        if let toSeq, toSeq < fromSeq { throw ValidationError("--to-seq \(toSeq) is before --from-seq \(fromSeq)") }
        // A bundle holds the segments as stored: a CSV or an --out asked for with it was ignored
        // without a word (hostile test).
        if bundle != nil, format != "jsonl" || out != nil || force {
            throw ValidationError("--bundle writes the log's segments as stored, with their verifier: --format, --out and --force are for the JSON Lines or CSV export")
        }
    }

    func run() async throws {
        try await guarded {
            // A store that lost acknowledged events is refused, except for what a salvage needs:
            // the events as stored up to a --to-seq the log still holds (each batch is checked as
            // it is read; damage before --to-seq fails the export and leaves no file).
            let opened = try storeOptions.open()
            // The store's own files (the log, the views, the head evidence, the keys) are never
            // an export's target: `--out X/log/….seg --force` replaced a segment with the
            // export and said it had exported (hostile test). Checked before anything opens.
            let protected = ProtectedPaths(store: opened)
            if let bundle { try protected.refuse(bundle, as: "--bundle") }
            if let out { try protected.refuse(out, as: "--out") }
            let salvage = Salvage.needed(opened)
            if let salvage {
                guard format == "jsonl", bundle == nil, let toSeq, !salvage.differs,
                      salvage.logEnd.map({ toSeq <= $0 }) ?? true else {
                    let hint = salvage.differs ? nil : salvage.logEnd.flatMap { $0 >= fromSeq ? $0 : nil }
                    throw LedgerError(salvage.message + (hint.map { ". `syncledger export --to-seq \($0)` saves what the log holds" } ?? ""))
                }
            }
            let store: Store, reader: LedgerReader, views: ProjectionStore?
            if salvage != nil {
                // The salvage reads the log only, and writes nothing (no views, no index files).
                store = opened
                reader = try LedgerReader(store: store)
                reader.log.rewritesIndexFiles = false
                views = nil
            } else {
                (store, reader, views) = try openForRead(storeOptions, catchUp: false, inMemoryOnFullDisk: true)
                // A range past the end is a mistyped seq, not an empty export; the head's seq + 1
                // exports nothing until more is recorded (as `log`: an auditor's next --from-seq).
                let headSeq = try reader.head().seq
                if fromSeq > headSeq + 1 {
                    throw CLIFailure(message: "--from-seq \(fromSeq) is past the log's end (seq \(headSeq)); nothing was exported")
                }
                // Said, not refused: the events up to the head are what there is (an auditor
                // took an export through --to-seq 500 of a 206-event log for all of 500: hostile test).
                if let toSeq, toSeq > headSeq {
                    DamageWitness.warnOnSuccess("note: --to-seq \(toSeq) is past the log's end (seq \(headSeq)): exported through seq \(headSeq)")
                }
            }
            if let bundle {
                let manifest = try AuditBundle.write(store: store, to: bundle, fromSeq: fromSeq, toSeq: toSeq)
                if let r = manifest.range {
                    print("bundle written to \(bundle): seqs \(r.firstSeq)...\(r.lastSeq) (whole batches), proven against head \(manifest.head)")
                } else {
                    print("bundle written to \(bundle): \(manifest.events) events, head \(manifest.head)")
                }
                print("check it anywhere with Python 3 and lz4: python3 \(bundle)/verify_bundle.py [--expect-head SEQ:HASH]")
                print("read its events with stock tools: cat \(bundle)/segments/*.seg | lz4 -dc")
                return 0
            }
            let output = try ExportOutput(out, force: force)
            let write: ([UInt8]) throws -> Void = { try output.sink.write($0) }
            let count: Int
            do {
                if format == "jsonl" {
                    count = Int(try Export.jsonLines(reader: reader, from: fromSeq, to: toSeq, checkFromStart: salvage != nil, write: write))
                    // A salvage whose log's end is unknown may end before --to-seq: all or nothing.
                    if salvage != nil, let toSeq, fromSeq + UInt64(count) <= toSeq {
                        throw CLIFailure(message: "the log holds events only through seq \(fromSeq + UInt64(count) - 1), before --to-seq \(toSeq); nothing was exported")
                    }
                } else {
                    // The per-stream index serves removal rows when it covers the range; else the
                    // export keeps each appointment's last version in memory.
                    let last = try toSeq ?? reader.head().seq
                    let indexed = ((try? views?.appliedSeq()) ?? 0) >= last
                    count = try Export.csv(reader: reader, views: indexed ? views : nil, from: fromSeq, to: toSeq, write: write)
                }
                try output.commit()
            } catch {
                output.abandon()
                throw error
            }
            if let out {
                let what = format == "jsonl" ? (count == 1 ? "event" : "events") : (count == 1 ? "appointment version" : "appointment versions")
                warn("exported \(count) \(what) to \(out)")
            }
            // Said once the salvage is written (a failed one says only why it failed).
            if let salvage { warn("warning: " + salvage.message) }
            return 0
        }
    }
}

/// The store's directory, its key store and the master key file: no export is written in
/// them (replacing a segment, the views or the head evidence would lose what they hold).
struct ProtectedPaths {
    let places: [(path: String, what: String)]

    init(store: Store, environment: [String: String] = ProcessInfo.processInfo.environment) {
        // The narrowest first: the default key store is inside the store. The log, the state
        // and the views may be links to other disks (their targets are the store's too).
        var places = [(store.keysPath, "the key store")]
        if let named = (try? KeyRing.namedMasterKeyFile(environment: environment, keys: store.keysPath)) ?? nil {
            places.insert((named, "the master key file"), at: 0)
        }
        // SQLite keeps a linked database's side files beside the link's target.
        let views = Self.resolved(store.projectionsPath) ?? store.projectionsPath
        for side in ["", "-wal", "-shm", "-journal"] { places.append((views + side, "the store")) }
        places += [(store.logPath, "the store"), (store.statePath, "the store"), (store.path, "the store")]
        self.places = places.compactMap { p in Self.resolved(p.0).map { ($0, p.1) } }
        // And by what they are on disk: a directory mounted a second time elsewhere (a bind
        // mount, which needs no root in a user namespace) has other paths (hostile test).
        var identities: [FileID: String] = [:]
        for place in self.places.reversed() { if let id = FileID(place.path) { identities[id] = place.what } }
        self.identities = identities
    }

    /// A file or directory by device and inode (links followed).
    struct FileID: Hashable {
        let device: UInt64, inode: UInt64
        init?(_ path: String) {
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
        }
    }
    private let identities: [FileID: String]

    /// `path` with its links and `..` resolved, the part that does not exist yet kept as given
    /// (nil when nothing of it resolves).
    ///
    /// The part that does not exist is applied by text (`.` dropped, `..` taking off the last
    /// component), as making the missing directories would walk it: `--bundle
    /// missing/../store/audit` makes `missing`, then goes up from it into the store (review).
    static func resolved(_ path: String) -> String? {
        // Split by hand: NSString's path arithmetic traps on one-letter relative paths on Linux.
        var parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let root = path.hasPrefix("/") ? "/" : "."
        var tail: [String] = []
        while true {
            let head = parts.isEmpty ? root : (root == "/" ? "/" : "") + parts.joined(separator: "/")
            if let r = realpath(head, nil) {
                defer { free(r) }
                var resolved = String(cString: r).split(separator: "/").map(String.init)
                for part in tail.reversed() {
                    if part == ".." { _ = resolved.popLast() } else if part != "." { resolved.append(part) }
                }
                return "/" + resolved.joined(separator: "/")
            }
            guard let last = parts.popLast() else { return nil }
            tail.append(last)
        }
    }

    /// Throws when `path` (resolved) is one of the places or inside one: by its path, or by
    /// the device and inode of it or a directory above it. A `..` after a part that does not
    /// exist is refused: making the missing directories then going up from one would walk links
    /// the check could not see (hostile test: `missing/../link-to-store/audit`).
    func refuse(_ path: String, as option: String) throws {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        if let up = parts.lastIndex(of: "..") {
            let prefix = (path.hasPrefix("/") ? "/" : "") + parts[...up].joined(separator: "/")
            if Self.resolvedExisting(prefix) == nil {
                throw CLIFailure(message: "\(option) \(path) goes up (`..`) from a directory that does not exist; give the path without it")
            }
        }
        guard let target = Self.resolved(path) else { return }
        func refused(_ what: String, _ place: String) -> CLIFailure {
            CLIFailure(message: "\(option) \(path) would write into \(what) (\(place)): an export never writes there, "
                       + "it could replace what the store holds; give a file or directory outside it")
        }
        for place in places where target == place.path || target.hasPrefix(place.path.hasSuffix("/") ? place.path : place.path + "/") {
            throw refused(place.what, place.path)
        }
        var components = target.split(separator: "/").map(String.init)
        while true {
            let here = "/" + components.joined(separator: "/")
            if let id = FileID(here), let what = identities[id] { throw refused(what, here) }
            guard !components.isEmpty else { return }
            components.removeLast()
        }
    }

    /// `path` resolved by `realpath` when all of it exists, else nil.
    static func resolvedExisting(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }
}

/// Where `export` writes: standard output; a device or a pipe written through; or a file,
/// written beside its target and renamed over it once complete, so a failed export leaves no
/// partial file (a symlink's target is replaced, the link kept).
struct ExportOutput {
    let sink: FileHandleSink
    /// The file's name and the temporary file written beside it; nil when written through.
    private let file: (name: String, target: String, temp: String)?

    init(_ out: String?, force: Bool) throws {
        guard let out else {
            sink = FileHandleSink(fd: 1)
            file = nil
            return
        }
        func failure() -> CLIFailure { CLIFailure(message: "cannot write \(out): \(String(cString: strerror(errno)))") }
        // Standard output by name: written through its descriptor, whatever it is (a file it is
        // appended to, a pipe).
        if ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"].contains(out) {
            sink = FileHandleSink(fd: 1)
            file = nil
            return
        }
        // A symlink's target is written (and replaced), the link kept; one that leads nowhere
        // (a missing target, a loop) is not replaced by a file.
        var target = out
        var status = stat()
        if lstat(out, &status) == 0, status.st_mode & S_IFMT == S_IFLNK {
            guard let resolved = realpath(out, nil) else {
                throw CLIFailure(message: "cannot write \(out): it is a symbolic link that leads to no file (\(String(cString: strerror(errno))))")
            }
            target = String(cString: resolved)
            free(resolved)
        }
        if stat(target, &status) == 0, status.st_mode & S_IFMT != S_IFREG {
            // A device or a pipe (a FIFO) is written straight through: renaming a file over it
            // would replace it.
            guard status.st_mode & S_IFMT != S_IFDIR else { throw CLIFailure(message: "\(out) is a directory") }
            guard let s = FileHandleSink(device: target) else { throw failure() }
            sink = s
            file = nil
            return
        }
        if !force, FileManager.default.fileExists(atPath: target) {
            throw CLIFailure(message: "\(out) already exists; give a new file, or --force to replace it")
        }
        let directory = parentDirectory(of: target).isEmpty ? "" : parentDirectory(of: target) + "/"
        let temp = directory + "." + (target as NSString).lastPathComponent + ".partial-\(getpid())"
        guard let s = FileHandleSink(path: temp) else { throw failure() }
        sink = s
        file = (out, target, temp)
    }

    /// The export is complete: a file is synced and renamed into place.
    func commit() throws {
        guard let file else {
            sink.close()
            return
        }
        func failure() -> CLIFailure { CLIFailure(message: "cannot write \(file.name): \(String(cString: strerror(errno)))") }
        guard fsync(sink.fd) == 0 else { throw failure() }
        sink.close()
        guard rename(file.temp, file.target) == 0 else { throw failure() }
    }

    /// The export failed: the temporary file is removed.
    func abandon() {
        sink.close()
        if let file { unlink(file.temp) }
    }
}

/// Writes whole buffers to a file descriptor, retrying short writes.
struct FileHandleSink {
    let fd: Int32
    let owned: Bool
    init(fd: Int32) {
        self.fd = fd
        owned = false
    }
    /// An existing device or pipe, written as it is (no truncation, its mode untouched).
    init?(device path: String) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        self.fd = fd
        owned = true
    }
    /// A new file (a temporary one): an existing file or symlink of that name is not followed
    /// or reused.
    init?(path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return nil }
        // An existing file keeps its mode through O_TRUNC: exports hold patient data.
        fchmod(fd, 0o600)
        self.fd = fd
        owned = true
    }
    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == EPIPE { throw ExitCode(0) }
                    throw CLIFailure(message: "cannot write the export: \(String(cString: strerror(errno)))")
                }
                off += n
            }
        }
    }
    func close() { if owned { Glibc.close(fd) } }
}

struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log", abstract: "Print events as stored, one JSON object per line.",
        discussion: """
            Each batch is checked (CRCs, the hash chain) as it is read. On a damaged log the events \
            before the damage are printed, then one line naming it (exit 1). On a store that lost \
            acknowledged events, which every command but this and `export --to-seq` refuses, `log` \
            is the salvage: it prints what the log holds, then the loss (exit 1; a --limit met \
            before the end only warns). A log put in the place of the acknowledged one is refused.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(parsing: .unconditional, help: "First seq to print; the head's seq + 1 prints nothing until more is recorded.") var fromSeq: UInt64 = 1
    @Option(parsing: .unconditional, help: "Print at most this many events.") var limit: UInt64?

    func validate() throws {
        if fromSeq == 0 { throw ValidationError("--from-seq starts at 1") }
        if let limit, limit == 0 { throw ValidationError("--limit must be positive") }
    }

    func run() async throws {
        try await guarded {
            let store = try Store.open(storeOptions.path)
            // A store that lost acknowledged events is still read, as a salvage: the events it
            // holds are printed (each batch checked), then the loss as the one error line, exit 1.
            // (SQLite may create -wal/-shm beside the views while their checkpoints are read, as
            // for every command's check; nothing else is written.)
            let salvage = Salvage.needed(store)
            // A log put in the place of the acknowledged one holds another history: refused, as
            // by every command (`export` too).
            if let salvage, salvage.differs { throw LedgerError(salvage.message) }
            let reader: EventLogReader
            do { reader = try EventLogReader(directory: store.logPath) } catch {
                // No log at all (deleted): the loss says more than "no event log here".
                if let salvage { throw LedgerError(salvage.message) }
                throw error
            }
            // The salvage writes nothing (a stale index file is not rewritten).
            if salvage != nil { reader.rewritesIndexFiles = false }
            // nil: the end of the log cannot be found (damage): it is read up to the damage.
            let headSeq: UInt64?
            do { headSeq = try reader.head().seq } catch let error as LogError where error.isCorruption { headSeq = nil }
            if let headSeq {
                if let salvage, fromSeq > headSeq { throw LedgerError(salvage.message) }
                // The seq after the head asks "anything new?" (nothing yet: no output, exit 0); one
                // further on cannot come from this log (a typo, another store's seq).
                guard fromSeq <= headSeq + 1 else {
                    throw CLIFailure(message: "--from-seq \(fromSeq) is past the log's head (seq \(headSeq)); --from-seq \(headSeq + 1) prints what is recorded next")
                }
            }
            // A --limit reaching past the largest seq means "to the end".
            let through = limit.flatMap { $0 - 1 <= UInt64.max - fromSeq ? fromSeq + ($0 - 1) : nil }
            // A salvage checks the chain from the first event (and skips to --from-seq).
            let cursor = try ReadAheadCursor(reader, from: salvage == nil ? fromSeq : 1, through: through)
            let sink = FileHandleSink(fd: 1)
            // On a terminal a line cannot drive it (`TerminalText.jsonLine`: the same JSON
            // value); into a file or a pipe the events are the bytes stored.
            let terminal = isatty(1) != 0
            var buffer: [UInt8] = []
            var last: UInt64 = 0
            do {
                while let r = try cursor.next() {
                    if r.seq < fromSeq { continue }
                    last = r.seq
                    if terminal { buffer += TerminalText.jsonLine(Array(r.payload)) } else { buffer += r.payload }
                    buffer.append(10)
                    if buffer.count > 1 << 16 {
                        try sink.write(buffer)
                        buffer.removeAll(keepingCapacity: true)
                    }
                }
            } catch let error as LogError {
                // The events before the damage were checked: print them, then say where it is.
                try sink.write(buffer)
                throw error
            }
            try sink.write(buffer)
            if let salvage {
                // A --limit met within what the log holds printed all it asked for: the loss is a
                // warning. Else the log ended before its acknowledged head: the loss is the error.
                guard let through, last == through else { throw LedgerError(salvage.message) }
                warn("warning: " + salvage.message)
            }
            return 0
        }
    }
}
