import CChecksum

/// Where `needle` first occurs in `hay` (memmem), or nil. For readers that test stored bytes for
/// a marker before parsing them.
public func firstOffset(of needle: UnsafeRawBufferPointer, in hay: UnsafeRawBufferPointer) -> Int? {
    let n = syncledger_find(hay.baseAddress, hay.count, needle.baseAddress, needle.count)
    return n < 0 ? nil : n
}
