import Foundation
import TestSupport
import Testing
@testable import EventLog

/// What a cut still reads of the bytes it moves (`EventLogWriter.readableBatches`): every batch
/// left whole, in order, past damage of each kind; none that the damage touched.
struct CutSalvageTests {
    /// The offset and length of each batch of a segment, from its headers.
    static func layout(_ bytes: [UInt8]) -> [(offset: Int, length: Int)] {
        var out: [(Int, Int)] = []
        var at = 0
        while at + 80 <= bytes.count {
            let compressed = bytes[(at + 28)..<(at + 32)].reversed().reduce(0) { $0 << 8 | Int($1) }
            out.append((at, 80 + compressed))
            at += 80 + compressed
        }
        return out
    }

    @Test func everyWholeBatchAfterTheDamageStillReads() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("everyWholeBatchAfterTheDamageStillReads seed \(seed)")
        var rng = SeededRNG(state: seed)
        for round in 0..<40 {
            let dir = TempDir()
            defer { dir.remove() }
            let writer = try EventLogWriter.open(directory: dir.log, options: fast)
            var batches: [[[UInt8]]] = []
            var n = 1
            for _ in 0..<(4 + rng.below(8)) {
                let batch = (0..<(1 + rng.below(30))).map { event(n + $0, pad: rng.below(300)) }
                n += batch.count
                try writer.append(batch)
                batches.append(batch)
            }
            writer.close()
            let path = dir.segmentPath(try #require(dir.segments().first))
            let original = fileBytes(path)
            var bytes = original
            let layout = Self.layout(bytes)
            #expect(layout.count == batches.count && layout.last.map { $0.offset + $0.length } == bytes.count)
            // Damage at batch k, of one kind.
            let k = rng.below(batches.count - 1)
            let (start, length) = layout[k]
            let kind = rng.below(4)
            switch kind {
            case 0:  // a header byte
                bytes[start + rng.below(80)] ^= UInt8(1 + rng.below(255))
            case 1:  // a payload byte
                bytes[start + 80 + rng.below(length - 80)] ^= UInt8(1 + rng.below(255))
            case 2:  // zeros from inside the batch into the next one's header
                let from = start + 1 + rng.below(length - 1)
                let to = min(bytes.count, layout[k + 1].offset + 1 + rng.below(80))
                for i in from..<to { bytes[i] = 0 }
            default:  // garbage written over the batch's start, shorter than the batch
                for i in start..<(start + 1 + rng.below(length - 1)) { bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
            }
            writeBytes(bytes, path)
            // The batches it changed (zeros over the four zero bytes that end an LZ4 frame change nothing).
            let touched = Set(layout.indices.filter { bytes[layout[$0].offset..<(layout[$0].offset + layout[$0].length)]
                    != original[layout[$0].offset..<(layout[$0].offset + layout[$0].length)] })
            #expect(touched.contains(k) || kind == 2)
            var read: [[UInt8]] = []
            let (count, events) = try EventLogWriter.readableBatches(path: path, from: UInt64(start)) { read.append($0) }
            let whole = batches.indices.filter { $0 >= k && !touched.contains($0) }
            let expected: [[UInt8]] = whole.map { j in batches[j].flatMap { line -> [UInt8] in line + [10] } }
            #expect(read == expected, "round \(round), damage of kind \(kind) at batch \(k) of \(batches.count)")
            #expect(count == expected.count && events == UInt64(whole.map { batches[$0].count }.reduce(0, +)))
        }
    }
}

extension CutSalvageTests {
    /// Damage longer than the scan's 1 MiB window (zeros over several batches), then a batch
    /// whose header reads but whose payload does not: the batches after both are found.
    @Test func theSearchGoesOnPastItsWindow() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("theSearchGoesOnPastItsWindow seed \(seed)")
        var rng = SeededRNG(state: seed)
        let dir = TempDir()
        defer { dir.remove() }
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        var batches: [[[UInt8]]] = []
        for b in 0..<40 {
            // Random hex: LZ4 halves it at best, so 40 batches make ~2.4 MB.
            let batch = (0..<60).map { n in Array("{\"n\":\(b * 60 + n),\"r\":\"\(rng.hex(2_000))\"}".utf8) }
            try writer.append(batch)
            batches.append(batch)
        }
        writer.close()
        let path = dir.segmentPath(try #require(dir.segments().first))
        var bytes = fileBytes(path)
        let layout = Self.layout(bytes)
        // Zeros from inside batch 1 over more than 1 MiB; then batch k's payload flipped.
        let from = layout[1].offset + 200
        let to = from + (1 << 20) + 300_000
        let k = try #require(layout.firstIndex { $0.offset > to + 1 })
        for i in from..<to { bytes[i] = 0 }
        bytes[layout[k].offset + 80 + 10] ^= 0x01
        writeBytes(bytes, path)
        let damaged = Set(layout.indices.filter { layout[$0].offset < to && layout[$0].offset + layout[$0].length > from }).union([k])
        var read: [[UInt8]] = []
        _ = try EventLogWriter.readableBatches(path: path, from: UInt64(layout[1].offset)) { read.append($0) }
        let expected: [[UInt8]] = batches.indices.filter { $0 >= 1 && !damaged.contains($0) }
            .map { j in batches[j].flatMap { line -> [UInt8] in line + [10] } }
        #expect(bytes.count > 2 << 20 && read.count == expected.count && read == expected, "\(read.count) read, \(expected.count) expected")
    }
}

/// The first damaged batch, as the head check names it.
struct HeadCheckDamageTests {
    /// Zeros from inside a batch's payload into the next batch's header: the head check (which
    /// reads headers) names the batch they begin in, whose payload fails, not the next one, so
    /// "export what precedes seq N" can be followed (hostile test: it named the next one). Zeros
    /// over the next header alone still name that header.
    @Test(arguments: [true, false])
    func damageReachingIntoAHeaderIsNamedWhereItBegins(fromThePayloadBefore: Bool) throws {
        let dir = TempDir()
        defer { dir.remove() }
        let writer = try EventLogWriter.open(directory: dir.log, options: fast)
        try appendBatches(writer, batches: 6, size: 5)
        let head = writer.head
        writer.close()
        let path = dir.segmentPath(try #require(dir.segments().first))
        var bytes = fileBytes(path)
        let layout = CutSalvageTests.layout(bytes)
        let next = layout[3].offset
        for i in (fromThePayloadBefore ? next - 30 : next)..<(next + 40) { bytes[i] = 0 }
        writeBytes(bytes, path)
        do {
            _ = try EventLogReader.check(directory: dir.log, holds: head)
            Issue.record("the damage was not found")
        } catch let e as LogError {
            if fromThePayloadBefore {
                #expect(e.code == .payloadChecksum && e.seq == 11 && e.offset == UInt64(layout[2].offset)
                        && e.message.contains("the damage reaches on into the next batch's header"), "\(e.message)")
            } else {
                #expect(e.code == .badMagic && e.seq == 16 && e.offset == UInt64(next), "\(e.message)")
            }
        }
    }
}
