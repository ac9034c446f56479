import Domain
import Foundation
import GRDB
import JSONCore
import Ledger

/// The keys of an appointment event's data the views read: what `AppointmentFacts` and
/// `MeetingLink.find` look at, and the content hash. The other ~30 keys of an IntakeQ object are
/// checked (the data must be valid JSON) but never built.
let appointmentDataFilter = KeyFilter(["appointment_id": nil, "content_hash": nil, "object": appointmentObjectFilter])

/// `appointmentDataFilter` and the sealed parts: what the views need of a sealed observation
/// (`ChunkFolder.appointmentFacts` with a `DeferredOpening`).
let sealedDataFilter = KeyFilter([
    "appointment_id": nil, "content_hash": nil, "sealed": nil, "object": appointmentObjectFilter,
])

/// The members of an appointment object the views read.
let appointmentObjectFilter = KeyFilter([
    "Id", "ClientId", "AdditionalClients", "ClientName", "PractitionerId", "PractitionerName", "ServiceName",
    "Status", "StartDate", "EndDate", "Duration", "LocationId", "LocationName", "PlaceOfService",
    "TelehealthInfo", "ClientNote", "CustomFields", "LastModified",
])

extension EventEnvelope {
    /// The decoded `sync.completed`, decoded once for all the views (and the PostgreSQL sink's
    /// delta) that read it.
    public func syncCompleted() throws -> SyncCompleted {
        try memoized("projections.syncCompleted") { try PayloadScan.syncCompleted(data) ?? projectionData(SyncCompleted.self) }
    }
}

/// Folds a chunk of events into the built-in appointment views in memory — per appointment the
/// operations that touch its row, the last observation, the meeting links, the stream index
/// entries — and writes each appointment once per chunk (a rebuild: once per run of chunks it
/// appears in, `CarriedAppointments`), with cached statements, inside the caller's transaction.
/// The result is row for row what applying the events one by one gives (`ChunkedFoldTests`):
/// each row is replayed in memory from its stored state with the same rules the one-by-one
/// `apply` runs in SQL.
///
/// Events that change what every row depends on (`roster.observed` for `appointments`,
/// `practice.settings_observed` for `locations`) end a segment: what is folded before them is
/// written, then they are applied one by one; so are all events for projections the folder does
/// not know (`sync_logs`, a test's wrapper), each in log order within its own tables.
///
/// `add` never touches the database: it folds into memory and records, in log order, the steps
/// that must run against it (events for the one-by-one projections, quarantine entries, the
/// segments and the events that end them). `flush(db)` runs those steps and writes. So a chunk
/// can be folded on one thread while the previous chunk is written on another
/// (`ProjectionStore`'s pipelined fold), and the database sees the same statements in the same
/// order as when both run on one thread.
///
/// Writing binds values through SQLite's C API (`RawStatement`) and updates stored rows in place
/// (upserts). In a rebuild (`known` set) the stored row of an appointment the rebuild has not
/// written yet is not looked up: the shadow tables start empty.
final class ChunkFolder {
    let t: TableSet
    let recordLive: Bool
    /// Folded views and the seq each one has already applied (catch-up resumes each from its
    /// own checkpoint).
    var appointments: UInt64?
    var meetings: UInt64?
    var locations: UInt64?
    var streams: UInt64?
    var appointmentsP: (any Projection)?
    var meetingsP: (any Projection)?
    var locationsP: (any Projection)?
    /// Projections applied event by event, with their checkpoints.
    var others: [(p: any Projection, after: UInt64)] = []

    struct Observation {
        var facts: AppointmentFacts
        /// The content hash, built only for the observation that is written.
        var hashSource: DeferredText
        var hash: String { hashSource.string }
    }
    enum Op {
        case observed(at: String, seq: UInt64)
        case removed(at: String, seq: UInt64)
        case synced(at: String)
    }
    struct Link {
        var url: String?
        var provider: String
        var source: String
        var at: String
    }
    final class Pending {
        /// The appointment id, as keyed in `Segment.pending` (and written).
        let id: String
        var ops: [Op] = []
        var last: Observation?
        var links: [Link] = []
        /// The facts the locations view writes, when they are not `last`'s (below).
        var location: AppointmentFacts? {
            get { locationBox?.facts }
            set { locationBox = newValue.map(FactsBox.init) }
        }
        /// `location`, boxed: few appointments have one of their own (`locationIsLast`), and held
        /// inline its 328 bytes made every `Pending` 808 bytes (jemalloc's 896-byte class) where
        /// it is now 488 (the 512-byte class). A rebuild holds three chunks' and the carry's
        /// appointments at once (BENCHMARKS.md, stop 51: its peak RSS at 10M events).
        private(set) var locationBox: FactsBox?
        final class FactsBox {
            let facts: AppointmentFacts
            init(_ facts: AppointmentFacts) { self.facts = facts }
        }
        /// The locations view writes `last`'s facts: both views folded the same event last, so
        /// its facts are kept once (a copy for the locations view retained each of their texts).
        var locationIsLast = false
        /// The facts the locations view writes, nil when no event of its was folded.
        var locationFacts: AppointmentFacts? { locationIsLast ? last?.facts : location }
        /// The stream index entries of the appointment's own stream (`appointment/ID`), in log
        /// order: filed here, the stream's name is made once per appointment and segment, not
        /// once per entry, and the entries need no grouping.
        var entries: [(seq: Int64, type: String)] = []
        /// The seq of the last event folded into it: of the appointments a rebuild carries to its
        /// next chunk (`CarriedAppointments`), the most recently touched are kept.
        var touched: UInt64 = 0

