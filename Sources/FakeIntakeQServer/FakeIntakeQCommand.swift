import ArgumentParser
import FakeIntakeQ
import Foundation

/// `fake-intakeq --fixtures Fixtures/practice --day 1 --port 8080 --api-key test`
@main
struct FakeIntakeQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fake-intakeq",
        abstract: "Serve a fixture practice over a local fake IntakeQ API (for demos and manual testing)."
    )

    @Option(help: "Fixture practice directory (holding day-NN.json).")
    var fixtures: String = "Fixtures/practice"

    @Option(help: "Timeline day to serve.")
    var day: Int = 1

    @Option(help: "Port on 127.0.0.1 (0 = any free port).")
    var port: Int = 0

    @Option(name: .customLong("api-key"), help: "The X-Auth-Key clients must send.")
    var apiKey: String = "test-key"

    @Option(name: .customLong("requests-per-minute"), help: "Answer 429 above this many requests per minute.")
    var requestsPerMinute: Int?

    @Option(name: .customLong("fail-rate"), help: "Answer this share of requests (0 to 1) with 500.")
    var failRate: Double = 0

    @Option(name: .customLong("seed"), help: "Seed of --fail-rate's choices (printed; default: random).")
    var seed: UInt64?

    @Option(name: .customLong("429-every"), help: "Answer every Nth request with 429 and Retry-After: 1.")
    var every429: Int?

    @Option(name: .customLong("delay-ms"), help: "Wait this long before answering each request.")
    var delayMs: Int?

    @Option(name: .customLong("html-page"), help: "Answer page N of /appointments with an HTML error page (200).")
    var htmlPage: Int?

    @Option(name: .customLong("truncate-page"), help: "Cut page N of /appointments off partway.")
    var truncatePage: Int?

    func validate() throws {
        guard failRate.isFinite, (0...1).contains(failRate) else { throw ValidationError("--fail-rate must be between 0 and 1") }
        if let every429, every429 < 1 { throw ValidationError("--429-every must be at least 1") }
        if let delayMs, delayMs < 0 || delayMs > 600_000 { throw ValidationError("--delay-ms must be between 0 and 600000") }
        for (name, page) in [("--html-page", htmlPage), ("--truncate-page", truncatePage)] {
            if let page, page < 1 { throw ValidationError("\(name) must be a page number (1 or more)") }
        }
    }

    func run() async throws {
        let practice: FixturePractice
        do {
            // Accept the repository's Fixtures/ as well as Fixtures/practice.
            let dir = FileManager.default.fileExists(atPath: fixtures + "/practice/day-01.json") ? fixtures + "/practice" : fixtures
            practice = try FixturePractice.load(directory: dir)
        } catch {
            throw ValidationError("cannot load fixtures from \(fixtures): \(error)")
        }
        guard let d = practice.day(day) else {
            throw ValidationError("no day \(day) in \(fixtures) (have \(practice.days.map(\.day)))")
        }
        let server = FakeIntakeQServer(state: d.state, apiKey: apiKey, requestsPerMinute: requestsPerMinute)
        // Page faults first: a request gets the first fault that matches it.
        if let htmlPage { server.inject(.malformed, path: "/appointments", page: htmlPage, times: Int.max) }
        if let truncatePage { server.inject(.truncated, path: "/appointments", page: truncatePage, times: Int.max) }
        if let delayMs, delayMs > 0 { server.inject(.delay(Double(delayMs) / 1000), path: "*", times: Int.max) }
        let chosenSeed = seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        if failRate > 0 || every429 != nil {
            server.setStandingFaults(failRate: failRate, every429: every429, seed: chosenSeed)
        }
        let url = try await server.start(port: port)
        var faults: [String] = []
        if failRate > 0 { faults.append("fail-rate \(failRate) (seed \(chosenSeed))") }
        if let every429 { faults.append("429 every \(every429)") }
        if let delayMs { faults.append("delay \(delayMs) ms") }
        if let htmlPage { faults.append("HTML on page \(htmlPage)") }
        if let truncatePage { faults.append("page \(truncatePage) truncated") }
        let banner = "fake IntakeQ serving day \(d.day) (now \(d.now)) at \(url)\n"
            + (faults.isEmpty ? "" : "faults: " + faults.joined(separator: ", ") + "\n")
            + "(\(d.state.appointments.count) appointments, \(d.state.deleted.count) deleted; Ctrl-C to stop)\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
        while true { try await Task.sleep(nanoseconds: 3_600_000_000_000) }
    }
}
