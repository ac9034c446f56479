import ArgumentParser
import Domain
import Foundation
import GRDB
import IntakeQ
import Ledger
import Projections

struct ScopeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Only this roster organization.", valueName: "ID")) var org: String?
    @Option(help: ArgumentHelp("Only this roster patient.", valueName: "ID")) var patient: String?
    @Option(help: ArgumentHelp("Appointments starting at or after this time (ISO 8601, inclusive).", valueName: "ISO"))
    var from: String?
    @Option(help: ArgumentHelp("Appointments starting at or before this time (ISO 8601, inclusive; a date alone means its whole day).", valueName: "ISO"))
    var to: String?
    @Flag(help: "Leave out appointments deleted in IntakeQ.") var hideRemoved = false

    func validate() throws {
        if let from, ISOTime.parse(from) == nil { throw ValidationError("--from '\(from)' is not an ISO 8601 time (for example 2026-11-26)") }
        if let to, ISOTime.parse(to) == nil { throw ValidationError("--to '\(to)' is not an ISO 8601 time (for example 2026-11-30)") }
    }

    var filter: AppointmentFilter {
        var f = AppointmentFilter(organizationId: org, patientId: patient, hideRemoved: hideRemoved)
        f.from = from.flatMap(ISOTime.parse).map { ISOTime.format(millis: $0) }
        if let to, let ms = ISOTime.parse(to) {
            f.to = ISOTime.format(millis: to.count == 10 ? ms + 86_400_000 - 1 : ms)
        }
        return f
    }
}

/// The body every view command shares: catch up, query, print a table or `--json`.
func printView(_ storeOptions: StoreOptions, json: Bool, columns: [String], empty: String,
               _ query: (Database) throws -> [ViewRow]) async throws {
    try await guarded {
        let (_, _, views) = try openForRead(storeOptions)
        let rows = try views.readSync(query)
        if json { Output.printJSON(rows) } else { Output.printTable(rows, columns: columns, empty: empty) }
        return 0
    }
}

let appointmentTableColumns = ["start_at", "appointment_id", "organization_id", "patient_id", "status", "visit_type", "practitioner_name", "location_name", "meeting_url", "removed"]

struct AppointmentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "appointments", abstract: "The current appointments view, past and future, sorted by start time.",
        discussion: "Appointments deleted in IntakeQ stay listed with removed = yes (removed: true in JSON) unless --hide-removed.")
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var scope: ScopeOptions
    @Flag(help: "Print a JSON array of objects keyed by the view's column names.") var json = false

    func run() async throws {
        try await printView(storeOptions, json: json, columns: appointmentTableColumns, empty: "no appointments match") {
            try Views.appointments($0, scope.filter)
        }
    }
}

struct MeetingURLsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meeting-urls", abstract: "The link each patient joins with (never the practitioner's host link).")
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var scope: ScopeOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await printView(storeOptions, json: json, columns: MeetingURLsProjection.columns, empty: "no meeting links") {
            try Views.meetingURLs($0, scope.filter)
        }
    }
}

struct LocationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locations", abstract: "Where each appointment happens, with the address from the practice settings.")
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var scope: ScopeOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await printView(storeOptions, json: json, columns: LocationsProjection.columns, empty: "no appointments") {
            try Views.locations($0, scope.filter)
        }
    }
}

struct SyncLogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync-logs", abstract: "One row per sync run, newest first.")
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "At most this many runs.") var limit: Int?
    @Option(help: ArgumentHelp("Only runs of this sync type.", valueName: "T")) var type: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
    }

    func run() async throws {
        try await guarded {
            let (_, _, views) = try openForRead(storeOptions)
            let rows = try views.readSync { try Views.syncLogs($0, limit: limit, type: type) }
            let cols = ["started_at", "sync_type", "status", "appointments_new", "appointments_updated",
                        "appointments_unchanged", "appointments_removed", "appointments_errors", "duration_ms", "error_message"]
            if json { Output.printJSON(rows) } else { Output.printTable(rows, columns: cols, empty: "no sync runs recorded") }
            return 0
        }
    }
}

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Every recorded version of one appointment, with field-level changes.")
    @OptionGroup var storeOptions: StoreOptions
    @Argument(help: "The IntakeQ appointment id.") var appointmentId: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await guarded {
            let (_, reader, views) = try openForRead(storeOptions)
            let entries = try History.of(appointmentId, reader: reader, views: views)
            guard !entries.isEmpty else {
                throw CLIFailure(message: "no appointment \(appointmentId) has been recorded in this store")
            }
            if json {
                print(Output.json(.array(entries.map(\.json))))
            } else {
                printHistory(entries)
            }
            return 0
        }
    }
}

func printHistory(_ entries: [HistoryEntry]) {
    for e in entries {
        let run = e.run.map { String($0.prefix(8)) } ?? "-"
        print("seq \(e.seq)  \(e.at)  \(e.type)  run \(run) (\(e.syncType ?? "?"))  IntakeQ modified \(e.lastModified ?? "-")")
        for c in e.changes {
            print("    \(c.field): \(Output.text(c.from).isEmpty ? "∅" : Output.text(c.from)) → \(Output.text(c.to).isEmpty ? "∅" : Output.text(c.to))")
        }
    }
}

struct AsOfCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "as-of", abstract: "The appointments view as it stood at a moment (ISO 8601) or at a seq.")
    @OptionGroup var storeOptions: StoreOptions
    @Argument(help: "The moment, ISO 8601 (recorded time of the events).") var time: String?
    @Option(help: "The last seq to include instead of a time.") var seq: UInt64?
    @Option(help: ArgumentHelp("Only this appointment.", valueName: "ID")) var appointment: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if (time == nil) == (seq == nil) { throw ValidationError("give a time (ISO 8601) or --seq N, one of the two") }
        if let time, ISOTime.parse(time) == nil { throw ValidationError("'\(time)' is not an ISO 8601 time (for example 2026-11-26T10:00:00Z)") }
    }

    func run() async throws {
        try await guarded {
            let (_, reader, views) = try openForRead(storeOptions)
            let head = try reader.head()
            var through: UInt64
            if let seq {
                guard seq <= head.seq else { throw CLIFailure(message: "--seq \(seq) is past the end of the log (head \(head.seq))") }
                through = seq
            } else {
                through = try AsOf.seq(atOrBefore: ISOTime.parse(time!)!, reader: reader, views: views)
            }
            let filter = AppointmentFilter(appointmentId: appointment)
            var quarantined: [UInt64] = []
            let rows = try AsOf.appointments(through: through, filter: filter, reader: reader, views: views,
                                             quarantined: &quarantined)
            if !quarantined.isEmpty {
                warn("warning: \(quarantined.count) event(s) could not be applied (first at seq \(quarantined[0])); the live views quarantine them too (see `syncledger rebuild`)")
            }
            if json { Output.printJSON(rows) } else {
                print("as of seq \(through)")
                Output.printTable(rows, columns: appointmentTableColumns, empty: "no appointments recorded by then")
            }
            return 0
        }
    }
}
