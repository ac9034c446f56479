import Crypto
import Dispatch
import Foundation
@testable import Ledger
import Synchronization
import TestSupport
import Testing

/// `GCM` (OpenSSL's libcrypto, a context per thread) against swift-crypto's `AES.GCM`, which sealed
/// every box before it and still seals the key store: the same boxes both ways, and nothing opens
/// that was altered or is opened with the wrong key or context.
@Suite struct GCMTests {
    static func bytes(_ n: Int, _ rng: inout SeededRNG) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) } }

    @Test("boxes sealed by either library open with the other, byte for byte the same box for the same nonce")
    func interoperatesWithSwiftCrypto() throws {
        var rng = SeededRNG(state: UInt64.random(in: 0...UInt64(UInt32.max)))
        print("interoperatesWithSwiftCrypto seed \(rng.state)")
        for length in [0, 1, 15, 16, 17, 300, 1_000, 4_099] + (0..<20).map({ _ in Int.random(in: 0...2_000, using: &rng) }) {
            let key = SymmetricKey(data: Self.bytes(32, &rng))
            let plain = Self.bytes(length, &rng)
            let aad = Self.bytes(Int.random(in: 0...80, using: &rng), &rng)
            let nonce = Self.bytes(12, &rng)

            let ours = try GCM.seal(plain, key: key, nonce: ArraySlice(nonce), aad: aad)
            let theirs = try AES.GCM.seal(plain, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: aad)
            #expect(ours == Array(theirs.combined!), "length \(length)")
            #expect(ours.count == 12 + length + 16)
            // Each opens the other's.
            let opened = try AES.GCM.open(AES.GCM.SealedBox(combined: ours), using: key, authenticating: aad)
            #expect(Array(opened) == plain)
            #expect(Array(theirs.combined!).withUnsafeBytes { GCM.open($0, key: key, aad: aad) } == plain)
        }
    }

    @Test("the authenticated data an observation's box is opened with, written on the stack, is aad(patient, context)")
    func appointmentAADIsTheContextsAAD() throws {
        var rng = SeededRNG(state: UInt64.random(in: 0...UInt64(UInt32.max)))
        print("appointmentAADIsTheContextsAAD seed \(rng.state)")
        let texts = ["", "p-017", "a-1", "6a3f0008000000000000072d", "Zoë 名前 🙂", "x\ny", String(repeating: "long", count: 300)]
        for n in 0..<200 {
            let patient = texts[rng.below(texts.count)], id = texts[rng.below(texts.count)]
            let onStack = PersonalData.withAppointmentAAD(patient, appointmentId: id) { Array($0) }
            #expect(onStack == PersonalData.aad(patient, "appointment/" + id), "case \(n): \(patient) \(id)")
        }
        // A box sealed as sealing seals an observation opens with it, and with no other id.
        let key = SymmetricKey(data: Self.bytes(32, &rng))
        let box = try PersonalData.sealPlain(Array(#"{"ClientName":"Ann"}"#.utf8), patient: "p-1", context: "appointment/a-1", key: key)
        let text = Array(box.utf8)
        let opened = text.withUnsafeBufferPointer { PersonalData.openBox($0, patient: "p-1", appointmentId: "a-1", key: key) }
        #expect(opened == Array(#"{"ClientName":"Ann"}"#.utf8))
        #expect(text.withUnsafeBufferPointer { PersonalData.openBox($0, patient: "p-1", appointmentId: "a-2", key: key) } == nil)
        #expect(text.withUnsafeBufferPointer { PersonalData.openBox($0, patient: "p-2", appointmentId: "a-1", key: key) } == nil)
    }

    @Test("a flipped bit anywhere, another key, another context or a short box: nothing opens")
    func refusesWhatDoesNotOpen() throws {
        var rng = SeededRNG(state: UInt64.random(in: 0...UInt64(UInt32.max)))
        print("refusesWhatDoesNotOpen seed \(rng.state)")
        let key = SymmetricKey(data: Self.bytes(32, &rng))
        let aad = Array("syncledger-personal-v1\npatient-1\nappointment/a1".utf8)
        let plain = Array(#"{"ClientName":"Blair Birch"}"#.utf8)
        let box = try GCM.seal(plain, key: key, nonce: nil, aad: aad)
        #expect(box.withUnsafeBytes { GCM.open($0, key: key, aad: aad) } == plain)
        for i in box.indices {
            var bad = box
            bad[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
            #expect(bad.withUnsafeBytes { GCM.open($0, key: key, aad: aad) } == nil, "byte \(i) flipped")
        }
        let other = SymmetricKey(data: Self.bytes(32, &rng))
        #expect(box.withUnsafeBytes { GCM.open($0, key: other, aad: aad) } == nil)
        #expect(box.withUnsafeBytes { GCM.open($0, key: key, aad: aad + [0x20]) } == nil)
        #expect(box.withUnsafeBytes { GCM.open($0, key: key, aad: []) } == nil)
        for n in [0, 1, 12, 27] {
            #expect(Array(box.prefix(n)).withUnsafeBytes { GCM.open($0, key: key, aad: aad) } == nil, "\(n) bytes")
        }
        // A key of the wrong size (an altered key file) is an error, not a crash.
        let short = SymmetricKey(data: Self.bytes(16, &rng))
        #expect(throws: LedgerError.self) { try GCM.seal(plain, key: short, nonce: nil, aad: aad) }
        #expect(box.withUnsafeBytes { GCM.open($0, key: short, aad: aad) } == nil)
        // A box of an empty plaintext is all nonce and tag, and opens to nothing.
        let empty = try GCM.seal([], key: key, nonce: nil, aad: aad)
        #expect(empty.count == 28)
        #expect(empty.withUnsafeBytes { GCM.open($0, key: key, aad: aad) } == [])
        // Two seals without a nonce given draw different ones.
        let again = try GCM.seal(plain, key: key, nonce: nil, aad: aad)
        #expect(again.prefix(12) != box.prefix(12))
    }

    @Test("threads sealing and opening at once, each with its own context, under many keys")
    func manyThreadsManyKeys() throws {
        let keys = (0..<16).map { _ in SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) } }
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for i in 0..<400 {
                let key = SymmetricKey(data: keys[(t * 7 + i) % keys.count])
                let plain = Array("thread \(t) box \(i)".utf8)
                let aad = Array("context \(i % 5)".utf8)
                guard let box = try? GCM.seal(plain, key: key, nonce: nil, aad: aad),
                    box.withUnsafeBytes({ GCM.open($0, key: key, aad: aad) }) == plain,
                    let sealed = try? AES.GCM.SealedBox(combined: box),
                    (try? AES.GCM.open(sealed, using: key, authenticating: aad)).map(Array.init) == plain
                else {
                    failures.add(1, ordering: .relaxed)
                    continue
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
    }
}
