/// FNV-1a 64 over bytes: how the crash harness names a batch's content and the tests compare it
/// (enough to tell batches apart; not a security hash). `seed` chains several byte runs.
public func fnv1a(_ bytes: some Sequence<UInt8>, _ seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
    var h = seed
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return h
}
