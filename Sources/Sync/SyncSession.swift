import Domain
import EventLog
import Foundation
import IntakeQ
import Ledger
import Logging
import Projections
import Synchronization

/// Everything one sync run needs besides the request: where the store is, how to reach IntakeQ,
/// the limits, and who watches. `syncledger sync`, the demo, the crash harness and every sync test
/// go through `SyncSession.run` with one of these, so the path the tests run is the path that ships.
public struct SyncConfiguration: Sendable {
    public var storePath: String
    public var request: SyncRequest
    public var apiKey: String
    public var baseURL: String
    public var policy: RateLimitPolicy
    /// Wait this long for another writer instead of failing at once.
    public var waitLock: Double?
    public var maxRetries: Int
    public var timeoutSeconds: Double
    /// The rate limiter's and the back-off's clock (tests inject a manual one).
    public var clock: any IntakeQClock
    public var logger: Logger
    public var progress: (@Sendable (String) -> Void)?
    /// The log's options (segment size); the defaults everywhere but in tests.
    public var logOptions = LogOptions()
    /// The key store (`--keys DIR`); `STORE/keys` when nil.
    public var keysPath: String?
    /// Called when a catch-up of the views (before the run, and after it is recorded) must wait
    /// for another process's rebuild of them (`ProjectionStore.onWaitingForRebuild`), with that
    /// process's pid when known.
    public var onWaitingForRebuild: (@Sendable (_ holderPid: String?) -> Void)?
    /// Called once when the run waits (`waitLock`) for another writer of the log, with the
    /// lock's message ("store is locked by pid N").
    public var onWaitingForWriter: (@Sendable (_ lock: String) -> Void)?

    public init(storePath: String, request: SyncRequest, apiKey: String, baseURL: String,
                policy: RateLimitPolicy = RateLimitPolicy(), waitLock: Double? = nil, maxRetries: Int = 4,
                timeoutSeconds: Double = 30, clock: any IntakeQClock = SystemClock(),
                logger: Logger = Logger(label: "syncledger"), progress: (@Sendable (String) -> Void)? = nil) {
        self.storePath = storePath
        self.request = request
        self.apiKey = apiKey
        self.baseURL = baseURL
        self.policy = policy
        self.waitLock = waitLock
        self.maxRetries = maxRetries
        self.timeoutSeconds = timeoutSeconds
        self.clock = clock
        self.logger = logger
        self.progress = progress
    }
}

/// Why a run could not start (nothing was appended). Callers tell the cases apart by `code`.
public struct SyncSessionError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Value: String { case locked, budgetExhausted = "budget_exhausted" }
        let value: Value
        public static let locked = Code(value: .locked)
        public static let budgetExhausted = Code(value: .budgetExhausted)
        public var description: String { value.rawValue }
    }

    public var code: Code
    public var message: String
    /// The error underneath, when there is one (the log's lock error, for example).
    public var underlying: (any Error & Sendable)?

    public var description: String { message }
}

/// The one wiring of a sync run: open the store, take the writer lock, check the daily budget
/// against the call record in `STORE/state/`, build the client on the shared limiter, run,
/// release everything.
public enum SyncSession {
    /// Why the next sync would refuse to make a key store: none at the store's key path (no
    /// `master.check`) while the log holds personal data sealed under one. Nil when there is a
    /// key store, or the log holds nothing sealed (a new store, or one recorded before
    /// encryption: its first sync makes one). `named`: the `--keys` the user gave.
    public static func missingKeyStore(_ store: Store, named: String? = nil) throws -> String? {
        guard !FileManager.default.fileExists(atPath: store.keysPath + "/master.check"),
            try LedgerReader(store: store).holdsSealedData()
        else { return nil }
        if let named {
            return "--keys \(named): no key store there, and this store's log already holds events sealed under "
                + "another one; give the directory its keys are in (a new key store is made only on a store's first sync)"
        }
        return "no key store at \(store.keysPath) (or this user cannot read it), and this store's log holds personal data "
            + "sealed under one; restore it from the store's backup, or pass --keys DIR where it is (a new key store is made "
            + "only on a store's first sync)"
    }

    /// Calls a run needs at the least: settings, one page, the deletedOnly poll.
    public static let minimumCalls = 3

    /// Takes the log's writer lock, waiting up to `config.waitLock` seconds for another writer:
    /// tried again every 100 ms, so that cancelling the task (Ctrl-C) ends the wait at once
    /// (`CancellationError`, nothing recorded). A blocking wait ignored it, and the run then
    /// recorded as failed ("interrupted") a nightly run that never began.
    @StoreIO
    static func openWriter(_ store: Store, _ config: SyncConfiguration) async throws -> LedgerWriter {
        let deadline = config.waitLock.map { Date().addingTimeInterval($0) }
        var said = false
        while true {
            do {
                return try LedgerWriter(store: store, waitLock: nil, options: config.logOptions)
            } catch let e as LogError where e.code == .locked {
                guard let deadline, Date() < deadline else {
                    throw SyncSessionError(code: .locked, message: LedgerWriter.lockedLine(e.message, waited: config.waitLock),
                                           underlying: e)
                }
                if !said {
                    said = true
                    config.onWaitingForWriter?(e.message)
                }
                do { try await Task.sleep(nanoseconds: 100_000_000) } catch {
                    // Cancelled while waiting: said as the wait's own error, so callers can tell.
                    throw SyncSessionError(code: .locked, message: e.message + " (the wait for it was cancelled)", underlying: e)
                }
            }
        }
    }

