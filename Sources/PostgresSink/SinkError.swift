import Foundation
import PostgresNIO

/// One line saying what went wrong with the PostgreSQL sink; never contains a password.
public struct SinkError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// The URL does not parse.
        case badURL
        /// No connection: refused, unreachable, lost mid-way, TLS.
        case connection
        /// The server refused the login (wrong password, unknown role or database).
        case authentication
        /// The role may not create or write the sink's schema (a read-only role).
        case permission
        /// The sink's tables are not the ones this syncledger created (edited by hand).
        case schemaEdited
        /// The sink has applied events the log no longer has.
        case logLostEvents
        /// Anything else the server said.
        case server
        /// The SQLite views could not be read.
        case views
    }

    public var kind: Kind
    public var message: String
    /// The error this one translates, when it is not PostgreSQL's (a damaged SQLite views page,
    /// which the CLI records for `status`).
    public var underlying: (any Error)?

    public init(_ kind: Kind, _ message: String, underlying: (any Error)? = nil) {
        self.kind = kind
        self.message = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        self.underlying = underlying
    }

    public var description: String { message }

    /// Translates whatever postgres-nio threw into one line naming the server (redacted) and,
    /// for a transaction, saying that nothing of it was applied.
    static func from(_ error: any Error, url: PostgresURL, doing what: String) -> SinkError {
        if let e = error as? SinkError { return e }
        if let t = error as? PostgresTransactionError {
            if let inner = t.closureError ?? t.commitError ?? t.beginError { return from(inner, url: url, doing: what) }
        }
        let nothing = "; nothing of it was applied, the next run resumes from the checkpoint"
        if error is ConnectionClosedMidStatement {
            return SinkError(.connection, "lost the connection to PostgreSQL at \(url.redacted) during \(what)" + nothing)
        }
        if let p = error as? PSQLError {
            if let info = p.serverInfo {
                let state = info[.sqlState] ?? ""
                let message = info[.message] ?? "error"
                switch state {
                case "28P01", "28000":
                    return SinkError(.authentication, "PostgreSQL at \(url.redacted) refused the login: \(message)")
                case "3D000":
                    return SinkError(.authentication, "PostgreSQL at \(url.redacted): \(message)")
                case "42501", "25006":
                    return SinkError(.permission, "PostgreSQL refused \(what): \(message) (the role \(url.user) needs CREATE on the database and ownership of the sink's schema)" + nothing)
                case "57P01", "57P02", "57P03":
                    return SinkError(.connection, "PostgreSQL at \(url.redacted) went away during \(what): \(message)" + nothing)
                case "42P01", "42703", "42804", "42P07", "3F000", "23502", "23514":
                    return SinkError(.schemaEdited, "PostgreSQL refused \(what): \(message) (SQLSTATE \(state)); the sink's schema looks edited by hand — run `syncledger postgres rebuild` to recreate it" + nothing)
                default:
                    return SinkError(.server, "PostgreSQL refused \(what): \(message) (SQLSTATE \(state))" + nothing)
                }
            }
            switch p.code {
            case .connectionError, .serverClosedConnection, .uncleanShutdown, .clientClosedConnection,
                 .sslUnsupported, .failedToAddSSLHandler:
                let why = p.underlying.map { " (\(String(describing: $0)))" } ?? ""
                return SinkError(.connection, "lost or could not open the connection to PostgreSQL at \(url.redacted) during \(what)\(why)" + nothing)
            case .authMechanismRequiresPassword:
                return SinkError(.authentication, "PostgreSQL at \(url.redacted) asks for a password: put it in the URL or in PGPASSFILE")
            default:
                return SinkError(.server, "PostgreSQL error during \(what): \(p.code)" + nothing)
            }
        }
        if error is ChannelError || error is IOError || String(describing: type(of: error)).contains("Connect") {
            return SinkError(.connection, "cannot reach PostgreSQL at \(url.redacted): \(error)")
        }
        return SinkError(.server, "\(what) failed: \(error)", underlying: error)
    }
}

/// The connection of a statement in flight closed (PostgresSink.failingWhenClosed).
struct ConnectionClosedMidStatement: Error {}
