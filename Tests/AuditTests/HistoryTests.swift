import Domain
import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

/// Field-level differences computed by the test itself: nested objects as dotted paths,
/// arrays whole, an absent key equal to null.
func flatDiff(_ old: JSONValue?, _ new: JSONValue?) -> [String: Change] {
    func flatten(_ v: JSONValue?, _ prefix: String, _ into: inout [String: JSONValue]) {
        guard let v else { return }
        if case .object(let o) = v {
            for (k, x) in o { flatten(x, prefix.isEmpty ? k : prefix + "." + k, &into) }
        } else if prefix == "TelehealthInfo.Invitation", let text = v.stringValue {
            // Redaction version 5: an invitation is recorded as its first link (the fixture's
            // links name nobody), nothing when it has none.
            if let r = text.range(of: "https://") { into[prefix] = .string(String(text[r.lowerBound...].prefix { !$0.isWhitespace })) }
        } else if !v.isNull {
            into[prefix] = v
        }
    }
    var a: [String: JSONValue] = [:], b: [String: JSONValue] = [:]
    flatten(old, "", &a)
    flatten(new, "", &b)
    var out: [String: Change] = [:]
    // The host link is never recorded (issue 13, redaction list): it cannot show as a change.
    for k in Set(a.keys).union(b.keys) where k != "TelehealthInfo.StartUrl" {
        let x = a[k] ?? .null, y = b[k] ?? .null
        if x != y { out[k] = Change(x, y) }
    }
    return out
}

struct Change: Equatable, CustomStringConvertible {
    var from: JSONValue
    var to: JSONValue
    init(_ from: JSONValue, _ to: JSONValue) {
        self.from = from
        self.to = to
    }
    init(_ from: String?, _ to: String?) {
        self.from = from.map(JSONValue.string) ?? .null
        self.to = to.map(JSONValue.string) ?? .null
    }
    var description: String { "\(from) → \(to)" }
}

/// A JSON scalar as the view stores it (text).
func text(_ v: JSONValue?) -> String? {
    switch v {
    case .string(let s)?: return s
    case .number(let d)?: return d == d.rounded() ? String(Int64(d)) : String(d)
    default: return nil
    }
}

extension AuditTests {
    enum Step {
        case discovered(day: Int)
        case changed(day: Int, view: [String: Change])
        case removed(day: Int)

        var day: Int {
            switch self {
            case .discovered(let d), .changed(let d, _), .removed(let d): return d
            }
        }
        var type: String {
            switch self {
            case .discovered: return "appointment.discovered"
            case .changed: return "appointment.changed"
            case .removed: return "appointment.removed"
            }
        }
    }

