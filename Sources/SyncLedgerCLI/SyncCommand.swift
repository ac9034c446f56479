import ArgumentParser
import Domain
import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Logging
import Projections
import Service
import Sync
import Synchronization

struct SyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Run one sync: fetch appointments from IntakeQ and append what changed.",
        discussion: """
            Scope: no --org/--patient syncs every roster organization (automated_daily); --org ID one \
            organization (manual_org_bulk); --patient ID one roster patient (manual_patient). \
            Exit status: 0 completed, 2 partial_success (or completed with its events durable in the log but \
            the views not updated, said on stderr and as views_error in --json; the next command catches them up, \
            unless the views database is damaged: then `syncledger rebuild`), \
            1 failed. Prints one summary line and the \
            new head (SEQ:HASH), an anchor an auditor can write down.
            """
    )

    @OptionGroup var storeOptions: StoreOptions
    @Option(help: ArgumentHelp("The roster JSON file: organizations, patients with intakeq_client_id, practitioners.", valueName: "FILE"))
    var roster: String
    @Option(help: ArgumentHelp("Sync one roster organization.", valueName: "ID")) var org: String?
    @Option(help: ArgumentHelp("Sync one roster patient.", valueName: "ID")) var patient: String?
    @Option(help: ArgumentHelp("Override the sync type label: automated_daily, manual_org_bulk, manual_patient, webhook.", valueName: "T"))
    var type: String?
    @Option(help: ArgumentHelp("IntakeQ API base URL.", valueName: "URL")) var baseURL = "https://intakeq.com/api/v1"
    @Option(help: ArgumentHelp("Centre of the window (ISO 8601); default: the clock.", valueName: "ISO8601")) var now: String?
    @Option(parsing: .unconditional, help: "Days before now in the window (0–3650).") var daysBack = 90
    @Option(parsing: .unconditional, help: "Days after now in the window (0–3650).") var daysAhead = 90
    @Option(parsing: .unconditional, help: "Client-side limit per minute (IntakeQ's base plan allows 10).") var requestsPerMinute = 10
    @Option(parsing: .unconditional, help: "API calls allowed in any 24 hours, counted across runs (base plan: 500).") var dailyBudget = 500
    @Option(parsing: .unconditional, help: ArgumentHelp("Wait up to this long for another writer to finish instead of failing at once.", valueName: "SECONDS"))
    var waitLock: Double?
    @Option(parsing: .unconditional, help: "Retries of a request after 429 or 5xx.") var maxRetries = 4
    @Option(parsing: .unconditional, help: ArgumentHelp("Per-request timeout (at most 3600).", valueName: "SECONDS")) var timeout = 30.0
    @Option(help: "Who started the run, for sync_logs.") var triggeredBy = "cli"
    @Flag(help: "Log debug details on stderr (may include patient names).") var verbose = false
    @Flag(help: "Print the run's summary as one JSON object (for a \"Refresh\" button) instead of the summary line.") var json = false
    @Option(help: .hidden) var pageCap = 200

    func validate() throws {
        try refuseBlank([("--org", org), ("--patient", patient), ("--now", now)])
        if org != nil, patient != nil { throw ValidationError("give --org or --patient, not both") }
        if let type, !syncTypes.contains(type) {
            throw ValidationError("--type \(type) is not a sync type; the sync types are: \(syncTypes.joined(separator: ", "))")
        }
        // Only a run of the whole roster may count as the nightly one (status --max-age watches it).
        if type == "automated_daily", org != nil || patient != nil {
            throw ValidationError("--type automated_daily is the nightly run of the whole roster; a run with --org or --patient cannot be labelled so")
        }
        guard pageCap > 0 else { throw ValidationError("--page-cap must be positive") }
        guard (0...3650).contains(daysBack), (0...3650).contains(daysAhead) else {
            throw ValidationError("--days-back and --days-ahead must be between 0 and 3650")
        }
        guard requestsPerMinute > 0, dailyBudget > 0 else {
            throw ValidationError("--requests-per-minute and --daily-budget must be positive")
        }
        guard maxRetries >= 0, maxRetries <= 20, timeout > 0, timeout <= 3600 else {
            throw ValidationError("--max-retries must be 0...20 and --timeout more than 0 and at most 3600 seconds")
        }
        if let w = waitLock, !(w >= 0 && w.isFinite) { throw ValidationError("--wait-lock must be a number of seconds, 0 or more") }
        guard let url = URL(string: baseURL), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host != nil else {
            throw ValidationError("--base-url '\(baseURL)' is not an http(s) URL (for example https://intakeq.com/api/v1)")
        }
        if let now, ISOTime.parse(now) == nil {
            throw ValidationError("--now '\(now)' is not an ISO 8601 time (for example 2026-11-26T10:00:00Z)")
        }
    }

    func run() async throws {
        try await guarded {
            let key = try apiKey()
            // Everything that can be checked before touching the store is checked first.
            let rosterValue = try Roster.load(path: roster)
            var nowMillis: Int64?
            if let now {
                // A time without an offset is the practice's local time.
                let zone = try rosterValue.timezone.map(PracticeZone.load) ?? .utc
                do { nowMillis = try TimeInput.parse(now).start(in: zone) } catch let e as LocalTimeError {
                    throw CLIFailure(message: "--now " + e.message)
                }
            }
            // Recorded in the clear for good (the run's `sync.started`, sync_logs): no patient in
            // it. Checked here, on what an operator typed: the server's own runs ("webhook",
            // "api:NAME") are not refused for a patient whose address begins "web@" (review).
            let people = rosterValue.allPatients
            if let problem = people.personalDataProblem(in: triggeredBy) {
                throw CLIFailure(message: "--triggered-by \(problem); it is recorded in the log for good, so name who started the run without personal data (for example \"cron\" or \"front desk\")")
            }
            var request = SyncRequest(roster: rosterValue, organizationId: org, patientId: patient, syncType: type,
                                      now: nowMillis.map { Date(timeIntervalSince1970: Double($0) / 1000) },
                                      daysBack: daysBack, daysAhead: daysAhead, triggeredBy: triggeredBy)
            request.pageCap = pageCap
            try request.validate()
            // SIGINT/SIGTERM cancel the run's task: fetching stops, the run is recorded as
            // failed ("interrupted") with what it had, and the exit status is 130/143. Before
            // the run begins, they also stop a catch-up of the views that waits for another
            // process's rebuild or rebuilds them (between its transactions): nothing is recorded.
            let interrupts = Interrupts.watch()
            defer { interrupts.stop() }
            // A log the last verify found damaged (in a sealed segment the append never reads):
            // the run goes on, as the read commands do, but says so (hostile test: it said nothing).
            if let store = try? storeOptions.open(), let last = Scrub.last(store), !last.ok {
                let more = last.failures.count - 1
                warn("warning: " + last.failure + (more > 0 ? " (and \(more) more failure\(more == 1 ? "" : "s"))" : "")
                     + "; syncing does not mend it (see `syncledger status`)")
            }
            var logger = Logger(label: "syncledger")
            logger.logLevel = verbose ? .debug : .warning
            var config = SyncConfiguration(
                storePath: storeOptions.path, request: request, apiKey: key, baseURL: baseURL,
                policy: RateLimitPolicy(requestsPerMinute: requestsPerMinute, dailyBudget: dailyBudget),
                waitLock: waitLock, maxRetries: maxRetries, timeoutSeconds: timeout, logger: logger)
            config.keysPath = storeOptions.keys
            config.onWaitingForRebuild = sayWaitingForRebuild
            config.onWaitingForWriter = { [waitLock] lock in
                warn(LedgerWriter.waitingLine(lock, upTo: waitLock ?? 0))
            }
            let task = Task { [config] in try await runSync(config) }
            interrupts.onSignal { task.cancel() }
            let outcome: SyncOutcome
            do {
                outcome = try await task.value
            } catch where interrupts.requested && Self.stoppedBeforeTheRun(error) {
                // Stopped before the run began: waiting for another sync, or while its catch-up
                // of the views waited for another process's rebuild of them or folded them.
                let what: String
                switch error {
                case let stopped as FoldInterrupted where stopped.beforeStart:
                    what = " while it waited for another rebuild of the views to finish"
                case let stopped as FoldInterrupted where stopped.catchingUp:
                    what = " while it brought the views up to date (what it folded is kept)"
                case is FoldInterrupted:
                    what = " while it rebuilt the views (they are as they were)"
                case let e as SyncSessionError where e.code == .locked:
                    what = " while it waited for another writer to finish"
                default:
                    what = ""
                }
                throw CLIFailure(message: "sync interrupted\(what), before the run began: nothing was fetched or recorded",
                                 code: interrupts.exitCode ?? 130)
            }
            if json {
                print(Output.json(outcome.json))
            } else {
                print(outcome.summaryLine)
            }
            reportProblems(outcome)
            // A failed run keeps to its one line; the notice comes with the first run that records.
            if outcome.exitCode != 1 { for n in outcome.notices { warn(n) } }
            if let viewsError = outcome.viewsError {
                if outcome.viewsDamaged { DamageWitness.record(viewsError) }
                // Damage in the log where the views read it: recorded for `status` as any command
                // that meets it records it (it said the next command would catch the views up).
                if let damage = outcome.logDamage { DamageWitness.note(damage) }
                // Damaged views are not caught up by the next command: only a rebuild mends them.
                let remedy = outcome.logDamage != nil
                    ? "the log is damaged where the views read it: restore that segment from a backup (`syncledger verify` checks the whole log)"
                    : outcome.viewsDamaged
                    ? "the views database is damaged: `syncledger rebuild` recreates it from the log (the damaged file is moved aside)"
                    : "the next command catches them up"
                warn("syncledger: the run's events are durable in the log (head \(outcome.head)) but the views could not be updated "
                     + "(\(viewsError)); \(remedy)")
            }
            if let code = interrupts.exitCode { return code }
            return outcome.exitCode
        }
    }
}

