import ArgumentParser
import Foundation
import Ledger
import PostgresSink

/// `syncledger postgres sync|rebuild`: the views in PostgreSQL, for many readers.
struct PostgresCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgres",
        abstract: "Ship the views to PostgreSQL (the seed's schema shape), exactly once.",
        discussion: """
            The URL comes from --url or $SYNCLEDGER_POSTGRES_URL \
            (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]); a password left out of the \
            URL is read from $PGPASSFILE. Passwords are never printed.
            """,
        subcommands: [PostgresSyncCommand.self, PostgresRebuildCommand.self])
}

struct PostgresOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The PostgreSQL URL (default: $SYNCLEDGER_POSTGRES_URL).", valueName: "URL"))
    var url: String?
    @Option(help: ArgumentHelp("The schema the views go to.", valueName: "NAME"))
    var schema: String = PostgresSink.defaultSchema

    func sink() throws -> PostgresSink {
        try PostgresSink(url: PostgresSinkEntry.resolveURL(url), schema: schema)
    }
}

struct PostgresSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Catch the PostgreSQL views up with the log (creating the schema the first time).",
        discussion: """
            The SQLite views catch up first; then the rows that changed since the sink's checkpoint \
            and the new checkpoint commit in one PostgreSQL transaction. A sink built from another \
            log (its checkpoint's chain hash differs) or by another version is rebuilt.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var options: PostgresOptions

    func run() async throws {
        try await guarded {
            let sink = try options.sink()
            let store = try Store.open(storeOptions.path)
            let report = try await sink.withRunning { try await $0.catchUp(store: store) }
            for note in report.notes { warn("note: " + note) }
            if report.rebuilt {
                print("rebuilt \(sink.schema) at \(sink.url.redacted): \(report.rows) rows, at seq \(report.seq)")
            } else if report.events == 0 {
                print("\(sink.schema) at \(sink.url.redacted) is up to date at seq \(report.seq)")
            } else {
                print("\(sink.schema) at \(sink.url.redacted): seq \(report.fromSeq) → \(report.seq) (\(report.events) events, \(report.rows) rows written)")
            }
            return 0
        }
    }
}

struct PostgresRebuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Rebuild the PostgreSQL views into a shadow schema, then swap it in.",
        discussion: "Readers keep reading the live schema until the swap, which is one transaction.")
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var options: PostgresOptions

    func run() async throws {
        try await guarded {
            let sink = try options.sink()
            let store = try Store.open(storeOptions.path)
            let started = Date()
            let report = try await sink.withRunning { try await $0.rebuild(store: store) }
            print(String(format: "rebuilt %@ at %@: %d rows at seq %llu in %.2f s", sink.schema, sink.url.redacted,
                         report.rows, report.seq, Date().timeIntervalSince(started)))
            return 0
        }
    }
}
