import AsyncHTTPClient
import Crypto
import Domain
import Foundation
import JSONCore
import Ledger
import NIOCore
import NIOHTTP1
import Projections
@testable import Service
import Sync
import Testing
import TestSupport

/// The admin pages without a browser: cookie signing and expiry, CSRF refusal, escaping.
@Suite struct AdminSessionTests {
    let secret = Array("0123456789abcdef0123456789abcdef".utf8)
    static let opsHash = tokenHash("slt_ops")

    @Test func aSignedCookieVerifiesUntilItExpires() {
        let codec = AdminSessionCodec(secret: secret, lifetime: 60_000)
        let (session, cookie) = codec.issue(name: "ops", tokenSHA256: Self.opsHash, now: 1_000_000)
        #expect(codec.verify(cookie, now: 1_000_000) == session)
        #expect(codec.verify(cookie, now: 1_059_999)?.name == "ops")
        #expect(codec.verify(cookie, now: 1_060_000) == nil, "a cookie is refused at its expiry")
        #expect(codec.verify(cookie, now: 9_000_000) == nil)
    }

    @Test func anAlteredOrForeignCookieIsRefused() {
        let codec = AdminSessionCodec(secret: secret)
        let (session, cookie) = codec.issue(name: "ops", tokenSHA256: Self.opsHash, now: 0)
        var parts = cookie.split(separator: ".").map(String.init)
        #expect(parts.count == 6)
        #expect(session.tokenTag == codec.tokenTag(sha256: Self.opsHash) && !cookie.contains(Self.opsHash))
        // A later expiry, another name, another token's tag, another nonce, a flipped MAC digit:
        // each breaks the MAC.
        var later = parts
        later[3] = String(session.expiresAt + 86_400_000)
        #expect(codec.verify(later.joined(separator: "."), now: 0) == nil)
        var other = parts
        other[1] = base64URL(Array("root".utf8))
        #expect(codec.verify(other.joined(separator: "."), now: 0) == nil)
        var tag = parts
        tag[2] = codec.tokenTag(sha256: tokenHash("slt_another"))
        #expect(tag[2] != parts[2] && codec.verify(tag.joined(separator: "."), now: 0) == nil)
        var nonce = parts
        nonce[4] = String(repeating: "a", count: 32)
        #expect(codec.verify(nonce.joined(separator: "."), now: 0) == nil)
        let last = parts[5].last == "0" ? "1" : "0"
        parts[5] = String(parts[5].dropLast()) + last
        #expect(codec.verify(parts.joined(separator: "."), now: 0) == nil)
        // Another server's secret, and garbage.
        let foreign = AdminSessionCodec(secret: Array("another-secret-another-secret-xx".utf8))
        #expect(foreign.verify(cookie, now: 0) == nil)
        // A cookie of the old form (no token tag), as a server before stop 56 issued it, is refused.
        let name = base64URL(Array("ops".utf8)), n = AdminSessionCodec.randomNonce()
        let v1 = "v1.\(name).\(session.expiresAt).\(n).\(hexDigits(HMAC<SHA256>.authenticationCode(for: Array("v1|\(name)|\(session.expiresAt)|\(n)".utf8), using: SymmetricKey(data: secret))))"
        #expect(codec.verify(v1, now: 0) == nil)
        for junk in ["", "v1", "v1....", "v2.b3Bz.1.00000000000000000000000000000000." + String(repeating: "0", count: 64), cookie + "."] {
            #expect(codec.verify(junk, now: 0) == nil, "\(junk)")
        }
    }

