import Foundation
import EventLog
import TestSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Options every append child uses: fsync on (the promise under test), small segments so that
/// kills also land in segment rolls, and head evidence in `head` beside the log directory (as a
/// store keeps it in `state/head`).
func childOptions(_ directory: String) -> LogOptions {
    LogOptions(segmentBytes: 32 << 10, fsync: true, headRecordPath: headRecordPath(directory))
}

func headRecordPath(_ directory: String) -> String {
    (directory as NSString).deletingLastPathComponent + "/head"
}

/// A random batch: 1–40 events (sometimes up to 300), payloads of 0–400 random letters.
func randomBatch(_ rng: inout SeededRNG, firstSeq: UInt64) -> [[UInt8]] {
    let count = rng.next() % 8 == 0 ? Int.random(in: 1...300, using: &rng) : Int.random(in: 1...40, using: &rng)
    return (0..<count).map { i in
        let length = Int.random(in: 0...400, using: &rng)
        let letters = (0..<length).map { _ in UInt8(97 + rng.next() % 26) }
        return Array("{\"seq\":\(firstSeq + UInt64(i)),\"r\":\"".utf8) + letters + Array("\"}".utf8)
    }
}

/// Hash of a batch as the log stores it: each payload followed by '\n' (= its JSON Lines).
func batchHash(_ payloads: [[UInt8]]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for p in payloads { h = fnv1a(p + [10], h) }
    return h
}

/// `crash-harness child LOGDIR SEED`: appends random batches forever. Before each append it
/// prints `P first count hash` (pending), after it returns `A first` (acknowledged), each with
/// one write(2) so a SIGKILL cannot lose a printed line.
func runAppendChild(directory: String, seed: UInt64) -> Never {
    var rng = SeededRNG(state: seed)
    do {
        let writer = try EventLogWriter.open(directory: directory, options: childOptions(directory), waitLock: 10)
        while true {
            let first = writer.head.seq + 1
            let batch = randomBatch(&rng, firstSeq: first)
            emit("P \(first) \(batch.count) \(batchHash(batch))")
            let info = try writer.append(batch)
            guard info.firstSeq == first else { fail("append returned seq \(info.firstSeq), expected \(first)") }
            emit("A \(first)")
        }
    } catch {
        fail("child: \(error)")
    }
}

/// `crash-harness fill LOGDIR`: appends ~32 KiB batches until the log refuses; prints
/// `A first count hash` per acknowledged batch and, at the end, one error line on stderr.
func runFill(directory: String) -> Never {
    var rng = SeededRNG(state: 42)
    do {
        let writer = try EventLogWriter.open(directory: directory, options: LogOptions(fsync: true))
        while true {
            let first = writer.head.seq + 1
            let batch = (0..<64).map { i in
                Array("{\"seq\":\(first + UInt64(i)),\"r\":\"".utf8) + (0..<500).map { _ in UInt8(97 + rng.next() % 26) }
                    + Array("\"}".utf8)
            }
            try writer.append(batch)
            emit("A \(first) \(batch.count) \(batchHash(batch))")
        }
    } catch {
        emit("crash-harness: \(error)", to: 2)
        exit(1)
    }
}

func fail(_ message: String) -> Never {
    emit("crash-harness: \(message)", to: 2)
    exit(1)
}

/// What the parent knows must be (or may be) in the log.
struct Model {
    /// Batches known to be durable, by first seq: count and content hash.
    var batches: [UInt64: (count: Int, hash: UInt64)] = [:]
    /// Every seq up to here was acknowledged (or seen durable after a recovery).
    var through: UInt64 = 0
    var pending: (first: UInt64, count: Int, hash: UInt64)?

    mutating func apply(_ lines: [String]) throws {
        for line in lines {
            let f = line.split(separator: " ")
            if f.count == 4, f[0] == "P", let first = UInt64(f[1]), let count = Int(f[2]), let hash = UInt64(f[3]) {
                guard first == through + 1 else {
                    throw HarnessError("child appends at seq \(first) but the log was acknowledged through \(through)")
                }
                pending = (first, count, hash)
            } else if f.count == 2, f[0] == "A", let first = UInt64(f[1]), let p = pending, p.first == first {
                batches[first] = (p.count, p.hash)
                through = first + UInt64(p.count) - 1
                pending = nil
            } else {
                throw HarnessError("unexpected child output: \(line)")
            }
        }
    }
}

struct Tally {
    var kills = 0
    var tornTails = 0
    var recovered = 0
    var unacknowledgedButDurable = 0
    var evidenceChecked = 0
    var batches = 0
    var events: UInt64 = 0
}

