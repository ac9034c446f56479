import Domain
import Foundation
import JSONCore
import Ledger
import TestSupport

// The workload's random numbers: TestSupport's `SeededRNG(seed:)` (SplitMix64), the same
// sequence on every machine for a seed.

extension String {
    func leftPadded(_ n: Int, _ c: Character = "0") -> String {
        count >= n ? self : String(repeating: c, count: n - count) + self
    }
}

/// A source of the events to append, one at a time; `nil` at the end. Nothing is kept beyond
/// the small working set a generator needs (the appointments still "open" in each clinic).
protocol EventSource {
    mutating func next() throws -> NewEvent?
    /// Bytes of IntakeQ appointment JSON wrapped so far (for "vs raw JSON").
    var rawObjectBytes: Int { get }
    var appointmentEvents: Int { get }
    /// An appointment observed several times, for the history and as-of lookups.
    var lookupId: String? { get }
    /// The `roster.observed` the log starts with (and the sealed run seals against).
    var roster: NewEvent { get }
}

/// Shared sync-run framing: roster and settings first, then runs of `runSize` appointment
/// events between `sync.started` and `sync.completed`, ending with a completed run.
struct RunFramer {
    let total: Int
    let runSize: Int
    /// The first event of the log.
    let roster: NewEvent
    var emitted = 0
    var runIndex = 0
    var runId: String?
    var inRun = 0
    var unchangedSample: [String] = []

    mutating func runIdString(_ rng: inout SeededRNG) -> String {
        "\(rng.hex(8))-\(rng.hex(4))-4\(rng.hex(3))-a\(rng.hex(3))-\(rng.hex(12))"
    }

    func nowString(day: Int) -> String {
        ISOTime.format(millis: 1_788_000_000_000 + Int64(day) * 86_400_000 + 36_000_000)
    }

    mutating func started(_ rng: inout SeededRNG, clinic: Int, day: Int) -> NewEvent {
        let id = runIdString(&rng)
        runId = id
        inRun = 0
        runIndex += 1
        let now = nowString(day: day)
        let payload = SyncStarted(
            syncType: "automated_daily", organizationId: "org-\(clinic % Catalogue.organizations)", patientId: nil,
            window: DateWindow(start: String(now.prefix(10)), end: String(nowString(day: day + 30).prefix(10))),
            triggeredBy: "scheduler", toolVersion: "bench", now: now)
        return NewEvent(type: .syncStarted, run: id, stream: Streams.syncRun(id), data: encodeData(payload))
    }

    mutating func completed() -> NewEvent {
        let id = runId!
        var counts = SyncCounts()
        counts.new = inRun / 4
        counts.updated = inRun - inRun / 4
        counts.unchanged = unchangedSample.count
        let payload = SyncCompleted(
            status: "completed", counts: counts, api: APIUsage(), warnings: [], errors: [], errorMessage: nil,
            unchanged: unchangedSample.map { SyncCompleted.Observed(id: $0, hash: String(repeating: "0", count: 64)) },
            headBefore: "0:" + String(repeating: "0", count: 64), durationMs: 1200)
        runId = nil
        unchangedSample = []
        return NewEvent(type: .syncCompleted, run: id, stream: Streams.syncRun(id), data: encodeData(payload))
    }

    /// What comes next: `.framing(event)` or `.appointment` (the caller makes one) or `.end`.
    enum Step { case framing(NewEvent), appointment, end }

    mutating func step(_ rng: inout SeededRNG, clinics: Int) -> Step {
        guard emitted < total else { return .end }
        defer { emitted += 1 }
        if emitted == 0 { return .framing(roster) }
        if emitted == 1 { return .framing(Catalogue.settings()) }
        let left = total - emitted
        if runId == nil {
            if left == 1 { return .appointment }  // too little room for a run: a bare observation
            return .framing(started(&rng, clinic: runIndex % clinics, day: runIndex / clinics))
        }
        if left == 1 || inRun >= runSize { return .framing(completed()) }
        inRun += 1
        return .appointment
    }
}

