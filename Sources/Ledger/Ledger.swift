import Crypto
import Domain
import EventLog
import Foundation
import JSONCore

/// An event to append: the ledger assigns `seq`, `id` and `at`.
public struct NewEvent: Sendable {
    public var type: EventType
    public var run: String?
    public var stream: String
    public var data: [UInt8]
    public init(type: EventType, run: String?, stream: String, data: [UInt8]) {
        self.type = type
        self.run = run
        self.stream = stream
        self.data = data
    }
}

/// The single writer of a store's log, typed. Not thread-safe: one owner serialises access.
public final class LedgerWriter {
    public let store: Store
    let log: EventLogWriter
    private var lastAtMillis: Int64
    private var uuids = UUIDSource()
    /// The JSON Lines of the batch being appended (reused).
    private var lines: [UInt8] = []
    /// The real clock; tests inject a stepping clock to prove `at` never decreases.
    private let clock: () -> Int64

    /// The one line for a log another writer holds: the lock's message ("store is locked by pid
    /// N (syncledger repair)"), how long this one waited, and what to do.
    public static func lockedLine(_ lock: String, waited: Double?) -> String {
        guard let waited else { return lock + "; retry when it is done, or pass --wait-lock SECONDS to wait for it" }
        // Not "pass --wait-lock" to one that did (cold review).
        return lock + " after waiting \(String(format: "%g", waited)) s; retry when it is done, or pass a longer --wait-lock"
    }

    /// The note a command prints once when it starts waiting for another writer's lock.
    public static func waitingLine(_ lock: String, upTo seconds: Double) -> String {
        "waiting up to \(String(format: "%g", seconds)) s for the store's writer lock: \(lock); Ctrl-C stops waiting"
    }

    /// Opens the store's log for writing. The head evidence (`state/head`) is kept unless
    /// `headEvidence` is false (benchmarks measuring its cost); a log that ends before it is
    /// refused (`Trust.lossMessage`) unless `acceptingLoss` (`syncledger repair`).
    public init(store: Store, waitLock: Double? = nil, options: LogOptions = LogOptions(),
                clock: @escaping () -> Int64 = ISOTime.nowMillis, headEvidence: Bool = true,
                acceptingLoss: Bool = false, cutting: CutRequest? = nil, onWaitingForLock: ((_ lock: String) -> Void)? = nil) throws {
        self.store = store
        self.clock = clock
        var options = options
        if headEvidence && options.headRecordPath == nil {
            try makeDirectories(store.statePath)
            options.headRecordPath = Trust.headRecordPath(store)
        }
        do {
            self.log = try EventLogWriter.open(directory: store.logPath, options: options, waitLock: waitLock,
                                               acceptingLoss: acceptingLoss, cutting: cutting, onWaitingForLock: onWaitingForLock)
        } catch let e as LogError where e.code == .lostEvents {
            throw LedgerError(e.message + "; nothing was changed. " + Trust.repairHint)
        }
        self.lastAtMillis = 0
        let head = log.head
        if head.seq > 0 {
            let reader = try EventLogReader(directory: store.logPath)
            if let last = try LedgerReader.lastEvent(reader: reader, head: head) {
                lastAtMillis = last.atMillis
            }
        }
    }

    public var head: LogHead { log.head }

    /// What opening with `cutting` moved out of the log (`EventLogWriter.cut`).
    public var cut: LogCut? { log.cut }

    /// `EventLogWriter.recordHeadDurably`.
    public func recordHeadDurably() throws { try log.recordHeadDurably() }

    /// The last event of the store's log, or nil when it is empty.
    public static func lastEvent(_ store: Store) throws -> EventEnvelope? {
        let reader = try EventLogReader(directory: store.logPath)
        return try LedgerReader.lastEvent(reader: reader, head: try reader.head())
    }

    /// Appends the events as one atomic, durable batch and returns them as stored.
    @discardableResult
    public func append(_ events: [NewEvent]) throws -> [EventEnvelope] {
        precondition(!events.isEmpty, "append needs at least one event")
        var now = clock()
        // A clock that steps back is clamped: "as of T" must stay a prefix of the log.
        if now < lastAtMillis { now = lastAtMillis }
        let at = ISOTime.format(millis: now)
        var seq = log.head.seq
        var stored: [EventEnvelope] = []
        stored.reserveCapacity(events.count)
        // The batch's JSON Lines are written straight into one reused buffer (no array per event).
        lines.removeAll(keepingCapacity: true)
        var size = 0
        for (i, e) in events.enumerated() {
            // The envelope's strings are quoted (no raw newline); the data is copied as it is.
            let hasNewline = e.data.withUnsafeBytes { !$0.isEmpty && memchr($0.baseAddress!, 10, $0.count) != nil }
            if hasNewline {
                throw LogError(code: .invalidArgument,
                               message: "event \(i) of the batch is empty or contains a '\\n': each event must be one non-empty line")
            }
            size += e.data.count + e.stream.utf8.count + (e.run?.utf8.count ?? 4) + 160
        }
        lines.reserveCapacity(size)
        for e in events {
            seq += 1
            let envelope = EventEnvelope(
                seq: seq, id: uuids.make(), type: e.type.rawValue,
                v: e.type.currentVersion, at: at, run: e.run, stream: e.stream, data: e.data)
            envelope.encode(into: &lines)
            lines.append(10)
            stored.append(envelope)
        }
        try log.append(lines: lines, count: events.count)
        lastAtMillis = now
        return stored
    }

