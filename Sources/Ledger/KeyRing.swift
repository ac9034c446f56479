import Crypto
import EventLog
import Foundation
import Paths
import Synchronization
import JSONCore
#if canImport(Glibc)
import Glibc
#endif

/// The key store (docs/FORMAT.md, "Keys"): one random AES-256 key per roster patient, each
/// wrapped (AES-256-GCM) by a master key read from a file — `$SYNCLEDGER_MASTER_KEY_FILE`, else
/// `KEYS/master.key`, created with the key store. It can live apart from the log (`--keys DIR`).
///
/// ```
/// KEYS/                      0700
///   master.key               0600, only when no SYNCLEDGER_MASTER_KEY_FILE: 64 hex digits
///   master.check             the master key's proof: AES-GCM of a constant (a wrong key fails to open it)
///   patients/<hex(id)>.key   nonce(12) | ciphertext(32) | tag(16) of the patient key, AAD "syncledger-patient-key:" + id
///   forgotten/<hex(id)>      the patient's tombstone: `forget` destroyed the key
/// ```
public final class KeyRing: @unchecked Sendable {
    // @unchecked only because swift-crypto does not mark `SymmetricKey` Sendable; it is an
    // immutable value. The mutable fields (`cache`, `presumed`, `lenient`) are `Mutex`es.
    public static let masterKeyEnvironment = "SYNCLEDGER_MASTER_KEY_FILE"

    public let directory: String
    /// Where the master key was read from (for messages; never its bytes).
    public let masterKeyFile: String
    private let master: SymmetricKey
    /// Patient keys opened or made so far.
    private let cache = Mutex<[String: SymmetricKey]>([:])
    /// Patients this ring reads as forgotten though no tombstone says so (`lostKeysReadAsForgotten`).
    private let presumed = Mutex<Set<String>>([])
    /// Whether lost or damaged keys read as forgotten, and whether any key opened since.
    private let lenient = Mutex<(on: Bool, opened: Bool)>((false, false))

    private init(directory: String, masterKeyFile: String, master: SymmetricKey) {
        self.directory = directory
        self.masterKeyFile = masterKeyFile
        self.master = master
    }

