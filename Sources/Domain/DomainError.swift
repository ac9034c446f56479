/// A rule of the domain could not be applied to the data it was given (for example an
/// appointment object without an `Id`).
public struct DomainError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
