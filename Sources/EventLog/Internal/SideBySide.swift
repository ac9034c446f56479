import Dispatch

/// Runs two independent pieces of work at once, on two cores when the system has them (which
/// thread runs which is up to Dispatch; the caller's runs one of them), and returns when both are
/// done. For work that only reads the same bytes (a batch's compression and its chain hash), so
/// that a large append costs the longer of the two instead of their sum.
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
