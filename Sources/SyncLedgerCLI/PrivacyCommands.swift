import ArgumentParser
import Foundation
import Ledger
import PostgresSink
import Sync

struct ForgetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Forget a patient: destroy their key, record patient.forgotten, purge the views.",
        discussion: """
            Destroys the patient's key in the key store, appends a patient.forgotten event (roster id, \
            time, reason; no personal data) and folds the views again, so no readable byte of the log, \
            the views or a new export holds their name, email, phone, date of birth, notes or IntakeQ \
            client id (damaged views files `rebuild` moved aside are deleted too, and named). Their appointments read as "(forgotten)"; other patients, including those in the \
            same group appointments, are untouched; verify and --expect-head of earlier heads still pass. \
            Later syncs leave the patient out even if the roster still lists them. Events recorded before \
            encryption existed (clear, v1) keep their bytes in the log: every read path hides them, but \
            the log files still hold them (docs/FORMAT.md, "Forgetting").
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: ArgumentHelp("The roster patient id (the roster's \"id\").", valueName: "ID")) var patient: String
    @Option(help: ArgumentHelp("Why (recorded in the log for good, so no personal data: a reason naming a roster patient or their email, or holding a client id or a phone number, is refused).", valueName: "TEXT")) var reason: String
    @Flag(help: "The patient's key file is missing or damaged (no backup holds it): forget them all the same. Every command that reads their sealed data stops on such a key until then.")
    var keyLost = false
    @Option(parsing: .unconditional, help: ArgumentHelp("Wait this long for a running sync instead of failing at once.", valueName: "SECONDS"))
    var waitLock: Double?
    @Option(help: ArgumentHelp("Purge the PostgreSQL views too (default: $SYNCLEDGER_POSTGRES_URL when set).", valueName: "URL"))
    var postgres: String?
    @Option(help: ArgumentHelp("The PostgreSQL schema for --postgres.", valueName: "NAME")) var postgresSchema = PostgresSink.defaultSchema

    func validate() throws {
        if let w = waitLock, !(w >= 0 && w.isFinite) { throw ValidationError("--wait-lock must be a number of seconds, 0 or more") }
    }

    func run() async throws {
        try await guarded {
            let store = try storeOptions.open()
            let outcome = try Forget.run(store: store, patientId: patient, reason: reason, keyLost: keyLost, waitLock: waitLock,
                                         onWaitingForRebuild: sayWaitingForRebuild,
                                         onWaitingForWriter: { [waitLock] in warn(LedgerWriter.waitingLine($0, upTo: waitLock ?? 0)) })
            // The views were folded into a new file: damage recorded in the old one is gone
            // (`status` and the alert kept reporting it until a rebuild; cold review).
            DamageWitness.clear(store)
            if outcome.keyWasLost {
                print("forgot patient \(patient): their key was already missing or damaged (what was sealed under it could not be read "
                      + "anyway), patient.forgotten recorded, views purged; head \(outcome.head)")
            } else if outcome.appended {
                print("forgot patient \(patient): key destroyed, patient.forgotten recorded, views purged; head \(outcome.head)")
            } else if outcome.keyDestroyedAgain {
                print("patient \(patient) was already forgotten; a key file of theirs, back in the key store, destroyed again; views purged again; head \(outcome.head)")
            } else {
                print("patient \(patient) was already forgotten; views purged again; head \(outcome.head)")
            }
            if !outcome.othersReadAsForgotten.isEmpty {
                warn("note: the keys of \(outcome.othersReadAsForgotten.joined(separator: ", ")) are lost too: their appointments read as forgotten "
                     + "in the views until their keys are restored (then `syncledger rebuild`) or they are forgotten (`--key-lost`)")
            }
            if !outcome.removedViewsCopies.isEmpty {
                let names = outcome.removedViewsCopies.map { ($0 as NSString).lastPathComponent }
                print("deleted \(names.count) damaged views file\(names.count == 1 ? "" : "s") that `rebuild` had moved aside "
                      + "(they held the patient's rows): \(names.joined(separator: ", "))")
            }
            for (path, why) in outcome.keptViewsCopies {
                warn("syncledger: \(path), a damaged views file `rebuild` moved aside, still holds the patient's rows and could not be deleted: \(why); delete it by hand")
            }
            // PostgreSQL is purged whatever happened above; a copy left behind still fails the command.
            let postgres = try await purgePostgres(store)
            return postgres ?? (outcome.keptViewsCopies.isEmpty ? 0 : 1)
        }
    }
}

extension ForgetCommand {
    /// With a PostgreSQL sink: one catch-up, which re-ships the forgotten patient's appointments
    /// as the purged views now hold them. Returns an exit code when that failed (the log and the
    /// SQLite views are already purged; PostgreSQL still holds the old rows until it succeeds).
    func purgePostgres(_ store: Store) async throws -> Int32? {
        guard let text = postgres ?? ProcessInfo.processInfo.environment[PostgresURL.environmentVariable], !text.isEmpty else {
            return nil
        }
        let sink = try PostgresSink(url: PostgresSinkEntry.resolveURL(text), schema: postgresSchema)
        do {
            let report = try await sink.withRunning { try await $0.catchUp(store: store) }
            print("PostgreSQL views \(sink.schema) at \(sink.url.redacted) purged too; at seq \(report.seq)")
            return nil
        } catch {
            DamageWitness.note(error)
            warn("syncledger: the patient is forgotten in the log and the views, but the PostgreSQL views still hold their rows: \(describeError(error)); run `syncledger postgres sync` to purge them")
            return 4
        }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage the master key of the key store.",
        subcommands: [KeysInitCommand.self])
}

struct KeysInitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a new random master key to a file (0600; never overwrites).",
        discussion: """
            Keep the file apart from the store and its backups, then set SYNCLEDGER_MASTER_KEY_FILE to \
            its path for every syncledger command. A store's key store is bound to the master key it \
            was created with.
            """)
    @Option(help: ArgumentHelp("The file to create.", valueName: "FILE")) var masterKeyFile: String

    func run() async throws {
        try await guarded {
            try KeyRing.writeNewMasterKey(to: masterKeyFile)
            // Named by its absolute path: a relative one, set in cron or a service unit, would be
            // looked up in whatever directory the command runs in (hostile test).
            let absolute = ProtectedPaths.resolved(masterKeyFile) ?? masterKeyFile
            print("wrote a new master key to \(absolute); set SYNCLEDGER_MASTER_KEY_FILE=\(absolute)")
            return 0
        }
    }
}
