import Domain
import EventLog
import Foundation
import GRDB
import JSONCore
import Ledger
import Projections

/// What `syncledger status` and `GET /api/v1/status` both say about a store: the head, the
/// projection lag, the last run of each sync type (with its last success and failure), the last
/// verify, damaged views, the built-in alerts' conditions and the alert log, and the problems
/// that make `status` exit 1. One reading for both, so the terminal and the web app never
/// disagree (SERVICE.md: the route answers "as `status --json`"). No personal data: run ids,
/// sync types, counts, times and IntakeQ's or SQLite's error messages only.
public struct StatusReport: Sendable {
    public var now: Int64
    public var head: LogHead
    /// The views are applied through this seq.
    public var applied: UInt64
    /// A process holds the store's writer lock (a sync or a server).
    public var writerRunning: Bool
    public var lastVerify: VerifyRecord?
    public var viewsDamage: ViewsDamageRecord?
    /// The last `ledger.loss_recorded` (a `repair`), or nil when none was recorded.
    public var recordedLoss: RecordedLoss?
    /// By sync type: the latest run, the latest successful one, the latest failed one. A run still
    /// in progress while no process holds the lock died: it is shown as failed.
    public var latest: [String: ViewRow] = [:]
    public var lastSuccess: [String: ViewRow] = [:]
    public var lastFailure: [String: ViewRow] = [:]
    /// Why the store needs a person; empty means ok.
    public var problems: [String] = []
    public var health: StatusHealth

    public var ok: Bool { problems.isEmpty }
    public var lag: UInt64 { head.seq - min(head.seq, applied) }

