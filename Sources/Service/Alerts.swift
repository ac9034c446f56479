import AsyncHTTPClient
import Domain
import Foundation
import JSONCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

#if canImport(Glibc)
import Glibc
#endif

/// Where built-in alerts go: `--alert-webhook URL` (repeatable) and `--alert-command CMD`.
public struct AlertTargets: Sendable {
    public var webhooks: [String] = []
    /// Run with `/bin/sh -c`, the message's JSON on its standard input.
    public var command: String?
    /// One attempt's limit (a receiver that never answers costs at most this per attempt).
    public var attemptTimeoutSeconds = 10.0
    public var maxAttempts = 5
    /// The first retry waits this long; each next one twice as long.
    public var backoffSeconds = 2.0

    public init(webhooks: [String] = [], command: String? = nil) {
        self.webhooks = webhooks
        self.command = command
    }

    /// How many targets a message goes to.
    public var count: Int { webhooks.count + (command == nil ? 0 : 1) }
    public var isEmpty: Bool { count == 0 }

    /// A webhook target as logs and the alert log name it: the host only (a Slack or Teams URL
    /// carries its secret in the path).
    public static func describe(webhook url: String) -> String {
        "webhook " + (URL(string: url)?.host ?? "?")
    }

    /// Checks each webhook URL; one line naming the bad one.
    public static func validate(webhook url: String) -> String? {
        guard let u = URL(string: url), ["http", "https"].contains(u.scheme?.lowercased() ?? ""), u.host != nil else {
            return "--alert-webhook: a value is not an http(s) URL (for example https://hooks.slack.com/services/…; the value is not shown, it may hold a secret)"
        }
        return nil
    }
}

/// The built-in alerts: compares the conditions that hold with the open incidents, announces a
/// new one once (`firing`), again after `resendAfter` while it lasts, and `resolved` when it
/// clears; delivers in the background with retries and back-off, so neither a slow receiver nor
/// a dead one ever holds up a sync. The clock is injectable (tests jump six hours).
public final class AlertEngine: Sendable {
    public let targets: AlertTargets
    public let storePath: String
    let now: @Sendable () -> Int64
    public let resendAfterMillis: Int64
    let logger: Logger
    private let open: NIOLockedValueBox<[String: AlertIncident]>
    /// Held while the open incidents are written (`saveOpen`).
    private let saving = NIOLock()
    /// The deliveries on their way, by an id of their own.
    private let deliveries = NIOLockedValueBox<[UUID: Task<Void, Never>]>([:])
    /// Sleeps between attempts (tests make it instant).
    let sleep: @Sendable (Double) async -> Void

    public init(targets: AlertTargets, storePath: String, resendAfterHours: Double = 6, logger: Logger = Logger(label: "syncledger.alerts"),
                now: @escaping @Sendable () -> Int64 = { ISOTime.nowMillis() },
                sleep: @escaping @Sendable (Double) async -> Void = { s in try? await Task.sleep(nanoseconds: UInt64(max(0, s) * 1e9)) }) {
        self.targets = targets
        // Absolute: a receiver watching several stores read "store": "." (hostile test).
        self.storePath = Self.absolute(storePath)
        self.resendAfterMillis = Int64(resendAfterHours * 3_600_000)
        self.logger = logger
        self.now = now
        self.sleep = sleep
        var loaded: [String: AlertIncident] = [:]
        for i in AlertLog.open(storePath: storePath) { loaded[i.key] = i }
        open = NIOLockedValueBox(loaded)
    }

    /// The incidents firing now.
    public var firing: [AlertIncident] { open.withLockedValue { Array($0.values) }.sorted { $0.key < $1.key } }

