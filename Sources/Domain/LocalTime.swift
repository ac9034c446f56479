// The practice's local time: pure rules, no Foundation and no I/O (reading the zone file is
// `PracticeZone.load` in Sources/Projections/PracticeZone.swift).
//
// - A zone is an IANA time zone compiled as a TZif file (RFC 8536): transitions, then the POSIX TZ
//   rule of its footer for instants past the last transition.
// - A local time that does not exist (the spring-forward gap) moves forward by the gap; a local
//   time that exists twice (the fall-back overlap) means the earlier instant.
// - Command-line times: a date alone is a local day; a time without an offset is local time; "Z" or
//   ±HH:MM (at most ±14:00, the real range) is an instant.

/// A calendar date (proleptic Gregorian).
public struct CivilDate: Hashable, Sendable, Comparable {
    public var year: Int
    public var month: Int
    public var day: Int
    public init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    /// Days since 1970-01-01 (Howard Hinnant's civil algorithm).
    public var daysSinceEpoch: Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64(month + (month > 2 ? -3 : 9))
        let doy = (153 * mp + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    public init(daysSinceEpoch d0: Int64) {
        let z = d0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        self.init(year: Int(yoe + era * 400 + (m <= 2 ? 1 : 0)), month: Int(m), day: Int(d))
    }

    /// 0 = Sunday … 6 = Saturday.
    public var weekday: Int { Int(((daysSinceEpoch % 7) + 11) % 7) }

    public static func < (a: CivilDate, b: CivilDate) -> Bool { a.daysSinceEpoch < b.daysSinceEpoch }

    static func daysIn(month: Int, year: Int) -> Int {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    }
}

/// A wall-clock time on a date, without a zone.
public struct CivilDateTime: Hashable, Sendable {
    public var date: CivilDate
    public var hour: Int
    public var minute: Int
    public var second: Int
    public var millisecond: Int
    public init(date: CivilDate, hour: Int = 0, minute: Int = 0, second: Int = 0, millisecond: Int = 0) {
        self.date = date
        self.hour = hour
        self.minute = minute
        self.second = second
        self.millisecond = millisecond
    }

    /// These fields read as if they were UTC, in epoch milliseconds.
    var asIfUTCMillis: Int64 {
        date.daysSinceEpoch * 86_400_000 + Int64(hour * 3_600_000 + minute * 60_000 + second * 1000 + millisecond)
    }

    init(asIfUTCMillis ms: Int64) {
        let days = ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000
        let rest = Int(ms - days * 86_400_000)
        self.init(date: CivilDate(daysSinceEpoch: days), hour: rest / 3_600_000, minute: rest / 60_000 % 60,
                  second: rest / 1000 % 60, millisecond: rest % 1000)
    }
}

public struct LocalTimeError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The rules of one IANA time zone: UTC offset and abbreviation at any instant.
public struct ZoneRules: Sendable {
    public struct Period: Sendable, Hashable {
        /// Seconds east of UTC.
        public var offset: Int
        public var isDST: Bool
        public var abbreviation: String
    }

    public let identifier: String
    /// Transition instants (seconds since the epoch, ascending) and the period from each on.
    let transitions: [Int64]
    let periods: [Period]
    /// Before the first transition.
    let initial: Period
    /// After the last transition (the footer's POSIX rule), when the file has one.
    let rule: PosixRule?

    public static let utc = ZoneRules(identifier: "UTC", transitions: [], periods: [],
                                      initial: Period(offset: 0, isDST: false, abbreviation: "UTC"), rule: nil)

    init(identifier: String, transitions: [Int64], periods: [Period], initial: Period, rule: PosixRule?) {
        self.identifier = identifier
        self.transitions = transitions
        self.periods = periods
        self.initial = initial
        self.rule = rule
    }

