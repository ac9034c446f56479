import Domain
import EventLog
import Foundation

/// The outcome of the last `verify`, kept in `state/verify.json`: reading the views does not
/// re-read the log, so a scrub does, and `status` and every read command report a failed one.
public struct VerifyRecord: Codable, Sendable, Equatable {
    /// When the verify finished (ISO 8601).
    public var at: String
    /// The head it verified through (`SEQ:HASH`): the last intact batch when it failed.
    public var head: String
    public var ok: Bool
    public var events: UInt64
    /// The first problem, when it failed.
    public var error: String?
    /// What failed: `log` (damage in the log; also a record written before this field), `views`
    /// (`verify --views` found rows that differ from the log) or `expected_head` (`--expect-head`
    /// was not found in the log). `repair` and `sync` say what to do by it (review: a view
    /// difference or a mistyped head was taken for damage needing a backup).
    public var kind: String?
    /// Set when no verify made this record: the command that met damage in the log while
    /// reading it (`rebuild`, `as-of`, `log`, …), which `status` would not have seen until the
    /// next verify (hostile test: `status` said ok). `at`, `head` and `events` stay the last
    /// verify's (`at` empty when none ran: the verify-age metrics still say when one last ran).
    public var foundBy: String?
    /// When `foundBy` met the damage (ISO 8601).
    public var foundAt: String?
    /// Earlier failures of other kinds that still stand beside this record (`outstanding`):
    /// `verify.json` held one record, and a failed verify of another kind replaced a standing
    /// one (views failed, then a wrong head failed and was put right: `status` read ok while the
    /// views still differed; hostile test). Absent when none.
    public var standing: [VerifyRecord]?

    public static let logDamage = "log", viewsDiffer = "views", expectedHead = "expected_head"

    /// This failure and those standing beside it.
    public var failures: [VerifyRecord] { ok ? [] : [self] + (standing ?? []).filter { !$0.ok } }

    /// The failures of `last` (and those standing beside it) that a verify leaves standing: not
    /// those of a kind it checked and found fine, nor those of the kind it failed on itself (its
    /// own record is the newer word). `checkedViews`: it compared the views and they matched;
    /// `checkedHead`: it was given an expected head and the log held it; `logOK`: it read the
    /// whole log without damage; `failedKind`: what it failed on, nil when it passed.
    public static func outstanding(after last: VerifyRecord?, logOK: Bool, checkedViews: Bool, checkedHead: Bool,
                                   failedKind: String?) -> [VerifyRecord] {
        (last?.failures ?? []).filter { f in
            let kind = f.kind ?? logDamage
            if kind == failedKind { return false }
            switch kind {
            case viewsDiffer: return !checkedViews
            case expectedHead: return !checkedHead
            default: return !logOK
            }
        }.map { f in
            var f = f
            f.standing = nil
            return f
        }
    }

    /// What a verify records: its own record, or (when it passed) the first failure of `last`
    /// it did not check, with the others standing beside it (`outstanding`, which it also returns).
    public func merged(after last: VerifyRecord?, logOK: Bool, checkedViews: Bool, checkedHead: Bool)
        -> (recorded: VerifyRecord, outstanding: [VerifyRecord]) {
        let outstanding = Self.outstanding(after: last, logOK: logOK, checkedViews: checkedViews, checkedHead: checkedHead,
                                           failedKind: ok ? nil : kind)
        var recorded = self
        if let first = outstanding.first {
            if ok {
                recorded = first
                recorded.standing = outstanding.count > 1 ? Array(outstanding.dropFirst()) : nil
            } else {
                recorded.standing = outstanding
            }
        }
        return (recorded, outstanding)
    }

    public init(at: String, head: String, ok: Bool, events: UInt64, error: String?, kind: String? = nil, foundBy: String? = nil,
                foundAt: String? = nil) {
        self.at = at
        self.head = head
        self.ok = ok
        self.events = events
        self.error = error
        self.kind = ok ? nil : kind ?? Self.logDamage
        self.foundBy = ok ? nil : foundBy
        self.foundAt = ok ? nil : foundAt
    }

    /// What failed, without the remedy: "the last verify (AT) failed: …", or for damage a
    /// command met, "`rebuild` found the log damaged at AT: …". `time` shows `at`.
    public func summary(time: (String) -> String = { $0 }) -> String {
        var error = error ?? "the log is damaged"
        // The messages end in a full stop; what follows is joined with "; " ("seq 3.; what…").
        // One stop only (an ellipsis stays), and never the whole text.
        if error.count > 1, error.hasSuffix("."), !error.hasSuffix("..") { error.removeLast() }
        if let foundBy { return "`\(foundBy)` found the log damaged at \(time(foundAt ?? at)): \(error)" }
        return "the last verify (\(time(at))) failed: \(error)"
    }

