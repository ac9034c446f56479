import FakeIntakeQ
import Foundation
import JSONCore
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Store surgery helpers

/// The batches of a segment file, read from their headers: byte range and seqs.
struct SegmentBatch {
    var offset: Int
    var end: Int
    var firstSeq: UInt64
    var lastSeq: UInt64
}

func segmentBatches(_ path: String) throws -> [SegmentBatch] {
    let data = try #require(FileManager.default.contents(atPath: path))
    let bytes = [UInt8](data)
    func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * UInt32($1)) } }
    func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[o + $1]) << (8 * UInt64($1)) } }
    var out: [SegmentBatch] = []
    var off = 0
    while off + 80 <= bytes.count {
        let first = u64(off + 16)
        let count = UInt64(u32(off + 24))
        let end = off + 80 + Int(u32(off + 28))
        out.append(SegmentBatch(offset: off, end: end, firstSeq: first, lastSeq: first + count - 1))
        off = end
    }
    return out
}

func copyStore(_ from: String, _ to: String) throws {
    try? FileManager.default.removeItem(atPath: to)
    try FileManager.default.copyItem(atPath: from, toPath: to)
}

/// The problems `status --json` lists for `store` (any age of the daily run accepted).
func statusProblems(_ store: String, env: [String: String?] = [:]) async throws -> [String] {
    let r = try await cli(["status", "--json", "--max-age", "100000", "--store", store], env: env)
    guard case .array(let list)? = try JSONValue.parse(Array(r.stdout.utf8))["problems"] else { return [] }
    return list.compactMap(\.stringValue)
}

func segments(_ store: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: store + "/log").filter { $0.hasSuffix(".seg") }.sorted()
        .map { store + "/log/" + $0 }
}

func truncateFile(_ path: String, to length: Int) {
    precondition(truncate(path, off_t(length)) == 0, "truncate \(path): \(String(cString: strerror(errno)))")
}

/// A segment's file name: its first seq, 20 digits.
func segmentName(_ seq: UInt64) -> String { String(repeating: "0", count: 20 - String(seq).count) + "\(seq).seg" }

/// Splits the store's one segment into three at batch boundaries, as a writer rolling over
/// leaves them: its batches, and the first batch of the second and third segments.
func splitInThree(_ store: String) throws -> (batches: [SegmentBatch], starts: [SegmentBatch]) {
    let whole0 = try #require(try segments(store).first)
    let batches = try segmentBatches(whole0)
    #expect(batches.count >= 6)
    let starts = [batches[batches.count / 3], batches[2 * batches.count / 3]]
    let all = try #require(FileManager.default.contents(atPath: whole0))
    try all[starts[0].offset..<starts[1].offset].write(to: URL(fileURLWithPath: store + "/log/" + segmentName(starts[0].firstSeq)))
    try all[starts[1].offset...].write(to: URL(fileURLWithPath: store + "/log/" + segmentName(starts[1].firstSeq)))
    truncateFile(whole0, to: starts[0].offset)
    return (batches, starts)
}

/// Every read command, and what each needs as arguments.
func readCommands(_ store: String, appointment: String) -> [[String]] {
    [["verify", "--store", store], ["verify", "--views", "--store", store], ["status", "--max-age", "100000", "--store", store],
     ["appointments", "--store", store], ["meeting-urls", "--store", store], ["locations", "--store", store],
     ["sync-logs", "--store", store], ["history", appointment, "--store", store], ["as-of", "--seq", "1", "--store", store],
     ["as-of", "2030-01-01", "--store", store], ["export", "--format", "csv", "--store", store],
     ["export", "--format", "jsonl", "--store", store], ["log", "--store", store], ["rebuild", "--store", store]]
}

/// The head printed on the last line of `verify` ("head SEQ:HASH").
func verifiedHead(_ store: String) async throws -> String {
    let r = try await cli(["verify", "--store", store])
    expectSuccess(r)
    return try #require(r.stdoutLines.last?.split(separator: " ").last.map(String.init))
}

