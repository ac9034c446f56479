import Domain
import Foundation
import Hummingbird
import HummingbirdCore
import NIOHTTP1
import NIOHTTPTypes
import IntakeQ
import JSONCore
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Projections
import ServiceLifecycle
import UnixSignals
import Sync

/// `syncledger serve`: one long-running process on the store. Hummingbird answers HTTP; a worker
/// (the `Coordinator`) runs syncs one at a time on a dedicated executor; an optional scheduler
/// queues the nightly run. SIGTERM/SIGINT: stop accepting, let the run in progress finish, close
/// the inbox (durable after every webhook already), return.
public final class SyncLedgerServer: Sendable {
    let config: ServeConfiguration
    let coordinator: Coordinator
    let tokens: TokenRegistry
    /// The views requests read (reopened when a rebuild replaced the file; `ViewsHandle`).
    let viewsHandle: ViewsHandle
    var views: ProjectionStore { viewsHandle.current }
    let store: Store
    /// The practice's zone (`--timezone`, else the roster's): the API's days and `*_local` times.
    let zone: ZoneRules
    let admin: AdminSite
    let ready = NIOLockedValueBox(false)
    let lastCatchUp = NIOLockedValueBox(0.0)
    /// `--postgres`: the sink following the log (nil without it).
    let postgres: PostgresFollower?
    /// This server's own metrics registry (see `ServerMetrics`).
    public let metrics = ServerMetrics()
    /// The built-in alerts (`--alert-webhook`, `--alert-command`).
    public let alerts: AlertEngine
    let startedAt: Int64
    /// Held for the server's life: one server per store.
    let serveLock: ServeLock
    /// Set after a run: the alert conditions are checked again at once.
    let alertsDue = NIOLockedValueBox(true)
    /// `currentRoster` and the modification time of `keys/forgotten` it was made at (µs).
    let rosterCache = NIOLockedValueBox<(stamp: Int64, roster: Roster)?>(nil)

    /// The threads `blocking` runs on: NIO's shared pool; a test gives its server a pool of its own.
    let blockingPool: NIOThreadPool

    public convenience init(config: ServeConfiguration) throws {
        try self.init(config: config, blockingPool: .singleton)
    }

    init(config: ServeConfiguration, blockingPool: NIOThreadPool) throws {
        self.blockingPool = blockingPool
        if let s = config.webhookSecret, s.count < 32 {
            throw ServeError("the webhook secret must be at least 32 characters (it is the webhook URL's only protection)")
        }
        var store = try Store.openOrCreate(config.storePath)
        store.keysDirectory = config.keysPath
        self.store = store
        // As every other command: a log that lost acknowledged events is refused (one line),
        // rather than served as if all were well while every run fails.
        try Trust.requireNoLoss(store)
        // A key store the master key does not open is refused as every other command refuses it:
        // the server answered ready and accepted runs that then failed, each with no run
        // recorded and so no alert (hostile test). A store with no key store yet makes it at its
        // first run, as before.
        // So are the other key problems a run refuses: no key store where the log holds sealed
        // data, and a master key file named that cannot be read (cold review).
        do {
            if FileManager.default.fileExists(atPath: store.keysPath + "/master.check") {
                let ring = try KeyRing.open(directory: store.keysPath, create: false)
                if let exposed = ring.masterKeyExposure { config.logger.warning("\(exposed)") }
            } else {
                if let words = try SyncSession.missingKeyStore(store, named: config.keysPath) { throw ServeError(words) }
                if let named = try KeyRing.namedMasterKeyFile(keys: store.keysPath) {
                    _ = try KeyRing.checkMasterKeyFile(named)
                }
            }
        } catch let e as LedgerError {
            throw ServeError(e.message)
        }
        serveLock = try ServeLock(statePath: store.statePath)
        do { zone = try PracticeZone.load(config.zoneName) } catch let e as LocalTimeError { throw ServeError(e.message) }
        let inbox = try WebhookInbox(path: store.statePath + "/webhook-inbox.log")
        self.config = config
        let follower = config.postgres.map { PostgresFollower(sink: $0, storePath: config.storePath, keysPath: config.keysPath, logger: config.logger) }
        postgres = follower
        var afterWrite: (@Sendable () -> Void)? = nil
        if let follower { afterWrite = { follower.poke() } }
        coordinator = Coordinator(config: config, inbox: inbox, afterWrite: afterWrite)
        tokens = try TokenRegistry(path: config.tokensPath, optional: config.tokensFileOptional, logger: config.logger)
        viewsHandle = try ViewsHandle(store: store, logger: config.logger)
        admin = try AdminSite(zone: zone, statePath: store.statePath)
        alerts = AlertEngine(targets: config.alertTargets, storePath: store.path, logger: config.logger, now: config.alertClock)
        startedAt = config.alertClock()
        let metrics = self.metrics
        let due = alertsDue
        coordinator.afterRun.withLockedValue {
            $0 = { outcome in
                if let n = outcome?.responses429, n > 0 { metrics.responses429(n) }
                due.withLockedValue { $0 = true }
            }
        }
        let ready = self.ready
        // A views file replaced by another process (`forget`, `repair`, a rebuild of damaged views)
        // comes with events the PostgreSQL copy has not seen: a forgotten patient's rows stayed
        // there until the server's next run, hours on a quiet store (hostile test, stop 56).
        viewsHandle.onSwitch.withLockedValue {
            $0 = {
                ready.withLockedValue { $0 = true }
                follower?.poke()
            }
        }
        coordinator.onViewsDamage.withLockedValue {
            $0 = { [weak self] words, readFrom in
                guard let self else { return }
                Task { await self.noteViewsDamage(words: words, readFrom: readFrom) }
            }
        }
    }