        init(_ id: String) { self.id = id }

        /// Adds what `later` folded (in a chunk after this one's) after what this one folded, as
        /// if both had been folded into one: written once, the row is what writing this one and
        /// then `later` gives. (Appended here, so an appointment held over many chunks costs
        /// each chunk only what it adds.)
        func append(_ later: Pending) {
            for op in later.ops { add(op) }
            if later.locationIsLast || later.locationBox != nil {
                locationBox = later.locationBox
                locationIsLast = later.locationIsLast
            } else if locationIsLast, later.last != nil {
                // `later` replaces `last` but folded nothing for the locations view: keep what it wrote.
                location = last?.facts
                locationIsLast = false
            }
            if let l = later.last { last = l }
            links += later.links
            entries += later.entries
            touched = later.touched
        }

        /// Adds an operation. Of several `synced` in a row only the last counts (each sets the
        /// same column and nothing else), so only the last is kept: an appointment a run after
        /// run lists as unchanged holds one, not one per run.
        func add(_ op: Op) {
            if case .synced = op, case .synced? = ops.last { ops.removeLast() }
            ops.append(op)
        }
    }
    typealias StreamEntry = (stream: String, seq: Int64, type: String)
    /// What is folded between two events that end a segment, and the order it is written in.
    struct Segment {
        var pending: [String: Pending] = [:]
        /// The stream index entries not filed under an appointment's `Pending`: the runs', the
        /// roster's, the settings', and an event's whose stream does not name the appointment
        /// its data is about.
        var entries: [StreamEntry] = []
        /// What is written, in id order, once `prepare` has run (by the producer of a pipelined
        /// fold): `pending`'s values, or what a rebuild's `CarriedAppointments` hands over.
        /// The writer walks it instead of looking each id up in `pending`.
        var ordered: [Pending]?
        var isEmpty: Bool { pending.isEmpty && entries.isEmpty && (ordered?.isEmpty ?? true) }

        /// Sorts the appointments by id and groups the other stream entries by stream, streams
        /// in order, each stream's entries in log (seq) order as they were added: the keyed
        /// table is filled page by page.
        mutating func prepare() {
            guard ordered == nil else { return }
            // Sorting the keys and looking each up once is faster than sorting the objects by
            // their ids (each comparison two loads, and references retained and released).
            let pending = pending
            ordered = pending.keys.sorted().map { pending[$0]! }
            guard entries.count > 1 else { return }
            var last: [String: Int] = [:]
            last.reserveCapacity(entries.count / 2)
            var next = [Int](repeating: -1, count: entries.count)
            var heads: [Int] = []
            for (i, e) in entries.enumerated() {
                if let j = last.updateValue(i, forKey: e.stream) { next[j] = i } else { heads.append(i) }
            }
            let list = entries
            heads.sort { list[$0].stream < list[$1].stream }
            var grouped: [StreamEntry] = []
            grouped.reserveCapacity(entries.count)
            for h in heads {
                var i = h
                while i >= 0 {
                    grouped.append(list[i])
                    i = next[i]
                }
            }
            entries = grouped
        }
    }
    /// What `flush` runs against the database, in log order.
    enum Step {
        /// An event for the one-by-one projections (`others`).
        case apply(EventEnvelope)
        case quarantine(QuarantineEntry)
        /// What was folded before an event that ends a segment.
        case write(Segment)
        /// That event, applied one by one to a folded projection.
        case barrier(any Projection, EventEnvelope)

        var endsSegment: Bool {
            if case .barrier = self { return true }
            return false
        }
    }
    var steps: [Step] = []
    /// The segment being folded.
    var segment = Segment()
    /// Events folded since the last flush.
    var count = 0
    /// Quarantine entries recorded by `flush`, in log order.
    var quarantined: [QuarantineEntry] = []
    /// Set by a rebuild into empty tables: the appointments already written (nil: look every one up).
    var known: KnownAppointments?
    /// A pipelined rebuild's appointments held back between chunks (`sortForWriting`).
    var carry: CarriedAppointments?
    /// `sortForWriting` settled this chunk with `carry` (until `flush`): nothing may be folded
    /// into it or settled again.
    private var settled = false
    /// What a rebuild held back from the chunks before, to write before this chunk's steps (an
    /// event among them changes what every row depends on): set by `sortForWriting`.
    private var heldBefore: Segment?
    /// Rows of `appointments` written (inserted or updated) by this folder's flushes.
    private(set) var appointmentsWritten = 0

    /// The seq each chosen projection had applied when this folder was made, in the given order.
    let checkpoints: [UInt64]

    init(_ chosen: [(p: any Projection, after: UInt64)], _ t: TableSet, recordLive: Bool) {
        self.t = t
        self.recordLive = recordLive
        self.checkpoints = chosen.map(\.after)
        for (p, after) in chosen {
            switch p {
            case is AppointmentsProjection: appointments = after; appointmentsP = p
            case is MeetingURLsProjection: meetings = after; meetingsP = p
            case is LocationsProjection: locations = after; locationsP = p
            case is StreamIndexProjection: streams = after
            default: others.append((p, after))
            }
        }
    }

    private func wants(_ after: UInt64?, _ e: EventEnvelope) -> Bool { after.map { e.seq > $0 } ?? false }

    private func slot(_ id: String, _ seq: UInt64) -> Pending {
        if let p = segment.pending[id] {
            p.touched = seq
            return p
        }
        let p = Pending(id)
        p.touched = seq
        segment.pending[id] = p
        return p
    }

