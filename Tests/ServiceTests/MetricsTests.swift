import FakeIntakeQ
import Foundation
import JSONCore
import Ledger
import NIOHTTP1
@testable import Service
import Sync
import Testing
import TestSupport

/// One sample of the Prometheus text format.
struct Sample: Sendable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// A strict reader of the text exposition (format 0.0.4): every line is a comment (`# HELP`,
/// `# TYPE`) or `name{label="value",…} number`; anything else fails the test.
struct Exposition {
    var samples: [Sample] = []
    var types: [String: String] = [:]
    var help: [String: String] = [:]

    init(_ text: String) throws {
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let p = line.dropFirst(7).split(separator: " ")
                guard p.count == 2 else { throw ServeError("bad TYPE line: \(line)") }
                types[String(p[0])] = String(p[1])
                continue
            }
            if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst(7)
                let name = rest.split(separator: " ").first.map(String.init) ?? ""
                help[name] = String(rest.dropFirst(name.count + 1))
                continue
            }
            guard !line.hasPrefix("#") else { continue }
            var name = ""
            var labels: [String: String] = [:]
            var rest = Substring(line)
            if let brace = rest.firstIndex(of: "{") {
                name = String(rest[..<brace])
                guard let close = rest.lastIndex(of: "}") else { throw ServeError("unclosed labels: \(line)") }
                for pair in rest[rest.index(after: brace)..<close].split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2, kv[1].hasPrefix("\""), kv[1].hasSuffix("\"") else { throw ServeError("bad label: \(line)") }
                    labels[String(kv[0])] = String(kv[1].dropFirst().dropLast())
                }
                rest = rest[rest.index(after: close)...]
            } else {
                let p = rest.split(separator: " ", maxSplits: 1)
                name = String(p[0])
                rest = p.count > 1 ? " " + p[1] : ""
            }
            guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }), !name.isEmpty else {
                throw ServeError("bad metric name: \(line)")
            }
            guard let value = Double(rest.trimmingCharacters(in: .whitespaces)) else { throw ServeError("bad value: \(line)") }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
    }

    func values(_ name: String) -> [Sample] { samples.filter { $0.name == name } }

    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    func sum(_ name: String, where match: [String: String] = [:]) -> Double {
        values(name).filter { s in match.allSatisfy { s.labels[$0.key] == $0.value } }.reduce(0) { $0 + $1.value }
    }
}

