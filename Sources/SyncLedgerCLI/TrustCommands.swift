import ArgumentParser
import EventLog
import Domain
import Foundation
import IntakeQ
import Ledger
import Projections

/// Refuses (one line, exit 1, nothing written) when the log does not hold a head that was
/// acknowledged: only a torn batch past the last acknowledged head may be missing.
func refuseIfLost(_ store: Store) throws {
    try Trust.requireNoLoss(store)
}

/// Why a store may only be salvaged (`log`, `export --to-seq`): it lost acknowledged events, or
/// its head evidence cannot be read. A salvage checks the chain from the log's first event, so
/// what it prints is linked to it whatever an index file or a later segment says.
struct Salvage {
    /// The one line every other command refuses the store with.
    var message: String
    /// The log holds another history at the acknowledged seq: not salvaged either.
    var differs: Bool
    /// Where the log ends, when known (nil: damage, or no usable evidence).
    var logEnd: UInt64?

    init(message: String, differs: Bool = false, logEnd: UInt64? = nil) {
        (self.message, self.differs, self.logEnd) = (message, differs, logEnd)
    }

    init(_ loss: Trust.Loss) {
        self.init(message: loss.message, differs: loss.differs, logEnd: loss.damage == nil ? loss.logHead.seq : nil)
    }

    /// Nil when the store holds everything it acknowledged.
    static func needed(_ store: Store) -> Salvage? {
        do {
            return Trust.findLoss(store, evidence: try Trust.evidence(store)).map { Salvage($0) }
        } catch {
            // state/head damaged: what it recorded is unknown, but the views' checkpoints still
            // say what was acknowledged (another history in the log's place is refused by them).
            let checkpoints = ProjectionStore.checkpointEvidence(path: store.projectionsPath, readOnly: !store.isWritable)
            return Trust.findLoss(store, evidence: checkpoints).map { Salvage($0) } ?? Salvage(message: String(describing: error))
        }
    }
}

