import EventLog
import Foundation
import GRDB
import GRDBSQLite
import JSONCore
import Ledger
import Logging
import PostgresNIO
import Projections
import ServiceLifecycle
import Synchronization

/// What a catch-up or rebuild of the PostgreSQL sink did.
public struct SinkReport: Sendable {
    /// The seq the sink holds now.
    public var seq: UInt64 = 0
    /// The seq it held before (0 for a new or rebuilt sink).
    public var fromSeq: UInt64 = 0
    /// Rows written (deleted rows not counted).
    public var rows = 0
    /// True when the sink was rebuilt (fresh schema, version change, or a checkpoint the log no longer has).
    public var rebuilt = false
    /// Why it was rebuilt, and other things worth a line.
    public var notes: [String] = []
    /// Events between the old and the new checkpoint.
    public var events: UInt64 { seq > fromSeq ? seq - fromSeq : 0 }
    /// Where a catch-up's time went, in seconds: `delta` (finding the changed keys), `delete`
    /// (the changed keys' old rows), `copy` (COPYing the new rows, the SQLite reads overlapping).
    public var seconds: [String: Double] = [:]
    /// Where a catch-up found the changed keys: "log" or "stream index" (nil: it did not look).
    public var deltaSource: String?
}

/// The PostgreSQL sink: the rows of the SQLite views (appointments, appointment_patients,
/// appointment_meeting_urls, appointment_locations, sync_logs) shipped into one PostgreSQL
/// schema, exactly once.
///
/// Design: the fold is the SQLite projections' own (one fold, two sinks, no second copy of the
/// rules to drift). A catch-up first brings the SQLite views to the log's head N, takes a
/// read snapshot of them, then in ONE PostgreSQL transaction: takes the schema's advisory lock
/// and locks its checkpoint rows (`FOR UPDATE`), reads the sink's checkpoint C, works out from the
/// log's events (C, N] which keys changed (appointment ids, run ids; a roster or settings event
/// changes every appointment) — from the log itself or, for a large range, from the snapshot's
/// stream index, whichever is cheaper (`ViewsSnapshot.delta`) — deletes those keys' rows and COPYs the snapshot's rows for them,
/// and moves the checkpoint to (N, chain hash of N). A second catch-up at the same time waits for
/// the lock, finds C = N and does nothing, so no event is ever applied twice; a catch-up cut off
/// anywhere commits nothing. A checkpoint whose chain hash is not the log's at that seq (or another
/// schema or fold version) triggers a rebuild; a checkpoint past the log's end is refused.
public final class PostgresSink: Service, Sendable {
    public let url: PostgresURL
    public let schema: String
    let logger: Logger
    /// The connection pool. It works only while `run()` (or `withRunning`) is active: `serve`
    /// puts the sink in its service group, the CLI and the tests run it around their operations.
    let client: PostgresClient
    let configuration: PostgresConnection.Configuration
    /// False until an operation succeeded, and again after a connection or login failure: the
    /// next operation then tries one plain connection first, so a wrong password or a stopped
    /// server fails at once with the server's reason (the pool would retry a failing login with
    /// back-off for up to a minute before failing the request).
    let healthy = Mutex(false)

    public static let defaultSchema = "syncledger"

    public init(url: PostgresURL, schema: String = PostgresSink.defaultSchema, logger: Logger? = nil) throws {
        guard SinkSchema.isValidSchemaName(schema) else {
            throw SinkError(.badURL, "--schema '\(schema)' is not a usable schema name (lower-case letters, digits and _, starting with a letter or _, at most 48 characters)")
        }
        self.url = url
        self.schema = schema
        let logger = logger ?? {
            var l = Logger(label: "syncledger.postgres")
            l.logLevel = .critical
            return l
        }()
        self.logger = logger
        self.configuration = try url.connectionConfiguration()
        self.client = PostgresClient(configuration: try url.clientConfiguration(), backgroundLogger: logger)
    }

    var shadow: String { schema + "__shadow" }
    var old: String { schema + "__old" }
    var q: String { SinkSchema.q(schema) }

    // MARK: Running

    /// Runs the connection pool until cancelled or a graceful shutdown (ServiceLifecycle).
    /// Call it once per sink.
    public func run() async throws {
        await client.run()
    }

