import EventLog
import Foundation
import JSONCore
import Paths

/// A store directory: `STORE` marker, `log/`, `state/`, `projections.sqlite`. Owner-only
/// permissions throughout, because the log holds patient names, emails and phone numbers.
public struct Store: Sendable {
    public static let formatName = "syncledger-store"
    public static let formatVersion = 1

    public let path: String
    /// The key store (`--keys DIR`); `STORE/keys` when nil.
    public var keysDirectory: String? = nil
    public var keysPath: String { keysDirectory ?? path + "/keys" }
    public var logPath: String { path + "/log" }
    public var statePath: String { path + "/state" }
    public var projectionsPath: String { path + "/projections.sqlite" }

    /// The store directory to use: `--store`, else `$SYNCLEDGER_STORE`, else `./ledger-data`.
    public static func resolvePath(_ option: String?) -> String {
        if let option, !option.isEmpty { return option }
        if let env = ProcessInfo.processInfo.environment["SYNCLEDGER_STORE"], !env.isEmpty { return env }
        return "./ledger-data"
    }

    /// Opens an existing store. Refuses a directory without `STORE` and a newer format.
    public static func open(_ path: String) throws -> Store {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw StoreError(.noStore, "no store at \(path): run `syncledger sync` to create one, or pass --store DIR")
        }
        guard isDir.boolValue else { throw StoreError(.notADirectory, "\(path) is a file, not a SyncLedger store directory") }
        try checkMarker(path)
        try refuseLinksForRoot(path)
        return Store(path: path)
    }

    /// The entries of a store that root, working in another user's store, must not follow when
    /// they are symbolic links.
    static let fixedEntries = ["STORE", "log", "state", "keys", "projections.sqlite", "projections.sqlite-wal",
                               "projections.sqlite-shm", "projections.sqlite-journal", "projections.sqlite.rebuild-lock",
                               "log/LOCK", "log/index", "state/head", "keys/patients", "keys/forgotten"]

    /// Root in a store that belongs to another user: that user controls its directories and
    /// could put a symbolic link where a file is opened, and root would then write (create,
    /// truncate, rename, fill with a SQLite database) whatever the link names, anywhere (hostile
    /// test, stop 45: a `projections.sqlite` linked to a root-owned file was renamed aside and
    /// replaced by the views). So root refuses such a store in one line; its owner may link
    /// `projections.sqlite` elsewhere and keeps working, and root can act as the owner.
    static func refuseLinksForRoot(_ path: String) throws {
        guard geteuid() == 0 else { return }
        var st = stat()
        guard stat(path, &st) == 0, st.st_uid != 0 else { return }
        for name in fixedEntries {
            var entry = stat()
            guard lstat(path + "/" + name, &entry) == 0, entry.st_mode & S_IFMT == S_IFLNK else { continue }
            let user = getpwuid(st.st_uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(st.st_uid)"
            throw StoreError(.notAStore, "\(path)/\(name) is a symbolic link in a store that belongs to \(user): as root, syncledger "
                             + "follows no link there; run it as that user (sudo -u \(user) syncledger …)")
        }
    }

    /// Opens a store, creating it when the directory is missing or empty.
    public static func openOrCreate(_ path: String) throws -> Store {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw StoreError(.notADirectory, "\(path) is a file, not a SyncLedger store directory") }
            // A marker's temporary file left by a creator killed mid-write does not make a store.
            let contents = ((try? fm.contentsOfDirectory(atPath: path)) ?? []).filter { !$0.hasPrefix("STORE.tmp-") }
            if (!contents.isEmpty && !holdsOnlyTokens(path, contents)) || fm.fileExists(atPath: path + "/STORE") {
                try checkMarker(path)
                try refuseLinksForRoot(path)
                return Store(path: path)
            }
            try populate(path)
            return Store(path: path)
        }
        // A new store is made whole beside its final name and renamed into place, so a process
        // killed while creating it never leaves a directory that is half a store.
        let parent = parentDirectory(of: path)
        if !parent.isEmpty { try makeDirectories(parent) }
        let building = (parent.isEmpty ? "" : parent + "/") + ".\((path as NSString).lastPathComponent).creating-\(getpid())"
        try? fm.removeItem(atPath: building)
        try makeDirectories(building)
        do {
            try populate(building)
            guard rename(building, path) == 0 else {
                throw StoreError(.io, "cannot create the store directory \(path): \(String(cString: strerror(errno)))", errno: errno)
            }
        } catch {
            try? fm.removeItem(atPath: building)
            throw error
        }
        syncDirectory(parent)
        return Store(path: path)
    }

    /// True when the directory holds nothing but `state/api-tokens.json`: what `token new` left
    /// before it made the store whole (README's order, tokens before the first sync). Such a
    /// directory is made a store around its tokens file.
    private static func holdsOnlyTokens(_ path: String, _ contents: [String]) -> Bool {
        guard contents == ["state"] else { return false }
        let state = (try? FileManager.default.contentsOfDirectory(atPath: path + "/state")) ?? []
        return state == ["api-tokens.json"]
    }

    /// The text of the `STORE` marker a new store gets.
    static let markerText = "{\"format\": \"\(formatName)\", \"version\": \(formatVersion)}\n"

    /// Writes the marker and the subdirectories into an empty directory (or `holdsOnlyTokens`).
    private static func populate(_ dir: String) throws {
        _ = chmod(dir, 0o700)
        try writeFileAtomically(dir + "/STORE", Array(markerText.utf8))
        for sub in ["log", "state"] { try makeDirectories(dir + "/" + sub) }
    }

    private static func checkMarker(_ path: String) throws {
        guard let bytes = FileManager.default.contents(atPath: path + "/STORE") else {
            let marker = path + "/STORE"
            // Say what is wrong: a marker this user cannot read, or an empty directory, is not
            // "no store".
            if access(marker, F_OK) == 0 || errno == EACCES {
                if access(marker, R_OK) != 0, errno == EACCES {
                    throw StoreError(.io, "cannot read \(marker): \(String(cString: strerror(EACCES))) "
                                     + "(run syncledger as the user the store belongs to)", errno: EACCES)
                }
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: marker, isDirectory: &isDir), isDir.boolValue {
                    throw StoreError(.notAStore, "\(marker) is a directory, not a SyncLedger store marker")
                }
                throw StoreError(.io, "cannot read \(marker)")
            }
            if (try? FileManager.default.contentsOfDirectory(atPath: path))?.isEmpty == true {
                throw StoreError(.notAStore, "\(path) is an empty directory, not a store yet: `syncledger sync` makes a store there")
            }
            // A log without its marker is a store that lost one small file, not "not a store"
            // (hostile test): say what the marker holds, so it can be put back.
            if let segments = try? FileManager.default.contentsOfDirectory(atPath: path + "/log"), segments.contains(where: { $0.hasSuffix(".seg") }) {
                throw StoreError(.notAStore, "\(path) holds a log/ but no STORE file: if it is a SyncLedger store whose marker was deleted, "
                                 + "restore STORE from a backup or write it back (its whole text: \(markerText.trimmingCharacters(in: .newlines))), then run `syncledger verify`")
            }
            throw StoreError(.notAStore, "\(path) is not a SyncLedger store (it has no STORE file); pass --store with a store directory or an empty one")
        }
        guard case .object(let o)? = try? FastJSON.parse(Array(bytes)), o["format"]?.stringValue == formatName,
            let version = o["version"]?.int64Value
        else { throw StoreError(.notAStore, "\(path)/STORE is not a SyncLedger store marker") }
        if version > Int64(formatVersion) {
            throw StoreError(.newerVersion, "the store at \(path) has format version \(version), newer than this syncledger understands (\(formatVersion)); upgrade syncledger")
        }
    }

    init(path: String) { self.path = path }

    public var hasLog: Bool { FileManager.default.fileExists(atPath: logPath) }
}