struct RepairCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Record that acknowledged events were lost, and go on from where the log ends.",
        discussion: """
            When the log ends before a head it had acknowledged (a segment cut short or deleted, an \
            older copy restored), every command refuses. If the loss is real and cannot be undone \
            (restore the missing segments from a backup first if you can), `repair --accept-loss \
            REASON` appends a ledger.loss_recorded event (the last known head, where the log ends, \
            the reason), records the new head as acknowledged, and replaces the views with new ones \
            folded from the log (interrupted there, the next command catches them up). `verify` \
            warns about the recorded loss from then on.

            Damage inside the log (a batch that fails its CRC or the chain, a segment missing in \
            the middle) is not a loss at its end: restore the segment from a backup. If no backup \
            holds it, `--cut-damaged` verifies the whole log and, at its first failure, moves the \
            damaged batch and everything after it into log/cut-TIME/ (nothing is deleted; a tail \
            of a segment is copied there before the segment is cut short), then records the loss \
            of what was acknowledged there as above, naming the cut. Export what precedes the \
            damage first if you want it outside the store too (`syncledger export --to-seq N`).
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(name: .customLong("accept-loss"), help: ArgumentHelp("Why the loss is accepted (at most 500 characters); recorded in the ledger.", valueName: "REASON"))
    var acceptLoss: String
    static let reasonLimit = 500
    @Flag(name: .customLong("cut-damaged"),
          help: "With damage inside the log and no backup: move the damaged batch and everything after it into log/cut-TIME/, then record the loss.")
    var cutDamaged = false
    @Option(parsing: .unconditional, help: ArgumentHelp("Wait up to this long for another writer.", valueName: "SECONDS")) var waitLock: Double?

    func validate() throws {
        if acceptLoss.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw ValidationError("--accept-loss needs a reason (it is recorded in the ledger)")
        }
        // Printed by every `status` and `verify` from then on (a 100,000-character one was: hostile test).
        if acceptLoss.count > Self.reasonLimit {
            throw ValidationError("--accept-loss is \(acceptLoss.count) characters; say why in at most \(Self.reasonLimit) (status and verify print it)")
        }
        if let w = waitLock, !(w >= 0 && w.isFinite) { throw ValidationError("--wait-lock must be a number of seconds, 0 or more") }
    }

    /// The patients of every roster the log recorded that can be read: found through the views'
    /// stream index and read one by one (one in a damaged batch, or past a missing segment, made
    /// none count, and a patient's name in the reason went into the log: hostile test), or with
    /// no views, read from the log from its start as far as it reads. A warning when some or all
    /// cannot be read (no keys, say): the reason is then checked against the rest, and for numbers.
    /// The warning is said once the loss is about to be recorded (a refusal stays one line).
    static func recordedPatients(_ options: StoreOptions) -> (patients: [RosterObserved.Patient], warning: String?) {
        var rosters: [RosterObserved] = []
        var unread = 0
        var warning: String?
        do {
            let store = try options.open()
            // A patient whose key file is lost is read as forgotten (no name), not as a roster
            // that cannot be read: one lost key made every roster count as unreadable, and a
            // name went into the log unchecked (hostile test).
            let keys = (try? KeyRing.open(directory: store.keysPath, create: false))?.lostKeysReadAsForgotten()
            let reader = try LedgerReader(store: store, keys: keys)
            let seqs = FileManager.default.fileExists(atPath: store.projectionsPath)
                ? try? ProjectionStore(path: store.projectionsPath).streamSeqs(Streams.roster) : nil
            if let seqs {
                for seq in seqs {
                    do {
                        rosters += try reader.events(at: [seq]).map { try $0.decodeData(RosterObserved.self) }
                    } catch {
                        unread += 1
                    }
                }
            } else {
                var read: UInt64 = 0
                do {
                    try reader.forEachEvent { e in
                        if e.stream == Streams.roster { rosters.append(try e.decodeData(RosterObserved.self)) }
                        read = e.seq
                        return true
                    }
                } catch {
                    warning = "warning: with no views to find the rosters by, the log was read for them up to seq \(read) only "
                        + "(\(Trust.damage(describeError(error)))); --accept-loss was checked against the \(rosters.count) found, "
                        + "and for client ids and phone numbers"
                }
            }
        } catch {
            return ([], "warning: the rosters the log recorded cannot be read (\(describeError(error))); --accept-loss was checked for client ids and phone numbers only")
        }
        if unread > 0 {
            warning = "warning: \(unread == 1 ? "a roster" : "\(unread) rosters") the log recorded cannot be read; --accept-loss was checked against "
                + "the \(rosters.count) that can be, and for client ids and phone numbers"
        }
        return (rosters.flatMap { $0.organizations.flatMap(\.patients) }, warning)
    }

    func run() async throws {
        try await guarded {
            let store = try Store.open(storeOptions.path)
            // Before its evidence is read: the views' is read from the file itself.
            try store.requireWritable(for: "repair")
            /// The loss the evidence shows (nil and nil: nothing to repair).
            func lossNow() throws -> (loss: Trust.Loss?, damagedRecord: String?) {
                var evidence: [HeadEvidence] = []
                var damagedRecord: String?
                do {
                    if let recorded = try Trust.recordedHead(store) { evidence.append(recorded) }
                } catch let e as LedgerError {
                    damagedRecord = e.message
                }
                evidence += ProjectionStore.checkpointEvidence(path: store.projectionsPath)
                let loss = Trust.findLoss(store, evidence: evidence)
                if let loss, let damage = loss.damage {
                    if loss.tail != nil { throw CLIFailure(message: loss.message) }
                    throw CLIFailure(message: "the log cannot be read to its end (\(damage)); nothing was changed. " + loss.damageAdvice)
                }
                return (loss, damagedRecord)
            }
            // Cuts an earlier repair made and no loss names yet (killed between its cut and its record).
            let pendingBefore = CutPending.read(store)
            var before: (loss: Trust.Loss?, damagedRecord: String?) = (nil, nil)
            if !cutDamaged {
                before = try lossNow()
                guard before.loss != nil || before.damagedRecord != nil || !pendingBefore.isEmpty else {
                    try Self.nothingToRepair(store)
                    return 0
                }
            }
            // The reason is recorded in the clear, for good: no patient in it (as `forget --reason`);
            // checked before anything is cut or recorded. The names and emails are the rosters the
            // log recorded, as far as they can be read (`recordedPatients`).
            let people = Self.recordedPatients(storeOptions)
            if let problem = people.patients.personalDataProblem(in: acceptLoss) {
                throw CLIFailure(message: "--accept-loss \(problem); it is recorded in the log for good, so say why without personal data (for example \"disk failure of 2026-12-01, no backup\"); nothing was changed")
            }
            // Before the writer opens (it creates a missing one, naming the log's head as it then is).
            let hadHeadRecord = FileManager.default.fileExists(atPath: Trust.headRecordPath(store))
            let name = "cut-" + ISOTime.format(millis: ISOTime.nowMillis()).prefix(19).filter { $0.isNumber || $0 == "T" } + "Z"
            var cutBegun = false
            let progress = ProgressLine()
            if cutDamaged { progress.update("verifying the log to find its damage …") }
            var held: [String] = []
            var verifiedWhole = false
            // The patients whose forget the log keeps, seen by the cut's verify.
            var forgottenInLog = Set<String>()
            var heldSkipped = 0
            var heldBytes = 0
            var readBatches = 0
            let writer: LedgerWriter
            do {
                // The cut, the evidence read again and the loss's record all under one hold of the
                // writer's lock (a cut and its record apart let another repair record the loss
                // without naming the cut: cold review).
                // The ledger's own records among what is cut, noted with the cut: the loss record
                // keeps them (a second cut took an earlier loss's record out of the log, unsaid:
                // hostile test), and the forgets among them are recorded again.
                var request = CutRequest(asideName: name, beforeMoving: { cut in
                    try CutPending.add(Self.describe(cut), held: held, in: store)
                    cutBegun = true
                }, whenIntact: { head, events in
                    verifiedWhole = true
                    // A plain repair's check for a torn end is not recorded as a verify: its
                    // status keeps naming the last verify, before the loss.
                    guard cutDamaged else { return }
                    // A verify that passed, recorded: a failure recorded before (a segment since
                    // restored) no longer stands in `status`, nor sends the next repair back here.
                    Self.record(VerifyRecord(at: ISOTime.format(millis: ISOTime.nowMillis()), head: head.description, ok: true,
                                             events: events, error: nil), in: store)
                }, inspectCut: {
                    // Bounded: forged batches of highly compressible records made a 400 MB note
                    // and a loss record too large to append, and the store stuck (hostile test).
                    for line in Trust.heldRecords(in: $0) {
                        if heldBytes + line.utf8.count <= Self.heldBudget, line.utf8.count <= Self.heldLineLimit {
                            held.append(line)
                            heldBytes += line.utf8.count
                        } else {
                            heldSkipped += 1
                        }
                    }
                    readBatches += 1
                    progress.update("reading what is to be cut for the ledger's own records: \(readBatches) batches …")
                })
                // A plain repair cuts only a torn write at the log's end, which opening would
                // otherwise delete though acknowledged batches may have begun there (hostile test).
                request.inspectKept = { content in
                    for line in Trust.heldRecords(in: content) {
                        if let f = Self.forget(in: line) { forgottenInLog.insert(f.forget.patientId) }
                    }
                }
                var plain = request
                plain.tornTailOnly = true
                writer = try LedgerWriter(store: store, waitLock: waitLock, acceptingLoss: true, cutting: cutDamaged ? request : plain,
                                          onWaitingForLock: { [waitLock] in
                                              progress.finish()
                                              warn(LedgerWriter.waitingLine($0, upTo: waitLock ?? 0))
                                          })
            } catch let e as LogError where e.code == .locked {
                progress.finish()
                throw CLIFailure(message: LedgerWriter.lockedLine(e.message, waited: waitLock) + "; nothing was changed")
            } catch let e as LogError where e.code == .invalidArgument && cutDamaged && !cutBegun {
                progress.finish()
                throw CLIFailure(message: "nothing was cut: " + e.message)
            } catch where cutBegun {
                progress.finish()
                throw CLIFailure(message: "the cut failed (\(Trust.damage(describeError(error)))); nothing is deleted: the log is a prefix of what "
                    + "it was, and what was moved is in log/\(name)*/ (noted in state/cut-pending.json); run the repair again")
            } catch let e as LogError where e.isCorruption {
                progress.finish()
                throw CLIFailure(message: "nothing was changed: " + Trust.damage(e.message) + ". " + Trust.damageHint)
            }
            progress.finish()
            defer { writer.close() }
            if let cut = writer.cut {
                // Written straight to the descriptor, before anything else can fail.
                FileHandle.standardOutput.write(Data((
                    "cut the log at seq \(cut.firstSeqCut) (\(Trust.damage(cut.damage.message))): \(cut.bytes) bytes moved into "
                    + "log/\(cut.asideName)/ (\(cut.files.joined(separator: ", "))); the log now ends at seq \(cut.head.seq); "
                    + "\(cut.readableEvents) events in \(cut.readableBatches) batches of what was cut still read on their own\n").utf8))
            } else if cutDamaged {
                print("no damage to cut: the whole log verifies")
            } else if !verifiedWhole {
                // Damage inside the log, also where its end is missing, is not appended to (a
                // repair recorded a loss after a damaged batch, then could not fold the views:
                // hostile test). Opening checked only the last segment.
                let report = try EventLogReader(directory: store.logPath).verify()
                if let e = report.error {
                    try? Scrub.recordDamage(e, foundBy: "repair", in: store)
                    throw CLIFailure(message: "nothing was changed: the log is damaged inside: " + Trust.damage(e.message) + ". " + Trust.damageHint)
                }
            }
            // Again under the lock: a repair this one waited for may have recorded the loss (and
            // moved the recorded head on); recording it twice left a second loss, against a stale
            // head, in `status` for good (cold review). The recorded head is still the lost one:
            // opening to accept a loss leaves it until the loss is appended.
            let (loss, damagedRecord) = try lossNow()
            let cuts = CutPending.read(store)
            // A cut with no head record at all (a store from before head evidence): its batches
            // may have been acknowledged, so the loss is recorded, its head unknown.
            let noHeadRecord = !cuts.isEmpty && !hadHeadRecord
            // Recorded already by a repair killed after its append (before the views, the note or
            // the head record followed): not recorded twice (cold review).
            let lastKnown = loss.map { $0.evidence.head.description } ?? "unknown"
            // The cuts as the record names them: once each (a cut stopped before it truncated is
            // made again; hostile test: named twice), and one a hand-made note describes with
            // personal data, unnamed.
            var once = Set<String>()
            let cutWords = cuts.filter { once.insert($0).inserted }.map {
                people.patients.personalDataProblem(in: $0) == nil ? $0 : "a cut whose note holds personal data (see log/cut-*/)"
            }
            if let last = try? LedgerWriter.lastEvent(store), last.type == EventType.lossRecorded.rawValue,
               let record = try? last.decodeData(LossRecorded.self),
               loss != nil || damagedRecord != nil || noHeadRecord || !cuts.isEmpty,
               record.lastKnownHead == lastKnown || loss == nil && damagedRecord == nil,
               cutWords.allSatisfy({ record.cut?.contains($0) == true }) {
                do { try writer.recordHeadDurably() } catch {
                    throw CLIFailure(message: "the loss is recorded as seq \(last.seq), but state/head cannot record the head after it (\(describeError(error)))")
                }
                CutPending.clear(store)
                print("the loss was already recorded as seq \(last.seq) (a repair was stopped after recording it); state/head now names head \(writer.head)")
                return try Self.refold(store, writer: writer, verifying: !cuts.isEmpty)
            }
            guard loss != nil || damagedRecord != nil || noHeadRecord else {
                if !cuts.isEmpty {
                    CutPending.clear(store)
                    print("no loss to record: no head evidence reaches what was cut, so none of it had been acknowledged (\(cuts.joined(separator: "; ")))")
                    return try Self.verifyAfterCut(store)
                }
                if cutDamaged {
                    // The cut's verify has just read the whole log.
                    try Self.nothingToRepair(store, verified: true)
                } else {
                    print("nothing to repair: while this repair waited for the lock, another recorded the loss (or the log was restored)")
                }
                return 0
            }
            let logEnd = writer.head
            let evidence = loss?.evidence.source
                ?? damagedRecord.map { "state/head (damaged: \($0))" } ?? "none: the store has no state/head, and the bytes cut may have held acknowledged events"
            // What the cuts held, checked as the reason is (it goes into the log in the clear):
            // only records of the types kept, between the log's end and the acknowledged head,
            // written again from their decoded fields (hostile test: a forged batch put a fake
            // forget and a name and phone number into the loss record).
            let checked = Self.keptRecords(CutPending.held(store), after: logEnd.seq, through: loss?.evidence.head.seq,
                                           people: people.patients)
            let record = LossRecorded(lastKnownHead: lastKnown, evidence: evidence, logEndedAt: logEnd.description, reason: acceptLoss,
                                      cut: cuts.isEmpty ? nil : cutWords.joined(separator: "; "), cutHeld: checked.kept.isEmpty ? nil : checked.kept,
                                      cutHeldNotKept: checked.dropped + heldSkipped > 0 ? checked.dropped + heldSkipped : nil)
            if let w = people.warning { warn(w) }
            if checked.dropped > 0 || heldSkipped > 0 {
                warn("warning: \(checked.dropped + heldSkipped) of the ledger's records read from the bytes cut \(checked.dropped + heldSkipped == 1 ? "is" : "are") not "
                     + "kept in the loss record (past the acknowledged head, not as recorded, holding personal data, or over "
                     + "\(Self.heldBudget >> 20) MiB in all); the bytes are in log/cut-*/")
            }
            let (forgets, forgotten, keyBack, unrecorded, unmarked) = Self.forgetsAgain(checked.kept, recorded: forgottenInLog, store: store, cut: !cuts.isEmpty)
            if !unmarked.isEmpty {
                warn("warning: the bytes cut held the forget of \(unmarked.joined(separator: ", ")), but \(store.keysPath) does not mark "
                     + "\(unmarked.count == 1 ? "them" : "these patients") forgotten, so it is not recorded again (the bytes may be another "
                     + "store's); if it was this store's, `syncledger forget --patient ID --reason …` records it and destroys the key again")
            }
            if !unrecorded.isEmpty {
                // The damaged bytes may have held their forget (hostile test: dropped unsaid).
                warn("warning: \(store.keysPath)/forgotten marks \(unrecorded.joined(separator: ", ")) as forgotten, but the log no longer records "
                     + "\(unrecorded.count == 1 ? "their forget" : "these forgets") (the bytes cut that do not read may have held "
                     + "\(unrecorded.count == 1 ? "it" : "them")): `syncledger forget --patient ID --reason …` records it")
            }
            for patient in keyBack {
                warn("warning: the cut took the record of \(patient)'s forget, and \(store.keysPath) holds their key again: "
                     + "`syncledger forget --patient \(patient) --reason …` destroys it again")
            }
            // One batch, the loss record last: a repair run again finds it as the log's last event.
            let stored = try writer.append(forgets + [NewEvent(type: .lossRecorded, run: nil, stream: Streams.ledger, data: encodeData(record))])
            if !forgets.isEmpty {
                // Straight to the descriptor, as the loss's line below (in order when not a terminal).
                FileHandle.standardOutput.write(Data((
                    "recorded again the forget\(forgotten.count == 1 ? "" : "s") of \(forgotten.joined(separator: ", ")) that the cut took out of the log "
                    + "(seq \(stored[0].seq)\(forgets.count > 1 ? "–\(stored[forgets.count - 1].seq)" : ""))\n").utf8))
            }
            let lossSeq = stored[stored.count - 1].seq
            // Durable evidence of the head after the loss before it is said to be recorded.
            do { try writer.recordHeadDurably() } catch {
                throw CLIFailure(message: "the loss is recorded as seq \(lossSeq), but state/head cannot record the head after it "
                    + "(\(describeError(error))); once that is mended, run the repair again: it finds the loss recorded")
            }
            CutPending.clear(store)
            let recorded = "recorded the loss as seq \(lossSeq): \(record.lastKnownHead) had been acknowledged, the log ended at seq \(logEnd.seq)"
            // The old views are deleted and new ones folded from the log, not rebuilt in place:
            // their checkpoints (evidence of the lost head) must not outlive the loss record. A
            // rebuild interrupted here left them, and every later command refused the store as
            // one that lost acknowledged events (a second repair recorded the loss again).
            // Killed while the new file is folded, the next command catches it up. Said at once:
            // a signal during the fold (minutes at millions of events) ended it without a word,
            // and the operator could not tell that the loss was recorded (hostile test).
            // Written straight to the descriptor: `print` is buffered when stdout is not a terminal.
            FileHandle.standardOutput.write(Data((recorded + "\n").utf8))
            return try Self.refold(store, writer: writer, verifying: !cuts.isEmpty)
        }
    }

    /// New views folded from the log after a loss is recorded, and after a cut the log verified
    /// again; the exit status.
    static func refold(_ store: Store, writer: LedgerWriter, verifying: Bool) throws -> Int32 {
        let folding = ProgressLine()
        do {
            try ProjectionStore.refold(store, LedgerReader(store: store), why: "rebuild the views after the loss", progress: folding.fold)
        } catch {
            folding.finish()
            throw CLIFailure(message: "the loss is recorded, but the views could not be rebuilt: \(Trust.printable("\(error)"))")
        }
        folding.finish()
        DamageWitness.clear(store)
        print("views rebuilt from the log")
        print("head \(writer.head)")
        if verifying {
            writer.close()
            return try verifyAfterCut(store)
        }
        return 0
    }

    /// Nothing lost at the end of the log: says so, or why repair cannot help (exit 1).
    static func nothingToRepair(_ store: Store, verified: Bool = false) throws {
        // Damage inside the log that the last verify found is not repaired without
        // --cut-damaged: exit 1, so that a script does not take it for a repair (hostile test).
        // It said the log "holds every acknowledged head" with a batch failing its CRC (hostile
        // test): the headers hold, the batch does not.
        if let last = Scrub.last(store), !last.ok {
            switch last.kind ?? VerifyRecord.logDamage {
            case VerifyRecord.viewsDiffer:
                // A view difference is not the log's: `rebuild` mends it.
                print("nothing repair can do: the log holds every acknowledged head, but " + last.failure)
                return
            case VerifyRecord.logDamage:
                throw CLIFailure(message: "nothing was changed: " + Trust.damage(last.summary()) + ". `repair` alone records a loss at "
                    + "the end of the log. " + Trust.damageHint)
            default:
                // A head expected and not found: its own advice (cold review: it was sent to --cut-damaged).
                throw CLIFailure(message: "nothing repair can do: the log holds every acknowledged head, but " + last.failure)
            }
        }
        // Nothing says the log is damaged: verified, so that "nothing to repair" is true (it was
        // said of a log with a batch failing its CRC that no verify had read yet).
        let progress = ProgressLine()
        progress.update("verifying the log …")
        let report = try verified ? nil : EventLogReader(directory: store.logPath).verify()
        progress.finish()
        if let e = report?.error {
            try? Scrub.recordDamage(e, foundBy: "repair", in: store)
            throw CLIFailure(message: "nothing was changed: the log is damaged inside: " + Trust.damage(e.message) + ". " + Trust.damageHint)
        }
        print("nothing to repair: the log holds every acknowledged head (repair records a loss at its end; "
              + "damage inside it, which `syncledger verify` reports, needs the segment restored from a backup, or `--cut-damaged`)")
    }

    /// Records a verify's outcome as `verify` does (failures of other kinds it did not check stand).
    static func record(_ record: VerifyRecord, in store: Store) {
        let (recorded, _) = record.merged(after: Scrub.last(store), logOK: record.ok, checkedViews: false, checkedHead: false)
        do { try Scrub.record(recorded, in: store) } catch {
            warn("warning: could not record the verify's outcome in \(Scrub.path(store)): \(describeError(error))")
        }
    }

    /// The ledger's records kept from what one repair cuts: at most this many bytes of them in
    /// all (~20,000 forgets), each at most this long (a loss record with its 500-character reason
    /// is under 2 KB). Forged batches of highly compressible records made a 400 MB note and a
    /// record too large to append (hostile test).
    static let heldBudget = 8 << 20
    static let heldLineLimit = 16 << 10

    /// The records a loss record keeps of those read from the bytes cut (`cut_held`), once
    /// each: those whose seq lies after where the log now ends and at most the acknowledged head
    /// (when known), that decode as their type on their stream with every field in its form (an
    /// event id, times, heads), and whose text holds no personal data (checked as
    /// `--accept-loss` is). Each is written again from its decoded fields, so that nothing else
    /// a line holds reaches the log; a loss record's own `cut_held` is checked the same way
    /// (without the range: those seqs are of an older history). `dropped`: how many were not kept.
    static func keptRecords(_ lines: [String], after end: UInt64, through acknowledged: UInt64?,
                            people: [RosterObserved.Patient], depth: Int = 0) -> (kept: [String], dropped: Int) {
        var kept: [String] = []
        var seen = Set<String>()
        var dropped = 0
        func time(_ text: String) -> String? { ISOTime.parse(text).map { ISOTime.format(millis: $0) } }
        let idCharacters = Set("0123456789abcdef-".utf8)
        for line in lines where seen.insert(line).inserted {
            guard let e = try? EventEnvelope.decode(Array(line.utf8)), e.seq > end, acknowledged.map({ e.seq <= $0 }) ?? true,
                  e.id.utf8.count == 36, e.id.utf8.allSatisfy(idCharacters.contains), let at = time(e.at) else {
                dropped += 1
                continue
            }
            let data: [UInt8]
            let text: [String]
            if e.type == EventType.lossRecorded.rawValue, e.stream == Streams.ledger, var l = try? e.decodeData(LossRecorded.self),
               l.lastKnownHead == "unknown" || LogHead(parsing: l.lastKnownHead) != nil, LogHead(parsing: l.logEndedAt) != nil {
                if let nested = l.cutHeld {
                    let again = depth < 8 ? keptRecords(nested, after: 0, through: nil, people: people, depth: depth + 1) : ([], nested.count)
                    l.cutHeld = again.kept.isEmpty ? nil : again.kept
                    l.cutHeldNotKept = (l.cutHeldNotKept ?? 0) + again.dropped > 0 ? (l.cutHeldNotKept ?? 0) + again.dropped : nil
                }
                data = encodeData(l)
                text = [l.reason, l.evidence, l.cut ?? ""]
            } else if e.type == EventType.patientForgotten.rawValue, var f = try? e.decodeData(PatientForgotten.self),
                      e.stream == Streams.patient(f.patientId), let when = time(f.forgottenAt) {
                f.forgottenAt = when
                data = encodeData(f)
                text = [f.reason, f.patientId]
            } else {
                dropped += 1
                continue
            }
            guard text.allSatisfy({ people.personalDataProblem(in: $0) == nil }) else {
                dropped += 1
                continue
            }
            let again = EventEnvelope(seq: e.seq, id: e.id, type: e.type, v: e.v, at: at, run: nil, stream: e.stream, data: data)
            kept.append(String(decoding: again.encoded(), as: UTF8.self))
        }
        return (kept, dropped)
    }

    /// The forgets a cut took out of the log (of `keptRecords`), recorded again, as they were
    /// with the reason saying so, for each patient the log no longer records as forgotten and
    /// the key store marks forgotten (`keys/forgotten/`). Without the mark it is not recorded
    /// (the bytes cut may be another store's, restored into this log by mistake) but named in
    /// `unmarked`: a key store restored from before the forget made the patient's data
    /// readable again with nothing said (hostile test). `keyBack`: recorded, with the key file
    /// there again (`status` then says so, and `forget` destroys it again). `unrecorded` (after
    /// a cut): patients the key store marks forgotten whose forget the log no longer records,
    /// and none read from the bytes cut.
    static func forgetsAgain(_ held: [String], recorded recordedInLog: Set<String>, store: Store, cut: Bool)
        -> (events: [NewEvent], patients: [String], keyBack: [String], unrecorded: [String], unmarked: [String]) {
        let cutForgets = held.compactMap(forget(in:))
        let marked = cut || !cutForgets.isEmpty ? KeyRing.tombstonedPatients(directory: store.keysPath) : []
        // The forgets the log still holds (the cut's verify saw them: `inspectKept`).
        var recorded = recordedInLog
        let isMarked = Set(marked)
        var events: [NewEvent] = []
        var patients: [String] = []
        var keyBack: [String] = []
        var unmarked: [String] = []
        for (seq, f) in cutForgets where !recorded.contains(f.patientId) {
            guard isMarked.contains(f.patientId) else {
                if !unmarked.contains(f.patientId) { unmarked.append(f.patientId) }
                continue
            }
            recorded.insert(f.patientId)
            if KeyRing.hasKeyFile(directory: store.keysPath, patient: f.patientId) { keyBack.append(f.patientId) }
            // Its first reason, not "recorded again …" once per cut.
            let first = f.reason.hasPrefix(Self.againPrefix) ? f.reason.components(separatedBy: "; its reason: ").dropFirst().joined(separator: "; its reason: ") : f.reason
            let again = PatientForgotten(patientId: f.patientId, forgottenAt: f.forgottenAt,
                                         reason: Self.againPrefix + "the forget recorded at seq \(seq) went with a cut; its reason: \(first)")
            events.append(NewEvent(type: .patientForgotten, run: nil, stream: Streams.patient(f.patientId), data: encodeData(again)))
            patients.append(f.patientId)
        }
        return (events, patients, keyBack, marked.filter { !recorded.contains($0) }, unmarked)
    }

    static let againPrefix = "recorded again by repair: "

    /// The forget an envelope line records, with its seq; nil for any other line.
    static func forget(in line: String) -> (seq: UInt64, forget: PatientForgotten)? {
        guard let e = try? EventEnvelope.decode(Array(line.utf8)), e.type == EventType.patientForgotten.rawValue,
              let f = try? e.decodeData(PatientForgotten.self) else { return nil }
        return (e.seq, f)
    }

    /// The cut as the loss record names it.
    static func describe(_ cut: LogCut) -> String {
        "cut at seq \(cut.firstSeqCut), where verify failed (\(Trust.damage(cut.damage.message))); the bytes cut are in log/\(cut.asideName)/"
    }

    /// The log verified again after a cut and recorded as `verify` records it, so that the
    /// failure that led to the cut does not stand in `status` (failures of other kinds stay).
    /// Said on stdout; the exit status (1 when it failed).
    static func verifyAfterCut(_ store: Store) throws -> Int32 {
        let report: VerifyReport
        do {
            report = try EventLogReader(directory: store.logPath).verify()
        } catch {
            throw CLIFailure(message: "the log could not be verified after the cut (\(describeError(error))); run `syncledger verify`")
        }
        let at = ISOTime.format(millis: ISOTime.nowMillis())
        Self.record(VerifyRecord(at: at, head: report.head.description, ok: report.ok, events: report.events, error: report.error?.message,
                                 kind: VerifyRecord.logDamage), in: store)
        if let e = report.error {
            throw CLIFailure(message: "verify FAILED after the cut: \(e.message)")
        }
        print("verify: ok through head \(report.head)")
        if let standing = Scrub.last(store), !standing.ok {
            print("note: an earlier failure of another kind still stands in `status`: " + Trust.printable(standing.failure))
        }
        return 0
    }
}
