import Crypto
import Foundation
import Logging
import Paths
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One API token as the tokens file lists it: never the token, only its SHA-256.
public struct APIToken: Codable, Sendable, Hashable {
    public enum Role: String, Codable, Sendable { case reader, admin }
    public var name: String
    public var sha256: String
    public var role: Role
    /// A reader's organizations (an admin, who reads every organization, lists none).
    public var organizations: [String]?

    public init(name: String, sha256: String, role: Role, organizations: [String]? = nil) {
        self.name = name
        self.sha256 = sha256
        self.role = role
        self.organizations = organizations
    }
}

/// `--tokens FILE`: `{"tokens": [{"name", "sha256", "role", "organizations"}]}`, mode 0600.
public struct TokenFile: Codable, Sendable {
    public var tokens: [APIToken]

    public init(tokens: [APIToken] = []) { self.tokens = tokens }

    public static func load(path: String) throws -> TokenFile {
        // Not read when it is not a regular file: a FIFO would block, and a directory read as
        // "permission denied", the wrong reason (hostile test).
        // A symbolic link is followed (a secrets mount links its files: cold review).
        let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        // Looked at once; a link that leads nowhere is not judged by its own type or mode (0777),
        // but said to be missing below (cold review).
        let attributes = FileManager.default.fileExists(atPath: target) ? try? FileManager.default.attributesOfItem(atPath: target) : nil
        if let type = attributes?[.type] as? FileAttributeType, type != .typeRegular {
            throw ServeError("the tokens file \(path) is \(type == .typeDirectory ? "a directory" : "not a regular file"): give the file itself")
        }
        // A file other users can write lets any of them add an admin token: refused, as ssh
        // refuses such a key (SERVICE.md: the file is 0600; `token new` writes it so).
        // (Through a link, the file's own mode: `target`.)
        if let attributes, let mode = attributes[.posixPermissions] as? Int, mode & 0o022 != 0 {
            throw ServeError("the tokens file \(path) can be written by other users (mode \(String(mode & 0o777, radix: 8))): any of them could add a token; run chmod 600 \(path)")
        }
        // The same for a file another user owns: its owner can write it, or chmod it, whatever
        // its mode (hostile test). Trusted: root's (as ssh trusts them), and one whose owner owns
        // the directory that holds it, who could replace it anyway: the store's owner's, which
        // `token new` run as root gives back to them (README, "Running as root"; cold review), and
        // a file on a read-only mount (a container's secret keeps its host owner).
        if let owner = (attributes?[.ownerAccountID] as? NSNumber)?.uint32Value, owner != 0, owner != geteuid() {
            let parent = parentDirectory(of: target)
            let holder = ((try? FileManager.default.attributesOfItem(atPath: parent.isEmpty ? "." : parent))?[.ownerAccountID] as? NSNumber)?
                .uint32Value
            if holder != owner && !isOnReadOnlyMount(target) {
                let to = geteuid() == 0 ? "root" : "this user (uid \(geteuid())) or to root"
                throw ServeError("the tokens file \(path) belongs to another user (uid \(owner)), who could add a token: give it to \(to)")
            }
        }
        // And one below a directory every user can write (no sticky bit), the link's or its
        // target's: any of them could put their own tokens file in its place (hostile test), as
        // `status` says of the master key.
        if let (directory, mode) = openDirectory(above: path) ?? openDirectory(above: target) {
            throw ServeError("the tokens file \(path) is below \(directory), which every user can write (mode \(String(mode, radix: 8))): any of them could put another tokens file in its place; keep it where only its owner can write")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ServeError("cannot read the tokens file \(path): \(FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")")
        }
        let file: TokenFile
        do {
            file = try JSONDecoder().decode(TokenFile.self, from: data)
        } catch {
            throw ServeError("the tokens file \(path) is not {\"tokens\": [{\"name\", \"sha256\", \"role\": \"reader\"|\"admin\", \"organizations\"}]}: \(describeDecodingError(error))")
        }
        // A key the server does not read is a mistake it must not pass over: an admin entry
        // narrowed with "orgs" loaded as a full admin without a word (hostile test). The key is
        // named only when it looks like one (a value pasted there must not reach the log).
        if let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let list = top["tokens"] as? [[String: Any]] {
            let known: Set<String> = ["name", "sha256", "role", "organizations"]
            for (i, entry) in list.enumerated() {
                guard let extra = entry.keys.sorted().first(where: { !known.contains($0) }) else { continue }
                let shown = extra.count <= 32 && extra.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") } ? "\"\(extra)\"" : "(not shown)"
                throw ServeError("the tokens file \(path): tokens[\(i)] has a key the server does not read, \(shown) (the keys are name, sha256, role, organizations)")
            }
        }
        var seen: [String: Int] = [:]
        for (i, t) in file.tokens.enumerated() {
            // One token, two entries (perhaps two roles): which one applies would be an accident.
            if let j = seen.updateValue(i, forKey: t.sha256.lowercased()) {
                throw ServeError("the tokens file \(path): tokens[\(i)] has the same hash as tokens[\(j)]; one token, one entry")
            }
        }
        for t in file.tokens {
            guard t.sha256.count == 64, t.sha256.allSatisfy(\.isHexDigit) else {
                throw ServeError("the tokens file \(path): token \"\(t.name)\" has no SHA-256 hex (64 hex digits)")
            }
            if t.role == .reader, (t.organizations ?? []).isEmpty {
                throw ServeError("the tokens file \(path): reader token \"\(t.name)\" lists no organizations")
            }
            // An admin reads every organization: a list on one (a hand edit meant to narrow it)
            // was ignored without a word, and the token read everything (hostile test).
            if t.role == .admin, !(t.organizations ?? []).isEmpty {
                throw ServeError("the tokens file \(path): admin token \"\(t.name)\" lists organizations, but an admin reads every organization: remove the list, or make it a reader")
            }
        }
        return file
    }