    private func quarantine(_ name: String, _ e: EventEnvelope, _ message: String) {
        steps.append(.quarantine(QuarantineEntry(projection: name, seq: e.seq, type: e.type, error: message)))
    }

    /// Folds one event into memory, and records what must be applied one by one. Never touches
    /// the database (it may run on another thread than `flush`).
    func add(_ e: EventEnvelope, opening: DeferredOpening? = nil) throws {
        var e = e
        try add(&e, opening: opening)
    }

    /// `add`, reading the event where it is (`inout` only so that it is not copied: a copy
    /// retains and releases its seven references, on memory the reader's thread wrote).
    /// `opening`: the event's batch was read with its observations left sealed; the views'
    /// fields are opened from the parts, and a projection applied one by one gets the event
    /// opened whole.
    ///
    /// `prepared`: what `appointmentFacts` gives for this event (with this `opening`), worked
    /// out ahead on another thread (`prepare`); used instead of working it out again.
    func add(_ e: inout EventEnvelope, opening: DeferredOpening? = nil, prepared: consuming PreparedFacts? = nil) throws {
        // Settled with a carry, the last segment's appointments are only in `ordered`.
        precondition(!settled, "an event folded into a chunk already settled for writing")
        segment.ordered = nil
        count += 1
        var opened = false
        if others.contains(where: { e.seq > $0.after && $0.p.reads(e) }) {
            steps.append(.apply(try opening?.reveal(e) ?? e))
            opened = opening != nil
        }
        let kind = e.eventType
        // The event's own stream index entry: under its appointment's `Pending` when its stream
        // is that appointment's (below), else in the segment's list.
        var unindexed = wants(streams, e)
        /// Files the entry under `s` when the event's stream is `appointment/ID`, ID byte for
        /// byte as `s` is keyed (a dictionary key may be another spelling of the same text).
        func index(under s: Pending) {
            guard unindexed, Self.isStream(e.stream, ofAppointment: s.id) else { return }
            s.entries.append((Int64(e.seq), e.type))
            unindexed = false
        }
        defer { if unindexed { segment.entries.append((e.stream, Int64(e.seq), e.type)) } }
        switch kind {
        case .appointmentDiscovered, .appointmentChanged:
            let a = wants(appointments, e), m = wants(meetings, e), l = wants(locations, e)
            guard a || m || l else {
                // No view here reads it; a reader opening sealed parts would still have stopped
                // at one that does not open (a missing key, a damaged box), and so does this.
                if let opening, !opened { _ = try opening.reveal(e) }
                break
            }
            let facts: AppointmentFacts
            let scanned: Bool
            var hash: DeferredText?
            do {
                if let p = prepared.take() {
                    (facts, hash, scanned) = try p.take()
                } else {
                    (facts, hash, scanned) = try Self.appointmentFacts(e, opening)
                }
            } catch let q as QuarantineError {
                if a { quarantine(appointmentsP!.name, e, q.message) }
                if m { quarantine(meetingsP!.name, e, q.message) }
                if l { quarantine(locationsP!.name, e, q.message) }
                break
            }
            let s = slot(facts.appointmentId, e.seq)
            index(under: s)
            if a {
                // Opened from sealed parts, the hash came with the facts; else the scan's (when
                // it was made) or, from parsed data, the data's.
                if hash == nil, !scanned {
                    hash = try e.partialDataValue(keeping: appointmentDataFilter)["content_hash"]?.stringValue.map(DeferredText.string)
                }
                if hash == nil {
                    // No content hash recorded: the whole object's, as the one-by-one fold computes it.
                    hash = .string(contentHash(of: try e.dataValue()["object"] ?? .null))
                }
                s.ops.append(.observed(at: e.at, seq: e.seq))
            }
            if m {
                let link = facts.meeting
                s.links.append(Link(url: link?.url, provider: link?.provider ?? "", source: link?.sourceField ?? "", at: e.at))
            }
            if l && !a {
                s.location = facts
                s.locationIsLast = false
            } else if a && !l && s.locationIsLast {
                // The locations view folded nothing of this event: keep what it had before `last` changes.
                s.location = s.last?.facts
                s.locationIsLast = false
            }
            // The facts' last use: moved, not copied (a copy retains every text in them, and the
            // local's end releases them again).
            if a {
                if l {
                    s.location = nil
                    s.locationIsLast = true
                }
                s.last = Observation(facts: consume facts, hashSource: hash!)
            }
        case .appointmentRemoved:
            guard wants(appointments, e) else { break }
            do {
                let removed = try e.projectionData(AppointmentRemoved.self)
                let s = slot(removed.appointmentId, e.seq)
                index(under: s)
                s.ops.append(.removed(at: e.at, seq: e.seq))
            } catch let q as QuarantineError {
                quarantine(appointmentsP!.name, e, q.message)
            }
        case .syncCompleted:
            let a = wants(appointments, e), s = wants(streams, e)
            guard a || s else { break }
            do {
                let done = try e.syncCompleted()
                for o in done.unchanged {
                    let p = slot(o.id, e.seq)
                    if a { p.add(.synced(at: e.at)) }
                    if s { p.entries.append((Int64(e.seq), e.type)) }
                }
            } catch let q as QuarantineError {
                if a { quarantine(appointmentsP!.name, e, q.message) }
                if s { quarantine(StreamIndexProjection().name, e, q.message) }
            }
        case .rosterObserved:
            guard wants(appointments, e), let p = appointmentsP else { break }
            endSegment(p, e)
        case .settingsObserved:
            guard wants(locations, e), let p = locationsP else { break }
            endSegment(p, e)
        default:
            break
        }
    }

