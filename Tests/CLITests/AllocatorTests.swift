import Foundation
import Glibc
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

    /// The binary keeps SQLite's statement journals in memory (`SQLiteSettings`). With the
    /// views' 16 KiB pages, SQLite's own limit (64 KiB) moved the journal of a `sync.completed`'s
    /// trigger-firing UPDATE, and every later one of its transaction, to a temporary file.
    /// Catching up views from scratch, watched with inotify in the directory SQLite is told to
    /// use: with SQLite's limit (the control) a file is made there; with the binary's, none.
    @Test func theBinaryKeepsStatementJournalsInMemory() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("stmtjournal")
        defer { tmp.remove() }
        let store = tmp.sub("store")
        try await makeSyncedStore(at: store, practice: practice)

        /// Files SQLite created in its temporary directory while `status` created the views and
        /// caught them up from the whole log.
        func temporaryFiles(_ env: [String: String?], _ label: String) async throws -> Int {
            for suffix in ["", "-wal", "-shm"] { removeTree(store + "/projections.sqlite" + suffix) }
            let sqliteTemp = tmp.sub("sqlite-tmp-" + label)
            try FileManager.default.createDirectory(atPath: sqliteTemp, withIntermediateDirectories: false)
            let watch = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
            try #require(watch >= 0, "inotify_init1: errno \(errno)")
            defer { close(watch) }
            try #require(inotify_add_watch(watch, sqliteTemp, UInt32(IN_CREATE)) >= 0, "inotify_add_watch: errno \(errno)")
            let r = try await cli(["status", "--store", store], env: env.merging(["SQLITE_TMPDIR": sqliteTemp]) { a, _ in a })
            expectSuccess(r)
            #expect(r.stdout.contains("(lag 0)"), "\(label): \(r.stdout)")
            var created = 0
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let (n, error) = buffer.withUnsafeMutableBytes { b in
                    let n = read(watch, b.baseAddress, b.count)
                    return (n, errno)
                }
                if n < 0 {
                    try #require(error == EAGAIN, "\(label): reading inotify events: errno \(error)")
                    return created
                }
                // Each event: wd, mask, cookie, len (4 bytes each), then len bytes of name.
                var offset = 0
                while offset + 16 <= n {
                    let len = buffer.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self)) }
                    created += 1
                    offset += 16 + len
                }
            }
        }

        let withSQLiteDefault = try await temporaryFiles(["SYNCLEDGER_SQLITE_STATEMENT_JOURNAL_SPILL": "65536"], "default")
        #expect(withSQLiteDefault > 0, "the control made no temporary file: this test no longer shows anything")
        let asShipped = try await temporaryFiles([:], "shipped")
        #expect(asShipped == 0, "SQLite made \(asShipped) temporary file(s) in SQLITE_TMPDIR")
    }

    /// `syncledger rebuild` copies the rebuilt rows from the WAL into the file in the background
    /// while it builds the indexes (`RebuildWriteback`), and says so in `--timings`; with
    /// `SYNCLEDGER_REBUILD_WRITEBACK=0` it does not. The views are right either way.
    @Test func aRebuildCopiesItsRowsIntoTheFileWhileItBuildsTheIndexes() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("writeback")
        defer { tmp.remove() }
        let store = tmp.sub("store")
        try await makeSyncedStore(at: store, practice: practice)
        let pattern = /in the background the WAL synced (\d+) times and (\d+) of its pages copied into the file in [0-9.]+ s while the indexes were built/

        let on = try await cli(["rebuild", "--store", store, "--timings"])
        expectSuccess(on)
        let match = try #require(on.stdout.firstMatch(of: pattern), "\(on.stdout)")
        #expect((Int(match.2) ?? 0) > 0, "no page was copied in the background: \(on.stdout)")
        expectSuccess(try await cli(["verify", "--views", "--store", store]))

        let off = try await cli(["rebuild", "--store", store, "--timings"], env: ["SYNCLEDGER_REBUILD_WRITEBACK": "0"])
        expectSuccess(off)
        #expect(off.stdout.contains("reading the log") && !off.stdout.contains("in the background"), "\(off.stdout)")
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
    }
}
