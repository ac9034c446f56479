import AsyncHTTPClient
import Foundation
import JSONCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// HTTP client for the IntakeQ appointments API. Every request goes through the
/// `RateLimiter`; 429 and 5xx are retried with exponential back-off (honouring `Retry-After`).
/// The API key is sent in `X-Auth-Key` and never logged; query strings (which may hold patient
/// names or emails) are logged at debug level only.
public final class IntakeQClient: Sendable {
    /// IntakeQ serves at most 100 rows per page.
    public static let pageSize = 100

    public let baseURL: String
    private let apiKey: String
    public let limiter: RateLimiter
    private let clock: any IntakeQClock
    public let maxRetries: Int
    public let timeoutSeconds: Double
    /// Back-off: `backoffBase * 2^attempt`, at most `backoffCap` seconds.
    public let backoffBase: Double
    public let backoffCap: Double
    /// Largest response body accepted.
    public let maxBodyBytes: Int
    private let logger: Logger
    private let http: HTTPClient
    private let host: String
    private let statsBox = Mutex(CallStats())

    public init(baseURL: String = "https://intakeq.com/api/v1", apiKey: String, limiter: RateLimiter,
                clock: any IntakeQClock = SystemClock(), maxRetries: Int = 4, timeoutSeconds: Double = 30,
                backoffBase: Double = 2, backoffCap: Double = 120, maxBodyBytes: Int = 64 << 20,
                logger: Logger = Logger(label: "intakeq")) {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.apiKey = apiKey
        self.limiter = limiter
        self.clock = clock
        self.maxRetries = max(0, maxRetries)
        self.timeoutSeconds = timeoutSeconds
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
        self.host = URL(string: base).map { u in (u.host ?? "?") + (u.port.map { ":\($0)" } ?? "") } ?? base
        // A process-wide client: it needs no shutdown (a private HTTPClient crashes debug builds
        // when dropped without one). The per-request deadline bounds connect + response.
        self.http = Self.sharedHTTP
    }

    /// Like `HTTPClient.shared`, but a refused connection fails at once instead of being
    /// retried until the request's deadline (an unreachable host should say so in a second,
    /// not after the whole timeout), and redirects are not followed (the API key header must
    /// not travel to another host).
    private static let sharedHTTP: HTTPClient = {
        var config = HTTPClient.Configuration()
        config.connectionPool.retryConnectionEstablishment = false
        config.timeout.connect = .seconds(10)
        config.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }()

    // MARK: Endpoints

    /// One page (1-based) of `GET /appointments`. Throws if the page or any row fails to decode.
    public func appointmentsPage(_ query: AppointmentQuery, page: Int) async throws -> [FetchedAppointment] {
        let r = try await fetchPage(query, page: page)
        if let first = r.rowErrors.first { throw first }
        return r.appointments
    }

    /// Fetches pages 1, 2, … until a short page, a fatal error, or `pageCap`. Never throws.
    public func crawl(_ query: AppointmentQuery, pageCap: Int = 200) async -> CrawlResult {
        var result = CrawlResult()
        var index: [String: Int] = [:]
        var lastWasShort = false
        var consecutiveFailures = 0
        var page = 1
        while page <= pageCap {
            do {
                let r = try await fetchPage(query, page: page)
                consecutiveFailures = 0
                result.pagesFetched += 1
                result.pageSizes.append(r.count)
                result.failures += r.rowErrors
                for a in r.appointments {
                    if let i = index[a.id] {
                        result.duplicates += 1
                        if (a.lastModified ?? 0) > (result.appointments[i].lastModified ?? 0) {
                            result.appointments[i] = a
                        }
                    } else {
                        index[a.id] = result.appointments.count
                        result.appointments.append(a)
                    }
                }
                if r.count < Self.pageSize {
                    lastWasShort = true
                    break
                }
            } catch let e as IntakeQError {
                if e.isFatalForRun {
                    result.fatal = e
                    break
                }
                result.failures.append(e)
                consecutiveFailures += 1
                // Two failed pages in a row: stop spending the budget.
                if consecutiveFailures >= 2 { break }
            } catch {
                // Interrupted (the task was cancelled): stop, it is not a failed page.
                if error is CancellationError || Task.isCancelled { break }
                result.failures.append(IntakeQError(code: .transport, detail: "\(error)").at(endpoint: "GET /appointments", page: page))
                consecutiveFailures += 1
                if consecutiveFailures >= 2 { break }
            }
            page += 1
        }
        result.hitPageCap = !lastWasShort && page > pageCap
        result.complete = lastWasShort && result.fatal == nil && result.failures.isEmpty
        return result
    }

