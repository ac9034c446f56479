import Domain
import EventLog
import Foundation
import GRDB
import HTTPTypes
import IntakeQ
import JSONCore
import Ledger
import NIOConcurrencyHelpers
import Projections
import Sync

/// The pages themselves: each reads the views off the event loop (`server.blocking`) and fills
/// its template.
extension AdminPages {
    static let syncTypes = ["automated_daily", "manual_org_bulk", "manual_patient", "webhook"]
    static let statuses = ["in_progress", "completed", "failed", "partial_success"]
    static let csvLimit = 10_000
    static let pageLimit = 200

    // MARK: /admin

    func dashboard(_ session: AdminSession, query: [String: String]) async throws -> Page {
        let views = server.views
        let store = server.store
        let now = ISOTime.nowMillis()
        let weekEnd = ISOTime.format(millis: now + 7 * 86_400_000)
        let nowText = ISOTime.format(millis: now)
        let read = try await server.blocking { () -> (LogHead, UInt64, [String: RunRow], RunRow?, [Int], VerifyRecord?) in
            let head = try LedgerReader(store: store).head()
            let applied = try views.appliedSeq()
            let (latest, daily, counts) = try views.readSync { db -> ([String: RunRow], RunRow?, [Int]) in
                var latest: [String: RunRow] = [:]
                for t in Self.syncTypes { latest[t] = try AdminQueries.latest(db, type: t) }
                let daily = try AdminQueries.latest(db, type: "automated_daily", status: "completed")
                let counts = [
                    try AdminQueries.count(db, sql: "SELECT count(*) FROM appointments WHERE removed = 0"),
                    try Int.fetchOne(db, sql: "SELECT count(*) FROM appointments WHERE removed = 0 AND status != 'cancelled' AND start_at >= ? AND start_at <= ?",
                                     arguments: [nowText, weekEnd]) ?? 0,
                    try AdminQueries.count(db, sql: "SELECT count(*) FROM sync_logs"),
                ]
                return (latest, daily, counts)
            }
            return (head, applied, latest, daily, counts, Scrub.last(store))
        }
        let (head, applied, latest, daily, counts, verify) = read
        let c = server.coordinator
        let (remaining, _) = await c.budget()
        var problems: [String] = []
        var ctx = base("Health", session: session, back: "/admin")
        ctx["lastRuns"] = Self.syncTypes.map { t -> [String: Any] in
            var o: [String: Any] = ["type": t]
            if let r = latest[t] { o["run"] = runDict(r) }
            return o
        }
        if let last = latest["automated_daily"], last.status == "failed" {
            problems.append("The last nightly run failed: \(last.errorMessage ?? "no reason recorded").")
        }
        if let d = daily, let ms = ISOTime.parse(d.startedAt) {
            let hours = Double(now - ms) / 3_600_000
            ctx["nightly"] = "last completed \(local(d.startedAt)), \(String(format: "%.1f", hours)) hours ago"
            if hours > 26 { problems.append(String(format: "No nightly run has completed in %.0f hours (more than 26).", hours)) }
        } else {
            ctx["nightly"] = "no completed automated_daily run recorded"
            problems.append("No nightly (automated_daily) run has completed yet.")
        }
        let depth = c.inbox.depth
        if let oldest = c.inbox.oldestReceivedAt {
            let minutes = Double(now - oldest) / 60_000
            ctx["inbox"] = "\(depth) waiting; the oldest arrived \(String(format: "%.0f", minutes)) minutes ago"
            if minutes > 60 { problems.append("The webhook inbox's oldest id has waited more than an hour.") }
        } else {
            ctx["inbox"] = "empty"
        }
        let budget = server.config.policy.dailyBudget
        ctx["budget"] = remaining == Int.max ? "no limit" : "\(remaining) of \(budget) calls"
        let queue = c.state.withLockedValue { s in (s.queue.count, s.running) }
        ctx["queue"] = (queue.1.map { "running \($0)" } ?? "idle") + ", \(queue.0) queued"
        ctx["head"] = head.description
        ctx["lag"] = "\(head.seq - min(head.seq, applied)) events"
        if let v = verify, v.foundBy != nil {
            // Damage a command met, not a verify (its `at` is the last verify's, maybe none).
            ctx["verify"] = "FAILED: " + v.summary(time: { at in ISOTime.parse(at).map { LocalFormat.table($0, site.zone) } ?? at })
            problems.append("Damage was found in the log.")
        } else if let v = verify, let ms = ISOTime.parse(v.at) {
            ctx["verify"] = (v.ok ? "ok" : "FAILED: \(v.error ?? "the log is damaged")") + " at \(LocalFormat.table(ms, site.zone)) through \(v.head)"
            if !v.ok { problems.append("The last verify failed.") }
        } else {
            ctx["verify"] = "never (run syncledger verify)"
        }
        ctx["appointmentCount"] = counts[0]
        ctx["upcomingCount"] = counts[1]
        ctx["runCount"] = counts[2]
        ctx["problems"] = problems
        ctx["hasProblems"] = !problems.isEmpty
        // The built-in alerts: the incidents firing now, and the last messages sent (AlertLog).
        for i in server.alerts.firing { problems.append("Alert firing: \(i.alert): \(i.summary)") }
        ctx["problems"] = problems
        ctx["hasProblems"] = !problems.isEmpty
        let storePath = server.store.path
        let sent = try await server.blocking { AlertLog.recent(storePath: storePath, limit: 20) }
        let alerts: [[String: Any]] = sent.map { e in
            ["at": LocalFormat.table(e.message.at, site.zone), "alert": "\(e.message.alert) (\(e.message.status))",
             "summary": e.message.summary]
        }
        ctx["alerts"] = alerts
        ctx["hasAlerts"] = !alerts.isEmpty
        if let f = flash(query) { ctx["flash"] = f }
        return Page(status: 200, body: render("dashboard", ctx))
    }