/// The synthetic workload: `clinics` clinics, each with its open appointments; every run
/// observes appointments of one clinic, discovering new ones and re-observing open ones with
/// small changes (status, reschedule, notes, telehealth link) until they close.
struct SyntheticSource: EventSource {
    var rng: SeededRNG
    var framer: RunFramer
    var roster: NewEvent { framer.roster }
    let clinics: Int
    var open: [[SyntheticAppointment]]
    var nextAppointment = 0
    var rawObjectBytes = 0
    var appointmentEvents = 0
    var lookupId: String?
    var lookupCandidateAfter: Int

    init(seed: UInt64, events: Int, clinics: Int, runSize: Int, rosterPatients: Int) {
        rng = SeededRNG(seed: seed)
        framer = RunFramer(total: events, runSize: runSize, roster: Catalogue.roster(patients: rosterPatients))
        self.clinics = max(1, clinics)
        open = Array(repeating: [], count: self.clinics)
        lookupCandidateAfter = events / 2
    }

    mutating func next() throws -> NewEvent? {
        switch framer.step(&rng, clinics: clinics) {
        case .end: return nil
        case .framing(let e): return e
        case .appointment: return appointmentEvent()
        }
    }

    mutating func appointmentEvent() -> NewEvent {
        let c = max(0, framer.runIndex - 1) % clinics
        let day = max(0, framer.runIndex - 1) / clinics
        appointmentEvents += 1
        if open[c].count < 8 || (open[c].count < 400 && rng.chance(0.25)) {
            nextAppointment += 1
            let a = SyntheticAppointment(number: nextAppointment, clinic: c, day: day, rng: &rng)
            open[c].append(a)
            return observation(a, changed: [], discovered: true)
        }
        let i = rng.below(open[c].count)
        var a = open[c][i]
        if a.observations >= a.maxObservations && rng.chance(0.05) {
            open[c].swapAt(i, open[c].count - 1)
            open[c].removeLast()
            let data = encodeData(AppointmentRemoved(appointmentId: a.id, reason: "deleted_only"))
            return NewEvent(type: .appointmentRemoved, run: framer.runId, stream: Streams.appointment(a.id), data: data)
        }
        let changed = a.mutate(&rng)
        if a.observations >= a.maxObservations {
            open[c].swapAt(i, open[c].count - 1)
            open[c].removeLast()
            if lookupId == nil, framer.emitted >= lookupCandidateAfter, a.observations >= 3 { lookupId = a.id }
        } else {
            open[c][i] = a
            if framer.unchangedSample.count < 3, rng.chance(0.02) { framer.unchangedSample.append(a.id) }
        }
        return observation(a, changed: changed, discovered: false)
    }

    mutating func observation(_ a: SyntheticAppointment, changed: [String], discovered: Bool) -> NewEvent {
        let object = a.json()
        rawObjectBytes += object.count
        if lookupId == nil, framer.emitted + 1 >= framer.total { lookupId = a.id }
        let obs = AppointmentObservation(
            appointmentId: a.id, contentHash: a.hashText(&rng), changedFields: changed, object: object)
        return NewEvent(type: discovered ? .appointmentDiscovered : .appointmentChanged, run: framer.runId,
                        stream: Streams.appointment(a.id), data: obs.encodeData(includeChangedFields: !discovered))
    }
}

/// `--corpus FILE`: JSON Lines of IntakeQ appointment snapshots in observation order (or
/// objects holding the snapshot under "payload"), read one line at a time.
struct CorpusSource: EventSource {
    var lines: LineReader
    var rng: SeededRNG
    var framer: RunFramer
    var roster: NewEvent { framer.roster }
    var seen: Set<String> = []
    var rawObjectBytes = 0
    var appointmentEvents = 0
    var lookupId: String?
    var counts: [String: Int] = [:]
    let path: String
    var lineNumber = 0

