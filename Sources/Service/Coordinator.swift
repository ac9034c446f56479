import Domain
import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Logging
import NIOConcurrencyHelpers
import Projections
import Sync

/// What a queued run covers.
public enum RunScope: Sendable, Hashable {
    case all
    case org(String)
    case patient(String)

    var json: JSONValue {
        switch self {
        case .all: return .string("all")
        case .org(let o): return .object(["org": .string(o)])
        case .patient(let p): return .object(["patient": .string(p)])
        }
    }

    /// `request` narrowed to this scope.
    func scoped(_ request: SyncRequest) -> SyncRequest {
        var request = request
        switch self {
        case .all: break
        case .org(let o): request.organizationId = o
        case .patient(let p): request.patientId = p
        }
        return request
    }

    init?(json: JSONValue) {
        switch json {
        case .string("all"): self = .all
        case .object(let o) where o.count == 1:
            if let org = o["org"]?.stringValue { self = .org(org) }
            else if let patient = o["patient"]?.stringValue { self = .patient(patient) }
            else { return nil }
        default: return nil
        }
    }
}

/// A queued, running or finished run the server started.
struct RunRecord: Sendable {
    var runId: String
    var scope: RunScope
    var syncType: String?
    var triggeredBy: String
    var status: String
    var queuedAt: Int64
    var startedAt: Int64?
    var completedAt: Int64?
    var outcome: SyncOutcome?
    var error: String?
    /// Restored as failed after a restart (it was running, or no longer valid): the log's
    /// `sync_logs` row, when there is one, knows better.
    var stoppedUnfinished = false

    var json: JSONValue {
        var o: [String: JSONValue] = [
            "run_id": .string(runId), "scope": scope.json, "status": .string(status),
            "triggered_by": .string(triggeredBy), "queued_at": .string(ISOTime.format(millis: queuedAt)),
            "started_at": startedAt.map { .string(ISOTime.format(millis: $0)) } ?? .null,
            "completed_at": completedAt.map { .string(ISOTime.format(millis: $0)) } ?? .null,
            "error": error.map(JSONValue.string) ?? .null,
        ]
        if let s = syncType ?? outcome?.syncType { o["sync_type"] = .string(s) }
        if let out = outcome {
            o["counts"] = .object([
                "new": .number(Double(out.counts.new)), "updated": .number(Double(out.counts.updated)),
                "unchanged": .number(Double(out.counts.unchanged)), "removed": .number(Double(out.counts.removed)),
                "errors": .number(Double(out.counts.errors)),
            ])
            o["api_calls"] = .number(Double(out.api.calls))
            o["head"] = .string(out.head.description)
            o["duration_ms"] = .number(Double(out.durationMs))
        }
        return .object(o)
    }
}

/// Webhook intake counters (no personal data).
struct WebhookCounters: Sendable {
    var accepted = 0
    var duplicate = 0
    var notInRoster = 0
    var badSecret = 0
    var malformed = 0
    var tooLarge = 0
    var json: JSONValue {
        .object([
            "accepted": .number(Double(accepted)), "duplicate": .number(Double(duplicate)),
            "not_in_roster": .number(Double(notInRoster)), "bad_secret": .number(Double(badSecret)),
            "malformed": .number(Double(malformed)), "too_large": .number(Double(tooLarge)),
        ])
    }
}

/// The one writer inside the server: a queue of runs (manual, scheduled) and the webhook inbox,
/// worked through one run at a time on a dedicated executor. Each run goes through
/// `SyncSession.run`, which takes the store's writer lock and releases it when the run ends, so a
/// cron `syncledger sync --wait-lock` on the same store takes its turn between the server's runs.
final class Coordinator: Sendable {
    struct State: Sendable {
        var queue: [String] = []
        var runs: [String: RunRecord] = [:]
        var finishedOrder: [String] = []
        var running: String?
        /// Runs restored as failed after a restart, kept in the queue file for a week.
        var restoredFailures: [RunRecord] = []
        var stopping = false
        var budgetBlockedUntil = 0.0
        /// Webhook runs in a row that IntakeQ answered none of, with ids that had not failed
        /// before among them (down, a wrong API key): each doubles the wait before the next
        /// webhook run (`webhookRetryDelay`).
        var webhookFailures = 0
        /// The last back-offs of the whole inbox: when each was decided and until when it holds
        /// (epoch seconds).
        var webhookBackOffs: [(at: Double, until: Double)] = []
        /// Ids whose lookups IntakeQ did not answer: how many runs in a row, and until when each
        /// is left out of webhook runs (epoch seconds). One appointment IntakeQ keeps failing
        /// waits on its own; the others are looked up as they come.
        var idWaits: [String: (failures: Int, until: Double)] = [:]
        /// The last back-offs of single ids.
        var idBackOffs: [(id: String, at: Double, until: Double)] = []
        var webhookRunning = false
        var counters = WebhookCounters()
        var lastWebhookRun: (id: String, status: String, processed: Int)?
        /// Attempts of the scheduler to queue the nightly run that failed (the queue file could not be written).
        var scheduleFailures = 0
    }

