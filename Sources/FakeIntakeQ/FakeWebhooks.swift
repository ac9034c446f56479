import AsyncHTTPClient
import Foundation
import IntakeQ
import JSONCore
import NIOCore
import NIOHTTP1
import Synchronization

/// One webhook the fake IntakeQ sent, and what the receiver answered (0: no answer).
public struct SentWebhook: Sendable, Hashable {
    public var eventType: String
    public var appointmentId: String
    public var status: Int
}

/// IntakeQ's appointment webhooks (Settings → Integrations → Developer API → webhook URL):
/// `POST` of `{"EventType": …, "ActionPerformedByClient": …, "Appointment": {…}}` as JSON.
extension FakeIntakeQServer {
    /// Where the fake posts webhooks (nil: it posts none).
    public func setWebhookURL(_ url: String?) { box.withLock { $0.webhookURL = url } }

    public var webhookURL: String? { box.withLock { $0.webhookURL } }

    /// Every webhook posted so far.
    public func sentWebhooks() -> [SentWebhook] { box.withLock { $0.sentWebhooks } }

    /// Replaces what the fake serves, then posts one webhook per appointment that appeared,
    /// changed or went away (when a webhook URL is set), as IntakeQ does when its day changes.
    @discardableResult
    public func setState(_ state: PracticeState, postWebhooks: Bool) async -> [SentWebhook] {
        let before = box.withLock { $0.state }
        setState(state)
        guard postWebhooks, webhookURL != nil else { return [] }
        let after = box.withLock { $0.state }
        var sent: [SentWebhook] = []
        for (event, object) in Self.changes(from: before, to: after) {
            sent.append(await post(eventType: event, object: object))
        }
        return sent
    }

    /// Posts one webhook for an appointment the fake serves (or holds as deleted), on request.
    /// Returns nil when the fake knows no such appointment or no URL is set.
    @discardableResult
    public func postWebhook(eventType: String, appointmentId: String, byClient: Bool = false) async -> SentWebhook? {
        let state = box.withLock { $0.state }
        guard webhookURL != nil,
              let e = state.appointments.first(where: { $0.appointment.id == appointmentId })
                ?? state.deleted.first(where: { $0.appointment.id == appointmentId })
        else { return nil }
        return await post(eventType: eventType, object: e.raw, byClient: byClient)
    }

    /// The webhook body IntakeQ sends.
    public static func webhookBody(eventType: String, object: [UInt8], byClient: Bool = false) -> [UInt8] {
        Array("{\"EventType\":\"\(eventType)\",\"ActionPerformedByClient\":\(byClient),\"Appointment\":".utf8) + object + [UInt8(ascii: "}")]
    }

    func post(eventType: String, object: [UInt8], byClient: Bool = false) async -> SentWebhook {
        let id = (try? FastJSON.parse(object))?["Id"]?.stringValue ?? ""
        var status = 0
        if let url = webhookURL {
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Self.webhookBody(eventType: eventType, object: object, byClient: byClient)))
            if let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(10)) {
                status = Int(response.status.code)
                _ = try? await response.body.collect(upTo: 1 << 20)
            }
        }
        let sent = SentWebhook(eventType: eventType, appointmentId: id, status: status)
        box.withLock { $0.sentWebhooks.append(sent) }
        return sent
    }

    /// What changed between two served states, as IntakeQ event types.
    static func changes(from a: ServedState, to b: ServedState) -> [(String, [UInt8])] {
        var old: [String: ServedState.Entry] = [:]
        for e in a.appointments { if let id = e.appointment.id { old[id] = e } }
        var out: [(String, [UInt8])] = []
        var seen = Set<String>()
        for e in b.appointments {
            guard let id = e.appointment.id else { continue }
            seen.insert(id)
            guard let prior = old[id] else {
                out.append(("AppointmentCreated", e.raw))
                continue
            }
            guard prior.value != e.value else { continue }
            if e.appointment.status != prior.appointment.status, (e.appointment.status ?? "").lowercased().hasPrefix("cancel") {
                out.append(("AppointmentCanceled", e.raw))
            } else if e.appointment.startDate != prior.appointment.startDate {
                out.append(("AppointmentRescheduled", e.raw))
            } else {
                out.append(("AppointmentUpdated", e.raw))
            }
        }
        for (id, e) in old where !seen.contains(id) {
            out.append(("AppointmentDeleted", e.raw))
        }
        return out.sorted { ($0.0, String(decoding: $0.1.prefix(64), as: UTF8.self)) < ($1.0, String(decoding: $1.1.prefix(64), as: UTF8.self)) }
    }
}
