import Domain
import Foundation

/// The runs page's chart: runs per local day (bars) and the share of them that did not complete
/// (failed or partial_success; a line), over the 30 local days ending today. Plain numbers for the
/// `chart` template, which draws inline SVG (no script, no image request).
enum RunChart {
    struct Day: Equatable {
        var date: CivilDate
        var runs = 0
        var bad = 0
        var errorRate: Double { runs == 0 ? 0 : Double(bad) / Double(runs) }
    }

    static let days = 30

    /// The first instant of the chart's first day (query runs started at or after it).
    static func since(now: Int64, zone: ZoneRules) -> Int64 {
        let today = zone.local(atUTCMillis: now).date
        return zone.startOfDay(CivilDate(daysSinceEpoch: today.daysSinceEpoch - Int64(days - 1)))
    }

    static func bucket(_ runs: [(startedAt: String, status: String)], now: Int64, zone: ZoneRules) -> [Day] {
        let today = zone.local(atUTCMillis: now).date.daysSinceEpoch
        let first = today - Int64(days - 1)
        var out = (0..<days).map { Day(date: CivilDate(daysSinceEpoch: first + Int64($0))) }
        for r in runs {
            guard let ms = ISOTime.parse(r.startedAt) else { continue }
            let d = zone.local(atUTCMillis: ms).date.daysSinceEpoch
            guard d >= first, d <= today else { continue }
            let i = Int(d - first)
            out[i].runs += 1
            if r.status == "failed" || r.status == "partial_success" { out[i].bad += 1 }
        }
        return out
    }

    /// The template's values for these days.
    static func render(_ days: [Day]) -> [String: Any] {
        let width = 600.0, height = 180.0, left = 30.0, right = 590.0, top = 20.0, base = 150.0
        let slot = (right - left) / Double(max(1, days.count))
        let maxRuns = max(1, days.map(\.runs).max() ?? 1)
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        var bars: [[String: Any]] = []
        var points: [String] = []
        var ticks: [[String: Any]] = []
        for (i, d) in days.enumerated() {
            let x = left + Double(i) * slot
            let h = (base - top) * Double(d.runs) / Double(maxRuns)
            let label = "\(iso(d.date)): \(d.runs) run\(d.runs == 1 ? "" : "s"), \(d.bad) not completed (\(Int((d.errorRate * 100).rounded()))%)"
            bars.append(["x": f(x + 1), "y": f(base - h), "w": f(max(1, slot - 2)), "h": f(h), "label": label])
            points.append("\(f(x + slot / 2)),\(f(base - (base - top) * d.errorRate))")
            if (days.count - 1 - i) % 7 == 0 {  // weekly, ending today
                ticks.append(["x": f(x + slot / 2), "y": f(base + 16), "text": "\(d.date.month)/\(d.date.day)"])
            }
        }
        let total = days.reduce(0) { $0 + $1.runs }
        let bad = days.reduce(0) { $0 + $1.bad }
        let caption = "\(total) runs in the last \(days.count) days, \(bad) failed or partial (\(total == 0 ? 0 : Int((Double(bad) * 100 / Double(total)).rounded()))%)."
        return ["width": f(width), "height": f(height), "left": f(left), "right": f(right), "base": f(base),
                "bars": bars, "errorLine": points.joined(separator: " "), "ticks": ticks, "max": maxRuns, "caption": caption]
    }

    static func iso(_ d: CivilDate) -> String {
        String(format: "%04d-%02d-%02d", d.year, d.month, d.day)
    }
}
