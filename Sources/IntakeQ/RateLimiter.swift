import Foundation
import Paths
import Synchronization

/// Client-side limits (IntakeQ base plan: 10 requests/minute, 500/day).
public struct RateLimitPolicy: Sendable, Hashable {
    public var requestsPerMinute: Int
    /// Calls allowed in any rolling 24 hours; `Int.max` = no daily cap (upgraded plans).
    public var dailyBudget: Int

    public init(requestsPerMinute: Int = 10, dailyBudget: Int = 500) {
        precondition(requestsPerMinute > 0, "requestsPerMinute must be positive")
        self.requestsPerMinute = requestsPerMinute
        self.dailyBudget = dailyBudget
    }
}

/// Where the record of calls (their timestamps within the last 24 h) is kept between runs.
public protocol CallRecordStore: Sendable {
    func load() throws -> [Date]
    func save(_ calls: [Date]) throws
}

/// Keeps the record in memory only (tests, one-off runs).
public final class InMemoryCallRecord: CallRecordStore, Sendable {
    private let calls: Mutex<[Date]>
    public init(_ calls: [Date] = []) { self.calls = Mutex(calls) }
    public func load() throws -> [Date] { calls.withLock { $0 } }
    public func save(_ calls: [Date]) throws { self.calls.withLock { $0 = calls } }
}

/// The record as a JSON file (`{"version":1,"calls":["2026-11-26T03:00:12.345Z",…]}`),
/// replaced atomically: written to a temporary file with mode 0600, then renamed.
/// Conventionally `STORE/state/api-calls.json`. A missing file is an empty record.
public struct FileCallRecord: CallRecordStore {
    public let path: String

    public init(path: String) { self.path = path }

    private struct File: Codable {
        var version: Int
        var calls: [Double]  // epoch seconds, millisecond precision
    }

    /// The calls recorded; none when there is no file. A file that is not one syncledger wrote
    /// (not a regular file, a symbolic link, not the record's JSON) is one line saying so and
    /// how to start again, not Foundation's error text (hostile test: a FIFO there read as
    /// "You don't have permission", a link was followed).
    public func load() throws -> [Date] {
        func refuse(_ why: String) -> IntakeQError {
            IntakeQError(code: .callRecord, detail: "\(path) \(why); delete it to start a fresh count")
        }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            switch errno {
            case ENOENT: return []
            case ELOOP: throw refuse("is a symbolic link, which syncledger does not follow there")
            default: throw refuse("cannot be read: \(String(cString: strerror(errno)))")
            }
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { throw refuse("is not a regular file") }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw refuse("cannot be read: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            bytes += chunk[..<n]
        }
        // Times are seconds since 1970 as written (finite, before the year 2286): 1e308 read
        // back, then failed every save ("Unable to encode Double.inf"), each sync recording a
        // failed run (hostile test).
        // A record another version wrote may count differently: read as this one's, it was
        // written back as version 1 at the next save. Its version is read first, so that one
        // whose calls have another shape is named by its version (cold review).
        struct Versioned: Decodable { var version: Int }
        if let other = try? JSONDecoder().decode(Versioned.self, from: Data(bytes)), other.version != 1 {
            throw refuse("is a call record of version \(other.version), which this syncledger does not read (it reads version 1)")
        }
        guard let f = try? JSONDecoder().decode(File.self, from: Data(bytes)), f.version == 1,
              f.calls.allSatisfy({ $0.isFinite && $0 >= 0 && $0 < 1e10 }) else {
            throw refuse("is not the call record syncledger writes (JSON with the calls of the last 24 hours)")
        }
        return f.calls.map { Date(timeIntervalSince1970: $0) }
    }

    public func save(_ calls: [Date]) throws {
        let f = File(version: 1, calls: calls.map { ($0.timeIntervalSince1970 * 1000).rounded() / 1000 })
        let data = try JSONEncoder().encode(f)
        let dir = parentDirectory(of: path)
        if !dir.isEmpty, !FileManager.default.fileExists(atPath: dir) {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.ioError("create \(tmp)") }
        StoreOwnership.adopt(fd: fd, path: tmp)
        var ok = data.withUnsafeBytes { buf -> Bool in
            var done = 0
            while done < buf.count {
                let n = write(fd, buf.baseAddress! + done, buf.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                done += n
            }
            return true
        }
        if ok { ok = fsync(fd) == 0 }
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            let err = Self.ioError("write \(path)")
            unlink(tmp)
            throw err
        }
    }

    private static func ioError(_ what: String) -> IntakeQError {
        let number = errno
        var e = IntakeQError(code: .callRecord, detail: "could not \(what): \(String(cString: strerror(number)))")
        e.errno = number
        return e
    }
}

