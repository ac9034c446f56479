import Foundation

/// Everything that can go wrong talking to IntakeQ. `description` is one line that says what
/// happened and what to do; it never contains the API key.
public struct IntakeQError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure. Wraps a private enum so that new codes do not break callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unauthorized, badRequest, notFound, rateLimited, server, httpStatus
            case decode, transport, timeout, dailyBudgetExhausted, callRecord
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// HTTP 401: the API key was refused.
        public static let unauthorized = Code(.unauthorized)
        /// HTTP 400 with IntakeQ's `{"Message": …}`.
        public static let badRequest = Code(.badRequest)
        /// HTTP 404 where a result was required.
        public static let notFound = Code(.notFound)
        /// HTTP 429 still returned after the last retry.
        public static let rateLimited = Code(.rateLimited)
        /// HTTP 5xx still returned after the last retry.
        public static let server = Code(.server)
        /// Any other unexpected HTTP status.
        public static let httpStatus = Code(.httpStatus)
        /// The body is not the JSON we expected (HTML, truncated, wrong shape).
        public static let decode = Code(.decode)
        /// Connection refused, reset, DNS failure…
        public static let transport = Code(.transport)
        /// The request did not complete within the per-request timeout.
        public static let timeout = Code(.timeout)
        /// The client-side rolling 24 h budget is used up; no request was sent.
        public static let dailyBudgetExhausted = Code(.dailyBudgetExhausted)
        /// The record of API calls in the store's `state/` could not be read or written (a full
        /// disk, permissions): the budget cannot be honoured, so no request is sent. Not IntakeQ's fault.
        public static let callRecord = Code(.callRecord)
        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The specific detail (IntakeQ's message, the decoder's complaint, the transport error).
    public var detail: String
    /// The request, e.g. `GET /appointments`.
    public var endpoint: String?
    /// 1-based page of a list request.
    public var page: Int?
    /// Byte offset in the response body (decode errors from the scanner).
    public var offset: Int?
    /// Key path inside the JSON (decode errors from JSONDecoder), e.g. `[3].StartDate`.
    public var keyPath: String?
    public var httpStatus: Int?
    public var host: String?
    /// Seconds the request ran before failing (transport/timeout).
    public var seconds: Double?
    /// Attempts made (retried failures).
    public var attempts: Int?
    /// dailyBudgetExhausted: calls left (0) and the total budget, and when the oldest call leaves the window.
    public var remaining: Int?
    public var budget: Int?
    public var resetsAt: Date?
    /// The operating system's error number underneath (callRecord), when there is one.
    public var errno: Int32?

    public init(code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }

    /// The request this error is about, as "GET /appointments page 2".
    var whereText: String {
        var s = endpoint ?? "the request"
        if let page { s += " page \(page)" }
        return s
    }

    public var message: String { description }

    public var description: String {
        switch code {
        case .unauthorized:
            return "IntakeQ refused the API key (HTTP \(httpStatus ?? 401)); check INTAKEQ_API_KEY (or the file INTAKEQ_API_KEY_FILE names)"
        case .badRequest:
            return "IntakeQ rejected \(whereText) (HTTP 400): \(detail)"
        case .notFound:
            return "IntakeQ has no such resource for \(whereText) (HTTP 404)"
        case .rateLimited:
            return "IntakeQ kept answering 429 Too Many Requests to \(whereText) after \(attempts ?? 1) attempts;"
                + " wait a few minutes and run again, or lower the requests per minute"
        case .server:
            return "IntakeQ answered HTTP \(httpStatus ?? 500) to \(whereText) after \(attempts ?? 1) attempts;"
                + " IntakeQ seems to be having trouble, run again later"
        case .httpStatus:
            return "IntakeQ answered HTTP \(httpStatus ?? 0) to \(whereText): \(detail)"
        case .decode:
            var at = ""
            if let offset { at += " at byte \(offset)" }
            if let keyPath, !keyPath.isEmpty { at += " at \(keyPath)" }
            return "could not decode the response to \(whereText)\(at): \(detail);"
                + " the response was cut off or the API changed — run again, and report it if it persists"
        case .transport:
            let after = seconds.map { String(format: " after %.1f s", $0) } ?? ""
            return "could not reach IntakeQ at \(host ?? "?") for \(whereText)\(after): \(detail);"
                + " check the network and the base URL"
        case .timeout:
            return "IntakeQ at \(host ?? "?") did not answer \(whereText) within "
                + String(format: "%.1f s", seconds ?? 0) + "; run again later or raise the timeout"
        case .callRecord:
            // A write that failed (with its errno) gets the storage advice; a record that cannot
            // be read says its own way out in `detail`.
            return "the record of API calls could not be kept: \(detail); no request was sent"
                + (errno == nil ? "" : " (free disk space or fix the permissions of the store's state/ directory, then run again)")
        case .dailyBudgetExhausted:
            let when = resetsAt.map { IntakeQDate.isoSeconds($0) } ?? "unknown"
            return "daily API budget used up: \(remaining ?? 0) of \(budget ?? 0) calls left; the next frees at \(when)"
        default:
            return "\(code): \(detail)"
        }
    }

    /// Whether retrying the same request later can help (used by callers to classify).
    public var isFatalForRun: Bool { code == .unauthorized || code == .dailyBudgetExhausted || code == .callRecord }

    package static func decode(_ detail: String, offset: Int? = nil, keyPath: String? = nil) -> IntakeQError {
        var e = IntakeQError(code: .decode, detail: detail)
        e.offset = offset
        e.keyPath = keyPath
        return e
    }

    func at(endpoint: String?, page: Int?) -> IntakeQError {
        var e = self
        if e.endpoint == nil { e.endpoint = endpoint }
        if e.page == nil { e.page = page }
        return e
    }

    static func budget(remaining: Int, budget: Int, resetsAt: Date?) -> IntakeQError {
        var e = IntakeQError(code: .dailyBudgetExhausted, detail: "")
        e.remaining = remaining
        e.budget = budget
        e.resetsAt = resetsAt
        return e
    }

    /// Turns a JSONDecoder error into a decode error with the key path.
    package static func from(decoding error: any Error, prefix: String = "") -> IntakeQError {
        guard let de = error as? DecodingError else {
            return .decode("\(error)")
        }
        func path(_ ctx: DecodingError.Context) -> String {
            var s = prefix
            for k in ctx.codingPath {
                if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
            }
            return s
        }
        switch de {
        case .typeMismatch(let t, let ctx):
            return .decode("expected \(t): \(ctx.debugDescription)", keyPath: path(ctx))
        case .valueNotFound(let t, let ctx):
            return .decode("missing \(t): \(ctx.debugDescription)", keyPath: path(ctx))
        case .keyNotFound(let k, let ctx):
            return .decode("missing key \(k.stringValue)", keyPath: path(ctx))
        case .dataCorrupted(let ctx):
            return .decode("invalid JSON: \(ctx.debugDescription)", keyPath: path(ctx))
        @unknown default:
            return .decode("\(de)")
        }
    }
}
