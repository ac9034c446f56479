import Domain
import Foundation
import Synchronization
import JSONCore
import Ledger
import Paths

#if canImport(Glibc)
import Glibc
#endif

/// One alert message: what `--alert-webhook` receives as a JSON POST and `--alert-command` on
/// its standard input. `text` is for Slack and Teams (both show a `text` field); the rest is for
/// programs. It never holds the API key, a webhook secret or a patient's personal data.
public struct AlertMessage: Sendable, Equatable {
    /// A fresh id per message (deliveries in the alert log refer to it).
    public var id: String
    public var alert: String
    /// The incident (alert name, and the sync type for per-type alerts).
    public var key: String
    /// `firing`, `resolved` or `test`.
    public var status: String
    public var severity: String
    public var summary: String
    public var runId: String?
    public var store: String
    /// When it was decided (epoch millis).
    public var at: Int64
    /// A reminder of an incident still firing (sent again after the resend interval).
    public var reminder = false

    public var text: String {
        let head: String
        switch status {
        case "resolved": head = "[RESOLVED] syncledger \(alert)"
        case "test": head = "[TEST] syncledger"
        default: head = "[\(severity.uppercased())] syncledger \(alert)" + (reminder ? " (still firing)" : "")
        }
        return "\(head): \(summary) (store \(store))"
    }

    public var json: JSONValue {
        .object([
            "text": .string(text), "alert": .string(alert), "key": .string(key), "status": .string(status),
            "severity": .string(severity), "summary": .string(summary), "run_id": runId.map(JSONValue.string) ?? .null,
            "store": .string(store), "at": .string(ISOTime.format(millis: at)), "reminder": .bool(reminder),
            "id": .string(id),
        ])
    }
}

/// The result of sending one message to one target.
public struct AlertDelivery: Sendable, Equatable {
    public var messageId: String
    /// `webhook HOST` (never the URL: a Slack or Teams URL holds its secret) or `command`.
    public var target: String
    public var ok: Bool
    public var attempts: Int
    public var error: String?
    public var at: Int64
}

/// An alert log entry: the message and what became of each delivery.
public struct AlertLogEntry: Sendable, Equatable {
    public var message: AlertMessage
    public var deliveries: [AlertDelivery]
    /// How many targets it was sent to (nil in lines written before this was recorded).
    public var targets: Int? = nil

    /// What became of it, in a few words: each target's outcome, or why there is none.
    public var outcome: String {
        if !deliveries.isEmpty { return deliveries.map { "\($0.target) \($0.ok ? "ok" : "FAILED")" }.joined(separator: ", ") }
        switch targets {
        case 0?: return "no target"
        // After a SIGKILL the message stays without a delivery: it read "no target" (hostile test).
        case _?: return "no delivery recorded: still on its way, or the server was killed before it ended"
        case nil: return "no delivery recorded"
        }
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(message.id), "at": .string(ISOTime.format(millis: message.at)), "alert": .string(message.alert),
            "key": .string(message.key), "status": .string(message.status), "severity": .string(message.severity),
            "summary": .string(message.summary), "run_id": message.runId.map(JSONValue.string) ?? .null,
            "reminder": .bool(message.reminder),
        ]
        o["deliveries"] = .array(deliveries.map { d in
            .object(["target": .string(d.target), "ok": .bool(d.ok), "attempts": .number(Double(d.attempts)),
                     "error": d.error.map(JSONValue.string) ?? .null, "at": .string(ISOTime.format(millis: d.at))])
        })
        return .object(o)
    }
}

/// `STORE/state/alerts.log`: every alert message decided (one JSON line each) and every
/// delivery's outcome (another line, naming the message's id), appended; past 3000 lines the
/// newest 2000 are kept. `STORE/state/alerts-open.json`: the incidents firing now, so a restarted
/// server does not announce them again. Read by `syncledger status` (and the admin pages).
public enum AlertLog {
    public static func path(storePath: String) -> String { storePath + "/state/alerts.log" }
    public static func openPath(storePath: String) -> String { storePath + "/state/alerts-open.json" }

    /// Appends from this process one at a time (one line each).
    static let lock = Mutex(())