/// Rolling-window limiter: at most `requestsPerMinute` calls in any 60 s and `dailyBudget` in
/// any 24 h. `acquire()` waits (on the injected clock) for the minute window and records the
/// call in the store *before* returning, so a crash after the call still counts it.
public actor RateLimiter {
    public let policy: RateLimitPolicy
    private let clock: any IntakeQClock
    private let store: any CallRecordStore
    private var calls: [Date]
    private var loaded = false
    /// Told, before each wait for the minute window, how many seconds it will be and how many
    /// calls of the last minute fill it (calls of earlier runs in the store's record count too):
    /// a run that starts right after others can wait a minute before its first request, and
    /// said nothing while it did (hostile test).
    private var onWait: (@Sendable (_ seconds: Double, _ recentCalls: Int) -> Void)?
    /// Told when such a wait is over.
    private var onWaitEnded: (@Sendable () -> Void)?

    public func setOnWait(_ body: (@Sendable (_ seconds: Double, _ recentCalls: Int) -> Void)?,
                          ended: (@Sendable () -> Void)? = nil) {
        onWait = body
        onWaitEnded = ended
    }

    public init(policy: RateLimitPolicy = .init(), clock: any IntakeQClock = SystemClock(),
                store: any CallRecordStore = InMemoryCallRecord()) {
        self.policy = policy
        self.clock = clock
        self.store = store
        self.calls = []
    }

    private func loadIfNeeded() throws {
        guard !loaded else { return }
        calls = try store.load().sorted()
        loaded = true
    }

    private func prune(_ now: Date) {
        let cutoff = now.addingTimeInterval(-86_400)
        if let i = calls.firstIndex(where: { $0 > cutoff }) {
            if i > 0 { calls.removeFirst(i) }
        } else {
            calls.removeAll()
        }
    }

    /// Waits for a slot and records the call. Returns the seconds spent waiting for the minute
    /// window. Throws `dailyBudgetExhausted` (without waiting) when the 24 h budget is used up.
    @discardableResult
    public func acquire() async throws -> Double {
        try loadIfNeeded()
        var waited = 0.0
        while true {
            let now = clock.now()
            prune(now)
            let budget = policy.dailyBudget
            if calls.count >= budget {
                throw IntakeQError.budget(remaining: 0, budget: budget,
                                          resetsAt: calls.first.map { $0.addingTimeInterval(86_400) })
            }
            let minuteAgo = now.addingTimeInterval(-60)
            let recent = calls.filter { $0 > minuteAgo }
            if recent.count < policy.requestsPerMinute {
                calls.append(now)
                do {
                    try await Self.persist(calls, to: store)
                } catch {
                    // Not recorded, so not made: the slot goes back.
                    if let i = calls.lastIndex(of: now) { calls.remove(at: i) }
                    throw error
                }
                return waited
            }
            // The slot frees when the oldest of the last `requestsPerMinute` calls is 60 s old.
            let oldest = recent[recent.count - policy.requestsPerMinute]
            let wait = max(0.001, oldest.addingTimeInterval(60).timeIntervalSince(now))
            onWait?(wait, recent.count)
            waited += wait
            try await clock.sleep(seconds: wait)
            onWaitEnded?()
        }
    }

    /// The record's file write and fsync run on a serial queue of their own, not on the
    /// cooperative pool the actor runs on; serial, so the snapshots land in the order taken.
    private static let recordQueue = DispatchQueue(label: "intakeq.call-record")

    private static func persist(_ calls: [Date], to store: any CallRecordStore) async throws {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            recordQueue.async { done.resume(with: Result { try store.save(calls) }) }
        }
    }

    /// Calls left in the rolling 24 h window (Int.max without a daily cap).
    /// Reads the call record now, throwing when it cannot be read (the other methods then count
    /// from an empty record, and the first call fails): for a check before anything is recorded.
    /// Calls recorded more than a day ahead of the clock (made while it was set ahead) would
    /// hold the budget for longer than a day: refused too.
    public func checkRecord() throws {
        try loadIfNeeded()
        let now = clock.now()
        if let last = calls.last, last > now.addingTimeInterval(86_400) {
            throw IntakeQError(code: .callRecord, detail: "it holds calls recorded in the future (up to \(IntakeQDate.isoSeconds(last)); "
                               + "the clock was set ahead when they were made); delete the store's state/api-calls.json to start a fresh count")
        }
    }

    public func remainingToday() -> Int {
        try? loadIfNeeded()
        prune(clock.now())
        if policy.dailyBudget == Int.max { return Int.max }
        return max(0, policy.dailyBudget - calls.count)
    }

    /// When the oldest recorded call leaves the 24 h window (nil when nothing is recorded).
    public func resetsAt() -> Date? {
        try? loadIfNeeded()
        prune(clock.now())
        return calls.first.map { $0.addingTimeInterval(86_400) }
    }

    /// Calls recorded in the last 24 h.
    public func recordedCalls() -> [Date] {
        try? loadIfNeeded()
        prune(clock.now())
        return calls
    }
}
