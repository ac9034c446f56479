import Domain
import Foundation
import JSONCore
import Ledger
import Projections
import Service

/// What `status` adds for cron users: the built-in alerts' conditions (a failed last run of any
/// type, partial_success twice in a row, a high error share, the webhook inbox's age; the daily
/// run and verify are the classic checks), the incidents a server announced, and its alert log.
struct StatusHealth {
    var conditions: [AlertCondition]
    var inboxDepth: Int
    var inboxOldestAgeSeconds: Double?
    var firing: [AlertIncident]
    var recent: [AlertLogEntry]

    static func read(store: Store, views: ProjectionStore, writerLive: Bool, now: Int64) throws -> StatusHealth {
        var s = try views.readSync { try HealthSnapshot.read($0, now: now, treatInProgressAsFailed: !writerLive) }
        s.verify = Scrub.last(store)
        s.viewsDamage = ViewsDamageRecord.last(store)
        let inbox = WebhookInbox.peek(path: store.statePath + "/webhook-inbox.log")
        s.inboxDepth = inbox.depth
        s.inboxOldestAt = inbox.oldestReceivedAt
        return StatusHealth(
            conditions: AlertRules().evaluate(s), inboxDepth: inbox.depth,
            inboxOldestAgeSeconds: inbox.oldestReceivedAt.map { _ in s.inboxOldestAgeSeconds },
            firing: AlertLog.open(storePath: store.path), recent: AlertLog.recent(storePath: store.path, limit: 10))
    }

    /// The problems `status` did not already report (the daily run's failure or age, verify,
    /// damaged views).
    var newProblems: [String] {
        conditions.filter { c in
            c.key != "run_failed:automated_daily" && !["daily_sync_stale", "verify_failed", "views_damaged"].contains(c.alert)
        }.map(\.summary)
    }

    var json: [String: JSONValue] {
        [
            "checks": .array(conditions.map { c in
                .object(["alert": .string(c.alert), "key": .string(c.key), "severity": .string(c.severity),
                         "summary": .string(c.summary), "run_id": c.runId.map(JSONValue.string) ?? .null])
            }),
            "inbox": .object(["depth": .number(Double(inboxDepth)),
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

    var lines: [String] {
        var out: [String] = []
        if inboxDepth > 0 {
            out.append(String(format: "webhook inbox: %d waiting, the oldest for %.0f s", inboxDepth, inboxOldestAgeSeconds ?? 0))
        }
        for i in firing { out.append("alert firing (since \(ISOTime.format(millis: i.since))): \(i.alert): \(i.summary)") }
        if !recent.isEmpty {
            out.append("alerts sent (newest first):")
            for e in recent.prefix(10) {
                let delivered = e.deliveries.isEmpty ? "no target"
                    : e.deliveries.map { "\($0.target) \($0.ok ? "ok" : "FAILED")" }.joined(separator: ", ")
                out.append("  \(ISOTime.format(millis: e.message.at)) \(e.message.status) \(e.message.alert): \(e.message.summary) [\(delivered)]")
            }
        }
        return out
    }
}