    static func append(_ line: JSONValue, storePath: String) {
        let dir = storePath + "/state"
        guard FileManager.default.fileExists(atPath: dir) else { return }
        let p = path(storePath: storePath)
        lock.withLock { _ in
            let fd = Glibc.open(p, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return }
            StoreOwnership.adopt(fd: fd, path: p)
            let bytes = Array((line.canonicalText + "\n").utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            trimIfLarge(p)
        }
    }

    /// `targets`: how many it is being sent to.
    static func record(_ m: AlertMessage, targets: Int, storePath: String) {
        var o: [String: JSONValue] = ["type": .string("message"), "targets": .number(Double(targets))]
        if case .object(let fields) = m.json { for (k, v) in fields where k != "text" { o[k] = v } }
        append(.object(o), storePath: storePath)
    }

    static func record(_ d: AlertDelivery, storePath: String) {
        append(.object([
            "type": .string("delivery"), "id": .string(d.messageId), "target": .string(d.target), "ok": .bool(d.ok),
            "attempts": .number(Double(d.attempts)), "error": d.error.map(JSONValue.string) ?? .null,
            "at": .string(ISOTime.format(millis: d.at)),
        ]), storePath: storePath)
    }

    /// Keeps the file small: past 3000 lines, the newest 2000 stay.
    private static func trimIfLarge(_ p: String) {
        let size = (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? NSNumber)?.intValue ?? 0
        guard size > 256 << 10, let data = FileManager.default.contents(atPath: p) else { return }
        let lines = data.split(separator: UInt8(ascii: "\n"))
        guard lines.count > 3000 else { return }
        let kept = lines.suffix(2000).map { Array($0) + [10] }.flatMap { $0 }
        try? writeFileAtomically(p, kept)
    }

    /// The newest `limit` messages, newest first, each with its deliveries.
    public static func recent(storePath: String, limit: Int = 20) -> [AlertLogEntry] {
        guard let data = FileManager.default.contents(atPath: path(storePath: storePath)) else { return [] }
        var messages: [AlertMessage] = []
        var targets: [String: Int] = [:]
        var deliveries: [String: [AlertDelivery]] = [:]
        for line in data.split(separator: UInt8(ascii: "\n")) {
            guard let v = try? FastJSON.parse(Array(line)), let id = v["id"]?.stringValue else { continue }
            let at = v["at"]?.stringValue.flatMap(ISOTime.parse) ?? 0
            switch v["type"]?.stringValue {
            case "message":
                targets[id] = v["targets"]?.doubleValue.map { Int($0) }
                messages.append(AlertMessage(
                    id: id, alert: v["alert"]?.stringValue ?? "?", key: v["key"]?.stringValue ?? "?",
                    status: v["status"]?.stringValue ?? "?", severity: v["severity"]?.stringValue ?? "?",
                    summary: v["summary"]?.stringValue ?? "", runId: v["run_id"]?.stringValue,
                    store: v["store"]?.stringValue ?? "", at: at, reminder: v["reminder"] == .bool(true)))
            case "delivery":
                deliveries[id, default: []].append(AlertDelivery(
                    messageId: id, target: v["target"]?.stringValue ?? "?", ok: v["ok"] == .bool(true),
                    attempts: Int(v["attempts"]?.doubleValue ?? 0), error: v["error"]?.stringValue, at: at))
            default:
                continue
            }
        }
        return messages.suffix(limit).reversed().map { AlertLogEntry(message: $0, deliveries: deliveries[$0.id] ?? [], targets: targets[$0.id]) }
    }

    /// The incidents firing now, as the server last saved them.
    public static func open(storePath: String) -> [AlertIncident] {
        guard let data = FileManager.default.contents(atPath: openPath(storePath: storePath)),
              let list = try? JSONDecoder().decode([AlertIncident].self, from: data) else { return [] }
        return list.sorted { $0.key < $1.key }
    }

    static func saveOpen(_ incidents: [AlertIncident], storePath: String) {
        guard FileManager.default.fileExists(atPath: storePath + "/state") else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(incidents.sorted { $0.key < $1.key }) else { return }
        try? writeFileAtomically(openPath(storePath: storePath), Array(data) + [10])
    }
}

/// An incident firing: its condition, when it began and when it was last announced.
public struct AlertIncident: Sendable, Codable, Equatable {
    public var key: String
    public var alert: String
    public var severity: String
    public var summary: String
    public var runId: String?
    /// Epoch millis.
    public var since: Int64
    public var lastSentAt: Int64
    /// A delivery of it was cut short by a shutdown: sent again at the next check, whenever it
    /// was last sent (absent in files written before it existed).
    public var dueAgain: Bool? = nil
}
