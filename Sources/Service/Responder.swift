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

/// An answer: a status and a JSON body (or, for the OpenAPI document and the metrics, text).
struct Reply: Error {
    var status: Int
    var body: JSONValue
    var text: PlainText?
    /// The methods a 405 names in its `Allow` header (RFC 9110 requires it).
    var allow: String?

    struct PlainText: Sendable {
        var contentType: String
        var body: String
    }

    init(status: Int, body: JSONValue, text: PlainText? = nil) {
        self.status = status
        self.body = body
        self.text = text
    }

    static func error(_ status: Int, _ message: String) -> Reply { Reply(status: status, body: .object(["error": .string(message)])) }

    /// A value a client sent, as an error message quotes it: at most 64 characters (a 20,000
    /// character parameter came back whole in its 400, hostile test).
    static func echoed(_ value: String) -> String {
        value.count <= 64 ? value : String(value.prefix(64)) + "… (\(value.utf8.count) bytes)"
    }
    static func ok(_ body: JSONValue, status: Int = 200) -> Reply { Reply(status: status, body: body) }
    static func text(_ body: String, contentType: String) -> Reply {
        Reply(status: 200, body: .null, text: PlainText(contentType: contentType, body: body))
    }
}

/// One route of the server. `ServiceResponder.routes` is the router: `respond` matches every
/// request against it and the OpenAPI drift test enumerates it, so a route exists only by being
/// listed there (and docs/openapi.yaml must list it too).
struct Route: Sendable {
    enum Access: Sendable {
        /// No token (probes, the OpenAPI document).
        case open
        /// Any known token; what a reader sees is filtered by the handler.
        case reader
        case admin
        /// The `{secret}` path segment is the authentication (IntakeQ's webhook).
        case webhookSecret
    }
    typealias Handler = @Sendable (ServiceResponder, RouteRequest) async throws -> Reply

    let method: HTTPRequest.Method
    /// The OpenAPI path template: a `{name}` segment matches one non-empty segment.
    let path: String
    let access: Access
    /// The last parameter takes the rest of the path, slashes included, and may be empty (a
    /// webhook secret may hold slashes; a missing one is a wrong one, counted).
    let lastTakesRest: Bool
    let handle: Handler

    init(_ method: HTTPRequest.Method, _ path: String, _ access: Access, lastTakesRest: Bool = false, _ handle: @escaping Handler) {
        self.method = method
        self.path = path
        self.access = access
        self.lastTakesRest = lastTakesRest
        self.handle = handle
    }

    var segments: [Substring] { path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { $0 } }

    /// The raw (still percent-encoded) path parameters when `parts` match the template, else nil.
    func match(_ parts: [String]) -> [String: String]? {
        let template = segments
        guard parts.count == template.count || (lastTakesRest && parts.count > template.count) else { return nil }
        var parameters: [String: String] = [:]
        for (i, t) in template.enumerated() {
            if t.hasPrefix("{") && t.hasSuffix("}") {
                let rest = lastTakesRest && i == template.count - 1
                let value = rest ? parts[i...].joined(separator: "/") : parts[i]
                guard rest || !value.isEmpty else { return nil }
                parameters[String(t.dropFirst().dropLast())] = value
            } else if t != parts[i] {
                return nil
            }
        }
        return parameters
    }
}

/// A request matched to a route: its path parameters, caller and query.
struct RouteRequest: Sendable {
    let request: Request
    let parameters: [String: String]
    let caller: Caller?
    let query: QueryParameters

    /// The token's caller (every `.reader` and `.admin` route has one).
    var who: Caller { caller! }

    /// An id path parameter, percent-decoded: 1 to 128 letters, digits, `-` or `_` (IntakeQ's ids
    /// and run ids are), else a 400 that does not echo it.
    func id(_ name: String) throws -> String {
        guard let text = parameters[name]?.removingPercentEncoding, !text.isEmpty, text.utf8.count <= 128,
              text.utf8.allSatisfy(WebhookHint.isIdByte)
        else { throw Reply.error(400, "\(name): must be 1 to 128 letters, digits, - or _") }
        return text
    }
}