    let config: ServeConfiguration
    let inbox: WebhookInbox
    let state = NIOLockedValueBox(State())
    let executor = WriterExecutor()
    let logger: Logger
    let rosterClients: Set<String>
    /// Called after every run the worker made (it may have written events): `--postgres`.
    let afterWrite: (@Sendable () -> Void)?
    /// Told after every run the worker finished or could not start (the alerts and metrics
    /// listen); called on the worker, so it must return at once.
    let afterRun = NIOLockedValueBox<(@Sendable (SyncOutcome?) -> Void)?>(nil)
    /// Told, in SQLite's words, when a run met a damaged page of the views (it failed on one, or
    /// its catch-up after recording did), with the views file at the path when the run began
    /// (the one it opened); must return at once.
    let onViewsDamage = NIOLockedValueBox<(@Sendable (String, FileIdentity?) -> Void)?>(nil)

    /// The runs asked for and not started yet, on disk (`STORE/state/queued-runs.json`, written
    /// before the 202): a run queued behind another was lost on SIGTERM or a crash, and its id
    /// answered 404 after the restart (hostile test). The run in progress is in it too, marked
    /// started, until it ends: after a crash it is not run again (its `sync.started` may be in
    /// the log, closed out by the next run), and its id answers "failed" rather than 404.
    var queueFile: String { config.storePath + "/state/queued-runs.json" }
    /// Held across a change of the queue and the write that records it, so that no answer (a
    /// 202, or "already queued") is given before the file holds the run.
    private let queueWrites = NIOLock()

    /// The queue could not be recorded on disk: the run was not queued (the API answers 503).
    struct QueueNotWritten: Error, CustomStringConvertible {
        var reason: String
        var description: String { "the run could not be queued: \(reason)" }
    }

    /// Writes the queue as it is now, or removes the file when nothing waits, runs or is kept.
    /// Call with `queueWrites` held.
    private func writeQueueLocked() throws {
        let (waiting, running, failed): ([RunRecord], RunRecord?, [RunRecord]) = state.withLockedValue { s in
            (s.queue.compactMap { s.runs[$0] }, s.running.flatMap { s.runs[$0] }, s.restoredFailures)
        }
        if waiting.isEmpty && running == nil && failed.isEmpty {
            if unlink(queueFile) == 0 {
                syncDirectoryOf(queueFile)
            } else if errno != ENOENT {
                throw QueueNotWritten(reason: "cannot remove \(queueFile): \(String(cString: strerror(errno)))")
            }
            return
        }
        let list: [JSONValue] = (running.map { [$0] } ?? []).map { entry($0, started: true) }
            + waiting.map { entry($0, started: false) } + failed.map { entry($0, started: false) }
        do {
            try writeFileAtomically(queueFile, Array((JSONValue.object(["queued": .array(list)]).canonicalText + "\n").utf8))
        } catch {
            throw QueueNotWritten(reason: "\(error)")
        }
    }

    /// Records the queue as it is now (the worker, as a run starts and ends). A failure is
    /// logged: the run in memory goes on.
    func persistQueue() {
        queueWrites.withLock {
            do { try writeQueueLocked() } catch {
                logger.error("the queued runs could not be written to disk: a restart would not know them", metadata: ["error": "\(error)"])
            }
        }
    }

    private func entry(_ r: RunRecord, started: Bool) -> JSONValue {
        var o: [String: JSONValue] = [
            "run_id": .string(r.runId), "scope": r.scope.json, "triggered_by": .string(r.triggeredBy),
            "queued_at": .number(Double(r.queuedAt)),
        ]
        if let t = r.syncType { o["sync_type"] = .string(t) }
        if started { o["started"] = .bool(true) }
        // Kept so that `runs/{id}` of a run restored as failed still says when it started.
        if let at = r.startedAt { o["started_at"] = .number(Double(at)) }
        if r.stoppedUnfinished, let e = r.error {
            o["failed"] = .string(e)
            o["failed_at"] = .number(Double(r.completedAt ?? ISOTime.nowMillis()))
        }
        return .object(o)
    }

