import Foundation
import JSONCore

// Typed `data` payloads of the event catalogue. Keys are snake_case in the log.
// The IntakeQ objects inside appointment and settings events are written by hand (see
// `AppointmentObservation.encodeData`) so their bytes stay exactly as received.

/// Stream names: one per appointment, one per sync run, and one each for the roster and settings.
public enum Streams {
    public static func appointment(_ id: String) -> String { "appointment/" + id }
    public static func syncRun(_ id: String) -> String { "sync/" + id }
    public static let roster = "roster"
    public static let settings = "practice/settings"
    public static let ledger = "ledger"
    public static func patient(_ id: String) -> String { "patient/" + id }
}

public struct DateWindow: Codable, Sendable, Hashable {
    public var start: String
    public var end: String
    public init(start: String, end: String) {
        self.start = start
        self.end = end
    }
}

/// `sync.started`
public struct SyncStarted: Codable, Sendable, Hashable {
    public var syncType: String
    public var organizationId: String?
    public var patientId: String?
    public var window: DateWindow
    public var triggeredBy: String
    public var toolVersion: String
    /// The `--now` the run used for its window (the real clock unless given).
    public var now: String
    /// A run by appointment ids (webhook runs): the ids it looks up. Absent for crawls.
    public var appointmentIds: [String]?

    enum CodingKeys: String, CodingKey {
        case syncType = "sync_type", organizationId = "organization_id", patientId = "patient_id"
        case window, triggeredBy = "triggered_by", toolVersion = "tool_version", now
        case appointmentIds = "appointment_ids"
    }

    public init(syncType: String, organizationId: String?, patientId: String?, window: DateWindow,
                triggeredBy: String, toolVersion: String, now: String, appointmentIds: [String]? = nil) {
        self.appointmentIds = appointmentIds
        self.syncType = syncType
        self.organizationId = organizationId
        self.patientId = patientId
        self.window = window
        self.triggeredBy = triggeredBy
        self.toolVersion = toolVersion
        self.now = now
    }
}

/// `roster.observed`: the scope as given to a run, with no more personal data than the roster file.
public struct RosterObserved: Codable, Sendable, Hashable {
    public struct Patient: Codable, Sendable, Hashable {
        public var id: String
        public var name: String?
        public var email: String?
        /// Normalised to a string: the roster may give a number or a string.
        public var intakeqClientId: String
        enum CodingKeys: String, CodingKey { case id, name, email, intakeqClientId = "intakeq_client_id" }
        public init(id: String, name: String?, email: String?, intakeqClientId: String) {
            self.id = id
            self.name = name
            self.email = email
            self.intakeqClientId = intakeqClientId
        }
    }
    public struct Organization: Codable, Sendable, Hashable {
        public var id: String
        public var name: String?
        public var patients: [Patient]
        public init(id: String, name: String?, patients: [Patient]) {
            self.id = id
            self.name = name
            self.patients = patients
        }
    }
    public struct Practitioner: Codable, Sendable, Hashable {
        public var intakeqId: String
        public var providerId: String
        enum CodingKeys: String, CodingKey { case intakeqId = "intakeq_id", providerId = "provider_id" }
        public init(intakeqId: String, providerId: String) {
            self.intakeqId = intakeqId
            self.providerId = providerId
        }
    }
    public var organizations: [Organization]
    public var practitioners: [Practitioner]
    /// SHA-256 of the canonical form of the two lists (and the time zone, when given); a run
    /// records the roster when this differs.
    public var rosterHash: String
    /// The practice's IANA time zone (absent in rosters without one, and in older events).
    public var timezone: String?

    enum CodingKeys: String, CodingKey { case organizations, practitioners, rosterHash = "roster_hash", timezone }

    public init(organizations: [Organization], practitioners: [Practitioner], rosterHash: String, timezone: String? = nil) {
        self.organizations = organizations
        self.practitioners = practitioners
        self.rosterHash = rosterHash
        self.timezone = timezone
    }
}