/// Routes every request through one table (`routes`): one place decides the status of every
/// path, method and parameter, and every error is `{"error": "…"}`.
struct ServiceResponder: HTTPResponder {
    typealias Context = BasicRequestContext
    let server: SyncLedgerServer
    var routes: [Route] = ServiceResponder.routes

    static let maxWebhookBytes = 1 << 20
    static let maxAPIBodyBytes = 64 << 10
    /// A body that stopped arriving before its end (nothing recorded).
    static var bodyStopped: Reply {
        Reply.error(408, "the body stopped arriving before its end (nothing was recorded; send the request again)")
    }

    /// Every route the server answers. docs/openapi.yaml documents exactly these (the admin
    /// pages under /admin excepted); OpenAPITests fails when the two differ.
    static let routes: [Route] = [
        Route(.get, "/healthz", .open) { _, r in
            try r.query.allow([])
            return .ok(.object(["status": .string("ok")]))
        },
        Route(.get, "/readyz", .open) { s, r in
            try r.query.allow([])
            return s.server.ready.withLockedValue { $0 }
                ? .ok(.object(["status": .string("ready")]))
                : .error(503, "not ready: the views are catching up with the log")
        },
        Route(.get, "/openapi.yaml", .open) { _, r in
            try r.query.allow([])
            return .text(OpenAPIDocument.text, contentType: "application/yaml; charset=utf-8")
        },
        // Its handler checks the token itself: admin, unless the server runs with --metrics-public.
        Route(.get, "/metrics", .open) { s, r in try await s.metrics(r) },
        Route(.get, "/api/v1/appointments", .reader) { s, r in
            try await s.list(r.who, r.query, allowExtra: []) { try Views.appointments($0, $1) }
        },
        Route(.get, "/api/v1/appointments/{id}", .reader) { s, r in
            try r.query.allow([])
            return try await s.appointment(r.who, id: try r.id("id"))
        },
        Route(.get, "/api/v1/appointments/{id}/history", .reader) { s, r in
            try r.query.allow([])
            return try await s.history(r.who, id: try r.id("id"))
        },
        Route(.get, "/api/v1/upcoming", .reader) { s, r in try await s.upcoming(r.who, r.query) },
        Route(.get, "/api/v1/meeting-urls", .reader) { s, r in
            try await s.list(r.who, r.query, allowExtra: []) { try Views.meetingURLs($0, $1) }
        },
        Route(.get, "/api/v1/locations", .reader) { s, r in
            try await s.list(r.who, r.query, allowExtra: []) { try Views.locations($0, $1) }
        },
        Route(.get, "/api/v1/sync-logs", .admin) { s, r in try await s.syncLogs(r.query) },
        Route(.get, "/api/v1/status", .admin) { s, r in
            try r.query.allow([])
            return try await s.status()
        },
        Route(.post, "/api/v1/sync", .admin) { s, r in
            try r.query.allow([])
            return try await s.startSync(r.request, caller: r.who)
        },
        Route(.get, "/api/v1/runs/{run_id}", .admin) { s, r in
            try r.query.allow([])
            return try await s.runStatus(try r.id("run_id"))
        },
        Route(.post, "/webhooks/intakeq/{secret}", .webhookSecret, lastTakesRest: true) { s, r in
            try await s.webhook(r.request)
        },
    ]

    /// The path as logged. The webhook path holds the secret: it never reaches a log line, nor
    /// does the secret in any other path (a proxy that doubles a slash, adds a prefix or changes
    /// the case sent "/webhooks//intakeq/SECRET" to a 404 logged in full: hostile test).
    static func loggable(_ path: String, secret: String?) -> String {
        if path.hasPrefix("/webhooks/intakeq/") { return "/webhooks/intakeq/<secret>" }
        guard let secret, !secret.isEmpty else { return path }
        var out = path
        while let r = out.range(of: secret, options: .caseInsensitive) { out.replaceSubrange(r, with: "<secret>") }
        // Percent-encoded, as a client may send any character of it; each valid escape decoded
        // on its own (one invalid escape made the whole decoding fail, and the secret was
        // logged: cold review).
        if FormData.decode(out, plusIsSpace: false).range(of: secret, options: .caseInsensitive) != nil {
            return "<a path holding the webhook secret>"
        }
        // Part of it (a URL cut short by a paste or a proxy): a segment of 12 characters or more
        // found in the secret, or holding 16 of its characters in a row, is not logged either
        // (hostile test: the first 31 of 41 were).
        let lowerSecret = Array(secret.lowercased())
        let pieces = lowerSecret.count >= 16 ? (0...(lowerSecret.count - 16)).map { String(lowerSecret[$0..<($0 + 16)]) } : []
        let segments = out.split(separator: "/", omittingEmptySubsequences: false).map { segment -> String in
            let plain = FormData.decode(String(segment), plusIsSpace: false).lowercased()
            let part = (plain.count >= 12 && String(lowerSecret).contains(plain)) || pieces.contains { plain.contains($0) }
            return part ? "<part of the secret>" : String(segment)
        }
        return segments.joined(separator: "/")
    }

