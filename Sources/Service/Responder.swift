import Domain
import EventLog
import Foundation
import GRDB
import HTTPTypes
import Hummingbird
import IntakeQ
import JSONCore
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Projections
import Sync

/// An answer: a status and a JSON body.
struct Reply: Error {
    var status: Int
    var body: JSONValue

    static func error(_ status: Int, _ message: String) -> Reply { Reply(status: status, body: .object(["error": .string(message)])) }
    static func ok(_ body: JSONValue, status: Int = 200) -> Reply { Reply(status: status, body: body) }
}

/// Routes every request by hand: one place decides the status of every path, method and
/// parameter, and every error is `{"error": "…"}`.
struct ServiceResponder: HTTPResponder {
    typealias Context = BasicRequestContext
    let server: SyncLedgerServer

    static let maxWebhookBytes = 1 << 20
    static let maxAPIBodyBytes = 64 << 10

    func respond(to request: Request, context: Context) async throws -> Response {
        if AdminPages.handles(request.uri.path) { return await AdminPages(server: server).respond(to: request) }
        let started = DispatchTime.now().uptimeNanoseconds
        let path = request.uri.path
        if path == "/metrics" { return await metrics(request, started: started) }
        var logged = path
        let reply: Reply
        do {
            if path.hasPrefix("/webhooks/intakeq/") {
                // The path holds the secret: it never reaches a log line.
                logged = "/webhooks/intakeq/<secret>"
                reply = try await webhook(request, secret: String(path.dropFirst("/webhooks/intakeq/".count)))
            } else {
                reply = try await route(request, path: path)
            }
        } catch let r as Reply {
            reply = r
        } catch {
            server.config.logger.error("request failed", metadata: ["path": "\(logged)", "error": "\(error)"])
            reply = .error(500, "internal error")
        }
        let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
        server.config.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "path": "\(logged)", "status": "\(reply.status)",
            "ms": "\(String(format: "%.1f", ms))",
        ])
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        let text = reply.body.canonicalText + "\n"
        return Response(status: .init(code: reply.status), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: Routing

    func route(_ request: Request, path: String) async throws -> Reply {
        let method = request.method
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        switch parts {
        case ["healthz"]:
            try only(.get, method)
            return .ok(.object(["status": .string("ok")]))
        case ["readyz"]:
            try only(.get, method)
            return server.ready.withLockedValue { $0 }
                ? .ok(.object(["status": .string("ready")]))
                : .error(503, "not ready: the views are catching up with the log")
        default:
            break
        }
        guard parts.count >= 2, parts[0] == "api", parts[1] == "v1" else { throw Reply.error(404, "no such route: \(path)") }
        let caller = try authenticate(request)
        let rest = Array(parts.dropFirst(2))
        let query = try QueryParameters(request)
        switch rest {
        case ["appointments"]:
            try only(.get, method)
            return try await list(caller, query, allowExtra: []) { try Views.appointments($0, $1) }
        case ["meeting-urls"]:
            try only(.get, method)
            return try await list(caller, query, allowExtra: []) { try Views.meetingURLs($0, $1) }
        case ["locations"]:
            try only(.get, method)
            return try await list(caller, query, allowExtra: []) { try Views.locations($0, $1) }
        case ["upcoming"]:
            try only(.get, method)
            return try await upcoming(caller, query)
        case let p where p.count == 2 && p[0] == "appointments" && !p[1].isEmpty:
            try only(.get, method)
            try query.allow([])
            return try await appointment(caller, id: p[1])
        case let p where p.count == 3 && p[0] == "appointments" && p[2] == "history" && !p[1].isEmpty:
            try only(.get, method)
            try query.allow([])
            return try await history(caller, id: p[1])
        case ["sync-logs"]:
            try only(.get, method)
            try requireAdmin(caller)
            return try await syncLogs(query)
        case ["status"]:
            try only(.get, method)
            try requireAdmin(caller)
            try query.allow([])
            return try await status()
        case ["sync"]:
            try only(.post, method)
            try requireAdmin(caller)
            try query.allow([])
            return try await startSync(request, caller: caller)
        case let p where p.count == 2 && p[0] == "runs" && !p[1].isEmpty:
            try only(.get, method)
            try requireAdmin(caller)
            try query.allow([])
            return try await runStatus(p[1])
        default:
            throw Reply.error(404, "no such route: \(path)")
        }
    }

    func only(_ expected: HTTPRequest.Method, _ method: HTTPRequest.Method) throws {
        guard method == expected else { throw Reply.error(405, "method \(method.rawValue) not allowed here (use \(expected.rawValue))") }
    }

    // MARK: Who is asking

    func authenticate(_ request: Request) throws -> Caller {
        guard let header = request.headers[.authorization] else {
            throw Reply.error(401, "missing Authorization: Bearer TOKEN")
        }
        let prefix = "bearer "
        guard header.count > prefix.count, header.lowercased().hasPrefix(prefix) else {
            throw Reply.error(401, "the Authorization header must be Bearer TOKEN")
        }
        let token = String(header.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces)
        guard let caller = server.tokens.caller(bearer: token) else { throw Reply.error(401, "unknown token") }
        return caller
    }

    func requireAdmin(_ caller: Caller) throws {
        guard caller.isAdmin else { throw Reply.error(403, "this route needs an admin token") }
    }

    /// Whether a reader may see an appointment (admins see all).
    func mayRead(_ caller: Caller, appointment id: String) async throws -> Bool {
        if caller.isAdmin { return true }
        let views = server.views
        let orgs = try await server.blocking { try views.organizations(ofAppointment: id) }
        return !orgs.isDisjoint(with: caller.organizations)
    }

    // MARK: Reads

    func filter(_ q: QueryParameters, extra: Set<String>) throws -> AppointmentFilter {
        try q.allow(Set(["org", "patient", "from", "to", "include_removed"]).union(extra))
        var f = AppointmentFilter(organizationId: q["org"], patientId: q["patient"])
        if let from = q["from"] {
            guard let ms = ISOTime.parse(from) else { throw Reply.error(400, "from: '\(from)' is not an ISO 8601 time (for example 2026-11-26 or 2026-11-26T09:00:00Z)") }
            f.from = ISOTime.format(millis: ms)
        }
        if let to = q["to"] {
            guard let ms = ISOTime.parse(to) else { throw Reply.error(400, "to: '\(to)' is not an ISO 8601 time (for example 2026-11-30 or 2026-11-30T18:00:00Z)") }
            f.to = ISOTime.format(millis: to.count == 10 ? ms + 86_400_000 - 1 : ms)
        }
        if let from = f.from, let to = f.to, from > to { throw Reply.error(400, "from: it is after to") }
        f.hideRemoved = !(try q.bool("include_removed") ?? false)
        if let o = f.organizationId, server.config.roster.organization(o) == nil {
            throw Reply.error(400, "org: '\(o)' is not an organization of the roster")
        }
        if let p = f.patientId, server.config.roster.patient(p) == nil {
            throw Reply.error(400, "patient: '\(p)' is not a patient of the roster")
        }
        return f
    }

    /// A list route: the filter from the query, then (for readers) only their organizations'.
    func list(_ caller: Caller, _ q: QueryParameters, allowExtra: Set<String>, filter f: AppointmentFilter? = nil,
              _ query: @escaping @Sendable (Database, AppointmentFilter) throws -> [ViewRow]) async throws -> Reply {
        let f = try f ?? filter(q, extra: allowExtra)
        let roster = server.config.roster
        if !caller.isAdmin {
            // Another organisation's scope reads as an empty list: no existence leak.
            if let o = f.organizationId, !caller.organizations.contains(o) { return .ok(.array([])) }
            if let p = f.patientId, let po = roster.patient(p), !caller.organizations.contains(po.1.id) { return .ok(.array([])) }
        }
        let views = server.views
        let orgs = caller.isAdmin ? nil : caller.organizations
        let rows = try await server.blocking { () -> [JSONValue] in
            var rows = try views.readSync { try query($0, f) }
            if let orgs {
                let allowed = try views.appointmentIds(inOrganizations: orgs)
                rows = rows.filter { r in r["appointment_id"]?.stringValue.map(allowed.contains) ?? false }
            }
            return rows.map(\.json)
        }
        return .ok(.array(rows))
    }

    func upcoming(_ caller: Caller, _ q: QueryParameters) async throws -> Reply {
        try q.allow(["days", "org", "patient"])
        let days = try q.int("days", in: 1...366) ?? 7
        var f = try filter(q.without("days"), extra: [])
        let now = ISOTime.nowMillis()
        f.from = ISOTime.format(millis: now)
        f.to = ISOTime.format(millis: now + Int64(days) * 86_400_000)
        f.hideRemoved = true
        return try await list(caller, q, allowExtra: ["days"], filter: f) { try Views.appointments($0, $1) }
    }

    func appointment(_ caller: Caller, id: String) async throws -> Reply {
        guard try await mayRead(caller, appointment: id) else { throw Reply.error(404, "no appointment \(id)") }
        let views = server.views
        let rows = try await server.blocking { try views.readSync { try Views.appointments($0, AppointmentFilter(appointmentId: id)) } }
        guard let row = rows.first else { throw Reply.error(404, "no appointment \(id)") }
        return .ok(row.json)
    }

    func history(_ caller: Caller, id: String) async throws -> Reply {
        guard try await mayRead(caller, appointment: id) else { throw Reply.error(404, "no appointment \(id)") }
        let views = server.views
        let store = server.store
        let entries = try await server.blocking { () -> [JSONValue] in
            let reader = try LedgerReader(store: store)
            return try History.of(id, reader: reader, views: views).map(\.json)
        }
        guard !entries.isEmpty else { throw Reply.error(404, "no appointment \(id)") }
        return .ok(.array(entries))
    }

    static let syncTypes: Set<String> = ["automated_daily", "manual_org_bulk", "manual_patient", "webhook"]

    func syncLogs(_ q: QueryParameters) async throws -> Reply {
        try q.allow(["limit", "type"])
        let limit = try q.int("limit", in: 1...10_000)
        let type = q["type"]
        if let type, !Self.syncTypes.contains(type) {
            throw Reply.error(400, "type: '\(type)' is not one of automated_daily, manual_org_bulk, manual_patient, webhook")
        }
        let views = server.views
        let rows = try await server.blocking { try views.readSync { try Views.syncLogs($0, limit: limit, type: type) }.map(\.json) }
        return .ok(.array(rows))
    }

    func status() async throws -> Reply {
        let views = server.views
        let store = server.store
        let (head, applied, rows) = try await server.blocking { () -> (LogHead, UInt64, [ViewRow]) in
            let reader = try LedgerReader(store: store)
            return (try reader.head(), try views.appliedSeq(), try views.readSync { try Views.syncLogs($0, limit: 200, type: nil) })
        }
        var latest: [String: ViewRow] = [:]
        for r in rows { if let t = r["sync_type"]?.stringValue, latest[t] == nil { latest[t] = r } }
        let c = server.coordinator
        let (remaining, resets) = await c.budget()
        let oldest = c.inbox.oldestReceivedAt
        let now = ISOTime.nowMillis()
        let queued = c.state.withLockedValue { s in (s.queue.count, s.running) }
        let runs: [JSONValue] = latest.keys.sorted().map { t in
            let r = latest[t]!
            let fields: [String: JSONValue] = [
                "sync_type": .string(t), "id": r["id"] ?? .null, "status": r["status"] ?? .null,
                "started_at": r["started_at"] ?? .null, "completed_at": r["completed_at"] ?? .null,
            ]
            return .object(fields)
        }
        var inbox: [String: JSONValue] = ["depth": .number(Double(c.inbox.depth))]
        inbox["oldest_received_at"] = oldest.map { .string(ISOTime.format(millis: $0)) } ?? .null
        inbox["oldest_age_seconds"] = oldest.map { .number(Double(now - $0) / 1000) } ?? .null
        var budget: [String: JSONValue] = ["daily_budget": .number(Double(server.config.policy.dailyBudget))]
        budget["remaining"] = remaining == Int.max ? .null : .number(Double(remaining))
        budget["next_call_frees_at"] = resets.map { .string(ISOTime.format($0)) } ?? .null
        var queue: [String: JSONValue] = ["queued": .number(Double(queued.0))]
        queue["running"] = queued.1.map(JSONValue.string) ?? .null
        var out: [String: JSONValue] = [:]
        out["head"] = .string(head.description)
        out["projection_lag"] = .number(Double(head.seq - min(head.seq, applied)))
        out["runs"] = .array(runs)
        out["inbox"] = .object(inbox)
        out["budget"] = .object(budget)
        out["webhooks"] = c.counters.json
        out["queue"] = .object(queue)
        return .ok(.object(out))
    }

    // MARK: Runs

    func startSync(_ request: Request, caller: Caller) async throws -> Reply {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxAPIBodyBytes)
        } catch {
            throw Reply.error(413, "the body is larger than \(Self.maxAPIBodyBytes) bytes")
        }
        let value: JSONValue
        do {
            value = try FastJSON.parse(Array(buffer: body))
        } catch {
            throw Reply.error(400, "the body is not JSON: \(error)")
        }
        guard case .object(let o) = value else { throw Reply.error(400, "the body must be {\"scope\": …}") }
        if let extra = o.keys.first(where: { $0 != "scope" }) { throw Reply.error(400, "\(extra): unknown field (the body is {\"scope\": …})") }
        let scope: RunScope
        switch o["scope"] {
        case .string("all")?:
            scope = .all
        case .object(let s)? where s.count == 1 && s["org"]?.stringValue != nil:
            scope = .org(s["org"]!.stringValue!)
        case .object(let s)? where s.count == 1 && s["patient"]?.stringValue != nil:
            scope = .patient(s["patient"]!.stringValue!)
        case nil:
            throw Reply.error(400, "scope: missing (\"all\", {\"org\": ID} or {\"patient\": ID})")
        default:
            throw Reply.error(400, "scope: must be \"all\", {\"org\": ID} or {\"patient\": ID}")
        }
        switch scope {
        case .org(let id) where server.config.roster.organization(id) == nil:
            throw Reply.error(400, "scope: organization '\(id)' is not in the roster")
        case .patient(let id) where server.config.roster.patient(id) == nil:
            throw Reply.error(400, "scope: patient '\(id)' is not in the roster")
        default: break
        }
        let (record, existing) = try server.coordinator.enqueue(scope, triggeredBy: "api:" + caller.name)
        var body2: [String: JSONValue] = ["run_id": .string(record.runId), "status": .string(record.status)]
        if existing { body2["note"] = .string("a run of this scope was already queued") }
        return .ok(.object(body2), status: 202)
    }

    func runStatus(_ id: String) async throws -> Reply {
        if let r = server.coordinator.run(id) { return .ok(r.json) }
        // Not started by this process (or long ago): the sync_logs row, when there is one.
        let views = server.views
        let row = try await server.blocking {
            try views.readSync { try Views.syncLogs($0, limit: nil, type: nil) }.first { $0["id"]?.stringValue == id }
        }
        guard let row else { throw Reply.error(404, "no run \(id)") }
        return .ok(.object(["run_id": .string(id), "status": row["status"] ?? .null, "sync_log": row.json]))
    }

    // MARK: Webhooks

    func webhook(_ request: Request, secret: String) async throws -> Reply {
        let c = server.coordinator
        guard let expected = server.config.webhookSecret,
              constantTimeEquals(Array(secret.utf8), Array(expected.utf8))
        else {
            c.count { $0.badSecret += 1 }
            throw Reply.error(404, "no such route")
        }
        try only(.post, request.method)
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > Self.maxWebhookBytes {
            c.count { $0.tooLarge += 1 }
            throw Reply.error(413, "the body is larger than 1 MiB")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: Self.maxWebhookBytes)
        } catch {
            c.count { $0.tooLarge += 1 }
            throw Reply.error(413, "the body is larger than 1 MiB")
        }
        let bytes = Array(buffer: buffer)
        let hint: WebhookHint
        do {
            hint = try WebhookHint.parse(bytes)
        } catch let r as Reply {
            c.count { $0.malformed += 1 }
            throw r
        }
        // Minimum necessary: an appointment of nobody in the roster leaves no trace.
        guard !hint.clientIds.isDisjoint(with: c.rosterClients) else {
            c.count { $0.notInRoster += 1 }
            return .ok(.object(["status": .string("ignored")]))
        }
        let hash = sha256Hex(bytes)
        let result: WebhookInbox.AddResult
        do {
            result = try await server.blocking { try c.accept(id: hint.appointmentId, bodyHash: hash) }
        } catch {
            server.config.logger.error("the webhook inbox could not be written", metadata: ["error": "\(error)"])
            throw Reply.error(503, "the inbox could not be written; retry later")
        }
        c.count { if result == .accepted { $0.accepted += 1 } else { $0.duplicate += 1 } }
        return .ok(.object(["status": .string(result.rawValue)]))
    }
}

