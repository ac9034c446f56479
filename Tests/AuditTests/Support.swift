import EventLog
import FakeIntakeQ
import Foundation
import IntakeQ
import Ledger
import Logging
import Projections
import Sync
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
import JSONCore
import Domain
#endif

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

func readFile(_ path: String) throws -> [UInt8] {
    guard let d = FileManager.default.contents(atPath: path) else { throw TestFailure("cannot read \(path)") }
    return Array(d)
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { throw TestFailure("cannot write \(path)") }
}

// MARK: - Running processes

struct ProcResult: Sendable {
    var code: Int32
    var stdout: [UInt8]
    var stderr: String
    var out: String { String(decoding: stdout, as: UTF8.self) }
    var all: String { out + stderr }
}

/// Runs a program to completion (see `ProcessRunner.run`), with NO_COLOR=1.
func runProcess(_ executable: String, _ arguments: [String], cwd: String? = nil,
                environment: [String: String]? = nil) async throws -> ProcResult {
    let r = try await ProcessRunner.run(executable, arguments, environment: environment, overrides: ["NO_COLOR": "1"], cwd: cwd)
    return ProcResult(code: r.status, stdout: r.stdout, stderr: r.stderrText)
}

/// `syncledger --store STORE args…`
func syncledger(_ store: String, _ args: String...) async throws -> ProcResult {
    try await runProcess(try Paths.binary(), ["--store", store] + args)
}

func syncledger(_ store: String, args: [String]) async throws -> ProcResult {
    try await runProcess(try Paths.binary(), ["--store", store] + args)
}

func python3() throws -> String {
    for p in ["/usr/bin/python3", "/usr/local/bin/python3"] where FileManager.default.isExecutableFile(atPath: p) { return p }
    return try which("python3")
}

func which(_ name: String) throws -> String {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    throw TestFailure("\(name) is not on PATH (tools/setup.sh installs it)")
}

// MARK: - JSON helpers

func parseJSON(_ bytes: [UInt8]) throws -> JSONValue { try JSONValue.parse(bytes) }
func parseJSON(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

/// The CLI's appointment rows add `start_local`/`end_local` beside the view's columns (issue 14);
/// comparisons with the library's rows leave those two out.
func viewColumnsOnly(_ v: JSONValue) -> JSONValue {
    guard case .array(let rows) = v else { return v }
    return .array(rows.map { row in
        guard case .object(var o) = row else { return row }
        o["start_local"] = nil
        o["end_local"] = nil
        return .object(o)
    })
}

extension JSONValue {
    var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
}

/// ISO 8601 UTC with milliseconds, computed independently of the code under test.
func iso(millis: Int64) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    f.timeZone = TimeZone(identifier: "UTC")
    return f.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
}

// MARK: - The fixture timeline, synced once per test process

struct DaySnapshot: Sendable {
    var day: Int
    var runId: String
    var counts: SyncCounts
    var startedMillis: Int64
    /// Just after the run returned (and before the next one started).
    var finishedMillis: Int64
    var head: LogHead
    /// `Views.appointments` (all rows) right after the run.
    var views: [ViewRow]
    /// What `syncledger appointments --json` printed right after the run.
    var cliAppointments: JSONValue
}

struct Timeline: Sendable {
    var root: String
    var store: String
    var days: [DaySnapshot]
    /// Trap name → appointment id (Fixtures/practice/expected.json).
    var traps: [String: String]
    /// Per day (1-based index - 1): appointment id → IntakeQ object as served that day,
    /// and the ids listed as deleted.
    var objects: [[String: JSONValue]]
    var deleted: [[String: JSONValue]]

    var finalHead: LogHead { days.last!.head }

    func trap(_ name: String) throws -> String {
        guard let id = traps[name] else { throw TestFailure("no trap \(name) in expected.json") }
        return id
    }

    func object(_ id: String, day: Int) -> JSONValue? { objects[day - 1][id] ?? deleted[day - 1][id] }

    func reader() throws -> LedgerReader { try LedgerReader(store: try Store.open(store)) }
    func views() throws -> ProjectionStore { try ProjectionStore(store: try Store.open(store)) }

