import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import TestSupport
import Testing

extension AuditTests {
    /// The bundle verifies with its own script alone and prints the same head as `verify`;
    /// changing any byte of a segment or of the manifest makes the script fail.
    @Test func auditBundleVerifiesStandaloneAndDetectsEveryChangedByte() async throws {
        let t = try await Timeline.get()
        let dir = try makeTempDir("bundle")
        defer { removeTree(dir) }
        let bundle = dir + "/bundle"
        let export = try await syncledger(t.store, "export", "--bundle", bundle)
        #expect(export.code == 0, "\(export.all)")
        let verify = try await syncledger(t.store, "verify")
        let head = try #require(verify.out.split(separator: "\n").first { $0.hasPrefix("head ") }.map { String($0.dropFirst(5)) })
        #expect(head == t.finalHead.description)

        let py = try python3()
        let script = bundle + "/verify_bundle.py"
        // Run from an unrelated directory, with the bundle directory defaulting to the script's own.
        let ok = try await runProcess(py, [script], cwd: dir)
        #expect(ok.code == 0, "\(ok.all)")
        #expect(ok.out.contains("bundle OK:") && ok.out.hasSuffix("head \(head)\n"), "\(ok.out)")
        let json = try await runProcess(py, [script, bundle, "--json"])
        #expect(try parseJSON(json.stdout)["head"] == .string(head))
        for anchor in [t.finalHead, t.days[0].head, t.days[2].head] {
            let r = try await runProcess(py, [script, "--expect-head", anchor.description])
            #expect(r.code == 0, "--expect-head \(anchor): \(r.all)")
        }
        var forged = t.finalHead
        forged.hash[31] ^= 0x80
        let bad = try await runProcess(py, [script, "--expect-head", forged.description])
        #expect(bad.code == 1, "\(bad.all)")

        // The embedded verifier is tools/verify_bundle.py, byte for byte.
        let tool = try readFile(Paths.repo + "/tools/verify_bundle.py")
        #expect(try readFile(script) == tool)

        // Every byte that matters: each segment (headers, chain hashes, CRCs, payloads, the
        // first and last byte) and the manifest (every field, the final newline).
        var targets: [(String, [Int])] = []
        let segs = try FileManager.default.contentsOfDirectory(atPath: bundle + "/segments").filter { $0.hasSuffix(".seg") }.sorted()
        #expect(!segs.isEmpty)
        #expect(segs.count > 1, "the timeline spans several segments")
        for (n, s) in segs.enumerated() {
            let bytes = try readFile(bundle + "/segments/" + s)
            let batches = try parseSegment(bytes)
            var offsets = [0, bytes.count / 2, bytes.count - 1]
            if n == 0 || n == segs.count - 1 {
                offsets += [1, 4, 8, 12, 16, 24, 28, 32, 40, 71, 72, 76, 79, 80, 81, bytes.count - 2]
            }
            if batches.count > 2 {
                let b = batches[batches.count / 2]
                offsets += [b.offset, b.offset + 40, b.offset + 80 + b.payload.count / 2, b.endOffset - 1]
            }
            targets.append(("segments/" + s, offsets))
        }
        let manifest = try readFile(bundle + "/MANIFEST.json")
        let text = String(decoding: manifest, as: UTF8.self)
        var mOffsets = [0, 1, manifest.count / 2, manifest.count - 2, manifest.count - 1]
        for key in ["\"created_at\": \"", "\"events\": ", "\"batches\": ", "\"bytes\": ", "\"first_seq\": ", "\"last_seq\": ",
                    "\"name\": \"", "\"sha256\": \"", "\"format\": \"", "\"head\": \"", "\"manifest_sha256\": \"", "\"version\": "] {
            if let r = text.range(of: key) {
                let valueStart = text.utf8.distance(from: text.startIndex, to: r.upperBound)
                mOffsets += [valueStart, valueStart + 3]
            } else {
                Issue.record("MANIFEST.json lacks \(key)")
            }
        }
        targets.append(("MANIFEST.json", mOffsets))

        var runs = 0
        for (name, offsets) in targets {
            let path = bundle + "/" + name
            let original = try readFile(path)
            for off in Set(offsets).sorted() where off >= 0 && off < original.count {
                for flip: UInt8 in (off == 0 || off == original.count - 1) ? [0x01, 0xFF] : [0x01] {
                    var changed = original
                    changed[off] ^= flip
                    try writeFile(path, changed)
                    let r = try await runProcess(py, [script])
                    runs += 1
                    #expect(r.code == 1, "\(name) byte \(off) ^ \(flip): \(r.all)")
                    #expect(r.out.hasPrefix("bundle FAILED"), "\(name) byte \(off): \(r.out)")
                }
            }
            try writeFile(path, original)
        }
        #expect(runs > 30)
        // Restored: intact again.
        let again = try await runProcess(py, [script])
        #expect(again.code == 0, "\(again.all)")

        // A segment that is removed, or one that is added, fails too.
        let extra = bundle + "/segments/99999999999999999999.seg"
        try writeFile(extra, [0])
        #expect(try await runProcess(py, [script]).code == 1)
        removeTree(extra)
        let first = bundle + "/segments/" + segs[0]
        let saved = try readFile(first)
        removeTree(first)
        #expect(try await runProcess(py, [script]).code == 1)
        try writeFile(first, saved)
        #expect(try await runProcess(py, [script]).code == 0)
    }

    /// Every file in the bundle is covered: the segments and the manifest by the manifest's
    /// hashes, the verifier by comparison with a trusted copy (below). There is no file the
    /// verifier does not check (an earlier README.txt was not, so it went).
    @Test func theBundleHoldsOnlyCheckedFiles() async throws {
        let t = try await Timeline.get()
        let dir = try makeTempDir("bundle-files")
        defer { removeTree(dir) }
        let bundle = dir + "/bundle"
        #expect(try await syncledger(t.store, "export", "--bundle", bundle).code == 0)
        let top = try FileManager.default.contentsOfDirectory(atPath: bundle).sorted()
        #expect(top == ["MANIFEST.json", "segments", "verify_bundle.py"])
    }

    /// Sources/Ledger/VerifierScript.swift embeds tools/verify_bundle.py exactly (the wrapper
    /// tools/embed_verifier.sh writes, stripped).
    @Test func embeddedVerifierEqualsTheTool() throws {
        let swift = String(decoding: try readFile(Paths.repo + "/Sources/Ledger/VerifierScript.swift"), as: UTF8.self)
        let lines = swift.split(separator: "\n", omittingEmptySubsequences: false)
        let open = try #require(lines.firstIndex { $0.hasSuffix("static let source = ##\"\"\"") })
        let close = try #require(lines[(open + 1)...].firstIndex { $0 == "    \"\"\"##" })
        var body: [String] = []
        for line in lines[(open + 1)..<close] {
            if line.isEmpty {
                body.append("")
            } else {
                #expect(line.hasPrefix("    "), "every embedded line is indented: \(line)")
                body.append(String(line.dropFirst(4)))
            }
        }
        let embedded = body.joined(separator: "\n")
        let tool = String(decoding: try readFile(Paths.repo + "/tools/verify_bundle.py"), as: UTF8.self)
        #expect(embedded == tool)
        #expect(!tool.contains("\\##"), "no raw-string escapes that would change the embedded text")
    }
}
