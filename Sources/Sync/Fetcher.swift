import Domain
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections

/// Practice settings that differ from the last recorded ones.
struct ObservedSettings: Sendable {
    var hash: String
    var raw: [UInt8]
    func event(runId: String) -> NewEvent {
        NewEvent(type: .settingsObserved, run: runId, stream: Streams.settings,
                 data: SettingsObserved(contentHash: hash, object: raw).encodeData())
    }
}

/// Everything a run learned from IntakeQ.
struct FetchResult: Sendable {
    var settings: ObservedSettings?
    /// In the crawl, de-duplicated by id.
    var crawled: [FetchedAppointment] = []
    var crawlComplete = false
    /// Reported by `deletedOnly=true`.
    var deleted: [FetchedAppointment] = []
    /// Known appointments a complete crawl no longer returned, looked up by id: nil = 404.
    var lookedUp: [String: FetchedAppointment?] = [:]
    var errors: [String] = []
    var warnings: [String] = []
    /// What stopped the run: the key was refused, or the daily budget ran out.
    var fatal: String?
    var unauthorized = false
    /// Requests that failed after retries plus objects that failed to decode.
    var errorCount = 0
    var anythingFetched = false
    /// The run was interrupted (SIGINT/SIGTERM cancel its task): fetching stopped there.
    var interrupted = false

    /// Marks the fetch interrupted; returns it for `return r.stop()`-style use.
    mutating func interrupt() -> FetchResult {
        interrupted = true
        fatal = "interrupted"
        return self
    }
    /// An "ids" run: the ids whose lookup finished.
    var processed: [String] = []
}

/// Plans and makes the run's API calls: settings once, one window crawl (or a `client=`
/// crawl for one patient), `deletedOnly` once, and a lookup by id for each known appointment
/// a complete crawl no longer returned.
struct Fetcher {
    let client: IntakeQClient
    let plan: SyncPlan
    let progress: (@Sendable (String) -> Void)?