    /// Copies the store's marker and log (not the views: they rebuild) to a new directory, for
    /// tests that damage it. The SQLite files are never opened here: closing any descriptor of
    /// a database file drops this process's POSIX locks on it and breaks open connections.
    func copyStore(into dir: String) throws -> String {
        let fm = FileManager.default
        let target = dir + "/store"
        try fm.createDirectory(atPath: target + "/log", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try fm.copyItem(atPath: store + "/STORE", toPath: target + "/STORE")
        for name in try fm.contentsOfDirectory(atPath: store + "/log") where name.hasSuffix(".seg") {
            try fm.copyItem(atPath: store + "/log/" + name, toPath: target + "/log/" + name)
        }
        return target
    }

    static let shared = Task<Timeline, any Error> { try await build() }
    static let segmentBytes = 40_000
    static let createdRoots = Locked<[String]>([])

    /// Runs the whole fixture timeline (5 days) through `SyncRunner` against the in-process
    /// fake IntakeQ, the way `syncledger demo` and `sync` do, recording the views after each day.
    static func build() async throws -> Timeline {
        let root = try makeTempDir("timeline")
        createdRoots.withLock { $0.append(root) }
        let storePath = root + "/store"
        let practice = try FixturePractice.load(directory: Paths.fixtures + "/practice")
        guard let rosterPath = practice.rosterPath, let first = practice.days.first else {
            throw TestFailure("fixtures lack roster.json or day files")
        }
        let roster = try Roster.load(path: rosterPath)
        let apiKey = "audit-test-key"
        let server = FakeIntakeQServer(state: first.state, apiKey: apiKey)
        let baseURL = try await server.start()
        var logger = Logger(label: "audit-tests")
        logger.logLevel = .critical
        var days: [DaySnapshot] = []
        do {
            for day in practice.days {
                server.setState(day.state)
                let store = try Store.openOrCreate(storePath)
                let started = ISOTime.nowMillis()
                let (outcome, rows) = try await runDay(store: store, baseURL: baseURL, apiKey: apiKey, logger: logger,
                                                       request: SyncRequest(roster: roster, now: day.nowDate, triggeredBy: "audit-tests"))
                let finished = ISOTime.nowMillis()
                guard outcome.status == "completed" else {
                    throw TestFailure("day \(day.day) sync \(outcome.status): \(outcome.errorMessage ?? "?")")
                }
                let cli = try await syncledger(storePath, "appointments", "--json")
                guard cli.code == 0 else { throw TestFailure("appointments --json failed: \(cli.all)") }
                days.append(DaySnapshot(day: day.day, runId: outcome.runId, counts: outcome.counts, startedMillis: started,
                                        finishedMillis: finished, head: outcome.head, views: rows,
                                        cliAppointments: viewColumnsOnly(try parseJSON(cli.stdout))))
                // The next run's events must be recorded strictly after `finished`.
                try await Task.sleep(nanoseconds: 20_000_000)
            }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()

        var traps: [String: String] = [:]
        let expected = try parseJSON(try readFile(Paths.fixtures + "/practice/expected.json"))
        if case .object(let t)? = expected["traps"] {
            for (k, v) in t { if let s = v.stringValue { traps[k] = s } }
        }
        var objects: [[String: JSONValue]] = []
        var deleted: [[String: JSONValue]] = []
        for day in practice.days {
            let file = try parseJSON(try readFile(day.path))
            var o: [String: JSONValue] = [:], d: [String: JSONValue] = [:]
            for a in file["appointments"]?.arrayValue ?? [] { if let id = a["Id"]?.stringValue { o[id] = a } }
            for a in file["deleted"]?.arrayValue ?? [] { if let id = a["Id"]?.stringValue { d[id] = a } }
            objects.append(o)
            deleted.append(d)
        }
        return Timeline(root: root, store: storePath, days: days, traps: traps, objects: objects, deleted: deleted)
    }

    /// One sync run through `SyncSession`, as `syncledger sync` runs it, with the client's limits
    /// lifted (the in-process fake has none).
    static func runDay(store: Store, baseURL: String, apiKey: String, logger: Logger,
                       request: SyncRequest) async throws -> (SyncOutcome, [ViewRow]) {
        var config = SyncConfiguration(
            storePath: store.path, request: request, apiKey: apiKey, baseURL: baseURL,
            policy: RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: 100_000),
            maxRetries: 2, timeoutSeconds: 10, logger: logger)
        // Small segments, so the timeline spans several files (sealed ones with index files).
        config.logOptions = LogOptions(segmentBytes: segmentBytes)
        let outcome = try await SyncSession.run(config)
        let rows = try ProjectionStore(store: store).readSync { try Views.appointments($0, AppointmentFilter()) }
        return (outcome, rows)
    }

    static func get() async throws -> Timeline { try await shared.value }

    static func cleanup() {
        for r in createdRoots.withLock({ r -> [String] in defer { r = [] }; return r }) { removeTree(r) }
    }
}

/// Wraps the whole `AuditTests` suite: deletes the shared timeline store afterwards.
struct TimelineStoreScope: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }
    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        defer { Timeline.cleanup() }
        try await function()
    }
}