    /// `summary()` of each failure that stands (`failures`), joined: the alert and the read
    /// commands' warning named only the first, so a second kind went unseen outside `status`.
    public func summaries(time: (String) -> String = { $0 }) -> String {
        let all = failures
        return all.isEmpty ? summary(time: time) : all.map { $0.summary(time: time) }.joined(separator: "; and ")
    }

    /// A failed verify's one line: what failed and what to do.
    public var failure: String {
        let what = summary()
        switch kind ?? Self.logDamage {
        case Self.viewsDiffer: return what + "; `syncledger rebuild` folds the views again from the log, and a `syncledger verify --views` that passes clears this"
        case Self.expectedHead: return what + "; if the head you expected is right, events it covered are gone (restore them from a backup), else a `syncledger verify --expect-head` with the right head clears this"
        default: return what + "; damage inside the log needs the segment restored from a backup (then `syncledger verify`), "
            + "or with no backup, `syncledger repair --accept-loss REASON --cut-damaged`"
        }
    }
}

public enum Scrub {
    public static func path(_ store: Store) -> String { store.statePath + "/verify.json" }

    /// Records a verify's outcome (atomically; owner-only).
    public static func record(_ record: VerifyRecord, in store: Store) throws {
        try writeStateRecord(record, to: path(store), in: store)
    }

    /// The last recorded verify, nil when none was recorded (or the file is unreadable).
    public static func last(_ store: Store) -> VerifyRecord? {
        guard let data = FileManager.default.contents(atPath: path(store)) else { return nil }
        return try? JSONDecoder().decode(VerifyRecord.self, from: data)
    }

    /// Records damage in the log that `command` met while reading it (`error`, one line), as a
    /// failed verify found by that command, so that `status`, the read commands and the
    /// server's `verify_failed` alert say so until a verify passes. A failure already recorded
    /// is kept (it says since when); nothing in a store this process must not write.
    ///
    /// Only damage in a segment: a damaged `state/head` (the head evidence, no segment named)
    /// is mended by `repair`, not by restoring a segment, and is said by every command anyway.
    /// Two commands meeting the damage at once may both write; either record says the same.
    public static func recordDamage(_ error: LogError, foundBy command: String, in store: Store) throws {
        guard error.isCorruption, error.segment != nil, error.code != .headMismatch, error.code != .lostEvents,
              store.isWritable else { return }
        let last = last(store)
        if let last, !last.ok { return }
        let words = error.message.split(whereSeparator: \.isNewline).joined(separator: " ")
        try record(VerifyRecord(at: last?.at ?? "", head: last?.head ?? "none", ok: false, events: last?.events ?? 0,
                                error: words, kind: VerifyRecord.logDamage, foundBy: command,
                                foundAt: ISOTime.format(millis: ISOTime.nowMillis())), in: store)
    }
}

/// Writes a small record of the store's state as one line of JSON with sorted keys (atomically;
/// owner-only), making `state/` when missing. `exclusive`: linked into place, failing when the
/// file exists, instead of replacing it.
func writeStateRecord(_ value: some Encodable, to path: String, in store: Store, exclusive: Bool = false) throws {
    try makeDirectories(store.statePath)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let bytes = Array(try encoder.encode(value)) + [10]
    if exclusive { try writeNewFile(path, bytes) } else { try writeFileAtomically(path, bytes) }
}

extension Store {
    /// False when this process must not write the store: a file or directory it would write is
    /// not writable for it, or has lost its owner-write bit (`chmod -R a-w`, which does not stop
    /// root: the bit is honoured anyway, so an auditor's read-only copy is only read).
    public var isWritable: Bool {
        let fm = FileManager.default
        for p in [path, logPath, statePath, projectionsPath] where fm.fileExists(atPath: p) {
            if access(p, W_OK) != 0 { return false }
            var st = stat()
            if stat(p, &st) == 0 && st.st_mode & S_IWUSR == 0 { return false }
        }
        return true
    }

    /// Throws one line when the store is not writable for this process (`isWritable`): for the
    /// commands that must write it (`sync`, `forget`, `repair`), which otherwise failed on the
    /// first file they touched, with SQLite's "attempt to write a readonly database" or a
    /// permission message saying the store must belong to a user it did belong to.
    public func requireWritable(for command: String) throws {
        guard !isWritable else { return }
        throw LedgerError("the store \(path) is read-only for this user (a file or directory in it cannot be written, or lost its write bit): "
                          + "`\(command)` must write it; run it as the store's owner on a writable store")
    }
}

