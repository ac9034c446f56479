import FakeIntakeQ
import Foundation
import TestSupport
import Testing

/// Issue 7, part 4: readers run correctly while a sync appends; a second writer fails at once.
extension CLIBinaryTests {
    /// `reschedule_d2` (Fixtures/README.md): recorded on day 1, changed on day 2.
    static let rescheduledId = "6a3f0000110136d812ea15a4"

    @Test("appointments, history, verify and export are consistent while a sync appends; a second sync is refused at once")
    func readersDuringSync() async throws {
        let practice = try Practice.load()
        let day1 = try #require(practice.day(1))
        let day2 = try #require(practice.day(2))
        let tmp = TempDir("concurrent")
        defer { tmp.remove() }
        let store = tmp.path + "/store"

        try await withFakeServer(day1) { server, url in
            // Day 1 first, so there is history to read; then day 2, slowed by the fake.
            let first = try await cli(syncArgs(store: store, baseURL: url, now: day1.now), env: keyEnv)
            expectSuccess(first)
            let baseSeq = try #require(headSeq(inSummary: first.stdout), "no head in: \(first.stdout)")

            server.setState(day2.state)
            // The window crawl (3 pages) and the deletedOnly poll answer after 0.8 s each: the
            // sync holds the lock for several seconds, having appended sync.started.
            server.inject(.delay(0.8), path: "/appointments", times: 4)
            let writer = try Launched(syncArgs(store: store, baseURL: url, now: day2.now), env: keyEnv, timeout: 90)
            let lockPath = store + "/log/LOCK"
            let holding = await waitUntil(timeout: 15) {
                (try? String(contentsOfFile: lockPath, encoding: .utf8)) == "\(writer.pid)\n"
            }
            #expect(holding, "the first sync (pid \(writer.pid)) never took the lock")

            // A second sync on the same store fails at once, naming the holder.
            let second = try await cli(syncArgs(store: store, baseURL: url, now: day2.now), env: keyEnv)
            #expect(writer.isRunning, "the first sync finished before the second was tried; the delay is too short")
            expectCleanFailure(second, mentioning: ["store is locked by pid \(writer.pid)"])
            #expect(second.status == 1)
            #expect(second.seconds < 1.0, "the second sync took \(second.seconds) s to fail")
            #expect((try? String(contentsOfFile: lockPath, encoding: .utf8)) == "\(writer.pid)\n",
                    "the refused sync overwrote LOCK")

            // Then days 3, 4 and 5 back to back, so the readers also overlap appends and the
            // writer's own catch-up of the views, not only the slow fetch.
            let writing = Locked(false)
            let writerTask = Task { () async throws -> [RunResult] in
                defer { writing.value = true }
                var results = [await writer.wait()]
                for n in 3...5 {
                    let day = try #require(practice.day(n))
                    server.setState(day.state)
                    results.append(try await cli(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv))
                }
                return results
            }

            // Readers, round after round, until the writer is done (and one round after).
            var roundsDuring = 0
            var lastAppointments = 0
            var finalRound = false
            while true {
                let running = !writing.value
                async let a = cli(["appointments", "--store", store, "--json"])
                async let h = cli(["history", "--store", store, Self.rescheduledId, "--json"])
                async let v = cli(["verify", "--store", store, "--json"])
                async let e = cli(["export", "--store", store, "--format", "jsonl"])
                let (ra, rh, rv, re) = try await (a, h, v, e)
                if running { roundsDuring += 1 }

                expectSuccess(ra)
                let rows = parseJSON(ra.stdout) as? [[String: Any]]
                #expect(rows != nil, "appointments --json did not parse: \(ra.stdout.prefix(200))")
                if let rows {
                    let ids = rows.compactMap { $0["appointment_id"] as? String }
                    #expect(ids.count == rows.count && Set(ids).count == ids.count, "appointment ids missing or repeated")
                    #expect(rows.allSatisfy { $0["removed"] is Bool })
                    #expect(rows.count >= 173, "appointments shrank to \(rows.count) rows")
                    #expect(rows.count >= lastAppointments, "appointments went from \(lastAppointments) to \(rows.count) rows")
                    lastAppointments = rows.count
                }

                expectSuccess(rh)
                let versions = parseJSON(rh.stdout) as? [[String: Any]] ?? []
                let seqs = versions.compactMap { $0["seq"] as? Int }
                #expect(!versions.isEmpty && seqs.count == versions.count, "history did not parse: \(rh.stdout.prefix(200))")
                #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "history seqs out of order: \(seqs)")

                expectSuccess(rv)
                let report = parseJSON(rv.stdout) as? [String: Any]
                #expect(report?["ok"] as? Bool == true, "verify: \(rv.stdout)")
                #expect((report?["events"] as? Int ?? 0) >= Int(baseSeq))

                expectSuccess(re)
                let lines = re.stdoutLines
                #expect(lines.count >= Int(baseSeq), "export has \(lines.count) events, fewer than \(baseSeq)")
                for (i, line) in lines.enumerated() {
                    guard let obj = parseJSON(line) as? [String: Any], obj["seq"] as? Int == i + 1 else {
                        Issue.record("export line \(i + 1) is not the event with seq \(i + 1): \(line.prefix(120))")
                        break
                    }
                }

                if finalRound { break }
                if !running { finalRound = true }
            }
            #expect(roundsDuring >= 3, "only \(roundsDuring) reader round(s) overlapped the sync")

            print("CLITests: \(roundsDuring) reader rounds (4 commands each) overlapped 4 syncs")
            let runs = try await writerTask.value
            for r in runs { expectSuccess(r) }
            #expect(runs[0].stdout.contains("2 new, 5 updated"), "day 2 summary: \(runs[0].stdout)")
            #expect(runs[3].stdout.contains("0 new, 0 updated, 175 unchanged"), "day 5 summary: \(runs[3].stdout)")
            let head = try #require(headSeq(inSummary: runs[3].stdout))

            // The refused sync left nothing: five runs recorded, all completed, gapless seqs.
            let events = try await exportedEvents(store)
            #expect(events.count == Int(head))
            for (i, e) in events.enumerated() { #expect(e["seq"] as? Int == i + 1) }
            let started = events.filter { $0["type"] as? String == "sync.started" }
            let completed = events.filter { $0["type"] as? String == "sync.completed" }
            #expect(started.count == 5 && completed.count == 5)
            #expect(Set(events.compactMap { $0["run"] as? String }).count == 5, "the refused run left events")
            let rh = try await cli(["history", "--store", store, Self.rescheduledId, "--json"])
            #expect((parseJSON(rh.stdout) as? [Any])?.count == 2)
            expectSuccess(try await cli(["verify", "--store", store]))
        }
    }
}
