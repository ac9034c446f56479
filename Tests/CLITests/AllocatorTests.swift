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

    /// A rebuild over views of a 40,000-event log drops the live tables at the swap (tens of
    /// MB), and the views stay right. Stop 43 set SQLite's statement-journal spill
    /// (`SQLITE_CONFIG_STMTJRNL_SPILL`) to 4 MiB; from 256 KiB up, Debian's SQLite 3.40 then
    /// failed such a `DROP TABLE` (and some `CREATE INDEX`es) with "database or disk is full"
    /// (SQLITE_FULL) on a disk with 60 GB free, so every rebuild of a store past ~40,000 events
    /// failed at its swap, and an interrupted rebuild could not drop its shadow tables. The
    /// log is made by `syncledger-bench` (its synthetic practice), the views by `status`. Then
    /// the same with SQLite's temporary directory on a 2 MiB tmpfs.
    @Test func aRebuildOverLargeViewsReplacesThem() async throws {
        let tmp = TempDir("large-swap")
        defer { tmp.remove() }
        let bench = try #require(Paths.product("syncledger-bench"), "syncledger-bench is not built: run `swift build --build-tests`")
        let made = try await ProcessRunner.run(bench, ["--events", "40000", "--runs", "1", "--skip-baselines", "--skip-views",
                                                       "--encryption", "off", "--keep", "--scratch", tmp.path], timeout: 300)
        #expect(made.status == 0 && !made.signaled, "\(String(decoding: made.stdout + made.stderr, as: UTF8.self))")
        let runs = try FileManager.default.contentsOfDirectory(atPath: tmp.path).filter { $0.hasPrefix("syncledger-bench") }
        let store = tmp.path + "/" + (try #require(runs.first, "no kept store in \(tmp.path)")) + "/run-1/store"

        let caughtUp = try await cli(["status", "--store", store], timeout: 300)
        expectSuccess(caughtUp)
        #expect(caughtUp.stdout.contains("(lag 0)"), "\(caughtUp.stdout)")
        let size = (try FileManager.default.attributesOfItem(atPath: store + "/projections.sqlite")[.size] as? Int) ?? 0
        #expect(size > 8 << 20, "the views are only \(size) bytes: this test no longer drops large tables")
        let rebuilt = try await cli(["rebuild", "--store", store], timeout: 300)
        expectSuccess(rebuilt)
        #expect(rebuilt.stdout.contains("from 40000 events"), "\(rebuilt.stdout)\(rebuilt.stderr)")
        expectSuccess(try await cli(["verify", "--views", "--store", store], timeout: 300))

        // Again with SQLite's temporary directory on a 2 MiB tmpfs (a private mount namespace):
        // with Debian's `secure_delete` the swap's drops journalled every freed page to a
        // temporary file and failed with "database or disk is full" (hostile test, stop 44).
        let tiny = tmp.sub("tiny-tmp")
        try FileManager.default.createDirectory(atPath: tiny, withIntermediateDirectories: false)
        let script = "mount -t tmpfs -o size=2m tmpfs \"$1\" || exit 97; SQLITE_TMPDIR=\"$1\" exec \"$2\" rebuild --store \"$3\""
        let squeezed = try await ProcessRunner.run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", script, "sh", tiny, try Repo.requireBinary(), store],
                                                   timeout: 300)
        let said = String(decoding: squeezed.stdout + squeezed.stderr, as: UTF8.self)
        #expect(squeezed.status != 97, "cannot mount a tmpfs (this test needs root, as in CI): \(said)")
        #expect(squeezed.status == 0 && !squeezed.signaled && said.contains("from 40000 events"), "\(said)")
        expectSuccess(try await cli(["verify", "--views", "--store", store], timeout: 300))
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
        let pattern = /in the background the WAL was synced (\d+) times, and checkpointed in [0-9.]+ s while the indexes were built \((\d+) of its (\d+) frames then in the file\)/

        let on = try await cli(["rebuild", "--store", store, "--timings"])
        expectSuccess(on)
        let match = try #require(on.stdout.firstMatch(of: pattern), "\(on.stdout)")
        #expect((Int(match.2) ?? 0) > 0 && (Int(match.3) ?? 0) > 0, "nothing was checkpointed in the background: \(on.stdout)")
        expectSuccess(try await cli(["verify", "--views", "--store", store]))

        let off = try await cli(["rebuild", "--store", store, "--timings"], env: ["SYNCLEDGER_REBUILD_WRITEBACK": "0"])
        expectSuccess(off)
        #expect(off.stdout.contains("reading the log") && !off.stdout.contains("in the background"), "\(off.stdout)")
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
    }
}
