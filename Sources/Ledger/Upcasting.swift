/// Upcasting: every read path (projections, rebuild, history, export in CSV) passes events
/// through here, so readers only ever see the current schema version of each event type.
/// An upcaster turns version `from` of one type into version `from + 1`.
public struct Upcaster: Sendable {
    public var type: String
    public var from: Int
    public var transform: @Sendable (EventEnvelope) throws -> EventEnvelope

    public init(type: String, from: Int, transform: @escaping @Sendable (EventEnvelope) throws -> EventEnvelope) {
        self.type = type
        self.from = from
        self.transform = transform
    }
}

public struct Upcasters: Sendable {
    var chain: [String: [Int: Upcaster]] = [:]
    /// The version readers expect of each type; types not listed are at 1.
    public var current: [String: Int] = [:]

    /// The upcasters this version of SyncLedger ships. `appointment.discovered`/`changed` v1 → v2
    /// is the redaction (docs/FORMAT.md, "Redaction list"): it needs the roster in force at the
    /// event, which only the reader knows, so `LedgerReader` applies it to every event stored as
    /// v1 and the chain entry here only moves the version. `roster.observed` v1 → v2: v1 is clear,
    /// which is what v2 reads as once opened.
    public static let standard = Upcasters(standardList)

    /// The chain of `standard`, for readers that add upcasters of their own to it.
    public static let standardList = [
        Upcaster(type: EventType.appointmentDiscovered.rawValue, from: 1) { $0 },
        Upcaster(type: EventType.appointmentChanged.rawValue, from: 1) { $0 },
        Upcaster(type: EventType.rosterObserved.rawValue, from: 1) { $0 },
    ]

    public init() {}

    public init(_ list: [Upcaster]) {
        for u in list {
            chain[u.type, default: [:]][u.from] = u
            current[u.type] = max(current[u.type] ?? 1, u.from + 1)
        }
    }

    public func currentVersion(of type: String) -> Int { current[type] ?? 1 }

    /// Brings an event to the current version of its type. An event newer than this code
    /// understands is an error (upgrade), not something to guess at.
    public func upcast(_ event: consuming EventEnvelope) throws -> EventEnvelope {
        let target = currentVersion(of: event.type)
        // Most events are at the current version: returned as they came, not copied.
        if event.v == target { return event }
        var e = event
        if e.v > target {
            throw LedgerError("event \(e.seq) is \(e.type) v\(e.v), newer than this syncledger reads (v\(target)); upgrade syncledger")
        }
        while e.v < target {
            guard let u = chain[e.type]?[e.v] else {
                throw LedgerError("event \(e.seq) is \(e.type) v\(e.v) and no upcaster to v\(e.v + 1) exists")
            }
            e = try u.transform(e)
            if e.v <= u.from { e.v = u.from + 1 }
        }
        return e
    }
}
