import Foundation
import Paths
import Synchronization

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
public final class WebhookInbox: Sendable {
    public enum AddResult: String, Sendable { case accepted, duplicate }

    public let path: String
    private let state: Mutex<InboxState>

    static let retryMemoryMillis: Int64 = 86_400_000

    public convenience init(path: String) throws {
        try self.init(path: path, writeBytes: { fd, bytes in Glibc.write(fd, bytes.baseAddress, bytes.count) })
    }

    /// `writeBytes`: `write(2)` (tests pass one that fails partway, as a full disk does);
    /// `cut`: `ftruncate(2)`.
    init(path: String, writeBytes: @escaping @Sendable (Int32, UnsafeRawBufferPointer) -> Int,
         cut: @escaping @Sendable (Int32, off_t) -> Int32 = { ftruncate($0, $1) }) throws {
        self.path = path
        var s = InboxState(path: path, writeBytes: writeBytes, cut: cut)
        try s.load()
        s.fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard s.fd >= 0 else { throw InboxError("cannot open the webhook inbox \(path): \(String(cString: strerror(errno)))") }
        StoreOwnership.adopt(fd: s.fd, path: path)
        try s.fsyncDirectory()
        state = Mutex(s)
    }

    deinit { state.withLock { if $0.fd >= 0 { Glibc.close($0.fd) } } }

    /// Ids waiting.
    public var depth: Int { state.withLock { $0.pending.count } }

    /// When the oldest waiting id arrived (epoch millis).
    public var oldestReceivedAt: Int64? { state.withLock { $0.pending.first?.receivedAt } }

    /// The oldest `limit` waiting ids.
    public func next(_ limit: Int) -> [String] { state.withLock { $0.pending.prefix(limit).map(\.id) } }

    /// The oldest `limit` waiting ids not in `excluded`, and when the oldest of them arrived
    /// (epoch millis; nil when every waiting id is excluded).
    public func next(_ limit: Int, excluding excluded: Set<String>) -> (ids: [String], oldestReceivedAt: Int64?) {
        guard !excluded.isEmpty else {
            return state.withLock { s in (s.pending.prefix(limit).map(\.id), s.pending.first?.receivedAt) }
        }
        return state.withLock { s in
            var ids: [String] = []
            var oldest: Int64?
            for p in s.pending where !excluded.contains(p.id) {
                if oldest == nil { oldest = p.receivedAt }
                guard ids.count < limit else { break }
                ids.append(p.id)
            }
            return (ids, oldest)
        }
    }

    public func contains(_ id: String) -> Bool { state.withLock { $0.pendingIds.contains(id) } }

    /// Adds an id (blocking: write + fsync). Returns once the id is durable.
    public func add(id: String, bodyHash: String, now: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) throws -> AddResult {
        try state.withLock { s throws -> AddResult in
            if s.pendingIds.contains(id) {
                s.pendingHashes[id, default: []].insert(bodyHash)
                return .duplicate
            }
            if let done = s.recentDone[id + " " + bodyHash], now - done < Self.retryMemoryMillis { return .duplicate }
            try s.write("+ \(id) \(bodyHash) \(now)\n")
            s.pending.append(InboxState.Pending(id: id, receivedAt: now))
            s.pendingIds.insert(id)
            s.pendingHashes[id] = [bodyHash]
            return .accepted
        }
    }

    /// Marks ids done (blocking: write + fsync).
    public func markDone(_ ids: [String], now: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) throws {
        guard !ids.isEmpty else { return }
        try state.withLock { s throws in
            let done = Set(ids).intersection(s.pendingIds)
            guard !done.isEmpty else { return }
            try s.write(done.sorted().map { "- \($0) \(now)\n" }.joined())
            for id in done {
                for h in s.pendingHashes[id] ?? [] { s.recentDone[id + " " + h] = now }
                s.pendingHashes[id] = nil
            }
            s.pending.removeAll { done.contains($0.id) }
            s.pendingIds.subtract(done)
            if s.lines > 10_000, s.lines > 4 * (s.pending.count + s.recentDone.count) { try s.compact(now: now) }
        }
    }

    /// Already durable after each add: closing makes sure nothing is left in flight.
    public func close() {
        state.withLock {
            if $0.fd >= 0 {
                _ = fsync($0.fd)
                Glibc.close($0.fd)
                $0.fd = -1
            }
        }
    }
}

/// The inbox's memory and its file, only ever touched inside `WebhookInbox`'s mutex.
struct InboxState {
    struct Pending {
        var id: String
        var receivedAt: Int64
    }