    /// Opens the key store at `directory`. With `create`, a missing store is made (and, with no
    /// `SYNCLEDGER_MASTER_KEY_FILE`, its master key beside it, with a one-time notice on `notice`).
    /// A missing or wrong master key is one `LedgerError` line; nothing is written then.
    ///
    /// Two processes making the same new key store (a server and cron's `sync` on a new store)
    /// take turns under a lock on the directory that holds it: the second opens the first one's.
    public static func open(directory: String, create: Bool,
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            notice: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws -> KeyRing {
        guard create, !FileManager.default.fileExists(atPath: directory + "/master.check") else {
            return try openOrMake(directory: directory, create: create, environment: environment, notice: notice)
        }
        return try withDirectoryLock(parentDirectory(of: directory)) {
            try openOrMake(directory: directory, create: create, environment: environment, notice: notice)
        }
    }

    /// `open`, the store made here when missing and `create`.
    private static func openOrMake(directory: String, create: Bool, environment: [String: String],
                                   notice: (String) -> Void) throws -> KeyRing {
        let fm = FileManager.default
        let check = directory + "/master.check"
        let exists = fm.fileExists(atPath: check)
        if !exists && !create {
            throw LedgerError("no key store at \(directory) (the events are encrypted; pass --keys DIR to name the key store)")
        }
        let masterFile: String
        var createdMaster: SymmetricKey?
        if let named = try namedMasterKeyFile(environment: environment, keys: directory) {
            masterFile = named
        } else {
            masterFile = directory + "/master.key"
            if !fm.fileExists(atPath: masterFile) {
                guard !exists else {
                    throw LedgerError("the key store \(directory) has no master.key: set \(masterKeyEnvironment) to the file that holds its master key")
                }
                createdMaster = SymmetricKey(size: .bits256)
            }
        }
        let master: SymmetricKey
        if let createdMaster {
            master = createdMaster
        } else {
            master = try readMasterKey(masterFile)
        }
        if exists {
            guard let box = fm.contents(atPath: check),
                let sealed = try? AES.GCM.SealedBox(combined: box),
                let opened = try? AES.GCM.open(sealed, using: master, authenticating: Array(checkLabel.utf8)),
                Array(opened) == Array(checkLabel.utf8)
            else {
                throw LedgerError("the master key in \(masterFile) does not open the key store \(directory): wrong key file")
            }
        } else {
            try makePrivateDirectory(directory)
            try makePrivateDirectory(directory + "/patients")
            try makePrivateDirectory(directory + "/forgotten")
            if let createdMaster {
                try writeNewFile(masterFile, Array(hexString(createdMaster.withUnsafeBytes { Array($0) }).utf8) + [10])
                notice("note: created the master key \(masterFile) beside the log; real deployments keep it apart (`syncledger keys init --master-key-file FILE`, then set \(masterKeyEnvironment))")
            }
            let box = try AES.GCM.seal(Array(checkLabel.utf8), using: master, authenticating: Array(checkLabel.utf8))
            try writeNewFile(check, Array(box.combined!))
        }
        return KeyRing(directory: directory, masterKeyFile: masterFile, master: master)
    }

    /// The master key file `SYNCLEDGER_MASTER_KEY_FILE` names, nil when it is not set. Set but
    /// empty is refused: most likely `=$FILE` with FILE unset, and read as unset a new store got
    /// its master key beside the log, where the operator meant it not to be (hostile test). The
    /// one reading of the variable, for every command and the server (cold review).
    public static func namedMasterKeyFile(environment: [String: String] = ProcessInfo.processInfo.environment,
                                          keys directory: String) throws -> String? {
        guard let named = environment[masterKeyEnvironment] else { return nil }
        guard !named.isEmpty else {
            throw LedgerError("\(masterKeyEnvironment) is set but empty: set it to the file that holds the master key, or unset it to use \(directory)/master.key")
        }
        return named
    }

    static let checkLabel = "syncledger-master-check-v1"

    /// Reads a master key file: 64 hex digits (a trailing newline allowed) or 32 raw bytes.
    static func readMasterKey(_ path: String) throws -> SymmetricKey {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            // Not "create one with keys init --master-key-file DIR", which cannot work (hostile test).
            throw LedgerError("the master key file \(path) is a directory: name the file that holds the master key")
        }
        guard let bytes = FileManager.default.contents(atPath: path) else {
            throw LedgerError("cannot read the master key file \(path) (create one with `syncledger keys init --master-key-file \(path)`)")
        }
        var text = String(decoding: bytes, as: UTF8.self)
        while let last = text.last, last.isWhitespace { text.removeLast() }
        if text.count == 64, let raw = hexBytes(text) { return SymmetricKey(data: raw) }
        if bytes.count == 32 { return SymmetricKey(data: bytes) }
        throw LedgerError("the master key file \(path) does not hold a key (64 hex digits)")
    }

    /// Why the master key file at `path` is exposed: users outside its owner and group may read
    /// it (then they can open every patient's data) or write it, or may replace it through a
    /// directory they can write (no sticky bit); nil when none may, or when it cannot be looked
    /// at. A link counts by its target. The group is left to the operator: a key a service
    /// reads through its group (root:svc, 0640) is a deliberate choice, and under per-user
    /// groups the group is the owner alone (review).
    public static func exposure(ofMasterKeyFile path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let mode = st.st_mode & 0o777
        let what: String
        if mode & 0o006 == 0o006 {
            what = "can be read and written by every user (mode \(String(mode, radix: 8))): any of them can open every patient's data; run chmod o-rwx \(path)"
        } else if mode & 0o004 != 0 {
            what = "can be read by every user (mode \(String(mode, radix: 8))): any of them can open every patient's data; run chmod o-rwx \(path)"
        } else if mode & 0o002 != 0 {
            what = "can be written by every user (mode \(String(mode, radix: 8))): any of them can replace it; run chmod o-rwx \(path)"
        } else {
            // Any directory on the way, the link's and its target's, up to the root: one every
            // user can write lets them rename what is below it and put their own in its place
            // (hostile test: a link in a 777 directory, a key two directories below one).
            var real = path
            if let r = realpath(path, nil) {
                real = String(cString: r)
                free(r)
            }
            guard let (directory, dirMode) = openDirectory(above: path) ?? openDirectory(above: real) else { return nil }
            what = "is below \(directory), which every user can write (mode \(String(dirMode, radix: 8))): any of them can put another key in its place; "
                + "keep it where only its owner can write"
        }
        return "the master key file \(path) \(what)"
    }

