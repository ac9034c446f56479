import ArgumentParser
import Domain
import EventLog
import Foundation
import GRDB
import IntakeQ
import JSONCore
import Ledger
import Projections

/// `--timezone` and `--wide`, shared by every command that prints appointments.
struct DisplayOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The practice's time zone, IANA (default: the roster's \"timezone\", else UTC).", valueName: "ZONE"))
    var timezone: String?
    @Flag(help: "Show every cell in full instead of fitting the table to $COLUMNS / the terminal (100 columns when not a terminal).")
    var wide = false

    func apply() { Output.wide = wide }

    /// An unknown zone is a usage error here as in `status` (exit 64; it was 1 for the read
    /// commands and 64 for `status`: hostile test).
    func validate() throws { try checkTimezoneOption(timezone) }
}

let syncTypes = ["automated_daily", "manual_org_bulk", "manual_patient", "webhook"]

/// A `--timezone` the zone loader cannot read is a usage error naming the option (checked in
/// `validate()`, so also where no time is shown, as with `--json`).
func checkTimezoneOption(_ timezone: String?) throws {
    guard let timezone else { return }
    do { _ = try PracticeZone.load(timezone) } catch { throw ValidationError("--timezone: \(error)") }
}

/// What a read command needs beyond the rows: the zone to show times in, and the recorded roster
/// (names, and the ids an `--org` / `--patient` must be one of).
struct ReadContext {
    var zone: ZoneRules
    var roster: RosterObserved?
    /// The appointments of forgotten patients, read when a row without a patient id needs them.
    private let forgotten: ForgottenAppointments

    init(views: ProjectionStore, timezone: String?) throws {
        forgotten = ForgottenAppointments(views: views)
        roster = try views.readSync { try Views.roster($0) }
        let name = timezone ?? roster?.timezone
        do {
            zone = try name.map(PracticeZone.load) ?? .utc
        } catch let e as LocalTimeError {
            throw CLIFailure(message: (timezone != nil ? "--timezone: " : "the roster's timezone: ") + e.message)
        }
    }

    /// An unknown organization or patient is an error listing the valid ones (not an empty table).
    func check(org: String?, patient: String?) throws {
        guard let roster else { return }
        if let org, !roster.organizations.contains(where: { $0.id == org }) {
            throw CLIFailure(message: "no organization \(org) in the roster; the organizations are: \(roster.organizations.map(\.id).joined(separator: ", "))")
        }
        if let patient, !roster.organizations.contains(where: { $0.patients.contains { $0.id == patient } }) {
            let ids = roster.organizations.flatMap { $0.patients.map(\.id) }.sorted()
            throw CLIFailure(message: "no patient \(patient) in the roster; the patients are: \(ids.joined(separator: ", "))")
        }
    }

    func patientName(_ id: String?) -> String? {
        guard let id, let roster else { return nil }
        for o in roster.organizations { if let p = o.patients.first(where: { $0.id == id }) { return p.name } }
        return nil
    }

    /// A row's patient by name: the roster's, else `(forgotten)` for an appointment of a
    /// forgotten patient (the view keeps no patient id for it, only that client name).
    func patientName(of row: ViewRow) -> String? {
        let id = row["patient_id"]?.stringValue
        if let name = patientName(id) { return name }
        guard id == nil else { return nil }
        if let client = row["client_name"] {
            return client.stringValue == PersonalData.forgottenName ? PersonalData.forgottenName : nil
        }
        // A link's or a location's row carries no client name: the appointment's row says.
        guard let appointment = row["appointment_id"]?.stringValue else { return nil }
        return forgotten.contains(appointment) ? PersonalData.forgottenName : nil
    }

    /// A change's patient by name (`patientName(of:)` for `changes`).
    func patientName(of c: ChangeRow) -> String? {
        if let name = patientName(c.patientId) { return name }
        return c.patientId == nil && forgotten.contains(c.appointmentId) ? PersonalData.forgottenName : nil
    }

    func organizationName(_ id: String?) -> String? {
        guard let id else { return nil }
        return roster?.organizations.first { $0.id == id }?.name
    }