/// Why a file given to the program (a roster, the API key file, a secret) could not be read, in
/// words that finish "FILE …": "does not exist", "is a directory", "cannot be read: Permission
/// denied", "is larger than 4096 bytes (is it the right file?)". `code`: the errno, when one said it.
public struct InputFileError: Error, CustomStringConvertible, Sendable {
    public var code: Int32?
    public var words: String
    public var description: String { words }
}

/// The bytes of the file at `path` (a regular file, or a pipe or device, which is read until its
/// end or past `limit`), or why not: FileManager's `contents` said nil for a missing file, a
/// directory, an unreadable file and /dev/zero alike, and the messages guessed "check its
/// permissions" for all but the first (hostile test).
public func readInputFile(_ path: String, limit: Int) -> Result<[UInt8], InputFileError> {
    func failure(_ code: Int32) -> InputFileError {
        switch code {
        case ENOENT: return InputFileError(code: code, words: "does not exist")
        case EISDIR: return InputFileError(code: code, words: "is a directory")
        default: return InputFileError(code: code, words: "cannot be read: \(String(cString: strerror(code)))")
        }
    }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(failure(errno)) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, limit + 1 - bytes.count)) }
        if n == 0 { return .success(bytes) }
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(failure(errno))
        }
        bytes += chunk[..<n]
        if bytes.count > limit {
            return .failure(InputFileError(code: nil, words: "is larger than \(limit) bytes (is it the right file?)"))
        }
    }
}

