import Logging

/// Log lines kept for a test to read (level, message and metadata, one string each).
public struct CapturingLogHandler: LogHandler {
    public let lines: Locked<[String]>
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info

    public init(lines: Locked<[String]>) { self.lines = lines }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { _, b in b }
        let text = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        lines.withLock { $0.append("\(event.level) \(event.message) \(text)") }
    }
}
