import Domain
import Foundation
import IntakeQ
import Logging
import PostgresSink
import Sync

/// Everything `syncledger serve` needs; the CLI fills it from its options.
public struct ServeConfiguration: Sendable {
    public var storePath: String
    public var roster: Roster
    public var host: String = "127.0.0.1"
    public var port: Int = 8080
    public var baseURL: String = "https://intakeq.com/api/v1"
    public var apiKey: String
    /// `--daily-at HH:MM`: the automated_daily run, in `timeZone`.
    public var dailyAt: (hour: Int, minute: Int)?
    /// `--keys DIR`: the key store when it is kept apart from the store (nil: `STORE/keys`), for
    /// the server's runs, reads and the PostgreSQL sink. `serve` took `--keys` and never passed
    /// it on: its first run made a new key store in `STORE/keys` and sealed new events under it
    /// (cold review).
    public var keysPath: String?
    /// `--timezone`: the practice's IANA time zone; nil for the roster's (`zoneName`).
    public var timeZone: String?
    /// The practice's time zone for the API, the admin pages and `--daily-at`: `--timezone`,
    /// else the roster's, else UTC. Read by the same loader as every other command
    /// (`PracticeZone`): through Foundation's `TimeZone`, a name only the loader knew
    /// (`posix/America/Denver`) became UTC for the API without a word while the admin pages used
    /// the roster's, and `GMT+5` came back as `GMT+0500`, which the loader refused (hostile test).
    public var zoneName: String { timeZone ?? roster.timezone ?? "UTC" }
    public var tokensPath: String?
    /// The tokens file may not exist yet (the store's default one): it is read once it appears.
    public var tokensFileOptional = false
    /// The webhook path secret (≥ 32 characters); nil: no webhook route.
    public var webhookSecret: String?
    public var policy: RateLimitPolicy = RateLimitPolicy()
    public var maxRetries = 4
    public var timeoutSeconds = 30.0
    /// Webhook ids wait this long after the first arrives, so a burst becomes one run.
    public var webhookBatchDelay = 0.2
    /// An id IntakeQ did not answer waits this long before it is asked again, doubled for each
    /// run in a row that leaves it, up to `webhookIdRetryMaxSeconds`; so does the whole inbox
    /// after runs that IntakeQ answered none of, up to `webhookRetryMaxSeconds`.
    public var webhookRetrySeconds = 5.0
    public var webhookRetryMaxSeconds = 900.0
    /// The longest wait of one id IntakeQ keeps failing. Each try after its first failure is one
    /// call (no in-run retries): about 20 calls a day, its waits climbing to 4 hours again after
    /// each completed run. Every 15 minutes, with the default 4 retries per try, it had been
    /// ~480, nearly the base plan's 500.
    public var webhookIdRetryMaxSeconds = 4 * 3600.0
    /// At most this many ids per webhook run.
    public var maxIdsPerRun = 100
    public var logger: Logger = Logger(label: "syncledger.serve")
    /// `--postgres URL`: the PostgreSQL sink that catches up after every run (nil: none).
    public var postgres: PostgresSink?
    /// `--alert-webhook`, `--alert-command` and how deliveries are retried.
    public var alertTargets = AlertTargets()
    /// The alert conditions' thresholds (SERVICE.md's defaults).
    public var alertRules = AlertRules()
    /// The conditions are checked after every run and at least this often (seconds).
    public var alertCheckSeconds = 30.0
    /// The alerts' clock (epoch millis); tests move it.
    public var alertClock: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    /// `--idle-timeout`: seconds a connection may send nothing, between requests or inside one
    /// (its head or its body), before it is closed.
    public var idleTimeoutSeconds = 20
    /// How many connections are served at once (nil: half the descriptors the process may
    /// open beyond 64, at least 8 and at most 1,000); more wait in the listen backlog until one
    /// closes.
    public var maxConnections: Int?
    /// `--metrics-public`: `/metrics` without a token (it holds no personal data).
    public var metricsPublic = false
    /// Called with the bound port once the server listens.
    public var onListening: (@Sendable (Int) -> Void)?

    public init(storePath: String, roster: Roster, apiKey: String) {
        self.storePath = storePath
        self.roster = roster
        self.apiKey = apiKey
    }

    /// A warning when the file holding a secret can be read by users other than its owner
    /// (the webhook secret is the webhook URL's only protection), or nil. A warning, not a
    /// refusal: a secrets mount may give its files a mode of its own.
    public static func exposureWarning(secretFile path: String, what: String) -> String? {
        // FileManager, not stat(): in this module `struct stat` belongs to whichever C module
        // included <sys/stat.h> first (CDispatch), which a clean build refuses to see.
        // The file a link leads to (a secrets mount links its files): the link's own mode is 777.
        let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        guard let permissions = (try? FileManager.default.attributesOfItem(atPath: target))?[.posixPermissions] as? Int,
              permissions & 0o044 != 0 else { return nil }
        let mode = String(permissions & 0o777, radix: 8)
        return "warning: \(what) \(path) can be read by other users (mode \(mode)): `chmod 600 \(path)` keeps it to its owner"
    }

    /// Parses `HH:MM` (24-hour clock).
    public static func parseDailyAt(_ text: String) -> (hour: Int, minute: Int)? {
        let p = text.split(separator: ":", omittingEmptySubsequences: false)
        // Digits only: `Int` also reads a sign ("+1:30" was 01:30).
        guard p.count == 2, p[0].count == 2, p[1].count == 2, p.allSatisfy({ $0.utf8.allSatisfy { (48...57).contains($0) } }),
              let h = Int(p[0]), let m = Int(p[1]),
              (0...23).contains(h), (0...59).contains(m) else { return nil }
        return (h, m)
    }

    /// The next moment after `now` at which the practice's clock in `zone` reads `at`: once per
    /// local day. In a gap (spring forward) the time moves forward by the gap, in an overlap
    /// (fall back) it is the earlier instant (`ZoneRules.utcMillis(of:)`). (Where the clocks
    /// skip midnight itself, as in America/Nuuk, a time in the skipped hour before it runs just
    /// after midnight, on the next local day, which then has two runs.) Foundation's
    /// `Calendar.nextDate` gave Denver's 01:30 twice on the day clocks fall back, and no run at
    /// all on Lord Howe's spring-forward day (hostile test).
    public static func nextDaily(after now: Date, at: (hour: Int, minute: Int), in zone: ZoneRules) -> Date {
        let nowMillis = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
        let today = zone.local(atUTCMillis: nowMillis).date.daysSinceEpoch
        for day in today...(today + 2) {
            let t = zone.utcMillis(of: CivilDateTime(date: CivilDate(daysSinceEpoch: day), hour: at.hour, minute: at.minute))
            if t > nowMillis { return Date(timeIntervalSince1970: Double(t) / 1000) }
        }
        return now.addingTimeInterval(86_400)
    }
}