    /// Takes the conditions that hold now; returns the messages it decided to send (already on
    /// their way, in the background).
    @discardableResult
    public func evaluate(_ conditions: [AlertCondition]) -> [AlertMessage] {
        let t = now()
        let store = storePath
        let messages = open.withLockedValue { open -> [AlertMessage] in
            var out: [AlertMessage] = []
            var holding = Set<String>()
            for c in conditions {
                holding.insert(c.key)
                if var i = open[c.key] {
                    // Same incident: the summary may change (a new error), the incident does not.
                    i.summary = c.summary
                    i.runId = c.runId ?? i.runId
                    if i.dueAgain == true || t - i.lastSentAt >= resendAfterMillis {
                        i.lastSentAt = t
                        i.dueAgain = nil
                        out.append(Self.message(c, status: "firing", store: store, at: t, reminder: true))
                    }
                    open[c.key] = i
                } else {
                    open[c.key] = AlertIncident(key: c.key, alert: c.alert, severity: c.severity, summary: c.summary,
                                                runId: c.runId, since: t, lastSentAt: t)
                    out.append(Self.message(c, status: "firing", store: store, at: t, reminder: false))
                }
            }
            for (key, i) in open where !holding.contains(key) {
                open[key] = nil
                let c = AlertCondition(key: key, alert: i.alert, severity: i.severity,
                                       summary: "cleared after \(Self.duration(t - i.since)): \(i.summary)", runId: i.runId)
                out.append(Self.message(c, status: "resolved", store: store, at: t, reminder: false))
            }
            return out
        }
        if !messages.isEmpty { saveOpen() }
        for m in messages { send(m) }
        return messages
    }

    /// `syncledger alert test`: one test message to every target; returns each delivery.
    public func sendTest() async -> [AlertDelivery] {
        let m = AlertMessage(id: UUID().uuidString.lowercased(), alert: "test", key: "test", status: "test", severity: "info",
                             summary: "a test alert from `syncledger alert test`; if you read this, alerts reach you",
                             runId: nil, store: storePath, at: now())
        AlertLog.record(m, targets: targets.count, storePath: storePath)
        return await deliverAll(m)
    }

    /// Messages still being delivered (or retried).
    public var deliveriesInFlight: Int { deliveries.withLockedValue { $0.count } }

    /// Waits until every delivery started so far has finished (tests; shutdown).
    public func idle(timeout: Double = 60) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while deliveriesInFlight > 0 {
            // Cancelled (the group failed): sleeping would return at once; do not spin.
            if Date() > deadline || Task.isCancelled { return false }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return true
    }