    func fetch(known: [String: KnownAppointment], settingsHash: String?) async -> FetchResult {
        var r = FetchResult()
        do {
            let s = try await client.settings()
            r.anythingFetched = true
            let hash = contentHash(of: s.value)
            if hash != settingsHash { r.settings = ObservedSettings(hash: hash, raw: s.raw) }
        } catch {
            if note(error, into: &r) { return r }
            if Task.isCancelled { return r.interrupt() }
            // The first call could not reach IntakeQ at all: the rest would wait out the same
            // retries one by one. Stop, and say so once.
            if let e = error as? IntakeQError, e.code == .transport || e.code == .timeout {
                r.fatal = e.description
                return r
            }
        }
        if Task.isCancelled { return r.interrupt() }
        progress?("fetching appointments \(plan.windowStartDay) … \(plan.windowEndDay)")
        var query = AppointmentQuery(startDate: plan.windowStartDay, endDate: plan.windowEndDay)
        if plan.patientId != nil, let email = plan.patientEmail { query.client = email }
        var crawl = await client.crawl(query, pageCap: plan.pageCap)
        if let pid = plan.patientId, query.client != nil, crawl.fatal == nil {
            // `client=` matches the roster email against IntakeQ's: a stale email finds nothing.
            // When the patient has appointments we know of and the search returned none of theirs,
            // say so and, budget allowing, crawl the window and filter by ClientId instead.
            let knownHere = known.values.filter { !$0.removed && plan.inScope($0) && plan.inWindow($0) }
            let foundTheirs = crawl.appointments.contains { a in
                guard let f = try? AppointmentFacts(object: a.value) else { return false }
                return plan.inScope(f)
            }
            if !knownHere.isEmpty, !foundTheirs {
                let warning = "patient \(pid): IntakeQ's client= search by the roster email returned none of their \(knownHere.count) known appointment(s); the roster email may be stale (compare it with IntakeQ's)"
                // The window crawl costs about one page per 100 appointments of the whole practice:
                // the known ones are a floor; keep a few calls for deletedOnly and lookups.
                let needed = known.count * 2 / IntakeQClient.pageSize + 2 + 5
                let remaining = await client.limiter.remainingToday()
                if remaining >= needed {
                    r.warnings.append(warning + "; fell back to the window crawl filtered by ClientId")
                    progress?("client= found nothing for \(pid); crawling the window instead")
                    crawl = await client.crawl(AppointmentQuery(startDate: plan.windowStartDay, endDate: plan.windowEndDay),
                                               pageCap: plan.pageCap)
                } else {
                    r.warnings.append(warning + "; not enough of today's API budget left (\(remaining) calls) to crawl the window instead")
                }
            }
        }
        r.crawled = crawl.appointments
        r.crawlComplete = crawl.complete
        // "Nothing could be fetched" is about appointments: settings alone do not count.
        r.anythingFetched = crawl.pagesFetched > 0
        for f in crawl.failures { r.errors.append(f.description); r.errorCount += 1 }
        if crawl.hitPageCap {
            r.warnings.append("the crawl stopped at the page cap (\(plan.pageCap) pages); nothing was removed")
        }
        if let fatal = crawl.fatal {
            _ = note(fatal, into: &r)
            return r
        }
        if Task.isCancelled {
            r.crawlComplete = false
            return r.interrupt()
        }
        progress?("fetched \(crawl.appointments.count) appointments in \(crawl.pagesFetched) pages; polling deleted")
        // Deletions in the run's window only: unbounded, the poll would page through every
        // deletion ever made on every run.
        let deleted = await client.crawl(
            AppointmentQuery(startDate: plan.windowStartDay, endDate: plan.windowEndDay, deletedOnly: true),
            pageCap: plan.pageCap)
        r.deleted = deleted.appointments
        for f in deleted.failures { r.errors.append(f.description); r.errorCount += 1 }
        if let fatal = deleted.fatal {
            _ = note(fatal, into: &r)
            return r
        }
        if Task.isCancelled {
            r.crawlComplete = false
            return r.interrupt()
        }
        guard r.crawlComplete else { return r }
        // Removal needs evidence: look up what a complete crawl no longer returns.
        let returned = Set(r.crawled.map(\.id)).union(r.deleted.map(\.id))
        let candidates = known.values.filter { !$0.removed && plan.inScope($0) && plan.inWindow($0) }
        let missing = candidates.filter { !returned.contains($0.id) }.sorted { $0.id < $1.id }
        // A crawl that "completes" while most of what we know is missing (an empty page from a
        // proxy, a maintenance answer) is not evidence: look nothing up, remove nothing.
        if missing.count > max(20, candidates.count / 4) {
            r.warnings.append("the crawl no longer returns \(missing.count) of \(candidates.count) known appointments in the window; that looks like an IntakeQ or network problem, so nothing was looked up or removed")
            r.crawlComplete = false
            return r
        }
        for (i, k) in missing.enumerated() {
            progress?("looking up \(i + 1)/\(missing.count) appointments the crawl no longer returns")
            if Task.isCancelled { return r.interrupt() }
            do {
                r.lookedUp[k.id] = .some(try await client.appointment(id: k.id))
            } catch {
                if Task.isCancelled { return r.interrupt() }
                if note(error, into: &r) { return r }
            }
        }
        return r
    }

    /// The "ids" scope: one `GET /appointments/{id}` per id, in order, through the shared limiter.
    /// A 404 is evidence of removal; a spent budget or a refused key stops the run (the rest wait
    /// for the next one); an id IntakeQ could not answer stays to do; an undecodable answer is done
    /// (asking again would spend the budget on the same bytes).
    func fetch(ids: [String], stop: (@Sendable () -> Bool)? = nil) async -> FetchResult {
        var r = FetchResult()
        r.crawlComplete = true
        for (i, id) in ids.enumerated() {
            if let stop, stop() { break }
            progress?("looking up \(i + 1)/\(ids.count) appointments by id")
            do {
                r.lookedUp[id] = .some(try await client.appointment(id: id))
                r.processed.append(id)
            } catch {
                if let e = error as? IntakeQError, e.code == .decode { r.processed.append(id) }
                if note(error, into: &r) { break }
            }
        }
        r.anythingFetched = !r.processed.isEmpty
        return r
    }

    /// Records an error; returns true when it must stop the run.
    func note(_ error: any Error, into r: inout FetchResult) -> Bool {
        if error is CancellationError {
            _ = r.interrupt()
            return true
        }
        guard let e = error as? IntakeQError else {
            r.errors.append("\(error)")
            r.errorCount += 1
            return false
        }
        if e.isFatalForRun {
            // A refused key or a spent budget is a request that failed: it counts as an error.
            r.unauthorized = e.code == .unauthorized
            r.fatal = e.description
            r.errors.append(e.description)
            r.errorCount += 1
            return true
        }
        r.errors.append(e.description)
        r.errorCount += 1
        return false
    }
}