extension CLIBinaryTests {
    /// The log loses acknowledged events in every way we can think of; every command refuses
    /// with one line naming the acknowledged head and where the log ends, and nothing changes.
    /// A torn batch past the acknowledged head still recovers silently.
    @Test func lossOfAcknowledgedEventsIsRefusedEverywhere() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust")
        defer { tmp.remove() }
        let base = tmp.path + "/base"
        let dayOne = tmp.path + "/day-one"
        try await makeSyncedStore(at: base, practice: practice, days: [1])
        try copyStore(base, dayOne)
        try await makeSyncedStore(at: base, practice: practice, days: [2, 3])
        let head = try await verifiedHead(base)
        let headSeq = try #require(UInt64(head.split(separator: ":")[0]))
        // What `log` prints of a log that ends at a seq: its events up to there, as stored.
        let whole = try await cli(["log", "--store", base])
        expectSuccess(whole)
        let stored = whole.stdout.split(separator: "\n").map { $0 + "\n" }
        #expect(stored.count == Int(headSeq))
        let segment = try #require(try segments(base).first)
        let batches = try segmentBatches(segment)
        #expect(batches.count >= 6, "\(batches.count) batches")
        #expect(batches.last?.lastSeq == headSeq)
        let appointment = try #require(
            (parseJSON(try await cli(["appointments", "--json", "--store", base]).stdout) as? [[String: Any]])?
                .first?["appointment_id"] as? String)

        // Cuts: every batch boundary before the end, and inside each of the last three batches.
        var cuts: [(String, Int, UInt64)] = []
        for (i, b) in batches.enumerated().dropLast() { cuts.append(("cut after batch \(i + 1)", b.end, b.lastSeq)) }
        for b in batches.suffix(3) {
            cuts.append(("cut inside batch \(b.firstSeq)…\(b.lastSeq)", (b.offset + b.end) / 2, b.firstSeq - 1))
            cuts.append(("cut 1 byte short of batch \(b.firstSeq)…\(b.lastSeq)", b.end - 1, b.firstSeq - 1))
        }
        var cases: [(name: String, logEndsAt: UInt64, damage: (String) throws -> Void)] = cuts.map { name, length, end in
            (name, end, { store in truncateFile(store + "/log/" + (segment as NSString).lastPathComponent, to: length) })
        }
        cases.append(("segment deleted", 0, { store in try FileManager.default.removeItem(atPath: try segments(store)[0]) }))
        cases.append(("whole log gone", 0, { store in try FileManager.default.removeItem(atPath: store + "/log") }))
        let dayOneEnd = try #require(try segmentBatches(try segments(dayOne)[0]).last?.lastSeq)
        cases.append(("older copy restored", dayOneEnd, { store in
            try FileManager.default.removeItem(atPath: store + "/log")
            try FileManager.default.copyItem(atPath: dayOne + "/log", toPath: store + "/log")
        }))

        try await withFakeServer(try #require(practice.day(4))) { _, url in
            for (n, c) in cases.enumerated() {
                let store = tmp.path + "/case-\(n)"
                try copyStore(base, store)
                try c.damage(store)
                // SQLite's -wal/-shm beside the views may appear (a read-only connection reads the
                // views' checkpoints); every other byte, the views' file included, must stay.
                let transient = { (p: String) in p.hasSuffix("-wal") || p.hasSuffix("-shm") }
                let before = snapshot(store, excluding: transient)
                var commands = readCommands(store, appointment: appointment)
                commands.append(syncArgs(store: store, baseURL: url, now: try #require(practice.day(4)).now))
                for args in commands {
                    let r = try await cli(args, env: keyEnv)
                    // `log` is the salvage: it prints what the log holds, then refuses the rest.
                    let salvages = args[0] == "log"
                    expectCleanFailure(r, mentioning: ["seq \(headSeq) was acknowledged", head], allowStdout: salvages)
                    if salvages {
                        #expect(r.stdout == stored.prefix(Int(c.logEndsAt)).joined(), "\(c.name): log printed \(r.stdoutLines.count) lines")
                    }
                    #expect(r.stderr.contains("the log ends at seq \(c.logEndsAt) but"), "\(c.name): \(r.label): \(r.stderr)")
                    #expect(r.stderr.contains("repair --accept-loss"), "\(c.name): \(r.stderr)")
                }
                expectSameSnapshot(before, snapshot(store, excluding: transient), "\(c.name): the refused commands")
                try? FileManager.default.removeItem(atPath: store)
            }
        }
    }

    /// A batch that was still being written when the process died lies past the acknowledged
    /// head: reads treat it as the end, `verify` warns, and the next writer removes it silently.
    @Test func tornBatchPastTheAcknowledgedHeadRecoversSilently() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-torn")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        let longer = tmp.path + "/longer"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        try copyStore(store, longer)
        try await makeSyncedStore(at: longer, practice: practice, days: [3])
        let appointmentsBefore = try await cli(["appointments", "--json", "--store", store])
        // The next batch the store would have written, cut in half: a torn tail past its head.
        let segment = try segments(store)[0]
        let size = try #require(try FileManager.default.attributesOfItem(atPath: segment)[.size] as? Int)
        let next = try #require(try segmentBatches(try segments(longer)[0]).first { $0.offset == size })
        let longerBytes = try #require(FileManager.default.contents(atPath: try segments(longer)[0]))
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(longerBytes.subdata(in: next.offset..<(next.offset + (next.end - next.offset) / 2)))
        try handle.close()

        let verify = try await cli(["verify", "--store", store])
        expectSuccess(verify)
        #expect(verify.stderr.contains("torn tail"), "\(verify.stderr)")
        let appointments = try await cli(["appointments", "--json", "--store", store])
        expectSuccess(appointments)
        #expect(appointments.stdout == appointmentsBefore.stdout)
        try await withFakeServer(try #require(practice.day(3))) { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(3)).now), env: keyEnv)
            expectSuccess(r)
        }
        let after = try await cli(["verify", "--store", store])
        expectSuccess(after)
        #expect(!after.stderr.contains("torn tail"), "\(after.stderr)")
    }

    /// Bytes that are not a batch after the last one (not zeros: another program wrote there)
    /// are refused, as damage, but the line says that every acknowledged event comes before
    /// them and how to cut them off; done as it says, the store works again (hostile test: the
    /// advice was to restore a segment or move segments aside, and `repair` could not help).
    @Test func garbageAfterTheAcknowledgedHeadSaysHowToCutItOff() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-garbage")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let segment = try segments(store)[0]
        let size = try #require(try FileManager.default.attributesOfItem(atPath: segment)[.size] as? Int)
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data((0..<500).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }))
        try handle.close()
        let before = storeSnapshot(store)
        for args in [["status"], ["sync-logs"], ["repair", "--accept-loss", "junk"]] {
            let r = try await cli(args + ["--store", store])
            expectCleanFailure(r, mentioning: ["everything acknowledged comes before it", "from offset \(size) of \(segment) on, 500 bytes",
                                               "`truncate -s \(size) \(segment)`"])
            expectSameSnapshot(before, storeSnapshot(store), "\(args[0]) on garbage after the head")
        }
        // Something after the damage that may be a batch (its frame's magic): no cut is offered
        // (hostile test: acknowledged batches after a damaged header were offered to be cut).
        let copy = tmp.path + "/with-batch-after"
        try copyStore(store, copy)
        let copied = try segments(copy)[0]
        let more = try #require(FileHandle(forWritingAtPath: copied))
        more.seekToEndOfFile()
        more.write(try #require(FileManager.default.contents(atPath: copied)).prefix(80))
        try more.close()
        let refused = try await cli(["status", "--store", copy])
        expectCleanFailure(refused, mentioning: ["the log cannot be read to its end"])
        #expect(!refused.stderr.contains("truncate"), "\(refused.stderr)")
        // `repair --cut-damaged` does the same, keeping the bytes, and records no loss: nothing
        // cut had been acknowledged.
        let cutCopy = tmp.path + "/cut"
        try copyStore(store, cutCopy)
        let garbage = try #require(FileManager.default.contents(atPath: segment)).suffix(500)
        let cut = try await cli(["repair", "--store", cutCopy, "--accept-loss", "junk", "--cut-damaged"])
        expectSuccess(cut)
        #expect(cut.stdout.contains("cut the log at seq ") && cut.stdout.contains("500 bytes moved into log/cut-")
                && cut.stdout.contains("no loss to record") && cut.stdout.contains("verify: ok"), "\(cut.stdout)")
        let cutDir = try #require(try FileManager.default.contentsOfDirectory(atPath: cutCopy + "/log").first { $0.hasPrefix("cut-") })
        let kept = cutCopy + "/log/" + cutDir + "/" + (segment as NSString).lastPathComponent + ".from-offset-\(size)"
        #expect(FileManager.default.contents(atPath: kept) == garbage)
        expectSuccess(try await cli(["status", "--max-age", "100000", "--store", cutCopy]))
        try FileManager.default.copyItem(atPath: segment, toPath: tmp.path + "/segment-copy")
        #expect(truncate(segment, off_t(size)) == 0)
        expectSuccess(try await cli(["verify", "--store", store]))
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            expectSuccess(try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now), env: keyEnv))
        }
    }

    /// What a log cut short still holds can be saved, read-only, although every other command
    /// refuses the store: `log` prints it all, then the loss as its one error line (exit 1), or,
    /// with a --limit that stops short of the end, warns (exit 0); `export --to-seq` up to where
    /// the log ends writes it, with the loss as a warning. An export past that end, of the whole
    /// log, as CSV or as a bundle is refused, naming the --to-seq that works, and leaves no file.
    /// Nothing in the store changes.
    @Test func whatALogCutShortHoldsCanBeSaved() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-salvage")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        let whole = try await cli(["log", "--store", store])
        expectSuccess(whole)
        let stored = whole.stdout.split(separator: "\n").map { $0 + "\n" }
        let intact = tmp.path + "/intact"
        try copyStore(store, intact)
        let segment = try segments(store)[0]
        let cutTo = try segmentBatches(segment).dropLast(2).last!
        truncateFile(segment, to: cutTo.end)
        let kept = stored.prefix(Int(cutTo.lastSeq)).joined()
        #expect(cutTo.lastSeq > 3 && kept.count < whole.stdout.count)
        let transient = { (p: String) in p.hasSuffix("-wal") || p.hasSuffix("-shm") }
        let before = snapshot(store, excluding: transient)
        let loss = "the log ends at seq \(cutTo.lastSeq) but"

        let log = try await cli(["log", "--store", store])
        expectCleanFailure(log, mentioning: [loss], allowStdout: true)
        #expect(log.stdout == kept)
        let tail = try await cli(["log", "--store", store, "--from-seq", "\(cutTo.lastSeq - 1)"])
        expectCleanFailure(tail, mentioning: [loss], allowStdout: true)
        #expect(tail.stdout == stored[Int(cutTo.lastSeq) - 2..<Int(cutTo.lastSeq)].joined())
        let limited = try await cli(["log", "--store", store, "--limit", "3"])
        expectSuccess(limited)
        #expect(limited.stdout == stored.prefix(3).joined())
        #expect(limited.stderrLines.count == 1 && limited.stderr.hasPrefix("warning: ") && limited.stderr.contains(loss), "\(limited.stderr)")
        let past = try await cli(["log", "--store", store, "--from-seq", "\(cutTo.lastSeq + 1)"])
        expectCleanFailure(past, mentioning: [loss])

        let saved = tmp.path + "/saved.jsonl"
        let export = try await cli(["export", "--store", store, "--to-seq", "\(cutTo.lastSeq)", "--out", saved])
        expectSuccess(export)
        #expect(export.stderr.contains("warning: " + loss), "\(export.stderr)")
        #expect(FileManager.default.contents(atPath: saved) == Data(kept.utf8))
        let hint = "`syncledger export --to-seq \(cutTo.lastSeq)` saves what the log holds"
        for args in [["export"], ["export", "--format", "jsonl", "--to-seq", "\(cutTo.lastSeq + 1)", "--out", tmp.path + "/past.jsonl"],
                     ["export", "--format", "csv", "--to-seq", "\(cutTo.lastSeq)"],
                     ["export", "--to-seq", "\(cutTo.lastSeq)", "--bundle", tmp.path + "/bundle"]] {
            let r = try await cli(args + ["--store", store])
            expectCleanFailure(r, mentioning: [loss] + (args.count == 1 ? [hint] : []))
        }
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/past.jsonl"))
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/bundle"))
        expectSameSnapshot(before, snapshot(store, excluding: transient), "the salvage")

        // The intact copy split into three segments at batch boundaries (as a writer rolling
        // over leaves them) and read once, so that the two sealed ones get index files.
        let whole0 = try segments(intact)[0]
        let batches = try segmentBatches(whole0)
        #expect(batches.count >= 6)
        let cuts = [batches[batches.count / 3], batches[2 * batches.count / 3]]
        let all = try #require(FileManager.default.contents(atPath: whole0))
        func name(_ seq: UInt64) -> String { intact + "/log/" + String(repeating: "0", count: 20 - String(seq).count) + "\(seq).seg" }
        try all[cuts[0].offset..<cuts[1].offset].write(to: URL(fileURLWithPath: name(cuts[0].firstSeq)))
        try all[cuts[1].offset...].write(to: URL(fileURLWithPath: name(cuts[1].firstSeq)))
        truncateFile(whole0, to: cuts[0].offset)
        expectSuccess(try await cli(["verify", "--store", intact]))
        let split = try await cli(["log", "--store", intact])
        expectSuccess(split)
        #expect(split.stdout == whole.stdout)
        #expect((try? FileManager.default.contentsOfDirectory(atPath: intact + "/log/index"))?.filter { $0.hasSuffix(".idx") }.count == 2)
        let headless = tmp.path + "/headless"
        try copyStore(intact, headless)
        // The middle segment deleted: the refusal names the first missing seq, and an export
        // of what precedes it works.
        let gap = tmp.path + "/gap"
        try copyStore(intact, gap)
        try FileManager.default.removeItem(atPath: gap + "/log/" + (name(cuts[0].firstSeq) as NSString).lastPathComponent)
        expectCleanFailure(try await cli(["appointments", "--store", gap]),
                           mentioning: ["export what precedes seq \(cuts[0].firstSeq)"])
        let beforeGap = tmp.path + "/before-gap.jsonl"
        expectSuccess(try await cli(["export", "--store", gap, "--to-seq", "\(cuts[0].firstSeq - 1)", "--out", beforeGap]))
        #expect(FileManager.default.contents(atPath: beforeGap) == Data(stored.prefix(Int(cuts[0].firstSeq - 1)).joined().utf8))
        expectCleanFailure(try await cli(["export", "--store", gap, "--to-seq", "\(cuts[0].firstSeq)", "--out", tmp.path + "/gap-past.jsonl"]))
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/gap-past.jsonl"))

        // A flipped byte in the second batch's header: the log cannot be read to its end, so
        // every other command refuses; `log` prints the first batch, then the damage; an export
        // up to the damage saves it, and one reaching into it fails and leaves no file. What
        // follows the damage is not read, although the later segments are whole and indexed:
        // a salvage checks the chain from the first event.
        var bytes = try #require(FileManager.default.contents(atPath: whole0))
        bytes[batches[1].offset + 20] ^= 0x5a
        try bytes.write(to: URL(fileURLWithPath: whole0))
        let first = stored.prefix(Int(batches[0].lastSeq)).joined()
        let refused = try await cli(["appointments", "--store", intact])
        expectCleanFailure(refused, mentioning: ["cannot be read to its end", "offset \(batches[1].offset)",
                                                 "export what precedes seq \(batches[1].firstSeq)",
                                                 "--to-seq \(batches[1].firstSeq - 1)"])
        // The reader's own advice is not repeated inside the loss's: said once, after what was acknowledged.
        #expect(refused.stderr.components(separatedBy: "nothing was changed").count == 2, "\(refused.stderr)")
        #expect(!refused.stderr.contains("damaged here"), "\(refused.stderr)")
        // repair refuses damage inside the log with the same advice, once.
        let repairRefused = try await cli(["repair", "--accept-loss", "test", "--store", intact])
        expectCleanFailure(repairRefused, mentioning: ["cannot be read to its end", "export what precedes seq \(batches[1].firstSeq)"])
        #expect(repairRefused.stderr.components(separatedBy: "--cut-damaged").count == 2, "\(repairRefused.stderr)")
        let damagedLog = try await cli(["log", "--store", intact])
        expectCleanFailure(damagedLog, mentioning: ["offset \(batches[1].offset)"], allowStdout: true)
        #expect(damagedLog.stdout == first)
        let later = cuts[1].firstSeq + 1
        for args in [["log", "--from-seq", "\(later)"], ["log", "--from-seq", "\(later)", "--limit", "1"],
                     ["export", "--from-seq", "\(later)", "--to-seq", "\(later)", "--out", tmp.path + "/later.jsonl"]] {
            let r = try await cli(args + ["--store", intact])
            expectCleanFailure(r, mentioning: ["offset \(batches[1].offset)"])
        }
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/later.jsonl"))
        let upTo = tmp.path + "/up-to-damage.jsonl"
        let saving = try await cli(["export", "--store", intact, "--to-seq", "\(batches[0].lastSeq)", "--out", upTo])
        expectSuccess(saving)
        #expect(FileManager.default.contents(atPath: upTo) == Data(first.utf8))
        let into = tmp.path + "/into-damage.jsonl"
        expectCleanFailure(try await cli(["export", "--store", intact, "--to-seq", "\(batches[1].firstSeq)", "--out", into]),
                           mentioning: ["offset \(batches[1].offset)"])
        #expect(!FileManager.default.fileExists(atPath: into))
        // With no evidence of a head at all (no state/head, no views), `log` still prints what
        // precedes the damage.
        try FileManager.default.removeItem(atPath: intact + "/state/head")
        try FileManager.default.removeItem(atPath: intact + "/projections.sqlite")
        let unwitnessed = try await cli(["log", "--store", intact])
        expectCleanFailure(unwitnessed, mentioning: ["offset \(batches[1].offset)"], allowStdout: true)
        #expect(unwitnessed.stdout == first)

        // A damaged state/head (what was acknowledged is unknown) on a whole log: every other
        // command refuses; `log` prints it all, then that line; an export up to the log's end
        // saves it, one past it fails and leaves no file.
        truncateFile(headless + "/state/head", to: 0)
        let headErr = try await cli(["appointments", "--store", headless])
        expectCleanFailure(headErr)
        let headLine = headErr.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        let headLog = try await cli(["log", "--store", headless])
        expectCleanFailure(headLog, allowStdout: true)
        #expect(headLog.stdout == whole.stdout && headLog.stderr.trimmingCharacters(in: .whitespacesAndNewlines) == headLine,
                "\(headLog.stderr)")
        let headEnd = UInt64(stored.count)
        let headSaved = tmp.path + "/head-saved.jsonl"
        let headExport = try await cli(["export", "--store", headless, "--to-seq", "\(headEnd)", "--out", headSaved])
        expectSuccess(headExport)
        #expect(FileManager.default.contents(atPath: headSaved) == Data(whole.stdout.utf8))
        let headPast = tmp.path + "/head-past.jsonl"
        expectCleanFailure(try await cli(["export", "--store", headless, "--to-seq", "\(headEnd + 1)", "--out", headPast]),
                           mentioning: ["only through seq \(headEnd)"])
        #expect(!FileManager.default.fileExists(atPath: headPast))

        // Another history in the log's place (a longer log of another store): `log` refuses it
        // outright, a --limit met or not, and so does an export.
        let other = tmp.path + "/other"
        try await makeSyncedStore(at: other, practice: practice, days: [1, 2, 3])
        let replaced = tmp.path + "/replaced"
        try copyStore(store, replaced)
        try FileManager.default.removeItem(atPath: replaced + "/log")
        try FileManager.default.copyItem(atPath: other + "/log", toPath: replaced + "/log")
        for args in [["log"], ["log", "--limit", "2"], ["export", "--to-seq", "2"]] {
            expectCleanFailure(try await cli(args + ["--store", replaced]), mentioning: ["another one"])
        }
        // Also with state/head damaged: the views' checkpoints still say what was acknowledged.
        truncateFile(replaced + "/state/head", to: 0)
        for args in [["log"], ["export", "--to-seq", "2"]] {
            let r = try await cli(args + ["--store", replaced])
            expectCleanFailure(r, mentioning: ["another one"])
            #expect(!r.stderr.contains("saves what the log holds"), "\(r.stderr)")
        }
    }

    /// A FIFO put in a segment's place: opening it for reading would wait for a writer forever.
    /// Every command says what is there instead, one line.
    @Test func aFIFOInASegmentsPlaceIsRefusedNotWaitedOn() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-fifo")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        // The head evidence too (state/head).
        let headless = tmp.path + "/headless"
        try copyStore(store, headless)
        // (Copied before any FIFO is made: copying would wait on one.)
        let lockless = tmp.path + "/lockless"
        try copyStore(store, lockless)
        try FileManager.default.removeItem(atPath: headless + "/state/head")
        #expect(mkfifo(headless + "/state/head", 0o600) == 0)
        let segment = try segments(store)[0]
        try FileManager.default.removeItem(atPath: segment)
        #expect(mkfifo(segment, 0o600) == 0)
        for args in [["log"], ["verify"], ["appointments"], ["export", "--to-seq", "1", "--out", tmp.path + "/one.jsonl"]] {
            let r = try await cli(args + ["--store", store])
            expectCleanFailure(r, mentioning: ["is a FIFO, not a file of the log"])
            let h = try await cli(args + ["--store", headless])
            if args[0] == "log" || args[0] == "export" {
                // The salvage reads on without state/head (the views' checkpoints vouch for the
                // log), and says why.
                #expect(!h.timedOut && h.stderr.contains("state/head is a FIFO, not a file of the log"), "\(h.label): \(h.stderr)")
            } else {
                expectCleanFailure(h, mentioning: ["state/head is a FIFO, not a file of the log"])
            }
        }
        // Nor are they written: repair (which writes state/head and takes log/LOCK) refuses.
        expectCleanFailure(try await cli(["repair", "--accept-loss", "x", "--store", headless]),
                           mentioning: ["state/head is a FIFO, not a file of the log"])
        try FileManager.default.removeItem(atPath: lockless + "/state/head")
        // Cut short, so that repair has a loss to record and takes the writer's lock.
        let cut = try segments(lockless)[0]
        let kept = try segmentBatches(cut)
        truncateFile(cut, to: kept[kept.count - 2].end)
        try? FileManager.default.removeItem(atPath: lockless + "/log/LOCK")
        #expect(mkfifo(lockless + "/log/LOCK", 0o600) == 0)
        expectCleanFailure(try await cli(["repair", "--accept-loss", "x", "--store", lockless]),
                           mentioning: ["log/LOCK is a FIFO, not a file of the log"])
    }

    /// Damage inside a batch's payload is found only by what reads it (`rebuild`, `as-of`,
    /// `log`): the first command that meets it records it, so that `status` (exit 1, the
    /// server's `verify_failed` alert) and every read command say so until a verify passes
    /// (hostile test: `status` said ok after `rebuild` had failed on it). An auditor's
    /// read-only copy is not written; a verify that passes clears it.
    @Test func logDamageACommandMeetsIsRecordedForStatus() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-found")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        expectSuccess(try await cli(["verify", "--store", store]))
        let segment = try segments(store)[0]
        let batches = try segmentBatches(segment)
        let original = try #require(FileManager.default.contents(atPath: segment))
        var bytes = original
        bytes[(batches[1].offset + batches[1].end) / 2] ^= 0x5a  // inside the second batch's payload
        try bytes.write(to: URL(fileURLWithPath: segment))
        func problems() async throws -> [String] { try await statusProblems(store) }
        #expect(try await problems().allSatisfy { !$0.contains("damaged") }, "not seen before a command reads the batch")
        expectCleanFailure(try await cli(["rebuild", "--store", store]), mentioning: ["CRC32C"])
        let found = try await problems()
        #expect(found.contains { $0.hasPrefix("`rebuild` found the log damaged at ") && $0.contains("CRC32C") }, "\(found)")
        let status = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(status.status == 1 && status.stdout.contains("`rebuild` found the log damaged at")
                && status.stdout.contains("(no verify since: `syncledger verify` checks the whole log)"), "\(status.stdout)")
        let json = try await cli(["status", "--json", "--max-age", "100000", "--store", store])
        #expect(try JSONValue.parse(Array(json.stdout.utf8))["last_verify"]?["found_by"]?.stringValue == "rebuild", "\(json.stdout)")
        // The first finding is kept: a later command that meets it does not replace it.
        expectCleanFailure(try await cli(["as-of", "--seq", "\(batches[1].lastSeq)", "--store", store]))
        #expect(try await problems().contains { $0.hasPrefix("`rebuild` found") })
        // Restored, a verify that passes clears it.
        try original.write(to: URL(fileURLWithPath: segment))
        expectSuccess(try await cli(["verify", "--store", store]))
        let cleared = try await problems()
        #expect(cleared.allSatisfy { !$0.contains("damaged") && !$0.contains("verify") }, "\(cleared)")

        // A read-only copy (an auditor's) meets the damage and records nothing in it.
        let copy = tmp.path + "/copy"
        try FileManager.default.copyItem(atPath: store, toPath: copy)
        try bytes.write(to: URL(fileURLWithPath: try segments(copy)[0]))
        let recordBefore = FileManager.default.contents(atPath: copy + "/state/verify.json")
        #expect(chmod(copy + "/state", 0o500) == 0)
        defer { chmod(copy + "/state", 0o700) }
        expectCleanFailure(try await cli(["as-of", "--seq", "\(batches[1].lastSeq)", "--store", copy]))
        #expect(FileManager.default.contents(atPath: copy + "/state/verify.json") == recordBefore)
    }

    /// A master key file every user may read opens every patient's data for them: `status`
    /// names it as a problem (exit 1) and `sync` warns, until only its owner and group may
    /// (hostile test: a 644 key file was taken without a word); so is one every user may write,
    /// or replace through its directory. A group-readable key (a service reading it through its
    /// group) is the operator's choice. Also through SYNCLEDGER_MASTER_KEY_FILE, and a link
    /// counts by its target.
    @Test func aMasterKeyOthersCanReadIsAProblem() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-keymode")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let key = store + "/keys/master.key"
        func problems(_ env: [String: String?] = [:]) async throws -> [String] { try await statusProblems(store, env: env) }
        #expect(try await problems().allSatisfy { !$0.contains("master key") })
        for (mode, words) in [(0o644, "can be read by every user (mode 644)"), (0o602, "can be written by every user (mode 602)"),
                              (0o606, "can be read and written by every user (mode 606)")] {
            #expect(chmod(key, mode_t(mode)) == 0)
            let found = try await problems()
            #expect(found.contains { $0.contains("the master key file \(key) \(words)") && $0.hasSuffix("run chmod o-rwx \(key)") }, "\(found)")
        }
        #expect(chmod(key, 0o640) == 0)
        let grouped = try await problems()
        #expect(grouped.allSatisfy { !$0.contains("master key") }, "\(grouped)")
        #expect(chmod(key, 0o644) == 0)
        try await withFakeServer(practice.days[0]) { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: practice.days[0].now), env: keyEnv)
            expectSuccess(r)
            #expect(r.stderr.contains("warning: the master key file \(key) can be read by every user"), "\(r.stderr)")
        }
        // Named by SYNCLEDGER_MASTER_KEY_FILE, through a link: the target's mode counts.
        let outside = tmp.path + "/master.key", link = tmp.path + "/key-link"
        try FileManager.default.moveItem(atPath: key, toPath: outside)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: outside)
        let named: [String: String?] = ["SYNCLEDGER_MASTER_KEY_FILE": link]
        #expect(try await problems(named).contains { $0.contains("the master key file \(link) can be read by every user") })
        #expect(chmod(outside, 0o600) == 0)
        let owners = try await problems(named)
        #expect(owners.allSatisfy { !$0.contains("master key") }, "\(owners)")
        // In a directory every user can write (no sticky bit), it can be replaced; with the
        // sticky bit (as /tmp), only its owner may.
        let open = tmp.path + "/open"
        try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: false)
        try FileManager.default.moveItem(atPath: outside, toPath: open + "/master.key")
        let inOpen: [String: String?] = ["SYNCLEDGER_MASTER_KEY_FILE": open + "/master.key"]
        #expect(chmod(open, 0o777) == 0)
        let replaceable = try await problems(inOpen)
        #expect(replaceable.contains { $0.contains("is below ") && $0.contains("/open, which every user can write (mode 777)") }, "\(replaceable)")
        #expect(chmod(open, 0o1777) == 0)
        let sticky = try await problems(inOpen)
        #expect(sticky.allSatisfy { !$0.contains("master key") }, "\(sticky)")
        // Two directories up, and the directory of a link to it (hostile test).
        try FileManager.default.createDirectory(atPath: open + "/sub", withIntermediateDirectories: false)
        try FileManager.default.moveItem(atPath: open + "/master.key", toPath: open + "/sub/master.key")
        #expect(chmod(open, 0o777) == 0)
        let above = try await problems(["SYNCLEDGER_MASTER_KEY_FILE": open + "/sub/master.key"])
        #expect(above.contains { $0.contains("/open, which every user can write") }, "\(above)")
        #expect(chmod(open, 0o700) == 0)
        let linkDir = tmp.path + "/links"
        try FileManager.default.createDirectory(atPath: linkDir, withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: linkDir + "/mk", withDestinationPath: open + "/sub/master.key")
        #expect(chmod(linkDir, 0o777) == 0)
        let linked = try await problems(["SYNCLEDGER_MASTER_KEY_FILE": linkDir + "/mk"])
        #expect(linked.contains { $0.contains("is below \(linkDir), which every user can write") }, "\(linked)")
    }

    /// An export of a bundle that fails (damage its check meets) leaves nothing behind: the
    /// same command can be run again once the log is restored (hostile test: its partial
    /// directory was then refused as not empty).
    @Test func aFailedBundleLeavesNothingBehind() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-bundle")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let segment = try segments(store)[0]
        let batches = try segmentBatches(segment)
        var bytes = try #require(FileManager.default.contents(atPath: segment))
        bytes[(batches[1].offset + batches[1].end) / 2] ^= 0x5a  // inside the second batch's payload
        try bytes.write(to: URL(fileURLWithPath: segment))
        let bundle = tmp.path + "/bundle"
        expectCleanFailure(try await cli(["export", "--store", store, "--bundle", bundle]))
        #expect(!FileManager.default.fileExists(atPath: bundle))
        let empty = tmp.path + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: false)
        expectCleanFailure(try await cli(["export", "--store", store, "--bundle", empty]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: empty).isEmpty)
    }

    /// After a refused loss, `repair --accept-loss` records it and every command works again;
    /// `verify` warns about the recorded loss from then on.
    @Test func repairAcceptsARecordedLoss() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-repair")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        let head = try await verifiedHead(store)
        let segment = try segments(store)[0]
        let batches = try segmentBatches(segment)
        let cutTo = batches[batches.count - 3]
        truncateFile(segment, to: cutTo.end)
        let refused = try await cli(["verify", "--store", store])
        expectCleanFailure(refused, mentioning: ["the log ends at seq \(cutTo.lastSeq) but", head])

        let noReason = try await cli(["repair", "--store", store, "--accept-loss", " "])
        expectCleanFailure(noReason)
        // A reason with a line break and a terminal escape: recorded as given, printed as one line that cannot drive the terminal.
        let repair = try await cli(["repair", "--store", store, "--accept-loss", "restored from nothing: test\n\u{1B}[2Jcleared"])
        expectSuccess(repair)
        #expect(repair.stdout.contains("recorded the loss as seq \(cutTo.lastSeq + 1)"), "\(repair.stdout)")
        // `status` shows the loss, and that the last verify (of the head now lost) came before it.
        let lossSeq = cutTo.lastSeq + 1
        let afterRepair = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(afterRepair.stdout.contains("through head \(head) (before the loss recorded at seq \(lossSeq); run `syncledger verify`)"),
                "\(afterRepair.stdout)")
        #expect(afterRepair.stdout.contains("recorded loss at seq \(lossSeq) (") && afterRepair.stdout.contains("\(head) had been acknowledged")
                && afterRepair.stdout.contains("but the log ended at \(cutTo.lastSeq):")
                && afterRepair.stdout.contains("reason: restored from nothing: test\\u{A}\\u{1B}[2Jcleared"), "\(afterRepair.stdout)")
        #expect(!afterRepair.stdout.contains("\u{1B}"), "\(afterRepair.stdout)")
        // The loss's time in the table's zone, as the runs' times are (it was UTC).
        let inDenver = try await cli(["status", "--max-age", "100000", "--timezone", "America/Denver", "--store", store])
        let lossLine = inDenver.stdout.split(separator: "\n").first { $0.hasPrefix("recorded loss at seq") } ?? ""
        #expect((lossLine.contains(" MST): ") || lossLine.contains(" MDT): ")) && !lossLine.contains("Z)"), "\(inDenver.stdout)")
        let statusJSON = try await cli(["status", "--json", "--max-age", "100000", "--store", store])
        let loss = try JSONValue.parse(Array(statusJSON.stdout.utf8))["recorded_loss"]
        #expect(loss?["seq"]?.int64Value == Int64(lossSeq) && loss?["last_known_head"]?.stringValue == head
                && loss?["reason"]?.stringValue == "restored from nothing: test\n\u{1B}[2Jcleared", "\(statusJSON.stdout)")

        let verify = try await cli(["verify", "--store", store])
        expectSuccess(verify)
        #expect(verify.stderr.contains("a loss of acknowledged events was recorded at seq \(cutTo.lastSeq + 1)"), "\(verify.stderr)")
        #expect(verify.stderr.contains(head) && verify.stderr.contains("restored from nothing: test\\u{A}\\u{1B}[2Jcleared"), "\(verify.stderr)")
        #expect(!verify.stderr.contains("\u{1B}"), "\(verify.stderr)")
        #expect(verify.stderrLines.contains { $0.contains("a loss of acknowledged events") && $0.hasSuffix("cleared") }, "\(verify.stderr)")
        let asJSON = try await cli(["verify", "--json", "--store", store])
        expectSuccess(asJSON)
        #expect(asJSON.stdout.lowercased().contains(#"restored from nothing: test\n\u001b[2jcleared"#), "the JSON gives the reason as recorded: \(asJSON.stdout)")
        let verified = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(verified.stdout.contains("recorded loss at seq \(lossSeq)") && !verified.stdout.contains("before the loss"), "\(verified.stdout)")
        let recorded = try await cli(["log", "--store", store])
        #expect(recorded.stdout.lowercased().contains(#"restored from nothing: test\n\u001b[2jcleared"#), "\(recorded.stdout.suffix(600))")
        for args in readCommands(store, appointment: "none").filter({ $0[0] != "history" && $0[0] != "status" }) {
            expectSuccess(try await cli(args))
        }
        // The cut took the run's sync.completed with it: that run is in progress with no writer.
        let died = try await cli(["status", "--max-age", "100000", "--store", store])
        // Said as such: its end may have gone with the events lost (it read "died", hostile test).
        #expect(died.status == 1 && died.stdout.contains("failed: no end recorded: the run began before seq \(lossSeq) recorded a loss of acknowledged events")
                && !died.stdout.contains("failed: died"), "\(died.stdout)")
        let again = try await cli(["repair", "--store", store, "--accept-loss", "twice"])
        expectSuccess(again)
        #expect(again.stdout.contains("nothing to repair"), "\(again.stdout)")
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            expectSuccess(try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now), env: keyEnv))
        }
        let status = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(status.status == 0, "\(status.stdout)")
        let later = try await cli(["verify", "--store", store])
        expectSuccess(later)
        #expect(later.stderr.contains("a loss of acknowledged events was recorded"), "\(later.stderr)")
        // The head lost, checked by an auditor who wrote it down: the log has grown past its seq
        // again, so it fails, and it names the recorded loss as the reason (it read as tampering).
        let lostHead = try await cli(["verify", "--expect-head", head, "--store", store])
        #expect(lostHead.status == 1 && lostHead.stdout.contains("The log records losing it: at seq \(lossSeq) (")
                && lostHead.stdout.contains("after \(cutTo.lastSeq):") && lostHead.stdout.contains("up to \(head) (`syncledger status` shows the reason)") && !lostHead.stdout.contains("restored from nothing") && !lostHead.stdout.contains("\u{1B}"), "\(lostHead.stdout)")
        // A head the loss did not give up (at or before where the log ended) is not explained by it.
        let forged = "\(cutTo.lastSeq):" + String(repeating: "0", count: 64)
        let diverged = try await cli(["verify", "--expect-head", forged, "--store", store])
        #expect(diverged.status == 1 && !diverged.stdout.contains("records losing it"), "\(diverged.stdout)")
        // An auditor's bundle of the store says the loss too (its verifier said only "bundle OK").
        let bundle = tmp.path + "/bundle"
        expectSuccess(try await cli(["export", "--store", store, "--bundle", bundle]))
        let audit = try ProcessRunner.runBlocking("/usr/bin/env", ["python3", bundle + "/verify_bundle.py"], timeout: 120)
        #expect(audit.status == 0 && audit.stdoutText.hasPrefix("bundle OK: "), "\(audit.stdoutText)\(audit.stderrText)")
        #expect(audit.stdoutText.contains("warning: seq \(lossSeq) records a loss: the log ended at \(cutTo.lastSeq):")
                && audit.stdoutText.contains("before the head \(head) it had acknowledged")
                && !audit.stdoutText.contains("\u{1B}"), "\(audit.stdoutText)")
        // The record's batch damaged (now inside the log): `status` names that as a problem
        // instead of failing as a whole (cold review: it threw, just when the log was damaged).
        let (lossSegment, lossBatch) = try #require(try segments(store).lazy.compactMap { path in
            try segmentBatches(path).first { $0.firstSeq <= lossSeq && lossSeq <= $0.lastSeq }.map { (path, $0) }
        }.first)
        var damaged = try #require(FileManager.default.contents(atPath: lossSegment))
        damaged[lossBatch.end - 2] ^= 0x5a
        try damaged.write(to: URL(fileURLWithPath: lossSegment))
        let unreadable = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(unreadable.status == 1 && unreadable.stdout.contains("a recorded loss of acknowledged events cannot be read ("),
                "\(unreadable.stdout) \(unreadable.stderr)")
        #expect(unreadable.stderr.isEmpty, "\(unreadable.stderr)")
    }
}