    public func close() { log.close() }
}

/// A decoded batch: its header facts and its events, upcast to the current versions.
public struct LedgerBatch: Sendable {
    public var info: BatchInfo
    public var events: [EventEnvelope]
    /// Set when the batch was read with `deferOpening`: which events were left as stored,
    /// sealed parts unopened, and what opens them.
    public var deferred: DeferredEvents?

    public init(info: BatchInfo, events: [EventEnvelope], deferred: DeferredEvents? = nil) {
        self.info = info
        self.events = events
        self.deferred = deferred
    }

    /// What opens the batch's events left as stored (nil: none were).
    public var opening: DeferredOpening? { deferred?.opening }

    /// What opens the event at index `i`, when it was left as stored (nil: it reads as given).
    public func opening(at i: Int) -> DeferredOpening? { deferred?.opening(at: i) }
}

/// The events of a batch a reader left as stored (`LedgerReader.batches(…, deferOpening: true)`).
public struct DeferredEvents: Sendable {
    public let opening: DeferredOpening
    /// By index in the batch: left as stored.
    let left: [Bool]

    /// What opens the event at index `i`, when it was left as stored.
    public func opening(at i: Int) -> DeferredOpening? { i < left.count && left[i] ? opening : nil }
}

/// Batches of a `LedgerReader`, in order, decoded and upcast; nil after the last.
public final class LedgerBatches {
    let reader: LedgerReader
    let cursor: LogCursor
    let from: UInt64
    let through: UInt64?
    let deferOpening: Bool
    /// Only these seqs are decoded (and opened); the other lines of a batch are skipped, their
    /// bytes checked by the cursor as every batch's are (`events(at:)`).
    var wanted: Set<UInt64>?
    var finished = false

    init(reader: LedgerReader, cursor: LogCursor, from: UInt64, through: UInt64?, deferOpening: Bool) {
        self.reader = reader
        self.cursor = cursor
        self.from = from
        self.through = through
        self.deferOpening = deferOpening
    }

    public func next() throws -> LedgerBatch? {
        guard !finished, let (info, bytes) = try cursor.nextBatch() else {
            finished = true
            return nil
        }
        if let through, info.lastSeq >= through { finished = true }
        return try reader.decodeBatch(info, bytes, from: from, through: through, deferOpening: deferOpening, wanted: wanted)
    }
}

/// Reads a store's events in order, upcast. Works while a writer appends.
public final class LedgerReader {
    public let store: Store
    public let log: EventLogReader
    public let upcasters: Upcasters

    /// Reads sealed personal data (opened on the first sealed event met) and redacts v1 events.
    let privacy: ReadPrivacy

    /// `keys`: the key store to open sealed events with; when nil, the store's (`store.keysPath`)
    /// is opened on the first sealed event — an error then if it is missing or its master key wrong.
    public init(store: Store, upcasters: Upcasters = .standard, keys: KeyRing? = nil) throws {
        self.store = store
        self.upcasters = upcasters
        self.log = try EventLogReader(directory: store.logPath)
        self.privacy = ReadPrivacy(store: store, log: log, keys: keys)
    }

    public func head() throws -> LogHead { try log.head() }

    /// Calls `body` with each batch from the one containing `from` up to `through`, in order.
    /// Events before `from` or after `through` in the edge batches are left out. `body`
    /// returns false to stop early.
    public func forEachBatch(from: UInt64 = 1, through: UInt64? = nil,
                             _ body: (LedgerBatch) throws -> Bool) throws {
        let batches = try self.batches(from: from, through: through)
        while let batch = try batches.next() {
            if try !body(batch) { return }
        }
    }

    /// The batches `forEachBatch` visits, pulled one at a time (a fold that keeps its own
    /// transaction open across batches pulls them).
    ///
    /// `deferOpening`: `appointment.discovered`/`changed` events stored as v2 or later are
    /// handed over as stored, their sealed parts unopened, with the batch's `opening` to open
    /// them: a reader that needs only some of the object's fields (the views' fold) opens the
    /// parts straight into them, and the reading thread does not open every part and write the
    /// whole object again. Everything else reads as without it. One difference: of two errors in
    /// one batch (a part that does not open, then an envelope that does not decode), the later
    /// one is thrown first, by `next()`, before the earlier event is opened.
    public func batches(from: UInt64 = 1, through: UInt64? = nil, deferOpening: Bool = false) throws -> LedgerBatches {
        LedgerBatches(reader: self, cursor: try log.cursor(from: max(1, from), through: through), from: from, through: through,
                      deferOpening: deferOpening)
    }