    /// Blocking file and SQLite work, on NIO's thread pool (never on the cooperative pool).
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await blockingPool.runIfActive(body)
    }

    /// Brings the server's views up to the log's head (another process may have written).
    func catchUp() async throws {
        let views = self.views
        let store = self.store
        _ = try await blocking {
            let reader = try LedgerReader(store: store)
            return try views.catchUp(reader).applied
        }
        lastCatchUp.withLockedValue { $0 = Date().timeIntervalSince1970 }
    }

    /// Runs until SIGTERM/SIGINT (or `shutdown` of the returned group's trigger).
    public func run() async throws {
        let group = try makeGroup(signals: [.sigterm, .sigint])
        do {
            try await group.run()
        } catch let e as IOError where e.errnoCode == EADDRINUSE || e.errnoCode == EADDRNOTAVAIL || e.errnoCode == EACCES {
            // The listening socket: the other services have stopped; say which address, once.
            throw ServeError("cannot listen on \(config.host):\(config.port): \(String(cString: strerror(e.errnoCode)))")
        }
    }

    /// Connections close after `config.idleTimeoutSeconds` without a byte, between requests or
    /// inside one (its head or its body): a client that opened connections and stopped
    /// mid-request held them for good (hostile test: 200 s, then no descriptor was left and the
    /// server stopped answering), and a shutdown waited for such a request without end.
    ///
    /// How many connections are served at once by default; more wait in the listen backlog until
    /// one closes. Half the descriptors the process may open beyond 64, at least 8 and at most
    /// 1,000: the views, the log and the PostgreSQL follower need the rest.
    static func maxConnections() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 256 }
        let soft = Int(clamping: limit.rlim_cur)
        // An idle server holds ~26 descriptors (the views' connections and WAL, the log, timers):
        // half of what is left past 64, so a request let in still finds one (hostile test: at
        // 64 descriptors, half of them for connections left a status request "Too many open files").
        return max(8, min(1000, (soft - 64) / 2))
    }

    /// The service group: the worker first, the HTTP server last (it stops first on shutdown).
    public func makeGroup(signals: [UnixSignal]) throws -> ServiceGroup {
        let logger = config.logger
        // Before any service starts: a request taken first would rewrite the queue file
        // without the runs it holds (review).
        coordinator.restoreQueue(nothingToSync: { [unowned self] in self.nothingToSync($0) })
        let responder = ServiceResponder(server: self)
        let onListening = config.onListening
        let idle = Int64(config.idleTimeoutSeconds)
        let app = Application(
            responder: responder,
            server: .http1(configuration: .init(
                additionalChannelHandlers: [RequestDeadlineHandler(seconds: idle * RequestDeadlineHandler.idleTimeouts, idleSeconds: idle,
                                                                    logger: logger)],
                idleTimeout: .seconds(idle))),
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: nil,
                                 availableConnectionsDelegate: MaximumAvailableConnections(config.maxConnections ?? Self.maxConnections(), logger: logger)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
                onListening?(port)
            },
            logger: logger)
        // The PostgreSQL follower first, then the alerts: they stop last, after the worker's last run.
        var services: [any Service] = postgres.map { [$0] } ?? []
        services += [AlertService(server: self), ViewsWatchService(server: self), WorkerService(server: self)]
        if let at = config.dailyAt { services.append(SchedulerService(coordinator: coordinator, at: at, zone: zone)) }
        services.append(app)
        return ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: signals, logger: logger))
    }
}