    /// `exposure(ofMasterKeyFile:)` of the file this key store's master key was read from.
    public var masterKeyExposure: String? { Self.exposure(ofMasterKeyFile: masterKeyFile) }

    /// Checks that a master key file can be read (before anything is created).
    public static func checkMasterKeyFile(_ path: String) throws -> Bool {
        _ = try readMasterKey(path)
        return true
    }

    /// Writes a new random master key to `path` (0600); refuses to overwrite anything.
    public static func writeNewMasterKey(to path: String) throws {
        guard !path.isEmpty else { throw LedgerError("--master-key-file is empty: name the file to create") }
        // Where every user could replace it, refused before it is written: `sync` and `status`
        // refuse or flag such a key anyway, after the operator set everything up (hostile test).
        // The path as given, and where its directory really is (a link on the way).
        let parent = (path as NSString).deletingLastPathComponent
        var realParent: String?
        if let r = realpath(parent.isEmpty ? "." : parent, nil) {
            realParent = String(cString: r)
            free(r)
        }
        if let (directory, mode) = openDirectory(above: path) ?? realParent.flatMap({ openDirectory(above: $0 + "/key") }) {
            throw LedgerError("\(path) would be below \(directory), which every user can write (mode \(String(mode, radix: 8))): "
                              + "any of them could put another key in its place; choose a directory only its owner can write")
        }
        let key = SymmetricKey(size: .bits256)
        try writeNewFile(path, Array(hexString(key.withUnsafeBytes { Array($0) }).utf8) + [10])
    }

    func keyPath(_ patient: String) -> String { Self.keyPath(directory: directory, patient: patient) }
    static func keyPath(directory: String, patient: String) -> String { directory + "/patients/" + hexString(Array(patient.utf8)) + ".key" }
    func tombstonePath(_ patient: String) -> String { directory + "/forgotten/" + hexString(Array(patient.utf8)) }

    /// True when `forget` destroyed this patient's key (or this ring presumes it).
    public func isForgotten(_ patient: String) -> Bool {
        presumed.withLock { $0.contains(patient) } || Self.isForgotten(directory: directory, patient: patient)
    }

    /// True when the patient is not forgotten and their key file is missing, or is a file this
    /// process reads that the master key (checked when the ring opened) does not open: a lost
    /// or damaged key. False for a key that opens, and for one that cannot be read (permissions:
    /// the key may be fine).
    public func keyIsLostOrDamaged(_ patient: String) -> Bool {
        guard !isForgotten(patient) else { return false }
        var st = stat()
        let path = keyPath(patient)
        guard lstat(path, &st) == 0 else { return errno == ENOENT }
        guard st.st_mode & S_IFMT == S_IFREG, access(path, R_OK) == 0 else { return false }
        return (try? loadedKey(for: patient)) == nil
    }

    /// Another ring on the same key store and master key that reads every patient whose key
    /// file is lost or damaged (`keyIsLostOrDamaged`) as forgotten: no key, their sealed parts as
    /// "(forgotten)". For `forget --key-lost`, which must read every recorded roster (the other
    /// patients' parts, some of whose keys may be lost too) before it writes the tombstone; a
    /// ring of its own, so that a shared one (a server's) never turns lenient. Nothing is
    /// written. `openedAnyKey` then tells whether any key opened, `presumedForgotten` which
    /// patients it read as forgotten.
    public func lostKeysReadAsForgotten() -> KeyRing {
        let ring = KeyRing(directory: directory, masterKeyFile: masterKeyFile, master: master)
        ring.lenient.withLock { $0.on = true }
        return ring
    }

    /// True when a key opened through this (lenient) ring: the key store is this log's.
    public var openedAnyKey: Bool { lenient.withLock { $0.opened } }

    /// The patients this ring read as forgotten without a tombstone (their keys lost), sorted.
    public var presumedForgotten: [String] { presumed.withLock { $0.sorted() } }

    /// True when the key store at `directory` holds a key file for the patient (opened or not).
    public static func hasKeyFile(directory: String, patient: String) -> Bool {
        var st = stat()
        return lstat(keyPath(directory: directory, patient: patient), &st) == 0
    }

