import Crypto
import Dispatch
import Foundation
import Ledger
import TestSupport
import Testing

/// Two processes that open a new store at once (the server and cron's `sync`) both make its key
/// store: they must take turns, and both must end up with the one master key.
@Suite struct KeyStoreCreationTests {
    @Test func twoOpenersOfANewKeyStoreShareOneMasterKey() throws {
        for round in 0..<40 {
            let dir = TempDir("keystore-race")
            let keys = dir.path + "/keys"
            let opened = Locked<[[UInt8]]>([])
            let failures = Locked<[String]>([])
            // Several openers at once; each makes (or finds) the store, then a patient's key.
            DispatchQueue.concurrentPerform(iterations: 4) { _ in
                do {
                    let k = try KeyRing.open(directory: keys, create: true, environment: [:], notice: { _ in }).key(for: "patient-1")
                    let bytes = k.withUnsafeBytes { Array($0) }
                    opened.withLock { $0.append(bytes) }
                } catch {
                    let text = "\(error)"
                    failures.withLock { $0.append(text) }
                }
            }
            #expect(failures.withLock { $0 }.isEmpty, "round \(round): \(failures.withLock { $0 })")
            let keysOpened = opened.withLock { $0 }
            #expect(keysOpened.count == 4, "round \(round)")
            // One master key, so one patient key, and a fresh opener reads the same.
            let again = try KeyRing.open(directory: keys, create: false, environment: [:]).key(for: "patient-1").withUnsafeBytes { Array($0) }
            for k in keysOpened { #expect(k == again, "round \(round)") }
        }
    }
}