extension Trait where Self == TimelineStoreScope {
    static var timelineStore: Self { TimelineStoreScope() }
}

/// Every test of this target lives in this suite (extensions in the other files), so one
/// timeline store serves them all and is removed at the end.
@Suite(.timelineStore) struct AuditTests {}

// MARK: - Segment bytes (docs/FORMAT.md), written independently of EventLog

/// CRC-32C (Castagnoli), reflected, init and final xor 0xFFFFFFFF.
enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }
    static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}

func sha256(_ bytes: some Collection<UInt8>) -> [UInt8] { hexBytes(sha256Hex(bytes)) }

func hexBytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = hex.utf8.makeIterator()
    func nib(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
    while let a = it.next(), let b = it.next() { out.append(nib(a) << 4 | nib(b)) }
    return out
}

func hexString(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

func readLE<T: FixedWidthInteger>(_ b: [UInt8], _ at: Int, as: T.Type) -> T {
    var v: T = 0
    for i in 0..<MemoryLayout<T>.size { v |= T(b[at + i]) << (8 * i) }
    return v
}

func appendLE<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
    for i in 0..<MemoryLayout<T>.size { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
}

/// One batch of a segment: the 80-byte skippable frame, then its LZ4 frame.
struct RawBatch {
    var offset: Int
    var version: UInt16
    var flags: UInt16
    var firstSeq: UInt64
    var count: UInt32
    var uncompressedLength: UInt64
    var chain: [UInt8]
    var payloadCRC: UInt32
    var headerCRC: UInt32
    var payload: [UInt8]
    var lastSeq: UInt64 { firstSeq + UInt64(count) - 1 }
    var endOffset: Int { offset + 80 + payload.count }

    /// The 80 bytes of the skippable frame, CRCs as stored.
    var header: [UInt8] {
        var h: [UInt8] = []
        appendLE(&h, UInt32(0x184D_2A50))
        appendLE(&h, UInt32(72))
        h += Array("SLGB".utf8)
        appendLE(&h, version)
        appendLE(&h, flags)
        appendLE(&h, firstSeq)
        appendLE(&h, count)
        appendLE(&h, UInt32(payload.count))
        appendLE(&h, uncompressedLength)
        h += chain
        appendLE(&h, payloadCRC)
        appendLE(&h, headerCRC)
        return h
    }

    var bytes: [UInt8] { header + payload }

    /// Recomputes the payload CRC and then the header CRC (as an attacker would).
    mutating func reseal() {
        payloadCRC = CRC32C.checksum(payload)
        headerCRC = CRC32C.checksum(header[8..<76])
    }

    /// chain_n = SHA-256(chain_(n-1) ‖ version ‖ first_seq ‖ count ‖ uncompressed_length ‖ SHA-256(content)).
    static func chain(previous: [UInt8], version: UInt16, firstSeq: UInt64, count: UInt32, content: [UInt8]) -> [UInt8] {
        var m = previous
        appendLE(&m, version)
        appendLE(&m, firstSeq)
        appendLE(&m, count)
        appendLE(&m, UInt64(content.count))
        m += sha256(content)
        return sha256(m)
    }
}

func parseSegment(_ b: [UInt8]) throws -> [RawBatch] {
    var out: [RawBatch] = []
    var off = 0
    while off + 80 <= b.count {
        guard readLE(b, off, as: UInt32.self) == 0x184D_2A50, readLE(b, off + 4, as: UInt32.self) == 72,
              Array(b[off + 8..<off + 12]) == Array("SLGB".utf8) else {
            throw TestFailure("no batch header at offset \(off)")
        }
        let clen = Int(readLE(b, off + 28, as: UInt32.self))
        guard off + 80 + clen <= b.count else { break }  // torn tail
        out.append(RawBatch(
            offset: off, version: readLE(b, off + 12, as: UInt16.self), flags: readLE(b, off + 14, as: UInt16.self),
            firstSeq: readLE(b, off + 16, as: UInt64.self), count: readLE(b, off + 24, as: UInt32.self),
            uncompressedLength: readLE(b, off + 32, as: UInt64.self), chain: Array(b[off + 40..<off + 72]),
            payloadCRC: readLE(b, off + 72, as: UInt32.self), headerCRC: readLE(b, off + 76, as: UInt32.self),
            payload: Array(b[off + 80..<off + 80 + clen])))
        off += 80 + clen
    }
    return out
}

/// `lz4 -d -c FILE`: the concatenated contents of a segment's LZ4 frames (skippable frames skipped).
func lz4Decompress(file: String) async throws -> [UInt8] {
    let r = try await runProcess(try which("lz4"), ["-d", "-c", file])
    guard r.code == 0 else { throw TestFailure("lz4 -d failed: \(r.stderr)") }
    return r.stdout
}

/// A standard LZ4 frame like the writer's (content size, linked blocks, no content checksum).
func lz4Compress(_ content: [UInt8]) async throws -> [UInt8] {
    let dir = try makeTempDir("lz4")
    defer { removeTree(dir) }
    try writeFile(dir + "/in", content)
    let r = try await runProcess(try which("lz4"), ["-c", "-q", "-BD", "--content-size", "--no-frame-crc", dir + "/in"])
    guard r.code == 0 else { throw TestFailure("lz4 -c failed: \(r.stderr)") }
    return r.stdout
}

/// A segment's batches with their decompressed JSON Lines, split by each header's length.
func segmentContents(_ path: String) async throws -> [(RawBatch, [UInt8])] {
    let batches = try parseSegment(try readFile(path))
    let all = try await lz4Decompress(file: path)
    var out: [(RawBatch, [UInt8])] = []
    var pos = 0
    for b in batches {
        let n = Int(b.uncompressedLength)
        guard pos + n <= all.count else { throw TestFailure("lz4 output shorter than the headers say") }
        out.append((b, Array(all[pos..<pos + n])))
        pos += n
    }
    return out
}

func segments(ofStore store: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: store + "/log").filter { $0.hasSuffix(".seg") }.sorted()
        .map { store + "/log/" + $0 }
}