    /// Runs the pool for the duration of `body` (the CLI's and the tests' one-shot use).
    public func withRunning<T: Sendable>(_ body: (PostgresSink) async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.client.run() }
            defer { group.cancelAll() }
            return try await body(self)
        }
    }

    // MARK: Connection

    /// Leases a pooled connection for one operation, translating any failure into one line.
    func withConnection<T: Sendable>(doing what: String, _ body: @escaping (PostgresConnection) async throws -> T) async throws -> T {
        if !healthy.withLock({ $0 }) {
            do {
                let probe = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
                try? await probe.close()
            } catch {
                throw SinkError.from(error, url: url, doing: "connecting")
            }
        }
        do {
            let work = UncheckedTransfer(body)
            let value = try await client.withConnection { conn in try await Self.failingWhenClosed(conn, work) }
            healthy.withLock { $0 = true }
            return value
        } catch {
            let e = SinkError.from(error, url: url, doing: what)
            if e.kind == .connection || e.kind == .authentication { healthy.withLock { $0 = false } }
            throw e
        }
    }

    /// Runs `body` on `conn`, but fails as soon as the connection closes. With postgres-nio
    /// 1.33.2's pool, a statement in flight when the server dies sometimes never completes,
    /// although its socket is gone (docs/POSTGRES.md, "A statement outliving its connection"):
    /// waiting for the connection's close as well turns that into the usual one-line connection
    /// error. Nothing is half-applied: the server rolls back a transaction whose connection is
    /// gone. The abandoned statement's task is cancelled and left to finish on its own.
    static func failingWhenClosed<T: Sendable>(_ conn: PostgresConnection,
                                             _ body: UncheckedTransfer<(PostgresConnection) async throws -> T>) async throws -> T {
        let outcome = Mutex<CheckedContinuation<T, any Error>?>(nil)
        let finish: @Sendable (Result<T, any Error>) -> Void = { result in
            if let c = outcome.withLock({ c -> CheckedContinuation<T, any Error>? in defer { c = nil }; return c }) {
                c.resume(with: result)
            }
        }
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            outcome.withLock { $0 = c }
            let work = Task {
                do { finish(.success(try await body.value(conn))) } catch { finish(.failure(error)) }
            }
            conn.closeFuture.whenComplete { _ in
                finish(.failure(ConnectionClosedMidStatement()))
                work.cancel()
            }
        }
    }

    /// An operation's closure moved to the task that runs it. Not checked by the compiler; it
    /// holds because the caller waits for that task, except when the connection closed under
    /// it: then the task is cancelled and only ever resumes (if postgres-nio completes the dead
    /// statement at all) into statements on a closed connection, which fail at once.
    struct UncheckedTransfer<Value>: @unchecked Sendable {
        let value: Value
        init(_ value: Value) { self.value = value }
    }

    func lock(_ c: PostgresConnection, _ purpose: String) async throws {
        try await c.query("SELECT pg_advisory_xact_lock(hashtext(\(purpose + ":" + schema)))", logger: logger)
    }

    // MARK: Schema

    enum SchemaState { case ready, missing, needsRebuild(String) }

    /// Creates the schema when it does not exist; otherwise checks it is the one this version
    /// created (tables, columns, types).
    ///
    /// Looked at under the schema's lock: `inspect` reads the catalog in several statements, and
    /// another process creating the schema (or swapping in a rebuilt one) between two of them
    /// would make a sound schema look half made ("the schema is not the one syncledger created").
    func prepareSchema(_ conn: PostgresConnection) async throws -> SchemaState {
        try await conn.withTransaction(logger: logger) { c in
            try await lock(c, "syncledger")
            let state = try await inspect(c, schema)
            guard case .missing = state else { return state }
            try await c.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(q)"), logger: logger)
            for sql in SinkSchema.createTables(in: schema) + SinkSchema.createIndexes(in: schema) {
                try await c.query(PostgresQuery(unsafeSQL: sql), logger: logger)
            }
            return .ready
        }
    }

    func inspect(_ c: PostgresConnection, _ name: String) async throws -> SchemaState {
        let rows = try await c.query(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = \(name)",
            logger: logger)
        var found: [String: String] = [:]
        for try await (t, col, type) in rows.decode((String, String, String).self) { found[t + "." + col] = type }
        if found.isEmpty {
            let exists = try await c.query("SELECT 1 FROM pg_namespace WHERE nspname = \(name)", logger: logger)
            var any = false
            for try await _ in exists { any = true }
            if !any { return .missing }
        }
        // An older layout is rebuilt, not patched: it is derived data.
        if found["checkpoints.schema_version"] != nil {
            let versions = try await c.query(
                PostgresQuery(unsafeSQL: "SELECT DISTINCT schema_version FROM \(SinkSchema.q(name)).checkpoints"), logger: logger)
            for try await v in versions.decode(Int.self) where v != SinkSchema.version {
                return .needsRebuild("the sink's schema \(name) is at version \(v) and this syncledger writes version \(SinkSchema.version)")
            }
        }
        var problems: [String] = []
        for (key, type) in SinkSchema.expectedColumns.sorted(by: { $0.key < $1.key }) {
            guard let have = found[key] else { problems.append("\(key) is missing"); continue }
            if have != type { problems.append("\(key) is \(have), not \(type)") }
        }
        if !problems.isEmpty {
            throw SinkError(.schemaEdited, "the PostgreSQL schema \(name) is not the one syncledger created (\(problems.prefix(3).joined(separator: "; "))\(problems.count > 3 ? "; …" : "")); nothing was applied — run `syncledger postgres rebuild` to recreate it")
        }
        return .ready
    }

    // MARK: Catch-up

    /// The trust rules first: a log that no longer holds a head it acknowledged (`state/head`,
    /// the SQLite views' checkpoints) is not shipped anywhere until `repair` has dealt with it.
    static func requireNoLoss(_ store: Store) throws {
        do {
            try Trust.requireNoLoss(store)
        } catch {
            throw SinkError(.logLostEvents, "\(error); refusing to touch the PostgreSQL sink (`syncledger repair` first)")
        }
    }

    /// Brings the SQLite views and then the sink up to the log's head.
    public func catchUp(store: Store) async throws -> SinkReport {
        try Self.requireNoLoss(store)
        let reader = try LedgerReader(store: store)
        let views = try ProjectionStore(store: store)
        return try await catchUp(reader: reader, views: views)
    }

    public func catchUp(reader: LedgerReader, views: ProjectionStore) async throws -> SinkReport {
        try await withConnection(doing: "the catch-up") { [self] conn in
            if case .needsRebuild(let why) = try await prepareSchema(conn) {
                return try await rebuild(conn, reader: reader, views: views, reason: why)
            }
            let snap = try ViewsSnapshot(reader: reader, views: views)
            enum Outcome: Sendable { case done(SinkReport), rebuild(String) }
            let outcome: Outcome = try await conn.withTransaction(logger: logger) { c in
                try await lock(c, "syncledger")
                let cp = try await checkpoint(c, forUpdate: true)
                if let why = try reasonToRebuild(cp, snap) { return .rebuild(why) }
                var report = SinkReport()
                report.fromSeq = cp?.seq ?? 0
                report.seq = max(cp?.seq ?? 0, snap.seq)
                guard (cp?.seq ?? 0) < snap.seq else { return .done(report) }
                var delta = Delta.everything
                let t0 = ContinuousClock.now
                if let cp, cp.seq > 0 {
                    let source = try snap.deltaSource(after: cp.seq)
                    delta = try snap.delta(after: cp.seq, from: source)
                    report.deltaSource = source.rawValue
                }
                report.seconds["delta"] = (ContinuousClock.now - t0).seconds
                try await c.query(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(q)"), logger: logger)
                report.rows = try await ship(c, snap, delta, replace: true) { report.seconds[$0] = $1 }
                try await writeCheckpoint(c, snap)
                return .done(report)
            }
            switch outcome {
            case .done(let r): return r
            case .rebuild(let why): return try await rebuild(conn, reader: reader, views: views, reason: why)
            }
        }
    }

    struct Checkpoint: Sendable {
        var seq: UInt64
        var hash: String
        var schemaVersion: Int
        var foldVersions: [String: Int]
    }

    /// The sink's checkpoint (nil when it has none yet: a fresh schema).
    func checkpoint(_ c: PostgresConnection, forUpdate: Bool) async throws -> Checkpoint? {
        let rows = try await c.query(PostgresQuery(unsafeSQL:
            "SELECT projection, seq, chain_hash, schema_version, fold_version FROM \(q).checkpoints ORDER BY projection" + (forUpdate ? " FOR UPDATE" : "")),
            logger: logger)
        var out: Checkpoint? = nil
        for try await (p, seq, hash, sv, fv) in rows.decode((String, Int64, String, Int, Int).self) {
            if out == nil { out = Checkpoint(seq: UInt64(seq), hash: hash, schemaVersion: sv, foldVersions: [:]) }
            if UInt64(seq) != out!.seq || hash != out!.hash {
                // Rows are only ever written together; different seqs mean a hand edit.
                out!.schemaVersion = -1
            }
            out!.foldVersions[p] = fv
        }
        return out
    }

    func reasonToRebuild(_ cp: Checkpoint?, _ snap: ViewsSnapshot) throws -> String? {
        guard let cp else { return nil }
        if cp.schemaVersion != SinkSchema.version {
            return "the sink's checkpoints are inconsistent or of another schema version"
        }
        if cp.foldVersions != snap.foldVersions {
            return "the sink was folded by another version of the views (\(cp.foldVersions.sorted { $0.key < $1.key }.map { "\($0.key) v\($0.value)" }.joined(separator: ", ")))"
        }
        if cp.seq == 0 { return nil }
        if cp.seq > snap.head.seq {
            // The trust rules: a loss `repair --accept-loss` recorded is accepted here too.
            if try snap.logRecordsLoss() {
                return "the log lost events after seq \(snap.head.seq) that the sink had applied (through seq \(cp.seq)), and `repair --accept-loss` recorded that loss"
            }
            throw SinkError(.logLostEvents, "the PostgreSQL sink \(schema) has applied events through seq \(cp.seq) but the log ends at seq \(snap.head.seq): the log lost events; refusing to touch the sink (restore the log, or rebuild the sink from this log with `syncledger postgres rebuild` if that loss is accepted)")
        }
        guard let batch = try snap.reader.log.batch(containing: cp.seq), batch.lastSeq == cp.seq,
            hexString(batch.chainHash) == cp.hash
        else {
            return "the sink was built from a log whose chain at seq \(cp.seq) differs from this one"
        }
        return nil
    }

    func writeCheckpoint(_ c: PostgresConnection, _ snap: ViewsSnapshot, in name: String? = nil) async throws {
        let target = SinkSchema.q(name ?? schema)
        let names = SinkSchema.projections
        let folds = names.map { snap.foldVersions[$0] ?? 0 }
        try await c.query(PostgresQuery(unsafeSQL: "DELETE FROM \(target).checkpoints"), logger: logger)
        var query = PostgresQuery(unsafeSQL: "")
        query = """
            INSERT INTO \(unescaped: target).checkpoints (projection, seq, chain_hash, schema_version, fold_version, updated_at)
            SELECT p, \(Int64(snap.seq)), \(snap.hash), \(SinkSchema.version), f, now() FROM unnest(\(names)::text[], \(folds)::int[]) AS u(p, f)
            """
        try await c.query(query, logger: logger)
    }

    /// Deletes the changed keys' rows and COPYs the snapshot's rows for them. Returns rows written.
    ///
    /// The COPY text is read from the SQLite snapshot on a thread of its own (`CopyFeed`) while
    /// PostgreSQL deletes and copies: the deletes go first, then each table's COPY streams its rows
    /// as the feed reads them, so reading SQLite and writing PostgreSQL overlap instead of taking
    /// turns.
    func ship(_ c: PostgresConnection, _ snap: ViewsSnapshot, _ delta: Delta, replace: Bool,
              timed: (String, Double) -> Void = { _, _ in }) async throws -> Int {
        var jobs: [(table: SinkTable, keys: [String]?)] = []
        for table in SinkSchema.tables {
            let all = table.key == .appointment ? delta.allAppointments : delta.allRuns
            let keys = table.key == .appointment ? delta.appointmentIds : delta.runIds
            if !all && keys.isEmpty { continue }
            jobs.append((table, all ? nil : Array(keys)))
        }
        let feed = CopyFeed(snap, jobs)
        defer { feed.stop() }
        var t0 = ContinuousClock.now
        if replace {
            for (table, keys) in jobs {
                if let keys {
                    try await c.query(PostgresQuery(unsafeSQL: "DELETE FROM \(table.name) WHERE \(table.keyColumn) = ANY($1::text[])", binds: binds(keys)), logger: logger)
                } else {
                    try await c.query(PostgresQuery(unsafeSQL: "DELETE FROM \(table.name)"), logger: logger)
                }
            }
        }
        timed("delete", (ContinuousClock.now - t0).seconds)
        t0 = ContinuousClock.now
        var written = 0
        for (i, job) in jobs.enumerated() {
            var count = 0
            // (A table with no rows for these keys gets an empty COPY: one round trip.)
            try await c.copyFrom(table: job.table.name, columns: job.table.columns.map(\.name), logger: logger) { writer in
                for try await piece in feed.streams[i] {
                    switch piece {
                    case .chunk(let b): try await writer.write(b)
                    case .done(let n): count = n
                    }
                }
            }
            written += count
        }
        timed("copy", (ContinuousClock.now - t0).seconds)
        return written
    }

    func binds(_ keys: [String]) -> PostgresBindings {
        var b = PostgresBindings()
        b.append(keys)
        return b
    }

    // MARK: Rebuild

    /// Rebuilds the sink from the SQLite views (caught up to the log's head first) into a shadow
    /// schema, then swaps it in with one transaction; readers of the live schema see the old rows
    /// until the swap and the new ones after it, never a mix.
    public func rebuild(store: Store) async throws -> SinkReport {
        try Self.requireNoLoss(store)
        let reader = try LedgerReader(store: store)
        let views = try ProjectionStore(store: store)
        return try await rebuild(reader: reader, views: views)
    }

    public func rebuild(reader: LedgerReader, views: ProjectionStore) async throws -> SinkReport {
        try await withConnection(doing: "the rebuild") { [self] conn in
            try await rebuild(conn, reader: reader, views: views, reason: nil)
        }
    }

    func rebuild(_ conn: PostgresConnection, reader: LedgerReader, views: ProjectionStore, reason: String?) async throws -> SinkReport {
        let snap = try ViewsSnapshot(reader: reader, views: views)
        let shadowQ = SinkSchema.q(shadow)
        let rows: Int = try await conn.withTransaction(logger: logger) { c in
            // One rebuild at a time per schema; catch-ups of the live schema carry on meanwhile.
            try await lock(c, "syncledger-rebuild")
            try await c.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(shadowQ) CASCADE"), logger: logger)
            try await c.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA \(shadowQ)"), logger: logger)
            for sql in SinkSchema.createTables(in: shadow) {
                try await c.query(PostgresQuery(unsafeSQL: sql), logger: logger)
            }
            try await c.query(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(shadowQ)"), logger: logger)
            let rows = try await ship(c, snap, .everything, replace: false)
            for sql in SinkSchema.createIndexes(in: shadow) {
                try await c.query(PostgresQuery(unsafeSQL: sql), logger: logger)
            }
            try await writeCheckpoint(c, snap, in: shadow)
            try await copyGrants(c, from: schema, to: shadow)
            // The swap: wait for any catch-up of the live schema, then rename in one go.
            try await lock(c, "syncledger")
            try await c.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(SinkSchema.q(old)) CASCADE"), logger: logger)
            let exists = try await c.query("SELECT 1 FROM pg_namespace WHERE nspname = \(schema)", logger: logger)
            var live = false
            for try await _ in exists { live = true }
            if live {
                try await c.query(PostgresQuery(unsafeSQL: "ALTER SCHEMA \(q) RENAME TO \(SinkSchema.q(old))"), logger: logger)
            }
            try await c.query(PostgresQuery(unsafeSQL: "ALTER SCHEMA \(shadowQ) RENAME TO \(q)"), logger: logger)
            return rows
        }
        // The old generation goes in its own transaction: it waits for readers still inside it,
        // and nobody new looks it up by name.
        do {
            try await conn.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(SinkSchema.q(old)) CASCADE"), logger: logger)
        } catch {
            logger.warning("could not drop the previous generation \(old): \(String(reflecting: error))")
        }
        var report = SinkReport()
        report.seq = snap.seq
        report.rows = rows
        report.rebuilt = true
        if let reason { report.notes.append(reason + "; rebuilt it from the log") }
        return report
    }

    /// Gives the new generation the live one's grants (readers' USAGE and SELECT), so a rebuild
    /// does not lock out the dashboards.
    func copyGrants(_ c: PostgresConnection, from live: String, to target: String) async throws {
        var statements: [String] = []
        let schemaGrants = try await c.query("""
            SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type
            FROM pg_namespace n, aclexplode(n.nspacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
            WHERE n.nspname = \(live) AND a.grantee <> n.nspowner
            """, logger: logger)
        for try await (grantee, privilege) in schemaGrants.decode((String, String).self) {
            statements.append("GRANT \(privilege) ON SCHEMA \(SinkSchema.q(target)) TO \(grantee)")
        }
        let tableGrants = try await c.query("""
            SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type, c.relname::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
              LEFT JOIN pg_roles r ON r.oid = a.grantee
            WHERE n.nspname = \(live) AND c.relkind = 'r' AND a.grantee <> c.relowner
            """, logger: logger)
        let known = Set(SinkSchema.tables.map(\.name) + ["checkpoints"])
        for try await (grantee, privilege, table) in tableGrants.decode((String, String, String).self) where known.contains(table) {
            statements.append("GRANT \(privilege) ON \(SinkSchema.q(target)).\(SinkSchema.q(table)) TO \(grantee)")
        }
        for sql in statements { try await c.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
    }

    // MARK: Purge (forget)

    /// Deletes every sink row of these appointments in one transaction (for `forget`). The
    /// checkpoint does not move: the next catch-up ships whatever the views hold for them.
    @discardableResult
    public func purge(appointmentIds: [String]) async throws -> Int {
        guard !appointmentIds.isEmpty else { return 0 }
        return try await withConnection(doing: "the purge") { [self] conn in
            if case .missing = try await inspect(conn, schema) { return 0 }
            return try await conn.withTransaction(logger: logger) { c in
                try await lock(c, "syncledger")
                var n = 0
                for t in SinkSchema.tables where t.key == .appointment {
                    let rows = try await c.query(PostgresQuery(
                        unsafeSQL: "WITH d AS (DELETE FROM \(q).\(t.name) WHERE \(t.keyColumn) = ANY($1::text[]) RETURNING 1) SELECT count(*) FROM d",
                        binds: binds(appointmentIds)), logger: logger)
                    for try await count in rows.decode(Int64.self) { n += Int(count) }
                }
                return n
            }
        }
    }

    /// Deletes every sink row of these patients' appointments (primary or additional patient).
    @discardableResult
    public func purge(patientIds: [String]) async throws -> Int {
        guard !patientIds.isEmpty else { return 0 }
        let ids: [String] = try await withConnection(doing: "the purge") { [self] conn in
            if case .missing = try await inspect(conn, schema) { return [] }
            let rows = try await conn.query(PostgresQuery(unsafeSQL: """
                SELECT pq_appointment_id FROM \(q).appointments WHERE patient_id = ANY($1::text[])
                UNION SELECT appointment_id FROM \(q).appointment_patients WHERE patient_id = ANY($1::text[])
                """, binds: binds(patientIds)), logger: logger)
            var out: [String] = []
            for try await id in rows.decode(String.self) { out.append(id) }
            return out
        }
        return try await purge(appointmentIds: ids)
    }
}

// MARK: The SQLite side

/// What changed between two checkpoints: keys whose rows must be replaced.
struct Delta: Sendable, Equatable {
    var allAppointments = false
    var appointmentIds = Set<String>()
    var allRuns = false
    var runIds = Set<String>()
    static let everything = Delta(allAppointments: true, allRuns: true)
}

/// The SQLite views caught up to the log's head, frozen in one read transaction, with the
/// checkpoint they are at.
final class ViewsSnapshot: @unchecked Sendable {
    // @unchecked: DatabaseSnapshot serialises its own access; the rest is immutable.
    let reader: LedgerReader
    let db: any DatabaseReader
    let seq: UInt64
    let hash: String
    let head: LogHead
    let foldVersions: [String: Int]
    /// The stream index is in the snapshot at the same seq and hash as the shipped views, and of
    /// the version that files a run's unchanged observations under each appointment.
    let streamIndexReady: Bool

    init(reader: LedgerReader, views: ProjectionStore) throws {
        self.reader = reader
        var lastError = ""
        for _ in 0..<5 {
            _ = try views.catchUp(reader)
            // A snapshot of the WAL database; an in-memory copy (a read-only store) is ours alone.
            let snap: any DatabaseReader = try (views.pool as? DatabasePool)?.makeSnapshot() ?? views.pool
            let rows = try snap.read { db in
                try Row.fetchAll(db, sql: "SELECT name, schema_version, last_seq, last_hash FROM projection_state")
            }
            var seqs = Set<Int64>()
            var hashes = Set<String>()
            var folds: [String: Int] = [:]
            let index = StreamIndexProjection()
            let indexState = rows.first { ($0["name"] as String) == index.name }
            for r in rows where SinkSchema.projections.contains(r["name"] as String) {
                seqs.insert(r["last_seq"])
                hashes.insert(r["last_hash"])
                folds[r["name"]] = r["schema_version"]
            }
            // A rebuild of one SQLite view swaps it in ahead of the others for a moment: look again.
            guard seqs.count == 1, hashes.count == 1, folds.count == SinkSchema.projections.count else {
                lastError = "the SQLite views are at different seqs (\(seqs.sorted()))"
                continue
            }
            self.db = snap
            self.seq = UInt64(seqs.first!)
            self.hash = hashes.first!
            self.foldVersions = folds
            self.streamIndexReady = indexState.map {
                ($0["last_seq"] as Int64) == seqs.first! && ($0["last_hash"] as String) == hashes.first!
                    && ($0["schema_version"] as Int) == index.schemaVersion
            } ?? false
            self.head = try reader.head()
            return
        }
        throw SinkError(.views, "cannot get a consistent read of the SQLite views: \(lastError)")
    }

    /// True when the log holds a `ledger.loss_recorded` event (a loss `repair` accepted).
    func logRecordsLoss() throws -> Bool {
        var found = false
        try reader.forEachEvent(from: 1, through: head.seq) { e in
            if e.eventType == .lossRecorded { found = true; return false }
            return true
        }
        return found
    }

    /// Where the keys of the events (after, seq] are read from.
    enum DeltaSource: String, Sendable, CaseIterable {
        /// Every event of the range read from the log (CRC, chain, envelope): about 4 µs an event.
        case log
        /// The snapshot's `event_streams` rows of the range: about 0.1 µs a row, but the table is
        /// keyed by (stream, seq), so every row of it is looked at, however short the range.
        case streamIndex = "stream index"
    }

    /// The cheaper way to the keys of (after, seq]: the stream index once the range is more than
    /// ~1/40 of the log (measured: reading the log ~4 µs an event, scanning the index ~0.1 µs a
    /// row, BENCHMARKS.md "PostgreSQL sink"), and only when the index can be trusted for it: at
    /// the snapshot's seq and hash, and with no event of the range quarantined by it (a
    /// `sync.completed` it could not read lacks its unchanged appointments' rows).
    func deltaSource(after: UInt64) throws -> DeltaSource {
        guard streamIndexReady, after < seq, (seq - after) * 40 >= seq else { return .log }
        let quarantined = try db.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM quarantine WHERE projection = ? AND seq > ? AND seq <= ?)",
                              arguments: [StreamIndexProjection().name, Int64(after), Int64(seq)]) ?? true
        }
        return quarantined ? .log : .streamIndex
    }

    /// The keys the events (after, seq] touched. Both sources give the same keys
    /// (`SinkDeltaTests`); an event either cannot place ships everything of its kind.
    func delta(after: UInt64, from source: DeltaSource = .log) throws -> Delta {
        var d = Delta()
        guard after < seq else { return d }
        switch source {
        case .log: try deltaFromLog(after: after, into: &d)
        case .streamIndex: try deltaFromStreamIndex(after: after, into: &d)
        }
        if d.allAppointments { d.appointmentIds = [] }
        if d.allRuns { d.runIds = [] }
        return d
    }

    private func deltaFromLog(after: UInt64, into d: inout Delta) throws {
        try reader.forEachEvent(from: after + 1, through: seq) { e in
            switch e.eventType {
            case .appointmentDiscovered?, .appointmentChanged?, .appointmentRemoved?:
                if e.stream.hasPrefix("appointment/") {
                    d.appointmentIds.insert(String(e.stream.dropFirst("appointment/".count)))
                } else if case .string(let id)? = try? e.dataValue()["appointment_id"] {
                    d.appointmentIds.insert(id)
                } else {
                    d.allAppointments = true
                }
            case .syncStarted?:
                if let run = e.run { d.runIds.insert(run) }
            case .syncCompleted?:
                if let run = e.run { d.runIds.insert(run) }
                // last_synced_at of the appointments observed unchanged.
                if !d.allAppointments {
                    if let done = try? e.syncCompleted() {
                        for o in done.unchanged { d.appointmentIds.insert(o.id) }
                    } else {
                        d.allAppointments = true
                    }
                }
            case .syncAbandoned?:
                if let a = try? e.decodeData(SyncAbandoned.self) { d.runIds.insert(a.abandonedRun) } else { d.allRuns = true }
            case .patientForgotten?:
                // The views were folded again without the patient's personal data: their
                // appointments (as primary or additional patient) change. Ship every appointment
                // rather than trust a list from before the purge.
                d.allAppointments = true
            case .rosterObserved?, .settingsObserved?:
                // A roster re-attributes every appointment; settings re-address every location.
                d.allAppointments = true
            default:
                // An event type this version does not know: ship everything rather than guess.
                d.allAppointments = true
                d.allRuns = true
            }
            return true
        }
    }

    /// The same keys from the stream index: each event's (stream, type), and a `sync.completed`
    /// filed again under every appointment it observed unchanged. Runs are the `sync/RUN`
    /// streams (`sync.abandoned` is filed under the run it abandons). One pass over the table
    /// through SQLite's C API: its rows come grouped by stream, so a stream already counted is
    /// recognised by its bytes and no string is made for it.
    private func deltaFromStreamIndex(after: UInt64, into d: inout Delta) throws {
        let appointment = Array("appointment/".utf8), run = Array("sync/".utf8)
        try db.read { db in
            let statement = try db.makeStatement(sql: "SELECT stream, type FROM event_streams WHERE seq > ? AND seq <= ?")
            try statement.setArguments([Int64(after), Int64(seq)])
            let h = statement.sqliteStatement
            defer { sqlite3_reset(h) }
            // The stream last added to each set (rows of one stream come one after another).
            var lastAppointment: [UInt8] = [], lastRun: [UInt8] = [], lastType: [UInt8] = []
            var type: EventType?
            while true {
                let rc = sqlite3_step(h)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else {
                    throw DatabaseError(resultCode: ResultCode(rawValue: rc), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
                }
                let stream = UnsafeBufferPointer(start: sqlite3_column_text(h, 0), count: Int(sqlite3_column_bytes(h, 0)))
                let typeBytes = UnsafeBufferPointer(start: sqlite3_column_text(h, 1), count: Int(sqlite3_column_bytes(h, 1)))
                if !typeBytes.elementsEqual(lastType) {
                    lastType = Array(typeBytes)
                    type = EventType(rawValue: String(decoding: typeBytes, as: UTF8.self))
                }
                func addAppointment() {
                    guard !stream.elementsEqual(lastAppointment) else { return }
                    lastAppointment = Array(stream)
                    d.appointmentIds.insert(String(decoding: UnsafeBufferPointer(rebasing: stream[appointment.count...]), as: UTF8.self))
                }
                func addRun() {
                    guard !stream.elementsEqual(lastRun) else { return }
                    lastRun = Array(stream)
                    d.runIds.insert(String(decoding: UnsafeBufferPointer(rebasing: stream[run.count...]), as: UTF8.self))
                }
                switch type {
                case .appointmentDiscovered?, .appointmentChanged?, .appointmentRemoved?:
                    if stream.starts(with: appointment) { addAppointment() } else { d.allAppointments = true }
                case .syncStarted?, .syncAbandoned?:
                    if stream.starts(with: run) { addRun() } else { d.allRuns = true }
                case .syncCompleted?:
                    if stream.starts(with: run) {
                        addRun()
                    } else if stream.starts(with: appointment) {
                        addAppointment()
                    } else {
                        d.allRuns = true
                        d.allAppointments = true
                    }
                case .patientForgotten?, .rosterObserved?, .settingsObserved?:
                    d.allAppointments = true
                default:
                    d.allAppointments = true
                    d.allRuns = true
                }
            }
        }
    }

    /// The rows of `table` for these keys (all when nil), in COPY's text format, in ~1 MB buffers.
    func copyText(_ table: SinkTable, keys: [String]?) throws -> ([ByteBuffer], Int) {
        var buffers: [ByteBuffer] = []
        let count = try copyText(table, keys: keys) { buffer in
            buffers.append(buffer)
            return true
        }
        return (buffers, count)
    }

    /// The same, handing each ~1 MB buffer to `emit` as soon as it is full; returns the row count.
    /// `emit` returning false stops the read (the consumer has gone).
    @discardableResult
    func copyText(_ table: SinkTable, keys: [String]?, emit: (ByteBuffer) -> Bool) throws -> Int {
        var sql = "SELECT " + table.columns.map(\.sqlite).joined(separator: ", ") + " FROM " + table.sqliteFrom
        var args: StatementArguments = []
        if let keys {
            sql += " WHERE \(table.sqliteKey) IN (SELECT value FROM json_each(?))"
            args = [JSONValue.array(keys.map(JSONValue.string)).canonicalText]
        }
        return try db.read { db in
            var bytes: [UInt8] = []
            bytes.reserveCapacity(1 << 20)
            var count = 0
            let cursor = try Row.fetchCursor(db, sql: sql, arguments: args)
            while let row = try cursor.next() {
                for i in 0..<row.count {
                    if i > 0 { bytes.append(9) }
                    appendCopyField(row[i] as DatabaseValue, &bytes)
                }
                bytes.append(10)
                count += 1
                if bytes.count >= 1 << 20 {
                    guard emit(ByteBuffer(bytes: bytes)) else { return count }
                    bytes.removeAll(keepingCapacity: true)
                }
            }
            if !bytes.isEmpty { _ = emit(ByteBuffer(bytes: bytes)) }
            return count
        }
    }
}

