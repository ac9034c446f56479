/// SplitMix64: tiny, fast, the same sequence on every machine for a seed, so a failing
/// randomized test (or benchmark workload, or crash-harness run) can be replayed from the
/// seed it printed.
public struct SeededRNG: RandomNumberGenerator, Sendable {
    public var state: UInt64

    /// Starts from `state` as given (the tests' and the crash harness's convention).
    public init(state: UInt64) { self.state = state }

    /// Starts one step further on (the benchmark's convention: `SeededRNG(seed: s)` yields
    /// the same sequence as `SeededRNG(state: s &+ 0x9E37_79B9_7F4A_7C15)`).
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in 0..<n (0 when n < 1); slightly biased, which a workload does not mind.
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }

    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }

    /// `count` lowercase hex digits.
    public mutating func hex(_ count: Int) -> String {
        var s = ""
        while s.count < count {
            let digits = String(next(), radix: 16)
            s += String(repeating: "0", count: 16 - digits.count) + digits
        }
        return String(s.prefix(count))
    }
}
