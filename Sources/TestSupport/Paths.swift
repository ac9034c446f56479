import Foundation

/// Where things are in the repository, and the executables the package builds.
public enum Paths {
    /// The repository root, from this file's path (Sources/TestSupport/Paths.swift).
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    public static var repo: String { root }
    public static var fixtures: String { root + "/Fixtures" }
    public static var practice: String { fixtures + "/practice" }
    public static var roster: String { fixtures + "/roster.json" }

    /// A built executable of this package (`syncledger`, `crash-harness`, `fake-intakeq`, …),
    /// or nil when it is not built. Looks, in order, at `$SYNCLEDGER_BIN` (for `syncledger`
    /// only), beside the running executable or test bundle (the same build configuration),
    /// then `.build/debug`, `.build/<triple>/debug` and `.build/release`.
    public static func product(_ name: String) -> String? {
        let fm = FileManager.default
        var candidates: [String] = []
        if name == "syncledger", let env = ProcessInfo.processInfo.environment["SYNCLEDGER_BIN"], !env.isEmpty {
            candidates.append(env)
        }
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            // …/.build/<triple>/debug/SyncLedgerPackageTests.xctest, or a sibling executable.
            candidates.append((exe as NSString).deletingLastPathComponent + "/" + name)
        }
        candidates.append(root + "/.build/debug/" + name)
        if let triples = try? fm.contentsOfDirectory(atPath: root + "/.build") {
            candidates += triples.sorted().map { root + "/.build/" + $0 + "/debug/" + name }
        }
        candidates.append(root + "/.build/release/" + name)
        return candidates.first { fm.isExecutableFile(atPath: $0) }
    }

    /// The `syncledger` binary, or an error saying how to build it.
    public static func binary() throws -> String {
        guard let b = product("syncledger") else {
            throw TestSupportError("the syncledger binary is missing: run `swift build --product syncledger` (or `swift build --build-tests`) first")
        }
        return b
    }
}

/// The name the CLI tests use for the same locations.
public typealias Repo = Paths