/// `appointment.discovered` and `appointment.changed`: the IntakeQ object as received.
public struct AppointmentObservation: Sendable, Hashable {
    public var appointmentId: String
    public var contentHash: String
    /// Empty for `appointment.discovered`.
    public var changedFields: [String]
    /// The minified object bytes: as received, or (when redaction or sealing removed something)
    /// the canonical text of what is left.
    public var object: [UInt8]
    /// The personal data taken out of `object`, one part per roster patient (empty: nothing sealed).
    public var sealed: [PersonalData.Part] = []

    public init(appointmentId: String, contentHash: String, changedFields: [String], object: [UInt8]) {
        self.appointmentId = appointmentId
        self.contentHash = contentHash
        self.changedFields = changedFields
        self.object = object
    }

    /// `{"appointment_id":…,"content_hash":…,"changed_fields":[…],"sealed":[…],"object":<bytes>}`
    /// (`sealed` only when something is sealed; `object` always last).
    public func encodeData(includeChangedFields: Bool) -> [UInt8] {
        // Byte by byte (the bytes the text `{"appointment_id":\(jsonQuoted(id)),…` would give).
        var out: [UInt8] = []
        out.reserveCapacity(object.count + appointmentId.utf8.count + contentHash.utf8.count + 80
                            + (includeChangedFields ? changedFields.reduce(20) { $0 + $1.utf8.count + 3 } : 0)
                            + sealed.reduce(12) { $0 + $1.box.utf8.count + $1.patient.utf8.count + 40 + $1.slots.count * 16 })
        out.append(contentsOf: Self.idKey)
        appendQuoted(&out, appointmentId)
        out.append(contentsOf: Self.hashKey)
        appendQuoted(&out, contentHash)
        if includeChangedFields {
            out.append(contentsOf: Self.changedKey)
            for (i, f) in changedFields.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendQuoted(&out, f)
            }
            out.append(UInt8(ascii: "]"))
        }
        if !sealed.isEmpty {
            out.append(contentsOf: Self.sealedKey)
            for (i, part) in sealed.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                part.encode(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
        out.append(contentsOf: Self.objectKey)
        out.append(contentsOf: object)
        out.append(UInt8(ascii: "}"))
        return out
    }

    static let idKey = Array("{\"appointment_id\":".utf8)
    static let hashKey = Array(",\"content_hash\":".utf8)
    static let changedKey = Array(",\"changed_fields\":[".utf8)
    static let sealedKey = Array(",\"sealed\":[".utf8)
    static let objectKey = Array(",\"object\":".utf8)

    /// The object's text exactly as stored in `data` written by `encodeData` (the object is its
    /// last key), without parsing; nil for data of another shape.
    public static func objectText(in data: [UInt8]) -> String? {
        let key = Array(",\"object\":".utf8)
        guard data.count > key.count + 2, data.last == UInt8(ascii: "}") else { return nil }
        var i = 0
        let limit = data.count - key.count
        while i < limit {
            if data[i] == key[0], data[i + 1] == key[1], Array(data[i..<(i + key.count)]) == key {
                let start = i + key.count
                guard data[start] == UInt8(ascii: "{"), data[data.count - 2] == UInt8(ascii: "}") else { return nil }
                return String(decoding: data[start..<(data.count - 1)], as: UTF8.self)
            }
            i += 1
        }
        return nil
    }

    public static func decode(_ e: EventEnvelope) throws -> AppointmentObservation {
        let value = try e.dataValue()
        guard let id = value["appointment_id"]?.stringValue, let object = value["object"] else {
            throw LedgerError("event \(e.seq) (\(e.type)) lacks appointment_id or object")
        }
        let changed = value["changed_fields"].flatMap { v -> [String]? in
            if case .array(let a) = v { return a.compactMap(\.stringValue) }
            return nil
        } ?? []
        return AppointmentObservation(
            appointmentId: id, contentHash: value["content_hash"]?.stringValue ?? "",
            changedFields: changed, object: Array(object.canonicalText.utf8))
    }
}

/// `appointment.removed`
public struct AppointmentRemoved: Codable, Sendable, Hashable {
    public var appointmentId: String
    /// `deleted_only` (IntakeQ listed it as deleted) or `not_found` (404 for its id).
    public var reason: String
    enum CodingKeys: String, CodingKey { case appointmentId = "appointment_id", reason }
    public init(appointmentId: String, reason: String) {
        self.appointmentId = appointmentId
        self.reason = reason
    }
}

/// `practice.settings_observed`
public struct SettingsObserved: Sendable, Hashable {
    public var contentHash: String
    public var object: [UInt8]
    public init(contentHash: String, object: [UInt8]) {
        self.contentHash = contentHash
        self.object = object
    }
    public func encodeData() -> [UInt8] {
        Array("{\"content_hash\":\(jsonQuoted(contentHash)),\"object\":".utf8) + object + [UInt8(ascii: "}")]
    }
}

public struct SyncCounts: Codable, Sendable, Hashable {
    public var new = 0
    public var updated = 0
    public var unchanged = 0
    public var removed = 0
    public var errors = 0
    public var patientsProcessed = 0
    public var patientsFailed = 0
    enum CodingKeys: String, CodingKey {
        case new, updated, unchanged, removed, errors
        case patientsProcessed = "patients_processed", patientsFailed = "patients_failed"
    }
    public init() {}
}

public struct APIUsage: Codable, Sendable, Hashable {
    public var calls = 0
    public var retries = 0
    public var rateLimitWaits = 0
    public var waitedSeconds = 0.0
    public var rateLimitHit = false
    enum CodingKeys: String, CodingKey {
        case calls, retries, rateLimitWaits = "rate_limit_waits", waitedSeconds = "waited_seconds"
        case rateLimitHit = "rate_limit_hit"
    }
    public init() {}
}

/// `sync.completed`, appended as a batch of its own so `head_before` is an anchor.
public struct SyncCompleted: Codable, Sendable, Hashable {
    public struct Observed: Codable, Sendable, Hashable {
        public var id: String
        public var hash: String
        public init(id: String, hash: String) {
            self.id = id
            self.hash = hash
        }
    }
    /// `completed`, `partial_success` or `failed`.
    public var status: String
    public var counts: SyncCounts
    public var api: APIUsage
    public var warnings: [String]
    public var errors: [String]
    public var errorMessage: String?
    public var unchanged: [Observed]
    public var headBefore: String
    public var durationMs: Int64
    /// An `automated_daily` run on a store that webhooks feed: the changes it recorded, which no
    /// webhook had brought. Absent otherwise.
    public var changesMissedByWebhooks: Int?

