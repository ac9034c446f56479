import Foundation
#if canImport(Glibc)
import Glibc
#endif
// `stat`'s members: with NIOEmbedded in this target, the compiler may take CNIOLinux for the
// module that declares them (MemberImportVisibility).
#if canImport(CNIOLinux)
import CNIOLinux
#endif
import Ledger
@testable import Service
import Sync
import TestSupport
import Testing

/// The tokens file is the only way to revoke a token: every change to it must take effect,
/// including a deletion, an edit that breaks it, and a file created after the server started.
@Suite struct TokenRegistryTests {
    /// Waits past the registry's once-a-second check, and lets the file's mtime move.
    func nextSecond() { Thread.sleep(forTimeInterval: 1.1) }

    @Test func aDeletedOrBrokenFileRevokesEveryToken() throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        let (keep, k) = TokenFile.newToken(name: "keep", role: .admin, organizations: [])
        let (revoke, r) = TokenFile.newToken(name: "revoke", role: .admin, organizations: [])
        try TokenFile(tokens: [k, r]).save(path: path)
        let registry = try TokenRegistry(path: path)
        #expect(registry.caller(bearer: keep)?.name == "keep")
        #expect(registry.caller(bearer: revoke)?.name == "revoke")

        // An edit that removes a token and leaves the file unreadable (a trailing comma).
        nextSecond()
        var text = String(decoding: try TokenFile(tokens: [k]).encodedForTest(), as: UTF8.self) + ","
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        #expect(registry.caller(bearer: revoke) == nil)
        #expect(registry.caller(bearer: keep) == nil)
        #expect(!registry.isAdmin(named: "keep", matching: { _ in true }))
        #expect(registry.refusesEveryToken, "the server's fault: a 503, not a 401")

        // Fixed: the tokens it lists work again.
        nextSecond()
        text.removeLast()
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        #expect(registry.caller(bearer: keep)?.name == "keep")
        #expect(registry.caller(bearer: revoke) == nil)
        #expect(!registry.refusesEveryToken, "an unknown token is the caller's: a 401")

        // Broken again, then fixed without its mtime moving (as a chmod or chown that makes it
        // readable again would): read again anyway.
        nextSecond()
        try Data((text + ",").utf8).write(to: URL(fileURLWithPath: path))
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(registry.caller(bearer: keep) == nil)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        var times = [st.st_atim, st.st_mtim]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
        nextSecond()
        #expect(registry.caller(bearer: keep)?.name == "keep")

