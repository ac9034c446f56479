import Foundation
@testable import Ledger
import Testing

/// A recorded failure's one line reads as one sentence: the error's own full stop does not stay
/// in front of what follows it ("before seq 3.; what is served…", hostile test).
@Suite struct VerifyRecordTextTests {
    @Test func theErrorsFullStopIsNotKeptMidLine() {
        let found = VerifyRecord(at: "", head: "none", ok: false, events: 0, error: "batch CRC mismatch before seq 3.",
                                 kind: VerifyRecord.logDamage, foundBy: "rebuild", foundAt: "2026-12-07T10:00:00.000Z")
        #expect(found.summary() == "`rebuild` found the log damaged at 2026-12-07T10:00:00.000Z: batch CRC mismatch before seq 3")
        #expect(!found.failure.contains(".;"))
        let verify = VerifyRecord(at: "2026-12-07T09:00:00.000Z", head: "2:ab", ok: false, events: 2, error: "chain mismatch.")
        #expect(verify.failure.hasPrefix("the last verify (2026-12-07T09:00:00.000Z) failed: chain mismatch; damage inside the log"))
        // One stop only: an ellipsis stays, and so does a text that is nothing but a stop.
        for text in ["cut short...", "."] {
            let r = VerifyRecord(at: "t", head: "none", ok: false, events: 0, error: text)
            #expect(r.summary() == "the last verify (t) failed: \(text)")
        }
    }
}
