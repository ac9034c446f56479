import Foundation
import HTTPTypes
import Hummingbird
import IntakeQ
import NIOCore
import Synchronization

/// Routes and answers requests for `FakeIntakeQServer`.
struct FakeResponder: HTTPResponder {
    typealias Context = BasicRequestContext
    let server: FakeIntakeQServer

    static let apiRoot = "/api/v1"

    struct Answer {
        var status: Int
        var body: [UInt8]
        var contentType = "application/json; charset=utf-8"
        var retryAfter: Int?
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        let fullPath = request.uri.path
        let path = fullPath.hasPrefix(Self.apiRoot) ? String(fullPath.dropFirst(Self.apiRoot.count)) : fullPath
        var query: [String: String] = [:]
        for (k, v) in request.uri.queryParameters { query[String(k)] = String(v) }
        let key = request.headers[HTTPField.Name("X-Auth-Key")!]
        let now = Date()

        // Decide under the lock: auth, the per-minute limit, a fault, then the normal answer.
        let (decision, fault, pretty) = server.box.withLock { m -> (Answer?, Fault?, Bool) in
            if key != server.apiKey {
                return (Answer(status: 401, body: Array(#"{"Message":"Unauthorized. Invalid or missing API key."}"#.utf8)), nil, m.pretty)
            }
            m.recent.removeAll { now.timeIntervalSince($0) >= 60 }
            if let limit = m.requestsPerMinute, m.recent.count >= limit {
                let wait = Int((60 - now.timeIntervalSince(m.recent[0])).rounded(.up))
                return (Answer(status: 429, body: Array(#"{"Message":"Too many requests."}"#.utf8), retryAfter: max(1, wait)), nil, m.pretty)
            }
            m.recent.append(now)
            m.served += 1
            if let n = m.every429, n > 0, m.served % n == 0 {
                return (Answer(status: 429, body: Array(#"{"Message":"Too many requests."}"#.utf8), retryAfter: 1), nil, m.pretty)
            }
            if m.failRate > 0 {
                // xorshift64*: reproducible from the seed.
                m.random ^= m.random >> 12
                m.random ^= m.random << 25
                m.random ^= m.random >> 27
                let draw = Double((m.random &* 0x2545_F491_4F6C_DD1D) >> 11) / Double(1 << 53)
                if draw < m.failRate {
                    return (Answer(status: 500, body: Array(#"{"Message":"Injected failure."}"#.utf8)), nil, m.pretty)
                }
            }
            let page = query["page"].flatMap { Int($0) } ?? 1
            if let i = m.faults.firstIndex(where: { ($0.path == path || $0.path == "*") && ($0.page == nil || $0.page == page) }) {
                let f = m.faults[i].fault
                m.faults[i].remaining -= 1
                if m.faults[i].remaining <= 0 { m.faults.remove(at: i) }
                return (nil, f, m.pretty)
            }
            return (nil, nil, m.pretty)
        }

        var answer: Answer
        if let decision {
            answer = decision
        } else {
            switch fault {
            case .status(let code, let retryAfter):
                answer = Answer(status: code, body: Array(#"{"Message":"Injected failure."}"#.utf8), retryAfter: retryAfter)
            case .malformed:
                answer = Answer(status: 200, body: Array("<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>\n".utf8),
                                contentType: "text/html")
            case .delay(let seconds):
                try? await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
                answer = route(path: path, query: query, pretty: pretty)
            case .truncated:
                answer = route(path: path, query: query, pretty: pretty)
                if answer.body.count > 2 {
                    answer.body = Array(answer.body.prefix(max(1, answer.body.count * 3 / 5)))
                }
            case nil:
                answer = route(path: path, query: query, pretty: pretty)
            }
        }

        server.box.withLock {
            $0.log.append(RecordedRequest(method: request.method.rawValue, path: path, query: query,
                                          status: answer.status, fault: fault, at: now))
        }
        var headers = HTTPFields()
        headers[.contentType] = answer.contentType
        if let ra = answer.retryAfter { headers[HTTPField.Name("Retry-After")!] = String(ra) }
        return Response(status: .init(code: answer.status), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
    }

    /// The normal answer for a path.
    func route(path: String, query: [String: String], pretty: Bool) -> Answer {
        let state = server.box.withLock { $0.state }
        let page = max(1, query["page"].flatMap { Int($0) } ?? 1)
        func array(_ items: [[UInt8]]) -> [UInt8] {
            let start = (page - 1) * IntakeQClient.pageSize
            let slice = start < items.count ? Array(items[start..<min(items.count, start + IntakeQClient.pageSize)]) : []
            var body: [UInt8] = [UInt8(ascii: "[")]
            for (i, item) in slice.enumerated() {
                if i > 0 { body.append(UInt8(ascii: ",")) }
                body += item
            }
            body.append(UInt8(ascii: "]"))
            return pretty ? reindentJSON(body) : body
        }
        let notFound = Answer(status: 404, body: Array(#"{"Message":"Not found."}"#.utf8))
        switch path {
        case "/appointments":
            return Answer(status: 200, body: array(state.query(query).map(\.raw)))
        case "/appointments/settings":
            return Answer(status: 200, body: pretty ? reindentJSON(state.settings) : state.settings)
        case "/clients":
            return Answer(status: 200, body: array(state.clients(search: query["search"])))
        default:
            if path.hasPrefix("/appointments/") {
                let id = String(path.dropFirst("/appointments/".count)).removingPercentEncoding ?? ""
                guard let e = state.appointment(id: id) else { return notFound }
                return Answer(status: 200, body: pretty ? reindentJSON(e.raw) : e.raw)
            }
            return notFound
        }
    }
}
