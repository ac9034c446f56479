import CSQLiteTuning
import Foundation

/// SQLite's process-wide settings, applied once before the first connection opens: multi-thread
/// mode (GRDB gives each connection to one queue at a time, so SQLite's mutex around every call
/// on a connection — `bind`, `step`, `reset` — guards nothing) and no memory statistics (a
/// global mutex around each of SQLite's allocations). A rebuild makes some ten million such
/// calls; the mutexes were ~4 % of its CPU (BENCHMARKS.md, stop 41). And statement journals
/// stay in memory up to 4 MiB (`statementJournalSpill`). SQLite's default moves one to a
/// temporary file past 64 KiB, and a statement whose trigger runs (the `UPDATE` that applies a
/// `sync.completed`, which keeps `sync_log_totals`) journals each page it changes, 16 KiB each
/// in the views: four pages passed the limit, and from then on every statement journal of that
/// transaction went to the file, a quarter of a 1M-event rebuild's `pwrite`s (BENCHMARKS.md,
/// stop 43).
///
/// SQLite accepts these only before it initializes, that is before any connection in the
/// process opens, and `sqlite3_config` must not run while another thread opens one: the
/// executables (`syncledger`, the benchmark) apply them first thing, on their one thread. A
/// library user (the tests) that does not stays in SQLite's default, serialized mode; applied
/// late they change nothing.
public enum SQLiteSettings {
    /// True when the settings took effect (the first evaluation applies them).
    public static let applied: Bool = syncledger_sqlite_tune(statementJournalSpill) == 1

    /// How large a statement journal may grow in memory before SQLite writes it to a temporary
    /// file: 4 MiB, or the bytes `SYNCLEDGER_SQLITE_STATEMENT_JOURNAL_SPILL` names (65536 is
    /// SQLite's own default, for comparing; anything but a whole number from 0 to 64 MiB is
    /// ignored: SQLite allocates an in-memory journal in pieces of this size, hence the bound).
    static var statementJournalSpill: Int32 {
        if let text = ProcessInfo.processInfo.environment["SYNCLEDGER_SQLITE_STATEMENT_JOURNAL_SPILL"],
            let bytes = Int32(text), (0...(64 << 20)).contains(bytes)
        {
            return bytes
        }
        return 4 << 20
    }

    /// True when connections opened from now on take no per-connection mutex (opens one in
    /// memory: asked before `applied`, it would settle the serialized mode).
    static var multiThread: Bool { syncledger_sqlite_multithread() == 1 }

    /// "SQLite 3.40.1, multi-thread" (or "serialized"): what `syncledger --version` names, after
    /// applying the settings if nothing has yet.
    public static var summary: String {
        _ = applied
        return "SQLite \(String(cString: syncledger_sqlite_version())), \(multiThread ? "multi-thread" : "serialized")"
    }
}
