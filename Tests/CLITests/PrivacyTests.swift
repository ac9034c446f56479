import FakeIntakeQ
import Foundation
import TestSupport
import JSONCore
import Ledger
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 13: minimum necessary, per-patient encryption, forget — checked in every byte a user or
/// an attacker could read: the store's files, its segments through `lz4 -dc`, the views database,
/// exports, bundles and what the commands print.
enum PrivacyFixture {
    static let groupAppointment = "6a3f000010fa33302d1cf730"
    static let outsiders = ["Dakota Brennan", "Elliot Zeller", "Sage Quintero"]
    /// Blair Birch (p-021, IntakeQ 4121) shares the group appointment with Indigo Valdez (p-026).
    static let forgotten = (id: "p-021", name: "Blair Birch", client: "4121")
    static let other = (id: "p-026", name: "Indigo Valdez", client: "4126")

    /// Every appointment object of every fixture day.
    static func objects() throws -> [[String: Any]] {
        var out: [[String: Any]] = []
        for n in 1...5 {
            let data = try Data(contentsOf: URL(fileURLWithPath: Repo.practice + "/day-0\(n).json"))
            let day = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            out += (day["appointments"] as? [[String: Any]]) ?? []
        }
        return out
    }

    /// Name, email, phone and date of birth of each named person, as the fixtures give them.
    static func identifiers(of names: [String]) throws -> [String] {
        var out = Set(names)
        for a in try objects() {
            var people: [[String: Any]] = [a]
            people += (a["AdditionalClients"] as? [[String: Any]]) ?? []
            for p in people {
                guard let n = p["ClientName"] as? String, names.contains(n) else { continue }
                for k in ["ClientEmail", "ClientPhone", "ClientDateOfBirth"] {
                    if let v = p[k] as? String, !v.isEmpty { out.insert(v) }
                }
            }
        }
        return out.sorted()
    }

    /// Every `TelehealthInfo.StartUrl` of the fixtures.
    static func startURLs() throws -> [String] {
        Set(try objects().compactMap { ($0["TelehealthInfo"] as? [String: Any])?["StartUrl"] as? String }).sorted()
    }
}

/// All readable bytes under `dir`: each file as it is, plus each LZ4 segment decompressed.
func readableBytes(under dir: String) async throws -> [(String, Data)] {
    var out: [(String, Data)] = []
    for (rel, bytes) in snapshot(dir) {
        out.append((rel, bytes))
        if rel.hasSuffix(".seg") {
            let r = try await Launched([], timeout: 60, executable: "/bin/sh",
                                       arguments: ["-c", "lz4 -dc < \"$0\"", dir + "/" + rel]).wait()
            #expect(r.status == 0, "lz4 -dc \(rel): \(r.stderr)")
            out.append((rel + " | lz4 -dc", Data(r.stdout.utf8)))
        }
    }
    return out
}

func expectAbsent(_ needles: [String], in haystacks: [(String, Data)], _ what: String,
                  sourceLocation: SourceLocation = #_sourceLocation) {
    for (name, data) in haystacks {
        for n in needles where data.range(of: Data(n.utf8)) != nil {
            Issue.record("\(what): \"\(n)\" found in \(name)", sourceLocation: sourceLocation)
        }
    }
}

extension CLIBinaryTests {
    /// What a reader can get out of a store: the appointments, the group appointment's history and
    /// both exports as command outputs (name, stdout), and an audit bundle written to `bundle`.
    static func readEverything(store: String, bundle: String) async throws -> ([(String, Data)], String) {
        var outputs: [(String, Data)] = []
        for (name, args) in [
            ("appointments", ["appointments", "--store", store, "--json"]),
            ("history", ["history", PrivacyFixture.groupAppointment, "--store", store, "--json"]),
            ("export jsonl", ["export", "--store", store, "--format", "jsonl"]),
            ("export csv", ["export", "--store", store, "--format", "csv"]),
        ] {
            let r = try await cli(args)
            expectSuccess(r)
            outputs.append((name, Data(r.stdout.utf8)))
        }
        expectSuccess(try await cli(["export", "--store", store, "--bundle", bundle]))
        return (outputs, bundle)
    }

    /// Everything a careful reviewer would grep after syncing the fixtures: no non-roster
    /// person's name, email, phone or date of birth and no host link, anywhere.
    @Test func nonRosterPeopleAndHostLinksAreNeverRecorded() async throws {
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        let practice = try Practice.load()
        try await makeSyncedStore(at: store, practice: practice, days: [1, 2, 3])
        let (outputs, bundle) = try await Self.readEverything(store: store, bundle: tmp.path + "/bundle")
        let needles = try PrivacyFixture.identifiers(of: PrivacyFixture.outsiders) + PrivacyFixture.startURLs()
        #expect(needles.count >= 6, "\(needles)")
        #expect(needles.contains { $0.contains("zak=") || $0.contains("/s/") }, "no StartUrl in the fixtures? \(needles)")
        expectAbsent(needles, in: try await readableBytes(under: store), "store")
        expectAbsent(needles, in: try await readableBytes(under: bundle), "bundle")
        expectAbsent(needles, in: outputs, "command output")
        // The roster patients of the group appointment are still there, readable through the views.
        let appts = try #require(outputs.first { $0.0 == "appointments" }?.1)
        let text = String(decoding: appts, as: UTF8.self)
        #expect(text.contains(PrivacyFixture.groupAppointment))
        #expect(text.contains(PrivacyFixture.other.name) && text.contains(PrivacyFixture.forgotten.name))
    }

