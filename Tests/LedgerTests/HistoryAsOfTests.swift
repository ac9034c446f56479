import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

@Suite struct HistoryAsOfTests {
    @Test func historyListsEveryVersionWithFieldDiffs() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let reader = try LedgerReader(store: tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(reader)
        let h = try History.of("a1", reader: reader, views: views)
        #expect(h.map(\.seq) == [3, 13, 17])
        #expect(h.map(\.type) == ["appointment.discovered", "appointment.changed", "appointment.changed"])
        #expect(h.map(\.syncType) == ["automated_daily", "manual_org_bulk", "automated_daily"])
        #expect(h.map(\.at) == [T(3), T(11), T(21)])
        let moved = Set(h[1].changes.map(\.field))
        #expect(moved.isSuperset(of: ["StartDate", "EndDate", "view.start_at", "view.end_at"]))
        let link = h[2].changes
        #expect(link.contains(FieldChange(field: "TelehealthInfo.JoinUrl", from: "https://zoom.us/j/1001", to: "https://zoom.us/j/1002")))
        #expect(link.contains(FieldChange(field: "view.meeting_url", from: "https://zoom.us/j/1001", to: "https://zoom.us/j/1002")))
        #expect(!link.contains { $0.field.hasPrefix("view.") && $0.to == "https://zoom.us/s/host-1002" })
        let removed = try History.of("a3", reader: reader, views: views)
        #expect(removed.last?.changes == [FieldChange(field: "view.removed", from: false, to: true)])
        #expect(try History.of("nope", reader: reader, views: views).isEmpty)
    }

    /// The appointments view as of a seq equals the incremental view when the log ended there.
    @Test func asOfEqualsTheViewAtThatPoint() throws {
        let tmp = try TempStore()
        let views = try ProjectionStore(store: tmp.store)
        var atSeq: [(UInt64, [ViewRow])] = []
        try Golden.write(tmp.store) { _ in
            let reader = try LedgerReader(store: tmp.store)
            try views.catchUp(reader)
            atSeq.append((try reader.head().seq, try snapshot(views).appointments))
        }
        let reader = try LedgerReader(store: tmp.store)
        for (seq, rows) in atSeq {
            let asOf = try AsOf.appointments(through: seq, filter: AppointmentFilter(), reader: reader, views: views)
            #expect(asOf == rows, "as of seq \(seq)")
            let one = try AsOf.appointments(through: seq, filter: AppointmentFilter(appointmentId: "a1"), reader: reader, views: views)
            #expect(one == rows.filter { $0["appointment_id"] == "a1" }, "a1 as of seq \(seq)")
        }
        #expect(try AsOf.seq(atOrBefore: ms(T(21)), reader: reader) == 19)
        #expect(try AsOf.seq(atOrBefore: ms(T(21)) - 1, reader: reader) == 16)
        #expect(try AsOf.seq(atOrBefore: goldenBase, reader: reader) == 0)
        // The same answers through the sync_logs shortcut, at every millisecond boundary that matters.
        for t in [goldenBase, ms(T(21)) - 1, ms(T(21)), ms(T(21)) + 1, ms(T(41)), ms(T(41)) + 10_000] {
            #expect(try AsOf.seq(atOrBefore: t, reader: reader, views: views) == AsOf.seq(atOrBefore: t, reader: reader), "at \(t)")
        }
    }
}