    @StoreIO
    public static func run(_ config: SyncConfiguration) async throws -> SyncOutcome {
        try config.request.validate()
        // A master key file named but unreadable fails before anything is created or written.
        if let named = try KeyRing.namedMasterKeyFile(keys: config.keysPath ?? (config.storePath + "/keys")) {
            _ = try KeyRing.checkMasterKeyFile(named)
        }
        var store = try Store.openOrCreate(config.storePath)
        try store.requireWritable(for: "sync")
        store.keysDirectory = config.keysPath
        var notices: [String] = []
        // A key store is made on a store's first sync only (or on the first sync of a store
        // recorded before encryption): with none at the key path while the log holds sealed
        // data, the path is wrong or the key store was lost, and a new one made there would
        // seal nothing that opens with the real keys. Before, a --keys directory that did not
        // exist was refused but the store's own keys/ gone was not: a new master key was made,
        // the run then failed for want of the patients' keys, and that key store stayed
        // (hostile test); an existing empty directory was taken either way.
        if let missing = try SyncSession.missingKeyStore(store, named: config.keysPath) { throw LedgerError(missing) }
        let keys = try KeyRing.open(directory: store.keysPath, create: true, notice: { notices.append($0) })
        if let exposed = keys.masterKeyExposure { notices.append("warning: " + exposed) }
        // Before the writer opens (which would cut a torn tail): a log that lost acknowledged
        // events is refused with nothing written. The writer checks `state/head` again under its lock.
        try Trust.requireNoLoss(store)
        let writer = try await openWriter(store, config)
        defer { writer.close() }
        let views = try ProjectionStore(store: store)
        views.onWaitingForRebuild = config.onWaitingForRebuild
        // Cancelling the run's task (Ctrl-C) also stops a catch-up of the views that waits for
        // another process's rebuild or rebuilds them itself (`FoldInterrupted`, nothing changed):
        // that work is synchronous and does not see the task's cancellation otherwise, so the
        // first Ctrl-C went unheeded until the other rebuild ended. Its rebuild stops between
        // transactions (its last statements, the index builds and the swap, run to their end).
        // An incremental catch-up is not stopped: after a run cancelled while fetching, the
        // events it recorded are still folded into the views. Only a catch-up that needs a
        // rebuild then is (the views stay behind; the next command catches them up).
        let cancelled = CancellationFlag()
        views.shouldStop = { cancelled.isSet }
        let limiter = RateLimiter(policy: config.policy, clock: config.clock,
                                  store: FileCallRecord(path: store.statePath + "/api-calls.json"))
        // A call record that cannot be read fails the run before anything is recorded (it
        // failed the first API call, recording a failed run that sent nothing).
        try await limiter.checkRecord()
        // The run's steps go through `step`, which remembers the last: once a wait said on the
        // progress line is over, the step it interrupted is shown again (the line said "waiting"
        // until the fetch's next step: review).
        var runProgress = config.progress
        if let progress = config.progress {
            let perMinute = config.policy.requestsPerMinute
            let last = Mutex<(step: String?, said: Bool)>((nil, false))
            runProgress = { text in
                last.withLock { $0.step = text }
                progress(text)
            }
            await limiter.setOnWait({ seconds, recent in
                guard seconds >= 1 else { return }
                last.withLock { $0.said = true }
                progress(String(format: "waiting %.0f s for the API rate limit (%d requests a minute, %d made in the last minute)",
                                seconds.rounded(.up), perMinute, recent))
            }, ended: {
                let step = last.withLock { l -> String? in
                    defer { l.said = false }
                    return l.said ? l.step : nil
                }
                if let step { progress(step) }
            })
        }
        let remaining = await limiter.remainingToday()
        let minimumCalls = config.request.appointmentIds == nil ? Self.minimumCalls : 1
        if remaining < minimumCalls {
            let reset = await limiter.resetsAt().map { ISOTime.format($0) } ?? "within 24 hours"
            throw SyncSessionError(
                code: .budgetExhausted,
                message: "daily API budget nearly used up: \(remaining) of \(config.policy.dailyBudget) calls left and a run needs at least \(minimumCalls); the next call frees at \(reset)",
                underlying: nil)
        }
        let client = IntakeQClient(baseURL: config.baseURL, apiKey: config.apiKey, limiter: limiter, clock: config.clock,
                                   maxRetries: config.maxRetries, timeoutSeconds: config.timeoutSeconds,
                                   logger: config.logger)
        let runner = try SyncRunner(writer: writer, views: views, client: client, logger: config.logger,
                                    progress: runProgress, keys: keys)
        var outcome = try await withTaskCancellationHandler {
            try await runner.run(config.request)
        } onCancel: {
            cancelled.set()
        }
        outcome.notices = notices
        return outcome
    }
}

/// Set once, from any thread (a task's cancellation handler), read by synchronous work.
final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}