    /// The log holds envelopes in the clear and no roster patient's name, email or phone.
    @Test func theLogHoldsEnvelopesButNoNames() async throws {
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let segments = try await readableBytes(under: store + "/log").filter { $0.0.hasSuffix("lz4 -dc") }
        #expect(!segments.isEmpty)
        let text = segments.map { String(decoding: $0.1, as: UTF8.self) }.joined()
        #expect(text.contains("\"type\":\"appointment.discovered\""))
        #expect(text.contains("\"stream\":\"appointment/\(PrivacyFixture.groupAppointment)\""))
        let names = try PrivacyFixture.identifiers(of: [PrivacyFixture.forgotten.name, PrivacyFixture.other.name, "Peyton Delacroix"])
        expectAbsent(names, in: segments, "log")
        // The key store is owner-only.
        expectOwnerOnly(store + "/keys", "key store")
    }

    /// `forget` of a patient of the group appointment: gone everywhere, the other patient
    /// untouched, and the chain (verify, --expect-head, the bundle verifier) still holds.
    @Test func forgetRemovesOnePatientEverywhereAndKeepsTheChain() async throws {
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1, 2])
        let before = try await cli(["verify", "--store", store, "--json"])
        expectSuccess(before)
        let oldHead = try #require((parseJSON(before.stdout) as? [String: Any])?["head"] as? String)
        let oldBundle = tmp.path + "/old-bundle"
        expectSuccess(try await cli(["export", "--store", store, "--bundle", oldBundle]))

        let f = try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"])
        expectSuccess(f)
        #expect(f.stdout.contains("forgot patient \(PrivacyFixture.forgotten.id)"))

        let (outputs, bundle) = try await Self.readEverything(store: store, bundle: tmp.path + "/bundle")
        let gone = try PrivacyFixture.identifiers(of: [PrivacyFixture.forgotten.name])
            + ["\"ClientId\":\(PrivacyFixture.forgotten.client)", "\"ClientId\":\"\(PrivacyFixture.forgotten.client)\"",
               "\"intakeq_client_id\":\"\(PrivacyFixture.forgotten.client)\"", ",\(PrivacyFixture.forgotten.client),"]
        #expect(gone.count >= 5, "\(gone)")
        expectAbsent(gone, in: try await readableBytes(under: store), "store after forget")
        expectAbsent(gone, in: try await readableBytes(under: bundle), "new bundle")
        expectAbsent(gone, in: outputs, "command output after forget")

        // Their appointments read as forgotten; the other patient of the group appointment is whole.
        let rows = try #require(parseJSON(String(decoding: outputs[0].1, as: UTF8.self)) as? [[String: Any]])
        #expect(rows.contains { ($0["client_name"] as? String) == "(forgotten)" }, "no forgotten appointment row")
        #expect(rows.contains { ($0["client_name"] as? String) == PrivacyFixture.other.name })
        #expect(rows.contains { ($0["appointment_id"] as? String) == PrivacyFixture.groupAppointment })
        var s = try Store.open(store)
        s.keysDirectory = nil
        let reader = try LedgerReader(store: s)
        var group: JSONValue?
        try reader.forEachEvent { e in
            if e.stream == "appointment/" + PrivacyFixture.groupAppointment, e.eventType == .appointmentDiscovered {
                group = try e.dataValue()["object"]
            }
            return true
        }
        guard case .array(let extra)? = group?["AdditionalClients"] else {
            Issue.record("the group appointment has no AdditionalClients: \(String(describing: group))")
            return
        }
        let names = extra.compactMap { $0["ClientName"]?.stringValue }
        #expect(names.contains(PrivacyFixture.other.name), "\(names)")
        #expect(names.contains("(forgotten)"), "\(names)")
        #expect(extra.contains { $0["ClientEmail"]?.stringValue == "indigo.valdez@example.org" })

        // The chain holds: verify, the earlier head, both bundles with the earlier head.
        expectSuccess(try await cli(["verify", "--store", store]))
        let expect = try await cli(["verify", "--store", store, "--expect-head", oldHead])
        expectSuccess(expect)
        #expect(expect.stdout.contains("matches the expected head"))
        for b in [oldBundle, bundle] {
            let py = try await Launched([], timeout: 120, executable: "/usr/bin/env",
                                        arguments: ["python3", b + "/verify_bundle.py", "--expect-head", oldHead]).wait()
            #expect(py.status == 0, "verify_bundle.py \(b): \(py.stdout)\(py.stderr)")
        }

        // A later sync with the same roster leaves the forgotten patient out.
        let practice = try Practice.load()
        try await withFakeServer(try #require(practice.day(3))) { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(3)).now), env: keyEnv)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stderr.contains("was forgotten"), "\(r.stderr)")
        }
        expectAbsent(try PrivacyFixture.identifiers(of: [PrivacyFixture.forgotten.name]),
                     in: try await readableBytes(under: store), "store after a later sync")
        // Forgetting again appends nothing.
        let again = try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "again"])
        expectSuccess(again)
        #expect(again.stdout.contains("already forgotten"))
    }

    /// The views file a rebuild moved aside as damaged still holds the patient's rows, and so
    /// does the file a symlinked `projections.sqlite` points to: `forget` deletes the first
    /// (saying so) and purges the second where it is, keeping the link (hostile test, stop 56).
    @Test func forgetLeavesNoCopyOfTheViewsBehind() async throws {
        let tmp = TempDir("forget-copies")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1, 2])
        let gone = try PrivacyFixture.identifiers(of: [PrivacyFixture.forgotten.name])
        func holds(_ dir: String) async throws -> Bool {
            try await readableBytes(under: dir).contains { _, data in gone.contains { data.range(of: Data($0.utf8)) != nil } }
        }
        // The views on another disk, behind a symlink.
        let elsewhere = tmp.path + "/fast-disk"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let views = store + "/projections.sqlite"
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        #expect(try python("import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')", [views]) == 0)
        for suffix in ["-wal", "-shm"] { unlink(views + suffix) }
        try FileManager.default.moveItem(atPath: views, toPath: elsewhere + "/views.sqlite")
        try FileManager.default.createSymbolicLink(atPath: views, withDestinationPath: elsewhere + "/views.sqlite")
        // One damaged page (the root of a table the rebuild replaces): the rest of the file still
        // holds the patient's rows when `rebuild` moves it aside.
        try damageRootPage(of: "appointments", views: views)
        expectSuccess(try await cli(["rebuild", "--store", store]))
        let aside = try FileManager.default.contentsOfDirectory(atPath: elsewhere).filter { $0.hasPrefix("views.sqlite.damaged-") }
        #expect(!aside.isEmpty)
        #expect(try await holds(elsewhere), "the moved-aside copy and the views hold the patient before forget")
        // A copy moved aside by an earlier rebuild, from before the link, beside the link.
        var copies: [String] = []
        for name in aside {
            let copy = views + name.dropFirst("views.sqlite".count).replacingOccurrences(of: #"damaged-\d{4}-\d\d-\d\dT\d{6}\.\d{3}Z"#, with: "damaged-2026-01-01T000000.000Z", options: .regularExpression)
            try FileManager.default.copyItem(atPath: elsewhere + "/" + name, toPath: copy)
            copies.append(copy)
        }
        #expect(try copies.contains { path in
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return gone.contains { data.range(of: Data($0.utf8)) != nil }
        }, "the moved-aside files hold the patient before forget: \(copies)")
        // How a rebuild before stop 44 moved a symlinked views file aside: the link renamed, the
        // file (with the rows) left where it was under its own name.
        let legacyFile = elsewhere + "/legacy-views.sqlite"
        try FileManager.default.copyItem(atPath: elsewhere + "/" + aside.first { !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm") }!, toPath: legacyFile)
        let legacyLink = views + ".damaged-2025-06-01T120000.000Z"
        try FileManager.default.createSymbolicLink(atPath: legacyLink, withDestinationPath: legacyFile)
        // Names that are not a rebuild's: left alone.
        let notOurs = [views + ".damaged-notes", views + ".damaged-2025-06-01T120000.000Z.bak"]
        try FileManager.default.createDirectory(atPath: notOurs[0], withIntermediateDirectories: true)
        try Data("mine".utf8).write(to: URL(fileURLWithPath: notOurs[1]))

        let f = try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"])
        expectSuccess(f)
        #expect(f.stdout.contains("deleted \(2 * aside.count + 2) damaged views files that `rebuild` had moved aside"), "\(aside) \(f.stdout)")
        for name in aside + copies.map({ ($0 as NSString).lastPathComponent }) + ["legacy-views.sqlite", (legacyLink as NSString).lastPathComponent] {
            #expect(f.stdout.contains(name), "\(name): \(f.stdout)")
        }
        #expect(!copies.contains { FileManager.default.fileExists(atPath: $0) })
        #expect(!FileManager.default.fileExists(atPath: legacyFile))
        #expect(notOurs.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        #expect(!(try await holds(elsewhere)), "the views' disk after forget")
        #expect(!(try await holds(store)), "the store after forget")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: views) == elsewhere + "/views.sqlite")
        #expect(FileManager.default.fileExists(atPath: elsewhere + "/views.sqlite"))
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        let again = try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "again"])
        expectSuccess(again)
        #expect(!again.stdout.contains("deleted"), "\(again.stdout)")
    }

    /// With a relative `--store`, its views path and their resolved path name one directory
    /// two ways: `forget` listed (and counted) each moved-aside file twice (hostile test).
    @Test func forgetNamesEachMovedAsideFileOnce() async throws {
        let tmp = TempDir("forget-once")
        defer { tmp.remove() }
        try await makeSyncedStore(at: tmp.path + "/store", practice: try Practice.load())
        let header = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp.path + "/store/projections.sqlite"))
        try header.write(contentsOf: Data(repeating: 0x78, count: 100))
        try header.close()
        let rebuilt = try await cli(["rebuild", "--store", "store"], cwd: tmp.path)
        expectSuccess(rebuilt)
        let aside = try FileManager.default.contentsOfDirectory(atPath: tmp.path + "/store").filter { $0.contains(".damaged-") }
        #expect(!aside.isEmpty)
        let f = try await cli(["forget", "--store", "store", "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"], cwd: tmp.path)
        expectSuccess(f)
        #expect(f.stdout.contains("deleted \(aside.count) damaged views file\(aside.count == 1 ? "" : "s") that"), "\(aside) \(f.stdout)")
        for name in aside { #expect(f.stdout.components(separatedBy: name).count == 2, "\(name) named once: \(f.stdout)") }
    }

    /// `forget` folds the views into a new file: damage a command met in the old one is no
    /// longer reported (`status` kept failing on it until a rebuild; cold review).
    @Test func forgetClearsTheRecordOfDamagedViews() async throws {
        let tmp = TempDir("forget-damage")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        try damageRootPage(of: "appointment_locations", views: store + "/projections.sqlite")
        expectCleanFailure(try await cli(["locations", "--store", store]), mentioning: ["projections.sqlite is damaged"])
        let damaged = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(damaged.status == 1 && damaged.stdout.contains("found damaged by `locations`"), "\(damaged.stdout)")
        expectSuccess(try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"]))
        let after = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(after.status == 0 && !after.stdout.contains("damaged"), "\(after.stdout)")
        expectSuccess(try await cli(["locations", "--store", store]))
    }

    /// `projections.sqlite` linked to a file that is not a SQLite database (a link to the wrong
    /// file): `rebuild` refuses and leaves it alone, so `forget`, which deletes the damaged views
    /// files a rebuild moved aside, never meets it (it deleted such a file, hostile test). Put
    /// right, the link rebuilds the views where it points.
    @Test func aLinkToAFileThatIsNoViewsFileIsLeftAlone() async throws {
        let tmp = TempDir("wrong-link")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let elsewhere = tmp.path + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let precious = elsewhere + "/precious.db"
        try Data("PRECIOUS\n".utf8).write(to: URL(fileURLWithPath: precious))
        let views = store + "/projections.sqlite"
        for suffix in ["", "-wal", "-shm"] { unlink(views + suffix) }
        try FileManager.default.createSymbolicLink(atPath: views, withDestinationPath: precious)

        let rebuild = try await cli(["rebuild", "--store", store])
        expectCleanFailure(rebuild, mentioning: ["precious.db, which is not a SQLite database", "left alone"])
        let forget = try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "consent withdrawn"])
        #expect(forget.status != 0, "\(forget.stdout)\(forget.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere) == ["precious.db"])
        #expect(FileManager.default.contents(atPath: precious) == Data("PRECIOUS\n".utf8))

        unlink(precious)
        try FileManager.default.createDirectory(atPath: elsewhere + "/views", withIntermediateDirectories: true)
        unlink(views)
        try FileManager.default.createSymbolicLink(atPath: views, withDestinationPath: elsewhere + "/views/v.sqlite")
        expectSuccess(try await cli(["rebuild", "--store", store]))
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        #expect(FileManager.default.fileExists(atPath: elsewhere + "/views/v.sqlite"))
    }

    /// Another store's `keys/` in place (its master key with it): `forget` and `sync` refuse
    /// before they write anything (the patient's real key would survive the forget; what the sync
    /// sealed would not open with the store's own keys). With those back, nothing was forgotten.
    @Test func anotherStoresKeysForgetNothing() async throws {
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        let store = tmp.path + "/store", other = tmp.path + "/other"
        let practice = try Practice.load()
        try await makeSyncedStore(at: store, practice: practice)
        try await makeSyncedStore(at: other, practice: practice)
        let own = try await cli(["appointments", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--json"])
        expectSuccess(own)
        #expect(own.stdout.contains(PrivacyFixture.forgotten.name))
        let fm = FileManager.default
        try fm.moveItem(atPath: store + "/keys", toPath: tmp.path + "/own-keys")
        try fm.copyItem(atPath: other + "/keys", toPath: store + "/keys")
        let before = storeSnapshot(store)
        expectCleanFailure(try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "x"]),
                           mentioning: ["does not open with their key", "another store's `keys/`"])
        expectSameSnapshot(before, storeSnapshot(store), "a forget with another store's keys")
        // A sync with them refuses before it records or seals anything (what it sealed with them
        // would not open once the store's own keys were back).
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            expectCleanFailure(try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now), env: keyEnv),
                               mentioning: ["does not open with their key"])
        }
        // (It took the writer's lock, whose file names the holder; nothing else may change.)
        let unlocked = { (rel: String) in rel.hasPrefix("projections.sqlite") || rel == "log/LOCK" }
        expectSameSnapshot(before.filter { !unlocked($0.key) }, snapshot(store, excluding: unlocked), "a sync with another store's keys")
        try fm.removeItem(atPath: store + "/keys")
        try fm.moveItem(atPath: tmp.path + "/own-keys", toPath: store + "/keys")
        let after = try await cli(["appointments", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--json"])
        #expect(after.stdout == own.stdout)
    }

    /// The store's `keys/` gone (deleted, or a backup restored without it): `sync` refuses in one
    /// line and makes no new key store in its place (it used to make a new master key, then fail
    /// for want of the patients' keys, leaving that key store behind: hostile test).
    @Test func aSyncWithoutTheStoresKeysMakesNone() async throws {
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        let practice = try Practice.load()
        try await makeSyncedStore(at: store, practice: practice)
        try FileManager.default.moveItem(atPath: store + "/keys", toPath: tmp.path + "/keys-aside")
        let before = storeSnapshot(store)
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now), env: keyEnv)
            expectCleanFailure(r, mentioning: ["no key store at", "restore it"])
            #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: store + "/keys"))
        expectSameSnapshot(before, storeSnapshot(store), "a sync without the store's keys")
        // `status`, the monitor, says so before the nightly sync fails.
        let s = try await cli(["status", "--store", store])
        #expect(s.status == 1 && s.stdout.contains("problem: no key store at"), "\(s.stdout)\(s.stderr)")
        // An empty keys/ in its place (a mount point not mounted) is refused the same way.
        try FileManager.default.createDirectory(atPath: store + "/keys", withIntermediateDirectories: false)
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now), env: keyEnv)
            expectCleanFailure(r, mentioning: ["no key store at", "restore it"])
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/keys").isEmpty)
        try FileManager.default.removeItem(atPath: store + "/keys")
        try FileManager.default.moveItem(atPath: tmp.path + "/keys-aside", toPath: store + "/keys")
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            expectSuccess(try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now), env: keyEnv))
        }
    }

    /// A reason naming a roster patient (any of them, by name, last name or email) would stay in
    /// the log in the clear for good: `forget` refuses it in one line, and writes nothing.
    @Test func aReasonNamingAPatientIsRefused() async throws {
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        let before = storeSnapshot(store)
        for reason in ["\(PrivacyFixture.forgotten.name) asked", "BIRCH asked by phone", "blair.birch@example.org",
                       "their partner \(PrivacyFixture.other.name) called"] {
            let r = try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", reason])
            expectCleanFailure(r, mentioning: ["--reason names a roster patient"])
            #expect(!r.stderr.contains("Birch") && !r.stderr.contains("Valdez"), "\(r.stderr)")
            expectSameSnapshot(before, storeSnapshot(store), "forget --reason \(reason)")
        }
        // The patient forgotten has often left the roster first: an earlier roster's names count.
        let leaver = (id: "p-030", name: "Tatum Castillo")
        let rosterData = try Data(contentsOf: URL(fileURLWithPath: Repo.roster))
        var roster = try #require(try JSONSerialization.jsonObject(with: rosterData) as? [String: Any])
        roster["organizations"] = (roster["organizations"] as? [[String: Any]] ?? []).map { org in
            var o = org
            o["patients"] = (org["patients"] as? [[String: Any]] ?? []).filter { ($0["id"] as? String) != leaver.id }
            return o
        }
        let without = tmp.path + "/roster-without.json"
        try JSONSerialization.data(withJSONObject: roster).write(to: URL(fileURLWithPath: without))
        let practice = try Practice.load()
        let day = try #require(practice.day(2))
        try await withFakeServer(day) { _, url in
            let args = syncArgs(store: store, baseURL: url, now: day.now).map { $0 == Repo.roster ? without : $0 }
            expectSuccess(try await cli(args, env: keyEnv))
        }
        let left = storeSnapshot(store)
        expectCleanFailure(try await cli(["forget", "--store", store, "--patient", leaver.id, "--reason", "\(leaver.name) asked"]),
                           mentioning: ["--reason names a roster patient"])
        expectSameSnapshot(left, storeSnapshot(store), "forget of a patient who left the roster")
        expectSuccess(try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "the patient's request"]))
        // A patient forgotten before reads as "(forgotten)" in the recorded rosters, which is no
        // one's name: the word stays usable in a reason (hostile test: this was refused).
        expectSuccess(try await cli(["forget", "--store", store, "--patient", leaver.id, "--reason", "right to be forgotten"]))

        // The other free texts recorded in the clear for good (hostile test): who triggered a
        // sync, and why a loss is accepted.
        let synced = storeSnapshot(store)
        try await withFakeServer(day) { _, url in
            let r = try await cli(syncArgs(store: store, baseURL: url, now: day.now) + ["--triggered-by", "\(PrivacyFixture.other.name) called"], env: keyEnv)
            expectCleanFailure(r, mentioning: ["--triggered-by names a roster patient"])
        }
        expectSameSnapshot(synced, storeSnapshot(store), "sync --triggered-by naming a patient")
        let log = store + "/log"
        let last = try #require(try FileManager.default.contentsOfDirectory(atPath: log).filter { $0.hasSuffix(".seg") }.sorted().last)
        let segment = try FileHandle(forUpdating: URL(fileURLWithPath: log + "/" + last))
        try segment.truncate(atOffset: try segment.seekToEnd() - 100)
        try segment.close()
        let lost = storeSnapshot(store)
        for (reason, problem) in [("\(PrivacyFixture.other.name) saw it", "names a roster patient"),
                                  ("mail from indigo.valdez@example.org", "names a roster patient"),
                                  ("called (555) 010-2892", "holds an IntakeQ client id or a phone number")] {
            let r = try await cli(["repair", "--store", store, "--accept-loss", reason])
            expectCleanFailure(r, mentioning: ["--accept-loss \(problem)"])
            expectSameSnapshot(lost, storeSnapshot(store), "repair --accept-loss \(reason)")
        }
        expectSuccess(try await cli(["repair", "--store", store, "--accept-loss", "disk failure, no backup; forgotten patients stay forgotten"]))
    }

    /// A wrong or missing master key: one line, exit 1, and not a byte of the store changes.
    @Test func aWrongOrMissingMasterKeyChangesNothing() async throws {
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        let practice = try Practice.load()
        try await makeSyncedStore(at: store, practice: practice)
        let other = tmp.path + "/other.key"
        let made = try await cli(["keys", "init", "--master-key-file", other])
        expectSuccess(made)
        #expect(modes(under: tmp.path).first { $0.path == "other.key" }?.mode == 0o600)
        expectCleanFailure(try await cli(["keys", "init", "--master-key-file", other]), mentioning: ["already exists"])
        // Refused before anything is written: no name, and a directory every user can write (sync
        // and status refused or flagged that key only later; hostile test).
        expectCleanFailure(try await cli(["keys", "init", "--master-key-file", ""]), mentioning: ["--master-key-file is empty"])
        let open = tmp.path + "/everyone"
        try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: false)
        chmod(open, 0o777)
        expectCleanFailure(try await cli(["keys", "init", "--master-key-file", open + "/k"]), mentioning: ["which every user can write"])
        #expect(!FileManager.default.fileExists(atPath: open + "/k"))
        // A directory named as the key file: said as such (it said to create one with keys init there).
        let asDirectory = try await cli(["status", "--store", store], env: ["SYNCLEDGER_MASTER_KEY_FILE": open])
        #expect(asDirectory.stdout.contains("is a directory: name the file that holds the master key")
                && !asDirectory.stdout.contains("keys init --master-key-file \(open)"), "\(asDirectory.stdout)")
        // A relative path is named absolute: set as given in cron or a service unit, it would be
        // looked up wherever the command runs.
        let relative = try await cli(["keys", "init", "--master-key-file", "rel.key"], cwd: tmp.path)
        expectSuccess(relative)
        let real = try #require(realpath(tmp.path + "/rel.key", nil).map { p in defer { free(p) }; return String(cString: p) })
        #expect(relative.stdout.contains("set SYNCLEDGER_MASTER_KEY_FILE=\(real)\n"), "\(relative.stdout)")

        let snap = snapshot(store)
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            let args = syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now)
            var env = keyEnv
            env["SYNCLEDGER_MASTER_KEY_FILE"] = other
            expectCleanFailure(try await cli(args, env: env), mentioning: ["does not open the key store"])
            env["SYNCLEDGER_MASTER_KEY_FILE"] = tmp.path + "/missing.key"
            expectCleanFailure(try await cli(args, env: env), mentioning: ["cannot read the master key file"])
        }
        for file in [other, tmp.path + "/missing.key"] {
            expectCleanFailure(
                try await cli(["forget", "--store", store, "--patient", PrivacyFixture.forgotten.id, "--reason", "x"],
                              env: ["SYNCLEDGER_MASTER_KEY_FILE": file]))
        }
        expectSameSnapshot(snap, snapshot(store), "a wrong master key")
        // `status`, the monitor, names a master key the next sync could not use (it said nothing:
        // hostile test), and only then.
        let fine = try await cli(["status", "--store", store])
        #expect(!fine.stdout.contains("master key"), "\(fine.stdout)")
        func problems(_ out: String) -> Int { out.split(separator: "\n").filter { $0.hasPrefix("problem: ") }.count }
        for (file, message) in [(other, "does not open the key store"), (tmp.path + "/missing.key", "cannot read the master key file")] {
            let s = try await cli(["status", "--store", store], env: ["SYNCLEDGER_MASTER_KEY_FILE": file])
            #expect(s.status == 1 && problems(s.stdout) == problems(fine.stdout) + 1 && s.stdout.contains(message),
                    "\(s.stdout)\(s.stderr)")
            let j = try await cli(["status", "--store", store, "--json"], env: ["SYNCLEDGER_MASTER_KEY_FILE": file])
            #expect(j.status == 1 && j.stdout.contains(message), "\(j.stdout)")
        }
        // A roster patient's key file deleted, or damaged: `sync` and `rebuild` stop on it, and
        // `status` says so (it said ok: hostile test, stop 56). Any roster's patient counts:
        // `rebuild` opens every recorded roster.
        let keyFile = store + "/keys/patients/" + PrivacyFixture.other.id.utf8.map { String(format: "%02x", $0) }.joined() + ".key"
        let saved = try Data(contentsOf: URL(fileURLWithPath: keyFile))
        var damaged = saved
        damaged[damaged.count - 1] ^= 0x01
        for (bytes, message) in [(nil as Data?, "has no key for patient \(PrivacyFixture.other.id)"),
                                 (damaged, "patient \(PrivacyFixture.other.id)")] {
            if let bytes { try bytes.write(to: URL(fileURLWithPath: keyFile)) } else { unlink(keyFile) }
            expectCleanFailure(try await cli(["rebuild", "--store", store]), mentioning: [message])
            let s = try await cli(["status", "--store", store])
            #expect(s.status == 1 && problems(s.stdout) == problems(fine.stdout) + 1 && s.stdout.contains(message),
                    "\(s.stdout)\(s.stderr)")
            let j = try await cli(["status", "--store", store, "--json"])
            #expect(j.status == 1 && j.stdout.contains(message) && !j.stdout.contains(PrivacyFixture.other.name), "\(j.stdout)")
            try saved.write(to: URL(fileURLWithPath: keyFile))
        }
        let mended = try await cli(["status", "--store", store])
        #expect(mended.status == fine.status && problems(mended.stdout) == problems(fine.stdout), "\(mended.stdout)")
        // A rebuild with a wrong or missing master key stops with one line (the sealed roster is
        // the first event it cannot open; `DeferredOpeningTests` covers a sealed observation the
        // fold meets), and the views answer as before.
        let views = try await cli(["appointments", "--store", store, "--json"])
        expectSuccess(views)
        for (file, message) in [(other, "does not open the key store"), (tmp.path + "/missing.key", "cannot read the master key file")] {
            expectCleanFailure(try await cli(["rebuild", "--store", store], env: ["SYNCLEDGER_MASTER_KEY_FILE": file]), mentioning: [message])
            #expect(try await cli(["appointments", "--store", store, "--json"]).stdout == views.stdout)
        }
        // An unknown patient is refused, and nothing is written either.
        let before = storeSnapshot(store)
        expectCleanFailure(try await cli(["forget", "--store", store, "--patient", "p-nobody", "--reason", "x"]),
                           mentioning: ["p-nobody"])
        expectSameSnapshot(before, storeSnapshot(store), "an unknown patient")
    }

    /// A patient's key file lost, or damaged: `sync`, `rebuild` and every read of their sealed
    /// parts stop on it, and `forget`, the way out when no backup holds the key, stopped on it
    /// too (hostile test). The error names both remedies; `forget --key-lost` records the
    /// patient as forgotten, and the store works again. The flag is refused where a key opens,
    /// and where the store's own key store holds the key a copy lacks (hostile test).
    @Test func aPatientWhoseKeyIsLostOrDamagedCanBeForgotten() async throws {
        let tmp = TempDir("lost-key")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        let practice = try Practice.load()
        try await makeSyncedStore(at: store, practice: practice)
        func hex(_ id: String) -> String { id.utf8.map { String(format: "%02x", $0) }.joined() }
        func keyFile(_ id: String, in keys: String? = nil) -> String { (keys ?? store + "/keys") + "/patients/" + hex(id) + ".key" }
        // A copy of the key store lacking p-001's key, which the store's own still holds.
        let partial = tmp.path + "/partial-keys"
        try FileManager.default.copyItem(atPath: store + "/keys", toPath: partial)
        unlink(keyFile("p-001", in: partial))
        var snap = storeSnapshot(store)
        expectCleanFailure(try await cli(["forget", "--store", store, "--keys", partial, "--patient", "p-001", "--key-lost", "--reason", "x"]),
                           mentioning: ["the store's own key store", "nothing was changed"])
        // The flag for a key that opens.
        expectCleanFailure(try await cli(["forget", "--store", store, "--patient", "p-001", "--key-lost", "--reason", "x"]),
                           mentioning: ["is there and opens", "nothing was changed"])
        expectSameSnapshot(snap, storeSnapshot(store), "a refused --key-lost")

        // Both at once: each forget reads the other's roster part, whose key is gone too.
        unlink(keyFile(PrivacyFixture.other.id))
        var damaged = try Data(contentsOf: URL(fileURLWithPath: keyFile(PrivacyFixture.forgotten.id)))
        damaged[damaged.count - 1] ^= 0x01
        try damaged.write(to: URL(fileURLWithPath: keyFile(PrivacyFixture.forgotten.id)))
        // `status` names both, not the first only (hostile test).
        let both = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(both.status == 1 && both.stdout.contains("the key files of 2 patients are missing or damaged")
                && both.stdout.contains(PrivacyFixture.forgotten.id) && both.stdout.contains(PrivacyFixture.other.id), "\(both.stdout)")
        // Without the flag: refused, naming it.
        snap = storeSnapshot(store)
        expectCleanFailure(try await cli(["forget", "--store", store, "--patient", PrivacyFixture.other.id, "--reason", "key lost"]),
                           mentioning: ["--key-lost"])
        expectSameSnapshot(snap, storeSnapshot(store), "a lost key without --key-lost")
        for (patient, other) in [(PrivacyFixture.other.id, PrivacyFixture.forgotten.id), (PrivacyFixture.forgotten.id, nil)] {
            let stuck = try await cli(["rebuild", "--store", store])
            expectCleanFailure(stuck, mentioning: ["restore it from a backup", "syncledger forget --patient", "--key-lost"])
            let forget = try await cli(["forget", "--store", store, "--patient", patient, "--key-lost", "--reason", "key lost in a disk failure"])
            expectSuccess(forget)
            #expect(forget.stdout.contains("forgot patient \(patient): their key was already missing or damaged"), "\(forget.stdout)")
            if let other {
                #expect(forget.stderr.contains("the keys of \(other) are lost too"), "\(forget.stderr)")
            }
            #expect(FileManager.default.fileExists(atPath: store + "/keys/forgotten/" + hex(patient)))
            #expect(!FileManager.default.fileExists(atPath: keyFile(patient)))
        }
        expectSuccess(try await cli(["rebuild", "--store", store]))
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
        let status = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(!status.stdout.contains("key"), "\(status.stdout)")
        let rows = try await cli(["appointments", "--store", store, "--json"])
        expectSuccess(rows)
        #expect(!rows.stdout.contains(PrivacyFixture.other.name) && !rows.stdout.contains(PrivacyFixture.forgotten.name))
        try await withFakeServer(try #require(practice.day(2))) { _, url in
            expectSuccess(try await cli(syncArgs(store: store, baseURL: url, now: try #require(practice.day(2)).now), env: keyEnv))
        }
        // Another store's key store under the same master key holds none of this store's
        // patients' keys: refused, nothing written.
        let elsewhere = tmp.path + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere + "/patients", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: store + "/keys/master.check", toPath: elsewhere + "/master.check")
        snap = storeSnapshot(store)
        expectCleanFailure(try await cli(["forget", "--store", store, "--keys", elsewhere, "--patient", "p-002", "--key-lost", "--reason", "x"],
                                         env: ["SYNCLEDGER_MASTER_KEY_FILE": store + "/keys/master.key"]),
                           mentioning: ["nothing was changed"])
        expectSameSnapshot(snap, storeSnapshot(store), "another key store")
        // A patient whose key opens is forgotten as before.
        let plain = try await cli(["forget", "--store", store, "--patient", "p-001", "--reason", "the patient's request"])
        #expect(plain.stdout.contains("forgot patient p-001: key destroyed"), "\(plain.stdout)")
    }

    /// A damaged key file that is a hard link to another patient's key: `forget --key-lost`
    /// unlinks it and leaves the other key as it was (it wrote zeros through the link; cold
    /// review).
    @Test func aDamagedKeyFileIsUnlinkedNotOverwritten() async throws {
        let tmp = TempDir("lost-key-link")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load())
        func keyFile(_ id: String) -> String { store + "/keys/patients/" + id.utf8.map { String(format: "%02x", $0) }.joined() + ".key" }
        let kept = try Data(contentsOf: URL(fileURLWithPath: keyFile("p-002")))
        unlink(keyFile("p-001"))
        #expect(link(keyFile("p-002"), keyFile("p-001")) == 0)
        let forget = try await cli(["forget", "--store", store, "--patient", "p-001", "--key-lost", "--reason", "key damaged"])
        expectSuccess(forget)
        #expect(try Data(contentsOf: URL(fileURLWithPath: keyFile("p-002"))) == kept)
        #expect(!FileManager.default.fileExists(atPath: keyFile("p-001")))
        expectSuccess(try await cli(["verify", "--views", "--store", store]))
    }
}

