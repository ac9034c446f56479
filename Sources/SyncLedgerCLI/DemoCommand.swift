import ArgumentParser
import EventLog
import FakeIntakeQ
import Foundation
import GRDB
import IntakeQ
import Ledger
import Logging
import Projections
import Sync

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "The whole story on bundled fixtures, through a local fake IntakeQ server.",
        discussion: """
            Starts a fake IntakeQ on a free loopback port serving the fixture practice, runs one \
            sync per simulated day into a fresh store (a temporary directory unless --store), then \
            shows the views, one rescheduled appointment's history, a verify and a rebuild.
            """)

    @Option(help: ArgumentHelp("Write the demo store here (a new or empty directory).", valueName: "DIR")) var store: String?
    @Option(help: ArgumentHelp("The fixtures directory (default: the repository's Fixtures/).", valueName: "DIR")) var fixtures: String?

    func run() async throws {
        try await guarded { try await Demo(storeOption: store, fixturesOption: fixtures).run() }
    }
}

struct Demo {
    var storeOption: String?
    var fixturesOption: String?

    func section(_ title: String) {
        print("")
        print("== \(title) " + String(repeating: "=", count: max(3, 76 - title.count)))
    }

    func run() async throws -> Int32 {
        let fixtureDir = try locateFixtures()
        let practice = try FixturePractice.load(directory: fixtureDir + "/practice")
        guard let rosterPath = practice.rosterPath, let first = practice.days.first else {
            throw CLIFailure(message: "the fixtures in \(fixtureDir) have no roster.json or no day files")
        }
        let roster = try Roster.load(path: rosterPath)
        let storePath = try storeOption ?? makeTempDir()
        if let s = storeOption, FileManager.default.fileExists(atPath: s),
            !((try? FileManager.default.contentsOfDirectory(atPath: s)) ?? []).isEmpty {
            throw CLIFailure(message: "\(s) is not empty; the demo writes a fresh store (give a new directory, or none for a temporary one)")
        }
        let apiKey = "demo-key-not-secret"
        var quiet = Logger(label: "fake-intakeq")
        quiet.logLevel = .critical  // its shutdown chatter is not part of the story
        let server = FakeIntakeQServer(state: first.state, apiKey: apiKey, logger: quiet)
        let baseURL = try await server.start()
        defer { Task { await server.stop() } }

        print("SyncLedger demo: \(practice.days.count) simulated days of a practice with \(roster.allPatients.count) roster patients in \(roster.organizations.count) organizations")
        print("fake IntakeQ at \(baseURL); store at \(storePath)")
        section("one sync per day (what `syncledger sync` prints)")
        for day in practice.days {
            server.setState(day.state)
            let request = SyncRequest(roster: roster, now: day.nowDate, triggeredBy: "demo")
            // The local fake has no per-minute limit, so the demo lifts the client's.
            let outcome = try await runSync(
                storePath: storePath, request: request, apiKey: apiKey, baseURL: baseURL,
                policy: RateLimitPolicy(requestsPerMinute: 100_000, dailyBudget: 100_000),
                waitLock: nil, maxRetries: 2, timeout: 10, verbose: false, showProgress: false)
            print("day \(day.day) (\(day.now.prefix(10))): \(outcome.status): \(outcome.summaryLine)")
        }
        await server.stop()

        let store = try Store.open(storePath)
        let reader = try LedgerReader(store: store)
        let views = try ProjectionStore(store: store)
        try views.catchUp(reader)
        let org = roster.organizations[0]
        let today = ISOTime.parse(practice.days.last!.now) ?? 0
        let upcoming = AppointmentFilter(organizationId: org.id, from: ISOTime.format(millis: today),
                                         to: ISOTime.format(millis: today + 14 * 86_400_000))
        section("appointments of \(org.name ?? org.id) in the next 14 days (`syncledger appointments --org \(org.id)`)")
        Output.printTable(try views.readSync { try Views.appointments($0, upcoming) },
                          columns: ["start_at", "appointment_id", "patient_id", "status", "visit_type", "location_name", "meeting_url", "removed"],
                          empty: "none")
        section("meeting links of the next 14 days (`syncledger meeting-urls`)")
        let soon = AppointmentFilter(from: upcoming.from, to: upcoming.to)
        Output.printTable(try views.readSync { try Views.meetingURLs($0, soon) }, columns: MeetingURLsProjection.columns, empty: "none")
        section("sync runs (`syncledger sync-logs`)")
        Output.printTable(try views.readSync { try Views.syncLogs($0, limit: nil, type: nil) },
                          columns: ["started_at", "sync_type", "status", "appointments_new", "appointments_updated",
                                    "appointments_unchanged", "appointments_removed", "appointments_errors"],
                          empty: "none")
        if let id = try rescheduledAppointment(views: views, reader: reader) {
            section("history of a rescheduled appointment (`syncledger history \(id)`)")
            printHistory(try History.of(id, reader: reader, views: views))
        }
        section("verify (`syncledger verify`)")
        let report = try EventLogReader(directory: store.logPath).verify()
        print(report.ok ? "ok: \(report.events) events in \(report.batches) batches; head \(report.head)" : "verify FAILED: \(report.error?.message ?? "?")")
        section("rebuild every view from the log (`syncledger rebuild`)")
        let before = try snapshot(views)
        let started = Date()
        let rebuilt = try views.rebuild(names: [], reader)
        let after = try snapshot(views)
        let same = before == after
        print(String(format: "rebuilt %@ in %.2f s; the rebuilt views %@ the live ones (%d rows compared)",
                     rebuilt.rebuilt.joined(separator: ", "), Date().timeIntervalSince(started),
                     same ? "equal" : "DIFFER FROM", before.count))
        print("")
        // As the user invoked it (".build/debug/syncledger" from tools/demo.sh), so the lines paste.
        let exe = CommandLine.arguments.first.flatMap { $0.contains("/") ? $0 : nil } ?? "syncledger"
        print("The store is still at \(storePath). Try:")
        print("  \(exe) --store \(storePath) appointments --patient \(roster.allPatients[0].id)")
        print("  \(exe) --store \(storePath) history \(try rescheduledAppointment(views: views, reader: reader) ?? "APPOINTMENT_ID")")
        print("  cat \(storePath)/log/*.seg | lz4 -dc | head -3")
        return report.ok && same ? 0 : 1
    }

