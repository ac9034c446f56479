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

    /// The binary keeps SQLite's statement journals in memory (`SQLiteSettings`): with the views'
    /// 16 KiB pages, SQLite's default moved every `sync.completed`'s trigger-fired UPDATE to a
    /// temporary file. Catching up views from scratch here made one such file with the default;
    /// watched with inotify in the directory SQLite is told to use, none is made.
    @Test func theBinaryKeepsStatementJournalsInMemory() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("stmtjournal")
        defer { tmp.remove() }
        let store = tmp.sub("store"), sqliteTemp = tmp.sub("sqlite-tmp")
        try await makeSyncedStore(at: store, practice: practice)
        try FileManager.default.createDirectory(atPath: sqliteTemp, withIntermediateDirectories: false)
        for suffix in ["", "-wal", "-shm"] { removeTree(store + "/projections.sqlite" + suffix) }

        let watch = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        try #require(watch >= 0, "inotify_init1: errno \(errno)")
        defer { close(watch) }
        try #require(inotify_add_watch(watch, sqliteTemp, UInt32(IN_CREATE)) >= 0, "inotify_add_watch: errno \(errno)")
        // `status` creates the views and catches them up from the whole log.
        let r = try await cli(["status", "--store", store], env: ["SQLITE_TMPDIR": sqliteTemp])
        expectSuccess(r)
        #expect(r.stdout.contains("views applied through seq") && r.stdout.contains("completed"), "\(r.stdout)")
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { read(watch, $0.baseAddress, $0.count) }
        #expect(n < 0 && errno == EAGAIN, "SQLite made a temporary file in SQLITE_TMPDIR (\(n) bytes of inotify events)")
    }
}
