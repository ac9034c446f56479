import Domain
import FakeIntakeQ
import Foundation
import IntakeQ
import TestSupport
import Testing

@Suite struct ModelTests {
    @Test func everyFixtureObjectDecodesAndKeepsItsBytes() throws {
        let p = Fixtures.practice
        #expect(p.days.map(\.day) == [1, 2, 3, 4, 5])
        #expect(p.rosterPath != nil)
        for day in p.days {
            for raw in day.state.appointments + day.state.deleted {
                let a = try Appointment.decode(minifiedObject: raw)
                #expect(a.raw == raw)
                #expect(minifyJSON(raw) == raw)
                #expect(a.id != nil && a.startDate != nil && a.status != nil)
                // StartDateIso (7 fractional digits) agrees with StartDate.
                let iso = try #require(a.startDateIso.flatMap(IntakeQDate.parse))
                #expect(Int64(iso.timeIntervalSince1970 * 1000) == a.startDate)
            }
            let s = try PracticeSettings.decode(json: day.state.settings)
            #expect(s.locations?.count ?? 0 >= 4)
            #expect(s.practitioners?.count == 4)
        }
    }

    @Test func flexibleIdsAndStatuses() throws {
        let str = try Fixtures.appointment("client_id_string")
        #expect(str.clientId == .string("4109"))
        #expect(str.clientId == FlexibleID.number(4109))
        #expect(Fixtures.rosterIds.contains(str.clientId!.stringValue))
        #expect(try Fixtures.appointment("roster_id_string").clientId == .number(4105))

        let tele = try Fixtures.appointment("telehealth_joinurl")
        #expect(tele.locationId == .number(2))
        #expect(tele.telehealthInfo?.joinUrl?.hasPrefix("https://telehealth.example.com/join/") == true)
        let office = try Fixtures.appointment("roster_plain")
        #expect(office.locationId == .string("1"))

        // Unknown statuses are kept verbatim and shown as unknown, never guessed (Domain's mapping).
        #expect(try Fixtures.appointment("unknown_status").status == "Rescheduled")
        #expect(mapStatus(try Fixtures.appointment("unknown_status").status) == "unknown")
        #expect(mapStatus(try Fixtures.appointment("canceled").status) == "cancelled")
        #expect(mapStatus(try Fixtures.appointment("waiting").status) == "scheduled")
        #expect(mapStatus(try Fixtures.appointment("declined").status) == "cancelled")
        #expect(mapStatus(try Fixtures.appointment("missed").status) == "no_show")

        // InvoiceNumber appears both as a number and as a string in the fixtures.
        var kinds = Set<String>()
        for raw in Fixtures.practice.day(1)!.state.appointments {
            switch try Appointment.decode(minifiedObject: raw).invoiceNumber {
            case .number?: kinds.insert("number")
            case .string?: kinds.insert("string")
            case nil: break
            }
        }
        #expect(kinds == ["number", "string"])
    }

    @Test func telehealthVariants() throws {
        let inv = try Fixtures.appointment("telehealth_invitation_only")
        #expect(inv.telehealthInfo?.joinUrl == nil)
        #expect(inv.telehealthInfo?.invitation?.contains("https://telehealth.example.com/join/") == true)
        let start = try Fixtures.appointment("telehealth_starturl_only")
        #expect(start.telehealthInfo?.joinUrl == nil && start.telehealthInfo?.invitation == nil)
        #expect(start.telehealthInfo?.startUrl != nil)
        #expect(try Fixtures.appointment("meet_in_location_name").locationName?.contains("meet.google.com") == true)
        #expect(try Fixtures.appointment("meet_in_client_note").clientNote?.contains("meet.google.com") == true)
        #expect(try Fixtures.appointment("zoom_in_custom_field").customFields?.first?.value?.contains("zoom.us") == true)
        #expect(try Fixtures.appointment("pos_missing").placeOfService == nil)
        #expect(try Fixtures.appointment("pos_12_home").placeOfService == "12")
    }

    @Test func sparseRowsAndUnknownFields() throws {
        let sparse = try Fixtures.appointment("sparse_row")
        #expect(sparse.clientPhone == nil && sparse.procedures == nil && sparse.additionalClients == nil)
        #expect(!String(decoding: sparse.raw, as: UTF8.self).contains("ClientPhone"))

        let unknown = try Fixtures.appointment("unknown_fields")
        let text = String(decoding: unknown.raw, as: UTF8.self)
        #expect(text.contains(#""RoomBookingId":"rb-7781""#))
        #expect(text.contains(#""WaitingRoomEnabled":true"#))

        let esc = try Fixtures.appointment("escapes_unicode")
        #expect(esc.clientNote == "Said \"see you soon\" \\ bring forms\nThanks — ☕ 🙂")
        #expect(String(decoding: esc.raw, as: UTF8.self).contains(#"Said \"see you soon\" \\ bring forms\nThanks — ☕ 🙂"#))
    }

