import Domain
import Foundation
import GRDB
import JSONCore
import Ledger
import Projections

/// The latest finished runs of one sync type, as `sync_logs` records them.
public struct RunTypeHealth: Sendable, Equatable {
    public var syncType: String
    /// The latest finished (not in_progress) run.
    public var lastRunId: String?
    public var lastStatus: String?
    public var lastStartedAt: Int64?
    public var lastErrorMessage: String?
    /// Errors / (new + updated + unchanged + removed + errors) of the latest finished run; nil
    /// when it looked at no appointment.
    public var lastErrorRatio: Double?
    /// How many of the latest finished runs in a row ended partial_success.
    public var partialStreak = 0
    /// When the latest completed or partial_success run finished (epoch millis).
    public var lastSuccessAt: Int64?
    /// The run ids of the partial_success streak, newest first.
    public var streakRunIds: [String] = []
}

/// What the store says about its own health: `sync_logs`, the last verify, the webhook inbox.
/// One reading serves `/metrics`, the built-in alerts and `syncledger status`, so the three
/// never disagree. It holds no personal data (no patient, client or name; only run ids,
/// sync types, counts and IntakeQ's error messages, which name endpoints, not people).
public struct HealthSnapshot: Sendable {
    public var now: Int64
    public var types: [String: RunTypeHealth] = [:]
    /// Finished runs by sync type and status.
    public var runCounts: [String: [String: Int]] = [:]
    public var appointmentsNew = 0
    public var appointmentsUpdated = 0
    public var appointmentsRemoved = 0
    /// Events appended by runs (from each run's start_seq through end_seq), by sync type.
    public var eventsAppended: [String: Int] = [:]
    public var intakeqCalls = 0
    public var intakeqRetries = 0
    public var rateLimitWaits = 0
    /// The first run the store recorded (epoch millis).
    public var firstRunAt: Int64?
    public var verify: VerifyRecord?
    /// A damaged page of the views that a command or request met (`state/views-damaged.json`).
    public var viewsDamage: ViewsDamageRecord?
    public var inboxDepth = 0
    public var inboxOldestAt: Int64?

    public init(now: Int64) { self.now = now }

    /// The reason of a run still in progress with no live writer (`read`'s `treatInProgressAsFailed`).
    public static let died = "died: the run was still in progress but no process holds the store's lock (killed, or the machine stopped)"

    public static let syncTypes = ["automated_daily", "manual_org_bulk", "manual_patient", "webhook"]
    public static let finishedStatuses = ["completed", "partial_success", "failed"]

