import Domain
import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Logging
import Projections

/// What one run is asked to do.
public struct SyncRequest: Sendable {
    public var roster: Roster
    public var organizationId: String?
    public var patientId: String?
    /// Overrides the sync type label (for example `webhook`).
    public var syncType: String?
    /// The centre of the window (`--now`); the real clock when nil.
    public var now: Date?
    public var daysBack = 90
    public var daysAhead = 90
    public var triggeredBy = "cli"
    /// Bounds the crawl; a crawl that reaches it is incomplete (and removes nothing).
    public var pageCap = 200
    /// The "ids" scope (webhook runs): instead of crawling the window, look up exactly these
    /// appointments by id (`GET /appointments/{id}`), and record what changed. The sync type
    /// defaults to `webhook`. Not combined with an organization or patient.
    public var appointmentIds: [String]?
    /// Asked before each lookup of `appointmentIds`: once true, the rest are not looked up
    /// (they are not among the outcome's `processedIds`, so a server's inbox keeps them). A
    /// server's SIGTERM waited for every id of a run against an IntakeQ that did not answer,
    /// ~5 s each with retries (hostile test: 4 minutes for 44 ids).
    public var stopLookups: (@Sendable () -> Bool)?
    /// The run's id (a UUID, lowercase) when the caller chose it in advance (a queued run the
    /// server has already answered with); a new one otherwise.
    public var runId: String?

    public init(roster: Roster, organizationId: String? = nil, patientId: String? = nil, syncType: String? = nil,
                now: Date? = nil, daysBack: Int = 90, daysAhead: Int = 90, triggeredBy: String = "cli") {
        self.roster = roster
        self.organizationId = organizationId
        self.patientId = patientId
        self.syncType = syncType
        self.now = now
        self.daysBack = daysBack
        self.daysAhead = daysAhead
        self.triggeredBy = triggeredBy
    }
}

extension SyncRequest {
    /// Checks scope, type and window (an org or patient not in the roster, an empty roster,
    /// out-of-range days) before anything is opened or sent; throws `SyncError`.
    public func validate() throws { _ = try SyncPlan(self) }
}

/// What a run did.
public struct SyncOutcome: Sendable {
    public var runId: String
    public var syncType: String
    public var status: String
    public var counts: SyncCounts
    public var api: APIUsage
    public var warnings: [String]
    public var errors: [String]
    public var errorMessage: String?
    public var head: LogHead
    public var durationMs: Int64
    public var abandoned: [String]
    /// The run was interrupted (its task cancelled by SIGINT/SIGTERM) and recorded as failed.
    public var interrupted = false
    /// The run is fully recorded in the log, but bringing the views up to date failed: this says why.
    public var viewsError: String?
    /// `viewsError` says the views database is damaged (a page SQLite could not read).
    public var viewsDamaged = false
    /// The views could not be updated because the log is damaged where they read it (a batch
    /// before this run's, failing its checksum): not mended by the next command, nor by a rebuild.
    public var logDamage: LogError?
    /// One-time notices of the run (the master key created beside the log), for the caller to show.
    public var notices: [String] = []
    /// In an "ids" run: the ids whose lookup finished (found, 404, or undecodable); the others
    /// (the budget ran out, IntakeQ could not be reached) are still to do.
    public var processedIds: [String] = []
    /// How many times IntakeQ answered 429 during the run (not recorded in the log).
    public var responses429 = 0

    /// 0 completed, 2 partial_success, 1 failed. A run whose views could not be updated
    /// afterwards is no clean run: 2, unless it failed (1).
    public var exitCode: Int32 {
        switch status {
        case "completed": return viewsError == nil ? 0 : 2
        case "partial_success": return 2
        default: return 1
        }
    }

    /// "X new, Y updated, Z unchanged, R removed, E errors in N s; head SEQ:HASH", after the run's
    /// status when it did not complete ("partial_success: …", "interrupted, recorded as failed:
    /// …"): after an interrupt's failure line, the bare counts read as a run that went well
    /// (hostile test).
    public var summaryLine: String {
        let secs = String(format: "%.1f", Double(durationMs) / 1000)
        let line = "\(counts.new) new, \(counts.updated) updated, \(counts.unchanged) unchanged, \(counts.removed) removed, \(counts.errors) errors in \(secs) s; head \(head)"
        if interrupted { return "interrupted, recorded as failed: " + line }
        return status == "completed" ? line : "\(status): " + line
    }
}

