import CSpawn
import Foundation
import Subprocess
import Synchronization

#if canImport(System)
import System
#else
import SystemPackage
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a child process ended, and what it wrote.
public struct ProcessOutput: Sendable {
    public var executable: String
    public var arguments: [String]
    public var pid: Int32
    /// The exit code, or the signal number when `signaled` (-1 when the child's status was lost:
    /// another waiter reaped it).
    public var status: Int32
    /// Ended by a signal (a crash, a kill, or the timeout) instead of exiting.
    public var signaled: Bool
    /// Killed because it ran past its timeout.
    public var timedOut: Bool
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    public var seconds: Double

    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// The one way tests and tools start processes.
///
/// - `run` (async, to completion) uses swift-subprocess: it collects stdout and stderr
///   concurrently (no pipe can fill up) and never blocks a cooperative thread.
/// - `start` returns a `ChildProcess` handle at once, with its pid, for a test that must act
///   while the child runs (read the lock file it holds, SIGKILL it at a moment of its
///   choosing, see that it is still waiting). swift-subprocess keeps its `Execution` inside a
///   closure and is async-only, so a handle that outlives the call and a synchronous start
///   do not fit it; `ChildProcess` does that with posix_spawn (not Foundation's `Process`:
///   CSpawn.h says why).
/// - `runBlocking` is `start` + `waitBlocking` for synchronous callers (synchronous tests, the
///   benchmark), which block their thread exactly as `Process.waitUntilExit` always did.
public enum ProcessRunner {
    /// Runs `executable arguments…` to completion.
    /// - Parameters:
    ///   - environment: the whole environment; nil inherits this process's.
    ///   - overrides: set (or, with a nil value, remove) variables on top of that.
    ///   - timeout: SIGKILL the child after this many seconds (`timedOut` then says so).
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                           overrides: [String: String?] = [:], cwd: String? = nil, timeout: Double? = nil,
                           outputLimit: Int = 1 << 30) async throws -> ProcessOutput {
        var env = environment ?? ProcessInfo.processInfo.environment
        for (k, v) in overrides { env[k] = v }
        var custom: [Environment.Key: String] = [:]
        for (k, v) in env { custom[Environment.Key(stringLiteral: k)] = v }
        let killedByWatchdog = Locked(false)
        let started = Date()
        let result = try await Subprocess.run(
            .path(FilePath(executable)), arguments: Arguments(arguments), environment: .custom(custom),
            workingDirectory: cwd.map { FilePath($0) }, input: .none,
            output: .bytes(limit: outputLimit), error: .bytes(limit: outputLimit)
        ) { execution -> Task<Void, Never>? in
            guard let timeout else { return nil }
            // The watchdog outlives the closure only until `run` returns (then it is cancelled
            // before it can fire); Subprocess signals through the pidfd, never a reused pid.
            return Task {
                guard (try? await Task.sleep(for: .seconds(timeout))) != nil else { return }
                killedByWatchdog.value = true
                try? execution.send(signal: .kill)
            }
        }
        result.closureResult?.cancel()
        let (status, signaled): (Int32, Bool) = switch result.terminationStatus {
        case .exited(let code): (code, false)
        case .signaled(let signal): (signal, true)
        }
        return ProcessOutput(executable: executable, arguments: arguments, pid: result.processIdentifier.value,
                             status: status, signaled: signaled, timedOut: signaled && killedByWatchdog.value,
                             stdout: result.standardOutput, stderr: result.standardError,
                             seconds: Date().timeIntervalSince(started))
    }

    /// Starts `executable arguments…` and returns at once; see `ChildProcess`.
    /// - Parameters:
    ///   - stdoutPath, stderrPath: append stdout or stderr to this existing file instead (then not
    ///     collected); both may name one file.
    ///   - stdinPath: read stdin from this file instead of /dev/null.
    public static func start(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                             overrides: [String: String?] = [:], cwd: String? = nil, timeout: Double? = nil,
                             stdoutPath: String? = nil, stderrPath: String? = nil,
                             stdinPath: String? = nil) throws -> ChildProcess {
        try ChildProcess(executable, arguments, environment: environment, overrides: overrides, cwd: cwd, timeout: timeout,
                         stdoutPath: stdoutPath, stderrPath: stderrPath, stdinPath: stdinPath)
    }

    /// `start` and `waitBlocking`, for synchronous callers.
    public static func runBlocking(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                                   overrides: [String: String?] = [:], cwd: String? = nil, timeout: Double? = nil,
                                   stdoutPath: String? = nil, stdinPath: String? = nil) throws -> ProcessOutput {
        try start(executable, arguments, environment: environment, overrides: overrides, cwd: cwd, timeout: timeout,
                  stdoutPath: stdoutPath, stdinPath: stdinPath).waitBlocking()
    }
}