    /// How long a run restored as failed is remembered in the queue file (its id answers
    /// "failed" across further restarts, even when it never recorded a sync_logs row).
    static let restoredFailureMillis: Int64 = 7 * 86_400_000

    /// Queues again the runs a previous server accepted and did not start (same ids, so a client
    /// following `/api/v1/runs/{id}` sees them through), and records as failed the one it was
    /// running and any that can no longer run (`nothingToSync`: the server's view of forgotten
    /// patients). Called before the server takes requests. Returns how many were queued again.
    @discardableResult
    func restoreQueue(nothingToSync: (RunScope) -> String? = { _ in nil }) -> Int {
        let bytes: [UInt8]
        switch readInputFile(queueFile, limit: 64 << 20) {
        case .success(let read): bytes = read
        case .failure(let error) where error.code == ENOENT: return 0
        case .failure(let error):
            logger.error("the queued runs file cannot be read: its runs are not started again",
                         metadata: ["file": "\(queueFile)", "error": "\(error)"])
            return 0
        }
        guard let value = try? FastJSON.parse(bytes), case .array(let list)? = value["queued"] else {
            // Kept for a person to read; the next write would replace it.
            let aside = queueFile + ".unreadable-\(ISOTime.nowMillis())"
            _ = rename(queueFile, aside)
            logger.error("the queued runs file does not read: its runs are not started again (moved aside)", metadata: ["file": "\(aside)"])
            return 0
        }
        var restored = 0
        var dropped: [String] = []
        let now = ISOTime.nowMillis()
        for item in list {
            guard let id = item["run_id"]?.stringValue, run(id) == nil,
                  let scope = item["scope"].flatMap(RunScope.init(json:)),
                  let recordedBy = item["triggered_by"]?.stringValue else {
                dropped.append(item["run_id"]?.stringValue ?? "?")
                continue
            }
            var r = RunRecord(runId: id, scope: scope, syncType: item["sync_type"]?.stringValue,
                              triggeredBy: Self.restoredTrigger(recordedBy, roster: config.roster, warn: { self.logger.warning("\($0)") }),
                              status: "queued", queuedAt: item["queued_at"]?.doubleValue.map { Int64($0) } ?? now)
            r.startedAt = item["started_at"]?.doubleValue.flatMap { Int64(exactly: $0.rounded(.down)) }
            var problem: String?
            var at = now
            if case .string(let failure)? = item["failed"] {
                // Restored as failed by an earlier start: remembered for a week.
                at = item["failed_at"]?.doubleValue.map { Int64($0) } ?? now
                guard now - at < Self.restoredFailureMillis else { continue }
                problem = failure
            } else if case .bool(true)? = item["started"] {
                problem = "the server stopped before this run finished; it was not run again (ask for a new one)"
            } else if let why = Self.syncTypeProblem(r.syncType, scope: scope) {
                problem = "not run after the restart: \(why)"
            } else {
                do { try scope.scoped(SyncRequest(roster: config.roster)).validate() } catch { problem = "not run after the restart: \(error)" }
                if problem == nil, let why = nothingToSync(scope) { problem = "not run after the restart: \(why)" }
            }
            if let problem {
                (r.status, r.error, r.stoppedUnfinished, r.completedAt) = ("failed", problem, true, at)
                let failed = r
                state.withLockedValue { s in
                    s.runs[id] = failed
                    s.restoredFailures.append(failed)
                }
                continue
            }
            let queued = r
            state.withLockedValue { s in
                s.runs[id] = queued
                s.queue.append(id)
            }
            restored += 1
        }
        if !dropped.isEmpty {
            logger.error("entries of the queued runs file were not understood and are dropped", metadata: ["runs": "\(dropped.joined(separator: ","))"])
        }
        if restored > 0 { logger.info("runs queued before the restart are queued again", metadata: ["runs": "\(restored)"]) }
        persistQueue()
        return restored
    }

