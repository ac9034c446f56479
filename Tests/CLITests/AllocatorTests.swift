import Foundation
import TestSupport
import Testing

extension CLIBinaryTests {
    /// The shipped binary runs on jemalloc (Package.swift links it into the executables): its
    /// version names it only when jemalloc's own counter saw the binary allocate, and jemalloc's
    /// statistics, asked for through its environment, come out at exit.
    @Test func theBinaryRunsOnJemalloc() async throws {
        let version = try await cli(["--version"])
        #expect(version.status == 0, "\(version.stderr)")
        #expect(version.stdout.hasPrefix("0.1.0 (jemalloc 5."), "\(version.stdout)")
        let stats = try await cli(["--version"], env: ["MALLOC_CONF": "stats_print:true"])
        #expect(stats.status == 0)
        #expect((stats.stdout + stats.stderr).contains("Begin jemalloc statistics"))
    }

    /// SQLite runs in multi-thread mode in the shipped binary (`SQLiteSettings`): set before the
    /// first connection opens, its connections take no mutex per call. The version names the
    /// mode SQLite reports for a connection opened then.
    @Test func theBinaryRunsSQLiteMultiThreaded() async throws {
        let version = try await cli(["--version"])
        #expect(version.status == 0, "\(version.stderr)")
        #expect(version.stdout.contains("; SQLite 3.") && version.stdout.contains(", multi-thread)"), "\(version.stdout)")
    }
}
