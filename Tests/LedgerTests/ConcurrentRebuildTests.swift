import Dispatch
import Foundation
import Ledger
import Projections
import TestSupport
import Testing

@Suite struct ConcurrentRebuildTests {
    /// Every reader catches up, so after a schema change or a lost tail several processes decide
    /// to rebuild at once. The rebuild lock serialises them: two stores on one database file,
    /// rebuilding from two threads at the same time, leave exactly the golden rows.
    @Test func twoRebuildsAtOnceLeaveTheGoldenRows() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let first = try ProjectionStore(store: tmp.store)
        let second = try ProjectionStore(store: tmp.store)
        first.eventsPerTransaction = 1
        second.eventsPerTransaction = 1
        let errors = Locked<[String]>([])
        let store = tmp.store
        let group = DispatchGroup()
        for views in [first, second] {
            DispatchQueue.global().async(group: group) {
                do {
                    _ = try views.rebuild(names: [], try LedgerReader(store: store))
                } catch {
                    errors.withLock { $0.append("\(error)") }
                }
            }
        }
        group.wait()
        #expect(errors.value.isEmpty, "\(errors.value)")
        let reader = try LedgerReader(store: tmp.store)
        try GoldenExpect.check(try snapshot(first), reader: reader)
        #expect(FileManager.default.fileExists(atPath: tmp.store.projectionsPath + ".rebuild-lock"))
    }
}
