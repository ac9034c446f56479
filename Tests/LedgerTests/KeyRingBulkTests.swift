import Crypto
import Dispatch
import Foundation
import Ledger
import TestSupport
import Testing

/// `KeyRing.makeKeys(for:)`: a roster's keys made together (one flush for all of them) must be
/// what `key(for:)` would have made one by one: on disk for the next opener, existing keys kept,
/// forgotten patients left without one.
@Suite struct KeyRingBulkTests {
    static func bytes(_ k: SymmetricKey) -> [UInt8] { k.withUnsafeBytes { Array($0) } }

    @Test func makeKeysMakesEveryMissingKeyOnDiskAndKeepsTheRest() throws {
        let dir = TempDir("keys-bulk")
        let path = dir.path + "/keys"
        let ring = try KeyRing.open(directory: path, create: true, environment: [:], notice: { _ in })
        let old = Self.bytes(try ring.key(for: "p-old"))
        _ = try ring.key(for: "p-gone")
        try ring.destroyKey(for: "p-gone", at: "2026-12-03T00:00:00Z")

        let fresh = (1...50).map { "p-\($0)" }
        try ring.makeKeys(for: ["p-old"] + fresh + ["p-1", "p-gone"])

        // Another opener (another process) reads every key from disk.
        let reopened = try KeyRing.open(directory: path, create: false, environment: [:])
        #expect(try reopened.existingKey(for: "p-old").map(Self.bytes) == old, "an existing key is kept")
        for p in fresh {
            let made = try #require(try reopened.existingKey(for: p), "\(p) has no key on disk")
            #expect(Self.bytes(made) == Self.bytes(try ring.key(for: p)), "\(p): the ring hands out the key on disk")
        }
        #expect(try reopened.existingKey(for: "p-gone") == nil, "a forgotten patient gets no key")
        #expect(throws: (any Error).self) { try ring.key(for: "p-gone") }

        let files = try FileManager.default.contentsOfDirectory(atPath: path + "/patients")
        #expect(files.filter { $0.hasSuffix(".key") }.count == 51)
        #expect(files.allSatisfy { $0.hasSuffix(".key") }, "temporary files left: \(files.filter { !$0.hasSuffix(".key") })")
    }

    /// A process killed between writing a key's temporary file and linking it leaves the file
    /// (a whole key, sealed): the next `makeKeys` (every sync calls it) removes those older than
    /// ten minutes, hard links to live keys included, and keeps younger ones, which another
    /// process may be about to link, and the keys themselves.
    @Test func staleTemporariesOfKilledProcessesAreRemoved() throws {
        let dir = TempDir("keys-bulk-stale")
        let path = dir.path + "/keys"
        let patients = path + "/patients"
        let ring = try KeyRing.open(directory: path, create: true, environment: [:], notice: { _ in })
        let kept = Self.bytes(try ring.key(for: "p-1"))
        let keyFile = patients + "/" + Array("p-1".utf8).map { String(format: "%02x", $0) }.joined() + ".key"
        let now = time(nil)
        func leave(_ name: String, age: Int, linkedTo: String? = nil) throws {
            let file = patients + "/" + name
            if let linkedTo {
                #expect(link(linkedTo, file) == 0)
            } else {
                #expect(FileManager.default.createFile(atPath: file, contents: Data(repeating: 7, count: 60)))
            }
            var times = [timespec(tv_sec: now - age, tv_nsec: 0), timespec(tv_sec: now - age, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, file, &times, 0) == 0)
        }
        // Killed before linking (two patients), and after linking but before removing the name.
        try leave("702d32.key.tmp-4242-17", age: 3_600)
        try leave("702d33.key.tmp-4243-18", age: 601 + 5)
        try leave("702d31.key.tmp-4244-19", age: 86_400, linkedTo: keyFile)
        // Being written by another process now, or a moment ago.
        try leave("702d34.key.tmp-4245-20", age: 0)
        try leave("702d35.key.tmp-4246-21", age: 300)

        try ring.makeKeys(for: ["p-1"])
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: patients))
        let keyName = String(keyFile.split(separator: "/").last!)
        #expect(left == [keyName, "702d34.key.tmp-4245-20", "702d35.key.tmp-4246-21"])
        let reopened = try KeyRing.open(directory: path, create: false, environment: [:])
        #expect(try reopened.existingKey(for: "p-1").map(Self.bytes) == kept)
    }

    /// A key that cannot be made (here a name too long for the file system) fails the whole call:
    /// no key linked, no temporary file left, and the ring still makes keys afterwards.
    @Test func aKeyThatCannotBeMadeLeavesNothingBehind() throws {
        let dir = TempDir("keys-bulk-fail")
        let path = dir.path + "/keys"
        let ring = try KeyRing.open(directory: path, create: true, environment: [:], notice: { _ in })
        let fine = (1...20).map { "p-\($0)" }
        let tooLong = String(repeating: "x", count: 200)  // its file name is 400 hex digits
        #expect(throws: LedgerError.self) { try ring.makeKeys(for: fine + [tooLong]) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/patients") == [])
        let reopened = try KeyRing.open(directory: path, create: false, environment: [:])
        for p in fine { #expect(try reopened.existingKey(for: p) == nil, "\(p)") }
        try ring.makeKeys(for: fine)
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/patients").count == 20)
    }

    /// Two rings on one key store (the server and cron's `sync`) making the same roster's keys at
    /// once end up with one key per patient: the later link finds the earlier key and keeps it.
    @Test func twoRingsMakingTheSameKeysAgree() throws {
        for round in 0..<10 {
            let dir = TempDir("keys-bulk-race")
            let path = dir.path + "/keys"
            let first = try KeyRing.open(directory: path, create: true, environment: [:], notice: { _ in })
            let second = try KeyRing.open(directory: path, create: false, environment: [:])
            let patients = (1...30).map { "p-\($0)" }
            let failures = Locked<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                do {
                    try (i == 0 ? first : second).makeKeys(for: i == 0 ? patients : patients.reversed())
                } catch {
                    let text = "\(error)"
                    failures.withLock { $0.append(text) }
                }
            }
            #expect(failures.withLock { $0 }.isEmpty, "round \(round): \(failures.withLock { $0 })")
            let third = try KeyRing.open(directory: path, create: false, environment: [:])
            for p in patients {
                let onDisk = try #require(try third.existingKey(for: p)).withUnsafeBytes { Array($0) }
                #expect(Self.bytes(try first.key(for: p)) == onDisk, "round \(round), \(p)")
                #expect(Self.bytes(try second.key(for: p)) == onDisk, "round \(round), \(p)")
            }
        }
    }
}
