import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections

/// Printing for the read commands: `--json` prints one array of objects keyed by the view's
/// column names; otherwise a readable table of the most useful columns.
enum Output {
    static func json(_ value: JSONValue) -> String {
        let obj = value.foundationObject
        let data = (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func printJSON(_ rows: [ViewRow]) {
        print(json(.array(rows.map(\.json))))
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

    /// A plain table: a header, a rule, and one line per row; long cells are cut with "…".
    /// Columns never cut: a join link or an error message is useless without its end.
    static let uncut: Set<String> = ["meeting_url", "error_message"]

    static func table(_ headers: [String], _ rows: [[String]], maxWidth: Int = 40) -> String {
        let cut = rows.map { row in
            row.enumerated().map { i, cell in
                i < headers.count && uncut.contains(headers[i]) || cell.count <= maxWidth ? cell : String(cell.prefix(maxWidth - 1)) + "…"
            }
        }
        var widths = headers.map(\.count)
        for r in cut { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        var out = [line(headers), line(widths.map { String(repeating: "-", count: $0) })]
        out += cut.map(line)
        return out.joined(separator: "\n")
    }

    static func printTable(_ rows: [ViewRow], columns: [String], empty: String) {
        guard !rows.isEmpty else {
            print(empty)
            return
        }
        print(table(columns, rows.map { r in columns.map { text(r[$0]) } }))
        print("(\(rows.count) row\(rows.count == 1 ? "" : "s"))")
    }
}

/// Progress on stderr, only when stderr is a terminal: one line rewritten in place.
final class ProgressLine: @unchecked Sendable {
    // @unchecked: used from one task at a time; the lock guards the last-draw time.
    private let enabled = isatty(2) != 0
    private let lock = NSLock()
    private var lastDraw = 0.0
    private let started = Date()

    func update(_ text: String) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        let now = Date().timeIntervalSince1970
        guard now - lastDraw > 0.1 else { return }
        lastDraw = now
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
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

/// Prints one line on stderr.
func warn(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

extension JSONValue {
    /// The value as a plain Foundation object, for JSONSerialization's pretty output.
    var foundationObject: Any {
        switch self {
        case .null: return NSNull()
        case .bool(let b): return b
        case .number(let d): return d.rounded() == d && abs(d) < 9.0e15 ? Int64(d) as Any : d as Any
        case .string(let s): return s
        case .array(let a): return a.map(\.foundationObject)
        case .object(let o): return o.mapValues(\.foundationObject)
        }
    }
}
