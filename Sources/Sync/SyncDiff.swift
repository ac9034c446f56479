import Domain
import Foundation
import IntakeQ
import JSONCore
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

    /// The last recorded objects of the given appointments (those whose content hash changed),
    /// read in one pass over the log (`ProjectionStore.recordedObjects`).
    let priorObjects: ([String]) throws -> ProjectionStore.RecordedObjects
    /// The fetched appointments whose hash differs from the recorded one, in the order they were
    /// observed; diffed field by field once their prior objects are read (`resolve`).
    private var candidates: [Candidate] = []

    private enum Candidate {
        case unchanged(SyncCompleted.Observed)
        /// `raw` is the object as it will be recorded (after redaction); it is parsed again for
        /// the diff rather than kept parsed, so a run that sees every appointment change holds
        /// one copy of each.
        case differs(id: String, hash: String, raw: [UInt8], wasRemoved: Bool)

        var differingId: String? {
            if case .differs(let id, _, _, _) = self { return id } else { return nil }
        }
        var differs: Bool { differingId != nil }
    }

    /// Candidates whose prior objects are read and diffed at once: bounds what a run holds in
    /// memory when every appointment changed (a new IntakeQ field, say).
    static let resolveGroup = 512

    init(plan: SyncPlan, known: [String: KnownAppointment],
         priorObjects: @escaping ([String]) throws -> ProjectionStore.RecordedObjects) {
        self.plan = plan
        self.known = known
        self.priorObjects = priorObjects
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
        let deletedIds = Set(fetch.deleted.map(\.id))
        for a in fetch.crawled where !deletedIds.contains(a.id) {
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
            let id = a.id
            guard let k = known[id], !k.removed, plan.inScope(k), !handled.contains(id) else { continue }
            handled.insert(id)
            removed.append(AppointmentRemoved(appointmentId: id, reason: "deleted_only"))
        }
        resolve()
        counted = fetch.errorCount + decodeErrors
        crawlIncomplete = !fetch.crawlComplete
    }

    private(set) var counted = 0

    private mutating func observe(_ a: FetchedAppointment, requireWindow: Bool) {
        let id = a.id
        guard !handled.contains(id) else { return }
        let facts: AppointmentFacts
        do {
            facts = try AppointmentFacts(object: a.value)
        } catch {
            decodeErrors += 1
            return
        }
        // Minimum necessary: clients outside the roster are dropped before anything is recorded.
        guard plan.inScope(facts) else {
            // A known appointment now belongs to nobody in the roster (IntakeQ moved it to
            // another client): record that it left, by id only — none of the new client's data.
            if !plan.inRoster(facts), let prior = known[id], !prior.removed, plan.inScope(prior) {
                handled.insert(id)
                removed.append(AppointmentRemoved(appointmentId: id, reason: "out_of_scope"))
            }
            return
        }
        // Minimum necessary inside the appointment too: non-roster people of a group appointment
        // and credentials are removed before anything is hashed, diffed or recorded.
        let redaction = Redaction.apply(a.value, rosterClients: plan.rosterClients)
        let value = redaction.object
        let raw = redaction.changed ? Array(value.canonicalText.utf8) : a.raw
        let prior = known[id]
        if requireWindow, !plan.inWindow(facts) {
            // Outside the exact window: only a change to an appointment we track counts.
            guard let prior, !prior.removed, plan.inWindow(prior) else { return }
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
            discovered.append(AppointmentObservation(appointmentId: id, contentHash: hash, changedFields: [], object: raw))
            return
        }
        if prior.contentHash == hash, !prior.removed {
            candidates.append(.unchanged(.init(id: id, hash: hash)))
            return
        }
        candidates.append(.differs(id: id, hash: hash, raw: raw, wasRemoved: prior.removed))
    }

    /// Reads the prior objects of the appointments whose hash changed (one sorted pass over the
    /// log per `resolveGroup` of them, not one read per appointment) and sorts each candidate into
    /// `changed` or `unchanged`, in the order they were observed.
    private mutating func resolve() {
        var start = 0
        while start < candidates.count {
            // A group: up to `resolveGroup` candidates that differ, and the unchanged ones between.
            var end = start, differing = 0
            while end < candidates.count, differing < Self.resolveGroup || !candidates[end].differs {
                if candidates[end].differs { differing += 1 }
                end += 1
            }
            let ids = candidates[start..<end].compactMap(\.differingId)
            var before = ProjectionStore.RecordedObjects()
            var failure: String?
            if !ids.isEmpty {
                do { before = try priorObjects(ids) } catch {
                    failure = "\(error)"
                    warnings.append("the last recorded versions of \(ids.count) changed appointment(s) could not be read from the log (\(error)); they are not recorded this run")
                }
            }
            for c in candidates[start..<end] {
                switch c {
                case .unchanged(let o):
                    unchanged.append(o)
                case .differs(let id, let hash, let raw, let wasRemoved):
                    // An appointment whose prior object cannot be read counts as an error of the
                    // run and records nothing this time; the others are recorded all the same.
                    if failure != nil {
                        decodeErrors += 1
                        continue
                    }
                    if let why = before.unreadable[id] {
                        decodeErrors += 1
                        warnings.append("appointment \(id): its last recorded version could not be read (\(why)); not recorded this run")
                        continue
                    }
                    guard let value = try? FastJSON.parse(raw) else {
                        decodeErrors += 1
                        continue
                    }
                    var fields = diffObjects(before.objects[id] ?? .object([:]), value).map(\.field)
                    if wasRemoved { fields.append("(reappeared)") }
                    if fields.isEmpty {
                        unchanged.append(.init(id: id, hash: hash))
                        continue
                    }
                    changed.append(AppointmentObservation(appointmentId: id, contentHash: hash, changedFields: fields, object: raw))
                }
            }
            start = end
        }
        candidates = []
    }

    /// The events to append, in the clear (`SyncRunner` seals their personal data).
    func events(runId: String) -> [NewEvent] {
        discovered.map {
            NewEvent(type: .appointmentDiscovered, run: runId, stream: Streams.appointment($0.appointmentId), data: $0.encodeData(includeChangedFields: false))
        } + changed.map {
            NewEvent(type: .appointmentChanged, run: runId, stream: Streams.appointment($0.appointmentId), data: $0.encodeData(includeChangedFields: true))
        } + removed.map {
            NewEvent(type: .appointmentRemoved, run: runId, stream: Streams.appointment($0.appointmentId), data: encodeData($0))
        }
    }

    /// The counts of what is in the log when only the first `recorded` of `events(runId:)` were
    /// appended (a run that failed part way): discovered, then changed, then removed, in that
    /// order. Nothing else is counted: what the run found unchanged or could not fetch is not
    /// the log's to vouch for once the run failed.
    func recordedCounts(_ recorded: Int) -> SyncCounts {
        var c = SyncCounts()
        var left = max(recorded, 0)
        c.new = min(left, discovered.count)
        left -= c.new
        c.updated = min(left, changed.count)
        left -= c.updated
        c.removed = min(left, removed.count)
        return c
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
