import JSONCore

/// One appointment as IntakeQ sent it: the object's bytes (minified, as the ledger stores them),
/// its parsed value, and the few fields the sync itself must read. Everything else is read, once
/// per event, by the domain rules (`AppointmentFacts`) from `value` — so a field nothing reads
/// that changes type upstream (`"Duration": "50"`) never makes a row fail.
public struct FetchedAppointment: Sendable, Hashable {
    /// `Id` (a string, or a number's digits).
    public var id: String
    /// `ClientId`, a number or a string of digits; nil when absent or null (then no roster
    /// patient can match it).
    public var clientId: String?
    /// `StartDate`, epoch milliseconds (the window filter); nil when absent or null.
    public var startDate: Int64?
    /// `LastModified`, epoch milliseconds, read leniently (it only picks the newer of two copies
    /// of a row that shifted across pages); nil when absent or not a number.
    public var lastModified: Int64?
    /// The object as received, minified.
    public var raw: [UInt8]
    /// `raw`, parsed.
    public var value: JSONValue

    /// Parses one minified object (as `splitJSONArray` returns them). Only what the sync truly
    /// needs fails a row: not an object, no usable `Id` (or one holding a NUL), a `ClientId` that
    /// is neither a number nor a string, a `StartDate` that is not epoch milliseconds of the years
    /// 1–9999. (An `EndDate` out of those years is not refused: the sync does not need it, and a
    /// refused row leaves the run incomplete, without its removal lookups; the views clamp its text.)
    public static func parse(minifiedObject bytes: [UInt8]) throws -> FetchedAppointment {
        let value: JSONValue
        do {
            value = try FastJSON.parse(bytes)
        } catch let e as FastJSON.ParseError {
            throw IntakeQError.decode(e.what, offset: e.offset)
        }
        guard case .object(let o) = value else { throw IntakeQError.decode("expected an appointment object", offset: 0) }
        guard let id = idText(o["Id"]), !id.isEmpty else {
            throw IntakeQError.decode("the appointment has no Id", keyPath: "Id")
        }
        // SQLite reads a bound text up to its first NUL (GRDB and the rebuild bind strings so):
        // two ids alike up to a NUL were one row in the views, and every later sync recorded
        // them as discovered again and the cut id as removed (hostile test). The ids the views
        // look others up by are refused the same way (a practitioner's matched a roster one
        // cut at the NUL in the incremental fold, not in a rebuild: cold review). No IntakeQ
        // id holds one.
        guard !id.utf8.contains(0) else {
            throw IntakeQError.decode("the appointment's Id holds a NUL character", keyPath: "Id")
        }
        for key in ["PractitionerId", "LocationId"] {
            if case .string(let s)? = o[key], s.utf8.contains(0) {
                throw IntakeQError.decode("the appointment's \(key) holds a NUL character", keyPath: key)
            }
        }
        let clientId: String?
        switch o["ClientId"] {
        case nil, .null?: clientId = nil
        case let v?:
            guard let text = idText(v) else { throw IntakeQError.decode("ClientId is neither a number nor a string", keyPath: "ClientId") }
            clientId = text
        }
        let startDate: Int64?
        switch o["StartDate"] {
        case nil, .null?: startDate = nil
        case .number(let d)? where Self.representableMillis.contains(d): startDate = Int64(d)
        case .number?: throw IntakeQError.decode("StartDate is not a time between the years 1 and 9999", keyPath: "StartDate")
        default: throw IntakeQError.decode("StartDate is not epoch milliseconds", keyPath: "StartDate")
        }
        return FetchedAppointment(id: id, clientId: clientId, startDate: startDate,
                                  lastModified: value["LastModified"]?.int64Value, raw: bytes, value: value)
    }

    /// Parses an object in any formatting; `raw` is its minified form.
    public static func parse(json bytes: some Collection<UInt8>) throws -> FetchedAppointment {
        try parse(minifiedObject: minifyJSON(bytes))
    }

    /// Epoch milliseconds of 0001-01-01T00:00:00.000Z through 9999-12-31T23:59:59.999Z: the times
    /// the views write (`ISOTime.format`, four-digit years). Beyond them a time was written with
    /// its year cut to four digits (year 275760 as 5760, 10000 as 0000): a wrong date shown to a
    /// case manager, after a sync that said all was well (hostile test). `ISOTime.format` now
    /// clamps to those years; a StartDate beyond them is still refused, not shown as 9999.
    static let representableMillis: ClosedRange<Double> = -62_135_596_800_000 ... 253_402_300_799_999

    /// An id sent as a string or as an integral number.
    static func idText(_ v: JSONValue?) -> String? {
        switch v {
        case .string(let s)?: return s
        case .number(let d)? where d.rounded() == d && abs(d) < 9e15: return String(Int64(d))
        default: return nil
        }
    }
}
