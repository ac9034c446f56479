import Foundation
import JSONCore
import Ledger
@testable import Service
import Testing
import TestSupport

/// `GET /api/v1/status` answers "as `status --json`" (SERVICE.md): the web app and a monitor see
/// the same ok, problems, last verify and damaged views as cron's `syncledger status`, and then
/// what only the server knows (budget, webhook counters, queue).
@Suite(.serialized) struct StatusRouteTests {
    @Test func theStatusRouteSaysWhatStatusJSONSaysPlusTheServersOwnParts() async throws {
        // No alert check of the server's own in the middle of the test (one at start-up only).
        let rig = try await ServerRig.start { $0.alertCheckSeconds = 3600 }
        defer { Task { await rig.stop() } }
        let run = try await rig.nightlyAndWait()
        #expect(run["status"]?.stringValue == "completed", "\(run.text)")

        let before = try await rig.admin("/api/v1/status")
        #expect(before.status == 200, "\(before.text)")
        #expect(before["ok"] == .bool(true), "\(before.text)")
        #expect(before["last_verify"] == .null && before["views_damaged"] == .null, "\(before.text)")
        #expect(before["problems"] == .array([]), "\(before.text)")

        // A verify, then a command that met a damaged page (the record only: the views stay
        // readable, so the route can still answer).
        let verify = try Spawned(["--store", rig.store, "verify"], dir: rig.dir.path)
        #expect(await verify.wait() == 0, "\(verify.stderr)")
        let store = try Store.open(rig.store)
        try ViewsDamageRecord.record(
            ViewsDamageRecord(at: "2026-12-04T10:00:00.000Z", command: "appointments", error: "database disk image is malformed"),
            in: store)
        // The server announces it (as its alert loop would within a minute), so both read the
        // same alert log. (Its loop may have announced it already: then this check adds nothing.)
        _ = try await rig.server.checkAlerts()

        let api = try #require(try await rig.admin("/api/v1/status").json)
        let cli = try Spawned(["--store", rig.store, "status", "--json"], dir: rig.dir.path)
        #expect(await cli.wait() == 1, "\(cli.stdout)\(cli.stderr)")
        let expected = try FastJSON.parse(Array(cli.stdout.utf8))
        guard case .object(let fields) = expected else {
            Issue.record("status --json printed no object: \(cli.stdout)")
            return
        }
        #expect(fields.keys.sorted() == ["alerts", "checks", "head", "inbox", "last_verify", "ok", "problems", "projection_lag",
                                         "recorded_loss", "runs", "views_damaged", "writer_running"])
        if case .object(let served) = api {
            #expect(Set(served.keys) == Set(fields.keys).union(["budget", "webhooks", "queue"]), "\(served.keys.sorted())")
        }
        for (key, value) in fields {
            #expect(Self.timeless(api[key]) == Self.timeless(value), "\(key): the route says \(api[key].map(\.canonicalText) ?? "nothing"), status --json \(value.canonicalText)")
        }
        #expect(api["ok"] == .bool(false))
        #expect(api["last_verify"]?["ok"] == .bool(true) && api["last_verify"]?["events"]?.doubleValue ?? 0 > 0, "\(api.canonicalText)")
        #expect(api["views_damaged"]?["command"]?.stringValue == "appointments", "\(api.canonicalText)")
        if case .array(let problems)? = api["problems"] {
            #expect(problems.contains { $0.stringValue?.contains("found damaged by `appointments`") == true }, "\(problems)")
        } else {
            Issue.record("no problems in \(api.canonicalText)")
        }
        #expect(api["checks"].map { $0.canonicalText.contains("\"views_damaged\"") } == true, "\(api.canonicalText)")
        #expect(api["alerts"]?["firing"].map { $0.canonicalText.contains("\"views_damaged\"") } == true, "\(api.canonicalText)")
        // The server's own parts.
        #expect(api["budget"]?["daily_budget"]?.doubleValue == 100_000)
        #expect(api["webhooks"]?["accepted"]?.doubleValue == 0)
        #expect(api["queue"]?["queued"]?.doubleValue == 0)
        #expect(api["inbox"]?["oldest_received_at"] == .null)
    }

    /// Events in the log that the views do not show while no run is writing (their update failed:
    /// under a full disk the server said "ok" from views that no longer moved) are a problem;
    /// the next run, which catches the views up, clears it.
    @Test func viewsBehindTheLogWithNoRunWritingAreAProblem() async throws {
        let rig = try await ServerRig.start { $0.alertCheckSeconds = 3600 }
        defer { Task { await rig.stop() } }
        let first = try await rig.nightlyAndWait()
        #expect(first["status"]?.stringValue == "completed", "\(first.text)")
        #expect(try await rig.admin("/api/v1/status")["ok"] == .bool(true))
        // An event appended by a writer that then could not update the views.
        do {
            let writer = try LedgerWriter(store: try Store.open(rig.store))
            defer { writer.close() }
            let started = #"{"sync_type":"manual_patient","triggered_by":"cron"}"#
            _ = try writer.append([NewEvent(type: .syncStarted, run: "r-lag", stream: "run/r-lag", data: Array(started.utf8))])
        }
        let behind = try await rig.admin("/api/v1/status")
        #expect(behind["ok"] == .bool(false) && behind["projection_lag"]?.doubleValue == 1, "\(behind.text)")
        #expect(behind.text.contains("the views are 1 event behind the log and no run is writing"), "\(behind.text)")
        let next = try await rig.nightlyAndWait()
        #expect(next["status"]?.stringValue == "completed", "\(next.text)")
        let caughtUp = try await rig.admin("/api/v1/status")
        #expect(caughtUp["projection_lag"]?.doubleValue == 0 && !caughtUp.text.contains("behind the log"), "\(caughtUp.text)")
    }

    /// The value with what depends on the moment it was read (a run's age, the inbox's age) taken out.
    static func timeless(_ v: JSONValue?) -> JSONValue? {
        switch v {
        case .object(let o)?:
            var out: [String: JSONValue] = [:]
            for (k, x) in o where k != "age_hours" && k != "oldest_age_seconds" { out[k] = timeless(x) }
            return .object(out)
        case .array(let a)?:
            return .array(a.map { timeless($0) ?? .null })
        default:
            return v
        }
    }
}