    /// `roster`: `CorpusSource.roster(path:lines:everyone:)`, made once for the runs that read the corpus.
    init(path: String, events: Int, runSize: Int, roster: NewEvent) throws {
        self.path = path
        lines = try LineReader(path: path)
        rng = SeededRNG(seed: 7)
        framer = RunFramer(total: events, runSize: runSize, roster: roster)
    }

    /// A roster of every client the first `lines` snapshots name (primary and additional clients),
    /// in one organization, as `sync` would have had for them all to be recorded; nobody when
    /// `everyone` is false. One pass over those lines, not timed.
    static func roster(path: String, lines count: Int, everyone: Bool) throws -> (event: NewEvent, patients: Int) {
        var clients: [String] = []
        var known: Set<String> = []
        if everyone {
            var reader = try LineReader(path: path)
            defer { reader.close() }
            var n = 0
            while n < count, let line = try reader.next() {
                n += 1
                let object = minified(snapshot(of: line))
                guard !object.isEmpty, let value = try? FastJSON.parse(object) else { continue }
                var named = [value["ClientId"]]
                if case .array(let extra)? = value["AdditionalClients"] { named += extra.map { $0["ClientId"] } }
                for case let id? in named.map({ $0.flatMap { $0.isNull ? nil : $0.stringValue } }) where known.insert(id).inserted {
                    clients.append(id)
                }
            }
        }
        let patients = clients.map { RosterObserved.Patient(id: "p-\($0)", name: "Corpus Client \($0)", email: nil, intakeqClientId: $0) }
        let r = RosterObserved(organizations: [.init(id: "org-corpus", name: "Corpus", patients: patients)],
                               practitioners: [], rosterHash: String(repeating: "c", count: 64))
        return (NewEvent(type: .rosterObserved, run: nil, stream: Streams.roster, data: encodeData(r)), patients.count)
    }

    mutating func next() throws -> NewEvent? {
        switch framer.step(&rng, clinics: 1) {
        case .end: return nil
        case .framing(let e): return e
        case .appointment:
            while let line = try lines.next() {
                lineNumber += 1
                let object = minified(snapshot(of: line))
                if object.isEmpty { continue }
                // A line that is not JSON would be appended as it is and only fail in the fold.
                do { _ = try FastJSON.parse(object) } catch {
                    throw BenchError("\(path):\(lineNumber): not a JSON object (\(error))")
                }
                guard let id = topLevelString(object, key: "Id") else { continue }
                rawObjectBytes += object.count
                appointmentEvents += 1
                let discovered = seen.insert(id).inserted
                let n = (counts[id] ?? 0) + 1
                counts[id] = n
                if n >= 3, lookupId == nil || counts[lookupId!]! < n { lookupId = id }
                if lookupId == nil { lookupId = id }
                let obs = AppointmentObservation(appointmentId: id, contentHash: sha256Hex(object),
                                                 changedFields: [], object: object)
                return NewEvent(type: discovered ? .appointmentDiscovered : .appointmentChanged, run: framer.runId,
                                stream: Streams.appointment(id), data: obs.encodeData(includeChangedFields: !discovered))
            }
            // The corpus ran out: close the open run and stop.
            if framer.runId != nil { return framer.completed() }
            return nil
        }
    }
}

/// Reads a file line by line with a fixed buffer.
struct LineReader {
    let file: UnsafeMutablePointer<FILE>
    var buffer: UnsafeMutablePointer<CChar>? = nil
    var capacity = 0

    init(path: String) throws {
        guard let f = fopen(path, "r") else { throw BenchError("cannot open \(path): \(String(cString: strerror(errno)))") }
        file = f
    }

    mutating func next() throws -> [UInt8]? {
        let n = getline(&buffer, &capacity, file)
        guard n >= 0 else { return nil }
        var len = n
        if len > 0, buffer![len - 1] == 10 { len -= 1 }
        return buffer!.withMemoryRebound(to: UInt8.self, capacity: len) { Array(UnsafeBufferPointer(start: $0, count: len)) }
    }

    func close() {
        fclose(file)
        free(buffer)
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
