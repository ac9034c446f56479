import CGCM
import Crypto

/// AES-256-GCM boxes in the combined form sealed parts are stored in (nonce ‖ ciphertext ‖ tag,
/// as swift-crypto's `AES.GCM.SealedBox.combined`), sealed and opened through `CGCM` (OpenSSL's
/// libcrypto, one cipher context per thread). Perf put swift-crypto's `AES.GCM.seal` at ~18 % of
/// sealing's CPU, most of it around the cipher: a context allocated and keyed per box, generic
/// `DataProtocol` code, `Data` copies. The boxes are the same; either library opens the other's.
///
/// A thread's context keeps the expanded key of the last box it sealed or opened until its next
/// box, as `KeyRing` keeps the keys it read: in memory only, never written anywhere.
enum GCM {
    static let nonceCount = 12
    static let tagCount = 16

    /// The combined box of `plain` under `key`, `aad` authenticated. `nonce`: 12 bytes, used once;
    /// a fresh random one when nil.
    static func seal(_ plain: [UInt8], key: SymmetricKey, nonce: ArraySlice<UInt8>?, aad: [UInt8]) throws -> [UInt8] {
        let nonce = nonce ?? ArraySlice(AES.GCM.Nonce().withUnsafeBytes { Array($0) })
        precondition(nonce.count == nonceCount, "a GCM nonce is 12 bytes")
        guard key.bitCount == 256 else { throw LedgerError("a patient key of \(key.bitCount / 8) bytes: AES-256 keys are 32 bytes (the key store was altered)") }
        let total = nonceCount + plain.count + tagCount
        var failed = false
        let box = [UInt8](unsafeUninitializedCapacity: total) { out, count in
            _ = out.initialize(from: nonce)
            failed = key.withUnsafeBytes { k in
                nonce.withUnsafeBufferPointer { n in
                    aad.withUnsafeBufferPointer { a in
                        plain.withUnsafeBufferPointer { p in
                            syncledger_gcm_seal(k.baseAddress!.assumingMemoryBound(to: UInt8.self), n.baseAddress, a.baseAddress, a.count,
                                                p.baseAddress, p.count, out.baseAddress! + nonceCount)
                        }
                    }
                }
            } != 0
            count = failed ? nonceCount : total
        }
        if failed { throw LedgerError("AES-GCM sealing failed in libcrypto (out of memory?)") }
        return box
    }

    /// `seal`'s box written at `out` (room for `nonceCount + plain.count + tagCount` bytes), its
    /// additional data and plaintext given where they lie.
    static func seal(_ plain: UnsafeBufferPointer<UInt8>, key: SymmetricKey, nonce: ArraySlice<UInt8>?,
                     aad: UnsafeBufferPointer<UInt8>, into out: UnsafeMutablePointer<UInt8>) throws {
        let nonce = nonce ?? ArraySlice(AES.GCM.Nonce().withUnsafeBytes { Array($0) })
        precondition(nonce.count == nonceCount, "a GCM nonce is 12 bytes")
        guard key.bitCount == 256 else { throw LedgerError("a patient key of \(key.bitCount / 8) bytes: AES-256 keys are 32 bytes (the key store was altered)") }
        nonce.withUnsafeBufferPointer { n in _ = UnsafeMutableBufferPointer(start: out, count: nonceCount).initialize(from: n) }
        let failed = key.withUnsafeBytes { k in
            nonce.withUnsafeBufferPointer { n in
                syncledger_gcm_seal(k.baseAddress!.assumingMemoryBound(to: UInt8.self), n.baseAddress, aad.baseAddress, aad.count,
                                    plain.baseAddress, plain.count, out + nonceCount)
            }
        } != 0
        if failed { throw LedgerError("AES-GCM sealing failed in libcrypto (out of memory?)") }
    }

    /// The plaintext of a combined box, or nil when it is too short or does not open with `key`
    /// and `aad` (altered, or another key).
    static func open(_ combined: UnsafeRawBufferPointer, key: SymmetricKey, aad: [UInt8]) -> [UInt8]? {
        aad.withUnsafeBytes { open(combined, key: key, aad: $0) }
    }

    /// `open`, the authenticated data given where it lies.
    static func open(_ combined: UnsafeRawBufferPointer, key: SymmetricKey, aad: UnsafeRawBufferPointer) -> [UInt8]? {
        let length = combined.count - nonceCount - tagCount
        guard length >= 0, let base = combined.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
        var opened = false
        let plain = [UInt8](unsafeUninitializedCapacity: length) { out, count in
            opened = key.withUnsafeBytes { k in
                guard k.count == 32 else { return false }
                let a = aad.bindMemory(to: UInt8.self)
                return syncledger_gcm_open(k.baseAddress!.assumingMemoryBound(to: UInt8.self), base, a.baseAddress, a.count,
                                           base + nonceCount, length, base + nonceCount + length,
                                           out.baseAddress ?? UnsafeMutablePointer(mutating: base)) == 0
            }
            // What a failed open wrote is not plaintext to keep.
            if opened { count = length } else { out.initialize(repeating: 0); count = 0 }
        }
        return opened ? plain : nil
    }
}
