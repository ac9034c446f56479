#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// crash-harness: proves that SIGKILL at any moment loses nothing acknowledged (issue 7).
///
///     crash-harness [--kills N] [--seed S] [--rounds-per-store R] [--max-delay SECONDS] [--keep]
///     crash-harness sync --syncledger PATH --fake PATH --fixtures DIR --roster FILE [--kills N] [--seed S] [--max-delay SECONDS] [--keep]
///     crash-harness child LOGDIR SEED      (internal: the appending child)
///     crash-harness fill LOGDIR            (internal: append until the disk or a file-size limit refuses)
let usage = """
    usage: crash-harness [--kills N] [--seed S] [--rounds-per-store R] [--max-delay SECONDS] [--keep]
           crash-harness sync --syncledger PATH --fake PATH --fixtures DIR --roster FILE [--kills N] [--seed S] [--max-delay SECONDS] [--keep]
    """

var args = Array(CommandLine.arguments.dropFirst())
if args.first == "child", args.count == 3, let seed = UInt64(args[2]) {
    runAppendChild(directory: args[1], seed: seed)
}
if args.first == "fill", args.count == 2 {
    runFill(directory: args[1])
}
if args.first == "read", args.count == 2 {
    runRead(directory: args[1])
}

var mode = "append"
if args.first == "sync" {
    mode = "sync"
    args.removeFirst()
}
var options: [String: String] = [:]
var keep = false
var i = 0
while i < args.count {
    let a = args[i]
    if a == "--keep" { keep = true; i += 1; continue }
    if a == "--help" || a == "-h" { emit(usage); exit(0) }
    guard a.hasPrefix("--"), i + 1 < args.count else { fail("unexpected argument '\(a)'\n" + usage) }
    options[String(a.dropFirst(2))] = args[i + 1]
    i += 2
}

func intOption(_ name: String, _ fallback: Int, _ options: [String: String]) -> Int {
    guard let text = options[name] else { return fallback }
    guard let v = Int(text), v > 0 else { fail("--\(name) must be a positive integer, got '\(text)'") }
    return v
}

var seedSource = SystemRandomNumberGenerator()
let seed: UInt64 = options["seed"].map { text in
    guard let v = UInt64(text) else { fail("--seed must be an unsigned integer, got '\(text)'") }
    return v
} ?? seedSource.next()
let kills = intOption("kills", mode == "sync" ? 50 : 1000, options)

switch mode {
case "sync":
    let known: Set<String> = ["kills", "seed", "syncledger", "fake", "fixtures", "roster", "max-delay"]
    if let bad = options.keys.first(where: { !known.contains($0) }) { fail("unknown option --\(bad)\n" + usage) }
    guard let syncledger = options["syncledger"], let fake = options["fake"], let fixtures = options["fixtures"],
          let roster = options["roster"] else { fail("sync mode needs --syncledger, --fake, --fixtures and --roster\n" + usage) }
    exit(runSyncHarness(kills: kills, seed: seed, syncledger: syncledger, fake: fake, fixtures: fixtures,
                        roster: roster, maxDelay: Double(options["max-delay"] ?? "") ?? 0.6, keep: keep))
default:
    let known: Set<String> = ["kills", "seed", "rounds-per-store", "max-delay"]
    if let bad = options.keys.first(where: { !known.contains($0) }) { fail("unknown option --\(bad)\n" + usage) }
    exit(runAppendHarness(kills: kills, seed: seed, roundsPerStore: intOption("rounds-per-store", 100, options),
                          maxDelay: Double(options["max-delay"] ?? "") ?? 0.08, keep: keep))
}