    /// Puts each segment in the order `write` writes it (`Segment.prepare`) and, with `carry`,
    /// settles what `carry` holds back (below). Called when the chunk is complete (no `add` after it
    /// until `flush`), by the producer of a pipelined fold, so that the writer's thread (the
    /// slowest stage) only writes; `write` prepares a segment itself otherwise.
    ///
    /// `carry` (a rebuild into empty shadow tables only, where nothing reads the rows before the
    /// swap): what earlier chunks held back is merged into this chunk's last segment, and of
    /// that the appointments this chunk touched are held back in turn (up to `carry.limit`),
    /// written once they go a chunk untouched (or at the end, `writeCarried`). An appointment
    /// observed in many chunks is then written about once instead of once per chunk. Before an
    /// event that changes what every row depends on, what was held back is written first, as it
    /// would have been in its own chunk. The chunks must be settled in log order, each once.
    func sortForWriting() {
        precondition(!settled, "a chunk settled twice")
        for i in steps.indices {
            if case .write(var s) = steps[i] {
                s.prepare()
                steps[i] = .write(s)
            }
        }
        guard let carry else {
            segment.prepare()
            return
        }
        if !carry.isEmpty, steps.contains(where: \.endsSegment) { heldBefore = carry.takeAll() }
        segment = carry.exchange(segment)
        settled = true
    }

    /// True when `stream` is `appointment/` followed by `id` (compared as bytes, nothing built).
    /// The bytes of native strings are compared with `memcmp` (`elementsEqual` over the views,
    /// element by element, was ~4 % of the fold); other strings go the generic way.
    static func isStream(_ stream: String, ofAppointment id: String) -> Bool {
        let prefix: StaticString = "appointment/"
        let n = prefix.utf8CodeUnitCount
        guard stream.utf8.count == n + id.utf8.count else { return false }
        let fast = stream.utf8.withContiguousStorageIfAvailable { s in
            id.utf8.withContiguousStorageIfAvailable { i in
                memcmp(s.baseAddress!, prefix.utf8Start, n) == 0
                    && (i.isEmpty || memcmp(s.baseAddress! + n, i.baseAddress!, i.count) == 0)
            }
        }
        if let fast, let equal = fast { return equal }
        return stream.utf8.starts(with: "appointment/".utf8) && stream.utf8.dropFirst(n).elementsEqual(id.utf8)
    }

    /// Ends the segment before `e`, an event `p` applies one by one (after the segment is written).
    private func endSegment(_ p: any Projection, _ e: EventEnvelope) {
        if !segment.isEmpty {
            steps.append(.write(segment))
            segment = Segment()
        }
        steps.append(.barrier(p, e))
    }

    /// Applies what `add` recorded (the one-by-one events, quarantine entries and segments, in
    /// log order), writes what is folded since (each appointment once; with a carry, what
    /// `sortForWriting` settled) and empties the folder.
    func flush(_ db: Database) throws {
        if let held = heldBefore { try write(held, db) }
        for step in steps {
            switch step {
            case .apply(let e):
                for (p, after) in others where e.seq > after {
                    do { try p.apply(e, db, t) } catch let q as QuarantineError { try record(p.name, e, q.message, db) }
                }
            case .quarantine(let entry):
                try record(entry, db)
            case .write(let s):
                try write(s, db)
            case .barrier(let p, let e):
                do { try p.apply(e, db, t) } catch let q as QuarantineError { try record(p.name, e, q.message, db) }
            }
        }
        try write(segment, db)
        // Freed on another thread: the chunk's objects are many, and the writer is the slowest stage.
        BackgroundRelease.release(&steps, leaving: [])
        BackgroundRelease.release(&segment, leaving: Segment())
        BackgroundRelease.release(&heldBefore, leaving: nil)
        count = 0
        settled = false
    }

    /// Writes what `carry` holds back (the end of a rebuild); returns the appointment rows written.
    func writeCarried(_ carry: CarriedAppointments, _ db: Database) throws -> Int {
        let before = appointmentsWritten
        try write(carry.takeAll(), db)
        return appointmentsWritten - before
    }

    private func record(_ name: String, _ e: EventEnvelope, _ message: String, _ db: Database) throws {
        try record(QuarantineEntry(projection: name, seq: e.seq, type: e.type, error: message), db)
    }

    private func record(_ entry: QuarantineEntry, _ db: Database) throws {
        quarantined.append(entry)
        if recordLive {
            try db.run("INSERT OR REPLACE INTO quarantine (projection, seq, type, error) VALUES (?, ?, ?, ?)",
                       [entry.projection, Int64(entry.seq), entry.type, entry.error])
        }
    }

    /// What `appointmentFacts` gives for an observation, or the error it throws.
    typealias PreparedFacts = Result<ObservationFacts, any Error>
    typealias ObservationFacts = (facts: AppointmentFacts, hash: DeferredText?, scanned: Bool)

    /// `appointmentFacts` of each `appointment.discovered`/`changed` event of the batch (nil for
    /// the others), as `add` would work it out for the event with the batch's `opening(at:)`:
    /// on the pipeline's reader thread, while the fold is behind (`FoldPipeline`). A function of
    /// the event's bytes and the reader's keys alone, so it may run on any thread. Events at or
    /// before `after` are not prepared (the views that read observations have applied them).
    static func prepare(_ batch: LedgerBatch, after: UInt64 = 0) -> [PreparedFacts?] {
        batch.events.withUnsafeBufferPointer { events in
            events.indices.map { i -> PreparedFacts? in
                let kind = events[i].eventType
                guard kind == .appointmentDiscovered || kind == .appointmentChanged, events[i].seq > after else { return nil }
                return Result { try appointmentFacts(events[i], batch.opening(at: i)) }
            }
        }
    }