public let toolVersion = "0.1.0"

/// Runs one sync: fetches the window from IntakeQ, diffs it against the ledger, appends what
/// changed, and brings the views up to date. Holds the store's single-writer lock throughout.
/// Its file and SQLite work runs on `StoreIO`'s own thread, never on the cooperative pool.
@StoreIO
public final class SyncRunner {
    let writer: LedgerWriter
    let reader: LedgerReader
    let views: ProjectionStore
    let client: IntakeQClient
    let logger: Logger
    let progress: (@Sendable (String) -> Void)?

    let keys: KeyRing
    /// Events per append (each batch durable before the next is written). Tests make it small.
    var batchSize = 1000
    /// Tests: called with each batch before it is sealed (on the sealing thread), to fail it.
    var failSealing: (@Sendable ([NewEvent]) throws -> Void)?
    /// Tests: called as the fetch starts (after `sync.started` is appended), to fail the run there.
    var failAfterStart: (() throws -> Void)?

    /// `keys`: the key store personal data is sealed with; the store's own (`store.keysPath`,
    /// created on first use) when nil.
    public init(writer: LedgerWriter, views: ProjectionStore, client: IntakeQClient, logger: Logger,
                progress: (@Sendable (String) -> Void)? = nil, keys: KeyRing? = nil) throws {
        self.writer = writer
        let keys = try keys ?? KeyRing.open(directory: writer.store.keysPath, create: true)
        self.keys = keys
        self.reader = try LedgerReader(store: writer.store, keys: keys)
        self.views = views
        self.client = client
        self.logger = logger
        self.progress = progress
    }

    public func run(_ request: SyncRequest) async throws -> SyncOutcome {
        // A forgotten patient is outside the roster from then on: their appointments are out of
        // scope, and in a group appointment they are redacted like anyone not in the roster.
        var request = request
        var forgottenWarnings: [String] = []
        for p in request.roster.allPatients where self.keys.isForgotten(p.id) {
            forgottenWarnings.append("patient \(p.id) was forgotten (`syncledger forget`); left out of this run's roster")
        }
        if !forgottenWarnings.isEmpty {
            request.roster.organizations = request.roster.organizations.map { o in
                var o = o
                o.patients = o.patients.filter { !self.keys.isForgotten($0.id) }
                return o
            }
        }
        let plan = try SyncPlan(request)
        let ring = self.keys
        let patientOf = Dictionary(request.roster.allPatients.map { ($0.intakeqClientId, $0.id) }, uniquingKeysWith: { a, _ in a })
        try views.catchUp(reader)
        // The keys must be this log's before anything is sealed with them: with another store's
        // `keys/` in place, what this run sealed would not open once the store's own were back.
        try views.checkKeysOpenTheLastRoster(reader)
        let runId = request.runId ?? UUID().uuidString.lowercased()

        // 1. Close out runs that never completed, then record the start (and the roster, if new).
        var opening: [NewEvent] = []
        let open = try views.openRuns()
        for old in open {
            opening.append(NewEvent(type: .syncAbandoned, run: runId, stream: Streams.syncRun(old),
                                    data: encodeData(SyncAbandoned(abandonedRun: old, reason: "the run started and never completed (the process stopped before sync.completed)"))))
        }
        opening.append(NewEvent(type: .syncStarted, run: runId, stream: Streams.syncRun(runId), data: encodeData(plan.started(runId: runId, request: request))))
        // Every key this run may seal with, read or made (new patients' together) before anything
        // is appended: a key that cannot be read or made fails the run with nothing of it in the
        // log, and sealing finds every key it needs in the ring.
        try ring.makeKeys(for: request.roster.allPatients.map(\.id))
        if try views.lastRosterHash() != request.roster.hash {
            opening.append(NewEvent(type: .rosterObserved, run: runId, stream: Streams.roster,
                                    data: try PersonalData.sealRoster(request.roster.observed, key: ring.key(for:))))
        }
        // Cancelled before the run begins (Ctrl-C while the views were caught up): nothing is
        // recorded. From here on the run is recorded whatever happens, and the views' catch-up
        // after it is no longer stopped (its events are folded as the run's outcome says).
        try Task.checkCancellation()
        views.shouldStop = nil
        // The run's duration starts here, with `sync.started`: the catch-up of the views before
        // it (tens of seconds for a first fold at millions of events) is not the run's.
        let started = ISOTime.nowMillis()
        try writer.append(opening)
        progress?("sync \(plan.syncType): window \(plan.windowStartDay) … \(plan.windowEndDay)")
        do {
            return try await fetchAndRecord(plan: plan, runId: runId, request: request, started: started, open: open,
                                            patientOf: patientOf, forgottenWarnings: forgottenWarnings)
        } catch {
            // Recorded as failed, with the reason: left in progress, the run would later read as
            // died (killed, or the machine stopped). When even this cannot be appended (a full
            // disk), it is left so and the error stands on its own.
            // Batches appended before the failure stay in the log (the next command folds them
            // into the views): the record counts them, and keeps what the fetch noted, so the
            // run's summary agrees with what the log holds.
            let partial = error as? PartlyRecorded
            let error = partial?.error ?? error
            let reason = Self.oneLine(error)
            var warnings = forgottenWarnings + (partial?.warnings ?? [])
            if let partial, partial.recorded > 0 {
                warnings.append("\(partial.recorded) of the run's \(partial.planned) appointment events were recorded before it failed")
            }
            var failed = SyncCompleted(
                status: "failed", counts: partial?.counts ?? SyncCounts(), api: APIUsage(), warnings: warnings,
                errors: [reason] + (partial?.errors ?? []), errorMessage: reason, unchanged: [], headBefore: writer.head.description,
                durationMs: ISOTime.nowMillis() - started)
            failed.api.calls = await client.stats().calls
            _ = try? writer.append([NewEvent(type: .syncCompleted, run: runId, stream: Streams.syncRun(runId), data: encodeData(failed))])
            throw error
        }
    }

