import Foundation
import Ledger
import Sync
import TestSupport
import Testing

/// When a sync may make a key store (`SyncSession.missingKeyStore`): on a new store and on one
/// recorded before encryption (nothing sealed in its log), not on one whose log holds sealed
/// data while its key store is gone or emptied (cold review: the first version refused every
/// store with events, and took an empty `keys/`).
@Suite struct MissingKeyStoreTests {
    @Test func onlyALogWithSealedDataNeedsItsKeyStore() throws {
        let tmp = TempDir("missing-keys")
        defer { tmp.remove() }
        let store = try Store.openOrCreate(tmp.path + "/store")
        #expect(try SyncSession.missingKeyStore(store) == nil, "a new store")
        let writer = try LedgerWriter(store: store)
        defer { writer.close() }
        // Recorded before encryption: events in the clear, no key store.
        let clear = #"{"sync_type":"automated_daily","triggered_by":"cron","note":"sealed","sealed?":1}"#
        _ = try writer.append([NewEvent(type: .syncStarted, run: "r1", stream: "run/r1", data: Array(clear.utf8))])
        #expect(try SyncSession.missingKeyStore(store) == nil, "a store recorded before encryption")
        // A roster sealed under a key store that is not there (nor in an empty keys/).
        let sealed = #"{"organizations":[{"id":"o1","patients":[{"id":"p-1","box":"AAAA"}]}],"sealed":true}"#
        _ = try writer.append([NewEvent(type: .rosterObserved, run: "r2", stream: "roster", data: Array(sealed.utf8))])
        let missing = try #require(try SyncSession.missingKeyStore(store))
        #expect(missing.hasPrefix("no key store at \(store.keysPath)") && missing.contains("restore it"), "\(missing)")
        try FileManager.default.createDirectory(atPath: store.keysPath, withIntermediateDirectories: true)
        #expect(try SyncSession.missingKeyStore(store) != nil, "an empty keys/")
        let named = try #require(try SyncSession.missingKeyStore(store, named: "elsewhere"))
        #expect(named.hasPrefix("--keys elsewhere: no key store there"), "\(named)")
        // With the key store in place there is nothing missing.
        _ = try KeyRing.open(directory: store.keysPath, create: true, environment: [:], notice: { _ in })
        #expect(try SyncSession.missingKeyStore(store) == nil)
    }
}