    /// A `sync_type` a queue entry may carry with its scope, or why not: only the scheduler's
    /// whole-roster run is `automated_daily`, a requested whole-roster run `manual_org_bulk`, and
    /// an organization's or a patient's run takes its type from its scope (hostile test: an
    /// edited entry ran an organization's run as the nightly one).
    static func syncTypeProblem(_ syncType: String?, scope: RunScope) -> String? {
        switch (scope, syncType) {
        case (.all, "manual_org_bulk"?), (.all, "automated_daily"?), (.org, nil), (.patient, nil): return nil
        default: return "the queue file gives it sync_type \(syncType ?? "(none)"), which does not fit its scope"
        }
    }

    /// `triggered_by` of a restored entry as it may be recorded in the log: only the server's
    /// own words ("scheduler") or a token's ("api:NAME", "admin:NAME", checked by `recordable`
    /// against this roster) without control characters; anything else, which only an edit of
    /// the file can put there, is recorded as "restored:(unrecognised)" (hostile test: an email
    /// and escape sequences reached the log).
    static func restoredTrigger(_ by: String, roster: Roster, warn: (String) -> Void) -> String {
        let clean = !by.unicodeScalars.contains { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format }
        let known = by == "scheduler" || by.hasPrefix("api:") || by.hasPrefix("admin:")
        guard clean, known else {
            warn("a queued run's triggered_by in the queue file is not one the server writes: recorded as restored:(unrecognised)")
            return "restored:(unrecognised)"
        }
        return recordable(by, roster: roster, warn: warn)
    }

    /// The views file a run starting now opens.
    private var viewsFile: FileIdentity? { FileIdentity(path: config.storePath + "/projections.sqlite") }

    /// Passes a run's damaged-views error, if it is one, to `onViewsDamage`.
    private func noteDamage(_ error: any Error, readFrom: FileIdentity?) {
        guard let words = ViewsDamaged.words(of: error) else { return }
        onViewsDamage.withLockedValue { $0 }?(words, readFrom)
    }

    private func noteDamage(_ outcome: SyncOutcome, readFrom: FileIdentity?) {
        guard outcome.viewsDamaged, let words = outcome.viewsError else { return }
        onViewsDamage.withLockedValue { $0 }?(words, readFrom)
    }

    init(config: ServeConfiguration, inbox: WebhookInbox, afterWrite: (@Sendable () -> Void)? = nil) {
        self.config = config
        self.afterWrite = afterWrite
        self.inbox = inbox
        self.logger = config.logger
        self.rosterClients = Set(config.roster.allPatients.map(\.intakeqClientId))
    }

    // MARK: Manual and scheduled runs

    /// Queues a run; a scope already waiting returns the waiting run (`existing` true).
    func enqueue(_ scope: RunScope, syncType: String? = nil, triggeredBy: String) throws -> (RunRecord, existing: Bool) {
        // A whole-roster run someone asked for (the API, "Refresh all") is a manual bulk run:
        // only the scheduler's run is the nightly `automated_daily` one, so a manual refresh
        // never hides a nightly run that stopped happening.
        let syncType = syncType ?? (scope == .all ? "manual_org_bulk" : nil)
        try scope.scoped(SyncRequest(roster: config.roster)).validate()
        // `triggeredBy` is recorded in the log in the clear for good ("api:NAME", "admin:NAME"):
        // a token's name that names a roster patient (made before the roster listed them, or
        // by hand in the tokens file) is not recorded (hostile test, stop 56).
        let triggeredBy = Self.recordable(triggeredBy, roster: config.roster) { self.config.logger.warning("\($0)") }
        return try queueWrites.withLock { () throws -> (RunRecord, existing: Bool) in
            let queued = state.withLockedValue { s -> (RunRecord, existing: Bool) in
                if let id = s.queue.first(where: { s.runs[$0]?.scope == scope && s.runs[$0]?.syncType == syncType }), let r = s.runs[id] {
                    return (r, true)
                }
                let id = UUID().uuidString.lowercased()
                let r = RunRecord(runId: id, scope: scope, syncType: syncType, triggeredBy: triggeredBy, status: "queued",
                                  queuedAt: ISOTime.nowMillis())
                s.runs[id] = r
                s.queue.append(id)
                return (r, false)
            }
            guard !queued.existing else { return queued }
            do {
                try writeQueueLocked()
            } catch {
                // Not queued: a 202 would promise a run a restart could lose.
                let id = queued.0.runId
                state.withLockedValue { s in
                    s.queue.removeAll { $0 == id }
                    s.runs[id] = nil
                }
                logger.error("a run could not be queued: the queue file cannot be written", metadata: ["error": "\(error)"])
                throw error
            }
            return queued
        }
    }