/// What a webhook body says: an appointment to look at again. Nothing else in it is trusted.
struct WebhookHint {
    var eventType: String?
    var appointmentId: String
    var clientIds: Set<String>

    static func parse(_ bytes: [UInt8]) throws -> WebhookHint {
        let value: JSONValue
        do {
            value = try FastJSON.parse(bytes)
        } catch {
            throw Reply.error(400, "the body is not JSON: \(error)")
        }
        guard case .object = value else { throw Reply.error(400, "the body must be a JSON object with Appointment") }
        guard case .object(let appt)? = value["Appointment"] else { throw Reply.error(400, "Appointment: missing or not an object") }
        guard let id = idText(appt["Id"]) else { throw Reply.error(400, "Appointment.Id: missing, or not a number or a string of letters, digits, - and _") }
        var clients = Set<String>()
        if let c = idText(appt["ClientId"]) { clients.insert(c) }
        if case .array(let extra)? = appt["AdditionalClients"] {
            for e in extra { if let c = idText(e["ClientId"]) { clients.insert(c) } }
        }
        // Any spelling ("AppointmentCancelled", "Appointment Created", …) means "look again".
        let event: String?
        switch value["EventType"] {
        case .string(let s)?: event = s
        case nil, .null?: event = nil
        default: throw Reply.error(400, "EventType: not a string")
        }
        return WebhookHint(eventType: event, appointmentId: id, clientIds: clients)
    }