/// Catches the views up, then works the queue and the inbox until shutdown.
struct WorkerService: Service {
    let server: SyncLedgerServer

    func run() async throws {
        let c = server.coordinator
        let readFrom = server.viewsHandle.currentFile
        do {
            try await server.catchUp()
            server.ready.withLockedValue { $0 = true }
        } catch is CancellationError {
            // The server is stopping before it ever served (its address could not be bound, a
            // signal): nothing is wrong with the views, and the one line that says why is the
            // caller's.
        } catch {
            server.config.logger.error("the views could not catch up", metadata: ["error": "\(error)"])
            await server.noteViewsDamage(error, readFrom: readFrom)
        }
        await withGracefulShutdownHandler {
            await c.work()
        } onGracefulShutdown: {
            c.stop()
        }
        c.inbox.close()
        // The inbox is closed: another server may take the store (a restart in one process).
        server.serveLock.release()
        let queued = c.state.withLockedValue { $0.queue.count }
        server.config.logger.info("stopped: the run in progress finished, the inbox and the queued runs are on disk",
                                  metadata: ["inbox_depth": "\(c.inbox.depth)", "queued_runs": "\(queued)"])
    }
}

struct SchedulerService: Service {
    let coordinator: Coordinator
    let at: (hour: Int, minute: Int)
    let zone: ZoneRules

    /// Ends by cancellation: stopping the coordinator here, as it did, ended the worker's loop
    /// before the service group had asked the worker to stop, and the group took that for a
    /// failure ("A service has finished unexpectedly", exit 1 on every SIGTERM with
    /// `--daily-at`: hostile test). The worker stops the coordinator in its own turn.
    func run() async throws {
        let c = coordinator
        let (at, zone) = (at, zone)
        await cancelWhenGracefulShutdown {
            await c.schedule(at: at, in: zone)
        }
    }
}

/// Closes a connection whose request (head to end) has not arrived whole within its deadline:
/// `--idle-timeout` restarts with every piece of a body, so a client sending a byte every few
/// seconds held its connection (and, with the connection cap, a slot) for as long as it liked
/// (cold review). The deadline is `idleTimeouts` idle timeouts from the request's head (60 s
/// by default; a 1 MiB webhook then needs ~17 KB/s).
///
/// And one that stops reading its answers: while the socket cannot take more, a connection on
/// which no write completed for an idle timeout is closed. Hummingbird's idle timeout counts only
/// reads and does not run while an answer is written, so a client that pipelined requests and
/// never read the answers held its connection, and a SIGTERM waited for it, for as long as the
/// client kept the socket open (hostile test: 2,000 pipelined requests, then nothing). A client
/// that reads slowly keeps its connection: every write that completes starts the wait again.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    static let idleTimeouts: Int64 = 3
    private let limit: TimeAmount
    private let writeLimit: TimeAmount
    private var deadline: Scheduled<Void>?
    /// Set while the channel is not writable: fires `writeLimit` after the last completed write.
    private var stalledWrites: Scheduled<Void>?
    private var lastWriteDone = NIODeadline.uptimeNanoseconds(0)

    /// Where `ConnectionCloseHandler` says that a request could not be read.
    private let logger: Logger?

    /// `seconds`: from a request's head to its end; `idleSeconds`: without a completed write
    /// while the socket is full.
    init(seconds: Int64, idleSeconds: Int64, logger: Logger? = nil) {
        limit = .seconds(seconds)
        writeLimit = .seconds(idleSeconds)
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            deadline?.cancel()
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            deadline = context.eventLoop.scheduleTask(in: limit) { bound.value.close(promise: nil) }
        case .end:
            deadline?.cancel()
            deadline = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    /// A large body is written in pieces of this size, so that a slow reader's progress is seen
    /// (a write completes only when all of it is in the socket): 16 KiB per idle timeout keeps
    /// a connection. The pieces share the body's storage.
    static let piece = 16 * 1024

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .body(var body) = unwrapOutboundIn(data), body.readableBytes > Self.piece {
            while body.readableBytes > Self.piece, let piece = body.readSlice(length: Self.piece) {
                context.write(wrapOutboundOut(.body(piece)), promise: tracked(nil, context))
            }
            context.write(wrapOutboundOut(.body(body)), promise: tracked(promise, context))
        } else {
            context.write(data, promise: tracked(promise, context))
        }
    }

    /// `promise` (or a new one) noting when its write completes.
    private func tracked(_ promise: EventLoopPromise<Void>?, _ context: ChannelHandlerContext) -> EventLoopPromise<Void> {
        let done = promise ?? context.eventLoop.makePromise()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        done.futureResult.whenSuccess { bound.value.lastWriteDone = loop.now }
        return done
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stalledWrites?.cancel()
            stalledWrites = nil
        } else if stalledWrites == nil {
            lastWriteDone = context.eventLoop.now
            watchWrites(context: context, in: writeLimit)
        }
        context.fireChannelWritabilityChanged()
    }

    /// Closes the connection when no write completed for `writeLimit`; else looks again then.
    private func watchWrites(context: ChannelHandlerContext, in delay: TimeAmount) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        stalledWrites = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = bound.value
            let quiet = context.eventLoop.now - handler.lastWriteDone
            if quiet >= handler.writeLimit {
                handler.stalledWrites = nil
                context.close(promise: nil)
            } else {
                handler.watchWrites(context: context, in: handler.writeLimit - quiet)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        context.fireChannelInactive()
    }

    /// Puts `ConnectionCloseHandler` right after the HTTP/1 decoder, where a request still has
    /// its HTTP version (this handler is added behind the codec that drops it).
    func handlerAdded(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        guard let decoder = try? pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self),
              (try? pipeline.handler(type: ConnectionCloseHandler.self)) == nil
        else { return }
        try? pipeline.addHandler(ConnectionCloseHandler(logger: logger), position: .after(decoder))
    }

    func handlerRemoved(context: ChannelHandlerContext) { cancelTimers() }

    private func cancelTimers() {
        deadline?.cancel()
        deadline = nil
        stalledWrites?.cancel()
        stalledWrites = nil
    }
}