    func run(_ id: String) -> RunRecord? { state.withLockedValue { $0.runs[id] } }

    /// `triggeredBy` as it may be recorded: when the name after its `kind:` names a roster
    /// patient (`_`, `.` and `-` read as spaces), the kind alone and a placeholder, and `warn`
    /// says so (naming neither the patient nor the token).
    static func recordable(_ triggeredBy: String, roster: Roster, warn: (String) -> Void) -> String {
        let kind = triggeredBy.split(separator: ":", maxSplits: 1).first.map(String.init) ?? triggeredBy
        // Only a token's name: the server's own words ("webhook", "schedule") are its own.
        guard kind != triggeredBy, ["api", "admin"].contains(kind) else { return triggeredBy }
        let spaced = String(triggeredBy.map { "_.-:".contains($0) ? " " : $0 })
        guard roster.allPatients.personalDataProblem(in: spaced) != nil || roster.allPatients.personalDataProblem(in: triggeredBy) != nil else {
            return triggeredBy
        }
        warn("a run was asked for by a \(kind) token whose name names a roster patient: recorded as \(kind):(name withheld); rename the token (`syncledger token new`, then remove the old one from the tokens file)")
        return kind + ":(name withheld)"
    }

    var counters: WebhookCounters { state.withLockedValue { $0.counters } }

    func count(_ body: @Sendable (inout WebhookCounters) -> Void) { state.withLockedValue { body(&$0.counters) } }

    var isStopping: Bool { state.withLockedValue { $0.stopping } }

    func stop() { state.withLockedValue { $0.stopping = true } }

    // MARK: The worker