    func input(_ text: String, option: String) throws -> TimeInput {
        // A malformed time is a usage error (exit 64, the help named), as the README says of a
        // malformed option; it was exit 1 (hostile test).
        do { return try TimeInput.parse(text) } catch let e as LocalTimeError { throw ValidationError("\(option) " + e.message) }
    }

    /// JSON: `start_local` / `end_local` (ISO 8601 with the zone's offset) after `start_at` / `end_at`.
    func localized(_ row: ViewRow) -> ViewRow { row.localized(in: zone) }

    /// Tables: `start` (local time with the zone's abbreviation) and `patient` (the roster name,
    /// else the id; `(forgotten)` for a forgotten patient's appointment) added to a row.
    func forTable(_ row: ViewRow) -> ViewRow {
        var r = row
        r.columns += ["start", "patient", "organization"]
        r.values.append(millis(row["start_at"]).map { .string(LocalFormat.table($0, zone)) } ?? .null)
        r.values.append((patientName(of: row) ?? row["patient_id"]?.stringValue).map(JSONValue.string) ?? .null)
        let oid = row["organization_id"]?.stringValue
        r.values.append((organizationName(oid) ?? oid).map(JSONValue.string) ?? .null)
        return r
    }

    func millis(_ v: JSONValue?) -> Int64? { v?.stringValue.flatMap(ISOTime.parse) }

    func local(_ iso: String?) -> String { iso.flatMap(ISOTime.parse).map { LocalFormat.table($0, zone) } ?? "" }
}

/// The ids of the appointments whose view row keeps no patient id and "(forgotten)" as the client
/// name (a forgotten patient's), read once, on first use. A views database that cannot be read
/// here failed the command's own query already; then the set is empty.
final class ForgottenAppointments {
    private let views: ProjectionStore
    private lazy var ids: Set<String> = {
        let read = try? views.readSync { db in
            try String.fetchSet(db, sql: "SELECT appointment_id FROM appointments WHERE patient_id IS NULL AND client_name = ?",
                                arguments: [PersonalData.forgottenName])
        }
        return read ?? []
    }()

    init(views: ProjectionStore) { self.views = views }

    func contains(_ appointmentId: String) -> Bool { ids.contains(appointmentId) }
}

extension ScopeOptions {
    /// `--from`/`--to` in the practice's zone: a date is a whole local day, a time without an
    /// offset is local time.
    func filter(_ ctx: ReadContext) throws -> AppointmentFilter {
        try ctx.check(org: org, patient: patient)
        var f = AppointmentFilter(organizationId: org, patientId: patient, hideRemoved: hideRemoved)
        let start = try from.map { try ctx.input($0, option: "--from").start(in: ctx.zone) }
        let end = try to.map { try ctx.input($0, option: "--to").end(in: ctx.zone) }
        if let start, let end, start > end {
            // As the read API answers it (400 "from: it is after to"); it listed nothing, exit 0.
            throw ValidationError("--from \(from ?? "") is after --to \(to ?? ""): no appointment can match")
        }
        f.from = start.map { ISOTime.format(millis: $0) }
        f.to = end.map { ISOTime.format(millis: $0) }
        return f
    }
}

/// Prints appointment-like rows: JSON with local times, or a table of `columns`.
func printAppointmentRows(_ rows: [ViewRow], _ ctx: ReadContext, json: Bool, columns: [String], empty: String) {
    if json {
        Output.printJSON(rows.map(ctx.localized))
    } else {
        Output.printTable(rows.map(ctx.forTable), columns: columns, empty: empty)
    }
}