extension SyncCommand {
    /// An error with which a cancelled run stopped before it recorded anything.
    static func stoppedBeforeTheRun(_ error: any Error) -> Bool {
        error is FoldInterrupted || error is CancellationError || (error as? SyncSessionError)?.code == .locked
    }
}

/// The API key: `$INTAKEQ_API_KEY`, else the file named by `$INTAKEQ_API_KEY_FILE` (cron has no
/// secrets in its environment). Never printed, whatever goes wrong.
/// `sync` and `serve` read it alike.
func apiKey() throws -> String {
    let env = ProcessInfo.processInfo.environment
    if let key = env["INTAKEQ_API_KEY"], !key.isEmpty { return try sendable(key, from: "INTAKEQ_API_KEY") }
    if let path = env["INTAKEQ_API_KEY_FILE"], !path.isEmpty {
        let data: [UInt8]
        switch readInputFile(path, limit: 4096) {
        case .success(let bytes): data = bytes
        case .failure(let why): throw CLIFailure(message: "INTAKEQ_API_KEY_FILE \(path) \(why)")
        }
        let key = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !key.isEmpty else {
            throw CLIFailure(message: "INTAKEQ_API_KEY_FILE \(path) is empty: put the practice's IntakeQ API key in it")
        }
        guard !key.contains(where: \.isNewline) else {
            throw CLIFailure(message: "INTAKEQ_API_KEY_FILE \(path) holds more than one line: put only the API key in it")
        }
        return try sendable(key, from: "INTAKEQ_API_KEY_FILE \(path)")
    }
    throw CLIFailure(message: "INTAKEQ_API_KEY is not set: export the practice's IntakeQ API key (IntakeQ: Settings > Integrations > Developer API), or name a file holding it in INTAKEQ_API_KEY_FILE")
}