    /// Works until `stop()`: the run in progress always finishes (its events and sync.completed
    /// are written) before this returns.
    func work() async {
        while !isStopping && !Task.isCancelled {
            // Taken from the queue and recorded as started in one hold of `queueWrites`: an
            // enqueue whose write failed must not see its run already taken.
            if let id = queueWrites.withLock({ () -> String? in
                let id = state.withLockedValue { s -> String? in
                    guard !s.queue.isEmpty else { return nil }
                    let id = s.queue.removeFirst()
                    s.running = id
                    return id
                }
                if id != nil {
                    do { try writeQueueLocked() } catch {
                        logger.error("the queued runs could not be written to disk: a restart would not know them", metadata: ["error": "\(error)"])
                    }
                }
                return id
            }) {
                await execute(id)
                persistQueue()
                afterWrite?()
                continue
            }
            if webhookRunDue() {
                await drainWebhooks()
                afterWrite?()
                continue
            }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    private func webhookRunDue() -> Bool {
        guard inbox.oldestReceivedAt != nil else { return false }
        let now = Date().timeIntervalSince1970
        guard now >= state.withLockedValue({ $0.budgetBlockedUntil }) else { return false }
        let waiting = state.withLockedValue { Self.waiting($0, now: now) }
        guard let oldest = inbox.next(0, excluding: waiting).oldestReceivedAt else { return false }
        return Double(ISOTime.nowMillis() - oldest) / 1000 >= config.webhookBatchDelay
    }

    /// The ids left out of webhook runs now (their own back-off holds).
    private static func waiting(_ s: State, now: Double) -> Set<String> {
        guard !s.idWaits.isEmpty else { return [] }
        return Set(s.idWaits.lazy.filter { $0.value.until > now }.map(\.key))
    }

    private func sessionConfig(_ request: SyncRequest, maxRetries: Int? = nil) -> SyncConfiguration {
        var request = request
        request.pageCap = 200
        var session = SyncConfiguration(storePath: config.storePath, request: request, apiKey: config.apiKey,
                                        baseURL: config.baseURL, policy: config.policy, waitLock: nil,
                                        maxRetries: maxRetries ?? config.maxRetries, timeoutSeconds: config.timeoutSeconds,
                                        logger: quietLogger)
        session.keysPath = config.keysPath
        // A run that waits for another process's rebuild of the views (after an upgrade, a
        // developer's `syncledger rebuild`) says so in the log instead of hanging silently.
        let logger = self.logger
        session.onWaitingForRebuild = { pid in
            logger.notice("a sync run waits for another process's rebuild of the views to finish",
                          metadata: ["holder_pid": "\(pid ?? "unknown")"])
        }
        return session
    }

    /// The session's own logging stays at warning: its debug lines may name patients.
    private var quietLogger: Logger {
        var l = logger
        l.logLevel = max(l.logLevel, .warning)
        return l
    }

    /// Runs one session on the writer executor; waits (1 s at a time) while another process
    /// holds the writer lock.
    private func session(_ request: SyncRequest, maxRetries: Int? = nil) async throws -> SyncOutcome {
        let cfg = sessionConfig(request, maxRetries: maxRetries)
        while true {
            do {
                return try await withTaskExecutorPreference(executor) {
                    try await SyncSession.run(cfg)
                }
            } catch let e as SyncSessionError where e.code == .locked {
                if isStopping || Task.isCancelled { throw e }
                try? await Task.sleep(nanoseconds: 1_000_000_000)
            }
        }
    }

    private func execute(_ id: String) async {
        guard var record = run(id) else { return }
        record.status = "running"
        record.startedAt = ISOTime.nowMillis()
        let started = record
        state.withLockedValue { $0.runs[id] = started }
        var request = record.scope.scoped(SyncRequest(roster: config.roster, syncType: record.syncType, triggeredBy: record.triggeredBy))
        request.runId = id
        let readFrom = viewsFile
        do {
            let outcome = try await session(request)
            record.outcome = outcome
            record.status = outcome.status
            record.error = outcome.status == "completed" ? nil : outcome.errorMessage
            if outcome.status == "completed" {
                // IntakeQ answers again: waiting webhook ids need not wait out a back-off.
                state.withLockedValue { s in
                    if s.webhookFailures > 0 { (s.webhookFailures, s.budgetBlockedUntil) = (0, 0) }
                    s.idWaits = [:]
                }
            }
            logger.info("run finished", metadata: runMetadata(outcome))
            noteDamage(outcome, readFrom: readFrom)
        } catch {
            noteDamage(error, readFrom: readFrom)
            record.status = "failed"
            record.error = "\(error)"
            logger.error("run failed", metadata: ["run_id": "\(id)", "error": "\(error)"])
        }
        record.completedAt = ISOTime.nowMillis()
        let done = record
        state.withLockedValue { s in
            s.runs[id] = done
            s.running = nil
            s.finishedOrder.append(id)
            // Remember the last 1000 finished runs; older ones are in sync_logs.
            if s.finishedOrder.count > 1000 { s.runs[s.finishedOrder.removeFirst()] = nil }
        }
        afterRun.withLockedValue { $0 }?(done.outcome)
    }

    private func runMetadata(_ o: SyncOutcome) -> Logger.Metadata {
        ["run_id": "\(o.runId)", "sync_type": "\(o.syncType)", "status": "\(o.status)",
         "new": "\(o.counts.new)", "updated": "\(o.counts.updated)", "removed": "\(o.counts.removed)",
         "unchanged": "\(o.counts.unchanged)", "errors": "\(o.counts.errors)", "api_calls": "\(o.api.calls)",
         "duration_ms": "\(o.durationMs)", "head": "\(o.head)"]
            .merging(o.viewsError.map { ["views_error": "\($0)"] } ?? [:]) { a, _ in a }
    }

    // MARK: Webhooks

    private func drainWebhooks() async {
        let now = Date().timeIntervalSince1970
        let (waiting, failedBefore) = state.withLockedValue { (Self.waiting($0, now: now), Set($0.idWaits.keys)) }
        let due = inbox.next(config.maxIdsPerRun, excluding: waiting).ids
        // Ids that failed before go in runs of their own, each asked once (its back-off is its
        // retry): an id IntakeQ keeps failing, retried in the run with waits between (~30 s at
        // the default 4 retries), would hold the ids that came since behind it, and cost up to
        // five calls a try.
        let fresh = due.filter { !failedBefore.contains($0) }
        let ids = fresh.isEmpty ? due : fresh
        guard !ids.isEmpty else { return }
        var request = SyncRequest(roster: config.roster, syncType: "webhook", triggeredBy: "webhook")
        request.appointmentIds = ids
        // Stopping: the ids not looked up yet wait in the inbox for the next start.
        request.stopLookups = { [weak self] in self?.isStopping ?? true }
        let readFrom = viewsFile
        do {
            let outcome = try await session(request, maxRetries: fresh.isEmpty ? 0 : nil)
            let processed = outcome.processedIds
            try await withTaskExecutorPreference(executor) { try self.inbox.markDone(processed) }
            state.withLockedValue { $0.lastWebhookRun = (outcome.runId, outcome.status, processed.count) }
            logger.info("webhook run finished", metadata: runMetadata(outcome).merging(["ids": "\(ids.count)", "looked_up": "\(processed.count)"]) { a, _ in a })
            let answered = Set(processed)
            // What IntakeQ answered forgets its waits, whatever happened to the rest.
            state.withLockedValue { s in
                if !answered.isEmpty { s.webhookFailures = 0 }
                for id in answered { s.idWaits[id] = nil }
            }
            if processed.count == ids.count {
                // All looked up.
            } else if await budget().remaining == 0 {
                // The budget ran out during the run: the rest wait for it (not counted as failures).
                await blockOnBudget()
            } else {
                // IntakeQ did not answer some (or all) of them: each of those waits on its own,
                // or an id it keeps failing would be asked again (with its retries) in every run.
                // The whole inbox waits only when IntakeQ answered none and some of them had not
                // failed before: IntakeQ down, or a wrong API key, not one appointment it fails.
                let fresh = backOff(unanswered: ids.filter { !answered.contains($0) }, answered: answered.count,
                                    runError: outcome.status == "failed" ? outcome.errorMessage ?? "no reason recorded" : nil)
                if processed.isEmpty && fresh { backOff() }
            }
            noteDamage(outcome, readFrom: readFrom)
            afterRun.withLockedValue { $0 }?(outcome)
        } catch let e as SyncSessionError where e.code == .budgetExhausted {
            logger.warning("webhook ids wait: the daily API budget is spent", metadata: ["waiting": "\(inbox.depth)"])
            await blockOnBudget()
        } catch {
            noteDamage(error, readFrom: readFrom)
            logger.error("webhook run failed", metadata: ["error": "\(error)"])
            // Not "IntakeQ did not answer": the run failed, here or there (a full disk said so).
            backOff(why: "the last webhook runs failed")
        }
    }

    /// The wait before the next webhook run after `failures` runs in a row left ids IntakeQ did
    /// not answer: `webhookRetrySeconds`, doubled each time, at most `webhookRetryMaxSeconds`.
    /// (A fixed 5 s made a failed run, with its events and API calls, every few seconds for as
    /// long as IntakeQ was down, and spent the day's budget the nightly run needs.)
    static func webhookRetryDelay(failures: Int, base: Double, max: Double) -> Double {
        guard failures > 0 else { return 0 }
        return Swift.min(max, base * pow(2, Double(Swift.min(failures - 1, 40))))
    }

    /// Webhook runs in a row that IntakeQ answered none of, and the last back-offs of the inbox.
    var webhookRetry: (failures: Int, backOffs: [(at: Double, until: Double)]) {
        state.withLockedValue { ($0.webhookFailures, $0.webhookBackOffs) }
    }

    /// The ids waiting on their own back-off (runs in a row they were not answered, until when),
    /// and the last back-offs of single ids.
    var idRetry: (waits: [String: (failures: Int, until: Double)], backOffs: [(id: String, at: Double, until: Double)]) {
        state.withLockedValue { ($0.idWaits, $0.idBackOffs) }
    }

    /// Doubles the wait of each id IntakeQ did not answer (`webhookRetryDelay` of its own
    /// failures in a row). True when one of them had not failed before.
    /// `runError`: the run failed (its recorded reason), which is then what the log line says,
    /// not that IntakeQ did not answer (a full disk read as IntakeQ's fault, hostile test).
    private func backOff(unanswered: [String], answered: Int, runError: String? = nil) -> Bool {
        let now = Date().timeIntervalSince1970
        let (fresh, longest) = state.withLockedValue { s -> (Bool, Double) in
            var fresh = false
            var longest = 0.0
            for id in unanswered {
                let failures = (s.idWaits[id]?.failures ?? 0) + 1
                if failures == 1 { fresh = true }
                let delay = Self.webhookRetryDelay(failures: failures, base: config.webhookRetrySeconds,
                                                   max: config.webhookIdRetryMaxSeconds)
                s.idWaits[id] = (failures, now + delay)
                s.idBackOffs.append((id, now, now + delay))
                longest = max(longest, delay)
            }
            s.idBackOffs = Array(s.idBackOffs.suffix(16))
            return (fresh, longest)
        }
        var metadata: Logger.Metadata = [
            "ids": "\(unanswered.count)", "looked_up": "\(answered)", "retry_in_s_at_most": "\(Int(longest.rounded()))",
            "waiting": "\(inbox.depth)"]
        if let runError {
            metadata["error"] = "\(runError)"
            logger.warning("webhook ids wait: the run failed before their lookups were done", metadata: metadata)
        } else {
            logger.warning("webhook ids wait: IntakeQ did not answer their lookups", metadata: metadata)
        }
        return fresh
    }

    /// Counts a webhook run that left ids IntakeQ did not answer (or failed: `why`), and waits
    /// the back-off before the next.
    private func backOff(why: String = "IntakeQ did not answer the last webhook runs' lookups") {
        let now = Date().timeIntervalSince1970
        let (failures, wait) = state.withLockedValue { s -> (Int, Double) in
            s.webhookFailures += 1
            let delay = Self.webhookRetryDelay(failures: s.webhookFailures, base: config.webhookRetrySeconds,
                                               max: config.webhookRetryMaxSeconds)
            s.budgetBlockedUntil = now + delay
            s.webhookBackOffs = Array((s.webhookBackOffs + [(now, s.budgetBlockedUntil)]).suffix(16))
            return (s.webhookFailures, s.budgetBlockedUntil - now)
        }
        logger.warning("webhook ids wait: \(why)", metadata: [
            "failed_runs_in_a_row": "\(failures)", "retry_in_s": "\(Int(wait.rounded()))", "waiting": "\(inbox.depth)"])
    }

    /// Waiting ids are retried when the budget frees a call, or in a minute at the latest (a cron
    /// run elsewhere may have used it; IntakeQ may have been unreachable).
    private func blockOnBudget() async {
        let (remaining, resets) = await budget()
        let now = Date().timeIntervalSince1970
        var until = now + 60
        if remaining > 0 { until = now + 5 } else if let r = resets { until = min(until, max(now + 1, r.timeIntervalSince1970)) }
        state.withLockedValue { $0.budgetBlockedUntil = until }
    }

    /// Calls left today and when the next frees, from the call record in `STORE/state/`.
    func budget() async -> (remaining: Int, resetsAt: Date?) {
        let limiter = RateLimiter(policy: config.policy, store: FileCallRecord(path: config.storePath + "/state/api-calls.json"))
        return await withTaskExecutorPreference(executor) {
            (await limiter.remainingToday(), await limiter.resetsAt())
        }
    }

    /// Accepts a webhook's appointment id into the inbox (blocking: fsync).
    func accept(id: String, bodyHash: String) throws -> WebhookInbox.AddResult {
        try inbox.add(id: id, bodyHash: bodyHash)
    }

    // MARK: Scheduler

    /// Queues the automated_daily run at `--daily-at` in the practice's zone, every day, until
    /// stopped. A run that cannot be queued (the queue file cannot be written) is tried again
    /// `retryAfter` seconds later, not dropped until the next day. `now` is the clock (tests move it).
    func schedule(at: (hour: Int, minute: Int), in zone: ZoneRules, retryAfter: TimeInterval = 60,
                  now: @Sendable () -> Date = { Date() }) async {
        var next = ServeConfiguration.nextDaily(after: now(), at: at, in: zone)
        logger.info("next automated_daily run", metadata: ["at": "\(ISOTime.format(millis: Int64(next.timeIntervalSince1970 * 1000)))"])
        while !isStopping && !Task.isCancelled {
            if now() >= next {
                do {
                    _ = try enqueue(.all, syncType: "automated_daily", triggeredBy: "scheduler")
                } catch {
                    state.withLockedValue { $0.scheduleFailures += 1 }
                    // Tried again soon, not dropped until tomorrow (hostile test: a queue file
                    // that could not be written lost the night's run without a word).
                    logger.error("the automated_daily run could not be queued; trying again in \(Int(retryAfter.rounded())) s",
                                 metadata: ["error": "\(error)"])
                    next = now().addingTimeInterval(retryAfter)
                    continue
                }
                next = ServeConfiguration.nextDaily(after: now().addingTimeInterval(1), at: at, in: zone)
                logger.info("queued the automated_daily run; next", metadata: ["at": "\(ISOTime.format(millis: Int64(next.timeIntervalSince1970 * 1000)))"])
            }
            try? await Task.sleep(nanoseconds: 250_000_000)
        }
    }
}

/// fsyncs the directory holding `path`, so that a file just removed from it stays removed.
private func syncDirectoryOf(_ path: String) {
    let fd = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd >= 0 {
        _ = fsync(fd)
        close(fd)
    }
}
