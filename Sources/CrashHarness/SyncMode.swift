/// Sync mode: not written yet.
func runSyncHarness(kills: Int, seed: UInt64, syncledger: String, fake: String, fixtures: String, roster: String,
                    maxDelay: Double, keep: Bool) -> Int32 {
    fail("sync mode is not implemented yet")
}