struct UpcomingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upcoming",
        abstract: "The coming appointments in the practice's local time: patient, organization, time, status, where or the link.",
        discussion: """
            From now through the end of the local day --days days ahead (default 7). Cancelled and \
            removed appointments are hidden unless --all.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(parsing: .unconditional, help: "Days ahead, counted in local days after today.") var days = 7
    @Option(help: ArgumentHelp("Only this roster organization.", valueName: "ID")) var org: String?
    @Option(help: ArgumentHelp("Only this roster patient.", valueName: "ID")) var patient: String?
    @Flag(help: "Also list cancelled and removed appointments.") var all = false
    @Option(help: ArgumentHelp("Count from this moment instead of the clock (ISO 8601; without an offset, local time).", valueName: "ISO"))
    var now: String?
    @OptionGroup var display: DisplayOptions
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        try refuseBlank([("--org", org), ("--patient", patient), ("--now", now)])
        guard (0...366).contains(days) else { throw ValidationError("--days must be between 0 and 366") }
        if let now {
            do { _ = try TimeInput.parse(now) } catch let e as LocalTimeError { throw ValidationError("--now \(e.message)") }
        }
    }

    func run() async throws {
        display.apply()
        try await guarded {
            let (_, _, views) = try openForRead(storeOptions)
            let ctx = try ReadContext(views: views, timezone: display.timezone)
            try ctx.check(org: org, patient: patient)
            let start = try now.map { try ctx.input($0, option: "--now").start(in: ctx.zone) } ?? ISOTime.nowMillis()
            try printUpcoming(views: views, ctx: ctx, start: start, days: days, org: org, patient: patient, all: all, json: json)
            return 0
        }
    }
}

/// `upcoming`'s output, also printed by the demo.
func printUpcoming(views: ProjectionStore, ctx: ReadContext, start: Int64, days: Int, org: String?, patient: String?,
                   all: Bool, json: Bool) throws {
        let end = ctx.zone.endOfDay(days, after: start)
        let filter = AppointmentFilter(organizationId: org, patientId: patient, from: ISOTime.format(millis: start),
                                       to: ISOTime.format(millis: end), hideRemoved: !all)
        var rows = try views.readSync { db in
            try Views.appointments(db, filter).map { row -> ViewRow in
                var r = row
                let address = try row["location_id"]?.stringValue.flatMap {
                    try String.fetchOne(db, sql: "SELECT address FROM appointment_locations WHERE appointment_id = ?",
                                        arguments: [row["appointment_id"]?.stringValue ?? $0])
                }
                r.columns.append("address")
                r.values.append(address.map(JSONValue.string) ?? .null)
                return r
            }
        }
        if !all { rows.removeAll(where: \.hiddenByDefault) }
        if json {
            let keys = ["appointment_id", "start_at", "start_local", "end_at", "end_local", "patient_id", "patient_name",
                        "organization_id", "organization_name", "status", "visit_type", "meeting_url", "location_name",
                        "address", "removed"]
            let out: [JSONValue] = rows.map { row in
                let l = ctx.localized(row)
                var o: [String: JSONValue] = [:]
                for k in keys { o[k] = l[k] ?? .null }
                o["patient_name"] = ctx.patientName(of: row).map(JSONValue.string) ?? .null
                o["organization_name"] = ctx.organizationName(row["organization_id"]?.stringValue).map(JSONValue.string) ?? .null
                return .object(o)
            }
            print(Output.json(.array(out)))
            return
        }
        // The link, else the place with its address, else the visit type; the organization only
        // when not one already (JSON has every field).
        let table = rows.map { row -> [String] in
            let t = ctx.forTable(row)
            var place: String
            if let url = row["meeting_url"]?.stringValue {
                place = url
            } else {
                let name = Output.text(row["location_name"])
                let address = Output.text(row["address"])
                place = address.isEmpty ? name : (name.isEmpty ? address : name + ", " + address)
            }
            if place.isEmpty { place = Output.text(row["visit_type"]) }
            var status = Output.text(row["status"])
            if row["removed"] == .bool(true) { status = "removed" }
            let cells = [Output.text(t["start"]), Output.text(t["patient"])]
            return cells + (org == nil ? [Output.text(row["organization_id"])] : []) + [status, place]
        }
        let span = "\(LocalFormat.table(start, ctx.zone)) … \(LocalFormat.table(end, ctx.zone))"
        guard !table.isEmpty else {
            print("no appointments \(span)")
            return
        }
        print(TerminalText.safe("upcoming \(span)" + (org.map { " for " + (ctx.organizationName($0) ?? $0) } ?? "")))
        let fitted = Output.fittedTable(["start", "patient"] + (org == nil ? ["org"] : []) + ["status", "where"], table)
        print(fitted.text)
        print("(\(table.count) appointment\(table.count == 1 ? "" : "s")\(all ? "" : "; cancelled and removed hidden, --all shows them")\(Output.cutHint(fitted.cut, short: !all)))")
}


struct ChangesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "changes",
        abstract: "What changed since a moment or in one sync run: new, rescheduled, cancelled, links, locations, removed.",
        discussion: """
            --since takes an ISO 8601 time (a date alone is local midnight; a time without an offset is \
            local time) or a duration back from now: 90m, 24h, 7d. --run RUN_ID shows one run's changes \
            (the id from `syncledger sync-logs --json`). Times are when SyncLedger recorded the change.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: ArgumentHelp("ISO 8601 (a date alone is the start of that local day), or a duration back from now like 24h or 7d.", valueName: "ISO|DURATION")) var since: String?
    @Option(help: ArgumentHelp("The changes one sync run recorded.", valueName: "RUN_ID")) var run: String?
    @Option(help: ArgumentHelp("Only this roster organization.", valueName: "ID")) var org: String?
    @Option(help: ArgumentHelp("Only this roster patient.", valueName: "ID")) var patient: String?
    @OptionGroup var display: DisplayOptions
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        try refuseBlank([("--since", since), ("--run", run), ("--org", org), ("--patient", patient)])
        if (since == nil) == (run == nil) { throw ValidationError("give --since (ISO 8601 or a duration like 24h) or --run RUN_ID, one of the two") }
        if let since, Self.duration(since) == nil {
            // A number too large for `duration` was called "neither a duration nor a time"
            // (hostile test): say that it is too large.
            if let unit = since.last, "mhd".contains(unit), !since.dropLast().isEmpty, since.dropLast().allSatisfy({ $0.isASCII && $0.isNumber }) {
                throw ValidationError("--since '\(since)' is too large a duration: at most 3650d (87600h, 5256000m), or give an ISO 8601 time")
            }
            do { _ = try TimeInput.parse(since) } catch {
                throw ValidationError("--since '\(since)' is neither a duration (90m, 24h, 7d) nor an ISO 8601 time (2026-12-01, 2026-12-01T18:30)")
            }
        }
    }

    /// "90m", "24h", "7d" → milliseconds; at most ten years (3650d, 87600h, 5256000m).
    static func duration(_ text: String) -> Int64? {
        guard let unit = text.last, let n = Int64(text.dropLast()), n >= 0, n <= maxDurationMinutes else { return nil }
        let ms: Int64
        switch unit {
        case "m": ms = n * 60_000
        case "h": ms = n * 3_600_000
        case "d": ms = n * 86_400_000
        default: return nil
        }
        return ms <= maxDurationMinutes * 60_000 ? ms : nil
    }
    static let maxDurationMinutes: Int64 = 3650 * 24 * 60

    func run() async throws {
        display.apply()
        try await guarded {
            let (_, reader, views) = try openForRead(storeOptions)
            let ctx = try ReadContext(views: views, timezone: display.timezone)
            try ctx.check(org: org, patient: patient)
            let head = try reader.head().seq
            let range: ClosedRange<UInt64>
            let title: String
            if let run {
                // The whole id, or the start of exactly one (compared as text: `%` and `_` are
                // not patterns), in either case: an id is a UUID, and one copied from a tool that
                // shows it in capitals was "not recorded" (hostile test).
                let rows = try views.readSync { db in
                    try Row.fetchAll(db, sql: """
                        SELECT id, start_seq, end_seq, started_at FROM sync_logs
                        WHERE lower(id) = lower(?1) OR (length(?1) > 0 AND lower(substr(id, 1, length(?1))) = lower(?1))
                        ORDER BY lower(id) = lower(?1) DESC, started_at DESC LIMIT 2
                        """, arguments: [run])
                }
                guard let row = rows.first, let s: Int64 = row["start_seq"] else {
                    throw CLIFailure(message: "no sync run \(run) is recorded (see `syncledger sync-logs --json` for run ids)")
                }
                if rows.count > 1, (row["id"] as String?)?.lowercased() != run.lowercased() {
                    throw CLIFailure(message: "more than one sync run id starts with \(run); give more of it (see `syncledger sync-logs --json` for run ids)")
                }
                let e: Int64 = row["end_seq"] ?? Int64(head)
                range = UInt64(s)...UInt64(max(s, e))
                title = "changes recorded by run \(run) (started \(ctx.local(row["started_at"])))"
            } else {
                let ms = try Self.duration(since!).map { ISOTime.nowMillis() - $0 }
                    ?? ctx.input(since!, option: "--since").start(in: ctx.zone)
                let after = try AsOf.seq(atOrBefore: ms - 1, reader: reader, views: views)
                range = (after + 1)...max(after + 1, head)
                title = "changes recorded since \(LocalFormat.table(ms, ctx.zone))"
            }
            try printChanges(range: range, title: title, reader: reader, views: views, ctx: ctx, org: org, patient: patient, json: json)
            return 0
        }
    }
}

