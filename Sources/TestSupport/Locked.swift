import Synchronization

/// A value behind a `Synchronization.Mutex`, in a class so that closures and tasks can share
/// it. The one lock box of the tests and tools; product code stores a `Mutex` directly.
/// Sendable without `@unchecked`: `Mutex` is Sendable and `Value` must be too.
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: Value) { mutex = Mutex(value) }

    public func withLock<R: Sendable, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try mutex.withLock { (value: inout sending Value) throws(E) -> sending R in try body(&value) }
    }

    /// The current value (a copy).
    public var value: Value {
        get { mutex.withLock { $0 } }
        set { mutex.withLock { $0 = newValue } }
    }
}
