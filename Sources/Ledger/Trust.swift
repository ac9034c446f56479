import EventLog
import Foundation

/// A head something outside the log says was acknowledged: `state/head`, or a view's checkpoint.
public struct HeadEvidence: Sendable, Equatable {
    public var head: LogHead
    /// Where it was recorded, for messages: `state/head`, `the appointments view's checkpoint`.
    public var source: String
    public init(head: LogHead, source: String) {
        self.head = head
        self.source = source
    }
}

/// What the store promises (DESIGN.md, "Trust"): what it once acknowledged, it still has or says
/// loudly that it lost. Only a torn batch past the last acknowledged head may be missing.
public enum Trust {
    /// The `ledger.loss_recorded` events of a batch's JSON Lines, as warnings for `verify` (its
    /// `inspect`). The batch's bytes are searched for the event type's marker (memmem) and only a
    /// batch that holds it is decoded: every batch is searched, so the search is on `verify`'s
    /// path (Foundation's generic `firstRange(of:)` here made `verify` ~25× slower, stop 41).
    public static func recordedLosses(in content: [UInt8]) -> [String] {
        recordedLossEvents(in: content).map(\.warning)
    }

    /// A `ledger.loss_recorded` event of the log.
    public struct RecordedLoss: Sendable {
        public var seq: UInt64
        public var at: String
        public var loss: LossRecorded
        public init(seq: UInt64, at: String, loss: LossRecorded) {
            (self.seq, self.at, self.loss) = (seq, at, loss)
        }
        /// `verify`'s warning for it.
        public var warning: String {
            "a loss of acknowledged events was recorded at seq \(seq) (\(at)): \(loss.lastKnownHead) had been "
                + "acknowledged (\(loss.evidence)) but the log ended at \(loss.logEndedAt)"
                + (loss.cut.map { " (\($0))" } ?? "") + "; reason: \(loss.reason)"
                + (loss.heldSummary.map { "; " + $0 } ?? "")
        }
        /// True when `head` was among the events this loss gave up: after where the log ended
        /// and at most the acknowledged head, so the log no longer holds it (its seqs were
        /// written again after the loss, from this event on).
        public func covers(_ head: LogHead) -> Bool {
            guard let ended = LogHead(parsing: loss.logEndedAt), head.seq > ended.seq else { return false }
            return LogHead(parsing: loss.lastKnownHead).map { head.seq <= $0.seq } ?? true
        }
    }

    /// The `ledger.loss_recorded` events of a batch's JSON Lines (`recordedLosses`, structured).
    public static func recordedLossEvents(in content: [UInt8]) -> [RecordedLoss] {
        let found = content.withUnsafeBytes { hay in
            lossMarker.withUnsafeBytes { firstOffset(of: $0, in: hay) } != nil
        }
        guard found else { return [] }
        var out: [RecordedLoss] = []
        for line in content.split(separator: 10) {
            guard let e = try? EventEnvelope.decode(line), e.type == EventType.lossRecorded.rawValue,
                  let loss = try? e.decodeData(LossRecorded.self) else { continue }
            out.append(RecordedLoss(seq: e.seq, at: e.at, loss: loss))
        }
        return out
    }

    /// Text read from the log, for a terminal, as one line that cannot drive it: each control
    /// character (a newline, an escape sequence's ESC), line or paragraph separator and
    /// invisible format character (bidirectional overrides) shown as `\u{1B}`, and a backslash as
    /// `\\` (so that an escape shown cannot be told from text that spells one). A `repair` reason
    /// is recorded as given; `verify` prints it through this (its `--json` gives it as recorded).
    public static func printable(_ text: String) -> String {
        escaping(text, backslash: true) { u in
            let category = u.properties.generalCategory
            return category == .control || category == .format || category == .lineSeparator || category == .paragraphSeparator
        }
    }