/// Writes a file owner-only (or with `mode`, set before the rename) through a temporary file and a
/// rename, then syncs the directory.
public func writeFileAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws {
    let tmp = path + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw StoreError(.io, "cannot write \(path): \(String(cString: strerror(errno)))", errno: errno) }
    StoreOwnership.adopt(fd: fd, path: tmp)
    // Set on the file written, before it is renamed into place: a chmod by path afterwards
    // would follow a link put there meanwhile (review).
    if mode != 0o600 { _ = fchmod(fd, mode) }
    var ok = bytes.withUnsafeBytes { buf -> Bool in
        var off = 0
        while off < buf.count {
            let n = write(fd, buf.baseAddress! + off, buf.count - off)
            if n < 0 { if errno == EINTR { continue }; return false }
            off += n
        }
        return true
    }
    if ok { ok = fsync(fd) == 0 }
    let err = errno
    close(fd)
    guard ok, rename(tmp, path) == 0 else {
        unlink(tmp)
        throw StoreError(.io, "cannot write \(path): \(String(cString: strerror(err == 0 ? errno : err)))", errno: err == 0 ? errno : err)
    }
    syncDirectory(parentDirectory(of: path))
}

/// fsyncs a directory so a file or directory just created in it is durable (best effort).
func syncDirectory(_ dir: String) {
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd >= 0 {
        fsync(dfd)
        close(dfd)
    }
}

func reason(_ error: any Error) -> String {
    if let e = error as? CocoaError, let u = e.userInfo[NSUnderlyingErrorKey] as? NSError {
        return String(cString: strerror(Int32(u.code)))
    }
    return error.localizedDescription
}

/// `mkdir -p` with mode 0700, reporting the operating system's reason (Foundation's message
/// for a failed createDirectory says only that "the file doesn't exist").
func makeDirectories(_ path: String) throws {
    var built = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/", omittingEmptySubsequences: true) {
        built += "/" + part
        if mkdir(built, 0o700) == 0 {
            StoreOwnership.adopt(directory: built)
        } else {
            let err = errno
            var isDir: ObjCBool = false
            if err == EEXIST, FileManager.default.fileExists(atPath: built, isDirectory: &isDir), isDir.boolValue { continue }
            throw StoreError(.io, "cannot create the store directory \(path): \(built): \(String(cString: strerror(err)))", errno: err)
        }
        // The new entry must survive a power cut before anything in it is acknowledged.
        syncDirectory(parentDirectory(of: built))
    }
}

/// Why a store could not be opened or created. Callers tell the cases apart by `code` (a wrapped
/// private enum, so new codes do not break them); `message` says what to do.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String { case noStore, notADirectory, notAStore, newerVersion, io }
        fileprivate let base: Base
        /// Nothing at the path (read commands do not create stores).
        public static let noStore = Code(base: .noStore)
        /// The path is a file.
        public static let notADirectory = Code(base: .notADirectory)
        /// A non-empty directory without a valid STORE marker.
        public static let notAStore = Code(base: .notAStore)
        /// A store written by a newer SyncLedger.
        public static let newerVersion = Code(base: .newerVersion)
        /// The operating system refused (see `errno`).
        public static let io = Code(base: .io)
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    /// The operating system's error number underneath, for `.io`.
    public var errno: Int32?

    public init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { message }
}