extension CLIBinaryTests {
    /// A forgotten patient's key file put back (a key store restored from a backup) opens
    /// nothing: the tombstone wins, and `status` names the key; with the tombstone gone too,
    /// `status` still names it from the log's record, and `forget` destroys it again. A forget
    /// through a copy of the key store, while the store's own holds the key, is refused (it said
    /// "key destroyed" and the store's own key kept opening the data). Hostile test.
    @Test func aForgottenPatientsKeyPutBackOpensNothing() async throws {
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1, 2])
        let id = PrivacyFixture.forgotten.id, name = PrivacyFixture.forgotten.name
        let hex = Array(id.utf8).map { String(format: "%02x", $0) }.joined()
        let keyFile = store + "/keys/patients/\(hex).key", tombstone = store + "/keys/forgotten/\(hex)"
        let saved = tmp.path + "/saved.key"
        try FileManager.default.copyItem(atPath: keyFile, toPath: saved)

        try FileManager.default.copyItem(atPath: store + "/keys", toPath: tmp.path + "/keys-copy")
        let before = storeSnapshot(store)
        expectCleanFailure(try await cli(["forget", "--store", store, "--keys", tmp.path + "/keys-copy", "--patient", id, "--reason", "x"]),
                           mentioning: ["holds a key file of patient \(id)", "nothing was changed"])
        expectSameSnapshot(before, storeSnapshot(store), "a forget through a copy of the key store")

        expectSuccess(try await cli(["forget", "--store", store, "--patient", id, "--reason", "consent withdrawn"]))
        // The key put back, the tombstone kept: nothing opens, status names it.
        try FileManager.default.copyItem(atPath: saved, toPath: keyFile)
        expectSuccess(try await cli(["rebuild", "--store", store]))
        let shown = try await cli(["appointments", "--json", "--store", store])
        expectSuccess(shown)
        let nameIsBack = shown.stdout.contains(name)
        #expect(!nameIsBack, "the forgotten patient's name is back")
        let flagged = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(flagged.status == 1 && flagged.stdout.contains("the log records \(id) as forgotten, but") && flagged.stdout.contains("holds their key again"),
                "\(flagged.stdout)")
        // forget destroys it again (it saw the tombstone and left the key; cold review).
        let destroyed = try await cli(["forget", "--store", store, "--patient", id, "--reason", "key store restored from a backup"])
        #expect(destroyed.status == 0 && destroyed.stdout.contains("destroyed again"), "\(destroyed.stdout)\(destroyed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: keyFile))
        expectSuccess(try await cli(["status", "--store", store, "--max-age", "100000"]))
        // The whole key store as it was before the forget (no tombstone): status still names
        // it, from the log; forget destroys it again and records it again.
        try FileManager.default.copyItem(atPath: saved, toPath: keyFile)
        unlink(tombstone)
        let again = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(again.status == 1 && again.stdout.contains("the log records \(id) as forgotten, but"), "\(again.stdout)")
        expectSuccess(try await cli(["forget", "--store", store, "--patient", id, "--reason", "key store restored from a backup"]))
        #expect(!FileManager.default.fileExists(atPath: keyFile))
        let after = try await cli(["appointments", "--json", "--store", store])
        let nameAfter = after.stdout.contains(name)
        #expect(after.status == 0 && !nameAfter, "\(after.stdout.prefix(300))")
        expectSuccess(try await cli(["status", "--store", store, "--max-age", "100000"]))
        // A tombstone the log does not record (copied from another store's key store): named.
        let other = PrivacyFixture.other.id
        let otherHex = Array(other.utf8).map { String(format: "%02x", $0) }.joined()
        try Data("{}\n".utf8).write(to: URL(fileURLWithPath: store + "/keys/forgotten/\(otherHex)"))
        let marked = try await cli(["status", "--store", store, "--max-age", "100000"])
        #expect(marked.status == 1 && marked.stdout.contains("marks \(other) as forgotten, but the log records no forget"), "\(marked.stdout)")
    }

    /// A forget that cannot delete the key file (its directory not writable by the user who
    /// runs it) changes nothing; once it can, the forget completes. It zeroed the key and wrote
    /// the tombstone before failing, and no forget could then record the patient (hostile test).
    @Test func aForgetThatCannotDeleteTheKeyChangesNothing() async throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            #expect(ProcessInfo.processInfo.environment["CI"] == nil, "CI must run this test as root with setpriv")
            return
        }
        let tmp = TempDir("privacy")
        defer { tmp.remove() }
        chmod(tmp.path, 0o755)
        let store = tmp.path + "/store"
        try await makeSyncedStore(at: store, practice: try Practice.load(), days: [1])
        let nobody: uid_t = 65534
        try chownTree(store, uid: Int(nobody))
        chmod(store + "/keys/patients", 0o500)
        let exe = tmp.path + "/syncledger"
        try FileManager.default.copyItem(atPath: try Repo.requireBinary(), toPath: exe)
        chmod(exe, 0o755)
        func asNobody(_ args: [String]) async throws -> RunResult {
            try await Launched(args, timeout: 120, executable: "/usr/bin/setpriv",
                               arguments: ["--reuid=\(nobody)", "--regid=\(nobody)", "--clear-groups", exe] + args).wait()
        }
        let id = PrivacyFixture.forgotten.id
        let before = storeSnapshot(store)
        let refused = try await asNobody(["forget", "--store", store, "--patient", id, "--reason", "left the program"])
        expectCleanFailure(refused, mentioning: ["cannot delete the key file", "nothing was changed"])
        expectSameSnapshot(before.filter { !$0.key.hasPrefix("projections.sqlite") && $0.key != "log/LOCK" },
                           snapshot(store, excluding: { $0.hasPrefix("projections.sqlite") || $0 == "log/LOCK" }), "a refused forget")
        chmod(store + "/keys/patients", 0o700)
        let done = try await asNobody(["forget", "--store", store, "--patient", id, "--reason", "left the program"])
        expectSuccess(done)
        #expect(done.stdout.contains("forgot patient \(id): key destroyed, patient.forgotten recorded"), "\(done.stdout)")
        let shown = try await asNobody(["appointments", "--json", "--store", store])
        let nameShown = shown.stdout.contains(PrivacyFixture.forgotten.name)
        #expect(shown.status == 0 && !nameShown, "\(shown.stdout.prefix(300))")
    }
}
