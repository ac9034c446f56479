import Dispatch

/// Runs two independent pieces of work on two cores: `side` on a worker thread while `main`
/// runs on the caller's, and returns when both are done. For work on the same bytes that only
/// reads them (a batch's compression and its chain hash), so that a large append or read costs
/// the longer of the two instead of their sum.
enum SideBySide {
    /// Below this many bytes the hand-off to another thread costs more than it saves.
    static let minimumBytes = 64 * 1024

    static func run(_ main: () -> Void, _ side: () -> Void) {
        // Neither closure escapes: `concurrentPerform` returns only after both ran.
        withoutActuallyEscaping(main) { main in
            withoutActuallyEscaping(side) { side in
                let work = Work(main: main, side: side)
                DispatchQueue.concurrentPerform(iterations: 2) { i in
                    if i == 0 { work.main() } else { work.side() }
                }
            }
        }
    }

    /// The two closures, handed to `concurrentPerform`. Each runs exactly once, on one thread,
    /// and the caller touches nothing they write until both returned.
    private struct Work: @unchecked Sendable {
        let main: () -> Void
        let side: () -> Void
    }
}