/// A damaged page of the views database that a command met (`state/views-damaged.json`): SQLite
/// finds damage only in the pages it reads, so `status`, which reads few, would otherwise say
/// ok while `appointments` or `verify --views` fail. Kept until a rebuild of every view (or a
/// `verify --views` that read every row) succeeds.
public struct ViewsDamageRecord: Codable, Sendable, Equatable {
    /// When it was met (ISO 8601).
    public var at: String
    /// The command that met it (`appointments`, `verify`, …).
    public var command: String
    /// SQLite's words.
    public var error: String

    public init(at: String, command: String, error: String) {
        self.at = at
        self.command = command
        self.error = error
    }

    public static func path(_ store: Store) -> String { store.statePath + "/views-damaged.json" }

    /// The problem `status` (and `GET /api/v1/status`) reports while it is recorded.
    public var problem: String { problem(time: { $0 }) }

    /// The same, its time shown by `time` (`status`'s table: in the practice's zone).
    public func problem(time: (String) -> String) -> String {
        "the views database was found damaged by `\(command)` at \(time(at)) (\(error)); `syncledger rebuild` recreates it from the log"
    }

    /// Records it (atomically; owner-only). The first record is kept until cleared: it says
    /// since when the views have been damaged.
    public static func record(_ record: ViewsDamageRecord, in store: Store) throws {
        let path = path(store)
        if FileManager.default.fileExists(atPath: path) { return }
        do {
            // Never overwriting: of two processes recording at once, the first record stays.
            try writeStateRecord(record, to: path, in: store, exclusive: true)
        } catch where FileManager.default.fileExists(atPath: path) {
            return
        }
    }

    /// Records damage that `command` met just now, in SQLite's words (joined into one line);
    /// nothing in a store this process must not write (an auditor's read-only copy).
    public static func record(by command: String, error: String, in store: Store) throws {
        guard store.isWritable else { return }
        let words = error.split(whereSeparator: \.isNewline).joined(separator: " ")
        try record(ViewsDamageRecord(at: ISOTime.format(millis: ISOTime.nowMillis()), command: command, error: words), in: store)
    }

    /// The recorded damage, nil when none is recorded. A record that cannot be read or decoded
    /// still says the views were found damaged.
    public static func last(_ store: Store) -> ViewsDamageRecord? {
        guard FileManager.default.fileExists(atPath: path(store)) else { return nil }
        guard let data = FileManager.default.contents(atPath: path(store)),
              let record = try? JSONDecoder().decode(ViewsDamageRecord.self, from: data) else {
            return ViewsDamageRecord(at: "unknown", command: "unknown", error: "the record \(path(store)) cannot be read")
        }
        return record
    }

    /// Forgets the damage: the views were rebuilt, or read whole without a fault.
    public static func clear(_ store: Store) throws {
        guard unlink(path(store)) == 0 || errno == ENOENT else {
            throw LedgerError("cannot remove \(path(store)): \(String(cString: strerror(errno)))")
        }
    }
}

/// The cuts `repair --cut-damaged` made that no recorded loss names yet (`state/cut-pending.json`):
/// each is noted before any byte moves and the note cleared once the loss naming it is appended,
/// so a repair killed between its cut and its record, or one whose record failed, leaves the next
/// repair to name it (the record named only the last cut, and a cut could be named by none:
/// cold review).
public enum CutPending {
    public static func path(_ store: Store) -> String { store.statePath + "/cut-pending.json" }

    /// The note: each cut's description, oldest first, and the ledger's own records the cuts held
    /// (`held`, envelope lines). Written by earlier versions as an array of descriptions alone.
    struct Note: Codable {
        var cuts: [String]
        var held: [String]
    }

    static func note(_ store: Store) -> Note? {
        guard let data = FileManager.default.contents(atPath: path(store)) else { return nil }
        if let note = try? JSONDecoder().decode(Note.self, from: data) { return note }
        if let cuts = try? JSONDecoder().decode([String].self, from: data) { return Note(cuts: cuts, held: []) }
        return Note(cuts: ["a cut whose note in state/cut-pending.json cannot be read (see log/cut-*/)"], held: [])
    }

    /// The cuts noted (their descriptions, oldest first); none when there is no note.
    public static func read(_ store: Store) -> [String] { note(store)?.cuts ?? [] }

    /// The records the noted cuts held (`LossRecorded.cutHeld`), oldest cut first.
    public static func held(_ store: Store) -> [String] { note(store)?.held ?? [] }

    public static func add(_ description: String, held: [String] = [], in store: Store) throws {
        let before = note(store) ?? Note(cuts: [], held: [])
        try writeStateRecord(Note(cuts: before.cuts + [description], held: before.held + held), to: path(store), in: store)
    }

    public static func clear(_ store: Store) {
        unlink(path(store))
    }
}
