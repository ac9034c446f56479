import AsyncHTTPClient
import Domain
import FakeIntakeQ
import Foundation
#if canImport(CNIOLinux)
import CNIOLinux  // members of C structs (sockaddr_in, pollfd) may be taken for its (MemberImportVisibility)
#endif
import JSONCore
import Ledger
import NIOConcurrencyHelpers
import NIOHTTP1
import Projections
@testable import Service
import Sync
import Synchronization
import Testing
import TestSupport

/// Every route, status and token rule through real HTTP on loopback, against the fake IntakeQ.
@Suite(.serialized) struct ServerTests {
    @Test func healthAndReadiness() async throws {
        let rig = try await ServerRig.start()
        defer { Task { await rig.stop() } }
        #expect(try await rig.get("/healthz").status == 200)
        let ready = try await rig.get("/readyz")
        #expect(ready.status == 200)
        #expect(ready["status"]?.stringValue == "ready")
        await rig.stop()
    }

    @Test func tokenRules() async throws {
        let rig = try await ServerRig.start()
        let run = try await rig.syncAndWait()
        #expect(run["status"]?.stringValue == "completed", "\(run.text)")

        // No token, a malformed header, an unknown token: 401 on every /api/ route.
        for path in ["/api/v1/appointments", "/api/v1/status", "/api/v1/sync-logs", "/api/v1/nope"] {
            let none = try await rig.get(path)
            #expect(none.status == 401)
            #expect(none["error"]?.stringValue != nil)
            #expect(try await rig.get(path, token: "slt_not-a-real-token").status == 401)
        }
        let basic = try await http(.GET, rig.base + "/api/v1/appointments", headers: [("Authorization", "Basic abc")])
        #expect(basic.status == 401)

        // The admin sees every organisation; the reader only fsh's.
        let all = try await rig.admin("/api/v1/appointments?include_removed=true").array
        let mine = try await rig.get("/api/v1/appointments?include_removed=true", token: rig.tokens.reader).array
        #expect(!mine.isEmpty && mine.count < all.count)
        #expect(mine.allSatisfy { $0["organization_id"]?.stringValue == "fsh" })
        let other = try #require(all.first { $0["organization_id"]?.stringValue == "rrc" })
        let otherId = try #require(other["appointment_id"]?.stringValue)
        // Another organisation's appointment, history, org and patient: 404 or an empty list.
        let one = try await rig.get("/api/v1/appointments/" + otherId, token: rig.tokens.reader)
        #expect(one.status == 404)
        #expect(try await rig.get("/api/v1/appointments/" + otherId + "/history", token: rig.tokens.reader).status == 404)
        #expect(try await rig.get("/api/v1/appointments/does-not-exist", token: rig.tokens.reader).status == 404)
        #expect(try await rig.get("/api/v1/appointments?org=rrc", token: rig.tokens.reader).array.isEmpty)
        #expect(try await rig.get("/api/v1/appointments?patient=p-002", token: rig.tokens.reader).array.isEmpty)
        #expect(try await rig.get("/api/v1/meeting-urls", token: rig.tokens.reader).array.allSatisfy { row in
            mine.contains { $0["appointment_id"] == row["appointment_id"] } })
        #expect(try await rig.get("/api/v1/locations", token: rig.tokens.reader).array.count <= mine.count)
        // Its own appointment and history: 200, the same keys as the CLI's --json.
        let ownId = try #require(mine.first?["appointment_id"]?.stringValue)
        let own = try await rig.get("/api/v1/appointments/" + ownId, token: rig.tokens.reader)
        #expect(own.status == 200)
        #expect(own["appointment_id"]?.stringValue == ownId)
        #expect(own["start_at"] != nil && own["meeting_url"] != nil && own["removed"] != nil)
        let history = try await rig.get("/api/v1/appointments/" + ownId + "/history", token: rig.tokens.reader)
        #expect(history.status == 200 && !history.array.isEmpty)
        // Readers start no runs and read no run logs or status: 403.
        #expect(try await rig.post("/api/v1/sync", token: rig.tokens.reader, json: #"{"scope":"all"}"#).status == 403)
        #expect(try await rig.get("/api/v1/sync-logs", token: rig.tokens.reader).status == 403)
        #expect(try await rig.get("/api/v1/status", token: rig.tokens.reader).status == 403)
        #expect(try await rig.get("/api/v1/runs/x", token: rig.tokens.reader).status == 403)
        // The admin reads them.
        #expect(try await rig.admin("/api/v1/appointments/" + otherId).status == 200)
        let logs = try await rig.admin("/api/v1/sync-logs?limit=5&type=manual_org_bulk")
        #expect(logs.status == 200 && logs.array.count == 1)
        let status = try await rig.admin("/api/v1/status")
        #expect(status.status == 200)
        #expect(status["inbox"]?["depth"]?.doubleValue == 0)
        #expect(status["budget"]?["remaining"]?.doubleValue != nil)
        #expect(try await rig.admin("/api/v1/upcoming?days=30").status == 200)
        await rig.stop()
    }

    @Test func tokenFileChangesTakeEffectWithoutRestart() async throws {
        let rig = try await ServerRig.start()
        let (token, entry) = TokenFile.newToken(name: "late", role: .admin, organizations: [])
        #expect(try await rig.get("/api/v1/status", token: token).status == 401)
        var file = try TokenFile.load(path: rig.tokens.path)
        file.tokens.append(entry)
        try await Task.sleep(nanoseconds: 1_100_000_000)
        try file.save(path: rig.tokens.path)
        #expect(await rig.eventually(timeout: 5) { try await rig.get("/api/v1/status", token: token).status == 200 })
        // A tokens file that no longer loads refuses every token: the server's fault, a 503 (it
        // was a 401 "unknown token", which a web app reads as its token revoked); an unknown
        // token is a 401 again once the file is fixed.
        let good = try Data(contentsOf: URL(fileURLWithPath: rig.tokens.path))
        try await Task.sleep(nanoseconds: 1_100_000_000)
        try (good + Data(",".utf8)).write(to: URL(fileURLWithPath: rig.tokens.path))
        #expect(await rig.eventually(timeout: 5) { try await rig.get("/api/v1/status", token: token).status == 503 })
        let broken = try await rig.get("/api/v1/appointments", token: "slt_not-a-real-token")
        #expect(broken.status == 503 && (broken["error"]?.stringValue ?? "").contains("tokens file"), "\(broken.text)")
        try await Task.sleep(nanoseconds: 1_100_000_000)
        try good.write(to: URL(fileURLWithPath: rig.tokens.path))
        #expect(await rig.eventually(timeout: 5) { try await rig.get("/api/v1/status", token: token).status == 200 })
        #expect(try await rig.get("/api/v1/status", token: "slt_not-a-real-token").status == 401)
        await rig.stop()
    }

    /// Runs that would have nothing to sync because of `forget` are refused up front (400), on
    /// the API and the admin pages alike: one patient, then every patient of an organisation
    /// (each was a 202, and a run that failed). The other organisations still queue.
    @Test func runsForForgottenPatientsAreRefused() async throws {
        let rig = try await ServerRig.start()
        let org = try #require(Fixtures.roster.organizations.first { $0.patients.count >= 2 })
        let other = try #require(Fixtures.roster.organizations.first { $0.id != org.id && !$0.patients.isEmpty })
        let tombstones = rig.store + "/keys/forgotten"
        try FileManager.default.createDirectory(atPath: tombstones, withIntermediateDirectories: true)
        func forget(_ id: String) throws {
            let name = Array(id.utf8).map { String(format: "%02x", $0) }.joined()
            try Data().write(to: URL(fileURLWithPath: tombstones + "/" + name))
        }
        try forget(org.patients[0].id)
        let one = try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":{"patient":"\#(org.patients[0].id)"}}"#)
        #expect(one.status == 400 && (one["error"]?.stringValue ?? "").contains("was forgotten"), "\(one.text)")
        #expect(try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":{"org":"\#(org.id)"}}"#).status == 202,
                "an organisation with a patient left still runs")
        for p in org.patients.dropFirst() { try forget(p.id) }
        // The roster the server reads is made again when keys/forgotten changes (its mtime).
        let all = try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":{"org":"\#(org.id)"}}"#)
        #expect(all.status == 400 && (all["error"]?.stringValue ?? "").contains("every patient of organization '\(org.id)' was forgotten"), "\(all.text)")
        #expect(try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":{"org":"\#(other.id)"}}"#).status == 202)
        #expect(rig.server.nothingToSync(.org(org.id)) != nil && rig.server.nothingToSync(.org(other.id)) == nil)
        await rig.stop()
    }

    /// A queue file left by an earlier server, as a crash or an edit may leave it: the run that
    /// was running, an entry whose sync_type does not fit its scope and a run for a patient
    /// forgotten since are not run and answer "failed", across a further restart too (they
    /// answered 404 after it); a triggered_by the server never writes is not recorded in the log
    /// (an email and an escape sequence were); a good entry runs (hostile test).
    @Test func aRestoredQueueIsCheckedAndItsFailuresRemembered() async throws {
        let dir = TempDir()
        let first = try await ServerRig.start(dir: dir)
        _ = try await first.syncAndWait()
        await first.stop()
        let forgotten = Fixtures.roster.organizations[0].patients[0].id
        let tombstones = first.store + "/keys/forgotten"
        try FileManager.default.createDirectory(atPath: tombstones, withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: tombstones + "/" + Array(forgotten.utf8).map { String(format: "%02x", $0) }.joined()))
        let org = Fixtures.roster.organizations[1].id
        let email = try #require(Fixtures.roster.allPatients.compactMap(\.email).first)
        let queue = #"{"queued":[{"run_id":"r-started","scope":"all","sync_type":"manual_org_bulk","triggered_by":"api:ops","queued_at":1,"started":true,"started_at":1796000000000},"#
            + #"{"run_id":"r-type","scope":{"org":"\#(org)"},"sync_type":"automated_daily","triggered_by":"api:ops","queued_at":2},"#
            + #"{"run_id":"r-forgotten","scope":{"patient":"\#(forgotten)"},"triggered_by":"api:ops","queued_at":3},"#
            + #"{"run_id":"r-good","scope":{"org":"\#(org)"},"triggered_by":"evil\u001b[2J \#(email)","queued_at":4}]}"#
        try Data(queue.utf8).write(to: URL(fileURLWithPath: first.store + "/state/queued-runs.json"))

        for round in 1...2 {
            let rig = try await ServerRig.start(dir: dir)
            for (id, words) in [("r-started", "the server stopped before this run finished"), ("r-type", "does not fit its scope"),
                                ("r-forgotten", "was forgotten")] {
                let r = try await rig.admin("/api/v1/runs/" + id)
                #expect(r["status"]?.stringValue == "failed" && r.text.contains(words), "round \(round), \(id): \(r.text)")
            }
            // The run that was running still says when it started (it said null).
            #expect((try await rig.admin("/api/v1/runs/r-started"))["started_at"]?.stringValue == ISOTime.format(millis: 1_796_000_000_000),
                    "round \(round)")
            if round == 1 {
                #expect(await rig.eventually(timeout: 60) { (try await rig.admin("/api/v1/runs/r-good"))["status"]?.stringValue == "completed" })
                let started = try rig.events().first { $0.run == "r-good" && $0.type == "sync.started" }
                let text = try #require(started.map { String(decoding: $0.data, as: UTF8.self) })
                #expect(text.contains("restored:(unrecognised)") && !text.contains(email) && !text.contains("\u{1B}"), "\(text)")
            }
            await rig.stop()
        }
    }

    /// A run whose queue file cannot be written is not queued: 503, not a 202 a restart could
    /// lose (here the file's path is a directory). Once it can be written, the run queues.
    @Test func aRunThatCannotBeRecordedIsNotAccepted() async throws {
        let rig = try await ServerRig.start()
        let path = rig.store + "/state/queued-runs.json"
        #expect(!FileManager.default.fileExists(atPath: path))
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        let refused = try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":"all"}"#)
        #expect(refused.status == 503 && (refused["error"]?.stringValue ?? "").contains("queue file"), "\(refused.text)")
        #expect(!refused.text.contains("run_id"))
        #expect(rig.server.coordinator.state.withLockedValue { $0.queue.isEmpty && $0.runs.isEmpty }, "nothing was queued")
        try FileManager.default.removeItem(atPath: path)
        let run = try await rig.syncAndWait()
        #expect(run["status"]?.stringValue == "completed", "\(run.text)")
        await rig.stop()
    }

    /// The nightly run's time comes while the queue file cannot be written: the scheduler tries
    /// again (here every 0.2 s), and queues the run once the file can be written, the same
    /// night, not the next (the scheduler's clock is moved two days on).
    @Test func theSchedulerTriesAgainWhenTheNightlyRunCannotBeQueued() async throws {
        let rig = try await ServerRig.start()
        let coordinator = rig.server.coordinator
        let path = rig.store + "/state/queued-runs.json"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        // The clock the scheduler reads: now when it plans the first run, two days on from then
        // (past the run's time): the first attempt fails, and so do the tries after it.
        let reads = Mutex(0)
        let scheduler = Task {
            await coordinator.schedule(at: (hour: 3, minute: 0), in: .utc, retryAfter: 0.2) {
                Date().addingTimeInterval(reads.withLock { n in defer { n += 1 }; return n == 0 } ? 0 : 2 * 86_400)
            }
        }
        #expect(await rig.eventually(timeout: 10) { coordinator.state.withLockedValue { $0.scheduleFailures >= 2 } },
                "the scheduler tried, and tried again")
        #expect(coordinator.state.withLockedValue { $0.runs.isEmpty }, "nothing could be queued")
        try FileManager.default.removeItem(atPath: path)
        func nightly() -> RunRecord? {
            coordinator.state.withLockedValue { s in s.runs.values.first { $0.syncType == "automated_daily" } }
        }
        _ = await rig.eventually(timeout: 10) { nightly() != nil }
        #expect(nightly()?.triggeredBy == "scheduler", "the nightly run was queued once the file could be written")
        scheduler.cancel()
        await scheduler.value
        #expect(coordinator.state.withLockedValue { s in s.runs.values.filter { $0.syncType == "automated_daily" }.count } == 1)
        await rig.stop()
    }

    @Test func badInputGetsTheRightStatusAndRecordsNothing() async throws {
        let rig = try await ServerRig.start()
        let run = try await rig.syncAndWait()
        #expect(run["status"]?.stringValue == "completed")
        let before = try rig.events().count
        let appt = Fixtures.rosterAppointments(day: 1)[0]
        let good = webhookBody("AppointmentUpdated", appt)

        // Wrong secret: 404, counted.
        let wrong = try await http(.POST, rig.base + "/webhooks/intakeq/" + String(webhookSecret.reversed()), body: good)
        #expect(wrong.status == 404)
        #expect(try await http(.POST, rig.base + "/webhooks/intakeq/", body: good).status == 404)
        #expect(try await http(.POST, rig.base + "/webhooks/intakeq/short", body: good).status == 404)
        // Malformed JSON, no Appointment, an id of the wrong shape: 400.
        for bad in ["{", "[1,2]", #"{"EventType":"AppointmentCreated"}"#, #"{"Appointment":{"Id":{"x":1},"ClientId":4101}}"#,
                    #"{"Appointment":{"Id":"a b\n","ClientId":4101}}"#, "not json at all"] {
            let r = try await http(.POST, rig.webhookURL, body: Array(bad.utf8))
            #expect(r.status == 400, "\(bad) → \(r.status)")
            #expect(r["error"]?.stringValue != nil)
        }
        // 2 MiB: 413.
        let huge = try await http(.POST, rig.webhookURL, body: [UInt8](repeating: UInt8(ascii: " "), count: 2 << 20))
        #expect(huge.status == 413)
        // Unknown route, wrong method: 404, 405.
        #expect(try await rig.get("/nope").status == 404)
        #expect(try await rig.admin("/api/v1/nope").status == 404)
        #expect(try await http(.DELETE, rig.base + "/api/v1/appointments", token: rig.tokens.admin).status == 405)
        // Bad parameters: 400 naming the parameter.
        for (path, name) in [("/api/v1/appointments?from=yesterday", "from"), ("/api/v1/appointments?to=2026-13-45", "to"),
                             ("/api/v1/appointments?include_removed=maybe", "include_removed"),
                             ("/api/v1/appointments?colour=blue", "colour"), ("/api/v1/sync-logs?limit=0", "limit"),
                             ("/api/v1/sync-logs?type=weekly", "type"), ("/api/v1/upcoming?days=many", "days"),
                             ("/api/v1/appointments?org=nowhere", "org"), ("/api/v1/meeting-urls?patient=p-999", "patient")] {
            let r = try await rig.admin(path)
            #expect(r.status == 400, "\(path) → \(r.status)")
            #expect(r["error"]?.stringValue?.hasPrefix(name + ":") == true, "\(path): \(r.text)")
        }
        // Bad sync requests: 400.
        for body in ["{", #"{"scope":"some"}"#, #"{"scope":{"org":"nowhere"}}"#, #"{"scope":{"patient":"p-999"}}"#, "{}",
                     #"{"scope":"all","extra":1}"#] {
            let r = try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: body)
            #expect(r.status == 400, "\(body) → \(r.status) \(r.text)")
        }
        #expect(try await rig.admin("/api/v1/runs/no-such-run").status == 404)
        // Nothing recorded, the server keeps serving, the bad secret was counted.
        try await Task.sleep(nanoseconds: 400_000_000)
        #expect(try rig.events().count == before)
        #expect(try await rig.inboxDepth() == 0)
        #expect(try await rig.get("/healthz").status == 200)
        let counters = try await rig.admin("/api/v1/status")["webhooks"]
        #expect(counters?["bad_secret"]?.doubleValue == 3)
        #expect(counters?["malformed"]?.doubleValue == 6)
        #expect(counters?["too_large"]?.doubleValue == 1)
        await rig.stop()
    }

    @Test func aClientOutsideTheRosterLeavesNoTrace() async throws {
        let rig = try await ServerRig.start()
        let before = try rig.events().count
        let body = #"{"EventType":"Appointment Created","ActionPerformedByClient":true,"Appointment":{"Id":"outsider-1","ClientId":999999,"ClientName":"Not Ours"}}"#
        let r = try await http(.POST, rig.webhookURL, body: Array(body.utf8))
        #expect(r.status == 200)
        #expect(r["status"]?.stringValue == "ignored")
        try await Task.sleep(nanoseconds: 400_000_000)
        #expect(try rig.events().count == before)
        #expect(rig.lookups() == 0)
        let inbox = String(decoding: FileManager.default.contents(atPath: rig.store + "/state/webhook-inbox.log") ?? Data(), as: UTF8.self)
        #expect(!inbox.contains("outsider"))
        #expect(try await rig.admin("/api/v1/status")["webhooks"]?["not_in_roster"]?.doubleValue == 1)
        await rig.stop()
    }

    /// An appointment the ledger already holds is looked at again whoever the body names (a
    /// group appointment whose primary client is not ours, sent without AdditionalClients, was
    /// ignored until the nightly run), and a client given only at the body's top level counts
    /// (INTAKEQ-API.md §4.2); an unknown appointment of a stranger is still dropped.
    @Test func aRecordedAppointmentIsLookedAtAgainWhoeverTheBodyNames() async throws {
        let rig = try await ServerRig.start(state: Fixtures.day(1).state)
        #expect(try await rig.syncAndWait()["status"]?.stringValue == "completed")
        let recorded = try #require(try await rig.admin("/api/v1/appointments").array.first?["appointment_id"]?.stringValue)
        let ours = try #require(Fixtures.roster.allPatients.first?.intakeqClientId)
        for (body, expected) in [
            (#"{"EventType":"AppointmentUpdated","Appointment":{"Id":"\#(recorded)","ClientId":999999}}"#, "accepted"),
            (#"{"EventType":"AppointmentCreated","ClientId":\#(ours),"Appointment":{"Id":"top-level-client-1"}}"#, "accepted"),
            (#"{"EventType":"AppointmentCreated","Appointment":{"Id":"outsider-2","ClientId":999999}}"#, "ignored"),
        ] {
            let r = try await http(.POST, rig.webhookURL, body: Array(body.utf8))
            #expect(r.status == 200 && r["status"]?.stringValue == expected, "\(body): \(r.text)")
        }
        let inbox = String(decoding: FileManager.default.contents(atPath: rig.store + "/state/webhook-inbox.log") ?? Data(), as: UTF8.self)
        #expect(!inbox.contains("outsider-2"))
        // One the views hold as removed, sent naming nobody of ours, is looked at again: it may
        // be back in scope, and IntakeQ does not send an ignored webhook again.
        rig.fake.setState(Fixtures.day(2).state)
        #expect(try await rig.syncAndWait()["status"]?.stringValue == "completed")
        let removed = try #require(try await rig.admin("/api/v1/appointments?include_removed=true").array
            .first { ["true", "1"].contains($0["removed"]?.stringValue ?? "") }?["appointment_id"]?.stringValue, "day 2 removes an appointment")
        let r = try await http(.POST, rig.webhookURL, body: Array(#"{"EventType":"AppointmentUpdated","Appointment":{"Id":"\#(removed)","ClientId":999999}}"#.utf8))
        #expect(r.status == 200 && r["status"]?.stringValue == "accepted", "\(r.text)")
        await rig.stop()
    }

    @Test func webhookToInboxToRefetchToEventToAPI() async throws {
        let rig = try await ServerRig.start(state: Fixtures.day(1).state)
        #expect(try await rig.syncAndWait()["status"]?.stringValue == "completed")
        // The fake moves to day 2 and posts a webhook for every appointment that changed.
        let sent = await rig.fake.setState(Fixtures.day(2).state, postWebhooks: true)
        #expect(!sent.isEmpty)
        #expect(sent.allSatisfy { $0.status == 200 })
        let rescheduled = try #require(sent.first { $0.eventType == "AppointmentRescheduled" && rig.isRosterAppointment($0.appointmentId, day: 2) })
        let served = try #require(Fixtures.day(2).state.appointments.compactMap { try? FastJSON.parse($0) }
            .first { $0["Id"]?.stringValue == rescheduled.appointmentId })
        let startMillis = try #require(served["StartDate"]?.int64Value)
        // The change arrives through the API.
        #expect(await rig.eventually(timeout: 15) {
            let a = try await rig.admin("/api/v1/appointments/" + rescheduled.appointmentId)
            return a["start_at"]?.stringValue == ISOTimeFormat.format(millis: startMillis)
        })
        #expect(await rig.eventually(timeout: 15) { try await rig.inboxDepth() == 0 })
        // Recorded inside runs of sync_type webhook, started and completed like any run.
        let logs = try await rig.admin("/api/v1/sync-logs?type=webhook").array
        #expect(!logs.isEmpty)
        #expect(logs.allSatisfy { $0["status"]?.stringValue == "completed" })
        let events = try rig.events()
        let webhookRuns = Set(logs.compactMap { $0["id"]?.stringValue })
        let changed = events.filter { $0.type == "appointment.changed" && webhookRuns.contains($0.run ?? "") }
        #expect(changed.contains { $0.stream == "appointment/" + rescheduled.appointmentId })
        for run in webhookRuns {
            #expect(events.contains { $0.type == "sync.started" && $0.run == run })
            #expect(events.contains { $0.type == "sync.completed" && $0.run == run })
        }
        let history = try await rig.admin("/api/v1/appointments/" + rescheduled.appointmentId + "/history").array
        #expect(history.count >= 2)
        // The nightly crawl afterwards counts what no webhook brought.
        let nightly = try await rig.nightlyAndWait()
        #expect(nightly["status"]?.stringValue == "completed", "\(nightly.text)")
        #expect(await rig.eventually(timeout: 30) {
            let l = try await rig.admin("/api/v1/sync-logs?type=automated_daily&limit=1").array
            return l.first?["metadata"]?["changes_missed_by_webhooks"] != nil
        })
        await rig.stop()
    }

    @Test func theSameWebhookFiftyTimesIsOneLookup() async throws {
        let rig = try await ServerRig.start()
        #expect(try await rig.syncAndWait()["status"]?.stringValue == "completed")
        rig.fake.clearRequests()
        let before = try rig.events()
        let appt = Fixtures.rosterAppointments(day: 1)[0]
        let id = try #require(appt["Id"]?.stringValue)
        let body = webhookBody("AppointmentUpdated", appt)
        var statuses: [Int] = []
        for _ in 0..<50 { statuses.append(try await http(.POST, rig.webhookURL, body: body).status) }
        #expect(statuses.allSatisfy { $0 == 200 })
        #expect(await rig.eventually(timeout: 15) { try await rig.inboxDepth() == 0 && rig.lookups(id) >= 1 })
        try await Task.sleep(nanoseconds: 500_000_000)
        // Retries arriving after the lookup are retries still.
        for _ in 0..<5 { _ = try await http(.POST, rig.webhookURL, body: body) }
        try await Task.sleep(nanoseconds: 700_000_000)
        #expect(rig.lookups(id) == 1)
        let after = try rig.events().dropFirst(before.count)
        #expect(after.filter { $0.stream == "appointment/" + id }.count <= 1)
        await rig.stop()
    }

    /// An id IntakeQ keeps failing waits on its own: each run that leaves it doubles its wait
    /// (was: every webhook run waited behind it, up to 15 minutes), and once it has failed it is
    /// asked once per try, in runs of its own (was: with every retry, holding the ids that came
    /// since behind it); ids that arrive meanwhile are looked up as they come. The whole inbox waits only after a run in which IntakeQ answered
    /// none of its ids and some had not failed before (IntakeQ down, a wrong key). Once IntakeQ
    /// answers the id, it is looked up and its wait forgotten.
    @Test func anIdIntakeQKeepsFailingBacksOffOnItsOwn() async throws {
        #expect(Coordinator.webhookRetryDelay(failures: 0, base: 5, max: 900) == 0)
        #expect((1...10).map { Coordinator.webhookRetryDelay(failures: $0, base: 5, max: 900) }
                == [5, 10, 20, 40, 80, 160, 320, 640, 900, 900])
        #expect(Coordinator.webhookRetryDelay(failures: 10_000, base: 5, max: 900) == 900)
        let rig = try await ServerRig.start { config in
            config.webhookRetrySeconds = 0.4
            config.webhookRetryMaxSeconds = 60
            config.maxRetries = 1
        }
        #expect(try await rig.syncAndWait()["status"]?.stringValue == "completed")
        let appt = Fixtures.rosterAppointments(day: 1)[0]
        let id = try #require(appt["Id"]?.stringValue)
        rig.fake.inject(.status(500, retryAfter: nil), path: "/appointments/" + id, times: 1_000)
        #expect(try await http(.POST, rig.webhookURL, body: webhookBody("AppointmentUpdated", appt)).status == 200)
        let coordinator = rig.server.coordinator
        // The first run answered nothing, for an id that had not failed before: the inbox waits too.
        #expect(await rig.eventually(timeout: 30) { coordinator.webhookRetry.failures == 1 })
        #expect(await rig.eventually(timeout: 30) { (coordinator.idRetry.waits[id]?.failures ?? 0) >= 5 })
        let backOffs = Array(coordinator.idRetry.backOffs.prefix(4))
        #expect(backOffs.allSatisfy { $0.id == id })
        // Each of its waits twice the one before; each next run started only once the wait was over.
        #expect(backOffs.map { (($0.until - $0.at) * 1000).rounded() } == [400, 800, 1600, 3200], "\(backOffs)")
        for (x, y) in zip(backOffs, backOffs.dropFirst()) { #expect(y.at >= x.until, "\(backOffs)") }
        // Its first run asked it twice (one retry); each try since, once.
        let failed = try #require(coordinator.idRetry.waits[id]?.failures)
        #expect(rig.lookups(id) == 2 + (failed - 1), "\(failed) failures")
        // Its own retries do not make the inbox wait longer.
        #expect(coordinator.webhookRetry.failures == 1)
        #expect(coordinator.webhookRetry.backOffs.count == 1)

        // Another id arrives while it waits (6.4 s or more): looked up at once, not after that wait.
        let until = try #require(coordinator.idRetry.waits[id]?.until)
        let other = Fixtures.rosterAppointments(day: 1)[1]
        let otherId = try #require(other["Id"]?.stringValue)
        #expect(try await http(.POST, rig.webhookURL, body: webhookBody("AppointmentUpdated", other)).status == 200)
        #expect(await rig.eventually(timeout: 15) { rig.lookups(otherId) == 1 })
        #expect(Date().timeIntervalSince1970 < until, "the other id waited for the failing one's back-off")
        #expect(await rig.eventually(timeout: 15) { try await rig.inboxDepth() == 1 })
        #expect(coordinator.webhookRetry.failures == 0)
        #expect(coordinator.idRetry.waits[otherId] == nil)

        rig.fake.clearFaults()
        #expect(await rig.eventually(timeout: 30) { try await rig.inboxDepth() == 0 })
        #expect(coordinator.idRetry.waits.isEmpty)
        #expect(coordinator.webhookRetry.failures == 0)
        await rig.stop()
    }

    @Test func aBurstBeyondTheBudgetWaitsInTheInbox() async throws {
        let rig = try await ServerRig.start(state: Fixtures.synthetic(200), dailyBudget: 100)
        let appts = Fixtures.synthetic(200).appointments.map { try! FastJSON.parse($0) }
        // 500 webhooks for 200 appointments, eight at a time.
        try await withThrowingTaskGroup(of: Int.self) { group in
            var next = 0
            func add() {
                let i = next
                next += 1
                let a = appts[i % 200]
                let event = ["AppointmentCreated", "AppointmentUpdated", "AppointmentRescheduled", "AppointmentCancelled", "appointment created"][i % 5]
                group.addTask { try await http(.POST, rig.webhookURL, body: webhookBody(event, a)).status }
            }
            for _ in 0..<8 { add() }
            while let status = try await group.next() {
                #expect(status == 200)
                if next < 500 { add() }
            }
        }
        // All 200 ids are durable: looked up (100, the budget) or waiting (the rest).
        #expect(await rig.eventually(timeout: 30) { try await rig.inboxDepth() == 100 && rig.lookups() == 100 })
        try await Task.sleep(nanoseconds: 1_000_000_000)
        #expect(rig.lookups() == 100)
        #expect(try await rig.inboxDepth() == 100)
        let inbox = try WebhookInbox(path: rig.store + "/state/webhook-inbox.log")
        let waiting = Set(inbox.next(1000))
        let fetched = Set(rig.fake.requests().map { String($0.path.dropFirst("/appointments/".count)) })
        #expect(waiting.count == 100)
        #expect(waiting.union(fetched).count == 200)
        #expect(waiting.isDisjoint(with: fetched))
        let status = try await rig.admin("/api/v1/status")
        #expect(status["budget"]?["remaining"]?.doubleValue == 0)
        await rig.stop()
    }

    @Test func manualRunsQueueOneAtATimeAndDeduplicate() async throws {
        let rig = try await ServerRig.start()
        // The first run is slow (IntakeQ answers its settings after 1.5 s), so the next ones wait.
        rig.fake.inject(.delay(seconds: 1.5), path: "/appointments/settings")
        let first = try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":"all"}"#)
        #expect(first.status == 202)
        try await Task.sleep(nanoseconds: 300_000_000)
        let a = try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":{"org":"fsh"}}"#)
        let b = try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":{"org":"fsh"}}"#)
        let c = try await rig.post("/api/v1/sync", token: rig.tokens.admin, json: #"{"scope":{"patient":"p-001"}}"#)
        #expect(a.status == 202 && b.status == 202 && c.status == 202)
        #expect(a["run_id"] == b["run_id"])
        #expect(a["run_id"] != c["run_id"])
        #expect(try await rig.admin("/api/v1/runs/" + (first["run_id"]?.stringValue ?? ""))["status"]?.stringValue == "running")
        #expect(try await rig.admin("/api/v1/runs/" + (a["run_id"]?.stringValue ?? ""))["status"]?.stringValue == "queued")
        for id in [first, a, c].compactMap({ $0["run_id"]?.stringValue }) {
            #expect(await rig.eventually(timeout: 60) {
                try await rig.admin("/api/v1/runs/" + id)["status"]?.stringValue == "completed"
            })
        }
        // The run ids are the sync_logs ids; runs did not overlap.
        let logs = try await rig.admin("/api/v1/sync-logs").array
        #expect(Set(logs.compactMap { $0["id"]?.stringValue }) == Set([first, a, c].compactMap { $0["run_id"]?.stringValue }))
        let types = Dictionary(uniqueKeysWithValues: logs.map { ($0["id"]!.stringValue!, $0["sync_type"]!.stringValue!) })
        #expect(types[a["run_id"]!.stringValue!] == "manual_org_bulk")
        #expect(types[c["run_id"]!.stringValue!] == "manual_patient")
        let spans = logs.map { ($0["started_at"]!.stringValue!, $0["completed_at"]!.stringValue!) }.sorted { $0.0 < $1.0 }
        for (x, y) in zip(spans, spans.dropFirst()) { #expect(x.1 <= y.0) }
        await rig.stop()
    }

    /// A run this server did not start (before a restart, or by `syncledger sync`) is answered
    /// from its sync_logs row, found by its id; an id of no run is a 404.
    @Test func aRunFromBeforeARestartIsAnsweredFromItsSyncLog() async throws {
        let dir = TempDir()
        let first = try await ServerRig.start(dir: dir)
        let done = try await first.syncAndWait()
        let id = try #require(done["run_id"]?.stringValue)
        #expect(done["status"]?.stringValue == "completed", "\(done.text)")
        let other = try await first.syncAndWait(#"{"org":"fsh"}"#)
        await first.stop()

        let rig = try await ServerRig.start(dir: dir)
        let answer = try await rig.admin("/api/v1/runs/" + id)
        #expect(answer.status == 200, "\(answer.text)")
        #expect(answer["status"]?.stringValue == "completed")
        #expect(answer["sync_log"]?["id"]?.stringValue == id)
        #expect(answer["sync_log"]?["sync_type"]?.stringValue == "manual_org_bulk")
        let second = try await rig.admin("/api/v1/runs/" + (other["run_id"]?.stringValue ?? ""))
        #expect(second["sync_log"]?["id"] == other["run_id"] && second["sync_log"]?["organization_id"]?.stringValue == "fsh", "\(second.text)")
        #expect(try await rig.admin("/api/v1/runs/no-such-run").status == 404)
        await rig.stop()
    }

    /// A store whose log lost acknowledged events is refused at start, with the loss's one line,
    /// as every command refuses it (was: served, "ok" in the status, every run failing).
    @Test func aLogThatLostAcknowledgedEventsIsRefusedAtStart() async throws {
        let dir = TempDir()
        let first = try await ServerRig.start(dir: dir)
        #expect(try await first.syncAndWait()["status"]?.stringValue == "completed")
        await first.stop()
        let log = dir.sub("store") + "/log"
        let segments = try FileManager.default.contentsOfDirectory(atPath: log).filter { $0.hasSuffix(".seg") }.sorted()
        let last = log + "/" + (try #require(segments.last))
        let size = try #require(try FileManager.default.attributesOfItem(atPath: last)[.size] as? Int)
        #expect(truncate(last, off_t(size / 2)) == 0)
        var config = ServeConfiguration(storePath: dir.sub("store"), roster: Fixtures.roster, apiKey: ServerRig.apiKey)
        config.port = 0
        do {
            _ = try SyncLedgerServer(config: config)
            Issue.record("a server started on a log that lost acknowledged events")
        } catch {
            let text = "\(error)"
            #expect(text.contains("was acknowledged") && !text.contains("\n"), "\(text)")
        }
    }

    /// As the CLI: a day in from/to is the practice's day (a Denver evening is on its Denver day,
    /// not the next UTC one), rows carry start_local/end_local, and an offset that is no UTC
    /// offset is a 400 naming it.
    @Test func theAPIsDaysAreThePracticesDays() async throws {
        let rig = try await ServerRig.start { $0.timeZone = "America/Denver" }
        #expect(try await rig.syncAndWait()["status"]?.stringValue == "completed")
        let rows = try await rig.admin("/api/v1/appointments?from=2026-11-30&to=2026-11-30").array
        #expect(!rows.isEmpty)
        for r in rows {
            let local = r["start_local"]?.stringValue ?? ""
            #expect(local.hasPrefix("2026-11-30T") && local.hasSuffix("-07:00"), "\(r)")
            #expect(r["end_local"]?.stringValue?.hasSuffix("-07:00") == true, "\(r)")
        }
        let evening = try #require(rows.first { $0["start_at"]?.stringValue?.hasPrefix("2026-12-01T") == true },
                                   "an evening appointment in Denver on Nov 30 (Dec 1 in UTC)")
        // The next UTC-day query does not list it; its own row says the same local time.
        let id = try #require(evening["appointment_id"]?.stringValue)
        let next = try await rig.admin("/api/v1/appointments?from=2026-12-01&to=2026-12-01").array
        #expect(!next.contains { $0["appointment_id"]?.stringValue == id })
        #expect(try await rig.admin("/api/v1/appointments/" + id)["start_local"] == evening["start_local"])
        // A local time without an offset is Denver's; with one it is that instant.
        let local = try await rig.admin("/api/v1/appointments?from=2026-11-30T17:00&to=2026-11-30T23:59").array
        #expect(local.contains { $0["appointment_id"]?.stringValue == id })
        let instant = try await rig.admin("/api/v1/appointments?from=2026-12-01T00:00:00Z&to=2026-12-01T06:59:59Z").array
        #expect(instant.contains { $0["appointment_id"]?.stringValue == id })
        let bad = try await rig.admin("/api/v1/appointments?from=2026-12-01T10:00%2B99:99")
        #expect(bad.status == 400 && bad.text.contains("from:") && bad.text.contains("not a UTC offset"), "\(bad.text)")
        // The last day there is (its end in Denver is in the year 10000): every row, not none.
        let every = try await rig.admin("/api/v1/appointments").array
        #expect(try await rig.admin("/api/v1/appointments?to=9999-12-31").array.count == every.count && !every.isEmpty)
        // upcoming as the CLI's: to the end of the practice's day `days` ahead, cancelled left out.
        let now = ISOTime.format(millis: ISOTime.nowMillis())
        let denver = try PracticeZone.load("America/Denver")
        let lastDay = CivilDate(daysSinceEpoch: denver.local(atUTCMillis: ISOTime.nowMillis()).date.daysSinceEpoch + 30)
        let to = String(format: "%04d-%02d-%02d", lastDay.year, lastDay.month, lastDay.day)
        let window = try await rig.admin("/api/v1/appointments?from=\(now)&to=\(to)").array
        let upcoming = try await rig.admin("/api/v1/upcoming?days=30").array
        #expect(window.contains { $0["status"]?.stringValue == "cancelled" }, "the fixture has cancelled appointments ahead")
        #expect(upcoming.compactMap { $0["appointment_id"]?.stringValue }
                == window.filter { $0["status"]?.stringValue != "cancelled" }.compactMap { $0["appointment_id"]?.stringValue })
        await rig.stop()
    }

    /// A group appointment of one organisation's patient with another's as its primary: a reader
    /// of the first sees the appointment, but not the other organisation's patient (their id, name
    /// and client id in the row), and a reader's history has the session's fields, no client's.
    @Test func aReaderSeesNoOtherOrganisationsPatientInAGroup() async throws {
        // Dakota Brennan (client 5203), the primary of the fixture's group appointment with p-021
        // (hwc) and p-026 (rrc), made an hwc patient: the row is hers, named.
        var roster = Fixtures.roster
        let hwc = try #require(roster.organizations.firstIndex { $0.id == "hwc" })
        roster.organizations[hwc].patients.append(.init(id: "p-031", name: "Dakota Brennan", email: nil, intakeqClientId: "5203"))
        let rig = try await ServerRig.start { $0.roster = roster }
        #expect(try await rig.syncAndWait()["status"]?.stringValue == "completed")
        let group = "6a3f000010fa33302d1cf730"
        let full = try await rig.admin("/api/v1/appointments/" + group)
        #expect(full["organization_id"]?.stringValue == "hwc" && full["patient_id"]?.stringValue == "p-031"
                && full["client_name"]?.stringValue == "Dakota Brennan" && full["intakeq_client_id"]?.stringValue == "5203", "\(full.text)")
        let fullHistory = try await rig.admin("/api/v1/appointments/\(group)/history").array

        let (token, t) = TokenFile.newToken(name: "rrc-dashboard", role: .reader, organizations: ["rrc"])
        var file = try TokenFile.load(path: rig.tokens.path)
        file.tokens.append(t)
        try file.save(path: rig.tokens.path)
        #expect(await rig.eventually(timeout: 10) { try await rig.get("/api/v1/appointments/" + group, token: token).status == 200 })
        let seen = try await rig.get("/api/v1/appointments/" + group, token: token)
        #expect(seen["organization_id"]?.stringValue == "hwc" && seen["start_at"] == full["start_at"])
        for key in ["patient_id", "client_name", "intakeq_client_id"] { #expect(seen[key] == .null, "\(key): \(seen.text)") }
        let listed = try await rig.get("/api/v1/appointments?org=rrc", token: token).array
        let row = try #require(listed.first { $0["appointment_id"]?.stringValue == group })
        #expect(row["patient_id"] == .null && row["client_name"] == .null && row["intakeq_client_id"] == .null)
        #expect(listed.contains { $0["client_name"]?.stringValue != nil && $0["patient_id"]?.stringValue != nil },
                "their own patients' rows keep them")
        #expect(try await rig.get("/api/v1/appointments/\(group)/history", token: token).array.count == fullHistory.count)
        await rig.stop()

        // A row of theirs (their patient first) whose primary client is not theirs: the name goes.
        let mixed = ViewRow(columns: ["appointment_id", "organization_id", "patient_id", "client_name", "intakeq_client_id"],
                            values: ["a1", "rrc", "p-026", "Some One", "5203"].map(JSONValue.string))
        let shown = ServiceResponder.scoped(mixed, to: ["rrc"], primaryIsTheirs: false)
        #expect(shown["patient_id"]?.stringValue == "p-026" && shown["client_name"] == .null && shown["intakeq_client_id"] == .null)
        #expect(ServiceResponder.scoped(mixed, to: ["rrc"], primaryIsTheirs: true) == mixed)

        // A reader's history: the session's fields only.
        let entry = HistoryEntry(seq: 7, at: "2026-11-20T10:00:00.000Z", run: nil, syncType: nil, type: "appointment.changed",
                                 lastModified: nil, changes: ["ClientName", "ClientNote", "CustomFields.Goal", "AdditionalClients",
                                                              "StartDate", "TelehealthInfo.JoinUrl", "view.start_at", "view.status"]
                                     .map { FieldChange(field: $0, from: .null, to: .string("x")) })
        func kept(forReader: Bool) -> [String] {
            ServiceResponder.scoped([entry], forReader: forReader).flatMap { $0.changes.map(\.field) }
        }
        #expect(kept(forReader: true) == ["StartDate", "TelehealthInfo.JoinUrl", "view.start_at", "view.status"])
        #expect(kept(forReader: false) == entry.changes.map(\.field))
    }

    @Test func theDailyScheduleFollowsThePracticeZone() throws {
        let denver = try PracticeZone.load("America/Denver")
        // 2026-11-21 09:00 UTC is 02:00 in Denver (MST, UTC-7): 03:00 local is 10:00 UTC.
        let now = Date(timeIntervalSince1970: 1_795_251_600)
        let next = ServeConfiguration.nextDaily(after: now, at: (3, 0), in: denver)
        #expect(ISOTimeFormat.format(millis: Int64(next.timeIntervalSince1970 * 1000)) == "2026-11-21T10:00:00.000Z")
        // In July (MDT, UTC-6) the same local time is 09:00 UTC.
        let july = Date(timeIntervalSince1970: 1_783_036_800)  // 2026-07-03T00:00:00Z
        let n2 = ServeConfiguration.nextDaily(after: july, at: (3, 0), in: denver)
        #expect(ISOTimeFormat.format(millis: Int64(n2.timeIntervalSince1970 * 1000)) == "2026-07-03T09:00:00.000Z")
        #expect(ServeConfiguration.parseDailyAt("03:00")! == (3, 0))
        // Once per local day, on the days the clocks change too: Denver's 01:30 happens twice on
        // 2026-11-01 (one run, the first), 02:30 not at all on 2026-03-08 (one run, at 03:30
        // MDT); Lord Howe's 02:15 not at all on 2026-10-04 (its clocks go 02:00 → 02:30).
        for (zoneName, at, from) in [("America/Denver", (1, 30), 1_793_448_000), ("America/Denver", (2, 30), 1_772_755_200),
                                     ("Australia/Lord_Howe", (2, 15), 1_790_942_400), ("Pacific/Chatham", (3, 0), 1_775_088_000)] {
            let zone = try PracticeZone.load(zoneName)
            var t = Date(timeIntervalSince1970: Double(from))
            var days: [Int64] = []
            for _ in 0..<6 {
                t = ServeConfiguration.nextDaily(after: t.addingTimeInterval(1), at: at, in: zone)
                let local = zone.local(atUTCMillis: Int64(t.timeIntervalSince1970 * 1000))
                days.append(local.date.daysSinceEpoch)
                // At the time asked for, or just after it when the clock skipped it.
                let minutes = local.hour * 60 + local.minute - (at.0 * 60 + at.1)
                #expect((0...60).contains(minutes), "\(zoneName) \(local)")
            }
            #expect(days == Array(days[0]..<(days[0] + 6)), "\(zoneName): one run a day, \(days)")
        }
        #expect(ServeConfiguration.parseDailyAt("3:00") == nil)
        #expect(ServeConfiguration.parseDailyAt("24:00") == nil)
        #expect(ServeConfiguration.parseDailyAt("+1:30") == nil && ServeConfiguration.parseDailyAt("01:+5") == nil)
    }

    @Test func theInboxSurvivesATornLineAndDeduplicates() throws {
        let dir = TempDir()
        let path = dir.sub("inbox.log")
        do {
            let inbox = try WebhookInbox(path: path)
            #expect(try inbox.add(id: "a", bodyHash: "h1") == .accepted)
            #expect(try inbox.add(id: "a", bodyHash: "h2") == .duplicate)
            #expect(try inbox.add(id: "b", bodyHash: "h1") == .accepted)
            try inbox.markDone(["a"])
            #expect(try inbox.add(id: "a", bodyHash: "h1") == .duplicate)
            #expect(try inbox.add(id: "a", bodyHash: "h3") == .accepted)
            inbox.close()
        }
        // A crash mid-write leaves a torn last line: never acknowledged, ignored.
        let fh = FileHandle(forWritingAtPath: path)!
        fh.seekToEndOfFile()
        fh.write(Data("+ c h9 17".utf8))
        fh.closeFile()
        let again = try WebhookInbox(path: path)
        #expect(again.next(10) == ["b", "a"])
        #expect(try again.add(id: "a", bodyHash: "h2") == .duplicate)
    }

    /// Something other than a regular file at the inbox's path is refused at once, in one line
    /// that says what to do: a FIFO there made serve wait for a writer forever (hostile test).
    @Test func anInboxThatIsNotARegularFileIsRefused() throws {
        let dir = TempDir()
        let fifo = dir.sub("fifo.log"), folder = dir.sub("folder.log"), link = dir.sub("link.log")
        #expect(mkfifo(fifo, 0o600) == 0)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        #expect(symlink(dir.sub("elsewhere.log"), link) == 0)
        // Were the FIFO read, a writer coming and going lets the read (and the open for appending)
        // end, so the test fails instead of hanging.
        let done = Mutex(false)
        let unblock = Thread {
            while !done.withLock({ $0 }) {
                let fd = open(fifo, O_RDWR | O_NONBLOCK)
                usleep(200_000)
                if fd >= 0 { close(fd) }
            }
        }
        unblock.start()
        defer { done.withLock { $0 = true } }
        for (path, what) in [(fifo, "not a regular file"), (folder, "a directory"), (link, "a symbolic link")] {
            do {
                _ = try WebhookInbox(path: path)
                Issue.record("\(what): accepted")
            } catch {
                #expect("\(error)" == "the webhook inbox \(path) is \(what): move it away, and serve makes a new one")
            }
        }
    }

    /// Stopping during a webhook run whose lookups IntakeQ does not answer: the run stops
    /// between lookups and the ids not looked up wait in the inbox for the next start. The
    /// server waited for every id (hostile test: 4 minutes for 44 ids, past systemd's stop
    /// timeout at ~110).
    @Test func stoppingMidRunLeavesTheRestInTheInbox() async throws {
        let dir = TempDir()
        let first = try await ServerRig.start(dir: dir)
        #expect(try await first.syncAndWait()["status"]?.stringValue == "completed")
        await first.stop()
        let ids = Fixtures.rosterAppointments(day: 1).compactMap { $0["Id"]?.stringValue }.prefix(8)
        let inboxPath = dir.sub("store") + "/state/webhook-inbox.log"
        let lines = ids.map { "+ \($0) h-\($0) \(Int64(Date().timeIntervalSince1970 * 1000))\n" }.joined()
        let handle = try #require(FileHandle(forWritingAtPath: inboxPath))
        handle.seekToEndOfFile()
        handle.write(Data(lines.utf8))
        handle.closeFile()
        // An IntakeQ that takes connections and never answers: each lookup waits its timeout.
        let (hole, holePort) = try listeningSocket(backlog: 64)
        defer { close(hole) }
        let rig = try await ServerRig.start(dir: dir) { config in
            config.baseURL = "http://127.0.0.1:\(holePort)"
            config.timeoutSeconds = 1.5
            config.maxRetries = 0
        }
        try await Task.sleep(nanoseconds: 2_000_000_000)
        let stopping = Date()
        await rig.stop()
        let took = Date().timeIntervalSince(stopping)
        #expect(took < 4, "stopping took \(took) s")
        let left = try WebhookInbox(path: inboxPath)
        #expect(left.depth >= ids.count - 3, "\(left.depth) of \(ids.count) ids wait")
    }

    /// A full disk: a write that fails partway is answered 503 and leaves nothing behind, so
    /// the id acknowledged once the disk has room again is read back after a restart (hostile
    /// test: the failed write's part ran into the next line, and that line was dropped on load).
    /// When the part cannot be cut off, the next record starts on a line of its own.
    @Test(arguments: [true, false]) func aWriteThatFailsPartwayLosesNothingAcknowledged(canCut: Bool) throws {
        let dir = TempDir()
        let path = dir.sub("inbox.log")
        let full = Mutex(false)
        let inbox = try WebhookInbox(path: path, writeBytes: { fd, bytes in
            guard full.withLock({ $0 }) else { return Glibc.write(fd, bytes.baseAddress, bytes.count) }
            // Room for part of the line, then none.
            if bytes.count > 5 { return Glibc.write(fd, bytes.baseAddress, bytes.count / 2) }
            errno = ENOSPC
            return -1
        }, cut: { fd, size in canCut ? ftruncate(fd, size) : -1 })
        #expect(try inbox.add(id: "before", bodyHash: "h0") == .accepted)
        full.withLock { $0 = true }
        #expect(throws: InboxError.self) { try inbox.add(id: "refused", bodyHash: "h1") }
        let text = String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
        // Cut back, or (when it cannot be) the part left behind.
        #expect(canCut ? text.hasSuffix("\n") && !text.contains("refused") : !text.hasSuffix("\n"), "\(text)")
        full.withLock { $0 = false }
        #expect(try inbox.add(id: "acknowledged", bodyHash: "h2") == .accepted)
        inbox.close()
        let again = try WebhookInbox(path: path)
        let after = String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
        if canCut {
            #expect(again.next(10) == ["before", "acknowledged"], "\(after)")
        } else {
            // The part left may read as the refused id (looked up once more: harmless); the
            // acknowledged one is there.
            #expect(again.next(10).filter { $0 != "refused" } == ["before", "acknowledged"], "\(after)")
        }
    }
}

extension ServerRig {
    func isRosterAppointment(_ id: String, day: Int) -> Bool {
        Fixtures.rosterAppointments(day: day).contains { $0["Id"]?.stringValue == id }
    }
}

typealias ISOTimeFormat = ISOTime