    /// `GET /appointments/{id}`; nil on 404 (unknown or deleted).
    public func appointment(id: String) async throws -> FetchedAppointment? {
        let endpoint = "GET /appointments/{id}"
        let r = try await send(path: "/appointments/" + Self.percentEncode(id), query: [], endpoint: endpoint, page: nil)
        if r.status == 404 { return nil }
        do {
            let bytes = try minifiedJSONValue(r.body)
            return try FetchedAppointment.parse(minifiedObject: bytes)
        } catch let e as IntakeQError {
            throw e.at(endpoint: endpoint, page: nil)
        }
    }

    /// `GET /appointments/settings`.
    public func settings() async throws -> FetchedSettings {
        let endpoint = "GET /appointments/settings"
        let r = try await send(path: "/appointments/settings", query: [], endpoint: endpoint, page: nil)
        try Self.requireFound(r, endpoint: endpoint)
        do {
            return try FetchedSettings.parse(json: try minifiedJSONValue(r.body))
        } catch let e as IntakeQError {
            throw e.at(endpoint: endpoint, page: nil)
        }
    }

    /// One page of `GET /clients` as raw (minified) objects; decode with `ClientSummary` if needed.
    public func clients(search: String?, page: Int) async throws -> [[UInt8]] {
        let endpoint = "GET /clients"
        var q: [(String, String)] = []
        if let search { q.append(("search", search)) }
        q.append(("page", String(page)))
        let r = try await send(path: "/clients", query: q, endpoint: endpoint, page: page)
        try Self.requireFound(r, endpoint: endpoint)
        do {
            return try splitJSONArray(r.body)
        } catch let e as IntakeQError {
            throw e.at(endpoint: endpoint, page: page)
        }
    }

    public func stats() async -> CallStats { statsBox.withLock { $0 } }

    public func resetStats() { statsBox.withLock { $0 = CallStats() } }

    /// Kept for the contract; the shared connection pool needs no shutdown, so this does nothing.
    public func shutdown() async throws {}

    // MARK: Internals

    struct Page {
        var appointments: [FetchedAppointment]
        var rowErrors: [IntakeQError]
        var count: Int
    }

    func fetchPage(_ query: AppointmentQuery, page: Int) async throws -> Page {
        let endpoint = "GET /appointments"
        let r = try await send(path: "/appointments", query: query.queryItems(page: page), endpoint: endpoint, page: page)
        try Self.requireFound(r, endpoint: endpoint, page: page)
        let elements: [[UInt8]]
        do {
            elements = try splitJSONArray(r.body)
        } catch let e as IntakeQError {
            throw e.at(endpoint: endpoint, page: page)
        }
        var out = Page(appointments: [], rowErrors: [], count: elements.count)
        for (i, el) in elements.enumerated() {
            do {
                out.appointments.append(try FetchedAppointment.parse(minifiedObject: el))
            } catch let e as IntakeQError {
                var e = e.at(endpoint: endpoint, page: page)
                e.keyPath = "[\(i)]" + (e.keyPath.map { $0.isEmpty ? "" : "." + $0 } ?? "")
                e.offset = nil
                out.rowErrors.append(e)
            }
        }
        return out
    }

    static func requireFound(_ r: RawResponse, endpoint: String, page: Int? = nil) throws {
        if r.status == 404 {
            var e = IntakeQError(code: .notFound, detail: "not found")
            e.httpStatus = 404
            throw e.at(endpoint: endpoint, page: page)
        }
    }

    struct RawResponse {
        var status: Int
        var body: [UInt8]
    }

