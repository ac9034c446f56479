import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import Synchronization

/// Printing for the read commands: `--json` prints one array of objects keyed by the view's
/// column names; otherwise a readable table of the most useful columns.
enum Output {
    /// Keys sorted, slashes unescaped, integers without a fraction: the same JSON as
    /// Foundation's `JSONSerialization` with `.sortedKeys`, ~10× faster (its key sort is a
    /// locale-aware string comparison: `appointments --json` of 245,000 rows took ~100 s).
    static func json(_ value: JSONValue) -> String {
        value.canonicalText
    }

    /// The rows as one JSON array, the bytes `json(.array(…))` gives, written a row at a time: the
    /// whole array's Foundation objects and text (about 15 KB per sync-log row) never exist at
    /// once, so `sync-logs --json` of 100,000 runs needs tens of MB, not 1.5 GB.
    static func printJSON(_ rows: [ViewRow]) {
        var chunk = "["
        for (i, row) in rows.enumerated() {
            if i > 0 { chunk += "," }
            chunk += json(row.json)
            if chunk.utf8.count >= 1 << 16 {
                print(chunk, terminator: "")
                chunk = ""
            }
        }
        print(chunk + "]")
    }

    static func text(_ v: JSONValue?) -> String {
        switch v {
        case nil, .null?: return ""
        case .bool(let b)?: return b ? "yes" : "no"
        case .string(let s)?: return s
        case .number?: return v!.canonicalText
        case let other?: return other.canonicalText
        }
    }

    /// `--wide`: print every cell in full, whatever the width.
    nonisolated(unsafe) static var wide = false
    /// At most this wide, whatever the terminal (the demo: 100).
    nonisolated(unsafe) static var widthCap: Int?
    /// The command was given `--json`: a failure is also one JSON object on stdout (`guarded`).
    nonisolated(unsafe) static var jsonFailures = false
    /// Shorter table headers for long view column names (JSON keeps the column names).
    static let headerNames = [
        "appointments_new": "new", "appointments_updated": "updated", "appointments_unchanged": "unchanged",
        "appointments_removed": "removed", "appointments_errors": "errors", "duration_ms": "ms",
        "practitioner_name": "practitioner", "location_name": "location", "organization_id": "org",
        "url_provider": "provider", "visit_type": "visit", "error_message": "error", "sync_type": "type",
    ]
    /// Columns shrunk last when a table must fit: a time, an address or a join link cut short
    /// is worth less than a cut name.
    static let keepLonger: Set<String> = ["start", "started", "address", "meeting_url", "error", "detail", "where"]
    /// Columns of times and ages, never cut (as numbers are not): the tables' and `status`'s.
    static let timeColumns: Set<String> = ["start", "started", "started_at", "completed_at", "last_success", "last_failure", "at", "age"]
    /// Columns that stay at least this wide (a time, a name, the kind of a change, a run's type)
    /// while others can still give. `change` holds "location changed" whole: cut to "re…" it
    /// could be rescheduled, removed or restored (hostile test).
    static let minWidths = ["start": 20, "started": 20, "patient": 12, "status": 9, "run": runPrefixLength,
                            "change": 16, "type": 15]
    /// How much of a run's id the `sync-logs` table shows: enough for `changes --run`.
    static let runPrefixLength = 8

    /// The width tables fit: `$COLUMNS` when set, else the terminal's width when stdout is a
    /// terminal, else 100 (a pipe, a file, cron mail).
    static var width: Int { min(widthCap ?? .max, terminalWidth) }

    static var terminalWidth: Int {
        if let c = ProcessInfo.processInfo.environment["COLUMNS"], let n = Int(c.trimmingCharacters(in: .whitespaces)), n > 0 {
            return max(20, n)
        }
        if isatty(1) != 0 {
            var w = winsize()
            if ioctl(1, UInt(TIOCGWINSZ), &w) == 0, w.ws_col > 0 { return max(20, Int(w.ws_col)) }
        }
        return 100
    }

    /// A plain table: a header, a rule, and one line per row, fitted to `width` (unless `--wide`)
    /// by narrowing the widest columns and cutting their cells with "…".
    static func table(_ headers: [String], _ rows: [[String]], width: Int? = nil) -> String {
        fittedTable(headers, rows, width: width).text
    }