/// Closes a connection once an answer that ends it is written: the answer to a request that did
/// not ask to keep the connection (HTTP/1.0 without `Connection: keep-alive`, or `Connection:
/// close` in any spelling), and an answer that says `Connection: close` (a 413: the rest of
/// its body is not read).
///
/// Hummingbird keeps a connection after an answer unless the request's `Connection` header is
/// exactly "close", and past its codec a request no longer carries its HTTP version: an
/// HTTP/1.0 client that reads its answer until the connection closes (a script over `nc`, a
/// simple monitor) waited for the idle timeout, 20 s, on every probe (hostile test). Here,
/// in front of that codec, the version is still known: the request is marked "close" for
/// Hummingbird, its answer says so too, and the output is closed once the answer's end is
/// written, so the client reads to its end at once; the connection is closed whole
/// `lingering` later if the client has not closed it by then.
///
/// It also says, in one log line, why a request that could not be read as HTTP (a header over
/// the decoder's limit, bytes that are not HTTP) was refused: Hummingbird answers it with a
/// bare 400 and logs it only at debug level, so a proxy whose requests all failed so left no
/// trace (hostile test).
final class ConnectionCloseHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let logger: Logger?

    init(logger: Logger?) { self.logger = logger }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Not a connection that closed mid-request (the decoder then finds its input cut short:
        // `invalidEOFState`), nor bytes sent after a request that closed the connection
        // (`closedConnection`: they are dropped unread, as they should be): no 400 answered those.
        if let error = error as? HTTPParserError, error != .invalidEOFState, error != .closedConnection,
           context.channel.isActive {
            logger?.warning("request refused (400): it could not be read as HTTP", metadata: [
                "error": "\(error)", "peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")",
            ])
        }
        context.fireErrorCaught(error)
    }

    /// For each request read and not yet answered, in order: whether it asked to close, and
    /// whether it was an HTTP/1.0 request that asked to be kept alive (its answer must say so).
    private var asked = CircularBuffer<(close: Bool, keepAlive10: Bool)>()
    /// Between an answer's head and its end.
    private var responding = false
    private var closeAfterEnd = false
    /// The whole connection's close, a while after its output's.
    private var lingering: Scheduled<Void>?

    /// How long a connection whose output was closed may still send (the rest of a body it
    /// meant to send before reading the answer) before it is closed whole: closed at once, the
    /// unread bytes would make the kernel reset it, and the client could lose the answer.
    /// nginx's `lingering_timeout` is 5 s too.
    static let lingering: TimeAmount = .seconds(5)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let close = !head.isKeepAlive
        // Asked to confirm before the body is sent: nothing answers it behind this handler, and
        // the client waited (curl 1 s, .NET 350 ms) before it sent the body anyway. Confirmed only
        // when nothing else is being answered on the connection (an earlier pipelined request's
        // answer would take the 100 for its own), when there is a body, and when it is within
        // the route's limit (over it, the 413 comes without one).
        let length = head.headers.first(name: "content-length").flatMap { Int($0) }
        let chunked = head.headers[canonicalForm: "transfer-encoding"].contains { $0.lowercased() == "chunked" }
        let limit = head.uri.hasPrefix("/api/") ? ServiceResponder.maxAPIBodyBytes : ServiceResponder.maxWebhookBytes
        if head.version == .http1_1, asked.isEmpty, !responding,
           head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }),
           length.map({ $0 > 0 && $0 <= limit }) ?? chunked {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
        }
        asked.append((close, !close && head.version == .http1_0))
        if close {
            head.headers.replaceOrAdd(name: "connection", value: "close")
            context.fireChannelRead(wrapInboundOut(.head(head)))
        } else {
            context.fireChannelRead(data)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200:
            // Final answers go out in the requests' order (an informational one, 1xx, precedes
            // its request's final answer and is passed on as it is).
            let request = asked.popFirst() ?? (false, false)
            responding = true
            guard request.close || !head.isKeepAlive else {
                // HTTP/1.0 keeps a connection only when the answer says so too.
                if request.keepAlive10 { head.headers.replaceOrAdd(name: "connection", value: "keep-alive") }
                return context.write(wrapOutboundOut(.head(head)), promise: promise)
            }
            closeAfterEnd = true
            head.headers.replaceOrAdd(name: "connection", value: "close")
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end where closeAfterEnd:
            closeAfterEnd = false
            responding = false
            let done = promise ?? context.eventLoop.makePromise()
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            done.futureResult.whenComplete { _ in
                let context = bound.value
                context.close(mode: .output, promise: nil)
                handler.value.lingering = context.eventLoop.scheduleTask(in: Self.lingering) { bound.value.close(promise: nil) }
            }
            context.write(data, promise: done)
        case .end:
            responding = false
            context.write(data, promise: promise)
        default:
            context.write(data, promise: promise)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        lingering?.cancel()
        lingering = nil
        context.fireChannelInactive()
    }
}

