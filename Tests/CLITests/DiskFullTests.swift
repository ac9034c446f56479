import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A full disk under the store, made real: a small tmpfs mounted in a mount namespace of the
/// test's own (`unshare -m`, as root: CI runs the tests as root), the store copied onto it and
/// the rest of it filled.
@Suite struct DiskFullTests {
    /// Views behind the log on a full disk: the read commands read the views into memory and
    /// bring them up to the log there, with one warning line (every read, `status` too, failed
    /// with "the disk … is full", hostile test). With space freed, reads work as before.
    @Test func readsWorkWhenTheDiskUnderTheViewsIsFull() async throws {
        try #require(getuid() == 0, "mounting a tmpfs needs root (CI runs the tests as root)")
        let tmp = TempDir("disk-full")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        let practice = try Practice.load()
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let dayOne = try await cli(["appointments", "--store", store, "--json"])
        expectSuccess(dayOne)
        // The views as day 1 left them, beside the store; then day 2 is synced and those views put
        // back: the log holds day 2's events, the views do not (what a failed catch-up leaves).
        let saved = tmp.path + "/views-day1"
        try FileManager.default.createDirectory(atPath: saved, withIntermediateDirectories: false)
        let views = store + "/projections.sqlite"
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: views + suffix) {
            try FileManager.default.copyItem(atPath: views + suffix, toPath: saved + "/v" + suffix)
        }
        try await makeSyncedStore(at: store, practice: practice, days: [2])
        for suffix in ["", "-wal", "-shm"] {
            unlink(views + suffix)
            if FileManager.default.fileExists(atPath: saved + "/v" + suffix) {
                try FileManager.default.copyItem(atPath: saved + "/v" + suffix, toPath: views + suffix)
            }
        }

        let mount = tmp.path + "/small"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: false)
        let out = tmp.path + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        // $1 mount point, $2 store, $3 syncledger, $4 where the outputs go (not on the tmpfs).
        let script = """
            set -e
            mount -t tmpfs -o size=4m tmpfs "$1"
            cp -a "$2" "$1/s"
            mkdir "$1/tmp"
            dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null || true
            run() { name=$1; shift; set +e; "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; echo $? > "$OUT/$name.rc"; set -e; }
            OUT=$4
            run full-appointments "$3" appointments --store "$1/s" --json
            run full-status "$3" status --store "$1/s" --json
            run full-export "$3" export --store "$1/s" --format jsonl --out "$OUT/export.jsonl"
            (TMPDIR="$1/tmp"; export TMPDIR; run full-tmp "$3" appointments --store "$1/s" --json)
            rm "$1/filler"
            run freed-appointments "$3" appointments --store "$1/s" --json
            """
        let r = try await ProcessRunner.run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", script, "sh", mount, store,
                                                                   try Repo.requireBinary(), out], timeout: 120)
        try #require(r.status == 0 && !r.signaled, "unshare -m / mount -t tmpfs failed: \(r.stderrText)")
        func read(_ name: String) -> String {
            String(decoding: FileManager.default.contents(atPath: out + "/" + name) ?? Data(), as: UTF8.self)
        }
        let caughtUp = try await cli(["appointments", "--store", store, "--json"])
        expectSuccess(caughtUp)
        #expect(caughtUp.stdout != dayOne.stdout, "day 2 changed the appointments")
        let fullErr = read("full-appointments.err")
        #expect(read("full-appointments.rc") == "0\n", "\(fullErr)")
        #expect(read("full-appointments.out") == caughtUp.stdout, "the views brought up to the log in memory")
        let lines = fullErr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("warning: the disk holding the views database")
                && lines[0].contains("read into memory and brought up to the log for this command (nothing saved)"), "\(fullErr)")
        #expect(read("full-status.err").split(separator: "\n").count == 1, "\(read("full-status.err"))")
        // status answers, and counts the full disk as a problem (a monitor must still see it).
        let status = parseJSON(read("full-status.out")) as? [String: Any]
        #expect((status?["projection_lag"] as? NSNumber)?.intValue == 0 && status?["head"] != nil, "\(read("full-status.out"))")
        #expect(read("full-status.rc") == "1\n" && (status?["problems"] as? [String])?.contains {
            $0.contains("is full: the views were read into memory to answer")
        } == true, "\(read("full-status.out"))")
        // With the temporary directory on the full disk too, the copy into memory cannot be made:
        // the full disk is said, as before the fallback.
        #expect(read("full-tmp.rc") == "1\n" && read("full-tmp.out").contains("the disk holding the views database")
                && read("full-tmp.out").contains("is full: free space there"), "\(read("full-tmp.out"))\(read("full-tmp.err"))")

        // An export to another disk (it failed on the views' full disk too).
        let exported = try await cli(["export", "--store", store, "--format", "jsonl"])
        expectSuccess(exported)
        #expect(read("full-export.rc") == "0\n", "\(read("full-export.err"))")
        #expect(read("export.jsonl") == exported.stdout && !exported.stdout.isEmpty)
        #expect(read("full-export.err").contains("the views were read into memory for this command"), "\(read("full-export.err"))")

        #expect(read("freed-appointments.rc") == "0\n" && read("freed-appointments.err").isEmpty, "\(read("freed-appointments.err"))")
        #expect(read("freed-appointments.out") == caughtUp.stdout)
    }
}
