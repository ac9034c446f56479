import Crypto
import Foundation
import JSONCore
@testable import Ledger
import TestSupport
import Testing

/// `PersonalData.sealObservationData(_: [[UInt8]], …)` seals a batch on every core: each result
/// must open to what sealing that one alone opens to, in order, and a failing batch must throw
/// the error of its first failing item, whichever worker met it.
@Suite struct SealManyTests {
    static let key: @Sendable (String) throws -> SealingKey = { _ in throw LedgerError("unused") }

    @Test func aBatchSealsAsItsItemsOneByOne() throws {
        let seed = UInt64.random(in: 1...UInt64.max >> 1)
        print("SealManyTests seed: \(seed)")
        let dir = TempDir("sealmany")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let key: @Sendable (String) throws -> SealingKey = { p in
            if p == "p-forgotten" { throw LedgerError("patient \(p) was forgotten") }
            return try keys.key(for: p)
        }
        var g = SealBytesTests.Generator(rng: SeededRNG(seed: seed))
        var batches = 0, failed = 0, sealedItems = 0
        // Sizes below, at and well above what one worker takes, so both paths run.
        for size in [0, 1, 63, 64, 127, 128, 129, 500, 1_000, 333, 2_048] {
            // Items that seal alone (the generator also makes some that do not).
            var datas: [[UInt8]] = []
            while datas.count < size {
                let d = Array(g.data().utf8)
                if (try? PersonalData.sealObservationData(d, patientOf: { SealBytesTests.patientOf[$0] }, key: key)) != nil {
                    datas.append(d)
                }
            }
            for damaged in [false, true] {
                var datas = datas
                if damaged, size > 0 {
                    // A few items broken anywhere in the batch, each failing with its own message
                    // (where the JSON breaks off): the first of them must win.
                    for _ in 0..<(1 + g.rng.below(3)) {
                        let i = g.rng.below(size)
                        datas[i] = Array((#"{"appointment_id":"a","object":{"Id":"# + String(repeating: "1", count: 1 + i) + ",}}").utf8)
                    }
                }
                let one = datas.map { d in Result { try PersonalData.sealObservationData(d, patientOf: { SealBytesTests.patientOf[$0] }, key: key) } }
                batches += 1
                // On the machine's cores, and on 2 and 4 threads whatever the machine has.
                let workers = [ProcessInfo.processInfo.activeProcessorCount, 2, 4][batches % 3]
                let many = Result { try PersonalData.sealObservationData(datas, workers: workers, patientOf: { SealBytesTests.patientOf[$0] }, key: key) }
                if let firstFailure = one.firstIndex(where: { if case .failure = $0 { true } else { false } }) {
                    failed += 1
                    guard case .failure(let error) = many, case .failure(let expected) = one[firstFailure] else {
                        Issue.record("size \(size) (seed \(seed)): item \(firstFailure) fails alone but the batch sealed")
                        continue
                    }
                    #expect("\(error)" == "\(expected)", "size \(size) (seed \(seed)): not item \(firstFailure)'s error")
                } else {
                    let got = try many.get()
                    #expect(got.count == size)
                    for (i, (out, alone)) in zip(got, one).enumerated() {
                        let expected = try alone.get()
                        #expect(try SealBytesTests.opened(out, keys: keys) == SealBytesTests.opened(expected, keys: keys),
                                "size \(size) item \(i) (seed \(seed))")
                        if out != datas[i] { sealedItems += 1 }
                    }
                }
            }
        }
        print("SealManyTests: \(batches) batches, \(failed) failed, \(sealedItems) items sealed")
        #expect(failed >= 8)
        #expect(sealedItems > 1_000)
    }

    /// Four workers meeting a patient none of them has a key for yet make one key between them
    /// (`KeyRing.key(for:)` checks again under its lock): one key file, and every item opens.
    @Test func workersMeetingANewPatientMakeOneKey() throws {
        let dir = TempDir("sealmany")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let datas = (0..<512).map { i in
            Array((#"{"appointment_id":"a\#(i)","content_hash":"h","object":{"ClientId":4127,"ClientName":"Sage Quintero","Id":"a\#(i)"}}"#).utf8)
        }
        let sealed = try PersonalData.sealObservationData(datas, workers: 4, patientOf: { SealBytesTests.patientOf[$0] },
                                                          key: { try keys.key(for: $0) })
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/patients")
        #expect(files.count == 1, "key files: \(files)")
        let reopened = try KeyRing.open(directory: dir.path, create: false, environment: [:], notice: { _ in })
        for (i, out) in sealed.enumerated() {
            #expect(!String(decoding: out, as: UTF8.self).contains("Sage Quintero"))
            let opened = try #require(PersonalData.openObservationBytes(out, key: { try reopened.key(for: $0) }), "item \(i)")
            #expect(String(decoding: opened, as: UTF8.self).contains("\"ClientName\":\"Sage Quintero\""), "item \(i)")
        }
    }

    /// An observation that names nobody on the roster is recorded as it came, byte for byte, on
    /// the byte path and the parsing path alike (as `sync` always recorded it).
    @Test func nobodyOnTheRosterLeavesTheDataAsItCame() throws {
        let object = #"{"Id":"a1","ClientId":999,"ClientName":"Out Side","Status":"Confirmed","StartDate":1796925900000,"AdditionalClients":[{"ClientId":"998","ClientName":"Also Out"}],"PractitionerNote":"n"}"#
        let data = Array((#"{"appointment_id":"a1","content_hash":"h","object":"# + object + "}").utf8)
        #expect(try PersonalData.sealObservationBytes(data, patientOf: { SealBytesTests.patientOf[$0] }, key: Self.key) == data)
        #expect(try PersonalData.sealObservationDataParsing(data, patientOf: { SealBytesTests.patientOf[$0] }, key: Self.key) == data)
        #expect(try PersonalData.sealObservationData([data, data], patientOf: { SealBytesTests.patientOf[$0] }, key: Self.key) == [data, data])
    }
}

/// Nonces come from the kernel's generator a block at a time, each handed out once: no two boxes
/// of a batch sealed on several threads share one.
@Suite struct NonceSourceTests {
    @Test func noncesAreDistinctAcrossBlocks() {
        var source = NonceSource(expected: 50)
        var seen = Set<[UInt8]>()
        for _ in 0..<5_000 {
            guard let n = source.next() else {
                Issue.record("getrandom gave no nonce")
                return
            }
            let bytes = n.withUnsafeBytes { Array($0) }
            #expect(bytes.count == 12)
            #expect(seen.insert(bytes).inserted, "a nonce came twice")
        }
    }

    @Test func everyBoxOfABatchOnFourThreadsHasItsOwnNonce() throws {
        let dir = TempDir("nonces")
        let keys = try KeyRing.open(directory: dir.path, create: true, environment: [:], notice: { _ in })
        let datas = (0..<2_048).map { i in
            Array(#"{"appointment_id":"a-\#(i)","content_hash":"h","object":{"ClientId":100,"ClientName":"N \#(i)","Id":"a-\#(i)"}}"#.utf8)
        }
        let sealed = try PersonalData.sealObservationData(datas, workers: 4, patientOf: { SealBytesTests.patientOf[$0] },
                                                          key: { try keys.key(for: $0) })
        var seen = Set<[UInt8]>()
        for data in sealed {
            guard case .array(let parts)? = try FastJSON.parse(data)["sealed"] else {
                Issue.record("not sealed: \(String(decoding: data, as: UTF8.self))")
                continue
            }
            for part in parts {
                let box = try #require(part["box"]?.stringValue.flatMap { Data(base64Encoded: $0) })
                #expect(seen.insert(Array(box.prefix(12))).inserted, "two boxes share a nonce")
            }
        }
        #expect(seen.count == datas.count)
    }
}
