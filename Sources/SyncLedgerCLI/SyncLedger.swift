import Allocator
import ArgumentParser
import Domain
import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import Synchronization

@main
struct SyncLedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "syncledger",
        abstract: "An event-sourced ledger of IntakeQ appointments: sync, views, history, audit.",
        discussion: """
            Every appointment fetched from IntakeQ becomes an immutable event in an append-only, \
            LZ4-compressed, checksummed, hash-chained log; SQLite views are folded from it.

            The store is --store DIR, else $SYNCLEDGER_STORE, else ./ledger-data. \
            The IntakeQ API key comes from $INTAKEQ_API_KEY and is never printed. \
            Personal data in the log is encrypted per patient under keys in --keys DIR (default STORE/keys), \
            wrapped by the master key in the file $SYNCLEDGER_MASTER_KEY_FILE names (else STORE/keys/master.key). \
            Start with `syncledger demo` to see the whole story on bundled fixtures.
            """,
        // The allocator and SQLite's threading mode are named so a user (and CLIBinaryTests) can
        // see jemalloc serves this process and SQLite takes no mutex per call.
        version: "0.1.0 (\(Allocator.name); \(SQLiteSettings.summary))",
        subcommands: [
            SyncCommand.self, StatusCommand.self, AppointmentsCommand.self, MeetingURLsCommand.self,
            LocationsCommand.self, SyncLogsCommand.self, HistoryCommand.self, AsOfCommand.self,
            VerifyCommand.self, RebuildCommand.self, RepairCommand.self, ExportCommand.self, LogCommand.self,
            UpcomingCommand.self, ChangesCommand.self, ForgetCommand.self, KeysCommand.self, DemoCommand.self,
            ServeCommand.self, TokenCommand.self, AlertCommand.self, PostgresCommand.self,
        ]
    )

    /// `syncledger [--store DIR] <command> …`: ArgumentParser reads an option only after the
    /// subcommand that declares it, so the global `--store` is moved behind the command name.
    static func main() async {
        // Over a file-size limit (ulimit -f) the kernel would kill us with SIGXFSZ; ignored, the
        // write fails with EFBIG and the user gets the log's "file too large" message instead.
        signal(SIGXFSZ, SIG_IGN)
        // Everything SyncLedger creates holds patient data: owner-only, whatever the caller's umask.
        umask(0o077)
        _ = SQLiteSettings.applied
        let args = hoistGlobalOptions(joinNegativeTimes(Array(CommandLine.arguments.dropFirst())))
        do {
            var command = try parseAsRoot(args)
            DamageWitness.command(command, args: args)
            if let c = command as? any JSONOutputCommand, c.json { Output.jsonFailures = true }
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            // A usage error (exit 64) is one line, as every other failure, naming the help to
            // read (ArgumentParser's block of "Error:", "Usage:" and "See …" was 3–6 lines),
            // and given --json, that line as JSON too. (An ExitCode comes from a command that
            // ran: `guarded` printed what there was.)
            let code = exitCode(for: error).rawValue
            if !(error is ExitCode), code == ExitCode.validationFailure.rawValue {
                let message = message(for: error).split(whereSeparator: \.isNewline).first.map(String.init) ?? "bad arguments"
                let line = "syncledger: \(message) (`\(helpCommand(args))` lists the options)"
                warn(line)
                if jsonRequested(args) { printFailureJSON(line, code: code) }
                Glibc.exit(code)
            }
            if !(error is ExitCode), code != 0, jsonRequested(args) {
                let line = fullMessage(for: error).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
                printFailureJSON(line, code: code)
            }
            exit(withError: error)
        }
    }

    /// `syncledger [SUBCOMMAND…] --help` for the deepest subcommand `args` name.
    static func helpCommand(_ args: [String]) -> String {
        var words = ["syncledger"]
        var level: [any ParsableCommand.Type] = configuration.subcommands
        for arg in args {
            guard let next = level.first(where: { $0.configuration.commandName == arg }) else { break }
            words.append(arg)
            level = next.configuration.subcommands
        }
        return (words + ["--help"]).joined(separator: " ")
    }

    /// Whether `args` (already hoisted) name a command that prints JSON and hold `--json`, for
    /// an error met before the command was parsed whole.
    static func jsonRequested(_ args: [String]) -> Bool {
        let given = args.prefix { $0 != "--" }
        guard given.contains("--json"), let name = given.first,
              let type = configuration.subcommands.first(where: { $0.configuration.commandName == name }) else { return false }
        return type is any JSONOutputCommand.Type
    }
}