// MARK: - CSV (RFC 4180)

/// Parses RFC 4180 CSV: fields separated by commas, records by CRLF (LF accepted), fields
/// with commas, quotes or line breaks enclosed in double quotes, quotes doubled inside.
func parseCSV(_ text: String) throws -> [[String]] {
    var records: [[String]] = []
    var record: [String] = []
    var field = ""
    var inQuotes = false
    var fieldWasQuoted = false
    let scalars = Array(text.unicodeScalars)
    var i = 0
    func endField() {
        record.append(field)
        field = ""
        fieldWasQuoted = false
    }
    while i < scalars.count {
        let c = scalars[i]
        if inQuotes {
            if c == "\"" {
                if i + 1 < scalars.count, scalars[i + 1] == "\"" {
                    field.unicodeScalars.append("\"")
                    i += 1
                } else {
                    inQuotes = false
                }
            } else {
                field.unicodeScalars.append(c)
            }
        } else {
            switch c {
            case "\"":
                guard field.isEmpty, !fieldWasQuoted else { throw TestFailure("stray quote in CSV at scalar \(i)") }
                inQuotes = true
                fieldWasQuoted = true
            case ",":
                endField()
            case "\r":
                guard i + 1 < scalars.count, scalars[i + 1] == "\n" else { throw TestFailure("bare CR in CSV at scalar \(i)") }
            case "\n":
                endField()
                records.append(record)
                record = []
            default:
                guard !fieldWasQuoted else { throw TestFailure("text after a closing quote at scalar \(i)") }
                field.unicodeScalars.append(c)
            }
        }
        i += 1
    }
    guard !inQuotes else { throw TestFailure("unterminated quoted CSV field") }
    if !field.isEmpty || !record.isEmpty || fieldWasQuoted {
        endField()
        records.append(record)
    }
    return records
}