    /// Reads the `sync_logs` part: the sums from `sync_log_totals` and a few rows per sync type
    /// (through the view's indexes), so the cost does not grow with the runs recorded.
    /// `treatInProgressAsFailed`: a run still in progress with no live writer died (`status`
    /// counts it as failed); the server leaves in_progress runs alone.
    public static func read(_ db: Database, now: Int64, treatInProgressAsFailed: Bool = false) throws -> HealthSnapshot {
        var s = HealthSnapshot(now: now)
        guard try db.tableExists("sync_logs") else { return s }
        // Views of schema version 1 (a server answers while its first catch-up rebuilds them)
        // have no totals yet: the same sums are taken from every run.
        let totals = try db.tableExists("sync_log_totals") ? "sync_log_totals" : "(\(SyncLogsProjection.totalsQuery))"
        for row in try Row.fetchAll(db, sql: "SELECT * FROM \(totals)") {
            let type: String = row["sync_type"]
            var status: String = row["status"]
            if status == "in_progress" {
                guard treatInProgressAsFailed else { continue }
                status = "failed"
            }
            s.runCounts[type, default: [:]][status, default: 0] += (row["runs"] as Int? ?? 0)
            s.appointmentsNew += (row["appointments_new"] as Int? ?? 0)
            s.appointmentsUpdated += (row["appointments_updated"] as Int? ?? 0)
            s.appointmentsRemoved += (row["appointments_removed"] as Int? ?? 0)
            s.eventsAppended[type, default: 0] += (row["events"] as Int? ?? 0)
            s.intakeqCalls += (row["intakeq_api_calls"] as Int? ?? 0)
            s.intakeqRetries += (row["retries"] as Int? ?? 0)
            s.rateLimitWaits += (row["rate_limit_waits"] as Int? ?? 0)
        }
        let finished = treatInProgressAsFailed ? "1" : "status != 'in_progress'"
        // The first finished run, else the first run in progress.
        s.firstRunAt = try (String.fetchOne(db, sql: "SELECT started_at FROM sync_logs WHERE \(finished) ORDER BY started_at LIMIT 1")
            ?? String.fetchOne(db, sql: "SELECT min(started_at) FROM sync_logs")).flatMap(ISOTime.parse)
        let statusExpr = treatInProgressAsFailed ? "CASE status WHEN 'in_progress' THEN 'failed' ELSE status END" : "status"
        // Such a run's reason is that it died (the view has none for it).
        let errorExpr = treatInProgressAsFailed ? "CASE status WHEN 'in_progress' THEN ? ELSE error_message END" : "error_message"
        let types = Set(syncTypes).union(try Views.syncTypes(db))
        for type in types.sorted() {
            var h = RunTypeHealth(syncType: type)
            // The latest finished runs, newest first: enough for the partial_success streak.
            let recent = try Row.fetchAll(db, sql: """
                SELECT id, \(statusExpr) AS st, started_at, \(errorExpr) AS error_message, appointments_new + appointments_updated
                  + appointments_unchanged + appointments_removed + appointments_errors AS looked, appointments_errors AS errs
                FROM sync_logs WHERE sync_type = ? AND \(finished) ORDER BY started_at DESC, start_seq DESC LIMIT 50
                """, arguments: StatementArguments(treatInProgressAsFailed ? [died, type] : [type]))
            if let last = recent.first {
                h.lastRunId = last["id"]
                h.lastStatus = last["st"]
                h.lastStartedAt = (last["started_at"] as String?).flatMap(ISOTime.parse)
                h.lastErrorMessage = last["error_message"]
                let looked: Int = last["looked"] ?? 0
                let errs: Int = last["errs"] ?? 0
                h.lastErrorRatio = looked > 0 ? Double(errs) / Double(looked) : nil
            }
            for r in recent {
                guard (r["st"] as String?) == "partial_success" else { break }
                h.partialStreak += 1
                h.streakRunIds.append(r["id"] as String? ?? "")
            }
            h.lastSuccessAt = try Views.syncLogs(db, limit: 1, type: type, statuses: ["completed", "partial_success"]).first.flatMap { r in
                (r["completed_at"]?.stringValue ?? r["started_at"]?.stringValue).flatMap(ISOTime.parse)
            }
            if h.lastRunId != nil || h.lastSuccessAt != nil || syncTypes.contains(type) { s.types[type] = h }
        }
        return s
    }

    /// The oldest waiting id's age in seconds (0 when the inbox is empty).
    public var inboxOldestAgeSeconds: Double { inboxOldestAt.map { max(0, Double(now - $0) / 1000) } ?? 0 }
}

/// One condition of SERVICE.md's "Metrics and alerts" that holds now.
public struct AlertCondition: Sendable, Hashable, Codable {
    /// The incident's identity: the alert name, and the sync type for per-type alerts
    /// (`run_failed:webhook`). The same key while the condition lasts is one incident.
    public var key: String
    /// `run_failed`, `partial_success_repeated`, `error_share_high`, `daily_sync_stale`,
    /// `verify_failed`, `views_damaged`, `webhook_inbox_stale`.
    public var alert: String
    /// `critical` or `warning`.
    public var severity: String
    /// One line for a person: what holds, never personal data nor a secret.
    public var summary: String
    public var runId: String?
}

/// SERVICE.md's six alert conditions, and damaged views, over a `HealthSnapshot`.
public struct AlertRules: Sendable {
    public var dailyStaleHours = 26.0
    public var inboxMaxAgeSeconds = 3600.0
    public var maxErrorShare = 0.10
    public var partialStreak = 2

    public init() {}

    public static let alertNames = [
        "run_failed", "partial_success_repeated", "error_share_high", "daily_sync_stale", "verify_failed",
        "views_damaged", "webhook_inbox_stale",
    ]

