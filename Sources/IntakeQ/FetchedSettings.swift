import JSONCore

/// `GET /appointments/settings` as IntakeQ sent it: the object's bytes (minified, as the ledger
/// stores them) and its parsed value. The views read locations and addresses from it.
public struct FetchedSettings: Sendable, Hashable {
    public var raw: [UInt8]
    public var value: JSONValue

    /// Parses the settings object in any formatting; only a non-object fails.
    public static func parse(json bytes: some Collection<UInt8>) throws -> FetchedSettings {
        let min = minifyJSON(bytes)
        let value: JSONValue
        do {
            value = try FastJSON.parse(min)
        } catch let e as FastJSON.ParseError {
            throw IntakeQError.decode(e.what, offset: e.offset)
        }
        guard case .object = value else { throw IntakeQError.decode("expected the settings object '{'", offset: 0) }
        return FetchedSettings(raw: min, value: value)
    }
}