    func decodeBatch(_ info: BatchInfo, _ bytes: [UInt8], from: UInt64, through: UInt64?,
                     deferOpening: Bool = false, wanted: Set<UInt64>? = nil) throws -> LedgerBatch {
        var events: [EventEnvelope] = []
        events.reserveCapacity(Int(info.count))
        var deferred: [Bool] = []
        if deferOpening { deferred.reserveCapacity(Int(info.count)) }
        var start = 0
        var seq = info.firstSeq
        var decoder = EnvelopeDecoder()
        while start < bytes.count {
            // The next newline, found with memchr (lines are ~2 KB).
            let i = bytes.withUnsafeBytes { p -> Int in
                guard let hit = memchr(p.baseAddress! + start, 10, p.count - start) else { return p.count }
                return p.baseAddress!.distance(to: UnsafeRawPointer(hit))
            }
            guard i < bytes.count else { break }
            if seq >= from, through.map({ seq <= $0 }) ?? true, wanted?.contains(seq) ?? true {
                let e = try decodeLine(bytes[start..<i], expectedSeq: seq, info: info, decoder: &decoder)
                let keep = deferOpening && e.v >= 2 && (e.eventType == .appointmentDiscovered || e.eventType == .appointmentChanged)
                let stored = e.v
                // Each step takes the event over (`consume`): a copy retained its seven references.
                let upcast = try upcasters.upcast(consume e)
                events.append(keep ? upcast : try privacy.reveal(consume upcast, storedVersion: stored))
                if deferOpening { deferred.append(keep) }
            }
            seq += 1
            start = i + 1
        }
        return LedgerBatch(info: info, events: events,
                           deferred: deferOpening ? DeferredEvents(opening: DeferredOpening(privacy: privacy), left: deferred) : nil)
    }

    /// Whether the log holds personal data sealed under a key store (a `"sealed":` key in an
    /// event's bytes: a sealed roster or observation). Reads batches as stored, nothing opened,
    /// until the first one: at once on a store that ever sealed (its first sync's roster), the
    /// whole log on one recorded before encryption.
    public func holdsSealedData() throws -> Bool {
        let cursor = try log.cursor(from: 1)
        while let (_, bytes) = try cursor.nextBatch() {
            if containsAnywhere(bytes, Self.sealedKey) { return true }
        }
        return false
    }

    static let sealedKey = Array("\"sealed\":".utf8)

    /// Calls `body` with each event from `from` through `through`.
    public func forEachEvent(from: UInt64 = 1, through: UInt64? = nil,
                             _ body: (EventEnvelope) throws -> Bool) throws {
        var go = true
        try forEachBatch(from: from, through: through) { batch in
            for e in batch.events where go { go = try body(e) }
            return go
        }
    }

    /// The events with these seqs (sorted), reading only the batches that hold them.
    public func events(at seqs: [UInt64]) throws -> [EventEnvelope] {
        var out: [EventEnvelope] = []
        var i = 0
        // Each seq once (a repeated one, last in its batch, was read and given twice).
        let wanted = Set(seqs)
        let sorted = wanted.sorted()
        // Only the wanted lines of a batch are decoded and opened: one appointment's history
        // wants a few events of each 1,000-event batch (all of them were decoded before).
        while i < sorted.count {
            let target = sorted[i]
            var found = false
            // Only the batch holding `target`: the next wanted seq may be far away.
            let batches = try self.batches(from: target)
            batches.wanted = wanted
            if let batch = try batches.next() {
                for e in batch.events {
                    while i < sorted.count, sorted[i] < e.seq { i += 1 }
                    if i < sorted.count, sorted[i] == e.seq {
                        out.append(e)
                        i += 1
                        found = true
                    }
                }
            }
            if !found, i < sorted.count, sorted[i] == target { i += 1 }
        }
        return out
    }

    func decodeLine(_ line: ArraySlice<UInt8>, expectedSeq: UInt64, info: BatchInfo,
                    decoder: inout EnvelopeDecoder) throws -> EventEnvelope {
        let e: EventEnvelope
        do { e = try decoder.decode(line) } catch let error as LedgerError {
            throw LedgerError("seq \(expectedSeq) in \(info.segment) at offset \(info.offset): \(error.message)")
        }
        guard e.seq == expectedSeq else {
            throw LedgerError("seq \(expectedSeq) in \(info.segment) at offset \(info.offset) says it is seq \(e.seq): the log's envelopes disagree with its batch header")
        }
        return e
    }

    /// The last event of the log (for `at` clamping), reading only the last batch.
    static func lastEvent(reader: EventLogReader, head: LogHead) throws -> EventEnvelope? {
        guard head.seq > 0 else { return nil }
        let cursor = try reader.cursor(from: head.seq, through: head.seq)
        guard let record = try cursor.next() else { return nil }
        return try EventEnvelope.decode(record.payload)
    }
}

/// SHA-256 hex of bytes.
public func sha256Hex(_ bytes: some Collection<UInt8>) -> String {
    hexString(SHA256.hash(data: Array(bytes)))
}

/// The content hash of an IntakeQ object: SHA-256 of its canonical form (keys sorted,
/// numbers normalised), so re-ordered keys or "150.0" vs "150" do not read as a change.
public func contentHash(of object: JSONValue) -> String {
    sha256Hex(Array(object.canonicalText.utf8))
}