/// `changes`' output, also printed by the demo.
func printChanges(range: ClosedRange<UInt64>, title: String, reader: LedgerReader, views: ProjectionStore, ctx: ReadContext,
                  org: String?, patient: String?, json: Bool) throws {
    let changes = try Changes.collect(range: range, reader: reader, views: views, org: org, patient: patient)
    if json {
        print(Output.json(.array(changes.map { c in
            .object([
                "seq": .number(Double(c.seq)), "at": .string(c.at), "run": c.run.map(JSONValue.string) ?? .null,
                "at_local": ctx.millis(.string(c.at)).map { .string(LocalFormat.iso($0, ctx.zone)) } ?? .null,
                "appointment_id": .string(c.appointmentId), "change": .string(c.kind), "field": .string(c.field),
                "from": c.from, "to": c.to,
                "patient_id": c.patientId.map(JSONValue.string) ?? .null,
                "patient_name": ctx.patientName(of: c).map(JSONValue.string) ?? .null,
                "organization_id": c.organizationId.map(JSONValue.string) ?? .null,
                "start_at": c.startAt.map(JSONValue.string) ?? .null,
                "start_local": ctx.millis(c.startAt.map(JSONValue.string)).map { .string(LocalFormat.iso($0, ctx.zone)) } ?? .null,
            ])
        })))
        return
    }
    guard !changes.isEmpty else {
        print("no \(title)")
        return
    }
    print(title)
    func show(_ v: JSONValue, _ field: String) -> String {
        guard case .string(let s) = v else { return Output.text(v).isEmpty ? "∅" : Output.text(v) }
        return field == "start_at" ? ctx.local(s) : s
    }
    let table = changes.map { c -> [String] in
        let detail: String
        switch c.kind {
        case "rescheduled": detail = "from " + show(c.from, c.field)
        case "location changed", "link changed", "status changed":
            detail = "\(show(c.from, c.field)) → \(show(c.to, c.field))"
        case "link added": detail = show(c.to, c.field)
        case "link lost": detail = "was " + show(c.from, c.field)
        case "updated":
            if case .array(let fields) = c.to { detail = fields.map(Output.text).joined(separator: ", ") } else { detail = "" }
        default: detail = ""
        }
        // The appointment id (for `history`) only with --wide; JSON always has it.
        return [ctx.local(c.startAt), ctx.patientName(of: c) ?? c.patientId ?? "", c.kind, detail]
            + (Output.wide ? [c.appointmentId] : [])
    }
    let fitted = Output.fittedTable(["start", "patient", "change", "detail"] + (Output.wide ? ["appointment_id"] : []), table)
    print(fitted.text)
    print("(\(changes.count) change\(changes.count == 1 ? "" : "s")\(Output.cutHint(fitted.cut)))")
}

