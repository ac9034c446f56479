import Domain
import EventLog
import Foundation
import GRDB
import JSONCore
import Ledger
@testable import Projections
import TestSupport
import Testing

/// The pipelined fold (each chunk read and folded on a second thread while the one before is
/// written) must give the same rows as applying the events one by one, and fail the same way.
@Suite struct PipelinedFoldTests {
    func reference(_ tmp: TempStore) throws -> ProjectionStore {
        let views = try ProjectionStore(path: tmp.sibling("reference-\(UUID().uuidString).sqlite"))
        views.chunkedFold = false
        views.eventsPerTransaction = 3
        try views.catchUp(try LedgerReader(store: tmp.store))
        return views
    }

    func expectSame(_ views: ProjectionStore, _ reference: ProjectionStore, _ what: String, seed: UInt64) throws {
        let diff = try views.differences(from: reference)
        #expect(diff.total == 0, "seed \(seed), \(what): \(diff.first.map(\.description).joined(separator: "\n"))")
        #expect(try ChunkedFoldTests.quarantine(views) == ChunkedFoldTests.quarantine(reference), "seed \(seed), \(what)")
        #expect(try snapshot(views) == snapshot(reference), "seed \(seed), \(what)")
    }

    /// Many small chunks, so chunk ends, roster/settings barriers and quarantined events land
    /// everywhere: rebuilds, one catch-up from nothing, and catch-ups after every few appends.
    @Test func pipelinedFoldEqualsEventByEventApplication() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("PipelinedFoldTests seed: \(seed)")
        for round in 0..<2 {
            let seed = seed &+ UInt64(round)
            let tmp = try TempStore()
            let incremental = try ProjectionStore(path: tmp.sibling("incremental.sqlite"))
            incremental.pipelineMinEvents = 0
            var rng = SeededRNG(seed: seed ^ 0xF01D)
            try ChunkedFoldTests.randomLog(tmp.store, seed: seed, appends: 200) { step in
                guard step % 11 == 5 else { return }
                incremental.eventsPerTransaction = 1 + Int(rng.next() % 6)
                // The reader works out the observations' facts for the fold: always, or never.
                incremental.prepareWhenQueued = rng.next() % 2 == 0 ? 0 : .max
                try incremental.catchUp(try LedgerReader(store: tmp.store))
            }
            incremental.eventsPerTransaction = 2
            try incremental.catchUp(try LedgerReader(store: tmp.store))
            let reference = try reference(tmp)
            try expectSame(incremental, reference, "pipelined catch-ups", seed: seed)
            #expect(incremental.pipelinedFolds > 5)

            let reader = try LedgerReader(store: tmp.store)
            // Appointments held back between chunks: the default, none, and limits so small that
            // most of each chunk's go over them.
            let limits = [4_096, 1, 3, 0, 2, 4_096, 1 + Int(rng.next() % 8)]
            // Observations' facts worked out by the reader: always (0), never, or while the fold is behind.
            let prepares = [0, .max, 0, 1, 0, FoldPipeline.readAhead / 2, Int(rng.next() % 3)]
            for ((chunk, limit), prepare) in zip(zip([1, 2, 3, 5, 8, 13, 1 + Int(rng.next() % 40)], limits), prepares) {
                let rebuilt = try ProjectionStore(path: tmp.sibling("rebuilt-\(chunk)-\(UUID().uuidString).sqlite"))
                rebuilt.pipelineMinEvents = 0
                rebuilt.eventsPerTransaction = chunk
                rebuilt.carriedAppointmentsLimit = limit
                rebuilt.prepareWhenQueued = prepare
                // Every other rebuild with a record of the appointments written that says yes to
                // nearly every id: stored rows are looked up for appointments that have none.
                let bits = chunk % 2 == 0 ? 64 : 0
                rebuilt.knownAppointmentsBits = bits
                _ = try rebuilt.rebuild(names: [], reader)
                try expectSame(rebuilt, reference, "pipelined rebuild in chunks of \(chunk), holding back \(limit), preparing at \(prepare), \(bits) bits", seed: seed)
                #expect(rebuilt.pipelinedFolds == 1, "the rebuild ran through the pipeline")
                if prepare == 0 {
                    #expect(rebuilt.preparedObservations > 0, "the reader prepared observations")
                } else if prepare == .max {
                    #expect(rebuilt.preparedObservations == 0)
                }
                // One projection rebuilt alone: the others keep their rows and checkpoints.
                _ = try rebuilt.rebuild(names: ["appointments"], reader)
                try expectSame(rebuilt, reference, "pipelined rebuild of appointments in chunks of \(chunk)", seed: seed)
                _ = try rebuilt.rebuild(names: ["stream_index"], reader)
                try expectSame(rebuilt, reference, "pipelined rebuild of the stream index in chunks of \(chunk)", seed: seed)
                _ = try rebuilt.rebuild(names: ["meeting_urls", "locations"], reader)
                try expectSame(rebuilt, reference, "pipelined rebuild of meeting URLs and locations in chunks of \(chunk)", seed: seed)
            }
            // Views at different checkpoints: the stream index folded alone while the others are
            // at the head, and the others alone while the stream index is.
            for first in [allProjections.filter { $0.name != "stream_index" }, allProjections.filter { $0.name == "stream_index" }] {
                let path = tmp.sibling("staggered-\(UUID().uuidString).sqlite")
                let some = try ProjectionStore(path: path, projections: first)
                some.pipelineMinEvents = 0
                some.eventsPerTransaction = 3
                try some.catchUp(reader)
                let all = try ProjectionStore(path: path)
                all.pipelineMinEvents = 0
                all.eventsPerTransaction = 1 + Int(rng.next() % 7)
                try all.catchUp(reader)
                try expectSame(all, reference, "\(first.map(\.name)) first, then the rest", seed: seed)
            }
            let fresh = try ProjectionStore(path: tmp.sibling("fresh.sqlite"))
            fresh.pipelineMinEvents = 0
            fresh.eventsPerTransaction = 4
            fresh.prepareWhenQueued = 0
            try fresh.catchUp(reader)
            try expectSame(fresh, reference, "one pipelined catch-up in chunks of 4", seed: seed)
            #expect(fresh.pipelinedFolds == 1)
            #expect(fresh.preparedObservations > 0, "the reader prepared observations")

            // The one-thread path, for the same log, with the pipeline turned off.
            let alone = try ProjectionStore(path: tmp.sibling("alone.sqlite"))
            alone.pipelineMinEvents = .max
            alone.eventsPerTransaction = 4
            _ = try alone.rebuild(names: [], reader)
            try expectSame(alone, reference, "one-thread rebuild in chunks of 4", seed: seed)
            #expect(alone.pipelinedFolds == 0)

            // Keys: a forgotten patient's sealed parts read as "(forgotten)" and a missing key
            // fails the rebuild with the same error, whether the reader or the fold opens them.
            let keys = try KeyRing.open(directory: tmp.store.keysPath, create: false, environment: [:], notice: { _ in })
            try keys.destroyKey(for: "p-018", at: "2026-12-01T00:00:00.000Z")
            let forgetting = try self.reference(tmp)
            let emptyKeys = try KeyRing.open(directory: tmp.sibling("no-keys-\(UUID().uuidString)"), create: true, environment: [:], notice: { _ in })
            var failures: [String] = []
            for prepare in [0, Int.max] {
                let views = try ProjectionStore(path: tmp.sibling("forgotten-\(prepare)-\(UUID().uuidString).sqlite"))
                views.pipelineMinEvents = 0
                views.eventsPerTransaction = 1 + Int(rng.next() % 9)
                views.prepareWhenQueued = prepare
                _ = try views.rebuild(names: [], try LedgerReader(store: tmp.store))
                try expectSame(views, forgetting, "pipelined rebuild after a patient was forgotten, preparing at \(prepare)", seed: seed)
                let keyless = try ProjectionStore(path: tmp.sibling("keyless-\(prepare)-\(UUID().uuidString).sqlite"))
                keyless.pipelineMinEvents = 0
                keyless.eventsPerTransaction = 3
                keyless.prepareWhenQueued = prepare
                do {
                    _ = try keyless.rebuild(names: [], try LedgerReader(store: tmp.store, keys: emptyKeys))
                    failures.append("no error")
                } catch {
                    failures.append("\(error)")
                }
            }
            #expect(failures[0] == failures[1] && failures[0].contains("has no key for patient"), "seed \(seed): \(failures)")
        }
    }

    /// An appointment observed in every chunk is written once by a rebuild, not once per chunk:
    /// each chunk's appointments are held back until a chunk passes without them. With nothing
    /// held back (or a limit that keeps only the newest), it is written once per chunk; the rows
    /// are the same every way.
    @Test func anAppointmentSeenInEveryChunkIsWrittenOnce() throws {
        let tmp = try TempStore()
        let clock = ManualClock(goldenBase)
        let writer = try LedgerWriter(store: tmp.store, waitLock: nil, options: LogOptions(fsync: false), clock: { clock.read() })
        let n = 30
        for i in 0..<n {
            let start = ISOTime.format(millis: goldenBase + Int64(i) * 60_000)
            let busy = appointmentObject("busy", client: 4127, clientName: "Some One", status: i % 2 == 0 ? "Confirmed" : "Moved",
                                         start: start, minutes: 50)
            let once = appointmentObject("once-\(i)", client: 4127, clientName: "Some One", status: "Confirmed", start: start, minutes: 30)
            // Each append is one chunk of the rebuild below: the busy appointment, then a new one.
            try writer.append([
                i == 0 ? discovered(busy, run: "run-\(i)") : changed(busy, run: "run-\(i)", fields: ["Status"]),
                discovered(once, run: "run-\(i)"),
            ])
            clock.millis += 1000
        }
        writer.close()
        let reference = try reference(tmp)
        func rebuilt(holdingBack limit: Int) throws -> Int {
            let views = try ProjectionStore(path: tmp.sibling("held-\(limit)-\(UUID().uuidString).sqlite"))
            views.pipelineMinEvents = 0
            views.eventsPerTransaction = 4  // halves of 2 events: one append each
            views.carriedAppointmentsLimit = limit
            _ = try views.rebuild(names: [], try LedgerReader(store: tmp.store))
            #expect(views.pipelinedFolds == 1)
            try expectSame(views, reference, "rebuild holding back \(limit)", seed: 0)
            return views.lastFoldAppointmentsWritten
        }
        #expect(try rebuilt(holdingBack: 4_096) == n + 1, "each appointment written once")
        #expect(try rebuilt(holdingBack: 0) == 2 * n, "the busy one written with every chunk")
        // One held back: the newest of each chunk (the one seen once), so the busy one is written every time.
        #expect(try rebuilt(holdingBack: 1) == 2 * n)
    }

    /// What an appointment held back over many chunks keeps grows only with what changes it:
    /// of the runs that list it unchanged, one `synced` is kept (each sets the same column), in
    /// one chunk and across chunks.
    @Test func anAppointmentListedUnchangedRunAfterRunHoldsOneSync() {
        let held = ChunkFolder.Pending("a")
        held.add(.observed(at: T(0), seq: 1))
        for k in 1...50 { held.add(.synced(at: T(k))) }
        #expect(held.ops.count == 2)
        let later = ChunkFolder.Pending("a")
        for k in 51...80 { later.add(.synced(at: T(k))) }
        later.add(.removed(at: T(81), seq: 90))
        later.add(.synced(at: T(82)))
        held.append(later)
        let kinds = held.ops.map { op -> String in
            switch op {
            case .observed(let at, _): return "observed \(at)"
            case .removed(let at, _): return "removed \(at)"
            case .synced(let at): return "synced \(at)"
            }
        }
        #expect(kinds == ["observed \(T(0))", "synced \(T(80))", "removed \(T(81))", "synced \(T(82))"])
    }

    /// Which appointments a rebuild holds back: the `limit` most recently touched, ties at the
    /// cut in id order; the rest, and what is held but untouched, are written now, in id order.
    /// Held and written-now never share an id and together hold every one; the stream entries of
    /// those held back go now under entry-only stand-ins; what is held is merged with what the
    /// next chunk folds of it.
    @Test func theCarryHoldsTheMostRecentlyTouchedAndWritesTheRestInIdOrder() {
        func pending(_ id: String, touched: UInt64, entries: Int = 0) -> ChunkFolder.Pending {
            let p = ChunkFolder.Pending(id)
            p.touched = touched
            p.add(.observed(at: T(Int(touched)), seq: touched))
            for k in 0..<entries { p.entries.append((Int64(touched) + Int64(k), "appointment.changed")) }
            return p
        }
        func segment(_ ps: [ChunkFolder.Pending]) -> ChunkFolder.Segment {
            var s = ChunkFolder.Segment()
            for p in ps { s.pending[p.id] = p }
            return s
        }
        /// Runs one exchange; returns (written now, held after), as ids, and checks the invariants.
        func exchange(_ carry: CarriedAppointments, _ ps: [ChunkFolder.Pending], heldBefore: [String]) -> (now: [String], held: [String]) {
            let out = carry.exchange(segment(ps))
            let now = (out.ordered ?? []).map(\.id)
            let heldAfter = carry.held
            let held = heldAfter.map(\.id)
            #expect(now == now.sorted() && held == held.sorted(), "id order")
            #expect(held.count <= carry.limit)
            let real = Set((out.ordered ?? []).filter { !$0.ops.isEmpty }.map(\.id))
            #expect(real.isDisjoint(with: held), "written now and held back: \(real) / \(held)")
            #expect(real.union(held) == Set(ps.map(\.id) + heldBefore), "every appointment is written or held")
            #expect(heldAfter.allSatisfy { $0.entries.isEmpty }, "the held ones' entries go now")
            return (now, held)
        }
        // Ties at the cut are kept in id order, as far as there is room.
        let two = CarriedAppointments(limit: 2)
        var r = exchange(two, [pending("a", touched: 5), pending("b", touched: 7), pending("c", touched: 7), pending("d", touched: 3)],
                         heldBefore: [])
        #expect(r.now == ["a", "d"] && r.held == ["b", "c"], "\(r)")
        let tie = CarriedAppointments(limit: 2)
        r = exchange(tie, [pending("d", touched: 7), pending("c", touched: 7), pending("b", touched: 7), pending("a", touched: 9)],
                     heldBefore: [])
        #expect(r.now == ["c", "d"] && r.held == ["a", "b"], "\(r)")
        let one = CarriedAppointments(limit: 1)
        r = exchange(one, [pending("y", touched: 4), pending("x", touched: 4)], heldBefore: [])
        #expect(r.now == ["y"] && r.held == ["x"], "\(r)")
        let none = CarriedAppointments(limit: 0)
        r = exchange(none, [pending("b", touched: 1), pending("a", touched: 2)], heldBefore: [])
        #expect(r.now == ["a", "b"] && r.held == [], "\(r)")

        // The next chunk: "b" untouched goes now; "c" touched again is merged (its ops appended);
        // "e" is new. The held ones' stream entries go now as stand-ins.
        let c2 = pending("c", touched: 10, entries: 2)
        c2.ops = [.removed(at: T(10), seq: 10)]
        let out = two.exchange(segment([c2, pending("e", touched: 8, entries: 1)]))
        let now = out.ordered ?? []
        #expect(now.map(\.id) == ["b", "c", "e"])
        #expect(now.first { $0.id == "c" }.map { $0.ops.isEmpty && $0.entries.count == 2 } == true, "c's entries under a stand-in")
        #expect(now.first { $0.id == "e" }.map { $0.ops.isEmpty && $0.entries.count == 1 } == true, "e's entries under a stand-in")
        let held = two.takeAll().ordered ?? []
        #expect(held.map(\.id) == ["c", "e"])
        let c = held.first { $0.id == "c" }
        #expect(c?.ops.count == 2 && c?.touched == 10, "c holds what both chunks folded of it")
    }

    /// The rebuild's record of the appointments written so far never says no to one it was given
    /// (that would skip the lookup of its stored row and lose what earlier chunks wrote), says
    /// yes to few others at its design load, and has a size fixed by the events to fold.
    @Test func theKnownAppointmentsFilterHasNoFalseNegatives() {
        // Ids are hashed with the process's random seed: which ids collide changes from run to
        // run, so the bounds below hold for any seed.
        let ids = (0..<50_000).map { "appt-\($0)-\(UInt64.random(in: 0...UInt64.max))" }
        let known = KnownAppointments(events: 150_000)
        #expect(known.sizeInBits == 1 << 20, "the smallest filter: 128 KiB")
        for id in ids.prefix(25_000) { known.insert(id) }
        #expect(ids.prefix(25_000).allSatisfy { known.contains($0) }, "every id inserted is known")
        let wrong = ids.suffix(25_000).filter { known.contains($0) }.count
        // 25,000 ids in 2^20 bits, three each: ~0.03 % expected.
        #expect(wrong < 250, "\(wrong) of 25,000 ids never inserted read as known")
        // A tiny filter fills up: everything reads as known (lookups, never a wrong no).
        let tiny = KnownAppointments(bits: 64)
        for id in ids { tiny.insert(id) }
        #expect(ids.allSatisfy { tiny.contains($0) })
        #expect(KnownAppointments(events: 10_000_000).sizeInBits == 1 << 26, "8 MiB at 10M events")
        #expect(KnownAppointments(events: 1 << 40).sizeInBits == 1 << 27, "never more than 16 MiB")
    }

    /// The producer folds the next chunk while the one it handed over waits for the writer (a
    /// writer slower than the fold no longer idles the producer), and runs no further ahead:
    /// at most three chunks live at once (one written, one waiting, one being folded).
    @Test func theProducerFoldsOneChunkAheadOfAWaitingOne() throws {
        let tmp = try TempStore()
        // Many appends, so many batches: a chunk of one event is one batch.
        try ChunkedFoldTests.randomLog(tmp.store, seed: 40, appends: 12)
        let reader = try LedgerReader(store: tmp.store)
        let head = try reader.head()
        let made = Locked(0)
        let pipeline = FoldPipeline(batches: try reader.batches(from: 1, through: head.seq, deferOpening: true), chunkSize: 1) { _ in
            made.withLock { $0 += 1 }
            return ChunkFolder(allProjections.map { ($0, 0) }, .shadow, recordLive: false)
        }
        pipeline.start()
        defer { pipeline.finish() }
        // The writer takes the first chunk and holds it: the second is folded and handed over,
        // and the third is started without waiting for the second to be taken.
        #expect(try pipeline.next() != nil)
        let deadline = Date().addingTimeInterval(20)
        while made.withLock({ $0 }) < 3, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(made.withLock { $0 } == 3)
        // The third chunk, folded, waits for the slot: no fourth is started.
        Thread.sleep(forTimeInterval: 0.3)
        #expect(made.withLock { $0 } == 3)
        var chunks = 1
        while try pipeline.next() != nil { chunks += 1 }
        #expect(chunks >= 4)
        // And one folder more, which found the log's end.
        #expect(made.withLock { $0 } == chunks + 1)
    }

    /// A small catch-up (the default threshold) starts no thread.
    @Test func aSmallCatchUpRunsOnOneThread() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)
        let views = try ProjectionStore(store: tmp.store)
        views.eventsPerTransaction = 2
        try views.catchUp(try LedgerReader(store: tmp.store))
        #expect(views.pipelinedFolds == 0)
        let reference = try reference(tmp)
        try expectSame(views, reference, "small catch-up", seed: 0)
    }

    /// Another process catches up while a pipelined catch-up runs: the chunk folded from the
    /// old checkpoints is dropped, the catch-up goes on from the new ones, every event applied once.
    @Test func aCatchUpByAnotherProcessMidwayIsFollowed() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("PipelinedFoldTests concurrent seed: \(seed)")
        let tmp = try TempStore()
        try ChunkedFoldTests.randomLog(tmp.store, seed: seed, appends: 80)
        let path = tmp.sibling("shared.sqlite")
        let first = try ProjectionStore(path: path)
        first.pipelineMinEvents = 0
        first.eventsPerTransaction = 3
        let other = try ProjectionStore(path: path)
        other.pipelineMinEvents = .max
        var calls = 0
        try first.catchUp(try LedgerReader(store: tmp.store)) { _ in
            calls += 1
            // After the second chunk: the other one catches up to the head.
            if calls == 2 { _ = try? other.catchUp(try LedgerReader(store: tmp.store)) }
        }
        #expect(first.restartedCatchUps == 1, "seed \(seed)")
        #expect(first.pipelinedFolds == 1, "seed \(seed)")
        try expectSame(first, try reference(tmp), "catch-up with another one midway", seed: seed)
    }

    /// A catch-up asked to stop (`shouldStop`, a sync's Ctrl-C before its run begins) stops
    /// between its transactions, pipelined or on one thread: `FoldInterrupted` (`catchingUp`)
    /// with what it applied, that part committed with its checkpoints, and the next catch-up
    /// goes on from there to the same rows as one fold.
    @Test func aCatchUpAskedToStopStopsBetweenItsTransactions() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("PipelinedFoldTests stop seed: \(seed)")
        let tmp = try TempStore()
        try ChunkedFoldTests.randomLog(tmp.store, seed: seed, appends: 80)
        let head = try LedgerReader(store: tmp.store).head().seq
        for pipelined in [true, false] {
            let views = try ProjectionStore(path: tmp.sibling("stopped-\(pipelined).sqlite"))
            views.pipelineMinEvents = pipelined ? 0 : .max
            views.eventsPerTransaction = 4
            var chunks = 0
            views.shouldStop = { [views] in (try? views.appliedSeq()).map { $0 > 0 } ?? false }
            do {
                try views.catchUp(try LedgerReader(store: tmp.store)) { _ in chunks += 1 }
                Issue.record("seed \(seed): the catch-up did not stop (pipelined: \(pipelined))")
            } catch let stopped as FoldInterrupted {
                #expect(stopped.catchingUp && !stopped.beforeStart, "seed \(seed)")
                #expect(stopped.applied > 0 && stopped.applied < head, "seed \(seed): applied \(stopped.applied) of \(head)")
                #expect(try views.appliedSeq() == stopped.applied, "seed \(seed): the checkpoint is what was applied")
                #expect(stopped.description.contains("the next command goes on from there"))
            }
            #expect(chunks >= 1, "seed \(seed)")
            views.shouldStop = nil
            try views.catchUp(try LedgerReader(store: tmp.store))
            #expect(try views.appliedSeq() == head)
            try expectSame(views, try reference(tmp), "a catch-up stopped, then resumed (pipelined: \(pipelined))", seed: seed)
        }
    }

    /// A log that fails verification in the middle of a pipelined rebuild (the producer's read)
    /// fails it with the one-thread fold's error and leaves the live views as they were.
    @Test func aDamagedSegmentFailsThePipelinedRebuildLikeTheOneThreadOne() throws {
        let tmp = try TempStore()
        let clock = ManualClock(goldenBase)
        let writer = try LedgerWriter(store: tmp.store, waitLock: nil, options: LogOptions(segmentBytes: 4096, fsync: false),
                                      clock: { clock.read() })
        for i in 0..<120 {
            let start = ISOTime.format(millis: goldenBase + Int64(i % 7) * 3_600_000)
            try writer.append([
                startedEvent("run-\(i)", type: "webhook"),
                discovered(appointmentObject("a\(i % 9)", client: 4127, clientName: "Some One", status: "Confirmed",
                                             start: start, minutes: 50), run: "run-\(i)"),
            ])
            clock.millis += 1000
        }
        writer.close()
        let views = try ProjectionStore(store: tmp.store)
        try views.catchUp(try LedgerReader(store: tmp.store))
        let before = try snapshot(views)
        func state() throws -> [Row] {
            try views.readSync { try Row.fetchAll($0, sql: "SELECT name, schema_version, last_seq, last_hash FROM projection_state ORDER BY name") }
        }
        let stateBefore = try state()

        let segments = try FileManager.default.contentsOfDirectory(atPath: tmp.store.logPath).filter { $0.hasSuffix(".seg") }.sorted()
        #expect(segments.count >= 4)
        let victim = tmp.store.logPath + "/" + segments[segments.count / 2]
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: victim)))
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: victim))

        func failure(pipelined: Bool, rebuild: Bool) throws -> (String, Int) {
            let broken = try ProjectionStore(store: tmp.store)
            broken.pipelineMinEvents = pipelined ? 0 : .max
            broken.eventsPerTransaction = 5
            var progressed = 0
            var message = ""
            do {
                if rebuild {
                    _ = try broken.rebuild(allProjections, try LedgerReader(store: tmp.store)) { _ in progressed += 1 }
                } else {
                    let scratch = try ProjectionStore(path: tmp.sibling("scratch-\(UUID().uuidString).sqlite"))
                    scratch.pipelineMinEvents = broken.pipelineMinEvents
                    scratch.eventsPerTransaction = 5
                    try scratch.catchUp(try LedgerReader(store: tmp.store)) { _ in progressed += 1 }
                }
                Issue.record("the \(pipelined ? "pipelined" : "one-thread") \(rebuild ? "rebuild" : "catch-up") should fail")
            } catch {
                message = "\(error)"
            }
            #expect(broken.pipelinedFolds == (pipelined && rebuild ? 1 : 0))
            return (message, progressed)
        }
        let (alone, aloneProgress) = try failure(pipelined: false, rebuild: true)
        let (piped, pipedProgress) = try failure(pipelined: true, rebuild: true)
        #expect(!alone.isEmpty)
        #expect(piped == alone)
        // (The pipelined fold commits every half chunk.)
        #expect(aloneProgress > 0 && pipedProgress > 0, "chunks before the damage were written: \(aloneProgress), \(pipedProgress)")
        #expect(try snapshot(views) == before)
        #expect(try state() == stateBefore)
        let (caughtUpAlone, _) = try failure(pipelined: false, rebuild: false)
        let (caughtUpPiped, _) = try failure(pipelined: true, rebuild: false)
        #expect(caughtUpPiped == caughtUpAlone)
        #expect(!caughtUpAlone.isEmpty)
    }
}