    // MARK: /admin/runs

    func runFilter(_ q: [String: String], session: AdminSession) throws -> RunFilter {
        var f = RunFilter()
        let roster = server.currentRoster
        if let o = q["org"], !o.isEmpty {
            guard let org = roster.organization(o) else { throw message(400, "Bad filter", "org: '\(o)' is not an organisation of the roster.", session: session, back: "/admin/runs") }
            f.organizationId = o
            f.patientIds = org.patients.map(\.id)
        }
        if let t = q["type"], !t.isEmpty {
            guard Self.syncTypes.contains(t) else { throw message(400, "Bad filter", "type: '\(t)' is not one of \(Self.syncTypes.joined(separator: ", ")).", session: session, back: "/admin/runs") }
            f.syncType = t
        }
        if let s = q["status"], !s.isEmpty {
            guard Self.statuses.contains(s) else { throw message(400, "Bad filter", "status: '\(s)' is not one of \(Self.statuses.joined(separator: ", ")).", session: session, back: "/admin/runs") }
            f.status = s
        }
        for key in ["from", "to"] {
            guard let text = q[key], !text.isEmpty else { continue }
            guard let input = try? TimeInput.parse(text) else {
                throw message(400, "Bad filter", "\(key): '\(text)' is not a date (YYYY-MM-DD) or an ISO 8601 time.", session: session, back: "/admin/runs")
            }
            let ms = key == "from" ? input.start(in: site.zone) : input.end(in: site.zone)
            if key == "from" { f.from = ISOTime.format(millis: ms) } else { f.to = ISOTime.format(millis: ms) }
        }
        if let a = f.from, let b = f.to, a > b { throw message(400, "Bad filter", "from: it is after to.", session: session, back: "/admin/runs") }
        return f
    }