    /// The facts of an appointment event: scanned from the data's bytes in one pass, or, when
    /// the data was parsed already (opened sealed parts), read from that value. With them the
    /// content hash: the one the scan found (`scanned`: nil means the data has none), or the
    /// opened parts'; nil and not `scanned` when the data was parsed. (The scan itself is not
    /// returned: a copy retains and releases every text it holds.) Bad data is a
    /// `QuarantineError`.
    ///
    /// With `opening` (the event left sealed by its reader), the parts of sealed data are opened
    /// straight into the scanned fields (`DeferredOpening.openedFields`), or, when that is
    /// unsure, into the object's keys the views read (`openedFacts`): the facts and content hash
    /// of the event opened whole, without writing the whole object again and scanning it once
    /// more. Data that is not a sealed observation (or not valid JSON) is read as stored, as the
    /// reader would have left it.
    static func appointmentFacts(_ e: EventEnvelope, _ opening: DeferredOpening?) throws -> ObservationFacts {
        // Made only when it is thrown: interpolated for every event, it was ~2 % of the fold.
        func noObject() -> QuarantineError {
            QuarantineError("\(e.type) at seq \(e.seq) has no usable appointment object (missing Id)")
        }
        var scanned: AppointmentEventScan?
        // Data the reader left unparsed is scanned here first: the scan finds a top-level
        // `sealed` member itself, so the bytes need no search for one beforehand (data without
        // it reads as stored, as `openedFields` has it). Readers open only data whose bytes name
        // a `sealed` key (`maySeal`): a key spelled with an escape is searched for as they do.
        // Data that does not scan, or whose parts are unsure, goes the slow way when its bytes
        // name a `sealed` key anywhere.
        if let opening, e.parsedData == nil || DeferredOpening.maySeal(e) {
            scanned = try? AppointmentEventScan.scan(e.data)
            if let sealed = scanned?.sealed, let escaped = scanned?.sealedKeyEscaped, !escaped || DeferredOpening.maySeal(e) {
                // The fields are moved into the opening, not copied (a copy retains each text).
                switch opening.openedFields(scanned!.fields.take(), sealed: e.data[sealed], appointmentId: scanned!.appointmentId) {
                case .stored:
                    // Not a sealed observation after all (its `sealed` member holds no part, or it
                    // has no object or no appointment id): read as stored, scanned again for the
                    // fields given away above. Sealing never writes such data.
                    scanned = try? AppointmentEventScan.scan(e.data)
                case .opened(let fields):
                    guard let f = try? AppointmentFacts(fields: fields) else { throw noObject() }
                    return (f, scanned!.contentHash.take() ?? .string(""), false)
                case .unsure:
                    scanned = nil
                }
            }
            if scanned == nil, DeferredOpening.maySeal(e), let (facts, hash) = try Self.openedFacts(e.data, open: opening.openedObject) {
                guard let facts else { throw noObject() }
                return (facts, .string(hash), false)
            }
        }
        if let data = e.parsedData {
            guard let object = data["object"], let f = try? AppointmentFacts(object: object) else { throw noObject() }
            return (f, nil, false)
        }
        // Moved out, not copied: a copy of the scan or its fields retains each of their texts.
        var scan: AppointmentEventScan
        if let s = scanned.take() { scan = s } else {
            do { scan = try AppointmentEventScan.scan(e.data) } catch {
                throw QuarantineError("event \(e.seq) (\(e.type)) has a data field that is not valid JSON: \(error)")
            }
        }
        guard let fields = scan.fields.take(), let f = try? AppointmentFacts(fields: fields) else { throw noObject() }
        return (f, scan.contentHash.take(), true)
    }

    /// The facts (nil when the opened object has none) and content hash of sealed observation
    /// data, its parts opened by `open` into the keys the views read; nil when the data is not
    /// a sealed observation, or not valid JSON (it is then read as stored).
    static func openedFacts(_ data: [UInt8], open: (JSONValue) throws -> (object: JSONValue, contentHash: String)?) throws
        -> (facts: AppointmentFacts?, contentHash: String)?
    {
        guard let d = try? FastJSON.parse(data, keeping: sealedDataFilter), let (object, hash) = try open(d) else { return nil }
        return (try? AppointmentFacts(object: object), hash)
    }

    /// Writes one segment: its stream index entries, then each appointment once.
    private func write(_ segment: Segment, _ db: Database) throws {
        var segment = segment
        segment.prepare()
        let ordered = segment.ordered ?? []
        // The appointments' streams in id order (so in stream order), then the others.
        var entries: [StreamEntry] = []
        for p in ordered where !p.entries.isEmpty {
            let stream = Streams.appointment(p.id)
            for e in p.entries { entries.append((stream, e.seq, e.type)) }
        }
        entries += segment.entries
        try writeStreamEntries(entries, db)
        guard !ordered.isEmpty else { return }
        if appointments != nil { try writeAppointments(ordered, db) }
        if meetings != nil { try writeMeetings(ordered, db) }
        if locations != nil { try writeLocations(ordered, db) }
        if let known {
            // (`locationIsLast` implies `last`.)
            for s in ordered where s.last != nil || !s.links.isEmpty || s.locationBox != nil { known.insert(s.id) }
        }
    }

    /// Stream index rows per INSERT statement: one statement per row spent as much in SQLite's
    /// statement machinery (step, reset, the program's setup) as in the B-tree.
    static let entriesPerInsert = 64

