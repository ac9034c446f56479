import Domain
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mustache
import NIOCore
import Ledger
import Projections
import Sync

/// The admin pages' state, made once per server: the session signer, logouts, the practice's
/// zone and the compiled templates.
final class AdminSite: Sendable {
    let codec: AdminSessionCodec
    let revoked = RevokedSessions()
    let zone: ZoneRules
    let library: MustacheLibrary

    /// `zone`: the practice's, as the server loaded it (the API's and the pages' days are one).
    init(zone: ZoneRules, statePath: String) throws {
        codec = AdminSessionCodec(secret: try AdminSecret.loadOrCreate(statePath: statePath))
        self.zone = zone
        library = try AdminTemplates.library()
    }
}

/// `/admin…`: server-rendered pages behind a signed session cookie. Every GET but the login
/// page and the stylesheet needs a session (else a redirect to the login page); every POST needs
/// a session's CSRF token (else 403), and a cross-site `Origin` is refused.
struct AdminPages {
    let server: SyncLedgerServer
    var site: AdminSite { server.admin }
    var codec: AdminSessionCodec { site.codec }
    static let maxFormBytes = 16 << 10

    static func handles(_ path: String) -> Bool { path == "/admin" || path.hasPrefix("/admin/") }

    func respond(to request: Request) async -> Response {
        let started = DispatchTime.now().uptimeNanoseconds
        // As every request's path: never the webhook secret (cold review).
        let logged = ServiceResponder.loggable(request.uri.path, secret: server.config.webhookSecret)
        let page: Page
        let readFrom = server.viewsHandle.currentFile
        do {
            page = try await route(request)
        } catch let p as Page {
            page = p
        } catch is ViewsReplaced {
            page = message(503, "The views are being rebuilt", "A rebuild replaced the views file; try again in a moment.", session: nil)
        } catch where ViewsDamaged.isDamage(error) {
            server.config.logger.error("admin page failed: the views database is damaged", metadata: ["path": "\(logged)", "error": "\(error)"])
            await server.noteViewsDamage(error, readFrom: readFrom)
            page = message(503, "The views database is damaged",
                           "Run `syncledger rebuild` on the server; it recreates the views from the log, and this server reads them within a second.", session: nil)
        } catch {
            server.config.logger.error("admin page failed", metadata: ["path": "\(logged)", "error": "\(error)"])
            page = message(500, "Something went wrong", "The page could not be made; the server's log has the details.", session: nil)
        }
        let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
        server.config.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "path": "\(logged)", "status": "\(page.status)",
            "ms": "\(String(format: "%.1f", ms))",
        ])
        return page.response
    }

    func route(_ request: Request) async throws -> Page {
        let path = request.uri.path
        let method = request.method
        if path == "/admin/admin.css" {
            try only(.get, method, path)
            return Page(status: 200, body: AdminTemplates.css, contentType: "text/css; charset=utf-8")
        }
        let cookies = parseCookies(request.headers[.cookie])
        let now = ISOTime.nowMillis()
        let session = cookies[AdminSessionCodec.cookieName].flatMap { codec.verify($0, now: now) }
            .flatMap { s in
                site.revoked.isRevoked(s) || !server.tokens.isAdmin(named: s.name, matching: { codec.tokenTag(sha256: $0) == s.tokenTag }) ? nil : s
            }
        if path == "/admin/login" {
            if method == .post { return try await login(request, cookies: cookies, now: now) }
            try only(.get, method, path)
            if session != nil { return .redirect("/admin") }
            return loginPage(status: 200, error: nil, secure: isSecure(request))
        }
        guard let session else {
            if method == .get || method == .head { return .redirect("/admin/login") }
            throw message(403, "Forbidden", "Sign in first: this form needs a session.", session: nil)
        }
        var form: [String: String] = [:]
        if method == .post {
            try checkOrigin(request)
            form = try await readForm(request)
            guard codec.checkCSRF(form["csrf"], session: session) else {
                throw message(403, "Forbidden", "The form's CSRF token is missing or wrong. Reload the page and try again.", session: session)
            }
        }
        let query = FormData.parse(request.uri.query ?? "")
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst(2).map {
            String($0).removingPercentEncoding ?? String($0)
        }
        switch parts {
        case []:
            try only(.get, method, path)
            return try await dashboard(session, query: query)
        case ["runs"]:
            try only(.get, method, path)
            return try await runs(session, query: query)
        case ["runs.csv"]:
            try only(.get, method, path)
            return try await runsCSV(session, query: query)
        case let p where p.count == 2 && p[0] == "runs" && !p[1].isEmpty:
            try only(.get, method, path)
            return try await run(session, id: p[1], query: query)
        case ["appointments"]:
            try only(.get, method, path)
            return try await appointments(session, query: query)
        case let p where p.count == 2 && p[0] == "appointments" && !p[1].isEmpty:
            try only(.get, method, path)
            return try await appointment(session, id: p[1], query: query)
        case ["refresh"]:
            try only(.post, method, path)
            return try await refresh(session, form: form)
        case ["logout"]:
            try only(.post, method, path)
            site.revoked.revoke(session, now: now)
            return .redirect("/admin/login", cookies: [AdminSessionCodec.setCookie(AdminSessionCodec.cookieName, "", maxAge: 0, secure: isSecure(request))])
        default:
            throw message(404, "Not found", "There is no admin page at \(path).", session: session)
        }
    }

    func only(_ expected: HTTPRequest.Method, _ method: HTTPRequest.Method, _ path: String) throws {
        guard method == expected || (expected == .get && method == .head) else {
            throw Page(status: 405, body: "method \(method.rawValue) not allowed on \(path)\n", contentType: "text/plain; charset=utf-8",
                       headers: [(.allow, expected.rawValue)])
        }
    }

    func isSecure(_ request: Request) -> Bool {
        request.headers[HTTPField.Name("X-Forwarded-Proto")!]?.lowercased() == "https"
    }

    /// A browser's `Origin` on a POST must be this server: its `Host`, or the `X-Forwarded-Host` a
    /// reverse proxy passes (SameSite=Strict already keeps the cookie off cross-site requests and
    /// the CSRF token is checked anyway; this refuses them even where those would not).
    func checkOrigin(_ request: Request) throws {
        guard let origin = request.headers[HTTPField.Name("Origin")!], origin != "null" else { return }
        let hosts = [request.head.authority, request.headers[HTTPField.Name("X-Forwarded-Host")!]].compactMap { $0 }
        guard hosts.contains(where: { origin == "http://" + $0 || origin == "https://" + $0 }) else {
            throw message(403, "Forbidden", "This form was posted from another site.", session: nil)
        }
    }

    func readForm(_ request: Request) async throws -> [String: String] {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxFormBytes)
        } catch {
            throw message(413, "Too large", "The form is larger than \(Self.maxFormBytes) bytes.", session: nil)
        }
        return FormData.parse(String(buffer: body))
    }

    // MARK: Login

    func loginPage(status: Int, error: String?, secure: Bool) -> Page {
        let nonce = AdminSessionCodec.randomNonce()
        var ctx = base("Sign in", session: nil)
        ctx["loginCSRF"] = codec.loginToken(nonce: nonce)
        if let error { ctx["error"] = error }
        return Page(status: status, body: render("login", ctx),
                    headers: [(.setCookie, AdminSessionCodec.setCookie(AdminSessionCodec.loginCookieName, nonce, maxAge: 3600, secure: secure))])
    }

    func login(_ request: Request, cookies: [String: String], now: Int64) async throws -> Page {
        try checkOrigin(request)
        let form = try await readForm(request)
        let secure = isSecure(request)
        guard codec.checkLoginCSRF(form["csrf"], nonce: cookies[AdminSessionCodec.loginCookieName]) else {
            return loginPage(status: 403, error: "The sign-in form expired or its CSRF token is missing. Try again.", secure: secure)
        }
        let token = (form["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let check = token.isEmpty ? .unknown : server.tokens.check(bearer: token)
        if case .unavailable = check {
            return loginPage(status: 503, error: "The server cannot check tokens now: its tokens file is missing or does not load. Its log says why.", secure: secure)
        }
        guard case .known(let caller) = check else {
            server.config.logger.warning("admin sign-in refused: unknown token")
            return loginPage(status: 401, error: "Unknown token.", secure: secure)
        }
        guard caller.isAdmin else {
            server.config.logger.warning("admin sign-in refused: reader token", metadata: ["token_name": "\(caller.name)"])
            return loginPage(status: 403, error: "This is a reader token; the admin pages need an admin token.", secure: secure)
        }
        let (_, cookie) = codec.issue(name: caller.name, tokenSHA256: caller.tokenSHA256, now: now)
        server.config.logger.info("admin signed in", metadata: ["token_name": "\(caller.name)"])
        return .redirect("/admin", cookies: [
            AdminSessionCodec.setCookie(AdminSessionCodec.cookieName, cookie, maxAge: codec.lifetime / 1000, secure: secure),
            AdminSessionCodec.setCookie(AdminSessionCodec.loginCookieName, "", maxAge: 0, secure: secure),
        ])
    }

    // MARK: Refresh

    func refresh(_ session: AdminSession, form: [String: String]) async throws -> Page {
        let roster = server.currentRoster
        let scope: RunScope
        switch form["scope"] {
        case "all": scope = .all
        case "org":
            guard let o = form["org"], roster.organization(o) != nil else {
                throw message(400, "Bad request", "org: not an organisation of the roster.", session: session)
            }
            scope = .org(o)
        case "patient":
            guard let p = form["patient"], roster.patient(p) != nil else {
                throw message(400, "Bad request", "patient: not a patient of the roster.", session: session)
            }
            scope = .patient(p)
        default:
            throw message(400, "Bad request", "scope: must be all, org or patient.", session: session)
        }
        if let why = server.nothingToSync(scope) {
            throw message(400, "Bad request", why.prefix(1).uppercased() + why.dropFirst() + ".", session: session)
        }
        let c = server.coordinator, by = "admin:" + session.name
        let record: RunRecord
        do {
            (record, _) = try await server.blocking { try c.enqueue(scope, triggeredBy: by) }
        } catch is Coordinator.QueueNotWritten {
            throw message(503, "Not queued", "The run could not be queued: the server cannot write its queue file (its log says why). Try again later.", session: session)
        }
        return .redirect(Self.safeBack(form["back"]) + "?queued=" + FormData.encode(record.runId))
    }

    /// Where a form returns to: an admin path of this server only (never another site).
    static func safeBack(_ back: String?) -> String {
        guard let b = back, b.hasPrefix("/admin"), !b.contains("//"), !b.contains("\\"), !b.contains("?"),
              b.count <= 300, b.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else { return "/admin/runs" }
        return b
    }

    // MARK: Rendering

    func render(_ template: String, _ ctx: [String: Any]) -> String {
        site.library.render(ctx, withTemplate: template) ?? ""
    }

    /// What every page's head, refresh buttons and foot need.
    func base(_ title: String, session: AdminSession?, back: String = "/admin/runs", patient: String? = nil) -> [String: Any] {
        var ctx: [String: Any] = ["title": title, "zone": site.zone.identifier, "back": back]
        if let session {
            ctx["user"] = session.name
            ctx["csrf"] = codec.csrfToken(session)
            let roster = server.currentRoster
            ctx["organizations"] = roster.organizations.map { ["id": $0.id, "name": $0.name ?? $0.id] as [String: Any] }
            ctx["patients"] = roster.organizations.flatMap { o in
                o.patients.map { ["id": $0.id, "name": $0.name ?? $0.id, "organization": o.name ?? o.id, "selected": $0.id == patient] as [String: Any] }
            }
        }
        return ctx
    }

    func message(_ status: Int, _ heading: String, _ text: String, session: AdminSession?, back: String = "/admin") -> Page {
        var ctx = base(heading, session: session)
        ctx["heading"] = heading
        ctx["text"] = text
        ctx["back"] = back
        return Page(status: status, body: render("message", ctx))
    }

    /// The flash line after a refresh button: the queued run and its state now.
    func flash(_ query: [String: String]) -> String? {
        guard let id = query["queued"], !id.isEmpty else { return nil }
        guard let r = server.coordinator.run(id) else { return "Run \(id) was queued." }
        return "Run \(r.runId) (\(scopeText(r.scope))) queued by you: \(r.status)."
    }

    func scopeText(_ s: RunScope) -> String {
        let roster = server.currentRoster
        switch s {
        case .all: return "all"
        case .org(let o): return "organisation " + (roster.organization(o)?.name ?? o)
        case .patient(let p): return "patient " + (roster.patient(p)?.0.name ?? p)
        }
    }

    func local(_ iso: String?) -> String {
        guard let iso, let ms = ISOTime.parse(iso) else { return "" }
        return LocalFormat.table(ms, site.zone)
    }
}