    func runs(_ session: AdminSession, query: [String: String]) async throws -> Page {
        let f = try runFilter(query, session: session)
        let views = server.views
        let now = ISOTime.nowMillis()
        let since = ISOTime.format(millis: RunChart.since(now: now, zone: site.zone))
        let (rows, total, times) = try await server.blocking { () -> ([RunRow], Int, [(String, String)]) in
            try views.readSync { db in
                let (rows, total) = try AdminQueries.runs(db, f, limit: Self.pageLimit)
                return (rows, total, try AdminQueries.runTimes(db, f, since: since))
            }
        }
        var ctx = base("Runs", session: session, back: "/admin/runs")
        ctx["organizations"] = server.config.roster.organizations.map { ["id": $0.id, "name": $0.name ?? $0.id, "selected": $0.id == f.organizationId] as [String: Any] }
        ctx["types"] = Self.syncTypes.map { ["value": $0, "selected": $0 == f.syncType] as [String: Any] }
        ctx["statuses"] = Self.statuses.map { ["value": $0, "selected": $0 == f.status] as [String: Any] }
        ctx["from"] = query["from"] ?? ""
        ctx["to"] = query["to"] ?? ""
        ctx["csvQuery"] = FormData.query(["org", "type", "status", "from", "to"].map { ($0, query[$0]) })
        ctx["rows"] = rows.map(runDict)
        ctx["shown"] = rows.count
        ctx["total"] = total
        // Runs this server queued that have not started writing yet (not in sync_logs).
        let shown = Set(rows.map { $0.id })
        let pending = server.coordinator.state.withLockedValue { s in
            s.runs.values.filter { ($0.status == "queued" || $0.status == "running") && !shown.contains($0.runId) }
        }.sorted { $0.queuedAt > $1.queuedAt }
        ctx["pending"] = pending.map { r -> [String: Any] in
            ["id": r.runId, "href": FormData.encode(r.runId), "queued": LocalFormat.table(r.queuedAt, site.zone),
             "type": r.syncType ?? Self.defaultType(r.scope),
             "scope": scopeText(r.scope), "status": r.status]
        }
        if !pending.isEmpty { ctx["reload"] = 3 }
        for (k, v) in RunChart.render(RunChart.bucket(times.map { (startedAt: $0.0, status: $0.1) }, now: now, zone: site.zone)) { ctx[k] = v }
        if let fl = flash(query) { ctx["flash"] = fl }
        return Page(status: 200, body: render("runs", ctx))
    }

    func runsCSV(_ session: AdminSession, query: [String: String]) async throws -> Page {
        let f = try runFilter(query, session: session)
        let views = server.views
        let (rows, _) = try await server.blocking { try views.readSync { try AdminQueries.runs($0, f, limit: Self.csvLimit) } }
        var out = CSV.line(["id", "sync_type", "organization_id", "patient_id", "triggered_by", "started_at", "started_local",
                            "completed_at", "duration_ms", "status", "new", "updated", "unchanged", "removed", "errors",
                            "api_calls", "error_message"])
        for r in rows {
            out += CSV.line([r.id, r.syncType, r.organizationId ?? "", r.patientId ?? "", r.triggeredBy ?? "", r.startedAt,
                             ISOTime.parse(r.startedAt).map { LocalFormat.iso($0, site.zone) } ?? "", r.completedAt ?? "",
                             r.durationMs.map(String.init) ?? "", r.status, "\(r.new)", "\(r.updated)", "\(r.unchanged)",
                             "\(r.removed)", "\(r.errors)", r.apiCalls.map(String.init) ?? "", r.errorMessage ?? ""])
        }
        return Page(status: 200, body: out, contentType: "text/csv; charset=utf-8",
                    headers: [(.contentDisposition, "attachment; filename=\"syncledger-runs.csv\"")])
    }

