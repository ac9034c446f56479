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
        let url = try await server.start(port: port)
        let banner = "fake IntakeQ serving day \(d.day) (now \(d.now)) at \(url)\n"
            + "(\(d.state.appointments.count) appointments, \(d.state.deleted.count) deleted; Ctrl-C to stop)\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
        while true { try await Task.sleep(nanoseconds: 3_600_000_000_000) }
    }
}
