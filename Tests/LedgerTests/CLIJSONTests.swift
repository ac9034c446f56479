import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

/// The built `syncledger` binary (`swift build --product syncledger`, or any `swift build`).
let syncledgerBinary: String = Paths.product("syncledger") ?? Paths.root + "/.build/debug/syncledger"

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

func runSyncledger(_ arguments: [String]) throws -> RunResult {
    let r = try ProcessRunner.runBlocking(syncledgerBinary, arguments,
                                          overrides: ["SYNCLEDGER_STORE": nil, "INTAKEQ_API_KEY": nil])
    return RunResult(status: r.status, stdout: r.stdoutText, stderr: r.stderrText)
}

nonisolated(unsafe) let isoMillis = try! Regex(#"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"#)

@Suite(.serialized) struct CLIJSONTests {
    static var binaryExists: Bool { FileManager.default.isExecutableFile(atPath: syncledgerBinary) }

    /// Runs one read command with `--json` and returns the parsed array, checking the common contract.
    func jsonRows(_ args: [String], columns: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> ([[String: Any]], String) {
        let r = try runSyncledger(args)
        #expect(r.status == 0, "\(args): exit \(r.status), stderr: \(r.stderr)", sourceLocation: sourceLocation)
        let parsed = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
        let rows = try #require(parsed as? [[String: Any]], "\(args) did not print a JSON array of objects: \(r.stdout.prefix(200))",
                                sourceLocation: sourceLocation)
        for row in rows {
            #expect(Set(row.keys) == Set(columns), "\(args): keys \(row.keys.sorted())", sourceLocation: sourceLocation)
        }
        return (rows, r.stdout)
    }

    @Test(.enabled(if: CLIJSONTests.binaryExists, "build .build/debug/syncledger first (swift build --product syncledger)"))
    func readCommandsPrintTheViewsAsJSON() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let dir = tmp.store.path

        // appointments — the store option before the subcommand, as DESIGN.md writes it.
        // Issue 14: beside the view's columns, start_local/end_local (the roster's zone, here UTC).
        let local = ["start_local", "end_local"]
        let (appts, apptsText) = try jsonRows(["--store", dir, "appointments", "--json"], columns: AppointmentsProjection.columns + local)
        #expect(appts.count == 7)
        // `removed` is a JSON boolean (checked on the text: Foundation maps booleans to NSNumber).
        let bools = apptsText.matches(of: try Regex(#""removed":(true|false)"#)).count
        #expect(bools == appts.count, "removed is not printed as true/false: \(apptsText.prefix(300))")
        #expect(!apptsText.contains("\"removed\":0") && !apptsText.contains("\"removed\":1"))
        for row in appts {
            for c in ["start_at", "end_at", "first_seen_at", "last_changed_at", "last_synced_at"] {
                let v = try #require(row[c] as? String, "\(c) is not a string")
                #expect(v.wholeMatch(of: isoMillis) != nil, "\(c) = \(v)")
            }
        }
        let starts = appts.compactMap { $0["start_at"] as? String }
        #expect(starts == starts.sorted())
        #expect(appts.compactMap { $0["appointment_id"] as? String } == ["a6", "a3", "a1", "a2", "a4", "a5", "a7"])

        // The same rows as the library's view (which the command caught up first).
        let views = try ProjectionStore(store: tmp.store)
        #expect(try views.appliedSeq() == Golden.eventCount, "the read command caught the views up")
        let lib = try views.readSync { try Views.appointments($0, AppointmentFilter()) }
        let withoutLocal = apptsText.replacing(try Regex(#""(start|end)_local":("[^"]*"|null),"#), with: "")
        #expect(try JSONValue.parse(Array(withoutLocal.utf8)) == .array(lib.map(\.json)))
        for row in appts where row["start_at"] is String {
            #expect((row["start_local"] as? String)?.hasSuffix("+00:00") == true, "\(row)")
        }
        try GoldenExpect.check(try snapshot(views), reader: try LedgerReader(store: tmp.store))

        // The option after the subcommand works as well.
        let (after, _) = try jsonRows(["appointments", "--store", dir, "--json"], columns: AppointmentsProjection.columns + local)
        #expect(after.count == 7)
        let (visible, _) = try jsonRows(["--store", dir, "appointments", "--json", "--hide-removed", "--org", "hope"],
                                        columns: AppointmentsProjection.columns + local)
        // a6 is Hope Center's too: its additional client Casey is in that organization.
        #expect(visible.compactMap { $0["appointment_id"] as? String } == ["a6", "a1", "a4", "a5", "a7"])

        // sync-logs: newest first, metadata an object.
        let (logs, logsText) = try jsonRows(["--store", dir, "sync-logs", "--json"], columns: SyncLogsProjection.columns)
        #expect(logs.compactMap { $0["id"] as? String } == ["run-5", "run-4", "run-3", "run-2", "run-1"])
        let started = logs.compactMap { $0["started_at"] as? String }
        #expect(started == started.sorted(by: >))
        for row in logs {
            #expect(row["metadata"] is [String: Any], "metadata is not an object")
            #expect((row["started_at"] as? String)?.wholeMatch(of: isoMillis) != nil)
            if let done = row["completed_at"] as? String { #expect(done.wholeMatch(of: isoMillis) != nil) }
        }
        let meta = try #require(logs.first?["metadata"] as? [String: Any])
        #expect((meta["date_range"] as? [String: Any])?["start"] as? String == "2026-08-22")
        #expect(meta["intakeq_api_calls"] as? Int == 2)
        let libLogs = try views.readSync { try Views.syncLogs($0, limit: nil, type: nil) }
        #expect(try JSONValue.parse(Array(logsText.utf8)) == .array(libLogs.map(\.json)))
        let (limited, _) = try jsonRows(["--store", dir, "sync-logs", "--json", "--limit", "2", "--type", "automated_daily"],
                                        columns: SyncLogsProjection.columns)
        #expect(limited.compactMap { $0["id"] as? String } == ["run-4", "run-3"])

        // meeting-urls and locations.
        // Issue 14: with the appointment's time (also local), patient, organization and status;
        // --all keeps the links of cancelled and removed appointments.
        let context = ["start_at", "start_local", "end_at", "end_local", "patient_id", "organization_id", "status", "removed"]
        let (urls, urlsText) = try jsonRows(["--store", dir, "meeting-urls", "--json", "--all"], columns: MeetingURLsProjection.columns + context)
        #expect(urls.compactMap { $0["appointment_id"] as? String } == ["a6", "a3", "a1", "a7"])
        #expect(!urlsText.contains("host-"), "a StartUrl leaked into meeting-urls")
        for row in urls { #expect((row["changed_at"] as? String)?.wholeMatch(of: isoMillis) != nil) }
        let (locs, locsText) = try jsonRows(["--store", dir, "locations", "--json"], columns: LocationsProjection.columns + context)
        #expect(locs.count == 7)
        #expect(locs.first { $0["appointment_id"] as? String == "a4" }?["address"] as? String == "100 Main St, Salt Lake City, UT 84101")
        let libLocs = try views.readSync { try Views.locationsWithAppointments($0, AppointmentFilter()) }
        let locsWithoutLocal = locsText.replacing(try Regex(#""(start|end)_local":("[^"]*"|null),"#), with: "")
        #expect(try JSONValue.parse(Array(locsWithoutLocal.utf8)) == .array(libLocs.map(\.json)))
    }

    @Test(.enabled(if: CLIJSONTests.binaryExists, "build .build/debug/syncledger first (swift build --product syncledger)"))
    func emptyStoreAndMissingStore() throws {
        let tmp = try TempStore()
        let (rows, _) = try jsonRows(["--store", tmp.store.path, "appointments", "--json"], columns: AppointmentsProjection.columns + ["start_local", "end_local"])
        #expect(rows.isEmpty)
        let r = try runSyncledger(["--store", tmp.sibling("nowhere"), "appointments", "--json"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("no store at"), "\(r.stderr)")
        // Given --json, the failure is one JSON object on stdout too: the stderr line and the code.
        let failure = try JSONValue.parse(Array(r.stdout.utf8))
        #expect(failure["error"]?.stringValue == r.stderr.split(separator: "\n").first.map(String.init), "\(r.stdout)")
        #expect(failure["exit_code"]?.int64Value == 1, "\(r.stdout)")
    }

    @Test(.enabled(if: CLIJSONTests.binaryExists, "build .build/debug/syncledger first (swift build --product syncledger)"))
    func rebuildWithABadEventExitsNonZeroAndNamesItsSeq() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let w = try makeWriter(tmp.store, clock: ManualClock(goldenBase + 60_000))
        try w.append([NewEvent(type: .appointmentDiscovered, run: "run-9", stream: Streams.appointment("bad-1"),
                               data: Array(#"{"appointment_id":"bad-1","content_hash":"x","object":{"ClientId":4127}}"#.utf8))])
        w.close()
        let r = try runSyncledger(["--store", tmp.store.path, "rebuild"])
        #expect(r.status == 1, "stdout: \(r.stdout) stderr: \(r.stderr)")
        #expect(r.stdout.contains("rebuilt"))
        #expect(r.stderr.contains("seq 26"), "\(r.stderr)")
        let (rows, _) = try jsonRows(["--store", tmp.store.path, "appointments", "--json"], columns: AppointmentsProjection.columns + ["start_local", "end_local"])
        #expect(rows.count == 7)
        #expect(try ProjectionStore(store: tmp.store).quarantine().map(\.seq) == [26, 26, 26])
    }
}