    /// Waits (up to five seconds) for the server to read a views file that replaced the one it
    /// reads (`forget` and `repair` fold a new file; a rebuild of damaged views too); true when
    /// none is waiting. The old file may hold what `forget` just removed: a read is not answered
    /// from it (hostile test: a forgotten patient was served for two more seconds).
    func viewsSwitched() async -> Bool {
        let handle = server.viewsHandle
        guard handle.switchPending else { return true }
        for _ in 0..<50 {
            if (try? await server.blocking({ handle.refresh(catchUp: false) })) == true || !handle.switchPending { return true }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        return !handle.switchPending
    }

    /// The template of the route `path` matches ("/api/v1/appointments/{id}/history"), the path
    /// itself when a route is that literal path; "(no route, N bytes)" otherwise.
    func routeTemplate(_ path: String) -> String {
        if path.hasPrefix("/webhooks/intakeq/") { return "/webhooks/intakeq/{secret}" }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        if let r = routes.first(where: { $0.match(parts) != nil }) { return r.path }
        return "(no route, \(path.utf8.count) bytes)"
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        let path = request.uri.path
        let readsViews = path.hasPrefix("/api/") || path.hasPrefix("/admin")
        if readsViews, !(await viewsSwitched()) {
            var headers = HTTPFields()
            headers[.contentType] = "application/json; charset=utf-8"
            headers[.retryAfter] = "2"
            let body = Reply.error(503, "the views are being replaced (forget, repair or a rebuild); try again in a moment").body
            return Response(status: .serviceUnavailable, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body.canonicalText + "\n")))
        }
        if AdminPages.handles(path) { return await AdminPages(server: server).respond(to: request) }
        let started = DispatchTime.now().uptimeNanoseconds
        let logged = Self.loggable(path, secret: server.config.webhookSecret)
        var reply: Reply
        var tries = 0
        repeat {
            tries += 1
            let readFrom = server.viewsHandle.currentFile
            do {
                reply = try await route(request, path: path)
            } catch let r as Reply {
                reply = r
            } catch where ViewsDamaged.isDamage(error) || error is ViewsReplaced {
                // Recorded for `status`, /metrics and the alerts; the reader is told what it is.
                // Unless the file read was replaced meanwhile (a rebuild moved it aside): once
                // the server reads the new one, a read (no body to replay) is tried once more.
                let replaced = error is ViewsReplaced
                server.config.logger.error(replaced ? "request failed: the views file was replaced" : "request failed: the views database is damaged",
                                           metadata: ["path": "\(logged)", "error": "\(error)"])
                reply = .error(503, "the views database is damaged; `syncledger rebuild` on the server recreates it from the log")
                let oldFile = replaced ? true : !(await server.noteViewsDamage(error, readFrom: readFrom))
                if oldFile {
                    reply = .error(503, "the views are being rebuilt; try again in a moment")
                    // A rebuilt file waiting to be read: given up to five seconds (not while a
                    // rebuild still folds into it: then the answer is at once).
                    guard request.method == .get, tries == 1 else { break }
                    _ = await viewsSwitched()
                    if server.viewsHandle.currentFile != readFrom { continue }
                }
            } catch {
                server.config.logger.error("request failed", metadata: ["path": "\(logged)", "error": "\(error)"])
                reply = .error(500, "internal error")
            }
            break
        } while true
        let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
        // At info level the route's template, not the values in the path: a client that put a
        // patient's name in a path put it in the log (hostile test). The path at debug level.
        server.config.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "path": "\(routeTemplate(path))", "status": "\(reply.status)",
            "ms": "\(String(format: "%.1f", ms))",
        ])
        server.config.logger.debug("request path", metadata: ["path": "\(logged)"])
        var headers = HTTPFields()
        headers[.contentType] = reply.text?.contentType ?? "application/json; charset=utf-8"
        // A body too large is not read: the connection ends with the answer (it would wait for
        // the body the client still means to send, up to the request deadline, before the next
        // request could be read; `ConnectionCloseHandler` closes it).
        if reply.status == 413 { headers[.connection] = "close" }
        if let allow = reply.allow { headers[.allow] = allow }
        let text = reply.text?.body ?? reply.body.canonicalText + "\n"
        return Response(status: .init(code: reply.status), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: Routing

    func route(_ request: Request, path: String) async throws -> Reply {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        let matches = routes.compactMap { r in r.match(parts).map { (route: r, parameters: $0) } }
        // Every /api/ path wants a token first, even one that does not exist: no route discovery without one.
        var caller = path.hasPrefix("/api/") ? try authenticate(request) : nil
        guard let first = matches.first else { throw Reply.error(404, "no such route: \(Reply.echoed(path))") }
        if first.route.access == .webhookSecret { try checkWebhookSecret(first.parameters["secret"] ?? "") }
        // HEAD is GET without the body (uptime checks and load balancers send it).
        let method = request.method == .head ? .get : request.method
        guard let (route, parameters) = matches.first(where: { $0.route.method == method }) else {
            let allowed = matches.map(\.route.method.rawValue).joined(separator: ", ")
            var reply = Reply.error(405, "method \(request.method.rawValue) not allowed here (use \(allowed))")
            // HEAD is answered wherever GET is.
            var methods: [String] = []
            for m in matches.flatMap({ $0.route.method == .get ? ["GET", "HEAD"] : [$0.route.method.rawValue] }) where !methods.contains(m) { methods.append(m) }
            reply.allow = methods.joined(separator: ", ")
            throw reply
        }
        switch route.access {
        case .open, .webhookSecret: break
        case .reader:
            if caller == nil { caller = try authenticate(request) }
        case .admin:
            if caller == nil { caller = try authenticate(request) }
            try requireAdmin(caller!)
        }
        let query = try QueryParameters(request)
        return try await route.handle(self, RouteRequest(request: request, parameters: parameters, caller: caller, query: query))
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
        switch server.tokens.check(bearer: token) {
        case .known(let caller): return caller
        case .unknown: throw Reply.error(401, "unknown token")
        case .unavailable:
            throw Reply.error(503, "the server cannot check tokens now: its tokens file is missing or does not load (its log says why)")
        }
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
        // As the CLI's --from and --to: a day or a time without an offset is the practice's
        // (a Denver evening is on its Denver day); a time with Z or an offset is that instant.
        let zone = server.zone
        func bound(_ name: String, _ pick: (TimeInput) -> Int64) throws -> String? {
            guard let text = q[name] else { return nil }
            // (`ISOTime.format` clamps to four-digit years: the end of 9999-12-31 in Denver is in 10000.)
            do { return ISOTime.format(millis: pick(try TimeInput.parse(text))) } catch let e as LocalTimeError {
                throw Reply.error(400, "\(name): \(e.message)")
            }
        }
        f.from = try bound("from") { $0.start(in: zone) }
        f.to = try bound("to") { $0.end(in: zone) }
        if let from = f.from, let to = f.to, from > to { throw Reply.error(400, "from: it is after to") }
        f.hideRemoved = !(try q.bool("include_removed") ?? false)
        if let o = f.organizationId, server.config.roster.organization(o) == nil {
            throw Reply.error(400, "org: '\(Reply.echoed(o))' is not an organization of the roster")
        }
        if let p = f.patientId, server.config.roster.patient(p) == nil {
            throw Reply.error(400, "patient: '\(Reply.echoed(p))' is not a patient of the roster")
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
        let zone = server.zone
        let orgs = caller.isAdmin ? nil : caller.organizations
        let rows = try await server.blocking { () -> [JSONValue] in
            var rows = try views.readSync { try query($0, f) }
            guard let orgs else { return rows.map { $0.localized(in: zone).json } }
            let theirs = try views.appointmentIds(inOrganizations: orgs)
            rows = rows.filter { r in r["appointment_id"]?.stringValue.map(theirs.any.contains) ?? false }
            return rows.map { r in
                Self.scoped(r, to: orgs, primaryIsTheirs: r["appointment_id"]?.stringValue.map(theirs.primary.contains) ?? false)
                    .localized(in: zone).json
            }
        }
        return .ok(.array(rows))
    }

    func upcoming(_ caller: Caller, _ q: QueryParameters) async throws -> Reply {
        try q.allow(["days", "org", "patient"])
        // 0 is the rest of today, as `syncledger upcoming --days 0` (it was refused here; hostile test).
        let days = try q.int("days", in: 0...366) ?? 7
        var f = try filter(q.without("days"), extra: [])
        // As the CLI's upcoming: from now to the end of the practice's day `days` days ahead,
        // cancelled and removed appointments left out.
        let now = ISOTime.nowMillis()
        f.from = ISOTime.format(millis: now)
        f.to = ISOTime.format(millis: server.zone.endOfDay(days, after: now))
        f.hideRemoved = true
        return try await list(caller, q, allowExtra: ["days"], filter: f) { db, f in
            try Views.appointments(db, f).filter { !$0.hiddenByDefault }
        }
    }

    func appointment(_ caller: Caller, id: String) async throws -> Reply {
        guard try await mayRead(caller, appointment: id) else { throw Reply.error(404, "no appointment \(id)") }
        let views = server.views
        let rows = try await server.blocking { try views.readSync { try Views.appointments($0, AppointmentFilter(appointmentId: id)) } }
        guard let row = rows.first else { throw Reply.error(404, "no appointment \(id)") }
        guard !caller.isAdmin else { return .ok(row.localized(in: server.zone).json) }
        let theirs = try await server.blocking { try views.appointmentIds(inOrganizations: caller.organizations) }
        return .ok(Self.scoped(row, to: caller.organizations, primaryIsTheirs: theirs.primary.contains(id)).localized(in: server.zone).json)
    }

    func history(_ caller: Caller, id: String) async throws -> Reply {
        guard try await mayRead(caller, appointment: id) else { throw Reply.error(404, "no appointment \(id)") }
        let views = server.views
        let store = server.store
        let orgs = caller.isAdmin ? nil : caller.organizations
        let entries = try await server.blocking { () -> [JSONValue] in
            let reader = try LedgerReader(store: store)
            return Self.scoped(try History.of(id, reader: reader, views: views), forReader: orgs != nil).map(\.json)
        }
        guard !entries.isEmpty else { throw Reply.error(404, "no appointment \(id)") }
        return .ok(.array(entries))
    }

    static let syncTypes: Set<String> = ["automated_daily", "manual_org_bulk", "manual_patient", "webhook"]

    /// What names or describes an appointment's primary client: IntakeQ's fields (the `client`
    /// and `appointment` parts docs/FORMAT.md seals), and the client's billing and answers.
    static let clientFields: Set<String> = [
        "ClientId", "ClientName", "ClientEmail", "ClientPhone", "ClientDateOfBirth", "ClientNote", "ExternalClientId",
        "IntakeId", "CreatedBy", "PractitionerNote", "CustomFields", "CancellationReasonNote", "FullCancellationReason",
        "BookedByClient", "AttendanceConfirmationResponse", "Procedures", "InvoiceId", "InvoiceNumber", "Price",
        "AppointmentPackageId", "AppointmentPackageName", "ReminderType",
    ]

    /// A history as a reader may see it: the session's fields, not the clients' (a version's
    /// primary may have been another organisation's patient, or no roster patient at all, and a
    /// group's additional clients may be; their names are in the admin's history).
    static func scoped(_ entries: [HistoryEntry], forReader: Bool) -> [HistoryEntry] {
        guard forReader else { return entries }
        return entries.map { entry in
            var e = entry
            e.changes.removeAll { c in
                let root = String(c.field.prefix { $0 != "." })
                return root == "AdditionalClients" || clientFields.contains(root)
            }
            return e
        }
    }

    /// A row as a reader may see it. `client_name` and `intakeq_client_id` are the primary
    /// client's (IntakeQ's `ClientId`): shown only when that client is one of the reader's
    /// patients. `patient_id` is the row's patient (the first roster patient of the appointment,
    /// whose organisation `organization_id` is): shown only when that organisation is theirs.
    /// (A group appointment of theirs may have another organisation's patient first.)
    static func scoped(_ row: ViewRow, to orgs: Set<String>, primaryIsTheirs: Bool) -> ViewRow {
        var r = row
        if !primaryIsTheirs {
            for c in ["client_name", "intakeq_client_id"] where r[c] != nil { r[c] = .null }
        }
        if !(row["organization_id"]?.stringValue.map(orgs.contains) ?? false), r["patient_id"] != nil { r["patient_id"] = .null }
        return r
    }

    func syncLogs(_ q: QueryParameters) async throws -> Reply {
        try q.allow(["limit", "type"])
        let limit = try q.int("limit", in: 1...10_000)
        let type = q["type"]
        if let type, !Self.syncTypes.contains(type) {
            throw Reply.error(400, "type: '\(Reply.echoed(type))' is not one of automated_daily, manual_org_bulk, manual_patient, webhook")
        }
        let views = server.views
        let rows = try await server.blocking { try views.readSync { try Views.syncLogs($0, limit: limit, type: type) }.map(\.json) }
        return .ok(.array(rows))
    }

    /// `status --json` (StatusReport, with the server's alert rules), plus what only the server
    /// knows: the webhook inbox's oldest id, the API budget, the webhook counters, the run queue.
    func status() async throws -> Reply {
        let views = server.views
        let store = server.store
        let rules = server.config.alertRules
        let since = server.startedAt
        let now = server.config.alertClock()
        let c = server.coordinator
        let inbox = (depth: c.inbox.depth, oldestReceivedAt: c.inbox.oldestReceivedAt)
        let queued = c.state.withLockedValue { s in (s.queue.count, s.running) }
        let report = try await server.blocking {
            try StatusReport.read(store: store, reader: try LedgerReader(store: store), views: views,
                                  maxAgeHours: rules.dailyStaleHours, rules: rules, watchingSince: since, inbox: inbox,
                                  runningHere: queued.1 != nil, catchingUp: !server.ready.withLockedValue { $0 }, now: now)
        }
        let (remaining, resets) = await c.budget()
        var budget: [String: JSONValue] = ["daily_budget": .number(Double(server.config.policy.dailyBudget))]
        budget["remaining"] = remaining == Int.max ? .null : .number(Double(remaining))
        budget["next_call_frees_at"] = resets.map { .string(ISOTime.format($0)) } ?? .null
        var queue: [String: JSONValue] = ["queued": .number(Double(queued.0))]
        queue["running"] = queued.1.map(JSONValue.string) ?? .null
        var out = report.json
        out["budget"] = .object(budget)
        out["webhooks"] = c.counters.json
        out["queue"] = .object(queue)
        return .ok(.object(out))
    }

    // MARK: Runs

    func startSync(_ request: Request, caller: Caller) async throws -> Reply {
        // A declared length over the limit is refused at once, as the webhook's is: waiting for
        // the body held such a client for the idle timeout, unanswered (hostile test).
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > Self.maxAPIBodyBytes {
            throw Reply.error(413, "the body is larger than \(Self.maxAPIBodyBytes) bytes")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxAPIBodyBytes)
        } catch is NIOTooManyBytesError {
            throw Reply.error(413, "the body is larger than \(Self.maxAPIBodyBytes) bytes")
        } catch {
            throw Self.bodyStopped
        }
        let value: JSONValue
        do {
            value = try FastJSON.parse(Array(buffer: body))
        } catch {
            throw Reply.error(400, "the body is not JSON: \(Reply.echoed("\(error)"))")
        }
        guard case .object(let o) = value else { throw Reply.error(400, "the body must be {\"scope\": …}") }
        if let extra = o.keys.first(where: { $0 != "scope" }) { throw Reply.error(400, "\(Reply.echoed(extra)): unknown field (the body is {\"scope\": …})") }
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
            throw Reply.error(400, "scope: organization '\(Reply.echoed(id))' is not in the roster")
        case .patient(let id) where server.config.roster.patient(id) == nil:
            throw Reply.error(400, "scope: patient '\(Reply.echoed(id))' is not in the roster")
        default: break
        }
        if let why = server.nothingToSync(scope) { throw Reply.error(400, "scope: " + why) }
        // Off the request's thread: the queue file is written and fsynced before the 202.
        let c = server.coordinator, by = "api:" + caller.name
        let record: RunRecord, existing: Bool
        do {
            (record, existing) = try await server.blocking { try c.enqueue(scope, triggeredBy: by) }
        } catch is Coordinator.QueueNotWritten {
            throw Reply.error(503, "the run could not be queued: the server cannot write its queue file (its log says why); retry later")
        }
        var body2: [String: JSONValue] = ["run_id": .string(record.runId), "status": .string(record.status)]
        if existing { body2["note"] = .string("a run of this scope was already queued") }
        return .ok(.object(body2), status: 202)
    }

    func runStatus(_ id: String) async throws -> Reply {
        let remembered = server.coordinator.run(id)
        if let r = remembered, !r.stoppedUnfinished { return .ok(r.json) }
        // A run restored as failed after a restart: its sync_logs row knows better once the
        // next run closed it out (or it completed just before the server stopped).
        // Not started by this process (or long ago): the sync_logs row, when there is one.
        let views = server.views
        let row = try await server.blocking { try views.readSync { try Views.syncLog($0, id: id) } }
        if let r = remembered, row == nil || row?["status"]?.stringValue == "in_progress" { return .ok(r.json) }
        guard let row else { throw Reply.error(404, "no run \(id)") }
        return .ok(.object(["run_id": .string(id), "status": row["status"] ?? .null, "sync_log": row.json]))
    }

    // MARK: Webhooks

    /// A wrong or missing secret is a 404 (counted), before anything else is looked at.
    func checkWebhookSecret(_ secret: String) throws {
        guard let expected = server.config.webhookSecret,
              constantTimeEquals(Array(secret.utf8), Array(expected.utf8))
        else {
            server.coordinator.count { $0.badSecret += 1 }
            throw Reply.error(404, "no such route")
        }
    }

    func webhook(_ request: Request) async throws -> Reply {
        let c = server.coordinator
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > Self.maxWebhookBytes {
            c.count { $0.tooLarge += 1 }
            throw Reply.error(413, "the body is larger than 1 MiB")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: Self.maxWebhookBytes)
        } catch is NIOTooManyBytesError {
            c.count { $0.tooLarge += 1 }
            throw Reply.error(413, "the body is larger than 1 MiB")
        } catch {
            // The client stopped sending (closed, or idle past `--idle-timeout`): it was
            // logged as 413, too large, which it was not.
            throw Self.bodyStopped
        }
        let bytes = Array(buffer: buffer)
        let hint: WebhookHint
        do {
            hint = try WebhookHint.parse(bytes)
        } catch let r as Reply {
            c.count { $0.malformed += 1 }
            throw r
        }
        // Minimum necessary: an appointment of nobody in the roster leaves no trace. One the
        // views hold is looked at again whoever the body names: a group appointment whose
        // primary client is not ours, sent without its AdditionalClients, was ignored until the
        // nightly run (hostile test). The run itself keeps only the roster's people. One held
        // as removed too: it may be back in scope (our patient added to it again, or back in
        // the roster), and an ignored webhook is not sent again; that costs a call of the daily
        // budget when it is not (a second cold review weighed this against the first's).
        if hint.clientIds.isDisjoint(with: c.rosterClients) {
            let views = server.views
            let id = hint.appointmentId
            let recorded: Bool?
            do {
                recorded = try await server.blocking { try views.readSync { db in
                    try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM appointments WHERE appointment_id = ?)", arguments: [id])
                } }
            } catch where !(ViewsDamaged.isDamage(error) || error is ViewsReplaced) {
                // Not "ignored", which would drop it for good: 503, which says to send it again
                // (IntakeQ's retries are not documented). The views' damage is noted by the
                // request's handler, as for any read.
                throw Reply.error(503, "the views could not be read to check the appointment; retry later")
            }
            guard recorded == true else {
                c.count { $0.notInRoster += 1 }
                return .ok(.object(["status": .string("ignored")]))
            }
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
            throw Reply.error(400, "the body is not JSON: \(Reply.echoed("\(error)"))")
        }
        guard case .object = value else { throw Reply.error(400, "the body must be a JSON object with Appointment") }
        guard case .object(let appt)? = value["Appointment"] else { throw Reply.error(400, "Appointment: missing or not an object") }
        guard let id = idText(appt["Id"]) else { throw Reply.error(400, "Appointment.Id: missing, or not a number or a string of letters, digits, - and _") }
        var clients = Set<String>()
        if let c = idText(appt["ClientId"]) { clients.insert(c) }
        // Some senders put the client at the top level of the body (INTAKEQ-API.md §4.2).
        if let c = idText(value["ClientId"]) { clients.insert(c) }
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

    /// An id as a number or a string; only characters that are safe in a path and a log line
    /// (docs/openapi.yaml: an integer, or a string matching ^[A-Za-z0-9_-]{1,128}$).
    static func idText(_ v: JSONValue?) -> String? {
        let text: String
        switch v {
        case .number(let d)? where d.rounded() == d && abs(d) < 9e15: text = String(Int64(d))
        case .string(let s)?: text = s
        default: return nil
        }
        guard !text.isEmpty, text.utf8.count <= 128, text.utf8.allSatisfy(isIdByte) else { return nil }
        return text
    }

    /// A letter, digit, `-` or `_` (ASCII).
    static func isIdByte(_ b: UInt8) -> Bool {
        (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || b == 0x2D || b == 0x5F
    }
}

