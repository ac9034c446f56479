import FakeIntakeQ
import Foundation
import IntakeQ
import JSONCore
import TestSupport
import Testing

@Suite struct ClientTests {
    @Test func pagingStopsAtTheShortPage() async throws {
        let rig = try await Rig.start(state: syntheticState(250))
        let r = await rig.client.crawl(AppointmentQuery())
        #expect(r.complete && r.fatal == nil && r.failures.isEmpty && !r.hitPageCap)
        #expect(r.pagesFetched == 3)
        #expect(r.pageSizes == [100, 100, 50])
        #expect(r.appointments.count == 250)
        // Newest StartDate first.
        let starts = r.appointments.compactMap(\.startDate)
        #expect(starts == starts.sorted(by: >))
        #expect(rig.server.requests().map(\.page) == [1, 2, 3])
        let stats = await rig.client.stats()
        #expect(stats.calls == 3 && stats.retries == 0 && !stats.rateLimitHit)
        await rig.close()
    }

    @Test func exactMultipleOfPageSizeNeedsAnEmptyPage() async throws {
        let rig = try await Rig.start(state: syntheticState(200))
        let r = await rig.client.crawl(AppointmentQuery())
        #expect(r.pageSizes == [100, 100, 0] && r.complete)
        await rig.close()
    }

    @Test func pageCapMakesTheCrawlIncomplete() async throws {
        let rig = try await Rig.start(state: syntheticState(250))
        let r = await rig.client.crawl(AppointmentQuery(), pageCap: 2)
        #expect(!r.complete && r.hitPageCap && r.pagesFetched == 2)
        await rig.close()
    }

