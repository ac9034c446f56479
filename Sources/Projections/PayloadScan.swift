import JSONCore
import Ledger

/// `sync.started` and `sync.completed` read from their bytes without `JSONDecoder` (which cost
/// more than the rest of a run's events in `sync_logs` put together). The fast reader takes only
/// what it is sure `JSONDecoder` reads the same way: ASCII data, every key once and unescaped,
/// each value of exactly the declared type (integers as plain digits). For anything else it
/// gives nil and the caller decodes with `JSONDecoder`, so results and errors stay the decoder's
/// own (`PayloadScanTests`).
enum PayloadScan {
    /// The fast reader was unsure: decode with `JSONDecoder`.
    struct Unsure: Error {}

    static func syncCompleted(_ data: [UInt8]) -> SyncCompleted? {
        read(data) { r in
            var status: String?, counts: SyncCounts?, api: APIUsage?, warnings: [String]?, errors: [String]?
            var errorMessage: String?, unchanged: [SyncCompleted.Observed]?, headBefore: String?, durationMs: Int64?
            var missed: Int?
            try r.object(depth: 0) { r, key, d in
                switch key {
                case "status": status = try r.string(d)
                case "counts": counts = try r.counts(d)
                case "api": api = try r.api(d)
                case "warnings": warnings = try r.strings(d)
                case "errors": errors = try r.strings(d)
                case "error_message": errorMessage = try r.optionalString(d)
                case "unchanged":
                    var list: [SyncCompleted.Observed] = []
                    try r.array(depth: d) { r, d in
                        var id: String?, hash: String?
                        try r.object(depth: d) { r, key, d in
                            switch key {
                            case "id": id = try r.string(d)
                            case "hash": hash = try r.string(d)
                            default: try r.skip(d)
                            }
                        }
                        guard let id, let hash else { throw Unsure() }
                        list.append(.init(id: id, hash: hash))
                    }
                    unchanged = list
                case "head_before": headBefore = try r.string(d)
                case "duration_ms": durationMs = try r.integer(d)
                case "changes_missed_by_webhooks": missed = try r.optionalInteger(d).map { Int($0) }
                default: try r.skip(d)
                }
            }
            guard let status, let counts, let api, let warnings, let errors, let unchanged, let headBefore, let durationMs
            else { throw Unsure() }
            var c = SyncCompleted(status: status, counts: counts, api: api, warnings: warnings, errors: errors,
                                  errorMessage: errorMessage, unchanged: unchanged, headBefore: headBefore, durationMs: durationMs)
            c.changesMissedByWebhooks = missed
            return c
        }
    }

    static func syncStarted(_ data: [UInt8]) -> SyncStarted? {
        read(data) { r in
            var syncType: String?, organizationId: String?, patientId: String?, window: DateWindow?
            var triggeredBy: String?, toolVersion: String?, now: String?, appointmentIds: [String]?
            try r.object(depth: 0) { r, key, d in
                switch key {
                case "sync_type": syncType = try r.string(d)
                case "organization_id": organizationId = try r.optionalString(d)
                case "patient_id": patientId = try r.optionalString(d)
                case "window":
                    var start: String?, end: String?
                    try r.object(depth: d) { r, key, d in
                        switch key {
                        case "start": start = try r.string(d)
                        case "end": end = try r.string(d)
                        default: try r.skip(d)
                        }
                    }
                    guard let start, let end else { throw Unsure() }
                    window = DateWindow(start: start, end: end)
                case "triggered_by": triggeredBy = try r.string(d)
                case "tool_version": toolVersion = try r.string(d)
                case "now": now = try r.string(d)
                case "appointment_ids": appointmentIds = try r.next == UInt8(ascii: "n") ? r.null(d) : r.strings(d)
                default: try r.skip(d)
                }
            }
            guard let syncType, let window, let triggeredBy, let toolVersion, let now else { throw Unsure() }
            return SyncStarted(syncType: syncType, organizationId: organizationId, patientId: patientId, window: window,
                               triggeredBy: triggeredBy, toolVersion: toolVersion, now: now, appointmentIds: appointmentIds)
        }
    }

    /// Runs `body` over the data; nil when the data is not plain ASCII or the reader was unsure.
    static func read<T>(_ data: [UInt8], _ body: (inout Reader) throws -> T) -> T? {
        data.withUnsafeBufferPointer { buf -> T? in
            for c in buf where c >= 0x80 { return nil }
            var r = Reader(s: JSONScanner(buf))
            do {
                let v = try body(&r)
                try r.s.finish()
                return v
            } catch {
                return nil
            }
        }
    }