    /// An id as a number or a string; only characters that are safe in a path and a log line.
    static func idText(_ v: JSONValue?) -> String? {
        let text: String
        switch v {
        case .number(let d)? where d.rounded() == d && abs(d) < 9e15: text = String(Int64(d))
        case .string(let s)?: text = s.trimmingCharacters(in: .whitespaces)
        default: return nil
        }
        guard !text.isEmpty, text.count <= 128,
              text.utf8.allSatisfy({ b in (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || b == 0x2D || b == 0x5F })
        else { return nil }
        return text
    }
}

/// The query string, percent-decoded; a parameter not allowed on a route is a 400 naming it.
struct QueryParameters {
    var values: [String: String] = [:]

    init(_ request: Request) throws {
        for (k, v) in request.uri.queryParameters { values[String(k)] = String(v) }
    }

    private init(values: [String: String]) { self.values = values }

    subscript(_ key: String) -> String? { values[key].flatMap { $0.isEmpty ? nil : $0 } }

    func without(_ key: String) -> QueryParameters { var v = values; v[key] = nil; return QueryParameters(values: v) }

    func allow(_ names: Set<String>) throws {
        if let bad = values.keys.sorted().first(where: { !names.contains($0) }) {
            throw Reply.error(400, "\(bad): unknown parameter" + (names.isEmpty ? " (this route takes none)" : " (allowed: \(names.sorted().joined(separator: ", ")))"))
        }
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = self[key] else { return nil }
        guard let n = Int(text), range.contains(n) else {
            throw Reply.error(400, "\(key): '\(text)' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }

    func bool(_ key: String) throws -> Bool? {
        guard let text = self[key] else { return nil }
        switch text.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw Reply.error(400, "\(key): '\(text)' is not true or false")
        }
    }
}
