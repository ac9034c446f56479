/// `Status` of an appointment. IntakeQ documents five values (one L in `Canceled`);
/// anything else is kept verbatim in `.unknown` instead of being guessed.
public enum AppointmentStatus: Sendable, Hashable, RawRepresentable, CustomStringConvertible {
    case confirmed
    case waitingConfirmation
    case canceled
    case declined
    case missed
    case unknown(String)

    public init(rawValue: String) {
        switch rawValue {
        case "Confirmed": self = .confirmed
        case "WaitingConfirmation": self = .waitingConfirmation
        case "Canceled": self = .canceled
        case "Declined": self = .declined
        case "Missed": self = .missed
        default: self = .unknown(rawValue)
        }
    }

    public var rawValue: String {
        switch self {
        case .confirmed: return "Confirmed"
        case .waitingConfirmation: return "WaitingConfirmation"
        case .canceled: return "Canceled"
        case .declined: return "Declined"
        case .missed: return "Missed"
        case .unknown(let s): return s
        }
    }

    /// The five documented values (the `status` query parameter accepts these).
    public static let documented: [AppointmentStatus] = [
        .confirmed, .waitingConfirmation, .canceled, .declined, .missed,
    ]

    public var isKnown: Bool {
        if case .unknown = self { return false }
        return true
    }

    public var description: String { rawValue }
}