    struct Reader {
        var s: JSONScanner

        var next: UInt8? { s.next }

        /// Each key of the object at `depth`, unescaped and once only (else unsure), with the
        /// depth of its value; `body` must read or skip the value.
        mutating func object(depth: Int, _ body: (inout Reader, String, Int) throws -> Void) throws {
            guard try s.beginObject(depth: depth) else { throw Unsure() }
            var seen: [String] = []
            var first = true
            while let k = try s.nextKey(first: first) {
                first = false
                guard !k.escaped else { throw Unsure() }
                let key = String(decoding: UnsafeBufferPointer(rebasing: s.bytes[k.range]), as: UTF8.self)
                guard !seen.contains(key) else { throw Unsure() }
                seen.append(key)
                try body(&self, key, depth + 1)
            }
        }

        mutating func array(depth: Int, _ body: (inout Reader, Int) throws -> Void) throws {
            guard try s.beginArray(depth: depth) else { throw Unsure() }
            var first = true
            while try s.nextElement(first: first) {
                first = false
                try body(&self, depth + 1)
            }
        }

        mutating func skip(_ depth: Int) throws { try s.skipValue(depth: depth) }

        mutating func string(_ depth: Int) throws -> String {
            guard case .string(let v) = try s.scalar(depth: depth) else { throw Unsure() }
            return v
        }

        mutating func optionalString(_ depth: Int) throws -> String? {
            switch try s.scalar(depth: depth) {
            case .null: return nil
            case .string(let v): return v
            default: throw Unsure()
            }
        }

        mutating func null<T>(_ depth: Int) throws -> T? {
            guard try s.scalar(depth: depth) == .null else { throw Unsure() }
            return nil
        }

        mutating func strings(_ depth: Int) throws -> [String] {
            var out: [String] = []
            try array(depth: depth) { r, d in out.append(try r.string(d)) }
            return out
        }

        /// An integer written as plain digits (an optional minus, at most 18 digits).
        mutating func integer(_ depth: Int) throws -> Int64 {
            let b = s.bytes
            let start = s.offset
            var i = start
            if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
            var v: Int64 = 0
            var digits = 0
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                v = v * 10 + Int64(b[i] - 48)
                digits += 1
                i += 1
                guard digits <= 18 else { throw Unsure() }
            }
            guard digits > 0 else { throw Unsure() }
            try s.skipValue(depth: depth)
            guard s.offset == i else { throw Unsure() }  // a fraction or an exponent follows
            return b[start] == UInt8(ascii: "-") ? -v : v
        }

        mutating func optionalInteger(_ depth: Int) throws -> Int64? {
            if next == UInt8(ascii: "n") { return try null(depth) }
            return try integer(depth)
        }

        mutating func int(_ depth: Int) throws -> Int { Int(try integer(depth)) }

        mutating func bool(_ depth: Int) throws -> Bool {
            guard case .bool(let v) = try s.scalar(depth: depth) else { throw Unsure() }
            return v
        }

        mutating func double(_ depth: Int) throws -> Double {
            guard case .number(let v) = try s.scalar(depth: depth), v.isFinite else { throw Unsure() }
            return v
        }

        mutating func counts(_ depth: Int) throws -> SyncCounts {
            var c = SyncCounts()
            var found = 0
            try object(depth: depth) { r, key, d in
                switch key {
                case "new": c.new = try r.int(d)
                case "updated": c.updated = try r.int(d)
                case "unchanged": c.unchanged = try r.int(d)
                case "removed": c.removed = try r.int(d)
                case "errors": c.errors = try r.int(d)
                case "patients_processed": c.patientsProcessed = try r.int(d)
                case "patients_failed": c.patientsFailed = try r.int(d)
                default: try r.skip(d); return
                }
                found += 1
            }
            guard found == 7 else { throw Unsure() }
            return c
        }

        mutating func api(_ depth: Int) throws -> APIUsage {
            var a = APIUsage()
            var found = 0
            try object(depth: depth) { r, key, d in
                switch key {
                case "calls": a.calls = try r.int(d)
                case "retries": a.retries = try r.int(d)
                case "rate_limit_waits": a.rateLimitWaits = try r.int(d)
                case "waited_seconds": a.waitedSeconds = try r.double(d)
                case "rate_limit_hit": a.rateLimitHit = try r.bool(d)
                default: try r.skip(d); return
                }
                found += 1
            }
            guard found == 5 else { throw Unsure() }
            return a
        }
    }
}