extension SyncLedgerServer {
    /// Why a run of a roster scope would have nothing to sync because of `forget`, or nil: a
    /// forgotten patient stays in the roster file, and a run asked for them was accepted (202)
    /// and then failed (hostile test). An organization the roster lists with no patients is
    /// left as before (its run says so).
    func nothingToSync(_ scope: RunScope) -> String? {
        let now = currentRoster
        switch scope {
        case .all:
            guard !config.roster.allPatients.isEmpty, now.allPatients.isEmpty else { return nil }
            return "every patient of the roster was forgotten (`syncledger forget`); nothing to sync"
        case .org(let id):
            guard config.roster.organization(id)?.patients.isEmpty == false, now.organization(id)?.patients.isEmpty ?? true else { return nil }
            return "every patient of organization '\(id)' was forgotten (`syncledger forget`); nothing to sync"
        case .patient(let id):
            guard config.roster.patient(id) != nil, now.patient(id) == nil else { return nil }
            return "patient '\(id)' was forgotten (`syncledger forget`); nothing to sync"
        }
    }

    /// The roster the server was started with, less the patients forgotten since: `forget`
    /// leaves the roster file as it is, and the admin pages listed a forgotten patient by name
    /// in their patient lists and name search (hostile test).
    /// Made again only when `keys/forgotten` changed (a forget adds a tombstone to it): pages
    /// ask once per row (review: a check per roster patient per row).
    var currentRoster: Roster {
        let keys = store.keysPath
        let modified = (try? FileManager.default.attributesOfItem(atPath: keys + "/forgotten"))?[.modificationDate] as? Date
        let stamp = modified.map { Int64(($0.timeIntervalSince1970 * 1e6).rounded()) } ?? -1
        if let cached = rosterCache.withLockedValue({ $0 }), cached.stamp == stamp { return cached.roster }
        var roster = config.roster
        for i in roster.organizations.indices {
            roster.organizations[i].patients.removeAll { KeyRing.isForgotten(directory: keys, patient: $0.id) }
        }
        rosterCache.withLockedValue { $0 = (stamp, roster) }
        return roster
    }
}
