// swift-tools-version:6.0
import Foundation
import PackageDescription

/// Every target of this package: the upcoming-feature flags the anchors use, and warnings as
/// errors when `SYNCLEDGER_WERROR` is set (tools/test.sh sets it under CI). `unsafeFlags` is
/// allowed here because this is the root package; it never reaches dependencies.
let settings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
] + (ProcessInfo.processInfo.environment["SYNCLEDGER_WERROR"] != nil ? [.unsafeFlags(["-warnings-as-errors"])] : [])

let package = Package(
    name: "SyncLedger",
    // macOS 15: Synchronization.Mutex, the one lock type.
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "syncledger", targets: ["SyncLedgerCLI"]),
        .executable(name: "syncledger-demo", targets: ["SyncLedgerDemo"]),
        .executable(name: "fake-intakeq", targets: ["FakeIntakeQServer"]),
        .executable(name: "syncledger-bench", targets: ["SyncLedgerBench"]),
        .executable(name: "crash-harness", targets: ["CrashHarness"]),
        .library(name: "EventLog", targets: ["EventLog"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        // liblz4 from the system (apt: liblz4-dev). Only EventLog imports it.
        .systemLibrary(
            name: "CLZ4",
            pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"])]
        ),
        // jemalloc from the system (apt: libjemalloc-dev), the executables' allocator (Allocator).
        .systemLibrary(
            name: "CJemalloc",
            pkgConfig: "jemalloc",
            providers: [.apt(["libjemalloc-dev"])]
        ),
        .target(name: "Allocator", dependencies: ["CJemalloc"]),
        // CRC32C (Castagnoli): SSE4.2 instruction when present, table fallback; memmem; getrandom.
        .target(name: "CChecksum"),
        // AES-256-GCM boxes through the system's OpenSSL libcrypto (apt: libssl-dev), a context per
        // thread: sealing's and opening's hot path (Ledger's `GCM`).
        .target(name: "CGCM", linkerSettings: [.linkedLibrary("crypto")]),
        // SQLite's process-wide settings (multi-thread mode, no memory statistics), set before the
        // first connection opens; the system's SQLite (apt: libsqlite3-dev), as GRDB links it.
        .target(name: "CSQLiteTuning", linkerSettings: [.linkedLibrary("sqlite3")]),
        // posix_spawn with closefrom and chdir, and a non-reaping wait, for TestSupport's ChildProcess.
        .target(name: "CSpawn"),
        .target(
            name: "EventLog",
            dependencies: [
                "CLZ4", "CChecksum", "Paths",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The one JSON value: fast parser, canonical form, diffs. No Foundation, no dependencies.
        .target(name: "JSONCore", dependencies: ["CChecksum"]),
        // Path arithmetic without Foundation's (which traps on some relative paths on Linux).
        .target(name: "Paths"),
        // Pure appointment rules (facts, status, meeting link, visit type, roster membership, time).
        .target(name: "Domain", dependencies: ["JSONCore"]),
        .target(
            name: "IntakeQ",
            dependencies: [
                "Paths",
                "JSONCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Ledger",
            dependencies: [
                "EventLog", "JSONCore", "Domain", "CChecksum", "CGCM", "Paths",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "Projections",
            dependencies: [
                "Ledger", "Domain", "JSONCore", "EventLog", "CSQLiteTuning", "Paths",
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's C API, as GRDB imports it: the chunked fold binds values directly.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]
        ),
        // The PostgreSQL sink: the SQLite views' rows shipped to PostgreSQL, exactly once.
        .target(
            name: "PostgresSink",
            dependencies: [
                "Projections", "Ledger", "Domain", "JSONCore", "EventLog",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Sync",
            dependencies: [
                "Ledger", "IntakeQ", "Projections", "Domain", "JSONCore", "EventLog",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // `syncledger serve`: the HTTP server (webhooks, scheduler, manual runs, read API) on the store.
        .target(
            name: "Service",
            dependencies: [
                "Sync", "Projections", "Ledger", "EventLog", "IntakeQ", "Domain", "JSONCore", "PostgresSink", "Paths",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system", condition: .when(platforms: [.linux])),
            ]
        ),
        // Test double and demo support: never a dependency of the shipped `syncledger`.
        .target(
            name: "FakeIntakeQ",
            dependencies: [
                "IntakeQ", "JSONCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "SyncLedgerCLI",
            dependencies: [
                "Sync", "Service", "Projections", "Ledger", "EventLog", "IntakeQ", "Domain", "JSONCore", "PostgresSink",
                "Allocator", "Paths",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // `syncledger-demo`: a fake IntakeQ on loopback driving the real `syncledger` binary.
        .executableTarget(
            name: "SyncLedgerDemo",
            dependencies: [
                "FakeIntakeQ", "JSONCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "FakeIntakeQServer",
            dependencies: [
                "FakeIntakeQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "SyncLedgerBench",
            dependencies: [
                "EventLog", "Ledger", "Projections", "Domain", "JSONCore", "TestSupport", "PostgresSink", "Allocator",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "CrashHarness",
            dependencies: [
                "EventLog", "Ledger", "JSONCore", "TestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/CrashHarness"
        ),
        // What every test target, the crash harness and the benchmark share: temporary
        // directories, repository paths, the seeded RNG, the manual clock, the process runner
        // and the lock box. Never a dependency of a shipped product.
        .target(
            name: "TestSupport",
            dependencies: [
                "IntakeQ", "CSpawn",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system", condition: .when(platforms: [.linux])),
            ]
        ),
        .testTarget(name: "EventLogTests", dependencies: ["EventLog", "TestSupport"]),
        .testTarget(name: "IntakeQTests", dependencies: ["IntakeQ", "FakeIntakeQ", "Domain", "JSONCore", "TestSupport"]),
        .testTarget(name: "LedgerTests", dependencies: ["Paths", "Ledger", "Projections", "PostgresSink", "IntakeQ", "EventLog", "Domain", "JSONCore", "TestSupport"]),
        .testTarget(name: "SyncTests", dependencies: ["Sync", "FakeIntakeQ", "Projections", "Ledger", "EventLog", "IntakeQ", "Domain", "JSONCore", "TestSupport"]),
        .testTarget(name: "AuditTests", dependencies: ["Sync", "FakeIntakeQ", "Projections", "Ledger", "EventLog", "IntakeQ", "Domain", "JSONCore", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: [
            "EventLog", "Ledger", "FakeIntakeQ", "IntakeQ", "Domain", "JSONCore", "TestSupport",
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        .testTarget(name: "PostgresSinkTests", dependencies: [
            "PostgresSink", "Service", "Sync", "FakeIntakeQ", "Projections", "Ledger", "EventLog", "IntakeQ", "Domain", "JSONCore", "TestSupport",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "ServiceTests", dependencies: [
            "Service", "Sync", "FakeIntakeQ", "Projections", "Ledger", "IntakeQ", "Domain", "JSONCore", "TestSupport",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)

// libFuzzer target for the segment reader: only when tools/fuzz.sh asks for it (it links
// against libFuzzer's main, so an ordinary build could not link it).
if ProcessInfo.processInfo.environment["SYNCLEDGER_FUZZ"] != nil {
    package.targets.append(.executableTarget(name: "SegmentFuzz", dependencies: ["EventLog"]))
    package.products.append(.executable(name: "segment-fuzz", targets: ["SegmentFuzz"]))
}

// The shared settings on every Swift target (the C ones take none). Release builds also inline
// across this package's modules (`-cross-module-optimization`: the fold's calls from Domain and
// Projections into JSONCore's scanner, the reader's into EventLog): at 100k events, rebuild
// +6 %, its folding -14 %, replay +14 % (BENCHMARKS.md, "Cross-module optimization").
for target in package.targets where target.type != .system && !["CChecksum", "CGCM"].contains(target.name) {
    target.swiftSettings = (target.swiftSettings ?? []) + settings
        + [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]
}
