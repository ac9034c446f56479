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
                    if k.escaped {
                        switch try s.decodedKey(k) {
                        case "object": name = .object
                        case "content_hash": name = .contentHash
                        default: name = nil
                        }
                    } else if s.key(k, is: "object") {
                        name = .object
                    } else if s.key(k, is: "content_hash") {
                        name = .contentHash
                    } else {
                        name = nil
                    }
                    switch name {
                    case .object:
                        out.fields = try AppointmentFields.scan(&s, depth: 1)
                    case .contentHash:
                        if let r = try s.plainString(depth: 1) {
                            out.contentHash = .bytes(data, r)
                        } else {
                            out.contentHash = try s.scalar(depth: 1).stringValue.map(DeferredText.string)
                        }
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

    enum Top { case object, contentHash }
}

/// Text kept as a range of bytes already in memory until it is needed (most observations in a
/// chunk are superseded before the chunk is written), or as a string.
enum DeferredText {
    case bytes([UInt8], Range<Int>)
    case string(String)

    var string: String {
        switch self {
        case .bytes(let b, let r): return String(decoding: b[r], as: UTF8.self)
        case .string(let s): return s
        }
    }
}