extension CLIBinaryTests {
    /// Damage inside the log with no backup to restore from: `repair --cut-damaged` moves the
    /// damaged batch and everything after it into log/cut-TIME/ (the tail of the segment copied
    /// byte for byte, later segments whole), records the loss naming the cut, and the store works
    /// again. Without the flag `repair` changes nothing and names it (it said "the log holds every
    /// acknowledged head" with a batch failing its CRC, and no way on; hostile test). A missing
    /// segment in the middle is cut the same way; a healthy log is not cut.
    @Test func damageInsideTheLogIsCutAsideWhenNoBackupHoldsIt() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-cut")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        let head = try await verifiedHead(store)
        let whole = try await cli(["log", "--store", store])
        expectSuccess(whole)
        let whole0 = try segments(store)[0]
        let (batches, cuts) = try splitInThree(store)
        let name = segmentName
        expectSuccess(try await cli(["verify", "--store", store]))
        let gap = tmp.path + "/gap"
        try copyStore(store, gap)

        // A healthy log: nothing is cut.
        let healthy = try await cli(["repair", "--store", store, "--accept-loss", "disk fault", "--cut-damaged"])
        expectSuccess(healthy)
        #expect(healthy.stdout.contains("no damage to cut: the whole log verifies") && healthy.stdout.contains("nothing to repair"), "\(healthy.stdout)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/log").filter { $0.hasPrefix("cut-") }.isEmpty)