    /// The sync type a run of this scope records when none is asked for (as `SyncRequest` does).
    static func defaultType(_ scope: RunScope) -> String {
        switch scope {
        case .all: return "automated_daily"
        case .org: return "manual_org_bulk"
        case .patient: return "manual_patient"
        }
    }

    func runDict(_ r: RunRow) -> [String: Any] {
        ["id": r.id, "href": FormData.encode(r.id), "started": local(r.startedAt), "type": r.syncType, "scope": runScope(r),
         "status": r.status, "new": r.new, "updated": r.updated, "unchanged": r.unchanged, "removed": r.removed,
         "errors": r.errors, "duration": r.durationMs.map { String(format: "%.1f s", Double($0) / 1000) } ?? "",
         "apiCalls": r.apiCalls.map(String.init) ?? "", "by": r.triggeredBy ?? ""]
    }

    func runScope(_ r: RunRow) -> String {
        let roster = server.currentRoster
        if let p = r.patientId { return "patient " + (roster.patient(p)?.0.name ?? p) }
        if let o = r.organizationId { return "organisation " + (roster.organization(o)?.name ?? o) }
        return r.syncType == "webhook" ? "webhook ids" : "all"
    }

    // MARK: /admin/runs/{id}

    func run(_ session: AdminSession, id: String, query: [String: String]) async throws -> Page {
        let views = server.views
        let store = server.store
        let found = try await server.blocking { () -> (RunRow, [RunChange], [String: ViewRow])? in
            guard let row = try views.readSync({ try AdminQueries.run($0, id: id) }) else { return nil }
            guard let start = row.startSeq else { return (row, [], [:]) }
            let end = try row.endSeq ?? Int64(LedgerReader(store: store).head().seq)
            return try views.readSync { db in
                let changes = try AdminQueries.changes(db, from: start, through: end)
                return (row, changes, try AdminQueries.appointments(db, ids: changes.map(\.appointmentId)))
            }
        }
        guard let (row, changes, appts) = found else {
            if let r = server.coordinator.run(id) {
                var ctx = base("Run", session: session)
                ctx["heading"] = "Run \(r.runId)"
                ctx["text"] = "\(scopeText(r.scope)): \(r.status)" + (r.error.map { " — \($0)" } ?? "") + ". This page reloads until it starts."
                ctx["back"] = "/admin/runs"
                ctx["reload"] = 2
                return Page(status: 200, body: render("message", ctx))
            }
            throw message(404, "Not found", "No run \(id) is recorded.", session: session, back: "/admin/runs")
        }
        var ctx = base("Run", session: session)
        for (k, v) in runDict(row) { ctx[k] = v }
        ctx["completed"] = local(row.completedAt)
        if row.status == "in_progress" { ctx["reload"] = 3 }
        let m = row.metadata
        ctx["retries"] = Int(m["retries"]?.doubleValue ?? 0)
        ctx["waits"] = Int(m["rate_limit_waits"]?.doubleValue ?? 0)
        ctx["rateLimitHit"] = m["rate_limit_hit"] == .bool(true)
        if let e = row.errorMessage { ctx["errorMessage"] = e }
        let errors = strings(m["errors"]), warnings = strings(m["warnings"])
        ctx["errors"] = errors
        ctx["hasErrors"] = !errors.isEmpty
        ctx["warnings"] = warnings
        ctx["hasWarnings"] = !warnings.isEmpty
        let kinds = ["appointment.discovered": "new", "appointment.changed": "changed", "appointment.removed": "removed"]
        ctx["changes"] = changes.map { c -> [String: Any] in
            var d = appointmentDict(appts[c.appointmentId], id: c.appointmentId)
            d["kind"] = kinds[c.type] ?? c.type
            return d
        }
        ctx["changeCount"] = changes.count
        return Page(status: 200, body: render("run", ctx))
    }

    func strings(_ v: JSONValue?) -> [String] {
        guard case .array(let a)? = v else { return [] }
        return a.map { $0.stringValue ?? $0.canonicalText }
    }
}
