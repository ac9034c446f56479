import Foundation
@testable import Service
import Testing
import TestSupport

/// docs/alerts.yml: Prometheus accepts it, its unit tests pass, and it names only metrics the
/// server exposes (rules and /metrics never drift).
@Suite struct AlertRulesTests {
    @Test func promtoolChecksTheRules() throws {
        let (status, out) = try Promtool.run(["check", "rules", "docs/alerts.yml"])
        #expect(status == 0, "promtool check rules docs/alerts.yml:\n\(out)")
        #expect(out.contains("SUCCESS"))
    }

    @Test func promtoolUnitTestsTheRules() throws {
        let (status, out) = try Promtool.run(["test", "rules", "docs/alerts.test.yml"])
        #expect(status == 0, "promtool test rules docs/alerts.test.yml:\n\(out)")
        #expect(out.contains("SUCCESS"))
    }

    @Test func theRulesNameOnlyExposedMetricsAndCoverTheSixConditions() throws {
        let text = try String(contentsOfFile: Paths.root + "/docs/alerts.yml", encoding: .utf8)
        var names = Set<String>()
        var rest = Substring(text)
        while let r = rest.range(of: "syncledger_") {
            let tail = rest[r.lowerBound...]
            let name = tail.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            names.insert(String(name))
            rest = tail.dropFirst(name.count)
        }
        #expect(!names.isEmpty)
        for n in names { #expect(ServerMetrics.help[n] != nil, "docs/alerts.yml uses \(n), which /metrics does not expose") }
        for alert in ["SyncLedgerRunFailed", "SyncLedgerPartialSuccessRepeated", "SyncLedgerErrorShareHigh",
                      "SyncLedgerDailySyncStale", "SyncLedgerVerifyFailed", "SyncLedgerWebhookInboxStale"] {
            #expect(text.contains("alert: \(alert)\n"), "no rule \(alert)")
            let tests = try String(contentsOfFile: Paths.root + "/docs/alerts.test.yml", encoding: .utf8)
            #expect(tests.contains("alertname: \(alert)\n"), "no unit test of \(alert)")
        }
    }
}
