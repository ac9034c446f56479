import Foundation
import Ledger
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `readInputFile`: the files a person hands the program (a roster, the API key file, the
/// webhook secret, the server's queue file) are read with the cause of a failure in words.
@Suite struct InputFileTests {
    @Test func eachCauseIsNamed() throws {
        let dir = TempDir("input-file")
        defer { dir.remove() }
        func words(_ path: String, limit: Int = 1 << 20) -> String? {
            if case .failure(let e) = readInputFile(path, limit: limit) { return e.words }
            return nil
        }
        #expect(words(dir.path + "/absent") == "does not exist")
        #expect(words(dir.path) == "is a directory")
        // /dev/zero never ends: read up to the limit, then refused (FileManager said "cannot be read").
        #expect(words("/dev/zero", limit: 4096) == "is larger than 4096 bytes (is it the right file?)")
        if case .failure(let e) = readInputFile(dir.path + "/absent", limit: 10) { #expect(e.code == ENOENT) }

        // Longer than one read, and exactly at the limit.
        var rng = SeededRNG(seed: 19)
        let long = (0..<200_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        try Data(long).write(to: URL(fileURLWithPath: dir.path + "/long"))
        #expect(try readInputFile(dir.path + "/long", limit: 200_000).get() == long)
        #expect(words(dir.path + "/long", limit: 199_999) == "is larger than 199999 bytes (is it the right file?)")
        try Data().write(to: URL(fileURLWithPath: dir.path + "/empty"))
        #expect(try readInputFile(dir.path + "/empty", limit: 10).get() == [])
        // A pipe (`INTAKEQ_API_KEY_FILE=<(pass show intakeq)`) is read to its end.
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        _ = "key-from-a-pipe\n".withCString { write(fds[1], $0, 16) }
        close(fds[1])
        defer { close(fds[0]) }
        #expect(try readInputFile("/proc/self/fd/\(fds[0])", limit: 4096).get() == Array("key-from-a-pipe\n".utf8))
    }
}
