import ArgumentParser
import Foundation

/// `syncledger demo` hands over to `syncledger-demo`, the program beside this one that runs a fake
/// IntakeQ and drives this binary through it. The fake server lives only in that program, so the
/// shipped `syncledger` links neither it nor its HTTP server.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "The whole story on bundled fixtures, through a local fake IntakeQ server.",
        discussion: """
            Runs `syncledger-demo` (built beside syncledger by ./tools/demo.sh, or \
            `swift build --product syncledger-demo`) with these arguments: a fake IntakeQ on a \
            free loopback port, one sync per simulated day into a fresh store, then the views, one \
            history, a verify and a rebuild.
            """)

    @Option(help: ArgumentHelp("Write the demo store here (a new or empty directory).", valueName: "DIR")) var store: String?
    @Option(help: ArgumentHelp("The fixtures directory (default: the repository's Fixtures/).", valueName: "DIR")) var fixtures: String?

    func validate() throws {
        if store?.isEmpty == true { throw ValidationError("--store is empty: give a new directory for the demo store, or no --store for a temporary one") }
    }

    func run() throws {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let dir = (exe as NSString).deletingLastPathComponent
        let demo = dir + "/syncledger-demo"
        guard FileManager.default.isExecutableFile(atPath: demo) else {
            warn("syncledger: the demo program is not built: run ./tools/demo.sh, or `swift build --product syncledger-demo` and retry")
            throw ExitCode(1)
        }
        // As the user invoked it (".build/debug/syncledger" from tools/demo.sh), so the lines the demo
        // prints paste as they are.
        let invoked = CommandLine.arguments[0].contains("/") ? CommandLine.arguments[0] : exe
        var args = [demo, "--syncledger", invoked]
        if let store { args += ["--store", store] }
        if let fixtures { args += ["--fixtures", fixtures] }
        let cArgs = args.map { strdup($0) } + [nil]
        execv(demo, cArgs)
        warn("syncledger: cannot start \(demo): \(String(cString: strerror(errno)))")
        throw ExitCode(1)
    }
}
