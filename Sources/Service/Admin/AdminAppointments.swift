import Domain
import Foundation
import JSONCore
import Ledger
import Projections
import Sync

/// `/admin/appointments` (search, upcoming per organisation) and `/admin/appointments/{id}`
/// (one appointment and its recorded history).
extension AdminPages {
    static let searchLimit = 500

    func appointments(_ session: AdminSession, query: [String: String]) async throws -> Page {
        let roster = server.currentRoster
        let q = (query["q"] ?? "").trimmingCharacters(in: .whitespaces)
        let org = query["org"].flatMap { $0.isEmpty ? nil : $0 }
        let includeRemoved = query["removed"] == "1"
        if let org, roster.organization(org) == nil {
            throw message(400, "Bad search", "org: '\(org)' is not an organisation of the roster.", session: session, back: "/admin/appointments")
        }
        var filter = AppointmentFilter(organizationId: org, hideRemoved: !includeRemoved)
        for key in ["from", "to"] {
            guard let text = query[key], !text.isEmpty else { continue }
            guard let input = try? TimeInput.parse(text) else {
                throw message(400, "Bad search", "\(key): '\(text)' is not a date (YYYY-MM-DD) or an ISO 8601 time.", session: session, back: "/admin/appointments")
            }
            if key == "from" { filter.from = ISOTime.format(millis: input.start(in: site.zone)) } else { filter.to = ISOTime.format(millis: input.end(in: site.zone)) }
        }
        // A name (any part, any case) or a patient id picks patients; anything else is an appointment id.
        var patients: Set<String>?
        if !q.isEmpty {
            let needle = q.lowercased()
            let matched = roster.allPatients.filter { $0.id == q || ($0.name ?? "").lowercased().contains(needle) }.map(\.id)
            if matched.isEmpty { filter.appointmentId = q } else { patients = Set(matched) }
        }
        let wanted = patients
        let searched = !q.isEmpty || org != nil || filter.from != nil || filter.to != nil
        let now = ISOTime.nowMillis()
        let weekEnd = site.zone.endOfDay(7, after: now)
        let views = server.views
        let search = filter
        let orgIds = roster.organizations.map(\.id)
        let (results, upcoming) = try await server.blocking { () -> ([ViewRow], [String: [ViewRow]]) in
            try views.readSync { db in
                var rows: [ViewRow] = []
                if searched {
                    rows = try Views.appointments(db, search)
                    if let wanted { rows = rows.filter { $0["patient_id"]?.stringValue.map(wanted.contains) ?? false } }
                }
                var up: [String: [ViewRow]] = [:]
                for o in orgIds {
                    up[o] = try Views.appointments(db, AppointmentFilter(
                        organizationId: o, from: ISOTime.format(millis: now), to: ISOTime.format(millis: weekEnd), hideRemoved: true))
                        .filter { $0["status"]?.stringValue != "cancelled" }
                }
                return (rows, up)
            }
        }
        var ctx = base("Appointments", session: session, back: "/admin/appointments")
        ctx["q"] = q
        ctx["from"] = query["from"] ?? ""
        ctx["to"] = query["to"] ?? ""
        ctx["includeRemoved"] = includeRemoved
        ctx["organizations"] = roster.organizations.map { ["id": $0.id, "name": $0.name ?? $0.id, "selected": $0.id == org] as [String: Any] }
        ctx["searched"] = searched
        ctx["results"] = results.prefix(Self.searchLimit).map { appointmentDict($0, id: nil) }
        ctx["resultTitle"] = "\(results.count) appointment\(results.count == 1 ? "" : "s")" + (results.count > Self.searchLimit ? " (the first \(Self.searchLimit) shown)" : "")
        ctx["upcoming"] = roster.organizations.map { o -> [String: Any] in
            let rows = (upcoming[o.id] ?? []).map { appointmentDict($0, id: nil) }
            return ["id": o.id, "name": o.name ?? o.id, "rows": rows, "hasRows": !rows.isEmpty]
        }
        if let f = flash(query) { ctx["flash"] = f }
        return Page(status: 200, body: render("appointments", ctx))
    }

