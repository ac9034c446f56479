import CSQLiteTuning
import Foundation

/// SQLite's process-wide settings, applied once before the first connection opens: multi-thread
/// mode (GRDB gives each connection to one queue at a time, so SQLite's mutex around every call
/// on a connection — `bind`, `step`, `reset` — guards nothing) and no memory statistics (a
/// global mutex around each of SQLite's allocations). A rebuild makes some ten million such
/// calls; the mutexes were ~4 % of its CPU (BENCHMARKS.md, stop 41).
///
/// Statement journals keep SQLite's default (in memory up to 64 KiB, then a temporary file).
/// Stop 43 raised that to 4 MiB, which made Debian's SQLite 3.40 fail the `DROP TABLE` of a
/// rebuild's swap over views of ~40,000 events or more with "database or disk is full"
/// (`CLIBinaryTests.aRebuildOverLargeViewsReplacesThem`); the setting had changed no timing.
///
/// SQLite accepts these only before it initializes, that is before any connection in the
/// process opens, and `sqlite3_config` must not run while another thread opens one: the
/// executables (`syncledger`, the benchmark) apply them first thing, on their one thread. A
/// library user (the tests) that does not stays in SQLite's default, serialized mode; applied
/// late they change nothing.
public enum SQLiteSettings {
    /// True when the settings took effect (the first evaluation applies them).
    public static let applied: Bool = syncledger_sqlite_tune() == 1

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
