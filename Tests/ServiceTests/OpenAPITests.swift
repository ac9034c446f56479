import AsyncHTTPClient
import FakeIntakeQ
import Foundation
import HTTPTypes
import JSONCore
import Ledger
import NIOCore
import NIOHTTP1
@testable import Service
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// docs/openapi.yaml against the server: the document is what `GET /openapi.yaml` serves, its
/// paths and methods are exactly the router's, and schemathesis finds nothing when it fuzzes a
/// real `syncledger serve` with it.
enum OpenAPIContract {
    static let documentPath = Paths.root + "/docs/openapi.yaml"
    static var document: String { String(decoding: FileManager.default.contents(atPath: documentPath) ?? Data(), as: UTF8.self) }

    /// Paths left out of the document on purpose: the admin HTML pages.
    static let excludedPrefixes = ["/admin"]

    static func excluded(_ path: String) -> Bool {
        excludedPrefixes.contains { path == $0 || path.hasPrefix($0 + "/") }
    }

    /// "GET /api/v1/appointments/{id}" for every route of a router.
    static func served(_ routes: [Route]) -> Set<String> {
        Set(routes.filter { !excluded($0.path) }.map { "\($0.method.rawValue) \($0.path)" })
    }

    static let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
    static let pathItemKeys: Set<String> = ["summary", "description", "servers", "parameters", "$ref"]

    /// "GET /path" for every operation under `paths:`. The document is block-style YAML with
    /// two-space indents (paths at 2, methods at 4); a line there that fits neither shape
    /// throws, so a differently written document cannot be silently misread.
    static func documented(_ yaml: String) throws -> Set<String> {
        var out = Set<String>()
        var inPaths = false
        var path: String?
        for (n, raw) in yaml.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            if line.trimmingCharacters(in: .whitespaces).isEmpty || line.trimmingCharacters(in: .whitespaces).hasPrefix("#") { continue }
            let indent = line.prefix { $0 == " " }.count
            if indent == 0 {
                inPaths = line == "paths:"
                path = nil
                continue
            }
            guard inPaths else { continue }
            let body = line.dropFirst(indent)
            if indent == 2 {
                var key = String(body)
                guard key.hasSuffix(":") else { throw ServeError("docs/openapi.yaml:\(n + 1): a path must be '  /path:'") }
                key.removeLast()
                if key.hasPrefix("\""), key.hasSuffix("\""), key.count >= 2 { key = String(key.dropFirst().dropLast()) }
                guard key.hasPrefix("/") else { throw ServeError("docs/openapi.yaml:\(n + 1): '\(key)' is not a path") }
                if excluded(key) { path = nil; continue }
                path = key
            } else if indent == 4, let p = path {
                guard let colon = body.firstIndex(of: ":") else { throw ServeError("docs/openapi.yaml:\(n + 1): not a key") }
                let key = String(body[..<colon])
                if methods.contains(key) {
                    out.insert("\(key.uppercased()) \(p)")
                } else if !pathItemKeys.contains(key) {
                    throw ServeError("docs/openapi.yaml:\(n + 1): '\(key)' is neither a method nor a path item field")
                }
            }
        }
        return out
    }

    /// What differs between a router and a document, one line each; empty when they agree.
    static func drift(routes: [Route], document: String) throws -> [String] {
        let served = served(routes)
        let documented = try documented(document)
        return served.subtracting(documented).sorted().map { "served but not documented: \($0)" }
            + documented.subtracting(served).sorted().map { "documented but not served: \($0)" }
    }
}

@Suite struct OpenAPIDocumentTests {
    @Test func theRouterAndTheDocumentAgree() throws {
        let problems = try OpenAPIContract.drift(routes: ServiceResponder.routes, document: OpenAPIContract.document)
        #expect(problems.isEmpty, "docs/openapi.yaml and ServiceResponder.routes differ:\n\(problems.joined(separator: "\n"))")
        // Sanity: the comparison saw the whole API, not an empty parse of either side.
        let documented = try OpenAPIContract.documented(OpenAPIContract.document)
        #expect(documented.contains("GET /api/v1/appointments/{id}/history"))
        #expect(documented.contains("POST /webhooks/intakeq/{secret}"))
        #expect(documented.contains("GET /metrics") && documented.contains("GET /openapi.yaml"))
        #expect(documented.count == OpenAPIContract.served(ServiceResponder.routes).count)
    }

