import ArgumentParser
import Foundation
import IntakeQ
import Ledger
import Logging
import PostgresSink
import Projections
import Service
import Sync

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the server: IntakeQ webhooks, the nightly schedule, manual runs, the read API and the admin pages (/admin).",
        discussion: """
            One long-running process on the store (README.md, "The server: syncledger serve"; the API in docs/openapi.yaml). The \
            IntakeQ API key comes from $INTAKEQ_API_KEY or the file named by $INTAKEQ_API_KEY_FILE; \
            the webhook secret from --webhook-secret-file; tokens from --tokens (create them with \
            `syncledger token new`). SIGTERM or SIGINT: the run in progress finishes, then exit 0.
            """)

    @OptionGroup var storeOptions: StoreOptions
    @Option(help: ArgumentHelp("The roster JSON file.", valueName: "FILE")) var roster: String
    @Option(help: ArgumentHelp("Address to listen on.", valueName: "HOST:PORT")) var listen = "127.0.0.1:8080"
    @Option(help: ArgumentHelp("IntakeQ API base URL.", valueName: "URL")) var baseURL = "https://intakeq.com/api/v1"
    @Option(help: ArgumentHelp("Run the automated_daily sync at this local time every day.", valueName: "HH:MM")) var dailyAt: String?
    @Option(help: ArgumentHelp("The practice's time zone for --daily-at (default: the roster's \"timezone\", else UTC).", valueName: "TZ")) var timezone: String?
    @Option(help: ArgumentHelp("The API tokens file (default: STORE/state/api-tokens.json, read once it exists).", valueName: "FILE")) var tokens: String?
    @Option(help: ArgumentHelp("A file holding the webhook URL's secret (at least 32 characters).", valueName: "FILE")) var webhookSecretFile: String?
    @Option(parsing: .unconditional, help: "Client-side limit per minute (IntakeQ's base plan allows 10).") var requestsPerMinute = 10
    @Option(parsing: .unconditional, help: "API calls allowed in any 24 hours, counted across runs and processes (base plan: 500).") var dailyBudget = 500
    @Option(parsing: .unconditional, help: "Retries of a request after 429 or 5xx.") var maxRetries = 4
    @Option(help: ArgumentHelp("Log level: debug, info, warning, error.", valueName: "LEVEL")) var logLevel = "info"
    @Option(help: ArgumentHelp("Ship the views to PostgreSQL after every run (default: $SYNCLEDGER_POSTGRES_URL when set).", valueName: "URL"))
    var postgres: String?
    @Option(help: ArgumentHelp("The PostgreSQL schema for --postgres.", valueName: "NAME")) var postgresSchema = PostgresSink.defaultSchema
    @OptionGroup var alertOptions: AlertOptions
    @Flag(help: "Serve /metrics without a token (it holds no personal data).") var metricsPublic = false
    @Option(parsing: .unconditional, help: ArgumentHelp("Close a connection that sends nothing for this long (between requests or in the middle of one), or, while its answers wait, takes less than 16 KiB of them.", valueName: "SECONDS"))
    var idleTimeout = 20

    func validate() throws {
        try refuseBlank([("--daily-at", dailyAt), ("--timezone", timezone), ("--webhook-secret-file", webhookSecretFile)])
        guard requestsPerMinute > 0, dailyBudget > 0 else { throw ValidationError("--requests-per-minute and --daily-budget must be positive") }
        guard (1...3600).contains(idleTimeout) else { throw ValidationError("--idle-timeout must be 1...3600 seconds") }
        guard (0...20).contains(maxRetries) else { throw ValidationError("--max-retries must be 0...20") }
        if tokens?.isEmpty == true { throw ValidationError("--tokens is empty: give the tokens file, or no --tokens for STORE/state/api-tokens.json") }
        guard splitListen() != nil else { throw ValidationError("--listen '\(listen)' is not HOST:PORT (for example 127.0.0.1:8080)") }
        if let dailyAt, ServeConfiguration.parseDailyAt(dailyAt) == nil { throw ValidationError("--daily-at '\(dailyAt)' is not HH:MM (for example 03:00)") }
        try checkTimezoneOption(timezone)
        guard let url = URL(string: baseURL), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host != nil else {
            throw ValidationError("--base-url '\(baseURL)' is not an http(s) URL")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level must be debug, info, warning or error") }
        try alertOptions.check()
    }

    func splitListen() -> (String, Int)? {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(listen[..<colon])
        // An IPv6 address is written in brackets ("[::1]:8080"); the resolver wants it bare.
        if host.hasPrefix("["), host.hasSuffix("]"), host.count > 2 { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    func run() async throws {
        try await guarded {
            let key = try apiKey()
            let rosterValue = try Roster.load(path: roster)
            var config = ServeConfiguration(storePath: storeOptions.path, roster: rosterValue, apiKey: key)
            config.keysPath = storeOptions.keys
            let (host, port) = splitListen()!
            config.host = host
            config.port = port
            config.baseURL = baseURL
            config.dailyAt = dailyAt.flatMap(ServeConfiguration.parseDailyAt)
            config.timeZone = timezone
            let defaultTokens = storeOptions.path + "/state/api-tokens.json"
            // The store's file is watched even before `syncledger token new` creates it.
            config.tokensPath = tokens ?? defaultTokens
            config.tokensFileOptional = tokens == nil
            if let file = webhookSecretFile {
                let data: [UInt8]
                switch readInputFile(file, limit: 4096) {
                case .success(let bytes): data = bytes
                case .failure(let why): throw CLIFailure(message: "--webhook-secret-file \(file) \(why)")
                }
                let secret = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard secret.count >= 32 else {
                    throw CLIFailure(message: "the webhook secret in \(file) has \(secret.count) characters; it needs at least 32 (for example: openssl rand -hex 24 > \(file))")
                }
                guard secret.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                    throw CLIFailure(message: "the webhook secret in \(file) must be letters, digits, - and _ only (it goes in a URL path)")
                }
                config.webhookSecret = secret
                if let w = ServeConfiguration.exposureWarning(secretFile: file, what: "--webhook-secret-file") { warn(w) }
            }
            config.policy = RateLimitPolicy(requestsPerMinute: requestsPerMinute, dailyBudget: dailyBudget)
            config.maxRetries = maxRetries
            if let url = postgres ?? ProcessInfo.processInfo.environment[PostgresURL.environmentVariable], !url.isEmpty {
                config.postgres = try PostgresSink(url: PostgresSinkEntry.resolveURL(url), schema: postgresSchema)
            }
            config.alertTargets = try alertOptions.targets()
            config.metricsPublic = metricsPublic
            config.idleTimeoutSeconds = idleTimeout
            // Log lines go to stderr; stdout stays for nothing but the listening line.
            LoggingSystem.bootstrap(StreamLogHandler.standardError)
            var logger = Logger(label: "syncledger.serve")
            logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            config.logger = logger
            config.onListening = { bound in
                // Unbuffered: whoever started the server (a test, the demo) waits for this line.
                let shown = host.contains(":") ? "[\(host)]" : host
                FileHandle.standardOutput.write(Data("syncledger: listening on http://\(shown):\(bound)\n".utf8))
            }
            let server = try SyncLedgerServer(config: config)
            try await server.run()
            return 0
        }
    }

}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Manage the server's API tokens.", subcommands: [TokenNewCommand.self])
}

