import JSONCore

extension EventEnvelope {
    /// The data already parsed whole for this envelope (for example by opening its sealed
    /// parts), or nil. A reader that scans the bytes itself uses this value instead when it is
    /// there, as `partialDataValue` does.
    public var parsedData: JSONValue? { memo.withLock { $0.value } }
}
