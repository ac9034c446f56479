import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import PostgresSink
import ServiceLifecycle

/// `serve --postgres URL`: the PostgreSQL sink follows the log. The coordinator pokes it after
/// every run it makes (a manual, scheduled or webhook run); pokes that arrive during a catch-up
/// coalesce into one more. Catch-ups run apart from the worker, so a slow or unreachable
/// PostgreSQL never delays a sync; a failed one is one log line (never the password) and the
/// next poke resumes from the sink's checkpoint.
///
/// The sink's `PostgresClient` runs for as long as this service: it is started here rather than
/// as a service of its own because the client stops at the first sign of a graceful shutdown,
/// and the catch-up after the server's last run comes after that sign (this service is the
/// first in the group, so it is shut down last, after the worker).
final class PostgresFollower: Service, Sendable {
    let sink: PostgresSink
    let storePath: String
    let keysPath: String?
    let logger: Logger
    private let pokes: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    /// The catch-up's SQLite work (folding the views, reading the snapshot) runs on a queue of
    /// its own, never on the cooperative pool.
    private let executor = WriterExecutor()
    /// What the tests (and a later status field) can see: the last catch-up's seq and error.
    let state = NIOLockedValueBox(FollowerState())

    struct FollowerState: Sendable {
        var seq: UInt64?
        var lastError: String?
        var catchUps = 0
    }

    init(sink: PostgresSink, storePath: String, keysPath: String?, logger: Logger) {
        self.sink = sink
        self.storePath = storePath
        self.keysPath = keysPath
        self.logger = logger
        (pokes, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    var snapshot: FollowerState { state.withLockedValue { $0 } }

    /// Asks for a catch-up (after a write); cheap and never blocks.
    func poke() { continuation.yield() }

    func run() async throws {
        // Not inheriting the group's graceful-shutdown signal: see the type's comment.
        let client = Task.detached { [sink] in try await sink.run() }
        poke()
        await withGracefulShutdownHandler {
            for await _ in pokes { await catchUp() }
        } onGracefulShutdown: { [continuation] in
            // The loop drains the poke already waiting (the last run's), then ends.
            continuation.finish()
        }
        client.cancel()
        _ = await client.result
    }

    func catchUp() async {
        let sink = self.sink
        let (storePath, keysPath) = (self.storePath, self.keysPath)
        do {
            let report = try await withTaskExecutorPreference(executor) {
                var store = try Store.open(storePath)
                store.keysDirectory = keysPath
                return try await sink.catchUp(store: store)
            }
            state.withLockedValue { s in
                s.seq = report.seq
                s.lastError = nil
                s.catchUps += 1
            }
            if report.rebuilt || report.events > 0 {
                logger.info("postgres caught up", metadata: [
                    "schema": "\(sink.schema)", "seq": "\(report.seq)", "events": "\(report.events)",
                    "rows": "\(report.rows)", "rebuilt": "\(report.rebuilt)",
                ])
            }
            for note in report.notes { logger.warning("postgres: \(note)") }
        } catch {
            // SinkError's text names the server by its redacted URL only.
            let line = (error as? SinkError)?.message ?? "\(error)"
            state.withLockedValue { s in
                s.lastError = line
                s.catchUps += 1
            }
            logger.error("postgres catch-up failed; the next run retries from the checkpoint", metadata: ["error": "\(line)"])
        }
    }
}