        // A byte of a batch's payload in the middle segment flipped.
        let damaged = batches[(batches.count / 3) + 1]
        #expect(damaged.lastSeq < cuts[1].firstSeq)
        let middle = store + "/log/" + name(cuts[0].firstSeq)
        let offsetInMiddle = damaged.offset - cuts[0].offset
        var bytes = try #require(FileManager.default.contents(atPath: middle))
        bytes[offsetInMiddle + 80 + 5] ^= 0x20
        try bytes.write(to: URL(fileURLWithPath: middle))
        let third = try #require(FileManager.default.contents(atPath: store + "/log/" + name(cuts[1].firstSeq)))
        // The same damage with the log's end cut off too: a plain `repair` does not record the
        // loss after the damaged batch (it did, then could not fold the views; hostile test).
        let both = tmp.path + "/both"
        try copyStore(store, both)
        truncateFile(both + "/log/" + name(cuts[1].firstSeq), to: batches[batches.count - 2].offset - cuts[1].offset)
        let segmentsBefore = try segments(both).map { FileManager.default.contents(atPath: $0) }
        let headBefore = FileManager.default.contents(atPath: both + "/state/head")
        let endAndDamage = try await cli(["repair", "--store", both, "--accept-loss", "disk fault"])
        expectCleanFailure(endAndDamage, mentioning: ["nothing was changed", "payload CRC32C mismatch", "--cut-damaged"])
        #expect(try segments(both).map { FileManager.default.contents(atPath: $0) } == segmentsBefore)
        #expect(FileManager.default.contents(atPath: both + "/state/head") == headBefore)
        let found = try await cli(["verify", "--store", store])
        #expect(found.status == 1 && found.stdout.contains("payload CRC32C mismatch"), "\(found.stdout)")
        let before = storeSnapshot(store)
        let refused = try await cli(["repair", "--store", store, "--accept-loss", "disk fault"])
        expectCleanFailure(refused, mentioning: ["nothing was changed", "payload CRC32C mismatch", "--cut-damaged"])
        #expect(!refused.stderr.contains("holds every acknowledged head"), "\(refused.stderr)")
        expectSameSnapshot(before, storeSnapshot(store), "repair without --cut-damaged")
        // A reason holding personal data is refused before anything is cut.
        let named = try await cli(["repair", "--store", store, "--accept-loss", "called (555) 010-2892", "--cut-damaged"])
        expectCleanFailure(named, mentioning: ["--accept-loss holds an IntakeQ client id or a phone number", "nothing was changed"])
        expectSameSnapshot(before, storeSnapshot(store), "a cut refused for its reason")

