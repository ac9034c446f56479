import Foundation

/// Per-run figures gathered into medians with min and max.
struct Summary {
    var runs: [[String: Double]] = []
    var rss: [(String, Double)] = []

    func values(_ key: String) -> [Double] { runs.compactMap { $0[key] }.filter { $0.isFinite } }
    func med(_ key: String) -> Double? { let v = values(key); return v.isEmpty ? nil : median(v) }
    func lo(_ key: String) -> Double? { values(key).min() }
    func hi(_ key: String) -> Double? { values(key).max() }

    static let jsonKeys = [
        "events", "append_events_per_s", "append_mb_per_s", "single_append_p50_ms", "single_append_p99_ms",
        "replay_events_per_s", "replay_mb_per_s", "replay_one_thread_events_per_s", "verify_events_per_s", "rebuild_events_per_s",
        "log_bytes_per_event",
        "views_bytes_per_event", "raw_json_bytes_per_event", "raw_object_bytes_per_observation", "history_ms",
        "as_of_ms", "peak_rss_mb", "sqlite_append_events_per_s", "sqlite_replay_events_per_s",
        "sqlite_replay_mb_per_s", "sqlite_bytes_per_event", "lz4_cli_compress_events_per_s",
        "lz4_cli_decompress_events_per_s", "lz4_cli_bytes_per_event", "fdatasync_p50_ms", "fdatasync_p99_ms",
        "pg_full_load_s", "pg_full_load_events_per_s", "sqlite_catchup_s", "pg_catchup_s",
        "pg_catchup_events", "pg_catchup_rows", "pg_catchup_events_per_s", "pg_copy_floor_rows", "pg_copy_floor_s",
        "pg_copy_floor_events_per_s", "pg_rebuild_s", "pg_rebuild_events", "pg_reader_queries", "pg_reader_p50_ms",
        "pg_reader_p99_ms", "pg_reader_errors",
        "rebuild_s", "append_no_evidence_events_per_s", "single_append_no_evidence_p50_ms",
        "single_append_no_evidence_p99_ms",
        "rebuild_s", "sealed_append_events_per_s", "sealed_log_bytes_per_event", "sealed_replay_events_per_s",
        "sealed_rebuild_events_per_s", "sealed_raw_json_bytes_per_event", "sealed_views_bytes_per_event",
        "rebuild_read_s", "rebuild_fold_s", "rebuild_write_s", "rebuild_event_by_event_events_per_s",
        "sealed_rebuild_read_s", "sealed_rebuild_fold_s", "sealed_rebuild_write_s",
    ]

    /// Encryption off vs on: each figure and the ratio on/off.
    func encryptionTable() -> String {
        let rows = [
            ("durable append, batches of 1,000 (events/s)", "append_events_per_s"),
            ("full replay (events/s)", "replay_events_per_s"),
            ("rebuild of all views (events/s)", "rebuild_events_per_s"),
            ("log bytes on disk per event", "log_bytes_per_event"),
            ("raw JSON Lines bytes per event", "raw_json_bytes_per_event"),
            ("views bytes on disk per event", "views_bytes_per_event"),
        ]
        var lines = ["| figure | encryption off | encryption on | on / off |", "| --- | ---: | ---: | ---: |"]
        for (label, k) in rows {
            lines.append("| \(label) | \(cell(k)) | \(cell("sealed_" + k)) | \(ratio("sealed_" + k, k)) |")
        }
        return lines.joined(separator: "\n")
    }

