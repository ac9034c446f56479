import Foundation

/// Filters of `GET /appointments` (§2.2). Dates are `yyyy-MM-dd`; IntakeQ's time zone for
/// them is undocumented, so widen windows by a day and filter on `StartDate` locally.
public struct AppointmentQuery: Sendable, Hashable {
    /// Partial, case-insensitive match on client name or email — it can match other clients;
    /// always filter the results by ClientId.
    public var client: String?
    public var startDate: String?
    public var endDate: String?
    public var status: String?
    public var practitionerEmail: String?
    public var updatedSince: String?
    public var deletedOnly: Bool

    public init(client: String? = nil, startDate: String? = nil, endDate: String? = nil, status: String? = nil,
                practitionerEmail: String? = nil, updatedSince: String? = nil, deletedOnly: Bool = false) {
        self.client = client; self.startDate = startDate; self.endDate = endDate; self.status = status
        self.practitionerEmail = practitionerEmail; self.updatedSince = updatedSince; self.deletedOnly = deletedOnly
    }

    /// A window of whole UTC days covering [from, to], widened by `marginDays` on each side.
    public static func window(from: Date, to: Date, marginDays: Int = 1) -> AppointmentQuery {
        let m = Double(marginDays) * 86_400
        return AppointmentQuery(startDate: IntakeQDate.day(from.addingTimeInterval(-m)),
                                endDate: IntakeQDate.day(to.addingTimeInterval(m)))
    }

    /// Query items in a stable order, `page` last.
    public func queryItems(page: Int?) -> [(String, String)] {
        var q: [(String, String)] = []
        if let client { q.append(("client", client)) }
        if let startDate { q.append(("startDate", startDate)) }
        if let endDate { q.append(("endDate", endDate)) }
        if let status { q.append(("status", status)) }
        if let practitionerEmail { q.append(("practitionerEmail", practitionerEmail)) }
        if let updatedSince { q.append(("updatedSince", updatedSince)) }
        if deletedOnly { q.append(("deletedOnly", "true")) }
        if let page { q.append(("page", String(page))) }
        return q
    }
}

/// What a paged crawl produced. `complete` is true only when every page succeeded, the last
/// page was short (< 100) and the page cap was not hit: only then may absence mean removal.
public struct CrawlResult: Sendable {
    /// De-duplicated by `Id` (a row that shifted across a page boundary appears once; the
    /// copy with the newest `LastModified` wins), in the order first seen.
    public var appointments: [FetchedAppointment]
    public var pagesFetched: Int
    /// Rows per fetched page, in page order.
    public var pageSizes: [Int]
    public var complete: Bool
    /// True when the crawl stopped at `pageCap` with a full last page.
    public var hitPageCap: Bool
    /// Failed pages (after retries) and rows that failed to decode; each names its page.
    public var failures: [IntakeQError]
    /// A failure that stops the whole run (401, daily budget used up).
    public var fatal: IntakeQError?
    /// Rows seen more than once across pages.
    public var duplicates: Int

    public init(appointments: [FetchedAppointment] = [], pagesFetched: Int = 0, pageSizes: [Int] = [], complete: Bool = false,
                hitPageCap: Bool = false, failures: [IntakeQError] = [], fatal: IntakeQError? = nil, duplicates: Int = 0) {
        self.appointments = appointments; self.pagesFetched = pagesFetched; self.pageSizes = pageSizes
        self.complete = complete; self.hitPageCap = hitPageCap; self.failures = failures; self.fatal = fatal
        self.duplicates = duplicates
    }
}

/// Counters of one client's traffic.
public struct CallStats: Sendable, Hashable {
    /// HTTP requests sent (retries included); each one used a slot of the limiter.
    public var calls = 0
    /// Requests repeated after 429/5xx.
    public var retries = 0
    /// Waits caused by the local limiter or by IntakeQ's 429.
    public var rateLimitWaits = 0
    /// Seconds spent in those waits and in back-off.
    public var waitedSeconds = 0.0
    /// IntakeQ answered 429 at least once.
    public var rateLimitHit = false
    /// How many times IntakeQ answered 429.
    public var responses429 = 0
    public init() {}
}