    /// Parses a compiled zone (TZif, RFC 8536, versions 1–4).
    public init(identifier: String, tzif b: [UInt8]) throws {
        func bad(_ why: String) -> LocalTimeError { LocalTimeError("time zone \(identifier): \(why)") }
        func u32(_ at: Int) -> UInt32 {
            UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
        }
        func i64(_ at: Int) -> Int64 {
            var v: UInt64 = 0
            for k in 0..<8 { v = v << 8 | UInt64(b[at + k]) }
            return Int64(bitPattern: v)
        }
        guard b.count >= 44, b[0] == 0x54, b[1] == 0x5A, b[2] == 0x69, b[3] == 0x66 else { throw bad("not a TZif file") }
        let version = b[4]
        func counts(_ at: Int) -> (isut: Int, isstd: Int, leap: Int, time: Int, type: Int, char: Int) {
            (Int(u32(at + 20)), Int(u32(at + 24)), Int(u32(at + 28)), Int(u32(at + 32)), Int(u32(at + 36)), Int(u32(at + 40)))
        }
        var at = 0
        var c = counts(0)
        var timeSize = 4
        if version >= 0x32 {  // '2' and later: skip the 32-bit block, read the 64-bit one
            at = 44 + c.time * 4 + c.time + c.type * 6 + c.char + c.leap * 8 + c.isstd + c.isut
            guard b.count >= at + 44 else { throw bad("truncated") }
            c = counts(at)
            timeSize = 8
        }
        at += 44
        let dataSize = c.time * timeSize + c.time + c.type * 6 + c.char + c.leap * (timeSize + 4) + c.isstd + c.isut
        guard c.type > 0, b.count >= at + dataSize else { throw bad("truncated") }
        var times: [Int64] = []
        for k in 0..<c.time { times.append(timeSize == 8 ? i64(at + k * 8) : Int64(Int32(bitPattern: u32(at + k * 4)))) }
        at += c.time * timeSize
        let idx = (0..<c.time).map { Int(b[at + $0]) }
        at += c.time
        var types: [(Int, Bool, Int)] = []
        for k in 0..<c.type {
            let p = at + k * 6
            types.append((Int(Int32(bitPattern: u32(p))), b[p + 4] != 0, Int(b[p + 5])))
        }
        at += c.type * 6
        let chars = Array(b[at..<(at + c.char)])
        at += c.char + c.leap * (timeSize + 4) + c.isstd + c.isut
        func abbr(_ i: Int) -> String {
            guard i < chars.count else { return "" }
            let end = chars[i...].firstIndex(of: 0) ?? chars.count
            return String(decoding: chars[i..<end], as: UTF8.self)
        }
        let periodOf = types.map { Period(offset: $0.0, isDST: $0.1, abbreviation: abbr($0.2)) }
        guard idx.allSatisfy({ $0 < periodOf.count }) else { throw bad("bad transition type") }
        var rule: PosixRule?
        if version >= 0x32, at < b.count, b[at] == 10, let end = b[(at + 1)...].firstIndex(of: 10) {
            rule = PosixRule(String(decoding: b[(at + 1)..<end], as: UTF8.self))
        }
        self.init(identifier: identifier, transitions: times, periods: idx.map { periodOf[$0] },
                  initial: periodOf.first { !$0.isDST } ?? periodOf[0], rule: rule)
    }

    /// The period (offset, abbreviation) in force at an instant.
    public func period(atUTCMillis ms: Int64) -> Period {
        let s = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
        guard let first = transitions.first, s >= first else { return transitions.isEmpty ? (rule?.period(at: s) ?? initial) : initial }
        if s >= transitions[transitions.count - 1], let rule { return rule.period(at: s) }
        var lo = 0, hi = transitions.count - 1  // the last transition <= s
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if transitions[mid] <= s { lo = mid } else { hi = mid - 1 }
        }
        return periods[lo]
    }

    public func offsetSeconds(atUTCMillis ms: Int64) -> Int { period(atUTCMillis: ms).offset }

    /// The wall-clock time at an instant.
    public func local(atUTCMillis ms: Int64) -> CivilDateTime {
        CivilDateTime(asIfUTCMillis: ms + Int64(offsetSeconds(atUTCMillis: ms)) * 1000)
    }

    /// The instant of a wall-clock time: in a gap (spring forward) the time moves forward by the
    /// gap (02:30 on Mar 8 2026 in Denver is 03:30 MDT); in an overlap (fall back) it is the
    /// earlier instant (01:30 on Nov 1 2026 is 01:30 MDT).
    public func utcMillis(of local: CivilDateTime) -> Int64 {
        let l = local.asIfUTCMillis
        let before = offsetSeconds(atUTCMillis: l - 86_400_000)
        let after = offsetSeconds(atUTCMillis: l + 86_400_000)
        let candidates = Set([before, after, offsetSeconds(atUTCMillis: l)]).map { l - Int64($0) * 1000 }
        if let t = candidates.filter({ l == $0 + Int64(offsetSeconds(atUTCMillis: $0)) * 1000 }).min() { return t }
        return l - Int64(before) * 1000
    }

    /// The first instant of a local day (local midnight, or the first time after a gap at midnight).
    public func startOfDay(_ d: CivilDate) -> Int64 { utcMillis(of: CivilDateTime(date: d)) }

    /// The last millisecond of a local day (23 or 25 hours long on a change of offset).
    public func endOfDay(_ d: CivilDate) -> Int64 {
        startOfDay(CivilDate(daysSinceEpoch: d.daysSinceEpoch + 1)) - 1
    }