    /// An error as one line (a database error's text may hold its SQL on more lines).
    static func oneLine(_ error: any Error) -> String {
        "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    /// Steps 2 and 3 of `run`: fetch and diff, append the observations and `sync.completed`, bring
    /// the views up to date.
    private func fetchAndRecord(plan: SyncPlan, runId: String, request: SyncRequest, started: Int64, open: [String],
                                patientOf: [String: String], forgottenWarnings: [String]) async throws -> SyncOutcome {
        let ring = self.keys
        try failAfterStart?()

        // 2. Fetch and diff.
        let views = self.views, reader = self.reader
        var diff = SyncDiff(plan: plan, known: try views.knownAppointments(), priorObjects: { try views.recordedObjects($0, reader: reader) })
        let fetcher = Fetcher(client: client, plan: plan, progress: progress)
        let fetch: FetchResult
        if let ids = request.appointmentIds {
            fetch = await fetcher.fetch(ids: ids, stop: request.stopLookups)
        } else {
            fetch = await fetcher.fetch(known: diff.known, settingsHash: try views.lastSettingsHash(reader))
        }
        diff.apply(fetch)

        // 3. Append the observations, then sync.completed as a batch of its own.
        // Personal data of roster patients sealed, the observations together on every core.
        // Each batch of 1,000 is sealed while the one before it is written (`SealedAppender`);
        // their keys are in the ring already (`makeKeys` above).
        var events = diff.events(runId: runId)
        if let settings = fetch.settings { events.insert(settings.event(runId: runId), at: 0) }
        let failSealing = self.failSealing
        let appender = SealedAppender(writer: writer) { batch in
            try failSealing?(batch)
            var batch = batch
            try PersonalData.sealObservations(in: &batch, patientOf: { patientOf[$0] }, key: { try ring.key(for: $0) })
            return batch
        }
        // Asked before anything is appended: once webhooks feed this store, every change the
        // nightly crawl still finds is one no webhook brought (a webhook's run would have
        // recorded it already).
        let webhooksFeedThisStore = plan.syncType == "automated_daily" ? try views.hasRun(ofType: "webhook") : false
        // A failure from here to `sync.completed` fails the run, and its record counts what was
        // appended (`PartlyRecorded`): the events the log's head moved over, whichever step
        // failed (a batch's write, the next batch's sealing, `sync.completed` itself). Only
        // this run appends while it holds the writer, and a failed append is cut back.
        let headBefore = writer.head.seq
        let settingsEvents = fetch.settings == nil ? 0 : 1
        func partlyRecorded(_ error: any Error) -> PartlyRecorded {
            let appointments = max(min(Int(writer.head.seq - headBefore), events.count) - settingsEvents, 0)
            return PartlyRecorded(error: error, recorded: appointments, planned: events.count - settingsEvents,
                                  counts: diff.recordedCounts(appointments), warnings: diff.warnings + fetch.warnings,
                                  errors: fetch.errors)
        }
        do {
            for chunk in stride(from: 0, to: events.count, by: batchSize) {
                try appender.append(Array(events[chunk..<min(chunk + batchSize, events.count)]))
            }
            try appender.finish()
        } catch {
            throw partlyRecorded(error)
        }
        let stats = await client.stats()
        var api = APIUsage()
        api.calls = stats.calls
        api.retries = stats.retries
        api.rateLimitWaits = stats.rateLimitWaits
        api.waitedSeconds = stats.waitedSeconds
        api.rateLimitHit = stats.rateLimitHit
        let status = diff.status(fetch)
        let durationMs = ISOTime.nowMillis() - started
        var completed = SyncCompleted(
            status: status, counts: diff.counts, api: api, warnings: forgottenWarnings + diff.warnings + fetch.warnings,
            errors: fetch.errors, errorMessage: fetch.fatal ?? fetch.errors.first,
            unchanged: diff.unchanged, headBefore: writer.head.description, durationMs: durationMs)
        if webhooksFeedThisStore {
            completed.changesMissedByWebhooks = diff.counts.new + diff.counts.updated + diff.counts.removed
        }
        do {
            try writer.append([NewEvent(type: .syncCompleted, run: runId, stream: Streams.syncRun(runId), data: encodeData(completed))])
        } catch {
            throw partlyRecorded(error)
        }
        // The run is recorded whatever happens next: a failure to update the views is not a
        // failed run (the next command catches them up).
        var viewsError: String?
        var viewsDamaged = false
        var logDamage: LogError?
        do { try views.catchUp(reader) } catch {
            // A `ViewsDamaged`'s own words end in the remedy, which the caller adds: only its reason.
            viewsError = ViewsDamaged.isDiskFull(error) ? ViewsDamaged.diskFullWords
                : (error as? ViewsDamaged).map { $0.reason.split(whereSeparator: \.isNewline).joined(separator: " ") } ?? Self.oneLine(error)
            viewsDamaged = ViewsDamaged.isDamage(error)
            if let e = error as? LogError, e.isCorruption { logDamage = e }
        }
        var outcome = SyncOutcome(
            runId: runId, syncType: plan.syncType, status: status, counts: diff.counts, api: api,
            warnings: completed.warnings, errors: completed.errors, errorMessage: completed.errorMessage,
            head: writer.head, durationMs: durationMs, abandoned: open)
        outcome.interrupted = fetch.interrupted
        outcome.viewsError = viewsError
        outcome.viewsDamaged = viewsDamaged
        outcome.logDamage = logDamage
        outcome.processedIds = fetch.processed
        outcome.responses429 = stats.responses429
        return outcome
    }
}

/// An append of the run's events failed after `recorded` of its `planned` appointment events
/// were durable (`counts`: what they were); `run` records that and throws `error`.
struct PartlyRecorded: Error {
    var error: any Error
    var recorded: Int
    var planned: Int
    var counts: SyncCounts
    /// What the fetch and the diff noted, which the failed run's record keeps.
    var warnings: [String]
    var errors: [String]
}

/// The scope, type and window of a run, worked out from the request before anything is sent.
struct SyncPlan: Sendable {
    var syncType: String
    var organizationId: String?
    var patientId: String?
    var patientEmail: String?
    /// IntakeQ client ids in scope.
    var scopeClients: Set<String>
    var patientsInScope: Int
    var knownPractitioners: Set<String>
    /// Every IntakeQ client id of the whole roster (the scope may be one organization).
    var rosterClients: Set<String>
    var nowMillis: Int64
    var windowStart: Int64
    var windowEnd: Int64
    var windowStartDay: String
    var windowEndDay: String
    var pageCap: Int
    /// Appointments looked up by id instead of a crawl.
    var appointmentIds: [String]?

