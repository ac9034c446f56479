import Foundation
@testable import Ledger
import TestSupport
import Testing

/// A patient's key file that is there but cannot be read is said to be so, not "no key": the
/// user is not sent after the wrong --keys directory, and no new key is made in its place.
@Suite struct KeyFileTests {
    @Test func aKeyFileThatCannotBeReadIsNotAMissingKey() throws {
        let dir = TempDir("keyfile")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        #expect(try keys.existingKey(for: "p-001") == nil)
        let made = try keys.key(for: "p-001")
        let path = keys.keyPath("p-001")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        // A directory where the file was: it exists, and reading it fails (as root, a file
        // without read permission is still read; a directory never is).
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        let fresh = try KeyRing.open(directory: dir.path, create: false, environment: [:], notice: { _ in })
        for attempt in [{ _ = try fresh.existingKey(for: "p-001") }, { _ = try fresh.key(for: "p-001") },
                        { try fresh.makeKeys(for: ["p-001"]) }] {
            #expect {
                try attempt()
            } throws: { error in
                let text = "\(error)"
                return text.contains("cannot read the key file of patient p-001") && text.contains(path) && !text.contains("no key")
            }
        }
        // Put back, the same key reads again.
        try FileManager.default.removeItem(atPath: path)
        try bytes.write(to: URL(fileURLWithPath: path))
        let again = try KeyRing.open(directory: dir.path, create: false, environment: [:], notice: { _ in })
        #expect(try again.existingKey(for: "p-001") == made)
    }
}

/// `SYNCLEDGER_MASTER_KEY_FILE` set but empty (`=$FILE` with FILE unset) is refused with one
/// line, and nothing is made: read as unset, a new store got its master key beside the log.
@Suite struct EmptyMasterKeyVariableTests {
    @Test func anEmptyMasterKeyVariableIsRefusedAndMakesNothing() throws {
        let dir = TempDir("emptymaster")
        let keys = dir.path + "/keys"
        #expect {
            _ = try KeyRing.open(directory: keys, create: true, environment: [KeyRing.masterKeyEnvironment: ""], notice: { _ in })
        } throws: { error in
            "\(error)".contains("SYNCLEDGER_MASTER_KEY_FILE is set but empty")
        }
        #expect(!FileManager.default.fileExists(atPath: keys))
        // An existing store beside its own master key is refused the same way, and opens unset.
        _ = try KeyRing.open(directory: keys, create: true, environment: [:], notice: { _ in })
        #expect {
            _ = try KeyRing.open(directory: keys, create: false, environment: [KeyRing.masterKeyEnvironment: ""], notice: { _ in })
        } throws: { error in
            "\(error)".contains("SYNCLEDGER_MASTER_KEY_FILE is set but empty")
        }
        _ = try KeyRing.open(directory: keys, create: false, environment: [:], notice: { _ in })
    }
}
