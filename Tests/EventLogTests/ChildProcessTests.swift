import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// TestSupport's `ChildProcess`, which every test that acts while a child runs (the crash
/// harness, `serve`, the lock holders) relies on to say when it ended.
@Suite struct ChildProcessTests {
    /// A child that leaves a grandchild running ends when it exits, not when the grandchild
    /// does. Foundation's `Process` learns of an end from a socket the child inherits, so a
    /// grandchild holding that socket (here the background `sleep`; in CI an unrelated test's
    /// server that caught it while spawning) hid a finished crash harness for 80 s.
    @Test func aChildIsSeenToEndWhileItsGrandchildRuns() throws {
        let r = try ProcessRunner.runBlocking("/bin/sh", ["-c", "sleep 30 & echo $!; exit 3"], timeout: 20)
        if let orphan = Int32(r.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) { kill(orphan, SIGKILL) }
        #expect(!r.timedOut && !r.signaled && r.status == 3, "\(r)")
        #expect(r.seconds < 10, "took \(r.seconds) s")
    }

    @Test func theWatchdogKillsAndSaysSo() throws {
        let r = try ProcessRunner.runBlocking("/bin/sleep", ["30"], timeout: 0.5)
        #expect(r.timedOut && r.signaled && r.status == SIGKILL, "\(r)")
    }

    @Test func aSignalAfterTheEndReachesNobody() async throws {
        let child = try ProcessRunner.start("/bin/sh", ["-c", "exit 0"])
        let first = await child.wait()
        child.kill(SIGKILL)  // must not throw or reach a reused pid: the child is reaped
        let again = child.waitBlocking()
        #expect(first.status == 0 && again.status == 0 && !again.signaled && !child.isRunning)
    }

    /// stdin from a file, the working directory, stdout and stderr appended to one file, the
    /// environment's overrides, and nothing of the parent's descriptors but 0, 1 and 2.
    @Test func stdioDirectoryEnvironmentAndDescriptors() throws {
        let dir = TempDir("child")
        defer { dir.remove() }
        try Data("from stdin\n".utf8).write(to: URL(fileURLWithPath: dir.path + "/in"))
        let both = dir.path + "/both"
        _ = FileManager.default.createFile(atPath: both, contents: nil)
        let held = open(dir.path + "/in", O_RDONLY)  // not close-on-exec: must not reach the child
        defer { close(held) }
        let child = try ProcessRunner.start(
            "/bin/sh", ["-c", "cat; pwd; echo \"$CHILD_TEST\" >&2; ls /proc/self/fd | sort -n | tr '\\n' ' '"],
            overrides: ["CHILD_TEST": "overridden"], cwd: dir.path, stdoutPath: both, stderrPath: both, stdinPath: dir.path + "/in")
        let r = child.waitBlocking()
        #expect(r.status == 0)
        let text = String(decoding: FileManager.default.contents(atPath: both) ?? Data(), as: UTF8.self)
        let real = URL(fileURLWithPath: dir.path).resolvingSymlinksInPath().path
        #expect(text.hasPrefix("from stdin\n\(real)\noverridden\n"), "\(text)")
        // ls itself opens one directory descriptor (3) to list /proc/self/fd.
        #expect(text.hasSuffix("0 1 2 3 "), "the child inherited descriptors: \(text)")
    }
}