/// The key without surrounding white space (a file with Windows line ends read by `$(cat …)`
/// leaves a carriage return), refused when anything else in it cannot go in a header: such a
/// key failed the first request with an error that printed it, and the run's failure put it in
/// the log for good (hostile test). Where the character is, never the key.
func sendable(_ raw: String, from source: String) throws -> String {
    let key = raw.trimmingCharacters(in: .whitespacesAndNewlines)
    guard !key.isEmpty else { throw CLIFailure(message: "\(source) is blank: it must hold the practice's IntakeQ API key") }
    if let bad = key.unicodeScalars.firstIndex(where: { !(0x21...0x7E).contains($0.value) }) {
        let at = key.unicodeScalars.distance(from: key.unicodeScalars.startIndex, to: bad) + 1
        throw CLIFailure(message: "\(source): character \(at) of the API key is a control character, a space or not ASCII, "
                         + "which cannot be sent to IntakeQ; set the key again (it is not printed)")
    }
    return key
}

extension SyncOutcome {
    /// `sync --json`: the run's summary as one object.
    var json: JSONValue {
        .object([
            "run_id": .string(runId), "sync_type": .string(syncType), "status": .string(status),
            "new": .number(Double(counts.new)), "updated": .number(Double(counts.updated)),
            "unchanged": .number(Double(counts.unchanged)), "removed": .number(Double(counts.removed)),
            "errors": .number(Double(counts.errors)), "patients_processed": .number(Double(counts.patientsProcessed)),
            "patients_failed": .number(Double(counts.patientsFailed)), "intakeq_api_calls": .number(Double(api.calls)),
            "duration_ms": .number(Double(durationMs)), "head": .string(head.description),
            "warnings": .array(warnings.map(JSONValue.string)), "error_message": errorMessage.map(JSONValue.string) ?? .null,
            // Why a completed run exits 2: its events are in the log, the views were not updated.
            "views_error": viewsError.map(JSONValue.string) ?? .null,
        ])
    }
}