    /// Where the file at `path` is written: `path`, or when it is a symbolic link the file it
    /// leads to. The file is written beside that and renamed over it, so a link (a secrets
    /// mount links its files) stays a link and its target gets the tokens; renamed over the
    /// link itself, the link became a file of its own and its target kept the old tokens
    /// (hostile test). A link that leads to no file is refused rather than replaced.
    static func writtenPath(_ path: String) throws -> String {
        // (`attributesOfItem` does not follow a link: it names the link's own type.)
        guard (try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType) == .typeSymbolicLink else { return path }
        guard let resolved = realpath(path, nil) else {
            let why = errno == ENOENT ? "that leads to no file" : errno == ELOOP ? "in a loop of links" : "that cannot be followed (\(String(cString: strerror(errno))))"
            throw ServeError("cannot write the tokens file \(path): it is a symbolic link \(why)")
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Writes the file atomically with mode 0600 (through a symbolic link: `writtenPath`).
    public func save(path given: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(self) + Data("\n".utf8)
        let path = try Self.writtenPath(given)
        let dir = parentDirectory(of: path)
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        // Named as the tokens file, not the temporary file beside it (a read-only store said
        // "cannot write …/api-tokens.json.tmp-4242", hostile test).
        guard fd >= 0 else { throw ServeError("cannot write the tokens file \(given): \(String(cString: strerror(errno)))") }
        StoreOwnership.adopt(fd: fd, path: tmp)
        let ok = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, data.count) } == data.count && fsync(fd) == 0
        Glibc.close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ServeError("cannot write the tokens file \(given): \(String(cString: strerror(errno)))")
        }
    }

    /// Runs `body` (a read, change and save of the file at `path`) while no other process does:
    /// an flock on the file's directory. Eight `token new` at once printed eight tokens and the
    /// file kept five (hostile test): each had read the file before the others saved it.
    /// Through a symbolic link, the directory of the file it leads to is locked (`writtenPath`),
    /// the one `save` writes in.
    public static func exclusively<T>(path given: String, _ body: () throws -> T) throws -> T {
        let path = try writtenPath(given)
        let dir = parentDirectory(of: path).isEmpty ? "." : parentDirectory(of: path)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ServeError("cannot open the tokens file's directory \(dir): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw ServeError("cannot lock the tokens file's directory \(dir): \(String(cString: strerror(errno)))") }
        }
        return try body()
    }

    /// A new random token (256 bits, `slt_` + 64 hex digits) and its entry.
    public static func newToken(name: String, role: APIToken.Role, organizations: [String]) -> (token: String, entry: APIToken) {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let token = "slt_" + hexDigits(bytes)
        return (token, APIToken(name: name, sha256: tokenHash(token), role: role,
                                organizations: role == .reader ? organizations : nil))
    }
}

func hexDigits(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

func tokenHash(_ token: String) -> String { hexDigits(SHA256.hash(data: Array(token.utf8))) }


/// Compares two byte strings in time that depends only on their lengths.
func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var diff = UInt8(a.count == b.count ? 0 : 1)
    let n = max(a.count, b.count)
    for i in 0..<n {
        let x = i < a.count ? a[i] : 0
        let y = i < b.count ? b[i] : 0
        diff |= x ^ y
    }
    return diff == 0
}

/// Who a request is.
public struct Caller: Sendable {
    public var name: String
    public var role: APIToken.Role
    public var organizations: Set<String>
    /// The hash the tokens file lists for the caller's token (an admin session is bound to it).
    public var tokenSHA256: String = ""
    public var isAdmin: Bool { role == .admin }
}

/// The tokens the server accepts, re-read when the file changes (a `syncledger token new`
/// while the server runs takes effect within a second).
final class TokenRegistry: Sendable {
    private struct State {
        var tokens: [APIToken]
        var stamp: FileStamp?
        var lastCheck = 0.0
        /// Why every token is refused (the file is gone or does not load), or nil. While set,
        /// the file is read again every second: fixing its permissions changes no mtime.
        var broken: String?
    }
    private let path: String?
    private let logger: Logger
    private let state: Mutex<State>

