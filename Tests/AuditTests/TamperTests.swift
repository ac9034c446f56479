import EventLog
import Foundation
import IntakeQ
import Ledger
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
import JSONCore
#endif

extension AuditTests {
    /// The `head_before` anchor of every `sync.completed`, in order.
    func anchors(_ t: Timeline) throws -> [LogHead] {
        var out: [LogHead] = []
        try t.reader().forEachEvent { e in
            if e.type == "sync.completed" {
                let c = try e.decodeData(SyncCompleted.self)
                if let h = LogHead(parsing: c.headBefore) { out.append(h) }
            }
            return true
        }
        return out
    }

    func verifyJSON(_ store: String, expect: LogHead? = nil) async throws -> (ProcResult, JSONValue) {
        var args = ["verify", "--json"]
        if let expect { args += ["--expect-head", expect.description] }
        let r = try await syncledger(store, args: args)
        return (r, try parseJSON(r.stdout))
    }

    @Test func expectHeadOnAnIntactLog() async throws {
        let t = try await Timeline.get()
        let final = t.finalHead
        let plain = try await syncledger(t.store, "verify")
        #expect(plain.code == 0, "\(plain.all)")
        #expect(plain.out.contains("head \(final)"))

        let anchors = try anchors(t)
        #expect(anchors.count == t.days.count)
        for (anchor, day) in zip(anchors, t.days) {
            // sync.completed is a batch of its own, right after head_before.
            #expect(anchor.seq == day.head.seq - 1)
        }
        for h in [final] + t.days.map(\.head) + anchors {
            let r = try await syncledger(t.store, "verify", "--expect-head", h.description)
            #expect(r.code == 0, "--expect-head \(h): \(r.all)")
            #expect(r.out.contains("matches the expected head \(h)"))
        }
        let (r, json) = try await verifyJSON(t.store, expect: anchors[1])
        #expect(r.code == 0)
        #expect(json["ok"] == .bool(true))
        #expect(json["head"] == .string(final.description))
        #expect(json["events"] == .number(Double(final.seq)))

        // A made-up hash at the real head, and a seq that falls inside a batch.
        var forged = final
        forged.hash[0] ^= 1
        let bad = try await syncledger(t.store, "verify", "--expect-head", forged.description)
        #expect(bad.code == 1)
        #expect(bad.out.contains("diverges"), "\(bad.all)")
        let inside = LogHead(seq: anchors[0].seq - 1, hash: anchors[0].hash)
        let r2 = try await syncledger(t.store, "verify", "--expect-head", inside.description)
        #expect(r2.code == 1, "\(r2.all)")
        // The rest of the log is verified all the same: "intact through" is its end (it named the
        // batch before the mismatch, as if the log were damaged there; hostile test).
        #expect(bad.out.contains("intact through head \(final)") && r2.out.contains("intact through head \(final)"), "\(bad.all)\n\(r2.all)")
        let (r3, insideJSON) = try await verifyJSON(t.store, expect: inside)
        #expect(r3.code == 1 && insideJSON["head"] == .string(final.description) && insideJSON["events"] == .number(Double(final.seq))
                && insideJSON["error"]?["seq"] != nil, "\(r3.all)")

