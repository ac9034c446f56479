import CoreMetrics
import Domain
import Foundation
import Ledger
import NIOConcurrencyHelpers
import Prometheus

/// `GET /metrics`: swift-metrics handles on a swift-prometheus registry that belongs to this
/// server (never `MetricsSystem.bootstrap`, which is process-global and may run once: tests start
/// several servers in one process, and each must expose only its own numbers).
///
/// Two kinds of numbers:
/// - counted as they happen in this process (webhook requests by outcome, IntakeQ's 429 answers
///   to this server's runs): they start at 0 with the process, as Prometheus expects;
/// - read from the store at each scrape (`HealthSnapshot`: runs, appointments, events, IntakeQ
///   calls and retries from `sync_logs`; head, lag, inbox, budget, verify): they include what a
///   cron `syncledger sync` did, and survive a restart. The store's totals only grow, so they are
///   exposed as counters (raised by the difference since the last scrape).
///
/// No label holds personal data: labels are sync types, statuses, outcomes, change kinds and
/// alert names, nothing else (no patient, client, organisation or appointment).
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    private let counters = NIOLockedValueBox([String: (CoreMetrics.Counter, Int64)]())
    private let gauges = NIOLockedValueBox([String: CoreMetrics.Gauge]())

    public static let webhookOutcomes = ["accepted", "duplicate", "not_in_roster", "bad_secret", "malformed", "too_large"]

    /// Every metric family with its help text (the exposition's `# HELP` lines).
    public static let help: [String: String] = [
        "syncledger_runs_total": "Finished sync runs recorded in the store, by sync_type and status.",
        "syncledger_last_success_timestamp_seconds": "When the last completed or partial_success run of each sync_type finished (Unix seconds; 0: never).",
        "syncledger_last_run_failed": "1 when the latest finished run of the sync_type failed, else 0.",
        "syncledger_last_run_error_ratio": "Errors over appointments looked at, in the latest finished run of the sync_type.",
        "syncledger_partial_success_streak": "How many of the latest runs of the sync_type in a row ended partial_success.",
        "syncledger_appointment_changes_total": "Appointments recorded new, updated or removed by runs (change label).",
        "syncledger_events_appended_total": "Events appended to the log by sync runs, by sync_type.",
        "syncledger_log_head_seq": "The sequence number of the log's last event.",
        "syncledger_projection_lag_events": "Events in the log the server's views have not applied yet.",
        "syncledger_webhook_requests_total": "Webhook requests to this server by outcome (accepted, duplicate, not_in_roster, bad_secret, malformed, too_large).",
        "syncledger_webhook_inbox_depth": "Appointment ids waiting in the webhook inbox.",
        "syncledger_webhook_inbox_oldest_age_seconds": "Age of the oldest id waiting in the webhook inbox (0 when empty).",
        "syncledger_intakeq_calls_total": "IntakeQ API calls made by sync runs (retries included), from sync_logs.",
        "syncledger_intakeq_retries_total": "IntakeQ requests repeated after 429 or 5xx, from sync_logs.",
        "syncledger_intakeq_rate_limit_waits_total": "Waits for the local rate limiter or IntakeQ's 429, from sync_logs.",
        "syncledger_intakeq_responses_429_total": "429 Too Many Requests answers IntakeQ gave this server's runs since it started.",
        "syncledger_intakeq_budget_remaining": "IntakeQ calls left in the rolling 24-hour budget (shared with cron runs).",
        "syncledger_intakeq_daily_budget": "The configured IntakeQ calls per 24 hours.",
        "syncledger_verify_failed": "1 when the last recorded verify failed, or a command met damage in the log since, else 0 (also 0 when never verified).",
        "syncledger_verify_last_timestamp_seconds": "When the last verify finished (Unix seconds; 0: never).",
        "syncledger_verify_age_seconds": "Seconds since the last verify finished (-1: never).",
        "syncledger_views_damaged": "1 while a damaged page of the views database is recorded (STORE/state/views-damaged.json), else 0.",
        "syncledger_alerts_firing": "1 while the built-in alert of that name fires (any sync_type), else 0.",
    ]

    public init() {
        factory = PrometheusMetricsFactory(registry: registry)
        // Every series exists from the start, at 0, so a dashboard and a rule see it before the first run.
        for o in Self.webhookOutcomes { total("syncledger_webhook_requests_total", ["outcome": o], 0) }
        count("syncledger_intakeq_responses_429_total", [:], by: 0)
    }

    // MARK: Counted as it happens

    /// The webhook counters the coordinator keeps (this process's), by outcome.
    public func mirrorWebhooks(_ counts: [String: Int]) {
        for (outcome, n) in counts { total("syncledger_webhook_requests_total", ["outcome": outcome], n) }
    }

    public func responses429(_ n: Int) { count("syncledger_intakeq_responses_429_total", [:], by: n) }

    // MARK: Read at each scrape

    /// Brings every store-derived metric to the snapshot's values.
    public func update(_ s: HealthSnapshot, headSeq: UInt64, appliedSeq: UInt64, budgetRemaining: Int?, dailyBudget: Int,
                       firing: Set<String>) {
        for type in HealthSnapshot.syncTypes.sorted() {
            for status in HealthSnapshot.finishedStatuses {
                total("syncledger_runs_total", ["sync_type": type, "status": status], s.runCounts[type]?[status] ?? 0)
            }
            let h = s.types[type]
            gauge("syncledger_last_success_timestamp_seconds", ["sync_type": type], Double(h?.lastSuccessAt ?? 0) / 1000)
            gauge("syncledger_last_run_failed", ["sync_type": type], h?.lastStatus == "failed" ? 1 : 0)
            gauge("syncledger_last_run_error_ratio", ["sync_type": type], h?.lastErrorRatio ?? 0)
            gauge("syncledger_partial_success_streak", ["sync_type": type], Double(h?.partialStreak ?? 0))
            total("syncledger_events_appended_total", ["sync_type": type], s.eventsAppended[type] ?? 0)
        }
        total("syncledger_appointment_changes_total", ["change": "new"], s.appointmentsNew)
        total("syncledger_appointment_changes_total", ["change": "updated"], s.appointmentsUpdated)
        total("syncledger_appointment_changes_total", ["change": "removed"], s.appointmentsRemoved)
        total("syncledger_intakeq_calls_total", [:], s.intakeqCalls)
        total("syncledger_intakeq_retries_total", [:], s.intakeqRetries)
        total("syncledger_intakeq_rate_limit_waits_total", [:], s.rateLimitWaits)
        gauge("syncledger_log_head_seq", [:], Double(headSeq))
        gauge("syncledger_projection_lag_events", [:], Double(headSeq - min(headSeq, appliedSeq)))
        gauge("syncledger_webhook_inbox_depth", [:], Double(s.inboxDepth))
        gauge("syncledger_webhook_inbox_oldest_age_seconds", [:], s.inboxOldestAgeSeconds)
        gauge("syncledger_intakeq_budget_remaining", [:], Double(budgetRemaining ?? dailyBudget))
        gauge("syncledger_intakeq_daily_budget", [:], Double(dailyBudget))
        let verifiedAt = s.verify.flatMap { ISOTime.parse($0.at) }
        gauge("syncledger_verify_failed", [:], s.verify.map { $0.ok ? 0 : 1 } ?? 0)
        gauge("syncledger_verify_last_timestamp_seconds", [:], Double(verifiedAt ?? 0) / 1000)
        gauge("syncledger_verify_age_seconds", [:], verifiedAt.map { max(0, Double(s.now - $0) / 1000) } ?? -1)
        gauge("syncledger_views_damaged", [:], s.viewsDamage == nil ? 0 : 1)
        for name in AlertRules.alertNames { gauge("syncledger_alerts_firing", ["alert": name], firing.contains(name) ? 1 : 0) }
    }

    /// The Prometheus text exposition (format 0.0.4) with a `# HELP` line before each family.
    public func exposition() -> String {
        // One block per family, in name order (the registry's order is its dictionary's), and
        // each family's series sorted, so two scrapes read alike.
        var blocks: [String: [Substring]] = [:]
        var current = ""
        for line in registry.emitToString().split(separator: "\n") {
            if line.hasPrefix("# TYPE ") { current = line.dropFirst(7).split(separator: " ").first.map(String.init) ?? "" }
            blocks[current, default: []].append(line)
        }
        var out = ""
        for name in blocks.keys.sorted() {
            let lines = blocks[name]!
            if let h = Self.help[name] { out += "# HELP \(name) \(h)\n" }
            for l in lines where l.hasPrefix("#") { out += l + "\n" }
            for l in lines.filter({ !$0.hasPrefix("#") }).sorted() { out += l + "\n" }
        }
        return out
    }

    // MARK: Handles

    private static func key(_ name: String, _ labels: [String: String]) -> String {
        name + "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}"
    }

    private func count(_ name: String, _ labels: [String: String], by n: Int) {
        let k = Self.key(name, labels)
        let c = counters.withLockedValue { c -> CoreMetrics.Counter in
            if let (h, _) = c[k] { return h }
            let h = CoreMetrics.Counter(label: name, dimensions: labels.sorted { $0.key < $1.key }, factory: factory)
            c[k] = (h, 0)
            return h
        }
        if n > 0 { c.increment(by: n) }
    }

    /// A counter that mirrors a total kept elsewhere: raised by the growth since the last call.
    private func total(_ name: String, _ labels: [String: String], _ value: Int) {
        let k = Self.key(name, labels)
        let (c, delta) = counters.withLockedValue { c -> (CoreMetrics.Counter, Int64) in
            let (h, seen) = c[k] ?? (CoreMetrics.Counter(label: name, dimensions: labels.sorted { $0.key < $1.key }, factory: factory), 0)
            let delta = max(0, Int64(value) - seen)
            c[k] = (h, seen + delta)
            return (h, delta)
        }
        if delta > 0 { c.increment(by: delta) }
    }

    private func gauge(_ name: String, _ labels: [String: String], _ value: Double) {
        let k = Self.key(name, labels)
        let g = gauges.withLockedValue { g -> CoreMetrics.Gauge in
            if let h = g[k] { return h }
            let h = CoreMetrics.Gauge(label: name, dimensions: labels.sorted { $0.key < $1.key }, factory: factory)
            g[k] = h
            return h
        }
        g.record(value)
    }
}
