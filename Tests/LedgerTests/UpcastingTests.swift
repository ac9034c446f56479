import EventLog
import Foundation
import GRDB
import IntakeQ
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

/// A hypothetical v2 of `appointment.removed`: `{appointment_id, reason}` → `{appointment_id, reason_code}`.
let removedV1toV2 = Upcaster(type: "appointment.removed", from: 1) { e in
    guard case .object(var o) = try e.dataValue() else { throw LedgerError("not an object") }
    let reason = o.removeValue(forKey: "reason")?.stringValue ?? "unknown"
    o["reason_code"] = .string(reason.uppercased())
    var out = e
    out.data = Array(JSONValue.object(o).canonicalText.utf8)
    out.v = 2
    return out
}

/// A projection written against v2 of `appointment.removed` only.
struct RemovalReasonsProjection: Projection {
    let name = "removal_reasons"
    let schemaVersion = 1
    let tables = ["removal_reasons"]
    func create(_ db: Database, _ t: TableSet) throws {
        try db.execute(sql: "CREATE TABLE \(t("removal_reasons")) (seq INTEGER PRIMARY KEY, v INTEGER NOT NULL, appointment_id TEXT, reason_code TEXT, has_v1_reason INTEGER NOT NULL)")
    }
    func apply(_ e: EventEnvelope, _ db: Database, _ t: TableSet) throws {
        guard e.type == "appointment.removed" else { return }
        let data = try e.dataValue()
        try db.execute(
            sql: "INSERT INTO \(t("removal_reasons")) (seq, v, appointment_id, reason_code, has_v1_reason) VALUES (?, ?, ?, ?, ?)",
            arguments: [Int64(e.seq), e.v, data["appointment_id"]?.stringValue, data["reason_code"]?.stringValue,
                        data["reason"] != nil])
    }
}

