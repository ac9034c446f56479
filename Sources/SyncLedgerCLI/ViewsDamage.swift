import ArgumentParser
import Domain
import EventLog
import Foundation
import Ledger
import PostgresSink
import Projections
import Synchronization

/// A command that meets a damaged views database says so for `status` (`ViewsDamageRecord`):
/// SQLite finds damage only in the pages it reads, and `status` reads few of them. `main` notes
/// the command's name and its store (`--store`); `guarded` (any command's error, unwrapping a
/// `CLIFailure` or a `SinkError`) and `sync` (its views' catch-up) record the damage.
enum DamageWitness {
    private struct State {
        var command = "syncledger"
        var storePath: String?
        var warnings: [String] = []
    }
    private static let state = Mutex(State())

    /// Notes the parsed command's name (`args`, hoisted: `postgres sync`, not `sync`) and, when it
    /// has `StoreOptions`, its store's path.
    static func command(_ command: any ParsableCommand, args: [String]) {
        var name = type(of: command).configuration.commandName ?? "syncledger"
        if let first = args.first,
           let top = SyncLedgerCommand.configuration.subcommands.first(where: { $0.configuration.commandName == first }) {
            name = first
            if args.count > 1, top.configuration.subcommands.contains(where: { $0.configuration.commandName == args[1] }) {
                name += " " + args[1]
            }
        }
        let options = Mirror(reflecting: command).children.lazy.compactMap { ($0.value as? OptionGroup<StoreOptions>)?.wrappedValue }.first
        state.withLock {
            $0.command = name
            $0.storePath = options?.path
        }
    }

    /// A warning to print once the command has run without an error (a command that fails
    /// says its own one line instead).
    static func warnOnSuccess(_ line: String) { state.withLock { $0.warnings.append(line) } }

    /// Prints the pending warnings, if any (once).
    static func sayWarning() {
        for line in state.withLock({ s -> [String] in defer { s.warnings = [] }; return s.warnings }) { warn(line) }
    }

    /// Records `error` when it says the views database is damaged, in the store this command
    /// opened, unless the store is read-only (an auditor's copy is not written). Best effort: the
    /// command's own line says what happened either way.
    static func note(_ error: any Error) {
        if let wrapped = (error as? SinkError)?.underlying { return note(wrapped) }
        if let words = ViewsDamaged.words(of: error) { record(words) }
        if let e = error as? LogError, e.isCorruption {
            let (command, path) = state.withLock { ($0.command, $0.storePath) }
            // `verify` records its own outcome.
            guard command != "verify", let path, let store = try? Store.open(path) else { return }
            try? Scrub.recordDamage(e, foundBy: command, in: store)
        }
    }

    /// Records damage in SQLite's words (first record kept; nothing in a read-only store).
    static func record(_ error: String) {
        let (command, path) = state.withLock { ($0.command, $0.storePath) }
        guard let path, let store = try? Store.open(path) else { return }
        try? ViewsDamageRecord.record(by: command, error: error, in: store)
    }

    /// Forgets recorded damage once every view was rebuilt or read whole; a failure is a warning.
    static func clear(_ store: Store) {
        guard ViewsDamageRecord.last(store) != nil else { return }
        do {
            try ViewsDamageRecord.clear(store)
        } catch {
            warn("warning: could not clear the record of damaged views: \(describeError(error))")
        }
    }
}