    @Test func theDriftCheckFailsWhenARouteIsAddedOrRemoved() throws {
        let document = OpenAPIContract.document
        let handler: Route.Handler = { _, _ in .ok(.null) }
        // A route added to the router without documenting it.
        let added = ServiceResponder.routes + [Route(.get, "/api/v1/providers", .reader, handler)]
        #expect(try OpenAPIContract.drift(routes: added, document: document) == ["served but not documented: GET /api/v1/providers"])
        // A new method on a documented path counts too.
        let method = ServiceResponder.routes + [Route(.delete, "/api/v1/appointments/{id}", .admin, handler)]
        #expect(try OpenAPIContract.drift(routes: method, document: document) == ["served but not documented: DELETE /api/v1/appointments/{id}"])
        // A documented route the router no longer has.
        let removed = ServiceResponder.routes.filter { $0.path != "/api/v1/locations" }
        #expect(try OpenAPIContract.drift(routes: removed, document: document) == ["documented but not served: GET /api/v1/locations"])
        // A documented path the router lacks.
        let extraDoc = document.replacingOccurrences(of: "\ncomponents:\n", with: "\n  /api/v1/ghosts:\n    get:\n      responses: {}\ncomponents:\n")
        #expect(try OpenAPIContract.drift(routes: ServiceResponder.routes, document: extraDoc) == ["documented but not served: GET /api/v1/ghosts"])
        // The admin pages are out of the document on purpose, on both sides.
        let admin = ServiceResponder.routes + [Route(.get, "/admin", .open, handler), Route(.post, "/admin/runs/{id}", .open, handler)]
        #expect(try OpenAPIContract.drift(routes: admin, document: document).isEmpty)
        // A line the parser cannot place fails loudly instead of hiding a path.
        #expect(throws: ServeError.self) {
            try OpenAPIContract.documented("paths:\n  \"/x\": {get: {}}\n  weird\n")
        }
    }

    @Test func theEmbeddedDocumentIsTheFileByteForByte() {
        #expect(OpenAPIDocument.text == OpenAPIContract.document,
                "Sources/Service/OpenAPIDocument.swift is stale: run tools/embed_openapi.py")
    }

    @Test func theServerServesTheDocumentWithoutAToken() async throws {
        let rig = try await ServerRig.start()
        var request = HTTPClientRequest(url: rig.base + "/openapi.yaml")
        request.method = .GET
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 16 << 20)
        #expect(response.status.code == 200)
        #expect(response.headers.first(name: "Content-Type")?.hasPrefix("application/yaml") == true)
        #expect(Array(buffer: body) == Array(OpenAPIContract.document.utf8))
        // Unknown parameters are a 400 here as everywhere.
        let bad = try await rig.get("/openapi.yaml?x=1")
        #expect(bad.status == 400 && bad["error"]?.stringValue?.contains("x: unknown parameter") == true)
        await rig.stop()
    }

    /// The odd requests a fuzzer sends, one by one, each with its documented 4xx and a JSON error.
    @Test func badRequestsGetADocumented4xx() async throws {
        let rig = try await ServerRig.start()
        let long = String(repeating: "a", count: 129)
        let cases: [(String, Int, String)] = [
            ("/api/v1/appointments/" + long, 400, "id: must be 1 to 128"),
            ("/api/v1/appointments/a%20b/history", 400, "id: must be"),
            ("/api/v1/appointments/%C3%A9t%C3%A9", 400, "id: must be"),
            ("/api/v1/runs/a.b", 400, "run_id: must be"),
            ("/api/v1/upcoming?days=99999999999999999999999", 400, "days:"),
            ("/api/v1/upcoming?days=1.5", 400, "days:"),
            ("/api/v1/sync-logs?limit=-1", 400, "limit:"),
            ("/api/v1/sync-logs?limit=", 400, "limit: empty value"),
            ("/api/v1/appointments?org=fsh&org=rrc", 400, "org: given more than once"),
            ("/api/v1/appointments?include_removed=maybe", 400, "include_removed: 'maybe' is not true or false (1/0 and yes/no are taken too)"),
            ("/api/v1/upcoming?days=-1", 400, "days: '-1' is not a whole number from 0 to 366"),
            ("/api/v1/appointments?%6Fope=1", 400, "oope: unknown parameter"),
            ("/api/v1/appointments?from=2026-13-01", 400, "from:"),
            ("/api/v1/appointments?org=%F0%9F%A6%86", 400, "org:"),
            ("/api/v1/locations?nope=1", 400, "nope: unknown parameter"),
            ("/api/v1/status?x=", 400, "x: unknown parameter"),
            // A value with no name says so (it was accepted, and nothing asked).
            ("/api/v1/appointments?=fsh", 400, "'=fsh': a value without a parameter name"),
            ("/api/v1/appointments?%FForg=1", 400, "a parameter name whose % escapes do not decode to UTF-8 text"),
            // A long value is quoted cut short (a 20,000 character one came back whole).
            ("/api/v1/appointments?org=" + String(repeating: "o", count: 20_000), 400, "org: 'ooo"),
            ("/api/v1/upcoming?days=" + String(repeating: "9", count: 5_000), 400, "… (5000 bytes)"),
            ("/api/v1/appointments?include_removed=" + String(repeating: "y", count: 5_000), 400, "include_removed:"),
            ("/api/v1/appointments?from=" + String(repeating: "2", count: 20_000), 400, "from:"),
            ("/api/v1/appointments?" + String(repeating: "k", count: 5_000) + "=1", 400, "unknown parameter"),
            ("/api/v1/" + String(repeating: "r", count: 5_000), 404, "no such route"),
        ]
        // Names are percent-decoded, as values are; an empty pair asks nothing; 0 days is the
        // rest of today, as in the CLI (hostile test).
        let decoded = try await rig.admin("/api/v1/appointments?%6Frg=fsh")
        let plain = try await rig.admin("/api/v1/appointments?org=fsh")
        // (Undecoded, the name was refused: 400 "%6Frg: unknown parameter".)
        #expect(decoded.status == 200 && plain.status == 200 && decoded.array == plain.array, "\(decoded.status) \(decoded.text.prefix(300))")
        #expect(try await rig.admin("/api/v1/locations?&").status == 200)
        #expect(try await rig.admin("/api/v1/upcoming?days=0").status == 200)
        for (path, status, message) in cases {
            let a = try await rig.admin(path)
            #expect(a.status == status, "\(path): \(a.status) \(a.text)")
            #expect(a["error"]?.stringValue?.contains(message) == true, "\(path): \(a.text)")
            #expect(a.text.count < 1000, "\(path): the error echoes too much")
        }
        // A wrong method is a 405 naming the right one; a wrong webhook secret stays a 404 whatever the method.
        let put = try await http(.PUT, rig.base + "/api/v1/appointments", token: rig.tokens.admin)
        #expect(put.status == 405 && put["error"]?.stringValue?.contains("use GET") == true)
        // With the Allow header RFC 9110 asks of a 405 (it had none; hostile test).
        #expect(put.header("Allow") == "GET, HEAD", "\(put.headers)")
        #expect(try await http(.GET, rig.base + "/webhooks/intakeq/wrong").status == 404)
        let getWebhook = try await http(.GET, rig.webhookURL)
        #expect(getWebhook.status == 405 && getWebhook.header("Allow") == "POST", "\(getWebhook.headers)")
        // HEAD is GET without the body (uptime checks, load balancers); where GET is not allowed, 405.
        let head = try await http(.HEAD, rig.base + "/healthz")
        #expect(head.status == 200 && head.text.isEmpty, "\(head.status) \(head.text)")
        #expect(try await http(.HEAD, rig.base + "/readyz").status == 200)
        #expect(try await http(.HEAD, rig.base + "/api/v1/status", token: rig.tokens.admin).status == 200)
        #expect(try await http(.HEAD, rig.base + "/api/v1/status").status == 401)
        #expect(try await http(.HEAD, rig.base + "/api/v1/sync", token: rig.tokens.admin).status == 405)
        // A string id with spaces is no longer trimmed into a valid one.
        let spaced = try await http(.POST, rig.webhookURL, body: Array(#"{"Appointment":{"Id":" 123 ","ClientId":1}}"#.utf8))
        #expect(spaced.status == 400)
        await rig.stop()
    }
}

/// schemathesis (PyPI, in <package root>/.venv-test from tools/setup.sh) against the real
/// `syncledger serve` binary on loopback, fed by the fake IntakeQ, once with an admin token and
/// once with a reader token. Every check, positive and negative data, a bounded number of examples
/// per operation; the seed is printed (set SYNCLEDGER_FUZZ_SEED to replay a run, and
/// SYNCLEDGER_FUZZ_EXAMPLES to change the bound).
///
/// Checks: all of schemathesis' but `negative_data_rejection`, on positive and negative data. That
/// check cannot be fixed on our side: schemathesis 3.39 generates negative values that serialize to
/// valid query strings (`["webhook"]` for the `type` enum becomes `type=webhook`, the string
/// "false" for a boolean becomes `include_removed=false`) and then reports the server's 200 as
/// "accepted negative data" (seen with seeds 2855853089 and others). The negative requests are still
/// sent and must get a documented status with a conforming body; what the check found while it
/// ran (empty values and repeated parameters accepted) is fixed and pinned in
/// `badRequestsGetADocumented4xx`.
///
/// The webhook is fuzzed too, with the right secret (`--set-path secret=…`) and only in the admin
/// run (it takes no token): wrong secrets are a plain 404 tested above, and with the right one the
/// fuzzer reaches the body parser, the roster filter and the inbox, where the bugs would be.
@Suite(.serialized) struct SchemathesisTests {
    static let apiKey = "sk-test-FUZZ-never-printed"
    static let schemathesis = Paths.root + "/.venv-test/bin/st"

    @Test func schemathesisFindsNothingWithEitherToken() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.schemathesis) else {
            Issue.record("schemathesis is missing: \(Self.schemathesis) (run ./tools/setup.sh to create .venv-test)")
            return
        }
        let env = ProcessInfo.processInfo.environment
        let seed = env["SYNCLEDGER_FUZZ_SEED"].flatMap { UInt32($0) } ?? UInt32.random(in: 1...UInt32.max)
        let examples = env["SYNCLEDGER_FUZZ_EXAMPLES"].flatMap { Int($0) } ?? 50
        print("schemathesis: --hypothesis-seed \(seed) --hypothesis-max-examples \(examples) (replay with SYNCLEDGER_FUZZ_SEED=\(seed))")

        let dir = TempDir("openapi-fuzz")
        let fake = FakeIntakeQServer(state: Fixtures.day(1).state, apiKey: Self.apiKey)
        let (fakeBase, tokens, secretFile) = try await serveFiles(in: dir, fake: fake)
        defer { Task { await fake.stop() } }
        let server = try Spawned(
            ["--store", dir.sub("store"), "serve", "--roster", Paths.roster, "--listen", "127.0.0.1:0", "--base-url", fakeBase,
             "--tokens", tokens.path, "--webhook-secret-file", secretFile, "--requests-per-minute", "100000"],
            env: ["INTAKEQ_API_KEY": Self.apiKey], dir: dir.path)
        let base = try await server.listening()
        // Data to read: one full run first, so rows, history and sync logs are there.
        let queued = try await http(.POST, base + "/api/v1/sync", token: tokens.admin, body: Array(#"{"scope":"all"}"#.utf8))
        let runId = queued["run_id"]?.stringValue ?? ""
        #expect(await eventually(timeout: 120) {
            (try? await http(.GET, base + "/api/v1/runs/" + runId, token: tokens.admin))?["status"]?.stringValue == "completed"
        }, "the first run did not complete: \(server.stderr)")
        // A verify and a damage record (the record only: the views stay readable), so the status
        // route's optional parts are objects, not null, and their schemas are checked too.
        let verify = try Spawned(["--store", dir.sub("store"), "verify"], dir: dir.path)
        #expect(await verify.wait() == 0, "\(verify.stderr)")
        try ViewsDamageRecord.record(
            ViewsDamageRecord(at: "2026-12-04T10:00:00.000Z", command: "appointments", error: "database disk image is malformed"),
            in: try Store.open(dir.sub("store")))
        // And a test alert (severity info) in the alert log, as an operator's set-up leaves one.
        let alertTest = try Spawned(["--store", dir.sub("store"), "alert", "test", "--alert-command", "cat > /dev/null"], dir: dir.path)
        #expect(await alertTest.wait() == 0, "\(alertTest.stderr)")
        let status = try await http(.GET, base + "/api/v1/status", token: tokens.admin)
        #expect(status["last_verify"]?["ok"] == .bool(true) && status["views_damaged"]?["command"] != nil, "\(status.text)")
        #expect(status["alerts"]?["recent"].map { $0.canonicalText.contains("\"info\"") } == true, "\(status.text)")

        for (role, token) in [("admin", tokens.admin), ("reader", tokens.reader)] {
            var args = [
                "run", base + "/openapi.yaml", "--experimental=openapi-3.1", "--checks", "all", "--exclude-checks", "negative_data_rejection",
                "--data-generation-method", "all",
                "--hypothesis-seed", "\(seed)", "--hypothesis-max-examples", "\(examples)", "--hypothesis-database", "none",
                "--request-timeout", "20000", "--header", "Authorization: Bearer \(token)",
                "--set-path", "secret=\(webhookSecret)", "--validate-schema", "true", "--no-color",
            ]
            if role == "reader" { args += ["--exclude-path", "/webhooks/intakeq/{secret}"] }
            let (status, output) = try await runTool(Self.schemathesis, args, dir: dir.path, timeout: 900)
            let summary = output.split(separator: "\n").suffix(60).joined(separator: "\n")
            print("schemathesis (\(role) token, seed \(seed)): exit \(status.map(String.init) ?? "timeout")\n\(summary)")
            #expect(status == 0, "schemathesis with the \(role) token (seed \(seed)) found problems:\n\(output.suffix(20_000))")
            #expect(output.contains("passed"), "schemathesis ran no operation:\n\(summary)")
            #expect(server.isRunning, "serve died during the \(role) run: \(server.stderr.suffix(4000))")
        }
        // No 5xx on the server's side either, and no secret in its log.
        #expect(!server.stderr.contains("request failed"), "\(server.stderr.suffix(4000))")
        #expect(!server.stderr.contains(Self.apiKey) && !server.stderr.contains(webhookSecret))
        server.signal(SIGTERM)
        #expect(await server.wait() == 0)
    }

    /// Runs a program to the end (killed after `timeout` seconds); its exit status (nil when
    /// killed) and its output, stdout and stderr together.
    func runTool(_ path: String, _ args: [String], dir: String, timeout: Double) async throws -> (Int32?, String) {
        let out = dir + "/tool-\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        var env = ProcessInfo.processInfo.environment
        env["PYTHONUNBUFFERED"] = "1"
        env["SCHEMATHESIS_TELEMETRY"] = "false"
        let p = try ProcessRunner.start(path, args, environment: env, cwd: dir, stdoutPath: out, stderrPath: out)
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning, Date() < deadline { try await Task.sleep(nanoseconds: 100_000_000) }
        let output = { String(decoding: FileManager.default.contents(atPath: out) ?? Data(), as: UTF8.self) }
        if p.isRunning {
            p.kill(SIGKILL)
            _ = await p.wait()
            return (nil, output())
        }
        return (await p.wait().status, output())
    }
}
