import FakeIntakeQ
import Foundation
import GRDB
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Starts a fake IntakeQ serving `state` (expecting `fakeAPIKey`), runs `body`, stops it.
func withFakeState<T>(_ state: PracticeState, _ body: (FakeIntakeQServer, String) async throws -> T) async throws -> T {
    let server = FakeIntakeQServer(state: state, apiKey: fakeAPIKey)
    let url = try await server.start()
    do {
        let result = try await body(server, url)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

/// Issue 14: everyday use in the practice's local time (the fixture roster says America/Denver),
/// `upcoming`, `changes`, tables that fit, and the rough edges of a first week.
extension CLIBinaryTests {
    /// Trap name → appointment id, from Fixtures/practice/expected.json.
    static func traps() throws -> [String: String] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Repo.practice + "/expected.json"))
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return try #require(obj["traps"] as? [String: String])
    }

    static func rows(_ r: RunResult) -> [[String: Any]] {
        (parseJSON(r.stdout) as? [[String: Any]]) ?? []
    }

    static func ids(_ r: RunResult) -> Set<String> {
        Set(rows(r).compactMap { $0["appointment_id"] as? String })
    }

    @Test("dates are Denver days, offset-less times are Denver time, tables show MST/MDT, JSON adds start_local; Nov 1 fall-back")
    func localDaysAndEvenings() async throws {
        let practice = try Practice.load()
        let t = try Self.traps()
        let tmp = TempDir("local")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)

        // The Denver day Dec 1 holds the 6:30 pm appointment (01:30Z Dec 2), not the two of the
        // evening of Nov 30 (00:30Z and 02:00Z Dec 1).
        let dec1 = try await cli(["appointments", "--store", store, "--from", "2026-12-01", "--to", "2026-12-01", "--json"])
        expectSuccess(dec1)
        let dec1Ids = Self.ids(dec1)
        #expect(dec1Ids.contains(t["evening_dec1"]!))
        #expect(!dec1Ids.contains(t["evening_nov30_a"]!) && !dec1Ids.contains(t["evening_nov30_b"]!))
        let evening = try #require(Self.rows(dec1).first { $0["appointment_id"] as? String == t["evening_dec1"] })
        #expect(evening["start_at"] as? String == "2026-12-02T01:30:00.000Z")
        #expect(evening["start_local"] as? String == "2026-12-01T18:30:00-07:00")
        #expect((evening["end_local"] as? String)?.hasSuffix("-07:00") == true)
        for row in Self.rows(dec1) {
            let local = try #require(row["start_local"] as? String)
            #expect(local.hasPrefix("2026-12-01T"), "\(local) is not on the Denver day Dec 1")
        }

        // --timezone overrides the roster: the UTC day Dec 1 is the other way round.
        let utc = try await cli(["appointments", "--store", store, "--from", "2026-12-01", "--to", "2026-12-01", "--timezone", "UTC", "--json"])
        expectSuccess(utc)
        #expect(Self.ids(utc).contains(t["evening_nov30_a"]!) && Self.ids(utc).contains(t["evening_nov30_b"]!))
        #expect(!Self.ids(utc).contains(t["evening_dec1"]!))

        // A time without an offset is local time; with an offset it is that instant.
        let window = try await cli(["appointments", "--store", store, "--from", "2026-12-01T18:00", "--to", "2026-12-01T19:00", "--json"])
        #expect(Self.ids(window) == [t["evening_dec1"]!])
        let zulu = try await cli(["appointments", "--store", store, "--from", "2026-12-02T01:00Z", "--to", "2026-12-01T19:00-07:00", "--json"])
        #expect(Self.ids(zulu) == [t["evening_dec1"]!])

        // Tables: local time with the zone's abbreviation.
        let table = try await cli(["appointments", "--store", store, "--from", "2026-11-30", "--to", "2026-12-01", "--wide"])
        expectSuccess(table)
        #expect(table.stdout.contains("2026-12-01 18:30 MST"), "\(table.stdout)")
        #expect(table.stdout.contains("2026-11-30 17:30 MST") && table.stdout.contains("2026-11-30 19:00 MST"), "\(table.stdout)")

        // Nov 1 2026: 1:30 am happens twice (MDT, then MST); the local day is 25 hours long and
        // ends at 06:59:59.999Z on Nov 2.
        let nov1 = try await cli(["appointments", "--store", store, "--from", "2026-11-01", "--to", "2026-11-01", "--json"])
        expectSuccess(nov1)
        let nov1Ids = Self.ids(nov1)
        for name in ["dst_nov1_mdt", "dst_nov1_mst", "dst_nov1_late"] { #expect(nov1Ids.contains(t[name]!), "\(name) missing on Nov 1") }
        let local = Dictionary(uniqueKeysWithValues: Self.rows(nov1).map { ($0["appointment_id"] as! String, $0["start_local"] as? String ?? "") })
        #expect(local[t["dst_nov1_mdt"]!] == "2026-11-01T01:30:00-06:00")
        #expect(local[t["dst_nov1_mst"]!] == "2026-11-01T01:30:00-07:00")
        #expect(local[t["dst_nov1_late"]!] == "2026-11-01T23:30:00-07:00")
        let nov2 = try await cli(["appointments", "--store", store, "--from", "2026-11-02", "--to", "2026-11-02", "--json"])
        #expect(!Self.ids(nov2).contains(t["dst_nov1_late"]!))
        // The repeated 1:30 means the first one: from 01:30 (MDT) to 01:30-07:00 covers both.
        let twice = try await cli(["appointments", "--store", store, "--from", "2026-11-01T01:30", "--to", "2026-11-01T01:30-07:00", "--json"])
        #expect(Self.ids(twice) == [t["dst_nov1_mdt"]!, t["dst_nov1_mst"]!])
        let nov1Table = try await cli(["appointments", "--store", store, "--from", "2026-11-01", "--to", "2026-11-01", "--wide"])
        #expect(nov1Table.stdout.contains("2026-11-01 01:30 MDT") && nov1Table.stdout.contains("2026-11-01 01:30 MST"), "\(nov1Table.stdout)")

        // as-of and sync-logs speak local time too (recorded times are the real clock: just the zone).
        let logs = try await cli(["sync-logs", "--store", store])
        #expect(logs.stdout.contains(" MST") || logs.stdout.contains(" MDT"), "\(logs.stdout)")
        // And status: its runs' times in Denver time (they were UTC, an evening's nightly run read
        // as the next day's); --timezone names another zone; --json keeps UTC.
        let status = try await cli(["status", "--store", store, "--max-age", "100000"])
        let runLines = status.stdout.split(separator: "\n").filter { $0.hasPrefix("automated_daily") || $0.hasPrefix("manual") }
        #expect(!runLines.isEmpty && runLines.allSatisfy { ($0.contains(" MST") || $0.contains(" MDT")) && !$0.contains(".000Z") && !$0.contains("Z ") },
                "\(status.stdout)")
        let statusUTC = try await cli(["status", "--store", store, "--max-age", "100000", "--timezone", "UTC"])
        #expect(statusUTC.stdout.contains(" UTC"), "\(statusUTC.stdout)")
        let statusJSON = try await cli(["status", "--store", store, "--max-age", "100000", "--json"])
        #expect(statusJSON.stdout.contains("Z\""), "\(statusJSON.stdout.prefix(300))")
        expectCleanFailure(try await cli(["status", "--store", store, "--timezone", "Nope/Zone"]), mentioning: ["--timezone", "unknown time zone"])
        // A usage error (64) for every command that takes it, as for `status`.
        for command in ["status", "appointments", "upcoming", "meeting-urls", "locations"] {
            let r = try await cli([command, "--store", store, "--timezone", "Nope/Zone"])
            expectCleanFailure(r, mentioning: ["--timezone", "unknown time zone"])
            #expect(r.status == 64, "\(command): \(r.status)")
        }

        // history: the text shows every time in Denver time (recorded, LastModified, the moved
        // start); --json keeps the recorded UTC values; --timezone UTC shows UTC.
        let history = try await cli(["history", "--store", store, Self.rescheduledId])
        expectSuccess(history)
        let startLines = history.stdout.split(separator: "\n").filter { $0.contains("StartDate:") || $0.contains("view.start_at:") }
        #expect(!startLines.isEmpty, "no start change in \(history.stdout)")
        for line in startLines {
            #expect(line.contains(" MST") || line.contains(" MDT"), "not local: \(line)")
        }
        #expect(!history.stdout.contains(".000Z"), "UTC left in the text: \(history.stdout)")
        let historyJSON = try await cli(["history", "--store", store, Self.rescheduledId, "--json"])
        #expect(historyJSON.stdout.contains(".000Z"), "\(historyJSON.stdout.prefix(300))")
        let historyUTC = try await cli(["history", "--store", store, Self.rescheduledId, "--timezone", "UTC"])
        #expect(historyUTC.stdout.contains(" UTC"), "\(historyUTC.stdout)")
    }

    @Test("Mar 8 2026 in Denver: a 23-hour day; 2:30 am does not exist and means 3:30 am MDT")
    func springForward() async throws {
        let practice = try Practice.load()
        let day1 = try #require(practice.day(1))
        // Four appointments of roster patient 4101 around the change, built from a fixture one.
        let template = try #require(day1.state.appointments.first { raw in
            (try? JSONSerialization.jsonObject(with: Data(raw)) as? [String: Any])?["ClientId"] as? Int == 4101
        })
        func appointment(_ id: String, _ startISO: String) throws -> [UInt8] {
            var o = try #require(try JSONSerialization.jsonObject(with: Data(template)) as? [String: Any])
            let ms = Int64(try #require(ISO8601DateFormatter().date(from: startISO)).timeIntervalSince1970 * 1000)
            o["Id"] = id
            o["StartDate"] = ms
            o["EndDate"] = ms + 50 * 60_000
            o["Status"] = "Confirmed"
            return Array(try JSONSerialization.data(withJSONObject: o))
        }
        let cases = [
            ("dst000000000000000000001", "2026-03-08T06:30:00Z"),  // Mar 7 23:30 MST
            ("dst000000000000000000002", "2026-03-08T09:30:00Z"),  // Mar 8 03:30 MDT
            ("dst000000000000000000003", "2026-03-09T05:30:00Z"),  // Mar 8 23:30 MDT
            ("dst000000000000000000004", "2026-03-09T06:30:00Z"),  // Mar 9 00:30 MDT
        ]
        let state = PracticeState(settings: day1.state.settings, appointments: try cases.map { try appointment($0.0, $0.1) })
        let tmp = TempDir("spring")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await withFakeState(state) { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: "2026-03-05T05:00"), env: keyEnv)
            expectSuccess(r)
            #expect(r.stdout.hasPrefix("4 new"), "\(r.stdout)")
        }
        let mar8 = try await cli(["appointments", "--store", store, "--from", "2026-03-08", "--to", "2026-03-08", "--json"])
        expectSuccess(mar8)
        #expect(Self.ids(mar8) == ["dst000000000000000000002", "dst000000000000000000003"])
        let local = Dictionary(uniqueKeysWithValues: Self.rows(mar8).map { ($0["appointment_id"] as! String, $0["start_local"] as? String ?? "") })
        #expect(local["dst000000000000000000002"] == "2026-03-08T03:30:00-06:00")
        #expect(local["dst000000000000000000003"] == "2026-03-08T23:30:00-06:00")
        // 02:30 does not exist that night: it moves forward by the gap, to 03:30 MDT (09:30Z).
        let gap = try await cli(["appointments", "--store", store, "--from", "2026-03-08T02:30", "--to", "2026-03-08T02:30", "--json"])
        expectSuccess(gap)
        #expect(Self.ids(gap) == ["dst000000000000000000002"])
        let table = try await cli(["appointments", "--store", store, "--wide"])
        #expect(table.stdout.contains("2026-03-07 23:30 MST") && table.stdout.contains("2026-03-08 03:30 MDT"), "\(table.stdout)")
    }

    @Test("upcoming: from now in local days, patient names from the roster, cancelled and removed hidden unless --all")
    func upcoming() async throws {
        let practice = try Practice.load()
        let t = try Self.traps()
        let tmp = TempDir("upcoming")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2, 3, 4, 5])

        // Noon on Nov 30, rest of the day: the two evening appointments of First Step House.
        let today = try await cli(["upcoming", "--store", store, "--org", "fsh", "--now", "2026-11-30T12:00", "--days", "0", "--json"])
        expectSuccess(today)
        let rows = Self.rows(today)
        #expect(Self.ids(today).isSuperset(of: [t["evening_nov30_a"]!, t["evening_nov30_b"]!]))
        #expect(!Self.ids(today).contains(t["evening_dec1"]!))
        let a = try #require(rows.first { $0["appointment_id"] as? String == t["evening_nov30_a"] })
        #expect(a["patient_id"] as? String == "p-001")
        #expect(a["patient_name"] as? String == "Peyton Delacroix")
        #expect(a["organization_name"] as? String == "First Step House")
        #expect(a["start_local"] as? String == "2026-11-30T17:30:00-07:00")
        #expect((a["meeting_url"] as? String)?.hasPrefix("https://") == true)
        for r in rows { #expect(r["organization_id"] as? String == "fsh") }
        let tomorrow = try await cli(["upcoming", "--store", store, "--org", "fsh", "--now", "2026-11-30T12:00", "--days", "1", "--json"])
        #expect(Self.ids(tomorrow).contains(t["evening_dec1"]!))

        // A week from day 5: no cancelled or removed unless --all (cancel_d4 is fsh's? any org).
        let week = try await cli(["upcoming", "--store", store, "--now", "2026-11-24T03:00", "--days", "60", "--json"])
        let all = try await cli(["upcoming", "--store", store, "--now", "2026-11-24T03:00", "--days", "60", "--all", "--json"])
        expectSuccess(week)
        expectSuccess(all)
        for r in Self.rows(week) {
            #expect(r["status"] as? String != "cancelled" && r["removed"] as? Bool != true)
            let start = try #require(r["start_at"] as? String)
            #expect(start >= "2026-11-24T10:00:00.000Z")
        }
        #expect(Self.ids(all).contains(t["cancel_d4"]!) && !Self.ids(week).contains(t["cancel_d4"]!))
        #expect(Self.ids(all).count > Self.ids(week).count)

        // The table: names, local times, the link or the place with its address, within 100 columns.
        let table = try await cli(["upcoming", "--store", store, "--org", "fsh", "--now", "2026-11-30T12:00", "--days", "1"])
        expectSuccess(table)
        #expect(table.stdout.contains("Peyton") && table.stdout.contains("2026-11-30 17:30 MST"), "\(table.stdout)")
        let wideTable = try await cli(["upcoming", "--store", store, "--org", "fsh", "--now", "2026-11-30T12:00", "--days", "1", "--wide"])
        #expect(wideTable.stdout.contains("Peyton Delacroix"), "\(wideTable.stdout)")
        for line in table.stdoutLines { #expect(line.count <= 100, "\(line.count) columns: \(line)") }
        // Names go to the command's output only, never to stderr.
        #expect(!table.stderr.contains("Peyton"))
    }

    /// A patient whose name is wide characters (12 CJK ideographs, 24 terminal columns): the
    /// table's columns stay in line and its lines within 100 columns. Counted in characters, the
    /// name pushed every cell after it out of line and the line past the width (hostile test).
    @Test func wideCharactersKeepTheTableInLine() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("widechars")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        let name = "山田太郎山田太郎山田太郎"
        let roster = tmp.path + "/roster.json"
        let text = try String(contentsOfFile: Repo.roster, encoding: .utf8)
        #expect(text.contains("\"Peyton Delacroix\""))
        try text.replacingOccurrences(of: "\"Peyton Delacroix\"", with: "\"\(name)\"").write(toFile: roster, atomically: true, encoding: .utf8)
        let day = try #require(practice.day(1))
        try await withFakeServer(day) { _, url in
            let r = try await cli(["sync", "--store", store, "--roster", roster, "--base-url", url, "--now", day.now,
                                   "--requests-per-minute", "1000"], env: keyEnv)
            expectSuccess(r)
        }
        func columns(_ s: Substring) -> Int { s.reduce(0) { $0 + (($1.unicodeScalars.first?.value ?? 0) >= 0x4E00 && ($1.unicodeScalars.first?.value ?? 0) <= 0x9FFF ? 2 : 1) } }
        let table = try await cli(["upcoming", "--store", store, "--now", "2026-11-01T00:00", "--days", "120", "--all"])
        expectSuccess(table)
        #expect(table.stdout.contains("山田太郎山"), "\(table.stdout)")
        let lines = table.stdoutLines.dropFirst()  // the title
        let header = try #require(lines.first)
        let statusAt = columns(header[..<(try #require(header.range(of: "status"))).lowerBound])
        var checked = 0
        for line in lines.dropFirst(2).dropLast() {
            #expect(columns(Substring(line)) <= 100, "\(columns(Substring(line))) columns: \(line)")
            guard let m = line.range(of: #"  (confirmed|scheduled|cancelled|no_show|unknown|removed) "#, options: .regularExpression) else { continue }
            #expect(columns(line[..<m.lowerBound]) + 2 == statusAt, "out of line: \(line)")
            if line.contains("山田") { checked += 1 }
        }
        #expect(checked > 0, "\(table.stdout)")
    }

    /// An appointment removed, then observed again (day 1's export once more, after day 2 removed
    /// it): `history` shows the row coming back and `changes` says "restored". Both showed an
    /// `appointment.changed` with no change at all, "updated" with an empty detail (hostile test).
    @Test func aRemovedAppointmentObservedAgainIsRestored() async throws {
        let practice = try Practice.load()
        let deleted = try #require(try Self.traps()["delete_d2"])
        let tmp = TempDir("restored")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        let day2 = try #require(practice.day(2))
        try await withFakeServer(try #require(practice.day(1))) { _, url in
            expectSuccess(try await cli(syncArgs(store: store, baseURL: url, now: day2.now), env: keyEnv))
        }
        let history = try await cli(["history", "--store", store, deleted, "--json"])
        expectSuccess(history)
        let entries = (parseJSON(history.stdout) as? [[String: Any]]) ?? []
        let last = try #require(entries.last, "\(history.stdout)")
        let changes = (last["changes"] as? [[String: Any]]) ?? []
        #expect(changes.contains { $0["field"] as? String == "view.removed" && $0["from"] as? Bool == true && $0["to"] as? Bool == false },
                "\(last)")
        let runs = Self.rows(try await cli(["sync-logs", "--store", store, "--json"])).compactMap { $0["id"] as? String }
        let restored = try await cli(["changes", "--store", store, "--run", runs[0], "--json"])
        expectSuccess(restored)
        let kinds = Set(Self.rows(restored).filter { $0["appointment_id"] as? String == deleted }.compactMap { $0["change"] as? String })
        #expect(kinds == ["restored"], "\(restored.stdout)")
        let appointments = try await cli(["appointments", "--store", store, "--json"])
        #expect(Self.rows(appointments).contains { $0["appointment_id"] as? String == deleted && $0["removed"] as? Bool == false },
                "\(appointments.stdout.prefix(400))")
    }

    @Test("changes --run and --since: new, rescheduled from → to, cancelled, link added/changed, location changed, removed")
    func changes() async throws {
        let practice = try Practice.load()
        let t = try Self.traps()
        let tmp = TempDir("changes")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2, 3])
        let logs = try await cli(["sync-logs", "--store", store, "--json"])
        let runs = Self.rows(logs).compactMap { $0["id"] as? String }
        #expect(runs.count == 3)
        // Newest first: runs[1] is day 2's.
        let day2 = try await cli(["changes", "--store", store, "--run", runs[1], "--json"])
        expectSuccess(day2)
        // The start of a run id picks that run; `%` and `_` are text, not patterns.
        let byPrefix = try await cli(["changes", "--store", store, "--run", String(runs[1].prefix(8)), "--json"])
        expectSuccess(byPrefix)
        #expect(byPrefix.stdout == day2.stdout)
        // In capitals (a UUID as some tools show it), whole or its start: the same run.
        for given in [runs[1].uppercased(), String(runs[1].prefix(8)).uppercased()] {
            let upper = try await cli(["changes", "--store", store, "--run", given, "--json"])
            expectSuccess(upper)
            #expect(upper.stdout == day2.stdout, "\(given): \(upper.stderr)")
        }
        // The sync-logs table shows that start of each run's id, whole, at the default width.
        let runTable = try await cli(["sync-logs", "--store", store])
        let lines = runTable.stdoutLines
        #expect(lines.first?.contains("  run  ") == true, "\(runTable.stdout)")
        for (i, run) in runs.enumerated() {
            #expect(lines.count > i + 2 && lines[i + 2].contains("  \(run.prefix(8))  "), "\(run): \(runTable.stdout)")
        }
        for pattern in ["%", "_", String(runs[1].prefix(7)) + "%"] {
            expectCleanFailure(try await cli(["changes", "--store", store, "--run", pattern]), mentioning: ["no sync run"])
        }
        let kinds = Dictionary(grouping: Self.rows(day2), by: { $0["appointment_id"] as? String ?? "" })
            .mapValues { Set($0.compactMap { $0["change"] as? String }) }
        #expect(kinds[t["new_d2_a"]!] == ["new"])
        #expect(kinds[t["reschedule_d2"]!]?.contains("rescheduled") == true)
        #expect(kinds[t["cancel_d2"]!]?.contains("cancelled") == true)
        #expect(kinds[t["link_added_d2"]!]?.contains("link added") == true)
        #expect(kinds[t["delete_d2"]!] == ["removed"])
        #expect(kinds[t["new_d2_non_roster"]!] == nil)
        let moved = try #require(Self.rows(day2).first { $0["appointment_id"] as? String == t["reschedule_d2"] && $0["change"] as? String == "rescheduled" })
        let from = try #require(moved["from"] as? String)
        let to = try #require(moved["to"] as? String)
        #expect(from < to && moved["start_at"] as? String == to)
        #expect((moved["start_local"] as? String)?.hasSuffix("-07:00") == true)

        let day3 = try await cli(["changes", "--store", store, "--run", runs[0], "--json"])
        let kinds3 = Dictionary(grouping: Self.rows(day3), by: { $0["appointment_id"] as? String ?? "" })
            .mapValues { Set($0.compactMap { $0["change"] as? String }) }
        #expect(kinds3[t["link_changed_d3"]!]?.contains("link changed") == true)
        #expect(kinds3[t["location_change_d3"]!]?.contains("location changed") == true)
        #expect(kinds3[t["vanish_d3"]!] == ["removed"])
        #expect(kinds3[t["missed_d3"]!]?.contains("status changed") == true)
        #expect(kinds3[t["format_only_d3"]!] == nil)

        // --since a duration covers all three runs; --org narrows; a future time finds nothing.
        let recent = try await cli(["changes", "--store", store, "--since", "24h", "--json"])
        #expect(Self.ids(recent).isSuperset(of: Self.ids(day2).union(Self.ids(day3))))
        let fsh = try await cli(["changes", "--store", store, "--since", "7d", "--org", "fsh", "--json"])
        #expect(!Self.ids(fsh).isEmpty && Self.ids(fsh).isSubset(of: Self.ids(recent)) && Self.ids(fsh) != Self.ids(recent))
        let none = try await cli(["changes", "--store", store, "--since", "2099-01-01"])
        expectSuccess(none)
        #expect(none.stdout.hasPrefix("no changes"), "\(none.stdout)")
        let table = try await cli(["changes", "--store", store, "--run", runs[1]])
        expectSuccess(table)
        #expect(table.stdout.contains("rescheduled") && table.stdout.contains("→") && table.stdout.contains("MST"), "\(table.stdout)")
        for line in table.stdoutLines { #expect(line.count <= 100, "\(line.count) columns: \(line)") }
    }

    @Test("tables fit COLUMNS (100 when not a terminal), cut with …; --wide shows all; locations and meeting-urls")
    func tablesFit() async throws {
        let practice = try Practice.load()
        let t = try Self.traps()
        let tmp = TempDir("tables")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])

        for command in ["appointments", "meeting-urls", "locations", "sync-logs"] {
            let plain = try await cli([command, "--store", store])
            expectSuccess(plain)
            for line in plain.stdoutLines { #expect(line.count <= 100, "\(command): \(line.count) columns: \(line)") }
            let narrow = try await cli([command, "--store", store], env: ["COLUMNS": "72"])
            for line in narrow.stdoutLines { #expect(line.count <= 72, "\(command) COLUMNS=72: \(line.count) columns: \(line)") }
        }
        let narrow = try await cli(["appointments", "--store", store], env: ["COLUMNS": "72"])
        #expect(narrow.stdout.contains("…"))
        // The cut cells (ids among them, which `history` needs whole) are said, with the way out.
        #expect(narrow.stdoutLines.last?.hasSuffix(" rows; cells cut to fit: --wide shows them whole)") == true, "\(narrow.stdoutLines.last ?? "")")
        let wide = try await cli(["appointments", "--store", store, "--wide"], env: ["COLUMNS": "72"])
        #expect(wide.stdoutLines.contains { $0.count > 100 } && !wide.stdout.contains("…"))
        #expect(wide.stdoutLines.last?.hasSuffix(" rows)") == true, "\(wide.stdoutLines.last ?? "")")
        // A table that fits says nothing of cutting.
        let roomy = try await cli(["sync-logs", "--store", store], env: ["COLUMNS": "400"])
        #expect(roomy.stdoutLines.last?.hasSuffix(" rows)") == true && !roomy.stdout.contains("…"), "\(roomy.stdout)")

        // The kind of a change is never cut to "re…" (rescheduled, removed or restored?) to keep
        // a long detail, and the cut detail is said (hostile test).
        let changesJSON = try await cli(["changes", "--store", store, "--since", "2000-01-01", "--json"])
        let kinds = Set(Self.rows(changesJSON).compactMap { $0["change"] as? String })
        #expect(kinds.contains("rescheduled") && kinds.contains { $0.hasPrefix("link") }, "\(kinds)")
        let changesTable = try await cli(["changes", "--store", store, "--since", "2000-01-01"])
        expectSuccess(changesTable)
        for kind in kinds { #expect(changesTable.stdout.contains("  \(kind)  ") || changesTable.stdout.contains("  \(kind)\n"), "\(kind) cut: \(changesTable.stdout)") }
        if changesTable.stdout.contains("…") {
            #expect(changesTable.stdoutLines.last?.hasSuffix("; cells cut to fit: --wide shows them whole)") == true, "\(changesTable.stdoutLines.last ?? "")")
        }
        // A number is never cut ("44…" of 4470 reads as another number), however narrow.
        try await DatabaseQueue(path: store + "/projections.sqlite").write { db in
            try db.execute(sql: "UPDATE sync_logs SET duration_ms = 1234567")
        }
        let narrowRuns = try await cli(["sync-logs", "--store", store], env: ["COLUMNS": "40"])
        expectSuccess(narrowRuns)
        let runLines = narrowRuns.stdoutLines.dropFirst(2).dropLast()
        #expect(!runLines.isEmpty && runLines.allSatisfy { $0.contains("1234567") }, "\(narrowRuns.stdout)")
        // Nor a time: a zone without a name shows its offset, "+13…" of +1345 read as another
        // one (hostile test, Pacific/Chatham).
        for zone in ["Pacific/Chatham", "Asia/Kathmandu"] {
            let times = try await cli(["appointments", "--store", store, "--timezone", zone], env: ["COLUMNS": "72"])
            expectSuccess(times)
            let rows = times.stdoutLines.dropFirst(2).dropLast()
            #expect(!rows.isEmpty && rows.allSatisfy { $0.firstMatch(of: #/^\d{4}-\d\d-\d\d \d\d:\d\d \+\d{4}  /#) != nil }, "\(zone): \(times.stdout)")
        }

        // locations: the whole address at the default width.
        let locations = try await cli(["locations", "--store", store])
        #expect(locations.stdout.contains("120 Main Street, Suite 4, Salt Lake City, UT 84101"), "\(locations.stdout)")
        // meeting-urls: local time, patient, status; cancelled and removed hidden unless --all.
        let links = try await cli(["meeting-urls", "--store", store, "--json"])
        let allLinks = try await cli(["meeting-urls", "--store", store, "--all", "--json"])
        #expect(!Self.ids(links).contains(t["cancel_d2b"]!) && Self.ids(allLinks).contains(t["cancel_d2b"]!))
        let row = try #require(Self.rows(links).first)
        #expect(row["start_local"] is String && row["status"] is String && row["patient_id"] is String)
        let linkTable = try await cli(["meeting-urls", "--store", store])
        #expect(linkTable.stdoutLines.first?.contains("patient") == true && linkTable.stdout.contains("MST"), "\(linkTable.stdout)")
    }

    @Test("a stale roster email: the per-patient refresh warns and falls back to the window crawl by ClientId")
    func staleEmail() async throws {
        let practice = try Practice.load()
        let day1 = try #require(practice.day(1))
        let tmp = TempDir("stale")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)
        // p-001 (client 4101) books a new appointment; the roster has their email with .com.
        let template = try #require(day1.state.appointments.first { raw in
            (try? JSONSerialization.jsonObject(with: Data(raw)) as? [String: Any])?["ClientId"] as? Int == 4101
        })
        var o = try #require(try JSONSerialization.jsonObject(with: Data(template)) as? [String: Any])
        o["Id"] = "stale00000000000000000001"
        o["StartDate"] = ((o["StartDate"] as? NSNumber)?.int64Value ?? 0) + 86_400_000
        var state = day1.state
        state.appointments.append(Array(try JSONSerialization.data(withJSONObject: o)))
        let rosterText = try String(contentsOfFile: Repo.roster, encoding: .utf8)
        #expect(rosterText.contains("peyton.delacroix@example.org"))
        let stale = tmp.path + "/roster.json"
        try rosterText.replacingOccurrences(of: "peyton.delacroix@example.org", with: "peyton.delacroix@example.com")
            .write(toFile: stale, atomically: true, encoding: .utf8)
        try await withFakeState(state) { server, url in
            let args = syncArgs(store: store, baseURL: url, now: day1.now, extra: ["--patient", "p-001"]).map { $0 == Repo.roster ? stale : $0 }
            let r = try await cli(args, env: keyEnv)
            expectSuccess(r)
            #expect(r.stdout.hasPrefix("1 new"), "\(r.stdout)")
            #expect(r.stderr.contains("p-001") && r.stderr.contains("may be stale") && r.stderr.contains("ClientId"), "\(r.stderr)")
            #expect(!r.stderr.contains("peyton") && !r.stderr.contains("Peyton"), "an email or name in the warning: \(r.stderr)")
            // It asked client= first, then crawled the window.
            let queries = server.requests().filter { $0.path == "/appointments" }.map(\.query)
            #expect(queries.contains { $0["client"] == "peyton.delacroix@example.com" })
            #expect(queries.contains { $0["client"] == nil && $0["deletedOnly"] == nil })
        }
        let appointments = try await cli(["appointments", "--store", store, "--patient", "p-001", "--json"])
        #expect(Self.ids(appointments).contains("stale00000000000000000001"))
    }

    @Test("sync --json, INTAKEQ_API_KEY_FILE, the page cap, verify --json's segments on failure")
    func syncJSONKeyFileAndPageCap() async throws {
        let practice = try Practice.load()
        let day1 = try #require(practice.day(1))
        let tmp = TempDir("keyfile")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        let keyFile = tmp.path + "/intakeq.key"
        try (fakeAPIKey + "\n").write(toFile: keyFile, atomically: true, encoding: .utf8)
        try await withFakeServer(day1) { _, url in
            // The key from a file, the summary as one JSON object.
            let r = try await cli(syncArgs(store: store, baseURL: url, now: day1.now, extra: ["--json"]),
                                  env: ["INTAKEQ_API_KEY_FILE": keyFile])
            expectSuccess(r)
            let o = try #require(parseJSON(r.stdout) as? [String: Any], "\(r.stdout)")
            #expect(r.stdoutLines.count == 1)
            #expect(o["status"] as? String == "completed" && o["new"] as? Int == 173 && o["sync_type"] as? String == "automated_daily")
            #expect((o["head"] as? String)?.hasPrefix("177:") == true && o["run_id"] is String)
            // A missing or empty key file: one line naming the variable, never the key.
            for (name, contents) in [("missing.key", nil), ("empty.key", "\n")] as [(String, String?)] {
                let path = tmp.path + "/" + name
                if let contents { try contents.write(toFile: path, atomically: true, encoding: .utf8) }
                let bad = try await cli(syncArgs(store: store, baseURL: url, now: day1.now), env: ["INTAKEQ_API_KEY_FILE": path])
                expectCleanFailure(bad, mentioning: ["INTAKEQ_API_KEY_FILE", path])
            }
            // A key with a control character in it: one line saying where, never the key, and
            // no run recorded (it failed the first request with an error that printed the key,
            // and the failure went into the log: hostile test). Surrounding white space, as a
            // file with Windows line ends leaves it, is not part of the key.
            func logBytes() throws -> Int {
                try segments(store).reduce(0) { $0 + ((try FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
            }
            let before = try logBytes()
            for env in [["INTAKEQ_API_KEY": "REALSECRET42\u{01}x"], ["INTAKEQ_API_KEY": "REAL SECRET42"]] as [[String: String?]] {
                let bad = try await cli(syncArgs(store: store, baseURL: url, now: day1.now), env: env)
                expectCleanFailure(bad, mentioning: ["INTAKEQ_API_KEY", "character", "not printed"])
                #expect(!bad.stderr.contains("SECRET42") && !bad.stdout.contains("SECRET42"), "\(bad.stderr)")
                for args in [["serve", "--store", store, "--roster", Repo.roster, "--listen", "127.0.0.1:0", "--base-url", url]] {
                    let serve = try await cli(args, env: env)
                    expectCleanFailure(serve, mentioning: ["INTAKEQ_API_KEY", "character"])
                    #expect(!serve.stderr.contains("SECRET42"), "\(serve.stderr)")
                }
            }
            #expect(try logBytes() == before, "a run was recorded")
            let crlf = try await cli(syncArgs(store: store, baseURL: url, now: day1.now), env: ["INTAKEQ_API_KEY": fakeAPIKey + "\r"])
            expectSuccess(crlf)
            // The page cap reached: a warning and partial_success (exit 2), nothing removed.
            let capped = try await cli(syncArgs(store: store, baseURL: url, now: day1.now, extra: ["--page-cap", "1", "--json"]), env: keyEnv)
            #expect(capped.status == 2, "\(capped.stderr)")
            let c = try #require(parseJSON(capped.stdout) as? [String: Any], "\(capped.stdout)")
            #expect(c["status"] as? String == "partial_success" && c["removed"] as? Int == 0)
            #expect(capped.stderr.contains("page cap"), "\(capped.stderr)")
        }
        // verify --json on a damaged log counts the log's segments, not those verified so far.
        let segs = try FileManager.default.contentsOfDirectory(atPath: store + "/log").filter { $0.hasSuffix(".seg") }.sorted()
        let seg = store + "/log/" + segs[0]
        var bytes = try Data(contentsOf: URL(fileURLWithPath: seg))
        bytes[200] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: seg))
        let v = try await cli(["verify", "--store", store, "--json"])
        #expect(v.status == 1)
        let report = try #require(parseJSON(v.stdout) as? [String: Any], "\(v.stdout)")
        #expect(report["ok"] as? Bool == false && report["segments"] as? Int == segs.count, "\(v.stdout)")
    }

    @Test("export --out writes through a temporary file and refuses an existing one without --force")
    func exportOut() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("exportout")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice)
        let out = tmp.path + "/events.jsonl"
        let first = try await cli(["export", "--store", store, "--out", out])
        expectSuccess(first)
        let written = try String(contentsOfFile: out, encoding: .utf8)
        #expect(written.split(separator: "\n").count == 177)
        try "keep me\n".write(toFile: out, atomically: true, encoding: .utf8)
        let again = try await cli(["export", "--store", store, "--out", out, "--format", "csv"])
        expectCleanFailure(again, mentioning: ["already exists", "--force"])
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "keep me\n")
        let forced = try await cli(["export", "--store", store, "--out", out, "--format", "csv", "--force"])
        expectSuccess(forced)
        #expect(try String(contentsOfFile: out, encoding: .utf8).hasPrefix("seq,"))
        // No temporary file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path).filter { $0.contains("partial") }.isEmpty)

        // A symlink: its target is replaced (with --force), the link kept.
        let link = tmp.path + "/link.jsonl"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: out)
        expectCleanFailure(try await cli(["export", "--store", store, "--out", link]), mentioning: ["already exists"])
        expectSuccess(try await cli(["export", "--store", store, "--out", link, "--force", "--to-seq", "1"]))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == out)
        #expect(try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").count == 1)
        // A device or a pipe is written through, not replaced by a file: /dev/stdout here (the
        // test's pipe), and a FIFO with a reader at the other end.
        let piped = try await cli(["export", "--store", store, "--out", "/dev/stdout", "--to-seq", "2"])
        expectSuccess(piped)
        #expect(piped.stdout.split(separator: "\n").count == 2 && piped.stderr.contains("exported 2 events to /dev/stdout"), "\(piped.stderr)")
        let fifo = tmp.path + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        let reader = Task.detached { () -> String in
            // Opening blocks until the export opens the other end; read until it closes it.
            let fd = open(fifo, O_RDONLY)
            guard fd >= 0 else { return "" }
            defer { close(fd) }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { break }
                bytes += chunk[..<n]
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        let toFIFO = try await cli(["export", "--store", store, "--out", fifo, "--to-seq", "3"])
        // Had the export not opened the FIFO, the reader would wait for a writer forever: one
        // that writes nothing lets it end (and the count below fail).
        let unblock = open(fifo, O_WRONLY | O_NONBLOCK)
        if unblock >= 0 { close(unblock) }
        expectSuccess(toFIFO)
        #expect(await reader.value.split(separator: "\n").count == 3)
        var st = stat()
        #expect(lstat(fifo, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO)
        let one = try await cli(["export", "--store", store, "--out", tmp.path + "/one.jsonl", "--to-seq", "1"])
        #expect(one.stderr.contains("exported 1 event to"), "\(one.stderr)")
        // A --to-seq past the head exports what there is, and says so.
        let past = try await cli(["export", "--store", store, "--out", tmp.path + "/past.jsonl", "--to-seq", "999999"])
        expectSuccess(past)
        #expect(past.stderr.contains("note: --to-seq 999999 is past the log's end (seq 177): exported through seq 177"), "\(past.stderr)")
        #expect(try String(contentsOfFile: tmp.path + "/past.jsonl", encoding: .utf8).split(separator: "\n").count == 177)
        // /dev/stdout redirected to a file (`>>`): appended to through the descriptor, the file
        // neither replaced nor truncated.
        let appended = tmp.path + "/appended.txt"
        #expect(FileManager.default.createFile(atPath: appended, contents: Data("a\nb\n".utf8)))
        let shell = try await ProcessRunner.run(
            "/bin/sh", ["-c", "exec \"$0\" \"$@\" >> \"$APPENDED_FILE\"", try Repo.requireBinary(), "export", "--store", store,
                        "--out", "/dev/stdout", "--to-seq", "2"],
            overrides: ["APPENDED_FILE": appended], cwd: tmp.path, timeout: 60)
        #expect(shell.status == 0, "\(shell.stderrText)")
        let appendedLines = try String(contentsOfFile: appended, encoding: .utf8).split(separator: "\n")
        #expect(appendedLines.count == 4 && appendedLines.prefix(2) == ["a", "b"], "\(appendedLines.count) lines")
        // A symlink that leads nowhere (a missing target, a loop) is not replaced by a file.
        let dangling = tmp.path + "/dangling.jsonl", loopA = tmp.path + "/loop-a", loopB = tmp.path + "/loop-b"
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: tmp.path + "/missing.jsonl")
        try FileManager.default.createSymbolicLink(atPath: loopA, withDestinationPath: loopB)
        try FileManager.default.createSymbolicLink(atPath: loopB, withDestinationPath: loopA)
        for link in [dangling, loopA] {
            expectCleanFailure(try await cli(["export", "--store", store, "--out", link, "--to-seq", "1", "--force"]),
                               mentioning: ["symbolic link that leads to no file"])
            #expect(lstat(link, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK)
        }
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/missing.jsonl"))

        // The store's own files are never a target, --force or not, named directly, through
        // `..` or through a link; nor are the key store and an external master key file: a
        // segment replaced by the export lost the log, and the command said it had exported
        // (hostile test). Nothing in the store changes.
        let segment = try #require(try FileManager.default.contentsOfDirectory(atPath: store + "/log").first { $0.hasSuffix(".seg") })
        let masterKey = tmp.path + "/elsewhere.key"
        try Data("not a key, never read by export\n".utf8).write(to: URL(fileURLWithPath: masterKey))
        let intoStore = tmp.path + "/into-store"
        try FileManager.default.createSymbolicLink(atPath: intoStore, withDestinationPath: store + "/state")
        let before = snapshot(tmp.path)
        for (target, place) in [(store + "/log/" + segment, "the store"), (store + "/projections.sqlite", "the store"),
                                (store + "/state/head", "the store"), (store + "/new-file.jsonl", "the store"),
                                (tmp.path + "/store/../store/STORE", "the store"), (intoStore + "/head", "the store"),
                                (store + "/keys/master.key", "the key store"), (masterKey, "the master key file")] {
            let r = try await cli(["export", "--store", store, "--out", target, "--force", "--format", "csv"],
                                  env: ["SYNCLEDGER_MASTER_KEY_FILE": masterKey])
            expectCleanFailure(r, mentioning: ["--out " + target, "would write into " + place])
        }
        let bundled = try await cli(["export", "--store", store, "--bundle", store + "/audit"])
        expectCleanFailure(bundled, mentioning: ["--bundle", "would write into the store"])
        // A `..` after a directory that does not exist: making it, then going up from it, would
        // walk into the store, straight or through a link (review, hostile test).
        let linkToStore = tmp.path + "/link-to-store"
        try FileManager.default.createSymbolicLink(atPath: linkToStore, withDestinationPath: store)
        for bundle in [tmp.path + "/missing/../store/audit", tmp.path + "/missing/../store/log/00000000000000099999.seg",
                       "missing/../link-to-store/audit", tmp.path + "/missing/../link-to-store/keys/forgotten"] {
            let r = try await cli(["export", "--store", store, "--bundle", bundle], cwd: tmp.path)
            expectCleanFailure(r, mentioning: ["--bundle", "goes up (`..`) from a directory that does not exist"])
        }
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/missing"))
        unlink(linkToStore)
        expectSameSnapshot(before, snapshot(tmp.path), "export into the store")
        // The store's log mounted a second time elsewhere (a bind mount, in a mount namespace of
        // this command's own): the same directory by device and inode.
        let bound = tmp.path + "/bound"
        try FileManager.default.createDirectory(atPath: bound, withIntermediateDirectories: false)
        let mounted = try await ProcessRunner.run(
            "/usr/bin/unshare", ["-m", "/bin/sh", "-c", "mount --bind \"$0/log\" \"$1\" && exec \"$2\" export --store \"$0\" --out \"$1/$3\" --force",
                                 store, bound, try Repo.requireBinary(), segment],
            overrides: [:], cwd: tmp.path, timeout: 60)
        #expect(mounted.status == 1 && mounted.stderrText.contains("would write into the store"), "\(mounted.status): \(mounted.stderrText)")
        expectSameSnapshot(before, snapshot(tmp.path), "export through a bind mount of the log")
        expectSuccess(try await cli(["verify", "--store", store]))
        // The views file as a link to another disk: its target (and the side files SQLite keeps
        // beside it) are the store's too.
        let views = tmp.path + "/views.sqlite"
        for side in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: store + "/projections.sqlite" + side) {
            try FileManager.default.moveItem(atPath: store + "/projections.sqlite" + side, toPath: views + side)
        }
        try FileManager.default.createSymbolicLink(atPath: store + "/projections.sqlite", withDestinationPath: views)
        for target in [views, views + "-wal"] {
            expectCleanFailure(try await cli(["export", "--store", store, "--out", target, "--force", "--format", "csv"]),
                               mentioning: ["would write into the store"])
        }
        let viewsAfter = try await cli(["appointments", "--store", store, "--json"])
        expectSuccess(viewsAfter)
    }

    @Test("export --bundle --from-seq/--to-seq holds only that range, and the verifier proves it against the head")
    func rangeBundle() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("rangebundle")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2, 3])
        let verify = try await cli(["verify", "--store", store, "--json"])
        let head = try #require((parseJSON(verify.stdout) as? [String: Any])?["head"] as? String)
        let bundle = tmp.path + "/bundle"
        let r = try await cli(["export", "--store", store, "--bundle", bundle, "--from-seq", "100", "--to-seq", "150"])
        expectSuccess(r)
        #expect(r.stdout.contains("proven against head \(head)"), "\(r.stdout)")
        let manifest = try #require(parseJSON(try String(contentsOfFile: bundle + "/MANIFEST.json", encoding: .utf8)) as? [String: Any])
        #expect(manifest["version"] as? Int == 2)
        let first = try #require(manifest["range_first_seq"] as? Int)
        let last = try #require(manifest["range_last_seq"] as? Int)
        #expect(first <= 100 && first > 1 && last >= 150 && last < Int(head.split(separator: ":")[0])!, "\(first)...\(last)")
        #expect(!((manifest["proof"] as? [Any]) ?? []).isEmpty)
        let py = ["/usr/bin/python3", "/usr/local/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/bin/python3"
        // The verifier can be run as it is (its mode set on the file before it was renamed into place).
        let verifierMode = try FileManager.default.attributesOfItem(atPath: bundle + "/verify_bundle.py")[.posixPermissions] as? Int
        #expect(verifierMode == 0o700, "\(String(verifierMode ?? -1, radix: 8))")
        let ok = try await Launched([], executable: py, arguments: [bundle + "/verify_bundle.py", bundle, "--expect-head", head]).wait()
        #expect(ok.status == 0 && ok.stdout.contains("seqs \(first)...\(last)"), "\(ok.stdout + ok.stderr)")
        // A head the store never had fails.
        let wrong = head.prefix(while: { $0 != ":" }) + ":" + String(repeating: "0", count: 64)
        let bad = try await Launched([], executable: py, arguments: [bundle + "/verify_bundle.py", bundle, "--expect-head", String(wrong)]).wait()
        #expect(bad.status == 1, "\(bad.stdout + bad.stderr)")
        // Only the range's events are in it.
        let events = try await Launched([], executable: "/bin/sh", arguments: ["-c", "cat \"$0\"/segments/*.seg | lz4 -dc | wc -l", bundle]).wait()
        #expect(Int(events.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == last - first + 1, "\(events.stdout + events.stderr)")
    }

    @Test("fake-intakeq takes its faults on the command line: --html-page, --truncate-page, --fail-rate, --429-every, --delay-ms")
    func fakeFaultOptions() async throws {
        let fake = (try Repo.requireBinary() as NSString).deletingLastPathComponent + "/fake-intakeq"
        try #require(FileManager.default.isExecutableFile(atPath: fake), "build fake-intakeq first (swift build)")
        let practice = try Practice.load()
        let now = try #require(practice.day(1)).now
        func withFake(_ extra: [String], _ body: (String, String) async throws -> Void) async throws {
            let p = try ProcessRunner.start(fake, ["--fixtures", Repo.root + "/Fixtures", "--day", "1", "--port", "0",
                                                   "--api-key", fakeAPIKey] + extra)
            defer {
                p.kill(SIGTERM)
                _ = p.waitBlocking()
            }
            var banner = ""
            let deadline = Date().addingTimeInterval(60)
            while !banner.contains("Ctrl-C"), p.isRunning, Date() < deadline {
                try await Task.sleep(nanoseconds: 20_000_000)
                banner = p.stdoutSoFar
            }
            banner = p.stdoutSoFar
            let url = try #require(banner.range(of: #"http://127\.0\.0\.1:[0-9]+/api/v1"#, options: .regularExpression).map { String(banner[$0]) },
                                   "no URL in the banner: \(banner)")
            try await body(url, banner)
        }
        let tmp = TempDir("fakefaults")
        defer { tmp.remove() }
        var n = 0
        func sync(_ url: String) async throws -> RunResult {
            n += 1
            return try await cli(syncArgs(store: tmp.path + "/store-\(n)", baseURL: url, now: now, extra: ["--max-retries", "1", "--json"]), env: keyEnv)
        }
        try await withFake(["--html-page", "2"]) { url, banner in
            #expect(banner.contains("HTML on page 2"), "\(banner)")
            let r = try await sync(url)
            #expect(r.status == 2 && r.stdout.contains("\"status\":\"partial_success\""), "\(r.stdout)\(r.stderr)")
        }
        try await withFake(["--truncate-page", "1"]) { url, _ in
            let r = try await sync(url)
            #expect(r.status == 2, "\(r.stdout)\(r.stderr)")
        }
        try await withFake(["--fail-rate", "1", "--seed", "7"]) { url, banner in
            #expect(banner.contains("seed 7"), "\(banner)")
            let r = try await sync(url)
            #expect(r.status == 1 && r.stdout.contains("\"status\":\"failed\""), "\(r.stdout)\(r.stderr)")
        }
        try await withFake(["--429-every", "3", "--delay-ms", "20"]) { url, banner in
            #expect(banner.contains("429 every 3") && banner.contains("delay 20 ms"), "\(banner)")
            let r = try await sync(url)
            expectSuccess(r)
            #expect(r.stdout.contains("\"new\":173"), "\(r.stdout)")
            let logs = try await cli(["sync-logs", "--store", tmp.path + "/store-\(n)", "--json"])
            let meta = try #require(Self.rows(logs).first?["metadata"] as? [String: Any])
            #expect((meta["retries"] as? Int ?? 0) > 0, "\(meta)")
        }
        let bad = try await Launched([], executable: fake, arguments: ["--fail-rate", "2"]).wait()
        #expect(bad.status != 0 && bad.stderr.contains("--fail-rate"), "\(bad.stderr)")
    }

    @Test("the demo prints upcoming and changes in local time, and every table it prints fits 100 columns")
    func demoFits() async throws {
        let tmp = TempDir("demo")
        defer { tmp.remove() }
        let r = try await cli(["demo", "--store", tmp.path + "/store"], env: ["COLUMNS": "200"], timeout: 300)
        expectSuccess(r)
        #expect(r.stdout.contains("upcoming for First Step House") && r.stdout.contains("changes since the previous day"), "\(r.stdout)")
        #expect(r.stdout.contains(" MST"), "\(r.stdout)")
        // A table is a header line, a rule of dashes, and rows until a blank or "(N rows)" line.
        let lines = r.stdout.components(separatedBy: "\n")
        var tables = 0
        for (i, line) in lines.enumerated() where i > 0 && !line.isEmpty && line.allSatisfy({ $0 == "-" || $0 == " " }) && line.contains("--") {
            tables += 1
            var j = i - 1
            while j < lines.count, !lines[j].isEmpty, !lines[j].hasPrefix("(") {
                #expect(lines[j].count <= 100, "\(lines[j].count) columns: \(lines[j])")
                j += 1
            }
        }
        #expect(tables >= 4, "found \(tables) tables in:\n\(r.stdout)")
    }
}