/// Reads the COPY text of each (table, keys) job from the snapshot, in order, on a thread of its
/// own (SQLite reads block; they stay off Swift's cooperative pool), into one stream per job:
/// buffers as they fill, then `.done(rows)`. An error ends the failing job's stream and every
/// later one with that error. `stop()` (or a consumer that stops listening) ends the reading.
final class CopyFeed: Sendable {
    enum Piece: Sendable {
        case chunk(ByteBuffer)
        case done(Int)
    }
    let streams: [AsyncThrowingStream<Piece, any Error>]
    private let stopped = Atomic<Bool>(false)

    init(_ snap: ViewsSnapshot, _ jobs: [(table: SinkTable, keys: [String]?)]) {
        var streams: [AsyncThrowingStream<Piece, any Error>] = []
        var continuations: [AsyncThrowingStream<Piece, any Error>.Continuation] = []
        for _ in jobs {
            let (stream, continuation) = AsyncThrowingStream<Piece, any Error>.makeStream()
            streams.append(stream)
            continuations.append(continuation)
        }
        self.streams = streams
        let thread = Thread { [self, continuations] in
            for (i, job) in jobs.enumerated() {
                let out = continuations[i]
                do {
                    let n = try snap.copyText(job.table, keys: job.keys) { buffer in
                        guard !stopped.load(ordering: .relaxed) else { return false }
                        if case .terminated = out.yield(.chunk(buffer)) { return false }
                        return true
                    }
                    out.yield(.done(n))
                    out.finish()
                } catch {
                    for later in continuations[i...] { later.finish(throwing: error) }
                    return
                }
                if stopped.load(ordering: .relaxed) {
                    for later in continuations[(i + 1)...] { later.finish() }
                    return
                }
            }
        }
        thread.name = "syncledger-copy-feed"
        thread.start()
    }