    enum CodingKeys: String, CodingKey {
        case status, counts, api, warnings, errors, errorMessage = "error_message", unchanged
        case headBefore = "head_before", durationMs = "duration_ms"
        case changesMissedByWebhooks = "changes_missed_by_webhooks"
    }

    public init(status: String, counts: SyncCounts, api: APIUsage, warnings: [String], errors: [String],
                errorMessage: String?, unchanged: [Observed], headBefore: String, durationMs: Int64) {
        self.status = status
        self.counts = counts
        self.api = api
        self.warnings = warnings
        self.errors = errors
        self.errorMessage = errorMessage
        self.unchanged = unchanged
        self.headBefore = headBefore
        self.durationMs = durationMs
    }
}

/// `patient.forgotten`: `forget` destroyed the patient's key. No personal data: the roster id,
/// when, and the reason given.
public struct PatientForgotten: Codable, Sendable, Hashable {
    public var patientId: String
    public var forgottenAt: String
    public var reason: String
    enum CodingKeys: String, CodingKey { case patientId = "patient_id", forgottenAt = "forgotten_at", reason }
    public init(patientId: String, forgottenAt: String, reason: String) {
        self.patientId = patientId
        self.forgottenAt = forgottenAt
        self.reason = reason
    }
}

/// `sync.abandoned`: appended by a later run for a run that started and never completed.
public struct SyncAbandoned: Codable, Sendable, Hashable {
    public var abandonedRun: String
    public var reason: String
    enum CodingKeys: String, CodingKey { case abandonedRun = "abandoned_run", reason }
    public init(abandonedRun: String, reason: String) {
        self.abandonedRun = abandonedRun
        self.reason = reason
    }
}

/// `ledger.loss_recorded`: appended by `syncledger repair --accept-loss` when the log ended before
/// a head it had acknowledged; `verify` reports it as a warning from then on.
public struct LossRecorded: Codable, Sendable, Hashable {
    /// The acknowledged head the evidence named (`SEQ:HASH`).
    public var lastKnownHead: String
    /// Where the evidence was kept (`state/head`, a view's checkpoint).
    public var evidence: String
    /// The log's head when the loss was accepted, before this event.
    public var logEndedAt: String
    public var reason: String
    /// Set when `repair --cut-damaged` cut the log at damage inside it: where, what failed there,
    /// and the directory (inside `log/`) that holds the bytes cut. Absent otherwise (and in
    /// events recorded before it existed).
    public var cut: String?
    /// The ledger's own records (`ledger.loss_recorded`, `patient.forgotten`) that the cut took
    /// out of the log, as their envelope lines, read from the bytes cut (each batch on its own:
    /// the damage broke the chain there). An earlier loss's record went with a second cut, and
    /// the log no longer said it (hostile test). Absent when the cut held none.
    public var cutHeld: [String]?
    /// How many such records read from the bytes cut are not in `cutHeld` (outside the range
    /// acknowledged, not in their form, holding personal data, or over the budget); absent when none.
    public var cutHeldNotKept: Int?
    enum CodingKeys: String, CodingKey {
        case lastKnownHead = "last_known_head", evidence, logEndedAt = "log_ended_at", reason, cut, cutHeld = "cut_held"
        case cutHeldNotKept = "cut_held_not_kept"
    }
    public init(lastKnownHead: String, evidence: String, logEndedAt: String, reason: String, cut: String? = nil,
                cutHeld: [String]? = nil, cutHeldNotKept: Int? = nil) {
        self.lastKnownHead = lastKnownHead
        self.evidence = evidence
        self.logEndedAt = logEndedAt
        self.reason = reason
        self.cut = cut
        self.cutHeld = cutHeld
        self.cutHeldNotKept = cutHeldNotKept
    }

