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

    public init(at: String, head: String, ok: Bool, events: UInt64, error: String?) {
        self.at = at
        self.head = head
        self.ok = ok
        self.events = events
        self.error = error
    }
}

public enum Scrub {
    public static func path(_ store: Store) -> String { store.statePath + "/verify.json" }

    /// Records a verify's outcome (atomically; owner-only).
    public static func record(_ record: VerifyRecord, in store: Store) throws {
        try makeDirectories(store.statePath)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try writeFileAtomically(path(store), Array(try encoder.encode(record)) + [10])
    }

    /// The last recorded verify, nil when none was recorded (or the file is unreadable).
    public static func last(_ store: Store) -> VerifyRecord? {
        guard let data = FileManager.default.contents(atPath: path(store)) else { return nil }
        return try? JSONDecoder().decode(VerifyRecord.self, from: data)
    }
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
}