@Suite struct UpcastingTests {
    @Test func everyReadPathSeesTheUpcastVersion() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store)  // seq 19 is appointment.removed v1 {reason: deleted_only}
        let plain = try LedgerReader(store: tmp.store)
        let stored = try #require(try plain.events(at: [19]).first)
        #expect(stored.type == "appointment.removed" && stored.v == 1)
        #expect(try stored.dataValue()["reason"] == "deleted_only")

        // On top of the shipped chain (appointment and roster events are v2 since issue 13).
        let upcasters = Upcasters(Upcasters.standardList + [removedV1toV2])
        #expect(upcasters.currentVersion(of: "appointment.removed") == 2)
        #expect(upcasters.currentVersion(of: "appointment.changed") == 2)
        let reader = try LedgerReader(store: tmp.store, upcasters: upcasters)
        func isV2(_ e: EventEnvelope) throws -> Bool {
            let d = try e.dataValue()
            return e.v == 2 && d["reason_code"] == "DELETED_ONLY" && d["reason"] == nil && d["appointment_id"] == "a3"
        }

        // forEachBatch
        var fromBatches: [EventEnvelope] = []
        try reader.forEachBatch { batch in
            fromBatches += batch.events.filter { $0.type == "appointment.removed" }
            return true
        }
        #expect(fromBatches.count == 1)
        #expect(try fromBatches.allSatisfy(isV2))
        // forEachBatch starting inside the batch
        var partial: [EventEnvelope] = []
        try reader.forEachBatch(from: 19, through: 19) { partial += $0.events; return true }
        #expect(partial.map(\.seq) == [19])
        #expect(try partial.allSatisfy(isV2))
        // forEachEvent
        var fromEvents: [EventEnvelope] = []
        try reader.forEachEvent { e in
            if e.type == "appointment.removed" { fromEvents.append(e) }
            return true
        }
        #expect(try fromEvents.count == 1 && fromEvents.allSatisfy(isV2))
        // events(at:)
        let picked = try reader.events(at: [19, 3])
        #expect(picked.map(\.seq) == [3, 19])
        #expect(try isV2(picked[1]))
        #expect(picked[0].v == 2 && picked[0].type == "appointment.discovered")
        // Other types are untouched (appointment.discovered is written at v2 since issue 13).
        #expect(try reader.events(at: [3]).first == plain.events(at: [3]).first)

        // A projection fold through catchUp and through rebuild with that reader.
        let views = try ProjectionStore(path: tmp.sibling("upcast.sqlite"), projections: [RemovalReasonsProjection()])
        try views.catchUp(reader)
        func rows() throws -> [Row] { try views.readSync { try Row.fetchAll($0, sql: "SELECT seq, v, appointment_id, reason_code, has_v1_reason FROM removal_reasons") } }
        var r = try rows()
        #expect(r.count == 1)
        #expect(r.first?["v"] as Int? == 2)
        #expect(r.first?["reason_code"] as String? == "DELETED_ONLY")
        #expect(r.first?["has_v1_reason"] as Bool? == false)
        _ = try views.rebuild(names: [], reader)
        r = try rows()
        #expect(r.count == 1 && r.first?["reason_code"] as String? == "DELETED_ONLY")

        // The log itself still holds v1: upcasting happens on read.
        var line: [UInt8] = []
        try Export.jsonLines(reader: reader, from: 19, to: 19) { line += $0 }
        #expect(String(decoding: line, as: UTF8.self).contains("\"v\":1"))
    }

    @Test func anEventNewerThanTheCodeIsAClearError() throws {
        let tmp = try TempStore()
        try Golden.write(tmp.store, steps: 0..<3)  // seqs 1–9
        // A later syncledger wrote appointment.removed v2.
        let raw = try EventLogWriter.open(directory: tmp.store.logPath, options: fastLog)
        let future = EventEnvelope(seq: 10, id: UUID().uuidString.lowercased(), type: "appointment.removed", v: 2,
                                   at: T(5), run: "run-2", stream: Streams.appointment("a1"),
                                   data: Array(#"{"appointment_id":"a1","reason_code":"NOT_FOUND"}"#.utf8))
        try raw.append([future.encoded()])
        raw.close()

        let reader = try LedgerReader(store: tmp.store)
        do {
            try reader.forEachEvent { _ in true }
            Issue.record("reading a v2 event with v1 code did not fail")
        } catch let e as LedgerError {
            #expect(e.message.contains("event 10 is appointment.removed v2"), "\(e.message)")
            #expect(e.message.contains("newer than this syncledger reads (v1)"))
            #expect(e.message.contains("upgrade"))
        }
        #expect(throws: LedgerError.self) { _ = try reader.events(at: [10]) }
        // The views stop with that error instead of quarantining or skipping the event.
        let views = try ProjectionStore(store: tmp.store)
        #expect(throws: LedgerError.self) { try views.catchUp(reader) }
        #expect(try views.appliedSeq() <= 9)
        #expect(try views.quarantine().isEmpty)

        // Code that knows v2 reads it; a v3 is again too new for it.
        let knowing = try LedgerReader(store: tmp.store, upcasters: Upcasters([removedV1toV2]))
        let e10 = try #require(try knowing.events(at: [10]).first)
        #expect(e10.v == 2)
        var v3 = future
        v3.v = 3
        #expect(throws: LedgerError.self) { _ = try Upcasters([removedV1toV2]).upcast(v3) }
    }

    @Test func aMissingStepInTheChainIsAnError() throws {
        // Readers expect v3 but only know 2 → 3: a v1 event cannot be brought up.
        let only2to3 = Upcaster(type: "appointment.removed", from: 2) { $0 }
        let upcasters = Upcasters([only2to3])
        let e = EventEnvelope(seq: 7, id: "x", type: "appointment.removed", v: 1, at: T(1), run: nil,
                              stream: "appointment/a1", data: Array(#"{"appointment_id":"a1","reason":"x"}"#.utf8))
        do {
            _ = try upcasters.upcast(e)
            Issue.record("expected an error")
        } catch let err as LedgerError {
            #expect(err.message.contains("no upcaster to v2"), "\(err.message)")
        }
        // A transform that forgets to bump `v` is still counted as done.
        let lazy = Upcasters([Upcaster(type: "appointment.removed", from: 1) { $0 }])
        #expect(try lazy.upcast(e).v == 2)
        // Standard upcasters leave v1 alone.
        #expect(try Upcasters.standard.upcast(e) == e)
    }
}
