import Domain
import JSONCore
import Ledger

/// What the chunked fold reads from an `appointment.discovered`/`changed` event's data, in one
/// pass over its bytes (`scan`): the fields of `object` (`AppointmentFields.scan`, no
/// `JSONValue`) and where `content_hash` is. The bytes are checked exactly as
/// `FastJSON.parse` checks them. Equivalent to `partialDataValue(keeping: appointmentDataFilter)`
/// followed by `AppointmentFacts(object: data["object"])` and `data["content_hash"]?.stringValue`
/// (`AppointmentScanTests`).
struct AppointmentEventScan {
    /// The last `object` key's value; nil when data is not an object or has no `object`.
    var fields: AppointmentFields?
    /// The last `content_hash` key's value as text (`stringValue`), nil when it has none.
    var contentHash: DeferredText?
    /// The last `appointment_id` key's value as text (`stringValue`), nil when it has none.
    var appointmentId: String?
    /// Where the last `sealed` key's value is in the data (sealed personal data's parts).
    var sealed: Range<Int>?
    /// That key was spelled with an escape (`"seal\u0065d"`): its bytes alone do not name a
    /// `sealed` key, which readers go by (`DeferredOpening.maySeal`).
    var sealedKeyEscaped = false

    /// Scans `data`; throws `FastJSON.ParseError` for bytes `FastJSON.parse` rejects.
    static func scan(_ data: [UInt8]) throws -> AppointmentEventScan {
        try data.withUnsafeBufferPointer { buf in
            var out = AppointmentEventScan()
            var s = JSONScanner(buf)
            if try s.beginObject(depth: 0) {
                var first = true
                while let k = try s.nextKey(first: first) {
                    first = false
                    let name: Top?
                    var escapedSealed = false
                    if k.escaped {
                        switch try s.decodedKey(k) {
                        case "object": name = .object
                        case "content_hash": name = .contentHash
                        case "appointment_id": name = .appointmentId
                        case "sealed":
                            name = .sealed
                            escapedSealed = true
                        default: name = nil
                        }
                    } else if s.key(k, is: "object") {
                        name = .object
                    } else if s.key(k, is: "content_hash") {
                        name = .contentHash
                    } else if s.key(k, is: "appointment_id") {
                        name = .appointmentId
                    } else if s.key(k, is: "sealed") {
                        name = .sealed
                    } else {
                        name = nil
                    }
                    switch name {
                    case .object:
                        out.fields = try AppointmentFields.scan(&s, depth: 1)
                    case .contentHash:
                        if let r = try s.plainString(depth: 1) {
                            out.contentHash = InlineText(UnsafeBufferPointer(rebasing: buf[r])).map(DeferredText.inline)
                                ?? .string(String(decoding: buf[r], as: UTF8.self))
                        } else {
                            out.contentHash = try s.scalar(depth: 1).stringValue.map(DeferredText.string)
                        }
                    case .appointmentId:
                        out.appointmentId = try s.stringValue(depth: 1)
                    case .sealed:
                        let start = s.offset
                        try s.skipValue(depth: 1)
                        out.sealed = start..<s.offset
                        out.sealedKeyEscaped = escapedSealed
                    case nil:
                        try s.skipValue(depth: 1)
                    }
                }
            } else {
                try s.skipValue(depth: 0)
            }
            try s.finish()
            return out
        }
    }

    enum Top { case object, contentHash, appointmentId, sealed }
}

/// Text kept without a `String` until it is needed (most observations in a chunk are superseded
/// before the chunk is written), or as a string.
enum DeferredText {
    /// Short text copied in place: an observation keeps no reference to its event's bytes, so
    /// a folded chunk does not hold every last observation's ~1.9 KB event until it is written.
    case inline(InlineText)
    case string(String)

    var string: String {
        switch self {
        case .inline(let t): return t.string
        case .string(let s): return s
        }
    }
}

/// Up to 64 bytes of text stored in the value itself (a SHA-256 in hex is 64 characters).
struct InlineText {
    private var count: UInt8
    private var bytes: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)

    /// Nil when `text` is longer than 64 bytes.
    init?(_ text: UnsafeBufferPointer<UInt8>) {
        guard text.count <= 64 else { return nil }
        count = UInt8(text.count)
        withUnsafeMutableBytes(of: &bytes) { out in
            if let base = text.baseAddress, !text.isEmpty { out.baseAddress!.copyMemory(from: base, byteCount: text.count) }
        }
    }

    var string: String {
        withUnsafeBytes(of: bytes) { String(decoding: $0.prefix(Int(count)), as: UTF8.self) }
    }
}