        // Deleted: none.
        nextSecond()
        try FileManager.default.removeItem(atPath: path)
        #expect(registry.caller(bearer: keep) == nil)
        #expect(registry.refusesEveryToken)
    }

    /// A file rewritten with the same size and given its old modification time back (`touch -d`)
    /// is still read again: a revoked token kept working when only the mtime was compared
    /// (hostile test).
    @Test func aRewriteThatKeepsTheModificationTimeIsSeen() throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        let (revoked, r) = TokenFile.newToken(name: "same", role: .reader, organizations: ["org-a"])
        let (_, replacement) = TokenFile.newToken(name: "same", role: .reader, organizations: ["org-a"])
        let old = try TokenFile(tokens: [r]).encodedForTest()
        let new = try TokenFile(tokens: [replacement]).encodedForTest()
        #expect(old.count == new.count && old != new)
        func writeInPlace(_ bytes: Data) throws {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            #expect(fd >= 0)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        try writeInPlace(old)
        let registry = try TokenRegistry(path: path)
        #expect(registry.caller(bearer: revoked)?.name == "same")
        var before = stat()
        #expect(stat(path, &before) == 0)
        // Past the kernel's coarse timestamp tick (1–4 ms before Linux 6.13), so ctime moves.
        Thread.sleep(forTimeInterval: 0.05)
        try writeInPlace(new)
        var times = [before.st_atim, before.st_mtim]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
        // The same inode, size and modification time; only the status-change time moved.
        var after = stat()
        #expect(stat(path, &after) == 0)
        #expect(after.st_ino == before.st_ino && after.st_size == before.st_size
                && after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
        nextSecond()
        #expect(registry.caller(bearer: revoked) == nil)
    }

    /// A tokens file that cannot be written is named as the tokens file, not as the temporary
    /// file beside it (a read-only store said "cannot write …/api-tokens.json.tmp-4242").
    @Test func aTokensFileThatCannotBeWrittenIsNamedAsSuch() throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        // The temporary file's name taken by a directory: opening it fails as a read-only
        // directory would make it fail (root ignores permissions).
        try FileManager.default.createDirectory(atPath: path + ".tmp-\(getpid())", withIntermediateDirectories: false)
        let (_, t) = TokenFile.newToken(name: "any", role: .admin, organizations: [])
        do {
            try TokenFile(tokens: [t]).save(path: path)
            Issue.record("the tokens file was written")
        } catch {
            #expect("\(error)" == "cannot write the tokens file \(path): Is a directory", "\(error)")
        }
    }

    /// A tokens file other users can write is refused, named with its mode and the fix: any of
    /// them could add an admin token. One others can only read loads (it holds hashes only).
    @Test func aTokensFileOthersCanWriteIsRefused() throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        let (_, t) = TokenFile.newToken(name: "any", role: .admin, organizations: [])
        try TokenFile(tokens: [t]).save(path: path)
        for (mode, refused) in [(0o600, false), (0o644, false), (0o620, true), (0o606, true), (0o666, true)] as [(mode_t, Bool)] {
            #expect(chmod(path, mode) == 0)
            do {
                #expect(try TokenFile.load(path: path).tokens.count == 1)
                #expect(!refused, "mode \(String(mode, radix: 8)) loaded")
            } catch {
                #expect(refused, "mode \(String(mode, radix: 8)): \(error)")
                #expect("\(error)" == "the tokens file \(path) can be written by other users (mode \(String(mode, radix: 8))): any of them could add a token; run chmod 600 \(path)")
            }
        }
        // Through a link (a secrets mount), the file's own mode counts; a link that leads
        // nowhere is missing, not "mode 777".
        let link = dir.sub("link.json")
        #expect(symlink(path, link) == 0)
        #expect(chmod(path, 0o644) == 0)
        #expect(try TokenFile.load(path: link).tokens.count == 1)
        #expect(chmod(path, 0o664) == 0)
        #expect(throws: ServeError.self) { try TokenFile.load(path: link) }
        let dangling = dir.sub("dangling.json")
        #expect(symlink(dir.sub("nowhere.json"), dangling) == 0)
        do {
            _ = try TokenFile.load(path: dangling)
            Issue.record("a link that leads nowhere loaded")
        } catch {
            #expect("\(error)" == "cannot read the tokens file \(dangling): no such file")
        }
    }

    /// A tokens file another user owns is refused, whatever its mode: its owner could write it
    /// or chmod it. This user's own file and root's load. (Run as root, as CI runs, the test
    /// gives the file to `nobody`; as another user it cannot chown and checks what it can.)
    @Test func aTokensFileAnotherUserOwnsIsRefused() throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        let (_, t) = TokenFile.newToken(name: "any", role: .admin, organizations: [])
        try TokenFile(tokens: [t]).save(path: path)
        #expect(chmod(path, 0o644) == 0)
        #expect(try TokenFile.load(path: path).tokens.count == 1)
        guard geteuid() == 0 else { return }
        #expect(chown(path, 65534, 65534) == 0)
        do {
            _ = try TokenFile.load(path: path)
            Issue.record("a tokens file owned by uid 65534 loaded")
        } catch {
            #expect("\(error)" == "the tokens file \(path) belongs to another user (uid 65534), who could add a token: give it to root")
        }
        // Its owner's directory, though, is theirs to replace it in anyway: a store's state/
        // whose tokens file `token new` run as root gave back to the store's owner.
        let owned = dir.sub("owned")
        #expect(mkdir(owned, 0o700) == 0 && chown(owned, 65534, 65534) == 0)
        let theirs = owned + "/tokens.json"
        try TokenFile(tokens: [t]).save(path: theirs)
        #expect(chown(theirs, 65534, 65534) == 0)
        #expect(try TokenFile.load(path: theirs).tokens.count == 1)
        // Through a link, the file's owner counts, not the link's.
        let link = dir.sub("link.json")
        #expect(symlink(path, link) == 0)
        #expect(throws: ServeError.self) { try TokenFile.load(path: link) }
        #expect(chown(path, 0, 0) == 0)
        #expect(try TokenFile.load(path: link).tokens.count == 1)
    }

    /// A tokens file below a directory every user can write (no sticky bit) is refused, the
    /// file's or its link's: any of them could put their own file in its place. A sticky one
    /// (as /tmp) is not.
    @Test func aTokensFileBelowADirectoryEveryoneCanWriteIsRefused() throws {
        let dir = TempDir()
        let open = dir.sub("open")
        #expect(mkdir(open, 0o700) == 0 && chmod(open, 0o777) == 0)
        let path = open + "/tokens.json"
        let (_, t) = TokenFile.newToken(name: "any", role: .admin, organizations: [])
        try TokenFile(tokens: [t]).save(path: path)
        do {
            _ = try TokenFile.load(path: path)
            Issue.record("a tokens file in a 777 directory loaded")
        } catch {
            #expect("\(error)" == "the tokens file \(path) is below \(open), which every user can write (mode 777): any of them could put another tokens file in its place; keep it where only its owner can write")
        }
        #expect(chmod(open, 0o1777) == 0)
        #expect(try TokenFile.load(path: path).tokens.count == 1)
        // A link in an open directory, to a file kept safe; and a safe link to a file in one.
        #expect(chmod(open, 0o700) == 0)
        let safe = dir.sub("safe.json")
        try TokenFile(tokens: [t]).save(path: safe)
        let other = dir.sub("other")
        #expect(mkdir(other, 0o777) == 0 && chmod(other, 0o777) == 0)
        #expect(symlink(safe, other + "/link.json") == 0)
        #expect(throws: ServeError.self) { try TokenFile.load(path: other + "/link.json") }
        #expect(chmod(open, 0o777) == 0)
        #expect(symlink(path, dir.sub("link.json")) == 0)
        #expect(throws: ServeError.self) { try TokenFile.load(path: dir.sub("link.json")) }
        #expect(chmod(open, 0o700) == 0)
        #expect(try TokenFile.load(path: dir.sub("link.json")).tokens.count == 1)
    }

    /// An admin token narrowed by hand to some organizations does not load: it read every
    /// organization regardless, without a word (hostile test). A reader with the same list does.
    @Test func anAdminTokenWithOrganizationsDoesNotLoad() throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        var (_, t) = TokenFile.newToken(name: "narrowed", role: .reader, organizations: ["fsh"])
        try TokenFile(tokens: [t]).save(path: path)
        #expect(try TokenFile.load(path: path).tokens.count == 1)
        t.role = .admin
        try TokenFile(tokens: [t]).save(path: path)
        #expect(throws: ServeError.self) { try TokenFile.load(path: path) }
        do { _ = try TokenFile.load(path: path) } catch {
            #expect("\(error)".contains("admin token \"narrowed\" lists organizations"), "\(error)")
        }
    }

    /// A key the server does not read ("orgs" for "organizations") and two entries for one token
    /// do not load: the first loaded an admin narrowed by hand as a full admin, the second let
    /// the later entry's role win (hostile test).
    @Test func unknownKeysAndRepeatedTokensDoNotLoad() throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        let (_, admin) = TokenFile.newToken(name: "ops", role: .admin, organizations: [])
        let orgs = #"{"tokens":[{"name":"ops","sha256":"\#(admin.sha256)","role":"admin","orgs":["fsh"]}]}"#
        try Data(orgs.utf8).write(to: URL(fileURLWithPath: path))
        do { _ = try TokenFile.load(path: path); Issue.record("an unknown key loaded") } catch {
            #expect("\(error)".contains("tokens[0] has a key the server does not read, \"orgs\""), "\(error)")
        }
        let twice = #"{"tokens":[{"name":"a","sha256":"\#(admin.sha256)","role":"admin"},"#
            + #"{"name":"b","sha256":"\#(admin.sha256.uppercased())","role":"reader","organizations":["fsh"]}]}"#
        try Data(twice.utf8).write(to: URL(fileURLWithPath: path))
        do { _ = try TokenFile.load(path: path); Issue.record("one token in two entries loaded") } catch {
            #expect("\(error)".contains("tokens[1] has the same hash as tokens[0]"), "\(error)")
        }
        try TokenFile(tokens: [admin]).save(path: path)
        #expect(try TokenFile.load(path: path).tokens.count == 1, "the file token new writes loads")
    }

    /// A token pasted where a value goes is not repeated by the error (which the server logs).
    @Test func aBrokenFileIsDescribedWithoutItsValues() throws {
        let dir = TempDir()
        let path = dir.sub("tokens.json")
        let (token, t) = TokenFile.newToken(name: "x", role: .admin, organizations: [])
        let text = String(decoding: try TokenFile(tokens: [t]).encodedForTest(), as: UTF8.self)
            .replacingOccurrences(of: "\"admin\"", with: "\"\(token)\"")
        #expect(text.contains(token))
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        do {
            _ = try TokenFile.load(path: path)
            Issue.record("a role that is a token loaded")
        } catch {
            #expect(!"\(error)".contains(token) && "\(error)".contains("tokens[0].role"), "\(error)")
        }
    }

    @Test func aFileCreatedAfterTheStartIsRead() throws {
        let dir = TempDir()
        let path = dir.sub("api-tokens.json")
        #expect(throws: (any Error).self) { try TokenRegistry(path: path) }
        let registry = try TokenRegistry(path: path, optional: true)
        let (token, t) = TokenFile.newToken(name: "late", role: .admin, organizations: [])
        #expect(registry.caller(bearer: token) == nil)
        nextSecond()
        try TokenFile(tokens: [t]).save(path: path)
        #expect(registry.caller(bearer: token)?.name == "late")
        // The store's file, there at the start: read at once.
        #expect(try TokenRegistry(path: path, optional: true).caller(bearer: token)?.name == "late")
    }
}