        let repair = try await cli(["repair", "--store", store, "--accept-loss", "disk fault, no backup", "--cut-damaged"])
        expectSuccess(repair)
        let lossSeq = damaged.firstSeq
        #expect(repair.stdout.contains("cut the log at seq \(lossSeq) (segment \(name(cuts[0].firstSeq)) offset \(offsetInMiddle)")
                && repair.stdout.contains("the log now ends at seq \(lossSeq - 1)")
                && repair.stdout.contains("recorded the loss as seq \(lossSeq): \(head) had been acknowledged")
                && repair.stdout.contains("verify: ok through head \(lossSeq):"), "\(repair.stdout)")
        // What was cut is all there, byte for byte: the middle segment's tail and the third segment.
        let cutDirs = try FileManager.default.contentsOfDirectory(atPath: store + "/log").filter { $0.hasPrefix("cut-") }
        #expect(cutDirs.count == 1)
        let aside = store + "/log/" + (cutDirs.first ?? "")
        #expect(FileManager.default.contents(atPath: aside + "/" + name(cuts[0].firstSeq) + ".from-offset-\(offsetInMiddle)")
                == bytes[offsetInMiddle...])
        #expect(FileManager.default.contents(atPath: aside + "/" + name(cuts[1].firstSeq)) == third)
        #expect(try segments(store) == [whole0, middle])
        // The segment cut short, then the loss's batch appended to it.
        #expect(FileManager.default.contents(atPath: middle)?.prefix(offsetInMiddle) == bytes[..<offsetInMiddle])
        // The log: what preceded the damage, unchanged, then the loss naming the cut.
        let after = try await cli(["log", "--store", store])
        expectSuccess(after)
        #expect(Array(after.stdoutLines.prefix(Int(lossSeq - 1))) == Array(whole.stdoutLines.prefix(Int(lossSeq - 1))))
        let loss = try #require(after.stdoutLines.dropFirst(Int(lossSeq - 1)).first)
        #expect(loss.contains("ledger.loss_recorded") && loss.contains("cut at seq \(lossSeq), where verify failed")
                && loss.contains("log/\(cutDirs.first ?? "")/"), "\(loss)")
        let verify = try await cli(["verify", "--store", store])
        expectSuccess(verify)
        #expect(verify.stderr.contains("(cut at seq \(lossSeq), where verify failed"), "\(verify.stderr)")
        // An auditor's bundle names the cut too.
        let bundle = tmp.path + "/bundle"
        expectSuccess(try await cli(["export", "--store", store, "--bundle", bundle]))
        let audit = try ProcessRunner.runBlocking("/usr/bin/env", ["python3", bundle + "/verify_bundle.py"], timeout: 120)
        #expect(audit.status == 0 && audit.stdoutText.contains("warning: seq \(lossSeq) records a loss")
                && audit.stdoutText.contains("(cut at seq \(lossSeq), where verify failed"), "\(audit.stdoutText)\(audit.stderrText)")
        // The head the loss gave up, checked by an auditor who wrote it down: the verifier names
        // the recorded loss (it said only "missing events or was truncated"; hostile test).
        let lostHead = try ProcessRunner.runBlocking("/usr/bin/env", ["python3", bundle + "/verify_bundle.py", "--expect-head", head], timeout: 120)
        let said = lostHead.stdoutText + lostHead.stderrText
        #expect(lostHead.status != 0 && said.contains("the log records losing it: at seq \(lossSeq) a loss was accepted of the events after \(lossSeq - 1):")
                && said.contains("up to \(head) (reason: disk fault, no backup)"), "\(said)")
        let status = try await cli(["status", "--json", "--max-age", "100000", "--store", store])
        let recorded = try JSONValue.parse(Array(status.stdout.utf8))
        #expect(recorded["recorded_loss"]?["cut"]?.stringValue?.contains("log/cut-") == true
                && recorded["last_verify"]?["ok"] == .bool(true), "\(status.stdout)")
        // The store works again: a sync appends after the loss, and the whole log verifies.
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            expectSuccess(try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now), env: keyEnv))
        }
        expectSuccess(try await cli(["verify", "--views", "--store", store]))

        // An empty file among the segments is not cut at: the sound segments after it stayed
        // acknowledged, and were moved out (hostile test).
        let stray = tmp.path + "/stray"
        try copyStore(gap, stray)
        #expect(FileManager.default.createFile(atPath: stray + "/log/" + name(cuts[0].firstSeq - 1), contents: Data()))
        let strayBefore = storeSnapshot(stray)
        let strayCut = try await cli(["repair", "--store", stray, "--accept-loss", "stray file", "--cut-damaged"])
        expectCleanFailure(strayCut, mentioning: ["is an empty file among the segments", "move it out of log/"])
        #expect(storeSnapshot(stray).filter { !$0.key.hasSuffix("LOCK") && !$0.key.hasPrefix("state/verify") } == strayBefore.filter { !$0.key.hasSuffix("LOCK") && !$0.key.hasPrefix("state/verify") })

        // A segment missing in the middle: the segments after it are moved aside whole.
        try FileManager.default.removeItem(atPath: gap + "/log/" + name(cuts[0].firstSeq))
        let gapRepair = try await cli(["repair", "--store", gap, "--accept-loss", "segment deleted", "--cut-damaged"])
        expectSuccess(gapRepair)
        #expect(gapRepair.stdout.contains("cut the log at seq \(cuts[0].firstSeq)")
                && gapRepair.stdout.contains("recorded the loss as seq \(cuts[0].firstSeq)"), "\(gapRepair.stdout)")
        #expect(try segments(gap) == [gap + "/log/" + name(1)])
        let gapDir = try #require(try FileManager.default.contentsOfDirectory(atPath: gap + "/log").first { $0.hasPrefix("cut-") })
        #expect(FileManager.default.contents(atPath: gap + "/log/" + gapDir + "/" + name(cuts[1].firstSeq)) == third)
        expectSuccess(try await cli(["verify", "--views", "--store", gap]))

        // A head expected and not found is not damage: repair gives that failure's own advice
        // (it was sent to --cut-damaged, which found nothing to cut and sent it back).
        let wrongHead = try await cli(["verify", "--expect-head", "3:" + String(repeating: "0", count: 64), "--store", gap])
        #expect(wrongHead.status == 1)
        let afterWrongHead = try await cli(["repair", "--store", gap, "--accept-loss", "disk fault"])
        expectCleanFailure(afterWrongHead, mentioning: ["verify --expect-head` with the right head clears this"])
        #expect(!afterWrongHead.stderr.contains("--cut-damaged"), "\(afterWrongHead.stderr)")
    }

    /// A cut that fails midway (the damaged segment cannot be truncated: immutable) keeps every
    /// byte and leaves a log that is a prefix of the old one; a plain `repair` then refuses to
    /// append after the damage (it recorded a loss there and could not fold the views: hostile
    /// test), and the next `--cut-damaged` records the loss naming both cuts (the record named
    /// only the last; cold review). With no views the writer's `state/head` is the evidence (the
    /// cut was recorded as no loss at all, and the head record moved on: hostile test), and the
    /// reason is checked against the rosters read from the log itself.
    @Test func anInterruptedCutIsFinishedAndRecordedWithoutViews() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-cut-interrupted")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2])
        let head = try await verifiedHead(store)
        let (batches, starts) = try splitInThree(store)
        let middle = store + "/log/" + segmentName(starts[0].firstSeq)
        let damaged = batches[(batches.count / 3) + 1]
        let offset = damaged.offset - starts[0].offset
        var bytes = try #require(FileManager.default.contents(atPath: middle))
        bytes[offset + 80 + 5] ^= 0x20
        try bytes.write(to: URL(fileURLWithPath: middle))
        let third = try #require(FileManager.default.contents(atPath: store + "/log/" + segmentName(starts[1].firstSeq)))
        try FileManager.default.removeItem(atPath: store + "/projections.sqlite")
        let named = try await cli(["repair", "--store", store, "--accept-loss", "\(PrivacyFixture.other.name) saw it", "--cut-damaged"])
        expectCleanFailure(named, mentioning: ["--accept-loss names a roster patient"])
        // Another patient's key file lost: the name is still checked (every roster counted as
        // unreadable, and the reason went into the log unchecked: hostile test).
        let lostKey = tmp.path + "/lost-key"
        try copyStore(store, lostKey)
        let keyFiles = try FileManager.default.contentsOfDirectory(atPath: lostKey + "/keys/patients").filter { $0.hasSuffix(".key") }.sorted()
        #expect(keyFiles.count > 1)
        try FileManager.default.removeItem(atPath: lostKey + "/keys/patients/" + (keyFiles.first ?? ""))
        let namedLostKey = try await cli(["repair", "--store", lostKey, "--accept-loss", "\(PrivacyFixture.other.name) saw it", "--cut-damaged"])
        expectCleanFailure(namedLostKey, mentioning: ["--accept-loss names a roster patient"])

        let chattr = try ProcessRunner.runBlocking("/usr/bin/env", ["chattr", "+i", middle], timeout: 30)
        #expect(chattr.status == 0, "chattr +i is needed to make the cut fail midway: \(chattr.stderrText)")
        let failed = try await cli(["repair", "--store", store, "--accept-loss", "disk fault", "--cut-damaged"])
        _ = try ProcessRunner.runBlocking("/usr/bin/env", ["chattr", "-i", middle], timeout: 30)
        expectCleanFailure(failed, mentioning: ["the cut failed", "nothing is deleted", "run the repair again"], allowStdout: true)
        #expect(try segments(store) == [store + "/log/" + segmentName(1), middle])
        #expect(FileManager.default.contents(atPath: middle) == bytes)
        let firstDir = try #require(try FileManager.default.contentsOfDirectory(atPath: store + "/log").first { $0.hasPrefix("cut-") })
        #expect(FileManager.default.contents(atPath: store + "/log/\(firstDir)/" + segmentName(starts[1].firstSeq)) == third)
        #expect(FileManager.default.fileExists(atPath: store + "/state/cut-pending.json"))

        let plain = try await cli(["repair", "--store", store, "--accept-loss", "disk fault"])
        expectCleanFailure(plain, mentioning: ["nothing was changed", "payload CRC32C mismatch", "--cut-damaged"])
        #expect(FileManager.default.contents(atPath: middle) == bytes)

        let repair = try await cli(["repair", "--store", store, "--accept-loss", "disk fault", "--cut-damaged"])
        expectSuccess(repair)
        #expect(repair.stdout.contains("recorded the loss as seq \(damaged.firstSeq): \(head) had been acknowledged"), "\(repair.stdout)")
        let dirs = try FileManager.default.contentsOfDirectory(atPath: store + "/log").filter { $0.hasPrefix("cut-") }.sorted()
        #expect(dirs.count == 2, "\(dirs)")
        let loss = try await cli(["status", "--json", "--max-age", "100000", "--store", store])
        let cut = try JSONValue.parse(Array(loss.stdout.utf8))["recorded_loss"]?["cut"]?.stringValue ?? ""
        #expect(dirs.allSatisfy { cut.contains("log/\($0)/") }, "\(cut)")
        #expect(!FileManager.default.fileExists(atPath: store + "/state/cut-pending.json"))
        for dir in dirs {
            #expect(FileManager.default.contents(atPath: store + "/log/\(dir)/" + segmentName(starts[0].firstSeq) + ".from-offset-\(offset)")
                    == bytes[offset...], "\(dir)")
        }
        expectSuccess(try await cli(["verify", "--views", "--store", store]))

        // With state/head damaged, or missing (a store from before head evidence), and no views:
        // the cut is still recorded as a loss, its head unknown (the open rewrote a damaged
        // record and the cut read as no loss: cold review).
        for how in ["damaged", "missing"] {
            let copy = tmp.path + "/head-" + how
            try copyStore(store, copy)
            let last = try #require(try segments(copy).last)
            let lastBatch = try #require(try segmentBatches(last).last)
            var data = try #require(FileManager.default.contents(atPath: last))
            data[lastBatch.end - 3] ^= 0x44
            try data.write(to: URL(fileURLWithPath: last))
            if how == "damaged" { truncateFile(copy + "/state/head", to: 0) } else { try FileManager.default.removeItem(atPath: copy + "/state/head") }
            try FileManager.default.removeItem(atPath: copy + "/projections.sqlite")
            let r = try await cli(["repair", "--store", copy, "--accept-loss", "disk fault", "--cut-damaged"])
            expectSuccess(r)
            #expect(r.stdout.contains("recorded the loss as seq \(lastBatch.firstSeq): unknown had been acknowledged"), "\(how): \(r.stdout)")
            let json = try JSONValue.parse(Array(try await cli(["status", "--json", "--max-age", "100000", "--store", copy]).stdout.utf8))
            #expect(json["recorded_loss"]?["cut"]?.stringValue?.contains("cut at seq \(lastBatch.firstSeq)") == true, "\(how)")
        }
    }
}