    func snapshot(_ views: ProjectionStore) throws -> [ViewRow] {
        try views.readSync { db in
            try Views.appointments(db, AppointmentFilter()) + Views.meetingURLs(db, AppointmentFilter())
                + Views.locations(db, AppointmentFilter()) + Views.syncLogs(db, limit: nil, type: nil)
        }
    }

    /// An appointment whose start time changed, to show its history.
    func rescheduledAppointment(views: ProjectionStore, reader: LedgerReader) throws -> String? {
        let seqs = try views.readSync { db in
            try Int64.fetchAll(db, sql: "SELECT seq FROM event_streams WHERE type = 'appointment.changed' ORDER BY seq")
        }.map { UInt64($0) }
        for e in try reader.events(at: seqs) {
            let data = try e.dataValue()
            if case .array(let fields)? = data["changed_fields"], fields.contains(.string("StartDate")),
                let id = data["appointment_id"]?.stringValue {
                return id
            }
        }
        return nil
    }

    func makeTempDir() throws -> String {
        var dir = NSTemporaryDirectory()
        while dir.count > 1, dir.hasSuffix("/") { dir.removeLast() }
        var template = Array((dir + "/syncledger-demo-XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else { throw CLIFailure(message: "cannot create a temporary directory") }
        return String(cString: p)
    }

    /// `--fixtures`, else $SYNCLEDGER_FIXTURES, else a `Fixtures/` found walking up from the
    /// executable (a build inside the repository) or from the current directory.
    func locateFixtures() throws -> String {
        let fm = FileManager.default
        func ok(_ d: String) -> Bool { fm.fileExists(atPath: d + "/practice/day-01.json") }
        if let f = fixturesOption {
            guard ok(f) else { throw CLIFailure(message: "\(f) does not hold the fixtures (practice/day-01.json)") }
            return f
        }
        if let env = ProcessInfo.processInfo.environment["SYNCLEDGER_FIXTURES"], ok(env) { return env }
        var starts: [String] = [fm.currentDirectoryPath]
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") { starts.insert((exe as NSString).deletingLastPathComponent, at: 0) }
        for start in starts {
            var dir = start
            for _ in 0..<8 {
                if ok(dir + "/Fixtures") { return dir + "/Fixtures" }
                let parent = (dir as NSString).deletingLastPathComponent
                if parent == dir { break }
                dir = parent
            }
        }
        throw CLIFailure(message: "cannot find the fixtures: run from the repository, or pass --fixtures DIR (the repository's Fixtures/)")
    }
}