    /// The conditions that hold. `watchingSince`: when whoever evaluates began watching (the
    /// server's start); a store with no successful automated_daily run is stale only once
    /// `dailyStaleHours` passed since its first run, or since then.
    public func evaluate(_ s: HealthSnapshot, watchingSince: Int64? = nil) -> [AlertCondition] {
        var out: [AlertCondition] = []
        for (type, h) in s.types.sorted(by: { $0.key < $1.key }) {
            guard let status = h.lastStatus else { continue }
            if status == "failed" {
                // A failed manual run is cleared by a later successful whole-roster nightly run too.
                let clearedByDaily = type != "automated_daily" && type != "webhook"
                    && (s.types["automated_daily"]?.lastSuccessAt ?? 0) > (h.lastStartedAt ?? 0)
                if !clearedByDaily {
                    out.append(AlertCondition(
                        key: "run_failed:\(type)", alert: "run_failed", severity: "critical",
                        summary: "the last \(type) run failed: \(Self.clean(h.lastErrorMessage ?? "no reason recorded"))",
                        runId: h.lastRunId))
                }
            }
            if h.partialStreak >= partialStreak {
                out.append(AlertCondition(
                    key: "partial_success_repeated:\(type)", alert: "partial_success_repeated", severity: "warning",
                    summary: "the last \(h.partialStreak) \(type) runs ended partial_success: \(Self.clean(h.lastErrorMessage ?? "some appointments could not be read"))",
                    runId: h.lastRunId))
            }
            // A failed run is run_failed's incident, whatever its error share.
            if status != "failed", let ratio = h.lastErrorRatio, ratio > maxErrorShare {
                out.append(AlertCondition(
                    key: "error_share_high:\(type)", alert: "error_share_high", severity: "warning",
                    summary: String(format: "the last %@ run had errors on %.0f%% of the appointments it looked at (more than %.0f%%)",
                                    type, ratio * 100, maxErrorShare * 100),
                    runId: h.lastRunId))
            }
        }
        let limit = Int64(dailyStaleHours * 3_600_000)
        if let last = s.types["automated_daily"]?.lastSuccessAt {
            if s.now - last > limit {
                out.append(AlertCondition(
                    key: "daily_sync_stale", alert: "daily_sync_stale", severity: "critical",
                    summary: String(format: "no successful automated_daily run in %.1f hours (the last finished %@)",
                                    Double(s.now - last) / 3_600_000, ISOTime.format(millis: last)),
                    runId: nil))
            }
        } else if let since = [s.firstRunAt, watchingSince].compactMap({ $0 }).min(), s.now - since > limit {
            out.append(AlertCondition(
                key: "daily_sync_stale", alert: "daily_sync_stale", severity: "critical",
                summary: String(format: "no successful automated_daily run recorded in %.0f hours", Double(s.now - since) / 3_600_000),
                runId: nil))
        }
        if let v = s.verify, !v.ok {
            out.append(AlertCondition(
                key: "verify_failed", alert: "verify_failed", severity: "critical",
                summary: Self.clean(v.summary()) + Self.more(v.failures.count - 1), runId: nil))
        }
        if let d = s.viewsDamage {
            out.append(AlertCondition(
                key: "views_damaged", alert: "views_damaged", severity: "critical",
                summary: "the views database was found damaged by `\(d.command)` at \(d.at) (\(Self.clean(d.error))); "
                    + "`syncledger rebuild` recreates it from the log", runId: nil))
        }
        if s.inboxDepth > 0, s.inboxOldestAgeSeconds > inboxMaxAgeSeconds {
            out.append(AlertCondition(
                key: "webhook_inbox_stale", alert: "webhook_inbox_stale", severity: "warning",
                summary: String(format: "the webhook inbox's oldest id waits for %.0f minutes (%d waiting)",
                                s.inboxOldestAgeSeconds / 60, s.inboxDepth),
                runId: nil))
        }
        return out
    }

    /// Said after a failure's summary when others stand beside it (each summary alone may
    /// reach `clean`'s length: the alert named the first only).
    static func more(_ n: Int) -> String {
        n > 0 ? " (and \(n) more standing failure\(n == 1 ? "" : "s"): see `syncledger status`)" : ""
    }

    /// One line of at most 300 characters with anything shaped like an e-mail address removed
    /// (IntakeQ's error messages name endpoints, never people; this is the second fence).
    static func clean(_ text: String) -> String {
        let one = text.split(whereSeparator: \.isNewline).joined(separator: " ")
        let words = one.split(separator: " ", omittingEmptySubsequences: false).map { w -> String in
            w.contains("@") && w.contains(".") ? "[redacted]" : String(w)
        }
        let joined = words.joined(separator: " ")
        return joined.count > 300 ? String(joined.prefix(299)) + "…" : joined
    }
}
