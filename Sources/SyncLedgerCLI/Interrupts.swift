import Dispatch
import Foundation
import Synchronization

/// SIGINT and SIGTERM turned into a request to stop, instead of the default sudden death: the
/// command finishes what must be finished (a sync records its run as failed, "interrupted"; a
/// rebuild drops its shadow tables) and exits 128 + the signal (130, 143). A second signal
/// ends the process at once (the log is crash-safe; a sync left in progress is then reported
/// as died by `status`).
///
/// Kept apart from the commands so that it can move with the sync session.
final class Interrupts: Sendable {
    /// What a signal changes; the signal sources' handlers share it with the command.
    private final class Received: Sendable {
        private struct State {
            var handler: (@Sendable () -> Void)?
            var signal: Int32?
        }
        private let state = Mutex(State())

        var signal: Int32? { state.withLock { $0.signal } }

        func onSignal(_ body: @escaping @Sendable () -> Void) {
            let already: Bool = state.withLock {
                $0.handler = body
                return $0.signal != nil
            }
            if already { body() }
        }

        func fire(_ number: Int32) {
            let (first, body): (Bool, (@Sendable () -> Void)?) = state.withLock {
                if $0.signal != nil { return (false, nil) }
                $0.signal = number
                return (true, $0.handler)
            }
            guard first else {
                // Said, not silent: a second Ctrl-C (often pressed while the first is acted on)
                // ended the process with no line at all.
                let line = Array("syncledger: a second signal: stopped at once; what was committed is kept (the log is crash-safe) and the next command goes on from there\n".utf8)
                _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
                _exit(128 + number)
            }
            body?()
        }
    }

    private let received: Received
    /// Set once in `watch()`, then only cancelled. libdispatch's sources may be cancelled from
    /// any thread (their methods are thread-safe); they are just not annotated `Sendable`.
    private nonisolated(unsafe) let sources: [any DispatchSourceSignal]

    private init(received: Received, sources: [any DispatchSourceSignal]) {
        self.received = received
        self.sources = sources
    }

    /// Starts watching SIGINT and SIGTERM.
    static func watch() -> Interrupts {
        let received = Received()
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            Glibc.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { received.fire(number) }
            source.resume()
            sources.append(source)
        }
        return Interrupts(received: received, sources: sources)
    }

    /// The first signal received, if any.
    var receivedSignal: Int32? { received.signal }

    /// The exit status for an interrupted command: 128 + the signal (130 SIGINT, 143 SIGTERM).
    var exitCode: Int32? { receivedSignal.map { 128 + $0 } }

    /// True once a signal arrived (for synchronous loops to poll).
    var requested: Bool { receivedSignal != nil }

    /// Calls `body` on the first signal (at once if one already arrived).
    func onSignal(_ body: @escaping @Sendable () -> Void) { received.onSignal(body) }

    /// Stops watching; the default actions apply again. Cancelling twice is harmless.
    func stop() {
        for source in sources { source.cancel() }
        Glibc.signal(SIGINT, SIG_DFL)
        Glibc.signal(SIGTERM, SIG_DFL)
    }
}