    /// `maxAgeHours`: after how long the last automated_daily run counts as stale. A server passes
    /// its alerts' `rules`, `watchingSince` and clock, so its checks are its alerts', and its own
    /// `inbox` (the inbox file is read otherwise).
    public static func read(store: Store, reader: LedgerReader, views: ProjectionStore, maxAgeHours: Double,
                            rules: AlertRules = AlertRules(), watchingSince: Int64? = nil,
                            inbox: (depth: Int, oldestReceivedAt: Int64?)? = nil, runningHere: Bool = false,
                            catchingUp: Bool = false,
                            now: Int64 = ISOTime.nowMillis(), time: (String) -> String = { $0 }) throws -> StatusReport {
        // A run in progress with no live writer died: it is a failure, whatever the view says.
        // The lock is looked at before and after the reads, so that a run starting or ending
        // meanwhile is not taken for a dead one. `runningHere`: the caller runs one itself.
        let lockedBefore = runningHere || EventLogWriter.isLocked(directory: store.logPath)
        let head = try reader.head()
        var applied = try views.appliedSeq()
        // Three rows per sync type, not the whole table (a busy server records a webhook run
        // every few seconds, and monitors poll this).
        let picked = try views.readSync { db -> [(String, ViewRow?, ViewRow?, ViewRow?, ViewRow?)] in
            guard try db.tableExists("sync_logs") else { return [] }
            let types = Set(HealthSnapshot.syncTypes).union(try Views.syncTypes(db))
            func newest(_ t: String, _ statuses: [String]?) throws -> ViewRow? {
                try Views.syncLogs(db, limit: 1, type: t, statuses: statuses).first
            }
            return try types.sorted().map { t in
                (t, try newest(t, nil), try newest(t, ["completed", "partial_success"]),
                 try newest(t, ["failed", "in_progress"]), try newest(t, ["failed"]))
            }
        }
        let writerRunning = lockedBefore || EventLogWriter.isLocked(directory: store.logPath)
        // A writer that ended between the reads above and the last look at the lock caught the
        // views up before it let go: read how far they are applied again (a lag seen then, with no
        // writer, is a real one).
        if !writerRunning && applied < head.seq { applied = try views.appliedSeq() }
        // The last recorded loss, once read (below): a run begun before it whose end is not in
        // the log lost its end with the events the loss gave up; it did not die (hostile test).
        var lossBehindRuns: RecordedLoss?
        func settled(_ row: ViewRow?) -> ViewRow? {
            guard var row, row["status"]?.stringValue == "in_progress" else { return row }
            guard !writerRunning else { return row }
            row["status"] = .string("failed")
            if let loss = lossBehindRuns, let started = row["started_at"]?.stringValue, started < loss.at {
                row["error_message"] = .string("no end recorded: the run began before seq \(loss.seq) recorded a loss of acknowledged "
                                               + "events, so how it ended may have been among the events lost (or it died)")
            } else {
                row["error_message"] = .string(HealthSnapshot.died)
            }
            return row
        }
        var r = StatusReport(
            now: now, head: head, applied: applied, writerRunning: writerRunning, lastVerify: Scrub.last(store),
            viewsDamage: ViewsDamageRecord.last(store),
            health: try StatusHealth.read(store: store, views: views, writerLive: writerRunning, rules: rules,
                                          watchingSince: watchingSince, inbox: inbox, now: now))
        // A record that cannot be read (a damaged batch, a newer format) is a problem to show,
        // not a reason for `status` to fail: it is when the log is damaged that status is read.
        // (Only the log's read: an error of the views' query is the views', as for any read.)
        if let seq = try RecordedLoss.lastSeq(views: views) {
            do {
                r.recordedLoss = try RecordedLoss.read(seq: seq, reader: reader)
                lossBehindRuns = r.recordedLoss
            } catch {
                r.problems.append("a recorded loss of acknowledged events cannot be read (\(Trust.printable("\(error)"))); run `syncledger verify`")
            }
        }
        for (t, latest, success, failedOrRunning, failed) in picked {
            guard let latest = settled(latest) else { continue }
            r.latest[t] = latest
            r.lastSuccess[t] = success
            // The newest failed run, or the newest one in progress when it died.
            if let f = settled(failedOrRunning), f["status"]?.stringValue == "failed" {
                r.lastFailure[t] = f
            } else {
                r.lastFailure[t] = failed
            }
        }
        if let daily = r.latest["automated_daily"] {
            let started = ISOTime.parse(daily["started_at"]?.stringValue ?? "") ?? 0
            let ageH = Double(now - started) / 3_600_000
            if daily["status"]?.stringValue == "failed" {
                r.problems.append("the last automated_daily run failed: \(daily["error_message"]?.stringValue ?? "")")
            }
            if ageH > maxAgeHours { r.problems.append(String(format: "the last automated_daily run is %.1f hours old (more than %.0f)", ageH, maxAgeHours)) }
        } else {
            r.problems.append("no automated_daily run has been recorded")
        }
        // Each failure that stands, the record's own and those beside it (`VerifyRecord.standing`).
        for f in r.lastVerify?.failures ?? [] {
            r.problems.append(f.summary(time: time))
        }
        if let d = r.viewsDamage { r.problems.append(d.problem(time: time)) }
        // A cut no recorded loss names yet (a repair stopped between its cut and its record).
        let cuts = CutPending.read(store)
        if !cuts.isEmpty {
            r.problems.append("`repair --cut-damaged` cut the log and no loss records it yet (\(Trust.printable(cuts.joined(separator: "; ")))); "
                + "run `syncledger repair --accept-loss REASON`")
        }
        // The log holds events the views do not show and no run is writing: the last update of
        // the views failed (a full disk, under `serve`: the server answered "ok" from views that
        // no longer moved, hostile test). A writer catches them up as it runs, so only a lag
        // with no writer is a problem.
        // Not for views read into memory (a snapshot: a run that ended since is not in it) nor
        // while a server catches its views up as it starts (`catchingUp`).
        if !writerRunning && r.lag > 0 && !views.inMemory && !catchingUp {
            r.problems.append("the views are \(r.lag) event\(r.lag == 1 ? "" : "s") behind the log and no run is writing: their last update "
                + "failed (a full disk, or see the last run's output or the server's log); the next run catches them up, "
                + "or run `syncledger rebuild`")
        }
        // A run whose end may have gone with a recorded loss is said so in the alerts' words too:
        // they said "died" beside the run's own line (hostile test of `repair --cut-damaged`).
        for (t, row) in r.lastFailure {
            guard let reason = row["error_message"]?.stringValue, reason.hasPrefix("no end recorded") else { continue }
            for i in r.health.conditions.indices where r.health.conditions[i].key == "run_failed:\(t)" {
                r.health.conditions[i].summary = r.health.conditions[i].summary.replacingOccurrences(of: HealthSnapshot.died, with: reason)
            }
        }
        // The built-in alerts' other conditions (SERVICE.md), for cron users too.
        r.problems += r.health.newProblems
        return r
    }

    /// Hours since a run started, to two decimals.
    public func ageHours(_ run: ViewRow) -> Double {
        let started = ISOTime.parse(run["started_at"]?.stringValue ?? "") ?? now
        return Double(now - started) / 3_600_000
    }