        // The chain recomputed here from docs/FORMAT.md agrees with every stored hash.
        var chain = [UInt8](repeating: 0, count: 32)
        var last: UInt64 = 0
        for seg in try segments(ofStore: t.store) {
            for (b, content) in try await segmentContents(seg) {
                #expect(b.firstSeq == last + 1)
                #expect(CRC32C.checksum(b.payload) == b.payloadCRC)
                #expect(CRC32C.checksum(b.header[8..<76]) == b.headerCRC)
                chain = RawBatch.chain(previous: chain, version: b.version, firstSeq: b.firstSeq, count: b.count, content: content)
                #expect(chain == b.chain, "batch at seq \(b.firstSeq)")
                last = b.lastSeq
            }
        }
        #expect(LogHead(seq: last, hash: chain) == final)
    }

    @Test func expectHeadOnATruncatedLog() async throws {
        let t = try await Timeline.get()
        let anchor = try anchors(t)[2]  // day 3's head_before
        let segs = try segments(ofStore: t.store)
        #expect(segs.count > 1, "the timeline spans several segments")
        // The segment holding the anchor's batch.
        var found: (seg: Int, batches: [RawBatch], index: Int)?
        for (si, seg) in segs.enumerated() {
            let batches = try parseSegment(try readFile(seg))
            if let i = batches.firstIndex(where: { $0.lastSeq == anchor.seq }) { found = (si, batches, i) }
        }
        let (si, batches, i) = try #require(found)
        try #require(i > 0, "the anchor's batch is not the first of its segment")
        let before = batches[i - 1]

        for (label, cut) in [("mid-batch", batches[i].endOffset - 1), ("batch boundary", batches[i].offset)] {
            let dir = try makeTempDir("truncate")
            defer { removeTree(dir) }
            let store = try t.copyStore(into: dir)
            // The tail is lost: later segments go, and the anchor's segment is cut short.
            for later in segs[(si + 1)...] { removeTree(store + "/log/" + (later as NSString).lastPathComponent) }
            let seg = store + "/log/" + (segs[si] as NSString).lastPathComponent
            #expect(truncate(seg, off_t(cut)) == 0)

            // Plain verify cannot tell: a short last batch is a torn tail (a warning).
            let plain = try await syncledger(store, "verify")
            #expect(plain.code == 0, "\(label): \(plain.all)")
            #expect(plain.out.contains("head \(before.lastSeq):"), "\(label): \(plain.out)")

            // Against the anchor written down earlier it fails, saying where the log ends.
            let r = try await syncledger(store, "verify", "--expect-head", anchor.description)
            #expect(r.code == 1, "\(label): \(r.all)")
            #expect(r.out.contains("seq \(before.lastSeq)") && r.out.contains(anchor.description), "\(label): \(r.out)")
            let (_, json) = try await verifyJSON(store, expect: anchor)
            #expect(json["ok"] == .bool(false))
            #expect(json["error"]?["seq"] == .number(Double(before.lastSeq)), "\(label): \(json)")
            let final = try await syncledger(store, "verify", "--expect-head", t.finalHead.description)
            #expect(final.code == 1)
            // An anchor before the cut still holds.
            let early = try await syncledger(store, "verify", "--expect-head", t.days[1].head.description)
            #expect(early.code == 0, "\(label): \(early.all)")
        }
    }

    /// An attacker changes one byte of one event in an early batch and recomputes that batch's
    /// payload CRC, chain hash and header CRC and every later batch's chain hash and header
    /// CRC. The log is self-consistent again; only a published head catches it.
    @Test func expectHeadCatchesARecomputedChain() async throws {
        let t = try await Timeline.get()
        let dir = try makeTempDir("attack")
        defer { removeTree(dir) }
        let store = try t.copyStore(into: dir)
        let victim = try t.trap("cancel_d2")
        let anchors = try anchors(t)

        // Read every batch with its content.
        var files: [(path: String, batches: [(RawBatch, [UInt8])])] = []
        for seg in try segments(ofStore: store) { files.append((seg, try await segmentContents(seg))) }
        // Re-encoding without a change reproduces the files byte for byte (the helper is right).
        for f in files { #expect(f.batches.flatMap { $0.0.bytes } == (try readFile(f.path))) }

        // The victim's cancellation event, recorded by day 2's run.
        let needle = Array("\"appointment_id\":\"\(victim)\"".utf8)
        let status = Array("\"Status\":\"Canceled\"".utf8)
        var target: (file: Int, batch: Int, at: Int)?
        search: for (fi, f) in files.enumerated() {
            for (bi, (_, content)) in f.batches.enumerated() {
                var start = 0
                for end in content.indices where content[end] == 10 {
                    let line = Array(content[start..<end])
                    if line.firstRange(of: Array("\"type\":\"appointment.changed\"".utf8)) != nil,
                       line.firstRange(of: needle) != nil, let r = line.firstRange(of: status) {
                        target = (fi, bi, start + r.lowerBound + 10)  // the C of Canceled
                        break search
                    }
                    start = end + 1
                }
            }
        }
        let (tf, tb, at) = try #require(target)
        let tampered = files[tf].batches[tb].0
        #expect(tampered.firstSeq > t.days[0].head.seq && tampered.lastSeq <= t.days[1].head.seq, "a day-2 batch")
        #expect(files[tf].batches[tb].1[at] == UInt8(ascii: "C"))
        files[tf].batches[tb].1[at] = UInt8(ascii: "c")  // "Canceled" → "canceled": one byte

        // Recompress the changed batch; re-chain and reseal it and everything after it.
        var chain = [UInt8](repeating: 0, count: 32)
        var changed = false
        for fi in files.indices {
            for bi in files[fi].batches.indices {
                var b = files[fi].batches[bi].0
                let content = files[fi].batches[bi].1
                if fi == tf && bi == tb {
                    b.payload = try await lz4Compress(content)
                    changed = true
                }
                let next = RawBatch.chain(previous: chain, version: b.version, firstSeq: b.firstSeq, count: b.count, content: content)
                if changed {
                    b.chain = next
                    b.reseal()
                } else {
                    #expect(b.chain == next)
                }
                chain = next
                files[fi].batches[bi].0 = b
            }
            var bytes: [UInt8] = []
            for (b, _) in files[fi].batches { bytes += b.bytes }
            try writeFile(files[fi].path, bytes)
        }
        let forgedHead = LogHead(seq: t.finalHead.seq, hash: chain)
        #expect(forgedHead != t.finalHead)

        // Self-consistent: plain verify passes and prints the forged head.
        let plain = try await syncledger(store, "verify")
        #expect(plain.code == 0, "\(plain.all)")
        #expect(plain.out.contains("head \(forgedHead)"))
        let dump = try await runProcess("/bin/sh", ["-c", "cat \"$0\"/log/*.seg | lz4 -dc", store])
        #expect(dump.code == 0)
        #expect(dump.out.contains("\"Status\":\"canceled\""))

        // Against the published head: exit 1, naming segment, offset and seq.
        let segName = (files.last!.path as NSString).lastPathComponent
        let r = try await syncledger(store, "verify", "--expect-head", t.finalHead.description)
        #expect(r.code == 1, "\(r.all)")
        #expect(r.out.contains("diverges") && r.out.contains(segName) && r.out.contains("seq \(t.finalHead.seq)"), "\(r.out)")
        let (_, json) = try await verifyJSON(store, expect: t.finalHead)
        #expect(json["ok"] == .bool(false))
        #expect(json["error"]?["segment"] == .string(segName))
        // The offsets moved with the recompressed payload: read them from the file as written.
        let lastOffset = try #require(try parseSegment(try readFile(files.last!.path)).last?.offset)
        #expect(json["error"]?["offset"]?.int64Value == Int64(lastOffset))
        #expect(r.out.contains("offset \(lastOffset)"))

        // Day 2's anchor (after the change) fails as well; day 1's head (before it) still holds.
        let a2 = try await syncledger(store, "verify", "--expect-head", anchors[1].description)
        #expect(a2.code == 1, "\(a2.all)")
        #expect(a2.out.contains("seq \(anchors[1].seq)"))
        let d1 = try await syncledger(store, "verify", "--expect-head", t.days[0].head.description)
        #expect(d1.code == 0, "\(d1.all)")

        // The standalone verifier agrees: the bundle is self-consistent, the published head is not in it.
        let bundle = dir + "/bundle"
        let export = try await syncledger(store, "export", "--bundle", bundle)
        #expect(export.code == 0, "\(export.all)")
        let py = try python3()
        let self_ = try await runProcess(py, [bundle + "/verify_bundle.py"])
        #expect(self_.code == 0, "\(self_.all)")
        #expect(self_.out.contains("head \(forgedHead)"))
        let against = try await runProcess(py, [bundle + "/verify_bundle.py", "--expect-head", t.finalHead.description])
        #expect(against.code == 1, "\(against.all)")
        #expect(against.out.hasPrefix("bundle FAILED"))
    }
}
