/// An identifier IntakeQ sends sometimes as a JSON number and sometimes as a string
/// (`ClientId`, `LocationId`, `InvoiceNumber`; INTAKEQ-API.md §7.3).
///
/// Two ids are equal when their `stringValue`s are equal, so `4127` and `"4127"` match.
/// Encoding writes the form that was received.
public enum FlexibleID: Sendable, Hashable, Codable, CustomStringConvertible,
    ExpressibleByIntegerLiteral, ExpressibleByStringLiteral
{
    case string(String)
    case number(Int64)

    /// The canonical text: the decimal digits of a number, or the string as sent.
    public var stringValue: String {
        switch self {
        case .string(let s): return s
        case .number(let n): return String(n)
        }
    }

    public var description: String { stringValue }

    public init(integerLiteral value: Int64) { self = .number(value) }
    public init(stringLiteral value: String) { self = .string(value) }

    public static func == (lhs: FlexibleID, rhs: FlexibleID) -> Bool {
        lhs.stringValue == rhs.stringValue
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(stringValue) }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int64.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let d = try? c.decode(Double.self), d.rounded() == d, abs(d) < 9e15 {
            self = .number(Int64(d))
        } else {
            throw DecodingError.typeMismatch(
                FlexibleID.self,
                .init(codingPath: decoder.codingPath, debugDescription: "expected a number or a string id")
            )
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .number(let n): try c.encode(n)
        }
    }
}