    /// `table`, and whether a cell was cut to fit.
    static func fittedTable(_ headers: [String], _ rows: [[String]], width: Int? = nil) -> (text: String, cut: Bool) {
        let rows = rows.map { $0.map(TerminalText.safe) }
        // Widths are terminal columns, not characters: a CJK name of 12 characters takes 24, and
        // counted as 12 it pushed every cell after it out of line and the row past the width
        // (hostile test). Each cell's is counted once (a table may have 245,000 rows).
        let cellColumns = rows.map { $0.map(columns) }
        var widths = headers.map(columns)
        for r in cellColumns { for (i, n) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], n) } }
        // A number is never cut: "44…" of 4470 reads as another number (hostile test). Its
        // column keeps its widest cell; only its header may be cut to that.
        let numbers = headers.indices.map { i -> Int? in
            var widest = 0
            for (r, n) in zip(rows, cellColumns) where i < r.count && !r[i].isEmpty {
                guard r[i].allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-" || $0 == ".") }) else { return nil }
                widest = max(widest, n[i])
            }
            return widest > 0 ? max(3, widest) : nil
        }
        if !wide { fit(&widths, headers: headers, budget: width ?? self.width, numbers: numbers) }
        /// The cell as shown in `w` columns, padded: whole when its `n` columns fit, else cut with "…".
        func fitted(_ cell: String, _ n: Int, _ w: Int) -> String {
            guard n > w else { return cell + String(repeating: " ", count: w - n) }
            var kept = "", used = 0
            for c in cell {
                let k = columns(c)
                guard used + k <= w - 1 else { break }
                kept.append(c)
                used += k
            }
            return kept + "…" + String(repeating: " ", count: max(0, w - used - 1))
        }
        func line(_ cells: [String], _ counts: [Int]) -> String {
            cells.indices.map { i in fitted(cells[i], counts[i], widths[i]) }
                .joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        var out = [line(headers, headers.map(columns)), line(widths.map { String(repeating: "-", count: $0) }, widths)]
        out += zip(rows, cellColumns).map(line)
        let wasCut = cellColumns.contains { r in r.indices.contains { $0 < widths.count && r[$0] > widths[$0] } }
        return (out.joined(separator: "\n"), wasCut)
    }

    /// The terminal columns `text` takes.
    static func columns(_ text: String) -> Int { text.reduce(0) { $0 + columns($1) } }

    /// The terminal columns a character takes: 2 for East Asian wide and fullwidth characters
    /// and emoji (Unicode's East Asian Width W and F, the main blocks), else 1. A character is a
    /// whole grapheme cluster, so a combining mark adds nothing to the letter it is on.
    static func columns(_ c: Character) -> Int {
        guard let first = c.unicodeScalars.first, first.value >= 0x1100 else { return 1 }
        if c.unicodeScalars.contains(where: { $0.value == 0xFE0F }) { return 2 }  // emoji presentation
        switch first.value {
        case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF,
             0xA000...0xA4CF, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60,
             0xFFE0...0xFFE6, 0x1F300...0x1F64F, 0x1F680...0x1F6FF, 0x1F900...0x1F9FF, 0x20000...0x3FFFD:
            return 2
        default:
            return 1
        }
    }

    /// Narrows columns until the table fits `budget`: the widest first, the `keepLonger` ones
    /// last, none below a few characters.
    /// `numbers`: for a column of numbers, the width of its widest, which it keeps.
    static func fit(_ widths: inout [Int], headers: [String], budget: Int, numbers: [Int?] = []) {
        // A column keeps at least 3 characters (its header may be cut too), some more; a column
        // of numbers all of them, always.
        // A time too: "2026-11-02 06:10 +13…" (a zone named by its offset, Pacific/Chatham's
        // +1345) read as another offset (hostile test).
        let kept = headers.indices.map { i in
            timeColumns.contains(headers[i]) ? widths[i] : i < numbers.count ? numbers[i] ?? 3 : 3
        }
        let floor = headers.indices.map { max(minWidths[headers[$0]] ?? 3, kept[$0]) }
        var total = widths.reduce(0, +) + 2 * max(0, widths.count - 1)
        // First the columns give down to their floors; only then do the floors go.
        fitTo(&widths, headers: headers, budget: budget, floor: floor, total: &total)
        fitTo(&widths, headers: headers, budget: budget, floor: kept, total: &total)
    }

    static func fitTo(_ widths: inout [Int], headers: [String], budget: Int, floor: [Int], total: inout Int) {
        while total > budget {
            let candidates = widths.indices.filter { widths[$0] > floor[$0] }
            let soft = candidates.filter { !keepLonger.contains(headers[$0]) }
            guard let i = (soft.isEmpty ? candidates : soft).max(by: { widths[$0] < widths[$1] }) else { break }
            // Down to the next widest column at once (or by what is still too much).
            let others = (soft.isEmpty ? candidates : soft).filter { $0 != i }.map { widths[$0] }.max() ?? floor[i]
            let step = max(1, min(total - budget, widths[i] - max(others, floor[i])))
            widths[i] -= step
            total -= step
        }
    }

    static func printTable(_ rows: [ViewRow], columns: [String], empty: String) {
        guard !rows.isEmpty else {
            print(empty)
            return
        }
        let (text, cut) = fittedTable(columns.map { headerNames[$0] ?? $0 }, rows.map { r in columns.map { Self.text(r[$0]) } })
        print(text)
        print("(\(rows.count) row\(rows.count == 1 ? "" : "s")\(cutHint(cut)))")
    }

    /// Said after the count when cells were cut: an id cut so cannot be given to `history`
    /// (hostile test).
    static func cutHint(_ cut: Bool, short: Bool = false) -> String {
        cut ? (short ? "; --wide shows cut cells whole" : "; cells cut to fit: --wide shows them whole") : ""
    }
}