    /// Sends one logical request: limiter slot per attempt, retries on 429/5xx. Returns 2xx
    /// and 404 responses; throws for everything else.
    func send(path: String, query: [(String, String)], endpoint: String, page: Int?) async throws -> RawResponse {
        var url = baseURL + path
        if !query.isEmpty {
            url += "?" + query.map { Self.percentEncode($0.0) + "=" + Self.percentEncode($0.1) }.joined(separator: "&")
        }
        var attempt = 0
        while true {
            let waited: Double
            do {
                waited = try await limiter.acquire()
            } catch let e as IntakeQError {
                throw e.at(endpoint: endpoint, page: page)
            }
            statsBox.withLock { s in
                s.calls += 1
                if waited > 0 {
                    s.rateLimitWaits += 1
                    s.waitedSeconds += waited
                }
            }
            logger.debug("IntakeQ request", metadata: ["url": "\(url)", "attempt": "\(attempt + 1)"])
            let (status, headers, body) = try await perform(url: url, endpoint: endpoint, page: page)
            switch status {
            case 200..<300, 404:
                return RawResponse(status: status, body: body)
            case 401, 403:
                var e = IntakeQError(code: .unauthorized, detail: "HTTP \(status)")
                e.httpStatus = status
                throw e.at(endpoint: endpoint, page: page)
            case 400:
                var e = IntakeQError(code: .badRequest, detail: Self.message(in: body) ?? "no message")
                e.httpStatus = 400
                throw e.at(endpoint: endpoint, page: page)
            case 429, 500...599:
                if status == 429 { statsBox.withLock { $0.rateLimitHit = true; $0.responses429 += 1 } }
                guard attempt < maxRetries else {
                    var e = IntakeQError(code: status == 429 ? .rateLimited : .server, detail: "HTTP \(status)")
                    e.httpStatus = status
                    e.attempts = attempt + 1
                    e.host = host
                    throw e.at(endpoint: endpoint, page: page)
                }
                let retryAfter = headers.first(name: "Retry-After").flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
                let delay = retryAfter.map { min(max($0, 0), 3600) }
                    ?? min(backoffCap, backoffBase * pow(2, Double(attempt)))
                logger.notice("IntakeQ asked us to retry",
                              metadata: ["endpoint": "\(endpoint)", "status": "\(status)", "delay_s": "\(delay)",
                                         "page": "\(page.map(String.init) ?? "-")"])
                statsBox.withLock { s in
                    s.retries += 1
                    s.waitedSeconds += delay
                    if status == 429 { s.rateLimitWaits += 1 }
                }
                try await clock.sleep(seconds: delay)
                attempt += 1
            default:
                var e = IntakeQError(code: .httpStatus, detail: Self.message(in: body) ?? "unexpected response")
                e.httpStatus = status
                throw e.at(endpoint: endpoint, page: page)
            }
        }
    }

    private func perform(url: String, endpoint: String, page: Int?) async throws -> (Int, HTTPHeaders, [UInt8]) {
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        request.headers.add(name: "X-Auth-Key", value: apiKey)
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "SyncLedger/1")
        let started = ContinuousClock.now
        func elapsed() -> Double {
            let d = ContinuousClock.now - started
            return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }
        do {
            let response = try await http.execute(request, timeout: .milliseconds(Int64(timeoutSeconds * 1000)))
            let buffer = try await response.body.collect(upTo: maxBodyBytes)
            return (Int(response.status.code), response.headers, Array(buffer.readableBytesView))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            var e = IntakeQError(code: .timeout, detail: "no answer")
            e.host = host
            e.seconds = timeoutSeconds
            throw e.at(endpoint: endpoint, page: page)
        } catch let error as NIOTooManyBytesError {
            _ = error
            throw IntakeQError.decode("the response is larger than \(maxBodyBytes) bytes").at(endpoint: endpoint, page: page)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            // Never the key: an error about the request's headers (a key with a control
            // character in it) printed their values, and the run's failure put it in the log
            // (hostile test). `apiKey()` refuses such a key before a run; this is the backstop.
            var detail = Self.describe(error)
            if !apiKey.isEmpty, detail.contains(apiKey) {
                detail = detail.replacingOccurrences(of: apiKey, with: "[the API key]")
            }
            if let e = error as? HTTPClientError, "\(e)".contains("invalidHeaderFieldValues") {
                detail = "the API key holds a character that cannot be sent in a header"
            }
            var e = IntakeQError(code: .transport, detail: detail)
            e.host = host
            e.seconds = elapsed()
            throw e.at(endpoint: endpoint, page: page)
        }
    }

    static func describe(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("connectionRefused") || text.contains("Connection refused") || text.contains("ECONNREFUSED") {
            return "connection refused"
        }
        if let e = error as? HTTPClientError, e == .connectTimeout { return "connect timed out" }
        return text
    }

    /// IntakeQ's error body `{"Message": "…"}`.
    static func message(in body: [UInt8]) -> String? {
        struct M: Decodable { var Message: String? }
        if let m = try? JSONDecoder().decode(M.self, from: Data(body)), let s = m.Message { return s }
        let text = String(decoding: body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }

    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.append(Character(UnicodeScalar(b)))
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }
}
