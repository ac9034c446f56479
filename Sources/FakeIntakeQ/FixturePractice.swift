import Foundation
import IntakeQ

/// The bundled practice timeline (`Fixtures/practice`): one full state per day, plus the
/// counts a full sync must produce each day.
public struct FixturePractice: Sendable {
    /// `Fixtures/practice` (the directory loaded).
    public var directory: String
    /// `Fixtures/roster.json` (the directory's parent) when it exists.
    public var rosterPath: String?
    public var roster: [UInt8]
    public var days: [FixtureDay]
    /// From `expected.json`, one per day (empty when the file is missing).
    public var expected: [ExpectedDay]

    /// Loads `day-NN.json` files (sorted by day), `expected.json`, and `../roster.json`.
    public static func load(directory: String) throws -> FixturePractice {
        let fm = FileManager.default
        let names: [String]
        do {
            names = try fm.contentsOfDirectory(atPath: directory)
        } catch {
            throw IntakeQError(code: .decode, detail: "cannot read the fixture directory \(directory): \(error)")
        }
        var days: [FixtureDay] = []
        for name in names.sorted() where name.hasPrefix("day-") && name.hasSuffix(".json") {
            let path = (directory as NSString).appendingPathComponent(name)
            let bytes = try readBytes(path)
            do {
                let (day, now, state) = try PracticeState.decode(dayFile: bytes)
                guard let date = IntakeQDate.parse(now) else {
                    throw IntakeQError(code: .decode, detail: "bad \"now\" \(now)")
                }
                days.append(FixtureDay(day: day, now: now, nowDate: date, state: state, path: path))
            } catch let e as IntakeQError {
                var e = e
                e.endpoint = "fixture \(path)"
                throw e
            }
        }
        days.sort { $0.day < $1.day }
        let parent = (directory as NSString).deletingLastPathComponent
        let rosterPath = (parent as NSString).appendingPathComponent("roster.json")
        let hasRoster = fm.fileExists(atPath: rosterPath)
        let expectedPath = (directory as NSString).appendingPathComponent("expected.json")
        var expected: [ExpectedDay] = []
        if fm.fileExists(atPath: expectedPath) {
            struct File: Decodable { var days: [ExpectedDay] }
            expected = try JSONDecoder().decode(File.self, from: Data(readBytes(expectedPath))).days
        }
        return FixturePractice(directory: directory, rosterPath: hasRoster ? rosterPath : nil,
                               roster: hasRoster ? try readBytes(rosterPath) : [], days: days, expected: expected)
    }

    /// The day with this number (1-based).
    public func day(_ n: Int) -> FixtureDay? { days.first { $0.day == n } }

    static func readBytes(_ path: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw IntakeQError(code: .decode, detail: "cannot read \(path)")
        }
        return Array(d)
    }
}

/// One day of the timeline: the full practice state and that day's `now`.
public struct FixtureDay: Sendable {
    public var day: Int
    /// ISO 8601, e.g. `2026-11-20T10:00:00.000Z`.
    public var now: String
    public var nowDate: Date
    public var state: PracticeState
    public var path: String
}

/// What a full `automated_daily` sync of the whole roster must record on one day.
public struct ExpectedDay: Sendable, Decodable, Hashable {
    public struct Counts: Sendable, Decodable, Hashable {
        public var new: Int
        public var updated: Int
        public var unchanged: Int
        public var removed: Int
    }
    public struct IDs: Sendable, Decodable, Hashable {
        public var new: [String]
        public var updated: [String]
        public var unchanged: [String]
        public var removed: [String]
    }
    public var day: Int
    public var now: String
    public var counts: Counts
    public var ids: IDs
}
