import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// crash-harness: proves that SIGKILL at any moment loses nothing acknowledged (issue 7).
///
///     crash-harness [--kills N] [--seed S] [--rounds-per-store R] [--max-delay SECONDS] [--keep]
///     crash-harness sync --syncledger PATH --fake PATH --fixtures DIR --roster FILE [--kills N] [--seed S] [--max-delay SECONDS] [--keep]
///     crash-harness child LOGDIR SEED      (internal: the appending child)
///     crash-harness fill LOGDIR            (internal: append until the disk or a file-size limit refuses)
///     crash-harness read LOGDIR            (internal: read a whole log, report peak memory)
struct CrashHarnessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-harness",
        abstract: "SIGKILL appends or syncs at random moments and check that nothing acknowledged is lost.",
        subcommands: [AppendCommand.self, SyncCommand.self, ChildCommand.self, FillCommand.self, ReadCommand.self],
        defaultSubcommand: AppendCommand.self
    )
}

/// What both modes take. Numbers are parsed here (not by ArgumentParser's Int) so that a bad
/// one gets the harness's own message ("--kills must be a positive integer, got 'zero'").
struct CommonOptions: ParsableArguments {
    @Option(help: "How many children to SIGKILL.")
    var kills: String?

    @Option(help: "The seed to replay (default: random; printed either way).")
    var seed: String?

    @Option(name: .customLong("max-delay"), help: "The longest wait before a kill, in seconds.")
    var maxDelay: String?

    @Flag(help: "Keep the scratch directory.")
    var keep = false

    func validate() throws {
        if let kills { _ = try positive("kills", kills) }
        if let seed, UInt64(seed) == nil { throw ValidationError("--seed must be an unsigned integer, got '\(seed)'") }
        if let maxDelay, Double(maxDelay) == nil {
            throw ValidationError("--max-delay must be a number of seconds, got '\(maxDelay)'")
        }
    }

    func killCount(default fallback: Int) throws -> Int { try kills.map { try positive("kills", $0) } ?? fallback }

    func delay(default fallback: Double) -> Double { maxDelay.flatMap(Double.init) ?? fallback }

    /// The given seed, or a fresh random one.
    var resolvedSeed: UInt64 {
        if let seed, let v = UInt64(seed) { return v }
        var source = SystemRandomNumberGenerator()
        return source.next()
    }
}

func positive(_ name: String, _ text: String) throws -> Int {
    guard let v = Int(text), v > 0 else { throw ValidationError("--\(name) must be a positive integer, got '\(text)'") }
    return v
}

/// The default mode: append children killed mid-write.
struct AppendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "append", abstract: "Kill appending children (the default).")

    @OptionGroup var common: CommonOptions

    @Option(name: .customLong("rounds-per-store"), help: "Kills before starting a fresh store.")
    var roundsPerStore: String?

    func validate() throws {
        if let roundsPerStore { _ = try positive("rounds-per-store", roundsPerStore) }
    }

    func run() throws {
        let code = runAppendHarness(kills: try common.killCount(default: 1000), seed: common.resolvedSeed,
                                    roundsPerStore: try roundsPerStore.map { try positive("rounds-per-store", $0) } ?? 100,
                                    maxDelay: common.delay(default: 0.08), keep: common.keep)
        if code != 0 { throw ExitCode(code) }
    }
}

/// Real `syncledger sync` runs against `fake-intakeq`, killed at random moments.
struct SyncCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sync", abstract: "Kill real syncs against fake-intakeq.")

    @OptionGroup var common: CommonOptions

    @Option(help: "The syncledger executable.") var syncledger: String
    @Option(help: "The fake-intakeq executable.") var fake: String
    @Option(help: "The Fixtures directory.") var fixtures: String
    @Option(help: "The roster file.") var roster: String

    func run() throws {
        let code = runSyncHarness(kills: try common.killCount(default: 50), seed: common.resolvedSeed, syncledger: syncledger,
                                  fake: fake, fixtures: fixtures, roster: roster, maxDelay: common.delay(default: 0.6),
                                  keep: common.keep)
        if code != 0 { throw ExitCode(code) }
    }
}

/// Internal: the appending child the harness kills.
struct ChildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "child", shouldDisplay: false)
    @Argument var directory: String
    @Argument var seed: UInt64
    func run() throws { runAppendChild(directory: directory, seed: seed) }
}

/// Internal: append until the disk or a file-size limit refuses.
struct FillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fill", shouldDisplay: false)
    @Argument var directory: String
    func run() throws { runFill(directory: directory) }
}

/// Internal: read a whole log and report peak memory.
struct ReadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "read", shouldDisplay: false)
    @Argument var directory: String
    func run() throws { runRead(directory: directory) }
}

CrashHarnessCommand.main()