    /// The patients with a tombstone in the key store at `directory` (`forgotten/`), sorted.
    public static func tombstonedPatients(directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory + "/forgotten")) ?? []
        return names.compactMap { hexBytes($0).flatMap { String(validating: $0, as: UTF8.self) } }.sorted()
    }

    /// The tombstone check, which needs no master key.
    public static func isForgotten(directory: String, patient: String) -> Bool {
        FileManager.default.fileExists(atPath: directory + "/forgotten/" + hexString(Array(patient.utf8)))
    }

    /// The patient's key, created on first use. Throws for a forgotten patient.
    public func key(for patient: String) throws -> SymmetricKey {
        if let k = try existingKey(for: patient) { return k }
        if isForgotten(patient) { throw LedgerError("patient \(patient) was forgotten; their data is not recorded again") }
        // Under the lock, so that two callers never make two keys for one patient.
        return try cache.withLock { cache throws -> SymmetricKey in
            if let k = cache[patient] { return k }
            let key = SymmetricKey(size: .bits256)
            let box = try AES.GCM.seal(key.withUnsafeBytes { Array($0) }, using: master,
                                       authenticating: Array(("syncledger-patient-key:" + patient).utf8))
            do {
                // Durable before it is used: the file, then its directory entry.
                try writeNewFile(keyPath(patient), Array(box.combined!))
            } catch {
                // Another process (or key ring) made it meanwhile: the key is the one it wrote
                // (a key file appears whole, `writeNewFile`).
                guard let theirs = try storedKey(patient) else { throw error }
                cache[patient] = theirs
                return theirs
            }
            cache[patient] = key
            return key
        }
    }

    /// Makes the key of every patient in `patients` who has none yet, all together and before any
    /// is used: `sync` calls it for every roster patient before a run appends anything (the roster
    /// included). Each new key's file is written and fsynced under a temporary
    /// name, then all are linked into place and `patients/` is fsynced once: N + 1 device flushes
    /// for N keys, where `key(for:)` takes two per key (three before stop 34), and none of them
    /// while sealing threads wait on the ring's lock for their keys. A crash leaves each key whole
    /// or absent, as `writeNewFile` does; no new key is handed out before its directory entry is
    /// on disk. Keys that exist are read (and cached); forgotten patients get none (`key(for:)`
    /// refuses them); a key another process made meanwhile is read and kept.
    public func makeKeys(for patients: some Sequence<String>) throws {
        try cache.withLock { cache throws in
            var fresh: [(patient: String, key: SymmetricKey, temp: String)] = []
            // The temporary files, removed whatever happens.
            var temporaries: [String] = []
            defer { for t in temporaries { _ = unlink(t) } }
            // Before this call writes its own (which a slow disk could age past the limit).
            removeStaleTemporaries()
            for patient in Set(patients) where cache[patient] == nil {
                if let stored = try storedKey(patient) {
                    cache[patient] = stored
                    continue
                }
                if isForgotten(patient) { continue }
                let key = SymmetricKey(size: .bits256)
                let box = try AES.GCM.seal(key.withUnsafeBytes { Array($0) }, using: master,
                                           authenticating: Array(("syncledger-patient-key:" + patient).utf8))
                let temp = keyPath(patient) + ".tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
                temporaries.append(temp)
                try writeSyncedFile(temp, Array(box.combined!), name: keyPath(patient))
                fresh.append((patient, key, temp))
            }
            guard !fresh.isEmpty else { return }
            var made: [String: SymmetricKey] = [:]
            var failure: LedgerError?
            for f in fresh {
                if link(f.temp, keyPath(f.patient)) == 0 {
                    made[f.patient] = f.key
                    continue
                }
                let code = errno
                if code == EEXIST, let theirs = try storedKey(f.patient) {
                    made[f.patient] = theirs
                } else {
                    failure = LedgerError("cannot create \(keyPath(f.patient)): \(String(cString: strerror(code)))")
                    break
                }
            }
            for t in temporaries { _ = unlink(t) }
            temporaries = []
            // The links (and the temporaries' removal) on disk before any new key is used.
            try syncDirectoryOrFail(directory + "/patients")
            cache.merge(made) { _, new in new }
            if let failure { throw failure }
        }
    }

    /// Removes key files' temporaries (`NAME.tmp-PID-N`) that a process killed between writing
    /// and linking them left in `patients/`: each holds a key whole, sealed with the master key,
    /// and nothing else ever removes them. Only those older than `staleTemporarySeconds`: a
    /// temporary lives milliseconds, and another process (another PID namespace, so its PID
    /// says nothing here) may be linking one now. Best effort: a failure leaves them for later.
    func removeStaleTemporaries(now: time_t = time(nil)) {
        let dir = directory + "/patients"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names where name.contains(".key.tmp-") {
            var st = stat()
            guard lstat(dir + "/" + name, &st) == 0, now - st.st_mtim.tv_sec > Self.staleTemporarySeconds else { continue }
            _ = unlink(dir + "/" + name)
        }
    }

    /// How old a key file's temporary must be before `makeKeys` removes it (seconds).
    static let staleTemporarySeconds = 600

    /// The key in the patient's key file, nil when there is none. A file that is there but
    /// cannot be read is an error (it read as "no key for patient", sending the user after the
    /// wrong directory: review).
    private func storedKey(_ patient: String) throws -> SymmetricKey? {
        let path = keyPath(patient)
        // One open decides between "none" and "unreadable": a failed read followed by a second
        // look took a key file that another process created in between for an unreadable one
        // (KeyRingBulkTests' two rings making the same keys).
        // Non-blocking, and only a regular file is read: a FIFO there would hang the command.
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 {
            let err = errno
            if err == ENOENT { return nil }
            let advice = err == EACCES ? " (run syncledger as the user the store belongs to, or give the file back to that user, mode 600)" : ""
            throw LedgerError("cannot read the key file of patient \(patient) (\(path)): \(String(cString: strerror(err)))\(advice)")
        }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            throw LedgerError("cannot read the key file of patient \(patient) (\(path)): not a readable file")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                let err = errno
                if err == EINTR { continue }
                throw LedgerError("cannot read the key file of patient \(patient) (\(path)): \(String(cString: strerror(err)))")
            }
            if n == 0 { break }
            bytes += chunk[..<n]
            if bytes.count > 1 << 16 { break }  // a key file is 60 bytes; anything this big does not open below
        }
        guard let box = try? AES.GCM.SealedBox(combined: bytes),
            let raw = try? AES.GCM.open(box, using: master, authenticating: Array(("syncledger-patient-key:" + patient).utf8))
        else {
            throw LedgerError("the key of patient \(patient) in \(directory) cannot be opened with the master key in \(masterKeyFile) "
                              + "(a wrong master key opens none of them; if only this key file is damaged, restore it from a backup, "
                              + "or `syncledger forget --patient \(patient) --key-lost --reason …` records the patient as forgotten)")
        }
        return SymmetricKey(data: raw)
    }

    /// The patient's key if it exists; nil when forgotten (or never made). A key file the master
    /// key cannot open is an error.
    public func existingKey(for patient: String) throws -> SymmetricKey? {
        if presumed.withLock({ $0.contains(patient) }) { return nil }
        guard lenient.withLock({ $0.on }) else { return try loadedKey(for: patient) }
        if let k = cache.withLock({ $0[patient] }) { return k }
        if keyIsLostOrDamaged(patient) {
            presumed.withLock { _ = $0.insert(patient) }
            return nil
        }
        let key = try loadedKey(for: patient)
        if key != nil { lenient.withLock { $0.opened = true } }
        return key
    }

    private func loadedKey(for patient: String) throws -> SymmetricKey? {
        try cache.withLock { cache throws -> SymmetricKey? in
            if let k = cache[patient] { return k }
            // The tombstone wins over a key file: one put back (a backup restored, a failed
            // forget's zeroed file) opened the forgotten patient's data again (hostile test).
            guard !Self.isForgotten(directory: directory, patient: patient) else { return nil }
            guard let key = try storedKey(patient) else { return nil }
            cache[patient] = key
            return key
        }
    }

    /// Destroys the patient's key (overwritten, then unlinked) and leaves a tombstone.
    public func destroyKey(for patient: String, at: String) throws {
        // A key file that could not be deleted once the tombstone is written and the key
        // zeroed left a forget half done (hostile test: `patients/` not writable): checked first.
        var pre = stat()
        if lstat(keyPath(patient), &pre) == 0, access(directory + "/patients", W_OK | X_OK) != 0 {
            throw LedgerError("cannot delete the key file \(keyPath(patient)): \(String(cString: strerror(errno))) "
                              + "(run syncledger as the user the store belongs to); nothing was changed")
        }
        cache.withLock { $0[patient] = nil }
        try writeFileAtomically(tombstonePath(patient), Array("{\"patient\":\(jsonQuoted(patient)),\"forgotten_at\":\(jsonQuoted(at))}\n".utf8))
        let path = keyPath(patient)
        var st = stat()
        if lstat(path, &st) == 0 {
            // Overwrite before unlinking (a best effort: file systems may keep old blocks), only
            // a regular file of one link that opens as this patient's key: a damaged key file
            // (`forget --key-lost`) may be anything, a hard link to another key or to the master
            // key among them (cold review); such a file is only unlinked.
            let own = st.st_mode & S_IFMT == S_IFREG && st.st_nlink == 1 && (try? storedKey(patient)) != nil
            let fd = own ? Glibc.open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC) : -1
            if fd >= 0 {
                let zeros = [UInt8](repeating: 0, count: 60)
                _ = zeros.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                _ = fsync(fd)
                close(fd)
            }
            guard unlink(path) == 0 else {
                throw LedgerError("cannot delete the key \(path): \(String(cString: strerror(errno)))")
            }
        }
        syncDirectory(directory + "/patients")
        syncDirectory(directory + "/forgotten")
    }
}