    @Test func csrfTokensAreBoundToTheirSession() {
        let codec = AdminSessionCodec(secret: secret)
        let (a, _) = codec.issue(name: "ops", tokenSHA256: Self.opsHash, now: 0)
        let (b, _) = codec.issue(name: "ops", tokenSHA256: Self.opsHash, now: 0)
        let token = codec.csrfToken(a)
        #expect(codec.checkCSRF(token, session: a))
        #expect(!codec.checkCSRF(token, session: b), "another session's token")
        #expect(!codec.checkCSRF(nil, session: a))
        #expect(!codec.checkCSRF("", session: a))
        #expect(!codec.checkCSRF(String(token.dropLast()), session: a))
        let nonce = AdminSessionCodec.randomNonce()
        #expect(codec.checkLoginCSRF(codec.loginToken(nonce: nonce), nonce: nonce))
        #expect(!codec.checkLoginCSRF(codec.loginToken(nonce: nonce), nonce: AdminSessionCodec.randomNonce()))
        #expect(!codec.checkLoginCSRF(codec.loginToken(nonce: nonce), nonce: nil))
        #expect(!codec.checkLoginCSRF(token, nonce: nonce), "a session token is not a login token")
    }

    @Test func theSecretIsMadeOnceWithMode0600() throws {
        let dir = TempDir("admin-secret")
        let state = dir.sub("state")
        let first = try AdminSecret.loadOrCreate(statePath: state)
        let again = try AdminSecret.loadOrCreate(statePath: state)
        #expect(first.count == 32 && first == again)
        let attrs = try FileManager.default.attributesOfItem(atPath: state + "/admin-session.key")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
    }

    @Test func csvFieldsAreQuotedAndFormulasDefused() {
        #expect(CSV.line(["a", "b,c", "say \"hi\"", "x\ny"]) == "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\r\n")
        #expect(CSV.field("=HYPERLINK(\"x\")") == "\"'=HYPERLINK(\"\"x\"\")\"")
        #expect(CSV.field("@SUM(A1)") == "'@SUM(A1)")
        #expect(CSV.field("-12") == "-12", "a number stays a number")
        #expect(FormData.parse("a=1+2&b=%3Cx%3E&c&=skip&a=3") == ["a": "3", "b": "<x>", "c": ""])
        #expect(AdminPages.safeBack("//evil.example/admin") == "/admin/runs")
        #expect(AdminPages.safeBack("https://evil.example") == "/admin/runs")
        #expect(AdminPages.safeBack("/admin/appointments/a-1") == "/admin/appointments/a-1")
    }

    @Test func theChartCountsRunsPerLocalDay() throws {
        let zone = try PracticeZone.load("America/Denver")
        let now = ISOTime.parse("2026-11-30T18:00:00Z")!
        let runs: [(startedAt: String, status: String)] = [
            ("2026-11-30T06:59:00Z", "completed"),  // Nov 29, 23:59 local
            ("2026-11-30T07:00:00Z", "failed"),  // Nov 30, 00:00 local
            ("2026-11-30T17:00:00Z", "completed"),
            ("2026-10-01T12:00:00Z", "failed"),  // older than 30 days: not drawn
        ]
        let days = RunChart.bucket(runs, now: now, zone: zone)
        #expect(days.count == 30)
        #expect(days.last?.date == CivilDate(year: 2026, month: 11, day: 30))
        #expect(days.last?.runs == 2 && days.last?.bad == 1)
        #expect(days[28].runs == 1 && days[28].bad == 0)
        #expect(days.reduce(0) { $0 + $1.runs } == 3)
        let chart = RunChart.render(days)
        #expect((chart["bars"] as? [[String: Any]])?.count == 30)
    }
}

/// A response with its headers (redirects not followed).
struct AdminAnswer {
    var status: Int
    var headers: HTTPHeaders
    var text: String
    var cookies: [String: String] {
        var out: [String: String] = [:]
        for v in headers["Set-Cookie"] {
            let first = v.split(separator: ";")[0].split(separator: "=", maxSplits: 1)
            out[String(first[0])] = first.count > 1 ? String(first[1]) : ""
        }
        return out
    }
    func hidden(_ name: String) -> String? {
        guard let r = text.range(of: "name=\"\(name)\" value=\"") else { return nil }
        return String(text[r.upperBound...].prefix { $0 != "\"" })
    }
}