    /// The last millisecond of the local day `days` days after the one `ms` falls on (the end
    /// of an "upcoming" window).
    public func endOfDay(_ days: Int, after ms: Int64) -> Int64 {
        endOfDay(CivilDate(daysSinceEpoch: local(atUTCMillis: ms).date.daysSinceEpoch + Int64(days)))
    }
}

/// The POSIX TZ rule of a TZif footer, e.g. `MST7MDT,M3.2.0,M11.1.0` (only the `Mm.w.d` form of
/// the change dates, which every current zone uses; others fall back to standard time).
struct PosixRule: Sendable {
    var std: ZoneRules.Period
    var dst: ZoneRules.Period?
    /// (month, week 1–5 where 5 = last, weekday 0 = Sunday, seconds after local midnight).
    var start: (Int, Int, Int, Int)?
    var end: (Int, Int, Int, Int)?

    init?(_ text: String) {
        var s = Array(text.utf8)[...]
        func name() -> String? {
            if s.first == UInt8(ascii: "<") {
                guard let close = s.firstIndex(of: UInt8(ascii: ">")) else { return nil }
                let n = String(decoding: s[(s.startIndex + 1)..<close], as: UTF8.self)
                s = s[(close + 1)...]
                return n
            }
            let n = s.prefix { (65...90).contains($0) || (97...122).contains($0) }
            guard n.count >= 3 else { return nil }
            s = s.dropFirst(n.count)
            return String(decoding: n, as: UTF8.self)
        }
        func number() -> Int? {
            let d = s.prefix { (48...57).contains($0) }
            guard !d.isEmpty else { return nil }
            s = s.dropFirst(d.count)
            return Int(String(decoding: d, as: UTF8.self))
        }
        /// [+-]hh[:mm[:ss]] in seconds.
        func time() -> Int? {
            var sign = 1
            if s.first == UInt8(ascii: "-") { sign = -1; s = s.dropFirst() } else if s.first == UInt8(ascii: "+") { s = s.dropFirst() }
            guard let h = number() else { return nil }
            var t = h * 3600
            if s.first == UInt8(ascii: ":") { s = s.dropFirst(); t += (number() ?? 0) * 60 }
            if s.first == UInt8(ascii: ":") { s = s.dropFirst(); t += number() ?? 0 }
            return sign * t
        }
        func date() -> (Int, Int, Int, Int)? {
            guard s.first == UInt8(ascii: ","), s.dropFirst().first == UInt8(ascii: "M") else { return nil }
            s = s.dropFirst(2)
            guard let m = number(), s.popFirst() == UInt8(ascii: "."), let w = number(),
                s.popFirst() == UInt8(ascii: "."), let d = number() else { return nil }
            var at = 7200
            if s.first == UInt8(ascii: "/") { s = s.dropFirst(); at = time() ?? 7200 }
            return (m, w, d, at)
        }
        guard let stdName = name(), let stdOff = time() else { return nil }
        std = .init(offset: -stdOff, isDST: false, abbreviation: stdName)
        guard !s.isEmpty, let dstName = name() else { return }
        var dstOff = stdOff - 3600
        if let f = s.first, f != UInt8(ascii: ","), let t = time() { dstOff = t }
        dst = .init(offset: -dstOff, isDST: true, abbreviation: dstName)
        start = date()
        end = date()
        if start == nil || end == nil { dst = nil }
    }

    func period(at s: Int64) -> ZoneRules.Period {
        guard let dst, let start, let end else { return std }
        let year = CivilDateTime(asIfUTCMillis: (s + Int64(std.offset)) * 1000).date.year
        func instant(_ r: (Int, Int, Int, Int), offsetBefore: Int) -> Int64 {
            let first = CivilDate(year: year, month: r.0, day: 1)
            var day = 1 + (r.2 - first.weekday + 7) % 7 + (r.1 - 1) * 7
            while day > CivilDate.daysIn(month: r.0, year: year) { day -= 7 }
            return CivilDate(year: year, month: r.0, day: day).daysSinceEpoch * 86_400 + Int64(r.3 - offsetBefore)
        }
        let on = instant(start, offsetBefore: std.offset)
        let off = instant(end, offsetBefore: dst.offset)
        let inDST = on < off ? (s >= on && s < off) : !(s >= off && s < on)
        return inDST ? dst : std
    }
}

/// A time given on the command line.
public enum TimeInput: Sendable, Hashable {
    /// A date alone: the whole local day.
    case day(CivilDate)
    /// A wall-clock time without an offset: local time.
    case local(CivilDateTime)
    /// With "Z" or an offset: an instant (epoch milliseconds).
    case instant(Int64)