    /// `status --json`, and the body of `GET /api/v1/status` before the server adds its own parts.
    public var json: [String: JSONValue] {
        let runs: [JSONValue] = latest.keys.sorted().map { t in
            let r = latest[t]!
            return .object([
                "sync_type": .string(t), "id": r["id"] ?? .null, "status": r["status"] ?? .null,
                "started_at": r["started_at"] ?? .null, "completed_at": r["completed_at"] ?? .null,
                "age_hours": .number((ageHours(r) * 100).rounded() / 100),
                "error_message": r["error_message"] ?? .null,
                "last_success": lastSuccess[t].map { s in
                    .object(["id": s["id"] ?? .null, "status": s["status"] ?? .null, "started_at": s["started_at"] ?? .null,
                             "completed_at": s["completed_at"] ?? .null])
                } ?? .null,
                "last_failure": lastFailure[t].map { f in
                    .object(["id": f["id"] ?? .null, "started_at": f["started_at"] ?? .null,
                             "reason": f["error_message"] ?? .null])
                } ?? .null,
            ])
        }
        return health.json.merging([
            "ok": .bool(ok), "head": .string(head.description),
            "projection_lag": .number(Double(lag)),
            "runs": .array(runs), "problems": .array(problems.map(JSONValue.string)),
            "writer_running": .bool(writerRunning),
            "views_damaged": viewsDamage.map { d in
                JSONValue.object(["at": .string(d.at), "command": .string(d.command), "error": .string(d.error)])
            } ?? .null,
            "recorded_loss": recordedLoss.map { l in
                JSONValue.object(["seq": .number(Double(l.seq)), "at": .string(l.at), "last_known_head": .string(l.record.lastKnownHead),
                                  "log_ended_at": .string(l.record.logEndedAt), "evidence": .string(l.record.evidence),
                                  "reason": .string(l.record.reason), "cut": l.record.cut.map(JSONValue.string) ?? .null,
                                  "cut_held": l.record.cutHeld.map { .array($0.map(JSONValue.string)) } ?? .null])
            } ?? .null,
            "last_verify": lastVerify.map { v in
                JSONValue.object(["at": .string(v.at), "head": .string(v.head), "ok": .bool(v.ok),
                                  "events": .number(Double(v.events)), "error": v.error.map(JSONValue.string) ?? .null,
                                  "found_by": v.foundBy.map(JSONValue.string) ?? .null,
                                  "found_at": v.foundAt.map(JSONValue.string) ?? .null])
            } ?? .null,
        ]) { _, classic in classic }
    }
}

/// A loss of acknowledged events that `repair` recorded (`ledger.loss_recorded`): found through
/// the stream index (the `ledger` stream), so `status` reads one batch of the log, not all of it.
/// After a repair, the last verify's head may be one the log no longer holds: `status` says the
/// verify came before the loss (it showed "ok through head 211" of a log that ends at 195).
public struct RecordedLoss: Sendable {
    public var seq: UInt64
    public var at: String
    public var record: LossRecorded

    /// The seq of the last `ledger.loss_recorded` the views' stream index holds.
    public static func lastSeq(views: ProjectionStore) throws -> UInt64? {
        let seq = try views.readSync { db -> Int64? in
            guard try db.tableExists("event_streams") else { return nil }
            return try Int64.fetchOne(db, sql: "SELECT max(seq) FROM event_streams WHERE stream = ? AND type = ?",
                                      arguments: [Streams.ledger, EventType.lossRecorded.rawValue])
        }
        return seq.flatMap { $0 > 0 ? UInt64($0) : nil }
    }

    /// The record at `seq` from the log (nil when the event there is not one).
    public static func read(seq: UInt64, reader: LedgerReader) throws -> RecordedLoss? {
        guard let e = try reader.events(at: [seq]).first, e.type == EventType.lossRecorded.rawValue else { return nil }
        return RecordedLoss(seq: e.seq, at: e.at, record: try e.decodeData(LossRecorded.self))
    }

    /// True when the verify `v` ran before this loss was recorded.
    public func postdates(_ v: VerifyRecord) -> Bool {
        guard let verified = ISOTime.parse(v.at), let recorded = ISOTime.parse(at) else { return true }
        return verified < recorded
    }

    /// One line for a terminal (the reason is shown as `Trust.printable` shows it; the time as
    /// `time` shows it, as recorded by default).
    public func line(time: (String) -> String = { $0 }) -> String {
        "recorded loss at seq \(seq) (\(time(at))): \(record.lastKnownHead) had been acknowledged (\(Trust.printable(record.evidence))) "
            + "but the log ended at \(record.logEndedAt)" + (record.cut.map { " (\(Trust.printable($0)))" } ?? "")
            + "; reason: \(Trust.printable(record.reason))" + (record.heldSummary.map { "; " + Trust.printable($0) } ?? "")
    }
}