    @Test func groupSessionsJoinOnAdditionalClients() throws {
        let g = try Fixtures.appointment("group_additional_in_roster")
        #expect(!Fixtures.rosterIds.contains(g.clientId!.stringValue))
        #expect(g.allClientIds.map(\.stringValue) == [g.clientId!.stringValue, "4121", "4126", "5204"])
        #expect(g.additionalClients?[1].clientId == .string("4126"))
        let none = try Fixtures.appointment("group_no_roster")
        #expect(none.allClientIds.allSatisfy { !Fixtures.rosterIds.contains($0.stringValue) })
    }

    @Test func changedFieldsIgnoresFormattingOnly() throws {
        let d1 = try Fixtures.appointment("format_only_d3", day: 1)
        let d3 = try Fixtures.appointment("format_only_d3", day: 3)
        #expect(d1.raw != d3.raw)
        #expect(String(decoding: d1.raw, as: UTF8.self).contains(#""Price":150.0"#))
        #expect(String(decoding: d3.raw, as: UTF8.self).contains(#""Price":150,"#))
        #expect(d3.changedFields(from: d1) == [])

        let l1 = try Fixtures.appointment("link_changed_d3", day: 1)
        let l3 = try Fixtures.appointment("link_changed_d3", day: 3)
        #expect(l3.changedFields(from: l1) == ["LastModified", "TelehealthInfo"])
        let c2 = try Fixtures.appointment("cancel_d2", day: 2)
        #expect(c2.status == "Canceled" && c2.cancellationDate != nil && c2.fullCancellationReason != nil)
    }

    @Test func knowsAll49Keys() {
        #expect(Appointment.knownKeys.count == 49)
        #expect(Set(Appointment.knownKeys).count == 49)
    }

    @Test func lenientDecoding() throws {
        let a = try Appointment.decode(json: Array(#"{"Id":"x","ClientId":"12","LocationId":3,"InvoiceNumber":"INV-9","Status":"NoShow","Extra":{"k":[1,2]}}"#.utf8))
        #expect(a.clientId == 12 && a.locationId == "3" && a.invoiceNumber == "INV-9")
        #expect(a.status == "NoShow" && mapStatus(a.status) == "unknown")
        #expect(a.startDate == nil && a.telehealthInfo == nil)
        // A wrong type is an error that names the key path.
        do {
            _ = try Appointment.decode(json: Array(#"{"Id":"x","Duration":"fifty"}"#.utf8))
            Issue.record("expected a decode error")
        } catch let e as IntakeQError {
            #expect(e.code == .decode)
            #expect(e.keyPath == "Duration")
        }
    }

    /// The counts in expected.json follow from the fixtures by the documented rules.
    @Test func expectedCountsFollowFromTheRules() throws {
        let p = Fixtures.practice
        #expect(p.expected.count == 5)
        var recorded: [String: Appointment] = [:]
        var removed = Set<String>()
        func inScope(_ a: Appointment) -> Bool { a.allClientIds.contains { Fixtures.rosterIds.contains($0.stringValue) } }
        for day in p.days {
            let now = Int64(day.nowDate.timeIntervalSince1970 * 1000)
            let lo = now - 90 * 86_400_000, hi = now + 90 * 86_400_000
            let live = try day.state.appointments.map { try Appointment.decode(minifiedObject: $0) }
            let byId = Dictionary(uniqueKeysWithValues: live.map { ($0.id!, $0) })
            let deleted = Set(try day.state.deleted.map { try Appointment.decode(minifiedObject: $0).id! })
            let crawl = live.filter { lo <= $0.startDate! && $0.startDate! <= hi && inScope($0) }
            var new: [String] = [], updated: [String] = [], unchanged: [String] = [], gone: [String] = []
            for a in crawl {
                if let old = recorded[a.id!] {
                    if a.changedFields(from: old).isEmpty { unchanged.append(a.id!) } else { updated.append(a.id!) }
                } else {
                    new.append(a.id!)
                }
                recorded[a.id!] = a
            }
            let crawled = Set(crawl.map { $0.id! })
            for (id, old) in recorded where !crawled.contains(id) && !removed.contains(id) {
                if deleted.contains(id) || byId[id] == nil {
                    gone.append(id)
                } else if let a = byId[id], inScope(a), !a.changedFields(from: old).isEmpty {
                    updated.append(id)
                    recorded[id] = a
                }
            }
            removed.formUnion(gone)
            let e = p.expected[day.day - 1]
            #expect(e.day == day.day && e.now == day.now)
            #expect(new.sorted() == e.ids.new, "day \(day.day) new")
            #expect(updated.sorted() == e.ids.updated, "day \(day.day) updated")
            #expect(unchanged.sorted() == e.ids.unchanged, "day \(day.day) unchanged")
            #expect(gone.sorted() == e.ids.removed, "day \(day.day) removed")
            #expect(e.counts.new == e.ids.new.count && e.counts.updated == e.ids.updated.count)
        }
    }
}