    let path: String
    let writeBytes: @Sendable (Int32, UnsafeRawBufferPointer) -> Int
    let cut: @Sendable (Int32, off_t) -> Int32
    var fd: Int32 = -1
    /// A failed append may have left part of its line that could not be cut off: the next
    /// record starts on a line of its own.
    var tornTail = false
    /// Waiting ids, oldest first.
    var pending: [Pending] = []
    var pendingIds: Set<String> = []
    /// id → body hashes seen while it waited.
    var pendingHashes: [String: Set<String>] = [:]
    /// Body hashes of ids looked up recently → when.
    var recentDone: [String: Int64] = [:]
    var lines = 0

    init(path: String, writeBytes: @escaping @Sendable (Int32, UnsafeRawBufferPointer) -> Int,
         cut: @escaping @Sendable (Int32, off_t) -> Int32) {
        self.path = path
        self.writeBytes = writeBytes
        self.cut = cut
    }

    // MARK: File

    /// Appends `text` (whole lines) and fsyncs. A write that fails partway (a full disk) is cut
    /// back to where it began: the part it left ran into the next record, and the line holding
    /// both was dropped as malformed when the inbox was read again, taking an id acknowledged
    /// after the disk had room again with it (hostile test).
    mutating func write(_ text: String) throws {
        guard fd >= 0 else { throw InboxError("the webhook inbox is closed") }
        let end = lseek(fd, 0, SEEK_END)
        let before: off_t? = end >= 0 ? end : nil
        let bytes = Array(((tornTail ? "\n" : "") + text).utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { writeBytes(fd, UnsafeRawBufferPointer(rebasing: $0[done...])) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                if done > 0 || before == nil { cutBack(to: before) }
                throw InboxError("cannot write the webhook inbox \(path): \(reason)")
            }
            done += n
        }
        tornTail = false
        guard fsync(fd) == 0 else { throw InboxError("cannot fsync the webhook inbox \(path): \(String(cString: strerror(errno)))") }
        lines += text.reduce(0) { $1 == "\n" ? $0 + 1 : $0 }
    }

    /// Cuts the file back to `size`; when it cannot, the next record starts a new line.
    private mutating func cutBack(to size: off_t?) {
        if let size, cut(fd, size) == 0 { return }
        tornTail = true
    }

    /// Why the inbox at `path` cannot be read, as a server starting now would say it; nil when
    /// it can (or is not there yet).
    static func unreadable(path: String) -> String? {
        do {
            _ = try contents(path)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// The inbox file's bytes, nil when there is none; what `load` refuses is thrown.
    static func contents(_ path: String) throws -> Data? {
        // Only a regular file is read: reading a FIFO put there waited for a writer, and serve
        // never started (hostile test); the file is opened without following a link below.
        // (`attributesOfItem` does not follow a link.)
        guard let type = (try? FileManager.default.attributesOfItem(atPath: path))?[.type] as? FileAttributeType else {
            guard FileManager.default.fileExists(atPath: path) || (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) != nil else { return nil }
            throw InboxError("cannot read the webhook inbox \(path)")
        }
        guard type == .typeRegular else {
            let what = type == .typeSymbolicLink ? "a symbolic link" : type == .typeDirectory ? "a directory" : "not a regular file"
            throw InboxError("the webhook inbox \(path) is \(what): move it away, and serve makes a new one")
        }
        // A file that cannot be read is not taken for an empty one: its waiting ids would be lost.
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InboxError("cannot read the webhook inbox \(path): permission denied")
        }
        return data
    }

    mutating func load() throws {
        guard let data = try Self.contents(path) else { return }
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

    mutating func compact(now: Int64) throws {
        var text = ""
        for (key, at) in recentDone where now - at < WebhookInbox.retryMemoryMillis {
            text += "= \(key.replacingOccurrences(of: " ", with: "+")) \(at)\n"
        }
        recentDone = recentDone.filter { now - $0.value < WebhookInbox.retryMemoryMillis }
        for p in pending {
            for h in pendingHashes[p.id] ?? [] { text += "+ \(p.id) \(h) \(p.receivedAt)\n" }
        }
        let tmp = path + ".tmp"
        let t = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard t >= 0 else { throw InboxError("cannot compact the webhook inbox: \(String(cString: strerror(errno)))") }
        StoreOwnership.adopt(fd: t, path: tmp)
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

    func fsyncDirectory() throws {
        let dir = parentDirectory(of: path)
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