/// A command whose `--json` prints its result as JSON. Given `--json`, a failure before there
/// is a result (the one line on stderr, a non-zero exit) also prints one JSON object on stdout:
/// `{"error": "<that line>", "exit_code": N}`. A command that gains `--json` joins this list.
protocol JSONOutputCommand: ParsableCommand {
    var json: Bool { get }
}

extension SyncCommand: JSONOutputCommand {}
extension StatusCommand: JSONOutputCommand {}
extension AppointmentsCommand: JSONOutputCommand {}
extension MeetingURLsCommand: JSONOutputCommand {}
extension LocationsCommand: JSONOutputCommand {}
extension SyncLogsCommand: JSONOutputCommand {}
extension HistoryCommand: JSONOutputCommand {}
extension AsOfCommand: JSONOutputCommand {}
extension VerifyCommand: JSONOutputCommand {}
extension UpcomingCommand: JSONOutputCommand {}
extension ChangesCommand: JSONOutputCommand {}

/// `{"error": line, "exit_code": code}` on stdout, for a command given `--json` that failed.
func printFailureJSON(_ line: String, code: Int32) {
    print(Output.json(.object(["error": .string(line), "exit_code": .number(Double(code))])))
}

/// Moves leading `--store DIR` / `--store=DIR` and `--keys DIR` / `--keys=DIR` behind the first
/// subcommand name (`--keys` in front was an unknown option, hostile test).
/// `--since -1h` given as `--since=-1h`: the parser took "-1h" for an option and said "Missing
/// value for '--since'", where the command says what is wrong with a negative time (hostile
/// test). Only the time options, only a value that starts with a minus and a digit.
func joinNegativeTimes(_ args: [String]) -> [String] {
    let timed: Set<String> = ["--since", "--from", "--to", "--now"]
    var out: [String] = []
    var i = 0
    while i < args.count {
        let a = args[i]
        if a == "--" { return out + args[i...] }
        if timed.contains(a), i + 1 < args.count, args[i + 1].hasPrefix("-"),
           args[i + 1].dropFirst().first?.isNumber == true {
            out.append(a + "=" + args[i + 1])
            i += 2
            continue
        }
        out.append(a)
        i += 1
    }
    return out
}

func hoistGlobalOptions(_ args: [String]) -> [String] {
    var globals: [String] = []
    var rest = args[...]
    while let first = rest.first {
        if first == "--store" || first == "--keys", rest.count >= 2 {
            globals += rest.prefix(2)
            rest = rest.dropFirst(2)
        } else if first.hasPrefix("--store=") || first.hasPrefix("--keys=") {
            globals.append(first)
            rest = rest.dropFirst()
        } else {
            break
        }
    }
    // Only in front of a real subcommand: for a typo, the parser's own "unexpected argument"
    // names the typo instead of complaining about --store.
    let names = Set(SyncLedgerCommand.configuration.subcommands.compactMap { $0.configuration.commandName } + ["help"])
    guard !globals.isEmpty, let command = rest.first else { return args }
    guard names.contains(command) else { return Array(rest) }
    // A command with subcommands of its own (`token new`): behind the nested name, which declares it.
    if let type = SyncLedgerCommand.configuration.subcommands.first(where: { $0.configuration.commandName == command }),
       rest.count >= 2, type.configuration.subcommands.contains(where: { $0.configuration.commandName == rest[rest.startIndex + 1] }) {
        return [command, rest[rest.startIndex + 1]] + globals + Array(rest.dropFirst(2))
    }
    return [command] + globals + Array(rest.dropFirst())
}

struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The store directory (default: $SYNCLEDGER_STORE, else ./ledger-data).", valueName: "DIR"))
    var store: String?

    @Option(name: .long, help: ArgumentHelp("The key store directory (default: STORE/keys); its master key comes from the file $SYNCLEDGER_MASTER_KEY_FILE names, else STORE/keys/master.key.", valueName: "DIR"))
    var keys: String?

    var path: String { Store.resolvePath(store) }

    /// An empty `--store ""` (or `--keys ""`, an unset shell variable) is refused: it would
    /// otherwise fall back to the default store without a word.
    func validate() throws {
        if store?.isEmpty == true { throw ValidationError("--store is empty: give the store's directory") }
        if keys?.isEmpty == true { throw ValidationError("--keys is empty: give the key store's directory") }
    }

    /// Opens the existing store with the key store these options name.
    func open() throws -> Store {
        var store = try Store.open(path)
        store.keysDirectory = keys
        return store
    }
}

