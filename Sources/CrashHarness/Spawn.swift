#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TestSupport

/// A child process with its stdout on a pipe. The harness's own small runner, not TestSupport's
/// `ProcessRunner` (swift-subprocess): the harness is a synchronous, single-threaded loop
/// that must SIGKILL a child at a random instant mid-write, keep reading the pipe as it goes
/// (a line cut by the kill is dropped, a complete one counts as acknowledged), and reap the
/// child itself before checking the log. Subprocess only exposes a running child inside an
/// async closure and owns the reaping; posix_spawn here keeps every descriptor and the exact
/// moment of the kill in the harness's hands.
final class Child {
    let pid: pid_t
    private var readFD: Int32
    private var buffer: [UInt8] = []

    /// Starts `argv[0]` (an absolute path) with stdout piped to us; stderr is inherited, or
    /// written to the file `stderrPath` (created or truncated) when one is given.
    init(_ argv: [String], environment: [String: String] = [:], stderrPath: String? = nil) throws {
        var fds: [Int32] = [0, 0]
        // pipe2 is not visible from Swift's Glibc; the harness is single-threaded, so setting
        // close-on-exec right after pipe() cannot race with another spawn.
        guard pipe(&fds) == 0 else { throw HarnessError("pipe failed: errno \(errno)") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        if let stderrPath {
            posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        }
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") { env[String(text[..<eq])] = String(text[text.index(after: eq)...]) }
            p += 1
        }
        for (k, v) in environment { env[k] = v }
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cEnv.forEach { free($0) } }
        var child = pid_t()
        let rc = posix_spawn(&child, argv[0], &actions, nil, cArgs, cEnv)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw HarnessError("cannot start \(argv[0]): \(String(cString: strerror(rc)))")
        }
        pid = child
        readFD = fds[0]
        _ = fcntl(readFD, F_SETFL, fcntl(readFD, F_GETFL) | O_NONBLOCK)
    }

    deinit {
        if readFD >= 0 { close(readFD) }
    }

    /// Collects output until `seconds` pass or the child closes stdout (exits).
    /// Returns false when the child closed stdout early.
    @discardableResult
    func collect(for seconds: Double) -> Bool {
        let deadline = now() + seconds
        while true {
            let left = deadline - now()
            if left <= 0 { return true }
            var pfd = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(max(1, left * 1000)))
            if !drain() { return false }
        }
    }

    /// Reads what is available; false at end of file.
    private func drain() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(readFD, $0.baseAddress!, $0.count) }
            if n > 0 { buffer.append(contentsOf: chunk[..<n]); continue }
            if n == 0 { return false }
            let code = errno
            if code == EINTR { continue }
            return code == EAGAIN || code == EWOULDBLOCK
        }
    }

    /// SIGKILLs the child, reaps it and reads the rest of its output. Returns the wait status.
    func kill() -> Int32 {
        _ = Glibc.kill(pid, SIGKILL)
        return wait()
    }

    /// Waits for the child to exit and reads the rest of its output. Returns the wait status.
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        while drain() {
            var pfd = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 100)
        }
        return status
    }

    /// Everything written to stdout so far, including an unterminated last line.
    var output: String { String(decoding: buffer, as: UTF8.self) }

    /// Complete lines written so far (a line cut by the kill is dropped).
    var lines: [String] {
        var out: [String] = []
        var start = 0
        for i in buffer.indices where buffer[i] == 10 {
            out.append(String(decoding: buffer[start..<i], as: UTF8.self))
            start = i + 1
        }
        return out
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// Writes a line to a descriptor with one write(2), so that a SIGKILL never leaves it in a
/// userspace buffer (print() would).
func emit(_ line: String, to fd: Int32 = 1) {
    let bytes = Array((line + "\n").utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 { if errno == EINTR { continue } else { return } }
        done += n
    }
}

/// The absolute path of this executable.
func selfPath() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    if n > 0 { return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    return CommandLine.arguments[0]
}