func hexBytes(_ text: String) -> [UInt8]? {
    var out: [UInt8] = []
    var high: UInt8?
    for c in text.utf8 {
        let v: UInt8
        switch c {
        case 48...57: v = c - 48
        case 97...102: v = c - 87
        case 65...70: v = c - 55
        default: return nil
        }
        if let h = high {
            out.append(h << 4 | v)
            high = nil
        } else {
            high = v
        }
    }
    return high == nil ? out : nil
}

/// Runs `body` holding an exclusive flock on the directory `path` itself (no file is made;
/// released when the descriptor closes). A directory that cannot be opened runs `body` unlocked:
/// making anything in it would fail the same way.
func withDirectoryLock<T>(_ path: String, _ body: () throws -> T) throws -> T {
    let fd = Glibc.open(path.isEmpty ? "." : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return try body() }
    defer { close(fd) }
    while flock(fd, LOCK_EX) != 0, errno == EINTR {}
    return try body()
}

func makePrivateDirectory(_ path: String) throws {
    if mkdir(path, 0o700) == 0 {
        StoreOwnership.adopt(directory: path)
    } else if errno != EEXIST {
        throw LedgerError("cannot create \(path): \(String(cString: strerror(errno)))")
    }
}

/// Writes a new file (0600, refused when it exists) with these bytes and fsyncs it; `name` is the
/// file named in errors (the key the temporary file becomes).
func writeSyncedFile(_ path: String, _ bytes: [UInt8], name: String) throws {
    let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw LedgerError("cannot create \(name): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    StoreOwnership.adopt(fd: fd, path: path)
    let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    guard n == bytes.count else {
        throw LedgerError("cannot write \(name): \(n < 0 ? String(cString: strerror(errno)) : "short write")")
    }
    guard fsync(fd) == 0 else { throw LedgerError("cannot write \(name) to disk: \(String(cString: strerror(errno)))") }
}

/// fsync of a directory (its new and removed entries on disk); a failure is an error.
func syncDirectoryOrFail(_ dir: String) throws {
    let fd = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw LedgerError("cannot open \(dir): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw LedgerError("cannot write \(dir) to disk: \(String(cString: strerror(errno)))") }
}

/// Creates a file that must not exist yet (0600) with these bytes, durably and atomically: the
/// bytes go to a temporary file first, which is then hard-linked to `path` (refused when `path`
/// exists), so a crash never leaves a half-written key and nothing is ever overwritten.
func writeNewFile(_ path: String, _ bytes: [UInt8]) throws {
    if FileManager.default.fileExists(atPath: path) { throw LedgerError("\(path) already exists; not overwriting it") }
    // Unique per call, not only per process: two key rings of one process may write at once.
    let temp = path + ".tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    defer { _ = unlink(temp) }
    try writeSyncedFile(temp, bytes, name: path)
    guard link(temp, path) == 0 else {
        if errno == EEXIST { throw LedgerError("\(path) already exists; not overwriting it") }
        throw LedgerError("cannot create \(path): \(String(cString: strerror(errno)))")
    }
    syncDirectory(parentDirectory(of: path))
}
