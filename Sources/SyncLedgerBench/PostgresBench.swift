import Dispatch
import Foundation
import Ledger
import Logging
import PostgresNIO
import PostgresSink
import Projections

/// Runs async work from the synchronous benchmark (the main thread is not in the pool).
final class ResultBox<T>: @unchecked Sendable {
    // @unchecked: written by the task before the semaphore is signalled, read after the wait.
    var result: Result<T, any Error>?
}

/// The reader and views handed to the sink from the synchronous benchmark: used by one task at a time.
struct Handles: @unchecked Sendable {
    let reader: LedgerReader
    let views: ProjectionStore
}

final class SecondsBox: @unchecked Sendable {
    var value = 0.0
}

func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

/// `--postgres URL`: the sink's catch-up beside a raw COPY of the same rows, and its rebuild
/// with readers querying the live schema.
struct PostgresBench {
    var m: [String: Double] = [:]
    let url: PostgresURL
    let readers: Int
    let log: (String) -> Void

    mutating func run(dir: String, events: Int, source: inout some EventSource) throws {
        let schema = "syncledger_bench"
        let sink = try PostgresSink(url: url, schema: schema)
        // The sink's connection pool runs for the whole phase.
        let running = Task { try await sink.run() }
        defer { running.cancel() }
        let store = try Store.openOrCreate(dir + "/pg-store")
        let writer = try LedgerWriter(store: store)
        var batch: [NewEvent] = []
        var appended = 0
        let half = events / 2
        func append(until limit: Int) throws {
            while appended < limit, let e = try source.next() {
                batch.append(e)
                appended += 1
                if batch.count >= 1_000 {
                    _ = try writer.append(batch)
                    batch.removeAll(keepingCapacity: true)
                }
            }
            if !batch.isEmpty { _ = try writer.append(batch); batch.removeAll(keepingCapacity: true) }
        }
        let reader = try LedgerReader(store: store)
        let views = try ProjectionStore(store: store)
        let h = Handles(reader: reader, views: views)

        log("postgres: first half (\(half) events) into the views and a fresh sink (\(url.redacted), schema \(schema))")
        try append(until: half)
        _ = try views.catchUp(reader)
        var t0 = now()
        let first = try blocking { try await sink.rebuild(reader: h.reader, views: h.views) }
        m["pg_full_load_s"] = now() - t0
        m["pg_full_load_events_per_s"] = Double(first.seq) / (now() - t0)
        let checkpoint = first.seq

        log("postgres: second half appended; SQLite views catch up (timed apart), then the sink's catch-up")
        try append(until: events)
        writer.close()
        t0 = now()
        _ = try views.catchUp(reader)
        m["sqlite_catchup_s"] = now() - t0
        t0 = now()
        let report = try blocking { try await sink.catchUp(reader: h.reader, views: h.views) }
        let t = now() - t0
        m["pg_catchup_s"] = t
        m["pg_catchup_events"] = Double(report.events)
        m["pg_catchup_rows"] = Double(report.rows)
        for (k, v) in report.seconds { m["pg_catchup_\(k)_s"] = v }
        m["pg_catchup_events_per_s"] = Double(report.events) / t
        log("postgres: the catch-up found the changed keys in the \(report.deltaSource ?? "(nothing: no checkpoint)")")

        log("postgres: raw COPY of the same \(report.rows) rows into empty tables")
        let raw = try sink.prepareRawCopy(reader: reader, views: views, afterSeq: checkpoint)
        let copySeconds = SecondsBox()
        try blocking {
            try await sink.runRawCopy(raw, scratch: "syncledger_bench_copy") { body in
                let c0 = now()
                try await body()
                copySeconds.value = now() - c0
            }
        }
        m["pg_copy_floor_rows"] = Double(raw.rows)
        m["pg_copy_text_read_s"] = raw.readSeconds
        m["pg_copy_floor_s"] = copySeconds.value
        m["pg_copy_floor_events_per_s"] = Double(report.events) / copySeconds.value

        log("postgres: rebuild of \(report.seq) events' rows with \(readers) readers querying")
        let (rebuildSeconds, latencies, errors) = try blocking { [url, readers] in
            try await PostgresBench.rebuildWithReaders(sink: sink, handles: h, url: url,
                                                       schema: schema, readers: readers)
        }
        m["pg_rebuild_s"] = rebuildSeconds
        m["pg_rebuild_events"] = Double(report.seq)
        m["pg_reader_queries"] = Double(latencies.count)
        m["pg_reader_p50_ms"] = percentile(latencies, 0.5)
        m["pg_reader_p99_ms"] = percentile(latencies, 0.99)
        m["pg_reader_errors"] = Double(errors)
        let url = self.url
        _ = try? blocking {
            let conn = try await PostgresBench.connect(url)
            try await conn.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE"), logger: PostgresBench.logger)
            try await conn.close()
        }
    }

    static let logger: Logger = {
        var l = Logger(label: "bench")
        l.logLevel = .critical
        return l
    }()

    static func connect(_ url: PostgresURL) async throws -> PostgresConnection {
        try await PostgresConnection.connect(configuration: url.connectionConfiguration(), id: 7, logger: logger)
    }

    /// A dashboard's query (one organization's next week, through the index) in a loop on each
    /// reader's connection while the rebuild runs; latencies in ms.
    static func rebuildWithReaders(sink: PostgresSink, handles h: Handles, url: PostgresURL,
                                   schema: String, readers: Int) async throws -> (Double, [Double], Int) {
        final class Stop: @unchecked Sendable {
            let lock = NSLock()
            var value = false
            var isSet: Bool { lock.withLock { value } }
        }
        let stop = Stop()
        let tasks = (0..<readers).map { i in
            Task { () -> ([(Double, Double)], Int) in
                var latencies: [(Double, Double)] = []
                var errors = 0
                let conn = try await connect(url)
                while !stop.isSet {
                    let q0 = now()
                    do {
                        let rows = try await conn.query(PostgresQuery(unsafeSQL: """
                            SELECT pq_appointment_id, start_time, status, meeting_url, location_info FROM \(schema).appointments
                            WHERE organization_id = (SELECT organization_id FROM \(schema).appointments WHERE organization_id IS NOT NULL
                                                     ORDER BY pq_appointment_id OFFSET \(i) LIMIT 1)
                              AND start_time >= now() - interval '7 days' ORDER BY start_time LIMIT 100
                            """), logger: logger)
                        for try await _ in rows {}
                        latencies.append((q0, (now() - q0) * 1000))
                    } catch {
                        errors += 1
                    }
                }
                try? await conn.close()
                return (latencies, errors)
            }
        }
        try await Task.sleep(nanoseconds: 300_000_000)
        let t0 = now()
        _ = try await sink.rebuild(reader: h.reader, views: h.views)
        let t1 = now()
        let t = t1 - t0
        try await Task.sleep(nanoseconds: 300_000_000)
        stop.lock.withLock { stop.value = true }
        var all: [Double] = []
        var errors = 0
        for task in tasks {
            let (l, e) = try await task.value
            // Only the queries that started while the rebuild ran.
            all += l.filter { $0.0 >= t0 && $0.0 <= t1 }.map(\.1)
            errors += e
        }
        return (t, all, errors)
    }
}