    /// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` (a space or `T`), optionally followed by
    /// `Z` or `±HH:MM` / `±HHMM` (at most 14 hours).
    public static func parse(_ text: String) throws -> TimeInput {
        let example = "for example 2026-12-01, 2026-12-01T18:30 (local time) or 2026-12-02T01:30:00Z"
        // Quoted cut short: an API parameter of 20,000 characters came back whole (review).
        let quoted = text.count <= 64 ? text : String(text.prefix(64)) + "…"
        let bad = LocalTimeError("'\(quoted)' is not a date or time (\(example))")
        let s = Array(text.utf8)
        var i = 0
        func num(_ n: Int) -> Int? {
            guard i + n <= s.count else { return nil }
            var v = 0
            for k in 0..<n {
                guard (48...57).contains(s[i + k]) else { return nil }
                v = v * 10 + Int(s[i + k] - 48)
            }
            i += n
            return v
        }
        func take(_ c: Character) -> Bool {
            guard i < s.count, s[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        guard let y = num(4), take("-"), let mo = num(2), take("-"), let d = num(2),
            (1...12).contains(mo), d >= 1, d <= CivilDate.daysIn(month: mo, year: y) else { throw bad }
        let date = CivilDate(year: y, month: mo, day: d)
        if i == s.count { return .day(date) }
        guard take("T") || take(" ") || take("t"), let h = num(2), take(":"), let mi = num(2) else { throw bad }
        var sec = 0, ms = 0
        if take(":") {
            guard let ss = num(2) else { throw bad }
            sec = ss
            if take(".") {
                var digits = 0
                while i < s.count, (48...57).contains(s[i]) {
                    if digits < 3 { ms = ms * 10 + Int(s[i] - 48) }
                    digits += 1
                    i += 1
                }
                guard digits > 0 else { throw bad }
                for _ in digits..<max(digits, 3) { ms *= 10 }
            }
        }
        guard h < 24, mi < 60, sec < 60 else { throw bad }
        let wall = CivilDateTime(date: date, hour: h, minute: mi, second: sec, millisecond: ms)
        if i == s.count { return .local(wall) }
        if take("Z") || take("z") {
            guard i == s.count else { throw bad }
            return .instant(wall.asIfUTCMillis)
        }
        let sign: Int
        if take("+") { sign = 1 } else if take("-") { sign = -1 } else { throw bad }
        let offsetText = String(decoding: s[(i - 1)...], as: UTF8.self)
        guard let oh = num(2) else { throw bad }
        _ = take(":")
        guard let om = num(2), i == s.count else { throw bad }
        guard om < 60, oh * 60 + om <= 14 * 60 else {
            throw LocalTimeError("'\(text)': the offset \(offsetText) is not a UTC offset (at most 14 hours from UTC)")
        }
        return .instant(wall.asIfUTCMillis - Int64(sign * (oh * 60 + om)) * 60_000)
    }

    /// The first instant this input names in `zone` (a day's local midnight).
    public func start(in zone: ZoneRules) -> Int64 {
        switch self {
        case .day(let d): return zone.startOfDay(d)
        case .local(let t): return zone.utcMillis(of: t)
        case .instant(let ms): return ms
        }
    }

    /// The last instant this input names as an inclusive upper bound (a day's last millisecond).
    public func end(in zone: ZoneRules) -> Int64 {
        if case .day(let d) = self { return zone.endOfDay(d) }
        return start(in: zone)
    }
}

/// Formatting of instants in a zone.
public enum LocalFormat {
    static func pad(_ v: Int, _ width: Int = 2) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    /// ISO 8601 with the offset: `2026-12-01T18:30:00-07:00` (`Z` never: the offset is the point).
    public static func iso(_ ms: Int64, _ zone: ZoneRules) -> String {
        let t = zone.local(atUTCMillis: ms)
        let off = zone.offsetSeconds(atUTCMillis: ms)
        let a = abs(off)
        var text = "\(pad(t.date.year, 4))-\(pad(t.date.month))-\(pad(t.date.day))T\(pad(t.hour)):\(pad(t.minute)):\(pad(t.second))"
        if t.millisecond != 0 { text += "." + pad(t.millisecond, 3) }
        return text + (off < 0 ? "-" : "+") + pad(a / 3600) + ":" + pad(a / 60 % 60)
    }

    /// For tables: `2026-12-01 18:30 MST`.
    public static func table(_ ms: Int64, _ zone: ZoneRules) -> String {
        let t = zone.local(atUTCMillis: ms)
        return "\(pad(t.date.year, 4))-\(pad(t.date.month))-\(pad(t.date.day)) \(pad(t.hour)):\(pad(t.minute)) "
            + zone.period(atUTCMillis: ms).abbreviation
    }
}