extension CLIBinaryTests {
    /// A webhook run whose last batch (its end) is damaged and cut: `status` says its end may
    /// have gone with the events lost, in the run's line and in the problem the alerts' check
    /// gives (that said "died" beside it; hostile test).
    @Test func aRunWhoseEndWasCutIsNotSaidToHaveDied() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-cut-run")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        let day = try #require(practice.day(2))
        try await withFakeServer(day) { _, url in
            expectSuccess(try await cli(syncArgs(store: store, baseURL: url, now: day.now, extra: ["--type", "webhook"]), env: keyEnv))
        }
        let segment = try #require(try segments(store).last)
        let last = try #require(try segmentBatches(segment).last)
        var bytes = try #require(FileManager.default.contents(atPath: segment))
        bytes[last.end - 3] ^= 0x44
        try bytes.write(to: URL(fileURLWithPath: segment))
        expectSuccess(try await cli(["repair", "--store", store, "--accept-loss", "disk fault, no backup", "--cut-damaged"]))
        let status = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(status.status == 1 && status.stdout.contains("problem: the last webhook run failed: no end recorded: the run began before seq \(last.firstSeq)")
                && !status.stdout.contains("died:"), "\(status.stdout)")
    }
}

extension CLIBinaryTests {
    /// A view's checkpoint edited by hand, while the log holds the head the writer recorded:
    /// the views are named as the likeliest problem, with the way out (move the views aside,
    /// `rebuild`), and the log and state/head replaced together as the other reading. It was
    /// blamed on the log alone ("an older or other copy of the log") with `repair --accept-loss`
    /// as the remedy, which would have recorded a loss that never was (hostile test).
    @Test func anEditedViewCheckpointIsTheViewsFaultNotTheLogs() async throws {
        let tmp = TempDir("trust-views-checkpoint")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1])
        let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute(\"UPDATE projection_state SET last_hash=? WHERE name='locations'\",(sys.argv[2],))\nc.commit()"
        for hash in ["00", String(repeating: "a", count: 64)] {
            #expect(try python(script, [store + "/projections.sqlite", hash]) == 0)
            let status = try await cli(["status", "--store", store, "--max-age", "100000"])
            #expect(status.status == 1, "\(hash): \(status.stdout)")
            let said = status.stdout + status.stderr
            #expect(said.contains("Most likely the views file was edited") && said.contains("move projections.sqlite aside and run `syncledger rebuild`")
                    && said.contains("If instead the log and state/head were both replaced") && !said.contains("older or other copy of the log"),
                    "\(hash): \(said)")
            for suffix in ["", "-wal", "-shm"] { unlink(store + "/projections.sqlite" + suffix) }
            expectSuccess(try await cli(["rebuild", "--store", store]))
            expectSuccess(try await cli(["status", "--store", store, "--max-age", "100000"]))
        }
    }
}