extension TokenFile {
    /// The file's bytes as `save` writes them.
    func encodedForTest() throws -> Data {
        let dir = TempDir()
        try save(path: dir.sub("t.json"))
        return try Data(contentsOf: URL(fileURLWithPath: dir.sub("t.json")))
    }

    /// A run asked for by a token whose name names a roster patient is recorded without that
    /// name (it would stay in the log in the clear for good), and the server says so once per run.
    @Test func aTokenNameThatNamesAPatientIsNotRecorded() throws {
        let patient = try #require(Fixtures.roster.allPatients.first { $0.name != nil })
        let name = try #require(patient.name)
        var warnings: [String] = []
        let withheld = Coordinator.recordable("api:" + name.replacingOccurrences(of: " ", with: "_") + "_x", roster: Fixtures.roster) { warnings.append($0) }
        #expect(withheld == "api:(name withheld)")
        #expect(warnings.count == 1 && !warnings[0].contains(name) && warnings[0].contains("rename the token"), "\(warnings)")
        #expect(Coordinator.recordable("admin:" + name, roster: Fixtures.roster) { warnings.append($0) } == "admin:(name withheld)")
        for fine in ["api:ops", "admin:front-desk", "webhook", "schedule"] {
            #expect(Coordinator.recordable(fine, roster: Fixtures.roster) { warnings.append($0) } == fine)
        }
        #expect(warnings.count == 2)
    }
}