struct TokenNewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new",
        abstract: "Create an API token: print it once, store only its SHA-256 in the tokens file.")

    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "A name for the token (shown in logs and sync_logs' triggered_by).") var name: String
    @Option(help: "reader (its organizations' appointments only) or admin (everything).") var role: String
    @Option(help: ArgumentHelp("An organization a reader may read (repeat for more).", valueName: "ID")) var org: [String] = []
    @Option(help: ArgumentHelp("The tokens file (default: STORE/state/api-tokens.json).", valueName: "FILE")) var tokens: String?

    func validate() throws {
        try refuseBlank(org.map { ("--org", $0) })
        guard let r = APIToken.Role(rawValue: role) else { throw ValidationError("--role must be reader or admin") }
        if r == .reader, org.isEmpty { throw ValidationError("a reader token needs at least one --org ID") }
        if r == .admin, !org.isEmpty { throw ValidationError("an admin token reads every organization: give no --org") }
        guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw ValidationError("--name must be 1 to 64 letters, digits, '-', '_' or '.'")
        }
        if tokens?.isEmpty == true { throw ValidationError("--tokens is empty: give the tokens file, or no --tokens for STORE/state/api-tokens.json") }
    }

    func run() async throws {
        try await guarded {
            let path = tokens ?? storeOptions.path + "/state/api-tokens.json"
            // The default file lives in the store: made before the first sync (README's order),
            // the store is made whole, as `sync` makes it, so that sync then finds a store there
            // (a directory that is not a store is refused here, before anything is checked).
            if tokens == nil { _ = try Store.openOrCreate(storeOptions.path) }
            try checkOrganizations()
            try checkName()
            let token = try TokenFile.exclusively(path: path) { () throws -> String in
                var file = FileManager.default.fileExists(atPath: path) ? try TokenFile.load(path: path) : TokenFile()
                if file.tokens.contains(where: { $0.name == name }) {
                    throw CLIFailure(message: "the tokens file \(path) already has a token named \(name)")
                }
                let (token, entry) = TokenFile.newToken(name: name, role: APIToken.Role(rawValue: role)!, organizations: org)
                file.tokens.append(entry)
                try file.save(path: path)
                return token
            }
            print(token)
            warn("added \(role) token \(name) to \(path); the token is shown only this once")
            return 0
        }
    }

    /// The name is recorded in the clear for good (a run it asks for is `triggered_by` "api:NAME"):
    /// one that names a patient of a roster the store recorded is refused, as `sync
    /// --triggered-by` is (hostile test, stop 56). `_`, `.` and `-` read as spaces. A store with no
    /// roster yet, or whose rosters cannot be opened here, takes it unchecked: the server withholds
    /// such a name when it records a run.
    func checkName() throws {
        guard FileManager.default.fileExists(atPath: storeOptions.path + "/STORE") else { return }
        let people: [RosterObserved.Patient]
        do {
            let (_, reader, views) = try openForRead(storeOptions, warnScrub: false)
            people = try views.recordedRosters(reader).flatMap { $0.organizations.flatMap(\.patients) }
        } catch {
            return
        }
        let spaced = String(name.map { "_.-".contains($0) ? " " : $0 })
        if let problem = people.personalDataProblem(in: spaced) ?? people.personalDataProblem(in: name) {
            throw CLIFailure(message: "--name \(problem); a token's name is recorded in the log for good with the runs it asks for, so name it without personal data (for example \"front-desk\" or \"dashboard\")")
        }
    }

    /// A reader's `--org` must be an organization of the store's roster (the one the last sync
    /// recorded, as the views hold it): a mistyped id would make a token that reads nothing. A
    /// store that knows no organizations yet (no store, or no sync so far: the README makes the
    /// tokens before the first `serve`) takes them unchecked, with a warning.
    func checkOrganizations() throws {
        guard !org.isEmpty else { return }
        var known: [String] = []
        if FileManager.default.fileExists(atPath: storeOptions.path + "/STORE") {
            let (_, _, views) = try openForRead(storeOptions)
            known = try views.readSync { try Views.roster($0) }?.organizations.map(\.id) ?? []
        }
        guard !known.isEmpty else {
            warn("warning: the store at \(storeOptions.path) knows no organizations yet (no sync has recorded a roster): --org \(org.joined(separator: ", ")) taken unchecked")
            return
        }
        let unknown = org.filter { !known.contains($0) }
        guard unknown.isEmpty else {
            throw CLIFailure(message: "no organization \(unknown.joined(separator: ", ")) in the roster of the store at \(storeOptions.path); the organizations are: \(known.joined(separator: ", ")) "
                             + "(a new one in the roster file: sync it first)")
        }
    }
}