extension CLIBinaryTests {
    /// A second cut that reaches back past an earlier loss's record and a forget: the new loss
    /// record keeps both (`cut_held`, their envelope lines), `status` and `verify` say what they
    /// were, and the forget is recorded again, since the key store still marks the patient
    /// forgotten. Both went out of the log unsaid, and `status` then offered to remove the
    /// forget's mark (hostile test).
    @Test func aSecondCutKeepsTheLedgersRecordsItTookOutOfTheLog() async throws {
        let practice = try Practice.load()
        let tmp = TempDir("trust-cut-held")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: practice, days: [1])
        func flip(_ batch: SegmentBatch) throws {
            let segment = try #require(try segments(store).last)
            var bytes = try #require(FileManager.default.contents(atPath: segment))
            bytes[batch.offset + 80 + 5] ^= 0x20
            try bytes.write(to: URL(fileURLWithPath: segment))
        }
        let firstHead = try await verifiedHead(store)
        // The first cut: the first sync's last batch.
        let firstRun = try segmentBatches(try #require(try segments(store).last))
        #expect(firstRun.count >= 3)
        let lastBatch = try #require(firstRun.last)
        try flip(lastBatch)
        expectSuccess(try await cli(["repair", "--store", store, "--accept-loss", "first fault", "--cut-damaged"]))
        let lossSeq = lastBatch.firstSeq
        // Then a forget and another sync after the first loss's record.
        let patient = PrivacyFixture.forgotten.id
        expectSuccess(try await cli(["forget", "--store", store, "--patient", patient, "--reason", "consent withdrawn"], env: keyEnv))
        let forgetSeq = try await Self.verifiedHeadSeq(of: store)
        #expect(forgetSeq == lossSeq + 1)
        let day = try #require(practice.day(2))
        try await withFakeServer(day) { _, url in
            expectSuccess(try await cli(syncArgs(store: store, baseURL: url, now: day.now), env: keyEnv))
        }
        // The second cut, at the first sync's second batch: the loss's record and the forget go with it.
        let second = try segmentBatches(try #require(try segments(store).last))[1]
        #expect(second.lastSeq < lossSeq)
        try flip(second)
        let repair = try await cli(["repair", "--store", store, "--accept-loss", "second fault", "--cut-damaged"])
        expectSuccess(repair)
        #expect(repair.stdout.contains("cut the log at seq \(second.firstSeq)")
                && repair.stdout.contains("recorded again the forget of \(patient) that the cut took out of the log (seq \(second.firstSeq))")
                && repair.stdout.contains("recorded the loss as seq \(second.firstSeq + 1)"), "\(repair.stdout)")

        // The log: the forget again, then the loss record holding both records as they were.
        let log = try await cli(["log", "--store", store])
        expectSuccess(log)
        let lines = log.stdoutLines
        #expect(lines.count == Int(second.firstSeq + 1))
        let again = try #require(try? JSONValue.parse(Array((lines.dropLast().last ?? "").utf8)))
        #expect(again["type"]?.stringValue == "patient.forgotten" && again["data"]?["patient_id"]?.stringValue == patient
                && again["data"]?["reason"]?.stringValue == "recorded again by repair: the forget recorded at seq \(forgetSeq) went with a cut; its reason: consent withdrawn",
                "\(lines.dropLast().last ?? "")")
        let record = try #require(try? JSONValue.parse(Array((lines.last ?? "").utf8)))
        func array(_ v: JSONValue?) -> [JSONValue] { if case .array(let a)? = v { return a } else { return [] } }
        let held = array(record["data"]?["cut_held"]).compactMap { $0.stringValue.flatMap { try? JSONValue.parse(Array($0.utf8)) } }
        #expect(held.count == 2, "\(lines.last ?? "")")
        #expect(held.first?["seq"] == .number(Double(lossSeq)) && held.first?["type"]?.stringValue == "ledger.loss_recorded"
                && held.first?["data"]?["reason"]?.stringValue == "first fault", "\(held)")
        #expect(held.last?["seq"] == .number(Double(forgetSeq)) && held.last?["type"]?.stringValue == "patient.forgotten"
                && held.last?["data"]?["reason"]?.stringValue == "consent withdrawn", "\(held)")

        // Said wherever the loss is: status (text and JSON) and verify.
        let said = "the bytes cut held the record of a loss (seq \(lossSeq) of "
        let status = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(status.stdout.contains(said) && status.stdout.contains("a forget (seq \(forgetSeq), patient \(patient))")
                && status.stdout.contains("reason: first fault") && !status.stdout.contains("records no forget"), "\(status.stdout)")
        let json = try JSONValue.parse(Array(try await cli(["status", "--json", "--max-age", "100000", "--store", store]).stdout.utf8))
        #expect(array(json["recorded_loss"]?["cut_held"]).count == 2, "\(json)")
        let verify = try await cli(["verify", "--store", store])
        expectSuccess(verify)
        #expect(verify.stderr.contains(said) && verify.stderr.contains("a forget (seq \(forgetSeq), patient \(patient))"), "\(verify.stderr)")
        // A head the first loss gave up is still named as given up, through the record that keeps it.
        let given = try await cli(["verify", "--store", store, "--expect-head", firstHead])
        #expect(given.status == 1 && given.stdout.contains("The log records losing it: at seq \(lossSeq) (")
                && given.stdout.contains("(a later cut took that record; the loss recorded at seq \(second.firstSeq + 1) keeps it)"), "\(given.stdout)")
        let bundle = tmp.path + "/bundle"
        expectSuccess(try await cli(["export", "--store", store, "--bundle", bundle]))
        let audit = try ProcessRunner.runBlocking("/usr/bin/env", ["python3", bundle + "/verify_bundle.py"], timeout: 120)
        #expect(audit.status == 0 && audit.stdoutText.contains(
            "the bytes it cut held the ledger's own records it keeps as cut_held: ledger.loss_recorded at seq \(lossSeq), patient.forgotten at seq \(forgetSeq)"),
                "\(audit.stdoutText)\(audit.stderrText)")
        let auditGiven = try ProcessRunner.runBlocking("/usr/bin/env", ["python3", bundle + "/verify_bundle.py", "--expect-head", firstHead], timeout: 120)
        #expect(auditGiven.status != 0 && (auditGiven.stdoutText + auditGiven.stderrText).contains(
            "the log records losing it: at seq \(lossSeq) a loss was accepted of the events after \(lossSeq - 1):")
                && (auditGiven.stdoutText + auditGiven.stderrText).contains("(a later cut took that record; the loss recorded at seq \(second.firstSeq + 1) keeps it)"),
                "\(auditGiven.stdoutText)\(auditGiven.stderrText)")
        // The log records the forget: another finds it recorded and appends nothing.
        let head = try await Self.verifiedHeadSeq(of: store)
        let forgetAgain = try await cli(["forget", "--store", store, "--patient", patient, "--reason", "consent withdrawn"], env: keyEnv)
        #expect(forgetAgain.stdout.contains("patient \(patient) was already forgotten"), "\(forgetAgain.stdout)")
        #expect(try await Self.verifiedHeadSeq(of: store) == head)
    }
}

