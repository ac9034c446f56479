import Foundation

/// ISO 8601 UTC timestamps with milliseconds ("2026-11-26T09:00:03.120Z"), the only time
/// format SyncLedger writes. Formatting is done by hand: it runs once per event.
public enum ISOTime {
    /// Formats epoch milliseconds. By hand, not `String(format:)`: it runs several times per
    /// event on the rebuild path, where Foundation's formatter was a fifth of the profile.
    ///
    /// Times before year 1 or after year 9999 are written as the first or last millisecond of
    /// those years: four digits hold no other year (10000-01-01 came out as 0000-01-01, so a
    /// `--to 9999-12-31` bound lay before every appointment: hostile test), and the clamped
    /// texts still sort as the times do.
    public static func format(millis unclamped: Int64) -> String {
        let millis = clamp(unclamped)
        let secs = millis >= 0 ? millis / 1000 : (millis - 999) / 1000
        let ms = Int(millis - secs * 1000)
        let days = secs >= 0 ? secs / 86_400 : (secs - 86_399) / 86_400
        let sod = Int(secs - days * 86_400)
        let date = CivilDate(daysSinceEpoch: days)
        let (y, m, d) = (date.year, date.month, date.day)
        // Written straight into the string's storage (one allocation).
        return String(unsafeUninitializedCapacity: 24) { out in
            func put(_ v: Int, _ at: Int, _ width: Int) {
                var v = v
                for k in stride(from: at + width - 1, through: at, by: -1) {
                    out[k] = UInt8(48 + v % 10)
                    v /= 10
                }
            }
            put(y, 0, 4); out[4] = 45
            put(m, 5, 2); out[7] = 45
            put(d, 8, 2); out[10] = 84
            put(sod / 3600, 11, 2); out[13] = 58
            put(sod / 60 % 60, 14, 2); out[16] = 58
            put(sod % 60, 17, 2); out[19] = 46
            put(ms, 20, 3); out[23] = 90
            return 24
        }
    }

    /// The milliseconds `format(millis:)` writes: within 0001-01-01 and 9999-12-31.
    public static func clamp(_ millis: Int64) -> Int64 {
        min(max(millis, -62_135_596_800_000), 253_402_300_799_999)
    }

    public static func format(_ date: Date) -> String {
        format(millis: Int64((date.timeIntervalSince1970 * 1000).rounded(.down)))
    }

    /// Formats a day as yyyy-MM-dd (UTC).
    public static func day(millis: Int64) -> String {
        String(format(millis: millis).prefix(10))
    }

    /// Parses "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS[.fff…]]" with "Z" or "±HH:MM" (or no zone,
    /// read as UTC) into epoch milliseconds. Returns nil when the text is not such a time.
    public static func parse(_ text: String) -> Int64? {
        let s = Array(text.utf8)
        var i = 0
        func num(_ n: Int) -> Int? {
            guard i + n <= s.count else { return nil }
            var v = 0
            for k in 0..<n {
                let c = s[i + k]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < s.count, s[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = num(4), expect(45), let mo = num(2), expect(45), let d = num(2) else { return nil }
        guard (1...12).contains(mo), (1...31).contains(d) else { return nil }
        // No day past the month's end ("2026-02-31" is not March 3rd).
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
        guard d <= [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo - 1] else { return nil }
        var h = 0, mi = 0, sec = 0, ms = 0, offset = 0
        if i < s.count {
            guard expect(84) || expect(32) || expect(116) else { return nil }  // 'T', ' ', 't'
            guard let hh = num(2), expect(58), let mm = num(2) else { return nil }
            h = hh
            mi = mm
            if expect(58) {
                guard let ss = num(2) else { return nil }
                sec = ss
                if expect(46) {
                    var digits = 0
                    var frac = 0
                    while i < s.count, s[i] >= 48, s[i] <= 57 {
                        if digits < 3 { frac = frac * 10 + Int(s[i] - 48) }
                        digits += 1
                        i += 1
                    }
                    guard digits > 0 else { return nil }
                    for _ in digits..<max(digits, 3) { frac *= 10 }
                    ms = frac
                }
            }
            guard h < 24, mi < 60, sec < 61 else { return nil }
            if i < s.count {
                if expect(90) || expect(122) {  // 'Z'
                } else if i < s.count, s[i] == 43 || s[i] == 45 {
                    let sign = s[i] == 45 ? -1 : 1
                    i += 1
                    guard let oh = num(2) else { return nil }
                    _ = expect(58)
                    // A UTC offset is at most 14 hours (UTC+14:00, Kiribati), in whole minutes.
                    guard let om = num(2), om < 60, oh * 60 + om <= 14 * 60 else { return nil }
                    offset = sign * (oh * 60 + om)
                } else {
                    return nil
                }
            }
            guard i == s.count else { return nil }
        }
        let days = CivilDate(year: y, month: mo, day: d).daysSinceEpoch
        let seconds = days * 86_400 + Int64(h * 3600 + mi * 60 + sec) - Int64(offset * 60)
        return seconds * 1000 + Int64(ms)
    }

    /// The real clock, in epoch milliseconds.
    public static func nowMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