    /// Inserts the stream index entries in their order, `entriesPerInsert` rows per statement
    /// (each row ignored when it is there already, as one by one).
    private func writeStreamEntries(_ entries: [StreamEntry], _ db: Database) throws {
        guard !entries.isEmpty else { return }
        let table = t("event_streams")
        func statement(_ rows: Int) throws -> RawStatement {
            try RawStatement(db, "INSERT OR IGNORE INTO \(table) (stream, seq, type) VALUES "
                + Array(repeating: "(?, ?, ?)", count: rows).joined(separator: ", "))
        }
        /// Binds `e` as the `row`th row of `s`.
        func bind(_ s: RawStatement, _ row: Int, _ e: StreamEntry) {
            let p = Int32(3 * row)
            s.bind(p + 1, e.stream)
            s.bind(p + 2, e.seq)
            s.bind(p + 3, e.type)
        }
        let n = Self.entriesPerInsert
        var start = 0
        if entries.count >= n {
            let many = try statement(n)
            while start + n <= entries.count {
                for k in 0..<n { bind(many, k, entries[start + k]) }
                try many.run()
                start += n
            }
        }
        if start < entries.count {
            let one = try statement(1)
            for e in entries[start...] {
                bind(one, 0, e)
                try one.run()
            }
        }
    }

    /// False when no row of this appointment can exist yet (a rebuild that has not observed it),
    /// so its stored row need not be looked up.
    private func mayExist(_ id: String) -> Bool { known?.contains(id) ?? true }

    private func writeAppointments(_ ordered: [Pending], _ db: Database) throws {
        var clients: [String: (patient: String, org: String)] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT intakeq_client_id, patient_id, organization_id FROM \(t("appointments_roster_clients"))") {
            clients[row[0]] = (row[1], row[2])
        }
        var providers: [String: String] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT intakeq_id, provider_id FROM \(t("appointments_roster_providers"))") {
            providers[row[0]] = row[1]
        }
        let prior = try RawStatement(db, """
            SELECT first_seen_at, version, removed, last_changed_at, last_synced_at, last_seq
            FROM \(t("appointments")) WHERE appointment_id = ?
            """)
        // An upsert updates a stored row in place (INSERT OR REPLACE deletes it and inserts it
        // again under a new rowid, touching every index); every column is given either way.
        let object = try RawStatement(db, """
            INSERT INTO \(t("appointments_objects")) (appointment_id, content_hash, client_ids, start_millis)
            VALUES (?, ?, ?, ?)
            ON CONFLICT (appointment_id) DO UPDATE SET content_hash = excluded.content_hash,
              client_ids = excluded.client_ids, start_millis = excluded.start_millis
            """)
        let columns = AppointmentsProjection.columns
        let row = try RawStatement(db, """
            INSERT INTO \(t("appointments")) (\(columns.joined(separator: ", ")))
            VALUES (\(Array(repeating: "?", count: columns.count).joined(separator: ", ")))
            ON CONFLICT (appointment_id) DO UPDATE SET \(columns.dropFirst().map { "\($0) = excluded.\($0)" }.joined(separator: ", "))
            """)
        let meta = try RawStatement(db, """
            UPDATE \(t("appointments")) SET removed = ?, last_changed_at = ?, last_synced_at = ?, version = ?, last_seq = ?
            WHERE appointment_id = ?
            """)
        let unlink = try RawStatement(db, "DELETE FROM \(t("appointment_patients")) WHERE appointment_id = ?")
        let link = try RawStatement(db, """
            INSERT OR IGNORE INTO \(t("appointment_patients")) (appointment_id, patient_id, organization_id, role) VALUES (?, ?, ?, ?)
            """)
        for s in ordered where !s.ops.isEmpty {
            let id = s.id
            // The row as stored, then every operation replayed on it as the one-by-one fold runs it in SQL.
            var exists = false
            var firstSeen = "", lastChanged = "", lastSynced = ""
            var version = 0
            var removed = false
            var lastSeq: Int64 = 0
            if mayExist(id) {
                prior.bind(1, id)
                exists = try prior.first { r in
                    firstSeen = r.text(0)
                    version = Int(r.int(1))
                    removed = r.int(2) != 0
                    lastChanged = r.text(3)
                    lastSynced = r.text(4)
                    lastSeq = r.int(5)
                    return true
                } ?? false
            }
            // Rows of appointment_patients exist only beside a row of appointments.
            let stored = exists
            var changed = false
            for op in s.ops {
                switch op {
                case .observed(let at, let seq):
                    if !exists { firstSeen = at }
                    version = exists ? version + 1 : 1
                    exists = true
                    removed = false
                    lastChanged = at
                    lastSynced = at
                    lastSeq = Int64(seq)
                    changed = true
                case .removed(let at, let seq):
                    guard exists else { continue }
                    removed = true
                    lastChanged = at
                    lastSynced = at
                    version += 1
                    lastSeq = Int64(seq)
                    changed = true
                case .synced(let at):
                    guard exists else { continue }
                    lastSynced = at
                    changed = true
                }
            }
            guard changed else { continue }
            appointmentsWritten += 1
            if let o = s.last {
                let f = o.facts
                object.bind(1, id)
                object.bind(2, o.hash)
                object.bind(3, AppointmentsProjection.clientIdsText(f))
                object.bind(4, f.startMillis)
                try object.run()
                let members = RosterMembership.members(of: f) { clients[$0] }
                let primary = members.first
                let provider = f.practitionerId.flatMap { providers[$0] }
                row.bind(1, f.appointmentId)
                row.bind(2, primary?.organizationId)
                row.bind(3, primary?.patientId)
                row.bind(4, f.intakeqClientId)
                row.bind(5, f.clientName)
                row.bind(6, f.practitionerId)
                row.bind(7, f.practitionerName)
                row.bind(8, provider)
                row.bind(9, f.serviceName)
                row.bind(10, f.status)
                row.bind(11, f.intakeqStatus)
                row.bind(12, f.startAt)
                row.bind(13, f.endAt)
                row.bind(14, f.durationMinutes)
                row.bind(15, f.locationId)
                row.bind(16, f.locationName)
                row.bind(17, f.placeOfService)
                row.bind(18, f.visitType)
                row.bind(19, f.meeting?.url)
                row.bind(20, removed)
                row.bind(21, firstSeen)
                row.bind(22, lastChanged)
                row.bind(23, lastSynced)
                row.bind(24, version)
                row.bind(25, lastSeq)
                try row.run()
                if stored {
                    unlink.bind(1, id)
                    try unlink.run()
                }
                for m in members {
                    link.bind(1, id)
                    link.bind(2, m.patientId)
                    link.bind(3, m.organizationId)
                    link.bind(4, m.role)
                    try link.run()
                }
            } else {
                meta.bind(1, removed)
                meta.bind(2, lastChanged)
                meta.bind(3, lastSynced)
                meta.bind(4, version)
                meta.bind(5, lastSeq)
                meta.bind(6, id)
                try meta.run()
            }
        }
    }

    private func writeMeetings(_ ordered: [Pending], _ db: Database) throws {
        let table = t("appointment_meeting_urls")
        let current = try RawStatement(db, "SELECT meeting_url, url_provider, source_field, changed_at FROM \(table) WHERE appointment_id = ?")
        let put = try RawStatement(db, """
            INSERT INTO \(table) (appointment_id, meeting_url, url_provider, source_field, changed_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (appointment_id) DO UPDATE SET meeting_url = excluded.meeting_url, url_provider = excluded.url_provider,
              source_field = excluded.source_field, changed_at = excluded.changed_at
            """)
        let drop = try RawStatement(db, "DELETE FROM \(table) WHERE appointment_id = ?")
        for s in ordered where !s.links.isEmpty {
            let id = s.id
            var row: Link?
            var known = false
            var stored = mayExist(id)
            for l in s.links {
                guard let url = l.url else {
                    row = nil
                    known = true
                    continue
                }
                if !known {
                    if stored {
                        current.bind(1, id)
                        row = try current.first { Link(url: $0.text(0), provider: $0.text(1), source: $0.text(2), at: $0.text(3)) }
                        stored = row != nil
                    }
                    known = true
                }
                if row?.url == url {
                    row?.provider = l.provider
                    row?.source = l.source
                } else {
                    row = l
                }
            }
            if let row, let url = row.url {
                put.bind(1, id)
                put.bind(2, url)
                put.bind(3, row.provider)
                put.bind(4, row.source)
                put.bind(5, row.at)
                try put.run()
            } else if stored {
                drop.bind(1, id)
                try drop.run()
            }
        }
    }

    private func writeLocations(_ ordered: [Pending], _ db: Database) throws {
        var addresses: [String: String?] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT location_id, address FROM \(t("locations_settings"))") {
            addresses[row[0]] = .some(row[1])
        }
        let put = try RawStatement(db, """
            INSERT INTO \(t("appointment_locations")) (appointment_id, location_id, location_name, address, place_of_service, visit_type)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (appointment_id) DO UPDATE SET location_id = excluded.location_id, location_name = excluded.location_name,
              address = excluded.address, place_of_service = excluded.place_of_service, visit_type = excluded.visit_type
            """)
        for s in ordered {
            guard let f = s.locationFacts else { continue }
            let address = f.locationId.flatMap { addresses[$0] ?? nil }
            put.bind(1, f.appointmentId)
            put.bind(2, f.locationId)
            put.bind(3, f.locationName)
            put.bind(4, address)
            put.bind(5, f.placeOfService)
            put.bind(6, f.visitType)
            try put.run()
        }
    }
}

