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
    @Option(name: .customLong("accept-loss"), help: ArgumentHelp("Why the loss is accepted; recorded in the ledger.", valueName: "REASON"))
    var acceptLoss: String
    @Flag(name: .customLong("cut-damaged"),
          help: "With damage inside the log and no backup: move the damaged batch and everything after it into log/cut-TIME/, then record the loss.")
    var cutDamaged = false
    @Option(parsing: .unconditional, help: ArgumentHelp("Wait up to this long for another writer.", valueName: "SECONDS")) var waitLock: Double?

    func validate() throws {
        if acceptLoss.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw ValidationError("--accept-loss needs a reason (it is recorded in the ledger)")
        }
        if let w = waitLock, !(w >= 0 && w.isFinite) { throw ValidationError("--wait-lock must be a number of seconds, 0 or more") }
    }

    /// The patients of every roster the log recorded (found through the views' stream index,
    /// read from the log up to where it ends); a warning and none when they cannot be read (no
    /// views, damaged views, no keys): the reason is then checked for numbers only.
    static func recordedPatients(_ options: StoreOptions) -> [RosterObserved.Patient] {
        do {
            let store = try options.open()
            guard FileManager.default.fileExists(atPath: store.projectionsPath) else {
                throw LedgerError("there are no views to find them by")
            }
            let reader = try LedgerReader(store: store)
            let rosters = try ProjectionStore(path: store.projectionsPath).recordedRosters(reader, through: try reader.head().seq)
            return rosters.flatMap { $0.organizations.flatMap(\.patients) }
        } catch {
            warn("warning: the rosters the log recorded cannot be read (\(describeError(error))); --accept-loss is checked for client ids and phone numbers only")
            return []
        }
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
            // The reason is recorded in the clear, for good: no patient in it (as `forget --reason`);
            // checked once there is a loss to record, or before anything is cut.
            // The names and emails are the rosters the log recorded, as far as they can be read
            // (a log that lost its end still holds them; views or keys that cannot be read leave
            // only the check for phone numbers).
            func checkReason() throws {
                if let problem = Self.recordedPatients(storeOptions).personalDataProblem(in: acceptLoss) {
                    throw CLIFailure(message: "--accept-loss \(problem); it is recorded in the log for good, so say why without personal data (for example \"disk failure of 2026-12-01, no backup\"); nothing was changed")
                }
            }
            var cut: LogCut?
            if cutDamaged {
                try checkReason()
                cut = try Self.cutAtDamage(store, waitLock: waitLock)
            }
            let nothingToRepair = "nothing to repair: the log holds every acknowledged head (repair records a loss at its end; "
                + "damage inside it, which `syncledger verify` reports, needs the segment restored from a backup, or `--cut-damaged`)"
            let before = try lossNow()
            guard before.loss != nil || before.damagedRecord != nil else {
                if let cut {
                    // Only bytes past every acknowledged head were cut (no evidence reaches them).
                    print("no loss to record: no head evidence reaches seq \(cut.firstSeqCut), so nothing cut had been acknowledged")
                    print(Self.verifyAfterCut(store))
                    return 0
                }
                // Damage inside the log that the last verify found is not repaired here without
                // --cut-damaged: exit 1, so that a script does not take it for a repair (hostile
                // test). It said the log "holds every acknowledged head" with the last batch
                // failing its CRC (hostile test): the headers hold, the batch does not.
                if let last = Scrub.last(store), !last.ok {
                    // A view difference is not the log's: `rebuild` mends it.
                    guard last.kind != VerifyRecord.viewsDiffer else {
                        print("nothing repair can do: the log holds every acknowledged head, but " + last.failure)
                        return 0
                    }
                    throw CLIFailure(message: "nothing was changed: " + Trust.damage(last.summary()) + ". `repair` alone records a loss at the end of "
                        + "the log; restore the damaged segment from a backup (then `syncledger verify`), or if no backup holds it, "
                        + "`syncledger repair --accept-loss REASON --cut-damaged` moves the damage and everything after it into "
                        + "log/cut-TIME/ and records the loss")
                }
                print(nothingToRepair)
                return 0
            }
            if cut == nil { try checkReason() }
            let writer: LedgerWriter
            do {
                writer = try LedgerWriter(store: store, waitLock: waitLock, acceptingLoss: true,
                                          onWaitingForLock: { [waitLock] in warn(LedgerWriter.waitingLine($0, upTo: waitLock ?? 0)) })
            } catch let e as LogError where e.code == .locked {
                throw CLIFailure(message: LedgerWriter.lockedLine(e.message, waited: waitLock) + "; nothing was changed")
            }
            defer { writer.close() }
            // Again under the lock: a repair this one waited for may have recorded the loss (and
            // moved the recorded head on); recording it twice left a second loss, against a stale
            // head, in `status` for good (cold review).
            let (loss, damagedRecord) = try lossNow()
            guard loss != nil || damagedRecord != nil else {
                print("nothing to repair: while this repair waited for the lock, another recorded the loss (or the log was restored)")
                return 0
            }
            let logEnd = writer.head
            let record = LossRecorded(
                lastKnownHead: loss.map { $0.evidence.head.description } ?? "unknown",
                evidence: loss?.evidence.source ?? "state/head (damaged: \(damagedRecord ?? ""))",
                logEndedAt: logEnd.description, reason: acceptLoss, cut: cut.map(Self.describe))
            let stored = try writer.append([NewEvent(type: .lossRecorded, run: nil, stream: Streams.ledger, data: encodeData(record))])
            let recorded = "recorded the loss as seq \(stored[0].seq): \(record.lastKnownHead) had been acknowledged, the log ended at seq \(logEnd.seq)"
            // The old views are deleted and new ones folded from the log, not rebuilt in place:
            // their checkpoints (evidence of the lost head) must not outlive the loss record. A
            // rebuild interrupted here left them, and every later command refused the store as
            // one that lost acknowledged events (a second repair recorded the loss again).
            // Killed while the new file is folded, the next command catches it up. Said at once:
            // a signal during the fold (minutes at millions of events) ended it without a word,
            // and the operator could not tell that the loss was recorded (hostile test).
            // Written straight to the descriptor: `print` is buffered when stdout is not a terminal.
            FileHandle.standardOutput.write(Data((recorded + "\n").utf8))
            let progress = ProgressLine()
            do {
                try ProjectionStore.refold(store, LedgerReader(store: store), why: "rebuild the views after the loss", progress: progress.fold)
            } catch {
                progress.finish()
                throw CLIFailure(message: "the loss is recorded, but the views could not be rebuilt: \(Trust.printable("\(error)"))")
            }
            progress.finish()
            DamageWitness.clear(store)
            print("views rebuilt from the log")
            print("head \(writer.head)")
            if cut != nil {
                writer.close()
                print(Self.verifyAfterCut(store))
            }
            return 0
        }
    }

    /// `repair --cut-damaged`'s cut (`EventLogWriter.cutAtDamage`), said at once; nil when the
    /// whole log verifies.
    static func cutAtDamage(_ store: Store, waitLock: Double?) throws -> LogCut? {
        let name = "cut-" + ISOTime.format(millis: ISOTime.nowMillis()).prefix(19).filter { $0.isNumber || $0 == "T" } + "Z"
        let progress = ProgressLine()
        progress.update("verifying the log to find its damage …")
        let cut: LogCut?
        do {
            cut = try EventLogWriter.cutAtDamage(directory: store.logPath, asideName: name, waitLock: waitLock,
                                                 onWaitingForLock: { [waitLock] in warn(LedgerWriter.waitingLine($0, upTo: waitLock ?? 0)) })
        } catch let e as LogError where e.code == .locked {
            progress.finish()
            throw CLIFailure(message: LedgerWriter.lockedLine(e.message, waited: waitLock) + "; nothing was changed")
        } catch let e as LogError where e.code == .invalidArgument {
            progress.finish()
            throw CLIFailure(message: "nothing was cut: " + e.message)
        } catch {
            progress.finish()
            throw CLIFailure(message: "the cut failed (\(describeError(error))); the log is a prefix of what it was, and the bytes "
                + "moved so far are in log/\(name)/; run the repair again")
        }
        progress.finish()
        guard let cut else {
            print("no damage to cut: the whole log verifies")
            return nil
        }
        // Written straight to the descriptor, before anything else can fail (as the loss line below).
        FileHandle.standardOutput.write(Data((
            "cut the log at seq \(cut.firstSeqCut) (\(Trust.damage(cut.damage.message))): \(cut.bytes) bytes moved into "
            + "log/\(cut.asideName)/ (\(cut.files.joined(separator: ", "))); the log now ends at seq \(cut.head.seq)\n").utf8))
        return cut
    }

    /// The cut as the loss record names it.
    static func describe(_ cut: LogCut) -> String {
        "cut at seq \(cut.firstSeqCut), where verify failed (\(Trust.damage(cut.damage.message))); the bytes cut are in log/\(cut.asideName)/"
    }

    /// The log verified again after a cut and recorded as `verify` records it, so that the
    /// failure that led to the cut does not stand in `status` (failures of other kinds stay).
    static func verifyAfterCut(_ store: Store) -> String {
        do {
            let report = try EventLogReader(directory: store.logPath).verify()
            let record = VerifyRecord(at: ISOTime.format(millis: ISOTime.nowMillis()), head: report.head.description, ok: report.ok,
                                      events: report.events, error: report.error?.message, kind: VerifyRecord.logDamage)
            let (recorded, outstanding) = record.merged(after: Scrub.last(store), logOK: report.ok, checkedViews: false, checkedHead: false)
            try Scrub.record(recorded, in: store)
            if let e = report.error { return "verify FAILED after the cut: \(e.message)" }
            return "verify: ok through head \(report.head)"
                + (outstanding.isEmpty ? "" : "; an earlier failure of another kind still stands in `status`: " + Trust.printable(outstanding[0].failure))
        } catch {
            return "the log could not be verified after the cut (\(describeError(error))); run `syncledger verify`"
        }
    }
}