    func json(extra: [String: Any]) -> String {
        var out: [String: Any] = extra
        var mins: [String: Double] = [:], maxs: [String: Double] = [:]
        // The listed keys, and any other figure a run measured (open times, the sink's split, …).
        let measured = Set(runs.flatMap(\.keys)).subtracting(Self.jsonKeys).sorted()
        for k in Self.jsonKeys + measured {
            guard let m = med(k) else { continue }
            out[k] = k == "events" ? Int(m) : rounded(m)
            mins[k] = rounded(lo(k)!)
            maxs[k] = rounded(hi(k)!)
        }
        out["runs"] = runs.count
        out["min"] = mins
        out["max"] = maxs
        out["peak_rss_mb_after_phase"] = Dictionary(rss.map { ($0.0, rounded($0.1)) }, uniquingKeysWith: max)
        out["targets"] = Dictionary(targets().map { ($0.key, $0.met) }, uniquingKeysWith: { a, _ in a })
        let data = try! JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    func rounded(_ x: Double) -> Double { (x * 1000).rounded() / 1000 }

    /// "median [min–max]" with a sensible number of digits.
    func cell(_ key: String) -> String {
        guard let m = med(key) else { return "—" }
        let l = lo(key)!, h = hi(key)!
        return runs.count > 1 ? "\(fmt(m)) [\(fmt(l))–\(fmt(h))]" : fmt(m)
    }

    func ratio(_ a: String, _ b: String) -> String {
        guard let x = med(a), let y = med(b), y > 0 else { return "—" }
        return String(format: "%.2f×", x / y)
    }

    func table() -> String {
        let rows: [(String, String, String?, String?)] = [
            ("durable append, batches of 1,000 (events/s)", "append_events_per_s", "sqlite_append_events_per_s", "lz4_cli_compress_events_per_s"),
            ("durable append (MB/s of JSON Lines)", "append_mb_per_s", nil, nil),
            ("single-event durable append p50 (ms)", "single_append_p50_ms", nil, "fdatasync_p50_ms"),
            ("single-event durable append p99 (ms)", "single_append_p99_ms", nil, "fdatasync_p99_ms"),
            ("durable append, batches of 1,000, no head evidence (events/s)", "append_no_evidence_events_per_s", nil, nil),
            ("single-event durable append p50, no head evidence (ms)", "single_append_no_evidence_p50_ms", nil, "fdatasync_p50_ms"),
            ("single-event durable append p99, no head evidence (ms)", "single_append_no_evidence_p99_ms", nil, "fdatasync_p99_ms"),
            ("full replay, CRC + chain + envelope (events/s)", "replay_events_per_s", "sqlite_replay_events_per_s", "lz4_cli_decompress_events_per_s"),
            ("full replay (MB/s of JSON Lines)", "replay_mb_per_s", "sqlite_replay_mb_per_s", nil),
            ("full replay on one thread, the in-run baseline (events/s)", "replay_one_thread_events_per_s", nil, nil),
            ("verify, as `syncledger verify` checks (events/s)", "verify_events_per_s", nil, nil),
            ("rebuild of all views (events/s)", "rebuild_events_per_s", nil, nil),
            ("log bytes on disk per event", "log_bytes_per_event", "sqlite_bytes_per_event", "lz4_cli_bytes_per_event"),
            ("views bytes on disk per event", "views_bytes_per_event", "sqlite_bytes_per_event", nil),
            ("raw JSON Lines bytes per event", "raw_json_bytes_per_event", nil, nil),
            ("open the store for writing (ms)", "open_for_writing_ms", nil, nil),
            ("open the store for reading (ms)", "open_for_reading_ms", nil, nil),
            ("open the views and check them against the log (ms)", "open_views_ms", nil, nil),
            ("history of one appointment (ms)", "history_ms", nil, nil),
            ("as-of of one appointment (ms)", "as_of_ms", nil, nil),
            ("peak RSS, SyncLedger phases (MB)", "peak_rss_mb", nil, nil),
        ]
        var lines = ["| figure | SyncLedger | SQLite baseline | vs SQLite | floor (lz4 CLI; fdatasync) | vs floor |",
                     "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for (label, ours, sq, lz) in rows {
            lines.append("| \(label) | \(cell(ours)) | \(sq.map(cell) ?? "—") | \(sq.map { ratio(ours, $0) } ?? "—") | \(lz.map(cell) ?? "—") | \(lz.map { ratio(ours, $0) } ?? "—") |")
        }
        return lines.joined(separator: "\n")
    }

    struct Target { var key: String; var text: String; var measured: String; var met: Bool }

    func targets() -> [Target] {
        func v(_ k: String) -> Double { med(k) ?? .nan }
        let sa = v("append_events_per_s") / v("sqlite_append_events_per_s")
        let sr = v("replay_events_per_s") / v("sqlite_replay_events_per_s")
        let sb = v("log_bytes_per_event") / v("sqlite_bytes_per_event")
        return [
            Target(key: "append", text: "append ≥ 150,000 events/s and ≥ 3× SQLite",
                   measured: "\(fmt(v("append_events_per_s")))/s, \(String(format: "%.2f", sa))×",
                   met: v("append_events_per_s") >= 150_000 && sa >= 3),
            Target(key: "single_append", text: "single append p50 ≤ 0.3 ms, p99 ≤ 1 ms",
                   measured: "\(fmt(v("single_append_p50_ms"))) / \(fmt(v("single_append_p99_ms"))) ms",
                   met: v("single_append_p50_ms") <= 0.3 && v("single_append_p99_ms") <= 1),
            Target(key: "replay", text: "replay ≥ 400,000 events/s and ≥ 3× SQLite",
                   measured: "\(fmt(v("replay_events_per_s")))/s, \(String(format: "%.2f", sr))×",
                   met: v("replay_events_per_s") >= 400_000 && sr >= 3),
            Target(key: "rebuild", text: "rebuild ≥ 150,000 events/s",
                   measured: "\(fmt(v("rebuild_events_per_s")))/s", met: v("rebuild_events_per_s") >= 150_000),
            Target(key: "log_bytes", text: "log ≤ 520 bytes/event and ≤ 0.25× SQLite",
                   measured: "\(fmt(v("log_bytes_per_event"))) B, \(String(format: "%.2f", sb))×",
                   met: v("log_bytes_per_event") <= 520 && sb <= 0.25),
            Target(key: "lookups", text: "history and as-of ≤ 50 ms",
                   measured: "\(fmt(v("history_ms"))) / \(fmt(v("as_of_ms"))) ms",
                   met: v("history_ms") <= 50 && v("as_of_ms") <= 50),
            Target(key: "peak_rss", text: "peak RSS ≤ 200 MB (target is at 10M events)",
                   measured: "\(fmt(v("peak_rss_mb"))) MB", met: v("peak_rss_mb") <= 200),
        ]
    }

    func targetTable() -> String {
        var lines = ["| target | measured (median) | met |", "| --- | ---: | :---: |"]
        for t in targets() {
            let verdict = t.measured.hasPrefix("—") ? "not run" : t.met ? "yes" : "**no**"
            lines.append("| \(t.text) | \(t.measured) | \(verdict) |")
        }
        return lines.joined(separator: "\n")
    }
}

func fmt(_ x: Double) -> String {
    if !x.isFinite { return "—" }
    if abs(x) >= 1000 {
        let f = NumberFormatter()
        f.numberStyle = .decimal
        f.locale = Locale(identifier: "en_US")
        f.maximumFractionDigits = 0
        return f.string(from: NSNumber(value: x.rounded())) ?? String(Int(x))
    }
    if abs(x) >= 100 { return String(format: "%.0f", x) }
    if abs(x) >= 10 { return String(format: "%.1f", x) }
    return String(format: "%.3g", x)
}

extension Summary {
    func postgresTable() -> String {
        var out = ["PostgreSQL sink (median [min–max]):", ""]
        let rows: [(String, String)] = [
            ("full load into a fresh sink, first half (events/s)", "pg_full_load_events_per_s"),
            ("SQLite views catch-up of the second half (s)", "sqlite_catchup_s"),
            ("sink catch-up of the second half (events)", "pg_catchup_events"),
            ("sink catch-up: rows written", "pg_catchup_rows"),
            ("sink catch-up (s)", "pg_catchup_s"),
            ("sink catch-up (events/s)", "pg_catchup_events_per_s"),
            ("  of which reading the log for changed keys (s)", "pg_catchup_delta_s"),
            ("  of which deleting their old rows (s)", "pg_catchup_delete_s"),
            ("  of which COPYing their rows (s)", "pg_catchup_copy_s"),
            ("raw COPY of the same rows (s)", "pg_copy_floor_s"),
            ("raw COPY floor (events/s)", "pg_copy_floor_events_per_s"),
            ("sink rebuild (s)", "pg_rebuild_s"),
            ("sink rebuild: events in the log", "pg_rebuild_events"),
            ("readers during the rebuild: queries", "pg_reader_queries"),
            ("readers during the rebuild: p50 (ms)", "pg_reader_p50_ms"),
            ("readers during the rebuild: p99 (ms)", "pg_reader_p99_ms"),
            ("readers during the rebuild: errors", "pg_reader_errors"),
        ]
        for (label, key) in rows { out.append("  " + label.padding(toLength: 52, withPad: " ", startingAt: 0) + cell(key)) }
        if let c = med("pg_catchup_events_per_s"), let f = med("pg_copy_floor_events_per_s"), f > 0 {
            out.append("")
            out.append(String(format: "  catch-up / COPY floor: %.0f%% (target ≥ 50%%); catch-up ≥ 50,000 events/s: %@",
                              c / f * 100, (c >= 50_000 ? "met" : "not met") as NSString))
        }
        return out.joined(separator: "\n")
    }
}