/// The appointments a rebuild has written so far, so the chunked fold need not look up stored rows
/// of appointments it has not seen: the shadow tables start empty and only the fold adds
/// appointment rows. A Bloom filter over the ids' hashes (three bits each): it never says no to an
/// id it was given, and a wrong yes only costs a lookup. Its size is fixed when the rebuild starts,
/// from the events it will fold (`bits(forEvents:)`): a set of every id's hash grew with the
/// appointments, ~16 MB at 10M events and twice that while it was resized, which took a 10M-event
/// rebuild's peak RSS over the 200 MB of issue 19 (BENCHMARKS.md, stop 51).
final class KnownAppointments {
    private var words: [UInt64]
    private let mask: UInt64

    /// A filter of `bits` bits (rounded up to a power of two, at least 64, at most 2^40).
    init(bits: Int) {
        precondition(bits <= 1 << 40, "a Bloom filter of \(bits) bits")
        var n = 64
        while n < bits { n <<= 1 }
        words = [UInt64](repeating: 0, count: n / 64)
        mask = UInt64(n - 1)
    }

    /// At least four bits per event folded, between 128 KiB and 16 MiB (8 MiB at 10M events): a
    /// rebuild writes at most one appointment per event (about one per three in the benchmark's
    /// workload), so up to 2^25 events a wrong yes comes, by the end of the rebuild, for about
    /// 1 % of the new ids in the benchmark's workload and under 15 % in the worst case, one
    /// appointment per event (about 0.3 % and 5 % over the whole rebuild). Past that the filter
    /// fills up, and only the lookups it saves grow fewer.
    static func bits(forEvents events: UInt64) -> Int {
        Int(min(max(events, 1 << 18), 1 << 25)) * 4
    }