/// A failure to report: one line on stderr, then this exit code.
struct CLIFailure: Error {
    var message: String
    var code: Int32 = 1
    /// The error this one reports, when another (a damaged views database, for `DamageWitness`).
    var underlying: (any Error)?
}

/// Runs a command body; any error becomes one line on stderr and a non-zero exit, never a trace.
func guarded(_ body: () async throws -> Int32) async throws {
    let code: Int32
    do {
        code = try await body()
        DamageWitness.sayWarning()
    } catch let e as CLIFailure {
        DamageWitness.note(e.underlying ?? e)
        throw failed("syncledger: " + e.message, code: e.code)
    } catch let e as ExitCode {
        throw e
    } catch let e as ValidationError {
        // A usage error found once the command ran (a time that needs the practice's zone):
        // said as ArgumentParser's are, one line naming the help, exit 64.
        throw e
    } catch {
        DamageWitness.note(error)
        throw failed("syncledger: \(describeError(error))", code: 1)
    }
    if code != 0 { throw ExitCode(code) }
}

/// A command body that threw, before it printed a result: its line on stderr (and, given
/// `--json`, as a JSON object on stdout), and the exit code to throw.
private func failed(_ line: String, code: Int32) -> ExitCode {
    warn(line)
    if Output.jsonFailures { printFailureJSON(line, code: code) }
    return ExitCode(code)
}

func describeError(_ error: any Error) -> String {
    // A views database damaged under a running command (a corrupt page met mid-query).
    if !(error is ViewsDamaged), ViewsDamaged.isDamage(error) {
        return "the views database projections.sqlite is damaged (\(error)); `syncledger rebuild` recreates it from the log (the damaged file is moved aside)"
            .split(whereSeparator: \.isNewline).joined(separator: " ")
    }
    // A full disk: said as such, with what to do (SQLite's "database or disk is full - while
    // executing COMMIT TRANSACTION", or Foundation's "Error Domain=NSCocoaErrorDomain Code=640",
    // named neither the cause nor the remedy; hostile test).
    if let full = diskFullWords(error) { return full }
    // One line, whatever the error: a multi-line description would read like a trace.
    return String(describing: error).split(whereSeparator: \.isNewline).joined(separator: " ")
}

/// One line for an error that says the disk is full, or nil.
func diskFullWords(_ error: any Error) -> String? {
    let advice = "free space there and run the command again (what was committed before is kept)"
    if ViewsDamaged.isDiskFull(error) {
        return ViewsDamaged.diskFullWords + ": " + advice
    }
    let ns = error as NSError
    if ns.domain == NSCocoaErrorDomain && ns.code == NSFileWriteOutOfSpaceError {
        let path = (ns.userInfo[NSFilePathErrorKey] as? String).map { " (writing \($0))" } ?? ""
        return "the disk is full\(path): " + advice
    }
    if ns.domain == NSPOSIXErrorDomain && ns.code == Int(ENOSPC) {
        return "the disk is full: " + advice
    }
    return nil
}