    init(_ r: SyncRequest) throws {
        guard r.daysBack >= 0, r.daysAhead >= 0, r.daysBack <= 3650, r.daysAhead <= 3650 else {
            throw SyncError("--days-back and --days-ahead must be between 0 and 3650")
        }
        if r.organizationId != nil, r.patientId != nil { throw SyncError("give --org or --patient, not both") }
        let now = r.now.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) } ?? ISOTime.nowMillis()
        nowMillis = now
        windowStart = now - Int64(r.daysBack) * 86_400_000
        windowEnd = now + Int64(r.daysAhead) * 86_400_000
        // IntakeQ's date filters are day-granular in an undocumented time zone: ask one day
        // wider each side and filter locally by the exact instants.
        windowStartDay = ISOTime.day(millis: windowStart - 86_400_000)
        windowEndDay = ISOTime.day(millis: windowEnd + 86_400_000)
        pageCap = r.pageCap
        appointmentIds = r.appointmentIds
        knownPractitioners = Set(r.roster.practitioners.map(\.intakeqId))
        rosterClients = Set(r.roster.allPatients.map(\.intakeqClientId))
        organizationId = r.organizationId
        patientId = r.patientId
        if let ids = r.appointmentIds {
            guard r.organizationId == nil, r.patientId == nil else {
                throw SyncError("a run by appointment ids takes no organization or patient")
            }
            guard !ids.isEmpty else { throw SyncError("a run by appointment ids needs at least one id") }
            scopeClients = rosterClients
            patientsInScope = 0
            syncType = r.syncType ?? "webhook"
        } else if let pid = r.patientId {
            guard let (p, o) = r.roster.patient(pid) else {
                throw SyncError("patient \(pid) is not in the roster; use a roster patient id (the \"id\" field)")
            }
            scopeClients = [p.intakeqClientId]
            patientEmail = p.email.flatMap { $0.isEmpty ? nil : $0 }
            patientsInScope = 1
            organizationId = o.id
            syncType = r.syncType ?? "manual_patient"
        } else if let oid = r.organizationId {
            guard let o = r.roster.organization(oid) else {
                let known = r.roster.organizations.map(\.id).joined(separator: ", ")
                throw SyncError("organization \(oid) is not in the roster (it has: \(known))")
            }
            scopeClients = Set(o.patients.map(\.intakeqClientId))
            patientsInScope = o.patients.count
            syncType = r.syncType ?? "manual_org_bulk"
        } else {
            scopeClients = Set(r.roster.allPatients.map(\.intakeqClientId))
            patientsInScope = Set(r.roster.allPatients.map(\.id)).count
            syncType = r.syncType ?? "automated_daily"
        }
        if r.roster.allPatients.isEmpty { throw SyncError("the roster has no patients: nothing to sync") }
    }

    func inScope(_ f: AppointmentFacts) -> Bool { RosterMembership.involves(f, anyOf: scopeClients) }

    func inScope(_ k: KnownAppointment) -> Bool { k.clientIds.contains { scopeClients.contains($0) } }

    func inRoster(_ f: AppointmentFacts) -> Bool { RosterMembership.involves(f, anyOf: rosterClients) }

    func inWindow(_ f: AppointmentFacts) -> Bool { inWindow(startMillis: f.startMillis) }

    func inWindow(_ k: KnownAppointment) -> Bool { inWindow(startMillis: k.startMillis) }

    func inWindow(startMillis: Int64?) -> Bool {
        guard let s = startMillis else { return true }
        return s >= windowStart && s <= windowEnd
    }

    func started(runId: String, request: SyncRequest) -> SyncStarted {
        SyncStarted(
            syncType: syncType, organizationId: organizationId, patientId: patientId,
            window: DateWindow(start: ISOTime.format(millis: windowStart), end: ISOTime.format(millis: windowEnd)),
            triggeredBy: request.triggeredBy, toolVersion: toolVersion, now: ISOTime.format(millis: nowMillis),
            appointmentIds: appointmentIds)
    }
}