    /// Checks every entry of an appointment's history against the fixture timeline: order,
    /// type, run and sync type, recorded time, LastModified, the exact IntakeQ field changes
    /// (computed here from the day files) and the exact derived view changes given.
    @discardableResult
    func checkHistory(_ t: Timeline, _ id: String, _ steps: [Step], sourceLocation: SourceLocation = #_sourceLocation) async throws -> [HistoryEntry] {
        let entries = try History.of(id, reader: try t.reader(), views: try t.views())
        try #require(entries.count == steps.count, "history of \(id): \(entries.map { "\($0.seq) \($0.type)" })", sourceLocation: sourceLocation)
        var previousSeq: UInt64 = 0
        var previousObjectDay: Int?
        var previousLastModified: String?
        for (e, step) in zip(entries, steps) {
            let day = t.days[step.day - 1]
            let dayStart = step.day == 1 ? 0 : t.days[step.day - 2].head.seq
            #expect(e.seq > previousSeq, "seqs ascend", sourceLocation: sourceLocation)
            #expect(e.seq > dayStart && e.seq <= day.head.seq, "seq \(e.seq) recorded by day \(step.day)'s run", sourceLocation: sourceLocation)
            previousSeq = e.seq
            #expect(e.type == step.type, sourceLocation: sourceLocation)
            #expect(e.run == day.runId, sourceLocation: sourceLocation)
            #expect(e.syncType == "automated_daily", sourceLocation: sourceLocation)
            let at = ISOTime.parse(e.at) ?? -1
            #expect(at >= day.startedMillis - 1 && at <= day.finishedMillis, "at \(e.at) within day \(step.day)'s run", sourceLocation: sourceLocation)

            let intakeq = Dictionary(uniqueKeysWithValues: e.changes.filter { !$0.field.hasPrefix("view.") }.map { ($0.field, Change($0.from, $0.to)) })
            let view = Dictionary(uniqueKeysWithValues: e.changes.filter { $0.field.hasPrefix("view.") }.map { (String($0.field.dropFirst(5)), Change($0.from, $0.to)) })
            switch step {
            case .discovered:
                let object = try #require(t.object(id, day: step.day), sourceLocation: sourceLocation)
                let lm = try #require(object["LastModified"]?.int64Value, sourceLocation: sourceLocation)
                #expect(e.lastModified == iso(millis: lm), sourceLocation: sourceLocation)
                previousLastModified = e.lastModified
                #expect(intakeq.isEmpty, "a first version lists only the view fields it sets", sourceLocation: sourceLocation)
                #expect(view.values.allSatisfy { $0.from == .null }, sourceLocation: sourceLocation)
                let start = try #require(object["StartDate"]?.int64Value, sourceLocation: sourceLocation)
                #expect(view["start_at"] == Change(nil, iso(millis: start)), sourceLocation: sourceLocation)
                #expect(view["status"] == Change(nil, mapStatusIndependently(object["Status"]?.stringValue)), sourceLocation: sourceLocation)
                #expect(view["location_name"] == Change(nil, object["LocationName"]?.stringValue), sourceLocation: sourceLocation)
                previousObjectDay = step.day
            case .changed(_, let expectedView):
                let before = try #require(previousObjectDay.flatMap { t.object(id, day: $0) }, sourceLocation: sourceLocation)
                let after = try #require(t.object(id, day: step.day), sourceLocation: sourceLocation)
                let lm = try #require(after["LastModified"]?.int64Value, sourceLocation: sourceLocation)
                #expect(e.lastModified == iso(millis: lm), sourceLocation: sourceLocation)
                previousLastModified = e.lastModified
                let expectedIntakeQ = flatDiff(before, after)
                #expect(!expectedIntakeQ.isEmpty, sourceLocation: sourceLocation)
                #expect(intakeq == expectedIntakeQ, "IntakeQ field changes of seq \(e.seq)", sourceLocation: sourceLocation)
                #expect(view == expectedView, "view changes of seq \(e.seq)", sourceLocation: sourceLocation)
                previousObjectDay = step.day
            case .removed:
                #expect(e.lastModified == previousLastModified, "a removal keeps the last known LastModified", sourceLocation: sourceLocation)
                #expect(intakeq.isEmpty, sourceLocation: sourceLocation)
                #expect(view == ["removed": Change(.bool(false), .bool(true))], sourceLocation: sourceLocation)
            }
        }
        // The binary prints the same history.
        let cli = try await syncledger(t.store, "history", id, "--json")
        #expect(cli.code == 0, "\(cli.stderr)", sourceLocation: sourceLocation)
        #expect(try parseJSON(cli.stdout) == .array(entries.map(\.json)), sourceLocation: sourceLocation)
        return entries
    }

    func mapStatusIndependently(_ s: String?) -> String {
        ["Confirmed": "confirmed", "WaitingConfirmation": "scheduled", "Canceled": "cancelled", "Declined": "cancelled",
         "Missed": "no_show"][s ?? ""] ?? "unknown"
    }

    @Test func historyOfARescheduledAppointment() async throws {
        let t = try await Timeline.get()
        let id = try t.trap("reschedule_d2")
        let d1 = try #require(t.object(id, day: 1)), d2 = try #require(t.object(id, day: 2))
        let s1 = try #require(d1["StartDate"]?.int64Value), s2 = try #require(d2["StartDate"]?.int64Value)
        let e1 = try #require(d1["EndDate"]?.int64Value), e2 = try #require(d2["EndDate"]?.int64Value)
        #expect(s2 - s1 == (2 * 24 + 1) * 3_600_000, "the fixture moves it by 2 d 1 h")
        let entries = try await checkHistory(t, id, [
            .discovered(day: 1),
            .changed(day: 2, view: ["start_at": Change(iso(millis: s1), iso(millis: s2)),
                                    "end_at": Change(iso(millis: e1), iso(millis: e2))]),
        ])
        let fields = Set(entries[1].changes.map(\.field))
        #expect(fields.isSuperset(of: ["StartDate", "EndDate", "StartDateIso", "EndDateIso", "StartDateLocal", "EndDateLocal", "LastModified"]))
        #expect(entries[1].changes.first { $0.field == "StartDate" } == FieldChange(field: "StartDate", from: .number(Double(s1)), to: .number(Double(s2))))
    }