/// promtool from Debian's `prometheus` package (tools/setup.sh installs it); a test that needs
/// it fails, never skips, when it is missing.
enum Promtool {
    static let path: String? = {
        var dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        dirs += ["/usr/bin", "/usr/local/bin", "/bin"]
        return dirs.map { $0 + "/promtool" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Runs promtool; (exit status, stdout then stderr).
    static func run(_ args: [String], stdin: String? = nil, in dir: String = Paths.root) throws -> (Int32, String) {
        let binary = try #require(path, "promtool is missing: install Debian's `prometheus` package (./tools/setup.sh does)")
        let input = TempDir("promtool")
        defer { input.remove() }
        let stdinPath = input.path + "/stdin"
        try Data((stdin ?? "").utf8).write(to: URL(fileURLWithPath: stdinPath))
        let r = try ProcessRunner.runBlocking(binary, args, cwd: dir, timeout: 60, stdinPath: stdinPath)
        return (r.timedOut ? -1 : r.status, r.stdoutText + r.stderrText)
    }
}

/// Every metric SERVICE.md's "Metrics and alerts" names, by the name `/metrics` gives it.
let serviceMetrics: [String: String] = [
    "syncledger_runs_total": "counter",                              // runs by type and status
    "syncledger_last_success_timestamp_seconds": "gauge",            // last successful run time by type
    "syncledger_appointment_changes_total": "counter",               // appointments new/updated/removed
    "syncledger_events_appended_total": "counter",                   // events appended
    "syncledger_log_head_seq": "gauge",                              // log head seq
    "syncledger_projection_lag_events": "gauge",                     // projection lag
    "syncledger_webhook_requests_total": "counter",                  // webhook requests by outcome
    "syncledger_webhook_inbox_depth": "gauge",                       // inbox depth
    "syncledger_webhook_inbox_oldest_age_seconds": "gauge",          // and oldest age
    "syncledger_intakeq_calls_total": "counter",                     // IntakeQ calls
    "syncledger_intakeq_retries_total": "counter",                   // retries
    "syncledger_intakeq_responses_429_total": "counter",             // 429s
    "syncledger_intakeq_budget_remaining": "gauge",                  // budget left
    "syncledger_verify_failed": "gauge",                             // verify outcome
    "syncledger_verify_age_seconds": "gauge",                        // and age
    "syncledger_views_damaged": "gauge",                             // a damaged views page met
]

@Suite(.serialized) struct MetricsTests {
    /// The demo's story through a real server: five days of syncs with IntakeQ's webhooks in
    /// between, a verify, then one scrape that must show every metric with believable values.
    @Test func aScrapeAfterDemoLikeSyncsShowsEveryMetric() async throws {
        let rig = try await ServerRig.start()
        defer { Task { await rig.stop() } }
        // Day 1: the first nightly-style crawl; days 2–5: IntakeQ's webhooks, then a crawl.
        let first = try await rig.nightlyAndWait()
        #expect(first["status"]?.stringValue == "completed", "\(first.text)")
        for day in 2...5 {
            _ = await rig.fake.setState(Fixtures.day(day).state, postWebhooks: true)
            #expect(await rig.eventually(timeout: 60) { try await rig.inboxDepth() == 0 })
            // IntakeQ's limit once on the last day: one 429, one retry.
            if day == 5 { rig.fake.inject(.status(429, retryAfter: 0), path: "/appointments/settings", times: 1) }
            let run = try await rig.nightlyAndWait()
            #expect(run["status"]?.stringValue == "completed", "\(run.text)")
        }
        // One of each webhook outcome the tests can cause.
        let appt = Fixtures.rosterAppointments(day: 5)[0]
        _ = try await http(.POST, rig.webhookURL, body: webhookBody("AppointmentUpdated", appt))
        _ = try await http(.POST, rig.webhookURL, body: webhookBody("AppointmentUpdated", appt))
        _ = try await http(.POST, rig.base + "/webhooks/intakeq/not-the-secret-0123456789abcdef0123", body: webhookBody("AppointmentUpdated", appt))
        _ = try await http(.POST, rig.webhookURL, body: Array("{not json".utf8))
        guard case .object(var o) = appt else { Issue.record("not an object"); return }
        o["ClientId"] = .number(999_999)
        let outsider = JSONValue.object(o)
        _ = try await http(.POST, rig.webhookURL, body: webhookBody("AppointmentUpdated", outsider))
        #expect(await rig.eventually(timeout: 60) { try await rig.inboxDepth() == 0 })
        // The operator's verify (the real binary), which the metrics report.
        let verify = try Spawned(["--store", rig.store, "verify"], dir: rig.dir.path)
        #expect(await verify.wait() == 0, "verify: \(verify.stderr)")

        // An admin token is needed unless --metrics-public.
        #expect(try await rig.get("/metrics").status == 401)
        #expect(try await rig.get("/metrics", token: rig.tokens.reader).status == 403)
        #expect(try await rig.get("/metrics?x=1", token: rig.tokens.admin).status == 400)
        let scrape = try await rig.admin("/metrics")
        #expect(scrape.status == 200)
        let m = try Exposition(scrape.text)
        for (name, type) in serviceMetrics {
            #expect(m.types[name] == type, "\(name): TYPE \(m.types[name] ?? "missing")")
            #expect(!m.values(name).isEmpty, "\(name) has no sample")
            #expect(m.help[name] != nil, "\(name) has no HELP")
        }
        // Believable values, checked against the store itself.
        let logs = try await rig.admin("/api/v1/sync-logs").array
        let completed = logs.filter { $0["status"]?.stringValue == "completed" }
        #expect(m.sum("syncledger_runs_total") == Double(logs.count))
        // A whole-roster run queued through the API is an automated_daily run.
        #expect(m.value("syncledger_runs_total", ["sync_type": "automated_daily", "status": "completed"]) == 5)
        #expect(completed.filter { $0["sync_type"]?.stringValue == "automated_daily" }.count == 5)
        #expect(m.sum("syncledger_runs_total", where: ["sync_type": "webhook"]) >= 4)
        #expect(m.sum("syncledger_runs_total", where: ["status": "failed"]) == 0)
        let newCount = logs.reduce(0.0) { $0 + ($1["appointments_new"]?.doubleValue ?? 0) }
        #expect(newCount > 100)
        #expect(m.value("syncledger_appointment_changes_total", ["change": "new"]) == newCount)
        #expect((m.value("syncledger_appointment_changes_total", ["change": "updated"]) ?? 0) > 0)
        #expect((m.value("syncledger_appointment_changes_total", ["change": "removed"]) ?? 0) > 0)
        let head = try await rig.admin("/api/v1/status")["head"]?.stringValue ?? ""
        let headSeq = Double(head.split(separator: ":").first ?? "") ?? -1
        #expect(m.value("syncledger_log_head_seq") == headSeq)
        let appended = m.sum("syncledger_events_appended_total")
        #expect(appended > newCount && appended <= headSeq)
        #expect(m.value("syncledger_projection_lag_events") == 0)
        let successAt = m.value("syncledger_last_success_timestamp_seconds", ["sync_type": "automated_daily"]) ?? 0
        #expect(abs(successAt - Date().timeIntervalSince1970) < 600)
        #expect(m.value("syncledger_last_success_timestamp_seconds", ["sync_type": "manual_patient"]) == 0)
        #expect(m.value("syncledger_webhook_requests_total", ["outcome": "accepted"]) ?? 0 >= 2)
        #expect(m.value("syncledger_webhook_requests_total", ["outcome": "duplicate"]) ?? 0 >= 1)
        #expect(m.value("syncledger_webhook_requests_total", ["outcome": "bad_secret"]) == 1)
        #expect(m.value("syncledger_webhook_requests_total", ["outcome": "malformed"]) == 1)
        #expect(m.value("syncledger_webhook_requests_total", ["outcome": "not_in_roster"]) ?? 0 >= 1)
        #expect(m.value("syncledger_webhook_inbox_depth") == 0)
        #expect(m.value("syncledger_webhook_inbox_oldest_age_seconds") == 0)
        let calls = logs.reduce(0.0) { $0 + ($1["metadata"]?["intakeq_api_calls"]?.doubleValue ?? 0) }
        #expect(calls > 0 && m.value("syncledger_intakeq_calls_total") == calls)
        #expect(m.value("syncledger_intakeq_retries_total") == 1)
        #expect(m.value("syncledger_intakeq_responses_429_total") == 1)
        #expect(m.value("syncledger_intakeq_rate_limit_waits_total") ?? 0 >= 1)
        let budget = m.value("syncledger_intakeq_budget_remaining") ?? -1
        #expect(budget > 0 && budget == 100_000 - calls, "budget \(budget), calls \(calls)")
        #expect(m.value("syncledger_verify_failed") == 0)
        #expect(m.value("syncledger_views_damaged") == 0)
        let age = m.value("syncledger_verify_age_seconds") ?? -1
        #expect(age >= 0 && age < 600)

        // No personal data in any label: only the known label names, none of the roster's
        // names, e-mails, patient or client ids.
        let allowed: Set<String> = ["sync_type", "status", "change", "outcome", "alert"]
        for s in m.samples { #expect(Set(s.labels.keys).isSubset(of: allowed), "\(s.name) labels \(s.labels)") }
        let labelValues = Set(m.samples.flatMap { $0.labels.values })
        for p in Fixtures.roster.allPatients {
            if let name = p.name { #expect(!scrape.text.contains(name), "a patient's name in /metrics") }
            #expect(!labelValues.contains(p.intakeqClientId) && !labelValues.contains(p.id), "a patient or client id in a label")
        }
        for o in Fixtures.roster.organizations { #expect(!labelValues.contains(o.id), "an organisation id in a label") }
        #expect(!scrape.text.contains("@") && !scrape.text.contains(ServerRig.apiKey))
        // Prometheus itself accepts the exposition.
        let (status, lint) = try Promtool.run(["check", "metrics"], stdin: scrape.text)
        #expect(status == 0, "promtool check metrics: \(lint)")
    }

    /// Each server has its own registry: two in one process never mix their numbers.
    @Test func twoServersInOneProcessKeepTheirOwnMetrics() async throws {
        let a = try await ServerRig.start()
        let b = try await ServerRig.start()
        defer { Task { await a.stop(); await b.stop() } }
        _ = try await http(.POST, a.base + "/webhooks/intakeq/wrong-secret-0123456789abcdef0123456789", body: Array("{}".utf8))
        _ = try await http(.POST, a.base + "/webhooks/intakeq/wrong-secret-0123456789abcdef0123456789", body: Array("{}".utf8))
        let ma = try Exposition(try await a.admin("/metrics").text)
        let mb = try Exposition(try await b.admin("/metrics").text)
        #expect(ma.value("syncledger_webhook_requests_total", ["outcome": "bad_secret"]) == 2)
        #expect(mb.value("syncledger_webhook_requests_total", ["outcome": "bad_secret"]) == 0)
        #expect(a.server.metrics.registry !== b.server.metrics.registry)
    }
}