/// Opens a store for reading and brings the views up to the log's head first. Refuses a log
/// that lost acknowledged events; warns (one line) when the last verify failed. A store this
/// process must not write is read only: its views are copied into memory and any lag is folded
/// there (one note on stderr), nothing is saved.
///
/// `inMemoryOnFullDisk` (default: `catchUp`): when the disk under the views is full, read them into
/// memory instead of failing (not for `rebuild`, which must write them).
func openForRead(_ options: StoreOptions, catchUp: Bool = true, warnScrub: Bool = true,
                 warnDamage: Bool = true, inMemoryOnFullDisk: Bool? = nil) throws -> (Store, LedgerReader, ProjectionStore) {
    let store = try options.open()
    try refuseIfLost(store)
    let writable = store.isWritable
    let reader = try LedgerReader(store: store)
    if !writable { reader.log.rewritesIndexFiles = false }
    if warnScrub, let last = Scrub.last(store), !last.ok {
        // Said once the command has answered: one that meets the damage itself fails with its
        // own one line instead (it printed both).
        DamageWitness.warnOnSuccess("warning: \(last.summaries()); what is served may be damaged (see `syncledger status`)")
    }
    if warnScrub, warnDamage, let damage = ViewsDamageRecord.last(store) {
        // Said once the command has answered: a command that meets the damage itself fails
        // with its own one line instead.
        DamageWitness.warnOnSuccess(
            "warning: the views database was found damaged by `\(damage.command)` at \(damage.at); what is shown may be incomplete: "
            + "`syncledger rebuild` recreates it from the log")
    }
    // A full disk under the views: they are read into memory, as for a read-only store.
    let fallBack = writable && (inMemoryOnFullDisk ?? catchUp)
    var diskFull = false
    var views: ProjectionStore
    do {
        views = try openViews(store, readOnly: !writable)
    } catch where fallBack && ViewsDamaged.isDiskFull(error) {
        diskFull = true
        views = try inMemoryAfterFullDisk(store, error)
    }
    if catchUp {
        let progress = ProgressLine()
        var report: FoldReport
        do {
            report = try views.catchUp(reader, progress: progress.fold)
        } catch where fallBack && ViewsDamaged.isDiskFull(error) && !views.inMemory {
            // Opened, but the fold's writes did not fit: the same as a full disk at the open.
            progress.finish()
            diskFull = true
            views = try inMemoryAfterFullDisk(store, error)
            report = try views.catchUp(reader, progress: progress.fold)
        }
        progress.finish()
        for note in report.notes { warn("note: " + note) }
        if diskFull {
            // Said below.
        } else if views.inMemory && !report.rebuilt.isEmpty {
            // (Rebuilt events are not counted in `applied`: "folded 0 event(s)" read as nothing done.)
            warn("note: the store is read-only: \(report.rebuilt.count == 1 ? "a view" : "views") had to be rebuilt from the log; "
                 + "rebuilt in memory for this command (nothing saved)")
        } else if views.inMemory && report.applied > 0 {
            warn("note: the store is read-only: the views were behind the log; folded \(report.applied) event(s) in memory for this command (nothing saved)")
        }
        if !report.quarantined.isEmpty {
            warn("warning: \(report.quarantined.count) event(s) could not be applied and were quarantined (see `syncledger rebuild`)")
        }
    }
    if diskFull {
        // Every read, `status` and `export --out` to another disk too, failed on a full disk
        // (hostile test). `status` counts it as a problem (`viewsDiskFull`).
        viewsDiskFull.withLock { $0 = true }
        warn("warning: \(ViewsDamaged.diskFullWords): the views were read into memory\(catchUp ? " and brought up to the log" : "") "
             + "for this command (nothing saved); free space there")
    }
    return (store, reader, views)
}

/// Set when `openForRead` read the views into memory because the disk under them is full:
/// `status` counts that as a problem (its monitor saw the failure before; a status that answers
/// "ok" from memory would hide the full disk, cold review).
let viewsDiskFull = Mutex(false)

/// The views read into memory after a full disk stopped their open or their catch-up. The copy
/// goes to the temporary directory, which may be on the same full disk: then the full disk
/// (`full`) is said, not the copy's failure (cold review).
func inMemoryAfterFullDisk(_ store: Store, _ full: any Error) throws -> ProjectionStore {
    do { return try openViews(store, readOnly: true) } catch { throw full }
}

/// The views database, read-only (an in-memory copy) when asked or when it cannot be written.
/// A damaged file is one line saying so and that `syncledger rebuild` recreates it.
func openViews(_ store: Store, readOnly: Bool) throws -> ProjectionStore {
    do {
        let views = try ProjectionStore(store: store, readOnly: readOnly)
        views.onWaitingForRebuild = sayWaitingForRebuild
        return views
    } catch let e as ViewsDamaged {
        throw CLIFailure(message: e.description, underlying: e)
    } catch is ViewsNotWritable {
        return try openViews(store, readOnly: true)
    }
}

/// The note a command prints once when it must wait for another process's rebuild of the views.
@Sendable func sayWaitingForRebuild(_ holderPid: String?) {
    warn("waiting for another rebuild of these views to finish (\(holderPid.map { "pid \($0)" } ?? "another process")); Ctrl-C stops waiting")
}

/// Parses an ISO 8601 time given on the command line, or fails with a clear message.
func parseTime(_ text: String, option: String) throws -> Int64 {
    guard let ms = ISOTime.parse(text) else {
        throw CLIFailure(message: "\(option) '\(text)' is not an ISO 8601 time (for example 2026-11-26 or 2026-11-26T09:00:00Z)")
    }
    return ms
}
