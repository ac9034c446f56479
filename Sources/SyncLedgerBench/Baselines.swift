import Foundation
import GRDB
import Ledger
import TestSupport

/// What a team would otherwise build, on the same envelope bytes: a plain SQLite events table
/// (WAL, synchronous=FULL so a commit is durable like our append, one transaction per batch),
/// and the `lz4` command line as the floor for any LZ4 log.
struct Baselines {
    var m: [String: Double] = [:]

    mutating func sqlite(linesPath: String, dbPath: String, events: Int, batchSize: Int) throws {
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode=WAL")
            try db.execute(sql: "PRAGMA synchronous=FULL")
        }
        let dbq = try DatabaseQueue(path: dbPath, configuration: config)
        try dbq.write { db in
            try db.execute(sql: "CREATE TABLE events (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, stream TEXT NOT NULL, at TEXT NOT NULL, payload TEXT NOT NULL)")
        }
        var lines = try LineReader(path: linesPath)
        defer { lines.close() }
        // Rows are prepared (envelope fields read) outside the timer, like our generator.
        var rows: [(Int64, String, String, String, String)] = []
        rows.reserveCapacity(batchSize)
        var timed = 0.0, n = 0
        func flush() throws {
            guard !rows.isEmpty else { return }
            let batch = rows
            let t0 = now()
            try dbq.writeWithoutTransaction { db in
                try db.inTransaction {
                    let stmt = try db.cachedStatement(sql: "INSERT INTO events (seq, type, stream, at, payload) VALUES (?, ?, ?, ?, ?)")
                    for r in batch { try stmt.execute(arguments: [r.0, r.1, r.2, r.3, r.4]) }
                    return .commit
                }
            }
            timed += now() - t0
            n += batch.count
            rows.removeAll(keepingCapacity: true)
        }
        while let line = try lines.next() {
            let e = try EventEnvelope.decode(line)
            rows.append((Int64(e.seq), e.type, e.stream, e.at, String(decoding: line, as: UTF8.self)))
            if rows.count >= batchSize { try flush() }
        }
        try flush()
        guard n == events else { throw BenchError("sqlite baseline inserted \(n) of \(events) events") }
        m["sqlite_append_events_per_s"] = Double(n) / timed
        m["sqlite_bytes_per_event"] = Double(try sqliteSize(dbPath) { sql in
            try dbq.writeWithoutTransaction { try $0.execute(sql: sql) }
        }) / Double(n)
        try dbq.close()

        // Replay: a fresh connection, SELECT everything in seq order, decode each envelope.
        let t0 = now()
        let reader = try DatabaseQueue(path: dbPath, configuration: config)
        var count = 0, bytes = 0
        var check: UInt64 = 0
        try reader.read { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, type, stream, at, payload FROM events ORDER BY seq")
            while let row = try rows.next() {
                try row.withUnsafeData(atIndex: 4) { data in
                    guard let data else { throw BenchError("sqlite: empty payload") }
                    let e = try EventEnvelope.decode(data)
                    count += 1
                    bytes += data.count + 1
                    check &+= UInt64(e.data.count) &+ UInt64(e.type.utf8.count)
                }
            }
        }
        let t = now() - t0
        try reader.close()
        guard count == events else { throw BenchError("sqlite baseline replayed \(count) of \(events) events") }
        m["sqlite_replay_events_per_s"] = Double(count) / t
        m["sqlite_replay_mb_per_s"] = Double(bytes) / t / 1e6
    }

    /// The floor of a single durable append: `pwrite` of `bytes` at the end of a file, then
    /// `fdatasync`, `count` times.
    mutating func fdatasyncFloor(path: String, count: Int, bytes: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BenchError("cannot create \(path)") }
        defer { close(fd) }
        let buffer = [UInt8](repeating: 120, count: bytes)
        var latencies: [Double] = []
        var offset: off_t = 0
        for _ in 0..<count {
            let t0 = now()
            let n = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress, bytes, offset) }
            guard n == bytes, fdatasync(fd) == 0 else { throw BenchError("pwrite/fdatasync failed on \(path)") }
            latencies.append((now() - t0) * 1000)
            offset += off_t(bytes)
        }
        m["fdatasync_p50_ms"] = percentile(latencies, 0.5)
        m["fdatasync_p99_ms"] = percentile(latencies, 0.99)
    }

    /// `lz4 -1 -c` the same JSON Lines to a file, then `lz4 -dc` it to /dev/null.
    mutating func lz4(linesPath: String, outPath: String, events: Int) throws {
        let path = ["/usr/bin/lz4", "/usr/local/bin/lz4", "/bin/lz4"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let lz4 = path else {
            FileHandle.standardError.write(Data("syncledger-bench: no lz4 command; the lz4 floor is left out\n".utf8))
            return
        }
        let c0 = now()
        try run(lz4, ["-1", "-q", "-f", "-c", linesPath], stdout: outPath)
        let c = now() - c0
        let d0 = now()
        try run(lz4, ["-q", "-dc", outPath], stdout: "/dev/null")
        let d = now() - d0
        m["lz4_cli_compress_events_per_s"] = Double(events) / c
        m["lz4_cli_decompress_events_per_s"] = Double(events) / d
        m["lz4_cli_bytes_per_event"] = Double(fileSize(outPath)) / Double(events)
    }

    /// Runs a baseline tool with its stdout going straight to `stdout` (a file, or /dev/null),
    /// so the timing is the tool's alone.
    func run(_ exe: String, _ args: [String], stdout: String) throws {
        guard FileManager.default.createFile(atPath: stdout, contents: nil) || stdout == "/dev/null" else {
            throw BenchError("cannot write \(stdout)")
        }
        let r = try ProcessRunner.runBlocking(exe, args, stdoutPath: stdout)
        guard r.status == 0, !r.signaled else { throw BenchError("\(exe) \(args.joined(separator: " ")) exited \(r.status)") }
    }
}