/// One everyday change of one appointment, read from its recorded versions.
struct ChangeRow {
    var seq: UInt64
    var at: String
    var run: String?
    var appointmentId: String
    var kind: String
    var field: String
    var from: JSONValue
    var to: JSONValue
    var patientId: String?
    var organizationId: String?
    var startAt: String?
}

enum Changes {
    /// The changes of the appointments that have events in `range`, one row per kind of change
    /// per version: new, rescheduled, cancelled, status changed, link added/changed/lost,
    /// location changed, removed, or updated (other fields).
    static func collect(range: ClosedRange<UInt64>, reader: LedgerReader, views: ProjectionStore,
                        org: String?, patient: String?) throws -> [ChangeRow] {
        var ids: [String] = []
        var seen = Set<String>()
        guard range.lowerBound <= (try reader.head().seq) else { return [] }
        try reader.forEachEvent(from: range.lowerBound, through: range.upperBound) { e in
            if [.appointmentDiscovered, .appointmentChanged, .appointmentRemoved].contains(e.eventType),
                e.stream.hasPrefix("appointment/") {
                let id = String(e.stream.dropFirst("appointment/".count))
                if seen.insert(id).inserted { ids.append(id) }
            }
            return true
        }
        var out: [ChangeRow] = []
        for id in ids {
            let who = try views.readSync { db in
                try Row.fetchOne(db, sql: "SELECT patient_id, organization_id, start_at FROM appointments WHERE appointment_id = ?", arguments: [id])
            }
            let members = try views.readSync { db in
                try Row.fetchAll(db, sql: "SELECT patient_id, organization_id FROM appointment_patients WHERE appointment_id = ?", arguments: [id])
            }
            if let org, !members.contains(where: { ($0["organization_id"] as String?) == org }) { continue }
            if let patient, !members.contains(where: { ($0["patient_id"] as String?) == patient }) { continue }
            var start: String? = who?["start_at"]
            for entry in try History.of(id, reader: reader, views: views) {
                let changes = Dictionary(entry.changes.map { ($0.field, $0) }, uniquingKeysWith: { a, _ in a })
                if case .string(let s)? = changes["view.start_at"]?.to { start = s }
                guard range.contains(entry.seq) else { continue }
                let base = ChangeRow(seq: entry.seq, at: entry.at, run: entry.run, appointmentId: id, kind: "", field: "",
                                     from: .null, to: .null, patientId: who?["patient_id"], organizationId: who?["organization_id"],
                                     startAt: start)
                func add(_ kind: String, _ field: String) {
                    var r = base
                    r.kind = kind
                    r.field = field
                    if let c = changes["view." + field] {
                        r.from = c.from
                        r.to = c.to
                    }
                    out.append(r)
                }
                switch entry.type {
                case EventType.appointmentDiscovered.rawValue:
                    add("new", "start_at")
                case EventType.appointmentRemoved.rawValue:
                    add("removed", "removed")
                default:
                    var any = false
                    // Observed again after it was removed: its row is back in the views.
                    if changes["view.removed"] != nil { add("restored", "removed"); any = true }
                    if changes["view.start_at"] != nil { add("rescheduled", "start_at"); any = true }
                    if let s = changes["view.status"] {
                        add(s.to == .string("cancelled") ? "cancelled" : "status changed", "status")
                        any = true
                    }
                    if let m = changes["view.meeting_url"] {
                        add(m.from.isNull ? "link added" : m.to.isNull ? "link lost" : "link changed", "meeting_url")
                        any = true
                    }
                    if changes["view.location_name"] != nil || changes["view.location_id"] != nil {
                        add("location changed", changes["view.location_name"] != nil ? "location_name" : "location_id")
                        any = true
                    }
                    if !any {
                        var r = base
                        r.kind = "updated"
                        r.to = .array(entry.changes.map(\.field).filter { !$0.hasPrefix("view.") }.prefix(5).map(JSONValue.string))
                        out.append(r)
                    }
                }
            }
        }
        return out.sorted { ($0.seq, $0.appointmentId) < ($1.seq, $1.appointmentId) }
    }
}