    /// `text` with each scalar `unsafe` picks shown as `\u{1B}` (and, when `backslash`, each
    /// backslash as `\\`); `text` itself when there is none.
    public static func escaping(_ text: String, backslash: Bool, _ unsafe: (Unicode.Scalar) -> Bool) -> String {
        guard text.unicodeScalars.contains(where: { unsafe($0) || (backslash && $0 == "\\") }) else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for u in text.unicodeScalars {
            if unsafe(u) {
                out += "\\u{" + String(u.value, radix: 16, uppercase: true) + "}"
            } else if backslash && u == "\\" {
                out += "\\\\"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    /// How an encoded `ledger.loss_recorded` envelope names its type (`EventEnvelope.encode`).
    private static let lossMarker = Array("\"type\":\"\(EventType.lossRecorded.rawValue)\"".utf8)
    private static let heldMarkers = LossRecorded.heldTypes.map { Array("\"type\":\"\($0.rawValue)\"".utf8) }

    /// The envelope lines of a batch's JSON Lines that a cut's loss record keeps
    /// (`LossRecorded.cutHeld`: loss records and forgets), in order. Only a batch that names one
    /// of their types is split and decoded.
    public static func heldRecords(in content: [UInt8]) -> [String] {
        let named = content.withUnsafeBytes { hay in
            heldMarkers.contains { m in m.withUnsafeBytes { firstOffset(of: $0, in: hay) } != nil }
        }
        guard named else { return [] }
        let types = Set(LossRecorded.heldTypes.map(\.rawValue))
        return content.split(separator: 10).compactMap { line in
            guard let e = try? EventEnvelope.decode(line), types.contains(e.type) else { return nil }
            return String(decoding: line, as: UTF8.self)
        }
    }

    public static let repairHint =
        "If the loss is real and accepted, `syncledger repair --accept-loss REASON` records it and goes on"
    /// For damage inside the log, which `repair` does not record (it records a loss at the end).
    public static let damageHint =
        "Restore the damaged or missing segment from a backup; if no backup holds it, "
        + "`syncledger repair --accept-loss REASON --cut-damaged` moves the damage and everything after it "
        + "into log/cut-TIME/ and records the loss"

    /// `state/head`: the writer's head evidence (see docs/FORMAT.md, "Head evidence").
    public static func headRecordPath(_ store: Store) -> String { store.statePath + "/head" }

    /// The head recorded in `state/head`; nil when the store has none (new, or from before head
    /// evidence). Throws when the file is damaged.
    public static func recordedHead(_ store: Store) throws -> HeadEvidence? {
        do {
            guard let entry = try HeadRecord.read(path: headRecordPath(store)) else { return nil }
            return HeadEvidence(head: entry.head, source: "state/head")
        } catch let e as LogError {
            throw LedgerError(e.message)
        }
    }

    /// A shortfall: the log does not hold a head the evidence says was acknowledged.
    public struct Loss: Sendable {
        public var evidence: HeadEvidence
        /// Where the log ends now (its last complete batch).
        public var logHead: LogHead
        /// The log reaches the evidence's seq but with another chain hash there.
        public var differs: Bool
        /// The log could not be read to its end (a damaged or missing segment in the middle):
        /// where and what, without the advice of the reader's own error (the message gives it once).
        public var damage: String?
        /// The first seq the damage keeps from being read, when known: what precedes it can be exported.
        public var damageSeq: UInt64?
        /// The damage is bytes at the end of the last segment, after every acknowledged event (the
        /// first seq they keep from being read is past the evidence's): the segment's path, where
        /// the readable batches end, and how many bytes follow. Not a torn write (cut on its own),
        /// but bytes another program wrote there, or damage (hostile test: advice to restore a
        /// segment or move segments aside could not be followed).
        public var tail: (path: String, offset: UInt64, bytes: UInt64)?
        /// The evidence is a view's checkpoint that differs, while the log holds the head the
        /// writer recorded (`state/head`) at that seq or later: most likely the views file is the
        /// odd one (edited by hand, another store's, an older copy). It was blamed on the log
        /// alone, with `repair --accept-loss` as the way out (hostile test). Still refused: the
        /// log and state/head replaced together look the same.
        public var viewsAreOdd = false
        /// Cuts a repair noted (`CutPending`) and no loss records yet.
        public var pendingCuts: [String] = []

        public init(evidence: HeadEvidence, logHead: LogHead, differs: Bool, damage: String? = nil, damageSeq: UInt64? = nil) {
            self.evidence = evidence
            self.logHead = logHead
            self.differs = differs
            self.damage = damage
            self.damageSeq = damageSeq
        }

        /// One line naming the expected head and where the log ends.
        public var message: String {
            let expected = "seq \(evidence.head.seq) was acknowledged (head \(evidence.head), recorded in \(evidence.source))"
            let what: String
            if let damage, let tail {
                return "the log cannot be read to its end (\(damage)), but everything acknowledged comes before it "
                    + "(head \(evidence.head), recorded in \(evidence.source)): from offset \(tail.offset) of \(tail.path) on, "
                    + "\(tail.bytes) bytes (with any batches after the damage, none acknowledged) do not read as a batch, and not as "
                    + "a torn write (which is cut on its own) but as bytes another program wrote there, or damage; nothing was changed. "
                    + damageAdvice
            } else if let damage {
                what = "the log cannot be read to its end (\(damage)) but \(expected)"
            } else if viewsAreOdd {
                return "the views' checkpoint (\(evidence.source)) names another history at seq \(evidence.head.seq) (head \(evidence.head)) "
                    + "than the log holds, though the log holds the head the writer recorded in state/head; nothing was changed. "
                    + "Most likely the views file was edited, or is another store's or an older copy: then move projections.sqlite "
                    + "aside and run `syncledger rebuild`. If instead the log and state/head were both replaced with another history, "
                    + "restore them from a backup"
            } else if differs {
                what = "the log's history differs from what was acknowledged: \(expected) but the log's chain at that seq is another one "
                    + "(the log ends at seq \(logHead.seq)); an older or other copy of the log was put in its place"
            } else if !pendingCuts.isEmpty {
                // A repair stopped between its cut and its record (hostile test: this said only
                // "cut off, a segment deleted…", where the README promises the note is named).
                return "the log ends at seq \(logHead.seq) but \(expected): a repair cut them aside and was stopped before it "
                    + "recorded the loss (noted in state/cut-pending.json: \(pendingCuts.joined(separator: "; "))); nothing was changed. "
                    + "Run `syncledger repair --accept-loss REASON` again to record it"
            } else {
                what = "the log ends at seq \(logHead.seq) but \(expected): acknowledged events are missing "
                    + "(cut off, a segment deleted, or an older copy restored)"
            }
            return what + "; nothing was changed. " + (damage == nil ? Trust.repairHint : damageAdvice)
        }

        /// What to do about damage inside the log: save what precedes it, restore the segment,
        /// or cut it aside (`repair --cut-damaged`).
        public var damageAdvice: String {
            if let tail {
                return "Keep a copy of the segment, then cut them off (`truncate -s \(tail.offset) \(tail.path)`) and run `syncledger verify`"
            }
            guard let seq = damageSeq, seq > 1 else { return Trust.damageHint }
            return "To save what can be read, export what precedes seq \(seq) "
                + "(`syncledger export --to-seq \(seq - 1) --out FILE`). " + Trust.damageHint
        }
    }

    /// True when the writer's record (`state/head`) names a head at `seq` or later and the log
    /// holds it: then a view's checkpoint that differs at `seq` is the views' fault.
    public static func writerRecordHolds(_ store: Store, through seq: UInt64) -> Bool {
        guard let recorded = try? recordedHead(store), recorded.head.seq >= seq,
              let (check, _) = try? EventLogReader.check(directory: store.logPath, holds: recorded.head) else { return false }
        return check == .holds
    }

    /// Checks each piece of evidence against the log, writing nothing. Returns the first
    /// shortfall (the highest evidence first), or nil when the log holds everything.
    public static func findLoss(_ store: Store, evidence: [HeadEvidence]) -> Loss? {
        var seen: Set<LogHead> = []
        // Highest first; the views usually share one checkpoint, so each head is checked once.
        for e in evidence.sorted(by: { $0.head.seq > $1.head.seq }) where e.head.seq > 0 && seen.insert(e.head).inserted {
            do {
                let (check, end) = try EventLogReader.check(directory: store.logPath, holds: e.head)
                switch check {
                case .holds: continue
                case .endsBefore:
                    var loss = Loss(evidence: e, logHead: end, differs: false)
                    loss.pendingCuts = CutPending.read(store)
                    return loss
                case .differs:
                    // A view's checkpoint against the writer's record the log holds: most likely
                    // the views' fault, but the log and state/head replaced together look the
                    // same, so it is still refused (the checkpoint is the evidence left), with
                    // both readings named (`Loss.viewsAreOdd`).
                    var loss = Loss(evidence: e, logHead: end, differs: true)
                    // (Looked at only here: every command checks the evidence, cold review.)
                    loss.viewsAreOdd = e.source != "state/head" && writerRecordHolds(store, through: e.head.seq)
                    return loss
                }
            } catch let error as LogError where error.isCorruption || error.code == .notFound {
                var loss = Loss(evidence: e, logHead: .empty, differs: false, damage: Self.damage(error.message), damageSeq: error.seq)
                // Past every acknowledged event, at the end of the last segment (the evidence is
                // checked highest first: this one is the highest). Only on the writer's own
                // record, which every append moves on (a view's checkpoint may be far behind the
                // head: hostile test, acknowledged batches were offered to be cut), and only when
                // nothing after the damage looks like a batch (its frame's magic number).
                if error.isCorruption, e.source == "state/head", let segment = error.segment, let offset = error.offset,
                   let seq = error.seq, seq > e.head.seq,
                   let last = try? FileManager.default.contentsOfDirectory(atPath: store.logPath).filter({ $0.hasSuffix(".seg") }).max(),
                   segment == last {
                    // Only the bytes after the damage are read (a segment may be 64 MiB).
                    let path = store.logPath + "/" + segment
                    if let file = FileHandle(forReadingAtPath: path), (try? file.seek(toOffset: offset)) != nil,
                       let bytes = try? file.readToEnd(), !bytes.isEmpty, !Self.holdsBatchMagic(bytes) {
                        loss.tail = (path, offset, UInt64(bytes.count))
                    }
                }
                return loss
            } catch {
                return Loss(evidence: e, logHead: .empty, differs: false, damage: "\(error)")
            }
        }
        return nil
    }

    /// True when `bytes` hold the LZ4 skippable frame magic number every batch starts with
    /// (0x184D2A50, little-endian): a batch may begin there.
    static func holdsBatchMagic(_ bytes: Data) -> Bool {
        bytes.withUnsafeBytes { raw in
            let b = raw.bindMemory(to: UInt8.self)
            guard b.count >= 4 else { return false }
            for i in 0...(b.count - 4) where b[i] == 0x50 && b[i + 1] == 0x2A && b[i + 2] == 0x4D && b[i + 3] == 0x18 { return true }
            return false
        }
    }

    /// A reader's corruption message without its advice ("The log is damaged here; nothing was
    /// changed. Restore …"), which a loss message gives once, after what was acknowledged.
    public static func damage(_ message: String) -> String {
        guard let r = message.range(of: ". The log is damaged here; ") else { return message }
        return String(message[..<r.lowerBound])
    }

    /// Throws the shortfall as one line (`LedgerError`) when the log does not hold the evidence.
    public static func require(_ store: Store, evidence: [HeadEvidence]) throws {
        if let loss = findLoss(store, evidence: evidence) { throw LedgerError(loss.message) }
    }
}
