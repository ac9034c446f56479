import Domain
import EventLog
import Foundation
import Ledger
import Projections

/// `syncledger forget --patient ID --reason TEXT` (DESIGN.md, "Forgettable").
public enum Forget {
    public struct Outcome: Sendable {
        public var patientId: String
        /// False when the patient had been forgotten before (nothing appended this time).
        public var appended: Bool
        public var head: LogHead
        /// The damaged views files `rebuild` had moved aside, deleted with the views: they held
        /// the patient's rows.
        public var removedViewsCopies: [String] = []
        /// Those that could not be deleted, with why: they still hold the patient's rows.
        public var keptViewsCopies: [(path: String, why: String)] = []
        /// The patient's key file was missing or did not open: what was sealed under it could
        /// not be read before the forget either.
        public var keyWasLost = false
        /// Already forgotten, but a key file of theirs was back in the key store: destroyed again.
        public var keyDestroyedAgain = false
        /// Other patients whose keys are lost too, read as forgotten in the views it folded: they
        /// read so until their keys are restored (then `rebuild`) or they are forgotten.
        public var othersReadAsForgotten: [String] = []
    }

    /// Destroys the patient's key, appends `patient.forgotten` (roster id, time, reason) and
    /// purges the views (the database file is deleted and folded again from the log, so no page
    /// of it keeps the old rows). Holds the writer lock throughout, so no sync runs meanwhile.
    /// The master key is checked before anything is written.
    /// `onWaitingForRebuild`: called once when bringing the views up to date must wait for another
    /// process's rebuild of them (`ProjectionStore.onWaitingForRebuild`).
    public static func run(store: Store, patientId: String, reason: String, keyLost: Bool = false, waitLock: Double? = nil,
                           keys: KeyRing? = nil,
                           onWaitingForRebuild: (@Sendable (_ holderPid: String?) -> Void)? = nil,
                           onWaitingForWriter: ((_ lock: String) -> Void)? = nil) throws -> Outcome {
        let trimmed = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw LedgerError("--reason must say why (it is recorded in the log)") }
        guard !patientId.isEmpty else { throw LedgerError("--patient needs a roster patient id") }
        try store.requireWritable(for: "forget")
        let given = try keys ?? KeyRing.open(directory: store.keysPath, create: false)
        let alreadyForgotten = given.isForgotten(patientId)
        // `--key-lost`: the patient's key file is missing or damaged, so every read of their
        // sealed parts fails, `sync` and `rebuild` for the whole store with them, and so did
        // this forget, the one way out (hostile test). Asked for by name, never assumed: a
        // wrong or partial `--keys` looks the same.
        let lost = keyLost && !alreadyForgotten
        // A copy of the key store (`--keys`) while the store's own holds the patient's key: that
        // key would survive while the log records the patient as forgotten, and every command
        // reading with the store's own keys would show them (hostile test: "key destroyed").
        let own = store.path + "/keys"  // the store's own, not `keysPath` (which --keys sets)
        if !alreadyForgotten, ProjectionStore.resolvedPath(given.directory) != ProjectionStore.resolvedPath(own),
           KeyRing.hasKeyFile(directory: own, patient: patientId), !KeyRing.isForgotten(directory: own, patient: patientId) {
            throw LedgerError("the store's own key store \(own) holds a key file of patient \(patientId), which forgetting through --keys "
                              + "\(given.directory) would leave behind: forget with the store's own key store; nothing was changed")
        }
        if lost {
            guard given.keyIsLostOrDamaged(patientId) else {
                throw LedgerError("the key file of patient \(patientId) in \(given.directory) is there and opens (or cannot be read by this user): "
                                  + "--key-lost is only for a key that is missing or damaged; nothing was changed")
            }
        }
        // Every lost or damaged key reads as forgotten in this pass (another patient's may be
        // lost too), through a ring of its own; the views stay as they are until the tombstone
        // is written (read into memory below).
        let keys = lost ? given.lostKeysReadAsForgotten() : given
        // Checked before the writer lock is taken: a refused forget writes nothing at all.
        // The keys must be this log's: with another store's `keys/` in place, the patient's real
        // key would survive while the log recorded them as forgotten (the other patients' parts
        // do not open then).
        let (recorded, rosters, forgetRecorded) = try recordedPatients(store, keys, onWaitingForRebuild, inMemory: lost, forgetting: patientId)
        if lost {
            // Decided from every recorded roster, whose patient ids are in the clear, not from
            // the views' last roster, where patients read as forgotten may be missing (cold review).
            let others = Set(rosters.flatMap { $0.organizations.flatMap(\.patients) }.map(\.id))
                .subtracting([patientId]).filter { !KeyRing.isForgotten(directory: given.directory, patient: $0) }
            if !others.isEmpty, !keys.openedAnyKey {
                throw LedgerError("none of the other patients' keys opens in \(given.directory) either (wrong --keys directory?); nothing was changed")
            }
        }
        // The reason is recorded in the clear, for good: a name in it could never be forgotten.
        // Every roster counts: the patient forgotten has often left the last one already.
        let people = rosters.flatMap { $0.organizations.flatMap(\.patients) }
        if let problem = people.personalDataProblem(in: trimmed) {
            throw LedgerError("--reason \(problem); it is recorded in the log for good, so say why without personal data (for example \"the patient's request of 2026-12-01\")")
        }
        if !alreadyForgotten {
            // A lost key's patient may be left out of the views' last roster: another lost-key
            // forget folded them as forgotten. Any recorded roster naming them will do then.
            guard try keys.existingKey(for: patientId) != nil || recorded.contains(patientId)
                    || (lost && people.contains { $0.id == patientId }) else {
                throw LedgerError("patient \(patientId) has no key and is in no recorded roster; nothing to forget (use the roster's \"id\")")
            }
        }
        let writer: LedgerWriter
        do {
            writer = try LedgerWriter(store: store, waitLock: waitLock, onWaitingForLock: onWaitingForWriter)
        } catch let e as LogError where e.code == .locked {
            throw LedgerError(LedgerWriter.lockedLine(e.message, waited: waitLock) + "; nothing was changed")
        }
        defer { writer.close() }
        var appended = false
        // (Not `keys.isForgotten`: the ring presumes a patient whose key was lost forgotten.)
        // A tombstone without its event (a forget that failed after destroying the key, say
        // on a key file it could not delete) is completed: the event is appended now. It was
        // never appended, and the patient could be forgotten no more (hostile test).
        // `forgetRecorded` was read before the lock: a tombstone that appeared since is another
        // forget's, which appended its event before it let the lock go (cold review).
        let tombstoned = KeyRing.isForgotten(directory: keys.directory, patient: patientId)
        let recordedNow = forgetRecorded || (!alreadyForgotten && tombstoned)
        let at = ISOTime.format(millis: ISOTime.nowMillis())
        // A key file back beside the tombstone (restored from a backup) is destroyed again.
        let keyBack = tombstoned && recordedNow && KeyRing.hasKeyFile(directory: keys.directory, patient: patientId)
        if !tombstoned || !recordedNow || keyBack {
            try keys.destroyKey(for: patientId, at: at)
        }
        if !tombstoned || !recordedNow {
            try writer.append([NewEvent(
                type: .patientForgotten, run: nil, stream: Streams.patient(patientId),
                data: encodeData(PatientForgotten(patientId: patientId, forgottenAt: at, reason: trimmed)))])
            appended = true
        }
        try purgeViews(store, keys: keys)
        let (removed, kept) = removeMovedAsideViews(store)
        return Outcome(patientId: patientId, appended: appended, head: writer.head, removedViewsCopies: removed, keptViewsCopies: kept,
                       keyWasLost: lost && appended, keyDestroyedAgain: keyBack, othersReadAsForgotten: lost ? keys.presumedForgotten.filter { $0 != patientId } : [])
    }

    /// Deletes the damaged views files `rebuild` moved aside (`ProjectionStore.movedAsideViews`):
    /// copies of old views, which hold the rows the purge removed. A symlink among them (how a
    /// rebuild before stop 44 moved a symlinked views file aside) goes with the file it points
    /// to and that file's -wal and -shm. Every one is tried; returns those deleted and those
    /// that could not be (with why), for the caller to say.
    static func removeMovedAsideViews(_ store: Store) -> (removed: [String], kept: [(path: String, why: String)]) {
        var removed: [String] = [], kept: [(path: String, why: String)] = []
        func delete(_ path: String) -> Bool {
            if unlink(path) == 0 || errno == ENOENT { return true }
            kept.append((path, String(cString: strerror(errno))))
            return false
        }
        for path in ProjectionStore.movedAsideViews(store) {
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) != nil {
                let target = ProjectionStore.resolvedPath(path)
                var st = stat()
                if target != path, lstat(target, &st) == 0, st.st_mode & S_IFMT == S_IFREG {
                    guard ["", "-wal", "-shm"].map({ delete(target + $0) }).allSatisfy({ $0 }) else { continue }
                    removed.append(target)
                }
            }
            if delete(path) { removed.append(path) }
        }
        return (removed, kept)
    }

    /// The patient ids of the last recorded roster (from the views, brought up to date), and every
    /// recorded roster as read with `keys`: each roster patient's part is sealed under their
    /// key, so keys that are not this log's throw here (the error names the patient whose part
    /// does not open), before anything is written.
    static func recordedPatients(_ store: Store, _ keys: KeyRing, _ onWaitingForRebuild: (@Sendable (String?) -> Void)?,
                                 inMemory: Bool = false, forgetting patientId: String)
        throws -> (ids: Set<String>, rosters: [RosterObserved], forgetRecorded: Bool)
    {
        let reader = try LedgerReader(store: store, keys: keys)
        let views = try ProjectionStore(store: store, readOnly: inMemory)
        views.onWaitingForRebuild = onWaitingForRebuild
        try views.catchUp(reader)
        let rosters = try views.recordedRosters(reader)
        let forgetRecorded = !(try views.streamSeqs(Streams.patient(patientId), types: [.patientForgotten])).isEmpty
        return (try views.rosterPatientIds(), rosters, forgetRecorded)
    }

    /// Deletes the views database (and its WAL) and folds it again from the log
    /// (`ProjectionStore.refold`).
    public static func purgeViews(_ store: Store, keys: KeyRing) throws {
        try ProjectionStore.refold(store, LedgerReader(store: store, keys: keys), why: "purge the views")
    }
}
