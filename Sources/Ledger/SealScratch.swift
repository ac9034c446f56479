import CChecksum
import Crypto
import Foundation

/// What one thread sealing many observations reuses between them: each patient's key, looked up
/// once (`KeyRing.key(for:)` takes its locks every time), and the boxes' nonces, drawn from the
/// kernel's generator a block at a time instead of one system call each (`NonceSource`). Perf had
/// the two at ~6 % and ~10 % of sealing's CPU. Also how the last objects' keys were sorted
/// (`KeyOrderMemo`), and the scanner's member stack. Not copyable: a copy would hand the same
/// nonces out twice.
struct SealScratch: ~Copyable {
    private var keys: [String: SymmetricKey] = [:]
    var nonces: NonceSource
    /// How the last 8 key layouts it had to sort were sorted (`ByteJSON.collectMembers`).
    let keyOrder = KeyOrderMemo()
    /// The scanner's member stack, kept from one observation to the next.
    var members: [ByteMember] = []
    /// The buffers and lists each observation's pieces are written into, kept likewise.
    var work = SealWork()

    /// `expected`: about how many observations will be sealed with it (the nonce block's size).
    init(expected: Int) {
        nonces = NonceSource(expected: 2 * max(1, expected))
    }

    /// The patient's key, from `lookup` the first time.
    mutating func key(_ patient: String, _ lookup: (String) throws -> SymmetricKey) throws -> SymmetricKey {
        if let k = keys[patient] { return k }
        let k = try lookup(patient)
        keys[patient] = k
        return k
    }
}

/// Random 96-bit AES-GCM nonces, drawn with getrandom(2) (the kernel's CSPRNG, as the library's
/// own nonces are) up to 4 KiB at a time; each 12 bytes are handed out once. Not copyable, so no
/// two holders can hand out the same bytes. When the kernel refuses (`next()` is then nil), the
/// box takes a nonce of its own from the library as before.
struct NonceSource: ~Copyable {
    private var buffer: [UInt8] = []
    private var used = 0
    private let block: Int

    init(expected: Int) {
        block = min(341, max(1, expected)) * 12
    }

    mutating func next() -> ArraySlice<UInt8>? {
        if used + 12 > buffer.count {
            var fresh = [UInt8](repeating: 0, count: block)
            guard fresh.withUnsafeMutableBytes({ syncledger_random($0.baseAddress, $0.count) }) == 0 else { return nil }
            buffer = fresh
            used = 0
        }
        defer { used += 12 }
        return buffer[used..<(used + 12)]
    }
}
