import Allocator
import ArgumentParser
import Foundation
import Ledger
import PostgresSink
import Projections
import TestSupport

/// `syncledger-bench`: append, replay, rebuild, size and lookups of SyncLedger, next to a plain
/// SQLite events table and the `lz4` command doing the same work on the same bytes.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "syncledger-bench",
        abstract: "Benchmark SyncLedger's log, replay, rebuild and lookups against in-run baselines.")

    @Option(help: "Events to append (10,000 to 10,000,000 for real numbers; smaller works for a smoke test).")
    var events: Int = 100_000

    @Option(help: "JSON Lines of IntakeQ appointment snapshots in observation order (or objects with the snapshot under \"payload\"), instead of the generator.")
    var corpus: String?

    @Option(help: "Runs; each figure is the median, with min and max.")
    var runs: Int = 3

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    @Option(help: "Directory for the stores (a fresh subdirectory is made and removed). Default: a temporary directory.")
    var scratch: String?

    @Option(help: "Seed of the synthetic workload.")
    var seed: UInt64 = 20_261_120

    @Option(help: "Clinics in the synthetic workload (one sync run observes one clinic).")
    var clinics: Int = 24

    @Option(help: "Appointment events per sync run.")
    var runSize: Int = 200

    @Option(help: ArgumentHelp("Patients on the synthetic roster per organization, of its \(Catalogue.clientsPerClinic) clients.",
                               discussion: "The default puts every client on the roster, as in a real log: sync records only appointments that name a roster patient, so with encryption on every observation has personal data to seal. 8 gives the workload of the figures before stop 27, where about 1 observation in 6 named a roster patient. With --corpus, the roster holds every client the corpus names (0: nobody)."))
    var rosterPatients: Int = Catalogue.clientsPerClinic

    @Option(help: "Single-event durable appends timed for p50/p99.")
    var singleAppends: Int = 2_000

    @Option(help: "History/as-of lookups per run (median taken).")
    var lookups: Int = 5

    @Flag(help: "Skip the rebuild and the lookups (they need the views), e.g. for a quick look at a large log.")
    var skipViews = false

    @Option(help: "off, on, or both: also append and rebuild the workload with personal data sealed per patient (AES-256-GCM) and compare.")
    var encryption: String = "both"

    @Flag(help: "Also time a rebuild that applies every event to every view one by one (the fold before chunking), for an A/B in the same run.")
    var compareFold = false

    @Option(help: ArgumentHelp("Appointments a rebuild holds back from one chunk's write to the next (default: the store's, \(ProjectionStore.defaultCarriedAppointmentsLimit)).",
                               discussion: "0 writes every chunk's appointments with the chunk, as before stop 29: the A/B of holding them back."))
    var carriedAppointments: Int?

    @Flag(help: "Keep the scratch directory (for inspection or profiling), the sealed store (run-K/sealed) included.")
    var keep = false

    @Flag(help: "Skip the SQLite, lz4 and fdatasync baselines and the appends without head evidence (no JSON Lines copy of the log is written): for a very large run (10M events) whose copies would not fit the disk.")
    var skipBaselines = false

    @Option(help: "Also benchmark the PostgreSQL sink against this database (schemas syncledger_bench*, dropped after).")
    var postgres: String?

    @Option(help: "Readers querying PostgreSQL during the sink's rebuild.")
    var pgReaders: Int = 4

    func validate() throws {
        guard events >= 10 else { throw ValidationError("--events must be at least 10") }
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        if let corpus, !FileManager.default.fileExists(atPath: corpus) { throw ValidationError("no corpus file at \(corpus)") }
        guard ["off", "on", "both"].contains(encryption) else { throw ValidationError("--encryption must be off, on or both") }
        guard (0...Catalogue.clientsPerClinic).contains(rosterPatients) else {
            throw ValidationError("--roster-patients must be 0 to \(Catalogue.clientsPerClinic)")
        }
    }

    func makeSource(events: Int, seed: UInt64, corpusRoster: (event: NewEvent, patients: Int)?) throws -> any EventSource {
        if let corpus, let corpusRoster { return try CorpusSource(path: corpus, events: events, runSize: runSize, roster: corpusRoster.event) }
        return SyntheticSource(seed: seed, events: events, clinics: clinics, runSize: runSize, rosterPatients: rosterPatients)
    }

    func log(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }

    func run() throws {
        // Before the SQLite baseline opens its connection: the same settings for both.
        _ = SQLiteSettings.applied
        let base = scratch ?? NSTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let root: String
        do { root = try makeTempDir("bench", under: base) } catch { throw BenchError("\(error)") }
        defer { if !keep { try? FileManager.default.removeItem(atPath: root) } }

        // A corpus's roster is every client it names (one untimed pass over the lines it uses).
        let corpusRoster = try corpus.map { try CorpusSource.roster(path: $0, lines: events, everyone: rosterPatients > 0) }
        var summary = Summary()
        var rssReset = false
        var released = false
        for r in 1...runs {
            let dir = root + "/run-\(r)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let lines: String? = skipBaselines ? nil : dir + "/events.jsonl"
            var ours = SyncLedgerRun(carried: carriedAppointments)
            // What the runs before left freed goes back to the system first (as it would after
            // jemalloc's decay, or in a new process), so the peak below is this run's own.
            released = Allocator.releaseFreedMemory()
            rssReset = resetPeakRSS()

            log("run \(r)/\(runs): appending \(events) events in durable batches of 1,000")
            let store = try Store.openOrCreate(dir + "/store")
            var source = try makeSource(events: events, seed: seed, corpusRoster: corpusRoster)
            try ours.append(store: store, source: &source, linesPath: lines, batchSize: 1_000)
            let n = Int(ours.m["events"] ?? 0)
            settleDisk()
            log("run \(r)/\(runs): opening the store for writing and for reading")
            try ours.openTimes(storePath: dir + "/store")

            settleDisk()
            log("run \(r)/\(runs): \(singleAppends) single-event durable appends")
            let single = try Store.openOrCreate(dir + "/single")
            var singleSource = try makeSource(events: singleAppends + 2, seed: seed &+ 1, corpusRoster: corpusRoster)
            _ = try singleSource.next()  // roster and settings are not appointment-sized
            _ = try singleSource.next()
            try ours.singleAppends(store: single, source: &singleSource, count: singleAppends)
            try? FileManager.default.removeItem(atPath: dir + "/single")

            if !skipBaselines {
                // The same two appends with the head evidence (state/head) off: what it costs.
                settleDisk()
                log("run \(r)/\(runs): the same appends without head evidence")
                let bare = try Store.openOrCreate(dir + "/bare")
                var bareSource = try makeSource(events: events, seed: seed, corpusRoster: corpusRoster)
                try ours.appendWithoutEvidence(store: bare, source: &bareSource, batchSize: 1_000)
                try? FileManager.default.removeItem(atPath: dir + "/bare")
                settleDisk()
                let bareSingle = try Store.openOrCreate(dir + "/bare-single")
                var bareSingleSource = try makeSource(events: singleAppends + 2, seed: seed &+ 1, corpusRoster: corpusRoster)
                _ = try bareSingleSource.next()
                _ = try bareSingleSource.next()
                try ours.singleAppends(store: bareSingle, source: &bareSingleSource, count: singleAppends, headEvidence: false)
                try? FileManager.default.removeItem(atPath: dir + "/bare-single")
            }

            settleDisk()
            log("run \(r)/\(runs): replay")
            try ours.replay(store: store)
            if !skipViews {
                settleDisk()
                log("run \(r)/\(runs): rebuild of all views")
                let views = try ours.rebuild(store: store, compareFold: compareFold)
                settleDisk()
                log("run \(r)/\(runs): history and as-of lookups")
                try ours.lookups(store: store, views: views, tries: lookups)
            }
            if let postgres {
                settleDisk()
                var pg = PostgresBench(url: try PostgresURL(postgres), readers: pgReaders, log: log)
                var pgSource = try makeSource(events: events, seed: seed, corpusRoster: corpusRoster)
                try pg.run(dir: dir, events: n, source: &pgSource)
                try? FileManager.default.removeItem(atPath: dir + "/pg-store")
                ours.m.merge(pg.m) { a, _ in a }
            }

            if encryption != "off" {
                // The same workload again with personal data sealed: append (sealing timed with it),
                // log size, and a rebuild that opens every sealed part.
                settleDisk()
                log("run \(r)/\(runs): append and rebuild with encryption on")
                let sealedStore = try Store.openOrCreate(dir + "/sealed")
                var sealedSource = try makeSource(events: events, seed: seed, corpusRoster: corpusRoster)
                let sealer = try Sealer(keysDirectory: sealedStore.keysPath, roster: sealedSource.roster)
                var sealedRun = SyncLedgerRun(carried: carriedAppointments)
                try sealedRun.append(store: sealedStore, source: &sealedSource, linesPath: skipBaselines ? nil : dir + "/sealed-events.jsonl",
                                     batchSize: 1_000, sealer: sealer)
                settleDisk()
                try sealedRun.replay(store: sealedStore)
                if !skipViews {
                    settleDisk()
                    _ = try sealedRun.rebuild(store: sealedStore)
                }
                // What sealing adds to the CPU of getting an event on disk (sealing itself, and
                // writing the larger sealed event), every thread's CPU time.
                if let sealed = sealedRun.m["append_cpu_us_per_event"], let clear = ours.m["append_cpu_us_per_event"] {
                    ours.m["sealing_cpu_us_per_event"] = sealed - clear
                }
                for k in ["append_events_per_s", "append_cpu_us_per_event", "log_bytes_per_event", "replay_events_per_s", "rebuild_events_per_s",
                          "rebuild_read_s", "rebuild_fold_s", "rebuild_write_s",
                          "raw_json_bytes_per_event", "views_bytes_per_event"] {
                    ours.m["sealed_" + k] = sealedRun.m[k]
                }
                if !keep { try? FileManager.default.removeItem(atPath: dir + "/sealed") }
                try? FileManager.default.removeItem(atPath: dir + "/sealed-events.jsonl")
                ours.rss.append(("encryption on", peakRSSMB()))
            }
            // The whole run's SyncLedger phases (the in-process baselines below are not counted).
            ours.m["peak_rss_mb"] = peakRSSMB()

            var baselines = Baselines()
            if let lines {
                settleDisk()
                log("run \(r)/\(runs): SQLite baseline")
                try baselines.sqlite(linesPath: lines, dbPath: dir + "/baseline.sqlite", events: n, batchSize: 1_000)
                settleDisk()
                log("run \(r)/\(runs): fdatasync floor")
                try baselines.fdatasyncFloor(path: dir + "/fdatasync.bin", count: singleAppends, bytes: 1_000)
                settleDisk()
                log("run \(r)/\(runs): lz4 CLI floor")
                try baselines.lz4(linesPath: lines, outPath: dir + "/events.jsonl.lz4", events: n)
            }
            summary.runs.append(ours.m.merging(baselines.m) { a, _ in a })
            if r == 1 { summary.rss = ours.rss }
            if !keep { try? FileManager.default.removeItem(atPath: dir) }
        }

        if json {
            print(summary.json(extra: ["corpus": corpus ?? "synthetic", "seed": seed, "peak_rss_reset_per_run": rssReset, "disk_synced_before_each_phase": true,
                                      "freed_memory_released_before_each_run": released,
                                      "allocator": Allocator.name, "roster_patients_per_organization": rosterPatients,
                                      "corpus_roster_patients": corpusRoster?.patients ?? 0]))
            return
        }
        let n = Int(summary.med("events") ?? 0)
        print("syncledger-bench: \(n) events (\(corpus.map { "corpus \($0), \(corpusRoster?.patients ?? 0) of its clients on the roster" } ?? "synthetic, seed \(seed), \(clinics) clinics, \(rosterPatients) of \(Catalogue.clientsPerClinic) clients per organization on the roster")), \(runs) run(s); median [min–max]; allocator: \(Allocator.name)")
        print("raw IntakeQ object: \(fmt(summary.med("raw_object_bytes_per_observation") ?? 0)) bytes per observation; envelope line: \(fmt(summary.med("raw_json_bytes_per_event") ?? 0)) bytes\n")
        print(summary.table())
        if let read = summary.med("rebuild_read_s"), let fold = summary.med("rebuild_fold_s"), let write = summary.med("rebuild_write_s") {
            print("\nrebuild time (median s): reading the log \(fmt(read)), folding in memory \(fmt(fold)), writing SQLite \(fmt(write))")
        }
        if let ab = summary.med("rebuild_event_by_event_events_per_s") {
            print("rebuild applying every event one by one (--compare-fold): \(fmt(ab)) events/s")
        }
        if encryption != "off" {
            print("\nEncryption (personal data sealed per patient, AES-256-GCM), same workload:\n")
            print(summary.encryptionTable())
        }
        print(rssReset ? "\nPeak RSS (VmHWM, reset at the start of each run) after each SyncLedger phase of run 1:"
                       : "\nPeak RSS (VmHWM, cumulative over the runs: it could not be reset) after each SyncLedger phase of run 1:")
        print(summary.rss.map { "\($0.0) \(fmt($0.1)) MB" }.joined(separator: ", "))
        print("\nTargets (set for 1,000,000 events on the 2-core machine):\n")
        print(summary.targetTable())
        if postgres != nil { print("\n" + summary.postgresTable()) }
    }
}

Bench.main()
