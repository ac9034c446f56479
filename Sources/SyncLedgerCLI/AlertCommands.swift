import ArgumentParser
import Foundation
import Ledger
import Service

/// `--alert-webhook URL` (repeatable) and `--alert-command CMD`, shared by `serve` and `alert test`.
struct AlertOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "POST each alert as JSON (Slack- and Teams-compatible `text`) to this URL; repeat for more. @FILE reads the URLs from FILE, one a line (keeps a secret URL out of `ps`).",
        valueName: "URL"))
    var alertWebhook: [String] = []

    @Option(help: ArgumentHelp("Run this shell command for each alert, the JSON on its standard input (e.g. a mail pipeline).", valueName: "CMD"))
    var alertCommand: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Seconds one delivery attempt may take.", valueName: "S"))
    var alertTimeout = 10.0

    /// The URLs, with `@FILE` read.
    func urls() throws -> [String] {
        var out: [String] = []
        for value in alertWebhook {
            if value.hasPrefix("@") {
                let file = String(value.dropFirst())
                let data: [UInt8]
                switch readInputFile(file, limit: 1 << 20) {
                case .success(let bytes): data = bytes
                case .failure(let why): throw CLIFailure(message: "the --alert-webhook file \(file) \(why)")
                }
                out += String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
                    .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
            } else {
                out.append(value)
            }
        }
        for u in out { if let problem = AlertTargets.validate(webhook: u) { throw CLIFailure(message: problem) } }
        return out
    }

    func check() throws {
        guard alertTimeout.isFinite, alertTimeout > 0, alertTimeout <= 300 else {
            throw ValidationError("--alert-timeout must be a number of seconds from 0 to 300")
        }
        if let c = alertCommand, c.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--alert-command is empty") }
        for value in alertWebhook where !value.hasPrefix("@") {
            if let problem = AlertTargets.validate(webhook: value) { throw ValidationError(problem) }
        }
    }

    func targets() throws -> AlertTargets {
        var t = AlertTargets(webhooks: try urls(), command: alertCommand)
        t.attemptTimeoutSeconds = alertTimeout
        return t
    }
}

struct AlertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alert", abstract: "Built-in alerts (see `serve --alert-webhook`).", subcommands: [AlertTestCommand.self])
}

struct AlertTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Send a test alert to the given targets (the same --alert-webhook / --alert-command as serve's); exit 1 when one was not delivered.",
        discussion: "The test is listed with the store's alerts in `syncledger status` when the store exists.")

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var alertOptions: AlertOptions
    @Option(parsing: .unconditional, help: "Attempts per target before giving up.") var attempts = 3

    func validate() throws {
        try alertOptions.check()
        guard (1...10).contains(attempts) else { throw ValidationError("--attempts must be from 1 to 10") }
    }

    func run() async throws {
        try await guarded {
            var targets = try alertOptions.targets()
            guard !targets.isEmpty else {
                throw CLIFailure(message: "no alert target: give --alert-webhook URL and/or --alert-command CMD (the same as serve's)")
            }
            targets.maxAttempts = attempts
            targets.backoffSeconds = 1
            let engine = AlertEngine(targets: targets, storePath: storeOptions.path)
            let deliveries = await engine.sendTest()
            for d in deliveries {
                let tries = d.attempts == 1 ? "1 attempt" : "\(d.attempts) attempts"
                print(d.ok ? "delivered to \(d.target) (\(tries))" : "NOT delivered to \(d.target) after \(tries): \(d.error ?? "?")")
            }
            return deliveries.allSatisfy(\.ok) ? 0 : 1
        }
    }
}
