import Foundation
import TestSupport
import Testing

/// Edge cases a hostile tester found in everyday commands: each is one clear answer, never a
/// silent one.
extension CLIBinaryTests {
    /// The head's seq, from `verify --json` ("SEQ:HASH").
    static func verifiedHeadSeq(of store: String) async throws -> UInt64 {
        let v = try await cli(["verify", "--store", store, "--json"])
        expectSuccess(v)
        let head = try #require((parseJSON(v.stdout) as? [String: Any])?["head"] as? String)
        return try #require(UInt64(head.prefix { $0 != ":" }))
    }

    /// `log --from-seq` one past the head asks "anything new?": nothing, exit 0. Further on is a
    /// mistake: one line naming the head.
    @Test func logFromSeqPastTheHead() async throws {
        let tmp = TempDir("logpast")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let head = try await Self.verifiedHeadSeq(of: store)
        #expect(head > 1)

        let last = try await cli(["log", "--store", store, "--from-seq", String(head)])
        expectSuccess(last)
        #expect(last.stdoutLines.count == 1, "the head's own event: \(last.stdout)")
        #expect(last.stdoutLines.first?.contains("\"seq\":\(head)") == true, "\(last.stdout)")

        let next = try await cli(["log", "--store", store, "--from-seq", String(head + 1)])
        expectSuccess(next)
        #expect(next.stdout.isEmpty && next.stderr.isEmpty, "nothing new is nothing at all: \(next.stdout)\(next.stderr)")
        let nextLimited = try await cli(["log", "--store", store, "--from-seq", String(head + 1), "--limit", "5"])
        expectSuccess(nextLimited)
        #expect(nextLimited.stdout.isEmpty)

        for past in [head + 2, 500_000] {
            let r = try await cli(["log", "--store", store, "--from-seq", String(past)])
            expectCleanFailure(r, mentioning: ["--from-seq \(past) is past the log's head (seq \(head))"])
            #expect(r.status == 1)
        }
        // A --limit reaching past the largest seq is "to the end", not an overflow.
        let huge = try await cli(["log", "--store", store, "--from-seq", String(head), "--limit", String(UInt64.max)])
        expectSuccess(huge)
        #expect(huge.stdoutLines.count == 1)
    }
}