/// A browser-like client of the admin pages: keeps cookies, never follows redirects.
final class AdminClient: @unchecked Sendable {
    let base: String
    let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))
    var jar: [String: String] = [:]

    init(base: String) { self.base = base }

    func request(_ method: HTTPMethod, _ path: String, form: [String: String]? = nil, headers: [(String, String)] = []) async throws -> AdminAnswer {
        var r = HTTPClientRequest(url: base + path)
        r.method = method
        if !jar.isEmpty { r.headers.add(name: "Cookie", value: jar.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")) }
        for (k, v) in headers { r.headers.add(name: k, value: v) }
        if let form {
            r.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            r.body = .bytes(ByteBuffer(string: form.map { "\(FormData.encode($0.key))=\(FormData.encode($0.value))" }.joined(separator: "&")))
        }
        let response = try await client.execute(r, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 32 << 20)
        let answer = AdminAnswer(status: Int(response.status.code), headers: response.headers, text: String(buffer: body))
        for (k, v) in answer.cookies { jar[k] = v.isEmpty ? nil : v }
        return answer
    }

    func login(_ token: String) async throws -> AdminAnswer {
        let page = try await request(.GET, "/admin/login")
        return try await request(.POST, "/admin/login", form: ["token": token, "csrf": page.hidden("csrf") ?? ""])
    }

    func shutdown() async { try? await client.shutdown() }
}

@Suite(.serialized) struct AdminPageTests {
    static let scriptName = "<script>alert(1)</script>"

    /// The fixture roster with one patient named like a script and an organisation with quotes.
    static var hostileRoster: Roster {
        var r = Fixtures.roster
        r.organizations[0].patients[0].name = scriptName
        r.organizations[1].name = "Hope \"&\" <b>Home</b>"
        return r
    }

    @Test func loginCookiesAndCSRF() async throws {
        let rig = try await ServerRig.start { $0.roster = AdminPageTests.hostileRoster }
        let web = AdminClient(base: rig.base)
        // Anonymous: GETs go to the login page, POSTs are refused.
        let anon = try await web.request(.GET, "/admin/runs")
        #expect(anon.status == 303 && anon.headers.first(name: "Location") == "/admin/login")
        #expect(try await web.request(.POST, "/admin/refresh", form: ["scope": "all"]).status == 403)
        // A wrong token, a reader token, and a login without its CSRF token are refused.
        let wrong = try await web.login("slt_" + String(repeating: "0", count: 64))
        #expect(wrong.status == 401 && wrong.text.contains("Unknown token") && web.jar[AdminSessionCodec.cookieName] == nil)
        let reader = try await web.login(rig.tokens.reader)
        #expect(reader.status == 403 && web.jar[AdminSessionCodec.cookieName] == nil)
        _ = try await web.request(.GET, "/admin/login")
        let noCSRF = try await web.request(.POST, "/admin/login", form: ["token": rig.tokens.admin])
        #expect(noCSRF.status == 403 && web.jar[AdminSessionCodec.cookieName] == nil)
        // The admin token: a signed, HttpOnly, SameSite=Strict cookie.
        let ok = try await web.login(rig.tokens.admin)
        #expect(ok.status == 303 && ok.headers.first(name: "Location") == "/admin")
        let setCookie = ok.headers["Set-Cookie"].first { $0.hasPrefix(AdminSessionCodec.cookieName + "=") } ?? ""
        #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict") && setCookie.contains("Path=/admin"))
        #expect(!setCookie.contains(rig.tokens.admin), "the token never goes into the cookie")
        let health = try await web.request(.GET, "/admin")
        #expect(health.status == 200 && health.text.contains("<h1>Health</h1>") && health.text.contains("id=\"alerts\""))
        #expect(health.headers.first(name: "Content-Security-Policy")?.contains("default-src 'none'") == true)
        let csrf = try #require(health.hidden("csrf"))
        // POSTs without the CSRF token, with a wrong one, or from another origin: 403, nothing queued.
        #expect(try await web.request(.POST, "/admin/refresh", form: ["scope": "all"]).status == 403)
        #expect(try await web.request(.POST, "/admin/refresh", form: ["scope": "all", "csrf": String(repeating: "0", count: 64)]).status == 403)
        #expect(try await web.request(.POST, "/admin/refresh", form: ["scope": "all", "csrf": csrf],
                                      headers: [("Origin", "https://evil.example")]).status == 403)
        let status = try await rig.admin("/api/v1/status")
        #expect(status["queue"]?["queued"]?.doubleValue == 0 && status["queue"]?["running"] == .null)
        #expect(try await rig.admin("/api/v1/sync-logs").array.isEmpty, "a refused POST queued a run")
        // With it: 303 to the runs page naming the queued run.
        let queued = try await web.request(.POST, "/admin/refresh", form: ["scope": "org", "org": "fsh", "csrf": csrf, "back": "/admin/runs"])
        #expect(queued.status == 303)
        let location = queued.headers.first(name: "Location") ?? ""
        #expect(location.hasPrefix("/admin/runs?queued="))
        let runId = String(location.dropFirst("/admin/runs?queued=".count))
        #expect(rig.server.coordinator.run(runId)?.scope == .org("fsh"))
        #expect(await rig.eventually(timeout: 60) { rig.server.coordinator.run(runId)?.status == "completed" })
        // One patient; an organisation or patient outside the roster is a 400, nothing queued.
        let patient = try await web.request(.POST, "/admin/refresh", form: ["scope": "patient", "patient": "p-004", "csrf": csrf, "back": "/admin"])
        let patientRun = String((patient.headers.first(name: "Location") ?? "").split(separator: "=").last ?? "")
        #expect(patient.status == 303 && rig.server.coordinator.run(patientRun)?.scope == .patient("p-004"))
        #expect(try await web.request(.POST, "/admin/refresh", form: ["scope": "org", "org": "nope", "csrf": csrf]).status == 400)
        #expect(try await web.request(.POST, "/admin/refresh", form: ["scope": "patient", "patient": "p-999", "csrf": csrf]).status == 400)
        #expect(await rig.eventually(timeout: 60) { rig.server.coordinator.run(patientRun)?.status == "completed" })
        // Logout revokes the session even though its cookie has not expired.
        let stolen = web.jar[AdminSessionCodec.cookieName]!
        #expect(try await web.request(.POST, "/admin/logout", form: ["csrf": csrf]).status == 303)
        web.jar[AdminSessionCodec.cookieName] = stolen
        #expect(try await web.request(.GET, "/admin").status == 303)
        #expect(try await web.request(.POST, "/admin/refresh", form: ["scope": "all", "csrf": csrf]).status == 403)
        await web.shutdown()
        await rig.stop()
    }

    /// A session belongs to the token that signed in: removed from the tokens file, the session
    /// ends, and made again under the same name (a rotation after a leak) it stays ended; the
    /// new token signs in afresh (hostile test, stop 56: the old cookie worked again).
    @Test func aSessionEndsWithItsTokenEvenWhenTheNameIsReused() async throws {
        let rig = try await ServerRig.start()
        let web = AdminClient(base: rig.base)
        #expect(try await web.login(rig.tokens.admin).status == 303)
        #expect(try await web.request(.GET, "/admin").status == 200)
        let old = try #require(web.jar[AdminSessionCodec.cookieName])
        let file = try TokenFile.load(path: rig.tokens.path)
        let others = file.tokens.filter { $0.name != "ops" }
        // Revoked: the registry reads the file again within a second.
        try TokenFile(tokens: others).save(path: rig.tokens.path)
        #expect(await rig.eventually(timeout: 120) { (try? await web.request(.GET, "/admin").status) == 303 })
        // Made again under the same name: the old session stays signed out.
        let (rotated, entry) = TokenFile.newToken(name: "ops", role: .admin, organizations: [])
        try TokenFile(tokens: others + [entry]).save(path: rig.tokens.path)
        #expect(await rig.eventually(timeout: 120) { rig.server.tokens.caller(bearer: rotated) != nil })
        web.jar[AdminSessionCodec.cookieName] = old
        #expect(try await web.request(.GET, "/admin").status == 303, "the revoked token's session came back")
        // The new token signs in.
        #expect(try await web.login(rotated).status == 303)
        #expect(try await web.request(.GET, "/admin").status == 200)
        await web.shutdown()
        await rig.stop()
    }

    /// A patient forgotten while the server runs is no longer listed by name (the roster file
    /// still holds them): not in the pages' patient lists, not found by the name search.
    @Test func aForgottenPatientIsNotListed() async throws {
        let rig = try await ServerRig.start()
        #expect(try await rig.syncAndWait()["status"]?.stringValue == "completed")
        let web = AdminClient(base: rig.base)
        #expect(try await web.login(rig.tokens.admin).status == 303)
        let patient = Fixtures.roster.organizations[0].patients[1]
        let name = try #require(patient.name)
        let search = "/admin/appointments?q=" + FormData.encode(name)
        let before = try await web.request(.GET, search)
        #expect(before.text.contains("value=\"\(patient.id)\"") && before.text.contains(name))
        #expect(!before.text.contains("0 appointments"), "the name search finds their appointments")
        let keys = try KeyRing.open(directory: rig.store + "/keys", create: false, environment: [:], notice: { _ in })
        try keys.destroyKey(for: patient.id, at: "2026-12-01T00:00:00.000Z")
        for page in ["/admin", "/admin/appointments", search] {
            let after = try await web.request(.GET, page)
            #expect(after.status == 200, "\(page)")
            #expect(!after.text.contains("value=\"\(patient.id)\""), "\(page) lists the forgotten patient")
        }
        #expect(try await web.request(.GET, search).text.contains("0 appointments"), "the name search no longer names them")
        await web.shutdown()
        await rig.stop()
    }

    @Test func namesAreEscapedOnEveryPage() async throws {
        let rig = try await ServerRig.start { $0.roster = AdminPageTests.hostileRoster }
        let done = try await rig.syncAndWait()
        #expect(done["status"]?.stringValue == "completed")
        let web = AdminClient(base: rig.base)
        #expect(try await web.login(rig.tokens.admin).status == 303)
        let patient = AdminPageTests.hostileRoster.organizations[0].patients[0]
        let appointment = try await rig.admin("/api/v1/appointments?patient=" + patient.id).array.first?["appointment_id"]?.stringValue
        let runId = done["run_id"]?.stringValue ?? ""
        var pages = ["/admin", "/admin/runs", "/admin/runs/" + runId, "/admin/appointments", "/admin/appointments?q=alert"]
        if let appointment { pages.append("/admin/appointments/" + appointment) }
        #expect(appointment != nil, "the script-named patient has appointments in the fixtures")
        for path in pages {
            let page = try await web.request(.GET, path)
            #expect(page.status == 200, "\(path): \(page.status)")
            #expect(!page.text.contains("<script"), "\(path) holds a raw <script")
            #expect(!page.text.contains("<b>Home"), "\(path) holds raw markup from the roster")
            #expect(page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "\(path) does not show the name as text")
        }
        let search = try await web.request(.GET, "/admin/appointments?q=alert")
        #expect(search.text.contains("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"))
        #expect(search.text.contains("Hope &quot;&amp;&quot; &lt;b&gt;Home&lt;/b&gt;"))
        // Bad filters are one clear message, not a crash.
        let bad = try await web.request(.GET, "/admin/runs?status=%3Cimg%3E")
        #expect(bad.status == 400 && bad.text.contains("status: &#39;&lt;img&gt;&#39; is not one of"))
        #expect(try await web.request(.GET, "/admin/runs?from=yesterday").status == 400)
        #expect(try await web.request(.GET, "/admin/runs/no-such-run").status == 404)
        #expect(try await web.request(.GET, "/admin/nope").status == 404)
        // The CSV: the run, its local time, parseable.
        let csv = try await web.request(.GET, "/admin/runs.csv?type=manual_org_bulk")
        #expect(csv.status == 200 && csv.headers.first(name: "Content-Type")?.hasPrefix("text/csv") == true)
        let lines = csv.text.split(separator: "\r\n")
        #expect(lines.first?.hasPrefix("id,sync_type,") == true && lines.count == 2)
        #expect(lines.last?.hasPrefix(runId + ",manual_org_bulk,") == true, "\(csv.text)")
        await web.shutdown()
        await rig.stop()
    }
}
