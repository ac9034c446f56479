import Foundation
#if canImport(Glibc)
import Glibc
#endif
@testable import Service
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
        #expect(!registry.isAdmin(named: "keep"))

        // Fixed: the tokens it lists work again.
        nextSecond()
        text.removeLast()
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        #expect(registry.caller(bearer: keep)?.name == "keep")
        #expect(registry.caller(bearer: revoke) == nil)

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
}