extension CLIBinaryTests {
    /// What a cut's note says it held goes into the log in the clear, so it is checked as the
    /// reason is: a record past the acknowledged head, one naming a roster patient, and a note
    /// describing a cut with a name are not kept; a record is written again from its fields (an
    /// extra one, a phone number, does not reach the log); a forget kept is recorded again,
    /// even with the patient's key file there (a forged batch and a hand-edited note put a name
    /// and a phone number into the loss record: hostile test).
    @Test func aCutsRecordsAreCheckedAsTheReasonIs() async throws {
        let tmp = TempDir("trust-cut-checked")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1])
        let acknowledged = try await Self.verifiedHeadSeq(of: store)
        let segment = try #require(try segments(store).last)
        let last = try #require(try segmentBatches(segment).last)
        truncateFile(segment, to: last.offset)
        let end = last.firstSeq - 1
        let patient = PrivacyFixture.forgotten
        func line(_ seq: UInt64, _ type: String, _ stream: String, _ data: String) -> String {
            "{\"seq\":\(seq),\"id\":\"0195f0a0-0000-7000-8000-00000000000\(seq % 10)\",\"type\":\"\(type)\",\"v\":1,\"at\":\"2026-12-07T10:00:00.000Z\",\"stream\":\"\(stream)\",\"data\":\(data)}"
        }
        let loss = "{\"last_known_head\":\"9:\(String(repeating: "ab", count: 32))\",\"evidence\":\"state/head\",\"log_ended_at\":\"8:\(String(repeating: "cd", count: 32))\",\"reason\":\"%@\"}"
        let held = [
            line(end + 1, "ledger.loss_recorded", "ledger", loss.replacingOccurrences(of: "%@", with: "earlier fault")),
            line(end + 1, "patient.forgotten", "patient/\(patient.id)",
                 "{\"patient_id\":\"\(patient.id)\",\"forgotten_at\":\"2026-12-07T10:00:00.000Z\",\"reason\":\"consent withdrawn\",\"phone\":\"555-867-5309\"}"),
            line(acknowledged + 5, "patient.forgotten", "patient/\(PrivacyFixture.other.id)",
                 "{\"patient_id\":\"\(PrivacyFixture.other.id)\",\"forgotten_at\":\"2026-12-07T10:00:00.000Z\",\"reason\":\"past the head\"}"),
            line(end + 1, "ledger.loss_recorded", "ledger", loss.replacingOccurrences(of: "%@", with: "\(patient.name) called")),
            // Not in their form: a time that is an email, an id that is a phone number.
            line(end + 1, "patient.forgotten", "patient/p-001", "{\"patient_id\":\"p-001\",\"forgotten_at\":\"jo@example.com\",\"reason\":\"x\"}"),
            line(end + 1, "ledger.loss_recorded", "ledger", loss.replacingOccurrences(of: "%@", with: "y"))
                .replacingOccurrences(of: "0195f0a0-0000-7000-8000-00000000000", with: "555-867-5309-0000-7000-8000-00000000"),
            // A forget the key store does not mark: named, not recorded again.
            line(end + 1, "patient.forgotten", "patient/p-003", "{\"patient_id\":\"p-003\",\"forgotten_at\":\"2026-12-07T10:00:00.000Z\",\"reason\":\"unmarked\"}"),
        ]
        let note = try JSONSerialization.data(withJSONObject: ["cuts": ["cut by hand for \(patient.name)"], "held": held])
        #expect(FileManager.default.createFile(atPath: store + "/state/cut-pending.json", contents: note))
        // A patient marked forgotten whose forget no record in the note holds (it was in bytes
        // that do not read): named by the repair.
        let other = PrivacyFixture.other.id
        try FileManager.default.createDirectory(atPath: store + "/keys/forgotten", withIntermediateDirectories: true)
        for marked in [other, patient.id] {
            #expect(FileManager.default.createFile(atPath: store + "/keys/forgotten/" + marked.utf8.map { String(format: "%02x", $0) }.joined(), contents: Data()))
        }
        let status = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(status.status == 1 && status.stderr.contains("a repair cut them aside and was stopped before it recorded the loss"), "\(status.stderr)")

        let repair = try await cli(["repair", "--store", store, "--accept-loss", "disk fault"])
        expectSuccess(repair)
        #expect(repair.stderr.contains("4 of the ledger's records read from the bytes cut are not kept")
                && repair.stderr.contains("the bytes cut held the forget of p-003, but") && !repair.stdout.contains("p-003")
                && repair.stderr.contains("holds their key again") && repair.stdout.contains("recorded again the forget of \(patient.id)")
                && repair.stderr.contains("/forgotten marks \(other) as forgotten, but the log no longer records their forget"),
                "\(repair.stdout)\(repair.stderr)")
        let log = try await cli(["log", "--store", store])
        expectSuccess(log)
        #expect(!log.stdout.contains(patient.name) && !log.stdout.contains("555-867-5309") && !log.stdout.contains("past the head")
                && !log.stdout.contains("jo@example.com"), "\(log.stdout.suffix(2000))")
        let record = try #require(try? JSONValue.parse(Array((log.stdoutLines.last ?? "").utf8)))
        #expect(record["data"]?["cut"]?.stringValue == "a cut whose note holds personal data (see log/cut-*/)", "\(record)")
        guard case .array(let kept)? = record["data"]?["cut_held"] else {
            Issue.record("no cut_held: \(record)")
            return
        }
        #expect(record["data"]?["cut_held_not_kept"] == .number(4), "\(record)")
        #expect(kept.count == 3 && kept.allSatisfy { ($0.stringValue ?? "").contains("\"seq\":\(end + 1)") }, "\(kept)")
        // The patient is forgotten in the log again; status names the key file that is back.
        let after = try await cli(["status", "--max-age", "100000", "--store", store])
        #expect(after.stdout.contains("the log records \(patient.id) as forgotten") && after.stdout.contains("holds their key again"), "\(after.stdout)")
    }
}

extension CLIBinaryTests {
    /// Zeros from inside an acknowledged batch to the end of the log read as a torn write, which
    /// opening removes: `--cut-damaged` keeps them in log/cut-*/ and records the loss (they were
    /// deleted with no copy, "no damage to cut": hostile test).
    @Test func aTornLookingEndOfAcknowledgedBatchesIsCutAsideNotDeleted() async throws {
        let tmp = TempDir("trust-cut-torn")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1, 2])
        let head = try await verifiedHead(store)
        let segment = try #require(try segments(store).last)
        let batches = try segmentBatches(segment)
        let damaged = batches[batches.count - 3]
        #expect(damaged.offset > 0)
        var bytes = try #require(FileManager.default.contents(atPath: segment))
        for i in (damaged.offset + 100)..<bytes.count { bytes[i] = 0 }
        try bytes.write(to: URL(fileURLWithPath: segment))
        let repair = try await cli(["repair", "--store", store, "--accept-loss", "zeros at the end", "--cut-damaged"])
        expectSuccess(repair)
        #expect(repair.stdout.contains("cut the log at seq \(damaged.firstSeq)") && repair.stdout.contains("a torn write at the log's end")
                && repair.stdout.contains("recorded the loss as seq \(damaged.firstSeq): \(head) had been acknowledged"), "\(repair.stdout)")
        let aside = try #require(try FileManager.default.contentsOfDirectory(atPath: store + "/log").first { $0.hasPrefix("cut-") })
        let name = URL(fileURLWithPath: segment).lastPathComponent
        #expect(FileManager.default.contents(atPath: store + "/log/\(aside)/\(name).from-offset-\(damaged.offset)") == bytes[damaged.offset...],
                "\((try? FileManager.default.contentsOfDirectory(atPath: store + "/log/" + aside)) ?? [])")
        expectSuccess(try await cli(["verify", "--store", store]))
    }
}