    /// `optional`: the file may not exist yet (the store's default file, before the first
    /// `syncledger token new`); it is read once it appears. Otherwise it must load now.
    init(path: String?, optional: Bool = false, logger: Logger = Logger(label: "syncledger.serve")) throws {
        self.path = path
        self.logger = logger
        let missing = path.map { optional && !FileManager.default.fileExists(atPath: $0) } ?? true
        // Stamped before it is read: a change between the two is then seen at the next check.
        let stamp = path.flatMap(FileStamp.init(path:))
        let tokens = missing ? [] : try path.map { try TokenFile.load(path: $0).tokens } ?? []
        state = Mutex(State(tokens: tokens, stamp: stamp))
    }

    /// What a bearer token is: a caller, unknown, or not checkable now (the file does not load).
    enum Check {
        case known(Caller)
        case unknown
        /// Every token is refused until the tokens file is fixed: the server's fault (a 503).
        case unavailable
    }

    /// Looks a bearer token up in one reading of the registry. Every entry is compared, in
    /// constant time.
    func check(bearer token: String) -> Check {
        reloadIfChanged()
        let presented = Array(tokenHash(token).utf8)
        let (list, broken) = state.withLock { ($0.tokens, $0.broken != nil) }
        if broken { return .unavailable }
        var found: APIToken?
        for t in list where constantTimeEquals(Array(t.sha256.lowercased().utf8), presented) {
            found = t
        }
        guard let found else { return .unknown }
        return .known(Caller(name: found.name, role: found.role, organizations: Set(found.organizations ?? []), tokenSHA256: found.sha256))
    }

    /// The caller a bearer token names, or nil.
    func caller(bearer token: String) -> Caller? {
        if case .known(let caller) = check(bearer: token) { return caller }
        return nil
    }

    /// Set while the tokens file is gone or does not load, when every token is refused: that is
    /// the server's fault, not the caller's, so it answers 503 rather than 401 (a web app told
    /// "unknown token" would think its token revoked).
    var refusesEveryToken: Bool {
        reloadIfChanged()
        return state.withLock { $0.broken != nil }
    }

    /// Whether an admin token of this name, whose hash `matches`, is still listed: an admin
    /// session ends when its token is removed from the file, and stays ended when another
    /// token is made under the same name.
    func isAdmin(named name: String, matching: (_ sha256: String) -> Bool) -> Bool {
        reloadIfChanged()
        let list = state.withLock { $0.tokens }
        return list.contains { $0.name == name && $0.role == .admin && matching($0.sha256) }
    }

    /// Reads the file again when it changed (at most once a second). A file that was removed,
    /// or no longer loads, refuses every token until it is fixed (a revocation by an edit that
    /// broke the file, or by deleting it, must not leave the old tokens working).
    private func reloadIfChanged() {
        guard let path else { return }
        let now = Date().timeIntervalSince1970
        let due: Bool = state.withLock {
            if now - $0.lastCheck < 1 { return false }
            $0.lastCheck = now
            return true
        }
        guard due else { return }
        let m = FileStamp(path: path)
        guard state.withLock({ m != $0.stamp || $0.broken != nil }) else { return }
        var tokens: [APIToken] = []
        var broken: String?
        if m == nil {
            broken = "the tokens file is gone: every API token is refused until it is back"
        } else {
            do {
                tokens = try TokenFile.load(path: path).tokens
            } catch {
                broken = "every API token is refused until the tokens file is fixed: \(error)"
            }
        }
        let was = state.withLock { s -> (Bool, String?) in
            defer {
                s.tokens = tokens
                s.stamp = m
                s.broken = broken
            }
            return (s.stamp != m, s.broken)
        }
        // Each change of state is logged once (a broken file is retried every second).
        if let broken, broken != was.1 {
            logger.error("\(broken)", metadata: ["file": "\(path)"])
        } else if broken == nil, was.0 || was.1 != nil {
            logger.info("the tokens file changed: re-read", metadata: ["file": "\(path)", "tokens": "\(tokens.count)"])
        }
    }
}

/// Where and what kind of decoding error, never the value (a token pasted into the file by
/// mistake must not reach the log).
func describeDecodingError(_ error: any Error) -> String {
    func at(_ path: [any CodingKey]) -> String {
        path.isEmpty ? "" : " at " + path.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined()
            .trimmingCharacters(in: CharacterSet(charactersIn: "."))
    }
    switch error as? DecodingError {
    case .dataCorrupted(let c)?: return (c.codingPath.isEmpty ? "not valid JSON" : "a value that is not allowed") + at(c.codingPath)
    case .keyNotFound(let key, let c)?: return "no \"\(key.stringValue)\"" + at(c.codingPath)
    case .typeMismatch(_, let c)?, .valueNotFound(_, let c)?: return "a value of the wrong type" + at(c.codingPath)
    default: return "not readable"
    }
}

public struct ServeError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