func reportProblems(_ outcome: SyncOutcome) {
    if outcome.status != "completed", let m = outcome.errorMessage { warn("syncledger: sync \(outcome.status): \(m)") }
    for a in outcome.abandoned { warn("note: run \(a) had started and never completed; recorded it as abandoned") }
    for w in outcome.warnings.prefix(5) { warn("warning: " + w) }
    if outcome.warnings.count > 5 { warn("warning: … and \(outcome.warnings.count - 5) more (see `syncledger sync-logs --json`)") }
}

/// Runs one sync through the library's `SyncSession`, with a progress line on a terminal.
func runSync(_ config: SyncConfiguration, showProgress: Bool = true) async throws -> SyncOutcome {
    var config = config
    let progress = ProgressLine()
    if showProgress { config.progress = { @Sendable (text: String) in progress.update(text, force: true) } }
    defer { progress.finish() }
    do {
        return try await SyncSession.run(config)
    } catch let e as SyncSessionError where !Task.isCancelled {
        // (Cancelled, it stays itself: `SyncCommand` says the run was interrupted before it began.)
        throw CLIFailure(message: e.message)
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "The last run of each sync type, the head, projection lag and the last verify; exit 1 when the daily sync is failing or stale, the last verify failed, a command found the views database damaged, or the master key does not open the key store or a roster patient's key.",
        discussion: """
            A run still marked in_progress while no writer holds the store's lock died (the process \
            was killed or the machine stopped): it is reported as failed. For each sync type: the last \
            run, the last successful one and the reason of the last failure.
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Option(parsing: .unconditional, help: "Hours after which the last automated_daily run counts as stale.") var maxAge = 26.0
    @Option(help: ArgumentHelp("The practice's time zone the table's times are shown in, IANA (default: the roster's \"timezone\", else UTC; --json always gives UTC).", valueName: "ZONE"))
    var timezone: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard maxAge.isFinite, maxAge >= 0 else { throw ValidationError("--max-age must be a number of hours, 0 or more (for example 26)") }
        try refuseBlank([("--timezone", timezone)])
        try checkTimezoneOption(timezone)
    }

    func run() async throws {
        try await guarded {
            let (store, reader, views) = try openForRead(storeOptions, warnScrub: false)
            // The table's times in the practice's zone, as every other view shows them (the table
            // showed UTC: the evening's nightly run read as the next day's, hostile test). Without
            // --timezone a roster zone that cannot be read leaves UTC: status must not fail for it.
            // --json keeps every time as recorded.
            let zone = json ? .utc : try timezone.map { try PracticeZone.load($0) }
                ?? (try? ReadContext(views: views, timezone: nil).zone) ?? .utc
            func local(_ ms: Int64) -> String { LocalFormat.table(ms, zone) }
            func local(_ v: JSONValue?) -> String {
                guard case .string(let s)? = v, let ms = ISOTime.parse(s) else { return Output.text(v) }
                return local(ms)
            }
            func local(_ s: String) -> String { local(.string(s)) }
            var report = try StatusReport.read(store: store, reader: reader, views: views, maxAgeHours: maxAge,
                                               time: json ? { $0 } : local)
            if viewsDiskFull.withLock({ $0 }) {
                report.problems.append("\(ViewsDamaged.diskFullWords): the views were read into memory to answer; free space there")
            }
            // The key store and master key the next sync needs: a wrong or missing
            // SYNCLEDGER_MASTER_KEY_FILE, or keys/ gone, went unnoticed here until the nightly
            // sync failed on it (hostile test). A store with no key store and nothing sealed (a
            // new one) has no problem: its first sync makes one.
            if FileManager.default.fileExists(atPath: store.keysPath + "/master.check") {
                do {
                    let ring = try KeyRing.open(directory: store.keysPath, create: false)
                    // A master key other users may read opens every patient's data for them
                    // (hostile test: a 644 key file was taken without a word).
                    if let exposed = ring.masterKeyExposure { report.problems.append(exposed) }
                    // And every roster patient's key, which `sync` (the last roster) and
                    // `rebuild` (every roster) open: one deleted or damaged key file failed both
                    // while this said ok (hostile test). Each recorded roster holds a part sealed
                    // under each of its patients' keys (a forgotten patient's reads as forgotten).
                    _ = try views.recordedRosters(reader)
                    // A patient the log records as forgotten whose key file is there again (a key
                    // store restored from a backup taken before the forget): their data opens
                    // once more, and the views show it after a rebuild (hostile test).
                    let forgotten = try views.forgottenPatients()
                    let back = forgotten.filter { KeyRing.hasKeyFile(directory: store.keysPath, patient: $0) }.sorted()
                    if !back.isEmpty {
                        report.problems.append("the log records \(back.joined(separator: ", ")) as forgotten, but \(store.keysPath) holds "
                            + "\(back.count == 1 ? "their key" : "their keys") again (restored from a backup?): "
                            + "`syncledger forget --patient ID --reason …` destroys \(back.count == 1 ? "it" : "each") again")
                    }
                    // A tombstone the log does not record: it hides the patient's data as forgotten
                    // though no forget was recorded (one that did not finish, or one copied from
                    // another store's key store; cold review).
                    let unrecorded = KeyRing.tombstonedPatients(directory: store.keysPath).filter { !forgotten.contains($0) }
                    if !unrecorded.isEmpty {
                        report.problems.append("\(store.keysPath)/forgotten marks \(unrecorded.joined(separator: ", ")) as forgotten, but the log "
                            + "records no forget of \(unrecorded.count == 1 ? "them" : "these patients"): their data reads as forgotten; "
                            + "`syncledger forget --patient ID --reason …` records it, or, if the mark came from another store, remove it")
                    }
                } catch {
                    // Every lost or damaged key, not the first only: the operator found the
                    // others one `forget` at a time (hostile test). Read again with a ring that
                    // takes them as forgotten, which names them; one alone keeps its own words.
                    let lenient = (try? KeyRing.open(directory: store.keysPath, create: false))?.lostKeysReadAsForgotten()
                    if let lenient, let again = try? LedgerReader(store: store, keys: lenient), (try? views.recordedRosters(again)) != nil,
                       lenient.presumedForgotten.count > 1 {
                        let ids = lenient.presumedForgotten
                        report.problems.append("the key files of \(ids.count) patients are missing or damaged in \(store.keysPath): "
                                               + "\(ids.joined(separator: ", ")) (restore them from a backup, or "
                                               + "`syncledger forget --patient ID --key-lost --reason …` for each)")
                    } else {
                        report.problems.append("\(error)")
                    }
                }
            } else if let missing = try SyncSession.missingKeyStore(store, named: storeOptions.keys) {
                report.problems.append(missing)
            } else {
                // No key store yet: the first sync makes one, with the master key the variable names.
                do { _ = try KeyRing.namedMasterKeyFile(keys: store.keysPath) } catch { report.problems.append("\(error)") }
            }
            if json {
                print(Output.json(.object(report.json)))
            } else {
                print("head \(report.head)")
                print("views applied through seq \(report.applied) (lag \(report.lag))")
                if let v = report.lastVerify {
                    let before = report.recordedLoss.map { $0.postdates(v) } == true
                        ? " (before the loss recorded at seq \(report.recordedLoss!.seq); run `syncledger verify`)" : ""
                    if v.foundBy != nil {
                        print(TerminalText.safe(v.summary(time: local)) + " (no verify since: `syncledger verify` checks the whole log)")
                    } else {
                        print("last verify \(local(v.at)): \(v.ok ? "ok" : "FAILED") through head \(v.head)" + before)
                    }
                } else {
                    print("last verify: never (run `syncledger verify`)")
                }
                // Lines that quote text from outside (IntakeQ's and SQLite's errors, a repair's
                // reason, alerts as sent) print through TerminalText.safe: no escape sequence of
                // theirs reaches the terminal.
                if let loss = report.recordedLoss { print(TerminalText.safe(loss.line(time: local))) }
                let table = report.latest.keys.sorted().map { t -> [String] in
                    let r = report.latest[t]!
                    return [t, Output.text(r["status"]), local(r["started_at"]), String(format: "%.1f h", report.ageHours(r)),
                            report.lastSuccess[t].map { local($0["started_at"]) } ?? "never"]
                }
                if !table.isEmpty { print(Output.table(["sync_type", "status", "started_at", "age", "last_success"], table)) }
                for t in report.lastFailure.keys.sorted() {
                    let f = report.lastFailure[t]!
                    print(TerminalText.safe("last failure of \(t) (\(local(f["started_at"]))): \(Output.text(f["error_message"]))"))
                }
                for line in report.health.lines(time: local) { print(TerminalText.safe(line)) }
                for p in report.problems { print(TerminalText.safe("problem: " + p)) }
                if report.ok { print("ok") }
            }
            return report.ok ? 0 : 1
        }
    }
}
