import Foundation
import IntakeQ
import Ledger
import Projections

/// Compares what IntakeQ returned with the last recorded version of each appointment and
/// decides the events: discovered, changed (with the changed fields), removed, or unchanged.
struct SyncDiff {
    let plan: SyncPlan
    let known: [String: KnownAppointment]
    private(set) var discovered: [AppointmentObservation] = []
    private(set) var changed: [AppointmentObservation] = []
    private(set) var removed: [AppointmentRemoved] = []
    private(set) var unchanged: [SyncCompleted.Observed] = []
    private(set) var warnings: [String] = []
    private(set) var decodeErrors = 0
    private var handled = Set<String>()
    private var warnedPractitioners = Set<String>()
    private var crawlIncomplete = false

    init(plan: SyncPlan, known: [String: KnownAppointment]) {
        self.plan = plan
        self.known = known
    }

    var counts: SyncCounts {
        var c = SyncCounts()
        c.new = discovered.count
        c.updated = changed.count
        c.unchanged = unchanged.count
        c.removed = removed.count
        c.errors = counted
        c.patientsProcessed = plan.patientsInScope
        // The crawl covers every patient at once: when it is incomplete, none of them is complete.
        c.patientsFailed = crawlIncomplete ? plan.patientsInScope : 0
        return c
    }

    mutating func apply(_ fetch: FetchResult) {
        let deletedIds = Set(fetch.deleted.compactMap(\.id))
        for a in fetch.crawled {
            guard let id = a.id, !deletedIds.contains(id) else { continue }
            observe(a, requireWindow: true)
        }
        for (id, found) in fetch.lookedUp.sorted(by: { $0.key < $1.key }) {
            if let a = found {
                // Returned by id: a move out of the window is a change like any other.
                observe(a, requireWindow: false)
            } else if let k = known[id], !k.removed, !handled.contains(id) {
                handled.insert(id)
                removed.append(AppointmentRemoved(appointmentId: id, reason: "not_found"))
            }
        }
        for a in fetch.deleted {
            guard let id = a.id, let k = known[id], !k.removed, plan.inScope(k.facts), !handled.contains(id) else { continue }
            handled.insert(id)
            removed.append(AppointmentRemoved(appointmentId: id, reason: "deleted_only"))
        }
        counted = fetch.errorCount + decodeErrors
        crawlIncomplete = !fetch.crawlComplete
    }

    private(set) var counted = 0

    private mutating func observe(_ a: Appointment, requireWindow: Bool) {
        guard let id = a.id, !handled.contains(id) else { return }
        let value: JSONValue
        let facts: AppointmentFacts
        do {
            value = try FastJSON.parse(a.raw)
            facts = try AppointmentFacts(object: value)
        } catch {
            decodeErrors += 1
            return
        }
        // Minimum necessary: clients outside the roster are dropped before anything is recorded.
        guard plan.inScope(facts) else {
            // A known appointment now belongs to nobody in the roster (IntakeQ moved it to
            // another client): record that it left, by id only — none of the new client's data.
            if !plan.inRoster(facts), let prior = known[id], !prior.removed, plan.inScope(prior.facts) {
                handled.insert(id)
                removed.append(AppointmentRemoved(appointmentId: id, reason: "out_of_scope"))
            }
            return
        }
        let prior = known[id]
        if requireWindow, !plan.inWindow(facts) {
            // Outside the exact window: only a change to an appointment we track counts.
            guard let prior, !prior.removed, plan.inWindow(prior.facts) else { return }
        }
        handled.insert(id)
        if !isKnownStatus(facts.intakeqStatus) {
            warnings.append("appointment \(id) has IntakeQ status \"\(facts.intakeqStatus ?? "none")\", shown as unknown")
        }
        if let p = facts.practitionerId, !plan.knownPractitioners.contains(p) {
            if warnedPractitioners.insert(p).inserted {
                warnings.append("practitioner \(p) (\(facts.practitionerName ?? "?")) is not in the roster's practitioners; provider_id left empty")
            }
        }
        let hash = contentHash(of: value)
        guard let prior else {
            discovered.append(AppointmentObservation(appointmentId: id, contentHash: hash, changedFields: [], object: a.raw))
            return
        }
        if prior.contentHash == hash, !prior.removed {
            unchanged.append(.init(id: id, hash: hash))
            return
        }
        var fields = diffObjects(prior.object, value).map(\.field)
        if prior.removed { fields.append("(reappeared)") }
        if fields.isEmpty {
            unchanged.append(.init(id: id, hash: hash))
            return
        }
        changed.append(AppointmentObservation(appointmentId: id, contentHash: hash, changedFields: fields, object: a.raw))
    }

    func events(runId: String) -> [NewEvent] {
        discovered.map {
            NewEvent(type: .appointmentDiscovered, run: runId, stream: Streams.appointment($0.appointmentId), data: $0.encodeData(includeChangedFields: false))
        } + changed.map {
            NewEvent(type: .appointmentChanged, run: runId, stream: Streams.appointment($0.appointmentId), data: $0.encodeData(includeChangedFields: true))
        } + removed.map {
            NewEvent(type: .appointmentRemoved, run: runId, stream: Streams.appointment($0.appointmentId), data: encodeData($0))
        }
    }

    /// `failed` when the key was refused or nothing could be fetched; `partial_success` when
    /// some requests failed after retries; `completed` otherwise.
    func status(_ fetch: FetchResult) -> String {
        if fetch.interrupted || fetch.unauthorized || !fetch.anythingFetched { return "failed" }
        // An incomplete crawl (a failed page, the page cap) removed nothing it should have:
        // not a clean run, even when no request failed.
        if fetch.fatal != nil || counted > 0 || !fetch.crawlComplete { return "partial_success" }
        return "completed"
    }
}