    convenience init(events: UInt64) { self.init(bits: Self.bits(forEvents: events)) }

    var sizeInBits: Int { words.count * 64 }

    func insert(_ id: String) {
        let (a, b) = Self.hashes(id)
        for i in 0..<UInt64(3) {
            let bit = (a &+ i &* b) & mask
            words[Int(bit >> 6)] |= 1 << (bit & 63)
        }
    }

    func contains(_ id: String) -> Bool {
        let (a, b) = Self.hashes(id)
        for i in 0..<UInt64(3) {
            let bit = (a &+ i &* b) & mask
            if words[Int(bit >> 6)] & (1 << (bit & 63)) == 0 { return false }
        }
        return true
    }

    /// Two hashes from one (Kirsch and Mitzenmacher's double hashing); the second is odd, so the
    /// three bits differ in a filter of any power-of-two size.
    private static func hashes(_ id: String) -> (UInt64, UInt64) {
        let h = UInt64(bitPattern: Int64(id.hashValue))
        return (h, (h >> 32 | h << 32) | 1)
    }
}

/// What a rebuild holds back from one chunk's write to the next (`ChunkFolder.sortForWriting`):
/// the folded state of the appointments the last chunk touched, in id order.
/// Appointments are observed again and again while they are open; written once per chunk, each
/// was written (looked up, replayed and upserted in four tables) once for every chunk it
/// appeared in. Held back while it is still being touched, it is written about once.
///
/// Only for a rebuild into empty shadow tables: a catch-up commits each chunk with its
/// checkpoint, which must mean every event up to it is in the rows.
final class CarriedAppointments {
    typealias Pending = ChunkFolder.Pending
    /// At most this many appointments are held back (the most recently touched); 0 holds none.
    let limit: Int
    /// What is held back, in id order.
    private(set) var held: [Pending] = []

    init(limit: Int) { self.limit = max(0, limit) }

    var isEmpty: Bool { held.isEmpty }

    /// Everything held back, as a segment to write now; holds nothing after.
    func takeAll() -> ChunkFolder.Segment {
        defer { held = [] }
        return ChunkFolder.Segment(ordered: held)
    }

    /// Merges what is held back into `segment` (a chunk's last segment, folded after it), holds
    /// back the appointments `segment` touched (at most `limit`, the most recently touched) and
    /// returns the rest to write now: the ones held back that `segment` did not touch, the ones
    /// over the limit, and every stream index entry (they depend on nothing else, so what is held
    /// back does not grow with them). Both sides are in id order, so they are merged in one walk
    /// (no lookups).
    func exchange(_ segment: ChunkFolder.Segment) -> ChunkFolder.Segment {
        var s = segment
        s.prepare()
        let fresh = s.ordered ?? []
        // `now`: held back and untouched by `segment`; `touched`: the rest, merged; both in id order.
        var now: [Pending] = []
        var touched: [Pending] = []
        touched.reserveCapacity(fresh.count)
        var i = 0, j = 0
        while i < held.count || j < fresh.count {
            if j == fresh.count || (i < held.count && held[i].id < fresh[j].id) {
                now.append(held[i])
                i += 1
            } else if i == held.count || fresh[j].id < held[i].id {
                touched.append(fresh[j])
                j += 1
            } else {
                held[i].append(fresh[j])
                touched.append(held[i])
                i += 1
                j += 1
            }
        }
        var keep = touched
        if limit == 0 {
            keep = []
            now = Self.merged(now, touched)
        } else if touched.count > limit {
            // The least recently touched go now: keep those touched after the `limit`th most
            // recent seq, then those touched at it, in id order, up to `limit`.
            let seqs = touched.map(\.touched).sorted(by: >)
            let cut = seqs[limit - 1]
            var room = limit - seqs[..<limit].lazy.filter { $0 > cut }.count
            keep = []
            keep.reserveCapacity(limit)
            var over: [Pending] = []
            over.reserveCapacity(touched.count - limit)
            for p in touched {
                if p.touched > cut {
                    keep.append(p)
                } else if p.touched == cut, room > 0 {
                    keep.append(p)
                    room -= 1
                } else {
                    over.append(p)
                }
            }
            now = Self.merged(now, over)
            assert(keep.count == limit)
        }
        // The stream index entries of those held back go now, under a stand-in that writes
        // nothing else (no operations, links or location).
        var stubs: [Pending] = []
        for p in keep where !p.entries.isEmpty {
            let stub = Pending(p.id)
            stub.entries = p.entries
            p.entries = []
            stubs.append(stub)
        }
        now = Self.merged(now, stubs)
        held = keep
        return ChunkFolder.Segment(entries: s.entries, ordered: now)
    }

    /// Two arrays in id order with no id in common, merged in order.
    static func merged(_ a: [Pending], _ b: [Pending]) -> [Pending] {
        guard !a.isEmpty else { return b }
        guard !b.isEmpty else { return a }
        var out: [Pending] = []
        out.reserveCapacity(a.count + b.count)
        var i = 0, j = 0
        while i < a.count, j < b.count {
            if a[i].id < b[j].id {
                out.append(a[i])
                i += 1
            } else {
                out.append(b[j])
                j += 1
            }
        }
        out += a[i...]
        out += b[j...]
        return out
    }
}

extension Result {
    /// The success value moved out (`get()` copies it, retaining each of its references), or
    /// the error thrown.
    fileprivate consuming func take() throws -> Success {
        switch consume self {
        case .success(let value): return value
        case .failure(let error): throw error
        }
    }
}
