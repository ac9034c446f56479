import Foundation
import HTTPTypes
import Hummingbird
import JSONCore
import Logging
import NIOCore

extension ServiceResponder {
    /// `GET /metrics`: the Prometheus text format; an admin token unless `--metrics-public`.
    func metrics(_ request: Request, started: UInt64) async -> Response {
        var headers = HTTPFields()
        let status: Int
        let text: String
        do {
            try only(.get, request.method)
            if !server.config.metricsPublic { try requireAdmin(try authenticate(request)) }
            try QueryParameters(request).allow([])
            text = try await server.metricsText()
            status = 200
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        } catch {
            let reply = (error as? Reply) ?? .error(500, "internal error")
            if !(error is Reply) {
                server.config.logger.error("request failed", metadata: ["path": "/metrics", "error": "\(error)"])
            }
            status = reply.status
            text = reply.body.canonicalText + "\n"
            headers[.contentType] = "application/json; charset=utf-8"
        }
        let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
        server.config.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "path": "/metrics", "status": "\(status)",
            "ms": "\(String(format: "%.1f", ms))",
        ])
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