    /// The types whose events a cut's record keeps (`cutHeld`).
    public static let heldTypes: [EventType] = [.lossRecorded, .patientForgotten]

    /// `cutHeld` in words: "the bytes cut held the record of a loss (seq 130, …) and of a
    /// forget (seq 140, patient P-12)"; nil when it held none.
    public var heldSummary: String? {
        let notKept = cutHeldNotKept.map { "\($0) more read from them \($0 == 1 ? "is" : "are") not kept (see the cut's directory)" }
        guard let held = cutHeld, !held.isEmpty else { return notKept.map { "of the ledger's records the bytes cut held, " + $0 } }
        let parts = held.map { line -> String in
            guard let e = try? EventEnvelope.decode(Array(line.utf8)) else { return "a record that no longer decodes" }
            if e.type == EventType.patientForgotten.rawValue, let f = try? e.decodeData(PatientForgotten.self) {
                return "a forget (seq \(e.seq), patient \(f.patientId))"
            }
            if e.type == EventType.lossRecorded.rawValue, let l = try? e.decodeData(LossRecorded.self) {
                return "a loss (seq \(e.seq) of \(e.at): \(l.lastKnownHead) had been acknowledged, the log ended at \(l.logEndedAt); reason: \(l.reason))"
            }
            return "\(e.type) (seq \(e.seq))"
        }
        return "the bytes cut held the record of " + parts.joined(separator: ", ") + ", kept in this record as `cut_held`"
            + (notKept.map { "; " + $0 } ?? "")
    }
}

/// Encodes a Codable payload as `data` bytes.
public func encodeData<T: Encodable>(_ value: T) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // Encoding these plain structs cannot fail.
    return Array(try! encoder.encode(value))
}
