import ArgumentParser
import Domain
import EventLog
import Foundation
import GRDB
import IntakeQ
import JSONCore
import Ledger
import Projections

/// Options given as an empty or blank string (an unset shell variable, `--org ""`): a usage
/// error naming the option. Searched for, "" said "no organization  in the roster" or printed
/// nothing with exit 0 (hostile test).
func refuseBlank(_ options: [(name: String, value: String?)]) throws {
    for (name, value) in options {
        if let value, value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw ValidationError("\(name) is empty: give a value (an unset shell variable?)")
        }
    }
}

struct ScopeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Only this roster organization.", valueName: "ID")) var org: String?
    @Option(help: ArgumentHelp("Only this roster patient.", valueName: "ID")) var patient: String?
    @Option(help: ArgumentHelp("Appointments starting at or after this time (ISO 8601, inclusive; a date alone is a local day, a time without an offset local time).", valueName: "ISO"))
    var from: String?
    @Option(help: ArgumentHelp("Appointments starting at or before this time (ISO 8601, inclusive; a date alone means its whole local day).", valueName: "ISO"))
    var to: String?
    @Flag(help: "Leave out appointments deleted in IntakeQ.") var hideRemoved = false

    func validate() throws {
        try refuseBlank([("--org", org), ("--patient", patient), ("--from", from), ("--to", to)])
        for (name, value) in [("--from", from), ("--to", to)] {
            guard let value else { continue }
            do { _ = try TimeInput.parse(value) } catch let e as LocalTimeError { throw ValidationError("\(name) \(e.message)") }
        }
    }
}

let appointmentTableColumns = ["start", "appointment_id", "organization_id", "patient", "status", "visit_type", "practitioner_name", "location_name", "meeting_url", "removed"]