/// A started child process. Its stdout and stderr go to temporary files (no pipe can fill
/// up while nobody reads), read back when it ends; stdin is /dev/null unless `stdinPath` names
/// a file. With a timeout, a watchdog SIGKILLs it when that passes.
///
/// Started with posix_spawn (`syncledger_spawn`: every other descriptor closed in the child, a
/// process group of its own, default signals) and waited for by a thread of its own blocked in
/// `waitid(…, WNOWAIT)`, which sees the exit itself; the pid is reaped only under the lock that
/// `kill` takes, so a signal can never reach a reused pid. Not Foundation's `Process`: see
/// CSpawn.h for how that one missed a child's end by 80 s in CI.
public final class ChildProcess: Sendable {
    public let executable: String
    public let arguments: [String]
    public let pid: Int32
    private let outputs: String
    private let stdoutFile: String
    private let started = Date()
    private let state = Mutex(State())
    private let ended = DispatchSemaphore(value: 0)

    private struct State {
        var done = false
        var timedOut = false
        var status: Int32 = 0
        var signaled = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    fileprivate init(_ executable: String, _ arguments: [String], environment: [String: String]?,
                     overrides: [String: String?], cwd: String?, timeout: Double?, stdoutPath: String?,
                     stderrPath: String?, stdinPath: String?) throws {
        self.executable = executable
        self.arguments = arguments
        let dir = try makeTempDir("proc")
        outputs = dir
        stdoutFile = stdoutPath ?? dir + "/out"
        _ = FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        _ = FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        var env = environment ?? ProcessInfo.processInfo.environment
        for (k, v) in overrides { env[k] = v }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let rc = syncledger_spawn(&child, executable, argv, envp, cwd, stdinPath ?? "/dev/null", stdoutFile,
                                  stderrPath ?? dir + "/err")
        guard rc == 0 else {
            removeTree(dir)
            throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO)
        }
        pid = child
        let watcher = Thread { [self] in self.waitForExit() }
        watcher.name = "child \(child)"
        watcher.start()
        if let timeout {
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self] in
                guard let self else { return }
                self.state.withLock { s in
                    guard !s.done else { return }
                    s.timedOut = true
                    _ = sendSignal(self.pid, SIGKILL)
                }
            }
        }
    }

    deinit { removeTree(outputs) }

    /// The watcher thread: waits for the end without reaping, then reaps under the lock.
    private func waitForExit() {
        _ = syncledger_wait_ended(pid)
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
            var status: Int32 = 0
            var reaped: pid_t
            repeat { reaped = waitpid(pid, &status, 0) } while reaped == -1 && errno == EINTR
            s.done = true
            if reaped != pid {
                // Reaped by someone else (ECHILD): no status to report, and never "exit 0".
                s.status = -1
            } else if status & 0x7f == 0 {
                s.status = (status >> 8) & 0xff
            } else {
                s.status = status & 0x7f
                s.signaled = true
            }
            defer { s.waiters = [] }
            return s.waiters
        }
        ended.signal()
        for w in waiters { w.resume() }
    }

    public var isRunning: Bool { state.withLock { !$0.done } }

    /// What the child has written to stderr so far (it may still be running).
    public var stderrSoFar: String {
        String(decoding: FileManager.default.contents(atPath: outputs + "/err") ?? Data(), as: UTF8.self)
    }

    /// What the child has written to stdout so far (it may still be running).
    public var stdoutSoFar: String {
        String(decoding: FileManager.default.contents(atPath: stdoutFile) ?? Data(), as: UTF8.self)
    }

    /// Sends `signal` (SIGKILL by default) unless the child has already ended.
    public func kill(_ signal: Int32 = SIGKILL) {
        state.withLock { s in
            if !s.done { _ = sendSignal(pid, signal) }
        }
    }

    /// Waits without blocking a thread, then returns what the child wrote.
    public func wait() async -> ProcessOutput {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLock { s in
                if s.done { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
        return collect()
    }

    /// Blocks the calling thread until the child ends.
    public func waitBlocking() -> ProcessOutput {
        ended.wait()
        ended.signal()  // later calls return at once too
        return collect()
    }

    private func collect() -> ProcessOutput {
        let out = FileManager.default.contents(atPath: outputs + "/out") ?? Data()
        let err = FileManager.default.contents(atPath: outputs + "/err") ?? Data()
        let (status, signaled, timedOut) = state.withLock { ($0.status, $0.signaled, $0.timedOut) }
        return ProcessOutput(executable: executable, arguments: arguments, pid: pid, status: status,
                             signaled: signaled, timedOut: timedOut, stdout: Array(out), stderr: Array(err),
                             seconds: Date().timeIntervalSince(started))
    }
}

/// kill(2), out of reach of `ChildProcess.kill`'s name.
private func sendSignal(_ pid: Int32, _ signal: Int32) -> Int32 { kill(pid, signal) }