    func stop() { stopped.store(true, ordering: .relaxed) }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// One value in COPY's text format: `\N` for NULL; backslash, tab, newline and CR escaped.
func appendCopyField(_ value: DatabaseValue, _ out: inout [UInt8]) {
    switch value.storage {
    case .null:
        out.append(92); out.append(78)
    case .int64(let v):
        out.append(contentsOf: String(v).utf8)
    case .double(let v):
        out.append(contentsOf: String(v).utf8)
    case .string(let s):
        appendEscaped(s.utf8, &out)
    case .blob(let d):
        appendEscaped(d, &out)
    }
}

func appendEscaped<C: Sequence<UInt8>>(_ bytes: C, _ out: inout [UInt8]) {
    for b in bytes {
        switch b {
        case 92: out.append(92); out.append(92)
        case 9: out.append(92); out.append(116)
        case 10: out.append(92); out.append(110)
        case 13: out.append(92); out.append(114)
        default: out.append(b)
        }
    }
}

// MARK: Entry point for `serve --postgres` and the CLI

public enum PostgresSinkEntry {
    /// The URL from `--url`, else `$SYNCLEDGER_POSTGRES_URL`.
    public static func resolveURL(_ flag: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> PostgresURL {
        guard let text = flag ?? environment[PostgresURL.environmentVariable], !text.isEmpty else {
            throw SinkError(.badURL, "no PostgreSQL URL: pass --url postgres://USER@HOST:PORT/DATABASE or set \(PostgresURL.environmentVariable)")
        }
        return try PostgresURL(text, environment: environment)
    }

    /// One catch-up of the store at `storePath` into the sink (what `serve --postgres` calls after
    /// every write, and `syncledger postgres sync` runs once).
    public static func catchUp(storePath: String, url: PostgresURL, schema: String = PostgresSink.defaultSchema) async throws -> SinkReport {
        let store = try Store.open(storePath)
        return try await PostgresSink(url: url, schema: schema).withRunning { try await $0.catchUp(store: store) }
    }

    public static func rebuild(storePath: String, url: PostgresURL, schema: String = PostgresSink.defaultSchema) async throws -> SinkReport {
        let store = try Store.open(storePath)
        return try await PostgresSink(url: url, schema: schema).withRunning { try await $0.rebuild(store: store) }
    }
}

// MARK: The benchmark's floor

/// The rows a catch-up after `afterSeq` ships, already in COPY's text form, for the benchmark's
/// floor: the same rows COPYed into empty tables with nothing else around it.
public struct RawCopy: @unchecked Sendable {
    // @unchecked: ByteBuffer arrays, built once and only read.
    let tables: [(SinkTable, [ByteBuffer], Int)]
    public var rows: Int { tables.reduce(0) { $0 + $1.2 } }
    /// Seconds spent reading the rows' COPY text from the SQLite snapshot (what the catch-up's
    /// feed thread does while PostgreSQL copies).
    public var readSeconds = 0.0
}

extension PostgresSink {
    public func prepareRawCopy(reader: LedgerReader, views: ProjectionStore, afterSeq: UInt64) throws -> RawCopy {
        let snap = try ViewsSnapshot(reader: reader, views: views)
        let delta = afterSeq == 0 ? Delta.everything : try snap.delta(after: afterSeq)
        var out: [(SinkTable, [ByteBuffer], Int)] = []
        let t0 = ContinuousClock.now
        for t in SinkSchema.tables {
            let all = t.key == .appointment ? delta.allAppointments : delta.allRuns
            let keys = t.key == .appointment ? delta.appointmentIds : delta.runIds
            if !all && keys.isEmpty { continue }
            let (buffers, n) = try snap.copyText(t, keys: all ? nil : Array(keys))
            out.append((t, buffers, n))
        }
        return RawCopy(tables: out, readSeconds: (ContinuousClock.now - t0).seconds)
    }

    /// Creates `scratch` with the sink's tables and indexes (untimed by the caller's choice),
    /// returning a function that COPYs the rows in one transaction.
    public func runRawCopy(_ raw: RawCopy, scratch: String, timed: @escaping (() async throws -> Void) async throws -> Void) async throws {
        try await withConnection(doing: "the raw COPY") { [self] conn in
            try await conn.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(SinkSchema.q(scratch)) CASCADE"), logger: logger)
            try await conn.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA \(SinkSchema.q(scratch))"), logger: logger)
            for sql in SinkSchema.createTables(in: scratch) + SinkSchema.createIndexes(in: scratch) {
                try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger)
            }
            try await timed {
                try await conn.withTransaction(logger: logger) { c in
                    try await c.query(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(SinkSchema.q(scratch))"), logger: logger)
                    for (t, buffers, n) in raw.tables where n > 0 {
                        try await c.copyFrom(table: t.name, columns: t.columns.map(\.name), logger: logger) { w in
                            for b in buffers { try await w.write(b) }
                        }
                    }
                }
            }
            try await conn.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(SinkSchema.q(scratch)) CASCADE"), logger: logger)
        }
    }
}