    @Test func historyOfALinkAddedThenReLinkedAppointment() async throws {
        let t = try await Timeline.get()
        // Office → IntakeQ telehealth (a link appears).
        let added = try t.trap("link_added_d2")
        let a2 = try #require(t.object(added, day: 2))
        let join = try #require(a2["TelehealthInfo"]?["JoinUrl"]?.stringValue)
        let entries = try await checkHistory(t, added, [
            .discovered(day: 1),
            .changed(day: 2, view: ["meeting_url": Change(nil, join), "visit_type": Change("office", "telehealth"),
                                    "location_name": Change("Downtown Office", "Telehealth"),
                                    "location_id": Change("1", text(a2["LocationId"]))]),
        ])
        let fields = Set(entries[1].changes.map(\.field))
        #expect(fields.isSuperset(of: ["TelehealthInfo.JoinUrl", "LocationName", "PlaceOfService"]))
        #expect(!fields.contains("TelehealthInfo.StartUrl"), "the host link is never recorded")

        // A new telehealth session: every recorded TelehealthInfo field changes; the patient's link
        // follows JoinUrl, and the host's StartUrl is not recorded at all.
        let relinked = try t.trap("link_changed_d3")
        let r2 = try #require(t.object(relinked, day: 2)), r3 = try #require(t.object(relinked, day: 3))
        let oldJoin = try #require(r2["TelehealthInfo"]?["JoinUrl"]?.stringValue)
        let newJoin = try #require(r3["TelehealthInfo"]?["JoinUrl"]?.stringValue)
        #expect(oldJoin != newJoin)
        let relinkEntries = try await checkHistory(t, relinked, [
            .discovered(day: 1),
            .changed(day: 3, view: ["meeting_url": Change(oldJoin, newJoin)]),
        ])
        let changes = relinkEntries[1].changes
        for f in ["TelehealthInfo.JoinUrl", "TelehealthInfo.Invitation"] {
            #expect(changes.contains { $0.field == f }, "\(f) is listed")
        }
        #expect(!changes.contains { $0.field == "TelehealthInfo.StartUrl" }, "the host link is never recorded")
        let startUrl = r3["TelehealthInfo"]?["StartUrl"]?.stringValue
        #expect(!changes.contains { $0.field == "view.meeting_url" && $0.to.stringValue == startUrl })
    }

    @Test func historyOfACancelledAppointment() async throws {
        let t = try await Timeline.get()
        let id = try t.trap("cancel_d2")
        let entries = try await checkHistory(t, id, [
            .discovered(day: 1),
            .changed(day: 2, view: ["status": Change("confirmed", "cancelled")]),
        ])
        #expect(entries[1].changes.first { $0.field == "Status" } == FieldChange(field: "Status", from: .string("Confirmed"), to: .string("Canceled")))
        #expect(entries[1].changes.contains { $0.field == "FullCancellationReason" && $0.from == .null })
    }

    @Test func historyOfALocationChange() async throws {
        let t = try await Timeline.get()
        let id = try t.trap("location_change_d3")
        let d3 = try #require(t.object(id, day: 3))
        try await checkHistory(t, id, [
            .discovered(day: 1),
            .changed(day: 3, view: ["location_name": Change("Downtown Office", "Eastside Clinic"),
                                    "location_id": Change("1", text(d3["LocationId"]))]),
        ])
    }

    @Test func historyOfRemovedAppointments() async throws {
        let t = try await Timeline.get()
        // Listed by deletedOnly on day 2.
        try await checkHistory(t, try t.trap("delete_d2"), [.discovered(day: 1), .removed(day: 2)])
        // Vanished on day 3 without a deleted entry: looked up by id, 404.
        try await checkHistory(t, try t.trap("vanish_d3"), [.discovered(day: 1), .removed(day: 3)])
    }

    @Test func historyOfAnAppointmentChangedTwice() async throws {
        // reschedule_d4 is only rescheduled on day 4; the formatting-only change of
        // format_only_d3 must leave no version at all.
        let t = try await Timeline.get()
        let id = try t.trap("reschedule_d4")
        let d3 = try #require(t.object(id, day: 3)), d4 = try #require(t.object(id, day: 4))
        let s3 = try #require(d3["StartDate"]?.int64Value), s4 = try #require(d4["StartDate"]?.int64Value)
        let e3 = try #require(d3["EndDate"]?.int64Value), e4 = try #require(d4["EndDate"]?.int64Value)
        try await checkHistory(t, id, [
            .discovered(day: 1),
            .changed(day: 4, view: ["start_at": Change(iso(millis: s3), iso(millis: s4)),
                                    "end_at": Change(iso(millis: e3), iso(millis: e4))]),
        ])
        try await checkHistory(t, try t.trap("format_only_d3"), [.discovered(day: 1)])
    }

    @Test func historyOfAnUnknownAppointment() async throws {
        let t = try await Timeline.get()
        let unknown = "000000000000000000000000"
        #expect(try History.of(unknown, reader: try t.reader(), views: try t.views()).isEmpty)
        // Never recorded: a non-roster client's appointment.
        #expect(try History.of(try t.trap("new_d2_non_roster"), reader: try t.reader(), views: try t.views()).isEmpty)
        for args in [["history", unknown], ["history", unknown, "--json"]] {
            let r = try await syncledger(t.store, args: args)
            #expect(r.code != 0)
            // Given --json, the failure is one JSON object on stdout as well (`{"error", "exit_code"}`).
            #expect(args.contains("--json") ? String(decoding: r.stdout, as: UTF8.self).hasPrefix("{\"error\":") : r.stdout.isEmpty,
                    "\(String(decoding: r.stdout, as: UTF8.self))")
            let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
            #expect(lines.count == 1, "one line on stderr: \(r.stderr)")
            #expect(r.stderr.contains(unknown))
        }
    }
}
