import Dispatch
import Foundation

/// SIGINT and SIGTERM turned into a request to stop, instead of the default sudden death: the
/// command finishes what must be finished (a sync records its run as failed, "interrupted"; a
/// rebuild drops its shadow tables) and exits 128 + the signal (130, 143). A second signal
/// ends the process at once (the log is crash-safe; a sync left in progress is then reported
/// as died by `status`).
///
/// Kept apart from the commands so that it can move with the sync session.
final class Interrupts: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`.
    private let lock = NSLock()
    private var sources: [any DispatchSourceSignal] = []
    private var handler: (@Sendable () -> Void)?
    private var received: Int32?

    /// Starts watching SIGINT and SIGTERM.
    static func watch() -> Interrupts {
        let watcher = Interrupts()
        for number in [SIGINT, SIGTERM] {
            Glibc.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak watcher] in watcher?.fire(number) }
            source.resume()
            watcher.sources.append(source)
        }
        return watcher
    }

    /// The first signal received, if any.
    var receivedSignal: Int32? { lock.withLock { received } }

    /// The exit status for an interrupted command: 128 + the signal (130 SIGINT, 143 SIGTERM).
    var exitCode: Int32? { receivedSignal.map { 128 + $0 } }

    /// True once a signal arrived (for synchronous loops to poll).
    var requested: Bool { receivedSignal != nil }

    /// Calls `body` on the first signal (at once if one already arrived).
    func onSignal(_ body: @escaping @Sendable () -> Void) {
        let already: Bool = lock.withLock {
            handler = body
            return received != nil
        }
        if already { body() }
    }

    private func fire(_ number: Int32) {
        let (first, body): (Bool, (@Sendable () -> Void)?) = lock.withLock {
            if received != nil { return (false, nil) }
            received = number
            return (true, handler)
        }
        guard first else { _exit(128 + number) }
        body?()
    }

    /// Stops watching; the default actions apply again.
    func stop() {
        let all = lock.withLock { () -> [any DispatchSourceSignal] in
            let s = sources
            sources = []
            return s
        }
        for source in all { source.cancel() }
        Glibc.signal(SIGINT, SIG_DFL)
        Glibc.signal(SIGTERM, SIG_DFL)
    }
}