    func appointment(_ session: AdminSession, id: String, query: [String: String]) async throws -> Page {
        let views = server.views
        let store = server.store
        let (row, history) = try await server.blocking { () -> (ViewRow?, [HistoryEntry]) in
            let row = try views.readSync { try Views.appointments($0, AppointmentFilter(appointmentId: id)).first }
            return (row, try History.of(id, reader: LedgerReader(store: store), views: views))
        }
        guard row != nil || !history.isEmpty else {
            throw message(404, "Not found", "No appointment \(id) is recorded.", session: session, back: "/admin/appointments")
        }
        var ctx = base("Appointment", session: session, back: "/admin/appointments/" + FormData.encode(id),
                       patient: row?["patient_id"]?.stringValue)
        for (k, v) in appointmentDict(row, id: id) { ctx[k] = v }
        ctx["id"] = id
        ctx["service"] = row?["service_name"]?.stringValue ?? ""
        let kinds = ["appointment.discovered": "new", "appointment.changed": "changed", "appointment.removed": "removed"]
        ctx["history"] = history.reversed().map { h -> [String: Any] in
            var d: [String: Any] = ["at": local(h.at), "type": kinds[h.type] ?? h.type]
            if let run = h.run {
                d["run"] = true
                d["runHref"] = FormData.encode(run)
                d["runType"] = h.syncType ?? run
            }
            d["changes"] = h.changes.map { c -> [String: Any] in
                ["field": c.field, "from": valueText(c.from, field: c.field), "to": valueText(c.to, field: c.field)]
            }
            return d
        }
        if let f = flash(query) { ctx["flash"] = f }
        return Page(status: 200, body: render("appointment", ctx))
    }

    /// One appointment as a table row: local start, roster names, status, visit, place or link.
    func appointmentDict(_ row: ViewRow?, id: String?) -> [String: Any] {
        let roster = server.currentRoster
        let appointmentId = id ?? row?["appointment_id"]?.stringValue ?? ""
        var d: [String: Any] = ["id": appointmentId, "href": FormData.encode(appointmentId)]
        guard let row else {
            d["start"] = appointmentId
            for k in ["patient", "organization", "status", "visit", "place"] { d[k] = "" }
            return d
        }
        d["start"] = local(row["start_at"]?.stringValue)
        let pid = row["patient_id"]?.stringValue
        d["patient"] = pid.flatMap { roster.patient($0)?.0.name } ?? pid ?? ""
        let oid = row["organization_id"]?.stringValue
        d["organization"] = oid.flatMap { roster.organization($0)?.name } ?? oid ?? ""
        d["status"] = row["removed"] == .bool(true) ? "removed" : (row["status"]?.stringValue ?? "")
        d["visit"] = row["visit_type"]?.stringValue ?? ""
        let url = row["meeting_url"]?.stringValue
        d["place"] = url ?? row["location_name"]?.stringValue ?? ""
        // Only an http(s) link becomes a link (never `javascript:` or another scheme).
        if let url, let scheme = URL(string: url)?.scheme?.lowercased(), scheme == "https" || scheme == "http" { d["link"] = url }
        return d
    }

    /// A history value as text: times in local time, objects as compact JSON, long values cut.
    func valueText(_ v: JSONValue, field: String) -> String {
        if case .null = v { return "∅" }
        if let s = v.stringValue {
            if field.hasSuffix("start_at") || field.hasSuffix("end_at"), let ms = ISOTime.parse(s) { return LocalFormat.table(ms, site.zone) }
            return s.count > 200 ? String(s.prefix(200)) + "…" : s
        }
        let text = v.canonicalText
        return text.count > 200 ? String(text.prefix(200)) + "…" : text
    }
}