/// What `status` adds for cron users: the built-in alerts' conditions (a failed last run of any
/// type, partial_success twice in a row, a high error share, the webhook inbox's age; the daily
/// run and verify are the classic checks), the incidents a server announced, and its alert log.
public struct StatusHealth: Sendable {
    public var conditions: [AlertCondition]
    public var inboxDepth: Int
    public var inboxOldestAt: Int64?
    public var inboxOldestAgeSeconds: Double?
    public var firing: [AlertIncident]
    public var recent: [AlertLogEntry]
    /// The inbox file cannot be read as one (read outside a server only): its depth is unknown.
    public var inboxProblem: String? = nil

    public static func read(store: Store, views: ProjectionStore, writerLive: Bool, rules: AlertRules = AlertRules(),
                            watchingSince: Int64? = nil, inbox given: (depth: Int, oldestReceivedAt: Int64?)? = nil,
                            now: Int64) throws -> StatusHealth {
        var s = try views.readSync { try HealthSnapshot.read($0, now: now, treatInProgressAsFailed: !writerLive) }
        s.verify = Scrub.last(store)
        s.viewsDamage = ViewsDamageRecord.last(store)
        let inboxPath = store.statePath + "/webhook-inbox.log"
        // What a server starting now would refuse (`WebhookInbox.load`) is a problem: it read
        // as an empty inbox, and status said "ok" (a FIFO, or a file that cannot be read).
        let inboxProblem = given == nil ? InboxState.unreadable(path: inboxPath) : nil
        let inbox = given ?? (inboxProblem == nil ? WebhookInbox.peek(path: inboxPath) : (0, nil))
        s.inboxDepth = inbox.depth
        s.inboxOldestAt = inbox.oldestReceivedAt
        return StatusHealth(
            conditions: rules.evaluate(s, watchingSince: watchingSince), inboxDepth: inbox.depth, inboxOldestAt: inbox.oldestReceivedAt,
            inboxOldestAgeSeconds: inbox.oldestReceivedAt.map { _ in s.inboxOldestAgeSeconds },
            firing: AlertLog.open(storePath: store.path), recent: AlertLog.recent(storePath: store.path, limit: 10),
            inboxProblem: inboxProblem)
    }

    /// The problems `status` did not already report (the daily run's failure or age, verify,
    /// damaged views).
    public var newProblems: [String] {
        conditions.filter { c in
            c.key != "run_failed:automated_daily" && !["daily_sync_stale", "verify_failed", "views_damaged"].contains(c.alert)
        }.map(\.summary) + (inboxProblem.map { [$0] } ?? [])
    }

    public var json: [String: JSONValue] {
        [
            "checks": .array(conditions.map { c in
                .object(["alert": .string(c.alert), "key": .string(c.key), "severity": .string(c.severity),
                         "summary": .string(c.summary), "run_id": c.runId.map(JSONValue.string) ?? .null])
            }),
            "inbox": .object(["depth": .number(Double(inboxDepth)),
                              "oldest_received_at": inboxOldestAt.map { .string(ISOTime.format(millis: $0)) } ?? .null,
                              "oldest_age_seconds": inboxOldestAgeSeconds.map { .number(($0 * 10).rounded() / 10) } ?? .null]),
            "alerts": .object([
                "firing": .array(firing.map { i in
                    .object(["alert": .string(i.alert), "key": .string(i.key), "severity": .string(i.severity),
                             "summary": .string(i.summary), "since": .string(ISOTime.format(millis: i.since)),
                             "last_sent_at": .string(ISOTime.format(millis: i.lastSentAt))])
                }),
                "recent": .array(recent.map(\.json)),
            ]),
        ]
    }

    /// For a terminal; the times as `time` shows them (ISO UTC by default). The alerts' summaries
    /// are quoted as they were sent.
    public func lines(time: (Int64) -> String = { ISOTime.format(millis: $0) }) -> [String] {
        var out: [String] = []
        if inboxDepth > 0 {
            out.append(String(format: "webhook inbox: %d waiting, the oldest for %.0f s", inboxDepth, inboxOldestAgeSeconds ?? 0))
        }
        for i in firing { out.append("alert firing (since \(time(i.since))): \(i.alert): \(i.summary)") }
        if !recent.isEmpty {
            out.append("alerts sent (newest first):")
            for e in recent.prefix(10) {
                out.append("  \(time(e.message.at)) \(e.message.status) \(e.message.alert): \(e.message.summary) [\(e.outcome)]")
            }
        }
        return out
    }
}