/// After a kill: the log verifies, every acknowledged batch is there with the same bytes,
/// gapless, and the only thing past the last acknowledgement is the whole pending batch or
/// nothing. Then a writer opens (recovering) and continues the chain.
func checkAfterKill(_ directory: String, _ model: inout Model, _ tally: inout Tally, _ rng: inout SeededRNG) throws {
    var isDir: ObjCBool = false
    if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDir) {
        // Killed before the child's writer created the log: fine only if nothing was acknowledged.
        guard model.batches.isEmpty else { throw HarnessError("the log directory vanished after acknowledged appends") }
        return
    }
    let reader = try EventLogReader(directory: directory)
    let report = reader.verify()
    guard report.ok else { throw HarnessError("verify failed: \(report.error.map { "\($0)" } ?? "?")") }
    // The head evidence covers every acknowledged batch, and the log holds it (it is never ahead).
    if let recorded = try HeadRecord.read(path: headRecordPath(directory)) {
        guard recorded.head.seq >= model.through else {
            throw HarnessError("head evidence \(recorded.head.seq) is behind the acknowledged seq \(model.through)")
        }
        let (check, _) = try EventLogReader.check(directory: directory, holds: recorded.head)
        guard check == .holds else { throw HarnessError("the log does not hold its head evidence \(recorded.head) (\(check))") }
        tally.evidenceChecked += 1
    } else if model.through > 0 {
        throw HarnessError("no head evidence although seqs through \(model.through) were acknowledged")
    }
    tally.tornTails += report.warnings.filter { $0.contains("torn tail") }.count
    let cursor = try reader.cursor(from: 1)
    var last: UInt64 = 0
    while let (info, content) = try cursor.nextBatch() {
        guard info.firstSeq == last + 1 else { throw HarnessError("gap before seq \(info.firstSeq)") }
        let hash = fnv1a(content)
        if let known = model.batches[info.firstSeq] {
            guard known.count == Int(info.count), known.hash == hash else {
                throw HarnessError("batch at seq \(info.firstSeq) differs from what was acknowledged")
            }
        } else if let p = model.pending, p.first == info.firstSeq, p.count == Int(info.count), p.hash == hash {
            // Durable but killed before the acknowledgement reached us: whole, so adopt it.
            model.batches[p.first] = (p.count, p.hash)
            model.through = info.lastSeq
            model.pending = nil
            tally.unacknowledgedButDurable += 1
        } else {
            throw HarnessError("batch \(info.firstSeq)...\(info.lastSeq) is in the log but was never acknowledged "
                + "nor pending whole (half-visible?)")
        }
        last = info.lastSeq
    }
    guard last >= model.through else {
        throw HarnessError("the log ends at seq \(last) but seqs through \(model.through) were acknowledged")
    }
    guard last == report.head.seq else { throw HarnessError("verify head \(report.head) but cursor ends at \(last)") }
    // The sparse index finds random acknowledged seqs.
    for _ in 0..<3 where model.through > 0 {
        let seq = UInt64.random(in: 1...model.through, using: &rng)
        guard let info = try reader.batch(containing: seq), info.firstSeq <= seq, seq <= info.lastSeq,
              model.batches[info.firstSeq] != nil else { throw HarnessError("batch(containing: \(seq)) is wrong") }
    }
    model.pending = nil
    // Recovery by the writer, and the chain continues.
    let writer = try EventLogWriter.open(directory: directory, options: childOptions(directory))
    if writer.recoveredTail != nil { tally.recovered += 1 }
    guard writer.head == report.head else { throw HarnessError("writer head \(writer.head) != verified head \(report.head)") }
    let batch = randomBatch(&rng, firstSeq: writer.head.seq + 1)
    let info = try writer.append(batch)
    writer.close()
    model.batches[info.firstSeq] = (batch.count, batchHash(batch))
    model.through = info.lastSeq
    tally.batches = model.batches.count
    tally.events = model.through
}

/// The append crash loop: `kills` rounds of start child → wait a random moment → SIGKILL → check.
func runAppendHarness(kills: Int, seed: UInt64, roundsPerStore: Int, maxDelay: Double, keep: Bool) -> Int32 {
    emit("crash-harness: append mode, seed \(seed), \(kills) kills (replay with --seed \(seed))")
    var rng = SeededRNG(state: seed)
    var tally = Tally()
    var root = try! makeTempDir("crash-harness")
    var model = Model()
    let exe = selfPath()
    let started = now()
    for round in 0..<kills {
        if round > 0 && round % roundsPerStore == 0 {
            removeTree(root)
            root = try! makeTempDir("crash-harness")
            model = Model()
        }
        let log = root + "/log"
        do {
            let child = try Child([exe, "child", log, String(rng.next())])
            // Sometimes kill during start-up and recovery, mostly while appending.
            let delay = rng.next() % 5 == 0 ? Double.random(in: 0..<0.02, using: &rng)
                : Double.random(in: 0.01..<maxDelay, using: &rng)
            let stillRunning = child.collect(for: delay)
            let status = child.kill()
            guard stillRunning, status & 0x7f == SIGKILL else {
                throw HarnessError("the child exited by itself (wait status \(status)) before the kill")
            }
            tally.kills += 1
            try model.apply(child.lines)
            try checkAfterKill(log, &model, &tally, &rng)
        } catch {
            emit("crash-harness: FAILED at kill \(round + 1) (seed \(seed)); store kept at \(root): \(error)", to: 2)
            return 1
        }
    }
    if !keep { removeTree(root) }
    let seconds = Int(now() - started)
    emit("crash-harness: seed \(seed): \(tally.kills) kills survived; \(tally.recovered) torn tails recovered by open "
        + "(\(tally.tornTails) seen by verify), \(tally.unacknowledgedButDurable) durable-but-unacknowledged batches "
        + "found whole, \(tally.evidenceChecked) head records checked; last store: \(tally.batches) batches, \(tally.events) events; \(seconds) s")
    return 0
}
