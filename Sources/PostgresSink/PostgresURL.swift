import Foundation
import PostgresNIO

/// Where the sink writes: a `postgres://user:password@host:port/database?sslmode=…` URL.
/// The password never leaves this value except towards the server: `redacted` is the only
/// form that is printed or logged.
public struct PostgresURL: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    var password: String?
    public var database: String
    /// disable, prefer (the default), require, verify-ca, verify-full (libpq's names).
    public var sslMode: String
    /// The URL as the user wrote it, with the password replaced by `***`.
    public let redacted: String

    public var description: String { redacted }

    /// The environment variable read when no `--url` is given.
    public static let environmentVariable = "SYNCLEDGER_POSTGRES_URL"

    /// Parses a URL. A password absent from the URL is looked up in `PGPASSFILE` (libpq's format,
    /// `host:port:database:user:password`, `*` matching anything).
    public init(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let scrubbed = PostgresURL.redact(text)
        func bad(_ why: String) -> SinkError {
            SinkError(.badURL, "the PostgreSQL URL \(scrubbed) \(why) (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require|verify-full])")
        }
        var rest = Substring(text)
        guard let schemeEnd = rest.range(of: "://") else { throw bad("has no postgres:// scheme") }
        let scheme = rest[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "postgres" || scheme == "postgresql" else { throw bad("has the scheme \(scheme)://") }
        rest = rest[schemeEnd.upperBound...]
        var query = Substring("")
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var userInfo: Substring? = nil
        if let at = rest.lastIndex(of: "@") {
            userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }
        var hostPart = rest
        var port = 5432
        if let colon = hostPart.lastIndex(of: ":"), !hostPart.hasSuffix("]") {
            guard let p = Int(hostPart[hostPart.index(after: colon)...]), (1...65535).contains(p) else {
                throw bad("has a port that is not a number between 1 and 65535")
            }
            port = p
            hostPart = hostPart[..<colon]
        }
        if hostPart.hasPrefix("["), hostPart.hasSuffix("]") { hostPart = hostPart.dropFirst().dropLast() }
        guard !hostPart.isEmpty else { throw bad("names no host") }
        var user = environment["PGUSER"] ?? "postgres"
        var password: String? = nil
        if let userInfo {
            if let colon = userInfo.firstIndex(of: ":") {
                user = String(userInfo[..<colon]).removingPercentEncoding ?? String(userInfo[..<colon])
                let p = userInfo[userInfo.index(after: colon)...]
                password = String(p).removingPercentEncoding ?? String(p)
            } else {
                user = String(userInfo).removingPercentEncoding ?? String(userInfo)
            }
        }
        let database = path.isEmpty ? user : (String(path).removingPercentEncoding ?? String(path))
        var sslMode = "prefer"
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { continue }
            if kv[0] == "sslmode" {
                let m = String(kv[1])
                guard ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(m) else {
                    throw bad("has sslmode=\(m)")
                }
                sslMode = m
            }
        }
        self.host = String(hostPart)
        self.port = port
        self.user = user
        self.database = database
        self.sslMode = sslMode
        self.redacted = scrubbed
        self.password = password ?? PostgresURL.passwordFromFile(host: self.host, port: port, database: database,
                                                                  user: user, environment: environment)
    }

    /// The URL with any password replaced by `***`: the only form ever printed.
    public static func redact(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://") else {
            // Not a URL we understand: print nothing that could be a secret.
            return text.contains("@") || text.contains(":") ? "(unparseable URL)" : text
        }
        let afterScheme = text[schemeEnd.upperBound...]
        let authorityEnd = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
        let authority = afterScheme[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@") else { return text }
        let userInfo = authority[..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return text }
        return String(text[..<schemeEnd.upperBound]) + userInfo[..<colon] + ":***" + String(text[at...])
    }

    static func passwordFromFile(host: String, port: Int, database: String, user: String,
                                 environment: [String: String]) -> String? {
        guard let file = environment["PGPASSFILE"], let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            return nil
        }
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            var fields: [String] = []
            var current = ""
            var escaped = false
            for c in line {
                if escaped { current.append(c); escaped = false } else if c == "\\" { escaped = true } else if c == ":" {
                    fields.append(current); current = ""
                } else { current.append(c) }
            }
            fields.append(current)
            guard fields.count == 5 else { continue }
            let want = [host, String(port), database, user]
            if zip(fields.prefix(4), want).allSatisfy({ $0 == "*" || $0 == $1 }) { return fields[4] }
        }
        return nil
    }

    /// The pool's configuration: the same server, login and TLS as `connectionConfiguration()`.
    /// No connection is kept open while idle, and a keep-alive query runs on an idle one.
    public func clientConfiguration() throws -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch sslMode {
        case "disable": tls = .disable
        default:
            var config = TLSConfiguration.makeClientConfiguration()
            if sslMode != "verify-ca" && sslMode != "verify-full" { config.certificateVerification = .none }
            if sslMode == "verify-ca" { config.certificateVerification = .noHostnameVerification }
            tls = (sslMode == "prefer" || sslMode == "allow") ? .prefer(config) : .require(config)
        }
        var c = PostgresClient.Configuration(host: host, port: port, username: user, password: password,
                                             database: database, tls: tls)
        c.options.connectTimeout = .seconds(10)
        c.options.minimumConnections = 0
        c.options.maximumConnections = 4
        c.options.connectionIdleTimeout = .seconds(60)
        c.options.additionalStartupParameters = [("application_name", "syncledger")]
        return c
    }

    public func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch sslMode {
        case "disable":
            tls = .disable
        default:
            var config = TLSConfiguration.makeClientConfiguration()
            if sslMode != "verify-ca" && sslMode != "verify-full" { config.certificateVerification = .none }
            if sslMode == "verify-ca" { config.certificateVerification = .noHostnameVerification }
            let context: NIOSSLContext
            do { context = try NIOSSLContext(configuration: config) } catch {
                throw SinkError(.connection, "cannot set up TLS for \(redacted): \(error)")
            }
            tls = (sslMode == "prefer" || sslMode == "allow") ? .prefer(context) : .require(context)
        }
        var c = PostgresConnection.Configuration(host: host, port: port, username: user, password: password,
                                                 database: database, tls: tls)
        c.options.connectTimeout = .seconds(10)
        c.options.additionalStartupParameters = [("application_name", "syncledger")]
        return c
    }
}
