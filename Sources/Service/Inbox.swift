import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The durable, de-duplicating webhook inbox: `STORE/state/webhook-inbox.log`, one line per
/// change, appended and fsync'd before the webhook gets its 200.
///
/// - `+ ID HASH MILLIS` an appointment id to look at again (HASH: SHA-256 of the webhook body)
/// - `- ID MILLIS` its lookup finished (the run that did it is in the log)
///
/// An id already waiting is not written again (IntakeQ's retries and bursts cost nothing); the
/// exact body of an id looked up in the last 24 hours is a retry of a webhook already handled and
/// is not queued again either. A torn last line (a crash mid-write, never acknowledged) is
/// ignored on load. The file is rewritten (temporary file, fsync, rename, fsync of the directory)
/// when it has grown well past what it holds.
public final class WebhookInbox: @unchecked Sendable {
    // @unchecked: every mutable field is touched only under `lock`.
    public enum AddResult: String, Sendable { case accepted, duplicate }

    struct Pending {
        var id: String
        var receivedAt: Int64
    }

    public let path: String
    private let lock = NSLock()
    private var fd: Int32 = -1
    /// Waiting ids, oldest first.
    private var pending: [Pending] = []
    private var pendingIds: Set<String> = []
    /// id → body hashes seen while it waited.
    private var pendingHashes: [String: Set<String>] = [:]
    /// Body hashes of ids looked up recently → when.
    private var recentDone: [String: Int64] = [:]
    private var lines = 0

    static let retryMemoryMillis: Int64 = 86_400_000

    public init(path: String) throws {
        self.path = path
        try load()
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw InboxError("cannot open the webhook inbox \(path): \(String(cString: strerror(errno)))") }
        try fsyncDirectory()
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Ids waiting.
    public var depth: Int { lock.withLock { pending.count } }

    /// When the oldest waiting id arrived (epoch millis).
    public var oldestReceivedAt: Int64? { lock.withLock { pending.first?.receivedAt } }

    /// The oldest `limit` waiting ids.
    public func next(_ limit: Int) -> [String] { lock.withLock { pending.prefix(limit).map(\.id) } }

    public func contains(_ id: String) -> Bool { lock.withLock { pendingIds.contains(id) } }

    /// Adds an id (blocking: write + fsync). Returns once the id is durable.
    public func add(id: String, bodyHash: String, now: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) throws -> AddResult {
        try lock.withLock {
            if pendingIds.contains(id) {
                pendingHashes[id, default: []].insert(bodyHash)
                return .duplicate
            }
            if let done = recentDone[id + " " + bodyHash], now - done < Self.retryMemoryMillis { return .duplicate }
            try write("+ \(id) \(bodyHash) \(now)\n")
            pending.append(Pending(id: id, receivedAt: now))
            pendingIds.insert(id)
            pendingHashes[id] = [bodyHash]
            return .accepted
        }
    }

    /// Marks ids done (blocking: write + fsync).
    public func markDone(_ ids: [String], now: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) throws {
        guard !ids.isEmpty else { return }
        try lock.withLock {
            let done = Set(ids).intersection(pendingIds)
            guard !done.isEmpty else { return }
            try write(done.sorted().map { "- \($0) \(now)\n" }.joined())
            for id in done {
                for h in pendingHashes[id] ?? [] { recentDone[id + " " + h] = now }
                pendingHashes[id] = nil
            }
            pending.removeAll { done.contains($0.id) }
            pendingIds.subtract(done)
            if lines > 10_000, lines > 4 * (pending.count + recentDone.count) { try compact(now: now) }
        }
    }

    /// Already durable after each add: closing makes sure nothing is left in flight.
    public func close() {
        lock.withLock {
            if fd >= 0 {
                _ = fsync(fd)
                Glibc.close(fd)
                fd = -1
            }
        }
    }

    // MARK: File

    private func write(_ text: String) throws {
        guard fd >= 0 else { throw InboxError("the webhook inbox is closed") }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw InboxError("cannot write the webhook inbox \(path): \(String(cString: strerror(errno)))")
            }
            done += n
        }
        guard fsync(fd) == 0 else { throw InboxError("cannot fsync the webhook inbox \(path): \(String(cString: strerror(errno)))") }
        lines += text.reduce(0) { $1 == "\n" ? $0 + 1 : $0 }
    }

    private func load() throws {
        guard let data = FileManager.default.contents(atPath: path) else { return }
        // A torn last line (a crash mid-write; never acknowledged) is cut off, so the next
        // record does not run into it.
        let valid = (data.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 }) ?? 0
        if valid < data.count, truncate(path, off_t(valid)) != 0 {
            throw InboxError("cannot cut the torn end of the webhook inbox \(path): \(String(cString: strerror(errno)))")
        }
        let text = String(decoding: data.prefix(valid), as: UTF8.self)
        var parts = text.split(separator: "\n", omittingEmptySubsequences: false)
        // The last piece is empty after a final newline, or a torn line never acknowledged.
        parts.removeLast()
        for line in parts {
            lines += 1
            let f = line.split(separator: " ")
            if f.count == 4, f[0] == "+", let at = Int64(f[3]) {
                let id = String(f[1])
                if pendingIds.insert(id).inserted { pending.append(Pending(id: id, receivedAt: at)) }
                pendingHashes[id, default: []].insert(String(f[2]))
            } else if f.count == 3, f[0] == "-", let at = Int64(f[2]) {
                let id = String(f[1])
                guard pendingIds.remove(id) != nil else { continue }
                for h in pendingHashes[id] ?? [] { recentDone[id + " " + h] = at }
                pendingHashes[id] = nil
                pending.removeAll { $0.id == id }
            } else if f.count == 3, f[0] == "=", let at = Int64(f[2]) {
                // A compacted memory of a handled body: "= ID+HASH MILLIS".
                recentDone[String(f[1]).replacingOccurrences(of: "+", with: " ")] = at
            }
        }
    }

    private func compact(now: Int64) throws {
        var text = ""
        for (key, at) in recentDone where now - at < Self.retryMemoryMillis {
            text += "= \(key.replacingOccurrences(of: " ", with: "+")) \(at)\n"
        }
        recentDone = recentDone.filter { now - $0.value < Self.retryMemoryMillis }
        for p in pending {
            for h in pendingHashes[p.id] ?? [] { text += "+ \(p.id) \(h) \(p.receivedAt)\n" }
        }
        let tmp = path + ".tmp"
        let t = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard t >= 0 else { throw InboxError("cannot compact the webhook inbox: \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        var ok = bytes.withUnsafeBytes { Glibc.write(t, $0.baseAddress, bytes.count) } == bytes.count
        ok = ok && fsync(t) == 0
        Glibc.close(t)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw InboxError("cannot compact the webhook inbox \(path)")
        }
        try fsyncDirectory()
        Glibc.close(fd)
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw InboxError("cannot reopen the webhook inbox \(path)") }
        lines = text.reduce(0) { $1 == "\n" ? $0 + 1 : $0 }
    }

    private func fsyncDirectory() throws {
        let dir = (path as NSString).deletingLastPathComponent
        let d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard d >= 0 else { return }
        _ = fsync(d)
        Glibc.close(d)
    }
}

public struct InboxError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ d: String) { description = d }
}