    /// A relative `path` made absolute from `cwd`, its `.` and `..` resolved; an absolute one as given.
    static func absolute(_ path: String, in cwd: String = FileManager.default.currentDirectoryPath) -> String {
        if path.hasPrefix("/") { return path }
        return URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: cwd, isDirectory: true)).standardizedFileURL.path
    }

    static func message(_ c: AlertCondition, status: String, store: String, at: Int64, reminder: Bool) -> AlertMessage {
        AlertMessage(id: UUID().uuidString.lowercased(), alert: c.alert, key: c.key, status: status, severity: c.severity,
                     summary: c.summary, runId: c.runId, store: store, at: at, reminder: reminder)
    }

    static func duration(_ millis: Int64) -> String {
        let s = max(0, millis / 1000)
        if s < 120 { return "\(s) s" }
        if s < 7200 { return "\(s / 60) min" }
        return String(format: "%.1f h", Double(s) / 3600)
    }

    // MARK: Delivery

    private func send(_ m: AlertMessage) {
        AlertLog.record(m, targets: targets.count, storePath: storePath)
        logger.warning("alert", metadata: ["alert": "\(m.alert)", "key": "\(m.key)", "status": "\(m.status)", "summary": "\(m.summary)"])
        guard !targets.isEmpty else { return }
        // Detached: the caller (the worker, after a run) never waits for a receiver. Kept, so
        // that a shutdown can cancel what is still on its way (`stop`).
        // Made under the lock, so its own removal, which takes the lock, comes after this.
        let id = UUID()
        deliveries.withLockedValue { running in
            running[id] = Task.detached { [self] in
                let delivered = await self.deliverAll(m)
                // Cut short by a shutdown: the incident is due again, so the next server sends
                // it at its first check (it waited for the reminder, hours later: hostile test).
                if Task.isCancelled, m.status == "firing", delivered.contains(where: { !$0.ok }) { self.dueAgain(m.key) }
                self.deliveries.withLockedValue { $0[id] = nil }
            }
        }
    }

    /// Waits up to `grace` seconds for the deliveries on their way, then cancels the rest:
    /// their commands are stopped with their groups, and each is recorded as not delivered
    /// because the server stopped. A delivery left running at shutdown was lost without a
    /// record, and its command outlived the server (hostile test).
    /// Detached: a service cancelled (not shut down gracefully) still gives them their grace.
    public func stop(grace: Double) async {
        await Task.detached { [self] in
            if await idle(timeout: grace) { return }
            for task in deliveries.withLockedValue({ Array($0.values) }) { task.cancel() }
            _ = await idle(timeout: 5)
        }.value
    }

    /// Makes the open incident `key` due for sending at the next `evaluate` (a reminder), on
    /// disk too, so that a server started after this one stopped sends it.
    private func dueAgain(_ key: String) {
        let changed = open.withLockedValue { open -> Bool in
            guard var i = open[key] else { return false }
            i.dueAgain = true
            open[key] = i
            return true
        }
        if changed { saveOpen() }
    }

    /// Writes the open incidents as they are now. One writer at a time, each taking what is
    /// open when its turn comes: the deliveries a shutdown cancels each save at once, and an
    /// older snapshot written last lost a newer one's change (or two writers shared the
    /// temporary file: cold review).
    private func saveOpen() {
        saving.withLock {
            AlertLog.saveOpen(open.withLockedValue { Array($0.values) }, storePath: storePath)
        }
    }

    private func deliverAll(_ m: AlertMessage) async -> [AlertDelivery] {
        let body = Array((m.json.canonicalText + "\n").utf8)
        return await withTaskGroup(of: AlertDelivery.self) { group in
            for url in targets.webhooks {
                group.addTask { await self.attempting(m, target: AlertTargets.describe(webhook: url)) { try await self.post(url, body) } }
            }
            if let command = targets.command {
                group.addTask { await self.attempting(m, target: "command") { try await self.runCommand(command, body) } }
            }
            var out: [AlertDelivery] = []
            for await d in group {
                AlertLog.record(d, storePath: storePath)
                if !d.ok {
                    logger.error("alert not delivered", metadata: ["target": "\(d.target)", "alert": "\(m.alert)", "attempts": "\(d.attempts)", "error": "\(d.error ?? "")"])
                }
                out.append(d)
            }
            return out.sorted { $0.target < $1.target }
        }
    }

    private func attempting(_ m: AlertMessage, target: String, _ body: @Sendable () async throws -> Void) async -> AlertDelivery {
        var lastError = ""
        // Cancelled (the server stopping): the attempts made, and the last real error if any.
        func stopped(after attempts: Int) -> AlertDelivery {
            AlertDelivery(messageId: m.id, target: target, ok: false, attempts: attempts,
                          error: "the server stopped before the delivery ended" + (lastError.isEmpty ? "" : " (last error: \(lastError))"),
                          at: now())
        }
        for attempt in 1...max(1, targets.maxAttempts) {
            // Not another attempt once cancelled (a back-off's sleep ends at once then).
            if Task.isCancelled { return stopped(after: attempt - 1) }
            do {
                try await body()
                return AlertDelivery(messageId: m.id, target: target, ok: true, attempts: attempt, error: nil, at: now())
            } catch {
                if Task.isCancelled { return stopped(after: attempt) }
                let text = "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
                lastError = String(text.prefix(300))
            }
            if attempt < targets.maxAttempts { await sleep(targets.backoffSeconds * pow(2, Double(attempt - 1))) }
        }
        return AlertDelivery(messageId: m.id, target: target, ok: false, attempts: max(1, targets.maxAttempts), error: lastError, at: now())
    }

    private func post(_ url: String, _ body: [UInt8]) async throws {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        request.headers.add(name: "User-Agent", value: "syncledger-alerts")
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(Int64(targets.attemptTimeoutSeconds * 1000)))
        _ = try? await response.body.collect(upTo: 64 << 10)
        guard (200..<300).contains(Int(response.status.code)) else {
            throw AlertError("the receiver answered HTTP \(response.status.code)")
        }
    }

    /// `/bin/sh -c CMD` with the JSON on standard input; exit 0 is delivered. Its environment
    /// is the server's without its secrets (`withheldFromCommand`: a mail pipeline has no use
    /// for them).
    ///
    /// Started through swift-subprocess (posix_spawn, every other descriptor closed, its end
    /// seen through a pidfd), in a process group of its own. Foundation's `Process` saw the
    /// end only when every process holding an inherited socket had gone: a command that left a
    /// job in the background (`mail … &`) "ran" until the attempt's timeout and then failed, and
    /// two commands started at once could each hold the other's socket (the same fault as in the
    /// tests, CSpawn.h).
    private func runCommand(_ command: String, _ body: [UInt8]) async throws {
        var env: [Environment.Key: String] = [:]
        for (k, v) in Self.commandEnvironment(ProcessInfo.processInfo.environment) { env[Environment.Key(stringLiteral: k)] = v }
        // The message is on the pipe before the command starts (a few hundred bytes; a pipe
        // holds 64 KiB): nothing waits on a command that does not read it (`true`), and nothing
        // is written to a pipe whose reader has gone. Every descriptor here is this function's
        // own, closed once on every path (swift-subprocess only duplicates them into the child).
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else {
            throw AlertError("cannot make a pipe for the alert command: \(String(cString: strerror(errno)))")
        }
        let (readEnd, writeEnd) = (ends[0], ends[1])
        // Kept from any other child this process starts meanwhile (swift-subprocess gives the
        // command its standard input without the flag). `pipe2` is not in Swift's Glibc module.
        for fd in [readEnd, writeEnd] { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        defer { close(readEnd) }
        _ = fcntl(writeEnd, F_SETFL, fcntl(writeEnd, F_GETFL) | O_NONBLOCK)
        let written = body.withUnsafeBytes { write(writeEnd, $0.baseAddress, $0.count) }
        let writeError = errno
        close(writeEnd)
        guard written == body.count else {
            throw AlertError(written < 0 ? "cannot write the alert to the alert command's pipe: \(String(cString: strerror(writeError)))"
                                         : "the alert (\(body.count) bytes) does not fit the alert command's pipe")
        }
        let devNull = Glibc.open("/dev/null", O_WRONLY | O_CLOEXEC)
        guard devNull >= 0 else { throw AlertError("cannot open /dev/null for the alert command: \(String(cString: strerror(errno)))") }
        defer { close(devNull) }
        var options = PlatformOptions()
        options.processGroupID = 0
        // Past the attempt's timeout the run is cancelled: swift-subprocess then kills the whole
        // group (the shell and what it started) before it reaps the shell, so the signal cannot
        // reach a group whose number was given to another.
        options.teardownSequence = [.send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .zero)]
        let limit = targets.attemptTimeoutSeconds
        let (environment, platformOptions) = (env, options)
        let status: TerminationStatus? = try await withThrowingTaskGroup(of: TerminationStatus?.self) { group in
            group.addTask {
                try await Subprocess.run(
                    .path("/bin/sh"), arguments: ["-c", command], environment: .custom(environment), platformOptions: platformOptions,
                    input: .fileDescriptor(FileDescriptor(rawValue: readEnd), closeAfterSpawningProcess: false),
                    output: .fileDescriptor(FileDescriptor(rawValue: devNull), closeAfterSpawningProcess: false),
                    error: .fileDescriptor(FileDescriptor(rawValue: devNull), closeAfterSpawningProcess: false)
                ).terminationStatus
            }
            group.addTask {
                try await Task.sleep(for: .seconds(limit))
                return nil
            }
            // The first to end decides; the other is cancelled (and the group waits for it).
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
        switch status {
        case .exited(0)?:
            return
        case .exited(let code)?:
            throw AlertError("the alert command exited with status \(code)")
        case .signaled(let signal)?:
            throw AlertError("the alert command was ended by signal \(signal)")
        case nil:
            throw AlertError("the alert command did not finish within \(targets.attemptTimeoutSeconds) s and was stopped")
        }
    }

    /// What the alert command's environment leaves out: the IntakeQ key, the master key's file,
    /// and the PostgreSQL URL and the password or password file the sink reads (`PostgresURL`:
    /// they never leave this process).
    static let withheldFromCommand: Set<String> = [
        "INTAKEQ_API_KEY", "INTAKEQ_API_KEY_FILE", "SYNCLEDGER_MASTER_KEY_FILE", "SYNCLEDGER_POSTGRES_URL", "PGPASSWORD",
        "PGPASSFILE",
    ]

    /// The alert command's environment: `environment` without `withheldFromCommand`.
    static func commandEnvironment(_ environment: [String: String]) -> [String: String] {
        environment.filter { !withheldFromCommand.contains($0.key) }
    }
}

struct AlertError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