/// Progress on stderr, only when stderr is a terminal: one line rewritten in place.
final class ProgressLine: Sendable {
    private let enabled = isatty(2) != 0
    /// The last draw time; held while drawing so two lines never interleave.
    private let lastDraw = Mutex(0.0)
    private let started = Date()

    /// Draws `text` over the line. Draws come at most every 0.1 s (a fold reports every chunk)
    /// unless `force`: a sync's steps are few, and one dropped for coming right after another
    /// stayed unsaid for as long as it lasted (a minute's wait for the rate limit, hostile test).
    func update(_ text: String, force: Bool = false) {
        guard enabled else { return }
        lastDraw.withLock { lastDraw in
            let now = Date().timeIntervalSince1970
            guard force || now - lastDraw > 0.1 else { return }
            lastDraw = now
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
        }
    }

    func fold(_ p: FoldProgress) {
        let elapsed = max(0.001, Date().timeIntervalSince(started))
        let rate = Double(p.appliedEvents) / elapsed
        let pct = p.totalEvents == 0 ? 100 : Int(Double(p.appliedEvents) * 100 / Double(p.totalEvents))
        let left = rate > 0 ? Double(p.totalEvents - min(p.totalEvents, p.appliedEvents)) / rate : 0
        let width = 24
        let filled = min(width, pct * width / 100)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        update(String(format: "%@ [%@] %3d%% %llu/%llu events  %.0f events/s  ETA %.0f s",
                      p.projection, bar, pct, p.appliedEvents, p.totalEvents, rate, left))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}

/// Prints one line on stderr. What it quotes (IntakeQ's names and statuses in a sync's warnings,
/// a value given on the command line) cannot drive the terminal (`TerminalText`).
func warn(_ message: String) {
    FileHandle.standardError.write(Data((TerminalText.safe(message) + "\n").utf8))
}

/// Text from IntakeQ or the log shown on a terminal: a name, a note or a location can hold any
/// character, and a raw one could drive the terminal (ESC starts an escape sequence; DEL and the
/// C1 controls, U+0080–U+009F, are controls too), break a table's line (a newline, U+2028/2029),
/// or reorder what follows it on the line (the bidirectional controls, U+202A–U+202E,
/// U+2066–U+2069, U+200E/200F, U+061C). Those are shown as `\u{1B}`; everything else, joiners
/// included (Persian and Indic names use them), as it is. `--json` output keeps values as
/// recorded (JSON escapes what JSON must).
enum TerminalText {
    static func isUnsafe(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069, 0x200E, 0x200F, 0x061C: true
        default: false
        }
    }

    /// `text` with each unsafe character as `\u{HEX}`.
    static func safe(_ text: String) -> String {
        Trust.escaping(text, backslash: false, isUnsafe)
    }

    /// One JSON line from the log for a terminal: each unsafe character in it as a JSON escape
    /// (`\u007F`), so the line still parses to the same value. Raw C0 controls cannot appear in
    /// the JSON the log holds (they are escaped when it is written). Bytes that are not UTF-8 are
    /// left as they are.
    static func jsonLine(_ bytes: [UInt8]) -> [UInt8] {
        // Only DEL and multi-byte sequences can be unsafe here.
        guard bytes.contains(where: { $0 >= 0x7F }) else { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            var scalar: UInt32?
            var length = 1
            if b == 0x7F {
                scalar = 0x7F
            } else if b == 0xC2, i + 1 < bytes.count, (0x80...0x9F).contains(bytes[i + 1]) {
                scalar = UInt32(bytes[i + 1]); length = 2
            } else if b == 0xD8, i + 1 < bytes.count, bytes[i + 1] == 0x9C {
                scalar = 0x061C; length = 2
            } else if b == 0xE2, i + 2 < bytes.count, bytes[i + 1] == 0x80 || bytes[i + 1] == 0x81, bytes[i + 2] & 0xC0 == 0x80 {
                let value = 0x2000 + (UInt32(bytes[i + 1] & 0x3F) << 6) + UInt32(bytes[i + 2] & 0x3F)
                if let u = Unicode.Scalar(value), isUnsafe(u) { scalar = value; length = 3 }
            }
            if let scalar {
                let hex = String(scalar, radix: 16, uppercase: true)
                out += Array(("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).utf8)
            } else {
                out += bytes[i..<(i + length)]
            }
            i += length
        }
        return out
    }
}