/// The query string, percent-decoded; a parameter not allowed on a route is a 400 naming it.
struct QueryParameters {
    var values: [String: String] = [:]

    /// A parameter given twice is a 400 (which one would count is anybody's guess).
    init(_ request: Request) throws {
        for (k, v) in request.uri.queryParameters {
            // `?&` and `?a=1&&b=2` hold an empty pair: nothing was asked (it was refused as
            // ": unknown parameter", with no name; hostile test).
            if k.isEmpty && v.isEmpty { continue }
            guard !k.isEmpty else { throw Reply.error(400, "'=\(Reply.echoed(String(v)))': a value without a parameter name") }
            // Names are percent-decoded as values are (`%6frg=` is `org=`; hostile test).
            guard let key = String(k).removingPercentEncoding else {
                throw Reply.error(400, "\(Reply.echoed(String(k))): a parameter name whose % escapes do not decode to UTF-8 text")
            }
            guard values[key] == nil else { throw Reply.error(400, "\(Reply.echoed(key)): given more than once") }
            values[key] = String(v)
        }
    }

    private init(values: [String: String]) { self.values = values }

    subscript(_ key: String) -> String? { values[key].flatMap { $0.isEmpty ? nil : $0 } }

    func without(_ key: String) -> QueryParameters { var v = values; v[key] = nil; return QueryParameters(values: v) }

    func allow(_ names: Set<String>) throws {
        if let bad = values.keys.sorted().first(where: { !names.contains($0) }) {
            throw Reply.error(400, "\(Reply.echoed(bad)): unknown parameter" + (names.isEmpty ? " (this route takes none)" : " (allowed: \(names.sorted().joined(separator: ", ")))"))
        }
        if let empty = values.keys.sorted().first(where: { values[$0]!.isEmpty }) {
            throw Reply.error(400, "\(Reply.echoed(empty)): empty value (leave the parameter out instead)")
        }
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = self[key] else { return nil }
        guard let n = Int(text), range.contains(n) else {
            throw Reply.error(400, "\(key): '\(Reply.echoed(text))' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }

    func bool(_ key: String) throws -> Bool? {
        guard let text = self[key] else { return nil }
        switch text.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw Reply.error(400, "\(key): '\(Reply.echoed(text))' is not true or false (1/0 and yes/no are taken too)")
        }
    }
}