struct AppointmentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "appointments", abstract: "The current appointments view, past and future, sorted by start time.",
        discussion: """
            Appointments deleted in IntakeQ stay listed with removed = yes (removed: true in JSON) unless \
            --hide-removed. Times are shown in the practice's time zone; JSON keeps start_at/end_at in UTC \
            and adds start_local/end_local.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var scope: ScopeOptions
    @OptionGroup var display: DisplayOptions
    @Flag(help: "Print a JSON array of objects keyed by the view's column names.") var json = false

    func run() async throws {
        display.apply()
        try await guarded {
            let (_, _, views) = try openForRead(storeOptions)
            let ctx = try ReadContext(views: views, timezone: display.timezone)
            let filter = try scope.filter(ctx)
            let rows = try views.readSync { try Views.appointments($0, filter) }
            printAppointmentRows(rows, ctx, json: json, columns: appointmentTableColumns, empty: "no appointments match")
            return 0
        }
    }
}

struct MeetingURLsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meeting-urls", abstract: "The link each patient joins with (never the practitioner's host link).",
        discussion: "Links of cancelled and removed appointments are hidden unless --all.")
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var scope: ScopeOptions
    @Flag(help: "Also list links of cancelled and removed appointments.") var all = false
    @OptionGroup var display: DisplayOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        display.apply()
        try await guarded {
            let (_, _, views) = try openForRead(storeOptions)
            let ctx = try ReadContext(views: views, timezone: display.timezone)
            let filter = try scope.filter(ctx)
            var rows = try views.readSync { try Views.meetingURLsWithAppointments($0, filter) }
            if !all { rows.removeAll(where: \.hiddenByDefault) }
            printAppointmentRows(rows, ctx, json: json, columns: ["start", "patient", "status", "meeting_url"],
                                 empty: "no meeting links")
            return 0
        }
    }
}

struct LocationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locations", abstract: "Where each appointment happens, with the address from the practice settings.")
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var scope: ScopeOptions
    @OptionGroup var display: DisplayOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        display.apply()
        try await guarded {
            let (_, _, views) = try openForRead(storeOptions)
            let ctx = try ReadContext(views: views, timezone: display.timezone)
            let filter = try scope.filter(ctx)
            let rows = try views.readSync { try Views.locationsWithAppointments($0, filter) }
            printAppointmentRows(rows, ctx, json: json, columns: ["start", "patient", "visit_type", "location_name", "address"],
                                 empty: "no appointments")
            return 0
        }
    }
}

struct SyncLogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync-logs", abstract: "One row per sync run, newest first.")
    @OptionGroup var storeOptions: StoreOptions
    @Option(parsing: .unconditional, help: "At most this many runs.") var limit: Int?
    @Option(help: ArgumentHelp("Only runs of this sync type.", valueName: "T")) var type: String?
    @Flag(help: "Print JSON.") var json = false

    @OptionGroup var display: DisplayOptions

    func validate() throws {
        try refuseBlank([("--type", type)])
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
    }

    func run() async throws {
        display.apply()
        try await guarded {
            if let type, !syncTypes.contains(type) {
                throw CLIFailure(message: "--type \(type) is not a sync type; the sync types are: \(syncTypes.joined(separator: ", "))")
            }
            let (_, _, views) = try openForRead(storeOptions)
            let ctx = try ReadContext(views: views, timezone: display.timezone)
            let rows = try views.readSync { try Views.syncLogs($0, limit: limit, type: type) }
            // `run`: the start of the run's id, which `changes --run` takes (the id was only in
            // --json: hostile test).
            let cols = ["started", "run", "sync_type", "status", "appointments_new", "appointments_updated",
                        "appointments_unchanged", "appointments_removed", "appointments_errors", "duration_ms", "error_message"]
            let table = rows.map { r -> ViewRow in
                var t = r
                t.columns.append("started")
                t.values.append(.string(ctx.local(r["started_at"]?.stringValue)))
                t.columns.append("run")
                t.values.append(.string(String((r["id"]?.stringValue ?? "").prefix(Output.runPrefixLength))))
                return t
            }
            if json { Output.printJSON(rows) } else { Output.printTable(table, columns: cols, empty: "no sync runs recorded") }
            return 0
        }
    }
}

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Every recorded version of one appointment, with field-level changes.")
    @OptionGroup var storeOptions: StoreOptions
    @Argument(help: "The IntakeQ appointment id.") var appointmentId: String
    @OptionGroup var display: DisplayOptions
    @Flag(help: "Print JSON (times stay ISO 8601 UTC, as recorded).") var json = false

    func validate() throws {
        // `history ""` said "no appointment  has been recorded".
        if appointmentId.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("give an appointment id (the IntakeQ \"Id\"; `syncledger appointments --wide` lists them)")
        }
    }

    func run() async throws {
        display.apply()
        try await guarded {
            let (_, reader, views) = try openForRead(storeOptions)
            let ctx = try ReadContext(views: views, timezone: display.timezone)
            let entries = try History.of(appointmentId, reader: reader, views: views)
            guard !entries.isEmpty else {
                throw CLIFailure(message: "no appointment \(appointmentId) has been recorded in this store")
            }
            if json {
                print(Output.json(.array(entries.map(\.json))))
            } else {
                printHistory(entries, ctx)
            }
            return 0
        }
    }
}

/// The text form: every time in the practice's zone (`2026-12-01 18:30 MST`) — when it was
/// recorded, IntakeQ's LastModified, and the changed start/end times — so a case manager reads the
/// evening appointment on the day it happens. `--json` keeps the recorded UTC values.
func printHistory(_ entries: [HistoryEntry], _ ctx: ReadContext) {
    func time(_ iso: String?) -> String { iso.map { ctx.local($0).isEmpty ? $0 : ctx.local($0) } ?? "-" }
    for e in entries {
        let run = e.run.map { String($0.prefix(8)) } ?? "-"
        print(TerminalText.safe("seq \(e.seq)  \(time(e.at))  \(e.type)  run \(run) (\(e.syncType ?? "?"))  IntakeQ modified \(time(e.lastModified))"))
        for c in e.changes {
            print(TerminalText.safe("    \(c.field): \(historyValue(c.field, c.from, ctx)) → \(historyValue(c.field, c.to, ctx))"))
        }
    }
}

/// One side of a change as text: ∅ for nothing; a time field in the practice's zone.
func historyValue(_ field: String, _ value: JSONValue, _ ctx: ReadContext) -> String {
    let text = Output.text(value)
    if text.isEmpty { return "∅" }
    let timeField = ["StartDate", "EndDate", "DateCreated", "LastModified"].contains(field)
        || (field.hasPrefix("view.") && field.hasSuffix("_at"))
    guard timeField else { return text }
    switch value {
    case .number(let ms) where ms.isFinite && abs(ms) < 1e15: return LocalFormat.table(Int64(ms), ctx.zone)
    case .string(let iso): return ISOTime.parse(iso).map { LocalFormat.table($0, ctx.zone) } ?? text
    default: return text
    }
}

struct AsOfCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "as-of", abstract: "The appointments view as it stood at a moment (ISO 8601) or at a seq.")
    @OptionGroup var storeOptions: StoreOptions
    @Argument(help: "The moment, ISO 8601 (recorded time of the events; a date alone means the end of that local day, a time without an offset local time).") var time: String?
    @Option(parsing: .unconditional, help: "The last seq to include instead of a time.") var seq: UInt64?
    @Option(help: ArgumentHelp("Only this appointment.", valueName: "ID")) var appointment: String?
    @OptionGroup var display: DisplayOptions
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        try refuseBlank([("the time", time), ("--appointment", appointment)])
        if (time == nil) == (seq == nil) { throw ValidationError("give a time (ISO 8601) or --seq N, one of the two") }
        if let time {
            do { _ = try TimeInput.parse(time) } catch let e as LocalTimeError { throw ValidationError(e.message) }
        }
    }

    func run() async throws {
        display.apply()
        try await guarded {
            let (_, reader, views) = try openForRead(storeOptions)
            let ctx = try ReadContext(views: views, timezone: display.timezone)
            let head = try reader.head()
            var through: UInt64
            if let seq {
                guard seq <= head.seq else { throw CLIFailure(message: "--seq \(seq) is past the end of the log (head \(head.seq))") }
                through = seq
            } else {
                // A date alone means the end of that local day; a time without an offset, local time.
                through = try AsOf.seq(atOrBefore: try ctx.input(time!, option: "as-of").end(in: ctx.zone), reader: reader, views: views)
            }
            let filter = AppointmentFilter(appointmentId: appointment)
            var quarantined: [UInt64] = []
            let rows = try AsOf.appointments(through: through, filter: filter, reader: reader, views: views,
                                             quarantined: &quarantined)
            if !quarantined.isEmpty {
                warn("warning: \(quarantined.count) event(s) could not be applied (first at seq \(quarantined[0])); the live views quarantine them too (see `syncledger rebuild`)")
            }
            var empty = "no appointments recorded by then"
            if rows.isEmpty, let appointment {
                // An id the log never held is a typo (exit 1, as `history`), not an empty moment.
                let seqs = try views.streamSeqs(Streams.appointment(appointment),
                                                types: [.appointmentDiscovered, .appointmentChanged, .appointmentRemoved])
                guard let first = seqs.first else {
                    throw CLIFailure(message: "no appointment \(appointment) has been recorded in this store")
                }
                if first > through { empty = "appointment \(appointment) was first recorded at seq \(first), after seq \(through)" }
            }
            if !json { print("as of seq \(through)") }
            printAppointmentRows(rows, ctx, json: json, columns: appointmentTableColumns, empty: empty)
            return 0
        }
    }
}