    @Test func fixtureWindowCrawlIsThreePagesAndBytesSurvive() async throws {
        let day = Fixtures.practice.day(1)!
        let rig = try await Rig.start(state: day.state)
        let q = AppointmentQuery.window(from: day.nowDate.addingTimeInterval(-90 * 86_400),
                                        to: day.nowDate.addingTimeInterval(90 * 86_400))
        #expect(q.startDate == "2026-08-21" && q.endDate == "2027-02-19")
        let r = await rig.client.crawl(q)
        #expect(r.complete)
        #expect(r.pagesFetched == 3 && r.pageSizes[0] == 100 && r.pageSizes[1] == 100 && r.pageSizes[2] < 100)
        // The fake serves re-indented JSON; the client's raw bytes equal the fixture's minified bytes.
        let fixtureRaw = Dictionary(uniqueKeysWithValues: try day.state.appointments.map {
            (try Appointment.decode(minifiedObject: $0).id!, $0)
        })
        for a in r.appointments { #expect(a.raw == fixtureRaw[a.id]) }
        let body = rig.server.requests().first
        #expect(body?.query["startDate"] == "2026-08-21" && body?.query["page"] == "1")

        // Deleted appointments only with deletedOnly=true.
        let deletedId = Fixtures.traps["deleted_before_day1"]!
        #expect(!r.appointments.contains { $0.id == deletedId })
        let del = await rig.client.crawl(AppointmentQuery(deletedOnly: true))
        #expect(del.complete && del.appointments.map(\.id).contains(deletedId))
        #expect(rig.server.requests().last?.query["deletedOnly"] == "true")
        await rig.close()
    }

    @Test func retriesA429HonouringRetryAfter() async throws {
        let rig = try await Rig.start(state: syntheticState(5))
        rig.server.inject(.status(429, retryAfter: 7), path: "/appointments")
        let page = try await rig.client.appointmentsPage(AppointmentQuery(), page: 1)
        #expect(page.count == 5)
        #expect(rig.clock.sleeps == [7])
        let stats = await rig.client.stats()
        #expect(stats.calls == 2 && stats.retries == 1 && stats.rateLimitHit && stats.rateLimitWaits == 1)
        #expect(stats.waitedSeconds == 7)
        #expect(rig.server.requests().map(\.status) == [429, 200])
        await rig.close()
    }

    @Test func serverErrorsBackOffThenGiveUp() async throws {
        let rig = try await Rig.start(state: syntheticState(5), maxRetries: 2)
        rig.server.inject(.status(503, retryAfter: nil), path: "/appointments", times: 10)
        do {
            _ = try await rig.client.appointmentsPage(AppointmentQuery(), page: 1)
            Issue.record("expected a server error")
        } catch let e as IntakeQError {
            #expect(e.code == .server && e.httpStatus == 503 && e.attempts == 3)
            #expect(e.description.contains("HTTP 503") && e.description.contains("page 1"))
        }
        #expect(rig.clock.sleeps == [2, 4])
        #expect(rig.server.requests().count == 3)
        // A 500 once is retried and succeeds.
        rig.server.clearFaults()
        rig.server.inject(.status(500, retryAfter: nil), path: "/appointments")
        #expect(try await rig.client.appointmentsPage(AppointmentQuery(), page: 1).count == 5)
        await rig.close()
    }

    @Test func backoffIsCapped() async throws {
        let rig = try await Rig.start(state: syntheticState(1), maxRetries: 8)
        rig.server.inject(.status(502, retryAfter: nil), path: "*", times: 8)
        _ = try await rig.client.appointmentsPage(AppointmentQuery(), page: 1)
        #expect(rig.clock.sleeps == [2, 4, 8, 16, 32, 64, 120, 120])
        await rig.close()
    }

    @Test func unauthorizedNeverShowsTheKey() async throws {
        let rig = try await Rig.start(state: syntheticState(5), apiKey: "right-key", clientKey: "wrong-key-XYZ")
        do {
            _ = try await rig.client.settings()
            Issue.record("expected 401")
        } catch let e as IntakeQError {
            #expect(e.code == .unauthorized)
            #expect(e.description == "IntakeQ refused the API key (HTTP 401); check INTAKEQ_API_KEY (or the file INTAKEQ_API_KEY_FILE names)")
            #expect(!"\(e)".contains("wrong-key-XYZ") && !"\(e)".contains("right-key"))
        }
        let r = await rig.client.crawl(AppointmentQuery())
        #expect(r.fatal?.code == .unauthorized && !r.complete && r.pagesFetched == 0)
        #expect(rig.server.requests().count == 2)  // 401 is not retried
        await rig.close()
    }

    @Test func badRequestCarriesIntakeQsMessage() async throws {
        let rig = try await Rig.start(state: syntheticState(5))
        rig.server.inject(.status(400, retryAfter: nil), path: "/appointments")
        do {
            _ = try await rig.client.appointmentsPage(AppointmentQuery(status: "Bogus"), page: 1)
            Issue.record("expected 400")
        } catch let e as IntakeQError {
            #expect(e.code == .badRequest && e.detail == "Injected failure.")
            #expect(e.description.contains("Injected failure."))
        }
        await rig.close()
    }

    @Test func malformedAndTruncatedPagesNameThePage() async throws {
        let rig = try await Rig.start(state: syntheticState(250))
        rig.server.inject(.malformed, path: "/appointments", page: 2)
        let r = await rig.client.crawl(AppointmentQuery())
        #expect(!r.complete)
        let e = try #require(r.failures.first)
        #expect(e.code == .decode && e.page == 2 && e.offset == 0)
        #expect(e.description.contains("GET /appointments page 2") && e.description.contains("HTML"))
        #expect(r.pagesFetched == 2 && r.appointments.count == 150)  // pages 1 and 3 still recorded

        rig.server.inject(.truncated, path: "/appointments", page: 1)
        do {
            _ = try await rig.client.appointmentsPage(AppointmentQuery(), page: 1)
            Issue.record("expected a decode error")
        } catch let e as IntakeQError {
            #expect(e.code == .decode && e.page == 1 && (e.offset ?? 0) > 100)
            #expect(e.description.contains("truncated"))
        }
        await rig.close()
    }

    @Test func aRowOfTheWrongShapeIsReportedWithItsKeyPath() async throws {
        var state = syntheticState(3)
        state.appointments.append(Array(#"{"Id":"bad","StartDate":"yesterday"}"#.utf8))
        let rig = try await Rig.start(state: state)
        let r = await rig.client.crawl(AppointmentQuery())
        #expect(r.appointments.count == 3 && !r.complete)
        #expect(r.failures.first?.keyPath == "[3].StartDate")
        #expect(r.failures.first?.page == 1)
        await rig.close()
    }

    /// Times the views cannot write with a four-digit year are refused, each with its key path;
    /// the first and last millisecond of the years 1–9999 are read.
    @Test func timesOutsideTheYears1To9999AreRefused() throws {
        for (json, path) in [(#"{"Id":"a","StartDate":8640000000000000}"#, "StartDate"),
                             (#"{"Id":"a","StartDate":253402300800000}"#, "StartDate"),
                             (#"{"Id":"a","StartDate":-62135596800001}"#, "StartDate")] {
            #expect(throws: IntakeQError.self, "\(json)") { try FetchedAppointment.parse(json: Array(json.utf8)) }
            do { _ = try FetchedAppointment.parse(json: Array(json.utf8)) } catch let e as IntakeQError {
                #expect(e.code == .decode && e.keyPath == path && e.description.contains("years 1 and 9999"), "\(e)")
            }
        }
        // An EndDate out of those years is not refused (the sync does not need it; the views
        // clamp its text): a refused row would leave the whole run without its removal lookups.
        for json in [#"{"Id":"a","StartDate":253402300799999,"EndDate":-62135596800000}"#, #"{"Id":"a","StartDate":null,"EndDate":"x"}"#,
                     #"{"Id":"a","StartDate":1788000000000,"EndDate":9e17}"#] {
            #expect(throws: Never.self) { try FetchedAppointment.parse(json: Array(json.utf8)) }
        }
    }

    /// An Id holding a NUL is refused: SQLite reads a bound text only up to its NUL, so two such
    /// ids were one row in the views and every later sync recorded false events (hostile test).
    @Test func anIdHoldingANulIsRefused() throws {
        for (json, path) in [(#"{"Id":"nul\u0000A","StartDate":1788000000000}"#, "Id"), (#"{"Id":"\u0000"}"#, "Id"),
                             (#"{"Id":"a","PractitionerId":"P1\u0000x"}"#, "PractitionerId"),
                             (#"{"Id":"a","LocationId":"\u00001"}"#, "LocationId")] {
            do {
                _ = try FetchedAppointment.parse(json: Array(json.utf8))
                Issue.record("\(json) was accepted")
            } catch let e as IntakeQError {
                #expect(e.code == .decode && e.keyPath == path && e.description.contains("NUL"), "\(e)")
            }
        }
        #expect(throws: Never.self) { try FetchedAppointment.parse(json: Array(#"{"Id":"nul\u0001A"}"#.utf8)) }
    }

    @Test func timeoutSaysHostAndHowLong() async throws {
        let rig = try await Rig.start(state: syntheticState(5), timeout: 0.3)
        rig.server.inject(.delay(seconds: 2), path: "/appointments")
        do {
            _ = try await rig.client.appointmentsPage(AppointmentQuery(), page: 1)
            Issue.record("expected a timeout")
        } catch let e as IntakeQError {
            #expect(e.code == .timeout)
            #expect(e.description.contains("127.0.0.1:") && e.description.contains("0.3 s"))
        }
        await rig.close()
    }

    @Test func connectionRefusedSaysHost() async throws {
        // Start and stop a server to get a port nobody listens on.
        let probe = FakeIntakeQServer(state: syntheticState(0), apiKey: "k")
        let url = try await probe.start()
        await probe.stop()
        let clock = ManualClock()
        let client = IntakeQClient(baseURL: url, apiKey: "k", limiter: RateLimiter(clock: clock), clock: clock,
                                   timeoutSeconds: 2)
        do {
            _ = try await client.settings()
            Issue.record("expected a transport error")
        } catch let e as IntakeQError {
            #expect(e.code == .transport || e.code == .timeout)
            #expect(e.description.contains(url.replacingOccurrences(of: "http://", with: "").replacingOccurrences(of: "/api/v1", with: "")))
        }
        try await client.shutdown()
    }

    @Test func singleAppointmentAnd404() async throws {
        let day = Fixtures.practice.day(2)!
        let rig = try await Rig.start(state: day.state)
        let id = Fixtures.traps["telehealth_joinurl"]!
        let a = try #require(try await rig.client.appointment(id: id))
        #expect(a.id == id && a.value["TelehealthInfo"]?["JoinUrl"]?.stringValue != nil)
        #expect(try await rig.client.appointment(id: "does-not-exist") == nil)
        #expect(try await rig.client.appointment(id: Fixtures.traps["delete_d2"]!) == nil)  // deleted → 404
        let s = try PracticeSettings.decode(json: try await rig.client.settings().raw)
        #expect(s.locations?.first?.address?.contains("Main Street") == true)
        #expect(s.location(id: 2)?.name == "Telehealth")
        let clients = try await rig.client.clients(search: "sam.lee", page: 1)
        #expect(clients.count == 2)
        await rig.close()
    }

    @Test func clientSearchIsAPartialMatchTrap() async throws {
        let rig = try await Rig.start(state: Fixtures.practice.day(1)!.state)
        for search in ["sam.lee@example.org", "Sam Lee", "SAM LEE"] {
            let r = await rig.client.crawl(AppointmentQuery(client: search))
            let names = Set(r.appointments.compactMap { $0.value["ClientName"]?.stringValue })
            // IntakeQ's `client=` also finds the other client whose name/email contains the text.
            if search.contains("@") {
                #expect(names == ["Sam Lee"])
            } else {
                #expect(names == ["Sam Lee", "Sam Leeds"])
            }
        }
        let r = await rig.client.crawl(AppointmentQuery(client: "sam.lee"))
        #expect(Set(r.appointments.compactMap { $0.value["ClientName"]?.stringValue }) == ["Sam Lee", "Sam Leeds"])
        let day1 = try Fixtures.practice.day(1)!.state.appointments.map { try Appointment.decode(minifiedObject: $0) }
        let lee = day1.filter { $0.clientId == 4117 }.count, leeds = day1.filter { $0.clientId == 5300 }.count
        #expect(lee >= 2 && leeds == 3)
        let mine = r.appointments.filter { $0.clientId == "4117" }
        #expect(mine.count == lee && r.appointments.count == lee + leeds)
        #expect(rig.server.requests().last?.query["client"] == "sam.lee")
        await rig.close()
    }

    @Test func filtersByDayStatusAndUpdatedSince() async throws {
        let rig = try await Rig.start(state: syntheticState(48))  // 2026-11-20T10:00Z + 0…47 h
        let r = await rig.client.crawl(AppointmentQuery(startDate: "2026-11-21", endDate: "2026-11-21"))
        #expect(r.appointments.count == 24)
        #expect(await rig.client.crawl(AppointmentQuery(status: "Canceled")).appointments.isEmpty)
        #expect(await rig.client.crawl(AppointmentQuery(updatedSince: "2026-11-20")).appointments.isEmpty)
        #expect(await rig.client.crawl(AppointmentQuery(updatedSince: "2026-11-19")).appointments.count == 48)
        await rig.close()
    }

    @Test func fakePerMinuteLimitAnswers429() async throws {
        let rig = try await Rig.start(state: syntheticState(5), maxRetries: 0, serverLimit: 2)
        _ = try await rig.client.settings()
        _ = try await rig.client.settings()
        do {
            _ = try await rig.client.settings()
            Issue.record("expected 429")
        } catch let e as IntakeQError {
            #expect(e.code == .rateLimited)
        }
        let last = try #require(rig.server.requests().last)
        #expect(last.status == 429)
        #expect(await rig.client.stats().rateLimitHit)
        await rig.close()
    }

    @Test func dailyBudgetStopsTheCrawl() async throws {
        let rig = try await Rig.start(state: syntheticState(250), policy: .init(requestsPerMinute: 100, dailyBudget: 2))
        let r = await rig.client.crawl(AppointmentQuery())
        #expect(r.pagesFetched == 2 && !r.complete)
        #expect(r.fatal?.code == .dailyBudgetExhausted)
        #expect(rig.server.requests().count == 2)
        await rig.close()
    }

    @Test func localLimiterPacesRequests() async throws {
        let rig = try await Rig.start(state: syntheticState(250), policy: .init(requestsPerMinute: 2, dailyBudget: 500))
        let r = await rig.client.crawl(AppointmentQuery())
        #expect(r.complete)
        let stats = await rig.client.stats()
        #expect(stats.rateLimitWaits == 1 && stats.waitedSeconds == 60 && !stats.rateLimitHit)
        await rig.close()
    }

    @Test func setStateSwitchesDays() async throws {
        let rig = try await Rig.start(state: Fixtures.practice.day(1)!.state)
        let id = Fixtures.traps["vanish_d3"]!
        #expect(try await rig.client.appointment(id: id) != nil)
        rig.server.setState(Fixtures.practice.day(3)!.state)
        #expect(try await rig.client.appointment(id: id) == nil)
        await rig.close()
    }
}
