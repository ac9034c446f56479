#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Test hook: makes the syscall layer (`Sys`) fail writes, syncs, truncations or file creation
/// for paths under a prefix, so tests can prove what a full disk or a failing device does to
/// the log. Off by default; when off the only cost is one load of `faultInjectionArmed` per
/// write/sync. Rules are scoped by path prefix so tests running in parallel on other
/// directories are never affected.
///
/// Not part of the supported API (hence the underscore): for tests and the crash harness.
public enum _FaultInjection {
    /// Which system call a rule applies to.
    public enum Operation: Sendable {
        /// `pwrite` (segment batches, index files, the LOCK pid).
        case write
        /// `fdatasync` and `fsync` (files and directories).
        case fsync
        /// `ftruncate`.
        case truncate
        /// `open` with `O_CREAT` (new segments, index files, LOCK).
        case create
    }

    /// After `after` matching calls succeed, the next `times` calls fail with `errno`
    /// (a full disk stays full: pass `Int.max`).
    public static func fail(_ operation: Operation, under path: String, after: Int = 0, times: Int = 1,
                            errno: Int32) {
        FaultInjector.shared.add(.init(operation: operation, prefix: path, skip: after, times: times, fault: .fail(errno)))
    }

    /// After `after` writes succeed, the next `times` writes write only half their bytes (at
    /// least one) and return the short count, as a nearly full disk does.
    public static func shortWrite(under path: String, after: Int = 0, times: Int = 1) {
        FaultInjector.shared.add(.init(operation: .write, prefix: path, skip: after, times: times, fault: .short))
    }

    /// After `after` writes succeed, the next write returns 0 bytes written (no progress).
    public static func zeroWrite(under path: String, after: Int = 0) {
        FaultInjector.shared.add(.init(operation: .write, prefix: path, skip: after, times: 1, fault: .zero))
    }

    /// Removes the rules for `path` (the fault is gone); returns how many faults they injected.
    @discardableResult
    public static func clear(under path: String) -> Int {
        FaultInjector.shared.remove(prefix: path)
    }

    /// Faults injected so far by the rules for `path`.
    public static func injected(under path: String) -> Int {
        FaultInjector.shared.firedCount(prefix: path)
    }
}

/// Read without the lock on the hot path: it only flips while a test arms or clears rules, and
/// a stale read merely delays a rule by one call. Everything else is under the injector's mutex.
nonisolated(unsafe) var faultInjectionArmed = false

/// The rules behind `_FaultInjection`, behind one `Mutex`.
final class FaultInjector: Sendable {
    typealias Operation = _FaultInjection.Operation

    enum Fault {
        case fail(Int32)
        case short
        case zero
    }

    struct Rule {
        var operation: Operation
        var prefix: String
        var skip: Int
        var times: Int
        var fault: Fault
        var fired = 0
    }

    private struct State {
        var rules: [Rule] = []
        var firedByPrefix: [String: Int] = [:]
    }

    static let shared = FaultInjector()

    private let state = Mutex(State())

    private init() {}

    func add(_ rule: Rule) {
        state.withLock { s in
            s.rules.append(rule)
            faultInjectionArmed = true
        }
    }

    func remove(prefix: String) -> Int {
        state.withLock { s in
            s.rules.removeAll { $0.prefix == prefix }
            faultInjectionArmed = !s.rules.isEmpty
            return s.firedByPrefix.removeValue(forKey: prefix) ?? 0
        }
    }

    func firedCount(prefix: String) -> Int {
        state.withLock { $0.firedByPrefix[prefix] ?? 0 }
    }

    /// Counts the call against every matching rule; returns the first fault due, if any.
    func check(_ operation: Operation, path: String) -> Fault? {
        state.withLock { s in
            var due: Fault?
            for i in s.rules.indices where s.rules[i].operation == operation && path.hasPrefix(s.rules[i].prefix) {
                if s.rules[i].skip > 0 {
                    s.rules[i].skip -= 1
                } else if s.rules[i].times > 0 {
                    s.rules[i].times -= 1
                    if due == nil {
                        due = s.rules[i].fault
                        s.firedByPrefix[s.rules[i].prefix, default: 0] += 1
                    }
                }
            }
            return due
        }
    }
}
